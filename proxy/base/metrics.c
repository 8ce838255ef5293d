/*
 * metrics.c - the metrics registry and Prometheus text rendering.
 *
 * Series live in one table (at most PX_METRICS_MAX_SERIES), found through
 * an open-addressing hash on (name, labels) under a mutex. Values are
 * updated with relaxed atomics and never under the mutex: a counter is a
 * uint64, a gauge and a histogram sum are doubles kept as bit patterns and
 * updated by compare-and-swap. Rendering sorts a copy of the table, so the
 * output order does not depend on registration order.
 */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

const double PX_LATENCY_BOUNDS[PX_LATENCY_NBOUNDS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 7.5, 10};

enum mtype { M_COUNTER, M_GAUGE, M_GAUGE_FN, M_HIST };

struct px_counter {
    _Atomic uint64_t v;
};

struct px_gauge {
    _Atomic uint64_t bits;
};

struct px_histogram {
    size_t n;
    double bounds[PX_METRICS_MAX_BOUNDS];
    _Atomic uint64_t buckets[PX_METRICS_MAX_BOUNDS + 1]; /* not cumulative */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_bits;
};

struct series {
    enum mtype type;
    char *name, *help, *labels;
    double (*fn)(void *);
    void *arg;
    struct px_counter c;
    struct px_gauge g;
    struct px_histogram h;
};

#define HT_SIZE (2 * PX_METRICS_MAX_SERIES) /* power of two, load <= 1/2 */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct series *g_ht[HT_SIZE];
static struct series *g_all[PX_METRICS_MAX_SERIES];
static size_t g_n;
static _Atomic uint64_t g_dropped;

/* Shared sinks for overflow and misuse; never rendered. */
static struct px_counter sink_c;
static struct px_gauge sink_g;
static struct px_histogram sink_h;

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static uint32_t hash2(const char *a, const char *b)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *a != '\0'; a++)
        h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ 0xff) * 16777619u; /* separator: ("ab","") != ("a","b") */
    for (; *b != '\0'; b++)
        h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

static int name_ok(const char *s)
{
    if (s == NULL || *s == '\0' || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == ':'))
            return 0;
    return 1;
}

/* Labels are rendered by the caller; refuse what would break the line. */
static int labels_ok(const char *s)
{
    return s != NULL && strpbrk(s, "\n{}") == NULL;
}

