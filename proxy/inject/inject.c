/*
 * inject.c - sidecar injection core: the injector's options and config
 * file, and the AdmissionReview request/response mapping. The JSON Patch
 * that turns a pod (or a workload's pod template) into one with picket as
 * a native sidecar is planned in inject_plan.c; the applier, formatter and
 * strict reader are in inject_patch.c.
 *
 * Everything here is pure (see inject.h). Documents are read through
 * certs_json (strict RFC 8259, duplicate keys refused, nesting capped at
 * 64) after a size check, so a hostile review costs at most
 * PX_INJECT_MAX_BYTES plus a fixed token budget.
 */
#include "inject_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small token helpers ---------------------------------------------- */

/* String member `key` of object obj, unescaped into buf; -1 if absent,
 * not a string or too long. */
int px_inject_get_str(const struct certs_json *j, int obj, const char *key, char *buf, size_t n)
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

/* Lowercase RFC 1123 subdomain: what ConfigMap and Secret names must be. */
int px_inject_dns1123_ok(const char *s)
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
    o->probes_port = 15021;
    o->metrics_port = 15090;
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
int px_inject_subst_app(const char *tmpl, const char *app, char *out, size_t n)
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
    return px_inject_subst_app(tmpl, "app", buf, sizeof(buf)) == 0 && px_inject_dns1123_ok(buf);
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
    {
        const int ports[] = {o->inbound_port, o->admin_port, o->probes_port, o->metrics_port};
        for (size_t i = 0; i < 4; i++)
            for (size_t k = 0; k < 4; k++)
                if (ports[i] < 1 || ports[i] > 65535 || (i != k && ports[i] == ports[k])) {
                    snprintf(err, errlen, "ports: inbound_port, admin_port, probes_port and "
                                          "metrics_port must be different ports in 1..65535");
                    return -1;
                }
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
    if (strcmp(key, "probes_port") == 0)
        return cfg_port(j, v, key, &o->probes_port, err, errlen);
    if (strcmp(key, "metrics_port") == 0)
        return cfg_port(j, v, key, &o->metrics_port, err, errlen);
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
                                 "admin_port, probes_port, metrics_port, drain_timeout, "
                                 "run_as_user, malformed_review, exclude_namespaces)", key);
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
    case PX_INJECT_HOST_NETWORK:
        return "host_network";
    }
    return "unknown";
}

void px_inject_result_clear(struct px_inject_result *r)
{
    free(r->patch);
    memset(r, 0, sizeof(*r));
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
    snprintf(m, sizeof(m), "picket inject: %s", deny == 1 && res->note[0] ? res->note : msg);
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
    if (px_inject_get_str(j, 0, "apiVersion", ver, sizeof(ver)) != 0 ||
        strcmp(ver, "admission.k8s.io/v1") != 0)
        return certs_json_errf(j, 0, msg, msglen, "apiVersion: expected \"admission.k8s.io/v1\"");
    if (!certs_json_eq(j, certs_json_get(j, 0, "kind"), "AdmissionReview"))
        return certs_json_errf(j, 0, msg, msglen, "kind: expected \"AdmissionReview\"");
    req = certs_json_get(j, 0, "request");
    if (!certs_json_is_obj(j, req))
        return certs_json_errf(j, req >= 0 ? req : 0, msg, msglen,
                               "request: expected an object");
    if (px_inject_get_str(j, req, "uid", uid, uidlen) != 0 || !uid_ok(uid)) {
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
        if (px_inject_get_str(&j, req, "namespace", ns, sizeof(ns)) != 0)
            ns[0] = '\0';
        if (px_inject_get_str(&j, req, "operation", op, sizeof(op)) == 0 &&
            strcmp(op, "CREATE") != 0) {
            /* Containers of a running pod cannot be changed; only CREATE is ours. */
            px_inject_fill_ident(&j, obj, ns, res);
            res->reason = PX_INJECT_NOT_CREATE;
            res->skipped = 1;
        } else {
            rc = px_inject_plan_into(&j, obj, ns, o, res, msg, sizeof(msg));
            if (rc == PX_INJECT_ENOMEM) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            if (rc == 0 && res->note[0] != '\0' && res->injected == 0)
                deny = 1; /* left alone (hostNetwork): allowed, and the owner is told why */
            if (rc != 0) {
                /* The webhook matched the pod but cannot inject it: deny
                 * (error) or let it through unchanged (allow), as set. */
                px_inject_fill_ident(&j, obj, ns, res);
                res->reason = rc == PX_INJECT_EREFUSE ? PX_INJECT_REFUSED : PX_INJECT_MALFORMED;
                res->skipped = 1;
                deny = o->malformed_allow ? 1 : rc == PX_INJECT_EREFUSE ? 403 : 400;
            }
        }
    }
    rc = review_response(&b, uid, res, deny, msg);
    if (rc == 0) {
        if (deny)
            snprintf(err, errlen, "%s", deny == 1 && res->note[0] ? res->note : msg);
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
