/*
 * daemon.c - `picket run`: the control thread. Loads the config, builds
 * the first snapshot, starts the workers, serves the admin listener, and
 * owns every change over time: file-change checks every
 * identity.reload_interval (own SVID, trust bundles, policy file), SIGHUP
 * (config, certs, policy, log files), SIGTERM/SIGINT (drain and exit 0).
 *
 * Whatever fails to load on a reload is refused with a logged reason and
 * the material in force stays: a broken file never takes a running sidecar
 * down.
 */
#include "px.h"
#include "upstream.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/thread.h>
#include <openssl/ssl.h>

#include "admin.h"
#include "certs.h"
#include "daemon.h"
#include "enforce.h"
#include "fetcher.h"
#include "log.h"
#include "mailbox.h"
#include "mem.h"
#include "floor.h"
#include "dispatch_int.h"
#include "metrics.h"
#include "probes.h"
#include "snapshot.h"
#include "tmalloc.h"
#include "wlapi.h"
#include "worker.h"

#define MAX_WATCH 64

struct watch {
    char *path;
    struct stat st;
    int ok;
};

struct daemon {
    char *config_path;
    struct event_base *base;
    struct px_worker *workers;
    int nworkers;
    struct px_snapshot *snap;      /* current, owned ref */
    struct px_policy_state *policy; /* current, owned ref; NULL = none accepted */
    char policy_error[512];
    int64_t policy_checked_ms;
    struct px_admin *admin;
    struct px_admin *metrics;       /* metrics.bind: /metrics on any address */
    struct px_probes *probes;       /* the app's probes (probes.bind, probes.targets) */
    struct event *sig_term, *sig_int, *sig_hup, *reload_timer;
    struct watch cert_watch[MAX_WATCH];
    size_t ncert_watch;
    struct watch policy_watch;
    int draining;
    struct px_counter *reload_ok, *reload_failed;
    struct px_worker ctl;           /* the control thread as a client (pools, snapshot) */
    struct px_fetcher *fetcher;     /* policy.url */
    struct px_floor floor;          /* the policy revision floor across restarts (floor.h) */
    /* identity.source workload_api */
    struct px_wlapi_client *wl;     /* the FetchX509SVID stream */
    struct px_wlapi_identity wl_id; /* the last good SVID and bundles; empty until the first */
    char wl_error[600];             /* the last refusal or disconnection, for /readyz */
    int wl_connected;
    struct px_counter *wl_accepted, *wl_refused;
};

static struct daemon D;
/* picket run --node-id, --probes-bind, --metrics-bind: win over the file,
 * on reload too */
static char *node_id_override, *probes_bind_override, *metrics_bind_override;

static void set_override(char **slot, const char *v)
{
    free(*slot);
    *slot = v ? strdup(v) : NULL;
}

void px_run_set_node_id(const char *id)
{
    set_override(&node_id_override, id);
}

void px_run_set_probes_bind(const char *hostport)
{
    set_override(&probes_bind_override, hostport);
}

void px_run_set_metrics_bind(const char *hostport)
{
    set_override(&metrics_bind_override, hostport);
}

/* The command line and the environment over the file: --node-id,
 * PICKET_APP_PROBES (targets added to the file's), --probes-bind,
 * --metrics-bind. 0, or -1 with a message. */
