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
 *   picket inject [FILE|-] [--patch] [--compact] [OPTIONS]
 *       reads one JSON object (Pod, workload, or List; FILE, or stdin when
 *       FILE is "-" or absent; -f FILE is an alias) and writes it with the
 *       sidecar added to stdout (or, with --patch, the RFC 6902 patch).
 *       YAML is not read: pipe JSON,
 *       kubectl get deploy web -o json | picket inject - | kubectl apply -f -
 *   picket inject serve --bind ADDR --cert C --key K [--config FILE] [OPTIONS]
 *       HTTPS admission webhook: POST /inject (AdmissionReview v1; /mutate is
 *       an alias), GET /healthz. SIGTERM or SIGINT stops it (exit 0).
 *   picket inject write-config --out FILE
 *       writes $PICKET_CONFIG (one JSON object) to FILE; run in injected pods
 *       by the picket-config init container when the injector config has a
 *       proxy_config.
 *
 * OPTIONS: --config FILE (the injector config, inject.h
 * px_inject_config_load; the other options override it), --image IMG,
 * --config-map NAME, --svid-secret NAME, --inbound-port N, --admin-port N,
 * --drain-timeout DURATION, --exclude-namespace NS (repeatable; replaces
 * the list), --malformed-review allow|error.
 *
 * Returns the exit status: 0 success; 1 refused input (the message has
 * file:line:col), an unreadable or invalid --config, or the server failed
 * to start; 2 usage error. Main thread only (serve installs signal
 * handlers). */
int px_cmd_inject(int argc, char **argv);

#endif
