#include "poolprov.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/log.h"
#include "common/units.h"
#include "dm.h"
#include "loop.h"
#include "pool.h"

#define THIN_SUPERBLOCK_MAGIC 27022010ULL
#define THIN_SUPERBLOCK_MAGIC_OFFSET 32
/* struct thin_disk_superblock: the data space map's root starts with its
 * block count; the data block size follows the two space map roots and
 * the two tree roots. */
#define SB_DATA_SM_ROOT_OFFSET 64
#define SB_DATA_BLOCK_SIZE_OFFSET 336
/* The kernel uses at most 255 * 2^14 metadata blocks of 4 KiB. */
#define KERNEL_META_MAX_BLOCKS (255ULL << 14)

static uint64_t le64_at(const unsigned char *p) {
        uint64_t v = 0; /* little-endian on disk */
        for (int i = 7; i >= 0; i--)
                v = (v << 8) | p[i];
        return v;
}

ts_poolprov_meta ts_poolprov_classify_meta(const unsigned char *buf, size_t len) {
        if (len > 4096)
                len = 4096;
        if (len >= THIN_SUPERBLOCK_MAGIC_OFFSET + 8) {
                if (le64_at(buf + THIN_SUPERBLOCK_MAGIC_OFFSET) == THIN_SUPERBLOCK_MAGIC)
                        return TS_POOLPROV_META_THIN;
        }
        for (size_t i = 0; i < len; i++)
                if (buf[i])
                        return TS_POOLPROV_META_OTHER;
        return TS_POOLPROV_META_ZERO;
}

int ts_poolprov_parse_meta(const unsigned char *buf, size_t len, ts_poolprov_sb *ret) {
        if (len < SB_DATA_BLOCK_SIZE_OFFSET + 4 || ts_poolprov_classify_meta(buf, len) != TS_POOLPROV_META_THIN)
                return -EINVAL;
        *ret = (ts_poolprov_sb) {
                .data_block_sectors = (uint32_t) le64_at(buf + SB_DATA_BLOCK_SIZE_OFFSET),
                .data_blocks = le64_at(buf + SB_DATA_SM_ROOT_OFFSET),
        };
        return 0;
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
        free(p->dev.id);
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

/* The first line of a small sysfs file, without its newline; -ENODATA
 * when it is empty. */
static int read_sysfs(const char *dir, const char *file, char *buf, size_t len) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return negative_errno();
        if (!fgets(buf, (int) len, f))
                return -ENODATA;
        buf[strcspn(buf, "\n")] = 0;
        return buf[0] ? 0 : -ENODATA;
}

