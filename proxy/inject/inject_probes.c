/*
 * inject_probes.c - the app's kubelet probes through picket's probes
 * listener (issue 17; proxy/README.md "App probes and metrics for
 * scraping"). Pure, as inject.h promises.
 *
 * The kubelet probes the pod's IP without a client certificate, while the
 * app behind picket listens on loopback. For each app container (spec
 * .containers) the livenessProbe, readinessProbe and startupProbe of kind
 * httpGet, tcpSocket or grpc become an httpGet on picket's probes port at
 * /app-health/<container>/<livez|readyz|startupz>, every other member
 * (timings, thresholds, terminationGracePeriodSeconds) copied verbatim; the
 * original handler becomes a probe target in the sidecar's
 * PICKET_APP_PROBES (same shape as probes.targets):
 *   httpGet   {"http": "<scheme>://<host or 127.0.0.1>:<port><path>",
 *              "headers": {...httpHeaders}, "timeout": "<timeoutSeconds>s"}
 *   tcpSocket {"tcp": "<host or 127.0.0.1>:<port>", "timeout": ...}
 *   grpc      {"grpc": "127.0.0.1:<port>", "service": "...", "timeout": ...}
 * A named port is resolved from the container's ports; a name it does not
 * have is refused (the kubelet would fail that probe forever). exec probes
 * stay as they are: they run inside the container.
 *
 * Each target is checked with picket's own config parser
 * (px_config_add_probe_targets) before anything is emitted, so a probe
 * picket could not run (a header it refuses, a path with a '#') refuses
 * the injection with the reason instead of a sidecar that exits at start.
 *
 * Each rewritten probe is one "replace" of the whole probe object: JSON
 * Patch has no way to change a member's name (tcpSocket -> httpGet) in one
 * op, and "remove" is not among the applier's ops (inject_patch.c).
 */
#include "inject_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

#define URL_MAX 2600 /* scheme, host, port and picket's 2048-byte path limit */

static const struct {
    const char *field, *suffix;
} probe_kinds[] = {
    {"livenessProbe", "livez"},
    {"readinessProbe", "readyz"},
    {"startupProbe", "startupz"},
};

static const char *const handlers[] = {"httpGet", "tcpSocket", "grpc", "exec"};

struct pctx {
    const struct certs_json *j;
    const struct px_inject_opts *o;
    struct px_sbuf *ops;
    int *nops;
    struct px_sbuf *targets; /* "name":{...},... (no braces) */
    int ntargets;
    char *err;
    size_t errlen;
};

/* The port of handler object h: a number, or the name of one of container
 * ctr's ports. 0 with *port set, else PX_INJECT_EINPUT / EREFUSE with err. */
static int handler_port(struct pctx *c, int ctr, int h, const char *where, int *port)
{
    const struct certs_json *j = c->j;
    int v = certs_json_get(j, h, "port"), ports;
    char name[64];
    int64_t n;

    if (certs_json_int(j, v, &n) == 0) {
        if (n < 1 || n > 65535) {
            certs_json_errf(j, v, c->err, c->errlen, "%s.port: expected 1..65535", where);
            return PX_INJECT_EINPUT;
        }
        *port = (int)n;
        return 0;
    }
    if (certs_json_str(j, v, name, sizeof(name)) <= 0) {
        certs_json_errf(j, v >= 0 ? v : h, c->err, c->errlen,
                        "%s.port: expected a port number or name", where);
        return PX_INJECT_EINPUT;
    }
    ports = certs_json_get(j, ctr, "ports");
    if (certs_json_is_arr(j, ports))
        for (int q = certs_json_first(j, ports); q > 0; q = certs_json_next_elem(j, q))
            if (certs_json_eq(j, certs_json_get(j, q, "name"), name) &&
                certs_json_int(j, certs_json_get(j, q, "containerPort"), &n) == 0 && n >= 1 &&
                n <= 65535) {
                *port = (int)n;
                return 0;
            }
    certs_json_errf(j, v, c->err, c->errlen,
                    "%s.port: \"%s\" is not the name of one of the container's ports", where, name);
    return PX_INJECT_EREFUSE;
}

