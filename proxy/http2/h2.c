/*
 * h2.c - downstream HTTP/2: one nghttp2 server session per connection.
 *
 * Flow control is how bodies stay bounded. Automatic WINDOW_UPDATEs are
 * off: DATA bytes are consumed at the connection level as soon as they are
 * buffered (the per-stream window already bounds them), and at the stream
 * level only when the upstream side has taken them out of req_body. So a
 * stream never buffers more than its initial window (limits.stream_buffer)
 * and a connection never more than max_concurrent_streams of those.
 *
 * I/O: on TLS the connection owns its socket (send.h's wire; the
 * handshake's bufferevent is freed, take_socket): records are read with
 * one read(2) per readiness and decoded from the stack. Plaintext (h2c
 * with prior knowledge, and the fuzzers' bufferevent pairs) stays on the
 * bufferevent. A turn's nghttp2_session_mem_send() frames are written at
 * once (send.h: no wait for epoll; on TLS, records many to a writev); what
 * the socket does not take waits in the wire (TLS) or the bufferevent's
 * output (plaintext). We stop pulling frames
 * while more than OUT_HIGH bytes wait and continue once they are taken
 * (h2_wire_cb, or the bufferevent's write callback), so a client that does
 * not read cannot make us queue without bound.
 */
#include "h2.h"

#include "px.h"
#include "tmalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "fmt.h"
#include "fields.h"
#include "h2_mem.h"
#include "log.h"
#include "metrics.h"
#include "send.h"

#define OUT_HIGH (256 * 1024)
#define CONN_WINDOW (16 * 1024 * 1024)

struct h2_stream {
    struct h2_conn *hc;
    int32_t id;
    struct px_stream *st;
    struct h2_stream *next, *prev;
    int submitted;   /* response HEADERS submitted */
    int deferred;    /* data provider returned DEFERRED */
    int dispatched;
    size_t owed;     /* request body bytes sent on but not yet given back as window:
                      * held back while the memory budget is under pressure */
    size_t granted;  /* window beyond H2_FIRST_WINDOW, from px_mem_window_take() */
    int stop_pending;   /* answered before the request ended: the rest is discarded, and
                         * past H2_DISCARD_MAX more the client is told to stop */
    size_t discarded;   /* request body bytes discarded since */
};

/* A request answered before its body ended (a refusal, an upstream that
 * answered early) is not reset at once: RST_STREAM(NO_ERROR) (RFC 9113
 * 8.1) while the client is still sending makes clients such as curl 7.88
 * fail a request whose whole answer they already have, when it races the
 * rest of a small upload. The rest is read and discarded (its window given
 * back) up to this much; a client that sends more is told to stop. */
#define H2_DISCARD_MAX (64 * 1024)

/* Where a connection is in its life. States only move forward; each
 * includes what the ones before it promised (a connection that sent its
 * GOAWAY has sent the drain notice or skipped it). */
enum h2_state {
    H2_OPEN,      /* taking streams */
    H2_DRAINING,  /* shutdown notice sent; the final GOAWAY follows after DRAIN_NOTICE_MS */
    H2_GOAWAY,    /* final GOAWAY sent: no new streams; closes when the last one ends */
    H2_CLOSING,   /* protocol error: close once the GOAWAY nghttp2 queued is written */
    H2_LINGERING, /* HTTP/2 is over; reading and dropping until EOF (h2_finish) */
    H2_DEAD       /* freed (h2_close) */
};

struct h2_conn {
    struct px_conn *c;
    nghttp2_session *s;
    struct h2_stream *streams;
    size_t nstreams;
    struct event *idle;
    struct event *send_ev; /* sends run from here, never inside a caller's stack;
                            * EV_READ in its result: a paused read goes on */
    int send_pending;      /* send_ev is active for a send: its callback has yet to run */
    enum h2_state state;
    int in_recv; /* inside mem_recv: defer sends */
    uint32_t streams_opened; /* request streams the client began */
    uint32_t client_resets;  /* RST_STREAM frames the client sent */
    int calm;                /* a peer over a limit: end with ENHANCE_YOUR_CALM */
    size_t turn_decoded;     /* field bytes decoded in this loop turn */
    int recv_paused;         /* input left for the next turn (H2_TURN_DECODE): send_ev
                              * made active with EV_READ */
    struct px_hold hold;     /* our event callbacks on the stack (px.h) */
    struct px_wire *wire;    /* TLS: the socket, read and written without a bufferevent
                              * (send.h); NULL: plaintext, through c->bev */
    struct event *rev;       /* TLS: the socket is readable */
    uint8_t *pend;           /* TLS: input read but not yet decoded (the turn's decode
                              * budget paused it, or it came with the handshake) */
    size_t pend_off, pend_len;
    struct px_out *out;      /* h2_send's, while it pulls frames (DATA goes there whole) */
    struct px_mem_tracker trk_wire;
    struct px_h2_mem mem;    /* nghttp2's allocator: frame buffer and stream map apart */
    int idle_release;        /* the idle timer's next firing is IDLE_RELEASE_MS's */
};

/* Output not yet taken by the socket: the wire's (TLS records) or the
 * bufferevent's (plaintext). */
static size_t out_queued(struct h2_conn *hc)
{
    return hc->c->bev == NULL ? px_wire_pending(hc->wire)
                              : evbuffer_get_length(bufferevent_get_output(hc->c->bev));
}

/* Field bytes (name + value + 32 each) one connection may decode per loop
 * turn before the worker serves the others: an HPACK block can make a few
 * wire bytes decode into many. */
#define H2_TURN_DECODE (256 * 1024)

/* Every stream's window at first (SETTINGS_INITIAL_WINDOW_SIZE, the
 * protocol's default); each then grows to limits.stream_buffer from the
 * process-wide window allowance (mem.h), so the uploads picket has
 * promised to take are bounded in all, not per stream. */
#define H2_FIRST_WINDOW 65535

/* After its last frame (a GOAWAY), a connection is half-closed and what
 * the peer still sends is read and dropped for up to this long before the
 * socket closes (h2_finish). */
#define LINGER_MS 1000

/* A connection with no stream for this long gives back the pages of its
 * frame buffer and its empty stream map (h2_mem.h): up to 20 KiB, at least
 * the pages its last frame and stream touched. A client that comes back
 * pays two page faults; one that sends a request every few milliseconds
 * never pays them. */
