/*
 * inject.c - sidecar injection core: the JSON Patch that turns a pod (or a
 * workload's pod template) into what deploy/kubernetes/sidecar.yaml
 * writes by hand, a small RFC 6902 applier for the CLI filter, a JSON
 * re-formatter and the AdmissionReview request/response mapping.
 *
 * Everything here is pure (see inject.h). Documents are read through
 * certs_json (strict RFC 8259, duplicate keys refused, nesting capped at
 * 64) after a size check, so a hostile review costs at most
 * PX_INJECT_MAX_BYTES plus a fixed token budget.
 *
 * The applier splices text into the original document instead of building
 * a DOM: each op resolves its path on the original token tree and becomes
 * "insert these bytes here" or "replace this value"; the result is then
 * re-formatted and re-parsed with the strict parser, so a patch that would
 * produce a duplicate key or broken JSON is an error, never output. The
 * cost of this design is that an op cannot target what an earlier op in
 * the same patch added; the patches built here never do (a missing
 * annotations object is added whole, with its member inside).
 */
#include "inject.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "certs_json.h"

#define OUT_MAX (64u * 1024 * 1024) /* any output buffer; far above 4 MiB in + ops */
#define SEG_MAX 1024                /* one JSON Pointer segment, decoded */
#define NAME_MAX_LEN 253            /* DNS-1123 subdomain */

/* ---- growable output buffer ------------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > OUT_MAX) {
            b->oom = 1;
            return;
        }
        np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->oom = 1; /* only used for short fixed texts; a cut one is a bug */
        return;
    }
    sb_add(b, tmp, (size_t)n);
}

/* A JSON string literal, quotes included. */
static void sb_json_str(struct sbuf *b, const char *s, size_t n)
{
    sb_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_add(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_add(b, s + i, 1);
        }
    }
    sb_add(b, "\"", 1);
}

static void sb_free(struct sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- small token helpers ---------------------------------------------- */

/* The bytes of value token i in the document, quotes included for strings. */
static void tok_range(const struct certs_json *j, int i, size_t *s, size_t *e)
{
    *s = (size_t)j->tok[i].start;
    *e = (size_t)j->tok[i].end;
    if (j->tok[i].type == JSMN_STRING) {
        (*s)--;
        (*e)++;
    }
}

static int is_null(const struct certs_json *j, int i)
{
    return i >= 0 && j->tok[i].type == JSMN_PRIMITIVE && j->tok[i].end - j->tok[i].start == 4 &&
           memcmp(j->js + j->tok[i].start, "null", 4) == 0;
}

/* String member `key` of object obj, unescaped into buf; -1 if absent,
 * not a string or too long. */
static int get_str(const struct certs_json *j, int obj, const char *key, char *buf, size_t n)
{
    int v = certs_json_get(j, obj, key);
    buf[0] = '\0';
    if (!certs_json_is_str(j, v))
        return -1;
    if (certs_json_str(j, v, buf, n) < 0) {
        buf[0] = '\0';
        return -1;
    }
    return 0;
}

/* metadata[section][key] as a string, or -1. */
static int meta_str(const struct certs_json *j, int meta, const char *section, const char *key,
                    char *buf, size_t n)
{
    buf[0] = '\0';
    if (!certs_json_is_obj(j, meta))
        return -1;
    return get_str(j, certs_json_get(j, meta, section), key, buf, n);
}

/* Member of obj whose unescaped key equals key[0..klen), or -1. Keys are
 * compared unescaped because "a\/b" and "a/b" are the same key. */
static int find_member(const struct certs_json *j, int obj, const char *key, size_t klen)
{
    char tmp[SEG_MAX + 1];
    for (int k = certs_json_first(j, obj); k > 0; k = certs_json_next_key(j, k)) {
        int n = certs_json_str(j, k, tmp, sizeof(tmp));
        if (n >= 0 && (size_t)n == klen && memcmp(tmp, key, klen) == 0)
            return k + 1;
    }
    return -1;
}

/* Lowercase RFC 1123 subdomain: what ConfigMap and Secret names must be. */
static int dns1123_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '-' && c != '.')
            return 0;
        if ((i == 0 || i == n - 1) && !alnum)
            return 0;
    }
    return 1;
}

/* ---- options ------------------------------------------------------------ */

void px_inject_opts_init(struct px_inject_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->image = "picket:0.1";
    o->inbound_port = 15443;
    o->admin_port = 15000;
    o->drain_timeout_s = 20;
    o->exclude_ns[0] = "kube-system";
    o->exclude_ns[1] = "kube-public";
    o->nexclude_ns = 2;
}

int px_inject_opts_check(const struct px_inject_opts *o, char *err, size_t errlen)
{
    size_t n = o->image ? strlen(o->image) : 0;
    if (n == 0 || n > 512) {
        snprintf(err, errlen, "--image: expected 1 to 512 characters");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)o->image[i] <= 0x20 || (unsigned char)o->image[i] >= 0x7f) {
            snprintf(err, errlen, "--image: no spaces or control characters allowed");
            return -1;
        }
    if (o->config_map != NULL && !dns1123_ok(o->config_map)) {
        snprintf(err, errlen, "--config-map: \"%s\" is not a valid name (lowercase DNS-1123)",
                 o->config_map);
        return -1;
    }
    if (o->svid_secret != NULL && !dns1123_ok(o->svid_secret)) {
        snprintf(err, errlen, "--svid-secret: \"%s\" is not a valid name (lowercase DNS-1123)",
                 o->svid_secret);
        return -1;
    }
    if (o->inbound_port < 1 || o->inbound_port > 65535 || o->admin_port < 1 ||
        o->admin_port > 65535 || o->inbound_port == o->admin_port) {
        snprintf(err, errlen, "ports: expected two different ports in 1..65535");
        return -1;
    }
    if (o->drain_timeout_s < 0 || o->drain_timeout_s > 3600) {
        snprintf(err, errlen, "--drain-timeout: expected 0s..1h");
        return -1;
    }
    return 0;
}

