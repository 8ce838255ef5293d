/*
 * bundle.c - parses and validates a policy bundle (DESIGN.md "Policy
 * bundles") into struct policy_bundle. Everything a rule holds is copied
 * into the bundle's arena, already checked and in the form compile.c and
 * eval.c want (patterns split into segments, hosts lowercased, "from"
 * classified), so the engine never re-validates.
 *
 * Errors name the place twice: "line:col: " from the token, then the JSON
 * path and the rule id: "rules[3].paths[1]: '**' must be the last segment
 * (rule \"no-admin\")". Strings from the bundle are sanitized before they go
 * into a message, since messages end up in logs.
 *
 * Bounds: the document size (POLICY_BUNDLE_MAX_BYTES) and token budget
 * (POLICY_BUNDLE_MAX_TOKENS) are checked before anything is allocated per
 * rule; each list in a rule has at most POLICY_RULE_MAX_LIST entries and each
 * string at most POLICY_MAX_STRING bytes. Duplicate ids are found with a
 * hash set, so parsing stays linear in the number of rules. Duplicate keys
 * (after unescaping) are found per object with certs_json_check_keys(),
 * expected linear in the keys' bytes, and only after that object's cheaper
 * limits: its entry count and its unknown keys, each a single pass that
 * stops at the first offence.
 */
#include "policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certs_json.h"
#include "eval-t.h"

struct ctx {
    const struct certs_json *j;
    struct policy_bundle *b;
    char *err;
    size_t errlen;
    int ri;          /* current rule index, -1 outside rules */
    const char *rid; /* current rule id, NULL until known */
    char buf[POLICY_MAX_STRING + 1];
};

/* ---- errors ---- */

/* Copies printable ASCII of s[0..n), at most 64 bytes, replacing the rest. */
static void sanitize(char *dst, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (o >= 64) {
            if (o + 4 < cap)
                memcpy(dst + o, "...", 3), o += 3;
            break;
        }
        dst[o++] = (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') ? (char)ch : '?';
    }
    dst[o] = '\0';
}

/* Formats "<where>: msg" for token tok, where <where> is "rules[i].field[idx]"
 * inside a rule (idx -1: no index; field NULL: just "rules[i]") or "field"
 * outside, and appends the rule id when known. Returns POLICY_ERR_BUNDLE. */
__attribute__((format(printf, 5, 6))) static int fail(struct ctx *c, int tok, const char *field,
                                                      int idx, const char *fmt, ...)
{
    char msg[256], where[96], id[80];
    va_list ap;
    int n = 0;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    where[0] = '\0';
    if (c->ri >= 0)
        n = snprintf(where, sizeof(where), "rules[%d]%s", c->ri, field != NULL ? "." : "");
    if (field != NULL && n >= 0 && (size_t)n < sizeof(where))
        n += snprintf(where + n, sizeof(where) - (size_t)n, "%s", field);
    if (idx >= 0 && n >= 0 && (size_t)n < sizeof(where))
        snprintf(where + n, sizeof(where) - (size_t)n, "[%d]", idx);
    if (c->rid != NULL) {
        sanitize(id, sizeof(id), c->rid, strlen(c->rid));
        certs_json_errf(c->j, tok, c->err, c->errlen, "%s: %s (rule \"%s\")", where, msg, id);
    } else if (where[0] != '\0') {
        certs_json_errf(c->j, tok, c->err, c->errlen, "%s: %s", where, msg);
    } else {
        certs_json_errf(c->j, tok, c->err, c->errlen, "%s", msg);
    }
    return POLICY_ERR_BUNDLE;
}

static int nomem(struct ctx *c)
{
    if (c->errlen > 0)
        snprintf(c->err, c->errlen, "out of memory");
    return POLICY_ERR_NOMEM;
}

/* ---- string set (duplicate ids, distinct dispatch targets) ---- */

struct strset {
    const char **v;
    size_t mask;
};

static int strset_init(struct strset *s, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n + 2)
        cap <<= 1;
    s->v = calloc(cap, sizeof(*s->v));
    s->mask = cap - 1;
    return s->v != NULL ? 0 : -1;
}