static struct series *lookup_locked(enum mtype type, const char *name, const char *help,
                                    const char *labels, int *created)
{
    uint32_t i = hash2(name, labels) & (HT_SIZE - 1);
    struct series *s;

    *created = 0;
    for (; g_ht[i] != NULL; i = (i + 1) & (HT_SIZE - 1)) {
        s = g_ht[i];
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return s->type == type ? s : NULL;
    }
    if (g_n >= PX_METRICS_MAX_SERIES) {
        atomic_fetch_add_explicit(&g_dropped, 1, memory_order_relaxed);
        return NULL;
    }
    /* One type per name (a clash is a programming error, not rendered);
     * the first registration's help text is the family's. */
    for (size_t k = 0; k < g_n; k++) {
        if (strcmp(g_all[k]->name, name) != 0)
            continue;
        if (g_all[k]->type != type && !(g_all[k]->type == M_GAUGE && type == M_GAUGE_FN) &&
            !(g_all[k]->type == M_GAUGE_FN && type == M_GAUGE))
            return NULL;
        help = g_all[k]->help;
        break;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->type = type;
    s->name = strdup(name);
    s->help = strdup(help != NULL ? help : "");
    s->labels = strdup(labels);
    if (s->name == NULL || s->help == NULL || s->labels == NULL) {
        free(s->name);
        free(s->help);
        free(s->labels);
        free(s);
        return NULL;
    }
    g_ht[i] = s;
    g_all[g_n++] = s;
    *created = 1;
    return s;
}

static struct series *get(enum mtype type, const char *name, const char *help, const char *labels,
                          int *created)
{
    struct series *s;

    *created = 0;
    if (!name_ok(name) || !labels_ok(labels))
        return NULL;
    pthread_mutex_lock(&g_mu);
    s = lookup_locked(type, name, help, labels, created);
    pthread_mutex_unlock(&g_mu);
    return s;
}

struct px_counter *px_counter_get(const char *name, const char *help, const char *labels)
{
    int created;
    struct series *s = get(M_COUNTER, name, help, labels, &created);
    return s != NULL ? &s->c : &sink_c;
}

void px_counter_add(struct px_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

uint64_t px_counter_value(const struct px_counter *c)
{
    return atomic_load_explicit(&c->v, memory_order_relaxed);
}

struct px_gauge *px_gauge_get(const char *name, const char *help, const char *labels)
{
    int created;
    struct series *s = get(M_GAUGE, name, help, labels, &created);
    return s != NULL ? &s->g : &sink_g;
}

void px_gauge_set(struct px_gauge *g, double v)
{
    atomic_store_explicit(&g->bits, d2u(v), memory_order_relaxed);
}

static void add_double(_Atomic uint64_t *bits, double delta)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(bits, &old, d2u(u2d(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void px_gauge_add(struct px_gauge *g, double delta)
{
    add_double(&g->bits, delta);
}

double px_gauge_value(const struct px_gauge *g)
{
    return u2d(atomic_load_explicit(&g->bits, memory_order_relaxed));
}

int px_gauge_fn(const char *name, const char *help, const char *labels, double (*fn)(void *arg),
                void *arg)
{
    int created;
    struct series *s;

    if (!name_ok(name) || !labels_ok(labels))
        return -1;
    pthread_mutex_lock(&g_mu);
    s = lookup_locked(M_GAUGE_FN, name, help, labels, &created);
    if (s != NULL) {
        s->fn = fn;
        s->arg = arg;
    }
    pthread_mutex_unlock(&g_mu);
    return s != NULL ? 0 : -1;
}

struct px_histogram *px_histogram_get(const char *name, const char *help, const char *labels,
                                      const double *bounds, size_t nbounds)
{
    int created;
    struct series *s;

    if (!name_ok(name) || !labels_ok(labels) || nbounds > PX_METRICS_MAX_BOUNDS ||
        (nbounds > 0 && bounds == NULL))
        return &sink_h;
    for (size_t i = 0; i < nbounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return &sink_h;
    pthread_mutex_lock(&g_mu);
    s = lookup_locked(M_HIST, name, help, labels, &created);
    if (s != NULL && created) {
        s->h.n = nbounds;
        if (nbounds > 0)
            memcpy(s->h.bounds, bounds, nbounds * sizeof(*bounds));
    }
    pthread_mutex_unlock(&g_mu);
    return s != NULL ? &s->h : &sink_h;
}

void px_histogram_observe(struct px_histogram *h, double value)
{
    size_t lo = 0, hi = h->n;

    if (isnan(value))
        return;
    while (lo < hi) { /* first bound >= value; n (the +Inf bucket) if none */
        size_t mid = lo + (hi - lo) / 2;
        if (h->bounds[mid] < value)
            lo = mid + 1;
        else
            hi = mid;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    add_double(&h->sum_bits, value);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

/* ---- rendering --------------------------------------------------------- */

/* Shortest text that reads back as the same double; Prometheus spellings
 * for the special values. */
static const char *fmt_double(double v, char *buf, size_t n)
{
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v == 0 ? 0.0 : v);
        return buf;
    }
    snprintf(buf, n, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, n, "%.17g", v);
    return buf;
}

static int cmp_series(const void *a, const void *b)
{
    const struct series *x = *(const struct series *const *)a;
    const struct series *y = *(const struct series *const *)b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->labels, y->labels);
}

/* "{labels}" / "{labels,extra}" / "{extra}" / "" */
static int add_labels(struct evbuffer *out, const char *labels, const char *extra)
{
    if (*labels == '\0' && *extra == '\0')
        return 0;
    return evbuffer_add_printf(out, "{%s%s%s}", labels, *labels && *extra ? "," : "", extra) < 0
               ? -1
               : 0;
}

static int render_help(struct evbuffer *out, const struct series *s)
{
    static const char *const tname[] = {"counter", "gauge", "gauge", "histogram"};
    const char *p;

    if (evbuffer_add_printf(out, "# HELP %s ", s->name) < 0)
        return -1;
    for (p = s->help; *p != '\0'; p++) { /* HELP escapes \ and newline */
        const char *e = *p == '\\' ? "\\\\" : *p == '\n' ? "\\n" : NULL;
        if ((e != NULL ? evbuffer_add(out, e, 2) : evbuffer_add(out, p, 1)) < 0)
            return -1;
    }
    return evbuffer_add_printf(out, "\n# TYPE %s %s\n", s->name, tname[s->type]) < 0 ? -1 : 0;
}

static int render_hist(struct evbuffer *out, const struct series *s)
{
    const struct px_histogram *h = &s->h;
    char num[40], le[64];
    uint64_t cum = 0;
    int rc = 0;

    for (size_t i = 0; i <= h->n; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        snprintf(le, sizeof(le), "le=\"%s\"",
                 i < h->n ? fmt_double(h->bounds[i], num, sizeof(num)) : "+Inf");
        rc |= evbuffer_add_printf(out, "%s_bucket", s->name) < 0;
        rc |= add_labels(out, s->labels, le) < 0;
        rc |= evbuffer_add_printf(out, " %llu\n", (unsigned long long)cum) < 0;
    }
    rc |= evbuffer_add_printf(out, "%s_sum", s->name) < 0;
    rc |= add_labels(out, s->labels, "") < 0;
    rc |= evbuffer_add_printf(
              out, " %s\n",
              fmt_double(u2d(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)), num,
                         sizeof(num))) < 0;
    rc |= evbuffer_add_printf(out, "%s_count", s->name) < 0;
    rc |= add_labels(out, s->labels, "") < 0;
    rc |= evbuffer_add_printf(out, " %llu\n",
                              (unsigned long long)atomic_load_explicit(&h->count,
                                                                       memory_order_relaxed)) < 0;
    return rc ? -1 : 0;
}

static int render_one(struct evbuffer *out, const struct series *s)
{
    char num[40];
    const char *val;

    if (s->type == M_HIST)
        return render_hist(out, s);
    if (s->type == M_COUNTER) {
        snprintf(num, sizeof(num), "%llu",
                 (unsigned long long)atomic_load_explicit(&s->c.v, memory_order_relaxed));
        val = num;
    } else if (s->type == M_GAUGE) {
        val = fmt_double(px_gauge_value(&s->g), num, sizeof(num));
    } else {
        val = fmt_double(s->fn(s->arg), num, sizeof(num));
    }
    if (evbuffer_add_printf(out, "%s", s->name) < 0 || add_labels(out, s->labels, "") < 0 ||
        evbuffer_add_printf(out, " %s\n", val) < 0)
        return -1;
    return 0;
}

int px_metrics_render(struct evbuffer *out)
{
    struct series **v;
    const char *last = NULL;
    uint64_t dropped;
    size_t n;
    int rc = 0;

    pthread_mutex_lock(&g_mu);
    n = g_n;
    v = malloc((n + 1) * sizeof(*v));
    if (v == NULL) {
        pthread_mutex_unlock(&g_mu);
        return -1;
    }
    memcpy(v, g_all, n * sizeof(*v));
    qsort(v, n, sizeof(*v), cmp_series);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (v[i]->type == M_GAUGE_FN && v[i]->fn == NULL)
            continue;
        if (last == NULL || strcmp(last, v[i]->name) != 0) {
            rc = render_help(out, v[i]);
            last = v[i]->name;
        }
        if (rc == 0)
            rc = render_one(out, v[i]);
    }
    pthread_mutex_unlock(&g_mu);
    free(v);
    dropped = atomic_load_explicit(&g_dropped, memory_order_relaxed);
    if (rc == 0 && dropped > 0 &&
        evbuffer_add_printf(out,
                            "# HELP picket_metrics_series_dropped_total Series lookups refused "
                            "because the registry was full.\n"
                            "# TYPE picket_metrics_series_dropped_total counter\n"
                            "picket_metrics_series_dropped_total %llu\n",
                            (unsigned long long)dropped) < 0)
        rc = -1;
    return rc;
}

int px_metrics_label_escape(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    for (; *in != '\0'; in++) {
        const char *e = *in == '\\' ? "\\\\" : *in == '"' ? "\\\"" : *in == '\n' ? "\\n" : NULL;
        size_t n = e != NULL ? 2 : 1;
        if (o + n + 1 > outlen) {
            out[o] = '\0';
            return -1;
        }
        memcpy(out + o, e != NULL ? e : in, n);
        o += n;
    }
    out[o] = '\0';
    return 0;
}

void px_metrics_shutdown(void)
{
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++) {
        free(g_all[i]->name);
        free(g_all[i]->help);
        free(g_all[i]->labels);
        free(g_all[i]);
        g_all[i] = NULL;
    }
    memset(g_ht, 0, sizeof(g_ht));
    g_n = 0;
    atomic_store(&g_dropped, 0);
    pthread_mutex_unlock(&g_mu);
}
