/*
 * h1_request.c - the request side of downstream HTTP/1.x (h1.c): takes
 * each request off the connection's input, checks its head, and frames
 * its body into the stream. Owns the section pre-scan, the http_parser
 * callbacks, the head checks, Expect handling and the chunked decoder;
 * refusals go through px_h1_refuse() in h1.c.
 *
 * Framing is where request smuggling lives, so this file does not leave it
 * to a lenient parser. Debian's libhttp_parser is built non-strict: it
 * takes bare LF line ends, spaces inside field names, tabs in the target
 * and any two bytes after chunk data. So:
 *   - the header block is pre-scanned here (scan_*): every line ends in
 *     CRLF, no bare CR or LF, no NUL, no obs-fold (RFC 9112 5.2 lets a
 *     server reject it), and the block is bounded by max_header_list_size
 *     plus REQ_LINE_MAX (h1.c);
 *   - http_parser only splits the request line and fields of a block
 *     already known to be complete; names, values, target and Host are
 *     re-checked here;
 *   - the body is framed here (RFC 9112 6.3): Content-Length or chunked,
 *     never both; Transfer-Encoding must be exactly one "chunked"; one
 *     Content-Length value; chunked is decoded strictly (RFC 9112 7.1).
 * A request that fails any of this gets 400 and the connection closes:
 * after a framing error nobody knows where the next request starts.
 */
#include "h1_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#define CHUNK_EXT_MAX 4096    /* chunk extensions per chunk line (we drop them) */
#define CHUNK_DIGITS_MAX 15   /* chunk-size below 2^60: no overflow */
#define CL_DIGITS_MAX 18      /* Content-Length below 10^18: no overflow */

/* ---- section pre-scan (RFC 9112 2.2, 5.2) ------------------------------ */

static void scan_reset(struct px_h1 *h, size_t lines)
{
    h->scan_off = 0;
    h->scan_linelen = 0;
    h->scan_lines = lines; /* 1 for trailers: there is no start line */
    h->scan_cr = 0;
}

/* Checks p[0..n), the bytes after the h->scan_off already checked. Returns
 * 1 when the empty line ending the section was seen (h->scan_off is then
 * the section length), 0 when more bytes are needed, -1 on a bare CR or
 * LF, a NUL, or a line starting with whitespace (obs-fold). Empty lines
 * before a request line are skipped (RFC 9112 2.2) but counted. */
static int scan_bytes(struct px_h1 *h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = p[i];
        h->scan_off++;
        if (h->scan_cr) {
            if (ch != '\n')
                return -1;
            h->scan_cr = 0;
            if (h->scan_linelen == 0) {
                if (h->scan_lines > 0)
                    return 1;
                continue;
            }
            h->scan_lines++;
            h->scan_linelen = 0;
            continue;
        }
        if (ch == '\r') {
            h->scan_cr = 1;
            continue;
        }
        if (ch == '\n' || ch == '\0')
            return -1;
        if (h->scan_linelen == 0 && (ch == ' ' || ch == '\t'))
            return -1;
        h->scan_linelen++;
    }
    return 0;
}

/* Scans the unscanned input without pulling it up (a client trickling
 * bytes must not make us copy the block again on every read). Returns as
 * scan_bytes(), or -2 when the section exceeds max bytes. */
static int scan_input(struct px_h1 *h, struct evbuffer *in, size_t max)
{
    struct evbuffer_ptr ptr;
    struct evbuffer_iovec v;
    size_t len = evbuffer_get_length(in);

    while (h->scan_off < len) {
        size_t n;
        int r;
        if (h->scan_off >= max)
            return -2;
        if (evbuffer_ptr_set(in, &ptr, h->scan_off, EVBUFFER_PTR_SET) != 0 ||
            evbuffer_peek(in, -1, &ptr, &v, 1) < 1 || v.iov_len == 0)
            return 0;
        n = v.iov_len < max - h->scan_off ? v.iov_len : max - h->scan_off;
        r = scan_bytes(h, v.iov_base, n);
        if (r != 0)
            return r;
    }
    return h->scan_off >= max ? -2 : 0;
}

/* ---- request head ------------------------------------------------------ */

