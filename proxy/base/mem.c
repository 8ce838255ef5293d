/*
 * mem.c - the memory budget (mem.h): pool counters, evbuffer tracking,
 * pressure levels and their metrics.
 *
 * Each tracked evbuffer carries a callback that libevent calls with the
 * bytes added and removed by every operation, whoever performs it; the
 * callback adds the difference to the pool and to the owner's account. The
 * pool counters are relaxed atomics shared by all workers. A worker sums
 * its charges in the thread and adds them once per loop turn (its flush
 * event): two atomic adds per buffer operation were 2-3% of a small
 * request's CPU time (perf, track_cb and px_mem_charge), instructions
 * few but each a full barrier.
 */
#include "mem.h"

#include <stdatomic.h>
#include <stdio.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "metrics.h"

static _Atomic int64_t pool_bytes[PX_MEM_NPOOLS];
static _Atomic int64_t total_bytes;
/* HTTP/2 window bytes picket may still grant peers beyond each stream's
 * first PX_STREAM_SLACK: budget/4 in all (px_mem_window_take). */
static _Atomic int64_t window_avail = 16 * 1024 * 1024;
static _Thread_local struct event *over_ev; /* this thread's "over the budget" event */
static _Thread_local struct event *flush_ev; /* this thread's px_mem_flush() event */
static _Thread_local int flush_armed;        /* flush_ev is active */
/* this thread's charges not yet in the shared counters (flush_ev's) */
static _Thread_local int64_t tl_pool[PX_MEM_NPOOLS], tl_total;
static _Atomic int64_t budget = 64 * 1024 * 1024;
static struct px_counter *pressure[4];

static const char *const pool_names[PX_MEM_NPOOLS] = {"request_body", "response_body", "sockets",
                                                      "headers", "dispatch_cache"};
static const char *const action_names[4] = {"pause", "refuse", "evict", "reset"};

const char *px_mem_pool_name(enum px_mem_pool p)
{
    return (unsigned)p < PX_MEM_NPOOLS ? pool_names[p] : "unknown";
}

const char *px_mem_action_name(enum px_mem_action a)
{
    return (unsigned)a < 4 ? action_names[a] : "unknown";
}

static double pool_gauge(void *arg)
{
    return (double)atomic_load_explicit(&pool_bytes[(uintptr_t)arg], memory_order_relaxed);
}

static double budget_gauge(void *arg)
{
    (void)arg;
    return (double)atomic_load_explicit(&budget, memory_order_relaxed);
}

void px_mem_configure(int64_t b)
{
    char labels[64];
    if (b > 0) {
        int64_t old = atomic_exchange_explicit(&budget, b, memory_order_relaxed);
        atomic_fetch_add_explicit(&window_avail, b / 4 - old / 4, memory_order_relaxed);
    }
    for (uintptr_t i = 0; i < PX_MEM_NPOOLS; i++) {
        snprintf(labels, sizeof(labels), "pool=\"%s\"", pool_names[i]);
        px_gauge_fn("picket_memory_bytes", "Bytes held for peers, by pool (limits.memory_budget)",
                    labels, pool_gauge, (void *)i);
    }
    px_gauge_fn("picket_memory_budget_bytes", "limits.memory_budget", "", budget_gauge, NULL);
    for (int i = 0; i < 4; i++) {
        snprintf(labels, sizeof(labels), "action=\"%s\"", action_names[i]);
        pressure[i] = px_counter_get("picket_memory_pressure_total",
                                     "Actions taken because the memory budget was under pressure",
                                     labels);
    }
}

int64_t px_mem_budget(void)
{
    return atomic_load_explicit(&budget, memory_order_relaxed);
}

void px_mem_charge(enum px_mem_pool p, struct px_mem_acct *acct, int64_t delta)
{
    int64_t total;
    if (delta == 0)
        return;
    for (; acct != NULL; acct = acct->parent)
        acct->held += delta;
    if (flush_ev != NULL) {
        tl_pool[p] += delta;
        tl_total += delta;
        if (!flush_armed) {
            flush_armed = 1;
            event_active(flush_ev, EV_TIMEOUT, 0);
        }
        total = atomic_load_explicit(&total_bytes, memory_order_relaxed) + tl_total;
    } else {
        atomic_fetch_add_explicit(&pool_bytes[p], delta, memory_order_relaxed);
        total = atomic_fetch_add_explicit(&total_bytes, delta, memory_order_relaxed) + delta;
    }
    if (delta > 0 && over_ev != NULL && total >= atomic_load_explicit(&budget, memory_order_relaxed))
        event_active(over_ev, EV_TIMEOUT, 0); /* never act inside a buffer operation */
}

