/*
 * certs_spiffe_hostile.c - TCase "spiffe_hostile" of the certs suite: hostile
 * SPIFFE IDs against certs_spiffe_id_valid() and certs_spiffe_trust_domain(),
 * judged by the rules documented in certs/certs.h:
 *
 *   "spiffe://" (lowercase), a non-empty trust domain of [a-z0-9.-_] (so no
 *   port, userinfo, uppercase or percent-encoding), then zero or more
 *   "/segment" with segments non-empty, not "." or "..", made of
 *   [A-Za-z0-9.-_]; no trailing slash, no query or fragment; at most
 *   CERTS_SPIFFE_ID_MAX bytes in all and CERTS_TRUST_DOMAIN_MAX for the trust
 *   domain; s is not NUL-terminated and a NUL inside the range is invalid.
 *
 * Every input is copied into a heap buffer of exactly `len` bytes (no NUL
 * after it), so under ASan a read past `len` is a report, not luck.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "certs.h"

TCase *tcase_spiffe_hostile(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* sizeof(literal) - 1: the length including embedded NULs. */
#define L(s) (sizeof(s) - 1)

static const struct {
    const char *id;
    size_t len;       /* 0 = strlen(id); else the exact byte count (embedded NULs) */
    int ok;           /* expected certs_spiffe_id_valid() */
    size_t tdlen;     /* valid rows: expected trust domain length */
    const char *why;
} rows[] = {
    /* -- valid edge cases ------------------------------------------------ */
    {"spiffe://a", 0, 1, 1, "one-letter trust domain, no path"},
    {"spiffe://a/b", 0, 1, 1, "shortest id with a path"},
    {"spiffe://example.org", 0, 1, 11, "trust domain's own id"},
    {"spiffe://0/1", 0, 1, 1, "digits only"},
    {"spiffe://-/_", 0, 1, 1, "td of one '-' is within [a-z0-9.-_]"},
    {"spiffe://_._-/x", 0, 1, 4, "td of punctuation only"},
    {"spiffe://example.org./a", 0, 1, 12, "trailing dot in td: '.' is a td char"},
    {"spiffe://127.0.0.1/a", 0, 1, 9, "IPv4-looking td is only digits and dots"},
    {"spiffe://xn--caf-dma.example/a", 0, 1, 19, "punycode (A-label) td"},
    {"spiffe://example.org/...", 0, 1, 11, "'...' is not a dot segment"},
    {"spiffe://example.org/.a", 0, 1, 11, "leading dot in segment"},
    {"spiffe://example.org/a.", 0, 1, 11, "trailing dot in segment"},
    {"spiffe://example.org/..a", 0, 1, 11, "'..a' is not a dot segment"},
    {"spiffe://example.org/a..", 0, 1, 11, "'a..' is not a dot segment"},
    {"spiffe://example.org/.../a/.b./..c", 0, 1, 11, "dots around"},
    {"spiffe://example.org/ABC/Def", 0, 1, 11, "uppercase is fine in the path"},
    {"spiffe://example.org/-/_/.-_", 0, 1, 11, "punctuation-only segments"},
    {"spiffe://example.org/ns/default/sa/frontend", 0, 1, 11, "typical k8s id"},

    /* -- scheme ---------------------------------------------------------- */
    {"SPIFFE://example.org/a", 0, 0, 0, "uppercase scheme"},
    {"Spiffe://example.org/a", 0, 0, 0, "mixed-case scheme"},
    {"spiffE://example.org/a", 0, 0, 0, "one uppercase letter in scheme"},
    {"spiffe:example.org/a", 0, 0, 0, "no '//'"},
    {"spiffe:/example.org/a", 0, 0, 0, "one slash"},
    {"spiffe:\\\\example.org/a", 0, 0, 0, "backslashes for slashes"},
    {"spiffe//example.org/a", 0, 0, 0, "no colon"},
    {"spiffes://example.org/a", 0, 0, 0, "other scheme"},
    {"https://example.org/a", 0, 0, 0, "https scheme"},
    {"spiffe", 0, 0, 0, "scheme word only"},
    {"spiffe:/", 0, 0, 0, "truncated scheme"},
    {"", 0, 0, 0, "empty"},
    {" spiffe://example.org/a", 0, 0, 0, "leading space"},
    {"\tspiffe://example.org/a", 0, 0, 0, "leading tab"},
    {"\xef\xbb\xbfspiffe://example.org/a", 0, 0, 0, "UTF-8 BOM before scheme"},

    /* -- empty trust domain ----------------------------------------------- */
    {"spiffe://", 0, 0, 0, "scheme only"},
    {"spiffe:///", 0, 0, 0, "empty td, root"},
    {"spiffe:///a", 0, 0, 0, "empty td with path"},
    {"spiffe:////a", 0, 0, 0, "empty td, double slash"},

    /* -- trust domain characters ----------------------------------------- */
    {"spiffe://Example.org/a", 0, 0, 0, "uppercase td"},
    {"spiffe://EXAMPLE.ORG/a", 0, 0, 0, "all-uppercase td"},
    {"spiffe://example.org:8443/a", 0, 0, 0, "port"},
    {"spiffe://example.org:/a", 0, 0, 0, "empty port"},
    {"spiffe://example.org:8443", 0, 0, 0, "port, no path"},
    {"spiffe://user@example.org/a", 0, 0, 0, "userinfo"},
    {"spiffe://user:pw@example.org/a", 0, 0, 0, "userinfo with password"},
    {"spiffe://@example.org/a", 0, 0, 0, "empty userinfo"},
    {"spiffe://[::1]/a", 0, 0, 0, "IPv6 literal"},
    {"spiffe://[::1]:8443/a", 0, 0, 0, "IPv6 literal with port"},
    {"spiffe://[fe80::1%25eth0]/a", 0, 0, 0, "IPv6 literal with zone id"},
    {"spiffe://[127.0.0.1]/a", 0, 0, 0, "bracketed IPv4"},
    {"spiffe://ex%61mple.org/a", 0, 0, 0, "percent-encoded letter in td"},
    {"spiffe://example.org%2Fa/b", 0, 0, 0, "percent-encoded slash in td"},
    {"spiffe://example.org%2fevil.org/a", 0, 0, 0, "lowercase %2f in td"},
    {"spiffe://exa mple.org/a", 0, 0, 0, "space in td"},
    {"spiffe://example.org /a", 0, 0, 0, "trailing space in td"},
    {"spiffe://example.org\t/a", 0, 0, 0, "tab in td"},
    {"spiffe://example.org\r\n/a", 0, 0, 0, "CRLF in td"},
    {"spiffe://exa\x01mple.org/a", 0, 0, 0, "control char in td"},
    {"spiffe://example.org\x7f/a", 0, 0, 0, "DEL in td"},
    {"spiffe://exa\0mple.org/a", L("spiffe://exa\0mple.org/a"), 0, 0, "NUL in td"},
    {"spiffe://\0/a", L("spiffe://\0/a"), 0, 0, "td is one NUL"},
    {"spiffe://caf\xc3\xa9.org/a", 0, 0, 0, "UTF-8 e-acute in td"},
    {"spiffe://\xd0\xb5xample.org/a", 0, 0, 0, "Cyrillic homoglyph in td"},
    {"spiffe://example\xe3\x80\x82org/a", 0, 0, 0, "ideographic full stop in td"},
    {"spiffe://example.org\xef\xbc\x8f" "a", 0, 0, 0, "fullwidth solidus in td"},
    {"spiffe://exa\xc0\xafmple/a", 0, 0, 0, "overlong '/' in td"},
    {"spiffe://\x80/a", 0, 0, 0, "lone continuation byte td"},
    {"spiffe://\xff\xfe/a", 0, 0, 0, "0xff 0xfe td"},
    {"spiffe://example.org\\a", 0, 0, 0, "backslash after td"},
    {"spiffe://example.org?x=1", 0, 0, 0, "query on td"},
    {"spiffe://example.org#f", 0, 0, 0, "fragment on td"},
    {"spiffe://example.org?", 0, 0, 0, "empty query on td"},
    {"spiffe://example.org#", 0, 0, 0, "empty fragment on td"},
    {"spiffe://example.org;a/b", 0, 0, 0, "semicolon in td"},
    {"spiffe://*.example.org/a", 0, 0, 0, "wildcard td"},
    {"spiffe://example.org*/a", 0, 0, 0, "star in td"},

    /* -- path segments ----------------------------------------------------- */
    {"spiffe://example.org/", 0, 0, 0, "trailing slash, empty path"},
    {"spiffe://example.org/a/", 0, 0, 0, "trailing slash"},
    {"spiffe://example.org//a", 0, 0, 0, "double slash first"},
    {"spiffe://example.org/a//b", 0, 0, 0, "double slash inside"},
    {"spiffe://example.org/a///", 0, 0, 0, "triple slash at end"},
    {"spiffe://example.org/.", 0, 0, 0, "'.' only segment"},
    {"spiffe://example.org/..", 0, 0, 0, "'..' only segment"},
    {"spiffe://example.org/./a", 0, 0, 0, "'./' first"},
    {"spiffe://example.org/../a", 0, 0, 0, "'../' first"},
    {"spiffe://example.org/a/./b", 0, 0, 0, "'./' inside"},
    {"spiffe://example.org/a/../b", 0, 0, 0, "'../' inside"},
    {"spiffe://example.org/a/.", 0, 0, 0, "'.' last"},
    {"spiffe://example.org/a/..", 0, 0, 0, "'..' last"},
    {"spiffe://example.org/../../../etc/passwd", 0, 0, 0, "traversal"},
    {"spiffe://example.org/a/%2e%2e/b", 0, 0, 0, "encoded '..'"},
    {"spiffe://example.org/a%2Fb", 0, 0, 0, "encoded slash"},
    {"spiffe://example.org/a%2fb", 0, 0, 0, "encoded slash, lowercase"},
    {"spiffe://example.org/%41", 0, 0, 0, "encoded unreserved 'A'"},
    {"spiffe://example.org/a%", 0, 0, 0, "bare percent"},
    {"spiffe://example.org/a%zz", 0, 0, 0, "bad escape"},
    {"spiffe://example.org/a%00b", 0, 0, 0, "encoded NUL"},
    {"spiffe://example.org/a?x=1", 0, 0, 0, "query"},
    {"spiffe://example.org/a?", 0, 0, 0, "empty query"},
    {"spiffe://example.org/a#f", 0, 0, 0, "fragment"},
    {"spiffe://example.org/a#", 0, 0, 0, "empty fragment"},
    {"spiffe://example.org/a b", 0, 0, 0, "space in path"},
    {"spiffe://example.org/a ", 0, 0, 0, "trailing space"},
    {"spiffe://example.org/a\n", 0, 0, 0, "trailing newline"},
    {"spiffe://example.org/a\r\nX-Evil: 1", 0, 0, 0, "header injection"},
    {"spiffe://example.org/a\tb", 0, 0, 0, "tab in path"},
    {"spiffe://example.org/a\x1b[31m", 0, 0, 0, "ANSI escape in path"},
    {"spiffe://example.org/a\x7f", 0, 0, 0, "DEL in path"},
    {"spiffe://example.org/a\0b", L("spiffe://example.org/a\0b"), 0, 0, "NUL inside path"},
    {"spiffe://example.org/a\0", L("spiffe://example.org/a\0"), 0, 0, "trailing NUL counted"},
    {"spiffe://example.org/\0", L("spiffe://example.org/\0"), 0, 0, "segment is one NUL"},
    {"spiffe://example.org\0/a", L("spiffe://example.org\0/a"), 0, 0, "NUL ends td"},
    {"\0spiffe://example.org/a", L("\0spiffe://example.org/a"), 0, 0, "leading NUL"},
    {"spiffe://example.org/caf\xc3\xa9", 0, 0, 0, "UTF-8 in path"},
    {"spiffe://example.org/\xe2\x80\xae" "evil", 0, 0, 0, "RTL override in path"},
    {"spiffe://example.org/a\xef\xbc\x8f" "b", 0, 0, 0, "fullwidth solidus in path"},
    {"spiffe://example.org/a\xc0\xae\xc0\xae", 0, 0, 0, "overlong dots in path"},
    {"spiffe://example.org/\x80", 0, 0, 0, "lone continuation byte"},
    {"spiffe://example.org/\xff", 0, 0, 0, "0xff byte"},
    {"spiffe://example.org/a\\b", 0, 0, 0, "backslash in path"},
    {"spiffe://example.org/a\\..\\b", 0, 0, 0, "backslash traversal"},
    {"spiffe://example.org/a:b", 0, 0, 0, "colon in path"},
    {"spiffe://example.org/a@b", 0, 0, 0, "at sign in path"},
    {"spiffe://example.org/~a", 0, 0, 0, "tilde (not in [A-Za-z0-9.-_])"},
    {"spiffe://example.org/a+b", 0, 0, 0, "plus"},
    {"spiffe://example.org/a*", 0, 0, 0, "star (looks like a policy wildcard)"},
    {"spiffe://example.org/*", 0, 0, 0, "star segment"},
    {"spiffe://example.org/a;b=c", 0, 0, 0, "matrix params"},
    {"spiffe://example.org/a,b", 0, 0, 0, "comma (XFCC separator)"},
    {"spiffe://example.org/a\"b", 0, 0, 0, "double quote (XFCC quoting)"},
    {"spiffe://example.org/a=b", 0, 0, 0, "equals (XFCC key/value)"},
    {"spiffe://example.org/a'b", 0, 0, 0, "single quote"},
    {"spiffe://example.org/<a>", 0, 0, 0, "angle brackets"},
};

