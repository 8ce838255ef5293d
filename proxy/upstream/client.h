/*
 * client.h - requests picket makes on its own behalf (control-plane
 * fetches, authorization checks), over the same upstream pools and stream
 * machinery as forwarded traffic: mTLS with the workload's SVID, the
 * server's SVID and exact SPIFFE ID checked, HTTP/2 when the server offers
 * it by ALPN, else HTTP/1.1, connections reused.
 */
#ifndef PX_CLIENT_H
#define PX_CLIENT_H

#include "px.h"

struct px_client_req {
    const char *method;        /* "GET" */
    const char *authority;     /* "control.example.org" or "host:port" */
    const char *path;          /* origin-form, with query */
    const struct px_hdrs *headers; /* copied; may be NULL */
    const char *body;          /* may be NULL */
    size_t body_len;
    int64_t timeout_ms;        /* whole exchange, > 0 */
    size_t max_body;           /* larger responses fail with "response_too_large" */
};

struct px_client_resp {
    int status;                  /* HTTP status; 0 when no response (see error) */
    enum px_reason error;        /* when status == 0: PX_R_TIMEOUT, PX_R_CONNECT_REFUSED,
                                  * PX_R_SERVER_ID_MISMATCH, PX_R_UPSTREAM_RESET, ... */
    const struct px_hdrs *headers; /* borrowed for the callback */
    const struct px_hdrs *trailers; /* borrowed for the callback (gRPC's grpc-status) */
    const char *body;            /* borrowed for the callback; NUL-terminated */
    size_t body_len;
    int64_t duration_us;
};

/* Called exactly once, on the worker's thread, unless cancelled first. */
typedef void (*px_client_cb)(void *arg, const struct px_client_resp *resp);

struct px_client_call;

/* Starts a request on worker w (its event base and pools) towards `up`
 * (normally PX_UP_MTLS with server_id set). Returns a handle valid until
 * the callback has run or px_client_cancel() was called; NULL when it
 * could not start (then cb is not called). */
struct px_client_call *px_client_request(struct px_worker *w, const struct px_upstream_addr *up,
                                         const struct px_client_req *req, px_client_cb cb,
                                         void *arg);

/* Abandons a call: the callback will not run. */
void px_client_cancel(struct px_client_call *call);

#endif
