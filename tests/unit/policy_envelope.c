/*
 * policy_envelope.c - TCases "envelope" (policy/envelope.c and
 * envelope_parse.c: keys, keyrings, DSSE PAE, sign/verify, refusals,
 * interop with the openssl CLI) and
 * "fetch" (policy/fetch.c: the control-plane fetch state machine). Linked
 * into test_policy; test_policy.c's main adds tcase_envelope() and
 * tcase_fetch().
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>

#include "envelope.h"
#include "certs.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

TCase *tcase_envelope(void);
TCase *tcase_fetch(void);

static const char *const TYPE = POLICY_ENVELOPE_PAYLOAD_TYPE;

/* ---- helpers ------------------------------------------------------------- */

static EVP_PKEY *genkey(enum policy_key_type t)
{
    EVP_PKEY *k = NULL;
    char err[256] = "";
    ck_assert_msg(policy_key_generate(t, &k, err, sizeof(err)) == 0, "keygen: %s", err);
    return k;
}

static struct policy_keyring *ring1(const char *keyid, EVP_PKEY *k)
{
    struct policy_keyring *kr = NULL;
    char err[256] = "";
    ck_assert_int_eq(policy_keyring_new(&kr), 0);
    ck_assert_msg(policy_keyring_add(kr, keyid, k, err, sizeof(err)) == 0, "add: %s", err);
    return kr;
}

static char *sign(EVP_PKEY *k, const char *keyid, const char *payload)
{
    char *env = NULL, err[256] = "";
    size_t len = 0;
    ck_assert_msg(
        policy_envelope_sign(k, keyid, payload, strlen(payload), &env, &len, err, sizeof(err)) == 0,
        "sign: %s", err);
    ck_assert_uint_eq(len, strlen(env));
    return env;
}

static char *b64(const void *p, size_t n)
{
    char *s = malloc(4 * ((n + 2) / 3) + 1);
    ck_assert_ptr_nonnull(s);
    certs_b64_encode(p, n, s);
    return s;
}

