/*
 * stream.c - one request/response exchange between a downstream side
 * (h2.c, h1.c) and an upstream side (up_h2.c, up_h1.c).
 *
 * Owns what is common to every protocol pairing: the request checks that
 * make picket safe to put in front of an app (path normalization, header
 * filtering, identity headers written by picket and never taken from the
 * client), the policy decision, route selection, local answers, the
 * upstream timeout, and the access log line and metrics when the stream
 * ends. A stream is freed when both sides have said they are done with it.
 */
#include "px.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <time.h>

#include <openssl/rand.h>

#include "log.h"
#include "xfcc.h"
#include "metrics.h"
#include "policy.h"
#include "enforce.h"

int64_t px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t px_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct px_stream *stream_alloc(struct px_worker *w, struct px_conn *c,
                                      const struct px_down_ops *ops, void *down_ctx)
{
    struct px_stream *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->req_body = evbuffer_new();
    st->resp_body = evbuffer_new();
    if (st->req_body == NULL || st->resp_body == NULL) {
        if (st->req_body)
            evbuffer_free(st->req_body);
        if (st->resp_body)
            evbuffer_free(st->resp_body);
        free(st);
        return NULL;
    }
    st->conn = c;
    st->w = w;
    st->snap = px_snapshot_ref(w->snap); /* the newest config, also on old connections */
    st->pol = w->policy ? px_policy_state_ref(w->policy) : NULL;
    st->start_us = px_mono_us();
    st->req_content_length = -1;
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
    rec.request_id = st->request_id[0] ? st->request_id : NULL;
    rec.peer = st->conn && st->conn->peer_id[0] ? st->conn->peer_id : NULL;
    rec.method = st->method;
    rec.authority = st->authority;
    rec.path = st->path ? st->path : st->orig_path;
    rec.proto = st->conn ? (st->conn->proto == PX_PROTO_H2 ? "h2" : "http/1.1") : NULL;
    rec.status = status;
    rec.bytes_in = st->bytes_in;
    rec.bytes_out = st->bytes_out;
    rec.duration_us = dur;
    rec.upstream = st->upstream_name;
    rec.decision = st->decision;
    rec.rule = st->rule[0] ? st->rule : NULL;
    px_log_access(&rec);
    px_enforce_audit(st);
}

static void stream_free(struct px_stream *st)
{
    stream_log(st);
    if (st->up_timer)
        event_free(st->up_timer);
    free(st->method);
    free(st->scheme);
    free(st->authority);
    free(st->path);
    free(st->orig_path);
    px_hdrs_clear(&st->req);
    px_hdrs_clear(&st->req_trailers);
    px_hdrs_clear(&st->resp);
    px_hdrs_clear(&st->resp_trailers);
    evbuffer_free(st->req_body);
    evbuffer_free(st->resp_body);
    px_policy_state_unref(st->pol);
    px_snapshot_unref(st->snap);
    free(st);
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
    if (st->up_timer)
        evtimer_del(st->up_timer);
    if (st->down_done)
        stream_free(st);
}

/* ---- local answers ---------------------------------------------------- */

static void set_status_body(struct px_stream *st, int status, const char *ctype, const char *body)
{
    px_hdrs_clear(&st->resp);
    px_hdrs_clear(&st->resp_trailers);
    evbuffer_drain(st->resp_body, evbuffer_get_length(st->resp_body));
    st->status = status;
    if (ctype)
        px_hdrs_add(&st->resp, "content-type", 12, ctype, strlen(ctype), 0);
    if (body) {
        evbuffer_add(st->resp_body, body, strlen(body));
        st->resp_content_length = (int64_t)strlen(body);
    } else {
        st->resp_content_length = 0;
    }
    st->resp_eof = 1;
}

void px_stream_respond(struct px_stream *st, int status, const char *body, int grpc_status,
                       const char *reason)
{
    st->local_response = 1;
    if (reason != NULL)
        st->reason = reason;
    if (st->is_grpc && grpc_status >= 0) {
        /* gRPC clients read errors from grpc-status, not the HTTP status: a
         * trailers-only response (one HEADERS frame with END_STREAM). */
        char code[16];
        set_status_body(st, 200, "application/grpc", NULL);
        st->resp_content_length = -1;
        snprintf(code, sizeof(code), "%d", grpc_status);
        px_hdrs_add(&st->resp, "grpc-status", 11, code, strlen(code), 0);
        if (body) {
            size_t n = strlen(body);
            while (n > 0 && (body[n - 1] == '\n'))
                n--;
            px_hdrs_add(&st->resp, "grpc-message", 12, body, n, 0);
        }
        st->status = 200;
    } else {
        set_status_body(st, status, "text/plain; charset=utf-8", body);
    }
    if (st->request_id[0])
        px_hdrs_add(&st->resp, "x-request-id", 12, st->request_id, strlen(st->request_id), 0);
    if (st->down)
        st->down->response_ready(st);
}

