/*
 * h1.c - downstream HTTP/1.1 (and 1.0): one request at a time per
 * connection, keep-alive, pipelined requests wait their turn in the input
 * buffer.
 *
 * This file owns the connection: its timers, refusals, the response, the
 * close (and linger) and the libevent callbacks. Reading requests (the
 * header pre-scan, the head checks and body framing that keep request
 * smuggling out) is h1_request.c; struct px_h1, which both share, is in
 * h1_int.h.
 *
 * Calls from the other side of a stream (response_ready, request_drained,
 * abort) only schedule work on h->kick; everything runs from this
 * connection's own callbacks, so a caller never sees the connection or the
 * stream freed under its stack (the rule h2.c follows too).
 *
 * Memory: input is capped by a read watermark just above the header block
 * bound; req_body by limits.stream_buffer (the socket is not read while it
 * is full); output by PX_H1_OUT_HIGH (response bytes move only when there
 * is room and continue from the write callback).
 */
#include "h1_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "fields.h"
#include "out.h"
#include "log.h"
#include "ws.h"

#define REQ_LINE_MAX 8192     /* request line allowance on top of max_header_list_size */
#define LINGER_MS 2000        /* read-and-discard after a refusal, so the client sees it */

/* ---- field syntax (shared with up_h1.c) -------------------------------- */

/* ---- timers and scheduling -------------------------------------------- */

void px_h1_arm(struct px_h1 *h, enum tm_mode m, int64_t ms)
{
    struct timeval tv;
    h->tm = m;
    if (ms <= 0) {
        evtimer_del(h->timer);
        return;
    }
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    evtimer_add(h->timer, &tv);
}

void px_h1_disarm(struct px_h1 *h)
{
    h->tm = TM_NONE;
    evtimer_del(h->timer);
}

static void kick(struct px_h1 *h)
{
    event_active(h->kick, EV_TIMEOUT, 0);
}

/* Frees the connection. An exchange still attached is cancelled first. */
static void h1_free(struct px_h1 *h)
{
    struct px_conn *c = h->c;
    struct px_stream *st = h->st;
    if (st != NULL) {
        h->st = NULL;
        if (st->up != NULL)
            st->up->cancel(st);
        px_stream_down_done(st);
    }
    event_free(h->timer);
    event_free(h->kick);
    c->proto_ctx = NULL;
    free(h);
    px_conn_free(c);
}

/* Refuses the current request: 400/408/431/505 with Connection: close,
 * through a stream so it is logged and counted like any other answer. */
void px_h1_refuse(struct px_h1 *h, int status, enum px_reason reason)
{
    struct px_stream *st = h->st;
    const char *body = status == 431   ? "request header fields too large\n"
                       : status == 408 ? "request timeout\n"
                       : status == 505 ? "http version not supported\n"
                                       : "bad request\n";
    px_log(PX_LOG_INFO, "h1_request_refused", "peer", h->c->peer_addr, "reason",
           px_reason_name(reason), NULL);
    h->close_after = 1;
    h->rq = RQ_DEAD;
    if (st == NULL) {
        st = px_stream_new(h->c, &px_h1_ops, h);
        if (st == NULL) {
            h->closing = 1;
            return;
        }
        h->st = st;
        h->resp_ready_seen = h->resp_started = h->resp_done = 0;
    } else if (st->status != 0) {
        /* An answer is already on its way: cut it off if it started,
         * else let it go out and close after it. */
        if (h->resp_started)
            h->abort_pending = 1;
        kick(h);
        return;
    }
    if (st->up != NULL)
        st->up->cancel(st); /* the upstream saw part of a request we now refuse */
    px_stream_respond(st, status, body, PX_GRPC_NONE, reason);
}

/* ---- response ---------------------------------------------------------- */

