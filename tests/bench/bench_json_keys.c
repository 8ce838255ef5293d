/*
 * bench_json_keys.c - the cost of wide JSON objects: certs_json_parse() (its
 * duplicate-key check) on one object of 1K to 54K keys, the same keys all
 * colliding in the hash (the sort fallback), and policy_bundle_parse() on the
 * worst-case bundles of issue 20 at 160 KB and 640 KB: one top-level object
 * of unknown keys, one rule of unknown keys, a headers map over its 4096
 * entry limit, a valid headers map at the limit padded to size, and the
 * same with its last name an escaped duplicate of the first.
 *
 * Prints milliseconds (best of 3) and the check's counters. Build without
 * sanitizers for meaningful numbers:
 *   cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DPICKET_SANITIZE=OFF && \
 *   cmake --build build-release --target bench_json_keys && \
 *   build-release/tests/bench/bench_json_keys
 * `picket policy lint FILE` gives the whole-command view of the same inputs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certs.h"
#include "policy.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

struct buf {
    char *p;
    size_t n, cap;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (n >= 0 && b->n + (size_t)n < b->cap)
            break;
        b->cap = b->cap * 2 + 4096;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            exit(1);
    }
    b->n += (size_t)n;
}

enum shape { TOP_UNKNOWN, RULE_UNKNOWN, HDR_OVER, HDR_MAX, HDR_MAX_DUP };
static const char *const shape_names[] = {"top-level object, unknown keys",
                                          "one rule, unknown keys", "headers over 4096 entries",
                                          "headers at 4096, valid", "headers at 4096, escaped dup"};

static struct buf make_bundle(enum shape s, size_t size)
{
    struct buf b = {NULL, 0, 0};
    size_t n, pad;
    switch (s) {
    case TOP_UNKNOWN:
        put(&b, "{\"revision\":1,\"rules\":[]");
        for (size_t i = 0; b.n + 13 < size; i++)
            put(&b, ",\"k%06zu\":0", i);
        put(&b, "}");
        break;
    case RULE_UNKNOWN:
        put(&b, "{\"revision\":1,\"rules\":[{\"id\":\"a\",\"action\":\"allow\"");
        for (size_t i = 0; b.n + 15 < size; i++)
            put(&b, ",\"k%06zu\":0", i);
        put(&b, "}]}");
        break;
    case HDR_OVER:
        put(&b, "{\"revision\":1,\"rules\":[{\"id\":\"a\",\"action\":\"allow\",\"headers\":{");
        for (size_t i = 0; b.n + 20 < size; i++)
            put(&b, "%s\"h%06zu\":[\"v\"]", i ? "," : "", i);
        put(&b, "}}]}");
        break;
    case HDR_MAX:
    case HDR_MAX_DUP:
        n = POLICY_RULE_MAX_LIST;
        pad = size / n > 24 ? size / n - 16 : 1;
        put(&b, "{\"revision\":1,\"rules\":[{\"id\":\"a\",\"action\":\"allow\",\"headers\":{");
        for (size_t i = 0; i < n; i++) {
            if (s == HDR_MAX_DUP && i == n - 1)
                put(&b, ",\"\\u0068000000\":[\"%0*d\"]", (int)pad, 0);
            else
                put(&b, "%s\"h%06zu\":[\"%0*d\"]", i ? "," : "", i, (int)pad, 0);
        }
        put(&b, "}}]}");
        break;
    }
    return b;
}

static void bench_bundle(enum shape s, size_t size)
{
    struct buf b = make_bundle(s, size);
    double best = 1e30;
    char err[256] = "";
    int rc = 0;
    for (int r = 0; r < 3; r++) {
        struct policy_bundle *pb = NULL;
        double t0 = now_ms();
        rc = policy_bundle_parse(&pb, b.p, b.n, err, sizeof(err));
        double t = now_ms() - t0;
        policy_bundle_free(pb);
        if (t < best)
            best = t;
    }
    printf("  %-32s %7zu B  %9.3f ms  %s\n", shape_names[s], b.n, best, rc == 0 ? "accepted" : err);
    free(b.p);
}

static void bench_object(size_t nkeys, unsigned mode)
{
    struct buf b = {NULL, 0, 0};
    struct certs_json_keystats st = {0};
    struct certs_json j;
    double best = 1e30;
    char err[256] = "";

    put(&b, "{");
    for (size_t i = 0; i < nkeys; i++)
        put(&b, "%s\"k%07zu\":0", i ? "," : "", i);
    put(&b, "}");
    for (int r = 0; r < 3; r++) {
        double t0, t;
        if (certs_json_parse_flags(&j, b.p, b.n, 1 << 21, CERTS_JSON_DEFER_KEYS, err,
                                   sizeof(err)) != 0) {
            printf("parse: %s\n", err);
            exit(1);
        }
        memset(&st, 0, sizeof(st));
        t0 = now_ms();
        if (certs_json_check_keys_stats(&j, 0, mode, &st, err, sizeof(err)) != 0)
            printf("check: %s\n", err);
        t = now_ms() - t0;
        certs_json_clear(&j);
        if (t < best)
            best = t;
    }
    printf("  %6zu keys %-9s %7zu B  %9.3f ms  probes %7lu  compares %8lu  sorted %lu\n", nkeys,
           mode == CERTS_JSON_KEYS_COLLIDE ? "colliding" : "", b.n, best, st.probes, st.compares,
           st.sorted);
    free(b.p);
}

int main(void)
{
    static const size_t keys[] = {1024, 4096, 16384, 54000};
    printf("duplicate-key check, one object (certs_json_check_keys_stats):\n");
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        bench_object(keys[i], 0);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        bench_object(keys[i], CERTS_JSON_KEYS_COLLIDE);
    printf("policy_bundle_parse, worst-case bundles:\n");
    for (int s = TOP_UNKNOWN; s <= HDR_MAX_DUP; s++) {
        bench_bundle((enum shape)s, 160 * 1024);
        bench_bundle((enum shape)s, 640 * 1024);
    }
    return 0;
}
