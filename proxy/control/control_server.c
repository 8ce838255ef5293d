/*
 * control_server.c - the server around control.c's request handling: the
 * TLS context and the client check that runs in the handshake (full SVID
 * rules against the trust bundles, then --allow), the listener, the watch
 * timer, SIGTERM/SIGINT, and struct px_control's lifetime.
 *
 * No TLS session resumption, so every connection's client certificate is
 * checked again; see tls_setup().
 */
#include "control_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "certs.h"
#include "http_listen.h"
#include "log.h"
#include "snapshot.h"

/* ---- TLS --------------------------------------------------------------------- */


static void ssl_peer(SSL *ssl, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    int fd = ssl != NULL ? SSL_get_fd(ssl) : -1;

    if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(out, outlen, "%s:%d", host, port);
}

/* Full SVID rules on the client certificate, then the allow list. Runs in
 * the handshake; a refusal is logged with its stable reason. */
static int verify_client_cb(X509_STORE_CTX *xs, void *arg)
{
    struct px_control *c = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    char id[CERTS_SPIFFE_ID_MAX + 1] = "", err[256] = "", peer[PEER_MAX];
    const char *reason;
    enum certs_reason r;

    r = certs_svid_check(c->trust, leaf, X509_STORE_CTX_get0_untrusted(xs), (int64_t)time(NULL),
                         c->max_life_s, id, sizeof(id), err, sizeof(err));
    if (r == CERTS_R_OK && px_control_allowed(id, c->o.allow, c->o.nallow))
        return 1;
    if (r == CERTS_R_OK) {
        reason = "not_allowed";
        snprintf(err, sizeof(err), "not in --allow");
    } else {
        reason = certs_reason_name(r);
        if (leaf != NULL && certs_cert_spiffe_id(leaf, id, sizeof(id)) != 0)
            id[0] = '\0';
    }
    ssl_peer(ssl, peer, sizeof(peer));
    px_log(PX_LOG_WARN, "control_handshake_refused", "peer", peer, "peer_id", id[0] ? id : NULL,
           "reason", reason, "detail", err, NULL);
    X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

/* evhttp speaks HTTP/1.1 only: select it when offered, else no ALPN. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)l;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static int tls_setup(struct px_control *c, char *err, size_t errlen)
{
    SSL_CTX *ctx = px_tls_ctx_new(TLS_server_method(), err, errlen);
    if (ctx == NULL)
        return -1;
    c->ctx = ctx;
    /* No resumption: a resumed session would skip the SVID check, and an
     * SVID that expired since would keep working. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (px_tls_use_keypair(ctx, c->kp, err, errlen) != 0)
        return -1;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, verify_client_cb, c);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    return 0;
}

static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
    struct px_control *c = arg;
    SSL *ssl = SSL_new(c->ctx);
    if (ssl == NULL)
        return NULL; /* px_control_handle() refuses the plaintext fallback */
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

/* ---- lifetime ------------------------------------------------------------------ */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct px_control *c = arg;
    struct timeval flush = {0, 200000};
    (void)what;
    if (c->stopping)
        return;
    c->stopping = 1;
    px_logf(PX_LOG_INFO, "control_stopping", "signal %d", (int)sig);
    px_httpl_stop(c->hl);
    px_control_answer_all(c);
    /* a short grace so the answers just queued reach their clients */
    event_base_loopexit(c->base, &flush);
}

