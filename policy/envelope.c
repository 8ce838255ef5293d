/*
 * envelope.c - DSSE signed envelopes for policy bundles, and the Ed25519 /
 * ECDSA P-256 keys and keyrings that sign and verify them (DESIGN.md
 * "Policy bundles"; DSSE v1 protocol: PAE, envelope JSON).
 *
 * Owns: key loading and generation, struct policy_keyring, the verifier
 * and the signer; the envelope reader is envelope_parse.c. The fetch state
 * machine (fetch.c) calls policy_envelope_verify() on every 200 from the
 * control plane, so the parser treats its input as hostile: size cap before
 * parsing, a fixed jsmn token budget, and its own structure check (jsmn,
 * even in strict mode, accepts "[1,,2]", "{"a":1,}" and missing commas; a
 * DSSE envelope read two ways by two parsers is how signature bypasses
 * happen, so anything that is not plain JSON, and any member given twice,
 * is refused).
 */
#include "envelope_int.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "certs.h"

#define ENV_MAX_TOKENS 1024 /* ample for 16 signatures plus a few extra members */

struct keyring_entry {
    char keyid[POLICY_KEYID_MAX + 1]; /* "" = id-less: tried against every signature */
    EVP_PKEY *pub;
};

struct policy_keyring {
    struct keyring_entry keys[POLICY_KEYRING_MAX_KEYS];
    size_t n;
};

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *policy_envelope_strerror(int rc)
{
    switch (rc) {
    case POLICY_ERR_ENV_REFUSED:
        return "envelope refused";
    case POLICY_ERR_ENV_KEY:
        return "bad or unsupported key";
    case POLICY_ERR_ENV_KEYID:
        return "bad or duplicate keyid";
    case POLICY_ERR_ENV_CRYPTO:
        return "cryptographic operation failed";
    case POLICY_ERR_ENV_IO:
        return "key file could not be read";
    case POLICY_ERR_ENV_FULL:
        return "too many keys in keyring";
    case POLICY_ERR_FETCH_CONFIG:
        return "bad fetch configuration";
    case POLICY_ERR_FETCH_RESULT:
        return "malformed fetch result";
    default:
        return policy_strerror(rc);
    }
}

static const char *const reason_names[POLICY_ENV_R_COUNT] = {
    [POLICY_ENV_OK] = "ok",
    [POLICY_ENV_BAD_ENVELOPE] = "bad_envelope",
    [POLICY_ENV_WRONG_PAYLOAD_TYPE] = "wrong_payload_type",
    [POLICY_ENV_BAD_BASE64] = "bad_base64",
    [POLICY_ENV_TOO_LARGE] = "too_large",
    [POLICY_ENV_TOO_MANY_SIGNATURES] = "too_many_signatures",
    [POLICY_ENV_NO_SIGNATURES] = "no_signatures",
    [POLICY_ENV_UNKNOWN_KEY] = "unknown_key",
    [POLICY_ENV_BAD_SIGNATURE] = "bad_signature",
    [POLICY_ENV_BAD_BUNDLE] = "bad_bundle",
    [POLICY_ENV_REVISION_ROLLBACK] = "revision_rollback",
    [POLICY_ENV_REVISION_CONFLICT] = "revision_conflict",
    [POLICY_ENV_INTERNAL] = "internal_error",
};

const char *policy_env_reason_name(enum policy_env_reason r)
{
    if ((int)r < 0 || r >= POLICY_ENV_R_COUNT || reason_names[r] == NULL)
        return "unknown";
    return reason_names[r];
}

/* ---- keys ------------------------------------------------------------------ */

const char *policy_key_type_name(const EVP_PKEY *k)
{
    char group[64];
    size_t glen = 0;

    if (k == NULL)
        return NULL;
    if (EVP_PKEY_is_a(k, "ED25519"))
        return "ed25519";
    if (EVP_PKEY_is_a(k, "EC") && EVP_PKEY_get_group_name(k, group, sizeof(group), &glen) == 1 &&
        (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0))
        return "p256";
    return NULL;
}

int policy_key_type_parse(const char *s, enum policy_key_type *out)
{
    if (s == NULL || out == NULL)
        return POLICY_ERR_INVAL;
    if (strcmp(s, "ed25519") == 0)
        *out = POLICY_KEY_ED25519;
    else if (strcmp(s, "p256") == 0)
        *out = POLICY_KEY_P256;
    else
        return POLICY_ERR_INVAL;
    return 0;
}

