/*
 * fmt.h - hot-path number formatting.
 */
#ifndef PX_FMT_H
#define PX_FMT_H

#include <stddef.h>
#include <stdint.h>

/* Decimal digits of v into out (at least 21 bytes: 20 digits and a NUL;
 * px_fmt_i64: 22 with the sign); returns the length. Hot-path
 * replacements for snprintf("%llu"/"%lld"). Pure. */
size_t px_fmt_u64(char *out, uint64_t v);
size_t px_fmt_i64(char *out, int64_t v);

#endif
