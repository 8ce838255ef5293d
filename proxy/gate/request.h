/*
 * request.h - the canonical request: one view of a request, built once
 * after parsing, that everything downstream reads.
 *
 * The protocol halves (h1_request.c, h2.c) only collect what they parsed
 * into a struct px_request: the raw method, target, :authority and every
 * header field, counted and sized against the limits as they arrive. Then
 * px_request_build() validates and canonicalizes it in one place:
 *
 *   method     one of the methods http_parser knows, exact upper case
 *              (the same rule on HTTP/1.1 and HTTP/2);
 *   authority  one parser (px_authority_parse): lowercase host, one
 *              trailing dot removed, IP literals, optional port 1..65535;
 *   path       policy_path_normalize() plus the path-parameter rules;
 *   fields     hop-by-hop and Connection-named fields, framing fields,
 *              identity and forwarding fields picket owns (compared with
 *              '_' read as '-'), and by default every name with '_', are
 *              dropped in one linear pass; cookie crumbs are joined; picket
 *              writes its own identity headers.
 *
 * The policy input, the route choice, the dispatch check, the access and
 * audit records and both upstream serializers read the result, and nothing
 * after px_request_build() parses a header again. So what the policy
 * judged is, byte for byte, what the app receives.
 *
 * Everything here is pure (no I/O, no clock, no event loop) and runs on
 * the worker that owns the stream.
 */
#ifndef PX_REQUEST_H
#define PX_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "authority.h"
#include "hdrs.h"
#include "fields.h"
#include "message.h"
#include "reqid.h"

struct px_config;
struct px_listener_cfg;
struct policy_request;
struct policy_header;

/* 1 if m[0..n) is a method picket accepts: one of http_parser's methods,
 * exact upper case, CONNECT excepted. Pure. */
int px_method_ok(const char *m, size_t n);

/* Everything about the connection and listener the build needs. */
struct px_request_ctx {
    const struct px_config *cfg;
    const struct px_listener_cfg *lc; /* the listener the request came in on */
    int tls;                          /* the connection is TLS (scheme https) */
    int outbound;                     /* lc is an outbound listener */
    int http10;                       /* HTTP/1.0: no 100-continue */
    int body_follows;                 /* a request body may follow the head */
    const char *peer_id;              /* verified SPIFFE ID, "" when none */
    const char *peer_cert_hash;       /* hex sha256 of the peer certificate */
    const char *peer_ip;              /* textual IP of the peer, "" when unknown */
    const char *own_id;               /* picket's own SPIFFE ID, "" when none */
    const char *xfcc;                 /* the x-forwarded-client-cert value for this peer, built
                                       * once per connection (px_conn_xfcc), or NULL: built here */
    size_t xfcc_len;
};

/* Validates and canonicalizes the collected request (see the top of this
 * file). Returns 0, or the HTTP status to refuse it with (400, 414, 417,
 * 431, 500) and *reason set to a stable name ("bad_method", "bad_host",
 * "missing_host", "conflicting_host", "target_too_long", "path_params",
 * "dot_segment_params", "header_with_underscore", "bad_content_length",
 * "bad_expect", "too_many_headers", "headers_too_large", a path reason
 * such as "encoded_slash", or "out_of_memory"). Call once. */
int px_request_build(struct px_request *rq, const struct px_request_ctx *ctx,
                     enum px_reason *reason);

/* Filters the collected trailers (after the last one arrived): the field
 * rules of px_request_build() plus the trailer deny list. Returns 0, or
 * 431 with *reason when the trailers passed a limit. */
int px_request_build_trailers(struct px_request *rq, const struct px_request_ctx *ctx,
                              enum px_reason *reason);


/* The policy's input: rq's canonical method, host, match path and every
 * header field. `hbuf` must hold rq->hdrs.n entries; `peer` (borrowed) is
 * the caller's SPIFFE ID. */
void px_request_policy_input(const struct px_request *rq, const char *peer,
                             struct policy_header *hbuf, struct policy_request *out);


#endif
