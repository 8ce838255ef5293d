/*
 * fuzz_request.c - the canonical request (proxy/gate/request.c) and the
 * HTTP/1.1 upstream serializer (px_h1_write_request_head, proxy/upstream/up_h1.c).
 *
 * Input: byte 0 picks the context (bit 0: HTTP/2-style :authority given,
 * bits 1-2: headers_with_underscores, bit 3: path_params keep, bit 4:
 * outbound listener, bit 5: the peer is a trusted forwarder), then lines
 * separated by '\n': method, target, :authority (ignored unless bit 0),
 * then "name: value" fields; a line "--" starts the trailers.
 *
 * Invariants, for every request the build accepts:
 *   - the head it serializes, parsed back by an independent strict parser
 *     (below), has exactly the canonical method, target and authority, and
 *     exactly the canonical field list in order (nothing the policy saw is
 *     left out, nothing it did not see is added, framing aside);
 *   - the policy input is that same list, the canonical host and the
 *     match path; the host is the authority up to its port;
 *   - the canonical authority and target are fixed points (parsing /
 *     normalizing them again changes nothing);
 *   - no forwarded field is hop-by-hop, framing, Host, an identity field
 *     picket owns under any '_' spelling (except the ones picket wrote),
 *     and with "drop" no name has a '_'; at most one cookie, x-request-id;
 *   - kept trailers pass px_trailer_allowed.
 * And for every request it refuses: a documented status and a reason.
 */
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "fuzz_common.h"
#include "upstream.h"
#include "policy.h"
#include "request.h"

#define MAXF 256

static struct px_config cfg;
static struct px_listener_cfg lc;
static char *trusted[] = {"spiffe://example.org/gw"};

struct field {
    const char *n, *v;
    size_t nl, vl;
};

static int eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && memcmp(a, b, an) == 0;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* An independent reader of the head px_h1_write_request_head() wrote:
 * "METHOD SP target SP HTTP/1.1 CRLF", then "name: value CRLF" lines, then
 * CRLF. Returns the number of fields, or -1 when it is not such a head. */
static int parse_head(const char *p, size_t n, struct field *m, struct field *t,
                      struct field *f, int maxf)
{
    const char *end = p + n, *sp1, *sp2, *eol;
    int nf = 0;

    eol = memchr(p, '\r', n);
    if (eol == NULL || eol + 1 >= end || eol[1] != '\n')
        return -1;
    sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (sp1 == NULL)
        return -1;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (sp2 == NULL || !eq(sp2 + 1, (size_t)(eol - sp2 - 1), "HTTP/1.1", 8))
        return -1;
    m->n = p;
    m->nl = (size_t)(sp1 - p);
    t->n = sp1 + 1;
    t->nl = (size_t)(sp2 - sp1 - 1);
    for (size_t i = 0; i < t->nl; i++)
        if ((unsigned char)t->n[i] <= 0x20 || (unsigned char)t->n[i] >= 0x7f)
            return -1;
    p = eol + 2;
    for (;;) {
        const char *colon;
        eol = memchr(p, '\r', (size_t)(end - p));
        if (eol == NULL || eol + 1 >= end || eol[1] != '\n')
            return -1;
        if (eol == p)
            return eol + 2 == end ? nf : -1;
        colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL || colon == p || colon + 1 >= eol || colon[1] != ' ' || nf == maxf)
            return -1;
        for (const char *q = p; q < colon; q++)
            if (!is_tchar((unsigned char)*q))
                return -1;
        for (const char *q = colon + 2; q < eol; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
                return -1;
        f[nf].n = p;
        f[nf].nl = (size_t)(colon - p);
        f[nf].v = colon + 2;
        f[nf].vl = (size_t)(eol - colon - 2);
        nf++;
        p = eol + 2;
    }
}

static int ci_eq(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    if (an != bn)
        return 0;
    for (size_t i = 0; i < an; i++) {
        char x = a[i] == '_' ? '-' : a[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x + 32);
        if (x != b[i])
            return 0;
    }
    return 1;
}

