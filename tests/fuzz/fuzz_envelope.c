/*
 * fuzz_envelope.c - policy_envelope_verify() (policy/envelope.c,
 * envelope_parse.c) against a fixed keyring.
 *
 * The keyring holds three test keys (tests/fuzz/keys/, not secret):
 *   "fuzz-1"  Ed25519, made at first call from a fixed 32-byte seed
 *             (SHA-256 of "picket fuzz test key - not secret");
 *   "fuzz-p"  ECDSA P-256 (public PEM below);
 *   ""        Ed25519 without a keyid, tried against every signature.
 *
 * Main invariant: nothing is accepted unless its payload is one that we
 * signed (the SHA-256 digests below, of tests/fuzz/envelope-payloads/NAME.json,
 * signed into the seed envelopes by make_envelope_seeds.sh). A fuzzer
 * cannot forge a signature, so acceptance of any other payload is a
 * verification bug. Re-encoding, reordering or extra members around a
 * known signature may legitimately still verify.
 *
 * Also: on acceptance payload is NUL-terminated with the stated length and
 * keyid_out is a valid keyid (or empty for an id-less key and an id-less
 * signature); on refusal payload is NULL, keyid_out "" and err set; the
 * reason is one verify can give (not the fetch-only rollback, conflict or
 * bad_bundle). And policy_envelope_pae() builds exactly
 * "DSSEv1 <len> <type> <len> <body>" from a split of the input.
 *
 * Positive control, so that a verifier that refuses everything cannot pass:
 * once per process (LLVMFuzzerInitialize), an envelope built here without
 * policy/ (PAE by hand, an Ed25519 signature with the fuzz-1 key through EVP,
 * base64 by EVP_EncodeBlock, JSON by snprintf) must be accepted with keyid
 * "fuzz-1" and exactly its payload; the same envelope with one signature bit
 * flipped, with another payload, or naming the P-256 key must be refused as
 * bad_signature. And over a replayed corpus (fuzz_replay_done()): the signed
 * seeds were accepted, under each of the three keys.
 */
#include <inttypes.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "envelope.h"
#include "fuzz_common.h"

static const unsigned char fuzz1_seed[32] = {
    0x2d, 0xed, 0x0e, 0xb9, 0x69, 0x7e, 0xa2, 0xab, 0x11, 0x81, 0x49, 0x88, 0xec, 0xdb, 0xdb, 0xbf,
    0x3b, 0x48, 0x4e, 0x84, 0xcb, 0x19, 0x1e, 0x52, 0x5f, 0x7b, 0xd5, 0x70, 0xc8, 0x25, 0x89, 0x11};

static const char p256_pub[] = "-----BEGIN PUBLIC KEY-----\n"
                               "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEikeWME8oq0WBWF6S/QvHJh2GmDiu\n"
                               "lX2J+9dAKI+qM7i54JkYxsNyPsbRParBLu2YvEoPfyYl+kBuivTL3xYtCw==\n"
                               "-----END PUBLIC KEY-----\n";

static const char anon_pub[] = "-----BEGIN PUBLIC KEY-----\n"
                               "MCowBQYDK2VwAyEAWEnaQtD8wCv67hI8lEy5PiEO2UFJPO0Q2VV3542hfJo=\n"
                               "-----END PUBLIC KEY-----\n";

/* sha256sum tests/fuzz/envelope-payloads/NAME.json */
static const char *const signed_payloads[] = {
    "f53cbdea5abeb854919a222b49ba173292260747d0a5a3928cc49340cdf1ee5c", /* audit.json */
    "95cbeb1326d91f9562a759fb501b9cc6a9ec97929e4d2f0bacd84e1ec60022ec", /* design-example.json */
    "d16fed85f1f1fd979cf26551bbf8459278993d05dfd9717acd8dbab9d04bfbda", /* minimal.json */
};

/* Built once, never freed: the process owns it until exit (LeakSanitizer
 * does not count memory still reachable from a static). */
static struct policy_keyring *keyring;

/* Corpus-wide counts (replay): accepted inputs by the keyid that verified. */
static size_t accepted_fuzz1, accepted_p256, accepted_anon;

static void build_keyring(void)
{
    EVP_PKEY *k;
    char err[256] = "";

    FUZZ_CHECK(policy_keyring_new(&keyring) == 0);
    k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, fuzz1_seed, sizeof(fuzz1_seed));
    FUZZ_CHECK(k != NULL);
    FUZZ_CHECKF(policy_keyring_add(keyring, "fuzz-1", k, err, sizeof(err)) == 0, "%s", err);
    EVP_PKEY_free(k);
    FUZZ_CHECKF(policy_keyring_add_pem(keyring, "fuzz-p", p256_pub, strlen(p256_pub), err,
                                       sizeof(err)) == 0,
                "%s", err);
    FUZZ_CHECKF(policy_keyring_add_pem(keyring, "", anon_pub, strlen(anon_pub), err, sizeof(err)) ==
                    0,
                "%s", err);
    FUZZ_CHECK(policy_keyring_count(keyring) == 3);
}

