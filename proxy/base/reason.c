/*
 * reason.c - names of enum px_reason (reason.h).
 */
#include "reason.h"

#include <string.h>

#include "policy.h"

static const char *const names[PX_R_COUNT] = {
#define PX_REASON_NAME_(id, name) name,
    PX_REASONS(PX_REASON_NAME_)
#undef PX_REASON_NAME_
};

const char *px_reason_name(enum px_reason r)
{
    if ((unsigned)r >= PX_R_COUNT)
        return "internal_error";
    return names[r];
}

enum px_reason px_reason_from_name(const char *s)
{
    for (int i = 0; i < PX_R_COUNT; i++)
        if (strcmp(names[i], s) == 0)
            return (enum px_reason)i;
    return PX_R_COUNT;
}

enum px_reason px_reason_from_certs(enum certs_reason r)
{
    enum px_reason p;
    if (r == CERTS_R_OK)
        return PX_R_NONE;
    /* the names are the same by construction (reason.h lists them) */
    p = px_reason_from_name(certs_reason_name(r));
    return p == PX_R_COUNT ? PX_R_INTERNAL_ERROR : p;
}

enum px_reason px_reason_from_path(int rc)
{
    enum px_reason p = px_reason_from_name(policy_path_error_name(rc));
    return p == PX_R_COUNT ? PX_R_BAD_TARGET : p;
}