void px_mem_flush(void)
{
    for (int i = 0; i < PX_MEM_NPOOLS; i++) {
        if (tl_pool[i] != 0)
            atomic_fetch_add_explicit(&pool_bytes[i], tl_pool[i], memory_order_relaxed);
        tl_pool[i] = 0;
    }
    if (tl_total != 0)
        atomic_fetch_add_explicit(&total_bytes, tl_total, memory_order_relaxed);
    tl_total = 0;
    flush_armed = 0;
}

void px_mem_thread_event(struct event *ev)
{
    over_ev = ev;
}

void px_mem_thread_flush_event(struct event *ev)
{
    px_mem_flush();
    flush_ev = ev;
}

int64_t px_mem_pool_bytes(enum px_mem_pool p)
{
    return atomic_load_explicit(&pool_bytes[p], memory_order_relaxed) + tl_pool[p];
}

int64_t px_mem_used(void)
{
    return atomic_load_explicit(&total_bytes, memory_order_relaxed) + tl_total;
}

enum px_mem_level px_mem_level(void)
{
    int64_t used = px_mem_used(), b = px_mem_budget();
    if (used >= b)
        return PX_MEM_RESET;
    if (used >= b / 4 * 3)
        return PX_MEM_EVICT;
    if (used >= b / 2)
        return PX_MEM_REFUSE;
    if (used >= b / 4)
        return PX_MEM_PAUSE;
    return PX_MEM_OK;
}

size_t px_mem_window_take(size_t want)
{
    int64_t avail = atomic_load_explicit(&window_avail, memory_order_relaxed);
    for (;;) {
        int64_t n = avail < (int64_t)want ? avail : (int64_t)want;
        if (n <= 0)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&window_avail, &avail, avail - n,
                                                  memory_order_relaxed, memory_order_relaxed))
            return (size_t)n;
    }
}

void px_mem_window_give(size_t n)
{
    if (n > 0)
        atomic_fetch_add_explicit(&window_avail, (int64_t)n, memory_order_relaxed);
}

void px_mem_pressure(enum px_mem_action a)
{
    if ((unsigned)a < 4 && pressure[a] != NULL)
        px_counter_add(pressure[a], 1);
}

size_t px_mem_room(int64_t held, size_t limit)
{
    size_t h = held > 0 ? (size_t)held : 0;
    if (px_mem_level() >= PX_MEM_PAUSE && limit > PX_MEM_FLOOR) {
        if (h < limit)
            px_mem_pressure(PX_MEM_ACT_PAUSE); /* cut short by the budget */
        limit = PX_MEM_FLOOR;
    }
    return h < limit ? limit - h : 0;
}

/* ---- evbuffer tracking ---------------------------------------------------- */

static void track_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    struct px_mem_tracker *t = arg;
    (void)b;
    px_mem_charge(t->pool, t->acct, (int64_t)info->n_added - (int64_t)info->n_deleted);
}

int px_mem_track(struct px_mem_tracker *t, struct evbuffer *b, enum px_mem_pool p,
                 struct px_mem_acct *acct)
{
    t->b = NULL;
    t->pool = p;
    t->acct = acct;
    t->cb = evbuffer_add_cb(b, track_cb, t);
    if (t->cb == NULL)
        return -1;
    t->b = b;
    px_mem_charge(p, acct, (int64_t)evbuffer_get_length(b));
    return 0;
}

void px_mem_untrack(struct px_mem_tracker *t)
{
    if (t == NULL || t->b == NULL)
        return;
    evbuffer_remove_cb_entry(t->b, t->cb);
    px_mem_charge(t->pool, t->acct, -(int64_t)evbuffer_get_length(t->b));
    t->b = NULL;
    t->cb = NULL;
}
