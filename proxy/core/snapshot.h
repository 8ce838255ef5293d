/*
 * snapshot.h - building snapshots (see px.h for the type).
 */
#ifndef PX_SNAPSHOT_H
#define PX_SNAPSHOT_H

#include "px.h"

/* Builds a snapshot from cfg (taken over: freed on failure too): loads
 * trust bundles and own SVID, builds TLS contexts. Returns 0 or -1 with a
 * one-line message in err. Control thread only. */
int px_snapshot_build(struct px_snapshot **out, struct px_config *cfg, char *err, size_t errlen);

/* The same, where cfg->identity.source is workload_api: the SVID and the
 * trust bundles are kp and trust (references taken; both already checked
 * by the caller) instead of files. With either NULL (no SVID from the
 * Workload API yet) the snapshot has no identity, no TLS contexts and
 * identity_pending set: listeners do not accept on it. For source files, kp
 * and trust are ignored and this is px_snapshot_build(). */
int px_snapshot_build_with(struct px_snapshot **out, struct px_config *cfg,
                           struct certs_keypair *kp, struct certs_trust *trust, char *err,
                           size_t errlen);

/* Parses, validates and compiles a bundle into a policy state (refs 1).
 * `source` is recorded for /policy and logs. Returns 0 or -1 with err. */
int px_policy_state_from_json(struct px_policy_state **out, const char *json, size_t len,
                              const char *source, char *err, size_t errlen);
int px_policy_state_load_file(struct px_policy_state **out, const char *path, char *err,
                              size_t errlen);

#endif
