/*
 * config.c - parses and validates the daemon's JSON config (DESIGN.md
 * "Config") into an immutable struct px_config.
 *
 * Every key of the documented config is known here and anything else is
 * refused: a typo such as "max_staleness" spelled "max_stalenes" must not
 * silently leave a security setting at its default. Errors name the file,
 * the line and column of the offending token and its key path
 * ("picket.json:12:17: listeners[0].bind: expected \"host:port\""); a
 * missing key points at the object that should hold it.
 *
 * Parsing goes through certs_json (jsmn with a fixed token budget); the file
 * is capped at PX_CONFIG_MAX_FILE before it is read. Maps whose size the
 * file controls (trust_bundles, signing_keys, dispatch) are capped at
 * MAX_MAP entries so the duplicate-key check stays cheap.
 *
 * This file holds the section parsers, the defaults and the cross-section
 * checks, and owns struct px_config's lifetime (parse, load, free); the
 * typed getters and error helpers they use are in config_json.c.
 */
#include "config_int.h"

#include "authority.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ROUTES 1024

/* identity.workload_api_socket and identity.svid_hint: only with
 * source workload_api, where cert, key and trust_bundles come from the
 * Workload API and may not be set. */
static int parse_workload_api(struct cp *p, int obj)
{
    static const char *const from_files[] = {"cert", "key", "trust_bundles"};
    struct px_config *c = p->cfg;
    char path[128], e[300];
    int t;

    if (c->identity.source != PX_ID_WORKLOAD_API) {
        static const char *const wl_only[] = {"workload_api_socket", "svid_hint"};
        for (size_t i = 0; i < 2; i++)
            if ((t = certs_json_get(&p->j, obj, wl_only[i])) >= 0)
                return px_cfg_perr(p, t - 1, "identity.%s is only used with \"source\": "
                                             "\"workload_api\"",
                                   wl_only[i]);
        return 0;
    }
    for (size_t i = 0; i < 3; i++)
        if ((t = certs_json_get(&p->j, obj, from_files[i])) >= 0)
            return px_cfg_perr(p, t - 1, "identity.%s: not used with \"source\": "
                                         "\"workload_api\" (the Workload API hands out the "
                                         "SVID, its key and the trust bundles)",
                               from_files[i]);
    if ((t = px_cfg_get_str(p, obj, "identity", "workload_api_socket",
                            &c->identity.workload_api_socket)) < 0 ||
        px_cfg_get_str(p, obj, "identity", "svid_hint", &c->identity.svid_hint) < 0)
        return -1;
    if (c->identity.workload_api_socket == NULL) {
        const char *env = getenv("SPIFFE_ENDPOINT_SOCKET");
        if (env == NULL || env[0] == '\0')
            return px_cfg_perr(p, obj, "identity: \"source\": \"workload_api\" needs "
                                       "workload_api_socket or the SPIFFE_ENDPOINT_SOCKET "
                                       "environment variable");
        c->identity.workload_api_socket = strdup(env);
        if (c->identity.workload_api_socket == NULL)
            return px_cfg_oom(p, obj);
        if (px_config_socket_path(env, path, sizeof(path), e, sizeof(e)) != 0)
            return px_cfg_perr(p, obj, "identity: SPIFFE_ENDPOINT_SOCKET: %s", e);
        return 0;
    }
    if (px_config_socket_path(c->identity.workload_api_socket, path, sizeof(path), e,
                              sizeof(e)) != 0)
        return px_cfg_perr(p, t, "identity.workload_api_socket: %s", e);
    return 0;
}

static int parse_identity(struct cp *p, int obj)
{
    static const char *const keys[] = {"cert",          "key",
                                       "trust_bundles", "max_svid_lifetime",
                                       "reload_interval", "source",
                                       "workload_api_socket", "svid_hint",
                                       NULL};
    static const char *const sources[] = {"files", "workload_api", NULL};
    struct px_config *c = p->cfg;
    char b[64], what[WHERE_MAX];
    int tb, n;

    if (px_cfg_check_obj(p, obj, "identity", keys) < 0)
        return -1;
    p->identity_tok = obj;
    if (px_cfg_get_enum(p, obj, "identity", "source", sources, &c->identity.source) < 0 ||
        parse_workload_api(p, obj) < 0)
        return -1;
    if (px_cfg_get_path(p, obj, "identity", "cert", &c->identity.cert) < 0 ||
        px_cfg_get_path(p, obj, "identity", "key", &c->identity.key) < 0)
        return -1;
    if ((c->identity.cert == NULL) != (c->identity.key == NULL))
        return px_cfg_missing(p, obj, "identity", c->identity.cert != NULL ? "key" : "cert");
    if (px_cfg_get_dur(p, obj, "identity", "max_svid_lifetime", &c->identity.max_svid_lifetime_ms,
                       60000, 366LL * 86400000) < 0 ||
        px_cfg_get_dur(p, obj, "identity", "reload_interval", &c->identity.reload_interval_ms, 100,
                       3600000) < 0)
        return -1;
    tb = certs_json_get(&p->j, obj, "trust_bundles");
    if (tb < 0)
        return 0;
    n = px_cfg_check_map(p, tb, "identity.trust_bundles");
    if (n < 0)
        return -1;
    c->identity.trust_bundles = calloc((size_t)n + 1, sizeof(*c->identity.trust_bundles));
    if (c->identity.trust_bundles == NULL)
        return px_cfg_oom(p, tb);
    for (int k = certs_json_first(&p->j, tb); k > 0; k = certs_json_next_key(&p->j, k)) {
        struct px_trust_domain_cfg *d = &c->identity.trust_bundles[c->identity.ntrust_bundles++];
        const char *s = p->j.js + p->j.tok[k].start;
        size_t sl = (size_t)(p->j.tok[k].end - p->j.tok[k].start);
        int lower = 1;
        for (size_t i = 0; i < sl; i++)
            if (s[i] >= 'A' && s[i] <= 'Z')
                lower = 0;
        /* One rule for trust domains: the certs module's (found by fuzzing:
         * an empty or over-long key passed here and failed there). */
        if (!lower || !certs_trust_domain_valid(s, sl))
            return px_cfg_perr(p, k,
                               "identity.trust_bundles: bad trust domain \"%s\" (1 to %d lowercase "
                               "letters, digits, '.', '-', '_')",
                               px_cfg_show(p, k, b, sizeof(b)), CERTS_TRUST_DOMAIN_MAX);
        d->trust_domain = strndup(s, (size_t)(p->j.tok[k].end - p->j.tok[k].start));
        if (d->trust_domain == NULL)
            return px_cfg_oom(p, k);
        snprintf(what, sizeof(what), "identity.trust_bundles.%s", d->trust_domain);
        if (px_cfg_tok_str(p, k + 1, what, &d->file) < 0 || px_cfg_resolve(p, k + 1, &d->file) < 0)
            return -1;
    }
    return 0;
}

