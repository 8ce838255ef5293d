/*
 * json.c - JSON access over jsmn (strict mode, parent links), durations and
 * base64. Shared by certs/ (JWKS), policy/ (bundles, envelopes) and proxy/
 * (config). jsmn is header-only; its implementation is compiled here once.
 */
#undef JSMN_HEADER
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>
#define JSMN_HEADER
#include "certs_json.h"
#include "certs_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c);

static void pos_of(const char *js, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off; i++) {
        if (js[i] == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
    }
    *line = l;
    *col = c;
}

/* jsmn reports no position on error; find where its scan stopped by
 * re-running it with a larger budget is pointless, so report the first byte
 * past the last token it produced (good enough to point at the problem). */
static size_t error_offset(const char *js, size_t len, const jsmntok_t *tok, int ntok)
{
    size_t off = 0;
    for (int i = 0; i < ntok; i++) {
        if (tok[i].end > 0 && (size_t)tok[i].end > off)
            off = (size_t)tok[i].end;
        if (tok[i].start >= 0 && (size_t)tok[i].start > off)
            off = (size_t)tok[i].start;
    }
    while (off < len && (js[off] == ' ' || js[off] == '\n' || js[off] == '\r' || js[off] == '\t'))
        off++;
    return off;
}


/* ---- strict grammar check ---------------------------------------------
 * jsmn, even in strict mode, accepts trailing commas, missing commas,
 * keys without values, leading zeros and raw control characters, and
 * stops at a NUL byte. Config, bundles, envelopes and JWKS are security
 * inputs, so every document first passes this RFC 8259 check, which also
 * gives an exact position for the first error. Nesting is capped so a
 * hostile document cannot exhaust the stack. */

#define JSON_MAX_DEPTH 64

struct vstate {
    const char *s;
    size_t len, i;
    const char *msg;
};

static void skip_ws(struct vstate *v)
{
    while (v->i < v->len &&
           (v->s[v->i] == ' ' || v->s[v->i] == '\t' || v->s[v->i] == '\n' || v->s[v->i] == '\r'))
        v->i++;
}

static int v_fail(struct vstate *v, const char *msg)
{
    if (v->msg == NULL)
        v->msg = msg;
    return -1;
}

static int v_string(struct vstate *v)
{
    v->i++; /* opening quote */
    while (v->i < v->len) {
        unsigned char c = (unsigned char)v->s[v->i];
        if (c == '"') {
            v->i++;
            return 0;
        }
        if (c < 0x20)
            return v_fail(v, "control character in string");
        if (c == '\\') {
            v->i++;
            if (v->i >= v->len)
                break;
            c = (unsigned char)v->s[v->i];
            if (c == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (v->i + (size_t)k >= v->len || hexval(v->s[v->i + (size_t)k]) < 0)
                        return v_fail(v, "bad \\u escape");
                v->i += 4;
            } else if (strchr("\"\\/bfnrt", c) == NULL) {
                return v_fail(v, "bad escape in string");
            }
        }
        v->i++;
    }
    return v_fail(v, "unterminated string");
}

static int v_number(struct vstate *v)
{
    size_t st = v->i;
    if (v->i < v->len && v->s[v->i] == '-')
        v->i++;
    if (v->i >= v->len || v->s[v->i] < '0' || v->s[v->i] > '9')
        return v_fail(v, "bad number");
    if (v->s[v->i] == '0' && v->i + 1 < v->len && v->s[v->i + 1] >= '0' && v->s[v->i + 1] <= '9')
        return v_fail(v, "leading zero in number");
    while (v->i < v->len && v->s[v->i] >= '0' && v->s[v->i] <= '9')
        v->i++;
    if (v->i < v->len && v->s[v->i] == '.') {
        v->i++;
        if (v->i >= v->len || v->s[v->i] < '0' || v->s[v->i] > '9')
            return v_fail(v, "bad number");
        while (v->i < v->len && v->s[v->i] >= '0' && v->s[v->i] <= '9')
            v->i++;
    }
    if (v->i < v->len && (v->s[v->i] == 'e' || v->s[v->i] == 'E')) {
        v->i++;
        if (v->i < v->len && (v->s[v->i] == '+' || v->s[v->i] == '-'))
            v->i++;
        if (v->i >= v->len || v->s[v->i] < '0' || v->s[v->i] > '9')
            return v_fail(v, "bad number");
        while (v->i < v->len && v->s[v->i] >= '0' && v->s[v->i] <= '9')
            v->i++;
    }
    (void)st;
    return 0;
}

