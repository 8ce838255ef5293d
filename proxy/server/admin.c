/*
 * admin.c - the admin listener: health, readiness, metrics and policy
 * status for probes and scrapers on loopback.
 *
 * evhttp is enough here: the admin port sees a few requests a second from
 * local agents, never peer traffic, so it does not need the worker's
 * HTTP/2 stack. Binding anything but loopback is refused twice (config.c
 * and here) because these endpoints disclose policy and traffic metadata.
 *
 * The listener is http_listen.c's: it pauses on accept failures, caps open
 * connections at PX_ADMIN_MAX_CONNS and closes a connection with no complete
 * request after PX_ADMIN_REQUEST_TIMEOUT_MS. It also keeps
 * PX_ADMIN_RESERVE_FDS descriptors in reserve: when the data path has used
 * every descriptor of the process, a probe is still accepted with one of
 * them (otherwise /healthz fails exactly when the pod is busiest and
 * Kubernetes restarts it).
 *
 * The metrics listener (px_metrics_start(), metrics.bind) is the same
 * server with one route: /metrics. It may bind any address, because what
 * it shows is what a Prometheus in another pod scrapes anyway; /policy
 * and the probes' /readyz never leave loopback.
 */
#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "config.h"
#include "http_listen.h"
#include "metrics.h"

struct px_admin {
    struct px_httpl *hl;
    const struct px_admin_ops *ops;
    void *arg;
    int metrics_only; /* the metrics listener: /metrics and nothing else */
};

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                  struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, body);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *b = evbuffer_new();

    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(b, text, strlen(text));
    reply(req, code, reason, "text/plain; charset=utf-8", b);
    evbuffer_free(b);
}

static void handle(struct evhttp_request *req, void *ctx)
{
    struct px_admin *a = ctx;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct evbuffer *b;

    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "method not allowed\n");
        return;
    }
    if (path == NULL)
        path = "";
    if (a->metrics_only && strcmp(path, "/metrics") != 0) {
        reply_text(req, 404, "Not Found", "not found\n");
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        reply_text(req, 200, "OK", "ok\n");
        return;
    }
    if (strcmp(path, "/readyz") != 0 && strcmp(path, "/metrics") != 0 &&
        (strcmp(path, "/policy") != 0 || a->ops == NULL || a->ops->policy == NULL)) {
        reply_text(req, 404, "Not Found", "not found\n");
        return;
    }
    b = evbuffer_new();
    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    if (strcmp(path, "/readyz") == 0) {
        if (a->ops == NULL || a->ops->ready == NULL || a->ops->ready(a->arg, b) == 1) {
            evbuffer_drain(b, evbuffer_get_length(b));
            evbuffer_add(b, "ready\n", 6);
            reply(req, 200, "OK", "text/plain; charset=utf-8", b);
        } else {
            evbuffer_prepend(b, "not ready\n", 10);
            reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8", b);
        }
    } else if (strcmp(path, "/metrics") == 0) {
        if (px_metrics_render(b) == 0)
            reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
        else
            evhttp_send_error(req, 500, NULL);
    } else if (a->ops->policy(a->arg, b) == 0) {
        reply(req, 200, "OK", "application/json", b);
    } else {
        evhttp_send_error(req, 500, NULL);
    }
    evbuffer_free(b);
}

static struct px_admin *start(struct event_base *base, const char *name, const char *host,
                              const char *port, const struct px_admin_ops *ops, void *arg,
                              int metrics_only, char *err, size_t errlen)
{
    struct px_admin *a = NULL;
    struct px_httpl_opts o;
    char *end = NULL, e2[256];
    long pn;

    pn = port != NULL ? strtol(port, &end, 10) : -1;
    if (port == NULL || *port == '\0' || *end != '\0' || pn < 0 || pn > 65535) {
        snprintf(err, errlen, "%s: bad port \"%s\"", name, port != NULL ? port : "(null)");
        return NULL;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    a->ops = ops;
    a->arg = arg;
    a->metrics_only = metrics_only;
    memset(&o, 0, sizeof(o));
    o.name = name;
    o.host = host;
    o.port = (int)pn;
    o.max_conns = PX_ADMIN_MAX_CONNS;
    o.request_timeout_ms = PX_ADMIN_REQUEST_TIMEOUT_MS;
    o.io_timeout_s = 10;
    o.reserve_fds = metrics_only ? 0 : PX_ADMIN_RESERVE_FDS;
    o.max_headers_size = 8192;
    o.max_body_size = 0;
    o.allowed_methods = EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                        EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH;
    o.handle = handle;
    o.arg = a;
    if (px_httpl_new(&a->hl, base, &o, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "%s: %s", name, e2);
        px_admin_free(a);
        return NULL;
    }
    return a;
}

struct px_admin *px_admin_start(struct event_base *base, const char *host, const char *port,
                                const struct px_admin_ops *ops, void *arg, char *err,
                                size_t errlen)
{
    if (!px_config_host_is_loopback(host)) {
        snprintf(err, errlen, "admin: refusing to bind %s: not a loopback address",
                 host != NULL ? host : "(null)");
        return NULL;
    }
    return start(base, "admin", host, port, ops, arg, 0, err, errlen);
}

struct px_admin *px_metrics_start(struct event_base *base, const char *host, const char *port,
                                  char *err, size_t errlen)
{
    return start(base, "metrics", host, port, NULL, NULL, 1, err, errlen);
}

int px_admin_port(const struct px_admin *a)
{
    return a != NULL && a->hl != NULL ? px_httpl_port(a->hl) : 0;
}

void px_admin_free(struct px_admin *a)
{
    if (a == NULL)
        return;
    px_httpl_free(a->hl);
    free(a);
}