static char *copy_exact(const char *s, size_t len)
{
    char *b = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, s, len);
    return b;
}

START_TEST(test_hostile_row)
{
    size_t len = rows[_i].len ? rows[_i].len : strlen(rows[_i].id);
    char *b = copy_exact(rows[_i].id, len);
    const char *td = NULL;
    size_t tdlen = 0;
    int rc;

    ck_assert_msg(certs_spiffe_id_valid(b, len) == rows[_i].ok, "row %d (%s): want %s", _i,
                  rows[_i].why, rows[_i].ok ? "valid" : "invalid");
    rc = certs_spiffe_trust_domain(b, len, &td, &tdlen);
    if (rows[_i].ok) {
        ck_assert_msg(rc == 0, "row %d (%s): trust_domain rc %d", _i, rows[_i].why, rc);
        ck_assert_msg(td == b + 9, "row %d (%s): td does not point after the scheme", _i,
                      rows[_i].why);
        ck_assert_msg(tdlen == rows[_i].tdlen, "row %d (%s): tdlen %zu, want %zu", _i,
                      rows[_i].why, tdlen, rows[_i].tdlen);
        ck_assert_int_eq(certs_trust_domain_valid(td, tdlen), 1);
    } else {
        ck_assert_msg(rc == CERTS_ERR_INVALID, "row %d (%s): trust_domain rc %d", _i, rows[_i].why,
                      rc);
    }
    free(b);
}
END_TEST

