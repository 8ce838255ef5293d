/*
 * fuzz_b64.c - certs_b64_decode() / certs_b64_encode() (certs/json.c).
 *
 * For an input x that decodes to d:
 *   - d fits the documented bound (len*3/4 + 3) and exact-size buffers
 *     (ASan checks the writes);
 *   - e = encode(d) has the documented length 4*ceil(|d|/3), is
 *     NUL-terminated, and decodes back to d, so decode(encode(decode(x)))
 *     == decode(x);
 *   - uniqueness, which envelope.c relies on to keep signatures and
 *     certificates non-malleable ("every byte string has exactly one
 *     accepted encoding per alphabet"): x with the URL-safe symbols mapped
 *     to the standard ones and its padding stripped equals e with its
 *     padding stripped;
 *   - decode with an output buffer one byte too small fails rather than
 *     truncating.
 * Any input is also encoded and the result must decode back to it.
 */
#include <string.h>

#include "certs.h"
#include "fuzz_common.h"

static void check_roundtrip(const unsigned char *d, size_t dlen, char **enc_out, size_t *elen_out)
{
    size_t cap = 4 * ((dlen + 2) / 3) + 1;
    char *e = malloc(cap);
    size_t elen;
    unsigned char *back;
    long blen;

    FUZZ_CHECK(e != NULL);
    elen = certs_b64_encode(d, dlen, e);
    FUZZ_CHECKF(elen == cap - 1, "encoded %zu bytes to %zu", dlen, elen);
    FUZZ_CHECK(e[elen] == '\0');
    for (size_t i = 0; i < elen; i++)
        FUZZ_CHECK(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
                          e[i]) != NULL);
    back = malloc(elen * 3 / 4 + 3);
    FUZZ_CHECK(back != NULL);
    blen = certs_b64_decode(e, elen, back, elen * 3 / 4 + 3);
    FUZZ_CHECKF(blen >= 0 && (size_t)blen == dlen && (dlen == 0 || memcmp(back, d, dlen) == 0),
                "encode/decode of %zu bytes gave %ld", dlen, blen);
    free(back);
    *enc_out = e;
    *elen_out = elen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *x = (const char *)data;
    size_t cap = size * 3 / 4 + 3;
    unsigned char *d = malloc(cap);
    char *e = NULL, *canon_x = NULL;
    size_t elen = 0;
    long dlen;

    FUZZ_CHECK(d != NULL);
    dlen = certs_b64_decode(x, size, d, cap);
    FUZZ_CHECK(dlen >= -1);
    if (dlen >= 0) {
        size_t xl = size, el;
        unsigned char *tight;

        FUZZ_CHECK((size_t)dlen <= size * 3 / 4);
        check_roundtrip(d, (size_t)dlen, &e, &elen);

        /* Exactly dlen bytes of room suffice; dlen - 1 must fail. */
        tight = malloc(dlen > 0 ? (size_t)dlen : 1);
        FUZZ_CHECK(tight != NULL);
        FUZZ_CHECK(certs_b64_decode(x, size, tight, (size_t)dlen) == dlen);
        FUZZ_CHECK(dlen == 0 || memcmp(tight, d, (size_t)dlen) == 0);
        if (dlen > 0)
            FUZZ_CHECK(certs_b64_decode(x, size, tight, (size_t)dlen - 1) == -1);
        free(tight);

        /* Uniqueness modulo alphabet and optional padding. */
        canon_x = malloc(size + 1);
        FUZZ_CHECK(canon_x != NULL);
        for (size_t i = 0; i < size; i++)
            canon_x[i] = x[i] == '-' ? '+' : x[i] == '_' ? '/' : x[i];
        while (xl > 0 && canon_x[xl - 1] == '=')
            xl--;
        el = elen;
        while (el > 0 && e[el - 1] == '=')
            el--;
        FUZZ_CHECKF(xl == el && memcmp(canon_x, e, el) == 0,
                    "'%.*s' and '%s' decode to the same %ld bytes", (int)(size > 200 ? 200 : size),
                    x, e, dlen);
        free(canon_x);
        free(e);
        e = NULL;
    }
    /* The input as bytes: encode then decode must give it back. */
    check_roundtrip(data, size, &e, &elen);
    free(e);
    free(d);
    return 0;
}
