/*
 * proxy_reason.c - TCase "reason" of the proxy suite: the one list of
 * refusal reasons (proxy/base/reason.c).
 */
#include <check.h>
#include <string.h>

#include "certs.h"
#include "policy.h"
#include "reason.h"

TCase *tcase_reason(void);

/* Every name is a distinct, non-empty snake_case word and finds its own
 * reason back; none is the empty name but PX_R_NONE. */
START_TEST(test_reason_names)
{
    for (int i = 0; i < PX_R_COUNT; i++) {
        const char *n = px_reason_name((enum px_reason)i);
        ck_assert_ptr_nonnull(n);
        if (i == PX_R_NONE) {
            ck_assert_str_eq(n, "");
            continue;
        }
        ck_assert_msg(n[0] >= 'a' && n[0] <= 'z', "reason %d: '%s'", i, n);
        for (const char *p = n; *p; p++)
            ck_assert_msg((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_',
                          "reason %d: '%s'", i, n);
        ck_assert_int_eq(px_reason_from_name(n), i);
        for (int j = 0; j < i; j++)
            ck_assert_msg(strcmp(n, px_reason_name((enum px_reason)j)) != 0,
                          "'%s' twice (%d, %d)", n, j, i);
    }
    ck_assert_str_eq(px_reason_name(PX_R_COUNT), "internal_error");
    ck_assert_int_eq(px_reason_from_name("no_such_reason"), PX_R_COUNT);
    ck_assert_str_eq(px_reason_name(PX_R_POLICY_DENY), "policy_deny");
}
END_TEST

/* Reasons from the layers below keep their names: each certificate check
 * result and each path refusal maps to the reason of the same name. */
START_TEST(test_reason_from_lower_layers)
{
    ck_assert_int_eq(px_reason_from_certs(CERTS_R_OK), PX_R_NONE);
    for (int r = 1; r < CERTS_R_COUNT; r++)
        ck_assert_str_eq(px_reason_name(px_reason_from_certs((enum certs_reason)r)),
                         certs_reason_name((enum certs_reason)r));
    for (int rc = POLICY_PATH_NOT_ABSOLUTE; rc >= POLICY_PATH_TOO_LONG; rc--)
        ck_assert_str_eq(px_reason_name(px_reason_from_path(rc)), policy_path_error_name(rc));
}
END_TEST

TCase *tcase_reason(void)
{
    TCase *tc = tcase_create("reason");
    tcase_add_test(tc, test_reason_names);
    tcase_add_test(tc, test_reason_from_lower_layers);
    return tc;
}
