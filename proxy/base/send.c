/*
 * send.c - a connection's output written in the turn it was made (send.h).
 */
#include "send.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/bio.h>
#include <openssl/err.h>

/* One TLS record's worth of plaintext: SSL_write() of this much is one
 * record and one write(2) on a socket BIO. */
#define RECORD (16 * 1024)

struct stage {
    unsigned char *buf;
    int busy;
};

static __thread struct stage tl_stage;
static pthread_key_t stage_key;
static pthread_once_t stage_once = PTHREAD_ONCE_INIT;
static int stage_key_ok;

static void stage_release(void *arg)
{
    free(arg);
    tl_stage.buf = NULL;
}

static void stage_key_make(void)
{
    stage_key_ok = pthread_key_create(&stage_key, stage_release) == 0;
}

/* This thread's staging area, made on first use; NULL when it is in use
 * (a nested px_out) or cannot be made. */
static unsigned char *stage_take(void)
{
    if (tl_stage.busy)
        return NULL;
    if (tl_stage.buf == NULL) {
        pthread_once(&stage_once, stage_key_make);
        if (!stage_key_ok || (tl_stage.buf = malloc(PX_OUT_STAGE)) == NULL)
            return NULL;
        if (pthread_setspecific(stage_key, tl_stage.buf) != 0) {
            free(tl_stage.buf);
            tl_stage.buf = NULL;
            return NULL;
        }
    }
    tl_stage.busy = 1;
    return tl_stage.buf;
}

/* ---- the wire ------------------------------------------------------------ */

struct px_wire {
    struct evbuffer *buf; /* encrypted records waiting for the socket */
    struct event *wev;    /* the socket is writable again: made the first time the
                           * socket is full (most connections never fill it) */
    struct event_base *base;
    evutil_socket_t fd;
    SSL *ssl;
    struct wire_bio *wb;  /* the SSL's BIO's data (owned by the BIO) */
    void (*cb)(void *arg, int err);
    void *arg;
    int broken;           /* a write failed: nothing more is written */
    int drained;          /* a read took less than asked: the socket is empty
                           * until epoll says otherwise (px_wire_read_begin) */
    int eof;              /* a read met the peer's FIN */
};

static BIO_METHOD *wire_method;
static pthread_once_t wire_once = PTHREAD_ONCE_INIT;

/* What the BIO holds: the wire, NULL once that is freed (the SSL, and so
 * the BIO, may outlive it: libevent's reference to a freed bufferevent's
 * SSL goes when its finalizer runs). */
struct wire_bio {
    struct px_wire *w;
};

static int wire_bio_write(BIO *b, const char *data, int len)
{
    struct wire_bio *wb = BIO_get_data(b);
    struct px_wire *w = wb != NULL ? wb->w : NULL;
    BIO_clear_retry_flags(b);
    if (w == NULL || w->broken || len < 0 || evbuffer_add(w->buf, data, (size_t)len) != 0)
        return -1;
    return len;
}

/* One read(2) per readiness: OpenSSL reads ahead (as much as its record
 * buffer takes), and a read that returns less than asked emptied the
 * socket, so the next one would only say EAGAIN: it is not made. */
static int wire_bio_read(BIO *b, char *data, int len)
{
    struct wire_bio *wb = BIO_get_data(b);
    struct px_wire *w = wb != NULL ? wb->w : NULL;
    ssize_t n;
    BIO_clear_retry_flags(b);
    if (w == NULL || len <= 0)
        return -1;
    if (w->eof)
        return 0;
    if (w->drained) {
        BIO_set_retry_read(b);
        return -1;
    }
    n = read(w->fd, data, (size_t)len);
    if (n > 0) {
        if (n < len)
            w->drained = 1;
        return (int)n;
    }
    if (n == 0) {
        w->eof = 1;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        w->drained = 1;
        BIO_set_retry_read(b);
    }
    return -1;
}

