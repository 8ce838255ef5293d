/*
 * inject_plan.c - the JSON Patch that turns a pod (or a workload's pod
 * template, or each item of a List) into one with picket as a native
 * sidecar: which objects are skipped and why, where the config and SVID
 * come from, and the ops (sidecar and config writer containers, volumes,
 * grace period, the injected annotation). Pure, as inject.h promises.
 *
 * Patches never point into a value an earlier op of the same patch added
 * (a missing initContainers, volumes or annotations is added whole), so
 * they apply in one pass with any RFC 6902 implementation, in order.
 */
#include "inject_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- small token helpers ---------------------------------------------- */

static int is_null(const struct certs_json *j, int i)
{
    return i >= 0 && j->tok[i].type == JSMN_PRIMITIVE && j->tok[i].end - j->tok[i].start == 4 &&
           memcmp(j->js + j->tok[i].start, "null", 4) == 0;
}

/* metadata[section][key] as a string, or -1. */
static int meta_str(const struct certs_json *j, int meta, const char *section, const char *key,
                    char *buf, size_t n)
{
    buf[0] = '\0';
    if (!certs_json_is_obj(j, meta))
        return -1;
    return px_inject_get_str(j, certs_json_get(j, meta, section), key, buf, n);
}

/* ---- planning: which ops one object needs ----------------------------- */

struct plan {
    const struct certs_json *j;
    const struct px_inject_opts *o;
    struct px_sbuf ops; /* "op,op,..." without the brackets */
    int nops;
    struct px_sbuf probes; /* this object's PICKET_APP_PROBES members; empty: none */
    char note[384];        /* the first hostNetwork pod's warning (px_inject_result.note) */
    unsigned injected, skipped;
    enum px_inject_reason first; /* first object's reason */
    int nobj;
    char *err;
    size_t errlen;
};

/* Where one pod's config and SVID come from. */
struct sources {
    int generated;             /* proxy_config into an emptyDir (else the ConfigMap cm) */
    char cm[NAME_MAX_LEN + 1];
    int secret;                /* SVID from Secret sec (else o->svid_volume) */
    char sec[NAME_MAX_LEN + 1];
    int wlapi;                 /* picket.dev/identity: workload-api (plan_identity) */
};

/* Pointers are built from fixed segments and ptr_escape()d keys, so they
 * need no JSON escaping. */
void px_inject_op_begin(struct px_sbuf *ops, int *nops, const char *op, const char *prefix,
                        const char *suffix)
{
    px_sb_puts(ops, (*nops)++ ? "," : "");
    px_sb_printf(ops, "{\"op\":\"%s\",\"path\":\"", op);
    px_sb_puts(ops, prefix);
    px_sb_puts(ops, suffix);
    px_sb_puts(ops, "\",\"value\":");
}

static void op_begin(struct plan *p, const char *op, const char *prefix, const char *suffix)
{
    px_inject_op_begin(&p->ops, &p->nops, op, prefix, suffix);
}

