/*
 * resolver.c - asynchronous name resolution for upstreams (resolver.h).
 *
 * Why not getaddrinfo(): it blocks the worker for as long as a nameserver
 * takes, and hides the record's TTL. Why not evdns_getaddrinfo(): it hides
 * the TTL too. So: the hosts file (a table read once: "localhost" and
 * names an operator pins), then evdns_base_resolve_ipv4 / _ipv6, whose
 * callbacks give the TTL. The hosts file format is small enough to read
 * here: an address, names, '#' comments.
 */
#include "resolver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "config.h"

#define HOSTS_MAX_ENTRIES 4096
#define HOSTS_MAX_BYTES (1 << 20)

struct hostent_ {
    char *name;
    struct sockaddr_storage addr;
    socklen_t len;
};

struct px_resolver {
    struct event_base *base;
    struct evdns_base *dns;
    struct hostent_ *hosts;
    size_t nhosts;
    struct px_resolve_req *reqs; /* in flight */
};

struct px_resolve_req {
    struct px_resolve_req *next, *prev;
    struct px_resolver *r;
    struct evdns_request *dreq;
    struct event *ev; /* hosts-file answers are delivered from the loop */
    px_resolve_cb cb;
    void *arg;
    char host[256];
    uint16_t port;
    int stage; /* 0: A, 1: AAAA */
    int ok;
    struct sockaddr_storage addr;
    socklen_t len;
    int64_t ttl_ms;
    const char *why;
};

/* ---- the hosts file -------------------------------------------------------------- */

static void hosts_load(struct px_resolver *r, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    size_t total = 0;

    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL && r->nhosts < HOSTS_MAX_ENTRIES) {
        char *save = NULL, *ip, *name;
        struct sockaddr_storage ss;
        socklen_t len;
        total += strlen(line);
        if (total > HOSTS_MAX_BYTES)
            break;
        line[strcspn(line, "#\r\n")] = '\0';
        ip = strtok_r(line, " \t", &save);
        if (ip == NULL)
            continue;
        memset(&ss, 0, sizeof(ss));
        if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
            ss.ss_family = AF_INET;
            len = sizeof(struct sockaddr_in);
        } else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
            ss.ss_family = AF_INET6;
            len = sizeof(struct sockaddr_in6);
        } else {
            continue;
        }
        while ((name = strtok_r(NULL, " \t", &save)) != NULL && r->nhosts < HOSTS_MAX_ENTRIES) {
            struct hostent_ *nv = realloc(r->hosts, (r->nhosts + 1) * sizeof(*nv));
            if (nv == NULL)
                break;
            r->hosts = nv;
            /* the first line that names it wins, as in the C library */
            if ((nv[r->nhosts].name = strdup(name)) == NULL)
                break;
            nv[r->nhosts].addr = ss;
            nv[r->nhosts].len = len;
            r->nhosts++;
        }
    }
    fclose(f);
}

static const struct hostent_ *hosts_find(const struct px_resolver *r, const char *name)
{
    for (size_t i = 0; i < r->nhosts; i++)
        if (strcasecmp(r->hosts[i].name, name) == 0)
            return &r->hosts[i];
    return NULL;
}

/* ---- the resolver -------------------------------------------------------------------- */

struct px_resolver *px_resolver_new(struct event_base *base, const struct px_config *cfg)
{
    struct px_resolver *r = calloc(1, sizeof(*r));
    char tmo[32];
    if (r == NULL)
        return NULL;
    r->base = base;
    r->dns = evdns_base_new(base, 0);
    if (r->dns == NULL) {
        free(r);
        return NULL;
    }
    /* nameservers, search list and options from resolv.conf; an unreadable
     * one leaves no nameserver, and names not in the hosts file then fail */
    evdns_base_resolv_conf_parse(r->dns, DNS_OPTIONS_ALL & ~DNS_OPTION_HOSTSFILE,
                                 cfg->dns.resolv_conf ? cfg->dns.resolv_conf
                                                      : "/etc/resolv.conf");
    snprintf(tmo, sizeof(tmo), "%lld.%03lld", (long long)(cfg->dns.timeout_ms / 1000),
             (long long)(cfg->dns.timeout_ms % 1000));
    evdns_base_set_option(r->dns, "timeout:", tmo);
    evdns_base_set_option(r->dns, "attempts:", "2");
    hosts_load(r, cfg->dns.hosts ? cfg->dns.hosts : "/etc/hosts");
    return r;
}

static void req_unlink(struct px_resolve_req *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        q->r->reqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->next = q->prev = NULL;
}

static void req_free(struct px_resolve_req *q)
{
    if (q->ev != NULL)
        event_free(q->ev);
    free(q);
}

