/*
 * proxy_route.c - TCase "route" of the proxy suite: the route choice of the
 * gate (px_route_pick, proxy/gate/pipeline.c). The listeners come from a
 * config parsed by px_config_parse(), so route authorities are canonical
 * the way the config makes them. Each row names a request's canonical host
 * and match path and the route that must carry it: first match wins, an
 * authority is exact or "*.suffix" (names under the suffix only), a
 * path_prefix is a byte prefix of the match path, and without a match the
 * listener's default upstream, or none (404). Also the request deadline
 * (routes[].timeout, listeners[].timeout, grpc-timeout: px_route_pick's
 * timeout and px_request_deadline).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "gate.h"

TCase *tcase_route(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define ID                                                                                         \
    "\"identity\":{\"cert\":\"c.pem\",\"key\":\"k.pem\","                                          \
    "\"trust_bundles\":{\"example.org\":\"b.pem\"}}"

static const char routes_json[] =
    "{" ID ",\"listeners\":["
    /* 0: inbound, routes and a default upstream */
    "{\"name\":\"in\",\"kind\":\"inbound\",\"bind\":\"0.0.0.0:15443\",\"upstream\":\"h2c://def:1\","
    " \"routes\":["
    "  {\"authority\":\"api.example.org\",\"path_prefix\":\"/v2/\",\"upstream\":\"http://r0:1\"},"
    "  {\"authority\":\"api.example.org\",\"upstream\":\"http://r1:1\"},"
    "  {\"authority\":\"*.example.org\",\"path_prefix\":\"/admin\",\"upstream\":\"http://r2:1\"},"
    "  {\"authority\":\"*.example.org\",\"upstream\":\"http://r3:1\"},"
    "  {\"path_prefix\":\"/static/\",\"upstream\":\"http://r4:1\"},"
    "  {\"authority\":\"Example.ORG.\",\"path_prefix\":\"/\",\"upstream\":\"http://r5:1\"},"
    "  {\"authority\":\"*.Shop.Svc\",\"upstream\":\"http://r6:1\"},"
    "  {\"authority\":\"10.0.0.1\",\"upstream\":\"http://r7:1\"}"
    "]},"
    /* 1: inbound, routes only */
    "{\"name\":\"bare\",\"kind\":\"inbound\",\"bind\":\"0.0.0.0:15444\",\"routes\":["
    "  {\"authority\":\"only.svc\",\"upstream\":\"http://o0:1\"},"
    "  {\"path_prefix\":\"/api\",\"upstream\":\"http://o1:1\"},"
    "  {\"path_prefix\":\"/\",\"authority\":\"*.a.b\",\"upstream\":\"http://o2:1\"}"
    "]},"
    /* 2: outbound: routes by authority, never a default */
    "{\"name\":\"out\",\"kind\":\"outbound\",\"bind\":\"127.0.0.1:15001\",\"routes\":["
    "  {\"authority\":\"orders.shop.svc\",\"upstream\":\"10.0.0.1:15443\","
    "   \"server_id\":\"spiffe://example.org/orders\"},"
    "  {\"authority\":\"*.shop.svc\",\"upstream\":\"10.0.0.2:15443\","
    "   \"server_id\":\"spiffe://example.org/shop\"}"
    "]}"
    "]}";

#define DEF (-1)  /* the listener's default upstream */
#define NONE (-2) /* no route: 404 */

