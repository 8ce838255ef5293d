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

static int needs_quote(unsigned char ch)
{
    return ch == ',' || ch == ';' || ch == '=' || ch == '"' || ch == '\\' || ch == ' ';
}

/* Appends key=value at out[*pos]; returns -1 on a refused byte or no room. */
static int put_field(char *out, size_t outlen, size_t *pos, const char *key, const char *v)
{
    size_t klen = strlen(key), p = *pos, vlen = 0;
    int quote = 0;

    if (v == NULL || v[0] == '\0')
        return 0;
    for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
        if (*s < 0x20 || *s >= 0x7f)
            return -1;
        quote |= needs_quote(*s);
        vlen += 1 + (*s == '"' || *s == '\\');
    }
    /* [';'] key '=' ['"'] value with escapes ['"'] NUL */
    if (p + (p > 0) + klen + 1 + (quote ? 2u : 0u) + vlen + 1 > outlen)
        return -1;
    if (p > 0)
        out[p++] = ';';
    memcpy(out + p, key, klen);
    p += klen;
    out[p++] = '=';
    if (quote)
        out[p++] = '"';
    for (const char *s = v; *s; s++) {
        if (quote && (*s == '"' || *s == '\\'))
            out[p++] = '\\';
        out[p++] = *s;
    }
    if (quote)
        out[p++] = '"';
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
