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

/* ---- request IDs -------------------------------------------------------------------- */

/* Request IDs need to be unique, not secret (they correlate logs and
 * travel in clear headers). OpenSSL's DRBG cost ~6,600 instructions per ID
 * (callgrind: 10% of a request with logs off); each thread seeds a
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

static void rid_seed(void)
{
    if (RAND_bytes((unsigned char *)rid_state, sizeof(rid_state)) != 1) {
        /* No entropy: still unique per thread and start, which is all an
         * ID needs (splitmix64 spreads the inputs over the state). */
        struct timespec ts;
        uint64_t x;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid() ^
            (uint64_t)(uintptr_t)&rid_state;
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

void px_request_id_new(char *out)
{
    unsigned char r[16];
    static const char hex[] = "0123456789abcdef";
    uint64_t a, b;

    if (!rid_seeded)
        rid_seed();
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
            *out++ = '-';
        *out++ = hex[r[i] >> 4];
        *out++ = hex[r[i] & 15];
    }
    *out = '\0';
}

int px_request_id_ok(const char *v, size_t n)
{
    if (n == 0 || n >= 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] <= 0x20 || v[i] >= 0x7f || v[i] == '"' || v[i] == '\\')
            return 0;
    return 1;
}

/* ---- collecting ---------------------------------------------------------------------- */

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
        rq->limit_reason = "headers_too_large";
        return -3;
    }
    if (rq->limit_status != 0)
        return -1;
    if (++*count > (size_t)cfg->limits.max_headers) {
        rq->limit_status = 431;
        rq->limit_reason = "too_many_headers";
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

/* ---- field classes ----------------------------------------------------------------------- */

enum fclass {
    FC_OTHER,
    FC_HOP,      /* hop-by-hop: never forwarded */
    FC_TE,       /* te: only "trailers" survives */
    FC_HOST,     /* consumed into the authority */
    FC_CLEN,     /* consumed into content_length (picket frames bodies itself) */
    FC_EXPECT,   /* answered by picket */
    FC_OWNED,    /* identity fields only picket writes */
    FC_FWD,      /* forwarding fields: kept only from trusted forwarders */
    FC_RID,      /* x-request-id */
    FC_COOKIE,
    FC_CTYPE     /* content-type: kept, tells gRPC apart */
};

#define NAME_IS(s) (n == sizeof(s) - 1 && memcmp(k, s, sizeof(s) - 1) == 0)

/* Classifies a field by its name with '_' read as '-' (what CGI, WSGI and
 * Rack turn both into), so "x_forwarded_client_cert" is the identity field
 * it is dressed up as. *underscore says whether the name had one. */
static enum fclass classify(const char *name, size_t n, int *underscore)
{
    char k[24];
    *underscore = memchr(name, '_', n) != NULL;
    if (n >= 9) {
        for (size_t i = 0; i < 9; i++)
            k[i] = name[i] == '_' ? '-' : name[i];
        if (memcmp(k, "x-picket-", 9) == 0)
            return FC_OWNED;
    }
    if (n > sizeof(k))
        return FC_OTHER;
    for (size_t i = 0; i < n; i++)
        k[i] = name[i] == '_' ? '-' : name[i];
    switch (n) {
    case 2:
        return NAME_IS("te") ? FC_TE : FC_OTHER;
    case 4:
        return NAME_IS("host") ? FC_HOST : FC_OTHER;
    case 6:
        return NAME_IS("cookie") ? FC_COOKIE : NAME_IS("expect") ? FC_EXPECT : FC_OTHER;
    case 7:
        return NAME_IS("upgrade") ? FC_HOP : FC_OTHER;
    case 9:
        return NAME_IS("forwarded") || NAME_IS("x-real-ip") ? FC_FWD : FC_OTHER;
    case 10:
        return NAME_IS("connection") || NAME_IS("keep-alive") ? FC_HOP : FC_OTHER;
    case 12:
        return NAME_IS("x-request-id") ? FC_RID : NAME_IS("content-type") ? FC_CTYPE : FC_OTHER;
    case 14:
        return NAME_IS("content-length") ? FC_CLEN : NAME_IS("http2-settings") ? FC_HOP : FC_OTHER;
    case 15:
        return NAME_IS("x-forwarded-for") ? FC_FWD : FC_OTHER;
    case 16:
        return NAME_IS("proxy-connection") ? FC_HOP
               : NAME_IS("x-forwarded-host") || NAME_IS("x-forwarded-port") ? FC_FWD
                                                                             : FC_OTHER;
    case 17:
        return NAME_IS("transfer-encoding") ? FC_HOP
               : NAME_IS("x-forwarded-proto") ? FC_OWNED
                                              : FC_OTHER;
    case 18:
        return NAME_IS("proxy-authenticate") ? FC_HOP : FC_OTHER;
    case 19:
        return NAME_IS("proxy-authorization") ? FC_HOP : FC_OTHER;
    case 23:
        return NAME_IS("x-forwarded-client-cert") ? FC_OWNED : FC_OTHER;
    default:
        return FC_OTHER;
    }
}

#undef NAME_IS

int px_trailer_allowed(const char *name, size_t n)
{
    static const char *const deny[] = {"authorization", "content-type", "content-encoding",
                                       "trailer", "www-authenticate", "set-cookie"};
    int us;
    if (classify(name, n, &us) != FC_OTHER || px_is_hop_by_hop(name, n))
        return 0;
    for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]); i++)
        if (strlen(deny[i]) == n && strncasecmp(deny[i], name, n) == 0)
            return 0;
    return 1;
}

