/*
 * cmd_inject.c - `picket inject`: the CLI filter and the admission webhook
 * server around the pure injector in inject.c and inject_plan.c.
 *
 *   picket inject [FILE|-] [--patch] [--compact] [OPTIONS]
 *   picket inject serve --bind HOST:PORT --cert FILE --key FILE [OPTIONS]
 *   picket inject write-config --out FILE      (inside the pod: $PICKET_CONFIG)
 *
 * The webhook is a single-threaded evhttp server over TLS (bufferevent_openssl
 * through evhttp_set_bevcb): reviews are small and pure CPU, so one event
 * loop keeps up with any API server. Bodies are capped by evhttp before the
 * callback runs (413), headers at 16 KiB, idle/slow connections time out
 * after 10 s. The listener is http_listen.c's: at most --max-connections
 * open (default MAX_CONNS), a complete request (TLS handshake, headers,
 * body) within --header-timeout of accept (default HEADER_TIMEOUT_MS), and
 * a 200 ms pause when accept() fails (out of descriptors) instead of a
 * spin. The serving certificate is re-read when its files change
 * (checked every CERT_CHECK_S seconds): cert-manager and Secret volume
 * updates swap the files under a running pod, and a webhook that serves an
 * expired certificate blocks every pod creation in opted-in namespaces.
 *
 * One log line per review (event "inject_review": uid, kind, name,
 * namespace, injected yes/no, reason), and "inject_review_bad" (uid if
 * readable, the parser's line:col message, the answer: allow or error) for
 * a malformed review.
 */
#include "certs.h"
#include "cli.h"
#include "cmd_inject.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "certs_json.h"
#include "http_listen.h"
#include "inject.h"
#include "log.h"
#include "px.h"

#define CERT_CHECK_S 30
#define HEADERS_MAX 16384
#define IO_TIMEOUT_S 10
#define MAX_CONNS 256           /* default --max-connections */
#define HEADER_TIMEOUT_MS 10000 /* default --header-timeout */

static const char usage_text[] =
    "usage:\n"
    "  picket inject [FILE|-] [--patch] [--compact] [OPTIONS]\n"
    "      reads a JSON Pod, Deployment, StatefulSet, DaemonSet, Job or a List of them\n"
    "      (FILE, or stdin when FILE is - or absent; -f FILE also works; YAML is not\n"
    "      read) and writes it with the picket sidecar added, e.g.\n"
    "      kubectl get deploy web -o json | picket inject - | kubectl apply -f -\n"
    "  picket inject serve --bind ADDR --cert C --key K [--config FILE] [OPTIONS]\n"
    "      [--max-connections 256] [--header-timeout 10s]\n"
    "      mutating admission webhook over HTTPS: POST /inject (AdmissionReview v1;\n"
    "      /mutate is an alias), GET /healthz. --max-connections: open connections\n"
    "      (more wait in the kernel's accept queue); --header-timeout: a connection must\n"
    "      complete its TLS handshake and request (body included) within this of\n"
    "      being accepted (or of its last answer)\n"
    "  picket inject write-config --out FILE\n"
    "      writes $PICKET_CONFIG (JSON) to FILE: the init container of injected pods\n"
    "      whose proxy config is generated into an emptyDir\n"
    "options (override the --config file):\n"
    "  --config FILE             injector config (JSON; deploy/kubernetes/injector-config.json)\n"
    "  --image IMG               sidecar image (picket:0.1)\n"
    "  --config-map NAME         picket config ConfigMap (<app>-picket; <app> is replaced)\n"
    "  --svid-secret NAME        SVID from this Secret instead of the config's svid_volume\n"
    "  --inbound-port N          mTLS port (15443)\n"
    "  --admin-port N            loopback admin port used by the probes (15000)\n"
    "  --probes-port N           port of the app's rewritten probes (15021)\n"
    "  --metrics-port N          port Prometheus scrapes, /metrics only (15090)\n"
    "  --drain-timeout DURATION  picket's limits.drain_timeout (20s); the pod's grace\n"
    "                            period is raised to at least this + 10s\n"
    "  --exclude-namespace NS    never inject in NS (repeatable; default kube-system,\n"
    "                            kube-public)\n"
    "  --malformed-review allow|error\n"
    "                            webhook answer to a malformed review or a pod that\n"
    "                            cannot be injected: allow it unchanged, or refuse it\n"
    "                            (default error)\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = px_cli_vusage_error("picket inject", usage_text, fmt, ap);
    va_end(ap);
    return rc;
}

