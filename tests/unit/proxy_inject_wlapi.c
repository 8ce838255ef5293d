/*
 * proxy_inject_wlapi.c - TCase "inject_wlapi" of the proxy suite: the
 * annotation picket.dev/identity: workload-api (proxy/inject/inject_plan.c,
 * issue 19): the SVID volume becomes the SPIFFE CSI driver's, mounted at
 * /spiffe-workload-api, and the sidecar gets SPIFFE_ENDPOINT_SOCKET, instead
 * of an SVID volume or Secret.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inject.h"

TCase *tcase_inject_wlapi(void);

#define APP "{\"name\":\"app\",\"image\":\"example/orders:1.4\"}"
#define DEPLOY(tmeta)                                                                              \
    "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"orders\"},"     \
    "\"spec\":{\"template\":{\"metadata\":{\"labels\":{\"app\":\"orders\"}" tmeta "},"            \
    "\"spec\":{\"containers\":[" APP "]}}}}"

START_TEST(inject_wlapi_annotation)
{
    struct px_inject_opts o;
    struct px_inject_result r;
    char err[256];
    char *out = NULL;
    size_t outlen = 0;
    const char *js = DEPLOY(",\"annotations\":{\"picket.dev/identity\":\"workload-api\"}");

    px_inject_opts_init(&o);
    o.svid_secret = "<app>-svid"; /* the workload's annotation wins over the default */
    ck_assert_msg(px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(r.reason, PX_INJECT_INJECTED);
    ck_assert_ptr_nonnull(strstr(r.patch, "{\"name\":\"picket-svid\",\"csi\":{\"driver\":"
                                          "\"csi.spiffe.io\",\"readOnly\":true}}"));
    ck_assert_ptr_nonnull(strstr(r.patch, "{\"name\":\"SPIFFE_ENDPOINT_SOCKET\",\"value\":"
                                          "\"unix:///spiffe-workload-api/spire-agent.sock\"}"));
    ck_assert_ptr_nonnull(strstr(r.patch, "{\"name\":\"picket-svid\",\"mountPath\":"
                                          "\"/spiffe-workload-api\",\"readOnly\":true}"));
    ck_assert_ptr_null(strstr(r.patch, "secretName"));
    ck_assert_ptr_null(strstr(r.patch, "/var/run/secrets/svid"));
    ck_assert_ptr_null(strstr(r.patch, "cert-manager"));
    px_inject_result_clear(&r);
    /* the whole object too, and injecting it again changes nothing */
    ck_assert_int_eq(px_inject_object(js, strlen(js), &o, 0, &out, &outlen, &r, err, sizeof(err)),
                     0);
    px_inject_result_clear(&r);
    ck_assert_int_eq(px_inject_patch(out, outlen, &o, &r, err, sizeof(err)), 0);
    ck_assert_int_eq(r.reason, PX_INJECT_ALREADY);
    px_inject_result_clear(&r);
    free(out);
}
END_TEST

static const struct {
    const char *tmeta;
    const char *errpart; /* NULL: injected with the files volume */
} rows[] = {
    {",\"annotations\":{\"picket.dev/identity\":\"files\"}", NULL},
    {"", NULL},
    {",\"annotations\":{\"picket.dev/identity\":\"spire\"}",
     "picket.dev/identity: expected \"workload-api\" or \"files\""},
    {",\"annotations\":{\"picket.dev/identity\":\"Workload-API\"}", "picket.dev/identity"},
    {",\"annotations\":{\"picket.dev/identity\":\"workload-api\",\"picket.dev/svid-secret\":\"s\"}",
     "mutually exclusive"},
};

START_TEST(inject_wlapi_values)
{
    struct px_inject_opts o;
    struct px_inject_result r;
    char err[256] = "", js[1024];
    int rc;
    snprintf(js, sizeof(js), DEPLOY("%s"), rows[_i].tmeta);
    px_inject_opts_init(&o);
    rc = px_inject_patch(js, strlen(js), &o, &r, err, sizeof(err));
    if (rows[_i].errpart == NULL) {
        ck_assert_msg(rc == 0, "row %d: %s", _i, err);
        ck_assert_ptr_nonnull(strstr(r.patch, "spiffe.csi.cert-manager.io"));
        ck_assert_ptr_null(strstr(r.patch, "SPIFFE_ENDPOINT_SOCKET"));
        ck_assert_ptr_nonnull(strstr(r.patch, "/var/run/secrets/svid"));
        px_inject_result_clear(&r);
    } else {
        ck_assert_int_eq(rc, PX_INJECT_EREFUSE);
        ck_assert_msg(strstr(err, rows[_i].errpart) != NULL, "row %d: %s", _i, err);
    }
}
END_TEST

TCase *tcase_inject_wlapi(void)
{
    TCase *tc = tcase_create("inject_wlapi");
    tcase_add_test(tc, inject_wlapi_annotation);
    tcase_add_loop_test(tc, inject_wlapi_values, 0, (int)(sizeof(rows) / sizeof(rows[0])));
    return tc;
}
