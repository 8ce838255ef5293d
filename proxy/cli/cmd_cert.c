/*
 * cmd_cert.c - `picket cert`: a development CA and SVID tooling on top of
 * certs/ (DESIGN.md "Identity").
 *
 *   picket cert init    --trust-domain TD --out DIR [--ttl 8760h]
 *   picket cert issue   --ca DIR --spiffe-id ID --ttl 1h --out DIR [--name NAME]
 *                       [--dns NAME]... [--ip ADDR]...
 *   picket cert inspect FILE [--max-lifetime 24h]
 *   picket cert inspect --workload-api [SOCKET]
 *   picket cert verify  --bundle FILE [--trust-domain TD] [--max-lifetime 24h] CERT
 *
 * Exit status: 0 success; 1 refused, rules broken or the operation failed;
 * 2 usage error (including a bundle that cannot be loaded, since then no
 * verdict about CERT is possible). Unlike certs/, this file prints: results
 * to stdout, errors to stderr. Reason names printed here are the stable
 * names of certs_reason_name().
 */
#include "cli.h"
#include "cmd_cert.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "certs.h"
#include "config.h"
#include "wlapi.h"

#define MAX_SANS 64 /* --dns / --ip occurrences per issue */
#define DEFAULT_CA_TTL "8760h"
#define DEFAULT_MAX_LIFETIME "24h"

static const char usage_text[] =
    "usage:\n"
    "  picket cert init --trust-domain TD --out DIR [--ttl 8760h]\n"
    "  picket cert issue --ca DIR --spiffe-id ID --ttl 1h --out DIR [--name NAME]\n"
    "                    [--dns NAME]... [--ip ADDR]...\n"
    "  picket cert inspect FILE [--max-lifetime 24h]\n"
    "  picket cert inspect --workload-api [SOCKET]\n"
    "  picket cert verify --bundle FILE [--trust-domain TD] [--max-lifetime 24h] CERT\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = px_cli_vusage_error("picket cert", usage_text, fmt, ap);
    va_end(ap);
    return rc;
}

/* Duration flag in whole seconds (certs_duration_parse syntax: 90s, 1h30m). */
static int duration_s(const char *flag, const char *s, int64_t *out)
{
    int64_t ms;
    if (s == NULL || certs_duration_parse(s, strlen(s), &ms) < 0) {
        fprintf(stderr, "picket cert: %s: bad duration '%s' (e.g. 90s, 1h, 8760h)\n", flag,
                s ? s : "");
        return -1;
    }
    *out = ms / 1000;
    return 0;
}

/* "26h3m4s" (the form durations are written in), or "-" prefixed. */
static void fmt_dur(int64_t s, char *buf, size_t len)
{
    const char *sign = s < 0 ? "-" : "";
    if (s < 0)
        s = -s;
    snprintf(buf, len, "%s%lldh%lldm%llds", sign, (long long)(s / 3600), (long long)(s % 3600 / 60),
             (long long)(s % 60));
}

static void fmt_time(int64_t t, char *buf, size_t len)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "@%lld", (long long)t);
}

/* ---- init ----------------------------------------------------------------- */

static int cmd_init(int argc, char **argv)
{
    const char *td = NULL, *out = NULL, *ttl = DEFAULT_CA_TTL, *v;
    char err[512];
    int64_t ttl_s = 0;

    for (int i = 2; i < argc; i++) {
        if (px_cli_opt(argc, argv, &i, "--trust-domain", &v))
            td = v;
        else if (px_cli_opt(argc, argv, &i, "--out", &v))
            out = v;
        else if (px_cli_opt(argc, argv, &i, "--ttl", &v))
            ttl = v;
        else
            return usage_error("init: unexpected argument '%s'", argv[i]);
        if (v == NULL)
            return usage_error("init: %s needs a value", argv[i]);
    }
    if (td == NULL || out == NULL)
        return usage_error("%s", "init: --trust-domain and --out are required");
    if (!certs_trust_domain_valid(td, strlen(td)))
        return usage_error("init: invalid trust domain '%s' (lowercase letters, digits, '.', "
                           "'-', '_')",
                           td);
    if (duration_s("--ttl", ttl, &ttl_s) < 0)
        return 2;
    if (ttl_s <= 0)
        return usage_error("%s", "init: --ttl must be at least 1s");
    if (certs_devca_init(out, td, ttl_s, err, sizeof(err)) < 0) {
        fprintf(stderr, "picket cert init: %s\n", err);
        return 1;
    }
    printf("%s/ca.pem\n%s/ca.key\n", out, out);
    fprintf(stderr, "dev CA for spiffe://%s created; use %s/ca.pem as its trust bundle\n", td, out);
    return 0;
}

