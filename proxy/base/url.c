/*
 * url.c - https:// URLs from the config, and the blocking name lookup that
 * is only for config time (listener addresses). Upstream names go through
 * the non-blocking resolver (upstream/resolver.c).
 */
#include "url.h"

#include <netdb.h>
#include <string.h>
#include <strings.h>

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
