/*
 * hdrs.c - header field lists (hdrs.h), and the field syntax both HTTP
 * versions and both directions share: names (tchar), values (no CR, LF,
 * NUL), optional whitespace, the hop-by-hop names, idempotent methods.
 *
 * A list owns its names and values: they are copied into blocks of about
 * 1 KiB (block_alloc below), freed together with the list, so a request's
 * fields cost a few allocations, not two per field. Size is accounted the
 * way RFC 7541 4.1 does (name + value + 32), which is also what
 * SETTINGS_MAX_HEADER_LIST_SIZE counts, so the h1 and h2 paths share one
 * limit; the blocks are charged to the memory budget's `headers` pool.
 */
#include "hdrs.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"
#include "tmalloc.h"

/* Names and values are copied into blocks owned by the list (one block
 * per ~1 KiB of headers instead of one per field): a request's headers are
 * freed together when its stream ends, and px_hdrs_del() only drops the
 * index entry. */
struct px_hdr_block {
    struct px_hdr_block *next;
    size_t used, cap;
    char data[];
};

/* a block and its header fill one 1 KiB class of tmalloc.h */
#define HDR_BLOCK_MIN (1024 - sizeof(struct px_hdr_block))

static char *block_alloc(struct px_hdrs *h, size_t n)
{
    struct px_hdr_block *b = h->blk;
    char *p;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > HDR_BLOCK_MIN ? n : HDR_BLOCK_MIN;
        b = px_tmalloc(sizeof(*b) + cap);
        if (b == NULL)
            return NULL;
        px_mem_charge(PX_MEM_HEADERS, NULL, (int64_t)cap); /* the memory budget (mem.h) */
        b->used = 0;
        b->cap = cap;
        b->next = h->blk;
        h->blk = b;
    }
    p = b->data + b->used;
    b->used += n;
    return p;
}

/* Names most requests and responses carry: RFC 7541's static table, and
 * the ones picket itself adds or reads. A field with one of these names
 * points at this table instead of a copy (no lowercasing, no bytes in the
 * list's blocks), and the h2 serializers tell nghttp2 not to copy or
 * lowercase it either (px_field_name_static). Rows are sorted by length;
 * known_at[n] is the first row of length n or more (TCase fields checks
 * both). */
#define KNOWN_MAX 27
static const char known[][KNOWN_MAX + 1] = {
    "te", "age", "via", "date", "etag", "from", "host", "link", "vary", "allow", "range", "accept",
    "cookie", "expect", "origin", "pragma", "server", "expires", "referer", "refresh", "upgrade",
    "if-match", "if-range", "location", "priority", "forwarded", "connection", "keep-alive",
    "set-cookie", "tracestate", "user-agent", "grpc-status", "retry-after", "traceparent",
    "content-type", "grpc-message", "grpc-timeout", "max-forwards", "x-request-id",
    "accept-ranges", "authorization", "cache-control", "content-range", "grpc-encoding",
    "if-none-match", "last-modified", "accept-charset", "content-length", "accept-encoding",
    "accept-language", "x-forwarded-for", "content-encoding", "content-language",
    "content-location", "www-authenticate", "x-forwarded-host", "if-modified-since",
    "sec-websocket-key", "transfer-encoding", "x-forwarded-proto", "proxy-authenticate",
    "content-disposition", "if-unmodified-since", "proxy-authorization", "grpc-accept-encoding",
    "sec-websocket-accept", "sec-websocket-version", "sec-websocket-protocol",
    "x-forwarded-client-cert", "sec-websocket-extensions", "strict-transport-security",
    "access-control-allow-origin",
};
static const unsigned char known_at[KNOWN_MAX + 2] = {
    0, 0, 0, 1, 3, 9, 11, 17, 21, 25, 26, 31, 34, 39, 46, 48, 51, 56, 60, 61, 64, 66, 67, 68, 69,
    70, 71, 71, 72,
};

const char *px_field_name_known(const char *p, size_t n)
{
    if (n == 0 || n > KNOWN_MAX)
        return NULL;
    for (unsigned i = known_at[n]; i < known_at[n + 1]; i++)
        if (known[i][0] == p[0] && memcmp(known[i], p, n) == 0)
            return known[i];
    return NULL;
}

int px_field_name_static(const char *p)
{
    return (uintptr_t)p - (uintptr_t)known[0] < sizeof(known);
}

const char *px_field_known_row(size_t i)
{
    return i < sizeof(known) / sizeof(known[0]) ? known[i] : NULL;
}