void px_inject_tok_raw(const struct certs_json *j, int i, const char **p, size_t *n)
{
    int s = j->tok[i].start, e = j->tok[i].end;
    if (j->tok[i].type == JSMN_STRING) {
        s--;
        e++;
    }
    *p = j->js + s;
    *n = (size_t)(e - s);
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
/* picket.dev/inject: disabled (or "false") as an annotation or a label. */
static int opted_out(const struct certs_json *j, int meta)
{
    static const char *const sections[] = {"annotations", "labels"};
    char v[64];
    for (size_t s = 0; s < 2; s++)
        if (meta_str(j, meta, sections[s], "picket.dev/inject", v, sizeof(v)) == 0 &&
            (strcasecmp(v, "disabled") == 0 || strcasecmp(v, "false") == 0))
            return 1;
    return 0;
}

/* picket.dev/rewrite-probes: "false" as an annotation. */
static int keep_probes(const struct certs_json *j, int meta)
{
    char v[16];
    return meta_str(j, meta, "annotations", "picket.dev/rewrite-probes", v, sizeof(v)) == 0 &&
           strcasecmp(v, "false") == 0;
}

static int host_network(const struct certs_json *j, int pspec)
{
    int v = 0;
    return certs_json_bool(j, certs_json_get(j, pspec, "hostNetwork"), &v) == 0 && v;
}

static int injected_annotation(const struct certs_json *j, int meta)
{
    char v[16];
    return meta_str(j, meta, "annotations", "picket.dev/injected", v, sizeof(v)) == 0 &&
           strcmp(v, "true") == 0;
}

/* Scans containers and initContainers: 1 if one is named picket; -1 (err
 * set) if one already uses one of picket's ports, which share the pod's
 * network namespace, or is named picket-config while the generated config
 * needs that name. */
static int scan_containers(struct plan *p, int pspec, int generated)
{
    static const char *const lists[] = {"containers", "initContainers"};
    const struct certs_json *j = p->j;
    for (size_t l = 0; l < 2; l++) {
        int arr = certs_json_get(j, pspec, lists[l]), c;
        if (!certs_json_is_arr(j, arr))
            continue;
        for (c = certs_json_first(j, arr); c > 0; c = certs_json_next_elem(j, c)) {
            int ports = certs_json_get(j, c, "ports"), nm = certs_json_get(j, c, "name");
            if (certs_json_eq(j, nm, "picket"))
                return 1;
            if (generated && certs_json_eq(j, nm, "picket-config"))
                return certs_json_errf(j, nm, p->err, p->errlen,
                                       "a container named \"picket-config\" already exists");
            if (!certs_json_is_arr(j, ports))
                continue;
            for (int q = certs_json_first(j, ports); q > 0; q = certs_json_next_elem(j, q)) {
                int pt = certs_json_get(j, q, "containerPort");
                int64_t v;
                if (certs_json_int(j, pt, &v) == 0 &&
                    (v == p->o->inbound_port || v == p->o->admin_port ||
                     v == p->o->probes_port || v == p->o->metrics_port))
                    return certs_json_errf(j, pt, p->err, p->errlen,
                                           "containerPort %lld is picket's; change the app's "
                                           "port or picket's inbound_port, admin_port, "
                                           "probes_port or metrics_port",
                                           (long long)v);
            }
        }
    }
    return 0;
}

/* The app name that "<app>" in name templates stands for. */
static int app_name(struct plan *p, int root, int ometa, int tmeta, char *buf, size_t n)
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
    if (certs_json_is_obj(j, ometa) && px_inject_get_str(j, ometa, "name", buf, n) == 0 &&
        buf[0] != '\0')
        return 0;
    return certs_json_errf(j, root, p->err, p->errlen,
                           "cannot tell the app's name for \"<app>\": add the label "
                           "app.kubernetes.io/name or app, or the annotation "
                           "picket.dev/config-map");
}

/* A ConfigMap or Secret name: the annotation, else the template with
 * "<app>" replaced. 1 if resolved into buf, 0 if neither applies, -1 (err
 * set) on an invalid or underivable name. */
static int resolve_name(struct plan *p, int root, int ometa, int tmeta, const char *ann,
                        const char *tmpl, const char *what, char *buf, size_t n)
{
    char app[NAME_MAX_LEN + 1];
    if (meta_str(p->j, tmeta, "annotations", ann, buf, n) != 0 &&
        meta_str(p->j, ometa, "annotations", ann, buf, n) != 0) {
        if (tmpl == NULL)
            return 0;
        if (strstr(tmpl, APP_TOKEN) == NULL) {
            snprintf(buf, n, "%s", tmpl);
        } else {
            if (app_name(p, root, ometa, tmeta, app, sizeof(app)) != 0)
                return -1;
            if (px_inject_subst_app(tmpl, app, buf, n) != 0)
                buf[0] = '\0';
        }
    }
    if (!px_inject_dns1123_ok(buf))
        return certs_json_errf(p->j, root, p->err, p->errlen,
                               "%s name \"%.80s\" is not a valid lowercase DNS-1123 name", what,
                               buf);
    return 1;
}

