/*
 * clock.h - wall and monotonic time.
 */
#ifndef PX_CLOCK_H
#define PX_CLOCK_H

#include <stdint.h>

int64_t px_now_ms(void);  /* wall clock, ms since the epoch */
int64_t px_mono_us(void); /* monotonic, us */
/* Monotonic, us, as of the kernel's last tick (CLOCK_MONOTONIC_COARSE:
 * 1-4 ms behind px_mono_us() at most, never ahead of it). For stamps read
 * on every read and write whose only use is an idle limit of seconds
 * (compared with this clock too): in the vDSO it costs 3 ns where
 * px_mono_us() costs 27 (kvm-clock), and a small request made four. */
int64_t px_mono_coarse_us(void);

#endif
