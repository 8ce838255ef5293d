/*
 * client.c - picket's own requests (see client.h). A call is a stream with
 * an internal downstream side that collects the response (bounded by
 * max_body) and hands it to the callback, so it gets the upstream pools,
 * mTLS identity checks, flow control and timeouts of forwarded traffic.
 */
#include "client.h"

#include "upstream.h"

#include <stdlib.h>
#include <string.h>

struct px_client_call {
    struct px_stream *st;
    px_client_cb cb;
    void *arg;
    struct event *timer;
    struct event *kick; /* the stream's news is handled here, on our own stack */
    int aborted;
    struct evbuffer *body;
    size_t max_body;
    int done;
    int64_t start_us;
};

static void call_free(struct px_client_call *call)
{
    if (call->timer)
        event_free(call->timer);
    if (call->kick)
        event_free(call->kick);
    if (call->body)
        evbuffer_free(call->body);
    free(call);
}

/* Ends the call: reports once (unless cancelled), lets the stream go. */
static void finish(struct px_client_call *call, int status, enum px_reason error)
{
    struct px_stream *st = call->st;
    struct px_client_resp r;
    char *body = NULL;
    size_t n = evbuffer_get_length(call->body);

    if (call->done)
        return;
    call->done = 1;
    if (call->cb != NULL) {
        memset(&r, 0, sizeof(r));
        r.status = status;
        r.error = error;
        r.headers = status ? &st->resp : NULL;
        r.trailers = status ? &st->resp_trailers : NULL;
        body = malloc(n + 1);
        if (body != NULL) {
            evbuffer_remove(call->body, body, n);
            body[n] = '\0';
            r.body = body;
            r.body_len = n;
        } else if (status != 0) {
            r.status = 0;
            r.error = PX_R_OUT_OF_MEMORY;
        }
        r.duration_us = px_mono_us() - call->start_us;
        call->cb(call->arg, &r);
        free(body);
    }
    call->st = NULL;
    st->down_ctx = NULL;
    px_stream_down_done(st); /* cancels the upstream side if still running */
    call_free(call);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_client_call *call = arg;
    struct px_stream *st = call->st;
    size_t n;
    (void)fd;
    (void)what;
    if (call->done || st == NULL)
        return;
    /* Too large is decided before anything else, on what is known, so the
     * answer does not depend on whether the peer's reset arrived first: an
     * announced length over the limit is refused before its body is read,
     * and a body that passed the limit stays "too large" however it ends. */
    if (st->status != 0 && !st->local_response &&
        (st->resp_content_length > (int64_t)call->max_body ||
         evbuffer_get_length(call->body) + evbuffer_get_length(st->resp_body) > call->max_body)) {
        finish(call, 0, PX_R_RESPONSE_TOO_LARGE);
        return;
    }
    if (call->aborted) {
        finish(call, 0, st->reason != PX_R_NONE ? st->reason : PX_R_UPSTREAM_RESET);
        return;
    }
    if (st->status == 0)
        return;
    if (st->local_response && st->status >= 500) {
        /* px_stream_upstream_failed() answered for the upstream. */
        finish(call, 0, st->reason != PX_R_NONE ? st->reason : PX_R_UPSTREAM_ERROR);
        return;
    }
    n = evbuffer_get_length(st->resp_body);
    if (n > 0) {
        if (evbuffer_get_length(call->body) + n > call->max_body) {
            finish(call, 0, PX_R_RESPONSE_TOO_LARGE);
            return;
        }
        evbuffer_remove_buffer(st->resp_body, call->body, n);
        if (st->up)
            st->up->response_drained(st, n);
    }
    if (st->resp_eof)
        finish(call, st->status, PX_R_NONE);
}

/* Called from inside the upstream side or px_upstream_start(): defer. */
static void c_response_ready(struct px_stream *st)
{
    struct px_client_call *call = st->down_ctx;
    if (call != NULL && !call->done)
        event_active(call->kick, EV_WRITE, 0);
}

static void c_request_drained(struct px_stream *st, size_t n)
{
    (void)st;
    (void)n;
}

static void c_abort(struct px_stream *st)
{
    struct px_client_call *call = st->down_ctx;
    if (call != NULL && !call->done) {
        call->aborted = 1;
        event_active(call->kick, EV_WRITE, 0);
    }
}

static const struct px_down_ops client_ops = {
    .response_ready = c_response_ready,
    .request_drained = c_request_drained,
    .abort = c_abort,
};

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg, 0, PX_R_TIMEOUT);
}

struct px_client_call *px_client_request(struct px_worker *w, const struct px_upstream_addr *up,
                                         const struct px_client_req *req, px_client_cb cb,
                                         void *arg)
{
    struct px_client_call *call = calloc(1, sizeof(*call));
    struct px_stream *st = NULL;
    struct timeval tv;

    if (call == NULL)
        return NULL;
    call->cb = cb;
    call->arg = arg;
    call->max_body = req->max_body;
    call->start_us = px_mono_us();
    call->body = evbuffer_new();
    call->timer = evtimer_new(w->base, timeout_cb, call);
    call->kick = event_new(w->base, -1, 0, kick_cb, call);
    st = px_stream_new_internal(w, &client_ops, call);
    if (call->body == NULL || call->timer == NULL || call->kick == NULL || st == NULL)
        goto fail;
    call->st = st;
    /* picket's own request: taken as given, never filtered or judged */
    if (px_request_set_internal(&st->rq, req->method, req->authority, req->path, req->headers) !=
        0)
        goto fail;
    if (req->body != NULL && req->body_len > 0 &&
        evbuffer_add(st->req_body, req->body, req->body_len) != 0)
        goto fail;
    st->rq.content_length = (int64_t)req->body_len;
    st->allowed = 1;
    st->req_eof = 1;
    st->upstream_name = up->url;
    tv.tv_sec = req->timeout_ms / 1000;
    tv.tv_usec = (req->timeout_ms % 1000) * 1000;
    evtimer_add(call->timer, &tv);
    /* The stream's own upstream timeout is off: the call's deadline rules. */
    px_upstream_start(w, up, st);
    return call;
fail:
    if (st != NULL) {
        st->down_ctx = NULL;
        px_stream_down_done(st);
    }
    call_free(call);
    return NULL;
}

void px_client_cancel(struct px_client_call *call)
{
    if (call == NULL || call->done)
        return;
    call->cb = NULL;
    finish(call, 0, PX_R_NONE); /* nobody is told: cb is NULL */
}