int px_hdrs_add(struct px_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen,
                size_t limit)
{
    size_t cost = nlen + vlen + 32;
    const char *known_name;
    char *mem;

    if (limit != 0 && h->bytes + cost > limit)
        return -1;
    if (h->n == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 16;
        struct px_hdr *nv = px_trealloc(h->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return -1;
        h->v = nv;
        h->cap = ncap;
    }
    if ((known_name = px_field_name_known(name, nlen)) != NULL) {
        if ((mem = block_alloc(h, vlen + 1)) == NULL)
            return -1;
        h->v[h->n].name = known_name;
    } else {
        if ((mem = block_alloc(h, nlen + vlen + 2)) == NULL)
            return -1;
        for (size_t i = 0; i < nlen; i++) {
            char ch = name[i];
            mem[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        mem[nlen] = '\0';
        h->v[h->n].name = mem;
        mem += nlen + 1;
    }
    memcpy(mem, value, vlen);
    mem[vlen] = '\0';
    h->v[h->n].nlen = nlen;
    h->v[h->n].value = mem;
    h->v[h->n].vlen = vlen;
    h->n++;
    h->bytes += cost;
    return 0;
}

char *px_hdrs_alloc(struct px_hdrs *h, size_t n)
{
    char *p = block_alloc(h, n + 1);
    if (p != NULL)
        p[n] = '\0';
    return p;
}

char *px_hdrs_strdup(struct px_hdrs *h, const char *p, size_t n)
{
    char *d = px_hdrs_alloc(h, n);
    if (d != NULL && n > 0)
        memcpy(d, p, n);
    return d;
}

const struct px_hdr *px_hdrs_get(const struct px_hdrs *h, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].nlen == len && memcmp(h->v[i].name, name, len) == 0)
            return &h->v[i];
    return NULL;
}

void px_hdrs_del(struct px_hdrs *h, const char *name)
{
    px_hdrs_del_ci(h, name, strlen(name)); /* stored names are lowercase */
}

void px_hdrs_del_ci(struct px_hdrs *h, const char *name, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].nlen == len && strncasecmp(h->v[i].name, name, len) == 0) {
            h->bytes -= h->v[i].nlen + h->v[i].vlen + 32;
            continue;
        }
        h->v[o++] = h->v[i];
    }
    h->n = o;
}

void px_hdrs_remove_at(struct px_hdrs *h, size_t i)
{
    if (i >= h->n)
        return;
    h->bytes -= h->v[i].nlen + h->v[i].vlen + 32;
    memmove(&h->v[i], &h->v[i + 1], (h->n - i - 1) * sizeof(h->v[0]));
    h->n--;
}

void px_hdrs_clear(struct px_hdrs *h)
{
    while (h->blk != NULL) {
        struct px_hdr_block *b = h->blk;
        h->blk = b->next;
        px_mem_charge(PX_MEM_HEADERS, NULL, -(int64_t)b->cap);
        px_tfree(b);
    }
    px_tfree(h->v);
    memset(h, 0, sizeof(*h));
}

/* ---- field syntax (RFC 9110 5.1, 5.5): one rule for every direction ---- */

int px_field_alnum_or(const char *p, size_t n, const char *extra)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (ch == 0 || strchr(extra, ch) == NULL)
            return 0;
    }
    return 1;
}

int px_field_name_ok(const char *p, size_t n)
{
    return n > 0 && px_field_alnum_or(p, n, "!#$%&'*+-.^_`|~");
}

int px_field_value_ok(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

int px_is_hop_by_hop(const char *name, size_t len)
{
    /* RFC 9110 7.6.1 connection-specific fields, plus the legacy ones
     * proxies must not forward (RFC 9113 8.2.2 forbids them in h2).
     * Picked by length first: this runs for every field of every message. */
    static const char *const hop[] = {"connection", "keep-alive", "proxy-connection",
                                      "transfer-encoding", "upgrade", "te", "http2-settings",
                                      "proxy-authenticate", "proxy-authorization"};
    static const unsigned char hoplen[] = {10, 10, 16, 17, 7, 2, 14, 18, 19};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (hoplen[i] == len && strncasecmp(hop[i], name, len) == 0)
            return 1;
    return 0;
}

void px_ows_trim(const char **p, size_t *n)
{
    while (*n > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

int px_method_idempotent(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "OPTIONS") == 0 ||
           strcmp(m, "TRACE") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "DELETE") == 0;
}
