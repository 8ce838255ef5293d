/*
 * mem.h - the process-wide memory budget (limits.memory_budget): one
 * account of the bytes picket holds for its peers, and the pressure
 * level that tells every worker how to behave.
 *
 * What is counted, by pool (picket_memory_bytes{pool}):
 *   request_body    stream buffers of request bodies (client -> app)
 *   response_body   stream buffers of response bodies (app -> client)
 *   sockets         plaintext input and output buffers of every downstream
 *                   and upstream connection (what waits for a slow reader,
 *                   or for its turn to be parsed)
 *   headers         header and trailer lists of requests and responses
 *   dispatch_cache  cached authorization answers (keys, bodies, headers)
 * Buffers are counted exactly, through libevent's evbuffer callbacks, so no
 * code path that adds or drains bytes can forget to.
 *
 * Levels (fractions of the budget B), each adding an action to the ones
 * before it (picket_memory_pressure_total{action}):
 *   >= B/4  pause   streams holding PX_MEM_FLOOR or more stop reading from
 *                   their peer (and stop reopening its HTTP/2 window);
 *                   light streams carry on
 *   >= B/2  refuse  new streams on connections holding more than their
 *                   share are refused (h2 REFUSED_STREAM, h1 503)
 *   >= 3B/4 evict   cached authorization answers are evicted, oldest first
 *   >= B    reset   the heaviest streams are reset until the total is
 *                   under B again
 * Any thread; lock-free (relaxed atomics: the levels are a control loop,
 * not a fence).
 */
#ifndef PX_MEM_H
#define PX_MEM_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

struct evbuffer;
struct evbuffer_cb_entry;

enum px_mem_pool {
    PX_MEM_REQ_BODY,
    PX_MEM_RESP_BODY,
    PX_MEM_SOCKETS,
    PX_MEM_HEADERS,
    PX_MEM_CACHE,
    PX_MEM_NPOOLS
};

enum px_mem_level { PX_MEM_OK, PX_MEM_PAUSE, PX_MEM_REFUSE, PX_MEM_EVICT, PX_MEM_RESET };

enum px_mem_action { PX_MEM_ACT_PAUSE, PX_MEM_ACT_REFUSE, PX_MEM_ACT_EVICT, PX_MEM_ACT_RESET };

/* Bytes a stream may always hold whatever the pressure: enough to keep a
 * light request moving. */
#define PX_MEM_FLOOR (16 * 1024)

/* Bytes held for one object (a stream, a connection), next to the pool
 * totals. `parent` (may be NULL) is charged too: a stream's account has its
 * connection's as parent. Owned by one worker: not atomic. */
struct px_mem_acct {
    int64_t held;
    struct px_mem_acct *parent;
};

/* Sets the budget (bytes, > 0) and registers the metrics. Called at start
 * and on reload; the counts carry on. */
void px_mem_configure(int64_t budget);
int64_t px_mem_budget(void);

/* Adds delta (may be negative) to pool p and to acct and its parent (acct
 * may be NULL). Any thread (acct: its owner's only). */
void px_mem_charge(enum px_mem_pool p, struct px_mem_acct *acct, int64_t delta);

/* The tracking of one evbuffer, embedded in the object that owns it. */
struct px_mem_tracker {
    struct evbuffer *b; /* NULL when not tracking */
    struct evbuffer_cb_entry *cb;
    enum px_mem_pool pool;
    struct px_mem_acct *acct;
};

/* Counts every byte that enters or leaves b in pool p (and acct) from now
 * on, including what b holds already. t must stay where it is until
 * px_mem_untrack(t), which must come before b is freed (it uncounts what b
 * still holds; a no-op on a tracker that tracks nothing). Returns 0 or -1
 * (ENOMEM). */
int px_mem_track(struct px_mem_tracker *t, struct evbuffer *b, enum px_mem_pool p,
                 struct px_mem_acct *acct);
void px_mem_untrack(struct px_mem_tracker *t);

/* The calling thread's event to activate when a charge takes the total
 * over the budget (the worker resets its heaviest streams from it); NULL
 * for none. */
struct event;
void px_mem_thread_event(struct event *ev);

/* The calling thread's event that runs px_mem_flush() (once per loop turn
 * with charges in it); NULL for none, which also flushes. With one, this
 * thread's charges are summed in the thread and added to the shared pool
 * counters by the flush, not each with two atomic adds (a few hundred
 * per loop turn on the request path): the shared counters other threads
 * read (metrics, their pressure levels) lag by at most this thread's
 * current turn; the thread itself reads them exact (px_mem_used(),
 * px_mem_pool_bytes(), px_mem_level() add what it has not flushed). */
void px_mem_thread_flush_event(struct event *ev);
/* Adds this thread's summed charges to the shared counters. */
void px_mem_flush(void);

/* Bytes counted now: one pool, or all of them. */
int64_t px_mem_pool_bytes(enum px_mem_pool p);
int64_t px_mem_used(void);
enum px_mem_level px_mem_level(void);

/* HTTP/2 flow-control windows are memory promised before it is used: a
 * peer may send what a window allows at once, many streams together. So
 * the window picket grants beyond a stream's first few KiB comes from one
 * process-wide allowance of budget/4: take() returns how much of `want`
 * is granted (possibly 0), give() returns it when the stream ends. */
size_t px_mem_window_take(size_t want);
void px_mem_window_give(size_t n);

/* Counts one pressure action (picket_memory_pressure_total{action}). */
void px_mem_pressure(enum px_mem_action a);

/* Name of a pool / action for metric labels ("response_body", "pause"). */
const char *px_mem_pool_name(enum px_mem_pool p);
const char *px_mem_action_name(enum px_mem_action a);

/* How many more bytes an object holding `held` may take in now, out of
 * `limit` it may hold when there is no pressure: limit - held, or under
 * pressure at most PX_MEM_FLOOR - held (0 when it holds more). The pause
 * action is counted when a pressure level cuts a stream short. */
size_t px_mem_room(int64_t held, size_t limit);

/* n elements of size, not zeroed, for arrays filled before use; NULL on
 * overflow or when out of memory. */
static inline void *px_alloc_array(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return malloc(n * size);
}

#endif
