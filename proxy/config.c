/*
 * config.c - parses and validates the daemon's JSON config (DESIGN.md
 * "Config") into an immutable struct px_config.
 *
 * Every key of the documented config is known here and anything else is
 * refused: a typo such as "max_staleness" spelled "max_stalenes" must not
 * silently leave a security setting at its default. Errors name the file,
 * the line and column of the offending token and its key path
 * ("picket.json:12:17: listeners[0].bind: expected \"host:port\""); a
 * missing key points at the object that should hold it.
 *
 * Parsing goes through certs_json (jsmn with a fixed token budget); the file
 * is capped at PX_CONFIG_MAX_FILE before it is read. Maps whose size the
 * file controls (trust_bundles, signing_keys, dispatch) are capped at
 * MAX_MAP entries so the duplicate-key check stays cheap.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "certs.h"

#define MAX_TOKENS 65536
#define MAX_MAP 64     /* entries in trust_bundles, signing_keys, dispatch */
#define MAX_ROUTES 1024
#define MAX_LISTENERS 64
#define WHERE_MAX 160

struct cp {
    struct certs_json j;
    const char *name; /* file name for messages */
    const char *dir;  /* base for relative paths, NULL = leave relative */
    char *err;
    size_t errlen;
    struct px_config *cfg;
    int identity_tok; /* the identity object, or 0 (the root) */
};