int px_control_new(struct px_control **out, const struct px_control_opts *o, char *err,
                   size_t errlen)
{
    struct px_control *c = calloc(1, sizeof(*c));
    struct timeval every = {0, PX_CONTROL_WATCH_MS * 1000};
    struct px_httpl_opts ho;
    struct stat st;
    char e2[512];

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->o = *o;
    if (c->o.max_waiters == 0)
        c->o.max_waiters = PX_CONTROL_MAX_WAITERS;
    if (c->o.max_waiters_per_client == 0)
        c->o.max_waiters_per_client = PX_CONTROL_MAX_WAITERS_PER_CLIENT;
    if (c->o.max_wait_ms < 0)
        c->o.max_wait_ms = 0;
    if (c->o.max_conns == 0)
        c->o.max_conns = PX_CONTROL_MAX_CONNS;
    if (c->o.header_timeout_ms <= 0)
        c->o.header_timeout_ms = PX_CONTROL_HEADER_TIMEOUT_MS;
    c->max_life_s = (o->max_svid_lifetime_ms > 0 ? o->max_svid_lifetime_ms : 86400000) / 1000;
    if (stat(o->dir, &st) != 0) {
        snprintf(err, errlen, "--dir %s: %s", o->dir, strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "--dir %s: not a directory", o->dir);
        goto fail;
    }
    if (certs_trust_load(&c->trust, o->trust, o->ntrust, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "--trust-bundle: %s", e2);
        goto fail;
    }
    if (certs_keypair_load(&c->kp, o->cert, o->key, (int64_t)time(NULL), e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "--cert/--key: %s", e2);
        goto fail;
    }
    if (tls_setup(c, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "TLS: %s", e2);
        goto fail;
    }
    c->base = event_base_new();
    if (c->base == NULL) {
        snprintf(err, errlen, "cannot create the event loop");
        goto fail;
    }
    memset(&ho, 0, sizeof(ho));
    ho.name = "control";
    ho.host = o->host;
    ho.port = o->port;
    ho.max_conns = c->o.max_conns;
    ho.request_timeout_ms = c->o.header_timeout_ms;
    ho.io_timeout_s = PX_CONTROL_IO_TIMEOUT_S;
    ho.max_headers_size = PX_CONTROL_HEADERS_MAX;
    ho.max_body_size = 0;
    ho.allowed_methods = EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                         EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH;
    ho.handle = px_control_handle;
    ho.bevcb = bev_cb;
    ho.on_close = px_control_conn_closed;
    ho.arg = c;
    if (px_httpl_new(&c->hl, c->base, &ho, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "%s", e2);
        goto fail;
    }
    c->port = px_httpl_port(c->hl);
    c->tick = event_new(c->base, -1, EV_PERSIST, px_control_tick_cb, c);
    c->sigterm = evsignal_new(c->base, SIGTERM, on_signal, c);
    c->sigint = evsignal_new(c->base, SIGINT, on_signal, c);
    if (c->tick == NULL || c->sigterm == NULL || c->sigint == NULL ||
        event_add(c->tick, &every) != 0 || evsignal_add(c->sigterm, NULL) != 0 ||
        evsignal_add(c->sigint, NULL) != 0) {
        snprintf(err, errlen, "cannot install timers or signal handlers");
        goto fail;
    }
    *out = c;
    return 0;
fail:
    px_control_free(c);
    return -1;
}

int px_control_port(const struct px_control *c)
{
    return c->port;
}

int px_control_run(struct px_control *c)
{
    char port[8], wait[24], cap[24], ccap[24], conns[24], hto[24];
    snprintf(port, sizeof(port), "%d", c->port);
    snprintf(wait, sizeof(wait), "%lld", (long long)(c->o.max_wait_ms / 1000));
    snprintf(cap, sizeof(cap), "%zu", c->o.max_waiters);
    snprintf(ccap, sizeof(ccap), "%zu", c->o.max_waiters_per_client);
    snprintf(conns, sizeof(conns), "%zu", c->o.max_conns);
    snprintf(hto, sizeof(hto), "%lld", (long long)c->o.header_timeout_ms);
    px_log(PX_LOG_INFO, "control_listening", "host", c->o.host, "port", port, "dir", c->o.dir, "id",
           certs_keypair_spiffe_id(c->kp), "max_wait_s", wait, "max_waiters", cap,
           "max_waiters_per_client", ccap, "max_connections", conns, "header_timeout_ms", hto,
           NULL);
    if (event_base_dispatch(c->base) < 0)
        return 1;
    px_control_answer_all(c);
    px_log(PX_LOG_INFO, "control_stopped", NULL);
    return 0;
}

void px_control_free(struct px_control *c)
{
    if (c == NULL)
        return;
    px_control_answer_all(c);
    px_httpl_free(c->hl);
    if (c->tick != NULL)
        event_free(c->tick);
    if (c->sigterm != NULL)
        event_free(c->sigterm);
    if (c->sigint != NULL)
        event_free(c->sigint);
    if (c->base != NULL)
        event_base_free(c->base);
    SSL_CTX_free(c->ctx);
    certs_keypair_unref(c->kp);
    certs_trust_unref(c->trust);
    free(c);
}
