/*
 * wlapi.c - the Workload API client (wlapi.h): one gRPC call,
 * /SpiffeWorkloadAPI/FetchX509SVID, server streaming, over HTTP/2
 * cleartext with prior knowledge (RFC 9113 3.3) on a Unix socket, driven by
 * nghttp2 on a libevent base. Nothing here blocks: the connect, every read
 * and write go through a bufferevent.
 *
 * gRPC over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md): a POST with content-type
 * application/grpc and te: trailers; each message is a 5-byte prefix
 * (compressed flag, 4-byte big-endian length) and the protobuf bytes; the
 * call ends with trailers carrying grpc-status. The Workload API also wants
 * the header `workload.spiffe.io: true` on every call (SPIFFE Workload
 * Endpoint spec 6.2), so a server can refuse calls a browser or a proxy
 * made up.
 *
 * Bounds: a message over PX_WLAPI_MAX_MSG is refused from its prefix
 * alone, before its bytes are kept; response header and trailer fields are
 * capped at PX_WLAPI_MAX_HEADERS; nghttp2's flood limits (SETTINGS, queued
 * acknowledgements, CONTINUATION) apply. Buffered input is at most one
 * message plus one flow-control window.
 *
 * Whatever ends the stream (the server ends it, a gRPC error status, a
 * protocol error, a refused message, the connection closing) ends the
 * connection too, and a new one is made after a jittered exponential
 * backoff; a stream that delivered a message resets the backoff.
 */
#include "wlapi.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/rand.h>

#include "config.h"

#define GRPC_PATH "/SpiffeWorkloadAPI/FetchX509SVID"

struct px_wlapi_client {
    struct event_base *base;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    const struct px_wlapi_ops *ops;
    void *arg;
    int reconnect;
    int done;             /* no reconnect: the one attempt has ended */
    int backoff_n;        /* attempts since the last stream that delivered a message */
    struct event *retry;  /* the next attempt */
    struct event *ender;  /* ends the connection outside nghttp2's callbacks */

    /* one connection and its one stream */
    struct bufferevent *bev;
    nghttp2_session *s;
    int32_t stream_id;
    size_t body_sent;     /* bytes of the request's one message sent */
    int connected;        /* the server's SETTINGS arrived */
    int answered;         /* response headers accepted */
    int got_message;      /* this stream delivered a message */
    int status;           /* :status */
    int grpc_ct;          /* content-type is application/grpc[+proto|;...] */
    int grpc_status;      /* -1 until a grpc-status field arrives */
    char grpc_message[200];
    size_t header_bytes;
    struct evbuffer *in;  /* gRPC frames of the response, not yet whole */
    /* why the connection is to end (set inside callbacks, acted on after) */
    const char *end_reason;
    char end_detail[300];
};

/* ---- ending and retrying ------------------------------------------------ */

static void connect_now(struct px_wlapi_client *c);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    connect_now(arg);
}

/* Delay before attempt n (0-based): 500 ms doubling, capped at 30 s, drawn
 * from the upper half so that many sidecars restarted together spread out
 * ("equal jitter"). */
static int64_t backoff_ms(int n)
{
    int64_t d = PX_WLAPI_BACKOFF_MIN_MS;
    unsigned r = 0;
    for (int i = 0; i < n && d < PX_WLAPI_BACKOFF_MAX_MS; i++)
        d *= 2;
    if (d > PX_WLAPI_BACKOFF_MAX_MS)
        d = PX_WLAPI_BACKOFF_MAX_MS;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        r = (unsigned)rand();
    return d / 2 + (int64_t)(r % (unsigned)(d / 2 + 1));
}

