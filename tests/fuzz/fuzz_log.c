/*
 * fuzz_log.c - the audit log line (px_log_audit, proxy/base/log.c) with
 * arbitrary bytes in its string values.
 *
 * The input, cut to 2 KiB, is the record's query (explicit length, any
 * byte), and its bytes up to the first NUL are its method (a C string).
 * Invariants, on the line read back from the audit file:
 *   - one line: it ends with "}\n" and has no other newline;
 *   - it is one JSON object (certs_json_parse, no duplicate keys) whose
 *     "method" and "query" are strings;
 *   - unless the line says "truncated", each of the two values is, byte for
 *     byte, what an independent escaper written here makes of the input:
 *     `"` and `\` with a backslash, control bytes and DEL as \u00xx, valid
 *     UTF-8 copied except U+2028/U+2029 (\u2028, \u2029), and every byte
 *     that is not part of valid UTF-8 (bad lead or continuation,
 *     overlong, surrogate, above U+10FFFF) as \u00xx; a value longer than
 *     PX_LOG_VALUE_MAX escaped is cut, so it must be a prefix of that,
 *     ending on a whole character or escape.
 * The line writer checks 16 and 8 bytes at a time and copies the tails
 * of values overlapping; this target checks those paths against a byte
 * loop.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "certs.h"
#include "fuzz_common.h"
#include "log.h"

#define IN_MAX 2048

static char g_path[64];
static char *g_line;
static char *g_want;

/* Length of the valid UTF-8 sequence at s, 0 if there is none: decoded
 * first, then judged by its code point (the shortest form for its value,
 * not a surrogate, at most U+10FFFF), where log.c judges by lead byte. */
static size_t utf8_len(const unsigned char *s, size_t n, unsigned *cp)
{
    size_t len;
    unsigned v, min;
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2, v = s[0] & 0x1fu, min = 0x80;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3, v = s[0] & 0x0fu, min = 0x800;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4, v = s[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* The escaped form of s[0..n) into out (room for 6 * n); its length.
 * *at_cut is set when `cut` bytes of output end a character or an
 * escape (a place the writer may cut a long value). */
static size_t ref_escape(const unsigned char *s, size_t n, char *out, size_t cut, int *at_cut)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    *at_cut = cut == 0;
    while (i < n) {
        unsigned c = s[i], cp = 0;
        size_t len;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
            i++;
        } else if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
            i++;
        } else if (c >= 0x80 && (len = utf8_len(s + i, n - i, &cp)) != 0) {
            if (cp == 0x2028 || cp == 0x2029) {
                memcpy(out + o, cp == 0x2028 ? "\\u2028" : "\\u2029", 6);
                o += 6;
            } else {
                memcpy(out + o, s + i, len);
                o += len;
            }
            i += len;
        } else {
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
            i++;
        }
        if (o == cut)
            *at_cut = 1;
    }
    return o;
}

/* The raw text of the string value of `key` in object 0, as *p and *n. */
static void raw_value(const struct certs_json *j, const char *key, const char **p, size_t *n)
{
    int v = certs_json_get(j, 0, key);
    FUZZ_CHECKF(v > 0 && certs_json_is_str(j, v), "no string \"%s\"", key);
    *p = j->js + j->tok[v].start;
    *n = (size_t)(j->tok[v].end - j->tok[v].start);
}

/* The value of `key` as written (got) against the escape of the input:
 * equal, or, for a value cut to the line's limit, a prefix of it that ends
 * where one of its characters or escapes ends. */
static void check_value(const char *key, const char *got, size_t gn, const unsigned char *in,
                        size_t n, int truncated)
{
    int at_cut;
    size_t wn = ref_escape(in, n, g_want, gn, &at_cut);
    if (truncated)
        return;
    if (gn == wn) {
        FUZZ_CHECKF(memcmp(got, g_want, wn) == 0, "\"%s\" differs from the escape", key);
        return;
    }
    FUZZ_CHECKF(wn > PX_LOG_VALUE_MAX && gn < wn && memcmp(got, g_want, gn) == 0,
                "\"%s\": %zu bytes written, %zu escaped", key, gn, wn);
    FUZZ_CHECKF(at_cut, "\"%s\" cut inside a character or an escape, at %zu", key, gn);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    int fd;
    (void)argc;
    (void)argv;
    strcpy(g_path, "/tmp/fuzz_log.XXXXXX");
    fd = mkstemp(g_path);
    FUZZ_CHECK(fd >= 0);
    close(fd);
    FUZZ_CHECK(px_log_init(PX_LOG_ERROR, NULL, g_path, err, sizeof(err)) == 0);
    g_line = malloc(PX_LOG_LINE_MAX + 2);
    g_want = malloc(6 * IN_MAX + 1);
    FUZZ_CHECK(g_line != NULL && g_want != NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct px_audit_rec r;
    struct certs_json j = {0};
    char err[256], *method;
    const char *got;
    size_t n = size < IN_MAX ? size : IN_MAX, mlen = 0, len = 0, gn;
    ssize_t k;
    int fd, truncated;

    if (g_line == NULL)
        LLVMFuzzerInitialize(NULL, NULL);
    while (mlen < n && data[mlen] != 0)
        mlen++;
    method = malloc(mlen + 1);
    FUZZ_CHECK(method != NULL);
    memcpy(method, data, mlen);
    method[mlen] = '\0';

    memset(&r, 0, sizeof(r));
    r.ts_ms = 1;
    r.decision = "allow";
    r.method = method;
    r.query = (const char *)data;
    r.query_len = n;
    r.cache_age_ms = -1;
    FUZZ_CHECK(truncate(g_path, 0) == 0);
    FUZZ_CHECK(px_log_audit(&r) == 0);
    free(method);

    fd = open(g_path, O_RDONLY);
    FUZZ_CHECK(fd >= 0);
    while ((k = read(fd, g_line + len, PX_LOG_LINE_MAX + 1 - len)) > 0)
        len += (size_t)k;
    close(fd);
    FUZZ_CHECKF(len >= 3 && len <= PX_LOG_LINE_MAX && g_line[len - 1] == '\n' &&
                    g_line[len - 2] == '}',
                "a line of %zu bytes", len);
    FUZZ_CHECK(memchr(g_line, '\n', len - 1) == NULL);
    FUZZ_CHECKF(certs_json_parse(&j, g_line, len - 1, 256, err, sizeof(err)) == 0, "%s", err);
    FUZZ_CHECK(j.ntok > 0 && certs_json_is_obj(&j, 0));
    truncated = certs_json_get(&j, 0, "truncated") > 0;

    raw_value(&j, "method", &got, &gn);
    check_value("method", got, gn, data, mlen, truncated);
    raw_value(&j, "query", &got, &gn);
    check_value("query", got, gn, data, n, truncated);
    certs_json_clear(&j);
    return 0;
}
