/*
 * proxy_h1head.c - TCase "h1_head" of the proxy suite: the HTTP/1.1 head
 * picket writes to an upstream (px_h1_write_request_head,
 * proxy/upstream/up_h1.c). Rows give a request's method, authority, target
 * and fields (set as picket's own requests are, px_request_set_internal,
 * so nothing is filtered before the serializer) and the framing picket
 * chose, and the exact bytes of the head: request line, Host, the fields
 * in order, Connection: te, then Transfer-Encoding: chunked, or
 * Content-Length (left out for an empty body of GET, HEAD, DELETE,
 * OPTIONS and TRACE). Rows with a NULL head must be refused (-1) with
 * nothing written. One more test serializes a request that went through
 * px_request_build().
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "request.h"
#include "upstream.h"

TCase *tcase_h1_head(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

struct hcase {
    const char *what;
    const char *method, *authority, *target;
    const char *fields; /* "name: value" lines separated by '\n' */
    int chunked;
    uint64_t len;
    const char *head; /* NULL = refused */
};

#define LINE(m, t) m " " t " HTTP/1.1\r\nHost: svc\r\n"

static const struct hcase hcases[] = {
    /* framing */
    {"GET, empty body", "GET", "svc", "/", "", 0, 0, LINE("GET", "/") "\r\n"},
    {"GET with a body", "GET", "svc", "/", "", 0, 5, LINE("GET", "/") "Content-Length: 5\r\n\r\n"},
    {"HEAD, empty", "HEAD", "svc", "/", "", 0, 0, LINE("HEAD", "/") "\r\n"},
    {"DELETE, empty", "DELETE", "svc", "/", "", 0, 0, LINE("DELETE", "/") "\r\n"},
    {"DELETE with a body", "DELETE", "svc", "/", "", 0, 2,
     LINE("DELETE", "/") "Content-Length: 2\r\n\r\n"},
    {"OPTIONS, empty", "OPTIONS", "svc", "/", "", 0, 0, LINE("OPTIONS", "/") "\r\n"},
    {"TRACE, empty", "TRACE", "svc", "/", "", 0, 0, LINE("TRACE", "/") "\r\n"},
    {"POST, empty", "POST", "svc", "/", "", 0, 0, LINE("POST", "/") "Content-Length: 0\r\n\r\n"},
    {"PUT, empty", "PUT", "svc", "/", "", 0, 0, LINE("PUT", "/") "Content-Length: 0\r\n\r\n"},
    {"PATCH, empty", "PATCH", "svc", "/", "", 0, 0, LINE("PATCH", "/") "Content-Length: 0\r\n\r\n"},
    {"other methods have body semantics", "PROPFIND", "svc", "/", "", 0, 0,
     LINE("PROPFIND", "/") "Content-Length: 0\r\n\r\n"},
    {"POST with a body", "POST", "svc", "/", "", 0, 1234,
     LINE("POST", "/") "Content-Length: 1234\r\n\r\n"},
    {"the largest length", "POST", "svc", "/", "", 0, UINT64_MAX,
     LINE("POST", "/") "Content-Length: 18446744073709551615\r\n\r\n"},
    {"chunked", "POST", "svc", "/", "", 1, 0,
     LINE("POST", "/") "Transfer-Encoding: chunked\r\n\r\n"},
    {"chunked wins over a length", "PUT", "svc", "/", "", 1, 77,
     LINE("PUT", "/") "Transfer-Encoding: chunked\r\n\r\n"},
    {"chunked GET", "GET", "svc", "/", "", 1, 0,
     LINE("GET", "/") "Transfer-Encoding: chunked\r\n\r\n"},
    /* request line and Host */
    {"target with query", "GET", "svc", "/a/b?x=1&y=%20;z", "", 0, 0,
     LINE("GET", "/a/b?x=1&y=%20;z") "\r\n"},
    {"authority with port", "GET", "svc:8080", "/", "", 0, 0,
     "GET / HTTP/1.1\r\nHost: svc:8080\r\n\r\n"},
    {"IPv6 authority", "GET", "[::1]:9", "/", "", 0, 0, "GET / HTTP/1.1\r\nHost: [::1]:9\r\n\r\n"},
    /* fields, in order, after Host and before the framing */
    {"fields in order", "POST", "svc", "/", "x-b: 2\nx-a: one, two\naccept: */*", 0, 3,
     LINE("POST", "/") "x-b: 2\r\nx-a: one, two\r\naccept: */*\r\nContent-Length: 3\r\n\r\n"},
    {"empty value", "GET", "svc", "/", "x-empty: ", 0, 0, LINE("GET", "/") "x-empty: \r\n\r\n"},
    {"obs-text value", "GET", "svc", "/", "x-u: caf\xc3\xa9", 0, 0,
     LINE("GET", "/") "x-u: caf\xc3\xa9\r\n\r\n"},
    {"te: trailers names itself in Connection", "POST", "svc", "/", "te: trailers\nx-a: 1", 1, 0,
     LINE("POST",
          "/") "te: trailers\r\nx-a: 1\r\nConnection: te\r\nTransfer-Encoding: chunked\r\n\r\n"},
    /* the second line: what no HTTP/1.1 request may carry is never written */
    {"framing and hop-by-hop fields", "POST", "svc", "/",
     "host: evil\ncontent-length: 9\ntransfer-encoding: chunked\nconnection: close\n"
     "keep-alive: 1\nupgrade: h2c\nproxy-authorization: x\nproxy-connection: x\n"
     "http2-settings: x\nx-ok: 1",
     0, 4, LINE("POST", "/") "x-ok: 1\r\nContent-Length: 4\r\n\r\n"},
    {"field syntax", "GET", "svc", "/",
     "x-ok: 1\nx bad: 1\nx-cr: a\rb\nx-lf: a\nb\nx-del: \x7f\nx:colon: 1\nx-ok2: 2", 0, 0,
     LINE("GET", "/") "x-ok: 1\r\nx-ok2: 2\r\n\r\n"},
    /* refused: what could split the request line or Host */
    {"space in target", "GET", "svc", "/a b", "", 0, 0, NULL},
    {"CRLF in target", "GET", "svc", "/a\r\nx-injected: 1", "", 0, 0, NULL},
    {"tab in target", "GET", "svc", "/a\tb", "", 0, 0, NULL},
    {"DEL in target", "GET", "svc", "/a\x7f", "", 0, 0, NULL},
    {"empty target", "GET", "svc", "", "", 0, 0, NULL},
    {"asterisk target", "OPTIONS", "svc", "*", "", 0, 0, NULL},
    {"absolute target", "GET", "svc", "http://svc/", "", 0, 0, NULL},
    {"space in method", "GET /x", "svc", "/", "", 0, 0, NULL},
    {"LF in method", "GET\n", "svc", "/", "", 0, 0, NULL},
    {"space in authority", "GET", "svc evil", "/", "", 0, 0, NULL},
    {"CRLF in authority", "GET", "svc\r\nx-injected: 1", "/", "", 0, 0, NULL},
    {"control byte in authority", "GET", "svc\x01", "/", "", 0, 0, NULL},
};

