/*
 * proxy_request.c - TCases "authority" and "request" of the proxy suite:
 * the canonical request (proxy/gate/request.c, proxy/base/authority.c). Tables of
 * raw requests as a protocol half would collect them, and what the build
 * must make of them: the refusal, or the exact method, authority, target,
 * match path and field list that the policy sees and the upstream gets.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "policy.h"
#include "request.h"
#include "ws.h"

/* Rows for refusals leave the columns of a built request out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

TCase *tcase_authority(void);
TCase *tcase_request(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- authority ------------------------------------------------------------ */

static const struct {
    const char *in;
    const char *out; /* canonical authority, NULL = refused */
    const char *host;
    unsigned port;
} authorities[] = {
    {"orders.shop.svc", "orders.shop.svc", "orders.shop.svc", 0},
    {"Orders.Shop.SVC", "orders.shop.svc", "orders.shop.svc", 0},
    {"orders.shop.svc.", "orders.shop.svc", "orders.shop.svc", 0}, /* one root dot dropped */
    {"orders.shop.svc.:8443", "orders.shop.svc:8443", "orders.shop.svc", 8443},
    {"a:080", "a:80", "a", 80},                /* port in decimal, no leading zeros */
    {"a:1", "a:1", "a", 1},
    {"a:65535", "a:65535", "a", 65535},
    {"my_svc.local", "my_svc.local", "my_svc.local", 0},
    {"127.0.0.1", "127.0.0.1", "127.0.0.1", 0},
    {"127.0.0.1:9", "127.0.0.1:9", "127.0.0.1", 9},
    {"[::1]", "[::1]", "[::1]", 0},
    {"[::1]:443", "[::1]:443", "[::1]", 443},
    {"[0:0:0:0:0:0:0:1]", "[::1]", "[::1]", 0}, /* RFC 5952 form */
    {"[2001:DB8::A]", "[2001:db8::a]", "[2001:db8::a]", 0},
    {"admin.example.org:abc", NULL, NULL, 0}, /* issue 13 case 2 */
    {"admin.example.org:", NULL, NULL, 0},
    {"admin.example.org:0", NULL, NULL, 0},
    {"admin.example.org:65536", NULL, NULL, 0},
    {"admin.example.org:123456", NULL, NULL, 0},
    {"admin.example.org:-1", NULL, NULL, 0},
    {"admin.example.org:1:2", NULL, NULL, 0},
    {"admin.example.org: 80", NULL, NULL, 0},
    {"u@admin.example.org", NULL, NULL, 0},
    {"admin.example.org..", NULL, NULL, 0},
    {".admin.example.org", NULL, NULL, 0},
    {"admin..example.org", NULL, NULL, 0},
    {".", NULL, NULL, 0},
    {"", NULL, NULL, 0},
    {"adm%69n.example.org", NULL, NULL, 0},
    {"admin example.org", NULL, NULL, 0},
    {"admin.example.org/x", NULL, NULL, 0},
    {"admin.example.org\\x", NULL, NULL, 0},
    {"127.1", NULL, NULL, 0},       /* numeric last label: must be a dotted quad */
    {"0x7f.0.0.1", NULL, NULL, 0},
    {"0177.0.0.1", NULL, NULL, 0},
    {"127.0.0.256", NULL, NULL, 0},
    {"1.2.3.4.5", NULL, NULL, 0},
    {"foo.123", NULL, NULL, 0},
    {"[::1", NULL, NULL, 0},
    {"[fe80::1%25eth0]", NULL, NULL, 0}, /* no zone ids */
    {"[::1]x", NULL, NULL, 0},
    {"[]", NULL, NULL, 0},
    {"[v1.x]", NULL, NULL, 0},
    {"::1", NULL, NULL, 0},
};

START_TEST(authority_table)
{
    struct px_authority a;
    int rc = px_authority_parse(authorities[_i].in, strlen(authorities[_i].in), &a);
    if (authorities[_i].out == NULL) {
        ck_assert_msg(rc != 0, "%s: accepted as %s", authorities[_i].in, a.text);
        return;
    }
    ck_assert_msg(rc == 0, "%s: refused", authorities[_i].in);
    ck_assert_str_eq(a.text, authorities[_i].out);
    ck_assert_str_eq(a.host, authorities[_i].host);
    ck_assert_uint_eq(a.port, authorities[_i].port);
    ck_assert_uint_eq(a.text_len, strlen(a.text));
    ck_assert_uint_eq(a.host_len, strlen(a.host));
    /* canonical is a fixed point */
    ck_assert_int_eq(px_authority_parse(a.text, a.text_len, &a), 0);
    ck_assert_str_eq(a.text, authorities[_i].out);
}
END_TEST

