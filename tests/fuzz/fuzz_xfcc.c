/*
 * fuzz_xfcc.c - px_xfcc_build() (proxy/xfcc.c).
 *
 * Input: three values separated by NUL bytes (by, hash, uri; missing ones
 * are empty), and byte budget = the rest's length mod 5000 (to reach the
 * no-room refusal).
 *
 * Invariants: on success the output is visible ASCII and spaces only;
 * parsed back with an independent reader of Envoy's format (`;` between
 * pairs outside quotes, `key=value`, quoted values with backslash
 * escapes, no `,` outside quotes: exactly one element) it gives exactly
 * the non-empty values in order By, Hash, URI. A refusal happens only for
 * a value with a byte outside 0x20-0x7e, or when the output would not fit.
 */
#include <string.h>

#include "fuzz_common.h"
#include "xfcc.h"

#define MAXV 3000

static const char *keys[3] = {"By", "Hash", "URI"};

/* Parses s into up to 3 (key, value) pairs; returns the count or -1. */
static int parse(const char *s, char k[3][8], char v[3][2 * MAXV + 8])
{
    int n = 0;
    while (*s) {
        size_t kl = 0, vl = 0;
        if (n == 3)
            return -1;
        while (*s && *s != '=' && *s != ';' && *s != ',' && *s != '"') {
            if (kl + 1 >= 8)
                return -1;
            k[n][kl++] = *s++;
        }
        k[n][kl] = '\0';
        if (*s != '=')
            return -1;
        s++;
        if (*s == '"') {
            s++;
            while (*s && *s != '"') {
                if (*s == '\\') {
                    s++;
                    if (*s != '"' && *s != '\\')
                        return -1;
                }
                v[n][vl++] = *s++;
            }
            if (*s != '"')
                return -1;
            s++;
        } else {
            while (*s && *s != ';') {
                if (*s == ',' || *s == '"' || *s == '=' || *s == '\\' || *s == ' ')
                    return -1;
                v[n][vl++] = *s++;
            }
        }
        v[n][vl] = '\0';
        n++;
        if (*s == ';')
            s++;
        else if (*s != '\0')
            return -1;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char in[3][MAXV + 1], out[5000], k[3][8], v[3][2 * MAXV + 8];
    size_t part = 0, len = 0, budget;
    int bad = 0, rc, n, j = 0;

    if (size > 3 * MAXV)
        return 0;
    memset(in, 0, sizeof(in));
    for (size_t i = 0; i < size; i++) {
        if (data[i] == 0) {
            if (++part == 3)
                break;
            len = 0;
            continue;
        }
        in[part][len++] = (char)data[i];
        bad |= data[i] < 0x20 || data[i] >= 0x7f;
    }
    budget = 1 + size % sizeof(out);
    rc = px_xfcc_build(out, budget, in[0], in[1], in[2]);
    if (rc < 0) {
        size_t need = 1;
        if (bad)
            return 0;
        /* Not a refused byte: it must not have fitted. */
        for (int i = 0; i < 3; i++) {
            size_t l = strlen(in[i]);
            if (l == 0)
                continue;
            need += strlen(keys[i]) + 1 + l + 2 + 1 + l; /* generous upper bound */
        }
        FUZZ_CHECKF(out[0] == '\0', "refusal left output behind");
        FUZZ_CHECKF(budget < need, "refused with room: budget %zu", budget);
        return 0;
    }
    FUZZ_CHECK(!bad);
    FUZZ_CHECK((size_t)rc == strlen(out) && (size_t)rc < budget);
    for (int i = 0; i < rc; i++)
        FUZZ_CHECK(out[i] >= 0x20 && out[i] < 0x7f);
    n = parse(out, k, v);
    FUZZ_CHECKF(n >= 0, "output does not parse: %s", out);
    for (int i = 0; i < 3; i++) {
        if (in[i][0] == '\0')
            continue;
        FUZZ_CHECKF(j < n && strcmp(k[j], keys[i]) == 0 && strcmp(v[j], in[i]) == 0,
                    "field %s does not round-trip in %s", keys[i], out);
        j++;
    }
    FUZZ_CHECKF(j == n, "extra fields in %s", out);
    return 0;
}