static int apply_overrides(struct px_config *cfg, char *err, size_t errlen)
{
    const char *env = getenv(PX_APP_PROBES_ENV);

    if (node_id_override != NULL) {
        char *d = strdup(node_id_override);
        if (d == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(cfg->node_id);
        cfg->node_id = d;
    }
    if (env != NULL && env[0] != '\0' &&
        px_config_add_probe_targets(cfg, PX_APP_PROBES_ENV, env, strlen(env), err, errlen) != 0)
        return -1;
    if (probes_bind_override != NULL &&
        px_config_set_bind(cfg, "probes", probes_bind_override, err, errlen) != 0)
        return -1;
    if (metrics_bind_override != NULL &&
        px_config_set_bind(cfg, "metrics", metrics_bind_override, err, errlen) != 0)
        return -1;
    return 0;
}

static int same_bind(const char *h1, const char *p1, const char *h2, const char *p2)
{
    if (h1 == NULL || h2 == NULL)
        return h1 == h2;
    return strcmp(h1, h2) == 0 && strcmp(p1, p2) == 0;
}

/* ---- file watching ------------------------------------------------------ */

static int stat_changed(struct watch *w)
{
    struct stat st;
    int ok = stat(w->path, &st) == 0;
    int changed;
    if (!ok)
        return w->ok; /* vanished: a change only if it was there */
    /* Kubernetes swaps a ..data symlink: inode, size or mtime change. */
    changed = !w->ok || st.st_ino != w->st.st_ino || st.st_size != w->st.st_size ||
              st.st_mtim.tv_sec != w->st.st_mtim.tv_sec ||
              st.st_mtim.tv_nsec != w->st.st_mtim.tv_nsec || st.st_dev != w->st.st_dev;
    return changed;
}

static void watch_set(struct watch *w, const char *path)
{
    free(w->path);
    w->path = path ? strdup(path) : NULL;
    w->ok = w->path != NULL && stat(w->path, &w->st) == 0;
}

static void watch_certs(const struct px_config *cfg)
{
    for (size_t i = 0; i < D.ncert_watch; i++) {
        free(D.cert_watch[i].path);
        D.cert_watch[i].path = NULL;
    }
    D.ncert_watch = 0;
    if (cfg->identity.cert)
        watch_set(&D.cert_watch[D.ncert_watch++], cfg->identity.cert);
    if (cfg->identity.key)
        watch_set(&D.cert_watch[D.ncert_watch++], cfg->identity.key);
    for (size_t i = 0; i < cfg->identity.ntrust_bundles && D.ncert_watch < MAX_WATCH; i++)
        watch_set(&D.cert_watch[D.ncert_watch++], cfg->identity.trust_bundles[i].file);
}

/* ---- publishing ----------------------------------------------------------- */

static void publish_snapshot(struct px_snapshot *s)
{
    for (int i = 0; i < D.nworkers; i++)
        px_worker_post_snapshot(&D.workers[i], s);
    if (D.ctl.base != NULL) {
        px_snapshot_unref(D.ctl.snap);
        D.ctl.snap = px_snapshot_ref(s);
    }
    px_snapshot_unref(D.snap);
    D.snap = s;
}

static void publish_policy(struct px_policy_state *p)
{
    for (int i = 0; i < D.nworkers; i++)
        px_worker_post_policy(&D.workers[i], p);
    px_policy_state_unref(D.policy);
    D.policy = p;
}

static void fetch_publish(void *arg, struct px_policy_state *p)
{
    char rev[32];
    (void)arg;
    snprintf(rev, sizeof(rev), "%lld", (long long)p->revision);
    px_log(PX_LOG_INFO, "policy_loaded", "source", p->source, "revision", rev, "mode",
           p->audit_mode ? "audit" : "enforce", NULL);
    D.policy_error[0] = '\0';
    px_floor_raise(&D.floor, p->revision, p->sha);
    publish_policy(p);
}

static void fetch_contact(void *arg, int64_t now_ms)
{
    (void)arg;
    if (D.policy != NULL && D.policy->from_url)
        atomic_store_explicit(&D.policy->contact_ms, now_ms, memory_order_relaxed);
}

static void load_policy(int force)
{
    const struct px_config *cfg = D.snap->cfg;
    struct px_policy_state *p = NULL;
    char err[600], rev[32];

    if (cfg->policy.file == NULL)
        return;
    if (!force && D.policy_watch.path && strcmp(D.policy_watch.path, cfg->policy.file) == 0 &&
        !stat_changed(&D.policy_watch))
        return;
    watch_set(&D.policy_watch, cfg->policy.file);
    if (px_policy_state_load_file(&p, cfg->policy.file, err, sizeof(err)) != 0) {
        snprintf(D.policy_error, sizeof(D.policy_error), "%s", err);
        px_counter_add(px_counter_get("picket_policy_loads_total", "Policy bundle loads by result",
                                      "result=\"refused\""),
                       1);
        px_log(PX_LOG_ERROR, "policy_refused", "source", cfg->policy.file, "error", err, "msg",
               D.policy ? "keeping the policy in force" : "no policy in force: requests get 503",
               NULL);
        return;
    }
    if ((D.policy != NULL && p->revision < D.policy->revision) ||
        px_floor_check(&D.floor, p->revision, p->sha, err, sizeof(err)) != 0) {
        if (D.policy != NULL && p->revision < D.policy->revision)
            snprintf(D.policy_error, sizeof(D.policy_error),
                     "revision %lld is older than %lld in force", (long long)p->revision,
                     (long long)D.policy->revision);
        else
            snprintf(D.policy_error, sizeof(D.policy_error), "%s", err);
        px_log(PX_LOG_ERROR, "policy_refused", "source", cfg->policy.file, "error",
               D.policy_error, NULL);
        px_counter_add(px_counter_get("picket_policy_loads_total", "Policy bundle loads by result",
                                      "result=\"refused\""),
                       1);
        px_policy_state_unref(p);
        return;
    }
    D.policy_error[0] = '\0';
    snprintf(rev, sizeof(rev), "%lld", (long long)p->revision);
    px_log(PX_LOG_INFO, "policy_loaded", "source", p->source, "revision", rev, "mode",
           p->audit_mode ? "audit" : "enforce", NULL);
    px_counter_add(px_counter_get("picket_policy_loads_total", "Policy bundle loads by result",
                                  "result=\"accepted\""),
                   1);
    px_floor_raise(&D.floor, p->revision, p->sha);
    publish_policy(p);
}

static int same_listeners(const struct px_config *a, const struct px_config *b)
{
    const char *ah = NULL, *ap = NULL, *bh = NULL, *bp = NULL;

    if (a->nlisteners != b->nlisteners || a->workers != b->workers)
        return 0;
    /* the probes listener runs when there are targets: having some, or
     * none, or moving it needs a restart; the targets themselves change
     * on reload */
    px_config_probes_bind(a, &ah, &ap);
    px_config_probes_bind(b, &bh, &bp);
    if (!same_bind(ah, ap, bh, bp) ||
        !same_bind(a->metrics.bind_host, a->metrics.bind_port, b->metrics.bind_host,
                   b->metrics.bind_port))
        return 0;
    for (size_t i = 0; i < a->nlisteners; i++)
        if (strcmp(a->listeners[i].name, b->listeners[i].name) != 0 ||
            strcmp(a->listeners[i].bind_host, b->listeners[i].bind_host) != 0 ||
            strcmp(a->listeners[i].bind_port, b->listeners[i].bind_port) != 0 ||
            a->listeners[i].kind != b->listeners[i].kind)
            return 0;
    return 1;
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int same_identity_source(const struct px_config *a, const struct px_config *b)
{
    return a->identity.source == b->identity.source &&
           same_str(a->identity.workload_api_socket, b->identity.workload_api_socket) &&
           same_str(a->identity.svid_hint, b->identity.svid_hint);
}

/* Re-reads the config file and rebuilds the snapshot. */
static int reload(const char *why)
{
    struct px_config *cfg = NULL;
    struct px_snapshot *s = NULL;
    char err[1024];

    if (px_config_load(&cfg, D.config_path, err, sizeof(err)) != 0 ||
        apply_overrides(cfg, err, sizeof(err)) != 0) {
        px_log(PX_LOG_ERROR, "reload_refused", "trigger", why, "error", err, "msg",
               "keeping the running configuration", NULL);
        px_config_free(cfg);
        px_counter_add(D.reload_failed, 1);
        return -1;
    }
    if (!same_listeners(D.snap->cfg, cfg)) {
        px_log(PX_LOG_ERROR, "reload_refused", "trigger", why, "error",
               "listeners, workers, probes.bind or metrics.bind changed; those need a restart",
               "msg",
               "keeping the running configuration", NULL);
        px_config_free(cfg);
        px_counter_add(D.reload_failed, 1);
        return -1;
    }
    if (!same_identity_source(D.snap->cfg, cfg)) {
        px_log(PX_LOG_ERROR, "reload_refused", "trigger", why, "error",
               "identity.source, identity.workload_api_socket or identity.svid_hint changed; "
               "those need a restart",
               "msg", "keeping the running configuration", NULL);
        px_config_free(cfg);
        px_counter_add(D.reload_failed, 1);
        return -1;
    }
    /* With the Workload API as the source, the identity in force goes into
     * the new snapshot as it is (files are read by the build). */
    if (px_snapshot_build_with(&s, cfg, D.wl_id.keypair, D.wl_id.trust, err, sizeof(err)) != 0) {
        px_log(PX_LOG_ERROR, "reload_refused", "trigger", why, "error", err, "msg",
               "keeping the running configuration and certificates", NULL);
        px_counter_add(D.reload_failed, 1);
        return -1;
    }
    publish_snapshot(s);
    watch_certs(s->cfg);
    px_mem_configure(s->cfg->limits.memory_budget);
    px_counter_add(D.reload_ok, 1);
    px_log(PX_LOG_INFO, "reloaded", "trigger", why, "own_id", s->own_id, NULL);
    return 0;
}

/* Warns once per SVID when less than a third of its lifetime is left
 * (whoever renews it is late), and again when it has expired. */
static void check_own_expiry(void)
{
    static int64_t warned_na, expired_na;
    int64_t nb, na, now = (int64_t)time(NULL);
    char left[32];
    if (D.snap->keypair == NULL)
        return;
    nb = certs_keypair_not_before(D.snap->keypair);
    na = certs_keypair_not_after(D.snap->keypair);
    snprintf(left, sizeof(left), "%llds", (long long)(na - now));
    if (now >= na && expired_na != na) {
        expired_na = na;
        px_log(PX_LOG_ERROR, "svid_expired", "own_id", D.snap->own_id, "msg",
               "own SVID has expired: peers will refuse us and /readyz fails", NULL);
    } else if (now < na && (na - now) * 3 < (na - nb) && warned_na != na) {
        warned_na = na;
        px_log(PX_LOG_WARN, "svid_expiring", "own_id", D.snap->own_id, "remaining", left, "msg",
               "less than a third of the SVID lifetime left and no new one yet", NULL);
    }
}

static void reload_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    int changed = 0;
    (void)fd;
    (void)what;
    (void)arg;
    px_log_flush(0); /* a log record a full pipe took only in part */
    px_tmalloc_decay(); /* this thread's kept blocks no one took (tmalloc.h) */
    if (D.draining)
        return;
    check_own_expiry();
    for (size_t i = 0; i < D.ncert_watch; i++)
        if (stat_changed(&D.cert_watch[i]))
            changed = 1;
    if (changed)
        reload("file_change");
    load_policy(0);
}

static void sighup_cb(evutil_socket_t fd, short what, void *arg)
{
    char err[256];
    const struct px_config *cfg;
    (void)fd;
    (void)what;
    (void)arg;
    if (D.draining)
        return;
    px_log(PX_LOG_INFO, "sighup", "msg", "reloading configuration, certificates and policy", NULL);
    reload("sighup");
    cfg = D.snap->cfg;
    if (px_log_reopen(cfg->log.level, cfg->log.access, cfg->log.audit, err, sizeof(err)) != 0)
        px_log(PX_LOG_ERROR, "log_reopen_failed", "error", err, NULL);
    load_policy(1);
}

static void sigterm_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (D.draining)
        return;
    D.draining = 1;
    px_log(PX_LOG_INFO, "draining", "msg", "stopped accepting; finishing in-flight requests",
           NULL);
    for (int i = 0; i < D.nworkers; i++)
        if (px_worker_post_drain(&D.workers[i]) != 0) /* out of memory: it will not stop */
            px_log(PX_LOG_ERROR, "drain_failed", "msg", "could not tell a worker to drain",
                   NULL);
    event_base_loopexit(D.base, NULL);
}

