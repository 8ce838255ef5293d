/*
 * proxy_inject.c - TCase "inject" of the proxy suite: proxy/inject/inject.c (the
 * patch planner, the JSON Patch applier, the formatter, AdmissionReview).
 * Every injected case also checks the mutated object (parsed back with
 * certs_json_parse): picket is a native sidecar in initContainers, the app
 * containers are untouched, and injecting it again changes nothing.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certs_json.h"
#include "inject.h"

TCase *tcase_inject(void);

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

#define C_APP "{\"name\":\"app\",\"image\":\"example/orders:1.4\"}"
#define C_PICKET "{\"name\":\"picket\",\"image\":\"picket:0.1\"}"
#define LBL "\"labels\":{\"app\":\"orders\"}"
#define TPL(meta, spec) "\"template\":{" meta "\"spec\":" spec "}"
#define DEPLOY(kind, meta, tmeta, spec)                                                            \
    "{\"apiVersion\":\"apps/v1\",\"kind\":\"" kind "\",\"metadata\":{\"name\":\"orders\"" meta "},"  \
    "\"spec\":{\"replicas\":2," TPL(tmeta, spec) "}}"
#define POD(meta, spec) "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{" meta "},\"spec\":" spec "}"

static const struct {
    const char *id, *json;
    int rc;                       /* 0 or PX_INJECT_E* */
    enum px_inject_reason reason; /* when rc == 0 */
    const char *in_patch[4];      /* fragments the patch must contain */
    const char *spec, *meta;      /* dotted paths in the output (NULL: no object check) */
    const char *cm;               /* expected ConfigMap name */
    int64_t grace;                /* expected terminationGracePeriodSeconds */
    const char *errpart;          /* error text fragment when rc != 0 */
} cases[] = {
    {"pod, no volumes, no annotations", POD("\"name\":\"orders-0\"", "{\"containers\":[" C_APP "]}"), 0,
     PX_INJECT_INJECTED,
     {"\"path\":\"/spec/initContainers\",\"value\":[{\"name\":\"picket\"", "\"path\":\"/spec/volumes\",\"value\":[",
      "\"op\":\"add\",\"path\":\"/metadata/annotations\",\"value\":{\"picket.dev/injected\":\"true\","
      "\"prometheus.io/scrape\":\"true\",\"prometheus.io/port\":\"15090\",\"prometheus.io/path\":\"/metrics\"}",
      "\"path\":\"/spec/terminationGracePeriodSeconds\",\"value\":30"},
     "spec", "metadata", "orders-0-picket", 30, NULL},
    {"pod with volumes and annotations, long grace",
     POD("\"name\":\"p\"," LBL ",\"annotations\":{\"a\":\"b\"}",
         "{\"containers\":[" C_APP "],\"volumes\":[{\"name\":\"data\",\"emptyDir\":{}}],"
         "\"terminationGracePeriodSeconds\":60}"),
     0, PX_INJECT_INJECTED,
     {"\"path\":\"/spec/volumes/-\",\"value\":{\"name\":\"picket-config\"",
      "\"path\":\"/metadata/annotations/picket.dev~1injected\",\"value\":\"true\"",
      "\"csi\":{\"driver\":\"spiffe.csi.cert-manager.io\",\"readOnly\":true}"},
     "spec", "metadata", "orders-picket", 60, NULL},
    {"pod, short grace is raised",
     POD(LBL, "{\"containers\":[" C_APP "],\"terminationGracePeriodSeconds\":5}"), 0,
     PX_INJECT_INJECTED, {"{\"op\":\"replace\",\"path\":\"/spec/terminationGracePeriodSeconds\","
                          "\"value\":30}"},
     "spec", "metadata", "orders-picket", 30, NULL},
    {"deployment without template metadata", DEPLOY("Deployment", "", "", "{\"containers\":[" C_APP "]}"),
     0, PX_INJECT_INJECTED,
     {"\"path\":\"/spec/template/spec/initContainers\"",
      "\"path\":\"/spec/template/metadata\",\"value\":{\"annotations\":{"},
     "spec.template.spec", "spec.template.metadata", "orders-picket", 30, NULL},
    {"statefulset, annotations null", DEPLOY("StatefulSet", "", "\"metadata\":{" LBL ",\"annotations\":null},",
                                             "{\"containers\":[" C_APP "],\"volumes\":null}"),
     0, PX_INJECT_INJECTED,
     {"\"path\":\"/spec/template/metadata/annotations\",\"value\":{",
      "\"path\":\"/spec/template/spec/volumes\",\"value\":["},
     "spec.template.spec", "spec.template.metadata", "orders-picket", 30, NULL},
    {"cronjob", "{\"kind\":\"CronJob\",\"metadata\":{\"name\":\"nightly\"},\"spec\":{\"schedule\":\"@daily\","
                "\"jobTemplate\":{\"spec\":{\"template\":{\"spec\":{\"containers\":[" C_APP "]}}}}}}",
     0, PX_INJECT_INJECTED, {"\"path\":\"/spec/jobTemplate/spec/template/spec/initContainers\""},
     "spec.jobTemplate.spec.template.spec", "spec.jobTemplate.spec.template.metadata",
     "nightly-picket", 30, NULL},
    {"config map from annotation",
     POD(LBL ",\"annotations\":{\"picket.dev/config-map\":\"shared-cfg\"}", "{\"containers\":[" C_APP "]}"),
     0, PX_INJECT_INJECTED, {"\"configMap\":{\"name\":\"shared-cfg\"}"}, "spec", "metadata",
     "shared-cfg", 30, NULL},
    {"non-ASCII text kept", POD(LBL ",\"annotations\":{\"note\":\"caf\xc3\xa9 \xf0\x9f\x90\x88 \\u00e9\"}",
                                "{\"containers\":[" C_APP "]}"),
     0, PX_INJECT_INJECTED, {"/metadata/annotations/picket.dev~1injected"}, "spec", "metadata",
     "orders-picket", 30, NULL},
    {"already has picket", POD(LBL, "{\"containers\":[" C_APP "," C_PICKET "]}"), 0, PX_INJECT_ALREADY,
     {"[]"}, "spec", "metadata", NULL, 0, NULL},
    {"already has picket as an init container",
     POD(LBL, "{\"containers\":[" C_APP "],\"initContainers\":[" C_PICKET "]}"), 0, PX_INJECT_ALREADY,
     {"[]"}, NULL, NULL, NULL, 0, NULL},
    {"already annotated injected",
     DEPLOY("Deployment", "", "\"metadata\":{\"annotations\":{\"picket.dev/injected\":\"true\"}},",
            "{\"containers\":[" C_APP "]}"),
     0, PX_INJECT_ALREADY, {"[]"}, NULL, NULL, NULL, 0, NULL},
    {"existing init containers are kept, picket first",
     POD(LBL, "{\"initContainers\":[{\"name\":\"migrate\",\"image\":\"m\"}],\"containers\":[" C_APP "]}"),
     0, PX_INJECT_INJECTED, {"{\"op\":\"replace\",\"path\":\"/spec/initContainers\",\"value\":[{\"name\":\"picket\"",
                             "}},{\"name\":\"migrate\",\"image\":\"m\"}]}"},
     "spec", "metadata", "orders-picket", 30, NULL},
    {"empty init containers", POD(LBL, "{\"initContainers\":[],\"containers\":[" C_APP "]}"),
     0, PX_INJECT_INJECTED, {"{\"op\":\"replace\",\"path\":\"/spec/initContainers\",\"value\":[{\"name\":\"picket\""},
     "spec", "metadata", "orders-picket", 30, NULL},
    {"the app's own prometheus.io annotations are kept",
     POD(LBL ",\"annotations\":{\"prometheus.io/port\":\"8080\"}", "{\"containers\":[" C_APP "]}"),
     0, PX_INJECT_INJECTED, {"\"path\":\"/metadata/annotations/picket.dev~1injected\",\"value\":\"true\"}]"},
     "spec", "metadata", "orders-picket", 30, NULL},
    {"prometheus.io annotations added one by one",
     POD(LBL ",\"annotations\":{\"a\":\"b\"}", "{\"containers\":[" C_APP "]}"),
     0, PX_INJECT_INJECTED, {"\"path\":\"/metadata/annotations/prometheus.io~1scrape\",\"value\":\"true\"",
                             "\"path\":\"/metadata/annotations/prometheus.io~1port\",\"value\":\"15090\"",
                             "\"path\":\"/metadata/annotations/prometheus.io~1path\",\"value\":\"/metrics\""},
     "spec", "metadata", "orders-picket", 30, NULL},
    {"hostNetwork pod", POD(LBL, "{\"hostNetwork\":true,\"containers\":[" C_APP "]}"), 0,
     PX_INJECT_HOST_NETWORK, {"[]"}, "spec", "metadata", NULL, 0, NULL},
    {"hostNetwork false is injected", POD(LBL, "{\"hostNetwork\":false,\"containers\":[" C_APP "]}"),
     0, PX_INJECT_INJECTED, {"/spec/initContainers"}, "spec", "metadata", "orders-picket", 30, NULL},
    {"hostNetwork deployment",
     DEPLOY("Deployment", "", "", "{\"hostNetwork\":true,\"containers\":[" C_APP "]}"), 0,
     PX_INJECT_HOST_NETWORK, {"[]"}, "spec.template.spec", NULL, NULL, 0, NULL},
    {"opt out by annotation disabled",
     POD(LBL ",\"annotations\":{\"picket.dev/inject\":\"disabled\"}", "{\"containers\":[" C_APP "]}"), 0,
     PX_INJECT_OPT_OUT, {"[]"}, "spec", "metadata", NULL, 0, NULL},
    {"opt out by annotation",
     POD(LBL ",\"annotations\":{\"picket.dev/inject\":\"false\"}", "{\"containers\":[" C_APP "]}"), 0,
     PX_INJECT_OPT_OUT, {"[]"}, "spec", "metadata", NULL, 0, NULL},
    {"opt out by label on the deployment",
     DEPLOY("Deployment", ",\"labels\":{\"picket.dev/inject\":\"disabled\"}", "",
            "{\"containers\":[" C_APP "]}"),
     0, PX_INJECT_OPT_OUT, {"[]"}, "spec.template.spec", NULL, NULL, 0, NULL},
    {"excluded namespace", POD(LBL ",\"namespace\":\"kube-system\"", "{\"containers\":[" C_APP "]}"), 0,
     PX_INJECT_NS_EXCLUDED, {"[]"}, "spec", "metadata", NULL, 0, NULL},
    {"service passes through", "{\"kind\":\"Service\",\"metadata\":{\"name\":\"s\"},\"spec\":{}}", 0,
     PX_INJECT_NOT_WORKLOAD, {"[]"}, NULL, NULL, NULL, 0, NULL},
    {"list", "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":["
             "{\"kind\":\"Service\",\"metadata\":{\"name\":\"s\"}},"
             DEPLOY("Deployment", "", "", "{\"containers\":[" C_APP "]}") ","
             POD(LBL, "{\"containers\":[" C_APP "," C_PICKET "]}") "]}",
     0, PX_INJECT_INJECTED,
     {"\"path\":\"/items/1/spec/template/spec/initContainers\"", "/items/1/spec/template/metadata\""},
     "items.1.spec.template.spec", "items.1.spec.template.metadata", "orders-picket", 30, NULL},
    {"empty list", "{\"kind\":\"DeploymentList\",\"items\":[]}", 0, PX_INJECT_NOT_WORKLOAD, {"[]"},
     NULL, NULL, NULL, 0, NULL},
    /* refusals */
    {"trailing comma", "{\"kind\":\"Pod\",\n \"spec\":{\"containers\":[],}}", PX_INJECT_EINPUT, 0,
     {NULL}, NULL, NULL, NULL, 0, "2:26: trailing comma"},
    {"duplicate key", "{\"kind\":\"Pod\",\"kind\":\"Pod\"}", PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL,
     NULL, 0, "duplicate key"},
    {"not an object", "[1]", PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL, NULL, 0, "1:1: expected a JSON object"},
    {"no kind", "{\"metadata\":{}}", PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL, NULL, 0, "kind: missing"},
    {"no containers", POD(LBL, "{\"containers\":[]}"), PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL, NULL, 0,
     "containers: expected a non-empty array"},
    {"deployment without template", "{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"x\"},\"spec\":{}}",
     PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL, NULL, 0, "no pod template"},
    {"port taken", POD(LBL, "{\"containers\":[{\"name\":\"app\",\"ports\":[{\"containerPort\":15443}]}]}"),
     PX_INJECT_EREFUSE, 0, {NULL}, NULL, NULL, NULL, 0, "containerPort 15443 is picket's"},
    {"volume name taken",
     POD(LBL, "{\"containers\":[" C_APP "],\"volumes\":[{\"name\":\"picket-svid\",\"emptyDir\":{}}]}"),
     PX_INJECT_EREFUSE, 0, {NULL}, NULL, NULL, NULL, 0, "a volume named \"picket-svid\" already exists"},
    {"no app name", POD("\"generateName\":\"orders-7d9f-\"", "{\"containers\":[" C_APP "]}"),
     PX_INJECT_EREFUSE, 0, {NULL}, NULL, NULL, NULL, 0, "cannot tell the app's name"},
    {"uppercase app name", POD("\"labels\":{\"app\":\"Orders\"}", "{\"containers\":[" C_APP "]}"),
     PX_INJECT_EREFUSE, 0, {NULL}, NULL, NULL, NULL, 0, "not a valid lowercase DNS-1123 name"},
    {"bad grace", POD(LBL, "{\"containers\":[" C_APP "],\"terminationGracePeriodSeconds\":\"30\"}"),
     PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL, NULL, 0, "terminationGracePeriodSeconds"},
    {"invalid utf-8", "{\"kind\":\"Pod\",\"x\":\"\xff\"}", PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL,
     NULL, 0, "1:20: invalid UTF-8"},
    {"overlong utf-8", "{\"kind\":\"Pod\",\n\"x\":\"\xc0\xaf\"}", PX_INJECT_EINPUT, 0, {NULL}, NULL,
     NULL, NULL, 0, "2:6: invalid UTF-8"},
    {"utf-16 surrogate", "{\"kind\":\"Pod\",\"x\":\"\xed\xa0\x80\"}", PX_INJECT_EINPUT, 0, {NULL},
     NULL, NULL, NULL, 0, "invalid UTF-8"},
    {"list item not an object", "{\"kind\":\"List\",\"items\":[1]}", PX_INJECT_EINPUT, 0, {NULL}, NULL,
     NULL, NULL, 0, "expected a Kubernetes object"},
    {"init containers not an array", POD(LBL, "{\"containers\":[" C_APP "],\"initContainers\":{}}"),
     PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL, NULL, 0, "initContainers: expected an array"},
    {"volumes not an array", POD(LBL, "{\"containers\":[" C_APP "],\"volumes\":\"x\"}"),
     PX_INJECT_EINPUT, 0, {NULL}, NULL, NULL, NULL, 0, "volumes: expected an array"},
};

/* Dotted path ("spec.template.spec", "items.1.spec") from token i, or -1. */
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

static int count_named(const struct certs_json *j, int arr, const char *name)
{
    int n = 0;
    for (int e = certs_json_first(j, arr); e > 0; e = certs_json_next_elem(j, e))
        if (certs_json_eq(j, certs_json_get(j, e, "name"), name))
            n++;
    return n;
}

static void check_object(int c, const char *out, size_t outlen)
{
    struct certs_json j;
    char err[256], buf[256];
    int spec, ctr, init, vols, cfg, meta, b;
    int64_t g;
    ck_assert_msg(certs_json_parse(&j, out, outlen, 0, err, sizeof(err)) == 0, "%s: %s",
                  cases[c].id, err);
    spec = jpath(&j, 0, cases[c].spec);
    ck_assert_msg(certs_json_is_obj(&j, spec), "%s: no pod spec", cases[c].id);
    ctr = certs_json_get(&j, spec, "containers");
    init = certs_json_get(&j, spec, "initContainers");
    if (cases[c].reason == PX_INJECT_OPT_OUT || cases[c].reason == PX_INJECT_NS_EXCLUDED ||
        cases[c].reason == PX_INJECT_HOST_NETWORK) {
        ck_assert_int_eq(count_named(&j, ctr, "picket"), 0);
        ck_assert_int_eq(count_named(&j, init, "picket"), 0);
        certs_json_clear(&j);
        return;
    }
    ck_assert_int_eq(count_named(&j, ctr, "picket") + count_named(&j, init, "picket"), 1);
    if (cases[c].cm != NULL) {
        /* a native sidecar: the first init container, restartPolicy Always;
         * the app containers are untouched */
        int pk = certs_json_first(&j, init);
        ck_assert_int_eq(count_named(&j, ctr, "picket"), 0);
        ck_assert(certs_json_eq(&j, certs_json_get(&j, pk, "name"), "picket"));
        ck_assert(certs_json_eq(&j, certs_json_get(&j, pk, "restartPolicy"), "Always"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "args.2"), "/etc/picket/picket.json"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "args.3"), "--node-id"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "args.4"), "$(PICKET_NODE_ID)"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "env.0.valueFrom.fieldRef.fieldPath"),
                                "metadata.namespace"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "env.1.valueFrom.fieldRef.fieldPath"),
                                "metadata.name"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "env.2.value"), "$(POD_NAMESPACE)/$(POD_NAME)"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "ports.0.name"), "picket-mtls"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "ports.1.name"), "picket-probes"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "ports.2.name"), "picket-metrics"));
        ck_assert_int_eq(j.tok[certs_json_get(&j, pk, "ports")].size, 3); /* no admin port */
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "args.6"), "0.0.0.0:15021"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "args.8"), "0.0.0.0:15090"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "startupProbe.exec.command.4"),
                                "http://127.0.0.1:15000/readyz"));
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "readinessProbe.exec.command.4"),
                                "http://127.0.0.1:15000/readyz"));
        ck_assert(certs_json_bool(&j, jpath(&j, pk, "securityContext.runAsNonRoot"), &b) == 0 && b);
        ck_assert(certs_json_bool(&j, jpath(&j, pk, "securityContext.readOnlyRootFilesystem"),
                                  &b) == 0 && b);
        ck_assert(certs_json_bool(&j, jpath(&j, pk, "securityContext.allowPrivilegeEscalation"),
                                  &b) == 0 && !b);
        ck_assert(certs_json_eq(&j, jpath(&j, pk, "securityContext.capabilities.drop.0"), "ALL"));
        ck_assert_int_eq(certs_json_int(&j, jpath(&j, pk, "securityContext.runAsUser"), &g), 0);
        ck_assert_int_eq(g, 65532);
        vols = certs_json_get(&j, spec, "volumes");
        ck_assert_int_eq(count_named(&j, vols, "picket-config"), 1);
        ck_assert_int_eq(count_named(&j, vols, "picket-svid"), 1);
        for (cfg = certs_json_first(&j, vols); cfg > 0; cfg = certs_json_next_elem(&j, cfg))
            if (certs_json_eq(&j, certs_json_get(&j, cfg, "name"), "picket-config"))
                break;
        ck_assert_int_ge(certs_json_str(&j, jpath(&j, cfg, "configMap.name"), buf, sizeof(buf)), 0);
        ck_assert_str_eq(buf, cases[c].cm);
        ck_assert_int_eq(certs_json_int(&j, certs_json_get(&j, spec, "terminationGracePeriodSeconds"),
                                        &g), 0);
        ck_assert_int_eq(g, cases[c].grace);
        meta = jpath(&j, 0, cases[c].meta);
        ck_assert(certs_json_eq(
            &j, certs_json_get(&j, certs_json_get(&j, meta, "annotations"), "picket.dev/injected"),
            "true"));
    }
    certs_json_clear(&j);
}

