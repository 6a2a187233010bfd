#include "poolprov.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/parse.h"
#include "dm.h"
#include "loop.h"
#include "pool.h"

#define THIN_SUPERBLOCK_MAGIC 27022010ULL
#define THIN_SUPERBLOCK_MAGIC_OFFSET 32

ts_poolprov_meta ts_poolprov_classify_meta(const unsigned char *buf, size_t len) {
        if (len > 4096)
                len = 4096;
        if (len >= THIN_SUPERBLOCK_MAGIC_OFFSET + 8) {
                uint64_t magic = 0;
                for (int i = 7; i >= 0; i--) /* little-endian on disk */
                        magic = (magic << 8) | buf[THIN_SUPERBLOCK_MAGIC_OFFSET + i];
                if (magic == THIN_SUPERBLOCK_MAGIC)
                        return TS_POOLPROV_META_THIN;
        }
        for (size_t i = 0; i < len; i++)
                if (buf[i])
                        return TS_POOLPROV_META_OTHER;
        return TS_POOLPROV_META_ZERO;
}

/* What one device of the pool needs: the path as given, made absolute, and
 * what this call did to it, so a failure can undo exactly that. */
typedef struct devplan {
        const char *role; /* "data" or "metadata" */
        ts_pooldev dev;   /* absolute path, kind, size */
        bool exists;
        bool created_file;
        char *loop;       /* the loop device of a file */
        int loop_fd;      /* held until the pool holds the loop device */
        bool attached_loop;
} devplan;

#define DEVPLAN_INIT(r) { .role = (r), .loop_fd = -1 }

static void devplan_done(devplan *p) {
        free(p->dev.path);
        free(p->loop);
        if (p->loop_fd >= 0)
                close(p->loop_fd);
}

/* Makes path absolute without requiring it to exist (its directory must). */
static int absolute_path(const char *path, char **ret, ts_error **err) {
        char *real = realpath(path, NULL);
        if (real) {
                *ret = real;
                return 0;
        }
        if (errno != ENOENT)
                return ts_error_set(err, errno, "%s", path);
        _cleanup_free_ char *d = strdup(path), *b = strdup(path);
        if (!d || !b)
                return ts_error_set(err, ENOMEM, "%s", path);
        char *dir = dirname(d), *base = basename(b);
        _cleanup_free_ char *rdir = realpath(dir, NULL);
        if (!rdir)
                return ts_error_set(err, errno, "directory %s of %s", dir, path);
        if (asprintf(ret, "%s/%s", strcmp(rdir, "/") == 0 ? "" : rdir, base) < 0)
                return ts_error_set(err, ENOMEM, "%s", path);
        return 0;
}

static int block_size_of(const char *path, uint64_t *ret, ts_error **err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return ts_error_set(err, errno, "open %s", path);
        off_t end = lseek(fd, 0, SEEK_END);
        if (end < 0)
                return ts_error_set(err, errno, "size of %s", path);
        *ret = (uint64_t) end;
        return 0;
}

/* Looks at the device as it is now; creates nothing. want is the size the
 * user asked for (0: none), dflt the size to create a missing file with. */
