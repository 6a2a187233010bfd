/* dm-thin pools: table building, create, open, status, destroy.
 *
 * Sizes in the kernel's tables are in 512-byte sectors; this API takes
 * sectors where it mirrors the table and says so. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

#define TS_SECTOR_SIZE ((uint64_t) 512)
#define TS_POOL_MIN_BLOCK_SECTORS 128ULL      /* 64 KiB */
#define TS_POOL_MAX_BLOCK_SECTORS 2097152ULL  /* 1 GiB */
#define TS_POOL_MIN_META_BYTES (2ULL << 20)   /* 2 MiB */
#define TS_POOL_MAX_META_BYTES (16ULL << 30)  /* the kernel uses at most ~15.8 GiB */
#define TS_POOL_NAME_MAX 64

typedef struct ts_pool_params {
        uint64_t data_block_sectors; /* multiple of 128, 128..2097152 */
        uint64_t low_water_blocks;
        bool skip_block_zeroing;
        bool ignore_discard;
        bool no_discard_passdown;
        bool error_if_no_space;
} ts_pool_params;

typedef struct ts_pool {
        char *name;
        uint32_t major, minor;       /* the pool device */
        uint64_t data_sectors;       /* length of the pool table */
        ts_pool_params params;       /* as read back from the live table */
        char meta_dev[32];           /* "maj:min" of the metadata device */
        char data_dev[32];           /* "maj:min" of the data device */
} ts_pool;

typedef struct ts_pool_status {
        uint64_t transaction_id;
        uint64_t used_meta_blocks, total_meta_blocks; /* 4 KiB metadata blocks */
        uint64_t used_data_blocks, total_data_blocks; /* data_block_sectors each */
        bool read_only;
        bool out_of_data_space;
        bool needs_check;
        bool fail;
        bool error_if_no_space;
} ts_pool_status;

/* -ENOSPC with the pool's figures ("pool tp is out of data space: data 10/10
 * blocks, metadata 30/512 blocks used (grow it with 'thinsnap pool extend
 * tp')") when st shows no data block left or metadata within a sixteenth
 * (at least 16 blocks) of full; else 0. */
int ts_pool_status_space(const char *name, const ts_pool_status *st, ts_error **err);

/* Checks a pool name: 1..64 characters of [A-Za-z0-9._-], not starting with
 * '.' or '-'. Returns 0 or -EINVAL with a message. */
int ts_pool_check_name(const char *name, ts_error **err);

/* Checks a data block size in bytes: a multiple of 64 KiB between 64 KiB and
 * 1 GiB. Returns 0 or -EINVAL with a message. */
int ts_pool_check_block_size(uint64_t bytes, ts_error **err);

/* The metadata size for a data device: 48 bytes per data block (the
 * kernel's figure), plus 4 KiB of headroom for each of max_thins thin
 * devices, at least 2 MiB, rounded up to 1 MiB, at most 16 GiB. */
uint64_t ts_pool_meta_size(uint64_t data_bytes, uint64_t block_bytes, uint32_t max_thins);

/* Builds the thin-pool table parameters:
 * "<meta> <data> <block sectors> <low water> [<n> <features>...]".
 * Returns 0 or -ENOMEM. */
int ts_pool_format_table(const char *meta_dev, const char *data_dev, const ts_pool_params *p,
                         char **ret);

/* Parses thin-pool table parameters back. Writes the two device strings
 * (maj:min) into meta/data (32 bytes each). Returns 0 or -EINVAL. */
int ts_pool_parse_table(const char *params, char *meta_dev, char *data_dev, ts_pool_params *ret);

/* Parses a thin-pool status line (as the kernel prints it; "Fail" and
 * "Error" included). Returns 0 or -EINVAL. */
int ts_pool_parse_status(const char *params, ts_pool_status *ret);

/* Creates pool device `name` on block devices meta_path and data_path,
 * using data_sectors of the data device (rounded down to whole blocks).
 * The kernel formats the metadata when its superblock is zeroed and opens
 * existing metadata otherwise. Returns 0, -EEXIST (a device of that name
 * exists), -EBUSY (a device is in use), -ENOTBLK, -EINVAL (sizes, or the
 * kernel rejected the table; the message says which), or -errno. */
int ts_pool_create(const char *name, const char *meta_path, const char *data_path,
                   uint64_t data_sectors, const ts_pool_params *p, ts_error **err);

/* Opens an existing pool by name and reads its table. Returns 0, -ENXIO
 * (no device of that name), -EMEDIUMTYPE (the device is not a thin-pool),
 * or -errno. */
int ts_pool_open(const char *name, ts_pool **ret, ts_error **err);

/* Reloads pool `name`'s table with the data device `data_sectors` long
 * (rounded down to whole blocks; 0 keeps the table's length), the same
 * devices and the same features, so that the kernel takes what grew: a
 * longer data device, and a larger metadata device (read at the resume).
 * Online: the pool and its thin devices are suspended for a moment, without
 * flushing. When the new table does not resume, the old one is put back.
 * Returns 0, -ENXIO (no such pool), -EMEDIUMTYPE, -EINVAL (shorter than the
 * table, or longer than the data device: the message says which), or the
 * kernel's -errno. */
int ts_pool_reload(const char *name, uint64_t data_sectors, ts_error **err);

/* Frees a pool handle; accepts NULL; returns NULL. */
ts_pool *ts_pool_free(ts_pool *pool);

static inline void ts_pool_freep(ts_pool **p) {
        ts_pool_free(*p);
}
#define _cleanup_pool_ _cleanup_(ts_pool_freep)

/* Reads the pool's live status. Returns 0 or -errno. */
int ts_pool_get_status(const ts_pool *pool, ts_pool_status *ret, ts_error **err);

/* Lists the active devices built on the pool (its holders). Returns 0 and
 * a NULL-terminated array owned by the caller, or -errno. */
int ts_pool_active_devices(const ts_pool *pool, char ***ret, ts_error **err);

/* Removes pool device `name`. Refuses with -EBUSY while thin devices of the
 * pool are active, unless force, which first deactivates them. Thin devices
 * stay in the pool's metadata. Returns 0, -ENXIO (no such pool), -EBUSY, or
 * -errno. */
int ts_pool_destroy(const char *name, bool force, ts_error **err);