#define IDLE_RELEASE_MS 250

/* Rapid reset (CVE-2023-44487): a client that has reset at least
 * RESET_MIN streams, and at least half of all the streams it opened, is
 * ending the connection's purpose; it gets GOAWAY ENHANCE_YOUR_CALM.
 * Browsers and gRPC cancel streams too, but not most of them. nghttp2's
 * own rate limit (bursts of 1000, refilled at 33/s, GOAWAY INTERNAL_ERROR)
 * stays behind it as a second line. */
#define RESET_MIN 100

static int h2_send(struct h2_conn *hc);
static void h2_close(struct h2_conn *hc);
static int h2_finish(struct h2_conn *hc);

/* The other side of a stream calls us from inside its own callbacks (an
 * upstream nghttp2 session, a timer). Sending from there could close this
 * connection and free the stream under the caller's feet, so we only mark
 * the connection and send from its own event callback, which also batches
 * frames of many streams into one TLS write. */
static void schedule_send(struct h2_conn *hc)
{
    /* once per turn: a response's headers, data and end each ask, and every
     * stream of the connection that moved in this turn */
    if (hc->state < H2_LINGERING && hc->send_ev != NULL && !hc->send_pending) {
        hc->send_pending = 1;
        event_active(hc->send_ev, EV_WRITE, 0);
    }
}
static void arm_idle(struct h2_conn *hc);
static void arm_close_deadline(struct h2_conn *hc);

static const struct px_down_ops h2_ops;

