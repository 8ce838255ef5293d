/*
 * svid.c - SPIFFE ID syntax, refusal reason names and the X.509-SVID rules
 * (SPIFFE X509-SVID spec sections 2-5 plus picket's maximum lifetime).
 *
 * certs_svid_check() stops at the first broken rule, cheapest and most
 * telling first, and only then pays for path validation; the order is a
 * contract (DESIGN.md "Identity") because the first reason is what gets
 * logged and counted. certs_svid_inspect() runs the same rules but reports
 * all of them, for humans.
 */
#include "certs_int.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* ---- SPIFFE IDs ---------------------------------------------------- */

#define SPIFFE_SCHEME "spiffe://"
#define SPIFFE_SCHEME_LEN (sizeof(SPIFFE_SCHEME) - 1)

static int td_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static int path_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

int certs_trust_domain_valid(const char *td, size_t len)
{
    if (td == NULL || len == 0 || len > CERTS_TRUST_DOMAIN_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!td_char((unsigned char)td[i]))
            return 0;
    return 1;
}

int certs_spiffe_id_valid(const char *s, size_t len)
{
    size_t i, start;

    if (s == NULL || len > CERTS_SPIFFE_ID_MAX || len <= SPIFFE_SCHEME_LEN ||
        memcmp(s, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) != 0)
        return 0;
    /* Trust domain: everything up to the first '/'. ':' (port), '@'
     * (userinfo), '?', '#', '%' and uppercase all fail td_char. */
    i = SPIFFE_SCHEME_LEN;
    while (i < len && s[i] != '/')
        i++;
    if (!certs_trust_domain_valid(s + SPIFFE_SCHEME_LEN, i - SPIFFE_SCHEME_LEN))
        return 0;
    /* Path: each '/' starts a segment that must be non-empty (this also
     * refuses a trailing slash and "//"), not "." or "..". */
    while (i < len) {
        size_t n;
        start = ++i;
        while (i < len && s[i] != '/') {
            if (!path_char((unsigned char)s[i]))
                return 0;
            i++;
        }
        n = i - start;
        if (n == 0 || (n == 1 && s[start] == '.') ||
            (n == 2 && s[start] == '.' && s[start + 1] == '.'))
            return 0;
    }
    return 1;
}

int certs_spiffe_trust_domain(const char *id, size_t len, const char **td, size_t *tdlen)
{
    const char *p, *slash;
    if (!certs_spiffe_id_valid(id, len))
        return CERTS_ERR_INVALID;
    p = id + SPIFFE_SCHEME_LEN;
    slash = memchr(p, '/', len - SPIFFE_SCHEME_LEN);
    *td = p;
    *tdlen = slash != NULL ? (size_t)(slash - p) : len - SPIFFE_SCHEME_LEN;
    return 0;
}

/* ---- Reasons --------------------------------------------------------- */

static const char *const reason_names[CERTS_R_COUNT] = {
    [CERTS_R_OK] = "ok",
    [CERTS_R_EXPIRED] = "expired",
    [CERTS_R_NOT_YET_VALID] = "not_yet_valid",
    [CERTS_R_NO_URI_SAN] = "no_uri_san",
    [CERTS_R_MULTIPLE_URI_SANS] = "multiple_uri_sans",
    [CERTS_R_BAD_SPIFFE_ID] = "bad_spiffe_id",
    [CERTS_R_LEAF_IS_CA] = "leaf_is_ca",
    [CERTS_R_BAD_KEY_USAGE] = "bad_key_usage",
    [CERTS_R_LIFETIME_TOO_LONG] = "lifetime_too_long",
    [CERTS_R_UNKNOWN_TRUST_DOMAIN] = "unknown_trust_domain",
    [CERTS_R_UNTRUSTED_CHAIN] = "untrusted_chain",
    [CERTS_R_NO_CERTIFICATE] = "no_certificate",
    [CERTS_R_KEY_MISMATCH] = "key_mismatch",
    [CERTS_R_BAD_FILE] = "bad_file",
    [CERTS_R_INTERNAL] = "internal_error",
};

const char *certs_reason_name(enum certs_reason r)
{
    if ((unsigned)r >= CERTS_R_COUNT || reason_names[r] == NULL)
        return "unknown";
    return reason_names[r];
}

/* ---- URI SAN ----------------------------------------------------------- */

