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
#include <unistd.h>

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

static size_t fb_len_of(size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t p = pg > 0 ? (size_t)pg : 4096;
    return (n + p - 1) & ~(p - 1);
}

/* The frame buffer, n bytes, from realloc(NULL, n): a mapping of its
 * own. Only the first such block of a session is taken for it (nghttp2
 * makes its frame buffer so, with the session; later ones are the extra
 * pieces of frames over 16 KiB, freed once such a frame is out), and only
 * once: a block taken by mistake would be zeroed while in use. NULL
 * otherwise, or when the map fails: the shared allocator's. */
static void *fb_make(struct px_h2_mem *m, size_t n)
{
    void *p;
    if (m->fb_taken || n < H2_MEM_MAP_MIN || n > SIZE_MAX / 2)
        return NULL;
    m->fb_taken = 1;
    p = mmap(NULL, fb_len_of(n), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    m->fb = p;
    m->fb_len = fb_len_of(n);
    m->fb_size = n;
    return p; /* zero */
}

static void fb_drop(struct px_h2_mem *m)
{
    munmap(m->fb, m->fb_len);
    m->fb = NULL;
    m->fb_len = m->fb_size = 0;
}

static void *own_malloc(size_t size, void *ud)
{
    (void)ud;
    return mem_malloc(size, NULL);
}

static void own_free(void *ptr, void *ud)
{
    struct px_h2_mem *m = ud;
    if (ptr != NULL && ptr == m->fb) {
        fb_drop(m);
    } else if (ptr != NULL && ptr == m->zb) {
        munmap(m->zb, m->zb_len);
        m->zb = NULL;
        m->zb_len = 0;
    } else {
        mem_free(ptr, NULL);
    }
}

/* A zeroed block of whole pages under H2_MEM_MAP_MIN: a mapping of its
 * own when m has none (any such block qualifies: px_h2_mem_idle() gives
 * its pages back only while all of it is zero, which is no change). */
static void *zb_make(struct px_h2_mem *m, size_t n)
{
    size_t pg = fb_len_of(1);
    void *p;
    if (m->zb != NULL || n < pg || n % pg != 0 || n >= H2_MEM_MAP_MIN)
        return NULL;
    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    m->zb = p;
    m->zb_len = n;
    return p; /* zero */
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
    if (ptr == m->zb) {
        /* into the shared allocator's block, as the frame buffer below */
        if ((np = mem_malloc(size, NULL)) == NULL)
            return NULL;
        memcpy(np, ptr, m->zb_len < size ? m->zb_len : size);
        munmap(m->zb, m->zb_len);
        m->zb = NULL;
        m->zb_len = 0;
        return np;
    }
    if (ptr != m->fb)
        return mem_realloc(ptr, size, NULL);
    /* the frame buffer itself, resized: into the shared allocator's block,
     * and from then on the session has none of its own */
    if ((np = mem_malloc(size, NULL)) == NULL)
        return NULL;
    memcpy(np, ptr, m->fb_size < size ? m->fb_size : size);
    fb_drop(m);
    return np;
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
