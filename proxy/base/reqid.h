/*
 * reqid.h - request IDs.
 */
#ifndef PX_REQID_H
#define PX_REQID_H

#include <stddef.h>

/* A fresh UUID v4 into out (at least 37 bytes), from a per-thread
 * generator seeded once from the OS. Unique, not secret. */
void px_request_id_new(char *out);

/* 1 if v[0..n) is usable as a request ID (1-63 visible ASCII, no quotes or
 * backslashes). Pure. */
int px_request_id_ok(const char *v, size_t n);

#endif
