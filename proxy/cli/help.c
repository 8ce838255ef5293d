/*
 * help.c - the text of picket's command line, once: a table of commands
 * (their arguments, summaries, options and exit statuses) that
 * px_help_print() lays out for `picket help` and px_help_man() for the
 * manual page picket.1. The build makes picket.1 by running `picket help
 * --man`, and ctest 'man_page' checks that every command and option the
 * subcommands accept is in it.
 *
 * The subcommands' own usage texts (cmd_*.c, `picket cert help` and the
 * like) are shorter reminders of the same synopses.
 */
#include "help.h"

#include <ctype.h>
#include <string.h>

struct help_opt {
    const char *flag; /* "--ttl DURATION"; several spellings separated by ", " */
    const char *text;
};

struct help_cmd {
    const char *words; /* "cert init": what follows "picket" */
    const char *args;  /* the synopsis after the words */
    const char *summary;
    const char *text; /* more, for the manual page; NULL = none */
    const struct help_opt *opts;
    size_t nopts;
    const char *exit; /* the exit statuses */
};

struct help_group {
    const char *head;    /* "cert init|issue|inspect|verify"; NULL: a single command */
    const char *summary; /* of the group */
    const struct help_cmd *cmds;
    size_t ncmds;
    const char *opts_title; /* options shared by the group's commands */
    const struct help_opt *opts;
    size_t nopts;
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define OPTS(a) a, N_ELEMS(a)
#define NO_OPTS NULL, 0

/* ---- the text ---------------------------------------------------------------------------- */

static const struct help_opt run_opts[] = {
    {"-c FILE, --config FILE",
     "The config file (JSON): listeners, identity, policy, limits and logs. Every key is in "
     "the config reference (proxy/README.md)."},
    {"--node-id ID",
     "Overrides the config's node_id (for example namespace/pod), the name picket gives "
     "itself in audit records and to the control plane."},
    {"--probes-bind HOST:PORT",
     "Overrides probes.bind: where the app's probes are answered (GET /app-health/NAME; "
     "default 0.0.0.0:15021 when there is a target). The targets come from probes.targets and "
     "the environment variable PICKET_APP_PROBES."},
    {"--metrics-bind HOST:PORT",
     "Overrides metrics.bind: a listener on any address that serves GET /metrics only, for a "
     "Prometheus in another pod."},
};

static const struct help_cmd run_cmds[] = {
    {"run", "-c FILE [--node-id ID] [--probes-bind HOST:PORT] [--metrics-bind HOST:PORT]",
     "run the proxy with a config file",
     "Runs the data path: the listeners of the config, the admin listener, the policy "
     "fetcher. Signals reload and drain it (see SIGNALS).",
     OPTS(run_opts), "0 after a drain, 2 bad config, 1 other start failure"},
};

static const struct help_opt dev_opts[] = {
    {"--upstream URL",
     "The app: http://HOST:PORT or h2c://HOST:PORT. Without it a built-in demo upstream "
     "(HTTP/1.1 on a loopback port) answers with what it received, so picket's headers (XFCC, "
     "x-request-id) can be seen arriving."},
    {"--state DIR",
     "Where the dev CA, the SVIDs, the starter policy and the config are made, and reused while "
     "valid (default ./.picket-dev)."},
    {"--port N", "The port of picket's mTLS listener (default 8443); the admin listener "
                 "takes N+1."},
};

static const struct help_cmd dev_cmds[] = {
    {"dev", "[--upstream URL] [--state DIR] [--port N]",
     "local dev gateway with dev certs and a starter policy",
     "Makes (or reuses) a dev CA for trust domain picket.dev, a server SVID for picket, a "
     "client SVID for the developer, a policy allowing that ID and a config, then runs picket "
     "and prints a curl command line that reaches the app through it.",
     OPTS(dev_opts), "as run"},
};

static const struct help_cmd cert_cmds[] = {
    {"cert init", "--trust-domain TD --out DIR [--ttl 8760h]",
     "a dev CA (ECDSA P-256) for trust domain TD in DIR", NULL, NO_OPTS, "0, 1 error, 2 usage"},
    {"cert issue",
     "--ca DIR --spiffe-id ID --ttl 1h --out DIR [--name NAME] [--dns NAME]... [--ip ADDR]...",
     "a short-lived SVID signed by the CA in --ca: DIR/NAME.pem and DIR/NAME.key",
     "--dns and --ip add DNS and IP subject alternative names (repeatable).", NO_OPTS,
     "0, 1 error, 2 usage"},
    {"cert inspect", "FILE [--max-lifetime 24h]",
     "SPIFFE ID, validity, lifetime, key usage and every SVID rule the certificate breaks", NULL,
     NO_OPTS, "0 none broken, 1 some broken, 2 usage"},
    {"cert inspect", "--workload-api [SOCKET]",
     "what the SPIFFE Workload API hands out: each SVID's ID, hint, expiry and trust domains, "
     "the federated bundles, and whether picket would accept it",
     "SOCKET is unix:///path (or an absolute path); without it SPIFFE_ENDPOINT_SOCKET. One "
     "FetchX509SVID call; the first message is printed (10 s at most).",
     NO_OPTS, "0 every SVID acceptable, 1 no message or a refused one, 2 usage"},
    {"cert verify", "--bundle FILE [--trust-domain TD] [--max-lifetime 24h] CERT",
     "verify CERT as picket does: prints ok spiffe://... or refused: <reason>: <detail>",
     "--bundle is a PEM or SPIFFE JWKS trust bundle. The reasons are the stable names of the "
     "certificate reference (certs/README.md).",
     NO_OPTS, "0 valid, 1 refused, 2 usage or unreadable bundle"},
};

static const struct help_cmd policy_cmds[] = {
    {"policy lint", "FILE", "validate a policy bundle", NULL, NO_OPTS,
     "0 valid, 1 invalid, 2 usage or unreadable file"},
    {"policy eval",
     "FILE --path P [--peer SPIFFE_ID] [--method M] [--host H] [--header name=value]...",
     "evaluate one request: prints the decision, the deciding rule and the normalized path",
     "The request is built as the proxy builds it, so one the proxy would refuse is refused "
     "here with the same reason.",
     NO_OPTS, "0 allow, 1 deny (or a refused request), 3 dispatch, 2 usage"},
    {"policy test", "FILE TABLE.json",
     "run a table of expected decisions; prints N passed, N failed",
     "TABLE.json is a list of objects with the keys peer, method, path, host, headers (an "
     "object of names and values), expect (allow, deny or dispatch) and, optionally, rule.",
     NO_OPTS, "0 all pass, 1 otherwise, 2 usage or unreadable file"},
};

static const struct help_cmd bundle_cmds[] = {
    {"bundle keygen", "--type ed25519|p256 --out KEYFILE [--pub PUBFILE]", "a signing key pair",
     "The private key is written as PKCS#8 PEM with mode 0600 and never replaces an existing "
     "file; the public key goes to PUBFILE, or to standard output.",
     NO_OPTS, "0, 1 error, 2 usage"},
    {"bundle sign", "--key KEY --keyid ID --out FILE BUNDLE.json",
     "a DSSE envelope of a validated bundle",
     "An invalid bundle is never signed. FILE is written atomically; - is standard output.",
     NO_OPTS, "0, 1 error, 2 usage"},
    {"bundle verify", "--key PUB [--keyid ID] FILE",
     "prints ok: keyid X, revision N or refused: <reason>: <detail>",
     "The same checks as the proxy's policy fetcher.", NO_OPTS, "0 ok, 1 refused, 2 usage"},
};

static const struct help_opt control_opts[] = {
    {"--bundle [TD=]FILE, --trust-bundle [TD=]FILE",
     "A trust bundle (PEM or SPIFFE JWKS) for client SVIDs: of its own trust domain, or of TD. "
     "Repeatable."},
    {"--allow SPIFFE_ID",
     "Only these clients: a SPIFFE ID or a pattern spiffe://TD/path/* (repeatable; default any "
     "verified client)."},
    {"--max-wait DURATION",
     "The longest a Prefer: wait=N request is held (default 60s, at most 1h)."},
    {"--max-waiters N",
     "Long-polls held at once, in all (default 1000); past it a request is answered 304 at "
     "once."},
    {"--max-waiters-per-client N",
     "Long-polls held at once per client SPIFFE ID (default 4); past it the client's oldest "
     "held request is answered 304."},
    {"--max-connections N",
     "Open connections, held long-polls included (default 2048); more wait in the kernel's "
     "accept queue."},
    {"--header-timeout DURATION",
     "A connection must complete its TLS handshake and request within this of being accepted, "
     "or of its last answer (default 10s)."},
};

static const struct help_cmd control_cmds[] = {
    {"control serve",
     "--dir DIR --bind HOST:PORT --cert SVID.pem --key SVID.key --bundle [TD=]FILE [--allow "
     "SPIFFE_ID]... [--max-wait 60s] [--max-waiters 1000] [--max-waiters-per-client 4] "
     "[--max-connections 2048] [--header-timeout 10s]",
     "reference control plane (signed bundles over mTLS)",
     "Serves DIR/<name> (envelopes made with picket bundle sign) to clients with a verified SVID: "
     "GET /<name> with a strong ETag, 304 to a matching If-None-Match, and Prefer: wait=N "
     "long-polls.",
     OPTS(control_opts), "0 after SIGTERM or SIGINT, 1 start failure, 2 usage"},
};

static const struct help_opt inject_opts[] = {
    {"--config FILE", "The injector config (JSON; deploy/kubernetes/injector-config.json)."},
    {"--image IMG", "The sidecar image (picket:0.1)."},
    {"--config-map NAME", "The picket config ConfigMap (<app>-picket; <app> is replaced)."},
    {"--svid-secret NAME", "The SVID from this Secret instead of the config's svid_volume."},
    {"--inbound-port N", "The mTLS port (15443)."},
    {"--admin-port N", "The loopback admin port the probes use (15000)."},
    {"--probes-port N",
     "The port of picket's probes listener (15021): the app containers' httpGet, tcpSocket "
     "and grpc probes are rewritten to GET /app-health/CONTAINER/livez (readyz, startupz) "
     "there, their targets passed in PICKET_APP_PROBES (annotation picket.dev/rewrite-probes: "
     "\"false\" keeps them as they are)."},
    {"--metrics-port N",
     "The port of picket's metrics listener (15090): GET /metrics only, on the pod IP, and the "
     "pod's prometheus.io/port annotation."},
    {"--drain-timeout DURATION",
     "picket's limits.drain_timeout (20s); the pod's grace period is raised to at least this "
     "plus 10s."},
    {"--exclude-namespace NS",
     "Never inject in NS (repeatable; default kube-system and kube-public)."},
    {"--malformed-review allow|error",
     "The webhook's answer to a malformed review or a pod that cannot be injected: allow it "
     "unchanged, or refuse it (default error)."},
};

static const struct help_opt inject_filter_opts[] = {
    {"-f FILE, --file FILE", "The input, as the positional FILE."},
    {"--patch", "Write the JSON Patch instead of the changed object."},
    {"--compact", "Write JSON without indentation."},
};

static const struct help_opt inject_serve_opts[] = {
    {"--max-connections N",
     "Open connections (default 256); more wait in the kernel's accept queue."},
    {"--header-timeout DURATION",
     "A connection must complete its TLS handshake and request, body included, within this of "
     "being accepted, or of its last answer (default 10s)."},
};

static const struct help_cmd inject_cmds[] = {
    {"inject", "[FILE|-] [--patch] [--compact] [OPTIONS]",
     "add the picket sidecar to Kubernetes objects (JSON in, JSON out)",
     "Reads a Pod, Deployment, StatefulSet, DaemonSet, Job or a List of them (FILE, or "
     "standard input when FILE is - or absent; YAML is not read) and writes it with the "
     "native sidecar added, for example: kubectl get deploy web -o json | picket inject - | "
     "kubectl apply -f -",
     OPTS(inject_filter_opts), "0, 1 refused input or bad config, 2 usage"},
    {"inject serve",
     "--bind ADDR --cert C --key K [--config FILE] [--max-connections 256] [--header-timeout "
     "10s] [OPTIONS]",
     "the mutating admission webhook",
     "HTTPS: POST /inject (AdmissionReview v1; /mutate is an alias), GET /healthz. The serving "
     "certificate is re-read when its files change.",
     OPTS(inject_serve_opts), "0 after SIGTERM, 1 start failure, 2 usage"},
    {"inject write-config", "--out FILE",
     "write $PICKET_CONFIG to FILE (the init container of pods whose config is generated)", NULL,
     NO_OPTS, "0, 1 error, 2 usage"},
};

static const struct help_cmd version_cmds[] = {
    {"version", "", "print the version (also --version)", NULL, NO_OPTS, "0"},
};

static const struct help_cmd help_cmds[] = {
    {"help", "[--man]",
     "print this help (also --help, -h); --man: the same as the manual page picket.1 (roff)", NULL,
     NO_OPTS, "0"},
};

static const struct help_group groups[] = {
    {NULL, NULL, OPTS(run_cmds), NULL, NO_OPTS},
    {NULL, NULL, OPTS(dev_cmds), NULL, NO_OPTS},
    {"cert init|issue|inspect|verify", "dev CA and SVID tools", OPTS(cert_cmds), NULL, NO_OPTS},
    {"policy lint|eval|test", "check and evaluate policy bundles", OPTS(policy_cmds), NULL,
     NO_OPTS},
    {"bundle keygen|sign|verify", "signed policy envelopes (DSSE)", OPTS(bundle_cmds), NULL,
     NO_OPTS},
    {NULL, NULL, OPTS(control_cmds), NULL, NO_OPTS},
    {"inject [serve|write-config] ...",
     "Kubernetes sidecar injection (CLI filter / admission webhook)", OPTS(inject_cmds),
     "OPTIONS of inject and inject serve (they override the --config file)", OPTS(inject_opts)},
    {NULL, NULL, OPTS(version_cmds), NULL, NO_OPTS},
    {NULL, NULL, OPTS(help_cmds), NULL, NO_OPTS},
};

static const char exit_general[] =
    "0 success; 1 failure, a refusal or a deny; 2 a usage error. By command:";

static const char signals_text[] =
    "SIGHUP reloads the config, certificates and policy and reopens the log files (a bad one "
    "is refused and the running one kept; listener and worker changes need a restart). "
    "SIGTERM or SIGINT drains: listeners close, HTTP/2 connections get GOAWAY, HTTP/1.1 "
    "connections close after their current response, requests in flight get up to "
    "limits.drain_timeout, then picket exits 0.";

static const char description[] =
    "picket is an HTTP/2 zero-trust sidecar proxy. In front of an app it terminates mutual TLS "
    "with SPIFFE SVIDs, builds one canonical view of each request, decides it with a local "
    "policy bundle or a remote authorization service, and forwards what is allowed with the "
    "caller's identity. On an outbound listener it carries the app's own calls to other "
    "sidecars over mTLS. One binary has every role; the first argument names it.";

static const char see_also[] =
    "README.md, proxy/README.md (the config reference, refusals, logs and metrics, the command "
    "line), certs/README.md, policy/README.md and deploy/README.md in picket's source; the "
    "image has the first four under /usr/share/doc/picket/.";

/* ---- picket help -------------------------------------------------------------------------- */

#define WIDTH 79

/* Prints s from column `col` (what the line already holds) with words
 * wrapped at WIDTH onto lines that start with `indent` spaces. A bracketed
 * group ("[--name NAME]") is one word. */
static void wrap(FILE *f, const char *s, int col, int indent)
{
    int first = 1;
    while (*s != '\0') {
        size_t n = 0;
        int depth = 0;
        for (; s[n] != '\0' && (depth > 0 || s[n] != ' '); n++)
            depth += s[n] == '[' ? 1 : s[n] == ']' && depth > 0 ? -1 : 0;
        if (!first && col + 1 + (int)n > WIDTH) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (!first) {
            fputc(' ', f);
            col++;
        }
        fwrite(s, 1, n, f);
        col += (int)n;
        first = 0;
        s += n;
        while (*s == ' ')
            s++;
    }
    fputc('\n', f);
}

/* "  words args" (continued under the args) and the summary below. */
static void print_cmd(FILE *f, const struct help_cmd *c, int indent)
{
    int col = fprintf(f, "%*s%s", indent, "", c->words);
    if (c->args[0] != '\0') {
        fputc(' ', f);
        wrap(f, c->args, col + 1, col + 1 < 24 ? col + 1 : indent + 8);
    } else {
        fputc('\n', f);
    }
    fprintf(f, "%*s", indent + 4, "");
    wrap(f, c->summary, indent + 4, indent + 4);
}

void px_help_print(FILE *f)
{
    fputs("usage: picket <command> [args]\n\ncommands:\n", f);
    for (size_t g = 0; g < N_ELEMS(groups); g++) {
        const struct help_group *gr = &groups[g];
        int indent = 2;
        if (gr->head != NULL) {
            fprintf(f, "  %s\n      ", gr->head);
            wrap(f, gr->summary, 6, 6);
            indent = 4;
        }
        for (size_t i = 0; i < gr->ncmds; i++)
            print_cmd(f, &gr->cmds[i], indent);
        if (gr->nopts > 0) {
            fprintf(f, "%*s", indent, "");
            wrap(f, gr->opts_title, indent, indent + 4);
            for (size_t i = 0; i < gr->nopts; i++)
                fprintf(f, "%*s%s\n", indent + 2, "", gr->opts[i].flag);
        }
    }
    fputs("\nexit status: ", f);
    wrap(f, exit_general, 13, 2);
    for (size_t g = 0; g < N_ELEMS(groups); g++)
        for (size_t i = 0; i < groups[g].ncmds; i++) {
            const struct help_cmd *c = &groups[g].cmds[i];
            int col = fprintf(f, "  %s: ", c->words);
            wrap(f, c->exit, col, 6);
        }
    fputs("\nsignals (run, dev): SIGHUP reloads, SIGTERM or SIGINT drains.\n"
          "The manual page has more: man picket (or picket help --man | man -l -).\n",
          f);
}

/* ---- picket help --man -------------------------------------------------------------------- */

/* s[0..n) with roff's special characters escaped: backslash, '-' (a minus
 * sign, so options can be copied), quotes that would become typographic,
 * and a '.' or '\'' that starts a line (when bol says s starts one). */
static void roff_esc(FILE *f, const char *s, size_t n, int bol)
{
    for (size_t i = 0; i < n; i++) {
        if (bol && (s[i] == '.' || s[i] == '\''))
            fputs("\\&", f);
        bol = s[i] == '\n';
        switch (s[i]) {
        case '\\':
            fputs("\\e", f);
            break;
        case '-':
            fputs("\\-", f);
            break;
        case '\'':
            fputs("\\(aq", f);
            break;
        case '`':
            fputs("\\(ga", f);
            break;
        default:
            fputc(s[i], f);
        }
    }
}

/* A line of text. */
static void roff_text(FILE *f, const char *s)
{
    roff_esc(f, s, strlen(s), 1);
}

/* A synopsis or an option, inside a line: flags in bold, metavariables
 * (words in capitals) in italics, the rest as text. Lines do not break
 * inside a bracketed group or between a flag and its value. */
static void roff_args(FILE *f, const char *s)
{
    const char *p = s;
    int depth = 0, after_flag = 0;
    while (*p != '\0') {
        int start = p == s || strchr(" [|(,", p[-1]) != NULL;
        size_t n = 1;
        const char *font = NULL;
        if (*p == ' ') {
            int keep = depth > 0 || (after_flag && p[1] != '-' && p[1] != '[');
            fputs(keep ? "\\ " : " ", f);
            p++;
            continue;
        }
        after_flag = 0;
        if (start && *p == '-') {
            n = strcspn(p, " ]|=,");
            font = "\\fB";
            after_flag = 1;
        } else if (isupper((unsigned char)*p) && (p == s || !isalnum((unsigned char)p[-1]))) {
            while (isupper((unsigned char)p[n]) || isdigit((unsigned char)p[n]) || p[n] == '_')
                n++;
            if (!islower((unsigned char)p[n])) /* else a word, not a metavariable */
                font = "\\fI";
        } else if (*p == '[' || *p == ']') {
            depth += *p == '[' ? 1 : depth > 0 ? -1 : 0;
        }
        if (font != NULL)
            fputs(font, f);
        roff_esc(f, p, n, 0);
        if (font != NULL)
            fputs("\\fR", f);
        p += n;
    }
}

/* "picket <words>" in bold, as one unbreakable word. */
static void roff_command(FILE *f, const char *words)
{
    fputs("\\fBpicket", f);
    for (const char *w = words; *w != '\0'; w += strcspn(w, " ")) {
        w += strspn(w, " ");
        fputs("\\ ", f);
        roff_esc(f, w, strcspn(w, " "), 0);
    }
    fputs("\\fR", f);
}

/* A summary as a sentence: capital first letter, a full stop. */
static void roff_sentence(FILE *f, const char *s)
{
    fputc(toupper((unsigned char)s[0]), f);
    roff_esc(f, s + 1, strlen(s + 1), 0);
    fputs(".\n", f);
}

static void man_opts(FILE *f, const struct help_opt *o, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fputs(".TP\n", f);
        roff_args(f, o[i].flag);
        fputs("\n", f);
        roff_text(f, o[i].text);
        fputs("\n", f);
    }
}

