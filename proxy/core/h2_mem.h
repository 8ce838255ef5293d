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

#include <stdlib.h>

#include <nghttp2/nghttp2.h>

#include "mem.h"

#define H2_MEM_MAP_MIN (12 * 1024)

/* The allocator; pass it to nghttp2_session_*_new3(). Thread-safe (no
 * state of its own). */
nghttp2_mem *px_h2_mem(void);

/* The name/value array handed to nghttp2_submit_*(), which copies it: a
 * header block of up to H2_NV_LOCAL fields uses the caller's local array,
 * a longer one is allocated (NULL when out of memory). */
#define H2_NV_LOCAL 32
static inline nghttp2_nv *h2_nv_array(nghttp2_nv *local, size_t n)
{
    return n <= H2_NV_LOCAL ? local : px_alloc_array(n, sizeof(nghttp2_nv));
}
static inline void h2_nv_array_free(nghttp2_nv *nva, const nghttp2_nv *local)
{
    if (nva != local)
        free(nva);
}

#endif
