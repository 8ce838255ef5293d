/*
 * fetch.c - the control-plane fetch state machine (DESIGN.md "Policy
 * bundles": fetch protocol; "Scale").
 *
 * I/O-free, like nghttp2's session: proxy/ performs `GET url` and reports
 * what came back together with the current time; this file decides what
 * the answer means (verify, parse, revision checks), what to do with it,
 * when to ask again and with which headers. It owns the ETag, the revision
 * in force and the SHA-256 of its payload, the last successful contact
 * time, the failure count and the delay jitter source.
 *
 * Why the delays look the way they do: every sidecar in a fleet polls the
 * same URL, often on a CDN or a plain file server (DESIGN.md "Scale"), so
 * polls are spread at random over [poll_min, poll_max] and error retries
 * back off exponentially with jitter, to keep a fleet from hammering a
 * recovering server in step. A long poll is re-issued at once only when
 * the server visibly held it; a server that ignores "Prefer: wait" is
 * polled like any other.
 */
#include "envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define BACKOFF_MIN_DEFAULT_MS 1000

struct policy_fetch {
    struct policy_fetch_config cfg;
    const struct policy_keyring *kr; /* borrowed */
    uint64_t rng;
    int64_t revision;      /* -1: none in force */
    unsigned char sha[32]; /* SHA-256 of the payload in force */
    int64_t floor;         /* -1: none; else the revision a bundle must reach (an earlier run's) */
    unsigned char floor_sha[32];
    char etag[POLICY_FETCH_ETAG_MAX + 1];
    char etag_sent[POLICY_FETCH_ETAG_MAX + 1]; /* If-None-Match of the last action */
    int64_t last_contact_ms;                   /* -1: never */
    int64_t fresh_since_ms;                    /* staleness base: last contact or cache time */
    unsigned failures;
};

static const char *const outcome_names[POLICY_FETCH_OUTCOME_COUNT] = {
    [POLICY_FETCH_START] = "start",
    [POLICY_FETCH_UPDATED] = "updated",
    [POLICY_FETCH_NOT_MODIFIED] = "not_modified",
    [POLICY_FETCH_UNCHANGED] = "unchanged",
    [POLICY_FETCH_REFUSED] = "refused",
    [POLICY_FETCH_HTTP_ERROR] = "http_error",
    [POLICY_FETCH_TRANSPORT_ERROR] = "transport_error",
    [POLICY_FETCH_TIMEOUT] = "timeout",
};

const char *policy_fetch_outcome_name(enum policy_fetch_outcome o)
{
    if ((int)o < 0 || o >= POLICY_FETCH_OUTCOME_COUNT)
        return "unknown";
    return outcome_names[o];
}

/* splitmix64: tiny, good enough for jitter, and reproducible from a seed.
 * Delays need no unpredictability, only spread. */
static uint64_t rng_next(struct policy_fetch *f)
{
    uint64_t z = (f->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform-ish in [lo, hi] (modulo bias is irrelevant at these ranges). */
static int64_t rng_range(struct policy_fetch *f, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (int64_t)(rng_next(f) % (uint64_t)(hi - lo + 1));
}

void policy_fetch_action_clear(struct policy_fetch_action *a)
{
    if (a == NULL)
        return;
    policy_bundle_free(a->bundle);
    free(a->payload);
    memset(a, 0, sizeof(*a));
}

int policy_fetch_new(struct policy_fetch **out, const struct policy_fetch_config *cfg,
                     const struct policy_keyring *kr, char *err, size_t errlen)
{
    struct policy_fetch *f;

    if (out == NULL || cfg == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "no configuration given");
        return POLICY_ERR_INVAL;
    }
    if (cfg->poll_min_ms <= 0 || cfg->poll_max_ms < cfg->poll_min_ms || cfg->long_poll_ms < 0 ||
        cfg->backoff_min_ms < 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen,
                     "need 0 < poll_min <= poll_max, long_poll >= 0 and backoff_min >= 0");
        return POLICY_ERR_FETCH_CONFIG;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "out of memory");
        return POLICY_ERR_NOMEM;
    }
    f->cfg = *cfg;
    if (f->cfg.backoff_min_ms == 0)
        f->cfg.backoff_min_ms = BACKOFF_MIN_DEFAULT_MS;
    f->kr = kr;
    f->rng = cfg->seed;
    f->revision = -1;
    f->floor = -1;
    f->last_contact_ms = -1;
    f->fresh_since_ms = -1;
    *out = f;
    return 0;
}

