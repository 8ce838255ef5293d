/*
 * authority.h - the one parser for a request's authority (Host header,
 * HTTP/2 :authority) and for the host names in route configuration, so
 * the policy, the router and the upstream all see the same host.
 */
#ifndef PX_AUTHORITY_H
#define PX_AUTHORITY_H

#include <stddef.h>

#define PX_HOST_MAX 253 /* longest host name (RFC 1035 2.3.4), IPv6 literal fits too */

struct px_authority {
    char host[PX_HOST_MAX + 3]; /* lowercase, NUL-terminated; "[v6]" keeps its brackets */
    size_t host_len;
    unsigned port;              /* 0 = no port given */
    char text[PX_HOST_MAX + 10]; /* canonical authority: host[":" port] */
    size_t text_len;
};

/* Parses a Host value or :authority (p[0..n), borrowed) into *out.
 * Accepted: a reg-name of letters, digits, '-', '.', '_' with non-empty
 * labels and at most one trailing dot (removed), at most 253 bytes; a name
 * whose last label is all digits must be a dotted-quad IPv4 address
 * (WHATWG's rule: "127.1", "0x7f.0.0.1" are refused); an IPv6 literal in
 * brackets (inet_pton, no zone id); then an optional ":port" of 1-5 digits
 * whose value is 1..65535. Userinfo, percent-escapes, empty ports and
 * anything else are refused. The host is lowercased and the port written
 * in decimal without leading zeros. Returns 0, or -1 (out is then
 * undefined). Pure. */
int px_authority_parse(const char *p, size_t n, struct px_authority *out);

#endif
