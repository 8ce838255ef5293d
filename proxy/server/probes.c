/*
 * probes.c - the probes listener (probes.h): GET/HEAD /app-health/NAME runs
 * probe NAME against the app and answers 200 or 503.
 *
 * A run is one probe of one target. It lives on the control thread's
 * event base and ends exactly once (finish()): passed, failed, or timed
 * out by its timer; every request waiting for it is then answered with the
 * same verdict. Requests for a target that has a run in flight join it
 * (the same target of the same snapshot), so the app sees at most one
 * probe per target at a time, whoever asks.
 *
 * HTTP and TCP targets are our own short connections, one per run, as the
 * kubelet makes them: resolve (numeric hosts directly, names through the
 * control worker's resolver), connect, and for HTTP send a GET and read no
 * more than the status line (at most PX_PROBES_HTTP_READ_MAX bytes, 1xx
 * answers skipped); the connection is closed as soon as the status is
 * known, so a body, however long or slow, is never read. https targets
 * are not verified, as the kubelet does not verify them. gRPC targets
 * send grpc.health.v1.Health/Check over h2c through picket's own client
 * (client.h), whose h2 stack and limits bound the answer.
 *
 * What the requester learns is the verdict alone: fixed bodies, no
 * reason. The reason goes to the log when a target's verdict changes
 * (event app_probe), and every verdict to
 * picket_app_probes_total{probe,result}; picket_app_probes_waiting is the
 * number of requests waiting for a verdict.
 */
#include "probes.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/ssl.h>

#include "client.h"
#include "http_listen.h"
#include "log.h"
#include "metrics.h"
#include "resolver.h"

#define PREFIX "/app-health/"
#define MAX_RUNS (2 * PX_PROBE_MAX_TARGETS) /* a reload may leave the old snapshot's runs */

struct waiter {
    struct waiter *next;
    struct evhttp_request *req;
    struct evhttp_connection *conn;
};

struct run {
    struct run *next;
    struct px_probes *pr;
    struct px_snapshot *snap; /* ref: t points into snap->cfg */
    const struct px_probe_target *t;
    struct waiter *waiters;
    struct event *timer;
    struct px_resolve_req *resolving;
    struct bufferevent *bev;
    struct px_client_call *call;
    int64_t timeout_ms;
};

/* The last verdict of each target name, to log changes only. */
struct state {
    char name[PX_PROBE_NAME_MAX + 1];
    int pass;
};

struct px_probes {
    struct px_worker *ctl;
    struct px_gauge *waiting; /* picket_app_probes_waiting */
    struct px_httpl *hl;
    struct run *runs;
    size_t nruns;
    SSL_CTX *tls; /* https targets, made on first use */
    struct state states[PX_PROBE_MAX_TARGETS];
    size_t nstates;
};

/* ---- the wire --------------------------------------------------------------- */

int px_probe_http_status(const char *buf, size_t len, int *status)
{
    size_t off = 0;

    for (;;) {
        const char *b = buf + off, *eol;
        size_t n = len - off;
        int code;

        if (n < 12) {
            /* "HTTP/1.x NNN": refuse a wrong start at once */
            static const char pfx[] = "HTTP/1.";
            if (memcmp(b, pfx, n < 7 ? n : 7) != 0)
                return -1;
            return 0;
        }
        if (memcmp(b, "HTTP/1.", 7) != 0 || b[7] < '0' || b[7] > '9' || b[8] != ' ' || b[9] < '1' ||
            b[9] > '5' || b[10] < '0' || b[10] > '9' || b[11] < '0' || b[11] > '9')
            return -1;
        eol = memchr(b, '\n', n);
        if (eol == NULL)
            return 0;
        if (n > 12 && b[12] != ' ' && b[12] != '\r' && b[12] != '\n')
            return -1;
        code = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
        if (code >= 200) {
            *status = code;
            return 1;
        }
        /* an interim answer: skip its fields up to the blank line */
        for (const char *p = eol + 1;; p++) {
            const char *nl = memchr(p, '\n', (size_t)(buf + len - p));
            if (nl == NULL)
                return 0;
            if (nl == p || (nl == p + 1 && *p == '\r')) {
                off = (size_t)(nl + 1 - buf);
                break;
            }
            p = nl;
        }
        if (off >= len)
            return 0;
    }
}

