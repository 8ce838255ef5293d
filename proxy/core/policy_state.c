/*
 * policy_state.c - the policy in force: a compiled engine plus the facts an
 * auditor needs (revision, content hash, when it was accepted, where from),
 * refcounted like a snapshot. A request refs the state it was decided on,
 * so a swap mid-request never shows it half of two bundles.
 */
#include "px.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>

#include "certs.h"
#include "policy.h"
#include "snapshot.h"

static atomic_uint_fast64_t policy_gen = 1; /* 0 is for static rule names */

struct px_policy_state *px_policy_state_ref(struct px_policy_state *p)
{
    if (p != NULL)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void px_policy_state_unref(struct px_policy_state *p)
{
    if (p == NULL || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    policy_engine_free(p->engine);
    free(p);
}

int px_policy_state_from_json(struct px_policy_state **out, const char *json, size_t len,
                              const char *source, char *err, size_t errlen)
{
    struct policy_bundle *b = NULL;
    struct px_policy_state *p = NULL;
    char e2[512];

    if (policy_bundle_parse(&b, json, len, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "%s", e2);
        return -1;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        policy_bundle_free(b);
        return -1;
    }
    atomic_init(&p->refs, 1);
    p->gen = atomic_fetch_add(&policy_gen, 1);
    if (policy_engine_new(&p->engine, b, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "%s", e2);
        policy_bundle_free(b);
        free(p);
        return -1;
    }
    p->revision = policy_bundle_revision(b);
    if (EVP_Digest(json, len, p->sha, NULL, EVP_sha256(), NULL) != 1) {
        snprintf(err, errlen, "SHA-256 failed");
        policy_engine_free(p->engine);
        policy_bundle_free(b);
        free(p);
        return -1;
    }
    p->expires_at_s = policy_bundle_expires_at(b);
    p->audit_mode = policy_bundle_mode(b) == POLICY_MODE_AUDIT;
    p->loaded_at_ms = px_now_ms();
    p->nrules = policy_bundle_rule_count(b);
    snprintf(p->source, sizeof(p->source), "%s", source);
    policy_bundle_free(b);
    *out = p;
    return 0;
}

int px_policy_state_load_file(struct px_policy_state **out, const char *path, char *err,
                              size_t errlen)
{
    char *data = NULL, e2[512], src[300];
    size_t len = 0;
    int rc;
    if (certs_read_file(path, POLICY_BUNDLE_MAX_BYTES, &data, &len, e2, sizeof(e2)) != 0) {
        snprintf(err, errlen, "%s", e2);
        return -1;
    }
    snprintf(src, sizeof(src), "file:%s", path);
    rc = px_policy_state_from_json(out, data, len, src, e2, sizeof(e2));
    if (rc != 0)
        snprintf(err, errlen, "%s:%s", path, e2);
    free(data);
    return rc;
}