/* ---- the Workload API (identity.source workload_api) ------------------------ */

/* A Workload API message that is not taken: logged, counted, and the
 * identity in force (if any) stays. */
static void wl_refuse(const char *err)
{
    snprintf(D.wl_error, sizeof(D.wl_error), "update refused: %s", err);
    px_counter_add(D.wl_refused, 1);
    px_log(PX_LOG_ERROR, "workload_api_refused", "error", err, "msg",
           D.wl_id.keypair != NULL ? "keeping the identity in force"
                                   : "no identity yet: listeners wait and /readyz fails",
           NULL);
}

/* Every message on the stream: decoded, checked, and put in force through
 * the same snapshot rotation as a changed certificate file (new handshakes
 * use it at once, live connections keep the snapshot they started on). */
static void wl_message(void *arg, const uint8_t *msg, size_t len)
{
    const struct px_config *cfg = D.snap->cfg;
    struct px_wlapi_msg *m = NULL;
    struct px_wlapi_identity id = {NULL, NULL};
    struct px_snapshot *s = NULL;
    char err[700], na[32], ntd[16];
    int idx;
    (void)arg;

    if (D.draining)
        return;
    if (px_wlapi_msg_decode(&m, msg, len, err, sizeof(err)) != 0) {
        wl_refuse(err);
        return;
    }
    idx = px_wlapi_msg_select(m, cfg->identity.svid_hint, err, sizeof(err));
    if (idx < 0 ||
        px_wlapi_identity_build(&id, m, (size_t)idx, (int64_t)time(NULL), err, sizeof(err)) != 0) {
        px_wlapi_msg_free(m);
        wl_refuse(err);
        return;
    }
    px_wlapi_msg_free(m);
    if (px_snapshot_build_with(&s, px_config_ref(D.snap->cfg), id.keypair, id.trust, err,
                               sizeof(err)) != 0) {
        px_wlapi_identity_clear(&id);
        wl_refuse(err);
        return;
    }
    px_wlapi_identity_clear(&D.wl_id);
    D.wl_id = id;
    D.wl_error[0] = '\0';
    publish_snapshot(s);
    px_counter_add(D.wl_accepted, 1);
    snprintf(na, sizeof(na), "%lld", (long long)certs_keypair_not_after(id.keypair));
    snprintf(ntd, sizeof(ntd), "%zu", certs_trust_count(id.trust));
    px_log(PX_LOG_INFO, "identity_updated", "source", "workload_api", "own_id", s->own_id,
           "not_after", na, "trust_domains", ntd, NULL);
}