static int parse_port(const char *s, int *out)
{
    char *end;
    long v;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

/* Injection options shared by both modes. Returns 1 if argv[*i] was one
 * (consumed), 0 if not, 2 after printing a usage error. */
static int common_opt(int argc, char **argv, int *i, struct px_inject_opts *o, int *ns_reset)
{
    const char *v = NULL;
    int64_t ms;
    if (px_cli_opt(argc, argv, i, "--config", &v)) {
        /* loaded before the other options (load_config) */
    } else if (px_cli_opt(argc, argv, i, "--image", &v))
        o->image = v;
    else if (px_cli_opt(argc, argv, i, "--config-map", &v)) {
        o->config_map = v;
        o->proxy_config = NULL; /* an explicit ConfigMap wins over a generated config */
    } else if (px_cli_opt(argc, argv, i, "--malformed-review", &v)) {
        if (v != NULL && strcmp(v, "allow") == 0)
            o->malformed_allow = 1;
        else if (v != NULL && strcmp(v, "error") == 0)
            o->malformed_allow = 0;
        else
            return usage_error("--malformed-review: expected allow or error");
    }
    else if (px_cli_opt(argc, argv, i, "--svid-secret", &v))
        o->svid_secret = v;
    else if (px_cli_opt(argc, argv, i, "--inbound-port", &v)) {
        if (parse_port(v, &o->inbound_port) != 0)
            return usage_error("--inbound-port: expected a port number");
    } else if (px_cli_opt(argc, argv, i, "--admin-port", &v)) {
        if (parse_port(v, &o->admin_port) != 0)
            return usage_error("--admin-port: expected a port number");
    } else if (px_cli_opt(argc, argv, i, "--probes-port", &v)) {
        if (parse_port(v, &o->probes_port) != 0)
            return usage_error("--probes-port: expected a port number");
    } else if (px_cli_opt(argc, argv, i, "--metrics-port", &v)) {
        if (parse_port(v, &o->metrics_port) != 0)
            return usage_error("--metrics-port: expected a port number");
    } else if (px_cli_opt(argc, argv, i, "--drain-timeout", &v)) {
        if (v == NULL || certs_duration_parse(v, strlen(v), &ms) != 0 || ms > 3600000)
            return usage_error("--drain-timeout: expected a duration up to 1h (e.g. 20s)");
        o->drain_timeout_s = (int)((ms + 999) / 1000);
    } else if (px_cli_opt(argc, argv, i, "--exclude-namespace", &v)) {
        if (!*ns_reset) {
            o->nexclude_ns = 0;
            *ns_reset = 1;
        }
        if (v == NULL || v[0] == '\0')
            return usage_error("--exclude-namespace: expected a namespace");
        if (o->nexclude_ns >= PX_INJECT_MAX_EXCLUDED_NS)
            return usage_error("--exclude-namespace: at most %d", PX_INJECT_MAX_EXCLUDED_NS);
        o->exclude_ns[o->nexclude_ns++] = v;
    } else {
        return 0;
    }
    if (v == NULL)
        return usage_error("%s: missing value", argv[*i]);
    return 1;
}

/* Reads all of f, at most PX_INJECT_MAX_BYTES. 0, -1 on a read error,
 * -2 when larger. */
static int read_all(FILE *f, char **out, size_t *outlen)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        return -1;
    for (;;) {
        size_t n;
        if (len == cap) {
            char *nb;
            if (cap > PX_INJECT_MAX_BYTES) {
                free(buf);
                return -2;
            }
            nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                free(buf);
                return -1;
            }
            break;
        }
    }
    if (len > PX_INJECT_MAX_BYTES) {
        free(buf);
        return -2;
    }
    *out = buf;
    *outlen = len;
    return 0;
}

/* Finds --config FILE in argv and loads it into *o, before the other
 * options (which override it) are applied. 0, 1 (printed), 2 usage. */
static int load_config(int argc, char **argv, struct px_inject_opts *o)
{
    const char *file = NULL, *v;
    char *buf = NULL, err[512];
    size_t len = 0;
    FILE *f;
    int rc;
    for (int i = 1; i < argc; i++)
        if (px_cli_opt(argc, argv, &i, "--config", &v)) {
            if (v == NULL || v[0] == '\0')
                return usage_error("--config: missing file name");
            if (file != NULL)
                return usage_error("--config: given twice");
            file = v;
        }
    if (file == NULL)
        return 0;
    f = fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "picket inject: %s: %s\n", file, strerror(errno));
        return 1;
    }
    rc = read_all(f, &buf, &len);
    fclose(f);
    if (rc != 0) {
        fprintf(stderr, "picket inject: %s: %s\n", file,
                rc == -2 ? "too large" : "read error");
        return 1;
    }
    rc = px_inject_config_load(o, buf, len, err, sizeof(err));
    free(buf);
    if (rc != 0) {
        fprintf(stderr, "picket inject: %s:%s\n", file, err);
        return 1;
    }
    return 0;
}

