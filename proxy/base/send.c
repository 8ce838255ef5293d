/*
 * send.c - a connection's output written in the turn it was made (send.h).
 */
#include "send.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
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

void px_out_begin(struct px_out *o, struct bufferevent *bev)
{
    o->bev = bev;
    o->ssl = bufferevent_openssl_get_ssl(bev);
    o->len = 0;
    o->buf = stage_take();
}

/* Writes p[0..n) now as far as the socket takes it, when nothing waits in
 * the output; queues the rest there. */
static int out_write(struct px_out *o, const unsigned char *p, size_t n)
{
    struct evbuffer *q = bufferevent_get_output(o->bev);
    size_t off = 0;

    if (evbuffer_get_length(q) == 0) {
        evutil_socket_t fd = bufferevent_getfd(o->bev);
        while (off < n && fd >= 0) {
            if (o->ssl != NULL) {
                int chunk = n - off > RECORD ? RECORD : (int)(n - off);
                int r;
                ERR_clear_error();
                r = SSL_write(o->ssl, p + off, chunk);
                if (r <= 0) {
                    /* WANT_WRITE: OpenSSL holds the record and must be
                     * called again with the same bytes first, which is
                     * what libevent does with the output queued below
                     * (one chain, at least this long). An error: libevent
                     * meets it on that same write. */
                    ERR_clear_error();
                    break;
                }
                off += (size_t)r;
            } else {
                ssize_t r = write(fd, p + off, n - off);
                if (r <= 0)
                    break; /* EAGAIN, or an error libevent meets on its own write */
                off += (size_t)r;
            }
        }
    }
    if (off < n && evbuffer_add(q, p + off, n - off) != 0)
        return -1;
    return 0;
}

int px_out_add(struct px_out *o, const void *p, size_t n)
{
    if (o->buf == NULL)
        return evbuffer_add(bufferevent_get_output(o->bev), p, n);
    if (n > PX_OUT_STAGE - o->len) {
        int rc = out_write(o, o->buf, o->len);
        o->len = 0;
        if (rc != 0)
            return -1;
        if (n > PX_OUT_STAGE)
            return out_write(o, p, n);
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

int px_out_end(struct px_out *o)
{
    int rc = 0;
    if (o->buf != NULL) {
        if (o->len > 0)
            rc = out_write(o, o->buf, o->len);
        tl_stage.busy = 0;
        o->buf = NULL;
    }
    o->len = 0;
    return rc;
}

void px_out_drop(struct px_out *o)
{
    if (o->buf != NULL)
        tl_stage.busy = 0;
    o->buf = NULL;
    o->len = 0;
}
