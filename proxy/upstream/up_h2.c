/*
 * up_h2.c - upstream h2c (HTTP/2 over cleartext, prior knowledge): a pool
 * of multiplexed connections per upstream address, per worker.
 *
 * A request goes on the first connection with a free stream slot (the
 * peer's SETTINGS_MAX_CONCURRENT_STREAMS, capped by UP_MAX_STREAMS), else
 * on a new connection. Requests may be submitted before the TCP connect
 * completes; nghttp2 holds the frames until we start sending.
 *
 * Flow control mirrors h2.c: response DATA is consumed at the connection
 * level at once and at the stream level when the downstream has sent it on,
 * so a slow client slows its own stream's upstream and nothing else.
 */
#include "px.h"
#include "tmalloc.h"
#include "upstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <nghttp2/nghttp2.h>

#include "fields.h"
#include "fmt.h"
#include "h2_mem.h"
#include "log.h"
#include "send.h"

#define UP_OUT_HIGH (256 * 1024)
#define UP_MAX_STREAMS 100
#define UP_CONN_WINDOW (16 * 1024 * 1024)
/* Responses in a row that stayed under PX_STREAM_SLACK / 2 after which a
 * connection's new streams wait for a sign of a large response before
 * their window opens (uph2_open_window). */
#define UP_LAZY_AFTER 8
#define UP_MAX_CONNS 64 /* per pool; beyond, streams queue on the least loaded */

struct uph2_conn {
    struct px_pool *pool;
    struct px_worker *w;
    struct uph2_conn *next, *prev;
    struct bufferevent *bev;
    struct px_mem_tracker trk_in, trk_out; /* its buffers, in the memory budget */
    nghttp2_session *s;
    struct event *send_ev;
    int send_pending; /* send_ev is active: its callback has yet to run */
    struct uph2_stream *streams;
    size_t nstreams;
    int connected, dead, goaway, connect_failed;
    int got_settings; /* the server's first SETTINGS is in (extended CONNECT waits for it) */
    int64_t not_after;  /* TLS: the server chain's earliest notAfter (Unix s), 0 = none */
    uint64_t snap_gen;  /* the snapshot (trust, own SVID) it was made under */
    struct event *cert_ev; /* at not_after: no new streams; drain_timeout later: closed */
    int cert_ended;
    unsigned small_run; /* responses in a row that never needed more than the slack */
    unsigned rid_sent;  /* requests sent with an x-request-id (us_submit) */
};

struct uph2_stream {
    struct uph2_conn *uc;
    struct px_stream *st;
    struct uph2_stream *next, *prev;
    int32_t id;
    int deferred;
    int got_final_headers;
    int waiting;   /* a WebSocket waiting for the server's SETTINGS: not submitted, id 0 */
    int body_sent; /* some request body left req_body: the request cannot be replayed */
    size_t owed;   /* response bytes sent on downstream, not yet given back as window */
    size_t granted; /* window beyond PX_STREAM_SLACK, from px_mem_window_take() */
    int status;     /* :status of the block being received (the stream's once delivered) */
    size_t hdr_bytes; /* name + value + 32 of every response field, 1xx and trailers too */
    size_t resp_bytes; /* response body received */
    int lazy; /* window still at PX_STREAM_SLACK, to open when the response needs it */
    enum px_reason fail_reason; /* why picket reset it (PX_R_UPSTREAM_HEADERS_TOO_LARGE, ...) */
};

static const struct px_up_ops uph2_ops;
static void uc_send(struct uph2_conn *uc);
static void uc_fail(struct uph2_conn *uc, enum px_reason reason);
static void uc_settings_in(struct uph2_conn *uc);
static int us_submit(struct uph2_stream *us);
static void uph2_open_window(struct uph2_stream *us);

/* Whether a response has shown it needs more window than PX_STREAM_SLACK
 * (uph2_open_window): a content-length over half of it, or half of it
 * received. The one rule for opening a lazy stream and for ending a run
 * of small responses. */
static int resp_large(const struct uph2_stream *us, const struct px_stream *st)
{
    return us->resp_bytes >= PX_STREAM_SLACK / 2 ||
           (st != NULL && st->resp_content_length > (int64_t)PX_STREAM_SLACK / 2);
}

static void schedule_send(struct uph2_conn *uc)
{
    if (!uc->dead && !uc->send_pending) { /* once per turn, however many streams ask */
        uc->send_pending = 1;
        event_active(uc->send_ev, EV_WRITE, 0);
    }
}