static void wl_refused(void *arg, const char *reason, const char *detail)
{
    char err[400];
    (void)arg;
    snprintf(err, sizeof(err), "%s: %s", reason, detail);
    wl_refuse(err);
}

static void wl_state(void *arg, int connected, const char *reason, const char *detail,
                     int64_t next_ms)
{
    char next[32];
    (void)arg;
    D.wl_connected = connected;
    if (connected) {
        px_log(PX_LOG_INFO, "workload_api_connected", "socket",
               D.snap->cfg->identity.workload_api_socket, NULL);
        return;
    }
    snprintf(next, sizeof(next), "%lldms", (long long)next_ms);
    if (D.wl_id.keypair == NULL)
        snprintf(D.wl_error, sizeof(D.wl_error), "%s: %s", reason, detail);
    px_log(D.wl_id.keypair != NULL ? PX_LOG_WARN : PX_LOG_ERROR, "workload_api_disconnected",
           "socket", D.snap->cfg->identity.workload_api_socket, "reason", reason, "detail",
           detail, "retry_in", next, "msg",
           D.wl_id.keypair != NULL ? "keeping the identity in force until it expires"
                                   : "no identity yet: listeners wait and /readyz fails",
           NULL);
}

static const struct px_wlapi_ops wl_ops = {wl_message, wl_refused, wl_state};

