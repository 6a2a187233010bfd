/* The snapshotter's crash protocol (snapshotter.h) on a fake device layer
 * (fakedev.h): the device calls each operation makes and in what order,
 * failures of the pool (busy devices, no space) and what they leave, and a
 * crash between any two steps of Prepare, View, Commit, Remove, asynchronous
 * removal, the base device's format and start-up recovery, re-opened from
 * the same LMDB store. vm-service-crash proves the same against the kernel. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "plugin/snapshotter.h"
#include "tests/unit/failalloc.h"
#include "tests/unit/fakedev.h"
#include "tests/unit/ts-check.h"

#define BASE_SIZE (1ULL << 30)
#define NS "default"

static char root[64];
static ts_fakedev_pool *pool;
static char calls[4096];

static void wipe_root(void) {
        char p[128];
        snprintf(p, sizeof p, "%s/data.mdb", root);
        unlink(p);
        snprintf(p, sizeof p, "%s/lock.mdb", root);
        unlink(p);
}

static void setup(void) {
        snprintf(root, sizeof root, "/tmp/ts-snapshotter-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(root));
        pool = ts_fakedev_pool_new();
        ck_assert_ptr_nonnull(pool);
        unsetenv("THINSNAPD_FAULT");
}

static void teardown(void) {
        wipe_root();
        rmdir(root);
        ts_fakedev_pool_free(pool);
}

/* A fresh store and pool, for each round of a crash loop. */
static void reset(void) {
        wipe_root();
        pthread_mutex_t lock = pool->lock;
        memset(pool, 0, sizeof(*pool));
        pool->lock = lock;
}

static const char *took(void) {
        return ts_fakedev_calls(pool, calls, sizeof calls);
}

typedef struct opts {
        bool async, discard;
        uint32_t spares_max; /* the filler cuts only when a test asks it to */
        uint64_t map_size, map_max; /* the store's map; 0: defaults */
} opts;

static int try_open(opts o, ts_snapshotter **ret, ts_error **err) {
        ts_snapshotter_config cfg = {
                .root = root,
                .pool = "fake",
                .base_size = BASE_SIZE,
                .async_remove = o.async,
                .discard_on_remove = o.discard,
                .dev_id_max = TS_FAKEDEV_MAX,
                .spares_max = o.spares_max,
                .spare_quiet_ms = 3600 * 1000,
                .store_map_size = o.map_size,
                .store_map_max = o.map_max,
                .dev = ts_fakedev_new(pool),
        };
        return ts_snapshotter_open(&cfg, ret, err);
}

static ts_snapshotter *open_with(opts o) {
        ts_snapshotter *s = NULL;
        _cleanup_error_ ts_error *err = NULL;
        int r = try_open(o, &s, &err);
        ck_assert_msg(r == 0, "open: %s", ts_error_message(err, r));
        return s;
}

static ts_snapshotter *open_snap(void) {
        return open_with((opts) { 0 });
}

static int prepare(ts_snapshotter *s, const char *key, const char *parent, ts_snapshot_kind kind,
                   ts_mount *ret) {
        ts_mount m;
        int r = ts_snapshotter_prepare(s, NS, key, parent, kind, NULL, 0, ret ? ret : &m, NULL);
        return r;
}

static void must(int r, const char *what) {
        ck_assert_msg(r == 0, "%s: %s", what, strerror(-r));
}

/* The record of key: its kind, or -errno (READY records only). */
static int kind_of(ts_snapshotter *s, const char *key, uint32_t *ret_dev) {
        ts_store_info info;
        int r = ts_snapshotter_stat(s, NS, key, &info, NULL);
        if (r < 0)
                return r;
        int kind = (int) info.kind;
        if (ret_dev)
                *ret_dev = info.dev_id;
        ts_store_info_done(&info);
        return kind;
}

/* ---- what each operation does to devices ---- */

START_TEST(operations_and_their_device_calls) {
        ts_snapshotter *s = open_snap();
        ck_assert_str_eq(took(), "base 1 format");
        ck_assert_uint_eq(pool->formats, 1);

        ts_mount m;
        must(prepare(s, "a", NULL, TS_KIND_ACTIVE, &m), "prepare a");
        ck_assert_str_eq(took(), "snap 2 1, activate 2");
        ck_assert_str_eq(m.source, "/dev/fake/2");
        ck_assert(!m.read_only);
        ck_assert(pool->dev[2].active);

        ts_fakedev_write(pool, 2, 4096);
        int64_t size = -1, inodes = -1;
        must(ts_snapshotter_usage(s, NS, "a", &size, &inodes, NULL), "usage a");
        ck_assert_int_eq(size, 4096); /* the base's blocks are not a's */
        ck_assert_str_eq(took(), "mapped 2");

        must(ts_snapshotter_commit(s, NS, "A", "a", NULL, 0, NULL), "commit");
        ck_assert_str_eq(took(), "mapped 2, release 2");
        ck_assert(!pool->dev[2].active);
        ck_assert_int_eq(kind_of(s, "A", NULL), TS_KIND_COMMITTED);
        ck_assert_int_eq(kind_of(s, "a", NULL), -ENOENT);
        must(ts_snapshotter_usage(s, NS, "A", &size, &inodes, NULL), "usage A");
        ck_assert_int_eq(size, 4096);
        ck_assert_str_eq(took(), ""); /* recorded at commit */

        must(prepare(s, "v", "A", TS_KIND_VIEW, &m), "view");
        ck_assert_str_eq(took(), "snap 3 2, activate 3");
        ck_assert(m.read_only);
        must(ts_snapshotter_mounts(s, NS, "v", &m, NULL), "mounts");
        ck_assert_str_eq(m.source, "/dev/fake/3");
        ck_assert_int_eq(ts_snapshotter_mounts(s, NS, "A", &m, NULL), -EBUSY);

        ck_assert_int_eq(ts_snapshotter_remove(s, NS, "A", NULL), -ENOTEMPTY);
        ck_assert_str_eq(took(), "");
        must(ts_snapshotter_remove(s, NS, "v", NULL), "remove v");
        ck_assert_str_eq(took(), "deactivate 3, drop 3");
        ck_assert(!pool->dev[3].exists);
        must(ts_snapshotter_remove(s, NS, "A", NULL), "remove A");
        ck_assert_str_eq(took(), "deactivate 2, drop 2");
        ck_assert_int_eq(ts_snapshotter_remove(s, NS, "A", NULL), -ENOENT);
        ts_snapshotter_close(s);

        /* The base is formatted once: a restart only measures it. */
        s = open_snap();
        ck_assert_str_eq(took(), "deactivate 1, base 1 measure");
        ck_assert_uint_eq(pool->formats, 1);
        ts_snapshotter_close(s);
}
END_TEST

