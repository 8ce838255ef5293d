/*
 * proxy_xfcc.c - TCase "xfcc" of the proxy suite: px_xfcc_build()
 * (proxy/xfcc.c), the x-forwarded-client-cert value written for the app.
 */
#include <check.h>
#include <string.h>

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