/* The base64 of the first "sig" in env (points into a static buffer). */
static const char *first_sig(const char *env)
{
    static char buf[1024];
    const char *p = strstr(env, "\"sig\":\"");
    const char *e;
    ck_assert_ptr_nonnull(p);
    p += 7;
    e = strchr(p, '"');
    ck_assert_ptr_nonnull(e);
    ck_assert_int_lt(e - p, (long)sizeof(buf));
    memcpy(buf, p, (size_t)(e - p));
    buf[e - p] = '\0';
    return buf;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    int n;
    va_start(ap, f);
    n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    s = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(s);
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static enum policy_env_reason verify(const struct policy_keyring *kr, const char *env,
                                     char **payload, char *keyid, char *err, size_t errlen)
{
    size_t plen = 0;
    char kid[POLICY_KEYID_MAX + 1];
    enum policy_env_reason r;
    *payload = NULL;
    r = policy_envelope_verify(kr, env, strlen(env), payload, &plen, keyid ? keyid : kid,
                               POLICY_KEYID_MAX + 1, err, errlen);
    if (r == POLICY_ENV_OK)
        ck_assert_uint_eq(plen, strlen(*payload));
    else
        ck_assert_ptr_null(*payload);
    return r;
}

static const char *const PAYLOAD = "{\"revision\": 17, \"default\": \"deny\", \"rules\": []}";

/* ---- PAE ------------------------------------------------------------------ */

static const struct {
    const char *type, *body;
    size_t body_len;
    const char *pae;
    size_t pae_len;
} paes[] = {
    /* the DSSE protocol.md example */
    {"http://example.com/HelloWorld", "hello world", 11,
     "DSSEv1 29 http://example.com/HelloWorld 11 hello world", 54},
    {"", "", 0, "DSSEv1 0  0 ", 12},
    {"t", "a\0b", 3, "DSSEv1 1 t 3 a\0b", 16}, /* binary body, NUL kept */
    {POLICY_ENVELOPE_PAYLOAD_TYPE, "{}", 2, "DSSEv1 34 application/vnd.picket.policy+json 2 {}",
     49},
};

START_TEST(test_pae_exact)
{
    unsigned char *out = NULL;
    size_t n = 0;
    ck_assert_int_eq(policy_envelope_pae(paes[_i].type, strlen(paes[_i].type), paes[_i].body,
                                         paes[_i].body_len, &out, &n),
                     0);
    ck_assert_uint_eq(n, paes[_i].pae_len);
    ck_assert_int_eq(memcmp(out, paes[_i].pae, n), 0);
    free(out);
}
END_TEST

/* ---- round trips ------------------------------------------------------------ */

static const enum policy_key_type key_types[] = {POLICY_KEY_ED25519, POLICY_KEY_P256};

START_TEST(test_roundtrip)
{
    EVP_PKEY *k = genkey(key_types[_i]), *priv2 = NULL, *pub = NULL;
    struct policy_keyring *kr = NULL;
    char *pem = NULL, *pub_pem = NULL, *env, *payload = NULL, keyid[POLICY_KEYID_MAX + 1];
    char err[256] = "";
    size_t len = 0;

    ck_assert_str_eq(policy_key_type_name(k),
                     key_types[_i] == POLICY_KEY_ED25519 ? "ed25519" : "p256");
    /* PEM round trip: PKCS#8 private, SPKI public */
    ck_assert_int_eq(policy_key_private_pem(k, &pem, &len, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
    ck_assert_int_eq(policy_key_private_from_pem(&priv2, pem, len, err, sizeof(err)), 0);
    ck_assert_int_eq(policy_key_public_pem(priv2, &pub_pem, &len, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(pub_pem, "-----BEGIN PUBLIC KEY-----"));
    ck_assert_int_eq(policy_key_public_from_pem(&pub, pub_pem, len, err, sizeof(err)), 0);
    /* a public key cannot be written as a private one */
    ck_assert_int_ne(policy_key_private_pem(pub, &pem, &len, err, sizeof(err)), 0);
    /* and a public PEM is no private key */
    ck_assert_int_eq(policy_key_private_from_pem(&priv2, pub_pem, len, err, sizeof(err)),
                     POLICY_ERR_ENV_KEY);

    ck_assert_int_eq(policy_keyring_new(&kr), 0);
    ck_assert_int_eq(policy_keyring_add_pem(kr, "cp-1", pub_pem, len, err, sizeof(err)), 0);
    env = sign(priv2, "cp-1", PAYLOAD);
    ck_assert_int_eq(verify(kr, env, &payload, keyid, err, sizeof(err)), POLICY_ENV_OK);
    ck_assert_str_eq(payload, PAYLOAD);
    ck_assert_str_eq(keyid, "cp-1");
    ck_assert_str_eq(err, "");
    free(payload);
    free(env);

    /* keyless signature: tried against every key */
    env = sign(priv2, NULL, PAYLOAD);
    ck_assert_ptr_null(strstr(env, "keyid"));
    ck_assert_int_eq(verify(kr, env, &payload, keyid, err, sizeof(err)), POLICY_ENV_OK);
    ck_assert_str_eq(keyid, "cp-1");
    free(payload);
    free(env);

    /* empty payload signs and verifies too */
    env = sign(priv2, "cp-1", "");
    ck_assert_int_eq(verify(kr, env, &payload, keyid, err, sizeof(err)), POLICY_ENV_OK);
    ck_assert_str_eq(payload, "");
    free(payload);
    free(env);

    policy_keyring_free(kr);
    free(pem);
    free(pub_pem);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv2);
    EVP_PKEY_free(k);
}
END_TEST

/* ---- refusals ---------------------------------------------------------------- */

/* Envelopes built from a good one signed by key A under keyid "cp-1"; the
 * keyring holds A's public key as "cp-1". %1$s payload b64, %2$s sig b64,
 * %3$s a valid sig by another key B. */
enum mut {
    M_GOOD,
    M_TAMPERED_PAYLOAD,
    M_TAMPERED_TYPE,
    M_WRONG_KEY,
    M_UNKNOWN_KEYID,
    M_BAD_B64_PAYLOAD,
    M_BAD_B64_SIG,
    M_TOO_MANY_SIGS,
    M_NO_SIGS,
    M_TRAILING_COMMA,
    M_DOUBLE_COMMA,
    M_MISSING_COMMA,
    M_DUP_PAYLOAD,
    M_DUP_SIG,
    M_NOT_OBJECT,
    M_MISSING_SIG,
    M_KEYID_NUMBER,
    M_SIG_NOT_OBJECT,
    M_TRAILING_GARBAGE,
    M_UNKNOWN_THEN_GOOD,
    M_WRONG_THEN_GOOD,
    M_ESCAPED_SLASHES,
    M_EXTRA_MEMBERS,
    M_TYPE_ESCAPED,
    M_EMPTY_SIG,
    M_BAD_NUMBER,
    M_DUP_PAYLOAD_ESCAPED,
    M_DUP_SIG_ESCAPED,
    M_WIDE_EXTRA,
    M_WIDE_EXTRA_DUP,
};

static const struct {
    const char *name;
    enum mut m;
    enum policy_env_reason want;
} refusals[] = {
    {"good", M_GOOD, POLICY_ENV_OK},
    {"tampered payload", M_TAMPERED_PAYLOAD, POLICY_ENV_BAD_SIGNATURE},
    {"tampered type", M_TAMPERED_TYPE, POLICY_ENV_WRONG_PAYLOAD_TYPE},
    {"wrong key", M_WRONG_KEY, POLICY_ENV_BAD_SIGNATURE},
    {"unknown keyid", M_UNKNOWN_KEYID, POLICY_ENV_UNKNOWN_KEY},
    {"bad base64 payload", M_BAD_B64_PAYLOAD, POLICY_ENV_BAD_BASE64},
    {"bad base64 sig", M_BAD_B64_SIG, POLICY_ENV_BAD_BASE64},
    {"17 signatures", M_TOO_MANY_SIGS, POLICY_ENV_TOO_MANY_SIGNATURES},
    {"no signatures", M_NO_SIGS, POLICY_ENV_NO_SIGNATURES},
    {"trailing comma", M_TRAILING_COMMA, POLICY_ENV_BAD_ENVELOPE},
    {"double comma", M_DOUBLE_COMMA, POLICY_ENV_BAD_ENVELOPE},
    {"missing comma", M_MISSING_COMMA, POLICY_ENV_BAD_ENVELOPE},
    {"payload twice", M_DUP_PAYLOAD, POLICY_ENV_BAD_ENVELOPE},
    {"sig twice", M_DUP_SIG, POLICY_ENV_BAD_ENVELOPE},
    {"array at top", M_NOT_OBJECT, POLICY_ENV_BAD_ENVELOPE},
    {"no sig member", M_MISSING_SIG, POLICY_ENV_BAD_ENVELOPE},
    {"keyid is a number", M_KEYID_NUMBER, POLICY_ENV_BAD_ENVELOPE},
    {"signature is a string", M_SIG_NOT_OBJECT, POLICY_ENV_BAD_ENVELOPE},
    {"trailing garbage", M_TRAILING_GARBAGE, POLICY_ENV_BAD_ENVELOPE},
    {"unknown keyid, then good", M_UNKNOWN_THEN_GOOD, POLICY_ENV_OK},
    {"wrong sig under cp-1, then good", M_WRONG_THEN_GOOD, POLICY_ENV_OK},
    {"base64 with JSON-escaped slashes", M_ESCAPED_SLASHES, POLICY_ENV_OK},
    {"extra members ignored", M_EXTRA_MEMBERS, POLICY_ENV_OK},
    {"payloadType with escapes", M_TYPE_ESCAPED, POLICY_ENV_OK},
    {"empty sig", M_EMPTY_SIG, POLICY_ENV_BAD_SIGNATURE},
    {"bad number in extra member", M_BAD_NUMBER, POLICY_ENV_BAD_ENVELOPE},
    /* duplicates after unescaping, in any object of any size (issue 20) */
    {"payload twice, once escaped", M_DUP_PAYLOAD_ESCAPED, POLICY_ENV_BAD_ENVELOPE},
    {"sig twice, once escaped", M_DUP_SIG_ESCAPED, POLICY_ENV_BAD_ENVELOPE},
    {"400 extra members", M_WIDE_EXTRA, POLICY_ENV_OK},
    /* past the 256 keys the old check compared */
    {"400 extra members, the last a repeat", M_WIDE_EXTRA_DUP, POLICY_ENV_BAD_ENVELOPE},
};

/* `n` members "x0":0,... then, if dup, "x\u0030":0 (a repeat of "x0"). */
static char *wide_members(size_t n, int dup)
{
    char *o = malloc(16 * n + 32), *p = o;
    ck_assert_ptr_nonnull(o);
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "\"x%zu\":0,", i);
    if (dup)
        p += sprintf(p, "\"x\\u0030\":0,");
    *p = '\0';
    return o;
}

/* Replaces every '/' in s with "\/" (a legal JSON escape). */
static char *escape_slashes(const char *s)
{
    char *o = malloc(2 * strlen(s) + 1), *p = o;
    ck_assert_ptr_nonnull(o);
    for (; *s; s++) {
        if (*s == '/')
            *p++ = '\\';
        *p++ = *s;
    }
    *p = '\0';
    return o;
}

static char *mutate(enum mut m, const char *pl, const char *sig, const char *sig_b)
{
    const char *T = TYPE;
    char *other, *r, *e;
    switch (m) {
    case M_GOOD:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_TAMPERED_PAYLOAD:
        e = "{\"revision\": 18, \"default\": \"allow\", \"rules\": []}";
        other = b64(e, strlen(e));
        r = fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                "\"sig\":\"%s\"}]}",
                T, other, sig);
        free(other);
        return r;
    case M_TAMPERED_TYPE:
        return fmt("{\"payloadType\":\"application/json\",\"payload\":\"%s\",\"signatures\":[{"
                   "\"keyid\":\"cp-1\",\"sig\":\"%s\"}]}",
                   pl, sig);
    case M_WRONG_KEY:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"%s\"}]}",
                   T, pl, sig_b);
    case M_UNKNOWN_KEYID:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-9\","
                   "\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_BAD_B64_PAYLOAD:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"!!%s\",\"signatures\":[{\"keyid\":"
                   "\"cp-1\",\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_BAD_B64_SIG:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"%s*\"}]}",
                   T, pl, sig);
    case M_TOO_MANY_SIGS: {
        char one[600], all[17 * 600 + 1] = "";
        snprintf(one, sizeof(one), "{\"keyid\":\"cp-1\",\"sig\":\"%s\"}", sig);
        for (int i = 0; i < 17; i++) {
            if (i > 0)
                strcat(all, ",");
            strcat(all, one);
        }
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[%s]}", T, pl, all);
    }
    case M_NO_SIGS:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[]}", T, pl);
    case M_TRAILING_COMMA:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"%s\"},]}",
                   T, pl, sig);
    case M_DOUBLE_COMMA:
        return fmt("{\"payloadType\":\"%s\",,\"payload\":\"%s\",\"signatures\":[{\"keyid\":"
                   "\"cp-1\",\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_MISSING_COMMA:
        return fmt("{\"payloadType\":\"%s\" \"payload\":\"%s\",\"signatures\":[{\"keyid\":"
                   "\"cp-1\",\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_DUP_PAYLOAD:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"payload\":\"e30=\",\"signatures\""
                   ":[{\"keyid\":\"cp-1\",\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_DUP_SIG:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"%s\",\"sig\":\"%s\"}]}",
                   T, pl, sig, sig);
    case M_NOT_OBJECT:
        return fmt("[\"%s\",\"%s\",\"%s\"]", T, pl, sig);
    case M_MISSING_SIG:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\""
                   "}]}",
                   T, pl);
    case M_KEYID_NUMBER:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":1,"
                   "\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_SIG_NOT_OBJECT:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[\"%s\"]}", T, pl,
                   sig);
    case M_TRAILING_GARBAGE:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"%s\"}]} x",
                   T, pl, sig);
    case M_UNKNOWN_THEN_GOOD:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-9\","
                   "\"sig\":\"%s\"},{\"keyid\":\"cp-1\",\"sig\":\"%s\"}]}",
                   T, pl, sig_b, sig);
    case M_WRONG_THEN_GOOD:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"%s\"},{\"sig\":\"%s\"}]}",
                   T, pl, sig_b, sig);
    case M_ESCAPED_SLASHES: {
        char *a = escape_slashes(pl), *b = escape_slashes(sig), *t = escape_slashes(T);
        r = fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                "\"sig\":\"%s\"}]}",
                t, a, b);
        free(a);
        free(b);
        free(t);
        return r;
    }
    case M_EXTRA_MEMBERS:
        return fmt(" {\"x\": [1, -2.5e3, true, null, {\"y\": {}}], \"payloadType\" : \"%s\",\n"
                   "  \"payload\": \"%s\", \"signatures\": [ {\"keyid\": \"cp-1\", \"sig\": "
                   "\"%s\", \"extension\": {}} ] }\n",
                   T, pl, sig);
    case M_TYPE_ESCAPED:
        e = fmt("{\"payloadType\":\"application\\u002fvnd.picket.policy+json\",\"payload\":\"%s\","
                "\"signatures\":[{\"keyid\":\"cp-1\",\"sig\":\"%s\"}]}",
                pl, sig);
        return e;
    case M_EMPTY_SIG:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"\"}]}",
                   T, pl);
    case M_BAD_NUMBER:
        return fmt("{\"x\": 01, \"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{"
                   "\"keyid\":\"cp-1\",\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_DUP_PAYLOAD_ESCAPED:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"p\\u0061yload\":\"e30=\","
                   "\"signatures\":[{\"keyid\":\"cp-1\",\"sig\":\"%s\"}]}",
                   T, pl, sig);
    case M_DUP_SIG_ESCAPED:
        return fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
                   "\"sig\":\"%s\",\"\\u0073ig\":\"%s\"}]}",
                   T, pl, sig, sig_b);
    case M_WIDE_EXTRA:
    case M_WIDE_EXTRA_DUP:
        other = wide_members(400, m == M_WIDE_EXTRA_DUP);
        r = fmt("{%s\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":"
                "\"cp-1\",\"sig\":\"%s\"}]}",
                other, T, pl, sig);
        free(other);
        return r;
    }
    return NULL;
}

