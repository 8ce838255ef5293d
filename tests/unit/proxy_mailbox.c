/*
 * proxy_mailbox.c - TCase "mailbox" of the proxy suite: px_mailbox
 * (proxy/base/mailbox.c) on a lock-free event base (EVENT_BASE_FLAG_NOLOCK,
 * as the workers' are). Four threads post 20,000 messages each while the
 * loop runs them: every message runs once, on the loop's thread, each
 * thread's messages in the order it posted them, and the loop is woken for
 * the last of them (it would otherwise never see them). Messages still
 * queued when the mailbox is freed are dropped, not run.
 */
#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include <event2/event.h>

#include "mailbox.h"

TCase *tcase_mailbox(void);

#define PRODUCERS 4
#define PER_PRODUCER 20000

struct sink {
    struct event_base *base;
    pthread_t loop_thread;
    long next[PRODUCERS]; /* the sequence number each producer's next message must have */
    long ran, dropped, bad_order, wrong_thread;
};

struct item {
    struct sink *k;
    int producer;
    long seq;
};

static void item_run(void *arg)
{
    struct item *it = arg;
    struct sink *k = it->k;
    if (!pthread_equal(pthread_self(), k->loop_thread))
        k->wrong_thread++;
    if (it->seq != k->next[it->producer])
        k->bad_order++;
    k->next[it->producer] = it->seq + 1;
    if (++k->ran == (long)PRODUCERS * PER_PRODUCER)
        event_base_loopbreak(k->base);
    free(it);
}

static void item_drop(void *arg)
{
    struct item *it = arg;
    it->k->dropped++;
    free(it);
}

struct producer {
    struct px_mailbox *mb;
    struct sink *k;
    int id;
    int failed;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (long i = 0; i < PER_PRODUCER; i++) {
        struct item *it = malloc(sizeof(*it));
        if (it == NULL) {
            p->failed++;
            continue;
        }
        *it = (struct item){p->k, p->id, i};
        if (px_mailbox_post(p->mb, item_run, item_drop, it) != 0) {
            free(it);
            p->failed++;
        }
    }
    return NULL;
}

static struct event_base *nolock_base(void)
{
    struct event_config *ec = event_config_new();
    struct event_base *b;
    ck_assert_ptr_nonnull(ec);
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    b = event_base_new_with_config(ec);
    event_config_free(ec);
    ck_assert_ptr_nonnull(b);
    return b;
}

START_TEST(test_mailbox_many_threads)
{
    struct sink k = {0};
    struct producer p[PRODUCERS];
    pthread_t t[PRODUCERS];
    struct px_mailbox *mb;

    k.base = nolock_base();
    k.loop_thread = pthread_self();
    mb = px_mailbox_new(k.base);
    ck_assert_ptr_nonnull(mb);
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){mb, &k, i, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, produce, &p[i]), 0);
    }
    /* runs until the last message (loopbreak), or forever: a lost wake-up
     * hangs here and the TCase's timeout fails the test */
    ck_assert_int_eq(event_base_dispatch(k.base), 0);
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(p[i].failed, 0);
        ck_assert_int_eq(k.next[i], PER_PRODUCER);
    }
    ck_assert_int_eq(k.ran, (long)PRODUCERS * PER_PRODUCER);
    ck_assert_int_eq(k.bad_order, 0);
    ck_assert_int_eq(k.wrong_thread, 0);
    ck_assert_int_eq(k.dropped, 0);
    px_mailbox_free(mb);
    event_base_free(k.base);
}
END_TEST

static void post_items(struct px_mailbox *mb, struct sink *k, long from, long to)
{
    for (long i = from; i < to; i++) {
        struct item *it = malloc(sizeof(*it));
        ck_assert_ptr_nonnull(it);
        *it = (struct item){k, 0, i};
        ck_assert_int_eq(px_mailbox_post(mb, item_run, item_drop, it), 0);
    }
}

/* One message alone wakes the loop (EVLOOP_ONCE waits for it), so do
 * several; what is queued at the free is dropped. */
START_TEST(test_mailbox_free_drops)
{
    struct sink k = {0};
    struct px_mailbox *mb;

    k.base = nolock_base();
    k.loop_thread = pthread_self();
    mb = px_mailbox_new(k.base);
    ck_assert_ptr_nonnull(mb);
    post_items(mb, &k, 0, 1);
    ck_assert_int_eq(event_base_loop(k.base, EVLOOP_ONCE), 0);
    ck_assert_int_eq(k.ran, 1);
    post_items(mb, &k, 1, 3);
    ck_assert_int_eq(event_base_loop(k.base, EVLOOP_ONCE), 0);
    ck_assert_int_eq(k.ran, 3);
    post_items(mb, &k, 3, 6);
    px_mailbox_free(mb);
    ck_assert_int_eq(k.ran, 3);
    ck_assert_int_eq(k.dropped, 3);
    ck_assert_int_eq(k.bad_order, 0);
    event_base_free(k.base);
}
END_TEST

TCase *tcase_mailbox(void)
{
    TCase *tc = tcase_create("mailbox");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_mailbox_many_threads);
    tcase_add_test(tc, test_mailbox_free_drops);
    return tc;
}
