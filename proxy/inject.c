/*
 * inject.c - sidecar injection core: the injector config, the JSON Patch
 * that turns a pod (or a workload's pod template) into one with picket as
 * a native sidecar, and the AdmissionReview request/response mapping. The
 * applier, formatter and strict reader are in inject_patch.c.
 *
 * Everything here is pure (see inject.h). Documents are read through
 * certs_json (strict RFC 8259, duplicate keys refused, nesting capped at
 * 64) after a size check, so a hostile review costs at most
 * PX_INJECT_MAX_BYTES plus a fixed token budget.
 *
 * Patches never point into a value an earlier op of the same patch added
 * (a missing initContainers, volumes or annotations is added whole), so
 * they apply in one pass with any RFC 6902 implementation, in order.
 */
#include "inject.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "certs_json.h"

#define NAME_MAX_LEN 253 /* DNS-1123 subdomain */
#define APP_TOKEN "<app>"

/* ---- small token helpers ---------------------------------------------- */

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
    o->config_map = APP_TOKEN "-picket";
    o->svid_volume = PX_INJECT_DEFAULT_SVID_VOLUME;
    o->inbound_port = 15443;
    o->admin_port = 15000;
    o->drain_timeout_s = 20;
    o->run_as_user = 65532;
    o->exclude_ns[0] = "kube-system";
    o->exclude_ns[1] = "kube-public";
    o->nexclude_ns = 2;
}

void px_inject_opts_free(struct px_inject_opts *o)
{
    for (size_t i = 0; i < o->nowned; i++)
        free(o->owned[i]);
    px_inject_opts_init(o);
}

/* tmpl with every "<app>" replaced by app. -1 if it does not fit. */
static int subst_app(const char *tmpl, const char *app, char *out, size_t n)
{
    size_t o = 0, al = strlen(app);
    for (const char *s = tmpl; *s != '\0';) {
        if (strncmp(s, APP_TOKEN, sizeof(APP_TOKEN) - 1) == 0) {
            if (o + al >= n)
                return -1;
            memcpy(out + o, app, al);
            o += al;
            s += sizeof(APP_TOKEN) - 1;
        } else {
            if (o + 1 >= n)
                return -1;
            out[o++] = *s++;
        }
    }
    out[o] = '\0';
    return 0;
}

static int template_ok(const char *tmpl)
{
    char buf[NAME_MAX_LEN + 1];
    return subst_app(tmpl, "app", buf, sizeof(buf)) == 0 && dns1123_ok(buf);
}

/* A JSON object given as text (resources, proxy_config, svid_volume): -1
 * unless it parses strictly as an object with at least min_members. */
static int json_obj_ok(const char *s, int min_members, int *members)
{
    struct certs_json j;
    char err[128];
    int ok;
    if (certs_json_parse(&j, s, strlen(s), 16384, err, sizeof(err)) != 0)
        return -1;
    ok = certs_json_is_obj(&j, 0) && j.tok[0].size >= min_members;
    if (members != NULL)
        *members = ok ? j.tok[0].size : 0;
    if (ok && members != NULL && certs_json_get(&j, 0, "name") >= 0)
        ok = 0; /* a volume source must not carry its own name */
    certs_json_clear(&j);
    return ok ? 0 : -1;
}