/* ---- issue ---------------------------------------------------------------- */

static int name_ok(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int cmd_issue(int argc, char **argv)
{
    const char *ca = NULL, *id = NULL, *ttl = NULL, *out = NULL, *name = "svid", *v;
    const char *dns[MAX_SANS], *ips[MAX_SANS];
    char err[512], cert[PATH_MAX], key[PATH_MAX];
    size_t ndns = 0, nips = 0;
    int64_t ttl_s = 0;

    for (int i = 2; i < argc; i++) {
        if (px_cli_opt(argc, argv, &i, "--ca", &v))
            ca = v;
        else if (px_cli_opt(argc, argv, &i, "--spiffe-id", &v))
            id = v;
        else if (px_cli_opt(argc, argv, &i, "--ttl", &v))
            ttl = v;
        else if (px_cli_opt(argc, argv, &i, "--out", &v))
            out = v;
        else if (px_cli_opt(argc, argv, &i, "--name", &v))
            name = v;
        else if (px_cli_opt(argc, argv, &i, "--dns", &v)) {
            if (ndns == MAX_SANS)
                return usage_error("issue: too many --dns (limit %d)", MAX_SANS);
            dns[ndns++] = v;
        } else if (px_cli_opt(argc, argv, &i, "--ip", &v)) {
            if (nips == MAX_SANS)
                return usage_error("issue: too many --ip (limit %d)", MAX_SANS);
            ips[nips++] = v;
        } else
            return usage_error("issue: unexpected argument '%s'", argv[i]);
        if (v == NULL)
            return usage_error("issue: %s needs a value", argv[i]);
    }
    if (ca == NULL || id == NULL || ttl == NULL || out == NULL)
        return usage_error("%s", "issue: --ca, --spiffe-id, --ttl and --out are required");
    if (!certs_spiffe_id_valid(id, strlen(id)))
        return usage_error("issue: '%s' is not a valid SPIFFE ID", id);
    if (name == NULL || !name_ok(name))
        return usage_error("issue: bad --name '%s'", name ? name : "");
    if (duration_s("--ttl", ttl, &ttl_s) < 0)
        return 2;
    if (ttl_s <= 0)
        return usage_error("%s", "issue: --ttl must be at least 1s");
    if (snprintf(cert, sizeof(cert), "%s/%s.pem", out, name) >= (int)sizeof(cert) ||
        snprintf(key, sizeof(key), "%s/%s.key", out, name) >= (int)sizeof(key))
        return usage_error("issue: path too long under '%s'", out);
    if (mkdir(out, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "picket cert issue: %s: %s\n", out, strerror(errno));
        return 1;
    }
    if (certs_devca_issue(ca, id, ttl_s, dns, ndns, ips, nips, cert, key, err, sizeof(err)) < 0) {
        fprintf(stderr, "picket cert issue: %s\n", err);
        return 1;
    }
    printf("%s\n%s\n", cert, key);
    /* The lifetime is exactly ttl (notBefore is backdated 60s for clock
     * skew, and notAfter with it). */
    if (ttl_s > 24 * 3600)
        fprintf(stderr, "note: lifetime %llds is over 24h; peers with max_svid_lifetime 24h "
                        "(the default) refuse it\n",
                (long long)ttl_s);
    return 0;
}

/* ---- inspect -------------------------------------------------------------- */

/* Reads FILE and splits it into leaf + the certificates after it. On
 * failure prints "refused: <reason>: <detail>" and returns -1. */
static int load_certs(const char *path, X509 **leaf, STACK_OF(X509) * *rest)
{
    char err[512], *data = NULL;
    size_t len;
    int rc;

    rc = certs_read_file(path, CERTS_MAX_FILE, &data, &len, err, sizeof(err));
    if (rc == 0) {
        char detail[384];
        rc = certs_pem_certs(data, len, rest, detail, sizeof(detail));
        if (rc < 0)
            snprintf(err, sizeof(err), "%s: %s", path, detail);
        free(data);
    }
    if (rc < 0) {
        printf("refused: %s: %s\n",
               certs_reason_name(rc == CERTS_ERR_NOT_FOUND ? CERTS_R_NO_CERTIFICATE
                                                           : CERTS_R_BAD_FILE),
               err);
        return -1;
    }
    *leaf = sk_X509_shift(*rest);
    return 0;
}

static void print_name(BIO *out, const char *label, const X509_NAME *n)
{
    BIO_printf(out, "%-15s", label);
    /* RFC 2253 with control and non-ASCII bytes escaped: peer data is
     * never printed raw. */
    X509_NAME_print_ex(out, n, 0, XN_FLAG_RFC2253);
    BIO_printf(out, "\n");
}

static void print_sans(BIO *out, X509 *x)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char ip[INET6_ADDRSTRLEN];

    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
        const ASN1_STRING *s;
        switch (gn->type) {
        case GEN_URI:
        case GEN_DNS:
            s = gn->type == GEN_URI ? gn->d.uniformResourceIdentifier : gn->d.dNSName;
            BIO_printf(out, "%-15s", gn->type == GEN_URI ? "uri_san:" : "dns_san:");
            ASN1_STRING_print_ex(out, s, ASN1_STRFLGS_ESC_CTRL | ASN1_STRFLGS_ESC_MSB);
            BIO_printf(out, "\n");
            break;
        case GEN_IPADD:
            s = gn->d.iPAddress;
            if ((s->length == 4 && inet_ntop(AF_INET, s->data, ip, sizeof(ip)) != NULL) ||
                (s->length == 16 && inet_ntop(AF_INET6, s->data, ip, sizeof(ip)) != NULL))
                BIO_printf(out, "%-15s%s\n", "ip_san:", ip);
            break;
        default:
            break;
        }
    }
    GENERAL_NAMES_free(gens);
    ERR_clear_error();
}

