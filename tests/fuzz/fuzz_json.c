/*
 * fuzz_json.c - certs_json_parse() on arbitrary bytes (certs/json.c).
 *
 * On success every token is walked with the accessors and checked:
 *   - start <= end, both within the input; children lie inside their
 *     parent; certs_json_skip() moves forward and stays in range;
 *   - iterating a container with first/next_key/next_elem visits exactly
 *     tok.size children, and certs_json_get() finds each raw key at the
 *     token after it (duplicate keys are refused by the parser);
 *   - certs_json_str() never writes more than the raw string, returns a
 *     NUL-terminated result with no inner NUL, agrees with
 *     certs_json_strdup(), and refuses buffers one byte too small;
 *   - certs_json_int() / certs_json_bool() only succeed on primitives whose
 *     text says so; certs_json_pos() gives line and column >= 1.
 * On failure the error text must start with "line:col: ".
 *
 * Duplicate keys, differentially: the input is also tokenized with the key
 * check deferred, and an independent quadratic reference (every key
 * unescaped with certs_json_str(), compared with every earlier key of its
 * object) decides what the parser must say: nothing, "duplicate key" or "bad
 * escape in key" at that key's line:col. certs_json_check_keys_stats() must
 * give the same text from the table, from the sort and with every hash
 * colliding, with table work within its linear budget.
 */
#include <inttypes.h>
#include <string.h>

#include "certs.h"
#include "fuzz_common.h"

/* Small budget: keeps each run fast and reaches the too-many-tokens path. */
#define FUZZ_JSON_TOKENS 4096

static void check_err_prefix(const char *err)
{
    int line = 0, col = 0, n = 0;
    FUZZ_CHECKF(sscanf(err, "%d:%d: %n", &line, &col, &n) == 2 && n > 0 && line >= 1 && col >= 1,
                "error text '%s'", err);
}

static void check_string(const struct certs_json *j, int i)
{
    const jsmntok_t *t = &j->tok[i];
    size_t raw = (size_t)(t->end - t->start);
    char *buf = malloc(raw + 1);
    char *dup;
    int n;

    FUZZ_CHECK(buf != NULL);
    n = certs_json_str(j, i, buf, raw + 1);
    dup = certs_json_strdup(j, i);
    if (n < 0) {
        FUZZ_CHECK(dup == NULL);
    } else {
        FUZZ_CHECKF((size_t)n <= raw, "unescaped %d > raw %zu", n, raw);
        FUZZ_CHECK(buf[n] == '\0');
        FUZZ_CHECK(strlen(buf) == (size_t)n);
        FUZZ_CHECK(dup != NULL && strcmp(dup, buf) == 0);
        /* Escape-free strings come back byte for byte. */
        if (memchr(j->js + t->start, '\\', raw) == NULL)
            FUZZ_CHECK((size_t)n == raw && memcmp(buf, j->js + t->start, raw) == 0);
        /* Exactly n + 1 bytes fit; n bytes must be refused, not truncated. */
        {
            char *tight = malloc((size_t)n + 1);
            FUZZ_CHECK(tight != NULL);
            FUZZ_CHECK(certs_json_str(j, i, tight, (size_t)n + 1) == n);
            FUZZ_CHECK(memcmp(tight, buf, (size_t)n + 1) == 0);
            if (n > 0)
                FUZZ_CHECK(certs_json_str(j, i, tight, (size_t)n) == -1);
            free(tight);
        }
        FUZZ_CHECK(certs_json_is_str(j, i));
        /* Lookups compare the unescaped text: equal to itself, to no other
         * string (one byte changed, one added). */
        FUZZ_CHECK(certs_json_eq(j, i, buf));
        {
            char *other = malloc((size_t)n + 2);
            FUZZ_CHECK(other != NULL);
            memcpy(other, buf, (size_t)n + 1);
            if (n > 0) {
                other[n - 1] = other[n - 1] == 'a' ? 'b' : 'a';
                FUZZ_CHECK(!certs_json_eq(j, i, other));
                other[n - 1] = buf[n - 1];
            }
            other[n] = 'x';
            other[n + 1] = '\0';
            FUZZ_CHECK(!certs_json_eq(j, i, other));
            free(other);
        }
    }
    free(dup);
    free(buf);
}

