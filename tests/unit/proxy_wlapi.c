/*
 * proxy_wlapi.c - TCase "wlapi" of the proxy suite: Workload API messages
 * (proxy/server/wlapi_msg.c): bounded decoding of X509SVIDResponse, the
 * choice of SVID by hint, and every refusal of px_wlapi_identity_build(),
 * plus the socket URI syntax (px_config_socket_path). Certificates are
 * minted in memory with OpenSSL; messages are packed with protobuf-c.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs.h"
#include "config.h"
#include "wlapi.h"
#include "workload_api.pb-c.h"

TCase *tcase_wlapi(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- minting ------------------------------------------------------------ */

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(k);
    return k;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *e;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* A certificate for key, signed by issuer (NULL: self-signed), valid from
 * now+nb to now+na seconds. uri NULL: no URI SAN. */
static X509 *mint(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *uri, int ca,
                  long nb, long na)
{
    X509 *x = X509_new();
    X509_NAME *n;
    static long serial = 1;
    char san[300];
    ck_assert_ptr_nonnull(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), nb);
    X509_gmtime_adj(X509_getm_notAfter(x), na);
    X509_set_pubkey(x, key);
    n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)(ca ? "ca" : "leaf"),
                               -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    add_ext(x, issuer ? issuer : x, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(x, issuer ? issuer : x, NID_key_usage,
            ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    if (uri != NULL) {
        snprintf(san, sizeof(san), "URI:%s", uri);
        add_ext(x, issuer ? issuer : x, NID_subject_alt_name, san);
    }
    ck_assert_int_gt(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()), 0);
    return x;
}

struct blob {
    unsigned char *p;
    size_t n;
};

static void blob_add_cert(struct blob *b, X509 *x)
{
    int n = i2d_X509(x, NULL);
    unsigned char *q;
    ck_assert_int_gt(n, 0);
    b->p = realloc(b->p, b->n + (size_t)n);
    ck_assert_ptr_nonnull(b->p);
    q = b->p + b->n;
    i2d_X509(x, &q);
    b->n += (size_t)n;
}

static void blob_key(struct blob *b, EVP_PKEY *k)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    unsigned char *q;
    int n;
    ck_assert_ptr_nonnull(p8);
    n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL);
    b->p = malloc((size_t)n);
    q = b->p;
    i2d_PKCS8_PRIV_KEY_INFO(p8, &q);
    b->n = (size_t)n;
    PKCS8_PRIV_KEY_INFO_free(p8);
}

/* The fixture: CA of example.org, one of partner.net, a good leaf. */
#define ID "spiffe://example.org/ns/shop/sa/orders"
static EVP_PKEY *ca_key, *pca_key, *leaf_key, *other_key;
static X509 *ca, *pca, *leaf;

static void wl_setup(void)
{
    ca_key = new_key();
    pca_key = new_key();
    leaf_key = new_key();
    other_key = new_key();
    ca = mint(ca_key, NULL, NULL, "spiffe://example.org", 1, -600, 86400);
    pca = mint(pca_key, NULL, NULL, "spiffe://partner.net", 1, -600, 86400);
    leaf = mint(leaf_key, ca, ca_key, ID, 0, -60, 3600);
}

static void wl_teardown(void)
{
    X509_free(ca);
    X509_free(pca);
    X509_free(leaf);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(pca_key);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(other_key);
}

/* One SVID entry of a message under construction. */
struct svid_in {
    const char *spiffe_id;
    struct blob chain, key, bundle;
    const char *hint;
};

static void svid_good(struct svid_in *s, const char *hint)
{
    memset(s, 0, sizeof(*s));
    s->spiffe_id = ID;
    blob_add_cert(&s->chain, leaf);
    blob_key(&s->key, leaf_key);
    blob_add_cert(&s->bundle, ca);
    s->hint = hint;
}

static void svid_free(struct svid_in *s)
{
    free(s->chain.p);
    free(s->key.p);
    free(s->bundle.p);
}