static int flush_field(struct px_h1 *h)
{
    const char *v = h->fval;
    size_t vlen = h->fval_len;
    if (h->fstate == 0)
        return 0;
    h->fstate = 0;
    if (v == NULL)
        v = "";
    px_ows_trim(&v, &vlen);
    if (!px_field_name_ok(h->fname, h->fname_len) || !px_field_value_ok(v, vlen)) {
        h->err_status = 400;
        h->err_reason = PX_R_BAD_HEADER;
        return -1;
    }
    switch (px_request_add_field(&h->st->rq, h->c->snap->cfg, h->fname, h->fname_len, v, vlen)) {
    case 0:
        return 0;
    case -1: /* limits.max_headers or max_header_list_size, counted as received */
    case -3:
        h->err_status = h->st->rq.limit_status;
        h->err_reason = h->st->rq.limit_reason;
        return -1;
    default:
        h->err_status = 500;
        h->err_reason = PX_R_OUT_OF_MEMORY;
        return -1;
    }
}

/* The whole block is one contiguous buffer, so every element arrives in
 * one callback; a continuation that is not contiguous cannot happen, and is
 * refused rather than guessed at. */
static int on_url(http_parser *p, const char *at, size_t n)
{
    struct px_h1 *h = p->data;
    if (h->url != NULL && at != h->url + h->url_len)
        return -1;
    if (h->url == NULL)
        h->url = at;
    h->url_len += n;
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t n)
{
    struct px_h1 *h = p->data;
    if (h->fstate == 1) {
        if (at != h->fname + h->fname_len)
            return -1;
        h->fname_len += n;
        return 0;
    }
    if (flush_field(h) != 0)
        return -1;
    h->fstate = 1;
    h->fname = at;
    h->fname_len = n;
    h->fval = NULL;
    h->fval_len = 0;
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t n)
{
    struct px_h1 *h = p->data;
    if (h->fstate == 2) {
        if (at != h->fval + h->fval_len)
            return -1;
        h->fval_len += n;
        return 0;
    }
    h->fstate = 2;
    h->fval = at;
    h->fval_len = n;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct px_h1 *h = p->data;
    if (flush_field(h) != 0)
        return -1;
    return 1; /* "no body": this file frames the body itself */
}

static int on_message_complete(http_parser *p)
{
    struct px_h1 *h = p->data;
    h->msg_seen = 1;
    return 0;
}

static const http_parser_settings req_settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

static int target_ok(const char *p, size_t n)
{
    /* origin-form only (RFC 9112 3.2.1); absolute-form, authority-form and
     * "*" are refused. Visible ASCII only: no SP, HTAB, controls, or raw
     * bytes >= 0x80; '#' never belongs in a request target. */
    if (n == 0 || p[0] != '/')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '#')
            return 0;
    }
    return 1;
}

static int eq_ci(const struct px_hdr *f, const char *s)
{
    const char *v = f->value;
    size_t n = f->vlen;
    px_ows_trim(&v, &n);
    return strlen(s) == n && strncasecmp(v, s, n) == 0;
}

/* Framing checks on the parsed head (RFC 9112 3.2, 6.1, 6.3): what must
 * hold before anyone can know where this request ends. Everything about
 * what the request means (method, Host, path, fields) is the canonical
 * request's (request.h), the same code for HTTP/2. Returns 0, or refuses
 * the request and returns -1. */