size_t px_probe_grpc_request(const char *service, unsigned char *out, size_t cap)
{
    size_t sl = strlen(service), msg = 0, v, need;

    /* HealthCheckRequest { string service = 1; }: proto3 leaves an empty
     * string out */
    if (sl > 0) {
        msg = 1 + 1 + sl;
        for (v = sl; v >= 0x80; v >>= 7)
            msg++;
    }
    need = 5 + msg;
    if (need > cap || msg > 0xffffffffu)
        return 0;
    out[0] = 0; /* not compressed */
    out[1] = (unsigned char)(msg >> 24);
    out[2] = (unsigned char)(msg >> 16);
    out[3] = (unsigned char)(msg >> 8);
    out[4] = (unsigned char)msg;
    if (sl > 0) {
        size_t o = 5;
        out[o++] = 0x0a; /* field 1, length-delimited */
        for (v = sl; v >= 0x80; v >>= 7)
            out[o++] = (unsigned char)(v | 0x80);
        out[o++] = (unsigned char)v;
        memcpy(out + o, service, sl);
    }
    return need;
}

/* A varint at p[*i..n) into *v; -1 when cut or longer than 10 bytes. */
static int varint(const unsigned char *p, size_t n, size_t *i, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*i >= n)
            return -1;
        *v |= (uint64_t)(p[*i] & 0x7f) << shift;
        if ((p[(*i)++] & 0x80) == 0)
            return 0;
    }
    return -1;
}

int px_probe_grpc_status(const unsigned char *body, size_t len)
{
    size_t n, i = 5;
    uint64_t status = 0;

    if (len < 5 || body[0] != 0)
        return -1;
    n = ((size_t)body[1] << 24) | ((size_t)body[2] << 16) | ((size_t)body[3] << 8) | body[4];
    if (n != len - 5)
        return -1;
    while (i < len) {
        uint64_t key, v;
        if (varint(body, len, &i, &key) < 0)
            return -1;
        switch (key & 7) {
        case 0:
            if (varint(body, len, &i, &v) < 0)
                return -1;
            if (key >> 3 == 1)
                status = v; /* ServingStatus status = 1 (the last one wins) */
            break;
        case 1:
            if (len - i < 8)
                return -1;
            i += 8;
            break;
        case 2:
            if (varint(body, len, &i, &v) < 0 || v > len - i)
                return -1;
            i += (size_t)v;
            break;
        case 5:
            if (len - i < 4)
                return -1;
            i += 4;
            break;
        default:
            return -1;
        }
        if (key >> 3 == 0)
            return -1;
    }
    return status > 1000 ? -1 : (int)status;
}

/* ---- answers ------------------------------------------------------------------ */

/* evhttp stops reading a connection once it has its request, so it would
 * not notice a requester that hangs up while its probe runs. While a
 * request waits, its connection is read again for EOF and resets only (no
 * read callback: bytes sent early stay buffered for evhttp, at most
 * PX_PROBES_HEADERS_MAX; no timeouts: the run's timer bounds the wait), so
 * evhttp's error callback detaches the request and frees the connection,
 * and conn_closed() drops the waiter at once. control.c does the same for
 * held long-polls. */
static void wait_watch(struct evhttp_connection *conn)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
    bufferevent_event_cb ecb = NULL;
    void *arg = NULL;

    bufferevent_getcb(bev, NULL, NULL, &ecb, &arg);
    bufferevent_setcb(bev, NULL, NULL, ecb, arg);
    bufferevent_setwatermark(bev, EV_READ, 0, PX_PROBES_HEADERS_MAX);
    bufferevent_set_timeouts(bev, NULL, NULL);
    bufferevent_enable(bev, EV_READ);
}