static void check_primitive(const struct certs_json *j, int i)
{
    const jsmntok_t *t = &j->tok[i];
    const char *p = j->js + t->start;
    size_t n = (size_t)(t->end - t->start);
    int64_t v = 0;
    int b = -1;

    FUZZ_CHECK(n > 0);
    if (certs_json_int(j, i, &v) == 0) {
        char txt[32];
        /* Integers have one spelling we can compare against: no '+', no
         * fraction or exponent. A leading zero ("007") is not JSON and
         * must not get here. */
        snprintf(txt, sizeof(txt), "%" PRId64, v);
        FUZZ_CHECKF((strlen(txt) == n && memcmp(txt, p, n) == 0) || (n == 2 && memcmp(p, "-0", 2) == 0),
                    "int %" PRId64 " from '%.*s'", v, (int)n, p);
    }
    if (certs_json_bool(j, i, &b) == 0) {
        FUZZ_CHECK(b == 0 || b == 1);
        FUZZ_CHECK(b ? (n == 4 && memcmp(p, "true", 4) == 0) : (n == 5 && memcmp(p, "false", 5) == 0));
    }
    {
        char sb[8];
        FUZZ_CHECK(certs_json_str(j, i, sb, sizeof(sb)) == -1);
        FUZZ_CHECK(certs_json_strdup(j, i) == NULL);
    }
}

static void check_container(const struct certs_json *j, int i)
{
    const jsmntok_t *t = &j->tok[i];
    int obj = certs_json_is_obj(j, i);
    int count = 0;
    int k = certs_json_first(j, i);

    FUZZ_CHECK(obj != certs_json_is_arr(j, i));
    for (; k > 0 && count < t->size; count++) {
        FUZZ_CHECK(k > i && k < j->ntok);
        FUZZ_CHECK(j->tok[k].parent == i);
        if (obj) {
            const jsmntok_t *kt = &j->tok[k];
            FUZZ_CHECK(kt->type == JSMN_STRING && kt->size == 1);
            FUZZ_CHECK(k + 1 < j->ntok && j->tok[k + 1].parent == k);
            {
                /* looked up by what it means: keys are unique once
                 * unescaped, so each finds its own value */
                char *key = certs_json_strdup(j, k);
                FUZZ_CHECK(key != NULL);
                FUZZ_CHECKF(certs_json_get(j, i, key) == k + 1, "key '%s'", key);
                free(key);
            }
            k = certs_json_next_key(j, k);
        } else {
            k = certs_json_next_elem(j, k);
        }
    }
    FUZZ_CHECKF(count == t->size, "visited %d of %d children", count, t->size);
    FUZZ_CHECK(k == -1 || t->size == 0);
}

/* Keys up to which the quadratic reference runs. */
#define REF_MAX_KEYS 2048 /* every key FUZZ_JSON_TOKENS allows */

/* Unescaped key t into a malloc'ed buffer (*n bytes); NULL if it does not
 * unescape. */
static char *ref_key(const struct certs_json *j, int t, int *n)
{
    size_t raw = (size_t)(j->tok[t].end - j->tok[t].start);
    char *b = malloc(raw + 1);
    FUZZ_CHECK(b != NULL);
    *n = certs_json_str(j, t, b, raw + 1);
    if (*n < 0) {
        free(b);
        return NULL;
    }
    return b;
}

/* The reference: the first key, in token order, that does not unescape
 * (*bad = 1) or equals an earlier key of its object; 0 if none, -1 if the
 * document has too many keys to check this way. */
static int ref_dup(const struct certs_json *j, int *bad)
{
    char *k[REF_MAX_KEYS];
    int tok[REF_MAX_KEYS], len[REF_MAX_KEYS], nk = 0, found = 0;

    for (int t = 1; t < j->ntok && found == 0; t++) {
        int p = j->tok[t].parent;
        if (p < 0 || j->tok[p].type != JSMN_OBJECT)
            continue;
        if (nk == REF_MAX_KEYS) {
            found = -1;
            break;
        }
        k[nk] = ref_key(j, t, &len[nk]);
        tok[nk] = t;
        if (k[nk] == NULL) {
            *bad = 1;
            found = t;
            break;
        }
        for (int i = 0; i < nk; i++) {
            if (j->tok[tok[i]].parent == p && len[i] == len[nk] &&
                memcmp(k[i], k[nk], (size_t)len[nk]) == 0) {
                *bad = 0;
                found = t;
                break;
            }
        }
        nk++;
    }
    for (int i = 0; i < nk; i++)
        free(k[i]);
    return found;
}

