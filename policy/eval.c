/*
 * eval.c - evaluates one request against a compiled engine (see the top of
 * compile.c for how the indexes work). Read-only on the engine and
 * allocation-free: candidate lists are gathered into a fixed array on the
 * stack, so any number of threads can evaluate at once.
 */
#include "policy.h"

#include <string.h>

#include "eval-t.h"

/* Identity lists for one request: exact, any, none, and one per matching
 * ancestor prefix of the peer ID. Past this many ancestor hits the identity
 * side is abandoned for the path side, which is always a complete superset
 * too, so the bound costs speed in a pathological bundle, never correctness. */
#define MAX_A_LISTS 32

struct cand {
    struct policy_list l[MAX_A_LISTS];
    size_t n;
    size_t total;
    int overflow;
};

static void cand_add(struct cand *c, const uint32_t *v, uint32_t n)
{
    if (n == 0)
        return;
    if (c->n == MAX_A_LISTS) {
        c->overflow = 1;
        return;
    }
    c->l[c->n].v = v;
    c->l[c->n].n = n;
    c->n++;
    c->total += n;
}

static void cand_add_slot(struct cand *c, const struct policy_table *t, const struct policy_slot *s)
{
    if (s != NULL)
        cand_add(c, t->lists + s->off, s->cnt);
}

/* memcmp that tolerates NULL with length 0 (request fields may be empty). */
static int bytes_eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static int lower_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (x != y) /* y is already lowercase */
            return 0;
    }
    return 1;
}

/* Host part of an authority: "[::1]:443" -> "[::1]", "a.b:80" -> "a.b",
 * and a trailing root dot dropped ("a.b." -> "a.b"). */
static void strip_port(const char *a, size_t n, const char **host, size_t *hlen)
{
    size_t i;
    if (n > 0 && a[0] == '[') {
        const char *rb = memchr(a, ']', n);
        n = rb != NULL ? (size_t)(rb - a) + 1 : n;
    } else {
        for (i = n; i > 0 && a[i - 1] >= '0' && a[i - 1] <= '9'; i--)
            ;
        if (i > 0 && a[i - 1] == ':')
            n = i - 1;
        if (n > 1 && a[n - 1] == '.')
            n--;
    }
    *host = a;
    *hlen = n;
}

static int from_match(const struct policy_rule *r, const char *peer, size_t plen)
{
    if (r->nfrom == 0)
        return 1;
    for (uint32_t i = 0; i < r->nfrom; i++) {
        const struct policy_from *f = &r->from[i];
        switch (f->kind) {
        case POLICY_FROM_ANY:
            if (plen > 0)
                return 1;
            break;
        case POLICY_FROM_EXACT:
            if (bytes_eq(peer, plen, f->id.p, f->id.n))
                return 1;
            break;
        case POLICY_FROM_SUBTREE:
            if (plen > f->id.n + 1 && peer[f->id.n] == '/' && memcmp(peer, f->id.p, f->id.n) == 0)
                return 1;
            break;
        }
    }
    return 0;
}

static int host_match(const struct policy_rule *r, const char *h, size_t hlen)
{
    if (r->nhosts == 0)
        return 1;
    for (uint32_t i = 0; i < r->nhosts; i++) {
        const struct policy_host *p = &r->hosts[i];
        if (p->suffix ? (hlen > p->name.n && lower_eq(h + hlen - p->name.n, p->name.p, p->name.n))
                      : (hlen == p->name.n && lower_eq(h, p->name.p, hlen)))
            return 1;
    }
    return 0;
}

static int method_match(const struct policy_rule *r, const char *m, size_t mlen)
{
    if (r->nmethods == 0)
        return 1;
    for (uint32_t i = 0; i < r->nmethods; i++)
        if (bytes_eq(r->methods[i].p, r->methods[i].n, m, mlen))
            return 1;
    return 0;
}

/* Path segments: the bytes between '/'s after the leading one; "/" is one
 * empty segment and "/a/" is "a" then an empty one. */
static int pattern_match(const struct policy_path_pat *pp, const char *p, size_t n)
{
    size_t pos = 1;
    for (uint32_t k = 0; k < pp->nsegs; k++) {
        const struct policy_str *s = &pp->segs[k];
        const char *slash;
        size_t e;
        if (pos > n)
            return 0; /* request has fewer segments */
        slash = memchr(p + pos, '/', n - pos);
        e = slash != NULL ? (size_t)(slash - p) : n;
        if (s->n == 1 && s->p[0] == '*') {
            if (e == pos)
                return 0; /* '*' needs a non-empty segment */
        } else if (e - pos != s->n || memcmp(p + pos, s->p, s->n) != 0) {
            return 0;
        }
        pos = e + 1;
    }
    return pp->globstar || pos > n;
}

static int path_match(const struct policy_rule *r, const char *p, size_t n)
{
    if (r->npaths == 0)
        return 1;
    if (n == 0 || p[0] != '/')
        return 0;
    for (uint32_t i = 0; i < r->npaths; i++)
        if (pattern_match(&r->paths[i], p, n))
            return 1;
    return 0;
}

/* Allow and dispatch rules need every occurrence of a listed header to carry
 * an allowed value; deny rules fire on any occurrence that does. Either way
 * a client that repeats a header cannot widen its access. */
