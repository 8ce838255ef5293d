/*
 * h2.h - the downstream HTTP/2 (h2.c, nghttp2) half: what the worker calls at
 * accept time. Everything else reaches the connection through c->ops.
 */
#ifndef PX_H2_H
#define PX_H2_H

#include "px.h"

/* Starts the protocol on c once TLS (if any) is up: sets c->ops and
 * c->proto_ctx. 0, or -1 (c is left for the caller to free). */
int px_h2_conn_start(struct px_conn *c);

#endif
