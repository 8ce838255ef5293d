/*
 * dev.c - `picket dev`: the one-command local dev gateway.
 *
 * In a state folder (default ./.picket-dev) it makes, or reuses while
 * still valid: a dev CA for trust domain "picket.dev", a server SVID for
 * picket, a client SVID for the developer, a starter policy that allows
 * the developer's ID, and a config. Without --upstream it also runs a
 * built-in demo upstream (HTTP/1.1 on a loopback port) that echoes what it
 * received, so the printed curl line shows picket's headers (XFCC,
 * x-request-id) arriving at the app. The demo upstream's listener is
 * http_listen.c's (loopback, DEMO_MAX_CONNS connections, a complete request
 * within DEMO_REQUEST_TIMEOUT_MS, 200 ms pauses on accept failures).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include "certs.h"
#include "daemon.h"
#include "dev.h"
#include "http_listen.h"

#define DEV_TD "picket.dev"
#define DEV_SERVER_ID "spiffe://picket.dev/picket/gateway"
#define DEV_CLIENT_ID "spiffe://picket.dev/dev/developer"
#define DEV_CERT_TTL (24 * 3600)
#define DEMO_MAX_CONNS 256
#define DEMO_REQUEST_TIMEOUT_MS 10000

struct demo {
    struct event_base *base;
    struct px_httpl *hl;
    int port;
    int started; /* the thread runs */
    pthread_t thread;
};

