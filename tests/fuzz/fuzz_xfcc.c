/*
 * fuzz_xfcc.c - px_xfcc_build() (proxy/base/xfcc.c).
 *
 * Input: three values separated by NUL bytes (by, hash, uri; missing ones
 * are empty), then, after a third NUL, the output budget: 1 + (the next two
 * bytes, little-endian) mod 5000; without that, 5000 bytes (always room).
 * Over a replayed corpus both must happen: some inputs built and read back,
 * some refused for room alone (fuzz_replay_done()).
 *
 * Every buffer here is malloc'ed to its exact size (the three values, the
 * output buffer of `budget` bytes, each parsed key and value), so a write or
 * read one byte past any of them is an AddressSanitizer report, not a silent
 * step into the next row of a static array.
 *
 * Invariants: the exact length the format gives is computed independently
 * (per non-empty value: ';' separator, key, '=', the value, and when it holds
 * space, comma, semicolon, '=', double quote or backslash: two quotes and a
 * backslash before each double quote and backslash); the build succeeds exactly when every byte is 0x20-0x7e and that
 * length plus the NUL fits the budget, and then returns that length. The output
 * is visible ASCII and spaces only; parsed back with an independent reader of
 * Envoy's format (`;` between pairs outside quotes, `key=value`, quoted values
 * with backslash escapes, no `,` outside quotes: exactly one element) it gives
 * exactly the non-empty values in order By, Hash, URI. A refusal leaves "".
 */
#include <string.h>

#include "fuzz_common.h"
#include "xfcc.h"

#define MAXV 3000

static const char *keys[3] = {"By", "Hash", "URI"};

/* Over a replayed corpus: builds that succeeded, and refusals for room alone. */
static size_t built, no_room;

int fuzz_replay_done(size_t ninputs)
{
    fprintf(stderr, "fuzz_xfcc: %zu inputs: %zu built and read back, %zu refused for room\n",
            ninputs, built, no_room);
    if (built == 0 || no_room == 0) {
        fprintf(stderr, "fuzz_xfcc: invariant violated: the corpus must reach both a build and "
                        "a refusal for room\n");
        return 1;
    }
    return 0;
}

static int needs_quote(unsigned char c)
{
    return c == ' ' || c == ',' || c == ';' || c == '=' || c == '"' || c == '\\';
}

/* Parses s into up to 3 (key, value) pairs; k[i] and v[i] are malloc'ed to the
 * size they can need (at most strlen(s) + 1) and handed to the caller. Returns
 * the count or -1. */
static int parse(const char *s, char *k[3], char *v[3])
{
    size_t cap = strlen(s) + 1;
    int n = 0;
    while (*s) {
        size_t kl = 0, vl = 0;
        if (n == 3)
            return -1;
        k[n] = malloc(cap);
        v[n] = malloc(cap);
        FUZZ_CHECK(k[n] != NULL && v[n] != NULL);
        n++;
        while (*s && *s != '=' && *s != ';' && *s != ',' && *s != '"')
            k[n - 1][kl++] = *s++;
        k[n - 1][kl] = '\0';
        v[n - 1][0] = '\0';
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
                v[n - 1][vl++] = *s++;
            }
            if (*s != '"')
                return -1;
            s++;
        } else {
            while (*s && *s != ';') {
                if (*s == ',' || *s == '"' || *s == '=' || *s == '\\' || *s == ' ')
                    return -1;
                v[n - 1][vl++] = *s++;
            }
        }
        v[n - 1][vl] = '\0';
        if (*s == ';')
            s++;
        else if (*s != '\0')
            return -1;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in[3] = {NULL, NULL, NULL}, *out, *k[3] = {NULL, NULL, NULL}, *v[3] = {NULL, NULL, NULL};
    size_t start[3] = {0, 0, 0}, len[3] = {0, 0, 0}, part = 0, budget = 5000, need = 0;
    int bad = 0, rc, n, j = 0;

    if (size > 3 * MAXV)
        return 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == 0) {
            if (++part == 3) {
                if (i + 1 < size)
                    budget = 1 + (data[i + 1] | (i + 2 < size ? (size_t)data[i + 2] << 8 : 0)) % 5000;
                break;
            }
            start[part] = i + 1;
            continue;
        }
        len[part]++;
        bad |= data[i] < 0x20 || data[i] >= 0x7f;
    }
    for (int i = 0; i < 3; i++) {
        in[i] = malloc(len[i] + 1); /* exactly the value and its NUL */
        FUZZ_CHECK(in[i] != NULL);
        if (len[i] > 0)
            memcpy(in[i], data + start[i], len[i]);
        in[i][len[i]] = '\0';
        if (len[i] > 0) {
            size_t extra = 0;
            int quote = 0;
            for (size_t b = 0; b < len[i]; b++) {
                quote |= needs_quote((unsigned char)in[i][b]);
                extra += in[i][b] == '"' || in[i][b] == '\\';
            }
            need += (need > 0) + strlen(keys[i]) + 1 + len[i] + (quote ? 2 + extra : 0);
        }
    }
    out = malloc(budget); /* exactly the budget: ASan sees a write past it */
    FUZZ_CHECK(out != NULL);
    memset(out, 'X', budget);
    rc = px_xfcc_build(out, budget, in[0], in[1], in[2]);
    if (rc < 0) {
        FUZZ_CHECKF(out[0] == '\0', "refusal left output behind");
        FUZZ_CHECKF(bad || need + 1 > budget, "refused with room: need %zu + NUL, budget %zu",
                    need, budget);
        no_room += !bad;
        goto done;
    }
    FUZZ_CHECKF(!bad, "a control, DEL or non-ASCII byte was accepted");
    FUZZ_CHECKF((size_t)rc == need && need + 1 <= budget, "length %d, the format gives %zu", rc,
                need);
    FUZZ_CHECK(memchr(out, '\0', budget) == out + rc);
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
    built++;
done:
    for (int i = 0; i < 3; i++) {
        free(in[i]);
        free(k[i]);
        free(v[i]);
    }
    free(out);
    return 0;
}