void policy_fetch_free(struct policy_fetch *f)
{
    free(f);
}

void policy_fetch_set_keyring(struct policy_fetch *f, const struct policy_keyring *kr)
{
    if (f != NULL)
        f->kr = kr;
}

static int sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

int policy_fetch_seed(struct policy_fetch *f, const char *payload, size_t len, int64_t revision,
                      int from_cache, int64_t as_of_ms)
{
    unsigned char h[32];

    if (f == NULL || (payload == NULL && len > 0) || revision < 0)
        return POLICY_ERR_INVAL;
    if (sha256(payload == NULL ? "" : payload, len, h) != 0)
        return POLICY_ERR_ENV_CRYPTO;
    f->revision = revision;
    memcpy(f->sha, h, sizeof(h));
    f->fresh_since_ms = as_of_ms;
    if (!from_cache)
        f->last_contact_ms = as_of_ms;
    return 0;
}

int policy_fetch_set_floor(struct policy_fetch *f, int64_t revision, const unsigned char sha[32])
{
    if (f == NULL || sha == NULL || revision < 0)
        return POLICY_ERR_INVAL;
    f->floor = revision;
    memcpy(f->floor_sha, sha, sizeof(f->floor_sha));
    return 0;
}

/* Fills the request headers for the next poll. */
static void fill_request(struct policy_fetch *f, struct policy_fetch_action *a)
{
    snprintf(a->if_none_match, sizeof(a->if_none_match), "%s", f->etag);
    snprintf(f->etag_sent, sizeof(f->etag_sent), "%s", f->etag);
    a->prefer[0] = '\0';
    if (f->cfg.long_poll_ms > 0) /* RFC 7240 "wait" is whole seconds: round up */
        snprintf(a->prefer, sizeof(a->prefer), "wait=%lld",
                 (long long)((f->cfg.long_poll_ms + 999) / 1000));
}

int policy_fetch_start(struct policy_fetch *f, int64_t now_ms, struct policy_fetch_action *next)
{
    (void)now_ms;
    if (f == NULL || next == NULL)
        return POLICY_ERR_INVAL;
    memset(next, 0, sizeof(*next));
    next->outcome = POLICY_FETCH_START;
    next->revision = f->revision;
    fill_request(f, next);
    return 0;
}

/* Keeps an ETag only if it is safe to echo in a header: visible ASCII
 * (RFC 9110 8.8.3 etagc plus the W/ and quotes), bounded. Anything else
 * is dropped, so we simply do not send If-None-Match. */
static void take_etag(struct policy_fetch *f, const char *etag, size_t len)
{
    f->etag[0] = '\0';
    if (etag == NULL || len == 0 || len > POLICY_FETCH_ETAG_MAX)
        return;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)etag[i];
        if (c < 0x21 || c > 0x7e)
            return;
    }
    memcpy(f->etag, etag, len);
    f->etag[len] = '\0';
}

static void on_success(struct policy_fetch *f, int64_t now_ms)
{
    f->failures = 0;
    f->last_contact_ms = now_ms;
    f->fresh_since_ms = now_ms;
}

static int64_t success_delay(struct policy_fetch *f, int64_t now_ms,
                             const struct policy_fetch_result *res, enum policy_fetch_outcome o)
{
    int64_t lp = f->cfg.long_poll_ms;

    if (lp > 0 && o == POLICY_FETCH_UPDATED)
        return 0;
    if (lp > 0 && res->sent_ms > 0 && now_ms - res->sent_ms >= lp / 2)
        return rng_range(f, 0, POLICY_FETCH_REPOLL_JITTER_MS);
    return rng_range(f, f->cfg.poll_min_ms, f->cfg.poll_max_ms);
}

