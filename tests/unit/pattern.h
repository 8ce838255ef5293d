/*
 * pattern.h - a byte pattern for the allocator tests (proxy_h2mem.c,
 * proxy_tmalloc.c): fill a block, check later that it still holds it.
 */
#ifndef PICKET_TEST_PATTERN_H
#define PICKET_TEST_PATTERN_H

#include <stddef.h>

static inline void pattern_fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 131u + seed);
}

/* 1 when p[0..n) holds what pattern_fill(p, n, seed) wrote. */
static inline int pattern_same(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 131u + seed))
            return 0;
    return 1;
}

#endif
