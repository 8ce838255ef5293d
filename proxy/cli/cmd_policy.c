/*
 * cmd_policy.c - `picket policy lint|eval|test`: check a bundle, evaluate
 * one request against it and print the deciding rule, or run a table of
 * expected decisions. A thin shell over policy.h; the only I/O is reading
 * the two files and printing.
 *
 * eval and test build each request with the proxy's own canonical request
 * (request.h, default listener settings and limits), so a request the proxy
 * would refuse is refused here with the same reason, and the policy sees the
 * same method, host, path and fields it would see in the proxy.
 *
 * Exit status: lint 0 ok / 1 invalid; eval 0 allow / 1 deny (or a refused
 * path) / 3 dispatch; test 0 all pass / 1 otherwise; 2 for usage errors
 * and unreadable files.
 */
#include "cmd_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certs_json.h"
#include "config.h"
#include "policy.h"
#include "request.h"

#define TABLE_MAX_BYTES (16u * 1024u * 1024u)
#define TABLE_MAX_TOKENS (1024 * 1024)
#define MAX_CLI_HEADERS 64

static void usage(void)
{
    fprintf(stderr,
            "usage: picket policy lint FILE\n"
            "       picket policy eval FILE --path P [--peer SPIFFE_ID] [--method M]\n"
            "                              [--host H] [--header name=value]...\n"
            "       picket policy test FILE TABLE.json\n"
            "TABLE.json: [{\"peer\":..., \"method\":..., \"path\":..., \"host\":...,\n"
            "              \"headers\":{\"name\":\"value\"}, \"expect\":\"allow|deny|dispatch\",\n"
            "              \"rule\":\"optional rule id\"}, ...]\n");
}

