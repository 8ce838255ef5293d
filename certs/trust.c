/*
 * trust.c - trust bundles: trust domain -> CA certificates (an X509_STORE
 * per domain), loaded from PEM files or SPIFFE bundles (SPIFFE Trust Domain
 * and Bundle spec 4: a JWKS whose "x509-svid" keys carry one DER
 * certificate each in "x5c").
 *
 * A struct certs_trust is built on one thread and then only read; workers
 * share it through an atomic reference count (STYLE.md "Threads"). The
 * number of trust domains is small (a handful of federated domains), so a
 * linear scan beats a hash table here.
 */
#include "certs_int.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

struct trust_dom {
    char *td;             /* NUL-terminated trust domain name */
    STACK_OF(X509) * cas; /* owned; kept so a later add can rebuild the store */
    X509_STORE *store;    /* owned; built from cas */
};

struct certs_trust {
    atomic_int refs;
    struct trust_dom *doms;
    size_t n, cap;
};

int certs_trust_new(struct certs_trust **out)
{
    struct certs_trust *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return CERTS_ERR_NOMEM;
    atomic_init(&t->refs, 1);
    *out = t;
    return 0;
}

struct certs_trust *certs_trust_ref(struct certs_trust *t)
{
    if (t != NULL)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void certs_trust_unref(struct certs_trust *t)
{
    if (t == NULL)
        return;
    /* acq_rel: the last owner must see every other owner's reads finished
     * before it frees (STYLE.md "Threads"). */
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->doms[i].td);
        sk_X509_pop_free(t->doms[i].cas, X509_free);
        X509_STORE_free(t->doms[i].store);
    }
    free(t->doms);
    free(t);
}

static struct trust_dom *find_dom(const struct certs_trust *t, const char *td, size_t tdlen)
{
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->doms[i].td) == tdlen && memcmp(t->doms[i].td, td, tdlen) == 0)
            return &t->doms[i];
    return NULL;
}

X509_STORE *certs_trust_store(const struct certs_trust *t, const char *td, size_t tdlen)
{
    struct trust_dom *d;
    if (t == NULL || td == NULL)
        return NULL;
    d = find_dom(t, td, tdlen);
    return d != NULL ? d->store : NULL;
}

size_t certs_trust_count(const struct certs_trust *t)
{
    return t != NULL ? t->n : 0;
}

const char *certs_trust_domain_at(const struct certs_trust *t, size_t i, size_t *ncerts)
{
    if (t == NULL || i >= t->n)
        return NULL;
    if (ncerts != NULL)
        *ncerts = (size_t)sk_X509_num(t->doms[i].cas);
    return t->doms[i].td;
}

/* ---- Parsing ------------------------------------------------------------ */

/* One "x509-svid" JWK: "x5c" must hold exactly one base64 DER certificate
 * (bundle spec 4.2.2), decoded without trailing bytes. */
static int jwk_cert(const struct certs_json *j, int key, int idx, STACK_OF(X509) * out, char *err,
                    size_t errlen)
{
    const unsigned char *p;
    unsigned char *der = NULL;
    char *b64 = NULL;
    X509 *x = NULL;
    long n;
    int x5c, rc = CERTS_ERR_PARSE;

    x5c = certs_json_get(j, key, "x5c");
    if (!certs_json_is_arr(j, x5c) || j->tok[x5c].size != 1 || !certs_json_is_str(j, x5c + 1)) {
        certs_json_errf(j, x5c >= 0 ? x5c : key, err, errlen,
                        "keys[%d]: \"x5c\" must be an array of exactly one string", idx);
        return CERTS_ERR_PARSE;
    }
    b64 = certs_json_strdup(j, x5c + 1);
    if (b64 == NULL) {
        certs_json_errf(j, x5c + 1, err, errlen, "keys[%d]: bad string in \"x5c\"", idx);
        return CERTS_ERR_PARSE;
    }
    der = malloc(strlen(b64) * 3 / 4 + 3);
    if (der == NULL) {
        rc = CERTS_ERR_NOMEM;
        certs_errf(err, errlen, "out of memory");
        goto fail;
    }
    n = certs_b64_decode(b64, strlen(b64), der, strlen(b64) * 3 / 4 + 3);
    if (n <= 0) {
        certs_json_errf(j, x5c + 1, err, errlen, "keys[%d]: \"x5c\" is not base64", idx);
        goto fail;
    }
    p = der;
    x = d2i_X509(NULL, &p, n);
    if (x == NULL || p != der + n) {
        ERR_clear_error();
        certs_json_errf(j, x5c + 1, err, errlen, "keys[%d]: \"x5c\" is not a DER certificate", idx);
        goto fail;
    }
    if (!sk_X509_push(out, x)) {
        rc = CERTS_ERR_NOMEM;
        certs_errf(err, errlen, "out of memory");
        goto fail;
    }
    free(der);
    free(b64);
    return 0;
fail:
    X509_free(x);
    free(der);
    free(b64);
    return rc;
}

