/*
 * tunnel.c - opaque TCP: a tcp_inbound connection (mTLS terminated by
 * worker.c) or a tcp_outbound one (plaintext from the local app) becomes
 * one decision and then a byte relay to the listener's upstream.
 *
 * A TCP connection is one decision (issue 18): the policy sees only the
 * caller's identity, once, at connect (gate's px_enforce_tcp); there is
 * no request to judge after that. tcp_outbound connections come from our
 * own app and are judged by the receiving sidecar, as HTTP outbound
 * requests are.
 *
 * The relay owns both bufferevents' flow: bytes read on one side are
 * moved (not copied: evbuffer_add_buffer) to the other side's output at
 * once; when that output holds limits.stream_buffer bytes, reading stops
 * on the first side until the output drains to half of it (write
 * watermark), so a peer that does not read holds one stream_buffer plus
 * one read (PX_IO_CHUNK, and a TLS record) per direction, never more. The
 * client is not read at all until the upstream is up. (No read high
 * watermark: on a TLS bufferevent one can stop libevent mid-record with
 * the rest decrypted inside OpenSSL, where no socket event wakes it.) An EOF on one side is passed
 * on once everything before it is written: shutdown(SHUT_WR) on a plain
 * socket, close_notify on a TLS one (TLS 1.3 lets the other direction go
 * on). The tunnel ends when both directions have ended, on an error of
 * either side, or after limits.tunnel_idle_timeout without a byte.
 *
 * Records: one access-log line per tunnel when it ends (proto "tcp",
 * bytes both ways, duration), one audit record per tcp_inbound decision
 * (protocol "tcp"), metrics picket_tcp_connections_total{listener,
 * decision} and picket_tcp_bytes_total{listener,direction}.
 */
#include "tunnel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

#include "gate.h"
#include "log.h"
#include "metrics.h"
#include "reqid.h"
#include "resolver.h"
#include "tls.h"
#include "upstream.h"

enum { DOWN = 0, UP = 1 };

struct px_tunnel {
    struct px_hold hold;      /* px.h: ended inside its own callbacks, freed by the outermost */
    struct px_conn *c;        /* the downstream connection (c->bev) */
    struct bufferevent *up;   /* the upstream, once its connect started */
    struct px_resolve_req *resolving;
    struct event *idle;       /* limits.tunnel_idle_timeout */
    struct px_mem_tracker trk_up_in, trk_up_out;
    int64_t start_us; /* monotonic */
    int64_t last_us;  /* monotonic, coarse (clock.h) */
    uint64_t bytes_in, bytes_out; /* client -> upstream, upstream -> client */
    int connected;            /* the upstream is up (TLS: and is who it must be) */
    int eof[2];               /* that side sent its last byte */
    int shut[2];              /* we ended our writing to that side */
    int outbound;             /* tcp_outbound */
    char request_id[64];      /* joins the access line, the audit record and the log */
    struct px_tcp_decision dec;
    enum px_reason reason;    /* why it ended early (PX_R_NONE: both sides closed) */
};

static const struct px_listener_cfg *tunnel_cfg(const struct px_tunnel *t)
{
    return &t->c->snap->cfg->listeners[t->c->lst->index];
}

static size_t tunnel_high(const struct px_tunnel *t)
{
    return (size_t)t->c->snap->cfg->limits.stream_buffer;
}

static struct bufferevent *side_bev(struct px_tunnel *t, int side)
{
    return side == DOWN ? t->c->bev : t->up;
}

static void count_decision(const char *listener, const char *decision)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "listener=\"%s\",decision=\"%s\"", listener, decision);
    px_counter_add(px_counter_get("picket_tcp_connections_total",
                                  "Opaque TCP connections by listener and decision", labels),
                   1);
}

static void count_bytes(const char *listener, const char *direction, uint64_t n)
{
    char labels[160];
    if (n == 0)
        return;
    snprintf(labels, sizeof(labels), "listener=\"%s\",direction=\"%s\"", listener, direction);
    px_counter_add(px_counter_get("picket_tcp_bytes_total",
                                  "Bytes relayed by opaque TCP listeners (in: client to upstream)",
                                  labels),
                   n);
}