START_TEST(test_refusals)
{
    for (size_t t = 0; t < N_ELEMS(key_types); t++) {
        EVP_PKEY *a = genkey(key_types[t]), *b = genkey(key_types[t]);
        struct policy_keyring *kr = ring1("cp-1", a);
        char *good = sign(a, "cp-1", PAYLOAD), *other = sign(b, "cp-1", PAYLOAD);
        char *pl = b64(PAYLOAD, strlen(PAYLOAD)), sig[1024], sig_b[1024];
        char *env, *payload = NULL, err[512] = "";
        enum policy_env_reason r;

        snprintf(sig, sizeof(sig), "%s", first_sig(good));
        snprintf(sig_b, sizeof(sig_b), "%s", first_sig(other));
        env = mutate(refusals[_i].m, pl, sig, sig_b);
        r = verify(kr, env, &payload, NULL, err, sizeof(err));
        ck_assert_msg(r == refusals[_i].want, "%s (%s): got %s (%s), want %s", refusals[_i].name,
                      policy_key_type_name(a), policy_env_reason_name(r), err,
                      policy_env_reason_name(refusals[_i].want));
        if (r == POLICY_ENV_OK)
            ck_assert_str_eq(payload, PAYLOAD);
        else
            ck_assert_msg(err[0] != '\0', "%s: no detail", refusals[_i].name);
        free(payload);
        free(env);
        free(pl);
        free(good);
        free(other);
        policy_keyring_free(kr);
        EVP_PKEY_free(a);
        EVP_PKEY_free(b);
    }
}
END_TEST

START_TEST(test_too_large)
{
    size_t n = POLICY_BUNDLE_MAX_BYTES + 1;
    char *big = malloc(n), *payload = NULL, err[256] = "";
    size_t plen = 0;
    struct policy_keyring *kr = NULL;
    EVP_PKEY *k = genkey(POLICY_KEY_ED25519);

    ck_assert_ptr_nonnull(big);
    memset(big, ' ', n);
    kr = ring1("cp-1", k);
    ck_assert_int_eq(policy_envelope_verify(kr, big, n, &payload, &plen, NULL, 0, err, sizeof(err)),
                     POLICY_ENV_TOO_LARGE);
    ck_assert_ptr_null(payload);
    /* signing refuses what verifying would */
    memset(big, 'a', n);
    ck_assert_int_eq(policy_envelope_sign(k, "cp-1", big, POLICY_BUNDLE_MAX_BYTES / 4 * 3, &payload,
                                          &plen, err, sizeof(err)),
                     POLICY_ERR_TOO_LARGE);
    free(big);
    policy_keyring_free(kr);
    EVP_PKEY_free(k);
}
END_TEST

