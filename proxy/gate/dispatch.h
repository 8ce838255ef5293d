/*
 * dispatch.h - remote authorization (rules with action "dispatch").
 */
#ifndef PX_DISPATCH_H
#define PX_DISPATCH_H

#include "px.h"

/* Decides st through the authorization service `name` (dispatch.NAME):
 * from the worker's cache, by joining an identical check in flight, or by
 * sending a new check. The stream is answered (deny, error) or forwarded
 * (allow) now or when the answer arrives. Returns 1 (always taken care
 * of). Worker thread. */
int px_dispatch_request(struct px_stream *st, const char *name);

/* Frees the worker's caches and cancels its checks (after its streams). */
void px_dispatch_free(struct px_worker *w);

#endif