static void tunnel_audit(struct px_tunnel *t)
{
    struct px_audit_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.ts_ms = px_now_ms();
    rec.node = t->c->snap->cfg->node_id;
    rec.decision = t->dec.decision;
    rec.mode = t->dec.mode;
    rec.rule = t->dec.rule;
    rec.decided_by = "local";
    rec.bundle_revision = t->dec.bundle_revision;
    rec.bundle_age_ms = t->dec.bundle_age_ms;
    rec.cache_age_ms = -1;
    rec.peer = t->c->peer_id[0] ? t->c->peer_id : NULL;
    rec.request_id = t->request_id;
    rec.protocol = "tcp";
    rec.reason = t->dec.reason != PX_R_NONE ? px_reason_name(t->dec.reason) : NULL;
    (void)px_log_audit(&rec); /* a failure is counted by log.c */
}

static void tunnel_log(struct px_tunnel *t)
{
    struct px_access_rec rec;
    const struct px_listener_cfg *lc = tunnel_cfg(t);
    memset(&rec, 0, sizeof(rec));
    rec.ts_ms = px_now_ms();
    rec.listener = t->c->lst->name;
    rec.request_id = t->request_id;
    rec.peer = t->c->peer_id[0] ? t->c->peer_id : NULL;
    rec.proto = "tcp";
    rec.upstream = lc->upstream.url;
    rec.bytes_in = t->bytes_in;
    rec.bytes_out = t->bytes_out;
    rec.duration_us = px_mono_us() - t->start_us;
    rec.decision = t->dec.decision;
    rec.rule = t->dec.rule[0] ? t->dec.rule : NULL;
    rec.reason = t->reason != PX_R_NONE ? px_reason_name(t->reason) : NULL;
    px_log_access(&rec);
    count_bytes(t->c->lst->name, "in", t->bytes_in);
    count_bytes(t->c->lst->name, "out", t->bytes_out);
}

static void tunnel_free(struct px_tunnel *t)
{
    struct px_conn *c = t->c;
    if (t->resolving != NULL)
        px_resolve_cancel(t->resolving);
    if (t->idle != NULL)
        event_free(t->idle);
    px_mem_untrack(&t->trk_up_in);
    px_mem_untrack(&t->trk_up_out);
    if (t->up != NULL)
        bufferevent_free(t->up); /* closes the socket (and frees the SSL) */
    c->ops = NULL;
    c->proto_ctx = NULL;
    free(t);
    px_conn_free(c);
}

/* Ends the tunnel: records written, both sides stopped; both connections
 * are closed and t freed now, or by the outermost callback of t still on
 * the stack (px_hold). Whoever calls it stops touching t's state. */
static void tunnel_end(struct px_tunnel *t, enum px_reason reason)
{
    if (t->hold.ended)
        return;
    if (t->reason == PX_R_NONE)
        t->reason = reason;
    tunnel_log(t);
    bufferevent_disable(t->c->bev, EV_READ | EV_WRITE);
    if (t->up != NULL)
        bufferevent_disable(t->up, EV_READ | EV_WRITE);
    if (t->idle != NULL)
        evtimer_del(t->idle);
    if (px_hold_end(&t->hold))
        tunnel_free(t);
}

/* Every callback of t runs between these two. */
static int enter(struct px_tunnel *t)
{
    px_hold_enter(&t->hold);
    return !t->hold.ended;
}

static void leave(struct px_tunnel *t)
{
    if (px_hold_leave(&t->hold))
        tunnel_free(t);
}

#define ENDED(t) ((t)->hold.ended)

/* ---- the relay ---------------------------------------------------------- */

