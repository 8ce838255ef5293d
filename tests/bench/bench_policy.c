/*
 * bench_policy.c - nanoseconds per policy_eval() for synthetic bundles of
 * 10, 1,000 and 100,000 rules, for matching and non-matching requests.
 *
 * Each bundle has one rule per synthetic workload (distinct SPIFFE ID,
 * distinct first path segment, a method list and sometimes a header), plus a
 * few broad rules that every request has to consider: a deny on /admin/ **
 * for anyone, an allow for a whole ops subtree, a dispatch on /payments/ **,
 * and an allow on /public/ * with no "from". The bundle goes through the real
 * JSON parser and compiler, so this also times parse and compile.
 *
 * Requests cycle through 1024 prepared ones so the working set is not one
 * cache line. Build without sanitizers for meaningful numbers:
 *   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release && \
 *   cmake --build build-rel --target bench_policy && build-rel/tests/bench/bench_policy
 * Run with an argument to change the iteration count (default 2,000,000).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy.h"

#define NREQ 1024

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static char *make_bundle(size_t nrules, size_t *len)
{
    size_t cap = 256 * (nrules + 16), n = 0;
    char *js = malloc(cap);
    if (js == NULL)
        return NULL;
    n += (size_t)snprintf(js + n, cap - n,
                          "{\"revision\":1,\"default\":\"deny\",\"rules\":["
                          "{\"id\":\"no-admin\",\"action\":\"deny\",\"from\":[\"*\"],"
                          "\"paths\":[\"/admin/**\"]},"
                          "{\"id\":\"ops\",\"action\":\"allow\","
                          "\"from\":[\"spiffe://bench.org/ns/ops/*\"]},"
                          "{\"id\":\"payments\",\"action\":\"dispatch\",\"dispatch\":\"authz\","
                          "\"paths\":[\"/payments/**\"]},"
                          "{\"id\":\"public\",\"action\":\"allow\",\"paths\":[\"/public/*\"]}");
    for (size_t i = 0; i < nrules; i++)
        n += (size_t)snprintf(js + n, cap - n,
                              ",{\"id\":\"r%zu\",\"action\":\"allow\","
                              "\"from\":[\"spiffe://bench.org/ns/n%zu/sa/app\"],"
                              "\"methods\":[\"GET\",\"POST\"],"
                              "\"paths\":[\"/svc%zu/**\",\"/v2/svc%zu/*\"]%s}",
                              i, i, i, i, i % 10 == 0 ? ",\"headers\":{\"x-tenant\":[\"acme\"]}" : "");
    n += (size_t)snprintf(js + n, cap - n, "]}");
    *len = n;
    return js;
}

struct req_store {
    char peer[NREQ][96];
    char path[NREQ][96];
    struct policy_request q[NREQ];
};

static const struct policy_header tenant = {"x-tenant", 8, "acme", 4};

/* match = 1: the workload's own rule allows it. match = 0: a known peer on
 * another workload's path (default deny after checking candidates). */
static void make_requests(struct req_store *s, size_t nrules, int match)
{
    srand(42);
    for (size_t k = 0; k < NREQ; k++) {
        size_t i = (size_t)rand() % nrules, j = (i + 1 + (size_t)rand() % 7) % nrules;
        snprintf(s->peer[k], sizeof(s->peer[k]), "spiffe://bench.org/ns/n%zu/sa/app", i);
        snprintf(s->path[k], sizeof(s->path[k]), "/svc%zu/items/%zu", match ? i : j, k);
        s->q[k] = (struct policy_request){
            .peer = s->peer[k], .peer_len = strlen(s->peer[k]),
            .method = "GET", .method_len = 3,
            .authority = "bench.svc:8443", .authority_len = 14,
            .path = s->path[k], .path_len = strlen(s->path[k]),
            .headers = &tenant, .nheaders = 1};
    }
}

static double run(const struct policy_engine *e, const struct req_store *s, long iters,
                  enum policy_verdict want, long *bad)
{
    struct policy_decision d;
    double t0 = now_ns();
    for (long it = 0; it < iters; it++)
        if (policy_eval(e, &s->q[it & (NREQ - 1)], &d) != want)
            (*bad)++;
    return (now_ns() - t0) / (double)iters;
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = {10, 1000, 100000};
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    struct req_store *s = malloc(sizeof(*s));
    int status = 0;

    if (s == NULL || iters <= 0)
        return 2;
    printf("%-8s %10s %10s %12s %12s\n", "rules", "parse ms", "compile ms", "match ns",
           "nomatch ns");
    for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
        struct policy_bundle *b = NULL;
        struct policy_engine *e = NULL;
        char err[256];
        size_t len;
        long bad = 0;
        double t0, t1, t2, hit, miss;
        char *js = make_bundle(sizes[z], &len);

        if (js == NULL)
            return 2;
        t0 = now_ns();
        if (policy_bundle_parse(&b, js, len, err, sizeof(err)) != 0) {
            fprintf(stderr, "parse: %s\n", err);
            return 1;
        }
        t1 = now_ns();
        if (policy_engine_new(&e, b, err, sizeof(err)) != 0) {
            fprintf(stderr, "compile: %s\n", err);
            return 1;
        }
        t2 = now_ns();
        make_requests(s, sizes[z], 1);
        hit = run(e, s, iters, POLICY_ALLOW, &bad);
        make_requests(s, sizes[z], 0);
        miss = run(e, s, iters, POLICY_DENY, &bad);
        printf("%-8zu %10.1f %10.1f %12.1f %12.1f\n", sizes[z], (t1 - t0) / 1e6, (t2 - t1) / 1e6,
               hit, miss);
        if (bad != 0) {
            fprintf(stderr, "%ld evaluations gave an unexpected verdict\n", bad);
            status = 1;
        }
        policy_engine_free(e);
        policy_bundle_free(b);
        free(js);
    }
    free(s);
    return status;
}
