/*
 * message.h - the request a stream carries (struct px_request): what its
 * protocol half (h1_request.c, h2.c) collected as it parsed, counted
 * against the limits as it arrived, and, once gate/request.c built it, the
 * canonical view everything after reads (see request.h for the rules).
 */
#ifndef PX_MESSAGE_H
#define PX_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "hdrs.h"
#include "reason.h"

struct px_config;

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
    /* A WebSocket opening request (HTTP/1.1 Upgrade, or HTTP/2 extended
     * CONNECT with :protocol websocket): method is "GET", hdrs carry
     * "upgrade: websocket", and once the upstream agrees the stream becomes
     * a tunnel (px.h, st->tunnel). */
    unsigned upgrade : 1;
    const char *ws_key; /* the Sec-WebSocket-Key sent upstream over HTTP/1.1 (in hdrs), or NULL */
    size_t ws_key_len;

    /* As received (the protocol fills these, then calls build). */
    const char *raw_method, *raw_target, *raw_authority, *raw_protocol; /* :protocol (h2) */
    size_t raw_method_len, raw_target_len, raw_authority_len, raw_protocol_len;
    size_t nfields, ntrailers; /* counted as received, before any filtering */
    size_t seen_bytes;         /* name + value + 32 of every field of the section received */
    int limit_status;          /* 431 once a limit was passed while collecting */
    enum px_reason limit_reason;
};

void px_request_init(struct px_request *rq);
void px_request_clear(struct px_request *rq);

/* Collecting, as parsed. The bytes are copied. Pseudo-header setters keep
 * the first value (nghttp2 refuses duplicates before we see them). */
int px_request_set_method(struct px_request *rq, const char *p, size_t n);
int px_request_set_target(struct px_request *rq, const char *p, size_t n);
int px_request_set_authority(struct px_request *rq, const char *p, size_t n);
int px_request_set_protocol(struct px_request *rq, const char *p, size_t n);

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

/* Fills a request that picket itself makes (dispatch checks, control-plane
 * fetches): fields are taken as given, nothing is filtered. Returns 0 or
 * -1 (out of memory). */
int px_request_set_internal(struct px_request *rq, const char *method, const char *authority,
                            const char *target, const struct px_hdrs *fields);

#endif
