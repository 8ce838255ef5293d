/*
 * envelope.h - signed policy envelopes (DSSE) and the control-plane fetch
 * state machine (DESIGN.md "Policy bundles": signed envelope and fetch
 * protocol; "Scale").
 *
 *   1. keys and keyrings: Ed25519 and ECDSA P-256 keys as PEM (private:
 *      PKCS#8, public: SubjectPublicKeyInfo); a keyring maps keyid -> public
 *      key.
 *   2. envelopes: DSSE v1 (https://github.com/secure-systems-lab/dsse,
 *      "protocol.md" and "envelope.md"): JSON
 *      {"payloadType": "...", "payload": "<base64>",
 *       "signatures": [{"keyid": "...", "sig": "<base64>"}]}
 *      with every signature taken over the pre-authentication encoding
 *      PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
 *      Ed25519 signs PAE itself; ECDSA P-256 signs SHA-256(PAE) and the
 *      signature is DER (ASN.1 ECDSA-Sig-Value).
 *   3. the fetch state machine: I/O-free, events in and the next action out;
 *      proxy/ does the HTTP and owns the clock.
 *
 * Like the rest of policy/, nothing here logs, prints or exits. The only file
 * access is in the *_file() loaders, which read through certs_read_file()
 * with a size cap. Status codes are 0 or negative: the generic ones of
 * policy.h (POLICY_ERR_NOMEM, POLICY_ERR_INVAL, POLICY_ERR_TOO_LARGE) and
 * the POLICY_ERR_ENV_* / POLICY_ERR_FETCH_* codes below (-250..-299).
 * Detail goes into a caller-owned `char *err, size_t errlen` (one line, no
 * trailing period; err may be NULL when errlen is 0).
 *
 * Threads: every function is reentrant. A keyring is immutable once built
 * and may be used for verification by any number of threads at once. A
 * struct policy_fetch is used by one thread at a time (the proxy's control
 * thread).
 */
#ifndef POLICY_ENVELOPE_H
#define POLICY_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "policy.h"

/* ---- status codes (-250..-299) ----------------------------------------- */

#define POLICY_ERR_ENV_REFUSED (-250)  /* envelope refused; see enum policy_env_reason */
#define POLICY_ERR_ENV_KEY (-251)      /* key missing, malformed, encrypted or unsupported type */
#define POLICY_ERR_ENV_KEYID (-252)    /* keyid malformed, or already in the keyring */
#define POLICY_ERR_ENV_CRYPTO (-253)   /* OpenSSL failed; its first error is in err */
#define POLICY_ERR_ENV_IO (-254)       /* a key file could not be read */
#define POLICY_ERR_ENV_FULL (-255)     /* keyring holds POLICY_KEYRING_MAX_KEYS keys */
#define POLICY_ERR_FETCH_CONFIG (-270) /* bad struct policy_fetch_config */
#define POLICY_ERR_FETCH_RESULT (-271) /* malformed struct policy_fetch_result */

/* Static text for the codes above; other codes go to policy_strerror().
 * Never NULL. Any thread. */
const char *policy_envelope_strerror(int rc);

/* ---- limits ------------------------------------------------------------- */

/* The one payload type picket signs and accepts. */
#define POLICY_ENVELOPE_PAYLOAD_TYPE "application/vnd.picket.policy+json"
/* Envelopes larger than POLICY_BUNDLE_MAX_BYTES (policy.h) are refused
 * unparsed; so are envelopes with more signatures than this. */
#define POLICY_ENVELOPE_MAX_SIGNATURES 16
/* Longest keyid in bytes. A keyid is 1..POLICY_KEYID_MAX bytes of
 * [A-Za-z0-9._:/@+-] (so it never needs JSON escaping). */
#define POLICY_KEYID_MAX 128
/* Most keys in one keyring (bounds verification work per envelope to
 * POLICY_ENVELOPE_MAX_SIGNATURES * POLICY_KEYRING_MAX_KEYS attempts). */
#define POLICY_KEYRING_MAX_KEYS 32
/* Key PEM files larger than this are refused unread. */
#define POLICY_KEY_FILE_MAX (64 * 1024)

