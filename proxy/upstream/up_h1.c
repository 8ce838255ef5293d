/*
 * up_h1.c - upstream HTTP/1.1: keep-alive connection pools per worker and
 * upstream, one exchange per connection at a time.
 *
 * A pool's idle connections hang off pool->conns (most recently used
 * first: the one least likely to have been closed by the server); a busy
 * connection belongs to its stream (st->up_ctx) until the exchange ends.
 * At most IDLE_MAX idle connections per pool are kept; an idle connection
 * the server closes, or that stays idle for IDLE_MS, is freed. The bound is
 * as high as Envoy's default connection limit per cluster, so a pool keeps
 * the connections its peak concurrency needed and, most recently used
 * first, the ones steady traffic no longer reaches time out: a cap below
 * the concurrency made every exchange beyond it a new connection (64 kept
 * made 40,016 connects for 50,000 requests at 320 in flight).
 *
 * The request is re-framed here, never passed through: we write
 * Content-Length when the length is known and chunked otherwise, from what
 * the downstream side checked. The response is parsed with http_parser;
 * field names and values are checked here too (the library is built
 * non-strict), and obs-fold is replaced by a space (RFC 9112 5.2 allows a
 * proxy that).
 *
 * Bounds: request bytes move from req_body to the socket only while the
 * output holds less than PX_H1_OUT_HIGH; response bytes are fed to the
 * parser only up to the room left in resp_body (limits.stream_buffer), so
 * resp_body never exceeds it, and the socket is not read meanwhile. One
 * field being received is bounded by limits.max_header_list_size.
 *
 * Calls from the downstream side (request_ready, response_drained) only
 * schedule work on c->kick. cancel() acts at once, as the stream requires;
 * if it lands while this file is inside its own callback (c->hold), the
 * connection is marked dead and freed when that callback unwinds (px.h).
 */
#include "upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <http_parser.h>

#include "fields.h"
#include "out.h"
#include "log.h"
#include "ws.h"

#define IDLE_MAX 1024    /* idle connections kept per pool */
#define IDLE_MS 30000    /* an idle connection is closed after this (or idle_timeout_ms) */

/* The connection's life. CONNECTING -> OPEN (carrying an exchange) <->
 * IDLE (in the pool's idle list) -> DEAD (closed while one of our own
 * callbacks was on the stack: freed when the outermost one unwinds). */
enum upc_life {
    UPC_CONNECTING,
    UPC_OPEN,
    UPC_IDLE,
    UPC_DEAD
};

/* The request of the current exchange. */
enum upc_req {
    UPC_REQ_HEAD, /* the head is not written yet */
    UPC_REQ_BODY, /* head written, body going */
    UPC_REQ_DONE  /* all of it written */
};

/* The response of the current exchange; interim (1xx) responses go
 * through HEAD and back to NONE. */
enum upc_resp {
    UPC_RESP_NONE, /* nothing of the (final) response yet */
    UPC_RESP_HEAD, /* a status line arrived: its fields are coming */
    UPC_RESP_BODY, /* the final head is complete: body (and trailers) */
    UPC_RESP_DONE  /* the message is complete */
};

struct up_conn {
    struct up_conn *next, *prev; /* pool idle list */
    struct px_pool *pool;
    struct px_worker *w;
    struct bufferevent *bev;
    struct px_mem_tracker trk_in, trk_out; /* its buffers, in the memory budget */
    struct event *kick;
    http_parser hp;
    struct px_stream *st; /* NULL when idle */
    enum upc_life life;
    struct px_hold hold; /* our callbacks on the stack (px.h) */
    int reused; /* it carried an exchange before this one */
    int eof;    /* the server closed its side */
    int eof_clean; /* ... with a FIN (plain) or a close_notify (TLS): px_up_bev_clean_eof */
    int64_t not_after; /* TLS: the server chain's earliest notAfter (Unix s), 0 = none */
    uint64_t snap_gen; /* the snapshot (trust, own SVID) it was made under */
    enum px_reason fail_reason; /* a failure to report from the kick callback */
    enum px_reason fail_why;    /* why the response was refused (else bad_upstream_response) */

    /* the exchange: where the request and the response are */
    enum upc_req req;
    enum upc_resp resp;
    int req_chunked, req_has_len, retried;
    uint64_t req_left, body_sent;
    int is_head, interim, hdrs_pending, body_pending, paused;
    int tunnel;  /* the upstream agreed to the WebSocket upgrade: bytes both ways (tunnel_step) */
    int out_eof; /* tunnel: the client's end was passed on (shutdown) */
    int cb_err;
    size_t limit;     /* max_header_list_size */
    size_t hdr_bytes; /* name + value + 32 of every response field, 1xx and trailers too */
    int ninterim;     /* 1xx responses received */

    /* the field being received: name bytes then value bytes */
    char *fb;
    size_t fb_len, fb_cap, fb_name;
    int fstate; /* 0 none, 1 name, 2 value */
};

static const struct px_up_ops up_ops;
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* ---- connection lifetime ------------------------------------------------- */

static void idle_unlink(struct up_conn *c)
{
    if (c->life != UPC_IDLE)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->pool->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    c->life = UPC_OPEN;
    c->pool->nidle--;
}