static long wire_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct wire_bio *wb = BIO_get_data(b);
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* px_out_end() and the write event move the bytes */
    case BIO_CTRL_WPENDING:
        return wb != NULL && wb->w != NULL ? (long)evbuffer_get_length(wb->w->buf) : 0;
    case BIO_CTRL_EOF: /* OpenSSL asks after a read of 0: a FIN, not an error */
        return wb != NULL && wb->w != NULL && wb->w->eof;
    case BIO_C_GET_FD:
        return -1; /* nobody but the wire uses the socket (libevent's finalizer
                    * of the bufferevent the SSL came from must not close it) */
    default:
        return 0;
    }
}

static int wire_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int wire_bio_destroy(BIO *b)
{
    free(BIO_get_data(b));
    BIO_set_data(b, NULL);
    return 1;
}

static void wire_method_make(void)
{
    int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;
    BIO_METHOD *m = BIO_meth_new(type, "picket wire");
    if (m == NULL || BIO_meth_set_write(m, wire_bio_write) != 1 ||
        BIO_meth_set_read(m, wire_bio_read) != 1 ||
        BIO_meth_set_ctrl(m, wire_bio_ctrl) != 1 || BIO_meth_set_create(m, wire_bio_create) != 1 ||
        BIO_meth_set_destroy(m, wire_bio_destroy) != 1) {
        BIO_meth_free(m);
        return;
    }
    wire_method = m;
}

static void wire_write_cb(evutil_socket_t fd, short what, void *arg);

/* Writes what the socket takes; arms the write event for the rest. -1 once
 * a write failed (or the event could not be made). */
static int wire_flush(struct px_wire *w)
{
    while (!w->broken && evbuffer_get_length(w->buf) > 0) {
        int n = evbuffer_write_atmost(w->buf, w->fd, -1);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        w->broken = 1; /* 0: the socket takes nothing (closed), or an error */
    }
    if (w->broken)
        return -1;
    if (evbuffer_get_length(w->buf) > 0) {
        if (w->wev == NULL &&
            (w->wev = event_new(w->base, w->fd, EV_WRITE | EV_PERSIST, wire_write_cb, w)) == NULL) {
            w->broken = 1; /* no memory: what waits could never leave */
            return -1;
        }
        if (!event_pending(w->wev, EV_WRITE, NULL))
            event_add(w->wev, NULL);
    } else if (w->wev != NULL && event_pending(w->wev, EV_WRITE, NULL)) {
        event_del(w->wev);
    }
    return 0;
}

static void wire_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_wire *w = arg;
    (void)fd;
    (void)what;
    if (wire_flush(w) != 0)
        w->cb(w->arg, -1);
    else if (evbuffer_get_length(w->buf) == 0)
        w->cb(w->arg, 0);
}

struct px_wire *px_wire_new(struct event_base *base, SSL *ssl, evutil_socket_t fd,
                            void (*cb)(void *arg, int err), void *arg)
{
    struct px_wire *w;
    BIO *bio;
    pthread_once(&wire_once, wire_method_make);
    if (ssl == NULL || wire_method == NULL || fd < 0 || (w = calloc(1, sizeof(*w))) == NULL)
        return NULL;
    w->fd = fd;
    w->ssl = ssl;
    w->cb = cb;
    w->arg = arg;
    w->buf = evbuffer_new();
    w->base = base;
    bio = BIO_new(wire_method);
    w->wb = malloc(sizeof(*w->wb));
    if (w->buf == NULL || bio == NULL || w->wb == NULL || BIO_up_ref(bio) != 1) {
        BIO_free(bio);
        free(w->wb);
        w->wb = NULL;
        px_wire_free(w);
        return NULL;
    }
    w->wb->w = w;
    BIO_set_data(bio, w->wb); /* the BIO's destroy frees wb */
    /* the SSL owns both references now; the socket BIO it had goes */
    SSL_set0_rbio(ssl, bio);
    SSL_set0_wbio(ssl, bio);
    SSL_set_read_ahead(ssl, 1);
    return w;
}

void px_wire_free(struct px_wire *w)
{
    if (w == NULL)
        return;
    if (w->wb != NULL)
        w->wb->w = NULL; /* anything OpenSSL writes from here on fails */
    if (w->wev != NULL)
        event_free(w->wev);
    if (w->buf != NULL)
        evbuffer_free(w->buf);
    free(w);
}

