/*
 * tls.c - the TLS settings every mTLS endpoint of picket shares (data-path
 * listeners, upstream and control-plane clients, `picket control serve`),
 * and the certificate facts read off a finished handshake.
 */
#include "tls.h"

#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "certs.h"

/* SSL ex_data indexes: set once at start, before any handshake (daemon.c). */
int px_ssl_conn_idx = -1;
int px_ssl_expect_idx = -1;
int px_ssl_reason_idx = -1;

int px_tls_use_keypair(SSL_CTX *ctx, struct certs_keypair *kp, char *err, size_t errlen)
{
    STACK_OF(X509) *chain = certs_keypair_chain(kp);
    if (SSL_CTX_use_certificate(ctx, certs_keypair_leaf(kp)) != 1) {
        certs_ossl_err(err, errlen, "certificate");
        return -1;
    }
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) != 1) {
            certs_ossl_err(err, errlen, "certificate chain");
            return -1;
        }
    }
    if (SSL_CTX_use_PrivateKey(ctx, certs_keypair_key(kp)) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        certs_ossl_err(err, errlen, "private key");
        return -1;
    }
    return 0;
}

/* Bytes of the peer's Certificate message we accept (OpenSSL's default is
 * 100 KiB). An ECDSA SVID is under 1 KiB; leaf plus CERTS_MAX_CHAIN_DEPTH
 * RSA-4096 intermediates stays under 16 KiB. Larger: handshake refused
 * ("excessive message size", reason tls_error). */
#define PX_TLS_MAX_CERT_LIST (32 * 1024)

SSL_CTX *px_tls_ctx_new(const SSL_METHOD *m, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(m);
    if (ctx == NULL) {
        certs_ossl_err(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
    /* An idle connection holds no record buffers; the picket binary
     * recycles them per thread (px_rawmalloc, installed in main()). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_max_cert_list(ctx, PX_TLS_MAX_CERT_LIST);
    if (SSL_CTX_set_cipher_list(ctx, PX_TLS12_CIPHERS) != 1) {
        certs_ossl_err(err, errlen, "cipher list");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    int days = 0, secs = 0;
    if (t == NULL || ASN1_TIME_diff(&days, &secs, NULL, t) != 1) /* from now to t */
        return 0;
    return (int64_t)time(NULL) + (int64_t)days * 86400 + secs;
}

int64_t px_ssl_peer_not_after(SSL *ssl)
{
    X509 *leaf;
    STACK_OF(X509) *chain;
    int64_t na;
    if (ssl == NULL || (leaf = SSL_get0_peer_certificate(ssl)) == NULL)
        return 0;
    chain = SSL_get_peer_cert_chain(ssl); /* server side: without the leaf */
    na = asn1_unix(X509_get0_notAfter(leaf));
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        int64_t t = asn1_unix(X509_get0_notAfter(sk_X509_value(chain, i)));
        if (t > 0 && (na == 0 || t < na))
            na = t;
    }
    return na;
}

void px_ssl_set_reason(SSL *ssl, enum px_reason r)
{
    SSL_set_ex_data(ssl, px_ssl_reason_idx, (void *)(intptr_t)r);
}

enum px_reason px_ssl_get_reason(SSL *ssl)
{
    return (enum px_reason)(intptr_t)SSL_get_ex_data(ssl, px_ssl_reason_idx);
}