/* Returns 1 if added, 0 if already present. Never full: sized for n adds. */
static int strset_add(struct strset *s, const char *k)
{
    size_t i = (size_t)policy_hash(k, strlen(k)) & s->mask;
    while (s->v[i] != NULL) {
        if (strcmp(s->v[i], k) == 0)
            return 0;
        i = (i + 1) & s->mask;
    }
    s->v[i] = k;
    return 1;
}

/* ---- JSON helpers ---- */

/* Checks an object's shape: string keys, each with one value. Linear. */
static int check_object(struct ctx *c, int obj, const char *field, int idx)
{
    const struct certs_json *j = c->j;
    int n = 0;
    if (!certs_json_is_obj(j, obj))
        return fail(c, obj, field, idx, "must be an object");
    for (int k = certs_json_first(j, obj); k > 0 && n < j->tok[obj].size;
         k = certs_json_next_key(j, k), n++) {
        if (!certs_json_is_str(j, k) || j->tok[k].size != 1)
            return fail(c, k, field, idx, "malformed object member");
    }
    return 0;
}

static int unknown_key(struct ctx *c, int k)
{
    char key[80];
    sanitize(key, sizeof(key), c->j->js + c->j->tok[k].start,
             (size_t)(c->j->tok[k].end - c->j->tok[k].start));
    return fail(c, k, NULL, -1, "unknown key \"%s\"", key);
}

/* Refuses the first key of obj not in `known` (NULL-terminated, compared
 * unescaped: "r\u0065vision" is "revision"). One pass, stopping
 * at the first unknown key, so an object of many keys costs nothing more
 * than reading up to it; run before check_unique(). */
static int check_known(struct ctx *c, int obj, const char *const *known)
{
    const struct certs_json *j = c->j;
    int n = 0;
    for (int k = certs_json_first(j, obj); k > 0 && n < j->tok[obj].size;
         k = certs_json_next_key(j, k), n++) {
        size_t i = 0;
        while (known[i] != NULL && !certs_json_eq(j, k, known[i]))
            i++;
        if (known[i] == NULL)
            return unknown_key(c, k);
    }
    return 0;
}

/* Duplicate keys, compared after unescaping, in expected linear time
 * (certs_json_check_keys). The document was parsed with
 * CERTS_JSON_DEFER_KEYS, so every object this file accepts must pass here:
 * the bundle, each rule and each headers map; an object anywhere else is
 * refused by a type check. Reported as POLICY_ERR_JSON, as the parser did. */
static int check_unique(struct ctx *c, int obj)
{
    int rc = certs_json_check_keys(c->j, obj, c->err, c->errlen);
    if (rc == CERTS_JSON_NOMEM)
        return nomem(c);
    return rc == 0 ? 0 : POLICY_ERR_JSON;
}

/* Unescapes string token tok into c->buf; returns its length or an error. */
static int get_str(struct ctx *c, int tok, const char *field, int idx, size_t *len)
{
    int n;
    if (!certs_json_is_str(c->j, tok))
        return fail(c, tok, field, idx, "must be a string");
    n = certs_json_str(c->j, tok, c->buf, sizeof(c->buf));
    if (n < 0)
        return fail(c, tok, field, idx, "string too long (limit %d bytes) or bad escape",
                    POLICY_MAX_STRING);
    if (n == 0)
        return fail(c, tok, field, idx, "must not be empty");
    *len = (size_t)n;
    return 0;
}

/* Checks a non-empty array of at most POLICY_RULE_MAX_LIST elements. */
static int get_list(struct ctx *c, int tok, const char *field, uint32_t *n)
{
    if (!certs_json_is_arr(c->j, tok))
        return fail(c, tok, field, -1, "must be an array");
    if (c->j->tok[tok].size == 0)
        return fail(c, tok, field, -1, "must not be empty (leave the key out to match anything)");
    if (c->j->tok[tok].size > POLICY_RULE_MAX_LIST)
        return fail(c, tok, field, -1, "too many entries (limit %d)", POLICY_RULE_MAX_LIST);
    *n = (uint32_t)c->j->tok[tok].size;
    return 0;
}