/* Counts the URI SANs of cert and copies the first, raw, into buf (cut to
 * buflen - 1 bytes, NUL-terminated); its full length goes to *urilen and
 * whether it holds a NUL byte to *nul. Returns the count, or -1 when the
 * SAN extension is repeated or does not decode (treated as unusable rather
 * than as "no SAN", so a malformed extension cannot pass as absent). */
static int uri_sans(X509 *cert, char *buf, size_t buflen, size_t *urilen, int *nul)
{
    GENERAL_NAMES *gens;
    int crit = -1, count = 0;

    buf[0] = '\0';
    *urilen = 0;
    *nul = 0;
    gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (gens == NULL) {
        ERR_clear_error();
        return crit == -1 ? 0 : -1;
    }
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
        const ASN1_IA5STRING *u;
        size_t n;
        if (gn->type != GEN_URI)
            continue;
        if (count++ > 0)
            continue;
        u = gn->d.uniformResourceIdentifier;
        n = u->length > 0 ? (size_t)u->length : 0;
        *urilen = n;
        *nul = n > 0 && memchr(u->data, '\0', n) != NULL;
        if (n > buflen - 1)
            n = buflen - 1;
        if (n > 0)
            memcpy(buf, u->data, n);
        buf[n] = '\0';
    }
    GENERAL_NAMES_free(gens);
    return count;
}

int certs_cert_spiffe_id(X509 *cert, char *buf, size_t len)
{
    size_t n;
    int nul, count;

    if (cert == NULL || buf == NULL || len == 0)
        return CERTS_ERR_INVALID;
    count = uri_sans(cert, buf, len, &n, &nul);
    if (count == 0)
        return CERTS_ERR_NOT_FOUND;
    if (count != 1 || nul) {
        buf[0] = '\0';
        return CERTS_ERR_INVALID;
    }
    if (n >= len) {
        buf[0] = '\0';
        return CERTS_ERR_TOO_LARGE;
    }
    return 0;
}

/* Copies at most 128 bytes of a peer-supplied string into out for an
 * error message, with non-printable bytes shown as '?'. */