/* Ends our writing to `side`: what was queued for it is written by now. */
static void shut_side(struct px_tunnel *t, int side)
{
    struct bufferevent *bev = side_bev(t, side);
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (t->shut[side] || ENDED(t))
        return;
    t->shut[side] = 1;
    if (ssl != NULL) {
        /* close_notify: the peer reads EOF, and may go on writing (TLS 1.3
         * half-close; OpenSSL keeps reading after sending it). Tiny, so a
         * socket that just took all of the output takes it too; if not,
         * the peer sees the TCP close when the tunnel ends. */
        (void)SSL_shutdown(ssl);
    } else {
        (void)shutdown(bufferevent_getfd(bev), SHUT_WR);
    }
    bufferevent_disable(bev, EV_WRITE);
}

static void maybe_finish(struct px_tunnel *t)
{
    if (!ENDED(t) && t->eof[DOWN] && t->eof[UP] && t->shut[DOWN] && t->shut[UP])
        tunnel_end(t, PX_R_NONE);
}

/* Moves what `from` has read to the other side's output, and applies
 * back-pressure: `from` stops reading while that output holds a full
 * stream_buffer; the other side's write callback resumes it. */
static void relay(struct px_tunnel *t, int from)
{
    if (ENDED(t))
        return;
    struct bufferevent *src = side_bev(t, from), *dst = side_bev(t, !from);
    struct evbuffer *in = bufferevent_get_input(src), *out = bufferevent_get_output(dst);
    size_t n = evbuffer_get_length(in), high = tunnel_high(t);

    if (n > 0) {
        if (evbuffer_add_buffer(out, in) != 0) {
            tunnel_end(t, PX_R_OUT_OF_MEMORY);
            return;
        }
        if (from == DOWN)
            t->bytes_in += n;
        else
            t->bytes_out += n;
        t->last_us = px_mono_coarse_us();
    }
    if (evbuffer_get_length(out) >= high) {
        bufferevent_disable(src, EV_READ);
        bufferevent_setwatermark(dst, EV_WRITE, high / 2, 0);
    }
}

static void side_read(struct px_tunnel *t, int side)
{
    if (t->connected)
        relay(t, side);
}

/* The other side's output drained (to its write low watermark). */
static void side_written(struct px_tunnel *t, int side)
{
    struct bufferevent *bev = side_bev(t, side);
    int other = !side;
    if (ENDED(t))
        return;
    if (evbuffer_get_length(bufferevent_get_output(bev)) < tunnel_high(t) && !t->eof[other])
        bufferevent_enable(side_bev(t, other), EV_READ); /* may read (and end t) at once */
    if (ENDED(t))
        return;
    if (t->eof[other] && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        shut_side(t, side);
        maybe_finish(t);
    }
}

/* `side` sent its last byte: pass the EOF on once its bytes are written. */
static void side_eof(struct px_tunnel *t, int side)
{
    struct bufferevent *dst;
    int other = !side;
    t->eof[side] = 1;
    bufferevent_disable(side_bev(t, side), EV_READ);
    if (!t->shut[side])
        /* libevent's TLS bufferevent stops writing when it reads the
         * peer's close_notify (conn_closed() in bufferevent_openssl.c) and
         * starts again only when output is added: what it already holds
         * for that peer would wait for ever. Our direction to it is still
         * open: write on. */
        bufferevent_enable(side_bev(t, side), EV_WRITE);
    if (!t->connected) {
        tunnel_end(t, PX_R_NONE); /* not read before it is up: cannot happen */
        return;
    }
    relay(t, side); /* whatever arrived with the EOF */
    if (ENDED(t))
        return;
    dst = side_bev(t, other);
    if (evbuffer_get_length(bufferevent_get_output(dst)) == 0) {
        shut_side(t, other);
        maybe_finish(t);
    } else {
        bufferevent_setwatermark(dst, EV_WRITE, 0, 0); /* write callback once empty */
        bufferevent_enable(dst, EV_WRITE);
    }
}

static void down_read_cb(struct bufferevent *bev, void *arg)
{
    struct px_tunnel *t = arg;
    (void)bev;
    if (enter(t))
        side_read(t, DOWN);
    leave(t);
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    struct px_tunnel *t = arg;
    (void)bev;
    if (enter(t))
        side_read(t, UP);
    leave(t);
}