/* picket.dev/identity: workload-api: picket takes its SVID from the SPIFFE
 * Workload API (identity.source workload_api) through the socket the SPIFFE
 * CSI driver mounts, instead of an SVID volume or Secret. 1 for the Workload
 * API, 0 for files (absent or "files"), -1 (err set) otherwise. */
static int plan_identity(struct plan *p, int root, int ometa, int tmeta)
{
    char v[32], sec[NAME_MAX_LEN + 1];
    if (meta_str(p->j, tmeta, "annotations", "picket.dev/identity", v, sizeof(v)) != 0 &&
        meta_str(p->j, ometa, "annotations", "picket.dev/identity", v, sizeof(v)) != 0)
        return 0;
    if (strcmp(v, "files") == 0)
        return 0;
    if (strcmp(v, "workload-api") != 0)
        return certs_json_errf(p->j, root, p->err, p->errlen,
                               "annotation picket.dev/identity: expected \"workload-api\" or "
                               "\"files\"");
    if (meta_str(p->j, tmeta, "annotations", "picket.dev/svid-secret", sec, sizeof(sec)) == 0 ||
        meta_str(p->j, ometa, "annotations", "picket.dev/svid-secret", sec, sizeof(sec)) == 0)
        return certs_json_errf(p->j, root, p->err, p->errlen,
                               "annotations picket.dev/identity: workload-api and "
                               "picket.dev/svid-secret are mutually exclusive");
    return 1;
}

static int plan_sources(struct plan *p, int root, int ometa, int tmeta, struct sources *s)
{
    const struct px_inject_opts *o = p->o;
    int r;
    memset(s, 0, sizeof(*s));
    /* the workload's annotation wins; then proxy_config; then the template */
    r = resolve_name(p, root, ometa, tmeta, "picket.dev/config-map", NULL, "config map", s->cm,
                     sizeof(s->cm));
    if (r == 0 && o->proxy_config != NULL)
        s->generated = 1;
    else if (r == 0)
        r = resolve_name(p, root, ometa, tmeta, "picket.dev/config-map",
                         o->config_map ? o->config_map : APP_TOKEN "-picket", "config map",
                         s->cm, sizeof(s->cm));
    if (r < 0)
        return -1;
    s->wlapi = plan_identity(p, root, ometa, tmeta);
    if (s->wlapi != 0)
        return s->wlapi < 0 ? -1 : 0;
    r = resolve_name(p, root, ometa, tmeta, "picket.dev/svid-secret", o->svid_secret,
                     "svid secret", s->sec, sizeof(s->sec));
    if (r < 0)
        return -1;
    s->secret = r == 1;
    return 0;
}

static void exec_curl(struct plan *p, const char *path)
{
    px_sb_printf(&p->ops, "{\"exec\":{\"command\":[\"curl\",\"-fsS\",\"--max-time\",\"1\","
                          "\"http://127.0.0.1:%d%s\"]}",
                 p->o->admin_port, path);
}

/* Non-root, read-only root filesystem, nothing to escalate to. */
static void emit_common(struct plan *p)
{
    const struct px_inject_opts *o = p->o;
    if (o->resources != NULL) {
        px_sb_puts(&p->ops, ",\"resources\":");
        px_sb_puts(&p->ops, o->resources);
    }
    px_sb_printf(&p->ops, ",\"securityContext\":{\"runAsNonRoot\":true,\"runAsUser\":%lld,"
                          "\"allowPrivilegeEscalation\":false,\"readOnlyRootFilesystem\":true,"
                          "\"capabilities\":{\"drop\":[\"ALL\"]},"
                          "\"seccompProfile\":{\"type\":\"RuntimeDefault\"}}",
                 o->run_as_user);
}

