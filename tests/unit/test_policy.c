/*
 * test_policy.c - Check suite "policy": one TCase per source file of
 * policy/ (path.c, bundle.c, compile.c + eval.c), mostly tables, plus an
 * index-equivalence test that checks the indexed engine against a naive
 * linear evaluator written here from the documented semantics.
 */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- path.c -------------------------------------------------------------- */

static const struct {
    const char *in;
    int rc;
    const char *out; /* full output (path + query) when rc == 0 */
    size_t pathlen;
} paths[] = {
    {"/", 0, "/", 1},
    {"/a", 0, "/a", 2},
    {"/a/", 0, "/a/", 3},
    {"/a/b/c", 0, "/a/b/c", 6},
    {"//", 0, "/", 1},
    {"//a//b//", 0, "/a/b/", 5},
    {"/./", 0, "/", 1},
    {"/.", 0, "/", 1},
    {"/..", 0, "/", 1},
    {"/../../a", 0, "/a", 2},
    {"/a/b/..", 0, "/a/", 3},
    {"/a/b/../", 0, "/a/", 3},
    {"/a/./b", 0, "/a/b", 4},
    {"/a/b/../../c", 0, "/c", 2},
    {"/a/.b/..c/...", 0, "/a/.b/..c/...", 13},
    /* the attack list: all must land under /admin */
    {"/admin/../admin/x", 0, "/admin/x", 8},
    {"//admin/x", 0, "/admin/x", 8},
    {"/./admin/x", 0, "/admin/x", 8},
    {"/%61dmin/x", 0, "/admin/x", 8},
    {"/a/%2e%2e/admin/x", 0, "/admin/x", 8},
    {"/a/%2E%2E/admin/x", 0, "/admin/x", 8},
    {"/a/.%2e/admin/x", 0, "/admin/x", 8},
    {"/%2e/admin/x", 0, "/admin/x", 8},
    {"/x/..//admin/x", 0, "/admin/x", 8},
    {"/ADMIN/x", 0, "/ADMIN/x", 8}, /* paths are case-sensitive: not folded */
    {"/admin%2fx", POLICY_PATH_ENC_SLASH, NULL, 0},
    {"/admin%2Fx", POLICY_PATH_ENC_SLASH, NULL, 0},
    {"/admin%5cx", POLICY_PATH_ENC_BACKSLASH, NULL, 0},
    {"/admin%5Cx", POLICY_PATH_ENC_BACKSLASH, NULL, 0},
    {"/admin\\x", POLICY_PATH_BACKSLASH, NULL, 0},
    {"/a%00b", POLICY_PATH_ENC_NUL, NULL, 0},
    {"/a#frag", POLICY_PATH_FRAGMENT, NULL, 0},
    {"/a?q#frag", POLICY_PATH_FRAGMENT, NULL, 0},
    {"/a\nb", POLICY_PATH_CONTROL, NULL, 0},
    {"/a\tb", POLICY_PATH_CONTROL, NULL, 0},
    {"/a\x7f", POLICY_PATH_CONTROL, NULL, 0},
    {"/a?x=\r", POLICY_PATH_CONTROL, NULL, 0},
    {"/a%", POLICY_PATH_BAD_ESCAPE, NULL, 0},
    {"/a%4", POLICY_PATH_BAD_ESCAPE, NULL, 0},
    {"/a%zz", POLICY_PATH_BAD_ESCAPE, NULL, 0},
    {"/a%4g", POLICY_PATH_BAD_ESCAPE, NULL, 0},
    {"", POLICY_PATH_NOT_ABSOLUTE, NULL, 0},
    {"a/b", POLICY_PATH_NOT_ABSOLUTE, NULL, 0},
    {"*", POLICY_PATH_NOT_ABSOLUTE, NULL, 0},
    {"http://h/a", POLICY_PATH_NOT_ABSOLUTE, NULL, 0},
    {"?q", POLICY_PATH_NOT_ABSOLUTE, NULL, 0},
    /* escapes: unreserved decoded, others uppercased */
    {"/%7Euser/%41%42", 0, "/~user/AB", 9},
    {"/a%2db%5fc%2E", 0, "/a-b_c.", 7},
    {"/a%3fb", 0, "/a%3Fb", 6},
    {"/a%3Fb", 0, "/a%3Fb", 6},
    {"/a%20b%c3%a9", 0, "/a%20b%C3%A9", 12},
    {"/a%25", 0, "/a%25", 5},
    {"/a%252e%252e/x", 0, "/a%252e%252e/x", 14}, /* double-encoded: decoded once only */
    /* raw bytes not allowed in a path are encoded */
    {"/a b", 0, "/a%20b", 6},
    {"/caf\xc3\xa9", 0, "/caf%C3%A9", 10},
    {"/{x}|", 0, "/%7Bx%7D%7C", 11},
    {"/a:b@c;d=e,f!$&'()*+", 0, "/a:b@c;d=e,f!$&'()*+", 20},
    /* query: split off, untouched, not part of pathlen */
    {"/a/../b?x=/../%2f&y", 0, "/b?x=/../%2f&y", 2},
    {"//a?", 0, "/a?", 2},
    {"/?a=b", 0, "/?a=b", 1},
    {"/a/.?q", 0, "/a/?q", 3},
    {"/a?q\\x", 0, "/a?q\\x", 2},
};

START_TEST(test_path_table)
{
    char out[256];
    size_t outlen = 0, pathlen = 0;
    const char *in = paths[_i].in;
    int rc = policy_path_normalize(in, strlen(in), out, sizeof(out), &outlen, &pathlen);
    ck_assert_msg(rc == paths[_i].rc, "%s: rc %d (%s), want %d", in, rc, policy_path_error_name(rc),
                  paths[_i].rc);
    if (rc == 0) {
        ck_assert_str_eq(out, paths[_i].out);
        ck_assert_uint_eq(outlen, strlen(paths[_i].out));
        ck_assert_uint_eq(pathlen, paths[_i].pathlen);
    }
}
END_TEST

/* Normalizing twice changes nothing. */
START_TEST(test_path_idempotent)
{
    char out[256], again[256];
    size_t outlen, pathlen, len2, plen2;
    const char *in = paths[_i].in;
    if (policy_path_normalize(in, strlen(in), out, sizeof(out), &outlen, &pathlen) != 0)
        return;
    ck_assert_int_eq(policy_path_normalize(out, outlen, again, sizeof(again), &len2, &plen2), 0);
    ck_assert_str_eq(again, out);
    ck_assert_uint_eq(plen2, pathlen);
}
END_TEST

START_TEST(test_path_buffer)
{
    char out[8];
    size_t outlen;
    /* exactly fits: "/abcdef" + NUL */
    ck_assert_int_eq(policy_path_normalize("/abcdef", 7, out, 8, &outlen, NULL), 0);
    ck_assert_int_eq(policy_path_normalize("/abcdefg", 8, out, 8, &outlen, NULL),
                     POLICY_PATH_TOO_LONG);
    ck_assert_int_eq(policy_path_normalize("/a b c", 6, out, 8, &outlen, NULL),
                     POLICY_PATH_TOO_LONG);
    ck_assert_int_eq(policy_path_normalize("/a?bcdefg", 9, out, 8, &outlen, NULL),
                     POLICY_PATH_TOO_LONG);
    /* embedded NUL, not NUL-terminated input */
    ck_assert_int_eq(policy_path_normalize("/a\0b", 4, out, 8, &outlen, NULL), POLICY_PATH_NUL);
    ck_assert_int_eq(policy_path_normalize("/abXYZ", 3, out, 8, &outlen, NULL), 0);
    ck_assert_str_eq(out, "/ab");
}
END_TEST

