/*
 * proxy_mem.c - TCase "mem" of the proxy suite: the memory budget
 * (proxy/base/mem.c) and the dispatch cache's part in it (dispatch_cache.c):
 * exact accounting of tracked buffers, the pressure levels and their
 * order, the room a stream gets under pressure, and cache eviction at the
 * evict level.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "dispatch_int.h"
#include "mem.h"

TCase *tcase_mem(void);

#define MIB (1024 * 1024)

static int64_t total0;

static void setup(void)
{
    px_mem_configure(4 * MIB);
    total0 = px_mem_used();
}

START_TEST(mem_tracked_buffers_are_counted_exactly)
{
    struct evbuffer *b = evbuffer_new(), *c = evbuffer_new();
    struct px_mem_acct conn = {0, NULL}, st = {0, &conn};
    struct px_mem_tracker tb, tc;
    char buf[5000];

    memset(buf, 'x', sizeof(buf));
    evbuffer_add(b, buf, 100); /* already there when tracking starts: counted too */
    ck_assert_int_eq(px_mem_track(&tb, b, PX_MEM_RESP_BODY, &st), 0);
    ck_assert_int_eq(px_mem_track(&tc, c, PX_MEM_SOCKETS, &conn), 0);
    ck_assert_int_eq(px_mem_used() - total0, 100);
    evbuffer_add(b, buf, sizeof(buf));
    ck_assert_int_eq(st.held, 5100);
    ck_assert_int_eq(conn.held, 5100); /* the parent is charged too */
    evbuffer_remove_buffer(b, c, 3000); /* moves: one pool down, the other up */
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_SOCKETS), 3000);
    ck_assert_int_eq(st.held, 2100);
    ck_assert_int_eq(conn.held, 5100);
    evbuffer_drain(c, 1000);
    ck_assert_int_eq(px_mem_used() - total0, 4100);
    /* untracking takes what is still held off the count */
    px_mem_untrack(&tb);
    px_mem_untrack(&tc);
    px_mem_untrack(&tc); /* twice is a no-op */
    ck_assert_int_eq(px_mem_used(), total0);
    ck_assert_int_eq(conn.held, 0);
    evbuffer_add(b, buf, 10); /* no longer counted */
    ck_assert_int_eq(px_mem_used(), total0);
    evbuffer_free(b);
    evbuffer_free(c);
}
END_TEST

START_TEST(mem_levels_in_order)
{
    static const struct {
        int64_t at;
        enum px_mem_level want;
    } t[] = {
        {0, PX_MEM_OK},
        {MIB - 1, PX_MEM_OK},
        {MIB, PX_MEM_PAUSE}, /* B/4 */
        {2 * MIB - 1, PX_MEM_PAUSE},
        {2 * MIB, PX_MEM_REFUSE}, /* B/2 */
        {3 * MIB, PX_MEM_EVICT},  /* 3B/4 */
        {4 * MIB - 1, PX_MEM_EVICT},
        {4 * MIB, PX_MEM_RESET}, /* B */
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int64_t d = t[i].at - (px_mem_used() - total0);
        px_mem_charge(PX_MEM_HEADERS, NULL, d);
        ck_assert_msg(px_mem_level() == t[i].want, "at %lld: level %d, want %d",
                      (long long)t[i].at, px_mem_level(), t[i].want);
    }
    px_mem_charge(PX_MEM_HEADERS, NULL, -(px_mem_used() - total0));
    ck_assert_int_eq(px_mem_level(), PX_MEM_OK);
}
END_TEST

START_TEST(mem_room_under_pressure)
{
    /* no pressure: the limit; under pressure: a light stream keeps its
     * floor, a heavy one gets nothing more */
    ck_assert_uint_eq(px_mem_room(0, 262144), 262144);
    ck_assert_uint_eq(px_mem_room(100000, 262144), 162144);
    px_mem_charge(PX_MEM_HEADERS, NULL, MIB); /* pause level */
    ck_assert_uint_eq(px_mem_room(0, 262144), PX_MEM_FLOOR);
    ck_assert_uint_eq(px_mem_room(PX_MEM_FLOOR - 10, 262144), 10);
    ck_assert_uint_eq(px_mem_room(100000, 262144), 0);
    ck_assert_uint_eq(px_mem_room(0, 4096), 4096); /* a limit under the floor stays */
    px_mem_charge(PX_MEM_HEADERS, NULL, -MIB);
    ck_assert_uint_eq(px_mem_room(100000, 262144), 162144);
}
END_TEST

static struct px_answer *answer(int status)
{
    struct px_answer *a = px_answer_new();
    a->status = status;
    a->bytes = 1000;
    return a;
}

