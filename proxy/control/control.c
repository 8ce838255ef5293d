/*
 * control.c - the reference control plane (`picket control serve`): a folder
 * of signed envelopes served over mTLS with ETags and long-poll. See
 * control.h for the contract; the sidecar side is fetcher.c.
 *
 * One event base, evhttp over bufferevent_openssl (HTTP/1.1 only: the
 * sidecar falls back from h2 by ALPN). Every client must present an
 * X.509-SVID that passes certs_svid_check() against the configured trust
 * bundles and, with --allow, names an allowed ID; the check runs in the
 * handshake, so no request is parsed from an unverified peer.
 *
 * Files are read on every request and never cached across requests, so
 * renaming a new envelope into the folder publishes it. The ETag is the
 * SHA-256 of what was read, never of metadata. Held long-poll requests are
 * grouped per file name ("watch"); one timer checks each watched file's
 * stat identity (device, inode, size, mtime, ctime) every
 * PX_CONTROL_WATCH_MS and re-reads it only when that changed, so a
 * thousand held requests on one bundle cost one stat per tick and one read
 * per change. inotify would answer sooner but misses renames into
 * directories mounted from elsewhere (ConfigMap symlink swaps) unless the
 * whole tree is watched; 200 ms is well under a round trip's worth of
 * policy latency budget.
 *
 * The content read for a change is a reference-counted blob handed to every
 * answer by reference (evbuffer_add_reference), so memory does not grow with
 * the number of held requests. Held requests are capped (max_waiters);
 * past the cap a matching request is answered 304 at once, which a sidecar
 * treats as an ordinary poll. They are also capped per client SPIFFE ID
 * (max_waiters_per_client, a hash of clients with held requests): a client
 * at its cap gets its oldest held request answered 304 to make room for the
 * new one, so one identity (a hog, or a sidecar whose old connections
 * linger) cannot take every slot. Header size is capped by evhttp.
 *
 * evhttp stops reading a connection once it has its request, so it would
 * not notice a client that goes away while held until it writes the answer
 * at the deadline; the slot and the descriptor would stay taken until then.
 * While a request is held its connection is read again (hold_watch(): no
 * read callback, so bytes a client sends early stay buffered for evhttp, at
 * most PX_CONTROL_HEADERS_MAX; no timeouts), so EOF or a reset reaches
 * evhttp's error callback, which detaches the request and frees the
 * connection; http_listen.c's close callback then lands in
 * px_control_conn_closed(), which drops the waiter at once (status 499 in
 * the log). Every waiter ends exactly once: answered on change, at its
 * deadline or at shutdown, answered early to make room for a newer request
 * of its client, or dropped with its connection.
 *
 * This file answers requests (files, ETags, held requests); TLS, the
 * listener, signals and the server's lifetime are in control_server.c.
 */
#include "control_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "log.h"
#include "policy.h"

#define ETAG_LEN 66 /* '"' + 64 hex + '"' */

/* One version of one file, shared by every answer that sends it. */
struct blob {
    unsigned refs;
    size_t len;
    struct stat st;
    char etag[ETAG_LEN + 1];
    char data[];
};

/* Who asked, for the request's log line. */
struct reqinfo {
    char peer[PEER_MAX];
    char id[CERTS_SPIFFE_ID_MAX + 1];
    const char *method;
    int64_t start_us;
};

struct watch;

struct waiter {
    struct waiter *prev, *next;   /* on the watch */
    struct waiter *cprev, *cnext; /* on the client, oldest first */
    struct watch *w;
    struct client *cl;
    struct evhttp_request *req;
    struct evhttp_connection *conn;     /* its connection, for close detection */
    char etag[ETAG_LEN + 1];            /* the version the client holds */
    char path[PX_CONTROL_NAME_MAX + 2]; /* "/" + name, for the log */
    int64_t deadline_us;
    struct reqinfo ri;
};

/* Held requests of one client SPIFFE ID (in px_control.clients). */
struct client {
    struct client *next; /* hash chain */
    struct waiter *oldest, *newest;
    size_t n;
    char id[]; /* NUL-terminated */
};

