/*
 * cmd_control.c - `picket control serve`: argument parsing around the
 * reference control plane in control.c (DESIGN.md "Roles and modes").
 *
 *   picket control serve --dir DIR --bind HOST:PORT --cert SVID.pem
 *       --key SVID.key --bundle [TD=]FILE [...] [--allow ID ...]
 *       [--max-wait 60s] [--max-waiters 1000] [--max-waiters-per-client 4]
 *       [--max-connections 2048] [--header-timeout 10s]
 *
 * --allow patterns are checked here so a typo is a usage error rather than
 * a server that refuses every sidecar.
 *
 * Exit status: 0 stopped by SIGTERM/SIGINT; 1 failed to start or run; 2
 * usage error.
 */
#include "cli.h"
#include "cmd_control.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certs.h"
#include "control.h"
#include "log.h"

#define MAX_LIST 64 /* --trust-bundle / --allow occurrences */

static const char usage_text[] =
    "usage:\n"
    "  picket control serve --dir DIR --bind HOST:PORT --cert SVID.pem --key SVID.key\n"
    "      --bundle [TD=]FILE [--bundle ...]   (alias: --trust-bundle)\n"
    "      [--allow SPIFFE_ID|spiffe://TD/* ...] [--max-wait 60s] [--max-waiters 1000]\n"
    "      [--max-waiters-per-client 4] [--max-connections 2048] [--header-timeout 10s]\n"
    "  serves DIR/<name> (signed envelopes made with `picket bundle sign`) over mTLS:\n"
    "  GET /<name> with ETag, If-None-Match (304) and `Prefer: wait=N` long-poll.\n"
    "  --max-waiters: held long-polls in all; --max-waiters-per-client: per client\n"
    "  SPIFFE ID (past it the client's oldest held request is answered 304).\n"
    "  --max-connections: open connections (held long-polls included); more wait in\n"
    "  the kernel's accept queue. --header-timeout: a connection must complete its TLS\n"
    "  handshake and request within this of being accepted (or of its last answer).\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = px_cli_vusage_error("picket control", usage_text, fmt, ap);
    va_end(ap);
    return rc;
}