/* ---- 1. keys -------------------------------------------------------------- */

enum policy_key_type { POLICY_KEY_ED25519 = 1, POLICY_KEY_P256 = 2 };

/* "ed25519" / "p256" for the key's type, or NULL if k is neither (or NULL). */
const char *policy_key_type_name(const EVP_PKEY *k);

/* Parses the "ed25519" / "p256" spelling used on the command line. Returns
 * 0 or POLICY_ERR_INVAL. */
int policy_key_type_parse(const char *s, enum policy_key_type *out);

/* Generates a new key pair. *out is handed to the caller (EVP_PKEY_free).
 * Returns 0, POLICY_ERR_INVAL or POLICY_ERR_ENV_CRYPTO. Reads the system
 * random source through OpenSSL. */
int policy_key_generate(enum policy_key_type type, EVP_PKEY **out, char *err, size_t errlen);

/* Parses one unencrypted PEM private key (PKCS#8 "PRIVATE KEY"; the legacy
 * "EC PRIVATE KEY" form is accepted too) from pem[0..len), borrowed for the
 * call. Only Ed25519 and P-256 keys are accepted. *out is handed to the
 * caller. Returns 0, POLICY_ERR_ENV_KEY or POLICY_ERR_TOO_LARGE (len over
 * POLICY_KEY_FILE_MAX). */
int policy_key_private_from_pem(EVP_PKEY **out, const char *pem, size_t len, char *err,
                                size_t errlen);

/* Same for a PEM public key ("PUBLIC KEY", SubjectPublicKeyInfo). */
int policy_key_public_from_pem(EVP_PKEY **out, const char *pem, size_t len, char *err,
                               size_t errlen);

/* File versions of the two above (at most POLICY_KEY_FILE_MAX bytes; path
 * borrowed; err is prefixed with the path). Also POLICY_ERR_ENV_IO. */
int policy_key_private_load(EVP_PKEY **out, const char *path, char *err, size_t errlen);
int policy_key_public_load(EVP_PKEY **out, const char *path, char *err, size_t errlen);

/* PEM text of k: the private key as unencrypted PKCS#8 (k must hold one) or
 * the public key as SubjectPublicKeyInfo (k may be private or public; this
 * is how `picket bundle keygen` writes the .pub file). *pem is malloc'ed,
 * NUL-terminated and handed to the caller (free; for a private key,
 * consider clearing it with OPENSSL_cleanse first). k is borrowed. Returns
 * 0, POLICY_ERR_INVAL, POLICY_ERR_ENV_KEY or POLICY_ERR_NOMEM. */
int policy_key_private_pem(const EVP_PKEY *k, char **pem, size_t *len, char *err, size_t errlen);
int policy_key_public_pem(const EVP_PKEY *k, char **pem, size_t *len, char *err, size_t errlen);

/* 1 if s (NUL-terminated) is a valid keyid, else 0. */
int policy_keyid_valid(const char *s);

/* ---- keyrings ------------------------------------------------------------ */

/* keyid -> public key. Build on one thread, then share read-only. */
struct policy_keyring;

struct policy_keyring_source {
    const char *keyid; /* "cp-1" */
    const char *path;  /* PEM public key file */
};

/* Creates an empty keyring; *out is handed to the caller. Returns 0 or
 * POLICY_ERR_NOMEM. */
int policy_keyring_new(struct policy_keyring **out);

/* NULL is a no-op. */
void policy_keyring_free(struct policy_keyring *kr);

/* Adds a public key under keyid. keyid "" (or NULL) adds a key without an
 * id, which is tried against every signature whatever its keyid (for
 * `picket bundle verify --key PUB` with no --keyid); the proxy always
 * names its keys. Only the public half of key is kept; key is borrowed for
 * the call. Returns 0, POLICY_ERR_ENV_KEYID (malformed or duplicate id),
 * POLICY_ERR_ENV_KEY (not Ed25519 / P-256), POLICY_ERR_ENV_FULL or
 * POLICY_ERR_NOMEM. On failure kr is unchanged. */
