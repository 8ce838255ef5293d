/*
 * devca.c - a development CA for `picket cert init` and `picket cert
 * issue`: one self-signed ECDSA P-256 root per trust domain and short-lived
 * X.509-SVID leaves that pass certs_svid_check(). Not meant to replace a
 * real issuer (SPIRE, cert-manager): there is no revocation and the CA key
 * sits in a file.
 *
 * SANs are built as GENERAL_NAME structures, never through OpenSSL's
 * "DNS:a,URI:b" config strings, so a caller-supplied name containing a comma
 * cannot smuggle in a second URI SAN.
 */
#include "certs_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define SKEW_S 60 /* notBefore is backdated this much for clock skew; notAfter = notBefore + ttl so the lifetime is exactly ttl */

static EVP_PKEY *gen_key(void)
{
    return EVP_EC_gen("P-256");
}

/* A random positive serial of 127 bits (RFC 5280 4.1.2.2: at most 20
 * octets, positive; CA/B forum asks for 64+ bits of randomness). */
static int set_serial(X509 *x)
{
    unsigned char b[16];
    BIGNUM *bn = NULL;
    int ok = 0;

    if (RAND_bytes(b, sizeof(b)) != 1)
        return 0;
    b[0] &= 0x7f;
    b[0] |= 0x40; /* never zero, always 16 octets */
    bn = BN_bin2bn(b, sizeof(b), NULL);
    if (bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL)
        ok = 1;
    BN_free(bn);
    return ok;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL)
        return 0;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1;
}

static int push_name(GENERAL_NAMES *gens, int type, const char *s)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *v = ASN1_IA5STRING_new();

    if (gn == NULL || v == NULL || ASN1_STRING_set(v, s, (int)strlen(s)) != 1)
        goto fail;
    GENERAL_NAME_set0_value(gn, type, v);
    v = NULL;
    if (!sk_GENERAL_NAME_push(gens, gn))
        goto fail;
    return 1;
fail:
    ASN1_IA5STRING_free(v);
    GENERAL_NAME_free(gn);
    return 0;
}

static int push_ip(GENERAL_NAMES *gens, const char *ip)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_OCTET_STRING *v = a2i_IPADDRESS(ip);

    if (gn == NULL || v == NULL)
        goto fail;
    GENERAL_NAME_set0_value(gn, GEN_IPADD, v);
    v = NULL;
    if (!sk_GENERAL_NAME_push(gens, gn))
        goto fail;
    return 1;
fail:
    ASN1_OCTET_STRING_free(v);
    GENERAL_NAME_free(gn);
    return 0;
}

static int add_sans(X509 *x, const char *uri, const char *const *dns, size_t ndns,
                    const char *const *ips, size_t nips)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    int ok = 0;

    if (gens == NULL || !push_name(gens, GEN_URI, uri))
        goto done;
    for (size_t i = 0; i < ndns; i++)
        if (!push_name(gens, GEN_DNS, dns[i]))
            goto done;
    for (size_t i = 0; i < nips; i++)
        if (!push_ip(gens, ips[i]))
            goto done;
    ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1;
done:
    GENERAL_NAMES_free(gens);
    return ok;
}

/* A DNS SAN: 1..253 bytes of letters, digits, '-', '.', and '*' (for a
 * wildcard label). Anything else would only produce a certificate that
 * clients refuse. */
static int dns_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '*'))
            return 0;
    }
    return 1;
}

static int set_times(X509 *x, int64_t nb, int64_t na)
{
    return ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) != NULL &&
           ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na) != NULL;
}

static int set_name(X509_NAME *name, const char *o, const char *cn)
{
    if (o != NULL &&
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)o, -1, -1, 0))
        return 0;
    if (cn != NULL && !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                                  (const unsigned char *)cn, -1, -1, 0))
        return 0;
    return 1;
}

/* PEM of cert or key into a freshly written file. */
static int write_pem(const char *path, X509 *cert, EVP_PKEY *key, unsigned mode, char *err,
                     size_t errlen)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long n;
    int rc;

    if (bio == NULL || (cert != NULL && PEM_write_bio_X509(bio, cert) != 1) ||
        (key != NULL && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1)) {
        certs_ossl_err(err, errlen, "cannot encode PEM");
        BIO_free(bio);
        return CERTS_ERR_CRYPTO;
    }
    n = BIO_get_mem_data(bio, &data);
    rc = certs_write_file_atomic(path, data, (size_t)n, mode, err, errlen);
    if (key != NULL)
        OPENSSL_cleanse(data, (size_t)n);
    BIO_free(bio);
    return rc;
}

static int join(char *out, size_t outlen, const char *dir, const char *name, char *err,
                size_t errlen)
{
    if ((size_t)snprintf(out, outlen, "%s/%s", dir, name) >= outlen) {
        certs_errf(err, errlen, "%s: path too long", dir);
        return CERTS_ERR_INVALID;
    }
    return 0;
}

