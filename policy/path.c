/*
 * path.c - HTTP :path normalization (DESIGN.md "Policy bundles": the path is
 * normalized before matching and the normalized path is what is forwarded),
 * plus the status-code names of the library.
 *
 * Why refuse rather than decode %2F, %5C and '\': a backend that decodes
 * them after us would see a different segment structure than the one our
 * rules matched ("/admin%2Fx" is one segment here and two there). Refusing
 * is the only answer that cannot disagree with some backend.
 *
 * Why merge empty segments before removing dot segments: "/a//../b" is
 * "/b" for servers that merge slashes (nginx default) and "/a/b" for those
 * that don't. Whatever we pick, we forward our result, so the backend sees
 * exactly the path we matched; merging first is the common reading.
 */
#include "policy.h"

#include <string.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* pchar minus unreserved and pct-encoded (RFC 3986 3.3): sub-delims, ':' '@' */
static int is_path_delim(unsigned char c)
{
    return c != '\0' && strchr("!$&'()*+,;=:@", c) != NULL;
}

static int is_control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Screens bytes that are refused anywhere in the target, path or query. */
static int screen(unsigned char c)
{
    if (c == '#')
        return POLICY_PATH_FRAGMENT;
    if (c == '\0')
        return POLICY_PATH_NUL;
    if (is_control(c))
        return POLICY_PATH_CONTROL;
    return 0;
}

static const char HEX[] = "0123456789ABCDEF";

/* Decodes one raw segment in[0..n) onto out at *o. */
static int put_segment(const unsigned char *in, size_t n, char *out, size_t cap, size_t *o)
{
    size_t w = *o;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = in[i];
        int rc = screen(c);
        if (rc != 0)
            return rc;
        if (c == '\\')
            return POLICY_PATH_BACKSLASH;
        if (c == '%') {
            int hi, lo;
            unsigned char v;
            if (n - i < 3 || (hi = hexval(in[i + 1])) < 0 || (lo = hexval(in[i + 2])) < 0)
                return POLICY_PATH_BAD_ESCAPE;
            v = (unsigned char)(hi * 16 + lo);
            i += 2;
            if (v == 0)
                return POLICY_PATH_ENC_NUL;
            if (v == '/')
                return POLICY_PATH_ENC_SLASH;
            if (v == '\\')
                return POLICY_PATH_ENC_BACKSLASH;
            if (is_unreserved(v)) {
                if (w >= cap)
                    return POLICY_PATH_TOO_LONG;
                out[w++] = (char)v;
            } else {
                if (cap - w < 3)
                    return POLICY_PATH_TOO_LONG;
                out[w++] = '%';
                out[w++] = HEX[v >> 4];
                out[w++] = HEX[v & 15];
            }
            continue;
        }
        if (is_unreserved(c) || is_path_delim(c)) {
            if (w >= cap)
                return POLICY_PATH_TOO_LONG;
            out[w++] = (char)c;
        } else {
            /* space, '"', '<', '>', '[', ']', '^', '`', '{', '|', '}', 8-bit */
            if (cap - w < 3)
                return POLICY_PATH_TOO_LONG;
            out[w++] = '%';
            out[w++] = HEX[c >> 4];
            out[w++] = HEX[c & 15];
        }
    }
    *o = w;
    return 0;
}

