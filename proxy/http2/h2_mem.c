/*
 * h2_mem.c - the allocator picket gives nghttp2: large blocks mapped on
 * their own, so untouched pages of a session's frame buffer are never
 * resident (h2_mem.h).
 */
#include "h2_mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* 16 bytes: keeps malloc's 16-byte alignment for what follows */
struct blk {
    size_t size;   /* bytes asked for */
    size_t mapped; /* length of the mapping, 0 = from malloc */
};

static size_t page_size(void)
{
    static size_t pg;
    if (pg == 0) {
        long v = sysconf(_SC_PAGESIZE);
        pg = v > 0 ? (size_t)v : 4096;
    }
    return pg;
}

static void *blk_alloc(size_t size, int zero)
{
    struct blk *b;
    if (size > SIZE_MAX - sizeof(*b) - page_size())
        return NULL;
    if (size >= H2_MEM_MAP_MIN) {
        size_t len = (size + sizeof(*b) + page_size() - 1) & ~(page_size() - 1);
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) { /* else (map count limit, say): from malloc */
            b = p;
            b->size = size;
            b->mapped = len;
            return b + 1; /* fresh mappings are zero */
        }
    }
    b = zero ? calloc(1, sizeof(*b) + size) : malloc(sizeof(*b) + size);
    if (b == NULL)
        return NULL;
    b->size = size;
    b->mapped = 0;
    return b + 1;
}

static void mem_free(void *ptr, void *ud)
{
    struct blk *b;
    (void)ud;
    if (ptr == NULL)
        return;
    b = (struct blk *)ptr - 1;
    if (b->mapped)
        munmap(b, b->mapped);
    else
        free(b);
}

static void *mem_malloc(size_t size, void *ud)
{
    (void)ud;
    return blk_alloc(size, 0);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    (void)ud;
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return blk_alloc(n * size, 1);
}

static void *mem_realloc(void *ptr, size_t size, void *ud)
{
    struct blk *b, *nb;
    void *np;
    if (ptr == NULL)
        return mem_malloc(size, ud);
    b = (struct blk *)ptr - 1;
    if (!b->mapped && size < H2_MEM_MAP_MIN) {
        if (size > SIZE_MAX - sizeof(*b))
            return NULL;
        nb = realloc(b, sizeof(*b) + size);
        if (nb == NULL)
            return NULL;
        nb->size = size;
        return nb + 1;
    }
    np = blk_alloc(size, 0);
    if (np == NULL)
        return NULL;
    memcpy(np, ptr, b->size < size ? b->size : size);
    mem_free(ptr, ud);
    return np;
}

nghttp2_mem *px_h2_mem(void)
{
    static nghttp2_mem mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};
    return &mem;
}
