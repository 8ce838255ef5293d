/*
 * certs_json_keys.c - TCase "json_keys" of the certs suite: the duplicate-key
 * check (certs/json_keys.c) through certs_json_parse() and
 * certs_json_check_keys_stats(): keys compared after unescaping, every
 * object and every size, the same answer from the table, from the sort and
 * from the table under keys that all collide, and work that grows linearly
 * with the keys (counted, never timed).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certs.h"

TCase *tcase_json_keys(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const unsigned modes[] = {0, CERTS_JSON_KEYS_SORT, CERTS_JSON_KEYS_COLLIDE};

/* want: NULL = accepted, else the whole error text. The column is the
 * opening quote of the offending key; the key is shown as written. */
static const struct {
    const char *doc;
    const char *want;
} dup_docs[] = {
    /* escapes that decode to the same bytes are one key */
    {"{\"a\\/b\":1,\"a/b\":2}", "1:11: duplicate key \"a/b\""},
    {"{\"a/b\":1,\"a\\/b\":2}", "1:10: duplicate key \"a\\/b\""},
    {"{\"\\u0061\":1,\"a\":2}", "1:13: duplicate key \"a\""},
    {"{\"a\":1,\"\\u0061\":2}", "1:8: duplicate key \"\\u0061\""},
    {"{\"\\u00e9\":1,\"\\u00E9\":2}", "1:13: duplicate key \"\\u00E9\""},
    {"{\"\\u00e9\":1,\"\xc3\xa9\":2}", "1:13: duplicate key \"??\""},
    {"{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}", "1:19: duplicate key \"????\""},
    {"{\"\\\"\":1,\"\\u0022\":2}", "1:9: duplicate key \"\\u0022\""},
    {"{\"\\\\\":1,\"\\u005c\":2}", "1:9: duplicate key \"\\u005c\""},
    {"{\"\\n\":1,\"\\u000a\":2}", "1:9: duplicate key \"\\u000a\""},
    {"{\"\\b\\f\\r\\t\":1,\"\\u0008\\u000c\\u000d\\u0009\":2}",
     "1:15: duplicate key \"\\u0008\\u000c\\u000d\\u0009\""},
    {"{\"\":1,\"\":2}", "1:7: duplicate key \"\""},
    /* the first repeat in document order is the one reported */
    {"{\"a\":1,\"b\":2,\"b\":3,\"a\":4}", "1:14: duplicate key \"b\""},
    {"{\"a\":1,\"b\":2,\"a\":3,\"b\":4,\"a\":5}", "1:14: duplicate key \"a\""},
    /* not duplicates: different bytes after unescaping */
    {"{\"a\":1,\"A\":2}", NULL},
    {"{\"a/b\":1,\"a\\\\/b\":2}", NULL},
    {"{\"a\":1,\"aa\":2,\"\":3}", NULL},
    {"{\"\\u00e9\":1,\"e\\u0301\":2}", NULL},
    {"{\"\\u0000a\":1}", "1:2: bad escape in key"},
    /* keys that do not unescape are refused, in any object */
    {"{\"\\ud800\":1}", "1:2: bad escape in key"},
    {"{\"x\":{\"\\udc00\":1}}", "1:7: bad escape in key"},
    {"{\"\\ud800\\u0041\":1}", "1:2: bad escape in key"},
    {"{\"\\u0000\":1,\"a\":2}", "1:2: bad escape in key"},
    {"{\"a\":1,\"a\":2,\"\\ud800\":3}", "1:8: duplicate key \"a\""},
    {"{\"a\":1,\"\\ud800\":2,\"a\":3}", "1:8: bad escape in key"},
    /* values are not keys: checked by whoever reads them, as before */
    {"[\"\\ud800\"]", NULL},
    {"{\"a\":\"\\u0000\"}", NULL},
    /* nesting: each object on its own */
    {"{\"a\":{\"x\":1,\"x\":2}}", "1:13: duplicate key \"x\""},
    {"{\"a\":{\"x\":1},\"b\":{\"x\":1}}", NULL},
    {"{\"x\":{\"x\":{\"x\":1}}}", NULL},
    {"[{\"a\":1},{\"a\":1}]", NULL},
    {"{\"a\":[{\"k\":1,\"\\u006b\":2}]}", "1:14: duplicate key \"\\u006b\""},
    {"{\"a\":{\"b\":1},\"a\":{\"b\":1}}", "1:14: duplicate key \"a\""},
};