START_TEST(authority_long_names)
{
    char name[300];
    struct px_authority a;
    /* 4 labels of 63 = 255 bytes: over 253 */
    memset(name, 'a', sizeof(name));
    name[63] = name[127] = name[191] = '.';
    ck_assert_int_ne(px_authority_parse(name, 255, &a), 0);
    ck_assert_int_eq(px_authority_parse(name, 253, &a), 0);
    name[253] = '.';
    ck_assert_int_eq(px_authority_parse(name, 254, &a), 0);
    ck_assert_uint_eq(a.host_len, 253);
    memset(name, 'b', 64); /* a 64-byte label */
    ck_assert_int_ne(px_authority_parse(name, 64, &a), 0);
    ck_assert_int_eq(px_authority_parse(name, 63, &a), 0);
}
END_TEST

TCase *tcase_authority(void)
{
    TCase *tc = tcase_create("authority");
    tcase_add_loop_test(tc, authority_table, 0, (int)N_ELEMS(authorities));
    tcase_add_test(tc, authority_long_names);
    return tc;
}

/* ---- the request ------------------------------------------------------------ */

static struct px_config cfg;
static struct px_listener_cfg lc;
static char *trusted[] = {"spiffe://example.org/gw"};

static void reset_cfg(void)
{
    memset(&cfg, 0, sizeof(cfg));
    memset(&lc, 0, sizeof(lc));
    cfg.limits.max_headers = 100;
    cfg.limits.max_header_list_size = 65536;
    cfg.limits.max_target_length = 8192;
    lc.kind = PX_LISTENER_INBOUND;
    lc.trusted_forwarders = trusted;
    lc.ntrusted_forwarders = 1;
}

static void make_ctx(struct px_request_ctx *ctx, const char *peer)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->cfg = &cfg;
    ctx->lc = &lc;
    ctx->tls = 1;
    ctx->outbound = lc.kind == PX_LISTENER_OUTBOUND;
    ctx->peer_id = peer;
    ctx->peer_cert_hash = "abcd";
    ctx->peer_ip = "10.0.0.7";
    ctx->own_id = "spiffe://example.org/me";
}

/* Fields as "name: value" lines separated by '\n'. */
static int add_fields(struct px_request *rq, const char *fields, int trailers)
{
    const char *p = fields;
    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n'), *end = nl ? nl : p + strlen(p);
        const char *colon = memchr(p, ':', (size_t)(end - p));
        const char *v = colon + 1;
        int rc;
        ck_assert_ptr_nonnull(colon);
        while (v < end && *v == ' ')
            v++;
        rc = trailers ? px_request_add_trailer(rq, &cfg, p, (size_t)(colon - p), v,
                                               (size_t)(end - v))
                      : px_request_add_field(rq, &cfg, p, (size_t)(colon - p), v,
                                             (size_t)(end - v));
        if (rc != 0)
            return rc;
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* The list as "name: value\n" lines, for comparing. */
static const char *dump(const struct px_hdrs *h)
{
    static char out[16384];
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < h->n; i++)
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%.*s: %.*s\n", (int)h->v[i].nlen,
                              h->v[i].name, (int)h->v[i].vlen, h->v[i].value);
    return out;
}

struct rcase {
    const char *what;
    const char *method, *target, *authority; /* authority: h2 :authority, NULL for h1 */
    const char *fields;
    int status;                 /* 0 = built */
    const char *reason;         /* when refused */
    const char *c_authority, *c_target, *c_match; /* when built */
    const char *c_fields;       /* every field the upstream gets, in order */
};

#define ID_TAIL "x-forwarded-proto: https\n" \
    "x-forwarded-client-cert: By=spiffe://example.org/me;Hash=abcd;URI=spiffe://example.org/c\n" \
    "x-forwarded-for: 10.0.0.7\n"
#define RID "x-request-id: r1\n"