START_TEST(refusals_touch_no_device) {
        ts_snapshotter *s = open_snap();
        took();
        must(prepare(s, "a", NULL, TS_KIND_ACTIVE, NULL), "prepare a");
        took();
        ck_assert_int_eq(prepare(s, "a", NULL, TS_KIND_ACTIVE, NULL), -EEXIST);
        ck_assert_int_eq(prepare(s, "b", "nosuch", TS_KIND_ACTIVE, NULL), -ENOENT);
        ck_assert_int_eq(prepare(s, "b", "a", TS_KIND_ACTIVE, NULL), -EINVAL); /* not committed */
        ck_assert_int_eq(ts_snapshotter_commit(s, NS, "A", "nosuch", NULL, 0, NULL), -ENOENT);
        ck_assert_str_eq(took(), "");

        must(prepare(s, "b", NULL, TS_KIND_ACTIVE, NULL), "prepare b");
        must(ts_snapshotter_commit(s, NS, "B", "b", NULL, 0, NULL), "commit b");
        took();
        ck_assert_int_eq(ts_snapshotter_commit(s, NS, "B", "a", NULL, 0, NULL), -EEXIST);
        ck_assert_int_eq(ts_snapshotter_commit(s, NS, "C", "B", NULL, 0, NULL), -EBUSY);
        ck_assert_str_eq(took(), "");
        ck_assert(pool->dev[2].active);
        ts_snapshotter_close(s);
}
END_TEST

/* The provisioner's removal by device: only the snapshot that has the
 * device and the name; containerd's collector, asking for it afterwards,
 * is answered as if it had removed it itself. */
START_TEST(remove_by_device) {
        ts_snapshotter *s = open_snap();
        ts_mount m, other;
        must(prepare(s, "default/7/thinsnap-vm-a", NULL, TS_KIND_ACTIVE, &m), "prepare vm a");
        must(prepare(s, "default/8/thinsnap-vm-b", NULL, TS_KIND_ACTIVE, &other), "prepare vm b");
        took();
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_snapshotter_remove_device(s, "/dev/mapper/elsewhere-snap-2", "default",
                                                      "thinsnap-vm-a", &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(ts_error_message(err, -EINVAL), "not a device of this snapshotter"));
        ck_assert_int_eq(ts_snapshotter_remove_device(s, "/dev/fake/", NS, "thinsnap-vm-a", NULL), -EINVAL);
        ck_assert_int_eq(ts_snapshotter_remove_device(s, "/dev/fake/99", NS, "thinsnap-vm-a", NULL), -ENOENT);
        /* b's device under a's name, the base device, a name a's key only ends in: not a's. */
        ck_assert_int_eq(ts_snapshotter_remove_device(s, other.source, NS, "thinsnap-vm-a", NULL), -ENOENT);
        ck_assert_int_eq(ts_snapshotter_remove_device(s, "/dev/fake/1", NS, "thinsnap-vm-a", NULL), -ENOENT);
        ck_assert_int_eq(ts_snapshotter_remove_device(s, m.source, NS, "vm-a", NULL), -ENOENT);
        ck_assert_int_eq(ts_snapshotter_remove_device(s, m.source, "other", "thinsnap-vm-a", NULL), -ENOENT);
        ck_assert_str_eq(took(), "");

        must(ts_snapshotter_remove_device(s, m.source, NS, "thinsnap-vm-a", NULL), "remove a by device");
        ck_assert_str_eq(took(), "deactivate 2, drop 2");
        ck_assert_int_eq(kind_of(s, "default/7/thinsnap-vm-a", NULL), -ENOENT);
        ck_assert_int_eq(ts_snapshotter_remove_device(s, m.source, NS, "thinsnap-vm-a", NULL), -ENOENT);
        /* The collector's Remove finds it done, once; a key never there is -ENOENT. */
        must(ts_snapshotter_remove(s, NS, "default/7/thinsnap-vm-a", NULL), "the collector's remove");
        ck_assert_int_eq(ts_snapshotter_remove(s, NS, "default/7/thinsnap-vm-a", NULL), -ENOENT);
        ck_assert_int_eq(ts_snapshotter_remove(s, NS, "default/9/thinsnap-vm-a", NULL), -ENOENT);
        ck_assert_str_eq(took(), "");
        ck_assert_int_eq(kind_of(s, "default/8/thinsnap-vm-b", NULL), TS_KIND_ACTIVE);

        /* A busy device stays, with its record. */
        ts_fakedev_hold(pool, 3);
        ck_assert_int_eq(ts_snapshotter_remove_device(s, other.source, NS, "thinsnap-vm-b", NULL), -EBUSY);
        ck_assert_int_eq(kind_of(s, "default/8/thinsnap-vm-b", NULL), TS_KIND_ACTIVE);
        ts_fakedev_unhold(pool, 3);
        must(ts_snapshotter_remove_device(s, other.source, NS, "thinsnap-vm-b", NULL), "remove b by device");
        ts_snapshotter_close(s);
}
END_TEST

/* With asynchronous removal: the collector's Remove, coming while the
 * reaper has not finished, also finds the early removal done. */
START_TEST(remove_by_device_async) {
        ts_snapshotter *s = open_with((opts) { .async = true });
        ts_mount m;
        must(prepare(s, "default/7/thinsnap-vm-a", NULL, TS_KIND_ACTIVE, &m), "prepare vm a");
        must(ts_snapshotter_remove_device(s, m.source, NS, "thinsnap-vm-a", NULL), "remove a by device");
        ck_assert_int_eq(kind_of(s, "default/7/thinsnap-vm-a", NULL), -ENOENT);
        must(ts_snapshotter_remove(s, NS, "default/7/thinsnap-vm-a", NULL), "the collector's remove");
        ck_assert_int_eq(ts_snapshotter_remove(s, NS, "default/7/thinsnap-vm-a", NULL), -ENOENT);
        ts_snapshotter_close(s);
        ck_assert(!pool->dev[2].exists);
}
END_TEST

/* ---- failures of the pool ---- */

START_TEST(pool_out_of_space) {
        ts_snapshotter *s = open_snap();
        took();
        pool->full = true;
        _cleanup_error_ ts_error *err = NULL;
        ts_mount m;
        ck_assert_int_eq(ts_snapshotter_prepare(s, NS, "a", NULL, TS_KIND_ACTIVE, NULL, 0, &m, &err), -ENOSPC);
        ck_assert_ptr_nonnull(strstr(ts_error_message(err, -ENOSPC), "out of data space"));
        ck_assert_str_eq(took(), "");
        ck_assert_int_eq(kind_of(s, "a", NULL), -ENOENT);
        ts_error_free(TAKE_PTR(err));

        /* The pool fills between the space check and the snapshot: whatever
         * the kernel said, the answer is the pool's state, and nothing is left. */
        pool->full = false;
        pool->fail_fills = true;
        ts_fakedev_fail(pool, "snap", 1, EOPNOTSUPP);
        ck_assert_int_eq(ts_snapshotter_prepare(s, NS, "a", NULL, TS_KIND_ACTIVE, NULL, 0, &m, &err), -ENOSPC);
        ck_assert_ptr_nonnull(strstr(ts_error_message(err, -ENOSPC), "out of data space"));
        ck_assert_str_eq(took(), "snap 2 1");
        ck_assert_int_eq(kind_of(s, "a", NULL), -ENOENT);
        ck_assert(!pool->dev[2].exists);
        ts_error_free(TAKE_PTR(err));

        /* Any other failure is returned as it is, after the rollback. */
        pool->full = pool->fail_fills = false;
        ts_fakedev_fail(pool, "activate", 1, EIO);
        ck_assert_int_eq(ts_snapshotter_prepare(s, NS, "a", NULL, TS_KIND_ACTIVE, NULL, 0, &m, &err), -EIO);
        ck_assert_str_eq(took(), "snap 3 1, activate 3, drop 3"); /* ids are reused as late as possible */
        ck_assert(!pool->dev[3].exists);
        ck_assert_int_eq(kind_of(s, "a", NULL), -ENOENT);

        must(prepare(s, "a", NULL, TS_KIND_ACTIVE, &m), "prepare after the failures");
        ck_assert_str_eq(m.source, "/dev/fake/4");
        ts_snapshotter_close(s);
}
END_TEST