START_TEST(test_inject_table)
{
    struct px_inject_opts o;
    struct px_inject_result r, r2;
    char err[512] = "", *out = NULL, *out2 = NULL;
    size_t outlen = 0, outlen2 = 0;
    const char *js = cases[_i].json;
    int rc;

    px_inject_opts_init(&o);
    rc = px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err));
    ck_assert_msg(rc == cases[_i].rc, "%s: rc %d (%s)", cases[_i].id, rc, err);
    if (rc != 0) {
        ck_assert_msg(strstr(err, cases[_i].errpart) != NULL, "%s: err \"%s\"", cases[_i].id, err);
        ck_assert_int_eq(px_inject_object(js, strlen(js), &o, 1, &out, &outlen, &r, err,
                                          sizeof(err)),
                         cases[_i].rc);
        ck_assert_ptr_null(out);
        return;
    }
    ck_assert_msg(r.reason == cases[_i].reason, "%s: reason %s", cases[_i].id,
                  px_inject_reason_name(r.reason));
    for (size_t k = 0; k < N_ELEMS(cases[_i].in_patch) && cases[_i].in_patch[k]; k++)
        ck_assert_msg(strstr(r.patch, cases[_i].in_patch[k]) != NULL, "%s: patch %s lacks %s",
                      cases[_i].id, r.patch, cases[_i].in_patch[k]);
    px_inject_result_clear(&r);

    rc = px_inject_object(js, strlen(js), &o, _i % 2, &out, &outlen, &r, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s: %s", cases[_i].id, err);
    ck_assert_uint_eq(strlen(out), outlen);
    if (cases[_i].spec != NULL)
        check_object(_i, out, outlen);
    /* Idempotent: the output injected again is the same bytes. */
    rc = px_inject_object(out, outlen, &o, _i % 2, &out2, &outlen2, &r2, err, sizeof(err));
    ck_assert_msg(rc == 0, "%s: second pass: %s", cases[_i].id, err);
    ck_assert_uint_eq(r2.injected, 0);
    ck_assert_str_eq(out2, out);
    free(out);
    free(out2);
    px_inject_result_clear(&r);
    px_inject_result_clear(&r2);
}
END_TEST