/* Packs svids[0..n) and fed (key -> DER of fed_cert) into *out. */
static void pack(struct blob *out, struct svid_in *svids, size_t n, const char *fed_key,
                 X509 *fed_cert)
{
    X509SVIDResponse r = X509_SVIDRESPONSE__INIT;
    X509SVID *sv = calloc(n ? n : 1, sizeof(*sv));
    X509SVID **svp = calloc(n ? n : 1, sizeof(*svp));
    X509SVIDResponse__FederatedBundlesEntry fe = X509_SVIDRESPONSE__FEDERATED_BUNDLES_ENTRY__INIT;
    X509SVIDResponse__FederatedBundlesEntry *fep = &fe;
    struct blob fb = {NULL, 0};

    for (size_t i = 0; i < n; i++) {
        x509_svid__init(&sv[i]);
        sv[i].spiffe_id = (char *)svids[i].spiffe_id;
        sv[i].x509_svid.data = svids[i].chain.p;
        sv[i].x509_svid.len = svids[i].chain.n;
        sv[i].x509_svid_key.data = svids[i].key.p;
        sv[i].x509_svid_key.len = svids[i].key.n;
        sv[i].bundle.data = svids[i].bundle.p;
        sv[i].bundle.len = svids[i].bundle.n;
        if (svids[i].hint)
            sv[i].hint = (char *)svids[i].hint;
        svp[i] = &sv[i];
    }
    r.n_svids = n;
    r.svids = svp;
    if (fed_key != NULL) {
        if (fed_cert != NULL)
            blob_add_cert(&fb, fed_cert);
        fe.key = (char *)fed_key;
        fe.value.data = fb.p;
        fe.value.len = fb.n;
        r.n_federated_bundles = 1;
        r.federated_bundles = &fep;
    }
    out->n = x509_svidresponse__get_packed_size(&r);
    out->p = malloc(out->n + 1);
    ck_assert_ptr_nonnull(out->p);
    ck_assert_uint_eq(x509_svidresponse__pack(&r, out->p), out->n);
    free(fb.p);
    free(sv);
    free(svp);
}