static const struct rcase rcases[] = {
    {"plain h1", "GET", "/a/b?x=1", NULL, "host: Svc.Local.\nx-request-id: r1\naccept: */*", 0,
     NULL, "svc.local", "/a/b?x=1", "/a/b", RID "accept: */*\n" ID_TAIL},
    {"plain h2", "POST", "/a", "svc:8080", "x-request-id: r1\ncontent-type: text/plain", 0, NULL,
     "svc:8080", "/a", "/a", RID "content-type: text/plain\n" ID_TAIL},
    {"h2 host field only", "GET", "/", NULL, "host: svc\nx-request-id: r1", 0, NULL, "svc", "/",
     "/", RID ID_TAIL},
    {"h2 host agrees", "GET", "/", "SVC.", "host: svc\nx-request-id: r1", 0, NULL, "svc", "/", "/",
     RID ID_TAIL},
    {"h2 host conflicts", "GET", "/", "svc", "host: admin\nx-request-id: r1", 400,
     "conflicting_host"},
    {"two hosts", "GET", "/", NULL, "host: a\nhost: a", 400, "bad_host"},
    {"no host", "GET", "/", NULL, "x-a: 1", 400, "missing_host"},
    {"port not numeric", "GET", "/", NULL, "host: admin.example.org:abc", 400, "bad_host"},
    {"h2 port not numeric", "GET", "/", "admin.example.org:abc", "", 400, "bad_host"},
    /* methods: one rule on both protocols */
    {"lowercase method", "delete", "/", "svc", "", 400, "bad_method"},
    {"mixed case method", "Get", "/", "svc", "", 400, "bad_method"},
    {"unknown method", "FOO", "/", "svc", "", 400, "bad_method"},
    {"connect", "CONNECT", "/", "svc", "", 400, "bad_method"},
    {"webdav method", "PROPFIND", "/", "svc", "x-request-id: r1", 0, NULL, "svc", "/", "/",
     RID ID_TAIL},
    /* targets */
    {"dot segments", "GET", "/a/./b/../c//d", "svc", "x-request-id: r1", 0, NULL, "svc", "/a/c/d",
     "/a/c/d", RID ID_TAIL},
    {"asterisk form", "OPTIONS", "*", "svc", "", 400, "bad_target"},
    {"absolute form", "GET", "http://svc/", "svc", "", 400, "bad_target"},
    {"encoded slash", "GET", "/a%2fb", "svc", "", 400, "encoded_slash"},
    {"path params refused", "GET", "/public/a;b/c", "svc", "", 400, "path_params"},
    {"encoded param refused", "GET", "/public/a%3Bb/c", "svc", "", 400, "path_params"},
    {"dot params", "GET", "/public/..;/admin/x", "svc", "", 400, "dot_segment_params"},
    {"dot params encoded", "GET", "/public/%2e%2e;/admin/x", "svc", "", 400, "dot_segment_params"},
    {"single dot params", "GET", "/public/.;x=1/admin", "svc", "", 400, "dot_segment_params"},
    {"dot params %3B", "GET", "/public/..%3b/admin", "svc", "", 400, "dot_segment_params"},
    {"query may hold ;", "GET", "/a?x=1;y=2", "svc", "x-request-id: r1", 0, NULL, "svc",
     "/a?x=1;y=2", "/a", RID ID_TAIL},
    /* fields */
    {"hop-by-hop and connection tokens", "GET", "/", NULL,
     "host: s\nconnection: x-a, X-B\nkeep-alive: 1\nx-a: 1\nx-b: 2\nx-c: 3\nupgrade: h2c\n"
     "x-request-id: r1\nproxy-authorization: basic x",
     0, NULL, "s", "/", "/", "x-c: 3\n" RID ID_TAIL},
    {"te trailers kept once", "POST", "/", "s", "te: trailers\nte: trailers\nx-request-id: r1", 0,
     NULL, "s", "/", "/", "te: trailers\n" RID ID_TAIL},
    {"te other dropped", "GET", "/", NULL, "host: s\nte: gzip\nx-request-id: r1", 0, NULL, "s",
     "/", "/", RID ID_TAIL},
    {"identity look-alikes", "GET", "/", "s",
     "x_forwarded_client_cert: By=evil\nX-Forwarded_Client-Cert: evil\nx_picket_peer_id: spiffe://x\n"
     "x-picket-peer-id: spiffe://x\nx-forwarded-proto: gopher\nx_request_id: evil\n"
     "x-request-id: r1\nx-forwarded-client-cert: By=evil",
     0, NULL, "s", "/", "/", RID ID_TAIL},
    {"forwarding fields from an untrusted peer", "GET", "/", "s",
     "x-forwarded-for: 6.6.6.6\nforwarded: for=6.6.6.6\nx-forwarded-host: evil\nx-real-ip: 6.6.6.6\n"
     "x-forwarded-port: 1\nx-request-id: r1",
     0, NULL, "s", "/", "/", RID ID_TAIL},
    {"underscore names dropped", "GET", "/", "s", "x_debug: 1\nx-debug: 2\nx-request-id: r1", 0,
     NULL, "s", "/", "/", "x-debug: 2\n" RID ID_TAIL},
    {"cookie crumbs joined", "GET", "/", "s",
     "cookie: a=1\nx-request-id: r1\ncookie: b=2\ncookie: \ncookie: c=3", 0, NULL, "s", "/", "/",
     "cookie: a=1; b=2; c=3\n" RID ID_TAIL},
    {"one cookie untouched", "GET", "/", "s", "cookie: a=1; b=2\nx-request-id: r1", 0, NULL, "s",
     "/", "/", "cookie: a=1; b=2\n" RID ID_TAIL},
    {"content-length consumed", "POST", "/", "s", "content-length: 5\nx-request-id: r1", 0, NULL,
     "s", "/", "/", RID ID_TAIL},
    {"content-length bad", "POST", "/", "s", "content-length: 5x", 400, "bad_content_length"},
    {"content-length conflict", "POST", "/", "s", "content-length: 5\ncontent-length: 6", 400,
     "bad_content_length"},
    {"expect other", "POST", "/", "s", "expect: something", 417, "bad_expect"},
    {"expect continue consumed", "POST", "/", "s", "expect: 100-Continue\nx-request-id: r1", 0,
     NULL, "s", "/", "/", RID ID_TAIL},
    {"bad request id replaced", "GET", "/", "s", "x-request-id: has space\nx-a: 1", 0, NULL, "s",
     "/", "/", "x-a: 1\n"},
};

