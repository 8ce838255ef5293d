/*
 * worker.c - worker threads: one event base each, one SO_REUSEPORT
 * listener per configured listener each (the kernel spreads connections),
 * the TLS handshake, and hand-off to h2.c / h1.c by ALPN (to tunnel.c on
 * opaque TCP listeners).
 *
 * Workers get messages, not locked shared state: the control thread posts
 * a new snapshot or a drain order to the worker's mailbox (mailbox.h; the
 * worker's base has no lock, so no other thread may touch it); the worker
 * swaps its own pointer on its own thread.
 */
#include "px.h"
#include "upstream.h"
#include "url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "certs.h"
#include "log.h"
#include "mailbox.h"
#include "metrics.h"
#include "dispatch.h"
#include "gate.h"
#include "h1.h"
#include "h2.h"
#include "tmalloc.h"
#include "tunnel.h"
#include "worker.h"


static struct px_counter *hs_counter(const char *listener, const char *result)
{
    char labels[200];
    snprintf(labels, sizeof(labels), "listener=\"%s\",result=\"%s\"", listener, result);
    return px_counter_get("picket_handshakes_total",
                          "TLS handshakes by listener and result (ok or refusal reason)", labels);
}

/* ---- identity lifetime ------------------------------------------------------ */

static void cert_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    (void)fd;
    (void)what;
    if ((int64_t)time(NULL) < c->peer_not_after) {
        /* timers run early or late by a little; wait out the rest */
        struct timeval tv = {(time_t)(c->peer_not_after - (int64_t)time(NULL)), 0};
        evtimer_add(c->cert_timer, &tv);
        return;
    }
    px_conn_end_identity(c, PX_R_PEER_CERT_EXPIRED);
}

/* After the handshake: the connection lives no longer than the peer's
 * certificate chain. */
static void arm_cert_timer(struct px_conn *c)
{
    struct timeval tv;
    int64_t now = (int64_t)time(NULL);
    c->peer_not_after = px_ssl_peer_not_after(c->ssl);
    if (c->peer_not_after <= 0 || c->peer_id[0] == '\0')
        return;
    c->cert_timer = evtimer_new(c->w->base, cert_timer_cb, c);
    if (c->cert_timer == NULL)
        return;
    tv.tv_sec = (time_t)(c->peer_not_after > now ? c->peer_not_after - now : 0);
    tv.tv_usec = 0;
    evtimer_add(c->cert_timer, &tv);
}

/* A new snapshot brought other trust bundles (or another SVID lifetime
 * cap): each connection's peer chain is checked again against them, and
 * those that no longer verify are ended like expired ones. */
static void recheck_identities(struct px_worker *w, const struct px_snapshot *old)
{
    const struct px_snapshot *s = w->snap;
    struct px_conn *c, *next;
    if (old != NULL && old->trust == s->trust &&
        old->cfg->identity.max_svid_lifetime_ms == s->cfg->identity.max_svid_lifetime_ms)
        return;
    for (c = w->conns; c != NULL; c = next) {
        X509 *leaf;
        enum certs_reason r = CERTS_R_OK;
        char id[2100], err[256];
        next = c->next;
        if (c->ssl == NULL || !c->handshaken || c->peer_id[0] == '\0' || c->identity_ended)
            continue;
        leaf = SSL_get0_peer_certificate(c->ssl);
        if (leaf == NULL || s->trust == NULL)
            r = CERTS_R_UNTRUSTED_CHAIN;
        else
            r = certs_svid_check(s->trust, leaf, SSL_get_peer_cert_chain(c->ssl),
                                 (int64_t)time(NULL), s->cfg->identity.max_svid_lifetime_ms / 1000,
                                 id, sizeof(id), err, sizeof(err));
        if (r == CERTS_R_EXPIRED)
            px_conn_end_identity(c, PX_R_PEER_CERT_EXPIRED);
        else if (r != CERTS_R_OK || strcmp(id, c->peer_id) != 0)
            px_conn_end_identity(c, PX_R_PEER_UNTRUSTED);
    }
}