int ts_poolprov_device_id(dev_t rdev, char **ret) {
        char base[64], disk[96], v[PATH_MAX], part[48] = "", off[32];
        snprintf(base, sizeof base, "/sys/dev/block/%u:%u", major(rdev), minor(rdev));
        int r = 0;
        *ret = NULL;
        if (read_sysfs(base, "dm/uuid", v, sizeof v) == 0)
                r = asprintf(ret, "dm:%s", v);
        else if (read_sysfs(base, "loop/backing_file", v, sizeof v) == 0) {
                bool at = read_sysfs(base, "loop/offset", off, sizeof off) == 0 && strcmp(off, "0") != 0;
                r = asprintf(ret, "loop:%s%s%s", v, at ? "@" : "", at ? off : "");
        } else {
                /* A partition's disk is its parent in sysfs. */
                if (read_sysfs(base, "partition", off, sizeof off) == 0)
                        snprintf(part, sizeof part, "-part%s", off);
                snprintf(disk, sizeof disk, "%s%s", base, part[0] ? "/.." : "");
                static const char *const files[][2] = {
                        { "wwid", "wwid" }, { "device/wwid", "wwid" },
                        { "serial", "serial" }, { "device/serial", "serial" },
                };
                for (size_t i = 0; i < TS_ARRAY_SIZE(files) && !*ret && r >= 0; i++)
                        if (read_sysfs(disk, files[i][0], v, sizeof v) == 0)
                                r = asprintf(ret, "%s:%s%s", files[i][1], v, part);
        }
        if (r < 0) {
                *ret = NULL;
                return -ENOMEM;
        }
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
                                                   ts_units_format_size(p->dev.size, a, sizeof a),
                                                   ts_units_format_size(want, b, sizeof b));
                }
                return 0;
        }
        if (S_ISBLK(st.st_mode)) {
                p->dev.is_file = false;
                if (ts_poolprov_device_id(st.st_rdev, &p->dev.id) < 0)
                        return ts_error_set(err, ENOMEM, "%s device %s", p->role, p->dev.path);
                r = block_size_of(p->dev.path, &p->dev.size, err);
                if (r < 0)
                        return ts_error_prefix(err, r, "%s device", p->role);
                if (want && want > p->dev.size) {
                        char a[32], b[32];
                        return ts_error_setf_plain(err, EINVAL,
                                                   "%s device %s has %s, less than the %s asked for",
                                                   p->role, p->dev.path,
                                                   ts_units_format_size(p->dev.size, a, sizeof a),
                                                   ts_units_format_size(want, b, sizeof b));
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
                                           ts_units_format_size(data->dev.size, a, sizeof a),
                                           ts_units_format_size(block, b, sizeof b));
        if (data->dev.size % TS_SECTOR_SIZE)
                return ts_error_setf_plain(err, EINVAL,
                                           "data size %" PRIu64 " is not a multiple of 512 bytes",
                                           data->dev.size);
        if (meta->dev.size < TS_POOL_MIN_META_BYTES)
                return ts_error_setf_plain(err, EINVAL, "metadata size %s is below the minimum of 2 MiB",
                                           ts_units_format_size(meta->dev.size, a, sizeof a));
        if (meta->dev.size > TS_POOL_MAX_META_BYTES)
                return ts_error_setf_plain(err, EINVAL, "metadata size %s is above the maximum of 16 GiB",
                                           ts_units_format_size(meta->dev.size, a, sizeof a));
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

/* The size of a recorded device now: a regular file's or a block device's
 * length, after checking it is still that kind. */
static int current_size(const char *pool, const char *role, const ts_pooldev *d, struct stat *ret_st,
                        uint64_t *ret, ts_error **err) {
        if (stat(d->path, ret_st) < 0)
                return ts_error_set(err, errno, "pool %s: %s %s", pool, role, d->path);
        if (d->is_file ? !S_ISREG(ret_st->st_mode) : !S_ISBLK(ret_st->st_mode))
                return ts_error_setf_plain(err, EINVAL, "pool %s: %s %s is no longer a %s", pool, role,
                                           d->path, d->is_file ? "regular file" : "block device");
        if (d->is_file) {
                *ret = (uint64_t) ret_st->st_size;
                return 0;
        }
        int r = block_size_of(d->path, ret, err);
        return r < 0 ? ts_error_prefix(err, r, "pool %s: %s", pool, role) : 0;
}

/* Takes a recorded device into a plan, checking it is the device create
 * recorded: the same kind, no smaller, and for a block device the same
 * identity. */
static int plan_recorded(devplan *p, const char *pool, const ts_pooldev *rec, ts_error **err) {
        if (!(p->dev.path = strdup(rec->path)))
                return ts_error_set(err, ENOMEM, "attach %s", pool);
        p->dev.is_file = rec->is_file;
        p->dev.size = rec->size;
        struct stat st;
        uint64_t now;
        int r = current_size(pool, p->role, rec, &st, &now, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *id = NULL;
        if (!rec->is_file && rec->id && ts_poolprov_device_id(st.st_rdev, &id) < 0)
                return ts_error_set(err, ENOMEM, "attach %s", pool);
        if (!rec->is_file && rec->id && (!id || strcmp(id, rec->id) != 0))
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: %s device %s is not the one the pool was created on "
                                           "(that was %s; this is %s). Device names can change across "
                                           "reboots: if the device has a new name, 'thinsnap pool destroy "
                                           "%s' (the devices are kept) and create the pool again with it",
                                           pool, p->role, rec->path, rec->id,
                                           id ? id : "a device without an identity", pool);
        char a[32], b[32];
        if (now < rec->size)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: %s %s has %s, less than the %s recorded: it is not "
                                           "the %s the pool was created on, or it was cut short",
                                           pool, p->role, rec->path, ts_units_format_size(now, a, sizeof a),
                                           ts_units_format_size(rec->size, b, sizeof b),
                                           rec->is_file ? "file" : "device");
        return 0;
}