/* Checks one document every way: certs_json_parse(), and after a deferred
 * parse certs_json_check_keys_stats() on the whole document in each mode
 * and on each object (some object fails iff the document does). */
static void check_doc(const char *doc, size_t len, const char *want)
{
    struct certs_json j;
    char err[256] = "", err2[256];
    int rc = certs_json_parse(&j, doc, len, 0, err, sizeof(err)), any = 0;

    if (want == NULL) {
        ck_assert_msg(rc == 0, "%.60s: refused: %s", doc, err);
        certs_json_clear(&j);
    } else {
        ck_assert_msg(rc == -1, "%.60s: rc %d", doc, rc);
        ck_assert_msg(strcmp(err, want) == 0, "%.60s: got '%s', want '%s'", doc, err, want);
    }
    ck_assert_int_eq(
        certs_json_parse_flags(&j, doc, len, 0, CERTS_JSON_DEFER_KEYS, err2, sizeof(err2)), 0);
    for (size_t m = 0; m < N_ELEMS(modes); m++) {
        struct certs_json_keystats st = {0};
        err2[0] = '\0';
        rc = certs_json_check_keys_stats(&j, -1, modes[m], &st, err2, sizeof(err2));
        ck_assert_msg(rc == (want == NULL ? 0 : -1), "%.60s: mode %u rc %d", doc, modes[m], rc);
        if (want != NULL)
            ck_assert_msg(strcmp(err2, want) == 0, "%.60s: mode %u: '%s'", doc, modes[m], err2);
        if (modes[m] == CERTS_JSON_KEYS_SORT && st.keys > 1)
            ck_assert_uint_eq(st.sorted, 1);
    }
    for (int o = 0; o < j.ntok; o++)
        if (certs_json_is_obj(&j, o) && certs_json_check_keys(&j, o, err2, sizeof(err2)) != 0)
            any = 1;
    ck_assert_msg(any == (want != NULL), "%.60s: per-object checks say %d", doc, any);
    certs_json_clear(&j);
}

START_TEST(test_dup_keys)
{
    check_doc(dup_docs[_i].doc, strlen(dup_docs[_i].doc), dup_docs[_i].want);
}
END_TEST

/* {"<prefix>0000000":0, ...} with n keys; key `dup_at` (>= 0) is written
 * again as the last key, spelled with \u escapes for its first letter.
 * Returns the document (caller frees) and the column of that last key. */
static char *many_keys(size_t n, const char *prefix, long dup_at, size_t *len, size_t *col)
{
    size_t cap = (n + 2) * (strlen(prefix) + 24) + 16, o = 0;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    s[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o, "%s\"%s%07zu\":%zu", i ? "," : "", prefix, i, i);
    if (dup_at >= 0) {
        *col = o + 2;
        o += (size_t)snprintf(s + o, cap - o, ",\"\\u%04x%s%07ld\":0", (unsigned)prefix[0],
                              prefix + 1, dup_at);
    }
    s[o++] = '}';
    s[o] = '\0';
    *len = o;
    return s;
}

