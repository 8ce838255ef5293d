/*
 * request.c - the canonical request (request.h): the authority parser, the
 * method rule, the one pass that filters header fields, path parameters,
 * picket's identity headers and request IDs.
 *
 * Costs: the field filter is linear in the size of the header section.
 * Each field is classified by its length and a few bytes (no list scan);
 * the names a Connection field lists go into a small hash set built once,
 * so a request with thousands of Connection tokens costs what its bytes
 * cost, not tokens x fields. Cookie crumbs are joined into one buffer sized
 * in advance.
 */
#include "request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>
#include <time.h>

#include <http_parser.h>
#include <openssl/rand.h>

#include "config.h"
#include "policy.h"
#include "xfcc.h"
#include "fields.h"
#include "reqid.h"
#include "ws.h"

/* ---- methods ----------------------------------------------------------------- */

static const char *const methods[] = {
#define XX(num, name, string) #string,
    HTTP_METHOD_MAP(XX)
#undef XX
};

int px_method_ok(const char *m, size_t n)
{
    if (n == 0 || n > 16)
        return 0;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i]) == n && memcmp(methods[i], m, n) == 0)
            return !(n == 7 && memcmp(m, "CONNECT", 7) == 0);
    return 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- collecting ---------------------------------------------------------------------- */

/* ---- the field filter -------------------------------------------------------------------- */

static int trusted_forwarder(const struct px_request_ctx *ctx)
{
    const struct px_listener_cfg *lc = ctx->lc;
    if (lc == NULL || ctx->peer_id == NULL || ctx->peer_id[0] == '\0')
        return 0;
    for (size_t i = 0; i < lc->ntrusted_forwarders; i++)
        if (strcmp(lc->trusted_forwarders[i], ctx->peer_id) == 0)
            return 1;
    return 0;
}

static int value_is(const char *v, size_t n, const char *s)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return strlen(s) == n && strncasecmp(v, s, n) == 0;
}

/* What the pass consumed. Fields are copied by value: the array is
 * compacted in place, so a pointer into it would see another field. */
struct seen {
    struct px_hdr host, clen, expect; /* name NULL when absent */
    size_t nhost;
    int clen_conflict;
    ssize_t xff, fwd;           /* index (after compaction) of the last kept one, or -1 */
    int has_rid;
    int upgrade_ws;             /* an Upgrade field lists "websocket" */
    size_t nws_key;             /* Sec-WebSocket-Key fields */
    ssize_t ws_key;             /* index (after compaction) of the first one, or -1 */
};

/* The one pass over a section (headers, or trailers when `trailers`).
 * Drops in place what must not travel, records what is consumed. Returns 0
 * or an HTTP status with *reason. */
