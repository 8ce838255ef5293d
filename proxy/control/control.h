/*
 * control.h - the reference control plane behind `picket control serve`
 * (DESIGN.md "Policy bundles": fetch protocol; "Scale: past one machine").
 *
 * It serves a folder of signed envelopes over mTLS, one file per bundle
 * name: GET /<name> answers DIR/<name> with an ETag (the quoted hex SHA-256
 * of the file), 304 to a matching If-None-Match, and with "Prefer: wait=N"
 * holds a matching request until the file changes or N seconds pass
 * (long-poll). Files are served as they are: the server holds no signing
 * key, and publishing is renaming a new envelope into DIR. Any HTTPS file
 * server can stand in for it; this one exists for development and small
 * fleets.
 *
 * Held requests: at most max_waiters in all and max_waiters_per_client per
 * client SPIFFE ID; past the latter the oldest held request of that client
 * is answered (304) to make room, so one identity cannot take every slot.
 * A client that closes its connection while held is noticed at once and
 * its request dropped (logged with status 499).
 *
 * Connections: at most max_conns open (more wait in the kernel's accept
 * queue), each must complete its TLS handshake and request within
 * header_timeout_ms of being accepted (or of its previous answer), and
 * accept failures (out of descriptors) pause the listener for 200 ms; see
 * http_listen.h.
 *
 * Single-threaded (one event base); every function runs on the caller's
 * thread. Logs go through px_log (one "control_request" line per request).
 */
#ifndef PX_CONTROL_H
#define PX_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "certs.h"

#define PX_CONTROL_MAX_WAITERS 1000  /* default cap on held long-poll requests */
#define PX_CONTROL_MAX_WAIT_MS 60000 /* default cap on "Prefer: wait=N" */
#define PX_CONTROL_HEADERS_MAX 16384 /* request line + headers, bytes */
#define PX_CONTROL_NAME_MAX 255      /* bytes in a bundle file name */
#define PX_CONTROL_WATCH_MS 200      /* how often held requests' files are checked */
#define PX_CONTROL_MAX_CONNS 2048    /* default cap on open connections */

/* default cap on held long-poll requests per client SPIFFE ID */
#define PX_CONTROL_MAX_WAITERS_PER_CLIENT 4
/* default time from accept (or the previous answer) to a complete request */
#define PX_CONTROL_HEADER_TIMEOUT_MS 10000

/* What `picket control serve` was given. Every pointer is borrowed and must
 * outlive the server. */
struct px_control_opts {
    const char *dir;                        /* folder of envelopes */
    const char *host;                       /* bind address ("127.0.0.1", "::") */
    int port;                               /* bind port; 0 picks one (logged) */
    const char *cert, *key;                 /* our SVID (PEM chain) and key */
    const struct certs_trust_source *trust; /* client trust bundles, ntrust >= 1 */
    size_t ntrust;
    const char *const *allow; /* NULL/0: any verified SVID; else exact IDs or patterns
                                 "spiffe://td/" + "*" or "spiffe://td/prefix/" + "*" */
    size_t nallow;
    int64_t max_wait_ms;          /* cap on Prefer: wait; 0 disables long-poll */
    size_t max_waiters;           /* 0 means PX_CONTROL_MAX_WAITERS */
    int64_t max_svid_lifetime_ms; /* client SVID lifetime cap; 0 means 24h */
    size_t max_conns;             /* open connections; 0 means PX_CONTROL_MAX_CONNS */
    int64_t header_timeout_ms;    /* TLS handshake + request; 0 means the default */
    /* held requests per client SPIFFE ID; 0 means PX_CONTROL_MAX_WAITERS_PER_CLIENT */
    size_t max_waiters_per_client;
};

struct px_control;

/* Loads the SVID and trust bundles, builds the TLS context, creates the
 * event base and binds. On success *out belongs to the caller (release
 * with px_control_free()). Returns 0, or -1 with a one-line reason in err
 * (unreadable or invalid certificate, key or bundle; DIR not a folder;
 * bind failure). */
int px_control_new(struct px_control **out, const struct px_control_opts *o, char *err,
                   size_t errlen);

/* The bound port (useful with port 0). */
int px_control_port(const struct px_control *c);

/* Serves until SIGTERM or SIGINT. Held requests are answered (304) before
 * it returns. Returns 0 on a signal, 1 if the loop failed. */
int px_control_run(struct px_control *c);

void px_control_free(struct px_control *c); /* NULL is a no-op */

/* ---- pure helpers (exported for unit tests) ---------------------------- */

/* 1 if name[0..len) is a plain file name we serve: 1..PX_CONTROL_NAME_MAX
 * bytes of [A-Za-z0-9._-], not starting with '.' (so no "..", no hidden or
 * temporary files such as the ".tmp" of an atomic write), else 0. */
int px_control_name_ok(const char *name, size_t len);

/* 1 if the If-None-Match value inm (NUL-terminated; a comma-separated list
 * of entity tags, weak "W/" prefixes ignored as RFC 9110 13.1.2's weak
 * comparison says, or "*") matches etag (quoted, e.g. "\"ab12...\""). */
int px_control_etag_match(const char *inm, const char *etag);

/* The N of a "wait=N" preference in a Prefer header value (RFC 7240 4.3;
 * other preferences and parameters are skipped), in seconds; -1 when there
 * is none or it is not a non-negative integer. Large values are clamped to
 * 86400. */
int64_t px_control_prefer_wait(const char *prefer);

/* 1 if SPIFFE ID id is allowed by one of pats[0..n): an exact ID, or a
 * pattern ending in "/" + "*" that matches any ID strictly under that prefix
 * ("spiffe://example.org/" + "*" matches every ID of the trust domain). n == 0
 * allows everyone. */
int px_control_allowed(const char *id, const char *const *pats, size_t n);

#endif