static int check_head(struct px_h1 *h)
{
    struct px_stream *st = h->st;
    const struct px_hdr *cl = NULL;
    size_t nte = 0, ncl = 0;
    int te_chunked = 0;
    uint64_t len = 0;

    if (h->hp.http_major != 1 || h->hp.http_minor > 1) {
        px_h1_refuse(h, 505, PX_R_UNSUPPORTED_VERSION);
        return -1;
    }
    h->http10 = h->hp.http_minor == 0;
    st->http10 = h->http10;
    if (!target_ok(h->url, h->url_len)) {
        px_h1_refuse(h, 400, PX_R_BAD_TARGET);
        return -1;
    }
    for (size_t i = 0; i < st->rq.hdrs.n; i++) {
        const struct px_hdr *f = &st->rq.hdrs.v[i];
        if (strcmp(f->name, "transfer-encoding") == 0) {
            nte++;
            te_chunked = eq_ci(f, "chunked");
        } else if (strcmp(f->name, "content-length") == 0) {
            if (cl != NULL && (cl->vlen != f->vlen || memcmp(cl->value, f->value, f->vlen) != 0)) {
                px_h1_refuse(h, 400, PX_R_BAD_CONTENT_LENGTH);
                return -1;
            }
            cl = f;
            ncl++;
        }
    }
    if (nte > 0) {
        /* Both length mechanisms is the classic smuggling setup; a 1.0
         * message with Transfer-Encoding is treated as faulty (RFC 9112
         * 6.1); any coding but a single "chunked" we cannot frame. */
        if (ncl > 0) {
            px_h1_refuse(h, 400, PX_R_AMBIGUOUS_FRAMING);
            return -1;
        }
        if (nte != 1 || !te_chunked || h->http10) {
            px_h1_refuse(h, 400, PX_R_BAD_TRANSFER_ENCODING);
            return -1;
        }
        h->body = BODY_CHUNKED;
        h->ck = CK_SIZE;
        h->ck_size = 0;
        h->ck_digits = 0;
    } else if (cl != NULL) {
        if (cl->vlen == 0 || cl->vlen > CL_DIGITS_MAX) {
            px_h1_refuse(h, 400, PX_R_BAD_CONTENT_LENGTH);
            return -1;
        }
        for (size_t i = 0; i < cl->vlen; i++) {
            if (cl->value[i] < '0' || cl->value[i] > '9') {
                px_h1_refuse(h, 400, PX_R_BAD_CONTENT_LENGTH);
                return -1;
            }
            len = len * 10 + (uint64_t)(cl->value[i] - '0');
        }
        h->body = len > 0 ? BODY_LENGTH : BODY_NONE;
        h->body_left = len;
        st->rq.content_length = (int64_t)len;
    } else {
        h->body = BODY_NONE; /* RFC 9112 6.3 rule 7: no body */
    }
    {
        const char *m = http_method_str((enum http_method)h->hp.method);
        if (px_request_set_method(&st->rq, m, strlen(m)) != 0 ||
            px_request_set_target(&st->rq, h->url, h->url_len) != 0) {
            px_h1_refuse(h, 500, PX_R_OUT_OF_MEMORY);
            return -1;
        }
    }
    return 0;
}

static void process_head(struct px_h1 *h)
{
    struct evbuffer *in = bufferevent_get_input(h->c->bev);
    struct px_stream *st;
    const char *block;
    size_t len, n;
    int r = scan_input(h, in, h->block_max);

    if (r == 0)
        return;
    if (r < 0) {
        px_h1_refuse(h, r == -2 ? 431 : 400, r == -2 ? PX_R_HEADERS_TOO_LARGE : PX_R_MALFORMED_REQUEST);
        return;
    }
    len = h->scan_off;
    block = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    st = px_stream_new(h->c, &px_h1_ops, h);
    if (st != NULL && h->c->identity_ended != PX_R_NONE) {
        /* the peer's certificate expired or is no longer trusted: no new
         * request on this connection (403, then close) */
        h->st = st;
        h->resp_ready_seen = h->resp_started = h->resp_done = 0;
        evbuffer_drain(in, len);
        h->rq = RQ_DEAD;
        h->close_after = 1;
        px_stream_respond(st, 403, "forbidden: client certificate no longer valid\n", PX_GRPC_PERMISSION_DENIED,
                          h->c->identity_ended);
        return;
    }
    if (st != NULL && px_stream_refuse_for_memory(st)) {
        /* this connection holds more than its share of a budget under
         * pressure: no new request on it (503, then close) */
        h->st = st;
        h->resp_ready_seen = h->resp_started = h->resp_done = 0;
        evbuffer_drain(in, len);
        h->rq = RQ_DEAD;
        h->close_after = 1;
        px_stream_respond(st, 503, "overloaded\n", PX_GRPC_UNAVAILABLE, PX_R_MEMORY_PRESSURE);
        return;
    }
    if (block == NULL || st == NULL) {
        if (st != NULL)
            px_stream_down_done(st);
        h->rq = RQ_DEAD;
        h->closing = 1;
        return;
    }
    h->st = st;
    h->resp_ready_seen = h->resp_started = h->resp_done = 0;
    h->url = h->fname = h->fval = NULL;
    h->url_len = h->fname_len = h->fval_len = 0;
    h->fstate = h->msg_seen = h->err_status = 0;
    h->err_reason = PX_R_NONE;
    http_parser_init(&h->hp, HTTP_REQUEST);
    h->hp.data = h;
    n = http_parser_execute(&h->hp, &req_settings, block, len);
    if (h->err_status != 0) {
        px_h1_refuse(h, h->err_status, h->err_reason);
        return;
    }
    if (HTTP_PARSER_ERRNO(&h->hp) != HPE_OK || n != len || !h->msg_seen) {
        enum http_errno e = HTTP_PARSER_ERRNO(&h->hp);
        px_h1_refuse(h, e == HPE_HEADER_OVERFLOW ? 431 : 400,
                     e == HPE_HEADER_OVERFLOW ? PX_R_HEADERS_TOO_LARGE
                     : e == HPE_INVALID_METHOD ? PX_R_BAD_METHOD
                                               : PX_R_MALFORMED_REQUEST);
        return;
    }
    if (check_head(h) != 0)
        return;
    h->keep_alive = http_should_keep_alive(&h->hp);
    if (!h->keep_alive)
        h->close_after = 1;
    evbuffer_drain(in, len);
    px_h1_disarm(h); /* the upstream timeout covers the rest of the exchange */
    if (h->body == BODY_NONE) {
        st->req_eof = 1;
        h->rq = RQ_DONE;
    } else {
        h->rq = RQ_BODY;
    }
    /* An Expect: 100-continue is answered by px_h1_ops.request_allowed
     * once (and only if) the decision lets the request through. */
    px_stream_dispatch(st);
}

