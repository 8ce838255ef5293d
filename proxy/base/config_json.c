/*
 * config_json.c - the typed getters config.c's section parsers are built
 * from: strings, paths (resolved against the config's folder), durations,
 * integers, enums, SPIFFE IDs, https URLs, host:port and upstream URLs,
 * each read from a certs_json token and checked, and the error helpers
 * that name file:line:col and the key path of what was wrong.
 *
 * Owns no state: everything goes through the struct cp of the parse in
 * progress (config_int.h).
 */
#include "config_int.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int px_cfg_perr(struct cp *p, int tok, const char *fmt, ...)
{
    va_list ap;
    int line, col, n;

    certs_json_pos(&p->j, tok, &line, &col);
    n = snprintf(p->err, p->errlen, "%s:%d:%d: ", p->name, line, col);
    if (n >= 0 && (size_t)n < p->errlen) {
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* "where.key", or "key" at the top level. */
const char *px_cfg_kp(char *buf, const char *where, const char *key)
{
    snprintf(buf, WHERE_MAX, "%s%s%s", where, *where ? "." : "", key);
    return buf;
}

/* Raw text of token t for messages: truncated, non-printables as '?'. */
const char *px_cfg_show(const struct cp *p, int t, char *buf, size_t n)
{
    size_t len = (size_t)(p->j.tok[t].end - p->j.tok[t].start), i;
    const char *s = p->j.js + p->j.tok[t].start;

    if (len > n - 1)
        len = n - 1;
    for (i = 0; i < len; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    buf[len] = '\0';
    return buf;
}

int px_cfg_missing(struct cp *p, int obj, const char *where, const char *key)
{
    return px_cfg_perr(p, obj, "%s%smissing required key \"%s\"", where, *where ? ": " : "", key);
}

int px_cfg_oom(struct cp *p, int tok)
{
    return px_cfg_perr(p, tok, "out of memory");
}

/* Checks that obj is an object whose keys are all in `allowed` (NULL
 * terminated) and appear once. jsmn accepts `{"a"}`, so each key must also
 * carry exactly one value. */
int px_cfg_check_obj(struct cp *p, int obj, const char *where, const char *const *allowed)
{
    char b[64];
    unsigned seen = 0;
    int k;

    if (!certs_json_is_obj(&p->j, obj))
        return px_cfg_perr(p, obj, "%s%sexpected an object", where, *where ? ": " : "");
    for (k = certs_json_first(&p->j, obj); k > 0; k = certs_json_next_key(&p->j, k)) {
        unsigned i;
        if (!certs_json_is_str(&p->j, k) || p->j.tok[k].size != 1)
            return px_cfg_perr(p, k, "%s%sexpected \"key\": value", where, *where ? ": " : "");
        if (allowed == NULL)
            continue;
        for (i = 0; allowed[i] != NULL && !certs_json_eq(&p->j, k, allowed[i]); i++)
            ;
        if (allowed[i] == NULL)
            return px_cfg_perr(p, k, "%s%sunknown key \"%s\"", where, *where ? ": " : "",
                               px_cfg_show(p, k, b, sizeof(b)));
        if (seen & (1u << i))
            return px_cfg_perr(p, k, "%s%sduplicate key \"%s\"", where, *where ? ": " : "",
                               allowed[i]);
        seen |= 1u << i;
    }
    return 0;
}

/* For free-form maps: keys unique and at most MAX_MAP entries. Returns the
 * number of entries or -1. */
int px_cfg_check_map(struct cp *p, int obj, const char *where)
{
    char b[64];
    int n = 0;

    if (px_cfg_check_obj(p, obj, where, NULL) < 0)
        return -1;
    for (int k = certs_json_first(&p->j, obj); k > 0; k = certs_json_next_key(&p->j, k)) {
        size_t len = (size_t)(p->j.tok[k].end - p->j.tok[k].start);
        if (++n > MAX_MAP)
            return px_cfg_perr(p, k, "%s: too many entries (limit %d)", where, MAX_MAP);
        if (len == 0)
            return px_cfg_perr(p, k, "%s: empty key", where);
        for (int k2 = certs_json_first(&p->j, obj); k2 != k; k2 = certs_json_next_key(&p->j, k2))
            if ((size_t)(p->j.tok[k2].end - p->j.tok[k2].start) == len &&
                memcmp(p->j.js + p->j.tok[k2].start, p->j.js + p->j.tok[k].start, len) == 0)
                return px_cfg_perr(p, k, "%s: duplicate key \"%s\"", where,
                                   px_cfg_show(p, k, b, sizeof(b)));
    }
    return n;
}

/* Copies string token t into *out. Empty strings are refused. */
int px_cfg_tok_str(struct cp *p, int t, const char *what, char **out)
{
    if (!certs_json_is_str(&p->j, t))
        return px_cfg_perr(p, t, "%s: expected a string", what);
    if (p->j.tok[t].end == p->j.tok[t].start)
        return px_cfg_perr(p, t, "%s: must not be empty", what);
    *out = certs_json_strdup(&p->j, t);
    if (*out == NULL)
        return px_cfg_perr(p, t, "%s: bad escape in string (or out of memory)", what);
    return 0;
}

/* Optional string key: returns its value token (> 0) and sets *out, 0 if
 * absent, -1 on error. */
int px_cfg_get_str(struct cp *p, int obj, const char *where, const char *key, char **out)
{
    char b[WHERE_MAX];
    int v = certs_json_get(&p->j, obj, key);

    if (v < 0)
        return 0;
    if (px_cfg_tok_str(p, v, px_cfg_kp(b, where, key), out) < 0)
        return -1;
    return v;
}

int px_cfg_need_str(struct cp *p, int obj, const char *where, const char *key, char **out)
{
    int v = px_cfg_get_str(p, obj, where, key, out);
    if (v == 0)
        return px_cfg_missing(p, obj, where, key);
    return v;
}

/* Relative paths are taken against the config file's directory, so a
 * config and its certs can move together. */
int px_cfg_resolve(struct cp *p, int tok, char **path)
{
    char *r;

    if (*path == NULL || (*path)[0] == '/' || p->dir == NULL || p->dir[0] == '\0')
        return 0;
    if (asprintf(&r, "%s/%s", p->dir, *path) < 0)
        return px_cfg_oom(p, tok);
    free(*path);
    *path = r;
    return 0;
}

int px_cfg_get_path(struct cp *p, int obj, const char *where, const char *key, char **out)
{
    int v = px_cfg_get_str(p, obj, where, key, out);
    if (v > 0 && px_cfg_resolve(p, v, out) < 0)
        return -1;
    return v;
}

static const char *fmt_dur(int64_t ms, char *buf, size_t n)
{
    if (ms > 0 && ms % 3600000 == 0)
        snprintf(buf, n, "%lldh", (long long)(ms / 3600000));
    else if (ms > 0 && ms % 60000 == 0)
        snprintf(buf, n, "%lldm", (long long)(ms / 60000));
    else if (ms > 0 && ms % 1000 == 0)
        snprintf(buf, n, "%llds", (long long)(ms / 1000));
    else
        snprintf(buf, n, "%lldms", (long long)ms);
    return buf;
}

/* Optional duration key; *ms keeps its default when absent. */
int px_cfg_get_dur(struct cp *p, int obj, const char *where, const char *key, int64_t *ms,
                   int64_t min, int64_t max)
{
    char b[WHERE_MAX], s[48], d1[24], d2[24];
    int v = certs_json_get(&p->j, obj, key);
    int64_t val;

    if (v < 0)
        return 0;
    if (!certs_json_is_str(&p->j, v) ||
        certs_duration_parse(p->j.js + p->j.tok[v].start,
                             (size_t)(p->j.tok[v].end - p->j.tok[v].start), &val) < 0)
        return px_cfg_perr(p, v, "%s: bad duration \"%s\" (use 250ms, 10s, 5m, 24h)",
                           px_cfg_kp(b, where, key), px_cfg_show(p, v, s, sizeof(s)));
    if (val < min || val > max)
        return px_cfg_perr(p, v, "%s: must be between %s and %s", px_cfg_kp(b, where, key),
                           fmt_dur(min, d1, sizeof(d1)), fmt_dur(max, d2, sizeof(d2)));
    *ms = val;
    return v;
}

int px_cfg_get_int(struct cp *p, int obj, const char *where, const char *key, int64_t *out,
                   int64_t min, int64_t max)
{
    char b[WHERE_MAX];
    int v = certs_json_get(&p->j, obj, key);
    int64_t val;

    if (v < 0)
        return 0;
    if (certs_json_int(&p->j, v, &val) < 0 || val < min || val > max)
        return px_cfg_perr(p, v, "%s: expected an integer between %lld and %lld",
                           px_cfg_kp(b, where, key), (long long)min, (long long)max);
    *out = val;
    return v;
}

int px_cfg_get_bool(struct cp *p, int obj, const char *where, const char *key, int *out)
{
    char b[WHERE_MAX];
    int v = certs_json_get(&p->j, obj, key);

    if (v < 0)
        return 0;
    if (certs_json_bool(&p->j, v, out) < 0)
        return px_cfg_perr(p, v, "%s: expected true or false", px_cfg_kp(b, where, key));
    return v;
}

/* names: NULL-terminated; *out = index. */
int px_cfg_get_enum(struct cp *p, int obj, const char *where, const char *key,
                    const char *const *names, int *out)
{
    char b[WHERE_MAX], list[128] = "";
    int v = certs_json_get(&p->j, obj, key);

    if (v < 0)
        return 0;
    for (int i = 0; names[i] != NULL; i++) {
        if (certs_json_eq(&p->j, v, names[i])) {
            *out = i;
            return v;
        }
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%s\"", i ? ", " : "",
                 names[i]);
    }
    return px_cfg_perr(p, v, "%s: expected one of %s", px_cfg_kp(b, where, key), list);
}

int px_cfg_is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '_';
}

/* "host:port" or "[v6]:port"; port 1..65535. Host is a name or literal. */
int px_cfg_parse_hostport(const char *s, char **host, char **port)
{
    const char *h = s, *he, *ps;
    unsigned char v6[16];
    long pn = 0;
    size_t i;

    if (s[0] == '[') {
        h = s + 1;
        he = strchr(h, ']');
        if (he == NULL || he[1] != ':')
            return -1;
        ps = he + 2;
    } else {
        he = strrchr(s, ':');
        if (he == NULL || memchr(s, ':', (size_t)(he - s)) != NULL)
            return -1; /* IPv6 literals need brackets */
        ps = he + 1;
    }
    if (he == h || he - h > 253)
        return -1;
    for (i = 0; ps[i] != '\0'; i++) {
        if (ps[i] < '0' || ps[i] > '9' || i >= 5)
            return -1;
        pn = pn * 10 + (ps[i] - '0');
    }
    if (i == 0 || pn < 1 || pn > 65535)
        return -1;
    *host = strndup(h, (size_t)(he - h));
    if (*host == NULL)
        return -1;
    if (s[0] == '[') {
        if (inet_pton(AF_INET6, *host, v6) != 1)
            goto bad;
    } else {
        for (i = 0; (*host)[i] != '\0'; i++)
            if (!px_cfg_is_name_char((*host)[i]))
                goto bad;
    }
    *port = strdup(ps);
    if (*port == NULL)
        goto bad;
    return 0;
bad:
    free(*host);
    *host = NULL;
    return -1;
}

/* "spiffe://td/path": lowercase trust domain, no empty, "." or ".."
 * segments, no query or fragment. certs/ does the full check on certs. */
static int spiffe_ok(const char *s)
{
    const char *q = s + 9, *seg;

    if (strncmp(s, "spiffe://", 9) != 0)
        return 0;
    for (; *q != '\0' && *q != '/'; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '.' || *q == '-' ||
              *q == '_'))
            return 0;
    if (q == s + 9)
        return 0;
    while (*q == '/') {
        seg = ++q;
        while (*q != '\0' && *q != '/') {
            if (!px_cfg_is_name_char(*q))
                return 0;
            q++;
        }
        if (q == seg || (q - seg == 1 && seg[0] == '.') ||
            (q - seg == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
    }
    return *q == '\0';
}

int px_cfg_spiffe_ok(const char *s)
{
    return spiffe_ok(s);
}

int px_cfg_get_spiffe(struct cp *p, int obj, const char *where, const char *key, char **out,
                      int required)
{
    char b[WHERE_MAX];
    int v = required ? px_cfg_need_str(p, obj, where, key, out)
                     : px_cfg_get_str(p, obj, where, key, out);

    if (v > 0 && !spiffe_ok(*out))
        return px_cfg_perr(p, v, "%s: expected a SPIFFE ID \"spiffe://trust-domain/path\"",
                           px_cfg_kp(b, where, key));
    return v;
}

int px_cfg_get_https(struct cp *p, int obj, const char *where, const char *key, char **out)
{
    char b[WHERE_MAX];
    int v = px_cfg_need_str(p, obj, where, key, out);

    if (v > 0 && (strncmp(*out, "https://", 8) != 0 || (*out)[8] == '\0' || (*out)[8] == '/'))
        return px_cfg_perr(p, v, "%s: expected an \"https://host/...\" URL",
                           px_cfg_kp(b, where, key));
    return v;
}

int px_cfg_parse_url(const char *s, struct px_upstream_addr *u)
{
    const char *rest;

    if (strncmp(s, "h2c://", 6) == 0) {
        u->proto = PX_UP_H2C;
        rest = s + 6;
    } else if (strncmp(s, "http://", 7) == 0) {
        u->proto = PX_UP_H1;
        rest = s + 7;
    } else {
        return -1;
    }
    if (px_cfg_parse_hostport(rest, &u->host, &u->port) < 0)
        return -1;
    u->url = strdup(s);
    return u->url == NULL ? -1 : 0;
}
