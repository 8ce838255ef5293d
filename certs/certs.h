/*
 * certs.h - public API of the certs/ library: workload identity (DESIGN.md
 * "Identity").
 *
 *   - SPIFFE ID syntax (certs_spiffe_id_valid) and trust domain extraction.
 *   - Trust bundles: trust domain -> set of CA certificates (struct
 *     certs_trust), loaded from PEM files or SPIFFE bundles (JWKS).
 *   - X.509-SVID checks (certs_svid_check): every refusal has a stable
 *     reason (enum certs_reason) used in logs, metrics and the CLI.
 *   - Our own SVID and key (struct certs_keypair).
 *   - A development CA (certs_devca_*) for `picket cert init/issue`.
 *
 * The library never logs, prints or exits. Functions return 0 or a negative
 * CERTS_ERR_* code (range -100..-199) and, where they take `char *err,
 * size_t errlen`, write a one-line detail without a trailing period into it
 * (err may be NULL when errlen is 0). Times are Unix seconds passed in by
 * the caller; nothing here reads the clock except certs_devca_* (which
 * stamps new certificates) and nothing touches sockets.
 *
 * Threads: every function may be called from any thread. Shared objects
 * (struct certs_trust, struct certs_keypair) are immutable once handed to
 * other threads and reference counted; X509/EVP_PKEY pointers borrowed from
 * them may be used concurrently for verification and TLS (OpenSSL locks its
 * lazily computed caches).
 *
 * This header also brings in certs_json.h (JSON, durations, base64) so
 * other modules need only include certs.h.
 */
#ifndef CERTS_H
#define CERTS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "certs_json.h"

/* ---- Error codes ---------------------------------------------------- */

#define CERTS_ERR_NOMEM (-100)     /* allocation failed */
#define CERTS_ERR_IO (-101)        /* a file could not be read, written or created */
#define CERTS_ERR_PARSE (-102)     /* malformed PEM, DER, JSON or JWKS */
#define CERTS_ERR_TOO_LARGE (-103) /* input over its size cap */
#define CERTS_ERR_INVALID (-104)   /* bad argument (e.g. malformed SPIFFE ID or DNS name) */
#define CERTS_ERR_CRYPTO (-105)    /* OpenSSL failed; its error queue is in err */
#define CERTS_ERR_REFUSED                                                                          \
    (-106)                            /* a certificate breaks an SVID rule; err starts with the    \
                                         reason name, e.g. "expired: ..." */
#define CERTS_ERR_KEY_MISMATCH (-107) /* private key does not belong to the certificate */
#define CERTS_ERR_EXISTS (-108)       /* refusing to overwrite an existing CA */
#define CERTS_ERR_NOT_FOUND (-109)    /* no such trust domain / no certificate in input */

/* Static English text for a CERTS_ERR_* code (or "success" for 0, "unknown
 * error" otherwise). Never NULL. */
const char *certs_strerror(int rc);

/* ---- Limits --------------------------------------------------------- */

#define CERTS_SPIFFE_ID_MAX 2048     /* bytes, SPIFFE-ID spec 2.3 */
#define CERTS_TRUST_DOMAIN_MAX 255   /* bytes, SPIFFE-ID spec 2.1 */
#define CERTS_MAX_FILE (1024 * 1024) /* PEM and JWKS files larger than this are refused unread */
/* Chains a peer may present: at most this many intermediate CAs between
 * the leaf and a root of its trust domain, and at most CERTS_MAX_PEER_CERTS
 * certificates sent (leaf included; extra ones cost verification time). */
#define CERTS_MAX_CHAIN_DEPTH 4
#define CERTS_MAX_PEER_CERTS 8
/* CA certificates in one DER bundle (Workload API): a trust domain rotating
 * its CAs holds a few; a thousand is far past any real bundle. */
#define CERTS_MAX_BUNDLE_CERTS 1000

/* ---- SPIFFE IDs ----------------------------------------------------- */

/* 1 if s[0..len) is a valid SPIFFE ID, else 0. s is not NUL-terminated (a
 * NUL byte inside the range makes it invalid). Rules (SPIFFE-ID spec 2):
 * "spiffe://" (lowercase), a non-empty trust domain of [a-z0-9.-_] (so no
 * port, userinfo, uppercase or percent-encoding), then zero or more
 * "/segment" with segments non-empty, not "." or "..", made of
 * [A-Za-z0-9.-_]; no trailing slash, no query or fragment; at most
 * CERTS_SPIFFE_ID_MAX bytes in all and CERTS_TRUST_DOMAIN_MAX for the trust
 * domain. "spiffe://example.org" (no path: the trust domain's own ID) is
 * valid here; certs_svid_check() additionally requires a path for leaves. */
