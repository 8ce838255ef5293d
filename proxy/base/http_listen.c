/*
 * http_listen.c - accept pauses, a connection cap and a request deadline
 * for picket's evhttp servers (contract in http_listen.h).
 *
 * evhttp 2.1 keeps its connection objects to itself: there is no callback
 * when it accepts one and no way to hand it a socket we accepted. So:
 *
 *   - the listening socket is ours (evconnlistener_new_bind), given to
 *     evhttp with evhttp_bind_listener(), which replaces the accept callback
 *     with its own but leaves the error callback to us. That callback gets
 *     evhttp's pointer as its argument, so listeners are found through a
 *     small registry keyed by the evconnlistener (a few per process);
 *   - each new connection passes through our bufferevent callback
 *     (evhttp_set_bevcb), the one hook evhttp calls per connection: we
 *     count it there, stop accepting at the cap, and keep a reference on
 *     its bufferevent. Once evhttp has finished setting the connection up
 *     (an event activated for the same loop turn), its evhttp_connection is
 *     the bufferevent's callback argument (bufferevent_getcb); we "adopt"
 *     it: a close callback tells us when it goes away, and a timer bounds
 *     the time to a complete request. The reference covers the case where
 *     evhttp gives the connection up while setting it up (out of memory):
 *     its callbacks are then cleared, and we just drop our reference.
 *
 * Requests reach the server's handler through handle_cb(), which stops the
 * deadline; the request's on-complete callback starts it again for the
 * next request on the connection. Finding the connection's record is a
 * walk of the open connections: at most max_conns pointers compared per
 * request, which is nothing next to the TLS and HTTP work of that request.
 */
#include "http_listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "log.h"
#include "metrics.h"

#define NAME_MAX_LEN 32
#define FULL_LOG_GAP_MS 1000 /* "listener_full" at most this often */
#define REFILL_RETRY_S 1     /* reserve refill retry while descriptors are short */

/* One accepted connection. */
struct hconn {
    struct hconn *prev, *next;
    struct px_httpl *l;
    struct bufferevent *bev;         /* referenced by us until adopted */
    struct evhttp_connection *evcon; /* NULL until adopted */
    struct event *deadline;
};

struct px_httpl {
    struct px_httpl *reg_next;
    struct px_httpl_opts o;
    char name[NAME_MAX_LEN];
    struct event_base *base;
    struct evhttp *http;
    struct evconnlistener *lev;
    struct evhttp_bound_socket *bound;
    struct event *adopt, *retry, *refill;
    struct hconn *pending, *conns;
    size_t nconns;
    int reserve[PX_HTTPL_MAX_RESERVE];
    size_t nreserve;
    int paused, enabled, freeing;
    int64_t full_logged_ms;
    int port;
};

/* ---- registry (error callback -> listener) ------------------------------- */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct px_httpl *reg_head;

static void reg_add(struct px_httpl *l)
{
    pthread_mutex_lock(&reg_mu);
    l->reg_next = reg_head;
    reg_head = l;
    pthread_mutex_unlock(&reg_mu);
}