size_t px_wire_pending(const struct px_wire *w)
{
    return w != NULL ? evbuffer_get_length(w->buf) : 0;
}

struct evbuffer *px_wire_buffer(struct px_wire *w)
{
    return w->buf;
}

void px_wire_read_begin(struct px_wire *w)
{
    w->drained = 0;
}

/* Empties this thread's OpenSSL error queue, which is nearly always
 * empty already: ERR_clear_error() itself walks all 16 slots and frees
 * two pointers in each, about 1,300 instructions, once per record
 * written. ERR_peek_error() is what SSL_get_error() reads the queue with,
 * so a queue it sees as empty needs no clearing. */
static void err_clear(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

int px_wire_read(struct px_wire *w, void *buf, int len)
{
    int n, e;
    /* the socket is empty for now and OpenSSL holds nothing, not even part
     * of a record: SSL_read could only say WANT_READ (what it costs to
     * find that out is most of a small request's SSL_read) */
    if (w->drained && !w->eof && !SSL_has_pending(w->ssl))
        return PX_WIRE_AGAIN;
    err_clear();
    n = SSL_read(w->ssl, buf, len);
    if (n > 0)
        return n;
    e = SSL_get_error(w->ssl, n);
    err_clear();
    if (e == SSL_ERROR_WANT_READ)
        return PX_WIRE_AGAIN;
    return e == SSL_ERROR_ZERO_RETURN ? PX_WIRE_EOF : PX_WIRE_ERROR;
}

/* The close_notify of ssl, whose unwritten output is `queued` bytes (w:
 * its wire, or NULL). */
static int close_notify(SSL *ssl, size_t queued, struct px_wire *w)
{
    int r;
    if (ssl == NULL || !SSL_is_init_finished(ssl) || (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) ||
        queued > 0 || (w != NULL && w->broken))
        return 0; /* bytes still wait for the socket, or it is broken */
    ERR_clear_error();
    r = SSL_shutdown(ssl); /* 0: sent, the peer's not yet seen; 1: both */
    ERR_clear_error();
    if (r < 0)
        return 0; /* WANT_WRITE (the socket is full), or broken */
    if (w != NULL && (wire_flush(w) != 0 || evbuffer_get_length(w->buf) > 0))
        return 0;
    return 1;
}

int px_tls_close_notify(struct bufferevent *bev)
{
    return close_notify(bufferevent_openssl_get_ssl(bev),
                        evbuffer_get_length(bufferevent_get_output(bev)), NULL);
}

int px_wire_close_notify(struct px_wire *w)
{
    return close_notify(w->ssl, evbuffer_get_length(w->buf), w);
}

/* ---- px_out ----------------------------------------------------------------- */

void px_out_begin(struct px_out *o, struct bufferevent *bev)
{
    o->bev = bev;
    o->ssl = bufferevent_openssl_get_ssl(bev);
    o->wire = NULL;
    o->len = 0;
    o->buf = stage_take();
}

void px_out_begin_wire(struct px_out *o, struct px_wire *w)
{
    o->bev = NULL;
    o->ssl = w->ssl;
    o->wire = w;
    o->len = 0;
    o->buf = stage_take();
}

static int out_write(struct px_out *o, const unsigned char *p, size_t n);

/* Writes (or queues) what is staged and empties the staging area. */
static int stage_flush(struct px_out *o)
{
    int rc = o->len > 0 ? out_write(o, o->buf, o->len) : 0;
    o->len = 0;
    return rc;
}

/* SSL_write of p[0..n) in records of up to 16 KiB; stops at the first
 * that does not go (WANT_WRITE or an error). Returns the bytes written. */
static size_t ssl_write_records(SSL *ssl, const unsigned char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        int chunk = n - off > RECORD ? RECORD : (int)(n - off);
        int r;
        err_clear();
        r = SSL_write(ssl, p + off, chunk);
        if (r <= 0) {
            err_clear();
            break;
        }
        off += (size_t)r;
    }
    return off;
}

/* With a wire: p[0..n) through SSL_write into it (its BIO takes
 * everything, so SSL_write only fails when the connection is broken). */