START_TEST(test_inject_list_counts)
{
    struct px_inject_opts o;
    struct px_inject_result r;
    char err[256];
    const char *js = NULL;
    for (size_t i = 0; i < N_ELEMS(cases); i++)
        if (strcmp(cases[i].id, "list") == 0)
            js = cases[i].json;
    ck_assert_ptr_nonnull(js);
    px_inject_opts_init(&o);
    ck_assert_int_eq(px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err)), 0);
    ck_assert_uint_eq(r.injected, 1);
    ck_assert_uint_eq(r.skipped, 2);
    ck_assert_str_eq(r.kind, "List");
    px_inject_result_clear(&r);
}
END_TEST

START_TEST(test_inject_options)
{
    struct px_inject_opts o;
    struct px_inject_result r;
    char err[256];
    const char *js = POD("\"generateName\":\"x-\"", "{\"containers\":[" C_APP "]}");
    px_inject_opts_init(&o);
    o.image = "registry.example/picket:1.2";
    o.config_map = "cfg";
    o.svid_secret = "sec";
    o.inbound_port = 8443;
    o.admin_port = 9901;
    o.drain_timeout_s = 45;
    o.run_as_user = 1000;
    o.resources = "{\"limits\":{\"memory\":\"64Mi\"}}";
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), 0);
    ck_assert_int_eq(px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(r.patch, "\"resources\":{\"limits\":{\"memory\":\"64Mi\"}}"));
    ck_assert_ptr_nonnull(strstr(r.patch, "\"runAsUser\":1000"));
    ck_assert_ptr_nonnull(strstr(r.patch, "\"configMap\":{\"name\":\"cfg\"}"));
    ck_assert_ptr_nonnull(strstr(r.patch, "\"image\":\"registry.example/picket:1.2\""));
    ck_assert_ptr_nonnull(strstr(r.patch, "\"containerPort\":8443"));
    ck_assert_ptr_nonnull(strstr(r.patch, "http://127.0.0.1:9901/healthz"));
    ck_assert_ptr_nonnull(strstr(r.patch, "\"secretName\":\"sec\""));
    ck_assert_ptr_nonnull(strstr(r.patch, "terminationGracePeriodSeconds\",\"value\":55"));
    px_inject_result_clear(&r);

    o.config_map = "Bad_Name";
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), -1);
    o.config_map = NULL;
    o.image = "a b";
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), -1);
    o.image = "x";
    o.admin_port = o.inbound_port;
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), -1);
    o.admin_port = 9901;
    o.run_as_user = 0; /* root is never injected */
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), -1);
    o.run_as_user = 1;
    o.svid_volume = "{\"name\":\"x\",\"csi\":{}}";
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), -1);
    o.svid_volume = "{}";
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), -1);
    o.svid_volume = PX_INJECT_DEFAULT_SVID_VOLUME;
    o.resources = "[1]";
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), -1);
    o.resources = NULL;
    o.config_map = "<app>-Cfg";
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), -1);
    o.config_map = "cfg-<app>";
    ck_assert_int_eq(px_inject_opts_check(&o, err, sizeof(err)), 0);
}
END_TEST