static int filter_fields(struct px_request *rq, struct px_hdrs *h, const struct px_request_ctx *ctx,
                         int trailers, struct seen *sn, enum px_reason *reason)
{
    enum px_underscores us_mode = ctx->lc != NULL ? (enum px_underscores)ctx->lc->underscores
                                                  : PX_US_DROP;
    int trusted = !ctx->outbound && trusted_forwarder(ctx);
    struct px_tokset ts;
    size_t o = 0, ncookie = 0, cookie_len = 0, bytes = 0;
    ssize_t cookie_at = -1;
    char *cookie_buf = NULL;
    int te_kept = 0, rc = 0;

    memset(sn, 0, sizeof(*sn));
    sn->xff = sn->fwd = sn->ws_key = -1;
    if (px_tokset_build(&ts, h) != 0) {
        *reason = PX_R_OUT_OF_MEMORY;
        return 500;
    }
    if (!trailers)
        for (size_t i = 0; i < h->n; i++)
            if (h->v[i].nlen == 6 && memcmp(h->v[i].name, "cookie", 6) == 0 && h->v[i].vlen > 0) {
                cookie_len += h->v[i].vlen + (ncookie > 0 ? 2 : 0);
                ncookie++;
            }
    for (size_t i = 0; i < h->n; i++) {
        struct px_hdr f = h->v[i];
        int us, keep = 0;
        enum px_fclass fc = px_field_class(f.name, f.nlen, &us);

        /* One field syntax for both protocols, so no serializer ever has
         * a field to leave out: what the policy saw is what is sent. */
        if (!px_field_name_ok(f.name, f.nlen) || !px_field_value_ok(f.value, f.vlen) ||
            (f.vlen > 0 && (f.value[0] == ' ' || f.value[0] == '\t' ||
                            f.value[f.vlen - 1] == ' ' || f.value[f.vlen - 1] == '\t'))) {
            *reason = PX_R_BAD_HEADER;
            rc = 400;
            goto out;
        }

        if (us && fc != PX_FC_OTHER && fc != PX_FC_CTYPE) {
            keep = 0; /* a look-alike of a field with meaning: never */
        } else if (us && us_mode == PX_US_REJECT) {
            *reason = PX_R_HEADER_WITH_UNDERSCORE;
            rc = 400;
            goto out;
        } else if (us && us_mode == PX_US_DROP) {
            keep = 0;
        } else if (trailers) {
            keep = fc == PX_FC_OTHER && !px_tokset_has(&ts, f.name, f.nlen) &&
                   px_trailer_allowed(f.name, f.nlen);
        } else {
            switch (fc) {
            case PX_FC_HOP:
                /* never forwarded as received; a WebSocket upgrade is
                 * rebuilt from the canonical request by each serializer */
                if (f.nlen == 7 && memcmp(f.name, "upgrade", 7) == 0 &&
                    px_list_has_token(f.value, f.vlen, "websocket"))
                    sn->upgrade_ws = 1;
                break;
            case PX_FC_OWNED:
                break;
            case PX_FC_TE:
                /* gRPC needs "te: trailers" end to end, the one TE value h2 allows */
                keep = !te_kept && value_is(f.value, f.vlen, "trailers");
                te_kept |= keep;
                if (keep && (f.vlen != 8 || memcmp(f.value, "trailers", 8) != 0)) {
                    /* sent as the one token it means: "te: trailers" */
                    if ((f.value = px_hdrs_strdup(h, "trailers", 8)) == NULL) {
                        *reason = PX_R_OUT_OF_MEMORY;
                        rc = 500;
                        goto out;
                    }
                    f.vlen = 8;
                }
                break;
            case PX_FC_HOST:
                if (sn->nhost++ == 0)
                    sn->host = f;
                break;
            case PX_FC_CLEN:
                if (sn->clen.name != NULL &&
                    (sn->clen.vlen != f.vlen || memcmp(sn->clen.value, f.value, f.vlen) != 0))
                    sn->clen_conflict = 1;
                sn->clen = f;
                break;
            case PX_FC_EXPECT:
                sn->expect = f;
                break;
            case PX_FC_FWD:
                keep = (ctx->outbound || trusted) && !px_tokset_has(&ts, f.name, f.nlen);
                if (keep && f.nlen == 15)
                    sn->xff = (ssize_t)o;
                if (keep && f.nlen == 9 && f.name[0] == 'f')
                    sn->fwd = (ssize_t)o;
                break;
            case PX_FC_RID:
                keep = !sn->has_rid && px_request_id_ok(f.value, f.vlen) &&
                       !px_tokset_has(&ts, f.name, f.nlen);
                if (keep) {
                    memcpy(rq->request_id, f.value, f.vlen);
                    rq->request_id[f.vlen] = '\0';
                    sn->has_rid = 1;
                }
                break;
            case PX_FC_COOKIE:
                if (f.vlen == 0 || px_tokset_has(&ts, f.name, f.nlen))
                    break;
                keep = 1;
                if (ncookie < 2)
                    break;
                /* RFC 9113 8.2.3: crumbs become one field, "; " between */
                if (cookie_at < 0) {
                    if ((cookie_buf = px_hdrs_alloc(h, cookie_len)) == NULL) {
                        *reason = PX_R_OUT_OF_MEMORY;
                        rc = 500;
                        goto out;
                    }
                    memcpy(cookie_buf, f.value, f.vlen);
                    f.value = cookie_buf;
                    cookie_at = (ssize_t)o;
                } else {
                    struct px_hdr *c = &h->v[cookie_at]; /* below o: never overwritten */
                    memcpy(cookie_buf + c->vlen, "; ", 2);
                    memcpy(cookie_buf + c->vlen + 2, f.value, f.vlen);
                    c->vlen += 2 + f.vlen;
                    keep = 0;
                }
                break;
            case PX_FC_CTYPE:
                keep = !px_tokset_has(&ts, f.name, f.nlen);
                if (keep && f.vlen >= 16 && strncasecmp(f.value, "application/grpc", 16) == 0)
                    rq->is_grpc = 1;
                break;
            case PX_FC_OTHER:
                keep = !px_tokset_has(&ts, f.name, f.nlen);
                if (keep && f.nlen == 17 && memcmp(f.name, "sec-websocket-key", 17) == 0 &&
                    sn->nws_key++ == 0)
                    sn->ws_key = (ssize_t)o;
                break;
            }
        }
        if (keep)
            h->v[o++] = f;
    }
    if (!trailers && !px_tokset_has(&ts, "upgrade", 7))
        sn->upgrade_ws = 0; /* an Upgrade the Connection field does not name is not one (RFC 9110 7.8) */
    if (cookie_buf != NULL)
        cookie_buf[h->v[cookie_at].vlen] = '\0';
    h->n = o;
    for (size_t i = 0; i < h->n; i++)
        bytes += h->v[i].nlen + h->v[i].vlen + 32;
    h->bytes = bytes;
out:
    px_tokset_free(&ts);
    return rc;
}

