/* devmapper/ against the kernel's dm-thin: runs only in the VM lane
 * (tests/vm/run), as root, on loop devices over sparse files in /tmp. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <libdevmapper.h>

#include "common/log.h"
#include "common/strv.h"
#include "devmapper/dm.h"
#include "devmapper/loop.h"
#include "devmapper/pool.h"
#include "devmapper/thin.h"

#define MiB (1024ULL * 1024ULL)

static char dir[64];
static char data_file[96], meta_file[96];
static char *data_loop, *meta_loop;
static char pool_name[32];
static ts_pool *pool;

static void make_file(const char *path, uint64_t size) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(ftruncate(fd, (off_t) size), 0);
        close(fd);
}

static void pool_up(uint64_t data_size, const ts_pool_params *params) {
        snprintf(dir, sizeof dir, "/tmp/tsvm-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(data_file, sizeof data_file, "%s/data", dir);
        snprintf(meta_file, sizeof meta_file, "%s/meta", dir);
        make_file(data_file, data_size);
        make_file(meta_file, 8 * MiB);
        int data_fd, meta_fd;
        ck_assert_int_eq(ts_loop_attach(data_file, TS_LOOP_AUTOCLEAR, &data_loop, &data_fd, NULL), 0);
        ck_assert_int_eq(ts_loop_attach(meta_file, TS_LOOP_AUTOCLEAR, &meta_loop, &meta_fd, NULL), 0);
        ck_assert_str_ne(data_loop, meta_loop);
        snprintf(pool_name, sizeof pool_name, "tsvm%d", getpid());
        ts_error *err = NULL;
        int r = ts_pool_create(pool_name, meta_loop, data_loop, 0, params, &err);
        ck_assert_msg(r == 0, "pool create: %s", ts_error_message(err, r));
        /* From here on the pool holds the loop devices; they go with it. */
        close(data_fd);
        close(meta_fd);
        ck_assert_int_eq(ts_pool_open(pool_name, &pool, NULL), 0);
}

/* Attaches the files again (autoclear) and creates the pool on them. */
static void pool_recreate(const char *data, const ts_pool_params *params) {
        int data_fd, meta_fd;
        free(data_loop);
        free(meta_loop);
        ck_assert_int_eq(ts_loop_attach(data, TS_LOOP_AUTOCLEAR, &data_loop, &data_fd, NULL), 0);
        ck_assert_int_eq(ts_loop_attach(meta_file, TS_LOOP_AUTOCLEAR, &meta_loop, &meta_fd, NULL), 0);
        ts_error *err = NULL;
        int r = ts_pool_create(pool_name, meta_loop, data_loop, 0, params, &err);
        ck_assert_msg(r == 0, "pool create: %s", ts_error_message(err, r));
        close(data_fd);
        close(meta_fd);
        pool = ts_pool_free(pool);
        ck_assert_int_eq(ts_pool_open(pool_name, &pool, NULL), 0);
}

/* True once no loop device backs path. A loop device someone still holds
 * (udev's blkid, on a real host) goes when they close it: wait up to 3 s. */
static bool loop_gone(const char *path) {
        for (int i = 0; i < 300; i++) {
                char *dev = NULL;
                int r = ts_loop_find(path, &dev, NULL);
                free(dev);
                if (r == -ENXIO)
                        return true;
                usleep(10000);
        }
        return false;
}

static void setup(void) {
        ts_pool_params p = { .data_block_sectors = 128 };
        pool_up(256 * MiB, &p);
}

static void teardown(void) {
        ts_error *err = NULL;
        int r = ts_pool_destroy(pool_name, true, &err);
        ck_assert_msg(r == 0, "destroy: %s", ts_error_message(err, r));
        pool = ts_pool_free(pool);
        /* Autoclear: the loop devices went away with the pool. */
        ck_assert(loop_gone(data_file));
        free(data_loop);
        free(meta_loop);
        data_loop = meta_loop = NULL;
        unlink(data_file);
        unlink(meta_file);
        rmdir(dir);
}

static bool node_exists(const char *name) {
        char path[128];
        struct stat st;
        snprintf(path, sizeof path, "/dev/mapper/%s", name);
        return stat(path, &st) == 0 && S_ISBLK(st.st_mode);
}

static void dev_name(char *buf, size_t len, uint32_t id) {
        snprintf(buf, len, "%s-snap-%u", pool_name, id);
}

