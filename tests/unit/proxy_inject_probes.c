/*
 * proxy_inject_probes.c - TCase "inject_probes" of the proxy suite:
 * proxy/inject/inject_probes.c, the app's kubelet probes rewritten to
 * picket's probes listener. Each row is a pod's containers; the injected
 * object must carry exactly the expected PICKET_APP_PROBES (as Kubernetes
 * stores it: '$' doubled) in the sidecar's env, the rewritten probes at
 * /app-health/<container>/<kind> on the probes port with their other
 * members kept, and every target must load with picket's own config
 * parser. Refusals name the reason.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certs_json.h"
#include "config.h"
#include "inject.h"

TCase *tcase_inject_probes(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define POD(ann, spec)                                                                             \
    "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\",\"labels\":{\"app\":"  \
    "\"web\"}" ann "},\"spec\":" spec "}"
#define PORTS                                                                                      \
    "\"ports\":[{\"name\":\"http\",\"containerPort\":8080},{\"name\":\"grpc\",\"containerPort\":"  \
    "9090}]"

static const struct {
    const char *id, *json;
    const char *env;          /* PICKET_APP_PROBES as stored; NULL: no such variable */
    const char *checks[6][2]; /* dotted path from the pod spec -> expected raw JSON text */
    const char *errpart;      /* a refusal */
} rows[] = {
    {"httpGet on a named port, timings kept",
     POD("", "{\"containers\":[{\"name\":\"app\"," PORTS ",\"livenessProbe\":{\"httpGet\":"
             "{\"path\":\"/healthz\",\"port\":\"http\"},\"initialDelaySeconds\":3,"
             "\"periodSeconds\":7,\"timeoutSeconds\":2,\"failureThreshold\":5}}]}"),
     "{\"app/livez\":{\"http\":\"http://127.0.0.1:8080/healthz\",\"timeout\":\"2s\"}}",
     {{"containers.0.livenessProbe.httpGet", "{\"path\":\"/app-health/app/livez\",\"port\":15021,"
                                             "\"scheme\":\"HTTP\"}"},
      {"containers.0.livenessProbe.initialDelaySeconds", "3"},
      {"containers.0.livenessProbe.periodSeconds", "7"},
      {"containers.0.livenessProbe.timeoutSeconds", "2"},
      {"containers.0.livenessProbe.failureThreshold", "5"}},
     NULL},
    {"tcpSocket and grpc, readiness and startup",
     POD("", "{\"containers\":[{\"name\":\"api\"," PORTS ",\"readinessProbe\":{\"tcpSocket\":"
             "{\"port\":8080},\"successThreshold\":1},\"startupProbe\":{\"grpc\":{\"port\":9090,"
             "\"service\":\"shop.Orders\"},\"failureThreshold\":30}}]}"),
     "{\"api/readyz\":{\"tcp\":\"127.0.0.1:8080\",\"timeout\":\"1s\"},\"api/startupz\":{\"grpc\":"
     "\"127.0.0.1:9090\",\"service\":\"shop.Orders\",\"timeout\":\"1s\"}}",
     {{"containers.0.readinessProbe", "{\"httpGet\":{\"path\":\"/app-health/api/readyz\",\"port\":"
                                      "15021,\"scheme\":\"HTTP\"},\"successThreshold\":1}"},
      {"containers.0.startupProbe", "{\"httpGet\":{\"path\":\"/app-health/api/startupz\",\"port\":"
                                    "15021,\"scheme\":\"HTTP\"},\"failureThreshold\":30}"}},
     NULL},
    {"https, host, headers and a query are kept in the target",
     POD("", "{\"containers\":[{\"name\":\"app\",\"readinessProbe\":{\"httpGet\":{\"scheme\":"
             "\"HTTPS\",\"host\":\"app.local\",\"port\":8443,\"path\":\"/ready?deep=1\","
             "\"httpHeaders\":[{\"name\":\"X-Token\",\"value\":\"a$(b)\"},{\"name\":\"Host\","
             "\"value\":\"h\"}]}}}]}"),
     "{\"app/readyz\":{\"http\":\"https://app.local:8443/ready?deep=1\",\"headers\":{\"X-Token\":"
     "\"a$$(b)\",\"Host\":\"h\"},\"timeout\":\"1s\"}}",
     {{"containers.0.readinessProbe.httpGet.path", "\"/app-health/app/readyz\""}},
     NULL},
    {"IPv6 host, no path, tcp host",
     POD("", "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"httpGet\":{\"host\":\"::1\","
             "\"port\":80}},\"readinessProbe\":{\"tcpSocket\":{\"host\":\"db\",\"port\":5432}}}]}"),
     "{\"a/livez\":{\"http\":\"http://[::1]:80/\",\"timeout\":\"1s\"},\"a/readyz\":{\"tcp\":"
     "\"db:5432\",\"timeout\":\"1s\"}}",
     {{"containers.0.readinessProbe.httpGet.port", "15021"}},
     NULL},
    {"path without a leading slash, long timeout capped",
     POD("", "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"httpGet\":{\"path\":\"hz\","
             "\"port\":80},\"timeoutSeconds\":3600}}]}"),
     "{\"a/livez\":{\"http\":\"http://127.0.0.1:80/hz\",\"timeout\":\"600s\"}}",
     {{"containers.0.livenessProbe.timeoutSeconds", "3600"}},
     NULL},
    {"exec probes stay, other containers too",
     POD("",
         "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"exec\":{\"command\":[\"true\"]}}},"
         "{\"name\":\"b\",\"readinessProbe\":{\"tcpSocket\":{\"port\":81}}},{\"name\":\"c\"}]}"),
     "{\"b/readyz\":{\"tcp\":\"127.0.0.1:81\",\"timeout\":\"1s\"}}",
     {{"containers.0.livenessProbe", "{\"exec\":{\"command\":[\"true\"]}}"},
      {"containers.1.readinessProbe.httpGet.path", "\"/app-health/b/readyz\""},
      {"containers.2", "{\"name\":\"c\"}"}},
     NULL},
    {"only exec: no variable",
     POD("",
         "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"exec\":{\"command\":[\"true\"]}},"
         "\"readinessProbe\":null}]}"),
     NULL,
     {{"containers.0.readinessProbe", "null"}},
     NULL},
    {"rewrite-probes false",
     POD(",\"annotations\":{\"picket.dev/rewrite-probes\":\"false\"}",
         "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"tcpSocket\":{\"port\":81}}}]}"),
     NULL,
     {{"containers.0.livenessProbe", "{\"tcpSocket\":{\"port\":81}}"}},
     NULL},
    {"rewrite-probes true is the default",
     POD(",\"annotations\":{\"picket.dev/rewrite-probes\":\"true\"}",
         "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"tcpSocket\":{\"port\":81}}}]}"),
     "{\"a/livez\":{\"tcp\":\"127.0.0.1:81\",\"timeout\":\"1s\"}}",
     {{NULL, NULL}},
     NULL},
    /* refusals */
    {"unknown port name",
     POD("", "{\"containers\":[{\"name\":\"a\"," PORTS ",\"livenessProbe\":{\"httpGet\":"
             "{\"port\":\"admin\"}}}]}"),
     NULL,
     {{NULL, NULL}},
     "\"admin\" is not the name of one of the container's ports"},
    {"header picket refuses",
     POD("", "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"httpGet\":{\"port\":80,"
             "\"httpHeaders\":[{\"name\":\"Content-Length\",\"value\":\"1\"}]}}}]}"),
     NULL,
     {{NULL, NULL}},
     "picket cannot run this probe: probes.targets.a/livez.headers"},
    {"a header given twice",
     POD("", "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"httpGet\":{\"port\":80,"
             "\"httpHeaders\":[{\"name\":\"X\",\"value\":\"1\"},{\"name\":\"X\",\"value\":\"2\"}]}}"
             "}]}"),
     NULL,
     {{NULL, NULL}},
     "duplicate key"},
    {"path with a '#'",
     POD("", "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"httpGet\":{\"port\":80,"
             "\"path\":\"/x#y\"}}}]}"),
     NULL,
     {{NULL, NULL}},
     "visible ASCII without '#'"},
    {"two handlers",
     POD("", "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"httpGet\":{\"port\":80},"
             "\"tcpSocket\":{\"port\":80}}}]}"),
     NULL,
     {{NULL, NULL}},
     "more than one handler"},
    {"bad scheme",
     POD("", "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"httpGet\":{\"port\":80,"
             "\"scheme\":\"FTP\"}}}]}"),
     NULL,
     {{NULL, NULL}},
     "expected HTTP or HTTPS"},
    {"port out of range",
     POD("", "{\"containers\":[{\"name\":\"a\",\"livenessProbe\":{\"grpc\":{\"port\":0}}}]}"),
     NULL,
     {{NULL, NULL}},
     "port: expected 1..65535"},
    {"no container name",
     POD("", "{\"containers\":[{\"livenessProbe\":{\"tcpSocket\":{\"port\":80}}}]}"),
     NULL,
     {{NULL, NULL}},
     "containers[0].name"},
};

