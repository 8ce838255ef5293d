/*
 * inject.h - Kubernetes sidecar injection core (DESIGN.md "Roles and modes":
 * `picket inject`). Pure functions: bytes in, bytes out, no I/O, no
 * logging. cmd_inject.c does the files, the HTTPS webhook and the logs.
 *
 * Given a Pod, a workload with a pod template (Deployment, StatefulSet,
 * DaemonSet, ReplicaSet, ReplicationController, Job; CronJob through
 * spec.jobTemplate) or a List of those, the injector produces an RFC 6902
 * JSON Patch that adds what deploy/kubernetes/sidecar.yaml adds by hand:
 * the picket container, its two volumes (config ConfigMap, SVID Secret),
 * a terminationGracePeriodSeconds of at least drain + 10 s, and the pod
 * annotation picket.dev/injected: "true".
 *
 * Per-workload knobs, on the pod template's (or the object's) metadata:
 *   annotation picket.dev/inject: "false"   opt out
 *   label      picket.dev/inject: disabled  opt out (also "false")
 *   annotation picket.dev/config-map: NAME  overrides --config-map
 *   annotation picket.dev/svid-secret: NAME overrides --svid-secret
 * A workload's own annotation wins over the injector's flags: the flags are
 * cluster-wide defaults, the annotation is the one place that knows this
 * workload.
 */
#ifndef PX_INJECT_H
#define PX_INJECT_H

#include <stddef.h>

/* Input documents larger than this are refused before parsing (the API
 * server itself caps request bodies at 3 MiB). */
#define PX_INJECT_MAX_BYTES (4u * 1024 * 1024)
/* jsmn token budget for one input document (~20 bytes per token). A List
 * of a few hundred Deployments fits; a 4 MiB document of bare numbers does
 * not and is refused with "document too large". */
#define PX_INJECT_MAX_TOKENS 262144

/* Return codes (proxy/inject range -600..-699). */
#define PX_INJECT_EINPUT (-600)  /* not JSON / not the expected shape; err has line:col */
#define PX_INJECT_EREFUSE (-601) /* well-formed, but cannot be injected safely */
#define PX_INJECT_ENOMEM (-602)

#define PX_INJECT_MAX_EXCLUDED_NS 16

struct px_inject_opts {
    const char *image;       /* borrowed; default "picket:0.1" */
    const char *config_map;  /* borrowed; NULL = "<app>-picket" */
    const char *svid_secret; /* borrowed; NULL = "<app>-svid" */
    int inbound_port;        /* 15443 */
    int admin_port;          /* 15000 */
    int drain_timeout_s;     /* 20: grace period is raised to at least this + 10 */
    /* Namespaces never injected (the webhook sees the request namespace;
     * the CLI sees metadata.namespace). Borrowed strings. Defaults:
     * kube-system, kube-public. */
    const char *exclude_ns[PX_INJECT_MAX_EXCLUDED_NS];
    size_t nexclude_ns;
};

/* Fills the defaults above. */
void px_inject_opts_init(struct px_inject_opts *o);

/* Checks the option values (image printable and short, names DNS-1123,
 * ports 1..65535 and different, drain 0..3600). 0, or -1 with a message. */
int px_inject_opts_check(const struct px_inject_opts *o, char *err, size_t errlen);

/* Why an object was or was not injected. Stable names (logs, tests);
 * append new values at the end. */
enum px_inject_reason {
    PX_INJECT_INJECTED,      /* "injected" */
    PX_INJECT_ALREADY,       /* "already_injected": a container named picket exists */
    PX_INJECT_OPT_OUT,       /* "opted_out": picket.dev/inject annotation/label */
    PX_INJECT_NS_EXCLUDED,   /* "namespace_excluded" */
    PX_INJECT_NOT_WORKLOAD,  /* "not_a_workload": a Service, ConfigMap, ... (passed through) */
    PX_INJECT_NOT_CREATE,    /* "not_create": webhook operation other than CREATE */
    PX_INJECT_REFUSED,       /* "refused": could not be injected (review denied) */
};
const char *px_inject_reason_name(enum px_inject_reason r);

struct px_inject_result {
    char *patch; /* owned: the JSON Patch, compact; "[]" when nothing to do */
    size_t patch_len;
    /* For a List: INJECTED if any item was, else the first item's reason. */
    enum px_inject_reason reason;
    unsigned injected, skipped; /* objects (List items count one each) */
    /* From the top-level object, for logs; "" when absent. For a Pod
     * without a name, the generateName. */
    char kind[64], name[254], ns[64];
};

/* Frees the patch; safe on a zeroed struct. */
void px_inject_result_clear(struct px_inject_result *r);

/* Computes the patch for the object in js[0..len). On success (0) fills
 * *res (release with px_inject_result_clear). Errors: PX_INJECT_EINPUT
 * (bad JSON, not an object, no kind), PX_INJECT_EREFUSE (e.g. no
 * containers, a volume name or port already taken, no app name to derive
 * the ConfigMap name from), PX_INJECT_ENOMEM; err is "line:col: message"
 * where a place in the document is to blame. `js` is borrowed. Any thread. */
int px_inject_patch(const char *js, size_t len, const struct px_inject_opts *o,
                    struct px_inject_result *res, char *err, size_t errlen);

/* The CLI filter: the object with the patch applied. *out (malloc'ed,
 * caller frees, NUL-terminated, ends with "\n") is 2-space indented when
 * `pretty`, compact otherwise; formatting of the input is not kept. An
 * object that needs nothing comes back re-formatted but otherwise equal, so
 * injecting twice gives the same bytes as injecting once. Same errors as
 * px_inject_patch. */
int px_inject_object(const char *js, size_t len, const struct px_inject_opts *o, int pretty,
                     char **out, size_t *outlen, struct px_inject_result *res, char *err,
                     size_t errlen);

/* Applies an RFC 6902 patch to doc. Supported: "add" (object member, new
 * or existing; array append with "-") and "replace". Every path is resolved
 * against the original document, so an op may not point into a value an
 * earlier op added (px_inject_patch never emits such patches); array
 * inserts by index are refused for the same reason. The result is checked
 * with the strict parser before it is returned. Output as for
 * px_inject_object. 0, PX_INJECT_EINPUT (with a message) or ENOMEM. */
int px_json_patch_apply(const char *doc, size_t len, const char *patch, size_t plen, int pretty,
                        char **out, size_t *outlen, char *err, size_t errlen);

/* Re-formats valid JSON (the caller has validated it): indent 2 when
 * `pretty`, else compact; trailing "\n". 0 or PX_INJECT_ENOMEM. */
int px_json_format(const char *js, size_t len, int pretty, char **out, size_t *outlen);

/* The admission webhook: body is an AdmissionReview v1 request. On 0,
 * *resp (malloc'ed, caller frees) is the AdmissionReview response to send
 * with 200: allowed with a base64 JSONPatch, allowed without a patch when
 * skipped, or allowed:false with a status message when the pod asked for
 * injection but cannot get it (it must not run unprotected). *res is filled
 * for the log line (release with px_inject_result_clear) and uid (at most
 * uidlen - 1 bytes, "" if unknown) holds request.uid. PX_INJECT_EINPUT:
 * not a v1 AdmissionReview (answer 400 with err); ENOMEM. */
int px_inject_review(const char *body, size_t len, const struct px_inject_opts *o, char **resp,
                     size_t *resp_len, struct px_inject_result *res, char *uid, size_t uidlen,
                     char *err, size_t errlen);

#endif
