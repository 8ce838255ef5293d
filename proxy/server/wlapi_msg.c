/*
 * wlapi_msg.c - Workload API messages (wlapi.h): an X509SVIDResponse from
 * the wire into the key pair and trust bundles picket serves with, or a
 * refusal with a reason. Pure: no I/O, no clock, no logging; the daemon
 * logs and counts what comes back.
 *
 * Bounds, because the server is a peer like any other: the message size is
 * checked before decoding; protobuf-c decodes through an allocator with a
 * budget (a message of a million two-byte unknown fields would otherwise
 * cost tens of bytes of structures per byte); the SVID and federated bundle
 * counts are capped; certificates and keys go through the certs/ DER
 * parsers and their caps.
 */
#include "wlapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "certs.h"
#include "workload_api.pb-c.h"

struct px_wlapi_msg {
    X509SVIDResponse *resp;
};

/* ---- a protobuf-c allocator with a budget ------------------------------ */

struct budget {
    size_t used, max;
    int exhausted; /* an allocation was refused */
};

/* Each block carries its size in front, so free can give it back. The
 * header is 16 bytes to keep max_align_t alignment. */
#define HDR 16

static void *budget_alloc(void *data, size_t size)
{
    struct budget *b = data;
    unsigned char *p;
    if (size > b->max || b->max - b->used < HDR + size) {
        b->exhausted = 1;
        return NULL;
    }
    p = malloc(HDR + size);
    if (p == NULL)
        return NULL;
    memcpy(p, &size, sizeof(size));
    b->used += HDR + size;
    return p + HDR;
}

static void budget_free(void *data, void *ptr)
{
    struct budget *b = data;
    unsigned char *p;
    size_t size;
    if (ptr == NULL)
        return;
    p = (unsigned char *)ptr - HDR;
    memcpy(&size, p, sizeof(size));
    b->used -= HDR + size;
    free(p);
}

/* protobuf-c frees an unpacked message through the allocator it was
 * unpacked with; this one is kept beside it. */
struct msg_alloc {
    struct px_wlapi_msg m;
    struct budget b;
    ProtobufCAllocator a;
};

int px_wlapi_msg_decode(struct px_wlapi_msg **out, const uint8_t *msg, size_t len, char *err,
                        size_t errlen)
{
    struct msg_alloc *ma;

    if (len > PX_WLAPI_MAX_MSG) {
        snprintf(err, errlen, "too_large: message of %zu bytes, limit %d", len, PX_WLAPI_MAX_MSG);
        return -1;
    }
    ma = calloc(1, sizeof(*ma));
    if (ma == NULL) {
        snprintf(err, errlen, "internal_error: out of memory");
        return -1;
    }
    ma->b.max = PX_WLAPI_MAX_DECODED;
    ma->a.alloc = budget_alloc;
    ma->a.free = budget_free;
    ma->a.allocator_data = &ma->b;
    ma->m.resp = x509_svidresponse__unpack(&ma->a, len, msg);
    if (ma->m.resp == NULL) {
        if (ma->b.exhausted)
            snprintf(err, errlen, "too_large: message needs more than %d bytes to decode",
                     PX_WLAPI_MAX_DECODED);
        else
            snprintf(err, errlen, "bad_message: not a valid X509SVIDResponse (protobuf)");
        free(ma);
        return -1;
    }
    if (ma->m.resp->n_svids > PX_WLAPI_MAX_SVIDS ||
        ma->m.resp->n_federated_bundles > PX_WLAPI_MAX_FEDERATED) {
        snprintf(err, errlen, "too_large: %zu SVIDs and %zu federated bundles (limits %d, %d)",
                 ma->m.resp->n_svids, ma->m.resp->n_federated_bundles, PX_WLAPI_MAX_SVIDS,
                 PX_WLAPI_MAX_FEDERATED);
        px_wlapi_msg_free(&ma->m);
        return -1;
    }
    *out = &ma->m;
    return 0;
}

void px_wlapi_msg_free(struct px_wlapi_msg *m)
{
    struct msg_alloc *ma = (struct msg_alloc *)m; /* m is its first member */
    if (m == NULL)
        return;
    if (m->resp != NULL)
        x509_svidresponse__free_unpacked(m->resp, &ma->a);
    free(ma);
}

size_t px_wlapi_msg_nsvids(const struct px_wlapi_msg *m)
{
    return m->resp->n_svids;
}

/* protobuf-c gives "" for an absent string field; a string with a NUL
 * byte inside is refused by protobuf-c's UTF-8 check, so these are whole. */
const char *px_wlapi_msg_spiffe_id(const struct px_wlapi_msg *m, size_t i)
{
    return i < m->resp->n_svids && m->resp->svids[i]->spiffe_id ? m->resp->svids[i]->spiffe_id
                                                                   : "";
}

const char *px_wlapi_msg_hint(const struct px_wlapi_msg *m, size_t i)
{
    return i < m->resp->n_svids && m->resp->svids[i]->hint ? m->resp->svids[i]->hint : "";
}

size_t px_wlapi_msg_nfederated(const struct px_wlapi_msg *m)
{
    return m->resp->n_federated_bundles;
}

const char *px_wlapi_msg_federated_key(const struct px_wlapi_msg *m, size_t i)
{
    if (i >= m->resp->n_federated_bundles || m->resp->federated_bundles[i]->key == NULL)
        return "";
    return m->resp->federated_bundles[i]->key;
}