static int all_chars(const char *s, size_t n, const char *extra, int lower, int upper, int digit)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if ((lower && ch >= 'a' && ch <= 'z') || (upper && ch >= 'A' && ch <= 'Z') ||
            (digit && ch >= '0' && ch <= '9') || (ch != '\0' && strchr(extra, ch) != NULL))
            continue;
        return 0;
    }
    return 1;
}

static int has_upper(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            return 1;
    return 0;
}

/* ---- rule fields ---- */

/* "*", "spiffe://td/path", "spiffe://td/path/ *" or "spiffe://td/ *". */
static int parse_from_one(struct ctx *c, int tok, int idx, struct policy_from *f)
{
    size_t n = 0, tdlen;
    char *s = c->buf, *p;
    int rc = get_str(c, tok, "from", idx, &n);
    if (rc != 0)
        return rc;
    if (n == 1 && s[0] == '*') {
        f->kind = POLICY_FROM_ANY;
        return 0;
    }
    if (n < 10 || memcmp(s, "spiffe://", 9) != 0)
        return fail(c, tok, "from", idx, "must be a SPIFFE ID (\"spiffe://td/path\"), a pattern "
                                         "ending in \"/*\", or \"*\"");
    p = memchr(s + 9, '/', n - 9);
    tdlen = (p != NULL ? (size_t)(p - s) : n) - 9;
    if (tdlen == 0 || !all_chars(s + 9, tdlen, ".-_", 1, 0, 1))
        return fail(c, tok, "from", idx, "trust domain must be non-empty lowercase "
                                         "letters, digits, '.', '-' or '_'");
    if (p == NULL)
        return fail(c, tok, "from", idx, "SPIFFE ID has no path (use \"%.*s/*\" for the whole "
                                         "trust domain)", (int)(tdlen + 9), s);
    f->kind = POLICY_FROM_EXACT;
    if (n >= 2 && s[n - 1] == '*' && s[n - 2] == '/') {
        f->kind = POLICY_FROM_SUBTREE;
        n -= 2;
    }
    /* path segments after the trust domain */
    for (size_t i = 9 + tdlen; i < n;) {
        size_t e = i + 1;
        while (e < n && s[e] != '/')
            e++;
        if (e == i + 1)
            return fail(c, tok, "from", idx, "empty path segment in SPIFFE ID");
        if ((e - i == 2 && s[i + 1] == '.') || (e - i == 3 && s[i + 1] == '.' && s[i + 2] == '.'))
            return fail(c, tok, "from", idx, "'.' or '..' segment in SPIFFE ID");
        if (memchr(s + i + 1, '*', e - i - 1) != NULL)
            return fail(c, tok, "from", idx, "'*' is only allowed as the whole last segment");
        if (!all_chars(s + i + 1, e - i - 1, ".-_", 1, 1, 1))
            return fail(c, tok, "from", idx, "SPIFFE ID path may only contain letters, digits, "
                                             "'.', '-' and '_'");
        i = e;
    }
    f->id.p = policy_arena_strndup(&c->b->arena, s, n);
    f->id.n = n;
    return f->id.p != NULL ? 0 : nomem(c);
}

static int parse_host_one(struct ctx *c, int tok, int idx, struct policy_host *h)
{
    size_t n = 0;
    char *s = c->buf;
    int rc = get_str(c, tok, "hosts", idx, &n);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            s[i] = (char)(s[i] - 'A' + 'a');
    if (n > 2 && s[0] == '*' && s[1] == '.') {
        h->suffix = 1;
        s++; /* keep the dot: ".example.org" */
        n--;
    }
    if (s[0] == '[') {
        if (n < 3 || s[n - 1] != ']' || !all_chars(s + 1, n - 2, ":.", 1, 0, 1) || h->suffix)
            return fail(c, tok, "hosts", idx, "malformed IPv6 literal");
    } else if (memchr(s, ':', n) != NULL) {
        return fail(c, tok, "hosts", idx, "host must not have a port");
    } else if (!all_chars(s, n, ".-_", 1, 0, 1)) {
        return fail(c, tok, "hosts", idx, "host may only contain letters, digits, '.', '-', '_' "
                                          "(and a leading \"*.\")");
    }
    h->name.p = policy_arena_strndup(&c->b->arena, s, n);
    h->name.n = n;
    return h->name.p != NULL ? 0 : nomem(c);
}

