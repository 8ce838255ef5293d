/*
 * fetcher.h - policy bundles from a control plane (policy.url). Control
 * thread only.
 */
#ifndef PX_FETCHER_H
#define PX_FETCHER_H

#include "px.h"

struct px_fetcher;

/* A new bundle was accepted (state handed over, refs 1). */
typedef void (*px_fetcher_publish_fn)(void *arg, struct px_policy_state *p);
/* The control plane confirmed the bundle in force (200 or 304) at now_ms. */
typedef void (*px_fetcher_contact_fn)(void *arg, int64_t now_ms);

/* Loads the keyring, uses a verified envelope from cache_dir if present
 * (publish is called before this returns), and starts polling on ctl's
 * event base. Returns 0 or -1 with err. */
struct px_floor;
/* floor (borrowed for the call; may be NULL): the revision floor an
 * earlier run persisted (floor.h); bundles below it, the cached one too,
 * are refused. */
int px_fetcher_new(struct px_fetcher **out, struct px_worker *ctl, const struct px_config *cfg,
                   const struct px_floor *floor, px_fetcher_publish_fn publish,
                   px_fetcher_contact_fn contact, void *arg, char *err, size_t errlen);
void px_fetcher_free(struct px_fetcher *fe); /* NULL is a no-op */

/* policy_fetch_is_stale() of the machine (no bundle, too old, expired). */
int px_fetcher_is_stale(const struct px_fetcher *fe, int64_t now_ms, int64_t max_staleness_ms,
                        int64_t expires_at_s);

/* Appends "fetch":{...} (url, last_result, last_error, failures,
 * staleness_ms) to a JSON object being written. */
void px_fetcher_status(const struct px_fetcher *fe, struct evbuffer *out);

#endif