/* Back to evhttp's settings before the answer is written. */
static void wait_unwatch(struct evhttp_connection *conn)
{
    bufferevent_setwatermark(evhttp_connection_get_bufferevent(conn), EV_READ, 0, 0);
    evhttp_connection_set_timeout(conn, PX_PROBES_IO_TIMEOUT_S);
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(b, text, strlen(text));
    evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static void note(struct px_probes *pr, const struct px_probe_target *t, int pass,
                 const char *detail)
{
    char labels[PX_PROBE_NAME_MAX + 64];
    struct state *s = NULL;

    /* names are [A-Za-z0-9._/-]: nothing to escape in a label value */
    snprintf(labels, sizeof(labels), "probe=\"%s\",result=\"%s\"", t->name, pass ? "pass" : "fail");
    px_counter_add(px_counter_get("picket_app_probes_total",
                                  "App probes run through the probes listener, by target and "
                                  "verdict",
                                  labels),
                   1);
    for (size_t i = 0; i < pr->nstates; i++)
        if (strcmp(pr->states[i].name, t->name) == 0)
            s = &pr->states[i];
    if (s == NULL && pr->nstates < PX_PROBE_MAX_TARGETS) {
        s = &pr->states[pr->nstates++];
        snprintf(s->name, sizeof(s->name), "%s", t->name);
        s->pass = -1;
    }
    if (s == NULL || s->pass != pass) {
        if (s != NULL)
            s->pass = pass;
        px_log(pass ? PX_LOG_INFO : PX_LOG_WARN, "app_probe", "probe", t->name, "target", t->up.url,
               "result", pass ? "pass" : "fail", "detail", detail, NULL);
    }
}

/* Ends a run: every waiter gets the verdict, everything is released. */
static void finish(struct run *r, int pass, const char *detail)
{
    struct px_probes *pr = r->pr;
    struct run **pp;
    struct waiter *w, *next;

    for (pp = &pr->runs; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            pr->nruns--;
            break;
        }
    if (r->timer != NULL)
        event_free(r->timer);
    if (r->resolving != NULL)
        px_resolve_cancel(r->resolving);
    if (r->bev != NULL)
        bufferevent_free(r->bev);
    if (r->call != NULL)
        px_client_cancel(r->call);
    if (detail != NULL)
        note(pr, r->t, pass, detail);
    for (w = r->waiters; w != NULL; w = next) {
        next = w->next;
        if (detail != NULL) {
            wait_unwatch(w->conn);
            if (pass)
                reply(w->req, 200, "OK", "ok\n");
            else
                reply(w->req, 503, "Service Unavailable", "probe failed\n");
        }
        free(w);
        px_gauge_add(pr->waiting, -1);
    }
    px_snapshot_unref(r->snap);
    free(r);
}

/* ---- HTTP and TCP ----------------------------------------------------------------- */

/* Looks for the status line in what arrived; at eof, what arrived is all
 * there is. Ends the run when it can be judged. */
static void read_status(struct run *r, int eof)
{
    struct evbuffer *in = bufferevent_get_input(r->bev);
    size_t n = evbuffer_get_length(in);
    const char *p;
    char detail[64];
    int status = 0, rc;

    if (n > PX_PROBES_HTTP_READ_MAX)
        n = PX_PROBES_HTTP_READ_MAX;
    p = n > 0 ? (const char *)evbuffer_pullup(in, (ev_ssize_t)n) : "";
    if (p == NULL) {
        finish(r, 0, "out of memory");
        return;
    }
    rc = px_probe_http_status(p, n, &status);
    if (rc < 0) {
        finish(r, 0, "not an HTTP/1.x answer");
    } else if (rc > 0) {
        snprintf(detail, sizeof(detail), "status %d", status);
        finish(r, status < 400, detail);
    } else if (n >= PX_PROBES_HTTP_READ_MAX) {
        finish(r, 0, "no status line in the first 8 KiB");
    } else if (eof) {
        finish(r, 0, n > 0 ? "closed before a complete status line" : "closed without an answer");
    }
}

static void bev_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    read_status(arg, 0);
}

static void send_request(struct run *r)
{
    const struct px_probe_target *t = r->t;
    struct evbuffer *out = bufferevent_get_output(r->bev);
    int host = 0, ua = 0;

    for (size_t i = 0; i < t->nhdrs; i++) {
        host |= strcasecmp(t->hdr_names[i], "host") == 0;
        ua |= strcasecmp(t->hdr_names[i], "user-agent") == 0;
    }
    /* The config parser checked every piece: no CR, LF or NUL can get in. */
    evbuffer_add_printf(out, "GET %s HTTP/1.1\r\n", t->path);
    if (!host)
        evbuffer_add_printf(out, "Host: %s\r\n", t->authority);
    if (!ua)
        evbuffer_add_printf(out, "User-Agent: kube-probe/picket\r\n");
    evbuffer_add_printf(out, "Accept: */*\r\nConnection: close\r\n");
    for (size_t i = 0; i < t->nhdrs; i++)
        evbuffer_add_printf(out, "%s: %s\r\n", t->hdr_names[i], t->hdr_values[i]);
    evbuffer_add(out, "\r\n", 2);
}