/* ---- nghttp2 callbacks ------------------------------------------------- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *hc = arg;
    struct h2_stream *hs;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (hc->state >= H2_GOAWAY) {
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    hs = px_tzalloc(sizeof(*hs));
    if (hs == NULL)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    hs->hc = hc;
    hs->id = f->hd.stream_id;
    hc->streams_opened++;
    hs->st = px_stream_new(hc->c, &h2_ops, hs);
    if (hs->st == NULL) {
        px_tfree(hs);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    /* A request with a body gets its window beyond H2_FIRST_WINDOW now; one
     * whose HEADERS end the stream never sends DATA, and the WINDOW_UPDATE
     * (a frame to make, encrypt and send, for the client to read) would be
     * for nothing. */
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        size_t want = (size_t)hc->c->snap->cfg->limits.stream_buffer;
        if (want > H2_FIRST_WINDOW && px_mem_level() < PX_MEM_PAUSE &&
            (hs->granted = px_mem_window_take(want - H2_FIRST_WINDOW)) > 0)
            nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, hs->id,
                                                  H2_FIRST_WINDOW + (int32_t)hs->granted);
    }
    if (px_stream_refuse_for_memory(hs->st)) {
        px_mem_window_give(hs->granted);
        /* this connection holds more than its share of a budget under
         * pressure: the stream is refused, safe for the client to retry */
        hs->st->logged = 1;
        px_stream_down_done(hs->st);
        px_tfree(hs);
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    hs->next = hc->streams;
    if (hc->streams)
        hc->streams->prev = hs;
    hc->streams = hs;
    hc->nstreams++;
    /* the timer is the idle timeout only while the connection is open; a
     * draining one's is the final GOAWAY, which a new stream must not stop */
    if (hc->idle && hc->state == H2_OPEN)
        evtimer_del(hc->idle);
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, hs);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    struct h2_conn *hc = arg;
    struct h2_stream *hs = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    const struct px_config *cfg = hc->c->snap->cfg;
    struct px_request *rq;
    const char *n = (const char *)name, *v = (const char *)value;
    int rc = 0;

    (void)flags;
    if (hs == NULL || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    rq = &hs->st->rq;
    /* Collected as received; px_stream_dispatch() builds the canonical
     * request from it, with the same rules as HTTP/1.1 (request.h). */
    if (f->headers.cat == NGHTTP2_HCAT_HEADERS) {
        /* trailers; nghttp2 already refused pseudo-headers here */
        rc = px_request_add_trailer(rq, cfg, n, nlen, v, vlen);
    } else if (nlen > 0 && name[0] == ':') {
        if (nlen == 7 && memcmp(name, ":method", 7) == 0)
            rc = px_request_set_method(rq, v, vlen);
        else if (nlen == 5 && memcmp(name, ":path", 5) == 0)
            rc = px_request_set_target(rq, v, vlen);
        else if (nlen == 10 && memcmp(name, ":authority", 10) == 0)
            rc = px_request_set_authority(rq, v, vlen);
        else if (nlen == 9 && memcmp(name, ":protocol", 9) == 0)
            rc = px_request_set_protocol(rq, v, vlen); /* extended CONNECT (RFC 8441) */
        /* :scheme: the connection's, never the client's word */
    } else {
        rc = px_request_add_field(rq, cfg, n, nlen, v, vlen);
    }
    if (rc == -3) {
        /* Over limits.max_header_list_size of decoded fields: finishing the
         * block (which HPACK requires to keep the connection) is the work
         * an HPACK bomb wants done, so the connection ends here. */
        px_log(PX_LOG_INFO, "h2_header_list_too_large", "peer", hc->c->peer_addr, NULL);
        hc->calm = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (rc == -2)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* out of memory: reset the stream */
    /* Over the field count (-1) the request is refused once the block is
     * in. One connection decodes at most H2_TURN_DECODE bytes of fields per
     * loop turn, then lets the others run. */
    hc->turn_decoded += nlen + vlen + 32;
    if (hc->turn_decoded > H2_TURN_DECODE) {
        hc->recv_paused = 1;
        return NGHTTP2_ERR_PAUSE;
    }
    return 0;
}

static void request_body_ready(struct px_stream *st)
{
    if (st->up)
        st->up->request_ready(st);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *hc = arg;
    struct h2_stream *hs;
    struct px_stream *st;

    (void)s;
    if (f->hd.stream_id == 0) {
        if (f->hd.type == NGHTTP2_WINDOW_UPDATE)
            for (struct h2_stream *x = hc->streams; x != NULL; x = x->next)
                if (x->st != NULL && x->st->up != NULL && !x->st->up_done)
                    x->st->up->response_drained(x->st, 0);
        return 0;
    }
    if (f->hd.type == NGHTTP2_RST_STREAM && ++hc->client_resets >= RESET_MIN &&
        (uint64_t)hc->client_resets * 2 >= hc->streams_opened) {
        px_log(PX_LOG_WARN, "h2_rapid_reset", "peer", hc->c->peer_addr, "msg",
               "most streams reset by the client: ending the connection", NULL);
        nghttp2_session_terminate_session(hc->s, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0; /* nghttp2 ignores everything the client sends from here on */
    }
    hs = nghttp2_session_get_stream_user_data(hc->s, f->hd.stream_id);
    if (hs == NULL)
        return 0;
    st = hs->st;
    switch (f->hd.type) {
    case NGHTTP2_WINDOW_UPDATE:
        /* the client can take more: the upstream side may read ahead again */
        if (st->up != NULL && !st->up_done)
            st->up->response_drained(st, 0);
        break;
    case NGHTTP2_HEADERS:
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
                st->req_eof = st->tunnel_eof = 1;
            hs->dispatched = 1;
            px_stream_dispatch(st); /* refuses 431 when a limit was passed */
        } else if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            st->req_eof = st->tunnel_eof = 1; /* trailers */
            if (px_stream_trailers_done(st) != 0)
                return 0;
            request_body_ready(st);
        }
        break;
    case NGHTTP2_DATA:
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            /* for a WebSocket, the client's end of the tunnel as well */
            st->req_eof = st->tunnel_eof = 1;
            request_body_ready(st);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *arg)
{
    struct h2_conn *hc = arg;
    struct h2_stream *hs = nghttp2_session_get_stream_user_data(s, id);
    (void)flags;

    nghttp2_session_consume_connection(s, len);
    if (hs == NULL || hs->st->local_response || hs->st->up_done) {
        /* Nobody will read it (refused, answered, or upstream finished):
         * discard, and reopen the window so the peer is not stuck. */
        nghttp2_session_consume_stream(s, id, len);
        if (hs != NULL && hs->stop_pending) {
            hs->discarded += len;
            if (hs->discarded > H2_DISCARD_MAX) {
                hs->stop_pending = 0;
                nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
            }
        }
        return 0;
    }
    (void)hc;
    if (evbuffer_add(hs->st->req_body, data, len) != 0) {
        /* a body with a hole is another body: the stream ends here (its
         * close callback cancels the upstream side) */
        if (hs->st->reason == PX_R_NONE)
            hs->st->reason = PX_R_OUT_OF_MEMORY;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    hs->st->bytes_in += len;
    request_body_ready(hs->st);
    return 0;
}

static void unlink_stream(struct h2_conn *hc, struct h2_stream *hs)
{
    if (hs->prev)
        hs->prev->next = hs->next;
    else
        hc->streams = hs->next;
    if (hs->next)
        hs->next->prev = hs->prev;
    hc->nstreams--;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *arg)
{
    struct h2_conn *hc = arg;
    struct h2_stream *hs = nghttp2_session_get_stream_user_data(s, id);
    struct px_stream *st;
    (void)error_code;

    if (hs == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    unlink_stream(hc, hs);
    st = hs->st;
    px_mem_window_give(hs->granted);
    px_tfree(hs);
    if (st != NULL)
        px_stream_down_done(st);
    if (hc->nstreams == 0 && hc->state < H2_CLOSING) {
        if (hc->state >= H2_GOAWAY) {
            /* draining and the last stream is done: close */
            nghttp2_session_terminate_session(hc->s, NGHTTP2_NO_ERROR);
            schedule_send(hc);
        } else if (hc->state < H2_DRAINING) {
            arm_idle(hc);
        }
    }
    return 0;
}

/* Every connection-ending GOAWAY we send with an error code (protocol
 * errors, and the floods nghttp2 cuts off by itself such as rapid reset)
 * is counted and logged here, whichever path decided it. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *arg)
{
    struct h2_conn *hc = arg;
    char labels[96];
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        /* A WebSocket that did not open (refused, or the upstream said
         * no): its client waits for nothing more and may never end its
         * side, so the stream ends here, after the whole answer went out
         * (RFC 9113 8.1: RST_STREAM NO_ERROR). */
        struct h2_stream *hs = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (hs != NULL && hs->st != NULL && hs->st->rq.upgrade && !hs->st->tunnel &&
            !hs->st->req_eof)
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
        return 0;
    }
    if (f->hd.type != NGHTTP2_GOAWAY || f->goaway.error_code == NGHTTP2_NO_ERROR)
        return 0;
    snprintf(labels, sizeof(labels), "error=\"%s\"",
             nghttp2_http2_strerror(f->goaway.error_code));
    px_counter_add(px_counter_get("picket_h2_protocol_errors_total",
                                  "HTTP/2 connections ended with an error GOAWAY (protocol "
                                  "errors, floods)",
                                  labels),
                   1);
    px_log(PX_LOG_INFO, "h2_goaway_sent", "peer", hc->c->peer_addr, "error",
           nghttp2_http2_strerror(f->goaway.error_code), NULL);
    return 0;
}

static ssize_t read_response(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    struct h2_stream *hs = src->ptr;
    struct px_stream *st = hs->st;
    size_t avail = evbuffer_get_length(st->resp_body);
    size_t n = avail < length ? avail : length;
    (void)arg;

    if (n == 0 && !st->resp_eof) {
        hs->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > 0 && hs->hc->out != NULL) {
        /* the bytes go from resp_body straight to the output in send_data
         * (one copy fewer than through nghttp2's frame buffer) */
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    } else if (n > 0) {
        evbuffer_remove(st->resp_body, buf, n);
        st->bytes_out += n;
        if (st->up)
            st->up->response_drained(st, n);
    }
    if (st->resp_eof && avail == n) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->resp_trailers.n > 0) {
            if (h2_submit_trailers(s, id, &st->resp_trailers) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
        if (!st->req_eof && !st->rq.is_grpc)
            /* Answered before the request finished (e.g. refused upload):
             * the client is told to stop sending (RFC 9113 8.1) once it
             * sends more than H2_DISCARD_MAX. Not for gRPC: grpc-core 1.51
             * turns RST_STREAM(NO_ERROR) into INTERNAL even after the
             * trailers; its requests are short and the rest is discarded
             * as it arrives. */
            hs->stop_pending = 1;
    }
    return (ssize_t)n;
}

/* A DATA frame read_response marked NO_COPY: its header, then its bytes
 * from resp_body (picket never pads). */
static int send_data(nghttp2_session *s, nghttp2_frame *f, const uint8_t *framehd, size_t length,
                     nghttp2_data_source *src, void *arg)
{
    struct h2_conn *hc = arg;
    struct h2_stream *hs = src->ptr;
    struct px_stream *st = hs->st;
    (void)s;
    if (hc->out == NULL || st == NULL || f->data.padlen > 0 ||
        px_out_add(hc->out, framehd, 9) != 0 ||
        px_out_add_evbuffer(hc->out, st->resp_body, length) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* the session ends: h2_send closes it */
    st->bytes_out += length;
    if (st->up)
        st->up->response_drained(st, length);
    return 0;
}

static int submit_response(struct h2_conn *hc, struct h2_stream *hs)
{
    struct px_stream *st = hs->st;
    size_t n = st->resp.n + 2, k = 0;
    nghttp2_nv local[H2_NV_LOCAL], *nva = h2_nv_array(local, n);
    char status[4], clen[24];
    nghttp2_data_provider prd;
    int rc, has_body;

    if (nva == NULL)
        return -1;
    /* An open WebSocket is a 200 to the extended CONNECT (RFC 8441 5) */
    int code = st->tunnel ? 200 : st->status;
    status[0] = (char)('0' + code / 100 % 10);
    status[1] = (char)('0' + code / 10 % 10);
    status[2] = (char)('0' + code % 10);
    status[3] = '\0';
    nva[k++] = H2_NV_LIT(":status", status, 3);
    for (size_t i = 0; i < st->resp.n; i++)
        nva[k++] = H2_NV_HDR(&st->resp.v[i]);
    if (st->resp_content_length >= 0) {
        size_t clen_n = px_fmt_i64(clen, st->resp_content_length);
        nva[k++] = H2_NV_LIT("content-length", clen, clen_n);
    }
    has_body = !(st->resp_eof && evbuffer_get_length(st->resp_body) == 0 &&
                 st->resp_trailers.n == 0);
    if ((st->rq.method != NULL && strcmp(st->rq.method, "HEAD") == 0) || st->status == 204 ||
        st->status == 304)
        has_body = has_body && st->resp_trailers.n > 0;
    prd.source.ptr = hs;
    prd.read_callback = read_response;
    rc = nghttp2_submit_response(hc->s, hs->id, nva, k, has_body ? &prd : NULL);
    h2_nv_array_free(nva, local);
    hs->submitted = 1;
    if (!has_body && !st->req_eof && !st->rq.is_grpc)
        hs->stop_pending = 1; /* as in read_response */
    return rc;
}

/* ---- px_down_ops -------------------------------------------------------- */

static void h2_response_ready(struct px_stream *st)
{
    struct h2_stream *hs = st->down_ctx;
    struct h2_conn *hc = hs->hc;

    if (hc->state >= H2_LINGERING)
        return;
    if (!hs->submitted) {
        if (st->status == 0)
            return;
        if (submit_response(hc, hs) != 0) {
            nghttp2_submit_rst_stream(hc->s, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_INTERNAL_ERROR);
        }
    } else if (hs->deferred) {
        hs->deferred = 0;
        nghttp2_session_resume_data(hc->s, hs->id);
    }
    schedule_send(hc);
}

/* The upstream took n request body bytes: the client gets them back as
 * window, unless the memory budget is under pressure and the stream holds
 * its share already; what is held back is given back on a later drain
 * (the stream then holds less, or the pressure is gone). */
static void h2_request_drained(struct px_stream *st, size_t n)
{
    struct h2_stream *hs = st->down_ctx;
    size_t room, pay;
    if (hs->hc->state >= H2_LINGERING)
        return;
    hs->owed += n;
    room = px_stream_req_room(st);
    pay = hs->owed < room ? hs->owed : room;
    if (pay == 0)
        return;
    hs->owed -= pay;
    nghttp2_session_consume_stream(hs->hc->s, hs->id, pay);
    schedule_send(hs->hc);
}

/* What the client can take on this stream now: the smaller of its stream
 * and connection windows. */
static size_t h2_resp_window(struct px_stream *st)
{
    struct h2_stream *hs = st->down_ctx;
    int32_t sw, cw;
    if (hs == NULL || hs->hc->state >= H2_LINGERING)
        return SIZE_MAX;
    sw = nghttp2_session_get_stream_remote_window_size(hs->hc->s, hs->id);
    cw = nghttp2_session_get_remote_window_size(hs->hc->s);
    if (sw < 0 || cw < 0)
        return 0;
    return (size_t)(sw < cw ? sw : cw);
}

/* The request was allowed: a client that sent "expect: 100-continue"
 * gets its interim response now (RFC 9110 10.1.1), never before. */
static void h2_request_allowed(struct px_stream *st)
{
    struct h2_stream *hs = st->down_ctx;
    static const nghttp2_nv cont[] = {
        {(uint8_t *)":status", (uint8_t *)"100", 7, 3,
         NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}};
    if (hs->hc->state >= H2_LINGERING || !st->rq.expect_continue || st->req_eof || hs->submitted)
        return;
    nghttp2_submit_headers(hs->hc->s, NGHTTP2_FLAG_NONE, hs->id, NULL, cont, 1, NULL);
    schedule_send(hs->hc);
}

static void h2_abort(struct px_stream *st)
{
    struct h2_stream *hs = st->down_ctx;
    if (hs->hc->state >= H2_LINGERING)
        return;
    nghttp2_submit_rst_stream(hs->hc->s, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_INTERNAL_ERROR);
    schedule_send(hs->hc);
}

static const struct px_down_ops h2_ops = {
    .response_ready = h2_response_ready,
    .request_drained = h2_request_drained,
    .request_allowed = h2_request_allowed,
    .resp_window = h2_resp_window,
    .abort = h2_abort,
};

/* ---- I/O ---------------------------------------------------------------- */

/* Writes what nghttp2 has queued. Returns -1 when the connection is over
 * (closed and freed, or lingering: the caller must not touch hc), else 0. */
static int h2_send(struct h2_conn *hc)
{
    struct px_out o;

    if (hc->state >= H2_LINGERING || hc->in_recv)
        return 0;
    for (;;) {
        int full = 1, failed = 0; /* full: stopped at OUT_HIGH, not for want of frames */
        if (hc->wire != NULL)
            px_out_begin_wire(&o, hc->wire);
        else
            px_out_begin(&o, hc->c->bev);
        hc->out = &o;
        while (out_queued(hc) + px_out_pending(&o) < px_conn_out_high(OUT_HIGH)) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(hc->s, &data);
            if (n == 0) {
                full = 0;
                break;
            }
            /* a frame nghttp2 counts as sent that is not out: the session
             * cannot go on */
            if (n < 0 || px_out_add(&o, data, (size_t)n) != 0) {
                failed = 1;
                break;
            }
        }
        hc->out = NULL;
        if (failed)
            px_out_drop(&o);
        if (failed || px_out_end(&o) != 0) {
            h2_close(hc);
            return -1;
        }
        /* Stopped at OUT_HIGH and the socket then took it all: no write
         * event will come to resume us (send.h), so go on now. */
        if (!full || out_queued(hc) >= px_conn_out_high(OUT_HIGH) / 2)
            break;
    }
    if (!nghttp2_session_want_read(hc->s) && !nghttp2_session_want_write(hc->s) &&
        out_queued(hc) == 0)
        return h2_finish(hc);
    return 0;
}

/* No more input: a connection that is closing only writes. */
static void read_stop(struct h2_conn *hc)
{
    if (hc->c->bev != NULL) {
        bufferevent_disable(hc->c->bev, EV_READ);
        bufferevent_setwatermark(hc->c->bev, EV_WRITE, 0, 0);
    } else {
        event_del(hc->rev);
    }
}

/* Feeds p[0..len) to nghttp2, inside a read (in_recv). Returns the bytes
 * it took: fewer than len when the turn's decode budget paused it
 * (recv_paused). -1: the peer broke the protocol, and the connection is
 * closing or gone; the caller returns at once. */
static ssize_t h2_feed(struct h2_conn *hc, const uint8_t *p, size_t len)
{
    ssize_t n = nghttp2_session_mem_recv(hc->s, p, len);
    if (n >= 0)
        return n;
    if (n == NGHTTP2_ERR_FLOODED)
        hc->calm = 1; /* over max_outbound_ack: frames that each want an ACK */
    px_log(PX_LOG_INFO, "h2_protocol_error", "peer", hc->c->peer_addr, "error",
           nghttp2_strerror((int)n), NULL);
    hc->in_recv = 0;
    /* nghttp2 queued a GOAWAY for most errors (ENHANCE_YOUR_CALM for
     * floods): write it, stop reading, close once it is out. */
    nghttp2_session_terminate_session(hc->s, hc->calm ? NGHTTP2_ENHANCE_YOUR_CALM
                                                      : NGHTTP2_PROTOCOL_ERROR);
    if (h2_send(hc) != 0)
        return -1; /* closed and freed (found by fuzz_h2) */
    hc->state = H2_CLOSING;
    read_stop(hc);
    if (out_queued(hc) == 0)
        h2_finish(hc);
    else
        arm_close_deadline(hc);
    return -1;
}

/* This connection's share of the turn is used: the rest of its input
 * waits for the next one, others run first. */
static void read_later(struct h2_conn *hc)
{
    event_active(hc->send_ev, EV_READ, 0);
}

static void h2_read_cb_in(struct bufferevent *bev, void *arg)
{
    struct h2_conn *hc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    if (hc->state == H2_LINGERING)
        return;
    hc->in_recv = 1;
    hc->turn_decoded = 0;
    hc->recv_paused = 0;
    while (evbuffer_get_length(in) > 0 && hc->state < H2_LINGERING) {
        size_t len = evbuffer_get_contiguous_space(in);
        unsigned char *p = evbuffer_pullup(in, (ssize_t)len);
        ssize_t n = h2_feed(hc, p, len);
        if (n < 0)
            return;
        evbuffer_drain(in, (size_t)n);
        if (hc->recv_paused) {
            read_later(hc);
            break;
        }
    }
    hc->in_recv = 0;
    h2_send(hc);
}

/* Keeps p[0..n) for the next turn, counted in the memory budget as the
 * bufferevent's input was; 0, or -1 (no memory). */
static int pend_keep(struct h2_conn *hc, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    if ((hc->pend = malloc(n)) == NULL)
        return -1;
    memcpy(hc->pend, p, n);
    hc->pend_off = 0;
    hc->pend_len = n;
    px_mem_charge(PX_MEM_SOCKETS, &hc->c->mem, (int64_t)n);
    return 0;
}

static void pend_free(struct h2_conn *hc)
{
    if (hc->pend == NULL)
        return;
    px_mem_charge(PX_MEM_SOCKETS, &hc->c->mem, -(int64_t)hc->pend_len);
    free(hc->pend);
    hc->pend = NULL;
}

/* TLS input: what a paused turn left, then records read from the socket
 * (send.h: px_wire_read) until it is empty, the turn's decode budget is
 * used, or PX_IO_CHUNK bytes were read. In the last two cases the rest
 * waits for the next turn (read_later: some of it may already be in
 * OpenSSL's read-ahead buffer, where epoll cannot see it). */
static void h2_wire_read_in(struct h2_conn *hc)
{
    uint8_t buf[16 * 1024];
    size_t taken = 0;

    if (hc->state >= H2_LINGERING)
        return;
    hc->in_recv = 1;
    hc->turn_decoded = 0;
    hc->recv_paused = 0;
    if (hc->pend != NULL) {
        ssize_t n = h2_feed(hc, hc->pend + hc->pend_off, hc->pend_len - hc->pend_off);
        if (n < 0)
            return;
        hc->pend_off += (size_t)n;
        if (hc->recv_paused)
            goto later;
        pend_free(hc);
    }
    while (hc->state < H2_LINGERING) {
        int r;
        ssize_t n;
        if (taken >= PX_IO_CHUNK)
            goto later;
        r = px_wire_read(hc->wire, buf, (int)sizeof(buf));
        if (r == PX_WIRE_AGAIN)
            break;
        if (r < 0) {
            /* the client ended its side: ours ends cleanly too (our
             * close_notify answers its own; its streams' ends are
             * theirs); after a cut, a bare close */
            hc->in_recv = 0;
            if (r == PX_WIRE_EOF)
                (void)px_wire_close_notify(hc->wire);
            h2_close(hc);
            return;
        }
        if (taken > 0) {
            /* What the last record asked for goes out before this one is
             * decoded, as when libevent called us once per record: a
             * record holds fewer control frames than nghttp2 lets wait
             * for their ACKs (max_outbound_ack), so a client that sends
             * many of them is answered, not cut off as a flood. */
            hc->in_recv = 0;
            if (h2_send(hc) != 0)
                return;
            hc->in_recv = 1;
        }
        taken += (size_t)r;
        if ((n = h2_feed(hc, buf, (size_t)r)) < 0)
            return;
        if (hc->recv_paused) {
            if (pend_keep(hc, buf + n, (size_t)r - (size_t)n) != 0) {
                hc->in_recv = 0;
                h2_close(hc);
                return;
            }
            goto later;
        }
    }
    goto out;
later:
    read_later(hc);
out:
    hc->in_recv = 0;
    h2_send(hc);
}

/* After the last frame: what the peer still sends is read and dropped
 * (h2_finish), undecrypted, until it closes. A few reads per turn. */
static void linger_drain(struct h2_conn *hc)
{
    char buf[16 * 1024];
    for (int i = 0; i < 8; i++) {
        ssize_t n = read(hc->c->fd, buf, sizeof(buf));
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        h2_close(hc); /* its FIN (or a reset) */
        return;
    }
}

static void h2_write_cb_in(struct bufferevent *bev, void *arg)
{
    struct h2_conn *hc = arg;
    (void)bev;
    if (hc->state == H2_CLOSING) {
        if (out_queued(hc) == 0)
            h2_finish(hc);
        return;
    }
    h2_send(hc);
}

static void h2_event_cb_in(struct bufferevent *bev, short what, void *arg)
{
    struct h2_conn *hc = arg;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR))
        /* the client ended its side: ours ends cleanly too (TLS: our
         * close_notify answers its own; its streams' ends are theirs) */
        (void)px_tls_close_notify(bev);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        h2_close(hc);
}