void px_trailers_filter(struct px_hdrs *h)
{
    for (size_t i = 0; i < h->n;) {
        if (!px_trailer_allowed(h->v[i].name, h->v[i].nlen)) {
            px_hdrs_remove_at(h, i);
            continue;
        }
        i++;
    }
}

/* ---- Connection tokens: a hash set built once per section ------------------------- */

struct tokset {
    struct tok { const char *p; size_t n; } *slot;
    size_t mask;
    struct tok local[64];
};

static uint64_t hash_lower(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        h = (h ^ c) * 1099511628211ULL;
    }
    return h;
}

static void tok_insert(struct tokset *s, const char *p, size_t n)
{
    size_t i = (size_t)hash_lower(p, n) & s->mask;
    while (s->slot[i].p != NULL) {
        if (s->slot[i].n == n && strncasecmp(s->slot[i].p, p, n) == 0)
            return;
        i = (i + 1) & s->mask;
    }
    s->slot[i].p = p;
    s->slot[i].n = n;
}

static int tok_has(const struct tokset *s, const char *p, size_t n)
{
    size_t i;
    if (s->slot == NULL)
        return 0;
    i = (size_t)hash_lower(p, n) & s->mask;
    while (s->slot[i].p != NULL) {
        if (s->slot[i].n == n && strncasecmp(s->slot[i].p, p, n) == 0)
            return 1;
        i = (i + 1) & s->mask;
    }
    return 0;
}

/* Calls fn for each token of a Connection value (RFC 9110 7.6.1:
 * #connection-option, comma-separated with optional whitespace). */
#define FOR_EACH_TOKEN(v, vlen, tp, tn, body)                                                      \
    do {                                                                                           \
        const char *p_ = (v), *e_ = (v) + (vlen);                                                  \
        while (p_ < e_) {                                                                          \
            while (p_ < e_ && (*p_ == ',' || *p_ == ' ' || *p_ == '\t'))                           \
                p_++;                                                                              \
            tp = p_;                                                                               \
            while (p_ < e_ && *p_ != ',' && *p_ != ' ' && *p_ != '\t')                             \
                p_++;                                                                              \
            tn = (size_t)(p_ - tp);                                                                \
            if (tn > 0) {                                                                          \
                body;                                                                              \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* Builds the set of names the Connection fields of h list. Returns 0 or -1
 * (out of memory). */
static int tokset_build(struct tokset *s, const struct px_hdrs *h)
{
    size_t ntok = 0, cap = 16;
    const char *tp;
    size_t tn;

    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].nlen == 10 && memcmp(h->v[i].name, "connection", 10) == 0)
            FOR_EACH_TOKEN(h->v[i].value, h->v[i].vlen, tp, tn, ntok++);
    if (ntok == 0)
        return 0;
    while (cap < 2 * ntok)
        cap *= 2;
    if (cap <= sizeof(s->local) / sizeof(s->local[0])) {
        s->slot = s->local;
        cap = sizeof(s->local) / sizeof(s->local[0]);
    } else if ((s->slot = calloc(cap, sizeof(*s->slot))) == NULL) {
        return -1;
    }
    s->mask = cap - 1;
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].nlen == 10 && memcmp(h->v[i].name, "connection", 10) == 0)
            FOR_EACH_TOKEN(h->v[i].value, h->v[i].vlen, tp, tn, tok_insert(s, tp, tn));
    return 0;
}

