/*
 * h1.h - the downstream HTTP/1.x (h1.c, h1_request.c) half: what the worker calls at
 * accept time. Everything else reaches the connection through c->ops.
 */
#ifndef PX_H1_H
#define PX_H1_H

#include "px.h"

/* Starts the protocol on c once TLS (if any) is up: sets c->ops and
 * c->proto_ctx. 0, or -1 (c is left for the caller to free). */
int px_h1_conn_start(struct px_conn *c);

#endif