static int perr(struct cp *p, int tok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int perr(struct cp *p, int tok, const char *fmt, ...)
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
static const char *kp(char *buf, const char *where, const char *key)
{
    snprintf(buf, WHERE_MAX, "%s%s%s", where, *where ? "." : "", key);
    return buf;
}

/* Raw text of token t for messages: truncated, non-printables as '?'. */
static const char *show(const struct cp *p, int t, char *buf, size_t n)
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

static int missing(struct cp *p, int obj, const char *where, const char *key)
{
    return perr(p, obj, "%s%smissing required key \"%s\"", where, *where ? ": " : "", key);
}

static int oom(struct cp *p, int tok)
{
    return perr(p, tok, "out of memory");
}

/* Checks that obj is an object whose keys are all in `allowed` (NULL
 * terminated) and appear once. jsmn accepts `{"a"}`, so each key must also
 * carry exactly one value. */
static int check_obj(struct cp *p, int obj, const char *where, const char *const *allowed)
{
    char b[64];
    unsigned seen = 0;
    int k;

    if (!certs_json_is_obj(&p->j, obj))
        return perr(p, obj, "%s%sexpected an object", where, *where ? ": " : "");
    for (k = certs_json_first(&p->j, obj); k > 0; k = certs_json_next_key(&p->j, k)) {
        unsigned i;
        if (!certs_json_is_str(&p->j, k) || p->j.tok[k].size != 1)
            return perr(p, k, "%s%sexpected \"key\": value", where, *where ? ": " : "");
        if (allowed == NULL)
            continue;
        for (i = 0; allowed[i] != NULL && !certs_json_eq(&p->j, k, allowed[i]); i++)
            ;
        if (allowed[i] == NULL)
            return perr(p, k, "%s%sunknown key \"%s\"", where, *where ? ": " : "",
                        show(p, k, b, sizeof(b)));
        if (seen & (1u << i))
            return perr(p, k, "%s%sduplicate key \"%s\"", where, *where ? ": " : "", allowed[i]);
        seen |= 1u << i;
    }
    return 0;
}

/* For free-form maps: keys unique and at most MAX_MAP entries. Returns the
 * number of entries or -1. */
static int check_map(struct cp *p, int obj, const char *where)
{
    char b[64];
    int n = 0;

    if (check_obj(p, obj, where, NULL) < 0)
        return -1;
    for (int k = certs_json_first(&p->j, obj); k > 0; k = certs_json_next_key(&p->j, k)) {
        size_t len = (size_t)(p->j.tok[k].end - p->j.tok[k].start);
        if (++n > MAX_MAP)
            return perr(p, k, "%s: too many entries (limit %d)", where, MAX_MAP);
        if (len == 0)
            return perr(p, k, "%s: empty key", where);
        for (int k2 = certs_json_first(&p->j, obj); k2 != k; k2 = certs_json_next_key(&p->j, k2))
            if ((size_t)(p->j.tok[k2].end - p->j.tok[k2].start) == len &&
                memcmp(p->j.js + p->j.tok[k2].start, p->j.js + p->j.tok[k].start, len) == 0)
                return perr(p, k, "%s: duplicate key \"%s\"", where, show(p, k, b, sizeof(b)));
    }
    return n;
}

/* Copies string token t into *out. Empty strings are refused. */
static int tok_str(struct cp *p, int t, const char *what, char **out)
{
    if (!certs_json_is_str(&p->j, t))
        return perr(p, t, "%s: expected a string", what);
    if (p->j.tok[t].end == p->j.tok[t].start)
        return perr(p, t, "%s: must not be empty", what);
    *out = certs_json_strdup(&p->j, t);
    if (*out == NULL)
        return perr(p, t, "%s: bad escape in string (or out of memory)", what);
    return 0;
}

/* Optional string key: returns its value token (> 0) and sets *out, 0 if
 * absent, -1 on error. */
static int get_str(struct cp *p, int obj, const char *where, const char *key, char **out)
{
    char b[WHERE_MAX];
    int v = certs_json_get(&p->j, obj, key);

    if (v < 0)
        return 0;
    if (tok_str(p, v, kp(b, where, key), out) < 0)
        return -1;
    return v;
}

static int need_str(struct cp *p, int obj, const char *where, const char *key, char **out)
{
    int v = get_str(p, obj, where, key, out);
    if (v == 0)
        return missing(p, obj, where, key);
    return v;
}

/* Relative paths are taken against the config file's directory, so a
 * config and its certs can move together. */
static int resolve(struct cp *p, int tok, char **path)
{
    char *r;

    if (*path == NULL || (*path)[0] == '/' || p->dir == NULL || p->dir[0] == '\0')
        return 0;
    if (asprintf(&r, "%s/%s", p->dir, *path) < 0)
        return oom(p, tok);
    free(*path);
    *path = r;
    return 0;
}

static int get_path(struct cp *p, int obj, const char *where, const char *key, char **out)
{
    int v = get_str(p, obj, where, key, out);
    if (v > 0 && resolve(p, v, out) < 0)
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
static int get_dur(struct cp *p, int obj, const char *where, const char *key, int64_t *ms,
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
        return perr(p, v, "%s: bad duration \"%s\" (use 250ms, 10s, 5m, 24h)", kp(b, where, key),
                    show(p, v, s, sizeof(s)));
    if (val < min || val > max)
        return perr(p, v, "%s: must be between %s and %s", kp(b, where, key),
                    fmt_dur(min, d1, sizeof(d1)), fmt_dur(max, d2, sizeof(d2)));
    *ms = val;
    return v;
}

static int get_int(struct cp *p, int obj, const char *where, const char *key, int64_t *out,
                   int64_t min, int64_t max)
{
    char b[WHERE_MAX];
    int v = certs_json_get(&p->j, obj, key);
    int64_t val;

    if (v < 0)
        return 0;
    if (certs_json_int(&p->j, v, &val) < 0 || val < min || val > max)
        return perr(p, v, "%s: expected an integer between %lld and %lld", kp(b, where, key),
                    (long long)min, (long long)max);
    *out = val;
    return v;
}

/* names: NULL-terminated; *out = index. */
static int get_enum(struct cp *p, int obj, const char *where, const char *key,
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
    return perr(p, v, "%s: expected one of %s", kp(b, where, key), list);
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '_';
}

/* "host:port" or "[v6]:port"; port 1..65535. Host is a name or literal. */
static int parse_hostport(const char *s, char **host, char **port)
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
            if (!is_name_char((*host)[i]))
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
            if (!is_name_char(*q))
                return 0;
            q++;
        }
        if (q == seg || (q - seg == 1 && seg[0] == '.') ||
            (q - seg == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
    }
    return *q == '\0';
}

static int get_spiffe(struct cp *p, int obj, const char *where, const char *key, char **out,
                      int required)
{
    char b[WHERE_MAX];
    int v = required ? need_str(p, obj, where, key, out) : get_str(p, obj, where, key, out);

    if (v > 0 && !spiffe_ok(*out))
        return perr(p, v, "%s: expected a SPIFFE ID \"spiffe://trust-domain/path\"",
                    kp(b, where, key));
    return v;
}

static int get_https(struct cp *p, int obj, const char *where, const char *key, char **out)
{
    char b[WHERE_MAX];
    int v = need_str(p, obj, where, key, out);

    if (v > 0 && (strncmp(*out, "https://", 8) != 0 || (*out)[8] == '\0' || (*out)[8] == '/'))
        return perr(p, v, "%s: expected an \"https://host/...\" URL", kp(b, where, key));
    return v;
}

static int parse_url(const char *s, struct px_upstream_addr *u)
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
    if (parse_hostport(rest, &u->host, &u->port) < 0)
        return -1;
    u->url = strdup(s);
    return u->url == NULL ? -1 : 0;
}