static void unlink_us(struct uph2_conn *uc, struct uph2_stream *us)
{
    if (us->prev)
        us->prev->next = us->next;
    else
        uc->streams = us->next;
    if (us->next)
        us->next->prev = us->prev;
    us->next = us->prev = NULL;
    uc->nstreams--;
}

/* ---- nghttp2 client callbacks ----------------------------------------- */

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct uph2_stream *us = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    struct uph2_conn *uc = arg;
    struct px_stream *st;
    (void)flags;

    if (us == NULL || us->st == NULL || f->hd.type != NGHTTP2_HEADERS || us->fail_reason != PX_R_NONE)
        return 0;
    st = us->st;
    /* Every field the upstream sends counts, final, interim and trailer
     * alike, and the stream ends the moment they pass the limit: an app
     * behind picket cannot make it hold (or its clients receive) more. */
    us->hdr_bytes += nlen + vlen + 32;
    if (us->hdr_bytes > (size_t)uc->w->snap->cfg->limits.max_header_list_size) {
        us->fail_reason = PX_R_UPSTREAM_HEADERS_TOO_LARGE;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    }
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS && us->got_final_headers) {
        if (px_trailer_allowed((const char *)name, nlen) &&
            px_hdrs_add(&st->resp_trailers, (const char *)name, nlen, (const char *)value, vlen,
                        0) != 0) {
            us->fail_reason = PX_R_OUT_OF_MEMORY; /* never a trailer section with a hole */
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return 0;
    }
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        int code = 0;
        for (size_t i = 0; i < vlen && i < 4; i++)
            code = value[i] >= '0' && value[i] <= '9' ? code * 10 + (value[i] - '0') : -1000;
        if (vlen != 3 || code < 100 || code > 599) {
            /* RFC 9110 15: three digits, 1xx to 5xx; anything else is not a
             * status a client could be given or a log could record */
            us->fail_reason = PX_R_BAD_UPSTREAM_RESPONSE;
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        us->status = code;
        return 0;
    }
    if (nlen > 0 && name[0] == ':')
        return 0;
    if (us->status >= 100 && us->status < 200)
        return 0; /* interim fields: counted, not kept */
    if (nlen == 14 && memcmp(name, "content-length", 14) == 0) {
        long long v = 0;
        for (size_t i = 0; i < vlen && i < 18; i++)
            v = v * 10 + (value[i] - '0');
        st->resp_content_length = v; /* nghttp2 validated the digits */
        return 0;
    }
    if (px_hdrs_add(&st->resp, (const char *)name, nlen, (const char *)value, vlen, 0) != 0) {
        us->fail_reason = PX_R_OUT_OF_MEMORY; /* never a response missing a field */
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct uph2_conn *uc = arg;
    struct uph2_stream *us;
    struct px_stream *st;

    if (f->hd.type == NGHTTP2_GOAWAY) {
        uc->goaway = 1;
        return 0;
    }
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && !uc->got_settings) {
        uc->got_settings = 1;
        uc_settings_in(uc);
        return 0;
    }
    if (f->hd.stream_id == 0)
        return 0;
    us = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (us == NULL || us->st == NULL)
        return 0;
    st = us->st;
    px_stream_up_activity(st);
    if (us->fail_reason != PX_R_NONE)
        return 0; /* being reset */
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (!us->got_final_headers) {
            if (us->status >= 100 && us->status < 200) {
                /* interim response: forget it, wait for the final one */
                us->status = 0;
                return 0;
            }
            if (us->status == 0) {
                us->fail_reason = PX_R_BAD_UPSTREAM_RESPONSE;
                nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_PROTOCOL_ERROR);
                return 0;
            }
            us->got_final_headers = 1;
            st->status = us->status; /* delivered: the status the client is sent */
            if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
                st->resp_eof = 1;
            if (st->rq.upgrade && us->status / 100 == 2 && !st->resp_eof) {
                /* the server opened the WebSocket (RFC 8441 5): the
                 * client's bytes, held until now, may go */
                px_stream_tunnel_open(st);
                if (us->deferred && us->st == st) {
                    us->deferred = 0;
                    nghttp2_session_resume_data(s, us->id);
                }
                return 0;
            }
            if (us->lazy && !st->resp_eof && resp_large(us, st))
                uph2_open_window(us);
            px_stream_response_headers(st);
            return 0;
        }
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        st->resp_eof = 1;
        if (st->down)
            st->down->response_ready(st);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    struct uph2_stream *us = nghttp2_session_get_stream_user_data(s, id);
    (void)flags;
    (void)arg;
    nghttp2_session_consume_connection(s, len);
    if (us == NULL || us->st == NULL || us->st->down_done || us->fail_reason != PX_R_NONE) {
        nghttp2_session_consume_stream(s, id, len);
        return 0;
    }
    if (evbuffer_add(us->st->resp_body, data, len) != 0) {
        us->fail_reason = PX_R_OUT_OF_MEMORY; /* a body with a hole is another body */
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    us->resp_bytes += len;
    if (us->lazy && resp_large(us, us->st))
        uph2_open_window(us);
    px_stream_up_activity(us->st);
    if (us->st->down)
        us->st->down->response_ready(us->st);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *arg)
{
    struct uph2_conn *uc = arg;
    struct uph2_stream *us = nghttp2_session_get_stream_user_data(s, id);
    struct px_stream *st;
    enum px_reason reason;
    int body_sent;

    if (us == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    unlink_us(uc, us);
    st = us->st;
    body_sent = us->body_sent;
    reason = us->fail_reason;
    if (resp_large(us, st))
        uc->small_run = 0;
    else if (uc->small_run < UP_LAZY_AFTER)
        uc->small_run++;
    px_mem_window_give(us->granted);
    px_tfree(us);
    if (st == NULL)
        return 0;
    if (reason != PX_R_NONE && !st->resp_eof) {
        /* picket reset it: 502 before the response started, else a reset */
        px_stream_up_fail(st, 502, reason);
        return 0;
    }
    if (error_code == NGHTTP2_REFUSED_STREAM && st->status == 0 && !body_sent &&
        st->up_retries < 3 && !st->down_done) {
        /* REFUSED_STREAM means the server did not process it (RFC 9113
         * 8.7), e.g. streams past a GOAWAY when a server recycles its
         * connection: replay it on another connection. */
        st->up_retries++;
        st->up = NULL;
        st->up_ctx = NULL;
        px_up_h2_start(uc->w, uc->pool, st);
        return 0;
    }
    if (!st->resp_eof)
        px_stream_up_fail(st, error_code == NGHTTP2_REFUSED_STREAM ? 503 : 502,
                          error_code == NGHTTP2_REFUSED_STREAM ? PX_R_UPSTREAM_REFUSED_STREAM
                                                               : PX_R_UPSTREAM_RESET);
    else
        px_stream_up_done(st);
    return 0;
}

static ssize_t read_request(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct uph2_stream *us = src->ptr;
    struct px_stream *st = us->st;
    size_t avail, n;
    (void)arg;

    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    avail = evbuffer_get_length(st->req_body);
    n = avail < length ? avail : length;
    if ((n == 0 && !px_stream_in_eof(st)) || (st->rq.upgrade && !st->tunnel)) {
        /* nothing yet; and a WebSocket's bytes wait for the server's 2xx */
        us->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > 0) {
        evbuffer_remove(st->req_body, buf, n);
        us->body_sent = 1;
        px_stream_request_sent(st, n); /* progress, and room downstream */
    }
    if (px_stream_in_eof(st) && evbuffer_get_length(st->req_body) == 0) {
        const struct px_hdrs *t = &st->rq.trailers;
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (t->n > 0) {
            /* every trailer the canonical request kept */
            if (h2_submit_trailers(s, id, t) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
    }
    return (ssize_t)n;
}

/* ---- px_up_ops ---------------------------------------------------------- */

static void uph2_request_ready(struct px_stream *st)
{
    struct uph2_stream *us = st->up_ctx;
    if (us == NULL || us->uc->dead || us->waiting)
        return;
    if (us->deferred) {
        us->deferred = 0;
        nghttp2_session_resume_data(us->uc->s, us->id);
    }
    schedule_send(us->uc);
}

/* Sizes the stream's window to what it may hold now (px_stream_resp_room:
 * the stream bound, the client's own window, the memory budget) and gives
 * back the bytes the downstream took, no more than that allows. So an
 * upstream can never send more than the client can take plus a little, and
 * under memory pressure heavy streams get no window back until they drain. */
static void uph2_window(struct uph2_stream *us)
{
    struct px_stream *st = us->st;
    nghttp2_session *s = us->uc->s;
    size_t room, pay, want;
    int32_t cur;

    if (us->waiting)
        return; /* no stream in nghttp2 yet */
    cur = nghttp2_session_get_stream_effective_local_window_size(s, us->id);
    if (cur < 0)
        return; /* made when its HEADERS go out (on_frame_send) */
    room = px_stream_resp_room(st);
    want = evbuffer_get_length(st->resp_body) + room;

    if (!us->lazy && want > (size_t)cur + PX_STREAM_SLACK && want <= INT32_MAX &&
        px_mem_level() < PX_MEM_PAUSE) {
        /* more window only from the process-wide allowance (mem.h) */
        size_t more = px_mem_window_take(want - (size_t)cur);
        if (more > 0) {
            us->granted += more;
            nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, us->id,
                                                  cur + (int32_t)more);
        }
    }
    pay = us->owed < room ? us->owed : room;
    if (pay > 0) {
        us->owed -= pay;
        nghttp2_session_consume_stream(s, us->id, pay);
    }
}

/* A stream's window opens beyond PX_STREAM_SLACK (to what its client can
 * take, uph2_window) as soon as it exists: nghttp2 makes it when the
 * request's HEADERS go out (on_frame_send), and the WINDOW_UPDATE leaves
 * in the same write. Before that was done the app sent 4 KiB of every
 * larger response and waited.
 *
 * But most responses are smaller than the slack, and for them the frame
 * is only cost: about 570 instructions of a small request's 44,000
 * (callgrind, tests/bench/results/2026-12-05-round7.md). So once a connection's
 * last UP_LAZY_AFTER responses all stayed under half the slack, its new
 * streams start lazy: the window opens when the response shows it is
 * large (a content-length over half the slack, or half the slack
 * received: the app still has the other half to send meanwhile;
 * resp_large).
 * The first large response of such a run waits for that one
 * WINDOW_UPDATE; the next ones open with the request again. Tunnels never
 * start lazy. What bounds memory is unchanged: the window only ever grows
 * through uph2_window. */
static void uph2_open_window(struct uph2_stream *us)
{
    if (us->lazy) {
        us->lazy = 0;
        uph2_window(us);
        schedule_send(us->uc);
    }
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct uph2_stream *us;
    (void)arg;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    us = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (us == NULL || us->st == NULL || us->uc->dead)
        return 0;
    us->lazy = us->uc->small_run >= UP_LAZY_AFTER && !us->st->rq.upgrade;
    if (!us->lazy)
        uph2_window(us);
    return 0;
}

static void uph2_response_drained(struct px_stream *st, size_t n)
{
    struct uph2_stream *us = st->up_ctx;
    if (us == NULL || us->uc->dead || us->st != st)
        return;
    us->owed += n;
    uph2_window(us);
    schedule_send(us->uc);
}

static void uph2_cancel(struct px_stream *st)
{
    struct uph2_stream *us = st->up_ctx;
    st->up_ctx = NULL;
    if (us != NULL && us->waiting) {
        unlink_us(us->uc, us); /* never submitted: nothing to reset */
        px_tfree(us);
    } else if (us != NULL) {
        us->st = NULL; /* the stream close callback frees us */
        if (!us->uc->dead) {
            nghttp2_submit_rst_stream(us->uc->s, NGHTTP2_FLAG_NONE, us->id, NGHTTP2_CANCEL);
            schedule_send(us->uc);
        }
    }
    px_stream_up_done(st);
}

static const struct px_up_ops uph2_ops = {uph2_request_ready, uph2_response_drained, uph2_cancel};

/* ---- connection --------------------------------------------------------- */

static void uc_free(struct uph2_conn *uc)
{
    struct px_pool *pool = uc->pool;
    if (uc->prev)
        uc->prev->next = uc->next;
    else
        pool->h2conns = uc->next;
    if (uc->next)
        uc->next->prev = uc->prev;
    pool->nh2conns--;
    if (uc->s)
        nghttp2_session_del(uc->s);
    px_mem_untrack(&uc->trk_in);
    px_mem_untrack(&uc->trk_out);
    if (uc->bev)
        bufferevent_free(uc->bev);
    if (uc->send_ev)
        event_free(uc->send_ev);
    if (uc->cert_ev)
        event_free(uc->cert_ev);
    free(uc);
}

/* Takes the first stream off a connection that is going away: forgets it
 * in nghttp2 and frees our record. Returns its px_stream (may be NULL if
 * the downstream already let go). */
static struct px_stream *uc_pop_stream(struct uph2_conn *uc)
{
    struct uph2_stream *us = uc->streams;
    struct px_stream *st = us->st;
    if (!us->waiting)
        nghttp2_session_set_stream_user_data(uc->s, us->id, NULL);
    unlink_us(uc, us);
    px_mem_window_give(us->granted);
    px_tfree(us);
    return st;
}

/* The connection is unusable: every stream on it fails, then it goes. */
static void uc_fail(struct uph2_conn *uc, enum px_reason reason)
{
    if (uc->dead)
        return;
    uc->dead = 1;
    while (uc->streams != NULL) {
        /* a stream picket was resetting keeps its own reason */
        enum px_reason why =
            uc->streams->fail_reason != PX_R_NONE ? uc->streams->fail_reason : reason;
        struct px_stream *st = uc_pop_stream(uc);
        if (st != NULL) {
            st->up_ctx = NULL;
            if (!st->resp_eof)
                px_stream_up_fail(st, 502, why);
            else
                px_stream_up_done(st);
        }
    }
    uc_free(uc);
}

/* The session is over: with no stream left in it, the connection ends
 * cleanly (TLS: a close_notify, send.h); with streams, they fail. */
static void uc_end(struct uph2_conn *uc, enum px_reason reason)
{
    if (uc->nstreams == 0 && !uc->dead)
        (void)px_tls_close_notify(uc->bev);
    uc_fail(uc, reason);
}

static void uc_send(struct uph2_conn *uc)
{
    struct evbuffer *out;
    struct px_out o;
    if (uc->dead || !uc->connected)
        return;
    out = bufferevent_get_output(uc->bev);
    px_out_begin(&o, uc->bev);
    while (evbuffer_get_length(out) + px_out_pending(&o) < UP_OUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(uc->s, &data);
        if (n < 0) {
            px_out_drop(&o);
            uc_fail(uc, PX_R_UPSTREAM_PROTOCOL_ERROR);
            return;
        }
        if (n == 0)
            break;
        if (px_out_add(&o, data, (size_t)n) != 0) {
            px_out_drop(&o);
            uc_fail(uc, PX_R_OUT_OF_MEMORY); /* sent, says nghttp2: the session cannot go on */
            return;
        }
    }
    if (px_out_end(&o) != 0) {
        uc_fail(uc, PX_R_OUT_OF_MEMORY);
        return;
    }
    if (!nghttp2_session_want_read(uc->s) && !nghttp2_session_want_write(uc->s))
        /* The session is over (nghttp2.h: drop the connection), streams or
         * not. With streams left and no GOAWAY from the upstream, nghttp2
         * ended it on a connection error in what the upstream sent (bad
         * preface, a frame it cannot take): nothing more is read for them,
         * so they fail now rather than at upstream_timeout, and no new
         * stream is put on a dead session. */
        uc_end(uc, uc->nstreams > 0 && !uc->goaway ? PX_R_BAD_UPSTREAM_RESPONSE
                                                    : PX_R_UPSTREAM_GOAWAY);
    else if (uc->nstreams == 0 && uc->goaway)
        uc_end(uc, PX_R_UPSTREAM_GOAWAY);
}

static void uc_send_cb(evutil_socket_t fd, short what, void *arg)
{
    struct uph2_conn *uc = arg;
    (void)fd;
    (void)what;
    uc->send_pending = 0;
    if (uc->connect_failed) {
        uc_fail(uc, PX_R_CONNECT_FAILED);
        return;
    }
    uc_send(uc);
}

static void uc_read_cb(struct bufferevent *bev, void *arg)
{
    struct uph2_conn *uc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!uc->dead)
        px_up_read_more(bev, uc->pool, PX_UP_READ_MORE);
    while (evbuffer_get_length(in) > 0 && !uc->dead) {
        size_t len = evbuffer_get_contiguous_space(in);
        unsigned char *p = evbuffer_pullup(in, (ssize_t)len);
        ssize_t n = nghttp2_session_mem_recv(uc->s, p, len);
        if (n < 0) {
            px_log(PX_LOG_WARN, "upstream_h2_error", "upstream", uc->pool->key, "error",
                   nghttp2_strerror((int)n), NULL);
            uc_fail(uc, PX_R_BAD_UPSTREAM_RESPONSE);
            return;
        }
        evbuffer_drain(in, (size_t)n);
    }
    uc_send(uc);
}

static void uc_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    uc_send(arg);
}