const char *px_inject_reason_name(enum px_inject_reason r)
{
    switch (r) {
    case PX_INJECT_INJECTED:
        return "injected";
    case PX_INJECT_ALREADY:
        return "already_injected";
    case PX_INJECT_OPT_OUT:
        return "opted_out";
    case PX_INJECT_NS_EXCLUDED:
        return "namespace_excluded";
    case PX_INJECT_NOT_WORKLOAD:
        return "not_a_workload";
    case PX_INJECT_NOT_CREATE:
        return "not_create";
    case PX_INJECT_REFUSED:
        return "refused";
    }
    return "unknown";
}

void px_inject_result_clear(struct px_inject_result *r)
{
    free(r->patch);
    memset(r, 0, sizeof(*r));
}

/* ---- planning: which ops one object needs ----------------------------- */

struct plan {
    const struct certs_json *j;
    const struct px_inject_opts *o;
    struct sbuf ops; /* "op,op,..." without the brackets */
    int nops;
    unsigned injected, skipped;
    enum px_inject_reason first; /* first object's reason */
    int nobj;
    char *err;
    size_t errlen;
};

/* Starts {"op":op,"path":prefix+suffix,"value": ; the caller writes the
 * value and the closing brace. Pointers are built from fixed segments and
 * ptr_escape()d keys, so they need no JSON escaping. */
static void op_begin(struct plan *p, const char *op, const char *prefix, const char *suffix)
{
    sb_puts(&p->ops, p->nops++ ? "," : "");
    sb_printf(&p->ops, "{\"op\":\"%s\",\"path\":\"", op);
    sb_puts(&p->ops, prefix);
    sb_puts(&p->ops, suffix);
    sb_puts(&p->ops, "\",\"value\":");
}

/* Escapes one JSON Pointer segment (RFC 6901 section 3: '~' -> "~0", '/' -> "~1"). */
static void ptr_escape(char *out, size_t outlen, const char *seg)
{
    size_t o = 0;
    for (; *seg != '\0' && o + 3 < outlen; seg++) {
        if (*seg == '~' || *seg == '/') {
            out[o++] = '~';
            out[o++] = *seg == '~' ? '0' : '1';
        } else {
            out[o++] = *seg;
        }
    }
    out[o] = '\0';
}

static int opted_out(const struct certs_json *j, int meta)
{
    char v[64];
    if (meta_str(j, meta, "annotations", "picket.dev/inject", v, sizeof(v)) == 0 &&
        strcasecmp(v, "false") == 0)
        return 1;
    if (meta_str(j, meta, "labels", "picket.dev/inject", v, sizeof(v)) == 0 &&
        (strcasecmp(v, "disabled") == 0 || strcasecmp(v, "false") == 0))
        return 1;
    return 0;
}

/* Scans containers and initContainers: 1 if one is named picket; -1 (err
 * set) if one already uses one of picket's ports, which share the pod's
 * network namespace. */
static int scan_containers(struct plan *p, int pspec)
{
    static const char *const lists[] = {"containers", "initContainers"};
    const struct certs_json *j = p->j;
    for (size_t l = 0; l < 2; l++) {
        int arr = certs_json_get(j, pspec, lists[l]), c;
        if (!certs_json_is_arr(j, arr))
            continue;
        for (c = certs_json_first(j, arr); c > 0; c = certs_json_next_elem(j, c)) {
            int ports = certs_json_get(j, c, "ports");
            if (certs_json_eq(j, certs_json_get(j, c, "name"), "picket"))
                return 1;
            if (!certs_json_is_arr(j, ports))
                continue;
            for (int q = certs_json_first(j, ports); q > 0; q = certs_json_next_elem(j, q)) {
                int pt = certs_json_get(j, q, "containerPort");
                int64_t v;
                if (certs_json_int(j, pt, &v) == 0 &&
                    (v == p->o->inbound_port || v == p->o->admin_port))
                    return certs_json_errf(j, pt, p->err, p->errlen,
                                           "containerPort %lld is picket's; change the app's "
                                           "port or picket's --inbound-port/--admin-port",
                                           (long long)v);
            }
        }
    }
    return 0;
}

/* The app name that ConfigMap and Secret names are derived from. */
static int app_name(struct plan *p, int root, int ometa, int tmeta, int is_pod, char *buf,
                    size_t n)
{
    const struct certs_json *j = p->j;
    int metas[2] = {tmeta, ometa};
    for (int m = 0; m < 2; m++)
        if (meta_str(j, metas[m], "labels", "app.kubernetes.io/name", buf, n) == 0 ||
            meta_str(j, metas[m], "labels", "app", buf, n) == 0)
            return 0;
    /* A pod made by a controller has only a generateName with a hash in
     * it; guessing "orders-7d9f8c-picket" would mount a ConfigMap nobody
     * made, so pods need a label or an explicit name. */
    if (certs_json_is_obj(j, ometa) && get_str(j, ometa, "name", buf, n) == 0 && buf[0] != '\0')
        return 0;
    (void)is_pod;
    return certs_json_errf(j, root, p->err, p->errlen,
                           "cannot tell the app's name: add the label app.kubernetes.io/name "
                           "or app, or set --config-map and --svid-secret");
}