/* base = min(backoff_min * 2^(k-1), poll_max); delay in [base/2, base]. */
static int64_t failure_delay(struct policy_fetch *f)
{
    int64_t base = f->cfg.backoff_min_ms, cap = f->cfg.poll_max_ms;

    if (f->failures < 0xffffffffu)
        f->failures++;
    for (unsigned i = 1; i < f->failures && base < cap && base <= INT64_MAX / 2; i++)
        base *= 2; /* stops at the cap, so at most ~63 rounds */
    if (base > cap)
        base = cap;
    return rng_range(f, base / 2, base);
}

/* A 200: verify, parse, compare revisions. Fills the outcome and, on
 * UPDATED, hands over bundle and payload. */
static void on_body(struct policy_fetch *f, const struct policy_fetch_result *res,
                    struct policy_fetch_action *a)
{
    char *payload = NULL;
    size_t plen = 0;
    struct policy_bundle *b = NULL;
    unsigned char h[32];
    int64_t rev;
    char detail[sizeof(a->detail)] = "";

    a->outcome = POLICY_FETCH_REFUSED;
    a->reason = policy_envelope_verify(f->kr, res->body, res->body_len, &payload, &plen, a->keyid,
                                       sizeof(a->keyid), detail, sizeof(detail));
    if (a->reason != POLICY_ENV_OK)
        goto refused;
    if (policy_bundle_parse(&b, payload, plen, detail, sizeof(detail)) != 0) {
        a->reason = POLICY_ENV_BAD_BUNDLE;
        goto refused;
    }
    rev = policy_bundle_revision(b);
    a->revision = rev;
    if (sha256(payload, plen, h) != 0) {
        a->reason = POLICY_ENV_INTERNAL;
        snprintf(detail, sizeof(detail), "SHA-256 failed");
        goto refused;
    }
    if (f->revision >= 0 && rev < f->revision) {
        a->reason = POLICY_ENV_REVISION_ROLLBACK;
        snprintf(detail, sizeof(detail), "revision %lld is older than %lld in force",
                 (long long)rev, (long long)f->revision);
        goto refused;
    }
    if (f->floor >= 0 &&
        (rev < f->floor || (rev == f->floor && memcmp(h, f->floor_sha, sizeof(h)) != 0))) {
        /* an earlier run accepted this revision: a replayed older bundle
         * (or another one under the same revision) is a rollback, whoever
         * serves it */
        a->reason = rev < f->floor ? POLICY_ENV_REVISION_ROLLBACK : POLICY_ENV_REVISION_CONFLICT;
        snprintf(detail, sizeof(detail),
                 rev < f->floor ? "revision %lld is older than %lld, the floor an earlier run "
                                  "accepted"
                                : "revision %lld differs from the one an earlier run accepted",
                 (long long)rev, (long long)f->floor);
        goto refused;
    }
    if (f->revision >= 0 && rev == f->revision) {
        if (memcmp(h, f->sha, sizeof(h)) != 0) {
            a->reason = POLICY_ENV_REVISION_CONFLICT;
            snprintf(detail, sizeof(detail),
                     "revision %lld in force has different content; a change needs a new "
                     "revision",
                     (long long)rev);
            goto refused;
        }
        a->outcome = POLICY_FETCH_UNCHANGED;
        policy_bundle_free(b);
        free(payload);
        return;
    }
    f->revision = rev;
    memcpy(f->sha, h, sizeof(h));
    a->outcome = POLICY_FETCH_UPDATED;
    a->bundle = b;
    a->payload = payload;
    a->payload_len = plen;
    return;
refused:
    snprintf(a->detail, sizeof(a->detail), "%s", detail);
    a->keyid[0] = '\0';
    policy_bundle_free(b);
    free(payload);
}