static void hs_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    (void)fd;
    (void)what;
    if (c->proto != PX_PROTO_NONE)
        return;
    px_counter_add(hs_counter(c->lst->name, px_reason_name(PX_R_TIMEOUT)), 1);
    px_log(PX_LOG_INFO, "handshake_timeout", "listener", c->lst->name, "peer", c->peer_addr,
           NULL);
    px_conn_free(c);
}

static void hs_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct px_conn *c = arg;
    const unsigned char *alpn = NULL;
    unsigned alpnlen = 0;
    int rc;

    if (what & BEV_EVENT_CONNECTED) {
        c->handshaken = 1;
        if (c->counted_handshake) {
            c->counted_handshake = 0;
            atomic_fetch_sub(&px_handshaking, 1);
        }
        /* the handshake timer's work is done: an idle connection keeps
         * no event it will not use (a closing one makes its own, conn.c) */
        event_free(c->timer);
        c->timer = NULL;
        px_counter_add(hs_counter(c->lst->name, "ok"), 1);
        arm_cert_timer(c);
        SSL_get0_alpn_selected(c->ssl, &alpn, &alpnlen);
        if (c->snap->cfg->listeners[c->lst->index].kind == PX_LISTENER_TCP_INBOUND)
            rc = px_tunnel_start(c); /* opaque bytes, whatever ALPN said */
        else if (alpnlen == 2 && memcmp(alpn, "h2", 2) == 0)
            rc = px_h2_conn_start(c);
        else
            rc = px_h1_conn_start(c);
        if (rc != 0)
            px_conn_free(c);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        enum px_reason reason = c->hs_reason;
        char detail[256] = "";
        if (reason == PX_R_NONE) {
            if (e != 0) {
                ERR_error_string_n(e, detail, sizeof(detail));
                reason = ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE
                             ? PX_R_NO_CERTIFICATE
                             : PX_R_TLS_ERROR;
            } else {
                reason = PX_R_CLOSED_DURING_HANDSHAKE;
            }
        }
        while (bufferevent_get_openssl_error(bev) != 0)
            ;
        px_counter_add(hs_counter(c->lst->name, px_reason_name(reason)), 1);
        px_log(PX_LOG_INFO, "handshake_refused", "listener", c->lst->name, "peer", c->peer_addr,
               "reason", px_reason_name(reason), "detail", c->hs_detail ? c->hs_detail : detail, NULL);
        px_conn_free(c);
    }
}

/* Plaintext (outbound) listeners take HTTP/1.1 or h2c with prior
 * knowledge from the local app: the first bytes decide (RFC 9113 3.4). */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void sniff_read_cb(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    const unsigned char *p;
    int rc, h2;

    if (n > 24)
        n = 24;
    p = evbuffer_pullup(in, (ssize_t)n);
    if (p == NULL)
        return;
    h2 = memcmp(p, h2_preface, n) == 0;
    if (h2 && n < 24)
        return; /* a prefix of the preface: wait for more */
    /* the sniff's deadline is met (before the start, which may arm a
     * close deadline of its own in c->timer) */
    event_free(c->timer);
    c->timer = NULL;
    rc = h2 ? px_h2_conn_start(c) : px_h1_conn_start(c);
    if (rc != 0)
        px_conn_free(c);
}

static void sniff_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        px_conn_free(arg);
}

#define ACCEPT_PAUSE_US 5000 /* how often a listener paused at max_handshakes looks again */
static void pause_accepting(struct px_listener *l, long us);
static void accept_retry_cb(evutil_socket_t fd, short what, void *arg);

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)evl;
    px_worker_accept(arg, fd, sa, salen);
}

/* Which px_conns_by_kind slot the listener's connections take. */
static int listener_kind(const struct px_listener *l)
{
    return PX_KIND_IS_OUTBOUND(l->w->snap->cfg->listeners[l->index].kind);
}

