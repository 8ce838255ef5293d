/*
 * test_certs.c - Check suite "certs": SPIFFE IDs, SVID rules, trust bundles
 * (PEM and JWKS), own key pair and the development CA. Certificates are
 * built at test time with OpenSSL, relative to a fixed NOW, so nothing
 * depends on the wall clock except the dev CA round trip (which stamps
 * certificates with the real time, as the CLI does).
 */
#include "certs.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const int64_t NOW = 1750000000; /* 2025-06-15T15:06:40Z */
static const int64_t DAY = 86400;

/* ---- Certificate factory ------------------------------------------------ */

struct spec {
    const char *uri1, *uri2; /* URI SANs; NULL for none */
    const char *ku;          /* keyUsage value; NULL for no extension */
    const char *bc;          /* basicConstraints value; NULL for no extension */
    int64_t nb, na;          /* offsets from NOW */
};

static EVP_PKEY *key_new(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(k);
    return k;
}

static void ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *e;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    ck_assert_msg(e != NULL, "extension %d '%s'", nid, value);
    ck_assert_int_eq(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* Issues a certificate for key; issuer NULL means self-signed. */
static X509 *cert_make(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn,
                       const struct spec *s)
{
    static long serial = 1;
    X509 *x = X509_new();
    char san[4200];

    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(X509_set_version(x, X509_VERSION_3), 1);
    ck_assert_int_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(issuer != NULL ? issuer : x));
    ASN1_TIME_set(X509_getm_notBefore(x), (time_t)(NOW + s->nb));
    ASN1_TIME_set(X509_getm_notAfter(x), (time_t)(NOW + s->na));
    X509_set_pubkey(x, key);
    if (s->bc != NULL)
        ext(x, issuer != NULL ? issuer : x, NID_basic_constraints, s->bc);
    if (s->ku != NULL)
        ext(x, issuer != NULL ? issuer : x, NID_key_usage, s->ku);
    if (s->uri1 != NULL) {
        snprintf(san, sizeof(san), "URI:%s%s%s", s->uri1, s->uri2 ? ",URI:" : "",
                 s->uri2 ? s->uri2 : "");
        ext(x, issuer != NULL ? issuer : x, NID_subject_alt_name, san);
    } else {
        ext(x, issuer != NULL ? issuer : x, NID_subject_alt_name, "DNS:example.com");
    }
    ck_assert_int_gt(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()), 0);
    return x;
}