static const struct {
    int lst;
    const char *host;
    size_t host_len; /* 0 = strlen */
    const char *path;
    size_t path_len; /* 0 = strlen */
    int route;       /* index in the listener's routes, DEF or NONE */
} rows[] = {
    /* first match wins, in config order */
    {0, "api.example.org", 0, "/v2/x", 0, 0},
    {0, "api.example.org", 0, "/v2/", 0, 0},
    {0, "api.example.org", 0, "/v1/x", 0, 1},
    {0, "api.example.org", 0, "/admin", 0, 1}, /* route 1 comes before the /admin one */
    {0, "api.example.org", 0, "/static/a", 0, 1},
    /* path_prefix: a byte prefix, compared as it is */
    {0, "api.example.org", 0, "/v2", 0, 1},   /* shorter than "/v2/" */
    {0, "api.example.org", 0, "/V2/x", 0, 1}, /* case matters */
    {0, "www.example.org", 0, "/admin", 0, 2},
    {0, "www.example.org", 0, "/admin/users", 0, 2},
    {0, "www.example.org", 0, "/administrator", 0, 2}, /* no segment boundary (README) */
    {0, "www.example.org", 0, "/adm", 0, 3},
    {0, "www.example.org", 0, "/Admin", 0, 3},
    {0, "www.example.org", 0, "//admin", 0, 3},
    {0, "www.example.org", 0, "/admin", 5, 3}, /* only path[0..len): "/admi" */
    /* "*.example.org": names under example.org, at any depth */
    {0, "a.example.org", 0, "/", 0, 3},
    {0, "a.b.c.example.org", 0, "/x", 0, 3},
    {0, "x-1.example.org", 0, "/x", 0, 3},
    /* ... and not the bare domain, nor a name that merely ends the same */
    {0, "example.org", 0, "/", 0, 5}, /* the exact route 5, not route 3 */
    {0, "example.org", 0, "/admin", 0, 5},
    {0, "evilexample.org", 0, "/", 0, DEF},
    {0, "evilexample.org", 0, "/admin", 0, DEF},
    {0, "xexample.org", 0, "/", 0, DEF},
    {0, ".example.org", 0, "/", 0, DEF}, /* only the suffix */
    {0, "example.org.evil.net", 0, "/", 0, DEF},
    {0, "example.orgx", 0, "/", 0, DEF},
    {0, "a.example.org.", 0, "/", 0, DEF}, /* canonical hosts have no trailing dot */
    {0, "example.com", 0, "/", 0, DEF},
    {0, "org", 0, "/", 0, DEF},
    /* exact authorities are exact */
    {0, "api.example.org.x", 0, "/v2/", 0, DEF},
    {0, "api.example.orgx", 15, "/v2/", 0, 0}, /* only host[0..len) */
    {0, "example.orgx", 11, "/", 0, 5},
    {0, "example.or", 0, "/", 0, DEF},
    /* a route with no authority matches every host */
    {0, "anything", 0, "/static/x", 0, 4},
    {0, "anything", 0, "/static", 0, DEF},
    {0, "", 0, "/static/", 0, 4},
    {0, "anything", 0, "/static/x", 7, DEF}, /* "/static" */
    /* the config canonicalizes route authorities: "*.Shop.Svc" is "*.shop.svc" */
    {0, "orders.shop.svc", 0, "/", 0, 6},
    {0, "shop.svc", 0, "/", 0, DEF},
    {0, "10.0.0.1", 0, "/", 0, 7},
    {0, "10.0.0.10", 0, "/", 0, DEF},
    {0, "110.0.0.1", 0, "/", 0, DEF},
    /* an empty path matches no path_prefix */
    {0, "example.org", 0, "", 0, DEF},
    /* routes only: no match is no route */
    {1, "only.svc", 0, "/x", 0, 0},
    {1, "only.svc.evil", 0, "/x", 0, NONE},
    {1, "svc", 0, "/x", 0, NONE},
    {1, "other", 0, "/api/x", 0, 1},
    {1, "other", 0, "/apiary", 0, 1},
    {1, "other", 0, "/api", 0, 1},
    {1, "other", 0, "/ap", 0, NONE},
    {1, "other", 0, "/", 0, NONE},
    {1, "x.a.b", 0, "/", 0, 2},
    {1, "a.b", 0, "/", 0, NONE},
    {1, "x.a.b", 0, "", 0, NONE},
    /* outbound */
    {2, "orders.shop.svc", 0, "/", 0, 0},
    {2, "pay.shop.svc", 0, "/any", 0, 1},
    {2, "shop.svc", 0, "/", 0, NONE},
    {2, "evilshop.svc", 0, "/", 0, NONE},
    {2, "orders.shop.svc.evil", 0, "/", 0, NONE},
    {2, "", 0, "/", 0, NONE},
};

static struct px_config *cfg;

static void parse_config(void)
{
    char err[256] = "";
    ck_assert_msg(px_config_parse(&cfg, "routes.json", NULL, routes_json, strlen(routes_json), err,
                                  sizeof(err)) == 0,
                  "config: %s", err);
}

static void free_config(void)
{
    px_config_free(cfg);
    cfg = NULL;
}

static const char *name_of(const struct px_upstream_addr *up)
{
    if (up == NULL)
        return "no route";
    return up->url != NULL ? up->url : "an upstream not in the config";
}