/* ---- building ------------------------------------------------------------------------------ */

/* A ';' parameter start in seg[0..n): raw ';' or an escaped one. */
static const char *param_start(const char *seg, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (seg[i] == ';')
            return seg + i;
        if (seg[i] == '%' && i + 2 < n && seg[i + 1] == '3' && (seg[i + 2] | 0x20) == 'b')
            return seg + i;
    }
    return NULL;
}

/* Path parameters (RFC 3986 3.3 ";"): Tomcat, Jetty and Spring drop them
 * from each segment before resolving dot segments, so "/public/..;/admin"
 * is "/admin" to them. Refused or stripped for matching (request.h). */
static int path_params(struct px_request *rq, const struct px_request_ctx *ctx, enum px_reason *reason)
{
    const char *p = rq->target, *end = rq->target + rq->path_len;
    int any = 0;
    enum px_path_params mode = ctx->lc != NULL ? (enum px_path_params)ctx->lc->path_params
                                               : PX_PP_REJECT;
    char *m, *o;

    rq->match_path = rq->target;
    rq->match_path_len = rq->path_len;
    while (p < end) {
        const char *seg = ++p, *se, *ps;
        while (p < end && *p != '/')
            p++;
        se = p;
        ps = param_start(seg, (size_t)(se - seg));
        if (ps == NULL)
            continue;
        any = 1;
        if ((ps - seg == 1 && seg[0] == '.') || (ps - seg == 2 && seg[0] == '.' && seg[1] == '.')) {
            *reason = PX_R_DOT_SEGMENT_PARAMS;
            return 400;
        }
    }
    if (!any)
        return 0;
    if (mode == PX_PP_REJECT) {
        *reason = PX_R_PATH_PARAMS;
        return 400;
    }
    /* keep: rules see every segment without its parameters */
    m = px_hdrs_strdup(&rq->hdrs, rq->target, rq->path_len);
    if (m == NULL) {
        *reason = PX_R_OUT_OF_MEMORY;
        return 500;
    }
    o = m;
    for (p = rq->target; p < end;) {
        const char *seg = ++p, *ps;
        while (p < end && *p != '/')
            p++;
        ps = param_start(seg, (size_t)(p - seg));
        if (ps == NULL)
            ps = p;
        if (ps == seg && p < end)
            continue; /* nothing left of it but a '/' */
        *o++ = '/';
        memcpy(o, seg, (size_t)(ps - seg));
        o += ps - seg;
    }
    if (o == m)
        *o++ = '/';
    *o = '\0';
    rq->match_path = m;
    rq->match_path_len = (size_t)(o - m);
    return 0;
}

