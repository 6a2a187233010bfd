/* Device-mapper benchmark: the cost of cutting a thin snapshot device and
 * of taking it away, three ways, in one run on one kernel:
 *
 *   library  devmapper/ (what thinsnapd does)
 *   dmsetup  one dmsetup process per step (what containerd's Go devmapper
 *            snapshotter does for every operation)
 *   floor    bare DM ioctls on /dev/mapper/control, no library, no nodes
 *
 * Cycle A: create_snap from an inactive origin + activate.
 * Cycle B: deactivate + delete.
 * Burst: BURST_N cycles A at once on BURST_THREADS threads (as many as
 * thinsnapd's Snapshots service runs at once), BURST_ROUNDS times, through
 * the library and the bare ioctls: how soon the kernel can hand out a burst
 * of VM devices, whoever asks for them.
 * Prints markdown tables of p50/p95 per cycle and the ratios. Needs root
 * and dm-thin: run it in the VM lane (bench/run-dm-bench.sh). */
#include <errno.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "common/units.h"
#include "devmapper/loop.h"
#include "devmapper/pool.h"
#include "devmapper/thin.h"

#define MiB (1024ULL * 1024ULL)
#define THIN_SIZE (64 * MiB)

static const char *pool_name = "benchpool";

static double pct(double *v, int n, double p) {
        ts_bench_sort(v, (size_t) n);
        int i = (int) (p * (n - 1) + 0.5);
        return v[i];
}