static double wl_connected_fn(void *arg)
{
    (void)arg;
    return D.wl_connected;
}

/* ---- admin ------------------------------------------------------------------ */

static int admin_ready(void *arg, struct evbuffer *why)
{
    const struct px_config *cfg = D.snap->cfg;
    int ready = 1;
    int64_t now = (int64_t)time(NULL);
    (void)arg;
    if (D.draining) {
        evbuffer_add_printf(why, "draining\n");
        ready = 0;
    }
    if (D.snap->identity_pending) {
        evbuffer_add_printf(why, "no SVID from the Workload API yet%s%s\n",
                            D.wl_error[0] ? ": " : "", D.wl_error);
        ready = 0;
    }
    if (D.snap->keypair != NULL && certs_keypair_not_after(D.snap->keypair) <= now) {
        evbuffer_add_printf(why, "own SVID expired\n");
        ready = 0;
    }
    if ((cfg->policy.file || cfg->policy.url) && D.policy == NULL) {
        evbuffer_add_printf(why, "no policy loaded%s%s\n", D.policy_error[0] ? ": " : "",
                            D.policy_error);
        ready = 0;
    }
    if (D.policy != NULL && D.policy->expires_at_s > 0 && now >= D.policy->expires_at_s) {
        evbuffer_add_printf(why, "policy stale: bundle expired at %lld\n",
                            (long long)D.policy->expires_at_s);
        ready = 0;
    } else if (D.fetcher != NULL && D.policy != NULL &&
               px_fetcher_is_stale(D.fetcher, px_now_ms(), cfg->policy.max_staleness_ms, 0)) {
        evbuffer_add_printf(why, "policy stale: no contact with the control plane for %llds\n",
                            (long long)((px_now_ms() - atomic_load(&D.policy->contact_ms)) / 1000));
        ready = 0;
    }
    return ready;
}

static int admin_policy(void *arg, struct evbuffer *out)
{
    const struct px_config *cfg = D.snap->cfg;
    char esc[1200];
    (void)arg;
    evbuffer_add_printf(out, "{");
    if (D.policy != NULL) {
        px_json_escape(esc, sizeof(esc), D.policy->source, strlen(D.policy->source));
        evbuffer_add_printf(out,
                            "\"revision\":%lld,\"age_ms\":%lld,\"source\":\"%s\",\"mode\":\"%s\","
                            "\"rules\":%zu,\"expires_at\":%lld,",
                            (long long)D.policy->revision,
                            (long long)(px_now_ms() - D.policy->loaded_at_ms), esc,
                            D.policy->audit_mode ? "audit" : "enforce", D.policy->nrules,
                            (long long)D.policy->expires_at_s);
    } else {
        evbuffer_add_printf(out, "\"revision\":null,\"age_ms\":null,\"source\":%s,",
                            (cfg->policy.file || cfg->policy.url) ? "\"none accepted yet\""
                                                                   : "null");
    }
    px_json_escape(esc, sizeof(esc), D.policy_error, strlen(D.policy_error));
    if (D.fetcher != NULL) {
        px_fetcher_status(D.fetcher, out);
        evbuffer_add_printf(out, ",");
    }
    evbuffer_add_printf(out, "\"last_error\":%s%s%s,\"on_stale\":\"%s\"",
                        D.policy_error[0] ? "\"" : "", D.policy_error[0] ? esc : "null",
                        D.policy_error[0] ? "\"" : "",
                        cfg->policy.on_stale_deny ? "deny" : "last_known_good");
    px_floor_status(&D.floor, out);
    evbuffer_add_printf(out, "}\n");
    return 0;
}

