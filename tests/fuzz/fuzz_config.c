/*
 * fuzz_config.c - px_config_parse() (proxy/base/config.c) with dir "/tmp".
 *
 * The parser only turns bytes into a struct: it must not open the files
 * the config names. Invariants on success: workers resolved to >= 1,
 * node_id set, every listener has a name, bind host and port, names are
 * unique, relative paths were made absolute against "/tmp", durations and
 * limits non-negative, signing key arrays parallel, admin bind loopback.
 * On failure the error text starts with the file name given.
 */
#include <string.h>

#include "certs.h"
#include "config.h"
#include "fuzz_common.h"

static void check_path(const char *p)
{
    if (p != NULL && strcmp(p, "-") != 0)
        FUZZ_CHECKF(p[0] == '/', "path '%s' not resolved against /tmp", p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct px_config *cfg = NULL;
    char err[512] = "";
    int rc = px_config_parse(&cfg, "fuzz.json", "/tmp", (const char *)data, size, err, sizeof(err));

    if (rc != 0) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECKF(strncmp(err, "fuzz.json", 9) == 0, "error text '%s'", err);
        FUZZ_CHECK(cfg == NULL);
        return 0;
    }
    FUZZ_CHECK(cfg != NULL);
    FUZZ_CHECK(cfg->workers >= 1);
    FUZZ_CHECK(cfg->node_id != NULL && cfg->node_id[0] != '\0');
    check_path(cfg->identity.cert);
    check_path(cfg->identity.key);
    for (size_t i = 0; i < cfg->identity.ntrust_bundles; i++) {
        const struct px_trust_domain_cfg *tb = &cfg->identity.trust_bundles[i];
        FUZZ_CHECK(tb->trust_domain != NULL && tb->file != NULL);
        FUZZ_CHECK(certs_trust_domain_valid(tb->trust_domain, strlen(tb->trust_domain)));
        check_path(tb->file);
    }
    FUZZ_CHECK(cfg->identity.max_svid_lifetime_ms >= 0 && cfg->identity.reload_interval_ms >= 0);
    FUZZ_CHECK(!(cfg->policy.file != NULL && cfg->policy.url != NULL));
    check_path(cfg->policy.file);
    for (size_t i = 0; i < cfg->policy.nsigning_keys; i++) {
        FUZZ_CHECK(cfg->policy.signing_key_ids[i] != NULL && cfg->policy.signing_key_files[i] != NULL);
        check_path(cfg->policy.signing_key_files[i]);
    }
    FUZZ_CHECK(cfg->policy.poll_min_ms >= 0 && cfg->policy.poll_max_ms >= 0 &&
               cfg->policy.long_poll_ms >= 0 && cfg->policy.max_staleness_ms >= 0);
    for (size_t i = 0; i < cfg->ndispatch; i++) {
        const struct px_dispatch_cfg *d = &cfg->dispatch[i];
        FUZZ_CHECK(d->name != NULL && d->timeout_ms >= 0 && d->cache_entries >= 0 &&
                   d->max_cache_ttl_ms >= 0);
        for (size_t k = 0; k < d->nheaders; k++)
            for (const char *c = d->headers[k]; *c; c++)
                FUZZ_CHECKF(!(*c >= 'A' && *c <= 'Z'), "header '%s' not lowercased", d->headers[k]);
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct px_listener_cfg *l = &cfg->listeners[i];
        FUZZ_CHECK(l->name != NULL && l->bind_host != NULL && l->bind_port != NULL);
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECKF(strcmp(cfg->listeners[k].name, l->name) != 0, "listener '%s' twice",
                        l->name);
        if (l->has_upstream)
            FUZZ_CHECK(l->upstream.host != NULL && l->upstream.port != NULL);
        for (size_t k = 0; k < l->nroutes; k++)
            FUZZ_CHECK(l->routes[k].upstream.host != NULL && l->routes[k].upstream.port != NULL);
    }
    /* probe targets end up in an HTTP request line and header block, and
     * their names in a URL path: nothing that could split either */
    FUZZ_CHECK(cfg->probes.ntargets <= PX_PROBE_MAX_TARGETS && cfg->probes.timeout_ms > 0);
    for (size_t i = 0; i < cfg->probes.ntargets; i++) {
        const struct px_probe_target *t = &cfg->probes.targets[i];
        FUZZ_CHECK(t->name != NULL && t->name[0] != '\0' &&
                   strlen(t->name) <= PX_PROBE_NAME_MAX && t->timeout_ms >= 0);
        FUZZ_CHECKF(strspn(t->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789._-/") == strlen(t->name) &&
                        t->name[0] != '/' && strstr(t->name, "//") == NULL,
                    "probe name '%s'", t->name);
        for (size_t k = 0; k < i; k++)
            FUZZ_CHECKF(strcmp(cfg->probes.targets[k].name, t->name) != 0, "probe '%s' twice",
                        t->name);
        FUZZ_CHECK(t->up.host != NULL && t->up.port != NULL);
        if (t->kind == PX_PROBE_HTTP) {
            FUZZ_CHECK(t->path != NULL && t->path[0] == '/' && t->authority != NULL);
            FUZZ_CHECKF(strpbrk(t->path, " \r\n\t#") == NULL, "probe path '%s'", t->path);
            FUZZ_CHECK(strpbrk(t->authority, " \r\n") == NULL);
            for (size_t k = 0; k < t->nhdrs; k++)
                FUZZ_CHECK(strpbrk(t->hdr_names[k], " :\r\n") == NULL &&
                           strpbrk(t->hdr_values[k], "\r\n") == NULL);
        }
        if (t->kind == PX_PROBE_GRPC)
            FUZZ_CHECK(t->service != NULL);
    }
    if (cfg->admin.bind_host != NULL)
        FUZZ_CHECKF(px_config_host_is_loopback(cfg->admin.bind_host), "admin bind '%s'",
                    cfg->admin.bind_host);
    FUZZ_CHECK(cfg->log.level >= 0 && cfg->log.level <= 3);
    check_path(cfg->log.access);
    check_path(cfg->log.audit);
    FUZZ_CHECK(cfg->limits.max_connections >= 0 && cfg->limits.max_concurrent_streams >= 0 &&
               cfg->limits.max_header_list_size >= 0 && cfg->limits.header_timeout_ms >= 0 &&
               cfg->limits.idle_timeout_ms >= 0 && cfg->limits.upstream_timeout_ms >= 0 &&
               cfg->limits.drain_timeout_ms >= 0 && cfg->limits.handshake_timeout_ms >= 0 &&
               cfg->limits.stream_buffer >= 0);
    px_config_free(cfg);
    return 0;
}