static void down_write_cb(struct bufferevent *bev, void *arg)
{
    struct px_tunnel *t = arg;
    (void)bev;
    if (enter(t))
        side_written(t, DOWN);
    leave(t);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
    struct px_tunnel *t = arg;
    (void)bev;
    if (enter(t))
        side_written(t, UP);
    leave(t);
}

static void down_event(struct px_tunnel *t, short what)
{

    if (what & BEV_EVENT_EOF) {
        side_eof(t, DOWN);
    } else if (what & BEV_EVENT_ERROR) {
        while (bufferevent_get_openssl_error(t->c->bev) != 0)
            ;
        tunnel_end(t, PX_R_TUNNEL_RESET);
    }
}

static void down_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct px_tunnel *t = arg;
    (void)bev;
    if (enter(t))
        down_event(t, what);
    leave(t);
}

static void up_event(struct px_tunnel *t, struct bufferevent *bev, short what)
{
    const struct px_listener_cfg *lc = tunnel_cfg(t);

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        t->connected = 1;
        t->last_us = px_mono_coarse_us();
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        bufferevent_enable(bev, EV_READ | EV_WRITE);
        bufferevent_enable(t->c->bev, EV_READ); /* held until now */
        return;
    }
    if (what & BEV_EVENT_EOF) {
        if (!t->connected) {
            tunnel_end(t, PX_R_CONNECT_FAILED);
            return;
        }
        side_eof(t, UP);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        enum px_reason r = px_up_bev_fail_reason(bev);
        int err = EVUTIL_SOCKET_ERROR();
        if (r == PX_R_NONE)
            r = !t->connected ? (err == ECONNREFUSED ? PX_R_CONNECT_REFUSED : PX_R_CONNECT_FAILED)
                              : PX_R_TUNNEL_RESET;
        px_log(PX_LOG_WARN, "upstream_failed", "request_id", t->request_id, "listener",
               t->c->lst->name, "upstream", lc->upstream.url, "reason", px_reason_name(r), NULL);
        tunnel_end(t, r);
    }
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct px_tunnel *t = arg;
    if (enter(t))
        up_event(t, bev, what);
    leave(t);
}

/* ---- idle timeout ----------------------------------------------------------- */

static void arm_idle(struct px_tunnel *t, int64_t us)
{
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    evtimer_add(t->idle, &tv);
}

/* Progress only stamps last_us; the timer re-arms itself for what is
 * left, so a busy tunnel costs no timer operation per read. */
static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_tunnel *t = arg;
    const struct px_config *cfg = t->c->snap->cfg;
    int64_t limit = cfg->limits.tunnel_idle_timeout_ms * 1000;
    int64_t idle = px_mono_coarse_us() - t->last_us;
    (void)fd;
    (void)what;
    if (!enter(t)) {
        leave(t);
        return;
    }
    if (!t->connected) {
        /* the upstream's connect and (tcp_outbound) TLS handshake get
         * limits.handshake_timeout, not the hour a quiet tunnel gets */
        int64_t hs = cfg->limits.handshake_timeout_ms * 1000;
        if (idle < hs) {
            arm_idle(t, hs - idle);
        } else {
            px_log(PX_LOG_WARN, "upstream_failed", "request_id", t->request_id, "listener",
                   t->c->lst->name, "upstream", tunnel_cfg(t)->upstream.url, "reason", "timeout",
                   NULL);
            tunnel_end(t, PX_R_TIMEOUT);
        }
    } else if (idle < limit) {
        arm_idle(t, limit - idle);
    } else {
        px_log(PX_LOG_INFO, "tunnel_idle", "request_id", t->request_id, "listener",
               t->c->lst->name, "peer", t->c->peer_addr, NULL);
        tunnel_end(t, PX_R_TUNNEL_IDLE);
    }
    leave(t);
}

/* ---- the upstream ---------------------------------------------------------- */