static void run_case(const struct rcase *c, struct px_request *rq, const char *peer)
{
    struct px_request_ctx ctx;
    enum px_reason reason = PX_R_NONE;
    int rc;

    px_request_init(rq);
    ck_assert_int_eq(px_request_set_method(rq, c->method, strlen(c->method)), 0);
    ck_assert_int_eq(px_request_set_target(rq, c->target, strlen(c->target)), 0);
    if (c->authority != NULL)
        ck_assert_int_eq(px_request_set_authority(rq, c->authority, strlen(c->authority)), 0);
    ck_assert_int_eq(add_fields(rq, c->fields, 0), 0);
    make_ctx(&ctx, peer);
    ctx.body_follows = 1;
    rc = px_request_build(rq, &ctx, &reason);
    ck_assert_msg(rc == c->status, "%s: status %d (%s), want %d", c->what, rc,
                  reason != PX_R_NONE ? px_reason_name(reason) : "-", c->status);
    if (rc != 0) {
        ck_assert_msg(reason != PX_R_NONE && strcmp(px_reason_name(reason), c->reason) == 0,
                      "%s: reason %s, want %s", c->what, px_reason_name(reason), c->reason);
        return;
    }
    if (c->c_authority == NULL)
        return; /* the caller checks the rest */
    ck_assert_str_eq(rq->authority, c->c_authority);
    ck_assert_uint_eq(rq->authority_len, strlen(rq->authority));
    ck_assert_str_eq(rq->target, c->c_target);
    ck_assert_uint_eq(rq->target_len, strlen(rq->target));
    ck_assert_int_eq(strncmp(rq->match_path, c->c_match, rq->match_path_len), 0);
    ck_assert_uint_eq(rq->match_path_len, strlen(c->c_match));
}

START_TEST(request_table)
{
    const struct rcase *c = &rcases[_i];
    struct px_request rq;
    reset_cfg();
    run_case(c, &rq, "spiffe://example.org/c");
    if (c->status == 0) {
        const char *want = c->c_fields;
        char buf[2048];
        if (strcmp(want, "x-a: 1\n") == 0) {
            /* a generated request id: check its shape, then the rest */
            ck_assert_int_eq(px_request_id_ok(rq.request_id, strlen(rq.request_id)), 1);
            ck_assert_uint_eq(strlen(rq.request_id), 36);
            snprintf(buf, sizeof(buf), "x-a: 1\nx-request-id: %s\n" ID_TAIL, rq.request_id);
            want = buf;
        }
        ck_assert_str_eq(dump(&rq.hdrs), want);
        /* the policy input is the same list, and the canonical host */
        {
            struct policy_header hb[64];
            struct policy_request pr;
            px_request_policy_input(&rq, "spiffe://example.org/c", hb, &pr);
            ck_assert_uint_eq(pr.nheaders, rq.hdrs.n);
            ck_assert_uint_eq(pr.authority_len, rq.host_len);
            ck_assert_int_eq(memcmp(pr.authority, rq.authority, rq.host_len), 0);
            ck_assert_ptr_eq(pr.path, rq.match_path);
        }
    }
    px_request_clear(&rq);
}
END_TEST

/* WebSocket opening requests: which are (rq.upgrade, judged as GET with
 * "upgrade: websocket"), which go on as plain requests, which are refused. */
