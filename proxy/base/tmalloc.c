/*
 * tmalloc.c - per-thread recycling of the blocks a request makes and frees
 * (tmalloc.h).
 */
#include "tmalloc.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* gcc says __SANITIZE_ADDRESS__, clang (the fuzzers' builds) answers
 * __has_feature(address_sanitizer) */
#if defined(__SANITIZE_ADDRESS__)
#define PX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PX_ASAN 1
#endif
#endif

#if defined(PX_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#define ROOTS(p, n) __lsan_register_root_region((p), (n))
#define UNROOTS(p, n) __lsan_unregister_root_region((p), (n))
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#define ROOTS(p, n) ((void)(p), (void)(n))
#define UNROOTS(p, n) ((void)(p), (void)(n))
#endif

/* 16 bytes: keeps malloc's 16-byte alignment for what follows */
struct hdr {
    size_t size; /* bytes asked for */
    size_t cls;  /* its class, or BIG (malloc) or MAPPED (its own mapping) */
};

#define NFINE 16               /* classes 0..15: (c + 1) * 16 bytes, up to 256 */
#define NSMALL (NFINE + 12)    /* 16..27: 64-byte steps, 320 up to 1 KiB */
#define NCLS (NSMALL + 8)      /* then 2, 3, 4, 8, 16, 32, 64 and 128 KiB */
#define BIG ((size_t)-1)
#define MAPPED ((size_t)-2)

/* Blocks a class keeps for good (floor) and at most (cap). A worker
 * with a few hundred requests in flight makes and frees that many of each
 * of their objects at once, and the count in flight swings by more than
 * that between loop turns: with 32 connections of 10 streams, the 1 KiB
 * class alone swung by 1,344 blocks, and a floor of 256 sent 2.4 of its
 * blocks per request to malloc and free (a third of the classes' traffic;
 * after a burst of connections glibc's bins are full of the closed ones'
 * chunks, and its search for each became 6% of the CPU). So a class keeps
 * up to its cap, and px_tmalloc_decay() gives back, down to the floor,
 * what stayed unused from one call to the next: what a class keeps above
 * its floor is what the thread's requests held a moment ago.
 * The large classes are libevent's buffer chains (powers of two), which
 * every read of a large body takes and gives back: after a burst their
 * search was a sixth of the CPU that moved 1 MiB responses. */
static const unsigned floor_keep[NCLS] = {
    256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, /* <= 256 B */
    256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256,                     /* <= 1 KiB */
    64, 32, 32, 16,                                                                 /* 2-8 KiB */
    8, 4, 2, 1,                                                                     /* 16-128 KiB */
};
#define CAP_SMALL 4096u /* classes up to 1 KiB: at most 4 MiB (1 KiB class) */

static unsigned cap_of(size_t c)
{
    return c < NSMALL ? CAP_SMALL : floor_keep[c];
}

/* Raw blocks (px_rawmalloc): no header, each a malloc'd block of
 * PX_RAW_BYTES, told apart at free by its usable size. */
#define RAW_CAP 64
#define RAW_FLOOR 8

/* A class's free blocks wait in a stack of pointers (its cap's worth of
 * slots), not in a list through the blocks: taking a block reads only the
 * stack's top, never the block, which after a loop turn of a few hundred
 * requests is long out of the cache (a list's next pointer, read from the
 * block taken, was a cache miss in every px_tmalloc: px_tmalloc was
 * 4.6-4.8% of the CPU of small requests, 2.7-3.2% after; perf). The
 * payload stays untouched while it waits (and poisoned under
 * AddressSanitizer). The stacks live in one mapping per thread, made at
 * first use: only the slots a class has used are resident. Raw blocks
 * wait in an array in the pool itself. */
struct pool {
    struct hdr **stk[NCLS];
    unsigned n[NCLS];
    unsigned low[NCLS]; /* fewest kept since the last decay */
    void *raw[RAW_CAP];
    unsigned nraw, rawlow;
    void *map;
    size_t map_len;
};

/* The pool itself is in the thread's own storage (static TLS) and its
 * stacks in a mapping, not from malloc, which a malloc-counting test
 * would see come and go; LeakSanitizer is told to scan the stacks, so it
 * still sees the blocks they keep. */
static __thread struct pool tl_pool_s;
static __thread int tl_pool_state; /* 0: unset, 1: ready, -1: none (no key or no mapping) */
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int pool_key_ok;

/* Above 1 KiB the classes are powers of two (libevent's buffer chains)
 * and 3 KiB: nghttp2's session object is 2,928 bytes, held for the life
 * of every connection, and in the 4 KiB class it wasted 1,168 of them. */
static const size_t big_bytes[NCLS - NSMALL] = {2048, 3072, 4096, 8192, 16384, 32768, 65536, 131072};

static size_t cls_bytes(size_t c)
{
    if (c < NFINE)
        return (c + 1) * 16;
    if (c < NSMALL)
        return 256 + (c - NFINE + 1) * 64;
    return big_bytes[c - NSMALL];
}