static int grpc_code_for_http(int status)
{
    switch (status) {
    case 400: return 13; /* INTERNAL, as gRPC's HTTP mapping says */
    case 401: return 16;
    case 403: return 7;
    case 404: return 12;
    case 429: case 502: case 503: case 504: return 14; /* UNAVAILABLE */
    default: return 2;
    }
}

void px_stream_upstream_failed(struct px_stream *st, int status, const char *reason)
{
    char labels[96];
    if (st->reason == NULL)
        st->reason = reason;
    if (st->up_timer)
        evtimer_del(st->up_timer);
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
    px_counter_add(px_counter_get("picket_upstream_failures_total",
                                  "Upstream failures by reason (connect, reset, server identity)",
                                  labels),
                   1);
    px_log(PX_LOG_WARN, "upstream_failed", "request_id", st->request_id, "upstream",
           st->upstream_name ? st->upstream_name : "", "reason", reason, NULL);
    if (st->down_done)
        return;
    if (st->status == 0) {
        const char *body = status == 504   ? "upstream timeout\n"
                           : status == 503 ? "upstream unavailable\n"
                                           : "upstream error\n";
        px_stream_respond(st, status, body, grpc_code_for_http(status), reason);
    } else if (!st->resp_eof && st->down) {
        st->down->abort(st);
    }
}

/* Fields named in Connection are hop-by-hop too (RFC 9110 7.6.1): drop
 * them (except "te" when keep_te: "te: trailers" is handled by the caller). */
static void strip_connection_tokens(struct px_hdrs *h, int keep_te)
{
    const struct px_hdr *c = px_hdrs_get(h, "connection");
    const char *p, *end;

    if (c == NULL)
        return;
    /* The value's bytes live in the list's blocks, which deleting fields
     * does not free, so it is walked in place (all of it: no token is
     * missed however long the value); only c itself may move. */
    for (p = c->value, end = c->value + c->vlen; p < end;) {
        const char *tok;
        size_t n;
        while (p < end && (*p == ',' || *p == ' ' || *p == '\t'))
            p++;
        tok = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        n = (size_t)(p - tok);
        if (n == 0 || (keep_te && n == 2 && strncasecmp(tok, "te", 2) == 0))
            continue;
        px_hdrs_del_ci(h, tok, n);
    }
}

void px_stream_up_fail(struct px_stream *st, int status, const char *reason)
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
    strip_connection_tokens(&st->resp, 0);
    for (size_t i = 0; i < st->resp.n;) {
        if (px_is_hop_by_hop(st->resp.v[i].name, st->resp.v[i].nlen)) {
            px_hdrs_remove_at(&st->resp, i);
            continue;
        }
        i++;
    }
    px_hdrs_del(&st->resp, "content-length");
    px_stream_up_activity(st);
    if (st->down)
        st->down->response_ready(st);
}

/* ---- upstream timeout -------------------------------------------------- */

static void up_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_stream *st = arg;
    (void)fd;
    (void)what;
    if (st->up_done || st->up == NULL)
        return;
    st->reason = "upstream_timeout";
    px_counter_add(px_counter_get("picket_upstream_failures_total",
                                  "Upstream failures by reason (connect, reset, server identity)",
                                  "reason=\"upstream_timeout\""),
                   1);
    px_log(PX_LOG_WARN, "upstream_failed", "request_id", st->request_id, "upstream",
           st->upstream_name ? st->upstream_name : "", "reason", "upstream_timeout", NULL);
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
        px_stream_respond(st, 504, "upstream timeout\n", 4 /* DEADLINE_EXCEEDED */,
                          "upstream_timeout");
    else if (st->down && !st->resp_eof)
        st->down->abort(st);
}

void px_stream_up_activity(struct px_stream *st)
{
    int64_t ms = PX_LIMITS(st)->upstream_timeout_ms;
    struct timeval tv;
    if (ms <= 0 || st->up_done)
        return;
    if (st->up_timer == NULL) {
        st->up_timer = evtimer_new(st->w->base, up_timeout_cb, st);
        if (st->up_timer == NULL)
            return;
    }
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(st->up_timer, &tv);
}

/* ---- request checks and forwarding ------------------------------------ */

/* Request IDs need to be unique, not secret (they correlate logs and
 * travel in clear headers). OpenSSL's DRBG cost ~6,600 instructions per ID
 * (callgrind: 10% of a request with logs off); each thread now seeds a
 * xoshiro256** generator from RAND_bytes once and draws 128 bits per ID. */
