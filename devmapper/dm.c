#include "dm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <libdevmapper.h>
#include <linux/dm-ioctl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct dm_task *, dm_task_destroy)
#define _cleanup_dm_task_ _cleanup_(dm_task_destroyp)

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* libdevmapper keeps one process-wide list of pending device-node
 * operations; tasks that add or remove nodes through it must not
 * interleave. Messages, status and info queries do not touch it and run
 * unlocked, and so do resumes and removals without udev (node_add,
 * node_del below). */
static pthread_mutex_t node_lock = PTHREAD_MUTEX_INITIALIZER;

/* Nodes as Debian and Fedora build libdevmapper to make them (and as udev
 * makes block devices): root:disk, 0660. Upstream's default is root, 0600. */
#define NODE_MODE 0660
static pthread_once_t disk_once = PTHREAD_ONCE_INIT;
static gid_t disk_gid_value;

/* Whether libdevmapper synchronises with udev: asked once, at the first
 * task that makes or removes a node. Not at ts_dm_init: libdevmapper asks
 * the kernel for that (its version check), and on a kernel without
 * device-mapper it would make /dev/mapper/control on the way. */
static pthread_once_t udev_once = PTHREAD_ONCE_INIT;
static bool udev_sync;

static void udev_decide(void) {
        udev_sync = dm_udev_get_sync_support() != 0;
}

static bool udev_synced(void) {
        ts_dm_init();
        pthread_once(&udev_once, udev_decide);
        return udev_sync;
}

_printf_(5, 6) static void dm_log_cb(int level, const char *file, int line, int dm_errno_or_class,
                      const char *f, ...) {
        if (ts_log_get_level() < TS_LOG_DEBUG)
                return;
        char buf[512];
        va_list ap;
        va_start(ap, f);
        vsnprintf(buf, sizeof(buf), f, ap);
        va_end(ap);
        log_debug("libdevmapper: %s", buf);
}

static void do_init(void) {
        dm_log_with_errno_init(dm_log_cb);
        /* Without a running udev, waiting on a udev cookie would hang or time
         * out; the nodes are made without it (see "nodes without udev"). */
        if (access("/run/udev/control", F_OK) != 0)
                dm_udev_set_sync_support(0);
}

void ts_dm_init(void) {
        pthread_once(&init_once, do_init);
}

static int task_new(int type, const char *name, struct dm_task **ret, const char *op,
                    ts_error **err) {
        ts_dm_init();
        struct dm_task *dmt = dm_task_create(type);
        if (!dmt)
                return ts_error_set(err, ENOMEM, "%s %s", op, name ? name : "");
        if (name && !dm_task_set_name(dmt, name)) {
                dm_task_destroy(dmt);
                return ts_error_set(err, EINVAL, "%s: invalid device name '%s'", op, name);
        }
        *ret = dmt;
        return 0;
}

/* The one libdevmapper adapter: a task's 1/0 result -> 0 or the kernel's
 * -errno (-EIO when libdevmapper failed before asking the kernel). Its own
 * text goes to our log (dm_log_cb); callers name the operation in err. */
static int task_result(struct dm_task *dmt, int ok) {
        if (ok)
                return 0;
        int e = dm_task_get_errno(dmt);
        return -(e > 0 ? e : EIO);
}

/* Runs a task. With node_change, the device node exists (or is gone) when
 * this returns: through udev when it runs, by libdevmapper otherwise. */
static int task_run(struct dm_task *dmt, bool node_change) {
        if (!node_change)
                return task_result(dmt, dm_task_run(dmt));

        pthread_mutex_lock(&node_lock);
        uint32_t cookie = 0;
        bool use_cookie = udev_synced() && dm_task_set_cookie(dmt, &cookie, 0);
        int r = task_result(dmt, dm_task_run(dmt));
        if (use_cookie)
                (void) dm_udev_wait(cookie);
        else
                dm_task_update_nodes();
        pthread_mutex_unlock(&node_lock);
        return r;
}

/* ---- nodes without udev ----
 *
 * Without udev, libdevmapper would make and unlink the nodes itself, through
 * its one list under node_lock. Measured in the VM lane, that lock put a
 * burst of activations or removals in a row: 50 thin removals took 2 s one
 * after another, against about 0.2 s side by side. So without udev a resume
 * leaves libdevmapper no node operation (it adds a node only with
 * DM_ADD_NODE_ON_RESUME, and a read-ahead only when one is set), a removal
 * is one DM_DEV_REMOVE ioctl of our own (libdevmapper's removal by name
 * always queues the unlink, and one by device number could remove another
 * device that took the number of one gone meanwhile), and the node is made
 * or unlinked here, by the calling thread. */