static void reg_del(struct px_httpl *l)
{
    pthread_mutex_lock(&reg_mu);
    for (struct px_httpl **pp = &reg_head; *pp != NULL; pp = &(*pp)->reg_next) {
        if (*pp == l) {
            *pp = l->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

static struct px_httpl *reg_find(const struct evconnlistener *lev)
{
    struct px_httpl *l;
    pthread_mutex_lock(&reg_mu);
    for (l = reg_head; l != NULL && l->lev != lev; l = l->reg_next)
        ;
    pthread_mutex_unlock(&reg_mu);
    return l;
}

/* ---- helpers -------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void count(const char *metric, const char *help, const struct px_httpl *l)
{
    char labels[NAME_MAX_LEN + 16];
    /* Rare paths: the registry lookup (a mutex) is fine, and no pointer
     * outlives px_metrics_shutdown(). */
    snprintf(labels, sizeof(labels), "listener=\"%s\"", l->name);
    px_counter_add(px_counter_get(metric, help, labels), 1);
}

/* Accepting iff not stopped, not paused after a failure, and under the cap. */
static void update_enabled(struct px_httpl *l)
{
    int want = l->lev != NULL && !l->freeing && !l->paused && l->nconns < l->o.max_conns;
    if (l->lev == NULL || want == l->enabled)
        return;
    if (want)
        evconnlistener_enable(l->lev);
    else
        evconnlistener_disable(l->lev);
    l->enabled = want;
}

static void list_del(struct hconn **head, struct hconn *hc)
{
    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        *head = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    hc->prev = hc->next = NULL;
}

static void list_add(struct hconn **head, struct hconn *hc)
{
    hc->prev = NULL;
    hc->next = *head;
    if (*head != NULL)
        (*head)->prev = hc;
    *head = hc;
}

static void arm_deadline(struct hconn *hc)
{
    int64_t ms = hc->l->o.request_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    if (hc->deadline != NULL && ms > 0)
        evtimer_add(hc->deadline, &tv);
}

/* ---- reserve descriptors ---------------------------------------------------- */

static void refill_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_httpl *l = arg;
    (void)fd;
    (void)what;
    while (l->nreserve < l->o.reserve_fds) {
        int r = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (r < 0) {
            struct timeval tv = {REFILL_RETRY_S, 0};
            evtimer_add(l->refill, &tv);
            return;
        }
        l->reserve[l->nreserve++] = r;
    }
}

static void refill_soon(struct px_httpl *l)
{
    struct timeval now = {0, 0};
    if (!l->freeing && l->refill != NULL && l->nreserve < l->o.reserve_fds)
        evtimer_add(l->refill, &now);
}

/* ---- accept failures -------------------------------------------------------- */

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_httpl *l = arg;
    (void)fd;
    (void)what;
    l->paused = 0;
    update_enabled(l);
}

static void accept_error_cb(struct evconnlistener *lev, void *http_arg)
{
    struct px_httpl *l = reg_find(lev);
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, PX_HTTPL_PAUSE_MS * 1000};
    struct pollfd pfd;
    (void)http_arg;

    if (l == NULL)
        return;
    /* accept() takes a descriptor before it looks at the queue, so it fails
     * with EMFILE on an empty queue too: evconnlistener calls again after
     * each connection it took. Nothing is waiting then, nothing spins, and
     * neither a pause nor a reserved descriptor is needed. */
    pfd.fd = evconnlistener_get_fd(lev);
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, 0) == 0)
        return;
    px_counter_add(px_counter_get("picket_accept_failures_total",
                                  "accept() failures (e.g. out of file descriptors)", ""),
                   1);
    if ((err == EMFILE || err == ENFILE) && l->nreserve > 0) {
        /* Give one reserved descriptor back: the connection is taken with it
         * on the next loop turn (the socket is still readable). */
        close(l->reserve[--l->nreserve]);
        px_log(PX_LOG_WARN, "accept_failed", "listener", l->name, "error",
               evutil_socket_error_to_string(err), "msg", "taking a reserved descriptor", NULL);
        return;
    }
    /* The pending connection stays in the kernel's queue and the socket
     * stays readable, so retrying at once would spin: pause, log once per
     * pause; open connections carry on. */
    px_log(PX_LOG_WARN, "accept_failed", "listener", l->name, "error",
           evutil_socket_error_to_string(err), "msg", "pausing this listener for 200ms", NULL);
    l->paused = 1;
    update_enabled(l);
    evtimer_add(l->retry, &tv);
}

/* ---- connections -------------------------------------------------------------- */