static void conn_start(struct px_listener *l, evutil_socket_t fd, struct sockaddr *sa);
static int park(struct px_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen);

void px_worker_accept(struct px_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen)
{
    struct px_worker *w = l->w;
    const struct px_config *cfg = w->snap->cfg;
    SSL_CTX *ctx = w->snap->server_ctx[l->index];
    int over;
    int kind = listener_kind(l);

    /* The connection's slot is taken by the same atomic step that checks
     * the cap (as the handshake slot below): every worker accepts, and a
     * load-then-add lets two of them take the last one. px_conn_free gives
     * it back; every refusal below, before the connection exists, too. */
    over = w->draining || w->snap->identity_pending;
    if (!over && atomic_fetch_add(&px_conns_by_kind[kind], 1) >= (long)cfg->limits.max_connections) {
        atomic_fetch_sub(&px_conns_by_kind[kind], 1);
        over = 1;
    }
    if (over) {
        px_counter_add(hs_counter(l->name, px_reason_name(PX_R_OVER_MAX_CONNECTIONS)), 1);
        close(fd);
        return;
    }
    /* Connections that have not yet shown a certificate have their own cap,
     * so a handshake flood cannot fill max_connections. The slot is taken
     * by the same atomic step that checks it: every worker accepts, and a
     * load-then-add let two of them pass at the last free slot. */
    if (ctx != NULL) {
        long before = atomic_fetch_add(&px_handshaking, 1);
        if (before >= (long)cfg->limits.max_handshakes) {
            /* Another worker took the last slot first (each worker has its
             * own SO_REUSEPORT socket, so this one had connections of its
             * own queued). Closing this one would refuse a client that
             * arrived in time: it is parked instead and started when a slot
             * frees, and this listener accepts nothing more meanwhile. */
            atomic_fetch_sub(&px_handshaking, 1);
            if (park(l, fd, sa, salen) == 0)
                return;
            /* already one parked (drain's sweep of the accept queue), or
             * no timer to start it from: closed and counted */
            atomic_fetch_sub(&px_conns_by_kind[kind], 1);
            px_counter_add(hs_counter(l->name, px_reason_name(PX_R_OVER_MAX_HANDSHAKES)), 1);
            close(fd);
            pause_accepting(l, ACCEPT_PAUSE_US);
            return;
        }
        if (before + 1 >= (long)cfg->limits.max_handshakes)
            pause_accepting(l, ACCEPT_PAUSE_US); /* this one took the last slot: the next ones wait */
    }
    conn_start(l, fd, sa);
}

/* An admitted connection (its slots in px_conns_by_kind and, on a TLS
 * listener, px_handshaking taken): made and started. */