/* The class of a block for n bytes, or BIG. */
static size_t cls_of(size_t n)
{
    if (n <= 256)
        return n == 0 ? 0 : (n - 1) / 16;
    if (n <= 1024)
        return NFINE + (n - 257) / 64;
    for (size_t c = NSMALL; c < NCLS; c++)
        if (n <= big_bytes[c - NSMALL])
            return c;
    return BIG;
}

static struct hdr *pop(struct pool *p, size_t c)
{
    struct hdr *h = p->stk[c][--p->n[c]];
    if (p->n[c] < p->low[c])
        p->low[c] = p->n[c];
    return h;
}

/* p->n[c] < cap_of(c) */
static void push(struct pool *p, size_t c, struct hdr *h)
{
    p->stk[c][p->n[c]++] = h;
}

static void *raw_pop(struct pool *p)
{
    void *b = p->raw[--p->nraw];
    if (p->nraw < p->rawlow)
        p->rawlow = p->nraw;
    UNPOISON(b, PX_RAW_BYTES);
    return b;
}

/* Gives k of class c's kept blocks back to malloc (k <= p->n[c]). */
static void give_back(struct pool *p, size_t c, unsigned k)
{
    for (; k > 0; k--) {
        struct hdr *h = pop(p, c);
        UNPOISON(h + 1, cls_bytes(c));
        free(h);
    }
}

static void raw_give_back(struct pool *p, unsigned k)
{
    for (; k > 0; k--)
        free(raw_pop(p));
}

static void pool_empty(struct pool *p)
{
    for (size_t c = 0; c < NCLS; c++)
        give_back(p, c, p->n[c]);
    raw_give_back(p, p->nraw);
}

/* The pool's stacks (stacks_map()) go. */
static void stacks_unmap(struct pool *p)
{
    UNROOTS(p->map, p->map_len);
    munmap(p->map, p->map_len);
    p->map = NULL;
}

/* The thread ends: what it kept goes back to malloc, and blocks freed
 * after this (by later destructors) go straight to free. */
static void pool_release(void *arg)
{
    struct pool *p = arg;
    pool_empty(p);
    stacks_unmap(p);
    tl_pool_state = -1;
}

void px_tmalloc_trim(void)
{
    if (tl_pool_state == 1)
        pool_empty(&tl_pool_s);
}

/* How many of n kept blocks to give back: those no allocation took since
 * the last decay (low of them), but never below floor. */
static unsigned idle_blocks(unsigned n, unsigned low, unsigned floor)
{
    if (n <= floor)
        return 0;
    return low < n - floor ? low : n - floor;
}

void px_tmalloc_decay(void)
{
    struct pool *p = &tl_pool_s;
    if (tl_pool_state != 1)
        return;
    for (size_t c = 0; c < NCLS; c++) {
        give_back(p, c, idle_blocks(p->n[c], p->low[c], floor_keep[c]));
        p->low[c] = p->n[c];
    }
    raw_give_back(p, idle_blocks(p->nraw, p->rawlow, RAW_FLOOR));
    p->rawlow = p->nraw;
}

size_t px_rawmalloc_kept(void)
{
    return tl_pool_state == 1 ? tl_pool_s.nraw : 0;
}

size_t px_tmalloc_kept(size_t n)
{
    size_t c = cls_of(n);
    return c == BIG || tl_pool_state != 1 ? 0 : tl_pool_s.n[c];
}

static void pool_key_make(void)
{
    pool_key_ok = pthread_key_create(&pool_key, pool_release) == 0;
}

/* Maps the pool's stacks: cap_of(c) slots for each class, one after the
 * other. */
static int stacks_map(struct pool *p)
{
    size_t slots = 0;
    struct hdr **s;
    for (size_t c = 0; c < NCLS; c++)
        slots += cap_of(c);
    p->map_len = slots * sizeof(*s);
    p->map = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p->map == MAP_FAILED) {
        p->map = NULL;
        return -1;
    }
    ROOTS(p->map, p->map_len);
    s = p->map;
    for (size_t c = 0; c < NCLS; c++) {
        p->stk[c] = s;
        s += cap_of(c);
    }
    return 0;
}

/* pool_get()'s first call on a thread: maps the stacks and registers
 * the pool to be emptied when the thread ends. */
static __attribute__((noinline)) struct pool *pool_setup(void)
{
    struct pool *p = &tl_pool_s;
    if (tl_pool_state < 0)
        return NULL;
    pthread_once(&pool_once, pool_key_make);
    if (!pool_key_ok || stacks_map(p) != 0) {
        tl_pool_state = -1;
        return NULL;
    }
    if (pthread_setspecific(pool_key, p) != 0) {
        stacks_unmap(p);
        tl_pool_state = -1;
        return NULL;
    }
    tl_pool_state = 1;
    return p;
}

/* This thread's pool, set up on first use; NULL when it cannot be (then
 * blocks come from malloc and go back to free). Inlined: every
 * allocation and free asks, about fifty times a small request. */
static inline struct pool *pool_get(void)
{
    if (__builtin_expect(tl_pool_state == 1, 1))
        return &tl_pool_s;
    return pool_setup();
}