static void check_forwarded_field(const struct px_hdr *h, int outbound, int drop_us, int upgrade)
{
    static const char *never[] = {"connection", "keep-alive", "proxy-connection",
                                  "transfer-encoding", "upgrade", "http2-settings",
                                  "proxy-authenticate", "proxy-authorization", "host",
                                  "content-length", "expect", "x-forwarded-proto"};
    int us = memchr(h->name, '_', h->nlen) != NULL;
    if (upgrade && eq(h->name, h->nlen, "upgrade", 7)) {
        /* the one canonical field a WebSocket opening request carries */
        FUZZ_CHECK(eq(h->value, h->vlen, "websocket", 9));
        return;
    }
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        FUZZ_CHECKF(!ci_eq(h->name, h->nlen, never[i]) || (!us && !outbound && i == 11),
                    "forwarded %.*s", (int)h->nlen, h->name);
    FUZZ_CHECK(!(h->nlen >= 9 && ci_eq(h->name, 9, "x-picket-")));
    if (us) {
        FUZZ_CHECK(!drop_us);
        FUZZ_CHECK(!ci_eq(h->name, h->nlen, "x-forwarded-client-cert"));
        FUZZ_CHECK(!ci_eq(h->name, h->nlen, "x-forwarded-for"));
        FUZZ_CHECK(!ci_eq(h->name, h->nlen, "x-request-id"));
        FUZZ_CHECK(!ci_eq(h->name, h->nlen, "forwarded"));
        FUZZ_CHECK(!ci_eq(h->name, h->nlen, "cookie"));
        FUZZ_CHECK(!ci_eq(h->name, h->nlen, "te"));
    }
    if (eq(h->name, h->nlen, "te", 2))
        FUZZ_CHECK(eq(h->value, h->vlen, "trailers", 8));
}

#define XFCC_WANT "By=spiffe://example.org/me;Hash=00ff;URI=spiffe://example.org/c"
#define XFCC_WANT_GW "By=spiffe://example.org/me;Hash=00ff;URI=spiffe://example.org/gw"