/* ---- request body (RFC 9112 6.3, 7.1) ---------------------------------- */

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* One byte of chunk framing. Returns 0, or -1 when it is not allowed:
 * unlike the library we take exactly CRLF after sizes and data. */
static int chunk_byte(struct px_h1 *h, unsigned char ch)
{
    int d;
    switch (h->ck) {
    case CK_SIZE:
        d = hexval(ch);
        if (d >= 0) {
            if (h->ck_digits == CHUNK_DIGITS_MAX)
                return -1;
            h->ck_size = h->ck_size * 16 + (uint64_t)d;
            h->ck_digits++;
            return 0;
        }
        if (h->ck_digits == 0)
            return -1;
        if (ch == '\r') {
            h->ck = CK_SIZE_LF;
            return 0;
        }
        if (ch != ';' && ch != ' ' && ch != '\t')
            return -1;
        h->ck = CK_EXT;
        h->ck_semi = ch == ';';
        h->ck_linelen = 0;
        return 0;
    case CK_EXT:
        /* chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ): dropped,
         * since we re-chunk; only checked for controls and length. */
        if (++h->ck_linelen > CHUNK_EXT_MAX)
            return -1;
        if (ch == '\r') {
            if (!h->ck_semi)
                return -1; /* whitespace after the size with no extension */
            h->ck = CK_SIZE_LF;
            return 0;
        }
        if (!h->ck_semi) {
            if (ch == ';')
                h->ck_semi = 1;
            return ch == ';' || ch == ' ' || ch == '\t' ? 0 : -1;
        }
        return ch == '\t' || (ch >= 0x20 && ch != 0x7f) ? 0 : -1;
    case CK_SIZE_LF:
        if (ch != '\n')
            return -1;
        if (h->ck_size == 0) {
            h->ck = CK_TRAILER;
            scan_reset(h, 1);
        } else {
            h->ck = CK_DATA;
        }
        return 0;
    case CK_DATA_CR:
        if (ch != '\r')
            return -1;
        h->ck = CK_DATA_LF;
        return 0;
    case CK_DATA_LF:
        if (ch != '\n')
            return -1;
        h->ck = CK_SIZE;
        h->ck_size = 0;
        h->ck_digits = 0;
        return 0;
    default:
        return -1;
    }
}

/* The trailer section, once scanned: "name: value" lines into the
 * request's trailers, same syntax rules as header fields; the canonical
 * request filters them (px_stream_trailers_done). Returns 1, -1 on bad
 * syntax, -2 over a limit (431). */
static int take_trailers(struct px_h1 *h, struct evbuffer *in)
{
    size_t len = h->scan_off, pos = 0;
    const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    if (p == NULL)
        return -1;
    while (pos + 2 <= len) {
        const char *line = p + pos, *eol = memchr(line, '\r', len - pos), *colon, *v;
        size_t vlen;
        if (eol == NULL)
            return -1;
        if (eol == line)
            break;
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || !px_field_name_ok(line, (size_t)(colon - line)))
            return -1;
        v = colon + 1;
        vlen = (size_t)(eol - v);
        px_ows_trim(&v, &vlen);
        if (!px_field_value_ok(v, vlen))
            return -1;
        if (px_request_add_trailer(&h->st->rq, h->c->snap->cfg, line, (size_t)(colon - line), v,
                                   vlen) != 0)
            return -2;
        pos = (size_t)(eol - p) + 2;
    }
    evbuffer_drain(in, len);
    return 1;
}

static void move_body(struct px_h1 *h, struct evbuffer *in, size_t n)
{
    evbuffer_remove_buffer(in, h->st->req_body, n);
    h->st->bytes_in += n;
}

/* Returns 1 when the body is complete, 0 when it needs more input or more
 * room in req_body, -1 on a framing error. */
