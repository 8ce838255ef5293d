/*
 * proxy_probes.c - TCase "probes" of the proxy suite: the probes and
 * metrics config (proxy/base/config.c: probes.*, metrics.bind,
 * PICKET_APP_PROBES, the bind overrides) and the probes' wire helpers
 * (proxy/server/probes.c: the HTTP status line, the gRPC health request and
 * answer). The listener itself runs against real apps in
 * tests/integration/test_probes.py.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "probes.h"

TCase *tcase_probes(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define ID                                                                                         \
    "\"identity\":{\"cert\":\"c.pem\",\"key\":\"k.pem\",\"trust_bundles\":{\"example.org\":\"b."   \
    "pem\"}}"
#define L0                                                                                         \
    "{\"name\":\"in\",\"kind\":\"inbound\",\"bind\":\"0.0.0.0:15443\",\"upstream\":\"h2c://"       \
    "127.0.0.1:8080\"}"
/* A valid config with `x` on line 2. */
#define WITH(x) "{" ID ",\"listeners\":[" L0 "],\n" x "}"
#define T(x) WITH("\"probes\":{\"targets\":{" x "}}")

static struct px_config *parse_ok(const char *json)
{
    struct px_config *c = NULL;
    char err[512];
    int rc = px_config_parse(&c, "t.json", NULL, json, strlen(json), err, sizeof(err));
    ck_assert_msg(rc == 0, "%s: %s", json, err);
    return c;
}

static const struct {
    const char *json, *msg; /* message fragment, after "t.json:" */
} bad[] = {
    {WITH("\"probes\":{\"bnd\":\"0.0.0.0:1\"}"), "2:11: probes: unknown key \"bnd\""},
    {WITH("\"probes\":{\"bind\":\"0.0.0.0\"}"), "probes.bind: expected \"host:port\""},
    {WITH("\"probes\":{\"timeout\":\"5ms\"}"), "probes.timeout: must be between"},
    {WITH("\"probes\":{\"targets\":[]}"), "probes.targets: expected an object"},
    {T("\"a\":{}"), "probes.targets.a: expected exactly one of \"http\", \"tcp\", \"grpc\""},
    {T("\"a\":{\"tcp\":\"x:1\",\"http\":\"http://x/\"}"), "expected exactly one of"},
    {T("\"a\":{\"htp\":\"x\"}"), "unknown key \"htp\""},
    {T("\"a\":\"http://x/\""), "probes.targets.a: expected an object"},
    {T("\"a/../b\":{\"tcp\":\"x:1\"}"), "probes.targets: bad name \"a/../b\""},
    {T("\"a//b\":{\"tcp\":\"x:1\"}"), "bad name"},
    {T("\"/a\":{\"tcp\":\"x:1\"}"), "bad name"},
    {T("\"a/\":{\"tcp\":\"x:1\"}"), "bad name"},
    {T("\"a/.\":{\"tcp\":\"x:1\"}"), "bad name"},
    {T("\"a%2fb\":{\"tcp\":\"x:1\"}"), "bad name"},
    {T("\"a?b\":{\"tcp\":\"x:1\"}"), "bad name"},
    {T("\"a\":{\"tcp\":\"x:1\"},\"a\":{\"tcp\":\"x:2\"}"), "duplicate key \"a\""},
    {T("\"a\":{\"tcp\":\"x\"}"), "probes.targets.a.tcp: expected \"host:port\""},
    {T("\"a\":{\"grpc\":\"x:0\"}"), "probes.targets.a.grpc: expected \"host:port\""},
    {T("\"a\":{\"http\":\"ftp://x/\"}"),
     "probes.targets.a.http: expected \"http://host:port/path\""},
    {T("\"a\":{\"http\":\"http://x:99999/\"}"), "bad host or port"},
    {T("\"a\":{\"http\":\"http://us@x/\"}"), "bad host or port"},
    {T("\"a\":{\"http\":\"http://x/a b\"}"), "visible ASCII without '#'"},
    {T("\"a\":{\"http\":\"http://x/a#b\"}"), "visible ASCII without '#'"},
    {T("\"a\":{\"http\":\"http://x/a\\r\\nX: y\"}"), "visible ASCII"},
    {T("\"a\":{\"tcp\":\"x:1\",\"service\":\"s\"}"), "probes.targets.a.service: only for \"grpc\""},
    {T("\"a\":{\"grpc\":\"x:1\",\"headers\":{\"a\":\"b\"}}"), "headers: only for \"http\""},
    {T("\"a\":{\"http\":\"http://x/\",\"headers\":{\"Content-Length\":\"5\"}}"),
     "content-length is picket's to write"},
    {T("\"a\":{\"http\":\"http://x/\",\"headers\":{\"a b\":\"c\"}}"), "is not a field name"},
    {T("\"a\":{\"http\":\"http://x/\",\"headers\":{\"x\":\"a\\r\\nb: c\"}}"), "control character"},
    {T("\"a\":{\"http\":\"http://x/\",\"headers\":{\"x\":\" a\"}}"), "no leading or trailing"},
    {T("\"a\":{\"http\":\"http://x/\",\"timeout\":\"1h\"}"), "probes.targets.a.timeout: must be"},
    {WITH("\"metrics\":{}"), "metrics: missing required key \"bind\""},
    {WITH("\"metrics\":{\"bind\":\"x\"}"), "metrics.bind: expected \"host:port\""},
    {WITH("\"metrics\":{\"bind\":\"0.0.0.0:15443\"}"),
     "metrics.bind (0.0.0.0:15443) takes the port of listener in (0.0.0.0:15443)"},
    {WITH("\"admin\":{\"bind\":\"127.0.0.1:9\"},\"metrics\":{\"bind\":\"0.0.0.0:9\"}"),
     "admin.bind (127.0.0.1:9) takes the port of metrics.bind"},
    {WITH("\"admin\":{\"bind\":\"127.0.0.1:15021\"},\"probes\":{\"targets\":{\"a\":{\"tcp\":"
          "\"x:1\"}}}"),
     "admin.bind (127.0.0.1:15021) takes the port of probes.bind (0.0.0.0:15021)"},
};

