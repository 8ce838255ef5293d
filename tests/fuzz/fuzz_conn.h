/*
 * fuzz_conn.h - a downstream connection of the real proxy, fed raw bytes:
 * shared by fuzz_h1.c, fuzz_h2.c (and fuzz_h2tls.c, which includes it) and
 * fuzz_upstream.c (static functions, one includer each).
 *
 * Built once per process: a dev CA and SVID in a temporary directory, a
 * config with an inbound listener (default upstream: a canned HTTP/1.1
 * server inside this process), an outbound listener (mTLS routes to a
 * closed port) and a dispatch service (a closed port), and a policy with
 * allow, deny, dispatch and header rules.
 *
 * Per input: a fresh worker (its own event base), one connection accepted
 * on the inbound or outbound listener whose bufferevent is one end of a
 * bufferevent pair; the harness writes the input into the other end in
 * chunks, runs the event loop, closes its end and frees the worker. The
 * code under test is picket's own: px_h1_conn_start()/px_h2_conn_start(),
 * the request callbacks, px_stream_dispatch() (normalization, identity
 * headers, policy, dispatch), the upstream pools and the access/audit log
 * writers (to /dev/null). Over TLS (fc_run_tls, FC_TLS): one end of a
 * socket pair goes through the worker's accept instead, and an OpenSSL
 * client in this thread writes the input (the TLS section below).
 *
 * Input layout: byte 0 picks the chunk size and the listener (see
 * fc_run()); the rest is what the client sends (for h2, after the
 * connection preface, which the harness sends itself).
 *
 * Answer mode (fuzz_upstream.c, fc_run_conn() with a struct fc_answer):
 * the canned upstream does not write its fixed response; the first
 * connection that sends it a request gets the includer's bytes instead,
 * one chunk per loop turn, optionally followed by a half-close, and
 * whatever else arrives is drained. The inbound listener routes /up2/ to
 * the same canned upstream as h2c, so picket's HTTP/2 client can be
 * reached too. In the default mode a connection that opens with the h2
 * preface is drained and never answered: fuzz_h1/fuzz_h2 inputs may ask
 * for /up2/, and the exchange then simply stays open until the input ends.
 *
 * Invariant checked here: every request the canned upstream receives has
 * a well-formed HTTP/1.1 head (CRLF line ends only, a 3-part request line,
 * token field names, no control bytes in values): whatever a client sends,
 * picket never forwards a head with a framing of its own making.
 *
 * And over a replayed corpus (fuzz_replay_done(), replay_main.c only): at
 * least one seed's request reached the canned upstream and at least one
 * upstream answer reached the client (the includer counts those in
 * fc.relayed). Without it a picket that forwards nothing would pass every
 * per-input invariant above, since they only look at what was forwarded.
 */
#ifndef PICKET_FUZZ_CONN_H
#define PICKET_FUZZ_CONN_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "certs.h"
#include "config.h"
#include "enforce.h"
#include "fuzz_common.h"
#include "h1.h"
#include "h2.h"
#include "log.h"
#include "px.h"
#include "snapshot.h"
#include "worker.h"

#define FC_PEER_ID "spiffe://fuzz.test/ns/shop/sa/frontend"

static struct {
    int ready;
    char dir[64];
    int up_fd; /* listening socket of the canned upstream */
    struct px_snapshot *snap;
    struct px_policy_state *pol;
    SSL_CTX *cli_ctx; /* the TLS client's (fuzz_h2tls.c): an SVID of FC_PEER_ID, ALPN h2 */
    size_t forwarded; /* heads the canned upstream received (checked) */
    size_t relayed;   /* upstream answers seen by the client (counted by the includer) */
} fc;

/* The canned upstream's answer body; the includer counts it in picket's output. */
#define FC_UP_BODY "ok\n"

