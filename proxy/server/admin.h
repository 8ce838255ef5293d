/*
 * admin.h - the loopback admin listener (DESIGN.md "Roles and modes"):
 * /healthz, /readyz, /metrics and /policy over plain HTTP/1.1, served by
 * libevent's evhttp on the daemon's control-thread event base.
 */
#ifndef PX_ADMIN_H
#define PX_ADMIN_H

#include <stddef.h>

struct event_base;
struct evbuffer;
struct px_admin;

#define PX_ADMIN_MAX_CONNS 64            /* open admin connections */
#define PX_ADMIN_REQUEST_TIMEOUT_MS 5000 /* accept -> complete request */
#define PX_ADMIN_RESERVE_FDS 4           /* descriptors kept for probes */

/* Callbacks into the daemon; both run on the admin event base's thread. */
struct px_admin_ops {
    /* Returns 1 if ready, 0 if not; when not ready, appends the reasons
     * (one per line, e.g. "policy stale (412s)\n") to `why`. NULL = always
     * ready. */
    int (*ready)(void *arg, struct evbuffer *why);
    /* Appends a JSON document describing the policy in force (revision,
     * age, source) to `out`. Returns 0, or -1 for a 500. NULL = 404. */
    int (*policy)(void *arg, struct evbuffer *out);
};

/* Binds host:port (host must be loopback, see
 * px_config_host_is_loopback(); port "0" picks a free port, see
 * px_admin_port()) and serves, on `base`:
 *   GET /healthz -> 200 "ok\n"
 *   GET /readyz  -> 200 "ready\n", or 503 "not ready\n" + ops->ready reasons
 *   GET /metrics -> 200 text/plain; version=0.0.4 (px_metrics_render())
 *   GET /policy  -> 200 application/json from ops->policy
 *   other paths 404; methods other than GET and HEAD 405 (Allow: GET, HEAD).
 * The query string is ignored. Requests are capped at 8 KiB of headers and
 * no body; a connection must deliver a complete request within
 * PX_ADMIN_REQUEST_TIMEOUT_MS of being accepted (or of its previous
 * answer), and at most PX_ADMIN_MAX_CONNS are open (more wait in the
 * kernel's queue). Accept failures pause the listener for 200 ms, after it
 * has used its PX_ADMIN_RESERVE_FDS reserved descriptors (see
 * http_listen.h). `ops` and `arg` are borrowed and must outlive the
 * listener. Returns the listener, or NULL with a message in err. Call on
 * the thread that runs `base`. */
struct px_admin *px_admin_start(struct event_base *base, const char *host, const char *port,
                                const struct px_admin_ops *ops, void *arg, char *err,
                                size_t errlen);

/* The metrics listener (metrics.bind): GET or HEAD /metrics, as on the
 * admin listener, on any address, so a scraper in another pod reaches it;
 * every other path is 404 (/healthz, /readyz and /policy stay on the
 * loopback admin listener). Same limits as the admin listener, no
 * reserved descriptors. Free with px_admin_free(). */
struct px_admin *px_metrics_start(struct event_base *base, const char *host, const char *port,
                                  char *err, size_t errlen);

/* The bound port (useful after binding port "0"); 0 if unknown. */
int px_admin_port(const struct px_admin *a);

/* Stops listening and closes admin connections. NULL is a no-op. Same
 * thread as px_admin_start(). */
void px_admin_free(struct px_admin *a);

#endif
