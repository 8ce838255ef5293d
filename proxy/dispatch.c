/*
 * dispatch.c - remote authorization for the rules that say `dispatch`,
 * with the contract of Envoy's HTTP ext_authz: the check request carries
 * the original method and path (below the service URL's path prefix), the
 * allow-listed headers, and the caller's identity (x-forwarded-client-cert
 * as picket wrote it, and x-picket-peer-id); no body. 200 allows (and the
 * x- headers it returns are added upstream); anything else denies, and its
 * status and body go back to the client. Timeouts and errors deny unless
 * on_error is "allow": a missing answer is never an allow by accident.
 *
 * Per worker, per service (no locks on the request path):
 *   - an LRU cache keyed by everything the check carried (identity, method,
 *     authority, path with query, forwarded header values), each entry kept
 *     for the answer's Cache-Control max-age (no max-age: not cached),
 *     never longer than max_cache_ttl, at most cache_entries entries; a new
 *     policy revision or config snapshot empties it;
 *   - in-flight checks: identical checks wait on the one already sent
 *     (coalescing), at most DISPATCH_MAX_WAITERS per check.
 * A waiting stream occupies its upstream slot (st->up) with ops whose
 * cancel() takes it off the wait list, so a client that leaves while its
 * check is in flight is forgotten cleanly.
 */
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "log.h"
#include "metrics.h"

#define DISPATCH_MAX_WAITERS 1024   /* streams coalesced on one check */
#define DISPATCH_MAX_BODY 65536     /* denial body relayed to the client */
#define DISPATCH_MAX_KEY 16384      /* longer check keys are not cached or coalesced */
#define DISPATCH_MAX_ADD_HEADERS 32 /* headers taken from an allow answer */

struct waiter {
    struct px_stream *st;
    struct inflight *inf;
    struct waiter *next, *prev;
};

struct answer {
    int status;
    char *body;
    size_t body_len;
    char *ctype;
    struct px_hdrs add; /* headers to add upstream (allow) */
};

struct entry {
    struct entry *hnext;           /* hash chain */
    struct entry *lprev, *lnext;   /* LRU list, most recent first */
    char *key;
    size_t klen;
    uint64_t hash;
    int64_t stored_ms, expires_ms;
    struct answer a;
};

struct inflight {
    struct inflight *next;
    char *key;
    size_t klen;
    uint64_t hash;
    struct service *svc;
    struct px_worker *w;
    const struct px_snapshot *snap; /* the generation the check was sent under: an answer */
    int64_t revision;               /* that outlives it (reload, new bundle) is not cached */
    struct px_client_call *call;
    struct waiter *waiters;
    size_t nwaiters;
};

struct service {
    char name[80];
    struct entry **table;
    size_t nbuckets, nentries, cap;
    struct entry *lru_head, *lru_tail;
    struct inflight *inflight;
    const struct px_snapshot *snap; /* the snapshot whose config the cache was filled under */
    int64_t revision;
};

/* First ASCII case-insensitive occurrence of needle (lowercase) in
 * s[0..n), or NULL. */
static const char *ci_find(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (strncasecmp(s + i, needle, k) == 0)
            return s + i;
    return NULL;
}

struct px_dispatch_state {
    struct service **svc; /* each allocated on its own: in-flight checks point at them */
    size_t nsvc;
};

/* ---- small helpers ------------------------------------------------------- */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void answer_clear(struct answer *a)
{
    free(a->body);
    free(a->ctype);
    px_hdrs_clear(&a->add);
    memset(a, 0, sizeof(*a));
}

static void count(const char *name, const char *help, const char *svc, const char *result)
{
    char labels[200];
    snprintf(labels, sizeof(labels), "service=\"%s\",result=\"%s\"", svc, result);
    px_counter_add(px_counter_get(name, help, labels), 1);
}