static int parse_identity(struct cp *p, int obj)
{
    static const char *const keys[] = {"cert", "key", "trust_bundles", "max_svid_lifetime",
                                       "reload_interval", NULL};
    struct px_config *c = p->cfg;
    char b[64], what[WHERE_MAX];
    int tb, n;

    if (check_obj(p, obj, "identity", keys) < 0)
        return -1;
    p->identity_tok = obj;
    if (get_path(p, obj, "identity", "cert", &c->identity.cert) < 0 ||
        get_path(p, obj, "identity", "key", &c->identity.key) < 0)
        return -1;
    if ((c->identity.cert == NULL) != (c->identity.key == NULL))
        return missing(p, obj, "identity", c->identity.cert != NULL ? "key" : "cert");
    if (get_dur(p, obj, "identity", "max_svid_lifetime", &c->identity.max_svid_lifetime_ms, 60000,
                366LL * 86400000) < 0 ||
        get_dur(p, obj, "identity", "reload_interval", &c->identity.reload_interval_ms, 100,
                3600000) < 0)
        return -1;
    tb = certs_json_get(&p->j, obj, "trust_bundles");
    if (tb < 0)
        return 0;
    n = check_map(p, tb, "identity.trust_bundles");
    if (n < 0)
        return -1;
    c->identity.trust_bundles = calloc((size_t)n + 1, sizeof(*c->identity.trust_bundles));
    if (c->identity.trust_bundles == NULL)
        return oom(p, tb);
    for (int k = certs_json_first(&p->j, tb); k > 0; k = certs_json_next_key(&p->j, k)) {
        struct px_trust_domain_cfg *d = &c->identity.trust_bundles[c->identity.ntrust_bundles++];
        const char *s = p->j.js + p->j.tok[k].start;
        size_t sl = (size_t)(p->j.tok[k].end - p->j.tok[k].start);
        int lower = 1;
        for (size_t i = 0; i < sl; i++)
            if (s[i] >= 'A' && s[i] <= 'Z')
                lower = 0;
        /* One rule for trust domains: the certs module's (found by fuzzing:
         * an empty or over-long key passed here and failed there). */
        if (!lower || !certs_trust_domain_valid(s, sl))
            return perr(p, k,
                        "identity.trust_bundles: bad trust domain \"%s\" (1 to %d lowercase "
                        "letters, digits, '.', '-', '_')",
                        show(p, k, b, sizeof(b)), CERTS_TRUST_DOMAIN_MAX);
        d->trust_domain = strndup(s, (size_t)(p->j.tok[k].end - p->j.tok[k].start));
        if (d->trust_domain == NULL)
            return oom(p, k);
        snprintf(what, sizeof(what), "identity.trust_bundles.%s", d->trust_domain);
        if (tok_str(p, k + 1, what, &d->file) < 0 || resolve(p, k + 1, &d->file) < 0)
            return -1;
    }
    return 0;
}

static int parse_policy(struct cp *p, int obj)
{
    static const char *const keys[] = {"file",     "url",       "server_id",     "signing_keys",
                                       "poll_min", "poll_max",  "long_poll",     "cache_dir",
                                       "max_staleness", "on_stale", NULL};
    static const char *const stale[] = {"last_known_good", "deny", NULL}; /* index = deny */
    struct px_config *c = p->cfg;
    char what[WHERE_MAX];
    int vf, vu, vmin, vmax, sk, n;

    if (check_obj(p, obj, "policy", keys) < 0)
        return -1;
    if ((vf = get_path(p, obj, "policy", "file", &c->policy.file)) < 0)
        return -1;
    vu = certs_json_get(&p->j, obj, "url");
    if (vu >= 0 && vf > 0)
        return perr(p, vu, "policy: \"file\" and \"url\" are mutually exclusive");
    if (vu >= 0 && get_https(p, obj, "policy", "url", &c->policy.url) < 0)
        return -1;
    if (get_spiffe(p, obj, "policy", "server_id", &c->policy.server_id, vu >= 0) < 0)
        return -1;
    sk = certs_json_get(&p->j, obj, "signing_keys");
    if (sk < 0 && vu >= 0)
        return missing(p, obj, "policy", "signing_keys");
    if (sk >= 0) {
        if ((n = check_map(p, sk, "policy.signing_keys")) < 0)
            return -1;
        if (n == 0)
            return perr(p, sk, "policy.signing_keys: at least one key is required");
        c->policy.signing_key_ids = calloc((size_t)n, sizeof(char *));
        c->policy.signing_key_files = calloc((size_t)n, sizeof(char *));
        if (c->policy.signing_key_ids == NULL || c->policy.signing_key_files == NULL)
            return oom(p, sk);
        for (int k = certs_json_first(&p->j, sk); k > 0; k = certs_json_next_key(&p->j, k)) {
            size_t i = c->policy.nsigning_keys++;
            if (tok_str(p, k, "policy.signing_keys", &c->policy.signing_key_ids[i]) < 0)
                return -1;
            snprintf(what, sizeof(what), "policy.signing_keys.%s", c->policy.signing_key_ids[i]);
            if (tok_str(p, k + 1, what, &c->policy.signing_key_files[i]) < 0 ||
                resolve(p, k + 1, &c->policy.signing_key_files[i]) < 0)
                return -1;
        }
    }
    if ((vmin = get_dur(p, obj, "policy", "poll_min", &c->policy.poll_min_ms, 100, 86400000)) < 0 ||
        (vmax = get_dur(p, obj, "policy", "poll_max", &c->policy.poll_max_ms, 100, 86400000)) < 0 ||
        get_dur(p, obj, "policy", "long_poll", &c->policy.long_poll_ms, 0, 600000) < 0 ||
        get_dur(p, obj, "policy", "max_staleness", &c->policy.max_staleness_ms, 1000,
                366LL * 86400000) < 0 ||
        get_path(p, obj, "policy", "cache_dir", &c->policy.cache_dir) < 0 ||
        get_enum(p, obj, "policy", "on_stale", stale, &c->policy.on_stale_deny) < 0)
        return -1;
    if (c->policy.poll_min_ms > c->policy.poll_max_ms)
        return perr(p, vmax > 0 ? vmax : vmin, "policy: poll_min must not exceed poll_max");
    return 0;
}

