/*
 * fmt.c - number formatting for the hot paths (log records, metric
 * labels, HTTP/2 content-length), where snprintf's cost shows.
 */
#include "fmt.h"

size_t px_fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

size_t px_fmt_i64(char *out, int64_t v)
{
    if (v < 0) {
        out[0] = '-';
        return 1 + px_fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v);
    }
    return px_fmt_u64(out, (uint64_t)v);
}