static void close_cb(struct evhttp_connection *evcon, void *arg)
{
    struct hconn *hc = arg;
    struct px_httpl *l = hc->l;

    /* evhttp calls this once, before it closes the descriptor (it clears
     * the descriptor afterwards, so a later free does not call again). */
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    if (l->o.on_close != NULL)
        l->o.on_close(evcon, l->o.arg);
    list_del(&l->conns, hc);
    if (hc->deadline != NULL)
        event_free(hc->deadline);
    free(hc);
    l->nconns--;
    update_enabled(l);
    refill_soon(l); /* after the descriptor is closed, i.e. on the next turn */
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hconn *hc = arg;
    struct px_httpl *l = hc->l;
    char *addr = NULL, peer[80], ms[24];
    ev_uint16_t port = 0;
    (void)fd;
    (void)what;

    evhttp_connection_get_peer(hc->evcon, &addr, &port);
    snprintf(peer, sizeof(peer), "%s:%u", addr != NULL ? addr : "?", (unsigned)port);
    snprintf(ms, sizeof(ms), "%lld", (long long)l->o.request_timeout_ms);
    px_log(PX_LOG_INFO, "request_timeout", "listener", l->name, "peer", peer, "timeout_ms", ms,
           "msg", "no complete request in time: connection closed", NULL);
    count("picket_listener_request_timeouts_total",
          "Connections closed because no complete request arrived in time", l);
    evhttp_connection_free(hc->evcon); /* close_cb frees hc */
}

static void complete_cb(struct evhttp_request *req, void *arg)
{
    (void)req;
    arm_deadline(arg); /* the next request on this connection */
}

static void adopt_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_httpl *l = arg;
    (void)fd;
    (void)what;

    while (l->pending != NULL) {
        struct hconn *hc = l->pending;
        bufferevent_event_cb ecb = NULL;
        void *cbarg = NULL;

        list_del(&l->pending, hc);
        bufferevent_getcb(hc->bev, NULL, NULL, &ecb, &cbarg);
        if (ecb == NULL || cbarg == NULL) {
            /* evhttp freed it while setting it up: ours is the last reference */
            bufferevent_decref(hc->bev);
            free(hc);
            l->nconns--;
            update_enabled(l);
            continue;
        }
        hc->evcon = cbarg;
        hc->deadline = evtimer_new(l->base, deadline_cb, hc);
        evhttp_connection_set_closecb(hc->evcon, close_cb, hc);
        list_add(&l->conns, hc);
        bufferevent_decref(hc->bev); /* evhttp's own reference keeps it */
        hc->bev = NULL;
        arm_deadline(hc);
    }
}

static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
    struct px_httpl *l = arg;
    struct bufferevent *bev = l->o.bevcb != NULL ? l->o.bevcb(base, l->o.arg) : NULL;
    struct hconn *hc;

    if (bev == NULL)
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        return NULL; /* out of memory: evhttp tries itself; such a connection is not counted */
    hc = calloc(1, sizeof(*hc));
    if (hc == NULL)
        return bev;
    hc->l = l;
    hc->bev = bev;
    bufferevent_incref(bev);
    list_add(&l->pending, hc);
    l->nconns++;
    event_active(l->adopt, EV_TIMEOUT, 0);
    if (l->nconns >= l->o.max_conns) {
        int64_t now = mono_ms();
        count("picket_listener_full_total", "Times a listener reached its connection cap", l);
        if (now - l->full_logged_ms >= FULL_LOG_GAP_MS) {
            char cap[24];
            snprintf(cap, sizeof(cap), "%zu", l->o.max_conns);
            px_log(PX_LOG_WARN, "listener_full", "listener", l->name, "max_connections", cap, "msg",
                   "connection cap reached: new connections wait until one closes", NULL);
            l->full_logged_ms = now;
        }
    }
    update_enabled(l); /* at the cap: evconnlistener stops after this connection */
    return bev;
}

static void handle_cb(struct evhttp_request *req, void *arg)
{
    struct px_httpl *l = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct hconn *hc;

    for (hc = l->conns; hc != NULL && hc->evcon != evcon; hc = hc->next)
        ;
    if (hc != NULL) {
        if (hc->deadline != NULL)
            evtimer_del(hc->deadline);
        evhttp_request_set_on_complete_cb(req, complete_cb, hc);
    }
    l->o.handle(req, l->o.arg);
}

/* ---- lifetime ------------------------------------------------------------------- */