/* A well-formed id of exactly n bytes: "spiffe://example.org/" then "/seg"
 * segments of 'a'..; the last byte is a path char, never '/'. */
static char *make_id(size_t n)
{
    static const char head[] = "spiffe://example.org/";
    char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    ck_assert(n > sizeof(head));
    memcpy(b, head, sizeof(head) - 1);
    for (size_t i = sizeof(head) - 1; i < n; i++)
        b[i] = ((i % 16) == 0 && i + 1 < n && b[i - 1] != '/') ? '/' : (char)('a' + i % 26);
    return b;
}

START_TEST(test_lengths_at_limit)
{
    /* exactly CERTS_SPIFFE_ID_MAX bytes: valid; one more: invalid */
    char *b = make_id(CERTS_SPIFFE_ID_MAX);
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX), 1);
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX - 1), 1);
    free(b);
    b = make_id(CERTS_SPIFFE_ID_MAX + 1);
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX + 1), 0);
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX), 1); /* prefix of it */
    {
        const char *td;
        size_t tdlen;
        ck_assert_int_eq(certs_spiffe_trust_domain(b, CERTS_SPIFFE_ID_MAX + 1, &td, &tdlen),
                         CERTS_ERR_INVALID);
    }
    free(b);

    /* one long segment, exactly at the limit and over it */
    b = malloc(CERTS_SPIFFE_ID_MAX + 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "spiffe://example.org/", 21);
    memset(b + 21, 'x', CERTS_SPIFFE_ID_MAX + 1 - 21);
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX), 1);
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX + 1), 0);
    /* a bad byte as the very last one at the limit is still seen */
    b[CERTS_SPIFFE_ID_MAX - 1] = '%';
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX), 0);
    b[CERTS_SPIFFE_ID_MAX - 1] = '/';
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX), 0); /* trailing slash */
    b[CERTS_SPIFFE_ID_MAX - 1] = '\0';
    ck_assert_int_eq(certs_spiffe_id_valid(b, CERTS_SPIFFE_ID_MAX), 0); /* NUL at the end */
    free(b);
}
END_TEST