static void connect_to(struct px_tunnel *t, const struct sockaddr *sa, socklen_t len)
{
    struct px_worker *w = t->c->w;
    const struct px_listener_cfg *lc = tunnel_cfg(t);
    struct bufferevent *bev;

    if (lc->upstream.proto == PX_UP_MTLS) {
        SSL *ssl = w->snap->client_ctx != NULL ? SSL_new(w->snap->client_ctx) : NULL;
        struct in6_addr a6;
        if (ssl == NULL) {
            tunnel_end(t, PX_R_OUT_OF_MEMORY);
            return;
        }
        /* the server must present exactly server_id (snapshot.c verifies) */
        SSL_set_ex_data(ssl, px_ssl_expect_idx, lc->server_id);
        /* its TCP FIN without a close_notify (redis-server --tls-port) is its
         * EOF, as for a tcp_inbound client (px_tunnel_start) */
        SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
        px_ssl_set_reason(ssl, PX_R_NONE);
        if (inet_pton(AF_INET, lc->upstream.host, &a6) != 1 &&
            inet_pton(AF_INET6, lc->upstream.host, &a6) != 1)
            SSL_set_tlsext_host_name(ssl, lc->upstream.host);
        bev = bufferevent_openssl_socket_new(w->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL)
            SSL_free(ssl);
        else
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        tunnel_end(t, PX_R_OUT_OF_MEMORY);
        return;
    }
    t->up = bev;
    if (px_mem_track(&t->trk_up_in, bufferevent_get_input(bev), PX_MEM_SOCKETS, &t->c->mem) !=
            0 ||
        px_mem_track(&t->trk_up_out, bufferevent_get_output(bev), PX_MEM_SOCKETS, &t->c->mem) !=
            0) {
        tunnel_end(t, PX_R_OUT_OF_MEMORY);
        return;
    }
    bufferevent_set_max_single_read(bev, PX_IO_CHUNK);
    bufferevent_set_max_single_write(bev, PX_IO_CHUNK);
    bufferevent_setcb(bev, up_read_cb, up_write_cb, up_event_cb, t);
    if (bufferevent_socket_connect(bev, sa, (int)len) != 0)
        up_event(t, bev, BEV_EVENT_ERROR); /* ends the tunnel */
}

static void resolved(struct px_tunnel *t, int ok, const struct sockaddr *sa, socklen_t len,
                     const char *why);

static void resolved_cb(void *arg, int ok, const struct sockaddr *sa, socklen_t len,
                        int64_t ttl_ms, const char *why)
{
    struct px_tunnel *t = arg;
    (void)ttl_ms;
    t->resolving = NULL;
    if (!enter(t)) {
        leave(t);
        return;
    }
    resolved(t, ok, sa, len, why);
    leave(t);
}

static void resolved(struct px_tunnel *t, int ok, const struct sockaddr *sa, socklen_t len,
                     const char *why)
{
    if (!ok) {
        px_log(PX_LOG_WARN, "upstream_failed", "request_id", t->request_id, "listener",
               t->c->lst->name, "upstream", tunnel_cfg(t)->upstream.url, "reason",
               "upstream_unresolvable", "detail", why ? why : "", NULL);
        tunnel_end(t, PX_R_UPSTREAM_UNRESOLVABLE);
        return;
    }
    connect_to(t, sa, len);
}

static void start_upstream(struct px_tunnel *t)
{
    struct px_worker *w = t->c->w;
    const struct px_listener_cfg *lc = tunnel_cfg(t);
    struct sockaddr_storage ss;
    int len = (int)sizeof(ss);
    char lit[300];

    /* an address literal connects at once; a name goes to the resolver */
    snprintf(lit, sizeof(lit), strchr(lc->upstream.host, ':') ? "[%s]:%s" : "%s:%s",
             lc->upstream.host, lc->upstream.port);
    if (evutil_parse_sockaddr_port(lit, (struct sockaddr *)&ss, &len) == 0) {
        connect_to(t, (struct sockaddr *)&ss, (socklen_t)len);
        return;
    }
    if (w->resolver == NULL)
        w->resolver = px_resolver_new(w->base, w->snap->cfg);
    t->resolving = px_resolver_lookup(w->resolver, lc->upstream.host, lc->upstream.port,
                                      resolved_cb, t);
    if (t->resolving == NULL)
        tunnel_end(t, PX_R_UPSTREAM_UNRESOLVABLE);
}