int px_inject_opts_check(const struct px_inject_opts *o, char *err, size_t errlen)
{
    size_t n = o->image ? strlen(o->image) : 0;
    int members = 0;
    if (n == 0 || n > 512) {
        snprintf(err, errlen, "image: expected 1 to 512 characters");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)o->image[i] <= 0x20 || (unsigned char)o->image[i] >= 0x7f) {
            snprintf(err, errlen, "image: no spaces or control characters allowed");
            return -1;
        }
    if (o->config_map != NULL && !template_ok(o->config_map)) {
        snprintf(err, errlen, "config map: \"%s\" is not a valid name (lowercase DNS-1123; "
                              "\"<app>\" stands for the app's name)", o->config_map);
        return -1;
    }
    if (o->svid_secret != NULL && !template_ok(o->svid_secret)) {
        snprintf(err, errlen, "svid secret: \"%s\" is not a valid name (lowercase DNS-1123; "
                              "\"<app>\" stands for the app's name)", o->svid_secret);
        return -1;
    }
    if (o->resources != NULL && json_obj_ok(o->resources, 0, NULL) != 0) {
        snprintf(err, errlen, "resources: expected a JSON object");
        return -1;
    }
    if (o->proxy_config != NULL && json_obj_ok(o->proxy_config, 1, NULL) != 0) {
        snprintf(err, errlen, "proxy_config: expected a non-empty JSON object");
        return -1;
    }
    if (o->svid_volume == NULL || json_obj_ok(o->svid_volume, 1, &members) != 0 || members != 1) {
        snprintf(err, errlen, "svid_volume: expected a volume source object with exactly one "
                              "member and no name, e.g. {\"csi\": {...}}");
        return -1;
    }
    if (o->inbound_port < 1 || o->inbound_port > 65535 || o->admin_port < 1 ||
        o->admin_port > 65535 || o->inbound_port == o->admin_port) {
        snprintf(err, errlen, "ports: expected two different ports in 1..65535");
        return -1;
    }
    if (o->drain_timeout_s < 0 || o->drain_timeout_s > 3600) {
        snprintf(err, errlen, "drain timeout: expected 0s..1h");
        return -1;
    }
    if (o->run_as_user < 1 || o->run_as_user > 2147483647) {
        snprintf(err, errlen, "run_as_user: expected a non-root user id (1..2147483647)");
        return -1;
    }
    return 0;
}

/* ---- the injector config file ------------------------------------------ */

static char *own(struct px_inject_opts *o, char *s)
{
    if (s == NULL)
        return NULL;
    if (o->nowned >= PX_INJECT_MAX_OWNED) {
        free(s);
        return NULL;
    }
    o->owned[o->nowned++] = s;
    return s;
}

/* Value token v (an object) re-emitted compact, owned by o. */
static char *own_json(struct px_inject_opts *o, const struct certs_json *j, int v)
{
    size_t s = (size_t)j->tok[v].start, e = (size_t)j->tok[v].end, n;
    char *out = NULL;
    if (px_json_format(j->js + s, e - s, 0, &out, &n) != 0)
        return NULL;
    out[n - 1] = '\0'; /* the trailing newline */
    return own(o, out);
}

static int cfg_port(const struct certs_json *j, int v, const char *key, int *out, char *err,
                    size_t errlen)
{
    int64_t x;
    if (certs_json_int(j, v, &x) != 0 || x < 1 || x > 65535)
        return certs_json_errf(j, v, err, errlen, "%s: expected a port number", key);
    *out = (int)x;
    return 0;
}

