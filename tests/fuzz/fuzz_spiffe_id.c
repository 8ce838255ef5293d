/*
 * fuzz_spiffe_id.c - certs_spiffe_id_valid() and friends (certs/svid.c).
 *
 * Invariants for an accepted ID (the brief's list, then more):
 *   - "spiffe://" prefix, lowercase trust domain, no "//" after the
 *     authority, no trailing '/';
 *   - at most CERTS_SPIFFE_ID_MAX bytes, no NUL; the trust domain is
 *     non-empty, at most CERTS_TRUST_DOMAIN_MAX bytes and accepted by
 *     certs_trust_domain_valid(); certs_spiffe_trust_domain() returns it as
 *     a range inside the input; no "." or ".." segment.
 * And the other way round: an independent, deliberately naive reading of
 * the rules in certs.h must agree with the library on every input (a
 * differential check, so an ID the library wrongly refuses shows up too).
 * A refused input must make certs_spiffe_trust_domain() fail.
 */
#include <string.h>

#include "certs.h"
#include "fuzz_common.h"

static int td_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static int seg_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '_';
}

/* The rules of certs.h, written from the comment alone. */
static int reference_valid(const char *s, size_t len)
{
    size_t i = 9, td_start = 9;
    if (len > CERTS_SPIFFE_ID_MAX || len < 10 || memcmp(s, "spiffe://", 9) != 0)
        return 0;
    while (i < len && s[i] != '/') {
        if (!td_char((unsigned char)s[i]))
            return 0;
        i++;
    }
    if (i == td_start || i - td_start > CERTS_TRUST_DOMAIN_MAX)
        return 0;
    while (i < len) { /* s[i] == '/' */
        size_t start = ++i;
        while (i < len && s[i] != '/') {
            if (!seg_char((unsigned char)s[i]))
                return 0;
            i++;
        }
        if (i == start)
            return 0; /* empty segment: "//" or trailing '/' */
        if ((i - start == 1 && s[start] == '.') ||
            (i - start == 2 && s[start] == '.' && s[start + 1] == '.'))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exact-size copy: the library must not read past len. */
    char *s = calloc(size > 0 ? size : 1, 1);
    const char *td = NULL;
    size_t tdlen = 0;
    int valid, ref;

    FUZZ_CHECK(s != NULL);
    if (size > 0)
        memcpy(s, data, size);
    valid = certs_spiffe_id_valid(s, size);
    ref = reference_valid(s, size);
    FUZZ_CHECK(valid == 0 || valid == 1);
    FUZZ_CHECKF(valid == ref, "library says %d, rules say %d for '%.*s'", valid, ref,
                (int)(size > 200 ? 200 : size), s);

    if (valid) {
        FUZZ_CHECK(size > 9 && memcmp(s, "spiffe://", 9) == 0);
        FUZZ_CHECK(size <= CERTS_SPIFFE_ID_MAX);
        FUZZ_CHECK(memchr(s, '\0', size) == NULL);
        FUZZ_CHECK(s[size - 1] != '/');
        for (size_t i = 9; i + 1 < size; i++)
            FUZZ_CHECK(!(s[i] == '/' && s[i + 1] == '/'));
        FUZZ_CHECK(certs_spiffe_trust_domain(s, size, &td, &tdlen) == 0);
        FUZZ_CHECK(td == s + 9 && tdlen >= 1 && tdlen <= CERTS_TRUST_DOMAIN_MAX);
        FUZZ_CHECK(9 + tdlen == size || s[9 + tdlen] == '/');
        FUZZ_CHECK(memchr(td, '/', tdlen) == NULL);
        for (size_t i = 0; i < tdlen; i++)
            FUZZ_CHECKF(!(td[i] >= 'A' && td[i] <= 'Z'), "uppercase trust domain '%.*s'",
                        (int)tdlen, td);
        FUZZ_CHECK(certs_trust_domain_valid(td, tdlen) == 1);
        /* The ID of the trust domain itself is valid too. */
        FUZZ_CHECK(certs_spiffe_id_valid(s, 9 + tdlen) == 1);
    } else {
        FUZZ_CHECK(certs_spiffe_trust_domain(s, size, &td, &tdlen) == CERTS_ERR_INVALID);
    }

    /* The trust-domain check on the raw bytes must also agree with the rules:
     * "spiffe://" + bytes with no '/' is valid exactly when the bytes are a
     * valid trust domain. */
    if (size <= CERTS_SPIFFE_ID_MAX - 9 && memchr(s, '/', size) == NULL) {
        char *id = malloc(size + 9);
        int tdv = certs_trust_domain_valid(s, size);
        FUZZ_CHECK(id != NULL);
        memcpy(id, "spiffe://", 9);
        if (size > 0)
            memcpy(id + 9, s, size);
        FUZZ_CHECKF(tdv == certs_spiffe_id_valid(id, size + 9), "trust domain '%.*s'",
                    (int)(size > 200 ? 200 : size), s);
        free(id);
    }
    free(s);
    return 0;
}
