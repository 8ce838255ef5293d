/*
 * json_keys.c - the duplicate-key check of certs_json (certs_json_check_keys):
 * no object may hold the same key twice, where "same" means the same bytes
 * after unescaping ("a\/b" and "a/b", "\u0061" and "a" are one key). Two
 * readers that keep different duplicates would see two different documents,
 * and a signed bundle must mean one thing.
 *
 * Cost. Before, certs_json_parse() compared the first 256 keys of each object
 * pairwise and raw (escaped duplicates and any past the 256th went unseen),
 * and the bundle parser compared every pair of an object's keys, which made
 * one 640 KB object cost 82 s in an ASan build (issue 20). Here each key
 * is unescaped as a stream (no copy) into a 64-bit hash and put in a linear
 * probing table of at least twice as many slots as keys; keys are compared
 * byte for byte only when their hashes match. That is expected linear in the
 * bytes of the keys. The hash is fixed (FNV-1a and a final mix), so an input
 * can be built whose keys all land in one cluster or share one hash; the
 * table therefore counts its work (probes plus bytes compared) and, past a
 * fixed multiple of the keys' bytes, gives up and sorts the keys instead
 * (bottom-up merge sort: O(bytes * log keys) whatever the input). A random
 * per-process seed would have needed a source of randomness in an otherwise
 * pure module and still left the worst case quadratic.
 *
 * Memory: the key list (4 bytes a key) and the table (8-byte slots, 2 to 4
 * a key), both bounded by the token count the caller allowed (a key is at
 * least two tokens); 4 bytes a key more when sorting. Up to SMALL_KEYS keys
 * use the stack only. Nothing is allocated per key or per byte of a key:
 * keys are read in place through the unescaping stream.
 */
#include "certs_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_KEYS 32

/* A table slot: tok 0 is empty (token 0 is the root, never a key). */
struct slot {
    uint32_t tag; /* high half of the key's hash */
    int32_t tok;
};

struct kcheck {
    const struct certs_json *j;
    struct certs_json_keystats *st;
    unsigned flags;
    int *keys; /* key tokens, in document order */
    size_t nkeys;
    int *tmp; /* merge sort scratch, nkeys entries */
    struct slot *tab;
    size_t mask;
};

/* Reads one string token's bytes after unescaping, one at a time. */
struct ustream {
    const char *s;
    size_t n, k;
    unsigned char b[4];
    int nb, ib;
};

static void us_init(struct ustream *u, const struct certs_json *j, int tok)
{
    u->s = j->js + j->tok[tok].start;
    u->n = (size_t)(j->tok[tok].end - j->tok[tok].start);
    u->k = 0;
    u->nb = u->ib = 0;
}

/* The next byte (0..255), -1 at the end, -2 for an escape certs_json_str()
 * refuses. */
static int us_next(struct ustream *u)
{
    if (u->ib < u->nb)
        return u->b[u->ib++];
    if (u->k >= u->n)
        return -1;
    if (u->s[u->k] != '\\')
        return (unsigned char)u->s[u->k++];
    u->k++;
    u->nb = certs_json_unescape(u->s, u->n, &u->k, u->b);
    if (u->nb < 0) {
        u->nb = 0;
        return -2;
    }
    u->ib = 1;
    return u->b[0];
}

static int parent(const struct kcheck *c, int tok)
{
    return c->j->tok[tok].parent;
}

/* Hash of the parent and the unescaped bytes of key tok; -1 if it does not
 * unescape. *nbytes gets the unescaped length. */
static int key_hash(const struct kcheck *c, int tok, uint64_t *out, size_t *nbytes)
{
    struct ustream u;
    uint64_t h =
        0xcbf29ce484222325ULL ^ ((uint64_t)(uint32_t)parent(c, tok) * 0x9E3779B97F4A7C15ULL);
    size_t n = 0;
    int b;

    if (c->st != NULL)
        c->st->keys++;
    us_init(&u, c->j, tok);
    while ((b = us_next(&u)) >= 0) {
        h = (h ^ (uint64_t)b) * 0x100000001b3ULL; /* FNV-1a */
        n++;
    }
    if (b == -2)
        return -1;
    h ^= n;
    h ^= h >> 33; /* murmur3's fmix64: FNV's low bits alone cluster */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    *out = (c->flags & CERTS_JSON_KEYS_COLLIDE) ? 0 : h;
    *nbytes = n;
    return 0;
}

