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

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (keyring == NULL)
        build_keyring();
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

    if (keyring == NULL)
        build_keyring();
    r = policy_envelope_verify(keyring, (const char *)data, size, &payload, &plen, keyid,
                               sizeof(keyid), err, sizeof(err));
    FUZZ_CHECKF((unsigned)r < POLICY_ENV_R_COUNT, "reason %d", (int)r);
    if (r == POLICY_ENV_OK) {
        FUZZ_CHECK(payload != NULL && payload[plen] == '\0');
        FUZZ_CHECKF(is_signed_payload(payload, plen),
                    "accepted a payload we never signed (%zu bytes, keyid '%s'): %.*s", plen, keyid,
                    (int)(plen > 300 ? 300 : plen), payload);
        FUZZ_CHECK(keyid[0] == '\0' || policy_keyid_valid(keyid));
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
