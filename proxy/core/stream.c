/*
 * stream.c - one request/response exchange between a downstream side
 * (h2.c, h1.c) and an upstream side (up_h2.c, up_h1.c).
 *
 * Owns what is common to every protocol pairing: the request checks that
 * make picket safe to put in front of an app (path normalization, header
 * filtering, identity headers written by picket and never taken from the
 * client), the policy decision, route selection, local answers, the
 * upstream timeout, the request deadline, and the access log line and metrics when the stream
 * ends. A stream is freed when both sides have said they are done with it.
 */
#include "px.h"
#include "tmalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <time.h>

#include "fields.h"
#include "log.h"
#include "reqid.h"
#include "xfcc.h"
#include "metrics.h"
#include "policy.h"

/* A body buffer and the tracker that counts its bytes (mem.h). Each
 * stream needs two; making them (evbuffer_new, a callback registered,
 * then both freed) was ~830 instructions of a small request. An emptied
 * pair waits on its thread's list for the next stream instead, up to
 * BODY_KEEP of them; a thread that ends frees its list (the key's
 * destructor). An evbuffer on the list holds nothing and is charged to
 * nobody. */
struct px_body {
    struct evbuffer *b;
    struct px_mem_tracker t;
    struct px_body *next;
};
#define BODY_KEEP 1024

static _Thread_local struct px_body *tl_bodies;
static _Thread_local unsigned tl_nbodies;
static pthread_key_t body_key;
static pthread_once_t body_once = PTHREAD_ONCE_INIT;
static int body_key_ok;

static void body_free(struct px_body *bb)
{
    px_mem_untrack(&bb->t);
    evbuffer_free(bb->b);
    px_tfree(bb);
}

static void bodies_release(void *arg)
{
    (void)arg;
    while (tl_bodies != NULL) {
        struct px_body *bb = tl_bodies;
        tl_bodies = bb->next;
        body_free(bb);
    }
    tl_nbodies = 0;
}

static void body_key_make(void)
{
    body_key_ok = pthread_key_create(&body_key, bodies_release) == 0;
}

static struct px_body *body_get(enum px_mem_pool p, struct px_mem_acct *acct)
{
    struct px_body *bb = tl_bodies;
    if (bb != NULL) {
        tl_bodies = bb->next;
        tl_nbodies--;
        bb->t.pool = p; /* empty: nothing to move from its last owner */
        bb->t.acct = acct;
        return bb;
    }
    if ((bb = px_tmalloc(sizeof(*bb))) == NULL)
        return NULL;
    if ((bb->b = evbuffer_new()) == NULL) {
        px_tfree(bb);
        return NULL;
    }
    if (px_mem_track(&bb->t, bb->b, p, acct) != 0) {
        body_free(bb); /* untracking what is not tracked does nothing */
        return NULL;
    }
    return bb;
}

/* Empties bb (its tracker uncounts the bytes from the stream that held
 * it) and keeps it for the next stream, or frees it. */
static void body_put(struct px_body *bb)
{
    size_t n;
    if (bb == NULL)
        return;
    if ((n = evbuffer_get_length(bb->b)) > 0)
        evbuffer_drain(bb->b, n);
    pthread_once(&body_once, body_key_make);
    if (tl_nbodies >= BODY_KEEP || !body_key_ok || evbuffer_get_length(bb->b) > 0) {
        body_free(bb);
        return;
    }
    if (tl_bodies == NULL)
        pthread_setspecific(body_key, &tl_bodies); /* non-NULL: the destructor runs */
    bb->t.acct = NULL;
    bb->next = tl_bodies;
    tl_bodies = bb;
    tl_nbodies++;
}

static void up_timeout_cb(evutil_socket_t fd, short what, void *arg);
static void up_timer_stop(struct px_stream *st);

