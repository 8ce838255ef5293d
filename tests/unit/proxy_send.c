/*
 * proxy_send.c - TCase "send" of the proxy suite: px_out (proxy/base/send.c)
 * over a real socket pair. What the socket takes is written at once and
 * nothing waits in the bufferevent; what it does not take is queued there
 * and libevent writes it later; bytes added while something is queued go
 * behind it. The reader sees every byte in order, whatever the sizes
 * (a byte counter pattern over many px_out rounds, with a small socket
 * buffer so that most rounds find it full).
 */
#include <check.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "send.h"

TCase *tcase_send(void);

struct rd {
    int fd;
    uint64_t got;   /* bytes read */
    int bad;        /* a byte out of order */
    struct event *ev;
};

static unsigned char pat(uint64_t i)
{
    return (unsigned char)((i * 7) % 251);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rd *r = arg;
    unsigned char buf[4096];
    ssize_t n;
    (void)what;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++, r->got++)
            if (buf[i] != pat(r->got))
                r->bad = 1;
}

START_TEST(bytes_arrive_in_order)
{
    struct event_base *base = event_base_new();
    struct bufferevent *bev;
    struct rd r = {0};
    int sv[2], small = 4096;
    uint64_t sent = 0;
    unsigned char *chunk = malloc(300000);
    int queued_rounds = 0, direct_rounds = 0;

    ck_assert_ptr_nonnull(base);
    ck_assert_ptr_nonnull(chunk);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    evutil_make_socket_nonblocking(sv[0]);
    evutil_make_socket_nonblocking(sv[1]);
    bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    ck_assert_ptr_nonnull(bev);
    bufferevent_enable(bev, EV_WRITE);
    r.fd = sv[1];
    r.ev = event_new(base, sv[1], EV_READ | EV_PERSIST, read_cb, &r);
    event_add(r.ev, NULL);

    for (int round = 0; round < 300; round++) {
        struct px_out o;
        /* sizes from 1 byte to past the staging area, in several adds */
        size_t adds = 1 + (size_t)round % 4;
        px_out_begin(&o, bev);
        for (size_t a = 0; a < adds; a++) {
            size_t n = ((size_t)round * 7919 + a * 104729) % (round % 10 == 0 ? 300000 : 20000) + 1;
            for (size_t i = 0; i < n; i++)
                chunk[i] = pat(sent + i);
            ck_assert_int_eq(px_out_add(&o, chunk, n), 0);
            sent += n;
        }
        ck_assert_int_eq(px_out_end(&o), 0);
        if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
            queued_rounds++;
        else
            direct_rounds++;
        /* let the reader drain some of it, and libevent write what waits */
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    while (r.got < sent && !r.bad)
        event_base_loop(base, EVLOOP_ONCE);
    ck_assert_msg(!r.bad, "a byte arrived out of order");
    ck_assert_uint_eq(r.got, sent);
    /* both paths were taken */
    ck_assert_int_gt(queued_rounds, 0);
    ck_assert_int_gt(direct_rounds, 0);

    event_free(r.ev);
    bufferevent_free(bev);
    close(sv[1]);
    event_base_free(base);
    free(chunk);
}
END_TEST

/* Two px_out at once on one thread (a sender running inside another's
 * callbacks): the inner one queues into its output, both arrive whole. */
START_TEST(nested_out_queues)
{
    struct event_base *base = event_base_new();
    struct bufferevent *a, *b;
    int sa[2], sb[2];
    struct px_out oa, ob;
    char buf[64];

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sa), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sb), 0);
    evutil_make_socket_nonblocking(sa[0]);
    evutil_make_socket_nonblocking(sb[0]);
    a = bufferevent_socket_new(base, sa[0], BEV_OPT_CLOSE_ON_FREE);
    b = bufferevent_socket_new(base, sb[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_enable(a, EV_WRITE);
    bufferevent_enable(b, EV_WRITE);
    px_out_begin(&oa, a);
    ck_assert_int_eq(px_out_add(&oa, "outer", 5), 0);
    px_out_begin(&ob, b);
    ck_assert_ptr_null(ob.buf); /* the staging area is taken */
    ck_assert_int_eq(px_out_add(&ob, "inner", 5), 0);
    ck_assert_int_eq(px_out_end(&ob), 0);
    ck_assert_int_eq(px_out_end(&oa), 0);
    ck_assert_int_eq((int)read(sa[1], buf, sizeof(buf)), 5); /* written at once */
    ck_assert(memcmp(buf, "outer", 5) == 0);
    event_base_loop(base, EVLOOP_NONBLOCK); /* libevent writes the queued one */
    ck_assert_int_eq((int)read(sb[1], buf, sizeof(buf)), 5);
    ck_assert(memcmp(buf, "inner", 5) == 0);
    /* the staging area is free again */
    px_out_begin(&oa, a);
    ck_assert_ptr_nonnull(oa.buf);
    px_out_drop(&oa);
    bufferevent_free(a);
    bufferevent_free(b);
    close(sa[1]);
    close(sb[1]);
    event_base_free(base);
}
END_TEST

TCase *tcase_send(void)
{
    TCase *tc = tcase_create("send");
    tcase_add_test(tc, bytes_arrive_in_order);
    tcase_add_test(tc, nested_out_queues);
    tcase_set_timeout(tc, 60);
    return tc;
}