/* An envelope for payload[0..plen) signed with `key` (Ed25519), keyid `keyid`
 * (NULL: none), built without policy/. flip_bit >= 0 flips that bit of the
 * signature. Returns a malloc'ed NUL-terminated JSON text. */
static char *independent_envelope(EVP_PKEY *key, const char *keyid, const char *payload,
                                  size_t plen, int flip_bit)
{
    static const char type[] = POLICY_ENVELOPE_PAYLOAD_TYPE;
    unsigned char pae[512], sig[64], sig64[96], pl64[256];
    size_t siglen = sizeof(sig);
    int n = snprintf((char *)pae, sizeof(pae), "DSSEv1 %zu %s %zu ", strlen(type), type, plen);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char *env = malloc(1024);

    FUZZ_CHECK(n > 0 && (size_t)n + plen <= sizeof(pae) && md != NULL && env != NULL);
    memcpy(pae + n, payload, plen);
    FUZZ_CHECK(EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1);
    FUZZ_CHECK(EVP_DigestSign(md, sig, &siglen, pae, (size_t)n + plen) == 1 && siglen == 64);
    EVP_MD_CTX_free(md);
    if (flip_bit >= 0)
        sig[flip_bit / 8] ^= (unsigned char)(1u << (flip_bit % 8));
    FUZZ_CHECK(EVP_EncodeBlock(sig64, sig, 64) > 0);
    FUZZ_CHECK(4 * ((plen + 2) / 3) < sizeof(pl64));
    FUZZ_CHECK(EVP_EncodeBlock(pl64, (const unsigned char *)payload, (int)plen) >= 0);
    n = snprintf(env, 1024,
                 "{\"payloadType\": \"%s\", \"payload\": \"%s\", \"signatures\": "
                 "[{%s%s%s\"sig\": \"%s\"}]}",
                 type, pl64, keyid ? "\"keyid\": \"" : "", keyid ? keyid : "", keyid ? "\", " : "",
                 sig64);
    FUZZ_CHECK(n > 0 && n < 1024);
    return env;
}

static void positive_control(void)
{
    static const char payload[] = "{\"revision\": 3, \"default\": \"deny\", \"rules\": []}";
    static const char other[] = "{\"revision\": 4, \"default\": \"deny\", \"rules\": []}";
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, fuzz1_seed,
                                               sizeof(fuzz1_seed));
    char keyid[POLICY_KEYID_MAX + 1], err[512];
    char *out = NULL, *env;
    size_t outlen = 0;
    enum policy_env_reason r;

    FUZZ_CHECK(k != NULL);
    /* accepted, with its keyid and exactly its payload */
    env = independent_envelope(k, "fuzz-1", payload, sizeof(payload) - 1, -1);
    r = policy_envelope_verify(keyring, env, strlen(env), &out, &outlen, keyid, sizeof(keyid), err,
                               sizeof(err));
    FUZZ_CHECKF(r == POLICY_ENV_OK, "positive control refused (%s: %s): %s",
                policy_env_reason_name(r), err, env);
    FUZZ_CHECK(strcmp(keyid, "fuzz-1") == 0);
    FUZZ_CHECK(outlen == sizeof(payload) - 1 && memcmp(out, payload, outlen) == 0);
    free(out);
    free(env);
    /* one signature bit flipped: refused */
    for (int bit = 0; bit < 512; bit += 97) {
        out = NULL;
        env = independent_envelope(k, "fuzz-1", payload, sizeof(payload) - 1, bit);
        r = policy_envelope_verify(keyring, env, strlen(env), &out, &outlen, keyid, sizeof(keyid),
                                   err, sizeof(err));
        FUZZ_CHECKF(r == POLICY_ENV_BAD_SIGNATURE && out == NULL,
                    "signature bit %d flipped: %s", bit, policy_env_reason_name(r));
        free(env);
    }
    /* the signature of one payload on another: refused */
    env = independent_envelope(k, "fuzz-1", payload, sizeof(payload) - 1, -1);
    {
        char *swapped = NULL, pl64[256];
        char *p = strstr(env, "\"payload\": \"");
        char *q;
        FUZZ_CHECK(p != NULL);
        p += 12;
        q = strchr(p, '"');
        FUZZ_CHECK(q != NULL && EVP_EncodeBlock((unsigned char *)pl64, (const unsigned char *)other,
                                                (int)(sizeof(other) - 1)) > 0);
        swapped = malloc(strlen(env) + strlen(pl64) + 1);
        FUZZ_CHECK(swapped != NULL);
        snprintf(swapped, strlen(env) + strlen(pl64) + 1, "%.*s%s%s", (int)(p - env), env, pl64, q);
        out = NULL;
        r = policy_envelope_verify(keyring, swapped, strlen(swapped), &out, &outlen, keyid,
                                   sizeof(keyid), err, sizeof(err));
        FUZZ_CHECKF(r == POLICY_ENV_BAD_SIGNATURE && out == NULL, "swapped payload: %s",
                    policy_env_reason_name(r));
        free(swapped);
    }
    free(env);
    /* a keyid naming another key (P-256): that key cannot verify it */
    env = independent_envelope(k, "fuzz-p", payload, sizeof(payload) - 1, -1);
    out = NULL;
    r = policy_envelope_verify(keyring, env, strlen(env), &out, &outlen, keyid, sizeof(keyid), err,
                               sizeof(err));
    FUZZ_CHECKF(r == POLICY_ENV_BAD_SIGNATURE && out == NULL, "keyid fuzz-p: %s",
                policy_env_reason_name(r));
    free(env);
    EVP_PKEY_free(k);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (keyring == NULL) {
        build_keyring();
        positive_control();
    }
    return 0;
}