int policy_key_generate(enum policy_key_type type, EVP_PKEY **out, char *err, size_t errlen)
{
    EVP_PKEY *k;

    if (out == NULL || (type != POLICY_KEY_ED25519 && type != POLICY_KEY_P256)) {
        errf(err, errlen, "unknown key type");
        return POLICY_ERR_INVAL;
    }
    ERR_clear_error();
    if (type == POLICY_KEY_ED25519)
        k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    else
        k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (k == NULL) {
        certs_ossl_err(err, errlen, "key generation failed");
        return POLICY_ERR_ENV_CRYPTO;
    }
    *out = k;
    return 0;
}

/* Never prompt for a passphrase on a terminal: this is a library. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int key_from_pem(EVP_PKEY **out, const char *pem, size_t len, int private, char *err,
                        size_t errlen)
{
    const char *marker = private ? "PRIVATE KEY-----" : "-----BEGIN PUBLIC KEY-----";
    BIO *bio;
    EVP_PKEY *k;

    if (out == NULL || (pem == NULL && len > 0)) {
        errf(err, errlen, "no key given");
        return POLICY_ERR_INVAL;
    }
    if (len > POLICY_KEY_FILE_MAX) {
        errf(err, errlen, "key PEM is %zu bytes, limit %d", len, POLICY_KEY_FILE_MAX);
        return POLICY_ERR_TOO_LARGE;
    }
    /* OpenSSL 3's decoders call a key-less input "unsupported"; say what
     * is actually wrong. */
    if (len == 0 || memmem(pem, len, marker, strlen(marker)) == NULL) {
        errf(err, errlen, "no PEM %s key found", private ? "private" : "public");
        return POLICY_ERR_ENV_KEY;
    }
    ERR_clear_error();
    bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        errf(err, errlen, "out of memory");
        return POLICY_ERR_NOMEM;
    }
    k = private ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)
                : PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (k == NULL) {
        certs_ossl_err(err, errlen, private ? "bad PEM private key" : "bad PEM public key");
        return POLICY_ERR_ENV_KEY;
    }
    if (policy_key_type_name(k) == NULL) {
        errf(err, errlen, "unsupported key type %s (want Ed25519 or ECDSA P-256)",
             EVP_PKEY_get0_type_name(k) ? EVP_PKEY_get0_type_name(k) : "?");
        EVP_PKEY_free(k);
        return POLICY_ERR_ENV_KEY;
    }
    *out = k;
    return 0;
}

int policy_key_private_from_pem(EVP_PKEY **out, const char *pem, size_t len, char *err,
                                size_t errlen)
{
    return key_from_pem(out, pem, len, 1, err, errlen);
}

int policy_key_public_from_pem(EVP_PKEY **out, const char *pem, size_t len, char *err,
                               size_t errlen)
{
    return key_from_pem(out, pem, len, 0, err, errlen);
}

static int key_load(EVP_PKEY **out, const char *path, int private, char *err, size_t errlen)
{
    char *data = NULL, detail[256] = "";
    size_t len = 0;
    int rc;

    if (out == NULL || path == NULL) {
        errf(err, errlen, "no key path given");
        return POLICY_ERR_INVAL;
    }
    rc = certs_read_file(path, POLICY_KEY_FILE_MAX, &data, &len, detail, sizeof(detail));
    if (rc != 0) {
        /* certs_read_file already names the path. */
        errf(err, errlen, "%s", detail);
        return rc == CERTS_ERR_TOO_LARGE ? POLICY_ERR_TOO_LARGE
               : rc == CERTS_ERR_NOMEM   ? POLICY_ERR_NOMEM
                                         : POLICY_ERR_ENV_IO;
    }
    rc = key_from_pem(out, data, len, private, detail, sizeof(detail));
    if (rc != 0)
        errf(err, errlen, "%s: %s", path, detail);
    OPENSSL_cleanse(data, len);
    free(data);
    return rc;
}

int policy_key_private_load(EVP_PKEY **out, const char *path, char *err, size_t errlen)
{
    return key_load(out, path, 1, err, errlen);
}

int policy_key_public_load(EVP_PKEY **out, const char *path, char *err, size_t errlen)
{
    return key_load(out, path, 0, err, errlen);
}