/* "host:port" (IPv6 in brackets) of handler h: its host, or 127.0.0.1. */
static int handler_hostport(struct pctx *c, int h, const char *where, int port, char *out, size_t n)
{
    const struct certs_json *j = c->j;
    int v = certs_json_get(j, h, "host");
    char host[256] = "127.0.0.1";

    if (v >= 0 && (certs_json_str(j, v, host, sizeof(host)) < 0 || strchr(host, '[') != NULL)) {
        certs_json_errf(j, v, c->err, c->errlen, "%s.host: expected a host name or address", where);
        return PX_INJECT_EINPUT;
    }
    if (host[0] == '\0')
        snprintf(host, sizeof(host), "127.0.0.1");
    snprintf(out, n, strchr(host, ':') != NULL ? "[%s]:%d" : "%s:%d", host, port);
    return 0;
}

/* httpHeaders [{name, value}] as a "headers" object member. */
static int emit_headers(struct pctx *c, int h, const char *where, struct px_sbuf *t)
{
    const struct certs_json *j = c->j;
    int arr = certs_json_get(j, h, "httpHeaders"), n = 0;

    if (arr < 0)
        return 0;
    if (!certs_json_is_arr(j, arr)) {
        certs_json_errf(j, arr, c->err, c->errlen, "%s.httpHeaders: expected an array", where);
        return PX_INJECT_EINPUT;
    }
    if (j->tok[arr].size == 0)
        return 0;
    px_sb_puts(t, ",\"headers\":{");
    for (int e = certs_json_first(j, arr); e > 0; e = certs_json_next_elem(j, e)) {
        int nm = certs_json_get(j, e, "name"), vl = certs_json_get(j, e, "value");
        const char *p;
        size_t len;
        if (!certs_json_is_str(j, nm) || !certs_json_is_str(j, vl)) {
            certs_json_errf(j, e, c->err, c->errlen,
                            "%s.httpHeaders: expected {\"name\": ..., \"value\": ...}", where);
            return PX_INJECT_EINPUT;
        }
        /* a name given twice cannot be one member: the parser check below
         * refuses it as a duplicate key, with the place */
        px_inject_tok_raw(j, nm, &p, &len);
        if (n++ > 0)
            px_sb_add(t, ",", 1);
        px_sb_add(t, p, len);
        px_sb_add(t, ":", 1);
        px_inject_tok_raw(j, vl, &p, &len);
        px_sb_add(t, p, len);
    }
    px_sb_puts(t, "}");
    return 0;
}

/* The target of handler h (kind k: 0 httpGet, 1 tcpSocket, 2 grpc) into t
 * as an object. */
static int emit_target(struct pctx *c, int ctr, int probe, int h, int k, const char *where,
                       struct px_sbuf *t)
{
    const struct certs_json *j = c->j;
    char hp[300], url[URL_MAX], path[2100] = "/", scheme[16] = "HTTP", svc[600] = "";
    int port = 0, rc, v;
    int64_t tmo = 1;