static int headers_match(const struct policy_rule *r, const struct policy_request *q)
{
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const struct policy_hdr_match *h = &r->headers[i];
        int seen_ok = 0;
        for (size_t k = 0; k < q->nheaders; k++) {
            const struct policy_header *rh = &q->headers[k];
            int ok = 0;
            if (!bytes_eq(rh->name, rh->name_len, h->name.p, h->name.n))
                continue;
            for (uint32_t v = 0; v < h->nvalues && !ok; v++)
                ok = bytes_eq(h->values[v].p, h->values[v].n, rh->value, rh->value_len);
            if (ok)
                seen_ok = 1;
            else if (r->action != POLICY_DENY)
                return 0;
        }
        if (!seen_ok)
            return 0;
    }
    return 1;
}

struct req_view {
    const struct policy_request *q;
    const char *host;
    size_t hlen;
};

static int rule_match(const struct policy_rule *r, const struct req_view *v)
{
    const struct policy_request *q = v->q;
    return from_match(r, q->peer, q->peer_len) && method_match(r, q->method, q->method_len) &&
           path_match(r, q->path, q->path_len) && host_match(r, v->host, v->hlen) &&
           headers_match(r, q);
}

/* Identity side: lists from exact ID, every ancestor prefix, "*", none. */
static void gather_identity(const struct policy_engine *e, const struct policy_request *q,
                            struct cand *a)
{
    const char *p = q->peer;
    size_t n = q->peer_len;
    uint64_t h = POLICY_HASH_INIT;

    if (n > 0) {
        if (e->from_prefix.slots != NULL && n > 9 && memcmp(p, "spiffe://", 9) == 0) {
            for (size_t i = 0; i < n; i++) {
                /* the running hash at a '/' is the hash of p[0..i) */
                if (i > 9 && p[i] == '/' && i <= e->max_prefix_len)
                    cand_add_slot(a, &e->from_prefix,
                                  policy_table_find(&e->from_prefix, p, i, h));
                h = policy_hash_step(h, (unsigned char)p[i]);
            }
        } else {
            for (size_t i = 0; i < n; i++) /* no subtree rule: the whole ID's hash only */
                h = policy_hash_step(h, (unsigned char)p[i]);
        }
        cand_add_slot(a, &e->from_exact, policy_table_find(&e->from_exact, p, n, h));
        cand_add(a, e->from_any.v, e->from_any.n);
    }
    cand_add(a, e->from_none.v, e->from_none.n);
}

/* Path side: rules filed under the first segment, wildcard-first, no paths. */
static void gather_path(const struct policy_engine *e, const struct policy_request *q,
                        struct cand *b)
{
    cand_add(b, e->seg_none.v, e->seg_none.n);
    if (q->path_len > 0 && q->path[0] == '/') {
        const char *s = q->path + 1;
        const char *slash = memchr(s, '/', q->path_len - 1);
        size_t n = slash != NULL ? (size_t)(slash - s) : q->path_len - 1;
        cand_add(b, e->seg_wild.v, e->seg_wild.n);
        cand_add_slot(b, &e->seg_lit, policy_table_find(&e->seg_lit, s, n, policy_hash(s, n)));
    }
}

enum policy_verdict policy_eval(const struct policy_engine *eng, const struct policy_request *req,
                                struct policy_decision *why)
{
    /* l[] is written before it is read: only the counts start at zero (a
     * zeroed pair of these was a tenth of an evaluation) */
    struct cand a, b;
    const struct cand *use;
    struct req_view v = {.q = req};
    uint32_t best[3] = {UINT32_MAX, UINT32_MAX, UINT32_MAX};
    enum policy_verdict verdict = eng->def;
    const struct policy_rule *winner = NULL;

    a.n = a.total = 0;
    a.overflow = 0;
    b.n = b.total = 0;
    b.overflow = 0;
    strip_port(req->authority, req->authority_len, &v.host, &v.hlen);
    gather_identity(eng, req, &a);
    gather_path(eng, req, &b);
    use = (!a.overflow && a.total <= b.total) ? &a : &b;

    for (size_t li = 0; li < use->n; li++) {
        const struct policy_list *l = &use->l[li];
        for (uint32_t k = 0; k < l->n; k++) {
            const struct policy_rule *r = &eng->rules[l->v[k]];
            if (r->index >= best[r->action])
                continue; /* an earlier rule of this action already matched */
            if (rule_match(r, &v))
                best[r->action] = r->index;
        }
    }
    if (best[POLICY_DENY] != UINT32_MAX)
        winner = &eng->rules[best[POLICY_DENY]];
    else if (best[POLICY_DISPATCH] != UINT32_MAX)
        winner = &eng->rules[best[POLICY_DISPATCH]];
    else if (best[POLICY_ALLOW] != UINT32_MAX)
        winner = &eng->rules[best[POLICY_ALLOW]];
    if (winner != NULL)
        verdict = winner->action;
    if (why != NULL) {
        why->verdict = verdict;
        why->rule_id = winner != NULL ? winner->id : "default";
        why->dispatch = winner != NULL ? winner->dispatch : NULL;
        why->is_default = winner == NULL;
        why->audit = eng->mode == POLICY_MODE_AUDIT;
        why->revision = eng->revision;
    }
    return verdict;
}