int certs_devca_init(const char *dir, const char *trust_domain, int64_t ttl_s, char *err,
                     size_t errlen)
{
    char pem[PATH_MAX], keyp[PATH_MAX], uri[CERTS_TRUST_DOMAIN_MAX + 16];
    struct stat st;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    int64_t now = (int64_t)time(NULL);
    int rc;

    if (dir == NULL || trust_domain == NULL ||
        !certs_trust_domain_valid(trust_domain, strlen(trust_domain))) {
        certs_errf(err, errlen, "invalid trust domain '%s'", trust_domain ? trust_domain : "");
        return CERTS_ERR_INVALID;
    }
    if (ttl_s <= 0) {
        certs_errf(err, errlen, "ttl must be positive");
        return CERTS_ERR_INVALID;
    }
    if ((rc = join(pem, sizeof(pem), dir, "ca.pem", err, errlen)) < 0 ||
        (rc = join(keyp, sizeof(keyp), dir, "ca.key", err, errlen)) < 0)
        return rc;
    if (mkdir(dir, 0700) < 0 && (errno != EEXIST || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))) {
        certs_errf(err, errlen, "%s: %s", dir,
                   errno == EEXIST ? "not a directory" : strerror(errno));
        return CERTS_ERR_IO;
    }
    if (lstat(pem, &st) == 0 || lstat(keyp, &st) == 0) {
        certs_errf(err, errlen, "%s: a CA already exists there", dir);
        return CERTS_ERR_EXISTS;
    }
    snprintf(uri, sizeof(uri), "spiffe://%s", trust_domain);
    rc = CERTS_ERR_CRYPTO;
    ERR_clear_error();
    key = gen_key();
    x = X509_new();
    if (key == NULL || x == NULL || X509_set_version(x, X509_VERSION_3) != 1 || !set_serial(x) ||
        !set_name(X509_get_subject_name(x), strlen(trust_domain) <= 64 ? trust_domain : NULL,
                  "picket dev CA") ||
        X509_set_issuer_name(x, X509_get_subject_name(x)) != 1 ||
        !set_times(x, now - SKEW_S, now + ttl_s) || X509_set_pubkey(x, key) != 1 ||
        !add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
        !add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
        !add_ext(x, x, NID_subject_key_identifier, "hash") || !add_sans(x, uri, NULL, 0, NULL, 0) ||
        X509_sign(x, key, EVP_sha256()) <= 0) {
        certs_ossl_err(err, errlen, "cannot create CA certificate");
        goto done;
    }
    /* Key first: a ca.pem without its key would be a CA nobody can use. */
    rc = write_pem(keyp, NULL, key, 0600, err, errlen);
    if (rc == 0)
        rc = write_pem(pem, x, NULL, 0644, err, errlen);
done:
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

/* Loads cadir/ca.pem (first certificate) and cadir/ca.key and checks they
 * belong together. */
static int load_ca(const char *cadir, X509 **ca, EVP_PKEY **cakey, char *err, size_t errlen)
{
    char path[PATH_MAX], detail[384];
    STACK_OF(X509) *sk = NULL;
    char *data = NULL;
    size_t len;
    int rc;

    if ((rc = join(path, sizeof(path), cadir, "ca.pem", err, errlen)) < 0)
        return rc;
    rc = certs_read_file(path, CERTS_MAX_FILE, &data, &len, err, errlen);
    if (rc < 0)
        return rc;
    rc = certs_pem_certs(data, len, &sk, detail, sizeof(detail));
    free(data);
    if (rc < 0) {
        certs_errf(err, errlen, "%s: %s", path, detail);
        return rc == CERTS_ERR_NOT_FOUND ? CERTS_ERR_PARSE : rc;
    }
    *ca = sk_X509_shift(sk);
    sk_X509_pop_free(sk, X509_free);
    if ((rc = join(path, sizeof(path), cadir, "ca.key", err, errlen)) < 0 ||
        (rc = certs_read_file(path, CERTS_MAX_FILE, &data, &len, err, errlen)) < 0)
        goto fail;
    rc = certs_pem_key(data, len, cakey, detail, sizeof(detail));
    OPENSSL_cleanse(data, len);
    free(data);
    if (rc < 0) {
        certs_errf(err, errlen, "%s: %s", path, detail);
        rc = CERTS_ERR_PARSE;
        goto fail;
    }
    if (X509_check_private_key(*ca, *cakey) != 1) {
        certs_ossl_err(err, errlen, "CA key does not match ca.pem");
        EVP_PKEY_free(*cakey);
        *cakey = NULL;
        rc = CERTS_ERR_KEY_MISMATCH;
        goto fail;
    }
    return 0;
fail:
    X509_free(*ca);
    *ca = NULL;
    return rc;
}