/* A loop device found on a file must map all of it, writable. */
static int check_loop_whole(const devplan *p, const char *pool, ts_error **err) {
        if (!p->dev.is_file || p->attached_loop)
                return 0;
        ts_loop_info li;
        int r = ts_loop_info_get(p->loop, &li, err);
        if (r < 0)
                return ts_error_prefix(err, r, "pool %s: %s", pool, p->role);
        if (li.offset == 0 && (li.sizelimit == 0 || li.sizelimit >= p->dev.size) && !li.read_only)
                return 0;
        return ts_error_setf_plain(err, EINVAL,
                                   "pool %s: %s file %s is on %s as %s, not as the pool needs it (all of "
                                   "it, writable): detach it (losetup -d %s) and attach the pool again",
                                   pool, p->role, p->dev.path, p->loop,
                                   li.read_only ? "read-only" : "a part of the file", p->loop);
}

/* The metadata must hold this pool's superblock: zeroes would be formatted
 * by the kernel, and every thin device lost. */
static int check_meta_sb(const ts_poolspec *s, const devplan *meta, ts_error **err) {
        unsigned char head[4096];
        size_t n = 0;
        int r = read_head(meta->dev.path, head, sizeof head, &n, err);
        if (r < 0)
                return ts_error_prefix(err, r, "pool %s", s->name);
        ts_poolprov_sb sb;
        if (ts_poolprov_parse_meta(head, n, &sb) < 0)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: metadata %s holds no thin-pool superblock: it is not "
                                           "the pool's metadata (attaching would format it and lose every "
                                           "thin device)",
                                           s->name, meta->dev.path);
        uint64_t block = s->params.data_block_sectors;
        if (sb.data_block_sectors != block)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: metadata %s is of a pool with %" PRIu64 "-byte blocks, "
                                           "not the %" PRIu64 " recorded",
                                           s->name, meta->dev.path, (uint64_t) sb.data_block_sectors * 512,
                                           block * 512);
        if (sb.data_blocks > s->data.size / TS_SECTOR_SIZE / block)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: metadata %s maps %" PRIu64 " data blocks, more than "
                                           "the %" PRIu64 " bytes of data recorded hold",
                                           s->name, meta->dev.path, sb.data_blocks, s->data.size);
        return 0;
}

/* The block device the pool's table should name for a recorded device. */
static int recorded_mm(const ts_pooldev *d, char mm[32], ts_error **err) {
        _cleanup_free_ char *loop = NULL;
        if (d->is_file) {
                int r = ts_loop_find(d->path, &loop, err);
                if (r == -ENXIO)
                        return ts_error_setf_plain(err, ENXIO, "no loop device backs %s", d->path);
                if (r < 0)
                        return r;
        }
        const char *dev = loop ? loop : d->path;
        struct stat st;
        if (stat(dev, &st) < 0)
                return ts_error_set(err, errno, "%s", dev);
        snprintf(mm, 32, "%u:%u", major(st.st_rdev), minor(st.st_rdev));
        return 0;
}