/* Compares the unescaped bytes of two keys already known to unescape:
 * <0, 0 or >0, shorter first on a common prefix. Adds the bytes read to
 * *work. */
static int key_cmp_bytes(const struct kcheck *c, int a, int b, uint64_t *work)
{
    struct ustream ua, ub;
    int x, y;

    if (c->st != NULL)
        c->st->compares++;
    us_init(&ua, c->j, a);
    us_init(&ub, c->j, b);
    do {
        x = us_next(&ua);
        y = us_next(&ub);
        (*work)++;
    } while (x == y && x >= 0);
    return x - y;
}

/* Sort order: parent object, then bytes, then document order. */
static int key_order(const struct kcheck *c, int a, int b, uint64_t *work)
{
    int r;
    if (parent(c, a) != parent(c, b))
        return parent(c, a) < parent(c, b) ? -1 : 1;
    if ((r = key_cmp_bytes(c, a, b, work)) != 0)
        return r;
    return a < b ? -1 : a > b;
}

/* Bottom-up merge sort of v[0..n) (tmp holds n): O(n log n) comparisons,
 * and each comparison reads at most the bytes of the key it outputs, so the
 * bytes read are O(bytes of the keys * log n) for any input. */
static void sort_keys(const struct kcheck *c, int *v, int *tmp, size_t n)
{
    uint64_t work = 0;
    int *src = v, *dst = tmp;

    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, k = mid, o = lo;
            while (i < mid && k < hi)
                dst[o++] = key_order(c, src[i], src[k], &work) <= 0 ? src[i++] : src[k++];
            while (i < mid)
                dst[o++] = src[i++];
            while (k < hi)
                dst[o++] = src[k++];
        }
        int *t = src;
        src = dst;
        dst = t;
    }
    if (src != v)
        memcpy(v, src, n * sizeof(*v));
}

/* The sorting check. Returns the first key in document order that
 * repeats an earlier key, the first one that does not unescape (as
 * *bad = 1) if that comes first, or 0. */
static int check_by_sorting(const struct kcheck *c, int *bad)
{
    uint64_t h, work = 0;
    size_t n = c->nkeys, nb;
    int first = 0;

    if (c->st != NULL)
        c->st->sorted++;
    /* Keys that do not unescape cannot be ordered: only those before the
     * first of them are sorted, so the answer is the table's answer. */
    for (size_t i = 0; i < c->nkeys; i++) {
        if (key_hash(c, c->keys[i], &h, &nb) < 0) {
            n = i;
            *bad = 1;
            first = c->keys[i];
            break;
        }
    }
    sort_keys(c, c->keys, c->tmp, n);
    for (size_t i = 1; i < n; i++) {
        int a = c->keys[i - 1], b = c->keys[i];
        if (parent(c, a) == parent(c, b) && key_cmp_bytes(c, a, b, &work) == 0 &&
            (first == 0 || b < first)) {
            first = b; /* sorted by document order among equals: b is a repeat */
            *bad = 0;
        }
    }
    return first;
}

/* The table check, same answer as check_by_sorting(). Returns -1 when its
 * work passes the budget (the caller sorts instead). */
static int check_by_table(const struct kcheck *c, int *bad)
{
    uint64_t work = 0, bytes = 0;

    memset(c->tab, 0, (c->mask + 1) * sizeof(*c->tab));
    for (size_t i = 0; i < c->nkeys; i++) {
        int t = c->keys[i];
        uint64_t h;
        size_t nb, at;
        uint32_t tag;

        if (key_hash(c, t, &h, &nb) < 0) {
            *bad = 1;
            return t;
        }
        bytes += nb;
        tag = (uint32_t)(h >> 32);
        for (at = (size_t)h & c->mask; c->tab[at].tok != 0; at = (at + 1) & c->mask) {
            const struct slot *s = &c->tab[at];
            if (c->st != NULL)
                c->st->probes++;
            work++;
            if (s->tag == tag && parent(c, s->tok) == parent(c, t) &&
                key_cmp_bytes(c, s->tok, t, &work) == 0) {
                *bad = 0;
                return t;
            }
            /* Expected: under 3 probes a key at this load, and no byte
             * comparison but the one that finds a duplicate. */
            if (work > 16 + 8 * (uint64_t)(i + 1) + 2 * bytes)
                return -1;
        }
        if (c->st != NULL)
            c->st->probes++;
        c->tab[at].tag = tag;
        c->tab[at].tok = t;
    }
    return 0;
}

