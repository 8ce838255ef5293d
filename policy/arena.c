/*
 * arena.c - bump allocator owning every string and array of a bundle or an
 * engine. Blocks are 64 KiB (or one larger block for a big request), freed
 * together by policy_arena_clear(). Keeps parse and compile free of
 * per-string free() bookkeeping and makes an engine independent of the
 * bundle it was built from.
 */
#include "eval-t.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK (64u * 1024u)

struct policy_arena_blk {
    struct policy_arena_blk *next;
    size_t used, cap;
    /* max_align_t keeps the payload suitably aligned for any rule type */
    _Alignas(max_align_t) unsigned char data[];
};

void *policy_arena_alloc(struct policy_arena *a, size_t n)
{
    struct policy_arena_blk *b = a->head;
    size_t need = (n + 7u) & ~(size_t)7u;
    void *p;

    if (need < n)
        return NULL; /* overflow */
    if (b == NULL || b->cap - b->used < need) {
        size_t cap = need > ARENA_BLOCK ? need : ARENA_BLOCK;
        if (cap > SIZE_MAX - sizeof(*b))
            return NULL;
        b = malloc(sizeof(*b) + cap);
        if (b == NULL)
            return NULL;
        b->used = 0;
        b->cap = cap;
        if (a->head != NULL && need > ARENA_BLOCK) {
            /* Keep filling the current small block: link the big one second. */
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    p = b->data + b->used;
    b->used += need;
    memset(p, 0, n);
    return p;
}

char *policy_arena_strndup(struct policy_arena *a, const char *s, size_t n)
{
    char *p;
    if (n == SIZE_MAX)
        return NULL;
    p = policy_arena_alloc(a, n + 1);
    if (p == NULL)
        return NULL;
    if (n > 0)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void policy_arena_clear(struct policy_arena *a)
{
    struct policy_arena_blk *b = a->head;
    while (b != NULL) {
        struct policy_arena_blk *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
}