/* An active pool must be on the devices its state records. */
static int check_active_devices(const ts_poolspec *s, const ts_pool *pool, ts_error **err) {
        const ts_pooldev *devs[2] = { &s->data, &s->meta };
        const char *live[2] = { pool->data_dev, pool->meta_dev }, *roles[2] = { "data", "metadata" };
        for (int i = 0; i < 2; i++) {
                char mm[32];
                _cleanup_error_ ts_error *e = NULL;
                int r = recorded_mm(devs[i], mm, &e);
                if (r < 0 && r != -ENXIO && r != -ENOENT)
                        return ts_error_prefix(err, ts_error_move(err, &e), "pool %s: %s", s->name, roles[i]);
                if (r < 0 || strcmp(mm, live[i]) != 0)
                        return ts_error_setf_plain(err, EEXIST,
                                                   "pool %s is active on %s device %s, which is not %s "
                                                   "(%s) as recorded",
                                                   s->name, roles[i], live[i], devs[i]->path,
                                                   r < 0 ? "not attached" : mm);
        }
        return 0;
}

/* The devices of an inactive pool, from its state: checked, brought up. */
static int bring_up_recorded(const ts_poolspec *s, devplan *data, devplan *meta, ts_error **err) {
        const ts_pooldev *devs[2] = { &s->data, &s->meta };
        devplan *plans[2] = { data, meta };
        for (int i = 0; i < 2; i++) {
                int r = plan_recorded(plans[i], s->name, devs[i], err);
                if (r < 0)
                        return r;
        }
        int r = check_meta_sb(s, meta, err);
        for (int i = 0; i < 2 && r >= 0; i++) {
                r = bring_up(plans[i], err);
                if (r >= 0)
                        r = check_loop_whole(plans[i], s->name, err);
        }
        return r;
}

/* Reads a pool's state after the checks every command makes. */
static int read_state(const char *state_dir, const char *name, ts_poolspec **ret, ts_error **err) {
        int r = ts_pool_check_name(name, err);
        if (r < 0)
                return r;
        r = ts_dm_check_available(err);
        if (r < 0)
                return r;
        return ts_poolstate_read(state_dir, name, ret, err);
}

int ts_poolprov_attach(const char *state_dir, const char *name, ts_poolprov_outcome *ret,
                       ts_error **err) {
        _cleanup_poolspec_ ts_poolspec *s = NULL;
        int r = read_state(state_dir, name, &s, err);
        if (r < 0)
                return r;
        ts_dm_info info;
        r = ts_dm_info_get(name, &info, err);
        if (r < 0)
                return r;
        if (info.exists) {
                _cleanup_pool_ ts_pool *pool = NULL;
                r = ts_pool_open(name, &pool, err);
                if (r >= 0)
                        r = check_active_devices(s, pool, err);
                if (r < 0)
                        return r;
                *ret = TS_POOLPROV_UNCHANGED;
                return 0;
        }
        devplan data = DEVPLAN_INIT("data");
        devplan meta = DEVPLAN_INIT("metadata");
        r = bring_up_recorded(s, &data, &meta, err);
        if (r >= 0)
                r = activate(s, &data, &meta, err);
        if (r >= 0)
                *ret = TS_POOLPROV_ATTACHED;
        return devplans_finish(&data, &meta, r);
}

/* The size a device of an active pool grows to: want, or (0) its size
 * now. Checks it can be had: no shrinking, a block device already that
 * large, a file no smaller than it is. */
static int plan_growth(const char *pool, const char *role, const ts_pooldev *d, uint64_t want,
                       uint64_t *ret, ts_error **err) {
        struct stat st;
        uint64_t now;
        int r = current_size(pool, role, d, &st, &now, err);
        if (r < 0)
                return r;
        if (!want)
                want = now;
        char a[32], b[32];
        ts_units_format_size(want, b, sizeof b);
        if (want < d->size)
                return ts_error_setf_plain(err, EINVAL, "pool %s: %s cannot shrink (%s recorded, %s asked for)",
                                           pool, role, ts_units_format_size(d->size, a, sizeof a), b);
        ts_units_format_size(now, a, sizeof a);
        if (!d->is_file && want > now)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: %s device %s has %s, less than the %s asked for: grow "
                                           "the device first (an LVM volume: lvextend -L %s %s), then run "
                                           "extend again",
                                           pool, role, d->path, a, b, b, d->path);
        if (d->is_file && want < now)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: %s file %s has %s already, more than the %s asked for",
                                           pool, role, d->path, a, b);
        *ret = want;
        return 0;
}