static void tokset_free(struct tokset *s)
{
    if (s->slot != NULL && s->slot != s->local)
        free(s->slot);
}

void px_response_fields_filter(struct px_hdrs *h)
{
    struct tokset ts;
    size_t o = 0;
    if (tokset_build(&ts, h) != 0)
        ts.slot = NULL; /* out of memory: still drop the hop-by-hop fields */
    for (size_t i = 0; i < h->n; i++) {
        const struct px_hdr *f = &h->v[i];
        if (px_is_hop_by_hop(f->name, f->nlen) || tok_has(&ts, f->name, f->nlen) ||
            (f->nlen == 14 && memcmp(f->name, "content-length", 14) == 0)) {
            h->bytes -= f->nlen + f->vlen + 32;
            continue;
        }
        h->v[o++] = *f;
    }
    h->n = o;
    tokset_free(&ts);
}

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
};

/* The one pass over a section (headers, or trailers when `trailers`).
 * Drops in place what must not travel, records what is consumed. Returns 0
 * or an HTTP status with *reason. */
static int filter_fields(struct px_request *rq, struct px_hdrs *h, const struct px_request_ctx *ctx,
                         int trailers, struct seen *sn, const char **reason)
{
    enum px_underscores us_mode = ctx->lc != NULL ? (enum px_underscores)ctx->lc->underscores
                                                  : PX_US_DROP;
    int trusted = !ctx->outbound && trusted_forwarder(ctx);
    struct tokset ts;
    size_t o = 0, ncookie = 0, cookie_len = 0, bytes = 0;
    ssize_t cookie_at = -1;
    char *cookie_buf = NULL;
    int te_kept = 0, rc = 0;

    memset(sn, 0, sizeof(*sn));
    sn->xff = sn->fwd = -1;
    if (tokset_build(&ts, h) != 0) {
        *reason = "out_of_memory";
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
        enum fclass fc = classify(f.name, f.nlen, &us);

        /* One field syntax for both protocols, so no serializer ever has
         * a field to leave out: what the policy saw is what is sent. */
        if (!px_field_name_ok(f.name, f.nlen) || !px_field_value_ok(f.value, f.vlen) ||
            (f.vlen > 0 && (f.value[0] == ' ' || f.value[0] == '\t' ||
                            f.value[f.vlen - 1] == ' ' || f.value[f.vlen - 1] == '\t'))) {
            *reason = "bad_header";
            rc = 400;
            goto out;
        }

        if (us && fc != FC_OTHER && fc != FC_CTYPE) {
            keep = 0; /* a look-alike of a field with meaning: never */
        } else if (us && us_mode == PX_US_REJECT) {
            *reason = "header_with_underscore";
            rc = 400;
            goto out;
        } else if (us && us_mode == PX_US_DROP) {
            keep = 0;
        } else if (trailers) {
            keep = fc == FC_OTHER && !tok_has(&ts, f.name, f.nlen) &&
                   px_trailer_allowed(f.name, f.nlen);
        } else {
            switch (fc) {
            case FC_HOP:
            case FC_OWNED:
                break;
            case FC_TE:
                /* gRPC needs "te: trailers" end to end, the one TE value h2 allows */
                keep = !te_kept && value_is(f.value, f.vlen, "trailers");
                te_kept |= keep;
                if (keep && (f.vlen != 8 || memcmp(f.value, "trailers", 8) != 0)) {
                    /* sent as the one token it means: "te: trailers" */
                    if ((f.value = px_hdrs_strdup(h, "trailers", 8)) == NULL) {
                        *reason = "out_of_memory";
                        rc = 500;
                        goto out;
                    }
                    f.vlen = 8;
                }
                break;
            case FC_HOST:
                if (sn->nhost++ == 0)
                    sn->host = f;
                break;
            case FC_CLEN:
                if (sn->clen.name != NULL &&
                    (sn->clen.vlen != f.vlen || memcmp(sn->clen.value, f.value, f.vlen) != 0))
                    sn->clen_conflict = 1;
                sn->clen = f;
                break;
            case FC_EXPECT:
                sn->expect = f;
                break;
            case FC_FWD:
                keep = (ctx->outbound || trusted) && !tok_has(&ts, f.name, f.nlen);
                if (keep && f.nlen == 15)
                    sn->xff = (ssize_t)o;
                if (keep && f.nlen == 9 && f.name[0] == 'f')
                    sn->fwd = (ssize_t)o;
                break;
            case FC_RID:
                keep = !sn->has_rid && px_request_id_ok(f.value, f.vlen) &&
                       !tok_has(&ts, f.name, f.nlen);
                if (keep) {
                    memcpy(rq->request_id, f.value, f.vlen);
                    rq->request_id[f.vlen] = '\0';
                    sn->has_rid = 1;
                }
                break;
            case FC_COOKIE:
                if (f.vlen == 0 || tok_has(&ts, f.name, f.nlen))
                    break;
                keep = 1;
                if (ncookie < 2)
                    break;
                /* RFC 9113 8.2.3: crumbs become one field, "; " between */
                if (cookie_at < 0) {
                    if ((cookie_buf = px_hdrs_alloc(h, cookie_len)) == NULL) {
                        *reason = "out_of_memory";
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
            case FC_CTYPE:
                keep = !tok_has(&ts, f.name, f.nlen);
                if (keep && f.vlen >= 16 && strncasecmp(f.value, "application/grpc", 16) == 0)
                    rq->is_grpc = 1;
                break;
            case FC_OTHER:
                keep = !tok_has(&ts, f.name, f.nlen);
                break;
            }
        }
        if (keep)
            h->v[o++] = f;
    }
    if (cookie_buf != NULL)
        cookie_buf[h->v[cookie_at].vlen] = '\0';
    h->n = o;
    for (size_t i = 0; i < h->n; i++)
        bytes += h->v[i].nlen + h->v[i].vlen + 32;
    h->bytes = bytes;
out:
    tokset_free(&ts);
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
static int path_params(struct px_request *rq, const struct px_request_ctx *ctx, const char **reason)
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
            *reason = "dot_segment_params";
            return 400;
        }
    }
    if (!any)
        return 0;
    if (mode == PX_PP_REJECT) {
        *reason = "path_params";
        return 400;
    }
    /* keep: rules see every segment without its parameters */
    m = px_hdrs_strdup(&rq->hdrs, rq->target, rq->path_len);
    if (m == NULL) {
        *reason = "out_of_memory";
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
                        const char **reason)
{
    size_t inlen = rq->raw_target_len, outlen = 0, pathlen = 0;
    char local[3072], *out, *t;
    int rc;

    if (rq->raw_target == NULL || inlen == 0) {
        *reason = "malformed_request";
        return 400;
    }
    if (inlen > (size_t)ctx->cfg->limits.max_target_length) {
        *reason = "target_too_long";
        return 414;
    }
    if (rq->raw_target[0] != '/') {
        *reason = "bad_target"; /* origin-form only: no "*", absolute- or authority-form */
        return 400;
    }
    /* Visible ASCII only, path and query alike (RFC 3986 2, RFC 9112 3.2):
     * the rule HTTP/1.1's request line already imposes, now for :path too,
     * so no byte reaches an upstream that an HTTP/1.1 client could not send. */
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)rq->raw_target[i];
        if (c <= 0x20 || c >= 0x7f || c == '#') {
            *reason = c == '#' ? "fragment" : "bad_target";
            return 400;
        }
    }
    /* 3 x + 2 always holds the result (policy.h); most targets fit the stack */
    out = inlen * 3 + 2 <= sizeof(local) ? local : malloc(inlen * 3 + 2);
    if (out == NULL) {
        *reason = "out_of_memory";
        return 500;
    }
    rc = policy_path_normalize(rq->raw_target, inlen, out, inlen * 3 + 2, &outlen, &pathlen);
    t = rc == 0 ? px_hdrs_strdup(&rq->hdrs, out, outlen) : NULL;
    if (out != local)
        free(out);
    if (rc != 0) {
        *reason = policy_path_error_name(rc);
        return 400;
    }
    if (t == NULL) {
        *reason = "out_of_memory";
        return 500;
    }
    rq->target = t;
    rq->target_len = outlen;
    rq->path_len = pathlen;
    return path_params(rq, ctx, reason);
}