static _Thread_local uint64_t rid_state[4];
static _Thread_local int rid_seeded;

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rid_next(void)
{
    uint64_t *s = rid_state;
    uint64_t out = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

static void rid_seed(struct px_stream *st)
{
    if (RAND_bytes((unsigned char *)rid_state, sizeof(rid_state)) != 1) {
        /* No entropy: still unique per thread and start, which is all an
         * ID needs (splitmix64 spreads the inputs over the state). */
        uint64_t x = (uint64_t)px_mono_us() ^ ((uint64_t)st->w->id << 56) ^ (uint64_t)getpid();
        for (int i = 0; i < 4; i++) {
            uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
            rid_state[i] = z ^ (z >> 31);
        }
    }
    if ((rid_state[0] | rid_state[1] | rid_state[2] | rid_state[3]) == 0)
        rid_state[0] = 1; /* the one state xoshiro cannot leave */
    rid_seeded = 1;
}

static void make_request_id(struct px_stream *st)
{
    unsigned char r[16];
    static const char hex[] = "0123456789abcdef";
    char *o = st->request_id;
    uint64_t a, b;

    if (!rid_seeded)
        rid_seed(st);
    a = rid_next();
    b = rid_next();
    for (int i = 0; i < 8; i++) {
        r[i] = (unsigned char)(a >> (8 * i));
        r[8 + i] = (unsigned char)(b >> (8 * i));
    }
    r[6] = (unsigned char)((r[6] & 0x0F) | 0x40); /* UUID v4 */
    r[8] = (unsigned char)((r[8] & 0x3F) | 0x80);
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[r[i] >> 4];
        *o++ = hex[r[i] & 15];
    }
    *o = '\0';
}