static struct px_stream *stream_alloc(struct px_worker *w, struct px_conn *c,
                                      const struct px_down_ops *ops, void *down_ctx)
{
    struct px_stream *st = px_tzalloc(sizeof(*st));
    if (st == NULL)
        return NULL;
    st->conn = c;
    st->w = w;
    st->mem.parent = c != NULL ? &c->mem : NULL;
    if ((st->bodies[0] = body_get(PX_MEM_REQ_BODY, &st->mem)) == NULL ||
        (st->bodies[1] = body_get(PX_MEM_RESP_BODY, &st->mem)) == NULL) {
        body_put(st->bodies[0]);
        px_tfree(st);
        return NULL;
    }
    st->req_body = st->bodies[0]->b;
    st->resp_body = st->bodies[1]->b;
    st->wnext = w->streams;
    if (w->streams != NULL)
        w->streams->wprev = st;
    w->streams = st;
    evtimer_assign(&st->up_timer, w->base, up_timeout_cb, st);
    st->snap = px_snapshot_ref(w->snap); /* the newest config, also on old connections */
    st->pol = w->policy ? px_policy_state_ref(w->policy) : NULL;
    st->start_us = px_mono_us();
    px_request_init(&st->rq);
    st->resp_content_length = -1;
    st->down = ops;
    st->down_ctx = down_ctx;
    return st;
}

struct px_stream *px_stream_new(struct px_conn *c, const struct px_down_ops *ops, void *down_ctx)
{
    return stream_alloc(c->w, c, ops, down_ctx);
}

struct px_stream *px_stream_new_internal(struct px_worker *w, const struct px_down_ops *ops,
                                         void *down_ctx)
{
    struct px_stream *st = stream_alloc(w, NULL, ops, down_ctx);
    if (st != NULL)
        st->logged = 1; /* picket's own requests are not access-logged */
    return st;
}

/* The audit record of a decided request (enforce.c decided it). */
static void stream_audit(struct px_stream *st)
{
    struct px_audit_rec rec;
    int status = st->status;
    if (!st->decided)
        return;
    st->decided = 0; /* one record per decision */
    if (status <= 0)
        status = st->down_done ? 499 : 0;
    memset(&rec, 0, sizeof(rec));
    rec.ts_ms = px_now_ms();
    rec.node = st->snap->cfg->node_id;
    rec.decision = st->decision;
    rec.mode = st->mode;
    rec.rule = st->rule;
    rec.decided_by = st->decided_by;
    rec.dispatch_node = st->dispatch_node;
    rec.bundle_revision = st->bundle_revision;
    rec.bundle_age_ms = st->bundle_age_ms;
    rec.peer = st->conn->peer_id[0] ? st->conn->peer_id : NULL;
    /* The canonical request: exactly what the policy saw and the upstream got. */
    rec.method = st->rq.built ? st->rq.method : st->rq.raw_method;
    rec.authority = st->rq.built ? st->rq.authority : st->rq.raw_authority;
    rec.host = st->rq.built ? st->rq.host : NULL;
    rec.host_len = st->rq.host_len;
    rec.path = st->rq.built ? st->rq.match_path : st->rq.raw_target;
    rec.path_len = st->rq.built ? st->rq.match_path_len : st->rq.raw_target_len;
    if (st->rq.built && st->rq.target_len > st->rq.path_len) {
        rec.query = st->rq.target + st->rq.path_len + 1; /* after the '?' */
        rec.query_len = st->rq.target_len - st->rq.path_len - 1;
    }
    rec.status = status;
    rec.request_id = st->rq.request_id;
    rec.reason = st->reason != PX_R_NONE ? px_reason_name(st->reason) : NULL;
    rec.cache_age_ms = st->cache_age_ms;
    rec.protocol = st->rq.upgrade ? "websocket" : NULL;
    (void)px_log_audit(&rec); /* a failure is counted by log.c (picket_audit_write_failures_total) */
}

