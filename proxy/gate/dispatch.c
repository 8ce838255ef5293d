/*
 * dispatch.c - remote authorization for the rules that say `dispatch`,
 * with the contract of Envoy's HTTP ext_authz: the check request carries
 * the original method and authority, the service URL's path prefix plus
 * the whole target, the allow-listed headers, and the caller's identity
 * (x-forwarded-client-cert as picket wrote it, and x-picket-peer-id); no
 * body. 200 allows (and the x- headers it returns are added upstream);
 * anything else denies, and its status and body go back to the client.
 * Timeouts and errors deny unless on_error is "allow": a missing answer is
 * never an allow by accident.
 *
 * Caching and coalescing (dispatch_cache.c holds the shared parts):
 *   - one cache per service for the whole process, keyed by everything the
 *     check carried, each entry kept for the answer's Cache-Control max-age
 *     (no max-age: not cached), never longer than max_cache_ttl, at most
 *     cache_entries entries, inside the memory budget; a new policy revision
 *     or config snapshot empties it;
 *   - per worker, a small direct-mapped first level (L1_SLOTS) of the
 *     entries it used, so a warm cache is read without a lock;
 *   - identical checks in flight are coalesced, on this worker (waiters on
 *     one record, at most DISPATCH_MAX_WAITERS) and across workers (the
 *     record joins the owner's check; the answer comes back as a message).
 * A waiting stream occupies its upstream slot (st->up) with ops whose
 * cancel() takes it off the wait list, so a client that leaves while its
 * check is in flight is forgotten cleanly.
 */
#include "dispatch.h"
#include "gate.h"
#include "url.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client.h"
#include "dispatch_int.h"
#include "fmt.h"
#include "log.h"
#include "mailbox.h"
#include "metrics.h"

#define DISPATCH_MAX_WAITERS 1024   /* streams coalesced on one check */
#define DISPATCH_MAX_BODY 65536     /* denial body relayed to the client */
#define DISPATCH_MAX_KEY 16384      /* longer check keys are not cached or coalesced */
#define DISPATCH_MAX_ADD_HEADERS 32 /* headers taken from an allow answer */

#define L1_SLOTS 256 /* per worker and service: the lock-free first level */

struct waiter {
    struct px_stream *st;
    struct inflight *inf;
    struct waiter *next, *prev;
};

/* One check this worker waits for: sent by it (owner) or by another worker
 * (joined). Streams of this worker with the same key wait on it. */
struct inflight {
    struct inflight *next, *prev;
    char *key;
    size_t klen;
    uint64_t hash;
    struct px_dgen gen;
    struct service *svc;
    struct px_client_call *call; /* owner: the check; NULL when joined */
    int owner;
    int64_t max_ttl_ms; /* max_cache_ttl of the config it was asked under */
    struct waiter *waiters;
    size_t nwaiters;
};

/* A first-level slot: a reference to an entry of the shared cache. */
struct l1slot {
    struct px_dentry *e; /* NULL: empty */
};

/* A service as one worker sees it. */
struct service {
    char name[80];
    struct px_dsvc *shared;
    struct px_dgen gen;
    int has_gen;
    struct l1slot l1[L1_SLOTS];
    struct inflight *inflight;
};

/* An answer for a check another worker sent, posted to this worker's
 * mailbox. */
struct mail {
    struct inflight *local;
    struct px_answer *a;
    enum px_reason err;
};

