/* inject-bench: ts_inject against mount + cp + sync + umount, measured in the
 * same run on the same devices (run it inside the VM lane through
 * bench/run-inject-bench.sh). Prints a markdown table of p50s and ratios.
 *
 *   inject-bench [--runs N] --mnt DIR FILE... -- LABEL=DEVICE...
 *
 * Each run of the peer does what a provisioner without inject/ would do:
 * mount(2) the device, copy the file in, sync(2), umount(2), all in-process
 * (no tool start-up is charged to it). Each inject run opens the device,
 * writes the file (replacing the previous copy) and closes it. Runs of the
 * two, the files and the devices interleave so drift in the guest (or load
 * on the host under it) hits every cell alike. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/macro.h"
#include "bench/bench.h"
#include "common/units.h"
#include "inject/inject.h"

static double p50(double *v, int n) {
        ts_bench_sort(v, (size_t) n);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int run_inject(const char *dev, const char *file, const char *guest, ts_error **err) {
        _cleanup_inject_ ts_inject *ij = NULL;
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        o.mode = 0755;
        int r = ts_inject_open(dev, 0, &ij, err);
        if (r < 0)
                return r;
        r = ts_inject_write_file(ij, file, guest, &o, err);
        if (r < 0)
                return r;
        return ts_inject_close(TAKE_PTR(ij), err);
}

static int copy_file(const char *src, const char *dst) {
        _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
        if (in < 0 || out < 0)
                return negative_errno();
        static char buf[1 << 20];
        for (;;) {
                ssize_t n = read(in, buf, sizeof buf);
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        return 0;
                for (ssize_t done = 0; done < n;) {
                        ssize_t w = write(out, buf + done, (size_t) (n - done));
                        if (w < 0)
                                return negative_errno();
                        done += w;
                }
        }
}

static int run_peer(const char *dev, const char *mnt, const char *file, const char *name) {
        if (mount(dev, mnt, "ext4", 0, "noinit_itable") < 0)
                return negative_errno();
        char dir[PATH_MAX], dst[PATH_MAX + 300];
        snprintf(dir, sizeof dir, "%s/bench", mnt);
        snprintf(dst, sizeof dst, "%s/peer-%s", dir, name);
        int r = 0;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                r = negative_errno();
        if (r == 0)
                r = copy_file(file, dst);
        sync();
        if (umount(mnt) < 0 && r == 0)
                r = negative_errno();
        return r;
}

static const char *base_name(const char *p) {
        const char *s = strrchr(p, '/');
        return s ? s + 1 : p;
}

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                { "runs", required_argument, NULL, 'r' },
                { "mnt", required_argument, NULL, 'm' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        uint32_t runs = 20;
        const char *mnt = NULL;
        int c;
        while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
                switch (c) {
                case 'r':
                        if (ts_units_parse_u32(optarg, &runs) < 0 || runs == 0 || runs > 10000) {
                                fprintf(stderr, "inject-bench: --runs '%s' must be 1..10000\n", optarg);
                                return 2;
                        }
                        break;
                case 'm':
                        mnt = optarg;
                        break;
                case 'h':
                        puts("Usage: inject-bench [--runs N] --mnt DIR FILE... -- LABEL=DEVICE...");
                        return 0;
                default:
                        return 2;
                }
        }
        char **files = argv + optind;
        int nfiles = 0;
        while (optind + nfiles < argc && strcmp(files[nfiles], "--") != 0)
                nfiles++;
        char **devs = files + nfiles + 1;
        int ndevs = argc - optind - nfiles - 1;
        if (!mnt || nfiles == 0 || ndevs <= 0) {
                fputs("Usage: inject-bench [--runs N] --mnt DIR FILE... -- LABEL=DEVICE...\n", stderr);
                return 2;
        }

        /* inj/peer[(d * nfiles + f) * runs + i] */
        size_t cells = (size_t) ndevs * (size_t) nfiles * runs;
        double *inj = calloc(cells, sizeof(double)), *peer = calloc(cells, sizeof(double));
        const char **label = calloc((size_t) ndevs, sizeof(char *)), **dev = calloc((size_t) ndevs, sizeof(char *));
        if (!inj || !peer || !label || !dev)
                return 1;
        for (int d = 0; d < ndevs; d++) {
                char *eq = strchr(devs[d], '=');
                if (!eq) {
                        fprintf(stderr, "inject-bench: '%s' is not LABEL=DEVICE\n", devs[d]);
                        return 2;
                }
                *eq = '\0';
                label[d] = devs[d];
                dev[d] = eq + 1;
        }
        _cleanup_error_ ts_error *err = NULL;
        /* One unmeasured round of everything: directories exist, caches warm. */
        for (int f = 0; f < nfiles; f++)
                for (int d = 0; d < ndevs; d++) {
                        const char *name = base_name(files[f]);
                        char guest[PATH_MAX];
                        snprintf(guest, sizeof guest, "/bench/inject-%s", name);
                        int r = run_inject(dev[d], files[f], guest, &err);
                        if (r >= 0)
                                r = run_peer(dev[d], mnt, files[f], name);
                        if (r < 0) {
                                fprintf(stderr, "inject-bench: %s: warm-up: %s\n", dev[d], ts_error_message(err, r));
                                return 1;
                        }
                }
        /* Runs interleave files, devices and the two methods, so load changes
         * in the guest (or on the host under it) hit every cell alike. */
        for (uint32_t i = 0; i < runs; i++)
                for (int f = 0; f < nfiles; f++)
                        for (int d = 0; d < ndevs; d++) {
                                const char *name = base_name(files[f]);
                                char guest[PATH_MAX];
                                snprintf(guest, sizeof guest, "/bench/inject-%s", name);
                                size_t cell = ((size_t) d * (size_t) nfiles + (size_t) f) * runs + i;
                                double t0 = ts_bench_now_ms();
                                int r = run_inject(dev[d], files[f], guest, &err);
                                double t1 = ts_bench_now_ms();
                                if (r < 0) {
                                        fprintf(stderr, "inject-bench: %s: %s\n", dev[d], ts_error_message(err, r));
                                        return 1;
                                }
                                r = run_peer(dev[d], mnt, files[f], name);
                                double t2 = ts_bench_now_ms();
                                if (r < 0) {
                                        fprintf(stderr, "inject-bench: %s: peer: %s\n", dev[d], strerror(-r));
                                        return 1;
                                }
                                inj[cell] = t1 - t0;
                                peer[cell] = t2 - t1;
                        }

        printf("| filesystem | file | inject p50 (ms) | mount+cp+sync+umount p50 (ms) | inject / peer | inject vs %s |\n",
               label[0]);
        printf("|---|---|---:|---:|---:|---:|\n");
        for (int d = 0; d < ndevs; d++)
                for (int f = 0; f < nfiles; f++) {
                        struct stat st;
                        if (stat(files[f], &st) < 0)
                                return 1;
                        size_t base = ((size_t) d * (size_t) nfiles + (size_t) f) * runs;
                        size_t base0 = (size_t) f * runs;
                        double pi = p50(inj + base, (int) runs), pp = p50(peer + base, (int) runs);
                        double pi0 = p50(inj + base0, (int) runs);
                        char size[32];
                        ts_units_format_size((uint64_t) st.st_size, size, sizeof size);
                        printf("| %s | %s | %.1f | %.1f | %.2f× | %.2f× |\n", label[d], size, pi, pp, pi / pp,
                               pi / pi0);
                }
        free(label);
        free(dev);
        free(inj);
        free(peer);
        return 0;
}