static void stream_log(struct px_stream *st)
{
    struct px_access_rec rec;
    struct px_listener *l = st->conn ? st->conn->lst : NULL;
    int64_t dur = px_mono_us() - st->start_us;
    int status = st->status;

    if (st->logged)
        return;
    st->logged = 1;
    if (status <= 0 || status >= 600)
        status = st->down_done ? 499 : 0; /* 499: the client went away first (nginx's code) */
    if (l != NULL) {
        if (l->by_status[status] == NULL) {
            char labels[160];
            snprintf(labels, sizeof(labels), "listener=\"%s\",status=\"%d\"", l->name, status);
            l->by_status[status] =
                px_counter_get("picket_requests_total", "Requests by listener and status", labels);
        }
        px_counter_add(l->by_status[status], 1);
        if (l->duration)
            px_histogram_observe(l->duration, (double)dur / 1e6);
    }
    memset(&rec, 0, sizeof(rec));
    rec.ts_ms = px_now_ms();
    rec.listener = l ? l->name : NULL;
    rec.request_id = st->rq.request_id[0] ? st->rq.request_id : NULL;
    rec.peer = st->conn && st->conn->peer_id[0] ? st->conn->peer_id : NULL;
    /* The canonical request once built; what arrived when it was refused. */
    rec.method = st->rq.built ? st->rq.method : st->rq.raw_method;
    rec.authority = st->rq.built ? st->rq.authority : st->rq.raw_authority;
    rec.path = st->rq.built ? st->rq.target : st->rq.raw_target;
    rec.proto = st->conn ? (st->conn->proto == PX_PROTO_H2 ? "h2" : "http/1.1") : NULL;
    rec.status = status;
    rec.bytes_in = st->bytes_in;
    rec.bytes_out = st->bytes_out;
    rec.duration_us = dur;
    rec.upstream = st->upstream_name;
    rec.decision = st->decision;
    rec.rule = st->rule[0] ? st->rule : NULL;
    rec.reason = st->reason != PX_R_NONE ? px_reason_name(st->reason) : NULL;
    rec.upgrade = st->rq.upgrade ? "websocket" : NULL;
    px_log_access(&rec);
    stream_audit(st);
}

static void stream_free(struct px_stream *st)
{
    stream_log(st);
    up_timer_stop(st);
    if (st->deadline_timer)
        event_free(st->deadline_timer);
    px_request_clear(&st->rq);
    px_hdrs_clear(&st->resp);
    px_hdrs_clear(&st->resp_trailers);
    body_put(st->bodies[0]);
    body_put(st->bodies[1]);
    if (st->wprev != NULL)
        st->wprev->wnext = st->wnext;
    else
        st->w->streams = st->wnext;
    if (st->wnext != NULL)
        st->wnext->wprev = st->wprev;
    px_policy_state_unref(st->pol);
    px_snapshot_unref(st->snap);
    px_tfree(st);
}

void px_stream_down_done(struct px_stream *st)
{
    st->down_done = 1;
    st->down = NULL;
    stream_log(st); /* the client has its answer: log now, not when the upstream lets go */
    if (!st->up_done && st->up != NULL) {
        /* The client is gone or the exchange ended early: the upstream
         * request has no one to answer to. cancel() calls up_done(). */
        st->up->cancel(st);
        return;
    }
    if (st->up_done || st->up == NULL) {
        st->up_done = 1;
        stream_free(st);
    }
}

void px_stream_up_done(struct px_stream *st)
{
    st->up_done = 1;
    st->up = NULL;
    up_timer_stop(st);
    if (st->deadline_timer)
        evtimer_del(st->deadline_timer); /* the response is complete (or failed): nothing to cut */
    if (st->down_done)
        stream_free(st);
}

/* ---- local answers ---------------------------------------------------- */

/* A local answer with nothing in it but its status (when memory ran out
 * while writing a fuller one: no part of that one goes out). */
static void bare_answer(struct px_stream *st, int status)
{
    px_hdrs_clear(&st->resp);
    px_hdrs_clear(&st->resp_trailers);
    evbuffer_drain(st->resp_body, evbuffer_get_length(st->resp_body));
    st->status = status;
    st->resp_content_length = 0;
    st->resp_eof = 1;
}

/* 0, or -1 when memory ran out (the answer is then bare_answer()'s). */
static int set_status_body(struct px_stream *st, int status, const char *ctype, const char *body)
{
    bare_answer(st, status);
    if ((ctype && px_hdrs_add(&st->resp, "content-type", 12, ctype, strlen(ctype), 0) != 0) ||
        (body && evbuffer_add(st->resp_body, body, strlen(body)) != 0)) {
        bare_answer(st, status);
        return -1;
    }
    st->resp_content_length = body ? (int64_t)strlen(body) : 0;
    return 0;
}

