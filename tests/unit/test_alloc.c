/*
 * test_alloc.c - the unit_alloc suite: every allocation the parsers and
 * builders make is failed in turn (failmalloc.c), and each time the call
 * must fail cleanly: an error code and message, no crash, no leak (ASan's
 * leak checker runs when each forked test exits), nothing half-built
 * handed back. The inputs use every section of their format, so most
 * allocation sites are reached.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certs.h"
#include "config.h"
#include "enforce.h"
#include "failmalloc.h"
#include "policy.h"
#include "px.h"
#include "snapshot.h"
#include "wlapi.h"
#include "upstream.h"

#include <event2/buffer.h>
#include <event2/event.h>

/* Bodies must not call ck_assert while injection is armed (Check itself
 * allocates, and is linked statically): they note a broken invariant here
 * and each_failure() reports it once injection is off. */
static const char *violation;
#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond) && violation == NULL)                                                          \
            violation = #cond;                                                                     \
    } while (0)

/* Runs `body` with allocation n failing, for n = 1, 2, ... until a run in
 * which no allocation failed (which must then succeed). `body` returns 0
 * on success and cleans up after itself either way. Returns the number of
 * allocations the successful run made. */
static long each_failure(int (*body)(void *), void *arg, const char *what)
{
    for (long n = 1; n < 100000; n++) {
        int rc, failed;
        violation = NULL;
        fm_fail_at(n);
        rc = body(arg);
        failed = fm_failed();
        fm_fail_at(0);
        ck_assert_msg(violation == NULL, "%s: allocation %ld failing: %s", what, n,
                      violation ? violation : "");
        if (!failed) {
            ck_assert_msg(rc == 0, "%s: fails with no allocation failure", what);
            fprintf(stderr, "%s: %ld allocations, each failed in turn\n", what, n - 1);
            return n - 1;
        }
        ck_assert_msg(rc != 0, "%s: allocation %ld failed but the call reported success", what,
                      n);
    }
    ck_abort_msg("%s: never finished", what);
    return 0;
}

/* ---- certs --------------------------------------------------------------- */

static const char json_doc[] =
    "{\"a\": [1, 2, {\"b\": \"c\\u00e9\"}], \"d\": {\"e\": true, \"f\": null}, \"g\": -1.5e3}";

static int body_json(void *arg)
{
    struct certs_json j = {0};
    char err[256] = "";
    int rc;
    (void)arg;
    rc = certs_json_parse(&j, json_doc, sizeof(json_doc) - 1, 256, err, sizeof(err));
    if (rc != 0)
        EXPECT(err[0] != '\0');
    certs_json_clear(&j);
    return rc;
}

START_TEST(alloc_json)
{
    ck_assert_int_gt(each_failure(body_json, NULL, "certs_json_parse"), 0);
}
END_TEST

/* An object over the key check's stack size (32 keys): its key list, table
 * and sort scratch are allocated, and each is failed in turn. */
static int body_json_keys(void *arg)
{
    char doc[1024], err[256] = "";
    struct certs_json j = {0};
    size_t o = 0;
    int rc;
    (void)arg;
    doc[o++] = '{';
    for (int i = 0; i < 40; i++)
        o += (size_t)snprintf(doc + o, sizeof(doc) - o, "%s\"k\\u00%02x\":%d", i ? "," : "",
                              0x30 + i, i);
    doc[o++] = '}';
    rc = certs_json_parse(&j, doc, o, 256, err, sizeof(err));
    if (rc == 0) {
        struct certs_json_keystats st = {0};
        rc = certs_json_check_keys_stats(&j, 0, CERTS_JSON_KEYS_SORT, &st, err, sizeof(err));
        EXPECT(rc == 0 || rc == CERTS_JSON_NOMEM);
    }
    if (rc != 0)
        EXPECT(err[0] != '\0');
    certs_json_clear(&j);
    return rc;
}

START_TEST(alloc_json_keys)
{
    ck_assert_int_gt(each_failure(body_json_keys, NULL, "certs_json_check_keys"), 0);
}
END_TEST

struct pem {
    char *data;
    size_t len;
};

static int body_trust(void *arg)
{
    struct pem *p = arg;
    struct certs_trust *t = NULL;
    char err[256] = "";
    int rc = certs_trust_new(&t);
    if (rc != 0)
        return rc;
    rc = certs_trust_add(t, "example.org", 11, p->data, p->len, err, sizeof(err));
    if (rc != 0)
        EXPECT(err[0] != '\0');
    certs_trust_unref(t);
    return rc;
}