static const struct px_dispatch_cfg *find_cfg(const struct px_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->ndispatch; i++)
        if (strcmp(cfg->dispatch[i].name, name) == 0)
            return &cfg->dispatch[i];
    return NULL;
}

/* ---- cache ------------------------------------------------------------------ */

static void lru_unlink(struct service *s, struct entry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        s->lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        s->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_push(struct service *s, struct entry *e)
{
    e->lnext = s->lru_head;
    e->lprev = NULL;
    if (s->lru_head)
        s->lru_head->lprev = e;
    s->lru_head = e;
    if (s->lru_tail == NULL)
        s->lru_tail = e;
}

static void entry_remove(struct service *s, struct entry *e)
{
    struct entry **pp = &s->table[e->hash % s->nbuckets];
    while (*pp != NULL && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp == e)
        *pp = e->hnext;
    lru_unlink(s, e);
    answer_clear(&e->a);
    free(e->key);
    free(e);
    s->nentries--;
}

static void cache_clear(struct service *s)
{
    while (s->lru_head != NULL)
        entry_remove(s, s->lru_head);
}

static struct entry *cache_get(struct service *s, const char *key, size_t klen, uint64_t h,
                               int64_t now)
{
    struct entry *e;
    if (s->table == NULL)
        return NULL;
    for (e = s->table[h % s->nbuckets]; e != NULL; e = e->hnext) {
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) {
            if (now >= e->expires_ms) {
                entry_remove(s, e); /* the authority's word has run out */
                return NULL;
            }
            lru_unlink(s, e);
            lru_push(s, e);
            return e;
        }
    }
    return NULL;
}

