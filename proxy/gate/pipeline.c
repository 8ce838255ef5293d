/*
 * pipeline.c - the gate: what happens to a request between its protocol
 * half and its upstream. The protocol hands over a request whose head is
 * complete (px_gate.request, through its listener); the gate builds the
 * canonical request (request.c), refuses what is malformed, decides
 * (enforce.c: local policy, or the authorization service through
 * dispatch.c, which continues with px_stream_forward()), picks the route
 * and starts the upstream with the request's deadline (the route's or
 * listener's timeout, or a sooner grpc-timeout). Trailers pass through
 * px_gate.trailers.
 */
#include "gate.h"

#include <stdio.h>
#include <string.h>

#include "enforce.h"
#include "fields.h"
#include "log.h"
#include "request.h"
#include "upstream.h"

static int is_outbound(const struct px_stream *st)
{
    return st->snap->cfg->listeners[st->conn->lst->index].kind == PX_LISTENER_OUTBOUND;
}

static void request_ctx(const struct px_stream *st, struct px_request_ctx *ctx)
{
    const struct px_conn *c = st->conn;
    memset(ctx, 0, sizeof(*ctx));
    ctx->cfg = st->snap->cfg;
    ctx->lc = &st->snap->cfg->listeners[c->lst->index];
    ctx->tls = c->ssl != NULL;
    ctx->outbound = ctx->lc->kind == PX_LISTENER_OUTBOUND;
    ctx->peer_id = c->peer_id;
    ctx->peer_cert_hash = c->peer_cert_hash;
    ctx->peer_ip = c->peer_ip;
    ctx->own_id = st->snap->own_id;
    if (ctx->tls && !ctx->outbound && c->peer_id[0] != '\0') {
        ctx->xfcc = px_conn_xfcc((struct px_conn *)c, st->snap, &ctx->xfcc_len);
        if (ctx->xfcc == NULL)
            ctx->xfcc = ""; /* could not be built: the build refuses the request */
    }
}

static const char *refusal_body(int status)
{
    switch (status) {
    case 414: return "request target too long\n";
    case 417: return "expectation failed\n";
    case 431: return "request header fields too large\n";
    case 500: return "internal error\n";
    default: return "bad request\n";
    }
}

/* "*.example.org" matches names under example.org; anything else exactly.
 * Both sides are canonical (authority.h), so byte comparison is enough. */
static int route_host_match(const char *pat, const char *h, size_t hlen)
{
    size_t plen = strlen(pat);
    if (plen > 2 && pat[0] == '*' && pat[1] == '.')
        return hlen > plen - 1 && memcmp(h + hlen - (plen - 1), pat + 1, plen - 1) == 0;
    return plen == hlen && memcmp(pat, h, hlen) == 0;
}

const struct px_upstream_addr *px_route_pick(const struct px_listener_cfg *lc, const char *host,
                                             size_t host_len, const char *match_path,
                                             size_t match_path_len, int64_t *timeout_ms)
{
    if (timeout_ms != NULL)
        *timeout_ms = lc->timeout_ms;
    for (size_t i = 0; i < lc->nroutes; i++) {
        const struct px_route *r = &lc->routes[i];
        if (r->authority != NULL && !route_host_match(r->authority, host, host_len))
            continue;
        if (r->path_prefix != NULL &&
            (strlen(r->path_prefix) > match_path_len ||
             strncmp(match_path, r->path_prefix, strlen(r->path_prefix)) != 0))
            continue;
        if (timeout_ms != NULL && r->timeout_ms > 0)
            *timeout_ms = r->timeout_ms;
        return &r->upstream;
    }
    return lc->has_upstream ? &lc->upstream : NULL;
}

static const struct px_upstream_addr *pick_route(struct px_stream *st, int64_t *timeout_ms)
{
    const struct px_listener_cfg *lc = &st->snap->cfg->listeners[st->conn->lst->index];
    const struct px_request *rq = &st->rq;

    return px_route_pick(lc, rq->host, rq->host_len, rq->match_path, rq->match_path_len,
                         timeout_ms);
}