static int fail_key(const struct certs_json *j, int tok, int bad, char *err, size_t errlen)
{
    char show[72];
    const char *s = j->js + j->tok[tok].start;
    size_t n = (size_t)(j->tok[tok].end - j->tok[tok].start), o = 0;

    if (bad)
        return certs_json_errf(j, tok, err, errlen, "bad escape in key");
    for (size_t i = 0; i < n && o < 64; i++) {
        unsigned char ch = (unsigned char)s[i];
        show[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (o < n)
        memcpy(show + o, "...", 3), o += 3;
    show[o] = '\0';
    return certs_json_errf(j, tok, err, errlen, "duplicate key \"%s\"", show);
}

/* Fills c->keys (allocated if over SMALL_KEYS) with obj's keys, or every key
 * of the document for obj -1. */
static int collect_keys(struct kcheck *c, int obj, int *small)
{
    const struct certs_json *j = c->j;
    size_t n = 0;

    if (obj >= 0) {
        n = (size_t)j->tok[obj].size;
    } else {
        for (int t = 1; t < j->ntok; t++)
            n += j->tok[t].parent >= 0 && j->tok[j->tok[t].parent].type == JSMN_OBJECT;
    }
    c->keys = n <= SMALL_KEYS ? small : malloc(n * sizeof(*c->keys));
    if (c->keys == NULL)
        return -1;
    c->nkeys = 0;
    if (obj >= 0) {
        for (int k = certs_json_first(j, obj); k > 0 && c->nkeys < n; k = certs_json_next_key(j, k))
            c->keys[c->nkeys++] = k;
    } else {
        for (int t = 1; t < j->ntok && c->nkeys < n; t++)
            if (j->tok[t].parent >= 0 && j->tok[j->tok[t].parent].type == JSMN_OBJECT)
                c->keys[c->nkeys++] = t;
    }
    return 0;
}

int certs_json_check_keys_stats(const struct certs_json *j, int obj, unsigned flags,
                                struct certs_json_keystats *st, char *err, size_t errlen)
{
    int small_keys[SMALL_KEYS], small_tmp[SMALL_KEYS];
    struct slot small_tab[2 * SMALL_KEYS];
    struct kcheck c = {j, st, flags, NULL, 0, NULL, NULL, 0};
    size_t cap = 2 * SMALL_KEYS;
    int found = 0, bad = 0, rc = CERTS_JSON_NOMEM;

    if (obj != -1 && !certs_json_is_obj(j, obj))
        return certs_json_errf(j, obj, err, errlen, "not an object");
    if (collect_keys(&c, obj, small_keys) != 0)
        goto fail;
    while (cap < 2 * c.nkeys)
        cap *= 2;
    c.mask = cap - 1;
    if (c.nkeys == 1) {
        uint64_t h;
        size_t nb;
        if (key_hash(&c, c.keys[0], &h, &nb) < 0) {
            found = c.keys[0];
            bad = 1;
        }
    } else if (c.nkeys > 1 && (flags & CERTS_JSON_KEYS_SORT) == 0) {
        c.tab = c.nkeys <= SMALL_KEYS ? small_tab : malloc(cap * sizeof(*c.tab));
        if (c.tab == NULL)
            goto fail;
        found = check_by_table(&c, &bad);
    } else if (c.nkeys > 1) {
        found = -1;
    }
    if (found < 0) {
        c.tmp = c.nkeys <= SMALL_KEYS ? small_tmp : malloc(c.nkeys * sizeof(*c.tmp));
        if (c.tmp == NULL)
            goto fail;
        found = check_by_sorting(&c, &bad);
    }
    rc = found > 0 ? fail_key(j, found, bad, err, errlen) : 0;
fail:
    if (rc == CERTS_JSON_NOMEM)
        snprintf(err, errlen, "1:1: out of memory");
    if (c.keys != small_keys)
        free(c.keys);
    if (c.tab != small_tab)
        free(c.tab);
    if (c.tmp != small_tmp)
        free(c.tmp);
    return rc;
}

int certs_json_check_keys(const struct certs_json *j, int obj, char *err, size_t errlen)
{
    return certs_json_check_keys_stats(j, obj, 0, NULL, err, errlen);
}