START_TEST(alloc_trust)
{
    char dir[] = "/tmp/picket-alloc-XXXXXX", ca[64], path[96], err[256];
    struct pem p = {NULL, 0};
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(ca, sizeof(ca), "%s/ca", dir);
    ck_assert_int_eq(certs_devca_init(ca, "example.org", 3600, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/ca.pem", ca);
    ck_assert_int_eq(certs_read_file(path, CERTS_MAX_FILE, &p.data, &p.len, err, sizeof(err)), 0);
    ck_assert_int_gt(each_failure(body_trust, &p, "certs_trust_add"), 0);
    free(p.data);
    unlink(path);
    snprintf(path, sizeof(path), "%s/ca.key", ca);
    unlink(path);
    rmdir(ca);
    rmdir(dir);
}
END_TEST

/* ---- policy -------------------------------------------------------------- */

static const char bundle_doc[] =
    "{\"revision\": 3, \"expires_at\": \"2099-01-01T00:00:00Z\", \"mode\": \"enforce\","
    " \"default\": \"deny\", \"rules\": ["
    "{\"id\": \"reads\", \"action\": \"allow\","
    " \"from\": [\"spiffe://example.org/ns/shop/sa/frontend\", \"spiffe://example.org/ns/ops/*\"],"
    " \"hosts\": [\"orders.shop.svc\", \"*.example.org\"], \"methods\": [\"GET\", \"HEAD\"],"
    " \"paths\": [\"/orders\", \"/orders/**\", \"/users/*/orders\"],"
    " \"headers\": {\"x-tenant\": [\"acme\", \"globex\"]}},"
    "{\"id\": \"no-admin\", \"action\": \"deny\", \"paths\": [\"/admin/**\"]},"
    "{\"id\": \"any\", \"action\": \"allow\", \"from\": [\"*\"], \"paths\": [\"/public/**\"]},"
    "{\"id\": \"pay\", \"action\": \"dispatch\", \"dispatch\": \"authz\","
    " \"paths\": [\"/payments/**\"]}]}";

static int body_bundle(void *arg)
{
    struct policy_bundle *b = NULL;
    struct policy_engine *e = NULL;
    char err[256] = "";
    int rc;
    (void)arg;
    rc = policy_bundle_parse(&b, bundle_doc, sizeof(bundle_doc) - 1, err, sizeof(err));
    if (rc == 0) {
        rc = policy_engine_new(&e, b, err, sizeof(err));
        policy_bundle_free(b);
        if (rc == 0)
            policy_engine_free(e);
        else
            EXPECT(e == NULL);
    } else {
        EXPECT(b == NULL);
    }
    if (rc != 0)
        EXPECT(err[0] != '\0');
    return rc;
}

START_TEST(alloc_bundle)
{
    ck_assert_int_gt(each_failure(body_bundle, NULL, "policy_bundle_parse+engine"), 0);
}
END_TEST

/* A headers map over the key check's stack size: its allocations too. */
static int body_bundle_headers(void *arg)
{
    struct policy_bundle *b = NULL;
    char doc[2048], err[256] = "";
    size_t o = 0;
    int rc;
    (void)arg;
    o += (size_t)snprintf(doc, sizeof(doc),
                          "{\"revision\":1,\"rules\":[{\"id\":\"h\",\"action\":\"allow\",\"headers\":{");
    for (int i = 0; i < 40; i++)
        o += (size_t)snprintf(doc + o, sizeof(doc) - o, "%s\"x-%d\":[\"v\"]", i ? "," : "", i);
    o += (size_t)snprintf(doc + o, sizeof(doc) - o, "}}]}");
    rc = policy_bundle_parse(&b, doc, o, err, sizeof(err));
    if (rc != 0)
        /* the token array is certs_json_parse's: reported as JSON "out of memory" */
        EXPECT(b == NULL && err[0] != '\0' && (rc == POLICY_ERR_NOMEM || rc == POLICY_ERR_JSON));
    policy_bundle_free(b);
    return rc;
}

START_TEST(alloc_bundle_headers)
{
    ck_assert_int_gt(each_failure(body_bundle_headers, NULL, "policy_bundle_parse (40 headers)"),
                     0);
}
END_TEST

/* ---- proxy --------------------------------------------------------------- */

static const char config_doc[] =
    "{\"node_id\": \"n1/picket\", \"workers\": 2,"
    " \"identity\": {\"cert\": \"svid.pem\", \"key\": \"svid.key\","
    "   \"trust_bundles\": {\"example.org\": \"bundle.pem\", \"partner.example\": \"p.jwks\"},"
    "   \"max_svid_lifetime\": \"24h\", \"reload_interval\": \"5s\"},"
    " \"policy\": {\"url\": \"https://cp.example.org:8443/bundle\","
    "   \"server_id\": \"spiffe://example.org/control\","
    "   \"signing_keys\": {\"k1\": \"k1.pub\", \"k2\": \"k2.pub\"}, \"cache_dir\": \"cache\","
    "   \"max_staleness\": \"5m\", \"on_stale\": \"deny\"},"
    " \"dispatch\": {\"authz\": {\"url\": \"https://authz:9443/check\","
    "   \"server_id\": \"spiffe://example.org/authz\", \"timeout\": \"200ms\","
    "   \"cache_entries\": 100, \"max_cache_ttl\": \"1m\", \"on_error\": \"deny\","
    "   \"headers\": [\"x-user\", \"Authorization\"]}},"
    " \"listeners\": ["
    "  {\"name\": \"in\", \"kind\": \"inbound\", \"bind\": \"0.0.0.0:15443\","
    "   \"upstream\": \"h2c://127.0.0.1:8080\","
    "   \"routes\": [{\"authority\": \"a.example.org\", \"path_prefix\": \"/v2/\","
    "                \"upstream\": \"http://127.0.0.1:8081\"}]},"
    "  {\"name\": \"out\", \"kind\": \"outbound\", \"bind\": \"127.0.0.1:15001\","
    "   \"routes\": [{\"authority\": \"orders.shop.svc\", \"upstream\": \"10.0.0.1:15443\","
    "                \"server_id\": \"spiffe://example.org/ns/shop/sa/orders\"}]}],"
    " \"admin\": {\"bind\": \"127.0.0.1:15000\"},"
    " \"metrics\": {\"bind\": \"0.0.0.0:15090\"},"
    " \"probes\": {\"timeout\": \"2s\", \"targets\": {"
    "   \"app/livez\": {\"http\": \"https://127.0.0.1:8443/healthz\", \"headers\": {\"Host\": \"a\"}},"
    "   \"app/readyz\": {\"grpc\": \"127.0.0.1:9090\", \"service\": \"s\"},"
    "   \"db\": {\"tcp\": \"127.0.0.1:5432\", \"timeout\": \"3s\"}}},"
    " \"log\": {\"level\": \"info\", \"access\": \"access.jsonl\", \"audit\": \"-\"},"
    " \"limits\": {\"max_connections\": 100, \"drain_timeout\": \"20s\","
    "   \"drain_notice_delay\": \"5s\"}}";

static int body_config(void *arg)
{
    struct px_config *cfg = NULL;
    char err[512] = "";
    int rc;
    (void)arg;
    rc = px_config_parse(&cfg, "alloc.json", "/etc/picket", config_doc, sizeof(config_doc) - 1,
                         err, sizeof(err));
    if (rc != 0) {
        EXPECT(cfg == NULL);
        EXPECT(strncmp(err, "alloc.json", 10) == 0);
    }
    px_config_free(cfg);
    return rc;
}

START_TEST(alloc_config)
{
    ck_assert_int_gt(each_failure(body_config, NULL, "px_config_parse"), 10);
}
END_TEST

static int body_policy_state(void *arg)
{
    struct px_policy_state *p = NULL;
    char err[256] = "";
    int rc;
    (void)arg;
    rc = px_policy_state_from_json(&p, bundle_doc, sizeof(bundle_doc) - 1, "file:x", err,
                                   sizeof(err));
    if (rc == 0)
        px_policy_state_unref(p);
    else
        EXPECT(p == NULL);
    return rc;
}

START_TEST(alloc_policy_state)
{
    ck_assert_int_gt(each_failure(body_policy_state, NULL, "px_policy_state_from_json"), 0);
}
END_TEST

static int body_hdrs(void *arg)
{
    struct px_hdrs h = {0};
    char name[32], value[600];
    int rc = 0;
    (void)arg;
    memset(value, 'v', sizeof(value));
    for (int i = 0; i < 60 && rc == 0; i++) {
        int n = snprintf(name, sizeof(name), "X-Header-%d", i);
        rc = px_hdrs_add(&h, name, (size_t)n, value, (size_t)(i * 10), 0);
    }
    if (rc == 0) {
        EXPECT(h.n == 60);
        EXPECT(px_hdrs_get(&h, "x-header-59") != NULL);
    }
    px_hdrs_clear(&h);
    return rc;
}

START_TEST(alloc_hdrs)
{
    ck_assert_int_gt(each_failure(body_hdrs, NULL, "px_hdrs_add"), 1);
}
END_TEST

/* ---- output written piece by piece (out.h) ----------------------------- */

/* libevent's own allocations go through these, so they fail in turn too
 * (failmalloc wraps malloc & co. in the objects linked here). */
static void *ev_malloc(size_t n)
{
    return malloc(n);
}

static void *ev_realloc(void *p, size_t n)
{
    return realloc(p, n);
}

static void ev_free(void *p)
{
    free(p);
}

static const char head_want[] = "POST /orders/1?x=1 HTTP/1.1\r\nHost: shop.example\r\n";

/* The HTTP/1.1 head of a canonical request with many fields, written into
 * a buffer that already holds bytes: either the whole head follows them,
 * or the call says it failed (-2: the caller closes the connection, so the
 * part written is never followed by anything); never 0 with a head
 * missing a piece. */
static int body_h1_head(void *arg)
{
    struct evbuffer *out;
    struct px_request rq;
    struct px_hdrs extra = {0};
    char name[32], value[600];
    int rc = -1;
    (void)arg;

    px_request_init(&rq);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "x-field-%d", i);
        memset(value, 'a' + i % 26, sizeof(value) - 1);
        value[sizeof(value) - 1] = '\0';
        if (px_hdrs_add(&extra, name, strlen(name), value, strlen(value), 0) != 0)
            goto done;
    }
    if (px_request_set_internal(&rq, "POST", "shop.example", "/orders/1?x=1", &extra) != 0)
        goto done;
    out = evbuffer_new();
    if (out == NULL)
        goto done;
    if (evbuffer_add(out, "prefix", 6) == 0) {
        rc = px_h1_write_request_head(out, &rq, 0, 5);
        if (rc == 0) {
            static char p[64 * 1024]; /* copied out: no allocation while injection is armed */
            size_t n = evbuffer_get_length(out);
            EXPECT(n < sizeof(p) && evbuffer_copyout(out, p, n) == (ev_ssize_t)n);
            EXPECT(n > 6 + sizeof(head_want));
            EXPECT(memcmp(p + 6, head_want, sizeof(head_want) - 1) == 0);
            EXPECT(memcmp(p + n - 21, "Content-Length: 5\r\n\r\n", 21) == 0);
            EXPECT(memmem(p, n, "x-field-39: ", 12) != NULL);
        } else {
            EXPECT(rc == -2);
        }
    }
    evbuffer_free(out);
done:
    px_hdrs_clear(&extra);
    px_request_clear(&rq);
    return rc;
}

