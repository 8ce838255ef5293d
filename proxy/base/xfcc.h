/*
 * xfcc.h - building the x-forwarded-client-cert header value (xfcc.c).
 */
#ifndef PX_XFCC_H
#define PX_XFCC_H

#include <stddef.h>

/* Writes `By=by;Hash=hash;URI=uri` into out (NUL-terminated), leaving out
 * fields that are NULL or empty; values holding `,` `;` `=` `"` `\` or a
 * space are double-quoted, with `"` and `\` backslash-escaped. Returns the
 * length, or -1 (out = "") when a value holds a control byte, DEL or a
 * non-ASCII byte, or the result does not fit in outlen. Pure. */
int px_xfcc_build(char *out, size_t outlen, const char *by, const char *hash, const char *uri);

#endif
