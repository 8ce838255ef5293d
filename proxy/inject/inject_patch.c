/*
 * inject_patch.c - the JSON plumbing under `picket inject` (see inject.h):
 * a growable output buffer, the strict document reader (size cap, UTF-8
 * check, certs_json), a small RFC 6902 applier for the CLI filter and a
 * JSON re-formatter.
 *
 * The applier splices text into the original document instead of building
 * a DOM: each op resolves its path on the original token tree and becomes
 * "insert these bytes here" or "replace this value"; the result is then
 * re-formatted and re-parsed with the strict parser, so a patch that would
 * produce a duplicate key or broken JSON is an error, never output. The
 * cost of this design is that an op cannot target what an earlier op in
 * the same patch added; the patches inject.c builds never do (a missing
 * array or object is added whole, with its members inside).
 */
#include "inject.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certs_json.h"

#define OUT_MAX (64u * 1024 * 1024) /* any output buffer; far above 4 MiB in + ops */
#define SEG_MAX 1024                /* one JSON Pointer segment, decoded */

/* ---- growable output buffer ------------------------------------------- */

void px_sb_add(struct px_sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > OUT_MAX) {
            b->oom = 1;
            return;
        }
        np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void px_sb_puts(struct px_sbuf *b, const char *s)
{
    px_sb_add(b, s, strlen(s));
}

void px_sb_printf(struct px_sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->oom = 1; /* only used for short fixed texts; a cut one is a bug */
        return;
    }
    px_sb_add(b, tmp, (size_t)n);
}

/* A JSON string literal, quotes included. */
void px_sb_json_str(struct px_sbuf *b, const char *s, size_t n)
{
    px_sb_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            px_sb_add(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            px_sb_printf(b, "\\u%04x", c);
        } else {
            px_sb_add(b, s + i, 1);
        }
    }
    px_sb_add(b, "\"", 1);
}

void px_sb_free(struct px_sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}


/* ---- small token helpers ---------------------------------------------- */

/* The bytes of value token i in the document, quotes included for strings. */
static void tok_range(const struct certs_json *j, int i, size_t *s, size_t *e)
{
    *s = (size_t)j->tok[i].start;
    *e = (size_t)j->tok[i].end;
    if (j->tok[i].type == JSMN_STRING) {
        (*s)--;
        (*e)++;
    }
}


/* Member of obj whose unescaped key equals key[0..klen), or -1. Keys are
 * compared unescaped because "a\/b" and "a/b" are the same key. */
static int find_member(const struct certs_json *j, int obj, const char *key, size_t klen)
{
    char tmp[SEG_MAX + 1];
    for (int k = certs_json_first(j, obj); k > 0; k = certs_json_next_key(j, k)) {
        int n = certs_json_str(j, k, tmp, sizeof(tmp));
        if (n >= 0 && (size_t)n == klen && memcmp(tmp, key, klen) == 0)
            return k + 1;
    }
    return -1;
}


/* Offset of the first byte that is not well-formed UTF-8 (RFC 3629: no
 * overlongs, no surrogates, at most U+10FFFF), or len. The strict parser
 * checks the grammar only; we re-emit strings byte for byte, so bad UTF-8
 * would reach kubectl and the API server, which refuse it. */
size_t px_utf8_bad_offset(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i], need, min, cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            min = 0x80;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            min = 0x800;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            min = 0x10000;
            cp = c & 0x07;
        } else {
            return i;
        }
        if (len - i <= need)
            return i;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += need + 1;
    }
    return len;
}