void *px_tmalloc(size_t n)
{
    struct hdr *h;
    size_t c;
    if (n > SIZE_MAX - sizeof(*h))
        return NULL;
    c = cls_of(n);
    if (c != BIG) {
        struct pool *p = pool_get();
        if (p != NULL && p->n[c] > 0) {
            h = pop(p, c);
            UNPOISON(h + 1, n);
        } else {
            h = malloc(sizeof(*h) + cls_bytes(c));
            if (h == NULL)
                return NULL;
        }
    } else {
        h = malloc(sizeof(*h) + n);
        if (h == NULL)
            return NULL;
    }
    h->size = n;
    h->cls = c;
    return h + 1;
}

void *px_tzalloc(size_t n)
{
    void *p = px_tmalloc(n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

void *px_tcalloc(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return px_tzalloc(n * size);
}

size_t px_page_size(void)
{
    static size_t pg;
    if (pg == 0) {
        long v = sysconf(_SC_PAGESIZE);
        pg = v > 0 ? (size_t)v : 4096;
    }
    return pg;
}

static size_t map_len(size_t n)
{
    return (n + sizeof(struct hdr) + px_page_size() - 1) & ~(px_page_size() - 1);
}

void *px_tmalloc_paged(size_t n)
{
    struct hdr *h;
    if (n > SIZE_MAX - sizeof(*h) - px_page_size())
        return NULL;
    h = mmap(NULL, map_len(n), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED)
        return px_tzalloc(n); /* the map count limit, say: from malloc */
    h->size = n;
    h->cls = MAPPED;
    return h + 1; /* fresh mappings are zero */
}

void px_tfree(void *ptr)
{
    struct hdr *h;
    if (ptr == NULL)
        return;
    h = (struct hdr *)ptr - 1;
    if (h->cls == MAPPED) {
        munmap(h, map_len(h->size));
        return;
    }
    if (h->cls != BIG) {
        /* back to this thread's pool (a block made on another thread is
         * the same malloc'd memory: any pool may keep it) */
        size_t c = h->cls;
        struct pool *p = pool_get();
        if (p != NULL && p->n[c] < cap_of(c)) {
            push(p, c, h);
            POISON(h + 1, cls_bytes(c));
            return;
        }
    }
    free(h);
}

size_t px_tsize(const void *p)
{
    return ((const struct hdr *)p - 1)->size;
}

void *px_trealloc(void *ptr, size_t n)
{
    struct hdr *h;
    void *np;
    if (ptr == NULL)
        return px_tmalloc(n);
    h = (struct hdr *)ptr - 1;
    if (h->cls != BIG && h->cls != MAPPED && n > 0 && n <= cls_bytes(h->cls)) {
        /* still fits its block */
        UNPOISON(ptr, n);
        h->size = n;
        return ptr;
    }
    if (h->cls == BIG && cls_of(n) == BIG) {
        struct hdr *nh = realloc(h, sizeof(*nh) + n);
        if (nh == NULL)
            return NULL;
        nh->size = n;
        return nh + 1;
    }
    np = px_tmalloc(n);
    if (np == NULL)
        return NULL;
    memcpy(np, ptr, h->size < n ? h->size : n);
    px_tfree(ptr);
    return np;
}

/* ---- raw blocks ------------------------------------------------------- */

/* A block of the raw class, by its usable size: from malloc(PX_RAW_BYTES)
 * here, or a malloc block of about that size from elsewhere (as good: it
 * holds as much). */
static int raw_class(size_t usable)
{
    return usable >= PX_RAW_BYTES && usable < PX_RAW_BYTES + 1024;
}

void *px_rawmalloc(size_t n)
{
    if (n >= PX_RAW_MIN && n <= PX_RAW_BYTES) {
        struct pool *p = pool_get();
        if (p != NULL && p->nraw > 0)
            return raw_pop(p);
        return malloc(PX_RAW_BYTES);
    }
    return malloc(n);
}

void px_rawfree(void *b)
{
    if (b == NULL)
        return;
    if (raw_class(malloc_usable_size(b))) {
        struct pool *p = pool_get();
        if (p != NULL && p->nraw < RAW_CAP) {
            p->raw[p->nraw++] = b;
            POISON(b, PX_RAW_BYTES);
            return;
        }
    }
    free(b);
}

void *px_rawrealloc(void *b, size_t n)
{
    void *nb;
    size_t u;
    if (b == NULL)
        return px_rawmalloc(n);
    if (n == 0) {
        px_rawfree(b);
        return NULL;
    }
    u = malloc_usable_size(b);
    if (raw_class(u) && n <= PX_RAW_BYTES)
        return b;
    if (!raw_class(u) && (n < PX_RAW_MIN || n > PX_RAW_BYTES))
        return realloc(b, n);
    nb = px_rawmalloc(n); /* into the class, or out of it */
    if (nb == NULL)
        return NULL;
    memcpy(nb, b, u < n ? u : n);
    px_rawfree(b);
    return nb;
}
