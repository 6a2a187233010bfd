#include "pool.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libdevmapper.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strv.h"
#include "dm.h"
#include "thin.h"

int ts_pool_check_name(const char *name, ts_error **err) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > TS_POOL_NAME_MAX)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool name must be 1 to %d characters long",
                                           TS_POOL_NAME_MAX);
        if (name[0] == '.' || name[0] == '-')
                return ts_error_setf_plain(err, EINVAL,
                                           "pool name '%s' must not start with '.' or '-'", name);
        for (const char *p = name; *p; p++)
                if (!isalnum((unsigned char) *p) && *p != '.' && *p != '_' && *p != '-')
                        return ts_error_setf_plain(err, EINVAL,
                                                   "pool name '%s' has '%c': only letters, digits, "
                                                   "'.', '_' and '-' are allowed",
                                                   name, *p);
        return 0;
}

int ts_pool_check_block_size(uint64_t bytes, ts_error **err) {
        uint64_t min = TS_POOL_MIN_BLOCK_SECTORS * TS_SECTOR_SIZE;
        uint64_t max = TS_POOL_MAX_BLOCK_SECTORS * TS_SECTOR_SIZE;
        if (bytes < min || bytes > max || bytes % min != 0)
                return ts_error_setf_plain(err, EINVAL,
                                           "block size %" PRIu64 " bytes: it must be a multiple "
                                           "of 64 KiB between 64 KiB and 1 GiB",
                                           bytes);
        return 0;
}

uint64_t ts_pool_meta_size(uint64_t data_bytes, uint64_t block_bytes, uint32_t max_thins) {
        if (block_bytes == 0)
                return TS_POOL_MIN_META_BYTES;
        uint64_t blocks = data_bytes / block_bytes;
        uint64_t size = blocks * 48 + (uint64_t) max_thins * 4096;
        if (size < TS_POOL_MIN_META_BYTES)
                size = TS_POOL_MIN_META_BYTES;
        size = (size + (1ULL << 20) - 1) & ~((1ULL << 20) - 1);
        if (size > TS_POOL_MAX_META_BYTES)
                size = TS_POOL_MAX_META_BYTES;
        return size;
}

int ts_pool_format_table(const char *meta_dev, const char *data_dev, const ts_pool_params *p,
                         char **ret) {
        const char *features[4];
        int n = 0;
        if (p->skip_block_zeroing)
                features[n++] = "skip_block_zeroing";
        if (p->ignore_discard)
                features[n++] = "ignore_discard";
        if (p->no_discard_passdown)
                features[n++] = "no_discard_passdown";
        if (p->error_if_no_space)
                features[n++] = "error_if_no_space";

        char feat[160] = "";
        if (n > 0) {
                size_t off = (size_t) snprintf(feat, sizeof(feat), " %d", n);
                for (int i = 0; i < n; i++)
                        off += (size_t) snprintf(feat + off, sizeof(feat) - off, " %s", features[i]);
        }
        if (asprintf(ret, "%s %s %" PRIu64 " %" PRIu64 "%s", meta_dev, data_dev,
                     p->data_block_sectors, p->low_water_blocks, feat) < 0)
                return -ENOMEM;
        return 0;
}

int ts_pool_parse_table(const char *params, char *meta_dev, char *data_dev, ts_pool_params *ret) {
        ts_pool_params p = { 0 };
        char meta[32], data[32];
        int consumed = 0;
        unsigned nfeat = 0;
        if (sscanf(params, "%31s %31s %" SCNu64 " %" SCNu64 "%n", meta, data, &p.data_block_sectors,
                   &p.low_water_blocks, &consumed) != 4)
                return -EINVAL;
        const char *rest = params + consumed;
        int c2 = 0;
        if (sscanf(rest, " %u%n", &nfeat, &c2) == 1) {
                rest += c2;
                for (unsigned i = 0; i < nfeat; i++) {
                        char f[64];
                        int c3 = 0;
                        if (sscanf(rest, " %63s%n", f, &c3) != 1)
                                return -EINVAL;
                        rest += c3;
                        if (strcmp(f, "skip_block_zeroing") == 0)
                                p.skip_block_zeroing = true;
                        else if (strcmp(f, "ignore_discard") == 0)
                                p.ignore_discard = true;
                        else if (strcmp(f, "no_discard_passdown") == 0)
                                p.no_discard_passdown = true;
                        else if (strcmp(f, "error_if_no_space") == 0)
                                p.error_if_no_space = true;
                        /* read_only and unknown features are tolerated */
                }
        }
        memcpy(meta_dev, meta, sizeof(meta));
        memcpy(data_dev, data, sizeof(data));
        *ret = p;
        return 0;
}