PX_NOINLINE static void conn_free(struct up_conn *c)
{
    idle_unlink(c);
    c->pool->nconns--;
    px_mem_untrack(&c->trk_in);
    px_mem_untrack(&c->trk_out);
    bufferevent_free(c->bev);
    event_free(c->kick);
    free(c->fb);
    free(c);
}

/* Ends the connection: freed now, or when the callback we are inside
 * unwinds (px_hold). */
static void conn_close(struct up_conn *c)
{
    idle_unlink(c);
    c->life = UPC_DEAD;
    c->st = NULL;
    if (px_hold_end(&c->hold))
        conn_free(c);
    else
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
}

/* Closes c after an exchange that ended whole, or with none in flight:
 * TLS says so with a close_notify (send.h). A cut exchange goes through
 * conn_close() alone: the server sees the bare close. */
static void conn_close_clean(struct up_conn *c)
{
    (void)px_tls_close_notify(c->bev);
    conn_close(c);
}

static void enter(struct up_conn *c)
{
    px_hold_enter(&c->hold);
}

static void leave(struct up_conn *c)
{
    if (px_hold_leave(&c->hold))
        conn_free(c);
}

static void kick(struct up_conn *c)
{
    if (c->life != UPC_DEAD)
        event_active(c->kick, EV_TIMEOUT, 0);
}

/* The exchange failed: detach first (so nothing calls cancel() on us while
 * the stream answers), then let the stream answer or abort. */
static void fail(struct up_conn *c, int status, enum px_reason reason)
{
    struct px_stream *st = c->st;
    int down_alive;
    c->st = NULL;
    conn_close(c);
    if (st == NULL)
        return;
    down_alive = !st->down_done;
    px_stream_up_done(st);
    if (down_alive)
        px_stream_upstream_failed(st, status, reason);
}

static void to_idle(struct up_conn *c)
{
    struct timeval tv;
    int64_t ms = c->w->snap->cfg->limits.idle_timeout_ms, now = (int64_t)time(NULL);
    /* A connection whose server certificate expired, or that was verified
     * under other trust, is not kept: it ends with its last exchange. */
    if (c->pool->nidle >= IDLE_MAX || c->w->draining ||
        (c->pool->tls && ((c->not_after > 0 && now >= c->not_after) ||
                          c->snap_gen != c->w->snap->gen))) {
        conn_close_clean(c);
        return;
    }
    if (ms <= 0 || ms > IDLE_MS)
        ms = IDLE_MS;
    if (c->pool->tls && c->not_after > 0 && (c->not_after - now) * 1000 < ms)
        ms = (c->not_after - now) * 1000; /* and an idle one closes when it expires */
    c->life = UPC_IDLE;
    c->reused = 1;
    c->next = c->pool->conns;
    c->prev = NULL;
    if (c->next)
        c->next->prev = c;
    c->pool->conns = c;
    c->pool->nidle++;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_enable(c->bev, EV_READ); /* to notice the server closing it */
}

/* ---- response parsing ----------------------------------------------------- */

static int fb_append(struct up_conn *c, const char *p, size_t n)
{
    if (c->fb_len + n > c->limit)
        return -1;
    if (c->fb_len + n > c->fb_cap) {
        size_t cap = c->fb_cap ? c->fb_cap : 256;
        char *nb;
        while (cap < c->fb_len + n)
            cap *= 2;
        if (cap > c->limit)
            cap = c->limit;
        nb = realloc(c->fb, cap);
        if (nb == NULL)
            return -1;
        c->fb = nb;
        c->fb_cap = cap;
    }
    memcpy(c->fb + c->fb_len, p, n);
    c->fb_len += n;
    return 0;
}

static int flush_field(struct up_conn *c)
{
    struct px_stream *st = c->st;
    const char *v;
    size_t vlen, nlen = c->fb_name;
    int rc = 0;
    if (c->fstate == 0)
        return 0; /* no field: c->fb may still be NULL, and NULL + 0 is UB */
    v = c->fb + c->fb_name;
    vlen = c->fb_len - c->fb_name;
    c->fstate = 0;
    px_ows_trim(&v, &vlen);
    /* every field the upstream sends counts, interim and trailer alike */
    c->hdr_bytes += nlen + vlen + 32;
    if (c->hdr_bytes > c->limit) {
        c->fail_why = PX_R_UPSTREAM_HEADERS_TOO_LARGE;
        rc = -1;
    } else if (!px_field_name_ok(c->fb, nlen) || !px_field_value_ok(v, vlen))
        rc = -1;
    else if (c->interim)
        rc = 0; /* 1xx fields are not relayed */
    else if (c->resp < UPC_RESP_BODY) {
        /* Framing stays here: the parser reads it, the stream gets the
         * length as resp_content_length. */
        if (!(nlen == 14 && strncasecmp(c->fb, "content-length", 14) == 0) &&
            !(nlen == 17 && strncasecmp(c->fb, "transfer-encoding", 17) == 0))
            rc = px_hdrs_add(&st->resp, c->fb, nlen, v, vlen, c->limit);
    } else {
        /* trailers: added (lowercased), then kept only if a trailer may
         * carry that field (request.h), the rule both directions share */
        rc = px_hdrs_add(&st->resp_trailers, c->fb, nlen, v, vlen, c->limit);
        if (rc == 0 && !px_trailer_allowed(st->resp_trailers.v[st->resp_trailers.n - 1].name,
                                           nlen))
            px_hdrs_remove_at(&st->resp_trailers, st->resp_trailers.n - 1);
    }
    c->fb_len = c->fb_name = 0;
    return rc;
}