static int header_ok(const char *s)
{
    for (; *s != '\0'; s++)
        if (!is_name_char(*s) || *s == '.')
            return 0;
    return 1;
}

static int parse_dispatch_one(struct cp *p, int k, struct px_dispatch_cfg *d)
{
    static const char *const keys[] = {"url", "timeout", "server_id", "cache_entries",
                                       "max_cache_ttl", "on_error", "headers", NULL};
    static const char *const on_err[] = {"deny", "allow", NULL}; /* index = allow */
    char where[WHERE_MAX], b[WHERE_MAX];
    int obj = k + 1, h, i = 0;

    if (tok_str(p, k, "dispatch", &d->name) < 0)
        return -1;
    if (strlen(d->name) > 64 || !header_ok(d->name))
        return perr(p, k, "dispatch: bad name \"%s\" (letters, digits, '-', '_')",
                    show(p, k, b, 64));
    snprintf(where, sizeof(where), "dispatch.%s", d->name);
    if (check_obj(p, obj, where, keys) < 0 || get_https(p, obj, where, "url", &d->url) < 0 ||
        get_spiffe(p, obj, where, "server_id", &d->server_id, 1) < 0 ||
        get_dur(p, obj, where, "timeout", &d->timeout_ms, 1, 60000) < 0 ||
        get_int(p, obj, where, "cache_entries", &d->cache_entries, 0, 10000000) < 0 ||
        get_dur(p, obj, where, "max_cache_ttl", &d->max_cache_ttl_ms, 0, 86400000) < 0 ||
        get_enum(p, obj, where, "on_error", on_err, &d->on_error_allow) < 0)
        return -1;
    h = certs_json_get(&p->j, obj, "headers");
    if (h < 0)
        return 0;
    if (!certs_json_is_arr(&p->j, h) || p->j.tok[h].size > MAX_MAP)
        return perr(p, h, "%s.headers: expected an array of at most %d header names", where,
                    MAX_MAP);
    d->headers = calloc((size_t)p->j.tok[h].size + 1, sizeof(char *));
    if (d->headers == NULL)
        return oom(p, h);
    for (int e = certs_json_first(&p->j, h); e > 0; e = certs_json_next_elem(&p->j, e), i++) {
        char *s;
        snprintf(b, sizeof(b), "%.120s.headers[%d]", where, i);
        if (tok_str(p, e, b, &d->headers[d->nheaders]) < 0)
            return -1;
        s = d->headers[d->nheaders++];
        if (!header_ok(s))
            return perr(p, e, "%s: bad header name", b);
        for (; *s != '\0'; s++)
            if (*s >= 'A' && *s <= 'Z')
                *s = (char)(*s - 'A' + 'a');
    }
    return 0;
}

static int parse_dispatch(struct cp *p, int obj)
{
    struct px_config *c = p->cfg;
    int n = check_map(p, obj, "dispatch");

    if (n < 0)
        return -1;
    c->dispatch = calloc((size_t)n + 1, sizeof(*c->dispatch));
    if (c->dispatch == NULL)
        return oom(p, obj);
    for (int k = certs_json_first(&p->j, obj); k > 0; k = certs_json_next_key(&p->j, k)) {
        struct px_dispatch_cfg *d = &c->dispatch[c->ndispatch++];
        d->timeout_ms = 200;
        d->cache_entries = 10000;
        d->max_cache_ttl_ms = 300000;
        if (parse_dispatch_one(p, k, d) < 0)
            return -1;
    }
    return 0;
}

