/*
 * admin.c - the admin listener: health, readiness, metrics and policy
 * status for probes and scrapers on loopback.
 *
 * evhttp is enough here: the admin port sees a few requests a second from
 * local agents, never peer traffic, so it does not need the worker's
 * HTTP/2 stack. Binding anything but loopback is refused twice (config.c
 * and here) because these endpoints disclose policy and traffic metadata.
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "config.h"
#include "metrics.h"

struct px_admin {
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    const struct px_admin_ops *ops;
    void *arg;
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

struct px_admin *px_admin_start(struct event_base *base, const char *host, const char *port,
                                const struct px_admin_ops *ops, void *arg, char *err,
                                size_t errlen)
{
    struct px_admin *a = NULL;
    char *end = NULL;
    long pn;

    if (!px_config_host_is_loopback(host)) {
        snprintf(err, errlen, "admin: refusing to bind %s: not a loopback address",
                 host != NULL ? host : "(null)");
        return NULL;
    }
    pn = port != NULL ? strtol(port, &end, 10) : -1;
    if (port == NULL || *port == '\0' || *end != '\0' || pn < 0 || pn > 65535) {
        snprintf(err, errlen, "admin: bad port \"%s\"", port != NULL ? port : "(null)");
        return NULL;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL || (a->http = evhttp_new(base)) == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        goto fail;
    }
    a->ops = ops;
    a->arg = arg;
    evhttp_set_max_headers_size(a->http, 8192);
    evhttp_set_max_body_size(a->http, 0);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(a->http, handle, a);
    /* "localhost" may resolve to ::1 and 127.0.0.1; evhttp binds the first. */
    a->sock = evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)pn);
    if (a->sock == NULL) {
        snprintf(err, errlen, "admin: cannot bind %s:%s: %s", host, port,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail;
    }
    return a;
fail:
    px_admin_free(a);
    return NULL;
}

int px_admin_port(const struct px_admin *a)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (a == NULL || a->sock == NULL ||
        getsockname(evhttp_bound_socket_get_fd(a->sock), (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

void px_admin_free(struct px_admin *a)
{
    if (a == NULL)
        return;
    if (a->http != NULL)
        evhttp_free(a->http);
    free(a);
}