static int on_message_begin(http_parser *p)
{
    struct up_conn *c = p->data;
    c->resp = UPC_RESP_HEAD;
    c->interim = 0;
    c->fstate = 0;
    c->fb_len = c->fb_name = 0;
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    struct up_conn *c = p->data;
    if (c->fstate == 2 && flush_field(c) != 0)
        return c->cb_err = -1;
    if (c->fstate == 0) {
        c->fb_len = c->fb_name = 0;
        c->fstate = 1;
    }
    if (fb_append(c, at, n) != 0)
        return c->cb_err = -1;
    c->fb_name = c->fb_len;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    struct up_conn *c = p->data;
    /* A value arriving in several callbacks is either split across reads
     * or obs-folded (the continuation starts with its whitespace, without
     * the CRLF): concatenating gives the folded value with SP, as RFC 9112
     * 5.2 allows a proxy to forward it. */
    c->fstate = 2;
    if (fb_append(c, at, n) != 0)
        return c->cb_err = -1;
    return 0;
}

/* A 101 to our WebSocket opening request (RFC 6455 4.1, the client's
 * checks): Upgrade websocket, Connection upgrade, and the
 * Sec-WebSocket-Accept for the key we sent. */
static int ws_answer_ok(const struct px_stream *st)
{
    const struct px_hdr *up = px_hdrs_get(&st->resp, "upgrade");
    const struct px_hdr *acc = px_hdrs_get(&st->resp, "sec-websocket-accept");
    char want[PX_WS_ACCEPT_LEN + 1];
    int conn = 0;
    for (size_t i = 0; i < st->resp.n; i++)
        if (st->resp.v[i].nlen == 10 && memcmp(st->resp.v[i].name, "connection", 10) == 0)
            conn |= px_list_has_token(st->resp.v[i].value, st->resp.v[i].vlen, "upgrade");
    return conn && up != NULL && px_list_has_token(up->value, up->vlen, "websocket") &&
           acc != NULL && st->rq.ws_key != NULL &&
           px_ws_accept(st->rq.ws_key, st->rq.ws_key_len, want) == 0 &&
           acc->vlen == PX_WS_ACCEPT_LEN && memcmp(acc->value, want, PX_WS_ACCEPT_LEN) == 0;
}