void px_stream_respond(struct px_stream *st, int status, const char *body,
                       enum px_grpc grpc_status, enum px_reason reason)
{
    st->local_response = 1;
    if (st->deadline_timer)
        evtimer_del(st->deadline_timer); /* answered: nothing left to cut */
    if (reason != PX_R_NONE)
        st->reason = reason;
    if (st->rq.request_id[0] == '\0' && st->conn != NULL)
        px_request_id_new(st->rq.request_id); /* refused before it had one: logs still join */
    if (st->rq.is_grpc && grpc_status != PX_GRPC_NONE) {
        /* gRPC clients read errors from grpc-status, not the HTTP status: a
         * trailers-only response (one HEADERS frame with END_STREAM). */
        char code[16];
        size_t n = body ? strlen(body) : 0;
        while (n > 0 && body[n - 1] == '\n')
            n--;
        snprintf(code, sizeof(code), "%d", grpc_status);
        if (set_status_body(st, 200, "application/grpc", NULL) != 0 ||
            px_hdrs_add(&st->resp, "grpc-status", 11, code, strlen(code), 0) != 0 ||
            (body && px_hdrs_add(&st->resp, "grpc-message", 12, body, n, 0) != 0)) {
            /* never a 200 without its grpc-status: the HTTP status alone,
             * which gRPC clients map to an error as well */
            bare_answer(st, status);
        } else {
            st->resp_content_length = -1;
        }
    } else {
        set_status_body(st, status, "text/plain; charset=utf-8", body);
    }
    if (st->rq.request_id[0] &&
        px_hdrs_add(&st->resp, "x-request-id", 12, st->rq.request_id, strlen(st->rq.request_id),
                    0) != 0)
        bare_answer(st, st->status);
    if (st->down)
        st->down->response_ready(st);
}

int px_grpc_for_http(int status)
{
    switch (status) {
    case 400: return PX_GRPC_INTERNAL; /* as gRPC's HTTP mapping says */
    case 401: return PX_GRPC_UNAUTHENTICATED;
    case 403: return PX_GRPC_PERMISSION_DENIED;
    case 404: return PX_GRPC_UNIMPLEMENTED;
    case 429: case 502: case 503: case 504: return PX_GRPC_UNAVAILABLE;
    default: return PX_GRPC_UNKNOWN;
    }
}

void px_stream_upstream_failed(struct px_stream *st, int status, enum px_reason reason)
{
    char labels[96];
    if (st->reason == PX_R_NONE)
        st->reason = reason;
    up_timer_stop(st);
    snprintf(labels, sizeof(labels), "reason=\"%s\"", px_reason_name(reason));
    px_counter_add(px_counter_get("picket_upstream_failures_total",
                                  "Upstream failures by reason (connect, reset, server identity)",
                                  labels),
                   1);
    px_log(PX_LOG_WARN, "upstream_failed", "request_id", st->rq.request_id, "upstream",
           st->upstream_name ? st->upstream_name : "", "reason", px_reason_name(reason), NULL);
    if (st->down_done)
        return;
    if (st->status == 0) {
        const char *body = status == 504   ? "upstream timeout\n"
                           : status == 503 ? "upstream unavailable\n"
                                           : "upstream error\n";
        px_stream_respond(st, status, body, px_grpc_for_http(status), reason);
    } else if (!st->resp_eof && st->down) {
        st->down->abort(st);
    }
}

void px_stream_up_fail(struct px_stream *st, int status, enum px_reason reason)
{
    /* up_done first: the upstream side lets go before the downstream hears
     * of the failure, so nothing the downstream does in reply (even freeing
     * the stream) can reach back into upstream code. */
    int gone = st->down_done;
    px_stream_up_done(st);
    if (!gone)
        px_stream_upstream_failed(st, status, reason);
}

void px_stream_response_headers(struct px_stream *st)
{
    if (st->rq.upgrade && !st->tunnel && st->status >= 200 && st->status < 300 &&
        st->up != NULL && st->conn != NULL && st->conn->proto == PX_PROTO_H2) {
        /* The app answered a WebSocket's opening request as a plain GET
         * (RFC 9110 7.8 lets it ignore the Upgrade). An HTTP/1.1 client
         * reads that as a refused handshake; to an HTTP/2 client a 2xx is
         * an open tunnel (RFC 8441 5), so it must not get one. The upstream
         * lets go first (as up_timeout_cb), then the client hears 502
         * upgrade_unsupported. */
        int gone = st->down_done;
        st->up->cancel(st); /* frees st when the client is gone */
        if (gone)
            return;
        px_hdrs_clear(&st->resp);
        px_hdrs_clear(&st->resp_trailers);
        evbuffer_drain(st->resp_body, evbuffer_get_length(st->resp_body));
        st->status = 0;
        st->resp_eof = 0;
        px_stream_upstream_failed(st, 502, PX_R_UPGRADE_UNSUPPORTED);
        return;
    }
    px_response_fields_filter(&st->resp); /* hop-by-hop, Connection-named, framing */
    px_stream_up_activity(st);
    if (st->down)
        st->down->response_ready(st);
}