START_TEST(mem_cache_entries_charged_and_evicted)
{
    struct px_dsvc *s = px_dsvc_get("mem-test", 100);
    struct px_dgen g = {1, 1};
    int64_t cache0 = px_mem_pool_bytes(PX_MEM_CACHE);
    char key[16];

    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(px_dsvc_generation(s, g), 1);
    for (int i = 0; i < 10; i++) {
        struct px_answer *a = answer(200);
        snprintf(key, sizeof(key), "k%d", i);
        ck_assert_int_eq(px_dsvc_join(s, key, strlen(key), (uint64_t)i * 7919, g, NULL, NULL),
                         1);
        px_dsvc_complete(s, key, strlen(key), (uint64_t)i * 7919, g, a, PX_R_NONE, 1000, 60000);
        px_answer_unref(a);
    }
    ck_assert_int_gt(px_mem_pool_bytes(PX_MEM_CACHE) - cache0, 10 * 1000);
    {
        struct px_dentry *e = px_dsvc_lookup(s, "k3", 2, 3 * 7919, g, 2000);
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq(e->a->status, 200);
        px_dentry_unref(e);
        /* expired: a miss, and gone */
        ck_assert_ptr_null(px_dsvc_lookup(s, "k3", 2, 3 * 7919, g, 61000));
    }
    /* at the evict level the cache goes first, oldest entries first */
    px_mem_charge(PX_MEM_HEADERS, NULL, 3 * MIB); /* the level stays up without the cache */
    ck_assert_int_eq(px_mem_level(), PX_MEM_EVICT);
    px_dcache_evict_for_memory();
    /* everything it held is released (the headers charge alone keeps the
     * level up, so eviction went through every entry) */
    ck_assert_int_eq(px_mem_pool_bytes(PX_MEM_CACHE), cache0);
    ck_assert_ptr_null(px_dsvc_lookup(s, "k0", 2, 0, g, 2000));
    /* and nothing new is stored at that level */
    {
        struct px_answer *a = answer(200);
        px_dsvc_join(s, "n", 1, 42, g, NULL, NULL);
        px_dsvc_complete(s, "n", 1, 42, g, a, PX_R_NONE, 1000, 60000);
        px_answer_unref(a);
        ck_assert_ptr_null(px_dsvc_lookup(s, "n", 1, 42, g, 2000));
    }
    px_mem_charge(PX_MEM_HEADERS, NULL, -(px_mem_used() - total0));
}
END_TEST

START_TEST(mem_cache_generations)
{
    /* an answer to a check asked before a flush is not stored after it */
    struct px_dsvc *s = px_dsvc_get("gen-test", 100);
    struct px_dgen g1 = {5, 1}, g2 = {5, 2}, old = {4, 9};
    struct px_answer *a = answer(200);
    struct px_dentry *e;

    ck_assert_int_eq(px_dsvc_generation(s, g1), 1);
    ck_assert_int_eq(px_dsvc_join(s, "k", 1, 9, g1, NULL, NULL), 1);
    ck_assert_int_eq(px_dsvc_generation(s, g2), 1); /* a new revision: flush */
    px_dsvc_complete(s, "k", 1, 9, g1, a, PX_R_NONE, 1000, 60000);
    ck_assert_ptr_null(px_dsvc_lookup(s, "k", 1, 9, g1, 2000));
    ck_assert_ptr_null(px_dsvc_lookup(s, "k", 1, 9, g2, 2000));
    /* an older generation never takes over */
    ck_assert_int_eq(px_dsvc_generation(s, old), 0);
    ck_assert_int_eq(px_dsvc_join(s, "k", 1, 9, g2, NULL, NULL), 1);
    px_dsvc_complete(s, "k", 1, 9, g2, a, PX_R_NONE, 1000, 60000);
    e = px_dsvc_lookup(s, "k", 1, 9, g2, 2000);
    ck_assert_ptr_nonnull(e);
    px_dentry_unref(e);
    px_answer_unref(a);
}
END_TEST

static void *read_used(void *arg)
{
    *(int64_t *)arg = px_mem_used() + px_mem_pool_bytes(PX_MEM_SOCKETS) * 1000000;
    return NULL;
}

/* px_mem_used() and the sockets pool (times 10^6) as another thread reads
 * them: the shared counters alone. */
static int64_t used_elsewhere(void)
{
    pthread_t t;
    int64_t v = 0;
    ck_assert_int_eq(pthread_create(&t, NULL, read_used, &v), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    return v;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    px_mem_flush();
}

/* A worker's charges are summed in its thread and reach the shared
 * counters when its turn's flush runs: exact for the thread itself at
 * once, for the others after the turn (and when the event is unset). */
START_TEST(mem_thread_charges_reach_the_others_at_turn_end)
{
    struct event_base *base = event_base_new();
    struct event *fe = event_new(base, -1, 0, flush_cb, NULL);
    int64_t before = used_elsewhere();
    struct px_mem_acct acct = {0, NULL};

    ck_assert_ptr_nonnull(fe);
    px_mem_thread_flush_event(fe);
    px_mem_charge(PX_MEM_SOCKETS, &acct, 5000);
    px_mem_charge(PX_MEM_SOCKETS, &acct, -1000);
    ck_assert_int_eq(px_mem_used() - total0, 4000);
    ck_assert_int_eq(acct.held, 4000);
    ck_assert_int_eq(used_elsewhere(), before); /* not before the turn ends */
    ck_assert_int_ge(event_base_loop(base, EVLOOP_NONBLOCK), 0); /* 1: nothing left */
    ck_assert_int_eq(used_elsewhere() - before, 4000 + 4000 * 1000000LL);
    ck_assert_int_eq(px_mem_used() - total0, 4000); /* nothing counted twice */
    px_mem_charge(PX_MEM_SOCKETS, &acct, -4000);
    px_mem_thread_flush_event(NULL); /* flushes what is left */
    ck_assert_int_eq(used_elsewhere(), before);
    ck_assert_int_eq(px_mem_used(), total0);
    event_free(fe);
    event_base_free(base);
}
END_TEST

TCase *tcase_mem(void)
{
    TCase *tc = tcase_create("mem");
    tcase_add_checked_fixture(tc, setup, px_dcache_shutdown);
    tcase_add_test(tc, mem_tracked_buffers_are_counted_exactly);
    tcase_add_test(tc, mem_thread_charges_reach_the_others_at_turn_end);
    tcase_add_test(tc, mem_levels_in_order);
    tcase_add_test(tc, mem_room_under_pressure);
    tcase_add_test(tc, mem_cache_entries_charged_and_evicted);
    tcase_add_test(tc, mem_cache_generations);
    return tc;
}