static int parse_policy(struct cp *p, int obj)
{
    static const char *const keys[] = {"file",     "url",       "server_id",     "signing_keys",
                                       "poll_min", "poll_max",  "long_poll",     "cache_dir",
                                       "max_staleness", "on_stale", NULL};
    static const char *const stale[] = {"last_known_good", "deny", NULL}; /* index = deny */
    struct px_config *c = p->cfg;
    char what[WHERE_MAX];
    int vf, vu, vmin, vmax, sk, n;

    if (px_cfg_check_obj(p, obj, "policy", keys) < 0)
        return -1;
    if ((vf = px_cfg_get_path(p, obj, "policy", "file", &c->policy.file)) < 0)
        return -1;
    vu = certs_json_get(&p->j, obj, "url");
    if (vu >= 0 && vf > 0)
        return px_cfg_perr(p, vu, "policy: \"file\" and \"url\" are mutually exclusive");
    if (vu >= 0 && px_cfg_get_https(p, obj, "policy", "url", &c->policy.url) < 0)
        return -1;
    if (px_cfg_get_spiffe(p, obj, "policy", "server_id", &c->policy.server_id, vu >= 0) < 0)
        return -1;
    sk = certs_json_get(&p->j, obj, "signing_keys");
    if (sk < 0 && vu >= 0)
        return px_cfg_missing(p, obj, "policy", "signing_keys");
    if (sk >= 0) {
        if ((n = px_cfg_check_map(p, sk, "policy.signing_keys")) < 0)
            return -1;
        if (n == 0)
            return px_cfg_perr(p, sk, "policy.signing_keys: at least one key is required");
        c->policy.signing_key_ids = calloc((size_t)n, sizeof(char *));
        c->policy.signing_key_files = calloc((size_t)n, sizeof(char *));
        if (c->policy.signing_key_ids == NULL || c->policy.signing_key_files == NULL)
            return px_cfg_oom(p, sk);
        for (int k = certs_json_first(&p->j, sk); k > 0; k = certs_json_next_key(&p->j, k)) {
            size_t i = c->policy.nsigning_keys++;
            if (px_cfg_tok_str(p, k, "policy.signing_keys", &c->policy.signing_key_ids[i]) < 0)
                return -1;
            snprintf(what, sizeof(what), "policy.signing_keys.%s", c->policy.signing_key_ids[i]);
            if (px_cfg_tok_str(p, k + 1, what, &c->policy.signing_key_files[i]) < 0 ||
                px_cfg_resolve(p, k + 1, &c->policy.signing_key_files[i]) < 0)
                return -1;
        }
    }
    if ((vmin = px_cfg_get_dur(p, obj, "policy", "poll_min", &c->policy.poll_min_ms, 100,
                               86400000)) < 0 ||
        (vmax = px_cfg_get_dur(p, obj, "policy", "poll_max", &c->policy.poll_max_ms, 100,
                               86400000)) < 0 ||
        px_cfg_get_dur(p, obj, "policy", "long_poll", &c->policy.long_poll_ms, 0, 600000) < 0 ||
        px_cfg_get_dur(p, obj, "policy", "max_staleness", &c->policy.max_staleness_ms, 1000,
                       366LL * 86400000) < 0 ||
        px_cfg_get_path(p, obj, "policy", "cache_dir", &c->policy.cache_dir) < 0 ||
        px_cfg_get_enum(p, obj, "policy", "on_stale", stale, &c->policy.on_stale_deny) < 0)
        return -1;
    if (c->policy.poll_min_ms > c->policy.poll_max_ms)
        return px_cfg_perr(p, vmax > 0 ? vmax : vmin, "policy: poll_min must not exceed poll_max");
    return 0;
}

static int header_ok(const char *s)
{
    for (; *s != '\0'; s++)
        if (!px_cfg_is_name_char(*s) || *s == '.')
            return 0;
    return 1;
}