static int on_headers_complete(http_parser *p)
{
    struct up_conn *c = p->data;
    struct px_stream *st = c->st;
    int s = p->status_code;

    if (flush_field(c) != 0)
        return c->cb_err = -1;
    if (s < 100 || s > 599)
        return c->cb_err = -1; /* RFC 9110 15: not a status a client can be given */
    if (s == 101) {
        /* Only the answer to a WebSocket opening request we sent, and only
         * a correct one: anything else is not a protocol we asked for. */
        if (!st->rq.upgrade || !ws_answer_ok(st))
            return c->cb_err = -1;
        c->tunnel = 1;
        c->resp = UPC_RESP_BODY;
        c->hdrs_pending = 1;
        return 1; /* what follows the head is the tunnel's */
    }
    if (s < 200) {
        /* 100-continue, 102, 103: skipped. A few interim responses are
         * normal; an endless stream of them is not. */
        if (++c->ninterim > 16)
            return c->cb_err = -1;
        c->interim = 1;
        return 1;
    }
    c->resp = UPC_RESP_BODY;
    c->hdrs_pending = 1;
    st->status = s;
    if ((p->flags & F_CHUNKED) || p->uses_transfer_encoding || !(p->flags & F_CONTENTLENGTH))
        st->resp_content_length = -1;
    else
        st->resp_content_length = (int64_t)p->content_length;
    return c->is_head || s == 204 || s == 304 ? 1 : 0; /* 1: no body follows */
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct up_conn *c = p->data;
    if (evbuffer_add(c->st->resp_body, at, n) != 0)
        return c->cb_err = -1;
    c->body_pending = 1;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct up_conn *c = p->data;
    if (flush_field(c) != 0) /* last trailer */
        return c->cb_err = -1;
    if (c->tunnel) {
        http_parser_pause(p, 1); /* the rest is the tunnel's, never parsed */
        return 0;
    }
    if (c->interim) {
        c->interim = 0;
        c->resp = UPC_RESP_NONE; /* the final response is still to come */
        px_hdrs_clear(&c->st->resp);
        return 0;
    }
    c->resp = UPC_RESP_DONE;
    http_parser_pause(p, 1); /* nothing after this message is ours to parse */
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Hands what the parser produced to the stream, outside the parser's
 * callbacks. Returns 0, or -1 if the exchange is gone meanwhile. */
static int deliver(struct up_conn *c)
{
    struct px_stream *st = c->st;
    if (c->hdrs_pending) {
        c->hdrs_pending = 0;
        if (c->tunnel)
            px_stream_tunnel_open(st);
        else
            px_stream_response_headers(st);
        if (c->st != st)
            return -1;
    }
    if (c->body_pending) {
        c->body_pending = 0;
        if (st->down != NULL)
            st->down->response_ready(st);
        if (c->st != st)
            return -1;
    }
    return 0;
}

/* The response is complete: detach (the stream is then the downstream's
 * alone), and keep the connection if it can carry another exchange. */
static void complete(struct up_conn *c)
{
    struct px_stream *st = c->st;
    /* not after an upgrade the server refused: it may not agree with us
     * on what the connection carries now */
    int reuse = http_should_keep_alive(&c->hp) && c->req == UPC_REQ_DONE && !c->eof &&
                !st->rq.upgrade && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0;
    int down_alive = !st->down_done;
    c->st = NULL;
    st->resp_eof = 1;
    px_stream_up_done(st);
    if (down_alive && st->down != NULL)
        st->down->response_ready(st);
    if (reuse && c->life != UPC_DEAD) {
        c->req = UPC_REQ_HEAD;
        c->resp = UPC_RESP_NONE;
        to_idle(c);
    } else {
        conn_close_clean(c);
    }
}

static void tunnel_step(struct up_conn *c);

/* Reads no further ahead of the response's client than it can take now
 * (room: px_stream_resp_room), and at most a loop turn's worth. */
static void read_ahead(struct up_conn *c, size_t room)
{
    bufferevent_setwatermark(c->bev, EV_READ, 0,
                             room < 4096 ? 4096 : room > PX_H1_IN_HIGH ? PX_H1_IN_HIGH : room);
}

static void parse_input(struct up_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->st != NULL && c->resp != UPC_RESP_DONE && evbuffer_get_length(in) > 0) {
        if (c->tunnel) {
            tunnel_step(c);
            return;
        }
        struct px_stream *st = c->st;
        /* room under the stream bound, the client's window and the memory
         * budget (px_stream_resp_room) */
        size_t room = px_stream_resp_room(st), n, used;
        struct evbuffer_iovec v;
        enum http_errno e;

        if (room == 0) {
            /* stop reading until the downstream drains (or takes more) */
            c->paused = 1;
            bufferevent_disable(c->bev, EV_READ);
            return;
        }
        read_ahead(c, room);
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        /* Feed at most the room left, so body bytes never overshoot it. */
        n = v.iov_len < room ? v.iov_len : room;
        used = http_parser_execute(&c->hp, &resp_settings, v.iov_base, n);
        e = HTTP_PARSER_ERRNO(&c->hp);
        evbuffer_drain(in, used);
        if (c->cb_err || (e != HPE_OK && e != HPE_PAUSED) || (e == HPE_OK && used < n && !c->tunnel)) {
            fail(c, 502, c->fail_why != PX_R_NONE ? c->fail_why : PX_R_BAD_UPSTREAM_RESPONSE);
            return;
        }
        if (deliver(c) != 0)
            return;
    }
    if (c->st == NULL)
        return;
    if (c->tunnel) {
        tunnel_step(c); /* the upstream's EOF, or bytes left behind the 101 */
        return;
    }
    if (c->resp != UPC_RESP_DONE && c->eof && evbuffer_get_length(in) == 0 && !c->paused) {
        /* A clean EOF ends a close-delimited body; any other end (a reset,
         * a TLS close without close_notify), or one before the body's
         * length, means the response was cut. */
        if (c->resp >= UPC_RESP_HEAD && c->eof_clean) {
            http_parser_execute(&c->hp, &resp_settings, NULL, 0);
            if (!c->cb_err && deliver(c) != 0)
                return;
        }
        if (c->resp != UPC_RESP_DONE) {
            fail(c, 502, PX_R_UPSTREAM_RESET);
            return;
        }
    }
    if (c->resp == UPC_RESP_DONE)
        complete(c);
}

/* ---- request writing ----------------------------------------------------- */

static int str_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return 0;
    return 1;
}

/* The fields are the canonical request's (request.h): already filtered,
 * and exactly what the policy saw. The checks here are a second line that
 * can only drop what no request may carry as HTTP/1.1 bytes; they never
 * fire for a request that went through px_request_build() (fuzz_request
 * checks that the forwarded fields equal the canonical ones). */
static void write_fields(struct px_out *out, const struct px_hdrs *hs, int trailers, int *has_te,
                         int upgrade)
{
    for (size_t i = 0; i < hs->n; i++) {
        const struct px_hdr *f = &hs->v[i];
        int te = f->nlen == 2 && memcmp(f->name, "te", 2) == 0;
        /* a WebSocket's canonical "upgrade: websocket" is HTTP/1.1's own form */
        int up = upgrade && !trailers && f->nlen == 7 && memcmp(f->name, "upgrade", 7) == 0;
        if (!px_field_name_ok(f->name, f->nlen) || !px_field_value_ok(f->value, f->vlen) ||
            strcmp(f->name, "host") == 0 || strcmp(f->name, "content-length") == 0 ||
            (px_is_hop_by_hop(f->name, f->nlen) && !(te && !trailers) && !up) ||
            (trailers && !px_trailer_allowed(f->name, f->nlen)))
            continue;
        if (te && has_te)
            *has_te = 1;
        px_out_add(out, f->name, f->nlen);
        px_out_add(out, ": ", 2);
        px_out_add(out, f->value, f->vlen);
        px_out_add(out, "\r\n", 2);
    }
}