static int request_id_ok(const char *v, size_t len)
{
    if (len == 0 || len >= 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (v[i] <= 0x20 || v[i] >= 0x7f || v[i] == '"' || v[i] == '\\')
            return 0;
    return 1;
}

/* Removes hop-by-hop fields, fields named by Connection, and the identity
 * fields that only picket may write. */
static void filter_request_headers(struct px_stream *st)
{
    const struct px_hdr *te = px_hdrs_get(&st->req, "te");
    int te_trailers = 0;

    if (te != NULL && te->vlen == 8 && strncasecmp(te->value, "trailers", 8) == 0)
        te_trailers = 1;
    strip_connection_tokens(&st->req, 1);
    for (size_t i = 0; i < st->req.n;) {
        const struct px_hdr *h = &st->req.v[i];
        int drop = px_is_hop_by_hop(h->name, h->nlen) ||
                   (h->nlen == 4 && memcmp(h->name, "host", 4) == 0) ||
                   (h->nlen == 14 && memcmp(h->name, "content-length", 14) == 0) ||
                   (h->nlen == 23 && memcmp(h->name, "x-forwarded-client-cert", 23) == 0) ||
                   (h->nlen == 17 && memcmp(h->name, "x-forwarded-proto", 17) == 0) ||
                   (h->nlen >= 9 && memcmp(h->name, "x-picket-", 9) == 0);
        if (drop) {
            /* By index, never by a copied name: a name longer than a copy
             * buffer would not match, nothing would be removed, and this
             * loop would spin forever (found by fuzz_h1). */
            px_hdrs_remove_at(&st->req, i);
            continue;
        }
        i++;
    }
    /* gRPC needs "te: trailers" end to end; it is the one TE value h2 allows. */
    if (te_trailers)
        px_hdrs_add(&st->req, "te", 2, "trailers", 8, 0);
}

static int is_outbound(const struct px_stream *st)
{
    return st->snap->cfg->listeners[st->conn->lst->index].kind == PX_LISTENER_OUTBOUND;
}

static void add_identity_headers(struct px_stream *st)
{
    struct px_conn *c = st->conn;
    const struct px_hdr *rid = px_hdrs_get(&st->req, "x-request-id");
    char xfcc[4400];
    int n;

    if (rid != NULL && request_id_ok(rid->value, rid->vlen)) {
        memcpy(st->request_id, rid->value, rid->vlen);
        st->request_id[rid->vlen] = '\0';
    } else {
        px_hdrs_del(&st->req, "x-request-id");
        make_request_id(st);
        px_hdrs_add(&st->req, "x-request-id", 12, st->request_id, strlen(st->request_id), 0);
    }
    if (is_outbound(st)) {
        /* Leaving the pod: the remote sidecar writes XFCC from our SVID. */
        return;
    }
    if (c->ssl != NULL) {
        px_hdrs_add(&st->req, "x-forwarded-proto", 17, "https", 5, 0);
        if (c->peer_id[0]) {
            n = px_xfcc_build(xfcc, sizeof(xfcc), st->snap->own_id, c->peer_cert_hash,
                              c->peer_id);
            if (n > 0)
                px_hdrs_add(&st->req, "x-forwarded-client-cert", 23, xfcc, (size_t)n, 0);
        }
    } else {
        px_hdrs_add(&st->req, "x-forwarded-proto", 17, "http", 4, 0);
    }
}

static int normalize_path(struct px_stream *st)
{
    size_t inlen = strlen(st->path), outlen = 0, pathlen = 0;
    char *out = malloc(inlen * 3 + 2);
    int rc;
    if (out == NULL)
        return -1;
    rc = policy_path_normalize(st->path, inlen, out, inlen * 3 + 2, &outlen, &pathlen);
    if (rc != 0) {
        free(out);
        st->reason = policy_path_error_name(rc);
        return -1;
    }
    out[outlen] = '\0';
    st->orig_path = st->path;
    st->path = out;
    st->path_only_len = pathlen;
    return 0;
}

static const struct px_upstream_addr *pick_route(struct px_stream *st)
{
    const struct px_listener_cfg *lc = &st->snap->cfg->listeners[st->conn->lst->index];
    size_t alen = 0;
    const char *a = st->authority;

    if (a != NULL) {
        /* authority without port, for matching */
        const char *colon = strrchr(a, ':');
        const char *rb = strrchr(a, ']');
        alen = strlen(a);
        if (colon != NULL && (rb == NULL || colon > rb))
            alen = (size_t)(colon - a);
    }
    for (size_t i = 0; i < lc->nroutes; i++) {
        const struct px_route *r = &lc->routes[i];
        if (r->authority != NULL &&
            (a == NULL || strlen(r->authority) != alen || strncasecmp(r->authority, a, alen) != 0))
            continue;
        if (r->path_prefix != NULL &&
            (strlen(r->path_prefix) > st->path_only_len ||
             strncmp(st->path, r->path_prefix, strlen(r->path_prefix)) != 0))
            continue;
        return &r->upstream;
    }
    return lc->has_upstream ? &lc->upstream : NULL;
}

void px_stream_dispatch(struct px_stream *st)
{
    const struct px_hdr *ct, *cl;

    ct = px_hdrs_get(&st->req, "content-type");
    if (ct != NULL && ct->vlen >= 16 && strncasecmp(ct->value, "application/grpc", 16) == 0)
        st->is_grpc = 1;
    if (st->method == NULL || st->path == NULL || st->authority == NULL || st->path[0] != '/') {
        if (st->path == NULL && st->orig_path == NULL)
            st->path = strdup("");
        px_stream_respond(st, 400, "bad request\n", 13, "malformed_request");
        return;
    }
    cl = px_hdrs_get(&st->req, "content-length");
    if (cl != NULL && st->req_content_length < 0) {
        char tmp[24];
        char *end = NULL;
        long long v;
        if (cl->vlen == 0 || cl->vlen >= sizeof(tmp)) {
            px_stream_respond(st, 400, "bad content-length\n", 13, "bad_content_length");
            return;
        }
        memcpy(tmp, cl->value, cl->vlen);
        tmp[cl->vlen] = '\0';
        v = strtoll(tmp, &end, 10);
        if (*end != '\0' || v < 0 || tmp[0] < '0' || tmp[0] > '9') {
            px_stream_respond(st, 400, "bad content-length\n", 13, "bad_content_length");
            return;
        }
        st->req_content_length = v;
    }
    if (normalize_path(st) != 0) {
        px_stream_respond(st, 400, "bad request path\n", 13, st->reason ? st->reason : "bad_path");
        return;
    }
    filter_request_headers(st);
    add_identity_headers(st);

    /* Policy (inbound): may answer locally (403, 503 when stale), or wait
     * for a remote authorization service (dispatch.c continues the stream
     * with px_stream_forward()). Outbound requests come from our own app
     * and are decided by the receiving sidecar's policy. */
    if (is_outbound(st)) {
        st->decision = "forward";
        snprintf(st->rule, sizeof(st->rule), "outbound");
    } else if (px_enforce_request(st) != 0) {
        return;
    }
    px_stream_forward(st);
}

void px_stream_forward(struct px_stream *st)
{
    const struct px_upstream_addr *up = pick_route(st);
    if (up == NULL) {
        px_stream_respond(st, 404, is_outbound(st) ? "no route for this authority\n" : "no route\n",
                          12, "no_route");
        return;
    }
    st->upstream_name = up->url;
    px_stream_up_activity(st);
    px_upstream_start(st->w, up, st);
}