/* ---- the injector config file ----------------------------------------- */

static const struct {
    const char *json, *errpart; /* errpart NULL: loads */
} configs[] = {
    {"{}", NULL},
    {"{\"image\":\"reg.example/picket:2\",\"resources\":{\"requests\":{\"cpu\":\"10m\"}},"
     "\"config_map\":\"mesh-<app>\",\"svid_volume\":{\"csi\":{\"driver\":\"csi.spiffe.io\","
     "\"readOnly\":true}},\"inbound_port\":8443,\"admin_port\":9901,\"drain_timeout\":\"45s\","
     "\"run_as_user\":1001,\"malformed_review\":\"allow\",\"exclude_namespaces\":[\"infra\"]}",
     NULL},
    {"{\"proxy_config\":{\"node_id\":\"x\"},\"svid_secret\":\"<app>-svid\"}", NULL},
    {"{\"probes_port\":8021,\"metrics_port\":9090}", NULL},
    {"{\"metrics_port\":15443}", "ports: inbound_port, admin_port, probes_port and metrics_port"},
    {"{\"probes_port\":15000}", "must be different ports"},
    {"{\"probes_port\":70000}", "probes_port: expected a port number"},
    {"{\"imag\":\"x\"}", "1:2: unknown key \"imag\""},
    {"{\"image\":1}", "image: expected a string"},
    {"{\"resources\":\"x\"}", "resources: expected an object"},
    {"{\"inbound_port\":0}", "inbound_port: expected a port number"},
    {"{\"drain_timeout\":\"2h\"}", "drain_timeout"},
    {"{\"run_as_user\":0}", "run_as_user"},
    {"{\"malformed_review\":\"ignore\"}", "malformed_review: expected"},
    {"{\"exclude_namespaces\":[1]}", "exclude_namespaces"},
    {"{\"config_map\":\"a\",\"proxy_config\":{\"a\":1}}", "mutually exclusive"},
    {"{\"svid_volume\":{\"csi\":{}},\"svid_secret\":\"s\"}", "mutually exclusive"},
    {"{\"svid_volume\":{\"csi\":{},\"secret\":{}}}", "svid_volume"},
    {"{\"config_map\":\"Upper\"}", "config map"},
    {"{\"image\":\"a\",\"image\":\"b\"}", "duplicate key"},
    {"[]", "expected a JSON object"},
};