static int wire_write(struct px_out *o, const unsigned char *p, size_t n)
{
    if (ssl_write_records(o->ssl, p, n) != n) {
        o->wire->broken = 1;
        return -1;
    }
    return 0;
}

/* Writes p[0..n) now as far as the socket takes it, when nothing waits in
 * the output; queues the rest there. */
static int out_write(struct px_out *o, const unsigned char *p, size_t n)
{
    struct evbuffer *q;
    evutil_socket_t fd;
    size_t off = 0;

    if (o->wire != NULL) {
        /* a full staging area: into the wire, and out once it holds as
         * much, so the caller's measure of what waits is the socket's */
        int rc = wire_write(o, p, n);
        if (rc == 0 && evbuffer_get_length(o->wire->buf) >= PX_OUT_STAGE)
            rc = wire_flush(o->wire);
        return rc;
    }
    q = bufferevent_get_output(o->bev);
    fd = bufferevent_getfd(o->bev);

    if (evbuffer_get_length(q) == 0 && fd >= 0) {
        /* TLS, a record that does not go: WANT_WRITE, OpenSSL holds it
         * and must be called again with the same bytes first, which is
         * what libevent does with the output queued below (one chain, at
         * least this long); or an error, which libevent meets on that
         * same write. */
        if (o->ssl != NULL)
            off = ssl_write_records(o->ssl, p, n);
        while (o->ssl == NULL && off < n) {
            ssize_t r = write(fd, p + off, n - off);
            if (r <= 0)
                break; /* EAGAIN, or an error libevent meets on its own write */
            off += (size_t)r;
        }
    }
    if (off < n && evbuffer_add(q, p + off, n - off) != 0)
        return -1;
    return 0;
}

int px_out_add(struct px_out *o, const void *p, size_t n)
{
    if (o->buf == NULL)
        return o->wire != NULL ? wire_write(o, p, n)
                               : evbuffer_add(bufferevent_get_output(o->bev), p, n);
    if (n > PX_OUT_STAGE - o->len) {
        if (stage_flush(o) != 0)
            return -1;
        if (n > PX_OUT_STAGE)
            return out_write(o, p, n);
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

int px_out_add_evbuffer(struct px_out *o, struct evbuffer *b, size_t n)
{
    if (evbuffer_get_length(b) < n)
        return -1;
    if (o->buf == NULL) {
        unsigned char *p;
        if (o->wire == NULL)
            return evbuffer_remove_buffer(b, bufferevent_get_output(o->bev), n) == (int)n ? 0
                                                                                          : -1;
        if (n > 0 && ((p = evbuffer_pullup(b, (ev_ssize_t)n)) == NULL || wire_write(o, p, n) != 0))
            return -1;
        return evbuffer_drain(b, n);
    }
    while (n > 0) {
        size_t k;
        if (o->len == PX_OUT_STAGE && stage_flush(o) != 0)
            return -1;
        k = n < PX_OUT_STAGE - o->len ? n : PX_OUT_STAGE - o->len;
        if (evbuffer_remove(b, o->buf + o->len, k) != (int)k)
            return -1;
        o->len += k;
        n -= k;
    }
    return 0;
}

int px_out_end(struct px_out *o)
{
    int rc = 0;
    if (o->buf != NULL) {
        rc = stage_flush(o);
        tl_stage.busy = 0;
        o->buf = NULL;
    }
    o->len = 0;
    /* with a wire: out now, with whatever OpenSSL wrote by itself since */
    if (rc == 0 && o->wire != NULL)
        rc = wire_flush(o->wire);
    return rc;
}

void px_out_drop(struct px_out *o)
{
    if (o->buf != NULL)
        tl_stage.busy = 0;
    o->buf = NULL;
    o->len = 0;
}

/* ---- an evbuffer's bytes, now ---------------------------------------------- */

int px_send_buffer(struct bufferevent *bev, struct evbuffer *b)
{
    struct px_out o;
    size_t n = evbuffer_get_length(b);
    int rc;

    if (n == 0)
        return 0;
    px_out_begin(&o, bev);
    rc = px_out_add_evbuffer(&o, b, n);
    if (px_out_end(&o) != 0)
        rc = -1;
    return rc;
}