static void conn_start(struct px_listener *l, evutil_socket_t fd, struct sockaddr *sa)
{
    struct px_worker *w = l->w;
    const struct px_config *cfg = w->snap->cfg;
    struct px_conn *c;
    SSL_CTX *ctx = w->snap->server_ctx[l->index];
    int64_t ms = cfg->limits.handshake_timeout_ms;
    struct timeval hs_tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    int one = 1;
    int kind = listener_kind(l);

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = px_conn_new(l, sa);
    if (c == NULL) {
        if (ctx != NULL)
            atomic_fetch_sub(&px_handshaking, 1);
        atomic_fetch_sub(&px_conns_by_kind[kind], 1);
        close(fd);
        return;
    }
    c->counted_handshake = ctx != NULL; /* px_conn_free gives the slot back */
    /* the TLS handshake (or, in plaintext, the protocol sniff) must end in time */
    c->timer = evtimer_new(w->base, hs_timeout_cb, c);
    if (c->timer == NULL) {
        close(fd);
        px_conn_free(c);
        return;
    }
    evtimer_add(c->timer, &hs_tv);
    if (ctx == NULL) {
        /* plaintext listener (outbound, from the local app) */
        c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL) {
            close(fd);
            px_conn_free(c);
            return;
        }
        bufferevent_set_max_single_read(c->bev, PX_IO_CHUNK);
        bufferevent_set_max_single_write(c->bev, PX_IO_CHUNK);
        c->handshaken = 1;
        if (cfg->listeners[l->index].kind == PX_LISTENER_TCP_OUTBOUND) {
            /* opaque bytes from the local app: no protocol to sniff */
            if (px_tunnel_start(c) != 0)
                px_conn_free(c);
            return;
        }
        bufferevent_setcb(c->bev, sniff_read_cb, NULL, sniff_event_cb, c);
        bufferevent_enable(c->bev, EV_READ);
        return;
    }
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL) {
        close(fd);
        px_conn_free(c);
        return;
    }
    SSL_set_ex_data(c->ssl, px_ssl_conn_idx, c);
    c->bev = bufferevent_openssl_socket_new(w->base, fd, c->ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        SSL_free(c->ssl);
        close(fd);
        px_conn_free(c);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    /* libevent moves at most 16 KiB per read/write call by default: one
     * syscall per TLS record. Larger moves cut syscalls for bulk bodies. */
    bufferevent_set_max_single_read(c->bev, PX_IO_CHUNK);
    bufferevent_set_max_single_write(c->bev, PX_IO_CHUNK);
    bufferevent_setcb(c->bev, NULL, NULL, hs_event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* Holds a connection accepted over max_handshakes (px_worker_accept) until
 * a slot frees, and pauses the listener: at most one per listener, since a
 * paused listener accepts nothing more. Its max_connections slot stays
 * taken. -1 when it cannot be held: one is already (drain's sweep of the
 * accept queue), or there is no timer to start it from. */
static int park(struct px_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen)
{
    if (l->parked_fd >= 0 || l->evl == NULL)
        return -1;
    if (l->accept_retry == NULL)
        l->accept_retry = evtimer_new(l->w->base, accept_retry_cb, l);
    if (l->accept_retry == NULL)
        return -1;
    l->parked_fd = fd;
    memset(&l->parked_sa, 0, sizeof(l->parked_sa));
    memcpy(&l->parked_sa, sa,
           salen > 0 && (size_t)salen < sizeof(l->parked_sa) ? (size_t)salen
                                                             : sizeof(l->parked_sa));
    pause_accepting(l, ACCEPT_PAUSE_US);
    return 0;
}

/* Starts the parked connection once it can take a handshake slot, or with
 * force regardless of the cap (a draining worker, which accepts nothing
 * more: over it by at most one per listener). 0 when none is left parked. */
static int unpark(struct px_listener *l, int force)
{
    struct px_worker *w = l->w;
    evutil_socket_t fd = l->parked_fd;

    if (fd < 0)
        return 0;
    if (w->snap->server_ctx[l->index] != NULL &&
        atomic_fetch_add(&px_handshaking, 1) >= (long)w->snap->cfg->limits.max_handshakes &&
        !force) {
        atomic_fetch_sub(&px_handshaking, 1);
        return -1;
    }
    l->parked_fd = -1;
    conn_start(l, fd, (struct sockaddr *)&l->parked_sa);
    return 0;
}

/* The listener accepts again, once its parked connection is started and
 * handshake slots are free; until then it looks again every
 * ACCEPT_PAUSE_US. */
static void resume_accepting(struct px_listener *l)
{
    struct px_worker *w = l->w;
    if (unpark(l, 0) != 0 ||
        (w->snap->server_ctx[l->index] != NULL &&
         atomic_load(&px_handshaking) >= (long)w->snap->cfg->limits.max_handshakes)) {
        pause_accepting(l, ACCEPT_PAUSE_US); /* still full: look again soon */
        return;
    }
    evconnlistener_enable(l->evl);
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_listener *l = arg;
    struct px_worker *w = l->w;
    (void)fd;
    (void)what;
    if (l->evl == NULL || w->draining || w->snap->identity_pending)
        return;
    resume_accepting(l);
}

/* This listener accepts nothing for `us` microseconds, then looks again
 * (accept_retry_cb). The connections that arrive meanwhile wait in the
 * kernel's accept queue (the listen backlog). Two callers: accept errors
 * (out of descriptors: 200 ms), and limits.max_handshakes reached, which
 * holds until handshakes in flight drop below it, checked every
 * ACCEPT_PAUSE_US (the slots may be freed on any worker) - as with nginx's
 * and HAProxy's connection limits, a reconnect burst of thousands of
 * clients is then served at the rate handshakes finish instead of being
 * accepted only to be closed. */
static void pause_accepting(struct px_listener *l, long us)
{
    struct timeval tv = {us / 1000000, us % 1000000};
    if (l->accept_retry == NULL)
        l->accept_retry = evtimer_new(l->w->base, accept_retry_cb, l);
    if (l->accept_retry == NULL || l->evl == NULL)
        return; /* cannot be woken again: keep accepting (and closing over the cap) */
    evconnlistener_disable(l->evl);
    evtimer_add(l->accept_retry, &tv);
}

static void accept_error_cb(struct evconnlistener *evl, void *arg)
{
    struct px_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    (void)evl;
    /* Out of descriptors (EMFILE/ENFILE) or buffers: the pending connection
     * stays in the kernel queue and the socket stays readable, so retrying
     * at once would spin. Pause this listener for 200 ms and log once per
     * pause; existing connections carry on. */
    px_counter_add(px_counter_get("picket_accept_failures_total",
                                  "accept() failures (e.g. out of file descriptors)", ""),
                   1);
    px_log(PX_LOG_WARN, "accept_failed", "listener", l->name, "error",
           evutil_socket_error_to_string(err), "msg", "pausing this listener for 200ms", NULL);
    pause_accepting(l, 200 * 1000);
}

/* identity.source workload_api: until the first SVID arrives the
 * listeners are bound but take no connection (clients wait in the kernel's
 * accept queue and are served once it does). The loop stays up meanwhile:
 * the mailbox's event is always pending. */
static void apply_accepting(struct px_worker *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        struct px_listener *l = &w->listeners[i];
        if (l->evl == NULL)
            continue;
        if (w->snap->identity_pending)
            evconnlistener_disable(l->evl);
        else if (!w->draining)
            resume_accepting(l);
    }
}

int px_worker_init_listeners(struct px_worker *w, char *err, size_t errlen)
{
    const struct px_config *cfg = w->snap->cfg;
    w->listeners = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*w->listeners));
    if (w->listeners == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    w->nlisteners = cfg->nlisteners;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct px_listener *l = &w->listeners[i];
        char labels[120];

        l->w = w;
        l->index = i;
        l->parked_fd = -1;
        l->gate = &px_gate_pipeline;
        snprintf(l->name, sizeof(l->name), "%s", cfg->listeners[i].name);
        snprintf(labels, sizeof(labels), "listener=\"%s\"", l->name);
        l->duration = px_histogram_get("picket_request_duration_seconds",
                                       "Request duration from headers to end of response",
                                       labels, PX_LATENCY_BOUNDS, PX_LATENCY_NBOUNDS);
        l->conns_total = px_counter_get("picket_connections_total", "Accepted connections",
                                        labels);
    }
    return 0;
}

