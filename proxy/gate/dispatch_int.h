/*
 * dispatch_int.h - shared by dispatch.c (the per-request flow) and
 * dispatch_cache.c (the process-wide decision cache and the cross-worker
 * coalescing of checks) only.
 */
#ifndef PX_DISPATCH_INT_H
#define PX_DISPATCH_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "px.h"

/* An authorization answer: immutable once made, shared by every worker and
 * cache slot that holds it (atomic reference count). */
struct px_answer {
    atomic_int refs;
    int status;
    char *body;
    size_t body_len;
    char *ctype;
    struct px_hdrs add; /* headers to add upstream (allow) */
    size_t bytes;       /* what it holds, for the memory budget */
};

struct px_answer *px_answer_new(void);
struct px_answer *px_answer_ref(struct px_answer *a);
void px_answer_unref(struct px_answer *a); /* NULL is a no-op */

/* The generation a decision belongs to: the config snapshot and the policy
 * revision it was asked under. A new one empties the cache; an answer to
 * an older one is never served to, or stored for, a newer one. */
struct px_dgen {
    uint64_t snap;
    int64_t rev;
};

static inline int px_dgen_eq(struct px_dgen a, struct px_dgen b)
{
    return a.snap == b.snap && a.rev == b.rev;
}

struct px_dsvc; /* one authorization service's shared cache (dispatch_cache.c) */

/* A cached decision. Everything but `dead` is immutable once the entry is
 * in the cache, so a worker's first level reads it without a lock; `dead`
 * becomes 1 when the cache drops it (evicted, expired, flushed), and the
 * first level then drops its copy too. Reference counted. */
struct px_dentry {
    struct px_dentry *hnext;         /* hash chain (shard lock) */
    struct px_dentry *lprev, *lnext; /* LRU, most recent first (shard lock) */
    atomic_int refs;
    atomic_int dead;
    char *key;
    size_t klen;
    uint64_t hash;
    struct px_dgen gen;
    int64_t stored_ms, expires_ms;
    struct px_answer *a;
    size_t bytes;
};

void px_dentry_unref(struct px_dentry *e); /* NULL is a no-op */

/* The shared cache of service `name` (created on first use; lives until
 * px_dcache_shutdown()). cap: cache_entries (may change on reload). */
struct px_dsvc *px_dsvc_get(const char *name, size_t cap);

/* Makes g the service's generation if it is newer than its own: every
 * entry of an older one is dropped. Returns 1 when g is (now) current, 0
 * when g is older than the service's (its answers are not cached). */
int px_dsvc_generation(struct px_dsvc *s, struct px_dgen g);

/* The cached entry for key under generation g, not expired at now: a new
 * reference; NULL on a miss. Takes a shard lock. */
struct px_dentry *px_dsvc_lookup(struct px_dsvc *s, const char *key, size_t klen, uint64_t hash,
                                 struct px_dgen g, int64_t now);

/* A worker that will send a check, or wait for one another worker sent.
 * `local` is the caller's own in-flight record, handed back with the
 * answer through px_dispatch_deliver() on that worker's thread. Returns 1
 * when the caller owns the check (it must call px_dsvc_complete() once),
 * 0 when it joined another worker's. */
int px_dsvc_join(struct px_dsvc *s, const char *key, size_t klen, uint64_t hash,
                 struct px_dgen g, struct px_worker *w, void *local);

/* The owner's check ended: stores a (not NULL: an answer; else err) for
 * ttl_ms when > 0 and g is still current, and sends it to every worker
 * that joined. Owner's thread. */
void px_dsvc_complete(struct px_dsvc *s, const char *key, size_t klen, uint64_t hash,
                      struct px_dgen g, struct px_answer *a, enum px_reason err, int64_t now,
                      int64_t ttl_ms);

/* Drops every entry of every service (memory pressure: the evict level),
 * oldest first, until the budget is below that level. Any thread. */
void px_dcache_evict_for_memory(void);

/* Frees every shared cache (after every worker stopped). */
void px_dcache_shutdown(void);

/* Implemented by dispatch.c: an answer (or error) for a check another
 * worker sent, delivered to the worker that joined it (any thread: it is
 * queued and handled on w's own loop). Takes over the reference to a. */
void px_dispatch_post(struct px_worker *w, void *local, struct px_answer *a,
                      enum px_reason err);

#endif