static void print_usage_ext(BIO *out, X509 *x)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } kus[] = {{KU_DIGITAL_SIGNATURE, "digitalSignature"},
               {KU_NON_REPUDIATION, "nonRepudiation"},
               {KU_KEY_ENCIPHERMENT, "keyEncipherment"},
               {KU_DATA_ENCIPHERMENT, "dataEncipherment"},
               {KU_KEY_AGREEMENT, "keyAgreement"},
               {KU_KEY_CERT_SIGN, "keyCertSign"},
               {KU_CRL_SIGN, "cRLSign"}};
    uint32_t ku = X509_get_key_usage(x);
    EXTENDED_KEY_USAGE *eku;
    const char *sep = "";
    char oid[80];

    BIO_printf(out, "%-15s", "key_usage:");
    if (ku == UINT32_MAX) {
        BIO_printf(out, "(none)");
    } else {
        for (size_t i = 0; i < sizeof(kus) / sizeof(kus[0]); i++) {
            if (ku & kus[i].bit) {
                BIO_printf(out, "%s%s", sep, kus[i].name);
                sep = ", ";
            }
        }
    }
    BIO_printf(out, "\n%-15s", "ext_key_usage:");
    eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    if (eku == NULL)
        BIO_printf(out, "(none)");
    for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
        const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
        int nid = OBJ_obj2nid(o);
        if (nid != NID_undef)
            snprintf(oid, sizeof(oid), "%s", OBJ_nid2sn(nid)); /* "serverAuth" */
        else
            OBJ_obj2txt(oid, sizeof(oid), o, 1);
        BIO_printf(out, "%s%s", i ? ", " : "", oid);
    }
    BIO_printf(out, "\n");
    EXTENDED_KEY_USAGE_free(eku);
    ERR_clear_error();
}