/* Decodes, selects with hint, builds; returns 0 or -1 with err. */
static int run(const struct blob *msg, const char *hint, struct px_wlapi_identity *id, char *err,
               size_t errlen)
{
    struct px_wlapi_msg *m = NULL;
    int idx, rc;
    if (px_wlapi_msg_decode(&m, msg->p, msg->n, err, errlen) != 0)
        return -1;
    idx = px_wlapi_msg_select(m, hint, err, errlen);
    rc = idx < 0 ? -1
                 : px_wlapi_identity_build(id, m, (size_t)idx, (int64_t)time(NULL), err, errlen);
    px_wlapi_msg_free(m);
    return rc;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(wlapi_good_message)
{
    struct svid_in s[2];
    struct blob msg = {NULL, 0};
    struct px_wlapi_msg *m = NULL;
    struct px_wlapi_identity id;
    char err[600] = "";
    size_t n = 0;

    svid_good(&s[0], "internal");
    svid_good(&s[1], "external");
    pack(&msg, s, 2, "spiffe://partner.net", pca);
    ck_assert_int_eq(px_wlapi_msg_decode(&m, msg.p, msg.n, err, sizeof(err)), 0);
    ck_assert_uint_eq(px_wlapi_msg_nsvids(m), 2);
    ck_assert_str_eq(px_wlapi_msg_spiffe_id(m, 0), ID);
    ck_assert_str_eq(px_wlapi_msg_hint(m, 1), "external");
    ck_assert_str_eq(px_wlapi_msg_hint(m, 7), "");
    ck_assert_uint_eq(px_wlapi_msg_nfederated(m), 1);
    ck_assert_str_eq(px_wlapi_msg_federated_key(m, 0), "spiffe://partner.net");
    ck_assert_int_eq(px_wlapi_msg_select(m, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(px_wlapi_msg_select(m, "", err, sizeof(err)), 0);
    ck_assert_int_eq(px_wlapi_msg_select(m, "external", err, sizeof(err)), 1);
    ck_assert_int_eq(px_wlapi_msg_select(m, "nope", err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "no_matching_hint:", 17) == 0, "%s", err);
    ck_assert_msg(px_wlapi_identity_build(&id, m, 1, (int64_t)time(NULL), err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_str_eq(certs_keypair_spiffe_id(id.keypair), ID);
    ck_assert_uint_eq(certs_trust_count(id.trust), 2);
    ck_assert_ptr_nonnull(certs_trust_store(id.trust, "example.org", 11));
    ck_assert_ptr_nonnull(certs_trust_store(id.trust, "partner.net", 11));
    ck_assert_str_eq(certs_trust_domain_at(id.trust, 1, &n), "partner.net");
    ck_assert_uint_eq(n, 1);
    px_wlapi_identity_clear(&id);
    ck_assert_ptr_null(id.keypair);
    px_wlapi_identity_clear(&id); /* twice is fine */
    /* out of range */
    ck_assert_int_eq(px_wlapi_identity_build(&id, m, 2, (int64_t)time(NULL), err, sizeof(err)),
                     -1);
    px_wlapi_msg_free(m);
    px_wlapi_msg_free(NULL);
    free(msg.p);
    svid_free(&s[0]);
    svid_free(&s[1]);
}
END_TEST

START_TEST(wlapi_federated_bare_name)
{
    struct svid_in s;
    struct blob msg = {NULL, 0};
    struct px_wlapi_identity id;
    char err[600] = "";
    svid_good(&s, NULL);
    pack(&msg, &s, 1, "partner.net", pca);
    ck_assert_msg(run(&msg, NULL, &id, err, sizeof(err)) == 0, "%s", err);
    ck_assert_ptr_nonnull(certs_trust_store(id.trust, "partner.net", 11));
    px_wlapi_identity_clear(&id);
    free(msg.p);
    svid_free(&s);
}
END_TEST

/* Size bounds, before and during decoding. */
START_TEST(wlapi_decode_bounds)
{
    struct px_wlapi_msg *m = NULL;
    char err[300];
    size_t big = PX_WLAPI_MAX_MSG + 1, n = PX_WLAPI_MAX_MSG;
    unsigned char *p = calloc(1, big);
    ck_assert_ptr_nonnull(p);
    /* over the size cap: refused unread */
    ck_assert_int_eq(px_wlapi_msg_decode(&m, p, big, err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "too_large:", 10) == 0, "%s", err);
    ck_assert_ptr_null(m);
    /* 2 M unknown two-byte fields (field 15, varint 0): within the size cap,
     * but decoding would keep a structure per field */
    for (size_t i = 0; i + 1 < n; i += 2) {
        p[i] = 0x78;
        p[i + 1] = 0x00;
    }
    ck_assert_int_eq(px_wlapi_msg_decode(&m, p, n, err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "too_large:", 10) == 0, "%s", err);
    /* 65 empty SVIDs (field 1, length 0) */
    for (size_t i = 0; i < 65; i++) {
        p[2 * i] = 0x0a;
        p[2 * i + 1] = 0x00;
    }
    ck_assert_int_eq(px_wlapi_msg_decode(&m, p, 130, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "65 SVIDs") != NULL, "%s", err);
    /* 64 are fine to decode (each is then refused when built) */
    ck_assert_int_eq(px_wlapi_msg_decode(&m, p, 128, err, sizeof(err)), 0);
    ck_assert_uint_eq(px_wlapi_msg_nsvids(m), 64);
    px_wlapi_msg_free(m);
    free(p);
}
END_TEST

static const struct {
    const char *hex;
    const char *why;
} bad_wire[] = {
    {"0a", "field 1 without its length"},
    {"0a05", "length past the end"},
    {"0aff", "truncated length varint"},
    {"0a020a", "truncated inner field"},
    {"07", "field 0 / bad wire type"},
    {"ffffffffffffffffffff01", "tag varint over 10 bytes"},
};

static size_t unhex(const char *h, unsigned char *out)
{
    size_t n = 0;
    for (; h[0] && h[1]; h += 2)
        out[n++] = (unsigned char)strtoul((char[]){h[0], h[1], 0}, NULL, 16);
    return n;
}

START_TEST(wlapi_decode_malformed)
{
    struct px_wlapi_msg *m = NULL;
    unsigned char buf[64];
    char err[300] = "";
    size_t n = unhex(bad_wire[_i].hex, buf);
    ck_assert_msg(px_wlapi_msg_decode(&m, buf, n, err, sizeof(err)) == -1, "%s accepted",
                  bad_wire[_i].why);
    ck_assert_msg(strncmp(err, "bad_message:", 12) == 0, "%s: %s", bad_wire[_i].why, err);
}
END_TEST

/* An empty message decodes (no field is required in proto3) and is then
 * refused: no SVID. */
START_TEST(wlapi_no_svid)
{
    struct px_wlapi_msg *m = NULL;
    char err[300] = "";
    ck_assert_int_eq(px_wlapi_msg_decode(&m, (const uint8_t *)"", 0, err, sizeof(err)), 0);
    ck_assert_int_eq(px_wlapi_msg_select(m, NULL, err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "no_svid:", 8) == 0, "%s", err);
    px_wlapi_msg_free(m);
}
END_TEST

/* Each broken SVID and the reason it is refused with. */
enum breakage {
    B_EXPIRED,
    B_KEY_MISMATCH,
    B_NO_URI,
    B_ID_MISMATCH,
    B_OTHER_CA_BUNDLE,
    B_EMPTY_BUNDLE,
    B_GARBAGE_CHAIN,
    B_TRAILING_CHAIN,
    B_NO_KEY,
    B_GARBAGE_KEY,
    B_LEAF_IS_CA,
    B_FED_BAD_KEY,
    B_FED_OWN_TD,
    B_FED_EMPTY,
    B_BUNDLE_GARBAGE,
};

static const struct {
    enum breakage b;
    const char *reason;
} breakages[] = {
    {B_EXPIRED, "expired:"},
    {B_KEY_MISMATCH, "key_mismatch:"},
    {B_NO_URI, "no_uri_san:"},
    {B_ID_MISMATCH, "spiffe_id_mismatch:"},
    {B_OTHER_CA_BUNDLE, "untrusted_chain:"},
    {B_EMPTY_BUNDLE, "bad_bundle:"},
    {B_GARBAGE_CHAIN, "bad_file:"},
    {B_TRAILING_CHAIN, "bad_file:"},
    {B_NO_KEY, "bad_file:"},
    {B_GARBAGE_KEY, "bad_file:"},
    {B_LEAF_IS_CA, "leaf_is_ca:"},
    {B_FED_BAD_KEY, "bad_federated_bundle:"},
    {B_FED_OWN_TD, "bad_federated_bundle:"},
    {B_FED_EMPTY, "bad_federated_bundle:"},
    {B_BUNDLE_GARBAGE, "bad_bundle:"},
};

START_TEST(wlapi_refusals)
{
    struct svid_in s;
    struct blob msg = {NULL, 0};
    struct px_wlapi_identity id = {NULL, NULL};
    const char *fed_key = NULL;
    X509 *fed = NULL, *bad = NULL;
    char err[600] = "";

    svid_good(&s, NULL);
    switch (breakages[_i].b) {
    case B_EXPIRED:
        bad = mint(leaf_key, ca, ca_key, ID, 0, -7200, -60);
        break;
    case B_KEY_MISMATCH:
        free(s.key.p);
        blob_key(&s.key, other_key);
        break;
    case B_NO_URI:
        bad = mint(leaf_key, ca, ca_key, NULL, 0, -60, 3600);
        break;
    case B_ID_MISMATCH:
        s.spiffe_id = "spiffe://example.org/ns/shop/sa/other";
        break;
    case B_OTHER_CA_BUNDLE:
        s.bundle.n = 0;
        blob_add_cert(&s.bundle, pca);
        break;
    case B_EMPTY_BUNDLE:
        s.bundle.n = 0;
        break;
    case B_GARBAGE_CHAIN:
        memset(s.chain.p + 10, 0xee, 20);
        break;
    case B_TRAILING_CHAIN:
        s.chain.p = realloc(s.chain.p, s.chain.n + 1);
        s.chain.p[s.chain.n++] = 0;
        break;
    case B_NO_KEY:
        s.key.n = 0;
        break;
    case B_GARBAGE_KEY:
        memset(s.key.p, 0x30, s.key.n);
        break;
    case B_LEAF_IS_CA:
        bad = mint(leaf_key, ca, ca_key, ID, 1, -60, 3600);
        break;
    case B_FED_BAD_KEY:
        fed_key = "spiffe://Partner.NET";
        fed = pca;
        break;
    case B_FED_OWN_TD:
        fed_key = "spiffe://example.org";
        fed = pca;
        break;
    case B_FED_EMPTY:
        fed_key = "spiffe://partner.net";
        break;
    case B_BUNDLE_GARBAGE:
        memset(s.bundle.p, 0x41, s.bundle.n);
        break;
    }
    if (bad != NULL) {
        s.chain.n = 0;
        blob_add_cert(&s.chain, bad);
        X509_free(bad);
    }
    pack(&msg, &s, 1, fed_key, fed);
    ck_assert_int_eq(run(&msg, NULL, &id, err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, breakages[_i].reason, strlen(breakages[_i].reason)) == 0,
                  "case %d: want %s, got %s", _i, breakages[_i].reason, err);
    ck_assert_ptr_null(id.keypair);
    ck_assert_ptr_null(id.trust);
    free(msg.p);
    svid_free(&s);
}
END_TEST

/* An SVID whose notBefore is a little ahead of our clock is taken (as from
 * a file), its chain checked at notBefore. */
START_TEST(wlapi_not_yet_valid_accepted)
{
    struct svid_in s;
    struct blob msg = {NULL, 0};
    struct px_wlapi_identity id;
    X509 *early = mint(leaf_key, ca, ca_key, ID, 0, 30, 3600);
    char err[600] = "";
    svid_good(&s, NULL);
    s.chain.n = 0;
    blob_add_cert(&s.chain, early);
    pack(&msg, &s, 1, NULL, NULL);
    ck_assert_msg(run(&msg, NULL, &id, err, sizeof(err)) == 0, "%s", err);
    px_wlapi_identity_clear(&id);
    X509_free(early);
    free(msg.p);
    svid_free(&s);
}
END_TEST

static const struct {
    const char *uri;
    const char *path; /* NULL = refused */
} socket_uris[] = {
    {"unix:///run/spire/sockets/agent.sock", "/run/spire/sockets/agent.sock"},
    {"unix:/tmp/agent.sock", "/tmp/agent.sock"},
    {"unix://host/tmp/agent.sock", NULL}, /* an authority */
    {"tcp://127.0.0.1:8081", NULL},
    {"/run/agent.sock", NULL},
    {"unix:///", NULL},
    {"unix:///run/", NULL},
    {"unix:///run/a.sock?x=1", NULL},
    {"unix:relative.sock", NULL},
    {"", NULL},
    {"unix:///aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     NULL}, /* a path of 108 bytes: no room for sun_path's NUL */
    {"unix:///aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, /* 107 */
};

START_TEST(wlapi_socket_uri)
{
    char path[128] = "", err[300] = "";
    int rc = px_config_socket_path(socket_uris[_i].uri, path, sizeof(path), err, sizeof(err));
    if (socket_uris[_i].path != NULL) {
        ck_assert_msg(rc == 0, "%s: %s", socket_uris[_i].uri, err);
        ck_assert_str_eq(path, socket_uris[_i].path);
    } else {
        ck_assert_msg(rc == -1, "%s accepted as %s", socket_uris[_i].uri, path);
        ck_assert_str_ne(err, "");
    }
}
END_TEST

TCase *tcase_wlapi(void)
{
    TCase *tc = tcase_create("wlapi");
    tcase_add_checked_fixture(tc, wl_setup, wl_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, wlapi_good_message);
    tcase_add_test(tc, wlapi_federated_bare_name);
    tcase_add_test(tc, wlapi_decode_bounds);
    tcase_add_loop_test(tc, wlapi_decode_malformed, 0, (int)N_ELEMS(bad_wire));
    tcase_add_test(tc, wlapi_no_svid);
    tcase_add_loop_test(tc, wlapi_refusals, 0, (int)N_ELEMS(breakages));
    tcase_add_test(tc, wlapi_not_yet_valid_accepted);
    tcase_add_loop_test(tc, wlapi_socket_uri, 0, (int)N_ELEMS(socket_uris));
    return tc;
}