static void printable(const char *s, char *out, size_t outlen)
{
    size_t i;
    for (i = 0; i < 128 && i + 1 < outlen && s[i] != '\0'; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = '\0';
}

/* ---- Rules ------------------------------------------------------------- */

enum certs_reason certs_rule_uri(X509 *leaf, char *id, size_t idlen, char *err, size_t errlen)
{
    char uri[CERTS_SPIFFE_ID_MAX + 1], shown[160];
    const char *td;
    size_t n, tdlen;
    int nul, count;

    count = uri_sans(leaf, uri, sizeof(uri), &n, &nul);
    if (count < 0) {
        certs_errf(err, errlen, "subjectAltName extension is malformed or repeated");
        return CERTS_R_NO_URI_SAN;
    }
    if (count == 0) {
        certs_errf(err, errlen, "certificate has no URI SAN");
        return CERTS_R_NO_URI_SAN;
    }
    if (count > 1) {
        certs_errf(err, errlen, "certificate has %d URI SANs, an SVID has exactly one", count);
        return CERTS_R_MULTIPLE_URI_SANS;
    }
    printable(uri, shown, sizeof(shown));
    if (nul || n > CERTS_SPIFFE_ID_MAX || !certs_spiffe_id_valid(uri, n)) {
        certs_errf(err, errlen, "URI SAN '%s%s' is not a valid SPIFFE ID", shown,
                   n > 128 ? "..." : "");
        return CERTS_R_BAD_SPIFFE_ID;
    }
    /* X509-SVID spec 3.1: a leaf's ID has a path; the bare trust domain ID
     * names the domain, not a workload. */
    (void)certs_spiffe_trust_domain(uri, n, &td, &tdlen);
    if (SPIFFE_SCHEME_LEN + tdlen == n) {
        certs_errf(err, errlen, "SPIFFE ID '%s' has no path, a leaf SVID needs one", shown);
        return CERTS_R_BAD_SPIFFE_ID;
    }
    if (id != NULL && idlen > 0)
        snprintf(id, idlen, "%s", uri);
    return CERTS_R_OK;
}

enum certs_reason certs_rule_not_ca(X509 *leaf, char *err, size_t errlen)
{
    BASIC_CONSTRAINTS *bc;
    int crit = -1, ca;

    bc = X509_get_ext_d2i(leaf, NID_basic_constraints, &crit, NULL);
    if (bc == NULL) {
        ERR_clear_error();
        if (crit == -1)
            return CERTS_R_OK; /* absent: not a CA */
        certs_errf(err, errlen, "basicConstraints extension is malformed or repeated");
        return CERTS_R_LEAF_IS_CA;
    }
    ca = bc->ca != 0;
    BASIC_CONSTRAINTS_free(bc);
    if (ca) {
        certs_errf(err, errlen, "leaf certificate has basicConstraints CA:TRUE");
        return CERTS_R_LEAF_IS_CA;
    }
    return CERTS_R_OK;
}

enum certs_reason certs_rule_key_usage(X509 *leaf, char *err, size_t errlen)
{
    ASN1_BIT_STRING *ku;
    int crit = -1, ds, kcs, crl;

    ku = X509_get_ext_d2i(leaf, NID_key_usage, &crit, NULL);
    if (ku == NULL) {
        ERR_clear_error();
        /* Absent keyUsage would allow every use; X509-SVID 4.3 wants
         * digitalSignature stated, so absence is refused. */
        certs_errf(err, errlen,
                   crit == -1 ? "keyUsage extension missing"
                              : "keyUsage extension is malformed or repeated");
        return CERTS_R_BAD_KEY_USAGE;
    }
    ds = ASN1_BIT_STRING_get_bit(ku, 0);
    kcs = ASN1_BIT_STRING_get_bit(ku, 5);
    crl = ASN1_BIT_STRING_get_bit(ku, 6);
    ASN1_BIT_STRING_free(ku);
    if (!ds || kcs || crl) {
        certs_errf(err, errlen, "keyUsage%s%s%s", ds ? "" : " lacks digitalSignature",
                   kcs ? " has keyCertSign" : "", crl ? " has cRLSign" : "");
        return CERTS_R_BAD_KEY_USAGE;
    }
    return CERTS_R_OK;
}

enum certs_reason certs_rule_window(X509 *leaf, int64_t now, char *err, size_t errlen)
{
    int64_t nb, na;
    char t[32];

    if (certs_cert_validity(leaf, &nb, &na) < 0) {
        ERR_clear_error();
        certs_errf(err, errlen, "validity period is unreadable");
        return CERTS_R_EXPIRED;
    }
    if (now < nb) {
        certs_fmt_time(nb, t, sizeof(t));
        certs_errf(err, errlen, "not valid before %s (%llds from now)", t, (long long)(nb - now));
        return CERTS_R_NOT_YET_VALID;
    }
    /* notAfter itself counts as expired, as in OpenSSL's X509_cmp_time(),
     * so this rule and path validation never disagree about the instant. */
    if (now >= na) {
        certs_fmt_time(na, t, sizeof(t));
        certs_errf(err, errlen, "expired at %s (%llds ago)", t, (long long)(now - na));
        return CERTS_R_EXPIRED;
    }
    return CERTS_R_OK;
}

enum certs_reason certs_rule_lifetime(X509 *leaf, int64_t max_lifetime_s, char *err, size_t errlen)
{
    int64_t nb, na;

    if (max_lifetime_s <= 0)
        return CERTS_R_OK;
    if (certs_cert_validity(leaf, &nb, &na) < 0) {
        ERR_clear_error();
        certs_errf(err, errlen, "validity period is unreadable");
        return CERTS_R_LIFETIME_TOO_LONG;
    }
    if (na - nb > max_lifetime_s) {
        certs_errf(err, errlen, "lifetime %llds exceeds the maximum %llds", (long long)(na - nb),
                   (long long)max_lifetime_s);
        return CERTS_R_LIFETIME_TOO_LONG;
    }
    return CERTS_R_OK;
}

/* ---- Check and inspect ------------------------------------------------- */

static enum certs_reason verify_chain(X509_STORE *store, X509 *leaf, STACK_OF(X509) * chain,
                                      int64_t now, char *err, size_t errlen)
{
    X509_STORE_CTX *ctx;
    X509_VERIFY_PARAM *param;
    enum certs_reason r = CERTS_R_INTERNAL;

    if (chain != NULL && sk_X509_num(chain) > CERTS_MAX_PEER_CERTS) {
        certs_errf(err, errlen, "%d certificates presented; at most %d are accepted",
                   sk_X509_num(chain), CERTS_MAX_PEER_CERTS);
        return CERTS_R_UNTRUSTED_CHAIN;
    }
    ctx = X509_STORE_CTX_new();
    if (ctx == NULL || X509_STORE_CTX_init(ctx, store, leaf, chain) != 1) {
        certs_ossl_err(err, errlen, "cannot set up chain verification");
        goto done;
    }
    param = X509_STORE_CTX_get0_param(ctx);
    /* Anchors must be self-signed roots from the bundle: a trusted
     * intermediate alone must not end a path. */
    X509_VERIFY_PARAM_clear_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    X509_VERIFY_PARAM_set_time(param, (time_t)now);
    X509_VERIFY_PARAM_set_depth(param, CERTS_MAX_CHAIN_DEPTH);
    if (X509_verify_cert(ctx) == 1) {
        r = CERTS_R_OK;
    } else {
        int e = X509_STORE_CTX_get_error(ctx);
        certs_errf(err, errlen, "certificate at depth %d: %s", X509_STORE_CTX_get_error_depth(ctx),
                   X509_verify_cert_error_string(e));
        r = CERTS_R_UNTRUSTED_CHAIN;
    }
done:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    return r;
}

enum certs_reason certs_svid_check(const struct certs_trust *t, X509 *leaf, STACK_OF(X509) * chain,
                                   int64_t now_unix_s, int64_t max_lifetime_s, char *id_out,
                                   size_t idlen, char *err, size_t errlen)
{
    char id[CERTS_SPIFFE_ID_MAX + 1];
    const char *td;
    size_t tdlen, n;
    X509_STORE *store;
    enum certs_reason r;

    if (id_out != NULL && idlen > 0)
        id_out[0] = '\0';
    certs_errf(err, errlen, "%s", "");
    if (leaf == NULL) {
        certs_errf(err, errlen, "no certificate presented");
        return CERTS_R_NO_CERTIFICATE;
    }
    r = certs_rule_uri(leaf, id, sizeof(id), err, errlen);
    if (r != CERTS_R_OK)
        return r;
    n = strlen(id);
    if (certs_spiffe_trust_domain(id, n, &td, &tdlen) != 0) {
        td = "";
        tdlen = 0;
    }
    store = t != NULL ? certs_trust_store(t, td, tdlen) : NULL;
    if (store == NULL) {
        certs_errf(err, errlen, "no trust bundle for trust domain '%.*s'", (int)tdlen, td);
        return CERTS_R_UNKNOWN_TRUST_DOMAIN;
    }
    if ((r = certs_rule_not_ca(leaf, err, errlen)) != CERTS_R_OK ||
        (r = certs_rule_key_usage(leaf, err, errlen)) != CERTS_R_OK ||
        (r = certs_rule_window(leaf, now_unix_s, err, errlen)) != CERTS_R_OK ||
        (r = certs_rule_lifetime(leaf, max_lifetime_s, err, errlen)) != CERTS_R_OK)
        return r;
    r = verify_chain(store, leaf, chain, now_unix_s, err, errlen);
    if (r != CERTS_R_OK)
        return r;
    if (id_out != NULL && idlen > 0) {
        if (n >= idlen) {
            certs_errf(err, errlen, "SPIFFE ID buffer too small (%zu bytes, need %zu)", idlen,
                       n + 1);
            return CERTS_R_INTERNAL;
        }
        memcpy(id_out, id, n + 1);
    }
    certs_errf(err, errlen, "%s", "");
    return CERTS_R_OK;
}

int certs_svid_inspect(X509 *leaf, int64_t now_unix_s, int64_t max_lifetime_s,
                       enum certs_reason *reasons, size_t max, size_t *n)
{
    enum certs_reason r[5];
    char scratch[256];
    size_t k = 0;

    *n = 0;
    if (leaf == NULL)
        return CERTS_ERR_INVALID;
    r[0] = certs_rule_uri(leaf, NULL, 0, scratch, sizeof(scratch));
    r[1] = certs_rule_not_ca(leaf, scratch, sizeof(scratch));
    r[2] = certs_rule_key_usage(leaf, scratch, sizeof(scratch));
    r[3] = certs_rule_window(leaf, now_unix_s, scratch, sizeof(scratch));
    r[4] = certs_rule_lifetime(leaf, max_lifetime_s, scratch, sizeof(scratch));
    for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++) {
        if (r[i] == CERTS_R_OK)
            continue;
        if (k < max && reasons != NULL)
            reasons[k] = r[i];
        k++;
    }
    *n = k;
    return 0;
}
