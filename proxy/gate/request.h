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

struct px_config;
struct px_listener_cfg;
struct policy_request;
struct policy_header;

/* 1 if m[0..n) is a method picket accepts: one of http_parser's methods,
 * exact upper case, CONNECT excepted. Pure. */
int px_method_ok(const char *m, size_t n);

/* ---- the request ------------------------------------------------------------- */

enum px_underscores { PX_US_DROP, PX_US_REJECT, PX_US_ALLOW };
enum px_path_params { PX_PP_REJECT, PX_PP_KEEP };

struct px_request {
    /* Canonical view, valid once px_request_build() returned 0. Strings are
     * NUL-terminated; they live in hdrs' blocks (freed with the request). */
    const char *method;
    size_t method_len;
    const char *scheme; /* "https" or "http": the connection's, never the client's word */
    const char *host;   /* canonical host, no port: what `hosts` rules and routes match */
    size_t host_len;
    unsigned port; /* 0 = none given */
    const char *authority; /* host[":" port]: Host / :authority sent upstream */
    size_t authority_len;
    const char *target; /* normalized path + raw query: the request target sent upstream */
    size_t target_len;
    size_t path_len;         /* target[0..path_len) is the path, the rest the query */
    const char *match_path;  /* what `paths` rules and path_prefix routes match (no query): */
    size_t match_path_len;   /* the path, or with path_params "keep" the path without them */
    struct px_hdrs hdrs;     /* every field sent upstream, in order (picket's own included) */
    struct px_hdrs trailers; /* request trailers, filtered the same way */
    int64_t content_length;  /* -1 when unknown */
    char request_id[64];     /* the client's sane x-request-id, or a generated UUID v4 */
    unsigned is_grpc : 1;
    unsigned expect_continue : 1; /* the client waits for "100 Continue" before its body */
    unsigned built : 1;
    unsigned internal : 1; /* picket's own request (px_request_set_internal) */

    /* As received (the protocol fills these, then calls build). */
    const char *raw_method, *raw_target, *raw_authority;
    size_t raw_method_len, raw_target_len, raw_authority_len;
    size_t nfields, ntrailers; /* counted as received, before any filtering */
    size_t seen_bytes;         /* name + value + 32 of every field of the section received */
    int limit_status;          /* 431 once a limit was passed while collecting */
    const char *limit_reason;
};

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
};

void px_request_init(struct px_request *rq);
void px_request_clear(struct px_request *rq);

/* Collecting, as parsed. The bytes are copied. Pseudo-header setters keep
 * the first value (nghttp2 refuses duplicates before we see them). */
int px_request_set_method(struct px_request *rq, const char *p, size_t n);
int px_request_set_target(struct px_request *rq, const char *p, size_t n);
int px_request_set_authority(struct px_request *rq, const char *p, size_t n);

/* Appends a header field (name lowercased) or a trailer field, counting it
 * against limits.max_headers and limits.max_header_list_size of cfg. On
 * the first field over a limit, rq->limit_status becomes 431 with reason
 * "too_many_headers" or "headers_too_large" and nothing more is stored;
 * the build then refuses the request. Every field received counts towards
 * the size, stored or not. Returns 0; -1 over the count (the fields that
 * follow are only counted); -3 over the size (the section is more than
 * picket will decode: HTTP/2 ends the connection at once, since finishing
 * the block is the work an HPACK bomb wants done); -2 out of memory. */
int px_request_add_field(struct px_request *rq, const struct px_config *cfg, const char *name,
                         size_t nlen, const char *value, size_t vlen);
int px_request_add_trailer(struct px_request *rq, const struct px_config *cfg, const char *name,
                           size_t nlen, const char *value, size_t vlen);

/* Validates and canonicalizes the collected request (see the top of this
 * file). Returns 0, or the HTTP status to refuse it with (400, 414, 417,
 * 431, 500) and *reason set to a stable name ("bad_method", "bad_host",
 * "missing_host", "conflicting_host", "target_too_long", "path_params",
 * "dot_segment_params", "header_with_underscore", "bad_content_length",
 * "bad_expect", "too_many_headers", "headers_too_large", a path reason
 * such as "encoded_slash", or "out_of_memory"). Call once. */
int px_request_build(struct px_request *rq, const struct px_request_ctx *ctx,
                     const char **reason);

/* Filters the collected trailers (after the last one arrived): the field
 * rules of px_request_build() plus the trailer deny list. Returns 0, or
 * 431 with *reason when the trailers passed a limit. */
int px_request_build_trailers(struct px_request *rq, const struct px_request_ctx *ctx,
                              const char **reason);

/* Fills a request that picket itself makes (dispatch checks, control-plane
 * fetches): fields are taken as given, nothing is filtered. Returns 0 or
 * -1 (out of memory). */
int px_request_set_internal(struct px_request *rq, const char *method, const char *authority,
                            const char *target, const struct px_hdrs *fields);

/* The policy's input: rq's canonical method, host, match path and every
 * header field. `hbuf` must hold rq->hdrs.n entries; `peer` (borrowed) is
 * the caller's SPIFFE ID. */
void px_request_policy_input(const struct px_request *rq, const char *peer,
                             struct policy_header *hbuf, struct policy_request *out);

/* Response-side filters (both directions' rule for trailers).
 * px_trailer_allowed: 1 if a field named name[0..n) (lowercase) may travel
 * as a trailer. Framing, routing, auth and identity fields never do (RFC
 * 9110 6.5.1), so an app that merges trailers into headers cannot be fooled. */
int px_trailer_allowed(const char *name, size_t n);
/* Drops from h what may not be a trailer. */
void px_trailers_filter(struct px_hdrs *h);

/* Removes hop-by-hop fields and the fields named by Connection from a
 * response header list, in one pass (linear in the list's size). */
void px_response_fields_filter(struct px_hdrs *h);

/* A fresh UUID v4 into out (at least 37 bytes), from a per-thread
 * generator seeded once from the OS. Unique, not secret. */
void px_request_id_new(char *out);

/* 1 if v[0..n) is usable as a request ID (1-63 visible ASCII, no quotes or
 * backslashes). Pure. */
int px_request_id_ok(const char *v, size_t n);

#endif
