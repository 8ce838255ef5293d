/*
 * fields.c - field classes, the trailer and response filters, and the set
 * of Connection tokens (fields.h). The request filter that uses them is in
 * gate/request.c.
 */
#include "fields.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- field classes ----------------------------------------------------------------------- */


#define NAME_IS(s) (n == sizeof(s) - 1 && memcmp(k, s, sizeof(s) - 1) == 0)

/* Classifies a field by its name with '_' read as '-' (what CGI, WSGI and
 * Rack turn both into), so "x_forwarded_client_cert" is the identity field
 * it is dressed up as. *underscore says whether the name had one. */
enum px_fclass px_field_class(const char *name, size_t n, int *underscore)
{
    char k[24];
    *underscore = memchr(name, '_', n) != NULL;
    if (n >= 9) {
        for (size_t i = 0; i < 9; i++)
            k[i] = name[i] == '_' ? '-' : name[i];
        if (memcmp(k, "x-picket-", 9) == 0)
            return PX_FC_OWNED;
    }
    if (n > sizeof(k))
        return PX_FC_OTHER;
    for (size_t i = 0; i < n; i++)
        k[i] = name[i] == '_' ? '-' : name[i];
    switch (n) {
    case 2:
        return NAME_IS("te") ? PX_FC_TE : PX_FC_OTHER;
    case 4:
        return NAME_IS("host") ? PX_FC_HOST : PX_FC_OTHER;
    case 6:
        return NAME_IS("cookie") ? PX_FC_COOKIE : NAME_IS("expect") ? PX_FC_EXPECT : PX_FC_OTHER;
    case 7:
        return NAME_IS("upgrade") ? PX_FC_HOP : PX_FC_OTHER;
    case 9:
        return NAME_IS("forwarded") || NAME_IS("x-real-ip") ? PX_FC_FWD : PX_FC_OTHER;
    case 10:
        return NAME_IS("connection") || NAME_IS("keep-alive") ? PX_FC_HOP : PX_FC_OTHER;
    case 12:
        return NAME_IS("x-request-id") ? PX_FC_RID : NAME_IS("content-type") ? PX_FC_CTYPE : PX_FC_OTHER;
    case 14:
        return NAME_IS("content-length") ? PX_FC_CLEN : NAME_IS("http2-settings") ? PX_FC_HOP : PX_FC_OTHER;
    case 15:
        return NAME_IS("x-forwarded-for") ? PX_FC_FWD : PX_FC_OTHER;
    case 16:
        return NAME_IS("proxy-connection") ? PX_FC_HOP
               : NAME_IS("x-forwarded-host") || NAME_IS("x-forwarded-port") ? PX_FC_FWD
                                                                             : PX_FC_OTHER;
    case 17:
        return NAME_IS("transfer-encoding") ? PX_FC_HOP
               : NAME_IS("x-forwarded-proto") ? PX_FC_OWNED
                                              : PX_FC_OTHER;
    case 18:
        return NAME_IS("proxy-authenticate") ? PX_FC_HOP : PX_FC_OTHER;
    case 19:
        return NAME_IS("proxy-authorization") ? PX_FC_HOP : PX_FC_OTHER;
    case 23:
        return NAME_IS("x-forwarded-client-cert") ? PX_FC_OWNED : PX_FC_OTHER;
    default:
        return PX_FC_OTHER;
    }
}

#undef NAME_IS

int px_trailer_allowed(const char *name, size_t n)
{
    static const char *const deny[] = {"authorization", "content-type", "content-encoding",
                                       "trailer", "www-authenticate", "set-cookie"};
    int us;
    if (px_field_class(name, n, &us) != PX_FC_OTHER || px_is_hop_by_hop(name, n))
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

static void tok_insert(struct px_tokset *s, const char *p, size_t n)
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

int px_tokset_has(const struct px_tokset *s, const char *p, size_t n)
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
int px_tokset_build(struct px_tokset *s, const struct px_hdrs *h)
{
    size_t ntok = 0, cap = 16;
    const char *tp;
    size_t tn;

    s->slot = NULL; /* the empty set; the slots are cleared only when used */
    s->mask = 0;
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].nlen == 10 && memcmp(h->v[i].name, "connection", 10) == 0)
            FOR_EACH_TOKEN(h->v[i].value, h->v[i].vlen, tp, tn, ntok++);
    if (ntok == 0)
        return 0;
    while (cap < 2 * ntok)
        cap *= 2;
    if (cap <= sizeof(s->local) / sizeof(s->local[0])) {
        s->slot = s->local;
        memset(s->local, 0, cap * sizeof(s->local[0]));
    } else if ((s->slot = calloc(cap, sizeof(*s->slot))) == NULL) {
        return -1;
    }
    s->mask = cap - 1;
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].nlen == 10 && memcmp(h->v[i].name, "connection", 10) == 0)
            FOR_EACH_TOKEN(h->v[i].value, h->v[i].vlen, tp, tn, tok_insert(s, tp, tn));
    return 0;
}

int px_field_never_indexed(const char *name, size_t n)
{
    return n == 12 && memcmp(name, "x-request-id", 12) == 0;
}

int px_list_has_token(const char *v, size_t vlen, const char *tok)
{
    const char *tp;
    size_t tn, n = strlen(tok);
    int found = 0;
    FOR_EACH_TOKEN(v, vlen, tp, tn, found |= tn == n && strncasecmp(tp, tok, n) == 0);
    return found;
}

void px_tokset_free(struct px_tokset *s)
{
    if (s->slot != NULL && s->slot != s->local)
        free(s->slot);
}

void px_response_fields_filter(struct px_hdrs *h)
{
    struct px_tokset ts;
    size_t o = 0;
    if (px_tokset_build(&ts, h) != 0)
        ts.slot = NULL; /* out of memory: still drop the hop-by-hop fields */
    for (size_t i = 0; i < h->n; i++) {
        const struct px_hdr *f = &h->v[i];
        if (px_is_hop_by_hop(f->name, f->nlen) || px_tokset_has(&ts, f->name, f->nlen) ||
            (f->nlen == 14 && memcmp(f->name, "content-length", 14) == 0)) {
            h->bytes -= f->nlen + f->vlen + 32;
            continue;
        }
        h->v[o++] = *f;
    }
    h->n = o;
    px_tokset_free(&ts);
}


int px_grpc_timeout_parse(const char *p, size_t n, int64_t *us)
{
    int64_t v = 0, mul;
    if (n < 2 || n > 9)
        return -1;
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0'); /* at most 8 digits: no overflow */
    }
    if (v == 0)
        return -1;
    switch (p[n - 1]) {
    case 'H': mul = 3600LL * 1000000; break;
    case 'M': mul = 60LL * 1000000; break;
    case 'S': mul = 1000000; break;
    case 'm': mul = 1000; break;
    case 'u': mul = 1; break;
    case 'n': *us = (v + 999) / 1000; return 0;
    default: return -1;
    }
    *us = v * mul; /* 99999999 H is 3.6e17 us: fits in int64_t */
    return 0;
}
