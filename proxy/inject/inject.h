/*
 * inject.h - Kubernetes sidecar injection core (DESIGN.md "Roles and modes":
 * `picket inject`). Pure functions: bytes in, bytes out, no I/O, no
 * logging. cmd_inject.c does the files, the HTTPS webhook and the logs.
 *
 * Given a Pod, a workload with a pod template (Deployment, StatefulSet,
 * DaemonSet, ReplicaSet, ReplicationController, Job; CronJob through
 * spec.jobTemplate) or a List of those, the injector produces an RFC 6902
 * JSON Patch that adds:
 *   - picket as a native sidecar (Kubernetes 1.29+): the first of
 *     spec.initContainers (after the config writer below), with
 *     restartPolicy: Always, so it starts (its startup probe on the
 *     loopback /readyz passes) before the app's init containers, which can
 *     then use the mesh, and the app containers, and stops after them; args
 *     run -c /etc/picket/picket.json --node-id $(PICKET_NODE_ID)
 *     --probes-bind 0.0.0.0:15021 --metrics-bind 0.0.0.0:15090, the node
 *     id being "<namespace>/<pod name>" from the downward API; non-root,
 *     read-only root filesystem, no privilege escalation, all capabilities
 *     dropped; image and resources from the injector config;
 *   - the app containers' livenessProbe, readinessProbe and startupProbe
 *     of kind httpGet, tcpSocket or grpc rewritten to an httpGet on the
 *     probes port at /app-health/<container>/<livez|readyz|startupz>,
 *     timings and thresholds kept, the original targets in the sidecar's
 *     PICKET_APP_PROBES (inject_probes.c); exec probes are left alone;
 *   - the pod annotations prometheus.io/scrape "true", prometheus.io/port
 *     "15090" and prometheus.io/path "/metrics", unless the pod has one of
 *     them already (the app's own metrics keep theirs);
 *   - volume picket-config, mounted read-only at /etc/picket: the ConfigMap
 *     "<app>-picket" (config_map template), or, when the injector config
 *     has a proxy_config, an emptyDir that an init container
 *     (picket-config, running `picket inject write-config`) fills with it
 *     before the sidecar starts;
 *   - volume picket-svid, mounted read-only at /var/run/secrets/svid: the
 *     injector config's svid_volume (default: cert-manager csi-driver-spiffe),
 *     or a Secret when --svid-secret or the annotation says so;
 *   - terminationGracePeriodSeconds of at least drain + 10 s;
 *   - the pod annotation picket.dev/injected: "true".
 * The app containers and their ports are not touched, their probes aside.
 *
 * Per-workload knobs, on the pod template's (or the object's) metadata:
 *   annotation or label picket.dev/inject: disabled (or "false")  opt out
 *   annotation picket.dev/config-map: NAME   mount this ConfigMap
 *   annotation picket.dev/svid-secret: NAME  mount this Secret as the SVID
 *   annotation picket.dev/rewrite-probes: "false"  leave the app's probes
 *                                            alone (no PICKET_APP_PROBES)
 *   annotation picket.dev/identity: workload-api  the SPIFFE Workload API:
 *     volume picket-svid is the SPIFFE CSI driver (csi.spiffe.io), which
 *     mounts the Workload API socket, at /spiffe-workload-api, and the
 *     sidecar gets SPIFFE_ENDPOINT_SOCKET pointing at it (the config then
 *     says identity.source: workload_api); no svid-secret with it
 * A workload's own annotation wins over the injector's flags and config:
 * those are cluster-wide defaults, the annotation is the one place that
 * knows this workload.
 *
 * Already injected (passed unchanged): a container or init container named
 * picket, or the annotation picket.dev/injected: "true".
 *
 * Never injected: pods with hostNetwork: true (picket's listeners would
 * take the node's ports and face the node's network); the webhook allows
 * them unchanged with a warning, the CLI says why on stderr.
 */
#ifndef PX_INJECT_H
#define PX_INJECT_H

#include <stddef.h>

#include "certs_json.h"

/* Input documents larger than this are refused before parsing (the API
 * server itself caps request bodies at 3 MiB). */