START_TEST(busy_devices) {
        ts_snapshotter *s = open_snap();
        must(prepare(s, "a", NULL, TS_KIND_ACTIVE, NULL), "prepare a");
        took();

        /* Remove of a mounted snapshot: refused, the record as it was. */
        ts_fakedev_hold(pool, 2);
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_snapshotter_remove(s, NS, "a", &err), -EBUSY);
        ck_assert_ptr_nonnull(strstr(ts_error_message(err, -EBUSY), "in use"));
        ck_assert_str_eq(took(), "deactivate 2");
        ck_assert_int_eq(kind_of(s, "a", NULL), TS_KIND_ACTIVE);
        ck_assert(pool->dev[2].active);

        /* Commit of a mounted snapshot (containerd does it): the device is
         * released at its last close, and a child cut before that is cut
         * from it as it is. */
        must(ts_snapshotter_commit(s, NS, "A", "a", NULL, 0, NULL), "commit while held");
        ck_assert_str_eq(took(), "mapped 2, release 2");
        ck_assert(pool->dev[2].active && pool->dev[2].deferred);
        must(prepare(s, "b", "A", TS_KIND_ACTIVE, NULL), "child of a held parent");
        ck_assert_str_eq(took(), "snap 3 2, activate 3");
        ts_fakedev_unhold(pool, 2);
        ck_assert(!pool->dev[2].active);

        /* A release that fails leaves the snapshot active, device and all. */
        ts_fakedev_fail(pool, "release", 1, EIO);
        ck_assert_int_eq(ts_snapshotter_commit(s, NS, "B", "b", NULL, 0, NULL), -EIO);
        ck_assert_int_eq(kind_of(s, "b", NULL), TS_KIND_ACTIVE);
        ck_assert(pool->dev[3].active);
        ts_snapshotter_close(s);
}
END_TEST

/* ---- asynchronous removal and the reaper ---- */

/* Waits (a bounded number of short sleeps) until device id is gone. */
static bool gone_soon(uint32_t id) {
        for (int i = 0; i < 2000; i++) {
                if (!pool->dev[id].exists)
                        return true;
                nanosleep(&(struct timespec) { 0, 5 * 1000 * 1000 }, NULL);
        }
        return false;
}

START_TEST(async_removal) {
        ts_snapshotter *s = open_with((opts) { .async = true });
        uint32_t a, b;
        must(prepare(s, "a", NULL, TS_KIND_ACTIVE, NULL), "prepare a");
        must(prepare(s, "b", NULL, TS_KIND_ACTIVE, NULL), "prepare b");
        ck_assert_int_eq(kind_of(s, "a", &a), TS_KIND_ACTIVE);
        ck_assert_int_eq(kind_of(s, "b", &b), TS_KIND_ACTIVE);

        /* Gone from Stat at once; the reaper deletes the device. */
        must(ts_snapshotter_remove(s, NS, "a", NULL), "remove a");
        ck_assert_int_eq(kind_of(s, "a", NULL), -ENOENT);
        ck_assert(gone_soon(a));

        /* A device in use stays until it is closed; the next pass (woken by
         * another Remove here) finishes it. */
        ts_fakedev_hold(pool, b);
        must(ts_snapshotter_remove(s, NS, "b", NULL), "remove b");
        ck_assert_int_eq(kind_of(s, "b", NULL), -ENOENT);
        must(ts_snapshotter_cleanup(s, NULL), "cleanup");
        ck_assert(pool->dev[b].exists);
        ts_fakedev_unhold(pool, b);
        must(prepare(s, "c", NULL, TS_KIND_ACTIVE, NULL), "prepare c");
        must(ts_snapshotter_remove(s, NS, "c", NULL), "remove c");
        ck_assert(gone_soon(b));
        ts_snapshotter_close(s);
}
END_TEST

/* An asynchronous Remove of key whose device (id) is held, so the removal
 * stays pending (a reaper pass fails on it); then the device is closed. */
static void remove_pending(ts_snapshotter *s, const char *key, uint32_t id) {
        ts_fakedev_hold(pool, id);
        must(ts_snapshotter_remove(s, NS, key, NULL), key);
        ck_assert_int_eq(kind_of(s, key, NULL), -ENOENT);
        must(ts_snapshotter_cleanup(s, NULL), "cleanup");
        ck_assert(pool->dev[id].exists);
        ts_fakedev_unhold(pool, id);
}

START_TEST(async_removal_settled_by_reuse) {
        ts_snapshotter *s = open_with((opts) { .async = true });
        uint32_t p, c;
        must(prepare(s, "p", NULL, TS_KIND_ACTIVE, NULL), "prepare p");
        must(ts_snapshotter_commit(s, NS, "P", "p", NULL, 0, NULL), "commit p");
        must(prepare(s, "c", "P", TS_KIND_ACTIVE, NULL), "prepare c");
        ck_assert_int_eq(kind_of(s, "P", &p), TS_KIND_COMMITTED);
        ck_assert_int_eq(kind_of(s, "c", &c), TS_KIND_ACTIVE);

        /* The child's removal is pending (its device held); once it is closed,
         * removing the parent finishes the child's removal first. */
        remove_pending(s, "c", c);
        must(ts_snapshotter_remove(s, NS, "P", NULL), "remove P after its child");
        ck_assert(!pool->dev[c].exists);
        ck_assert(gone_soon(p));

        /* A key whose removal is pending can be prepared again at once, and a
         * name whose removal is pending can be committed to. */
        must(prepare(s, "k", NULL, TS_KIND_ACTIVE, NULL), "prepare k");
        uint32_t k;
        ck_assert_int_eq(kind_of(s, "k", &k), TS_KIND_ACTIVE);
        remove_pending(s, "k", k);
        must(prepare(s, "k", NULL, TS_KIND_ACTIVE, NULL), "prepare k again");
        ck_assert_int_eq(kind_of(s, "k", NULL), TS_KIND_ACTIVE);
        /* (a committed device can be held only when it was committed while
         * mounted: released, it stays until its last close) */
        must(prepare(s, "n", NULL, TS_KIND_ACTIVE, NULL), "prepare n");
        uint32_t n;
        ck_assert_int_eq(kind_of(s, "n", &n), TS_KIND_ACTIVE);
        ts_fakedev_hold(pool, n);
        must(ts_snapshotter_commit(s, NS, "N", "n", NULL, 0, NULL), "commit n");
        remove_pending(s, "N", n);
        must(ts_snapshotter_commit(s, NS, "N", "k", NULL, 0, NULL), "commit k as N");
        ck_assert_int_eq(kind_of(s, "N", NULL), TS_KIND_COMMITTED);
        ts_snapshotter_close(s);
}
END_TEST