static int parse_route(struct cp *p, int t, const char *where, enum px_listener_kind kind,
                       struct px_route *r)
{
    static const char *const in_keys[] = {"path_prefix", "authority", "upstream", NULL};
    static const char *const out_keys[] = {"authority", "upstream", "server_id", NULL};
    char b[WHERE_MAX], *up = NULL;
    int v, vu, rc = -1;

    if (check_obj(p, t, where, kind == PX_LISTENER_INBOUND ? in_keys : out_keys) < 0)
        return -1;
    v = kind == PX_LISTENER_INBOUND ? get_str(p, t, where, "authority", &r->authority)
                                    : need_str(p, t, where, "authority", &r->authority);
    if (v < 0)
        return -1;
    for (char *s = r->authority; s != NULL && *s != '\0'; s++) {
        if (!is_name_char(*s) && *s != '*')
            return perr(p, v, "%s: expected a host name without port", kp(b, where, "authority"));
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
    }
    if (kind == PX_LISTENER_INBOUND) {
        if ((v = get_str(p, t, where, "path_prefix", &r->path_prefix)) < 0)
            return -1;
        if (v > 0 && r->path_prefix[0] != '/')
            return perr(p, v, "%s.path_prefix: must start with '/'", where);
        if (r->authority == NULL && r->path_prefix == NULL)
            return perr(p, t, "%s: needs \"path_prefix\" and/or \"authority\"", where);
    }
    if ((vu = need_str(p, t, where, "upstream", &up)) < 0)
        return -1;
    if (kind == PX_LISTENER_INBOUND) {
        if (parse_url(up, &r->upstream) < 0) {
            perr(p, vu, "%s.upstream: expected \"h2c://host:port\" or \"http://host:port\" (no path)",
                 where);
            goto out;
        }
    } else {
        r->upstream.proto = PX_UP_MTLS;
        if (parse_hostport(up, &r->upstream.host, &r->upstream.port) < 0) {
            perr(p, vu, "%s.upstream: expected \"host:port\"", where);
            goto out;
        }
        r->upstream.url = up;
        up = NULL;
        if (get_spiffe(p, t, where, "server_id", &r->server_id, 1) < 0)
            goto out;
        r->upstream.server_id = r->server_id;
    }
    rc = 0;
out:
    free(up);
    return rc;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (!is_name_char(s[i]))
            return 0;
    return n <= 64;
}

static int parse_listener(struct cp *p, int t, size_t idx)
{
    static const char *const keys[] = {"name", "kind", "bind", "upstream", "routes", NULL};
    static const char *const kinds[] = {"inbound", "outbound", NULL};
    struct px_config *c = p->cfg;
    struct px_listener_cfg *l = &c->listeners[idx];
    char where[WHERE_MAX], rw[WHERE_MAX], *s = NULL;
    int v, kind = 0, rt, rc = -1;

    snprintf(where, sizeof(where), "listeners[%zu]", idx);
    if (check_obj(p, t, where, keys) < 0 || (v = need_str(p, t, where, "name", &l->name)) < 0)
        return -1;
    if (!name_ok(l->name))
        return perr(p, v, "%s.name: use letters, digits, '.', '-', '_' (at most 64)", where);
    for (size_t i = 0; i < idx; i++)
        if (strcmp(c->listeners[i].name, l->name) == 0)
            return perr(p, v, "%s.name: duplicate listener name \"%s\"", where, l->name);
    if ((v = get_enum(p, t, where, "kind", kinds, &kind)) <= 0)
        return v < 0 ? -1 : missing(p, t, where, "kind");
    l->kind = kind == 0 ? PX_LISTENER_INBOUND : PX_LISTENER_OUTBOUND;
    if ((v = need_str(p, t, where, "bind", &s)) < 0)
        return -1;
    if (parse_hostport(s, &l->bind_host, &l->bind_port) < 0) {
        perr(p, v, "%s.bind: expected \"host:port\"", where);
        goto out;
    }
    for (size_t i = 0; i < idx; i++)
        if (strcmp(c->listeners[i].bind_host, l->bind_host) == 0 &&
            strcmp(c->listeners[i].bind_port, l->bind_port) == 0) {
            perr(p, v, "%s.bind: already used by listener \"%s\"", where, c->listeners[i].name);
            goto out;
        }
    free(s);
    s = NULL;
    if ((v = get_str(p, t, where, "upstream", &s)) < 0)
        goto out;
    if (v > 0 && l->kind == PX_LISTENER_OUTBOUND) {
        perr(p, v, "%s.upstream: outbound listeners take their upstreams from \"routes\"", where);
        goto out;
    }
    if (v > 0 && parse_url(s, &l->upstream) < 0) {
        perr(p, v, "%s.upstream: expected \"h2c://host:port\" or \"http://host:port\" (no path)",
             where);
        goto out;
    }
    l->has_upstream = v > 0;
    rt = certs_json_get(&p->j, t, "routes");
    if (rt >= 0) {
        if (!certs_json_is_arr(&p->j, rt) || p->j.tok[rt].size > MAX_ROUTES) {
            perr(p, rt, "%s.routes: expected an array of at most %d routes", where, MAX_ROUTES);
            goto out;
        }
        l->routes = calloc((size_t)p->j.tok[rt].size + 1, sizeof(*l->routes));
        if (l->routes == NULL) {
            oom(p, rt);
            goto out;
        }
        for (int e = certs_json_first(&p->j, rt); e > 0; e = certs_json_next_elem(&p->j, e)) {
            snprintf(rw, sizeof(rw), "%.100s.routes[%zu]", where, l->nroutes);
            if (parse_route(p, e, rw, l->kind, &l->routes[l->nroutes++]) < 0)
                goto out;
        }
    }
    if (l->kind == PX_LISTENER_INBOUND && !l->has_upstream && l->nroutes == 0)
        perr(p, t, "%s: an inbound listener needs \"upstream\" or \"routes\"", where);
    else if (l->kind == PX_LISTENER_OUTBOUND && l->nroutes == 0)
        missing(p, t, where, "routes");
    else
        rc = 0;
out:
    free(s);
    return rc;
}

