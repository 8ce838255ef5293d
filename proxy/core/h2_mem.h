/*
 * h2_mem.h - the allocator picket gives nghttp2 (nghttp2_mem).
 *
 * An nghttp2 session allocates its frame buffer (16 KiB and a little) when
 * it is made and keeps it for its whole life. From malloc that is 16 KiB of
 * resident memory per connection, idle or not, a third of what an idle
 * mTLS connection cost. Blocks of H2_MEM_MAP_MIN bytes or more are mapped
 * on their own instead: a page the session never writes is never resident
 * (a connection that only ever sent small frames holds one page of it).
 * Smaller blocks come from the per-thread classes of tmalloc.h.
 */
#ifndef PX_H2_MEM_H
#define PX_H2_MEM_H

#include <nghttp2/nghttp2.h>

#define H2_MEM_MAP_MIN (12 * 1024)

/* The allocator; pass it to nghttp2_session_*_new3(). Thread-safe (no
 * state of its own). */
nghttp2_mem *px_h2_mem(void);

#endif