static int method_has_body_semantics(const char *m)
{
    return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "DELETE") != 0 &&
           strcmp(m, "OPTIONS") != 0 && strcmp(m, "TRACE") != 0;
}

int px_h1_write_request_head(struct evbuffer *buf, const struct px_request *rq, int chunked,
                             uint64_t len)
{
    struct px_out o = px_out_to(buf), *out = &o;
    int has_te = 0;

    /* Defensive: whatever the downstream protocol allowed, nothing that
     * could split the request line reaches the upstream. */
    if (!rq->built || !str_ok(rq->method) || !str_ok(rq->target) || !str_ok(rq->authority) ||
        rq->target[0] != '/')
        return -1;
    px_out_add(out, rq->method, rq->method_len);
    px_out_add(out, " ", 1);
    px_out_add(out, rq->target, rq->target_len);
    px_out_add(out, " HTTP/1.1\r\nHost: ", 17);
    px_out_add(out, rq->authority, rq->authority_len);
    px_out_add(out, "\r\n", 2);
    write_fields(out, &rq->hdrs, 0, &has_te, rq->upgrade);
    if (rq->upgrade) {
        /* RFC 6455 4.1: "upgrade: websocket" went with the fields; an
         * HTTP/2 client's WebSocket gets picket's key */
        if (rq->ws_key != NULL && px_hdrs_get(&rq->hdrs, "sec-websocket-key") == NULL) {
            px_out_add(out, "Sec-WebSocket-Key: ", 19);
            px_out_add(out, rq->ws_key, rq->ws_key_len);
            px_out_add(out, "\r\n", 2);
        }
        px_out_add(out, has_te ? "Connection: Upgrade, te\r\n" : "Connection: Upgrade\r\n",
                   has_te ? 25 : 21);
    } else if (has_te) {
        px_out_add(out, "Connection: te\r\n", 16); /* RFC 9110 10.1.4 */
    }
    if (chunked)
        px_out_add(out, "Transfer-Encoding: chunked\r\n", 28);
    else if (len > 0 || method_has_body_semantics(rq->method))
        px_out_printf(out, "Content-Length: %llu\r\n", (unsigned long long)len);
    /* else: an empty body on GET and friends carries no framing at all
     * (RFC 9110 8.6: no Content-Length where the method gives none meaning) */
    px_out_add(out, "\r\n", 2);
    return out->failed ? -2 : 0;
}

static void write_head(struct up_conn *c, struct evbuffer *out)
{
    struct px_stream *st = c->st;

    if (st->rq.upgrade && st->rq.ws_key == NULL) {
        /* an HTTP/2 client's WebSocket: the HTTP/1.1 handshake needs a key,
         * ours, kept with the request to check the answer against */
        char key[PX_WS_KEY_LEN + 1];
        if (px_ws_key_new(key) != 0 ||
            (st->rq.ws_key = px_hdrs_strdup(&st->rq.hdrs, key, PX_WS_KEY_LEN)) == NULL) {
            fail(c, 503, PX_R_OUT_OF_MEMORY);
            return;
        }
        st->rq.ws_key_len = PX_WS_KEY_LEN;
    }

    if (st->rq.content_length >= 0) {
        c->req_has_len = 1;
        c->req_left = (uint64_t)st->rq.content_length;
    } else if (st->req_eof && st->rq.trailers.n == 0) {
        c->req_has_len = 1;
        c->req_left = evbuffer_get_length(st->req_body);
    } else {
        c->req_chunked = 1;
    }
    switch (px_h1_write_request_head(out, &st->rq, c->req_chunked, c->req_left)) {
    case 0:
        break;
    case -1:
        fail(c, 400, PX_R_UNSAFE_REQUEST);
        return;
    default: /* out of memory: the connection goes with the half-written head */
        fail(c, 503, PX_R_OUT_OF_MEMORY);
        return;
    }
    c->req = UPC_REQ_BODY;
}

/* The request's next bytes into out: the bufferevent's output, or the
 * worker's stage (pump_request). */