struct px_dispatch_state {
    struct px_worker *w;
    struct service **svc; /* each allocated on its own: in-flight records point at them */
    size_t nsvc;
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

/* ---- the first level (this worker's, no lock) ------------------------------ */

static void l1_clear(struct service *s)
{
    for (size_t i = 0; i < L1_SLOTS; i++) {
        px_dentry_unref(s->l1[i].e);
        s->l1[i].e = NULL;
    }
}

/* The entry for key if this worker holds it and the cache still does (its
 * dead flag is the only shared state read: no lock). */
static struct px_dentry *l1_get(struct service *s, const char *key, size_t klen, uint64_t h,
                                int64_t now)
{
    struct l1slot *sl = &s->l1[h % L1_SLOTS];
    struct px_dentry *e = sl->e;
    if (e == NULL || e->hash != h || e->klen != klen || memcmp(e->key, key, klen) != 0)
        return NULL;
    if (atomic_load_explicit(&e->dead, memory_order_acquire) || !px_dgen_eq(e->gen, s->gen) ||
        now >= e->expires_ms) {
        px_dentry_unref(e); /* evicted, flushed, or the authority's word has run out */
        sl->e = NULL;
        return NULL;
    }
    return e;
}

/* Keeps e (a reference the caller hands over) in its slot. */
static void l1_put(struct service *s, struct px_dentry *e)
{
    struct l1slot *sl = &s->l1[e->hash % L1_SLOTS];
    px_dentry_unref(sl->e);
    sl->e = e;
}

/* ---- per-worker state ----------------------------------------------------- */


static struct service *service_get(struct px_worker *w, const struct px_dispatch_cfg *dc,
                                   const struct px_stream *st)
{
    struct px_dispatch_state *ds = w->dispatch;
    struct service *s = NULL;
    struct px_dgen g = {st->snap->gen, st->bundle_revision};

    if (ds == NULL) {
        ds = calloc(1, sizeof(*ds));
        if (ds == NULL)
            return NULL;
        ds->w = w;
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
    s->shared = px_dsvc_get(dc->name, dc->cache_entries > 0 ? (size_t)dc->cache_entries : 0);
    if (s->shared == NULL)
        return NULL;
    /* A new policy revision or config snapshot starts from an empty cache,
     * here and (if it is newer) for every worker. */
    if (!s->has_gen || !px_dgen_eq(s->gen, g)) {
        l1_clear(s);
        s->gen = g;
        s->has_gen = 1;
        px_dsvc_generation(s->shared, g);
    }
    if (px_mem_level() >= PX_MEM_EVICT) {
        l1_clear(s);
        px_dcache_evict_for_memory();
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
static void apply(struct px_stream *st, const struct px_answer *a, const char *svc_id,
                  const char *decided_by, int64_t age_ms)
{
    st->decided_by = decided_by;
    st->dispatch_node = svc_id;
    st->cache_age_ms = age_ms;
    if (a->status == 200) {
        st->decision = "allow";
        for (size_t i = 0; i < a->add.n; i++) {
            px_hdrs_del(&st->rq.hdrs, a->add.v[i].name);
            if (px_hdrs_add(&st->rq.hdrs, a->add.v[i].name, a->add.v[i].nlen, a->add.v[i].value,
                            a->add.v[i].vlen, 0) != 0) {
                /* the service said "allow, with these fields": without one
                 * of them it is not what the service allowed */
                px_stream_respond(st, 503, "out of memory\n", PX_GRPC_UNAVAILABLE,
                                  PX_R_OUT_OF_MEMORY);
                return;
            }
        }
        px_stream_forward(st);
        return;
    }
    st->decision = "deny";
    st->local_response = 1;
    st->reason = PX_R_DISPATCH_DENY;
    if (st->rq.is_grpc) {
        px_stream_respond(st, a->status, "forbidden by authorization service\n",
                          PX_GRPC_PERMISSION_DENIED, PX_R_DISPATCH_DENY);
        return;
    }
    /* The service's own status and body go back to the client. */
    px_hdrs_clear(&st->resp);
    evbuffer_drain(st->resp_body, evbuffer_get_length(st->resp_body));
    st->status = a->status;
    st->resp_content_length = (int64_t)a->body_len;
    st->resp_eof = 1;
    if ((a->ctype && px_hdrs_add(&st->resp, "content-type", 12, a->ctype, strlen(a->ctype), 0)) ||
        (a->body_len > 0 && evbuffer_add(st->resp_body, a->body, a->body_len) != 0) ||
        (st->rq.request_id[0] && px_hdrs_add(&st->resp, "x-request-id", 12, st->rq.request_id,
                                             strlen(st->rq.request_id), 0) != 0)) {
        /* the service's status alone rather than part of its answer */
        px_hdrs_clear(&st->resp);
        evbuffer_drain(st->resp_body, evbuffer_get_length(st->resp_body));
        st->resp_content_length = 0;
    }
    if (st->down)
        st->down->response_ready(st);
}

static void apply_error(struct px_stream *st, const struct px_dispatch_cfg *dc,
                        enum px_reason why)
{
    st->decided_by = "dispatch";
    st->dispatch_node = dc->server_id;
    st->reason = why;
    if (dc->on_error_allow) {
        st->decision = "allow";
        px_log(PX_LOG_WARN, "dispatch_error_allowed", "service", dc->name, "error",
               px_reason_name(why),
               "request_id", st->rq.request_id, NULL);
        px_stream_forward(st);
        return;
    }
    st->decision = "deny";
    px_stream_respond(st, 403, "forbidden: authorization service unavailable\n", PX_GRPC_PERMISSION_DENIED, why);
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

static void inflight_unlink(struct service *s, struct inflight *inf)
{
    if (inf->prev)
        inf->prev->next = inf->next;
    else
        s->inflight = inf->next;
    if (inf->next)
        inf->next->prev = inf->prev;
    inf->next = inf->prev = NULL;
}

/* The answer to inf's check (a, or the error err) for every stream of
 * this worker waiting on it; frees inf. */
static void deliver(struct inflight *inf, const struct px_answer *a, enum px_reason err)
{
    const struct px_dispatch_cfg *dc = NULL;
    inflight_unlink(inf->svc, inf);
    /* Each waiter may free itself on the way. */
    while (inf->waiters != NULL) {
        struct waiter *wt = inf->waiters;
        struct px_stream *st = wt->st;
        waiter_unlink(wt);
        free(wt);
        st->up = NULL;
        st->up_ctx = NULL;
        dc = find_cfg(st->snap->cfg, inf->svc->name);
        if (dc == NULL) {
            px_stream_respond(st, 403, "forbidden: authorization service unavailable\n", PX_GRPC_PERMISSION_DENIED,
                              PX_R_DISPATCH_UNAVAILABLE);
            continue;
        }
        if (err != PX_R_NONE || a == NULL)
            apply_error(st, dc, err != PX_R_NONE ? err : PX_R_DISPATCH_UNAVAILABLE);
        else
            apply(st, a, dc->server_id, "dispatch", -1);
    }
    free(inf->key);
    free(inf);
}

/* Max-age from Cache-Control: no-store / no-cache / private mean "do not
 * reuse". The whole value is searched, however long: a directive past any
 * fixed-size copy must still count. Capped at a year while reading. */
static int64_t answer_ttl_ms(const struct px_hdr *cc)
{
    const char *m;
    long long secs = 0;
    if (cc == NULL || (m = ci_find(cc->value, cc->vlen, "max-age=")) == NULL ||
        ci_find(cc->value, cc->vlen, "no-store") != NULL ||
        ci_find(cc->value, cc->vlen, "no-cache") != NULL ||
        ci_find(cc->value, cc->vlen, "private") != NULL)
        return 0;
    for (m += 8; m < cc->value + cc->vlen && *m >= '0' && *m <= '9'; m++) {
        secs = secs * 10 + (*m - '0');
        if (secs > 86400LL * 365)
            secs = 86400LL * 365;
    }
    return secs > 0 ? (int64_t)secs * 1000 : 0;
}

/* The service's answer as a shared, immutable px_answer. NULL when out of
 * memory. */
static struct px_answer *answer_from(const struct px_client_resp *r)
{
    struct px_answer *a = px_answer_new();
    const struct px_hdr *ct = px_hdrs_get(r->headers, "content-type");
    if (a == NULL)
        return NULL;
    a->status = r->status;
    if (r->status == 200) {
        for (size_t i = 0; i < r->headers->n && a->add.n < DISPATCH_MAX_ADD_HEADERS; i++)
            if (addable_header(&r->headers->v[i]) &&
                px_hdrs_add(&a->add, r->headers->v[i].name, r->headers->v[i].nlen,
                            r->headers->v[i].value, r->headers->v[i].vlen, 0) != 0)
                goto fail;
    } else {
        size_t n = r->body_len < DISPATCH_MAX_BODY ? r->body_len : DISPATCH_MAX_BODY;
        if ((a->body = malloc(n + 1)) == NULL)
            goto fail;
        memcpy(a->body, r->body, n);
        a->body[n] = '\0';
        a->body_len = n;
        if (ct != NULL && (a->ctype = strndup(ct->value, ct->vlen < 200 ? ct->vlen : 200)) == NULL)
            goto fail;
    }
    a->bytes = sizeof(*a) + a->body_len + (a->ctype ? strlen(a->ctype) : 0) + a->add.bytes;
    return a;
fail:
    px_answer_unref(a);
    return NULL;
}

static void on_answer(void *arg, const struct px_client_resp *r)
{
    struct inflight *inf = arg;
    struct service *s = inf->svc;
    struct px_answer *a = NULL;
    int64_t now = px_now_ms(), ttl = 0;
    enum px_reason err = PX_R_NONE;
    char latency_labels[120];

    inf->call = NULL;
    snprintf(latency_labels, sizeof(latency_labels), "service=\"%s\"", s->name);
    px_histogram_observe(px_histogram_get("picket_dispatch_check_duration_seconds",
                                          "Authorization check latency", latency_labels,
                                          PX_LATENCY_BOUNDS, PX_LATENCY_NBOUNDS),
                         (double)r->duration_us / 1e6);
    if (r->status == 0) {
        err = r->error != PX_R_NONE ? r->error : PX_R_DISPATCH_UNAVAILABLE;
        count("picket_dispatch_checks_total", "Authorization checks by result", s->name,
              err == PX_R_TIMEOUT ? "timeout" : "error");
    } else {
        count("picket_dispatch_checks_total", "Authorization checks by result", s->name,
              r->status == 200 ? "allow" : "deny");
        a = answer_from(r);
        if (a == NULL)
            err = PX_R_OUT_OF_MEMORY;
        ttl = answer_ttl_ms(px_hdrs_get(r->headers, "cache-control"));
    }
    if (ttl > inf->max_ttl_ms)
        ttl = inf->max_ttl_ms;
    /* the shared cache (if this generation is still current) and every
     * worker that joined this check; then this worker's own waiters */
    if (inf->klen > 0) /* a key too long to keep is neither cached nor shared */
        px_dsvc_complete(s->shared, inf->key, inf->klen, inf->hash, inf->gen, a, err, now, ttl);
    deliver(inf, a, err);
    px_answer_unref(a);
}

/* ---- answers from other workers ------------------------------------------ */

/* Also what becomes of an answer that reaches a worker only as it ends:
 * its waiters went with its streams. */
static void mail_drop(void *arg)
{
    struct mail *m = arg;
    px_answer_unref(m->a);
    free(m);
}

static void mail_run(void *arg)
{
    struct mail *m = arg;
    deliver(m->local, m->a, m->err);
    mail_drop(m);
}

void px_dispatch_post(struct px_worker *w, void *local, struct px_answer *a, enum px_reason err)
{
    struct mail *m = malloc(sizeof(*m));
    if (m != NULL) {
        m->local = local;
        m->a = a;
        m->err = err;
        if (px_mailbox_post(w->mailbox, mail_run, mail_drop, m) == 0)
            return;
        free(m);
    }
    /* out of memory: the waiters there answer when their clients time out */
    px_answer_unref(a);
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

static void wait_on(struct px_stream *st, struct inflight *inf, struct waiter *wt)
{
    wt->st = st;
    wt->inf = inf;
    wt->prev = NULL;
    wt->next = inf->waiters;
    if (inf->waiters)
        inf->waiters->prev = wt;
    inf->waiters = wt;
    inf->nwaiters++;
    st->up = &wait_ops;
    st->up_ctx = wt;
}

int px_dispatch_request(struct px_stream *st, const char *name)
{
    const struct px_dispatch_cfg *dc = find_cfg(st->snap->cfg, name);
    struct service *s;
    struct px_dentry *e;
    struct inflight *inf;
    struct waiter *wt;
    struct px_upstream_addr up;
    struct check chk;
    char host[256], port[8];
    char *key;
    size_t klen;
    uint64_t h;
    int64_t now = px_now_ms();

    memset(&chk, 0, sizeof(chk));
    if (dc == NULL) {
        st->reason = PX_R_DISPATCH_NOT_CONFIGURED;
        px_stream_respond(st, 403, "forbidden: authorization service unavailable\n", PX_GRPC_PERMISSION_DENIED,
                          PX_R_DISPATCH_NOT_CONFIGURED);
        return 1;
    }
    s = service_get(st->w, dc, st);
    key = malloc(DISPATCH_MAX_KEY);
    if (s == NULL || key == NULL || build_check(st, dc, &chk) != 0) {
        free(key);
        check_clear(&chk);
        apply_error(st, dc, PX_R_OUT_OF_MEMORY);
        return 1;
    }
    klen = build_key(st, &chk, key, DISPATCH_MAX_KEY);
    h = hash_bytes(key, klen);
    /* 1. this worker's first level, no lock; 2. the shared cache */
    if (klen > 0 && ((e = l1_get(s, key, klen, h, now)) != NULL ||
                     (e = px_dsvc_lookup(s->shared, key, klen, h, s->gen, now)) != NULL)) {
        count("picket_dispatch_cache_total", "Dispatch cache lookups and evictions", s->name,
              "hit");
        free(key);
        check_clear(&chk);
        if (s->l1[h % L1_SLOTS].e != e)
            l1_put(s, e); /* from the shared cache: keep our reference here */
        apply(st, e->a, dc->server_id, "cache", now - e->stored_ms);
        return 1;
    }
    count("picket_dispatch_cache_total", "Dispatch cache lookups and evictions", s->name, "miss");
    /* 3. an identical check this worker already waits for */
    for (inf = klen > 0 ? s->inflight : NULL; inf != NULL; inf = inf->next)
        if (inf->hash == h && inf->klen == klen && px_dgen_eq(inf->gen, s->gen) &&
            memcmp(inf->key, key, klen) == 0)
            break;
    if (inf != NULL && inf->nwaiters >= DISPATCH_MAX_WAITERS) {
        free(key);
        check_clear(&chk);
        st->reason = PX_R_DISPATCH_OVERLOADED;
        px_stream_respond(st, 503, "authorization busy\n", PX_GRPC_UNAVAILABLE, PX_R_DISPATCH_OVERLOADED);
        return 1;
    }
    wt = calloc(1, sizeof(*wt));
    if (wt == NULL) {
        free(key);
        check_clear(&chk);
        apply_error(st, dc, PX_R_OUT_OF_MEMORY);
        return 1;
    }
    if (inf != NULL) {
        free(key);
        check_clear(&chk);
        count("picket_dispatch_coalesced_total", "Requests that waited on an identical check",
              s->name, "coalesced");
        wait_on(st, inf, wt);
        return 1;
    }
    inf = calloc(1, sizeof(*inf));
    if (inf == NULL || service_addr(dc, &up, host, sizeof(host), port, sizeof(port)) != 0) {
        free(inf);
        free(wt);
        free(key);
        check_clear(&chk);
        apply_error(st, dc, PX_R_BAD_SERVICE_URL);
        return 1;
    }
    inf->key = key;
    inf->klen = klen;
    inf->hash = h;
    inf->gen = s->gen;
    inf->svc = s;
    inf->max_ttl_ms = dc->max_cache_ttl_ms;
    inf->next = s->inflight;
    if (s->inflight)
        s->inflight->prev = inf;
    s->inflight = inf;
    wait_on(st, inf, wt);
    /* 4. an identical check another worker sent, or a check of our own */
    inf->owner = klen == 0 || px_dsvc_join(s->shared, key, klen, h, s->gen, st->w, inf);
    if (!inf->owner) {
        check_clear(&chk);
        count("picket_dispatch_coalesced_total", "Requests that waited on an identical check",
              s->name, "coalesced");
        return 1;
    }
    inf->call = send_check(st, dc, &chk, inf, &up);
    check_clear(&chk);
    if (inf->call == NULL) {
        if (klen > 0) /* workers that joined meanwhile get the failure too */
            px_dsvc_complete(s->shared, key, klen, h, inf->gen, NULL, PX_R_DISPATCH_START_FAILED,
                             now, 0);
        deliver(inf, NULL, PX_R_DISPATCH_START_FAILED);
    }
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
            inflight_unlink(s, inf);
            if (inf->call != NULL)
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
        l1_clear(s);
        free(s);
    }
    free(ds->svc);
    free(ds);
    w->dispatch = NULL;
}
