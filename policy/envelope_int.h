/*
 * envelope_int.h - shared by envelope.c (keys, signing, verification) and
 * envelope_parse.c (the strict envelope reader) only.
 */
#ifndef POLICY_ENVELOPE_INT_H
#define POLICY_ENVELOPE_INT_H

#include <stddef.h>

#include "certs.h"
#include "envelope.h"

#define SIG_B64_MAX 512 /* DER P-256 is <= 72 bytes, Ed25519 64; generous */
#define SIG_MAX (SIG_B64_MAX / 4 * 3 + 3)

struct env_sig {
    char keyid[POLICY_KEYID_MAX + 1]; /* "" = none; "\x01" = unusable (too long, bad escape) */
    unsigned char sig[SIG_MAX];
    size_t len;
};

struct env_parsed {
    int type, payload, sigs; /* value tokens */
    struct env_sig sig[POLICY_ENVELOPE_MAX_SIGNATURES];
    int nsig;
};

/* Reads the envelope document j (already parsed by certs_json): plain JSON
 * only, an object whose payloadType is POLICY_ENVELOPE_PAYLOAD_TYPE, a
 * string payload (left encoded: p->payload is its token) and 1 to
 * POLICY_ENVELOPE_MAX_SIGNATURES signatures, decoded into p->sig. Returns
 * POLICY_ENV_OK, or the reason with err set. */
enum policy_env_reason policy_env_parse(const struct certs_json *j, struct env_parsed *p, char *err,
                                        size_t errlen);

#endif
