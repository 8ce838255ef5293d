/*
 * enforce.c - the per-request decision and its audit record.
 *
 * The policy in force is a px_policy_state: a compiled engine plus the
 * facts an auditor needs (revision, when it was accepted, where from). A
 * request refs the state it was decided on, so a swap mid-request never
 * shows it half of two bundles.
 *
 * Fail-closed rules, in order:
 *  - a policy source is configured but no bundle has been accepted yet:
 *    503, reason "no_policy";
 *  - the bundle is past its expires_at: with on_stale "deny", 503, reason
 *    "stale"; with "last_known_good", enforce it and log loudly;
 *  - a rule says dispatch but no dispatch service can answer: 403 (a
 *    missing answer is never an allow).
 * Without any policy source configured, a request is allowed only because
 * its peer passed the full SVID check at the handshake (rule "mtls").
 */
#include "px.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "certs.h"
#include "dispatch.h"
#include "enforce.h"
#include "gate.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "request.h"

static struct px_counter *decision_counter_slow(const char *decision, const char *rule)
{
    char labels[300], esc[200];
    px_metrics_label_escape(rule, esc, sizeof(esc));
    snprintf(labels, sizeof(labels), "decision=\"%s\",rule=\"%s\"", decision, esc);
    return px_counter_get("picket_policy_decisions_total", "Policy decisions by decision and rule",
                          labels);
}

/* The registry lookup takes a mutex and formats labels; a request must
 * not. Each thread keeps a small direct-mapped cache keyed by the (static
 * or engine-owned, hence stable) decision and rule strings; a miss, or a
 * collision, falls back to the registry. */
#define DC_SLOTS 256
static _Thread_local struct {
    const char *decision, *rule;
    uint64_t gen; /* policy generation: a rule string of a freed engine may be reused */
    struct px_counter *c;
} dc_cache[DC_SLOTS];

static struct px_counter *decision_counter_gen(uint64_t gen, const char *decision,
                                               const char *rule)
{
    uintptr_t h = ((uintptr_t)rule >> 4) ^ ((uintptr_t)decision >> 3) ^ (uintptr_t)gen;
    size_t i = (size_t)(h % DC_SLOTS);
    if (dc_cache[i].rule == rule && dc_cache[i].decision == decision && dc_cache[i].gen == gen &&
        dc_cache[i].c != NULL)
        return dc_cache[i].c;
    dc_cache[i].decision = decision;
    dc_cache[i].rule = rule;
    dc_cache[i].gen = gen;
    dc_cache[i].c = decision_counter_slow(decision, rule);
    return dc_cache[i].c;
}

/* For static rule names ("mtls", "stale", ...): generation 0. */
static struct px_counter *decision_counter(const char *decision, const char *rule)
{
    return decision_counter_gen(0, decision, rule);
}

static void set_rule(struct px_stream *st, const char *rule)
{
    size_t n = strnlen(rule, sizeof(st->rule) - 1); /* truncated like snprintf, without it */
    memcpy(st->rule, rule, n);
    st->rule[n] = '\0';
}

/* 1 when the bundle in force is stale: past its expires_at or, from a
 * control plane, not confirmed for policy.max_staleness. *age_ms: its age
 * (from a control plane, since the last 200 or 304). */
static int bundle_stale(const struct px_config *cfg, struct px_policy_state *pol, int64_t now_ms,
                        int64_t *age_ms)
{
    int stale = pol->expires_at_s > 0 && now_ms / 1000 >= pol->expires_at_s;
    *age_ms = now_ms - pol->loaded_at_ms;
    if (pol->from_url) {
        /* From a control plane, a bundle is as old as the last time the
         * control plane confirmed it (a 200 or a 304). */
        int64_t contact = atomic_load_explicit(&pol->contact_ms, memory_order_relaxed);
        *age_ms = now_ms - contact;
        if (cfg->policy.max_staleness_ms > 0 && *age_ms > cfg->policy.max_staleness_ms)
            stale = 1;
    }
    return stale;
}

int px_enforce_tcp(const struct px_config *cfg, struct px_policy_state *pol, const char *peer,
                   struct px_tcp_decision *d)
{
    struct policy_request req;
    struct policy_decision why;
    enum policy_verdict v;
    int64_t now_ms = px_now_ms();