int px_inject_parse_doc(struct certs_json *j, const char *js, size_t len, int max_tokens,
                        char *err, size_t errlen)
{
    size_t bad;
    memset(j, 0, sizeof(*j));
    if (len > PX_INJECT_MAX_BYTES) {
        snprintf(err, errlen, "1:1: document too large (%zu bytes, limit %u)", len,
                 PX_INJECT_MAX_BYTES);
        return PX_INJECT_EINPUT;
    }
    bad = px_utf8_bad_offset((const unsigned char *)js, len);
    if (bad < len) {
        int line = 1, col = 1;
        for (size_t i = 0; i < bad; i++) {
            if (js[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        snprintf(err, errlen, "%d:%d: invalid UTF-8", line, col);
        return PX_INJECT_EINPUT;
    }
    if (certs_json_parse(j, js, len, max_tokens, err, errlen) != 0)
        return PX_INJECT_EINPUT;
    if (!certs_json_is_obj(j, 0)) {
        certs_json_errf(j, 0, err, errlen, "expected a JSON object");
        certs_json_clear(j);
        return PX_INJECT_EINPUT;
    }
    return 0;
}


/* ---- the applier -------------------------------------------------------- */

struct splice {
    size_t off, del;        /* replace doc[off, off+del) */
    size_t pre_off, pre_len; /* then write pre (in the applier's text buffer) */
    const char *val;        /* and the op's value, borrowed from the patch */
    size_t val_len;
    int seq;
};

static int splice_cmp(const void *a, const void *b)
{
    const struct splice *x = a, *y = b;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Decodes one pointer segment (RFC 6901 section 4). -1 on a bad "~x" or
 * an overlong segment. */
static int seg_decode(const char *s, size_t n, char *out, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o >= SEG_MAX)
            return -1;
        if (s[i] != '~') {
            out[o++] = s[i];
            continue;
        }
        if (i + 1 >= n || (s[i + 1] != '0' && s[i + 1] != '1'))
            return -1;
        out[o++] = s[i + 1] == '0' ? '~' : '/';
        i++;
    }
    *outlen = o;
    return 0;
}

/* Array element `seg` (a decimal index without leading zeros) or -1. */
static int array_elem(const struct certs_json *j, int arr, const char *seg, size_t n)
{
    long idx = 0;
    int e, k = 0;
    if (n == 0 || n > 9 || (n > 1 && seg[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (seg[i] < '0' || seg[i] > '9')
            return -1;
        idx = idx * 10 + (seg[i] - '0');
    }
    for (e = certs_json_first(j, arr); e > 0; e = certs_json_next_elem(j, e), k++)
        if (k == idx)
            return e;
    return -1;
}

struct applier {
    const struct certs_json *j;
    struct splice *sp;
    size_t nsp, capsp;
    int *added; /* per container token: members/elements appended so far */
    struct px_sbuf txt;
};

static int add_splice(struct applier *a, size_t off, size_t del, size_t pre_off, size_t pre_len,
                      const char *val, size_t val_len)
{
    if (a->nsp == a->capsp) {
        size_t cap = a->capsp ? a->capsp * 2 : 16;
        struct splice *n = realloc(a->sp, cap * sizeof(*n));
        if (n == NULL)
            return PX_INJECT_ENOMEM;
        a->sp = n;
        a->capsp = cap;
    }
    a->sp[a->nsp] = (struct splice){off, del, pre_off, pre_len, val, val_len, (int)a->nsp};
    a->nsp++;
    return 0;
}

/* One op: resolve `path` on the document, record the splice. */
static int apply_op(struct applier *a, int is_add, const char *path, size_t plen, const char *val,
                    size_t vlen, char *err, size_t errlen)
{
    const struct certs_json *j = a->j;
    char seg[SEG_MAX + 1];
    size_t slen, i = 1, s, e;
    int cur = 0, tgt;

    if (plen == 0 || path[0] != '/') {
        snprintf(err, errlen, "path \"%.*s\": expected a JSON Pointer below the root",
                 (int)(plen > 200 ? 200 : plen), path);
        return PX_INJECT_EINPUT;
    }
    for (;;) {
        size_t end = i;
        int last;
        while (end < plen && path[end] != '/')
            end++;
        last = end == plen;
        if (seg_decode(path + i, end - i, seg, &slen) != 0)
            goto bad_path;
        if (certs_json_is_obj(j, cur)) {
            tgt = find_member(j, cur, seg, slen);
        } else if (certs_json_is_arr(j, cur)) {
            if (last && is_add && slen == 1 && seg[0] == '-')
                tgt = -2;
            else if (last && is_add)
                goto bad_index;
            else
                tgt = array_elem(j, cur, seg, slen);
        } else {
            goto bad_path;
        }
        if (last)
            break;
        if (tgt < 0)
            goto bad_path;
        cur = tgt;
        i = end + 1;
    }
    if (tgt >= 0) { /* replace an existing value (add on a member replaces it too) */
        tok_range(j, tgt, &s, &e);
        return add_splice(a, s, e - s, 0, 0, val, vlen);
    }
    if (!is_add)
        goto bad_path;
    {
        size_t pre = a->txt.len;
        int comma = j->tok[cur].size > 0 || a->added[cur] > 0;
        px_sb_puts(&a->txt, comma ? "," : "");
        if (tgt == -1) { /* new object member */
            px_sb_json_str(&a->txt, seg, slen);
            px_sb_add(&a->txt, ":", 1);
        }
        if (a->txt.oom)
            return PX_INJECT_ENOMEM;
        a->added[cur]++;
        /* insert just before the closing '}' or ']' */
        return add_splice(a, (size_t)j->tok[cur].end - 1, 0, pre, a->txt.len - pre, val, vlen);
    }
bad_index:
    snprintf(err, errlen, "path \"%.*s\": array inserts by index are not supported; use \"-\"",
             (int)(plen > 200 ? 200 : plen), path);
    return PX_INJECT_EINPUT;
bad_path:
    snprintf(err, errlen, "path \"%.*s\": not found in the document",
             (int)(plen > 200 ? 200 : plen), path);
    return PX_INJECT_EINPUT;
}

static int collect_ops(struct applier *a, const struct certs_json *pj, char *err, size_t errlen)
{
    int n = 0;
    if (!certs_json_is_arr(pj, 0)) {
        snprintf(err, errlen, "patch: expected an array of operations");
        return PX_INJECT_EINPUT;
    }
    for (int op = certs_json_first(pj, 0); op > 0; op = certs_json_next_elem(pj, op), n++) {
        int o = certs_json_get(pj, op, "op"), pt = certs_json_get(pj, op, "path");
        int v = certs_json_get(pj, op, "value"), is_add, rc;
        size_t s, e;
        if (!certs_json_is_str(pj, pt) || v < 0 ||
            !(certs_json_eq(pj, o, "add") || certs_json_eq(pj, o, "replace"))) {
            snprintf(err, errlen, "patch[%d]: only add and replace with path and value "
                                  "are supported", n);
            return PX_INJECT_EINPUT;
        }
        is_add = certs_json_eq(pj, o, "add");
        {
            char *path = certs_json_strdup(pj, pt);
            if (path == NULL) {
                snprintf(err, errlen, "patch[%d]: bad path string", n);
                return PX_INJECT_EINPUT;
            }
            tok_range(pj, v, &s, &e);
            rc = apply_op(a, is_add, path, strlen(path), pj->js + s, e - s, err, errlen);
            free(path);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int build_output(struct applier *a, const char *doc, size_t len, struct px_sbuf *out,
                        char *err, size_t errlen)
{
    size_t pos = 0;
    if (a->nsp > 1)
        qsort(a->sp, a->nsp, sizeof(*a->sp), splice_cmp);
    for (size_t k = 0; k < a->nsp; k++) {
        const struct splice *s = &a->sp[k];
        if (s->off < pos) {
            snprintf(err, errlen, "patch: operations overlap");
            return PX_INJECT_EINPUT;
        }
        px_sb_add(out, doc + pos, s->off - pos);
        px_sb_add(out, a->txt.p ? a->txt.p + s->pre_off : "", s->pre_len);
        px_sb_add(out, s->val, s->val_len);
        pos = s->off + s->del;
    }
    px_sb_add(out, doc + pos, len - pos);
    return out->oom ? PX_INJECT_ENOMEM : 0;
}

int px_json_patch_apply(const char *doc, size_t len, const char *patch, size_t plen, int pretty,
                        char **out, size_t *outlen, char *err, size_t errlen)
{
    struct certs_json j = {0}, pj = {0}, chk = {0};
    struct applier a;
    struct px_sbuf raw = {0};
    char *fmt = NULL;
    size_t flen = 0;
    int rc;

    *out = NULL;
    *outlen = 0;
    memset(&a, 0, sizeof(a));
    rc = px_inject_parse_doc(&j, doc, len, PX_INJECT_MAX_TOKENS, err, errlen);
    if (rc != 0)
        return rc;
    if (plen > PX_INJECT_MAX_BYTES ||
        px_utf8_bad_offset((const unsigned char *)patch, plen) < plen) {
        snprintf(err, errlen, "patch: too large or not UTF-8");
        rc = PX_INJECT_EINPUT;
        goto done;
    }
    if (certs_json_parse(&pj, patch, plen, PX_INJECT_MAX_TOKENS, err, errlen) != 0) {
        rc = PX_INJECT_EINPUT;
        goto done;
    }
    a.j = &j;
    a.added = calloc((size_t)j.ntok, sizeof(*a.added));
    rc = PX_INJECT_ENOMEM;
    if (a.added == NULL)
        goto done;
    rc = collect_ops(&a, &pj, err, errlen);
    if (rc == 0)
        rc = build_output(&a, doc, len, &raw, err, errlen);
    if (rc == 0)
        rc = px_json_format(raw.p, raw.len, pretty, &fmt, &flen);
    if (rc == 0 && certs_json_parse(&chk, fmt, flen, 4 * PX_INJECT_MAX_TOKENS, err, errlen) != 0) {
        /* e.g. an add that repeats a key another add just created */
        rc = PX_INJECT_EINPUT;
    }
    if (rc == 0) {
        *out = fmt;
        *outlen = flen;
        fmt = NULL;
    }
done:
    if (rc == PX_INJECT_ENOMEM)
        snprintf(err, errlen, "out of memory");
    certs_json_clear(&chk);
    certs_json_clear(&pj);
    certs_json_clear(&j);
    free(a.sp);
    free(a.added);
    px_sb_free(&a.txt);
    px_sb_free(&raw);
    free(fmt);
    return rc;
}

static void newline(struct px_sbuf *b, int pretty, int depth)
{
    static const char spaces[] = "                                ";
    if (!pretty)
        return;
    px_sb_add(b, "\n", 1);
    for (int d = 0; d < depth; d++)
        px_sb_add(b, spaces, 2);
}

int px_json_format(const char *js, size_t len, int pretty, char **out, size_t *outlen)
{
    struct px_sbuf b = {0};
    int depth = 0;
    for (size_t i = 0; i < len && !b.oom; i++) {
        char c = js[i];
        size_t k;
        switch (c) {
        case '"':
            for (k = i + 1; k < len && js[k] != '"'; k++)
                if (js[k] == '\\')
                    k++;
            if (k >= len)
                k = len - 1;
            px_sb_add(&b, js + i, k - i + 1);
            i = k;
            break;
        case ' ': case '\t': case '\n': case '\r':
            break;
        case '{': case '[':
            for (k = i + 1; k < len && strchr(" \t\r\n", js[k]) != NULL && js[k] != '\0'; k++)
                ;
            if (k < len && js[k] == (c == '{' ? '}' : ']')) {
                px_sb_add(&b, c == '{' ? "{}" : "[]", 2);
                i = k;
                break;
            }
            px_sb_add(&b, &c, 1);
            newline(&b, pretty, ++depth);
            break;
        case '}': case ']':
            newline(&b, pretty, --depth);
            px_sb_add(&b, &c, 1);
            break;
        case ',':
            px_sb_add(&b, ",", 1);
            newline(&b, pretty, depth);
            break;
        case ':':
            px_sb_add(&b, pretty ? ": " : ":", pretty ? 2 : 1);
            break;
        default:
            px_sb_add(&b, &c, 1);
            break;
        }
    }
    px_sb_add(&b, "\n", 1);
    if (b.oom) {
        px_sb_free(&b);
        return PX_INJECT_ENOMEM;
    }
    *out = b.p;
    *outlen = b.len;
    return 0;
}