static int parse_listeners(struct cp *p, int arr)
{
    struct px_config *c = p->cfg;
    int n;

    if (!certs_json_is_arr(&p->j, arr))
        return perr(p, arr, "listeners: expected an array");
    n = p->j.tok[arr].size;
    if (n == 0)
        return perr(p, arr, "listeners: at least one listener is required");
    if (n > MAX_LISTENERS)
        return perr(p, arr, "listeners: at most %d listeners", MAX_LISTENERS);
    c->listeners = calloc((size_t)n, sizeof(*c->listeners));
    if (c->listeners == NULL)
        return oom(p, arr);
    for (int e = certs_json_first(&p->j, arr); e > 0; e = certs_json_next_elem(&p->j, e)) {
        size_t i = c->nlisteners++;
        if (parse_listener(p, e, i) < 0)
            return -1;
    }
    return 0;
}

static int parse_admin(struct cp *p, int obj)
{
    static const char *const keys[] = {"bind", NULL};
    struct px_config *c = p->cfg;
    char *s = NULL;
    int v, rc = -1;

    if (check_obj(p, obj, "admin", keys) < 0 || (v = need_str(p, obj, "admin", "bind", &s)) < 0)
        return -1;
    if (parse_hostport(s, &c->admin.bind_host, &c->admin.bind_port) < 0)
        perr(p, v, "admin.bind: expected \"host:port\"");
    else if (!px_config_host_is_loopback(c->admin.bind_host))
        perr(p, v, "admin.bind: must be a loopback address (127.0.0.0/8, [::1] or localhost)");
    else
        rc = 0;
    free(s);
    return rc;
}