static void print_cert(BIO *out, X509 *x, int64_t now)
{
    char id[CERTS_SPIFFE_ID_MAX + 1], a[32], b[32];
    const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
    EVP_PKEY *pk = X509_get0_pubkey(x);
    int64_t nb = 0, na = 0;
    int rc;

    rc = certs_cert_spiffe_id(x, id, sizeof(id));
    BIO_printf(out, "%-15s%s\n", "spiffe_id:",
               rc == 0                     ? id
               : rc == CERTS_ERR_NOT_FOUND ? "(no URI SAN)"
               : rc == CERTS_ERR_TOO_LARGE ? "(URI SAN too long)"
                                           : "(several URI SANs)");
    print_name(out, "subject:", X509_get_subject_name(x));
    print_name(out, "issuer:", X509_get_issuer_name(x));
    BIO_printf(out, "%-15s", "serial:");
    i2a_ASN1_INTEGER(out, serial);
    BIO_printf(out, "\n%-15s%s %d bits\n", "key:", pk ? EVP_PKEY_get0_type_name(pk) : "?",
               pk ? EVP_PKEY_get_bits(pk) : 0);
    if (certs_cert_validity(x, &nb, &na) == 0) {
        fmt_time(nb, a, sizeof(a));
        fmt_time(na, b, sizeof(b));
        BIO_printf(out, "%-15s%s\n%-15s%s\n", "not_before:", a, "not_after:", b);
        fmt_dur(na - nb, a, sizeof(a));
        BIO_printf(out, "%-15s%s (%llds)\n", "lifetime:", a, (long long)(na - nb));
        fmt_dur(na - now, a, sizeof(a));
        BIO_printf(out, "%-15s%s%s\n", "remaining:", a, na <= now ? " (expired)" : "");
    } else {
        BIO_printf(out, "%-15s(unreadable)\n", "validity:");
    }
    print_usage_ext(out, x);
    BIO_printf(out, "%-15s%s\n",
               "ca:", (X509_get_extension_flags(x) & EXFLAG_CA) ? "true" : "false");
    print_sans(out, x);
    ERR_clear_error();
}

/* ---- inspect --workload-api ----------------------------------------------- */

#define WL_INSPECT_TIMEOUT_S 10 /* for the first message */

struct wl_inspect {
    struct event_base *base;
    uint8_t *msg; /* the first message, when one came */
    size_t len;
    char error[400]; /* why none came */
};

static void wli_message(void *arg, const uint8_t *msg, size_t len)
{
    struct wl_inspect *w = arg;
    if (w->msg == NULL && (w->msg = malloc(len ? len : 1)) != NULL) {
        memcpy(w->msg, msg, len);
        w->len = len;
    } else if (w->msg == NULL) {
        snprintf(w->error, sizeof(w->error), "out of memory");
    }
    event_base_loopbreak(w->base);
}

static void wli_refused(void *arg, const char *reason, const char *detail)
{
    struct wl_inspect *w = arg;
    snprintf(w->error, sizeof(w->error), "refused: %s: %s", reason, detail);
    event_base_loopbreak(w->base);
}

static void wli_state(void *arg, int connected, const char *reason, const char *detail,
                      int64_t next_ms)
{
    struct wl_inspect *w = arg;
    (void)next_ms;
    if (connected)
        return;
    if (w->error[0] == '\0')
        snprintf(w->error, sizeof(w->error), "%s: %s", reason, detail);
    event_base_loopbreak(w->base);
}