static void write_pattern(const char *name, off_t off, size_t len, unsigned char seed) {
        char path[128];
        snprintf(path, sizeof path, "/dev/mapper/%s", name);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        unsigned char *buf = malloc(len);
        for (size_t i = 0; i < len; i++)
                buf[i] = (unsigned char) (seed + i * 7);
        ck_assert_int_eq(pwrite(fd, buf, len, off), (ssize_t) len);
        ck_assert_int_eq(fsync(fd), 0);
        free(buf);
        close(fd);
}

static bool has_pattern(const char *name, off_t off, size_t len, unsigned char seed) {
        char path[128];
        snprintf(path, sizeof path, "/dev/mapper/%s", name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        unsigned char *buf = malloc(len);
        ck_assert_int_eq(pread(fd, buf, len, off), (ssize_t) len);
        bool ok = true;
        for (size_t i = 0; i < len && ok; i++)
                ok = buf[i] == (unsigned char) (seed + i * 7);
        free(buf);
        close(fd);
        return ok;
}

START_TEST(loop_attach_find_detach) {
        char path[96];
        snprintf(path, sizeof path, "%s/extra", dir);
        make_file(path, 4 * MiB);
        char *dev = NULL, *found = NULL, *again = NULL;
        bool attached = false;
        ck_assert_int_eq(ts_loop_attach(path, TS_LOOP_DIRECT_IO, &dev, NULL, NULL), 0);
        ck_assert_int_eq(ts_loop_find(path, &found, NULL), 0);
        ck_assert_str_eq(dev, found);
        int fd = -2;
        ck_assert_int_eq(ts_loop_get(path, 0, &again, &fd, &attached, NULL), 0);
        ck_assert_int_eq(fd, -1);
        ck_assert_str_eq(dev, again);
        ck_assert(!attached);
        ck_assert_int_eq(ts_loop_detach(dev, NULL), 0);
        free(found);
        found = NULL;
        ck_assert(loop_gone(path));
        ts_error *err = NULL;
        ck_assert_int_eq(ts_loop_attach("/tmp/does-not-exist", 0, &found, NULL, &err), -ENOENT);
        ck_assert_ptr_nonnull(strstr(err->msg, "/tmp/does-not-exist"));
        ts_error_free(err);
        free(dev);
        free(again);
        unlink(path);
}
END_TEST

START_TEST(pool_open_status) {
        ts_pool_status st;
        ck_assert_int_eq(ts_pool_get_status(pool, &st, NULL), 0);
        ck_assert_uint_eq(st.total_data_blocks, 256 * MiB / (64 * 1024));
        ck_assert_uint_eq(st.used_data_blocks, 0);
        ck_assert_uint_eq(st.total_meta_blocks, 8 * MiB / 4096);
        ck_assert(!st.read_only && !st.needs_check && !st.out_of_data_space);
        ck_assert_uint_eq(pool->params.data_block_sectors, 128);
        ck_assert_uint_eq(pool->data_sectors, 256 * MiB / 512);

        ts_pool *none = NULL;
        ts_error *err = NULL;
        ck_assert_int_eq(ts_pool_open("tsvm-nope", &none, &err), -ENXIO);
        ck_assert_ptr_nonnull(strstr(err->msg, "does not exist"));
        ts_error_free(err);
}
END_TEST

START_TEST(thin_lifecycle) {
        char a[64], b[64];
        dev_name(a, sizeof a, 1);
        dev_name(b, sizeof b, 2);
        ck_assert_int_eq(ts_thin_create(pool, 1, NULL), 0);
        ck_assert_int_eq(ts_thin_activate(pool, a, 1, 64 * MiB, 0, NULL), 0);
        ck_assert(node_exists(a));
        write_pattern(a, 1 * MiB, 1 * MiB, 3);
        ts_thin_status ts;
        ck_assert_int_eq(ts_thin_get_status(a, &ts, NULL), 0);
        ck_assert_uint_ge(ts.mapped_sectors, 2048);

        /* Snapshot of an active origin: suspended around it, resumed after. */
        ck_assert_int_eq(ts_thin_snap(pool, 2, 1, a, NULL), 0);
        ts_dm_info info;
        ck_assert_int_eq(ts_dm_info_get(a, &info, NULL), 0);
        ck_assert(info.exists && !info.suspended);
        ck_assert_int_eq(ts_thin_activate(pool, b, 2, 64 * MiB, 0, NULL), 0);
        ck_assert(has_pattern(b, 1 * MiB, 1 * MiB, 3));
        write_pattern(b, 1 * MiB, 4096, 9);
        ck_assert(has_pattern(a, 1 * MiB, 1 * MiB, 3)); /* copy on write */

        ck_assert_int_eq(ts_thin_deactivate(a, 0, NULL), 0);
        ck_assert(!node_exists(a));
        ck_assert_int_eq(ts_thin_deactivate(a, 0, NULL), 0); /* gone counts as done */
        ck_assert_int_eq(ts_thin_deactivate(b, 0, NULL), 0);
        ck_assert_int_eq(ts_thin_delete(pool, 2, NULL), 0);
        ck_assert_int_eq(ts_thin_delete(pool, 1, NULL), 0);
        ck_assert_int_eq(ts_thin_delete(pool, 1, NULL), 0); /* ENODATA: done */
        ck_assert_int_eq(ts_thin_create(pool, 1, NULL), 0);
        ck_assert_int_eq(ts_thin_delete(pool, 1, NULL), 0);
}
END_TEST

/* Devices activated and removed by many threads at once (thinsnapd's
 * handlers in a burst of Prepares or teardowns): each node names its own
 * device (root:disk 0660 when thinsnap makes it, without udev; a stale node
 * or a symlink left at its path is replaced) and is gone after the
 * removal. */
#define SIDE_BY_SIDE 12

/* Without udev, what a crash or an operator may leave at a device's path:
 * a node of another device (odd ids) or a symlink (even ids). */
static void leave_stale_node(uint32_t id, const char *path) {
        if (getenv("TS_EXPECT_UDEV"))
                return;
        if (id % 2)
                ck_assert_int_eq(mknod(path, S_IFBLK | 0600, makedev(7, 250)), 0);
        else
                ck_assert_int_eq(symlink("/dev/null", path), 0);
}

static void *activate_check_remove(void *arg) {
        uint32_t id = (uint32_t) (uintptr_t) arg;
        char name[64], path[128];
        dev_name(name, sizeof name, id);
        snprintf(path, sizeof path, "/dev/mapper/%s", name);
        leave_stale_node(id, path);
        for (int round = 0; round < 3; round++) {
                ck_assert_int_eq(ts_thin_activate(pool, name, id, 16 * MiB, 0, NULL), 0);
                ts_dm_info info;
                struct stat st;
                ck_assert_int_eq(ts_dm_info_get(name, &info, NULL), 0);
                ck_assert_int_eq(getenv("TS_EXPECT_UDEV") ? stat(path, &st) : lstat(path, &st), 0);
                ck_assert(S_ISBLK(st.st_mode));
                ck_assert_uint_eq(major(st.st_rdev), info.major);
                ck_assert_uint_eq(minor(st.st_rdev), info.minor);
                if (!getenv("TS_EXPECT_UDEV")) {
                        struct group *disk = getgrnam("disk");
                        ck_assert_uint_eq(st.st_mode & 07777, 0660);
                        ck_assert_uint_eq(st.st_uid, 0);
                        ck_assert_uint_eq(st.st_gid, disk ? disk->gr_gid : 0);
                }
                ck_assert_int_eq(ts_thin_deactivate(name, 0, NULL), 0);
                ck_assert(!node_exists(name));
        }
        return NULL;
}

START_TEST(activate_remove_side_by_side) {
        pthread_t t[SIDE_BY_SIDE];
        for (uint32_t i = 0; i < SIDE_BY_SIDE; i++)
                ck_assert_int_eq(ts_thin_create(pool, 100 + i, NULL), 0);
        for (uint32_t i = 0; i < SIDE_BY_SIDE; i++)
                ck_assert_int_eq(pthread_create(&t[i], NULL, activate_check_remove,
                                                (void *) (uintptr_t) (100 + i)),
                                 0);
        for (uint32_t i = 0; i < SIDE_BY_SIDE; i++)
                pthread_join(t[i], NULL);
        for (uint32_t i = 0; i < SIDE_BY_SIDE; i++)
                ck_assert_int_eq(ts_thin_delete(pool, 100 + i, NULL), 0);
        /* No node was left half made under a name of its own. */
        DIR *d = opendir("/dev/mapper");
        ck_assert_ptr_nonnull(d);
        for (struct dirent *de; (de = readdir(d));)
                ck_assert_msg(de->d_name[0] != '.' || strcmp(de->d_name, ".") == 0 ||
                                      strcmp(de->d_name, "..") == 0,
                              "left in /dev/mapper: %s", de->d_name);
        closedir(d);
        /* A device that is not there: ENXIO, as the kernel says. */
        ck_assert_int_eq(ts_dm_remove("thinsnap-test-not-there", 0, NULL), -ENXIO);
}
END_TEST

START_TEST(snap_of_inactive_origin) {
        char a[64], b[64];
        dev_name(a, sizeof a, 10);
        dev_name(b, sizeof b, 11);
        ck_assert_int_eq(ts_thin_create(pool, 10, NULL), 0);
        ck_assert_int_eq(ts_thin_activate(pool, a, 10, 16 * MiB, 0, NULL), 0);
        write_pattern(a, 0, 256 * 1024, 5);
        ck_assert_int_eq(ts_thin_deactivate(a, 0, NULL), 0);
        ck_assert_int_eq(ts_thin_snap(pool, 11, 10, a, NULL), 0);
        ck_assert(!node_exists(a)); /* an inactive origin stays inactive */
        ck_assert_int_eq(ts_thin_activate(pool, b, 11, 16 * MiB, TS_THIN_READ_ONLY, NULL), 0);
        ck_assert(has_pattern(b, 0, 256 * 1024, 5));
        ts_dm_info info;
        ck_assert_int_eq(ts_dm_info_get(b, &info, NULL), 0);
        ck_assert(info.read_only);
        ck_assert_int_eq(ts_thin_deactivate(b, 0, NULL), 0);
}
END_TEST

START_TEST(thin_errors) {
        char a[64];
        dev_name(a, sizeof a, 20);
        ts_error *err = NULL;
        ck_assert_int_eq(ts_thin_create(pool, 20, NULL), 0);
        ck_assert_int_eq(ts_thin_create(pool, 20, &err), -EEXIST);
        ck_assert_msg(strstr(err->msg, "create_thin 20") && strstr(err->msg, pool_name), "%s",
                      err->msg);
        err = ts_error_free(err);

        ck_assert_int_eq(ts_thin_snap(pool, 21, 999, NULL, &err), -ENODATA);
        ck_assert_ptr_nonnull(strstr(err->msg, "create_snap 21 999"));
        err = ts_error_free(err);

        ck_assert_int_eq(ts_thin_create(pool, TS_THIN_MAX_ID + 1, &err), -ERANGE);
        err = ts_error_free(err);

        ck_assert_int_eq(ts_thin_activate(pool, a, 20, 8 * MiB, 0, NULL), 0);
        ck_assert_int_eq(ts_thin_activate(pool, a, 20, 8 * MiB, 0, &err), -EEXIST);
        err = ts_error_free(err);
        ck_assert_int_eq(ts_thin_activate(pool, a, 20, 1000, 0, &err), -EINVAL);
        err = ts_error_free(err);

        /* Deleting an active thin device is refused by the kernel. */
        ck_assert_int_eq(ts_thin_delete(pool, 20, &err), -EBUSY);
        ck_assert_ptr_nonnull(strstr(err->msg, "delete 20"));
        err = ts_error_free(err);

        /* The pool refuses to be destroyed while a thin device is active. */
        ck_assert_int_eq(ts_pool_destroy(pool_name, false, &err), -EBUSY);
        ck_assert_ptr_nonnull(strstr(err->msg, a));
        err = ts_error_free(err);

        /* A thin device is not a pool. */
        ts_pool *notpool = NULL;
        ck_assert_int_eq(ts_pool_open(a, &notpool, &err), -EMEDIUMTYPE);
        err = ts_error_free(err);

        /* Activation of an id that does not exist leaves no device behind. */
        char b[64];
        dev_name(b, sizeof b, 22);
        ck_assert_int_lt(ts_thin_activate(pool, b, 22, 8 * MiB, 0, &err), 0);
        err = ts_error_free(err);
        ts_dm_info info;
        ck_assert_int_eq(ts_dm_info_get(b, &info, NULL), 0);
        ck_assert(!info.exists);
        ck_assert_int_eq(ts_thin_deactivate(a, 0, NULL), 0);
}
END_TEST

/* What ts_thin_probe saw at each step of an activation. */
struct steps {
        const char *name;
        uint32_t id;
        char seen[2][16];
        ts_thin_found at[2];
        int n;
};

static void probe_step(void *p, const char *step) {
        struct steps *s = p;
        ck_assert_int_lt(s->n, 2);
        snprintf(s->seen[s->n], sizeof s->seen[0], "%s", step);
        ck_assert_int_eq(ts_thin_probe(pool, s->name, s->id, &s->at[s->n], NULL), 0);
        s->n++;
}

/* ts_thin_probe tells a usable thin device of the pool from one a process
 * killed while making it leaves (no table, a table not live, suspended, no
 * node), and refuses a device of the name that is anything else. */
START_TEST(thin_probe_states) {
        char a[64];
        dev_name(a, sizeof a, 30);
        ts_thin_found f;
        ck_assert_int_eq(ts_thin_probe(pool, a, 30, &f, NULL), 0);
        ck_assert(!f.exists && !f.usable);

        ck_assert_int_eq(ts_thin_create(pool, 30, NULL), 0);
        struct steps st = { .name = a, .id = 30 };
        ck_assert_int_eq(ts_thin_activate_stepped(pool, a, 30, 8 * MiB, 0, probe_step, &st, NULL), 0);
        ck_assert_int_eq(st.n, 2);
        ck_assert_str_eq(st.seen[0], "create");
        ck_assert(st.at[0].exists && !st.at[0].live_table && !st.at[0].usable);
        ck_assert_str_eq(st.seen[1], "load");
        ck_assert(st.at[1].exists && !st.at[1].live_table && !st.at[1].usable);
        ck_assert_int_eq(ts_thin_probe(pool, a, 30, &f, NULL), 0);
        ck_assert(f.exists && f.live_table && f.usable && !f.suspended);

        ck_assert_int_eq(ts_dm_suspend(a, NULL), 0);
        ck_assert_int_eq(ts_thin_probe(pool, a, 30, &f, NULL), 0);
        ck_assert(f.exists && f.suspended && !f.usable);
        ck_assert_int_eq(ts_dm_resume(a, NULL), 0);

        char node[128];
        snprintf(node, sizeof node, "/dev/mapper/%s", a);
        ck_assert_int_eq(unlink(node), 0);
        ck_assert_int_eq(ts_thin_probe(pool, a, 30, &f, NULL), 0);
        ck_assert(f.exists && f.live_table && !f.usable);

        /* Another id of the pool under this id's name is not this device. */
        ts_error *err = NULL;
        ck_assert_int_eq(ts_thin_probe(pool, a, 31, &f, &err), -EMEDIUMTYPE);
        ck_assert_msg(strstr(err->msg, "is not thin device 31 of pool"), "%s", err->msg);
        err = ts_error_free(err);
        ck_assert_int_eq(ts_thin_deactivate(a, 0, NULL), 0);

        /* Nor is any other target. */
        ck_assert_int_eq(ts_dm_create(a, NULL, 8, "zero", "", false, NULL), 0);
        ck_assert_int_eq(ts_thin_probe(pool, a, 30, &f, &err), -EMEDIUMTYPE);
        ck_assert_msg(strstr(err->msg, "(its table: zero )"), "%s", err->msg);
        err = ts_error_free(err);
        ck_assert_int_eq(ts_dm_remove(a, 0, NULL), 0);
        ck_assert_int_eq(ts_thin_delete(pool, 30, NULL), 0);
}
END_TEST

struct closer {
        int fd;
        int ms;
};

static void *close_later(void *arg) {
        struct closer *c = arg;
        struct timespec ts = { 0, c->ms * 1000000L };
        nanosleep(&ts, NULL);
        close(c->fd);
        return NULL;
}

START_TEST(deactivate_busy) {
        char a[64], path[96];
        dev_name(a, sizeof a, 30);
        snprintf(path, sizeof path, "/dev/mapper/%s", a);
        ck_assert_int_eq(ts_thin_create(pool, 30, NULL), 0);
        ck_assert_int_eq(ts_thin_activate(pool, a, 30, 8 * MiB, 0, NULL), 0);

        /* Held open the whole time: bounded retries, then EBUSY, device kept. */
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ts_error *err = NULL;
        ck_assert_int_eq(ts_thin_deactivate(a, 0, &err), -EBUSY);
        ck_assert_ptr_nonnull(strstr(err->msg, a));
        err = ts_error_free(err);
        ck_assert(node_exists(a));

        /* Released during the retries: the deactivate succeeds. */
        struct closer c = { fd, 100 };
        pthread_t t;
        pthread_create(&t, NULL, close_later, &c);
        ck_assert_int_eq(ts_thin_deactivate(a, 0, NULL), 0);
        pthread_join(t, NULL);
        ck_assert(!node_exists(a));

        /* Deferred: returns at once, the device goes with its last user. */
        ck_assert_int_eq(ts_thin_activate(pool, a, 30, 8 * MiB, 0, NULL), 0);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(ts_thin_deactivate(a, TS_THIN_DEFERRED, NULL), 0);
        ts_dm_info info;
        ck_assert_int_eq(ts_dm_info_get(a, &info, NULL), 0);
        ck_assert(info.exists);
        close(fd);
        /* The kernel removes it from a work queue after the last close. */
        for (int i = 0; i < 200; i++) {
                ck_assert_int_eq(ts_dm_info_get(a, &info, NULL), 0);
                if (!info.exists)
                        break;
                usleep(10000);
        }
        ck_assert(!info.exists);
        /* The kernel drops its hold on the thin device just after. */
        int r = -EBUSY;
        for (int i = 0; i < 200 && r == -EBUSY; i++) {
                r = ts_thin_delete(pool, 30, NULL);
                if (r == -EBUSY)
                        usleep(10000);
        }
        ck_assert_int_eq(r, 0);
}
END_TEST

START_TEST(destroy_force_takes_thins_down) {
        char a[64];
        dev_name(a, sizeof a, 40);
        ck_assert_int_eq(ts_thin_create(pool, 40, NULL), 0);
        ck_assert_int_eq(ts_thin_activate(pool, a, 40, 8 * MiB, 0, NULL), 0);
        char **users = NULL;
        ck_assert_int_eq(ts_pool_active_devices(pool, &users, NULL), 0);
        ck_assert_uint_eq(ts_strv_length(users), 1);
        ck_assert_str_eq(users[0], a);
        ts_strv_free(users);
        /* teardown destroys with force; check the thin device went too */
        ts_error *err = NULL;
        ck_assert_int_eq(ts_pool_destroy(pool_name, true, &err), 0);
        ck_assert(!node_exists(a));
        /* The loop devices went with the pool (autoclear). Set it up again on
         * the same files: the thin device survives in the metadata. */
        ck_assert(loop_gone(meta_file));
        ts_pool_params p = pool->params;
        pool_recreate(data_file, &p);
        ts_error *err2 = NULL;
        int r = ts_thin_create(pool, 40, &err2);
        ck_assert_msg(r == -EEXIST, "create_thin 40 again: %s", ts_error_message(err2, r));
        ts_error_free(err2);
}
END_TEST

START_TEST(pool_create_errors) {
        ts_error *err = NULL;
        ts_pool_params p = { .data_block_sectors = 128 };
        /* The name is taken. */
        ck_assert_int_eq(ts_pool_create(pool_name, meta_loop, data_loop, 0, &p, &err), -EEXIST);
        err = ts_error_free(err);
        /* Devices held by the running pool are in use. */
        ck_assert_int_eq(ts_pool_create("tsvm-other", meta_loop, data_loop, 0, &p, &err), -EBUSY);
        ck_assert_ptr_nonnull(strstr(err->msg, "in use"));
        err = ts_error_free(err);
        /* Not block devices. */
        ck_assert_int_eq(ts_pool_create("tsvm-other", meta_file, data_file, 0, &p, &err), -ENOTBLK);
        err = ts_error_free(err);
        /* Metadata too small, and the same device twice. */
        char small[96];
        snprintf(small, sizeof small, "%s/small", dir);
        make_file(small, 1 * MiB);
        char *small_loop = NULL, *other_loop = NULL;
        char other[96];
        snprintf(other, sizeof other, "%s/other", dir);
        make_file(other, 64 * MiB);
        ck_assert_int_eq(ts_loop_attach(small, 0, &small_loop, NULL, NULL), 0);
        ck_assert_int_eq(ts_loop_attach(other, 0, &other_loop, NULL, NULL), 0);
        ck_assert_int_eq(ts_pool_create("tsvm-other", small_loop, other_loop, 0, &p, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "2 MiB"));
        err = ts_error_free(err);
        ck_assert_int_eq(ts_pool_create("tsvm-other", other_loop, other_loop, 0, &p, &err), -EINVAL);
        err = ts_error_free(err);
        p.data_block_sectors = 100;
        ck_assert_int_eq(ts_pool_create("tsvm-other", small_loop, other_loop, 0, &p, &err), -EINVAL);
        err = ts_error_free(err);
        ts_dm_info info;
        ck_assert_int_eq(ts_dm_info_get("tsvm-other", &info, NULL), 0);
        ck_assert(!info.exists);
        ts_loop_detach(small_loop, NULL);
        ts_loop_detach(other_loop, NULL);
        free(small_loop);
        free(other_loop);
        unlink(small);
        unlink(other);
}
END_TEST

START_TEST(out_of_data_space) {
        /* A 1 MiB pool (16 blocks) that errors when full. */
        ts_error *err = NULL;
        ck_assert_int_eq(ts_pool_destroy(pool_name, true, &err), 0);
        make_file(meta_file, 8 * MiB); /* fresh metadata */
        ts_pool_params p = { .data_block_sectors = 128, .error_if_no_space = true };
        char small[96];
        snprintf(small, sizeof small, "%s/small-data", dir);
        make_file(small, 1 * MiB);
        pool_recreate(small, &p);
        char a[64], path[96];
        dev_name(a, sizeof a, 1);
        snprintf(path, sizeof path, "/dev/mapper/%s", a);
        ck_assert_int_eq(ts_thin_create(pool, 1, NULL), 0);
        ck_assert_int_eq(ts_thin_activate(pool, a, 1, 8 * MiB, 0, NULL), 0);
        int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        void *buf;
        ck_assert_int_eq(posix_memalign(&buf, 4096, MiB), 0);
        memset(buf, 0xab, MiB);
        bool failed = false;
        for (int i = 0; i < 4 && !failed; i++)
                failed = pwrite(fd, buf, MiB, (off_t) i * (off_t) MiB) != (ssize_t) MiB;
        ck_assert(failed);
        close(fd);
        free(buf);
        ts_pool_status st;
        ck_assert_int_eq(ts_pool_get_status(pool, &st, NULL), 0);
        ck_assert(st.out_of_data_space);
        ck_assert_uint_eq(st.used_data_blocks, st.total_data_blocks);
        ck_assert_int_eq(ts_thin_deactivate(a, 0, NULL), 0);
        /* teardown destroys this pool; the small loop goes with it */
        unlink(small);
}
END_TEST

START_TEST(no_device_mapper_message) {
        /* Available here; the check must say so. */
        ck_assert_int_eq(ts_dm_check_available(NULL), 0);
}
END_TEST

START_TEST(udev_mode) {
        /* Run under tests/vm/devmapper/with-udev.sh, libdevmapper must be
         * synchronising with udev (the node checks above then prove that
         * udev's rules made the nodes before our calls returned); run bare,
         * it must not be. */
        ts_dm_init();
        bool want = getenv("TS_EXPECT_UDEV") != NULL;
        ck_assert_int_eq(dm_udev_get_sync_support() != 0, want);
}
END_TEST

int main(void) {
        /* The library must manage without udev by itself. */
        unsetenv("DM_DISABLE_UDEV");
        enum ts_log_level level;
        if (ts_log_parse_level(getenv("TS_LOG_LEVEL"), &level) == 0)
                ts_log_set_level(level);
        Suite *s = suite_create("vm-devmapper");
        TCase *tc = tcase_create("kernel");
        tcase_set_timeout(tc, 120);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, loop_attach_find_detach);
        tcase_add_test(tc, pool_open_status);
        tcase_add_test(tc, thin_lifecycle);
        tcase_add_test(tc, activate_remove_side_by_side);
        tcase_add_test(tc, snap_of_inactive_origin);
        tcase_add_test(tc, thin_errors);
        tcase_add_test(tc, thin_probe_states);
        tcase_add_test(tc, deactivate_busy);
        tcase_add_test(tc, destroy_force_takes_thins_down);
        tcase_add_test(tc, pool_create_errors);
        tcase_add_test(tc, out_of_data_space);
        tcase_add_test(tc, no_device_mapper_message);
        tcase_add_test(tc, udev_mode);
        suite_add_tcase(s, tc);
        SRunner *sr = srunner_create(s);
        srunner_run_all(sr, CK_VERBOSE);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
