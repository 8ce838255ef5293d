/*
 * config.h - the daemon's configuration (DESIGN.md "Config"), parsed from
 * JSON with jsmn. Key names are a contract. A parsed config is immutable and
 * owned by whoever called px_config_load(); free with px_config_free().
 */
#ifndef PX_CONFIG_H
#define PX_CONFIG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define PX_CONFIG_MAX_FILE (4 * 1024 * 1024) /* config files larger than this are refused */

/* listeners[].headers_with_underscores and listeners[].path_params */
enum px_underscores { PX_US_DROP, PX_US_REJECT, PX_US_ALLOW };
enum px_path_params { PX_PP_REJECT, PX_PP_KEEP };

enum px_upstream_proto {
    PX_UP_H2C,
    PX_UP_H1,
    PX_UP_MTLS, /* outbound: h2 over mTLS; tcp_outbound: opaque bytes over mTLS */
    PX_UP_TCP   /* tcp_inbound: "tcp://host:port", opaque bytes */
};

struct px_upstream_addr {
    enum px_upstream_proto proto;
    char *host; /* "127.0.0.1" (IPv4/IPv6 literal or name) */
    char *port; /* "8080" */
    char *url;  /* the original string, for logs */
    const char *server_id; /* PX_UP_MTLS: expected SPIFFE ID of the server (borrowed from the
                            * route or dispatch entry that owns it) */
    int alpn_probe;        /* PX_UP_MTLS: offer h2 and http/1.1 (dispatch, control plane);
                            * 0 = h2 only (picket to picket) */
};

struct px_route {
    char *authority;     /* NULL = any; matched without port, case-insensitive */
    char *path_prefix;   /* NULL = any */
    struct px_upstream_addr upstream;
    char *server_id;     /* outbound routes: expected SPIFFE ID of the server */
    int64_t timeout_ms;  /* "timeout": whole-request deadline; 0 = the listener's */
};

enum px_listener_kind {
    PX_LISTENER_INBOUND,
    PX_LISTENER_OUTBOUND,
    PX_LISTENER_TCP_INBOUND, /* mTLS terminated, one decision at connect, bytes to upstream */
    PX_LISTENER_TCP_OUTBOUND /* plain TCP from the app, mTLS with the SVID to upstream */
};

/* Listener kinds whose client side is the local app (plaintext, loopback). */
#define PX_KIND_IS_OUTBOUND(k) ((k) == PX_LISTENER_OUTBOUND || (k) == PX_LISTENER_TCP_OUTBOUND)
/* Opaque TCP listener kinds (proxy/server/tunnel.c). */
#define PX_KIND_IS_TCP(k) ((k) == PX_LISTENER_TCP_INBOUND || (k) == PX_LISTENER_TCP_OUTBOUND)

struct px_listener_cfg {
    char *name;
    enum px_listener_kind kind;
    char *bind_host; /* "0.0.0.0" */
    char *bind_port; /* "15443" */
    int has_upstream;
    struct px_upstream_addr upstream; /* default upstream (inbound) */
    struct px_route *routes;
    size_t nroutes;
    char **trusted_forwarders; /* SPIFFE IDs whose forwarding headers are kept */
    size_t ntrusted_forwarders;
    int allow_remote;          /* outbound: may bind a non-loopback address */
    int underscores;           /* enum px_underscores: drop, reject, allow */
    int path_params;           /* enum px_path_params: reject, keep */
    int64_t timeout_ms;        /* "timeout": whole-request deadline of its requests (a route's
                                * own wins); 0 = none */
    char *server_id;           /* tcp_outbound: the SPIFFE ID the upstream must present */
};

#define PX_TIMEOUT_MIN_MS 10LL          /* routes[].timeout and listeners[].timeout: */
#define PX_TIMEOUT_MAX_MS 86400000LL    /* 10ms to 24h */

struct px_trust_domain_cfg {
    char *trust_domain; /* "example.org" */
    char *file;         /* PEM or SPIFFE JWKS bundle */
};

struct px_dispatch_cfg {
    char *name;
    char *url;
    char *server_id;
    int64_t timeout_ms;      /* default 200ms */
    int64_t cache_entries;   /* default 10000 */
    int64_t max_cache_ttl_ms; /* "max_cache_ttl", default 5m */
    int on_error_allow;      /* on_error: "deny" (0, default) | "allow" (1) */
    char **headers;          /* lowercased */
    size_t nheaders;
};