static int key_to_pem(const EVP_PKEY *k, int private, char **pem, size_t *len, char *err,
                      size_t errlen)
{
    BIO *bio = NULL;
    char *data, *buf;
    long n;
    int ok;

    if (k == NULL || pem == NULL) {
        errf(err, errlen, "no key given");
        return POLICY_ERR_INVAL;
    }
    ERR_clear_error();
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        errf(err, errlen, "out of memory");
        return POLICY_ERR_NOMEM;
    }
    /* PEM_write_bio_PrivateKey writes PKCS#8 ("PRIVATE KEY") in OpenSSL 3. */
    ok = private ? PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_bio_PUBKEY(bio, k);
    if (!ok) {
        certs_ossl_err(err, errlen, private ? "cannot write private key" : "cannot write public key");
        BIO_free(bio);
        return POLICY_ERR_ENV_KEY;
    }
    n = BIO_get_mem_data(bio, &data);
    buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf == NULL) {
        BIO_free(bio);
        errf(err, errlen, "out of memory");
        return POLICY_ERR_NOMEM;
    }
    memcpy(buf, data, (size_t)n);
    buf[n] = '\0';
    if (private)
        OPENSSL_cleanse(data, (size_t)n);
    BIO_free(bio);
    *pem = buf;
    if (len != NULL)
        *len = (size_t)n;
    return 0;
}

int policy_key_private_pem(const EVP_PKEY *k, char **pem, size_t *len, char *err, size_t errlen)
{
    return key_to_pem(k, 1, pem, len, err, errlen);
}

int policy_key_public_pem(const EVP_PKEY *k, char **pem, size_t *len, char *err, size_t errlen)
{
    return key_to_pem(k, 0, pem, len, err, errlen);
}

int policy_keyid_valid(const char *s)
{
    size_t n;
    if (s == NULL)
        return 0;
    n = strlen(s);
    if (n == 0 || n > POLICY_KEYID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._:/@+-", c) != NULL))
            return 0;
    }
    return 1;
}

/* ---- keyrings -------------------------------------------------------------- */

int policy_keyring_new(struct policy_keyring **out)
{
    if (out == NULL)
        return POLICY_ERR_INVAL;
    *out = calloc(1, sizeof(**out));
    return *out == NULL ? POLICY_ERR_NOMEM : 0;
}

void policy_keyring_free(struct policy_keyring *kr)
{
    if (kr == NULL)
        return;
    for (size_t i = 0; i < kr->n; i++)
        EVP_PKEY_free(kr->keys[i].pub);
    free(kr);
}

size_t policy_keyring_count(const struct policy_keyring *kr)
{
    return kr == NULL ? 0 : kr->n;
}

int policy_keyring_add(struct policy_keyring *kr, const char *keyid, const EVP_PKEY *key, char *err,
                       size_t errlen)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    EVP_PKEY *pub;
    int n;

    if (kr == NULL || key == NULL) {
        errf(err, errlen, "no keyring or key given");
        return POLICY_ERR_INVAL;
    }
    if (keyid == NULL)
        keyid = "";
    if (keyid[0] != '\0' && !policy_keyid_valid(keyid)) {
        errf(err, errlen, "keyid must be 1-%d characters of A-Za-z0-9._:/@+-", POLICY_KEYID_MAX);
        return POLICY_ERR_ENV_KEYID;
    }
    for (size_t i = 0; i < kr->n; i++) {
        if (keyid[0] != '\0' && strcmp(kr->keys[i].keyid, keyid) == 0) {
            errf(err, errlen, "keyid %s given twice", keyid);
            return POLICY_ERR_ENV_KEYID;
        }
    }
    if (kr->n == POLICY_KEYRING_MAX_KEYS) {
        errf(err, errlen, "keyring is full (%d keys)", POLICY_KEYRING_MAX_KEYS);
        return POLICY_ERR_ENV_FULL;
    }
    if (policy_key_type_name(key) == NULL) {
        errf(err, errlen, "unsupported key type (want Ed25519 or ECDSA P-256)");
        return POLICY_ERR_ENV_KEY;
    }
    /* Keep only the public half: a DER round trip through
     * SubjectPublicKeyInfo drops the private key if the caller passed one. */
    ERR_clear_error();
    n = i2d_PUBKEY(key, &der);
    if (n <= 0) {
        certs_ossl_err(err, errlen, "cannot encode public key");
        return POLICY_ERR_ENV_KEY;
    }
    p = der;
    pub = d2i_PUBKEY(NULL, &p, n);
    OPENSSL_free(der);
    if (pub == NULL) {
        certs_ossl_err(err, errlen, "cannot decode public key");
        return POLICY_ERR_ENV_KEY;
    }
    snprintf(kr->keys[kr->n].keyid, sizeof(kr->keys[kr->n].keyid), "%s", keyid);
    kr->keys[kr->n].pub = pub;
    kr->n++;
    return 0;
}

