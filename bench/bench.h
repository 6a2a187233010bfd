/* Timing and ordering helpers the benchmark programs share. */
#pragma once

#include <stddef.h>

/* CLOCK_MONOTONIC in milliseconds. */
double ts_bench_now_ms(void);

/* Sorts n samples in ascending order (for percentiles). */
void ts_bench_sort(double *v, size_t n);