static int parse_jwks(const char *data, size_t len, STACK_OF(X509) * out, char *err, size_t errlen)
{
    struct certs_json j;
    char use[32];
    int keys, idx = 0, rc = 0;

    if (certs_json_parse(&j, data, len, 0, err, errlen) < 0)
        return CERTS_ERR_PARSE;
    if (!certs_json_is_obj(&j, 0)) {
        certs_json_errf(&j, 0, err, errlen, "SPIFFE bundle must be a JSON object");
        rc = CERTS_ERR_PARSE;
        goto done;
    }
    keys = certs_json_get(&j, 0, "keys");
    if (!certs_json_is_arr(&j, keys)) {
        certs_json_errf(&j, keys >= 0 ? keys : 0, err, errlen, "\"keys\" must be an array");
        rc = CERTS_ERR_PARSE;
        goto done;
    }
    for (int k = certs_json_first(&j, keys); k > 0; k = certs_json_next_elem(&j, k), idx++) {
        int u;
        if (!certs_json_is_obj(&j, k)) {
            certs_json_errf(&j, k, err, errlen, "keys[%d]: must be an object", idx);
            rc = CERTS_ERR_PARSE;
            goto done;
        }
        /* Keys for other uses (jwt-svid, or ones we do not know) are not
         * ours to judge: skip them, as the bundle spec asks. */
        u = certs_json_get(&j, k, "use");
        if (certs_json_str(&j, u, use, sizeof(use)) < 0 || strcmp(use, "x509-svid") != 0)
            continue;
        rc = jwk_cert(&j, k, idx, out, err, errlen);
        if (rc < 0)
            goto done;
    }
done:
    certs_json_clear(&j);
    return rc;
}

static int parse_bundle(const char *data, size_t len, STACK_OF(X509) * *out, char *err,
                        size_t errlen)
{
    STACK_OF(X509) * sk;
    size_t i = 0;
    int rc;

    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i == len || data[i] != '{')
        return certs_pem_certs(data, len, out, err, errlen);
    sk = sk_X509_new_null();
    if (sk == NULL) {
        certs_errf(err, errlen, "out of memory");
        return CERTS_ERR_NOMEM;
    }
    rc = parse_jwks(data, len, sk, err, errlen);
    if (rc == 0 && sk_X509_num(sk) == 0) {
        certs_errf(err, errlen, "SPIFFE bundle has no \"x509-svid\" key");
        rc = CERTS_ERR_NOT_FOUND;
    }
    if (rc < 0) {
        sk_X509_pop_free(sk, X509_free);
        return rc;
    }
    *out = sk;
    return 0;
}

/* ---- Adding -------------------------------------------------------------- */

static X509_STORE *build_store(STACK_OF(X509) * cas)
{
    X509_STORE *s = X509_STORE_new();
    if (s == NULL)
        return NULL;
    for (int i = 0; i < sk_X509_num(cas); i++) {
        /* Takes its own reference; a duplicate is accepted as a no-op. */
        if (X509_STORE_add_cert(s, sk_X509_value(cas, i)) != 1) {
            X509_STORE_free(s);
            return NULL;
        }
    }
    return s;
}

/* Merges the certificates of `add` (taken over, freed in all cases) into
 * trust domain td of t; all or nothing. */