static int v_value(struct vstate *v, int depth);

static int v_container(struct vstate *v, int depth, char close)
{
    int first = 1;
    if (depth >= JSON_MAX_DEPTH)
        return v_fail(v, "nesting too deep");
    v->i++;
    for (;;) {
        skip_ws(v);
        if (v->i >= v->len)
            return v_fail(v, "unexpected end of JSON");
        if (v->s[v->i] == close) {
            if (!first)
                return v_fail(v, "trailing comma");
            v->i++;
            return 0;
        }
        if (close == '}') {
            if (v->s[v->i] != '"')
                return v_fail(v, "expected a string key");
            if (v_string(v) != 0)
                return -1;
            skip_ws(v);
            if (v->i >= v->len || v->s[v->i] != ':')
                return v_fail(v, "expected ':' after key");
            v->i++;
            skip_ws(v);
        }
        if (v_value(v, depth + 1) != 0)
            return -1;
        skip_ws(v);
        if (v->i >= v->len)
            return v_fail(v, "unexpected end of JSON");
        if (v->s[v->i] == close) {
            v->i++;
            return 0;
        }
        if (v->s[v->i] != ',')
            return v_fail(v, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
        v->i++;
        first = 0;
        skip_ws(v);
        if (v->i < v->len && v->s[v->i] == close)
            return v_fail(v, "trailing comma");
    }
}

static int v_value(struct vstate *v, int depth)
{
    if (v->i >= v->len)
        return v_fail(v, "unexpected end of JSON");
    switch (v->s[v->i]) {
    case '{':
        return v_container(v, depth, '}');
    case '[':
        return v_container(v, depth, ']');
    case '"':
        return v_string(v);
    case 't':
        if (v->len - v->i >= 4 && memcmp(v->s + v->i, "true", 4) == 0) {
            v->i += 4;
            return 0;
        }
        break;
    case 'f':
        if (v->len - v->i >= 5 && memcmp(v->s + v->i, "false", 5) == 0) {
            v->i += 5;
            return 0;
        }
        break;
    case 'n':
        if (v->len - v->i >= 4 && memcmp(v->s + v->i, "null", 4) == 0) {
            v->i += 4;
            return 0;
        }
        break;
    default:
        if (v->s[v->i] == '-' || (v->s[v->i] >= '0' && v->s[v->i] <= '9'))
            return v_number(v);
        break;
    }
    return v_fail(v, "unexpected character");
}

/* Returns 0, or -1 with "line:col: message" in err. */
static int json_validate(const char *js, size_t len, char *err, size_t errlen)
{
    struct vstate v = {js, len, 0, NULL};
    int line, col;
    skip_ws(&v);
    if (v_value(&v, 0) == 0) {
        skip_ws(&v);
        if (v.i == len)
            return 0;
        v.msg = js[v.i] == '\0' ? "NUL byte in document" : "trailing data after the JSON value";
    }
    pos_of(js, v.i, &line, &col);
    snprintf(err, errlen, "%d:%d: %s", line, col, v.msg ? v.msg : "invalid JSON");
    return -1;
}

int certs_json_parse(struct certs_json *j, const char *js, size_t len, int max_tokens, char *err,
                     size_t errlen)
{
    return certs_json_parse_flags(j, js, len, max_tokens, 0, err, errlen);
}

int certs_json_parse_flags(struct certs_json *j, const char *js, size_t len, int max_tokens,
                           unsigned flags, char *err, size_t errlen)
{
    jsmn_parser p;
    int n, line, col;
    size_t off;

    memset(j, 0, sizeof(*j));
    if (max_tokens <= 0)
        max_tokens = CERTS_JSON_MAX_TOKENS_DEFAULT;
    if (json_validate(js, len, err, errlen) != 0)
        return -1;
    /* A first pass counts tokens so we allocate only what the document needs. */
    jsmn_init(&p);
    n = jsmn_parse(&p, js, len, NULL, 0);
    if (n == JSMN_ERROR_INVAL || n == JSMN_ERROR_PART) {
        /* Re-run with a budget to locate the error. */
        jsmntok_t *t = calloc((size_t)max_tokens, sizeof(*t));
        off = len;
        if (t != NULL) {
            jsmn_init(&p);
            (void)jsmn_parse(&p, js, len, t, (unsigned)max_tokens);
            off = error_offset(js, len, t, (int)p.toknext);
            free(t);
        }
        pos_of(js, off, &line, &col);
        snprintf(err, errlen, "%d:%d: %s", line, col,
                 n == JSMN_ERROR_PART ? "unexpected end of JSON" : "invalid JSON");
        return -1;
    }
    if (n <= 0) {
        snprintf(err, errlen, "1:1: empty document");
        return -1;
    }
    if (n > max_tokens) {
        snprintf(err, errlen, "1:1: document too large (%d JSON tokens, limit %d)", n, max_tokens);
        return -1;
    }
    j->tok = calloc((size_t)n, sizeof(*j->tok));
    if (j->tok == NULL) {
        snprintf(err, errlen, "1:1: out of memory");
        return -1;
    }
    jsmn_init(&p);
    j->ntok = jsmn_parse(&p, js, len, j->tok, (unsigned)n);
    j->js = js;
    j->len = len;
    if (j->ntok != n) {
        certs_json_clear(j);
        snprintf(err, errlen, "1:1: invalid JSON");
        return -1;
    }
    /* Exactly one top-level value. */
    if (certs_json_skip(j, 0) != j->ntok) {
        int next = certs_json_skip(j, 0);
        certs_json_errf(j, next, err, errlen, "trailing data after the JSON value");
        certs_json_clear(j);
        return -1;
    }
    /* Duplicate keys are refused: two parsers that pick different duplicates
     * would see two different documents (a signed bundle must mean one
     * thing). Linear in the keys' bytes (json_keys.c). */
    if ((flags & CERTS_JSON_DEFER_KEYS) == 0 && certs_json_check_keys(j, -1, err, errlen) != 0) {
        certs_json_clear(j);
        return -1;
    }
    /* A primitive at top level is valid JSON; callers check the type. */
    return 0;
}

void certs_json_clear(struct certs_json *j)
{
    free(j->tok);
    memset(j, 0, sizeof(*j));
}

int certs_json_skip(const struct certs_json *j, int i)
{
    /* Iterative: the subtree of i ends at the first token whose start is past
     * i's end. Tokens are in document order. */
    int end;
    if (i < 0 || i >= j->ntok)
        return j->ntok;
    end = j->tok[i].end;
    i++;
    while (i < j->ntok && j->tok[i].start < end)
        i++;
    return i;
}

int certs_json_first(const struct certs_json *j, int container)
{
    if (container < 0 || container >= j->ntok || j->tok[container].size == 0)
        return -1;
    return container + 1;
}

int certs_json_next_key(const struct certs_json *j, int key)
{
    int parent = j->tok[key].parent;
    int n = certs_json_skip(j, key + 1);
    if (n >= j->ntok || j->tok[n].parent != parent)
        return -1;
    return n;
}

int certs_json_next_elem(const struct certs_json *j, int elem)
{
    int parent = j->tok[elem].parent;
    int n = certs_json_skip(j, elem);
    if (n >= j->ntok || j->tok[n].parent != parent)
        return -1;
    return n;
}

int certs_json_eq(const struct certs_json *j, int i, const char *s)
{
    size_t n, slen = strlen(s);
    const char *raw;
    char buf[256];
    int got;
    if (i < 0 || i >= j->ntok || j->tok[i].type != JSMN_STRING)
        return 0;
    raw = j->js + j->tok[i].start;
    n = (size_t)(j->tok[i].end - j->tok[i].start);
    if (memchr(raw, '\\', n) == NULL)
        return slen == n && memcmp(raw, s, n) == 0;
    /* Escaped: compare what it means, as every other JSON reader will
     * ("\u0075se" is "use"). A token that does not unescape equals
     * nothing. The unescaped text is never longer than the raw one. */
    if (slen < sizeof(buf)) {
        got = certs_json_str(j, i, buf, sizeof(buf)); /* -1 also when longer than s */
        return got >= 0 && (size_t)got == slen && memcmp(buf, s, slen) == 0;
    }
    {
        char *d = certs_json_strdup(j, i); /* NULL: bad escape, or no memory */
        int eq = d != NULL && strcmp(d, s) == 0;
        free(d);
        return eq;
    }
}

int certs_json_get(const struct certs_json *j, int obj, const char *key)
{
    if (!certs_json_is_obj(j, obj))
        return -1;
    for (int k = certs_json_first(j, obj); k > 0; k = certs_json_next_key(j, k))
        if (certs_json_eq(j, k, key))
            return k + 1;
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Writes UTF-8 for code point cp (< 0x110000) into out[0..4). */
static int put_utf8(unsigned char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static int read_u4(const char *s, size_t n, size_t i, unsigned *cp)
{
    unsigned v = 0;
    if (i + 4 > n)
        return -1;
    for (size_t k = 0; k < 4; k++) {
        int h = hexval(s[i + k]);
        if (h < 0)
            return -1;
        v = (v << 4) | (unsigned)h;
    }
    *cp = v;
    return 0;
}

int certs_json_unescape(const char *s, size_t n, size_t *k, unsigned char out[4])
{
    size_t i = *k;
    unsigned cp, lo;

    if (i >= n)
        return -1;
    switch (s[i]) {
    case '"': case '\\': case '/':
        out[0] = (unsigned char)s[i];
        break;
    case 'b': out[0] = '\b'; break;
    case 'f': out[0] = '\f'; break;
    case 'n': out[0] = '\n'; break;
    case 'r': out[0] = '\r'; break;
    case 't': out[0] = '\t'; break;
    case 'u':
        if (read_u4(s, n, i + 1, &cp) < 0)
            return -1;
        i += 5;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (i + 1 >= n || s[i] != '\\' || s[i + 1] != 'u' || read_u4(s, n, i + 2, &lo) < 0 ||
                lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return -1;
        }
        if (cp == 0)
            return -1; /* an embedded NUL would truncate C strings */
        *k = i;
        return put_utf8(out, cp);
    default:
        return -1;
    }
    *k = i + 1;
    return 1;
}

int certs_json_str(const struct certs_json *j, int i, char *buf, size_t buflen)
{
    const char *s;
    size_t n, o = 0;

    if (i < 0 || i >= j->ntok || j->tok[i].type != JSMN_STRING || buflen == 0)
        return -1;
    s = j->js + j->tok[i].start;
    n = (size_t)(j->tok[i].end - j->tok[i].start);
    for (size_t k = 0; k < n;) {
        unsigned char u[4];
        int w = 1;
        if (s[k] != '\\') {
            u[0] = (unsigned char)s[k++];
        } else {
            k++;
            if ((w = certs_json_unescape(s, n, &k, u)) < 0)
                return -1;
        }
        if (o + (size_t)w >= buflen)
            return -1; /* no room for these bytes and the NUL */
        memcpy(buf + o, u, (size_t)w);
        o += (size_t)w;
    }
    buf[o] = '\0';
    return (int)o;
}

char *certs_json_strdup(const struct certs_json *j, int i)
{
    size_t cap;
    char *buf;
    if (i < 0 || i >= j->ntok || j->tok[i].type != JSMN_STRING)
        return NULL;
    cap = (size_t)(j->tok[i].end - j->tok[i].start) + 1; /* unescaping never grows */
    buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    if (certs_json_str(j, i, buf, cap) < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

int certs_json_int(const struct certs_json *j, int i, int64_t *out)
{
    const char *s;
    size_t n, k = 0;
    int neg = 0;
    int64_t v = 0;

    if (i < 0 || i >= j->ntok || j->tok[i].type != JSMN_PRIMITIVE)
        return -1;
    s = j->js + j->tok[i].start;
    n = (size_t)(j->tok[i].end - j->tok[i].start);
    if (n > 0 && s[0] == '-') {
        neg = 1;
        k = 1;
    }
    if (k >= n)
        return -1;
    for (; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return -1;
        if (v > (INT64_MAX - (s[k] - '0')) / 10)
            return -1;
        v = v * 10 + (s[k] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

int certs_json_bool(const struct certs_json *j, int i, int *out)
{
    if (i < 0 || i >= j->ntok || j->tok[i].type != JSMN_PRIMITIVE)
        return -1;
    if (j->tok[i].end - j->tok[i].start == 4 && memcmp(j->js + j->tok[i].start, "true", 4) == 0) {
        *out = 1;
        return 0;
    }
    if (j->tok[i].end - j->tok[i].start == 5 && memcmp(j->js + j->tok[i].start, "false", 5) == 0) {
        *out = 0;
        return 0;
    }
    return -1;
}

int certs_json_is_obj(const struct certs_json *j, int i)
{
    return i >= 0 && i < j->ntok && j->tok[i].type == JSMN_OBJECT;
}

int certs_json_is_arr(const struct certs_json *j, int i)
{
    return i >= 0 && i < j->ntok && j->tok[i].type == JSMN_ARRAY;
}

int certs_json_is_str(const struct certs_json *j, int i)
{
    return i >= 0 && i < j->ntok && j->tok[i].type == JSMN_STRING;
}

void certs_json_pos(const struct certs_json *j, int i, int *line, int *col)
{
    size_t off;
    if (i < 0 || i >= j->ntok) {
        pos_of(j->js, j->len, line, col);
        return;
    }
    off = (size_t)j->tok[i].start;
    if (j->tok[i].type == JSMN_STRING && off > 0)
        off--; /* point at the opening quote */
    pos_of(j->js, off, line, col);
}

int certs_json_errf(const struct certs_json *j, int i, char *err, size_t errlen, const char *fmt,
                    ...)
{
    va_list ap;
    int line, col, n;
    certs_json_pos(j, i, &line, &col);
    n = snprintf(err, errlen, "%d:%d: ", line, col);
    if (n >= 0 && (size_t)n < errlen) {
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int certs_duration_parse(const char *s, size_t len, int64_t *ms)
{
    /* Go-style: one or more <number><unit> with unit in ms|s|m|h; a number
     * may have a fraction. "0" alone is accepted. */
    double total = 0;
    size_t i = 0;
    if (len == 0)
        return -1;
    if (len == 1 && s[0] == '0') {
        *ms = 0;
        return 0;
    }
    while (i < len) {
        double v = 0, scale = 1, unit;
        int digits = 0, frac = 0;
        while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) {
            if (s[i] == '.') {
                if (frac || i + 1 >= len || s[i + 1] < '0' || s[i + 1] > '9')
                    return -1; /* "1.s", "1..5s" */
                frac = 1;
            } else if (frac) {
                scale /= 10;
                v += (s[i] - '0') * scale;
                digits++;
            } else {
                v = v * 10 + (s[i] - '0');
                digits++;
            }
            i++;
            if (digits > 15)
                return -1;
        }
        if (digits == 0)
            return -1;
        if (i + 2 <= len && s[i] == 'm' && s[i + 1] == 's') {
            unit = 1;
            i += 2;
        } else if (i < len && s[i] == 's') {
            unit = 1000;
            i++;
        } else if (i < len && s[i] == 'm') {
            unit = 60000;
            i++;
        } else if (i < len && s[i] == 'h') {
            unit = 3600000;
            i++;
        } else {
            return -1;
        }
        total += v * unit;
        if (total > 100.0 * 365 * 24 * 3600000)
            return -1;
    }
    *ms = (int64_t)(total + 0.5);
    return 0;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

long certs_b64_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
    /* Strict: padding only at the end and only to complete the last group
     * of four, and the unused bits of the last symbol must be zero, so
     * every byte string has exactly one accepted encoding per alphabet
     * (no malleable signatures or certificates). */
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0, pad = 0, nsym = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        int v;
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad)
            return -1; /* data after padding */
        v = b64val(c);
        if (v < 0)
            return -1;
        nsym++;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= outlen)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (bits >= 6 || acc != 0)
        return -1; /* a lone symbol, or non-zero leftover bits */
    if (pad > 0 && ((nsym + pad) % 4 != 0 || pad > 2 || nsym % 4 == 0))
        return -1;
    return (long)o;
}

size_t certs_b64_encode(const unsigned char *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = ((unsigned)in[i] << 16) | ((unsigned)in[i + 1] << 8) | in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}