#define PX_INJECT_MAX_BYTES (4u * 1024 * 1024)
/* jsmn token budget for one input document (~20 bytes per token). A List
 * of a few hundred Deployments fits; a 4 MiB document of bare numbers does
 * not and is refused with "document too large". */
#define PX_INJECT_MAX_TOKENS 262144
/* The injector config (and each verbatim JSON value in it) is small. */
#define PX_INJECT_CONFIG_MAX_BYTES (256u * 1024)

/* Return codes (proxy/inject range -600..-699). */
#define PX_INJECT_EINPUT (-600)  /* not JSON / not the expected shape; err has line:col */
#define PX_INJECT_EREFUSE (-601) /* well-formed, but cannot be injected safely */
#define PX_INJECT_ENOMEM (-602)

#define PX_INJECT_MAX_EXCLUDED_NS 16
#define PX_INJECT_MAX_OWNED 32

/* Fixed places inside the pod. */
#define PX_INJECT_CONFIG_DIR "/etc/picket"
#define PX_INJECT_CONFIG_FILE "/etc/picket/picket.json"
#define PX_INJECT_SVID_DIR "/var/run/secrets/svid"
/* picket.dev/identity: workload-api: the SPIFFE CSI driver's volume, where
 * it is mounted, and the socket SPIRE's agent serves in it. */
#define PX_INJECT_WLAPI_VOLUME "\"csi\":{\"driver\":\"csi.spiffe.io\",\"readOnly\":true}"
#define PX_INJECT_WLAPI_DIR "/spiffe-workload-api"
#define PX_INJECT_WLAPI_SOCKET "unix:///spiffe-workload-api/spire-agent.sock"
/* The default svid_volume: cert-manager's csi-driver-spiffe. */
#define PX_INJECT_DEFAULT_SVID_VOLUME                                                              \
    "{\"csi\":{\"driver\":\"spiffe.csi.cert-manager.io\",\"readOnly\":true}}"

struct px_inject_opts {
    const char *image;        /* default "picket:0.1" */
    const char *resources;    /* compact JSON object, copied verbatim; NULL: none */
    const char *config_map;   /* template, "<app>" is replaced; default "<app>-picket" */
    const char *proxy_config; /* compact JSON object: generated into an emptyDir instead of
                               * mounting the ConfigMap; NULL: ConfigMap */
    const char *svid_volume;  /* compact JSON volume source, verbatim; default above */
    const char *svid_secret;  /* template; when set, the SVID volume is this Secret */
    int inbound_port;         /* 15443 */
    int admin_port;           /* 15000 */
    int probes_port;          /* 15021: probes.bind 0.0.0.0:N, the rewritten probes' port */
    int metrics_port;         /* 15090: metrics.bind 0.0.0.0:N, prometheus.io/port */
    int drain_timeout_s;      /* 20: grace period is raised to at least this + 10 */
    long long run_as_user;    /* 65532; never 0 */
    int malformed_allow;      /* malformed_review: 1 "allow", 0 "error" (default) */
    /* Namespaces never injected (the webhook sees the request namespace;
     * the CLI sees metadata.namespace). Defaults: kube-system, kube-public. */
    const char *exclude_ns[PX_INJECT_MAX_EXCLUDED_NS];
    size_t nexclude_ns;
    /* Strings px_inject_config_load allocated; freed by px_inject_opts_free. */
    char *owned[PX_INJECT_MAX_OWNED];
    size_t nowned;
};

/* Fills the defaults above (all strings static). */
void px_inject_opts_init(struct px_inject_opts *o);

/* Frees what px_inject_config_load allocated; the struct is then re-inited. */
void px_inject_opts_free(struct px_inject_opts *o);

/* Loads the injector config (a JSON object, read strictly: unknown keys and
 * duplicate keys are errors) over *o:
 *   {"image": "picket:0.1", "resources": {...}, "config_map": "<app>-picket",
 *    "proxy_config": {...}, "svid_volume": {...}, "svid_secret": "NAME",
 *    "inbound_port": 15443, "admin_port": 15000, "drain_timeout": "20s",
 *    "run_as_user": 65532, "malformed_review": "allow" | "error",
 *    "exclude_namespaces": ["kube-system", ...]}
 * All keys are optional; config_map and proxy_config are mutually exclusive,
 * as are svid_volume and svid_secret. Values are copied (owned by *o). 0, or
 * PX_INJECT_EINPUT / ENOMEM with "line:col: message" in err. */