/* Fills h from "name: value" lines (names lowercased, nothing checked). */
static void fill(struct px_hdrs *h, const char *lines)
{
    const char *p = lines;
    memset(h, 0, sizeof(*h));
    while (*p != '\0') {
        /* a value may hold '\r' and (for one row) a '\n' followed by no ':' */
        const char *nl = strchr(p, '\n'), *end, *colon, *v;
        while (nl != NULL && memchr(nl + 1, ':', strcspn(nl + 1, "\n")) == NULL)
            nl = strchr(nl + 1, '\n');
        end = nl ? nl : p + strlen(p);
        colon = strstr(p, ": ");
        ck_assert(colon != NULL && colon < end);
        v = colon + 2;
        ck_assert_int_eq(px_hdrs_add(h, p, (size_t)(colon - p), v, (size_t)(end - v), 0), 0);
        p = nl ? nl + 1 : end;
    }
}

static char *take(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

START_TEST(h1_head_table)
{
    const struct hcase *c = &hcases[_i];
    struct px_request rq;
    struct px_hdrs fields;
    struct evbuffer *out = evbuffer_new();
    char *got;
    int rc;

    ck_assert_ptr_nonnull(out);
    fill(&fields, c->fields);
    px_request_init(&rq);
    ck_assert_int_eq(px_request_set_internal(&rq, c->method, c->authority, c->target, &fields), 0);
    rc = px_h1_write_request_head(out, &rq, c->chunked, c->len);
    got = take(out);
    if (c->head == NULL) {
        ck_assert_msg(rc == -1, "%s: not refused", c->what);
        ck_assert_msg(got[0] == '\0', "%s: refused, yet wrote '%s'", c->what, got);
    } else {
        ck_assert_msg(rc == 0, "%s: refused", c->what);
        ck_assert_msg(strcmp(got, c->head) == 0, "%s: wrote\n%s\nwant\n%s", c->what, got, c->head);
    }
    free(got);
    evbuffer_free(out);
    px_hdrs_clear(&fields);
    px_request_clear(&rq);
}
END_TEST

START_TEST(h1_head_not_built)
{
    struct px_request rq;
    struct evbuffer *out = evbuffer_new();

    ck_assert_ptr_nonnull(out);
    px_request_init(&rq);
    px_request_set_method(&rq, "GET", 3);
    px_request_set_target(&rq, "/", 1);
    px_request_set_authority(&rq, "svc", 3);
    ck_assert_int_eq(px_h1_write_request_head(out, &rq, 0, 0), -1);
    ck_assert_uint_eq(evbuffer_get_length(out), 0);
    px_request_clear(&rq);
    evbuffer_free(out);
}
END_TEST

START_TEST(h1_head_canonical_request)
{
    /* what px_request_build() made is what is written, byte for byte */
    static char *trusted[] = {"spiffe://example.org/gw"};
    struct px_config cfg;
    struct px_listener_cfg lc;
    struct px_request_ctx ctx;
    struct px_request rq;
    struct evbuffer *out = evbuffer_new();
    enum px_reason reason = PX_R_NONE;
    static const char *const in[][2] = {{"host", "Svc.Local.:8443"},
                                        {"TE", "trailers"},
                                        {"Connection", "x-a, keep-alive"},
                                        {"x-a", "gone"},
                                        {"Keep-Alive", "1"},
                                        {"x-request-id", "r1"},
                                        {"Accept", "*/*"},
                                        {"content-length", "3"},
                                        {"x_debug", "1"}};
    char *got;

    ck_assert_ptr_nonnull(out);
    memset(&cfg, 0, sizeof(cfg));
    memset(&lc, 0, sizeof(lc));
    cfg.limits.max_headers = 100;
    cfg.limits.max_header_list_size = 65536;
    cfg.limits.max_target_length = 8192;
    lc.kind = PX_LISTENER_OUTBOUND; /* no identity fields: the head is fixed */
    lc.trusted_forwarders = trusted;
    lc.ntrusted_forwarders = 1;
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = &cfg;
    ctx.lc = &lc;
    ctx.outbound = 1;
    ctx.body_follows = 1;
    ctx.peer_id = ctx.peer_cert_hash = ctx.peer_ip = ctx.own_id = "";
    px_request_init(&rq);
    px_request_set_method(&rq, "POST", 4);
    px_request_set_target(&rq, "/a/./b/../c?q=1", 15);
    for (size_t i = 0; i < N_ELEMS(in); i++)
        ck_assert_int_eq(
            px_request_add_field(&rq, &cfg, in[i][0], strlen(in[i][0]), in[i][1], strlen(in[i][1])),
            0);
    ck_assert_int_eq(px_request_build(&rq, &ctx, &reason), 0);
    ck_assert_int_eq(px_h1_write_request_head(out, &rq, 0, (uint64_t)rq.content_length), 0);
    got = take(out);
    ck_assert_str_eq(got, "POST /a/c?q=1 HTTP/1.1\r\nHost: svc.local:8443\r\nte: trailers\r\n"
                          "x-request-id: r1\r\naccept: */*\r\nConnection: te\r\n"
                          "Content-Length: 3\r\n\r\n");
    free(got);
    px_request_clear(&rq);
    evbuffer_free(out);
}
END_TEST

TCase *tcase_h1_head(void)
{
    TCase *tc = tcase_create("h1_head");
    tcase_add_loop_test(tc, h1_head_table, 0, (int)N_ELEMS(hcases));
    tcase_add_test(tc, h1_head_not_built);
    tcase_add_test(tc, h1_head_canonical_request);
    return tc;
}