/* ---- the connection's ops ------------------------------------------------- */

/* A tunnel has no request boundary to stop at: on drain (and when the
 * peer's identity ends) it carries on until the worker's drain deadline
 * (or px_conn_end_identity's) closes it. */
static void tunnel_drain(struct px_conn *c)
{
    (void)c;
}

static void tunnel_close(struct px_conn *c)
{
    struct px_tunnel *t = c->proto_ctx;
    /* drain_timeout after SIGTERM, or after the peer's identity ended */
    tunnel_end(t, c->identity_ended != PX_R_NONE ? c->identity_ended : PX_R_SHUTDOWN);
}

static const struct px_conn_ops tunnel_ops = {
    .drain = tunnel_drain,
    .end = tunnel_drain,
    .close = tunnel_close,
};

int px_tunnel_start(struct px_conn *c)
{
    struct px_tunnel *t = calloc(1, sizeof(*t));
    const struct px_listener_cfg *lc = &c->snap->cfg->listeners[c->lst->index];

    if (t == NULL)
        return -1;
    t->c = c;
    t->outbound = lc->kind == PX_LISTENER_TCP_OUTBOUND;
    t->start_us = px_mono_us();
    t->last_us = px_mono_coarse_us();
    px_request_id_new(t->request_id);
    t->idle = evtimer_new(c->w->base, idle_cb, t);
    if (t->idle == NULL || px_conn_track(c) != 0) {
        if (t->idle != NULL)
            event_free(t->idle);
        free(t);
        return -1;
    }
    c->proto = PX_PROTO_TCP;
    c->proto_ctx = t;
    c->ops = &tunnel_ops;
    if (c->timer != NULL)
        evtimer_del(c->timer); /* the handshake timer: this connection has started */
    arm_idle(t, c->snap->cfg->limits.handshake_timeout_ms * 1000); /* until connected (idle_cb) */
    bufferevent_setcb(c->bev, down_read_cb, down_write_cb, down_event_cb, t);
    /* A TCP FIN without a close_notify (hiredis, redis-cli --tls, and any
     * client that just closes) is the client's EOF: its half-close passes
     * on and the upstream's answer still comes back. worker.c sets libevent's
     * allow_dirty_shutdown for this, but OpenSSL 3 reports such an EOF as
     * SSL_ERROR_SSL (unexpected eof), which libevent 2.1 takes for an error
     * (tunnel_reset, queued bytes dropped) unless OpenSSL is told to treat
     * it as a shutdown. The upstream sees a FIN either way. */
    if (c->ssl != NULL)
        SSL_set_options(c->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);

    if (t->outbound) {
        /* our own app: the receiving sidecar decides (as for HTTP outbound) */
        t->dec.decision = "forward";
        t->dec.mode = "enforce";
        snprintf(t->dec.rule, sizeof(t->dec.rule), "outbound");
    } else {
        int ok = px_enforce_tcp(c->snap->cfg, c->w->policy, c->peer_id, &t->dec);
        tunnel_audit(t);
        if (!ok) {
            count_decision(c->lst->name, "deny");
            px_log(PX_LOG_INFO, "tcp_denied", "request_id", t->request_id, "listener",
                   c->lst->name, "peer", c->peer_addr, "peer_id", c->peer_id, "rule", t->dec.rule,
                   "reason", px_reason_name(t->dec.reason), NULL);
            tunnel_end(t, t->dec.reason);
            return 0;
        }
    }
    count_decision(c->lst->name, t->dec.decision);
    /* the client's bytes wait in the kernel until the upstream is up */
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_enable(c->bev, EV_WRITE);
    start_upstream(t);
    return 0;
}