/* Reads a whole file (at most max bytes) into a malloc'ed buffer. */
static char *read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;

    if (f == NULL) {
        fprintf(stderr, "%s: cannot open\n", path);
        return NULL;
    }
    for (;;) {
        size_t got;
        if (n == cap) {
            char *nb;
            cap = cap ? 2 * cap : 65536;
            if (cap > max + 1)
                cap = max + 1;
            if (n == cap) {
                fprintf(stderr, "%s: larger than %zu bytes\n", path, max);
                goto fail;
            }
            nb = realloc(buf, cap);
            if (nb == NULL) {
                fprintf(stderr, "%s: out of memory\n", path);
                goto fail;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "%s: read error\n", path);
        goto fail;
    }
    fclose(f);
    *len = n;
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

/* Prints "FILE:line:col: msg" (or "FILE: msg" when err has no position). */
static void print_err(const char *file, const char *err)
{
    fprintf(stderr, "%s:%s%s\n", file, (err[0] >= '0' && err[0] <= '9') ? "" : " ",
            err[0] != '\0' ? err : "invalid");
}

/* Parses and compiles FILE. Returns 0, 1 (invalid bundle) or 2 (unreadable). */
static int load(const char *file, struct policy_bundle **b, struct policy_engine **e)
{
    char err[512] = "";
    size_t len = 0;
    char *js = read_file(file, POLICY_BUNDLE_MAX_BYTES, &len);
    int rc;

    if (js == NULL)
        return 2;
    rc = policy_bundle_parse(b, js, len, err, sizeof(err));
    free(js);
    if (rc != 0) {
        print_err(file, err);
        return 1;
    }
    if (e != NULL && policy_engine_new(e, *b, err, sizeof(err)) != 0) {
        print_err(file, err);
        policy_bundle_free(*b);
        *b = NULL;
        return 1;
    }
    return 0;
}

static int cmd_lint(int argc, char **argv)
{
    struct policy_bundle *b = NULL;
    const char *const *targets = NULL;
    size_t ntargets;
    int64_t exp;
    int rc;

    if (argc != 3) {
        usage();
        return 2;
    }
    if ((rc = load(argv[2], &b, NULL)) != 0)
        return rc;
    printf("ok: revision %lld, %zu rules\n", (long long)policy_bundle_revision(b),
           policy_bundle_rule_count(b));
    ntargets = policy_bundle_dispatch_targets(b, &targets);
    for (size_t i = 0; i < ntargets; i++)
        printf("dispatch target: %s\n", targets[i]);
    exp = policy_bundle_expires_at(b);
    if (exp != 0 && exp <= (int64_t)time(NULL))
        fprintf(stderr, "%s: warning: expires_at is in the past\n", argv[2]);
    {
        /* Not an error: a bundle serves HTTP listeners too. Said once, with
         * the first such rule, so a TCP-only bundle's author sees it. */
        size_t n = 0;
        const char *first = NULL, *id = NULL;
        for (size_t i = 0; i < policy_bundle_rule_count(b); i++)
            if (policy_bundle_rule_http_only(b, i, &id) == 1 && n++ == 0)
                first = id;
        if (n > 0)
            fprintf(stderr,
                    "%s: note: %zu of %zu rules (first: \"%s\") name hosts, methods, paths or "
                    "headers: they never match an opaque TCP connection (tcp_inbound listeners "
                    "decide by the caller's identity alone)\n",
                    argv[2], n, policy_bundle_rule_count(b), first);
    }
    policy_bundle_free(b);
    return 0;
}

static int verdict_exit(enum policy_verdict v)
{
    return v == POLICY_ALLOW ? 0 : v == POLICY_DISPATCH ? 3 : 1;
}

/* Lowercases name in place; splits "name=value". Returns 0 or -1. */
static int split_header(char *arg, struct policy_header *h)
{
    char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg)
        return -1;
    for (char *p = arg; p < eq; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    h->name = arg;
    h->name_len = (size_t)(eq - arg);
    h->value = eq + 1;
    h->value_len = strlen(eq + 1);
    return 0;
}

/* Host used when a case names none: the reserved .invalid name (RFC 6761),
 * which no deployed hosts rule names. */
#define NO_HOST "invalid"

/* Builds the request as the proxy would (request.h) and evaluates it.
 * Returns 0 with *d filled, or 1 when the proxy would refuse the request,
 * with "STATUS:reason" in refused. `shown` gets the path the policy saw. */
static int canonical_eval(const struct policy_engine *e, const char *peer, const char *method,
                          const char *host, const char *path, const struct policy_header *h,
                          size_t nh, struct policy_decision *d, char *refused, size_t rlen,
                          char *shown, size_t slen)
{
    static struct px_config cfg;
    static struct px_listener_cfg lc;
    struct px_request rq;
    struct px_request_ctx ctx;
    struct policy_header *hb = NULL;
    struct policy_request q;
    enum px_reason reason = PX_R_OUT_OF_MEMORY;
    int rc = 500;

    cfg.limits.max_headers = 100; /* the daemon's defaults (config.c) */
    cfg.limits.max_header_list_size = 65536;
    cfg.limits.max_target_length = 8192;
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = &cfg;
    ctx.lc = &lc;
    ctx.tls = 1;
    ctx.peer_id = peer;
    ctx.peer_cert_hash = "";
    ctx.peer_ip = "";
    ctx.own_id = "";
    px_request_init(&rq);
    if (px_request_set_method(&rq, method, strlen(method)) == 0 &&
        px_request_set_target(&rq, path, strlen(path)) == 0 &&
        px_request_set_authority(&rq, host, strlen(host)) == 0) {
        rc = 0;
        for (size_t i = 0; i < nh && rc == 0; i++)
            if (px_request_add_field(&rq, &cfg, h[i].name, h[i].name_len, h[i].value,
                                     h[i].value_len) == -2)
                rc = 500;
        if (rc == 0)
            rc = px_request_build(&rq, &ctx, &reason);
    }
    if (rc == 0 && (hb = calloc(rq.hdrs.n + 1, sizeof(*hb))) == NULL) {
        rc = 500;
        reason = PX_R_OUT_OF_MEMORY;
    }
    if (rc != 0) {
        snprintf(refused, rlen, "%d:%s", rc, reason != PX_R_NONE ? px_reason_name(reason) : "refused");
        px_request_clear(&rq);
        return 1;
    }
    px_request_policy_input(&rq, peer, hb, &q);
    policy_eval(e, &q, d);
    snprintf(shown, slen, "%.*s", (int)rq.match_path_len, rq.match_path);
    free(hb);
    px_request_clear(&rq);
    return 0;
}

static int cmd_eval(int argc, char **argv)
{
    struct policy_header hdrs[MAX_CLI_HEADERS];
    struct policy_request q = {.method = "GET", .method_len = 3, .headers = hdrs};
    struct policy_decision d;
    struct policy_bundle *b = NULL;
    struct policy_engine *e = NULL;
    const char *path = NULL, *peer = "", *host = "";
    char refused[96], shown[8300];
    int rc;

    if (argc < 3) {
        usage();
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--peer") != 0 && strcmp(opt, "--method") != 0 &&
            strcmp(opt, "--path") != 0 && strcmp(opt, "--host") != 0 &&
            strcmp(opt, "--header") != 0) {
            fprintf(stderr, "policy eval: unknown option %s\n", opt);
            usage();
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "policy eval: %s needs a value\n", opt);
            return 2;
        }
        if (strcmp(opt, "--peer") == 0) {
            peer = argv[++i];
        } else if (strcmp(opt, "--method") == 0) {
            q.method = argv[++i];
            q.method_len = strlen(q.method);
        } else if (strcmp(opt, "--path") == 0) {
            path = argv[++i];
        } else if (strcmp(opt, "--host") == 0) {
            host = argv[++i];
        } else if (strcmp(opt, "--header") == 0) {
            if (q.nheaders == MAX_CLI_HEADERS || split_header(argv[++i], &hdrs[q.nheaders]) < 0) {
                fprintf(stderr, "policy eval: --header wants name=value (at most %d)\n",
                        MAX_CLI_HEADERS);
                return 2;
            }
            q.nheaders++;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "policy eval: --path is required\n");
        return 2;
    }
    if ((rc = load(argv[2], &b, &e)) != 0)
        return rc;
    if (canonical_eval(e, peer, q.method, host[0] ? host : NO_HOST, path, hdrs, q.nheaders, &d,
                       refused, sizeof(refused), shown, sizeof(shown)) != 0) {
        /* the proxy answers this itself: it never reaches the policy */
        printf("decision: refused (%.3s)\nreason: %s\n", refused, strchr(refused, ':') + 1);
        rc = 1;
        goto out;
    }
    printf("decision: %s\nrule: %s\n", policy_verdict_name(d.verdict), d.rule_id);
    if (d.dispatch != NULL)
        printf("dispatch: %s\n", d.dispatch);
    printf("path: %s\nrevision: %lld\n", shown, (long long)d.revision);
    if (d.audit)
        printf("mode: audit (would %s; not enforced)\n", policy_verdict_name(d.verdict));
    rc = verdict_exit(d.verdict);
