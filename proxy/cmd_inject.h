/*
 * cmd_inject.h - `picket inject`: Kubernetes sidecar injection as a CLI
 * filter and as a mutating admission webhook (DESIGN.md "Roles and
 * modes"). The pure part is inject.h; this file may print, read files and
 * run an event loop.
 */
#ifndef PX_CMD_INJECT_H
#define PX_CMD_INJECT_H

/* Runs `picket inject ...`; argv[0] is "inject".
 *
 *   picket inject [-f FILE|-] [--patch] [--compact] [OPTIONS]
 *       reads one JSON object (Pod, workload, or List; stdin by default)
 *       and writes it with the sidecar added to stdout (or, with --patch,
 *       the RFC 6902 patch). YAML is not read: pipe JSON,
 *       kubectl get deploy x -o json | picket inject | kubectl apply -f -
 *   picket inject serve --bind HOST:PORT --cert FILE --key FILE [OPTIONS]
 *       HTTPS admission webhook: POST /mutate (AdmissionReview v1),
 *       GET /healthz. SIGTERM or SIGINT stops it (exit 0).
 *
 * OPTIONS: --image IMG, --config-map NAME, --svid-secret NAME,
 * --inbound-port N, --admin-port N, --drain-timeout DURATION,
 * --exclude-namespace NS (repeatable; replaces kube-system, kube-public).
 *
 * Returns the exit status: 0 success; 1 refused input (the message has
 * file:line:col) or the server failed to start; 2 usage error. Main thread
 * only (serve installs signal handlers). */
int px_cmd_inject(int argc, char **argv);

#endif