/* Resolves the ConfigMap (which=0) or Secret (1) name into buf. */
static int volume_name(struct plan *p, int root, int ometa, int tmeta, int is_pod, int which,
                       char *buf, size_t n)
{
    const char *ann = which ? "picket.dev/svid-secret" : "picket.dev/config-map";
    const char *flag = which ? p->o->svid_secret : p->o->config_map;
    char app[NAME_MAX_LEN + 1];
    if (meta_str(p->j, tmeta, "annotations", ann, buf, n) != 0 &&
        meta_str(p->j, ometa, "annotations", ann, buf, n) != 0) {
        if (flag != NULL) {
            snprintf(buf, n, "%s", flag);
        } else {
            if (app_name(p, root, ometa, tmeta, is_pod, app, sizeof(app)) != 0)
                return -1;
            snprintf(buf, n, "%s%s", app, which ? "-svid" : "-picket");
        }
    }
    if (!dns1123_ok(buf))
        return certs_json_errf(p->j, root, p->err, p->errlen,
                               "%s name \"%.80s\" is not a valid lowercase DNS-1123 name",
                               which ? "svid secret" : "config map", buf);
    return 0;
}

static void emit_container(struct plan *p, const char *spec)
{
    const struct px_inject_opts *o = p->o;
    op_begin(p, "add", spec, "/containers/-");
    sb_puts(&p->ops, "{\"name\":\"picket\",\"image\":");
    sb_json_str(&p->ops, o->image, strlen(o->image));
    sb_puts(&p->ops, ",\"args\":[\"run\",\"-c\",\"/etc/picket/picket.json\"]");
    sb_printf(&p->ops, ",\"ports\":[{\"containerPort\":%d,\"name\":\"picket-mtls\","
                       "\"protocol\":\"TCP\"}]",
              o->inbound_port);
    /* The admin listener is loopback-only by design, so probes are exec
     * probes run inside the pod (README "As a Kubernetes sidecar"). */
    sb_printf(&p->ops, ",\"readinessProbe\":{\"exec\":{\"command\":[\"curl\",\"-fsS\","
                       "\"http://127.0.0.1:%d/readyz\"]}}",
              o->admin_port);
    sb_printf(&p->ops, ",\"livenessProbe\":{\"exec\":{\"command\":[\"curl\",\"-fsS\","
                       "\"http://127.0.0.1:%d/healthz\"]}}",
              o->admin_port);
    sb_puts(&p->ops, ",\"lifecycle\":{\"preStop\":{\"exec\":{\"command\":[\"sleep\",\"2\"]}}}");
    sb_puts(&p->ops, ",\"volumeMounts\":[{\"name\":\"picket-config\",\"mountPath\":"
                     "\"/etc/picket\",\"readOnly\":true},{\"name\":\"picket-svid\","
                     "\"mountPath\":\"/var/run/secrets/svid\",\"readOnly\":true}]");
    /* picket writes nothing to disk (logs go to stdout) and needs no
     * capability to bind 15443. runAsNonRoot is left to the image. */
    sb_puts(&p->ops, ",\"securityContext\":{\"allowPrivilegeEscalation\":false,"
                     "\"readOnlyRootFilesystem\":true,\"capabilities\":{\"drop\":[\"ALL\"]}}}}");
}

static void emit_volume(struct plan *p, int which, const char *name)
{
    if (which == 0) {
        sb_puts(&p->ops, "{\"name\":\"picket-config\",\"configMap\":{\"name\":");
        sb_json_str(&p->ops, name, strlen(name));
        sb_puts(&p->ops, "}}");
    } else {
        sb_puts(&p->ops, "{\"name\":\"picket-svid\",\"secret\":{\"secretName\":");
        sb_json_str(&p->ops, name, strlen(name));
        sb_puts(&p->ops, "}}");
    }
}

/* Volumes: added whole when absent or null, else appended; an existing
 * volume with one of our names is refused rather than shadowed. */
static int plan_volumes(struct plan *p, int pspec, const char *spec, const char *cm,
                        const char *sec)
{
    const struct certs_json *j = p->j;
    int vols = certs_json_get(j, pspec, "volumes");
    if (vols < 0 || is_null(j, vols)) {
        op_begin(p, "add", spec, "/volumes");
        sb_puts(&p->ops, "[");
        emit_volume(p, 0, cm);
        sb_puts(&p->ops, ",");
        emit_volume(p, 1, sec);
        sb_puts(&p->ops, "]}");
        return 0;
    }
    if (!certs_json_is_arr(j, vols))
        return certs_json_errf(j, vols, p->err, p->errlen, "volumes: expected an array");
    for (int v = certs_json_first(j, vols); v > 0; v = certs_json_next_elem(j, v)) {
        int nm = certs_json_get(j, v, "name");
        if (certs_json_eq(j, nm, "picket-config") || certs_json_eq(j, nm, "picket-svid"))
            return certs_json_errf(j, nm, p->err, p->errlen,
                                   "volumes: a volume named %.*s already exists",
                                   j->tok[nm].end - j->tok[nm].start + 2,
                                   j->js + j->tok[nm].start - 1);
    }
    for (int w = 0; w < 2; w++) {
        op_begin(p, "add", spec, "/volumes/-");
        emit_volume(p, w, w ? sec : cm);
        sb_puts(&p->ops, "}");
    }
    return 0;
}

static int plan_grace(struct plan *p, int pspec, const char *spec)
{
    const struct certs_json *j = p->j;
    int g = certs_json_get(j, pspec, "terminationGracePeriodSeconds");
    int64_t min = (int64_t)p->o->drain_timeout_s + 10, v;
    if (g < 0 || is_null(j, g)) {
        op_begin(p, "add", spec, "/terminationGracePeriodSeconds");
    } else if (certs_json_int(j, g, &v) != 0 || v < 0) {
        return certs_json_errf(j, g, p->err, p->errlen,
                               "terminationGracePeriodSeconds: expected a non-negative integer");
    } else if (v < min) {
        op_begin(p, "replace", spec, "/terminationGracePeriodSeconds");
    } else {
        return 0;
    }
    sb_printf(&p->ops, "%lld}", (long long)min);
    return 0;
}

/* The annotation goes on the pod (template) metadata; whatever is missing
 * on the way is added whole. */
