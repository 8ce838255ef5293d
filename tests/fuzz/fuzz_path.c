/*
 * fuzz_path.c - policy_path_normalize() (policy/path.c).
 *
 * This is the function every policy decision and every forwarded request
 * depends on, so it gets the strictest checks. For an accepted input:
 *   - idempotence: normalizing the output again gives the same bytes, the
 *     same length and the same path length;
 *   - the path part starts with '/', has no "//", no "." or ".." segment
 *     (so no "/./", "/../" and no such trailing segment), no raw '\', '#',
 *     NUL, control, space or 8-bit byte, and every '%' starts an uppercase
 *     escape that is neither %2F, %5C, %00 nor an unreserved character;
 *   - pathlen <= outlen <= outcap - 1, out[outlen] == NUL, and the query
 *     (from the first '?') is copied unchanged;
 *   - the input had no '#', NUL or control byte anywhere and no raw '\' in
 *     its path part;
 *   - exactly outlen + 1 bytes of room suffice and outlen bytes give
 *     POLICY_PATH_TOO_LONG (never a truncated path).
 * A refused input gives a POLICY_PATH_* code with a name, never TOO_LONG
 * when the documented buffer size (3 * inlen + 2) is used.
 */
#include <string.h>

#include "fuzz_common.h"
#include "policy.h"

static int is_hex_upper(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static int hexv(unsigned char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static void check_path_part(const char *p, size_t n)
{
    size_t seg = 1;

    FUZZ_CHECK(n >= 1 && p[0] == '/');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        FUZZ_CHECKF(c > 0x20 && c < 0x7f && c != '\\' && c != '#' && c != '?' &&
                        strchr("\"<>[]^`{|}", c) == NULL,
                    "byte 0x%02x at %zu of '%.*s'", c, i, (int)n, p);
        if (c == '%') {
            int v;
            FUZZ_CHECKF(i + 2 < n && is_hex_upper((unsigned char)p[i + 1]) &&
                            is_hex_upper((unsigned char)p[i + 2]),
                        "escape at %zu of '%.*s'", i, (int)n, p);
            v = hexv((unsigned char)p[i + 1]) * 16 + hexv((unsigned char)p[i + 2]);
            FUZZ_CHECKF(v != 0 && v != '/' && v != '\\' && !is_unreserved((unsigned char)v),
                        "escape %%%c%c left in '%.*s'", p[i + 1], p[i + 2], (int)n, p);
        }
        if (c == '/' && i > 0) {
            size_t len = i - seg;
            FUZZ_CHECKF(len > 0, "empty segment at %zu of '%.*s'", i, (int)n, p);
            FUZZ_CHECKF(!(len == 1 && p[seg] == '.') && !(len == 2 && p[seg] == '.' && p[seg + 1] == '.'),
                        "dot segment at %zu of '%.*s'", seg, (int)n, p);
            seg = i + 1;
        }
    }
    /* Last segment: may be empty (trailing '/'), never "." or "..". */
    {
        size_t len = n - seg;
        FUZZ_CHECKF(!(len == 1 && p[seg] == '.') && !(len == 2 && p[seg] == '.' && p[seg + 1] == '.'),
                    "trailing dot segment in '%.*s'", (int)n, p);
    }
    FUZZ_CHECK(memmem(p, n, "//", 2) == NULL);
    FUZZ_CHECK(memmem(p, n, "/./", 3) == NULL);
    FUZZ_CHECK(memmem(p, n, "/../", 4) == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t cap = 3 * size + 2;
    char *out = malloc(cap), *out2 = malloc(cap), *tight;
    size_t outlen = (size_t)-1, pathlen = (size_t)-1, outlen2 = 0, pathlen2 = 0;
    const char *q;
    size_t inplen;
    int rc;

    FUZZ_CHECK(out != NULL && out2 != NULL);
    rc = policy_path_normalize(in, size, out, cap, &outlen, &pathlen);
    if (rc != 0) {
        FUZZ_CHECKF(rc <= POLICY_PATH_NOT_ABSOLUTE && rc >= POLICY_PATH_TOO_LONG, "rc %d", rc);
        FUZZ_CHECKF(rc != POLICY_PATH_TOO_LONG, "too_long with the documented buffer size");
        FUZZ_CHECK(strcmp(policy_path_error_name(rc), "unknown") != 0);
        goto done;
    }
    FUZZ_CHECK(outlen < cap && pathlen <= outlen);
    FUZZ_CHECK(out[outlen] == '\0');
    check_path_part(out, pathlen);

    /* What was accepted. */
    FUZZ_CHECK(size > 0 && in[0] == '/');
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)in[i];
        FUZZ_CHECK(c != '#' && c >= 0x20 && c != 0x7f);
    }
    q = memchr(in, '?', size);
    inplen = q != NULL ? (size_t)(q - in) : size;
    FUZZ_CHECK(memchr(in, '\\', inplen) == NULL);
    /* The query is copied untouched. */
    FUZZ_CHECKF(outlen - pathlen == size - inplen && memcmp(out + pathlen, in + inplen, size - inplen) == 0,
                "query changed");

    /* Idempotence. */
    rc = policy_path_normalize(out, outlen, out2, cap, &outlen2, &pathlen2);
    FUZZ_CHECKF(rc == 0, "second pass refused '%s': %s", out, policy_path_error_name(rc));
    FUZZ_CHECKF(outlen2 == outlen && pathlen2 == pathlen && memcmp(out, out2, outlen + 1) == 0,
                "not idempotent: '%s' -> '%s'", out, out2);

    /* Exact fit, then one byte short. The normalizer writes a segment
     * before it knows the segment is "." or "..", so an exact-size buffer
     * may be refused as too_long even though the result would fit (see
     * crashes-found/README.md); it must never be truncated or overrun. */
    tight = malloc(outlen + 1);
    FUZZ_CHECK(tight != NULL);
    rc = policy_path_normalize(in, size, tight, outlen + 1, &outlen2, NULL);
    FUZZ_CHECKF(rc == POLICY_PATH_TOO_LONG ||
                    (rc == 0 && outlen2 == outlen && memcmp(tight, out, outlen + 1) == 0),
                "exact-size buffer gave %d", rc);
    rc = policy_path_normalize(in, size, tight, outlen, NULL, NULL);
    FUZZ_CHECKF(rc == POLICY_PATH_TOO_LONG, "outcap %zu for %zu bytes gave %d", outlen, outlen, rc);
    free(tight);

done:
    free(out);
    free(out2);
    return 0;
}