START_TEST(test_probes_config_bad)
{
    struct px_config *c = NULL;
    char err[512];
    int rc =
        px_config_parse(&c, "t.json", NULL, bad[_i].json, strlen(bad[_i].json), err, sizeof(err));
    ck_assert_msg(rc != 0, "accepted: %s", bad[_i].json);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, bad[_i].msg) != NULL, "got \"%s\", want \"%s\"", err, bad[_i].msg);
}
END_TEST

START_TEST(test_probes_config_good)
{
    struct px_config *c =
        parse_ok(T("\"app/livez\":{\"http\":\"http://127.0.0.1:8080/healthz?full=1\"},"
                   "\"app/readyz\":{\"http\":\"https://[::1]/ready\",\"timeout\":\"3s\","
                   "\"headers\":{\"Host\":\"app.example\",\"x-probe\":\"1\"}},"
                   "\"bare\":{\"http\":\"http://localhost:81\"},"
                   "\"query\":{\"http\":\"http://localhost?x\"},"
                   "\"db\":{\"tcp\":\"127.0.0.1:5432\"},"
                   "\"g\":{\"grpc\":\"[::1]:9090\",\"service\":\"orders.v1\"},"
                   "\"g2\":{\"grpc\":\"127.0.0.1:9090\"}"));
    const struct px_probe_target *t = c->probes.targets;
    const char *h, *p;

    ck_assert_uint_eq(c->probes.ntargets, 7);
    ck_assert_int_eq(c->probes.timeout_ms, 1000);
    ck_assert_str_eq(t[0].name, "app/livez");
    ck_assert_int_eq(t[0].kind, PX_PROBE_HTTP);
    ck_assert_int_eq(t[0].tls, 0);
    ck_assert_str_eq(t[0].up.host, "127.0.0.1");
    ck_assert_str_eq(t[0].up.port, "8080");
    ck_assert_str_eq(t[0].authority, "127.0.0.1:8080");
    ck_assert_str_eq(t[0].path, "/healthz?full=1");
    ck_assert_int_eq(t[0].timeout_ms, 0);
    ck_assert_int_eq(t[1].tls, 1);
    ck_assert_str_eq(t[1].up.host, "::1");
    ck_assert_str_eq(t[1].up.port, "443");
    ck_assert_str_eq(t[1].authority, "[::1]");
    ck_assert_int_eq(t[1].timeout_ms, 3000);
    ck_assert_uint_eq(t[1].nhdrs, 2);
    ck_assert_str_eq(t[1].hdr_names[0], "Host");
    ck_assert_str_eq(t[1].hdr_values[0], "app.example");
    ck_assert_str_eq(t[2].up.port, "81");
    ck_assert_str_eq(t[2].path, "/");
    ck_assert_str_eq(t[3].path, "/?x");
    ck_assert_str_eq(t[3].up.port, "80");
    ck_assert_int_eq(t[4].kind, PX_PROBE_TCP);
    ck_assert_str_eq(t[4].up.url, "tcp://127.0.0.1:5432");
    ck_assert_int_eq(t[5].kind, PX_PROBE_GRPC);
    ck_assert_int_eq(t[5].up.proto, PX_UP_H2C);
    ck_assert_str_eq(t[5].up.host, "::1");
    ck_assert_str_eq(t[5].service, "orders.v1");
    ck_assert_str_eq(t[6].service, "");
    /* the default bind comes with the first target */
    ck_assert_int_eq(px_config_probes_bind(c, &h, &p), 1);
    ck_assert_str_eq(h, "0.0.0.0");
    ck_assert_str_eq(p, "15021");
    ck_assert_ptr_null(c->metrics.bind_host);
    px_config_free(c);

    c = parse_ok(WITH("\"probes\":{\"bind\":\"127.0.0.1:9000\",\"timeout\":\"250ms\"},"
                      "\"metrics\":{\"bind\":\"0.0.0.0:15090\"}"));
    ck_assert_int_eq(px_config_probes_bind(c, &h, &p), 0); /* no target, no listener */
    ck_assert_int_eq(c->probes.timeout_ms, 250);
    ck_assert_str_eq(c->metrics.bind_host, "0.0.0.0");
    ck_assert_str_eq(c->metrics.bind_port, "15090");
    px_config_free(c);
}
END_TEST

