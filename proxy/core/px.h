/*
 * px.h - types shared inside proxy/: workers, snapshots, connections,
 * streams and the interface between a stream's downstream side (h2.c,
 * h1.c) and its upstream side (up_h2.c, up_h1.c).
 *
 * A stream is one request/response exchange. Its downstream side fills the
 * request (headers, body into req_body, trailers) and sends the response;
 * its upstream side sends the request onward and fills the response. The
 * two sides never call each other directly: each one tells the stream
 * ("more request body is ready", "I drained n response bytes") through the
 * ops tables below, so any downstream protocol pairs with any upstream one.
 *
 * Buffers: req_body and resp_body are bounded by limits.stream_buffer.
 * A producer stops taking bytes from its peer when the buffer is over the
 * bound (h2: the stream's flow-control window is not reopened; h1: the
 * socket is not read) and resumes when the consumer reports it drained.
 */
#ifndef PX_H
#define PX_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>
#include <pthread.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#include "config.h"
#include "hdrs.h"
#include "mem.h"
#include "message.h"
#include "reason.h"
#include "clock.h"
#include "tls.h"

struct px_worker;
struct px_conn;
struct px_stream;
struct policy_engine;
struct certs_trust;
struct certs_keypair;

/* ---- snapshots -------------------------------------------------------- */

/* Everything a request reads that a reload may change. Immutable once
 * published; shared by all workers; freed when the last user unrefs it. */
struct px_snapshot {
    atomic_int refs;
    uint64_t gen;                   /* unique, increasing: newer snapshots have larger ones */
    struct px_config *cfg;
    struct certs_trust *trust;      /* may be NULL when no trust bundles */
    struct certs_keypair *keypair;  /* own SVID; may be NULL (no identity) */
    char *own_id;                   /* own SPIFFE ID ("" when none) */
    SSL_CTX **server_ctx;           /* per listener (index as cfg->listeners); NULL if plaintext */
    SSL_CTX *client_ctx;            /* for mTLS origination (outbound, dispatch, fetch) */
    struct px_policy_state *policy; /* compiled policy + metadata; NULL = no policy configured */
    struct sockaddr_storage *up_addr; /* resolved upstreams, see px_snapshot_upstream() */
    int identity_pending;           /* identity.source workload_api and no SVID yet: listeners
                                     * do not accept (worker.c), /readyz fails */
};

/* Policy currently in force. Shared, refcounted separately so a policy
 * swap does not rebuild TLS contexts. */
struct px_policy_state {
    atomic_int refs;
    struct policy_engine *engine;
    int64_t revision;
    int64_t loaded_at_ms;    /* wall clock when accepted */
    int64_t expires_at_s;    /* 0 = none */
    int audit_mode;
    size_t nrules;
    unsigned char sha[32];       /* SHA-256 of the bundle JSON (the revision floor's content) */
    uint64_t gen;                /* unique per state (metric caches key on it) */
    int from_url;                /* came from the control plane (or its cache) */
    _Atomic int64_t contact_ms;  /* from_url: last successful contact (or cache mtime);
                                  * written by the control thread, read by workers */
    char source[300];        /* "file:/path" or url */
};

struct px_snapshot *px_snapshot_ref(struct px_snapshot *s);
void px_snapshot_unref(struct px_snapshot *s);
struct px_policy_state *px_policy_state_ref(struct px_policy_state *p);
void px_policy_state_unref(struct px_policy_state *p);

/* ---- worker ----------------------------------------------------------- */

struct px_pool;
struct px_resolver;
struct px_counter;
struct px_histogram;
struct evconnlistener;

/* One configured listener, as seen by one worker. */
/* The per-request pipeline a listener hands its requests to (gate.h):
 * the protocol halves reach it only through this. */
struct px_gate {
    /* the request head is complete (st->rq collected) */
    void (*request)(struct px_stream *st);
    /* the request trailers are complete: 0, or -1 when refused */
    int (*trailers)(struct px_stream *st);
};

