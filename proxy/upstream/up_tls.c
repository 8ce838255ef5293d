/*
 * up_tls.c - connections picket originates: plain sockets for h2c/http
 * upstreams, mTLS for outbound routes, authorization services and the
 * control plane. An mTLS connection presents the workload's own SVID (from
 * the worker's current snapshot, so rotation applies to new connections
 * at once) and accepts the server only if its certificate passes the full
 * SVID rules and names exactly the expected SPIFFE ID (snapshot.c,
 * verify_server_cb). The protocol halves (up_h2.c, up_h1.c) see an
 * ordinary bufferevent whose CONNECTED event means "TLS is up and the
 * server is who it must be".
 */
#include "px.h"
#include "upstream.h"

#include <time.h>

#include <arpa/inet.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

struct bufferevent *px_up_bev_new(struct px_worker *w, struct px_pool *pool)
{
    SSL *ssl;
    struct bufferevent *bev;
    static const unsigned char alpn_h2[] = "\x02h2";
    static const unsigned char alpn_h1[] = "\x08http/1.1";
    static const unsigned char alpn_both[] = "\x02h2\x08http/1.1";

    if (!pool->tls) {
        bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (bev != NULL) {
            bufferevent_set_max_single_read(bev, PX_IO_CHUNK);
            bufferevent_set_max_single_write(bev, PX_IO_CHUNK);
        }
        return bev;
    }
    if (w->snap->client_ctx == NULL)
        return NULL;
    ssl = SSL_new(w->snap->client_ctx);
    if (ssl == NULL)
        return NULL;
    SSL_set_ex_data(ssl, px_ssl_expect_idx, pool->server_id);
    px_ssl_set_reason(ssl, PX_R_NONE);
    if (pool->sni[0] != '\0')
        SSL_set_tlsext_host_name(ssl, pool->sni);
    if (pool->alpn == PX_ALPN_PROBE)
        SSL_set_alpn_protos(ssl, alpn_both, sizeof(alpn_both) - 1);
    else if (pool->h2)
        SSL_set_alpn_protos(ssl, alpn_h2, sizeof(alpn_h2) - 1);
    else
        SSL_set_alpn_protos(ssl, alpn_h1, sizeof(alpn_h1) - 1);
    bev = bufferevent_openssl_socket_new(w->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    bufferevent_set_max_single_read(bev, PX_IO_CHUNK);
    bufferevent_set_max_single_write(bev, PX_IO_CHUNK);
    return bev;
}

int px_up_bev_is_h2(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    const unsigned char *p = NULL;
    unsigned n = 0;
    if (ssl == NULL)
        return 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == 2 && memcmp(p, "h2", 2) == 0;
}

int64_t px_up_bev_not_after(struct bufferevent *bev)
{
    return px_ssl_peer_not_after(bufferevent_openssl_get_ssl(bev));
}

enum px_reason px_up_bev_fail_reason(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    enum px_reason r;
    int tls_err = 0;
    if (ssl == NULL)
        return PX_R_NONE;
    /* libevent also queues a pseudo-entry for a plain socket error (e.g.
     * ECONNREFUSED during connect): only OpenSSL's own library errors
     * mean the TLS layer failed. */
    for (unsigned long e; (e = bufferevent_get_openssl_error(bev)) != 0;)
        if (ERR_GET_LIB(e) == ERR_LIB_SSL)
            tls_err = 1;
    r = px_ssl_get_reason(ssl);
    if (r != PX_R_NONE)
        return r;
    return tls_err ? PX_R_TLS_ERROR : PX_R_NONE;
}
