/*
 * mailbox.h - work posted to an event loop from other threads.
 *
 * A worker's event base is made without libevent's lock
 * (EVENT_BASE_FLAG_NOLOCK): every event_add, event_del, event_active and
 * loop turn would otherwise take and release a mutex, about a dozen pairs
 * per proxied request. Nothing but the worker's own thread may then touch
 * its base or its events; other threads (the control thread's new
 * snapshots and drain orders, another worker's authorization answers)
 * post a message here instead, and the loop runs it on its own thread.
 *
 * Messages run in the order they were posted, each once. The queue is a
 * mutex-guarded list; an eventfd wakes the loop when the queue goes from
 * empty to not empty (one write(2) per burst, one read(2) per wake-up).
 */
#ifndef PX_MAILBOX_H
#define PX_MAILBOX_H

struct event_base;
struct px_mailbox;

/* A mailbox whose messages run on base's loop (on its thread). NULL when
 * out of memory or file descriptors. Call on base's thread, or before its
 * loop starts. */
struct px_mailbox *px_mailbox_new(struct event_base *base);

/* Any thread: run(arg) on the loop's thread, after the messages posted
 * before it. If the mailbox is freed before the message ran, drop(arg)
 * runs instead, on the freeing thread (drop may be NULL). 0, or -1 when
 * out of memory or mb is NULL (nothing was queued; run and drop are not
 * called). */
int px_mailbox_post(struct px_mailbox *mb, void (*run)(void *arg), void (*drop)(void *arg),
                    void *arg);

/* Frees mb (NULL is fine) once its loop no longer runs: messages still
 * queued are dropped (their drop runs). */
void px_mailbox_free(struct px_mailbox *mb);

#endif
