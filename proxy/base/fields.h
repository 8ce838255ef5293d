/*
 * fields.h - what picket knows about header field names: the classes its
 * request filter, trailer filter and response filter act on, and the set
 * of names a Connection field lists (RFC 9110 7.6.1).
 */
#ifndef PX_FIELDS_H
#define PX_FIELDS_H

#include <stddef.h>
#include <stdint.h>

#include "hdrs.h"

enum px_fclass {
    PX_FC_OTHER,
    PX_FC_HOP,      /* hop-by-hop: never forwarded */
    PX_FC_TE,       /* te: only "trailers" survives */
    PX_FC_HOST,     /* consumed into the authority */
    PX_FC_CLEN,     /* consumed into content_length (picket frames bodies itself) */
    PX_FC_EXPECT,   /* answered by picket */
    PX_FC_OWNED,    /* identity fields only picket writes */
    PX_FC_FWD,      /* forwarding fields: kept only from trusted forwarders */
    PX_FC_RID,      /* x-request-id */
    PX_FC_COOKIE,
    PX_FC_CTYPE     /* content-type: kept, tells gRPC apart */
};

/* The class of a field by its name (lower case) with '_' read as '-' (what
 * CGI, WSGI and Rack turn both into), so "x_forwarded_client_cert" is the
 * identity field it is dressed up as. *underscore says whether the name had
 * one. Pure. */
enum px_fclass px_field_class(const char *name, size_t n, int *underscore);

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

/* The names the Connection fields of a header section list: a small open
 * hash set, built once per section, so a request with thousands of tokens
 * costs what its bytes cost. */
struct px_tokset {
    struct tok { const char *p; size_t n; } *slot;
    size_t mask;
    struct tok local[64];
};

/* 0, or -1 (out of memory). */
int px_tokset_build(struct px_tokset *s, const struct px_hdrs *h);
int px_tokset_has(const struct px_tokset *s, const char *p, size_t n);
void px_tokset_free(struct px_tokset *s);

/* 1 for a field HPACK must never index (RFC 7541 6.2.3): x-request-id,
 * new on every request, would only push the fields that repeat out of the
 * 4 KiB dynamic table. Both of picket's HTTP/2 encoders (h2.c responses,
 * up_h2.c requests) ask. Pure. */
int px_field_never_indexed(const char *name, size_t n);

/* 1 if the comma-separated list v[0..vlen) (a Connection or Upgrade
 * value) has the token tok, compared without case. Pure. */
int px_list_has_token(const char *v, size_t vlen, const char *tok);

/* A gRPC request's grpc-timeout value p[0..n) (PROTOCOL-HTTP2.md:
 * 1 to 8 ASCII digits, then one unit: H hours, M minutes, S seconds,
 * m milliseconds, u microseconds, n nanoseconds; nothing else, no
 * spaces) into *us, microseconds, rounded up. 0 on success; -1 when the
 * value is malformed or zero, which the caller ignores, as Envoy does (a
 * peer's bad header must not end its request: the request then has the
 * configured deadline only). Pure. */
int px_grpc_timeout_parse(const char *p, size_t n, int64_t *us);

#endif
