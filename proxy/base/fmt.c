/*
 * fmt.c - number formatting for the hot paths (log records, metric
 * labels, HTTP/2 content-length), where snprintf's cost shows.
 */
#include "fmt.h"

#include <string.h>

/* "00" to "99": two digits per division, half the divisions. */
static const char two_digits[201] = "00010203040506070809101112131415161718192021222324"
                                    "25262728293031323334353637383940414243444546474849"
                                    "50515253545556575859606162636465666768697071727374"
                                    "75767778798081828384858687888990919293949596979899";

size_t px_fmt_u64(char *out, uint64_t v)
{
    size_t n = 1;
    char *p;

    for (uint64_t t = 10; n < 20 && v >= t; t *= 10) /* 10^19 fits, 10^20 would not */
        n++;
    p = out + n;
    *p = '\0';
    while (v >= 100) {
        unsigned i = (unsigned)(v % 100) * 2;
        v /= 100;
        p -= 2;
        memcpy(p, two_digits + i, 2);
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, two_digits + v * 2, 2);
    } else {
        *--p = (char)('0' + v);
    }
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
