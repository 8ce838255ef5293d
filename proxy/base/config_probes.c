/*
 * config_probes.c - the config sections of the listeners a kubelet and a
 * Prometheus reach (issue 17): probes (probes.bind, probes.timeout,
 * probes.targets, and the same targets from PICKET_APP_PROBES through
 * px_config_add_probe_targets()) and metrics (metrics.bind), the check that
 * no two listeners take one port, and the --probes-bind/--metrics-bind
 * overrides. The rest of the config is config.c's; the getters and error
 * helpers are config_json.c's.
 */
#include "config_int.h"

#include "authority.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A probe target's name, as it appears in /app-health/NAME: letters,
 * digits, '.', '-', '_' in '/'-separated segments, none empty, "." or "..",
 * so the path the kubelet asks for is exactly the name (no segment a URL
 * normalizer would rewrite). */
static int probe_name_ok(const char *s)
{
    size_t n = strlen(s), seg = 0;

    if (n == 0 || n > PX_PROBE_NAME_MAX)
        return 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '/') {
            if (seg == 0 || (seg == 1 && s[i - 1] == '.') ||
                (seg == 2 && s[i - 1] == '.' && s[i - 2] == '.'))
                return 0;
            seg = 0;
        } else if (!px_cfg_is_name_char(s[i])) {
            return 0;
        } else {
            seg++;
        }
    }
    return 1;
}

/* RFC 9110 token characters. */
static int tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* "http[s]://host[:port][/path][?query]" into t (host, port, authority,
 * path, url). The authority goes through the request authority parser;
 * the target must be visible ASCII without '#'. 0, or -1 with a reason in
 * why. */
static int parse_probe_url(const char *s, struct px_probe_target *t, const char **why)
{
    struct px_authority a;
    const char *rest, *end;
    size_t plen;

    if (strncmp(s, "http://", 7) == 0) {
        rest = s + 7;
    } else if (strncmp(s, "https://", 8) == 0) {
        t->tls = 1;
        rest = s + 8;
    } else {
        *why = "expected \"http://host:port/path\" or \"https://...\"";
        return -1;
    }
    end = rest + strcspn(rest, "/?");
    if (px_authority_parse(rest, (size_t)(end - rest), &a) != 0) {
        *why = "bad host or port";
        return -1;
    }
    for (const char *c = end; *c != '\0'; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || *c == '#') {
            *why = "the path must be visible ASCII without '#'";
            return -1;
        }
    plen = strlen(end);
    if (plen > 2048) {
        *why = "path longer than 2048 bytes";
        return -1;
    }
    if (a.host[0] == '[')
        t->up.host = strndup(a.host + 1, a.host_len - 2);
    else
        t->up.host = strdup(a.host);
    if (asprintf(&t->up.port, "%u", a.port != 0 ? a.port : t->tls ? 443u : 80u) < 0)
        t->up.port = NULL;
    /* Host as written in the URL, as the kubelet sends it */
    t->authority = strndup(rest, (size_t)(end - rest));
    if (asprintf(&t->path, "%s%s", *end == '/' ? "" : "/", end) < 0)
        t->path = NULL;
    t->up.url = strdup(s);
    if (t->up.host == NULL || t->up.port == NULL || t->authority == NULL || t->path == NULL ||
        t->up.url == NULL) {
        *why = "out of memory";
        return -1;
    }
    t->up.proto = PX_UP_H1;
    return 0;
}

static int parse_probe_headers(struct cp *p, int h, const char *where, struct px_probe_target *t)
{
    static const char *const banned[] = {
        "content-length", "transfer-encoding", "connection", "upgrade", "te", "keep-alive",
        "expect",         "proxy-connection",  NULL};
    char b[WHERE_MAX];
    int n = px_cfg_check_map(p, h, px_cfg_kp(b, where, "headers"));

    if (n < 0)
        return -1;
    if (n > PX_PROBE_MAX_HEADERS)
        return px_cfg_perr(p, h, "%s: at most %d fields", b, PX_PROBE_MAX_HEADERS);
    t->hdr_names = calloc((size_t)n + 1, sizeof(char *));
    t->hdr_values = calloc((size_t)n + 1, sizeof(char *));
    if (t->hdr_names == NULL || t->hdr_values == NULL)
        return px_cfg_oom(p, h);
    for (int k = certs_json_first(&p->j, h); k > 0; k = certs_json_next_key(&p->j, k)) {
        size_t i = t->nhdrs++, vl;
        const char *v;
        if (px_cfg_tok_str(p, k, b, &t->hdr_names[i]) < 0)
            return -1;
        if (!certs_json_is_str(&p->j, k + 1))
            return px_cfg_perr(p, k + 1, "%s.%s: expected a string", b, t->hdr_names[i]);
        t->hdr_values[i] = certs_json_strdup(&p->j, k + 1);
        if (t->hdr_values[i] == NULL)
            return px_cfg_oom(p, k + 1);
        for (const char *c = t->hdr_names[i]; *c != '\0'; c++)
            if (!tchar(*c))
                return px_cfg_perr(p, k, "%s: \"%.64s\" is not a field name", b, t->hdr_names[i]);
        for (size_t x = 0; banned[x] != NULL; x++)
            if (strcasecmp(t->hdr_names[i], banned[x]) == 0)
                return px_cfg_perr(p, k, "%s: %s is picket's to write", b, banned[x]);
        v = t->hdr_values[i];
        vl = strlen(v);
        if (vl > 1024 || (vl > 0 && (v[0] == ' ' || v[vl - 1] == ' ')))
            return px_cfg_perr(p, k + 1,
                               "%s.%s: at most 1024 bytes, no leading or trailing "
                               "space",
                               b, t->hdr_names[i]);
        for (; *v != '\0'; v++)
            if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
                return px_cfg_perr(p, k + 1, "%s.%s: control character in the value", b,
                                   t->hdr_names[i]);
    }
    return 0;
}