    memset(d, 0, sizeof(*d));
    d->mode = "enforce";
    d->bundle_revision = -1;
    d->bundle_age_ms = -1;
    d->decision = "deny";
    if (cfg->policy.file == NULL && cfg->policy.url == NULL) {
        d->decision = "allow";
        snprintf(d->rule, sizeof(d->rule), "mtls");
        px_counter_add(decision_counter("allow", "mtls"), 1);
        return 1;
    }
    if (pol == NULL) {
        snprintf(d->rule, sizeof(d->rule), "no_policy");
        d->reason = PX_R_NO_POLICY;
        px_counter_add(decision_counter("deny", "no_policy"), 1);
        return 0;
    }
    d->bundle_revision = pol->revision;
    d->mode = pol->audit_mode ? "audit" : "enforce";
    if (bundle_stale(cfg, pol, now_ms, &d->bundle_age_ms)) {
        if (cfg->policy.on_stale_deny) {
            snprintf(d->rule, sizeof(d->rule), "stale");
            d->reason = PX_R_STALE;
            px_counter_add(decision_counter("deny", "stale"), 1);
            return 0;
        }
        px_log(PX_LOG_WARN, "policy_stale_enforced", "peer", peer, "msg",
               "policy is stale; on_stale=last_known_good keeps enforcing it", NULL);
    }
    /* Only the caller's identity: no method, authority, path or header,
     * so a rule that names any of them cannot match (policy/eval.c: an
     * empty value matches no listed one, and a header condition needs the
     * header). */
    memset(&req, 0, sizeof(req));
    req.peer = peer;
    req.peer_len = strlen(peer);
    v = policy_eval(pol->engine, &req, &why);
    snprintf(d->rule, sizeof(d->rule), "%s", why.rule_id);
    px_counter_add(decision_counter_gen(pol->gen, policy_verdict_name(v), why.rule_id), 1);
    if (v == POLICY_DISPATCH) {
        /* A remote authorization service judges HTTP requests; a byte
         * stream has nothing to send it. Fail closed. */
        d->reason = PX_R_TCP_DISPATCH_UNSUPPORTED;
        v = POLICY_DENY;
    } else if (v == POLICY_DENY) {
        d->reason = PX_R_POLICY_DENY;
    }
    d->decision = policy_verdict_name(v);
    if (pol->audit_mode) {
        d->reason = PX_R_NONE;
        return 1; /* audit: recorded, never enforced */
    }
    return v == POLICY_ALLOW;
}

int px_enforce_request(struct px_stream *st)
{
    const struct px_config *cfg = st->snap->cfg;
    struct px_policy_state *pol = st->pol;
    struct policy_request req;
    struct policy_decision why;
    struct policy_header local[128], *hbuf;
    enum policy_verdict v;
    int64_t now_ms = px_now_ms();

    st->decided = 1;
    st->decided_by = "local";
    st->mode = "enforce";
    st->bundle_revision = -1;
    st->bundle_age_ms = -1;
    st->cache_age_ms = -1;

    if (cfg->policy.file == NULL && cfg->policy.url == NULL) {
        /* No policy source: the verified SVID is the whole rule. */
        st->decision = "allow";
        set_rule(st, "mtls");
        px_counter_add(decision_counter("allow", "mtls"), 1);
        return 0;
    }
    if (pol == NULL) {
        st->decision = "deny";
        set_rule(st, "no_policy");
        px_counter_add(decision_counter("deny", "no_policy"), 1);
        px_stream_respond(st, 503, "no policy loaded\n", PX_GRPC_UNAVAILABLE, PX_R_NO_POLICY);
        return 1;
    }
    st->bundle_revision = pol->revision;
    st->mode = pol->audit_mode ? "audit" : "enforce";
    {
        int stale = bundle_stale(cfg, pol, now_ms, &st->bundle_age_ms);
        if (stale && cfg->policy.on_stale_deny) {
            st->decision = "deny";
            set_rule(st, "stale");
            px_counter_add(decision_counter("deny", "stale"), 1);
            px_stream_respond(st, 503, "policy is stale\n", PX_GRPC_UNAVAILABLE, PX_R_STALE);
            return 1;
        }
        if (stale)
            px_log(PX_LOG_WARN, "policy_stale_enforced", "request_id", st->rq.request_id, "msg",
                   "policy is stale; on_stale=last_known_good keeps enforcing it", NULL);
    }

    /* The policy sees every field the upstream will get (request.h):
     * limits.max_headers bounds them; past the stack array, one malloc. */
    hbuf = st->rq.hdrs.n <= 128 ? local : malloc(st->rq.hdrs.n * sizeof(*hbuf));
    if (hbuf == NULL) {
        st->decision = "deny";
        set_rule(st, "out_of_memory");
        px_stream_respond(st, 503, "out of memory\n", PX_GRPC_UNAVAILABLE, PX_R_OUT_OF_MEMORY);
        return 1;
    }
    px_request_policy_input(&st->rq, st->conn->peer_id, hbuf, &req);
    v = policy_eval(pol->engine, &req, &why);
    if (hbuf != local)
        free(hbuf);
    st->decision = policy_verdict_name(v);
    set_rule(st, why.rule_id);
    px_counter_add(decision_counter_gen(pol->gen, st->decision, why.rule_id), 1);
    if (pol->audit_mode)
        return 0; /* audit: recorded, never enforced */
    if (v == POLICY_DENY) {
        px_stream_respond(st, 403, "forbidden by policy\n", PX_GRPC_PERMISSION_DENIED, PX_R_POLICY_DENY);
        return 1;
    }
    if (v == POLICY_DISPATCH)
        return px_dispatch_request(st, why.dispatch);
    return 0;
}