struct px_listener {
    struct px_worker *w;
    size_t index;                     /* in cfg->listeners */
    char name[64];
    struct evconnlistener *evl;
    /* re-enables evl after an accept failure, or once max_handshakes has
     * room again (starting parked_fd first) */
    struct event *accept_retry;
    /* one connection accepted when max_handshakes was already full (another
     * worker took the last slot): held here, not closed, and started by
     * accept_retry once a slot frees; -1 when none */
    int parked_fd;
    struct sockaddr_storage parked_sa;
    struct px_counter *by_status[600]; /* picket_requests_total{listener,status}, lazily */
    struct px_histogram *duration;     /* picket_request_duration_seconds{listener} */
    struct px_counter *conns_total;
    const struct px_gate *gate;        /* where its requests go (px_gate_pipeline) */
};

struct px_worker {
    int id;
    pthread_t thread;
    struct event_base *base;           /* no lock: this worker's thread only */
    struct px_mailbox *mailbox;        /* how other threads reach it (mailbox.h); workers only */
    struct px_snapshot *snap;          /* current; owned reference */
    struct px_policy_state *policy;    /* current; owned reference */
    struct px_listener *listeners;     /* one per configured listener */
    size_t nlisteners;
    struct px_pool *pools;             /* upstream connection pools */
    struct px_conn *conns;             /* all downstream connections (list) */
    size_t nconns;
    int draining;                      /* SIGTERM seen: listeners closed */
    int drain_notified;                /* connections told to finish (after drain_notice_delay) */
    struct event *drain_timer;
    struct event *drain_notice;        /* fires after limits.drain_notice_delay */
    struct px_dispatch_state *dispatch; /* dispatch.c: per-service caches, in-flight checks */
    struct px_stream *streams;         /* every live stream of this worker (memory pressure) */
    struct px_resolver *resolver;      /* upstream names (resolver.c), made on first use */
    struct event *mem_ev;              /* resets the heaviest streams when over the budget */
    struct event *mem_flush_ev;        /* adds its memory charges to the shared counters (mem.h) */
    struct event *decay_ev;            /* once a second: px_tmalloc_decay() */
    struct event *log_ev;              /* writes the thread's batched access/audit records (log.c) */
    int64_t up_common_ms;              /* the limit up_common was made for (stream.c) */
    const struct timeval *up_common;   /* libevent's common timeout for it; NULL: none */
    struct evbuffer *out_stage;        /* HTTP/1.1 bytes before the socket takes them (up_h1.c, h1.c) */
};

/* The worker's stage for HTTP/1.1 output (made on first use), when a
 * writer may build in it now: nothing waits in its connection's output
 * `out` (order holds) and no writer further up the stack holds it. The
 * writer hands what it built to px_send_buffer (out.h). NULL: build in
 * `out`, which libevent writes. */
static inline struct evbuffer *px_worker_stage(struct px_worker *w, struct evbuffer *out)
{
    if (w->out_stage == NULL)
        w->out_stage = evbuffer_new(); /* NULL again: the output, as before */
    if (w->out_stage == NULL || evbuffer_get_length(out) > 0 || evbuffer_get_length(w->out_stage) > 0)
        return NULL;
    return w->out_stage;
}

/* The empty peer ID of a connection without a verified client cert. */
extern char px_conn_no_peer[];

/* Counts of live downstream connections across all workers (conn.c): all
 * of them, per listener kind (0 inbound, 1 outbound; limits.max_connections)
 * and those still in their TLS handshake (limits.max_handshakes). */
extern atomic_long px_active_conns;
extern atomic_long px_conns_by_kind[2];
extern atomic_long px_handshaking;

/* ---- downstream connections ------------------------------------------ */

enum px_proto { PX_PROTO_NONE, PX_PROTO_H2, PX_PROTO_H1, PX_PROTO_TCP /* server/tunnel.c */ };

/* What the rest of picket may ask of a connection's protocol; set by the
 * protocol's start function (h1.c, h2.c), NULL before. */
struct px_conn_ops {
    /* stop taking requests, finish those in flight, close when idle */
    void (*drain)(struct px_conn *c);
    /* the peer's identity ended: refuse new requests now (h2: one GOAWAY),
     * finish those in flight */
    void (*end)(struct px_conn *c);
    /* close now, freeing c and its streams */
    void (*close)(struct px_conn *c);
};