void px_stream_tunnel_open(struct px_stream *st)
{
    st->tunnel = 1;
    st->status = 101;
    st->resp_content_length = -1;
    /* the upstream's answer to our key, checked there: each downstream
     * protocol answers its client in its own form */
    for (size_t i = st->resp.n; i-- > 0;)
        if (st->resp.v[i].nlen == 20 && memcmp(st->resp.v[i].name, "sec-websocket-accept", 20) == 0)
            px_hdrs_remove_at(&st->resp, i);
    if (st->deadline_timer)
        evtimer_del(st->deadline_timer); /* a tunnel outlives the request that opened it */
    up_timer_stop(st); /* re-armed with tunnel_idle_timeout */
    /* The decision is audited as the tunnel opens, not when it ends (maybe
     * an hour later); the access line, with the tunnel's bytes and life,
     * is written at its end. */
    stream_audit(st);
    px_stream_response_headers(st);
}

/* ---- upstream timeout -------------------------------------------------- */

/* limits.upstream_timeout is "no progress in either direction": request
 * body bytes moving upstream count as much as response bytes, so a long
 * upload or a client-streaming gRPC call lives as long as it moves.
 * Progress only stamps the time; the timer, when it fires early, re-arms
 * itself for what is left, so a busy stream costs no timer operation per
 * chunk. */
static void arm_up_timer(struct px_stream *st, const struct timeval *tv)
{
    st->up_armed = evtimer_add(&st->up_timer, tv) == 0;
}

static void arm_up_timer_us(struct px_stream *st, int64_t us)
{
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    arm_up_timer(st, &tv);
}

static void up_timer_stop(struct px_stream *st)
{
    if (st->up_armed) {
        evtimer_del(&st->up_timer);
        st->up_armed = 0;
    }
}

/* Every stream of a worker arms its timer for the same limit: as one of
 * libevent's "common timeouts" each add and delete is a list operation,
 * not a heap one. The worker keeps the value for its base and makes it
 * again when the limit changes (a reload); libevent keeps at most 256 per
 * base, and NULL (none left) means a plain timeout. */
static const struct timeval *up_timeout_tv(struct px_stream *st, int64_t ms, struct timeval *plain)
{
    struct px_worker *w = st->w;
    plain->tv_sec = (time_t)(ms / 1000);
    plain->tv_usec = (suseconds_t)(ms % 1000) * 1000;
    if (w->up_common_ms != ms) {
        w->up_common_ms = ms;
        w->up_common = event_base_init_common_timeout(w->base, plain);
    }
    return w->up_common != NULL ? w->up_common : plain;
}

/* A tunnel's idle limit is limits.tunnel_idle_timeout, any other
 * stream's limits.upstream_timeout. */
static int64_t up_limit_ms(const struct px_stream *st)
{
    return st->tunnel ? PX_LIMITS(st)->tunnel_idle_timeout_ms : PX_LIMITS(st)->upstream_timeout_ms;
}