static int plan_annotation(struct plan *p, int tmeta, const char *tprefix)
{
    const struct certs_json *j = p->j;
    char seg[64], suffix[96];
    int ann;
    if (tmeta < 0 || is_null(j, tmeta)) {
        op_begin(p, "add", tprefix, "/metadata");
        sb_puts(&p->ops, "{\"annotations\":{\"picket.dev/injected\":\"true\"}}}");
        return 0;
    }
    if (!certs_json_is_obj(j, tmeta))
        return certs_json_errf(j, tmeta, p->err, p->errlen, "metadata: expected an object");
    ann = certs_json_get(j, tmeta, "annotations");
    if (ann < 0 || is_null(j, ann)) {
        op_begin(p, "add", tprefix, "/metadata/annotations");
        sb_puts(&p->ops, "{\"picket.dev/injected\":\"true\"}}");
        return 0;
    }
    if (!certs_json_is_obj(j, ann))
        return certs_json_errf(j, ann, p->err, p->errlen, "annotations: expected an object");
    ptr_escape(seg, sizeof(seg), "picket.dev/injected");
    snprintf(suffix, sizeof(suffix), "/metadata/annotations/%s", seg);
    op_begin(p, "add", tprefix, suffix);
    sb_puts(&p->ops, "\"true\"}");
    return 0;
}

/* Where the pod template is: template object token and pointer prefix. */
static int locate_template(struct plan *p, int root, const char *kind, const char *prefix,
                           char *tprefix, size_t tlen, int *tmpl)
{
    static const char *const workloads[] = {"Deployment", "StatefulSet", "DaemonSet",
                                            "ReplicaSet", "ReplicationController", "Job"};
    const struct certs_json *j = p->j;
    int spec = certs_json_get(j, root, "spec");
    if (strcmp(kind, "Pod") == 0) {
        snprintf(tprefix, tlen, "%s", prefix);
        *tmpl = root;
        return 1;
    }
    for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
        if (strcmp(kind, workloads[i]) == 0) {
            snprintf(tprefix, tlen, "%s/spec/template", prefix);
            *tmpl = certs_json_get(j, spec, "template");
            goto found;
        }
    if (strcmp(kind, "CronJob") == 0) {
        int jt = certs_json_get(j, certs_json_get(j, spec, "jobTemplate"), "spec");
        snprintf(tprefix, tlen, "%s/spec/jobTemplate/spec/template", prefix);
        *tmpl = certs_json_get(j, jt, "template");
        goto found;
    }
    return 0;
found:
    if (!certs_json_is_obj(j, *tmpl))
        return certs_json_errf(j, certs_json_is_obj(j, spec) ? spec : root, p->err, p->errlen,
                               "%s: no pod template (spec.template) found", kind);
    return 1;
}

static int plan_list(struct plan *p, int root, const char *prefix, const char *ns_hint);

/* Plans one object at token root, its pointer being `prefix`. Returns 0
 * (ops appended, counts updated) or a PX_INJECT_E* code with err set. */
static int plan_object(struct plan *p, int root, const char *prefix, const char *ns_hint,
                       int depth)
{
    const struct certs_json *j = p->j;
    enum px_inject_reason why = PX_INJECT_INJECTED;
    char kind[64], ns[64], tprefix[128], spec[160], cm[NAME_MAX_LEN + 1], sec[NAME_MAX_LEN + 1];
    int tmpl, ometa, tmeta, pspec, is_pod, r, ctr;

    if (!certs_json_is_obj(j, root)) {
        certs_json_errf(j, root, p->err, p->errlen, "expected a Kubernetes object");
        return PX_INJECT_EINPUT;
    }
    if (get_str(j, root, "kind", kind, sizeof(kind)) != 0 || kind[0] == '\0') {
        certs_json_errf(j, root, p->err, p->errlen, "kind: missing or not a string");
        return PX_INJECT_EINPUT;
    }
    if (depth == 0 && strlen(kind) >= 4 && strcmp(kind + strlen(kind) - 4, "List") == 0)
        return plan_list(p, root, prefix, ns_hint);
    r = locate_template(p, root, kind, prefix, tprefix, sizeof(tprefix), &tmpl);
    if (r < 0)
        return PX_INJECT_EINPUT;
    if (r == 0) {
        why = PX_INJECT_NOT_WORKLOAD;
        goto skip;
    }
    is_pod = tmpl == root;
    ometa = certs_json_get(j, root, "metadata");
    tmeta = certs_json_get(j, tmpl, "metadata");
    pspec = certs_json_get(j, tmpl, "spec");
    if (!certs_json_is_obj(j, pspec)) {
        certs_json_errf(j, tmpl, p->err, p->errlen, "%s: pod spec missing", kind);
        return PX_INJECT_EINPUT;
    }
    snprintf(spec, sizeof(spec), "%s/spec", tprefix);

    if (ns_hint != NULL && ns_hint[0] != '\0')
        snprintf(ns, sizeof(ns), "%s", ns_hint);
    else if (!certs_json_is_obj(j, ometa) || get_str(j, ometa, "namespace", ns, sizeof(ns)) != 0)
        ns[0] = '\0';
    for (size_t i = 0; i < p->o->nexclude_ns; i++)
        if (strcmp(ns, p->o->exclude_ns[i]) == 0) {
            why = PX_INJECT_NS_EXCLUDED;
            goto skip;
        }
    if (opted_out(j, ometa) || opted_out(j, tmeta)) {
        why = PX_INJECT_OPT_OUT;
        goto skip;
    }
    ctr = certs_json_get(j, pspec, "containers");
    if (!certs_json_is_arr(j, ctr) || j->tok[ctr].size == 0) {
        certs_json_errf(j, ctr >= 0 ? ctr : pspec, p->err, p->errlen,
                        "containers: expected a non-empty array");
        return PX_INJECT_EINPUT;
    }
    r = scan_containers(p, pspec);
    if (r < 0)
        return PX_INJECT_EREFUSE;
    if (r == 1) {
        why = PX_INJECT_ALREADY;
        goto skip;
    }
    if (volume_name(p, root, ometa, tmeta, is_pod, 0, cm, sizeof(cm)) != 0 ||
        volume_name(p, root, ometa, tmeta, is_pod, 1, sec, sizeof(sec)) != 0)
        return PX_INJECT_EREFUSE;

    emit_container(p, spec);
    if (plan_volumes(p, pspec, spec, cm, sec) != 0)
        return PX_INJECT_EREFUSE;
    if (plan_grace(p, pspec, spec) != 0 || plan_annotation(p, tmeta, tprefix) != 0)
        return PX_INJECT_EINPUT;
    if (p->ops.oom)
        return PX_INJECT_ENOMEM;
skip:
    if (p->nobj++ == 0 || (why == PX_INJECT_INJECTED && p->injected == 0))
        p->first = why;
    if (why == PX_INJECT_INJECTED)
        p->injected++;
    else
        p->skipped++;
    return 0;
}