START_TEST(test_very_long)
{
    /* 2049, 4096, 64 KiB and 1 MiB of otherwise valid id: all refused */
    static const size_t lens[] = {CERTS_SPIFFE_ID_MAX + 1, 4096, 65536, 1024 * 1024};
    for (size_t k = 0; k < N_ELEMS(lens); k++) {
        char *b = make_id(lens[k]);
        ck_assert_msg(certs_spiffe_id_valid(b, lens[k]) == 0, "len %zu", lens[k]);
        free(b);
    }
    /* a trust domain longer than the whole id limit, no path */
    {
        size_t n = CERTS_SPIFFE_ID_MAX + 100;
        char *b = malloc(n);
        ck_assert_ptr_nonnull(b);
        memcpy(b, "spiffe://", 9);
        memset(b + 9, 'a', n - 9);
        ck_assert_int_eq(certs_spiffe_id_valid(b, n), 0);
        free(b);
    }
}
END_TEST

START_TEST(test_trust_domain_limit)
{
    /* td of exactly CERTS_TRUST_DOMAIN_MAX bytes: valid, with and without a path */
    size_t n = 9 + CERTS_TRUST_DOMAIN_MAX + 2;
    char *b = malloc(n + 1);
    const char *td;
    size_t tdlen;
    ck_assert_ptr_nonnull(b);
    memcpy(b, "spiffe://", 9);
    memset(b + 9, 'd', CERTS_TRUST_DOMAIN_MAX);
    memcpy(b + 9 + CERTS_TRUST_DOMAIN_MAX, "/p", 2);
    ck_assert_int_eq(certs_spiffe_id_valid(b, 9 + CERTS_TRUST_DOMAIN_MAX), 1);
    ck_assert_int_eq(certs_spiffe_id_valid(b, n), 1);
    ck_assert_int_eq(certs_spiffe_trust_domain(b, n, &td, &tdlen), 0);
    ck_assert_uint_eq(tdlen, CERTS_TRUST_DOMAIN_MAX);
    free(b);
    /* one more byte of td: invalid, with and without a path */
    n = 9 + CERTS_TRUST_DOMAIN_MAX + 1 + 2;
    b = malloc(n);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "spiffe://", 9);
    memset(b + 9, 'd', CERTS_TRUST_DOMAIN_MAX + 1);
    memcpy(b + 9 + CERTS_TRUST_DOMAIN_MAX + 1, "/p", 2);
    ck_assert_int_eq(certs_spiffe_id_valid(b, 9 + CERTS_TRUST_DOMAIN_MAX + 1), 0);
    ck_assert_int_eq(certs_spiffe_id_valid(b, n), 0);
    ck_assert_int_eq(certs_trust_domain_valid(b + 9, CERTS_TRUST_DOMAIN_MAX + 1), 0);
    ck_assert_int_eq(certs_trust_domain_valid(b + 9, CERTS_TRUST_DOMAIN_MAX), 1);
    ck_assert_int_eq(certs_trust_domain_valid(b + 9, 0), 0);
    free(b);
}
END_TEST