static void pump_into(struct up_conn *c, struct evbuffer *out)
{
    struct px_stream *st = c->st;
    struct px_out o = px_out_to(out);

    if (c->req == UPC_REQ_DONE)
        return;
    if (c->req == UPC_REQ_HEAD) {
        write_head(c, out);
        if (c->st != st)
            return;
        if (st->rq.upgrade) {
            /* the GET is all of the request; what the client sends goes
             * only once the upstream agreed to the tunnel */
            c->req = UPC_REQ_DONE;
            return;
        }
    }
    while (evbuffer_get_length(out) < PX_H1_OUT_HIGH) {
        size_t n = evbuffer_get_length(st->req_body), room = PX_H1_OUT_HIGH -
                                                             evbuffer_get_length(out);
        if (n == 0)
            break;
        if (c->req_has_len && n > c->req_left) {
            fail(c, 400, PX_R_REQUEST_LENGTH_MISMATCH);
            return;
        }
        if (n > room)
            n = room;
        if (c->req_chunked)
            px_out_printf(&o, "%zx\r\n", n);
        px_out_move(&o, st->req_body, n);
        if (c->req_chunked)
            px_out_add(&o, "\r\n", 2);
        if (o.failed) {
            fail(c, 503, PX_R_OUT_OF_MEMORY);
            return;
        }
        c->req_left -= c->req_has_len ? n : 0;
        c->body_sent += n;
        px_stream_request_sent(st, n); /* progress, and room downstream */
        if (c->st != st)
            return;
    }
    if (!st->req_eof || evbuffer_get_length(st->req_body) > 0)
        return;
    if (c->req_has_len && c->req_left != 0) {
        fail(c, 400, PX_R_REQUEST_LENGTH_MISMATCH);
        return;
    }
    if (c->req_chunked) {
        px_out_add(&o, "0\r\n", 3);
        write_fields(&o, &st->rq.trailers, 1, NULL, 0);
        px_out_add(&o, "\r\n", 2);
        if (o.failed) {
            fail(c, 503, PX_R_OUT_OF_MEMORY);
            return;
        }
    }
    c->req = UPC_REQ_DONE;
}

/* Writes the request's next bytes. libevent writes a bufferevent's output
 * when epoll says the socket is writable: bytes added in one turn cost an
 * epoll_ctl to watch for writability, a turn, the write, and an epoll_ctl
 * to stop watching, twice per exchange on a keep-alive connection. So when
 * nothing waits in the output (order holds), the bytes are gathered in the
 * worker's stage and px_send_buffer writes them at once (plaintext, or TLS
 * records); only what the socket does not take goes to the output, and
 * libevent's usual path writes it. A failed write is left for libevent to
 * meet on its own attempt (the bytes are queued), so a broken connection
 * ends through the same event and reason as before. */
static void pump_request(struct up_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev), *stage;

    if (c->st == NULL || c->life == UPC_CONNECTING)
        return;
    if (c->tunnel) {
        tunnel_step(c);
        return;
    }
    if ((stage = px_worker_stage(c->w, out)) == NULL) {
        pump_into(c, out);
        return;
    }
    for (;;) {
        pump_into(c, stage);
        if (c->life != UPC_OPEN) { /* the exchange failed meanwhile: closed */
            evbuffer_drain(stage, evbuffer_get_length(stage));
            return;
        }
        if (evbuffer_get_length(stage) == 0)
            return;
        if (px_send_buffer(c->bev, stage) != 0) {
            evbuffer_drain(stage, evbuffer_get_length(stage));
            fail(c, 503, PX_R_OUT_OF_MEMORY); /* a cut request: the connection goes */
            return;
        }
        /* the socket took a stage's worth: no write callback will come
         * for it, so the rest of the body follows here */
        if (evbuffer_get_length(out) > 0 || c->req == UPC_REQ_DONE || c->st == NULL)
            return;
    }
}

/* ---- the WebSocket tunnel ---------------------------------------------------- */

/* After the 101: bytes both ways as they are, each way bounded like a body
 * (resp_body by px_stream_resp_room, the socket output by PX_H1_OUT_HIGH);
 * the client's end becomes our shutdown of the write side once all its
 * bytes are out, the upstream's EOF the response's end. The upstream side
 * is done when both ends are through. */
static void tunnel_step(struct up_conn *c)
{
    struct px_stream *st = c->st;
    struct evbuffer *in = bufferevent_get_input(c->bev), *out = bufferevent_get_output(c->bev);
    size_t n, room;
    int news = 0;

    room = px_stream_resp_room(st);
    n = evbuffer_get_length(in);
    if (n > room)
        n = room;
    if (n > 0) {
        if (evbuffer_remove_buffer(in, st->resp_body, n) != (int)n) {
            fail(c, 502, PX_R_OUT_OF_MEMORY);
            return;
        }
        px_stream_up_activity(st);
        news = 1;
    }
    if (evbuffer_get_length(in) > 0) {
        c->paused = 1; /* until the downstream drains: kick_cb reads on */
        bufferevent_disable(c->bev, EV_READ);
    } else if (!c->eof) {
        c->paused = 0;
        bufferevent_setwatermark(c->bev, EV_READ, 0, PX_H1_OUT_HIGH);
        bufferevent_enable(c->bev, EV_READ);
    } else if (!st->resp_eof) {
        st->resp_eof = 1;
        news = 1;
    }
    while (evbuffer_get_length(out) < PX_H1_OUT_HIGH && (n = evbuffer_get_length(st->req_body)) > 0) {
        struct evbuffer *stage = px_worker_stage(c->w, out);
        room = PX_H1_OUT_HIGH - evbuffer_get_length(out);
        if (n > room)
            n = room;
        if (stage != NULL) {
            /* nothing waits: to the socket in this turn, as pump_request does */
            if (evbuffer_remove_buffer(st->req_body, stage, n) != (int)n ||
                px_send_buffer(c->bev, stage) != 0) {
                evbuffer_drain(stage, evbuffer_get_length(stage));
                fail(c, 502, PX_R_OUT_OF_MEMORY);
                return;
            }
        } else if (evbuffer_remove_buffer(st->req_body, out, n) != (int)n) {
            fail(c, 502, PX_R_OUT_OF_MEMORY);
            return;
        }
        px_stream_request_sent(st, n); /* progress, and room downstream */
        if (c->st != st)
            return;
    }
    if (px_stream_in_eof(st) && evbuffer_get_length(st->req_body) == 0 && !c->out_eof) {
        if (evbuffer_get_length(out) == 0) {
            c->out_eof = 1;
            if (!c->pool->tls)
                shutdown(bufferevent_getfd(c->bev), SHUT_WR);
            /* over TLS the WebSocket's own close frames end it */
        } else {
            bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0); /* write callback when empty */
        }
    }
    if (news && st->down != NULL)
        st->down->response_ready(st);
    if (c->st != st)
        return;
    if (st->resp_eof && c->out_eof) {
        c->st = NULL;
        px_stream_up_done(st);
        conn_close_clean(c);
    }
}

