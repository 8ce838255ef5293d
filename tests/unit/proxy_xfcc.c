/*
 * proxy_xfcc.c - TCases "xfcc" and "url" of the proxy suite: px_xfcc_build()
 * (proxy/base/xfcc.c), the x-forwarded-client-cert value written for the app.
 */
#include <check.h>
#include <string.h>

#include "px.h"
#include "url.h"
#include "xfcc.h"

TCase *tcase_xfcc(void);

START_TEST(xfcc_plain_ids)
{
    char out[256];
    int n = px_xfcc_build(out, sizeof(out), "spiffe://td/ns/a/sa/b", "ab12",
                          "spiffe://td/ns/c/sa/d");
    ck_assert_str_eq(out, "By=spiffe://td/ns/a/sa/b;Hash=ab12;URI=spiffe://td/ns/c/sa/d");
    ck_assert_int_eq(n, (int)strlen(out));
}
END_TEST

START_TEST(xfcc_empty_fields_left_out)
{
    char out[64];
    ck_assert_int_eq(px_xfcc_build(out, sizeof(out), "", NULL, "spiffe://td/x"), 17);
    ck_assert_str_eq(out, "URI=spiffe://td/x");
    ck_assert_int_eq(px_xfcc_build(out, sizeof(out), NULL, NULL, NULL), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(xfcc_separators_quoted)
{
    char out[128];
    ck_assert_int_gt(px_xfcc_build(out, sizeof(out), "a;b", "h", "x,URI=\"y\\z\" w"), 0);
    ck_assert_str_eq(out, "By=\"a;b\";Hash=h;URI=\"x,URI=\\\"y\\\\z\\\" w\"");
}
END_TEST

START_TEST(xfcc_refusals)
{
    char out[32];
    ck_assert_int_eq(px_xfcc_build(out, sizeof(out), "a\r\nx: y", "h", "u"), -1);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(px_xfcc_build(out, sizeof(out), "a", "h", "\xc3\xa9"), -1);
    ck_assert_int_eq(px_xfcc_build(out, sizeof(out), "a", "h", "u\x7f"), -1);
    /* too long for the buffer, by one byte: "URI=" + 27 + NUL = 32 */
    ck_assert_int_eq(px_xfcc_build(out, sizeof(out), NULL, NULL, "123456789012345678901234567"),
                     31);
    ck_assert_int_eq(px_xfcc_build(out, sizeof(out), NULL, NULL, "1234567890123456789012345678"),
                     -1);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(px_xfcc_build(out, 0, NULL, NULL, NULL), -1);
}
END_TEST

TCase *tcase_xfcc(void)
{
    TCase *tc = tcase_create("xfcc");
    tcase_add_test(tc, xfcc_plain_ids);
    tcase_add_test(tc, xfcc_empty_fields_left_out);
    tcase_add_test(tc, xfcc_separators_quoted);
    tcase_add_test(tc, xfcc_refusals);
    return tc;
}

/* ---- px_https_url_split (proxy/upstream/upstream.c), TCase "url" --------------- */

TCase *tcase_url(void);

START_TEST(url_split_cases)
{
    static const struct {
        const char *url, *host, *port, *path;
    } ok[] = {
        {"https://cp.example.org", "cp.example.org", "443", "/"},
        {"https://cp.example.org:8443/bundle?x=1", "cp.example.org", "8443", "/bundle?x=1"},
        {"HTTPS://10.0.0.1/", "10.0.0.1", "443", "/"},
        {"https://[::1]:9443/check", "::1", "9443", "/check"},
        {"https://[fe80::1]", "fe80::1", "443", "/"},
    };
    static const char *const bad[] = {
        "http://cp.example.org", "https://", "https:///x", "https://:443/", "https://h:/x",
        "https://[::1", "https://[::1]x:80/", "https://h:123456789/",
    };
    char host[64], port[8];
    const char *path;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ck_assert_msg(px_https_url_split(ok[i].url, host, sizeof(host), port, sizeof(port),
                                         &path) == 0,
                      "%s", ok[i].url);
        ck_assert_str_eq(host, ok[i].host);
        ck_assert_str_eq(port, ok[i].port);
        ck_assert_str_eq(path, ok[i].path);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(px_https_url_split(bad[i], host, sizeof(host), port, sizeof(port), NULL) != 0,
                      "accepted %s", bad[i]);
    /* a host that does not fit is refused, not truncated */
    ck_assert_int_eq(px_https_url_split("https://abcdefgh/", host, 8, port, sizeof(port), NULL),
                     -1);
    ck_assert_int_eq(px_https_url_split("https://abcdefg/", host, 8, port, sizeof(port), NULL), 0);
}
END_TEST

TCase *tcase_url(void)
{
    TCase *tc = tcase_create("url");
    tcase_add_test(tc, url_split_cases);
    return tc;
}