START_TEST(test_config_load)
{
    struct px_inject_opts o;
    char err[512] = "";
    int rc;
    px_inject_opts_init(&o);
    rc = px_inject_config_load(&o, configs[_i].json, strlen(configs[_i].json), err, sizeof(err));
    if (configs[_i].errpart == NULL) {
        ck_assert_msg(rc == 0, "row %d: %s", _i, err);
    } else {
        ck_assert_msg(rc == PX_INJECT_EINPUT, "row %d: loaded", _i);
        ck_assert_msg(strstr(err, configs[_i].errpart) != NULL, "row %d: err %s", _i, err);
    }
    if (_i == 1) {
        ck_assert_str_eq(o.image, "reg.example/picket:2");
        ck_assert_str_eq(o.resources, "{\"requests\":{\"cpu\":\"10m\"}}");
        ck_assert_str_eq(o.config_map, "mesh-<app>");
        ck_assert_str_eq(o.svid_volume, "{\"csi\":{\"driver\":\"csi.spiffe.io\",\"readOnly\":true}}");
        ck_assert_int_eq(o.inbound_port, 8443);
        ck_assert_int_eq(o.admin_port, 9901);
        ck_assert_int_eq(o.drain_timeout_s, 45);
        ck_assert_int_eq(o.run_as_user, 1001);
        ck_assert_int_eq(o.malformed_allow, 1);
        ck_assert_uint_eq(o.nexclude_ns, 1);
        ck_assert_str_eq(o.exclude_ns[0], "infra");
    }
    px_inject_opts_free(&o);
    ck_assert_str_eq(o.image, "picket:0.1"); /* back to the defaults */
}
END_TEST