int policy_keyring_add_pem(struct policy_keyring *kr, const char *keyid, const char *pem,
                           size_t len, char *err, size_t errlen)
{
    EVP_PKEY *k = NULL;
    int rc = policy_key_public_from_pem(&k, pem, len, err, errlen);
    if (rc != 0)
        return rc;
    rc = policy_keyring_add(kr, keyid, k, err, errlen);
    EVP_PKEY_free(k);
    return rc;
}

int policy_keyring_add_file(struct policy_keyring *kr, const char *keyid, const char *path,
                            char *err, size_t errlen)
{
    EVP_PKEY *k = NULL;
    int rc = policy_key_public_load(&k, path, err, errlen);
    if (rc != 0)
        return rc;
    rc = policy_keyring_add(kr, keyid, k, err, errlen);
    EVP_PKEY_free(k);
    return rc;
}

int policy_keyring_load(struct policy_keyring **out, const struct policy_keyring_source *src,
                        size_t n, char *err, size_t errlen)
{
    struct policy_keyring *kr = NULL;
    char detail[300];
    int rc;

    if (out == NULL || (src == NULL && n > 0)) {
        errf(err, errlen, "no keys given");
        return POLICY_ERR_INVAL;
    }
    if ((rc = policy_keyring_new(&kr)) != 0) {
        errf(err, errlen, "out of memory");
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        detail[0] = '\0';
        rc = policy_keyring_add_file(kr, src[i].keyid, src[i].path, detail, sizeof(detail));
        if (rc != 0) {
            errf(err, errlen, "key %s: %s", src[i].keyid ? src[i].keyid : "(none)", detail);
            policy_keyring_free(kr);
            return rc;
        }
    }
    *out = kr;
    return 0;
}

/* ---- PAE, sign and verify primitives ------------------------------------------ */

int policy_envelope_pae(const char *type, size_t type_len, const void *body, size_t body_len,
                        unsigned char **out, size_t *outlen)
{
    char head[96];
    int h;
    unsigned char *buf;
    size_t total;

    if (out == NULL || outlen == NULL || (type == NULL && type_len > 0) ||
        (body == NULL && body_len > 0))
        return POLICY_ERR_INVAL;
    if (body_len > POLICY_BUNDLE_MAX_BYTES || type_len > 1024)
        return POLICY_ERR_TOO_LARGE;
    /* "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body; LEN is ASCII
     * decimal without leading zeros (DSSE protocol.md). */
    h = snprintf(head, sizeof(head), "DSSEv1 %zu ", type_len);
    total = (size_t)h + type_len + 32 + body_len;
    buf = malloc(total + 1);
    if (buf == NULL)
        return POLICY_ERR_NOMEM;
    memcpy(buf, head, (size_t)h);
    total = (size_t)h;
    if (type_len > 0)
        memcpy(buf + total, type, type_len);
    total += type_len;
    h = snprintf(head, sizeof(head), " %zu ", body_len);
    memcpy(buf + total, head, (size_t)h);
    total += (size_t)h;
    if (body_len > 0)
        memcpy(buf + total, body, body_len);
    total += body_len;
    buf[total] = '\0';
    *out = buf;
    *outlen = total;
    return 0;
}

/* Ed25519 signs the message itself (no prehash); ECDSA signs SHA-256. */
static const EVP_MD *md_for(const EVP_PKEY *k)
{
    return EVP_PKEY_is_a(k, "ED25519") ? NULL : EVP_sha256();
}

/* 1 verified, 0 not. Never leaves errors on OpenSSL's queue. */
static int sig_verifies(EVP_PKEY *pub, const unsigned char *sig, size_t siglen,
                        const unsigned char *msg, size_t msglen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = 0;

    if (ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, md_for(pub), NULL, pub) == 1)
        ok = EVP_DigestVerify(ctx, sig, siglen, msg, msglen) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

static int sign_msg(EVP_PKEY *priv, const unsigned char *msg, size_t msglen, unsigned char **sig,
                    size_t *siglen, char *err, size_t errlen)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = NULL;
    size_t n = 0;

    ERR_clear_error();
    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, md_for(priv), NULL, priv) != 1 ||
        EVP_DigestSign(ctx, NULL, &n, msg, msglen) != 1)
        goto fail;
    buf = malloc(n);
    if (buf == NULL || EVP_DigestSign(ctx, buf, &n, msg, msglen) != 1)
        goto fail;
    EVP_MD_CTX_free(ctx);
    *sig = buf;
    *siglen = n;
    return 0;