static void bev_event(struct bufferevent *bev, short what, void *arg)
{
    struct run *r = arg;

    if (what & BEV_EVENT_CONNECTED) {
        if (r->t->kind == PX_PROBE_TCP) {
            finish(r, 1, "connected");
            return;
        }
        send_request(r);
        bufferevent_enable(bev, EV_READ);
        return;
    }
    if ((what & BEV_EVENT_EOF) && r->t->kind == PX_PROBE_HTTP) {
        read_status(r, 1); /* the status line may have come with the close */
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT | BEV_EVENT_EOF))
        finish(r, 0,
               r->t->tls && bufferevent_get_openssl_error(bev) != 0 ? "tls error"
                                                                    : "connection failed");
}

static SSL_CTX *tls_ctx(struct px_probes *pr)
{
    if (pr->tls != NULL)
        return pr->tls;
    pr->tls = SSL_CTX_new(TLS_client_method());
    if (pr->tls == NULL)
        return NULL;
    /* The kubelet's HTTPS probes do not verify the server: neither do we. */
    SSL_CTX_set_verify(pr->tls, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(pr->tls, TLS1_2_VERSION);
    SSL_CTX_set_session_cache_mode(pr->tls, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_protos(pr->tls, (const unsigned char *)"\x08http/1.1", 9);
    return pr->tls;
}

static void connect_to(struct run *r, const struct sockaddr *sa, socklen_t len)
{
    struct px_probes *pr = r->pr;
    struct event_base *base = pr->ctl->base;
    const struct px_probe_target *t = r->t;

    if (t->tls) {
        SSL_CTX *ctx = tls_ctx(pr);
        SSL *ssl = ctx != NULL ? SSL_new(ctx) : NULL;
        struct in6_addr a6;
        if (ssl == NULL) {
            finish(r, 0, "out of memory");
            return;
        }
        if (inet_pton(AF_INET6, t->up.host, &a6) != 1 && inet_pton(AF_INET, t->up.host, &a6) != 1)
            SSL_set_tlsext_host_name(ssl, t->up.host);
        r->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (r->bev == NULL)
            SSL_free(ssl);
        else
            bufferevent_openssl_set_allow_dirty_shutdown(r->bev, 1);
    } else {
        r->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (r->bev == NULL) {
        finish(r, 0, "out of memory");
        return;
    }
    bufferevent_setcb(r->bev, bev_read, NULL, bev_event, r);
    bufferevent_setwatermark(r->bev, EV_READ, 0, PX_PROBES_HTTP_READ_MAX);
    if (bufferevent_socket_connect(r->bev, sa, (int)len) != 0)
        finish(r, 0, "connection failed");
}

static void resolved(void *arg, int ok, const struct sockaddr *sa, socklen_t len, int64_t ttl_ms,
                     const char *why)
{
    struct run *r = arg;
    char detail[96];
    (void)ttl_ms;

    r->resolving = NULL;
    if (!ok) {
        snprintf(detail, sizeof(detail), "cannot resolve the host: %s", why ? why : "failed");
        finish(r, 0, detail);
        return;
    }
    connect_to(r, sa, len);
}

static void start_conn(struct run *r)
{
    const struct px_probe_target *t = r->t;
    struct px_worker *ctl = r->pr->ctl;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    int port = atoi(t->up.port);

    memset(&a4, 0, sizeof(a4));
    memset(&a6, 0, sizeof(a6));
    if (inet_pton(AF_INET, t->up.host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)port);
        connect_to(r, (struct sockaddr *)&a4, sizeof(a4));
        return;
    }
    if (inet_pton(AF_INET6, t->up.host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)port);
        connect_to(r, (struct sockaddr *)&a6, sizeof(a6));
        return;
    }
    if (ctl->resolver == NULL)
        ctl->resolver = px_resolver_new(ctl->base, ctl->snap->cfg);
    r->resolving = ctl->resolver != NULL
                       ? px_resolver_lookup(ctl->resolver, t->up.host, t->up.port, resolved, r)
                       : NULL;
    if (r->resolving == NULL)
        finish(r, 0, "cannot resolve the host");
}

/* ---- gRPC -------------------------------------------------------------------------- */

static const char *field(const struct px_hdrs *h, const char *name)
{
    const struct px_hdr *f = h != NULL ? px_hdrs_get(h, name) : NULL;
    return f != NULL ? f->value : NULL;
}

static void grpc_done(void *arg, const struct px_client_resp *resp)
{
    struct run *r = arg;
    const char *gs;
    char detail[96];
    int st;

    r->call = NULL; /* it is over: finish() must not cancel it */
    if (resp->status == 0) {
        snprintf(detail, sizeof(detail), "%s", px_reason_name(resp->error));
        finish(r, 0, detail);
        return;
    }
    gs = field(resp->trailers, "grpc-status");
    if (gs == NULL)
        gs = field(resp->headers, "grpc-status"); /* a trailers-only answer */
    if (resp->status != 200 || gs == NULL) {
        snprintf(detail, sizeof(detail), "status %d, no grpc-status", resp->status);
        finish(r, 0, detail);
        return;
    }
    if (strcmp(gs, "0") != 0) {
        snprintf(detail, sizeof(detail), "grpc-status %.8s", gs);
        finish(r, 0, detail);
        return;
    }
    st = px_probe_grpc_status((const unsigned char *)resp->body, resp->body_len);
    if (st == 1) {
        finish(r, 1, "SERVING");
    } else {
        static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
        snprintf(detail, sizeof(detail), "%s",
                 st < 0   ? "bad HealthCheckResponse"
                 : st < 4 ? names[st]
                          : "unknown status");
        finish(r, 0, detail);
    }
}

static void start_grpc(struct run *r)
{
    const struct px_probe_target *t = r->t;
    unsigned char body[600];
    char authority[300], tmo[32];
    struct px_hdrs h;
    struct px_client_req req;
    size_t n = px_probe_grpc_request(t->service, body, sizeof(body));

    memset(&h, 0, sizeof(h));
    snprintf(authority, sizeof(authority), strchr(t->up.host, ':') ? "[%s]:%s" : "%s:%s",
             t->up.host, t->up.port);
    snprintf(tmo, sizeof(tmo), "%lldm", (long long)r->timeout_ms);
    if (n == 0 || px_hdrs_add(&h, "content-type", 12, "application/grpc", 16, 0) != 0 ||
        px_hdrs_add(&h, "te", 2, "trailers", 8, 0) != 0 ||
        px_hdrs_add(&h, "grpc-timeout", 12, tmo, strlen(tmo), 0) != 0 ||
        px_hdrs_add(&h, "user-agent", 10, "kube-probe/picket", 17, 0) != 0) {
        px_hdrs_clear(&h);
        finish(r, 0, "out of memory");
        return;
    }
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.authority = authority;
    req.path = "/grpc.health.v1.Health/Check";
    req.headers = &h;
    req.body = (const char *)body;
    req.body_len = n;
    req.timeout_ms = r->timeout_ms + 1000; /* the run's own timer ends it first */
    req.max_body = PX_PROBES_GRPC_BODY_MAX;
    r->call = px_client_request(r->pr->ctl, &t->up, &req, grpc_done, r);
    px_hdrs_clear(&h);
    if (r->call == NULL)
        finish(r, 0, "cannot start the check");
}

/* ---- runs ----------------------------------------------------------------------------- */

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg, 0, "timeout");
}