int px_worker_listen(struct px_worker *w, char *err, size_t errlen)
{
    const struct px_config *cfg = w->snap->cfg;
    if (px_worker_init_listeners(w, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct px_listener_cfg *lc = &cfg->listeners[i];
        struct px_listener *l = &w->listeners[i];
        struct sockaddr_storage ss;
        socklen_t sl;

        if (px_resolve(lc->bind_host, lc->bind_port, &ss, &sl) != 0) {
            snprintf(err, errlen, "listeners[%zu] (%s): cannot resolve %s:%s", i, lc->name,
                     lc->bind_host, lc->bind_port);
            return -1;
        }
        l->evl = evconnlistener_new_bind(w->base, accept_cb, l,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                             LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
                                         4096, (struct sockaddr *)&ss, (int)sl);
        if (l->evl == NULL) {
            snprintf(err, errlen, "listeners[%zu] (%s): cannot listen on %s:%s: %s", i, lc->name,
                     lc->bind_host, lc->bind_port, strerror(errno));
            return -1;
        }
        evconnlistener_set_error_cb(l->evl, accept_error_cb);
    }
    apply_accepting(w);
    return 0;
}

static void mem_reset_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    px_stream_mem_reset(arg);
}

static void mem_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    px_mem_flush();
}

static void log_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    px_log_batch_flush();
}