static int build_target(struct px_request *rq, const struct px_request_ctx *ctx,
                        enum px_reason *reason)
{
    size_t inlen = rq->raw_target_len, outlen = 0, pathlen = 0;
    char local[3072], *out, *t;
    int rc;

    if (rq->raw_target == NULL || inlen == 0) {
        *reason = PX_R_MALFORMED_REQUEST;
        return 400;
    }
    if (inlen > (size_t)ctx->cfg->limits.max_target_length) {
        *reason = PX_R_TARGET_TOO_LONG;
        return 414;
    }
    if (rq->raw_target[0] != '/') {
        *reason = PX_R_BAD_TARGET; /* origin-form only: no "*", absolute- or authority-form */
        return 400;
    }
    /* Visible ASCII only, path and query alike (RFC 3986 2, RFC 9112 3.2):
     * the rule HTTP/1.1's request line already imposes, now for :path too,
     * so no byte reaches an upstream that an HTTP/1.1 client could not send. */
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)rq->raw_target[i];
        if (c <= 0x20 || c >= 0x7f || c == '#') {
            *reason = c == '#' ? PX_R_FRAGMENT : PX_R_BAD_TARGET;
            return 400;
        }
    }
    /* 3 x + 2 always holds the result (policy.h); most targets fit the stack */
    out = inlen * 3 + 2 <= sizeof(local) ? local : malloc(inlen * 3 + 2);
    if (out == NULL) {
        *reason = PX_R_OUT_OF_MEMORY;
        return 500;
    }
    rc = policy_path_normalize(rq->raw_target, inlen, out, inlen * 3 + 2, &outlen, &pathlen);
    t = rc == 0 ? px_hdrs_strdup(&rq->hdrs, out, outlen) : NULL;
    if (out != local)
        free(out);
    if (rc != 0) {
        *reason = px_reason_from_path(rc);
        return 400;
    }
    if (t == NULL) {
        *reason = PX_R_OUT_OF_MEMORY;
        return 500;
    }
    rq->target = t;
    rq->target_len = outlen;
    rq->path_len = pathlen;
    return path_params(rq, ctx, reason);
}

static int build_authority(struct px_request *rq, const struct seen *sn, enum px_reason *reason)
{
    struct px_authority a, b;
    const char *src = rq->raw_authority;
    size_t srclen = rq->raw_authority_len;
    char *s;

    if (sn->nhost > 1) {
        *reason = PX_R_BAD_HOST;
        return 400;
    }
    if (src == NULL && sn->host.name != NULL) {
        src = sn->host.value;
        srclen = sn->host.vlen;
    }
    if (src == NULL) {
        *reason = PX_R_MISSING_HOST;
        return 400;
    }
    if (px_authority_parse(src, srclen, &a) != 0) {
        *reason = PX_R_BAD_HOST;
        return 400;
    }
    if (rq->raw_authority != NULL && sn->host.name != NULL) {
        /* RFC 9113 8.3.1: a Host naming another entity than :authority */
        if (px_authority_parse(sn->host.value, sn->host.vlen, &b) != 0 ||
            strcmp(a.text, b.text) != 0) {
            *reason = PX_R_CONFLICTING_HOST;
            return 400;
        }
    }
    s = px_hdrs_strdup(&rq->hdrs, a.text, a.text_len);
    if (s == NULL) {
        *reason = PX_R_OUT_OF_MEMORY;
        return 500;
    }
    rq->authority = s;
    rq->authority_len = a.text_len;
    rq->host = s;
    rq->host_len = a.host_len; /* the host is the authority's first part */
    rq->port = a.port;
    return 0;
}