static void die(const char *what, int r) {
        fprintf(stderr, "dm-bench: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

/* ---- dmsetup processes ---- */
static int run(char *const argv[]) {
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY);
                dup2(null, 1);
                execvp(argv[0], argv);
                _exit(127);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0)
                return -errno;
        return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static int dmsetup_cut(const ts_pool *pool, uint32_t id, uint32_t origin, const char *name) {
        char msg[64], table[128];
        snprintf(msg, sizeof msg, "create_snap %u %u", id, origin);
        char *a1[] = { "dmsetup", "message", (char *) pool_name, "0", msg, NULL };
        int r = run(a1);
        if (r < 0)
                return r;
        snprintf(table, sizeof table, "0 %llu thin %u:%u %u", THIN_SIZE / 512, pool->major,
                 pool->minor, id);
        char *a2[] = { "dmsetup", "create", (char *) name, "--table", table, NULL };
        return run(a2);
}

static int dmsetup_drop(uint32_t id, const char *name) {
        char *a1[] = { "dmsetup", "remove", (char *) name, NULL };
        int r = run(a1);
        if (r < 0)
                return r;
        char msg[64];
        snprintf(msg, sizeof msg, "delete %u", id);
        char *a2[] = { "dmsetup", "message", (char *) pool_name, "0", msg, NULL };
        return run(a2);
}

/* ---- bare ioctls ---- */
static int ctl_fd = -1;

static struct dm_ioctl *dmi_init(void *buf, size_t size, const char *name) {
        memset(buf, 0, size);
        struct dm_ioctl *d = buf;
        d->version[0] = DM_VERSION_MAJOR;
        d->data_size = (uint32_t) size;
        d->data_start = sizeof(struct dm_ioctl);
        if (name)
                snprintf(d->name, sizeof d->name, "%s", name);
        return d;
}

static int raw(unsigned long req, void *buf) {
        return ioctl(ctl_fd, req, buf) < 0 ? -errno : 0;
}

static int raw_message(const char *dev, const char *msg) {
        _Alignas(8) char buf[4096];
        struct dm_ioctl *d = dmi_init(buf, sizeof buf, dev);
        struct dm_target_msg *m = (void *) (buf + d->data_start);
        m->sector = 0;
        snprintf(m->message, sizeof buf - d->data_start - sizeof(*m), "%s", msg);
        return raw(DM_TARGET_MSG, buf);
}

static int raw_cut(const ts_pool *pool, uint32_t id, uint32_t origin, const char *name) {
        char msg[64];
        snprintf(msg, sizeof msg, "create_snap %u %u", id, origin);
        int r = raw_message(pool_name, msg);
        if (r < 0)
                return r;
        _Alignas(8) char buf[4096];
        dmi_init(buf, sizeof buf, name);
        if ((r = raw(DM_DEV_CREATE, buf)) < 0)
                return r;
        struct dm_ioctl *d = dmi_init(buf, sizeof buf, name);
        d->target_count = 1;
        struct dm_target_spec *t = (void *) (buf + d->data_start);
        t->sector_start = 0;
        t->length = THIN_SIZE / 512;
        snprintf(t->target_type, sizeof t->target_type, "thin");
        snprintf((char *) (t + 1), 256, "%u:%u %u", pool->major, pool->minor, id);
        t->next = 0;
        if ((r = raw(DM_TABLE_LOAD, buf)) < 0)
                return r;
        dmi_init(buf, sizeof buf, name);
        return raw(DM_DEV_SUSPEND, buf); /* no DM_SUSPEND_FLAG: resume */
}

static int raw_drop(uint32_t id, const char *name) {
        _Alignas(8) char buf[4096];
        dmi_init(buf, sizeof buf, name);
        int r = raw(DM_DEV_REMOVE, buf);
        if (r < 0)
                return r;
        char msg[64];
        snprintf(msg, sizeof msg, "delete %u", id);
        return raw_message(pool_name, msg);
}

/* ---- library ---- */
static int lib_cut(const ts_pool *pool, uint32_t id, uint32_t origin, const char *name) {
        int r = ts_thin_snap(pool, id, origin, NULL, NULL);
        if (r < 0)
                return r;
        return ts_thin_activate(pool, name, id, THIN_SIZE, 0, NULL);
}

static int lib_drop(const ts_pool *pool, uint32_t id, const char *name) {
        int r = ts_thin_deactivate(name, 0, NULL);
        if (r < 0)
                return r;
        return ts_thin_delete(pool, id, NULL);
}

enum { LIB, DMSETUP, FLOOR, NPATHS };
static const char *path_names[NPATHS] = { "library (thinsnap)", "dmsetup processes", "bare ioctls (floor)" };

/* ---- bursts ---- */
#define BURST_N 50
#define BURST_THREADS 16
#define BURST_ROUNDS 9

typedef struct burst {
        const ts_pool *pool;
        int path;
        uint32_t first_id;
        pthread_mutex_t lock;
        int next, failed;
        double done_ms[BURST_N];
} burst;

static void *burst_thread(void *p) {
        burst *b = p;
        for (;;) {
                pthread_mutex_lock(&b->lock);
                int i = b->next < BURST_N ? b->next++ : -1;
                pthread_mutex_unlock(&b->lock);
                if (i < 0)
                        return NULL;
                uint32_t id = b->first_id + (uint32_t) i;
                char name[64];
                snprintf(name, sizeof name, "burst-%u", id);
                int r = b->path == LIB ? lib_cut(b->pool, id, 1, name) : raw_cut(b->pool, id, 1, name);
                double done = ts_bench_now_ms();
                pthread_mutex_lock(&b->lock);
                b->done_ms[i] = done;
                if (r < 0)
                        b->failed = r;
                pthread_mutex_unlock(&b->lock);
        }
}

/* One burst of path; *ret_total (start -> last) and *ret_spread (first ->
 * last) in ms. Its devices are dropped again, untimed. */
static void burst_round(const ts_pool *pool, int path, uint32_t first_id, double *ret_total,
                        double *ret_spread) {
        burst b = { .pool = pool, .path = path, .first_id = first_id };
        pthread_mutex_init(&b.lock, NULL);
        pthread_t t[BURST_THREADS];
        double t0 = ts_bench_now_ms();
        for (int i = 0; i < BURST_THREADS; i++) {
                int e = pthread_create(&t[i], NULL, burst_thread, &b);
                if (e != 0)
                        die("start a burst thread", -e);
        }
        for (int i = 0; i < BURST_THREADS; i++)
                pthread_join(t[i], NULL);
        if (b.failed < 0)
                die(path_names[path], b.failed);
        ts_bench_sort(b.done_ms, BURST_N);
        *ret_total = b.done_ms[BURST_N - 1] - t0;
        *ret_spread = b.done_ms[BURST_N - 1] - b.done_ms[0];
        for (int i = 0; i < BURST_N; i++) {
                uint32_t id = first_id + (uint32_t) i;
                char name[64];
                snprintf(name, sizeof name, "burst-%u", id);
                int r = lib_drop(pool, id, name);
                if (r < 0)
                        die("drop a burst's device", r);
        }
        pthread_mutex_destroy(&b.lock);
}

/* The bursts of the library and of the bare ioctls, taking turns. */
static void bursts(const ts_pool *pool, uint32_t first_id) {
        static const int paths[] = { LIB, FLOOR };
        double total[2][BURST_ROUNDS], spread[2][BURST_ROUNDS];
        for (int i = 0; i < BURST_ROUNDS; i++)
                for (int k = 0; k < 2; k++) {
                        int j = (i + k) % 2;
                        burst_round(pool, paths[j], first_id, &total[j][i], &spread[j][i]);
                        first_id += BURST_N;
                }
        printf("\n%d cuts (create_snap + activate) at once on %d threads, %d rounds per path\n\n",
               BURST_N, BURST_THREADS, BURST_ROUNDS);
        printf("| path | start → last p50 | p95 | first → last p50 | p95 | per device (start → last / %d) |\n",
               BURST_N);
        printf("|---|---:|---:|---:|---:|---:|\n");
        for (int j = 0; j < 2; j++) {
                double t50 = pct(total[j], BURST_ROUNDS, 0.50), t95 = pct(total[j], BURST_ROUNDS, 0.95);
                printf("| %s | %.1f ms | %.1f ms | %.1f ms | %.1f ms | %.2f ms |\n", path_names[paths[j]],
                       t50, t95, pct(spread[j], BURST_ROUNDS, 0.50), pct(spread[j], BURST_ROUNDS, 0.95),
                       t50 / BURST_N);
        }
}

int main(int argc, char **argv) {
        int cycles = 200;
        if (argc > 1) {
                uint32_t v;
                if (ts_units_parse_u32(argv[1], &v) < 0 || v == 0 || v > 100000) {
                        fprintf(stderr, "usage: dm-bench [CYCLES]\n");
                        return 2;
                }
                cycles = (int) v;
        }
        unsetenv("DM_DISABLE_UDEV");
        char dir[] = "/tmp/dmbench-XXXXXX";
        if (!mkdtemp(dir))
                die("mkdtemp", -errno);
        char data[64], meta[64];
        snprintf(data, sizeof data, "%s/data", dir);
        snprintf(meta, sizeof meta, "%s/meta", dir);
        for (int i = 0; i < 2; i++) {
                int fd = open(i ? meta : data, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0 || ftruncate(fd, (off_t) (i ? 64 * MiB : 4096 * MiB)) < 0)
                        die("create pool files", -errno);
                close(fd);
        }
        char *dloop, *mloop;
        int dfd = -1, mfd = -1, r;
        if ((r = ts_loop_attach(data, TS_LOOP_AUTOCLEAR, &dloop, &dfd, NULL)) < 0 ||
            (r = ts_loop_attach(meta, TS_LOOP_AUTOCLEAR, &mloop, &mfd, NULL)) < 0)
                die("attach loop devices", r);
        ts_pool_params params = { .data_block_sectors = 128 };
        if ((r = ts_pool_create(pool_name, mloop, dloop, 0, &params, NULL)) < 0)
                die("create pool", r);
        close(dfd);
        close(mfd);
        ts_pool *pool;
        if ((r = ts_pool_open(pool_name, &pool, NULL)) < 0)
                die("open pool", r);
        /* The origin: a thin device with some data, inactive, as a committed
         * snapshot is in thinsnapd. */
        if ((r = ts_thin_create(pool, 1, NULL)) < 0 ||
            (r = ts_thin_activate(pool, "bench-origin", 1, THIN_SIZE, 0, NULL)) < 0)
                die("origin", r);
        int ofd = open("/dev/mapper/bench-origin", O_WRONLY | O_CLOEXEC);
        static char chunk[1 << 20];
        memset(chunk, 0x5a, sizeof chunk);
        for (int i = 0; i < 8; i++)
                if (ofd < 0 || write(ofd, chunk, sizeof chunk) != (ssize_t) sizeof chunk)
                        die("write origin", -errno);
        fsync(ofd);
        close(ofd);
        if ((r = ts_thin_deactivate("bench-origin", 0, NULL)) < 0)
                die("deactivate origin", r);
        ctl_fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
        if (ctl_fd < 0)
                die("/dev/mapper/control", -errno);

        double *cut[NPATHS], *drop[NPATHS];
        for (int p = 0; p < NPATHS; p++) {
                cut[p] = calloc((size_t) cycles, sizeof(double));
                drop[p] = calloc((size_t) cycles, sizeof(double));
        }
        /* Interleave the three paths so drift in the guest hits all alike. */
        for (int i = 0; i < cycles; i++)
                for (int p = 0; p < NPATHS; p++) {
                        uint32_t id = 1000 + (uint32_t) (i * NPATHS + p);
                        char name[64];
                        snprintf(name, sizeof name, "bench-%u", id);
                        double t0 = ts_bench_now_ms();
                        r = p == LIB ? lib_cut(pool, id, 1, name)
                            : p == DMSETUP ? dmsetup_cut(pool, id, 1, name)
                                           : raw_cut(pool, id, 1, name);
                        double t1 = ts_bench_now_ms();
                        if (r < 0)
                                die(path_names[p], r);
                        r = p == LIB ? lib_drop(pool, id, name)
                            : p == DMSETUP ? dmsetup_drop(id, name)
                                           : raw_drop(id, name);
                        double t2 = ts_bench_now_ms();
                        if (r < 0)
                                die(path_names[p], r);
                        cut[p][i] = t1 - t0;
                        drop[p][i] = t2 - t1;
                }

        double c50[NPATHS], c95[NPATHS], d50[NPATHS], d95[NPATHS];
        for (int p = 0; p < NPATHS; p++) {
                c50[p] = pct(cut[p], cycles, 0.50);
                c95[p] = pct(cut[p], cycles, 0.95);
                d50[p] = pct(drop[p], cycles, 0.50);
                d95[p] = pct(drop[p], cycles, 0.95);
        }
        printf("\n%d cycles per path, interleaved, one guest run\n\n", cycles);
        printf("| path | create_snap + activate p50 | p95 | deactivate + delete p50 | p95 |\n");
        printf("|---|---:|---:|---:|---:|\n");
        for (int p = 0; p < NPATHS; p++)
                printf("| %s | %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n", path_names[p], c50[p], c95[p],
                       d50[p], d95[p]);
        printf("\n| ratio (p50) | create_snap + activate | deactivate + delete | target |\n");
        printf("|---|---:|---:|---|\n");
        printf("| library / dmsetup | %.3f× | %.3f× | ≤ 0.2× |\n", c50[LIB] / c50[DMSETUP],
               d50[LIB] / d50[DMSETUP]);
        printf("| library / floor | %.2f× | %.2f× | ≤ 1.5× |\n", c50[LIB] / c50[FLOOR],
               d50[LIB] / d50[FLOOR]);
        bursts(pool, 1000 + (uint32_t) (cycles * NPATHS));

        ts_pool_destroy(pool_name, true, NULL);
        unlink(data);
        unlink(meta);
        rmdir(dir);
        return 0;
}
