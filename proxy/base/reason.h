/*
 * reason.h - why picket refused, failed or ended something: one enum with
 * one stable name each, like enum certs_reason. The name is what the
 * access and audit records (`reason`), the operational log and the metric
 * labels (`picket_upstream_failures_total{reason}`,
 * `picket_connections_closed_total{reason}`,
 * `picket_handshakes_total{result}`) carry; proxy/README.md documents
 * every one (ctest docs_reasons checks the list against it).
 *
 * Stable: names never change meaning; new reasons go anywhere in the list
 * (the numeric values are not stored or sent anywhere).
 */
#ifndef PX_REASON_H
#define PX_REASON_H

#include "certs.h"

/* Each entry: X(IDENTIFIER, stable name) */
#define PX_REASONS(X)                                                                              \
    X(NONE, "")                                                                                    \
    /* the request: 400 and friends (gate/request.c, the protocol halves) */                       \
    X(MALFORMED_REQUEST, "malformed_request")                                                      \
    X(AMBIGUOUS_FRAMING, "ambiguous_framing")                                                      \
    X(BAD_CHUNK, "bad_chunk")                                                                      \
    X(BAD_TRANSFER_ENCODING, "bad_transfer_encoding")                                              \
    X(BAD_CONTENT_LENGTH, "bad_content_length")                                                    \
    X(REQUEST_LENGTH_MISMATCH, "request_length_mismatch")                                          \
    X(BAD_METHOD, "bad_method")                                                                    \
    X(MISSING_HOST, "missing_host")                                                                \
    X(BAD_HOST, "bad_host")                                                                        \
    X(CONFLICTING_HOST, "conflicting_host")                                                        \
    X(BAD_TARGET, "bad_target")                                                                    \
    X(TARGET_TOO_LONG, "target_too_long")                                                          \
    X(PATH_PARAMS, "path_params")                                                                  \
    X(DOT_SEGMENT_PARAMS, "dot_segment_params")                                                    \
    X(BAD_HEADER, "bad_header")                                                                    \
    X(HEADER_WITH_UNDERSCORE, "header_with_underscore")                                            \
    X(TOO_MANY_HEADERS, "too_many_headers")                                                        \
    X(HEADERS_TOO_LARGE, "headers_too_large")                                                      \
    X(BAD_EXPECT, "bad_expect")                                                                    \
    X(UNSUPPORTED_VERSION, "unsupported_version")                                                  \
    X(HEADER_TIMEOUT, "header_timeout")                                                            \
    X(UNSAFE_REQUEST, "unsafe_request")                                                            \
    X(BAD_UPGRADE, "bad_upgrade")                                                                  \
    /* path refusals (policy_path_normalize) */                                                    \
    X(NOT_ABSOLUTE, "not_absolute")                                                                \
    X(FRAGMENT, "fragment")                                                                        \
    X(NUL, "nul")                                                                                  \
    X(CONTROL_CHAR, "control_char")                                                                \
    X(BACKSLASH, "backslash")                                                                      \
    X(ENCODED_SLASH, "encoded_slash")                                                              \
    X(ENCODED_BACKSLASH, "encoded_backslash")                                                      \
    X(ENCODED_NUL, "encoded_nul")                                                                  \
    X(BAD_ESCAPE, "bad_escape")                                                                    \
    X(TOO_LONG, "too_long")                                                                        \
    /* the decision (gate/enforce.c, gate/dispatch.c) */                                           \
    X(POLICY_DENY, "policy_deny")                                                                  \
    X(NO_POLICY, "no_policy")                                                                      \
    X(STALE, "stale")                                                                              \
    X(DISPATCH_DENY, "dispatch_deny")                                                              \
    X(DISPATCH_NOT_CONFIGURED, "dispatch_not_configured")                                          \
    X(DISPATCH_OVERLOADED, "dispatch_overloaded")                                                  \
    X(DISPATCH_START_FAILED, "dispatch_start_failed")                                              \
    X(DISPATCH_UNAVAILABLE, "dispatch_unavailable")                                                \
    X(BAD_SERVICE_URL, "bad_service_url")                                                          \
    X(RESPONSE_TOO_LARGE, "response_too_large")                                                    \
    X(NO_ROUTE, "no_route")                                                                        \
    X(TCP_DISPATCH_UNSUPPORTED, "tcp_dispatch_unsupported")                                        \
    /* opaque TCP tunnels (server/tunnel.c) */                                                     \
    X(TUNNEL_IDLE, "tunnel_idle")                                                                  \
    X(TUNNEL_RESET, "tunnel_reset")                                                                \
    /* the upstream (upstream/) */                                                                 \
    X(CONNECT_REFUSED, "connect_refused")                                                          \
    X(CONNECT_FAILED, "connect_failed")                                                            \
    X(TIMEOUT, "timeout")                                                                          \
    X(UPSTREAM_TIMEOUT, "upstream_timeout")                                                        \
    X(REQUEST_DEADLINE, "request_deadline")                                                        \
    X(UPSTREAM_RESET, "upstream_reset")                                                            \
    X(UPSTREAM_REFUSED_STREAM, "upstream_refused_stream")                                          \
    X(UPSTREAM_GOAWAY, "upstream_goaway")                                                          \
    X(UPSTREAM_PROTOCOL_ERROR, "upstream_protocol_error")                                          \
    X(UPSTREAM_SUBMIT_FAILED, "upstream_submit_failed")                                            \
    X(UPSTREAM_ERROR, "upstream_error")                                                            \
    X(BAD_UPSTREAM_RESPONSE, "bad_upstream_response")                                              \
    X(UPSTREAM_HEADERS_TOO_LARGE, "upstream_headers_too_large")                                    \
    X(UPSTREAM_UNRESOLVABLE, "upstream_unresolvable")                                              \
    X(ALPN_MISMATCH, "alpn_mismatch")                                                              \
    X(UPGRADE_UNSUPPORTED, "upgrade_unsupported")                                                  \
    X(SERVER_ID_MISMATCH, "server_id_mismatch")                                                    \
    X(TLS_ERROR, "tls_error")                                                                      \
    /* the connection and its identity */                                                          \
    X(CLOSED_DURING_HANDSHAKE, "closed_during_handshake")                                          \
    X(OVER_MAX_CONNECTIONS, "over_max_connections")                                                \
    X(OVER_MAX_HANDSHAKES, "over_max_handshakes")                                                  \
    X(PEER_CERT_EXPIRED, "peer_cert_expired")                                                      \
    X(PEER_UNTRUSTED, "peer_untrusted")                                                            \
    X(SHUTDOWN, "shutdown")                                                                        \
    /* resources */                                                                                \
    X(MEMORY_PRESSURE, "memory_pressure")                                                          \
    X(OUT_OF_MEMORY, "out_of_memory")                                                              \
    /* certificate checks (enum certs_reason, same names) */                                       \
    X(EXPIRED, "expired")                                                                          \
    X(NOT_YET_VALID, "not_yet_valid")                                                              \
    X(NO_URI_SAN, "no_uri_san")                                                                    \
    X(MULTIPLE_URI_SANS, "multiple_uri_sans")                                                      \
    X(BAD_SPIFFE_ID, "bad_spiffe_id")                                                              \
    X(LEAF_IS_CA, "leaf_is_ca")                                                                    \
    X(BAD_KEY_USAGE, "bad_key_usage")                                                              \
    X(LIFETIME_TOO_LONG, "lifetime_too_long")                                                      \
    X(UNKNOWN_TRUST_DOMAIN, "unknown_trust_domain")                                                \
    X(UNTRUSTED_CHAIN, "untrusted_chain")                                                          \
    X(NO_CERTIFICATE, "no_certificate")                                                            \
    X(KEY_MISMATCH, "key_mismatch")                                                                \
    X(BAD_FILE, "bad_file")                                                                        \
    X(INTERNAL_ERROR, "internal_error")

enum px_reason {
#define PX_REASON_ENUM_(id, name) PX_R_##id,
    PX_REASONS(PX_REASON_ENUM_)
#undef PX_REASON_ENUM_
    PX_R_COUNT /* not a reason */
};

/* The stable name ("" for PX_R_NONE, "internal_error" out of range). Never
 * NULL; static. */
const char *px_reason_name(enum px_reason r);
/* The reason named s, or PX_R_COUNT when none is. */
enum px_reason px_reason_from_name(const char *s);
/* The reason for a certificate check's result (CERTS_R_OK: PX_R_NONE). */
enum px_reason px_reason_from_certs(enum certs_reason r);
/* The reason for a policy_path_normalize() refusal (POLICY_PATH_*). */
enum px_reason px_reason_from_path(int rc);

#endif