static int plan_list(struct plan *p, int root, const char *prefix, const char *ns_hint)
{
    const struct certs_json *j = p->j;
    int items = certs_json_get(j, root, "items"), n = 0;
    if (items < 0 || is_null(j, items))
        return 0;
    if (!certs_json_is_arr(j, items)) {
        certs_json_errf(j, items, p->err, p->errlen, "items: expected an array");
        return PX_INJECT_EINPUT;
    }
    for (int it = certs_json_first(j, items); it > 0; it = certs_json_next_elem(j, it), n++) {
        char pre[64];
        int rc;
        snprintf(pre, sizeof(pre), "%s/items/%d", prefix, n);
        rc = plan_object(p, it, pre, ns_hint, 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void fill_ident(const struct certs_json *j, int root, const char *ns_hint,
                       struct px_inject_result *res)
{
    int meta = certs_json_get(j, root, "metadata");
    (void)get_str(j, root, "kind", res->kind, sizeof(res->kind));
    if (certs_json_is_obj(j, meta)) {
        if (get_str(j, meta, "name", res->name, sizeof(res->name)) != 0)
            (void)get_str(j, meta, "generateName", res->name, sizeof(res->name));
        (void)get_str(j, meta, "namespace", res->ns, sizeof(res->ns));
    }
    if (ns_hint != NULL && ns_hint[0] != '\0')
        snprintf(res->ns, sizeof(res->ns), "%s", ns_hint);
}

/* Plans the object at token root into res->patch. */
static int plan_into(const struct certs_json *j, int root, const char *ns_hint,
                     const struct px_inject_opts *o, struct px_inject_result *res, char *err,
                     size_t errlen)
{
    struct plan p;
    struct sbuf patch = {0};
    int rc;

    memset(&p, 0, sizeof(p));
    p.j = j;
    p.o = o;
    p.err = err;
    p.errlen = errlen;
    fill_ident(j, root, ns_hint, res);
    rc = plan_object(&p, root, "", ns_hint, 0);
    if (rc == 0) {
        sb_add(&patch, "[", 1);
        if (p.ops.len > 0)
            sb_add(&patch, p.ops.p, p.ops.len);
        sb_add(&patch, "]", 1);
        if (patch.oom || p.ops.oom)
            rc = PX_INJECT_ENOMEM;
    }
    sb_free(&p.ops);
    if (rc != 0) {
        sb_free(&patch);
        if (rc == PX_INJECT_ENOMEM)
            snprintf(err, errlen, "out of memory");
        return rc;
    }
    res->patch = patch.p;
    res->patch_len = patch.len;
    res->reason = p.nobj > 0 ? p.first : PX_INJECT_NOT_WORKLOAD;
    res->injected = p.injected;
    res->skipped = p.skipped;
    return 0;
}

/* Offset of the first byte that is not well-formed UTF-8 (RFC 3629: no
 * overlongs, no surrogates, at most U+10FFFF), or len. The strict parser
 * checks the grammar only; we re-emit strings byte for byte, so bad UTF-8
 * would reach kubectl and the API server, which refuse it. */
static size_t utf8_bad_offset(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i], need, min, cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            min = 0x80;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            min = 0x800;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            min = 0x10000;
            cp = c & 0x07;
        } else {
            return i;
        }
        if (len - i <= need)
            return i;
        for (unsigned k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += need + 1;
    }
    return len;
}

static int parse_doc(struct certs_json *j, const char *js, size_t len, int max_tokens, char *err,
                     size_t errlen)
{
    size_t bad;
    memset(j, 0, sizeof(*j));
    if (len > PX_INJECT_MAX_BYTES) {
        snprintf(err, errlen, "1:1: document too large (%zu bytes, limit %u)", len,
                 PX_INJECT_MAX_BYTES);
        return PX_INJECT_EINPUT;
    }
    bad = utf8_bad_offset((const unsigned char *)js, len);
    if (bad < len) {
        int line = 1, col = 1;
        for (size_t i = 0; i < bad; i++) {
            if (js[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        snprintf(err, errlen, "%d:%d: invalid UTF-8", line, col);
        return PX_INJECT_EINPUT;
    }
    if (certs_json_parse(j, js, len, max_tokens, err, errlen) != 0)
        return PX_INJECT_EINPUT;
    if (!certs_json_is_obj(j, 0)) {
        certs_json_errf(j, 0, err, errlen, "expected a JSON object");
        certs_json_clear(j);
        return PX_INJECT_EINPUT;
    }
    return 0;
}

int px_inject_patch(const char *js, size_t len, const struct px_inject_opts *o,
                    struct px_inject_result *res, char *err, size_t errlen)
{
    struct certs_json j;
    int rc;
    memset(res, 0, sizeof(*res));
    rc = parse_doc(&j, js, len, PX_INJECT_MAX_TOKENS, err, errlen);
    if (rc != 0)
        return rc;
    rc = plan_into(&j, 0, NULL, o, res, err, errlen);
    certs_json_clear(&j);
    return rc;
}

/* ---- the applier -------------------------------------------------------- */

struct splice {
    size_t off, del;        /* replace doc[off, off+del) */
    size_t pre_off, pre_len; /* then write pre (in the applier's text buffer) */
    const char *val;        /* and the op's value, borrowed from the patch */
    size_t val_len;
    int seq;
};

static int splice_cmp(const void *a, const void *b)
{
    const struct splice *x = a, *y = b;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Decodes one pointer segment (RFC 6901 section 4). -1 on a bad "~x" or
 * an overlong segment. */
static int seg_decode(const char *s, size_t n, char *out, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o >= SEG_MAX)
            return -1;
        if (s[i] != '~') {
            out[o++] = s[i];
            continue;
        }
        if (i + 1 >= n || (s[i + 1] != '0' && s[i + 1] != '1'))
            return -1;
        out[o++] = s[i + 1] == '0' ? '~' : '/';
        i++;
    }
    *outlen = o;
    return 0;
}

/* Array element `seg` (a decimal index without leading zeros) or -1. */
static int array_elem(const struct certs_json *j, int arr, const char *seg, size_t n)
{
    long idx = 0;
    int e, k = 0;
    if (n == 0 || n > 9 || (n > 1 && seg[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (seg[i] < '0' || seg[i] > '9')
            return -1;
        idx = idx * 10 + (seg[i] - '0');
    }
    for (e = certs_json_first(j, arr); e > 0; e = certs_json_next_elem(j, e), k++)
        if (k == idx)
            return e;
    return -1;
}

struct applier {
    const struct certs_json *j;
    struct splice *sp;
    size_t nsp, capsp;
    int *added; /* per container token: members/elements appended so far */
    struct sbuf txt;
};

static int add_splice(struct applier *a, size_t off, size_t del, size_t pre_off, size_t pre_len,
                      const char *val, size_t val_len)
{
    if (a->nsp == a->capsp) {
        size_t cap = a->capsp ? a->capsp * 2 : 16;
        struct splice *n = realloc(a->sp, cap * sizeof(*n));
        if (n == NULL)
            return PX_INJECT_ENOMEM;
        a->sp = n;
        a->capsp = cap;
    }
    a->sp[a->nsp] = (struct splice){off, del, pre_off, pre_len, val, val_len, (int)a->nsp};
    a->nsp++;
    return 0;
}

/* One op: resolve `path` on the document, record the splice. */
static int apply_op(struct applier *a, int is_add, const char *path, size_t plen, const char *val,
                    size_t vlen, char *err, size_t errlen)
{
    const struct certs_json *j = a->j;
    char seg[SEG_MAX + 1];
    size_t slen, i = 1, s, e;
    int cur = 0, tgt;

    if (plen == 0 || path[0] != '/') {
        snprintf(err, errlen, "path \"%.*s\": expected a JSON Pointer below the root",
                 (int)(plen > 200 ? 200 : plen), path);
        return PX_INJECT_EINPUT;
    }
    for (;;) {
        size_t end = i;
        int last;
        while (end < plen && path[end] != '/')
            end++;
        last = end == plen;
        if (seg_decode(path + i, end - i, seg, &slen) != 0)
            goto bad_path;
        if (certs_json_is_obj(j, cur)) {
            tgt = find_member(j, cur, seg, slen);
        } else if (certs_json_is_arr(j, cur)) {
            if (last && is_add && slen == 1 && seg[0] == '-')
                tgt = -2;
            else if (last && is_add)
                goto bad_index;
            else
                tgt = array_elem(j, cur, seg, slen);
        } else {
            goto bad_path;
        }
        if (last)
            break;
        if (tgt < 0)
            goto bad_path;
        cur = tgt;
        i = end + 1;
    }
    if (tgt >= 0) { /* replace an existing value (add on a member replaces it too) */
        tok_range(j, tgt, &s, &e);
        return add_splice(a, s, e - s, 0, 0, val, vlen);
    }
    if (!is_add)
        goto bad_path;
    {
        size_t pre = a->txt.len;
        int comma = j->tok[cur].size > 0 || a->added[cur] > 0;
        sb_puts(&a->txt, comma ? "," : "");
        if (tgt == -1) { /* new object member */
            sb_json_str(&a->txt, seg, slen);
            sb_add(&a->txt, ":", 1);
        }
        if (a->txt.oom)
            return PX_INJECT_ENOMEM;
        a->added[cur]++;
        /* insert just before the closing '}' or ']' */
        return add_splice(a, (size_t)j->tok[cur].end - 1, 0, pre, a->txt.len - pre, val, vlen);
    }
bad_index:
    snprintf(err, errlen, "path \"%.*s\": array inserts by index are not supported; use \"-\"",
             (int)(plen > 200 ? 200 : plen), path);
    return PX_INJECT_EINPUT;
bad_path:
    snprintf(err, errlen, "path \"%.*s\": not found in the document",
             (int)(plen > 200 ? 200 : plen), path);
    return PX_INJECT_EINPUT;
}

static int collect_ops(struct applier *a, const struct certs_json *pj, char *err, size_t errlen)
{
    int n = 0;
    if (!certs_json_is_arr(pj, 0)) {
        snprintf(err, errlen, "patch: expected an array of operations");
        return PX_INJECT_EINPUT;
    }
    for (int op = certs_json_first(pj, 0); op > 0; op = certs_json_next_elem(pj, op), n++) {
        int o = certs_json_get(pj, op, "op"), pt = certs_json_get(pj, op, "path");
        int v = certs_json_get(pj, op, "value"), is_add, rc;
        size_t s, e;
        if (!certs_json_is_str(pj, pt) || v < 0 ||
            !(certs_json_eq(pj, o, "add") || certs_json_eq(pj, o, "replace"))) {
            snprintf(err, errlen, "patch[%d]: only add and replace with path and value "
                                  "are supported", n);
            return PX_INJECT_EINPUT;
        }
        is_add = certs_json_eq(pj, o, "add");
        {
            char *path = certs_json_strdup(pj, pt);
            if (path == NULL) {
                snprintf(err, errlen, "patch[%d]: bad path string", n);
                return PX_INJECT_EINPUT;
            }
            tok_range(pj, v, &s, &e);
            rc = apply_op(a, is_add, path, strlen(path), pj->js + s, e - s, err, errlen);
            free(path);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int build_output(struct applier *a, const char *doc, size_t len, struct sbuf *out,
                        char *err, size_t errlen)
{
    size_t pos = 0;
    if (a->nsp > 1)
        qsort(a->sp, a->nsp, sizeof(*a->sp), splice_cmp);
    for (size_t k = 0; k < a->nsp; k++) {
        const struct splice *s = &a->sp[k];
        if (s->off < pos) {
            snprintf(err, errlen, "patch: operations overlap");
            return PX_INJECT_EINPUT;
        }
        sb_add(out, doc + pos, s->off - pos);
        sb_add(out, a->txt.p ? a->txt.p + s->pre_off : "", s->pre_len);
        sb_add(out, s->val, s->val_len);
        pos = s->off + s->del;
    }
    sb_add(out, doc + pos, len - pos);
    return out->oom ? PX_INJECT_ENOMEM : 0;
}

int px_json_patch_apply(const char *doc, size_t len, const char *patch, size_t plen, int pretty,
                        char **out, size_t *outlen, char *err, size_t errlen)
{
    struct certs_json j = {0}, pj = {0}, chk = {0};
    struct applier a;
    struct sbuf raw = {0};
    char *fmt = NULL;
    size_t flen = 0;
    int rc;

    *out = NULL;
    *outlen = 0;
    memset(&a, 0, sizeof(a));
    rc = parse_doc(&j, doc, len, PX_INJECT_MAX_TOKENS, err, errlen);
    if (rc != 0)
        return rc;
    if (plen > PX_INJECT_MAX_BYTES || utf8_bad_offset((const unsigned char *)patch, plen) < plen ||
        certs_json_parse(&pj, patch, plen, PX_INJECT_MAX_TOKENS, err, errlen) != 0) {
        if (plen > PX_INJECT_MAX_BYTES || utf8_bad_offset((const unsigned char *)patch, plen) < plen)
            snprintf(err, errlen, "patch: too large or not UTF-8");
        rc = PX_INJECT_EINPUT;
        goto done;
    }
    a.j = &j;
    a.added = calloc((size_t)j.ntok, sizeof(*a.added));
    rc = PX_INJECT_ENOMEM;
    if (a.added == NULL)
        goto done;
    rc = collect_ops(&a, &pj, err, errlen);
    if (rc == 0)
        rc = build_output(&a, doc, len, &raw, err, errlen);
    if (rc == 0)
        rc = px_json_format(raw.p, raw.len, pretty, &fmt, &flen);
    if (rc == 0 && certs_json_parse(&chk, fmt, flen, 4 * PX_INJECT_MAX_TOKENS, err, errlen) != 0) {
        /* e.g. an add that repeats a key another add just created */
        rc = PX_INJECT_EINPUT;
    }
    if (rc == 0) {
        *out = fmt;
        *outlen = flen;
        fmt = NULL;
    }
done:
    if (rc == PX_INJECT_ENOMEM)
        snprintf(err, errlen, "out of memory");
    certs_json_clear(&chk);
    certs_json_clear(&pj);
    certs_json_clear(&j);
    free(a.sp);
    free(a.added);
    sb_free(&a.txt);
    sb_free(&raw);
    free(fmt);
    return rc;
}

static void newline(struct sbuf *b, int pretty, int depth)
{
    static const char spaces[] = "                                ";
    if (!pretty)
        return;
    sb_add(b, "\n", 1);
    for (int d = 0; d < depth; d++)
        sb_add(b, spaces, 2);
}

int px_json_format(const char *js, size_t len, int pretty, char **out, size_t *outlen)
{
    struct sbuf b = {0};
    int depth = 0;
    for (size_t i = 0; i < len && !b.oom; i++) {
        char c = js[i];
        size_t k;
        switch (c) {
        case '"':
            for (k = i + 1; k < len && js[k] != '"'; k++)
                if (js[k] == '\\')
                    k++;
            if (k >= len)
                k = len - 1;
            sb_add(&b, js + i, k - i + 1);
            i = k;
            break;
        case ' ': case '\t': case '\n': case '\r':
            break;
        case '{': case '[':
            for (k = i + 1; k < len && strchr(" \t\r\n", js[k]) != NULL && js[k] != '\0'; k++)
                ;
            if (k < len && js[k] == (c == '{' ? '}' : ']')) {
                sb_add(&b, c == '{' ? "{}" : "[]", 2);
                i = k;
                break;
            }
            sb_add(&b, &c, 1);
            newline(&b, pretty, ++depth);
            break;
        case '}': case ']':
            newline(&b, pretty, --depth);
            sb_add(&b, &c, 1);
            break;
        case ',':
            sb_add(&b, ",", 1);
            newline(&b, pretty, depth);
            break;
        case ':':
            sb_add(&b, pretty ? ": " : ":", pretty ? 2 : 1);
            break;
        default:
            sb_add(&b, &c, 1);
            break;
        }
    }
    sb_add(&b, "\n", 1);
    if (b.oom) {
        sb_free(&b);
        return PX_INJECT_ENOMEM;
    }
    *out = b.p;
    *outlen = b.len;
    return 0;
}

int px_inject_object(const char *js, size_t len, const struct px_inject_opts *o, int pretty,
                     char **out, size_t *outlen, struct px_inject_result *res, char *err,
                     size_t errlen)
{
    int rc = px_inject_patch(js, len, o, res, err, errlen);
    *out = NULL;
    *outlen = 0;
    if (rc != 0)
        return rc;
    rc = px_json_patch_apply(js, len, res->patch, res->patch_len, pretty, out, outlen, err,
                             errlen);
    if (rc != 0)
        px_inject_result_clear(res);
    return rc;
}

/* ---- AdmissionReview ------------------------------------------------- */

/* request.uid is echoed into the response unescaped, so only a safe
 * alphabet is accepted (the API server sends a UUID). */
static int uid_ok(const char *u)
{
    size_t n = strlen(u);
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((u[i] >= 'a' && u[i] <= 'z') || (u[i] >= 'A' && u[i] <= 'Z') ||
              (u[i] >= '0' && u[i] <= '9') || u[i] == '-' || u[i] == '.' || u[i] == '_'))
            return 0;
    return 1;
}

static int review_response(struct sbuf *b, const char *uid, const struct px_inject_result *res,
                           int deny, const char *msg)
{
    sb_puts(b, "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\","
               "\"response\":{\"uid\":\"");
    sb_puts(b, uid);
    if (deny) {
        char m[1024];
        snprintf(m, sizeof(m), "picket inject: %s", msg);
        sb_puts(b, "\",\"allowed\":false,\"status\":{\"code\":403,\"message\":");
        sb_json_str(b, m, strlen(m));
        sb_puts(b, "}}}");
    } else if (res->patch != NULL && res->injected > 0) {
        size_t cap = 4 * ((res->patch_len + 2) / 3) + 1;
        char *b64 = malloc(cap);
        if (b64 == NULL)
            return PX_INJECT_ENOMEM;
        certs_b64_encode((const unsigned char *)res->patch, res->patch_len, b64);
        sb_puts(b, "\",\"allowed\":true,\"patchType\":\"JSONPatch\",\"patch\":\"");
        sb_puts(b, b64);
        sb_puts(b, "\"}}");
        free(b64);
    } else {
        sb_puts(b, "\",\"allowed\":true}}");
    }
    sb_add(b, "\n", 1);
    return b->oom ? PX_INJECT_ENOMEM : 0;
}

int px_inject_review(const char *body, size_t len, const struct px_inject_opts *o, char **resp,
                     size_t *resp_len, struct px_inject_result *res, char *uid, size_t uidlen,
                     char *err, size_t errlen)
{
    struct certs_json j;
    struct sbuf b = {0};
    char ver[64], op[32], ns[64], msg[512] = "";
    int req, obj, rc, deny = 0;

    *resp = NULL;
    *resp_len = 0;
    memset(res, 0, sizeof(*res));
    if (uidlen > 0)
        uid[0] = '\0';
    rc = parse_doc(&j, body, len, PX_INJECT_MAX_TOKENS, err, errlen);
    if (rc != 0)
        return rc;
    rc = PX_INJECT_EINPUT;
    if (get_str(&j, 0, "apiVersion", ver, sizeof(ver)) != 0 ||
        strcmp(ver, "admission.k8s.io/v1") != 0) {
        certs_json_errf(&j, 0, err, errlen, "apiVersion: expected \"admission.k8s.io/v1\"");
        goto done;
    }
    if (!certs_json_eq(&j, certs_json_get(&j, 0, "kind"), "AdmissionReview")) {
        certs_json_errf(&j, 0, err, errlen, "kind: expected \"AdmissionReview\"");
        goto done;
    }
    req = certs_json_get(&j, 0, "request");
    if (!certs_json_is_obj(&j, req)) {
        certs_json_errf(&j, 0, err, errlen, "request: expected an object");
        goto done;
    }
    if (get_str(&j, req, "uid", uid, uidlen) != 0 || !uid_ok(uid)) {
        if (uidlen > 0)
            uid[0] = '\0';
        certs_json_errf(&j, req, err, errlen, "request.uid: expected a UID (1 to 128 of "
                                              "[A-Za-z0-9._-])");
        goto done;
    }
    obj = certs_json_get(&j, req, "object");
    if (!certs_json_is_obj(&j, obj)) {
        certs_json_errf(&j, req, err, errlen, "request.object: expected an object");
        goto done;
    }
    if (get_str(&j, req, "namespace", ns, sizeof(ns)) != 0)
        ns[0] = '\0';
    if (get_str(&j, req, "operation", op, sizeof(op)) == 0 && strcmp(op, "CREATE") != 0) {
        /* Containers of a running pod cannot be changed; only CREATE is ours. */
        fill_ident(&j, obj, ns, res);
        res->reason = PX_INJECT_NOT_CREATE;
        res->skipped = 1;
    } else {
        rc = plan_into(&j, obj, ns, o, res, msg, sizeof(msg));
        if (rc == PX_INJECT_ENOMEM) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        if (rc != 0) {
            /* The pod asked for picket (the webhook matched it) but cannot
             * get it: deny rather than let it run unprotected. */
            deny = 1;
            fill_ident(&j, obj, ns, res);
            res->reason = PX_INJECT_REFUSED;
            res->skipped = 1;
        }
    }
    rc = review_response(&b, uid, res, deny, msg);
    if (rc == 0) {
        if (deny)
            snprintf(err, errlen, "%s", msg);
        *resp = b.p;
        *resp_len = b.len;
        b.p = NULL;
    } else {
        snprintf(err, errlen, "out of memory");
    }
done:
    sb_free(&b);
    certs_json_clear(&j);
    if (rc != 0)
        px_inject_result_clear(res);
    return rc;
}
