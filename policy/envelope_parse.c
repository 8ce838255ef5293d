/*
 * envelope_parse.c - the strict reader of DSSE envelope JSON under
 * policy_envelope_verify() (envelope.c): checks the bytes between tokens
 * that jsmn does not police, finds the envelope's and each signature's
 * members (any member we use given twice is refused), and decodes the
 * signatures. Owns no state; its input is hostile (see envelope.c).
 */
#include "envelope_int.h"

#include <stdio.h>
#include <string.h>

#define ENV_MAX_DEPTH 16

/* ---- envelope parsing ---------------------------------------------------------- */

/* Raw extent of a token: jsmn's string tokens exclude the quotes. */
static size_t raw_start(const jsmntok_t *t)
{
    return t->type == JSMN_STRING ? (size_t)t->start - 1 : (size_t)t->start;
}

static size_t raw_end(const jsmntok_t *t)
{
    return t->type == JSMN_STRING ? (size_t)t->end + 1 : (size_t)t->end;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* js[from..to) is whitespace around exactly one `sep` (sep 0: none). */
static int gap_ok(const char *js, size_t from, size_t to, char sep)
{
    int seen = 0;
    if (from > to)
        return 0;
    for (size_t i = from; i < to; i++) {
        if (is_ws(js[i]))
            continue;
        if (sep != 0 && js[i] == sep && !seen) {
            seen = 1;
            continue;
        }
        return 0;
    }
    return sep == 0 || seen;
}

/* true, false, null, or an RFC 8259 number. */
static int primitive_ok(const char *s, size_t n)
{
    size_t i = 0;
    if ((n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0) ||
        (n == 4 && memcmp(s, "null", 4) == 0))
        return 1;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return 0;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t d;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i == n;
}

/* Checks that the subtree at token i is plain JSON, using the bytes between
 * tokens (commas, colons, brackets) that jsmn does not police, and that
 * token sizes agree with the structure (so certs_json_skip() is exact).
 * Returns the index after the subtree, or -1 with *bad set. */
static int check_value(const struct certs_json *j, int i, int depth, int *bad)
{
    const jsmntok_t *t = &j->tok[i];
    int obj = t->type == JSMN_OBJECT, k = i + 1;
    size_t pos;

    *bad = i;
    if (t->type == JSMN_STRING)
        return t->size == 0 ? i + 1 : -1;
    if (t->type == JSMN_PRIMITIVE)
        return t->size == 0 && primitive_ok(j->js + t->start, (size_t)(t->end - t->start)) ? i + 1
                                                                                           : -1;
    if ((!obj && t->type != JSMN_ARRAY) || depth > ENV_MAX_DEPTH || t->end <= t->start)
        return -1;
    pos = (size_t)t->start + 1;
    for (int n = 0; n < t->size; n++) {
        if (k >= j->ntok || !gap_ok(j->js, pos, raw_start(&j->tok[k]), n > 0 ? ',' : 0)) {
            *bad = k < j->ntok ? k : i;
            return -1;
        }
        if (obj) {
            const jsmntok_t *key = &j->tok[k];
            *bad = k;
            if (key->type != JSMN_STRING || key->size != 1 || k + 1 >= j->ntok ||
                !gap_ok(j->js, raw_end(key), raw_start(&j->tok[k + 1]), ':'))
                return -1;
            k++;
        }
        pos = raw_end(&j->tok[k]);
        k = check_value(j, k, depth + 1, bad);
        if (k < 0)
            return -1;
    }
    *bad = i;
    if (!gap_ok(j->js, pos, (size_t)t->end - 1, 0) || j->js[t->end - 1] != (obj ? '}' : ']'))
        return -1;
    return k;
}

/* Finds the members of an object; refuses duplicates of the ones we use. */
static enum policy_env_reason members(const struct certs_json *j, int obj, const char *const *names,
                                      int *vals, int nnames, char *err, size_t errlen)
{
    int k = certs_json_first(j, obj);
    for (int i = 0; i < nnames; i++)
        vals[i] = -1;
    for (int n = 0; n < j->tok[obj].size; n++, k = certs_json_next_key(j, k)) {
        for (int i = 0; i < nnames; i++) {
            if (!certs_json_eq(j, k, names[i]))
                continue;
            if (vals[i] >= 0) {
                certs_json_errf(j, k, err, errlen, "\"%s\" given twice", names[i]);
                return POLICY_ENV_BAD_ENVELOPE;
            }
            vals[i] = k + 1;
        }
    }
    return POLICY_ENV_OK;
}

static enum policy_env_reason parse_sig(const struct certs_json *j, int obj, struct env_sig *s,
                                        char *err, size_t errlen)
{
    static const char *const names[] = {"keyid", "sig"};
    int v[2];
    enum policy_env_reason r;
    char b64[SIG_B64_MAX + 1];
    long n;

    if (!certs_json_is_obj(j, obj)) {
        certs_json_errf(j, obj, err, errlen, "signatures: each entry must be an object");
        return POLICY_ENV_BAD_ENVELOPE;
    }
    if ((r = members(j, obj, names, v, 2, err, errlen)) != POLICY_ENV_OK)
        return r;
    if (v[1] < 0 || !certs_json_is_str(j, v[1])) {
        certs_json_errf(j, obj, err, errlen, "signature: \"sig\" must be a string");
        return POLICY_ENV_BAD_ENVELOPE;
    }
    s->keyid[0] = '\0';
    if (v[0] >= 0) {
        if (!certs_json_is_str(j, v[0])) {
            certs_json_errf(j, v[0], err, errlen, "signature: \"keyid\" must be a string");
            return POLICY_ENV_BAD_ENVELOPE;
        }
        /* A keyid we cannot hold cannot name any of our keys. */
        if (certs_json_str(j, v[0], s->keyid, sizeof(s->keyid)) < 0 ||
            (s->keyid[0] != '\0' && !policy_keyid_valid(s->keyid)))
            snprintf(s->keyid, sizeof(s->keyid), "\x01");
    }
    n = certs_json_str(j, v[1], b64, sizeof(b64));
    /* An empty sig is valid base64; it just never verifies. */
    if (n < 0 || (n = certs_b64_decode(b64, (size_t)n, s->sig, sizeof(s->sig))) < 0) {
        certs_json_errf(j, v[1], err, errlen, "signature: \"sig\" is not base64 (or too long)");
        return POLICY_ENV_BAD_BASE64;
    }
    s->len = (size_t)n;
    return POLICY_ENV_OK;
}

enum policy_env_reason policy_env_parse(const struct certs_json *j, struct env_parsed *p, char *err,
                                        size_t errlen)
{
    static const char *const names[] = {"payloadType", "payload", "signatures"};
    int v[3], bad = 0, n, k;
    enum policy_env_reason r;
    char type[sizeof(POLICY_ENVELOPE_PAYLOAD_TYPE) + 1];

    if (check_value(j, 0, 0, &bad) != j->ntok) {
        certs_json_errf(j, bad, err, errlen, "malformed JSON");
        return POLICY_ENV_BAD_ENVELOPE;
    }
    if (!certs_json_is_obj(j, 0)) {
        certs_json_errf(j, 0, err, errlen, "envelope must be a JSON object");
        return POLICY_ENV_BAD_ENVELOPE;
    }
    if ((r = members(j, 0, names, v, 3, err, errlen)) != POLICY_ENV_OK)
        return r;
    for (int i = 0; i < 2; i++) {
        if (v[i] < 0 || !certs_json_is_str(j, v[i])) {
            certs_json_errf(j, v[i] < 0 ? 0 : v[i], err, errlen, "\"%s\" must be a string",
                            names[i]);
            return POLICY_ENV_BAD_ENVELOPE;
        }
    }
    if (v[2] < 0 || !certs_json_is_arr(j, v[2])) {
        certs_json_errf(j, v[2] < 0 ? 0 : v[2], err, errlen, "\"signatures\" must be an array");
        return POLICY_ENV_BAD_ENVELOPE;
    }
    n = j->tok[v[2]].size;
    if (n > POLICY_ENVELOPE_MAX_SIGNATURES) {
        certs_json_errf(j, v[2], err, errlen, "%d signatures, limit %d", n,
                        POLICY_ENVELOPE_MAX_SIGNATURES);
        return POLICY_ENV_TOO_MANY_SIGNATURES;
    }
    if (n == 0) {
        certs_json_errf(j, v[2], err, errlen, "no signatures");
        return POLICY_ENV_NO_SIGNATURES;
    }
    if (certs_json_str(j, v[0], type, sizeof(type)) < 0 ||
        strcmp(type, POLICY_ENVELOPE_PAYLOAD_TYPE) != 0) {
        certs_json_errf(j, v[0], err, errlen, "payloadType must be \"%s\"",
                        POLICY_ENVELOPE_PAYLOAD_TYPE);
        return POLICY_ENV_WRONG_PAYLOAD_TYPE;
    }
    k = certs_json_first(j, v[2]);
    for (int i = 0; i < n; i++, k = certs_json_next_elem(j, k)) {
        if ((r = parse_sig(j, k, &p->sig[i], err, errlen)) != POLICY_ENV_OK)
            return r;
    }
    p->nsig = n;
    p->type = v[0];
    p->payload = v[1];
    p->sigs = v[2];
    return POLICY_ENV_OK;
}