/* Tears the connection down and reports why; schedules the next attempt. */
static void end_conn(struct px_wlapi_client *c, const char *reason, const char *detail)
{
    int64_t next = -1;
    if (c->s != NULL) {
        nghttp2_session_del(c->s);
        c->s = NULL;
    }
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    evbuffer_drain(c->in, evbuffer_get_length(c->in));
    c->connected = 0;
    c->answered = 0;
    c->end_reason = NULL;
    if (c->got_message)
        c->backoff_n = 0;
    if (c->reconnect) {
        struct timeval tv;
        next = backoff_ms(c->backoff_n);
        if (c->backoff_n < 30)
            c->backoff_n++;
        tv.tv_sec = (time_t)(next / 1000);
        tv.tv_usec = (suseconds_t)((next % 1000) * 1000);
        evtimer_add(c->retry, &tv);
    } else {
        c->done = 1;
    }
    c->ops->state(c->arg, 0, reason, detail, next);
}

/* Inside nghttp2's callbacks the session must live on: note the end, act
 * after nghttp2_session_mem_recv returns (or from the ender event). */
static void mark_end(struct px_wlapi_client *c, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mark_end(struct px_wlapi_client *c, const char *reason, const char *fmt, ...)
{
    va_list ap;
    if (c->end_reason != NULL)
        return; /* the first cause is the one reported */
    c->end_reason = reason;
    va_start(ap, fmt);
    vsnprintf(c->end_detail, sizeof(c->end_detail), fmt, ap);
    va_end(ap);
    event_active(c->ender, EV_TIMEOUT, 0);
}

static void ender_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_wlapi_client *c = arg;
    (void)fd;
    (void)what;
    if (c->end_reason != NULL && (c->s != NULL || c->bev != NULL))
        end_conn(c, c->end_reason, c->end_detail);
}

/* ---- HTTP/2 ------------------------------------------------------------ */

static void flush(struct px_wlapi_client *c)
{
    const uint8_t *data;
    ssize_t n;
    if (c->s == NULL || c->bev == NULL)
        return;
    while ((n = nghttp2_session_mem_send(c->s, &data)) > 0)
        if (bufferevent_write(c->bev, data, (size_t)n) != 0) {
            mark_end(c, "internal_error", "out of memory");
            return;
        }
    if (n < 0)
        mark_end(c, "protocol_error", "%s", nghttp2_strerror((int)n));
    else if (!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s) &&
             evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        mark_end(c, "closed", "the HTTP/2 session ended (GOAWAY)");
}

/* The request's one message: an empty X509SVIDRequest (0 bytes) behind its
 * 5-byte prefix (not compressed, length 0). */
static ssize_t body_read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct px_wlapi_client *c = user;
    static const uint8_t msg[5] = {0, 0, 0, 0, 0};
    size_t n = sizeof(msg) - c->body_sent;
    (void)s;
    (void)sid;
    (void)src;
    if (n > len)
        n = len;
    memcpy(buf, msg + c->body_sent, n);
    c->body_sent += n;
    if (c->body_sent == sizeof(msg))
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    struct px_wlapi_client *c = user;
    (void)s;
    (void)flags;
    if (f->hd.stream_id != c->stream_id)
        return 0;
    c->header_bytes += namelen + valuelen + 32;
    if (c->header_bytes > PX_WLAPI_MAX_HEADERS) {
        mark_end(c, "headers_too_large", "response fields over %d bytes", PX_WLAPI_MAX_HEADERS);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        c->status = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            if (value[i] >= '0' && value[i] <= '9')
                c->status = c->status * 10 + (value[i] - '0');
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        c->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                     (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 4; i++)
            v = v * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
        c->grpc_status = v;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t n = valuelen < sizeof(c->grpc_message) - 1 ? valuelen : sizeof(c->grpc_message) - 1;
        for (size_t i = 0; i < n; i++)
            c->grpc_message[i] = value[i] >= 0x20 && value[i] < 0x7f ? (char)value[i] : '?';
        c->grpc_message[n] = '\0';
    }
    return 0;
}

