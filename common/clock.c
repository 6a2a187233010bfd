#include "clock.h"

#include <time.h>

int64_t ts_clock_mono_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct timespec ts_clock_mono_after(uint64_t ms) {
        int64_t at = ts_clock_mono_ns() + (int64_t) ms * 1000000LL;
        return (struct timespec) { .tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL };
}
