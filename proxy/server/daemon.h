/*
 * daemon.h - `picket run`.
 */
#ifndef PX_DAEMON_H
#define PX_DAEMON_H

/* Runs the proxy with the config at config_path until SIGTERM/SIGINT has
 * drained it. on_ready (may be NULL) is called on the control thread once
 * every listener is bound and the workers run. Returns the process exit
 * status: 0 after a drain, 2 for a bad config, 1 for other start failures. */
int px_run(const char *config_path, void (*on_ready)(void *arg), void *ready_arg);

/* Overrides node_id from the config file (picket run --node-id, e.g. the
 * pod's namespace/name from the downward API). NULL clears it. */
void px_run_set_node_id(const char *id);

/* Override probes.bind / metrics.bind from the config file ("host:port";
 * picket run --probes-bind / --metrics-bind: the injector's ports win over
 * whatever the mounted config says, so the pod's rewritten probes and its
 * prometheus.io annotations point where picket listens). NULL clears. */
void px_run_set_probes_bind(const char *hostport);
void px_run_set_metrics_bind(const char *hostport);

/* The environment variable `picket run` reads app probe targets from: a
 * JSON object of the same shape as probes.targets, added to the config's
 * (a name in both is an error). */
#define PX_APP_PROBES_ENV "PICKET_APP_PROBES"

#endif