struct px_conn {
    struct px_worker *w;
    struct px_listener *lst;
    struct px_conn *next, *prev;  /* worker list */
    struct px_snapshot *snap;     /* the snapshot this connection was accepted on (ref) */
    struct bufferevent *bev;      /* its socket's, until a protocol takes the socket over
                                   * (HTTP/2 on TLS: h2.c, send.h's wire); then NULL */
    SSL *ssl;                     /* NULL on plaintext listeners */
    int fd;                       /* the socket once no bufferevent holds it (closed, and
                                   * ssl freed, by px_conn_free), else -1 */
    enum px_proto proto;
    const struct px_conn_ops *ops; /* its protocol's, once started */
    void *proto_ctx;              /* struct px_h2 / struct px_h1 */
    struct event *timer;          /* handshake / idle / header timeout */
    int64_t accepted_ms;
    char peer_addr[64];
    char peer_ip[48];             /* the address alone, as x-forwarded-for carries it */
    char *peer_id;                /* SPIFFE ID of the verified client cert; never NULL:
                                   * px_conn_no_peer ("") until verified, then owned */
    char peer_cert_hash[65];      /* hex sha256 of the client cert DER */
    enum px_reason hs_reason;     /* handshake refusal reason (PX_R_NONE: none yet) */
    char *hs_detail;              /* handshake refusal detail (owned) or NULL */
    int handshaken;
    int counted_handshake;        /* in the handshake count (limits.max_handshakes) */
    int64_t peer_not_after;       /* Unix seconds: the peer chain's earliest notAfter (0: none) */
    struct event *cert_timer;     /* ends the connection at peer_not_after */
    enum px_reason identity_ended; /* why its identity no longer holds, or PX_R_NONE */
    int closing;
    struct px_mem_acct mem;       /* bytes held for this connection and its streams */
    struct px_mem_tracker trk_in, trk_out; /* its plaintext input and output buffers */
    char *xfcc;                   /* x-forwarded-client-cert for this peer, built on its first
                                   * request (px_conn_xfcc), or NULL */
    size_t xfcc_len;
    uint64_t xfcc_gen;            /* the snapshot (own SVID) it was built under */
};

/* A new connection accepted on l from sa, in its worker's list and the
 * counts above (the caller adds the handshake timer). The caller has taken
 * its slot in px_conns_by_kind (checking max_connections in the same
 * atomic step); px_conn_free gives it back, and so must the caller when
 * this returns NULL (no memory). */
struct px_conn *px_conn_new(struct px_listener *l, const struct sockaddr *sa);
/* Unlinks and frees c (its protocol has freed its streams). */
void px_conn_free(struct px_conn *c);
/* Counts the connection's plaintext buffers in the memory budget (mem.h);
 * called by the protocol start functions. 0 or -1 (ENOMEM). */
int px_conn_track(struct px_conn *c);
/* The connection's peer identity no longer holds (its certificate
 * expired, or a new trust bundle no longer verifies it): no new request
 * is taken; h2 sends GOAWAY and closes once its streams finish, h1 closes
 * after the response in flight (or now when idle); either way it is
 * closed after limits.drain_timeout. Logged and counted
 * (picket_connections_closed_total{reason}). Worker thread. */
void px_conn_end_identity(struct px_conn *c, enum px_reason reason);

/* The x-forwarded-client-cert value for c's verified peer under snapshot
 * snap (its own SPIFFE ID): built once per connection and snapshot, as
 * px_xfcc_build() does, since the peer, its certificate and our SVID are
 * the same for every request on it. NULL (*len 0) when it cannot be
 * built; the caller refuses the request. Worker thread. */
const char *px_conn_xfcc(struct px_conn *c, const struct px_snapshot *snap, size_t *len);

/* Through c->ops (a connection whose protocol has not started yet just
 * finishes its handshake and starts drained; closing it frees it). */
void px_conn_drain(struct px_conn *c);
void px_conn_close(struct px_conn *c);

/* gRPC status codes picket answers gRPC callers with (grpc-status; gRPC's
 * doc/statuscodes.md)).
 * PX_GRPC_NONE: not a gRPC-specific answer. */
enum px_grpc {
    PX_GRPC_NONE = -1,
    PX_GRPC_UNKNOWN = 2,
    PX_GRPC_DEADLINE_EXCEEDED = 4,
    PX_GRPC_PERMISSION_DENIED = 7,
    PX_GRPC_UNIMPLEMENTED = 12,
    PX_GRPC_INTERNAL = 13,
    PX_GRPC_UNAVAILABLE = 14,
    PX_GRPC_UNAUTHENTICATED = 16
};