/* Dotted path from token i, or -1. */
static int jpath(const struct certs_json *j, int i, const char *path)
{
    char seg[64];
    while (path != NULL && *path != '\0' && i >= 0) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        snprintf(seg, sizeof(seg), "%.*s", (int)n, path);
        if (certs_json_is_arr(j, i)) {
            int k = atoi(seg), e = certs_json_first(j, i);
            while (e > 0 && k-- > 0)
                e = certs_json_next_elem(j, e);
            i = e;
        } else {
            i = certs_json_get(j, i, seg);
        }
        path = dot ? dot + 1 : NULL;
    }
    return i;
}

/* The sidecar's PICKET_APP_PROBES value, or NULL (malloc'ed). */
static char *app_probes(const struct certs_json *j, int spec)
{
    int pk = certs_json_first(j, certs_json_get(j, spec, "initContainers"));
    int env = certs_json_get(j, pk, "env");
    ck_assert(certs_json_eq(j, certs_json_get(j, pk, "name"), "picket"));
    for (int e = certs_json_first(j, env); e > 0; e = certs_json_next_elem(j, e))
        if (certs_json_eq(j, certs_json_get(j, e, "name"), "PICKET_APP_PROBES"))
            return certs_json_strdup(j, certs_json_get(j, e, "value"));
    return NULL;
}