    rc = handler_port(c, ctr, h, where, &port);
    if (rc != 0)
        return rc;
    v = certs_json_get(j, probe, "timeoutSeconds");
    if (v >= 0 && (certs_json_int(j, v, &tmo) != 0 || tmo < 1)) {
        certs_json_errf(j, v, c->err, c->errlen, "timeoutSeconds: expected a positive integer");
        return PX_INJECT_EINPUT;
    }
    if (tmo > 600)
        tmo = 600; /* picket's bound on a probe; the kubelet gives up by then anyway */
    if (k == 2) {
        snprintf(hp, sizeof(hp), "127.0.0.1:%d", port);
        v = certs_json_get(j, h, "service");
        if (v >= 0 && certs_json_str(j, v, svc, sizeof(svc)) < 0) {
            certs_json_errf(j, v, c->err, c->errlen, "%s.service: expected a string", where);
            return PX_INJECT_EINPUT;
        }
        px_sb_printf(t, "{\"grpc\":\"%s\",\"service\":", hp);
        px_sb_json_str(t, svc, strlen(svc));
    } else if ((rc = handler_hostport(c, h, where, port, hp, sizeof(hp))) != 0) {
        return rc;
    } else if (k == 1) {
        px_sb_puts(t, "{\"tcp\":");
        px_sb_json_str(t, hp, strlen(hp));
    } else {
        v = certs_json_get(j, h, "scheme");
        if (v >= 0 && (certs_json_str(j, v, scheme, sizeof(scheme)) < 0 ||
                       (strcmp(scheme, "HTTP") != 0 && strcmp(scheme, "HTTPS") != 0))) {
            certs_json_errf(j, v, c->err, c->errlen, "%s.scheme: expected HTTP or HTTPS", where);
            return PX_INJECT_EINPUT;
        }
        v = certs_json_get(j, h, "path");
        if (v >= 0 && certs_json_str(j, v, path + 1, sizeof(path) - 1) < 0) {
            certs_json_errf(j, v, c->err, c->errlen,
                            "%s.path: expected a string of at most "
                            "2048 bytes",
                            where);
            return PX_INJECT_EINPUT;
        }
        snprintf(url, sizeof(url), "%s://%s%s", scheme[4] == 'S' ? "https" : "http", hp,
                 path[1] == '/' ? path + 1 : path);
        px_sb_puts(t, "{\"http\":");
        px_sb_json_str(t, url, strlen(url));
        if ((rc = emit_headers(c, h, where, t)) != 0)
            return rc;
    }
    px_sb_printf(t, ",\"timeout\":\"%llds\"}", (long long)tmo);
    return 0;
}

/* "<name>:L:C: message" from the config parser without its position. */
static const char *parser_msg(const char *e)
{
    const char *p = strchr(e, ':');
    for (int i = 0; p != NULL && i < 2; i++)
        p = strchr(p + 1, ':');
    return p != NULL ? p + 2 : e;
}

/* Checks target `name` -> t with picket's own parser. */
static int check_target(struct pctx *c, int probe, const char *name, const struct px_sbuf *t)
{
    struct px_sbuf doc = {0};
    struct px_config *cfg = px_config_new_empty();
    char e[512];
    int rc = 0;

    px_sb_puts(&doc, "{");
    px_sb_json_str(&doc, name, strlen(name));
    px_sb_puts(&doc, ":");
    px_sb_add(&doc, t->p != NULL ? t->p : "", t->len);
    px_sb_puts(&doc, "}");
    if (cfg == NULL || doc.oom || t->oom) {
        rc = PX_INJECT_ENOMEM;
    } else if (px_config_add_probe_targets(cfg, "probe", doc.p, doc.len, e, sizeof(e)) != 0) {
        certs_json_errf(c->j, probe, c->err, c->errlen, "picket cannot run this probe: %s",
                        parser_msg(e));
        rc = PX_INJECT_EREFUSE;
    }
    px_config_free(cfg);
    px_sb_free(&doc);
    return rc;
}

