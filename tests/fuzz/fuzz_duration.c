/*
 * fuzz_duration.c - certs_duration_parse() (certs/json.c).
 *
 * Invariants: success implies 0 <= ms <= about 100 years (the documented
 * cap) and a non-empty input made only of digits, '.' and unit letters;
 * the result does not depend on bytes past len (checked by parsing an
 * exact-size copy); parsing is deterministic; the canonical spelling
 * "<ms>ms" of an accepted value parses back to the same value.
 */
#include <inttypes.h>
#include <string.h>

#include "certs.h"
#include "fuzz_common.h"

#define HUNDRED_YEARS_MS (100LL * 365 * 24 * 3600 * 1000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = calloc(size > 0 ? size : 1, 1);
    int64_t ms = -12345, again = -1;
    int rc;

    FUZZ_CHECK(s != NULL);
    if (size > 0)
        memcpy(s, data, size);
    rc = certs_duration_parse(s, size, &ms);
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        char canon[40];
        FUZZ_CHECKF(ms >= 0, "ms %" PRId64, ms);
        /* The cap is checked on the running total before rounding. */
        FUZZ_CHECKF(ms <= HUNDRED_YEARS_MS + 1, "ms %" PRId64, ms);
        FUZZ_CHECK(size > 0);
        for (size_t i = 0; i < size; i++)
            FUZZ_CHECK(strchr("0123456789.mshh", s[i]) != NULL && s[i] != '\0');
        FUZZ_CHECK(certs_duration_parse(s, size, &again) == 0 && again == ms);
        snprintf(canon, sizeof(canon), "%" PRId64 "ms", ms);
        again = -1;
        if (ms <= HUNDRED_YEARS_MS)
            FUZZ_CHECKF(certs_duration_parse(canon, strlen(canon), &again) == 0 && again == ms,
                        "'%s' gave %" PRId64, canon, again);
    }
    free(s);
    return 0;
}
