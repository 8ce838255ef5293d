/*
 * gate.h - the per-request pipeline (pipeline.c): the px_gate every
 * listener hands its requests to, and where dispatch.c resumes a request
 * the authorization service allowed.
 */
#ifndef PX_GATE_H
#define PX_GATE_H

#include "px.h"

/* Set on every data-path listener by the worker. */
extern const struct px_gate px_gate_pipeline;

/* An allowed request: picks its route (404 when none) and starts its
 * upstream. */
void px_stream_forward(struct px_stream *st);

#endif