START_TEST(test_not_json)
{
    static const char *const bad[] = {
        "", "   ", "{", "nul", "\"just a string\"", "{\"a\":1:2}", "[1,,2]", "{,\"a\":1}"};
    struct policy_keyring *kr = NULL;
    char *payload = NULL, err[256];
    size_t plen;
    ck_assert_int_eq(policy_keyring_new(&kr), 0);
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        err[0] = '\0';
        ck_assert_int_eq(policy_envelope_verify(kr, bad[i], strlen(bad[i]), &payload, &plen, NULL,
                                                0, err, sizeof(err)),
                         POLICY_ENV_BAD_ENVELOPE);
        ck_assert_msg(err[0] != '\0', "no detail for %s", bad[i]);
    }
    policy_keyring_free(kr);
}
END_TEST

START_TEST(test_keyring_rules)
{
    EVP_PKEY *ed = genkey(POLICY_KEY_ED25519), *ec = genkey(POLICY_KEY_P256);
    EVP_PKEY *x = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    struct policy_keyring *kr = NULL;
    char err[256], *env, *payload = NULL, keyid[POLICY_KEYID_MAX + 1];
    char longid[POLICY_KEYID_MAX + 2];

    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(policy_keyring_new(&kr), 0);
    ck_assert_int_eq(policy_keyring_add(kr, "cp-1", ed, err, sizeof(err)), 0);
    ck_assert_int_eq(policy_keyring_add(kr, "cp-1", ec, err, sizeof(err)), POLICY_ERR_ENV_KEYID);
    ck_assert_int_eq(policy_keyring_add(kr, "bad id", ec, err, sizeof(err)), POLICY_ERR_ENV_KEYID);
    ck_assert_int_eq(policy_keyring_add(kr, "q\"", ec, err, sizeof(err)), POLICY_ERR_ENV_KEYID);
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    ck_assert_int_eq(policy_keyring_add(kr, longid, ec, err, sizeof(err)), POLICY_ERR_ENV_KEYID);
    longid[POLICY_KEYID_MAX] = '\0';
    ck_assert_int_eq(policy_keyring_add(kr, longid, ec, err, sizeof(err)), 0);
    ck_assert_int_eq(policy_keyring_add(kr, "x", x, err, sizeof(err)), POLICY_ERR_ENV_KEY);
    ck_assert_uint_eq(policy_keyring_count(kr), 2);
    ck_assert_int_eq(policy_envelope_sign(x, NULL, "{}", 2, &env, NULL, err, sizeof(err)),
                     POLICY_ERR_ENV_KEY);
    ck_assert_int_eq(policy_envelope_sign(ed, "bad id", "{}", 2, &env, NULL, err, sizeof(err)),
                     POLICY_ERR_ENV_KEYID);
    /* the keyring keeps only public halves: no private key can be written */
    policy_keyring_free(kr);

    /* an id-less key matches any signature; the signature's keyid is reported */
    ck_assert_int_eq(policy_keyring_new(&kr), 0);
    ck_assert_int_eq(policy_keyring_add(kr, NULL, ec, err, sizeof(err)), 0);
    env = sign(ec, "whatever", PAYLOAD);
    ck_assert_int_eq(verify(kr, env, &payload, keyid, err, sizeof(err)), POLICY_ENV_OK);
    ck_assert_str_eq(keyid, "whatever");
    free(payload);
    free(env);
    env = sign(ed, "whatever", PAYLOAD);
    ck_assert_int_eq(verify(kr, env, &payload, keyid, err, sizeof(err)), POLICY_ENV_BAD_SIGNATURE);
    free(env);
    policy_keyring_free(kr);

    /* an empty keyring (or none) knows no key */
    env = sign(ed, "cp-1", PAYLOAD);
    ck_assert_int_eq(verify(NULL, env, &payload, keyid, err, sizeof(err)), POLICY_ENV_UNKNOWN_KEY);
    free(env);

    /* full */
    ck_assert_int_eq(policy_keyring_new(&kr), 0);
    for (int i = 0; i < POLICY_KEYRING_MAX_KEYS; i++) {
        char id[16];
        snprintf(id, sizeof(id), "k%d", i);
        ck_assert_int_eq(policy_keyring_add(kr, id, ed, err, sizeof(err)), 0);
    }
    ck_assert_int_eq(policy_keyring_add(kr, "one-more", ed, err, sizeof(err)), POLICY_ERR_ENV_FULL);
    policy_keyring_free(kr);
    EVP_PKEY_free(x);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(ec);
}
END_TEST

START_TEST(test_names)
{
    ck_assert_str_eq(policy_env_reason_name(POLICY_ENV_OK), "ok");
    ck_assert_str_eq(policy_env_reason_name(POLICY_ENV_BAD_ENVELOPE), "bad_envelope");
    ck_assert_str_eq(policy_env_reason_name(POLICY_ENV_WRONG_PAYLOAD_TYPE), "wrong_payload_type");
    ck_assert_str_eq(policy_env_reason_name(POLICY_ENV_BAD_SIGNATURE), "bad_signature");
    ck_assert_str_eq(policy_env_reason_name(POLICY_ENV_UNKNOWN_KEY), "unknown_key");
    ck_assert_str_eq(policy_env_reason_name(POLICY_ENV_TOO_LARGE), "too_large");
    ck_assert_str_eq(policy_env_reason_name(POLICY_ENV_REVISION_ROLLBACK), "revision_rollback");
    ck_assert_str_eq(policy_env_reason_name(POLICY_ENV_R_COUNT), "unknown");
    for (int r = 0; r < POLICY_ENV_R_COUNT; r++)
        ck_assert_str_ne(policy_env_reason_name((enum policy_env_reason)r), "unknown");
    for (int o = 0; o < POLICY_FETCH_OUTCOME_COUNT; o++)
        ck_assert_str_ne(policy_fetch_outcome_name((enum policy_fetch_outcome)o), "unknown");
    ck_assert_str_eq(policy_envelope_strerror(POLICY_ERR_ENV_KEY), "bad or unsupported key");
    ck_assert_str_eq(policy_envelope_strerror(POLICY_ERR_NOMEM), policy_strerror(POLICY_ERR_NOMEM));
}
END_TEST

/* ---- interop with the openssl CLI --------------------------------------------- */