int fuzz_replay_done(size_t ninputs)
{
    fprintf(stderr, "fuzz_envelope: %zu inputs, accepted under fuzz-1 %zu, fuzz-p %zu, no keyid %zu\n",
            ninputs, accepted_fuzz1, accepted_p256, accepted_anon);
    if (accepted_fuzz1 == 0 || accepted_p256 == 0 || accepted_anon == 0) {
        fprintf(stderr, "fuzz_envelope: invariant violated: the signed seeds were not all "
                        "accepted (each key must verify at least one)\n");
        return 1;
    }
    return 0;
}

static int is_signed_payload(const char *p, size_t n)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    unsigned int mdlen = 0;

    FUZZ_CHECK(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == sizeof(md));
    for (size_t i = 0; i < sizeof(md); i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    for (size_t i = 0; i < sizeof(signed_payloads) / sizeof(signed_payloads[0]); i++)
        if (strcmp(hex, signed_payloads[i]) == 0)
            return 1;
    return 0;
}

static void check_pae(const uint8_t *data, size_t size)
{
    /* First byte picks where to split the rest into type and body. */
    size_t split, tlen, blen;
    unsigned char *out = NULL;
    size_t outlen = 0;
    char head[64];
    int hl;

    if (size == 0)
        return;
    split = 1 + (data[0] < size - 1 ? data[0] : size - 1);
    tlen = split - 1;
    blen = size - split;
    FUZZ_CHECK(policy_envelope_pae((const char *)data + 1, tlen, data + split, blen, &out,
                                   &outlen) == 0);
    hl = snprintf(head, sizeof(head), "DSSEv1 %zu ", tlen);
    FUZZ_CHECK(out != NULL && outlen > (size_t)hl && memcmp(out, head, (size_t)hl) == 0);
    FUZZ_CHECK(memcmp(out + hl, data + 1, tlen) == 0);
    {
        size_t o = (size_t)hl + tlen;
        int bl = snprintf(head, sizeof(head), " %zu ", blen);
        FUZZ_CHECK(outlen == o + (size_t)bl + blen);
        FUZZ_CHECK(memcmp(out + o, head, (size_t)bl) == 0);
        FUZZ_CHECK(blen == 0 || memcmp(out + o + bl, data + split, blen) == 0);
        FUZZ_CHECK(out[outlen] == '\0');
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *payload = (char *)"sentinel";
    size_t plen = 12345;
    char keyid[POLICY_KEYID_MAX + 1] = "sentinel";
    char err[512] = "";
    enum policy_env_reason r;

    if (keyring == NULL) {
        build_keyring();
        positive_control();
    }
    r = policy_envelope_verify(keyring, (const char *)data, size, &payload, &plen, keyid,
                               sizeof(keyid), err, sizeof(err));
    FUZZ_CHECKF((unsigned)r < POLICY_ENV_R_COUNT, "reason %d", (int)r);
    if (r == POLICY_ENV_OK) {
        FUZZ_CHECK(payload != NULL && payload[plen] == '\0');
        FUZZ_CHECKF(is_signed_payload(payload, plen),
                    "accepted a payload we never signed (%zu bytes, keyid '%s'): %.*s", plen, keyid,
                    (int)(plen > 300 ? 300 : plen), payload);
        FUZZ_CHECK(keyid[0] == '\0' || policy_keyid_valid(keyid));
        if (strcmp(keyid, "fuzz-1") == 0)
            accepted_fuzz1++;
        else if (strcmp(keyid, "fuzz-p") == 0)
            accepted_p256++;
        else
            accepted_anon++;
        free(payload);
    } else {
        FUZZ_CHECKF(r != POLICY_ENV_BAD_BUNDLE && r != POLICY_ENV_REVISION_ROLLBACK &&
                        r != POLICY_ENV_REVISION_CONFLICT,
                    "verify gave the fetch-only reason %s", policy_env_reason_name(r));
        FUZZ_CHECK(payload == NULL);
        FUZZ_CHECK(keyid[0] == '\0');
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(strcmp(policy_env_reason_name(r), "unknown") != 0);
    }
    /* No keyring, no acceptance, whatever the input. */
    payload = NULL;
    r = policy_envelope_verify(NULL, (const char *)data, size, &payload, &plen, NULL, 0, NULL, 0);
    FUZZ_CHECKF(r != POLICY_ENV_OK && payload == NULL, "accepted with no keys");
    check_pae(data, size);
    return 0;
}