/* ---- connecting, retrying ------------------------------------------------ */

static void attach(struct up_conn *c, struct px_stream *st)
{
    c->st = st;
    c->req = UPC_REQ_HEAD;
    c->resp = UPC_RESP_NONE;
    c->req_chunked = c->req_has_len = 0;
    c->req_left = c->body_sent = 0;
    c->interim = c->hdrs_pending = c->body_pending = 0;
    c->paused = c->cb_err = c->eof = c->eof_clean = 0;
    c->tunnel = c->out_eof = 0;
    c->fstate = 0;
    c->fb_len = c->fb_name = 0;
    c->limit = (size_t)PX_LIMITS(st)->max_header_list_size;
    c->hdr_bytes = 0;
    c->ninterim = 0;
    c->fail_why = PX_R_NONE;
    if (c->limit == 0)
        c->limit = 65536; /* 0 would mean "no limit": never unbounded here */
    c->retried = 0;
    c->is_head = st->rq.method != NULL && strcmp(st->rq.method, "HEAD") == 0;
    http_parser_init(&c->hp, HTTP_RESPONSE);
    c->hp.data = c;
    st->up = &up_ops;
    st->up_ctx = c;
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    /* a new exchange reads ahead of its own client, not the last one's */
    read_ahead(c, px_stream_resp_room(st));
    /* EV_WRITE stays enabled between exchanges: enabling it again would
     * watch an empty output for writability (two epoll_ctl, a turn) */
    bufferevent_enable(c->bev, (bufferevent_get_enabled(c->bev) & EV_WRITE) ? EV_READ
                                                                           : EV_READ | EV_WRITE);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg);
static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);

/* A new connection to the pool's address; the connect result arrives as
 * an event. On an immediate failure the reason is reported from the kick. */
static struct up_conn *conn_new(struct px_worker *w, struct px_pool *pool, struct px_stream *st)
{
    struct up_conn *c = calloc(1, sizeof(*c));
    int one = 1;
    if (c == NULL)
        return NULL;
    c->w = w;
    c->pool = pool;
    c->snap_gen = w->snap->gen;
    c->bev = px_up_bev_new(w, pool);
    c->kick = event_new(w->base, -1, 0, kick_cb, c);
    if (c->bev == NULL || c->kick == NULL ||
        px_mem_track(&c->trk_in, bufferevent_get_input(c->bev), PX_MEM_SOCKETS, NULL) != 0 ||
        px_mem_track(&c->trk_out, bufferevent_get_output(c->bev), PX_MEM_SOCKETS, NULL) != 0) {
        px_mem_untrack(&c->trk_in);
        if (c->bev)
            bufferevent_free(c->bev);
        if (c->kick)
            event_free(c->kick);
        free(c);
        return NULL;
    }
    pool->nconns++;
    bufferevent_setcb(c->bev, read_cb, write_cb, conn_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, PX_H1_OUT_LOW, 0);
    attach(c, st); /* sets the read watermark */
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&pool->addr, (int)pool->addrlen) !=
        0) {
        c->fail_reason = errno == ECONNREFUSED ? PX_R_CONNECT_REFUSED : PX_R_CONNECT_FAILED;
        kick(c);
        return c;
    }
    setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return c;
}

/* A reused connection that failed before any response byte, for a request
 * without a body that may be replayed (RFC 9110 9.2.2): the server most
 * likely closed it just as we sent. Retried once, on a new connection. */
static int try_retry(struct up_conn *c)
{
    struct px_stream *st = c->st;
    struct up_conn *nc;
    if (!c->reused || c->retried || c->resp >= UPC_RESP_HEAD || c->body_sent > 0 || !st->req_eof ||
        evbuffer_get_length(st->req_body) > 0 || st->rq.trailers.n > 0 ||
        !px_method_idempotent(st->rq.method))
        return 0;
    c->st = NULL;
    conn_close(c);
    nc = conn_new(st->w, c->pool, st);
    if (nc == NULL) {
        int down_alive = !st->down_done;
        px_stream_up_done(st);
        if (down_alive)
            px_stream_upstream_failed(st, 502, PX_R_CONNECT_FAILED);
        return 1;
    }
    nc->retried = 1;
    return 1;
}