static int parse_dispatch_one(struct cp *p, int k, struct px_dispatch_cfg *d)
{
    static const char *const keys[] = {"url", "timeout", "server_id", "cache_entries",
                                       "max_cache_ttl", "on_error", "headers", NULL};
    static const char *const on_err[] = {"deny", "allow", NULL}; /* index = allow */
    char where[WHERE_MAX], b[WHERE_MAX];
    int obj = k + 1, h, i = 0;

    if (px_cfg_tok_str(p, k, "dispatch", &d->name) < 0)
        return -1;
    if (strlen(d->name) > 64 || !header_ok(d->name))
        return px_cfg_perr(p, k, "dispatch: bad name \"%s\" (letters, digits, '-', '_')",
                           px_cfg_show(p, k, b, 64));
    snprintf(where, sizeof(where), "dispatch.%s", d->name);
    if (px_cfg_check_obj(p, obj, where, keys) < 0 ||
        px_cfg_get_https(p, obj, where, "url", &d->url) < 0 ||
        px_cfg_get_spiffe(p, obj, where, "server_id", &d->server_id, 1) < 0 ||
        px_cfg_get_dur(p, obj, where, "timeout", &d->timeout_ms, 1, 60000) < 0 ||
        px_cfg_get_int(p, obj, where, "cache_entries", &d->cache_entries, 0, 10000000) < 0 ||
        px_cfg_get_dur(p, obj, where, "max_cache_ttl", &d->max_cache_ttl_ms, 0, 86400000) < 0 ||
        px_cfg_get_enum(p, obj, where, "on_error", on_err, &d->on_error_allow) < 0)
        return -1;
    h = certs_json_get(&p->j, obj, "headers");
    if (h < 0)
        return 0;
    if (!certs_json_is_arr(&p->j, h) || p->j.tok[h].size > MAX_MAP)
        return px_cfg_perr(p, h, "%s.headers: expected an array of at most %d header names", where,
                           MAX_MAP);
    d->headers = calloc((size_t)p->j.tok[h].size + 1, sizeof(char *));
    if (d->headers == NULL)
        return px_cfg_oom(p, h);
    for (int e = certs_json_first(&p->j, h); e > 0; e = certs_json_next_elem(&p->j, e), i++) {
        char *s;
        snprintf(b, sizeof(b), "%.120s.headers[%d]", where, i);
        if (px_cfg_tok_str(p, e, b, &d->headers[d->nheaders]) < 0)
            return -1;
        s = d->headers[d->nheaders++];
        if (!header_ok(s))
            return px_cfg_perr(p, e, "%s: bad header name", b);
        for (; *s != '\0'; s++)
            if (*s >= 'A' && *s <= 'Z')
                *s = (char)(*s - 'A' + 'a');
    }
    return 0;
}

static int parse_dispatch(struct cp *p, int obj)
{
    struct px_config *c = p->cfg;
    int n = px_cfg_check_map(p, obj, "dispatch");

    if (n < 0)
        return -1;
    c->dispatch = calloc((size_t)n + 1, sizeof(*c->dispatch));
    if (c->dispatch == NULL)
        return px_cfg_oom(p, obj);
    for (int k = certs_json_first(&p->j, obj); k > 0; k = certs_json_next_key(&p->j, k)) {
        struct px_dispatch_cfg *d = &c->dispatch[c->ndispatch++];
        d->timeout_ms = 200;
        d->cache_entries = 10000;
        d->max_cache_ttl_ms = 300000;
        if (parse_dispatch_one(p, k, d) < 0)
            return -1;
    }
    return 0;
}

static int parse_route(struct cp *p, int t, const char *where, enum px_listener_kind kind,
                       struct px_route *r)
{
    static const char *const in_keys[] = {"path_prefix", "authority", "upstream", "timeout",
                                          NULL};
    static const char *const out_keys[] = {"authority", "upstream", "server_id", "timeout", NULL};
    char b[WHERE_MAX], *up = NULL;
    int v, vu, rc = -1;

    if (px_cfg_check_obj(p, t, where, kind == PX_LISTENER_INBOUND ? in_keys : out_keys) < 0)
        return -1;
    v = kind == PX_LISTENER_INBOUND ? px_cfg_get_str(p, t, where, "authority", &r->authority)
                                    : px_cfg_need_str(p, t, where, "authority", &r->authority);
    if (v < 0)
        return -1;
    if (r->authority != NULL) {
        /* The request's authority parser, so a route names hosts exactly as
         * requests are matched: "Orders.Shop.svc." is "orders.shop.svc".
         * "*.example.org" matches any name under example.org. */
        struct px_authority a;
        int wild = strncmp(r->authority, "*.", 2) == 0;
        const char *h = r->authority + (wild ? 2 : 0);
        if (px_authority_parse(h, strlen(h), &a) != 0 || a.port != 0 || a.host[0] == '[')
            return px_cfg_perr(p, v, "%s: expected a host name without port (or \"*.\" and one)",
                               px_cfg_kp(b, where, "authority"));
        snprintf(r->authority, strlen(r->authority) + 1, "%s%s", wild ? "*." : "", a.host);
    }
    if (kind == PX_LISTENER_INBOUND) {
        if ((v = px_cfg_get_str(p, t, where, "path_prefix", &r->path_prefix)) < 0)
            return -1;
        if (v > 0 && r->path_prefix[0] != '/')
            return px_cfg_perr(p, v, "%s.path_prefix: must start with '/'", where);
        if (r->authority == NULL && r->path_prefix == NULL)
            return px_cfg_perr(p, t, "%s: needs \"path_prefix\" and/or \"authority\"", where);
    }
    if (px_cfg_get_dur(p, t, where, "timeout", &r->timeout_ms, PX_TIMEOUT_MIN_MS,
                       PX_TIMEOUT_MAX_MS) < 0)
        return -1;
    if ((vu = px_cfg_need_str(p, t, where, "upstream", &up)) < 0)
        return -1;
    if (kind == PX_LISTENER_INBOUND) {
        if (px_cfg_parse_url(up, &r->upstream) < 0) {
            px_cfg_perr(
                p, vu,
                "%s.upstream: expected \"h2c://host:port\" or \"http://host:port\" (no path)",
                where);
            goto out;
        }
    } else {
        r->upstream.proto = PX_UP_MTLS;
        if (px_cfg_parse_hostport(up, &r->upstream.host, &r->upstream.port) < 0) {
            px_cfg_perr(p, vu, "%s.upstream: expected \"host:port\"", where);
            goto out;
        }
        r->upstream.url = up;
        up = NULL;
        if (px_cfg_get_spiffe(p, t, where, "server_id", &r->server_id, 1) < 0)
            goto out;
        r->upstream.server_id = r->server_id;
    }
    rc = 0;
out:
    free(up);
    return rc;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (!px_cfg_is_name_char(s[i]))
            return 0;
    return n <= 64;
}

