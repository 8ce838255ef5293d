/*
 * authority.c - px_authority_parse() (authority.h): RFC 3986 3.2.2 and
 * 3.2.3, narrowed to what a service name or an IP literal looks like.
 * Pure.
 */
#include "authority.h"

#include "fmt.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A dotted quad, each part 0..255 in decimal without leading zeros. */
static int ipv4_ok(const char *p, size_t n)
{
    size_t parts = 0, i = 0;
    while (i < n) {
        size_t start = i;
        unsigned v = 0;
        while (i < n && is_digit(p[i])) {
            v = v * 10 + (unsigned)(p[i] - '0');
            if (v > 255 || i - start >= 3)
                return 0;
            i++;
        }
        if (i == start || (i - start > 1 && p[start] == '0'))
            return 0;
        parts++;
        if (i < n) {
            if (p[i] != '.' || i + 1 == n)
                return 0;
            i++;
        }
    }
    return parts == 4;
}

/* reg-name: lowercase into out, one trailing dot dropped. Returns the
 * length, or 0 when it is not a name picket accepts. */
static size_t regname(const char *p, size_t n, char *out)
{
    size_t label = 0;
    int last_numeric = 1;
    if (n > 0 && p[n - 1] == '.')
        n--;
    if (n == 0 || n > PX_HOST_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '.') {
            if (label == 0)
                return 0; /* empty label: ".a", "a..b", "a.." */
            label = 0;
            last_numeric = 1;
            out[i] = c;
            continue;
        }
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        else if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '_'))
            return 0;
        if (!is_digit(c))
            last_numeric = 0;
        if (++label > 63)
            return 0;
        out[i] = c;
    }
    if (label == 0)
        return 0;
    if (last_numeric && !ipv4_ok(out, n))
        return 0; /* looks like an address: must be one (WHATWG URL host rule) */
    return n;
}

int px_authority_parse(const char *p, size_t n, struct px_authority *out)
{
    const char *hend;
    size_t hl;

    if (n == 0)
        return -1;
    if (p[0] == '[') {
        const char *rb = memchr(p, ']', n);
        char tmp[INET6_ADDRSTRLEN + 1];
        struct in6_addr a6;
        if (rb == NULL)
            return -1;
        hl = (size_t)(rb - p) - 1;
        if (hl == 0 || hl >= sizeof(tmp))
            return -1;
        memcpy(tmp, p + 1, hl);
        tmp[hl] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1 ||
            inet_ntop(AF_INET6, &a6, tmp, sizeof(tmp)) == NULL)
            return -1;
        /* inet_ntop's form is canonical (RFC 5952): "[0:0::1]" == "[::1]" */
        out->host_len = (size_t)snprintf(out->host, sizeof(out->host), "[%s]", tmp);
        hend = rb + 1;
    } else {
        const char *colon = memchr(p, ':', n);
        hend = colon != NULL ? colon : p + n;
        hl = regname(p, (size_t)(hend - p), out->host);
        if (hl == 0)
            return -1;
        out->host[hl] = '\0';
        out->host_len = hl;
    }
    out->port = 0;
    if (hend < p + n) {
        size_t digits = (size_t)(p + n - hend) - 1;
        unsigned v = 0;
        if (*hend != ':' || digits == 0 || digits > 5)
            return -1;
        for (size_t i = 1; i <= digits; i++) {
            if (!is_digit(hend[i]))
                return -1;
            v = v * 10 + (unsigned)(hend[i] - '0');
        }
        if (v == 0 || v > 65535)
            return -1;
        out->port = v;
    }
    memcpy(out->text, out->host, out->host_len);
    out->text_len = out->host_len;
    if (out->port != 0) { /* every request: no printf (a tenth of the parse) */
        out->text[out->text_len++] = ':';
        out->text_len += px_fmt_u64(out->text + out->text_len, out->port);
    }
    out->text[out->text_len] = '\0';
    return 0;
}

