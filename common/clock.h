/* The monotonic clock, for durations and deadlines. */
#pragma once

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t ts_clock_mono_ns(void);
