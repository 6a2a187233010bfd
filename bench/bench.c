#include "bench/bench.h"

#include <stdlib.h>

#include "common/clock.h"

double ts_bench_now_ms(void) {
        return (double) ts_clock_mono_ns() / 1e6;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

void ts_bench_sort(double *v, size_t n) {
        qsort(v, n, sizeof(*v), cmp_double);
}