/* A probing mTLS pool whose server answered ALPN with http/1.1: the pool
 * becomes HTTP/1.1 and the streams queued here (nothing was sent: we send
 * only once connected) start over on up_h1.c. */
static void uc_fallback_h1(struct uph2_conn *uc)
{
    struct px_pool *pool = uc->pool;
    struct px_worker *w = uc->w;
    pool->h2 = 0;
    pool->alpn = PX_ALPN_FIXED;
    (void)px_tls_close_notify(uc->bev); /* nothing was sent on it: a clean end */
    uc->dead = 1;
    while (uc->streams != NULL) {
        struct px_stream *st = uc_pop_stream(uc);
        if (st != NULL) {
            st->up = NULL;
            st->up_ctx = NULL;
            px_up_h1_start(w, pool, st);
        }
    }
    uc_free(uc);
}

/* The server's certificate expired under an open connection: it takes no
 * new stream (GOAWAY; it closes when its last stream ends), and what is
 * still in flight gets limits.drain_timeout, as downstream connections do
 * (worker.c). */
static void uc_cert_cb(evutil_socket_t fd, short what, void *arg)
{
    struct uph2_conn *uc = arg;
    int64_t ms = uc->w->snap->cfg->limits.drain_timeout_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    (void)fd;
    (void)what;
    if (uc->dead)
        return;
    if ((int64_t)time(NULL) < uc->not_after) { /* timers run a little early */
        tv.tv_sec = (time_t)(uc->not_after - (int64_t)time(NULL));
        tv.tv_usec = 0;
        evtimer_add(uc->cert_ev, &tv);
        return;
    }
    if (uc->cert_ended) {
        uc_fail(uc, PX_R_PEER_CERT_EXPIRED);
        return;
    }
    uc->cert_ended = 1;
    px_log(PX_LOG_INFO, "upstream_identity_ended", "upstream", uc->pool->key, "reason",
           px_reason_name(PX_R_PEER_CERT_EXPIRED), NULL);
    if (!uc->goaway) {
        uc->goaway = 1;
        nghttp2_submit_goaway(uc->s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    }
    evtimer_add(uc->cert_ev, &tv);
    schedule_send(uc);
}

static void uc_arm_cert(struct uph2_conn *uc)
{
    struct timeval tv = {0, 0};
    int64_t now = (int64_t)time(NULL);
    if (uc->not_after <= 0 || (uc->cert_ev = evtimer_new(uc->w->base, uc_cert_cb, uc)) == NULL)
        return;
    tv.tv_sec = (time_t)(uc->not_after > now ? uc->not_after - now : 0);
    evtimer_add(uc->cert_ev, &tv);
}

static void uc_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct uph2_conn *uc = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        evutil_socket_t fd = bufferevent_getfd(bev);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (uc->pool->tls && !px_up_bev_is_h2(bev)) {
            if (uc->pool->alpn == PX_ALPN_PROBE) {
                uc_fallback_h1(uc);
                return;
            }
            px_log(PX_LOG_WARN, "upstream_alpn_mismatch", "upstream", uc->pool->key, "msg",
                   "server did not agree to h2", NULL);
            uc_fail(uc, PX_R_ALPN_MISMATCH);
            return;
        }
        if (uc->pool->tls) {
            uc->pool->alpn = PX_ALPN_FIXED;
            uc->not_after = px_up_bev_not_after(bev);
            uc_arm_cert(uc);
        }
        uc->connected = 1;
        uc_send(uc);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        int err = EVUTIL_SOCKET_ERROR();
        enum px_reason tls_reason = px_up_bev_fail_reason(bev);
        enum px_reason reason = tls_reason != PX_R_NONE ? tls_reason
                                : !uc->connected        ? (err == ECONNREFUSED ? PX_R_CONNECT_REFUSED
                                                                               : PX_R_CONNECT_FAILED)
                                                        : PX_R_UPSTREAM_RESET;
        if (!uc->connected)
            px_log(PX_LOG_WARN, "upstream_connect_failed", "upstream", uc->pool->key, "reason",
                   px_reason_name(reason), "error", evutil_socket_error_to_string(err), NULL);
        if (uc->connected && !(what & BEV_EVENT_ERROR))
            uc_end(uc, reason); /* the server ended its side: with no stream, ours too */
        else
            uc_fail(uc, reason);
    }
}