int px_wlapi_msg_select(const struct px_wlapi_msg *m, const char *hint, char *err, size_t errlen)
{
    if (m->resp->n_svids == 0) {
        snprintf(err, errlen, "no_svid: the message holds no SVID");
        return -1;
    }
    if (hint == NULL || hint[0] == '\0')
        return 0;
    for (size_t i = 0; i < m->resp->n_svids; i++)
        if (strcmp(px_wlapi_msg_hint(m, i), hint) == 0)
            return (int)i;
    snprintf(err, errlen, "no_matching_hint: none of the %zu SVIDs has hint \"%.100s\"",
             m->resp->n_svids, hint);
    return -1;
}

/* ---- building the identity --------------------------------------------- */

void px_wlapi_identity_clear(struct px_wlapi_identity *id)
{
    certs_keypair_unref(id->keypair);
    certs_trust_unref(id->trust);
    id->keypair = NULL;
    id->trust = NULL;
}

/* A federated bundle's key: the SPIFFE ID of a trust domain
 * ("spiffe://partner.net", as the spec says), or the bare name as some
 * servers send it. Points td (tdlen bytes) into key. 0 or -1. */
static int federated_td(const char *key, const char **td, size_t *tdlen)
{
    size_t n = strlen(key);
    if (n > 9 && memcmp(key, "spiffe://", 9) == 0) {
        key += 9;
        n -= 9;
    }
    if (!certs_trust_domain_valid(key, n))
        return -1;
    *td = key;
    *tdlen = n;
    return 0;
}

static int add_federated(struct certs_trust *t, const X509SVIDResponse *r, const char *own_td,
                         size_t own_len, char *err, size_t errlen)
{
    char e2[300];
    for (size_t k = 0; k < r->n_federated_bundles; k++) {
        const X509SVIDResponse__FederatedBundlesEntry *fb = r->federated_bundles[k];
        const char *key = fb->key ? fb->key : "", *td;
        size_t tdlen;
        if (federated_td(key, &td, &tdlen) != 0) {
            snprintf(err, errlen, "bad_federated_bundle: key \"%.100s\" is not a trust domain",
                     key);
            return -1;
        }
        if (tdlen == own_len && memcmp(td, own_td, tdlen) == 0) {
            snprintf(err, errlen,
                     "bad_federated_bundle: \"%.100s\" is the SVID's own trust domain", key);
            return -1;
        }
        if (certs_trust_store(t, td, tdlen) != NULL) {
            snprintf(err, errlen, "bad_federated_bundle: trust domain \"%.100s\" appears twice",
                     key);
            return -1;
        }
        if (certs_trust_add_der(t, td, tdlen, fb->value.data, fb->value.len, e2, sizeof(e2)) !=
            0) {
            snprintf(err, errlen, "bad_federated_bundle: %.100s: %s", key, e2);
            return -1;
        }
    }
    return 0;
}

int px_wlapi_identity_build(struct px_wlapi_identity *out, const struct px_wlapi_msg *m, size_t i,
                            int64_t now, char *err, size_t errlen)
{
    const X509SVID *sv;
    const char *id, *td;
    size_t tdlen;
    char e2[512], idbuf[CERTS_SPIFFE_ID_MAX + 1];
    enum certs_reason r;
    int64_t nb, at;

    memset(out, 0, sizeof(*out));
    if (i >= m->resp->n_svids) {
        snprintf(err, errlen, "no_svid: no SVID %zu in the message", i);
        return -1;
    }
    sv = m->resp->svids[i];
    if (certs_keypair_load_der(&out->keypair, sv->x509_svid.data, sv->x509_svid.len,
                               sv->x509_svid_key.data, sv->x509_svid_key.len, now, e2,
                               sizeof(e2)) != 0) {
        snprintf(err, errlen, "%s", e2); /* starts with the certs reason */
        goto fail;
    }
    id = certs_keypair_spiffe_id(out->keypair);
    if (strcmp(id, px_wlapi_msg_spiffe_id(m, i)) != 0) {
        snprintf(err, errlen, "spiffe_id_mismatch: the message says \"%.200s\", the certificate "
                              "\"%.200s\"",
                 px_wlapi_msg_spiffe_id(m, i), id);
        goto fail;
    }
    if (certs_spiffe_trust_domain(id, strlen(id), &td, &tdlen) != 0) {
        snprintf(err, errlen, "bad_spiffe_id: %.200s", id);
        goto fail;
    }
    if (certs_trust_new(&out->trust) != 0) {
        snprintf(err, errlen, "internal_error: out of memory");
        goto fail;
    }
    if (certs_trust_add_der(out->trust, td, tdlen, sv->bundle.data, sv->bundle.len, e2,
                            sizeof(e2)) != 0) {
        snprintf(err, errlen, "bad_bundle: %s", e2);
        goto fail;
    }
    /* The chain must verify to the bundle it came with, or every peer
     * would refuse it. At notBefore when that is ahead of our clock (a
     * fresh SVID seconds early is accepted, as from a file). */
    nb = certs_keypair_not_before(out->keypair);
    at = nb > now ? nb : now;
    r = certs_svid_check(out->trust, certs_keypair_leaf(out->keypair),
                         certs_keypair_chain(out->keypair), at, 0, idbuf, sizeof(idbuf), e2,
                         sizeof(e2));
    if (r != CERTS_R_OK) {
        snprintf(err, errlen, "%s: %s", r == CERTS_R_INTERNAL ? "internal_error" : "untrusted_chain",
                 e2);
        goto fail;
    }
    if (add_federated(out->trust, m->resp, td, tdlen, err, errlen) != 0)
        goto fail;
    return 0;
fail:
    px_wlapi_identity_clear(out);
    return -1;
}