/* probes.targets.NAME: what GET /app-health/NAME checks (probes.c). */
enum px_probe_kind { PX_PROBE_HTTP, PX_PROBE_TCP, PX_PROBE_GRPC };

#define PX_PROBE_NAME_MAX 128    /* bytes of a target's name */
#define PX_PROBE_MAX_HEADERS 16  /* http: extra request header fields */
#define PX_PROBE_MAX_TARGETS 128 /* the config's and PICKET_APP_PROBES's together */

struct px_probe_target {
    char *name;             /* "app/livez": letters, digits, '.', '-', '_' in '/'-separated
                             * segments, none empty, "." or ".." */
    enum px_probe_kind kind;
    int tls;                /* http: an https:// URL (no certificate check, as the kubelet) */
    struct px_upstream_addr up; /* where to connect: host, port, url (the value as given);
                                 * proto PX_UP_H2C for grpc, PX_UP_H1 otherwise */
    char *authority;        /* http: the Host field ("127.0.0.1:8080", as in the URL) */
    char *path;             /* http: origin-form target, query included ("/healthz") */
    char *service;          /* grpc: HealthCheckRequest.service; "" = the whole server */
    char **hdr_names;       /* http: extra request fields (names as given) */
    char **hdr_values;
    size_t nhdrs;
    int64_t timeout_ms;     /* 0: probes.timeout */
};
/* identity.source */
enum px_identity_source { PX_ID_FILES, PX_ID_WORKLOAD_API };

struct px_config {
    atomic_int refs; /* px_config_ref() / px_config_free(); 1 when parsed */
    char *path; /* the file it came from */
    char *node_id; /* default: "<hostname>/picket" */
    int workers;   /* 0 in the file = number of CPUs; resolved here to >= 1 */
    char *state_dir; /* picket's small state files (the policy revision floor); NULL = none */

    struct {
        char *cert, *key; /* paths, resolved relative to the config file's directory */
        struct px_trust_domain_cfg *trust_bundles;
        size_t ntrust_bundles;
        int64_t max_svid_lifetime_ms; /* default 24h */
        int64_t reload_interval_ms;   /* default 5s */
        int source;                   /* enum px_identity_source; default files */
        char *workload_api_socket;    /* "unix:///path" (the key, else $SPIFFE_ENDPOINT_SOCKET);
                                       * set only with source workload_api */
        char *svid_hint;              /* NULL = the first SVID of each message */
    } identity;

    struct {
        char *file; /* exactly one of file / url, or neither (no policy) */
        char *url;
        char *server_id;
        char **signing_key_ids; /* parallel arrays: keyid -> PEM public key path */
        char **signing_key_files;
        size_t nsigning_keys;
        int64_t poll_min_ms, poll_max_ms, long_poll_ms; /* 10s, 20s, 30s */
        char *cache_dir;                                /* NULL = no persistence */
        int64_t max_staleness_ms;                       /* default 5m */
        int on_stale_deny; /* on_stale: "deny" (1, default) | "last_known_good" (0) */
    } policy;

    struct px_dispatch_cfg *dispatch;
    size_t ndispatch;

    struct px_listener_cfg *listeners;
    size_t nlisteners;

    struct {
        char *bind_host, *bind_port; /* NULL = no admin listener; must be loopback */
    } admin;

    struct {
        char *bind_host, *bind_port; /* NULL = 0.0.0.0:15021 when there is a target (see
                                      * px_config_probes_bind()) */
        int64_t timeout_ms;          /* default 1s */
        struct px_probe_target *targets; /* from the file, then PICKET_APP_PROBES */
        size_t ntargets;
    } probes;

    struct {
        char *bind_host, *bind_port; /* NULL = none; any address: serves GET /metrics only */
    } metrics;

    struct {
        char *resolv_conf;       /* default /etc/resolv.conf */
        char *hosts;             /* default /etc/hosts */
        int64_t min_ttl_ms;      /* 5s: a record is asked again no sooner */
        int64_t max_ttl_ms;      /* 5m: and no later */
        int64_t negative_ttl_ms; /* 5s: a failed lookup is remembered this long */
        int64_t timeout_ms;      /* 2s per query attempt (2 attempts) */
    } dns;

    struct {
        int level;    /* 0 debug, 1 info, 2 warn, 3 error; default info */
        char *access; /* "-" = stdout, NULL = off, else a path */
        char *audit;  /* same */
    } log;

