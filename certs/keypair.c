/*
 * keypair.c - our own X.509-SVID: leaf, intermediates and private key,
 * loaded from PEM and checked before use so that a broken or expired file
 * is refused at (re)load time and the previous pair stays in service
 * (DESIGN.md "Identity"). Immutable and reference counted like
 * struct certs_trust.
 */
#include "certs_int.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

struct certs_keypair {
    atomic_int refs;
    X509 *leaf;
    STACK_OF(X509) * chain; /* intermediates, without the leaf */
    EVP_PKEY *key;
    int64_t not_before, not_after;
    char id[CERTS_SPIFFE_ID_MAX + 1];
};

static void keypair_free(struct certs_keypair *kp)
{
    if (kp == NULL)
        return;
    X509_free(kp->leaf);
    sk_X509_pop_free(kp->chain, X509_free);
    EVP_PKEY_free(kp->key);
    free(kp);
}

struct certs_keypair *certs_keypair_ref(struct certs_keypair *kp)
{
    if (kp != NULL)
        atomic_fetch_add_explicit(&kp->refs, 1, memory_order_relaxed);
    return kp;
}

void certs_keypair_unref(struct certs_keypair *kp)
{
    if (kp != NULL && atomic_fetch_sub_explicit(&kp->refs, 1, memory_order_acq_rel) == 1)
        keypair_free(kp);
}

X509 *certs_keypair_leaf(const struct certs_keypair *kp)
{
    return kp->leaf;
}

STACK_OF(X509) * certs_keypair_chain(const struct certs_keypair *kp)
{
    return kp->chain;
}

EVP_PKEY *certs_keypair_key(const struct certs_keypair *kp)
{
    return kp->key;
}

const char *certs_keypair_spiffe_id(const struct certs_keypair *kp)
{
    return kp->id;
}

int64_t certs_keypair_not_before(const struct certs_keypair *kp)
{
    return kp->not_before;
}

int64_t certs_keypair_not_after(const struct certs_keypair *kp)
{
    return kp->not_after;
}

/* Maps a loader status to the reason name that starts err. */
static const char *load_reason(int rc)
{
    switch (rc) {
    case CERTS_ERR_NOT_FOUND:
        return certs_reason_name(CERTS_R_NO_CERTIFICATE);
    case CERTS_ERR_KEY_MISMATCH:
        return certs_reason_name(CERTS_R_KEY_MISMATCH);
    case CERTS_ERR_NOMEM:
    case CERTS_ERR_CRYPTO:
        return certs_reason_name(CERTS_R_INTERNAL);
    default:
        return certs_reason_name(CERTS_R_BAD_FILE);
    }
}

/* Applies the SVID shape rules that concern our own certificate. Expiry is
 * refused; notBefore in the future is not (a freshly rotated SVID may be
 * seconds ahead of our clock) and lifetime is the peers' business. */
static int check_own(struct certs_keypair *kp, int64_t now, char *err, size_t errlen)
{
    char detail[256];
    enum certs_reason r;

    detail[0] = '\0';
    if ((r = certs_rule_uri(kp->leaf, kp->id, sizeof(kp->id), detail, sizeof(detail))) ||
        (r = certs_rule_not_ca(kp->leaf, detail, sizeof(detail))) ||
        (r = certs_rule_key_usage(kp->leaf, detail, sizeof(detail)))) {
        certs_errf(err, errlen, "%s: %s", certs_reason_name(r), detail);
        return CERTS_ERR_REFUSED;
    }
    r = certs_rule_window(kp->leaf, now, detail, sizeof(detail));
    if (r == CERTS_R_EXPIRED) {
        certs_errf(err, errlen, "%s: %s", certs_reason_name(r), detail);
        return CERTS_ERR_REFUSED;
    }
    if (certs_cert_validity(kp->leaf, &kp->not_before, &kp->not_after) < 0) {
        ERR_clear_error();
        certs_errf(err, errlen, "%s: validity period is unreadable",
                   certs_reason_name(CERTS_R_BAD_FILE));
        return CERTS_ERR_PARSE;
    }
    return 0;
}

/* The checks every source of our own pair goes through: the key is the
 * leaf's, and the leaf is an SVID that has not expired. Takes kp over:
 * on failure it is freed. */
static int finish(struct certs_keypair **out, struct certs_keypair *kp, int64_t now_unix_s,
                  char *err, size_t errlen)
{
    char detail[384];
    int rc;

    ERR_clear_error();
    if (X509_check_private_key(kp->leaf, kp->key) != 1) {
        rc = CERTS_ERR_KEY_MISMATCH;
        certs_ossl_err(detail, sizeof(detail), "private key does not match the certificate");
        certs_errf(err, errlen, "%s: %s", load_reason(rc), detail);
        goto fail;
    }
    rc = check_own(kp, now_unix_s, err, errlen);
    if (rc < 0)
        goto fail;
    *out = kp;
    return 0;
fail:
    keypair_free(kp);
    return rc;
}