/* Held requests on one file name. */
struct watch {
    struct watch *next;
    char name[PX_CONTROL_NAME_MAX + 1];
    struct blob *cur; /* last version read */
    struct waiter *waiters;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- pure helpers ---------------------------------------------------------- */

int px_control_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > PX_CONTROL_NAME_MAX || name[0] == '.')
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

int px_control_etag_match(const char *inm, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = inm;
    while (*p != '\0') {
        const char *s, *e;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        s = p;
        if (*s == '*')
            return 1;
        if (s[0] == 'W' && s[1] == '/')
            s += 2;
        if (*s != '"') { /* not an entity tag: skip to the next comma */
            while (*p != '\0' && *p != ',')
                p++;
            continue;
        }
        e = strchr(s + 1, '"');
        if (e == NULL)
            return 0;
        if ((size_t)(e + 1 - s) == elen && memcmp(s, etag, elen) == 0)
            return 1;
        p = e + 1;
    }
    return 0;
}

int64_t px_control_prefer_wait(const char *prefer)
{
    const char *p = prefer;
    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (strncasecmp(p, "wait", 4) == 0) {
            const char *q = p + 4;
            while (*q == ' ' || *q == '\t')
                q++;
            if (*q == '=') {
                int64_t n = 0;
                int digits = 0;
                q++;
                while (*q == ' ' || *q == '\t')
                    q++;
                if (*q == '"')
                    q++;
                for (; *q >= '0' && *q <= '9'; q++, digits++)
                    if (n < 86400)
                        n = n * 10 + (*q - '0');
                if (*q == '"')
                    q++;
                while (*q == ' ' || *q == '\t')
                    q++;
                if (digits > 0 && (*q == '\0' || *q == ',' || *q == ';'))
                    return n > 86400 ? 86400 : n;
                return -1;
            }
        }
        /* skip this preference (and its parameters) up to the next comma */
        while (*p != '\0' && *p != ',') {
            if (*p == '"') {
                const char *e = strchr(p + 1, '"');
                if (e == NULL)
                    return -1;
                p = e;
            }
            p++;
        }
    }
    return -1;
}