static int have_openssl(void)
{
    return system("openssl version >/dev/null 2>&1") == 0;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static void *read_all(const char *path, size_t *len)
{
    char *data = NULL, err[256];
    ck_assert_msg(certs_read_file(path, 1 << 20, &data, len, err, sizeof(err)) == 0, "%s", err);
    return data;
}

static void run(const char *cmd)
{
    ck_assert_msg(system(cmd) == 0, "command failed: %s", cmd);
}

START_TEST(test_openssl_interop)
{
    char dir[] = "/tmp/picket-env-XXXXXX", cmd[1024], path[512], err[256];
    const int ed = key_types[_i] == POLICY_KEY_ED25519;
    unsigned char *pae = NULL, sigbin[600];
    size_t pae_len = 0, n = 0;
    char *keypem, *sig, *s64, *pl64, *env, *payload = NULL, keyid[POLICY_KEYID_MAX + 1];
    EVP_PKEY *k = NULL;
    struct policy_keyring *kr = NULL;
    long sl;

    /* The interop half of the envelope contract cannot be checked without the CLI:
     * fail (naming the package), never pass unchecked. */
    ck_assert_msg(have_openssl(), "the openssl CLI is not installed: apt-get install openssl "
                                  "(or bash deploy/install-deps.sh)");
    ck_assert_ptr_nonnull(mkdtemp(dir));

    /* a key made by openssl loads with our loader */
    snprintf(cmd, sizeof(cmd), "openssl genpkey %s -out %s/k.pem 2>/dev/null",
             ed ? "-algorithm ed25519" : "-algorithm EC -pkeyopt ec_paramgen_curve:P-256", dir);
    run(cmd);
    snprintf(cmd, sizeof(cmd), "openssl pkey -in %s/k.pem -pubout -out %s/k.pub", dir, dir);
    run(cmd);
    snprintf(path, sizeof(path), "%s/k.pem", dir);
    ck_assert_msg(policy_key_private_load(&k, path, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(policy_keyring_new(&kr), 0);
    snprintf(path, sizeof(path), "%s/k.pub", dir);
    ck_assert_msg(policy_keyring_add_file(kr, "cp-1", path, err, sizeof(err)) == 0, "%s", err);

    /* 1. openssl signs the PAE we build; our verifier accepts the envelope */
    ck_assert_int_eq(
        policy_envelope_pae(TYPE, strlen(TYPE), PAYLOAD, strlen(PAYLOAD), &pae, &pae_len), 0);
    snprintf(path, sizeof(path), "%s/pae.bin", dir);
    write_file(path, pae, pae_len);
    if (ed)
        snprintf(cmd, sizeof(cmd),
                 "openssl pkeyutl -sign -rawin -inkey %s/k.pem -in %s/pae.bin -out %s/sig.bin", dir,
                 dir, dir);
    else
        snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -sign %s/k.pem -out %s/sig.bin %s/pae.bin",
                 dir, dir, dir);
    run(cmd);
    snprintf(path, sizeof(path), "%s/sig.bin", dir);
    sig = read_all(path, &n);
    s64 = b64(sig, n);
    pl64 = b64(PAYLOAD, strlen(PAYLOAD));
    env = fmt("{\"payloadType\":\"%s\",\"payload\":\"%s\",\"signatures\":[{\"keyid\":\"cp-1\","
              "\"sig\":\"%s\"}]}",
              TYPE, pl64, s64);
    ck_assert_int_eq(verify(kr, env, &payload, keyid, err, sizeof(err)), POLICY_ENV_OK);
    ck_assert_str_eq(payload, PAYLOAD);
    free(payload);
    free(env);
    free(sig);
    free(s64);

    /* 2. we sign; openssl verifies our signature over the same PAE */
    env = sign(k, "cp-1", PAYLOAD);
    s64 = (char *)first_sig(env);
    sl = certs_b64_decode(s64, strlen(s64), sigbin, sizeof(sigbin));
    ck_assert_int_gt(sl, 0);
    snprintf(path, sizeof(path), "%s/ours.bin", dir);
    write_file(path, sigbin, (size_t)sl);
    if (ed)
        snprintf(cmd, sizeof(cmd),
                 "openssl pkeyutl -verify -rawin -pubin -inkey %s/k.pub -in %s/pae.bin "
                 "-sigfile %s/ours.bin >/dev/null",
                 dir, dir, dir);
    else
        snprintf(cmd, sizeof(cmd),
                 "openssl dgst -sha256 -verify %s/k.pub -signature %s/ours.bin %s/pae.bin "
                 ">/dev/null",
                 dir, dir, dir);
    run(cmd);
    /* and a flipped byte fails there too (the command is meaningful) */
    sigbin[sl - 1] ^= 1;
    write_file(path, sigbin, (size_t)sl);
    cmd[strlen(cmd) - strlen(">/dev/null")] = '\0';
    strcat(cmd, ">/dev/null 2>&1");
    ck_assert_int_ne(system(cmd), 0);
    free(env);

    /* 3. our private PEM is PKCS#8 that openssl reads */
    ck_assert_int_eq(policy_key_private_pem(k, &keypem, &n, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/ours.pem", dir);
    write_file(path, keypem, n);
    snprintf(cmd, sizeof(cmd), "openssl pkey -in %s/ours.pem -noout", dir);
    run(cmd);
    free(keypem);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    run(cmd);
    free(pae);
    free(pl64);
    policy_keyring_free(kr);
    EVP_PKEY_free(k);
}
END_TEST

TCase *tcase_envelope(void)
{
    TCase *tc = tcase_create("envelope");
    tcase_add_loop_test(tc, test_pae_exact, 0, N_ELEMS(paes));
    tcase_add_loop_test(tc, test_roundtrip, 0, N_ELEMS(key_types));
    tcase_add_loop_test(tc, test_refusals, 0, N_ELEMS(refusals));
    tcase_add_test(tc, test_too_large);
    tcase_add_test(tc, test_not_json);
    tcase_add_test(tc, test_keyring_rules);
    tcase_add_test(tc, test_names);
    tcase_add_loop_test(tc, test_openssl_interop, 0, N_ELEMS(key_types));
    tcase_set_timeout(tc, 60);
    return tc;
}

/* ---- fetch ---------------------------------------------------------------------- */

struct fx {
    EVP_PKEY *key, *other;
    struct policy_keyring *kr;
    struct policy_fetch *f;
    struct policy_fetch_action a;
};

static const struct policy_fetch_config base_cfg = {.poll_min_ms = 10000,
                                                    .poll_max_ms = 20000,
                                                    .long_poll_ms = 0,
                                                    .backoff_min_ms = 1000,
                                                    .seed = 42};

static void fx_init(struct fx *x, const struct policy_fetch_config *cfg)
{
    char err[256] = "";
    memset(x, 0, sizeof(*x));
    x->key = genkey(POLICY_KEY_ED25519);
    x->other = genkey(POLICY_KEY_ED25519);
    x->kr = ring1("cp-1", x->key);
    ck_assert_msg(policy_fetch_new(&x->f, cfg, x->kr, err, sizeof(err)) == 0, "%s", err);
}

static void fx_clear(struct fx *x)
{
    policy_fetch_action_clear(&x->a);
    policy_fetch_free(x->f);
    policy_keyring_free(x->kr);
    EVP_PKEY_free(x->key);
    EVP_PKEY_free(x->other);
}

static char *bundle(int64_t rev, const char *dflt, const char *expires)
{
    if (expires != NULL)
        return fmt("{\"revision\": %lld, \"expires_at\": \"%s\", \"default\": \"%s\", "
                   "\"rules\": []}",
                   (long long)rev, expires, dflt);
    return fmt("{\"revision\": %lld, \"default\": \"%s\", \"rules\": []}", (long long)rev, dflt);
}

/* Feeds a 200 with an envelope of `payload` signed by k. */
static void feed_200(struct fx *x, int64_t now, EVP_PKEY *k, const char *payload, const char *etag,
                     int64_t sent)
{
    char *env = sign(k, "cp-1", payload);
    struct policy_fetch_result r = {.kind = POLICY_FETCH_RES_BODY,
                                    .body = env,
                                    .body_len = strlen(env),
                                    .etag = etag,
                                    .etag_len = etag ? strlen(etag) : 0,
                                    .sent_ms = sent};
    policy_fetch_action_clear(&x->a);
    ck_assert_int_eq(policy_fetch_on_result(x->f, now, &r, &x->a), 0);
    free(env);
}

static void feed(struct fx *x, int64_t now, enum policy_fetch_result_kind kind, int status,
                 const char *etag, int64_t sent)
{
    struct policy_fetch_result r = {.kind = kind,
                                    .status = status,
                                    .etag = etag,
                                    .etag_len = etag ? strlen(etag) : 0,
                                    .sent_ms = sent};
    policy_fetch_action_clear(&x->a);
    ck_assert_int_eq(policy_fetch_on_result(x->f, now, &r, &x->a), 0);
}

static void assert_poll_delay(const struct fx *x, const struct policy_fetch_config *c)
{
    ck_assert_int_ge(x->a.delay_ms, c->poll_min_ms);
    ck_assert_int_le(x->a.delay_ms, c->poll_max_ms);
}

START_TEST(test_fetch_accept_and_304)
{
    struct fx x;
    char *b17 = bundle(17, "deny", NULL);
    fx_init(&x, &base_cfg);

    ck_assert_int_eq(policy_fetch_revision(x.f), -1);
    ck_assert_int_eq(policy_fetch_staleness_ms(x.f, 1000), -1);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, 1000, 0, 0), 1);
    ck_assert_int_eq(policy_fetch_start(x.f, 1000, &x.a), 0);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_START);
    ck_assert_int_eq(x.a.delay_ms, 0);
    ck_assert_str_eq(x.a.if_none_match, "");
    ck_assert_str_eq(x.a.prefer, "");

    /* 200 accepted: bundle and payload handed over, revision and ETag kept */
    feed_200(&x, 1000, x.key, b17, "\"e17\"", 900);
    ck_assert_msg(x.a.outcome == POLICY_FETCH_UPDATED, "%s: %s",
                  policy_fetch_outcome_name(x.a.outcome), x.a.detail);
    ck_assert_ptr_nonnull(x.a.bundle);
    ck_assert_int_eq(policy_bundle_revision(x.a.bundle), 17);
    ck_assert_str_eq(x.a.payload, b17);
    ck_assert_uint_eq(x.a.payload_len, strlen(b17));
    ck_assert_int_eq(x.a.revision, 17);
    ck_assert_str_eq(x.a.keyid, "cp-1");
    ck_assert_str_eq(x.a.if_none_match, "\"e17\"");
    assert_poll_delay(&x, &base_cfg);
    ck_assert_int_eq(policy_fetch_revision(x.f), 17);
    ck_assert_str_eq(policy_fetch_etag(x.f), "\"e17\"");
    ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), 1000);
    ck_assert_int_eq(policy_fetch_staleness_ms(x.f, 61000), 60000);

    /* the caller may take the bundle: clear then frees only the payload */
    policy_bundle_free(x.a.bundle);
    x.a.bundle = NULL;

    /* 304 resets staleness and keeps the revision */
    feed(&x, 100000, POLICY_FETCH_RES_NOT_MODIFIED, 304, NULL, 99000);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_NOT_MODIFIED);
    ck_assert_ptr_null(x.a.bundle);
    ck_assert_int_eq(x.a.revision, 17);
    ck_assert_int_eq(policy_fetch_staleness_ms(x.f, 100000), 0);
    ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), 100000);
    ck_assert_str_eq(x.a.if_none_match, "\"e17\"");
    assert_poll_delay(&x, &base_cfg);

    /* a 304 carrying a new ETag updates it; a bad one (CR LF) is dropped */
    feed(&x, 110000, POLICY_FETCH_RES_NOT_MODIFIED, 304, "W/\"e17b\"", 0);
    ck_assert_str_eq(x.a.if_none_match, "W/\"e17b\"");
    feed_200(&x, 120000, x.key, b17, "\"x\"\r\nSet-Cookie: a=b", 0);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_UNCHANGED);
    ck_assert_str_eq(x.a.if_none_match, "");

    /* a 304 when we sent no If-None-Match proves nothing */
    feed(&x, 130000, POLICY_FETCH_RES_NOT_MODIFIED, 304, NULL, 0);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_HTTP_ERROR);
    ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), 120000);
    ck_assert_uint_eq(policy_fetch_failures(x.f), 1);

    free(b17);
    fx_clear(&x);
}
END_TEST