/* Blocks this thread kept for requests and no request took in the last
 * second go back to malloc (tmalloc.h). */
static void decay_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    px_tmalloc_decay();
}

static void *worker_main(void *arg)
{
    struct px_worker *w = arg;
    struct timeval second = {1, 0};
    if (w->decay_ev == NULL && (w->decay_ev = event_new(w->base, -1, EV_PERSIST, decay_cb, w)) != NULL)
        event_add(w->decay_ev, &second); /* without it (no memory), classes keep up to their cap */
    if (w->mem_ev == NULL)
        w->mem_ev = event_new(w->base, -1, 0, mem_reset_cb, w);
    if (w->log_ev == NULL)
        w->log_ev = event_new(w->base, -1, 0, log_flush_cb, w);
    if (w->mem_flush_ev == NULL)
        w->mem_flush_ev = event_new(w->base, -1, 0, mem_flush_cb, w);
    px_mem_thread_event(w->mem_ev);
    px_mem_thread_flush_event(w->mem_flush_ev); /* NULL (no memory): charged one by one */
    px_log_thread_event(w->log_ev); /* NULL (no memory): records written one by one */
    event_base_dispatch(w->base);
    px_log_thread_event(NULL);
    px_mem_thread_flush_event(NULL);
    px_mem_thread_event(NULL);
    return NULL;
}

int px_worker_start(struct px_worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w);
}

/* ---- messages from the control thread --------------------------------- */

struct swap_msg {
    struct px_worker *w;
    struct px_snapshot *snap;
    struct px_policy_state *pol;
    int has_pol;
};

static void swap_drop(void *arg)
{
    struct swap_msg *m = arg;
    px_snapshot_unref(m->snap);
    if (m->has_pol)
        px_policy_state_unref(m->pol);
    free(m);
}

static void swap_run(void *arg)
{
    struct swap_msg *m = arg;
    if (m->snap != NULL) {
        struct px_snapshot *old = m->w->snap;
        m->w->snap = m->snap;
        if (old == NULL || old->identity_pending != m->snap->identity_pending)
            apply_accepting(m->w);
        recheck_identities(m->w, old);
        px_snapshot_unref(old);
    }
    if (m->has_pol) {
        struct px_policy_state *old = m->w->policy;
        m->w->policy = m->pol;
        px_policy_state_unref(old);
    }
    free(m);
}

/* Takes its own references to snap and pol (either may be absent). */
static int post_swap(struct px_worker *w, struct px_snapshot *snap, struct px_policy_state *pol,
                     int has_pol)
{
    struct swap_msg *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -1;
    m->w = w;
    m->snap = snap != NULL ? px_snapshot_ref(snap) : NULL;
    m->pol = has_pol ? px_policy_state_ref(pol) : NULL;
    m->has_pol = has_pol;
    if (px_mailbox_post(w->mailbox, swap_run, swap_drop, m) != 0) {
        swap_drop(m);
        return -1;
    }
    return 0;
}

int px_worker_post_snapshot(struct px_worker *w, struct px_snapshot *snap)
{
    return post_swap(w, snap, NULL, 0);
}

int px_worker_post_policy(struct px_worker *w, struct px_policy_state *pol)
{
    return post_swap(w, NULL, pol, 1);
}

static void close_all(struct px_worker *w)
{
    while (w->conns != NULL) {
        struct px_conn *c = w->conns;
        /* Closing forcibly: its protocol frees its streams. */
        px_conn_close(c);
    }
}