static struct certs_keypair *keypair_new(char *err, size_t errlen)
{
    struct certs_keypair *kp = calloc(1, sizeof(*kp));
    if (kp == NULL)
        certs_errf(err, errlen, "%s: out of memory", certs_reason_name(CERTS_R_INTERNAL));
    else
        atomic_init(&kp->refs, 1);
    return kp;
}

/* cert_label/key_label name the inputs in err ("certificate" or a path). */
static int load_pem(struct certs_keypair **out, const char *cert_pem, size_t cert_len,
                    const char *key_pem, size_t key_len, int64_t now_unix_s, const char *cert_label,
                    const char *key_label, char *err, size_t errlen)
{
    struct certs_keypair *kp = NULL;
    char detail[384];
    int rc = CERTS_ERR_NOMEM;

    detail[0] = '\0';
    if (cert_pem == NULL || key_pem == NULL) {
        certs_errf(err, errlen, "%s: missing certificate or key",
                   certs_reason_name(CERTS_R_BAD_FILE));
        return CERTS_ERR_INVALID;
    }
    if (cert_len > CERTS_MAX_FILE || key_len > CERTS_MAX_FILE) {
        certs_errf(err, errlen, "%s: input over %d bytes", certs_reason_name(CERTS_R_BAD_FILE),
                   CERTS_MAX_FILE);
        return CERTS_ERR_TOO_LARGE;
    }
    kp = keypair_new(err, errlen);
    if (kp == NULL)
        return CERTS_ERR_NOMEM;
    rc = certs_pem_certs(cert_pem, cert_len, &kp->chain, detail, sizeof(detail));
    if (rc < 0) {
        certs_errf(err, errlen, "%s: %s: %s", load_reason(rc), cert_label, detail);
        goto fail;
    }
    kp->leaf = sk_X509_shift(kp->chain);
    rc = certs_pem_key(key_pem, key_len, &kp->key, detail, sizeof(detail));
    if (rc < 0) {
        certs_errf(err, errlen, "%s: %s: %s", certs_reason_name(CERTS_R_BAD_FILE), key_label,
                   detail);
        goto fail;
    }
    return finish(out, kp, now_unix_s, err, errlen);
fail:
    keypair_free(kp);
    return rc;
}

int certs_keypair_load_der(struct certs_keypair **out, const unsigned char *chain_der,
                           size_t chain_len, const unsigned char *key_der, size_t key_len,
                           int64_t now_unix_s, char *err, size_t errlen)
{
    struct certs_keypair *kp = NULL;
    char detail[384];
    int rc;

    detail[0] = '\0';
    if (chain_der == NULL || key_der == NULL) {
        certs_errf(err, errlen, "%s: missing certificate or key",
                   certs_reason_name(CERTS_R_BAD_FILE));
        return CERTS_ERR_INVALID;
    }
    kp = keypair_new(err, errlen);
    if (kp == NULL)
        return CERTS_ERR_NOMEM;
    rc = certs_der_certs(chain_der, chain_len, CERTS_MAX_PEER_CERTS, &kp->chain, detail,
                         sizeof(detail));
    if (rc < 0) {
        certs_errf(err, errlen, "%s: certificate chain: %s", load_reason(rc), detail);
        goto fail;
    }
    kp->leaf = sk_X509_shift(kp->chain);
    rc = certs_der_key(key_der, key_len, &kp->key, detail, sizeof(detail));
    if (rc < 0) {
        certs_errf(err, errlen, "%s: private key: %s", certs_reason_name(CERTS_R_BAD_FILE),
                   detail);
        goto fail;
    }
    return finish(out, kp, now_unix_s, err, errlen);
fail:
    keypair_free(kp);
    return rc;
}

int certs_keypair_load_mem(struct certs_keypair **out, const char *cert_pem, size_t cert_len,
                           const char *key_pem, size_t key_len, int64_t now_unix_s, char *err,
                           size_t errlen)
{
    return load_pem(out, cert_pem, cert_len, key_pem, key_len, now_unix_s, "certificate", "key",
                    err, errlen);
}

int certs_keypair_load(struct certs_keypair **out, const char *cert_path, const char *key_path,
                       int64_t now_unix_s, char *err, size_t errlen)
{
    char detail[512];
    char *cert = NULL, *key = NULL;
    size_t cert_len, key_len;
    int rc;

    if (cert_path == NULL || key_path == NULL) {
        certs_errf(err, errlen, "%s: missing path", certs_reason_name(CERTS_R_BAD_FILE));
        return CERTS_ERR_INVALID;
    }
    rc = certs_read_file(cert_path, CERTS_MAX_FILE, &cert, &cert_len, detail, sizeof(detail));
    if (rc == 0)
        rc = certs_read_file(key_path, CERTS_MAX_FILE, &key, &key_len, detail, sizeof(detail));
    if (rc < 0) {
        certs_errf(err, errlen, "%s: %s", certs_reason_name(CERTS_R_BAD_FILE), detail);
        goto done;
    }
    rc = load_pem(out, cert, cert_len, key, key_len, now_unix_s, cert_path, key_path, err, errlen);
done:
    /* The key text is secret: wipe our copy before freeing it. */
    if (key != NULL)
        OPENSSL_cleanse(key, key_len);
    free(key);
    free(cert);
    return rc;
}
