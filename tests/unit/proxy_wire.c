/*
 * proxy_wire.c - TCase "wire" of the proxy suite: a TLS connection's own
 * I/O (proxy/base/send.h, px_wire) over a real socket pair, with an
 * OpenSSL client on the other end in the same thread.
 *
 * What it holds to: every record the client wrote is returned before
 * px_wire_read says AGAIN, also those OpenSSL read ahead into its buffer
 * (where epoll cannot see them); once a read(2) came back short the socket
 * is not read again until the caller's next readiness (the one-read-per-
 * readiness that saves two syscalls per turn); the client's close_notify
 * is EOF and a bare close an error; what px_out writes through the wire
 * reaches the client whole; the wire never closes the socket it was given.
 */
#include <check.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "send.h"

TCase *tcase_wire(void);

struct pair {
    struct event_base *base;
    SSL_CTX *sctx, *cctx;
    SSL *s, *c;
    int sfd, cfd;
    struct px_wire *w;
};

static unsigned char pat(uint64_t i)
{
    return (unsigned char)((i * 13) % 251);
}

static void wire_cb(void *arg, int err)
{
    (void)arg;
    (void)err;
}

/* A self-signed P-256 server certificate, in memory. */
static void server_identity(SSL_CTX *ctx)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(key);
    ck_assert_ptr_nonnull(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"wire", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    ck_assert_int_gt(X509_sign(x, key, EVP_sha256()), 0);
    ck_assert_int_eq(SSL_CTX_use_certificate(ctx, x), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, key), 1);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* Both ends non-blocking, handshaken, the server's socket given to a wire. */
static void pair_open(struct pair *p)
{
    int sv[2], done_s = 0, done_c = 0;
    memset(p, 0, sizeof(*p));
    p->base = event_base_new();
    ck_assert_ptr_nonnull(p->base);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    p->sfd = sv[0];
    p->cfd = sv[1];
    fcntl(p->sfd, F_SETFL, O_NONBLOCK);
    fcntl(p->cfd, F_SETFL, O_NONBLOCK);
    p->sctx = SSL_CTX_new(TLS_server_method());
    p->cctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(p->sctx);
    ck_assert_ptr_nonnull(p->cctx);
    SSL_CTX_set_mode(p->sctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(p->sctx, SSL_OP_NO_TICKET);
    server_identity(p->sctx);
    p->s = SSL_new(p->sctx);
    p->c = SSL_new(p->cctx);
    SSL_set_fd(p->s, p->sfd);
    SSL_set_fd(p->c, p->cfd);
    SSL_set_accept_state(p->s);
    SSL_set_connect_state(p->c);
    for (int i = 0; i < 1000 && !(done_s && done_c); i++) {
        if (!done_c)
            done_c = SSL_do_handshake(p->c) == 1;
        if (!done_s)
            done_s = SSL_do_handshake(p->s) == 1;
    }
    ck_assert(done_s && done_c);
    p->w = px_wire_new(p->base, p->s, p->sfd, wire_cb, p);
    ck_assert_ptr_nonnull(p->w);
}

static void pair_close(struct pair *p)
{
    px_wire_free(p->w);
    SSL_free(p->s);
    SSL_free(p->c);
    SSL_CTX_free(p->sctx);
    SSL_CTX_free(p->cctx);
    if (p->sfd >= 0)
        close(p->sfd);
    if (p->cfd >= 0)
        close(p->cfd);
    event_base_free(p->base);
}

/* The client writes n pattern bytes from *off on (SSL_write: records of
 * up to 16 KiB); the socket pair's buffer takes them all. */
static void client_write(struct pair *p, uint64_t *off, size_t n)
{
    unsigned char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i++)
        b[i] = pat(*off + i);
    for (size_t done = 0; done < n;) {
        int r = SSL_write(p->c, b + done, (int)(n - done));
        ck_assert_int_gt(r, 0);
        done += (size_t)r;
    }
    *off += n;
    free(b);
}

/* Reads until AGAIN (or an end); returns the bytes, all checked against
 * the pattern from *off on. *last: the last px_wire_read result. */
static size_t server_read(struct pair *p, uint64_t *off, int *last)
{
    unsigned char buf[16 * 1024];
    size_t got = 0;
    int r;
    while ((r = px_wire_read(p->w, buf, (int)sizeof(buf))) > 0) {
        for (int i = 0; i < r; i++)
            ck_assert_uint_eq(buf[i], pat(*off + (uint64_t)i));
        *off += (uint64_t)r;
        got += (size_t)r;
    }
    *last = r;
    return got;
}

START_TEST(records_read_ahead_all_come_out)
{
    struct pair p;
    uint64_t wrote = 0, read_off = 0;
    int last;
    pair_open(&p);
    /* nine records: OpenSSL's read-ahead takes more than one record per
     * read(2), so after the first few reads whole records wait in its
     * buffer, not in the socket */
    client_write(&p, &wrote, 8 * 16384 + 300);
    px_wire_read_begin(p.w);
    ck_assert_uint_eq(server_read(&p, &read_off, &last), wrote);
    ck_assert_int_eq(last, PX_WIRE_AGAIN);
    /* a few bytes more, in several small records */
    for (int i = 0; i < 5; i++)
        client_write(&p, &wrote, 7);
    px_wire_read_begin(p.w);
    ck_assert_uint_eq(server_read(&p, &read_off, &last), 35);
    ck_assert_int_eq(last, PX_WIRE_AGAIN);
    pair_close(&p);
}
END_TEST