/* One probes.targets entry: key token k, its object at k + 1. */
static int parse_probe_target(struct cp *p, int k, struct px_probe_target *t)
{
    static const char *const keys[] = {"http",    "tcp",     "grpc", "service",
                                       "timeout", "headers", NULL};
    static const char *const kinds[] = {"http", "tcp", "grpc"};
    char where[WHERE_MAX], b[WHERE_MAX], *s = NULL, show[80];
    const char *why = NULL;
    int obj = k + 1, v = -1, nkinds = 0, h, rc = -1;

    if (px_cfg_tok_str(p, k, "probes.targets", &t->name) < 0)
        return -1;
    if (!probe_name_ok(t->name))
        return px_cfg_perr(p, k,
                           "probes.targets: bad name \"%s\" (letters, digits, '.', '-', '_' in "
                           "'/'-separated segments, at most %d bytes)",
                           px_cfg_show(p, k, show, sizeof(show)), PX_PROBE_NAME_MAX);
    snprintf(where, sizeof(where), "probes.targets.%s", t->name);
    if (!certs_json_is_obj(&p->j, obj))
        return px_cfg_perr(p, obj, "%s: expected an object", where);
    if (px_cfg_check_obj(p, obj, where, keys) < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        int x = certs_json_get(&p->j, obj, kinds[i]);
        if (x >= 0) {
            nkinds++;
            t->kind = (enum px_probe_kind)i;
            v = x;
        }
    }
    if (nkinds != 1)
        return px_cfg_perr(p, obj, "%s: expected exactly one of \"http\", \"tcp\", \"grpc\"",
                           where);
    if (px_cfg_tok_str(p, v, px_cfg_kp(b, where, kinds[t->kind]), &s) < 0)
        return -1;
    if (t->kind == PX_PROBE_HTTP) {
        if (parse_probe_url(s, t, &why) < 0) {
            px_cfg_perr(p, v, "%s: %s", b, why);
            goto out;
        }
    } else {
        t->up.proto = t->kind == PX_PROBE_GRPC ? PX_UP_H2C : PX_UP_H1;
        if (px_cfg_parse_hostport(s, &t->up.host, &t->up.port) < 0) {
            px_cfg_perr(p, v, "%s: expected \"host:port\"", b);
            goto out;
        }
        if (asprintf(&t->up.url, "%s://%s", t->kind == PX_PROBE_GRPC ? "h2c" : "tcp", s) < 0) {
            t->up.url = NULL;
            px_cfg_oom(p, v);
            goto out;
        }
    }
    if ((v = certs_json_get(&p->j, obj, "service")) >= 0) {
        if (t->kind != PX_PROBE_GRPC) {
            px_cfg_perr(p, v, "%s.service: only for \"grpc\" targets", where);
            goto out;
        }
        if (!certs_json_is_str(&p->j, v) || p->j.tok[v].end - p->j.tok[v].start > 512 ||
            (t->service = certs_json_strdup(&p->j, v)) == NULL) {
            px_cfg_perr(p, v, "%s.service: expected a string of at most 512 bytes", where);
            goto out;
        }
    } else if (t->kind == PX_PROBE_GRPC && (t->service = strdup("")) == NULL) {
        px_cfg_oom(p, obj);
        goto out;
    }
    if ((h = certs_json_get(&p->j, obj, "headers")) >= 0) {
        if (t->kind != PX_PROBE_HTTP) {
            px_cfg_perr(p, h, "%s.headers: only for \"http\" targets", where);
            goto out;
        }
        if (parse_probe_headers(p, h, where, t) < 0)
            goto out;
    }
    if (px_cfg_get_dur(p, obj, where, "timeout", &t->timeout_ms, 10, 600000) < 0)
        goto out;
    rc = 0;
out:
    free(s);
    return rc;
}

