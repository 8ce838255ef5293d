/*
 * fuzz_jwks.c - certs_trust_add() (certs/trust.c) with the input as a trust
 * bundle for "example.org": PEM certificates, or a SPIFFE bundle (JWKS)
 * when the first non-blank byte is '{'. Seeds cover both.
 *
 * Invariants:
 *   - success: exactly one trust domain, "example.org", with at least one
 *     CA certificate and a store; unknown domains give no store;
 *   - failure: a documented CERTS_ERR_* code, an error text, and the set
 *     left unchanged (all or nothing: still empty);
 *   - adding the same input again to a set that already holds it merges:
 *     it succeeds again and the count of domains stays 1 (the count of
 *     certificates may not drop).
 */
#include <string.h>

#include "certs.h"
#include "fuzz_common.h"

static const char td[] = "example.org";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct certs_trust *t = NULL;
    char err[512] = "";
    size_t ncerts = 0, ncerts2 = 0;
    const char *name;
    int rc;

    FUZZ_CHECK(certs_trust_new(&t) == 0 && t != NULL);
    rc = certs_trust_add(t, td, strlen(td), (const char *)data, size, err, sizeof(err));
    if (rc != 0) {
        FUZZ_CHECKF(rc == CERTS_ERR_PARSE || rc == CERTS_ERR_NOT_FOUND || rc == CERTS_ERR_TOO_LARGE ||
                        rc == CERTS_ERR_NOMEM,
                    "rc %d (%s)", rc, err);
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(certs_trust_count(t) == 0);
        FUZZ_CHECK(certs_trust_store(t, td, strlen(td)) == NULL);
        FUZZ_CHECK(certs_trust_domain_at(t, 0, NULL) == NULL);
        certs_trust_unref(t);
        return 0;
    }
    FUZZ_CHECK(certs_trust_count(t) == 1);
    name = certs_trust_domain_at(t, 0, &ncerts);
    FUZZ_CHECK(name != NULL && strcmp(name, td) == 0);
    FUZZ_CHECK(ncerts >= 1);
    FUZZ_CHECK(certs_trust_domain_at(t, 1, NULL) == NULL);
    FUZZ_CHECK(certs_trust_store(t, td, strlen(td)) != NULL);
    FUZZ_CHECK(certs_trust_store(t, "example.com", 11) == NULL);
    /* Prefix of the name is another domain. */
    FUZZ_CHECK(certs_trust_store(t, td, strlen(td) - 1) == NULL);

    rc = certs_trust_add(t, td, strlen(td), (const char *)data, size, err, sizeof(err));
    FUZZ_CHECKF(rc == 0, "second add of the same bundle: %d (%s)", rc, err);
    FUZZ_CHECK(certs_trust_count(t) == 1);
    FUZZ_CHECK(certs_trust_domain_at(t, 0, &ncerts2) != NULL && ncerts2 >= ncerts);

    /* References: one more, one less, still alive. */
    FUZZ_CHECK(certs_trust_ref(t) == t);
    certs_trust_unref(t);
    FUZZ_CHECK(certs_trust_count(t) == 1);
    certs_trust_unref(t);
    return 0;
}
