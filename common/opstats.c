#include "opstats.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

const double ts_opstats_bounds[TS_OPSTATS_BUCKETS] = {
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static ts_opstat rows[TS_OPSTATS_MAX_ROWS];
static size_t n_rows;

static ts_opstat *row_locked(const char *service, const char *method) {
        for (size_t i = 0; i < n_rows; i++)
                if (strcmp(rows[i].method, method) == 0 && strcmp(rows[i].service, service) == 0)
                        return &rows[i];
        if (n_rows == TS_OPSTATS_MAX_ROWS)
                return NULL;
        rows[n_rows] = (ts_opstat) { .service = service, .method = method };
        return &rows[n_rows++];
}

void ts_opstats_record(const char *service, const char *method, int code, int64_t ns) {
        if (ns < 0)
                ns = 0;
        if (code < 0 || code >= TS_OPSTATS_CODES)
                code = 2;
        double s = (double) ns / 1e9;
        pthread_mutex_lock(&lock);
        ts_opstat *r = row_locked(service, method);
        if (r) {
                r->count++;
                r->sum_ns += (uint64_t) ns;
                r->codes[code]++;
                for (int i = 0; i < TS_OPSTATS_BUCKETS; i++)
                        if (s <= ts_opstats_bounds[i])
                                r->le[i]++;
        }
        pthread_mutex_unlock(&lock);
}

int ts_opstats_snapshot(ts_opstat **ret, size_t *ret_n) {
        pthread_mutex_lock(&lock);
        size_t n = n_rows;
        ts_opstat *copy = malloc((n ? n : 1) * sizeof(*copy));
        if (copy)
                memcpy(copy, rows, n * sizeof(*copy));
        pthread_mutex_unlock(&lock);
        if (!copy)
                return -ENOMEM;
        *ret = copy;
        *ret_n = n;
        return 0;
}

void ts_opstats_reset(void) {
        pthread_mutex_lock(&lock);
        n_rows = 0;
        pthread_mutex_unlock(&lock);
}
