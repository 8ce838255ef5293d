/*
 * upstream.h - the upstream layer: per-worker pools towards apps, remote
 * sidecars and authorization services, their HTTP/2 and HTTP/1.1 client
 * halves (up_h2.c, up_h1.c), TLS origination (up_tls.c) and the
 * non-blocking resolver (resolver.c).
 */
#ifndef PX_UPSTREAM_H
#define PX_UPSTREAM_H

#include "px.h"

/* ---- upstream pools ---------------------------------------------------- */

/* Starts the upstream side of st towards `up` (pool per worker). On
 * immediate failure calls px_stream_upstream_failed(). */
void px_upstream_start(struct px_worker *w, const struct px_upstream_addr *up,
                       struct px_stream *st);
/* h2c and h1 halves, called by px_upstream_start(). */
void px_up_h2_start(struct px_worker *w, struct px_pool *pool, struct px_stream *st);
void px_up_h1_start(struct px_worker *w, struct px_pool *pool, struct px_stream *st);

enum px_pool_alpn { PX_ALPN_FIXED, PX_ALPN_PROBE };

struct px_pool_waiter;
struct px_resolve_req;

struct px_pool {
    struct px_pool *next;
    struct px_worker *worker;
    char key[2400];              /* proto://host:port[#server_id] */
    enum px_upstream_proto proto; /* PX_UP_H2C / PX_UP_H1, or PX_UP_MTLS until ALPN says */
    int tls;                     /* connections are mTLS (client SVID, server SVID checked) */
    int h2;                      /* protocol on the wire: 1 h2, 0 HTTP/1.1 */
    enum px_pool_alpn alpn;      /* PROBE: offer h2 and http/1.1, settle on the first answer */
    char server_id[2100];        /* tls: the SPIFFE ID the server must present */
    char sni[256];               /* tls: server name sent, "" for IP literals */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    /* name resolution (upstream.c): addr is good until addr_expires_ms
     * (monotonic; 0 = forever: a literal); a failed lookup is not asked
     * again before fail_until_ms; streams wait in `waiters` for the first */
    char host[256], port[8];
    int has_addr;
    int64_t addr_expires_ms, fail_until_ms;
    struct px_resolve_req *resolving;
    struct px_pool_waiter *waiters;
    void *conns;                 /* up_h1.c: idle HTTP/1.1 connections */
    size_t nconns;
    size_t nidle;
    void *h2conns;               /* up_h2.c: multiplexed connections */
    size_t nh2conns;
};

/* New, unconnected bufferevent for a connection of `pool`: a plain socket,
 * or a client TLS one (own SVID, server SVID checked against
 * pool->server_id) when pool->tls. NULL on failure. */
struct bufferevent *px_up_bev_new(struct px_worker *w, struct px_pool *pool);
/* After BEV_EVENT_CONNECTED on a TLS pool connection: 1 when ALPN chose h2. */
int px_up_bev_is_h2(struct bufferevent *bev);
/* Why a TLS pool connection failed (server identity reason, or "tls_error"),
 * or NULL for plain connections / no TLS detail. Drains OpenSSL's errors. */
enum px_reason px_up_bev_fail_reason(struct bufferevent *bev);
int64_t px_up_bev_not_after(struct bufferevent *bev);
/* After a pool connection's EOF or error event `what`: 1 when the server
 * ended its side cleanly, so that the end may delimit a body (HTTP/1.x
 * read until close): a plain socket's FIN (not a reset or another error),
 * a TLS server's close_notify (a bare FIN, or one from an attacker on the
 * path, is a cut). */
int px_up_bev_clean_eof(struct bufferevent *bev, short what);
/* Called first in the read callback of a plaintext pool connection: reads
 * on, straight into bev's input, until the socket is empty, `max` more
 * bytes are in, or the read high watermark is reached (so back-pressure
 * and the memory budget hold as before). Each readv(2) takes at most
 * PX_UP_READ_PIECE, so no buffer chain reaches glibc's mmap threshold
 * (128 KiB: a fresh mapping and its page faults per read). EOF and errors
 * are left on the socket for libevent's next read, which reports them as
 * always. A no-op on TLS pools. Returns the bytes read. */
size_t px_up_read_more(struct bufferevent *bev, const struct px_pool *pool, size_t max);
/* With libevent's own 4 KiB read, 256 KiB per loop turn: a 1 MiB body is
 * four turns (each an epoll_wait and a FIONREAD besides the reads), not
 * sixteen; and a turn's work on one connection stays bounded (about
 * 0.4 ms of CPU at 256 KiB) for the others the worker serves. */
#define PX_UP_READ_MORE (252 * 1024)
#define PX_UP_READ_PIECE (60 * 1024)
/* How far an HTTP/1.1 app's connection reads ahead of its response's
 * client: its read high watermark is what the client can take
 * (px_stream_resp_room), at most a loop turn's worth (the same 256 KiB). */
#define PX_H1_IN_HIGH (4 * 1024 + PX_UP_READ_MORE)

/* Writes the head of the canonical request rq as HTTP/1.1 (up_h1.c):
 * request line, Host, every field of rq->hdrs, then the framing picket
 * chose: chunked, or Content-Length len (left out for an empty body of a
 * method without body semantics). Returns 0; -1 when rq is not built or
 * could split the request line (never for a built request), nothing
 * written; -2 when memory ran out part way (out.h: what was written is
 * not a head; the caller closes the connection). Pure apart from
 * appending to out. */
int px_h1_write_request_head(struct evbuffer *out, const struct px_request *rq, int chunked,
                             uint64_t len);

/* Frees a worker's pools and what they hold (idle connections, the
 * resolver). Worker thread, at exit. */
void px_pools_free(struct px_worker *w);
void px_up_h2_pool_free(struct px_pool *pool);
void px_up_h1_pool_free(struct px_pool *pool);

#endif
