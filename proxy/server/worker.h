/*
 * worker.h - worker threads and the messages the control thread sends
 * them (new snapshot, new policy, drain).
 */
#ifndef PX_WORKER_H
#define PX_WORKER_H

#include "px.h"

/* Binds this worker's listeners (SO_REUSEPORT) on w->base from w->snap.
 * Control thread, before px_worker_start(). */
int px_worker_listen(struct px_worker *w, char *err, size_t errlen);
/* The part of px_worker_listen() that opens no socket: w->listeners from
 * w->snap, with their names and metrics. */
int px_worker_init_listeners(struct px_worker *w, char *err, size_t errlen);
/* A socket accepted on listener l (the peer's address sa): what the
 * listener's accept callback does with it, from the connection caps to the
 * TLS handshake or the protocol sniff; the connection owns fd from here.
 * Also for a socket accepted elsewhere (the TLS fuzzer's socket pairs).
 * The worker's thread. */
void px_worker_accept(struct px_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen);
/* A new downstream connection on l from sa, on l's worker's list, counted,
 * with the handshake timer armed; no bufferevent yet (the caller sets
 * c->bev). NULL when out of memory. */
int px_worker_start(struct px_worker *w);
/* Thread-safe: hand the worker a new snapshot / policy (a reference is
 * taken for the worker) or tell it to drain. */
int px_worker_post_snapshot(struct px_worker *w, struct px_snapshot *snap);
int px_worker_post_policy(struct px_worker *w, struct px_policy_state *pol);
int px_worker_post_drain(struct px_worker *w);
/* After the thread has exited. */
void px_worker_free(struct px_worker *w);

#endif
