/*
 * compile.c - turns a validated bundle into an immutable, indexed engine.
 *
 * How evaluation is indexed (so its cost does not grow with the number of
 * rules):
 *
 * Every rule is filed in two independent indexes, each of which yields, for
 * any request, a set of candidate rules that is guaranteed to contain every
 * rule that could match (a superset; the exact check comes later):
 *
 *   A. by identity ("from"):
 *      - from_exact:  hash table, full SPIFFE ID -> rules naming that ID;
 *      - from_prefix: hash table, "spiffe://td/p" -> rules with the subtree
 *        pattern "spiffe://td/p/ *"; the whole-domain form "spiffe://td/ *"
 *        is the same thing with key "spiffe://td". At evaluation the peer ID
 *        is hashed once, left to right with a streaming hash (FNV-1a), and
 *        the running hash at each '/' is the hash of that prefix, so every
 *        ancestor of the peer is looked up in O(length of the peer ID);
 *      - from_any:  rules with "*" (any authenticated peer);
 *      - from_none: rules without "from".
 *   B. by first path segment ("paths"):
 *      - seg_lit:  hash table, literal first segment -> rules with a pattern
 *        starting with it ("/orders/ **" is filed under "orders");
 *      - seg_wild: rules with a pattern whose first segment is "*" or "**";
 *      - seg_none: rules without "paths".
 *
 * A request gathers its lists from A (a handful: exact, each matching
 * ancestor, any, none) and from B (at most three). Both are complete
 * supersets of the matching rules, so the intersection of A and B is too;
 * rather than intersect explicitly, eval.c walks the smaller of the two
 * (by total length, known before walking) and runs the full rule check on
 * each candidate, which is the intersection test with the other index for
 * free. Each list is in bundle order; eval keeps, per action, the lowest
 * rule index that matched, and skips candidates that cannot beat it.
 *
 * Cost per request: O(|peer ID| + |first segment|) hashing plus
 * min(|A|, |B|) rule checks. With rules spread over distinct identities or
 * distinct first segments that minimum stays small however many rules
 * there are; only rules that are broad in both dimensions (no "from" and
 * "/ **") are checked on every request, which is inherent to them.
 *
 * Hash tables are open-addressing with linear probing, sized to a power of
 * two at least twice the number of keys in the bundle (load <= 0.5). Keys
 * come from the signed bundle, not from peers; a peer only chooses what to
 * look up, and probe lengths are bounded by the clusters the bundle made.
 *
 * Memory: the engine deep-copies every rule into its own arena, so it never
 * points into the bundle, and frees everything with one arena walk.
 */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval-t.h"

uint64_t policy_hash(const char *s, size_t n)
{
    uint64_t h = POLICY_HASH_INIT;
    for (size_t i = 0; i < n; i++)
        h = policy_hash_step(h, (unsigned char)s[i]);
    return h;
}