static const char *reason_phrase(int s)
{
    switch (s) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 101: return "Switching Protocols";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

static void write_fields(struct px_out *out, const struct px_hdrs *hs, int trailers)
{
    for (size_t i = 0; i < hs->n; i++) {
        const struct px_hdr *f = &hs->v[i];
        /* Framing is ours; and whatever the upstream protocol let through,
         * a CR or LF must never reach the client (response splitting). */
        if (!px_field_name_ok(f->name, f->nlen) || !px_field_value_ok(f->value, f->vlen) ||
            strcmp(f->name, "content-length") == 0 || px_is_hop_by_hop(f->name, f->nlen) ||
            (trailers && !px_trailer_allowed(f->name, f->nlen)))
            continue;
        px_out_add(out, f->name, f->nlen);
        px_out_add(out, ": ", 2);
        px_out_add(out, f->value, f->vlen);
        px_out_add(out, "\r\n", 2);
    }
}

/* The upstream agreed to the WebSocket upgrade: our own 101, with the
 * Sec-WebSocket-Accept for this client's key (RFC 6455 4.2.2) whatever
 * protocol the upstream spoke, and the fields it chose (subprotocol,
 * extensions). The connection is a tunnel from here. */
static void write_upgrade_head(struct px_h1 *h, struct evbuffer *b)
{
    struct px_stream *st = h->st;
    struct px_out o = px_out_to(b), *out = &o;
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    char accept[PX_WS_ACCEPT_LEN + 1];

    if (st->rq.ws_key == NULL || px_ws_accept(st->rq.ws_key, st->rq.ws_key_len, accept) != 0) {
        h->abort_pending = 1;
        return;
    }
    h->resp_started = 1;
    h->resp_left = -1;
    h->close_after = 1; /* the connection ends with the tunnel */
    px_out_add(out, head, sizeof(head) - 1);
    px_out_add(out, accept, PX_WS_ACCEPT_LEN);
    px_out_add(out, "\r\n", 2);
    write_fields(out, &st->resp, 0);
    px_out_add(out, "\r\n", 2);
    if (out->failed) {
        h->abort_pending = 1;
        return;
    }
    h->rq = RQ_TUNNEL; /* what the client sends now is the tunnel's */
}

static void write_head(struct px_h1 *h, struct evbuffer *b)
{
    struct px_stream *st = h->st;
    struct px_out o = px_out_to(b), *out = &o;
    int s = st->status;
    size_t buffered = evbuffer_get_length(st->resp_body);

    if (st->tunnel && h->rq == RQ_DONE) {
        write_upgrade_head(h, b);
        return;
    }
    if (s < 200 || s > 999) {
        h->abort_pending = 1; /* interim responses are never relayed here */
        return;
    }
    /* A WebSocket the upstream did not open: the client may not agree
     * with us on what follows, so nothing does. */
    if (st->rq.upgrade)
        h->close_after = 1;
    h->resp_started = 1;
    h->resp_left = -1;
    /* Answering before the whole request was read: close afterwards, the
     * rest of the body is not worth reading (RFC 9112 9.6). */
    if (h->rq != RQ_DONE || h->draining)
        h->close_after = 1;
    /* A request refused as malformed: whoever sent it may not agree with
     * us on where the next one starts (RFC 9112 9.6, 11.2). */
    if (st->malformed)
        h->close_after = 1;
    h->resp_nobody = (st->rq.method != NULL && strcmp(st->rq.method, "HEAD") == 0) || s == 204 ||
                     s == 304;
    px_out_printf(out, "HTTP/1.1 %d %s\r\n", s, reason_phrase(s));
    write_fields(out, &st->resp, 0);
    if (s == 204) {
        /* no framing at all (RFC 9110 8.6) */
    } else if (h->resp_nobody) {
        if (st->resp_content_length >= 0)
            px_out_printf(out, "Content-Length: %lld\r\n", (long long)st->resp_content_length);
    } else if (st->resp_content_length >= 0 || (st->resp_eof && st->resp_trailers.n == 0)) {
        /* Known length: trailers arriving later are dropped (rare: a
         * length-framed h2 response with trailers). */
        h->resp_left = st->resp_content_length >= 0 ? st->resp_content_length : (int64_t)buffered;
        px_out_printf(out, "Content-Length: %lld\r\n", (long long)h->resp_left);
    } else if (h->http10) {
        h->close_after = 1; /* 1.0 has no chunked: the close ends the body */
    } else {
        h->resp_chunked = 1;
        px_out_add(out, "Transfer-Encoding: chunked\r\n", 28);
    }
    if (h->close_after)
        px_out_add(out, "Connection: close\r\n", 19);
    else if (h->http10)
        px_out_add(out, "Connection: keep-alive\r\n", 24);
    px_out_add(out, "\r\n", 2);
    if (out->failed)
        h->abort_pending = 1; /* an incomplete head, then the close: never another one */
}

/* The response's next bytes into out: the bufferevent's output, or the
 * worker's stage (send_response), up to PX_H1_OUT_HIGH there. */
static void send_into(struct px_h1 *h, struct evbuffer *out)
{
    struct px_stream *st = h->st;
    struct px_out o = px_out_to(out);

    if (!h->resp_started) {
        write_head(h, out);
        if (h->abort_pending)
            return;
    }
    while (!h->abort_pending && evbuffer_get_length(out) < px_conn_out_high(PX_H1_OUT_HIGH)) {
        size_t n = evbuffer_get_length(st->resp_body),
               room = px_conn_out_high(PX_H1_OUT_HIGH) - evbuffer_get_length(out);
        if (n == 0)
            break;
        if (n > room)
            n = room;
        if (h->resp_nobody) {
            evbuffer_drain(st->resp_body, n);
        } else {
            if (h->resp_left >= 0) {
                if ((int64_t)n > h->resp_left) {
                    h->abort_pending = 1; /* more than the length we announced */
                    return;
                }
                h->resp_left -= (int64_t)n;
            }
            if (h->resp_chunked)
                px_out_printf(&o, "%zx\r\n", n);
            px_out_move(&o, st->resp_body, n);
            if (h->resp_chunked)
                px_out_add(&o, "\r\n", 2);
            if (o.failed) {
                h->abort_pending = 1;
                return;
            }
            st->bytes_out += n;
        }
        if (st->up != NULL)
            st->up->response_drained(st, n); /* may append more, or fail: loop re-checks */
    }
    if (h->abort_pending || !st->resp_eof || evbuffer_get_length(st->resp_body) > 0)
        return;
    if (h->resp_left > 0) {
        h->abort_pending = 1; /* shorter than announced: the client must see an error */
        return;
    }
    if (h->resp_chunked) {
        px_out_add(&o, "0\r\n", 3);
        write_fields(&o, &st->resp_trailers, 1);
        px_out_add(&o, "\r\n", 2);
        if (o.failed) {
            h->abort_pending = 1;
            return;
        }
    }
    h->resp_done = 1;
}

/* Writes the response's next bytes. Left to libevent, bytes added to a
 * bufferevent's output go out a turn later, when epoll says the socket is
 * writable: an epoll_ctl to watch for it, the turn, one SSL_write (one
 * record, one write(2)) per chain of the output, so a head and a body were
 * two, and an epoll_ctl to stop watching. So when nothing waits in the
 * output (order holds: a 100 Continue queued there goes first), the bytes
 * are gathered in the worker's stage and px_send_buffer writes them at
 * once, in full records; only what the socket does not take goes to the
 * output, whose write callback continues from there. What an aborted
 * response left in the stage is dropped: the connection closes, which is
 * all the client may see of a response cut short. */
static void send_response(struct px_h1 *h)
{
    struct px_stream *st = h->st;
    struct evbuffer *out = bufferevent_get_output(h->c->bev), *stage;

    if (st->status == 0 || h->resp_done)
        return;
    if ((stage = px_worker_stage(h->c->w, out)) == NULL) {
        send_into(h, out);
        return;
    }
    for (;;) {
        send_into(h, stage);
        if (h->abort_pending || h->st != st) {
            evbuffer_drain(stage, evbuffer_get_length(stage));
            return;
        }
        if (evbuffer_get_length(stage) == 0)
            return; /* nothing (more) to send now */
        if (px_send_buffer(h->c->bev, stage) != 0) {
            evbuffer_drain(stage, evbuffer_get_length(stage));
            h->abort_pending = 1; /* a cut response: the connection goes */
            return;
        }
        /* the socket took a stage's worth: no write callback will come for
         * it, so what else the upstream has buffered follows here */
        if (h->resp_done || evbuffer_get_length(out) > 0 || evbuffer_get_length(st->resp_body) == 0)
            return;
    }
}

static void finish_response(struct px_h1 *h)
{
    struct px_stream *st = h->st;
    h->st = NULL;
    if (h->rq == RQ_TUNNEL) {
        /* the upstream ended the tunnel and all of it reached the client:
         * what the client still sends has nowhere to go */
        struct evbuffer *in = bufferevent_get_input(h->c->bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        h->rq = RQ_DONE;
    }
    h->resp_ready_seen = h->resp_started = h->resp_done = h->resp_chunked = 0;
    h->resp_nobody = 0;
    px_stream_down_done(st);
    if (h->rq != RQ_DONE || h->close_after || h->draining) {
        h->closing = 1;
        return;
    }
    h->rq = RQ_IDLE;
    px_h1_arm(h, TM_IDLE, LIM(h)->idle_timeout_ms);
}

/* Closing: flush, then free, or linger (read and discard for a while) when
 * the client may still be sending, so its kernel does not answer our close
 * with a reset that destroys the response in flight. Returns 1 if freed. */
static int close_step(struct px_h1 *h)
{
    struct bufferevent *bev = h->c->bev;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0); /* write callback when empty */
        bufferevent_enable(bev, EV_WRITE);
        return 0;
    }
    if (!h->lingering) {
        /* every exchange ended whole (a cut one ends in abort_now()): our
         * side ends cleanly, with a close_notify on TLS (a FIN on plain) */
        (void)px_tls_close_notify(bev);
        if (evbuffer_get_length(in) == 0 && (h->rq == RQ_IDLE || h->rq == RQ_DONE)) {
            h1_free(h);
            return 1;
        }
        h->lingering = 1;
        if (h->c->ssl == NULL)
            shutdown(bufferevent_getfd(bev), SHUT_WR);
        px_h1_arm(h, TM_LINGER, LINGER_MS);
        bufferevent_setwatermark(bev, EV_READ, 0, 0);
        bufferevent_enable(bev, EV_READ);
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    return 0;
}

static void abort_now(struct px_h1 *h)
{
    struct px_stream *st = h->st;
    h->st = NULL;
    if (st != NULL)
        px_stream_down_done(st); /* cancels the upstream side if still running */
    h1_free(h);
}

/* The one place work happens; called from this connection's callbacks. */
static void progress(struct px_h1 *h)
{
    struct px_stream *st;
    if (h->abort_pending) {
        abort_now(h);
        return;
    }
    if (h->st != NULL && h->resp_ready_seen) {
        send_response(h);
        if (h->abort_pending) {
            abort_now(h);
            return;
        }
        if (h->resp_done)
            finish_response(h);
    }
    if (!h->closing)
        px_h1_process_input(h);
    if (h->closing) {
        close_step(h);
        return;
    }
    /* Stop reading while req_body is full; the watermark bounds the rest.
     * A tunnel whose client closed its side is not read again. */
    st = h->st;
    if (((h->rq == RQ_BODY || h->rq == RQ_TUNNEL) && st != NULL && px_stream_req_room(st) == 0) ||
        h->client_eof)
        bufferevent_disable(h->c->bev, EV_READ);
    else
        bufferevent_enable(h->c->bev, EV_READ);
}

/* ---- callbacks ---------------------------------------------------------- */

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct px_h1 *h = arg;
    if (h->lingering) {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    progress(h);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    progress(arg);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct px_h1 *h = arg;
    (void)bev;
    if (h->rq == RQ_TUNNEL && (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
        !h->lingering) {
        /* The client closed its side of a tunnel: the upstream hears it
         * once the bytes before it are through; the other way goes on. */
        h->client_eof = 1;
        progress(h);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        /* Client gone (or finished lingering): an exchange in flight is
         * cancelled by h1_free(). Between exchanges our side ends cleanly
         * too (TLS: a close_notify answers the client's). */
        if (!(what & BEV_EVENT_ERROR) && h->st == NULL)
            (void)px_tls_close_notify(bev);
        h1_free(h);
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_h1 *h = arg;
    (void)fd;
    (void)what;
    if (h->tm == TM_HEADER && h->rq == RQ_HEAD && h->st == NULL) {
        h->tm = TM_NONE;
        px_h1_refuse(h, 408, PX_R_HEADER_TIMEOUT);
        progress(h);
        return;
    }
    /* idle, linger, or no request byte since the connection started: with
     * no exchange in flight, nothing is cut */
    if (h->st == NULL)
        (void)px_tls_close_notify(h->c->bev);
    h1_free(h);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    progress(arg);
}

/* ---- down ops (called by the stream's other side: schedule only) ------- */

static void op_response_ready(struct px_stream *st)
{
    struct px_h1 *h = st->down_ctx;
    if (h->st != st)
        return;
    h->resp_ready_seen = 1;
    kick(h);
}

static void op_request_drained(struct px_stream *st, size_t n)
{
    struct px_h1 *h = st->down_ctx;
    (void)n;
    if (h->st == st)
        kick(h);
}

/* The request was allowed: a client that asked (Expect: 100-continue)
 * may send its body now, and the body is read from here on. */
static void op_request_allowed(struct px_stream *st)
{
    struct px_h1 *h = st->down_ctx;
    if (h->st != st)
        return;
    if (st->rq.expect_continue && h->rq == RQ_BODY && !h->resp_started &&
        evbuffer_add(bufferevent_get_output(h->c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
        h->abort_pending = 1; /* one add: all of it or none, but the client waits for it */
    kick(h);
}

static void op_abort(struct px_stream *st)
{
    struct px_h1 *h = st->down_ctx;
    if (h->st != st)
        return;
    h->abort_pending = 1;
    kick(h);
}

const struct px_down_ops px_h1_ops = {
    .response_ready = op_response_ready,
    .request_drained = op_request_drained,
    .request_allowed = op_request_allowed,
    .abort = op_abort,
};

/* ---- entry points -------------------------------------------------------- */

static void conn_drain(struct px_conn *c)
{
    struct px_h1 *h = c->proto_ctx;
    if (h == NULL)
        return;
    h->draining = 1;
    h->close_after = 1;
    if (h->rq == RQ_IDLE && h->st == NULL) {
        h->closing = 1;
        kick(h); /* not now: the worker is walking its connection list */
    }
}

static void conn_end(struct px_conn *c)
{
    /* as a drain: the response in flight is the last, an idle connection
     * closes now (px_h1_process_input refuses a request that starts anyway) */
    conn_drain(c);
}

static void conn_close(struct px_conn *c)
{
    struct px_h1 *h = c->proto_ctx;
    if (h == NULL)
        px_conn_free(c);
    else
        h1_free(h);
}

static const struct px_conn_ops h1_conn_ops = {
    .drain = conn_drain,
    .end = conn_end,
    .close = conn_close,
};

int px_h1_conn_start(struct px_conn *c)
{
    struct px_h1 *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    h->c = c;
    h->timer = evtimer_new(c->w->base, timer_cb, h);
    h->kick = event_new(c->w->base, -1, 0, kick_cb, h);
    if (h->timer == NULL || h->kick == NULL || px_conn_track(c) != 0) {
        if (h->timer)
            event_free(h->timer);
        if (h->kick)
            event_free(h->kick);
        free(h);
        return -1;
    }
    c->proto = PX_PROTO_H1;
    c->ops = &h1_conn_ops;
    c->proto_ctx = h;
    h->block_max = (size_t)c->snap->cfg->limits.max_header_list_size + REQ_LINE_MAX;
    /* The read watermark must exceed the largest header block, or a block
     * that fills the input would stop reading before it is complete. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, h->block_max + 1024);
    bufferevent_setwatermark(c->bev, EV_WRITE, PX_H1_OUT_LOW, 0);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, h);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    px_h1_arm(h, TM_HEADER, c->snap->cfg->limits.header_timeout_ms);
    if (c->w->drain_notified)
        h->draining = h->close_after = 1;
    /* TLS may have decrypted request bytes along with the handshake. */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        kick(h);
    return 0;
}