/* The native sidecar (restartPolicy Always in initContainers). */
static void emit_sidecar(struct plan *p, const struct sources *s)
{
    const struct px_inject_opts *o = p->o;
    px_sb_puts(&p->ops, "{\"name\":\"picket\",\"image\":");
    px_sb_json_str(&p->ops, o->image, strlen(o->image));
    px_sb_puts(&p->ops, ",\"restartPolicy\":\"Always\"");
    /* Kubernetes expands $(VAR) in args from the container's env. The
     * probes and metrics listeners are the injector's to place: the
     * rewritten probes and the prometheus.io annotations point there,
     * whatever the mounted config says. */
    px_sb_printf(&p->ops, ",\"args\":[\"run\",\"-c\",\"" PX_INJECT_CONFIG_FILE "\","
                          "\"--node-id\",\"$(PICKET_NODE_ID)\","
                          "\"--probes-bind\",\"0.0.0.0:%d\",\"--metrics-bind\",\"0.0.0.0:%d\"]",
                 o->probes_port, o->metrics_port);
    px_sb_puts(&p->ops, ",\"env\":[{\"name\":\"POD_NAMESPACE\",\"valueFrom\":{\"fieldRef\":"
                        "{\"fieldPath\":\"metadata.namespace\"}}},"
                        "{\"name\":\"POD_NAME\",\"valueFrom\":{\"fieldRef\":"
                        "{\"fieldPath\":\"metadata.name\"}}},"
                        "{\"name\":\"PICKET_NODE_ID\","
                        "\"value\":\"$(POD_NAMESPACE)/$(POD_NAME)\"}");
    if (p->probes.len > 0) {
        /* the app's probe targets; '$' doubled, as Kubernetes expands
         * $(VAR) in env values too */
        struct px_sbuf v = {0};
        px_sb_add(&v, "{", 1);
        for (size_t i = 0; i < p->probes.len; i++)
            px_sb_add(&v, p->probes.p[i] == '$' ? "$$" : p->probes.p + i,
                      p->probes.p[i] == '$' ? 2 : 1);
        px_sb_add(&v, "}", 1);
        px_sb_puts(&p->ops, ",{\"name\":\"PICKET_APP_PROBES\",\"value\":");
        if (v.oom)
            p->ops.oom = 1;
        else
            px_sb_json_str(&p->ops, v.p, v.len);
        px_sb_puts(&p->ops, "}");
        px_sb_free(&v);
    }
    if (s->wlapi)
        px_sb_puts(&p->ops, ",{\"name\":\"SPIFFE_ENDPOINT_SOCKET\",\"value\":\""
                            PX_INJECT_WLAPI_SOCKET "\"}");
    px_sb_puts(&p->ops, "]");
    px_sb_printf(&p->ops, ",\"ports\":[{\"containerPort\":%d,\"name\":\"picket-mtls\","
                          "\"protocol\":\"TCP\"},{\"containerPort\":%d,\"name\":\"picket-probes\","
                          "\"protocol\":\"TCP\"},{\"containerPort\":%d,\"name\":\"picket-metrics\","
                          "\"protocol\":\"TCP\"}]",
                 o->inbound_port, o->probes_port, o->metrics_port);
    /* The admin listener is loopback-only by design, so probes are exec
     * probes run inside the pod; no admin port is declared. The startup
     * probe holds the app containers back until picket is ready. */
    px_sb_puts(&p->ops, ",\"startupProbe\":");
    exec_curl(p, "/readyz");
    px_sb_puts(&p->ops, ",\"periodSeconds\":1,\"timeoutSeconds\":2,\"failureThreshold\":120}");
    px_sb_puts(&p->ops, ",\"readinessProbe\":");
    exec_curl(p, "/readyz");
    px_sb_puts(&p->ops, ",\"periodSeconds\":5,\"timeoutSeconds\":2}");
    px_sb_puts(&p->ops, ",\"livenessProbe\":");
    exec_curl(p, "/healthz");
    px_sb_puts(&p->ops, ",\"periodSeconds\":10,\"timeoutSeconds\":2}");
    px_sb_puts(&p->ops, ",\"volumeMounts\":[{\"name\":\"picket-config\",\"mountPath\":"
                        "\"" PX_INJECT_CONFIG_DIR "\",\"readOnly\":true},{\"name\":\"picket-svid\","
                        "\"mountPath\":\"");
    px_sb_puts(&p->ops, s->wlapi ? PX_INJECT_WLAPI_DIR : PX_INJECT_SVID_DIR);
    px_sb_puts(&p->ops, "\",\"readOnly\":true}]");
    emit_common(p);
    px_sb_puts(&p->ops, "}");
}

