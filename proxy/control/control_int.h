/*
 * control_int.h - shared by control.c (answering requests) and
 * control_server.c (TLS, listener, lifetime) only: the server object and
 * the three entry points control_server.c wires into libevent.
 */
#ifndef PX_CONTROL_INT_H
#define PX_CONTROL_INT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>

#include "control.h"

#define PEER_MAX 80
#define PX_CONTROL_IO_TIMEOUT_S 10    /* evhttp's per-read/write timeout */
#define PX_CONTROL_CLIENT_BUCKETS 256 /* hash of clients with held requests */

struct watch;  /* held requests on one file name (control.c) */
struct client; /* held requests of one client identity (control.c) */

struct px_control {
    struct px_control_opts o;
    struct certs_trust *trust;
    struct certs_keypair *kp;
    SSL_CTX *ctx;
    struct event_base *base;
    struct px_httpl *hl; /* listener, connections, evhttp (http_listen.c) */
    struct event *tick, *sigterm, *sigint;
    struct watch *watches;
    struct client *clients[PX_CONTROL_CLIENT_BUCKETS];
    size_t nwaiters;
    int64_t max_life_s;
    int port;
    int stopping;
};

/* evhttp's callback for every request: checks the verified peer, the
 * method and the name, then answers or holds it (control.c). */
void px_control_handle(struct evhttp_request *req, void *arg);

/* The PX_CONTROL_WATCH_MS timer: re-reads watched files that changed and
 * answers held requests whose file changed or whose wait is over
 * (control.c). */
void px_control_tick_cb(evutil_socket_t fd, short what, void *arg);

/* Answers every held request with 304 (stopping, freeing) (control.c). */
void px_control_answer_all(struct px_control *c);

/* http_listen.c's close callback: a connection is going away; requests
 * held on it are dropped at once (their slot and descriptor freed), not at
 * their deadline (control.c). */
void px_control_conn_closed(struct evhttp_connection *evcon, void *arg);

#endif