static void check_built(const struct px_request *rq, int outbound, int drop_us, int trusted_peer)
{
    struct evbuffer *out = evbuffer_new();
    static struct field f[MAXF + 8];
    static struct policy_header hb[MAXF + 8];
    struct field m, t;
    struct policy_request pr;
    struct px_authority a;
    size_t n, k = 0, ncookie = 0, nrid = 0, nxfcc = 0, nxff = 0, nupgrade = 0;
    const char *head;
    int nf;
    char *norm;
    size_t nlen = 0, plen = 0;

    FUZZ_CHECK(out != NULL);
    FUZZ_CHECK(rq->hdrs.n <= MAXF);
    /* fixed points */
    FUZZ_CHECK(px_authority_parse(rq->authority, rq->authority_len, &a) == 0);
    FUZZ_CHECK(eq(a.text, a.text_len, rq->authority, rq->authority_len));
    FUZZ_CHECK(rq->host == rq->authority && a.host_len == rq->host_len);
    norm = malloc(rq->target_len * 3 + 2);
    FUZZ_CHECK(norm != NULL);
    FUZZ_CHECK(policy_path_normalize(rq->target, rq->target_len, norm, rq->target_len * 3 + 2,
                                     &nlen, &plen) == 0);
    FUZZ_CHECK(eq(norm, nlen, rq->target, rq->target_len) && plen == rq->path_len);
    free(norm);
    FUZZ_CHECK(rq->match_path_len <= rq->path_len);
    FUZZ_CHECK(memchr(rq->match_path, '?', rq->match_path_len) == NULL);

    /* the serialized head, read back */
    FUZZ_CHECK(px_h1_write_request_head(out, rq, 1, 0) == 0);
    n = evbuffer_get_length(out);
    head = (const char *)evbuffer_pullup(out, -1);
    nf = parse_head(head, n, &m, &t, f, MAXF + 8);
    FUZZ_CHECKF(nf >= 0, "unparsable head: %.*s", (int)n, head);
    FUZZ_CHECK(eq(m.n, m.nl, rq->method, rq->method_len));
    FUZZ_CHECK(eq(t.n, t.nl, rq->target, rq->target_len));
    FUZZ_CHECK(nf >= 2 && eq(f[0].n, f[0].nl, "Host", 4));
    FUZZ_CHECK(eq(f[0].v, f[0].vl, rq->authority, rq->authority_len));
    /* fields 1.. are the canonical list, then the framing picket added */
    for (int i = 1; i < nf; i++) {
        if (eq(f[i].n, f[i].nl, "Connection", 10) || eq(f[i].n, f[i].nl, "Transfer-Encoding", 17))
            continue;
        FUZZ_CHECKF(k < rq->hdrs.n, "extra field %.*s", (int)f[i].nl, f[i].n);
        FUZZ_CHECK(eq(f[i].n, f[i].nl, rq->hdrs.v[k].name, rq->hdrs.v[k].nlen));
        FUZZ_CHECK(eq(f[i].v, f[i].vl, rq->hdrs.v[k].value, rq->hdrs.v[k].vlen));
        k++;
    }
    FUZZ_CHECKF(k == rq->hdrs.n, "%zu of %zu fields forwarded", k, rq->hdrs.n);

    /* the policy's view is the same */
    px_request_policy_input(rq, "spiffe://example.org/c", hb, &pr);
    FUZZ_CHECK(pr.nheaders == rq->hdrs.n);
    FUZZ_CHECK(eq(pr.method, pr.method_len, rq->method, rq->method_len));
    FUZZ_CHECK(eq(pr.authority, pr.authority_len, a.host, a.host_len));
    FUZZ_CHECK(pr.path == rq->match_path && pr.path_len == rq->match_path_len);
    for (size_t i = 0; i < pr.nheaders; i++) {
        FUZZ_CHECK(pr.headers[i].name == rq->hdrs.v[i].name);
        FUZZ_CHECK(pr.headers[i].value_len == rq->hdrs.v[i].vlen);
        check_forwarded_field(&rq->hdrs.v[i], outbound, drop_us, rq->upgrade);
        nupgrade += eq(rq->hdrs.v[i].name, rq->hdrs.v[i].nlen, "upgrade", 7);
        ncookie += eq(rq->hdrs.v[i].name, rq->hdrs.v[i].nlen, "cookie", 6);
        nrid += eq(rq->hdrs.v[i].name, rq->hdrs.v[i].nlen, "x-request-id", 12);
        nxfcc += eq(rq->hdrs.v[i].name, rq->hdrs.v[i].nlen, "x-forwarded-client-cert", 23);
        nxff += eq(rq->hdrs.v[i].name, rq->hdrs.v[i].nlen, "x-forwarded-for", 15);
    }
    FUZZ_CHECK(ncookie <= 1 && nrid == 1 && nxfcc == (outbound ? 0u : 1u));
    FUZZ_CHECK(nupgrade == (rq->upgrade ? 1u : 0u));
    FUZZ_CHECK(!rq->upgrade || eq(rq->method, rq->method_len, "GET", 3));
    FUZZ_CHECK(outbound || nxff == 1); /* one list, ending with this hop */
    for (size_t i = 0; !outbound && i < rq->hdrs.n; i++) {
        const struct px_hdr *h = &rq->hdrs.v[i];
        if (eq(h->name, h->nlen, "x-forwarded-client-cert", 23))
            FUZZ_CHECK(eq(h->value, h->vlen, XFCC_WANT, strlen(XFCC_WANT)) ||
                       eq(h->value, h->vlen, XFCC_WANT_GW, strlen(XFCC_WANT_GW)));
        if (eq(h->name, h->nlen, "x-forwarded-for", 15))
            FUZZ_CHECK(h->vlen >= 9 && memcmp(h->value + h->vlen - 9, "192.0.2.1", 9) == 0 &&
                       (trusted_peer || h->vlen == 9));
    }
    evbuffer_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct px_request rq;
    struct px_request_ctx ctx;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    enum px_reason reason = PX_R_NONE;
    const char *line[3] = {"", "", ""};
    size_t len[3] = {0, 0, 0};
    int flags, rc, trailers = 0, li = 0;

    if (size < 1)
        return 0;
    flags = data[0];
    memset(&cfg, 0, sizeof(cfg));
    memset(&lc, 0, sizeof(lc));
    cfg.limits.max_headers = 100;
    cfg.limits.max_header_list_size = 8192;
    cfg.limits.max_target_length = 2048;
    lc.kind = (flags & 16) ? PX_LISTENER_OUTBOUND : PX_LISTENER_INBOUND;
    lc.underscores = ((flags >> 1) & 3) % 3;
    lc.path_params = (flags >> 3) & 1;
    lc.trusted_forwarders = trusted;
    lc.ntrusted_forwarders = 1;
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = &cfg;
    ctx.lc = &lc;
    ctx.tls = 1;
    ctx.outbound = lc.kind == PX_LISTENER_OUTBOUND;
    ctx.peer_id = (flags & 32) ? "spiffe://example.org/gw" : "spiffe://example.org/c";
    ctx.peer_cert_hash = "00ff";
    ctx.peer_ip = "192.0.2.1";
    ctx.own_id = "spiffe://example.org/me";
    ctx.body_follows = !(flags & 64);

    px_request_init(&rq);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end;
        if (li < 3) {
            line[li] = p;
            len[li] = (size_t)(e - p);
            li++;
        } else if (eq(p, (size_t)(e - p), "--", 2)) {
            trailers = 1;
        } else {
            const char *colon = memchr(p, ':', (size_t)(e - p)), *v;
            if (colon != NULL) {
                v = colon + 1;
                while (v < e && *v == ' ')
                    v++;
                if (trailers)
                    (void)px_request_add_trailer(&rq, &cfg, p, (size_t)(colon - p), v,
                                                 (size_t)(e - v));
                else
                    (void)px_request_add_field(&rq, &cfg, p, (size_t)(colon - p), v,
                                               (size_t)(e - v));
            }
        }
        p = nl ? nl + 1 : end;
    }
    FUZZ_CHECK(px_request_set_method(&rq, line[0], len[0]) == 0);
    FUZZ_CHECK(px_request_set_target(&rq, line[1], len[1]) == 0);
    if (flags & 1)
        FUZZ_CHECK(px_request_set_authority(&rq, line[2], len[2]) == 0);
    if (flags & 128) /* an HTTP/2 extended CONNECT's :protocol */
        FUZZ_CHECK(px_request_set_protocol(&rq, "websocket", 9) == 0);
    rc = px_request_build(&rq, &ctx, &reason);
    if (rc != 0) {
        FUZZ_CHECK(reason != PX_R_NONE && reason < PX_R_COUNT &&
                   px_reason_name(reason)[0] != '\0');
        FUZZ_CHECKF(rc == 400 || rc == 414 || rc == 417 || rc == 431, "status %d", rc);
        FUZZ_CHECK(!rq.built);
    } else {
        FUZZ_CHECK(rq.built);
        check_built(&rq, ctx.outbound, lc.underscores == PX_US_DROP, (flags & 32) != 0);
        if (px_request_build_trailers(&rq, &ctx, &reason) == 0)
            for (size_t i = 0; i < rq.trailers.n; i++)
                FUZZ_CHECK(px_trailer_allowed(rq.trailers.v[i].name, rq.trailers.v[i].nlen));
    }
    px_request_clear(&rq);
    return 0;
}
