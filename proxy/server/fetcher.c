/*
 * fetcher.c - policy from a control plane (policy.url). Runs on the control
 * thread's event base with its own client pools (client.c), so it never
 * blocks a request. The protocol decisions (verification, revision floor,
 * delays, backoff, staleness) are policy/fetch.c's; this file does the HTTP
 * and the side effects:
 *
 *   - GET policy.url over mTLS with the workload's SVID; the server must
 *     present an SVID naming exactly policy.server_id. If-None-Match and,
 *     with long_poll, "Prefer: wait=N".
 *   - An accepted envelope is compiled, published to the workers (atomic
 *     swap), and persisted to cache_dir (temp file, fsync, rename). A cache
 *     write failure is logged and counted; enforcement goes on.
 *   - At start, a persisted envelope is verified again and used until the
 *     control plane answers; its age counts from the file's mtime, so a
 *     sidecar that starts offline with an old cache is stale at once.
 *   - Every successful contact (200 or 304) refreshes the contact time the
 *     workers read to judge staleness.
 */
#include "fetcher.h"
#include "url.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "certs.h"
#include "client.h"
#include "enforce.h"
#include "envelope.h"
#include "floor.h"
#include "log.h"
#include "snapshot.h"
#include "metrics.h"

#define FETCH_MAX_BODY (POLICY_BUNDLE_MAX_BYTES / 3 * 4 + 65536) /* base64 + envelope */
#define CACHE_NAME "policy.dsse.json"

struct px_fetcher {
    struct px_worker *w;
    struct policy_fetch *f;
    struct policy_keyring *kr;
    struct px_upstream_addr up;
    char *server_id; /* owned; up.server_id points here */
    char authority[300];
    char path[2048];
    char cache_path[1100];
    int cache_current; /* the cache file holds the bundle in force */
    int64_t long_poll_ms;
    struct event *timer;
    struct px_client_call *call;
    int64_t sent_ms;
    struct policy_fetch_action next;
    px_fetcher_publish_fn publish;
    px_fetcher_contact_fn publish_contact;
    void *arg;
    char last_result[32];
    char last_error[300];
    int64_t last_attempt_ms;
};

static void count(const char *name, const char *help, const char *label, const char *value)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "%s=\"%s\"", label, value);
    px_counter_add(px_counter_get(name, help, labels), 1);
}