START_TEST(discard_on_remove) {
        ts_snapshotter *s = open_with((opts) { .discard = true });
        uint32_t a;
        must(prepare(s, "a", NULL, TS_KIND_ACTIVE, NULL), "prepare a");
        ck_assert_int_eq(kind_of(s, "a", &a), TS_KIND_ACTIVE);
        took();
        must(ts_snapshotter_remove(s, NS, "a", NULL), "remove a");
        ck_assert_str_eq(took(), "deactivate 2, drop 2 discard");
        ck_assert_uint_eq(pool->dev[a].discards, 1);
        ts_snapshotter_close(s);
}
END_TEST

/* ---- start-up recovery ---- */

START_TEST(restart_after_a_reboot) {
        ts_snapshotter *s = open_snap();
        must(prepare(s, "a", NULL, TS_KIND_ACTIVE, NULL), "prepare a");
        must(ts_snapshotter_commit(s, NS, "A", "a", NULL, 0, NULL), "commit a");
        must(prepare(s, "v", "A", TS_KIND_VIEW, NULL), "view v");
        must(prepare(s, "b", "A", TS_KIND_ACTIVE, NULL), "prepare b");
        ts_snapshotter_close(s);
        ts_fakedev_reboot(pool);
        took();

        /* Active and view devices come back, committed ones stay inactive. */
        s = open_snap();
        ck_assert_str_eq(took(), "settle 2 inactive, settle 4 active, settle 3 active, deactivate 1, base 1 measure");
        ck_assert(!pool->dev[2].active && pool->dev[3].active && pool->dev[4].active);
        ts_snapshotter_close(s);

        /* A removal left pending by a held device does not keep the daemon
         * down; it is finished once the device is closed. */
        s = open_with((opts) { .async = true });
        ts_fakedev_hold(pool, 4);
        must(ts_snapshotter_remove(s, NS, "b", NULL), "remove b");
        ts_snapshotter_close(s);
        s = open_snap();
        ck_assert(pool->dev[4].exists);
        ck_assert_int_eq(kind_of(s, "b", NULL), -ENOENT);
        ts_snapshotter_close(s);
        ts_fakedev_unhold(pool, 4);
        s = open_snap();
        ck_assert(!pool->dev[4].exists);
        ts_snapshotter_close(s);
}
END_TEST

/* ---- a crash between any two steps ---- */

struct records {
        struct record {
                uint32_t dev;
                int kind, state;
        } v[TS_FAKEDEV_MAX];
        size_t n;
};

static int collect(const ts_store_info *info, void *p) {
        struct records *w = p;
        w->v[w->n++] = (struct record) { info->dev_id, info->kind, info->state };
        return 0;
}

/* With no snapshotter open: every device of the pool belongs to a record of
 * the store (or is the base) and every record's device exists; every record
 * is READY; active and view devices are active, committed ones inactive. */
static void check_consistent(const char *when) {
        ts_store *st = NULL;
        ts_store_options so = { .dev_id_max = TS_FAKEDEV_MAX };
        must(ts_store_open(root, &so, &st, NULL), "open the store");
        ts_store_txn *t = NULL;
        must(ts_store_begin(st, false, &t, NULL), "begin");
        ts_store_base *bases = NULL;
        size_t nb = 0;
        must(ts_store_base_list(t, &bases, &nb, NULL), "bases");
        bool owned[TS_FAKEDEV_MAX + 1] = { false };
        for (size_t i = 0; i < nb; i++) {
                ck_assert_msg(bases[i].formatted, "%s: base %u not formatted", when, bases[i].dev_id);
                owned[bases[i].dev_id] = true;
                ck_assert_msg(!pool->dev[bases[i].dev_id].active, "%s: base active", when);
        }
        free(bases);
        struct records w = { 0 };
        must(ts_store_walk(t, NULL, collect, &w, NULL), "walk");
        ts_store_txn_commit(t, NULL);
        ts_store_close(st);
        for (size_t i = 0; i < w.n; i++) {
                struct record *rec = &w.v[i];
                uint32_t id = rec->dev;
                ck_assert_msg(rec->state == TS_STATE_READY, "%s: record of device %u in state %d", when,
                              id, rec->state);
                ck_assert_msg(pool->dev[id].exists, "%s: record without device %u", when, id);
                ck_assert_msg(pool->dev[id].active == (rec->kind != TS_KIND_COMMITTED),
                              "%s: device %u active=%d for kind %d", when, id, pool->dev[id].active,
                              rec->kind);
                owned[id] = true;
        }
        uint32_t ids[TS_FAKEDEV_MAX];
        size_t n = ts_fakedev_existing(pool, ids);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg(owned[ids[i]], "%s: device %u without a record", when, ids[i]);
}

/* ---- allocation failures ---- */

/* Prepare k, commit it as K, remove K: as far as it goes. */
static void prepare_commit_remove(ts_snapshotter *s, const char *k, const char *K) {
        int r = prepare(s, k, NULL, TS_KIND_ACTIVE, NULL);
        if (r >= 0)
                r = ts_snapshotter_commit(s, NS, K, k, NULL, 0, NULL);
        if (r >= 0)
                (void) ts_snapshotter_remove(s, NS, K, NULL);
}

/* Whatever allocation fails in an operation, its keys are free once it
 * returns: the key locks allocate when taken, never when given back. A key
 * left locked would hang the removals below (the test's timeout). */
START_TEST(allocation_failure_leaves_no_key_locked) {
        ts_snapshotter *s = open_snap();
        unsigned long n = 1;
        for (;; n++) {
                char k[24], K[24];
                snprintf(k, sizeof k, "k%lu", n);
                snprintf(K, sizeof K, "K%lu", n);
                ts_failalloc_arm(n);
                prepare_commit_remove(s, k, K);
                bool fired = ts_failalloc_fired();
                ts_failalloc_arm(0);
                int r = ts_snapshotter_remove(s, NS, K, NULL);
                ck_assert_msg(r == 0 || r == -ENOENT, "allocation %lu failed: remove %s: %s", n, K, strerror(-r));
                r = ts_snapshotter_remove(s, NS, k, NULL);
                ck_assert_msg(r == 0 || r == -ENOENT, "allocation %lu failed: remove %s: %s", n, k, strerror(-r));
                if (!fired)
                        break;
        }
        ck_assert_uint_gt(n, 3); /* lock, operation and unlock of each step were tried */
        ts_snapshotter_close(s);
        check_consistent("after the allocation failures");
}
END_TEST

/* ---- a store that fills ---- */

static int set_intent(ts_store_txn *t, void *p, ts_error **err) {
        int i = *(int *) p;
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        return ts_store_set_state(t, NS, k, i < 2 ? TS_STATE_CREATING : TS_STATE_REMOVING, err);
}

/* Prepares until the store's map, grown to its maximum, refuses new
 * snapshots (RESOURCE_EXHAUSTED, naming the option that raises it); then a
 * restart recovers intents left in the full store, and Remove gets through
 * for every snapshot. */