static char *pem_of(X509 *x, EVP_PKEY *k, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p, *out;
    long n;
    if (x != NULL)
        ck_assert_int_eq(PEM_write_bio_X509(b, x), 1);
    if (k != NULL)
        ck_assert_int_eq(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(b, &p);
    out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

static const struct spec CA_SPEC = {
    "spiffe://example.org", NULL,          "critical,keyCertSign,cRLSign", "critical,CA:TRUE",
    -3650 * 86400LL,        3650 * 86400LL};

/* Fixture: ca1 (example.org, trusted), ca2 (untrusted), ca3 (other.org,
 * trusted), inter (intermediate under ca1), and `trust` mapping them. */
static EVP_PKEY *ca1_key, *ca2_key, *ca3_key, *inter_key, *leaf_key;
static X509 *ca1, *ca2, *ca3, *inter;
static struct certs_trust *trust;

static void add_pem(struct certs_trust *t, const char *td, X509 *x)
{
    char err[256] = "";
    size_t n;
    char *pem = pem_of(x, NULL, &n);
    ck_assert_msg(certs_trust_add(t, td, strlen(td), pem, n, err, sizeof(err)) == 0, "%s", err);
    free(pem);
}

static void setup(void)
{
    ca1_key = key_new();
    ca2_key = key_new();
    ca3_key = key_new();
    inter_key = key_new();
    leaf_key = key_new();
    ca1 = cert_make(ca1_key, NULL, NULL, "ca1", &CA_SPEC);
    ca2 = cert_make(ca2_key, NULL, NULL, "ca2", &CA_SPEC);
    ca3 = cert_make(ca3_key, NULL, NULL, "ca3", &CA_SPEC);
    inter = cert_make(inter_key, ca1, ca1_key, "inter", &CA_SPEC);
    ck_assert_int_eq(certs_trust_new(&trust), 0);
    add_pem(trust, "example.org", ca1);
    add_pem(trust, "other.org", ca3);
}

static void teardown(void)
{
    certs_trust_unref(trust);
    X509_free(inter);
    X509_free(ca1);
    X509_free(ca2);
    X509_free(ca3);
    EVP_PKEY_free(ca1_key);
    EVP_PKEY_free(ca2_key);
    EVP_PKEY_free(ca3_key);
    EVP_PKEY_free(inter_key);
    EVP_PKEY_free(leaf_key);
}

/* ---- SPIFFE IDs ------------------------------------------------------------- */

static const struct {
    const char *id;
    size_t len; /* 0: strlen(id) */
    int ok;
} spiffe_ids[] = {
    {"spiffe://example.org", 0, 1}, /* the trust domain's own ID */
    {"spiffe://example.org/ns/a", 0, 1},
    {"spiffe://example.org/ns/default/sa/frontend", 0, 1},
    {"spiffe://a-b_c.d/x", 0, 1},
    {"spiffe://123/x", 0, 1},
    {"spiffe://example.org/A.b-c_D", 0, 1},
    {"spiffe://example.org/.a", 0, 1},
    {"spiffe://example.org/...", 0, 1}, /* only "." and ".." are special */
    {"", 0, 0},
    {"spiffe://", 0, 0},
    {"spiffe:///a", 0, 0},            /* empty trust domain */
    {"SPIFFE://example.org/a", 0, 0}, /* scheme is lowercase */
    {"spiffe:/example.org/a", 0, 0},
    {"https://example.org/a", 0, 0},
    {"spiffe://Example.org/a", 0, 0},      /* trust domain must be lowercase */
    {"spiffe://example.org:8080/a", 0, 0}, /* port */
    {"spiffe://user@example.org/a", 0, 0}, /* userinfo */
    {"spiffe://example.org/a?x=1", 0, 0},  /* query */
    {"spiffe://example.org/a#f", 0, 0},    /* fragment */
    {"spiffe://example.org?x", 0, 0},
    {"spiffe://example.org/", 0, 0}, /* trailing slash */
    {"spiffe://example.org/a/", 0, 0},
    {"spiffe://example.org//a", 0, 0}, /* empty segment */
    {"spiffe://example.org/./a", 0, 0},
    {"spiffe://example.org/a/..", 0, 0},
    {"spiffe://example.org/a%20b", 0, 0}, /* no percent-encoding */
    {"spiffe://example.org/a b", 0, 0},
    {"spiffe://exa mple.org/a", 0, 0},
    {"spiffe://example.org/caf\xc3\xa9", 0, 0},
    {"spiffe://example.org/a\0b", 24, 0}, /* embedded NUL */
    {" spiffe://example.org/a", 0, 0},
};

START_TEST(test_spiffe_id_valid)
{
    size_t len = spiffe_ids[_i].len ? spiffe_ids[_i].len : strlen(spiffe_ids[_i].id);
    ck_assert_msg(certs_spiffe_id_valid(spiffe_ids[_i].id, len) == spiffe_ids[_i].ok, "row %d: %s",
                  _i, spiffe_ids[_i].id);
}
END_TEST

START_TEST(test_spiffe_id_lengths)
{
    char id[CERTS_SPIFFE_ID_MAX + 2], td[CERTS_TRUST_DOMAIN_MAX + 2];
    const char *p;
    size_t n;

    /* Whole ID: 2048 bytes ok, 2049 not. */
    memset(id, 'a', sizeof(id));
    memcpy(id, "spiffe://example.org/", 21);
    ck_assert_int_eq(certs_spiffe_id_valid(id, CERTS_SPIFFE_ID_MAX), 1);
    ck_assert_int_eq(certs_spiffe_id_valid(id, CERTS_SPIFFE_ID_MAX + 1), 0);
    /* Trust domain: 255 ok, 256 not. */
    memset(td, 'a', sizeof(td));
    ck_assert_int_eq(certs_trust_domain_valid(td, CERTS_TRUST_DOMAIN_MAX), 1);
    ck_assert_int_eq(certs_trust_domain_valid(td, CERTS_TRUST_DOMAIN_MAX + 1), 0);
    memcpy(id, "spiffe://", 9);
    memset(id + 9, 'b', CERTS_TRUST_DOMAIN_MAX + 1);
    ck_assert_int_eq(certs_spiffe_id_valid(id, 9 + CERTS_TRUST_DOMAIN_MAX), 1);
    ck_assert_int_eq(certs_spiffe_id_valid(id, 9 + CERTS_TRUST_DOMAIN_MAX + 1), 0);
    /* Trust domain extraction. */
    ck_assert_int_eq(certs_spiffe_trust_domain("spiffe://ex.org/a/b", 19, &p, &n), 0);
    ck_assert_int_eq((int)n, 6);
    ck_assert_int_eq(memcmp(p, "ex.org", 6), 0);
    ck_assert_int_eq(certs_spiffe_trust_domain("spiffe://ex.org", 15, &p, &n), 0);
    ck_assert_int_eq((int)n, 6);
    ck_assert_int_eq(certs_spiffe_trust_domain("spiffe://Ex.org/a", 17, &p, &n), CERTS_ERR_INVALID);
}
END_TEST

static const struct {
    enum certs_reason r;
    const char *name;
} reason_names[] = {
    {CERTS_R_OK, "ok"},
    {CERTS_R_EXPIRED, "expired"},
    {CERTS_R_NOT_YET_VALID, "not_yet_valid"},
    {CERTS_R_NO_URI_SAN, "no_uri_san"},
    {CERTS_R_MULTIPLE_URI_SANS, "multiple_uri_sans"},
    {CERTS_R_BAD_SPIFFE_ID, "bad_spiffe_id"},
    {CERTS_R_LEAF_IS_CA, "leaf_is_ca"},
    {CERTS_R_BAD_KEY_USAGE, "bad_key_usage"},
    {CERTS_R_LIFETIME_TOO_LONG, "lifetime_too_long"},
    {CERTS_R_UNKNOWN_TRUST_DOMAIN, "unknown_trust_domain"},
    {CERTS_R_UNTRUSTED_CHAIN, "untrusted_chain"},
    {CERTS_R_NO_CERTIFICATE, "no_certificate"},
    {CERTS_R_KEY_MISMATCH, "key_mismatch"},
    {CERTS_R_BAD_FILE, "bad_file"},
    {CERTS_R_INTERNAL, "internal_error"},
    {CERTS_R_COUNT, "unknown"},
    {(enum certs_reason) - 1, "unknown"},
};

START_TEST(test_reason_names)
{
    ck_assert_str_eq(certs_reason_name(reason_names[_i].r), reason_names[_i].name);
    ck_assert_str_ne(certs_strerror(CERTS_ERR_NOMEM - _i), "");
}
END_TEST

/* ---- SVID checks -------------------------------------------------------------- */

enum signer { BY_CA1, BY_CA2, BY_INTER, BY_CA3 };

#define LEAF_KU "critical,digitalSignature"
#define LEAF_BC "critical,CA:FALSE"
#define ID "spiffe://example.org/ns/a/sa/b"

static const struct {
    const char *name;
    struct spec s;
    enum signer by;
    int pass_inter; /* hand the intermediate over as untrusted chain */
    int64_t max;
    enum certs_reason want;
} svid_cases[] = {
    /* Hand-aligned: clang-format would put each field on its own line. */
    /* clang-format off */
    {"valid",                {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600}, BY_CA1, 0, DAY, CERTS_R_OK},
    {"valid_no_bc",          {ID, NULL, LEAF_KU, NULL, -60, 3600}, BY_CA1, 0, DAY, CERTS_R_OK},
    {"valid_ku_extra",       {ID, NULL, "digitalSignature,keyEncipherment,keyAgreement", LEAF_BC,
                              -60, 3600}, BY_CA1, 0, DAY, CERTS_R_OK},
    {"valid_no_limit",       {ID, NULL, LEAF_KU, LEAF_BC, -60, 2 * DAY}, BY_CA1, 0, 0, CERTS_R_OK},
    {"lifetime_exactly_max", {ID, NULL, LEAF_KU, LEAF_BC, 0, DAY}, BY_CA1, 0, DAY, CERTS_R_OK},
    {"before_not_after",     {ID, NULL, LEAF_KU, LEAF_BC, -3600, 1}, BY_CA1, 0, DAY, CERTS_R_OK},
    {"at_not_after",         {ID, NULL, LEAF_KU, LEAF_BC, -3600, 0}, BY_CA1, 0, DAY,
                             CERTS_R_EXPIRED},
    {"at_not_before",        {ID, NULL, LEAF_KU, LEAF_BC, 0, 3600}, BY_CA1, 0, DAY, CERTS_R_OK},
    {"via_intermediate",     {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600}, BY_INTER, 1, DAY, CERTS_R_OK},
    {"other_domain_valid",   {"spiffe://other.org/x", NULL, LEAF_KU, LEAF_BC, -60, 3600},
                             BY_CA3, 0, DAY, CERTS_R_OK},
    {"expired",              {ID, NULL, LEAF_KU, LEAF_BC, -7200, -10}, BY_CA1, 0, DAY,
                             CERTS_R_EXPIRED},
    {"not_yet_valid",        {ID, NULL, LEAF_KU, LEAF_BC, 1, 7200}, BY_CA1, 0, DAY,
                             CERTS_R_NOT_YET_VALID},
    {"no_uri_san",           {NULL, NULL, LEAF_KU, LEAF_BC, -60, 3600}, BY_CA1, 0, DAY,
                             CERTS_R_NO_URI_SAN},
    {"two_uri_sans",         {ID, "spiffe://example.org/b", LEAF_KU, LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_MULTIPLE_URI_SANS},
    {"bad_id_uppercase_td",  {"spiffe://Example.org/a", NULL, LEAF_KU, LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_BAD_SPIFFE_ID},
    {"bad_id_https",         {"https://example.org/a", NULL, LEAF_KU, LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_BAD_SPIFFE_ID},
    {"bad_id_dotdot",        {"spiffe://example.org/a/../b", NULL, LEAF_KU, LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_BAD_SPIFFE_ID},
    {"bad_id_no_path",       {"spiffe://example.org", NULL, LEAF_KU, LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_BAD_SPIFFE_ID},
    {"leaf_is_ca",           {ID, NULL, LEAF_KU, "critical,CA:TRUE", -60, 3600}, BY_CA1, 0, DAY,
                             CERTS_R_LEAF_IS_CA},
    {"key_cert_sign",        {ID, NULL, "critical,digitalSignature,keyCertSign", LEAF_BC,
                              -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_BAD_KEY_USAGE},
    {"crl_sign",             {ID, NULL, "critical,digitalSignature,cRLSign", LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_BAD_KEY_USAGE},
    {"no_digital_signature", {ID, NULL, "critical,keyEncipherment", LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_BAD_KEY_USAGE},
    {"no_key_usage",         {ID, NULL, NULL, LEAF_BC, -60, 3600}, BY_CA1, 0, DAY,
                             CERTS_R_BAD_KEY_USAGE},
    {"lifetime_too_long",    {ID, NULL, LEAF_KU, LEAF_BC, -60, 2 * DAY}, BY_CA1, 0, DAY,
                             CERTS_R_LIFETIME_TOO_LONG},
    {"lifetime_one_over",    {ID, NULL, LEAF_KU, LEAF_BC, 0, DAY + 1}, BY_CA1, 0, DAY,
                             CERTS_R_LIFETIME_TOO_LONG},
    {"unknown_trust_domain", {"spiffe://unknown.org/a", NULL, LEAF_KU, LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_UNKNOWN_TRUST_DOMAIN},
    {"other_ca",             {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600}, BY_CA2, 0, DAY,
                             CERTS_R_UNTRUSTED_CHAIN},
    {"cross_domain",         {"spiffe://other.org/x", NULL, LEAF_KU, LEAF_BC, -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_UNTRUSTED_CHAIN},
    {"intermediate_missing", {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600}, BY_INTER, 0, DAY,
                             CERTS_R_UNTRUSTED_CHAIN},
    /* Order: the first broken rule wins. */
    {"order_uri_before_expiry", {NULL, NULL, LEAF_KU, LEAF_BC, -7200, -1}, BY_CA1, 0, DAY,
                                CERTS_R_NO_URI_SAN},
    {"order_td_before_ca",   {"spiffe://unknown.org/a", NULL, LEAF_KU, "CA:TRUE", -60, 3600},
                             BY_CA1, 0, DAY, CERTS_R_UNKNOWN_TRUST_DOMAIN},
    {"order_ca_before_expiry", {ID, NULL, LEAF_KU, "CA:TRUE", -7200, -1}, BY_CA1, 0, DAY,
                               CERTS_R_LEAF_IS_CA},
    {"order_expiry_before_lifetime", {ID, NULL, LEAF_KU, LEAF_BC, -3 * DAY, -1}, BY_CA1, 0, DAY,
                                     CERTS_R_EXPIRED},
    {"order_lifetime_before_chain", {ID, NULL, LEAF_KU, LEAF_BC, -60, 2 * DAY}, BY_CA2, 0, DAY,
                                    CERTS_R_LIFETIME_TOO_LONG},
    /* clang-format on */
};

static X509 *leaf_for(const struct spec *s, enum signer by)
{
    switch (by) {
    case BY_CA2:
        return cert_make(leaf_key, ca2, ca2_key, "leaf", s);
    case BY_INTER:
        return cert_make(leaf_key, inter, inter_key, "leaf", s);
    case BY_CA3:
        return cert_make(leaf_key, ca3, ca3_key, "leaf", s);
    case BY_CA1:
        break;
    }
    return cert_make(leaf_key, ca1, ca1_key, "leaf", s);
}

START_TEST(test_svid_check)
{
    char id[CERTS_SPIFFE_ID_MAX + 1], err[256];
    STACK_OF(X509) *chain = NULL;
    X509 *leaf = leaf_for(&svid_cases[_i].s, svid_cases[_i].by);
    enum certs_reason r;

    if (svid_cases[_i].pass_inter) {
        chain = sk_X509_new_null();
        sk_X509_push(chain, inter);
    }
    r = certs_svid_check(trust, leaf, chain, NOW, svid_cases[_i].max, id, sizeof(id), err,
                         sizeof(err));
    ck_assert_msg(r == svid_cases[_i].want, "%s: got %s (%s), want %s", svid_cases[_i].name,
                  certs_reason_name(r), err, certs_reason_name(svid_cases[_i].want));
    if (r == CERTS_R_OK) {
        ck_assert_str_eq(id, svid_cases[_i].s.uri1);
        ck_assert_str_eq(err, "");
    } else {
        ck_assert_str_eq(id, "");
        ck_assert_msg(err[0] != '\0', "%s: empty detail", svid_cases[_i].name);
    }
    ck_assert_int_eq((int)ERR_peek_error(), 0); /* OpenSSL's queue is left clean */
    sk_X509_free(chain);
    X509_free(leaf);
}
END_TEST

START_TEST(test_svid_check_details)
{
    struct spec s = {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600};
    char id[16], err[256];
    X509 *leaf = leaf_for(&s, BY_CA2);

    ck_assert_int_eq(certs_svid_check(trust, leaf, NULL, NOW, DAY, NULL, 0, err, sizeof(err)),
                     CERTS_R_UNTRUSTED_CHAIN);
    ck_assert_msg(strstr(err, "unable to get local issuer certificate") != NULL, "%s", err);
    ck_assert_int_eq(certs_svid_check(NULL, leaf, NULL, NOW, DAY, NULL, 0, err, sizeof(err)),
                     CERTS_R_UNKNOWN_TRUST_DOMAIN);
    ck_assert_int_eq(certs_svid_check(trust, NULL, NULL, NOW, DAY, NULL, 0, err, sizeof(err)),
                     CERTS_R_NO_CERTIFICATE);
    X509_free(leaf);
    /* Too small an ID buffer is an error, never a truncated identity. */
    leaf = leaf_for(&s, BY_CA1);
    ck_assert_int_eq(
        certs_svid_check(trust, leaf, NULL, NOW, DAY, id, sizeof(id), err, sizeof(err)),
        CERTS_R_INTERNAL);
    ck_assert_str_eq(id, "");
    /* Verification time is `now`, not the clock: 20 years on, the CA is
     * gone too, but the leaf's own window is reported first. */
    ck_assert_int_eq(
        certs_svid_check(trust, leaf, NULL, NOW + 20 * 365 * DAY, 0, NULL, 0, err, sizeof(err)),
        CERTS_R_EXPIRED);
    X509_free(leaf);
}
END_TEST

/* A chain of n intermediates under ca1 (chain[0] signs the leaf). */
static X509 *leaf_under_intermediates(int n, STACK_OF(X509) * chain, EVP_PKEY **keys)
{
    static const struct spec s = {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600};
    X509 *issuer = ca1;
    EVP_PKEY *issuer_key = ca1_key;
    X509 *made[8];
    for (int i = 0; i < n; i++) {
        char cn[32];
        snprintf(cn, sizeof(cn), "intermediate-%d", i);
        keys[i] = key_new();
        made[i] = cert_make(keys[i], issuer, issuer_key, cn, &CA_SPEC);
        issuer = made[i];
        issuer_key = keys[i];
    }
    for (int i = n - 1; i >= 0; i--)
        sk_X509_push(chain, made[i]);
    return cert_make(leaf_key, issuer, issuer_key, "leaf", &s);
}

START_TEST(test_svid_chain_caps)
{
    char err[256];
    EVP_PKEY *keys[8] = {NULL};
    for (int n = CERTS_MAX_CHAIN_DEPTH; n <= CERTS_MAX_CHAIN_DEPTH + 1; n++) {
        STACK_OF(X509) *chain = sk_X509_new_null();
        X509 *leaf = leaf_under_intermediates(n, chain, keys);
        enum certs_reason r = certs_svid_check(trust, leaf, chain, NOW, DAY, NULL, 0, err,
                                               sizeof(err));
        if (n <= CERTS_MAX_CHAIN_DEPTH) {
            ck_assert_msg(r == CERTS_R_OK, "%d intermediates: %s", n, err);
        } else {
            ck_assert_int_eq(r, CERTS_R_UNTRUSTED_CHAIN);
            ck_assert_msg(strstr(err, "too long") != NULL, "%s", err);
        }
        X509_free(leaf);
        sk_X509_pop_free(chain, X509_free);
        for (int i = 0; i < n; i++)
            EVP_PKEY_free(keys[i]);
    }
    /* More certificates than CERTS_MAX_PEER_CERTS: refused before any
     * signature is checked, even if the path itself would be short. */
    {
        STACK_OF(X509) *chain = sk_X509_new_null();
        X509 *leaf = leaf_under_intermediates(1, chain, keys);
        for (int i = 0; i < CERTS_MAX_PEER_CERTS; i++)
            sk_X509_push(chain, X509_dup(ca2));
        ck_assert_int_eq(certs_svid_check(trust, leaf, chain, NOW, DAY, NULL, 0, err,
                                          sizeof(err)),
                         CERTS_R_UNTRUSTED_CHAIN);
        ck_assert_msg(strstr(err, "at most") != NULL, "%s", err);
        X509_free(leaf);
        sk_X509_pop_free(chain, X509_free);
        EVP_PKEY_free(keys[0]);
    }
    ck_assert_int_eq((int)ERR_peek_error(), 0);
}
END_TEST

START_TEST(test_svid_inspect)
{
    struct spec bad = {
        ID, "spiffe://example.org/b", "critical,keyCertSign", "critical,CA:TRUE", -3 * DAY, -1};
    struct spec good = {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600};
    static const enum certs_reason want[] = {CERTS_R_MULTIPLE_URI_SANS, CERTS_R_LEAF_IS_CA,
                                             CERTS_R_BAD_KEY_USAGE, CERTS_R_EXPIRED,
                                             CERTS_R_LIFETIME_TOO_LONG};
    enum certs_reason got[8];
    X509 *leaf = leaf_for(&bad, BY_CA2);
    size_t n;

    ck_assert_int_eq(certs_svid_inspect(leaf, NOW, DAY, got, N_ELEMS(got), &n), 0);
    ck_assert_int_eq((int)n, (int)N_ELEMS(want));
    for (size_t i = 0; i < n; i++)
        ck_assert_str_eq(certs_reason_name(got[i]), certs_reason_name(want[i]));
    /* Short array: count is still complete. */
    ck_assert_int_eq(certs_svid_inspect(leaf, NOW, DAY, got, 2, &n), 0);
    ck_assert_int_eq((int)n, 5);
    X509_free(leaf);
    leaf = leaf_for(&good, BY_CA2); /* untrusted, but inspect does not verify chains */
    ck_assert_int_eq(certs_svid_inspect(leaf, NOW, DAY, got, N_ELEMS(got), &n), 0);
    ck_assert_int_eq((int)n, 0);
    ck_assert_int_eq(certs_svid_inspect(NULL, NOW, DAY, got, N_ELEMS(got), &n), CERTS_ERR_INVALID);
    X509_free(leaf);
}
END_TEST

START_TEST(test_cert_spiffe_id)
{
    struct spec none = {NULL, NULL, LEAF_KU, LEAF_BC, -60, 3600};
    struct spec two = {ID, "spiffe://example.org/b", LEAF_KU, LEAF_BC, -60, 3600};
    struct spec one = {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600};
    X509 *a = leaf_for(&none, BY_CA1), *b = leaf_for(&two, BY_CA1), *c = leaf_for(&one, BY_CA1);
    char buf[64], small[8];

    ck_assert_int_eq(certs_cert_spiffe_id(a, buf, sizeof(buf)), CERTS_ERR_NOT_FOUND);
    ck_assert_int_eq(certs_cert_spiffe_id(b, buf, sizeof(buf)), CERTS_ERR_INVALID);
    ck_assert_int_eq(certs_cert_spiffe_id(c, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, ID);
    ck_assert_int_eq(certs_cert_spiffe_id(c, small, sizeof(small)), CERTS_ERR_TOO_LARGE);
    ck_assert_str_eq(small, "");
    X509_free(a);
    X509_free(b);
    X509_free(c);
}
END_TEST

/* ---- Trust bundles ---------------------------------------------------------- */

/* {"keys":[<jwt key>, {"use":"x509-svid","x5c":["<ca DER>"]}]} */
static char *jwks_of(X509 *x, const char *extra_x5c)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    char *b64 = malloc(4 * (((size_t)n + 2) / 3) + 1), *out = malloc(8192);
    ck_assert_int_gt(n, 0);
    certs_b64_encode(der, (size_t)n, b64);
    snprintf(out, 8192,
             "{\"spiffe_sequence\": 3, \"keys\": [\n"
             "  {\"use\": \"jwt-svid\", \"kty\": \"EC\", \"kid\": \"k1\", \"crv\": \"P-256\",\n"
             "   \"x\": \"AAAA\", \"y\": \"AAAA\"},\n"
             "  {\"use\": \"x509-svid\", \"kty\": \"EC\", \"x5c\": [\"%s\"%s%s]}\n]}\n",
             b64, extra_x5c ? ", " : "", extra_x5c ? extra_x5c : "");
    OPENSSL_free(der);
    free(b64);
    return out;
}

START_TEST(test_trust_jwks)
{
    struct spec s = {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600};
    struct certs_trust *t;
    char err[256] = "", *js = jwks_of(ca2, NULL);
    X509 *leaf = leaf_for(&s, BY_CA2);
    size_t ncerts;

    ck_assert_int_eq(certs_trust_new(&t), 0);
    ck_assert_msg(certs_trust_add(t, "example.org", 11, js, strlen(js), err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_eq((int)certs_trust_count(t), 1);
    ck_assert_str_eq(certs_trust_domain_at(t, 0, &ncerts), "example.org");
    ck_assert_int_eq((int)ncerts, 1);
    ck_assert_ptr_null(certs_trust_domain_at(t, 1, NULL));
    ck_assert_ptr_nonnull(certs_trust_store(t, "example.org", 11));
    ck_assert_ptr_null(certs_trust_store(t, "example.or", 10));
    ck_assert_int_eq(certs_svid_check(t, leaf, NULL, NOW, DAY, NULL, 0, err, sizeof(err)),
                     CERTS_R_OK);
    /* ca1 still unknown to t */
    ck_assert_int_eq(certs_svid_check(trust, leaf, NULL, NOW, DAY, NULL, 0, err, sizeof(err)),
                     CERTS_R_UNTRUSTED_CHAIN);
    /* Merge a PEM into the same domain; both CAs now anchor it. */
    add_pem(t, "example.org", ca1);
    ck_assert_int_eq((int)certs_trust_count(t), 1);
    certs_trust_domain_at(t, 0, &ncerts);
    ck_assert_int_eq((int)ncerts, 2);
    ck_assert_int_eq(certs_svid_check(t, leaf, NULL, NOW, DAY, NULL, 0, err, sizeof(err)),
                     CERTS_R_OK);
    /* Shared ownership. */
    ck_assert_ptr_eq(certs_trust_ref(t), t);
    certs_trust_unref(t);
    certs_trust_unref(t);
    certs_trust_unref(NULL);
    ck_assert_ptr_null(certs_trust_ref(NULL));
    X509_free(leaf);
    free(js);
}
END_TEST

static const struct {
    const char *name;
    const char *doc; /* NULL: the JWKS of ca1 with `extra` as second x5c entry */
    const char *extra;
    const char *td;
    int rc;
} bad_bundles[] = {
    {"two_x5c", NULL, "\"AAAA\"", "example.org", CERTS_ERR_PARSE},
    {"only_jwt", "{\"keys\":[{\"use\":\"jwt-svid\",\"kty\":\"EC\"}]}", NULL, "example.org",
     CERTS_ERR_NOT_FOUND},
    {"no_keys", "{\"spiffe_sequence\":1}", NULL, "example.org", CERTS_ERR_PARSE},
    {"keys_not_array", "{\"keys\":{}}", NULL, "example.org", CERTS_ERR_PARSE},
    {"key_not_object", "{\"keys\":[1]}", NULL, "example.org", CERTS_ERR_PARSE},
    {"x5c_missing", "{\"keys\":[{\"use\":\"x509-svid\"}]}", NULL, "example.org", CERTS_ERR_PARSE},
    {"x5c_not_b64", "{\"keys\":[{\"use\":\"x509-svid\",\"x5c\":[\"!!!\"]}]}", NULL, "example.org",
     CERTS_ERR_PARSE},
    {"x5c_not_der", "{\"keys\":[{\"use\":\"x509-svid\",\"x5c\":[\"AAAAAA==\"]}]}", NULL,
     "example.org", CERTS_ERR_PARSE},
    {"x5c_empty", "{\"keys\":[{\"use\":\"x509-svid\",\"x5c\":[]}]}", NULL, "example.org",
     CERTS_ERR_PARSE},
    {"bad_json", "{\"keys\":[", NULL, "example.org", CERTS_ERR_PARSE},
    {"trailing_json", "{\"keys\":[]} {}", NULL, "example.org", CERTS_ERR_PARSE},
    {"empty_keys", "{\"keys\":[]}", NULL, "example.org", CERTS_ERR_NOT_FOUND},
    /* one member twice, once spelled with an escape (issue 20) */
    {"keys_twice", "{\"keys\":[],\"k\\u0065ys\":[]}", NULL, "example.org", CERTS_ERR_PARSE},
    {"not_pem", "hello", NULL, "example.org", CERTS_ERR_NOT_FOUND},
    {"empty", "", NULL, "example.org", CERTS_ERR_NOT_FOUND},
    {"broken_pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", NULL,
     "example.org", CERTS_ERR_PARSE},
    {"bad_td", "{}", NULL, "Example.org", CERTS_ERR_INVALID},
    {"td_with_port", "{}", NULL, "example.org:443", CERTS_ERR_INVALID},
    {"empty_td", "{}", NULL, "", CERTS_ERR_INVALID},
};

START_TEST(test_trust_bad_bundles)
{
    struct certs_trust *t;
    char err[256] = "";
    char *doc =
        bad_bundles[_i].doc ? strdup(bad_bundles[_i].doc) : jwks_of(ca1, bad_bundles[_i].extra);
    const char *td = bad_bundles[_i].td;
    int rc;

    ck_assert_int_eq(certs_trust_new(&t), 0);
    add_pem(t, "keep.org", ca1);
    rc = certs_trust_add(t, td, strlen(td), doc, strlen(doc), err, sizeof(err));
    ck_assert_msg(rc == bad_bundles[_i].rc, "%s: rc %d (%s)", bad_bundles[_i].name, rc, err);
    ck_assert_msg(err[0] != '\0', "%s: no detail", bad_bundles[_i].name);
    /* All or nothing: t is as it was. */
    ck_assert_int_eq((int)certs_trust_count(t), 1);
    ck_assert_int_eq((int)ERR_peek_error(), 0);
    certs_trust_unref(t);
    free(doc);
}
END_TEST

/* mkdtemp directory with helpers to name and remove files in it. */
static char tmpdir[64];

static void tmp_setup(void)
{
    setup();
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_certs.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *tmp_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
    return buf;
}

static void rm_rf(const char *dir)
{
    /* Only the names these tests create: no recursive walk needed. */
    static const char *const names[] = {"ca/ca.pem",  "ca/ca.key", "ca",        "svid.pem",
                                        "svid.key",   "svid2.pem", "svid2.key", "big.pem",
                                        "bundle.pem", "x.pem",     "x.key"};
    char p[PATH_MAX];
    for (size_t i = 0; i < N_ELEMS(names); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        if (unlink(p) < 0)
            (void)rmdir(p); /* "ca" is a directory; missing names are fine */
    }
    ck_assert_int_eq(rmdir(dir), 0);
}

static void tmp_teardown(void)
{
    rm_rf(tmpdir);
    teardown();
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq((int)fwrite(data, 1, len, f), (int)len);
    fclose(f);
}

START_TEST(test_trust_files)
{
    struct certs_trust *t = NULL;
    char p[PATH_MAX], p2[PATH_MAX], err[512] = "", *big, *pem;
    size_t n;
    struct certs_trust_source src[2];

    /* A PEM file with two CAs (ca1 and ca3) for one domain. */
    pem = pem_of(ca1, NULL, &n);
    write_file(tmp_path(p, sizeof(p), "bundle.pem"), pem, n);
    free(pem);
    pem = pem_of(ca3, NULL, &n);
    {
        FILE *f = fopen(p, "a");
        fwrite(pem, 1, n, f);
        fclose(f);
    }
    free(pem);
    src[0].trust_domain = "example.org";
    src[0].path = p;
    src[1].trust_domain = "other.org";
    src[1].path = p;
    ck_assert_msg(certs_trust_load(&t, src, 2, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq((int)certs_trust_count(t), 2);
    certs_trust_domain_at(t, 1, &n);
    ck_assert_int_eq((int)n, 2);
    certs_trust_unref(t);
    /* Over the cap: refused before parsing. */
    big = malloc(CERTS_MAX_FILE + 1);
    memset(big, ' ', CERTS_MAX_FILE + 1);
    write_file(tmp_path(p2, sizeof(p2), "big.pem"), big, CERTS_MAX_FILE + 1);
    src[1].path = p2;
    t = NULL;
    ck_assert_int_eq(certs_trust_load(&t, src, 2, err, sizeof(err)), CERTS_ERR_TOO_LARGE);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(certs_trust_new(&t), 0);
    ck_assert_int_eq(certs_trust_add(t, "a.org", 5, big, CERTS_MAX_FILE + 1, err, sizeof(err)),
                     CERTS_ERR_TOO_LARGE);
    free(big);
    /* Missing file, and a directory. */
    ck_assert_int_eq(certs_trust_add_file(t, "a.org", "/nonexistent/x.pem", err, sizeof(err)),
                     CERTS_ERR_IO);
    ck_assert_msg(strstr(err, "/nonexistent/x.pem") != NULL, "%s", err);
    ck_assert_int_eq(certs_trust_add_file(t, "a.org", tmpdir, err, sizeof(err)), CERTS_ERR_IO);
    certs_trust_unref(t);
}
END_TEST

/* ---- Own key pair -------------------------------------------------------------- */

START_TEST(test_keypair_mem)
{
    struct spec good = {ID, NULL, LEAF_KU, LEAF_BC, -60, 3600};
    struct spec expired = {ID, NULL, LEAF_KU, LEAF_BC, -7200, -1};
    struct spec future = {ID, NULL, LEAF_KU, LEAF_BC, 600, 7200};
    struct spec ca = {ID, NULL, LEAF_KU, "CA:TRUE", -60, 3600};
    struct certs_keypair *kp = NULL;
    X509 *leaf = leaf_for(&good, BY_INTER), *x;
    EVP_PKEY *other = key_new();
    char err[512], *cert, *ipem, *key, *both;
    size_t clen, ilen, klen;

    cert = pem_of(leaf, NULL, &clen);
    ipem = pem_of(inter, NULL, &ilen);
    key = pem_of(NULL, leaf_key, &klen);
    both = malloc(clen + ilen + 1);
    memcpy(both, cert, clen);
    memcpy(both + clen, ipem, ilen + 1);
    ck_assert_msg(
        certs_keypair_load_mem(&kp, both, clen + ilen, key, klen, NOW, err, sizeof(err)) == 0, "%s",
        err);
    ck_assert_str_eq(certs_keypair_spiffe_id(kp), ID);
    ck_assert_int_eq(X509_cmp(certs_keypair_leaf(kp), leaf), 0);
    ck_assert_int_eq(sk_X509_num(certs_keypair_chain(kp)), 1);
    ck_assert_int_eq(X509_cmp(sk_X509_value(certs_keypair_chain(kp), 0), inter), 0);
    ck_assert_int_eq(EVP_PKEY_eq(certs_keypair_key(kp), leaf_key), 1);
    ck_assert_int_eq((int)(certs_keypair_not_before(kp) - NOW), -60);
    ck_assert_int_eq((int)(certs_keypair_not_after(kp) - NOW), 3600);
    ck_assert_ptr_eq(certs_keypair_ref(kp), kp);
    certs_keypair_unref(kp);
    certs_keypair_unref(kp);
    certs_keypair_unref(NULL);
    free(both);
    free(key);

    /* Wrong key. */
    key = pem_of(NULL, other, &klen);
    kp = NULL;
    ck_assert_int_eq(certs_keypair_load_mem(&kp, cert, clen, key, klen, NOW, err, sizeof(err)),
                     CERTS_ERR_KEY_MISMATCH);
    ck_assert_ptr_null(kp);
    ck_assert_msg(strncmp(err, "key_mismatch: ", 14) == 0, "%s", err);
    free(key);
    key = pem_of(NULL, leaf_key, &klen);
    /* No certificate; no key. */
    ck_assert_int_eq(certs_keypair_load_mem(&kp, ipem, 0, key, klen, NOW, err, sizeof(err)),
                     CERTS_ERR_NOT_FOUND);
    ck_assert_msg(strncmp(err, "no_certificate: ", 16) == 0, "%s", err);
    ck_assert_int_eq(certs_keypair_load_mem(&kp, cert, clen, cert, clen, NOW, err, sizeof(err)),
                     CERTS_ERR_NOT_FOUND);
    ck_assert_str_eq(err, "bad_file: key: no private key found");
    /* A truncated key. */
    ck_assert_int_eq(certs_keypair_load_mem(&kp, cert, clen, key, klen / 2, NOW, err, sizeof(err)),
                     CERTS_ERR_PARSE);
    ck_assert_msg(strncmp(err, "bad_file: key: ", 15) == 0, "%s", err);
    free(cert);
    X509_free(leaf);

    /* Expired: refused. Not yet valid: accepted. CA: refused. */
    x = leaf_for(&expired, BY_CA1);
    cert = pem_of(x, NULL, &clen);
    ck_assert_int_eq(certs_keypair_load_mem(&kp, cert, clen, key, klen, NOW, err, sizeof(err)),
                     CERTS_ERR_REFUSED);
    ck_assert_msg(strncmp(err, "expired: ", 9) == 0, "%s", err);
    free(cert);
    X509_free(x);
    x = leaf_for(&future, BY_CA1);
    cert = pem_of(x, NULL, &clen);
    ck_assert_int_eq(certs_keypair_load_mem(&kp, cert, clen, key, klen, NOW, err, sizeof(err)), 0);
    certs_keypair_unref(kp);
    free(cert);
    X509_free(x);
    x = leaf_for(&ca, BY_CA1);
    cert = pem_of(x, NULL, &clen);
    ck_assert_int_eq(certs_keypair_load_mem(&kp, cert, clen, key, klen, NOW, err, sizeof(err)),
                     CERTS_ERR_REFUSED);
    ck_assert_msg(strncmp(err, "leaf_is_ca: ", 12) == 0, "%s", err);
    free(cert);
    X509_free(x);
    free(key);
    free(ipem);
    EVP_PKEY_free(other);
    ck_assert_int_eq((int)ERR_peek_error(), 0);
}
END_TEST

/* ---- Dev CA ---------------------------------------------------------------------- */

START_TEST(test_devca_round_trip)
{
    const char *dns[] = {"localhost", "svc.example.org"};
    const char *ips[] = {"127.0.0.1", "::1"};
    const char *bad_dns[] = {"a,URI:spiffe://example.org/evil"};
    const char *bad_ip[] = {"300.1.1.1"};
    char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], cert2[PATH_MAX], key2[PATH_MAX];
    char capem[PATH_MAX], cakey[PATH_MAX], id[CERTS_SPIFFE_ID_MAX + 1], err[512] = "";
    struct certs_keypair *kp = NULL;
    struct certs_trust *t = NULL;
    struct certs_trust_source src = {"example.org", capem};
    struct stat st;
    int64_t now = (int64_t)time(NULL);

    tmp_path(ca, sizeof(ca), "ca");
    tmp_path(capem, sizeof(capem), "ca/ca.pem");
    tmp_path(cakey, sizeof(cakey), "ca/ca.key");
    tmp_path(cert, sizeof(cert), "svid.pem");
    tmp_path(key, sizeof(key), "svid.key");
    tmp_path(cert2, sizeof(cert2), "svid2.pem");
    tmp_path(key2, sizeof(key2), "svid2.key");

    ck_assert_msg(certs_devca_init(ca, "example.org", 30 * DAY, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(stat(ca, &st), 0);
    ck_assert_int_eq((int)(st.st_mode & 0777), 0700);
    ck_assert_int_eq(stat(cakey, &st), 0);
    ck_assert_int_eq((int)(st.st_mode & 0777), 0600);
    ck_assert_int_eq(certs_devca_init(ca, "example.org", 30 * DAY, err, sizeof(err)),
                     CERTS_ERR_EXISTS);
    ck_assert_int_eq(certs_devca_init(ca, "Bad.org", DAY, err, sizeof(err)), CERTS_ERR_INVALID);

    ck_assert_msg(certs_devca_issue(ca, ID, 3600, dns, 2, ips, 2, cert, key, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_eq(stat(key, &st), 0);
    ck_assert_int_eq((int)(st.st_mode & 0777), 0600);
    ck_assert_msg(certs_keypair_load(&kp, cert, key, now, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(certs_keypair_spiffe_id(kp), ID);
    ck_assert_int_eq((int)(certs_keypair_not_after(kp) - certs_keypair_not_before(kp)), 3600); /* lifetime is exactly the ttl */
    ck_assert_int_eq(sk_X509_num(certs_keypair_chain(kp)), 0);
    ck_assert_int_eq(X509_check_host(certs_keypair_leaf(kp), "localhost", 0, 0, NULL), 1);
    ck_assert_int_eq(X509_check_ip_asc(certs_keypair_leaf(kp), "::1", 0), 1);
    ck_assert_int_eq(X509_check_purpose(certs_keypair_leaf(kp), X509_PURPOSE_SSL_CLIENT, 0), 1);
    ck_assert_int_eq(X509_check_purpose(certs_keypair_leaf(kp), X509_PURPOSE_SSL_SERVER, 0), 1);

    ck_assert_msg(certs_trust_load(&t, &src, 1, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(certs_svid_check(t, certs_keypair_leaf(kp), certs_keypair_chain(kp), now, DAY, id,
                                   sizeof(id), err, sizeof(err)) == CERTS_R_OK,
                  "%s", err);
    ck_assert_str_eq(id, ID);
    certs_keypair_unref(kp);
    kp = NULL;

    /* Refusals: wrong domain, root ID, SAN injection, bad IP, TTL past the CA. */
    ck_assert_int_eq(certs_devca_issue(ca, "spiffe://other.org/a", 60, NULL, 0, NULL, 0, cert2,
                                       key2, err, sizeof(err)),
                     CERTS_ERR_INVALID);
    ck_assert_int_eq(certs_devca_issue(ca, "spiffe://example.org", 60, NULL, 0, NULL, 0, cert2,
                                       key2, err, sizeof(err)),
                     CERTS_ERR_INVALID);
    ck_assert_int_eq(
        certs_devca_issue(ca, ID, 60, bad_dns, 1, NULL, 0, cert2, key2, err, sizeof(err)),
        CERTS_ERR_INVALID);
    ck_assert_int_eq(
        certs_devca_issue(ca, ID, 60, NULL, 0, bad_ip, 1, cert2, key2, err, sizeof(err)),
        CERTS_ERR_INVALID);
    ck_assert_int_eq(
        certs_devca_issue(ca, ID, 60 * DAY, NULL, 0, NULL, 0, cert2, key2, err, sizeof(err)),
        CERTS_ERR_INVALID);
    ck_assert_int_eq(stat(cert2, &st), -1); /* nothing written */
    ck_assert_int_eq(
        certs_devca_issue("/nonexistent", ID, 60, NULL, 0, NULL, 0, cert2, key2, err, sizeof(err)),
        CERTS_ERR_IO);

    /* A second SVID: its key with the first certificate is a mismatch. */
    ck_assert_int_eq(certs_devca_issue(ca, ID, 60, NULL, 0, NULL, 0, cert2, key2, err, sizeof(err)),
                     0);
    ck_assert_int_eq(certs_keypair_load(&kp, cert, key2, now, err, sizeof(err)),
                     CERTS_ERR_KEY_MISMATCH);
    ck_assert_msg(strncmp(err, "key_mismatch: ", 14) == 0, "%s", err);
    ck_assert_ptr_null(kp);
    /* The CA's own pair is not an SVID (its ID has no path). */
    ck_assert_int_eq(certs_keypair_load(&kp, capem, cakey, now, err, sizeof(err)),
                     CERTS_ERR_REFUSED);
    ck_assert_msg(strncmp(err, "bad_spiffe_id: ", 15) == 0, "%s", err);
    ck_assert_int_eq(certs_keypair_load(&kp, "/nonexistent.pem", key, now, err, sizeof(err)),
                     CERTS_ERR_IO);
    ck_assert_msg(strncmp(err, "bad_file: ", 10) == 0, "%s", err);
    certs_trust_unref(t);
}
END_TEST

TCase *tcase_json(void); /* certs_json.c */
TCase *tcase_json_keys(void); /* certs_json_keys.c */
TCase *tcase_spiffe_hostile(void); /* certs_spiffe_hostile.c */

static Suite *certs_suite(void)
{
    Suite *s = suite_create("certs");
    TCase *tc;

    suite_add_tcase(s, tcase_json());
    suite_add_tcase(s, tcase_json_keys());
    suite_add_tcase(s, tcase_spiffe_hostile());

    tc = tcase_create("svid");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_spiffe_id_valid, 0, (int)N_ELEMS(spiffe_ids));
    tcase_add_test(tc, test_spiffe_id_lengths);
    tcase_add_loop_test(tc, test_reason_names, 0, (int)N_ELEMS(reason_names));
    tcase_add_loop_test(tc, test_svid_check, 0, (int)N_ELEMS(svid_cases));
    tcase_add_test(tc, test_svid_check_details);
    tcase_add_test(tc, test_svid_chain_caps);
    tcase_add_test(tc, test_svid_inspect);
    tcase_add_test(tc, test_cert_spiffe_id);
    suite_add_tcase(s, tc);

    tc = tcase_create("trust");
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_trust_jwks);
    tcase_add_loop_test(tc, test_trust_bad_bundles, 0, (int)N_ELEMS(bad_bundles));
    tcase_add_test(tc, test_trust_files);
    suite_add_tcase(s, tc);

    tc = tcase_create("keypair");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_keypair_mem);
    suite_add_tcase(s, tc);

    tc = tcase_create("devca");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, test_devca_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(certs_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