static int parse_method_one(struct ctx *c, int tok, int idx, struct policy_str *m)
{
    size_t n = 0;
    int rc = get_str(c, tok, "methods", idx, &n);
    if (rc != 0)
        return rc;
    if (!all_chars(c->buf, n, "-_", 0, 1, 1))
        return fail(c, tok, "methods", idx, "method must be uppercase letters (\"GET\")");
    m->p = policy_arena_strndup(&c->b->arena, c->buf, n);
    m->n = n;
    return m->p != NULL ? 0 : nomem(c);
}

static int parse_path_one(struct ctx *c, int tok, int idx, struct policy_path_pat *pp)
{
    char norm[2 * POLICY_MAX_STRING + 2];
    size_t n = 0, outlen = 0, plen = 0, nsegs = 1, k = 0;
    const char *s = c->buf;
    int rc = get_str(c, tok, "paths", idx, &n);
    if (rc != 0)
        return rc;
    if (s[0] != '/')
        return fail(c, tok, "paths", idx, "path pattern must start with '/'");
    rc = policy_path_normalize(s, n, norm, sizeof(norm), &outlen, &plen);
    if (rc != 0)
        return fail(c, tok, "paths", idx, "bad path pattern: %s", policy_strerror(rc));
    if (plen != outlen)
        return fail(c, tok, "paths", idx, "path pattern must not have a query");
    if (outlen != n || memcmp(norm, s, n) != 0) {
        char want[80];
        sanitize(want, sizeof(want), norm, outlen);
        return fail(c, tok, "paths", idx, "path pattern is not normalized (write \"%s\")", want);
    }
    for (size_t i = 1; i < n; i++)
        nsegs += s[i] == '/';
    pp->segs = policy_arena_alloc(&c->b->arena, nsegs * sizeof(*pp->segs));
    if (pp->segs == NULL)
        return nomem(c);
    for (size_t i = 1; i <= n;) {
        size_t e = i;
        while (e < n && s[e] != '/')
            e++;
        if (e - i == 2 && s[i] == '*' && s[i + 1] == '*') {
            if (e != n)
                return fail(c, tok, "paths", idx, "'**' must be the last segment");
            pp->globstar = 1;
        } else {
            if (memchr(s + i, '*', e - i) != NULL && e - i != 1)
                return fail(c, tok, "paths", idx, "'*' must be a whole segment");
            pp->segs[k].p = policy_arena_strndup(&c->b->arena, s + i, e - i);
            pp->segs[k].n = e - i;
            if (pp->segs[k++].p == NULL)
                return nomem(c);
        }
        i = e + 1;
    }
    pp->nsegs = (uint32_t)k;
    return 0;
}