static const struct px_admin_ops admin_ops = {admin_ready, admin_policy};

static double svid_expiry_fn(void *arg)
{
    (void)arg;
    if (D.snap == NULL || D.snap->keypair == NULL)
        return 0;
    return (double)(certs_keypair_not_after(D.snap->keypair) - (int64_t)time(NULL));
}

/* notAfter - notBefore of the own SVID: with picket_svid_expiry_seconds,
 * an alert can fire when less than a third of its life is left, whatever
 * lifetime the issuer chose. */
static double svid_lifetime_fn(void *arg)
{
    (void)arg;
    if (D.snap == NULL || D.snap->keypair == NULL)
        return 0;
    return (double)(certs_keypair_not_after(D.snap->keypair) -
                    certs_keypair_not_before(D.snap->keypair));
}

/* 1 while the policy in force is stale as /readyz judges it (the bundle is
 * past expires_at, or no contact with the control plane for
 * policy.max_staleness), else 0. */
static double policy_stale_fn(void *arg)
{
    int64_t now = (int64_t)time(NULL);
    (void)arg;
    if (D.snap == NULL || D.policy == NULL)
        return 0;
    if (D.policy->expires_at_s > 0 && now >= D.policy->expires_at_s)
        return 1;
    return D.fetcher != NULL && px_fetcher_is_stale(D.fetcher, px_now_ms(),
                                                    D.snap->cfg->policy.max_staleness_ms, 0);
}

static double policy_revision_fn(void *arg)
{
    (void)arg;
    return D.policy ? (double)D.policy->revision : -1;
}

static double policy_age_fn(void *arg)
{
    (void)arg;
    return D.policy ? (double)(px_now_ms() - D.policy->loaded_at_ms) / 1000.0 : -1;
}

/* ---- run ------------------------------------------------------------------ */

/* Worker bases batch epoll_ctl changes per loop iteration: a bufferevent
 * that drops EV_WRITE after flushing and adds it back when the next chunk
 * arrives (every few KiB of a proxied body) then costs no syscall. We never
 * dup() sockets, which is the case the changelist mishandles. They have no
 * lock: only the worker's thread touches its base, other threads post to
 * its mailbox (mailbox.h). */
static struct event_base *worker_base_new(void)
{
    struct event_config *ec = event_config_new();
    struct event_base *b;
    if (ec == NULL)
        return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    b = event_base_new_with_config(ec);
    event_config_free(ec);
    return b;
}