int policy_keyring_add(struct policy_keyring *kr, const char *keyid, const EVP_PKEY *key, char *err,
                       size_t errlen);

/* Same with a PEM public key in memory (borrowed) or in a file. */
int policy_keyring_add_pem(struct policy_keyring *kr, const char *keyid, const char *pem,
                           size_t len, char *err, size_t errlen);
int policy_keyring_add_file(struct policy_keyring *kr, const char *keyid, const char *path,
                            char *err, size_t errlen);

/* Builds a keyring from n (keyid, path) pairs; all or nothing. On success
 * *out is handed to the caller; on failure it is untouched and err names
 * the keyid. Return codes as for policy_keyring_add_file(). */
int policy_keyring_load(struct policy_keyring **out, const struct policy_keyring_source *src,
                        size_t n, char *err, size_t errlen);

size_t policy_keyring_count(const struct policy_keyring *kr);

/* ---- 2. envelopes -------------------------------------------------------- */

/* Why an envelope (or, for the fetch machine, a fetched bundle) was refused.
 * Stable: values and names are a contract (logs, metric labels, `picket
 * bundle verify`). Append new values at the end, before POLICY_ENV_R_COUNT. */
enum policy_env_reason {
    POLICY_ENV_OK = 0,              /* "ok" */
    POLICY_ENV_BAD_ENVELOPE,        /* "bad_envelope": not JSON, or not a DSSE envelope */
    POLICY_ENV_WRONG_PAYLOAD_TYPE,  /* "wrong_payload_type" */
    POLICY_ENV_BAD_BASE64,          /* "bad_base64": payload or a sig is not base64 */
    POLICY_ENV_TOO_LARGE,           /* "too_large": over POLICY_BUNDLE_MAX_BYTES */
    POLICY_ENV_TOO_MANY_SIGNATURES, /* "too_many_signatures" */
    POLICY_ENV_NO_SIGNATURES,       /* "no_signatures": "signatures" is empty */
    POLICY_ENV_UNKNOWN_KEY,         /* "unknown_key": no signature names a key we hold */
    POLICY_ENV_BAD_SIGNATURE,       /* "bad_signature": signatures tried, none verified */
    POLICY_ENV_BAD_BUNDLE,          /* "bad_bundle": signed payload is not a valid bundle */
    POLICY_ENV_REVISION_ROLLBACK,   /* "revision_rollback": revision < the one in force */
    POLICY_ENV_REVISION_CONFLICT,   /* "revision_conflict": same revision, other content */
    POLICY_ENV_INTERNAL,            /* "internal_error": allocation or OpenSSL failure */
    POLICY_ENV_R_COUNT              /* number of reasons; not a reason */
};

/* Stable lower_snake_case name ("unknown" if out of range). Static. */
const char *policy_env_reason_name(enum policy_env_reason r);

/* Builds PAE(type, body) (see the top of this file) into a malloc'ed buffer
 * handed to the caller in *out (*outlen bytes, plus a NUL not counted).
 * type and body are borrowed. Returns 0, POLICY_ERR_NOMEM or
 * POLICY_ERR_TOO_LARGE (body over POLICY_BUNDLE_MAX_BYTES). */
int policy_envelope_pae(const char *type, size_t type_len, const void *body, size_t body_len,
                        unsigned char **out, size_t *outlen);