static int parse_headers(struct ctx *c, int obj, struct policy_rule *r)
{
    const struct certs_json *j = c->j;
    int rc, i = 0;
    if (!certs_json_is_obj(j, obj))
        return fail(c, obj, "headers", -1, "must be an object");
    if (j->tok[obj].size == 0)
        return fail(c, obj, "headers", -1, "must not be empty (leave the key out)");
    /* the entry limit first: it needs no pass over the keys */
    if (j->tok[obj].size > POLICY_RULE_MAX_LIST)
        return fail(c, obj, "headers", -1, "too many entries (limit %d)", POLICY_RULE_MAX_LIST);
    if ((rc = check_object(c, obj, "headers", -1)) != 0 || (rc = check_unique(c, obj)) != 0)
        return rc;
    r->nheaders = (uint32_t)j->tok[obj].size;
    r->headers = policy_arena_alloc(&c->b->arena, r->nheaders * sizeof(*r->headers));
    if (r->headers == NULL)
        return nomem(c);
    for (int k = certs_json_first(j, obj); i < (int)r->nheaders; k = certs_json_next_key(j, k), i++) {
        struct policy_hdr_match *h = &r->headers[i];
        size_t n = 0;
        uint32_t nv, vi = 0;
        if ((rc = get_str(c, k, "headers", i, &n)) != 0)
            return rc;
        if (has_upper(c->buf, n))
            return fail(c, k, "headers", i, "header name must be lowercase");
        if (!all_chars(c->buf, n, "!#$%&'*+.^_`|~-", 1, 0, 1))
            return fail(c, k, "headers", i, "invalid header name");
        h->name.p = policy_arena_strndup(&c->b->arena, c->buf, n);
        h->name.n = n;
        if (h->name.p == NULL)
            return nomem(c);
        if (!certs_json_is_arr(j, k + 1) || j->tok[k + 1].size == 0)
            return fail(c, k + 1, "headers", i, "must be a non-empty array of allowed values");
        if ((rc = get_list(c, k + 1, "headers", &nv)) != 0)
            return rc;
        h->values = policy_arena_alloc(&c->b->arena, nv * sizeof(*h->values));
        if (h->values == NULL)
            return nomem(c);
        h->nvalues = nv;
        for (int e = certs_json_first(j, k + 1); vi < nv; e = certs_json_next_elem(j, e), vi++) {
            if (!certs_json_is_str(j, e) || j->tok[e].size != 0 ||
                certs_json_str(j, e, c->buf, sizeof(c->buf)) < 0)
                return fail(c, e, "headers", i, "values must be strings of at most %d bytes",
                            POLICY_MAX_STRING);
            h->values[vi].n = strlen(c->buf);
            h->values[vi].p = policy_arena_strndup(&c->b->arena, c->buf, h->values[vi].n);
            if (h->values[vi].p == NULL)
                return nomem(c);
        }
    }
    return 0;
}

/* Parses from/hosts/methods/paths: allocates n entries of `size` and calls
 * `one` per element. */
typedef int (*policy_elem_fn)(struct ctx *c, int tok, int idx, void *dst);

static int parse_list(struct ctx *c, int tok, const char *field, size_t size, policy_elem_fn one,
                      void **dst, uint32_t *count)
{
    uint32_t n, i = 0;
    unsigned char *v;
    int rc = get_list(c, tok, field, &n);
    if (rc != 0)
        return rc;
    v = policy_arena_alloc(&c->b->arena, n * size);
    if (v == NULL)
        return nomem(c);
    for (int e = certs_json_first(c->j, tok); i < n; e = certs_json_next_elem(c->j, e), i++) {
        /* jsmn takes ["a":1] as an array holding a key; refuse it */
        if (c->j->tok[e].size != 0 && !certs_json_is_obj(c->j, e) && !certs_json_is_arr(c->j, e))
            return fail(c, e, field, (int)i, "malformed array element");
        if ((rc = one(c, e, (int)i, v + i * size)) != 0)
            return rc;
    }
    *dst = v;
    *count = n;
    return 0;
}

static int from_fn(struct ctx *c, int t, int i, void *d)
{
    return parse_from_one(c, t, i, d);
}
static int host_fn(struct ctx *c, int t, int i, void *d)
{
    return parse_host_one(c, t, i, d);
}
static int method_fn(struct ctx *c, int t, int i, void *d)
{
    return parse_method_one(c, t, i, d);
}
static int path_fn(struct ctx *c, int t, int i, void *d)
{
    return parse_path_one(c, t, i, d);
}

static int parse_ident(struct ctx *c, int tok, const char *field, const char *extra,
                       const char **out)
{
    size_t n = 0;
    int rc = get_str(c, tok, field, -1, &n);
    if (rc != 0)
        return rc;
    if (n > 128 || !all_chars(c->buf, n, extra, 1, 1, 1))
        return fail(c, tok, field, -1, "must be 1-128 letters, digits or \"%s\"", extra);
    *out = policy_arena_strndup(&c->b->arena, c->buf, n);
    return *out != NULL ? 0 : nomem(c);
}

static const char *const rule_keys[] = {"id",      "action", "dispatch", "from", "hosts",
                                        "methods", "paths",  "headers",  NULL};