static int parse_trusted_forwarders(struct cp *p, int t, const char *where,
                                    struct px_listener_cfg *l)
{
    char b[WHERE_MAX];
    int arr = certs_json_get(&p->j, t, "trusted_forwarders");

    if (arr < 0)
        return 0;
    if (!certs_json_is_arr(&p->j, arr) || p->j.tok[arr].size > MAX_MAP)
        return px_cfg_perr(p, arr, "%s: expected an array of at most %d SPIFFE IDs",
                           px_cfg_kp(b, where, "trusted_forwarders"), MAX_MAP);
    if (l->kind != PX_LISTENER_INBOUND)
        return px_cfg_perr(p, arr, "%s: only for inbound listeners (outbound ones pass the "
                                   "app's forwarding headers on)",
                           px_cfg_kp(b, where, "trusted_forwarders"));
    l->trusted_forwarders = calloc((size_t)p->j.tok[arr].size + 1, sizeof(char *));
    if (l->trusted_forwarders == NULL)
        return px_cfg_oom(p, arr);
    for (int e = certs_json_first(&p->j, arr); e > 0; e = certs_json_next_elem(&p->j, e)) {
        char *id = NULL;
        if (px_cfg_tok_str(p, e, "trusted_forwarders", &id) < 0)
            return -1;
        l->trusted_forwarders[l->ntrusted_forwarders++] = id;
        if (!px_cfg_spiffe_ok(id))
            return px_cfg_perr(p, e, "%s: \"%.200s\" is not a valid SPIFFE ID",
                               px_cfg_kp(b, where, "trusted_forwarders"), id);
    }
    return 0;
}

/* tcp_inbound: "upstream": "tcp://host:port" (the app); tcp_outbound:
 * "upstream": "host:port" (the remote sidecar's tcp_inbound) and
 * "server_id". The HTTP-only keys mean nothing on a byte stream: refused,
 * so a config that expects them to act is not silently weaker. */
static int parse_tcp_listener(struct cp *p, int t, const char *where, struct px_listener_cfg *l)
{
    static const char *const http_only[] = {"routes", "trusted_forwarders",
                                            "headers_with_underscores", "path_params", "timeout",
                                            NULL};
    char *up = NULL;
    int v, rc = -1;

    for (int i = 0; http_only[i] != NULL; i++)
        if ((v = certs_json_get(&p->j, t, http_only[i])) >= 0)
            return px_cfg_perr(p, v, "%s.%s: not for a %s listener (HTTP listeners only)", where,
                               http_only[i],
                               l->kind == PX_LISTENER_TCP_INBOUND ? "tcp_inbound" : "tcp_outbound");
    if ((v = px_cfg_need_str(p, t, where, "upstream", &up)) < 0)
        return -1;
    if (l->kind == PX_LISTENER_TCP_INBOUND) {
        if ((v = certs_json_get(&p->j, t, "server_id")) >= 0) {
            px_cfg_perr(p, v, "%s.server_id: only for tcp_outbound listeners", where);
            goto out;
        }
        if (strncmp(up, "tcp://", 6) != 0 ||
            px_cfg_parse_hostport(up + 6, &l->upstream.host, &l->upstream.port) < 0) {
            px_cfg_perr(p, v, "%s.upstream: expected \"tcp://host:port\"", where);
            goto out;
        }
        l->upstream.proto = PX_UP_TCP;
    } else {
        if (px_cfg_parse_hostport(up, &l->upstream.host, &l->upstream.port) < 0) {
            px_cfg_perr(p, v, "%s.upstream: expected \"host:port\" (the remote sidecar's "
                              "tcp_inbound listener)", where);
            goto out;
        }
        l->upstream.proto = PX_UP_MTLS;
        if (px_cfg_get_spiffe(p, t, where, "server_id", &l->server_id, 1) < 0)
            goto out;
        l->upstream.server_id = l->server_id;
    }
    l->upstream.url = up;
    up = NULL;
    l->has_upstream = 1;
    rc = 0;
out:
    free(up);
    return rc;
}