#define WSKEY "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\n"
static const struct {
    const char *what, *method, *protocol, *fields;
    int http10, body_follows;
    int status; /* 0 = built */
    const char *reason;
    int upgrade;
} wscases[] = {
    {"h1 websocket", "GET", NULL, "host: s\nupgrade: websocket\nconnection: Upgrade\n" WSKEY, 0,
     0, 0, NULL, 1},
    {"h1 token lists, any case", "GET", NULL,
     "host: s\nupgrade: foo, WebSocket\nconnection: keep-alive, UPGRADE\n" WSKEY, 0, 0, 0, NULL, 1},
    {"h1 upgrade not named by connection", "GET", NULL, "host: s\nupgrade: websocket\n" WSKEY, 0, 0,
     0, NULL, 0},
    {"h1 h2c upgrade dropped", "GET", NULL, "host: s\nupgrade: h2c\nconnection: upgrade\n" WSKEY, 0,
     0, 0, NULL, 0},
    {"h1 tls upgrade dropped", "GET", NULL, "host: s\nupgrade: TLS/1.0\nconnection: upgrade", 0, 0, 0,
     NULL, 0},
    {"h1 websocket on POST is no upgrade", "POST", NULL,
     "host: s\nupgrade: websocket\nconnection: upgrade\n" WSKEY, 0, 0, 0, NULL, 0},
    {"h1.0 websocket is no upgrade", "GET", NULL,
     "host: s\nupgrade: websocket\nconnection: upgrade\n" WSKEY, 1, 0, 0, NULL, 0},
    {"h1 no key", "GET", NULL, "host: s\nupgrade: websocket\nconnection: upgrade", 0, 0, 400,
     "bad_upgrade", 0},
    {"h1 short key", "GET", NULL,
     "host: s\nupgrade: websocket\nconnection: upgrade\nsec-websocket-key: abc", 0, 0, 400,
     "bad_upgrade", 0},
    {"h1 key of 17 bytes", "GET", NULL,
     "host: s\nupgrade: websocket\nconnection: upgrade\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZSE=",
     0, 0, 400, "bad_upgrade", 0},
    {"h1 two keys", "GET", NULL, "host: s\nupgrade: websocket\nconnection: upgrade\n" WSKEY WSKEY, 0,
     0, 400, "bad_upgrade", 0},
    {"h1 with a body", "GET", NULL, "host: s\nupgrade: websocket\nconnection: upgrade\n" WSKEY, 0,
     1, 400, "bad_upgrade", 0},
    {"h1 with a length", "GET", NULL,
     "host: s\nupgrade: websocket\nconnection: upgrade\ncontent-length: 3\n" WSKEY, 0, 0, 400,
     "bad_upgrade", 0},
    {"h2 extended connect", "CONNECT", "websocket", "sec-websocket-version: 13", 0, 1, 0, NULL, 1},
    {"h2 extended connect, protocol case", "CONNECT", "WebSocket", "", 0, 1, 0, NULL, 1},
    {"h2 other protocol", "CONNECT", "connect-udp", "", 0, 1, 400, "bad_upgrade", 0},
    {"h2 protocol on GET", "GET", "websocket", "", 0, 1, 400, "bad_upgrade", 0},
    {"h2 plain connect", "CONNECT", NULL, "", 0, 1, 400, "bad_method", 0},
};

START_TEST(request_websocket)
{
    struct px_request rq;
    struct px_request_ctx ctx;
    enum px_reason reason = PX_R_NONE;
    const char *m = wscases[_i].method;
    size_t nup = 0;
    int rc;

    reset_cfg();
    px_request_init(&rq);
    ck_assert_int_eq(px_request_set_method(&rq, m, strlen(m)), 0);
    ck_assert_int_eq(px_request_set_target(&rq, "/chat", 5), 0);
    if (wscases[_i].protocol != NULL) {
        ck_assert_int_eq(px_request_set_authority(&rq, "s", 1), 0);
        ck_assert_int_eq(
            px_request_set_protocol(&rq, wscases[_i].protocol, strlen(wscases[_i].protocol)), 0);
    } else if (strcmp(m, "CONNECT") == 0) {
        ck_assert_int_eq(px_request_set_authority(&rq, "s", 1), 0);
    }
    ck_assert_int_eq(add_fields(&rq, wscases[_i].fields, 0), 0);
    make_ctx(&ctx, "spiffe://example.org/c");
    ctx.http10 = wscases[_i].http10;
    ctx.body_follows = wscases[_i].body_follows;
    rc = px_request_build(&rq, &ctx, &reason);
    ck_assert_msg(rc == wscases[_i].status, "%s: %d %s", wscases[_i].what, rc,
                  px_reason_name(reason));
    if (rc != 0) {
        ck_assert_str_eq(px_reason_name(reason), wscases[_i].reason);
    } else {
        ck_assert_msg((int)rq.upgrade == wscases[_i].upgrade, "%s: upgrade %d", wscases[_i].what,
                      rq.upgrade);
        if (rq.upgrade)
            ck_assert_str_eq(rq.method, "GET"); /* what the policy judges */
        for (size_t i = 0; i < rq.hdrs.n; i++) {
            /* no Connection or Upgrade as received ever travels; a
             * WebSocket carries the canonical one */
            ck_assert(strcmp(rq.hdrs.v[i].name, "connection") != 0);
            if (strcmp(rq.hdrs.v[i].name, "upgrade") == 0) {
                ck_assert_str_eq(rq.hdrs.v[i].value, "websocket");
                nup++;
            }
        }
        ck_assert_uint_eq(nup, rq.upgrade ? 1u : 0u);
        if (rq.upgrade && wscases[_i].protocol == NULL)
            ck_assert_int_eq(strncmp(rq.ws_key, "dGhlIHNhbXBsZSBub25jZQ==", rq.ws_key_len), 0);
    }
    px_request_clear(&rq);
}
END_TEST