fail:
    certs_ossl_err(err, errlen, "signing failed");
    free(buf);
    EVP_MD_CTX_free(ctx);
    return POLICY_ERR_ENV_CRYPTO;
}

int policy_envelope_sign(EVP_PKEY *priv, const char *keyid, const char *payload, size_t len,
                         char **env_out, size_t *env_len, char *err, size_t errlen)
{
    static const char type[] = POLICY_ENVELOPE_PAYLOAD_TYPE;
    unsigned char *pae = NULL, *sig = NULL;
    size_t pae_len = 0, sig_len = 0, cap, o;
    char *env = NULL;
    int rc;

    if (priv == NULL || env_out == NULL || (payload == NULL && len > 0)) {
        errf(err, errlen, "no key or payload given");
        return POLICY_ERR_INVAL;
    }
    if (keyid != NULL && keyid[0] != '\0' && !policy_keyid_valid(keyid)) {
        errf(err, errlen, "keyid must be 1-%d characters of A-Za-z0-9._:/@+-", POLICY_KEYID_MAX);
        return POLICY_ERR_ENV_KEYID;
    }
    if (policy_key_type_name(priv) == NULL) {
        errf(err, errlen, "unsupported key type (want Ed25519 or ECDSA P-256)");
        return POLICY_ERR_ENV_KEY;
    }
    /* Envelope size is known up front: refuse what a verifier would. */
    cap = 4 * ((len + 2) / 3) + 4 * ((SIG_MAX + 2) / 3) + sizeof(type) + POLICY_KEYID_MAX + 96;
    if (len > POLICY_BUNDLE_MAX_BYTES || cap > POLICY_BUNDLE_MAX_BYTES) {
        errf(err, errlen, "payload of %zu bytes makes an envelope over the %u byte limit", len,
             POLICY_BUNDLE_MAX_BYTES);
        return POLICY_ERR_TOO_LARGE;
    }
    rc = policy_envelope_pae(type, sizeof(type) - 1, payload, len, &pae, &pae_len);
    if (rc != 0) {
        errf(err, errlen, "out of memory");
        return rc;
    }
    rc = sign_msg(priv, pae, pae_len, &sig, &sig_len, err, errlen);
    if (rc != 0)
        goto done;
    if (sig_len > SIG_MAX) {
        errf(err, errlen, "signature of %zu bytes is too long", sig_len);
        rc = POLICY_ERR_ENV_CRYPTO;
        goto done;
    }
    env = malloc(cap);
    if (env == NULL) {
        errf(err, errlen, "out of memory");
        rc = POLICY_ERR_NOMEM;
        goto done;
    }
    o = (size_t)snprintf(env, cap, "{\"payloadType\":\"%s\",\"payload\":\"", type);
    o += certs_b64_encode((const unsigned char *)payload, len, env + o);
    o += (size_t)snprintf(env + o, cap - o, "\",\"signatures\":[{");
    if (keyid != NULL && keyid[0] != '\0')
        o += (size_t)snprintf(env + o, cap - o, "\"keyid\":\"%s\",", keyid);
    o += (size_t)snprintf(env + o, cap - o, "\"sig\":\"");
    o += certs_b64_encode(sig, sig_len, env + o);
    o += (size_t)snprintf(env + o, cap - o, "\"}]}");
    *env_out = env;
    if (env_len != NULL)
        *env_len = o;
    rc = 0;
done:
    free(pae);
    free(sig);
    return rc;
}

/* ---- verification -------------------------------------------------------------- */

