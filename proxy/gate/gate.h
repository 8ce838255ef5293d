/*
 * gate.h - the per-request pipeline (pipeline.c): the px_gate every
 * listener hands its requests to, and where dispatch.c resumes a request
 * the authorization service allowed.
 */
#ifndef PX_GATE_H
#define PX_GATE_H

#include "px.h"

/* Set on every data-path listener by the worker. */
extern const struct px_gate px_gate_pipeline;

/* An allowed request: starts the upstream of the route the gate picked
 * (st->route; 404 when none), unless its deadline was spent on the
 * decision (504). */
void px_stream_forward(struct px_stream *st);

/* The route of a request on listener lc, from its canonical host
 * host[0..host_len) (no port) and its match path
 * match_path[0..match_path_len) (struct px_request): the upstream of the
 * first of lc->routes whose authority and path_prefix both match, else
 * the listener's default upstream, else NULL (404 "no route"). A route
 * authority "*.example.org" matches names under example.org, not
 * example.org itself; any other authority matches exactly. path_prefix is
 * a byte prefix of the match path. Pure: the result points into lc.
 * *timeout_ms (when timeout_ms is not NULL) gets the request's deadline:
 * the matching route's "timeout", else the listener's, else 0 (none). */
/* The whole-request deadline of a request that started at monotonic
 * start_us: start_us + timeout_ms (0: none), or, for a gRPC request
 * (rq->is_grpc) whose first grpc-timeout field is well-formed and nonzero
 * (px_grpc_timeout_parse), start_us + that when it is sooner. 1 with
 * *at_us set, or 0 when the request has no deadline. Pure. */
int px_request_deadline(const struct px_request *rq, int64_t start_us, int64_t timeout_ms,
                        int64_t *at_us);

const struct px_upstream_addr *px_route_pick(const struct px_listener_cfg *lc, const char *host,
                                             size_t host_len, const char *match_path,
                                             size_t match_path_len, int64_t *timeout_ms);

/* The decision on an opaque TCP connection (tcp_inbound), made once at
 * connect with the caller's identity `peer` (its SPIFFE ID) alone: rules
 * that name hosts, methods, paths or headers never match it. The same
 * fail-closed rules as for requests (no policy loaded, stale bundle with
 * on_stale deny); a dispatch verdict is a deny (reason
 * tcp_dispatch_unsupported); audit mode records and allows. Fills *d
 * (strings static or copied). 1 allowed, 0 denied. Counted in
 * picket_policy_decisions_total. Worker thread. */
struct px_tcp_decision {
    const char *decision; /* "allow" | "deny" */
    const char *mode;     /* "enforce" | "audit" */
    char rule[128];
    int64_t bundle_revision, bundle_age_ms; /* -1 when no bundle */
    enum px_reason reason;                   /* PX_R_NONE when allowed */
};
int px_enforce_tcp(const struct px_config *cfg, struct px_policy_state *pol, const char *peer,
                   struct px_tcp_decision *d);

#endif
