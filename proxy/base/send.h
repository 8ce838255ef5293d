/*
 * send.h - a connection's output written in the turn it was made.
 *
 * libevent writes a bufferevent's output when epoll says the socket is
 * writable: bytes added in one loop turn cost an epoll_ctl to start
 * watching for writability, a turn, the write, and another epoll_ctl to
 * stop watching. A sidecar's sockets nearly always take what it writes, so
 * the HTTP/2 senders collect a turn's frames in a px_out and px_out_end()
 * writes them at once, as full TLS records (SSL_write of up to 16 KiB, one
 * record each) or one write(2) for plaintext. Only what the socket does not
 * take goes to the bufferevent's output, and libevent's usual path writes
 * it when it can. Order holds: while anything waits in the output, new
 * bytes are queued behind it. A failed write is left for libevent to meet
 * on its own attempt (the unwritten bytes are queued), so a broken
 * connection ends through the same event, reason and log line as before.
 *
 * Bytes are gathered in a per-thread staging area of PX_OUT_STAGE bytes; a
 * px_out begun while another is open on the same thread (a sender that
 * runs inside another's callbacks) queues into the output as before.
 */
#ifndef PX_SEND_H
#define PX_SEND_H

#include <stddef.h>

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#define PX_OUT_STAGE (64 * 1024)

struct px_out {
    struct bufferevent *bev;
    SSL *ssl;           /* the bufferevent's, when it is an established TLS one */
    unsigned char *buf; /* the thread's staging area; NULL: queue straight into the output */
    size_t len;         /* bytes staged */
};

/* Starts gathering output for bev (a socket or an OpenSSL bufferevent in
 * socket mode, connected and, for TLS, past its handshake). */
void px_out_begin(struct px_out *o, struct bufferevent *bev);
/* Adds n bytes after those already added. 0, or -1 when they could not be
 * queued (no memory). */
int px_out_add(struct px_out *o, const void *p, size_t n);
/* Bytes added and not yet written or queued. */
static inline size_t px_out_pending(const struct px_out *o)
{
    return o->len;
}
/* Writes what was added (the rest into the output) and ends o. 0, or -1
 * when the rest could not be queued (no memory). Must be called once for
 * every px_out_begin(), also on error paths (px_out_drop()). */
int px_out_end(struct px_out *o);
/* Ends o without writing what is staged (the connection is going away). */
void px_out_drop(struct px_out *o);

#endif
