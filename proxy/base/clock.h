/*
 * clock.h - wall and monotonic time.
 */
#ifndef PX_CLOCK_H
#define PX_CLOCK_H

#include <stdint.h>

int64_t px_now_ms(void);  /* wall clock, ms since the epoch */
int64_t px_mono_us(void); /* monotonic, us */

#endif