int ts_pool_parse_status(const char *params, ts_pool_status *ret) {
        ts_dm_init(); /* libdevmapper logs parse errors: route them */
        struct dm_pool *mem = dm_pool_create("ts-pool-status", 256);
        if (!mem)
                return -ENOMEM;
        struct dm_status_thin_pool *s = NULL;
        int ok = dm_get_status_thin_pool(mem, params, &s);
        if (ok && s) {
                *ret = (ts_pool_status) {
                        .transaction_id = s->transaction_id,
                        .used_meta_blocks = s->used_metadata_blocks,
                        .total_meta_blocks = s->total_metadata_blocks,
                        .used_data_blocks = s->used_data_blocks,
                        .total_data_blocks = s->total_data_blocks,
                        .read_only = s->read_only,
                        .out_of_data_space = s->out_of_data_space,
                        .needs_check = s->needs_check,
                        .fail = s->fail || s->error,
                        .error_if_no_space = s->error_if_no_space,
                };
        }
        dm_pool_destroy(mem);
        return ok && s ? 0 : -EINVAL;
}

/* Resolves a block device path to "maj:min" and its size in bytes. */
static int block_dev(const char *path, const char *role, char mm[32], uint64_t *ret_bytes,
                     ts_error **err) {
        struct stat st;
        if (stat(path, &st) < 0)
                return ts_error_set(err, errno, "%s device %s", role, path);
        if (!S_ISBLK(st.st_mode))
                return ts_error_setf_plain(err, ENOTBLK, "%s device %s is not a block device", role,
                                           path);
        /* O_EXCL on a block device fails with EBUSY when it is mounted or
         * held by another device: a clearer message than the table load's. */
        int fd = open(path, O_RDONLY | O_EXCL | O_CLOEXEC);
        if (fd < 0) {
                if (errno == EBUSY)
                        return ts_error_setf_plain(err, EBUSY,
                                                   "%s device %s is in use (mounted, or held by "
                                                   "another device)",
                                                   role, path);
                return ts_error_set(err, errno, "%s device %s", role, path);
        }
        uint64_t bytes = 0;
        off_t end = lseek(fd, 0, SEEK_END);
        close(fd);
        if (end < 0)
                return ts_error_set(err, errno, "%s device %s: size", role, path);
        bytes = (uint64_t) end;
        snprintf(mm, 32, "%u:%u", major(st.st_rdev), minor(st.st_rdev));
        *ret_bytes = bytes;
        return 0;
}