static void wli_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct wl_inspect *w = arg;
    (void)fd;
    (void)what;
    snprintf(w->error, sizeof(w->error), "timeout: no message within %ds",
             WL_INSPECT_TIMEOUT_S);
    event_base_loopbreak(w->base);
}

/* One SVID of the message: what it says and whether picket would take it. */
static int wli_print_svid(BIO *out, const struct px_wlapi_msg *m, size_t i, int64_t now)
{
    struct px_wlapi_identity id;
    char err[700], a[32], b[32];
    BIO_printf(out, "svid[%zu]:\n", i);
    BIO_printf(out, "  %-15s", "spiffe_id:");
    BIO_write(out, px_wlapi_msg_spiffe_id(m, i), (int)strlen(px_wlapi_msg_spiffe_id(m, i)));
    BIO_printf(out, "\n  %-15s", "hint:");
    BIO_write(out, px_wlapi_msg_hint(m, i), (int)strlen(px_wlapi_msg_hint(m, i)));
    BIO_printf(out, "\n");
    if (px_wlapi_identity_build(&id, m, i, now, err, sizeof(err)) != 0) {
        BIO_printf(out, "  %-15srefused: %s\n", "status:", err);
        return -1;
    }
    fmt_time(certs_keypair_not_before(id.keypair), a, sizeof(a));
    fmt_time(certs_keypair_not_after(id.keypair), b, sizeof(b));
    BIO_printf(out, "  %-15s%s\n  %-15s%s\n", "not_before:", a, "not_after:", b);
    fmt_dur(certs_keypair_not_after(id.keypair) - now, a, sizeof(a));
    BIO_printf(out, "  %-15s%s\n", "remaining:", a);
    BIO_printf(out, "  %-15s%d intermediate(s)\n", "chain:",
               sk_X509_num(certs_keypair_chain(id.keypair)));
    for (size_t k = 0; k < certs_trust_count(id.trust); k++) {
        size_t n = 0;
        const char *td = certs_trust_domain_at(id.trust, k, &n);
        BIO_printf(out, "  %-15s%s (%zu CA certificate%s)%s\n", "trust_domain:", td, n,
                   n == 1 ? "" : "s", k == 0 ? "" : " federated");
    }
    BIO_printf(out, "  %-15sok\n", "status:");
    px_wlapi_identity_clear(&id);
    return 0;
}

/* `picket cert inspect --workload-api [SOCKET]`: one FetchX509SVID call, the
 * first message printed. 0 when every SVID in it would be accepted, 1
 * otherwise (no message, a refused one), 2 usage. */