/* read(2)-family calls this process has made so far (/proc/self/io's
 * syscr), read with one read(2) of its own. */
static long read_calls(void)
{
    char buf[512];
    const char *at;
    ssize_t n;
    int fd = open("/proc/self/io", O_RDONLY);
    ck_assert_int_ge(fd, 0);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    at = strstr(buf, "syscr: ");
    ck_assert_ptr_nonnull(at);
    return strtol(at + 7, NULL, 10);
}

START_TEST(one_read_per_readiness)
{
    struct pair p;
    uint64_t wrote = 0, read_off = 0;
    int last;
    long idle, busy;
    pair_open(&p);
    client_write(&p, &wrote, 1000);
    px_wire_read_begin(p.w);
    /* one record in one read(2): not its 5-byte header, its body and the
     * EAGAIN after it (what a socket BIO without read-ahead makes) */
    idle = read_calls();
    idle = read_calls() - idle;
    busy = read_calls();
    ck_assert_uint_eq(server_read(&p, &read_off, &last), 1000);
    busy = read_calls() - busy;
    ck_assert_int_eq(busy - idle, 1);
    /* the socket came back short: it is not read again until the next
     * readiness, even though bytes have arrived since */
    client_write(&p, &wrote, 500);
    ck_assert_uint_eq(server_read(&p, &read_off, &last), 0);
    ck_assert_int_eq(last, PX_WIRE_AGAIN);
    px_wire_read_begin(p.w);
    ck_assert_uint_eq(server_read(&p, &read_off, &last), 500);
    ck_assert_int_eq(last, PX_WIRE_AGAIN);
    pair_close(&p);
}
END_TEST

START_TEST(close_notify_is_eof_a_bare_close_is_not)
{
    struct pair p;
    uint64_t wrote = 0, read_off = 0;
    int last;

    pair_open(&p);
    client_write(&p, &wrote, 100);
    ck_assert_int_ge(SSL_shutdown(p.c), 0);
    px_wire_read_begin(p.w);
    ck_assert_uint_eq(server_read(&p, &read_off, &last), 100);
    ck_assert_int_eq(last, PX_WIRE_EOF);
    /* our own close_notify answers it, through the wire */
    ck_assert_int_eq(px_wire_close_notify(p.w), 1);
    pair_close(&p);

    pair_open(&p);
    wrote = read_off = 0;
    client_write(&p, &wrote, 100);
    close(p.cfd); /* a FIN without close_notify: a cut */
    p.cfd = -1;
    px_wire_read_begin(p.w);
    ck_assert_uint_eq(server_read(&p, &read_off, &last), 100);
    /* the short read that brought the bytes ended the readiness; the FIN
     * is the next one's */
    ck_assert_int_eq(last, PX_WIRE_AGAIN);
    px_wire_read_begin(p.w);
    ck_assert_uint_eq(server_read(&p, &read_off, &last), 0);
    ck_assert_int_eq(last, PX_WIRE_ERROR);
    pair_close(&p);
}
END_TEST

START_TEST(out_through_the_wire_arrives_whole)
{
    struct pair p;
    struct px_out o;
    unsigned char *b = malloc(200000), got[16384];
    uint64_t seen = 0;
    int r, small = 4096;

    ck_assert_ptr_nonnull(b);
    pair_open(&p);
    /* small socket buffers: the socket cannot take it all at once */
    ck_assert_int_eq(setsockopt(p.sfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    ck_assert_int_eq(setsockopt(p.cfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    for (size_t i = 0; i < 200000; i++)
        b[i] = pat(i);
    px_out_begin_wire(&o, p.w);
    ck_assert_int_eq(px_out_add(&o, b, 100), 0);
    ck_assert_int_eq(px_out_add(&o, b + 100, 200000 - 100), 0);
    ck_assert_int_eq(px_out_end(&o), 0);
    ck_assert_uint_gt(px_wire_pending(p.w), 0);
    /* what the socket did not take waits in the wire; the client reads,
     * the wire's write event (made now that the socket was full) writes
     * the rest */
    for (int turns = 0; turns < 1000 && seen < 200000; turns++) {
        while ((r = SSL_read(p.c, got, (int)sizeof(got))) > 0)
            for (int i = 0; i < r; i++, seen++)
                ck_assert_uint_eq(got[i], pat(seen));
        event_base_loop(p.base, EVLOOP_NONBLOCK);
    }
    ck_assert_uint_eq(seen, 200000);
    ck_assert_uint_eq(px_wire_pending(p.w), 0);
    /* the wire is gone, the socket stays the caller's */
    px_wire_free(p.w);
    p.w = NULL;
    ck_assert_int_ne(fcntl(p.sfd, F_GETFD), -1);
    pair_close(&p);
    free(b);
}
END_TEST

TCase *tcase_wire(void)
{
    TCase *tc = tcase_create("wire");
    tcase_add_test(tc, records_read_ahead_all_come_out);
    tcase_add_test(tc, one_read_per_readiness);
    tcase_add_test(tc, close_notify_is_eof_a_bare_close_is_not);
    tcase_add_test(tc, out_through_the_wire_arrives_whole);
    return tc;
}