START_TEST(route_table)
{
    const struct px_listener_cfg *lc = &cfg->listeners[rows[_i].lst];
    const char *host = rows[_i].host, *path = rows[_i].path;
    size_t hl = rows[_i].host_len ? rows[_i].host_len : strlen(host);
    size_t pl = rows[_i].path_len ? rows[_i].path_len : strlen(path);
    /* exact-length heap copies: a read past either is an ASan report */
    char *h = malloc(hl + 1), *p = malloc(pl + 1);
    const struct px_upstream_addr *want, *got;

    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_nonnull(p);
    memcpy(h, host, hl);
    memcpy(p, path, pl);
    h[hl] = '#'; /* not a NUL: the length is what counts */
    p[pl] = '#';
    want = rows[_i].route == DEF    ? &lc->upstream
           : rows[_i].route == NONE ? NULL
                                    : &lc->routes[rows[_i].route].upstream;
    got = px_route_pick(lc, h, hl, p, pl, NULL);
    ck_assert_msg(got == want, "listener %d, host '%.*s', path '%.*s': got %s, want %s",
                  rows[_i].lst, (int)hl, host, (int)pl, path, name_of(got), name_of(want));
    free(h);
    free(p);
}
END_TEST

START_TEST(route_config_canonical)
{
    /* the values the table relies on */
    ck_assert_uint_eq(cfg->nlisteners, 3);
    ck_assert_int_eq(cfg->listeners[0].has_upstream, 1);
    ck_assert_int_eq(cfg->listeners[1].has_upstream, 0);
    ck_assert_int_eq(cfg->listeners[2].has_upstream, 0);
    ck_assert_uint_eq(cfg->listeners[0].nroutes, 8);
    ck_assert_str_eq(cfg->listeners[0].routes[5].authority, "example.org");
    ck_assert_str_eq(cfg->listeners[0].routes[6].authority, "*.shop.svc");
    ck_assert_ptr_null(cfg->listeners[0].routes[4].authority);
    ck_assert_ptr_null(cfg->listeners[0].routes[1].path_prefix);
}
END_TEST

START_TEST(route_no_routes)
{
    /* a listener with only a default upstream sends everything there */
    static const char js[] =
        "{" ID ",\"listeners\":[{\"name\":\"in\",\"kind\":\"inbound\",\"bind\":\"0.0.0.0:1\","
        "\"upstream\":\"http://d:1\"}]}";
    struct px_config *c = NULL;
    char err[256] = "";
    ck_assert_msg(px_config_parse(&c, "d.json", NULL, js, strlen(js), err, sizeof(err)) == 0, "%s",
                  err);
    ck_assert_ptr_eq(px_route_pick(&c->listeners[0], "a", 1, "/", 1, NULL), &c->listeners[0].upstream);
    ck_assert_ptr_eq(px_route_pick(&c->listeners[0], "", 0, "", 0, NULL), &c->listeners[0].upstream);
    px_config_free(c);
}
END_TEST

/* Deadlines (issue 18): a route's "timeout" wins over its listener's; a
 * route without one takes the listener's; a listener without one has none.
 * A gRPC request's grpc-timeout wins when it is sooner, and is ignored
 * when malformed, zero, or on a request that is not gRPC. */
static const char deadline_json[] =
    "{" ID ",\"listeners\":["
    "{\"name\":\"in\",\"kind\":\"inbound\",\"bind\":\"0.0.0.0:15443\",\"upstream\":\"h2c://def:1\","
    " \"timeout\":\"2s\",\"routes\":["
    "  {\"path_prefix\":\"/fast/\",\"upstream\":\"http://r0:1\",\"timeout\":\"250ms\"},"
    "  {\"path_prefix\":\"/slow/\",\"upstream\":\"http://r1:1\",\"timeout\":\"1h\"},"
    "  {\"path_prefix\":\"/plain/\",\"upstream\":\"http://r2:1\"}"
    "]},"
    "{\"name\":\"bare\",\"kind\":\"inbound\",\"bind\":\"0.0.0.0:15444\",\"upstream\":\"h2c://d:1\","
    " \"routes\":[{\"path_prefix\":\"/t/\",\"upstream\":\"http://o0:1\",\"timeout\":\"10ms\"}]},"
    "{\"name\":\"out\",\"kind\":\"outbound\",\"bind\":\"127.0.0.1:15001\",\"timeout\":\"3s\","
    " \"routes\":["
    "  {\"authority\":\"a.svc\",\"upstream\":\"10.0.0.1:15443\","
    "   \"server_id\":\"spiffe://example.org/a\",\"timeout\":\"24h\"},"
    "  {\"authority\":\"b.svc\",\"upstream\":\"10.0.0.2:15443\","
    "   \"server_id\":\"spiffe://example.org/b\"}"
    "]}"
    "]}";

