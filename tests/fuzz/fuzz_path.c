/*
 * fuzz_path.c - policy_path_normalize() (policy/path.c).
 *
 * This is the function every policy decision and every forwarded request
 * depends on, so it gets the strictest checks.
 *
 * Differential: ref_normalize() below is an independent reading of the
 * contract in policy.h, written another way (the path part is decoded into
 * a list of segments first, empty segments merged, then RFC 3986 5.2.4 dot
 * removal runs on that list with a stack). For every input both must agree
 * exactly: the same refusal code (the first offending byte from the left in
 * the path part, then in the query), or the same output bytes and the same
 * path length. So an output that is well-formed but means another path
 * (a segment dropped, a wrong pop, an escape decoded that must stay) fails.
 *
 * Also, for an accepted input:
 *   - idempotence: normalizing the output again gives the same bytes;
 *   - the path part starts with '/', has no "//", no "." or ".." segment, no
 *     raw '\', '#', NUL, control, space or 8-bit byte, and every '%' starts
 *     an uppercase escape that is neither %2F, %5C, %00 nor an unreserved
 *     character; the query is copied unchanged;
 *   - the buffer-size contract of policy.h, exactly: an output buffer of
 *     max(outlen, the path before dot removal) + 1 bytes always suffices (so
 *     exactly outlen + 1 when no dot segment was removed), giving the same
 *     bytes; outlen bytes give POLICY_PATH_TOO_LONG, never a truncated path.
 * A refused input never gives TOO_LONG with the documented 3 * inlen + 2.
 */
#include <string.h>