static int build_content_length(struct px_request *rq, const struct seen *sn, enum px_reason *reason)
{
    uint64_t v = 0;
    if (sn->clen.name == NULL)
        return 0;
    if (sn->clen_conflict || sn->clen.vlen == 0 || sn->clen.vlen > 18)
        goto bad;
    for (size_t i = 0; i < sn->clen.vlen; i++) {
        char c = sn->clen.value[i];
        if (!is_digit(c))
            goto bad;
        v = v * 10 + (uint64_t)(c - '0');
    }
    if (rq->content_length >= 0 && (uint64_t)rq->content_length != v)
        goto bad; /* the framing layer read another length */
    rq->content_length = (int64_t)v;
    return 0;
bad:
    *reason = PX_R_BAD_CONTENT_LENGTH;
    return 400;
}

static int add_own(struct px_request *rq, const char *name, size_t nlen, const char *v, size_t vlen)
{
    return px_hdrs_add(&rq->hdrs, name, nlen, v, vlen, 0);
}

/* A WebSocket opening request. On HTTP/1.1 (RFC 6455 4.1): a GET whose
 * Upgrade lists "websocket" and whose Connection names "upgrade"; any
 * other upgrade token is dropped with the hop-by-hop fields, and the
 * request goes on as a plain one. It must carry one valid
 * Sec-WebSocket-Key and no body. On HTTP/2 the extended CONNECT already
 * said so. The canonical request then carries "upgrade: websocket", which
 * the policy and the authorization service see and each upstream
 * serializer turns into its protocol's form. */
static int build_upgrade(struct px_request *rq, const struct px_request_ctx *ctx,
                         const struct seen *sn, enum px_reason *reason)
{
    if (!rq->upgrade) {
        if (!sn->upgrade_ws || ctx->http10 || rq->method_len != 3 ||
            memcmp(rq->method, "GET", 3) != 0)
            return 0;
        if (sn->nws_key != 1 ||
            !px_ws_key_ok(rq->hdrs.v[sn->ws_key].value, rq->hdrs.v[sn->ws_key].vlen) ||
            ctx->body_follows || rq->content_length > 0) {
            *reason = PX_R_BAD_UPGRADE;
            return 400;
        }
        rq->upgrade = 1;
    }
    if (sn->ws_key >= 0) {
        rq->ws_key = rq->hdrs.v[sn->ws_key].value;
        rq->ws_key_len = rq->hdrs.v[sn->ws_key].vlen;
    }
    if (add_own(rq, "upgrade", 7, "websocket", 9) != 0) {
        *reason = PX_R_OUT_OF_MEMORY;
        return 500;
    }
    rq->expect_continue = 0;
    return 0;
}

/* Appends ", <piece>" to field i's value (a trusted forwarder's list). */
static int extend_field(struct px_request *rq, size_t i, const char *piece, size_t plen)
{
    struct px_hdr *f = &rq->hdrs.v[i];
    char *nv = px_hdrs_alloc(&rq->hdrs, f->vlen + 2 + plen);
    if (nv == NULL)
        return -1;
    memcpy(nv, f->value, f->vlen);
    memcpy(nv + f->vlen, ", ", 2);
    memcpy(nv + f->vlen + 2, piece, plen);
    nv[f->vlen + 2 + plen] = '\0';
    rq->hdrs.bytes += 2 + plen;
    f->value = nv;
    f->vlen += 2 + plen;
    return 0;
}

/* Joins every field named name (lowercase) into its first occurrence with
 * ", " (RFC 9110 5.3: one list), so an app reading one line reads all of
 * it. Returns the index of that field, -1 when there is none, -2 when out
 * of memory. Two passes over the list. */
