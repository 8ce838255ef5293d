/*
 * enforce.h - the per-request decision: policy evaluation (local), and the
 * audit record that says who decided, on which bundle revision, how old.
 */
#ifndef PX_ENFORCE_H
#define PX_ENFORCE_H

struct px_stream;

/* Decides st. Returns 0 when the request may go upstream, 1 when it was
 * answered locally (403 deny, 503 stale or no policy yet, ...). */
int px_enforce_request(struct px_stream *st);

/* Writes the audit record for st (once, when it ends). */
void px_enforce_audit(struct px_stream *st);

struct px_policy_state;

/* Parses, validates and compiles a bundle into a policy state (refs 1).
 * `source` is recorded for /policy and logs. Returns 0 or -1 with err. */
int px_policy_state_from_json(struct px_policy_state **out, const char *json, size_t len,
                              const char *source, char *err, size_t errlen);
int px_policy_state_load_file(struct px_policy_state **out, const char *path, char *err,
                              size_t errlen);

#endif