static struct uph2_conn *uc_new(struct px_worker *w, struct px_pool *pool)
{
    struct uph2_conn *uc = calloc(1, sizeof(*uc));
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_settings_entry iv[2];

    if (uc == NULL)
        return NULL;
    uc->pool = pool;
    uc->w = w;
    uc->snap_gen = w->snap->gen;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* the same flood limits as the server side (h2.c): an app is a peer too */
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    if (nghttp2_session_client_new3(&uc->s, cbs, uc, opt, px_h2_mem()) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    cbs = NULL;
    opt = NULL;
    iv[0] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    /* Small at first; each stream's window is then sized to what its
     * client can take (uph2_window), up to limits.stream_buffer. */
    iv[1] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, PX_STREAM_SLACK};
    nghttp2_submit_settings(uc->s, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(uc->s, NGHTTP2_FLAG_NONE, 0, UP_CONN_WINDOW);
    uc->send_ev = event_new(w->base, -1, 0, uc_send_cb, uc);
    uc->bev = px_up_bev_new(w, pool);
    if (uc->send_ev == NULL || uc->bev == NULL ||
        px_mem_track(&uc->trk_in, bufferevent_get_input(uc->bev), PX_MEM_SOCKETS, NULL) != 0 ||
        px_mem_track(&uc->trk_out, bufferevent_get_output(uc->bev), PX_MEM_SOCKETS, NULL) != 0)
        goto fail;
    bufferevent_setcb(uc->bev, uc_read_cb, uc_write_cb, uc_event_cb, uc);
    bufferevent_setwatermark(uc->bev, EV_WRITE, UP_OUT_HIGH / 2, 0);
    bufferevent_enable(uc->bev, EV_READ | EV_WRITE);
    uc->next = pool->h2conns;
    if (uc->next)
        ((struct uph2_conn *)uc->next)->prev = uc;
    pool->h2conns = uc;
    pool->nh2conns++;
    if (bufferevent_socket_connect(uc->bev, (struct sockaddr *)&pool->addr, (int)pool->addrlen) !=
        0) {
        /* Immediate failure (e.g. no route): the caller still submits its
         * stream; it is failed from the event loop, not under its feet. */
        uc->connect_failed = 1;
        schedule_send(uc);
    }
    return uc;
fail:
    if (cbs)
        nghttp2_session_callbacks_del(cbs);
    if (opt)
        nghttp2_option_del(opt);
    if (uc->s)
        nghttp2_session_del(uc->s);
    if (uc->send_ev)
        event_free(uc->send_ev);
    px_mem_untrack(&uc->trk_in);
    px_mem_untrack(&uc->trk_out);
    if (uc->bev)
        bufferevent_free(uc->bev);
    free(uc);
    return NULL;
}

static struct uph2_conn *pick_conn(struct px_worker *w, struct px_pool *pool)
{
    struct uph2_conn *best = NULL;
    for (struct uph2_conn *uc = pool->h2conns; uc != NULL; uc = uc->next) {
        uint32_t peer_max;
        if (uc->dead || uc->goaway)
            continue;
        if (pool->tls && ((uc->not_after > 0 && (int64_t)time(NULL) >= uc->not_after) ||
                          uc->snap_gen != w->snap->gen)) {
            /* its server's certificate expired, or trust (or our own SVID)
             * changed since it was verified: no new stream on it; it closes
             * once its streams end */
            uc->goaway = 1;
            schedule_send(uc);
            continue;
        }
        peer_max = nghttp2_session_get_remote_settings(uc->s,
                                                       NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        if (peer_max > UP_MAX_STREAMS)
            peer_max = UP_MAX_STREAMS;
        if (uc->nstreams < peer_max)
            return uc;
        if (best == NULL || uc->nstreams < best->nstreams)
            best = uc;
    }
    if (pool->nh2conns < UP_MAX_CONNS || best == NULL)
        return uc_new(w, pool);
    return best;
}

/* x-request-id is never indexed (h2_mem.h): each value is new. Its name
 * alone would still be a 12-byte literal, Huffman-coded by us and decoded
 * by the app on every request; so the first request on a connection, and
 * then one in RID_NAME_EVERY (in case the entry was pushed out), sends its
 * ID with indexing, and the others name that entry by its index
 * (RFC 7541 6.2.3, a literal never indexed with an indexed name). */
#define RID_NAME_EVERY 256

/* Submits us's request: the canonical request as the policy saw it
 * (request.h); a WebSocket as an extended CONNECT (RFC 8441 4: :protocol,
 * no Upgrade, no Sec-WebSocket-Key, which only HTTP/1.1 uses). 0, or -1
 * (nothing submitted; the caller fails the stream). */
static int us_submit(struct uph2_stream *us)
{
    struct uph2_conn *uc = us->uc;
    struct px_stream *st = us->st;
    const struct px_request *rq = &st->rq;
    nghttp2_nv local[H2_NV_LOCAL], *nva = h2_nv_array(local, rq->hdrs.n + 6);
    nghttp2_data_provider prd;
    size_t k = 0;
    char clen[24];
    int32_t id;
    int tls = uc->pool->tls, no_body;

    if (nva == NULL)
        return -1;
    if (rq->upgrade) {
        nva[k++] = H2_NV_LIT(":method", "CONNECT", 7);
        nva[k++] = H2_NV_LIT(":protocol", "websocket", 9);
    } else {
        nva[k++] = H2_NV_LIT(":method", rq->method, rq->method_len);
    }
    nva[k++] = H2_NV_LIT(":scheme", tls ? "https" : "http", tls ? 5 : 4);
    nva[k++] = H2_NV_LIT(":authority", rq->authority, rq->authority_len);
    nva[k++] = H2_NV_LIT(":path", rq->target, rq->target_len);
    for (size_t i = 0; i < rq->hdrs.n; i++) {
        const struct px_hdr *f = &rq->hdrs.v[i];
        if (rq->upgrade && ((f->nlen == 7 && memcmp(f->name, "upgrade", 7) == 0) ||
                            (f->nlen == 17 && memcmp(f->name, "sec-websocket-key", 17) == 0)))
            continue;
        nva[k] = H2_NV_HDR(f);
        if (f->nlen == 12 && memcmp(f->name, "x-request-id", 12) == 0 &&
            uc->rid_sent++ % RID_NAME_EVERY == 0)
            nva[k].flags &= (uint8_t)~NGHTTP2_NV_FLAG_NO_INDEX;
        k++;
    }
    if (rq->content_length >= 0 && !rq->upgrade) {
        size_t clen_n = px_fmt_i64(clen, rq->content_length);
        nva[k++] = H2_NV_LIT("content-length", clen, clen_n);
    }
    prd.source.ptr = us;
    prd.read_callback = read_request;
    /* a tunnel's client side lasts until its END_STREAM: always a provider */
    no_body = !rq->upgrade && st->req_eof && evbuffer_get_length(st->req_body) == 0 &&
              rq->trailers.n == 0;
    id = nghttp2_submit_request(uc->s, NULL, nva, k, no_body ? NULL : &prd, us);
    h2_nv_array_free(nva, local);
    if (id < 0)
        return -1;
    us->id = id;
    us->waiting = 0;
    /* its window opens when nghttp2 has made the stream (on_frame_send) */
    return 0;
}

/* Whether the server's SETTINGS allow extended CONNECT (RFC 8441 3);
 * logs when they do not. Only once they are in (uc->got_settings). */
static int uc_takes_websocket(struct uph2_conn *uc)
{
    if (nghttp2_session_get_remote_settings(uc->s, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1)
        return 1;
    px_log(PX_LOG_WARN, "upstream_upgrade_unsupported", "upstream", uc->pool->key, "msg",
           "the h2c upstream does not allow extended CONNECT (RFC 8441): no WebSocket", NULL);
    return 0;
}

/* The server's first SETTINGS is in: the WebSockets waiting for it go as
 * extended CONNECTs if it allows them (RFC 8441 3), else each gets 502
 * upgrade_unsupported. */
static void uc_settings_in(struct uph2_conn *uc)
{
    struct uph2_stream *us, *next;
    for (us = uc->streams; us != NULL; us = next) {
        struct px_stream *st = us->st;
        int ok;
        next = us->next;
        if (!us->waiting)
            continue;
        ok = uc_takes_websocket(uc); /* logged for each WebSocket refused */
        if (ok && us_submit(us) == 0)
            continue;
        unlink_us(uc, us);
        px_tfree(us);
        st->up_ctx = NULL;
        px_stream_up_fail(st, 502, ok ? PX_R_UPSTREAM_SUBMIT_FAILED : PX_R_UPGRADE_UNSUPPORTED);
    }
    schedule_send(uc);
}

void px_up_h2_start(struct px_worker *w, struct px_pool *pool, struct px_stream *st)
{
    struct uph2_conn *uc = pick_conn(w, pool);
    struct uph2_stream *us;

    if (uc == NULL) {
        px_stream_up_fail(st, 503, PX_R_OUT_OF_MEMORY);
        return;
    }
    if (st->rq.upgrade && uc->got_settings && !uc_takes_websocket(uc)) {
        px_stream_up_fail(st, 502, PX_R_UPGRADE_UNSUPPORTED);
        return;
    }
    us = px_tzalloc(sizeof(*us));
    if (us == NULL) {
        px_stream_up_fail(st, 503, PX_R_OUT_OF_MEMORY);
        return;
    }
    us->uc = uc;
    us->st = st;
    if (st->rq.upgrade && !uc->got_settings) {
        us->waiting = 1; /* RFC 8441 3: not before the server said it takes them */
    } else if (us_submit(us) != 0) {
        px_tfree(us);
        px_stream_up_fail(st, 502, PX_R_UPSTREAM_SUBMIT_FAILED);
        return;
    }
    us->next = uc->streams;
    if (uc->streams)
        uc->streams->prev = us;
    uc->streams = us;
    uc->nstreams++;
    st->up = &uph2_ops;
    st->up_ctx = us;
    schedule_send(uc);
}

void px_up_h2_pool_free(struct px_pool *pool)
{
    while (pool->h2conns != NULL)
        uc_fail(pool->h2conns, PX_R_SHUTDOWN);
}