int px_request_deadline(const struct px_request *rq, int64_t start_us, int64_t timeout_ms,
                        int64_t *at_us)
{
    int64_t us = timeout_ms > 0 ? timeout_ms * 1000 : 0, g;
    if (rq->is_grpc) {
        const struct px_hdr *h = px_hdrs_get(&rq->hdrs, "grpc-timeout");
        if (h != NULL && px_grpc_timeout_parse(h->value, h->vlen, &g) == 0 && (us == 0 || g < us))
            us = g;
    }
    if (us == 0)
        return 0;
    *at_us = start_us + us;
    return 1;
}

static void gate_request(struct px_stream *st)
{
    struct px_request_ctx ctx;
    enum px_reason reason = PX_R_NONE;
    int rc;

    request_ctx(st, &ctx);
    ctx.body_follows = !st->req_eof;
    ctx.http10 = st->http10;
    rc = px_request_build(&st->rq, &ctx, &reason);
    if (rc != 0) {
        st->malformed = 1;
        px_stream_respond(st, rc, refusal_body(rc), px_grpc_for_http(rc), reason);
        return;
    }

    /* The route, and with it the deadline, once: the deadline runs from
     * the request's start through the decision, so a check waiting on a
     * slow authorization service ends with 504 when the request's budget
     * is spent, not when the service answers (its waiter is cancelled). */
    {
        int64_t timeout_ms = 0, at_us;
        st->route = pick_route(st, &timeout_ms);
        if (st->route != NULL && px_request_deadline(&st->rq, st->start_us, timeout_ms, &at_us) &&
            px_stream_set_deadline(st, at_us) != 0) {
            px_stream_respond(st, 503, "out of memory\n", PX_GRPC_UNAVAILABLE, PX_R_OUT_OF_MEMORY);
            return;
        }
    }

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

static int gate_trailers(struct px_stream *st)
{
    struct px_request_ctx ctx;
    enum px_reason reason = PX_R_NONE;
    int rc;

    if (!st->rq.built || st->local_response) {
        px_hdrs_clear(&st->rq.trailers); /* nobody forwards them */
        return 0;
    }
    request_ctx(st, &ctx);
    rc = px_request_build_trailers(&st->rq, &ctx, &reason);
    if (rc == 0)
        return 0;
    px_log(PX_LOG_INFO, "request_trailers_refused", "request_id", st->rq.request_id, "reason",
           px_reason_name(reason), NULL);
    if (st->up != NULL && !st->up_done)
        st->up->cancel(st); /* the upstream saw part of a request we now refuse */
    if (st->status == 0)
        px_stream_respond(st, rc, refusal_body(rc), px_grpc_for_http(rc), reason);
    else if (st->down != NULL && !st->resp_eof)
        st->down->abort(st);
    return -1;
}

void px_stream_forward(struct px_stream *st)
{
    const struct px_upstream_addr *up = st->route; /* gate_request picked it */
    if (up == NULL) {
        px_stream_respond(st, 404, is_outbound(st) ? "no route for this authority\n" : "no route\n",
                          PX_GRPC_UNIMPLEMENTED, PX_R_NO_ROUTE);
        return;
    }
    if (st->deadline_us != 0 && px_mono_us() >= st->deadline_us) {
        /* spent on the decision already: no upstream is started for it */
        px_log(PX_LOG_WARN, "upstream_failed", "request_id", st->rq.request_id, "upstream",
               up->url, "reason", "request_deadline", NULL);
        px_stream_respond(st, 504, "request deadline exceeded\n", PX_GRPC_DEADLINE_EXCEEDED,
                          PX_R_REQUEST_DEADLINE);
        return;
    }
    st->allowed = 1;
    st->upstream_name = up->url;
    if (st->down != NULL && st->down->request_allowed != NULL)
        st->down->request_allowed(st);
    px_stream_up_activity(st);
    px_upstream_start(st->w, up, st);
}

const struct px_gate px_gate_pipeline = {
    .request = gate_request,
    .trailers = gate_trailers,
};