/* Decodes the payload string token (JSON-unescaped, then base64). */
static enum policy_env_reason decode_payload(const struct certs_json *j, int tok,
                                             unsigned char **out, size_t *outlen, char *err,
                                             size_t errlen)
{
    size_t raw = (size_t)(j->tok[tok].end - j->tok[tok].start);
    char *s = malloc(raw + 1);
    unsigned char *buf = malloc(raw / 4 * 3 + 4);
    long n = -1, slen;

    if (s == NULL || buf == NULL) {
        free(s);
        free(buf);
        errf(err, errlen, "out of memory");
        return POLICY_ENV_INTERNAL;
    }
    slen = certs_json_str(j, tok, s, raw + 1);
    if (slen >= 0)
        n = certs_b64_decode(s, (size_t)slen, buf, raw / 4 * 3 + 3);
    free(s);
    if (n < 0) {
        free(buf);
        certs_json_errf(j, tok, err, errlen, "payload is not base64");
        return POLICY_ENV_BAD_BASE64;
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = (size_t)n;
    return POLICY_ENV_OK;
}

/* Tries signatures against keys (see envelope.h for the matching rule).
 * Returns the entry that verified, or NULL; *tried counts attempts. */
static const struct keyring_entry *find_verifier(const struct policy_keyring *kr,
                                                 const struct env_parsed *p,
                                                 const unsigned char *pae, size_t pae_len,
                                                 int *tried, int *which)
{
    *tried = 0;
    for (int s = 0; s < p->nsig; s++) {
        const char *sk = p->sig[s].keyid;
        for (size_t i = 0; kr != NULL && i < kr->n; i++) {
            const char *kk = kr->keys[i].keyid;
            if (kk[0] != '\0' && sk[0] != '\0' && strcmp(kk, sk) != 0)
                continue;
            (*tried)++;
            if (sig_verifies(kr->keys[i].pub, p->sig[s].sig, p->sig[s].len, pae, pae_len)) {
                *which = s;
                return &kr->keys[i];
            }
        }
    }
    return NULL;
}

enum policy_env_reason policy_envelope_verify(const struct policy_keyring *kr, const char *env,
                                              size_t len, char **payload_out, size_t *payload_len,
                                              char *keyid_out, size_t keyid_len, char *err,
                                              size_t errlen)
{
    struct certs_json j = {0};
    struct env_parsed *p = NULL;
    const struct keyring_entry *ke;
    unsigned char *payload = NULL, *pae = NULL;
    size_t plen = 0, pae_len = 0;
    enum policy_env_reason r;
    int tried = 0, which = 0;

    if (keyid_out != NULL && keyid_len > 0)
        keyid_out[0] = '\0';
    errf(err, errlen, "%s", "");
    if (payload_out == NULL || (env == NULL && len > 0)) {
        errf(err, errlen, "no envelope or output given");
        return POLICY_ENV_INTERNAL;
    }
    *payload_out = NULL;
    if (len > POLICY_BUNDLE_MAX_BYTES) {
        errf(err, errlen, "envelope is %zu bytes, limit %u", len, POLICY_BUNDLE_MAX_BYTES);
        return POLICY_ENV_TOO_LARGE;
    }
    if (certs_json_parse(&j, env, len, ENV_MAX_TOKENS, err, errlen) != 0)
        return POLICY_ENV_BAD_ENVELOPE;
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        errf(err, errlen, "out of memory");
        r = POLICY_ENV_INTERNAL;
        goto done;
    }
    if ((r = policy_env_parse(&j, p, err, errlen)) != POLICY_ENV_OK)
        goto done;
    if ((r = decode_payload(&j, p->payload, &payload, &plen, err, errlen)) != POLICY_ENV_OK)
        goto done;
    if (policy_envelope_pae(POLICY_ENVELOPE_PAYLOAD_TYPE, sizeof(POLICY_ENVELOPE_PAYLOAD_TYPE) - 1,
                            payload, plen, &pae, &pae_len) != 0) {
        errf(err, errlen, "out of memory");
        r = POLICY_ENV_INTERNAL;
        goto done;
    }
    ke = find_verifier(kr, p, pae, pae_len, &tried, &which);
    if (ke == NULL) {
        const char *first = p->sig[0].keyid;
        if (tried > 0) {
            errf(err, errlen, "no signature verifies (%d tried against %zu key(s))", tried,
                 policy_keyring_count(kr));
            r = POLICY_ENV_BAD_SIGNATURE;
        } else {
            errf(err, errlen, "no signature by a key in the keyring (first keyid: %s)",
                 policy_keyid_valid(first) ? first : "(invalid)");
            r = POLICY_ENV_UNKNOWN_KEY;
        }
        goto done;
    }
    if (keyid_out != NULL && keyid_len > 0)
        snprintf(keyid_out, keyid_len, "%s",
                 ke->keyid[0] != '\0'                      ? ke->keyid
                 : policy_keyid_valid(p->sig[which].keyid) ? p->sig[which].keyid
                                                           : "");
    *payload_out = (char *)payload;
    if (payload_len != NULL)
        *payload_len = plen;
    payload = NULL;
    r = POLICY_ENV_OK;
done:
    free(pae);
    free(payload);
    free(p);
    certs_json_clear(&j);
    return r;
}
