/*
 * fuzz_wlapi.c - the Workload API message path (proxy/server/wlapi_msg.c):
 * px_wlapi_msg_decode() on the input as an X509SVIDResponse, then, for every
 * SVID, the choice by hint and px_wlapi_identity_build() at a fixed time
 * inside the seeds' validity (2030-01-01), so replays do not change verdict
 * as the clock moves.
 *
 * Invariants:
 *   - decode: success, or -1 with an error starting with a documented reason
 *     (too_large, bad_message, internal_error); over 4 MiB never decodes;
 *     a decoded message has at most 64 SVIDs and 64 federated bundles;
 *   - select: no hint gives 0 when there is an SVID and -1 (no_svid)
 *     otherwise; the hint of SVID k selects an SVID with that hint, at k or
 *     before;
 *   - build: success gives a key pair whose SPIFFE ID is the message's
 *     spiffe_id field, and 1 + (federated bundles) trust domains at most,
 *     the SVID's own among them; failure leaves nothing behind and says why;
 *   - over the replayed corpus: some SVID was accepted and some refused (so
 *     a decoder that takes nothing, or everything, fails the replay).
 */
#include <string.h>

#include "certs.h"
#include "fuzz_common.h"
#include "wlapi.h"

#define FIXED_NOW 1893456000 /* 2030-01-01T00:00:00Z */

static size_t built_ok, built_refused;

int fuzz_replay_done(size_t ninputs)
{
    if (built_ok == 0 || built_refused == 0) {
        fprintf(stderr, "fuzz_wlapi: over %zu inputs, %zu SVIDs accepted and %zu refused; "
                        "the seeds have both\n",
                ninputs, built_ok, built_refused);
        return 1;
    }
    return 0;
}

static int starts(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct px_wlapi_msg *m = NULL;
    char err[800] = "";
    size_t n;

    if (px_wlapi_msg_decode(&m, data, size, err, sizeof(err)) != 0) {
        FUZZ_CHECK(m == NULL);
        FUZZ_CHECKF(starts(err, "too_large:") || starts(err, "bad_message:") ||
                        starts(err, "internal_error:"),
                    "decode error: %s", err);
        return 0;
    }
    FUZZ_CHECK(size <= PX_WLAPI_MAX_MSG);
    n = px_wlapi_msg_nsvids(m);
    FUZZ_CHECK(n <= PX_WLAPI_MAX_SVIDS);
    FUZZ_CHECK(px_wlapi_msg_nfederated(m) <= PX_WLAPI_MAX_FEDERATED);
    err[0] = '\0';
    if (n == 0) {
        FUZZ_CHECK(px_wlapi_msg_select(m, NULL, err, sizeof(err)) == -1);
        FUZZ_CHECK(starts(err, "no_svid:"));
    } else {
        FUZZ_CHECK(px_wlapi_msg_select(m, NULL, err, sizeof(err)) == 0);
    }
    for (size_t i = 0; i < n; i++) {
        struct px_wlapi_identity id;
        const char *hint = px_wlapi_msg_hint(m, i);
        int k;
        if (hint[0] != '\0') {
            k = px_wlapi_msg_select(m, hint, err, sizeof(err));
            FUZZ_CHECK(k >= 0 && (size_t)k <= i);
            FUZZ_CHECK(strcmp(px_wlapi_msg_hint(m, (size_t)k), hint) == 0);
        }
        err[0] = '\0';
        if (px_wlapi_identity_build(&id, m, i, FIXED_NOW, err, sizeof(err)) != 0) {
            FUZZ_CHECK(id.keypair == NULL && id.trust == NULL);
            FUZZ_CHECK(err[0] != '\0' && strchr(err, ':') != NULL);
            built_refused++;
            continue;
        }
        FUZZ_CHECK(strcmp(certs_keypair_spiffe_id(id.keypair), px_wlapi_msg_spiffe_id(m, i)) ==
                   0);
        FUZZ_CHECK(certs_trust_count(id.trust) >= 1);
        FUZZ_CHECK(certs_trust_count(id.trust) <= 1 + px_wlapi_msg_nfederated(m));
        {
            const char *sid = certs_keypair_spiffe_id(id.keypair), *td;
            size_t tdlen;
            FUZZ_CHECK(certs_spiffe_trust_domain(sid, strlen(sid), &td, &tdlen) == 0);
            FUZZ_CHECK(certs_trust_store(id.trust, td, tdlen) != NULL);
        }
        px_wlapi_identity_clear(&id);
        built_ok++;
    }
    px_wlapi_msg_free(m);
    return 0;
}