START_TEST(store_full_then_remove_and_recover) {
        opts o = { .map_size = 64 << 10, .map_max = 1 << 20 };
        ts_snapshotter *s = open_with(o);
        /* 24 KiB of labels in six, each within containerd's 4096 bytes */
        static char big[4000];
        memset(big, 'v', sizeof big - 1);
        ts_label l[] = { { "b0", big }, { "b1", big }, { "b2", big }, { "b3", big }, { "b4", big }, { "b5", big } };
        int n = 0, r = 0;
        _cleanup_error_ ts_error *err = NULL;
        for (; n < TS_FAKEDEV_MAX; n++) {
                char k[16];
                ts_mount m;
                snprintf(k, sizeof k, "k%d", n);
                r = ts_snapshotter_prepare(s, NS, k, NULL, TS_KIND_ACTIVE, l, TS_ARRAY_SIZE(l), &m, &err);
                if (r < 0)
                        break;
        }
        ck_assert_msg(r == -ENOSPC, "prepare k%d: %s", n, ts_error_message(err, r));
        ck_assert_msg(strstr(err->msg, "its maximum of 1024 KiB"), "%s", err->msg);
        ck_assert_ptr_nonnull(strstr(err->msg, "store_map_max"));
        /* 24 KiB records: the 64 KiB map had to grow to hold these */
        ck_assert_int_gt(n, 20);
        ck_assert_int_eq(kind_of(s, "k0", NULL), TS_KIND_ACTIVE);
        ts_snapshotter_close(s);

        /* as if the daemon had died in two Prepares and two Removes */
        ts_store *st = NULL;
        ts_store_options so = { .dev_id_max = TS_FAKEDEV_MAX, .map_size = o.map_size, .map_max = o.map_max };
        must(ts_store_open(root, &so, &st, NULL), "open the store");
        for (int i = 0; i < 4; i++)
                must(ts_store_write(st, set_intent, &i, NULL), "set an intent");
        ts_store_close(st);

        s = open_with(o);
        for (int i = 0; i < 4; i++) {
                char k[16];
                snprintf(k, sizeof k, "k%d", i);
                ck_assert_int_eq(kind_of(s, k, NULL), -ENOENT);
        }
        for (int i = 4; i < n; i++) {
                char k[16];
                snprintf(k, sizeof k, "k%d", i);
                ts_error *e = NULL;
                r = ts_snapshotter_remove(s, NS, k, &e);
                ck_assert_msg(r == 0, "remove %s: %s", k, ts_error_message(e, r));
        }
        ts_snapshotter_close(s);
        check_consistent("after removing everything");
        s = open_with(o);
        must(prepare(s, "again", NULL, TS_KIND_ACTIVE, NULL), "prepare after the removals");
        ts_snapshotter_close(s);
}
END_TEST

typedef struct scenario {
        const char *name;
        opts o;
        bool from_scratch;                 /* the crash may come during the first open */
        void (*before)(ts_snapshotter *s); /* builds the state the operation starts from */
        int (*op)(ts_snapshotter *s);
        /* after the re-open: the operation happened entirely or not at all;
         * finishes it when not */
        void (*after)(ts_snapshotter *s, const char *when);
} scenario;

/* Runs fn (NULL: nothing) in a child process, on a snapshotter opened
 * there with THINSNAPD_FAULT=fault (NULL: unset), and kills the child at
 * device call k (0: never) of the open (at_open) or of fn, before or after
 * the call. Returns true when the child was killed, false when it finished. */
static bool in_child(opts o, const char *fault, unsigned k, bool after, bool at_open,
                     int (*fn)(ts_snapshotter *)) {
        took();
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                if (fault)
                        setenv("THINSNAPD_FAULT", fault, 1);
                pool->n_calls = 0;
                pool->crash_call = at_open ? k : 0;
                pool->crash_after = after;
                ts_snapshotter *s = NULL;
                if (try_open(o, &s, NULL) < 0)
                        _exit(3);
                pool->n_calls = 0;
                pool->crash_call = at_open ? 0 : k;
                int r = fn ? fn(s) : 0;
                ts_snapshotter_close(s);
                _exit(r < 0 ? 4 : 0);
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        pool->crash_call = 0;
        if (WIFSIGNALED(status)) {
                ck_assert_int_eq(WTERMSIG(status), SIGKILL);
                return true;
        }
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exited %d", WEXITSTATUS(status));
        return false;
}

/* Builds the scenario's starting state, then runs its operation in a child
 * killed at device call k (see in_child). */
static bool run_crashing(const scenario *sc, unsigned k, bool after, const char *fault) {
        if (!sc->from_scratch) {
                ts_snapshotter *s = open_with(sc->o);
                if (sc->before)
                        sc->before(s);
                ts_snapshotter_close(s);
        }
        return in_child(sc->o, fault, k, after, sc->from_scratch, sc->op);
}

/* Re-opens after the crash, checks, finishes the operation, checks again. */
static void recover(const scenario *sc, const char *when) {
        ts_snapshotter *s = open_with(sc->o);
        ts_snapshotter_cleanup(s, NULL);
        ts_snapshotter_close(s);
        check_consistent(when);
        s = open_with(sc->o);
        if (sc->after)
                sc->after(s, when);
        ts_snapshotter_close(s);
        check_consistent(when);
}

static void crash_everywhere(const scenario *sc) {
        unsigned crashes = 0;
        for (unsigned k = 1;; k++) {
                bool killed = false;
                for (int after = 0; after <= 1; after++) {
                        reset();
                        char when[96];
                        snprintf(when, sizeof when, "%s, crash %s call %u", sc->name, after ? "after" : "before", k);
                        bool k_killed = run_crashing(sc, k, after, NULL);
                        killed |= k_killed;
                        crashes += k_killed;
                        recover(sc, when);
                }
                if (!killed)
                        break;
        }
        ck_assert_uint_gt(crashes, 0);
}

static void make_parent(ts_snapshotter *s) {
        must(prepare(s, "p", NULL, TS_KIND_ACTIVE, NULL), "prepare p");
        ts_fakedev_write(pool, 2, 8192);
        must(ts_snapshotter_commit(s, NS, "P", "p", NULL, 0, NULL), "commit p");
}

static void make_active(ts_snapshotter *s) {
        make_parent(s);
        must(prepare(s, "x", "P", TS_KIND_ACTIVE, NULL), "prepare x");
}

/* ---- spares ---- */

#define SPARES TS_SNAPSHOTTER_SPARES_LABEL

static int prepare_spared(ts_snapshotter *s, const char *key, const char *value, ts_mount *ret) {
        ts_label l[] = { { (char *) SPARES, (char *) value } };
        ts_mount m;
        return ts_snapshotter_prepare(s, NS, key, "P", TS_KIND_ACTIVE, l, 1, ret ? ret : &m, NULL);
}

static int count_key(const ts_store_info *info, void *p) {
        (void) info;
        (*(int *) p)++;
        return 0;
}

static int visible(ts_snapshotter *s) {
        int n = 0;
        must(ts_snapshotter_walk(s, NS, NULL, NULL, count_key, &n, NULL), "walk");
        return n;
}

/* The keys of the spares in the store (no snapshotter may be open). */
typedef struct keys {
        char v[8][80];
        int n;
} keys;

static int spare_key(const ts_store_info *info, void *p) {
        keys *k = p;
        if (strncmp(info->name, "~spare/", 7) == 0 && k->n < 8)
                snprintf(k->v[k->n++], sizeof k->v[0], "%s", info->name);
        return 0;
}

static keys spare_keys(void) {
        keys k = { .n = 0 };
        ts_store *st = NULL;
        ts_store_options so = { .dev_id_max = TS_FAKEDEV_MAX };
        must(ts_store_open(root, &so, &st, NULL), "open the store");
        ts_store_txn *t = NULL;
        must(ts_store_begin(st, false, &t, NULL), "begin");
        must(ts_store_walk(t, NS, spare_key, &k, NULL), "walk");
        ts_store_txn_abort(t);
        ts_store_close(st);
        return k;
}