static void cleanup(void)
{
    px_probes_free(D.probes); /* before the pools and resolver its probes use */
    D.probes = NULL;
    px_admin_free(D.metrics);
    D.metrics = NULL;
    px_wlapi_client_free(D.wl);
    D.wl = NULL;
    px_wlapi_identity_clear(&D.wl_id);
    px_fetcher_free(D.fetcher);
    D.fetcher = NULL;
    if (D.ctl.base != NULL) {
        px_pools_free(&D.ctl);
        px_snapshot_unref(D.ctl.snap);
    }
    for (int i = 0; i < D.nworkers; i++)
        px_worker_free(&D.workers[i]);
    free(D.workers);
    px_dcache_shutdown(); /* after every worker: they hold references into it */
    px_admin_free(D.admin);
    if (D.sig_term)
        event_free(D.sig_term);
    if (D.sig_int)
        event_free(D.sig_int);
    if (D.sig_hup)
        event_free(D.sig_hup);
    /* Freeing the signal events restores the default actions: a second
     * SIGTERM now would kill the process before it exits cleanly (and
     * lose its exit status). Stopping is already under way. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    if (D.reload_timer)
        event_free(D.reload_timer);
    for (size_t i = 0; i < D.ncert_watch; i++)
        free(D.cert_watch[i].path);
    free(D.policy_watch.path);
    px_policy_state_unref(D.policy);
    px_snapshot_unref(D.snap);
    if (D.base)
        event_base_free(D.base);
    free(D.config_path);
    px_log_shutdown();
    px_metrics_shutdown();
    memset(&D, 0, sizeof(D));
}

int px_run(const char *config_path, void (*on_ready)(void *arg), void *ready_arg)
{
    struct px_config *cfg = NULL;
    char err[1024];
    int64_t ms;
    struct timeval tv;
    int rc = 1;

    memset(&D, 0, sizeof(D));
    if (px_config_load(&cfg, config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket: %s\n", err);
        return 2;
    }
    if (apply_overrides(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket: %s: %s\n", config_path, err);
        px_config_free(cfg);
        return 2;
    }
    if (px_log_init(cfg->log.level, cfg->log.access, cfg->log.audit, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket: log: %s\n", err);
        px_config_free(cfg);
        return 2;
    }
    D.config_path = strdup(config_path);
    signal(SIGPIPE, SIG_IGN);
    /* glibc gives freed heap back to the kernel (madvise) as soon as 128 KiB
     * sit unused at its top, and each time costs a TLB shootdown on every
     * CPU. Bodies move in 60 KiB reads (upstream: px_up_read_more), so that
     * was several times per 1 MiB response: a quarter of picket's CPU on
     * these VMs. Up to PX_HEAP_KEEP per arena is kept for reuse instead. */
    mallopt(M_TRIM_THRESHOLD, PX_HEAP_KEEP);
    evthread_use_pthreads();
    if (px_ssl_conn_idx < 0) {
        px_ssl_conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        px_ssl_expect_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        px_ssl_reason_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    }
    if (px_snapshot_build(&D.snap, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket: %s: %s\n", config_path, err);
        px_log(PX_LOG_ERROR, "start_failed", "error", err, NULL);
        rc = 2;
        goto out;
    }
    cfg = D.snap->cfg;
    D.reload_ok = px_counter_get("picket_reloads_total", "Reloads by result", "result=\"ok\"");
    D.reload_failed =
        px_counter_get("picket_reloads_total", "Reloads by result", "result=\"refused\"");
    px_mem_configure(cfg->limits.memory_budget);
    px_gauge_fn("picket_svid_expiry_seconds", "Seconds until the own SVID expires", "",
                svid_expiry_fn, NULL);
    px_gauge_fn("picket_svid_lifetime_seconds",
                "Lifetime of the own SVID (notAfter - notBefore), seconds", "", svid_lifetime_fn,
                NULL);
    px_gauge_fn("picket_policy_revision", "Revision of the policy bundle in force (-1: none)", "",
                policy_revision_fn, NULL);
    px_gauge_fn("picket_policy_age_seconds", "Seconds since the policy in force was accepted", "",
                policy_age_fn, NULL);
    px_gauge_fn("picket_policy_stale",
                "1 while the policy in force is stale (expired, or no control-plane contact for "
                "policy.max_staleness)",
                "", policy_stale_fn, NULL);
    watch_certs(cfg);
    px_floor_load(&D.floor, cfg);
    load_policy(1);

    D.base = event_base_new();
    if (D.base == NULL)
        goto out;
    if (cfg->identity.source == PX_ID_WORKLOAD_API) {
        D.wl_accepted = px_counter_get("picket_workload_api_updates_total",
                                       "Workload API messages by result", "result=\"accepted\"");
        D.wl_refused = px_counter_get("picket_workload_api_updates_total",
                                      "Workload API messages by result", "result=\"refused\"");
        px_gauge_fn("picket_workload_api_connected",
                    "1 while the Workload API stream is open, else 0", "", wl_connected_fn, NULL);
        D.wl = px_wlapi_client_new(D.base, cfg->identity.workload_api_socket, &wl_ops, NULL, 1,
                                   err, sizeof(err));
        if (D.wl == NULL) {
            fprintf(stderr, "picket: %s: identity.workload_api_socket: %s\n", config_path, err);
            rc = 2;
            goto out;
        }
    }
    D.ctl.id = -1;
    D.ctl.base = D.base;
    D.ctl.snap = px_snapshot_ref(D.snap);
    if (cfg->policy.url != NULL &&
        px_fetcher_new(&D.fetcher, &D.ctl, cfg, &D.floor, fetch_publish, fetch_contact, NULL, err,
                       sizeof(err)) != 0) {
        fprintf(stderr, "picket: %s: %s\n", config_path, err);
        px_log(PX_LOG_ERROR, "start_failed", "error", err, NULL);
        rc = 2;
        goto out;
    }
    D.nworkers = cfg->workers > 0 ? cfg->workers : 1;
    D.workers = calloc((size_t)D.nworkers, sizeof(*D.workers));
    if (D.workers == NULL)
        goto out;
    for (int i = 0; i < D.nworkers; i++) {
        struct px_worker *w = &D.workers[i];
        w->id = i;
        w->base = worker_base_new();
        w->mailbox = w->base != NULL ? px_mailbox_new(w->base) : NULL;
        w->snap = px_snapshot_ref(D.snap);
        w->policy = px_policy_state_ref(D.policy);
        if (w->mailbox == NULL)
            snprintf(err, sizeof(err), "worker %d: no event loop (out of memory or descriptors)", i);
        if (w->mailbox == NULL || px_worker_listen(w, err, sizeof(err)) != 0) {
            fprintf(stderr, "picket: %s\n", err);
            px_log(PX_LOG_ERROR, "start_failed", "error", err, NULL);
            D.nworkers = i + 1;
            goto out;
        }
    }
    if (cfg->admin.bind_host != NULL) {
        D.admin = px_admin_start(D.base, cfg->admin.bind_host, cfg->admin.bind_port, &admin_ops,
                                 NULL, err, sizeof(err));
        if (D.admin == NULL) {
            fprintf(stderr, "picket: admin: %s\n", err);
            goto out;
        }
    }
    if (cfg->metrics.bind_host != NULL) {
        D.metrics = px_metrics_start(D.base, cfg->metrics.bind_host, cfg->metrics.bind_port, err,
                                     sizeof(err));
        if (D.metrics == NULL) {
            fprintf(stderr, "picket: %s\n", err);
            goto out;
        }
    }
    {
        const char *ph, *pp;
        if (px_config_probes_bind(cfg, &ph, &pp)) {
            D.probes = px_probes_start(&D.ctl, ph, pp, err, sizeof(err));
            if (D.probes == NULL) {
                fprintf(stderr, "picket: %s\n", err);
                goto out;
            }
        }
    }
    D.sig_term = evsignal_new(D.base, SIGTERM, sigterm_cb, NULL);
    D.sig_int = evsignal_new(D.base, SIGINT, sigterm_cb, NULL);
    D.sig_hup = evsignal_new(D.base, SIGHUP, sighup_cb, NULL);
    D.reload_timer = event_new(D.base, -1, EV_PERSIST, reload_timer_cb, NULL);
    if (!D.sig_term || !D.sig_int || !D.sig_hup || !D.reload_timer)
        goto out;
    evsignal_add(D.sig_term, NULL);
    evsignal_add(D.sig_int, NULL);
    evsignal_add(D.sig_hup, NULL);
    ms = cfg->identity.reload_interval_ms > 0 ? cfg->identity.reload_interval_ms : 5000;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    event_add(D.reload_timer, &tv);

    for (int i = 0; i < D.nworkers; i++) {
        if (px_worker_start(&D.workers[i]) != 0) {
            fprintf(stderr, "picket: cannot start worker threads\n");
            for (int k = 0; k < i; k++)
                px_worker_post_drain(&D.workers[k]);
            for (int k = 0; k < i; k++)
                pthread_join(D.workers[k].thread, NULL);
            goto out; /* cleanup() frees every worker, started or not */
        }
    }
    {
        char nw[16], pb[300] = "", mb[300] = "";
        const char *ph, *pp;
        snprintf(nw, sizeof(nw), "%d", D.nworkers);
        if (D.probes != NULL && px_config_probes_bind(cfg, &ph, &pp))
            snprintf(pb, sizeof(pb), "%s:%d", ph, px_probes_port(D.probes));
        if (D.metrics != NULL)
            snprintf(mb, sizeof(mb), "%s:%d", cfg->metrics.bind_host, px_admin_port(D.metrics));
        px_log(PX_LOG_INFO, "started", "node", cfg->node_id, "own_id", D.snap->own_id, "workers",
               nw, "config", config_path, "probes", pb[0] ? pb : NULL, "metrics",
               mb[0] ? mb : NULL, NULL);
    }
    if (on_ready)
        on_ready(ready_arg);
    event_base_dispatch(D.base);
    for (int i = 0; i < D.nworkers; i++)
        pthread_join(D.workers[i].thread, NULL);
    px_log(PX_LOG_INFO, "stopped", "msg", "drained", NULL);
    rc = 0;
out:
    cleanup();
    return rc;
}