/* ---- streams ---------------------------------------------------------- */

struct px_down_ops {
    /* The response progressed (headers, body bytes, eof or trailers are
     * available in the stream): send what flow control allows. */
    void (*response_ready)(struct px_stream *st);
    /* The upstream side took n bytes out of req_body: let more in. */
    void (*request_drained)(struct px_stream *st, size_t n);
    /* The request was allowed and goes upstream: a client waiting for
     * "100 Continue" gets it now, and the body may be read. May be NULL. */
    void (*request_allowed)(struct px_stream *st);
    /* Response bytes the client can take now (its HTTP/2 stream window), so
     * the upstream side buffers no more than that plus a little; SIZE_MAX
     * when the protocol has no window. May be NULL (= SIZE_MAX). */
    size_t (*resp_window)(struct px_stream *st);
    /* The upstream failed after the response started: the downstream must
     * end the stream abruptly (h2 RST_STREAM, h1 close the connection). */
    void (*abort)(struct px_stream *st);
};

struct px_up_ops {
    /* More request body, eof or trailers are available. */
    void (*request_ready)(struct px_stream *st);
    /* The downstream took n bytes out of resp_body: let more in. */
    void (*response_drained)(struct px_stream *st, size_t n);
    /* The downstream is gone: cancel the upstream request (h2
     * RST_STREAM; h1 close the connection unless the exchange is complete)
     * and call px_stream_up_done(). */
    void (*cancel)(struct px_stream *st);
};

struct px_stream {
    struct px_conn *conn;
    struct px_worker *w;
    struct px_snapshot *snap;    /* ref, taken when the request starts */
    struct px_policy_state *pol; /* ref, the policy the request was decided on */
    int64_t start_us;            /* monotonic */

    /* The canonical request (request.h): built once by px_stream_dispatch()
     * from what the downstream side collected; the policy, the route, the
     * dispatch check, the records and the upstream serializers read it. */
    struct px_request rq;
    struct evbuffer *req_body;
    int req_eof;                 /* downstream finished the request (body and trailers) */
    int tunnel_eof;              /* the client ended its side of a WebSocket tunnel (HTTP/1.1:
                                  * its EOF after the 101; HTTP/2: END_STREAM): see
                                  * px_stream_in_eof() */
    int allowed;                 /* the decision let it through: the upstream side may start */
    int http10;                  /* HTTP/1.0 client (no 100 Continue) */
    int malformed;               /* refused by px_request_build(): HTTP/1.1 closes after */
    uint64_t bytes_in;

    /* response */
    int status;                  /* 0 until response headers are known */
    struct px_hdrs resp;
    struct evbuffer *resp_body;
    struct px_hdrs resp_trailers;
    int resp_eof;
    int64_t resp_content_length;
    uint64_t bytes_out;
    int local_response;          /* answered by picket itself */
    int tunnel;                  /* a WebSocket the upstream agreed to (px_stream_tunnel_open):
                                  * req_body and resp_body carry its bytes, status is 101 */

    /* decision, for logs */
    int decided;                 /* an audit record is due */
    const char *decided_by;      /* "local" | "dispatch" | "cache" */
    const char *mode;            /* "enforce" | "audit" */
    int64_t bundle_revision;     /* -1 when no bundle */
    int64_t bundle_age_ms;
    const char *dispatch_node;   /* SPIFFE ID of the authorization service that decided */
    int64_t cache_age_ms;        /* decided_by "cache": age of the entry; else -1 */
    const char *decision;        /* "allow" "deny" ... static strings */
    char rule[128];
    const char *upstream_name;   /* url, for the access log */
    enum px_reason reason;       /* refusal or failure reason for logs (reason.h) */

    const struct px_down_ops *down;
    void *down_ctx;              /* h2: stream id etc. */
    const struct px_up_ops *up;
    void *up_ctx;
    int down_done, up_done;
    struct event up_timer;       /* upstream_timeout: made with the stream (a request
                                  * costs no event_new/event_free), armed once */
    int up_armed;                /* up_timer is pending */
    int64_t up_last_us;          /* last progress either way (px_mono_coarse_us), for up_timer */
    struct event *deadline_timer; /* whole-request deadline (px_stream_set_deadline) */
    int64_t deadline_us;         /* when it is (monotonic), 0 = none */
    const struct px_upstream_addr *route; /* picked once by the gate, in st->snap's config;
                                           * NULL: no route */
    int up_retries;              /* replays after REFUSED_STREAM */
    int logged;
    struct px_mem_acct mem;      /* bytes held for this stream (parent: the connection's) */
    struct px_body *bodies[2];   /* req_body's and resp_body's buffer and tracker (stream.c) */
    struct px_stream *wnext, *wprev; /* worker list (w->streams) */
};

