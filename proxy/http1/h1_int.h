/*
 * h1_int.h - the downstream HTTP/1.x connection state (struct px_h1),
 * shared by h1.c (I/O, timers, responses) and h1_request.c (parsing and
 * checking the request) only. The worker's entry point is in h1.h.
 */
#ifndef PX_H1_INT_H
#define PX_H1_INT_H

#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

#include "px.h"
#include "h1.h"

/* ---- downstream connection: h1.c and h1_request.c only ---------------- */

/* RQ_TUNNEL: the upstream agreed to a WebSocket upgrade and the 101 is
 * out: the input is the tunnel's bytes, not requests. */
enum rq_state { RQ_IDLE, RQ_HEAD, RQ_BODY, RQ_DONE, RQ_TUNNEL, RQ_DEAD };
enum body_mode { BODY_NONE, BODY_LENGTH, BODY_CHUNKED };
enum ck_state { CK_SIZE, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF, CK_TRAILER };
enum tm_mode { TM_NONE, TM_HEADER, TM_IDLE, TM_LINGER };

struct px_h1 {
    struct px_conn *c;
    struct event *timer, *kick;
    enum tm_mode tm;
    http_parser hp;
    struct px_stream *st; /* current exchange; NULL between requests */
    enum rq_state rq;
    size_t block_max;

    /* section pre-scan (header block or trailers) */
    size_t scan_off, scan_linelen, scan_lines;
    int scan_cr;

    /* parse scratch: pointers into the pulled-up header block */
    const char *url, *fname, *fval;
    size_t url_len, fname_len, fval_len;
    int fstate; /* 0 none, 1 in name, 2 in value */
    int msg_seen, err_status;
    enum px_reason err_reason;

    /* request */
    int http10, keep_alive;
    enum body_mode body;
    uint64_t body_left;
    enum ck_state ck;
    uint64_t ck_size;
    size_t ck_digits, ck_linelen;
    int ck_semi;

    /* response */
    int resp_ready_seen, resp_started, resp_chunked, resp_nobody, resp_done;
    int64_t resp_left; /* Content-Length bytes still owed; -1 when not length-framed */
    int abort_pending, close_after, closing, lingering, draining;
    int client_eof; /* RQ_TUNNEL: the client closed its side */
};

#define LIM(h) (&(h)->c->snap->cfg->limits)

/* The down ops of every downstream HTTP/1.x stream (h1.c). */
extern const struct px_down_ops px_h1_ops;

/* Runs the connection timer in mode m for ms (ms <= 0 stops it), or
 * stops it (h1.c). */
void px_h1_arm(struct px_h1 *h, enum tm_mode m, int64_t ms);
void px_h1_disarm(struct px_h1 *h);

/* Refuses the current request: 400/408/431/505 with Connection: close,
 * through a stream so it is logged and counted like any other answer
 * (h1.c). */
void px_h1_refuse(struct px_h1 *h, int status, enum px_reason reason);

/* Takes what the input holds: request heads, then bodies, until a request
 * is waiting for its response or more bytes are needed (h1_request.c). */
void px_h1_process_input(struct px_h1 *h);

#endif