static int plan_dev(devplan *p, const char *path, uint64_t want, uint64_t dflt, ts_error **err) {
        int r = absolute_path(path, &p->dev.path, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", p->role);
        struct stat st;
        if (stat(p->dev.path, &st) < 0) {
                if (errno != ENOENT)
                        return ts_error_set(err, errno, "%s %s", p->role, p->dev.path);
                if (!want && !dflt)
                        return ts_error_setf_plain(err, ENOENT,
                                                   "%s file %s does not exist and no size was given "
                                                   "to create it", p->role, p->dev.path);
                p->dev.is_file = true;
                p->dev.size = want ? want : dflt;
                return 0;
        }
        p->exists = true;
        if (S_ISREG(st.st_mode)) {
                p->dev.is_file = true;
                p->dev.size = (uint64_t) st.st_size;
                if (want && want != p->dev.size) {
                        char a[32], b[32];
                        return ts_error_setf_plain(err, EINVAL,
                                                   "%s file %s exists with %s, not the %s asked for",
                                                   p->role, p->dev.path,
                                                   ts_format_size(p->dev.size, a, sizeof a),
                                                   ts_format_size(want, b, sizeof b));
                }
                return 0;
        }
        if (S_ISBLK(st.st_mode)) {
                p->dev.is_file = false;
                r = block_size_of(p->dev.path, &p->dev.size, err);
                if (r < 0)
                        return ts_error_prefix(err, r, "%s device", p->role);
                if (want && want > p->dev.size) {
                        char a[32], b[32];
                        return ts_error_setf_plain(err, EINVAL,
                                                   "%s device %s has %s, less than the %s asked for",
                                                   p->role, p->dev.path,
                                                   ts_format_size(p->dev.size, a, sizeof a),
                                                   ts_format_size(want, b, sizeof b));
                }
                if (want)
                        p->dev.size = want;
                return 0;
        }
        return ts_error_setf_plain(err, EINVAL, "%s %s is neither a regular file nor a block device",
                                   p->role, p->dev.path);
}

static int create_file(devplan *p, ts_error **err) {
        _cleanup_close_ int fd = open(p->dev.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return ts_error_set(err, errno, "create %s file %s", p->role, p->dev.path);
        p->created_file = true;
        if (ftruncate(fd, (off_t) p->dev.size) < 0)
                return ts_error_set(err, errno, "size %s file %s", p->role, p->dev.path);
        return 0;
}

/* The block device to hand to the kernel: the device itself, or the loop
 * device of a file (found when one is attached already, attached if not). */
static int bring_up(devplan *p, ts_error **err) {
        if (!p->dev.is_file)
                return 0;
        int r = ts_loop_get(p->dev.path, TS_LOOP_DIRECT_IO | TS_LOOP_AUTOCLEAR, &p->loop,
                            &p->loop_fd, &p->attached_loop, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", p->role);
        return 0;
}

static const char *blockdev(const devplan *p) {
        return p->dev.is_file ? p->loop : p->dev.path;
}

static void undo(devplan *p) {
        /* Closing the last fd of an autoclear loop device detaches it. */
        if (p->loop_fd >= 0)
                p->loop_fd = (close(p->loop_fd), -1);
        else if (p->attached_loop && p->loop)
                (void) ts_loop_detach(p->loop, NULL);
        if (p->created_file)
                (void) unlink(p->dev.path);
}

/* The end of a provisioning run with the data and metadata plans: after
 * a failure (r < 0) undoes what they set up, metadata first; frees both.
 * Returns r. */
static int devplans_finish(devplan *data, devplan *meta, int r) {
        if (r < 0) {
                undo(meta);
                undo(data);
        }
        devplan_done(data);
        devplan_done(meta);
        return r;
}

static int read_head(const char *path, unsigned char *buf, size_t len, size_t *ret, ts_error **err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return ts_error_set(err, errno, "read %s", path);
        ssize_t n = pread(fd, buf, len, 0);
        if (n < 0)
                return ts_error_set(err, errno, "read %s", path);
        *ret = (size_t) n;
        return 0;
}

static int check_sizes(const ts_poolprov_request *req, const devplan *data, const devplan *meta,
                       uint64_t block, ts_error **err) {
        char a[32], b[32];
        if (data->dev.size < block)
                return ts_error_setf_plain(err, EINVAL, "data size %s is smaller than one block (%s)",
                                           ts_format_size(data->dev.size, a, sizeof a),
                                           ts_format_size(block, b, sizeof b));
        if (data->dev.size % TS_SECTOR_SIZE)
                return ts_error_setf_plain(err, EINVAL,
                                           "data size %" PRIu64 " is not a multiple of 512 bytes",
                                           data->dev.size);
        if (meta->dev.size < TS_POOL_MIN_META_BYTES)
                return ts_error_setf_plain(err, EINVAL, "metadata size %s is below the minimum of 2 MiB",
                                           ts_format_size(meta->dev.size, a, sizeof a));
        if (meta->dev.size > TS_POOL_MAX_META_BYTES)
                return ts_error_setf_plain(err, EINVAL, "metadata size %s is above the maximum of 16 GiB",
                                           ts_format_size(meta->dev.size, a, sizeof a));
        if (meta->dev.size % 4096)
                return ts_error_setf_plain(err, EINVAL,
                                           "metadata size %" PRIu64 " is not a multiple of 4 KiB",
                                           meta->dev.size);
        (void) req;
        return 0;
}

static int spec_from(const ts_poolprov_request *req, const devplan *data, const devplan *meta,
                     uint64_t block, ts_poolspec *s) {
        *s = (ts_poolspec) {
                .name = (char *) req->name,
                .data = data->dev,
                .meta = meta->dev,
                .params = {
                        .data_block_sectors = block / TS_SECTOR_SIZE,
                        .low_water_blocks = req->low_water_blocks,
                        .skip_block_zeroing = req->skip_block_zeroing,
                        .ignore_discard = req->ignore_discard,
                        .no_discard_passdown = req->no_discard_passdown,
                        .error_if_no_space = req->error_if_no_space,
                },
        };
        return 0;
}

/* Activates the pool of a spec whose devices are up. */
static int activate(const ts_poolspec *s, const devplan *data, const devplan *meta, ts_error **err) {
        return ts_pool_create(s->name, blockdev(meta), blockdev(data),
                              s->data.size / TS_SECTOR_SIZE, &s->params, err);
}

/* Looks at both devices as they are; checks their paths and sizes. */
static int plan_devices(const ts_poolprov_request *req, uint64_t block, devplan *data, devplan *meta,
                        ts_error **err) {
        int r = plan_dev(data, req->data_path, req->data_size, 0, err);
        if (r < 0)
                return r;
        r = plan_dev(meta, req->meta_path, req->meta_size,
                     ts_pool_meta_size(data->dev.size, block, TS_POOLPROV_DEFAULT_MAX_THINS), err);
        if (r < 0)
                return r;
        if (strcmp(data->dev.path, meta->dev.path) == 0)
                return ts_error_setf_plain(err, EINVAL, "data and metadata are the same path (%s)",
                                           data->dev.path);
        return check_sizes(req, data, meta, block, err);
}

/* 1 when the pool is recorded exactly as wanted (create again changes
 * nothing), 0 when it is not recorded, or -errno: -EEXIST when it is
 * recorded with a different set-up. */
static int find_recorded(const char *state_dir, const ts_poolspec *want, ts_error **err) {
        _cleanup_poolspec_ ts_poolspec *recorded = NULL;
        ts_error *state_err = NULL;
        int r = ts_poolstate_read(state_dir, want->name, &recorded, &state_err);
        ts_error_free(state_err);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return ts_poolstate_read(state_dir, want->name, &recorded, err);
        if (!ts_poolstate_equal(recorded, want))
                return ts_error_setf_plain(err, EEXIST,
                                           "pool %s exists with a different set-up (data %s, "
                                           "metadata %s); destroy it first or use another name",
                                           want->name, recorded->data.path, recorded->meta.path);
        return 1;
}

static int check_name_free(const char *state_dir, const char *name, ts_error **err) {
        ts_dm_info info;
        int r = ts_dm_info_get(name, &info, err);
        if (r < 0)
                return r;
        if (info.exists)
                return ts_error_setf_plain(err, EEXIST,
                                           "a device-mapper device named %s exists already and is not "
                                           "a pool recorded in %s",
                                           name, state_dir);
        return 0;
}

/* Existing metadata is reused only when it is thin-pool metadata (then the
 * pool is attached, not created); anything else on it is refused rather
 * than overwritten. */
static int check_meta_head(const devplan *meta, ts_poolprov_outcome *outcome, ts_error **err) {
        if (!meta->exists)
                return 0;
        unsigned char head[4096];
        size_t n = 0;
        int r = read_head(meta->dev.path, head, sizeof(head), &n, err);
        if (r < 0)
                return r;
        ts_poolprov_meta kind = ts_poolprov_classify_meta(head, n);
        if (kind == TS_POOLPROV_META_OTHER)
                return ts_error_setf_plain(err, EINVAL,
                                           "metadata %s holds data that is not thin-pool "
                                           "metadata; refusing to overwrite it (zero its first "
                                           "4 KiB to reuse it)",
                                           meta->dev.path);
        if (kind == TS_POOLPROV_META_THIN)
                *outcome = TS_POOLPROV_ATTACHED;
        return 0;
}

/* Creates missing files, attaches loop devices, creates the pool and
 * records it. *pool_created tells whether the pool device was made. */
static int set_up(const char *state_dir, const ts_poolspec *want, devplan *data, devplan *meta,
                  bool *pool_created, ts_error **err) {
        int r;
        if (!data->exists && (r = create_file(data, err)) < 0)
                return r;
        if (!meta->exists && (r = create_file(meta, err)) < 0)
                return r;
        if ((r = bring_up(data, err)) < 0 || (r = bring_up(meta, err)) < 0)
                return r;
        r = activate(want, data, meta, err);
        if (r < 0)
                return r;
        *pool_created = true;
        return ts_poolstate_write(state_dir, want, err);
}

int ts_poolprov_create(const char *state_dir, const ts_poolprov_request *req,
                       ts_poolprov_outcome *ret, ts_error **err) {
        int r = ts_pool_check_name(req->name, err);
        if (r < 0)
                return r;
        uint64_t block = req->block_size ? req->block_size : 64 * 1024;
        r = ts_pool_check_block_size(block, err);
        if (r < 0)
                return r;
        r = ts_dm_check_available(err);
        if (r < 0)
                return r;

        devplan data = DEVPLAN_INIT("data");
        devplan meta = DEVPLAN_INIT("metadata");
        bool pool_created = false;
        ts_poolprov_outcome outcome = TS_POOLPROV_CREATED;
        r = plan_devices(req, block, &data, &meta, err);
        if (r < 0)
                return devplans_finish(&data, &meta, r);
        ts_poolspec want;
        spec_from(req, &data, &meta, block, &want);
        r = find_recorded(state_dir, &want, err);
        if (r > 0) {
                devplans_finish(&data, &meta, 0);
                return ts_poolprov_attach(state_dir, req->name, ret, err);
        }
        if (r >= 0)
                r = check_name_free(state_dir, req->name, err);
        if (r >= 0)
                r = check_meta_head(&meta, &outcome, err);
        if (r >= 0)
                r = set_up(state_dir, &want, &data, &meta, &pool_created, err);
        if (r < 0 && pool_created)
                (void) ts_dm_remove(req->name, 0, NULL);
        if (r >= 0)
                *ret = outcome;
        return devplans_finish(&data, &meta, r);
}

int ts_poolprov_attach(const char *state_dir, const char *name, ts_poolprov_outcome *ret,
                       ts_error **err) {
        int r = ts_pool_check_name(name, err);
        if (r < 0)
                return r;
        r = ts_dm_check_available(err);
        if (r < 0)
                return r;
        _cleanup_poolspec_ ts_poolspec *s = NULL;
        r = ts_poolstate_read(state_dir, name, &s, err);
        if (r < 0)
                return r;

        ts_dm_info info;
        r = ts_dm_info_get(name, &info, err);
        if (r < 0)
                return r;
        if (info.exists) {
                _cleanup_pool_ ts_pool *pool = NULL;
                r = ts_pool_open(name, &pool, err);
                if (r < 0)
                        return r;
                *ret = TS_POOLPROV_UNCHANGED;
                return 0;
        }

        devplan data = DEVPLAN_INIT("data");
        devplan meta = DEVPLAN_INIT("metadata");
        const ts_pooldev *devs[2] = { &s->data, &s->meta };
        devplan *plans[2] = { &data, &meta };
        for (int i = 0; i < 2; i++) {
                devplan *p = plans[i];
                if (!(p->dev.path = strdup(devs[i]->path))) {
                        r = ts_error_set(err, ENOMEM, "attach %s", name);
                        goto fail;
                }
                p->dev.is_file = devs[i]->is_file;
                p->dev.size = devs[i]->size;
                struct stat st;
                if (stat(p->dev.path, &st) < 0) {
                        r = ts_error_set(err, errno, "pool %s: %s %s", name, p->role, p->dev.path);
                        goto fail;
                }
                if (p->dev.is_file ? !S_ISREG(st.st_mode) : !S_ISBLK(st.st_mode)) {
                        r = ts_error_setf_plain(err, EINVAL, "pool %s: %s %s is no longer a %s",
                                                name, p->role, p->dev.path,
                                                p->dev.is_file ? "regular file" : "block device");
                        goto fail;
                }
                if ((r = bring_up(p, err)) < 0)
                        goto fail;
        }
        r = activate(s, &data, &meta, err);
        if (r < 0)
                goto fail;
        *ret = TS_POOLPROV_ATTACHED;
        return devplans_finish(&data, &meta, 0);

fail:
        return devplans_finish(&data, &meta, r);
}

/* "/dev/loop3" for a loop device number maj:min, or NULL. */
static char *loop_of(const char *mm) {
        unsigned ma, mi;
        if (sscanf(mm, "%u:%u", &ma, &mi) != 2 || ma != 7)
                return NULL;
        char path[64], line[128];
        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/uevent", ma, mi);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "DEVNAME=", 8) == 0) {
                        line[strcspn(line, "\n")] = 0;
                        char *dev = NULL;
                        if (asprintf(&dev, "/dev/%s", line + 8) < 0)
                                return NULL;
                        return dev;
                }
        return NULL;
}

int ts_poolprov_destroy(const char *state_dir, const char *name, bool force, bool delete_files,
                        ts_error **err) {
        int r = ts_pool_check_name(name, err);
        if (r < 0)
                return r;
        _cleanup_poolspec_ ts_poolspec *s = NULL;
        ts_error *state_err = NULL;
        r = ts_poolstate_read(state_dir, name, &s, &state_err);
        if (r < 0 && r != -ENOENT)
                return ts_error_move(err, &state_err);
        ts_error_free(state_err);

        bool active = false;
        char *loops[2] = { NULL, NULL };
        if (access("/dev/mapper/control", F_OK) == 0) {
                ts_dm_info info;
                r = ts_dm_info_get(name, &info, err);
                if (r < 0)
                        return r;
                active = info.exists;
        }
        if (!active && !s)
                return ts_error_setf_plain(err, ENXIO,
                                           "no pool named %s (not active, and no state in %s)", name,
                                           state_dir);
        if (active) {
                _cleanup_pool_ ts_pool *pool = NULL;
                r = ts_pool_open(name, &pool, err);
                if (r < 0)
                        return r;
                loops[0] = loop_of(pool->data_dev);
                loops[1] = loop_of(pool->meta_dev);
                r = ts_pool_destroy(name, force, err);
                if (r < 0)
                        goto out;
        }
        /* Autoclear loop devices go away with the pool; detach explicitly
         * anyway for kernels or set-ups where they were not autoclear. */
        for (int i = 0; i < 2; i++)
                if (loops[i])
                        (void) ts_loop_detach(loops[i], NULL);
        if (s && delete_files) {
                const ts_pooldev *devs[2] = { &s->data, &s->meta };
                for (int i = 0; i < 2; i++)
                        if (devs[i]->is_file && unlink(devs[i]->path) < 0 && errno != ENOENT) {
                                r = ts_error_set(err, errno, "delete %s", devs[i]->path);
                                goto out;
                        }
        }
        r = ts_poolstate_remove(state_dir, name, err);
out:
        free(loops[0]);
        free(loops[1]);
        return r;
}