static int inspect_wlapi(const char *sock)
{
    static const struct px_wlapi_ops ops = {wli_message, wli_refused, wli_state};
    struct wl_inspect w;
    struct px_wlapi_client *c = NULL;
    struct px_wlapi_msg *m = NULL;
    struct event *timer = NULL;
    struct timeval tv = {WL_INSPECT_TIMEOUT_S, 0};
    char uri[200], path[128], err[400];
    int64_t now = (int64_t)time(NULL);
    int rc = 1, bad = 0;
    BIO *out = NULL;

    memset(&w, 0, sizeof(w));
    if (sock == NULL)
        sock = getenv("SPIFFE_ENDPOINT_SOCKET");
    if (sock == NULL || sock[0] == '\0')
        return usage_error("%s", "inspect: --workload-api needs SOCKET or SPIFFE_ENDPOINT_SOCKET");
    /* a bare absolute path is taken as unix://PATH */
    snprintf(uri, sizeof(uri), "%s%s", sock[0] == '/' ? "unix://" : "", sock);
    if (px_config_socket_path(uri, path, sizeof(path), err, sizeof(err)) != 0)
        return usage_error("inspect: %s", err);
    w.base = event_base_new();
    if (w.base == NULL)
        goto out;
    c = px_wlapi_client_new(w.base, uri, &ops, &w, 0, err, sizeof(err));
    timer = evtimer_new(w.base, wli_timeout, &w);
    if (c == NULL || timer == NULL) {
        fprintf(stderr, "picket cert inspect: %s\n", c == NULL ? err : "out of memory");
        goto out;
    }
    evtimer_add(timer, &tv);
    event_base_dispatch(w.base);
    printf("%-15s%s\n", "socket:", uri);
    if (w.msg == NULL) {
        printf("%-15s%s\n", "error:", w.error[0] ? w.error : "no message");
        goto out;
    }
    if (px_wlapi_msg_decode(&m, w.msg, w.len, err, sizeof(err)) != 0) {
        printf("%-15srefused: %s\n", "error:", err);
        goto out;
    }
    out = BIO_new_fp(stdout, BIO_NOCLOSE);
    if (out == NULL)
        goto out;
    BIO_printf(out, "%-15s%zu\n", "svids:", px_wlapi_msg_nsvids(m));
    if (px_wlapi_msg_nsvids(m) == 0)
        bad = 1;
    for (size_t i = 0; i < px_wlapi_msg_nsvids(m); i++)
        if (wli_print_svid(out, m, i, now) != 0)
            bad = 1;
    for (size_t i = 0; i < px_wlapi_msg_nfederated(m); i++) {
        const char *k = px_wlapi_msg_federated_key(m, i);
        BIO_printf(out, "%-15s", "federated:");
        BIO_write(out, k, (int)strlen(k));
        BIO_printf(out, "\n");
    }
    rc = bad ? 1 : 0;
out:
    BIO_free(out);
    fflush(stdout);
    px_wlapi_msg_free(m);
    free(w.msg);
    px_wlapi_client_free(c);
    if (timer != NULL)
        event_free(timer);
    if (w.base != NULL)
        event_base_free(w.base);
    return rc;
}

static int cmd_inspect(int argc, char **argv)
{
    const char *file = NULL, *maxs = DEFAULT_MAX_LIFETIME, *v;
    enum certs_reason reasons[CERTS_R_COUNT];
    STACK_OF(X509) *rest = NULL;
    X509 *leaf = NULL;
    int64_t max_s, now = (int64_t)time(NULL);
    size_t n = 0;
    BIO *out;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--workload-api") == 0) {
            const char *sock = NULL;
            if (i + 1 < argc && argv[i + 1][0] != '-')
                sock = argv[++i];
            if (i + 1 < argc || file != NULL)
                return usage_error("%s", "inspect: --workload-api takes no FILE or other option");
            return inspect_wlapi(sock);
        }
        if (px_cli_opt(argc, argv, &i, "--max-lifetime", &v)) {
            if (v == NULL)
                return usage_error("%s", "inspect: --max-lifetime needs a value");
            maxs = v;
        } else if (argv[i][0] == '-' || file != NULL) {
            return usage_error("inspect: unexpected argument '%s'", argv[i]);
        } else {
            file = argv[i];
        }
    }
    if (file == NULL)
        return usage_error("%s", "inspect: FILE is required");
    if (duration_s("--max-lifetime", maxs, &max_s) < 0)
        return 2;
    if (load_certs(file, &leaf, &rest) < 0)
        return 1;
    out = BIO_new_fp(stdout, BIO_NOCLOSE);
    if (out == NULL) {
        fprintf(stderr, "picket cert inspect: out of memory\n");
        X509_free(leaf);
        sk_X509_pop_free(rest, X509_free);
        return 1;
    }
    print_cert(out, leaf, now);
    if (sk_X509_num(rest) > 0)
        BIO_printf(out, "%-15s%d more certificate(s) after the leaf\n",
                   "chain:", sk_X509_num(rest));
    certs_svid_inspect(leaf, now, max_s, reasons, CERTS_R_COUNT, &n);
    if (n == 0)
        BIO_printf(out, "%-15snone\n", "broken:");
    for (size_t i = 0; i < n && i < CERTS_R_COUNT; i++)
        BIO_printf(out, "%-15s%s\n", "broken:", certs_reason_name(reasons[i]));
    BIO_free(out);
    fflush(stdout);
    X509_free(leaf);
    sk_X509_pop_free(rest, X509_free);
    return n == 0 ? 0 : 1;
}