int certs_spiffe_id_valid(const char *s, size_t len);

/* 1 if td[0..len) is a valid trust domain name (the part between
 * "spiffe://" and the first '/'), else 0. */
int certs_trust_domain_valid(const char *td, size_t len);

/* Finds the trust domain of a valid SPIFFE ID. On success returns 0 and
 * sets *td and *tdlen to point into `id` (borrowed from the caller's buffer,
 * not NUL-terminated). Returns CERTS_ERR_INVALID if id is not valid. */
int certs_spiffe_trust_domain(const char *id, size_t len, const char **td, size_t *tdlen);

/* ---- Refusal reasons ------------------------------------------------ */

/* Stable: values and names are a contract (logs, metrics labels, CLI).
 * Append new values at the end, before CERTS_R_COUNT. */
enum certs_reason {
    CERTS_R_OK = 0,               /* "ok" */
    CERTS_R_EXPIRED,              /* "expired": now >= notAfter */
    CERTS_R_NOT_YET_VALID,        /* "not_yet_valid": now < notBefore */
    CERTS_R_NO_URI_SAN,           /* "no_uri_san" */
    CERTS_R_MULTIPLE_URI_SANS,    /* "multiple_uri_sans" */
    CERTS_R_BAD_SPIFFE_ID,        /* "bad_spiffe_id": URI SAN is not a valid leaf SPIFFE ID */
    CERTS_R_LEAF_IS_CA,           /* "leaf_is_ca": basicConstraints CA:TRUE (or unparsable) */
    CERTS_R_BAD_KEY_USAGE,        /* "bad_key_usage": keyUsage missing, without
                                     digitalSignature, or with keyCertSign/cRLSign */
    CERTS_R_LIFETIME_TOO_LONG,    /* "lifetime_too_long": notAfter - notBefore > max */
    CERTS_R_UNKNOWN_TRUST_DOMAIN, /* "unknown_trust_domain": no bundle for the ID's domain */
    CERTS_R_UNTRUSTED_CHAIN,      /* "untrusted_chain": path validation failed */
    CERTS_R_NO_CERTIFICATE,       /* "no_certificate": peer or file presented none */
    CERTS_R_KEY_MISMATCH,         /* "key_mismatch": private key is not the cert's */
    CERTS_R_BAD_FILE,             /* "bad_file": unreadable, too large or malformed file */
    CERTS_R_INTERNAL,             /* "internal_error": allocation or OpenSSL failure */
    CERTS_R_COUNT                 /* number of reasons; not a reason */
};

/* Stable lower_snake_case name of r ("unknown" if out of range). Static
 * string, never NULL. */
const char *certs_reason_name(enum certs_reason r);

/* ---- Certificates --------------------------------------------------- */

/* Copies the certificate's single URI SAN into buf (NUL-terminated).
 * Returns 0; CERTS_ERR_NOT_FOUND if it has no URI SAN; CERTS_ERR_INVALID if
 * it has more than one, or the URI contains a NUL byte; CERTS_ERR_TOO_LARGE
 * if it does not fit in len bytes (buf is then ""). The URI is not checked
 * for SPIFFE syntax. cert is borrowed. */
int certs_cert_spiffe_id(X509 *cert, char *buf, size_t len);

/* notBefore / notAfter of cert as Unix seconds. Returns 0, or
 * CERTS_ERR_PARSE if the times cannot be read. */
int certs_cert_validity(X509 *cert, int64_t *not_before, int64_t *not_after);

/* ---- Trust bundles -------------------------------------------------- */

/* Maps trust domain -> X509_STORE of that domain's CA certificates. Build
 * it with certs_trust_new() + certs_trust_add*() (or certs_trust_load())
 * on one thread, then share it read-only with certs_trust_ref(). */
struct certs_trust;

struct certs_trust_source {
    const char *trust_domain; /* "example.org" */
    const char *path;         /* PEM (one or more CA certificates) or SPIFFE bundle JSON */
};

/* Creates an empty set with reference count 1. Returns 0 or
 * CERTS_ERR_NOMEM. *out is handed to the caller; release with
 * certs_trust_unref(). */