/* proxy_config: an emptyDir filled by the picket-config init container,
 * which runs before the sidecar; "$" doubled against $(VAR) expansion. */
START_TEST(test_generated_config)
{
    static const char cfg[] = "{\"proxy_config\":{\"node_id\":\"a$(X)\",\"workers\":1},"
                              "\"svid_secret\":\"<app>-svid\"}";
    const char *js = POD(LBL, "{\"containers\":[" C_APP "]}");
    struct px_inject_opts o;
    struct px_inject_result r;
    struct certs_json j;
    char err[512], *out = NULL, buf[256];
    size_t outlen = 0;
    int init, vols;
    px_inject_opts_init(&o);
    ck_assert_int_eq(px_inject_config_load(&o, cfg, strlen(cfg), err, sizeof(err)), 0);
    ck_assert_int_eq(px_inject_object(js, strlen(js), &o, 0, &out, &outlen, &r, err, sizeof(err)), 0);
    ck_assert_int_eq(certs_json_parse(&j, out, outlen, 0, err, sizeof(err)), 0);
    init = jpath(&j, 0, "spec.initContainers");
    ck_assert_int_eq(j.tok[init].size, 2);
    ck_assert(certs_json_eq(&j, jpath(&j, init, "0.name"), "picket-config"));
    ck_assert(certs_json_get(&j, jpath(&j, init, "0"), "restartPolicy") < 0);
    ck_assert(certs_json_eq(&j, jpath(&j, init, "0.args.1"), "write-config"));
    ck_assert(certs_json_eq(&j, jpath(&j, init, "0.env.0.name"), "PICKET_CONFIG"));
    ck_assert_int_ge(certs_json_str(&j, jpath(&j, init, "0.env.0.value"), buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "{\"node_id\":\"a$$(X)\",\"workers\":1}");
    ck_assert(certs_json_eq(&j, jpath(&j, init, "1.name"), "picket"));
    ck_assert(certs_json_eq(&j, jpath(&j, init, "1.restartPolicy"), "Always"));
    vols = jpath(&j, 0, "spec.volumes");
    ck_assert(certs_json_eq(&j, jpath(&j, vols, "0.emptyDir.medium"), "Memory"));
    ck_assert(certs_json_eq(&j, jpath(&j, vols, "1.secret.secretName"), "orders-svid"));
    certs_json_clear(&j);
    free(out);
    px_inject_result_clear(&r);

    /* the workload's annotation picks its ConfigMap over the generated config */
    js = POD(LBL ",\"annotations\":{\"picket.dev/config-map\":\"own\"}", "{\"containers\":[" C_APP "]}");
    ck_assert_int_eq(px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(r.patch, "\"configMap\":{\"name\":\"own\"}"));
    ck_assert_ptr_null(strstr(r.patch, "picket-config\",\"image"));
    px_inject_result_clear(&r);

    /* a container already named picket-config cannot coexist */
    js = POD(LBL, "{\"containers\":[{\"name\":\"picket-config\",\"image\":\"x\"}]}");
    ck_assert_int_eq(px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err)), PX_INJECT_EREFUSE);
    ck_assert_ptr_nonnull(strstr(err, "picket-config"));
    px_inject_opts_free(&o);
}
END_TEST