/* Verifies a DSSE envelope env[0..len) (borrowed; not NUL-terminated).
 *
 * Refused, in this order: envelope over POLICY_BUNDLE_MAX_BYTES
 * (too_large); not a single plain JSON object (no trailing or doubled
 * commas, nothing jsmn would let through), without a string "payloadType",
 * a string "payload" and an array "signatures", or with one of them given
 * twice (bad_envelope; other members are ignored); more than
 * POLICY_ENVELOPE_MAX_SIGNATURES signatures (too_many_signatures); none
 * (no_signatures); payloadType other than POLICY_ENVELOPE_PAYLOAD_TYPE
 * (wrong_payload_type); a signature entry that is not an object with a
 * string "sig" and optionally a string "keyid" (bad_envelope); a sig or
 * the payload that is not base64 (bad_base64). Then a signature is tried
 * against the key of the same keyid, a signature with no (or an empty)
 * keyid against every key, and every signature against the keyring's
 * id-less keys; signatures naming keyids we do not hold are skipped.
 * Accepted as soon as one verifies; otherwise bad_signature if any was
 * tried, else unknown_key. kr NULL acts as an empty keyring.
 *
 * On POLICY_ENV_OK: *payload_out receives the decoded payload (malloc'ed,
 * NUL-terminated, handed to the caller; *payload_len bytes without the
 * NUL) and keyid_out (keyid_len bytes, may be NULL/0) the keyid that
 * verified: the keyring's id for that key, or the signature's keyid when
 * the key has none. On refusal *payload_out is NULL, keyid_out "" and err
 * holds a detail line. Allocation failure gives internal_error. kr is
 * read-only: any number of threads may verify against it at once. */
enum policy_env_reason policy_envelope_verify(const struct policy_keyring *kr, const char *env,
                                              size_t len, char **payload_out, size_t *payload_len,
                                              char *keyid_out, size_t keyid_len, char *err,
                                              size_t errlen);

/* Signs payload[0..len) (borrowed) with priv (borrowed; Ed25519 or P-256)
 * under payload type POLICY_ENVELOPE_PAYLOAD_TYPE and wraps it in a
 * one-signature envelope. keyid NULL or "" omits "keyid". *env_out is
 * malloc'ed, NUL-terminated (no trailing newline) and handed to the caller.
 * Returns 0, POLICY_ERR_INVAL, POLICY_ERR_ENV_KEYID, POLICY_ERR_ENV_KEY,
 * POLICY_ERR_TOO_LARGE (the envelope would exceed POLICY_BUNDLE_MAX_BYTES),
 * POLICY_ERR_ENV_CRYPTO or POLICY_ERR_NOMEM. */
int policy_envelope_sign(EVP_PKEY *priv, const char *keyid, const char *payload, size_t len,
                         char **env_out, size_t *env_len, char *err, size_t errlen);

/* ---- 3. fetch state machine ------------------------------------------------ */

/*
 * Usage (proxy/): policy_fetch_new(), optionally policy_fetch_seed() with the
 * cached envelope verified at start, then policy_fetch_start() for the first
 * action. Repeat: wait action.delay_ms, send `GET url` with the action's
 * headers, feed the answer to policy_fetch_on_result(), act on the outcome
 * (UPDATED: take action.bundle, install it, persist the envelope, i.e. the
 * response body), release the action with policy_fetch_action_clear().
 */

struct policy_fetch;

struct policy_fetch_config {
    int64_t poll_min_ms;    /* > 0; delay after a success is random in [poll_min, poll_max] */
    int64_t poll_max_ms;    /* >= poll_min_ms; also the cap of the error backoff */
    int64_t long_poll_ms;   /* 0: plain polling; > 0: send "Prefer: wait=N" (N in s) */
    int64_t backoff_min_ms; /* first error delay; 0 means 1000; doubles per failure */
    uint64_t seed;          /* seeds the delay jitter; fixed in tests, random in proxy */
};

/* What came back from one request. Pointers are borrowed for the call. */
enum policy_fetch_result_kind {
    POLICY_FETCH_RES_BODY = 1,     /* 200 with an envelope body */
    POLICY_FETCH_RES_NOT_MODIFIED, /* 304 */
    POLICY_FETCH_RES_STATUS,       /* any other HTTP status (status) */
    POLICY_FETCH_RES_TRANSPORT,    /* connect, TLS, peer identity or protocol failure */
    POLICY_FETCH_RES_TIMEOUT       /* no complete answer in time */
};

