/*
 * eval-t.h - types shared inside policy/ by bundle.c (parser), compile.c
 * (index builder) and eval.c (evaluator), plus the arena they allocate
 * from. Not installed; proxy/ sees only policy.h.
 *
 * A bundle and an engine each own one arena; every string and array of a
 * parsed rule lives in it, so freeing is one walk over a few blocks and an
 * engine can deep-copy a bundle without sharing a byte with it.
 */
#ifndef POLICY_EVAL_T_H
#define POLICY_EVAL_T_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* ---- arena (arena.c) ---- */

struct policy_arena_blk;
struct policy_arena {
    struct policy_arena_blk *head;
};

/* 8-byte aligned, zeroed memory; NULL when out of memory. Freed only by
 * policy_arena_clear(). */
void *policy_arena_alloc(struct policy_arena *a, size_t n);
/* Copy of s[0..n) plus a NUL; NULL when out of memory. */
char *policy_arena_strndup(struct policy_arena *a, const char *s, size_t n);
void policy_arena_clear(struct policy_arena *a);

/* ---- rule model ---- */

struct policy_str {
    const char *p; /* NUL-terminated, arena-owned */
    size_t n;
};

enum policy_from_kind {
    POLICY_FROM_EXACT,   /* id = the full SPIFFE ID */
    POLICY_FROM_SUBTREE, /* id = "spiffe://td" or "spiffe://td/p" (pattern minus "/ *") */
    POLICY_FROM_ANY      /* "*" */
};

struct policy_from {
    enum policy_from_kind kind;
    struct policy_str id;
};

struct policy_host {
    int suffix;            /* 1: name is ".example.org" from "*.example.org" */
    struct policy_str name; /* lowercase */
};

struct policy_path_pat {
    struct policy_str *segs; /* without the final "**"; "*" marks a wildcard */
    uint32_t nsegs;
    int globstar; /* 1: pattern ended in "**" */
};

struct policy_hdr_match {
    struct policy_str name; /* lowercase */
    struct policy_str *values;
    uint32_t nvalues;
};

/* A list field with n == 0 is absent (matches anything); the parser refuses
 * present-but-empty lists. */
struct policy_rule {
    const char *id;
    enum policy_verdict action;
    const char *dispatch; /* NULL unless action is POLICY_DISPATCH */
    uint32_t index;       /* position in the bundle */
    struct policy_from *from;
    uint32_t nfrom;
    struct policy_host *hosts;
    uint32_t nhosts;
    struct policy_str *methods;
    uint32_t nmethods;
    struct policy_path_pat *paths;
    uint32_t npaths;
    struct policy_hdr_match *headers;
    uint32_t nheaders;
};

struct policy_bundle {
    struct policy_arena arena;
    int64_t revision;
    int64_t expires_at; /* unix seconds, 0 = none */
    enum policy_mode mode;
    enum policy_verdict def;
    struct policy_rule *rules;
    size_t nrules;
    const char **targets; /* distinct dispatch targets */
    size_t ntargets;
};

/* ---- engine (compile.c builds, eval.c reads) ---- */

/* Open-addressing hash table from a string key to a run of rule indexes
 * (in bundle order) in lists[]. */
struct policy_slot {
    const char *key; /* NULL = empty slot */
    uint32_t klen;
    uint32_t off;  /* first rule index in lists[] */
    uint32_t cnt;  /* number of rule indexes */
    uint32_t last; /* build only: last rule added (dedup) */
    uint64_t hash;
};

struct policy_table {
    struct policy_slot *slots;
    size_t mask; /* capacity - 1; capacity is a power of two; NULL slots = empty table */
    const uint32_t *lists;
};

struct policy_list {
    const uint32_t *v;
    uint32_t n;
};

struct policy_engine {
    struct policy_arena arena;
    int64_t revision;
    enum policy_mode mode;
    enum policy_verdict def;
    const struct policy_rule *rules;
    size_t nrules;
    /* identity index */
    struct policy_table from_exact;  /* full ID -> rules */
    struct policy_table from_prefix; /* "spiffe://td[/p...]" -> subtree rules */
    size_t max_prefix_len;           /* longest key in from_prefix */
    struct policy_list from_any;     /* rules with "*" */
    struct policy_list from_none;    /* rules without "from" */
    /* first-path-segment index */
    struct policy_table seg_lit;  /* literal first segment -> rules */
    struct policy_list seg_wild;  /* first segment "*" or "**" */
    struct policy_list seg_none;  /* rules without "paths" */
};

/* FNV-1a 64, streaming: h = policy_hash_step(h, c) per byte from
 * POLICY_HASH_INIT. Streaming lets eval hash every prefix of a SPIFFE ID in
 * one pass. */
#define POLICY_HASH_INIT 14695981039346656037ULL
static inline uint64_t policy_hash_step(uint64_t h, unsigned char c)
{
    return (h ^ c) * 1099511628211ULL;
}
uint64_t policy_hash(const char *s, size_t n);

/* Looks key up; returns the slot or NULL. `hash` is policy_hash(key, klen). */
const struct policy_slot *policy_table_find(const struct policy_table *t, const char *key,
                                            size_t klen, uint64_t hash);

#endif