int px_control_allowed(const char *id, const char *const *pats, size_t n)
{
    size_t idlen = strlen(id);
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        size_t pl = strlen(pats[i]);
        if (pl >= 2 && pats[i][pl - 2] == '/' && pats[i][pl - 1] == '*') {
            /* "prefix/" + "*": anything strictly under prefix/ */
            if (idlen > pl - 1 && memcmp(id, pats[i], pl - 1) == 0)
                return 1;
        } else if (strcmp(id, pats[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---- files ----------------------------------------------------------------- */

static void blob_unref(struct blob *b)
{
    if (b != NULL && --b->refs == 0)
        free(b);
}

static void blob_release_cb(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    blob_unref(arg);
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Reads DIR/name into a new blob (refs 1). Returns 200, 404 (missing, not a
 * regular file) or 500 (unreadable, too large, out of memory; err says
 * which). */
static int read_blob(const struct px_control *c, const char *name, struct blob **out, char *err,
                     size_t errlen)
{
    char path[4096];
    struct stat st;
    struct blob *b = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t got = 0;
    int fd;

    *out = NULL;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", c->o.dir, name) >= sizeof(path)) {
        snprintf(err, errlen, "path too long");
        return 500;
    }
    /* O_NONBLOCK: a FIFO dropped into the folder must not stall the loop. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) ? 404 : 500;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return 404;
    }
    if ((uint64_t)st.st_size > POLICY_BUNDLE_MAX_BYTES) {
        snprintf(err, errlen, "%s: %lld bytes, over the %u-byte envelope cap", path,
                 (long long)st.st_size, POLICY_BUNDLE_MAX_BYTES);
        close(fd);
        return 500;
    }
    b = malloc(sizeof(*b) + (size_t)st.st_size + 1);
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return 500;
    }
    /* A file truncated while we read it gives what was there; one that grew
     * is cut at the size fstat saw. Writers that rename never show either. */
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, b->data + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            close(fd);
            free(b);
            return 500;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    b->data[got] = '\0';
    b->len = got;
    b->refs = 1;
    b->st = st;
    if (EVP_Digest(b->data, got, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        ERR_clear_error();
        snprintf(err, errlen, "sha256 failed");
        free(b);
        return 500;
    }
    b->etag[0] = '"';
    for (unsigned i = 0; i < 32; i++)
        snprintf(b->etag + 1 + 2 * i, 3, "%02x", md[i]);
    b->etag[ETAG_LEN - 1] = '"';
    b->etag[ETAG_LEN] = '\0';
    *out = b;
    return 200;
}

/* ---- answers --------------------------------------------------------------- */

/* "waiters": requests held after this answer (all clients). */
static void log_request(const struct px_control *c, const struct reqinfo *ri, const char *path,
                        int status, const char *etag, size_t bytes, const char *detail)
{
    char st[8], by[24], ms[24], held[24];
    int64_t us = mono_us() - ri->start_us;
    snprintf(st, sizeof(st), "%d", status);
    snprintf(by, sizeof(by), "%zu", bytes);
    snprintf(ms, sizeof(ms), "%lld.%03lld", (long long)(us / 1000), (long long)(us % 1000));
    snprintf(held, sizeof(held), "%zu", c->nwaiters);
    px_log(status >= 500 ? PX_LOG_ERROR : PX_LOG_INFO, "control_request", "peer", ri->peer,
           "peer_id", ri->id[0] ? ri->id : NULL, "method", ri->method, "path", path, "status", st,
           "etag", etag, "bytes", by, "duration_ms", ms, "detail", detail, "waiters", held, NULL);
}

static void send_text(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    evhttp_add_header(h, "Cache-Control", "no-store");
    /* evhttp 2.1 writes a body even for HEAD (it only leaves out
     * Content-Length), which would corrupt a keep-alive connection. */
    if (b != NULL && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(b, msg, strlen(msg));
    evhttp_send_reply(req, code, reason, b);
    if (b != NULL)
        evbuffer_free(b);
}

/* 200 with the blob's bytes (by reference) or 304; returns bytes sent. */
static size_t send_version(struct evhttp_request *req, int code, struct blob *b)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *buf = NULL;
    evhttp_add_header(h, "ETag", b->etag);
    evhttp_add_header(h, "Cache-Control", "no-cache");
    if (code == 304) {
        evhttp_send_reply(req, 304, "Not Modified", NULL);
        return 0;
    }
    evhttp_add_header(h, "Content-Type", "application/json");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        /* no body for HEAD (see send_text); say how long the GET's would be */
        char cl[24];
        snprintf(cl, sizeof(cl), "%zu", b->len);
        evhttp_add_header(h, "Content-Length", cl);
        evhttp_send_reply(req, 200, "OK", NULL);
        return 0;
    }
    buf = evbuffer_new();
    if (buf != NULL) {
        b->refs++; /* released by blob_release_cb once the bytes are sent */
        if (evbuffer_add_reference(buf, b->data, b->len, blob_release_cb, b) != 0) {
            b->refs--;
            evbuffer_free(buf);
            buf = NULL;
        }
    }
    if (buf == NULL) {
        send_text(req, 500, "Internal Server Error", "out of memory\n");
        return 0;
    }
    evhttp_send_reply(req, 200, "OK", buf);
    evbuffer_free(buf);
    return b->len;
}

/* ---- held requests ----------------------------------------------------------- */

static uint32_t id_hash(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *id != '\0'; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h % PX_CONTROL_CLIENT_BUCKETS;
}

/* The client record of id, or NULL; created (empty) when `create`. */
static struct client *client_get(struct px_control *c, const char *id, int create)
{
    struct client **head = &c->clients[id_hash(id)], *cl;
    size_t len;
    for (cl = *head; cl != NULL; cl = cl->next)
        if (strcmp(cl->id, id) == 0)
            return cl;
    if (!create)
        return NULL;
    len = strlen(id);
    cl = calloc(1, sizeof(*cl) + len + 1);
    if (cl == NULL)
        return NULL;
    memcpy(cl->id, id, len + 1);
    cl->next = *head;
    *head = cl;
    return cl;
}

/* Unhooks and frees a client record with no held request left. */
static void client_drop(struct px_control *c, struct client *cl)
{
    struct client **pp;
    for (pp = &c->clients[id_hash(cl->id)]; *pp != cl; pp = &(*pp)->next)
        ;
    *pp = cl->next;
    free(cl);
}

static void client_unlink(struct px_control *c, struct waiter *wt)
{
    struct client *cl = wt->cl;
    if (wt->cprev != NULL)
        wt->cprev->cnext = wt->cnext;
    else
        cl->oldest = wt->cnext;
    if (wt->cnext != NULL)
        wt->cnext->cprev = wt->cprev;
    else
        cl->newest = wt->cprev;
    if (--cl->n == 0)
        client_drop(c, cl);
}

static void waiter_unlink(struct px_control *c, struct waiter *wt)
{
    if (wt->prev != NULL)
        wt->prev->next = wt->next;
    else
        wt->w->waiters = wt->next;
    if (wt->next != NULL)
        wt->next->prev = wt->prev;
    client_unlink(c, wt);
    c->nwaiters--;
}

/* While held, the connection is read for EOF and resets only: no read
 * callback (bytes stay in the input buffer, at most PX_CONTROL_HEADERS_MAX,
 * for evhttp's next request), evhttp's error callback (it detaches the
 * request and frees the connection), no timeouts (the wait is ours). This
 * is what evhttp itself does while it writes an answer. */
static void hold_watch(struct evhttp_connection *conn)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
    bufferevent_event_cb ecb = NULL;
    void *arg = NULL;
    bufferevent_getcb(bev, NULL, NULL, &ecb, &arg);
    bufferevent_setcb(bev, NULL, NULL, ecb, arg);
    bufferevent_setwatermark(bev, EV_READ, 0, PX_CONTROL_HEADERS_MAX);
    bufferevent_set_timeouts(bev, NULL, NULL);
    bufferevent_enable(bev, EV_READ);
}

/* Back to evhttp's settings before the answer is written. */
static void hold_unwatch(struct evhttp_connection *conn)
{
    bufferevent_setwatermark(evhttp_connection_get_bufferevent(conn), EV_READ, 0, 0);
    evhttp_connection_set_timeout(conn, PX_CONTROL_IO_TIMEOUT_S);
}

/* Answers a held request: 200/304 with w->cur, or `code` with a message. */
static void waiter_finish(struct px_control *c, struct waiter *wt, int code, const char *detail)
{
    struct watch *w = wt->w;
    size_t bytes = 0;
    const char *etag = NULL;

    waiter_unlink(c, wt);
    if (wt->conn != NULL)
        hold_unwatch(wt->conn);
    if (code == 200 || code == 304) {
        bytes = send_version(wt->req, code, w->cur);
        etag = w->cur->etag;
    } else {
        send_text(wt->req, code, code == 404 ? "Not Found" : "Internal Server Error",
                  code == 404 ? "not found\n" : "cannot read the bundle\n");
    }
    log_request(c, &wt->ri, wt->path, code, etag, bytes, detail);
    free(wt);
}

void px_control_conn_closed(struct evhttp_connection *evcon, void *arg)
{
    struct px_control *c = arg;
    struct watch *w;

    if (c->nwaiters == 0)
        return;
    for (w = c->watches; w != NULL; w = w->next) {
        struct waiter *wt, *next;
        for (wt = w->waiters; wt != NULL; wt = next) {
            next = wt->next;
            if (wt->conn != evcon)
                continue;
            waiter_unlink(c, wt);
            /* Detached by evhttp (EOF, reset): ours to free. Still attached
             * (the server is being freed): evhttp frees it with the
             * connection. */
            if (evhttp_request_get_connection(wt->req) == NULL)
                evhttp_request_free(wt->req);
            log_request(c, &wt->ri, wt->path, 499, NULL, 0,
                        "client closed the connection while held");
            free(wt);
        }
    }
}

/* Answers every waiter that holds a version other than w->cur. */
static void watch_settle(struct px_control *c, struct watch *w)
{
    struct waiter *wt = w->waiters, *next;
    for (; wt != NULL; wt = next) {
        next = wt->next;
        if (strcmp(wt->etag, w->cur->etag) != 0)
            waiter_finish(c, wt, 200, "changed while held");
    }
}

static void watch_fail_all(struct px_control *c, struct watch *w, int code, const char *detail)
{
    while (w->waiters != NULL)
        waiter_finish(c, w->waiters, code, detail);
}

static void watch_drop_if_idle(struct px_control *c, struct watch *w)
{
    struct watch **pp;
    if (w->waiters != NULL)
        return;
    for (pp = &c->watches; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    blob_unref(w->cur);
    free(w);
}

/* Holds req (its If-None-Match matched b) for wait_us. Returns 0, or -1
 * (out of memory: the caller answers at once). */
static int hold(struct px_control *c, struct evhttp_request *req, const char *name, struct blob *b,
                int64_t wait_us, const struct reqinfo *ri)
{
    struct watch *w;
    struct client *cl;
    struct waiter *wt = calloc(1, sizeof(*wt));

    if (wt == NULL)
        return -1;
    for (w = c->watches; w != NULL; w = w->next)
        if (strcmp(w->name, name) == 0)
            break;
    if (w == NULL) {
        w = calloc(1, sizeof(*w));
        if (w == NULL) {
            free(wt);
            return -1;
        }
        snprintf(w->name, sizeof(w->name), "%s", name);
        w->next = c->watches;
        c->watches = w;
    }
    if (w->cur == NULL || !same_file(&w->cur->st, &b->st)) {
        /* b was read just now, so it is the newest version: holders of an
         * older one learn about it at once. */
        blob_unref(w->cur);
        b->refs++;
        w->cur = b;
        watch_settle(c, w);
    }
    /* Looked up only now: settling may have answered this client's last
     * held request and freed its record. */
    cl = client_get(c, ri->id, 1);
    if (cl == NULL) {
        free(wt); /* an idle watch is dropped by the next tick */
        return -1;
    }
    wt->w = w;
    wt->cl = cl;
    wt->req = req;
    wt->conn = evhttp_request_get_connection(req);
    snprintf(wt->etag, sizeof(wt->etag), "%s", b->etag);
    snprintf(wt->path, sizeof(wt->path), "/%s", name);
    wt->deadline_us = mono_us() + wait_us;
    wt->ri = *ri;
    wt->next = w->waiters;
    if (w->waiters != NULL)
        w->waiters->prev = wt;
    w->waiters = wt;
    wt->cprev = cl->newest;
    if (cl->newest != NULL)
        cl->newest->cnext = wt;
    else
        cl->oldest = wt;
    cl->newest = wt;
    cl->n++;
    c->nwaiters++;
    if (wt->conn != NULL)
        hold_watch(wt->conn);
    return 0;
}

/* A client at its cap of held requests: its oldest one is answered (304,
 * as at its deadline) to make room for the one about to be held. */
static void client_make_room(struct px_control *c, const char *id)
{
    struct client *cl = client_get(c, id, 0);
    if (cl != NULL && cl->n >= c->o.max_waiters_per_client)
        waiter_finish(c, cl->oldest, 304,
                      "per-client cap: answered to hold a newer request of the same client");
}

void px_control_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_control *c = arg;
    struct watch *w, *next;
    int64_t now = mono_us();
    (void)fd;
    (void)what;

    for (w = c->watches; w != NULL; w = next) {
        char path[4096], err[512];
        struct stat st;
        struct waiter *wt, *wn;
        next = w->next;
        snprintf(path, sizeof(path), "%s/%s", c->o.dir, w->name);
        if (stat(path, &st) != 0 || !same_file(&st, &w->cur->st)) {
            struct blob *b = NULL;
            int code = read_blob(c, w->name, &b, err, sizeof(err));
            if (code != 200) {
                watch_fail_all(c, w, code, err);
            } else {
                blob_unref(w->cur);
                w->cur = b;
                watch_settle(c, w);
            }
        }
        for (wt = w->waiters; wt != NULL; wt = wn) {
            wn = wt->next;
            if (now >= wt->deadline_us)
                waiter_finish(c, wt, 304, NULL);
        }
        watch_drop_if_idle(c, w);
    }
}

/* Answers every held request (304: the version they hold is still
 * current as far as they can tell). */
void px_control_answer_all(struct px_control *c)
{
    while (c->watches != NULL) {
        struct watch *w = c->watches;
        while (w->waiters != NULL)
            waiter_finish(c, w->waiters, 304, "shutting down");
        watch_drop_if_idle(c, w);
    }
}

/* ---- requests ---------------------------------------------------------------- */

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return "OTHER";
    }
}

/* name points just past the '/' of the request path (so name - 1 is the
 * path, for the log). */
static void serve_file(struct px_control *c, struct evhttp_request *req, const char *name,
                       const struct reqinfo *ri)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *inm = evhttp_find_header(in, "If-None-Match");
    const char *prefer = evhttp_find_header(in, "Prefer");
    struct blob *b = NULL;
    char err[512] = "";
    int code = read_blob(c, name, &b, err, sizeof(err));
    size_t bytes;

    if (code != 200) {
        send_text(req, code, code == 404 ? "Not Found" : "Internal Server Error",
                  code == 404 ? "not found\n" : "cannot read the bundle\n");
        log_request(c, ri, name - 1, code, NULL, 0, code == 404 ? NULL : err);
        return;
    }
    if (inm != NULL && px_control_etag_match(inm, b->etag)) {
        int64_t wait_s = prefer != NULL ? px_control_prefer_wait(prefer) : -1;
        int64_t wait_us = wait_s > 0 ? wait_s * 1000000 : 0;
        const char *detail = NULL;
        if (wait_us > c->o.max_wait_ms * 1000)
            wait_us = c->o.max_wait_ms * 1000;
        if (wait_us > 0 && !c->stopping) {
            client_make_room(c, ri->id);
            if (c->nwaiters < c->o.max_waiters && hold(c, req, name, b, wait_us, ri) == 0) {
                blob_unref(b);
                return; /* logged when answered */
            }
            detail = "held-request cap reached; answered at once";
        }
        send_version(req, 304, b);
        log_request(c, ri, name - 1, 304, b->etag, 0, detail);
        blob_unref(b);
        return;
    }
    bytes = send_version(req, 200, b);
    log_request(c, ri, name - 1, 200, b->etag, bytes, NULL);
    blob_unref(b);
}