static int cfg_member(struct px_inject_opts *o, const struct certs_json *j, const char *key,
                      int v, char *err, size_t errlen)
{
    static const char *const strs[] = {"image", "config_map", "svid_secret"};
    static const char *const objs[] = {"resources", "proxy_config", "svid_volume"};
    const char **sdst[] = {&o->image, &o->config_map, &o->svid_secret};
    const char **odst[] = {&o->resources, &o->proxy_config, &o->svid_volume};
    int64_t x;

    for (size_t i = 0; i < 3; i++) {
        if (strcmp(key, strs[i]) == 0) {
            if (!certs_json_is_str(j, v))
                return certs_json_errf(j, v, err, errlen, "%s: expected a string", key);
            if ((*sdst[i] = own(o, certs_json_strdup(j, v))) == NULL)
                return certs_json_errf(j, v, err, errlen, "%s: bad string", key);
            return 0;
        }
        if (strcmp(key, objs[i]) == 0) {
            if (!certs_json_is_obj(j, v))
                return certs_json_errf(j, v, err, errlen, "%s: expected an object", key);
            if ((*odst[i] = own_json(o, j, v)) == NULL)
                return certs_json_errf(j, v, err, errlen, "%s: out of memory", key);
            return 0;
        }
    }
    if (strcmp(key, "inbound_port") == 0)
        return cfg_port(j, v, key, &o->inbound_port, err, errlen);
    if (strcmp(key, "admin_port") == 0)
        return cfg_port(j, v, key, &o->admin_port, err, errlen);
    if (strcmp(key, "run_as_user") == 0) {
        if (certs_json_int(j, v, &x) != 0 || x < 1 || x > 2147483647)
            return certs_json_errf(j, v, err, errlen,
                                   "run_as_user: expected a non-root user id (1..2147483647)");
        o->run_as_user = (long long)x;
        return 0;
    }
    if (strcmp(key, "drain_timeout") == 0) {
        char d[32];
        if (certs_json_str(j, v, d, sizeof(d)) < 0 || certs_duration_parse(d, strlen(d), &x) != 0 ||
            x > 3600000)
            return certs_json_errf(j, v, err, errlen,
                                   "drain_timeout: expected a duration up to 1h (e.g. \"20s\")");
        o->drain_timeout_s = (int)((x + 999) / 1000);
        return 0;
    }
    if (strcmp(key, "malformed_review") == 0) {
        if (certs_json_eq(j, v, "allow"))
            o->malformed_allow = 1;
        else if (certs_json_eq(j, v, "error"))
            o->malformed_allow = 0;
        else
            return certs_json_errf(j, v, err, errlen,
                                   "malformed_review: expected \"allow\" or \"error\"");
        return 0;
    }
    if (strcmp(key, "exclude_namespaces") == 0) {
        if (!certs_json_is_arr(j, v) || j->tok[v].size > PX_INJECT_MAX_EXCLUDED_NS)
            return certs_json_errf(j, v, err, errlen,
                                   "exclude_namespaces: expected an array of at most %d "
                                   "namespaces", PX_INJECT_MAX_EXCLUDED_NS);
        o->nexclude_ns = 0;
        for (int e = certs_json_first(j, v); e > 0; e = certs_json_next_elem(j, e)) {
            char *ns = certs_json_is_str(j, e) ? certs_json_strdup(j, e) : NULL;
            if (ns == NULL || ns[0] == '\0' || strlen(ns) > 63) {
                free(ns);
                return certs_json_errf(j, e, err, errlen,
                                       "exclude_namespaces: expected namespace names");
            }
            if (own(o, ns) == NULL)
                return certs_json_errf(j, e, err, errlen, "exclude_namespaces: too many");
            o->exclude_ns[o->nexclude_ns++] = ns;
        }
        return 0;
    }
    return -2;
}

int px_inject_config_load(struct px_inject_opts *o, const char *js, size_t len, char *err,
                          size_t errlen)
{
    struct certs_json j;
    int rc = 0, cm = -1, pc = -1, sv = -1, ss = -1;
    if (len > PX_INJECT_CONFIG_MAX_BYTES) {
        snprintf(err, errlen, "1:1: injector config too large (limit %u bytes)",
                 PX_INJECT_CONFIG_MAX_BYTES);
        return PX_INJECT_EINPUT;
    }
    if (px_inject_parse_doc(&j, js, len, 16384, err, errlen) != 0)
        return PX_INJECT_EINPUT;
    for (int k = certs_json_first(&j, 0); k > 0 && rc == 0; k = certs_json_next_key(&j, k)) {
        char key[64];
        if (certs_json_str(&j, k, key, sizeof(key)) < 0)
            key[0] = '\0';
        rc = cfg_member(o, &j, key, k + 1, err, errlen);
        if (rc == -2)
            rc = certs_json_errf(&j, k, err, errlen,
                                 "unknown key \"%.60s\" (expected image, resources, config_map, "
                                 "proxy_config, svid_volume, svid_secret, inbound_port, "
                                 "admin_port, drain_timeout, run_as_user, malformed_review, "
                                 "exclude_namespaces)", key);
    }
    if (rc == 0) {
        cm = certs_json_get(&j, 0, "config_map");
        pc = certs_json_get(&j, 0, "proxy_config");
        sv = certs_json_get(&j, 0, "svid_volume");
        ss = certs_json_get(&j, 0, "svid_secret");
        if (cm >= 0 && pc >= 0)
            rc = certs_json_errf(&j, pc, err, errlen,
                                 "config_map and proxy_config are mutually exclusive");
        else if (sv >= 0 && ss >= 0)
            rc = certs_json_errf(&j, ss, err, errlen,
                                 "svid_volume and svid_secret are mutually exclusive");
    }
    if (rc == 0 && px_inject_opts_check(o, err, errlen) != 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", err);
        rc = certs_json_errf(&j, 0, err, errlen, "%s", msg);
    }
    certs_json_clear(&j);
    return rc == 0 ? 0 : PX_INJECT_EINPUT;
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
    case PX_INJECT_MALFORMED:
        return "malformed";
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
    struct px_sbuf ops; /* "op,op,..." without the brackets */
    int nops;
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
};