int policy_fetch_on_result(struct policy_fetch *f, int64_t now_ms,
                           const struct policy_fetch_result *res, struct policy_fetch_action *next)
{
    struct policy_fetch_action *a = next;

    if (f == NULL || res == NULL || next == NULL)
        return POLICY_ERR_INVAL;
    memset(a, 0, sizeof(*a));
    switch (res->kind) {
    case POLICY_FETCH_RES_BODY:
        on_body(f, res, a);
        if (a->outcome != POLICY_FETCH_REFUSED)
            take_etag(f, res->etag, res->etag_len);
        break;
    case POLICY_FETCH_RES_NOT_MODIFIED:
        /* A 304 to a request that carried no validator proves nothing. */
        if (f->etag_sent[0] == '\0' || f->revision < 0) {
            a->outcome = POLICY_FETCH_HTTP_ERROR;
            snprintf(a->detail, sizeof(a->detail), "304 Not Modified without If-None-Match");
            break;
        }
        a->outcome = POLICY_FETCH_NOT_MODIFIED;
        a->revision = f->revision;
        if (res->etag != NULL && res->etag_len > 0)
            take_etag(f, res->etag, res->etag_len);
        break;
    case POLICY_FETCH_RES_STATUS:
        a->outcome = POLICY_FETCH_HTTP_ERROR;
        snprintf(a->detail, sizeof(a->detail), "HTTP status %d", res->status);
        break;
    case POLICY_FETCH_RES_TRANSPORT:
    case POLICY_FETCH_RES_TIMEOUT:
        a->outcome = res->kind == POLICY_FETCH_RES_TIMEOUT ? POLICY_FETCH_TIMEOUT
                                                           : POLICY_FETCH_TRANSPORT_ERROR;
        snprintf(a->detail, sizeof(a->detail), "%s",
                 res->detail != NULL                     ? res->detail
                 : res->kind == POLICY_FETCH_RES_TIMEOUT ? "timed out"
                                                         : "transport error");
        break;
    default:
        return POLICY_ERR_FETCH_RESULT;
    }
    switch (a->outcome) {
    case POLICY_FETCH_UPDATED:
    case POLICY_FETCH_UNCHANGED:
    case POLICY_FETCH_NOT_MODIFIED:
        on_success(f, now_ms);
        a->delay_ms = success_delay(f, now_ms, res, a->outcome);
        break;
    default:
        a->delay_ms = failure_delay(f);
        break;
    }
    fill_request(f, a);
    return 0;
}

int64_t policy_fetch_revision(const struct policy_fetch *f)
{
    return f == NULL ? -1 : f->revision;
}

const char *policy_fetch_etag(const struct policy_fetch *f)
{
    return f == NULL ? "" : f->etag;
}

unsigned policy_fetch_failures(const struct policy_fetch *f)
{
    return f == NULL ? 0 : f->failures;
}

int64_t policy_fetch_last_contact_ms(const struct policy_fetch *f)
{
    return f == NULL ? -1 : f->last_contact_ms;
}

int64_t policy_fetch_staleness_ms(const struct policy_fetch *f, int64_t now_ms)
{
    if (f == NULL || f->revision < 0 || f->fresh_since_ms < 0)
        return -1;
    return now_ms > f->fresh_since_ms ? now_ms - f->fresh_since_ms : 0;
}

int policy_fetch_is_stale(const struct policy_fetch *f, int64_t now_ms, int64_t max_staleness_ms,
                          int64_t bundle_expires_at_s)
{
    int64_t st = policy_fetch_staleness_ms(f, now_ms);

    if (st < 0)
        return 1;
    if (max_staleness_ms > 0 && st > max_staleness_ms)
        return 1;
    if (bundle_expires_at_s > 0 && bundle_expires_at_s <= INT64_MAX / 1000 &&
        now_ms >= bundle_expires_at_s * 1000)
        return 1;
    return 0;
}
