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
 * no body, and idle connections time out after 10 s. `ops` and `arg` are
 * borrowed and must outlive the listener. Returns the listener, or NULL
 * with a message in err. Call on the thread that runs `base`. */
struct px_admin *px_admin_start(struct event_base *base, const char *host, const char *port,
                                const struct px_admin_ops *ops, void *arg, char *err,
                                size_t errlen);

/* The bound port (useful after binding port "0"); 0 if unknown. */
int px_admin_port(const struct px_admin *a);

/* Stops listening and closes admin connections. NULL is a no-op. Same
 * thread as px_admin_start(). */
void px_admin_free(struct px_admin *a);

#endif