/* Starts {"op":op,"path":prefix+suffix,"value": ; the caller writes the
 * value and the closing brace. Pointers are built from fixed segments and
 * ptr_escape()d keys, so they need no JSON escaping. */
static void op_begin(struct plan *p, const char *op, const char *prefix, const char *suffix)
{
    px_sb_puts(&p->ops, p->nops++ ? "," : "");
    px_sb_printf(&p->ops, "{\"op\":\"%s\",\"path\":\"", op);
    px_sb_puts(&p->ops, prefix);
    px_sb_puts(&p->ops, suffix);
    px_sb_puts(&p->ops, "\",\"value\":");
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
                    (v == p->o->inbound_port || v == p->o->admin_port))
                    return certs_json_errf(j, pt, p->err, p->errlen,
                                           "containerPort %lld is picket's; change the app's "
                                           "port or picket's inbound_port/admin_port",
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
    if (certs_json_is_obj(j, ometa) && get_str(j, ometa, "name", buf, n) == 0 && buf[0] != '\0')
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
            if (subst_app(tmpl, app, buf, n) != 0)
                buf[0] = '\0';
        }
    }
    if (!dns1123_ok(buf))
        return certs_json_errf(p->j, root, p->err, p->errlen,
                               "%s name \"%.80s\" is not a valid lowercase DNS-1123 name", what,
                               buf);
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
static void emit_sidecar(struct plan *p)
{
    const struct px_inject_opts *o = p->o;
    px_sb_puts(&p->ops, "{\"name\":\"picket\",\"image\":");
    px_sb_json_str(&p->ops, o->image, strlen(o->image));
    px_sb_puts(&p->ops, ",\"restartPolicy\":\"Always\"");
    /* Kubernetes expands $(VAR) in args from the container's env. */
    px_sb_puts(&p->ops, ",\"args\":[\"run\",\"-c\",\"" PX_INJECT_CONFIG_FILE "\","
                        "\"--node-id\",\"$(PICKET_NODE_ID)\"]");
    px_sb_puts(&p->ops, ",\"env\":[{\"name\":\"POD_NAMESPACE\",\"valueFrom\":{\"fieldRef\":"
                        "{\"fieldPath\":\"metadata.namespace\"}}},"
                        "{\"name\":\"POD_NAME\",\"valueFrom\":{\"fieldRef\":"
                        "{\"fieldPath\":\"metadata.name\"}}},"
                        "{\"name\":\"PICKET_NODE_ID\","
                        "\"value\":\"$(POD_NAMESPACE)/$(POD_NAME)\"}]");
    px_sb_printf(&p->ops, ",\"ports\":[{\"containerPort\":%d,\"name\":\"picket-mtls\","
                          "\"protocol\":\"TCP\"}]",
                 o->inbound_port);
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
                        "\"mountPath\":\"" PX_INJECT_SVID_DIR "\",\"readOnly\":true}]");
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

/* Init containers: the array added whole when absent or null, else appended
 * to. 0 or PX_INJECT_EINPUT. */