START_TEST(test_path_names)
{
    ck_assert_str_eq(policy_path_error_name(POLICY_PATH_ENC_SLASH), "encoded_slash");
    ck_assert_str_eq(policy_path_error_name(0), "ok");
    ck_assert_str_eq(policy_path_error_name(-1), "unknown");
    for (int rc = POLICY_PATH_TOO_LONG; rc <= POLICY_PATH_NOT_ABSOLUTE; rc++) {
        ck_assert_str_ne(policy_path_error_name(rc), "unknown");
        ck_assert_str_ne(policy_strerror(rc), "unknown policy error");
    }
    for (int rc = POLICY_ERR_NOSPACE; rc <= POLICY_ERR_NOMEM; rc++)
        ck_assert_str_ne(policy_strerror(rc), "unknown policy error");
}
END_TEST

/* Random byte strings: either refused, or normalized to a fixed point
 * with no "//", no dot segments and no lowercase hex. */
START_TEST(test_path_fuzz_invariants)
{
    static const char alphabet[] = "/./%2e%2E%41%6a%3faAz.-_~ \\#?\x01\x80:@";
    char in[32], out[128], again[128];
    size_t outlen, pathlen, len2;
    srand(12345);
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 1 + (size_t)(rand() % 30);
        in[0] = '/';
        for (size_t i = 1; i < n; i++)
            in[i] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
        if (policy_path_normalize(in, n, out, sizeof(out), &outlen, &pathlen) != 0)
            continue;
        ck_assert_int_eq(policy_path_normalize(out, outlen, again, sizeof(again), &len2, NULL), 0);
        ck_assert_str_eq(again, out);
        for (size_t i = 0; i + 1 < pathlen; i++)
            ck_assert_msg(!(out[i] == '/' && out[i + 1] == '/'), "// in %s", out);
        out[pathlen] = '\0';
        ck_assert_ptr_null(strstr(out, "/./"));
        ck_assert_ptr_null(strstr(out, "/../"));
        ck_assert_msg(pathlen < 2 || strcmp(out + pathlen - 2, "/.") != 0, "%s", out);
        ck_assert_msg(pathlen < 3 || strcmp(out + pathlen - 3, "/..") != 0, "%s", out);
    }
}
END_TEST

/* ---- bundle.c ---------------------------------------------------------------- */

#define R0(rule) "{\"revision\":1,\"rules\":[" rule "]}"

static const struct {
    const char *json;
    int rc;
    const char *want1, *want2; /* substrings of the message */
} bad_bundles[] = {
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"paths\":[\"/x\",\"/a/**/b\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].paths[1]: '**' must be the last segment", "(rule \"a\")"},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"colour\":1}"), POLICY_ERR_BUNDLE,
     "rules[0]: unknown key \"colour\"", "(rule \"a\")"},
    {R0("{\"id\":\"a\",\"action\":\"allow\"},{\"id\":\"a\",\"action\":\"deny\"}"),
     POLICY_ERR_BUNDLE, "rules[1].id: duplicate rule id \"a\"", "1:"},
    {R0("{\"id\":\"p\",\"action\":\"dispatch\"}"), POLICY_ERR_BUNDLE, "rules[0].dispatch",
     "needs a \"dispatch\" target (rule \"p\")"},
    {R0("{\"id\":\"p\",\"action\":\"allow\",\"dispatch\":\"authz\"}"), POLICY_ERR_BUNDLE,
     "rules[0].dispatch: only allowed with action \"dispatch\"", "rule \"p\""},
    {R0("{\"action\":\"allow\"}"), POLICY_ERR_BUNDLE, "rules[0]: missing \"id\"", NULL},
    {R0("{\"id\":\"a\"}"), POLICY_ERR_BUNDLE, "rules[0]: missing \"action\"", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"permit\"}"), POLICY_ERR_BUNDLE, "rules[0].action: must be",
     "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"from\":[\"*\",\"example.org/x\"]}"),
     POLICY_ERR_BUNDLE, "rules[0].from[1]: must be a SPIFFE ID", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"from\":[\"spiffe://a.org\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].from[0]: SPIFFE ID has no path", "spiffe://a.org/*"},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"from\":[\"spiffe://a.org/x*\"]}"),
     POLICY_ERR_BUNDLE, "rules[0].from[0]: '*' is only allowed", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"from\":[\"spiffe://A.org/x\"]}"),
     POLICY_ERR_BUNDLE, "rules[0].from[0]: trust domain", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"from\":[\"spiffe://a.org/x/../y\"]}"),
     POLICY_ERR_BUNDLE, "rules[0].from[0]: '.' or '..'", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"from\":[]}"), POLICY_ERR_BUNDLE,
     "rules[0].from: must not be empty", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"from\":\"*\"}"), POLICY_ERR_BUNDLE,
     "rules[0].from: must be an array", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"hosts\":[\"a.svc:80\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].hosts[0]: host must not have a port", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"hosts\":[\"a.*.svc\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].hosts[0]: host may only contain", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"methods\":[\"GET\",\"post\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].methods[1]: method must be uppercase", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"methods\":[1]}"), POLICY_ERR_BUNDLE,
     "rules[0].methods[0]: must be a string", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"paths\":[\"x/y\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].paths[0]: path pattern must start with '/'", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"paths\":[\"/a/../b\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].paths[0]: path pattern is not normalized (write \"/b\")", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"paths\":[\"/%61\"]}"), POLICY_ERR_BUNDLE,
     "not normalized (write \"/a\")", NULL},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"paths\":[\"/a/b*\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].paths[0]: '*' must be a whole segment", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"paths\":[\"/a%2fb\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].paths[0]: bad path pattern", "encoded '/'"},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"paths\":[\"/a?x\"]}"), POLICY_ERR_BUNDLE,
     "rules[0].paths[0]: path pattern must not have a query", NULL},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"headers\":{\"X-Tenant\":[\"a\"]}}"),
     POLICY_ERR_BUNDLE, "rules[0].headers[0]: header name must be lowercase", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"headers\":{\"x\":\"a\"}}"), POLICY_ERR_BUNDLE,
     "rules[0].headers[0]: must be a non-empty array", "rule \"a\""},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"headers\":{}}"), POLICY_ERR_BUNDLE,
     "rules[0].headers: must not be empty", NULL},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"headers\":{\"x\":[\"1\"],\"x\":[\"2\"]}}"),
     POLICY_ERR_JSON, "duplicate key \"x\"", NULL},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"action\":\"deny\"}"), POLICY_ERR_JSON,
     "duplicate key \"action\"", NULL},
    /* duplicate keys are found after unescaping (issue 20) */
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"headers\":{\"x\":[\"1\"],\"\\u0078\":[\"2\"]}}"),
     POLICY_ERR_JSON, "1:72: duplicate key \"\\u0078\"", NULL},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"headers\":{\"a\\/b\":[\"1\"],\"a/b\":[\"2\"]}}"),
     POLICY_ERR_JSON, "duplicate key \"a/b\"", NULL},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"headers\":{\"\\ud800\":[\"1\"]}}"),
     POLICY_ERR_JSON, "bad escape in key", NULL},
    /* an escaped spelling of a known key is that key (as every JSON reader
     * reads it), so here a duplicate */
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"\\u0061ction\":\"deny\"}"), POLICY_ERR_JSON,
     "duplicate key \"\\u0061ction\"", NULL},
    {"{\"revision\":1,\"rules\":[],\"r\\u0065vision\":2}", POLICY_ERR_JSON,
     "1:26: duplicate key \"r\\u0065vision\"", NULL},
    /* limits before the duplicate pass: the unknown key is what is reported */
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"action\":\"deny\",\"colour\":1}"),
     POLICY_ERR_BUNDLE, "rules[0]: unknown key \"colour\"", "(rule \"a\")"},
    {"{\"revision\":1,\"revision\":2,\"rules\":[],\"extra\":true}", POLICY_ERR_BUNDLE,
     "unknown key \"extra\"", NULL},
    {R0("{\"id\":\"default\",\"action\":\"allow\"}"), POLICY_ERR_BUNDLE,
     "rules[0].id: \"default\" is reserved", NULL},
    {R0("{\"id\":\"has space\",\"action\":\"allow\"}"), POLICY_ERR_BUNDLE, "rules[0].id: must be",
     NULL},
    {R0("{\"id\":\"d\",\"action\":\"dispatch\",\"dispatch\":\"a b\"}"), POLICY_ERR_BUNDLE,
     "rules[0].dispatch: must be", "rule \"d\""},
    {R0("\"x\""), POLICY_ERR_BUNDLE, "rules[0]: must be an object", NULL},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"methods\":[\"GET\":1]}"), POLICY_ERR_JSON,
     "expected ',' or ']'", NULL},
    {R0("{\"id\":\"a\",\"action\":\"allow\",\"headers\":{\"x\":[\"1\":2]}}"),
     POLICY_ERR_JSON, "expected ',' or ']'", NULL},
    {"{\"revision\":-1,\"rules\":[]}", POLICY_ERR_BUNDLE, "1:13: revision: must be an integer",
     NULL},
    {"{\"revision\":1.5,\"rules\":[]}", POLICY_ERR_BUNDLE, "revision: must be an integer", NULL},
    {"{\"rules\":[]}", POLICY_ERR_BUNDLE, "1:1: missing \"revision\"", NULL},
    {"{\"revision\":1}", POLICY_ERR_BUNDLE, "missing \"rules\"", NULL},
    {"{\"revision\":1,\"rules\":{}}", POLICY_ERR_BUNDLE, "rules: must be an array", NULL},
    {"{\"revision\":1,\"rules\":[],\"expires_at\":\"2026-11-23\"}", POLICY_ERR_BUNDLE,
     "expires_at: must be an RFC 3339 UTC time", NULL},
    {"{\"revision\":1,\"rules\":[],\"expires_at\":\"2026-02-30T00:00:00Z\"}", POLICY_ERR_BUNDLE,
     "expires_at: must be", NULL},
    {"{\"revision\":1,\"rules\":[],\"expires_at\":\"2026-11-23T00:00:00+01:00\"}",
     POLICY_ERR_BUNDLE, "expires_at: must be", NULL},
    {"{\"revision\":1,\"rules\":[],\"mode\":\"permissive\"}", POLICY_ERR_BUNDLE,
     "mode: must be \"enforce\" or \"audit\"", NULL},
    {"{\"revision\":1,\"rules\":[],\"default\":\"dispatch\"}", POLICY_ERR_BUNDLE,
     "default: must be \"allow\" or \"deny\"", NULL},
    {"{\"revision\":1,\"rules\":[],\"extra\":true}", POLICY_ERR_BUNDLE, "unknown key \"extra\"",
     NULL},
    {"[1,2]", POLICY_ERR_BUNDLE, "bundle: must be an object", NULL},
    {"{\"revision\":1,\"rules\":[}", POLICY_ERR_JSON, "1:", NULL},
    {"{\"revision\":1,", POLICY_ERR_JSON, "1:15: unexpected end of JSON", NULL},
    {"", POLICY_ERR_JSON, "1:1", NULL},
    {"{\"revision\":1,\"rules\":[]} x", POLICY_ERR_JSON, NULL, NULL},
    /* positions: line and column of the offending token */
    {"{\"revision\": 1,\n \"rules\": [\n  {\"id\": \"x\", \"action\": \"allow\",\n"
     "   \"paths\": [\"/**/a\"]}]}",
     POLICY_ERR_BUNDLE, "4:14: rules[0].paths[0]: '**' must be the last segment (rule \"x\")",
     NULL},
};