static int parse_rule(struct ctx *c, int obj, struct policy_rule *r, struct strset *ids)
{
    const struct certs_json *j = c->j;
    int rc, n = 0, t_action = -1, t_dispatch = -1;
    int id_tok = certs_json_get(j, obj, "id");

    c->rid = NULL;
    if ((rc = check_object(c, obj, NULL, -1)) != 0)
        return rc;
    if (id_tok < 0)
        return fail(c, obj, NULL, -1, "missing \"id\"");
    if ((rc = parse_ident(c, id_tok, "id", "._:@/-", &r->id)) != 0)
        return rc;
    if (strcmp(r->id, "default") == 0)
        return fail(c, id_tok, "id", -1, "\"default\" is reserved for the bundle default");
    if (!strset_add(ids, r->id)) {
        char id[80];
        sanitize(id, sizeof(id), r->id, strlen(r->id));
        return fail(c, id_tok, "id", -1, "duplicate rule id \"%s\"", id);
    }
    c->rid = r->id;
    /* limits before the duplicate pass: unknown keys end it at once */
    if ((rc = check_known(c, obj, rule_keys)) != 0 || (rc = check_unique(c, obj)) != 0)
        return rc;
    for (int k = certs_json_first(j, obj); k > 0 && n < j->tok[obj].size;
         k = certs_json_next_key(j, k), n++) {
        int v = k + 1;
        if (certs_json_eq(j, k, "id")) {
            continue;
        } else if (certs_json_eq(j, k, "action")) {
            t_action = v;
            if (certs_json_eq(j, v, "allow"))
                r->action = POLICY_ALLOW;
            else if (certs_json_eq(j, v, "deny"))
                r->action = POLICY_DENY;
            else if (certs_json_eq(j, v, "dispatch"))
                r->action = POLICY_DISPATCH;
            else
                return fail(c, v, "action", -1, "must be \"allow\", \"deny\" or \"dispatch\"");
        } else if (certs_json_eq(j, k, "dispatch")) {
            t_dispatch = v;
            rc = parse_ident(c, v, "dispatch", "._-", &r->dispatch);
        } else if (certs_json_eq(j, k, "from")) {
            rc = parse_list(c, v, "from", sizeof(*r->from), from_fn, (void **)&r->from, &r->nfrom);
        } else if (certs_json_eq(j, k, "hosts")) {
            rc = parse_list(c, v, "hosts", sizeof(*r->hosts), host_fn, (void **)&r->hosts,
                            &r->nhosts);
        } else if (certs_json_eq(j, k, "methods")) {
            rc = parse_list(c, v, "methods", sizeof(*r->methods), method_fn,
                            (void **)&r->methods, &r->nmethods);
        } else if (certs_json_eq(j, k, "paths")) {
            rc = parse_list(c, v, "paths", sizeof(*r->paths), path_fn, (void **)&r->paths,
                            &r->npaths);
        } else if (certs_json_eq(j, k, "headers")) {
            rc = parse_headers(c, v, r);
        } else {
            return unknown_key(c, k); /* rule_keys and this chain disagree */
        }
        if (rc != 0)
            return rc;
    }
    if (t_action < 0)
        return fail(c, obj, NULL, -1, "missing \"action\"");
    if (r->action == POLICY_DISPATCH && t_dispatch < 0)
        return fail(c, t_action, "dispatch", -1, "action \"dispatch\" needs a \"dispatch\" target");
    if (r->action != POLICY_DISPATCH && t_dispatch >= 0)
        return fail(c, t_dispatch, "dispatch", -1, "only allowed with action \"dispatch\"");
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil algorithm, restated). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DDTHH:MM:SS[.frac]Z" -> unix seconds; -1 if malformed. */
static int parse_rfc3339_utc(const char *s, size_t n, int64_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int v[6], pos[6] = {0, 5, 8, 11, 14, 17}, len[6] = {4, 2, 2, 2, 2, 2};
    size_t i = 19;
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return -1;
    for (int f = 0; f < 6; f++) {
        v[f] = 0;
        for (int d = 0; d < len[f]; d++) {
            char ch = s[pos[f] + d];
            if (ch < '0' || ch > '9')
                return -1;
            v[f] = v[f] * 10 + (ch - '0');
        }
    }
    if (s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == 20)
            return -1;
    }
    if (i + 1 != n || (s[i] != 'Z' && s[i] != 'z'))
        return -1;
    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > mdays[v[1] - 1] || v[3] > 23 || v[4] > 59 ||
        v[5] > 59)
        return -1;
    if (v[1] == 2 && v[2] == 29 && !((v[0] % 4 == 0 && v[0] % 100 != 0) || v[0] % 400 == 0))
        return -1;
    *out = days_from_civil(v[0], v[1], v[2]) * 86400 + v[3] * 3600 + v[4] * 60 + v[5];
    return 0;
}