static int parse_listener(struct cp *p, int t, size_t idx)
{
    static const char *const keys[] = {"name",         "kind",
                                       "bind",         "upstream",
                                       "routes",       "trusted_forwarders",
                                       "allow_remote", "headers_with_underscores",
                                       "path_params",  "timeout",
                                       "server_id",    NULL};
    static const char *const kinds[] = {"inbound", "outbound", "tcp_inbound", "tcp_outbound",
                                        NULL};
    static const enum px_listener_kind kind_of[] = {PX_LISTENER_INBOUND, PX_LISTENER_OUTBOUND,
                                                    PX_LISTENER_TCP_INBOUND,
                                                    PX_LISTENER_TCP_OUTBOUND};
    static const char *const underscores[] = {"drop", "reject", "allow", NULL};
    static const char *const params[] = {"reject", "keep", NULL};
    struct px_config *c = p->cfg;
    struct px_listener_cfg *l = &c->listeners[idx];
    char where[WHERE_MAX], rw[WHERE_MAX], *s = NULL;
    int v, kind = 0, rt, rc = -1;

    snprintf(where, sizeof(where), "listeners[%zu]", idx);
    if (px_cfg_check_obj(p, t, where, keys) < 0 ||
        (v = px_cfg_need_str(p, t, where, "name", &l->name)) < 0)
        return -1;
    if (!name_ok(l->name))
        return px_cfg_perr(p, v, "%s.name: use letters, digits, '.', '-', '_' (at most 64)", where);
    for (size_t i = 0; i < idx; i++)
        if (strcmp(c->listeners[i].name, l->name) == 0)
            return px_cfg_perr(p, v, "%s.name: duplicate listener name \"%s\"", where, l->name);
    if ((v = px_cfg_get_enum(p, t, where, "kind", kinds, &kind)) <= 0)
        return v < 0 ? -1 : px_cfg_missing(p, t, where, "kind");
    l->kind = kind_of[kind];
    if ((v = px_cfg_need_str(p, t, where, "bind", &s)) < 0)
        return -1;
    if (px_cfg_parse_hostport(s, &l->bind_host, &l->bind_port) < 0) {
        px_cfg_perr(p, v, "%s.bind: expected \"host:port\"", where);
        goto out;
    }
    for (size_t i = 0; i < idx; i++)
        if (strcmp(c->listeners[i].bind_host, l->bind_host) == 0 &&
            strcmp(c->listeners[i].bind_port, l->bind_port) == 0) {
            px_cfg_perr(p, v, "%s.bind: already used by listener \"%s\"", where,
                        c->listeners[i].name);
            goto out;
        }
    if ((v = px_cfg_get_bool(p, t, where, "allow_remote", &l->allow_remote)) < 0)
        goto out;
    if (v > 0 && !PX_KIND_IS_OUTBOUND(l->kind)) {
        px_cfg_perr(p, v, "%s.allow_remote: only for outbound listeners", where);
        goto out;
    }
    if (PX_KIND_IS_OUTBOUND(l->kind) && !l->allow_remote &&
        !px_config_host_is_loopback(l->bind_host)) {
        /* An outbound listener lends the workload's SVID to whoever can
         * reach it: on a pod or host address it is an open relay. */
        px_cfg_perr(p, certs_json_get(&p->j, t, "bind"),
                    "%s.bind: an outbound listener must bind a loopback address (127.0.0.0/8, "
                    "[::1] or localhost): anyone who reaches it speaks with this workload's "
                    "identity; set \"allow_remote\": true to accept that",
                    where);
        goto out;
    }
    if (PX_KIND_IS_TCP(l->kind)) {
        rc = parse_tcp_listener(p, t, where, l);
        goto out;
    }
    if ((v = certs_json_get(&p->j, t, "server_id")) >= 0) {
        px_cfg_perr(p, v, "%s.server_id: only for tcp_outbound listeners (outbound routes name "
                          "their own)", where);
        goto out;
    }
    if (px_cfg_get_enum(p, t, where, "headers_with_underscores", underscores, &l->underscores) <
            0 ||
        px_cfg_get_enum(p, t, where, "path_params", params, &l->path_params) < 0 ||
        px_cfg_get_dur(p, t, where, "timeout", &l->timeout_ms, PX_TIMEOUT_MIN_MS,
                       PX_TIMEOUT_MAX_MS) < 0)
        goto out;
    if (parse_trusted_forwarders(p, t, where, l) < 0)
        goto out;
    free(s);
    s = NULL;
    if ((v = px_cfg_get_str(p, t, where, "upstream", &s)) < 0)
        goto out;
    if (v > 0 && l->kind == PX_LISTENER_OUTBOUND) {
        px_cfg_perr(p, v, "%s.upstream: outbound listeners take their upstreams from \"routes\"",
                    where);
        goto out;
    }
    if (v > 0 && px_cfg_parse_url(s, &l->upstream) < 0) {
        px_cfg_perr(p, v,
                    "%s.upstream: expected \"h2c://host:port\" or \"http://host:port\" (no path)",
                    where);
        goto out;
    }
    l->has_upstream = v > 0;
    rt = certs_json_get(&p->j, t, "routes");
    if (rt >= 0) {
        if (!certs_json_is_arr(&p->j, rt) || p->j.tok[rt].size > MAX_ROUTES) {
            px_cfg_perr(p, rt, "%s.routes: expected an array of at most %d routes", where,
                        MAX_ROUTES);
            goto out;
        }
        l->routes = calloc((size_t)p->j.tok[rt].size + 1, sizeof(*l->routes));
        if (l->routes == NULL) {
            px_cfg_oom(p, rt);
            goto out;
        }
        for (int e = certs_json_first(&p->j, rt); e > 0; e = certs_json_next_elem(&p->j, e)) {
            snprintf(rw, sizeof(rw), "%.100s.routes[%zu]", where, l->nroutes);
            if (parse_route(p, e, rw, l->kind, &l->routes[l->nroutes++]) < 0)
                goto out;
        }
    }
    if (l->kind == PX_LISTENER_INBOUND && !l->has_upstream && l->nroutes == 0)
        px_cfg_perr(p, t, "%s: an inbound listener needs \"upstream\" or \"routes\"", where);
    else if (l->kind == PX_LISTENER_OUTBOUND && l->nroutes == 0)
        px_cfg_missing(p, t, where, "routes");
    else
        rc = 0;
out:
    free(s);
    return rc;
}

static int parse_listeners(struct cp *p, int arr)
{
    struct px_config *c = p->cfg;
    int n;

    if (!certs_json_is_arr(&p->j, arr))
        return px_cfg_perr(p, arr, "listeners: expected an array");
    n = p->j.tok[arr].size;
    if (n == 0)
        return px_cfg_perr(p, arr, "listeners: at least one listener is required");
    if (n > MAX_LISTENERS)
        return px_cfg_perr(p, arr, "listeners: at most %d listeners", MAX_LISTENERS);
    c->listeners = calloc((size_t)n, sizeof(*c->listeners));
    if (c->listeners == NULL)
        return px_cfg_oom(p, arr);
    for (int e = certs_json_first(&p->j, arr); e > 0; e = certs_json_next_elem(&p->j, e)) {
        size_t i = c->nlisteners++;
        if (parse_listener(p, e, i) < 0)
            return -1;
    }
    return 0;
}