/* The entries of a probes.targets object (or of PICKET_APP_PROBES),
 * appended to cfg->probes.targets. */
static int parse_probe_targets(struct cp *p, int obj)
{
    struct px_config *c = p->cfg;
    struct px_probe_target *nt;
    int n = px_cfg_check_map(p, obj, "probes.targets");

    if (n < 0)
        return -1;
    if (c->probes.ntargets + (size_t)n > PX_PROBE_MAX_TARGETS)
        return px_cfg_perr(p, obj, "probes.targets: more than %d targets in all",
                           PX_PROBE_MAX_TARGETS);
    nt = realloc(c->probes.targets, (c->probes.ntargets + (size_t)n + 1) * sizeof(*nt));
    if (nt == NULL)
        return px_cfg_oom(p, obj);
    c->probes.targets = nt;
    for (int k = certs_json_first(&p->j, obj); k > 0; k = certs_json_next_key(&p->j, k)) {
        struct px_probe_target *t = &c->probes.targets[c->probes.ntargets];
        memset(t, 0, sizeof(*t));
        c->probes.ntargets++;
        if (parse_probe_target(p, k, t) < 0)
            return -1;
        for (size_t i = 0; i + 1 < c->probes.ntargets; i++)
            if (strcmp(c->probes.targets[i].name, t->name) == 0)
                return px_cfg_perr(p, k, "probes.targets: \"%s\" is defined twice", t->name);
    }
    return 0;
}

/* "host:port" into *host, *port for key `key` of obj (where.key). */
static int get_bind(struct cp *p, int obj, const char *where, char **host, char **port)
{
    char b[WHERE_MAX], *s = NULL;
    int v = px_cfg_get_str(p, obj, where, "bind", &s);

    if (v <= 0)
        return v;
    if (px_cfg_parse_hostport(s, host, port) < 0)
        v = px_cfg_perr(p, v, "%s: expected \"host:port\"", px_cfg_kp(b, where, "bind"));
    free(s);
    return v;
}

static int parse_probes(struct cp *p, int obj)
{
    static const char *const keys[] = {"bind", "targets", "timeout", NULL};
    struct px_config *c = p->cfg;
    int t;

    if (px_cfg_check_obj(p, obj, "probes", keys) < 0 ||
        get_bind(p, obj, "probes", &c->probes.bind_host, &c->probes.bind_port) < 0 ||
        px_cfg_get_dur(p, obj, "probes", "timeout", &c->probes.timeout_ms, 10, 600000) < 0)
        return -1;
    if ((t = certs_json_get(&p->j, obj, "targets")) >= 0 && parse_probe_targets(p, t) < 0)
        return -1;
    return 0;
}

static int parse_metrics(struct cp *p, int obj)
{
    static const char *const keys[] = {"bind", NULL};
    struct px_config *c = p->cfg;
    int v;

    if (px_cfg_check_obj(p, obj, "metrics", keys) < 0 ||
        (v = get_bind(p, obj, "metrics", &c->metrics.bind_host, &c->metrics.bind_port)) < 0)
        return -1;
    return v == 0 ? px_cfg_missing(p, obj, "metrics", "bind") : 0;
}

static int wildcard(const char *h)
{
    return strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0;
}

/* Two binds that would take the same port: the same address, or a
 * wildcard and anything else. Port 0 (the kernel picks one) never
 * clashes. */
static int binds_clash(const char *h1, const char *p1, const char *h2, const char *p2)
{
    return h1 != NULL && h2 != NULL && strcmp(p1, p2) == 0 && strcmp(p1, "0") != 0 &&
           (strcasecmp(h1, h2) == 0 || wildcard(h1) || wildcard(h2));
}

const char *px_cfg_check_binds(const struct px_config *c, char *buf, size_t n)
{
    struct {
        const char *what, *host, *port;
    } b[3 + MAX_LISTENERS];
    size_t nb = 0, nfixed;
    const char *ph = NULL, *pp = NULL;

    b[nb].what = "admin.bind";
    b[nb].host = c->admin.bind_host;
    b[nb++].port = c->admin.bind_port;
    b[nb].what = "metrics.bind";
    b[nb].host = c->metrics.bind_host;
    b[nb++].port = c->metrics.bind_port;
    if (px_config_probes_bind(c, &ph, &pp)) {
        b[nb].what = "probes.bind";
        b[nb].host = ph;
        b[nb++].port = pp;
    }
    nfixed = nb;
    for (size_t i = 0; i < c->nlisteners && nb < sizeof(b) / sizeof(b[0]); i++) {
        b[nb].what = c->listeners[i].name;
        b[nb].host = c->listeners[i].bind_host;
        b[nb++].port = c->listeners[i].bind_port;
    }
    for (size_t i = 0; i < nfixed; i++)
        for (size_t k = i + 1; k < nb; k++)
            if (binds_clash(b[i].host, b[i].port, b[k].host, b[k].port)) {
                snprintf(buf, n, "%s (%s:%s) takes the port of %s%s (%s:%s)", b[i].what, b[i].host,
                         b[i].port, k >= nfixed ? "listener " : "", b[k].what, b[k].host,
                         b[k].port);
                return buf;
            }
    return NULL;
}