/* The parser's answer on keys against the reference, in every mode. */
static void check_keys_differential(const char *js, size_t size)
{
    struct certs_json j;
    char err[256] = "", want[256] = "", got[256];
    int bad = 0, at, rc, line = 0, col = 0;
    size_t nkeys = 0, bytes = 0;

    if (certs_json_parse_flags(&j, js, size, FUZZ_JSON_TOKENS, CERTS_JSON_DEFER_KEYS, err,
                               sizeof(err)) != 0) {
        /* refused before keys: the full parse refuses it the same way */
        struct certs_json j2;
        char err2[256] = "";
        FUZZ_CHECK(certs_json_parse(&j2, js, size, FUZZ_JSON_TOKENS, err2, sizeof(err2)) != 0);
        FUZZ_CHECKF(strcmp(err, err2) == 0, "deferred '%s', full '%s'", err, err2);
        return;
    }
    at = ref_dup(&j, &bad);
    if (at > 0) {
        certs_json_pos(&j, at, &line, &col);
        snprintf(want, sizeof(want), "%d:%d: %s", line, col,
                 bad ? "bad escape in key" : "duplicate key \"");
    }
    for (int t = 1; t < j.ntok; t++) {
        int p = j.tok[t].parent;
        if (p >= 0 && j.tok[p].type == JSMN_OBJECT) {
            nkeys++;
            bytes += (size_t)(j.tok[t].end - j.tok[t].start);
        }
    }
    {
        static const unsigned modes[] = {0, CERTS_JSON_KEYS_SORT, CERTS_JSON_KEYS_COLLIDE};
        char first[256] = "";
        for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
            struct certs_json_keystats st = {0};
            got[0] = '\0';
            rc = certs_json_check_keys_stats(&j, -1, modes[m], &st, got, sizeof(got));
            FUZZ_CHECKF(rc == 0 || rc == -1, "mode %u: rc %d (%s)", modes[m], rc, got);
            if (at >= 0)
                FUZZ_CHECKF((rc == 0) == (at == 0) &&
                                (at == 0 || strncmp(got, want, strlen(want)) == 0),
                            "mode %u: got rc %d '%s', reference says '%s'", modes[m], rc, got,
                            at ? want : "no duplicate");
            if (m == 0) {
                snprintf(first, sizeof(first), "%s", rc == 0 ? "" : got);
                FUZZ_CHECKF(st.probes <= 32 + 9 * nkeys + 2 * bytes,
                            "%lu probes for %zu keys of %zu bytes", st.probes, nkeys, bytes);
            } else {
                FUZZ_CHECKF(strcmp(first, rc == 0 ? "" : got) == 0,
                            "mode %u says '%s', the table '%s'", modes[m], got, first);
            }
        }
        /* and the full parse says the same */
        {
            struct certs_json j2;
            char err2[256] = "";
            rc = certs_json_parse(&j2, js, size, FUZZ_JSON_TOKENS, err2, sizeof(err2));
            FUZZ_CHECKF(strcmp(first, rc == 0 ? "" : err2) == 0, "parse '%s', check '%s'", err2,
                        first);
            if (rc == 0)
                certs_json_clear(&j2);
        }
    }
    certs_json_clear(&j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *js = (const char *)data;
    struct certs_json j;
    char err[256] = "";

    check_keys_differential(js, size);
    if (certs_json_parse(&j, js, size, FUZZ_JSON_TOKENS, err, sizeof(err)) != 0) {
        check_err_prefix(err);
        FUZZ_CHECK(j.tok == NULL && j.ntok == 0);
        certs_json_clear(&j);
        return 0;
    }
    FUZZ_CHECK(j.ntok >= 1 && j.ntok <= FUZZ_JSON_TOKENS);
    FUZZ_CHECK(j.js == js && j.len == size);
    FUZZ_CHECK(certs_json_skip(&j, 0) == j.ntok);
    for (int i = 0; i < j.ntok; i++) {
        const jsmntok_t *t = &j.tok[i];
        int line = 0, col = 0, next;

        FUZZ_CHECKF(t->start >= 0 && t->start <= t->end && (size_t)t->end <= size,
                    "token %d [%d,%d) in %zu bytes", i, t->start, t->end, size);
        if (i == 0)
            FUZZ_CHECK(t->parent == -1);
        else
        {
            /* A container holds its children; a key (string) is followed
             * by its value. */
            const jsmntok_t *pt;
            FUZZ_CHECK(t->parent >= 0 && t->parent < i);
            pt = &j.tok[t->parent];
            if (pt->type == JSMN_STRING)
                FUZZ_CHECK(pt->size == 1 && t->start > pt->end);
            else
                FUZZ_CHECK((pt->type == JSMN_OBJECT || pt->type == JSMN_ARRAY) &&
                           pt->start <= t->start && pt->end >= t->end);
        }
        next = certs_json_skip(&j, i);
        FUZZ_CHECK(next > i && next <= j.ntok);
        certs_json_pos(&j, i, &line, &col);
        FUZZ_CHECK(line >= 1 && col >= 1);
        switch (t->type) {
        case JSMN_STRING:
            /* The quote before the string is in the input too. */
            FUZZ_CHECK(t->start >= 1 && js[t->start - 1] == '"' && (size_t)t->end < size &&
                       js[t->end] == '"');
            check_string(&j, i);
            break;
        case JSMN_PRIMITIVE:
            check_primitive(&j, i);
            break;
        case JSMN_OBJECT:
        case JSMN_ARRAY:
            check_container(&j, i);
            break;
        default:
            FUZZ_CHECKF(0, "token %d has type %d", i, (int)t->type);
        }
    }
    certs_json_clear(&j);
    FUZZ_CHECK(j.tok == NULL && j.ntok == 0);
    return 0;
}
