/*
 * tls.h - picket's TLS settings and handshake facts.
 */
#ifndef PX_TLS_H
#define PX_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "reason.h"

struct certs_keypair;

/* TLS 1.2 suites picket offers (ECDHE + AEAD only); TLS 1.3 uses OpenSSL's
 * AEAD-only defaults. */
#define PX_TLS12_CIPHERS                                                                           \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* SSL ex_data index holding the struct px_conn of a server-side SSL. */
extern int px_ssl_conn_idx;
/* Client-side SSL ex_data: the expected server SPIFFE ID (const char *),
 * and the refusal reason set by the verify callback (static string). */
extern int px_ssl_expect_idx;
extern int px_ssl_reason_idx;
/* The refusal reason of a client-side SSL (PX_R_NONE when none). */
void px_ssl_set_reason(SSL *ssl, enum px_reason r);
enum px_reason px_ssl_get_reason(SSL *ssl);

/* A TLS context with picket's settings: TLS 1.2+, PX_TLS12_CIPHERS, no
 * compression, renegotiation or tickets, Certificate messages capped at
 * 32 KiB. Every mTLS endpoint picket runs builds on it. NULL with err set
 * on failure. */
SSL_CTX *px_tls_ctx_new(const SSL_METHOD *m, char *err, size_t errlen);
/* Installs kp's leaf, chain and key in ctx. 0, or -1 with err. */
int px_tls_use_keypair(SSL_CTX *ctx, struct certs_keypair *kp, char *err, size_t errlen);

/* The earliest notAfter (Unix seconds) of the certificate chain the peer
 * of ssl presented; 0 when none. On a pool connection: its server's. */
int64_t px_ssl_peer_not_after(SSL *ssl);

#endif
