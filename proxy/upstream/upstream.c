/*
 * upstream.c - per-worker upstream pools: one pool per distinct upstream
 * (protocol, host, port), created on first use, living as long as the
 * worker. The protocol halves (up_h2.c, up_h1.c) own the connections.
 *
 * Names are resolved without blocking the worker (resolver.c) and kept for
 * the record's TTL, clamped to [dns.min_ttl, dns.max_ttl]: a Kubernetes
 * Service or a DNS-balanced backend that moves is followed. Past the TTL
 * the last good address keeps serving while a new lookup runs, and stays
 * in use if that lookup fails (tried again after dns.negative_ttl). A name
 * that never resolved fails its requests (503 upstream_unresolvable) and
 * is not asked again for dns.negative_ttl.
 */
#include "px.h"
#include "upstream.h"
#include "url.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "metrics.h"
#include "resolver.h"

/* 1 if key is exactly the concatenation of the n parts (no formatting on
 * the per-request lookup). */
static int key_is(const char *key, const char *const *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(parts[i]);
        if (strncmp(key, parts[i], len) != 0)
            return 0;
        key += len;
    }
    return *key == '\0';
}

static int64_t mono_ms(void)
{
    return px_mono_us() / 1000;
}

static void start_on_pool(struct px_worker *w, struct px_pool *pool, struct px_stream *st)
{
    if (pool->h2)
        px_up_h2_start(w, pool, st);
    else
        px_up_h1_start(w, pool, st);
}

/* ---- streams waiting for a name ------------------------------------------------ */

struct px_pool_waiter {
    struct px_pool_waiter *next, *prev;
    struct px_pool *pool;
    struct px_stream *st;
};

static void waiter_unlink(struct px_pool_waiter *wt)
{
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        wt->pool->waiters = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
}

static void rw_request_ready(struct px_stream *st)
{
    (void)st; /* the body waits in req_body until a connection is chosen */
}

static void rw_response_drained(struct px_stream *st, size_t n)
{
    (void)st;
    (void)n;
}

static void rw_cancel(struct px_stream *st)
{
    struct px_pool_waiter *wt = st->up_ctx;
    if (wt != NULL) {
        waiter_unlink(wt);
        free(wt);
    }
    st->up_ctx = NULL;
    px_stream_up_done(st);
}

static const struct px_up_ops resolve_wait_ops = {rw_request_ready, rw_response_drained,
                                                  rw_cancel};

/* ---- resolution ------------------------------------------------------------------- */

static void resolved(void *arg, int ok, const struct sockaddr *sa, socklen_t len, int64_t ttl_ms,
                     const char *why);

static void resolve_start(struct px_worker *w, struct px_pool *pool)
{
    if (pool->resolving != NULL)
        return;
    if (w->resolver == NULL)
        w->resolver = px_resolver_new(w->base, w->snap->cfg);
    pool->resolving = px_resolver_lookup(w->resolver, pool->host, pool->port, resolved, pool);
}

static void resolved(void *arg, int ok, const struct sockaddr *sa, socklen_t len, int64_t ttl_ms,
                     const char *why)
{
    struct px_pool *pool = arg;
    struct px_worker *w = pool->worker;
    const struct px_config *cfg = w->snap->cfg;
    int64_t now = mono_ms();

    pool->resolving = NULL;
    if (ok) {
        int changed = !pool->has_addr || pool->addrlen != len || memcmp(&pool->addr, sa, len) != 0;
        if (ttl_ms < 0)
            ttl_ms = cfg->dns.max_ttl_ms; /* hosts file: read again after the cap */
        if (ttl_ms < cfg->dns.min_ttl_ms)
            ttl_ms = cfg->dns.min_ttl_ms;
        if (ttl_ms > cfg->dns.max_ttl_ms)
            ttl_ms = cfg->dns.max_ttl_ms;
        memcpy(&pool->addr, sa, len);
        pool->addrlen = len;
        pool->has_addr = 1;
        pool->addr_expires_ms = now + (ttl_ms > 0 ? ttl_ms : 1);
        pool->fail_until_ms = 0;
        if (changed) {
            char a[INET6_ADDRSTRLEN] = "?";
            if (sa->sa_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, a,
                          sizeof(a));
            else
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                          a, sizeof(a));
            px_log(PX_LOG_INFO, "upstream_resolved", "upstream", pool->key, "address", a, NULL);
        }
    } else {
        px_counter_add(px_counter_get("picket_upstream_dns_failures_total",
                                      "Upstream name lookups that failed", ""),
                       1);
        px_log(PX_LOG_WARN, "upstream_resolve_failed", "upstream", pool->key, "error",
               why ? why : "error", "msg",
               pool->has_addr ? "keeping the last good address" : "requests get 503", NULL);
        if (pool->has_addr)
            pool->addr_expires_ms = now + cfg->dns.negative_ttl_ms; /* try again then */
        else
            pool->fail_until_ms = now + cfg->dns.negative_ttl_ms;
    }
    /* the streams that waited for the first answer */
    while (pool->waiters != NULL) {
        struct px_pool_waiter *wt = pool->waiters;
        struct px_stream *st = wt->st;
        waiter_unlink(wt);
        free(wt);
        st->up = NULL;
        st->up_ctx = NULL;
        if (pool->has_addr)
            start_on_pool(w, pool, st);
        else
            px_stream_up_fail(st, 503, PX_R_UPSTREAM_UNRESOLVABLE);
    }
}