static int parse_log(struct cp *p, int obj)
{
    static const char *const keys[] = {"level", "access", "audit", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    struct px_config *c = p->cfg;
    int va, vu;

    if (check_obj(p, obj, "log", keys) < 0 ||
        get_enum(p, obj, "log", "level", levels, &c->log.level) < 0 ||
        (va = get_str(p, obj, "log", "access", &c->log.access)) < 0 ||
        (vu = get_str(p, obj, "log", "audit", &c->log.audit)) < 0)
        return -1;
    if (va > 0 && strcmp(c->log.access, "-") != 0 && resolve(p, va, &c->log.access) < 0)
        return -1;
    if (vu > 0 && strcmp(c->log.audit, "-") != 0 && resolve(p, vu, &c->log.audit) < 0)
        return -1;
    return 0;
}

static int parse_limits(struct cp *p, int obj)
{
    static const char *const keys[] = {"max_connections",  "max_concurrent_streams",
                                       "max_header_list_size", "header_timeout",
                                       "idle_timeout",     "upstream_timeout",
                                       "drain_timeout",    "handshake_timeout",
                                       "stream_buffer",    "drain_notice_delay",
                                       NULL};
    const char *w = "limits";
    struct px_config *c = p->cfg;

    if (check_obj(p, obj, w, keys) < 0 ||
        get_int(p, obj, w, "max_connections", &c->limits.max_connections, 1, 1000000) < 0 ||
        get_int(p, obj, w, "max_concurrent_streams", &c->limits.max_concurrent_streams, 1,
                10000) < 0 ||
        get_int(p, obj, w, "max_header_list_size", &c->limits.max_header_list_size, 1024,
                16 << 20) < 0 ||
        get_int(p, obj, w, "stream_buffer", &c->limits.stream_buffer, 16384, 64 << 20) < 0 ||
        get_dur(p, obj, w, "header_timeout", &c->limits.header_timeout_ms, 100, 3600000) < 0 ||
        get_dur(p, obj, w, "idle_timeout", &c->limits.idle_timeout_ms, 1000, 86400000) < 0 ||
        get_dur(p, obj, w, "upstream_timeout", &c->limits.upstream_timeout_ms, 100, 86400000) < 0 ||
        get_dur(p, obj, w, "drain_timeout", &c->limits.drain_timeout_ms, 0, 3600000) < 0 ||
        get_dur(p, obj, w, "handshake_timeout", &c->limits.handshake_timeout_ms, 100, 300000) < 0 ||
        get_dur(p, obj, w, "drain_notice_delay", &c->limits.drain_notice_delay_ms, 0, 3600000) < 0)
        return -1;
    if (c->limits.drain_notice_delay_ms > 0 &&
        c->limits.drain_notice_delay_ms >= c->limits.drain_timeout_ms) {
        int k = certs_json_get(&p->j, obj, "drain_notice_delay");
        return perr(p, k >= 0 ? k : obj,
                    "limits.drain_notice_delay must be shorter than limits.drain_timeout");
    }
    return 0;
}

static void set_defaults(struct px_config *c)
{
    c->identity.max_svid_lifetime_ms = 24LL * 3600000;
    c->identity.reload_interval_ms = 5000;
    c->policy.poll_min_ms = 10000;
    c->policy.poll_max_ms = 20000;
    c->policy.long_poll_ms = 30000;
    c->policy.max_staleness_ms = 300000;
    c->policy.on_stale_deny = 1;
    c->log.level = 1;
    c->limits.max_connections = 10000;
    c->limits.max_concurrent_streams = 100;
    c->limits.max_header_list_size = 65536;
    c->limits.header_timeout_ms = 10000;
    c->limits.idle_timeout_ms = 60000;
    c->limits.upstream_timeout_ms = 30000;
    c->limits.drain_timeout_ms = 20000;
    c->limits.handshake_timeout_ms = 10000;
    c->limits.stream_buffer = 262144;
}

/* Every listener speaks mTLS on one side (inbound terminates it, outbound
 * originates it), so the workload's SVID and trust bundles are required. */
static int check_identity(struct cp *p)
{
    struct px_config *c = p->cfg;
    const char *lname = c->listeners[0].name;
    const char *key = c->identity.cert == NULL ? "cert" : "trust_bundles";

    if (p->identity_tok == 0)
        return perr(p, 0, "missing required key \"identity\" (listener \"%s\" uses mTLS)", lname);
    if (c->identity.cert == NULL || c->identity.ntrust_bundles == 0)
        return perr(p, p->identity_tok,
                    "identity: missing required key \"%s\" (listener \"%s\" uses mTLS)", key,
                    lname);
    return 0;
}

static int parse_root(struct cp *p)
{
    static const char *const keys[] = {"node_id", "workers", "identity", "policy", "dispatch",
                                       "listeners", "admin", "log", "limits", NULL};
    struct px_config *c = p->cfg;
    int64_t workers = 0;
    int v;

    if (check_obj(p, 0, "", keys) < 0 || (v = get_str(p, 0, "", "node_id", &c->node_id)) < 0 ||
        get_int(p, 0, "", "workers", &workers, 0, 1024) < 0)
        return -1;
    for (const char *s = c->node_id; s != NULL && *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || s - c->node_id >= 255)
            return perr(p, v, "node_id: at most 255 printable characters");
    if ((v = certs_json_get(&p->j, 0, "identity")) >= 0 && parse_identity(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "policy")) >= 0 && parse_policy(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "dispatch")) >= 0 && parse_dispatch(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "listeners")) < 0)
        return missing(p, 0, "", "listeners");
    if (parse_listeners(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "admin")) >= 0 && parse_admin(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "log")) >= 0 && parse_log(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "limits")) >= 0 && parse_limits(p, v) < 0)
        return -1;
    if (check_identity(p) < 0)
        return -1;
    if (workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n < 1 ? 1 : n > 1024 ? 1024 : n;
    }
    c->workers = (int)workers;
    if (c->node_id == NULL) {
        char host[256] = "localhost";
        if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
            strcpy(host, "localhost");
        host[sizeof(host) - 1] = '\0';
        if (asprintf(&c->node_id, "%s/picket", host) < 0) {
            c->node_id = NULL;
            return oom(p, 0);
        }
    }
    return 0;
}

