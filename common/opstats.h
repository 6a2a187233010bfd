/* What a service's calls came to: by service and method, a count per
 * status code (gRPC's 0..16) and a histogram of how long they took. The
 * service handlers record, the metrics endpoint reads. One process-wide
 * table, bounded (TS_OPSTATS_MAX_ROWS methods); thread-safe. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define TS_OPSTATS_BUCKETS 14
#define TS_OPSTATS_CODES 17
#define TS_OPSTATS_MAX_ROWS 64

/* The histogram's upper bounds in seconds, ascending (then +Inf). */
extern const double ts_opstats_bounds[TS_OPSTATS_BUCKETS];

typedef struct ts_opstat {
        const char *service, *method;
        uint64_t count;
        uint64_t sum_ns;
        uint64_t le[TS_OPSTATS_BUCKETS];    /* calls that took at most bound[i] (cumulative) */
        uint64_t codes[TS_OPSTATS_CODES];   /* calls that ended with each status code */
} ts_opstat;

/* Records one call of service/method that ended with status code after ns
 * nanoseconds. service and method must outlive the process (literals); a
 * code outside 0..16 counts as UNKNOWN (2). Past TS_OPSTATS_MAX_ROWS
 * different methods, new ones are not recorded. */
void ts_opstats_record(const char *service, const char *method, int code, int64_t ns);

/* Copies the table into *ret (malloc()ed; *ret_n rows, in the order the
 * methods were first recorded). Returns 0 or -ENOMEM. */
int ts_opstats_snapshot(ts_opstat **ret, size_t *ret_n);

/* Forgets everything recorded (tests). */
void ts_opstats_reset(void);
