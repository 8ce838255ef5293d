/*
 * enforce.h - the per-request decision: policy evaluation (local), or the
 * remote authorization service (dispatch.c) when a rule says so.
 */
#ifndef PX_ENFORCE_H
#define PX_ENFORCE_H

struct px_stream;

/* Decides st. Returns 0 when the request may go upstream, 1 when it was
 * answered locally (403 deny, 503 stale or no policy yet, ...). */
int px_enforce_request(struct px_stream *st);

#endif