START_TEST(test_probes_env_and_binds)
{
    struct px_config *c = parse_ok(T("\"file\":{\"tcp\":\"127.0.0.1:1\"}"));
    static const char env[] = "{\"app/livez\": {\"http\": \"http://127.0.0.1:8080/healthz\"},\n"
                              " \"app/readyz\": {\"grpc\": \"127.0.0.1:9090\", \"service\": \"\"}}";
    const char *h, *p;
    char err[512];

    ck_assert_int_eq(
        px_config_add_probe_targets(c, "PICKET_APP_PROBES", env, strlen(env), err, sizeof(err)), 0);
    ck_assert_uint_eq(c->probes.ntargets, 3);
    ck_assert_str_eq(c->probes.targets[1].name, "app/livez");
    ck_assert_str_eq(c->probes.targets[2].name, "app/readyz");
    /* a name already there, broken JSON, a bad target: refused, with where */
    ck_assert_int_ne(px_config_add_probe_targets(c, "PICKET_APP_PROBES",
                                                 "{\"file\":{\"tcp\":\"x:2\"}}", 22, err,
                                                 sizeof(err)),
                     0);
    ck_assert_msg(strstr(err, "PICKET_APP_PROBES:1:2: probes.targets: \"file\" is defined twice") !=
                      NULL,
                  "%s", err);
    ck_assert_int_ne(
        px_config_add_probe_targets(c, "PICKET_APP_PROBES", "{\"x\":", 5, err, sizeof(err)), 0);
    ck_assert_msg(strncmp(err, "PICKET_APP_PROBES:1:", 20) == 0, "%s", err);
    ck_assert_int_ne(px_config_add_probe_targets(c, "E", "[1]", 3, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "expected an object") != NULL, "%s", err);
    ck_assert_int_ne(
        px_config_add_probe_targets(c, "E", "{\"y\":{\"tcp\":\"nope\"}}", 20, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "E:1:13: probes.targets.y.tcp: expected \"host:port\"") != NULL, "%s",
                  err);

    /* --probes-bind / --metrics-bind */
    ck_assert_int_eq(px_config_set_bind(c, "probes", "127.0.0.1:15021", err, sizeof(err)), 0);
    ck_assert_int_eq(px_config_probes_bind(c, &h, &p), 1);
    ck_assert_str_eq(h, "127.0.0.1");
    ck_assert_int_eq(px_config_set_bind(c, "metrics", "[::]:15090", err, sizeof(err)), 0);
    ck_assert_str_eq(c->metrics.bind_host, "::");
    ck_assert_int_ne(px_config_set_bind(c, "metrics", "0.0.0.0:15443", err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "takes the port of listener in") != NULL, "%s", err);
    ck_assert_str_eq(c->metrics.bind_host, "::"); /* unchanged */
    ck_assert_int_ne(px_config_set_bind(c, "metrics", "15090", err, sizeof(err)), 0);
    ck_assert_int_ne(px_config_set_bind(c, "admin", "127.0.0.1:1", err, sizeof(err)), 0);
    px_config_free(c);
}
END_TEST