static unsigned active_devices(void) {
        unsigned n = 0;
        for (unsigned i = 1; i <= TS_FAKEDEV_MAX; i++)
                n += pool->dev[i].active;
        return n;
}

/* A Prepare asking for spares takes one when there is one, with no device
 * call; the spares stay out of containerd's sight and go with their parent. */
START_TEST(spares_cut_ahead_and_taken) {
        ts_snapshotter *s = open_with((opts) { .spares_max = 8 });
        make_parent(s); /* P: device 2 */
        took();

        ts_mount m;
        must(prepare_spared(s, "vm1", "3", &m), "vm1");
        ck_assert_str_eq(took(), "snap 3 2, activate 3"); /* none yet: cut as usual */
        ts_snapshotter_fill_spares(s);
        ck_assert_str_eq(took(), "snap 4 2, activate 4, snap 5 2, activate 5, snap 6 2, activate 6");
        ck_assert_uint_eq(active_devices(), 4);
        ck_assert_int_eq(visible(s), 2); /* P and vm1 */

        must(prepare_spared(s, "vm2", "3", &m), "vm2");
        ck_assert_str_eq(took(), ""); /* a spare: no device call */
        ck_assert_str_eq(m.source, "/dev/fake/4");
        ts_store_info info;
        must(ts_snapshotter_stat(s, NS, "vm2", &info, NULL), "stat vm2");
        ck_assert_int_eq(info.kind, TS_KIND_ACTIVE);
        ck_assert_str_eq(info.parent, "P");
        ck_assert_str_eq(ts_store_info_label(&info, SPARES), "3");
        ts_store_info_done(&info);
        must(ts_snapshotter_mounts(s, NS, "vm2", &m, NULL), "mounts vm2");
        ck_assert_str_eq(m.source, "/dev/fake/4");
        ts_snapshotter_fill_spares(s); /* back to 3 */
        ck_assert_str_eq(took(), "snap 7 2, activate 7");

        /* without the label: a cut of its own, no spare taken */
        must(prepare(s, "vm3", "P", TS_KIND_ACTIVE, &m), "vm3");
        ck_assert_str_eq(took(), "snap 8 2, activate 8");
        ts_snapshotter_fill_spares(s);
        ck_assert_str_eq(took(), "");

        /* no key of a spare reaches containerd, nor can be made or named */
        ck_assert_int_eq(visible(s), 4);
        ts_snapshotter_close(s);
        keys k = spare_keys();
        ck_assert_int_eq(k.n, 3);
        s = open_with((opts) { .spares_max = 8 });
        took();
        for (int i = 0; i < k.n; i++) {
                const char *sp = k.v[i];
                int64_t size, inodes;
                ts_store_info si;
                ts_label l[] = { { (char *) "x", (char *) "y" } };
                ck_assert_int_eq(ts_snapshotter_stat(s, NS, sp, &si, NULL), -ENOENT);
                ck_assert_int_eq(ts_snapshotter_mounts(s, NS, sp, &m, NULL), -ENOENT);
                ck_assert_int_eq(ts_snapshotter_usage(s, NS, sp, &size, &inodes, NULL), -ENOENT);
                ck_assert_int_eq(ts_snapshotter_update(s, NS, sp, l, 1, NULL, 0, NULL, NULL), -ENOENT);
                ck_assert_int_eq(ts_snapshotter_remove(s, NS, sp, NULL), -ENOENT);
                ck_assert_int_eq(ts_snapshotter_commit(s, NS, "X", sp, NULL, 0, NULL), -ENOENT);
                ck_assert_int_eq(prepare(s, "child", sp, TS_KIND_ACTIVE, NULL), -ENOENT);
                ck_assert_int_eq(prepare(s, sp, "P", TS_KIND_ACTIVE, NULL), -EINVAL);
        }
        ck_assert_int_eq(ts_snapshotter_commit(s, NS, "~spare/y", "vm3", NULL, 0, NULL), -EINVAL);
        ck_assert_str_eq(took(), "");
        ck_assert_uint_eq(active_devices(), 6); /* vm1, vm2, vm3 and the spares */

        /* a committed spare-made snapshot is one like any other */
        must(ts_snapshotter_commit(s, NS, "C", "vm2", NULL, 0, NULL), "commit vm2");
        took();

        /* the parent goes once its own children have: its spares with it */
        ck_assert_int_eq(ts_snapshotter_remove(s, NS, "P", NULL), -ENOTEMPTY);
        must(ts_snapshotter_remove(s, NS, "vm1", NULL), "remove vm1");
        must(ts_snapshotter_remove(s, NS, "C", NULL), "remove C");
        must(ts_snapshotter_remove(s, NS, "vm3", NULL), "remove vm3");
        took();
        must(ts_snapshotter_remove(s, NS, "P", NULL), "remove P");
        ck_assert_str_eq(took(), "drop 5, drop 6, drop 7, deactivate 2, drop 2");
        uint32_t ids[TS_FAKEDEV_MAX];
        ck_assert_uint_eq(ts_fakedev_existing(pool, ids), 1); /* the base */
        ts_snapshotter_close(s);
}
END_TEST

/* A parent's spares are its own: not those of a parent whose id begins with
 * the same digits (P is snapshot 1, Q snapshot 10). */
START_TEST(spares_of_one_parent_only) {
        ts_snapshotter *s = open_with((opts) { .spares_max = 8 });
        make_parent(s); /* P: id 1, device 2 */
        char key[16];
        for (int i = 2; i <= 9; i++) { /* ids 2..9 */
                snprintf(key, sizeof key, "t%d", i);
                must(prepare(s, key, NULL, TS_KIND_ACTIVE, NULL), key);
        }
        must(prepare(s, "q", NULL, TS_KIND_ACTIVE, NULL), "prepare q"); /* id 10 */
        must(ts_snapshotter_commit(s, NS, "Q", "q", NULL, 0, NULL), "commit q");
        ts_label l[] = { { (char *) SPARES, (char *) "2" } };
        ts_mount m;
        must(ts_snapshotter_prepare(s, NS, "onq", "Q", TS_KIND_ACTIVE, l, 1, &m, NULL), "onq");
        ts_snapshotter_fill_spares(s);
        took();
        must(prepare_spared(s, "onp", "1", &m), "onp");
        ck_assert_str_eq(took(), "snap 15 2, activate 15"); /* cut from P: Q's spares are Q's */
        must(ts_snapshotter_prepare(s, NS, "onq2", "Q", TS_KIND_ACTIVE, l, 1, &m, NULL), "onq2");
        ck_assert_str_eq(took(), "");
        ts_snapshotter_close(s);
}
END_TEST

/* Spares survive a restart (activated again after a reboot); bad labels are
 * refused before anything is done; with spares off the label changes nothing. */