int px_config_parse(struct px_config **out, const char *name, const char *dir, const char *json,
                    size_t len, char *err, size_t errlen)
{
    struct cp p;
    char jerr[256];
    const char *nul;
    int rc = -1;

    memset(&p, 0, sizeof(p));
    *out = NULL;
    p.name = name != NULL ? name : "config";
    p.dir = dir;
    p.err = err;
    p.errlen = errlen;
    if (len > PX_CONFIG_MAX_FILE) {
        snprintf(err, errlen, "%s: larger than %d bytes", p.name, PX_CONFIG_MAX_FILE);
        return -1;
    }
    /* jsmn stops at a NUL byte and would ignore the rest of the file. */
    if ((nul = memchr(json, '\0', len)) != NULL) {
        int line = 1, col = 1;
        for (const char *s = json; s < nul; s++, col++)
            if (*s == '\n') {
                line++;
                col = 0;
            }
        snprintf(err, errlen, "%s:%d:%d: NUL byte in config", p.name, line, col);
        return -1;
    }
    if (certs_json_parse(&p.j, json, len, MAX_TOKENS, jerr, sizeof(jerr)) < 0) {
        snprintf(err, errlen, "%s:%s", p.name, jerr);
        return -1;
    }
    p.cfg = calloc(1, sizeof(*p.cfg));
    if (p.cfg == NULL) {
        oom(&p, 0);
        goto out;
    }
    set_defaults(p.cfg);
    p.cfg->path = strdup(p.name);
    if (p.cfg->path == NULL) {
        oom(&p, 0);
        goto out;
    }
    if (parse_root(&p) < 0)
        goto out;
    *out = p.cfg;
    p.cfg = NULL;
    rc = 0;
out:
    px_config_free(p.cfg);
    certs_json_clear(&p.j);
    return rc;
}

int px_config_load(struct px_config **out, const char *path, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL, *dir = NULL;
    const char *slash;
    size_t got = 0;
    int fd, rc = -1;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    if (st.st_size > PX_CONFIG_MAX_FILE) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, PX_CONFIG_MAX_FILE);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "short read");
            goto out;
        }
        got += (size_t)n;
    }
    slash = strrchr(path, '/');
    if (slash != NULL) {
        dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
        if (dir == NULL) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto out;
        }
    }
    rc = px_config_parse(out, path, dir, buf, got, err, errlen);
out:
    free(dir);
    free(buf);
    close(fd);
    return rc;
}

static void free_upstream(struct px_upstream_addr *u)
{
    free(u->host);
    free(u->port);
    free(u->url);
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

void px_config_free(struct px_config *c)
{
    if (c == NULL)
        return;
    free(c->path);
    free(c->node_id);
    free(c->identity.cert);
    free(c->identity.key);
    for (size_t i = 0; i < c->identity.ntrust_bundles; i++) {
        free(c->identity.trust_bundles[i].trust_domain);
        free(c->identity.trust_bundles[i].file);
    }
    free(c->identity.trust_bundles);
    free(c->policy.file);
    free(c->policy.url);
    free(c->policy.server_id);
    free_strv(c->policy.signing_key_ids, c->policy.nsigning_keys);
    free_strv(c->policy.signing_key_files, c->policy.nsigning_keys);
    free(c->policy.cache_dir);
    for (size_t i = 0; i < c->ndispatch; i++) {
        free(c->dispatch[i].name);
        free(c->dispatch[i].url);
        free(c->dispatch[i].server_id);
        free_strv(c->dispatch[i].headers, c->dispatch[i].nheaders);
    }
    free(c->dispatch);
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct px_listener_cfg *l = &c->listeners[i];
        free(l->name);
        free(l->bind_host);
        free(l->bind_port);
        free_upstream(&l->upstream);
        for (size_t r = 0; r < l->nroutes; r++) {
            free(l->routes[r].authority);
            free(l->routes[r].path_prefix);
            free(l->routes[r].server_id);
            free_upstream(&l->routes[r].upstream);
        }
        free(l->routes);
    }
    free(c->listeners);
    free(c->admin.bind_host);
    free(c->admin.bind_port);
    free(c->log.access);
    free(c->log.audit);
    free(c);
}

int px_log_level_parse(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; s != NULL && i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

int px_config_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (host == NULL)
        return 0;
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}