/* One event for both deferred jobs (an event less per connection): a
 * send asked for (EV_WRITE, once per turn: send_pending), and the rest of
 * an input the decode budget paused (EV_READ). libevent ORs the results
 * of an event made active twice before it runs. */
static void send_cb_in(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *hc = arg;
    (void)fd;
    if (what & EV_WRITE)
        hc->send_pending = 0;
    if ((what & EV_READ) && hc->state < H2_LINGERING) {
        /* ends with a send (inside send_cb's hold) */
        if (hc->wire != NULL)
            h2_wire_read_in(hc);
        else
            h2_read_cb_in(hc->c->bev, hc);
    } else
        (void)h2_send(hc);
}

static void idle_cb_in(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *hc = arg;
    int release = hc->idle_release; /* set by arm_idle only, for its firing */
    (void)fd;
    (void)what;
    hc->idle_release = 0;
    if (hc->state == H2_CLOSING || hc->state == H2_LINGERING) {
        h2_close(hc); /* a peer that does not read its GOAWAY, or the end of a linger */
        return;
    }
    if (hc->state == H2_DRAINING) {
        /* Phase 2 of a drain: the client has had a round trip to see the
         * shutdown notice; streams it opened until now are served, later
         * ones are refused (and are safe for it to retry elsewhere). */
        hc->state = H2_GOAWAY;
        nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->s), NGHTTP2_NO_ERROR,
                              NULL, 0);
        if (hc->nstreams == 0)
            nghttp2_session_terminate_session(hc->s, NGHTTP2_NO_ERROR);
        h2_send(hc);
        return;
    }
    if (release && hc->state == H2_OPEN) {
        /* the first stage of an idle connection's timer: the pages of its
         * frame buffer (when nothing waits in it) and of its empty stream
         * map go, then the rest of the idle timeout */
        int64_t rest = hc->c->snap->cfg->limits.idle_timeout_ms - IDLE_RELEASE_MS;
        struct timeval tv = {(time_t)(rest / 1000), (suseconds_t)((rest % 1000) * 1000)};
        if (hc->nstreams == 0 && !nghttp2_session_want_write(hc->s) && out_queued(hc) == 0)
            px_h2_mem_idle(&hc->mem);
        if (rest > 0)
            evtimer_add(hc->idle, &tv);
        return;
    }
    if (hc->nstreams == 0 && hc->state == H2_OPEN) {
        hc->state = H2_GOAWAY;
        nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(hc->s), NGHTTP2_NO_ERROR,
                              NULL, 0);
        nghttp2_session_terminate_session(hc->s, NGHTTP2_NO_ERROR);
        h2_send(hc);
    }
}

