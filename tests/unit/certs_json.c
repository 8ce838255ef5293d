/*
 * certs_json.c - TCase "json" of the certs suite: the strict JSON check,
 * base64 and durations (certs/json.c).
 */
#include <check.h>
#include <string.h>

#include "certs.h"
#include "certs_json.h"

TCase *tcase_json(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
    const char *doc;
    size_t len; /* 0 = strlen */
    const char *want; /* NULL = accepted; else the expected "line:col: message" prefix */
} docs[] = {
    {"{}", 0, NULL},
    {"[1, -2.5e3, true, false, null, \"x\\u00e9\"]", 0, NULL},
    {"{\"a\":{\"b\":[{}]}}", 0, NULL},
    {"  7  ", 0, NULL},
    {"", 0, "1:1: unexpected end of JSON"},
    {"{\"a\":1,}", 0, "1:8: trailing comma"},
    {"[1,]", 0, "1:4: trailing comma"},
    {"[1,,2]", 0, "1:4: unexpected character"},
    {"{\"a\" \"b\"}", 0, "1:6: expected ':' after key"},
    {"{\"a\":01}", 0, "1:6: leading zero in number"},
    {"{\"a\":1]", 0, "1:7: expected ',' or '}'"},
    {"{\"a\":1}\0x", 9, "1:8: NUL byte in document"},
    {"{\"a\":1,\"a\":2}", 0, "1:8: duplicate key \"a\""},
    {"{\"revision\":1,", 0, "1:15: unexpected end of JSON"},
    {"{\n \"a\": tru\n}", 0, "2:7: unexpected character"},
    {"\"a\tb\"", 0, "1:3: control character in string"},
    {"\"\\x\"", 0, "1:3: bad escape in string"},
    {"\"\\u12g4\"", 0, "1:3: bad \\u escape"},
    {"[1] 2", 0, "1:5: trailing data after the JSON value"},
    {"{1:2}", 0, "1:2: expected a string key"},
    {"[1.]", 0, "1:4: bad number"},
    {"[-]", 0, "1:3: bad number"},
    {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
     "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
     0, "1:65: nesting too deep"},
};

START_TEST(test_json_strict)
{
    struct certs_json j;
    char err[256] = "";
    size_t len = docs[_i].len ? docs[_i].len : strlen(docs[_i].doc);
    int rc = certs_json_parse(&j, docs[_i].doc, len, 0, err, sizeof(err));
    if (docs[_i].want == NULL) {
        ck_assert_msg(rc == 0, "row %d: refused: %s", _i, err);
        certs_json_clear(&j);
    } else {
        ck_assert_msg(rc != 0, "row %d: accepted", _i);
        ck_assert_msg(strncmp(err, docs[_i].want, strlen(docs[_i].want)) == 0,
                      "row %d: got '%s', want '%s'", _i, err, docs[_i].want);
    }
}
END_TEST

static const struct {
    const char *in;
    long want; /* decoded length, -1 = refused */
} b64[] = {
    {"", 0},          {"QQ==", 1},  {"QQ", 1},     {"QUI=", 2},  {"QUJD", 3},
    {"aGVsbG8", 5},   {"_-8=", 2},  {"QR==", -1},  {"QUJD=", -1}, {"=", -1},
    {"Q", -1},        {"QQ=", -1},  {"Q===", -1},  {"QQ==QQ==", -1}, {"Q Q=", -1},
};

START_TEST(test_b64_decode)
{
    unsigned char out[16];
    long n = certs_b64_decode(b64[_i].in, strlen(b64[_i].in), out, sizeof(out));
    ck_assert_msg(n == b64[_i].want, "'%s': got %ld want %ld", b64[_i].in, n, b64[_i].want);
}
END_TEST