/* gRPC status codes by number, for the log. */
static const char *grpc_code_name(int code)
{
    static const char *const names[] = {
        "OK",           "CANCELLED",        "UNKNOWN",           "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",   "ALREADY_EXISTS",    "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",       "UNAVAILABLE",       "DATA_LOSS",
        "UNAUTHENTICATED"};
    return code >= 0 && code < (int)(sizeof(names) / sizeof(names[0])) ? names[code] : "UNKNOWN";
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
    struct px_wlapi_client *c = user;
    (void)s;
    /* the server's first SETTINGS: an HTTP/2 server is there */
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && !c->connected) {
        c->connected = 1;
        c->ops->state(c->arg, 1, "connected", "", 0);
        return 0;
    }
    if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != c->stream_id)
        return 0;
    if (f->headers.cat == NGHTTP2_HCAT_RESPONSE && c->status >= 100 && c->status < 200)
        return 0; /* interim response */
    if (!c->answered && f->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        if (c->status != 200 || (!c->grpc_ct && c->grpc_status < 0)) {
            mark_end(c, "bad_response", "HTTP status %d%s", c->status,
                     c->grpc_ct ? "" : ", not application/grpc");
            return 0;
        }
        c->answered = 1;
    }
    return 0;
}

/* Takes every whole gRPC message out of c->in; refuses one that is
 * compressed (picket asks for none) or over PX_WLAPI_MAX_MSG from its
 * prefix, before keeping its bytes. */
static void take_messages(struct px_wlapi_client *c)
{
    for (;;) {
        uint8_t hd[5];
        size_t have = evbuffer_get_length(c->in), mlen;
        uint8_t *msg;
        if (have < 5 || c->end_reason != NULL)
            return;
        evbuffer_copyout(c->in, hd, 5);
        mlen = ((size_t)hd[1] << 24) | ((size_t)hd[2] << 16) | ((size_t)hd[3] << 8) | hd[4];
        if (hd[0] != 0) {
            c->ops->refused(c->arg, "compressed", "a compressed message (picket asks for none)");
            mark_end(c, "refused_message", "compressed message");
            return;
        }
        if (mlen > PX_WLAPI_MAX_MSG) {
            char d[100];
            snprintf(d, sizeof(d), "message of %zu bytes, limit %d", mlen, PX_WLAPI_MAX_MSG);
            c->ops->refused(c->arg, "too_large", d);
            mark_end(c, "refused_message", "%s", d);
            return;
        }
        if (have < 5 + mlen)
            return;
        evbuffer_drain(c->in, 5);
        msg = malloc(mlen ? mlen : 1);
        if (msg == NULL) {
            mark_end(c, "internal_error", "out of memory");
            return;
        }
        evbuffer_remove(c->in, msg, mlen);
        c->got_message = 1;
        c->ops->message(c->arg, msg, mlen);
        free(msg);
    }
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *user)
{
    struct px_wlapi_client *c = user;
    (void)s;
    (void)flags;
    if (sid != c->stream_id || c->end_reason != NULL)
        return 0;
    if (!c->answered) {
        mark_end(c, "bad_response", "data before response headers");
        return 0;
    }
    if (evbuffer_add(c->in, data, len) != 0) {
        mark_end(c, "internal_error", "out of memory");
        return 0;
    }
    take_messages(c);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *user)
{
    struct px_wlapi_client *c = user;
    (void)s;
    if (sid != c->stream_id)
        return 0;
    if (code != NGHTTP2_NO_ERROR)
        mark_end(c, "stream_reset", "stream reset (%s)", nghttp2_http2_strerror(code));
    else if (c->grpc_status > 0)
        mark_end(c, "grpc_status", "%d %s%s%s", c->grpc_status, grpc_code_name(c->grpc_status),
                 c->grpc_message[0] ? ": " : "", c->grpc_message);
    else
        mark_end(c, "stream_ended", "the server ended the stream (grpc-status %d)",
                 c->grpc_status);
    return 0;
}