static const char fc_policy[] =
    "{\"revision\": 7, \"default\": \"deny\", \"rules\": ["
    "{\"id\": \"reads\", \"action\": \"allow\", \"from\": [\"spiffe://fuzz.test/ns/shop/*\"],"
    " \"methods\": [\"GET\", \"HEAD\", \"POST\"],"
    " \"paths\": [\"/orders/**\", \"/h2/**\", \"/up2/**\", \"/\"]},"
    "{\"id\": \"tenant\", \"action\": \"allow\", \"paths\": [\"/t/*\"],"
    " \"headers\": {\"x-tenant\": [\"acme\"]}},"
    "{\"id\": \"no-admin\", \"action\": \"deny\", \"paths\": [\"/orders/admin/**\"]},"
    "{\"id\": \"pay\", \"action\": \"dispatch\", \"dispatch\": \"authz\","
    " \"paths\": [\"/pay/**\"]}]}";

static void fc_die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_conn setup: %s: %s\n", what, err);
    abort();
}

static void fc_setup(void)
{
    char err[512], ca[128], cert[128], key[128], cfgjson[2048];
    struct sockaddr_in sin = {0};
    socklen_t sl = sizeof(sin);
    struct px_config *cfg = NULL;
    int n;

    if (fc.ready)
        return;
    snprintf(fc.dir, sizeof(fc.dir), "/tmp/picket-fuzz-XXXXXX");
    if (mkdtemp(fc.dir) == NULL)
        fc_die("mkdtemp", "failed");
    snprintf(ca, sizeof(ca), "%s/ca", fc.dir);
    snprintf(cert, sizeof(cert), "%s/svid.pem", fc.dir);
    snprintf(key, sizeof(key), "%s/svid.key", fc.dir);
    if (certs_devca_init(ca, "fuzz.test", 30 * 86400, err, sizeof(err)) != 0)
        fc_die("devca init", err);
    if (certs_devca_issue(ca, "spiffe://fuzz.test/ns/shop/sa/orders", 86400, NULL, 0, NULL, 0,
                          cert, key, err, sizeof(err)) != 0)
        fc_die("devca issue", err);
#if defined(FC_TLS) && FC_TLS
    { /* the TLS client's SVID and context: fuzz_h2tls only */
        char ccert[128], ckey[128];
        snprintf(ccert, sizeof(ccert), "%s/client.pem", fc.dir);
        snprintf(ckey, sizeof(ckey), "%s/client.key", fc.dir);
        if (certs_devca_issue(ca, FC_PEER_ID, 86400, NULL, 0, NULL, 0, ccert, ckey, err,
                              sizeof(err)) != 0)
            fc_die("devca issue (client)", err);
        if ((fc.cli_ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
            SSL_CTX_use_certificate_chain_file(fc.cli_ctx, ccert) != 1 ||
            SSL_CTX_use_PrivateKey_file(fc.cli_ctx, ckey, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_set_alpn_protos(fc.cli_ctx, (const unsigned char *)"\x02h2", 3) != 0)
            fc_die("client TLS context", "failed");
        SSL_CTX_set_verify(fc.cli_ctx, SSL_VERIFY_NONE, NULL);
    }
#endif

    /* The canned upstream: a listening socket; each worker accepts on it. */
    fc.up_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fc.up_fd < 0 || bind(fc.up_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        listen(fc.up_fd, 128) != 0 || getsockname(fc.up_fd, (struct sockaddr *)&sin, &sl) != 0)
        fc_die("upstream socket", "bind/listen failed");
    evutil_make_socket_nonblocking(fc.up_fd);
    /* as picket's daemon does: a write to a peer that closed is an error
     * to handle (the canned upstream answers picket after it gave up) */
    signal(SIGPIPE, SIG_IGN);

    n = snprintf(cfgjson, sizeof(cfgjson),
                 "{\"node_id\": \"fuzz/picket\", \"workers\": 1,"
                 " \"identity\": {\"cert\": \"svid.pem\", \"key\": \"svid.key\","
                 "   \"trust_bundles\": {\"fuzz.test\": \"ca/ca.pem\"}},"
                 " \"policy\": {\"file\": \"policy.json\"},"
                 " \"dispatch\": {\"authz\": {\"url\": \"https://127.0.0.1:1\","
                 "   \"server_id\": \"spiffe://fuzz.test/authz\", \"headers\": [\"x-user\"]}},"
                 " \"listeners\": ["
                 "  {\"name\": \"in\", \"kind\": \"inbound\", \"bind\": \"127.0.0.1:1\","
                 "   \"upstream\": \"http://127.0.0.1:%d\","
                 "   \"routes\": [{\"path_prefix\": \"/h2/\", \"upstream\": \"h2c://127.0.0.1:1\"},"
                 "     {\"path_prefix\": \"/up2/\", \"upstream\": \"h2c://127.0.0.1:%d\"}]},"
                 "  {\"name\": \"out\", \"kind\": \"outbound\", \"bind\": \"127.0.0.1:2\","
                 "   \"routes\": [{\"authority\": \"svc.fuzz.test\", \"upstream\": \"127.0.0.1:1\","
                 "     \"server_id\": \"spiffe://fuzz.test/svc\"}]}],"
                 " \"log\": {\"level\": \"error\", \"access\": \"/dev/null\", \"audit\": \"/dev/null\"},"
                 " \"limits\": {\"max_concurrent_streams\": 16, \"max_header_list_size\": 8192,"
                 "   \"stream_buffer\": 65536}}",
                 ntohs(sin.sin_port), ntohs(sin.sin_port));
    if (n < 0 || (size_t)n >= sizeof(cfgjson))
        fc_die("config", "too long");
    if (px_config_parse(&cfg, "fuzz.json", fc.dir, cfgjson, (size_t)n, err, sizeof(err)) != 0)
        fc_die("config", err);
    if (px_log_init(cfg->log.level, cfg->log.access, cfg->log.audit, err, sizeof(err)) != 0)
        fc_die("log", err);
    px_ssl_conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    px_ssl_expect_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    px_ssl_reason_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    if (px_snapshot_build(&fc.snap, cfg, err, sizeof(err)) != 0)
        fc_die("snapshot", err);
    snprintf(ca, sizeof(ca), "%s/policy.json", fc.dir);
    if (certs_write_file_atomic(ca, fc_policy, sizeof(fc_policy) - 1, 0644, err, sizeof(err)) != 0 ||
        px_policy_state_load_file(&fc.pol, ca, err, sizeof(err)) != 0)
        fc_die("policy", err);
    fc.ready = 1;
}

/* ---- the canned upstream ------------------------------------------------ */

/* Answer mode (fuzz_upstream.c): what the canned upstream says instead of
 * its fixed response. Filled in by the includer (p, len, chunk,
 * close_after); the rest is the harness's state for one input. */
struct fc_answer {
    const uint8_t *p;
    size_t len;
    size_t chunk;    /* bytes written per loop turn (>= 1) */
    int close_after; /* half-close (SHUT_WR) once every byte is out */
    /* harness state */
    struct fc_up *u; /* the connection answering: the first to send a request */
    size_t off; /* bytes written so far */
    int shut;
};

struct fc_up {
    struct bufferevent *bev;
    struct fc_up *next;
    struct fc_run *r;
    int answered;
    int h2;   /* opened with the HTTP/2 preface: drained, never checked */
    int gone; /* picket closed it or an error: nothing more is written */
};

struct fc_run {
    struct px_worker *w;
    struct evconnlistener *evl;
    struct fc_up *ups;
    struct fc_answer *ans; /* NULL: the default mode */
};

static const char fc_h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static int fc_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* The forwarded head p[0..n) (up to and including the empty line). */
static void fc_check_head(const unsigned char *p, size_t n)
{
    size_t i = 0, line = 0;
    while (i < n) {
        size_t s = i, e;
        while (i < n && p[i] != '\r' && p[i] != '\n')
            i++;
        FUZZ_CHECKF(i + 1 < n && p[i] == '\r' && p[i + 1] == '\n',
                    "forwarded head line %zu does not end in CRLF", line);
        e = i;
        i += 2;
        if (e == s) {
            FUZZ_CHECKF(i == n, "forwarded head has bytes after its empty line");
            return;
        }
        if (line == 0) {
            size_t sp = 0;
            for (size_t k = s; k < e; k++) {
                FUZZ_CHECKF(p[k] > 0x20 || p[k] == ' ', "control byte in the request line");
                sp += p[k] == ' ';
            }
            FUZZ_CHECKF(sp == 2, "request line has %zu spaces", sp);
            FUZZ_CHECK(e - s > 9 && memcmp(p + e - 9, " HTTP/1.1", 9) == 0);
        } else {
            size_t k = s;
            while (k < e && p[k] != ':')
                k++;
            FUZZ_CHECKF(k < e && k > s, "forwarded field line %zu has no name", line);
            for (size_t j = s; j < k; j++)
                FUZZ_CHECKF(fc_tchar(p[j]), "forwarded field name byte 0x%02x", p[j]);
            for (size_t j = k + 1; j < e; j++)
                FUZZ_CHECKF(p[j] == '\t' || (p[j] >= 0x20 && p[j] != 0x7f),
                            "forwarded field value byte 0x%02x", p[j]);
        }
        line++;
    }
    FUZZ_CHECKF(0, "forwarded head without an empty line");
}

/* Answer mode: the next chunk of the answer, or the half-close after it.
 * Called once per loop turn (fc_loop()). */
static void fc_answer_pump(struct fc_answer *a)
{
    struct fc_up *u = a->u;
    if (u == NULL || u->gone)
        return;
    if (a->off < a->len) {
        size_t n = a->len - a->off < a->chunk ? a->len - a->off : a->chunk;
        bufferevent_write(u->bev, a->p + a->off, n);
        a->off += n;
    } else if (a->close_after && !a->shut &&
               evbuffer_get_length(bufferevent_get_output(u->bev)) == 0) {
        shutdown(bufferevent_getfd(u->bev), SHUT_WR);
        a->shut = 1;
    }
}

/* The answer is out (or cannot be written any more). */
static int fc_answer_done(const struct fc_answer *a)
{
    if (a->u == NULL)
        return 0;
    if (a->u->gone)
        return 1;
    return a->off == a->len && (!a->close_after || a->shut) &&
           evbuffer_get_length(bufferevent_get_output(a->u->bev)) == 0;
}

static void fc_up_read(struct bufferevent *bev, void *arg)
{
    struct fc_up *u = arg;
    struct fc_answer *a = u->r->ans;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t have = evbuffer_get_length(in);
    struct evbuffer_ptr end;
    static const char resp[] = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n"
                               "connection: close\r\n\r\n" FC_UP_BODY;

    if (u->answered || u->h2) {
        evbuffer_drain(in, have);
        return;
    }
    /* picket's h2c client (the /up2/ route): the preface, then frames */
    {
        size_t k = have < sizeof(fc_h2_preface) - 1 ? have : sizeof(fc_h2_preface) - 1;
        if (memcmp(evbuffer_pullup(in, (ssize_t)k), fc_h2_preface, k) == 0) {
            if (k < sizeof(fc_h2_preface) - 1)
                return; /* the rest of the preface is still to come */
            u->h2 = 1;
        }
    }
    if (!u->h2) {
        end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0) {
            /* picket writes a head in one piece; a partial head can only be
             * the start of one that has not arrived yet. */
            FUZZ_CHECK(have < 1024 * 1024);
            return;
        }
        fc_check_head(evbuffer_pullup(in, end.pos + 4), (size_t)end.pos + 4);
        fc.forwarded++;
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    if (a != NULL) {
        /* answer mode: the first connection with a request gets the answer,
         * later ones (a retry) are only drained */
        u->answered = 1;
        if (a->u == NULL) {
            a->u = u;
            fc_answer_pump(a);
        }
        return;
    }
    if (u->h2)
        return; /* default mode: no canned h2 answer; the input ends it */
    u->answered = 1;
    bufferevent_write(bev, resp, sizeof(resp) - 1);
}

static void fc_up_event(struct bufferevent *bev, short what, void *arg)
{
    struct fc_up *u = arg;
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        u->gone = 1;
}

static void fc_up_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                         int salen, void *arg)
{
    struct fc_run *r = arg;
    struct fc_up *u = calloc(1, sizeof(*u));
    int one = 1;
    (void)evl;
    (void)sa;
    (void)salen;
    FUZZ_CHECK(u != NULL);
    /* small answer chunks must leave as they are written, not coalesced */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    u->r = r;
    u->bev = bufferevent_socket_new(r->w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    FUZZ_CHECK(u->bev != NULL);
    bufferevent_setcb(u->bev, fc_up_read, NULL, fc_up_event, u);
    bufferevent_enable(u->bev, EV_READ | EV_WRITE);
    u->next = r->ups;
    r->ups = u;
}

/* ---- one input ----------------------------------------------------------- */

/* A fresh worker (its own event base) and the canned upstream's listener
 * on it. */
static void fc_begin(struct fc_run *r, struct fc_answer *ans)
{
    char err[256];
    struct px_worker *w = calloc(1, sizeof(*w));

    FUZZ_CHECK(w != NULL);
    w->base = event_base_new();
    FUZZ_CHECK(w->base != NULL);
    w->snap = px_snapshot_ref(fc.snap);
    w->policy = px_policy_state_ref(fc.pol);
    FUZZ_CHECK(px_worker_init_listeners(w, err, sizeof(err)) == 0);
    r->w = w;
    r->ans = ans;
    r->evl = evconnlistener_new(w->base, fc_up_accept, r, 0, -1, fc.up_fd);
    FUZZ_CHECK(r->evl != NULL);
}

/* The canned upstream first: px_worker_free() frees the event base. */
static void fc_end(struct fc_run *r)
{
    while (r->ups != NULL) {
        struct fc_up *u = r->ups;
        r->ups = u->next;
        bufferevent_free(u->bev);
        free(u);
    }
    evconnlistener_free(r->evl);
    px_worker_free(r->w);
    free(r->w);
}

/* The client's address, as the worker's accept would see it. */
static struct sockaddr_in fc_peer(void)
{
    struct sockaddr_in peer = {0};
    peer.sin_family = AF_INET;
    peer.sin_port = htons(40000);
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return peer;
}

static void fc_loop(struct fc_run *r, struct bufferevent *client, struct evbuffer *out, int n)
{
    for (int i = 0; i < n; i++) {
        event_base_loop(r->w->base, EVLOOP_NONBLOCK);
        if (r->ans != NULL)
            fc_answer_pump(r->ans);
        evbuffer_add_buffer(out, bufferevent_get_input(client));
    }
}

/* Runs one connection on listener li (0 inbound, 1 outbound): writes
 * data[0..size) as the client, `chunk` bytes per two loop turns (h2: after
 * the client preface). With `ans`, the canned upstream answers with its
 * bytes (answer mode, above). `out` gets everything picket wrote back. */
static void fc_run_conn(size_t li, size_t chunk, const uint8_t *data, size_t size, int h2,
                        struct fc_answer *ans, struct evbuffer *out)
{
    struct fc_run r = {0};
    struct px_worker *w;
    struct px_conn *c;
    struct bufferevent *pair[2];
    struct sockaddr_in peer = fc_peer();

    fc_setup();
    if (chunk == 0)
        chunk = size ? size : 1;
    fc_begin(&r, ans);
    w = r.w;
    /* the slot the worker's accept takes (px.h: px_conn_new); px_conn_free
     * gives it back */
    atomic_fetch_add(&px_conns_by_kind[PX_KIND_IS_OUTBOUND(w->snap->cfg->listeners[li].kind)], 1);
    c = px_conn_new(&w->listeners[li], (struct sockaddr *)&peer);
    FUZZ_CHECK(c != NULL);
    FUZZ_CHECK(bufferevent_pair_new(w->base, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS,
                                    pair) == 0);
    c->bev = pair[0];
    c->handshaken = 1;
    if (li == 0) {
        c->peer_id = strdup(FC_PEER_ID);
        FUZZ_CHECK(c->peer_id != NULL);
    }
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    if (h2)
        bufferevent_write(pair[1], fc_h2_preface, sizeof(fc_h2_preface) - 1);
    if ((h2 ? px_h2_conn_start(c) : px_h1_conn_start(c)) != 0)
        px_conn_free(c);

    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        bufferevent_write(pair[1], data + off, n);
        fc_loop(&r, pair[1], out, 2);
    }
    fc_loop(&r, pair[1], out, 12);
    if (ans != NULL) {
        /* One chunk per turn until the answer is out; bounded: 64 turns
         * for the request to arrive, then two per chunk (picket may stop
         * reading while its client is slow), then what picket needs to
         * pass the end of it on. */
        size_t cap = 64 + 2 * (ans->len / ans->chunk + 1) + 8;
        for (size_t i = 0; i < cap && !fc_answer_done(ans) && (ans->u != NULL || i < 64); i++)
            fc_loop(&r, pair[1], out, 1);
        fc_loop(&r, pair[1], out, 16);
    }
    /* The client half-closes, then goes away. */
    bufferevent_flush(pair[1], EV_WRITE, BEV_FINISHED);
    fc_loop(&r, pair[1], out, 6);
    bufferevent_free(pair[1]);
    fc_end(&r);
}

/* Bits 1-3 of an input's byte 0: how many bytes the client writes at a
 * time (0: the whole input), for fc_run() and fc_run_tls() alike, so that
 * fuzz_h2tls compares the two paths on the same writes. */
#ifndef FC_ANSWER_MODE_ONLY
static const size_t fc_chunks[8] = {0, 1, 2, 3, 7, 16, 100, 1000};
#endif

#ifdef FC_TLS /* defined (0 or 1) by fuzz_h2.c */
/* ---- over TLS (fuzz_h2tls.c) ----------------------------------------------
 *
 * The same client bytes, but over a real TLS connection: one end of a
 * socket pair goes through the worker's accept (px_worker_accept: the mTLS
 * handshake, the SVID check, then px_h2_conn_start, where the connection
 * takes its socket from libevent and reads it itself, proxy/http2/h2.c),
 * the other is an OpenSSL client in this thread with an SVID of
 * FC_PEER_ID. Each chunk is one SSL_write (a record, or several past
 * 16 KiB), so the input's chunking decides where records end. */

/* What the client can read now, into out: 0, or -1 once the connection is
 * gone (closed, close_notify, an error). */
static int fc_tls_read(SSL *s, struct evbuffer *out)
{
    unsigned char buf[16384];
    for (;;) {
        int n = SSL_read(s, buf, (int)sizeof(buf));
        int e;
        if (n > 0) {
            FUZZ_CHECK(evbuffer_add(out, buf, (size_t)n) == 0);
            continue;
        }
        e = SSL_get_error(s, n);
        ERR_clear_error();
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
}

static void fc_tls_loop(struct fc_run *r, SSL *s, int *gone, struct evbuffer *out, int n)
{
    for (int i = 0; i < n; i++) {
        event_base_loop(r->w->base, EVLOOP_NONBLOCK);
        if (!*gone && fc_tls_read(s, out) != 0)
            *gone = 1;
    }
}

/* p[0..n) in one SSL_write, retried while the socket is full. Picket may
 * stop reading: then the write gives up after a bounded number of turns
 * and sets *stuck (nothing more is written; what picket writes is still
 * read, so its output is not cut inside a frame). */
static void fc_tls_write(struct fc_run *r, SSL *s, int *gone, int *stuck, const void *p,
                         size_t n, struct evbuffer *out)
{
    for (int tries = 0; !*gone && !*stuck && n > 0; tries++) {
        int k = SSL_write(s, p, (int)n), e;
        if (k > 0)
            return; /* without SSL_MODE_ENABLE_PARTIAL_WRITE: all of it */
        e = SSL_get_error(s, k);
        ERR_clear_error();
        if ((e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) || tries == 64) {
            *stuck = 1;
            return;
        }
        fc_tls_loop(r, s, gone, out, 1);
    }
}

/* Runs one fuzz_h2tls input. Byte 0 of data: bit 0 = how the client ends
 * (0: close_notify, then FIN; 1: FIN alone), bits 1-3 = chunk size as in
 * fc_run(), bit 4 = instead, the whole rest 8 times over in one turn (16
 * KiB records: an input of 16 KiB or more passes the 128 KiB picket decodes
 * per connection and turn); the rest is what the client sends after the
 * preface. */
static void fc_run_tls(const uint8_t *data, size_t size, struct evbuffer *out)
{
    struct fc_run r = {0};
    struct sockaddr_in peer = fc_peer();
    size_t chunk;
    int sv[2], gone = 0, stuck = 0, hs = 0;
    SSL *s;

    fc_setup();
    if (size == 0)
        return;
    chunk = fc_chunks[(data[0] >> 1) & 7];
    if (chunk == 0)
        chunk = size > 1 ? size - 1 : 1;
    fc_begin(&r, NULL);
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    px_worker_accept(&r.w->listeners[0], sv[0], (struct sockaddr *)&peer, (int)sizeof(peer));
    FUZZ_CHECK((s = SSL_new(fc.cli_ctx)) != NULL && SSL_set_fd(s, sv[1]) == 1);
    SSL_set_connect_state(s);
    for (int i = 0; i < 64 && hs != 1; i++) {
        hs = SSL_do_handshake(s);
        if (hs != 1) {
            int e = SSL_get_error(s, hs);
            ERR_clear_error();
            FUZZ_CHECKF(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE,
                        "the TLS handshake failed (%d)", e);
            event_base_loop(r.w->base, EVLOOP_NONBLOCK);
        }
    }
    FUZZ_CHECKF(hs == 1, "the TLS handshake did not end in 64 turns");

    fc_tls_write(&r, s, &gone, &stuck, fc_h2_preface, sizeof(fc_h2_preface) - 1, out);
    if (data[0] & 0x10) {
        /* 8 times over, in records of 16 KiB, before picket's next turn */
        for (int rep = 0; rep < 8 && !gone && !stuck && size > 1; rep++)
            fc_tls_write(&r, s, &gone, &stuck, data + 1, size - 1, out);
    } else {
        for (size_t off = 1; off < size && !gone && !stuck; off += chunk) {
            size_t n = size - off < chunk ? size - off : chunk;
            fc_tls_write(&r, s, &gone, &stuck, data + off, n, out);
            fc_tls_loop(&r, s, &gone, out, 2);
        }
    }
    fc_tls_loop(&r, s, &gone, out, 12);
    /* The client ends, then goes away. */
    if (!gone && !stuck && !(data[0] & 1)) {
        SSL_shutdown(s);
        ERR_clear_error();
    }
    shutdown(sv[1], SHUT_WR);
    fc_tls_loop(&r, s, &gone, out, 6);
    SSL_free(s);
    close(sv[1]);
    fc_end(&r);
}
#endif /* FC_TLS */

#ifndef FC_ANSWER_MODE_ONLY /* fuzz_upstream.c has its own input layout and corpus check */

/* Runs one fuzz_h1/fuzz_h2 input. Byte 0 of data: bit 0 = listener (0
 * inbound, 1 outbound), bits 1-3 = chunk size (whole input, 1, 2, 3, 7,
 * 16, 100, 1000 bytes); the rest is what the client sends. */
static void fc_run(const uint8_t *data, size_t size, int h2, struct evbuffer *out)
{
    fc_setup();
    if (size == 0)
        return;
    fc_run_conn(data[0] & 1, fc_chunks[(data[0] >> 1) & 7], data + 1, size - 1, h2, NULL, out);
}

int fuzz_replay_done(size_t ninputs)
{
    fprintf(stderr, "fuzz_conn: over %zu inputs, %zu requests reached the upstream and %zu "
                    "answers reached the client\n",
            ninputs, fc.forwarded, fc.relayed);
    if (fc.forwarded == 0 || fc.relayed == 0) {
        fprintf(stderr, "fuzz_conn: invariant violated: %s over the whole corpus\n",
                fc.forwarded == 0 ? "no request was forwarded" : "no answer was relayed");
        return 1;
    }
    return 0;
}

#endif /* FC_ANSWER_MODE_ONLY */

#endif
