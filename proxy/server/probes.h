/*
 * probes.h - the app's own kubelet probes, through picket (probes.bind,
 * probes.targets, PICKET_APP_PROBES; proxy/README.md "App probes").
 *
 * The kubelet probes the pod's IP without a client certificate, while an
 * injected app listens on loopback. The probes listener answers
 * GET or HEAD /app-health/NAME by running the configured target NAME
 * against the app (an HTTP GET, a TCP connect, or the standard gRPC health
 * check over h2c) and says 200 (passed) or 503 (failed), nothing else: the
 * target's status line, headers and body are never relayed, any other
 * path or name is 404, and only configured targets are ever contacted, so
 * the listener is not a relay even on 0.0.0.0.
 *
 * Probes run on the control thread's event loop, never a worker's, and
 * never block it. Everything is bounded: each run by its timeout
 * (probes.timeout, or the target's own), what is read from the app (the
 * status line and 8 KiB for HTTP, 1 KiB of gRPC message), and concurrency:
 * requests for a target whose probe is already running wait for that run
 * instead of starting another, so however often the endpoint is asked,
 * each target has at most one probe in flight against the app.
 */
#ifndef PX_PROBES_H
#define PX_PROBES_H

#include <stddef.h>

#include "px.h"

struct px_probes;

#define PX_PROBES_MAX_CONNS 64            /* open connections to the probes listener */
#define PX_PROBES_REQUEST_TIMEOUT_MS 5000 /* accept -> complete request */
#define PX_PROBES_RESERVE_FDS 4           /* accept even when the data path used every fd */
#define PX_PROBES_HEADERS_MAX 8192        /* bytes of a request's head */
#define PX_PROBES_IO_TIMEOUT_S 10         /* per read or write, outside a wait */
#define PX_PROBES_HTTP_READ_MAX 8192      /* bytes of an HTTP answer read for its status */
#define PX_PROBES_GRPC_BODY_MAX 1024      /* bytes of a gRPC health answer */

/* Binds host:port (any address) and serves the probes on ctl->base, the
 * control thread's. Targets are read from ctl->snap->cfg at each request,
 * so a reload changes them; probes reach the app through ctl (its
 * resolver, and its upstream pools for gRPC). `ctl` is borrowed and must
 * outlive the listener. Returns the listener, or NULL with a message. */
struct px_probes *px_probes_start(struct px_worker *ctl, const char *host, const char *port,
                                  char *err, size_t errlen);

/* The bound port (after binding port "0"); 0 if unknown. */
int px_probes_port(const struct px_probes *p);

/* Abandons the probes in flight (their requests are not answered), stops
 * listening and closes the connections. NULL is a no-op. Call before the
 * control worker's pools are freed. */
void px_probes_free(struct px_probes *p);

/* ---- the wire, pure (tested in tests/unit) ------------------------------ */

/* The final status of an HTTP/1.x answer in buf[0..len): 1 with *status
 * set once its status line is complete (1xx answers before it skipped
 * with their fields), 0 when more bytes are needed, -1 when it is not
 * HTTP/1.x. */
int px_probe_http_status(const char *buf, size_t len, int *status);

/* The gRPC request body of grpc.health.v1.Health/Check for `service`:
 * one length-prefixed, uncompressed HealthCheckRequest message. Returns
 * its length, or 0 when cap is too small (a service of at most 512 bytes
 * needs 520). */
size_t px_probe_grpc_request(const char *service, unsigned char *out, size_t cap);

/* The ServingStatus of a gRPC HealthCheckResponse body (one
 * length-prefixed message): 0 UNKNOWN (also when the field is absent),
 * 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN, ...; -1 when the body is
 * not exactly one well-formed, uncompressed message. */
int px_probe_grpc_status(const unsigned char *body, size_t len);

#endif