static int cmd_filter(int argc, char **argv, struct px_inject_opts *o)
{
    const char *file = NULL, *src;
    int patch_only = 0, pretty = 1, ns_reset = 0, rc;
    char *in = NULL, *out = NULL, err[512];
    size_t inlen = 0, outlen = 0;
    struct px_inject_result res;
    FILE *f;

    for (int i = 1; i < argc; i++) {
        const char *v;
        int c = common_opt(argc, argv, &i, o, &ns_reset);
        if (c == 2)
            return 2;
        if (c == 1)
            continue;
        if (strcmp(argv[i], "--patch") == 0)
            patch_only = 1;
        else if (strcmp(argv[i], "--compact") == 0)
            pretty = 0;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (px_cli_opt(argc, argv, &i, "-f", &v) || px_cli_opt(argc, argv, &i, "--file", &v)) {
            if (v == NULL || v[0] == '\0')
                return usage_error("-f: missing file name");
            if (file != NULL)
                return usage_error("more than one input file");
            file = v;
        } else if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0) {
            if (file != NULL)
                return usage_error("more than one input file");
            file = argv[i];
        } else
            return usage_error("unknown argument '%s'", argv[i]);
    }
    if (file == NULL)
        file = "-";
    if (px_inject_opts_check(o, err, sizeof(err)) != 0)
        return usage_error("%s", err);

    src = strcmp(file, "-") == 0 ? "<stdin>" : file;
    f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "picket inject: %s: %s\n", file, strerror(errno));
        return 1;
    }
    rc = read_all(f, &in, &inlen);
    if (f != stdin)
        fclose(f);
    if (rc != 0) {
        fprintf(stderr, "picket inject: %s: %s\n", src,
                rc == -2 ? "input too large (limit 4 MiB)" : "read error");
        return 1;
    }
    if (patch_only)
        rc = px_inject_patch(in, inlen, o, &res, err, sizeof(err));
    else
        rc = px_inject_object(in, inlen, o, pretty, &out, &outlen, &res, err, sizeof(err));
    free(in);
    if (rc != 0) {
        fprintf(stderr, "picket inject: %s:%s\n", src, err);
        return 1;
    }
    if (patch_only)
        printf("%s\n", res.patch);
    else
        fwrite(out, 1, outlen, stdout);
    if (res.note[0] != '\0')
        fprintf(stderr, "picket inject: %s\n", res.note);
    if (res.injected + res.skipped > 1)
        fprintf(stderr, "picket inject: %u injected, %u left as they were\n", res.injected,
                res.skipped);
    else if (res.injected == 0)
        fprintf(stderr, "picket inject: %s %s: not injected (%s)\n", res.kind, res.name,
                px_inject_reason_name(res.reason));
    free(out);
    px_inject_result_clear(&res);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "picket inject: writing output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* ---- the webhook server ------------------------------------------------- */

struct server {
    struct event_base *base;
    struct px_httpl *hl;
    SSL_CTX *ctx; /* new connections take a reference (SSL_new), so it can be swapped */
    const char *cert, *key;
    struct stat cert_st, key_st;
    const struct px_inject_opts *opts;
    size_t max_conns;
    int64_t header_timeout_ms;
};