/* "host:port" or "[v6]:port" -> host (brackets removed) and port 0..65535. */
static int parse_bind(const char *bind, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(bind, ':');
    char *end = NULL;
    long p;
    size_t hl;
    if (colon == NULL || colon[1] == '\0')
        return -1;
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p < 0 || p > 65535)
        return -1;
    hl = (size_t)(colon - bind);
    if (hl >= 2 && bind[0] == '[' && bind[hl - 1] == ']') {
        bind++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen || memchr(bind, '[', hl) || memchr(bind, ']', hl))
        return -1;
    memcpy(host, bind, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

/* An exact SPIFFE ID, or a valid ID (the trust domain alone included)
 * followed by "/" + "*". */
static int allow_ok(const char *a)
{
    size_t n = strlen(a);
    if (n >= 2 && a[n - 2] == '/' && a[n - 1] == '*')
        return certs_spiffe_id_valid(a, n - 2);
    return certs_spiffe_id_valid(a, n) && strchr(a + 9, '/') != NULL;
}

static int cmd_serve(int argc, char **argv)
{
    struct certs_trust_source trust[MAX_LIST];
    char tds[MAX_LIST][CERTS_TRUST_DOMAIN_MAX + 1];
    const char *allow[MAX_LIST];
    size_t ntrust = 0, nallow = 0, nbare = 0;
    const char *bare[MAX_LIST];
    const char *dir = NULL, *bind = NULL, *cert = NULL, *key = NULL;
    struct px_control_opts o;
    struct px_control *c = NULL;
    char host[256], err[1024];
    int port = 0, rc;

    memset(&o, 0, sizeof(o));
    o.max_wait_ms = PX_CONTROL_MAX_WAIT_MS;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (px_cli_opt(argc, argv, &i, "--dir", &v) || px_cli_opt(argc, argv, &i, "--bind", &v) ||
            px_cli_opt(argc, argv, &i, "--cert", &v) || px_cli_opt(argc, argv, &i, "--key", &v)) {
            const char *name = argv[i][0] == '-' ? argv[i] : argv[i - 1];
            if (v == NULL || v[0] == '\0')
                return usage_error("%.*s needs a value", (int)strcspn(name, "="), name);
            if (strncmp(name, "--dir", 5) == 0)
                dir = v;
            else if (strncmp(name, "--bind", 6) == 0)
                bind = v;
            else if (strncmp(name, "--cert", 6) == 0)
                cert = v;
            else
                key = v;
        } else if (px_cli_opt(argc, argv, &i, "--bundle", &v) ||
                   px_cli_opt(argc, argv, &i, "--trust-bundle", &v)) {
            /* --bundle TD=FILE, or --bundle FILE for our own trust domain
             * (the one in --cert's SPIFFE ID, resolved once --cert is
             * known). --trust-bundle is the same option. */
            const char *eq = v != NULL ? strchr(v, '=') : NULL;
            size_t tl = eq != NULL ? (size_t)(eq - v) : 0;
            if (v == NULL || v[0] == '\0')
                return usage_error("%s", "--bundle needs [TRUST_DOMAIN=]FILE");
            if (eq != NULL && certs_trust_domain_valid(v, tl) && eq[1] != '\0') {
                if (ntrust == MAX_LIST)
                    return usage_error("at most %d --bundle", MAX_LIST);
                memcpy(tds[ntrust], v, tl);
                tds[ntrust][tl] = '\0';
                trust[ntrust].trust_domain = tds[ntrust];
                trust[ntrust].path = eq + 1;
                ntrust++;
            } else {
                if (nbare == MAX_LIST)
                    return usage_error("at most %d --bundle", MAX_LIST);
                bare[nbare++] = v;
            }
        } else if (px_cli_opt(argc, argv, &i, "--allow", &v)) {
            if (v == NULL || !allow_ok(v))
                return usage_error("--allow: expected a SPIFFE ID or spiffe://TD/PATH/*, got '%s'",
                                   v ? v : "");
            if (nallow == MAX_LIST)
                return usage_error("at most %d --allow", MAX_LIST);
            allow[nallow++] = v;
        } else if (px_cli_opt(argc, argv, &i, "--max-wait", &v)) {
            if (v == NULL || certs_duration_parse(v, strlen(v), &o.max_wait_ms) != 0 ||
                o.max_wait_ms > 3600000)
                return usage_error("--max-wait: expected a duration up to 1h such as 60s, got "
                                   "'%s'",
                                   v ? v : "");
        } else if (px_cli_opt(argc, argv, &i, "--max-waiters-per-client", &v)) {
            char *end = NULL;
            long n = v != NULL ? strtol(v, &end, 10) : 0;
            if (v == NULL || *end != '\0' || n < 1 || n > 100000)
                return usage_error("--max-waiters-per-client: expected 1..100000, got '%s'",
                                   v ? v : "");
            o.max_waiters_per_client = (size_t)n;
        } else if (px_cli_opt(argc, argv, &i, "--max-waiters", &v)) {
            char *end = NULL;
            long n = v != NULL ? strtol(v, &end, 10) : 0;
            if (v == NULL || *end != '\0' || n < 1 || n > 100000)
                return usage_error("--max-waiters: expected 1..100000, got '%s'", v ? v : "");
            o.max_waiters = (size_t)n;
        } else if (px_cli_opt(argc, argv, &i, "--max-connections", &v)) {
            char *end = NULL;
            long n = v != NULL ? strtol(v, &end, 10) : 0;
            if (v == NULL || *end != '\0' || n < 1 || n > 1000000)
                return usage_error("--max-connections: expected 1..1000000, got '%s'", v ? v : "");
            o.max_conns = (size_t)n;
        } else if (px_cli_opt(argc, argv, &i, "--header-timeout", &v)) {
            if (v == NULL || certs_duration_parse(v, strlen(v), &o.header_timeout_ms) != 0 ||
                o.header_timeout_ms < 100 || o.header_timeout_ms > 3600000)
                return usage_error("--header-timeout: expected a duration from 100ms to 1h such "
                                   "as 10s, got '%s'",
                                   v ? v : "");
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else {
            return usage_error("serve: unknown argument '%s'", argv[i]);
        }
    }
    if (nbare > 0 && cert != NULL) {
        /* trust domain of our own SVID */
        char *pem = NULL, id[2100], e2[256];
        size_t len = 0;
        STACK_OF(X509) *sk = NULL;
        const char *td = NULL;
        size_t tdl = 0;
        int ok = certs_read_file(cert, 1 << 20, &pem, &len, e2, sizeof(e2)) == 0 &&
                 certs_pem_certs(pem, len, &sk, e2, sizeof(e2)) == 0 && sk_X509_num(sk) > 0 &&
                 certs_cert_spiffe_id(sk_X509_value(sk, 0), id, sizeof(id)) == 0 &&
                 certs_spiffe_trust_domain(id, strlen(id), &td, &tdl) == 0 && tdl < 256;
        if (ok) {
            for (size_t b = 0; b < nbare; b++) {
                if (ntrust == MAX_LIST)
                    break;
                memcpy(tds[ntrust], td, tdl);
                tds[ntrust][tdl] = '\0';
                trust[ntrust].trust_domain = tds[ntrust];
                trust[ntrust].path = bare[b];
                ntrust++;
            }
        }
        sk_X509_pop_free(sk, X509_free);
        free(pem);
        if (!ok)
            return usage_error("--bundle FILE: cannot read the trust domain from --cert '%s' "
                               "(use --bundle TD=FILE)",
                               cert);
    }
    if (dir == NULL || bind == NULL || cert == NULL || key == NULL || ntrust == 0)
        return usage_error("%s", "serve: --dir, --bind, --cert, --key and --bundle are required");
    if (parse_bind(bind, host, sizeof(host), &port) != 0)
        return usage_error("--bind: expected HOST:PORT, got '%s'", bind);

    o.dir = dir;
    o.host = host;
    o.port = port;
    o.cert = cert;
    o.key = key;
    o.trust = trust;
    o.ntrust = ntrust;
    o.allow = nallow ? allow : NULL;
    o.nallow = nallow;
    if (px_control_new(&c, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "picket control serve: %s\n", err);
        px_log(PX_LOG_ERROR, "control_start_failed", "error", err, NULL);
        return 1;
    }
    /* A client that resets mid-write must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    rc = px_control_run(c);
    px_control_free(c);
    return rc;
}

int px_cmd_control(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(usage_text, stdout);
        return 0;
    }
    return usage_error("expected a subcommand: serve");
}