void px_help_man(FILE *f, const char *version)
{
    fputs(".\\\" picket.1 - generated by `picket help --man` from proxy/cli/help.c; do not edit.\n",
          f);
    fprintf(f, ".TH PICKET 1 \"\" \"picket %s\" \"User Commands\"\n", version);
    fputs(".nh\n.ad l\n.SH NAME\npicket \\- HTTP/2 zero\\-trust sidecar proxy\n.SH SYNOPSIS\n", f);
    for (size_t g = 0; g < N_ELEMS(groups); g++)
        for (size_t i = 0; i < groups[g].ncmds; i++) {
            const struct help_cmd *c = &groups[g].cmds[i];
            fputs(".PP\n", f);
            roff_command(f, c->words);
            if (c->args[0] != '\0') {
                fputc(' ', f);
                roff_args(f, c->args);
            }
            fputs("\n", f);
        }
    fputs(".SH DESCRIPTION\n", f);
    roff_text(f, description);
    fputs("\n.PP\nThe commands:\n", f);
    for (size_t g = 0; g < N_ELEMS(groups); g++) {
        const struct help_group *gr = &groups[g];
        fputs(".TP\n.B ", f);
        roff_text(f, gr->head != NULL ? gr->head : gr->cmds[0].words);
        fputs("\n", f);
        roff_sentence(f, gr->head != NULL ? gr->summary : gr->cmds[0].summary);
    }
    fputs(".SH COMMANDS\n", f);
    for (size_t g = 0; g < N_ELEMS(groups); g++) {
        const struct help_group *gr = &groups[g];
        for (size_t i = 0; i < gr->ncmds; i++) {
            const struct help_cmd *c = &gr->cmds[i];
            fputs(".SS \"picket ", f);
            roff_text(f, c->words);
            fputs("\"\n", f);
            roff_command(f, c->words);
            if (c->args[0] != '\0') {
                fputc(' ', f);
                roff_args(f, c->args);
            }
            fputs("\n.PP\n", f);
            roff_sentence(f, c->summary);
            if (c->text != NULL) {
                roff_text(f, c->text);
                fputs("\n", f);
            }
            man_opts(f, c->opts, c->nopts);
        }
        if (gr->nopts > 0) {
            fputs(".SS \"", f);
            roff_text(f, gr->opts_title);
            fputs("\"\n", f);
            man_opts(f, gr->opts, gr->nopts);
        }
    }
    fputs(".SH \"EXIT STATUS\"\n", f);
    roff_text(f, exit_general);
    fputs("\n", f);
    for (size_t g = 0; g < N_ELEMS(groups); g++)
        for (size_t i = 0; i < groups[g].ncmds; i++) {
            fputs(".TP\n.B picket ", f);
            roff_text(f, groups[g].cmds[i].words);
            fputs("\n", f);
            roff_text(f, groups[g].cmds[i].exit);
            fputs("\n", f);
        }
    fputs(".SH SIGNALS\nFor run and dev: ", f);
    roff_text(f, signals_text);
    fputs("\n.SH ENVIRONMENT\n.TP\n.B PICKET_CONFIG\nThe config that \\fBpicket inject "
          "write\\-config\\fR writes (set by the injector).\n.TP\n.B PICKET_APP_PROBES\n"
          "App probe targets for \\fBpicket run\\fR, a JSON object of the shape of "
          "probes.targets, added to the config's (set by the injector from the app's "
          "probes).\n.SH \"SEE ALSO\"\n",
          f);
    roff_text(f, see_also);
    fputs("\n", f);
}