static int build_authority(struct px_request *rq, const struct seen *sn, const char **reason)
{
    struct px_authority a, b;
    const char *src = rq->raw_authority;
    size_t srclen = rq->raw_authority_len;
    char *s;

    if (sn->nhost > 1) {
        *reason = "bad_host";
        return 400;
    }
    if (src == NULL && sn->host.name != NULL) {
        src = sn->host.value;
        srclen = sn->host.vlen;
    }
    if (src == NULL) {
        *reason = "missing_host";
        return 400;
    }
    if (px_authority_parse(src, srclen, &a) != 0) {
        *reason = "bad_host";
        return 400;
    }
    if (rq->raw_authority != NULL && sn->host.name != NULL) {
        /* RFC 9113 8.3.1: a Host naming another entity than :authority */
        if (px_authority_parse(sn->host.value, sn->host.vlen, &b) != 0 ||
            strcmp(a.text, b.text) != 0) {
            *reason = "conflicting_host";
            return 400;
        }
    }
    s = px_hdrs_strdup(&rq->hdrs, a.text, a.text_len);
    if (s == NULL) {
        *reason = "out_of_memory";
        return 500;
    }
    rq->authority = s;
    rq->authority_len = a.text_len;
    rq->host = s;
    rq->host_len = a.host_len; /* the host is the authority's first part */
    rq->port = a.port;
    return 0;
}

