/*
 * failmalloc.h - allocation failure injection (failmalloc.c).
 */
#ifndef PICKET_FAILMALLOC_H
#define PICKET_FAILMALLOC_H

/* The n-th allocation (malloc, calloc, realloc, strdup, strndup) made by
 * the code under test from now on fails, once; 0 turns injection off. */
void fm_fail_at(long n);
/* 1 once the armed allocation has failed. */
int fm_failed(void);

#endif
