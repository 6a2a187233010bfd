/* The monotonic clock, for durations and deadlines. */
#pragma once

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t ts_clock_mono_ns(void);

/* The CLOCK_MONOTONIC time ms milliseconds from now, for
 * pthread_cond_timedwait on a condition made with that clock. */
struct timespec ts_clock_mono_after(uint64_t ms);