/* Starts probing t (of snap). NULL when it could not start. */
static struct run *run_start(struct px_probes *pr, struct px_snapshot *snap,
                             const struct px_probe_target *t)
{
    struct run *r = calloc(1, sizeof(*r));
    struct timeval tv;

    if (r == NULL)
        return NULL;
    r->pr = pr;
    r->t = t;
    r->snap = px_snapshot_ref(snap);
    r->timeout_ms = t->timeout_ms > 0 ? t->timeout_ms : snap->cfg->probes.timeout_ms;
    r->timer = evtimer_new(pr->ctl->base, timeout_cb, r);
    if (r->timer == NULL) {
        px_snapshot_unref(r->snap);
        free(r);
        return NULL;
    }
    tv.tv_sec = r->timeout_ms / 1000;
    tv.tv_usec = (r->timeout_ms % 1000) * 1000;
    evtimer_add(r->timer, &tv);
    r->next = pr->runs;
    pr->runs = r;
    pr->nruns++;
    return r;
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct px_probes *pr = arg;
    struct px_snapshot *snap = pr->ctl->snap;
    const struct px_config *cfg = snap->cfg;
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const struct px_probe_target *t = NULL;
    struct waiter *w;
    struct run *r;
    int fresh = 0;

    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply(req, 405, "Method Not Allowed", "method not allowed\n");
        return;
    }
    /* The request target as sent must be exactly the prefix and a
     * configured name: no query, no escapes, no dot segments, nothing a
     * normalizer could map onto something else. */
    if (uri != NULL && strncmp(uri, PREFIX, sizeof(PREFIX) - 1) == 0)
        for (size_t i = 0; i < cfg->probes.ntargets; i++)
            if (strcmp(uri + sizeof(PREFIX) - 1, cfg->probes.targets[i].name) == 0)
                t = &cfg->probes.targets[i];
    if (t == NULL) {
        reply(req, 404, "Not Found", "not found\n");
        return;
    }
    for (r = pr->runs; r != NULL; r = r->next)
        if (r->snap == snap && r->t == t)
            break;
    if (r == NULL) {
        if (pr->nruns >= MAX_RUNS || (r = run_start(pr, snap, t)) == NULL) {
            reply(req, 503, "Service Unavailable", "probe failed\n");
            return;
        }
        fresh = 1;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        reply(req, 503, "Service Unavailable", "probe failed\n");
        if (fresh)
            finish(r, 0, NULL);
        return;
    }
    w->req = req;
    w->conn = evhttp_request_get_connection(req);
    w->next = r->waiters;
    r->waiters = w;
    px_gauge_add(pr->waiting, 1);
    wait_watch(w->conn);
    if (!fresh)
        return;
    if (t->kind == PX_PROBE_GRPC)
        start_grpc(r); /* may finish r at once */
    else
        start_conn(r);
}

