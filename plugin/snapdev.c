#include "snapdev.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "devmapper/dm.h"
#include "devmapper/pool.h"
#include "devmapper/thin.h"

extern char **environ;

typedef struct thin {
        ts_snapdev dev;
        ts_pool *pool;
        char *root, *mkfs;
        ts_fault *fault; /* borrowed */

        pthread_mutex_t lock;
        /* Pool status is read at most every STATUS_TTL_NS before a Prepare,
         * and always after a failure. */
        int64_t status_at;
        ts_pool_status status;
        /* Committed devices whose removal was deferred because they were
         * still open (containerd may commit a mounted snapshot): a child of
         * one must suspend it around create_snap. */
        uint32_t *deferred;
        size_t n_deferred;
} thin;

#define STATUS_TTL_NS (250 * 1000 * 1000LL)
#define DISCARD_CHUNK (64ULL << 20)
#define NAME_MAX_LEN 96

static thin *THIN(ts_snapdev *d) {
        return (thin *) d;
}

static void dev_name(const thin *t, uint32_t id, char buf[static NAME_MAX_LEN]) {
        snprintf(buf, NAME_MAX_LEN, "%s-snap-%" PRIu32, t->pool->name, id);
}

static void thin_path(ts_snapdev *d, uint32_t id, char *buf, size_t len) {
        snprintf(buf, len, "/dev/mapper/%s-snap-%" PRIu32, THIN(d)->pool->name, id);
}

/* ---- space ---- */

/* Reads the pool's status (cached for STATUS_TTL_NS unless fresh). */
static int pool_status(thin *t, bool fresh, ts_pool_status *ret, ts_error **err) {
        int64_t now = ts_clock_mono_ns();
        pthread_mutex_lock(&t->lock);
        bool cached = !fresh && t->status_at && now - t->status_at < STATUS_TTL_NS;
        if (cached)
                *ret = t->status;
        pthread_mutex_unlock(&t->lock);
        if (cached)
                return 0;
        ts_pool_status st;
        int r = ts_pool_get_status(t->pool, &st, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&t->lock);
        t->status = st;
        t->status_at = now;
        pthread_mutex_unlock(&t->lock);
        *ret = st;
        return 0;
}

static void status_forget(thin *t) {
        pthread_mutex_lock(&t->lock);
        t->status_at = 0;
        pthread_mutex_unlock(&t->lock);
}

static int thin_check_space(ts_snapdev *d, bool fresh, ts_error **err) {
        thin *t = THIN(d);
        ts_pool_status st;
        int r = pool_status(t, fresh, &st, err);
        if (r < 0)
                return r;
        bool full = ts_pool_status_space(t->pool->name, &st, NULL) < 0;
        bool bad = st.read_only || st.fail || st.needs_check;
        /* A refusal is never made on cached figures: the pool may have been
         * extended (or space freed) since they were read. */
        if (!fresh && (full || bad))
                return thin_check_space(d, true, err);
        if (full)
                return ts_pool_status_space(t->pool->name, &st, err);
        if (bad)
                return ts_error_setf_plain(err, EROFS, "pool %s is %s", t->pool->name,
                                           st.needs_check ? "marked needs_check"
                                           : st.fail     ? "failed"
                                                         : "read-only");
        return 0;
}

/* ---- devices released while open ---- */

static void deferred_add(thin *t, uint32_t id) {
        pthread_mutex_lock(&t->lock);
        uint32_t *v = realloc(t->deferred, (t->n_deferred + 1) * sizeof(*v));
        if (v) {
                v[t->n_deferred++] = id;
                t->deferred = v;
        }
        pthread_mutex_unlock(&t->lock);
        if (!v) /* without the note, a child could miss unflushed writes */
                log_warn("device %u: deferred removal not tracked (out of memory)", id);
}

