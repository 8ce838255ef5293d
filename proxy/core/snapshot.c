/*
 * snapshot.c - immutable, refcounted bundles of what a request reads that
 * a reload may change: the config, trust bundles, own SVID and the TLS
 * contexts built from them. The control thread builds a new snapshot and
 * posts it to the workers; connections keep the one they were accepted on
 * until they end, so a rotation never drops a live connection.
 *
 * TLS choices, and why:
 *  - TLS 1.2 and 1.3 only, AEAD ECDHE suites only, no compression, no
 *    renegotiation: the usual hardening.
 *  - No session resumption (no tickets, no cache): the peer's SVID is
 *    checked on every connection. Resumption would let a connection skip
 *    the check that the certificate is still inside its (short) validity
 *    window and under the current trust bundle.
 *  - The peer certificate is verified by our own callback, which applies
 *    the full SVID rules (certs_svid_check) against the trust bundle of the
 *    trust domain named in the certificate, not by OpenSSL's default
 *    chain-to-any-CA check.
 */
#include "px.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "certs.h"
#include "log.h"
#include "metrics.h"
#include "snapshot.h"



static atomic_uint_fast64_t snapshot_gen = 1;

struct px_snapshot *px_snapshot_ref(struct px_snapshot *s)
{
    if (s != NULL)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void px_snapshot_unref(struct px_snapshot *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (s->server_ctx != NULL) {
        for (size_t i = 0; i < s->cfg->nlisteners; i++)
            SSL_CTX_free(s->server_ctx[i]);
        free(s->server_ctx);
    }
    SSL_CTX_free(s->client_ctx);
    certs_trust_unref(s->trust);
    certs_keypair_unref(s->keypair);
    free(s->own_id);
    px_config_free(s->cfg);
    free(s);
}


/* Full SVID validation of the client certificate, instead of OpenSSL's
 * default verification. Runs once per handshake. */
static int verify_peer_cb(X509_STORE_CTX *xs, void *arg)
{
    struct px_snapshot *snap = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct px_conn *c = ssl ? SSL_get_ex_data(ssl, px_ssl_conn_idx) : NULL;
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_untrusted(xs);
    char id[2100], err[256] = "";
    enum certs_reason r;

    if (leaf == NULL || snap->trust == NULL) {
        if (c)
            c->hs_reason = PX_R_NO_CERTIFICATE;
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    r = certs_svid_check(snap->trust, leaf, chain, (int64_t)time(NULL),
                         snap->cfg->identity.max_svid_lifetime_ms / 1000, id, sizeof(id), err,
                         sizeof(err));
    if (r != CERTS_R_OK) {
        if (c != NULL) {
            c->hs_reason = px_reason_from_certs(r);
            free(c->hs_detail);
            c->hs_detail = strdup(err);
        }
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (c != NULL) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        static const char hex[] = "0123456789abcdef";
        char *pid = strdup(id);
        if (pid == NULL) {
            X509_STORE_CTX_set_error(xs, X509_V_ERR_OUT_OF_MEM);
            return 0;
        }
        if (c->peer_id != px_conn_no_peer)
            free(c->peer_id);
        c->peer_id = pid;
        if (X509_digest(leaf, EVP_sha256(), md, &mdlen) == 1) {
            for (unsigned i = 0; i < mdlen && i < 32; i++) {
                c->peer_cert_hash[2 * i] = hex[md[i] >> 4];
                c->peer_cert_hash[2 * i + 1] = hex[md[i] & 15];
            }
            c->peer_cert_hash[64] = '\0';
        }
    }
    return 1;
}

/* Server side of an mTLS connection picket originates (outbound, dispatch,
 * control plane): the full SVID rules, then the SPIFFE ID must be exactly
 * the one this connection expects (SSL ex_data px_ssl_expect_idx). No
 * request is ever sent to a server that fails this. */
static int verify_server_cb(X509_STORE_CTX *xs, void *arg)
{
    struct px_snapshot *snap = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    const char *expect = ssl ? SSL_get_ex_data(ssl, px_ssl_expect_idx) : NULL;
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    char id[2100], err[256];
    enum certs_reason r;

    if (leaf == NULL || snap->trust == NULL || ssl == NULL) {
        if (ssl)
            px_ssl_set_reason(ssl, PX_R_NO_CERTIFICATE);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    r = certs_svid_check(snap->trust, leaf, X509_STORE_CTX_get0_untrusted(xs),
                         (int64_t)time(NULL), snap->cfg->identity.max_svid_lifetime_ms / 1000, id,
                         sizeof(id), err, sizeof(err));
    if (r != CERTS_R_OK) {
        px_ssl_set_reason(ssl, px_reason_from_certs(r));
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (expect == NULL || strcmp(expect, id) != 0) {
        px_ssl_set_reason(ssl, PX_R_SERVER_ID_MISMATCH);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char prefs[][9] = {"\x02h2", "\x08http/1.1"};
    (void)ssl;
    (void)arg;
    for (size_t p = 0; p < 2; p++) {
        for (unsigned i = 0; i < inlen;) {
            unsigned l = in[i];
            if (i + 1 + l > inlen)
                break;
            if (l == prefs[p][0] && memcmp(in + i + 1, prefs[p] + 1, l) == 0) {
                *out = in + i + 1;
                *outlen = (unsigned char)l;
                return SSL_TLSEXT_ERR_OK;
            }
            i += 1 + l;
        }
    }
    /* No ALPN we speak: go on without (HTTP/1.1 by default). */
    return SSL_TLSEXT_ERR_NOACK;
}

static SSL_CTX *server_ctx_new(struct px_snapshot *s, char *err, size_t errlen)
{
    SSL_CTX *ctx = px_tls_ctx_new(TLS_server_method(), err, errlen);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (px_tls_use_keypair(ctx, s->keypair, err, errlen) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, verify_peer_cb, s);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
    return ctx;
}

static SSL_CTX *client_ctx_new(struct px_snapshot *s, char *err, size_t errlen)
{
    SSL_CTX *ctx = px_tls_ctx_new(TLS_client_method(), err, errlen);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (px_tls_use_keypair(ctx, s->keypair, err, errlen) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, verify_server_cb, s);
    return ctx;
}

int px_snapshot_build(struct px_snapshot **out, struct px_config *cfg, char *err, size_t errlen)
{
    return px_snapshot_build_with(out, cfg, NULL, NULL, err, errlen);
}

int px_snapshot_build_with(struct px_snapshot **out, struct px_config *cfg,
                           struct certs_keypair *kp, struct certs_trust *trust, char *err,
                           size_t errlen)
{
    struct px_snapshot *s = calloc(1, sizeof(*s));
    char e2[512];

    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        px_config_free(cfg);
        return -1;
    }
    atomic_init(&s->refs, 1);
    s->gen = atomic_fetch_add(&snapshot_gen, 1);
    s->cfg = cfg;
    if (cfg->identity.source == PX_ID_WORKLOAD_API) {
        /* Handed in by the Workload API source, already checked; none yet
         * means nothing may be served that needs an identity. */
        s->keypair = certs_keypair_ref(kp);
        s->trust = certs_trust_ref(trust);
        s->identity_pending = kp == NULL || trust == NULL;
    } else if (cfg->identity.ntrust_bundles > 0) {
        struct certs_trust_source *src = calloc(cfg->identity.ntrust_bundles, sizeof(*src));
        int rc;
        if (src == NULL)
            goto nomem;
        for (size_t i = 0; i < cfg->identity.ntrust_bundles; i++) {
            src[i].trust_domain = cfg->identity.trust_bundles[i].trust_domain;
            src[i].path = cfg->identity.trust_bundles[i].file;
        }
        rc = certs_trust_load(&s->trust, src, cfg->identity.ntrust_bundles, e2, sizeof(e2));
        free(src);
        if (rc != 0) {
            snprintf(err, errlen, "identity.trust_bundles: %s", e2);
            goto fail;
        }
    }
    if (cfg->identity.source == PX_ID_WORKLOAD_API) {
        s->own_id = strdup(s->keypair != NULL ? certs_keypair_spiffe_id(s->keypair) : "");
    } else if (cfg->identity.cert != NULL && cfg->identity.key != NULL) {
        if (certs_keypair_load(&s->keypair, cfg->identity.cert, cfg->identity.key,
                               (int64_t)time(NULL), e2, sizeof(e2)) != 0) {
            snprintf(err, errlen, "identity: %s", e2);
            goto fail;
        }
        s->own_id = strdup(certs_keypair_spiffe_id(s->keypair));
    } else {
        s->own_id = strdup("");
    }
    if (s->own_id == NULL)
        goto nomem;
    if (s->keypair != NULL && s->trust != NULL) {
        s->client_ctx = client_ctx_new(s, e2, sizeof(e2));
        if (s->client_ctx == NULL) {
            snprintf(err, errlen, "identity: client TLS: %s", e2);
            goto fail;
        }
    }
    s->server_ctx = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*s->server_ctx));
    if (s->server_ctx == NULL)
        goto nomem;
    for (size_t i = 0; i < cfg->nlisteners && !s->identity_pending; i++) {
        if (PX_KIND_IS_OUTBOUND(cfg->listeners[i].kind)) {
            if (s->client_ctx == NULL) {
                snprintf(err, errlen, "listeners[%zu] (%s): an outbound listener needs "
                                      "identity.cert, identity.key and identity.trust_bundles", i,
                         cfg->listeners[i].name);
                goto fail;
            }
            continue; /* plaintext from the local app; mTLS on the way out */
        }
        if (s->keypair == NULL || s->trust == NULL) {
            snprintf(err, errlen, "listeners[%zu]: an inbound listener needs identity.cert, "
                                  "identity.key and identity.trust_bundles", i);
            goto fail;
        }
        s->server_ctx[i] = server_ctx_new(s, e2, sizeof(e2));
        if (s->server_ctx[i] == NULL) {
            snprintf(err, errlen, "listeners[%zu]: TLS: %s", i, e2);
            goto fail;
        }
    }
    *out = s;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    px_snapshot_unref(s);
    return -1;
}