static int build_content_length(struct px_request *rq, const struct seen *sn, const char **reason)
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
    *reason = "bad_content_length";
    return 400;
}

static int add_own(struct px_request *rq, const char *name, size_t nlen, const char *v, size_t vlen)
{
    return px_hdrs_add(&rq->hdrs, name, nlen, v, vlen, 0);
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
        n = px_xfcc_build(xfcc, sizeof(xfcc), ctx->own_id ? ctx->own_id : "",
                          ctx->peer_cert_hash, ctx->peer_id);
        if (n <= 0 || add_own(rq, "x-forwarded-client-cert", 23, xfcc, (size_t)n) != 0)
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
                     const char **reason)
{
    struct seen sn;
    int rc;
    char *m;

    *reason = NULL;
    if (rq->limit_status != 0) {
        *reason = rq->limit_reason;
        return rq->limit_status;
    }
    rq->scheme = ctx->tls ? "https" : "http";
    if (rq->raw_method == NULL || !px_method_ok(rq->raw_method, rq->raw_method_len)) {
        *reason = "bad_method";
        return 400;
    }
    m = px_hdrs_strdup(&rq->hdrs, rq->raw_method, rq->raw_method_len);
    if (m == NULL)
        goto oom;
    rq->method = m;
    rq->method_len = rq->raw_method_len;
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
            *reason = "bad_expect"; /* RFC 9110 10.1.1: an expectation we cannot meet */
            return 417;
        }
        rq->expect_continue = ctx->body_follows && !ctx->http10;
    }
    if (identity_headers(rq, ctx, &sn) != 0)
        goto oom;
    rq->built = 1;
    return 0;
oom:
    *reason = "out_of_memory";
    return 500;
}

int px_request_build_trailers(struct px_request *rq, const struct px_request_ctx *ctx,
                              const char **reason)
{
    struct seen sn;
    *reason = NULL;
    if (rq->limit_status != 0) {
        *reason = rq->limit_reason;
        return rq->limit_status;
    }
    return filter_fields(rq, &rq->trailers, ctx, 1, &sn, reason);
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