static const struct {
    int lst;
    const char *host, *path;
    int64_t timeout_ms;
} deadline_rows[] = {
    {0, "x", "/fast/a", 250},
    {0, "x", "/slow/a", 3600000},
    {0, "x", "/plain/a", 2000},  /* route without one: the listener's */
    {0, "x", "/other", 2000},    /* default upstream: the listener's */
    {1, "x", "/t/", 10},
    {1, "x", "/u", 0},           /* neither: none */
    {2, "a.svc", "/", 86400000},
    {2, "b.svc", "/", 3000},
    {2, "c.svc", "/", 3000},     /* no route (404): the value is not used */
};

START_TEST(route_deadline_table)
{
    struct px_config *c = NULL;
    char err[256] = "";
    int64_t t = -1;
    ck_assert_msg(px_config_parse(&c, "d.json", NULL, deadline_json, strlen(deadline_json), err,
                                  sizeof(err)) == 0,
                  "%s", err);
    (void)px_route_pick(&c->listeners[deadline_rows[_i].lst], deadline_rows[_i].host,
                        strlen(deadline_rows[_i].host), deadline_rows[_i].path,
                        strlen(deadline_rows[_i].path), &t);
    ck_assert_msg(t == deadline_rows[_i].timeout_ms, "row %d: %lld ms, want %lld", _i,
                  (long long)t, (long long)deadline_rows[_i].timeout_ms);
    px_config_free(c);
}
END_TEST

static const struct {
    int grpc;                /* rq.is_grpc */
    const char *grpc_timeout; /* NULL: no field */
    int64_t timeout_ms;      /* the route's (or listener's) */
    int has;                 /* a deadline */
    int64_t us;              /* after the start */
} request_deadlines[] = {
    {0, NULL, 0, 0, 0},
    {0, NULL, 500, 1, 500000},
    {1, NULL, 500, 1, 500000},
    {1, "100m", 500, 1, 100000},    /* the client's is sooner: it wins */
    {1, "1S", 500, 1, 500000},      /* the route's is sooner */
    {1, "500m", 500, 1, 500000},
    {1, "100m", 0, 1, 100000},      /* no configured deadline: the client's */
    {1, "1500n", 0, 1, 2},
    {0, "100m", 500, 1, 500000},    /* not gRPC: grpc-timeout means nothing */
    {0, "100m", 0, 0, 0},
    {1, "100 m", 500, 1, 500000},   /* malformed: ignored */
    {1, "0m", 500, 1, 500000},      /* zero: ignored */
    {1, "abc", 0, 0, 0},
    {1, "999999999S", 0, 0, 0},     /* 9 digits: ignored */
};

START_TEST(route_request_deadline)
{
    struct px_request rq;
    int64_t at = -1, start = 1000000000;
    int has;
    px_request_init(&rq);
    rq.is_grpc = request_deadlines[_i].grpc ? 1 : 0;
    if (request_deadlines[_i].grpc_timeout != NULL) {
        const char *v = request_deadlines[_i].grpc_timeout;
        ck_assert_int_eq(px_hdrs_add(&rq.hdrs, "grpc-timeout", 12, v, strlen(v), 0), 0);
    }
    has = px_request_deadline(&rq, start, request_deadlines[_i].timeout_ms, &at);
    ck_assert_msg(has == request_deadlines[_i].has, "row %d: has %d", _i, has);
    if (has)
        ck_assert_msg(at == start + request_deadlines[_i].us, "row %d: +%lld us, want +%lld", _i,
                      (long long)(at - start), (long long)request_deadlines[_i].us);
    else
        ck_assert_msg(at == -1, "row %d: output written without a deadline", _i);
    px_request_clear(&rq);
}
END_TEST

TCase *tcase_route(void)
{
    TCase *tc = tcase_create("route");
    tcase_add_checked_fixture(tc, parse_config, free_config);
    tcase_add_loop_test(tc, route_table, 0, (int)N_ELEMS(rows));
    tcase_add_test(tc, route_config_canonical);
    tcase_add_test(tc, route_no_routes);
    tcase_add_loop_test(tc, route_deadline_table, 0, (int)N_ELEMS(deadline_rows));
    tcase_add_loop_test(tc, route_request_deadline, 0, (int)N_ELEMS(request_deadlines));
    return tc;
}
