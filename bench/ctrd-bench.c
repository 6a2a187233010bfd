/* ctrd-bench: writes a blob of fresh random bytes into containerd's content
 * store with ctrd/'s writer and reads it back whole, RUNS times, printing
 * one "write <ms>" and one "read <ms>" line per run (bench/run-ctrd-bench.sh
 * runs it beside the same workload on containerd's Go client). The blob is
 * written under a lease and deleted after each run; neither is timed.
 *
 *   ctrd-bench SOCKET SIZE_MIB RUNS */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench/bench.h"
#include "common/units.h"
#include "ctrd/content.h"
#include "ctrd/leases.h"
#include "ctrd/writer.h"
#include "oci/digest.h"

static int fill_random(uint8_t *p, size_t n) {
        while (n > 0) {
                ssize_t k = getrandom(p, n, 0);
                if (k < 0 && errno != EINTR)
                        return -errno;
                if (k > 0) {
                        p += k;
                        n -= (size_t) k;
                }
        }
        return 0;
}

static int put(ts_ctrd *c, const uint8_t *p, size_t n, const char *dg, ts_error **err) {
        ts_ctrd_writer *w = NULL;
        char ref[TS_DIGEST_MAX + 8];
        snprintf(ref, sizeof(ref), "layer-%s", dg);
        int r = ts_ctrd_writer_open(c, "bench", ref, (int64_t) n, dg, &w, err);
        if (r != 0)
                return r < 0 ? r : -EEXIST;
        r = ts_ctrd_writer_write(w, p, n, err);
        if (r >= 0)
                r = ts_ctrd_writer_commit(w, NULL, err);
        ts_ctrd_writer_free(w);
        return r;
}

static int run_once(ts_ctrd *c, uint8_t *p, size_t n, ts_error **err) {
        char dg[TS_DIGEST_MAX];
        uint8_t *back = NULL;
        size_t len = 0;
        int r = fill_random(p, n);
        if (r < 0)
                return r;
        ts_digest_buffer(p, n, dg);
        double t0 = ts_bench_now_ms();
        r = put(c, p, n, dg, err);
        double t1 = ts_bench_now_ms();
        if (r >= 0)
                r = ts_ctrd_content_read(c, dg, n, &back, &len, err);
        double t2 = ts_bench_now_ms();
        if (r >= 0 && (len != n || memcmp(back, p, n) != 0))
                r = -EBADMSG;
        free(back);
        if (r < 0)
                return r;
        printf("write %.3f\nread %.3f\n", t1 - t0, t2 - t1);
        return ts_ctrd_content_delete(c, dg, err);
}

int main(int argc, char **argv) {
        ts_ctrd *c = NULL;
        ts_error *err = NULL;
        uint64_t mib = 0, runs = 0;
        if (argc != 4 || ts_units_parse_u64(argv[2], &mib) < 0 || ts_units_parse_u64(argv[3], &runs) < 0 ||
            mib == 0 || mib > 4096) {
                fprintf(stderr, "usage: ctrd-bench SOCKET SIZE_MIB(1..4096) RUNS\n");
                return 2;
        }
        size_t n = (size_t) mib << 20;
        uint8_t *p = malloc(n);
        int r = p ? ts_ctrd_connect(argv[1], "bench", NULL, &c, &err) : -ENOMEM;
        if (r >= 0) {
                r = ts_ctrd_lease_create(c, "bench", NULL, NULL, &err);
                if (r == -EEXIST)
                        r = 0, err = ts_error_free(err);
        }
        for (uint64_t i = 0; r >= 0 && i < runs; i++)
                r = run_once(c, p, n, &err);
        if (r < 0)
                fprintf(stderr, "ctrd-bench: %s\n", ts_error_message(err, r));
        ts_error_free(err);
        ts_ctrd_free(c);
        free(p);
        return r < 0 ? 1 : 0;
}