int px_inject_config_load(struct px_inject_opts *o, const char *js, size_t len, char *err,
                          size_t errlen);

/* Checks the option values (image printable and short, name templates
 * DNS-1123 once "<app>" is replaced, JSON values objects, ports 1..65535
 * and different, drain 0..3600, run_as_user 1..2^31-1). 0, or -1 with a
 * message. */
int px_inject_opts_check(const struct px_inject_opts *o, char *err, size_t errlen);

/* Why an object was or was not injected. Stable names (logs, tests);
 * append new values at the end. */
enum px_inject_reason {
    PX_INJECT_INJECTED,     /* "injected" */
    PX_INJECT_ALREADY,      /* "already_injected": picket container or injected annotation */
    PX_INJECT_OPT_OUT,      /* "opted_out": picket.dev/inject annotation/label */
    PX_INJECT_NS_EXCLUDED,  /* "namespace_excluded" */
    PX_INJECT_NOT_WORKLOAD, /* "not_a_workload": a Service, ConfigMap, ... (passed through) */
    PX_INJECT_NOT_CREATE,   /* "not_create": webhook operation other than CREATE */
    PX_INJECT_REFUSED,      /* "refused": could not be injected (review denied or allowed
                             * unchanged, per malformed_review) */
    PX_INJECT_MALFORMED,    /* "malformed": the review or its object is malformed */
    PX_INJECT_HOST_NETWORK, /* "host_network": hostNetwork: true (allowed unchanged, with
                             * a warning) */
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
    /* Why an object was left alone when its owner should know (the first
     * hostNetwork pod: "Pod web: hostNetwork: true ..."); "" when none. The
     * webhook puts it in response.warnings, the CLI on stderr. */
    char note[384];
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
 * *resp (malloc'ed, caller frees) is the AdmissionReview to send with 200,
 * its response.uid copied from request.uid:
 *   - allowed: true with a base64 JSONPatch (patchType JSONPatch);
 *   - allowed: true without a patch when skipped (already injected, opted
 *     out, excluded namespace, not CREATE); for a hostNetwork pod with
 *     res->note in response.warnings;
 *   - for a malformed review or an object that cannot be injected, as
 *     o->malformed_allow says: allowed: true unchanged with the reason in
 *     response.warnings ("allow"), or allowed: false with status code 400
 *     (malformed) or 403 (cannot be injected) and the reason ("error").
 * res->reason is MALFORMED or REFUSED in the last case. *res is filled for
 * the log line (release with px_inject_result_clear); uid (at most
 * uidlen - 1 bytes) holds request.uid, "" if unreadable. The one error,
 * PX_INJECT_EINPUT, is for "error" mode when not even request.uid can be
 * read, so no AdmissionReview can answer it: send 400 with err. Also
 * ENOMEM. Hostile input costs at most PX_INJECT_MAX_BYTES plus a fixed
 * token budget. */
int px_inject_review(const char *body, size_t len, const struct px_inject_opts *o, char **resp,
                     size_t *resp_len, struct px_inject_result *res, char *uid, size_t uidlen,
                     char *err, size_t errlen);

/* ---- shared by inject.c, inject_plan.c and inject_patch.c only -------- */

/* Growable output buffer; oom is sticky, capped at 64 MiB. */
struct px_sbuf {
    char *p;
    size_t len, cap;
    int oom;
};
void px_sb_add(struct px_sbuf *b, const char *s, size_t n);
void px_sb_puts(struct px_sbuf *b, const char *s);
void px_sb_printf(struct px_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_sb_json_str(struct px_sbuf *b, const char *s, size_t n); /* quoted, escaped */
void px_sb_free(struct px_sbuf *b);

/* Offset of the first byte that is not well-formed UTF-8, or len. */
size_t px_utf8_bad_offset(const unsigned char *s, size_t len);

/* Size cap, UTF-8 check, strict parse, top level must be an object. 0 or
 * PX_INJECT_EINPUT with "line:col: message". Release j with
 * certs_json_clear. */
int px_inject_parse_doc(struct certs_json *j, const char *js, size_t len, int max_tokens,
                        char *err, size_t errlen);

#endif