static int add_certs(struct certs_trust *t, const char *td, size_t tdlen, STACK_OF(X509) * add,
                     char *err, size_t errlen)
{
    STACK_OF(X509) *all = NULL;
    X509_STORE *store = NULL;
    struct trust_dom *d;
    char *name = NULL;
    int rc = CERTS_ERR_NOMEM;

    /* Build the merged set beside the old one and swap only when complete,
     * so a failure leaves t as it was. */
    d = find_dom(t, td, tdlen);
    all = d != NULL ? sk_X509_dup(d->cas) : sk_X509_new_null();
    if (all == NULL)
        goto fail;
    for (int i = 0; i < sk_X509_num(all); i++)
        X509_up_ref(sk_X509_value(all, i)); /* sk_X509_dup copies pointers only */
    while (sk_X509_num(add) > 0) {
        X509 *x = sk_X509_shift(add);
        if (!sk_X509_push(all, x)) {
            X509_free(x);
            goto fail;
        }
    }
    store = build_store(all);
    if (store == NULL)
        goto fail;
    if (d == NULL) {
        if (t->n == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 4;
            struct trust_dom *nd = realloc(t->doms, cap * sizeof(*nd));
            if (nd == NULL)
                goto fail;
            t->doms = nd;
            t->cap = cap;
        }
        name = strndup(td, tdlen);
        if (name == NULL)
            goto fail;
        d = &t->doms[t->n++];
        d->td = name;
        d->cas = NULL;
        d->store = NULL;
    }
    sk_X509_pop_free(d->cas, X509_free);
    X509_STORE_free(d->store);
    d->cas = all;
    d->store = store;
    sk_X509_free(add);
    return 0;
fail:
    certs_ossl_err(err, errlen, "out of memory");
    X509_STORE_free(store);
    sk_X509_pop_free(all, X509_free);
    sk_X509_pop_free(add, X509_free);
    return rc;
}

int certs_trust_add(struct certs_trust *t, const char *td, size_t tdlen, const char *data,
                    size_t len, char *err, size_t errlen)
{
    STACK_OF(X509) *add = NULL;
    int rc;

    if (t == NULL || td == NULL || data == NULL || !certs_trust_domain_valid(td, tdlen)) {
        certs_errf(err, errlen, "invalid trust domain name");
        return CERTS_ERR_INVALID;
    }
    if (len > CERTS_MAX_FILE) {
        certs_errf(err, errlen, "bundle is %zu bytes, limit %d", len, CERTS_MAX_FILE);
        return CERTS_ERR_TOO_LARGE;
    }
    rc = parse_bundle(data, len, &add, err, errlen);
    if (rc < 0)
        return rc;
    return add_certs(t, td, tdlen, add, err, errlen);
}

int certs_trust_add_der(struct certs_trust *t, const char *td, size_t tdlen,
                        const unsigned char *der, size_t len, char *err, size_t errlen)
{
    STACK_OF(X509) *add = NULL;
    int rc;

    if (t == NULL || td == NULL || der == NULL || !certs_trust_domain_valid(td, tdlen)) {
        certs_errf(err, errlen, "invalid trust domain name");
        return CERTS_ERR_INVALID;
    }
    if (len > CERTS_MAX_FILE) {
        certs_errf(err, errlen, "bundle is %zu bytes, limit %d", len, CERTS_MAX_FILE);
        return CERTS_ERR_TOO_LARGE;
    }
    rc = certs_der_certs(der, len, CERTS_MAX_BUNDLE_CERTS, &add, err, errlen);
    if (rc < 0)
        return rc;
    return add_certs(t, td, tdlen, add, err, errlen);
}

int certs_trust_add_file(struct certs_trust *t, const char *td, const char *path, char *err,
                         size_t errlen)
{
    char detail[512];
    char *data = NULL;
    size_t len;
    int rc;

    if (td == NULL || path == NULL) {
        certs_errf(err, errlen, "missing trust domain or path");
        return CERTS_ERR_INVALID;
    }
    rc = certs_read_file(path, CERTS_MAX_FILE, &data, &len, err, errlen);
    if (rc < 0)
        return rc; /* err already names the path */
    detail[0] = '\0';
    rc = certs_trust_add(t, td, strlen(td), data, len, detail, sizeof(detail));
    if (rc < 0)
        certs_errf(err, errlen, "%s: %s", path, detail);
    free(data);
    return rc;
}

int certs_trust_load(struct certs_trust **out, const struct certs_trust_source *src, size_t n,
                     char *err, size_t errlen)
{
    struct certs_trust *t = NULL;
    int rc;

    rc = certs_trust_new(&t);
    if (rc < 0) {
        certs_errf(err, errlen, "out of memory");
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        rc = certs_trust_add_file(t, src[i].trust_domain, src[i].path, err, errlen);
        if (rc < 0) {
            certs_trust_unref(t);
            return rc;
        }
    }
    *out = t;
    return 0;
}