const struct policy_slot *policy_table_find(const struct policy_table *t, const char *key,
                                            size_t klen, uint64_t hash)
{
    size_t i;
    if (t->slots == NULL)
        return NULL;
    for (i = (size_t)hash & t->mask;; i = (i + 1) & t->mask) {
        const struct policy_slot *s = &t->slots[i];
        if (s->key == NULL)
            return NULL;
        if (s->hash == hash && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
    }
}

/* ---- build-time collections ---- */

struct pair {
    const char *key;
    size_t klen;
    uint32_t rule;
};

struct pairs {
    struct pair *v;
    size_t n, cap;
};

struct ids {
    uint32_t *v;
    size_t n, cap;
};

static int pairs_add(struct pairs *p, const char *key, size_t klen, uint32_t rule)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        struct pair *v = realloc(p->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = (struct pair){key, klen, rule};
    return 0;
}

/* Appends rule unless it is already the last entry (a rule lands in a list
 * once even if several of its patterns lead there). */
static int ids_add(struct ids *l, uint32_t rule)
{
    if (l->n > 0 && l->v[l->n - 1] == rule)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        uint32_t *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = rule;
    return 0;
}

static int list_freeze(struct policy_engine *e, struct policy_list *out, const struct ids *l)
{
    uint32_t *v = policy_arena_alloc(&e->arena, (l->n ? l->n : 1) * sizeof(*v));
    if (v == NULL)
        return -1;
    if (l->n > 0)
        memcpy(v, l->v, l->n * sizeof(*v));
    out->v = v;
    out->n = (uint32_t)l->n;
    return 0;
}

static struct policy_slot *slot_get(struct policy_table *t, const char *key, size_t klen,
                                    uint64_t hash)
{
    size_t i;
    for (i = (size_t)hash & t->mask;; i = (i + 1) & t->mask) {
        struct policy_slot *s = &t->slots[i];
        if (s->key == NULL) {
            s->key = key;
            s->klen = (uint32_t)klen;
            s->hash = hash;
            return s;
        }
        if (s->hash == hash && s->klen == klen && memcmp(s->key, key, klen) == 0)
            return s;
    }
}

/* Builds a table from (key, rule) pairs given in rule order. Two passes: the
 * first counts each key's rules, the second fills one shared array, so each
 * key's rules are contiguous and in bundle order. */
static int table_build(struct policy_engine *e, struct policy_table *t, const struct pairs *p)
{
    size_t cap = 8, total = 0;
    uint32_t *lists;

    if (p->n == 0)
        return 0;
    while (cap < 2 * p->n)
        cap <<= 1;
    t->slots = policy_arena_alloc(&e->arena, cap * sizeof(*t->slots));
    if (t->slots == NULL)
        return -1;
    t->mask = cap - 1;
    for (size_t i = 0; i < p->n; i++) {
        struct policy_slot *s =
            slot_get(t, p->v[i].key, p->v[i].klen, policy_hash(p->v[i].key, p->v[i].klen));
        if (s->last != p->v[i].rule + 1) {
            s->cnt++;
            s->last = p->v[i].rule + 1;
        }
    }
    for (size_t i = 0; i < cap; i++) {
        t->slots[i].off = (uint32_t)total;
        total += t->slots[i].cnt;
        t->slots[i].cnt = 0;
        t->slots[i].last = 0;
    }
    lists = policy_arena_alloc(&e->arena, total * sizeof(*lists));
    if (lists == NULL)
        return -1;
    for (size_t i = 0; i < p->n; i++) {
        struct policy_slot *s =
            slot_get(t, p->v[i].key, p->v[i].klen, policy_hash(p->v[i].key, p->v[i].klen));
        if (s->last != p->v[i].rule + 1) {
            lists[s->off + s->cnt++] = p->v[i].rule;
            s->last = p->v[i].rule + 1;
        }
    }
    t->lists = lists;
    return 0;
}

/* ---- deep copy ---- */

static int copy_str(struct policy_arena *a, struct policy_str *dst, const struct policy_str *src)
{
    dst->n = src->n;
    dst->p = policy_arena_strndup(a, src->p, src->n);
    return dst->p != NULL ? 0 : -1;
}

static int copy_strs(struct policy_arena *a, struct policy_str **dst, const struct policy_str *src,
                     uint32_t n)
{
    if (n == 0)
        return 0;
    *dst = policy_arena_alloc(a, n * sizeof(**dst));
    if (*dst == NULL)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (copy_str(a, &(*dst)[i], &src[i]) < 0)
            return -1;
    return 0;
}

static int copy_rule(struct policy_arena *a, struct policy_rule *d, const struct policy_rule *s)
{
    *d = *s;
    d->from = NULL;
    d->hosts = NULL;
    d->methods = NULL;
    d->paths = NULL;
    d->headers = NULL;
    if ((d->id = policy_arena_strndup(a, s->id, strlen(s->id))) == NULL)
        return -1;
    if (s->dispatch != NULL &&
        (d->dispatch = policy_arena_strndup(a, s->dispatch, strlen(s->dispatch))) == NULL)
        return -1;
    if (s->nfrom > 0 && (d->from = policy_arena_alloc(a, s->nfrom * sizeof(*d->from))) == NULL)
        return -1;
    for (uint32_t i = 0; i < s->nfrom; i++) {
        d->from[i].kind = s->from[i].kind;
        if (s->from[i].kind != POLICY_FROM_ANY && copy_str(a, &d->from[i].id, &s->from[i].id) < 0)
            return -1;
    }
    if (s->nhosts > 0 && (d->hosts = policy_arena_alloc(a, s->nhosts * sizeof(*d->hosts))) == NULL)
        return -1;
    for (uint32_t i = 0; i < s->nhosts; i++) {
        d->hosts[i].suffix = s->hosts[i].suffix;
        if (copy_str(a, &d->hosts[i].name, &s->hosts[i].name) < 0)
            return -1;
    }
    if (copy_strs(a, &d->methods, s->methods, s->nmethods) < 0)
        return -1;
    if (s->npaths > 0 && (d->paths = policy_arena_alloc(a, s->npaths * sizeof(*d->paths))) == NULL)
        return -1;
    for (uint32_t i = 0; i < s->npaths; i++) {
        d->paths[i].globstar = s->paths[i].globstar;
        d->paths[i].nsegs = s->paths[i].nsegs;
        if (copy_strs(a, &d->paths[i].segs, s->paths[i].segs, s->paths[i].nsegs) < 0)
            return -1;
    }
    if (s->nheaders > 0 &&
        (d->headers = policy_arena_alloc(a, s->nheaders * sizeof(*d->headers))) == NULL)
        return -1;
    for (uint32_t i = 0; i < s->nheaders; i++) {
        d->headers[i].nvalues = s->headers[i].nvalues;
        if (copy_str(a, &d->headers[i].name, &s->headers[i].name) < 0 ||
            copy_strs(a, &d->headers[i].values, s->headers[i].values, s->headers[i].nvalues) < 0)
            return -1;
    }
    return 0;
}

/* ---- indexes ---- */

static int index_rule(const struct policy_rule *r, struct pairs *exact, struct pairs *prefix,
                      struct pairs *seg, struct ids *any, struct ids *none, struct ids *wild,
                      struct ids *nopath)
{
    if (r->nfrom == 0 && ids_add(none, r->index) < 0)
        return -1;
    for (uint32_t i = 0; i < r->nfrom; i++) {
        const struct policy_from *f = &r->from[i];
        int rc = f->kind == POLICY_FROM_ANY     ? ids_add(any, r->index)
                 : f->kind == POLICY_FROM_EXACT ? pairs_add(exact, f->id.p, f->id.n, r->index)
                                                : pairs_add(prefix, f->id.p, f->id.n, r->index);
        if (rc < 0)
            return -1;
    }
    if (r->npaths == 0 && ids_add(nopath, r->index) < 0)
        return -1;
    for (uint32_t i = 0; i < r->npaths; i++) {
        const struct policy_path_pat *pp = &r->paths[i];
        int rc;
        if (pp->nsegs == 0 || (pp->segs[0].n == 1 && pp->segs[0].p[0] == '*'))
            rc = ids_add(wild, r->index);
        else
            rc = pairs_add(seg, pp->segs[0].p, pp->segs[0].n, r->index);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int build_indexes(struct policy_engine *e)
{
    struct pairs exact = {0}, prefix = {0}, seg = {0};
    struct ids any = {0}, none = {0}, wild = {0}, nopath = {0};
    int rc = -1;

    for (size_t i = 0; i < e->nrules; i++)
        if (index_rule(&e->rules[i], &exact, &prefix, &seg, &any, &none, &wild, &nopath) < 0)
            goto out;
    for (size_t i = 0; i < prefix.n; i++)
        if (prefix.v[i].klen > e->max_prefix_len)
            e->max_prefix_len = prefix.v[i].klen;
    if (table_build(e, &e->from_exact, &exact) < 0 || table_build(e, &e->from_prefix, &prefix) < 0 ||
        table_build(e, &e->seg_lit, &seg) < 0 || list_freeze(e, &e->from_any, &any) < 0 ||
        list_freeze(e, &e->from_none, &none) < 0 || list_freeze(e, &e->seg_wild, &wild) < 0 ||
        list_freeze(e, &e->seg_none, &nopath) < 0)
        goto out;
    rc = 0;
out:
    free(exact.v);
    free(prefix.v);
    free(seg.v);
    free(any.v);
    free(none.v);
    free(wild.v);
    free(nopath.v);
    return rc;
}

int policy_engine_new(struct policy_engine **out, const struct policy_bundle *bundle, char *err,
                      size_t errlen)
{
    struct policy_engine *e = NULL;
    struct policy_rule *rules;

    if (errlen > 0)
        err[0] = '\0';
    if (out == NULL || bundle == NULL) {
        if (errlen > 0)
            snprintf(err, errlen, "policy_engine_new: NULL argument");
        return POLICY_ERR_INVAL;
    }
    if (bundle->nrules > UINT32_MAX - 1) {
        if (errlen > 0)
            snprintf(err, errlen, "too many rules");
        return POLICY_ERR_INVAL;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        goto nomem;
    e->revision = bundle->revision;
    e->mode = bundle->mode;
    e->def = bundle->def;
    e->nrules = bundle->nrules;
    rules = policy_arena_alloc(&e->arena, (e->nrules ? e->nrules : 1) * sizeof(*rules));
    if (rules == NULL)
        goto nomem;
    for (size_t i = 0; i < e->nrules; i++)
        if (copy_rule(&e->arena, &rules[i], &bundle->rules[i]) < 0)
            goto nomem;
    e->rules = rules;
    if (build_indexes(e) < 0)
        goto nomem;
    *out = e;
    return 0;
nomem:
    policy_engine_free(e);
    if (errlen > 0)
        snprintf(err, errlen, "out of memory compiling the policy");
    return POLICY_ERR_NOMEM;
}

void policy_engine_free(struct policy_engine *eng)
{
    if (eng == NULL)
        return;
    policy_arena_clear(&eng->arena);
    free(eng);
}

int64_t policy_engine_revision(const struct policy_engine *eng)
{
    return eng->revision;
}

size_t policy_engine_rule_count(const struct policy_engine *eng)
{
    return eng->nrules;
}