static int parse_top(struct ctx *c, int *rules_tok)
{
    static const char *const top_keys[] = {"revision", "expires_at", "mode",
                                           "default",  "rules",      NULL};
    const struct certs_json *j = c->j;
    struct policy_bundle *b = c->b;
    int rc, n = 0, have_rev = 0;

    if ((rc = check_object(c, 0, "bundle", -1)) != 0 || (rc = check_known(c, 0, top_keys)) != 0 ||
        (rc = check_unique(c, 0)) != 0)
        return rc;
    *rules_tok = -1;
    for (int k = certs_json_first(j, 0); k > 0 && n < j->tok[0].size;
         k = certs_json_next_key(j, k), n++) {
        int v = k + 1;
        if (certs_json_eq(j, k, "revision")) {
            if (certs_json_int(j, v, &b->revision) < 0 || b->revision < 0)
                return fail(c, v, "revision", -1, "must be an integer >= 0");
            have_rev = 1;
        } else if (certs_json_eq(j, k, "expires_at")) {
            size_t len = 0;
            if ((rc = get_str(c, v, "expires_at", -1, &len)) != 0)
                return rc;
            if (parse_rfc3339_utc(c->buf, len, &b->expires_at) < 0 || b->expires_at <= 0)
                return fail(c, v, "expires_at", -1,
                            "must be an RFC 3339 UTC time after 1970 (\"2026-11-23T00:00:00Z\")");
        } else if (certs_json_eq(j, k, "mode")) {
            if (certs_json_eq(j, v, "enforce"))
                b->mode = POLICY_MODE_ENFORCE;
            else if (certs_json_eq(j, v, "audit"))
                b->mode = POLICY_MODE_AUDIT;
            else
                return fail(c, v, "mode", -1, "must be \"enforce\" or \"audit\"");
        } else if (certs_json_eq(j, k, "default")) {
            if (certs_json_eq(j, v, "allow"))
                b->def = POLICY_ALLOW;
            else if (certs_json_eq(j, v, "deny"))
                b->def = POLICY_DENY;
            else
                return fail(c, v, "default", -1, "must be \"allow\" or \"deny\"");
        } else if (certs_json_eq(j, k, "rules")) {
            if (!certs_json_is_arr(j, v))
                return fail(c, v, "rules", -1, "must be an array");
            *rules_tok = v;
        } else {
            return unknown_key(c, k); /* top_keys and this chain disagree */
        }
    }
    if (!have_rev)
        return fail(c, 0, NULL, -1, "missing \"revision\"");
    if (*rules_tok < 0)
        return fail(c, 0, NULL, -1, "missing \"rules\"");
    return 0;
}

static int parse_rules(struct ctx *c, int arr)
{
    const struct certs_json *j = c->j;
    struct policy_bundle *b = c->b;
    struct strset ids = {0}, targets = {0};
    size_t n = (size_t)j->tok[arr].size;
    int rc = 0, e;

    b->rules = policy_arena_alloc(&b->arena, (n > 0 ? n : 1) * sizeof(*b->rules));
    b->targets = policy_arena_alloc(&b->arena, (n > 0 ? n : 1) * sizeof(*b->targets));
    if (b->rules == NULL || b->targets == NULL || strset_init(&ids, n) < 0 ||
        strset_init(&targets, n) < 0) {
        rc = nomem(c);
        goto out;
    }
    e = certs_json_first(j, arr);
    for (size_t i = 0; i < n; i++, e = certs_json_next_elem(j, e)) {
        struct policy_rule *r = &b->rules[i];
        c->ri = (int)i;
        r->index = (uint32_t)i;
        if ((rc = parse_rule(c, e, r, &ids)) != 0)
            goto out;
        if (r->dispatch != NULL && strset_add(&targets, r->dispatch))
            b->targets[b->ntargets++] = r->dispatch;
    }
    b->nrules = n;
out:
    free(ids.v);
    free(targets.v);
    c->ri = -1;
    c->rid = NULL;
    return rc;
}