struct policy_fetch_result {
    enum policy_fetch_result_kind kind;
    int status;       /* RES_STATUS: the HTTP status */
    const char *body; /* RES_BODY: the response body (the envelope) */
    size_t body_len;
    const char *etag; /* RES_BODY / RES_NOT_MODIFIED: ETag value or NULL */
    size_t etag_len;
    int64_t sent_ms;    /* when the request went out (same clock as now_ms); 0 unknown */
    const char *detail; /* RES_TRANSPORT / RES_TIMEOUT: NUL-terminated text or NULL */
};

/* What that answer meant. Stable names (metric label "result"). */
enum policy_fetch_outcome {
    POLICY_FETCH_START = 0,       /* "start": first request, nothing answered yet */
    POLICY_FETCH_UPDATED,         /* "updated": new bundle accepted (action.bundle) */
    POLICY_FETCH_NOT_MODIFIED,    /* "not_modified": 304 */
    POLICY_FETCH_UNCHANGED,       /* "unchanged": 200 with the revision and content in force */
    POLICY_FETCH_REFUSED,         /* "refused": 200 refused (action.reason) */
    POLICY_FETCH_HTTP_ERROR,      /* "http_error": other status, or 304 with no ETag sent */
    POLICY_FETCH_TRANSPORT_ERROR, /* "transport_error" */
    POLICY_FETCH_TIMEOUT,         /* "timeout" */
    POLICY_FETCH_OUTCOME_COUNT    /* not an outcome */
};

const char *policy_fetch_outcome_name(enum policy_fetch_outcome o); /* static; "unknown" */

#define POLICY_FETCH_ETAG_MAX 256          /* longer ETags are not kept (no If-None-Match) */
#define POLICY_FETCH_REPOLL_JITTER_MS 1000 /* re-poll jitter after a held long-poll answer */

struct policy_fetch_action {
    enum policy_fetch_outcome outcome;
    enum policy_env_reason reason;                 /* REFUSED: why; POLICY_ENV_OK otherwise */
    char detail[256];                              /* REFUSED / errors: one line; "" otherwise */
    int64_t delay_ms;                              /* send the next request this long from now */
    char if_none_match[POLICY_FETCH_ETAG_MAX + 1]; /* "If-None-Match" value; "" = omit */
    char prefer[32];                               /* "Prefer" value ("wait=30"); "" = omit */
    /* UPDATED only (NULL otherwise); handed to the caller, who may take them
     * (set the field to NULL) before policy_fetch_action_clear(): */
    struct policy_bundle *bundle; /* the parsed bundle */
    char *payload;                /* the signed bundle JSON, NUL-terminated */
    size_t payload_len;
    int64_t revision;                 /* revision of the answer (UPDATED, UNCHANGED,
                                         REFUSED once parsed) or in force (START,
                                         NOT_MODIFIED); else 0 */
    char keyid[POLICY_KEYID_MAX + 1]; /* UPDATED / UNCHANGED: key that verified it */
};

/* Frees what the action still holds (bundle, payload) and zeroes it. NULL
 * is a no-op. */
void policy_fetch_action_clear(struct policy_fetch_action *a);

/* Creates a machine. cfg is copied; kr is borrowed and must outlive the
 * machine or be replaced with policy_fetch_set_keyring() before it is
 * freed. Returns 0, POLICY_ERR_FETCH_CONFIG (poll_min <= 0, poll_max <
 * poll_min, long_poll < 0 or backoff_min < 0), POLICY_ERR_INVAL or
 * POLICY_ERR_NOMEM. */
int policy_fetch_new(struct policy_fetch **out, const struct policy_fetch_config *cfg,
                     const struct policy_keyring *kr, char *err, size_t errlen);
void policy_fetch_free(struct policy_fetch *f); /* NULL is a no-op */

/* Replaces the borrowed keyring (after a config reload). */
void policy_fetch_set_keyring(struct policy_fetch *f, const struct policy_keyring *kr);

/* The revision floor an earlier run persisted (revision and the SHA-256 of
 * its payload): until a bundle is in force, a bundle older than it, or of
 * the same revision with other content, is refused as a rollback /
 * conflict. Returns 0 or POLICY_ERR_INVAL. */
int policy_fetch_set_floor(struct policy_fetch *f, int64_t revision, const unsigned char sha[32]);