/* "https://host[:port]/path" -> parts. */
static int parse_url(struct px_fetcher *fe, const char *url, char *err, size_t errlen)
{
    char host[256], port[8];
    const char *path;

    if (px_https_url_split(url, host, sizeof(host), port, sizeof(port), &path) != 0) {
        snprintf(err, errlen, "policy.url: expected https://host[:port][/path]");
        return -1;
    }
    snprintf(fe->authority, sizeof(fe->authority), "%.*s", (int)strcspn(url + 8, "/"), url + 8);
    snprintf(fe->path, sizeof(fe->path), "%s", path);
    fe->up.host = strdup(host);
    fe->up.port = strdup(port);
    fe->up.url = strdup(url);
    if (!fe->up.host || !fe->up.port || !fe->up.url) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void schedule(struct px_fetcher *fe, int64_t delay_ms)
{
    struct timeval tv;
    if (delay_ms < 0)
        delay_ms = 0;
    tv.tv_sec = delay_ms / 1000;
    tv.tv_usec = (delay_ms % 1000) * 1000;
    evtimer_add(fe->timer, &tv);
}

static void persist(struct px_fetcher *fe, const char *env, size_t len)
{
    char err[300];
    if (fe->cache_path[0] == '\0')
        return;
    {
        /* cache_dir may not exist yet on a first start (an emptyDir or a
         * fresh host path): create it, private, one level only. */
        char dir[sizeof(fe->cache_path)];
        char *slash;
        snprintf(dir, sizeof(dir), "%s", fe->cache_path);
        slash = strrchr(dir, '/');
        if (slash != NULL && slash != dir) {
            *slash = '\0';
            (void)mkdir(dir, 0700); /* EEXIST is fine; other errors show in the write */
        }
    }
    fe->cache_current = 0;
    if (certs_write_file_atomic(fe->cache_path, env, len, 0600, err, sizeof(err)) == 0) {
        fe->cache_current = 1;
    } else {
        count("picket_policy_cache_write_failures_total", "Envelopes that could not be persisted",
              "path", "cache_dir");
        px_log(PX_LOG_ERROR, "policy_cache_write_failed", "path", fe->cache_path, "error", err,
               "msg", "enforcement goes on with the bundle in memory", NULL);
    }
}

/* A 304 or an unchanged 200 confirmed the bundle in force: move the cache
 * file's mtime to now, since an offline start counts staleness from it.
 * Without this a sidecar restarted during a control-plane outage would find
 * its cache as old as the last *change* and fail closed at once. Only when
 * the file holds the bundle in force (a failed write leaves an older one,
 * which must not look freshly confirmed). */
static void touch_cache(struct px_fetcher *fe)
{
    if (fe->cache_path[0] != '\0' && fe->cache_current)
        (void)utimensat(AT_FDCWD, fe->cache_path, NULL, 0);
}

static void publish_payload(struct px_fetcher *fe, const char *payload, size_t len,
                            const char *source, int64_t contact_ms)
{
    struct px_policy_state *p = NULL;
    char err[600];
    if (px_policy_state_from_json(&p, payload, len, source, err, sizeof(err)) != 0) {
        /* fetch.c parsed it already; only memory can fail here */
        px_log(PX_LOG_ERROR, "policy_refused", "source", source, "error", err, NULL);
        return;
    }
    atomic_store(&p->contact_ms, contact_ms);
    p->from_url = 1;
    fe->publish(fe->arg, p);
}

static void on_response(void *arg, const struct px_client_resp *r)
{
    struct px_fetcher *fe = arg;
    struct policy_fetch_result res;
    const struct px_hdr *etag = NULL;
    int64_t now = px_now_ms();
    char rev[32];

    fe->call = NULL;
    memset(&res, 0, sizeof(res));
    res.sent_ms = fe->sent_ms;
    if (r->status == 0) {
        res.kind = r->error == PX_R_TIMEOUT ? POLICY_FETCH_RES_TIMEOUT : POLICY_FETCH_RES_TRANSPORT;
        res.detail = r->error != PX_R_NONE ? px_reason_name(r->error) : "error";
    } else {
        etag = px_hdrs_get(r->headers, "etag");
        if (etag != NULL) {
            res.etag = etag->value;
            res.etag_len = etag->vlen;
        }
        if (r->status == 200) {
            res.kind = POLICY_FETCH_RES_BODY;
            res.body = r->body;
            res.body_len = r->body_len;
        } else if (r->status == 304) {
            res.kind = POLICY_FETCH_RES_NOT_MODIFIED;
        } else {
            res.kind = POLICY_FETCH_RES_STATUS;
            res.status = r->status;
        }
    }
    policy_fetch_action_clear(&fe->next);
    if (policy_fetch_on_result(fe->f, now, &res, &fe->next) != 0) {
        schedule(fe, 1000);
        return;
    }
    snprintf(fe->last_result, sizeof(fe->last_result), "%s",
             policy_fetch_outcome_name(fe->next.outcome));
    count("picket_policy_fetch_total", "Control-plane fetches by result", "result",
          fe->last_result);
    snprintf(rev, sizeof(rev), "%lld", (long long)fe->next.revision);
    switch (fe->next.outcome) {
    case POLICY_FETCH_UPDATED: {
        char src[2100];
        snprintf(src, sizeof(src), "%s", fe->up.url);
        fe->last_error[0] = '\0';
        px_log(PX_LOG_INFO, "policy_fetched", "source", fe->up.url, "revision", rev, "keyid",
               fe->next.keyid, NULL);
        publish_payload(fe, fe->next.payload, fe->next.payload_len, src, now);
        persist(fe, r->body, r->body_len);
        break;
    }
    case POLICY_FETCH_NOT_MODIFIED:
    case POLICY_FETCH_UNCHANGED:
        fe->last_error[0] = '\0';
        touch_cache(fe);
        break;
    case POLICY_FETCH_REFUSED:
        snprintf(fe->last_error, sizeof(fe->last_error), "%s: %s",
                 policy_env_reason_name(fe->next.reason), fe->next.detail);
        count("picket_policy_refusals_total", "Fetched bundles refused, by reason", "reason",
              policy_env_reason_name(fe->next.reason));
        px_log(PX_LOG_ERROR, "policy_refused", "source", fe->up.url, "reason",
               policy_env_reason_name(fe->next.reason), "detail", fe->next.detail, "revision",
               (fe->next.reason == POLICY_ENV_REVISION_ROLLBACK ||
                fe->next.reason == POLICY_ENV_REVISION_CONFLICT)
                   ? rev
                   : NULL, /* not parsed, so unknown */
               "msg", "keeping the policy in force", NULL);
        break;
    default: {
        char st[16];
        snprintf(st, sizeof(st), "%d", r->status);
        snprintf(fe->last_error, sizeof(fe->last_error), "%s: %s", fe->last_result,
                 r->status ? st : (r->error != PX_R_NONE ? px_reason_name(r->error) : "error"));
        px_log(PX_LOG_WARN, "policy_fetch_failed", "source", fe->up.url, "result",
               fe->last_result, "status", r->status ? st : NULL, "error",
               r->status ? NULL : px_reason_name(r->error), NULL);
        break;
    }
    }
    if (fe->next.outcome == POLICY_FETCH_NOT_MODIFIED || fe->next.outcome == POLICY_FETCH_UNCHANGED ||
        fe->next.outcome == POLICY_FETCH_UPDATED)
        fe->publish_contact(fe->arg, now);
    schedule(fe, fe->next.delay_ms);
}

static void send_request(struct px_fetcher *fe)
{
    struct px_hdrs h;
    struct px_client_req req;
    memset(&h, 0, sizeof(h));
    px_hdrs_add(&h, "accept", 6, "application/json", 16, 0);
    if (fe->next.if_none_match[0])
        px_hdrs_add(&h, "if-none-match", 13, fe->next.if_none_match,
                    strlen(fe->next.if_none_match), 0);
    if (fe->next.prefer[0])
        px_hdrs_add(&h, "prefer", 6, fe->next.prefer, strlen(fe->next.prefer), 0);
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.authority = fe->authority;
    req.path = fe->path;
    req.headers = &h;
    req.timeout_ms = fe->long_poll_ms > 0 ? fe->long_poll_ms + 10000 : 15000;
    req.max_body = FETCH_MAX_BODY;
    fe->sent_ms = px_now_ms();
    fe->last_attempt_ms = fe->sent_ms;
    fe->call = px_client_request(fe->w, &fe->up, &req, on_response, fe);
    px_hdrs_clear(&h);
    if (fe->call == NULL) {
        px_log(PX_LOG_ERROR, "policy_fetch_failed", "source", fe->up.url, "error",
               "could not start a request", NULL);
        schedule(fe, 1000);
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_request(arg);
}

/* Uses the envelope persisted in cache_dir, if it still verifies. */
static void load_cache(struct px_fetcher *fe, const struct px_floor *floor)
{
    char *env = NULL, *payload = NULL, err[300], keyid[POLICY_KEYID_MAX + 1];
    size_t len = 0, plen = 0;
    struct stat sb;
    struct policy_bundle *b = NULL;
    enum policy_env_reason r;
    int64_t mtime_ms;
    char src[1200];

    if (fe->cache_path[0] == '\0' || stat(fe->cache_path, &sb) != 0)
        return;
    if (certs_read_file(fe->cache_path, FETCH_MAX_BODY, &env, &len, err, sizeof(err)) != 0) {
        px_log(PX_LOG_WARN, "policy_cache_unusable", "path", fe->cache_path, "error", err, NULL);
        return;
    }
    r = policy_envelope_verify(fe->kr, env, len, &payload, &plen, keyid, sizeof(keyid), err,
                               sizeof(err));
    if (r != POLICY_ENV_OK || policy_bundle_parse(&b, payload, plen, err, sizeof(err)) != 0) {
        px_log(PX_LOG_WARN, "policy_cache_unusable", "path", fe->cache_path, "reason",
               r != POLICY_ENV_OK ? policy_env_reason_name(r) : "bad_bundle", "error", err, NULL);
        free(env);
        free(payload);
        return;
    }
    if (floor != NULL) {
        unsigned char h[32];
        char why[300];
        if (EVP_Digest(payload, plen, h, NULL, EVP_sha256(), NULL) != 1 ||
            px_floor_check(floor, policy_bundle_revision(b), h, why, sizeof(why)) != 0) {
            /* a cache file put back from an older backup is a rollback too */
            px_log(PX_LOG_ERROR, "policy_cache_unusable", "path", fe->cache_path, "reason",
                   "revision_rollback", "error", why, NULL);
            policy_bundle_free(b);
            free(env);
            free(payload);
            return;
        }
    }
    mtime_ms = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
    policy_fetch_seed(fe->f, payload, plen, policy_bundle_revision(b), 1, mtime_ms);
    snprintf(src, sizeof(src), "cache:%s", fe->cache_path);
    px_log(PX_LOG_INFO, "policy_from_cache", "path", fe->cache_path, "msg",
           "using the persisted bundle until the control plane answers", NULL);
    publish_payload(fe, payload, plen, src, mtime_ms);
    fe->cache_current = 1;
    policy_bundle_free(b);
    free(env);
    free(payload);
}

int px_fetcher_new(struct px_fetcher **out, struct px_worker *ctl, const struct px_config *cfg,
                   const struct px_floor *floor, px_fetcher_publish_fn publish,
                   px_fetcher_contact_fn contact, void *arg, char *err, size_t errlen)
{
    struct px_fetcher *fe = calloc(1, sizeof(*fe));
    struct policy_keyring_source *src = NULL;
    struct policy_fetch_config fc;
    char e2[512];

    if (fe == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    fe->w = ctl;
    fe->publish = publish;
    fe->publish_contact = contact;
    fe->arg = arg;
    fe->long_poll_ms = cfg->policy.long_poll_ms;
    snprintf(fe->last_result, sizeof(fe->last_result), "none yet");
    if (parse_url(fe, cfg->policy.url, err, errlen) != 0)
        goto fail;
    fe->up.proto = PX_UP_MTLS;
    /* Our own copy: a reload (SIGHUP, rotated SVID files) frees the config
     * this fetcher was built from, while the fetcher lives on. */
    fe->server_id = strdup(cfg->policy.server_id);
    if (fe->server_id == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    fe->up.server_id = fe->server_id;
    fe->up.alpn_probe = 1;
    if (cfg->policy.cache_dir != NULL)
        snprintf(fe->cache_path, sizeof(fe->cache_path), "%s/%s", cfg->policy.cache_dir,
                 CACHE_NAME);
    src = calloc(cfg->policy.nsigning_keys ? cfg->policy.nsigning_keys : 1, sizeof(*src));
    if (src == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->policy.nsigning_keys; i++) {
        src[i].keyid = cfg->policy.signing_key_ids[i];
        src[i].path = cfg->policy.signing_key_files[i];
    }
    if (policy_keyring_load(&fe->kr, src, cfg->policy.nsigning_keys, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "policy.signing_keys: %s", e2);
        goto fail;
    }
    memset(&fc, 0, sizeof(fc));
    fc.poll_min_ms = cfg->policy.poll_min_ms;
    fc.poll_max_ms = cfg->policy.poll_max_ms;
    fc.long_poll_ms = cfg->policy.long_poll_ms;
    if (RAND_bytes((unsigned char *)&fc.seed, sizeof(fc.seed)) != 1)
        fc.seed = (uint64_t)px_mono_us();
    if (policy_fetch_new(&fe->f, &fc, fe->kr, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "policy: %s", e2);
        goto fail;
    }
    fe->timer = evtimer_new(ctl->base, timer_cb, fe);
    if (fe->timer == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    free(src);
    if (floor != NULL && floor->revision >= 0)
        policy_fetch_set_floor(fe->f, floor->revision, floor->sha);
    load_cache(fe, floor);
    policy_fetch_start(fe->f, px_now_ms(), &fe->next);
    schedule(fe, 0);
    *out = fe;
    return 0;
fail:
    free(src);
    px_fetcher_free(fe);
    return -1;
}

void px_fetcher_free(struct px_fetcher *fe)
{
    if (fe == NULL)
        return;
    px_client_cancel(fe->call);
    if (fe->timer)
        event_free(fe->timer);
    policy_fetch_action_clear(&fe->next);
    policy_fetch_free(fe->f);
    policy_keyring_free(fe->kr);
    free(fe->up.host);
    free(fe->up.port);
    free(fe->up.url);
    free(fe->server_id);
    free(fe);
}

int px_fetcher_is_stale(const struct px_fetcher *fe, int64_t now_ms, int64_t max_staleness_ms,
                        int64_t expires_at_s)
{
    return policy_fetch_is_stale(fe->f, now_ms, max_staleness_ms, expires_at_s);
}

void px_fetcher_status(const struct px_fetcher *fe, struct evbuffer *out)
{
    char esc[700], url[2100];
    px_json_escape(esc, sizeof(esc), fe->last_error, strlen(fe->last_error));
    px_json_escape(url, sizeof(url), fe->up.url, strlen(fe->up.url));
    evbuffer_add_printf(out,
                        "\"fetch\":{\"url\":\"%s\",\"last_result\":\"%s\",\"last_error\":%s%s%s,"
                        "\"failures\":%u,\"staleness_ms\":%lld}",
                        url, fe->last_result, fe->last_error[0] ? "\"" : "",
                        fe->last_error[0] ? esc : "null", fe->last_error[0] ? "\"" : "",
                        policy_fetch_failures(fe->f),
                        (long long)policy_fetch_staleness_ms(fe->f, px_now_ms()));
}
