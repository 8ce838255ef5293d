/*
 * dispatch_cache.c - the authorization decision cache, one per service for
 * the whole process, and the registry that coalesces identical checks
 * across workers (dispatch_int.h).
 *
 * Each service's cache is split in NSHARDS shards by key hash, each with
 * its own mutex, hash table and LRU list; an entry is kept for the
 * answer's max-age (capped by max_cache_ttl, dispatch.c), at most
 * cache_entries entries in all, and its bytes are charged to the memory
 * budget (pool dispatch_cache; evicted oldest first at the evict level).
 * Workers keep a small lock-free first-level copy of the entries they use
 * (dispatch.c), so a warm cache costs no lock on the request path; only a
 * first-level miss takes one shard lock.
 *
 * In-flight checks are registered in the same shard: a worker that misses
 * finds an identical check another worker sent (same key, same generation)
 * and waits for it; the owner hands the answer to every worker that joined
 * through px_dispatch_post() (a message to that worker's loop), so one
 * check answers all of them.
 */
#include "dispatch_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define NSHARDS 16
/* Below this many entries one shard holds them all: the LRU order is then
 * exact; above, each of the NSHARDS shards keeps its own (cache_entries /
 * NSHARDS each). */
#define SHARD_MIN_ENTRIES 1024

struct reg {
    struct reg *next;
    struct px_worker *w;
    void *local;
};

struct sinflight {
    struct sinflight *next;
    char *key;
    size_t klen;
    uint64_t hash;
    struct px_dgen gen;
    struct reg *regs; /* workers that joined (not the owner) */
};

struct shard {
    pthread_mutex_t mu;
    struct px_dentry **table;
    size_t nbuckets;
    struct px_dentry *lru_head, *lru_tail;
    size_t n;
    struct sinflight *inflight;
};