/* Revision rules, as a table of (revision, default, expected outcome, reason)
 * fed after revision 17 with default "deny" is in force. */
static const struct {
    int64_t rev;
    const char *dflt;
    enum policy_fetch_outcome outcome;
    enum policy_env_reason reason;
} revs[] = {
    {16, "deny", POLICY_FETCH_REFUSED, POLICY_ENV_REVISION_ROLLBACK},
    {0, "deny", POLICY_FETCH_REFUSED, POLICY_ENV_REVISION_ROLLBACK},
    {17, "allow", POLICY_FETCH_REFUSED, POLICY_ENV_REVISION_CONFLICT},
    {17, "deny", POLICY_FETCH_UNCHANGED, POLICY_ENV_OK},
    {18, "allow", POLICY_FETCH_UPDATED, POLICY_ENV_OK},
};

START_TEST(test_fetch_revisions)
{
    struct fx x;
    char *b17 = bundle(17, "deny", NULL), *b = bundle(revs[_i].rev, revs[_i].dflt, NULL);
    fx_init(&x, &base_cfg);

    feed_200(&x, 1000, x.key, b17, "\"e17\"", 0);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_UPDATED);
    feed_200(&x, 50000, x.key, b, "\"new\"", 0);
    ck_assert_msg(x.a.outcome == revs[_i].outcome && x.a.reason == revs[_i].reason,
                  "rev %lld: got %s/%s (%s)", (long long)revs[_i].rev,
                  policy_fetch_outcome_name(x.a.outcome), policy_env_reason_name(x.a.reason),
                  x.a.detail);
    if (revs[_i].outcome == POLICY_FETCH_REFUSED) {
        ck_assert_ptr_null(x.a.bundle);
        ck_assert_ptr_null(x.a.payload);
        ck_assert_int_eq(policy_fetch_revision(x.f), 17);
        ck_assert_str_eq(policy_fetch_etag(x.f), "\"e17\""); /* failures keep the ETag */
        ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), 1000);
        ck_assert_uint_eq(policy_fetch_failures(x.f), 1);
        ck_assert_int_le(x.a.delay_ms, 1000);
        ck_assert(x.a.detail[0] != '\0');
    } else {
        ck_assert_int_eq(policy_fetch_revision(x.f), revs[_i].rev);
        ck_assert_str_eq(policy_fetch_etag(x.f), "\"new\"");
        ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), 50000);
        ck_assert_uint_eq(policy_fetch_failures(x.f), 0);
        ck_assert((x.a.bundle != NULL) == (revs[_i].outcome == POLICY_FETCH_UPDATED));
        assert_poll_delay(&x, &base_cfg);
    }
    free(b17);
    free(b);
    fx_clear(&x);
}
END_TEST

