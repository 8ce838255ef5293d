/*
 * snapshot.h - building snapshots (see px.h for the type).
 */
#ifndef PX_SNAPSHOT_H
#define PX_SNAPSHOT_H

#include "px.h"

struct certs_keypair;

/* A TLS context with picket's settings: TLS 1.2+, PX_TLS12_CIPHERS, no
 * compression, renegotiation or tickets, Certificate messages capped at
 * 32 KiB. Every mTLS endpoint picket runs builds on it. NULL with err set
 * on failure. */
SSL_CTX *px_tls_ctx_new(const SSL_METHOD *m, char *err, size_t errlen);
/* Installs kp's leaf, chain and key in ctx. 0, or -1 with err. */
int px_tls_use_keypair(SSL_CTX *ctx, struct certs_keypair *kp, char *err, size_t errlen);

/* Builds a snapshot from cfg (taken over: freed on failure too): loads
 * trust bundles and own SVID, builds TLS contexts. Returns 0 or -1 with a
 * one-line message in err. Control thread only. */
int px_snapshot_build(struct px_snapshot **out, struct px_config *cfg, char *err, size_t errlen);

#endif
