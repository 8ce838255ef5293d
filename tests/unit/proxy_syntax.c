/*
 * proxy_syntax.c - TCase "syntax" of the proxy suite: the field syntax
 * helpers both HTTP/1.1 halves and the HTTP/2 half share
 * (proxy/base/hdrs.c): px_ows_trim, px_method_idempotent,
 * px_field_name_ok, px_field_value_ok, px_is_hop_by_hop and
 * px_field_alnum_or. Each byte 0x00..0xff is checked against an oracle
 * written out here from RFC 9110 5.1, 5.5 and 5.6.2, and the string tables
 * hold the edge bytes (NUL, HTAB, CR, LF, DEL, obs-text).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "hdrs.h"

TCase *tcase_syntax(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* A heap copy exactly n bytes long: a read past the end is an ASan report. */
static char *exact(const char *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(c);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* ---- oracles, from the RFC text rather than from hdrs.c ---------------- */

/* tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 *         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
static int is_tchar(unsigned c)
{
    static const char delims[] = "\"(),/:;<=>?@[\\]{}";
    if (c <= 0x20 || c >= 0x7f)
        return 0;
    return strchr(delims, (int)c) == NULL;
}

/* field-vchar = VCHAR / obs-text, plus SP and HTAB inside a value */
static int is_value_byte(unsigned c)
{
    return c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80;
}

static int is_alnum(unsigned c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* ---- every byte ---------------------------------------------------------- */

START_TEST(syntax_each_byte)
{
    unsigned c = (unsigned)_i;
    char b = (char)c;
    char three[3] = {'a', (char)c, 'b'};

    ck_assert_msg(px_field_name_ok(&b, 1) == is_tchar(c), "name byte 0x%02x", c);
    ck_assert_msg(px_field_name_ok(three, 3) == is_tchar(c), "name a<0x%02x>b", c);
    ck_assert_msg(px_field_value_ok(&b, 1) == is_value_byte(c), "value byte 0x%02x", c);
    ck_assert_msg(px_field_value_ok(three, 3) == is_value_byte(c), "value a<0x%02x>b", c);
    ck_assert_msg(px_field_alnum_or(&b, 1, "") == is_alnum(c), "alnum byte 0x%02x", c);
    ck_assert_msg(px_field_alnum_or(&b, 1, "-.") == (is_alnum(c) || c == '-' || c == '.'),
                  "alnum-or-\"-.\" byte 0x%02x", c);
}
END_TEST

/* ---- strings ------------------------------------------------------------- */

static const struct {
    const char *s;
    size_t n; /* bytes of s when it holds a NUL, else 0 (strlen) */
    int name_ok, value_ok;
} strings[] = {
    {"", 0, 0, 1}, /* an empty name is no name; an empty value is a value */
    {"x-a", 0, 1, 1},
    {"X-Custom_Name.v2~", 0, 1, 1},
    {"!#$%&'*+-.^_`|~09AZaz", 0, 1, 1},
    {"x a", 0, 0, 1},
    {" x", 0, 0, 1},
    {"x ", 0, 0, 1},
    {"x\ta", 0, 0, 1},
    {"x:a", 0, 0, 1},
    {"host:", 0, 0, 1},
    {"x(a)", 0, 0, 1},
    {"x\"a\"", 0, 0, 1},
    {"a/b", 0, 0, 1},
    {"a\0b", 3, 0, 0},
    {"\x00", 1, 0, 0},
    {"ab\x00", 3, 0, 0},
    {"a\rb", 0, 0, 0},
    {"a\nb", 0, 0, 0},
    {"a\r\nx-injected: 1", 0, 0, 0},
    {"\r\n", 0, 0, 0},
    {"a\x7f", 0, 0, 0},
    {"a\x1b[0m", 0, 0, 0},
    {"a\x0b", 0, 0, 0},
    {"a\x0c", 0, 0, 0},
    {"caf\xc3\xa9", 0, 0, 1}, /* UTF-8 is obs-text: fine in a value, never in a name */
    {"\x80", 0, 0, 1},
    {"\xff", 0, 0, 1},
    {"\x85", 0, 0, 1}, /* NEL is not a line break here */
    {"a b\tc", 0, 0, 1},
    {"\t", 0, 0, 1},
    {" ", 0, 0, 1},
};

START_TEST(syntax_strings)
{
    size_t n = strings[_i].n ? strings[_i].n : strlen(strings[_i].s);
    char *c = exact(strings[_i].s, n);
    ck_assert_msg(px_field_name_ok(c, n) == strings[_i].name_ok, "name row %d", _i);
    ck_assert_msg(px_field_value_ok(c, n) == strings[_i].value_ok, "value row %d", _i);
    free(c);
}
END_TEST

START_TEST(syntax_alnum_or)
{
    /* NUL is never accepted, even though strchr() finds the terminator of
     * every extra string */
    ck_assert_int_eq(px_field_alnum_or("a\x00", 2, "-"), 0);
    ck_assert_int_eq(px_field_alnum_or("\x00", 1, ""), 0);
    ck_assert_int_eq(px_field_alnum_or("", 0, ""), 1);
    ck_assert_int_eq(px_field_alnum_or("abc-1.2_3", 9, "-._"), 1);
    ck_assert_int_eq(px_field_alnum_or("abc-1.2_3", 9, "-."), 0);
    ck_assert_int_eq(px_field_alnum_or("a b", 3, "-"), 0);
    ck_assert_int_eq(px_field_alnum_or("a\xe9", 2, "-"), 0);
    /* only p[0..n) is read */
    ck_assert_int_eq(px_field_alnum_or("ab cd", 2, ""), 1);
}
END_TEST

/* ---- OWS ------------------------------------------------------------------- */

static const struct {
    const char *s;
    size_t n;
    size_t off, len; /* what is left: s[off..off+len) */
} ows[] = {
    {"", 0, 0, 0},
    {" ", 1, 0, 0}, /* all whitespace: empty (the offset does not matter) */
    {" \t \t", 4, 0, 0},
    {"a", 1, 0, 1},
    {" a", 2, 1, 1},
    {"a ", 2, 0, 1},
    {"\ta\t", 3, 1, 1},
    {" \t a b \t ", 9, 3, 3}, /* inner whitespace stays */
    {"\ra", 2, 0, 2},         /* CR, LF, VT, FF and NUL are not OWS */
    {"a\n", 2, 0, 2},
    {"\va\f", 3, 0, 3},
    {" \x00 ", 3, 1, 1},
    {"\240a\240", 3, 0, 3},         /* nor is a Latin-1 no-break space */
    {"  value  trailing", 9, 2, 5}, /* only s[0..n) is looked at */
};

START_TEST(syntax_ows_trim)
{
    char *c = exact(ows[_i].s, ows[_i].n);
    const char *p = c;
    size_t n = ows[_i].n;

    px_ows_trim(&p, &n);
    ck_assert_msg(n == ows[_i].len, "row %d: length %zu, want %zu", _i, n, ows[_i].len);
    if (ows[_i].len > 0)
        ck_assert_msg(p == c + ows[_i].off, "row %d: offset %td, want %zu", _i, p - c, ows[_i].off);
    ck_assert(p >= c && p + n <= c + ows[_i].n);
    free(c);
}
END_TEST

/* ---- methods and hop-by-hop names ----------------------------------------- */

static const struct {
    const char *m;
    int idempotent;
} methods[] = {
    /* clang-format off */
    {"GET", 1}, {"HEAD", 1}, {"OPTIONS", 1}, {"TRACE", 1}, {"PUT", 1}, {"DELETE", 1},
    {"POST", 0}, {"PATCH", 0}, {"CONNECT", 0},
    /* only RFC 9110's: other methods are never replayed */
    {"PROPFIND", 0}, {"LOCK", 0},
    /* methods are case-sensitive, and whole */
    {"get", 0}, {"Get", 0}, {"", 0}, {"GE", 0}, {"GETS", 0}, {"GET ", 0}, {" PUT", 0},
    {"DELETE\r", 0},
    /* clang-format on */
};

START_TEST(syntax_method_idempotent)
{
    ck_assert_msg(px_method_idempotent(methods[_i].m) == methods[_i].idempotent, "'%s'",
                  methods[_i].m);
}
END_TEST

static const struct {
    const char *name;
    size_t n; /* 0 = strlen */
    int hop;
} hops[] = {
    {"connection", 0, 1},
    {"keep-alive", 0, 1},
    {"proxy-connection", 0, 1},
    {"transfer-encoding", 0, 1},
    {"upgrade", 0, 1},
    {"te", 0, 1},
    {"http2-settings", 0, 1},
    {"proxy-authenticate", 0, 1},
    {"proxy-authorization", 0, 1},
    {"Connection", 0, 1}, /* any case */
    {"KEEP-ALIVE", 0, 1},
    {"Transfer-Encoding", 0, 1},
    {"TE", 0, 1},
    {"Proxy-Authorization", 0, 1},
    {"upgraded", 7, 1}, /* only name[0..n) */
    {"tea", 2, 1},
    {"connections", 0, 0},
    {"connectio", 0, 0},
    {"xonnection", 0, 0}, /* same length */
    {"t", 0, 0},
    {"tea", 0, 0},
    {"", 0, 0},
    {"keep_alive", 0, 0}, /* '_' spellings are px_field_class()'s business */
    {"transfer_encoding", 0, 0},
    {"trailer", 0, 0},
    {"host", 0, 0},
    {"content-length", 0, 0},
    {"authorization", 0, 0},
    {"proxy-authorizatio", 0, 0},
    {"proxy-authorizationx", 0, 0},
};

START_TEST(syntax_hop_by_hop)
{
    size_t n = hops[_i].n ? hops[_i].n : strlen(hops[_i].name);
    char *c = exact(hops[_i].name, n);
    ck_assert_msg(px_is_hop_by_hop(c, n) == hops[_i].hop, "%.*s", (int)n, hops[_i].name);
    free(c);
}
END_TEST

TCase *tcase_syntax(void)
{
    TCase *tc = tcase_create("syntax");
    tcase_add_loop_test(tc, syntax_each_byte, 0, 256);
    tcase_add_loop_test(tc, syntax_strings, 0, (int)N_ELEMS(strings));
    tcase_add_test(tc, syntax_alnum_or);
    tcase_add_loop_test(tc, syntax_ows_trim, 0, (int)N_ELEMS(ows));
    tcase_add_loop_test(tc, syntax_method_idempotent, 0, (int)N_ELEMS(methods));
    tcase_add_loop_test(tc, syntax_hop_by_hop, 0, (int)N_ELEMS(hops));
    return tc;
}
