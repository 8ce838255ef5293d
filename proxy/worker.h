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
int px_worker_start(struct px_worker *w);
/* Thread-safe: hand the worker a new snapshot / policy (a reference is
 * taken for the worker) or tell it to drain. */
int px_worker_post_snapshot(struct px_worker *w, struct px_snapshot *snap);
int px_worker_post_policy(struct px_worker *w, struct px_policy_state *pol);
int px_worker_post_drain(struct px_worker *w);
/* After the thread has exited. */
void px_worker_free(struct px_worker *w);

/* Protocol entry points used by the worker. */
void px_h2_conn_drain(struct px_conn *c);
void px_h2_conn_close(struct px_conn *c); /* frees c and its streams now */
void px_h1_conn_drain(struct px_conn *c);
void px_h1_conn_close(struct px_conn *c); /* frees c and its streams now */
void px_up_h2_pool_free(struct px_pool *pool);
void px_up_h1_pool_free(struct px_pool *pool);
void px_pools_free(struct px_worker *w);

#endif