#include "fuzz_common.h"
#include "policy.h"

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_hex_upper(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static int hexv(unsigned char c)
{
    if (c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* ---- the reference normalizer ---------------------------------------------- */

struct seg {
    size_t off, len; /* into the decoded buffer */
};

/* Refusals that apply anywhere in the target (policy.h): '#', NUL, controls. */
static int ref_screen(unsigned char c)
{
    if (c == '#')
        return POLICY_PATH_FRAGMENT;
    if (c == 0)
        return POLICY_PATH_NUL;
    if (c < 0x20 || c == 0x7f)
        return POLICY_PATH_CONTROL;
    return 0;
}

/* Normalizes in[0..n) the reference way. On 0: *out (malloc'ed, NUL-terminated),
 * *outlen, *pathlen, and *predot = the length of the path with empty segments
 * merged but before dot segments are removed (what policy.h says a smaller
 * buffer must also hold). Else a POLICY_PATH_* code and *out NULL. */
static int ref_normalize(const unsigned char *in, size_t n, char **out, size_t *outlen,
                         size_t *pathlen, size_t *predot)
{
    static const char HEX[] = "0123456789ABCDEF";
    const unsigned char *q;
    size_t plen, nseg = 0, dlen = 0, o = 0, top = 0, merged = 0;
    char *dec = NULL, *res = NULL;
    struct seg *segs = NULL, *stack = NULL;
    int last_dir = 0, rc = 0;

    *out = NULL;
    if (n == 0 || in[0] != '/')
        return POLICY_PATH_NOT_ABSOLUTE;
    q = memchr(in, '?', n);
    plen = q != NULL ? (size_t)(q - in) : n;
    dec = malloc(3 * plen + 1);
    segs = calloc(plen + 1, sizeof(*segs));
    stack = calloc(plen + 1, sizeof(*stack));
    FUZZ_CHECK(dec != NULL && segs != NULL && stack != NULL);

    /* 1. decode the path part into segments (split at raw '/') */
    segs[0].off = 0;
    for (size_t i = 1; i <= plen; i++) {
        unsigned char c;
        if (i == plen || in[i] == '/') {
            segs[nseg].len = dlen - segs[nseg].off;
            nseg++;
            segs[nseg].off = dlen;
            continue;
        }
        c = in[i];
        if ((rc = ref_screen(c)) != 0)
            goto done;
        if (c == '\\') {
            rc = POLICY_PATH_BACKSLASH;
            goto done;
        }
        if (c == '%') {
            unsigned v;
            /* two hex digits, inside the path part ('/' and '?' are no hex digits,
             * so they are inside the segment too) */
            if (i + 2 >= plen || !is_hex(in[i + 1]) || !is_hex(in[i + 2])) {
                rc = POLICY_PATH_BAD_ESCAPE;
                goto done;
            }
            v = (unsigned)(hexv(in[i + 1]) * 16 + hexv(in[i + 2]));
            i += 2;
            if (v == 0) {
                rc = POLICY_PATH_ENC_NUL;
                goto done;
            }
            if (v == '/') {
                rc = POLICY_PATH_ENC_SLASH;
                goto done;
            }
            if (v == '\\') {
                rc = POLICY_PATH_ENC_BACKSLASH;
                goto done;
            }
            if (is_unreserved((unsigned char)v)) {
                dec[dlen++] = (char)v;
            } else {
                dec[dlen++] = '%';
                dec[dlen++] = HEX[v >> 4];
                dec[dlen++] = HEX[v & 15];
            }
            continue;
        }
        if (is_unreserved(c) || (c != 0 && strchr("!$&'()*+,;=:@", c) != NULL)) {
            dec[dlen++] = (char)c;
        } else {
            dec[dlen++] = '%';
            dec[dlen++] = HEX[c >> 4];
            dec[dlen++] = HEX[c & 15];
        }
    }
    /* 2. the query: copied as is, but '#', NUL and controls are refused */
    for (size_t i = plen; i < n; i++)
        if ((rc = ref_screen(in[i])) != 0)
            goto done;

    /* 3. merge empty segments; the path so far is "/" + the non-empty ones joined,
     * with a trailing '/' when the last segment was empty */
    for (size_t k = 0; k < nseg; k++)
        if (segs[k].len > 0)
            merged += 1 + segs[k].len;
    if (merged == 0)
        merged = 1;
    else if (segs[nseg - 1].len == 0)
        merged++;
    *predot = merged;

    /* 4. RFC 3986 5.2.4 on the segment list: "." is dropped, ".." pops; a path
     * whose last segment was empty, "." or ".." ends in '/' */
    for (size_t k = 0; k < nseg; k++) {
        const char *sp = dec + segs[k].off;
        size_t sl = segs[k].len;
        if (sl == 0 || (sl == 1 && sp[0] == '.')) {
            last_dir = 1;
        } else if (sl == 2 && sp[0] == '.' && sp[1] == '.') {
            if (top > 0)
                top--;
            last_dir = 1;
        } else {
            stack[top++] = segs[k];
            last_dir = 0;
        }
    }
    res = malloc(dlen + nseg + 2 + (n - plen) + 1);
    FUZZ_CHECK(res != NULL);
    for (size_t k = 0; k < top; k++) {
        res[o++] = '/';
        memcpy(res + o, dec + stack[k].off, stack[k].len);
        o += stack[k].len;
    }
    if (top == 0 || last_dir)
        res[o++] = '/';
    *pathlen = o;
    memcpy(res + o, in + plen, n - plen);
    o += n - plen;
    res[o] = '\0';
    *outlen = o;
    *out = res;
    res = NULL;
done:
    free(res);
    free(dec);
    free(segs);
    free(stack);
    return rc;
}

/* ---- structural checks of the output ----------------------------------------- */

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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t cap = 3 * size + 2, need;
    char *out = malloc(cap), *out2 = malloc(cap), *tight, *ref = NULL;
    size_t outlen = (size_t)-1, pathlen = (size_t)-1, outlen2 = 0, pathlen2 = 0;
    size_t routlen = 0, rpathlen = 0, predot = 0;
    int rc, rrc;

    FUZZ_CHECK(out != NULL && out2 != NULL);
    rc = policy_path_normalize(in, size, out, cap, &outlen, &pathlen);
    rrc = ref_normalize(data, size, &ref, &routlen, &rpathlen, &predot);
    FUZZ_CHECKF(rc == rrc, "'%.*s': picket says %s, the reference %s", (int)(size > 200 ? 200 : size),
                in, policy_path_error_name(rc), policy_path_error_name(rrc));
    if (rc != 0) {
        FUZZ_CHECKF(rc <= POLICY_PATH_NOT_ABSOLUTE && rc >= POLICY_PATH_TOO_LONG, "rc %d", rc);
        FUZZ_CHECKF(rc != POLICY_PATH_TOO_LONG, "too_long with the documented buffer size");
        FUZZ_CHECK(strcmp(policy_path_error_name(rc), "unknown") != 0);
        goto done;
    }
    FUZZ_CHECK(outlen < cap && pathlen <= outlen);
    FUZZ_CHECK(out[outlen] == '\0');
    /* the same path as the reference reads it, byte for byte */
    FUZZ_CHECKF(outlen == routlen && pathlen == rpathlen && memcmp(out, ref, outlen + 1) == 0,
                "'%.*s': picket gives '%s', the reference '%s'", (int)(size > 200 ? 200 : size), in,
                out, ref);
    check_path_part(out, pathlen);
    {
        const char *qm = memchr(in, '?', size);
        size_t inplen = qm != NULL ? (size_t)(qm - in) : size;
        FUZZ_CHECKF(outlen - pathlen == size - inplen &&
                        memcmp(out + pathlen, in + inplen, size - inplen) == 0,
                    "query changed");
    }

    /* Idempotence. */
    rc = policy_path_normalize(out, outlen, out2, cap, &outlen2, &pathlen2);
    FUZZ_CHECKF(rc == 0, "second pass refused '%s': %s", out, policy_path_error_name(rc));
    FUZZ_CHECKF(outlen2 == outlen && pathlen2 == pathlen && memcmp(out, out2, outlen + 1) == 0,
                "not idempotent: '%s' -> '%s'", out, out2);

    /* The buffer-size contract: max(outlen, predot) + 1 bytes suffice (so outlen + 1
     * when nothing was removed), exactly those bytes come out, nothing is written
     * past the buffer (it is malloc'ed to that size: ASan sees any overrun). */
    FUZZ_CHECKF(predot >= pathlen, "'%s': predot %zu < pathlen %zu", out, predot, pathlen);
    need = (outlen > predot ? outlen : predot) + 1;
    tight = malloc(need);
    FUZZ_CHECK(tight != NULL);
    rc = policy_path_normalize(in, size, tight, need, &outlen2, &pathlen2);
    FUZZ_CHECKF(rc == 0 && outlen2 == outlen && pathlen2 == pathlen &&
                    memcmp(tight, out, outlen + 1) == 0,
                "'%.*s': a buffer of %zu bytes (output %zu, path before dot removal %zu) gave %s",
                (int)(size > 200 ? 200 : size), in, need, outlen, predot, policy_path_error_name(rc));
    free(tight);
    /* One byte short of the output: refused, never truncated. */
    tight = malloc(outlen > 0 ? outlen : 1);
    FUZZ_CHECK(tight != NULL);
    rc = policy_path_normalize(in, size, tight, outlen, NULL, NULL);
    FUZZ_CHECKF(rc == POLICY_PATH_TOO_LONG, "outcap %zu for %zu bytes gave %d", outlen, outlen, rc);
    free(tight);

done:
    free(ref);
    free(out);
    free(out2);
    return 0;
}