/* Declares a bundle already in force: payload[0..len) (borrowed; the signed
 * bundle JSON, for the same-revision content check) at revision. With
 * from_cache = 1 (the envelope persisted in cache_dir and verified at
 * start) it sets the revision floor, and staleness counts from as_of_ms
 * (the cache file's mtime) until the first successful contact; the last
 * contact time stays unset. With from_cache = 0 it also counts as a
 * successful contact at as_of_ms. Returns 0, POLICY_ERR_INVAL or
 * POLICY_ERR_ENV_CRYPTO. */
int policy_fetch_seed(struct policy_fetch *f, const char *payload, size_t len, int64_t revision,
                      int from_cache, int64_t as_of_ms);

/* The first action: delay 0 and the headers to send. Sets next->outcome =
 * POLICY_FETCH_START. Returns 0 or POLICY_ERR_INVAL. */
int policy_fetch_start(struct policy_fetch *f, int64_t now_ms, struct policy_fetch_action *next);

/* Feeds one answer and fills *next (which must not hold a bundle or payload
 * from before: clear it first). On a 200 the envelope is verified with the
 * keyring, the payload parsed with policy_bundle_parse(), and its revision
 * compared with the one in force: lower is refused (revision_rollback);
 * equal with a different payload (SHA-256) is refused (revision_conflict);
 * equal with the same payload is UNCHANGED, a success like 304.
 *
 * Delays: after UPDATED / UNCHANGED / NOT_MODIFIED, random in [poll_min,
 * poll_max]; but with long_poll, 0 after UPDATED (the next request is held
 * by the server anyway) and random in [0, POLICY_FETCH_REPOLL_JITTER_MS]
 * after a NOT_MODIFIED / UNCHANGED the server held for at least half of
 * long_poll (judged from sent_ms; a server that ignores "Prefer" and answers
 * at once therefore gets the normal polling delay, never a tight loop).
 * After any failure (REFUSED, HTTP_ERROR, TRANSPORT_ERROR, TIMEOUT), with k
 * consecutive failures: base = min(backoff_min * 2^(k-1), poll_max), delay
 * random in [base/2, base] (jitter keeps a fleet from retrying in step).
 *
 * ETag: a 200 (accepted or unchanged) or 304 carrying a valid ETag (at most
 * POLICY_FETCH_ETAG_MAX visible ASCII bytes) replaces the one kept; a 200
 * without one clears it; failures keep it.
 *
 * Returns 0 (the outcome is in next), POLICY_ERR_INVAL (NULL arguments) or
 * POLICY_ERR_FETCH_RESULT (unknown kind). */
int policy_fetch_on_result(struct policy_fetch *f, int64_t now_ms,
                           const struct policy_fetch_result *res, struct policy_fetch_action *next);

/* Revision in force, or -1 if none. */
int64_t policy_fetch_revision(const struct policy_fetch *f);
/* ETag kept for If-None-Match ("" if none); borrowed until the next call. */
const char *policy_fetch_etag(const struct policy_fetch *f);
/* Consecutive failures since the last success. */
unsigned policy_fetch_failures(const struct policy_fetch *f);
/* Time of the last successful contact, or -1 if none yet. */
int64_t policy_fetch_last_contact_ms(const struct policy_fetch *f);

/* now_ms - last successful contact (200 accepted or unchanged, or 304), or
 * now_ms - the cache file's time while the bundle in force comes from the
 * cache; -1 when no bundle is in force. Never negative otherwise (a clock
 * that went back gives 0). */
int64_t policy_fetch_staleness_ms(const struct policy_fetch *f, int64_t now_ms);

/* 1 when the bundle in force must be treated as stale: none in force;
 * staleness > max_staleness_ms (when max_staleness_ms > 0); or
 * bundle_expires_at_s > 0 and now_ms >= bundle_expires_at_s * 1000. Else 0. */
int policy_fetch_is_stale(const struct policy_fetch *f, int64_t now_ms, int64_t max_staleness_ms,
                          int64_t bundle_expires_at_s);

#endif
