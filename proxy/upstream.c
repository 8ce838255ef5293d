/*
 * upstream.c - per-worker upstream pools: one pool per distinct upstream
 * (protocol, host, port), created on first use, living as long as the
 * worker. The protocol halves (up_h2.c, up_h1.c) own the connections.
 */
#include "px.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "worker.h"

int px_https_url_split(const char *url, char *host, size_t hostcap, char *port, size_t portcap,
                       const char **path)
{
    const char *p, *end, *colon = NULL, *hs, *he;
    size_t n;

    if (strncasecmp(url, "https://", 8) != 0)
        return -1;
    p = url + 8;
    end = p + strcspn(p, "/");
    if (p[0] == '[') { /* [::1]:8443 */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (rb == NULL || (rb + 1 < end && rb[1] != ':'))
            return -1;
        hs = p + 1;
        he = rb;
        colon = rb + 1 < end ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        hs = p;
        he = colon ? colon : end;
    }
    n = (size_t)(he - hs);
    if (n == 0 || n >= hostcap)
        return -1;
    memcpy(host, hs, n);
    host[n] = '\0';
    if (colon != NULL) {
        n = (size_t)(end - colon - 1);
        if (n == 0 || n >= portcap)
            return -1;
        memcpy(port, colon + 1, n);
        port[n] = '\0';
    } else {
        if (portcap < 4)
            return -1;
        memcpy(port, "443", 4);
    }
    if (path != NULL)
        *path = *end ? end : "/";
    return 0;
}

int px_resolve(const char *host, const char *port, struct sockaddr_storage *out, socklen_t *len)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

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
    snprintf(key, sizeof(key), "%s%s%s%s%s%s%s", parts[0], parts[1], parts[2], parts[3], parts[4],
             parts[5], parts[6]);
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    memcpy(p->key, key, sizeof(key));
    p->proto = up->proto;
    p->h2 = up->proto != PX_UP_H1;
    if (up->proto == PX_UP_MTLS) {
        p->tls = 1;
        p->alpn = up->alpn_probe ? PX_ALPN_PROBE : PX_ALPN_FIXED;
        snprintf(p->server_id, sizeof(p->server_id), "%s", up->server_id ? up->server_id : "");
        /* SNI only for names (RFC 6066 3: literal IP addresses are not permitted). */
        if (inet_pton(AF_INET, up->host, &a4) != 1 && inet_pton(AF_INET6, up->host, &a6) != 1)
            snprintf(p->sni, sizeof(p->sni), "%s", up->host);
    }
    if (px_resolve(up->host, up->port, &p->addr, &p->addrlen) != 0) {
        free(p);
        return NULL;
    }
    p->next = w->pools;
    w->pools = p;
    return p;
}

void px_upstream_start(struct px_worker *w, const struct px_upstream_addr *up,
                       struct px_stream *st)
{
    struct px_pool *pool = pool_get(w, up);
    if (pool == NULL) {
        px_stream_up_fail(st, 503, "upstream_unresolvable");
        return;
    }
    if (pool->h2)
        px_up_h2_start(w, pool, st);
    else
        px_up_h1_start(w, pool, st);
}

void px_pools_free(struct px_worker *w)
{
    while (w->pools != NULL) {
        struct px_pool *p = w->pools;
        w->pools = p->next;
        /* a probing pool may hold connections of both kinds */
        px_up_h2_pool_free(p);
        px_up_h1_pool_free(p);
        free(p);
    }
}