/* Argument checks for certs_devca_issue(), against the CA too. */
static int check_issue_args(X509 *ca, const char *id, int64_t ttl_s, int64_t now,
                            const char *const *dns, size_t ndns, const char *const *ips,
                            size_t nips, char *err, size_t errlen)
{
    char caid[CERTS_SPIFFE_ID_MAX + 1];
    const char *td, *catd;
    size_t tdlen, catdlen;
    int64_t nb, na;

    if (id == NULL || !certs_spiffe_id_valid(id, strlen(id)) ||
        (certs_spiffe_trust_domain(id, strlen(id), &td, &tdlen),
         strlen("spiffe://") + tdlen == strlen(id))) {
        certs_errf(err, errlen, "'%s' is not a SPIFFE ID with a path", id ? id : "");
        return CERTS_ERR_INVALID;
    }
    if (certs_cert_spiffe_id(ca, caid, sizeof(caid)) == 0 &&
        certs_spiffe_trust_domain(caid, strlen(caid), &catd, &catdlen) == 0 &&
        (catdlen != tdlen || memcmp(catd, td, tdlen) != 0)) {
        certs_errf(err, errlen, "SPIFFE ID is in trust domain '%.*s' but the CA is for '%.*s'",
                   (int)tdlen, td, (int)catdlen, catd);
        return CERTS_ERR_INVALID;
    }
    if (ttl_s <= 0) {
        certs_errf(err, errlen, "ttl must be positive");
        return CERTS_ERR_INVALID;
    }
    if (certs_cert_validity(ca, &nb, &na) < 0 || now > na || ttl_s > na - now) {
        certs_errf(err, errlen, "ttl runs past the CA's expiry; renew the CA or shorten the ttl");
        return CERTS_ERR_INVALID;
    }
    for (size_t i = 0; i < ndns; i++) {
        if (dns[i] == NULL || !dns_name_ok(dns[i])) {
            certs_errf(err, errlen, "invalid DNS name '%s'", dns[i] ? dns[i] : "");
            return CERTS_ERR_INVALID;
        }
    }
    for (size_t i = 0; i < nips; i++) {
        ASN1_OCTET_STRING *a = ips[i] != NULL ? a2i_IPADDRESS(ips[i]) : NULL;
        if (a == NULL) {
            ERR_clear_error();
            certs_errf(err, errlen, "invalid IP address '%s'", ips[i] ? ips[i] : "");
            return CERTS_ERR_INVALID;
        }
        ASN1_OCTET_STRING_free(a);
    }
    return 0;
}

int certs_devca_issue(const char *cadir, const char *spiffe_id, int64_t ttl_s,
                      const char *const *dns, size_t ndns, const char *const *ips, size_t nips,
                      const char *cert_out, const char *key_out, char *err, size_t errlen)
{
    X509 *ca = NULL, *x = NULL;
    EVP_PKEY *cakey = NULL, *key = NULL;
    const char *cn = ndns > 0 && strlen(dns[0]) <= 64 ? dns[0] : NULL;
    int64_t now = (int64_t)time(NULL);
    int rc;

    if (cadir == NULL || cert_out == NULL || key_out == NULL) {
        certs_errf(err, errlen, "missing CA directory or output path");
        return CERTS_ERR_INVALID;
    }
    ERR_clear_error();
    rc = load_ca(cadir, &ca, &cakey, err, errlen);
    if (rc < 0)
        return rc;
    rc = check_issue_args(ca, spiffe_id, ttl_s, now, dns, ndns, ips, nips, err, errlen);
    if (rc < 0)
        goto done;
    rc = CERTS_ERR_CRYPTO;
    key = gen_key();
    x = X509_new();
    if (key == NULL || x == NULL || X509_set_version(x, X509_VERSION_3) != 1 || !set_serial(x) ||
        !set_name(X509_get_subject_name(x), "picket", cn) ||
        X509_set_issuer_name(x, X509_get_subject_name(ca)) != 1 ||
        !set_times(x, now - SKEW_S, now - SKEW_S + ttl_s) || X509_set_pubkey(x, key) != 1 ||
        !add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE") ||
        !add_ext(x, ca, NID_key_usage, "critical,digitalSignature") ||
        !add_ext(x, ca, NID_ext_key_usage, "serverAuth,clientAuth") ||
        !add_ext(x, ca, NID_subject_key_identifier, "hash") ||
        !add_ext(x, ca, NID_authority_key_identifier, "keyid") ||
        !add_sans(x, spiffe_id, dns, ndns, ips, nips) || X509_sign(x, cakey, EVP_sha256()) <= 0) {
        certs_ossl_err(err, errlen, "cannot create certificate");
        goto done;
    }
    rc = write_pem(key_out, NULL, key, 0600, err, errlen);
    if (rc == 0)
        rc = write_pem(cert_out, x, NULL, 0644, err, errlen);
done:
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(cakey);
    return rc;
}