START_TEST(test_b64_round_trip)
{
    unsigned char in[64], out[64];
    char enc[100];
    for (size_t len = 0; len < sizeof(in); len++) {
        for (size_t i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 37 + len);
        size_t n = certs_b64_encode(in, len, enc);
        ck_assert_uint_eq(n, 4 * ((len + 2) / 3));
        ck_assert_int_eq(certs_b64_decode(enc, n, out, sizeof(out)), (long)len);
        ck_assert(memcmp(in, out, len) == 0);
    }
}
END_TEST

static const struct {
    const char *in;
    int ok;
    long long ms;
} durations[] = {
    {"250ms", 1, 250},   {"10s", 1, 10000}, {"5m", 1, 300000}, {"24h", 1, 86400000},
    {"1h30m", 1, 5400000}, {"1.5s", 1, 1500}, {"0", 1, 0},     {"0s", 1, 0},
    {"", 0, 0},          {"10", 0, 0},      {"1.s", 0, 0},     {"s", 0, 0},
    {"5x", 0, 0},        {"-1s", 0, 0},     {"1..5s", 0, 0},   {"1000000000h", 0, 0},
};

START_TEST(test_duration)
{
    int64_t ms = -1;
    int rc = certs_duration_parse(durations[_i].in, strlen(durations[_i].in), &ms);
    ck_assert_msg((rc == 0) == durations[_i].ok, "'%s': rc %d", durations[_i].in, rc);
    if (durations[_i].ok)
        ck_assert_int_eq(ms, durations[_i].ms);
}
END_TEST

/* Keys and values are looked up by what they mean, not how they are
 * spelled: a reader that compared raw text would skip "\u0075se" where
 * every other JSON reader sees "use" (a JWKS key's purpose, an envelope's
 * payload). */
static const struct {
    const char *doc, *key, *value; /* value NULL: the key is absent */
} lookups[] = {
    {"{\"use\":\"x509-svid\"}", "use", "x509-svid"},
    {"{\"\\u0075se\":\"x509-svid\"}", "use", "x509-svid"},
    {"{\"use\":\"x509\\u002dsvid\"}", "use", "x509-svid"},
    {"{\"a\\/b\":\"c\\/d\"}", "a/b", "c/d"},
    {"{\"\\u00e9\":\"\\u00E9\"}", "\xc3\xa9", "\xc3\xa9"},
    {"{\"usE\":\"x\"}", "use", NULL},
    {"{\"us\\u0065x\":\"x\"}", "use", NULL},
    {"{\"use\":\"x509-svid\\n\"}", "use", "x509-svid\n"},
};

START_TEST(test_json_lookup_unescaped)
{
    struct certs_json j;
    char err[128];
    int v;
    ck_assert_msg(certs_json_parse(&j, lookups[_i].doc, strlen(lookups[_i].doc), 64, err,
                                   sizeof(err)) == 0,
                  "%s: %s", lookups[_i].doc, err);
    v = certs_json_get(&j, 0, lookups[_i].key);
    if (lookups[_i].value == NULL) {
        ck_assert_msg(v < 0, "%s: found %s", lookups[_i].doc, lookups[_i].key);
    } else {
        ck_assert_msg(v > 0, "%s: %s not found", lookups[_i].doc, lookups[_i].key);
        ck_assert_msg(certs_json_eq(&j, v, lookups[_i].value), "%s: value differs",
                      lookups[_i].doc);
        ck_assert(!certs_json_eq(&j, v, "x509-svi"));
    }
    certs_json_clear(&j);
}
END_TEST

TCase *tcase_json(void)
{
    TCase *tc = tcase_create("json");
    tcase_add_loop_test(tc, test_json_strict, 0, (int)N_ELEMS(docs));
    tcase_add_loop_test(tc, test_b64_decode, 0, (int)N_ELEMS(b64));
    tcase_add_test(tc, test_b64_round_trip);
    tcase_add_loop_test(tc, test_json_lookup_unescaped, 0, (int)N_ELEMS(lookups));
    tcase_add_loop_test(tc, test_duration, 0, (int)N_ELEMS(durations));
    return tc;
}
