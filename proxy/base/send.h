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
 * runs inside another's callbacks) has none: its bytes go to its
 * connection's wire, or are queued into the output as before.
 */
#ifndef PX_SEND_H
#define PX_SEND_H

#include <stddef.h>

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#define PX_OUT_STAGE (64 * 1024)

struct px_wire;

struct px_out {
    struct bufferevent *bev;
    SSL *ssl;             /* the bufferevent's, when it is an established TLS one */
    struct px_wire *wire; /* its TLS records' own buffer (px_wire_new), or NULL */
    unsigned char *buf;   /* the thread's staging area; NULL: no staging (nested) */
    size_t len;           /* bytes staged */
};

/* ---- a TLS connection's records, written many to a syscall ----------------
 * SSL_write on a socket BIO is one write(2) per 16 KiB record. A wire takes
 * over the write side of an established TLS bufferevent (socket mode):
 * OpenSSL's records go into a buffer of its own, and px_out_end() (or the
 * wire's own write event, when the socket was full) writes them with one
 * writev(2) for as many records as the socket takes. libevent keeps the
 * read side; its own output must stay unused from then on (px_out never
 * queues there for a bufferevent with a wire). Bytes OpenSSL writes by
 * itself (alerts, a KeyUpdate answer) go out with the next px_out_end().
 * cb(arg, 0) runs when the socket took everything that waited for it;
 * cb(arg, -1) when writing failed (the connection is broken). Worker
 * thread. */
struct px_wire *px_wire_new(struct event_base *base, struct bufferevent *bev,
                            void (*cb)(void *arg, int err), void *arg);
/* Frees w (NULL is fine); the SSL's write BIO stays, writing nowhere. */
void px_wire_free(struct px_wire *w);
/* Encrypted bytes waiting for the socket. */
size_t px_wire_pending(const struct px_wire *w);
/* The buffer those bytes wait in (for the memory budget's tracking). */
struct evbuffer *px_wire_buffer(struct px_wire *w);

/* Starts gathering output for bev (a socket or an OpenSSL bufferevent in
 * socket mode, connected and, for TLS, past its handshake; with its wire
 * when it has one). */
void px_out_begin(struct px_out *o, struct bufferevent *bev);
/* Adds n bytes after those already added. 0, or -1 when they could not be
 * queued (no memory). */
int px_out_add(struct px_out *o, const void *p, size_t n);
/* Moves n bytes from the front of b after those already added (one copy,
 * into the staging area). 0, or -1 (b holds fewer, no memory, broken). */
int px_out_add_evbuffer(struct px_out *o, struct evbuffer *b, size_t n);
/* Bytes added and not yet written or queued. */
static inline size_t px_out_pending(const struct px_out *o)
{
    return o->len;
}
/* Writes what was added (the rest into the output, or the wire) and ends
 * o. 0, or -1 when the rest could not be queued (no memory) or, with a
 * wire, the connection is broken. Must be called once for every
 * px_out_begin(), also on error paths (px_out_drop()). */
int px_out_end(struct px_out *o);
/* Ends o without writing what is staged (the connection is going away). */
void px_out_drop(struct px_out *o);

/* Writes b's bytes now through a px_out, queueing what the socket does not
 * take; b is left empty. 0, or -1 (no memory). For writers that build a
 * message in an evbuffer (out.h, which declares it too). */
int px_send_buffer(struct bufferevent *bev, struct evbuffer *b);

/* ---- the end of a TLS connection ------------------------------------------
 * A TLS close_notify tells the peer that everything we sent has arrived:
 * without one, the peer cannot tell our close from a cut (an HTTP/1.0 body
 * delimited by the close, a WebSocket's last message; OpenSSL 3 reports
 * "unexpected eof" unless told to ignore it). Sends it on bev (an established
 * TLS bufferevent; w its wire or NULL) when everything written before it
 * has gone to the socket: nothing queued in bev's output or in w. Only for
 * a connection ending cleanly: after a cut, the bare close is what tells
 * the peer. One attempt that does not block (the alert is 24 bytes; a
 * socket that just took all of the output takes it too); 1 when it was
 * written, else 0, and the close that follows is a bare one. Once per
 * connection (OpenSSL remembers it was sent). Worker thread. */
int px_tls_close_notify(struct bufferevent *bev, struct px_wire *w);

#endif