static int body_chunked(struct px_h1 *h, struct evbuffer *in, size_t *room)
{
    for (;;) {
        size_t avail = evbuffer_get_length(in), i;
        struct evbuffer_iovec v;
        const unsigned char *p;

        if (h->ck == CK_DATA) {
            size_t n = avail < *room ? avail : *room;
            if (n > h->ck_size)
                n = (size_t)h->ck_size;
            if (n == 0)
                return 0;
            move_body(h, in, n);
            *room -= n;
            h->ck_size -= n;
            if (h->ck_size == 0)
                h->ck = CK_DATA_CR;
            continue;
        }
        if (h->ck == CK_TRAILER) {
            int r = scan_input(h, in, (size_t)LIM(h)->max_header_list_size);
            if (r <= 0)
                return r == 0 ? 0 : r == -2 ? -2 : -1;
            return take_trailers(h, in);
        }
        if (avail == 0 || evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return 0;
        p = v.iov_base;
        for (i = 0; i < v.iov_len && h->ck != CK_DATA && h->ck != CK_TRAILER; i++)
            if (chunk_byte(h, p[i]) != 0)
                return -1;
        evbuffer_drain(in, i);
    }
}

static void process_body(struct px_h1 *h)
{
    struct px_stream *st = h->st;
    struct evbuffer *in = bufferevent_get_input(h->c->bev);
    size_t room = px_stream_req_room(st), room0 = room; /* limit and memory budget */
    int done;

    if (h->body == BODY_LENGTH) {
        size_t n = evbuffer_get_length(in);
        if (n > room)
            n = room;
        if (n > h->body_left)
            n = (size_t)h->body_left;
        move_body(h, in, n);
        h->body_left -= n;
        room -= n;
        done = h->body_left == 0;
    } else {
        done = body_chunked(h, in, &room);
        if (done == -2) {
            px_h1_refuse(h, 431, st->rq.limit_reason != PX_R_NONE ? st->rq.limit_reason
                                                                  : PX_R_HEADERS_TOO_LARGE);
            return;
        }
        if (done < 0) {
            px_h1_refuse(h, 400, PX_R_BAD_CHUNK);
            return;
        }
    }
    if (done) {
        st->req_eof = 1;
        h->rq = RQ_DONE;
        if (st->rq.trailers.n > 0 && px_stream_trailers_done(st) != 0)
            return;
    }
    if ((room != room0 || done) && st->up != NULL)
        st->up->request_ready(st);
}

/* A WebSocket tunnel: the client's bytes go to req_body as they are,
 * bounded like a body; its EOF, once they are all in, ends its side. */
static void process_tunnel(struct px_h1 *h)
{
    struct px_stream *st = h->st;
    struct evbuffer *in = bufferevent_get_input(h->c->bev);
    size_t n = evbuffer_get_length(in), room;
    if (st == NULL)
        return;
    room = px_stream_req_room(st);
    if (n > room)
        n = room;
    if (n > 0)
        move_body(h, in, n);
    if (h->client_eof && evbuffer_get_length(in) == 0 && !st->tunnel_eof) {
        st->tunnel_eof = 1;
        n = 1; /* news for the upstream side too */
    }
    if (n > 0 && st->up != NULL)
        st->up->request_ready(st);
}

void px_h1_process_input(struct px_h1 *h)
{
    struct evbuffer *in = bufferevent_get_input(h->c->bev);
    for (;;) {
        if (h->closing || h->abort_pending)
            return;
        switch (h->rq) {
        case RQ_IDLE:
            if (evbuffer_get_length(in) == 0 || h->st != NULL)
                return;
            h->rq = RQ_HEAD;
            scan_reset(h, 0);
            /* header_timeout runs from the first byte of a request, or from
             * the connection start for the first one (already armed). */
            if (h->tm != TM_HEADER)
                px_h1_arm(h, TM_HEADER, LIM(h)->header_timeout_ms);
            break;
        case RQ_HEAD:
            process_head(h);
            if (h->rq == RQ_HEAD)
                return;
            break;
        case RQ_BODY:
            if (h->st == NULL)
                return;
            /* A client waiting for 100 Continue sends nothing before it;
             * one that sends anyway is not read until the decision: a
             * denied request's body is never read. */
            if (h->st->rq.expect_continue && !h->st->allowed)
                return;
            process_body(h);
            if (h->rq == RQ_BODY)
                return;
            break;
        case RQ_TUNNEL:
            process_tunnel(h);
            return;
        default:
            return; /* RQ_DONE: a pipelined request waits for this response */
        }
    }
}