/* The init container that writes proxy_config into the emptyDir. */
static void emit_writer(struct plan *p)
{
    const struct px_inject_opts *o = p->o;
    px_sb_puts(&p->ops, "{\"name\":\"picket-config\",\"image\":");
    px_sb_json_str(&p->ops, o->image, strlen(o->image));
    px_sb_puts(&p->ops, ",\"args\":[\"inject\",\"write-config\",\"--out\",\""
                        PX_INJECT_CONFIG_FILE "\"],\"env\":[{\"name\":\"PICKET_CONFIG\","
                        "\"value\":");
    /* Kubernetes expands $(VAR) in env values and reduces "$$" to "$":
     * doubling every '$' hands the config over byte for byte. */
    {
        struct px_sbuf esc = {0};
        for (const char *c = o->proxy_config; *c != '\0'; c++)
            px_sb_add(&esc, *c == '$' ? "$$" : c, *c == '$' ? 2 : 1);
        if (esc.oom)
            p->ops.oom = 1;
        else
            px_sb_json_str(&p->ops, esc.p ? esc.p : "", esc.len);
        px_sb_free(&esc);
    }
    px_sb_puts(&p->ops, "}],\"volumeMounts\":[{\"name\":\"picket-config\",\"mountPath\":\""
                        PX_INJECT_CONFIG_DIR "\"}]");
    emit_common(p);
    px_sb_puts(&p->ops, "}");
}

/* Init containers: the config writer (when generated), then picket, then
 * the app's own, so they run with the mesh up. The array is added whole
 * when absent or null, else replaced whole with the app's init containers
 * copied after ours: JSON Patch inserts by index are positional against a
 * document earlier ops may have changed, and the applier (inject_patch.c)
 * takes none. 0 or PX_INJECT_EINPUT. */
static int plan_init(struct plan *p, int pspec, const char *spec, const struct sources *s)
{
    const struct certs_json *j = p->j;
    int ic = certs_json_get(j, pspec, "initContainers"), have = 0;
    if (ic < 0 || is_null(j, ic)) {
        op_begin(p, "add", spec, "/initContainers");
    } else if (!certs_json_is_arr(j, ic)) {
        certs_json_errf(j, ic, p->err, p->errlen, "initContainers: expected an array");
        return PX_INJECT_EINPUT;
    } else {
        op_begin(p, "replace", spec, "/initContainers");
        have = 1;
    }
    px_sb_puts(&p->ops, "[");
    if (s->generated) {
        emit_writer(p);
        px_sb_puts(&p->ops, ",");
    }
    emit_sidecar(p, s);
    for (int e = have ? certs_json_first(j, ic) : -1; e > 0; e = certs_json_next_elem(j, e)) {
        const char *t;
        size_t n;
        px_inject_tok_raw(j, e, &t, &n);
        px_sb_add(&p->ops, ",", 1);
        px_sb_add(&p->ops, t, n);
    }
    px_sb_puts(&p->ops, "]}");
    return 0;
}

