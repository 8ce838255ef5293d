/*
 * h1_int.h - shared by h1.c (downstream HTTP/1.x) and up_h1.c (upstream
 * HTTP/1.1 pools) only: the field syntax checks both directions apply,
 * and the output bound.
 *
 * The entry points the worker calls (px_h1_conn_drain, px_h1_conn_close,
 * px_up_h1_pool_free) are declared in worker.h.
 */
#ifndef PX_H1_INT_H
#define PX_H1_INT_H

#include <stddef.h>

#include "px.h"

/* Bytes of a bufferevent's output we fill before waiting for the write
 * callback: body bytes move from a stream buffer to a socket only while
 * the output holds less than this, so a peer that does not read cannot
 * make us queue more than OUT_HIGH plus one header block. */
#define PX_H1_OUT_HIGH (64 * 1024)
/* The write callback fires when the output drains to this. */
#define PX_H1_OUT_LOW (16 * 1024)

/* 1 if p[0..n) is a field name: 1*tchar (RFC 9110 5.1, 5.6.2). Rejects
 * empty names, spaces and anything before a colon that is not a token. */
int px_h1_name_ok(const char *p, size_t n);

/* 1 if p[0..n) may appear in a field value: HTAB, SP, VCHAR, obs-text
 * (RFC 9110 5.5). CR, LF, NUL and other controls are refused: they are
 * how responses get split and requests smuggled. */
int px_h1_value_ok(const char *p, size_t n);

/* Strips optional whitespace (SP / HTAB) from both ends of *p[0..*n). */
void px_h1_trim(const char **p, size_t *n);

/* 1 if a field named name[0..n) (lowercase) may be forwarded as a
 * trailer. Framing, routing and identity fields are refused in trailers
 * (RFC 9110 6.5.1), including the ones picket itself writes into
 * headers, so an app that merges trailers into headers cannot be fooled. */
int px_h1_trailer_allowed(const char *name, size_t n);

/* 1 for methods a proxy may replay after a connection failure
 * (RFC 9110 9.2.2). */
int px_h1_idempotent(const char *method);

#endif