static ssize_t merge_fields(struct px_hdrs *h, const char *name, size_t nlen)
{
    size_t total = 0, count = 0, o = 0;
    ssize_t first = -1;
    char *buf;

    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].nlen == nlen && memcmp(h->v[i].name, name, nlen) == 0) {
            total += h->v[i].vlen + (count ? 2 : 0);
            if (count++ == 0)
                first = (ssize_t)i;
        }
    if (count < 2)
        return first;
    if ((buf = px_hdrs_alloc(h, total)) == NULL)
        return -2;
    for (size_t i = 0, k = 0; i < h->n; i++) {
        struct px_hdr f = h->v[i];
        if (f.nlen == nlen && memcmp(f.name, name, nlen) == 0) {
            if (k > 0) {
                memcpy(buf + o, ", ", 2);
                o += 2;
            }
            memcpy(buf + o, f.value, f.vlen);
            o += f.vlen;
            if (k++ > 0)
                continue; /* merged into the first */
            f.value = buf;
        }
        h->v[i - (k > 1 ? k - 1 : 0)] = f;
    }
    h->n -= count - 1;
    h->v[first].vlen = total;
    buf[total] = '\0';
    h->bytes = 0;
    for (size_t i = 0; i < h->n; i++)
        h->bytes += h->v[i].nlen + h->v[i].vlen + 32;
    return first;
}

static int identity_headers(struct px_request *rq, const struct px_request_ctx *ctx,
                            const struct seen *sn)
{
    const char *ip = ctx->peer_ip != NULL ? ctx->peer_ip : "";
    size_t iplen = strlen(ip);
    char xfcc[4400], fwd[80];
    ssize_t xff = -1, fw = -1;
    int n;

    if (!sn->has_rid) {
        px_request_id_new(rq->request_id);
        if (add_own(rq, "x-request-id", 12, rq->request_id, strlen(rq->request_id)) != 0)
            return -1;
    }
    if (ctx->outbound)
        return 0; /* leaving the pod: the remote sidecar writes its own from our SVID */
    if (add_own(rq, "x-forwarded-proto", 17, ctx->tls ? "https" : "http", ctx->tls ? 5 : 4) != 0)
        return -1;
    if (ctx->tls && ctx->peer_id != NULL && ctx->peer_id[0] != '\0') {
        /* the connection's (built once per connection), or built here */
        const char *v = ctx->xfcc;
        size_t vlen = ctx->xfcc_len;
        if (v == NULL) {
            n = px_xfcc_build(xfcc, sizeof(xfcc), ctx->own_id ? ctx->own_id : "",
                              ctx->peer_cert_hash, ctx->peer_id);
            v = xfcc;
            vlen = n > 0 ? (size_t)n : 0;
        }
        if (vlen == 0 || add_own(rq, "x-forwarded-client-cert", 23, v, vlen) != 0)
            return -1; /* an identity header picket cannot write: refuse, never omit */
    }
    if (iplen == 0)
        return 0;
    /* A trusted forwarder's lists, each as one field, with this hop added.
     * Each merge moves the fields after it, so each list is merged and
     * extended before the next is merged. */
    if (sn->xff >= 0 && (xff = merge_fields(&rq->hdrs, "x-forwarded-for", 15)) == -2)
        return -1;
    if (xff >= 0) {
        if (extend_field(rq, (size_t)xff, ip, iplen) != 0)
            return -1;
    } else if (add_own(rq, "x-forwarded-for", 15, ip, iplen) != 0) {
        return -1;
    }
    if (sn->fwd >= 0 && (fw = merge_fields(&rq->hdrs, "forwarded", 9)) == -2)
        return -1;
    if (fw >= 0) {
        /* RFC 7239 6: an IPv6 node is quoted and bracketed */
        n = snprintf(fwd, sizeof(fwd), strchr(ip, ':') ? "for=\"[%s]\"" : "for=%s", ip);
        if (n < 0 || (size_t)n >= sizeof(fwd) || extend_field(rq, (size_t)fw, fwd, (size_t)n))
            return -1;
    }
    return 0;
}