static void up_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_stream *st = arg;
    int64_t limit_us = up_limit_ms(st) * 1000;
    int64_t idle_us = px_mono_coarse_us() - st->up_last_us;
    (void)fd;
    (void)what;
    st->up_armed = 0;
    if (st->up_done || st->up == NULL)
        return;
    if (idle_us < limit_us) {
        arm_up_timer_us(st, limit_us - idle_us);
        return;
    }
    if (st->tunnel) {
        st->reason = PX_R_TUNNEL_IDLE;
        px_log(PX_LOG_INFO, "tunnel_idle", "request_id", st->rq.request_id, "upstream",
               st->upstream_name ? st->upstream_name : "", NULL);
    } else {
        st->reason = PX_R_UPSTREAM_TIMEOUT;
        px_counter_add(px_counter_get("picket_upstream_failures_total",
                                      "Upstream failures by reason (connect, reset, server identity)",
                                      "reason=\"upstream_timeout\""),
                       1);
        px_log(PX_LOG_WARN, "upstream_failed", "request_id", st->rq.request_id, "upstream",
               st->upstream_name ? st->upstream_name : "", "reason", "upstream_timeout", NULL);
    }
    /* Cancel the upstream first: it ends the upstream side (up_done) and,
     * when the client is already gone, frees the stream. Only then answer
     * the client, so no path here reads a freed stream. */
    {
        int gone = st->down_done;
        st->up->cancel(st);
        if (gone)
            return;
    }
    if (st->status == 0)
        px_stream_respond(st, 504, "upstream timeout\n", PX_GRPC_DEADLINE_EXCEEDED,
                          PX_R_UPSTREAM_TIMEOUT);
    else if (st->down && !st->resp_eof)
        st->down->abort(st);
}

void px_stream_up_activity(struct px_stream *st)
{
    int64_t ms = up_limit_ms(st);
    if (ms <= 0 || st->up_done)
        return;
    st->up_last_us = px_mono_coarse_us();
    if (!st->up_armed) {
        struct timeval plain;
        arm_up_timer(st, up_timeout_tv(st, ms, &plain));
    }
}

/* ---- the request deadline ----------------------------------------------- */

/* Unlike upstream_timeout, progress does not move it: it is the caller's
 * budget for the whole exchange, counted from the moment the stream
 * started (the request head arrived), which includes the time the
 * decision took. It ends with the upstream side: once the upstream has
 * produced the whole response, a slow reader is idle_timeout's business. */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_stream *st = arg;
    (void)fd;
    (void)what;
    if (st->down_done || st->up_done || st->tunnel || st->local_response)
        return; /* over, open as a tunnel, or answered by picket (a deny, a refusal) */
    st->reason = PX_R_REQUEST_DEADLINE;
    px_counter_add(px_counter_get("picket_upstream_failures_total",
                                  "Upstream failures by reason (connect, reset, server identity)",
                                  "reason=\"request_deadline\""),
                   1);
    px_log(PX_LOG_WARN, "upstream_failed", "request_id", st->rq.request_id, "upstream",
           st->upstream_name ? st->upstream_name : "", "reason", "request_deadline", NULL);
    /* As up_timeout_cb: the upstream lets go first (the client is still
     * here, so cancel() does not free the stream), then the client hears. */
    if (st->up != NULL)
        st->up->cancel(st);
    else
        px_stream_up_done(st);
    if (st->status == 0)
        px_stream_respond(st, 504, "request deadline exceeded\n", PX_GRPC_DEADLINE_EXCEEDED,
                          PX_R_REQUEST_DEADLINE);
    else if (st->down && !st->resp_eof)
        st->down->abort(st);
}

int px_stream_set_deadline(struct px_stream *st, int64_t at_us)
{
    int64_t left = at_us - px_mono_us();
    struct timeval tv;
    if (st->deadline_timer == NULL) {
        st->deadline_timer = evtimer_new(st->w->base, deadline_cb, st);
        if (st->deadline_timer == NULL)
            return -1;
    }
    st->deadline_us = at_us;
    if (left < 0)
        left = 0;
    tv.tv_sec = (time_t)(left / 1000000);
    tv.tv_usec = (suseconds_t)(left % 1000000);
    return evtimer_add(st->deadline_timer, &tv) == 0 ? 0 : -1;
}

void px_stream_request_sent(struct px_stream *st, size_t n)
{
    px_stream_up_activity(st);
    if (st->down != NULL)
        st->down->request_drained(st, n);
}

/* ---- memory ------------------------------------------------------------ */

size_t px_stream_req_room(const struct px_stream *st)
{
    return px_mem_room((int64_t)evbuffer_get_length(st->req_body),
                       (size_t)PX_LIMITS(st)->stream_buffer);
}