START_TEST(test_fetch_backoff)
{
    static const struct {
        enum policy_fetch_result_kind kind;
        int status;
        enum policy_fetch_outcome outcome;
    } fails[] = {
        {POLICY_FETCH_RES_BODY, 200, POLICY_FETCH_REFUSED},
        {POLICY_FETCH_RES_STATUS, 503, POLICY_FETCH_HTTP_ERROR},
        {POLICY_FETCH_RES_TRANSPORT, 0, POLICY_FETCH_TRANSPORT_ERROR},
        {POLICY_FETCH_RES_TIMEOUT, 0, POLICY_FETCH_TIMEOUT},
    };
    struct fx x;
    char *b17 = bundle(17, "deny", NULL), *b18 = bundle(18, "deny", NULL);
    int64_t base = 1000, now = 1000;
    fx_init(&x, &base_cfg);

    feed_200(&x, now, x.key, b17, "\"e17\"", 0);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_UPDATED);
    for (unsigned k = 1; k <= 12; k++) {
        size_t i = k % N_ELEMS(fails);
        now += 1000;
        if (fails[i].kind == POLICY_FETCH_RES_BODY) /* bad signature */
            feed_200(&x, now, x.other, b18, "\"e18\"", 0);
        else
            feed(&x, now, fails[i].kind, fails[i].status, NULL, 0);
        ck_assert_int_eq(x.a.outcome, fails[i].outcome);
        if (fails[i].kind == POLICY_FETCH_RES_BODY)
            ck_assert_int_eq(x.a.reason, POLICY_ENV_BAD_SIGNATURE);
        ck_assert_uint_eq(policy_fetch_failures(x.f), k);
        /* base doubles from 1 s and stops at poll_max; jitter in [base/2, base] */
        ck_assert_msg(x.a.delay_ms >= base / 2 && x.a.delay_ms <= base,
                      "failure %u: delay %lld not in [%lld, %lld]", k, (long long)x.a.delay_ms,
                      (long long)base / 2, (long long)base);
        ck_assert_int_le(x.a.delay_ms, base_cfg.poll_max_ms);
        ck_assert_str_eq(x.a.if_none_match, "\"e17\"");
        base = base * 2 > base_cfg.poll_max_ms ? base_cfg.poll_max_ms : base * 2;
    }
    ck_assert_int_eq(base, base_cfg.poll_max_ms);
    /* all bad signatures: still 17, last contact unchanged, stale after 5 min */
    ck_assert_int_eq(policy_fetch_revision(x.f), 17);
    ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), 1000);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, 1000 + 300000, 300000, 0), 0);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, 1000 + 300001, 300000, 0), 1);
    /* success resets the count and the delay */
    feed(&x, now + 1, POLICY_FETCH_RES_NOT_MODIFIED, 304, NULL, 0);
    ck_assert_uint_eq(policy_fetch_failures(x.f), 0);
    assert_poll_delay(&x, &base_cfg);
    feed(&x, now + 2, POLICY_FETCH_RES_TIMEOUT, 0, NULL, 0);
    ck_assert_int_le(x.a.delay_ms, 1000);
    ck_assert_int_ge(x.a.delay_ms, 500);
    free(b17);
    free(b18);
    fx_clear(&x);
}
END_TEST

START_TEST(test_fetch_long_poll)
{
    struct policy_fetch_config cfg = base_cfg;
    struct fx x, y;
    char *b17 = bundle(17, "deny", NULL);

    /* no long poll: no Prefer, and a fast answer gets the poll delay */
    fx_init(&y, &base_cfg);
    ck_assert_int_eq(policy_fetch_start(y.f, 0, &y.a), 0);
    ck_assert_str_eq(y.a.prefer, "");
    feed_200(&y, 1000, y.key, b17, "\"e\"", 0);
    ck_assert_str_eq(y.a.prefer, "");
    assert_poll_delay(&y, &base_cfg);
    fx_clear(&y);

    cfg.long_poll_ms = 30000;
    fx_init(&x, &cfg);
    ck_assert_int_eq(policy_fetch_start(x.f, 0, &x.a), 0);
    ck_assert_str_eq(x.a.prefer, "wait=30");
    /* a new bundle: ask again at once (the server holds the next request) */
    feed_200(&x, 1000, x.key, b17, "\"e\"", 900);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_UPDATED);
    ck_assert_int_eq(x.a.delay_ms, 0);
    ck_assert_str_eq(x.a.prefer, "wait=30");
    ck_assert_str_eq(x.a.if_none_match, "\"e\"");
    /* a 304 the server held: re-poll within the small jitter */
    feed(&x, 31000, POLICY_FETCH_RES_NOT_MODIFIED, 304, NULL, 1000);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_NOT_MODIFIED);
    ck_assert_int_le(x.a.delay_ms, POLICY_FETCH_REPOLL_JITTER_MS);
    ck_assert_str_eq(x.a.prefer, "wait=30");
    /* a 304 answered at once (server ignores Prefer): normal polling */
    feed(&x, 31050, POLICY_FETCH_RES_NOT_MODIFIED, 304, NULL, 31000);
    assert_poll_delay(&x, &cfg);
    /* unknown send time: normal polling, never a tight loop */
    feed(&x, 90000, POLICY_FETCH_RES_NOT_MODIFIED, 304, NULL, 0);
    assert_poll_delay(&x, &cfg);
    /* errors still back off, Prefer still sent */
    feed(&x, 90001, POLICY_FETCH_RES_STATUS, 500, NULL, 0);
    ck_assert_int_ge(x.a.delay_ms, 500);
    ck_assert_str_eq(x.a.prefer, "wait=30");
    fx_clear(&x);

    /* sub-second long polls round up */
    cfg.long_poll_ms = 1500;
    fx_init(&x, &cfg);
    ck_assert_int_eq(policy_fetch_start(x.f, 0, &x.a), 0);
    ck_assert_str_eq(x.a.prefer, "wait=2");
    fx_clear(&x);
    free(b17);
}
END_TEST

START_TEST(test_fetch_staleness)
{
    struct fx x;
    /* 2026-11-23T00:00:00Z */
    const int64_t exp_s = 1795392000;
    char *b = bundle(3, "deny", "2026-11-23T00:00:00Z");
    fx_init(&x, &base_cfg);

    feed_200(&x, 1000, x.key, b, NULL, 0);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_UPDATED);
    ck_assert_int_eq(policy_bundle_expires_at(x.a.bundle), exp_s);
    ck_assert_str_eq(x.a.if_none_match, "");
    ck_assert_int_eq(policy_fetch_staleness_ms(x.f, 1000), 0);
    ck_assert_int_eq(policy_fetch_staleness_ms(x.f, 500), 0); /* clock went back */
    ck_assert_int_eq(policy_fetch_staleness_ms(x.f, 4000), 3000);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, 4000, 3000, 0), 0);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, 4001, 3000, 0), 1);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, 10000000, 0, 0), 0); /* no limit */
    ck_assert_int_eq(policy_fetch_is_stale(x.f, exp_s * 1000 - 1, 0, exp_s), 0);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, exp_s * 1000, 0, exp_s), 1);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, 4000, 3000, INT64_MAX), 0);
    free(b);
    fx_clear(&x);
}
END_TEST

