/*
 * certs_json.h - JSON access over jsmn, durations and base64.
 *
 * These live in certs/ because it is the lowest module that needs them
 * (JWKS trust bundles are JSON); policy/ and proxy/ use them too. All
 * functions are pure: they take bytes and return values, never log, never
 * allocate except where a function says it does.
 *
 * Error texts are one line, no trailing period. Errors about a place in a
 * JSON document start with "line:col: " so the caller can prefix a file name.
 */
#ifndef CERTS_JSON_H
#define CERTS_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSMN_HEADER
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

/* Default token budget: jsmn gets a fixed budget so a hostile document cannot
 * make us allocate without bound. 1 token ~ 16 bytes. */
#define CERTS_JSON_MAX_TOKENS_DEFAULT 65536

struct certs_json {
    const char *js; /* borrowed: the document, valid while the struct is used */
    size_t len;
    jsmntok_t *tok; /* owned */
    int ntok;
};

/* Tokenizes `js` (not NUL-terminated; `len` bytes) with at most max_tokens
 * tokens. The document must be a single JSON value with only whitespace
 * after it, and no object may hold the same key twice, compared after
 * unescaping ("a\/b" and "a/b" are one key), so two readers that pick
 * different duplicates cannot see two documents; every key must unescape
 * under certs_json_str()'s rules. The key check is certs_json_check_keys()
 * over the whole document: expected linear time, and its table is bounded by
 * the token count. Returns 0, or -1 with "line:col: message" in err. On
 * success release with certs_json_clear(). `js` is borrowed and must outlive
 * j. Any thread. */
int certs_json_parse(struct certs_json *j, const char *js, size_t len, int max_tokens, char *err,
                     size_t errlen);

/* certs_json_parse() with flags. CERTS_JSON_DEFER_KEYS leaves the duplicate
 * key check out: the caller then runs certs_json_check_keys() on every object
 * it reads, after its own cheaper limits (entry counts, unknown keys), and
 * must refuse any object it does not read. policy_bundle_parse() does this. */
#define CERTS_JSON_DEFER_KEYS 0x1u
int certs_json_parse_flags(struct certs_json *j, const char *js, size_t len, int max_tokens,
                           unsigned flags, char *err, size_t errlen);
void certs_json_clear(struct certs_json *j); /* safe on a zeroed struct */

/* Duplicate keys in object `obj` (or in every object of the document when obj
 * is -1), compared after unescaping. Each key is unescaped as a stream (no
 * copy) into a 64-bit hash and put in an open-addressing table sized to the
 * object (at least twice its key count; objects of up to 32 keys use the
 * stack); keys are compared byte for byte only on a hash match. Expected
 * O(bytes of the keys); if the table ever costs more than a fixed multiple of
 * that (keys built to collide), the keys are sorted instead (merge sort,
 * O(bytes * log keys) in the worst case), so no input is quadratic. Memory,
 * per key: 4 bytes for the key list and 16 to 32 for the table (8-byte
 * slots, 2 to 4 a key), 4 more if sorting, so at most ~20 bytes a token of
 * the caller's budget; none when there are at most 32 keys.
 *
 * Returns 0; -1 with "line:col: duplicate key \"k\"" (the first key, in
 * document order, that repeats an earlier one of its object; k is its raw
 * text, non-printable bytes as '?', cut at 64 bytes) or "line:col: bad
 * escape in key" (a key certs_json_str() would refuse: lone surrogate,
 * \u0000) in err; CERTS_JSON_NOMEM with "out of memory". -1 also if obj is
 * neither -1 nor an object. Any thread; j is only read. */
#define CERTS_JSON_NOMEM (-2)
int certs_json_check_keys(const struct certs_json *j, int obj, char *err, size_t errlen);

/* For tests and benchmarks: the same check, counting its work into *st
 * (added to, not reset; st may be NULL). */
struct certs_json_keystats {
    unsigned long keys;     /* keys unescaped and hashed (again if the table gave up) */
    unsigned long probes;   /* table slots inspected */
    unsigned long compares; /* pairs of keys compared byte for byte (hash matches, sort steps) */
    unsigned long sorted;   /* key sets checked by sorting */
};
#define CERTS_JSON_KEYS_SORT 0x1u    /* test: sort, skip the table */
#define CERTS_JSON_KEYS_COLLIDE 0x2u /* test: every key hashes alike (a flooding input) */
int certs_json_check_keys_stats(const struct certs_json *j, int obj, unsigned flags,
                                struct certs_json_keystats *st, char *err, size_t errlen);

/* Index of the token after the whole subtree at i. */
int certs_json_skip(const struct certs_json *j, int i);

/* For an object at obj: value token of `key`, or -1 if absent. */
int certs_json_get(const struct certs_json *j, int obj, const char *key);

/* Iterate an object: k = certs_json_first(j, obj); k > 0 && n < size;
 * k = certs_json_next(j, k). k is the key token, k + 1 its value.
 * Also works for array elements (k is then the element). */
int certs_json_first(const struct certs_json *j, int container);
int certs_json_next_key(const struct certs_json *j, int key);  /* object: skip key+value */
int certs_json_next_elem(const struct certs_json *j, int elem); /* array: skip element */

/* 1 if token i is a string equal to s once unescaped ("\u0075se" equals
 * "use"; a token with a bad escape equals nothing). */
int certs_json_eq(const struct certs_json *j, int i, const char *s);

/* Unescapes string token i into buf (NUL-terminated). Returns its length,
 * or -1 if i is not a string, has a bad escape, contains \u0000, or does not
 * fit buflen. */
int certs_json_str(const struct certs_json *j, int i, char *buf, size_t buflen);

/* Same, malloc'ed; caller frees. NULL if not a string, bad escape or ENOMEM. */
char *certs_json_strdup(const struct certs_json *j, int i);

/* Integer primitive (no fraction or exponent) into *out; -1 otherwise. */
int certs_json_int(const struct certs_json *j, int i, int64_t *out);
/* true/false primitive into *out (0/1); -1 otherwise. */
int certs_json_bool(const struct certs_json *j, int i, int *out);

int certs_json_is_obj(const struct certs_json *j, int i);
int certs_json_is_arr(const struct certs_json *j, int i);
int certs_json_is_str(const struct certs_json *j, int i);

/* 1-based line and column of token i's first byte (for strings, the quote). */
void certs_json_pos(const struct certs_json *j, int i, int *line, int *col);

/* Writes "line:col: " + formatted message about token i into err; returns -1
 * so callers can `return certs_json_errf(...)`. */
int certs_json_errf(const struct certs_json *j, int i, char *err, size_t errlen, const char *fmt,
                    ...) __attribute__((format(printf, 5, 6)));

/* Durations: "250ms", "10s", "5m", "24h" (also "1h30m", "1.5s"). Non-negative,
 * at most ~100 years. Returns 0 and milliseconds in *ms, or -1. */
int certs_duration_parse(const char *s, size_t len, int64_t *ms);

/* Base64 (standard alphabet with padding; the URL-safe alphabet and missing
 * padding are accepted by the decoder too, as JWKS and DSSE producers vary).
 * decode: returns decoded length or -1; out must hold len*3/4+3 bytes.
 * encode: returns encoded length (NUL-terminated); out must hold
 * 4*((len+2)/3)+1 bytes. */
long certs_b64_decode(const char *in, size_t len, unsigned char *out, size_t outlen);
size_t certs_b64_encode(const unsigned char *in, size_t len, char *out);

#endif
