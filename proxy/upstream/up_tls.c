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
#include <errno.h>
#include <string.h>
#include <sys/uio.h>

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

int px_up_bev_clean_eof(struct bufferevent *bev, short what)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (!(what & BEV_EVENT_EOF) || (what & BEV_EVENT_ERROR))
        return 0;
    return ssl == NULL || (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN) != 0;
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

/* libevent 2.1 reads at most 4 KiB per read callback (EVBUFFER_MAX_READ;
 * evbuffer_set_max_read() came in 2.2). A 1 MiB response from the app was
 * 256 loop turns, 256 FIONREAD+readv pairs, and 256 small DATA frames and
 * TLS records downstream, because each turn forwards what it has. */
#define PX_LIBEVENT_READ 4096 /* EVBUFFER_MAX_READ */

size_t px_up_read_more(struct bufferevent *bev, const struct px_pool *pool, size_t max)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evutil_socket_t fd = bufferevent_getfd(bev);
    size_t low = 0, high = 0, got = 0;

    if (pool->tls || fd < 0)
        return 0; /* TLS: the bytes on the socket are OpenSSL's, not ours */
    if (evbuffer_get_length(in) < PX_LIBEVENT_READ)
        return 0; /* libevent's read took less than it could: the socket is empty */
    bufferevent_getwatermark(bev, EV_READ, &low, &high);
    if (high > 0) {
        size_t have = evbuffer_get_length(in);
        if (have >= high)
            return 0;
        if (high - have < max)
            max = high - have;
    }
    /* a socket bufferevent keeps its input's end frozen but for its own
     * reads: we read in its place, so the same holds */
    evbuffer_unfreeze(in, 0);
    while (got < max) {
        struct evbuffer_iovec v[2];
        struct iovec io[2];
        size_t want = max - got > PX_UP_READ_PIECE ? PX_UP_READ_PIECE : max - got, left;
        ssize_t r;
        int n = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
        if (n <= 0)
            break;
        left = want;
        for (int i = 0; i < n; i++) {
            if (v[i].iov_len > left)
                v[i].iov_len = left;
            left -= v[i].iov_len;
            io[i].iov_base = v[i].iov_base;
            io[i].iov_len = v[i].iov_len;
        }
        do
            r = readv(fd, io, n);
        while (r < 0 && errno == EINTR);
        if (r <= 0) {
            /* empty (EAGAIN), EOF or an error: libevent's next read on the
             * still-readable socket finds the last two and reports them as
             * always (BEV_EVENT_EOF / BEV_EVENT_ERROR) */
            evbuffer_commit_space(in, v, 0);
            break;
        }
        left = (size_t)r;
        for (int i = 0; i < n; i++) {
            if (v[i].iov_len > left)
                v[i].iov_len = left;
            left -= v[i].iov_len;
        }
        if (evbuffer_commit_space(in, v, n) != 0)
            break;
        got += (size_t)r;
        if ((size_t)r < want)
            break; /* short read: the socket is empty for now */
    }
    evbuffer_freeze(in, 0);
    return got;
}
