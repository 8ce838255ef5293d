/*
 * message.c - the request as a stream holds it (message.h): what the
 * protocol half collected, counted against the limits as it arrived, and
 * the canonical view gate/request.c builds from it.
 */
#include "message.h"

#include <string.h>

#include "config.h"

void px_request_init(struct px_request *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->content_length = -1;
}

void px_request_clear(struct px_request *rq)
{
    px_hdrs_clear(&rq->hdrs);
    px_hdrs_clear(&rq->trailers);
    px_request_init(rq);
}

static int set_raw(struct px_request *rq, const char **dst, size_t *dlen, const char *p,
                   size_t n)
{
    char *s;
    if (*dst != NULL)
        return 0; /* first one wins; duplicates were refused by the parser */
    s = px_hdrs_strdup(&rq->hdrs, p, n);
    if (s == NULL)
        return -1;
    *dst = s;
    *dlen = n;
    return 0;
}

int px_request_set_method(struct px_request *rq, const char *p, size_t n)
{
    return set_raw(rq, &rq->raw_method, &rq->raw_method_len, p, n);
}

int px_request_set_target(struct px_request *rq, const char *p, size_t n)
{
    return set_raw(rq, &rq->raw_target, &rq->raw_target_len, p, n);
}

int px_request_set_authority(struct px_request *rq, const char *p, size_t n)
{
    return set_raw(rq, &rq->raw_authority, &rq->raw_authority_len, p, n);
}

int px_request_set_protocol(struct px_request *rq, const char *p, size_t n)
{
    return set_raw(rq, &rq->raw_protocol, &rq->raw_protocol_len, p, n);
}

static int add_counted(struct px_request *rq, struct px_hdrs *h, size_t *count,
                       const struct px_config *cfg, const char *name, size_t nlen,
                       const char *value, size_t vlen)
{
    size_t limit = (size_t)cfg->limits.max_header_list_size;
    /* Every field received counts towards the size, stored or not: what a
     * peer can make us decode is bounded too (HPACK references to one big
     * table entry cost the wire a byte each). */
    rq->seen_bytes += nlen + vlen + 32;
    if (rq->seen_bytes > limit) {
        rq->limit_status = 431;
        rq->limit_reason = PX_R_HEADERS_TOO_LARGE;
        return -3;
    }
    if (rq->limit_status != 0)
        return -1;
    if (++*count > (size_t)cfg->limits.max_headers) {
        rq->limit_status = 431;
        rq->limit_reason = PX_R_TOO_MANY_HEADERS;
        return -1;
    }
    return px_hdrs_add(h, name, nlen, value, vlen, 0) == 0 ? 0 : -2;
}

int px_request_add_field(struct px_request *rq, const struct px_config *cfg, const char *name,
                         size_t nlen, const char *value, size_t vlen)
{
    return add_counted(rq, &rq->hdrs, &rq->nfields, cfg, name, nlen, value, vlen);
}

int px_request_add_trailer(struct px_request *rq, const struct px_config *cfg, const char *name,
                           size_t nlen, const char *value, size_t vlen)
{
    if (rq->ntrailers == 0)
        rq->seen_bytes = 0; /* the trailer section has its own size */
    return add_counted(rq, &rq->trailers, &rq->ntrailers, cfg, name, nlen, value, vlen);
}

int px_request_set_internal(struct px_request *rq, const char *method, const char *authority,
                            const char *target, const struct px_hdrs *fields)
{
    char *m = px_hdrs_strdup(&rq->hdrs, method, strlen(method));
    char *a = px_hdrs_strdup(&rq->hdrs, authority, strlen(authority));
    char *t = px_hdrs_strdup(&rq->hdrs, target, strlen(target));
    if (m == NULL || a == NULL || t == NULL)
        return -1;
    rq->method = m;
    rq->method_len = strlen(m);
    rq->authority = rq->host = a;
    rq->authority_len = rq->host_len = strlen(a);
    rq->target = rq->match_path = t;
    rq->target_len = strlen(t);
    rq->path_len = rq->match_path_len = strcspn(t, "?");
    rq->scheme = "https";
    for (size_t i = 0; fields != NULL && i < fields->n; i++)
        if (px_hdrs_add(&rq->hdrs, fields->v[i].name, fields->v[i].nlen, fields->v[i].value,
                        fields->v[i].vlen, 0) != 0)
            return -1;
    rq->internal = rq->built = 1;
    return 0;
}
