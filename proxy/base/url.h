/*
 * url.h - https:// URL parts, and name lookup for config time.
 */
#ifndef PX_URL_H
#define PX_URL_H

#include <stddef.h>
#include <sys/socket.h>

/* Resolves host:port (numeric or name; blocking getaddrinfo): for config
 * time only (listener addresses); upstreams are resolved asynchronously. */
int px_resolve(const char *host, const char *port, struct sockaddr_storage *out, socklen_t *len);

/* Splits an https:// URL (policy.url, dispatch urls: already checked by
 * the config) into host (an IPv6 literal without its brackets), port
 * (443 when absent) and, if path is not NULL, the path with its query ("/"
 * when absent; points into url). Returns 0, or -1 when the URL is not
 * https://, or the host or port is empty or does not fit. Pure. */
int px_https_url_split(const char *url, char *host, size_t hostcap, char *port, size_t portcap,
                       const char **path);

#endif