/* Creates a stream on connection c (refs c's worker snapshot and policy). */
struct px_stream *px_stream_new(struct px_conn *c, const struct px_down_ops *ops, void *down_ctx);

/* A stream with no downstream connection: picket's own requests
 * (client.c). Not access-logged, never policy-checked. */
struct px_stream *px_stream_new_internal(struct px_worker *w, const struct px_down_ops *ops,
                                         void *down_ctx);

/* The downstream side collected the request head into st->rq: hands it
 * to its listener's gate, which builds the canonical request (refusing it
 * with 400/414/417/431 when it does not hold), decides, and starts the
 * upstream or answers locally. May call down->response_ready() before
 * returning. */
void px_stream_dispatch(struct px_stream *st);

/* Answer locally (refusal or error): status, a short plain body (NULL
 * for none). gRPC requests get a trailers-only answer with grpc_status.
 * Safe to call only before response headers were produced. */
void px_stream_respond(struct px_stream *st, int status, const char *body,
                       enum px_grpc grpc_status, enum px_reason reason);

/* Upstream side failed before/after response headers. Maps to 502/503/504
 * (before) or an abort (after). reason is logged ("connect_refused",...). */
void px_stream_upstream_failed(struct px_stream *st, int status, enum px_reason reason);

/* The upstream side is finished and failed: px_stream_up_done() then
 * px_stream_upstream_failed() (unless the downstream is already gone).
 * The caller must not touch st afterwards. */
void px_stream_up_fail(struct px_stream *st, int status, enum px_reason reason);

/* Upstream side: response headers are in (st->status, st->resp). */
void px_stream_response_headers(struct px_stream *st);

/* Upstream side: the upstream agreed to the WebSocket upgrade of a request
 * with rq.upgrade (an HTTP/1.1 101 whose Sec-WebSocket-Accept it checked,
 * or a 2xx to an extended CONNECT); st->resp holds the fields to relay.
 * From here the stream is a tunnel: status 101 (each downstream protocol
 * answers in its own form: HTTP/1.1 101 with its own Sec-WebSocket-Accept,
 * HTTP/2 200), req_body and resp_body carry the tunnel's bytes with the
 * usual bounds, the request deadline no longer applies, and
 * limits.tunnel_idle_timeout replaces limits.upstream_timeout (reason
 * "tunnel_idle"). Either side ends it with its eof. */
void px_stream_tunnel_open(struct px_stream *st);

/* Whether the client has sent all it will: for a WebSocket opening request
 * (rq.upgrade) the end of its side of the tunnel, which the upstream sides
 * read once the tunnel is open (an HTTP/1.1 GET that opens one is complete
 * when its head is, the tunnel's bytes are not its body); for any other
 * request the end of the request. */
static inline int px_stream_in_eof(const struct px_stream *st)
{
    return st->rq.upgrade ? st->tunnel_eof : st->req_eof;
}

/* Each side declares it is finished with the stream; the stream is freed
 * (and logged) when both are. After px_stream_down_done() the downstream
 * side must not touch st. */
void px_stream_down_done(struct px_stream *st);
void px_stream_up_done(struct px_stream *st);

/* The downstream side has all request trailers (st->rq.trailers): its
 * listener's gate filters them. Returns 0, or refuses/aborts the stream
 * and returns -1. */
int px_stream_trailers_done(struct px_stream *st);

/* The gRPC status for an HTTP error status (gRPC's HTTP-to-gRPC mapping). */
int px_grpc_for_http(int status);

/* The upstream side moved n request body bytes onward: progress for the
 * upstream timeout, and room for the downstream side to read more. */
void px_stream_request_sent(struct px_stream *st, size_t n);