START_TEST(spares_restart_and_refusals) {
        ts_snapshotter *s = open_with((opts) { .spares_max = 2 });
        make_parent(s);
        must(prepare_spared(s, "vm1", "5", NULL), "vm1"); /* 5: at most spares_max */
        ts_snapshotter_fill_spares(s);
        ck_assert_uint_eq(active_devices(), 3);
        took();
        ck_assert_int_eq(prepare_spared(s, "vm2", "x", NULL), -EINVAL);
        ck_assert_int_eq(prepare_spared(s, "vm2", "", NULL), -EINVAL);
        ck_assert_int_eq(prepare_spared(s, "vm2", "-1", NULL), -EINVAL);
        ck_assert_int_eq(prepare_spared(s, "vm2", "1025", NULL), -EINVAL);
        ck_assert_str_eq(took(), "");
        ts_snapshotter_close(s);

        ts_fakedev_reboot(pool);
        s = open_with((opts) { .spares_max = 2 });
        ck_assert_uint_eq(active_devices(), 3); /* vm1 and the two spares */
        took();
        ts_mount m;
        must(prepare_spared(s, "vm2", "2", &m), "vm2");
        ck_assert_str_eq(took(), "");
        ts_snapshotter_close(s);

        s = open_snap(); /* spares off: the label is taken as any other */
        took();
        must(prepare_spared(s, "vm3", "2", &m), "vm3");
        ck_assert_str_eq(took(), "snap 6 2, activate 6");
        ts_snapshotter_fill_spares(s);
        ck_assert_str_eq(took(), "");
        ts_snapshotter_close(s);
}
END_TEST

static int op_prepare(ts_snapshotter *s) {
        return prepare(s, "x", "P", TS_KIND_ACTIVE, NULL);
}

static int op_prepare_base(ts_snapshotter *s) {
        return prepare(s, "x", NULL, TS_KIND_ACTIVE, NULL);
}

static int op_view(ts_snapshotter *s) {
        return prepare(s, "x", "P", TS_KIND_VIEW, NULL);
}

static void after_prepare(ts_snapshotter *s, const char *when, ts_snapshot_kind kind, const char *parent) {
        int r = kind_of(s, "x", NULL);
        ck_assert_msg(r == -ENOENT || r == (int) kind, "%s: x is %d", when, r);
        if (r == -ENOENT)
                must(prepare(s, "x", parent, kind, NULL), when);
        ck_assert_int_eq(kind_of(s, "x", NULL), kind);
}

static void after_prepare_active(ts_snapshotter *s, const char *when) {
        after_prepare(s, when, TS_KIND_ACTIVE, "P");
}

static void after_prepare_base(ts_snapshotter *s, const char *when) {
        after_prepare(s, when, TS_KIND_ACTIVE, NULL);
}

static void after_view(ts_snapshotter *s, const char *when) {
        after_prepare(s, when, TS_KIND_VIEW, "P");
}

static int op_commit(ts_snapshotter *s) {
        return ts_snapshotter_commit(s, NS, "X", "x", NULL, 0, NULL);
}

static void after_commit(ts_snapshotter *s, const char *when) {
        int x = kind_of(s, "x", NULL), X = kind_of(s, "X", NULL);
        ck_assert_msg((x == TS_KIND_ACTIVE && X == -ENOENT) || (x == -ENOENT && X == TS_KIND_COMMITTED),
                      "%s: x %d, X %d", when, x, X);
        if (X == -ENOENT)
                must(op_commit(s), when);
        ck_assert_int_eq(kind_of(s, "X", NULL), TS_KIND_COMMITTED);
}

static int op_remove(ts_snapshotter *s) {
        return ts_snapshotter_remove(s, NS, "x", NULL);
}

/* Remove, and the removal the reaper would do next. */
static int op_remove_reaped(ts_snapshotter *s) {
        int r = op_remove(s);
        return r < 0 ? r : ts_snapshotter_cleanup(s, NULL);
}

static void after_remove(ts_snapshotter *s, const char *when) {
        int r = kind_of(s, "x", NULL);
        ck_assert_msg(r == -ENOENT || r == TS_KIND_ACTIVE, "%s: x is %d", when, r);
        if (r != -ENOENT)
                must(op_remove(s), when);
        ck_assert_int_eq(kind_of(s, "x", NULL), -ENOENT);
}

static void after_first_open(ts_snapshotter *s, const char *when) {
        must(prepare(s, "x", NULL, TS_KIND_ACTIVE, NULL), when);
}

/* A Prepare asking for spares, then the filler's cuts. */
static int op_prepare_spares(ts_snapshotter *s) {
        int r = prepare_spared(s, "x", "2", NULL);
        if (r >= 0)
                ts_snapshotter_fill_spares(s);
        return r;
}

/* x is there or not; what a crash left of the spares is handed out, and
 * they are topped up again when a Prepare asks (what was asked is lost). */
static void after_prepare_spares(ts_snapshotter *s, const char *when) {
        int r = kind_of(s, "x", NULL);
        ck_assert_msg(r == -ENOENT || r == TS_KIND_ACTIVE, "%s: x is %d", when, r);
        if (r == -ENOENT)
                must(prepare_spared(s, "x", "2", NULL), when);
        must(prepare_spared(s, "w", "2", NULL), when);
        ts_snapshotter_fill_spares(s);
        ck_assert_msg(active_devices() == 4, "%s: %u devices active, want x, w and 2 spares", when,
                      active_devices());
        took();
        must(prepare_spared(s, "y", "2", NULL), when);
        ck_assert_str_eq(took(), "");
}

static void make_spares(ts_snapshotter *s) {
        make_parent(s);
        must(prepare_spared(s, "x", "2", NULL), "prepare x");
        ts_snapshotter_fill_spares(s);
        must(ts_snapshotter_remove(s, NS, "x", NULL), "remove x");
}

static int op_remove_parent(ts_snapshotter *s) {
        return ts_snapshotter_remove(s, NS, "P", NULL);
}

/* Remove of the parent, and the removals the reaper would do next. */
static int op_remove_parent_reaped(ts_snapshotter *s) {
        int r = op_remove_parent(s);
        return r < 0 ? r : ts_snapshotter_cleanup(s, NULL);
}

static void after_remove_parent(ts_snapshotter *s, const char *when) {
        int r = kind_of(s, "P", NULL);
        ck_assert_msg(r == -ENOENT || r == TS_KIND_COMMITTED, "%s: P is %d", when, r);
        if (r != -ENOENT)
                must(op_remove_parent_reaped(s), when);
        uint32_t ids[TS_FAKEDEV_MAX];
        ck_assert_msg(ts_fakedev_existing(pool, ids) == 1, "%s: devices left besides the base", when);
}

static const scenario scenarios[] = {
        { "first open (the base's format)", { 0 }, true, NULL, NULL, after_first_open },
        { "prepare", { 0 }, false, make_parent, op_prepare, after_prepare_active },
        { "prepare without parent", { 0 }, false, make_parent, op_prepare_base, after_prepare_base },
        { "view", { 0 }, false, make_parent, op_view, after_view },
        { "commit", { 0 }, false, make_active, op_commit, after_commit },
        { "remove", { 0 }, false, make_active, op_remove, after_remove },
        { "remove with discard", { .discard = true }, false, make_active, op_remove, after_remove },
        { "asynchronous remove", { .async = true }, false, make_active, op_remove_reaped, after_remove },
        { "prepare asking for spares, and their cuts", { .spares_max = 4 }, false, make_parent,
          op_prepare_spares, after_prepare_spares },
        { "remove of a parent with spares", { .spares_max = 4 }, false, make_spares, op_remove_parent,
          after_remove_parent },
        { "asynchronous remove of a parent with spares", { .spares_max = 4, .async = true }, false,
          make_spares, op_remove_parent_reaped, after_remove_parent },
};