/* RFC 6455 4.2.2's own example, and keys picket makes pass its own check. */
START_TEST(request_websocket_keys)
{
    char acc[PX_WS_ACCEPT_LEN + 1], key[PX_WS_KEY_LEN + 1];
    ck_assert_int_eq(px_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, acc), 0);
    ck_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    for (int i = 0; i < 64; i++) {
        ck_assert_int_eq(px_ws_key_new(key), 0);
        ck_assert_uint_eq(strlen(key), PX_WS_KEY_LEN);
        ck_assert_int_eq(px_ws_key_ok(key, strlen(key)), 1);
    }
    ck_assert_int_eq(px_ws_key_ok("dGhlIHNhbXBsZSBub25jZQ=", 23), 0);
    ck_assert_int_eq(px_ws_key_ok("dGhlIHNhbXBsZSBub25jZ*==", 24), 0);
    ck_assert_int_eq(px_ws_key_ok("dGhlIHNhbXBsZSBub25jZSE=", 24), 0); /* 17 bytes */
    ck_assert_int_eq(px_ws_key_ok("dGhlIHNhbXBs ZSBub25jZQ=", 24), 0);
}
END_TEST

START_TEST(request_limits)
{
    struct px_request rq;
    struct px_request_ctx ctx;
    enum px_reason reason = PX_R_NONE;
    char big[9000];

    reset_cfg();
    make_ctx(&ctx, "spiffe://example.org/c");
    /* 100 fields pass, the 101st is refused when it arrives */
    px_request_init(&rq);
    px_request_set_method(&rq, "GET", 3);
    px_request_set_target(&rq, "/", 1);
    px_request_set_authority(&rq, "s", 1);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(px_request_add_field(&rq, &cfg, "x-f", 3, "v", 1), 0);
    ck_assert_int_eq(px_request_add_field(&rq, &cfg, "x-debug", 7, "1", 1), -1);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 431);
    ck_assert_str_eq(px_reason_name(reason), "too_many_headers");
    px_request_clear(&rq);
    /* bytes */
    cfg.limits.max_header_list_size = 1024;
    px_request_init(&rq);
    memset(big, 'a', sizeof(big));
    ck_assert_int_eq(px_request_add_field(&rq, &cfg, "x-a", 3, big, 900), 0);
    ck_assert_int_eq(px_request_add_field(&rq, &cfg, "x-b", 3, big, 100), -3);
    px_request_set_method(&rq, "GET", 3);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 431);
    ck_assert_str_eq(px_reason_name(reason), "headers_too_large");
    px_request_clear(&rq);
    /* target length: at the limit is fine, one more byte is 414 */
    reset_cfg();
    big[0] = '/';
    px_request_init(&rq);
    px_request_set_method(&rq, "GET", 3);
    px_request_set_authority(&rq, "s", 1);
    px_request_set_target(&rq, big, 8192);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 0);
    ck_assert_uint_eq(rq.target_len, 8192);
    px_request_clear(&rq);
    px_request_init(&rq);
    px_request_set_method(&rq, "GET", 3);
    px_request_set_authority(&rq, "s", 1);
    px_request_set_target(&rq, big, 8193);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 414);
    ck_assert_str_eq(px_reason_name(reason), "target_too_long");
    px_request_clear(&rq);
}
END_TEST

/* Every one of many fields is seen, wherever it is: the deny-bypass of
 * issue 13 case 1 was a field past the 64th. */
START_TEST(request_every_field_reaches_the_policy)
{
    struct px_request rq;
    struct px_request_ctx ctx;
    struct policy_header hb[128];
    struct policy_request pr;
    enum px_reason reason = PX_R_NONE;
    int seen = 0;

    reset_cfg();
    make_ctx(&ctx, "spiffe://example.org/c");
    px_request_init(&rq);
    px_request_set_method(&rq, "GET", 3);
    px_request_set_target(&rq, "/", 1);
    px_request_set_authority(&rq, "s", 1);
    for (int i = 0; i < 90; i++)
        px_request_add_field(&rq, &cfg, "x-filler", 8, "v", 1);
    px_request_add_field(&rq, &cfg, "x-debug", 7, "1", 1);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 0);
    px_request_policy_input(&rq, "spiffe://example.org/c", hb, &pr);
    for (size_t i = 0; i < pr.nheaders; i++)
        seen += pr.headers[i].name_len == 7 && memcmp(pr.headers[i].name, "x-debug", 7) == 0;
    ck_assert_int_eq(seen, 1);
    px_request_clear(&rq);
}
END_TEST