int px_cfg_parse_probes(struct cp *p, int obj)
{
    return parse_probes(p, obj);
}

int px_cfg_parse_metrics(struct cp *p, int obj)
{
    return parse_metrics(p, obj);
}

void px_cfg_probes_clear(struct px_config *c)
{
    for (size_t i = 0; i < c->probes.ntargets; i++) {
        struct px_probe_target *t = &c->probes.targets[i];
        free(t->name);
        free(t->up.host);
        free(t->up.port);
        free(t->up.url);
        free(t->authority);
        free(t->path);
        free(t->service);
        for (size_t k = 0; k < t->nhdrs; k++) {
            free(t->hdr_names[k]);
            free(t->hdr_values[k]);
        }
        free(t->hdr_names);
        free(t->hdr_values);
    }
    free(c->probes.targets);
    free(c->probes.bind_host);
    free(c->probes.bind_port);
    free(c->metrics.bind_host);
    free(c->metrics.bind_port);
}

int px_config_add_probe_targets(struct px_config *cfg, const char *name, const char *json,
                                size_t len, char *err, size_t errlen)
{
    struct cp p;
    char jerr[256];
    int rc = -1;

    memset(&p, 0, sizeof(p));
    p.name = name != NULL ? name : "probes";
    p.err = err;
    p.errlen = errlen;
    p.cfg = cfg;
    if (len > PX_CONFIG_MAX_FILE || memchr(json, '\0', len) != NULL) {
        snprintf(err, errlen, "%s: larger than %d bytes or holds a NUL byte", p.name,
                 PX_CONFIG_MAX_FILE);
        return -1;
    }
    if (certs_json_parse(&p.j, json, len, MAX_TOKENS, jerr, sizeof(jerr)) < 0) {
        snprintf(err, errlen, "%s:%s", p.name, jerr);
        return -1;
    }
    if (!certs_json_is_obj(&p.j, 0))
        px_cfg_perr(&p, 0,
                    "expected an object: name -> {\"http\": URL} | {\"tcp\": "
                    "\"host:port\"} | {\"grpc\": \"host:port\"}");
    else if (parse_probe_targets(&p, 0) == 0) {
        char clash[WHERE_MAX * 2];
        if (px_cfg_check_binds(cfg, clash, sizeof(clash)) != NULL)
            px_cfg_perr(&p, 0, "%s", clash);
        else
            rc = 0;
    }
    certs_json_clear(&p.j);
    return rc;
}

int px_config_set_bind(struct px_config *cfg, const char *which, const char *hostport, char *err,
                       size_t errlen)
{
    char *h = NULL, *pt = NULL, **dh, **dp, clash[WHERE_MAX * 2], *oh, *op;

    if (strcmp(which, "probes") == 0) {
        dh = &cfg->probes.bind_host;
        dp = &cfg->probes.bind_port;
    } else if (strcmp(which, "metrics") == 0) {
        dh = &cfg->metrics.bind_host;
        dp = &cfg->metrics.bind_port;
    } else {
        snprintf(err, errlen, "unknown listener \"%s\"", which);
        return -1;
    }
    if (hostport == NULL || px_cfg_parse_hostport(hostport, &h, &pt) < 0) {
        snprintf(err, errlen, "%s.bind: expected \"host:port\", not \"%.100s\"", which,
                 hostport != NULL ? hostport : "");
        return -1;
    }
    oh = *dh;
    op = *dp;
    *dh = h;
    *dp = pt;
    if (px_cfg_check_binds(cfg, clash, sizeof(clash)) != NULL) {
        snprintf(err, errlen, "%s", clash);
        *dh = oh;
        *dp = op;
        free(h);
        free(pt);
        return -1;
    }
    free(oh);
    free(op);
    return 0;
}

int px_config_probes_bind(const struct px_config *cfg, const char **host, const char **port)
{
    if (cfg->probes.ntargets == 0)
        return 0;
    *host = cfg->probes.bind_host != NULL ? cfg->probes.bind_host : "0.0.0.0";
    *port = cfg->probes.bind_port != NULL ? cfg->probes.bind_port : "15021";
    return 1;
}