int certs_trust_new(struct certs_trust **out);

/* Adds the CA certificates in data[0..len) to trust domain td[0..tdlen).
 * The format is detected: a first non-blank byte '{' means a SPIFFE bundle
 * (JWKS; keys with "use":"x509-svid" each carry exactly one certificate in
 * "x5c"; keys with other uses are ignored), anything else PEM. Adding the
 * same domain twice merges the sets. At least one certificate must be found.
 * All or nothing: on failure t is unchanged. Must not be called once t is
 * shared. Returns 0, CERTS_ERR_INVALID (bad trust domain name),
 * CERTS_ERR_TOO_LARGE (len > CERTS_MAX_FILE), CERTS_ERR_PARSE,
 * CERTS_ERR_NOT_FOUND (no certificate) or CERTS_ERR_NOMEM. data and td are
 * borrowed for the call only. */
int certs_trust_add(struct certs_trust *t, const char *td, size_t tdlen, const char *data,
                    size_t len, char *err, size_t errlen);

/* Same as certs_trust_add() with ASN.1 DER certificates back to back in
 * der[0..len) (a SPIFFE Workload API bundle): at most
 * CERTS_MAX_BUNDLE_CERTS of them, no trailing bytes. Returns 0,
 * CERTS_ERR_INVALID, CERTS_ERR_TOO_LARGE (len > CERTS_MAX_FILE or too many
 * certificates), CERTS_ERR_PARSE, CERTS_ERR_NOT_FOUND (len 0) or
 * CERTS_ERR_NOMEM. */
int certs_trust_add_der(struct certs_trust *t, const char *td, size_t tdlen,
                        const unsigned char *der, size_t len, char *err, size_t errlen);

/* Same as certs_trust_add() with the contents of the file at path (refused
 * with CERTS_ERR_TOO_LARGE if bigger than CERTS_MAX_FILE; CERTS_ERR_IO if
 * unreadable). err is prefixed with the path. */
int certs_trust_add_file(struct certs_trust *t, const char *td, const char *path, char *err,
                         size_t errlen);

/* Builds a new set from n (trust_domain, file) pairs. On success *out has
 * reference count 1 and belongs to the caller; on failure *out is untouched
 * and the return code is that of certs_trust_add_file(). */
int certs_trust_load(struct certs_trust **out, const struct certs_trust_source *src, size_t n,
                     char *err, size_t errlen);

/* Takes a reference; returns t (NULL stays NULL). Any thread. */
struct certs_trust *certs_trust_ref(struct certs_trust *t);

/* Drops a reference; frees t when it was the last. NULL is a no-op. */
void certs_trust_unref(struct certs_trust *t);

/* The CA store of trust domain td[0..tdlen), or NULL if unknown. Borrowed:
 * valid while the caller holds a reference to t; do not modify it. */
X509_STORE *certs_trust_store(const struct certs_trust *t, const char *td, size_t tdlen);

/* Number of trust domains in t, and the i-th one (NUL-terminated, borrowed
 * like certs_trust_store()) with its number of CA certificates in *ncerts
 * (may be NULL). NULL if i is out of range. For logs and the CLI. */
size_t certs_trust_count(const struct certs_trust *t);
const char *certs_trust_domain_at(const struct certs_trust *t, size_t i, size_t *ncerts);

/* ---- SVID checks ---------------------------------------------------- */

/* Decides whether leaf is an acceptable X.509-SVID at time now (Unix
 * seconds). Checks, in this order, returning the first that fails:
 * exactly one URI SAN (no_uri_san, multiple_uri_sans); a valid SPIFFE ID
 * with a path (bad_spiffe_id); its trust domain is in t
 * (unknown_trust_domain); not a CA (leaf_is_ca); keyUsage present with
 * digitalSignature and without keyCertSign/cRLSign (bad_key_usage);
 * notBefore <= now < notAfter (not_yet_valid, expired; notAfter itself is
 * expired, as OpenSSL's path validation sees it); notAfter -
 * notBefore <= max_lifetime_s unless max_lifetime_s <= 0
 * (lifetime_too_long); then path validation to the domain's CAs at time
 * now, without partial chains (untrusted_chain, err holds OpenSSL's verify
 * error). leaf NULL gives no_certificate; allocation failure gives
 * internal_error.
 *
 * On CERTS_R_OK, id_out (idlen bytes, may be NULL/0) receives the SPIFFE ID,
 * NUL-terminated (CERTS_SPIFFE_ID_MAX + 1 bytes always suffice; a smaller
 * buffer that cannot hold it gives internal_error, never a truncated ID);
 * otherwise it is set to "" when idlen > 0. err receives a
 * detail line on refusal ("" on success). leaf, chain (untrusted
 * intermediates, may be NULL) and t are borrowed for the call. */