static int parse_admin(struct cp *p, int obj)
{
    static const char *const keys[] = {"bind", NULL};
    struct px_config *c = p->cfg;
    char *s = NULL;
    int v, rc = -1;

    if (px_cfg_check_obj(p, obj, "admin", keys) < 0 ||
        (v = px_cfg_need_str(p, obj, "admin", "bind", &s)) < 0)
        return -1;
    if (px_cfg_parse_hostport(s, &c->admin.bind_host, &c->admin.bind_port) < 0)
        px_cfg_perr(p, v, "admin.bind: expected \"host:port\"");
    else if (!px_config_host_is_loopback(c->admin.bind_host))
        px_cfg_perr(p, v,
                    "admin.bind: must be a loopback address (127.0.0.0/8, [::1] or localhost)");
    else
        rc = 0;
    free(s);
    return rc;
}

static int parse_dns(struct cp *p, int obj)
{
    static const char *const keys[] = {"resolv_conf", "hosts",   "min_ttl",
                                       "max_ttl",     "negative_ttl", "timeout", NULL};
    struct px_config *c = p->cfg;
    const char *w = "dns";

    if (px_cfg_check_obj(p, obj, w, keys) < 0 ||
        px_cfg_get_path(p, obj, w, "resolv_conf", &c->dns.resolv_conf) < 0 ||
        px_cfg_get_path(p, obj, w, "hosts", &c->dns.hosts) < 0 ||
        px_cfg_get_dur(p, obj, w, "min_ttl", &c->dns.min_ttl_ms, 0, 86400000) < 0 ||
        px_cfg_get_dur(p, obj, w, "max_ttl", &c->dns.max_ttl_ms, 1000, 86400000) < 0 ||
        px_cfg_get_dur(p, obj, w, "negative_ttl", &c->dns.negative_ttl_ms, 0, 3600000) < 0 ||
        px_cfg_get_dur(p, obj, w, "timeout", &c->dns.timeout_ms, 100, 60000) < 0)
        return -1;
    if (c->dns.min_ttl_ms > c->dns.max_ttl_ms)
        return px_cfg_perr(p, obj, "dns.min_ttl must not be longer than dns.max_ttl");
    return 0;
}

static int parse_log(struct cp *p, int obj)
{
    static const char *const keys[] = {"level", "access", "audit", NULL};
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    struct px_config *c = p->cfg;
    int va, vu;

    if (px_cfg_check_obj(p, obj, "log", keys) < 0 ||
        px_cfg_get_enum(p, obj, "log", "level", levels, &c->log.level) < 0 ||
        (va = px_cfg_get_str(p, obj, "log", "access", &c->log.access)) < 0 ||
        (vu = px_cfg_get_str(p, obj, "log", "audit", &c->log.audit)) < 0)
        return -1;
    if (va > 0 && strcmp(c->log.access, "-") != 0 && px_cfg_resolve(p, va, &c->log.access) < 0)
        return -1;
    if (vu > 0 && strcmp(c->log.audit, "-") != 0 && px_cfg_resolve(p, vu, &c->log.audit) < 0)
        return -1;
    return 0;
}

static int parse_limits(struct cp *p, int obj)
{
    static const char *const keys[] = {"max_connections",  "max_concurrent_streams",
                                       "max_header_list_size", "header_timeout",
                                       "max_headers",      "max_target_length",
                                       "memory_budget",    "max_handshakes",
                                       "idle_timeout",     "upstream_timeout",
                                       "drain_timeout",    "handshake_timeout",
                                       "stream_buffer",    "drain_notice_delay",
                                       "tunnel_idle_timeout", NULL};
    const char *w = "limits";
    struct px_config *c = p->cfg;

    if (px_cfg_check_obj(p, obj, w, keys) < 0 ||
        px_cfg_get_int(p, obj, w, "max_connections", &c->limits.max_connections, 1, 1000000) < 0 ||
        px_cfg_get_int(p, obj, w, "max_concurrent_streams", &c->limits.max_concurrent_streams, 1,
                       10000) < 0 ||
        px_cfg_get_int(p, obj, w, "max_header_list_size", &c->limits.max_header_list_size, 1024,
                       16 << 20) < 0 ||
        px_cfg_get_int(p, obj, w, "max_headers", &c->limits.max_headers, 8, 10000) < 0 ||
        px_cfg_get_int(p, obj, w, "max_handshakes", &c->limits.max_handshakes, 1, 1000000) < 0 ||
        px_cfg_get_int(p, obj, w, "memory_budget", &c->limits.memory_budget, 1 << 20,
                       (int64_t)1 << 40) < 0 ||
        px_cfg_get_int(p, obj, w, "max_target_length", &c->limits.max_target_length, 256,
                       1 << 20) < 0 ||
        px_cfg_get_int(p, obj, w, "stream_buffer", &c->limits.stream_buffer, 16384, 64 << 20) < 0 ||
        px_cfg_get_dur(p, obj, w, "header_timeout", &c->limits.header_timeout_ms, 100,
                       3600000) < 0 ||
        px_cfg_get_dur(p, obj, w, "idle_timeout", &c->limits.idle_timeout_ms, 1000, 86400000) < 0 ||
        px_cfg_get_dur(p, obj, w, "upstream_timeout", &c->limits.upstream_timeout_ms, 100,
                       86400000) < 0 ||
        px_cfg_get_dur(p, obj, w, "drain_timeout", &c->limits.drain_timeout_ms, 0, 3600000) < 0 ||
        px_cfg_get_dur(p, obj, w, "handshake_timeout", &c->limits.handshake_timeout_ms, 100,
                       300000) < 0 ||
        px_cfg_get_dur(p, obj, w, "drain_notice_delay", &c->limits.drain_notice_delay_ms, 0,
                       3600000) < 0 ||
        px_cfg_get_dur(p, obj, w, "tunnel_idle_timeout", &c->limits.tunnel_idle_timeout_ms, 1000,
                       7 * 86400000LL) < 0)
        return -1;
    if (c->limits.drain_notice_delay_ms > 0 &&
        c->limits.drain_notice_delay_ms >= c->limits.drain_timeout_ms) {
        int k = certs_json_get(&p->j, obj, "drain_notice_delay");
        return px_cfg_perr(p, k >= 0 ? k : obj,
                           "limits.drain_notice_delay must be shorter than limits.drain_timeout");
    }
    return 0;
}

