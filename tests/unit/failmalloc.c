/*
 * failmalloc.c - allocation failure injection for the unit_alloc suite.
 *
 * test_alloc is linked with -Wl,--wrap=malloc,--wrap=calloc,... so every
 * call the certs/policy/proxy code makes to those functions lands here
 * (calls inside libc, OpenSSL or Check do not). fm_fail_at(n) makes the
 * n-th call from now fail (once); fm_failed() tells whether it happened.
 */
#include "failmalloc.h"

#include "tmalloc.h"

#include <stddef.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static long fail_at, calls;
static int failed;

void fm_fail_at(long n)
{
    px_tmalloc_trim(); /* no block from the last run may stand in for a malloc */
    fail_at = n;
    calls = 0;
    failed = 0;
}

int fm_failed(void)
{
    return failed;
}

static int should_fail(void)
{
    if (fail_at <= 0)
        return 0;
    if (++calls == fail_at) {
        failed = 1;
        return 1;
    }
    return 0;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return should_fail() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return should_fail() ? NULL : __real_strndup(s, n);
}