    struct {
        int64_t max_connections;        /* 10000, per listener kind (inbound, outbound) */
        int64_t max_handshakes;         /* 256: connections still in their TLS handshake */
        int64_t max_concurrent_streams; /* 100 */
        int64_t max_header_list_size;   /* 65536 */
        int64_t max_headers;            /* 100: fields per header (and trailer) section */
        int64_t max_target_length;      /* 8192: bytes of the request target (path + query) */
        int64_t header_timeout_ms;      /* 10s */
        int64_t idle_timeout_ms;        /* 60s */
        int64_t upstream_timeout_ms;    /* 30s */
        int64_t drain_timeout_ms;       /* 20s */
        int64_t drain_notice_delay_ms;  /* 0: GOAWAY / Connection: close at once on drain */
        int64_t handshake_timeout_ms;   /* 10s */
        int64_t stream_buffer;          /* 1 MiB: per-stream, per-direction body buffer (and
                                         * per TCP tunnel, per direction) */
        int64_t tunnel_idle_timeout_ms; /* 1h: a TCP tunnel with no byte either way is closed */
        int64_t memory_budget;          /* 64 MiB: bytes held for peers, all of them (mem.h) */
    } limits;
};

/* Reads and validates `path`. On success returns 0 and a config in *out.
 * On failure returns -1 with "path:line:col: message" (or "path: message"
 * for I/O errors) in err. Relative file paths in the config are resolved
 * against the config file's directory. */
int px_config_load(struct px_config **out, const char *path, char *err, size_t errlen);

/* Same from memory; `name` is used as the file name in messages and `dir`
 * for resolving relative paths (may be NULL = current directory). */
int px_config_parse(struct px_config **out, const char *name, const char *dir, const char *json,
                    size_t len, char *err, size_t errlen);

/* A parsed config is immutable, so snapshots may share one: _ref takes a
 * reference (returns cfg), _free drops one and frees on the last. NULL is a
 * no-op for both. Any thread. */
struct px_config *px_config_ref(struct px_config *cfg);
/* An empty config (every field zero, one reference), for callers that fill
 * one section by hand (the injector's probe check). NULL when out of memory. */
struct px_config *px_config_new_empty(void);
void px_config_free(struct px_config *cfg);

/* The socket path of a Workload API endpoint URI (SPIFFE Workload
 * Endpoint spec 4): "unix:///path" or "unix:/path", an absolute path of at
 * most 107 bytes, no query or fragment. Writes it NUL-terminated into path
 * (len bytes). Returns 0, or -1 with a message in err. Pure. */
int px_config_socket_path(const char *uri, char *path, size_t len, char *err, size_t errlen);

/* Adds the probe targets of a JSON object of the same shape as
 * probes.targets (name -> {"http": ...} | {"tcp": ...} | {"grpc": ...,
 * "service": ...}) to cfg, as `picket run` does with PICKET_APP_PROBES.
 * `name` prefixes messages ("PICKET_APP_PROBES:1:9: ..."). A name the
 * config already has is an error, as is going past
 * PX_PROBE_MAX_TARGETS. 0, or -1 with a message (cfg then holds the
 * targets added before the error; free it). */
int px_config_add_probe_targets(struct px_config *cfg, const char *name, const char *json,
                                size_t len, char *err, size_t errlen);

/* Replaces probes.bind ("probes") or metrics.bind ("metrics") with
 * `hostport` ("0.0.0.0:15090"), as `picket run --probes-bind/--metrics-bind`
 * do. 0, or -1 with a message (a bad address, or one an admin or data
 * listener already binds). */
int px_config_set_bind(struct px_config *cfg, const char *which, const char *hostport, char *err,
                       size_t errlen);

/* Where the probes listener binds: probes.bind, else 0.0.0.0:15021 when
 * there is a target. 1 with *host and *port set (borrowed from cfg or
 * static), 0 when there is no target (no listener). Pure. */
int px_config_probes_bind(const struct px_config *cfg, const char **host, const char **port);

/* Level names: "debug", "info", "warn", "error"; -1 if unknown. Pure. */
int px_log_level_parse(const char *s);

/* 1 if `host` (no brackets, no port) is a loopback address: an IPv4
 * literal in 127.0.0.0/8, "::1" or "localhost" (ASCII case-insensitive);
 * 0 otherwise. Pure; used for admin.bind and by px_admin_start(). */
int px_config_host_is_loopback(const char *host);

#endif