static bool nodes_here(void) {
        return !udev_synced();
}

static void disk_gid_lookup(void) {
        long size = sysconf(_SC_GETGR_R_SIZE_MAX);
        size_t n = size > 0 ? (size_t) size : 16384;
        _cleanup_free_ char *buf = malloc(n);
        struct group g, *found = NULL;
        if (buf && getgrnam_r("disk", &g, buf, n, &found) == 0 && found)
                disk_gid_value = found->gr_gid;
}

static int node_path(const char *name, char path[static PATH_MAX]) {
        int n = snprintf(path, PATH_MAX, "%s/%s", dm_dir(), name);
        return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* /dev/mapper/<name> as the block device major:minor: kept when it is that
 * device already (a symlink to it too), else made under a name of its own
 * and renamed over whatever is there, so the path is never missing and no
 * symlink is followed. */
static int node_add(const char *name, uint32_t major, uint32_t minor) {
        char path[PATH_MAX], tmp[PATH_MAX];
        int r = node_path(name, path);
        if (r < 0)
                return r;
        dev_t dev = makedev(major, minor);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == dev)
                return 0;
        int n = snprintf(tmp, sizeof tmp, "%s/.%s.%ld", dm_dir(), name, (long) gettid());
        if (n < 0 || n >= (int) sizeof tmp)
                return -ENAMETOOLONG;
        pthread_once(&disk_once, disk_gid_lookup);
        (void) unlink(tmp); /* left by a process killed here */
        if (mknod(tmp, S_IFBLK | NODE_MODE, dev) < 0)
                return -errno;
        if (chown(tmp, 0, disk_gid_value) < 0 || chmod(tmp, NODE_MODE) < 0 || rename(tmp, path) < 0) {
                r = -errno;
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

static int node_del(const char *name) {
        char path[PATH_MAX];
        int r = node_path(name, path);
        if (r < 0)
                return r;
        return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

/* Resumes `name` and makes its node. */
static int resume_here(const char *name, ts_error **err) {
        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        int r = task_new(DM_DEVICE_RESUME, name, &dmt, "resume", err);
        if (r < 0)
                return r;
        if (!dm_task_set_add_node(dmt, DM_ADD_NODE_ON_CREATE))
                return ts_error_set(err, ENOMEM, "resume %s", name);
        r = task_run(dmt, false);
        if (r < 0)
                return ts_error_set(err, r, "resume %s", name);
        struct dm_info info;
        if (!dm_task_get_info(dmt, &info) || !info.exists)
                return ts_error_setf_plain(err, EIO, "resume %s: no device number in the answer", name);
        r = node_add(name, info.major, info.minor);
        return r < 0 ? ts_error_set(err, r, "resume %s: make its node", name) : 0;
}

/* DM_DEV_REMOVE of `name` (the kernel finds it by name, atomically), then
 * its node unlinked. The kernel's answers: -ENXIO, -EBUSY... */
static int remove_here(const char *name, unsigned flags, ts_error **err) {
        struct dm_ioctl io = {
                .version = { DM_VERSION_MAJOR, 0, 0 },
                .data_size = sizeof io,
                .data_start = sizeof io,
                .flags = (flags & TS_DM_REMOVE_DEFERRED) ? DM_DEFERRED_REMOVE : 0,
        };
        if (strlen(name) >= sizeof io.name)
                return ts_error_setf_plain(err, EINVAL, "remove: invalid device name '%s'", name);
        strcpy(io.name, name);
        char control[PATH_MAX];
        if (snprintf(control, sizeof control, "%s/control", dm_dir()) >= (int) sizeof control)
                return ts_error_setf_plain(err, ENAMETOOLONG, "remove %s: %s/control", name, dm_dir());
        _cleanup_close_ int fd = open(control, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return ts_error_set(err, errno, "remove %s: open %s", name, control);
        if (ioctl(fd, DM_DEV_REMOVE, &io) < 0)
                return ts_error_set(err, errno, "remove %s", name);
        int r = node_del(name);
        return r < 0 ? ts_error_set(err, r, "remove %s: unlink its node", name) : 0;
}

int ts_dm_check_available(ts_error **err) {
        if (access("/dev/mapper/control", F_OK) != 0) {
                if (errno == EACCES)
                        return ts_error_set(err, EACCES, "device-mapper: /dev/mapper/control");
                return ts_error_setf_plain(err, ENODEV,
                                           "device-mapper is not available: /dev/mapper/control "
                                           "is missing (load dm_mod and dm_thin_pool)");
        }
        int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                int e = errno;
                if (e == EACCES || e == EPERM)
                        return ts_error_set(err, e, "device-mapper: opening /dev/mapper/control "
                                                    "needs root (CAP_SYS_ADMIN)");
                return ts_error_set(err, e, "device-mapper: opening /dev/mapper/control");
        }
        close(fd);

        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        int r = task_new(DM_DEVICE_LIST_VERSIONS, NULL, &dmt, "list targets", err);
        if (r < 0)
                return r;
        r = task_run(dmt, false);
        if (r < 0)
                return ts_error_set(err, r, "device-mapper: listing targets");
        struct dm_versions *v = dm_task_get_versions(dmt);
        for (;;) {
                if (!v)
                        break;
                if (strcmp(v->name, "thin-pool") == 0)
                        return 0;
                if (!v->next)
                        break;
                v = (struct dm_versions *) ((char *) v + v->next);
        }
        /* The kernel loads target modules on demand when it can; say what is
         * missing only if that did not happen either. */
        return ts_error_setf_plain(err, ENODEV,
                                   "device-mapper thin-pool target is not available: "
                                   "load dm_thin_pool (modprobe dm_thin_pool)");
}

static void info_from(const struct dm_info *info, ts_dm_info *ret) {
        *ret = (ts_dm_info) {
                .exists = info->exists,
                .suspended = info->suspended,
                .read_only = info->read_only,
                .live_table = info->live_table,
                .inactive_table = info->inactive_table,
                .open_count = info->open_count,
                .major = info->major,
                .minor = info->minor,
                .target_count = info->target_count,
        };
}

int ts_dm_info_get(const char *name, ts_dm_info *ret, ts_error **err) {
        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        int r = task_new(DM_DEVICE_INFO, name, &dmt, "info", err);
        if (r < 0)
                return r;
        r = task_run(dmt, false);
        if (r < 0)
                return ts_error_set(err, r, "info %s", name);
        struct dm_info info;
        if (!dm_task_get_info(dmt, &info))
                return ts_error_set(err, EIO, "info %s", name);
        info_from(&info, ret);
        return 0;
}

int ts_dm_create(const char *name, const char *uuid, uint64_t sectors, const char *target,
                 const char *params, bool read_only, ts_error **err) {
        return ts_dm_create_stepped(name, uuid, sectors, target, params, read_only, NULL, NULL, err);
}

int ts_dm_create_stepped(const char *name, const char *uuid, uint64_t sectors, const char *target,
                         const char *params, bool read_only, ts_dm_step_fn step, void *userdata,
                         ts_error **err) {
        /* Create, load and resume as three tasks rather than libdevmapper's
         * one-call create: the ioctl count is the same, and a rejected table
         * keeps the kernel's own errno instead of that of the clean-up. */
        _cleanup_dm_task_ struct dm_task *create = NULL, *load = NULL;
        int r = task_new(DM_DEVICE_CREATE, name, &create, "create", err);
        if (r < 0)
                return r;
        if (uuid && !dm_task_set_uuid(create, uuid))
                return ts_error_set(err, EINVAL, "create %s: uuid '%s'", name, uuid);
        /* No udev cookie here: the kernel reports a bare create to udev
         * without one, so a cookie would never complete. Nodes are made at
         * the resume (libdevmapper's default), which carries the cookie. */
        r = task_run(create, false);
        if (r < 0) {
                /* libdevmapper refuses a taken name before any ioctl. */
                ts_dm_info info;
                if ((r == -EIO || r == -EBUSY) && ts_dm_info_get(name, &info, NULL) == 0 && info.exists)
                        r = -EEXIST;
                return ts_error_set(err, r, "create %s", name);
        }
        if (step)
                step(userdata, "create");

        r = task_new(DM_DEVICE_RELOAD, name, &load, "load", err);
        if (r >= 0 && read_only && !dm_task_set_ro(load))
                r = ts_error_set(err, ENOMEM, "load %s", name);
        if (r >= 0 && !dm_task_add_target(load, 0, sectors, target, params))
                r = ts_error_set(err, ENOMEM, "load %s", name);
        if (r >= 0) {
                r = task_run(load, false);
                if (r < 0)
                        ts_error_set(err, r, "create %s: load table '%s %s'", name, target, params);
        }
        if (r >= 0 && step)
                step(userdata, "load");
        if (r >= 0) {
                r = ts_dm_resume(name, err);
                if (r < 0)
                        ts_error_prefix(err, r, "create %s", name);
        }
        if (r < 0)
                (void) ts_dm_remove(name, 0, NULL);
        return r;
}

int ts_dm_remove(const char *name, unsigned flags, ts_error **err) {
        if (nodes_here())
                return remove_here(name, flags, err);
        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        int r = task_new(DM_DEVICE_REMOVE, name, &dmt, "remove", err);
        if (r < 0)
                return r;
        if ((flags & TS_DM_REMOVE_DEFERRED) && !dm_task_deferred_remove(dmt))
                return ts_error_set(err, ENOMEM, "remove %s", name);
        r = task_run(dmt, true);
        if (r < 0)
                return ts_error_set(err, r, "remove %s", name);
        return 0;
}

static int simple_task(int type, const char *op, const char *name, bool node_change,
                       ts_error **err) {
        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        int r = task_new(type, name, &dmt, op, err);
        if (r < 0)
                return r;
        r = task_run(dmt, node_change);
        if (r < 0)
                return ts_error_set(err, r, "%s %s", op, name);
        return 0;
}

int ts_dm_suspend(const char *name, ts_error **err) {
        return simple_task(DM_DEVICE_SUSPEND, "suspend", name, false, err);
}

int ts_dm_resume(const char *name, ts_error **err) {
        if (nodes_here())
                return resume_here(name, err);
        return simple_task(DM_DEVICE_RESUME, "resume", name, true, err);
}

int ts_dm_reload(const char *name, uint64_t sectors, const char *target, const char *params,
                 ts_error **err) {
        _cleanup_dm_task_ struct dm_task *load = NULL, *suspend = NULL;
        int r = task_new(DM_DEVICE_RELOAD, name, &load, "load", err);
        if (r < 0)
                return r;
        if (!dm_task_add_target(load, 0, sectors, target, params))
                return ts_error_set(err, ENOMEM, "load %s", name);
        r = task_run(load, false);
        if (r < 0)
                return ts_error_set(err, r, "load table '%s %s' into %s", target, params, name);
        r = task_new(DM_DEVICE_SUSPEND, name, &suspend, "suspend", err);
        if (r < 0)
                return r;
        if (!dm_task_no_flush(suspend))
                return ts_error_set(err, ENOMEM, "suspend %s", name);
        r = task_run(suspend, false);
        if (r < 0) {
                (void) simple_task(DM_DEVICE_CLEAR, "clear", name, false, NULL);
                return ts_error_set(err, r, "suspend %s", name);
        }
        return ts_dm_resume(name, err);
}

int ts_dm_message(const char *name, const char *message, ts_error **err) {
        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        int r = task_new(DM_DEVICE_TARGET_MSG, name, &dmt, "message", err);
        if (r < 0)
                return r;
        if (!dm_task_set_sector(dmt, 0) || !dm_task_set_message(dmt, message))
                return ts_error_set(err, ENOMEM, "message %s", name);
        r = task_run(dmt, false);
        if (r < 0)
                return ts_error_set(err, r, "%s in pool %s", message, name);
        return 0;
}

/* Runs a table or status query of name (with its open count when asked);
 * the task is handed out for its targets (NULL when there is no device). */
static int query(int type, const char *name, bool inactive, bool open_count, struct dm_task **ret_task,
                 ts_dm_info *ret_info, ts_error **err) {
        const char *op = type == DM_DEVICE_TABLE ? "table" : "status";
        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        int r = task_new(type, name, &dmt, op, err);
        if (r < 0)
                return r;
        if (inactive && !dm_task_query_inactive_table(dmt))
                return ts_error_set(err, ENOMEM, "%s %s", op, name);
        if (!open_count)
                dm_task_no_open_count(dmt);
        r = task_run(dmt, false);
        if (r == -ENXIO) { /* libdevmapper says so for info and status only */
                *ret_info = (ts_dm_info) { .exists = false };
                *ret_task = NULL;
                return 0;
        }
        if (r < 0)
                return ts_error_set(err, r, "%s %s", op, name);
        struct dm_info info;
        if (!dm_task_get_info(dmt, &info))
                return ts_error_set(err, EIO, "%s %s", op, name);
        info_from(&info, ret_info);
        *ret_task = TAKE_PTR(dmt);
        return 0;
}

/* The first target of a queried task (NULL type: none), copied; and how
 * many there are. */
static int first_target(struct dm_task *dmt, const char *name, char **ret_type, uint64_t *ret_sectors,
                        char **ret_params, unsigned *ret_targets, ts_error **err) {
        uint64_t first_length = 0;
        char *type = NULL, *params = NULL;
        unsigned n = 0;
        void *next = NULL;
        do {
                uint64_t start, length;
                char *ty = NULL, *pa = NULL;
                next = dm_get_next_target(dmt, next, &start, &length, &ty, &pa);
                if (!ty)
                        break;
                if (n++ == 0) {
                        type = ty;
                        params = pa;
                        first_length = length;
                }
        } while (next);
        _cleanup_free_ char *t = type ? strdup(type) : NULL;
        _cleanup_free_ char *p = type ? strdup(params ? params : "") : NULL;
        if (type && (!t || !p))
                return ts_error_set(err, ENOMEM, "table %s", name);
        *ret_type = TAKE_PTR(t);
        *ret_sectors = first_length;
        *ret_params = TAKE_PTR(p);
        if (ret_targets)
                *ret_targets = n;
        return 0;
}

int ts_dm_target_get(const char *name, bool table, char **ret_type, uint64_t *ret_sectors,
                     char **ret_params, ts_error **err) {
        const char *op = table ? "table" : "status";
        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        ts_dm_info info;
        int r = query(table ? DM_DEVICE_TABLE : DM_DEVICE_STATUS, name, false, false, &dmt, &info, err);
        if (r < 0)
                return r;
        if (!info.exists)
                return ts_error_set(err, ENXIO, "%s %s", op, name);
        _cleanup_free_ char *type = NULL, *params = NULL;
        uint64_t sectors;
        r = first_target(dmt, name, &type, &sectors, &params, NULL, err);
        if (r < 0)
                return r;
        if (!type)
                return ts_error_setf_plain(err, ENODATA, "%s %s: device has no live table", op,
                                           name);
        if (ret_type)
                *ret_type = TAKE_PTR(type);
        if (ret_sectors)
                *ret_sectors = sectors;
        if (ret_params)
                *ret_params = TAKE_PTR(params);
        return 0;
}

int ts_dm_table_query(const char *name, bool inactive, ts_dm_info *ret_info, char **ret_type,
                      char **ret_params, unsigned *ret_targets, ts_error **err) {
        _cleanup_dm_task_ struct dm_task *dmt = NULL;
        ts_dm_info info;
        int r = query(DM_DEVICE_TABLE, name, inactive, true, &dmt, &info, err);
        if (r < 0)
                return r;
        char *type = NULL, *params = NULL;
        uint64_t sectors;
        unsigned n = 0;
        if (info.exists && (r = first_target(dmt, name, &type, &sectors, &params, &n, err)) < 0)
                return r;
        *ret_info = info;
        *ret_type = type;
        *ret_params = params;
        if (ret_targets)
                *ret_targets = n;
        return 0;
}

/* Reads the first line of a small sysfs file into buf, without newline. */
static int read_line(const char *path, char *buf, size_t len) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return negative_errno();
        if (!fgets(buf, (int) len, f))
                return -EIO;
        buf[strcspn(buf, "\n")] = 0;
        return 0;
}

int ts_dm_holders(uint32_t major, uint32_t minor, char ***ret, ts_error **err) {
        char path[128];
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/holders", major, minor);
        DIR *d = opendir(path);
        if (!d)
                return ts_error_set(err, errno, "holders of %u:%u (%s)", major, minor, path);
        _cleanup_strv_free_ char **names = calloc(1, sizeof(char *));
        int r = names ? 0 : -ENOMEM;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                char name_path[512], name[256];
                snprintf(name_path, sizeof(name_path), "/sys/class/block/%s/dm/name", de->d_name);
                /* A holder that is not a dm device is named by its kernel name. */
                if (read_line(name_path, name, sizeof(name)) < 0)
                        snprintf(name, sizeof(name), "%s", de->d_name);
                r = ts_strv_push(&names, name);
        }
        closedir(d);
        if (r < 0)
                return ts_error_set(err, r, "holders of %u:%u", major, minor);
        *ret = TAKE_PTR(names);
        return 0;
}
