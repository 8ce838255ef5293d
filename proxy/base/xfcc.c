/*
 * xfcc.c - the x-forwarded-client-cert value picket writes for its app
 * (Envoy's format: https://www.envoyproxy.io/docs/envoy/latest/
 * configuration/http/http_conn_man/headers#x-forwarded-client-cert).
 *
 * One element, `By=<own SPIFFE ID>;Hash=<hex SHA-256 of the client cert
 * DER>;URI=<client SPIFFE ID>`. Valid SPIFFE IDs and hex never need
 * quoting, but the builder does not rely on its callers for that: a value
 * with a separator (`,` `;` `=`), a quote, a backslash or a space is
 * written double-quoted with `"` and `\` escaped, and a value with a
 * control byte, DEL or a non-ASCII byte is refused: a header value that an
 * app splits differently from us would let a caller forge an identity.
 */
#include "xfcc.h"

#include <string.h>

/* ' ' '"' ',' ';' '=' (all below 64) and '\\' make a value quoted. */
#define QUOTE_LOW ((1ULL << ' ') | (1ULL << '"') | (1ULL << ',') | (1ULL << ';') | (1ULL << '='))

static int needs_quote(unsigned c)
{
    return c < 64 ? (int)((QUOTE_LOW >> c) & 1) : c == '\\';
}

/* Appends key=value at out[*pos]; returns -1 on a refused byte or no room. */
static int put_field(char *out, size_t outlen, size_t *pos, const char *key, const char *v)
{
    const unsigned char *s = (const unsigned char *)v;
    size_t klen = strlen(key), p = *pos, n = 0, escapes = 0;
    int quote = 0;

    if (v == NULL || v[0] == '\0')
        return 0;
    for (; s[n] != '\0'; n++) {
        unsigned c = s[n];
        if (c - 0x20u >= 0x5fu) /* below 0x20, DEL, or not ASCII */
            return -1;
        if (needs_quote(c)) {
            quote = 1;
            escapes += c == '"' || c == '\\';
        }
    }
    /* [';'] key '=' ['"'] value with escapes ['"'] NUL */
    if (p + (p > 0) + klen + 1 + (quote ? 2u : 0u) + n + escapes + 1 > outlen)
        return -1;
    if (p > 0)
        out[p++] = ';';
    memcpy(out + p, key, klen);
    p += klen;
    out[p++] = '=';
    if (!quote) {
        memcpy(out + p, v, n);
        p += n;
    } else {
        out[p++] = '"';
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '"' || s[i] == '\\')
                out[p++] = '\\';
            out[p++] = (char)s[i];
        }
        out[p++] = '"';
    }
    out[p] = '\0';
    *pos = p;
    return 0;
}

int px_xfcc_build(char *out, size_t outlen, const char *by, const char *hash, const char *uri)
{
    size_t pos = 0;

    if (outlen == 0)
        return -1;
    out[0] = '\0';
    if (put_field(out, outlen, &pos, "By", by) != 0 ||
        put_field(out, outlen, &pos, "Hash", hash) != 0 ||
        put_field(out, outlen, &pos, "URI", uri) != 0) {
        out[0] = '\0';
        return -1;
    }
    return (int)pos;
}