START_TEST(test_probe_rewrite)
{
    struct px_inject_opts o;
    struct px_inject_result r;
    struct certs_json j;
    char err[512] = "", *out = NULL, *env;
    size_t outlen = 0;
    const char *js = rows[_i].json;
    int rc, spec;

    px_inject_opts_init(&o);
    rc = px_inject_object(js, strlen(js), &o, 0, &out, &outlen, &r, err, sizeof(err));
    if (rows[_i].errpart != NULL) {
        ck_assert_msg(rc != 0, "%s: injected", rows[_i].id);
        ck_assert_msg(strstr(err, rows[_i].errpart) != NULL, "%s: %s", rows[_i].id, err);
        return;
    }
    ck_assert_msg(rc == 0, "%s: %s", rows[_i].id, err);
    ck_assert_int_eq(certs_json_parse(&j, out, outlen, 0, err, sizeof(err)), 0);
    spec = certs_json_get(&j, 0, "spec");
    env = app_probes(&j, spec);
    if (rows[_i].env == NULL) {
        ck_assert_msg(env == NULL, "%s: %s", rows[_i].id, env);
    } else {
        struct px_config *cfg = px_config_new_empty();
        char *dollar = env, *w = env;
        ck_assert_msg(env != NULL && strcmp(env, rows[_i].env) == 0, "%s: %s", rows[_i].id, env);
        /* what the container gets ("$$" is "$") loads as picket run would */
        for (; *dollar != '\0'; dollar++) {
            *w++ = *dollar;
            if (dollar[0] == '$' && dollar[1] == '$')
                dollar++;
        }
        *w = '\0';
        ck_assert_ptr_nonnull(cfg);
        ck_assert_msg(px_config_add_probe_targets(cfg, "PICKET_APP_PROBES", env, strlen(env), err,
                                                  sizeof(err)) == 0,
                      "%s: %s", rows[_i].id, err);
        px_config_free(cfg);
    }
    free(env);
    for (size_t k = 0; k < N_ELEMS(rows[_i].checks) && rows[_i].checks[k][0]; k++) {
        int t = jpath(&j, spec, rows[_i].checks[k][0]);
        const char *want = rows[_i].checks[k][1];
        int s, e;
        ck_assert_msg(t >= 0, "%s: no %s", rows[_i].id, rows[_i].checks[k][0]);
        s = j.tok[t].start - (j.tok[t].type == JSMN_STRING);
        e = j.tok[t].end + (j.tok[t].type == JSMN_STRING);
        ck_assert_msg((size_t)(e - s) == strlen(want) && memcmp(out + s, want, strlen(want)) == 0,
                      "%s: %s is %.*s", rows[_i].id, rows[_i].checks[k][0], e - s, out + s);
    }
    certs_json_clear(&j);
    free(out);
    px_inject_result_clear(&r);
}
END_TEST

/* Other ports for the listeners: the probes, the args and the annotation follow. */
START_TEST(test_probe_ports)
{
    struct px_inject_opts o;
    struct px_inject_result r;
    char err[256];
    const char *js = POD("", "{\"containers\":[{\"name\":\"a\",\"ports\":[{\"containerPort\":"
                             "15021}],\"livenessProbe\":{\"tcpSocket\":{\"port\":15021}}}]}");

    px_inject_opts_init(&o);
    ck_assert_int_eq(px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err)), PX_INJECT_EREFUSE);
    ck_assert_ptr_nonnull(strstr(err, "containerPort 15021 is picket's"));
    o.probes_port = 8021;
    o.metrics_port = 8090;
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), 0);
    ck_assert_int_eq(px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(r.patch, "\"--probes-bind\",\"0.0.0.0:8021\",\"--metrics-bind\","
                                          "\"0.0.0.0:8090\""));
    ck_assert_ptr_nonnull(strstr(r.patch, "\"path\":\"/app-health/a/livez\",\"port\":8021"));
    ck_assert_ptr_nonnull(strstr(r.patch, "\"prometheus.io/port\":\"8090\""));
    ck_assert_ptr_nonnull(strstr(r.patch, "{\\\"a/livez\\\":{\\\"tcp\\\":\\\"127.0.0.1:15021\\\""));
    px_inject_result_clear(&r);
}
END_TEST

TCase *tcase_inject_probes(void)
{
    TCase *tc = tcase_create("inject_probes");
    tcase_add_loop_test(tc, test_probe_rewrite, 0, (int)N_ELEMS(rows));
    tcase_add_test(tc, test_probe_ports);
    return tc;
}
