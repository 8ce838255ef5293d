/*
 * ws.h - the two WebSocket values picket computes itself (RFC 6455 4.1,
 * 4.2.2): a Sec-WebSocket-Key for an opening request it sends upstream,
 * and the Sec-WebSocket-Accept that answers a key. picket never parses
 * WebSocket frames: once open, a WebSocket is an opaque tunnel.
 */
#ifndef PX_WS_H
#define PX_WS_H

#include <stddef.h>

#define PX_WS_KEY_LEN 24    /* base64 of 16 bytes */
#define PX_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

/* 1 if k[0..n) is a valid Sec-WebSocket-Key: base64 of exactly 16 bytes
 * (RFC 6455 4.1, item 7). Pure. */
int px_ws_key_ok(const char *k, size_t n);

/* A new random key into out (PX_WS_KEY_LEN + 1 bytes, NUL-terminated).
 * 0, or -1 when the random generator failed. */
int px_ws_key_new(char *out);

/* The Sec-WebSocket-Accept for key k[0..n) into out (PX_WS_ACCEPT_LEN + 1
 * bytes, NUL-terminated): base64(SHA-1(key + the RFC's GUID)). 0 or -1. */
int px_ws_accept(const char *k, size_t n, char *out);

#endif