static struct px_pool *pool_get(struct px_worker *w, const struct px_upstream_addr *up)
{
    char key[sizeof(((struct px_pool *)0)->key)];
    const char *parts[7] = {up->proto == PX_UP_H2C ? "h2c" : up->proto == PX_UP_H1 ? "http" : "mtls",
                            "://", up->host, ":", up->port, "#",
                            up->server_id ? up->server_id : ""};
    struct px_pool *p;
    struct in6_addr a6;
    struct in_addr a4;

    for (p = w->pools; p != NULL; p = p->next)
        if (key_is(p->key, parts, 7))
            return p;
    if (strlen(up->host) >= sizeof(p->host) || strlen(up->port) >= sizeof(p->port))
        return NULL;
    snprintf(key, sizeof(key), "%s%s%s%s%s%s%s", parts[0], parts[1], parts[2], parts[3], parts[4],
             parts[5], parts[6]);
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    memcpy(p->key, key, sizeof(key));
    p->worker = w;
    p->proto = up->proto;
    p->h2 = up->proto != PX_UP_H1;
    snprintf(p->host, sizeof(p->host), "%s", up->host);
    snprintf(p->port, sizeof(p->port), "%s", up->port);
    if (up->proto == PX_UP_MTLS) {
        p->tls = 1;
        p->alpn = up->alpn_probe ? PX_ALPN_PROBE : PX_ALPN_FIXED;
        snprintf(p->server_id, sizeof(p->server_id), "%s", up->server_id ? up->server_id : "");
        /* SNI only for names (RFC 6066 3: literal IP addresses are not permitted). */
        if (inet_pton(AF_INET, up->host, &a4) != 1 && inet_pton(AF_INET6, up->host, &a6) != 1)
            snprintf(p->sni, sizeof(p->sni), "%s", up->host);
    }
    /* A literal address needs no lookup, and never expires. */
    if (inet_pton(AF_INET, up->host, &a4) == 1 || inet_pton(AF_INET6, up->host, &a6) == 1) {
        if (px_resolve(up->host, up->port, &p->addr, &p->addrlen) != 0) {
            free(p);
            return NULL;
        }
        p->has_addr = 1;
    }
    p->next = w->pools;
    w->pools = p;
    return p;
}

void px_upstream_start(struct px_worker *w, const struct px_upstream_addr *up,
                       struct px_stream *st)
{
    struct px_pool *pool = pool_get(w, up);
    int64_t now;
    if (pool == NULL) {
        px_stream_up_fail(st, 503, PX_R_UPSTREAM_UNRESOLVABLE);
        return;
    }
    now = mono_ms();
    if (pool->has_addr) {
        if (pool->addr_expires_ms != 0 && now >= pool->addr_expires_ms)
            resolve_start(w, pool); /* meanwhile the last good address serves */
        start_on_pool(w, pool, st);
        return;
    }
    if (now < pool->fail_until_ms) {
        px_stream_up_fail(st, 503, PX_R_UPSTREAM_UNRESOLVABLE);
        return;
    }
    {
        struct px_pool_waiter *wt = calloc(1, sizeof(*wt));
        if (wt == NULL) {
            px_stream_up_fail(st, 503, PX_R_OUT_OF_MEMORY);
            return;
        }
        resolve_start(w, pool);
        if (pool->resolving == NULL && !pool->has_addr) {
            free(wt);
            px_stream_up_fail(st, 503, PX_R_UPSTREAM_UNRESOLVABLE);
            return;
        }
        wt->pool = pool;
        wt->st = st;
        wt->next = pool->waiters;
        if (pool->waiters)
            pool->waiters->prev = wt;
        pool->waiters = wt;
        st->up = &resolve_wait_ops;
        st->up_ctx = wt;
    }
}

void px_pools_free(struct px_worker *w)
{
    while (w->pools != NULL) {
        struct px_pool *p = w->pools;
        w->pools = p->next;
        px_resolve_cancel(p->resolving);
        while (p->waiters != NULL) {
            struct px_pool_waiter *wt = p->waiters;
            waiter_unlink(wt);
            wt->st->up = NULL;
            wt->st->up_ctx = NULL;
            free(wt);
        }
        /* a probing pool may hold connections of both kinds */
        px_up_h2_pool_free(p);
        px_up_h1_pool_free(p);
        free(p);
    }
    px_resolver_free(w->resolver);
    w->resolver = NULL;
    if (w->out_stage != NULL) { /* the HTTP/1.1 writers' stage (up_h1.c, h1.c) */
        evbuffer_free(w->out_stage);
        w->out_stage = NULL;
    }
}