int px_request_build(struct px_request *rq, const struct px_request_ctx *ctx,
                     enum px_reason *reason)
{
    struct seen sn;
    int rc;
    char *m;

    *reason = PX_R_NONE;
    if (rq->limit_status != 0) {
        *reason = rq->limit_reason;
        return rq->limit_status;
    }
    rq->scheme = ctx->tls ? "https" : "http";
    if (rq->raw_protocol != NULL) {
        /* HTTP/2 extended CONNECT (RFC 8441): nghttp2 let :protocol through
         * only on a CONNECT with :scheme and :path. A WebSocket is judged,
         * routed and sent on as the GET that opens it on HTTP/1.1. */
        if (rq->raw_method == NULL || rq->raw_method_len != 7 ||
            memcmp(rq->raw_method, "CONNECT", 7) != 0 ||
            !value_is(rq->raw_protocol, rq->raw_protocol_len, "websocket")) {
            *reason = PX_R_BAD_UPGRADE;
            return 400;
        }
        rq->upgrade = 1;
        rq->method = "GET";
        rq->method_len = 3;
    } else {
        if (rq->raw_method == NULL || !px_method_ok(rq->raw_method, rq->raw_method_len)) {
            *reason = PX_R_BAD_METHOD;
            return 400;
        }
        m = px_hdrs_strdup(&rq->hdrs, rq->raw_method, rq->raw_method_len);
        if (m == NULL)
            goto oom;
        rq->method = m;
        rq->method_len = rq->raw_method_len;
    }
    if ((rc = build_target(rq, ctx, reason)) != 0)
        return rc;
    if ((rc = filter_fields(rq, &rq->hdrs, ctx, 0, &sn, reason)) != 0)
        return rc;
    if ((rc = build_authority(rq, &sn, reason)) != 0)
        return rc;
    if ((rc = build_content_length(rq, &sn, reason)) != 0)
        return rc;
    if (sn.expect.name != NULL) {
        if (!value_is(sn.expect.value, sn.expect.vlen, "100-continue")) {
            *reason = PX_R_BAD_EXPECT; /* RFC 9110 10.1.1: an expectation we cannot meet */
            return 417;
        }
        rq->expect_continue = ctx->body_follows && !ctx->http10;
    }
    if ((rc = build_upgrade(rq, ctx, &sn, reason)) != 0)
        return rc;
    if (identity_headers(rq, ctx, &sn) != 0)
        goto oom;
    rq->built = 1;
    return 0;
oom:
    *reason = PX_R_OUT_OF_MEMORY;
    return 500;
}

int px_request_build_trailers(struct px_request *rq, const struct px_request_ctx *ctx,
                              enum px_reason *reason)
{
    struct seen sn;
    *reason = PX_R_NONE;
    if (rq->limit_status != 0) {
        *reason = rq->limit_reason;
        return rq->limit_status;
    }
    return filter_fields(rq, &rq->trailers, ctx, 1, &sn, reason);
}

void px_request_policy_input(const struct px_request *rq, const char *peer,
                             struct policy_header *hbuf, struct policy_request *out)
{
    memset(out, 0, sizeof(*out));
    out->peer = peer;
    out->peer_len = peer != NULL ? strlen(peer) : 0;
    out->method = rq->method;
    out->method_len = rq->method_len;
    out->authority = rq->host; /* canonical: no port, no trailing dot */
    out->authority_len = rq->host_len;
    out->path = rq->match_path;
    out->path_len = rq->match_path_len;
    for (size_t i = 0; i < rq->hdrs.n; i++) {
        hbuf[i].name = rq->hdrs.v[i].name;
        hbuf[i].name_len = rq->hdrs.v[i].nlen;
        hbuf[i].value = rq->hdrs.v[i].value;
        hbuf[i].value_len = rq->hdrs.v[i].vlen;
    }
    out->headers = hbuf;
    out->nheaders = rq->hdrs.n;
}