void px_control_handle(struct evhttp_request *req, void *arg)
{
    struct px_control *c = arg;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev = conn != NULL ? evhttp_connection_get_bufferevent(conn) : NULL;
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct reqinfo ri;
    char *addr = NULL;
    ev_uint16_t port = 0;
    X509 *peer;

    memset(&ri, 0, sizeof(ri));
    ri.start_us = mono_us();
    ri.method = method_name(cmd);
    if (path == NULL)
        path = "";
    if (conn != NULL) {
        evhttp_connection_get_peer(conn, &addr, &port);
        snprintf(ri.peer, sizeof(ri.peer), "%s:%u", addr ? addr : "?", (unsigned)port);
    }
    /* evhttp falls back to a plain socket if the bufferevent callback fails
     * (out of memory only): never serve anything without a verified peer. */
    peer = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
    if (peer == NULL || SSL_get_verify_result(ssl) != X509_V_OK) {
        send_text(req, 400, "Bad Request", "mTLS required\n");
        log_request(c, &ri, path, 400, NULL, 0, "no verified client certificate");
        return;
    }
    if (certs_cert_spiffe_id(peer, ri.id, sizeof(ri.id)) != 0)
        ri.id[0] = '\0';
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        send_text(req, 405, "Method Not Allowed", "method not allowed\n");
        log_request(c, &ri, path, 405, NULL, 0, NULL);
        return;
    }
    if (path[0] != '/' || path[1] == '\0') {
        send_text(req, 404, "Not Found", "not found\n");
        log_request(c, &ri, path, 404, NULL, 0, NULL);
        return;
    }
    if (!px_control_name_ok(path + 1, strlen(path + 1))) {
        send_text(req, 400, "Bad Request",
                  "bad bundle name: a plain file name of [A-Za-z0-9._-] not starting with '.'\n");
        log_request(c, &ri, path, 400, NULL, 0, "bad bundle name");
        return;
    }
    serve_file(c, req, path + 1, &ri);
}