static SSL_CTX *tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        certs_ossl_err(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, PX_TLS12_CIPHERS) != 1) {
        certs_ossl_err(err, errlen, "cipher list");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        certs_ossl_err(err, errlen, cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        certs_ossl_err(err, errlen, key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        certs_ossl_err(err, errlen, "the key does not match the certificate");
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void cert_check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    struct stat c, k;
    char err[512];
    SSL_CTX *n;
    (void)fd;
    (void)what;
    if (stat(s->cert, &c) != 0 || stat(s->key, &k) != 0)
        return; /* mid-swap; the next check sees the new files */
    if (same_file(&c, &s->cert_st) && same_file(&k, &s->key_st))
        return;
    n = tls_ctx_new(s->cert, s->key, err, sizeof(err));
    if (n == NULL) {
        px_log(PX_LOG_WARN, "inject_cert_reload_failed", "error", err, NULL);
        return; /* keep serving the old certificate; retry next time */
    }
    SSL_CTX_free(s->ctx);
    s->ctx = n;
    s->cert_st = c;
    s->key_st = k;
    px_log(PX_LOG_INFO, "inject_cert_reloaded", "cert", s->cert, NULL);
}

static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
    struct server *s = arg;
    SSL *ssl = SSL_new(s->ctx);
    if (ssl == NULL)
        return NULL; /* handle() refuses non-TLS connections (see there) */
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                  const char *body, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (b == NULL) {
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    evbuffer_add(b, body, len);
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
    reply(req, code, reason, "text/plain; charset=utf-8", msg, strlen(msg));
}

static void handle_review(struct server *s, struct evhttp_request *req, const char *peer)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len > 0 ? (const char *)evbuffer_pullup(in, -1) : "";
    struct px_inject_result res;
    char *resp = NULL, uid[160], err[512] = "", msg[600];
    size_t resp_len = 0;
    int rc;

    if (body == NULL) {
        reply_text(req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    rc = px_inject_review(body, len, s->opts, &resp, &resp_len, &res, uid, sizeof(uid), err,
                          sizeof(err));
    if (rc == PX_INJECT_EINPUT) {
        /* "error" mode and not even a uid to answer to */
        px_log(PX_LOG_WARN, "inject_review_bad", "peer", peer, "error", err, "answer", "400",
               NULL);
        snprintf(msg, sizeof(msg), "picket inject: %s\n", err);
        reply_text(req, 400, "Bad Request", msg);
        return;
    }
    if (rc != 0) {
        px_log(PX_LOG_ERROR, "inject_review_failed", "peer", peer, "error", err, NULL);
        reply_text(req, 500, "Internal Server Error", "out of memory\n");
        return;
    }
    if (res.reason == PX_INJECT_MALFORMED && res.kind[0] == '\0')
        px_log(PX_LOG_WARN, "inject_review_bad", "peer", peer, "uid", uid[0] ? uid : NULL,
               "error", err, "answer", s->opts->malformed_allow ? "allow" : "error", NULL);
    else
        px_log(res.reason == PX_INJECT_REFUSED || res.reason == PX_INJECT_MALFORMED
                   ? PX_LOG_WARN
                   : PX_LOG_INFO,
               "inject_review", "uid", uid, "kind", res.kind, "name", res.name, "namespace",
               res.ns, "injected", res.injected > 0 ? "yes" : "no", "reason",
               px_inject_reason_name(res.reason), "detail", err[0] ? err : NULL, "answer",
               res.reason == PX_INJECT_REFUSED || res.reason == PX_INJECT_MALFORMED
                   ? (s->opts->malformed_allow ? "allow" : "error")
                   : NULL,
               NULL);
    reply(req, 200, "OK", "application/json", resp, resp_len);
    free(resp);
    px_inject_result_clear(&res);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct server *s = arg;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    char *addr = NULL, peer[80] = "";
    ev_uint16_t port = 0;

    /* evhttp falls back to a plain socket when bev_cb returns NULL (only on
     * out of memory); never answer a review over plaintext. */
    if (conn == NULL || bufferevent_openssl_get_ssl(evhttp_connection_get_bufferevent(conn)) ==
                            NULL) {
        evhttp_send_error(req, 400, "TLS required");
        return;
    }
    evhttp_connection_get_peer(conn, &addr, &port);
    snprintf(peer, sizeof(peer), "%s:%u", addr ? addr : "?", (unsigned)port);
    if (path == NULL)
        path = "";
    if (strcmp(path, "/healthz") == 0) {
        if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
            reply_text(req, 405, "Method Not Allowed", "method not allowed\n");
            return;
        }
        reply_text(req, 200, "OK", "ok\n");
        return;
    }
    if (strcmp(path, "/inject") == 0 || strcmp(path, "/mutate") == 0) {
        /* The API server calls /inject?timeout=10s; the query is ignored.
         * /mutate is the path of earlier webhook configurations. */
        if (cmd != EVHTTP_REQ_POST) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
            reply_text(req, 405, "Method Not Allowed", "method not allowed\n");
            return;
        }
        handle_review(s, req, peer);
        return;
    }
    reply_text(req, 404, "Not Found", "not found\n");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    (void)what;
    px_logf(PX_LOG_INFO, "inject_stopping", "signal %d", (int)sig);
    event_base_loopexit(s->base, NULL);
}

/* "host:port" or "[v6]:port" into host (brackets removed) and port. */
static int parse_bind(const char *bind, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(bind, ':');
    size_t hl;
    if (colon == NULL || parse_port(colon + 1, port) != 0)
        return -1;
    hl = (size_t)(colon - bind);
    if (hl >= 2 && bind[0] == '[' && bind[hl - 1] == ']') {
        bind++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen || memchr(bind, '[', hl) || memchr(bind, ']', hl))
        return -1;
    memcpy(host, bind, hl);
    host[hl] = '\0';
    return 0;
}

static int run_server(struct server *s, const char *host, int port)
{
    struct event *sigterm = NULL, *sigint = NULL, *timer = NULL;
    struct timeval every = {CERT_CHECK_S, 0};
    struct px_httpl_opts ho;
    char portstr[8], conns[24], hto[24], err[512];
    int rc = 1;

    s->base = event_base_new();
    if (s->base == NULL) {
        fprintf(stderr, "picket inject serve: cannot create the event loop\n");
        goto done;
    }
    memset(&ho, 0, sizeof(ho));
    ho.name = "inject";
    ho.host = host;
    ho.port = port;
    ho.max_conns = s->max_conns;
    ho.request_timeout_ms = s->header_timeout_ms;
    ho.io_timeout_s = IO_TIMEOUT_S;
    ho.max_headers_size = HEADERS_MAX;
    ho.max_body_size = PX_INJECT_MAX_BYTES;
    ho.allowed_methods = EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST;
    ho.handle = handle;
    ho.bevcb = bev_cb;
    ho.arg = s;
    if (px_httpl_new(&s->hl, s->base, &ho, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket inject serve: %s\n", err);
        goto done;
    }
    sigterm = evsignal_new(s->base, SIGTERM, on_signal, s);
    sigint = evsignal_new(s->base, SIGINT, on_signal, s);
    timer = event_new(s->base, -1, EV_PERSIST, cert_check_cb, s);
    if (sigterm == NULL || sigint == NULL || timer == NULL || evsignal_add(sigterm, NULL) != 0 ||
        evsignal_add(sigint, NULL) != 0 || event_add(timer, &every) != 0) {
        fprintf(stderr, "picket inject serve: cannot install signal handlers\n");
        goto done;
    }
    snprintf(portstr, sizeof(portstr), "%d", px_httpl_port(s->hl));
    snprintf(conns, sizeof(conns), "%zu", s->max_conns);
    snprintf(hto, sizeof(hto), "%lld", (long long)s->header_timeout_ms);
    px_log(PX_LOG_INFO, "inject_listening", "host", host, "port", portstr, "image",
           s->opts->image, "max_connections", conns, "header_timeout_ms", hto, NULL);
    rc = event_base_dispatch(s->base) < 0 ? 1 : 0;
    px_log(PX_LOG_INFO, "inject_stopped", NULL);
done:
    if (timer != NULL)
        event_free(timer);
    if (sigint != NULL)
        event_free(sigint);
    if (sigterm != NULL)
        event_free(sigterm);
    px_httpl_free(s->hl);
    if (s->base != NULL)
        event_base_free(s->base);
    return rc;
}

static int cmd_serve(int argc, char **argv, struct px_inject_opts *o)
{
    const char *bind = NULL, *cert = NULL, *key = NULL;
    char host[256], err[512];
    int port = 0, ns_reset = 0, rc;
    size_t max_conns = MAX_CONNS;
    int64_t header_timeout_ms = HEADER_TIMEOUT_MS;
    struct server s;

    for (int i = 1; i < argc; i++) {
        int c = common_opt(argc, argv, &i, o, &ns_reset);
        if (c == 2)
            return 2;
        if (c == 1)
            continue;
        const char *v = NULL, **dst = NULL;
        if (px_cli_opt(argc, argv, &i, "--max-connections", &v)) {
            char *end = NULL;
            long n = v != NULL ? strtol(v, &end, 10) : 0;
            if (v == NULL || *end != '\0' || n < 1 || n > 1000000)
                return usage_error("--max-connections: expected 1..1000000, got '%s'", v ? v : "");
            max_conns = (size_t)n;
            continue;
        }
        if (px_cli_opt(argc, argv, &i, "--header-timeout", &v)) {
            if (v == NULL || certs_duration_parse(v, strlen(v), &header_timeout_ms) != 0 ||
                header_timeout_ms < 100 || header_timeout_ms > 3600000)
                return usage_error("--header-timeout: expected a duration from 100ms to 1h such "
                                   "as 10s, got '%s'",
                                   v ? v : "");
            continue;
        }
        if (px_cli_opt(argc, argv, &i, "--bind", &v))
            dst = &bind;
        else if (px_cli_opt(argc, argv, &i, "--cert", &v))
            dst = &cert;
        else if (px_cli_opt(argc, argv, &i, "--key", &v))
            dst = &key;
        else
            return usage_error("serve: unknown argument '%s'", argv[i]);
        if (v == NULL || v[0] == '\0')
            return usage_error("serve: %s needs a value", argv[i]);
        *dst = v;
    }
    if (bind == NULL || cert == NULL || key == NULL)
        return usage_error("serve: --bind, --cert and --key are required");
    if (parse_bind(bind, host, sizeof(host), &port) != 0)
        return usage_error("--bind: expected HOST:PORT, got '%s'", bind);
    if (px_inject_opts_check(o, err, sizeof(err)) != 0)
        return usage_error("%s", err);

    memset(&s, 0, sizeof(s));
    s.cert = cert;
    s.key = key;
    s.opts = o;
    s.max_conns = max_conns;
    s.header_timeout_ms = header_timeout_ms;
    if (stat(cert, &s.cert_st) != 0 || stat(key, &s.key_st) != 0) {
        int e = errno;
        fprintf(stderr, "picket inject serve: %s: %s\n", stat(cert, &s.cert_st) != 0 ? cert : key,
                strerror(e));
        return 1;
    }
    s.ctx = tls_ctx_new(cert, key, err, sizeof(err));
    if (s.ctx == NULL) {
        fprintf(stderr, "picket inject serve: %s\n", err);
        return 1;
    }
    /* A peer that resets mid-write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    rc = run_server(&s, host, port);
    SSL_CTX_free(s.ctx);
    return rc;
}

/* picket inject write-config --out FILE: the generated proxy config, from
 * $PICKET_CONFIG (set by the injector), into the pod's emptyDir. Checked
 * to be one strict JSON object; written to FILE.tmp, then renamed. */
static int cmd_write_config(int argc, char **argv)
{
    const char *out = NULL, *v, *cfg = getenv("PICKET_CONFIG");
    char tmp[4096], err[512];
    struct certs_json j;
    size_t len;
    FILE *f;
    int ok;
    for (int i = 1; i < argc; i++) {
        if (px_cli_opt(argc, argv, &i, "--out", &v) && v != NULL && v[0] != '\0')
            out = v;
        else
            return usage_error("write-config: expected --out FILE");
    }
    if (out == NULL)
        return usage_error("write-config: expected --out FILE");
    if (cfg == NULL || cfg[0] == '\0') {
        fprintf(stderr, "picket inject write-config: PICKET_CONFIG is not set\n");
        return 1;
    }
    len = strlen(cfg);
    if (px_inject_parse_doc(&j, cfg, len, PX_INJECT_MAX_TOKENS, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket inject write-config: PICKET_CONFIG:%s\n", err);
        return 1;
    }
    certs_json_clear(&j);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", out) >= sizeof(tmp)) {
        fprintf(stderr, "picket inject write-config: %s: name too long\n", out);
        return 1;
    }
    f = fopen(tmp, "wb");
    if (f == NULL) {
        fprintf(stderr, "picket inject write-config: %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    ok = fwrite(cfg, 1, len, f) == len && fputc('\n', f) != EOF;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, out) != 0) {
        fprintf(stderr, "picket inject write-config: %s: %s\n", out, strerror(errno));
        (void)unlink(tmp);
        return 1;
    }
    fprintf(stderr, "picket inject write-config: wrote %s (%zu bytes)\n", out, len + 1);
    return 0;
}

int px_cmd_inject(int argc, char **argv)
{
    struct px_inject_opts o;
    int rc;
    if (argc >= 2 && strcmp(argv[1], "write-config") == 0)
        return cmd_write_config(argc - 1, argv + 1);
    px_inject_opts_init(&o);
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
        rc = load_config(argc - 1, argv + 1, &o);
        if (rc == 0)
            rc = cmd_serve(argc - 1, argv + 1, &o);
    } else {
        rc = load_config(argc, argv, &o);
        if (rc == 0)
            rc = cmd_filter(argc, argv, &o);
    }
    px_inject_opts_free(&o);
    return rc;
}