/* A connection went away (http_listen.c's close callback): its waiting
 * request is dropped, never answered on a freed connection. */
static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    struct px_probes *pr = arg;

    for (struct run *r = pr->runs; r != NULL; r = r->next)
        for (struct waiter **pw = &r->waiters; *pw != NULL;) {
            struct waiter *w = *pw;
            if (w->conn != evcon) {
                pw = &w->next;
                continue;
            }
            *pw = w->next;
            /* detached by evhttp (EOF, reset): ours to free; still
             * attached (the listener is being freed): evhttp frees it */
            if (evhttp_request_get_connection(w->req) == NULL)
                evhttp_request_free(w->req);
            free(w);
            px_gauge_add(pr->waiting, -1);
        }
}

struct px_probes *px_probes_start(struct px_worker *ctl, const char *host, const char *port,
                                  char *err, size_t errlen)
{
    struct px_probes *pr;
    struct px_httpl_opts o;
    char *end = NULL, e2[256];
    long pn = port != NULL ? strtol(port, &end, 10) : -1;

    if (port == NULL || *port == '\0' || *end != '\0' || pn < 0 || pn > 65535) {
        snprintf(err, errlen, "probes: bad port \"%s\"", port != NULL ? port : "(null)");
        return NULL;
    }
    pr = calloc(1, sizeof(*pr));
    if (pr == NULL) {
        snprintf(err, errlen, "probes: out of memory");
        return NULL;
    }
    pr->ctl = ctl;
    pr->waiting = px_gauge_get("picket_app_probes_waiting",
                               "Requests to the probes listener waiting for a verdict", "");
    memset(&o, 0, sizeof(o));
    o.name = "probes";
    o.host = host;
    o.port = (int)pn;
    o.max_conns = PX_PROBES_MAX_CONNS;
    o.request_timeout_ms = PX_PROBES_REQUEST_TIMEOUT_MS;
    o.io_timeout_s = PX_PROBES_IO_TIMEOUT_S;
    o.reserve_fds = PX_PROBES_RESERVE_FDS;
    o.max_headers_size = PX_PROBES_HEADERS_MAX;
    o.max_body_size = 0;
    o.allowed_methods = EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                        EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH;
    o.handle = handle;
    o.on_close = conn_closed;
    o.arg = pr;
    if (px_httpl_new(&pr->hl, ctl->base, &o, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "probes: %s", e2);
        px_probes_free(pr);
        return NULL;
    }
    return pr;
}

int px_probes_port(const struct px_probes *p)
{
    return p != NULL && p->hl != NULL ? px_httpl_port(p->hl) : 0;
}

void px_probes_free(struct px_probes *p)
{
    if (p == NULL)
        return;
    /* Unanswered: evhttp frees the requests with their connections. */
    while (p->runs != NULL)
        finish(p->runs, 0, NULL);
    px_httpl_free(p->hl);
    SSL_CTX_free(p->tls);
    free(p);
}