static void cache_put(struct service *s, const char *key, size_t klen, uint64_t h,
                      const struct answer *a, int64_t now, int64_t ttl_ms)
{
    struct entry *e;
    if (s->cap == 0 || ttl_ms <= 0)
        return;
    if (s->table == NULL) {
        /* buckets ~ entries, at most 1M: a bounded, one-time allocation */
        s->nbuckets = s->cap < 1024 ? 1024 : (s->cap > 1048576 ? 1048576 : s->cap);
        s->table = calloc(s->nbuckets, sizeof(*s->table));
        if (s->table == NULL)
            return;
    }
    while (s->nentries >= s->cap && s->lru_tail != NULL) {
        entry_remove(s, s->lru_tail);
        count("picket_dispatch_cache_total", "Dispatch cache lookups and evictions", s->name,
              "eviction");
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return;
    e->key = malloc(klen);
    if (e->key == NULL) {
        free(e);
        return;
    }
    memcpy(e->key, key, klen);
    e->klen = klen;
    e->hash = h;
    e->stored_ms = now;
    e->expires_ms = now + ttl_ms;
    e->a.status = a->status;
    e->a.body = a->body ? malloc(a->body_len + 1) : NULL;
    if (e->a.body) {
        memcpy(e->a.body, a->body, a->body_len + 1);
        e->a.body_len = a->body_len;
    }
    e->a.ctype = a->ctype ? strdup(a->ctype) : NULL;
    for (size_t i = 0; i < a->add.n; i++)
        px_hdrs_add(&e->a.add, a->add.v[i].name, a->add.v[i].nlen, a->add.v[i].value,
                    a->add.v[i].vlen, 0);
    e->hnext = s->table[h % s->nbuckets];
    s->table[h % s->nbuckets] = e;
    lru_push(s, e);
    s->nentries++;
}

/* ---- per-worker state ----------------------------------------------------- */

static struct service *service_get(struct px_worker *w, const struct px_dispatch_cfg *dc,
                                   const struct px_stream *st)
{
    struct px_dispatch_state *ds = w->dispatch;
    struct service *s = NULL;
    if (ds == NULL) {
        ds = calloc(1, sizeof(*ds));
        if (ds == NULL)
            return NULL;
        w->dispatch = ds;
    }
    for (size_t i = 0; i < ds->nsvc; i++)
        if (strcmp(ds->svc[i]->name, dc->name) == 0)
            s = ds->svc[i];
    if (s == NULL) {
        struct service **nv = realloc(ds->svc, (ds->nsvc + 1) * sizeof(*nv));
        if (nv == NULL)
            return NULL;
        ds->svc = nv;
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return NULL;
        ds->svc[ds->nsvc++] = s;
        snprintf(s->name, sizeof(s->name), "%s", dc->name);
    }
    s->cap = dc->cache_entries > 0 ? (size_t)dc->cache_entries : 0;
    /* A new policy revision or config snapshot starts from an empty cache. */
    if (s->snap != st->snap || s->revision != st->bundle_revision) {
        cache_clear(s);
        s->snap = st->snap;
        s->revision = st->bundle_revision;
    }
    return s;
}

/* ---- the check ------------------------------------------------------------ */

/* The check request: built once, sent as is, and its bytes are the cache
 * and coalescing key, so nothing it carries can be left out of the key. */
struct check {
    char *path;            /* service path prefix + the whole forwarded target */
    const char *authority; /* the request's canonical authority, as Envoy's ext_authz sends
                            * Host (the connection goes to the service URL's host) */
    struct px_hdrs h;      /* allow-listed fields, picket's identity fields */
};

static void check_clear(struct check *c)
{
    free(c->path);
    px_hdrs_clear(&c->h);
}

static int build_check(const struct px_stream *st, const struct px_dispatch_cfg *dc,
                       struct check *c)
{
    const char *p = dc->url + 8, *slash = strchr(p, '/');
    const struct px_hdr *xfcc = px_hdrs_get(&st->rq.hdrs, "x-forwarded-client-cert");
    const char *peer = st->conn->peer_id;
    size_t plen;

    memset(c, 0, sizeof(*c));
    if (slash == NULL)
        slash = p + strlen(p);
    c->authority = st->rq.authority;
    /* service path prefix (without a trailing '/') + the request's target,
     * all of it: the service judges exactly what the upstream will get */
    plen = strlen(slash);
    while (plen > 0 && slash[plen - 1] == '/')
        plen--;
    c->path = malloc(plen + st->rq.target_len + 1);
    if (c->path == NULL)
        return -1;
    memcpy(c->path, slash, plen);
    memcpy(c->path + plen, st->rq.target, st->rq.target_len + 1);
    for (size_t i = 0; i < dc->nheaders; i++) {
        /* picket adds the identity and correlation headers itself, once */
        if (strcmp(dc->headers[i], "x-forwarded-client-cert") == 0 ||
            strcmp(dc->headers[i], "x-request-id") == 0 ||
            strncmp(dc->headers[i], "x-picket-", 9) == 0)
            continue;
        for (size_t k = 0; k < st->rq.hdrs.n; k++)
            if (strcmp(st->rq.hdrs.v[k].name, dc->headers[i]) == 0 &&
                px_hdrs_add(&c->h, st->rq.hdrs.v[k].name, st->rq.hdrs.v[k].nlen,
                            st->rq.hdrs.v[k].value, st->rq.hdrs.v[k].vlen, 0) != 0)
                return -1;
    }
    if (xfcc != NULL && px_hdrs_add(&c->h, xfcc->name, xfcc->nlen, xfcc->value, xfcc->vlen, 0))
        return -1;
    if (px_hdrs_add(&c->h, "x-picket-peer-id", 16, peer, strlen(peer), 0) != 0)
        return -1;
    return 0;
}

static size_t put_piece(char *buf, size_t cap, size_t o, const char *p, size_t n)
{
    char len[24];
    size_t ln = px_fmt_u64(len, n);
    if (o + ln + 1 + n > cap)
        return (size_t)-1;
    memcpy(buf + o, len, ln);
    buf[o + ln] = ':';
    memcpy(buf + o + ln + 1, p, n);
    return o + ln + 1 + n;
}

/* The key: every piece of the check, length-prefixed (no two checks share
 * one), except x-request-id, which the check also carries but which names
 * the request, not what is decided. Returns its length, or 0 when it does
 * not fit (such checks are neither cached nor coalesced). */
static size_t build_key(const struct px_stream *st, const struct check *c, char *buf, size_t cap)
{
    size_t o = 0;
    o = put_piece(buf, cap, o, st->rq.method, st->rq.method_len);
    if (o != (size_t)-1)
        o = put_piece(buf, cap, o, c->authority, strlen(c->authority));
    if (o != (size_t)-1)
        o = put_piece(buf, cap, o, c->path, strlen(c->path));
    for (size_t i = 0; i < c->h.n && o != (size_t)-1; i++) {
        o = put_piece(buf, cap, o, c->h.v[i].name, c->h.v[i].nlen);
        if (o != (size_t)-1)
            o = put_piece(buf, cap, o, c->h.v[i].value, c->h.v[i].vlen);
    }
    return o == (size_t)-1 ? 0 : o;
}

static int addable_header(const struct px_hdr *h)
{
    /* The service may add x- headers for the app, but not rewrite the
     * identity and correlation headers picket itself vouches for. */
    if (h->nlen < 3 || strncmp(h->name, "x-", 2) != 0)
        return 0;
    return strncmp(h->name, "x-forwarded-", 12) != 0 && strcmp(h->name, "x-request-id") != 0 &&
           strncmp(h->name, "x-picket-", 9) != 0 && strcmp(h->name, "x-envoy-auth-failure") != 0;
}

/* Applies an answer (fresh or cached) to a stream: forward or refuse. */
static void apply(struct px_stream *st, const struct answer *a, const char *svc_id,
                  const char *decided_by, int64_t age_ms)
{
    st->decided_by = decided_by;
    st->dispatch_node = svc_id;
    st->cache_age_ms = age_ms;
    if (a->status == 200) {
        st->decision = "allow";
        for (size_t i = 0; i < a->add.n; i++) {
            px_hdrs_del(&st->rq.hdrs, a->add.v[i].name);
            px_hdrs_add(&st->rq.hdrs, a->add.v[i].name, a->add.v[i].nlen, a->add.v[i].value,
                        a->add.v[i].vlen, 0);
        }
        px_stream_forward(st);
        return;
    }
    st->decision = "deny";
    st->local_response = 1;
    st->reason = "dispatch_deny";
    if (st->rq.is_grpc) {
        px_stream_respond(st, a->status, "forbidden by authorization service\n", 7,
                          "dispatch_deny");
        return;
    }
    /* The service's own status and body go back to the client. */
    px_hdrs_clear(&st->resp);
    evbuffer_drain(st->resp_body, evbuffer_get_length(st->resp_body));
    st->status = a->status;
    if (a->ctype)
        px_hdrs_add(&st->resp, "content-type", 12, a->ctype, strlen(a->ctype), 0);
    if (a->body_len > 0)
        evbuffer_add(st->resp_body, a->body, a->body_len);
    st->resp_content_length = (int64_t)a->body_len;
    st->resp_eof = 1;
    if (st->rq.request_id[0])
        px_hdrs_add(&st->resp, "x-request-id", 12, st->rq.request_id, strlen(st->rq.request_id),
                    0);
    if (st->down)
        st->down->response_ready(st);
}

static void apply_error(struct px_stream *st, const struct px_dispatch_cfg *dc, const char *why)
{
    st->decided_by = "dispatch";
    st->dispatch_node = dc->server_id;
    st->reason = why;
    if (dc->on_error_allow) {
        st->decision = "allow";
        px_log(PX_LOG_WARN, "dispatch_error_allowed", "service", dc->name, "error", why,
               "request_id", st->rq.request_id, NULL);
        px_stream_forward(st);
        return;
    }
    st->decision = "deny";
    px_stream_respond(st, 403, "forbidden: authorization service unavailable\n", 7, why);
}

/* ---- waiting streams ---------------------------------------------------- */

static void w_request_ready(struct px_stream *st)
{
    (void)st; /* the body waits in req_body (bounded by flow control) */
}

static void w_response_drained(struct px_stream *st, size_t n)
{
    (void)st;
    (void)n;
}

static void waiter_unlink(struct waiter *wt)
{
    struct inflight *inf = wt->inf;
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        inf->waiters = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
    inf->nwaiters--;
}

static void w_cancel(struct px_stream *st)
{
    struct waiter *wt = st->up_ctx;
    if (wt != NULL) {
        waiter_unlink(wt);
        free(wt);
    }
    st->up_ctx = NULL;
    px_stream_up_done(st);
}

static const struct px_up_ops wait_ops = {w_request_ready, w_response_drained, w_cancel};

static void inflight_remove(struct service *s, struct inflight *inf)
{
    struct inflight **pp = &s->inflight;
    while (*pp != NULL && *pp != inf)
        pp = &(*pp)->next;
    if (*pp == inf)
        *pp = inf->next;
}

static void on_answer(void *arg, const struct px_client_resp *r)
{
    struct inflight *inf = arg;
    struct service *s = inf->svc;
    struct answer a;
    int64_t now = px_now_ms(), ttl = 0;
    const struct px_dispatch_cfg *dc = NULL;
    const char *err = NULL;
    char latency_labels[120];

    inf->call = NULL;
    inflight_remove(s, inf);
    memset(&a, 0, sizeof(a));
    snprintf(latency_labels, sizeof(latency_labels), "service=\"%s\"", s->name);
    px_histogram_observe(px_histogram_get("picket_dispatch_check_duration_seconds",
                                          "Authorization check latency", latency_labels,
                                          PX_LATENCY_BOUNDS, PX_LATENCY_NBOUNDS),
                         (double)r->duration_us / 1e6);
    if (r->status == 0) {
        err = r->error ? r->error : "error";
        count("picket_dispatch_checks_total", "Authorization checks by result", s->name,
              strcmp(err, "timeout") == 0 ? "timeout" : "error");
    } else {
        const struct px_hdr *cc = px_hdrs_get(r->headers, "cache-control");
        const struct px_hdr *ct = px_hdrs_get(r->headers, "content-type");
        a.status = r->status;
        count("picket_dispatch_checks_total", "Authorization checks by result", s->name,
              r->status == 200 ? "allow" : "deny");
        if (r->status == 200) {
            for (size_t i = 0; i < r->headers->n && a.add.n < DISPATCH_MAX_ADD_HEADERS; i++)
                if (addable_header(&r->headers->v[i]))
                    px_hdrs_add(&a.add, r->headers->v[i].name, r->headers->v[i].nlen,
                                r->headers->v[i].value, r->headers->v[i].vlen, 0);
        } else {
            size_t n = r->body_len < DISPATCH_MAX_BODY ? r->body_len : DISPATCH_MAX_BODY;
            a.body = malloc(n + 1);
            if (a.body) {
                memcpy(a.body, r->body, n);
                a.body[n] = '\0';
                a.body_len = n;
            }
            if (ct)
                a.ctype = strndup(ct->value, ct->vlen < 200 ? ct->vlen : 200);
        }
        if (cc != NULL) {
            /* max-age=N; no-store / no-cache / private mean: do not reuse.
             * The whole value is searched, however long: a directive past
             * any fixed-size copy must still count. */
            const char *m = ci_find(cc->value, cc->vlen, "max-age=");
            if (m != NULL && ci_find(cc->value, cc->vlen, "no-store") == NULL &&
                ci_find(cc->value, cc->vlen, "no-cache") == NULL &&
                ci_find(cc->value, cc->vlen, "private") == NULL) {
                const char *end = cc->value + cc->vlen;
                long long secs = 0;
                for (m += 8; m < end && *m >= '0' && *m <= '9'; m++) {
                    secs = secs * 10 + (*m - '0');
                    /* cap while reading: a huge max-age must not overflow */
                    if (secs > 86400LL * 365)
                        secs = 86400LL * 365;
                }
                ttl = secs > 0 ? (int64_t)secs * 1000 : 0;
            }
        }
    }
    /* Hand the answer to every waiter. Each may free itself on the way. */
    while (inf->waiters != NULL) {
        struct waiter *wt = inf->waiters;
        struct px_stream *st = wt->st;
        waiter_unlink(wt);
        free(wt);
        st->up = NULL;
        st->up_ctx = NULL;
        if (dc == NULL)
            dc = find_cfg(st->snap->cfg, s->name);
        if (dc == NULL) {
            px_stream_respond(st, 403, "forbidden: authorization service unavailable\n", 7,
                              "dispatch_unavailable");
            continue;
        }
        if (err != NULL)
            apply_error(st, dc, err);
        else
            apply(st, &a, dc->server_id, "dispatch", -1);
    }
    /* Cached only if the cache is still the one the check was asked for:
     * after a flush (new bundle revision, reload) the answer serves its
     * waiters and nothing else. */
    if (err == NULL && dc != NULL && inf->klen > 0 && s->snap == inf->snap &&
        s->revision == inf->revision && inf->w->snap == inf->snap &&
        (inf->w->policy != NULL ? inf->w->policy->revision : -1) == inf->revision) {
        if (ttl > dc->max_cache_ttl_ms)
            ttl = dc->max_cache_ttl_ms;
        cache_put(s, inf->key, inf->klen, inf->hash, &a, now, ttl);
    }
    answer_clear(&a);
    free(inf->key);
    free(inf);
}

static struct px_client_call *send_check(struct px_stream *st, const struct px_dispatch_cfg *dc,
                                         struct check *c, struct inflight *inf,
                                         struct px_upstream_addr *up)
{
    struct px_client_req req;

    /* the one field not in the key (build_key) */
    if (px_hdrs_add(&c->h, "x-request-id", 12, st->rq.request_id, strlen(st->rq.request_id),
                    0) != 0)
        return NULL;
    memset(&req, 0, sizeof(req));
    req.method = st->rq.method;
    req.authority = c->authority;
    req.path = c->path;
    req.headers = &c->h;
    req.timeout_ms = dc->timeout_ms;
    req.max_body = DISPATCH_MAX_BODY * 4;
    return px_client_request(st->w, up, &req, on_answer, inf);
}

/* Parses https://host[:port]/... into up (strings point into bufs). */
static int service_addr(const struct px_dispatch_cfg *dc, struct px_upstream_addr *up, char *host,
                        size_t hostcap, char *port, size_t portcap)
{
    if (px_https_url_split(dc->url, host, hostcap, port, portcap, NULL) != 0)
        return -1;
    memset(up, 0, sizeof(*up));
    up->proto = PX_UP_MTLS;
    up->host = host;
    up->port = port;
    up->url = dc->url;
    up->server_id = dc->server_id;
    up->alpn_probe = 1;
    return 0;
}

int px_dispatch_request(struct px_stream *st, const char *name)
{
    const struct px_dispatch_cfg *dc = find_cfg(st->snap->cfg, name);
    struct service *s;
    struct entry *e;
    struct inflight *inf;
    struct waiter *wt;
    struct px_upstream_addr up;
    struct check chk;
    char host[256], port[8];
    char *key;
    size_t klen;
    uint64_t h;
    int64_t now = px_now_ms();

    if (dc == NULL) {
        st->reason = "dispatch_not_configured";
        px_stream_respond(st, 403, "forbidden: authorization service unavailable\n", 7,
                          "dispatch_not_configured");
        return 1;
    }
    s = service_get(st->w, dc, st);
    key = malloc(DISPATCH_MAX_KEY);
    if (s == NULL || key == NULL || build_check(st, dc, &chk) != 0) {
        free(key);
        check_clear(&chk);
        apply_error(st, dc, "out_of_memory");
        return 1;
    }
    klen = build_key(st, &chk, key, DISPATCH_MAX_KEY);
    h = hash_bytes(key, klen);
    if (klen > 0 && (e = cache_get(s, key, klen, h, now)) != NULL) {
        count("picket_dispatch_cache_total", "Dispatch cache lookups and evictions", s->name,
              "hit");
        free(key);
        check_clear(&chk);
        apply(st, &e->a, dc->server_id, "cache", now - e->stored_ms);
        return 1;
    }
    count("picket_dispatch_cache_total", "Dispatch cache lookups and evictions", s->name, "miss");
    /* Coalesce on an identical check in flight, sent under the same
     * generation (a check sent before a reload answers for the old one). */
    for (inf = klen > 0 ? s->inflight : NULL; inf != NULL; inf = inf->next)
        if (inf->hash == h && inf->klen == klen && memcmp(inf->key, key, klen) == 0 &&
            inf->snap == st->snap && inf->revision == st->bundle_revision)
            break;
    if (inf != NULL && inf->nwaiters >= DISPATCH_MAX_WAITERS) {
        free(key);
        check_clear(&chk);
        st->reason = "dispatch_overloaded";
        px_stream_respond(st, 503, "authorization busy\n", 14, "dispatch_overloaded");
        return 1;
    }
    wt = calloc(1, sizeof(*wt));
    if (wt == NULL) {
        free(key);
        check_clear(&chk);
        apply_error(st, dc, "out_of_memory");
        return 1;
    }
    if (inf != NULL) {
        free(key);
        count("picket_dispatch_coalesced_total", "Requests that waited on an identical check",
              s->name, "coalesced");
    } else {
        inf = calloc(1, sizeof(*inf));
        if (inf == NULL || service_addr(dc, &up, host, sizeof(host), port, sizeof(port)) != 0) {
            free(inf);
            free(wt);
            free(key);
            check_clear(&chk);
            apply_error(st, dc, "bad_service_url");
            return 1;
        }
        inf->key = key;
        inf->klen = klen;
        inf->hash = h;
        inf->svc = s;
        inf->w = st->w;
        inf->snap = st->snap;
        inf->revision = st->bundle_revision;
        inf->next = s->inflight;
        s->inflight = inf;
        inf->call = send_check(st, dc, &chk, inf, &up);
        if (inf->call == NULL) {
            inflight_remove(s, inf);
            free(inf->key);
            free(inf);
            free(wt);
            apply_error(st, dc, "dispatch_start_failed");
            return 1;
        }
    }
    check_clear(&chk);
    wt->st = st;
    wt->inf = inf;
    wt->next = inf->waiters;
    if (inf->waiters)
        inf->waiters->prev = wt;
    inf->waiters = wt;
    inf->nwaiters++;
    st->up = &wait_ops;
    st->up_ctx = wt;
    return 1;
}

void px_dispatch_free(struct px_worker *w)
{
    struct px_dispatch_state *ds = w->dispatch;
    if (ds == NULL)
        return;
    for (size_t i = 0; i < ds->nsvc; i++) {
        struct service *s = ds->svc[i];
        while (s->inflight != NULL) {
            struct inflight *inf = s->inflight;
            s->inflight = inf->next;
            px_client_cancel(inf->call);
            while (inf->waiters != NULL) {
                struct waiter *wt = inf->waiters;
                waiter_unlink(wt);
                wt->st->up = NULL;
                wt->st->up_ctx = NULL;
                free(wt);
            }
            free(inf->key);
            free(inf);
        }
        cache_clear(s);
        free(s->table);
        free(s);
    }
    free(ds->svc);
    free(ds);
    w->dispatch = NULL;
}