out:
    policy_engine_free(e);
    policy_bundle_free(b);
    return rc;
}

/* One case of a test table; strings are malloc'ed copies. */
struct tcase {
    char *peer, *method, *path, *host, *expect, *rule;
    struct policy_header hdrs[MAX_CLI_HEADERS];
    char *hbuf[MAX_CLI_HEADERS * 2];
    size_t nh, nbuf;
};

static void tcase_clear(struct tcase *t)
{
    free(t->peer);
    free(t->method);
    free(t->path);
    free(t->host);
    free(t->expect);
    free(t->rule);
    for (size_t i = 0; i < t->nbuf; i++)
        free(t->hbuf[i]);
    memset(t, 0, sizeof(*t));
}

static int add_header(struct tcase *t, const struct certs_json *j, int name, int val)
{
    char *n, *v;
    if (t->nh == MAX_CLI_HEADERS || !certs_json_is_str(j, val))
        return -1;
    n = certs_json_strdup(j, name);
    v = certs_json_strdup(j, val);
    if (n != NULL)
        t->hbuf[t->nbuf++] = n;
    if (v != NULL)
        t->hbuf[t->nbuf++] = v;
    if (n == NULL || v == NULL)
        return -1;
    for (char *p = n; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    t->hdrs[t->nh++] = (struct policy_header){n, strlen(n), v, strlen(v)};
    return 0;
}

/* Reads case object obj; on error writes "line:col: msg" to err. */
static int tcase_read(struct tcase *t, const struct certs_json *j, int obj, char *err, size_t elen)
{
    static const char *const keys[] = {"peer", "method", "path", "host", "expect", "rule"};
    char **dst[] = {&t->peer, &t->method, &t->path, &t->host, &t->expect, &t->rule};
    int h, n = 0;

    if (!certs_json_is_obj(j, obj))
        return certs_json_errf(j, obj, err, elen, "case must be an object");
    for (int k = certs_json_first(j, obj); k > 0 && n < j->tok[obj].size;
         k = certs_json_next_key(j, k), n++) {
        size_t i;
        for (i = 0; i < sizeof(keys) / sizeof(keys[0]) && !certs_json_eq(j, k, keys[i]); i++)
            ;
        if (i < sizeof(keys) / sizeof(keys[0])) {
            if (*dst[i] != NULL || (*dst[i] = certs_json_strdup(j, k + 1)) == NULL)
                return certs_json_errf(j, k + 1, err, elen, "%s must be a string (once)", keys[i]);
        } else if (!certs_json_eq(j, k, "headers")) {
            return certs_json_errf(j, k, err, elen, "unknown key in case");
        }
    }
    if (t->path == NULL || t->expect == NULL)
        return certs_json_errf(j, obj, err, elen, "case needs \"path\" and \"expect\"");
    if (strcmp(t->expect, "allow") != 0 && strcmp(t->expect, "deny") != 0 &&
        strcmp(t->expect, "dispatch") != 0)
        return certs_json_errf(j, obj, err, elen, "expect must be allow, deny or dispatch");
    h = certs_json_get(j, obj, "headers");
    if (h >= 0) {
        int m = 0;
        if (!certs_json_is_obj(j, h))
            return certs_json_errf(j, h, err, elen, "headers must be an object");
        for (int k = certs_json_first(j, h); k > 0 && m < j->tok[h].size;
             k = certs_json_next_key(j, k), m++) {
            int ok = 0;
            if (certs_json_is_arr(j, k + 1)) { /* repeated header: ["a", "b"] */
                int e = certs_json_first(j, k + 1);
                ok = 1;
                for (int c = 0; c < j->tok[k + 1].size && ok; c++, e = certs_json_next_elem(j, e))
                    ok = add_header(t, j, k, e) == 0;
            } else {
                ok = add_header(t, j, k, k + 1) == 0;
            }
            if (!ok)
                return certs_json_errf(j, k, err, elen, "header values must be strings");
        }
    }
    return 0;
}

/* Runs one case; returns 1 if it passed, printing a line when it fails. */
static int tcase_run(const struct policy_engine *e, const struct tcase *t, const char *table,
                     int line, int idx)
{
    const char *got, *rule;
    char refused[96], shown[8300];
    struct policy_decision d;

    if (canonical_eval(e, t->peer != NULL ? t->peer : "", t->method != NULL ? t->method : "GET",
                       t->host != NULL ? t->host : NO_HOST, t->path, t->hdrs, t->nh, &d, refused,
                       sizeof(refused), shown, sizeof(shown)) != 0) {
        got = "deny"; /* a refused request never reaches the upstream */
        rule = refused;
    } else {
        got = policy_verdict_name(d.verdict);
        rule = d.rule_id;
    }
    if (strcmp(got, t->expect) == 0 && (t->rule == NULL || strcmp(rule, t->rule) == 0))
        return 1;
    printf("%s:%d: case %d: %s %s (peer %s): got %s by %s, want %s%s%s\n", table, line, idx,
           t->method != NULL ? t->method : "GET", t->path, t->peer != NULL ? t->peer : "(none)",
           got, rule, t->expect, t->rule != NULL ? " by " : "", t->rule != NULL ? t->rule : "");
    return 0;
}

static int cmd_test(int argc, char **argv)
{
    struct policy_bundle *b = NULL;
    struct policy_engine *e = NULL;
    struct certs_json j = {0};
    char err[512] = "", *js = NULL;
    size_t len = 0;
    int rc, pass = 0, failn = 0, n = 0;

    if (argc != 4) {
        usage();
        return 2;
    }
    if ((rc = load(argv[2], &b, &e)) != 0)
        return rc;
    js = read_file(argv[3], TABLE_MAX_BYTES, &len);
    if (js == NULL) {
        rc = 2;
        goto out;
    }
    if (certs_json_parse(&j, js, len, TABLE_MAX_TOKENS, err, sizeof(err)) < 0) {
        print_err(argv[3], err);
        rc = 1;
        goto out;
    }
    if (!certs_json_is_arr(&j, 0)) {
        fprintf(stderr, "%s:1:1: table must be a JSON array of cases\n", argv[3]);
        rc = 1;
        goto out;
    }
    for (int k = certs_json_first(&j, 0); k > 0 && n < j.tok[0].size;
         k = certs_json_next_elem(&j, k), n++) {
        struct tcase t = {0};
        int line, col;
        if (tcase_read(&t, &j, k, err, sizeof(err)) < 0) {
            print_err(argv[3], err);
            tcase_clear(&t);
            rc = 1;
            goto out;
        }
        certs_json_pos(&j, k, &line, &col);
        if (tcase_run(e, &t, argv[3], line, n))
            pass++;
        else
            failn++;
        tcase_clear(&t);
    }
    printf("%d passed, %d failed\n", pass, failn);
    rc = failn == 0 ? 0 : 1;
out:
    certs_json_clear(&j);
    free(js);
    policy_engine_free(e);
    policy_bundle_free(b);
    return rc;
}

int px_cmd_policy(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    if (strcmp(argv[1], "lint") == 0)
        return cmd_lint(argc, argv);
    if (strcmp(argv[1], "eval") == 0)
        return cmd_eval(argc, argv);
    if (strcmp(argv[1], "test") == 0)
        return cmd_test(argc, argv);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage();
        return 0;
    }
    fprintf(stderr, "picket policy: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