size_t px_stream_resp_room(const struct px_stream *st)
{
    size_t limit = (size_t)PX_LIMITS(st)->stream_buffer;
    if (st->down != NULL && st->down->resp_window != NULL) {
        /* A client that can take nothing (an HTTP/2 window of 0) gets
         * nothing buffered for it but a little: reading ahead of what the
         * client accepts is how a zero-window reader makes a proxy hold
         * every response whole. */
        size_t win = st->down->resp_window((struct px_stream *)st);
        if (win < limit - PX_STREAM_SLACK)
            limit = win + PX_STREAM_SLACK;
    }
    return px_mem_room((int64_t)evbuffer_get_length(st->resp_body), limit);
}

int px_stream_refuse_for_memory(struct px_stream *st)
{
    long conns = atomic_load_explicit(&px_active_conns, memory_order_relaxed);
    int64_t share;
    if (st->conn == NULL || px_mem_level() < PX_MEM_REFUSE)
        return 0;
    /* "Among those holding the most": at least half the average over open
     * connections, and more than a few light streams' worth. A new or
     * light connection is never refused. */
    share = px_mem_used() / (2 * (conns > 0 ? conns : 1));
    if (st->conn->mem.held <= share || st->conn->mem.held <= 4 * PX_MEM_FLOOR)
        return 0;
    px_mem_pressure(PX_MEM_ACT_REFUSE);
    return 1;
}

void px_stream_mem_reset(struct px_worker *w)
{
    int rounds = 0;
    while (px_mem_level() >= PX_MEM_RESET && rounds++ < 1000) {
        struct px_stream *st, *heavy = NULL;
        struct px_conn *c, *hconn = NULL;
        for (st = w->streams; st != NULL; st = st->wnext)
            if (st->conn != NULL && !st->down_done &&
                (heavy == NULL || st->mem.held > heavy->mem.held))
                heavy = st;
        for (c = w->conns; c != NULL; c = c->next)
            if (hconn == NULL || c->mem.held > hconn->mem.held)
                hconn = c;
        if (hconn != NULL && hconn->mem.held > 4 * PX_MEM_FLOOR &&
            (heavy == NULL || hconn->mem.held > 2 * heavy->mem.held)) {
            /* what a connection holds itself (output its peer does not read)
             * goes only with the connection */
            px_mem_pressure(PX_MEM_ACT_RESET);
            px_log(PX_LOG_WARN, "memory_reset", "peer", hconn->peer_addr, "msg",
                   "over limits.memory_budget: closing the connection holding the most", NULL);
            px_conn_close(hconn);
            continue;
        }
        if (heavy == NULL || heavy->mem.held <= PX_MEM_FLOOR)
            return; /* nothing here holds more than a light stream */
        px_mem_pressure(PX_MEM_ACT_RESET);
        px_log(PX_LOG_WARN, "memory_reset", "request_id", heavy->rq.request_id, "msg",
               "over limits.memory_budget: resetting the heaviest stream", NULL);
        heavy->reason = PX_R_MEMORY_PRESSURE;
        /* what it holds goes now: its buffers are dropped with it */
        if (heavy->up != NULL && !heavy->up_done)
            heavy->up->cancel(heavy);
        evbuffer_drain(heavy->resp_body, evbuffer_get_length(heavy->resp_body));
        evbuffer_drain(heavy->req_body, evbuffer_get_length(heavy->req_body));
        if (heavy->status == 0)
            px_stream_respond(heavy, 503, "overloaded\n", PX_GRPC_UNAVAILABLE, PX_R_MEMORY_PRESSURE);
        else if (heavy->down != NULL)
            heavy->down->abort(heavy);
        if (heavy->mem.held > PX_MEM_FLOOR)
            return; /* could not shed it: stop, no loop */
    }
}

/* Bytes a connection may queue for a peer that does not read: its usual
 * bound, or PX_MEM_FLOOR under memory pressure. */
size_t px_conn_out_high(size_t usual)
{
    return px_mem_level() >= PX_MEM_PAUSE && usual > PX_MEM_FLOOR ? PX_MEM_FLOOR : usual;
}

/* ---- the request ------------------------------------------------------ */

/* ---- into the gate ------------------------------------------------------- */

void px_stream_dispatch(struct px_stream *st)
{
    st->conn->lst->gate->request(st);
}

int px_stream_trailers_done(struct px_stream *st)
{
    return st->conn->lst->gate->trailers(st);
}