START_TEST(test_length_is_authoritative)
{
    /* s is not NUL-terminated: only s[0..len) counts */
    static const char id[] = "spiffe://example.org/a/b?query#frag";
    char *b = copy_exact(id, L(id));
    const char *td;
    size_t tdlen;
    ck_assert_int_eq(certs_spiffe_id_valid(b, L("spiffe://example.org/a/b")), 1);
    ck_assert_int_eq(certs_spiffe_id_valid(b, L("spiffe://example.org/a")), 1);
    ck_assert_int_eq(certs_spiffe_id_valid(b, L("spiffe://example.org")), 1);
    ck_assert_int_eq(certs_spiffe_id_valid(b, L("spiffe://example.org/")), 0); /* trailing / */
    ck_assert_int_eq(certs_spiffe_id_valid(b, L("spiffe://example.org/a/b?")), 0);
    ck_assert_int_eq(certs_spiffe_id_valid(b, L(id)), 0);
    ck_assert_int_eq(certs_spiffe_id_valid(b, L("spiffe://")), 0);
    ck_assert_int_eq(certs_spiffe_id_valid(b, L("spiffe:/")), 0);
    ck_assert_int_eq(certs_spiffe_id_valid(b, 0), 0);
    ck_assert_int_eq(certs_spiffe_trust_domain(b, L("spiffe://exam"), &td, &tdlen), 0);
    ck_assert_uint_eq(tdlen, 4);
    free(b);
    ck_assert_int_eq(certs_spiffe_id_valid(NULL, 0), 0);
}
END_TEST

