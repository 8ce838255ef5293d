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

#include "fields.h"
#include "hdrs.h"
#include "mem.h"

#define H2_MEM_MAP_MIN (12 * 1024)

/* The allocator; pass it to nghttp2_session_*_new3(). Thread-safe (no
 * state of its own). */
nghttp2_mem *px_h2_mem(void);

/* A session's own allocator, which also knows two of nghttp2's blocks so
 * that a connection that has gone idle can give their pages back:
 *  - the frame buffer: nghttp2 makes it with the session, as
 *    realloc(NULL, 16 KiB and a bit), and no other block that way; the
 *    first such block of 12 KiB or more is taken for it, once;
 *  - a zeroed block of whole pages under 12 KiB: the session's stream map
 *    (calloc of 4 KiB, made with the session), whose buckets nghttp2 sets
 *    back to zero as streams close.
 * Both are mapped on their own without a header (a header would keep
 * their first page resident). Every other block is px_h2_mem()'s. Give
 * nghttp2 &m->mem; m must outlive the session. */
struct px_h2_mem {
    nghttp2_mem mem;
    void *fb;       /* the frame buffer's mapping, or NULL */
    size_t fb_len;  /* its length (whole pages) */
    int fb_taken;   /* a block was taken for it (never a second one) */
    void *zb;       /* the zeroed block's mapping, or NULL */
    size_t zb_len;  /* its length (whole pages: what was asked) */
};
void px_h2_mem_init(struct px_h2_mem *m);

/* Gives pages back to the kernel: the frame buffer's (they read as zero
 * again when nghttp2 next writes a frame), and the zeroed block's when
 * every byte of it is zero (so nothing changes for nghttp2: an empty
 * stream map). Only when nothing waits in the frame buffer:
 * nghttp2_session_want_write() is 0 and no nghttp2 call is under way.
 * Returns the bytes given back. */
size_t px_h2_mem_idle(struct px_h2_mem *m);

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

/* One field of such an array. nghttp2 copies and lowercases every name it
 * is given, unless told the name is lowercase and outlives the frame:
 * static names (a literal, or one of hdrs.h's known names) are passed with
 * NGHTTP2_NV_FLAG_NO_COPY_NAME. Values are always copied: they live in a
 * stream that may end before its frame is written. x-request-id is never
 * indexed (each value is new: it would only push others out of the
 * peer's table). */
static inline nghttp2_nv h2_nv(const char *name, size_t nlen, const char *value, size_t vlen,
                               int static_name)
{
    uint8_t fl = static_name ? NGHTTP2_NV_FLAG_NO_COPY_NAME : NGHTTP2_NV_FLAG_NONE;
    if (px_field_never_indexed(name, nlen))
        fl |= NGHTTP2_NV_FLAG_NO_INDEX;
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, vlen, fl};
}
#define H2_NV_LIT(name, value, vlen) h2_nv("" name, sizeof(name) - 1, (value), (vlen), 1)
/* A field of a px_hdrs list */
#define H2_NV_HDR(h) h2_nv((h)->name, (h)->nlen, (h)->value, (h)->vlen, px_field_name_static((h)->name))

/* Submits t as stream id's trailers, from a data source's read callback
 * (which then sets NGHTTP2_DATA_FLAG_NO_END_STREAM): every field of t,
 * never a prefix. 0, or -1 when out of memory (the callback returns
 * NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE, which resets the stream). */
static inline int h2_submit_trailers(nghttp2_session *s, int32_t id, const struct px_hdrs *t)
{
    nghttp2_nv *nva = calloc(t->n, sizeof(*nva));
    if (nva == NULL)
        return -1;
    for (size_t i = 0; i < t->n; i++)
        nva[i] = H2_NV_HDR(&t->v[i]);
    nghttp2_submit_trailer(s, id, nva, t->n);
    free(nva);
    return 0;
}

#endif