START_TEST(test_bundle_errors)
{
    struct policy_bundle *b = NULL;
    char err[512];
    const char *js = bad_bundles[_i].json;
    int rc = policy_bundle_parse(&b, js, strlen(js), err, sizeof(err));
    ck_assert_msg(rc == bad_bundles[_i].rc, "%s: rc %d (%s), want %d", js, rc, err,
                  bad_bundles[_i].rc);
    ck_assert_ptr_null(b);
    if (bad_bundles[_i].want1 != NULL)
        ck_assert_msg(strstr(err, bad_bundles[_i].want1) != NULL, "got '%s', want '%s'", err,
                      bad_bundles[_i].want1);
    if (bad_bundles[_i].want2 != NULL)
        ck_assert_msg(strstr(err, bad_bundles[_i].want2) != NULL, "got '%s', want '%s'", err,
                      bad_bundles[_i].want2);
    /* every message starts with line:col */
    {
        int line = 0, col = 0;
        ck_assert_msg(sscanf(err, "%d:%d: ", &line, &col) == 2 && line > 0 && col > 0, "%s", err);
    }
}
END_TEST

static const char design_bundle[] =
    "{\n"
    "  \"revision\": 17,\n"
    "  \"expires_at\": \"2026-11-23T00:00:00Z\",\n"
    "  \"mode\": \"enforce\",\n"
    "  \"default\": \"deny\",\n"
    "  \"rules\": [\n"
    "    {\"id\": \"frontend-reads-orders\", \"action\": \"allow\",\n"
    "     \"from\": [\"spiffe://example.org/ns/shop/sa/frontend\", "
    "\"spiffe://example.org/ns/ops/*\"],\n"
    "     \"hosts\": [\"orders.shop.svc\"], \"methods\": [\"GET\", \"HEAD\"],\n"
    "     \"paths\": [\"/orders\", \"/orders/**\", \"/users/*/orders\"],\n"
    "     \"headers\": {\"x-tenant\": [\"acme\"]}},\n"
    "    {\"id\": \"no-admin\", \"action\": \"deny\", \"paths\": [\"/admin/**\"]},\n"
    "    {\"id\": \"payments\", \"action\": \"dispatch\", \"dispatch\": \"authz\", "
    "\"paths\": [\"/payments/**\"]},\n"
    "    {\"id\": \"partner-any\", \"action\": \"allow\", \"from\": [\"spiffe://partner.net/*\"], "
    "\"paths\": [\"/partner/*\"]},\n"
    "    {\"id\": \"anyone-health\", \"action\": \"allow\", \"from\": [\"*\"], "
    "\"paths\": [\"/healthz\"]},\n"
    "    {\"id\": \"public\", \"action\": \"allow\", \"paths\": [\"/public/**\"]},\n"
    "    {\"id\": \"wild-host\", \"action\": \"allow\", \"hosts\": [\"*.Example.net\", \"[::1]\"], "
    "\"paths\": [\"/w\"]},\n"
    "    {\"id\": \"deny-debug\", \"action\": \"deny\", \"headers\": {\"x-debug\": [\"1\"]}},\n"
    "    {\"id\": \"payments-allow\", \"action\": \"allow\", \"paths\": [\"/payments/**\"]},\n"
    "    {\"id\": \"payments-2\", \"action\": \"dispatch\", \"dispatch\": \"other\", "
    "\"paths\": [\"/payments/x\"]},\n"
    "    {\"id\": \"root\", \"action\": \"allow\", \"paths\": [\"/\"]},\n"
    "    {\"id\": \"posts\", \"action\": \"allow\", \"methods\": [\"POST\"], "
    "\"paths\": [\"/submit\", \"/submit/\"]},\n"
    "    {\"id\": \"fe-secret\", \"action\": \"deny\", "
    "\"from\": [\"spiffe://example.org/ns/shop/sa/frontend\"], \"paths\": [\"/orders/secret\"]},\n"
    "    {\"id\": \"pay-audit\", \"action\": \"dispatch\", \"dispatch\": \"authz\", "
    "\"paths\": [\"/audit/*\"]}\n"
    "  ]\n"
    "}\n";