int ts_pool_create(const char *name, const char *meta_path, const char *data_path,
                   uint64_t data_sectors, const ts_pool_params *p, ts_error **err) {
        int r = ts_pool_check_name(name, err);
        if (r < 0)
                return r;
        r = ts_pool_check_block_size(p->data_block_sectors * TS_SECTOR_SIZE, err);
        if (r < 0)
                return r;

        ts_dm_info info;
        r = ts_dm_info_get(name, &info, err);
        if (r < 0)
                return r;
        if (info.exists)
                return ts_error_setf_plain(err, EEXIST, "a device named %s exists already", name);

        char meta_mm[32], data_mm[32];
        uint64_t meta_bytes, data_bytes;
        r = block_dev(meta_path, "metadata", meta_mm, &meta_bytes, err);
        if (r < 0)
                return r;
        r = block_dev(data_path, "data", data_mm, &data_bytes, err);
        if (r < 0)
                return r;
        if (strcmp(meta_mm, data_mm) == 0)
                return ts_error_setf_plain(err, EINVAL,
                                           "metadata and data are the same device (%s)", meta_path);
        if (meta_bytes < TS_POOL_MIN_META_BYTES)
                return ts_error_setf_plain(err, EINVAL,
                                           "metadata device %s has %" PRIu64 " bytes: at least "
                                           "2 MiB are needed",
                                           meta_path, meta_bytes);
        uint64_t avail = data_bytes / TS_SECTOR_SIZE;
        if (data_sectors == 0 || data_sectors > avail)
                data_sectors = avail;
        data_sectors -= data_sectors % p->data_block_sectors;
        if (data_sectors == 0)
                return ts_error_setf_plain(err, EINVAL,
                                           "data device %s (%" PRIu64 " bytes) is smaller than "
                                           "one data block (%" PRIu64 " bytes)",
                                           data_path, data_bytes,
                                           p->data_block_sectors * TS_SECTOR_SIZE);

        _cleanup_free_ char *table = NULL;
        if (ts_pool_format_table(meta_mm, data_mm, p, &table) < 0)
                return ts_error_set(err, ENOMEM, "pool %s", name);
        r = ts_dm_create(name, NULL, data_sectors, "thin-pool", table, false, err);
        if (r < 0)
                return ts_error_prefix(err, r, "create pool %s", name);
        log_debug("created pool %s (%s)", name, table);
        return 0;
}

ts_pool *ts_pool_free(ts_pool *pool) {
        if (pool) {
                free(pool->name);
                free(pool);
        }
        return NULL;
}

int ts_pool_open(const char *name, ts_pool **ret, ts_error **err) {
        ts_dm_info info;
        int r = ts_dm_info_get(name, &info, err);
        if (r < 0)
                return ts_error_prefix(err, r, "open pool");
        if (!info.exists)
                return ts_error_setf_plain(err, ENXIO, "pool %s does not exist (create it with "
                                                       "'thinsnap pool create' or attach it with "
                                                       "'thinsnap pool attach')",
                                           name);
        _cleanup_free_ char *type = NULL, *params = NULL;
        uint64_t sectors;
        r = ts_dm_target_get(name, true, &type, &sectors, &params, err);
        if (r < 0)
                return ts_error_prefix(err, r, "open pool");
        if (strcmp(type, "thin-pool") != 0)
                return ts_error_setf_plain(err, EMEDIUMTYPE,
                                           "device %s is a %s device, not a thin-pool", name, type);

        _cleanup_pool_ ts_pool *pool = calloc(1, sizeof(*pool));
        if (!pool || !(pool->name = strdup(name)))
                return ts_error_set(err, ENOMEM, "open pool %s", name);
        if (ts_pool_parse_table(params, pool->meta_dev, pool->data_dev, &pool->params) < 0)
                return ts_error_setf_plain(err, EINVAL, "pool %s: cannot read its table '%s'",
                                           name, params);
        pool->major = info.major;
        pool->minor = info.minor;
        pool->data_sectors = sectors;
        *ret = TAKE_PTR(pool);
        return 0;
}

/* The size of block device maj:min in sectors, from sysfs. */
static int dev_sectors(const char *mm, uint64_t *ret) {
        unsigned ma, mi;
        if (sscanf(mm, "%u:%u", &ma, &mi) != 2)
                return -EINVAL;
        char path[64];
        snprintf(path, sizeof path, "/sys/dev/block/%u:%u/size", ma, mi);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return negative_errno();
        return fscanf(f, "%" SCNu64, ret) == 1 ? 0 : -EIO;
}