static const struct {
    const char *in;
    int rc, status;
} http_status[] = {
    {"HTTP/1.1 200 OK\r\n", 1, 200},
    {"HTTP/1.0 503 Service Unavailable\r\n\r\n", 1, 503},
    {"HTTP/1.1 302\r\n", 1, 302},
    {"HTTP/1.1 204\n", 1, 204},
    {"HTTP/1.1 200 OK", 0, 0},
    {"HTTP/1.1 2", 0, 0},
    {"HTT", 0, 0},
    {"", 0, 0},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n", 1, 404},
    {"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n", 1, 200},
    {"HTTP/1.1 100 Continue\r\n\r\n", 0, 0},
    {"HTTP/1.1 100 Continue\r\nX: y\r\n", 0, 0},
    {"HTTP/1.1 100 Continue\r\n\r\nGARBAGE/1.1 200\r\n", -1, 0},
    {"HTTP/2 200\r\n", -1, 0},
    {"HTTP/1.1 600 Nope\r\n", -1, 0},
    {"HTTP/1.1 099 x\r\n", -1, 0},
    {"HTTP/1.1 2000\r\n", -1, 0},
    {"SSH-2.0-OpenSSH\r\n", -1, 0},
    {"http/1.1 200 OK\r\n", -1, 0},
};

START_TEST(test_probes_http_status)
{
    int st = 0;
    int rc = px_probe_http_status(http_status[_i].in, strlen(http_status[_i].in), &st);
    ck_assert_msg(rc == http_status[_i].rc, "%s: rc %d", http_status[_i].in, rc);
    if (rc == 1)
        ck_assert_int_eq(st, http_status[_i].status);
}
END_TEST

START_TEST(test_probes_grpc_wire)
{
    unsigned char b[600], big[300];
    char svc[300];
    size_t n;

    /* the whole server: an empty message */
    n = px_probe_grpc_request("", b, sizeof(b));
    ck_assert_uint_eq(n, 5);
    ck_assert_int_eq(memcmp(b, "\0\0\0\0\0", 5), 0);
    n = px_probe_grpc_request("orders.v1", b, sizeof(b));
    ck_assert_uint_eq(n, 5 + 2 + 9);
    ck_assert_int_eq(memcmp(b, "\0\0\0\0\x0b\x0a\x09orders.v1", n), 0);
    /* a two-byte length */
    memset(svc, 's', 200);
    svc[200] = '\0';
    n = px_probe_grpc_request(svc, b, sizeof(b));
    ck_assert_uint_eq(n, 5 + 3 + 200);
    ck_assert_int_eq(b[4], 203);
    ck_assert_int_eq(b[5], 0x0a);
    ck_assert_int_eq(b[6], 0xc8);
    ck_assert_int_eq(b[7], 0x01);
    ck_assert_uint_eq(px_probe_grpc_request(svc, b, 100), 0);

    /* HealthCheckResponse { ServingStatus status = 1; } */
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x02\x08\x01", 7), 1);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x02\x08\x02", 7), 2);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x00", 5), 0);
    /* unknown fields of every wire type are skipped; the last status wins */
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x16"
                                                                 "\x08\x02\x12\x02hi\x19"
                                                                 "12345678\x25"
                                                                 "1234\x08\x01",
                                          5 + 22),
                     1);
    /* compressed, short, long, cut varint, bad wire type, field 0 */
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\1\0\0\0\x02\x08\x01", 7), -1);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x03\x08\x01", 7), -1);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x01\x08\x01", 7), -1);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x02\x08\x81", 7), -1);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x02\x0b\x01", 7), -1);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x02\x00\x01", 7), -1);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0", 3), -1);
    ck_assert_int_eq(px_probe_grpc_status((const unsigned char *)"\0\0\0\0\x03\x12\x05x", 8), -1);
    /* a length-delimited field that claims more than there is */
    memset(big, 0, sizeof(big));
    big[4] = 4;
    big[5] = 0x12;
    big[6] = 0xff;
    big[7] = 0x7f;
    big[8] = 0;
    ck_assert_int_eq(px_probe_grpc_status(big, 9), -1);
}
END_TEST

TCase *tcase_probes(void)
{
    TCase *tc = tcase_create("probes");
    tcase_add_loop_test(tc, test_probes_config_bad, 0, (int)N_ELEMS(bad));
    tcase_add_test(tc, test_probes_config_good);
    tcase_add_test(tc, test_probes_env_and_binds);
    tcase_add_loop_test(tc, test_probes_http_status, 0, (int)N_ELEMS(http_status));
    tcase_add_test(tc, test_probes_grpc_wire);
    return tc;
}