static void set_defaults(struct px_config *c)
{
    c->identity.max_svid_lifetime_ms = 24LL * 3600000;
    c->identity.reload_interval_ms = 5000;
    c->policy.poll_min_ms = 10000;
    c->policy.poll_max_ms = 20000;
    c->policy.long_poll_ms = 30000;
    c->policy.max_staleness_ms = 300000;
    c->policy.on_stale_deny = 1;
    c->log.level = 1;
    c->limits.max_connections = 10000;
    c->limits.max_concurrent_streams = 100;
    c->limits.max_header_list_size = 65536;
    c->limits.max_headers = 100;
    c->limits.max_target_length = 8192;
    c->limits.memory_budget = 64 << 20;
    c->limits.max_handshakes = 256;
    c->dns.min_ttl_ms = 5000;
    c->dns.max_ttl_ms = 300000;
    c->dns.negative_ttl_ms = 5000;
    c->dns.timeout_ms = 2000;
    c->limits.header_timeout_ms = 10000;
    c->limits.idle_timeout_ms = 60000;
    c->limits.upstream_timeout_ms = 30000;
    c->limits.drain_timeout_ms = 20000;
    c->limits.handshake_timeout_ms = 10000;
    c->limits.stream_buffer = 1048576;
    c->limits.tunnel_idle_timeout_ms = 3600000;
    c->probes.timeout_ms = 1000;
}

/* Every listener speaks mTLS on one side (inbound terminates it, outbound
 * originates it), so the workload's SVID and trust bundles are required. */
static int check_identity(struct cp *p)
{
    struct px_config *c = p->cfg;
    const char *lname = c->listeners[0].name;
    const char *key = c->identity.cert == NULL ? "cert" : "trust_bundles";

    if (p->identity_tok == 0)
        return px_cfg_perr(p, 0, "missing required key \"identity\" (listener \"%s\" uses mTLS)",
                           lname);
    if (c->identity.source == PX_ID_WORKLOAD_API)
        return 0; /* the SVID and the bundles come from the Workload API */
    if (c->identity.cert == NULL || c->identity.ntrust_bundles == 0)
        return px_cfg_perr(p, p->identity_tok,
                           "identity: missing required key \"%s\" (listener \"%s\" uses mTLS)", key,
                           lname);
    return 0;
}

static int parse_root(struct cp *p)
{
    static const char *const keys[] = {"node_id",   "workers", "identity", "policy",
                                       "dispatch",  "listeners", "admin", "log",
                                       "limits",    "state_dir", "dns",   "probes",
                                       "metrics",   NULL};
    struct px_config *c = p->cfg;
    int64_t workers = 0;
    int v;

    if (px_cfg_check_obj(p, 0, "", keys) < 0 ||
        (v = px_cfg_get_str(p, 0, "", "node_id", &c->node_id)) < 0 ||
        px_cfg_get_int(p, 0, "", "workers", &workers, 0, 1024) < 0 ||
        px_cfg_get_path(p, 0, "", "state_dir", &c->state_dir) < 0)
        return -1;
    for (const char *s = c->node_id; s != NULL && *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || s - c->node_id >= 255)
            return px_cfg_perr(p, v, "node_id: at most 255 printable characters");
    if ((v = certs_json_get(&p->j, 0, "identity")) >= 0 && parse_identity(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "policy")) >= 0 && parse_policy(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "dispatch")) >= 0 && parse_dispatch(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "listeners")) < 0)
        return px_cfg_missing(p, 0, "", "listeners");
    if (parse_listeners(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "admin")) >= 0 && parse_admin(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "dns")) >= 0 && parse_dns(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "probes")) >= 0 && px_cfg_parse_probes(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "metrics")) >= 0 && px_cfg_parse_metrics(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "log")) >= 0 && parse_log(p, v) < 0)
        return -1;
    if ((v = certs_json_get(&p->j, 0, "limits")) >= 0 && parse_limits(p, v) < 0)
        return -1;
    if (check_identity(p) < 0)
        return -1;
    {
        char clash[WHERE_MAX * 2];
        if (px_cfg_check_binds(c, clash, sizeof(clash)) != NULL)
            return px_cfg_perr(p, 0, "%s", clash);
    }
    if (workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n < 1 ? 1 : n > 1024 ? 1024 : n;
    }
    c->workers = (int)workers;
    if (c->node_id == NULL) {
        char host[256] = "localhost";
        if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
            strcpy(host, "localhost");
        host[sizeof(host) - 1] = '\0';
        if (asprintf(&c->node_id, "%s/picket", host) < 0) {
            c->node_id = NULL;
            return px_cfg_oom(p, 0);
        }
    }
    return 0;
}

