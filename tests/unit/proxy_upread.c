/*
 * proxy_upread.c - TCase "up_read" of the proxy suite: px_up_read_more
 * (proxy/upstream/up_tls.c), which reads a plaintext upstream connection
 * on after libevent's own 4 KiB read, over a real socket pair. What it
 * reads arrives whole and in order; one call takes up to its max (a whole
 * loop turn's worth, PX_UP_READ_MORE), in buffer chains of at most
 * PX_UP_READ_PIECE each (a single reservation of the whole turn made a
 * chain past glibc's mmap threshold: a mapping and its page faults per
 * read); it stops at the read high watermark and when the socket is empty;
 * on a TLS pool it reads nothing.
 */
#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "upstream.h"

TCase *tcase_up_read(void);

static unsigned char pat(size_t i)
{
    return (unsigned char)((i * 13) % 251);
}

/* Writes pattern bytes [from, from + n) into fd (non-blocking); returns
 * how many the socket took. */
static size_t put(int fd, size_t from, size_t n)
{
    unsigned char buf[8192];
    size_t done = 0;
    while (done < n) {
        size_t k = n - done < sizeof(buf) ? n - done : sizeof(buf);
        ssize_t w;
        for (size_t i = 0; i < k; i++)
            buf[i] = pat(from + done + i);
        w = write(fd, buf, k);
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    return done;
}

struct turn {
    struct px_pool *pool;
    size_t max;
    size_t before; /* input length when the read callback ran */
    size_t got;    /* what px_up_read_more returned */
    int calls;
};

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct turn *t = arg;
    t->before = evbuffer_get_length(bufferevent_get_input(bev));
    t->got = px_up_read_more(bev, t->pool, t->max);
    t->calls++;
    bufferevent_disable(bev, EV_READ);
}

struct pair {
    struct event_base *base;
    struct bufferevent *bev;
    int w; /* the app's end */
};

static void pair_open(struct pair *p)
{
    int sv[2], big = 1 << 20;
    p->base = event_base_new();
    ck_assert_ptr_nonnull(p->base);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    p->w = sv[1];
    p->bev = bufferevent_socket_new(p->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    ck_assert_ptr_nonnull(p->bev);
    /* as px_up_bev_new sets it: libevent's own read is still 4 KiB */
    bufferevent_set_max_single_read(p->bev, PX_IO_CHUNK);
}

/* One loop turn: libevent's read, then the callback's px_up_read_more. */
static void pair_turn(struct pair *p, struct turn *t)
{
    bufferevent_setcb(p->bev, read_cb, NULL, NULL, t);
    bufferevent_enable(p->bev, EV_READ);
    event_base_loop(p->base, EVLOOP_ONCE);
}

static void pair_close(struct pair *p)
{
    bufferevent_free(p->bev);
    close(p->w);
    event_base_free(p->base);
}

/* The input holds pattern bytes [0, n), each chain at most `piece`. */
static void check_input(struct bufferevent *bev, size_t n, size_t piece)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    int nv = evbuffer_peek(in, -1, NULL, NULL, 0);
    struct evbuffer_iovec *v = calloc((size_t)nv, sizeof(*v));
    size_t off = 0;

    ck_assert_uint_eq(evbuffer_get_length(in), n);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(evbuffer_peek(in, -1, NULL, v, nv), nv);
    for (int i = 0; i < nv; i++) {
        const unsigned char *b = v[i].iov_base;
        ck_assert_msg(v[i].iov_len <= piece, "a chain of %zu bytes (at most %zu)", v[i].iov_len,
                      piece);
        for (size_t k = 0; k < v[i].iov_len; k++, off++)
            if (b[k] != pat(off))
                ck_abort_msg("byte %zu out of order", off);
    }
    ck_assert_uint_eq(off, n);
    free(v);
}

START_TEST(a_turn_reads_its_max_in_pieces)
{
    struct px_pool pool;
    struct pair p;
    struct turn t = {.pool = &pool, .max = PX_UP_READ_MORE};
    size_t want = 4096 + PX_UP_READ_MORE + 8192, put_n;

    memset(&pool, 0, sizeof(pool));
    pair_open(&p);
    put_n = put(p.w, 0, want);
    ck_assert_msg(put_n == want, "the socket pair took %zu of %zu bytes", put_n, want);
    pair_turn(&p, &t);
    ck_assert_int_eq(t.calls, 1);
    ck_assert_uint_eq(t.before, 4096); /* libevent's own read */
    ck_assert_uint_eq(t.got, PX_UP_READ_MORE);
    /* a whole turn's worth, and no chain past a piece (plus what libevent's
     * own read left room for in its chain) */
    check_input(p.bev, 4096 + PX_UP_READ_MORE, PX_UP_READ_PIECE + 4096);
    ck_assert_uint_ge(4096 + PX_UP_READ_MORE, 256 * 1024);
    pair_close(&p);
}
END_TEST

START_TEST(stops_at_the_watermark_and_when_empty)
{
    struct px_pool pool;
    struct pair p;
    struct turn t = {.pool = &pool, .max = PX_UP_READ_MORE};
    size_t high = 100 * 1024;

    memset(&pool, 0, sizeof(pool));
    pair_open(&p);
    bufferevent_setwatermark(p.bev, EV_READ, 0, high);
    ck_assert_uint_eq(put(p.w, 0, 200 * 1024), 200 * 1024);
    pair_turn(&p, &t);
    ck_assert_uint_eq(t.got, high - 4096);
    check_input(p.bev, high, PX_UP_READ_PIECE + 4096);
    pair_close(&p);

    /* only 10 KiB past libevent's read on the socket: those, then nothing */
    memset(&t, 0, sizeof(t));
    t.pool = &pool;
    t.max = PX_UP_READ_MORE;
    pair_open(&p);
    ck_assert_uint_eq(put(p.w, 0, 4096 + 10240), 4096 + 10240);
    pair_turn(&p, &t);
    ck_assert_uint_eq(t.got, 10240);
    ck_assert_uint_eq(px_up_read_more(p.bev, &pool, PX_UP_READ_MORE), 0);
    check_input(p.bev, 4096 + 10240, PX_UP_READ_PIECE + 4096);
    pair_close(&p);
}
END_TEST

START_TEST(a_tls_pool_reads_nothing)
{
    struct px_pool pool;
    struct pair p;
    struct turn t = {.pool = &pool, .max = PX_UP_READ_MORE};

    memset(&pool, 0, sizeof(pool));
    pool.tls = 1;
    pair_open(&p);
    ck_assert_uint_eq(put(p.w, 0, 64 * 1024), 64 * 1024);
    pair_turn(&p, &t);
    ck_assert_uint_eq(t.got, 0);
    check_input(p.bev, 4096, 4096);
    pair_close(&p);
}
END_TEST

TCase *tcase_up_read(void)
{
    TCase *tc = tcase_create("up_read");
    tcase_add_test(tc, a_turn_reads_its_max_in_pieces);
    tcase_add_test(tc, stops_at_the_watermark_and_when_empty);
    tcase_add_test(tc, a_tls_pool_reads_nothing);
    return tc;
}