START_TEST(test_every_byte)
{
    /* each of the 256 byte values as the only byte of the td and of a path
     * segment: exactly the documented character classes pass */
    char td[] = "spiffe://?/a";
    char seg[] = "spiffe://example.org/a?b";
    for (int c = 0; c < 256; c++) {
        int td_ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
                    c == '_';
        int seg_ok = td_ok || (c >= 'A' && c <= 'Z');
        char *b;
        td[9] = (char)c;
        seg[22] = (char)c;
        b = copy_exact(td, L(td));
        /* '/' as the td byte makes an empty td */
        ck_assert_msg(certs_spiffe_id_valid(b, L(td)) == (c == '/' ? 0 : td_ok), "td byte 0x%02x",
                      c);
        free(b);
        b = copy_exact(seg, L(seg));
        /* '/' splits "a/b" into two valid segments */
        ck_assert_msg(certs_spiffe_id_valid(b, L(seg)) == (c == '/' ? 1 : seg_ok),
                      "path byte 0x%02x", c);
        free(b);
    }
}
END_TEST

TCase *tcase_spiffe_hostile(void)
{
    TCase *tc = tcase_create("spiffe_hostile");
    tcase_add_loop_test(tc, test_hostile_row, 0, (int)N_ELEMS(rows));
    tcase_add_test(tc, test_lengths_at_limit);
    tcase_add_test(tc, test_very_long);
    tcase_add_test(tc, test_trust_domain_limit);
    tcase_add_test(tc, test_length_is_authoritative);
    tcase_add_test(tc, test_every_byte);
    return tc;
}
