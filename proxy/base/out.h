/*
 * out.h - output written piece by piece, with one failure check.
 *
 * A message written with several appends, one of which failed for lack of
 * memory, is not a shorter message but another one: a lost CRLF joins two
 * header lines, a lost blank line turns the body into headers, a lost
 * chunk size makes the data framing. So every append goes through a
 * px_out, which stops at the first failure and remembers it; the caller
 * checks `failed` once and then ends the message the safe way (the
 * connection is closed, the stream reset): the peer sees an incomplete
 * message, never a different one.
 *
 * This is the allocation rule of proxy/ (proxy/README.md, "Layout"):
 * every allocation is checked; a failure that would change what a request
 * or a response says fails that request or response, and nothing is
 * dropped silently.
 */
#ifndef PX_OUT_H
#define PX_OUT_H

#include <stdarg.h>
#include <stddef.h>

#include <event2/buffer.h>

struct px_out {
    struct evbuffer *b;
    int failed;
};

static inline struct px_out px_out_to(struct evbuffer *b)
{
    struct px_out o = {b, 0};
    return o;
}

static inline void px_out_add(struct px_out *o, const void *p, size_t n)
{
    if (!o->failed && evbuffer_add(o->b, p, n) != 0)
        o->failed = 1;
}

/* Moves n bytes from src (all of them, or the output has failed). */
static inline void px_out_move(struct px_out *o, struct evbuffer *src, size_t n)
{
    if (!o->failed && evbuffer_remove_buffer(src, o->b, n) != (int)n)
        o->failed = 1;
}

static inline void px_out_printf(struct px_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void px_out_printf(struct px_out *o, const char *fmt, ...)
{
    va_list ap;
    if (o->failed)
        return;
    va_start(ap, fmt);
    if (evbuffer_add_vprintf(o->b, fmt, ap) < 0)
        o->failed = 1;
    va_end(ap);
}

/* Writes b's bytes to bev's socket now, as send.c's px_out does (TLS
 * records of up to 16 KiB, or write(2) for plaintext, when nothing waits in
 * the output), and queues what the socket does not take in bev's output,
 * which libevent then writes when it can. b is left empty. 0, or -1 when
 * the rest could not be queued (no memory: the message is cut, so the
 * caller closes the connection). A message built into an evbuffer with the
 * px_out above and handed over whole costs no epoll_ctl and no loop turn
 * when the socket takes it, which is nearly always. (send.c; its header's
 * px_out is another type, hence the declaration here.) */
struct bufferevent;
int px_send_buffer(struct bufferevent *bev, struct evbuffer *b);
/* A close_notify on a TLS connection ending cleanly (send.h). */
int px_tls_close_notify(struct bufferevent *bev);

#endif
