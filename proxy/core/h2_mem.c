/*
 * h2_mem.c - the allocator picket gives nghttp2 (h2_mem.h): blocks of
 * H2_MEM_MAP_MIN bytes or more mapped on their own, so untouched pages of a
 * session's frame buffer are never resident; smaller ones recycled per
 * thread (tmalloc.h: nghttp2 makes a dozen small objects per stream and
 * frees them when the stream closes).
 */
#include "h2_mem.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "tmalloc.h"

static void *mem_malloc(size_t size, void *ud)
{
    (void)ud;
    return size >= H2_MEM_MAP_MIN ? px_tmalloc_paged(size) : px_tmalloc(size);
}

static void mem_free(void *ptr, void *ud)
{
    (void)ud;
    px_tfree(ptr);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    (void)ud;
    if (size != 0 && n <= SIZE_MAX / size && n * size >= H2_MEM_MAP_MIN)
        return px_tmalloc_paged(n * size); /* zero already */
    return px_tcalloc(n, size);
}

/* nghttp2 makes its frame buffer with realloc(NULL, 16 KiB and a bit):
 * a block that is or becomes that large is mapped too. */
static void *mem_realloc(void *ptr, size_t size, void *ud)
{
    void *np;
    size_t old;
    if (ptr == NULL)
        return mem_malloc(size, ud);
    if (size < H2_MEM_MAP_MIN)
        return px_trealloc(ptr, size);
    old = px_tsize(ptr);
    if ((np = px_tmalloc_paged(size)) == NULL)
        return NULL;
    memcpy(np, ptr, old < size ? old : size);
    px_tfree(ptr);
    return np;
}

nghttp2_mem *px_h2_mem(void)
{
    static nghttp2_mem mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};
    return &mem;
}

/* ---- a session's own: the frame buffer and the stream map apart ---------- */

/* n bytes in a mapping of their own, whole pages, zero; *len its length.
 * NULL when the map fails. */
static void *map_apart(size_t n, size_t *len)
{
    size_t pg = px_page_size(), l = (n + pg - 1) & ~(pg - 1);
    void *p = mmap(NULL, l, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    *len = l;
    return p;
}

static void unmap_apart(void **p, size_t *len)
{
    munmap(*p, *len);
    *p = NULL;
    *len = 0;
}

/* A block of ours resized: into the shared allocator's block, and the
 * mapping goes (from then on the session has none of that kind). */
static void *move_apart(void **p, size_t *len, size_t size)
{
    void *np = mem_malloc(size, NULL);
    if (np == NULL)
        return NULL;
    memcpy(np, *p, *len < size ? *len : size);
    unmap_apart(p, len);
    return np;
}

/* The frame buffer, n bytes, from realloc(NULL, n). Only the first such
 * block of a session is taken for it (nghttp2 makes its frame buffer so,
 * with the session; later ones are the extra pieces of frames over 16
 * KiB, freed once such a frame is out), and only once: a block taken by
 * mistake would be zeroed while in use. NULL otherwise, or when the map
 * fails: the shared allocator's. */
static void *fb_make(struct px_h2_mem *m, size_t n)
{
    if (m->fb_taken || n < H2_MEM_MAP_MIN || n > SIZE_MAX / 2)
        return NULL;
    m->fb_taken = 1;
    return m->fb = map_apart(n, &m->fb_len);
}

/* A zeroed block of whole pages under H2_MEM_MAP_MIN, when m has none (any
 * such block qualifies: px_h2_mem_idle() gives its pages back only while
 * all of it is zero, which is no change). */
static void *zb_make(struct px_h2_mem *m, size_t n)
{
    size_t pg = px_page_size();
    if (m->zb != NULL || n < pg || n % pg != 0 || n >= H2_MEM_MAP_MIN)
        return NULL;
    return m->zb = map_apart(n, &m->zb_len);
}

static void *own_malloc(size_t size, void *ud)
{
    (void)ud;
    return mem_malloc(size, NULL);
}

static void own_free(void *ptr, void *ud)
{
    struct px_h2_mem *m = ud;
    if (ptr != NULL && ptr == m->fb)
        unmap_apart(&m->fb, &m->fb_len);
    else if (ptr != NULL && ptr == m->zb)
        unmap_apart(&m->zb, &m->zb_len);
    else
        mem_free(ptr, NULL);
}

static void *own_calloc(size_t n, size_t size, void *ud)
{
    void *p = NULL;
    if (size != 0 && n <= SIZE_MAX / size)
        p = zb_make(ud, n * size);
    return p != NULL ? p : mem_calloc(n, size, NULL);
}

static void *own_realloc(void *ptr, size_t size, void *ud)
{
    struct px_h2_mem *m = ud;
    void *np;
    if (ptr == NULL) {
        np = fb_make(m, size);
        return np != NULL ? np : mem_malloc(size, NULL);
    }
    if (ptr == m->fb)
        return move_apart(&m->fb, &m->fb_len, size);
    if (ptr == m->zb)
        return move_apart(&m->zb, &m->zb_len, size);
    return mem_realloc(ptr, size, NULL);
}

void px_h2_mem_init(struct px_h2_mem *m)
{
    memset(m, 0, sizeof(*m));
    m->mem = (nghttp2_mem){m, own_malloc, own_free, own_calloc, own_realloc};
}

/* 1 when all n bytes at p (8-byte aligned, n a multiple of 8) are zero */
static int all_zero(const void *p, size_t n)
{
    const uint64_t *w = p;
    uint64_t acc = 0;
    for (size_t i = 0; i < n / 8; i++)
        acc |= w[i];
    return acc == 0;
}

size_t px_h2_mem_idle(struct px_h2_mem *m)
{
    size_t n = 0;
    if (m->fb != NULL && madvise(m->fb, m->fb_len, MADV_DONTNEED) == 0)
        n += m->fb_len;
    if (m->zb != NULL && all_zero(m->zb, m->zb_len) &&
        madvise(m->zb, m->zb_len, MADV_DONTNEED) == 0)
        n += m->zb_len;
    return n;
}
