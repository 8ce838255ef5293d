/*
 * replay_main.c - runs a fuzz target over files, without libFuzzer.
 *
 * Usage: replay_<name> PATH...   where each PATH is a file or a directory
 * (its regular files, not recursive, in name order so runs are
 * reproducible). Every file is read into a buffer of exactly its size (so
 * AddressSanitizer sees any read past the end, as under libFuzzer) and
 * handed to LLVMFuzzerTestOneInput(). LLVMFuzzerInitialize() is called first
 * when the target defines it (weak symbol).
 *
 * This is what ctest runs on every build (fuzz_replay_<name> over
 * tests/fuzz/corpus/<name>/): the committed corpora become regression tests
 * for gcc and sanitizer builds with no clang needed. Exit status: 0 when
 * every input ran; 1 when a path could not be read or nothing was found
 * (an empty corpus directory is a packaging mistake, not a pass), or when
 * the target's corpus-wide invariant (fuzz_replay_done(), weak) fails. A
 * broken per-input invariant aborts with the target's message, after this
 * driver has printed the input's name.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
int fuzz_replay_done(size_t ninputs) __attribute__((weak));

static int run_file(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    uint8_t *buf = NULL;
    size_t len;

    if (f == NULL || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        if (f != NULL)
            fclose(f);
        return -1;
    }
    len = (size_t)st.st_size;
    /* malloc(0) may return NULL; keep a real, zero-length-valid pointer. */
    buf = malloc(len > 0 ? len : 1);
    if (buf == NULL || (len > 0 && fread(buf, 1, len, f) != len)) {
        fprintf(stderr, "replay: %s: read failed\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
    (void)LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    (*count)++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (d == NULL) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue; /* ".", "..", editor and VCS files */
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nn = realloc(names, ncap * sizeof(*nn));
            if (nn == NULL) {
                rc = -1;
                break;
            }
            names = nn;
            cap = ncap;
        }
        names[n] = strdup(e->d_name);
        if (names[n] == NULL) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t plen = strlen(dir) + strlen(names[i]) + 2;
        char *p = malloc(plen);
        struct stat st;
        if (p == NULL) {
            rc = -1;
            break;
        }
        snprintf(p, plen, "%s/%s", dir, names[i]);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            rc = run_file(p, count);
        free(p);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    int rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize != NULL)
        (void)LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc && rc == 0; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            rc = -1;
        } else if (S_ISDIR(st.st_mode)) {
            rc = run_dir(argv[i], &count);
        } else {
            rc = run_file(argv[i], &count);
        }
    }
    if (rc != 0)
        return 1;
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    if (fuzz_replay_done != NULL && fuzz_replay_done(count) != 0) {
        fprintf(stderr, "replay: the corpus-wide invariant failed over %zu inputs\n", count);
        return 1;
    }
    printf("replay: %zu inputs ran\n", count);
    return 0;
}