START_TEST(request_connection_tokens_many)
{
    /* thousands of tokens, each naming a field: one hash set, one pass */
    struct px_request rq;
    struct px_request_ctx ctx;
    enum px_reason reason = PX_R_NONE;
    static char conn[60000];
    size_t o = 0;

    reset_cfg();
    cfg.limits.max_header_list_size = 1 << 20;
    make_ctx(&ctx, "");
    for (int i = 0; i < 5000; i++)
        o += (size_t)snprintf(conn + o, sizeof(conn) - o, "%sx-t%d", i ? ", " : "", i);
    px_request_init(&rq);
    px_request_set_method(&rq, "GET", 3);
    px_request_set_target(&rq, "/", 1);
    px_request_set_authority(&rq, "s", 1);
    px_request_add_field(&rq, &cfg, "connection", 10, conn, o);
    px_request_add_field(&rq, &cfg, "x-t17", 5, "gone", 4);
    px_request_add_field(&rq, &cfg, "X-T4999", 7, "gone", 4);
    px_request_add_field(&rq, &cfg, "x-t5000", 7, "kept", 4);
    px_request_add_field(&rq, &cfg, "x-request-id", 12, "r1", 2);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 0);
    ck_assert_str_eq(dump(&rq.hdrs), "x-t5000: kept\nx-request-id: r1\nx-forwarded-proto: https\n"
                                     "x-forwarded-for: 10.0.0.7\n");
    px_request_clear(&rq);
}
END_TEST

START_TEST(request_underscore_modes)
{
    static const struct rcase c = {"underscores", "GET", "/", "s",
                                   "x_debug: 1\nx_forwarded_for: 1.1.1.1\nx-request-id: r1"};
    struct px_request rq;
    struct px_request_ctx ctx;
    enum px_reason reason = PX_R_NONE;

    reset_cfg();
    lc.underscores = PX_US_ALLOW; /* kept, but a look-alike never */
    run_case(&c, &rq, "spiffe://example.org/c");
    ck_assert_str_eq(dump(&rq.hdrs), "x_debug: 1\n" RID ID_TAIL);
    px_request_clear(&rq);
    lc.underscores = PX_US_REJECT;
    make_ctx(&ctx, "spiffe://example.org/c");
    px_request_init(&rq);
    px_request_set_method(&rq, "GET", 3);
    px_request_set_target(&rq, "/", 1);
    px_request_set_authority(&rq, "s", 1);
    add_fields(&rq, c.fields, 0);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 400);
    ck_assert_str_eq(px_reason_name(reason), "header_with_underscore");
    px_request_clear(&rq);
}
END_TEST

START_TEST(request_trusted_forwarder)
{
    static const struct rcase c = {
        "trusted", "GET", "/", "s",
        "x-forwarded-for: 1.1.1.1\nforwarded: for=1.1.1.1\nx-forwarded-host: shop.example\n"
        "x_forwarded_for: 6.6.6.6\nx-request-id: r1"};
    struct px_request rq;

    static const struct rcase c2 = {"trusted, two lines", "GET", "/", "s",
                                    "x-forwarded-for: 1.1.1.1\nforwarded: for=a\nx-a: 1\n"
                                    "x-forwarded-for: 2.2.2.2\nforwarded: for=b\nx-request-id: r1"};
    reset_cfg();
    run_case(&c, &rq, "spiffe://example.org/gw");
    ck_assert_str_eq(dump(&rq.hdrs),
                     "x-forwarded-for: 1.1.1.1, 10.0.0.7\nforwarded: for=1.1.1.1, for=10.0.0.7\n"
                     "x-forwarded-host: shop.example\n" RID "x-forwarded-proto: https\n"
                     "x-forwarded-client-cert: By=spiffe://example.org/me;Hash=abcd;"
                     "URI=spiffe://example.org/gw\n");
    px_request_clear(&rq);
    /* one list in one field: an app reading the first line reads it all */
    run_case(&c2, &rq, "spiffe://example.org/gw");
    ck_assert_str_eq(dump(&rq.hdrs), "x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.7\n"
                                     "forwarded: for=a, for=b, for=10.0.0.7\nx-a: 1\n" RID
                                     "x-forwarded-proto: https\n"
                                     "x-forwarded-client-cert: By=spiffe://example.org/me;"
                                     "Hash=abcd;URI=spiffe://example.org/gw\n");
    px_request_clear(&rq);
}
END_TEST

START_TEST(request_outbound_passes_forwarding)
{
    static const struct rcase c = {"outbound", "GET", "/", "s",
                                   "x-forwarded-for: 1.1.1.1\nx-forwarded-client-cert: evil\n"
                                   "x-picket-peer-id: evil\nx-request-id: r1"};
    struct px_request rq;

    reset_cfg();
    lc.kind = PX_LISTENER_OUTBOUND;
    run_case(&c, &rq, "");
    ck_assert_str_eq(dump(&rq.hdrs), "x-forwarded-for: 1.1.1.1\n" RID);
    px_request_clear(&rq);
}
END_TEST

