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
    struct bufferevent *bev; /* NULL with a wire */
    SSL *ssl;             /* the bufferevent's, when it is an established TLS one, or the wire's */
    struct px_wire *wire; /* the connection's wire (px_wire_new), or NULL */
    unsigned char *buf;   /* the thread's staging area; NULL: no staging (nested) */
    size_t len;           /* bytes staged */
};

/* ---- a TLS connection's own I/O ---------------------------------------------
 * A wire is an established TLS connection's socket, taken over from the
 * bufferevent its handshake ran on (the caller frees that: HTTP/2, h2.c).
 * Writes: OpenSSL's records go into a buffer of the wire's own, and
 * px_out_end() (or the wire's write event, when the socket was full)
 * writes them with one writev(2) for as many records as the socket takes,
 * where SSL_write on a socket BIO makes one write(2) per 16 KiB record.
 * Bytes OpenSSL writes by itself (alerts, a KeyUpdate answer) go out with
 * the next px_out_end(). cb(arg, 0) runs when the socket took everything
 * that waited for it; cb(arg, -1) when writing failed (the connection is
 * broken).
 * Reads: px_wire_read() is SSL_read with OpenSSL reading ahead (a whole
 * record buffer, up to 16 KiB and more, in one read(2)), and once a read
 * came back short the socket counts as empty until the caller's next
 * readiness (px_wire_read_begin()): one read(2) per readiness where
 * libevent made three (a record's 5-byte header, its body, and the
 * EAGAIN that ends the turn). The caller watches the socket itself.
 * The SSL and the socket stay the caller's to free and close; the wire
 * only uses them. Worker thread. */
struct px_wire *px_wire_new(struct event_base *base, SSL *ssl, evutil_socket_t fd,
                            void (*cb)(void *arg, int err), void *arg);
/* Frees w (NULL is fine); the SSL's BIO stays, reading and writing nothing. */
void px_wire_free(struct px_wire *w);
/* Encrypted bytes waiting for the socket. */
size_t px_wire_pending(const struct px_wire *w);
/* The buffer those bytes wait in (for the memory budget's tracking). */
struct evbuffer *px_wire_buffer(struct px_wire *w);
/* The socket was reported readable (or the caller resumes reading): the
 * next px_wire_read() may read it again. */
void px_wire_read_begin(struct px_wire *w);
/* px_wire_read: plaintext bytes read (> 0), or one of these. */
enum {
    PX_WIRE_AGAIN = 0,  /* nothing more until the socket is readable again */
    PX_WIRE_EOF = -1,   /* the peer's close_notify: a clean end */
    PX_WIRE_ERROR = -2, /* a cut (FIN or reset without close_notify), a TLS error */
};
/* Up to len bytes of plaintext into buf. */
int px_wire_read(struct px_wire *w, void *buf, int len);

/* Starts gathering output for bev (a socket or an OpenSSL bufferevent in
 * socket mode, connected and, for TLS, past its handshake). */
void px_out_begin(struct px_out *o, struct bufferevent *bev);
/* The same for a wire's connection. */
void px_out_begin_wire(struct px_out *o, struct px_wire *w);
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
 * TLS bufferevent) or w when everything written before it has gone to the
 * socket: nothing queued in bev's output or in w. Only for
 * a connection ending cleanly: after a cut, the bare close is what tells
 * the peer. One attempt that does not block (the alert is 24 bytes; a
 * socket that just took all of the output takes it too); 1 when it was
 * written, else 0, and the close that follows is a bare one. Once per
 * connection (OpenSSL remembers it was sent). Worker thread. */
int px_tls_close_notify(struct bufferevent *bev);
int px_wire_close_notify(struct px_wire *w);

#endif