/* A peer that does not read its GOAWAY gets 1 s, then the connection goes. */
static void arm_close_deadline(struct h2_conn *hc)
{
    struct timeval tv = {1, 0};
    if (hc->idle && hc->state < H2_LINGERING)
        evtimer_add(hc->idle, &tv);
}

static void arm_idle(struct h2_conn *hc)
{
    int64_t ms = hc->c->snap->cfg->limits.idle_timeout_ms;
    struct timeval tv;
    if (hc->idle == NULL || ms <= 0 || hc->state >= H2_LINGERING)
        return;
    /* the idle timeout in two stages when it is longer than the first */
    hc->idle_release = ms > IDLE_RELEASE_MS && hc->state == H2_OPEN;
    if (hc->idle_release)
        ms = IDLE_RELEASE_MS;
    tv = (struct timeval){(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(hc->idle, &tv);
}

static void wire_end(struct h2_conn *hc)
{
    if (hc->wire != NULL) {
        px_mem_untrack(&hc->trk_wire);
        px_wire_free(hc->wire);
        hc->wire = NULL;
    }
}

/* Frees every stream still on the connection, the nghttp2 session and the
 * wire (its bytes are out: callers close or linger only when out_queued()
 * is 0, or give up on the peer). */
static void h2_release(struct h2_conn *hc)
{
    while (hc->streams != NULL) {
        struct h2_stream *hs = hc->streams;
        struct px_stream *st = hs->st;
        unlink_stream(hc, hs);
        px_mem_window_give(hs->granted);
        px_tfree(hs);
        if (st != NULL)
            px_stream_down_done(st);
    }
    if (hc->s != NULL) {
        nghttp2_session_del(hc->s);
        hc->s = NULL;
    }
    if (hc->send_ev != NULL) {
        event_free(hc->send_ev);
        hc->send_ev = NULL;
    }
    pend_free(hc);
    wire_end(hc);
}

/* The end of a closed connection's memory: now, or when the callback we
 * were inside unwinds. */
PX_NOINLINE static void h2_free(struct h2_conn *hc)
{
    struct px_conn *c = hc->c;
    if (hc->idle)
        event_free(hc->idle);
    if (hc->rev)
        event_free(hc->rev);
    free(hc);
    c->proto_ctx = NULL;
    px_conn_free(c);
}

/* Ends the connection: its streams and session at once, its memory when
 * no callback of it is on the stack (px_hold). */
static void h2_close(struct h2_conn *hc)
{
    struct px_conn *c = hc->c;
    if (hc->state == H2_DEAD)
        return;
    hc->state = H2_DEAD;
    h2_release(hc);
    if (px_hold_end(&hc->hold))
        h2_free(hc);
    else if (c->bev != NULL)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    else if (hc->rev != NULL)
        event_del(hc->rev);
}

static void linger_read_cb(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    (void)arg;
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void linger_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        h2_close(arg);
}

/* Ends a connection whose last frame (a GOAWAY) has been written out: the
 * streams and the session go now; the socket is half-closed and what the
 * peer still sends is read and dropped until it closes too, for at most
 * LINGER_MS. Closing with unread input would make the kernel send a
 * reset, and a peer that gets one may drop our GOAWAY unread: it would
 * never learn why (ENHANCE_YOUR_CALM) or which streams were processed.
 * Always returns -1: HTTP/2 on hc is over, the caller must not use it. */
static int h2_finish(struct h2_conn *hc)
{
    struct bufferevent *bev = hc->c->bev;
    evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : hc->c->fd;
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};

    if (fd < 0 || hc->idle == NULL || hc->state == H2_LINGERING) {
        h2_close(hc);
        return -1;
    }
    hc->state = H2_LINGERING; /* every stream op and nghttp2 path bails out from here on */
    /* the GOAWAY is out: a clean end */
    if (hc->wire != NULL)
        (void)px_wire_close_notify(hc->wire);
    else
        (void)px_tls_close_notify(bev);
    h2_release(hc);
    shutdown(fd, SHUT_WR);
    if (bev != NULL) {
        bufferevent_setcb(bev, linger_read_cb, NULL, linger_event_cb, hc);
        bufferevent_enable(bev, EV_READ);
    } else {
        event_add(hc->rev, NULL); /* its callback drains now (linger_drain) */
    }
    evtimer_add(hc->idle, &tv);
    return -1;
}

static void conn_close(struct px_conn *c)
{
    if (c->proto_ctx != NULL)
        h2_close(c->proto_ctx);
    else
        px_conn_free(c);
}

static void conn_end(struct px_conn *c)
{
    struct h2_conn *hc = c->proto_ctx;
    if (hc == NULL || hc->state >= H2_GOAWAY)
        return;
    /* one GOAWAY at once (not the two-phase drain): streams the client
     * opens from here on are refused, the ones in flight finish */
    hc->state = H2_GOAWAY;
    nghttp2_submit_goaway(hc->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(hc->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    if (hc->nstreams == 0)
        nghttp2_session_terminate_session(hc->s, NGHTTP2_NO_ERROR);
    schedule_send(hc);
}

/* Two-phase shutdown (RFC 9113 6.8): first a GOAWAY with the maximum stream
 * id (nghttp2's shutdown notice), so requests already on the wire are still
 * served; DRAIN_NOTICE_MS later the real GOAWAY with the last stream we
 * processed. A single immediate GOAWAY would refuse requests the client
 * sent before it could see it, and clients that do not retry lose them. */
#define DRAIN_NOTICE_MS 1000

static void conn_drain(struct px_conn *c)
{
    struct h2_conn *hc = c->proto_ctx;
    struct timeval tv = {DRAIN_NOTICE_MS / 1000, (DRAIN_NOTICE_MS % 1000) * 1000};
    if (hc == NULL || hc->state >= H2_DRAINING)
        return;
    hc->state = H2_DRAINING;
    nghttp2_submit_shutdown_notice(hc->s);
    if (hc->idle)
        evtimer_add(hc->idle, &tv);
    schedule_send(hc);
}

static const struct px_conn_ops h2_conn_ops = {
    .drain = conn_drain,
    .end = conn_end,
    .close = conn_close,
};


/* Every event callback of the connection runs inside its hold (px.h), so
 * a close from anywhere below frees it only once the callback unwinds. */
static void hold_leave(struct h2_conn *hc)
{
    if (px_hold_leave(&hc->hold))
        h2_free(hc);
}

static void h2_read_cb(struct bufferevent *bev, void *arg)
{
    struct h2_conn *hc = arg;
    px_hold_enter(&hc->hold);
    h2_read_cb_in(bev, hc);
    hold_leave(hc);
}

/* TLS: the socket is readable. */
static void h2_sock_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *hc = arg;
    (void)fd;
    (void)what;
    px_hold_enter(&hc->hold);
    if (hc->state == H2_LINGERING) {
        linger_drain(hc);
    } else if (hc->state < H2_LINGERING) {
        px_wire_read_begin(hc->wire);
        h2_wire_read_in(hc);
    }
    hold_leave(hc);
}

static void h2_write_cb(struct bufferevent *bev, void *arg)
{
    struct h2_conn *hc = arg;
    px_hold_enter(&hc->hold);
    h2_write_cb_in(bev, hc);
    hold_leave(hc);
}

/* The wire's socket took all it held (err 0), or a write failed. */
static void h2_wire_cb(void *arg, int err)
{
    struct h2_conn *hc = arg;
    px_hold_enter(&hc->hold);
    if (err)
        h2_close(hc);
    else
        h2_write_cb_in(hc->c->bev, hc);
    hold_leave(hc);
}

static void h2_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct h2_conn *hc = arg;
    px_hold_enter(&hc->hold);
    h2_event_cb_in(bev, what, hc);
    hold_leave(hc);
}

/* the connection's timers and deferred events */
static void h2_ev_cb(evutil_socket_t fd, short what, void *arg,
                     void (*fn)(evutil_socket_t, short, void *))
{
    struct h2_conn *hc = arg;
    px_hold_enter(&hc->hold);
    fn(fd, what, hc);
    hold_leave(hc);
}

static void send_cb(evutil_socket_t fd, short what, void *arg)
{
    h2_ev_cb(fd, what, arg, send_cb_in);
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
    h2_ev_cb(fd, what, arg, idle_cb_in);
}

/* TLS: the connection's socket and SSL leave the bufferevent the
 * handshake ran on, which is freed (about 1.2 KiB per connection, and
 * libevent's per-read bookkeeping): reads and writes go through the wire
 * (send.h), and px_conn_free closes the socket and frees the SSL. Bytes
 * libevent already read wait in pend. 0, or -1 (no memory). */
static int take_socket(struct h2_conn *hc)
{
    struct px_conn *c = hc->c;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    size_t n = evbuffer_get_length(in);

    if (fd < 0 ||
        (hc->rev = event_new(c->w->base, fd, EV_READ | EV_PERSIST, h2_sock_cb, hc)) == NULL)
        return -1;
    if (n > 0) {
        uint8_t *p = evbuffer_pullup(in, (ssize_t)n);
        if (p == NULL || pend_keep(hc, p, n) != 0)
            return -1;
    }
    if (SSL_up_ref(c->ssl) != 1)
        return -1;
    if ((hc->wire = px_wire_new(c->w->base, c->ssl, fd, h2_wire_cb, hc)) == NULL) {
        SSL_free(c->ssl); /* the reference just taken */
        return -1;
    }
    /* the SSL's BIO is the wire's now, and the socket ours to close (the
     * bufferevent's finalizer asks the BIO for it and gets none) */
    c->fd = fd;
    px_mem_untrack(&c->trk_in);
    px_mem_untrack(&c->trk_out);
    bufferevent_free(c->bev);
    c->bev = NULL;
    if (px_mem_track(&hc->trk_wire, px_wire_buffer(hc->wire), PX_MEM_SOCKETS, &c->mem) != 0)
        return -1;
    return event_add(hc->rev, NULL);
}

int px_h2_conn_start(struct px_conn *c)
{
    const struct px_config *cfg = c->snap->cfg;
    struct h2_conn *hc = calloc(1, sizeof(*hc));
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_settings_entry iv[6];
    int rc = -1;

    if (hc == NULL)
        return -1;
    hc->c = c;
    c->proto = PX_PROTO_H2;
    c->ops = &h2_conn_ops;
    if (px_conn_track(c) != 0 || nghttp2_session_callbacks_new(&cbs) != 0 ||
        nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, send_data);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* Flood limits (nghttp2 ends the connection with GOAWAY
     * ENHANCE_YOUR_CALM past them): rapid reset (CVE-2023-44487: RST_STREAM
     * bursts of 1000, refilled at 33/s), CONTINUATION floods (CVE-2024-27316
     * class: at most 8 CONTINUATION frames per header block), control
     * frames we would have to acknowledge (1000 queued ACKs), SETTINGS
     * entries per frame. */
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    /* Streams beyond the advertised limit are refused by nghttp2 itself. */
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    px_h2_mem_init(&hc->mem);
    if (nghttp2_session_server_new3(&hc->s, cbs, hc, opt, &hc->mem.mem) != 0)
        goto fail;
    iv[0] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                     (uint32_t)cfg->limits.max_concurrent_streams};
    iv[1] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
                                     cfg->limits.stream_buffer < H2_FIRST_WINDOW
                                         ? (uint32_t)cfg->limits.stream_buffer
                                         : H2_FIRST_WINDOW};
    iv[2] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                     (uint32_t)cfg->limits.max_header_list_size};
    iv[3] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
    /* RFC 9218: picket does not schedule by RFC 7540 priorities, so it says
     * so and nghttp2 keeps no priority tree and no closed streams for it:
     * PRIORITY floods (CVE-2019-9513 class) cost a frame parse, nothing more. */
    iv[4] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1};
    /* RFC 8441: WebSockets arrive as extended CONNECT. nghttp2 then takes
     * :protocol only on a CONNECT with :scheme and :path (else a stream
     * error), and never before this setting was sent. */
    iv[5] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1};
    if (nghttp2_submit_settings(hc->s, NGHTTP2_FLAG_NONE, iv, 6) != 0)
        goto fail;
    nghttp2_session_set_local_window_size(hc->s, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    hc->idle = evtimer_new(c->w->base, idle_cb, hc);
    hc->send_ev = event_new(c->w->base, -1, 0, send_cb, hc);
    if (hc->idle == NULL || hc->send_ev == NULL)
        goto fail;
    if (c->ssl != NULL && take_socket(hc) != 0)
        goto fail;
    c->proto_ctx = hc;
    if (c->bev != NULL) {
        bufferevent_setcb(c->bev, h2_read_cb, h2_write_cb, h2_event_cb, hc);
        bufferevent_setwatermark(c->bev, EV_WRITE, OUT_HIGH / 2, 0);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    } else if (hc->pend != NULL) {
        event_active(hc->rev, EV_READ, 0); /* what came with the handshake */
    }
    arm_idle(hc);
    rc = 0;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (c->w->drain_notified)
        conn_drain(c);
    schedule_send(hc);
    /* Bytes that arrived with the sniffed preface are already buffered. */
    if (hc->state < H2_LINGERING && c->bev != NULL &&
        evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        h2_read_cb(c->bev, hc);
    return rc;
fail:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (hc->s)
        nghttp2_session_del(hc->s);
    if (hc->idle)
        event_free(hc->idle);
    if (hc->send_ev)
        event_free(hc->send_ev);
    if (hc->rev)
        event_free(hc->rev);
    pend_free(hc);
    wire_end(hc);
    free(hc);
    c->proto_ctx = NULL;
    return -1;
}