START_TEST(request_path_params_keep)
{
    static const struct {
        const char *target, *match; /* match NULL = refused */
    } t[] = {
        {"/admin;jsessionid=1/secret", "/admin/secret"},
        {"/a;x/b;y?q=1;2", "/a/b"},
        {"/a/;x/b", "/a/b"},
        {"/;x", "/"},
        {"/a%3Bx/b", "/a/b"},
        {"/public/..;/admin", NULL},
        {"/public/%2E%2E;x/admin", NULL},
    };
    reset_cfg();
    lc.path_params = PX_PP_KEEP;
    for (size_t i = 0; i < N_ELEMS(t); i++) {
        struct px_request rq;
        struct px_request_ctx ctx;
        enum px_reason reason = PX_R_NONE;
        int rc;
        make_ctx(&ctx, "");
        px_request_init(&rq);
        px_request_set_method(&rq, "GET", 3);
        px_request_set_target(&rq, t[i].target, strlen(t[i].target));
        px_request_set_authority(&rq, "s", 1);
        rc = px_request_build(&rq, &ctx, &reason);
        if (t[i].match == NULL) {
            ck_assert_int_eq(rc, 400);
            ck_assert_str_eq(px_reason_name(reason), "dot_segment_params");
        } else {
            ck_assert_msg(rc == 0, "%s refused (%s)", t[i].target, px_reason_name(reason));
            ck_assert_uint_eq(rq.match_path_len, strlen(t[i].match));
            ck_assert_int_eq(memcmp(rq.match_path, t[i].match, rq.match_path_len), 0);
            /* forwarded unchanged */
            ck_assert_int_eq(strncmp(rq.target, t[i].target, strcspn(t[i].target, "?")), 0);
        }
        px_request_clear(&rq);
    }
}
END_TEST

START_TEST(request_trailers_filtered)
{
    struct px_request rq;
    struct px_request_ctx ctx;
    enum px_reason reason = PX_R_NONE;

    reset_cfg();
    make_ctx(&ctx, "spiffe://example.org/c");
    px_request_init(&rq);
    px_request_set_method(&rq, "POST", 4);
    px_request_set_target(&rq, "/", 1);
    px_request_set_authority(&rq, "s", 1);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 0);
    add_fields(&rq,
               "x-forwarded-client-cert: evil\nx-picket-peer-id: evil\nx-request-id: evil\n"
               "x_forwarded_client_cert: evil\nhost: evil\ncontent-length: 1\nauthorization: x\n"
               "x-checksum: abc\ncontent-type: x\nx-forwarded-for: 1.1.1.1\ngrpc-status: 0\n"
               "transfer-encoding: chunked\ncookie: a=1\nx-debug_: 1",
               1);
    ck_assert_int_eq(px_request_build_trailers(&rq, &ctx, &reason), 0);
    ck_assert_str_eq(dump(&rq.trailers), "x-checksum: abc\ngrpc-status: 0\n");
    px_request_clear(&rq);
    /* response side: the same allow rule */
    ck_assert_int_eq(px_trailer_allowed("grpc-message", 12), 1);
    ck_assert_int_eq(px_trailer_allowed("x-forwarded-client-cert", 23), 0);
    ck_assert_int_eq(px_trailer_allowed("x-picket-anything", 17), 0);
    ck_assert_int_eq(px_trailer_allowed("set-cookie", 10), 0);
}
END_TEST

START_TEST(request_methods)
{
    static const char *ok[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE",
                               "PATCH", "PROPFIND", "M-SEARCH", "PURGE"};
    static const char *bad[] = {"get", "Get", "CONNECT", "FOO", "", "GET ", "G\x00T", "DELETE\r"};
    for (size_t i = 0; i < N_ELEMS(ok); i++)
        ck_assert_msg(px_method_ok(ok[i], strlen(ok[i])), "%s", ok[i]);
    for (size_t i = 0; i < N_ELEMS(bad); i++)
        ck_assert_msg(!px_method_ok(bad[i], i == 6 ? 3 : strlen(bad[i])), "%s", bad[i]);
}
END_TEST

TCase *tcase_request(void)
{
    TCase *tc = tcase_create("request");
    tcase_add_loop_test(tc, request_table, 0, (int)N_ELEMS(rcases));
    tcase_add_test(tc, request_limits);
    tcase_add_loop_test(tc, request_websocket, 0, (int)N_ELEMS(wscases));
    tcase_add_test(tc, request_websocket_keys);
    tcase_add_test(tc, request_every_field_reaches_the_policy);
    tcase_add_test(tc, request_connection_tokens_many);
    tcase_add_test(tc, request_underscore_modes);
    tcase_add_test(tc, request_trusted_forwarder);
    tcase_add_test(tc, request_outbound_passes_forwarding);
    tcase_add_test(tc, request_path_params_keep);
    tcase_add_test(tc, request_trailers_filtered);
    tcase_add_test(tc, request_methods);
    return tc;
}