static const struct {
    size_t n;
    const char *prefix;
    long dup_at; /* -1: no duplicate */
} many[] = {
    {33, "k", -1},
    {33, "k", 0},
    {33, "k", 32},
    {1000, "k", -1},
    {1000, "k", 999},
    {1000, "k", 500},
    {20000, "k", -1},
    {20000, "k", 0},
    {20000, "k", 19999},
    /* long shared prefixes: comparisons read far before they differ */
    {3000, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", -1},
    {3000, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", 1234},
};

START_TEST(test_dup_keys_many)
{
    size_t len = 0, col = 0;
    char *doc = many_keys(many[_i].n, many[_i].prefix, many[_i].dup_at, &len, &col);
    char raw[128], want[200];

    if (many[_i].dup_at >= 0) {
        /* the message shows the key as written, cut at 64 bytes */
        int n = snprintf(raw, sizeof(raw), "\\u%04x%s%07ld", (unsigned)many[_i].prefix[0],
                         many[_i].prefix + 1, many[_i].dup_at);
        snprintf(want, sizeof(want), "1:%zu: duplicate key \"%.64s%s\"", col, raw,
                 n > 64 ? "..." : "");
    }
    check_doc(doc, len, many[_i].dup_at >= 0 ? want : NULL);
    free(doc);
}
END_TEST

/* Work for one object of n distinct keys, checked in `mode`. */
static struct certs_json_keystats work_for(size_t n, unsigned mode)
{
    struct certs_json_keystats st = {0};
    struct certs_json j;
    size_t len = 0, col = 0;
    char *doc = many_keys(n, "k", -1, &len, &col), err[256];

    ck_assert_int_eq(
        certs_json_parse_flags(&j, doc, len, 0, CERTS_JSON_DEFER_KEYS, err, sizeof(err)), 0);
    ck_assert_int_eq(certs_json_check_keys_stats(&j, 0, mode, &st, err, sizeof(err)), 0);
    certs_json_clear(&j);
    free(doc);
    return st;
}

/* The cost is counted, not timed: table slots inspected and key pairs
 * compared. Pairwise checking (what this replaced) makes n(n-1)/2
 * comparisons: 523,776 for 1K keys, 134,209,536 for 16K. */
START_TEST(test_dup_keys_linear)
{
    struct certs_json_keystats a = work_for(1024, 0), b = work_for(16384, 0);

    /* a few probes a key (the table is at most half full) */
    ck_assert_msg(a.probes <= 3 * 1024 && b.probes <= 3 * 16384, "probes %lu, %lu", a.probes,
                  b.probes);
    /* 16 times the keys, at most ~16 times the work */
    ck_assert_msg(b.probes <= 20 * a.probes, "1K keys: %lu probes, 16K keys: %lu", a.probes,
                  b.probes);
    /* distinct keys: no byte comparison at all, no fallback, each key read once */
    ck_assert_msg(a.sorted + b.sorted == 0, "sorted %lu, %lu", a.sorted, b.sorted);
    ck_assert_uint_eq(a.compares + b.compares, 0);
    ck_assert_uint_eq(a.keys, 1024);
    ck_assert_uint_eq(b.keys, 16384);
}
END_TEST

/* Keys built to collide (every hash equal): the table gives up within its
 * budget and the keys are sorted: O(n log n) comparisons, not n^2/2. */
START_TEST(test_dup_keys_flood)
{
    struct certs_json_keystats a = work_for(1024, CERTS_JSON_KEYS_COLLIDE);
    struct certs_json_keystats b = work_for(16384, CERTS_JSON_KEYS_COLLIDE);
    struct certs_json_keystats s = work_for(16384, CERTS_JSON_KEYS_SORT);

    ck_assert_uint_eq(a.sorted, 1);
    ck_assert_uint_eq(b.sorted, 1);
    /* merge sort: at most n*ceil(log2 n) comparisons, plus n for the scan
     * and what the table compared before it gave up (a few per key) */
    ck_assert_msg(s.compares <= 16384 * 15, "sort alone: %lu comparisons", s.compares);
    ck_assert_msg(b.compares <= 16384 * 15 + 16384 * 4, "16K colliding keys: %lu comparisons",
                  b.compares);
    ck_assert_msg(b.compares <= 24 * a.compares, "1K: %lu comparisons, 16K: %lu", a.compares,
                  b.compares);
    ck_assert_msg(b.probes <= 16384 * 4, "16K colliding keys: %lu probes", b.probes);
}
END_TEST

TCase *tcase_json_keys(void)
{
    TCase *tc = tcase_create("json_keys");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_dup_keys, 0, (int)N_ELEMS(dup_docs));
    tcase_add_loop_test(tc, test_dup_keys_many, 0, (int)N_ELEMS(many));
    tcase_add_test(tc, test_dup_keys_linear);
    tcase_add_test(tc, test_dup_keys_flood);
    return tc;
}