/* True (and forgotten) when id had a deferred removal pending. */
static bool deferred_take(thin *t, uint32_t id) {
        bool found = false;
        pthread_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->n_deferred; i++)
                if (t->deferred[i] == id) {
                        t->deferred[i] = t->deferred[--t->n_deferred];
                        found = true;
                        break;
                }
        pthread_mutex_unlock(&t->lock);
        return found;
}

/* Looks at device id's name before the device is removed or taken as it
 * is (ts_thin_probe): a device of that name that is not this pool's thin
 * device id is refused with -EMEDIUMTYPE and left alone. It guards against
 * a device someone else made under the name while thinsnapd was down, not
 * against one swapped in between the look and the removal. */
static int probe(thin *t, uint32_t id, char name[static NAME_MAX_LEN], ts_thin_found *ret,
                 ts_error **err) {
        dev_name(t, id, name);
        return ts_thin_probe(t->pool, name, id, ret, err);
}

/* Deactivates device id (ts_thin_deactivate's flags) once probe says it is ours. */
static int deactivate_checked(thin *t, uint32_t id, unsigned flags, ts_error **err) {
        char name[NAME_MAX_LEN];
        ts_thin_found p;
        int r = probe(t, id, name, &p, err);
        if (r < 0 || !p.exists)
                return r;
        return ts_thin_deactivate(name, flags, err);
}

static int thin_release(ts_snapdev *d, uint32_t id, ts_error **err) {
        thin *t = THIN(d);
        char name[NAME_MAX_LEN];
        ts_thin_found p;
        int r = probe(t, id, name, &p, err);
        if (r < 0 || !p.exists)
                return r;
        /* A device still open is removed by the kernel at its last close. */
        r = ts_dm_remove(name, 0, NULL);
        if (r == -EBUSY) {
                ts_dm_info di;
                r = ts_dm_remove(name, TS_DM_REMOVE_DEFERRED, err);
                if (r >= 0 && ts_dm_info_get(name, &di, NULL) == 0 && di.exists)
                        deferred_add(t, id);
                return r;
        }
        if (r == -ENXIO || r >= 0)
                return 0;
        return ts_thin_deactivate(name, 0, err);
}

/* ---- snapshots and activation ---- */

static int thin_snap(ts_snapdev *d, uint32_t id, uint32_t origin, ts_error **err) {
        thin *t = THIN(d);
        /* A committed origin is inactive, unless its removal was deferred
         * while it was still mounted: then the snapshot is taken with the
         * origin suspended, so it sees every write the origin acknowledged. */
        char origin_name[NAME_MAX_LEN];
        bool maybe_active = deferred_take(t, origin);
        dev_name(t, origin, origin_name);
        int r = ts_thin_snap(t->pool, id, origin, maybe_active ? origin_name : NULL, err);
        if (maybe_active) {
                ts_dm_info oi;
                if (ts_dm_info_get(origin_name, &oi, NULL) == 0 && oi.exists)
                        deferred_add(t, origin); /* still open: keep the note */
        }
        return r;
}

static int thin_activate(ts_snapdev *d, uint32_t id, uint64_t size, ts_error **err) {
        thin *t = THIN(d);
        char name[NAME_MAX_LEN];
        dev_name(t, id, name);
        return ts_thin_activate(t->pool, name, id, size, 0, err);
}

static int thin_deactivate(ts_snapdev *d, uint32_t id, ts_error **err) {
        return deactivate_checked(THIN(d), id, 0, err);
}

/* Kills the process at recover:after-create or recover:after-load when
 * THINSNAPD_FAULT names it: a device made half by a recovery cut short. */
static void recover_step(void *p, const char *step) {
        char point[32];
        snprintf(point, sizeof point, "after-%s", step);
        ts_fault_point(((thin *) p)->fault, "recover", point);
}

/* Makes device id, which probe found unusable (no live table, suspended or
 * without its node: what a process killed while making it leaves), usable
 * again: removed, to be activated again (returns 1), or, when held open,
 * resumed, which makes its node and takes a loaded table live (returns 0). */