START_TEST(test_inject_size_limit)
{
    struct px_inject_opts o;
    struct px_inject_result r;
    char err[256];
    size_t n = PX_INJECT_MAX_BYTES + 16;
    char *big = malloc(n);
    ck_assert_ptr_nonnull(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    px_inject_opts_init(&o);
    ck_assert_int_eq(px_inject_patch(big, n, &o, &r, err, sizeof(err)), PX_INJECT_EINPUT);
    ck_assert_ptr_nonnull(strstr(err, "too large"));
    free(big);
}
END_TEST

/* ---- the applier: RFC 6901 escaping and the supported subset ---------- */

static const struct {
    const char *doc, *patch, *want; /* want NULL: refused */
} patches[] = {
    {"{\"a/b\":{\"m~n\":[1]}}", "[{\"op\":\"add\",\"path\":\"/a~1b/m~0n/-\",\"value\":2}]",
     "{\"a/b\":{\"m~n\":[1,2]}}\n"},
    {"{\"a\\/b\":1}", "[{\"op\":\"replace\",\"path\":\"/a~1b\",\"value\":[]}]", "{\"a\\/b\":[]}\n"},
    {"{\"x\":[]}", "[{\"op\":\"add\",\"path\":\"/x/-\",\"value\":1},{\"op\":\"add\",\"path\":\"/x/-\",\"value\":{}}]",
     "{\"x\":[1,{}]}\n"},
    {"{}", "[{\"op\":\"add\",\"path\":\"/k\",\"value\":\"v\"},{\"op\":\"add\",\"path\":\"/~0\",\"value\":null}]",
     "{\"k\":\"v\",\"~\":null}\n"},
    {"{\"k\":1}", "[{\"op\":\"add\",\"path\":\"/k\",\"value\":2}]", "{\"k\":2}\n"},
    {"{\"l\":[{\"a\":1},{\"a\":2}]}", "[{\"op\":\"replace\",\"path\":\"/l/1/a\",\"value\":3}]",
     "{\"l\":[{\"a\":1},{\"a\":3}]}\n"},
    {"{\"k\":1}", "[]", "{\"k\":1}\n"},
    {"{\"k\":1}", "[{\"op\":\"add\",\"path\":\"/a~2\",\"value\":1}]", NULL},       /* bad escape */
    {"{\"k\":[1]}", "[{\"op\":\"add\",\"path\":\"/k/0\",\"value\":1}]", NULL},     /* by index */
    {"{\"k\":1}", "[{\"op\":\"replace\",\"path\":\"/x\",\"value\":1}]", NULL},     /* missing */
    {"{\"k\":1}", "[{\"op\":\"remove\",\"path\":\"/k\"}]", NULL},                 /* unsupported */
    {"{}", "[{\"op\":\"add\",\"path\":\"/a\",\"value\":{}},{\"op\":\"add\",\"path\":\"/a/b\",\"value\":1}]",
     NULL}, /* into a value an earlier op added */
    {"{}", "[{\"op\":\"add\",\"path\":\"/a\",\"value\":1},{\"op\":\"add\",\"path\":\"/a\",\"value\":2}]",
     NULL}, /* would duplicate a key: caught by the final strict parse */
    {"{\"k\":{\"j\":1}}", "[{\"op\":\"replace\",\"path\":\"/k\",\"value\":1},{\"op\":\"add\",\"path\":\"/k/x\",\"value\":2}]",
     NULL}, /* overlapping */
    {"{\"k\":1}", "[{\"op\":\"add\",\"path\":\"\",\"value\":1}]", NULL},
    {"{\"k\":1}", "{\"op\":\"add\"}", NULL},
};

START_TEST(test_patch_apply)
{
    char *out = NULL, err[256] = "";
    size_t outlen = 0;
    int rc = px_json_patch_apply(patches[_i].doc, strlen(patches[_i].doc), patches[_i].patch,
                                 strlen(patches[_i].patch), 0, &out, &outlen, err, sizeof(err));
    if (patches[_i].want == NULL) {
        ck_assert_msg(rc == PX_INJECT_EINPUT, "row %d: rc %d out %s", _i, rc, out ? out : "");
        ck_assert_ptr_null(out);
        ck_assert(err[0] != '\0');
        return;
    }
    ck_assert_msg(rc == 0, "row %d: %s", _i, err);
    ck_assert_str_eq(out, patches[_i].want);
    free(out);
}
END_TEST

START_TEST(test_format)
{
    const char *in = " { \"a\" : [ 1 , \"x \\\" ,{\" , { } , [ ] ] , \"b\":{\"c\":true} } ";
    char *p = NULL, *p2 = NULL, *c = NULL;
    size_t n = 0, n2 = 0, nc = 0;
    ck_assert_int_eq(px_json_format(in, strlen(in), 0, &c, &nc), 0);
    ck_assert_str_eq(c, "{\"a\":[1,\"x \\\" ,{\",{},[]],\"b\":{\"c\":true}}\n");
    ck_assert_int_eq(px_json_format(in, strlen(in), 1, &p, &n), 0);
    ck_assert_str_eq(p, "{\n  \"a\": [\n    1,\n    \"x \\\" ,{\",\n    {},\n    []\n  ],\n"
                        "  \"b\": {\n    \"c\": true\n  }\n}\n");
    ck_assert_int_eq(px_json_format(p, n, 1, &p2, &n2), 0);
    ck_assert_str_eq(p2, p);
    free(c);
    free(p);
    free(p2);
}
END_TEST

/* ---- AdmissionReview ------------------------------------------------- */

#define REVIEW(req) "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":" req "}"
#define UID "\"uid\":\"705ab4f5-6393-11e8-b7cc-42010a800002\""

static const struct {
    const char *body;
    int rc;
    const char *resp_part, *err_part;
    enum px_inject_reason reason;
    int allow; /* malformed_review "allow" */
} reviews[] = {
    {REVIEW("{" UID ",\"operation\":\"CREATE\",\"namespace\":\"shop\",\"object\":"
            POD(LBL, "{\"containers\":[" C_APP "]}") "}"),
     0, "\"allowed\":true,\"patchType\":\"JSONPatch\",\"patch\":\"W3si", NULL, PX_INJECT_INJECTED, 0},
    {REVIEW("{" UID ",\"operation\":\"UPDATE\",\"object\":" POD(LBL, "{\"containers\":[" C_APP "]}") "}"),
     0, "\"uid\":\"705ab4f5-6393-11e8-b7cc-42010a800002\",\"allowed\":true}}", NULL,
     PX_INJECT_NOT_CREATE, 0},
    {REVIEW("{" UID ",\"namespace\":\"kube-system\",\"object\":" POD(LBL, "{\"containers\":[" C_APP "]}") "}"),
     0, "\"allowed\":true}}", NULL, PX_INJECT_NS_EXCLUDED, 0},
    {REVIEW("{" UID ",\"object\":" POD("\"generateName\":\"x-\"", "{\"containers\":[" C_APP "]}") "}"),
     0, "\"allowed\":false,\"status\":{\"code\":403,\"message\":\"picket inject: ", "cannot tell",
     PX_INJECT_REFUSED, 0},
    {REVIEW("{\"uid\":\"a\\\"b\",\"object\":{}}"), PX_INJECT_EINPUT, NULL, "request.uid", 0, 0},
    {REVIEW("[]"), PX_INJECT_EINPUT, NULL, "request: expected an object", 0, 0},
    {"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\"}", PX_INJECT_EINPUT,
     NULL, "apiVersion", 0, 0},
    {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Pod\"}", PX_INJECT_EINPUT, NULL,
     "kind: expected", 0, 0},
    {"{\"apiVersion\":", PX_INJECT_EINPUT, NULL, "1:15: unexpected end", 0, 0},
    /* "error" mode with a readable uid: a clear AdmissionReview error */
    {REVIEW("{" UID "}"), 0, "\"allowed\":false,\"status\":{\"code\":400,\"message\":\"picket inject: ",
     "request.object", PX_INJECT_MALFORMED, 0},
    {REVIEW("{" UID ",\"object\":" POD(LBL, "{\"containers\":[]}") "}"), 0,
     "\"allowed\":false,\"status\":{\"code\":400", "containers", PX_INJECT_MALFORMED, 0},
    {REVIEW("{" UID ",\"object\":\"x\"}"), 0, "\"code\":400", "request.object", PX_INJECT_MALFORMED, 0},
    /* "allow" mode: allowed unchanged, the reason as a warning */
    {REVIEW("{" UID "}"), 0, "\"allowed\":true,\"warnings\":[\"picket inject: ", "request.object",
     PX_INJECT_MALFORMED, 1},
    {REVIEW("{" UID ",\"object\":" POD("\"generateName\":\"x-\"", "{\"containers\":[" C_APP "]}") "}"),
     0, "\"allowed\":true,\"warnings\":[", "cannot tell", PX_INJECT_REFUSED, 1},
    {"{\"apiVersion\":", 0, "{\"uid\":\"\",\"allowed\":true,\"warnings\":[", "unexpected end",
     PX_INJECT_MALFORMED, 1},
    {REVIEW("{\"uid\":7}"), 0, "\"allowed\":true,\"warnings\":[", "request.uid", PX_INJECT_MALFORMED, 1},
    /* hostNetwork: allowed unchanged with a warning saying why, in both modes */
    {REVIEW("{" UID ",\"operation\":\"CREATE\",\"object\":"
            POD("\"name\":\"agent\"," LBL, "{\"hostNetwork\":true,\"containers\":[" C_APP "]}") "}"),
     0, "\"allowed\":true,\"warnings\":[\"picket inject: Pod agent: not injected: hostNetwork: true",
     "hostNetwork", PX_INJECT_HOST_NETWORK, 0},
    {REVIEW("{" UID ",\"operation\":\"CREATE\",\"object\":"
            POD(LBL, "{\"hostNetwork\":true,\"containers\":[" C_APP "]}") "}"),
     0, "\"allowed\":true,\"warnings\":[\"picket inject: Pod (unnamed): not injected", "hostNetwork",
     PX_INJECT_HOST_NETWORK, 1},
    /* injection is the same in both modes */
    {REVIEW("{" UID ",\"operation\":\"CREATE\",\"object\":" POD(LBL, "{\"containers\":[" C_APP "]}") "}"),
     0, "\"allowed\":true,\"patchType\":\"JSONPatch\",\"patch\":\"W3si", NULL, PX_INJECT_INJECTED, 1},
};

START_TEST(test_review)
{
    struct px_inject_opts o;
    struct px_inject_result r;
    char *resp = NULL, uid[64], err[512] = "";
    size_t len = 0;
    int rc;
    px_inject_opts_init(&o);
    o.malformed_allow = reviews[_i].allow;
    rc = px_inject_review(reviews[_i].body, strlen(reviews[_i].body), &o, &resp, &len, &r, uid,
                          sizeof(uid), err, sizeof(err));
    ck_assert_msg(rc == reviews[_i].rc, "row %d: rc %d %s", _i, rc, err);
    if (reviews[_i].err_part != NULL)
        ck_assert_msg(strstr(err, reviews[_i].err_part) != NULL, "row %d: err %s", _i, err);
    if (rc != 0) {
        ck_assert_ptr_null(resp);
        return;
    }
    ck_assert_msg(strstr(resp, reviews[_i].resp_part) != NULL, "row %d: %s", _i, resp);
    if (strstr(reviews[_i].body, UID) != NULL) {
        ck_assert_str_eq(uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        ck_assert_ptr_nonnull(strstr(resp, "{\"uid\":\"705ab4f5-6393-11e8-b7cc-42010a800002\","));
    }
    ck_assert_int_eq(r.reason, reviews[_i].reason);
    {
        struct certs_json j;
        int pt;
        ck_assert_int_eq(certs_json_parse(&j, resp, len, 0, err, sizeof(err)), 0);
        pt = jpath(&j, 0, "response.patch");
        if (pt >= 0) {
            /* the patch decodes to the same JSON Patch px_inject_patch makes */
            struct px_inject_result r2;
            int obj = jpath(&j, 0, "response");
            size_t plen = (size_t)(j.tok[pt].end - j.tok[pt].start);
            unsigned char *dec = malloc(plen);
            const char *pod = strstr(reviews[_i].body, "\"object\":") + 9;
            long dl;
            ck_assert(obj >= 0);
            ck_assert_ptr_nonnull(dec);
            dl = certs_b64_decode(j.js + j.tok[pt].start, plen, dec, plen);
            ck_assert_int_gt(dl, 0);
            ck_assert_int_eq(px_inject_patch(pod, strlen(pod) - 2, &o, &r2, err, sizeof(err)), 0);
            ck_assert_uint_eq((size_t)dl, r2.patch_len);
            ck_assert(memcmp(dec, r2.patch, r2.patch_len) == 0);
            px_inject_result_clear(&r2);
            free(dec);
        }
        certs_json_clear(&j);
    }
    free(resp);
    px_inject_result_clear(&r);
}
END_TEST

TCase *tcase_inject(void)
{
    TCase *tc = tcase_create("inject");
    tcase_add_loop_test(tc, test_inject_table, 0, (int)N_ELEMS(cases));
    tcase_add_test(tc, test_inject_list_counts);
    tcase_add_test(tc, test_inject_options);
    tcase_add_loop_test(tc, test_config_load, 0, (int)N_ELEMS(configs));
    tcase_add_test(tc, test_generated_config);
    tcase_add_test(tc, test_inject_size_limit);
    tcase_add_loop_test(tc, test_patch_apply, 0, (int)N_ELEMS(patches));
    tcase_add_test(tc, test_format);
    tcase_add_loop_test(tc, test_review, 0, (int)N_ELEMS(reviews));
    return tc;
}