enum certs_reason certs_svid_check(const struct certs_trust *t, X509 *leaf, STACK_OF(X509) * chain,
                                   int64_t now_unix_s, int64_t max_lifetime_s, char *id_out,
                                   size_t idlen, char *err, size_t errlen);

/* Lists every SVID rule leaf breaks at time now, without chain verification
 * or trust domain lookup (for `picket cert inspect`): the reasons
 * no_uri_san/multiple_uri_sans/bad_spiffe_id, leaf_is_ca, bad_key_usage,
 * not_yet_valid/expired and lifetime_too_long, in that order. Writes at most
 * max reasons to reasons[] and the number broken in *n (which may exceed
 * max). Returns 0, or CERTS_ERR_INVALID if leaf is NULL. */
int certs_svid_inspect(X509 *leaf, int64_t now_unix_s, int64_t max_lifetime_s,
                       enum certs_reason *reasons, size_t max, size_t *n);

/* ---- Own key pair ----------------------------------------------------- */

/* Our SVID: leaf, intermediates, private key, SPIFFE ID. Immutable. */
struct certs_keypair;

/* Loads cert_path (PEM: leaf first, then intermediates) and key_path (PEM
 * private key, unencrypted) and checks them at time now. Refuses, with err
 * starting with the reason name: bad_file (unreadable, too large, malformed;
 * CERTS_ERR_IO / CERTS_ERR_TOO_LARGE / CERTS_ERR_PARSE), no_certificate
 * (CERTS_ERR_NOT_FOUND), key_mismatch (CERTS_ERR_KEY_MISMATCH), and
 * CERTS_ERR_REFUSED for expired or a leaf that is not an SVID (URI SAN,
 * SPIFFE ID, CA flag, key usage). A not-yet-valid certificate is accepted
 * (its notBefore is visible through certs_keypair_not_before()); lifetime
 * is not checked here. On success *out has reference count 1 and belongs to
 * the caller. Paths are borrowed for the call. */
int certs_keypair_load(struct certs_keypair **out, const char *cert_path, const char *key_path,
                       int64_t now_unix_s, char *err, size_t errlen);

/* Same from PEM bytes in memory (borrowed for the call; each at most
 * CERTS_MAX_FILE). */
int certs_keypair_load_mem(struct certs_keypair **out, const char *cert_pem, size_t cert_len,
                           const char *key_pem, size_t key_len, int64_t now_unix_s, char *err,
                           size_t errlen);

/* Same from DER, the SPIFFE Workload API's encoding: chain_der holds the
 * leaf then its intermediates, ASN.1 DER back to back (at most
 * CERTS_MAX_PEER_CERTS certificates, no trailing bytes); key_der one
 * unencrypted PKCS#8 PrivateKeyInfo, nothing after it. Same checks and
 * return codes as certs_keypair_load(), err starting with the reason name.
 * Both inputs are borrowed for the call. */
int certs_keypair_load_der(struct certs_keypair **out, const unsigned char *chain_der,
                           size_t chain_len, const unsigned char *key_der, size_t key_len,
                           int64_t now_unix_s, char *err, size_t errlen);

struct certs_keypair *certs_keypair_ref(struct certs_keypair *kp); /* NULL stays NULL */
void certs_keypair_unref(struct certs_keypair *kp);                /* NULL is a no-op */

/* Accessors. Every pointer is borrowed: valid while the caller holds a
 * reference to kp; do not modify or free. chain is never NULL (may be
 * empty). To use with OpenSSL APIs that take ownership, up-ref first. */
X509 *certs_keypair_leaf(const struct certs_keypair *kp);
STACK_OF(X509) * certs_keypair_chain(const struct certs_keypair *kp);
EVP_PKEY *certs_keypair_key(const struct certs_keypair *kp);
const char *certs_keypair_spiffe_id(const struct certs_keypair *kp);
int64_t certs_keypair_not_before(const struct certs_keypair *kp);
int64_t certs_keypair_not_after(const struct certs_keypair *kp);

/* ---- Development CA -------------------------------------------------- */