START_TEST(test_bundle_accessors)
{
    struct policy_bundle *b = NULL;
    const char *const *names = NULL;
    char err[256];
    ck_assert_int_eq(policy_bundle_parse(&b, design_bundle, strlen(design_bundle), err, sizeof(err)),
                     0);
    ck_assert_int_eq(policy_bundle_revision(b), 17);
    ck_assert_int_eq(policy_bundle_expires_at(b), 1795392000); /* 2026-11-23T00:00:00Z */
    ck_assert_int_eq(policy_bundle_mode(b), POLICY_MODE_ENFORCE);
    ck_assert_int_eq(policy_bundle_default(b), POLICY_DENY);
    ck_assert_uint_eq(policy_bundle_rule_count(b), 14);
    ck_assert_uint_eq(policy_bundle_dispatch_targets(b, &names), 2);
    ck_assert_str_eq(names[0], "authz");
    ck_assert_str_eq(names[1], "other");
    policy_bundle_free(b);
    policy_bundle_free(NULL);
}
END_TEST

static const struct {
    const char *json;
    int64_t rev, expires;
    int mode, def;
    size_t nrules;
} good_bundles[] = {
    {"{\"revision\":0,\"rules\":[]}", 0, 0, POLICY_MODE_ENFORCE, POLICY_DENY, 0},
    {"{\"rules\":[],\"revision\":9,\"mode\":\"audit\",\"default\":\"allow\"}", 9, 0,
     POLICY_MODE_AUDIT, POLICY_ALLOW, 0},
    {"{\"revision\":1,\"expires_at\":\"1970-01-01T00:00:01Z\",\"rules\":[]}", 1, 1, 0, 1, 0},
    {"{\"revision\":1,\"expires_at\":\"2024-02-29T12:30:45.123Z\",\"rules\":[]}", 1, 1709209845,
     0, 1, 0},
    {"{\"revision\":1,\"rules\":[{\"id\":\"a\",\"action\":\"allow\",\"paths\":[\"/**\",\"/\","
     "\"/*/x/**\",\"/a%20b\"],\"hosts\":[\"*.A.b\",\"[::1]\"],\"from\":[\"spiffe://t/*\","
     "\"spiffe://t/a/*\",\"spiffe://t/a\",\"*\"],\"headers\":{\"x\":[\"\",\"y\"]}}]}",
     1, 0, 0, 1, 1},
};