static int bind_listener(struct px_httpl *l, char *err, size_t errlen)
{
    struct evutil_addrinfo hints, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char port[8];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE;
    snprintf(port, sizeof(port), "%d", l->o.port);
    rc = evutil_getaddrinfo(l->o.host, port, &hints, &ai);
    if (rc != 0 || ai == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", l->o.host, l->o.port,
                 rc != 0 ? evutil_gai_strerror(rc) : "no address");
        return -1;
    }
    /* The first address only ("localhost" may give ::1 and 127.0.0.1), as
     * evhttp_bind_socket() did. Created disabled: evhttp_bind_listener()
     * installs the accept callback, then update_enabled() starts it. */
    l->lev = evconnlistener_new_bind(l->base, NULL, NULL,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED,
                                     128, ai->ai_addr, (int)ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (l->lev == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", l->o.host, l->o.port, strerror(errno));
        return -1;
    }
    l->bound = evhttp_bind_listener(l->http, l->lev);
    if (l->bound == NULL) {
        evconnlistener_free(l->lev);
        l->lev = NULL;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    evconnlistener_set_error_cb(l->lev, accept_error_cb);
    l->port = l->o.port;
    if (getsockname(evconnlistener_get_fd(l->lev), (struct sockaddr *)&ss, &sl) == 0)
        l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int px_httpl_new(struct px_httpl **out, struct event_base *base, const struct px_httpl_opts *o,
                 char *err, size_t errlen)
{
    struct px_httpl *l = calloc(1, sizeof(*l));

    *out = NULL;
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    l->o = *o;
    l->base = base;
    snprintf(l->name, sizeof(l->name), "%s", o->name != NULL ? o->name : "http");
    if (l->o.max_conns == 0)
        l->o.max_conns = 1;
    if (l->o.reserve_fds > PX_HTTPL_MAX_RESERVE)
        l->o.reserve_fds = PX_HTTPL_MAX_RESERVE;
    l->http = evhttp_new(base);
    l->adopt = event_new(base, -1, 0, adopt_cb, l);
    l->retry = evtimer_new(base, retry_cb, l);
    l->refill = evtimer_new(base, refill_cb, l);
    if (l->http == NULL || l->adopt == NULL || l->retry == NULL || l->refill == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    evhttp_set_bevcb(l->http, bev_cb, l);
    evhttp_set_gencb(l->http, handle_cb, l);
    evhttp_set_max_headers_size(l->http, o->max_headers_size);
    evhttp_set_max_body_size(l->http, o->max_body_size);
    evhttp_set_timeout(l->http, o->io_timeout_s);
    evhttp_set_allowed_methods(l->http, o->allowed_methods);
    refill_cb(-1, 0, l);
    if (bind_listener(l, err, errlen) != 0)
        goto fail;
    reg_add(l);
    update_enabled(l);
    *out = l;
    return 0;
fail:
    px_httpl_free(l);
    return -1;
}

struct evhttp *px_httpl_http(struct px_httpl *l)
{
    return l->http;
}

int px_httpl_port(const struct px_httpl *l)
{
    return l->port;
}

size_t px_httpl_conns(const struct px_httpl *l)
{
    return l->nconns;
}

size_t px_httpl_reserve(const struct px_httpl *l)
{
    return l->nreserve;
}

void px_httpl_stop(struct px_httpl *l)
{
    if (l == NULL || l->bound == NULL)
        return;
    reg_del(l);
    evhttp_del_accept_socket(l->http, l->bound); /* frees the evconnlistener */
    l->bound = NULL;
    l->lev = NULL;
    l->enabled = 0;
    if (l->retry != NULL)
        evtimer_del(l->retry);
}

void px_httpl_free(struct px_httpl *l)
{
    if (l == NULL)
        return;
    reg_del(l);
    l->freeing = 1;
    l->lev = NULL;
    if (l->http != NULL)
        evhttp_free(l->http); /* the listener, then each connection (close_cb) */
    while (l->pending != NULL) {
        struct hconn *hc = l->pending;
        list_del(&l->pending, hc);
        bufferevent_decref(hc->bev);
        free(hc);
    }
    if (l->adopt != NULL)
        event_free(l->adopt);
    if (l->retry != NULL)
        event_free(l->retry);
    if (l->refill != NULL)
        event_free(l->refill);
    while (l->nreserve > 0)
        close(l->reserve[--l->nreserve]);
    free(l);
}