int policy_path_normalize(const char *in, size_t inlen, char *out, size_t outcap, size_t *outlen,
                          size_t *pathlen)
{
    const unsigned char *s = (const unsigned char *)in;
    const unsigned char *q;
    size_t plen, pos = 1, o = 0, cap;
    int dir = 0; /* last segment seen was empty, "." or "..": keep a trailing '/' */

    if (in == NULL || inlen == 0 || s[0] != '/')
        return POLICY_PATH_NOT_ABSOLUTE;
    if (out == NULL || outcap == 0)
        return POLICY_PATH_TOO_LONG;
    q = memchr(s, '?', inlen);
    plen = q != NULL ? (size_t)(q - s) : inlen;
    cap = outcap - 1; /* room for the NUL */

    /* One pass over segments; out holds "/seg/seg..." with no trailing '/'.
     * Since %2F is refused, every '/' in out is a real separator, so ".."
     * can pop by scanning back to the previous '/'. */
    while (pos <= plen) {
        const unsigned char *end = memchr(s + pos, '/', plen - pos);
        size_t e = end != NULL ? (size_t)(end - s) : plen;
        size_t start = o;
        int rc;

        if (o >= cap)
            return POLICY_PATH_TOO_LONG;
        out[o++] = '/';
        rc = put_segment(s + pos, e - pos, out, cap, &o);
        if (rc != 0)
            return rc;
        if (o - start == 1 || (o - start == 2 && out[start + 1] == '.')) {
            o = start; /* empty or "." */
            dir = 1;
        } else if (o - start == 3 && out[start + 1] == '.' && out[start + 2] == '.') {
            o = start;
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* drop the separator of the popped segment */
            dir = 1;
        } else {
            dir = 0;
        }
        pos = e + 1;
    }
    if (o == 0 || dir) {
        if (o >= cap)
            return POLICY_PATH_TOO_LONG;
        out[o++] = '/';
    }
    if (pathlen != NULL)
        *pathlen = o;
    for (size_t i = plen; i < inlen; i++) {
        int rc = screen(s[i]);
        if (rc != 0)
            return rc;
    }
    if (inlen - plen > cap - o)
        return POLICY_PATH_TOO_LONG;
    memcpy(out + o, s + plen, inlen - plen);
    o += inlen - plen;
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return 0;
}

const char *policy_path_error_name(int rc)
{
    switch (rc) {
    case 0: return "ok";
    case POLICY_PATH_NOT_ABSOLUTE: return "not_absolute";
    case POLICY_PATH_FRAGMENT: return "fragment";
    case POLICY_PATH_NUL: return "nul";
    case POLICY_PATH_CONTROL: return "control_char";
    case POLICY_PATH_BACKSLASH: return "backslash";
    case POLICY_PATH_ENC_SLASH: return "encoded_slash";
    case POLICY_PATH_ENC_BACKSLASH: return "encoded_backslash";
    case POLICY_PATH_ENC_NUL: return "encoded_nul";
    case POLICY_PATH_BAD_ESCAPE: return "bad_escape";
    case POLICY_PATH_TOO_LONG: return "too_long";
    default: return "unknown";
    }
}

const char *policy_strerror(int rc)
{
    switch (rc) {
    case POLICY_OK: return "success";
    case POLICY_ERR_NOMEM: return "out of memory";
    case POLICY_ERR_INVAL: return "invalid argument";
    case POLICY_ERR_TOO_LARGE: return "policy bundle too large";
    case POLICY_ERR_JSON: return "policy bundle is not valid JSON";
    case POLICY_ERR_BUNDLE: return "invalid policy bundle";
    case POLICY_ERR_NOSPACE: return "output buffer too small";
    case POLICY_PATH_NOT_ABSOLUTE: return "path does not start with '/'";
    case POLICY_PATH_FRAGMENT: return "fragment ('#') in request target";
    case POLICY_PATH_NUL: return "NUL byte in request target";
    case POLICY_PATH_CONTROL: return "control character in request target";
    case POLICY_PATH_BACKSLASH: return "backslash in path";
    case POLICY_PATH_ENC_SLASH: return "encoded '/' (%2F) in path";
    case POLICY_PATH_ENC_BACKSLASH: return "encoded '\\' (%5C) in path";
    case POLICY_PATH_ENC_NUL: return "encoded NUL (%00) in path";
    case POLICY_PATH_BAD_ESCAPE: return "malformed percent-escape in path";
    case POLICY_PATH_TOO_LONG: return "normalized path does not fit";
    default: return "unknown policy error";
    }
}

const char *policy_verdict_name(enum policy_verdict v)
{
    switch (v) {
    case POLICY_ALLOW: return "allow";
    case POLICY_DENY: return "deny";
    case POLICY_DISPATCH: return "dispatch";
    }
    return "unknown";
}