START_TEST(test_bundle_good)
{
    struct policy_bundle *b = NULL;
    char err[256];
    const char *js = good_bundles[_i].json;
    ck_assert_msg(policy_bundle_parse(&b, js, strlen(js), err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(policy_bundle_revision(b), good_bundles[_i].rev);
    ck_assert_int_eq(policy_bundle_expires_at(b), good_bundles[_i].expires);
    ck_assert_int_eq(policy_bundle_mode(b), good_bundles[_i].mode);
    ck_assert_int_eq(policy_bundle_default(b), good_bundles[_i].def);
    ck_assert_uint_eq(policy_bundle_rule_count(b), good_bundles[_i].nrules);
    policy_bundle_free(b);
}
END_TEST

START_TEST(test_bundle_limits)
{
    struct policy_bundle *b = NULL;
    char err[256];
    static const char nul[] = "{\"revision\":1,\n\"rules\":[]}\0garbage";
    ck_assert_int_eq(policy_bundle_parse(&b, "{}", (size_t)POLICY_BUNDLE_MAX_BYTES + 1, err,
                                         sizeof(err)),
                     POLICY_ERR_TOO_LARGE);
    ck_assert_int_eq(policy_bundle_parse(&b, nul, sizeof(nul) - 1, err, sizeof(err)),
                     POLICY_ERR_JSON);
    ck_assert_msg(strstr(err, "2:12: NUL byte") != NULL, "%s", err);
    ck_assert_int_eq(policy_bundle_parse(NULL, "{}", 2, err, sizeof(err)), POLICY_ERR_INVAL);
    ck_assert_ptr_null(b);
    /* errlen 0 / NULL err is allowed */
    ck_assert_int_eq(policy_bundle_parse(&b, "[", 1, NULL, 0), POLICY_ERR_JSON);
}
END_TEST

/* Token budget: a bundle of many tiny tokens over the budget is refused
 * as too large (not as a syntax error) without allocating per rule. */
START_TEST(test_bundle_token_budget)
{
    size_t n = (size_t)POLICY_BUNDLE_MAX_TOKENS + 10, len = 0;
    char *js = malloc(2 * n + 64), err[256];
    struct policy_bundle *b = NULL;
    ck_assert_ptr_nonnull(js);
    len += (size_t)sprintf(js, "{\"revision\":1,\"rules\":[],\"x\":[");
    for (size_t i = 0; i < n; i++) {
        js[len++] = '0';
        js[len++] = ',';
    }
    js[len - 1] = ']';
    js[len++] = '}';
    ck_assert_int_eq(policy_bundle_parse(&b, js, len, err, sizeof(err)), POLICY_ERR_TOO_LARGE);
    free(js);
}
END_TEST

/* Bundles of one big object, 640 KB (issue 20: the pairwise key check took
 * 82 s on these in an ASan build). What is checked is the documented
 * answer, not the time: limits (unknown keys, the headers entry limit) are
 * reported before duplicates, and duplicates after unescaping are found at
 * any size. The work itself is counted in the certs suite (json_keys). */
#define WIDE_BYTES (640 * 1024)

enum wide_shape { WIDE_UNKNOWN, WIDE_SAME_KEY, WIDE_HDR_OK, WIDE_HDR_DUP, WIDE_HDR_OVER,
                  WIDE_HDR_OVER_DUP };

static const struct {
    enum wide_shape shape;
    int rc;
    const char *want; /* substring of the message */
} wide[] = {
    {WIDE_UNKNOWN, POLICY_ERR_BUNDLE, "1:26: unknown key \"k000000\""},
    {WIDE_SAME_KEY, POLICY_ERR_JSON, "1:15: duplicate key \"revision\""},
    {WIDE_HDR_OK, 0, NULL},
    {WIDE_HDR_DUP, POLICY_ERR_JSON, "duplicate key \"\\u0068000000\""},
    {WIDE_HDR_OVER, POLICY_ERR_BUNDLE, "rules[0].headers: too many entries (limit 4096)"},
    {WIDE_HDR_OVER_DUP, POLICY_ERR_BUNDLE, "rules[0].headers: too many entries (limit 4096)"},
};

static size_t wide_put(char *js, size_t len, const char *s)
{
    size_t n = strlen(s);
    ck_assert_uint_lt(len + n, WIDE_BYTES + 4096);
    memcpy(js + len, s, n);
    return len + n;
}

START_TEST(test_bundle_wide)
{
    char *js = malloc(WIDE_BYTES + 4096), ent[64], err[256] = "";
    struct policy_bundle *b = NULL;
    size_t len = 0, nhdr = 0;
    int rc;

    ck_assert_ptr_nonnull(js);
    switch (wide[_i].shape) {
    case WIDE_UNKNOWN:
        len = wide_put(js, len, "{\"revision\":1,\"rules\":[]");
        for (size_t i = 0; len < WIDE_BYTES; i++) {
            snprintf(ent, sizeof(ent), ",\"k%06zu\":0", i);
            len = wide_put(js, len, ent);
        }
        break;
    case WIDE_SAME_KEY:
        len = wide_put(js, len, "{\"revision\":1");
        while (len < WIDE_BYTES)
            len = wide_put(js, len, ",\"revision\":1");
        len = wide_put(js, len, ",\"rules\":[]");
        break;
    case WIDE_HDR_OK:
    case WIDE_HDR_DUP:
    case WIDE_HDR_OVER:
    case WIDE_HDR_OVER_DUP:
        len = wide_put(js, len, "{\"revision\":1,\"rules\":[{\"id\":\"a\",\"action\":\"allow\","
                                "\"headers\":{");
        nhdr = wide[_i].shape == WIDE_HDR_OK || wide[_i].shape == WIDE_HDR_DUP
                   ? POLICY_RULE_MAX_LIST
                   : (wide[_i].shape == WIDE_HDR_OVER ? 40000 : POLICY_RULE_MAX_LIST + 1);
        for (size_t i = 0; i < nhdr; i++) {
            /* padded so the 4096 entries make 640 KB */
            int pad = nhdr > POLICY_RULE_MAX_LIST + 1 ? 1 : 142;
            if (i == nhdr - 1 && wide[_i].shape == WIDE_HDR_DUP)
                snprintf(ent, sizeof(ent), ",\"\\u0068000000\":[\"");
            else if (i == 1 && wide[_i].shape == WIDE_HDR_OVER_DUP)
                snprintf(ent, sizeof(ent), ",\"h000000\":[\"");
            else
                snprintf(ent, sizeof(ent), "%s\"h%06zu\":[\"", i ? "," : "", i);
            len = wide_put(js, len, ent);
            memset(js + len, 'v', (size_t)pad);
            len = wide_put(js, len + (size_t)pad, "\"]");
        }
        len = wide_put(js, len, "}}]");
        break;
    }
    len = wide_put(js, len, "}");
    ck_assert_uint_ge(len, WIDE_BYTES - 16 * 1024);
    rc = policy_bundle_parse(&b, js, len, err, sizeof(err));
    ck_assert_msg(rc == wide[_i].rc, "row %d: rc %d (%s), want %d", _i, rc, err, wide[_i].rc);
    if (wide[_i].rc == 0) {
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(policy_bundle_rule_count(b), 1);
        policy_bundle_free(b);
    } else {
        ck_assert_ptr_null(b);
        ck_assert_msg(strstr(err, wide[_i].want) != NULL, "row %d: got '%s', want '%s'", _i, err,
                      wide[_i].want);
    }
    free(js);
}
END_TEST

/* ---- compile.c + eval.c --------------------------------------------------------- */

#define FE "spiffe://example.org/ns/shop/sa/frontend"
#define OPS "spiffe://example.org/ns/ops/sa/deploy"

static const struct {
    const char *peer, *method, *host, *path, *headers; /* headers: "n=v;n=v" */
    enum policy_verdict want;
    const char *rule;
} matches[] = {
    {FE, "GET", "orders.shop.svc", "/orders", "x-tenant=acme", POLICY_ALLOW,
     "frontend-reads-orders"},
    {FE, "HEAD", "orders.shop.svc:8443", "/orders/1/2", "x-tenant=acme", POLICY_ALLOW,
     "frontend-reads-orders"},
    {FE, "GET", "ORDERS.Shop.SVC", "/orders/", "x-tenant=acme", POLICY_ALLOW,
     "frontend-reads-orders"},
    {FE, "GET", "orders.shop.svc.", "/users/7/orders", "x-tenant=acme", POLICY_ALLOW,
     "frontend-reads-orders"},
    {FE, "GET", "orders.shop.svc", "/users/7/8/orders", "x-tenant=acme", POLICY_DENY, "default"},
    {FE, "GET", "orders.shop.svc", "/ordersx", "x-tenant=acme", POLICY_DENY, "default"},
    {FE, "GET", "other.svc", "/orders", "x-tenant=acme", POLICY_DENY, "default"},
    {FE, "GET", "", "/orders", "x-tenant=acme", POLICY_DENY, "default"},
    {FE, "get", "orders.shop.svc", "/orders", "x-tenant=acme", POLICY_DENY, "default"},
    {FE, "POST", "orders.shop.svc", "/orders", "x-tenant=acme", POLICY_DENY, "default"},
    {FE, "GET", "orders.shop.svc", "/orders", "", POLICY_DENY, "default"},
    {FE, "GET", "orders.shop.svc", "/orders", "x-tenant=evil", POLICY_DENY, "default"},
    {FE, "GET", "orders.shop.svc", "/orders", "x-tenant=acme;x-tenant=evil", POLICY_DENY,
     "default"},
    {FE, "GET", "orders.shop.svc", "/orders", "x-other=1;x-tenant=acme", POLICY_ALLOW,
     "frontend-reads-orders"},
    {OPS, "GET", "orders.shop.svc", "/orders", "x-tenant=acme", POLICY_ALLOW,
     "frontend-reads-orders"},
    {"spiffe://example.org/ns/ops", "GET", "orders.shop.svc", "/orders", "x-tenant=acme",
     POLICY_DENY, "default"},
    {"spiffe://example.org/ns/opsx/sa", "GET", "orders.shop.svc", "/orders", "x-tenant=acme",
     POLICY_DENY, "default"},
    {FE "x", "GET", "orders.shop.svc", "/orders", "x-tenant=acme", POLICY_DENY, "default"},
    {FE, "GET", "orders.shop.svc", "/orders/secret", "x-tenant=acme", POLICY_DENY, "fe-secret"},
    {OPS, "GET", "orders.shop.svc", "/orders/secret", "x-tenant=acme", POLICY_ALLOW,
     "frontend-reads-orders"},
    {FE, "GET", "orders.shop.svc", "/admin", "", POLICY_DENY, "no-admin"},
    {"", "GET", "", "/admin/x/y", "", POLICY_DENY, "no-admin"},
    {FE, "GET", "", "/administrator", "", POLICY_DENY, "default"},
    {FE, "GET", "", "/payments", "", POLICY_DISPATCH, "payments"},
    {FE, "POST", "", "/payments/x", "", POLICY_DISPATCH, "payments"},
    {FE, "POST", "", "/payments/x", "x-debug=1", POLICY_DENY, "deny-debug"},
    {FE, "GET", "", "/public/x", "x-debug=0;x-debug=1", POLICY_DENY, "deny-debug"},
    {FE, "GET", "", "/public/x", "x-debug=0", POLICY_ALLOW, "public"},
    {"", "GET", "", "/public", "", POLICY_ALLOW, "public"},
    {"spiffe://partner.net/a/b", "GET", "", "/partner/a", "", POLICY_ALLOW, "partner-any"},
    {"spiffe://partner.net/a", "GET", "", "/partner/a/b", "", POLICY_DENY, "default"},
    {"spiffe://partner.net/a", "GET", "", "/partner/", "", POLICY_DENY, "default"},
    {"spiffe://partner.netx/a", "GET", "", "/partner/a", "", POLICY_DENY, "default"},
    {"spiffe://partner.net", "GET", "", "/partner/a", "", POLICY_DENY, "default"},
    {"spiffe://x.org/y", "GET", "", "/healthz", "", POLICY_ALLOW, "anyone-health"},
    {"", "GET", "", "/healthz", "", POLICY_DENY, "default"},
    {"", "GET", "a.example.net", "/w", "", POLICY_ALLOW, "wild-host"},
    {"", "GET", "a.b.EXAMPLE.net:80", "/w", "", POLICY_ALLOW, "wild-host"},
    {"", "GET", "example.net", "/w", "", POLICY_DENY, "default"},
    {"", "GET", "xexample.net", "/w", "", POLICY_DENY, "default"},
    {"", "GET", "[::1]:8443", "/w", "", POLICY_ALLOW, "wild-host"},
    {"", "GET", "", "/", "", POLICY_ALLOW, "root"},
    {"", "GET", "", "/x", "", POLICY_DENY, "default"},
    {"", "POST", "", "/submit", "", POLICY_ALLOW, "posts"},
    {"", "POST", "", "/submit/", "", POLICY_ALLOW, "posts"},
    {"", "GET", "", "/submit", "", POLICY_DENY, "default"},
    {"", "GET", "", "/audit/1", "", POLICY_DISPATCH, "pay-audit"},
    {"", "GET", "", "/audit/", "", POLICY_DENY, "default"},
};

/* Splits "n=v;n=v" into hdrs (pointing into buf). */
static size_t parse_hdrs(const char *spec, char *buf, size_t cap, struct policy_header *hdrs,
                         size_t max)
{
    size_t n = 0;
    char *save = NULL, *tok;
    snprintf(buf, cap, "%s", spec);
    for (tok = strtok_r(buf, ";", &save); tok != NULL && n < max;
         tok = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(tok, '=');
        hdrs[n].name = tok;
        hdrs[n].name_len = eq != NULL ? (size_t)(eq - tok) : strlen(tok);
        hdrs[n].value = eq != NULL ? eq + 1 : "";
        hdrs[n].value_len = strlen(hdrs[n].value);
        n++;
    }
    return n;
}

static struct policy_engine *engine_from(const char *js)
{
    struct policy_bundle *b = NULL;
    struct policy_engine *e = NULL;
    char err[512];
    ck_assert_msg(policy_bundle_parse(&b, js, strlen(js), err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(policy_engine_new(&e, b, err, sizeof(err)), 0);
    policy_bundle_free(b); /* the engine must not depend on it */
    return e;
}

static enum policy_verdict eval_simple(const struct policy_engine *e, const char *peer,
                                       const char *method, const char *host, const char *path,
                                       const char *hspec, struct policy_decision *d)
{
    struct policy_header hdrs[8];
    char buf[256];
    struct policy_request q = {
        .peer = peer, .peer_len = strlen(peer), .method = method, .method_len = strlen(method),
        .authority = host, .authority_len = strlen(host), .path = path, .path_len = strlen(path)};
    q.headers = hdrs;
    q.nheaders = parse_hdrs(hspec, buf, sizeof(buf), hdrs, N_ELEMS(hdrs));
    return policy_eval(e, &q, d);
}

START_TEST(test_eval_table)
{
    struct policy_engine *e = engine_from(design_bundle);
    struct policy_decision d;
    enum policy_verdict v = eval_simple(e, matches[_i].peer, matches[_i].method, matches[_i].host,
                                        matches[_i].path, matches[_i].headers, &d);
    ck_assert_msg(v == matches[_i].want && strcmp(d.rule_id, matches[_i].rule) == 0,
                  "%s %s %s: got %s/%s, want %s/%s", matches[_i].peer, matches[_i].method,
                  matches[_i].path, policy_verdict_name(v), d.rule_id,
                  policy_verdict_name(matches[_i].want), matches[_i].rule);
    ck_assert_int_eq(d.verdict, v);
    ck_assert_int_eq(d.is_default, strcmp(matches[_i].rule, "default") == 0);
    ck_assert_int_eq(d.audit, 0);
    ck_assert_int_eq(d.revision, 17);
    if (v == POLICY_DISPATCH)
        ck_assert_str_eq(d.dispatch, "authz");
    else
        ck_assert_ptr_null(d.dispatch);
    policy_engine_free(e);
}
END_TEST

START_TEST(test_eval_modes)
{
    struct policy_engine *e = engine_from(
        "{\"revision\":3,\"mode\":\"audit\",\"default\":\"allow\",\"rules\":["
        "{\"id\":\"d\",\"action\":\"deny\",\"paths\":[\"/x\"]}]}");
    struct policy_decision d;
    ck_assert_int_eq(eval_simple(e, "", "GET", "", "/x", "", &d), POLICY_DENY);
    ck_assert_int_eq(d.audit, 1);
    ck_assert_str_eq(d.rule_id, "d");
    ck_assert_int_eq(eval_simple(e, "", "GET", "", "/y", "", &d), POLICY_ALLOW);
    ck_assert_int_eq(d.is_default, 1);
    ck_assert_str_eq(d.rule_id, "default");
    ck_assert_int_eq(policy_engine_revision(e), 3);
    ck_assert_uint_eq(policy_engine_rule_count(e), 1);
    /* why may be NULL */
    ck_assert_int_eq(eval_simple(e, "", "GET", "", "/x", "", NULL), POLICY_DENY);
    policy_engine_free(e);
    policy_engine_free(NULL);

    e = engine_from("{\"revision\":0,\"rules\":[]}");
    ck_assert_int_eq(eval_simple(e, "", "", "", "", "", &d), POLICY_DENY);
    ck_assert_int_eq(d.is_default, 1);
    policy_engine_free(e);
}
END_TEST

/* Among several matching rules of the winning action, the first in bundle
 * order is reported, whichever index found them. */
START_TEST(test_eval_first_in_order)
{
    struct policy_engine *e = engine_from(
        "{\"revision\":1,\"rules\":["
        "{\"id\":\"a3\",\"action\":\"allow\",\"paths\":[\"/**\"],\"methods\":[\"PUT\"]},"
        "{\"id\":\"a1\",\"action\":\"allow\",\"from\":[\"spiffe://t/x\"]},"
        "{\"id\":\"a2\",\"action\":\"allow\",\"paths\":[\"/p/**\"]},"
        "{\"id\":\"d2\",\"action\":\"deny\",\"from\":[\"spiffe://t/*\"],\"paths\":[\"/p/q\"]},"
        "{\"id\":\"d1\",\"action\":\"deny\",\"from\":[\"spiffe://t/x\"],\"paths\":[\"/p/*\"]}]}");
    struct policy_decision d;
    ck_assert_int_eq(eval_simple(e, "spiffe://t/x", "GET", "", "/p/z", "", &d), POLICY_DENY);
    ck_assert_str_eq(d.rule_id, "d1");
    ck_assert_int_eq(eval_simple(e, "spiffe://t/x", "GET", "", "/p/q", "", &d), POLICY_DENY);
    ck_assert_str_eq(d.rule_id, "d2");
    ck_assert_int_eq(eval_simple(e, "spiffe://t/x", "GET", "", "/p", "", &d), POLICY_ALLOW);
    ck_assert_str_eq(d.rule_id, "a1");
    ck_assert_int_eq(eval_simple(e, "spiffe://t/x", "PUT", "", "/p", "", &d), POLICY_ALLOW);
    ck_assert_str_eq(d.rule_id, "a3");
    ck_assert_int_eq(eval_simple(e, "spiffe://t/y", "GET", "", "/p", "", &d), POLICY_ALLOW);
    ck_assert_str_eq(d.rule_id, "a2");
    policy_engine_free(e);
}
END_TEST

/* ---- index equivalence: engine vs a naive linear reference ---- */

struct rrule {
    int action;
    int nfrom, nhosts, nmethods, npaths, nhv;
    char from[3][48], hosts[2][24], paths[3][40];
    const char *methods[2], *hvals[2];
};

static const char *pick(const char *const *v, size_t n)
{
    return v[(size_t)rand() % n];
}

static void rand_peer(char *out, size_t cap, int allow_empty)
{
    static const char *const tds[] = {"a.org", "b.org", "c.org", "d.org"};
    static const char *const segs[] = {"x", "y", "z", "w", "v", "u", "t", "s"};
    int n = 1 + rand() % 3, o;
    if (allow_empty && rand() % 10 == 0) {
        out[0] = '\0';
        return;
    }
    o = snprintf(out, cap, "spiffe://%s", pick(tds, 4));
    for (int i = 0; i < n; i++)
        o += snprintf(out + o, cap - (size_t)o, "/%s", pick(segs, 8));
}

static void rand_path(char *out, size_t cap, int pattern)
{
    static const char *const pat[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "*"};
    static const char *const req[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"};
    int n = pattern ? 1 + rand() % 3 : rand() % 4, o = 0;
    out[0] = '\0';
    if (pattern && rand() % 20 == 0)
        n = 0; /* now and then a pattern with no literal segment */
    for (int i = 0; i < n; i++)
        o += snprintf(out + o, cap - (size_t)o, "/%s", pattern ? pick(pat, 11) : pick(req, 11));
    if (pattern && rand() % 4 == 0)
        o += snprintf(out + o, cap - (size_t)o, "/**");
    else if (o == 0 || rand() % 6 == 0)
        snprintf(out + o, cap - (size_t)o, "/");
}

/* 0: rand_rule writes no subtree pattern (an ID cut after a slash), so the
 * engine has no prefix index, the shape of a bundle of exact IDs only
 * (the evaluator then hashes the peer ID without looking for prefixes). */
static int rr_subtree = 1;

static void rand_rule(struct rrule *r)
{
    static const char *const hosts[] = {"h1.test", "H2.test", "*.w.test", "[::1]"};
    static const char *const methods[] = {"GET", "POST", "PUT"}, *const vals[] = {"1", "2"};
    memset(r, 0, sizeof(*r));
    /* mostly allow; deny and dispatch rules always carry "from" and "paths"
     * so that they do not swallow every request */
    r->action = rand() % 10 < 8 ? POLICY_ALLOW : rand() % 2 ? POLICY_DENY : POLICY_DISPATCH;
    r->nfrom = rand() % 4 == 0 ? 0 : 1 + rand() % 2;
    for (int i = 0; i < r->nfrom; i++) {
        int k = rand() % 10;
        rand_peer(r->from[i], sizeof(r->from[i]), 0);
        if (k == 0 && rand() % 2)
            snprintf(r->from[i], sizeof(r->from[i]), "*");
        else if (k <= 2 && rr_subtree) /* subtree: cut after a random '/' past the trust domain */
            strcpy(strrchr(r->from[i], '/'), "/*");
    }
    r->nhosts = rand() % 4 == 0 ? 1 + rand() % 2 : 0;
    for (int i = 0; i < r->nhosts; i++)
        snprintf(r->hosts[i], sizeof(r->hosts[i]), "%s", pick(hosts, 4));
    r->nmethods = rand() % 3 == 0 ? 1 + rand() % 2 : 0;
    for (int i = 0; i < r->nmethods; i++)
        r->methods[i] = pick(methods, 3);
    r->npaths = rand() % 4 == 0 && r->nfrom > 0 ? 0 : 1 + rand() % 3;
    for (int i = 0; i < r->npaths; i++)
        rand_path(r->paths[i], sizeof(r->paths[i]), 1);
    r->nhv = rand() % 4 == 0 ? 1 + rand() % 2 : 0;
    for (int i = 0; i < r->nhv; i++)
        r->hvals[i] = pick(vals, 2);
}

static size_t rule_json(const struct rrule *r, int idx, char *o, size_t cap)
{
    static const char *const act[] = {"allow", "deny", "dispatch"};
    size_t n = (size_t)snprintf(o, cap, "%s{\"id\":\"r%d\",\"action\":\"%s\"%s", idx ? "," : "",
                                idx, act[r->action], r->action == 2 ? ",\"dispatch\":\"t\"" : "");
#define LIST(key, cnt, item)                                                                       \
    if (cnt > 0) {                                                                                 \
        n += (size_t)snprintf(o + n, cap - n, ",\"" key "\":[");                                   \
        for (int i = 0; i < cnt; i++)                                                              \
            n += (size_t)snprintf(o + n, cap - n, "%s\"%s\"", i ? "," : "", item);                 \
        n += (size_t)snprintf(o + n, cap - n, "]");                                                \
    }
    LIST("from", r->nfrom, r->from[i])
    LIST("hosts", r->nhosts, r->hosts[i])
    LIST("methods", r->nmethods, r->methods[i])
    LIST("paths", r->npaths, r->paths[i])
    if (r->nhv > 0) {
        n += (size_t)snprintf(o + n, cap - n, ",\"headers\":{\"x-t\":[");
        for (int i = 0; i < r->nhv; i++)
            n += (size_t)snprintf(o + n, cap - n, "%s\"%s\"", i ? "," : "", r->hvals[i]);
        n += (size_t)snprintf(o + n, cap - n, "]}");
    }
#undef LIST
    n += (size_t)snprintf(o + n, cap - n, "}");
    return n;
}

static int ref_from(const char *pat, const char *peer)
{
    size_t pl = strlen(pat), n = strlen(peer);
    if (strcmp(pat, "*") == 0)
        return n > 0;
    if (pl >= 2 && strcmp(pat + pl - 2, "/*") == 0)
        return n > pl - 1 && strncmp(peer, pat, pl - 1) == 0;
    return strcmp(pat, peer) == 0;
}

static int ref_host(const char *pat, const char *authority)
{
    char h[64], p[32];
    size_t n, k;
    snprintf(h, sizeof(h), "%s", authority);
    snprintf(p, sizeof(p), "%s", pat);
    for (k = 0; h[k]; k++)
        h[k] = (char)(h[k] >= 'A' && h[k] <= 'Z' ? h[k] + 32 : h[k]);
    for (k = 0; p[k]; k++)
        p[k] = (char)(p[k] >= 'A' && p[k] <= 'Z' ? p[k] + 32 : p[k]);
    if (h[0] == '[') {
        char *rb = strchr(h, ']');
        if (rb != NULL)
            rb[1] = '\0';
    } else {
        char *colon = strrchr(h, ':');
        if (colon != NULL && strspn(colon + 1, "0123456789") == strlen(colon + 1))
            *colon = '\0';
        n = strlen(h);
        if (n > 1 && h[n - 1] == '.')
            h[n - 1] = '\0';
    }
    n = strlen(h);
    if (p[0] == '*')
        return n > strlen(p + 1) && strcmp(h + n - strlen(p + 1), p + 1) == 0;
    return strcmp(h, p) == 0;
}

static int split(const char *path, char segs[8][8])
{
    int n = 0;
    const char *s = path + 1;
    for (;;) {
        const char *e = strchr(s, '/');
        size_t len = e != NULL ? (size_t)(e - s) : strlen(s);
        snprintf(segs[n++], 8, "%.*s", (int)len, s);
        if (e == NULL)
            return n;
        s = e + 1;
    }
}

static int ref_path(const char *pat, const char *path)
{
    char ps[8][8], qs[8][8];
    int np = split(pat, ps), nq = split(path, qs), glob = strcmp(ps[np - 1], "**") == 0;
    if (glob)
        np--;
    if (glob ? nq < np : nq != np)
        return 0;
    if (glob && np == 0)
        return 1;
    for (int i = 0; i < np; i++)
        if (strcmp(ps[i], "*") == 0 ? qs[i][0] == '\0' : strcmp(ps[i], qs[i]) != 0)
            return 0;
    return 1;
}

struct rreq {
    char peer[64], path[40];
    const char *method, *host;
    const char *hv[2];
    int nh;
};

static int ref_rule(const struct rrule *r, const struct rreq *q)
{
    int ok = r->nfrom == 0, seen = 0;
    for (int i = 0; i < r->nfrom && !ok; i++)
        ok = ref_from(r->from[i], q->peer);
    if (!ok)
        return 0;
    ok = r->nhosts == 0;
    for (int i = 0; i < r->nhosts && !ok; i++)
        ok = ref_host(r->hosts[i], q->host);
    if (!ok)
        return 0;
    ok = r->nmethods == 0;
    for (int i = 0; i < r->nmethods && !ok; i++)
        ok = strcmp(r->methods[i], q->method) == 0;
    if (!ok)
        return 0;
    ok = r->npaths == 0;
    for (int i = 0; i < r->npaths && !ok; i++)
        ok = ref_path(r->paths[i], q->path);
    if (!ok || r->nhv == 0)
        return ok;
    for (int k = 0; k < q->nh; k++) {
        int in = 0;
        for (int i = 0; i < r->nhv; i++)
            in |= strcmp(r->hvals[i], q->hv[k]) == 0;
        if (in)
            seen = 1;
        else if (r->action != POLICY_DENY)
            return 0;
    }
    return seen;
}

enum { NRULES = 200, NREQ = 3000, NBUNDLES = 12 };

/* One random bundle (seed) against NREQ random requests; adds each outcome
 * to seen[verdict] ([3] = default). */
static void equivalence_run(int seed, int seen[4])
{
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    static const char *const hosts[] = {"",         "h1.test",      "h1.test:8080", "H2.TEST",
                                        "a.w.test", "a.b.w.test:1", "w.test",       "[::1]:80",
                                        "h2.test."};
    static const char *const vals[] = {"1", "2", "3"};
    struct rrule *rules = calloc(NRULES, sizeof(*rules));
    size_t cap = 512 * NRULES, n;
    char *js = malloc(cap);
    int def = seed % 2 ? POLICY_ALLOW : POLICY_DENY;
    struct policy_engine *e;

    srand(1000u + (unsigned)seed);
    n = (size_t)snprintf(js, cap, "{\"revision\":%d,\"default\":\"%s\",\"rules\":[", seed,
                         def == POLICY_ALLOW ? "allow" : "deny");
    for (int i = 0; i < NRULES; i++) {
        rand_rule(&rules[i]);
        n += rule_json(&rules[i], i, js + n, cap - n);
    }
    snprintf(js + n, cap - n, "]}");
    e = engine_from(js);
    for (int k = 0; k < NREQ; k++) {
        struct rreq q;
        struct policy_header hdrs[2];
        struct policy_request pr;
        struct policy_decision d;
        int best[3] = {-1, -1, -1}, want = def, win = -1;
        char wid[16];

        rand_peer(q.peer, sizeof(q.peer), 1);
        rand_path(q.path, sizeof(q.path), 0);
        q.method = pick(methods, 4);
        q.host = pick(hosts, N_ELEMS(hosts));
        q.nh = rand() % 3;
        for (int h = 0; h < q.nh; h++) {
            q.hv[h] = pick(vals, 3);
            hdrs[h] = (struct policy_header){"x-t", 3, q.hv[h], 1};
        }
        for (int i = NRULES - 1; i >= 0; i--)
            if (ref_rule(&rules[i], &q))
                best[rules[i].action] = i;
        if (best[POLICY_DENY] >= 0)
            win = best[POLICY_DENY];
        else if (best[POLICY_DISPATCH] >= 0)
            win = best[POLICY_DISPATCH];
        else if (best[POLICY_ALLOW] >= 0)
            win = best[POLICY_ALLOW];
        if (win >= 0)
            want = rules[win].action;
        snprintf(wid, sizeof(wid), win >= 0 ? "r%d" : "default", win);

        pr = (struct policy_request){q.peer, strlen(q.peer), q.method, strlen(q.method),
                                     q.host, strlen(q.host), q.path, strlen(q.path), hdrs,
                                     (size_t)q.nh};
        ck_assert_int_eq(policy_eval(e, &pr, &d), (enum policy_verdict)want);
        seen[win >= 0 ? want : 3]++;
        ck_assert_msg(strcmp(d.rule_id, wid) == 0, "bundle %d req %d (%s %s %s %s): got %s want %s",
                      seed, k, q.peer, q.method, q.host, q.path, d.rule_id, wid);
    }
    policy_engine_free(e);
    free(js);
    free(rules);
}

START_TEST(test_eval_index_equivalence)
{
    int seen[4] = {0, 0, 0, 0};
    rr_subtree = _i;
    for (int seed = 0; seed < NBUNDLES; seed++)
        equivalence_run(seed, seen);
    rr_subtree = 1;
    /* the random space must exercise every outcome, or agreement means little */
    for (int v = 0; v < 4; v++)
        ck_assert_msg(seen[v] > NBUNDLES * NREQ / 50, "outcome %d seen %d times (%d %d %d %d)", v,
                      seen[v], seen[0], seen[1], seen[2], seen[3]);
}
END_TEST

TCase *tcase_envelope(void); /* policy_envelope.c */
TCase *tcase_fetch(void);

static Suite *policy_suite(void)
{
    Suite *s = suite_create("policy");
    TCase *tc;

    tc = tcase_create("path");
    tcase_add_loop_test(tc, test_path_table, 0, N_ELEMS(paths));
    tcase_add_loop_test(tc, test_path_idempotent, 0, N_ELEMS(paths));
    tcase_add_test(tc, test_path_buffer);
    tcase_add_test(tc, test_path_names);
    tcase_add_test(tc, test_path_fuzz_invariants);
    suite_add_tcase(s, tc);

    tc = tcase_create("bundle");
    tcase_add_loop_test(tc, test_bundle_errors, 0, N_ELEMS(bad_bundles));
    tcase_add_loop_test(tc, test_bundle_good, 0, N_ELEMS(good_bundles));
    tcase_add_test(tc, test_bundle_accessors);
    tcase_add_test(tc, test_bundle_limits);
    tcase_add_test(tc, test_bundle_token_budget);
    tcase_add_loop_test(tc, test_bundle_wide, 0, N_ELEMS(wide));
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("eval");
    tcase_add_loop_test(tc, test_eval_table, 0, N_ELEMS(matches));
    tcase_add_test(tc, test_eval_modes);
    tcase_add_test(tc, test_eval_first_in_order);
    /* 1: bundles with subtree rules; 0: exact IDs, "*" and no "from" only */
    tcase_add_loop_test(tc, test_eval_index_equivalence, 0, 2);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tcase_envelope());
    suite_add_tcase(s, tcase_fetch());
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(policy_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
