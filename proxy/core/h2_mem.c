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