START_TEST(alloc_h1_head)
{
    event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
    ck_assert_int_gt(each_failure(body_h1_head, NULL, "px_h1_write_request_head"), 2);
}
END_TEST

/* ---- Workload API messages ---------------------------------------------- */

/* A message with an SVID and a federated bundle (the fuzz seed, valid
 * 2025-2035), decoded, chosen and built at 2030-01-01: every allocation of
 * our decoding budget and of the identity build fails in turn. */
struct wl_in {
    char *data;
    size_t len;
};

static int body_wlapi(void *arg)
{
    const struct wl_in *in = arg;
    struct px_wlapi_msg *m = NULL;
    struct px_wlapi_identity id = {NULL, NULL};
    char err[600] = "";
    int rc;
    rc = px_wlapi_msg_decode(&m, (const uint8_t *)in->data, in->len, err, sizeof(err));
    if (rc != 0) {
        EXPECT(m == NULL && err[0] != '\0');
        return rc;
    }
    rc = px_wlapi_msg_select(m, NULL, err, sizeof(err));
    EXPECT(rc == 0);
    rc = px_wlapi_identity_build(&id, m, 0, 1893456000, err, sizeof(err));
    if (rc == 0) {
        EXPECT(certs_trust_count(id.trust) == 2);
        px_wlapi_identity_clear(&id);
    } else {
        EXPECT(id.keypair == NULL && id.trust == NULL && err[0] != '\0');
    }
    px_wlapi_msg_free(m);
    return rc;
}

START_TEST(alloc_wlapi)
{
    struct wl_in in = {NULL, 0};
    char err[256];
    ck_assert_int_eq(certs_read_file("../fuzz/corpus/wlapi/federated", CERTS_MAX_FILE, &in.data,
                                     &in.len, err, sizeof(err)),
                     0);
    ck_assert_int_gt(each_failure(body_wlapi, &in, "px_wlapi_msg_decode+identity_build"), 5);
    free(in.data);
}
END_TEST

static Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");
    TCase *tc = tcase_create("each_allocation_fails");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, alloc_json);
    tcase_add_test(tc, alloc_json_keys);
    tcase_add_test(tc, alloc_trust);
    tcase_add_test(tc, alloc_bundle);
    tcase_add_test(tc, alloc_bundle_headers);
    tcase_add_test(tc, alloc_config);
    tcase_add_test(tc, alloc_policy_state);
    tcase_add_test(tc, alloc_hdrs);
    tcase_add_test(tc, alloc_h1_head);
    tcase_add_test(tc, alloc_wlapi);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(alloc_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