static int revive(thin *t, uint32_t id, const char *name, const ts_thin_found *p, ts_error **err) {
        log_warn("device %s was left unusable (%s): making it again", name,
                 !p->live_table ? "no live table" : p->suspended ? "suspended" : "no device node");
        if (p->open_count == 0) {
                int r = ts_dm_remove(name, 0, err);
                return r < 0 && r != -ENXIO ? r : 1;
        }
        int r = ts_dm_resume(name, err);
        if (r < 0)
                return ts_error_prefix(err, r, "device %s is unusable and held open", name);
        ts_thin_found q;
        r = ts_thin_probe(t->pool, name, id, &q, err);
        if (r >= 0 && !q.usable)
                r = ts_error_setf_plain(err, EBUSY, "device %s is unusable and held open: close its "
                                        "users", name);
        return r < 0 ? r : 0;
}

static int thin_settle(ts_snapdev *d, uint32_t id, uint64_t size, bool active, ts_error **err) {
        thin *t = THIN(d);
        char name[NAME_MAX_LEN];
        ts_thin_found p;
        int r = probe(t, id, name, &p, err);
        if (r < 0)
                return r;
        if (!active) {
                if (p.exists && p.suspended && p.open_count > 0)
                        (void) ts_dm_resume(name, NULL); /* its user's I/O waits on the suspend */
                return p.exists ? ts_thin_deactivate(name, TS_THIN_DEFERRED, err) : 0;
        }
        if (p.usable)
                return 0;
        if (p.exists && (r = revive(t, id, name, &p, err)) <= 0)
                return r;
        r = ts_thin_activate_stepped(t->pool, name, id, size, 0, recover_step, t, err);
        return r < 0 ? r : 1;
}

static int thin_mapped(ts_snapdev *d, uint32_t id, int64_t *ret, ts_error **err) {
        char name[NAME_MAX_LEN];
        dev_name(THIN(d), id, name);
        ts_thin_status st;
        int r = ts_thin_get_status(name, &st, err);
        if (r < 0)
                return r;
        *ret = (int64_t) (st.mapped_sectors * 512);
        return 0;
}

/* ---- removal ---- */

/* Discards every block of the inactive device id (size bytes), so the pool
 * passes the blocks only it held down to its data device (a sparse file, an
 * SSD) before the delete drops them. The device is activated for this alone:
 * it was deactivated first, so nobody has it open. In bounded chunks, so one
 * huge discard does not stall the pool. A failed discard is logged and
 * otherwise ignored: the delete frees the blocks in the pool either way. */
static void discard_device(thin *t, uint32_t id, uint64_t size) {
        char name[NAME_MAX_LEN], path[128];
        dev_name(t, id, name);
        thin_path(&t->dev, id, path, sizeof path);
        if (size == 0) {
                log_warn("device %s: size unknown, not discarded before its delete", name);
                return;
        }
        _cleanup_error_ ts_error *e = NULL;
        int r = ts_thin_activate(t->pool, name, id, size, 0, &e);
        if (r < 0) {
                log_warn("device %s: not discarded before its delete: %s", name, ts_error_message(e, r));
                return;
        }
        uint64_t off = 0;
        int fd = open(path, O_WRONLY | O_EXCL | O_CLOEXEC);
        if (fd < 0)
                log_warn_errno(-errno, "device %s: not discarded before its delete: open %s", name, path);
        else {
                for (; off < size; off += DISCARD_CHUNK) {
                        uint64_t range[2] = { off, size - off < DISCARD_CHUNK ? size - off : DISCARD_CHUNK };
                        if (ioctl(fd, BLKDISCARD, range) < 0) {
                                log_warn_errno(-errno, "device %s: discard stopped at byte %" PRIu64
                                               " of %" PRIu64, name, off, size);
                                break;
                        }
                }
                close(fd);
        }
        if (off >= size)
                log_debug("device %s: discarded %" PRIu64 " bytes before its delete", name, size);
        r = ts_thin_deactivate(name, 0, &e);
        if (r < 0) /* the delete reports what follows from it */
                log_warn("device %s: deactivating after the discard: %s", name, ts_error_message(e, r));
}

