/*
 * metrics.h - Prometheus metrics (text exposition format 0.0.4).
 *
 * A process-wide registry of series. Looking a series up takes a mutex, so
 * callers look it up once (at startup, per listener, per snapshot) and
 * keep the pointer; updating it is a relaxed atomic operation with no
 * lock. Pointers stay valid until px_metrics_shutdown().
 *
 * The registry is bounded: past PX_METRICS_MAX_SERIES series every new
 * lookup gets a shared sink series of the right type that is never
 * rendered, and picket_metrics_series_dropped_total counts those lookups,
 * so a label with peer-controlled values cannot grow memory without bound.
 */
#ifndef PX_METRICS_H
#define PX_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct px_counter;
struct px_gauge;
struct px_histogram;

#define PX_METRICS_MAX_SERIES 4096
#define PX_METRICS_MAX_BOUNDS 32

/* Default latency buckets in seconds, 0.0005 .. 10 (PX_LATENCY_NBOUNDS). */
extern const double PX_LATENCY_BOUNDS[];
#define PX_LATENCY_NBOUNDS 15

/* Returns the counter for (name, labels), creating it at 0. name: a
 * Prometheus metric name ("picket_requests_total"); help: one line of
 * text (first registration wins); labels: a rendered label set without
 * braces, such as `listener="inbound",status="200"`, or "" (values escaped
 * with px_metrics_label_escape()). All three are copied. The same (name,
 * labels) returns the same pointer. Never NULL: on overflow, bad input,
 * a name registered with another type, or ENOMEM, the shared unrendered
 * sink. Any thread (takes the registry mutex). */
struct px_counter *px_counter_get(const char *name, const char *help, const char *labels);

/* Adds n. Lock-free (relaxed atomic); any thread. */
void px_counter_add(struct px_counter *c, uint64_t n);

/* Current value (for tests and /policy style endpoints). */
uint64_t px_counter_value(const struct px_counter *c);

/* Gauges hold a double, stored as its bit pattern in an atomic 64-bit word;
 * set is an atomic store, add a compare-and-swap loop. Same lookup rules as
 * px_counter_get(). */
struct px_gauge *px_gauge_get(const char *name, const char *help, const char *labels);
void px_gauge_set(struct px_gauge *g, double v);
void px_gauge_add(struct px_gauge *g, double delta);
double px_gauge_value(const struct px_gauge *g);

/* A gauge computed at render time: fn(arg) is called under the registry
 * mutex from the thread running px_metrics_render(), so it must be quick,
 * thread-safe and must not call px_*_get(). Registering the same (name,
 * labels) again replaces fn and arg; fn == NULL unregisters it (the series
 * is then not rendered). Returns 0, or -1 if the series could not be
 * created (overflow, type clash, ENOMEM). */
int px_gauge_fn(const char *name, const char *help, const char *labels, double (*fn)(void *arg),
                void *arg);

/* Histogram with upper bounds (strictly increasing, finite, at most
 * PX_METRICS_MAX_BOUNDS; copied); the +Inf bucket is implicit. The first
 * registration of (name, labels) fixes the bounds. Same lookup rules as
 * px_counter_get(); bad bounds give the sink. */
struct px_histogram *px_histogram_get(const char *name, const char *help, const char *labels,
                                      const double *bounds, size_t nbounds);

/* Counts value in its bucket, adds it to _sum and 1 to _count: relaxed
 * atomics, the sum by compare-and-swap. NaN is ignored. Any thread. A
 * scrape running concurrently may see _count and buckets one observation
 * apart (Prometheus tolerates this). */
void px_histogram_observe(struct px_histogram *h, double value);

/* Appends the exposition text to out: one "# HELP" and "# TYPE" per
 * metric name, names in byte order, series of a name ordered by labels;
 * histograms as _bucket{...,le="..."} (cumulative), _sum, _count. Returns
 * 0, or -1 if appending to out failed. Any thread (takes the mutex). */
int px_metrics_render(struct evbuffer *out);

/* Escapes a label value (backslash, double quote, newline) into out.
 * Returns 0, or -1 if it had to be cut to fit (out is still a valid,
 * NUL-terminated value; outlen must be >= 1). Pure. */
int px_metrics_label_escape(const char *in, char *out, size_t outlen);

/* Frees every series; pointers handed out become invalid. Only when no
 * other thread uses metrics (process exit, tests). */
void px_metrics_shutdown(void);

#endif
