/*
 * conn.c - the downstream connection object: its place in the worker's
 * list, the process-wide counts the accept path checks, its buffers in
 * the memory budget, and the three things anyone may ask of it (drain,
 * end, close), which its protocol does through c->ops.
 */
#include "px.h"
#include "xfcc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>

#include "log.h"
#include "metrics.h"
#include "snapshot.h"

atomic_long px_active_conns;
/* Per listener kind (inbound, outbound), and connections still in their
 * TLS handshake: an unauthenticated flood on the inbound listener fills
 * its own counts, never the app's outbound listener's (the admin listener
 * has its own, admin.c). */
atomic_long px_conns_by_kind[2];
atomic_long px_handshaking;
char px_conn_no_peer[1] = "";

static struct px_gauge *active_gauge(void)
{
    static _Atomic(struct px_gauge *) g;
    struct px_gauge *v = atomic_load_explicit(&g, memory_order_acquire);
    if (v == NULL) {
        v = px_gauge_get("picket_connections_active", "Open downstream connections", "");
        atomic_store_explicit(&g, v, memory_order_release);
    }
    return v;
}

static void close_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    (void)fd;
    (void)what;
    /* drain_timeout has passed since its identity ended: whatever is in
     * flight is cut now */
    px_conn_close(c);
}

void px_conn_end_identity(struct px_conn *c, enum px_reason reason)
{
    char labels[64];
    int64_t ms = c->snap->cfg->limits.drain_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};

    if (c->identity_ended != PX_R_NONE)
        return;
    c->identity_ended = reason;
    snprintf(labels, sizeof(labels), "reason=\"%s\"", px_reason_name(reason));
    px_counter_add(px_counter_get("picket_connections_closed_total",
                                  "Connections ended by picket because their peer's identity "
                                  "no longer holds",
                                  labels),
                   1);
    px_log(PX_LOG_INFO, "connection_identity_ended", "listener", c->lst->name, "peer",
           c->peer_addr, "peer_id", c->peer_id, "reason", px_reason_name(reason), "msg",
           "no new requests; closing once those in flight end", NULL);
    /* the handshake timer slot is free once handshaken: it becomes the
     * deadline for what is in flight */
    if (c->cert_timer != NULL)
        evtimer_del(c->cert_timer);
    if (c->timer != NULL) {
        event_free(c->timer);
        c->timer = NULL;
    }
    c->timer = evtimer_new(c->w->base, close_deadline_cb, c);
    if (c->timer != NULL)
        evtimer_add(c->timer, &tv);
    if (c->ops != NULL)
        c->ops->end(c);
}

static int conn_kind(const struct px_conn *c)
{
    return PX_KIND_IS_OUTBOUND(c->snap->cfg->listeners[c->lst->index].kind);
}

void px_conn_free(struct px_conn *c)
{
    struct px_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    atomic_fetch_sub(&px_active_conns, 1);
    atomic_fetch_sub(&px_conns_by_kind[conn_kind(c)], 1);
    if (c->counted_handshake)
        atomic_fetch_sub(&px_handshaking, 1);
    px_gauge_add(active_gauge(), -1);
    if (c->timer)
        event_free(c->timer);
    if (c->cert_timer)
        event_free(c->cert_timer);
    px_mem_untrack(&c->trk_in);
    px_mem_untrack(&c->trk_out);
    if (c->ssl != NULL && c->handshaken && (c->bev != NULL || c->fd >= 0))
        SSL_set_shutdown(c->ssl, SSL_RECEIVED_SHUTDOWN);
    if (c->bev) {
        bufferevent_free(c->bev);
    } else if (c->fd >= 0) {
        SSL_free(c->ssl); /* our reference (libevent's went, or goes, with its bufferevent) */
        close(c->fd);
    }
    px_snapshot_unref(c->snap);
    if (c->peer_id != px_conn_no_peer)
        free(c->peer_id);
    free(c->hs_detail);
    free(c->xfcc);
    free(c);
    if (w->draining && w->nconns == 0)
        event_base_loopexit(w->base, NULL);
}

int px_conn_track(struct px_conn *c)
{
    if (px_mem_track(&c->trk_in, bufferevent_get_input(c->bev), PX_MEM_SOCKETS, &c->mem) != 0 ||
        px_mem_track(&c->trk_out, bufferevent_get_output(c->bev), PX_MEM_SOCKETS, &c->mem) != 0) {
        px_mem_untrack(&c->trk_in);
        return -1;
    }
    return 0;
}

void px_conn_drain(struct px_conn *c)
{
    /* A connection still in its handshake finishes it; its protocol then
     * starts drained (w->drain_notified). */
    if (c->ops != NULL)
        c->ops->drain(c);
}

void px_conn_close(struct px_conn *c)
{
    if (c->ops != NULL)
        c->ops->close(c);
    else
        px_conn_free(c);
}

/* The address alone (x-forwarded-for): "10.0.0.7", "2001:db8::1"; "" when
 * not an IP socket. */
static void addr_ip(const struct sockaddr *sa, char *buf, size_t len)
{
    buf[0] = '\0';
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                  (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                  (socklen_t)len);
}

static void addr_str(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, len, "[%s]:%d", host, port);
    } else {
        snprintf(buf, len, "unknown");
    }
}

struct px_conn *px_conn_new(struct px_listener *l, const struct sockaddr *sa)
{
    struct px_worker *w = l->w;
    struct px_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->w = w;
    c->lst = l;
    c->fd = -1;
    c->peer_id = px_conn_no_peer;
    c->snap = px_snapshot_ref(w->snap);
    c->accepted_ms = px_now_ms();
    addr_str(sa, c->peer_addr, sizeof(c->peer_addr));
    addr_ip(sa, c->peer_ip, sizeof(c->peer_ip));
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    atomic_fetch_add(&px_active_conns, 1); /* px_conns_by_kind: the caller took the slot */
    px_gauge_add(active_gauge(), 1);
    if (l->conns_total)
        px_counter_add(l->conns_total, 1);
    return c;
}

const char *px_conn_xfcc(struct px_conn *c, const struct px_snapshot *snap, size_t *len)
{
    char buf[4400];
    int n;
    if (c->xfcc != NULL && c->xfcc_gen == snap->gen) {
        *len = c->xfcc_len;
        return c->xfcc;
    }
    free(c->xfcc);
    c->xfcc = NULL;
    *len = 0;
    n = px_xfcc_build(buf, sizeof(buf), snap->own_id ? snap->own_id : "", c->peer_cert_hash,
                      c->peer_id);
    if (n <= 0 || (c->xfcc = malloc((size_t)n + 1)) == NULL)
        return NULL;
    memcpy(c->xfcc, buf, (size_t)n + 1);
    c->xfcc_len = (size_t)n;
    c->xfcc_gen = snap->gen;
    *len = c->xfcc_len;
    return c->xfcc;
}
