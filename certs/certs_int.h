/*
 * certs_int.h - helpers shared inside certs/ only: error text, OpenSSL error
 * draining, time conversion, atomic file writes and the individual SVID
 * leaf rules (used by svid.c for checks and inspection and by keypair.c for
 * our own certificate).
 */
#ifndef CERTS_INT_H
#define CERTS_INT_H

#include "certs.h"

#include <stdarg.h>

/* snprintf into err (no-op when err is NULL or errlen is 0). */
void certs_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


/* ASN1_TIME -> Unix seconds. Returns 0 or -1. */
int certs_asn1_to_unix(const ASN1_TIME *t, int64_t *out);


/* Parses one PEM private key (passphrase prompts are disabled: an
 * encrypted key is an error). Returns 0, CERTS_ERR_PARSE or
 * CERTS_ERR_NOT_FOUND. *out belongs to the caller. */
int certs_pem_key(const char *data, size_t len, EVP_PKEY **out, char *err, size_t errlen);

/* The leaf rules, each returning CERTS_R_OK or the reason it breaks, with
 * a detail in err. id (may be NULL) receives the SPIFFE ID when the URI
 * rule passes. */
enum certs_reason certs_rule_uri(X509 *leaf, char *id, size_t idlen, char *err, size_t errlen);
enum certs_reason certs_rule_not_ca(X509 *leaf, char *err, size_t errlen);
enum certs_reason certs_rule_key_usage(X509 *leaf, char *err, size_t errlen);
enum certs_reason certs_rule_window(X509 *leaf, int64_t now, char *err, size_t errlen);
enum certs_reason certs_rule_lifetime(X509 *leaf, int64_t max_lifetime_s, char *err, size_t errlen);

/* Formats Unix seconds as "2025-01-02T03:04:05Z" into buf (>= 21 bytes). */
void certs_fmt_time(int64_t t, char *buf, size_t len);

/* JSON string escapes (json.c), shared by certs_json_str() and the key check
 * (json_keys.c) so both read a key the same way. s[*k] is the byte after a
 * backslash in the string body s[0..n); writes the 1-4 bytes it stands for
 * to out, moves *k past the escape and returns their count, or -1 for a bad
 * escape, a lone or reversed surrogate, or \u0000. */
int certs_json_unescape(const char *s, size_t n, size_t *k, unsigned char out[4]);

#endif