static void drain_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_worker *w = arg;
    (void)fd;
    (void)what;
    if (w->nconns > 0)
        px_log(PX_LOG_WARN, "drain_timeout", "msg", "closing connections still open", NULL);
    close_all(w);
    event_base_loopexit(w->base, NULL);
}

/* Connections already in the kernel's accept queue are taken before the
 * listener closes: closing it would reset them (SO_REUSEPORT does not hand
 * them to the other process's listener unless net.ipv4.tcp_migrate_req=1),
 * and a client that connected before the drain began deserves an answer. */
static void accept_pending(struct px_listener *l)
{
    evutil_socket_t fd = evconnlistener_get_fd(l->evl);
    for (int i = 0; i < 4096; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            break;
        accept_cb(l->evl, cfd, (struct sockaddr *)&ss, (int)sl, l);
    }
}

/* Tells every connection to finish: h2 two-phase GOAWAY, h1 close after
 * the current response. */
static void drain_notify(struct px_worker *w)
{
    w->drain_notified = 1;
    for (struct px_conn *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        px_conn_drain(c);
    }
    if (w->nconns == 0)
        event_base_loopexit(w->base, NULL);
}

static void drain_notice_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drain_notify(arg);
}

static void drain_run(void *arg)
{
    struct px_worker *w = arg;
    int64_t ms = w->snap->cfg->limits.drain_timeout_ms;
    int64_t notice = w->snap->cfg->limits.drain_notice_delay_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    struct timeval ntv = {(time_t)(notice / 1000), (suseconds_t)((notice % 1000) * 1000)};
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].evl) {
            accept_pending(&w->listeners[i]);
            evconnlistener_free(w->listeners[i].evl);
            w->listeners[i].evl = NULL;
        }
        unpark(&w->listeners[i], 1); /* it arrived before the drain, as those above */
    }
    w->draining = 1;
    if (w->nconns == 0) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    /* With drain_notice_delay, connections carry on untouched for that
     * long (clients that reconnect on their own schedule leave without a
     * GOAWAY; those left are told then); the deadline counts from now. */
    if (notice > 0 && (w->drain_notice = evtimer_new(w->base, drain_notice_cb, w)) != NULL)
        evtimer_add(w->drain_notice, &ntv);
    else
        drain_notify(w);
    w->drain_timer = evtimer_new(w->base, drain_deadline_cb, w);
    if (w->drain_timer)
        evtimer_add(w->drain_timer, &tv);
}

int px_worker_post_drain(struct px_worker *w)
{
    return px_mailbox_post(w->mailbox, drain_run, NULL, w);
}

void px_worker_free(struct px_worker *w)
{
    w->draining = 0; /* no loopexit calls from here on */
    close_all(w);
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].evl)
            evconnlistener_free(w->listeners[i].evl);
        if (w->listeners[i].accept_retry)
            event_free(w->listeners[i].accept_retry);
        if (w->listeners[i].parked_fd >= 0) {
            close(w->listeners[i].parked_fd);
            atomic_fetch_sub(&px_conns_by_kind[listener_kind(&w->listeners[i])], 1);
        }
    }
    free(w->listeners);
    px_dispatch_free(w);
    px_pools_free(w);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->drain_notice)
        event_free(w->drain_notice);
    if (w->mem_ev)
        event_free(w->mem_ev);
    if (w->mem_flush_ev)
        event_free(w->mem_flush_ev);
    if (w->log_ev)
        event_free(w->log_ev);
    if (w->decay_ev)
        event_free(w->decay_ev);
    if (w->out_stage) /* px_pools_free freed it: one made since would be */
        evbuffer_free(w->out_stage);
    px_mailbox_free(w->mailbox); /* messages not run: their references go */
    px_policy_state_unref(w->policy);
    px_snapshot_unref(w->snap);
    if (w->base)
        event_base_free(w->base);
}