static int start_session(struct px_wlapi_client *c)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
                                   {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, PX_WLAPI_MAX_HEADERS}};
    const nghttp2_nv nva[] = {
#define NV(n, v)                                                                                   \
    {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", GRPC_PATH),
        NV(":authority", "localhost"),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("workload.spiffe.io", "true"),
        NV("user-agent", "picket"),
#undef NV
    };
    nghttp2_data_provider body = {.source = {.ptr = NULL}, .read_callback = body_read_cb};
    int rc = -1;

    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    if (nghttp2_session_client_new2(&c->s, cbs, c, opt) != 0)
        goto out;
    /* the connection window matches the stream's: one stream per connection */
    if (nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, 1 << 20) != 0)
        goto out;
    c->body_sent = 0;
    c->status = 0;
    c->grpc_ct = 0;
    c->grpc_status = -1;
    c->grpc_message[0] = '\0';
    c->header_bytes = 0;
    c->got_message = 0;
    c->stream_id =
        nghttp2_submit_request(c->s, NULL, nva, sizeof(nva) / sizeof(nva[0]), &body, NULL);
    if (c->stream_id < 0)
        goto out;
    rc = 0;
out:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    return rc;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct px_wlapi_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (evbuffer_get_length(in) > 0 && c->s != NULL && c->end_reason == NULL) {
        struct evbuffer_iovec v;
        ssize_t n;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        n = nghttp2_session_mem_recv(c->s, v.iov_base, v.iov_len);
        if (n < 0) {
            mark_end(c, "protocol_error", "%s", nghttp2_strerror((int)n));
            break;
        }
        evbuffer_drain(in, (size_t)n);
    }
    flush(c);
    if (c->end_reason != NULL)
        end_conn(c, c->end_reason, c->end_detail);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct px_wlapi_client *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        if (start_session(c) != 0) {
            end_conn(c, "internal_error", "cannot start the HTTP/2 session");
            return;
        }
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        flush(c);
        if (c->end_reason != NULL)
            end_conn(c, c->end_reason, c->end_detail);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        int e = EVUTIL_SOCKET_ERROR();
        if (c->s == NULL)
            end_conn(c, "connect_failed", (what & BEV_EVENT_ERROR) && e ? strerror(e) : "closed");
        else
            end_conn(c, "closed", (what & BEV_EVENT_ERROR) && e ? strerror(e)
                                                                : "the server closed the connection");
    }
}

static void connect_now(struct px_wlapi_client *c)
{
    struct sockaddr_un sa;
    int fd;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        end_conn(c, "connect_failed", strerror(errno));
        return;
    }
    c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        close(fd);
        end_conn(c, "internal_error", "out of memory");
        return;
    }
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    /* A Unix socket connects (or fails: ENOENT, ECONNREFUSED) at once;
     * libevent reports either through event_cb. */
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&sa, (int)sizeof(sa)) != 0) {
        int e = errno;
        end_conn(c, "connect_failed", strerror(e));
    }
}

/* ---- lifetime ------------------------------------------------------------ */

struct px_wlapi_client *px_wlapi_client_new(struct event_base *base, const char *uri,
                                            const struct px_wlapi_ops *ops, void *arg,
                                            int reconnect, char *err, size_t errlen)
{
    struct px_wlapi_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (px_config_socket_path(uri, c->path, sizeof(c->path), err, errlen) != 0) {
        free(c);
        return NULL;
    }
    c->base = base;
    c->ops = ops;
    c->arg = arg;
    c->reconnect = reconnect;
    c->in = evbuffer_new();
    c->retry = evtimer_new(base, retry_cb, c);
    c->ender = event_new(base, -1, 0, ender_cb, c);
    if (c->in == NULL || c->retry == NULL || c->ender == NULL) {
        snprintf(err, errlen, "out of memory");
        px_wlapi_client_free(c);
        return NULL;
    }
    /* the first attempt from the loop, so callbacks never run inside _new */
    {
        struct timeval now = {0, 0};
        evtimer_add(c->retry, &now);
    }
    return c;
}

int px_wlapi_client_done(const struct px_wlapi_client *c)
{
    return c->done;
}

void px_wlapi_client_free(struct px_wlapi_client *c)
{
    if (c == NULL)
        return;
    if (c->s != NULL)
        nghttp2_session_del(c->s);
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    if (c->retry != NULL)
        event_free(c->retry);
    if (c->ender != NULL)
        event_free(c->ender);
    if (c->in != NULL)
        evbuffer_free(c->in);
    free(c);
}