static void finish(struct px_resolve_req *q)
{
    px_resolve_cb cb = q->cb;
    void *arg = q->arg;
    int ok = q->ok;
    struct sockaddr_storage addr = q->addr;
    socklen_t len = q->len;
    int64_t ttl = q->ttl_ms;
    const char *why = q->why;

    req_unlink(q);
    req_free(q);
    if (cb != NULL)
        cb(arg, ok, (const struct sockaddr *)&addr, len, ttl, why);
}

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg);
}

static void dns_cb(int result, char type, int count, int ttl, void *addresses, void *arg)
{
    struct px_resolve_req *q = arg;
    q->dreq = NULL;
    if (result == DNS_ERR_NONE && count > 0 && type == DNS_IPv4_A) {
        struct sockaddr_in *in = (struct sockaddr_in *)&q->addr;
        memset(&q->addr, 0, sizeof(q->addr));
        in->sin_family = AF_INET;
        in->sin_port = htons(q->port);
        memcpy(&in->sin_addr, addresses, 4);
        q->len = sizeof(*in);
    } else if (result == DNS_ERR_NONE && count > 0 && type == DNS_IPv6_AAAA) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&q->addr;
        memset(&q->addr, 0, sizeof(q->addr));
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(q->port);
        memcpy(&in6->sin6_addr, addresses, 16);
        q->len = sizeof(*in6);
    } else if (q->stage == 0 && (result == DNS_ERR_NONE || result == DNS_ERR_NOTEXIST ||
                                 result == DNS_ERR_NODATA)) {
        /* no A record: an IPv6-only name? */
        q->stage = 1;
        q->dreq = evdns_base_resolve_ipv6(q->r->dns, q->host, 0, dns_cb, q);
        if (q->dreq != NULL)
            return;
        q->why = "resolver_error";
        q->ok = 0;
        finish(q);
        return;
    } else {
        q->ok = 0;
        q->why = result == DNS_ERR_TIMEOUT    ? "timeout"
                 : result == DNS_ERR_NOTEXIST ? "nxdomain"
                 : result == DNS_ERR_NONE || result == DNS_ERR_NODATA ? "no_address"
                                                                      : "dns_error";
        finish(q);
        return;
    }
    q->ok = 1;
    q->ttl_ms = ttl >= 0 ? (int64_t)ttl * 1000 : 0;
    finish(q);
}

struct px_resolve_req *px_resolver_lookup(struct px_resolver *r, const char *host, const char *port,
                                          px_resolve_cb cb, void *arg)
{
    struct px_resolve_req *q;
    const struct hostent_ *he;
    long pn = strtol(port, NULL, 10);

    if (r == NULL || strlen(host) >= sizeof(q->host) || pn <= 0 || pn > 65535)
        return NULL;
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->port = (uint16_t)pn;
    snprintf(q->host, sizeof(q->host), "%s", host);
    q->next = r->reqs;
    if (r->reqs)
        r->reqs->prev = q;
    r->reqs = q;
    if ((he = hosts_find(r, host)) != NULL) {
        q->addr = he->addr;
        q->len = he->len;
        if (q->addr.ss_family == AF_INET)
            ((struct sockaddr_in *)&q->addr)->sin_port = htons(q->port);
        else
            ((struct sockaddr_in6 *)&q->addr)->sin6_port = htons(q->port);
        q->ok = 1;
        q->ttl_ms = -1; /* a hosts-file entry has no TTL */
        q->ev = event_new(r->base, -1, 0, deliver_cb, q);
        if (q->ev == NULL) {
            req_unlink(q);
            free(q);
            return NULL;
        }
        event_active(q->ev, EV_TIMEOUT, 0);
        return q;
    }
    q->dreq = evdns_base_resolve_ipv4(r->dns, host, 0, dns_cb, q);
    if (q->dreq == NULL) {
        req_unlink(q);
        free(q);
        return NULL;
    }
    return q;
}

void px_resolve_cancel(struct px_resolve_req *q)
{
    if (q == NULL)
        return;
    /* Orphaned, not cancelled: evdns would deliver a cancellation through
     * a deferred callback that may outlive the resolver. It finishes (or
     * times out) as usual and is freed then, without a callback. */
    q->cb = NULL;
}

void px_resolver_free(struct px_resolver *r)
{
    if (r == NULL)
        return;
    /* requests in flight are dropped without callbacks (0), then freed here */
    evdns_base_free(r->dns, 0);
    while (r->reqs != NULL) {
        struct px_resolve_req *q = r->reqs;
        req_unlink(q);
        req_free(q);
    }
    for (size_t i = 0; i < r->nhosts; i++)
        free(r->hosts[i].name);
    free(r->hosts);
    free(r);
}
