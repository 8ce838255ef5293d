/*
 * mailbox.c - work posted to an event loop from other threads (mailbox.h).
 */
#include "mailbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <event2/event.h>

struct msg {
    struct msg *next;
    void (*run)(void *arg);
    void (*drop)(void *arg);
    void *arg;
};

struct px_mailbox {
    pthread_mutex_t mu;
    struct msg *head, *tail; /* under mu */
    int efd;
    struct event *ev;
};

/* The loop's side: clear the wake-up first, then take the whole queue, so
 * a message posted after the take wakes the loop again. */
static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_mailbox *mb = arg;
    uint64_t v;
    struct msg *m;
    (void)what;
    while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&mb->mu);
    m = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->mu);
    while (m != NULL) {
        struct msg *next = m->next;
        m->run(m->arg);
        free(m);
        m = next;
    }
}

struct px_mailbox *px_mailbox_new(struct event_base *base)
{
    struct px_mailbox *mb = calloc(1, sizeof(*mb));
    if (mb == NULL)
        return NULL;
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->efd < 0) {
        free(mb);
        return NULL;
    }
    mb->ev = event_new(base, mb->efd, EV_READ | EV_PERSIST, wake_cb, mb);
    if (mb->ev == NULL || event_add(mb->ev, NULL) != 0) {
        if (mb->ev != NULL)
            event_free(mb->ev);
        close(mb->efd);
        free(mb);
        return NULL;
    }
    pthread_mutex_init(&mb->mu, NULL);
    return mb;
}

int px_mailbox_post(struct px_mailbox *mb, void (*run)(void *arg), void (*drop)(void *arg),
                    void *arg)
{
    struct msg *m = malloc(sizeof(*m));
    const uint64_t one = 1;
    int was_empty;
    if (mb == NULL || m == NULL) { /* the control thread's pseudo-worker has none */
        free(m);
        return -1;
    }
    m->next = NULL;
    m->run = run;
    m->drop = drop;
    m->arg = arg;
    pthread_mutex_lock(&mb->mu);
    was_empty = mb->head == NULL;
    if (mb->tail != NULL)
        mb->tail->next = m;
    else
        mb->head = m;
    mb->tail = m;
    pthread_mutex_unlock(&mb->mu);
    /* A counter that cannot overflow here (at most one write per message):
     * the write only fails with EINTR, retried. */
    if (was_empty)
        while (write(mb->efd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
    return 0;
}

void px_mailbox_free(struct px_mailbox *mb)
{
    struct msg *m;
    if (mb == NULL)
        return;
    event_free(mb->ev);
    close(mb->efd);
    m = mb->head;
    while (m != NULL) {
        struct msg *next = m->next;
        if (m->drop != NULL)
            m->drop(m->arg);
        free(m);
        m = next;
    }
    pthread_mutex_destroy(&mb->mu);
    free(mb);
}