static void demo_cb(struct evhttp_request *req, void *arg)
{
    struct evbuffer *out = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    (void)arg;
    if (out == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(out, "hello from the picket demo upstream\n\n%s %s\n",
                        evhttp_request_get_command(req) == EVHTTP_REQ_GET ? "GET" : "(method)",
                        evhttp_request_get_uri(req));
    TAILQ_FOREACH(kv, h, next)
    {
        evbuffer_add_printf(out, "%s: %s\n", kv->key, kv->value);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

static void *demo_main(void *arg)
{
    struct demo *d = arg;
    event_base_dispatch(d->base);
    return NULL;
}

static int demo_start(struct demo *d)
{
    struct px_httpl_opts o;
    char err[256];
    evthread_use_pthreads();
    d->base = event_base_new();
    if (d->base == NULL)
        return -1;
    memset(&o, 0, sizeof(o));
    o.name = "demo";
    o.host = "127.0.0.1";
    o.port = 0;
    o.max_conns = DEMO_MAX_CONNS;
    o.request_timeout_ms = DEMO_REQUEST_TIMEOUT_MS;
    o.io_timeout_s = 10;
    o.max_headers_size = 65536;
    o.max_body_size = 1 << 20;
    o.allowed_methods =
        EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE;
    o.handle = demo_cb;
    if (px_httpl_new(&d->hl, d->base, &o, err, sizeof(err)) != 0)
        return -1;
    d->port = px_httpl_port(d->hl);
    if (pthread_create(&d->thread, NULL, demo_main, d) != 0)
        return -1;
    d->started = 1;
    return 0;
}

static void demo_stop(struct demo *d)
{
    if (d->base == NULL)
        return;
    if (d->started) {
        event_base_loopexit(d->base, NULL);
        pthread_join(d->thread, NULL);
    }
    px_httpl_free(d->hl);
    event_base_free(d->base);
}

/* 1 if the cert at path is usable for at least another min_left_s. */
static int cert_fresh(const char *path, int64_t min_left_s)
{
    char *data = NULL, err[256];
    size_t len = 0;
    STACK_OF(X509) *sk = NULL;
    int64_t nb, na;
    int ok = 0;
    if (certs_read_file(path, 1 << 20, &data, &len, err, sizeof(err)) != 0)
        return 0;
    if (certs_pem_certs(data, len, &sk, err, sizeof(err)) == 0 && sk_X509_num(sk) > 0 &&
        certs_cert_validity(sk_X509_value(sk, 0), &nb, &na) == 0)
        ok = na - (int64_t)time(NULL) > min_left_s;
    sk_X509_pop_free(sk, X509_free);
    free(data);
    return ok;
}

static int ensure_material(const char *state, int64_t min_left_s, char *err, size_t errlen)
{
    char ca[1024], capem[1100], p1[1100], k1[1100], e2[512];
    const char *dns[] = {"localhost"};
    const char *ips[] = {"127.0.0.1"};

    snprintf(ca, sizeof(ca), "%s/ca", state);
    snprintf(capem, sizeof(capem), "%s/ca.pem", ca);
    if (!cert_fresh(capem, 7 * 24 * 3600)) {
        /* A new CA (first run, or the old one has under a week left):
         * every leaf must be re-issued under it. */
        char cakey[1100];
        snprintf(cakey, sizeof(cakey), "%s/ca.key", ca);
        unlink(capem);
        unlink(cakey);
        min_left_s = INT64_MAX / 2;
        if (certs_devca_init(ca, DEV_TD, 30 * 24 * 3600, e2, sizeof(e2)) != 0) {
            snprintf(err, errlen, "dev CA: %s", e2);
            return -1;
        }
        printf("picket dev: made a dev CA for trust domain %s in %s\n", DEV_TD, ca);
    }
    snprintf(p1, sizeof(p1), "%s/server.pem", state);
    snprintf(k1, sizeof(k1), "%s/server.key", state);
    if (!cert_fresh(p1, min_left_s) &&
        certs_devca_issue(ca, DEV_SERVER_ID, DEV_CERT_TTL, dns, 1, ips, 1, p1, k1, e2,
                          sizeof(e2)) != 0) {
        snprintf(err, errlen, "server SVID: %s", e2);
        return -1;
    }
    snprintf(p1, sizeof(p1), "%s/client.pem", state);
    snprintf(k1, sizeof(k1), "%s/client.key", state);
    if (!cert_fresh(p1, min_left_s) &&
        certs_devca_issue(ca, DEV_CLIENT_ID, DEV_CERT_TTL, NULL, 0, NULL, 0, p1, k1, e2,
                          sizeof(e2)) != 0) {
        snprintf(err, errlen, "client SVID: %s", e2);
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* Renews the dev certificates before they expire (picket's file watcher
 * then loads them without a restart): a thread that wakes every minute
 * and re-issues any certificate with less than a third of its life left. */
struct renewer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    char state[1024];
};

static void *renew_main(void *arg)
{
    struct renewer *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec ts;
        char err[600];
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 60;
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (r->stop)
            break;
        if (ensure_material(r->state, DEV_CERT_TTL / 3, err, sizeof(err)) != 0)
            fprintf(stderr, "picket dev: renewing certificates: %s\n", err);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct ready_info {
    const char *state;
    int port;
    int demo;
};

/* A path as a shell word: as is when it is plain, else single-quoted, so
 * the printed lines can be pasted whatever the state folder is called. */
static const char *shq(const char *path, char *buf, size_t len)
{
    size_t o = 0;
    if (strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-") ==
        strlen(path))
        return path;
    buf[o++] = '\'';
    for (const char *p = path; *p && o + 5 < len; p++) {
        if (*p == '\'') {
            memcpy(buf + o, "'\\''", 4);
            o += 4;
        } else {
            buf[o++] = *p;
        }
    }
    buf[o++] = '\'';
    buf[o] = '\0';
    return buf;
}

static void on_ready(void *arg)
{
    struct ready_info *r = arg;
    char cert[1200], key[1200], ca[1200], pol[1200], b[5000];
    snprintf(b, sizeof(b), "%s/client.pem", r->state);
    snprintf(cert, sizeof(cert), "%s", shq(b, b + 2500, 2500));
    snprintf(b, sizeof(b), "%s/client.key", r->state);
    snprintf(key, sizeof(key), "%s", shq(b, b + 2500, 2500));
    snprintf(b, sizeof(b), "%s/ca/ca.pem", r->state);
    snprintf(ca, sizeof(ca), "%s", shq(b, b + 2500, 2500));
    snprintf(b, sizeof(b), "%s/policy.json", r->state);
    snprintf(pol, sizeof(pol), "%s", shq(b, b + 2500, 2500));
    printf("\npicket dev gateway is listening on https://localhost:%d (mTLS, HTTP/2 and "
           "HTTP/1.1)\n"
           "  server identity: %s\n  your identity:   %s (allowed by %s)\n\n"
           "Call it:\n"
           "  curl --http2 --cert %s --key %s --cacert %s https://localhost:%d/\n\n"
           "gRPC (grpcurl-style clients): target localhost:%d, root CA %s, "
           "client cert %s, key %s\n"
           "Admin: curl http://127.0.0.1:%d/metrics   Stop: Ctrl-C\n\n",
           r->port, DEV_SERVER_ID, DEV_CLIENT_ID, pol, cert, key, ca, r->port, r->port, ca, cert,
           key, r->port + 1);
    fflush(stdout);
}

int px_cmd_dev(int argc, char **argv)
{
    const char *upstream = NULL, *state = ".picket-dev";
    int port = 8443, rc;
    char err[600], path[1100], conf[4096], up[600], abs_state[1024];
    struct demo demo;
    struct ready_info ri;
    struct renewer ren;
    int renewing;

    memset(&demo, 0, sizeof(demo));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--upstream") == 0 && i + 1 < argc)
            upstream = argv[++i];
        else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            state = argv[++i];
        else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: picket dev [--upstream URL] [--state DIR] [--port N]\n");
            return 2;
        }
    }
    if (port <= 0 || port > 65534) {
        fprintf(stderr, "picket dev: bad --port\n");
        return 2;
    }
    if (upstream != NULL && strncmp(upstream, "http://", 7) != 0 &&
        strncmp(upstream, "h2c://", 6) != 0) {
        fprintf(stderr, "picket dev: --upstream must be http://HOST:PORT or h2c://HOST:PORT\n");
        return 2;
    }
    if (mkdir(state, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "picket dev: cannot create %s: %s\n", state, strerror(errno));
        return 1;
    }
    if (realpath(state, abs_state) == NULL) {
        fprintf(stderr, "picket dev: %s: %s\n", state, strerror(errno));
        return 1;
    }
    if (ensure_material(abs_state, 3600, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket dev: %s\n", err);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/policy.json", abs_state);
    if (access(path, F_OK) != 0 &&
        write_file(path, "{\n  \"revision\": 1,\n  \"mode\": \"enforce\",\n  \"default\": \"deny\",\n"
                         "  \"rules\": [\n"
                         "    {\"id\": \"developer\", \"action\": \"allow\", \"from\": "
                         "[\"" DEV_CLIENT_ID "\"]},\n"
                         "    {\"id\": \"no-admin\", \"action\": \"deny\", \"paths\": "
                         "[\"/admin/**\"]}\n  ]\n}\n") != 0) {
        fprintf(stderr, "picket dev: cannot write %s\n", path);
        return 1;
    }
    if (upstream == NULL) {
        if (demo_start(&demo) != 0) {
            fprintf(stderr, "picket dev: cannot start the demo upstream\n");
            demo_stop(&demo);
            return 1;
        }
        snprintf(up, sizeof(up), "http://127.0.0.1:%d", demo.port);
        printf("picket dev: demo upstream on %s\n", up);
    } else {
        snprintf(up, sizeof(up), "%s", upstream);
    }
    snprintf(conf, sizeof(conf),
             "{\n  \"node_id\": \"dev/picket\",\n  \"workers\": 1,\n"
             "  \"identity\": {\"cert\": \"server.pem\", \"key\": \"server.key\",\n"
             "               \"trust_bundles\": {\"" DEV_TD "\": \"ca/ca.pem\"}},\n"
             "  \"policy\": {\"file\": \"policy.json\"},\n"
             "  \"listeners\": [{\"name\": \"dev\", \"kind\": \"inbound\", \"bind\": "
             "\"127.0.0.1:%d\", \"upstream\": \"%s\"}],\n"
             "  \"admin\": {\"bind\": \"127.0.0.1:%d\"},\n"
             "  \"log\": {\"level\": \"info\", \"access\": \"access.jsonl\", \"audit\": "
             "\"audit.jsonl\"}\n}\n",
             port, up, port + 1);
    snprintf(path, sizeof(path), "%s/picket.json", abs_state);
    if (write_file(path, conf) != 0) {
        fprintf(stderr, "picket dev: cannot write %s\n", path);
        demo_stop(&demo);
        return 1;
    }
    ri.state = abs_state;
    ri.port = port;
    ri.demo = upstream == NULL;
    memset(&ren, 0, sizeof(ren));
    snprintf(ren.state, sizeof(ren.state), "%s", abs_state);
    pthread_mutex_init(&ren.mu, NULL);
    pthread_cond_init(&ren.cv, NULL);
    renewing = pthread_create(&ren.thread, NULL, renew_main, &ren) == 0;
    rc = px_run(path, on_ready, &ri);
    if (renewing) {
        pthread_mutex_lock(&ren.mu);
        ren.stop = 1;
        pthread_cond_signal(&ren.cv);
        pthread_mutex_unlock(&ren.mu);
        pthread_join(ren.thread, NULL);
    }
    pthread_cond_destroy(&ren.cv);
    pthread_mutex_destroy(&ren.mu);
    demo_stop(&demo);
    return rc;
}
