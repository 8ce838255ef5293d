/*
 * reqid.c - request IDs (reqid.h).
 */
#include "reqid.h"

#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

/* Request IDs need to be unique, not secret (they correlate logs and
 * travel in clear headers). OpenSSL's DRBG cost ~6,600 instructions per ID
 * (callgrind: 10% of a request with logs off); each thread seeds a
 * xoshiro256** generator from RAND_bytes once and draws 128 bits per ID. */
static _Thread_local uint64_t rid_state[4];
static _Thread_local int rid_seeded;

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rid_next(void)
{
    uint64_t *s = rid_state;
    uint64_t out = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

static void rid_seed(void)
{
    if (RAND_bytes((unsigned char *)rid_state, sizeof(rid_state)) != 1) {
        /* No entropy: still unique per thread and start, which is all an
         * ID needs (splitmix64 spreads the inputs over the state). */
        struct timespec ts;
        uint64_t x;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)getpid() ^
            (uint64_t)(uintptr_t)&rid_state;
        for (int i = 0; i < 4; i++) {
            uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
            rid_state[i] = z ^ (z >> 31);
        }
    }
    if ((rid_state[0] | rid_state[1] | rid_state[2] | rid_state[3]) == 0)
        rid_state[0] = 1; /* the one state xoshiro cannot leave */
    rid_seeded = 1;
}

void px_request_id_new(char *out)
{
    unsigned char r[16];
    static const char hex[] = "0123456789abcdef";
    uint64_t a, b;

    if (!rid_seeded)
        rid_seed();
    a = rid_next();
    b = rid_next();
    for (int i = 0; i < 8; i++) {
        r[i] = (unsigned char)(a >> (8 * i));
        r[8 + i] = (unsigned char)(b >> (8 * i));
    }
    r[6] = (unsigned char)((r[6] & 0x0F) | 0x40); /* UUID v4 */
    r[8] = (unsigned char)((r[8] & 0x3F) | 0x80);
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *out++ = '-';
        *out++ = hex[r[i] >> 4];
        *out++ = hex[r[i] & 15];
    }
    *out = '\0';
}

int px_request_id_ok(const char *v, size_t n)
{
    if (n == 0 || n >= 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] <= 0x20 || v[i] >= 0x7f || v[i] == '"' || v[i] == '\\')
            return 0;
    return 1;
}