static int check_growth(const char *pool, const ts_poolprov_sizes *want, ts_error **err) {
        char a[32];
        if (want->data % TS_SECTOR_SIZE)
                return ts_error_setf_plain(err, EINVAL, "pool %s: data size %" PRIu64 " is not a multiple "
                                           "of 512 bytes", pool, want->data);
        if (want->meta % 4096)
                return ts_error_setf_plain(err, EINVAL, "pool %s: metadata size %" PRIu64 " is not a "
                                           "multiple of 4 KiB", pool, want->meta);
        if (want->meta > TS_POOL_MAX_META_BYTES)
                return ts_error_setf_plain(err, EINVAL, "pool %s: metadata size %s is above the maximum "
                                           "of 16 GiB", pool, ts_units_format_size(want->meta, a, sizeof a));
        return 0;
}

/* Grows a file to size and makes its loop device take the new size. */
static int grow_file(const ts_pooldev *d, uint64_t size, ts_error **err) {
        if (!d->is_file)
                return 0;
        _cleanup_close_ int fd = open(d->path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return ts_error_set(err, errno, "grow %s", d->path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return ts_error_set(err, errno, "grow %s", d->path);
        if ((uint64_t) st.st_size < size && (ftruncate(fd, (off_t) size) < 0 || fsync(fd) < 0))
                return ts_error_set(err, errno, "grow %s to %" PRIu64 " bytes", d->path, size);
        _cleanup_free_ char *loop = NULL;
        int r = ts_loop_find(d->path, &loop, err);
        if (r < 0)
                return r == -ENXIO ? ts_error_setf_plain(err, ENXIO, "no loop device backs %s", d->path) : r;
        return ts_loop_set_capacity(loop, err);
}

/* Checks what the kernel made of the reload. */
static int check_grown(const char *name, const ts_poolspec *s, ts_error **err) {
        _cleanup_pool_ ts_pool *pool = NULL;
        ts_pool_status st;
        int r = ts_pool_open(name, &pool, err);
        if (r >= 0)
                r = ts_pool_get_status(pool, &st, err);
        if (r < 0)
                return r;
        uint64_t block = s->params.data_block_sectors * TS_SECTOR_SIZE;
        if (st.needs_check || st.fail)
                return ts_error_setf_plain(err, EUCLEAN, "pool %s is %s after the reload; see the kernel log",
                                           name, st.fail ? "failed" : "marked needs_check");
        uint64_t meta_blocks = s->meta.size / 4096;
        if (meta_blocks > KERNEL_META_MAX_BLOCKS)
                meta_blocks = KERNEL_META_MAX_BLOCKS;
        if (st.total_data_blocks != s->data.size / block || st.total_meta_blocks != meta_blocks)
                return ts_error_setf_plain(err, EIO,
                                           "pool %s: the kernel has %" PRIu64 " data and %" PRIu64
                                           " metadata blocks after the reload, not %" PRIu64 " and %" PRIu64
                                           "; see the kernel log",
                                           name, st.total_data_blocks, st.total_meta_blocks,
                                           s->data.size / block, meta_blocks);
        return 0;
}

/* After a failed reload: records the old size of what the kernel did not
 * take. */
static void record_kernel_sizes(const char *state_dir, ts_poolspec *s, const ts_poolprov_sizes *old) {
        _cleanup_pool_ ts_pool *pool = NULL;
        ts_pool_status st;
        if (ts_pool_open(s->name, &pool, NULL) < 0 || ts_pool_get_status(pool, &st, NULL) < 0)
                return;
        uint64_t block = s->params.data_block_sectors * TS_SECTOR_SIZE;
        if (st.total_data_blocks < s->data.size / block)
                s->data.size = old->data;
        if (st.total_meta_blocks < s->meta.size / 4096 && st.total_meta_blocks < KERNEL_META_MAX_BLOCKS)
                s->meta.size = old->meta;
        (void) ts_poolstate_write(state_dir, s, NULL);
}

/* Records the new sizes, then reloads: metadata first, since growing the
 * data takes metadata space. Recorded first so that a crash in between
 * leaves a state attach can use (files grown, the kernel grows the pool
 * at its activation). */
static int reload_grown(const char *state_dir, ts_poolspec *s, const ts_poolprov_sizes *old, bool meta,
                        bool data, ts_error **err) {
        int r = ts_poolstate_write(state_dir, s, err);
        if (r < 0)
                return r;
        if (meta)
                r = ts_pool_reload(s->name, 0, err);
        if (r >= 0 && data)
                r = ts_pool_reload(s->name, s->data.size / TS_SECTOR_SIZE, err);
        if (r >= 0)
                r = check_grown(s->name, s, err);
        if (r < 0)
                record_kernel_sizes(state_dir, s, old);
        return r;
}

int ts_poolprov_extend(const char *state_dir, const char *name, uint64_t data_size,
                       uint64_t meta_size, ts_poolprov_sizes *ret_before,
                       ts_poolprov_sizes *ret_after, ts_error **err) {
        _cleanup_poolspec_ ts_poolspec *s = NULL;
        _cleanup_pool_ ts_pool *pool = NULL;
        int r = read_state(state_dir, name, &s, err);
        if (r < 0)
                return r;
        r = ts_pool_open(name, &pool, err);
        if (r == -ENXIO)
                return ts_error_prefix(err, r, "extend");
        if (r >= 0)
                r = check_active_devices(s, pool, err);
        ts_poolprov_sizes old = { s->data.size, s->meta.size }, want = old;
        if (r >= 0)
                r = plan_growth(name, "data", &s->data, data_size, &want.data, err);
        if (r >= 0)
                r = plan_growth(name, "metadata", &s->meta, meta_size, &want.meta, err);
        if (r >= 0)
                r = check_growth(name, &want, err);
        ts_pool_status st = { 0 };
        if (r >= 0)
                r = ts_pool_get_status(pool, &st, err);
        if (r < 0)
                return r;
        uint64_t sectors = want.data / TS_SECTOR_SIZE;
        sectors -= sectors % pool->params.data_block_sectors;
        uint64_t meta_blocks = want.meta / 4096 < KERNEL_META_MAX_BLOCKS ? want.meta / 4096 : KERNEL_META_MAX_BLOCKS;
        bool meta = want.meta > old.meta || st.total_meta_blocks < meta_blocks;
        bool data = want.data > old.data || pool->data_sectors < sectors;
        if ((meta && (r = grow_file(&s->meta, want.meta, err)) < 0) ||
            (data && (r = grow_file(&s->data, want.data, err)) < 0))
                return ts_error_prefix(err, r, "pool %s", name);
        s->data.size = want.data;
        s->meta.size = want.meta;
        if ((meta || data) && (r = reload_grown(state_dir, s, &old, meta, data, err)) < 0)
                return r;
        if (ret_before)
                *ret_before = old;
        if (ret_after)
                *ret_after = (ts_poolprov_sizes) { s->data.size, s->meta.size };
        return 0;
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
                /* Only loop devices of files: a block device that is a loop
                 * device of the user's stays. */
                loops[0] = !s || s->data.is_file ? loop_of(pool->data_dev) : NULL;
                loops[1] = !s || s->meta.is_file ? loop_of(pool->meta_dev) : NULL;
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