int px_config_parse(struct px_config **out, const char *name, const char *dir, const char *json,
                    size_t len, char *err, size_t errlen)
{
    struct cp p;
    char jerr[256];
    const char *nul;
    int rc = -1;

    memset(&p, 0, sizeof(p));
    *out = NULL;
    p.name = name != NULL ? name : "config";
    p.dir = dir;
    p.err = err;
    p.errlen = errlen;
    if (len > PX_CONFIG_MAX_FILE) {
        snprintf(err, errlen, "%s: larger than %d bytes", p.name, PX_CONFIG_MAX_FILE);
        return -1;
    }
    /* jsmn stops at a NUL byte and would ignore the rest of the file. */
    if ((nul = memchr(json, '\0', len)) != NULL) {
        int line = 1, col = 1;
        for (const char *s = json; s < nul; s++, col++)
            if (*s == '\n') {
                line++;
                col = 0;
            }
        snprintf(err, errlen, "%s:%d:%d: NUL byte in config", p.name, line, col);
        return -1;
    }
    if (certs_json_parse(&p.j, json, len, MAX_TOKENS, jerr, sizeof(jerr)) < 0) {
        snprintf(err, errlen, "%s:%s", p.name, jerr);
        return -1;
    }
    p.cfg = calloc(1, sizeof(*p.cfg));
    if (p.cfg == NULL) {
        px_cfg_oom(&p, 0);
        goto out;
    }
    atomic_init(&p.cfg->refs, 1);
    set_defaults(p.cfg);
    p.cfg->path = strdup(p.name);
    if (p.cfg->path == NULL) {
        px_cfg_oom(&p, 0);
        goto out;
    }
    if (parse_root(&p) < 0)
        goto out;
    *out = p.cfg;
    p.cfg = NULL;
    rc = 0;
out:
    px_config_free(p.cfg);
    certs_json_clear(&p.j);
    return rc;
}

int px_config_load(struct px_config **out, const char *path, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL, *dir = NULL;
    const char *slash;
    size_t got = 0;
    int fd, rc = -1;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    if (st.st_size > PX_CONFIG_MAX_FILE) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, PX_CONFIG_MAX_FILE);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "short read");
            goto out;
        }
        got += (size_t)n;
    }
    slash = strrchr(path, '/');
    if (slash != NULL) {
        dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
        if (dir == NULL) {
            snprintf(err, errlen, "%s: out of memory", path);
            goto out;
        }
    }
    rc = px_config_parse(out, path, dir, buf, got, err, errlen);
out:
    free(dir);
    free(buf);
    close(fd);
    return rc;
}

static void free_upstream(struct px_upstream_addr *u)
{
    free(u->host);
    free(u->port);
    free(u->url);
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

struct px_config *px_config_new_empty(void)
{
    struct px_config *c = calloc(1, sizeof(*c));
    if (c != NULL)
        atomic_init(&c->refs, 1);
    return c;
}

struct px_config *px_config_ref(struct px_config *c)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void px_config_free(struct px_config *c)
{
    if (c == NULL || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(c->path);
    free(c->identity.workload_api_socket);
    free(c->identity.svid_hint);
    free(c->node_id);
    free(c->identity.cert);
    free(c->identity.key);
    for (size_t i = 0; i < c->identity.ntrust_bundles; i++) {
        free(c->identity.trust_bundles[i].trust_domain);
        free(c->identity.trust_bundles[i].file);
    }
    free(c->identity.trust_bundles);
    free(c->policy.file);
    free(c->policy.url);
    free(c->policy.server_id);
    free_strv(c->policy.signing_key_ids, c->policy.nsigning_keys);
    free_strv(c->policy.signing_key_files, c->policy.nsigning_keys);
    free(c->policy.cache_dir);
    free(c->state_dir);
    free(c->dns.resolv_conf);
    free(c->dns.hosts);
    for (size_t i = 0; i < c->ndispatch; i++) {
        free(c->dispatch[i].name);
        free(c->dispatch[i].url);
        free(c->dispatch[i].server_id);
        free_strv(c->dispatch[i].headers, c->dispatch[i].nheaders);
    }
    free(c->dispatch);
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct px_listener_cfg *l = &c->listeners[i];
        free(l->name);
        free(l->bind_host);
        free(l->bind_port);
        free_upstream(&l->upstream);
        for (size_t r = 0; r < l->nroutes; r++) {
            free(l->routes[r].authority);
            free(l->routes[r].path_prefix);
            free(l->routes[r].server_id);
            free_upstream(&l->routes[r].upstream);
        }
        free(l->routes);
        free(l->server_id);
        free_strv(l->trusted_forwarders, l->ntrusted_forwarders);
    }
    free(c->listeners);
    free(c->admin.bind_host);
    free(c->admin.bind_port);
    px_cfg_probes_clear(c);
    free(c->log.access);
    free(c->log.audit);
    free(c);
}

int px_log_level_parse(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; s != NULL && i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

int px_config_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (host == NULL)
        return 0;
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

int px_config_socket_path(const char *uri, char *path, size_t len, char *err, size_t errlen)
{
    const char *p;
    size_t n;

    if (uri == NULL || uri[0] == '\0') {
        snprintf(err, errlen, "no Workload API socket");
        return -1;
    }
    /* "unix:///path" (an empty authority) or "unix:/path" */
    if (strncmp(uri, "unix:///", 8) == 0)
        p = uri + 7;
    else if (strncmp(uri, "unix:/", 6) == 0 && uri[6] != '/')
        p = uri + 5;
    else {
        snprintf(err, errlen, "\"%.200s\": expected unix:///path (only Unix socket endpoints "
                              "are supported)",
                 uri);
        return -1;
    }
    n = strlen(p);
    if (n < 2 || p[n - 1] == '/' || strpbrk(p, "?#") != NULL) {
        snprintf(err, errlen, "\"%.200s\": expected unix:///path (a socket file)", uri);
        return -1;
    }
    if (n >= len || n > 107) {
        snprintf(err, errlen, "\"%.200s\": socket path longer than 107 bytes", uri);
        return -1;
    }
    memcpy(path, p, n + 1);
    return 0;
}