/* Creates directory dir (mode 0700; an existing empty-of-CA directory is
 * reused) holding ca.key (ECDSA P-256, PKCS#8 PEM, mode 0600) and ca.pem
 * (self-signed, CA:TRUE critical, keyUsage keyCertSign+cRLSign, URI SAN
 * spiffe://<trust_domain>, valid from now-60s for ttl_s seconds). Files are
 * written atomically. Reads the clock. Returns 0, CERTS_ERR_INVALID (bad
 * trust domain or ttl_s <= 0), CERTS_ERR_EXISTS (ca.pem or ca.key already
 * there), CERTS_ERR_IO or CERTS_ERR_CRYPTO. */
int certs_devca_init(const char *dir, const char *trust_domain, int64_t ttl_s, char *err,
                     size_t errlen);

/* Issues an X.509-SVID from the CA in cadir: new ECDSA P-256 key, URI SAN
 * spiffe_id plus dns[0..ndns) DNS SANs and ips[0..nips) IP SANs (IPv4 or
 * IPv6 literals), CA:FALSE, keyUsage digitalSignature, EKU
 * serverAuth+clientAuth, random 127-bit serial, notBefore = now-60s (clock
 * skew), notAfter = now+ttl_s (so the lifetime is ttl_s + 60). The SPIFFE
 * ID must be a valid leaf ID in the CA's trust domain, and notAfter must not
 * pass the CA's. Writes the leaf alone to cert_out (0644) and the key to
 * key_out (0600), each atomically (temp file in the same directory, fsync,
 * rename). Returns 0, CERTS_ERR_INVALID, CERTS_ERR_IO, CERTS_ERR_PARSE
 * (broken CA files), CERTS_ERR_KEY_MISMATCH or CERTS_ERR_CRYPTO. */
int certs_devca_issue(const char *cadir, const char *spiffe_id, int64_t ttl_s,
                      const char *const *dns, size_t ndns, const char *const *ips, size_t nips,
                      const char *cert_out, const char *key_out, char *err, size_t errlen);

/* ---- Helpers shared with the CLI ------------------------------------- */

/* Reads a whole file of at most max bytes into a malloc'ed, NUL-terminated
 * buffer (*out, length in *len; caller frees). Returns 0, CERTS_ERR_IO (err
 * holds strerror) or CERTS_ERR_TOO_LARGE. Refuses non-regular files. */
/* Writes "<prefix>: <first OpenSSL error>" into err and empties OpenSSL's
 * error queue, so a stale error never surfaces in a later call. */
void certs_ossl_err(char *err, size_t errlen, const char *prefix);

/* Writes data to path atomically: a temp file in the same directory with
 * mode `mode`, fsync, rename over path, fsync the directory. Returns 0 or
 * CERTS_ERR_IO. */
int certs_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode,
                            char *err, size_t errlen);

int certs_read_file(const char *path, size_t max, char **out, size_t *len, char *err,
                    size_t errlen);

/* Parses ASN.1 DER certificates back to back in der[0..len) into a new
 * stack (caller frees with sk_X509_pop_free(sk, X509_free)), in order.
 * Refuses trailing bytes or anything that is not a whole certificate
 * (CERTS_ERR_PARSE), more than max certificates or len > CERTS_MAX_FILE
 * (CERTS_ERR_TOO_LARGE), len 0 (CERTS_ERR_NOT_FOUND); CERTS_ERR_NOMEM. */
int certs_der_certs(const unsigned char *der, size_t len, size_t max, STACK_OF(X509) * *out,
                    char *err, size_t errlen);

/* Parses one unencrypted PKCS#8 PrivateKeyInfo in DER, der[0..len) exactly.
 * Returns 0 (*out belongs to the caller), CERTS_ERR_NOT_FOUND (len 0),
 * CERTS_ERR_TOO_LARGE or CERTS_ERR_PARSE. */
int certs_der_key(const unsigned char *der, size_t len, EVP_PKEY **out, char *err, size_t errlen);

/* Parses every CERTIFICATE block of PEM data[0..len) into a new stack
 * (caller frees with sk_X509_pop_free(sk, X509_free)). Returns 0,
 * CERTS_ERR_NOT_FOUND (no certificate), CERTS_ERR_PARSE or
 * CERTS_ERR_NOMEM. */
int certs_pem_certs(const char *data, size_t len, STACK_OF(X509) * *out, char *err, size_t errlen);

#endif