/* ---- verify --------------------------------------------------------------- */

static int cmd_verify(int argc, char **argv)
{
    const char *bundle = NULL, *td = NULL, *maxs = DEFAULT_MAX_LIFETIME, *file = NULL, *v;
    char id[CERTS_SPIFFE_ID_MAX + 1], err[512], certid[CERTS_SPIFFE_ID_MAX + 1];
    char tdbuf[CERTS_TRUST_DOMAIN_MAX + 1] = "bundle.invalid";
    struct certs_trust *t = NULL;
    STACK_OF(X509) *rest = NULL;
    X509 *leaf = NULL;
    enum certs_reason r;
    int64_t max_s;
    const char *p;
    size_t plen;
    int status = 1;

    for (int i = 2; i < argc; i++) {
        if (px_cli_opt(argc, argv, &i, "--bundle", &v))
            bundle = v;
        else if (px_cli_opt(argc, argv, &i, "--trust-domain", &v))
            td = v;
        else if (px_cli_opt(argc, argv, &i, "--max-lifetime", &v))
            maxs = v;
        else if (argv[i][0] == '-' || file != NULL)
            return usage_error("verify: unexpected argument '%s'", argv[i]);
        else
            v = file = argv[i];
        if (v == NULL)
            return usage_error("verify: %s needs a value", argv[i]);
    }
    if (bundle == NULL || file == NULL)
        return usage_error("%s", "verify: --bundle and CERT are required");
    if (td != NULL && !certs_trust_domain_valid(td, strlen(td)))
        return usage_error("verify: invalid trust domain '%s'", td);
    if (duration_s("--max-lifetime", maxs, &max_s) < 0)
        return 2;
    if (load_certs(file, &leaf, &rest) < 0)
        return 1;
    /* Default trust domain: the one the certificate claims. If it claims
     * none, the bundle is still loaded (under a placeholder) so a broken
     * bundle is reported, and the check refuses the certificate itself. */
    if (td == NULL && certs_cert_spiffe_id(leaf, certid, sizeof(certid)) == 0 &&
        certs_spiffe_trust_domain(certid, strlen(certid), &p, &plen) == 0)
        snprintf(tdbuf, sizeof(tdbuf), "%.*s", (int)plen, p);
    if (certs_trust_new(&t) < 0 ||
        certs_trust_add_file(t, td != NULL ? td : tdbuf, bundle, err, sizeof(err)) < 0) {
        fprintf(stderr, "picket cert verify: bundle: %s\n", t != NULL ? err : "out of memory");
        status = 2;
        goto done;
    }
    r = certs_svid_check(t, leaf, rest, (int64_t)time(NULL), max_s, id, sizeof(id), err,
                         sizeof(err));
    if (r == CERTS_R_OK) {
        printf("ok %s\n", id);
        status = 0;
    } else {
        printf("refused: %s: %s\n", certs_reason_name(r), err);
    }
done:
    certs_trust_unref(t);
    X509_free(leaf);
    sk_X509_pop_free(rest, X509_free);
    return status;
}

int px_cmd_cert(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : NULL;

    if (sub == NULL)
        return usage_error("%s", "missing subcommand");
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(sub, "init") == 0)
        return cmd_init(argc, argv);
    if (strcmp(sub, "issue") == 0)
        return cmd_issue(argc, argv);
    if (strcmp(sub, "inspect") == 0)
        return cmd_inspect(argc, argv);
    if (strcmp(sub, "verify") == 0)
        return cmd_verify(argc, argv);
    return usage_error("unknown subcommand '%s'", sub);
}