static int thin_drop(ts_snapdev *d, uint32_t id, uint64_t size, bool discard, ts_error **err) {
        thin *t = THIN(d);
        char name[NAME_MAX_LEN];
        dev_name(t, id, name);
        int r = deactivate_checked(t, id, 0, err);
        if (r < 0)
                return r;
        if (discard)
                discard_device(t, id, size);
        /* A device whose removal was deferred (committed while mounted) is
         * released by the kernel from a work queue after its last close:
         * the pool may call it busy for a moment. */
        for (int i = 0;; i++) {
                _cleanup_error_ ts_error *e = NULL;
                r = ts_thin_delete(t->pool, id, &e);
                if (r != -EBUSY || i >= 40) {
                        if (r < 0 && thin_check_space(d, true, NULL) == -ENOSPC)
                                /* A pool out of metadata space refuses even a
                                 * delete (EOPNOTSUPP): say why, and what helps. */
                                return thin_check_space(d, true, err);
                        if (r < 0)
                                return ts_error_move(err, &e);
                        status_forget(t); /* blocks were freed: the next space check reads the pool */
                        return r;
                }
                struct timespec ts = { 0, 50 * 1000000L };
                nanosleep(&ts, NULL);
        }
}

/* ---- the base device ---- */

static int run_mkfs(const char *mkfs, const char *dev, ts_error **err) {
        /* The one process thinsnapd starts: formatting the base device once
         * per pool and size, at start-up, never on a request. The storage
         * reads as zeroes where unmapped, so nothing needs zeroing. */
        char *argv[] = { (char *) mkfs, "-q", "-F", "-E", "nodiscard,assume_storage_prezeroed=1",
                         "-L", "thinsnap-base", (char *) dev, NULL };
        pid_t pid;
        int r = posix_spawnp(&pid, mkfs, NULL, NULL, argv, environ);
        if (r != 0)
                return ts_error_set(err, r, "run %s", mkfs);
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return ts_error_set(err, errno, "wait for %s", mkfs);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                return ts_error_setf_plain(err, EIO, "%s %s failed (status %d)", mkfs, dev,
                                           WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        return 0;
}

/* mkfs leaves /lost+found, which no image has and containerd's checks see
 * as a difference. Removing it needs the filesystem mounted once: here, at
 * start-up, once per pool and size; never on a request. */
static int drop_lost_found(const char *root, const char *dev, ts_error **err) {
        _cleanup_free_ char *dir = NULL;
        if (asprintf(&dir, "%s/base-mount.XXXXXX", root) < 0)
                return ts_error_set(err, ENOMEM, "base device %s", dev);
        if (!mkdtemp(dir))
                return ts_error_set(err, errno, "create %s", dir);
        int r = 0;
        if (mount(dev, dir, "ext4", MS_NOATIME, NULL) < 0)
                r = ts_error_set(err, errno, "mount %s on %s", dev, dir);
        else {
                _cleanup_free_ char *lf = NULL;
                if (asprintf(&lf, "%s/lost+found", dir) < 0)
                        r = ts_error_set(err, ENOMEM, "base device %s", dev);
                else if (rmdir(lf) < 0 && errno != ENOENT)
                        r = ts_error_set(err, errno, "remove %s", lf);
                if (umount2(dir, 0) < 0 && r >= 0)
                        r = ts_error_set(err, errno, "unmount %s", dir);
        }
        (void) rmdir(dir);
        return r;
}

/* Creates (or reuses) the base device and writes its filesystem; leaves it
 * active. */
static int format_base(thin *t, uint32_t id, uint64_t size, ts_error **err) {
        char name[NAME_MAX_LEN], path[128];
        dev_name(t, id, name);
        thin_path(&t->dev, id, path, sizeof path);
        log_info("formatting the base device %s (%" PRIu64 " bytes) once for pool %s", name, size,
                 t->pool->name);
        int r = ts_thin_create(t->pool, id, err);
        if (r == -EEXIST) /* a crash during an earlier format: start over */
                r = 0;
        if (r >= 0)
                r = ts_thin_activate(t->pool, name, id, size, 0, err);
        if (r >= 0)
                r = run_mkfs(t->mkfs, path, err);
        if (r >= 0)
                r = drop_lost_found(t->root, path, err);
        return r;
}

static int thin_base(ts_snapdev *d, uint32_t id, uint64_t size, bool format, int64_t *ret_mapped,
                     ts_error **err) {
        thin *t = THIN(d);
        char name[NAME_MAX_LEN];
        dev_name(t, id, name);
        int r;
        if (format)
                r = format_base(t, id, size, err);
        else {
                /* Measured for Usage, activated briefly read-only. */
                r = ts_thin_activate(t->pool, name, id, size, TS_THIN_READ_ONLY, err);
                if (r == -EEXIST)
                        r = 0;
        }
        ts_thin_status st = { 0 };
        if (r >= 0)
                r = ts_thin_get_status(name, &st, err);
        int q = deactivate_checked(t, id, 0, r < 0 ? NULL : err);
        if (r >= 0 && q < 0)
                r = q;
        if (r < 0)
                return format ? ts_error_prefix(err, r, "format base device %s", name) : r;
        *ret_mapped = (int64_t) (st.mapped_sectors * 512);
        return 0;
}

/* ---- open / free ---- */

static void thin_free(ts_snapdev *d) {
        thin *t = THIN(d);
        ts_pool_free(t->pool);
        free(t->root);
        free(t->mkfs);
        free(t->deferred);
        pthread_mutex_destroy(&t->lock);
        free(t);
}

static const ts_snapdev_ops thin_ops = {
        .check_space = thin_check_space,
        .snap = thin_snap,
        .activate = thin_activate,
        .deactivate = thin_deactivate,
        .release = thin_release,
        .drop = thin_drop,
        .mapped = thin_mapped,
        .settle = thin_settle,
        .base = thin_base,
        .path = thin_path,
        .free = thin_free,
};

/* Refuses a pool that cannot take new devices now. */
static int check_usable(thin *t, ts_error **err) {
        ts_pool_status st;
        int r = ts_pool_get_status(t->pool, &st, err);
        if (r < 0)
                return r;
        if (st.needs_check)
                return ts_error_setf_plain(err, EUCLEAN,
                                           "pool %s needs_check: its metadata must be repaired "
                                           "(thin_check/thin_repair) before use", t->pool->name);
        if (st.fail || st.read_only)
                return ts_error_setf_plain(err, EROFS, "pool %s is %s", t->pool->name,
                                           st.fail ? "failed" : "read-only");
        return 0;
}

int ts_snapdev_open(const ts_snapdev_config *cfg, ts_snapdev **ret, ts_error **err) {
        thin *t = calloc(1, sizeof(*t));
        if (!t)
                return ts_error_set(err, ENOMEM, "pool %s", cfg->pool);
        t->dev.ops = &thin_ops;
        t->fault = cfg->fault;
        pthread_mutex_init(&t->lock, NULL);
        t->root = strdup(cfg->root);
        t->mkfs = strdup(cfg->mkfs ? cfg->mkfs : "mkfs.ext4");
        int r = !t->root || !t->mkfs ? ts_error_set(err, ENOMEM, "pool %s", cfg->pool) : 0;
        if (r >= 0)
                r = ts_dm_check_available(err);
        if (r >= 0)
                r = ts_pool_open(cfg->pool, &t->pool, err);
        if (r >= 0)
                r = check_usable(t, err);
        if (r < 0) {
                thin_free(&t->dev);
                return r;
        }
        *ret = &t->dev;
        return 0;
}
