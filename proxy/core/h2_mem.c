/*
 * h2_mem.c - the allocator picket gives nghttp2: large blocks mapped on
 * their own, so untouched pages of a session's frame buffer are never
 * resident, and small ones recycled per thread (h2_mem.h).
 *
 * nghttp2 allocates a dozen small objects per stream (the stream, its
 * frames, header buffers, outbound items) and frees them when the stream
 * closes. glibc's per-thread cache keeps only 7 chunks of a size, so at a
 * few dozen streams in flight most of them went through the arena's bins
 * (about 250 instructions a malloc/free pair, and the bins' locks). Here
 * each thread keeps up to POOL_KEEP freed blocks per 64-byte size class up
 * to POOL_MAX bytes: at most 16 x 64 KiB per thread, given back when the
 * thread ends.
 */
#include "h2_mem.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* 16 bytes: keeps malloc's 16-byte alignment for what follows */
struct blk {
    size_t size;   /* bytes asked for */
    size_t mapped; /* length of the mapping; 0 = from malloc; POOLED = a pool class's block */
};

/* Under AddressSanitizer a pooled block is poisoned while it waits, so a
 * use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define POOL_GRAIN 64
#define POOL_MAX 1024                      /* largest pooled request */
#define POOL_CLASSES (POOL_MAX / POOL_GRAIN) /* class c holds blocks of (c + 1) * 64 bytes */
#define POOL_KEEP 64                       /* freed blocks kept per class and thread */
#define POOLED ((size_t)1)                 /* never a mapping's length (a page multiple) */

struct pool {
    struct blk *free[POOL_CLASSES][POOL_KEEP];
    unsigned n[POOL_CLASSES];
};

static __thread struct pool *tl_pool;
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_release(void *arg)
{
    struct pool *p = arg;
    for (size_t c = 0; c < POOL_CLASSES; c++)
        while (p->n[c] > 0) {
            struct blk *b = p->free[c][--p->n[c]];
            UNPOISON(b + 1, (c + 1) * POOL_GRAIN);
            free(b);
        }
    free(p);
}

static void pool_key_make(void)
{
    if (pthread_key_create(&pool_key, pool_release) != 0)
        pool_key = (pthread_key_t)-1;
}

/* This thread's pool, made on first use; NULL when none can be (then
 * blocks come from malloc and go back to free, as before). */
static struct pool *pool_get(void)
{
    struct pool *p = tl_pool;
    if (p != NULL)
        return p;
    pthread_once(&pool_once, pool_key_make);
    if (pool_key == (pthread_key_t)-1 || (p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    if (pthread_setspecific(pool_key, p) != 0) {
        free(p);
        return NULL;
    }
    tl_pool = p;
    return p;
}

/* The class of a block for size bytes, or -1 when it is not pooled. */
static int pool_class(size_t size)
{
    return size == 0 || size > POOL_MAX ? -1 : (int)((size - 1) / POOL_GRAIN);
}

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
    {
        int c = pool_class(size);
        struct pool *p = c >= 0 ? pool_get() : NULL;
        if (p != NULL) {
            b = p->n[c] > 0 ? p->free[c][--p->n[c]]
                            : malloc(sizeof(*b) + (size_t)(c + 1) * POOL_GRAIN);
            if (b == NULL)
                return NULL;
            UNPOISON(b + 1, size);
            if (zero)
                memset(b + 1, 0, size);
            b->size = size;
            b->mapped = POOLED;
            return b + 1;
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
    if (b->mapped == POOLED) {
        /* back to this thread's pool (a block made on another thread is
         * the same malloc'd memory: any pool may keep it) */
        int c = pool_class(b->size);
        struct pool *p = pool_get();
        if (p != NULL && p->n[c] < POOL_KEEP) {
            p->free[c][p->n[c]++] = b;
            POISON(b + 1, (size_t)(c + 1) * POOL_GRAIN);
            return;
        }
        free(b);
    } else if (b->mapped) {
        munmap(b, b->mapped);
    } else {
        free(b);
    }
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
    if (b->mapped == POOLED) {
        /* within its class: keep it; else a new block of the right kind */
        int c = pool_class(b->size);
        if (pool_class(size) == c) {
            UNPOISON(ptr, size);
            b->size = size;
            return ptr;
        }
    } else if (!b->mapped && size < H2_MEM_MAP_MIN) {
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
