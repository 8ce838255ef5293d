/*
 * wlapi.h - the SPIFFE Workload API as an identity source (issue 19):
 *
 *   - messages (wlapi_msg.c): an X509SVIDResponse decoded with protobuf-c
 *     (workload_api.proto, compiled by protoc-c at build time), bounded,
 *     and turned into what picket serves with: one SVID and its key (struct
 *     certs_keypair) and the trust bundles (struct certs_trust). Pure: bytes
 *     and the time in, objects or a refusal out.
 *   - the client (wlapi.c): gRPC over HTTP/2 cleartext (prior knowledge)
 *     on a Unix socket with nghttp2, calling the server-streaming
 *     /SpiffeWorkloadAPI/FetchX509SVID on an event base, never blocking,
 *     reconnecting with jittered exponential backoff.
 *
 * The daemon (daemon.c) feeds every accepted message into the same
 * snapshot rotation as a changed certificate file.
 */
#ifndef PX_WLAPI_H
#define PX_WLAPI_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct certs_keypair;
struct certs_trust;

/* ---- limits ------------------------------------------------------------- */

/* One X509SVIDResponse on the wire: larger ones are refused unread (the
 * stream is reset and opened again). SVIDs, keys and bundles of a real
 * workload take a few KiB. */
#define PX_WLAPI_MAX_MSG (4 * 1024 * 1024)
/* What decoding one message may allocate, all together: protobuf-c keeps
 * every field it meets (unknown ones too), so a message of tiny fields
 * costs many times its size in structures. */
#define PX_WLAPI_MAX_DECODED (4 * PX_WLAPI_MAX_MSG)
#define PX_WLAPI_MAX_SVIDS 64     /* SVIDs in one message */
#define PX_WLAPI_MAX_FEDERATED 64 /* federated bundles in one message */
#define PX_WLAPI_MAX_HEADERS 65536 /* response header + trailer bytes (name + value + 32) */

/* ---- messages (wlapi_msg.c) ---------------------------------------------- */

/* A decoded X509SVIDResponse. */
struct px_wlapi_msg;

/* Decodes msg[0..len) (borrowed for the call). Refuses a message over
 * PX_WLAPI_MAX_MSG unread, one that needs more than PX_WLAPI_MAX_DECODED
 * bytes to decode, is not a valid X509SVIDResponse, or has more than
 * PX_WLAPI_MAX_SVIDS SVIDs or PX_WLAPI_MAX_FEDERATED federated bundles.
 * Returns 0 with *out owned by the caller (px_wlapi_msg_free), or -1 with
 * "reason: detail" in err (reasons: too_large, bad_message). */
int px_wlapi_msg_decode(struct px_wlapi_msg **out, const uint8_t *msg, size_t len, char *err,
                        size_t errlen);
void px_wlapi_msg_free(struct px_wlapi_msg *m); /* NULL is a no-op */

/* Number of SVIDs, and the i-th one's spiffe_id and hint fields as sent
 * (NUL-terminated, borrowed from m; "" when absent). */
size_t px_wlapi_msg_nsvids(const struct px_wlapi_msg *m);
const char *px_wlapi_msg_spiffe_id(const struct px_wlapi_msg *m, size_t i);
const char *px_wlapi_msg_hint(const struct px_wlapi_msg *m, size_t i);

/* The federated bundles as sent: their number, and the key of the i-th
 * ("spiffe://partner.net"), borrowed from m. */
size_t px_wlapi_msg_nfederated(const struct px_wlapi_msg *m);
const char *px_wlapi_msg_federated_key(const struct px_wlapi_msg *m, size_t i);

/* The SVID picket takes from m: with hint NULL or "", the first (the
 * spec's default); otherwise the first whose hint equals it. Returns its
 * index, or -1 with "reason: detail" in err (no_svid, no_matching_hint). */
int px_wlapi_msg_select(const struct px_wlapi_msg *m, const char *hint, char *err, size_t errlen);

/* What picket serves with, built from SVID i of m at time now (Unix s). */
struct px_wlapi_identity {
    struct certs_keypair *keypair; /* owned reference */
    struct certs_trust *trust;     /* owned reference: the SVID's bundle + federated bundles */
};

/* Builds SVID i of m into *out (zeroed first), checking it as a certificate
 * file is checked (certs_keypair_load_der: the key is the leaf's, the leaf
 * is an SVID with one URI SAN, not a CA, not expired), and more: the
 * spiffe_id field is the leaf's URI SAN; its bundle parses and the chain
 * verifies to it (at notBefore when that is still ahead); every federated
 * bundle names a valid trust domain other than the SVID's and parses.
 * Returns 0 (release with px_wlapi_identity_clear) or -1 with "reason:
 * detail" in err: the certs reason of a refused SVID (expired,
 * key_mismatch, no_uri_san, bad_file, ...), spiffe_id_mismatch,
 * bad_bundle, untrusted_chain, bad_federated_bundle, internal_error. */
int px_wlapi_identity_build(struct px_wlapi_identity *out, const struct px_wlapi_msg *m, size_t i,
                            int64_t now, char *err, size_t errlen);
void px_wlapi_identity_clear(struct px_wlapi_identity *id);

/* ---- the client (wlapi.c) ----------------------------------------------- */

struct px_wlapi_client;

/* What the client reports, on the event base's thread. Every pointer is
 * borrowed for the call. */
struct px_wlapi_ops {
    /* One complete X509SVIDResponse (at most PX_WLAPI_MAX_MSG bytes). */
    void (*message)(void *arg, const uint8_t *msg, size_t len);
    /* A message refused before decoding (reason too_large or compressed);
     * the stream is then reset and opened again. */
    void (*refused)(void *arg, const char *reason, const char *detail);
    /* connected = 1 when the HTTP/2 connection is up (the server's first
     * SETTINGS), 0 when the stream or the connection ended (reason and
     * detail say why: connect_failed, stream_ended, grpc_status,
     * protocol_error, ...; next_ms is the delay before the next attempt, -1
     * when the client will not try again). */
    void (*state)(void *arg, int connected, const char *reason, const char *detail,
                  int64_t next_ms);
};

#define PX_WLAPI_BACKOFF_MIN_MS 500
#define PX_WLAPI_BACKOFF_MAX_MS 30000

/* Starts calling FetchX509SVID on the socket named by uri ("unix:///...")
 * from base. With reconnect, a stream that ends or fails is opened again
 * after a jittered exponential backoff (PX_WLAPI_BACKOFF_MIN_MS doubling up
 * to PX_WLAPI_BACKOFF_MAX_MS, each delay drawn from its upper half; back to
 * the minimum once a stream delivered a message); without, the client stops
 * after the first end (px_wlapi_client_done() then says 1). ops and arg are
 * borrowed and must outlive the client. Returns the client, or NULL with a
 * message in err (bad uri, out of memory). Call on base's thread. */
struct px_wlapi_client *px_wlapi_client_new(struct event_base *base, const char *uri,
                                            const struct px_wlapi_ops *ops, void *arg,
                                            int reconnect, char *err, size_t errlen);
int px_wlapi_client_done(const struct px_wlapi_client *c);
/* Closes the stream and the connection; no callback runs after. NULL is a
 * no-op. Same thread. */
void px_wlapi_client_free(struct px_wlapi_client *c);

#endif