int policy_bundle_parse(struct policy_bundle **out, const char *json, size_t len, char *err,
                        size_t errlen)
{
    struct certs_json j = {0};
    struct policy_bundle *b = NULL;
    struct ctx *c = NULL;
    const char *nul;
    int rc, rules_tok;

    if (errlen > 0)
        err[0] = '\0';
    if (out == NULL || (json == NULL && len > 0))
        return POLICY_ERR_INVAL;
    if (len > POLICY_BUNDLE_MAX_BYTES) {
        snprintf(err, errlen, "1:1: bundle is %zu bytes, limit %u", len, POLICY_BUNDLE_MAX_BYTES);
        return POLICY_ERR_TOO_LARGE;
    }
    /* jsmn stops at a NUL byte and would ignore whatever follows it. */
    nul = len > 0 ? memchr(json, '\0', len) : NULL;
    if (nul != NULL) {
        struct certs_json at = {.js = json, .len = (size_t)(nul - json)};
        certs_json_errf(&at, -1, err, errlen, "NUL byte in bundle");
        return POLICY_ERR_JSON;
    }
    /* Duplicate keys are checked per object, after each object's cheaper
     * limits (check_unique). */
    if (certs_json_parse_flags(&j, json, len, POLICY_BUNDLE_MAX_TOKENS, CERTS_JSON_DEFER_KEYS, err,
                               errlen) < 0) {
        /* certs_json reports the token budget only through its message */
        return strstr(err != NULL ? err : "", "too large") != NULL ? POLICY_ERR_TOO_LARGE
                                                                  : POLICY_ERR_JSON;
    }
    b = calloc(1, sizeof(*b));
    c = malloc(sizeof(*c));
    if (b == NULL || c == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = POLICY_ERR_NOMEM;
        goto fail;
    }
    c->j = &j;
    c->b = b;
    c->err = err;
    c->errlen = errlen;
    c->ri = -1;
    c->rid = NULL;
    b->def = POLICY_DENY;
    b->mode = POLICY_MODE_ENFORCE;
    if ((rc = parse_top(c, &rules_tok)) != 0 || (rc = parse_rules(c, rules_tok)) != 0)
        goto fail;
    free(c);
    certs_json_clear(&j);
    *out = b;
    return 0;
fail:
    free(c);
    certs_json_clear(&j);
    policy_bundle_free(b);
    return rc;
}

void policy_bundle_free(struct policy_bundle *b)
{
    if (b == NULL)
        return;
    policy_arena_clear(&b->arena);
    free(b);
}

int64_t policy_bundle_revision(const struct policy_bundle *b)
{
    return b->revision;
}

int64_t policy_bundle_expires_at(const struct policy_bundle *b)
{
    return b->expires_at;
}

enum policy_mode policy_bundle_mode(const struct policy_bundle *b)
{
    return b->mode;
}

enum policy_verdict policy_bundle_default(const struct policy_bundle *b)
{
    return b->def;
}

size_t policy_bundle_rule_count(const struct policy_bundle *b)
{
    return b->nrules;
}

int policy_bundle_rule_http_only(const struct policy_bundle *b, size_t i, const char **id)
{
    const struct policy_rule *r;
    if (i >= b->nrules)
        return -1;
    r = &b->rules[i];
    if (id != NULL)
        *id = r->id;
    return r->nhosts > 0 || r->nmethods > 0 || r->npaths > 0 || r->nheaders > 0;
}

size_t policy_bundle_dispatch_targets(const struct policy_bundle *b, const char *const **names)
{
    if (names != NULL)
        *names = (const char *const *)b->targets;
    return b->ntargets;
}