static void emit_volume(struct plan *p, int which, const struct sources *s)
{
    const char *sv = p->o->svid_volume;
    if (which == 0 && s->generated) {
        px_sb_puts(&p->ops, "{\"name\":\"picket-config\",\"emptyDir\":{\"medium\":\"Memory\","
                            "\"sizeLimit\":\"1Mi\"}}");
    } else if (which == 0) {
        px_sb_puts(&p->ops, "{\"name\":\"picket-config\",\"configMap\":{\"name\":");
        px_sb_json_str(&p->ops, s->cm, strlen(s->cm));
        px_sb_puts(&p->ops, "}}");
    } else if (s->wlapi) {
        px_sb_puts(&p->ops, "{\"name\":\"picket-svid\"," PX_INJECT_WLAPI_VOLUME "}");
    } else if (s->secret) {
        px_sb_puts(&p->ops, "{\"name\":\"picket-svid\",\"secret\":{\"secretName\":");
        px_sb_json_str(&p->ops, s->sec, strlen(s->sec));
        px_sb_puts(&p->ops, "}}");
    } else {
        /* svid_volume is a checked compact object: splice its members */
        px_sb_puts(&p->ops, "{\"name\":\"picket-svid\",");
        px_sb_add(&p->ops, sv + 1, strlen(sv) - 1);
    }
}

/* Volumes: added whole when absent or null, else appended; an existing
 * volume with one of our names is refused rather than shadowed. 0,
 * PX_INJECT_EINPUT or PX_INJECT_EREFUSE. */