struct px_dsvc {
    struct px_dsvc *next;
    char name[80];
    _Atomic size_t cap;
    atomic_uint nshards; /* shards the entries are spread over (set while they are empty) */
    pthread_mutex_t gen_mu;
    struct px_dgen gen;
    int has_gen;
    struct shard shard[NSHARDS];
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct px_dsvc *services;

/* ---- answers ------------------------------------------------------------------- */

struct px_answer *px_answer_new(void)
{
    struct px_answer *a = calloc(1, sizeof(*a));
    if (a != NULL)
        atomic_init(&a->refs, 1);
    return a;
}

struct px_answer *px_answer_ref(struct px_answer *a)
{
    if (a != NULL)
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    return a;
}

void px_answer_unref(struct px_answer *a)
{
    if (a == NULL || atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(a->body);
    free(a->ctype);
    px_hdrs_clear(&a->add);
    free(a);
}

/* ---- services -------------------------------------------------------------------- */

struct px_dsvc *px_dsvc_get(const char *name, size_t cap)
{
    struct px_dsvc *s;
    pthread_mutex_lock(&registry_mu);
    for (s = services; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            break;
    if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL) {
        size_t n = strlen(name);
        if (n >= sizeof(s->name))
            n = sizeof(s->name) - 1;
        memcpy(s->name, name, n);
        pthread_mutex_init(&s->gen_mu, NULL);
        atomic_init(&s->nshards, cap >= SHARD_MIN_ENTRIES ? NSHARDS : 1);
        for (int i = 0; i < NSHARDS; i++)
            pthread_mutex_init(&s->shard[i].mu, NULL);
        s->next = services;
        services = s;
    }
    pthread_mutex_unlock(&registry_mu);
    if (s != NULL)
        atomic_store_explicit(&s->cap, cap, memory_order_relaxed);
    return s;
}

static int gen_newer(struct px_dgen a, struct px_dgen b)
{
    return a.snap > b.snap || (a.snap == b.snap && a.rev > b.rev);
}

/* ---- one shard --------------------------------------------------------------------- */

static void lru_unlink(struct shard *sh, struct px_dentry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        sh->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        sh->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_push(struct shard *sh, struct px_dentry *e)
{
    e->lnext = sh->lru_head;
    e->lprev = NULL;
    if (sh->lru_head)
        sh->lru_head->lprev = e;
    sh->lru_head = e;
    if (sh->lru_tail == NULL)
        sh->lru_tail = e;
}

static void entry_remove(struct shard *sh, struct px_dentry *e)
{
    struct px_dentry **pp = &sh->table[e->hash % sh->nbuckets];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp == e)
        *pp = e->hnext;
    lru_unlink(sh, e);
    px_mem_charge(PX_MEM_CACHE, NULL, -(int64_t)e->bytes);
    atomic_store_explicit(&e->dead, 1, memory_order_release);
    px_dentry_unref(e); /* first-level copies may hold it a little longer */
    sh->n--;
}

void px_dentry_unref(struct px_dentry *e)
{
    if (e == NULL || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    px_answer_unref(e->a);
    free(e->key);
    free(e);
}

static void shard_clear(struct shard *sh)
{
    while (sh->lru_head != NULL)
        entry_remove(sh, sh->lru_head);
}

int px_dsvc_generation(struct px_dsvc *s, struct px_dgen g)
{
    int changed = 0, current;
    pthread_mutex_lock(&s->gen_mu);
    if (!s->has_gen || gen_newer(g, s->gen)) {
        s->gen = g;
        s->has_gen = 1;
        changed = 1;
    }
    current = px_dgen_eq(s->gen, g);
    pthread_mutex_unlock(&s->gen_mu);
    if (changed) {
        /* all shards locked while empty: the spread may change (cache_entries did) */
        size_t cap = atomic_load_explicit(&s->cap, memory_order_relaxed);
        for (int i = 0; i < NSHARDS; i++)
            pthread_mutex_lock(&s->shard[i].mu);
        for (int i = 0; i < NSHARDS; i++)
            shard_clear(&s->shard[i]);
        atomic_store(&s->nshards, cap >= SHARD_MIN_ENTRIES ? NSHARDS : 1);
        for (int i = NSHARDS - 1; i >= 0; i--)
            pthread_mutex_unlock(&s->shard[i].mu);
    }
    return current;
}

/* Entries live in one of nshards shards; in-flight checks always in one of
 * NSHARDS (a registration must be found again whatever happens to the
 * spread meanwhile). */
static struct shard *shard_of(struct px_dsvc *s, uint64_t hash)
{
    return &s->shard[(hash >> 32) % atomic_load_explicit(&s->nshards, memory_order_relaxed)];
}

static struct shard *inflight_shard(struct px_dsvc *s, uint64_t hash)
{
    return &s->shard[(hash >> 32) % NSHARDS];
}

struct px_dentry *px_dsvc_lookup(struct px_dsvc *s, const char *key, size_t klen, uint64_t hash,
                                 struct px_dgen g, int64_t now)
{
    struct shard *sh = shard_of(s, hash);
    struct px_dentry *e, *found = NULL;

    pthread_mutex_lock(&sh->mu);
    for (e = sh->table != NULL ? sh->table[hash % sh->nbuckets] : NULL; e != NULL; e = e->hnext) {
        if (e->hash != hash || e->klen != klen || memcmp(e->key, key, klen) != 0)
            continue;
        if (!px_dgen_eq(e->gen, g) || now >= e->expires_ms) {
            entry_remove(sh, e); /* another generation's, or the authority's word ran out */
            break;
        }
        lru_unlink(sh, e);
        lru_push(sh, e);
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
        found = e;
        break;
    }
    pthread_mutex_unlock(&sh->mu);
    return found;
}

int px_dsvc_join(struct px_dsvc *s, const char *key, size_t klen, uint64_t hash,
                 struct px_dgen g, struct px_worker *w, void *local)
{
    struct shard *sh = inflight_shard(s, hash);
    struct sinflight *inf;
    int owner = 1;

    pthread_mutex_lock(&sh->mu);
    for (inf = sh->inflight; inf != NULL; inf = inf->next)
        if (inf->hash == hash && inf->klen == klen && px_dgen_eq(inf->gen, g) &&
            memcmp(inf->key, key, klen) == 0)
            break;
    if (inf != NULL) {
        struct reg *r = malloc(sizeof(*r));
        if (r != NULL) {
            r->w = w;
            r->local = local;
            r->next = inf->regs;
            inf->regs = r;
            owner = 0;
        }
        /* out of memory: send a check of its own (owner = 1, not registered) */
    } else if ((inf = calloc(1, sizeof(*inf))) != NULL &&
               (inf->key = malloc(klen > 0 ? klen : 1)) != NULL) {
        memcpy(inf->key, key, klen);
        inf->klen = klen;
        inf->hash = hash;
        inf->gen = g;
        inf->next = sh->inflight;
        sh->inflight = inf;
    } else {
        free(inf); /* unregistered: no other worker can join it, which is only slower */
    }
    pthread_mutex_unlock(&sh->mu);
    return owner;
}

static void store(struct px_dsvc *s, struct shard *sh, const char *key, size_t klen, uint64_t hash,
                  struct px_dgen g, struct px_answer *a, int64_t now, int64_t ttl_ms)
{
    size_t cap = atomic_load_explicit(&s->cap, memory_order_relaxed);
    unsigned ns = atomic_load_explicit(&s->nshards, memory_order_relaxed);
    size_t shard_cap = (cap + ns - 1) / ns;
    struct px_dentry *e;

    if (cap == 0 || ttl_ms <= 0 || px_mem_level() >= PX_MEM_EVICT)
        return;
    if (sh->table == NULL) {
        /* buckets ~ entries, at most 64K a shard: one bounded allocation */
        sh->nbuckets = shard_cap < 64 ? 64 : shard_cap > 65536 ? 65536 : shard_cap;
        sh->table = calloc(sh->nbuckets, sizeof(*sh->table));
        if (sh->table == NULL)
            return;
    }
    while (sh->n >= shard_cap && sh->lru_tail != NULL) {
        char labels[200];
        entry_remove(sh, sh->lru_tail);
        snprintf(labels, sizeof(labels), "service=\"%s\",result=\"eviction\"", s->name);
        px_counter_add(px_counter_get("picket_dispatch_cache_total",
                                      "Dispatch cache lookups and evictions", labels),
                       1);
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->key = malloc(klen > 0 ? klen : 1)) == NULL) {
        free(e);
        return;
    }
    memcpy(e->key, key, klen);
    e->klen = klen;
    e->hash = hash;
    e->gen = g;
    e->stored_ms = now;
    e->expires_ms = now + ttl_ms;
    e->a = px_answer_ref(a);
    e->bytes = sizeof(*e) + klen + a->bytes;
    atomic_init(&e->refs, 1);
    atomic_init(&e->dead, 0);
    px_mem_charge(PX_MEM_CACHE, NULL, (int64_t)e->bytes);
    e->hnext = sh->table[hash % sh->nbuckets];
    sh->table[hash % sh->nbuckets] = e;
    lru_push(sh, e);
    sh->n++;
}

void px_dsvc_complete(struct px_dsvc *s, const char *key, size_t klen, uint64_t hash,
                      struct px_dgen g, struct px_answer *a, enum px_reason err, int64_t now,
                      int64_t ttl_ms)
{
    struct shard *ish = inflight_shard(s, hash), *sh;
    struct sinflight **pp, *inf = NULL;
    struct reg *regs = NULL;
    int current;

    pthread_mutex_lock(&ish->mu);
    for (pp = &ish->inflight; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->hash == hash && (*pp)->klen == klen && px_dgen_eq((*pp)->gen, g) &&
            memcmp((*pp)->key, key, klen) == 0) {
            inf = *pp;
            *pp = inf->next;
            regs = inf->regs;
            break;
        }
    pthread_mutex_unlock(&ish->mu);
    /* Stored only when the cache is still the one the check was asked for:
     * after a flush (new bundle revision, reload) the answer serves the
     * requests that waited for it and nothing else. The generation is
     * checked under the shard lock a flush takes too. */
    if (a != NULL && err == PX_R_NONE) {
        sh = shard_of(s, hash);
        pthread_mutex_lock(&sh->mu);
        pthread_mutex_lock(&s->gen_mu);
        current = s->has_gen && px_dgen_eq(s->gen, g);
        pthread_mutex_unlock(&s->gen_mu);
        if (current && sh == shard_of(s, hash))
            store(s, sh, key, klen, hash, g, a, now, ttl_ms);
        pthread_mutex_unlock(&sh->mu);
    }
    if (inf != NULL) {
        free(inf->key);
        free(inf);
    }
    while (regs != NULL) {
        struct reg *r = regs;
        regs = r->next;
        px_dispatch_post(r->w, r->local, px_answer_ref(a), err);
        free(r);
    }
}

void px_dcache_evict_for_memory(void)
{
    struct px_dsvc *s;
    pthread_mutex_lock(&registry_mu);
    for (s = services; s != NULL; s = s->next)
        for (int i = 0; i < NSHARDS && px_mem_level() >= PX_MEM_EVICT; i++) {
            struct shard *sh = &s->shard[i];
            pthread_mutex_lock(&sh->mu);
            while (sh->lru_tail != NULL && px_mem_level() >= PX_MEM_EVICT) {
                entry_remove(sh, sh->lru_tail);
                px_mem_pressure(PX_MEM_ACT_EVICT);
            }
            pthread_mutex_unlock(&sh->mu);
        }
    pthread_mutex_unlock(&registry_mu);
}

void px_dcache_shutdown(void)
{
    pthread_mutex_lock(&registry_mu);
    while (services != NULL) {
        struct px_dsvc *s = services;
        services = s->next;
        for (int i = 0; i < NSHARDS; i++) {
            struct shard *sh = &s->shard[i];
            shard_clear(sh);
            free(sh->table);
            while (sh->inflight != NULL) {
                struct sinflight *inf = sh->inflight;
                sh->inflight = inf->next;
                while (inf->regs != NULL) {
                    struct reg *r = inf->regs;
                    inf->regs = r->next;
                    free(r);
                }
                free(inf->key);
                free(inf);
            }
            pthread_mutex_destroy(&sh->mu);
        }
        pthread_mutex_destroy(&s->gen_mu);
        free(s);
    }
    pthread_mutex_unlock(&registry_mu);
}