/* Room, under the memory budget (mem.h), for more request / response body
 * bytes in this stream's buffers: limits.stream_buffer less what is held,
 * at most PX_MEM_FLOOR in all under pressure; the response side also at
 * most the client's HTTP/2 window plus PX_STREAM_SLACK. */
size_t px_stream_req_room(const struct px_stream *st);
size_t px_stream_resp_room(const struct px_stream *st);
#define PX_STREAM_SLACK (4 * 1024)

/* 1 when a new stream on st's connection must be refused because the
 * memory budget is at the refuse level and the connection holds more than
 * its share (counted); the caller refuses it. */
int px_stream_refuse_for_memory(struct px_stream *st);

/* Bytes a connection may queue for a peer that does not read: `usual`, or
 * PX_MEM_FLOOR while the memory budget is under pressure. */
size_t px_conn_out_high(size_t usual);

/* Memory over the budget: resets this worker's heaviest streams until the
 * total is under it again (or none is left). Worker thread. */
void px_stream_mem_reset(struct px_worker *w);

/* Upstream activity (either direction): the upstream timeout counts from here. */
void px_stream_up_activity(struct px_stream *st);

/* Arms st's whole-request deadline (routes[].timeout, listeners[].timeout,
 * a gRPC client's grpc-timeout) at monotonic time at_us. Call before the
 * upstream starts. Past it, unless the upstream side has finished by then,
 * the upstream side is cancelled and the client gets 504 (gRPC:
 * grpc-status 4 DEADLINE_EXCEEDED) with reason "request_deadline" when no
 * response head was produced yet, else a reset stream (h2) or a closed
 * connection (h1). An at_us already past fires on the loop's next turn
 * (the gate answers such a request itself, before any upstream). 0, or
 * -1 when no timer could be allocated (nothing was done; the caller
 * refuses the request). Worker thread. */
int px_stream_set_deadline(struct px_stream *st, int64_t at_us);

/* Bytes moved per read/write call on a connection (libevent's default is
 * 16 KiB, one syscall per TLS record). */
#define PX_IO_CHUNK (128 * 1024)
#define PX_HEAP_KEEP (4 * 1024 * 1024) /* freed heap glibc keeps per arena (daemon.c: M_TRIM_THRESHOLD) */

/* ---- may this object be freed now? -------------------------------------
 * A connection object (up_h1.c, h2.c) can be ended from inside its own
 * callbacks: a parse error, a stream that cancels, a write that fails.
 * One rule for both: each of the object's event callbacks runs between
 * px_hold_enter() and px_hold_leave(); whoever ends the object calls
 * px_hold_end(), which says whether to free it now (none of its callbacks
 * on the stack) or leaves that to the outermost px_hold_leave(). Code that
 * ends the object still stops touching it (it is over), but nothing on the
 * stack can be left with a freed pointer. (A stream is a different case:
 * it has two owners, the downstream and the upstream half, and is freed
 * when the second lets go: px_stream_down_done(), px_stream_up_done().) */
/* The function that frees such an object is kept out of line (PX_NOINLINE):
 * inlined, GCC's -Wuse-after-free sees free() followed by the hold's own
 * read on paths the depth count rules out, and fails the Release build. */
#if defined(__GNUC__)
#define PX_NOINLINE __attribute__((noinline))
#else
#define PX_NOINLINE
#endif

struct px_hold {
    unsigned depth; /* the object's callbacks on the stack */
    unsigned ended;
};
static inline void px_hold_enter(struct px_hold *h)
{
    h->depth++;
}
/* 1: the object was ended and this was the outermost callback: free it. */
static inline int px_hold_leave(struct px_hold *h)
{
    return --h->depth == 0 && h->ended;
}
/* 1: free it now; 0: the outermost px_hold_leave() will say so. */
static inline int px_hold_end(struct px_hold *h)
{
    h->ended = 1;
    return h->depth == 0;
}

/* Bytes of a bufferevent's output we fill before waiting for the write
 * callback: body bytes move from a stream buffer to a socket only while
 * the output holds less than this, so a peer that does not read cannot
 * make us queue more than OUT_HIGH plus one header block. */
#define PX_H1_OUT_HIGH (64 * 1024)
/* The write callback fires when the output drains to this. */
#define PX_H1_OUT_LOW (16 * 1024)

/* Limits for this stream's worker, from the snapshot. */
#define PX_LIMITS(st) (&(st)->snap->cfg->limits)

#endif