/* ---- callbacks ------------------------------------------------------------ */

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct up_conn *c = arg;
    (void)bev;
    enter(c);
    if (what & BEV_EVENT_CONNECTED) {
        c->life = UPC_OPEN;
        if (c->pool->tls)
            c->not_after = px_up_bev_not_after(c->bev);
        if (c->st == NULL)
            conn_close(c);
        else
            pump_request(c);
    } else if (c->st == NULL) {
        /* idle: closed by the server, error, or idle timeout */
        if (what & BEV_EVENT_ERROR)
            conn_close(c);
        else
            conn_close_clean(c);
    } else if (c->life == UPC_CONNECTING) {
        int err = EVUTIL_SOCKET_ERROR();
        enum px_reason tls_reason = px_up_bev_fail_reason(c->bev);
        fail(c, 502, tls_reason != PX_R_NONE     ? tls_reason
                     : err == ECONNREFUSED ? PX_R_CONNECT_REFUSED
                                           : PX_R_CONNECT_FAILED);
    } else if (c->tunnel && (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) &&
               !px_up_bev_clean_eof(c->bev, what)) {
        /* a reset, or a TLS close without close_notify: the client's
         * tunnel is cut off too (a clean end is passed on as one) */
        fail(c, 502, PX_R_UPSTREAM_RESET);
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        c->eof = 1;
        c->eof_clean = px_up_bev_clean_eof(c->bev, what);
        if (c->resp == UPC_RESP_NONE && try_retry(c)) {
            /* retried on a new connection */
        } else if (c->resp == UPC_RESP_NONE) {
            fail(c, 502, PX_R_UPSTREAM_RESET);
        } else {
            px_stream_up_activity(c->st);
            parse_input(c); /* may end a close-delimited body */
        }
    }
    leave(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct up_conn *c = arg;
    enter(c);
    if (c->st == NULL) {
        conn_close(c); /* bytes on an idle connection: nothing we asked for */
    } else {
        if (!c->paused)
            px_up_read_more(bev, c->pool, PX_UP_READ_MORE);
        px_stream_up_activity(c->st);
        parse_input(c);
    }
    leave(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct up_conn *c = arg;
    (void)bev;
    enter(c);
    pump_request(c);
    leave(c);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct up_conn *c = arg;
    (void)fd;
    (void)what;
    enter(c);
    if (c->fail_reason != PX_R_NONE) {
        enum px_reason r = c->fail_reason;
        c->fail_reason = PX_R_NONE;
        fail(c, 502, r);
    } else if (c->st != NULL) {
        pump_request(c);
        if (c->st != NULL && c->paused && px_stream_resp_room(c->st) > 0) {
            c->paused = 0;
            if (!c->eof)
                bufferevent_enable(c->bev, EV_READ);
            parse_input(c); /* what was left in the input when we paused */
        }
    }
    leave(c);
}

/* ---- up ops ---------------------------------------------------------------- */

static void op_request_ready(struct px_stream *st)
{
    struct up_conn *c = st->up_ctx;
    if (c != NULL && c->st == st)
        kick(c);
}

static void op_response_drained(struct px_stream *st, size_t n)
{
    struct up_conn *c = st->up_ctx;
    (void)n;
    if (c != NULL && c->st == st)
        kick(c);
}

static void op_cancel(struct px_stream *st)
{
    struct up_conn *c = st->up_ctx;
    /* The exchange cannot be complete here (complete() detaches first), so
     * the connection is mid-message: it cannot be reused. */
    if (c != NULL && c->st == st) {
        c->st = NULL;
        conn_close(c);
    }
    st->up_ctx = NULL;
    px_stream_up_done(st);
}

static const struct px_up_ops up_ops = {
    .request_ready = op_request_ready,
    .response_drained = op_response_drained,
    .cancel = op_cancel,
};

/* ---- entry points ----------------------------------------------------------- */

void px_up_h1_start(struct px_worker *w, struct px_pool *pool, struct px_stream *st)
{
    struct up_conn *c;
    /* An idle TLS connection whose server certificate expired, or that was
     * verified under other trust (or with our old SVID), is not reused. */
    while ((c = pool->conns) != NULL && pool->tls &&
           ((c->not_after > 0 && (int64_t)time(NULL) >= c->not_after) ||
            c->snap_gen != w->snap->gen))
        conn_close_clean(c);
    if (c != NULL) {
        idle_unlink(c);
        attach(c, st);
        kick(c); /* write from our own callback, not the dispatcher's stack */
        return;
    }
    c = conn_new(w, pool, st);
    if (c == NULL)
        px_stream_up_fail(st, 502, PX_R_CONNECT_FAILED);
}

void px_up_h1_pool_free(struct px_pool *pool)
{
    /* Only idle connections are the pool's; busy ones went with their
     * streams when the worker closed its downstream connections. */
    while (pool->conns != NULL)
        conn_close(pool->conns);
}
