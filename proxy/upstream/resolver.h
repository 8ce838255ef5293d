/*
 * resolver.h - upstream names resolved without blocking a worker.
 *
 * One resolver per event loop (each worker, the control thread). A name is
 * looked up in the hosts file first (dns.hosts, read once), then with
 * libevent's evdns (dns.resolv_conf's nameservers): A, then AAAA. Each
 * answer comes with its TTL, which the caller keeps between dns.min_ttl
 * and dns.max_ttl (upstream.c); a failure is remembered for
 * dns.negative_ttl. Numeric addresses never reach the resolver.
 */
#ifndef PX_RESOLVER_H
#define PX_RESOLVER_H

#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct px_config;
struct px_resolver;
struct px_resolve_req;

/* ok: 1 with the address (port set) and the record's TTL in ms (hosts
 * file entries: -1, "no TTL"); 0 on failure (why: "nxdomain", "timeout",
 * ...). Called from the event loop, never from inside px_resolver_lookup. */
typedef void (*px_resolve_cb)(void *arg, int ok, const struct sockaddr *sa, socklen_t len,
                              int64_t ttl_ms, const char *why);

struct px_resolver *px_resolver_new(struct event_base *base, const struct px_config *cfg);
/* Cancels what is in flight (their callbacks are not called). NULL is a
 * no-op. */
void px_resolver_free(struct px_resolver *r);

/* Starts resolving host (no brackets) for port. Returns the request, or
 * NULL when it could not start (cb is not called then). */
struct px_resolve_req *px_resolver_lookup(struct px_resolver *r, const char *host, const char *port,
                                          px_resolve_cb cb, void *arg);
/* Forgets a request: its callback will not be called. */
void px_resolve_cancel(struct px_resolve_req *q);

#endif