START_TEST(test_fetch_seed_from_cache)
{
    struct fx x;
    char *b17 = bundle(17, "deny", NULL), *b16 = bundle(16, "deny", NULL);
    char *b17b = bundle(17, "allow", NULL);
    const int64_t mtime = 5000, now = 65000;
    fx_init(&x, &base_cfg);

    ck_assert_int_eq(policy_fetch_seed(x.f, b17, strlen(b17), 17, 1, mtime), 0);
    ck_assert_int_eq(policy_fetch_revision(x.f), 17);
    ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), -1); /* a cache is not a contact */
    ck_assert_int_eq(policy_fetch_staleness_ms(x.f, now), now - mtime);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, now, 60000, 0), 0);
    ck_assert_int_eq(policy_fetch_is_stale(x.f, now + 1, 60000, 0), 1);
    ck_assert_int_eq(policy_fetch_start(x.f, now, &x.a), 0);
    ck_assert_str_eq(x.a.if_none_match, ""); /* no ETag from a cache */

    /* the floor holds against the control plane */
    feed_200(&x, now, x.key, b16, "\"e16\"", 0);
    ck_assert_int_eq(x.a.reason, POLICY_ENV_REVISION_ROLLBACK);
    feed_200(&x, now, x.key, b17b, "\"e17b\"", 0);
    ck_assert_int_eq(x.a.reason, POLICY_ENV_REVISION_CONFLICT);
    ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), -1);
    /* the same content is a successful contact */
    feed_200(&x, now + 10, x.key, b17, "\"e17\"", 0);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_UNCHANGED);
    ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), now + 10);
    ck_assert_int_eq(policy_fetch_staleness_ms(x.f, now + 10), 0);
    ck_assert_str_eq(x.a.if_none_match, "\"e17\"");

    /* seeding without from_cache counts as contact */
    ck_assert_int_eq(policy_fetch_seed(x.f, b16, strlen(b16), 16, 0, 70000), 0);
    ck_assert_int_eq(policy_fetch_last_contact_ms(x.f), 70000);
    ck_assert_int_eq(policy_fetch_seed(x.f, b16, strlen(b16), -1, 0, 70000), POLICY_ERR_INVAL);
    free(b17);
    free(b16);
    free(b17b);
    fx_clear(&x);
}
END_TEST

START_TEST(test_fetch_bad_inputs)
{
    struct fx x;
    struct policy_fetch *f = NULL;
    struct policy_fetch_config c = base_cfg;
    struct policy_fetch_result r = {.kind = (enum policy_fetch_result_kind)99};
    char err[256];
    char *bad = fmt("{\"revision\": 1, \"rules\": [], \"bogus\": 1}");

    c.poll_max_ms = c.poll_min_ms - 1;
    ck_assert_int_eq(policy_fetch_new(&f, &c, NULL, err, sizeof(err)), POLICY_ERR_FETCH_CONFIG);
    c = base_cfg;
    c.poll_min_ms = 0;
    ck_assert_int_eq(policy_fetch_new(&f, &c, NULL, err, sizeof(err)), POLICY_ERR_FETCH_CONFIG);
    c = base_cfg;
    c.long_poll_ms = -1;
    ck_assert_int_eq(policy_fetch_new(&f, &c, NULL, err, sizeof(err)), POLICY_ERR_FETCH_CONFIG);

    fx_init(&x, &base_cfg);
    ck_assert_int_eq(policy_fetch_on_result(x.f, 0, &r, &x.a), POLICY_ERR_FETCH_RESULT);
    ck_assert_int_eq(policy_fetch_on_result(x.f, 0, NULL, &x.a), POLICY_ERR_INVAL);
    /* a validly signed payload that is not a bundle */
    feed_200(&x, 1000, x.key, bad, "\"e\"", 0);
    ck_assert_int_eq(x.a.outcome, POLICY_FETCH_REFUSED);
    ck_assert_int_eq(x.a.reason, POLICY_ENV_BAD_BUNDLE);
    ck_assert_ptr_nonnull(strstr(x.a.detail, "bogus"));
    ck_assert_int_eq(policy_fetch_revision(x.f), -1);
    /* a body that is not an envelope */
    {
        struct policy_fetch_result g = {
            .kind = POLICY_FETCH_RES_BODY, .body = "<html>", .body_len = 6};
        policy_fetch_action_clear(&x.a);
        ck_assert_int_eq(policy_fetch_on_result(x.f, 2000, &g, &x.a), 0);
        ck_assert_int_eq(x.a.reason, POLICY_ENV_BAD_ENVELOPE);
    }
    /* transport detail is passed through */
    {
        struct policy_fetch_result t = {.kind = POLICY_FETCH_RES_TRANSPORT,
                                        .detail = "peer is spiffe://x/y, want spiffe://x/control"};
        policy_fetch_action_clear(&x.a);
        ck_assert_int_eq(policy_fetch_on_result(x.f, 3000, &t, &x.a), 0);
        ck_assert_str_eq(x.a.detail, t.detail);
    }
    /* keyring swapped to none: everything is unknown_key */
    policy_fetch_set_keyring(x.f, NULL);
    {
        char *b = bundle(1, "deny", NULL);
        feed_200(&x, 4000, x.key, b, NULL, 0);
        ck_assert_int_eq(x.a.reason, POLICY_ENV_UNKNOWN_KEY);
        free(b);
    }
    free(bad);
    fx_clear(&x);
}
END_TEST

START_TEST(test_fetch_deterministic)
{
    struct fx x, y;
    char *b = bundle(1, "deny", NULL);
    fx_init(&x, &base_cfg);
    fx_init(&y, &base_cfg);
    for (int i = 0; i < 20; i++) {
        if (i == 0) {
            feed_200(&x, 1000, x.key, b, "\"e\"", 0);
            feed_200(&y, 1000, y.key, b, "\"e\"", 0);
        } else {
            enum policy_fetch_result_kind k =
                i % 3 ? POLICY_FETCH_RES_NOT_MODIFIED : POLICY_FETCH_RES_TIMEOUT;
            feed(&x, 1000 + i, k, 0, NULL, 0);
            feed(&y, 1000 + i, k, 0, NULL, 0);
        }
        ck_assert_int_eq(x.a.delay_ms, y.a.delay_ms);
    }
    free(b);
    fx_clear(&x);
    fx_clear(&y);
}
END_TEST

TCase *tcase_fetch(void)
{
    TCase *tc = tcase_create("fetch");
    tcase_add_test(tc, test_fetch_accept_and_304);
    tcase_add_loop_test(tc, test_fetch_revisions, 0, N_ELEMS(revs));
    tcase_add_test(tc, test_fetch_backoff);
    tcase_add_test(tc, test_fetch_long_poll);
    tcase_add_test(tc, test_fetch_staleness);
    tcase_add_test(tc, test_fetch_seed_from_cache);
    tcase_add_test(tc, test_fetch_bad_inputs);
    tcase_add_test(tc, test_fetch_deterministic);
    return tc;
}