START_TEST(crash_between_any_two_steps) {
        crash_everywhere(&scenarios[_i]);
}
END_TEST

static int op_prepare_y(ts_snapshotter *s) {
        return prepare(s, "y", "P", TS_KIND_ACTIVE, NULL);
}

/* A crash during start-up recovery itself: the next start finishes it. */
START_TEST(crash_during_recovery) {
        for (unsigned k = 1;; k++) {
                /* A Remove and a Prepare left half done... */
                reset();
                ts_snapshotter *s = open_snap();
                make_active(s);
                ts_snapshotter_close(s);
                ck_assert(in_child((opts) { 0 }, "remove:after-mark", 0, false, false, op_remove));
                ck_assert(in_child((opts) { 0 }, "prepare:after-snap", 0, false, false, op_prepare_y));
                /* ...and the start that finishes them killed at its k-th step. */
                bool killed = in_child((opts) { 0 }, NULL, k, false, true, NULL);
                char when[64];
                snprintf(when, sizeof when, "recovery, crash before call %u", k);
                s = open_snap();
                ck_assert_int_eq(kind_of(s, "x", NULL), -ENOENT);
                ck_assert_int_eq(kind_of(s, "y", NULL), -ENOENT);
                ck_assert_int_eq(kind_of(s, "P", NULL), TS_KIND_COMMITTED);
                ts_snapshotter_close(s);
                check_consistent(when);
                if (!killed)
                        break;
        }
}
END_TEST

/* The named points of THINSNAPD_FAULT, which the VM lane's crash test uses. */
START_TEST(named_fault_points) {
        static const struct {
                const char *fault;
                const scenario *sc;
        } points[] = {
                { "prepare:after-record", &scenarios[1] },  { "prepare:after-snap", &scenarios[1] },
                { "prepare:after-activate", &scenarios[1] }, { "commit:after-deactivate", &scenarios[4] },
                { "remove:after-mark", &scenarios[5] },     { "remove:after-deactivate", &scenarios[5] },
                { "remove:after-delete", &scenarios[5] },
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(points); i++) {
                reset();
                ck_assert_msg(run_crashing(points[i].sc, 0, false, points[i].fault), "%s did not kill",
                              points[i].fault);
                recover(points[i].sc, points[i].fault);
        }
}
END_TEST

static int fail_take(const ts_store_info *infos, size_t n, void *p) {
        (void) infos, (void) n, (void) p;
        return -ECANCELED;
}

/* ts_snapshotter_list: batches bounded by count and by size, every key
 * once in key order, and no read transaction held while a batch is taken:
 * the taker grows the store's map (which waits for every transaction to
 * end) and changes records the walk has not reached yet. */
typedef struct listed {
        ts_snapshotter *s;
        char keys[64][16];
        size_t n, batches, max_batch, writes;
} listed;

static size_t cost(const ts_store_info *info) {
        return strcmp(info->name, "k05") == 0 ? 1000 : 100; /* k05 is over max_bytes */
}

static int take(const ts_store_info *infos, size_t n, void *p) {
        listed *l = p;
        for (size_t i = 0; i < n; i++)
                snprintf(l->keys[l->n++], sizeof l->keys[0], "%s", infos[i].name);
        l->max_batch = n > l->max_batch ? n : l->max_batch;
        if (l->batches++ == 0) {
                static char big[4000];
                memset(big, 'v', sizeof big - 1);
                ts_label lb[] = { { "b0", big }, { "b1", big }, { "b2", big }, { "b3", big } };
                ts_mount m;
                for (int i = 0; i < 8; i++) { /* 128 KiB of labels: the 64 KiB map grows */
                        char k[16];
                        snprintf(k, sizeof k, "z%d", i);
                        must(ts_snapshotter_prepare(l->s, NS, k, NULL, TS_KIND_ACTIVE, lb, 4, &m, NULL), k);
                }
                must(ts_snapshotter_remove(l->s, NS, "k20", NULL), "remove k20");
                must(prepare(l->s, "a00", NULL, TS_KIND_ACTIVE, NULL), "prepare a00");
        }
        return 0;
}

START_TEST(list_in_batches) {
        ts_snapshotter *s = open_with((opts) { .map_size = 64 << 10, .map_max = 4 << 20 });
        for (int i = 0; i < 30; i++) {
                char k[16];
                snprintf(k, sizeof k, "k%02d", i);
                must(prepare(s, k, NULL, TS_KIND_ACTIVE, NULL), k);
        }
        listed l = { .s = s };
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_snapshotter_list(s, NS, NULL, 4, 350, cost, take, &l, &err);
        ck_assert_msg(r == 0, "list: %s", ts_error_message(err, r));
        /* k00..k29 less k20, then z0..z7 (after the cursor); a00 was behind it */
        ck_assert_uint_eq(l.n, 29 + 8);
        for (size_t i = 1; i < l.n; i++)
                ck_assert_int_lt(strcmp(l.keys[i - 1], l.keys[i]), 0);
        ck_assert_str_eq(l.keys[0], "k00");
        ck_assert_str_eq(l.keys[l.n - 1], "z7");
        for (size_t i = 0; i < l.n; i++)
                ck_assert_str_ne(l.keys[i], "k20");
        /* at most 3 records of 100 in 350 bytes; k05 alone */
        ck_assert_uint_eq(l.max_batch, 3);
        ck_assert_str_eq(l.keys[5], "k05");
        ck_assert_uint_ge(l.batches, 13);

        /* a taker's failure ends the list with it */
        ck_assert_int_eq(ts_snapshotter_list(s, NS, NULL, 4, 350, cost, fail_take, NULL, NULL), -ECANCELED);
        ts_snapshotter_close(s);
}
END_TEST

int main(void) {
        ts_log_set_level(TS_LOG_ERROR);
        Suite *s = suite_create("snapshotter");
        TCase *tc = tcase_create("protocol");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, operations_and_their_device_calls);
        tcase_add_test(tc, refusals_touch_no_device);
        tcase_add_test(tc, remove_by_device);
        tcase_add_test(tc, remove_by_device_async);
        tcase_add_test(tc, pool_out_of_space);
        tcase_add_test(tc, busy_devices);
        tcase_add_test(tc, async_removal);
        tcase_add_test(tc, async_removal_settled_by_reuse);
        tcase_add_test(tc, store_full_then_remove_and_recover);
        tcase_add_test(tc, list_in_batches);
        tcase_add_test(tc, discard_on_remove);
        tcase_add_test(tc, restart_after_a_reboot);
        tcase_add_test(tc, allocation_failure_leaves_no_key_locked);
        tcase_add_test(tc, spares_cut_ahead_and_taken);
        tcase_add_test(tc, spares_restart_and_refusals);
        tcase_add_test(tc, spares_of_one_parent_only);
        suite_add_tcase(s, tc);
        TCase *crash = tcase_create("crash");
        tcase_add_checked_fixture(crash, setup, teardown);
        tcase_add_loop_test(crash, crash_between_any_two_steps, 0, (int) TS_ARRAY_SIZE(scenarios));
        tcase_add_test(crash, crash_during_recovery);
        tcase_add_test(crash, named_fault_points);
        suite_add_tcase(s, crash);
        return ts_check_run(s);
}
