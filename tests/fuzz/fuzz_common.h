/*
 * fuzz_common.h - shared by the fuzz targets in tests/fuzz/.
 *
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput() and is linked either
 * with libFuzzer (clang, -DPICKET_FUZZ=ON) or with replay_main.c (any
 * compiler; what ctest runs over the committed corpora).
 *
 * Invariants are checked with FUZZ_CHECK, never assert(): a Release or
 * NDEBUG build must still catch a broken invariant. On failure it prints
 * the condition and the location and calls abort(), which both libFuzzer
 * and ctest report as a crash with the input that caused it.
 */
#ifndef PICKET_FUZZ_COMMON_H
#define PICKET_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Optional, defined by targets with an invariant over a whole corpus (not one
 * input): called by replay_main.c after every input ran, with their count.
 * Returns 0 when the corpus-wide invariant holds, else prints why and returns
 * non-zero (the replay then exits 1). Never called under libFuzzer, whose
 * random inputs need not meet it. Example: the h1/h2 targets require that some
 * seed was forwarded to the upstream, so a picket that forwards nothing cannot
 * pass their replays. */
int fuzz_replay_done(size_t ninputs);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Same, with a printf-style detail line (the invariant's inputs). */
#define FUZZ_CHECKF(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