int ts_pool_reload(const char *name, uint64_t data_sectors, ts_error **err) {
        _cleanup_pool_ ts_pool *pool = NULL;
        int r = ts_pool_open(name, &pool, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *params = NULL;
        r = ts_dm_target_get(name, true, NULL, NULL, &params, err);
        if (r < 0)
                return ts_error_prefix(err, r, "pool %s", name);
        uint64_t block = pool->params.data_block_sectors, old = pool->data_sectors, avail = 0;
        if (data_sectors == 0)
                data_sectors = old;
        data_sectors -= data_sectors % block;
        if (data_sectors < old)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: its data cannot shrink (%" PRIu64 " sectors "
                                           "mapped, %" PRIu64 " asked for)",
                                           name, old, data_sectors);
        if (dev_sectors(pool->data_dev, &avail) == 0 && avail < data_sectors)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool %s: its data device %s has %" PRIu64 " sectors, "
                                           "fewer than the %" PRIu64 " asked for",
                                           name, pool->data_dev, avail, data_sectors);
        r = ts_dm_reload(name, data_sectors, "thin-pool", params, err);
        if (r < 0) {
                ts_error_prefix(err, r, "pool %s", name);
                /* The kernel refused the new table at the resume: the pool
                 * must not stay suspended. */
                (void) ts_dm_reload(name, old, "thin-pool", params, NULL);
                return r;
        }
        log_debug("reloaded pool %s: %" PRIu64 " data sectors (were %" PRIu64 ")", name,
                  data_sectors, old);
        return 0;
}

int ts_pool_get_status(const ts_pool *pool, ts_pool_status *ret, ts_error **err) {
        _cleanup_free_ char *type = NULL, *params = NULL;
        int r = ts_dm_target_get(pool->name, false, &type, NULL, &params, err);
        if (r < 0)
                return ts_error_prefix(err, r, "pool %s", pool->name);
        if (strcmp(type, "thin-pool") != 0)
                return ts_error_setf_plain(err, EMEDIUMTYPE, "device %s is not a thin-pool",
                                           pool->name);
        if (ts_pool_parse_status(params, ret) < 0)
                return ts_error_setf_plain(err, EINVAL, "pool %s: cannot read its status '%s'",
                                           pool->name, params);
        return 0;
}

/* Metadata blocks kept for the devices there are: each write that breaks
 * sharing with a parent copies mapping-tree nodes, and a kernel pool that
 * runs out of metadata turns read-only (even deletes fail). New devices are
 * refused while a sixteenth (at least 16 blocks) is left; figures a
 * little old must not let a burst of Prepares and writes past it. */
static uint64_t meta_reserve(uint64_t total) {
        return total / 16 > 16 ? total / 16 : 16;
}

int ts_pool_status_space(const char *name, const ts_pool_status *st, ts_error **err) {
        bool data_full = st->out_of_data_space || st->used_data_blocks >= st->total_data_blocks;
        bool meta_full = st->total_meta_blocks &&
                         st->used_meta_blocks + meta_reserve(st->total_meta_blocks) >= st->total_meta_blocks;
        if (!data_full && !meta_full)
                return 0;
        return ts_error_setf_plain(err, ENOSPC,
                                   "pool %s is out of %s space: data %" PRIu64 "/%" PRIu64
                                   " blocks, metadata %" PRIu64 "/%" PRIu64 " blocks used "
                                   "(grow it with 'thinsnap pool extend %s')",
                                   name, data_full ? "data" : "metadata", st->used_data_blocks,
                                   st->total_data_blocks, st->used_meta_blocks, st->total_meta_blocks,
                                   name);
}

int ts_pool_active_devices(const ts_pool *pool, char ***ret, ts_error **err) {
        return ts_dm_holders(pool->major, pool->minor, ret, err);
}

int ts_pool_destroy(const char *name, bool force, ts_error **err) {
        _cleanup_pool_ ts_pool *pool = NULL;
        int r = ts_pool_open(name, &pool, err);
        if (r < 0)
                return r;
        _cleanup_strv_free_ char **users = NULL;
        r = ts_pool_active_devices(pool, &users, err);
        if (r < 0)
                return ts_error_prefix(err, r, "destroy pool %s", name);
        size_t n = ts_strv_length(users);
        if (n > 0 && !force)
                return ts_error_setf_plain(err, EBUSY,
                                           "pool %s has %zu active device%s (first: %s)",
                                           name, n, n == 1 ? "" : "s", users[0]);
        for (size_t i = 0; i < n; i++) {
                r = ts_thin_deactivate(users[i], 0, err);
                if (r < 0)
                        return ts_error_prefix(err, r, "destroy pool %s", name);
        }
        r = ts_dm_remove(name, 0, err);
        if (r < 0)
                return ts_error_prefix(err, r, "destroy pool");
        return 0;
}
