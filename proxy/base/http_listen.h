/*
 * http_listen.h - the listener under picket's evhttp servers: the admin
 * listener, `picket control serve`, `picket inject serve` and the dev demo
 * upstream (README "Limits and memory bounds": "Listeners besides the data
 * path").
 *
 * libevent's evhttp (2.1) accepts with no error callback: when accept()
 * fails with EMFILE/ENFILE it logs "Error from accept() call" and returns
 * while the socket stays readable, so the loop spins at 100% CPU and floods
 * the log. It has no connection cap, and its only timeout is per read, so a
 * client that sends one byte every few seconds holds a connection forever.
 * This module binds the socket itself, hands it to evhttp with
 * evhttp_bind_listener() and adds, for every such server:
 *
 *   - accept failures pause the listener for PX_HTTPL_PAUSE_MS (one
 *     "accept_failed" log line and one picket_accept_failures_total per
 *     pause), as the data-path listeners do (worker.c). A listener given
 *     reserve descriptors first closes one of them and takes the pending
 *     connection with it, so it keeps serving while another part of the
 *     process (the data path) has used every descriptor; the reserve is
 *     refilled once its connections close.
 *   - a cap on open connections: at the cap the listener stops accepting
 *     (new connections wait in the kernel's accept queue, costing nothing)
 *     and resumes when one closes. "listener_full" is logged when the cap
 *     is reached (at most once a second).
 *   - a request deadline: from accept, or from the end of the previous
 *     response on a kept-alive connection, to a complete request (TLS
 *     handshake, request line, headers and body). A connection past it is
 *     closed without an answer ("request_timeout",
 *     picket_listener_request_timeouts_total{listener}). The deadline is off
 *     while the server works on a request (a held long-poll included).
 *
 * Single-threaded: every function and callback runs on the thread of the
 * event base given to px_httpl_new(). Several listeners may live on
 * different threads (the daemon's admin listener and the dev demo).
 */
#ifndef PX_HTTP_LISTEN_H
#define PX_HTTP_LISTEN_H

#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>

struct bufferevent;
struct event_base;
struct px_httpl;

#define PX_HTTPL_PAUSE_MS 200  /* pause after an accept failure (as worker.c) */
#define PX_HTTPL_MAX_RESERVE 8 /* reserve descriptors per listener */

struct px_httpl_opts {
    const char *name;           /* "admin", "control", ...: log field and metric label; borrowed */
    const char *host;           /* bind address (a name resolves to its first address); borrowed */
    int port;                   /* 0 picks a free port (px_httpl_port()) */
    size_t max_conns;           /* open connections; >= 1 */
    int64_t request_timeout_ms; /* accept or end of the last response -> complete request */
    int io_timeout_s;           /* evhttp's per-read/per-write timeout */
    size_t reserve_fds;         /* descriptors kept for this listener, <= PX_HTTPL_MAX_RESERVE */
    ev_ssize_t max_headers_size, max_body_size;
    ev_uint16_t allowed_methods; /* EVHTTP_REQ_* mask */
    /* Every complete request (evhttp's gencb). */
    void (*handle)(struct evhttp_request *req, void *arg);
    /* Makes each connection's bufferevent (TLS); NULL for plain TCP. When it
     * returns NULL a plain one is used, which a TLS server must refuse to
     * serve (control.c and cmd_inject.c check for the SSL object). */
    struct bufferevent *(*bevcb)(struct event_base *base, void *arg);
    /* Called once when a connection goes away (client closed, error,
     * timeout, freeing), before its descriptor is closed. NULL: none. */
    void (*on_close)(struct evhttp_connection *evcon, void *arg);
    void *arg; /* for handle, bevcb and on_close; borrowed */
};

/* Creates the evhttp server, binds host:port and starts accepting on
 * `base`. `o` is copied (the strings it points to are borrowed and must
 * outlive the listener). Opens o->reserve_fds descriptors on /dev/null.
 * Returns 0 and *out (release with px_httpl_free()), or -1 with a one-line
 * reason in err ("cannot listen on HOST:PORT: reason", out of memory). */
int px_httpl_new(struct px_httpl **out, struct event_base *base, const struct px_httpl_opts *o,
                 char *err, size_t errlen);

/* The evhttp server, for settings this module does not make. Borrowed. */
struct evhttp *px_httpl_http(struct px_httpl *l);

/* The bound port (useful with port 0). */
int px_httpl_port(const struct px_httpl *l);

/* Open connections now (accepted and not yet closed). */
size_t px_httpl_conns(const struct px_httpl *l);

/* Descriptors in reserve now. */
size_t px_httpl_reserve(const struct px_httpl *l);

/* Stops accepting and closes the listening socket (a drain); open
 * connections carry on. Idempotent. */
void px_httpl_stop(struct px_httpl *l);

/* Closes every connection (on_close runs for each), the listener and the
 * reserve. NULL is a no-op. */
void px_httpl_free(struct px_httpl *l);

#endif