/* The probe at token probe (field kind of container ci named cname). */
static int plan_probe(struct pctx *c, int ctr, int ci, const char *cname, int probe, size_t kind,
                      const char *spec)
{
    const struct certs_json *j = c->j;
    char where[128], name[PX_PROBE_NAME_MAX + 1], suffix[160], hpath[200];
    struct px_sbuf t = {0};
    int h = -1, k = -1, rc;

    if (!certs_json_is_obj(j, probe)) {
        certs_json_errf(j, probe, c->err, c->errlen, "%s: expected an object",
                        probe_kinds[kind].field);
        return PX_INJECT_EINPUT;
    }
    for (int i = 0; i < 4; i++) {
        int v = certs_json_get(j, probe, handlers[i]);
        if (v < 0)
            continue;
        if (h >= 0) {
            certs_json_errf(j, v, c->err, c->errlen, "%s: more than one handler",
                            probe_kinds[kind].field);
            return PX_INJECT_EINPUT;
        }
        h = v;
        k = i;
    }
    if (h < 0 || k == 3)
        return 0; /* exec (or no handler, which the API server refuses): left alone */
    if (!certs_json_is_obj(j, h)) {
        certs_json_errf(j, h, c->err, c->errlen, "%s.%s: expected an object",
                        probe_kinds[kind].field, handlers[k]);
        return PX_INJECT_EINPUT;
    }
    snprintf(where, sizeof(where), "%s.%s", probe_kinds[kind].field, handlers[k]);
    snprintf(name, sizeof(name), "%s/%s", cname, probe_kinds[kind].suffix);
    rc = emit_target(c, ctr, probe, h, k, where, &t);
    if (rc == 0)
        rc = check_target(c, probe, name, &t);
    if (rc == 0 && ++c->ntargets > PX_PROBE_MAX_TARGETS) {
        certs_json_errf(j, probe, c->err, c->errlen, "more than %d probes to rewrite",
                        PX_PROBE_MAX_TARGETS);
        rc = PX_INJECT_EREFUSE;
    }
    if (rc != 0) {
        px_sb_free(&t);
        return rc;
    }
    px_sb_add(c->targets, c->targets->len > 0 ? "," : "", c->targets->len > 0 ? 1 : 0);
    px_sb_json_str(c->targets, name, strlen(name));
    px_sb_add(c->targets, ":", 1);
    px_sb_add(c->targets, t.p, t.len);
    px_sb_free(&t);

    /* the probe, its handler replaced, everything else as it was */
    snprintf(suffix, sizeof(suffix), "/containers/%d/%s", ci, probe_kinds[kind].field);
    px_inject_op_begin(c->ops, c->nops, "replace", spec, suffix);
    snprintf(hpath, sizeof(hpath), "/app-health/%s", name);
    px_sb_puts(c->ops, "{\"httpGet\":{\"path\":");
    px_sb_json_str(c->ops, hpath, strlen(hpath));
    px_sb_printf(c->ops, ",\"port\":%d,\"scheme\":\"HTTP\"}", c->o->probes_port);
    for (int m = certs_json_first(j, probe); m > 0; m = certs_json_next_key(j, m)) {
        const char *p;
        size_t len;
        int skip = 0;
        for (int i = 0; i < 4; i++)
            skip |= certs_json_eq(j, m, handlers[i]);
        if (skip)
            continue;
        px_inject_tok_raw(j, m, &p, &len);
        px_sb_add(c->ops, ",", 1);
        px_sb_add(c->ops, p, len);
        px_sb_add(c->ops, ":", 1);
        px_inject_tok_raw(j, m + 1, &p, &len);
        px_sb_add(c->ops, p, len);
    }
    px_sb_puts(c->ops, "}}");
    return 0;
}

int px_inject_plan_probes(const struct certs_json *j, int pspec, const char *spec,
                          const struct px_inject_opts *o, struct px_sbuf *ops, int *nops,
                          struct px_sbuf *targets, char *err, size_t errlen)
{
    struct pctx c = {j, o, ops, nops, targets, 0, err, errlen};
    int ctrs = certs_json_get(j, pspec, "containers"), ci = 0;

    for (int ctr = certs_json_first(j, ctrs); ctr > 0; ctr = certs_json_next_elem(j, ctr), ci++) {
        char cname[64];
        int have = 0;
        for (size_t kind = 0; kind < 3; kind++)
            have |= certs_json_get(j, ctr, probe_kinds[kind].field) >= 0;
        if (!have)
            continue;
        if (certs_json_str(j, certs_json_get(j, ctr, "name"), cname, sizeof(cname)) <= 0) {
            certs_json_errf(j, ctr, err, errlen,
                            "containers[%d].name: expected a container "
                            "name",
                            ci);
            return PX_INJECT_EINPUT;
        }
        for (size_t kind = 0; kind < 3; kind++) {
            int probe = certs_json_get(j, ctr, probe_kinds[kind].field), rc;
            if (probe < 0 ||
                (j->tok[probe].type == JSMN_PRIMITIVE && j->js[j->tok[probe].start] == 'n'))
                continue; /* absent or null */
            rc = plan_probe(&c, ctr, ci, cname, probe, kind, spec);
            if (rc != 0)
                return rc;
        }
    }
    return ops->oom || targets->oom ? PX_INJECT_ENOMEM : 0;
}