static int plan_init(struct plan *p, int pspec, const char *spec, const struct sources *s)
{
    const struct certs_json *j = p->j;
    int ic = certs_json_get(j, pspec, "initContainers");
    if (ic < 0 || is_null(j, ic)) {
        op_begin(p, "add", spec, "/initContainers");
        px_sb_puts(&p->ops, "[");
        if (s->generated) {
            emit_writer(p);
            px_sb_puts(&p->ops, ",");
        }
        emit_sidecar(p);
        px_sb_puts(&p->ops, "]}");
        return 0;
    }
    if (!certs_json_is_arr(j, ic)) {
        certs_json_errf(j, ic, p->err, p->errlen, "initContainers: expected an array");
        return PX_INJECT_EINPUT;
    }
    if (s->generated) {
        op_begin(p, "add", spec, "/initContainers/-");
        emit_writer(p);
        px_sb_puts(&p->ops, "}");
    }
    op_begin(p, "add", spec, "/initContainers/-");
    emit_sidecar(p);
    px_sb_puts(&p->ops, "}");
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

/* The annotation goes on the pod (template) metadata; whatever is missing
 * on the way is added whole. */
static int plan_annotation(struct plan *p, int tmeta, const char *tprefix)
{
    const struct certs_json *j = p->j;
    char seg[64], suffix[96];
    int ann;
    if (tmeta < 0 || is_null(j, tmeta)) {
        op_begin(p, "add", tprefix, "/metadata");
        px_sb_puts(&p->ops, "{\"annotations\":{\"picket.dev/injected\":\"true\"}}}");
        return 0;
    }
    if (!certs_json_is_obj(j, tmeta))
        return certs_json_errf(j, tmeta, p->err, p->errlen, "metadata: expected an object");
    ann = certs_json_get(j, tmeta, "annotations");
    if (ann < 0 || is_null(j, ann)) {
        op_begin(p, "add", tprefix, "/metadata/annotations");
        px_sb_puts(&p->ops, "{\"picket.dev/injected\":\"true\"}}");
        return 0;
    }
    if (!certs_json_is_obj(j, ann))
        return certs_json_errf(j, ann, p->err, p->errlen, "annotations: expected an object");
    ptr_escape(seg, sizeof(seg), "picket.dev/injected");
    snprintf(suffix, sizeof(suffix), "/metadata/annotations/%s", seg);
    op_begin(p, "add", tprefix, suffix);
    px_sb_puts(&p->ops, "\"true\"}");
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
    if (injected_annotation(j, tmeta) || (tmpl != root && injected_annotation(j, ometa))) {
        why = PX_INJECT_ALREADY;
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

static void fill_ident(const struct certs_json *j, int root, const char *ns_hint,
                       struct px_inject_result *res)
{
    int meta = certs_json_get(j, root, "metadata");
    (void)get_str(j, root, "kind", res->kind, sizeof(res->kind));
    if (certs_json_is_obj(j, meta)) {
        if (get_str(j, meta, "name", res->name, sizeof(res->name)) != 0 || res->name[0] == '\0')
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
    struct px_sbuf patch = {0};
    int rc;

    memset(&p, 0, sizeof(p));
    p.j = j;
    p.o = o;
    p.err = err;
    p.errlen = errlen;
    fill_ident(j, root, ns_hint, res);
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
    rc = plan_into(&j, 0, NULL, o, res, err, errlen);
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

/* deny: 0 allowed (with the patch if any), 1 allowed unchanged with a
 * warning, 400 / 403 not allowed with that status code. */
static int review_response(struct px_sbuf *b, const char *uid, const struct px_inject_result *res,
                           int deny, const char *msg)
{
    char m[600];
    snprintf(m, sizeof(m), "picket inject: %s", msg);
    px_sb_puts(b, "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\","
                  "\"response\":{\"uid\":\"");
    px_sb_puts(b, uid);
    if (deny >= 400) {
        px_sb_printf(b, "\",\"allowed\":false,\"status\":{\"code\":%d,\"message\":", deny);
        px_sb_json_str(b, m, strlen(m));
        px_sb_puts(b, "}}}");
    } else if (deny == 1) {
        px_sb_puts(b, "\",\"allowed\":true,\"warnings\":[");
        px_sb_json_str(b, m, strlen(m));
        px_sb_puts(b, "]}}");
    } else if (res->patch != NULL && res->injected > 0) {
        size_t cap = 4 * ((res->patch_len + 2) / 3) + 1;
        char *b64 = malloc(cap);
        if (b64 == NULL)
            return PX_INJECT_ENOMEM;
        certs_b64_encode((const unsigned char *)res->patch, res->patch_len, b64);
        px_sb_puts(b, "\",\"allowed\":true,\"patchType\":\"JSONPatch\",\"patch\":\"");
        px_sb_puts(b, b64);
        px_sb_puts(b, "\"}}");
        free(b64);
    } else {
        px_sb_puts(b, "\",\"allowed\":true}}");
    }
    px_sb_add(b, "\n", 1);
    return b->oom ? PX_INJECT_ENOMEM : 0;
}

/* Reads the review down to request.object. 0 with *objp set, or -1 with
 * msg set (uid filled if it could be read). */
static int review_shape(const struct certs_json *j, char *uid, size_t uidlen, int *reqp,
                        int *objp, char *msg, size_t msglen)
{
    char ver[64];
    int req, obj;
    if (get_str(j, 0, "apiVersion", ver, sizeof(ver)) != 0 ||
        strcmp(ver, "admission.k8s.io/v1") != 0)
        return certs_json_errf(j, 0, msg, msglen, "apiVersion: expected \"admission.k8s.io/v1\"");
    if (!certs_json_eq(j, certs_json_get(j, 0, "kind"), "AdmissionReview"))
        return certs_json_errf(j, 0, msg, msglen, "kind: expected \"AdmissionReview\"");
    req = certs_json_get(j, 0, "request");
    if (!certs_json_is_obj(j, req))
        return certs_json_errf(j, req >= 0 ? req : 0, msg, msglen,
                               "request: expected an object");
    if (get_str(j, req, "uid", uid, uidlen) != 0 || !uid_ok(uid)) {
        if (uidlen > 0)
            uid[0] = '\0';
        return certs_json_errf(j, req, msg, msglen,
                               "request.uid: expected a UID (1 to 128 of [A-Za-z0-9._-])");
    }
    obj = certs_json_get(j, req, "object");
    if (!certs_json_is_obj(j, obj))
        return certs_json_errf(j, obj >= 0 ? obj : req, msg, msglen,
                               "request.object: expected an object");
    *reqp = req;
    *objp = obj;
    return 0;
}

int px_inject_review(const char *body, size_t len, const struct px_inject_opts *o, char **resp,
                     size_t *resp_len, struct px_inject_result *res, char *uid, size_t uidlen,
                     char *err, size_t errlen)
{
    struct certs_json j;
    struct px_sbuf b = {0};
    char op[32], ns[64], msg[512] = "";
    int req = -1, obj = -1, rc, deny = 0, parsed;

    *resp = NULL;
    *resp_len = 0;
    memset(res, 0, sizeof(*res));
    if (uidlen > 0)
        uid[0] = '\0';
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    parsed = px_inject_parse_doc(&j, body, len, PX_INJECT_MAX_TOKENS, msg, sizeof(msg)) == 0;
    if (!parsed || review_shape(&j, uid, uidlen, &req, &obj, msg, sizeof(msg)) != 0) {
        /* malformed: no object to inject */
        res->reason = PX_INJECT_MALFORMED;
        res->skipped = 1;
        if (!o->malformed_allow && (uidlen == 0 || uid[0] == '\0')) {
            snprintf(err, errlen, "%s", msg);
            rc = PX_INJECT_EINPUT; /* nothing to answer with: HTTP 400 */
            goto done;
        }
        deny = o->malformed_allow ? 1 : 400;
    } else {
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
                /* The webhook matched the pod but cannot inject it: deny
                 * (error) or let it through unchanged (allow), as set. */
                fill_ident(&j, obj, ns, res);
                res->reason = rc == PX_INJECT_EREFUSE ? PX_INJECT_REFUSED : PX_INJECT_MALFORMED;
                res->skipped = 1;
                deny = o->malformed_allow ? 1 : rc == PX_INJECT_EREFUSE ? 403 : 400;
            }
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
    px_sb_free(&b);
    if (parsed)
        certs_json_clear(&j);
    if (rc != 0)
        px_inject_result_clear(res);
    return rc;
}