static int plan_volumes(struct plan *p, int pspec, const char *spec, const struct sources *s)
{
    const struct certs_json *j = p->j;
    int vols = certs_json_get(j, pspec, "volumes");
    if (vols < 0 || is_null(j, vols)) {
        op_begin(p, "add", spec, "/volumes");
        px_sb_puts(&p->ops, "[");
        emit_volume(p, 0, s);
        px_sb_puts(&p->ops, ",");
        emit_volume(p, 1, s);
        px_sb_puts(&p->ops, "]}");
        return 0;
    }
    if (!certs_json_is_arr(j, vols)) {
        certs_json_errf(j, vols, p->err, p->errlen, "volumes: expected an array");
        return PX_INJECT_EINPUT;
    }
    for (int v = certs_json_first(j, vols); v > 0; v = certs_json_next_elem(j, v)) {
        int nm = certs_json_get(j, v, "name");
        if (certs_json_eq(j, nm, "picket-config") || certs_json_eq(j, nm, "picket-svid")) {
            certs_json_errf(j, nm, p->err, p->errlen, "volumes: a volume named %.*s already exists",
                            j->tok[nm].end - j->tok[nm].start + 2, j->js + j->tok[nm].start - 1);
            return PX_INJECT_EREFUSE;
        }
    }
    for (int w = 0; w < 2; w++) {
        op_begin(p, "add", spec, "/volumes/-");
        emit_volume(p, w, s);
        px_sb_puts(&p->ops, "}");
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
    px_sb_printf(&p->ops, "%lld}", (long long)min);
    return 0;
}

/* The annotations go on the pod (template) metadata: picket.dev/injected,
 * and the prometheus.io trio for picket's metrics listener unless the pod
 * has any of them (they would then be the app's own, and stay). Whatever
 * is missing on the way is added whole. */
static int plan_annotation(struct plan *p, int tmeta, const char *tprefix)
{
    static const char *const prom[] = {"prometheus.io/scrape", "prometheus.io/port",
                                       "prometheus.io/path"};
    const struct certs_json *j = p->j;
    char seg[64], suffix[96], vals[3][16];
    int ann = -1, n = 1;
    const char *keys[4] = {"picket.dev/injected", prom[0], prom[1], prom[2]};
    const char *v[4] = {"true", vals[0], vals[1], vals[2]};

    if (tmeta >= 0 && !is_null(j, tmeta) && !certs_json_is_obj(j, tmeta))
        return certs_json_errf(j, tmeta, p->err, p->errlen, "metadata: expected an object");
    if (tmeta >= 0 && !is_null(j, tmeta))
        ann = certs_json_get(j, tmeta, "annotations");
    if (ann >= 0 && !is_null(j, ann) && !certs_json_is_obj(j, ann))
        return certs_json_errf(j, ann, p->err, p->errlen, "annotations: expected an object");
    if (ann < 0 || is_null(j, ann) ||
        (certs_json_get(j, ann, prom[0]) < 0 && certs_json_get(j, ann, prom[1]) < 0 &&
         certs_json_get(j, ann, prom[2]) < 0)) {
        snprintf(vals[0], sizeof(vals[0]), "true");
        snprintf(vals[1], sizeof(vals[1]), "%d", p->o->metrics_port);
        snprintf(vals[2], sizeof(vals[2]), "/metrics");
        n = 4;
    }
    if (tmeta < 0 || is_null(j, tmeta) || ann < 0 || is_null(j, ann)) {
        int whole_meta = tmeta < 0 || is_null(j, tmeta);
        op_begin(p, "add", tprefix, whole_meta ? "/metadata" : "/metadata/annotations");
        px_sb_puts(&p->ops, whole_meta ? "{\"annotations\":{" : "{");
        for (int i = 0; i < n; i++)
            px_sb_printf(&p->ops, "%s\"%s\":\"%s\"", i ? "," : "", keys[i], v[i]);
        px_sb_puts(&p->ops, whole_meta ? "}}}" : "}}");
        return 0;
    }
    for (int i = 0; i < n; i++) {
        ptr_escape(seg, sizeof(seg), keys[i]);
        snprintf(suffix, sizeof(suffix), "/metadata/annotations/%s", seg);
        op_begin(p, "add", tprefix, suffix);
        px_sb_printf(&p->ops, "\"%s\"}", v[i]);
    }
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
    char kind[64], ns[64], tprefix[128], spec[160];
    struct sources src;
    int tmpl, ometa, tmeta, pspec, r, ctr;

    if (!certs_json_is_obj(j, root)) {
        certs_json_errf(j, root, p->err, p->errlen, "expected a Kubernetes object");
        return PX_INJECT_EINPUT;
    }
    if (px_inject_get_str(j, root, "kind", kind, sizeof(kind)) != 0 || kind[0] == '\0') {
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
    else if (!certs_json_is_obj(j, ometa) ||
             px_inject_get_str(j, ometa, "namespace", ns, sizeof(ns)) != 0)
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
    if (injected_annotation(j, tmeta) || (tmpl != root && injected_annotation(j, ometa))) {
        why = PX_INJECT_ALREADY;
        goto skip;
    }
    if (host_network(j, pspec)) {
        why = PX_INJECT_HOST_NETWORK;
        if (p->note[0] == '\0') {
            char nm[128] = "";
            if (certs_json_is_obj(j, ometa) &&
                px_inject_get_str(j, ometa, "name", nm, sizeof(nm)) != 0)
                (void)px_inject_get_str(j, ometa, "generateName", nm, sizeof(nm));
            snprintf(p->note, sizeof(p->note),
                     "%s %s: not injected: hostNetwork: true puts the pod in the node's network "
                     "namespace, where picket's listeners would take the node's ports and "
                     "loopback is the node's; it runs without the mesh",
                     kind, nm[0] ? nm : "(unnamed)");
        }
        goto skip;
    }
    ctr = certs_json_get(j, pspec, "containers");
    if (!certs_json_is_arr(j, ctr) || j->tok[ctr].size == 0) {
        certs_json_errf(j, ctr >= 0 ? ctr : pspec, p->err, p->errlen,
                        "containers: expected a non-empty array");
        return PX_INJECT_EINPUT;
    }
    if (certs_json_is_obj(j, tmeta) == 0 && tmeta >= 0 && !is_null(j, tmeta)) {
        certs_json_errf(j, tmeta, p->err, p->errlen, "metadata: expected an object");
        return PX_INJECT_EINPUT;
    }
    /* a picket container means done, whatever the sources would be */
    r = scan_containers(p, pspec, 0);
    if (r < 0)
        return PX_INJECT_EREFUSE;
    if (r == 1) {
        why = PX_INJECT_ALREADY;
        goto skip;
    }
    if (plan_sources(p, root, ometa, tmeta, &src) != 0)
        return PX_INJECT_EREFUSE;
    if (src.generated && scan_containers(p, pspec, 1) < 0)
        return PX_INJECT_EREFUSE;

    p->probes.len = 0; /* this object's targets only (a List plans several) */
    if (!keep_probes(j, tmeta) && !(tmpl != root && keep_probes(j, ometa))) {
        r = px_inject_plan_probes(j, pspec, spec, p->o, &p->ops, &p->nops, &p->probes, p->err,
                                  p->errlen);
        if (r != 0)
            return r;
    }
    r = plan_init(p, pspec, spec, &src);
    if (r == 0)
        r = plan_volumes(p, pspec, spec, &src);
    if (r != 0)
        return r;
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

void px_inject_fill_ident(const struct certs_json *j, int root, const char *ns_hint,
                          struct px_inject_result *res)
{
    int meta = certs_json_get(j, root, "metadata");
    (void)px_inject_get_str(j, root, "kind", res->kind, sizeof(res->kind));
    if (certs_json_is_obj(j, meta)) {
        if (px_inject_get_str(j, meta, "name", res->name, sizeof(res->name)) != 0 ||
            res->name[0] == '\0')
            (void)px_inject_get_str(j, meta, "generateName", res->name, sizeof(res->name));
        (void)px_inject_get_str(j, meta, "namespace", res->ns, sizeof(res->ns));
    }
    if (ns_hint != NULL && ns_hint[0] != '\0')
        snprintf(res->ns, sizeof(res->ns), "%s", ns_hint);
}

/* Plans the object at token root into res->patch. */
int px_inject_plan_into(const struct certs_json *j, int root, const char *ns_hint,
                        const struct px_inject_opts *o, struct px_inject_result *res, char *err,
                        size_t errlen)
{
    struct plan p;
    struct px_sbuf patch = {0};
    int rc;

    memset(&p, 0, sizeof(p));
    p.j = j;
    p.o = o;
    p.err = err;
    p.errlen = errlen;
    px_inject_fill_ident(j, root, ns_hint, res);
    rc = plan_object(&p, root, "", ns_hint, 0);
    if (rc == 0) {
        px_sb_add(&patch, "[", 1);
        if (p.ops.len > 0)
            px_sb_add(&patch, p.ops.p, p.ops.len);
        px_sb_add(&patch, "]", 1);
        if (patch.oom || p.ops.oom)
            rc = PX_INJECT_ENOMEM;
    }
    px_sb_free(&p.ops);
    px_sb_free(&p.probes);
    if (rc != 0) {
        px_sb_free(&patch);
        if (rc == PX_INJECT_ENOMEM)
            snprintf(err, errlen, "out of memory");
        return rc;
    }
    res->patch = patch.p;
    res->patch_len = patch.len;
    res->reason = p.nobj > 0 ? p.first : PX_INJECT_NOT_WORKLOAD;
    res->injected = p.injected;
    res->skipped = p.skipped;
    snprintf(res->note, sizeof(res->note), "%s", p.note);
    return 0;
}

int px_inject_patch(const char *js, size_t len, const struct px_inject_opts *o,
                    struct px_inject_result *res, char *err, size_t errlen)
{
    struct certs_json j;
    int rc;
    memset(res, 0, sizeof(*res));
    rc = px_inject_parse_doc(&j, js, len, PX_INJECT_MAX_TOKENS, err, errlen);
    if (rc != 0)
        return rc;
    rc = px_inject_plan_into(&j, 0, NULL, o, res, err, errlen);
    certs_json_clear(&j);
    return rc;
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
