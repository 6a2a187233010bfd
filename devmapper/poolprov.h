/* The pool provisioner: what `thinsnap pool create|attach|destroy` do.
 * Files become loop devices, block devices are used as they are, and a
 * state file remembers the set-up for attach after a reboot. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "poolstate.h"

typedef struct ts_poolprov_request {
        const char *name;
        const char *data_path;
        uint64_t data_size;        /* 0: the existing file's or device's size */
        const char *meta_path;
        uint64_t meta_size;        /* 0: derived (ts_pool_meta_size) for a new file */
        uint64_t block_size;       /* bytes; 0: 64 KiB */
        uint64_t low_water_blocks;
        bool skip_block_zeroing;
        bool ignore_discard;
        bool no_discard_passdown;
        bool error_if_no_space;
} ts_poolprov_request;

typedef enum ts_poolprov_outcome {
        TS_POOLPROV_CREATED,   /* a new pool (or new metadata) was set up */
        TS_POOLPROV_ATTACHED,  /* the pool existed on disk and was activated */
        TS_POOLPROV_UNCHANGED, /* it was already there, exactly as asked */
} ts_poolprov_outcome;

/* Default metadata headroom, in thin devices (ts_pool_meta_size). */
#define TS_POOLPROV_DEFAULT_MAX_THINS 1024

/* Creates the pool described by req, or confirms it exists exactly so.
 * Sparse files are created when missing (their directory must exist).
 * On any failure, whatever this call set up is taken down again and files
 * it created are removed: bad input changes nothing. Returns 0 and the
 * outcome, or -errno: -EINVAL (sizes, names; the message says which),
 * -ENOENT (a missing file without a size, or a missing directory), -EEXIST
 * (the name belongs to a different pool or device), -EBUSY (a device in
 * use), -ENODEV (no device-mapper), -EACCES/-EPERM. */
int ts_poolprov_create(const char *state_dir, const ts_poolprov_request *req,
                       ts_poolprov_outcome *ret, ts_error **err);

/* Re-activates pool `name` from its state file (after a reboot). The
 * devices found must be the ones create recorded: a file at least as large
 * as recorded, whose loop device (when one is attached already) maps all of
 * it read-write; a block device at least as large, with the identity
 * recorded (ts_poolprov_device_id: device names can change across
 * reboots); metadata that holds the pool's superblock (never zeroes, which
 * the kernel would format) with the recorded block size and no more data
 * blocks than the data device holds. An active pool must be on the
 * recorded devices. Returns 0 and TS_POOLPROV_ATTACHED or
 * TS_POOLPROV_UNCHANGED, or -errno: -ENOENT (no state; a missing backing
 * file is named in the message), -EINVAL (a device is not the recorded
 * one: the message says how it differs), -EEXIST (active on other
 * devices). */
int ts_poolprov_attach(const char *state_dir, const char *name, ts_poolprov_outcome *ret,
                       ts_error **err);

/* Takes pool `name` down in reverse order: thin devices (only with force;
 * otherwise -EBUSY while any is active), the pool, its loop devices. Files
 * are deleted only with delete_files; the state file is removed. Returns
 * 0, -ENXIO (no such pool, active or recorded), -EBUSY, or -errno. */
int ts_poolprov_destroy(const char *state_dir, const char *name, bool force, bool delete_files,
                        ts_error **err);

typedef struct ts_poolprov_sizes {
        uint64_t data, meta; /* bytes */
} ts_poolprov_sizes;

/* Grows active pool `name` online: its data to data_size bytes and its
 * metadata to meta_size bytes (0: the file's or device's size now, which
 * takes a block device an operator grew, e.g. with lvextend). Files are
 * grown (ftruncate) and their loop devices refreshed; a block device must
 * be that large already. The state file records the new sizes, then the
 * pool's table is reloaded (metadata first: growing the data needs metadata
 * space), so a pool out of data or metadata space takes new devices again
 * at once. Never shrinks. *ret_before and *ret_after (may be NULL) get the
 * recorded sizes before and after. Returns 0 (also when nothing grew), or
 * -errno: -ENOENT (no state), -ENXIO (the pool is not active), -EINVAL (a
 * smaller size, a block device not that large, a size out of range: the
 * message says which and what to do), -EEXIST (the pool is on devices
 * other than those recorded), -EUCLEAN (the kernel marked the pool
 * needs_check). */
int ts_poolprov_extend(const char *state_dir, const char *name, uint64_t data_size,
                       uint64_t meta_size, ts_poolprov_sizes *ret_before,
                       ts_poolprov_sizes *ret_after, ts_error **err);

/* The identity of block device `rdev` that survives a reboot and a change
 * of its name, read from sysfs: "dm:<uuid>" (LVM, dm-crypt...),
 * "loop:<backing file>[@<offset>]", "wwid:<wwid>" or "serial:<serial>" of
 * the disk (with "-part<N>" for a partition). *ret is NULL when the device
 * has none of these. Returns 0 or -ENOMEM. */
int ts_poolprov_device_id(dev_t rdev, char **ret);

/* What the first 4 KiB of a metadata device hold. */
typedef enum ts_poolprov_meta {
        TS_POOLPROV_META_ZERO,  /* all zeroes: the kernel formats it */
        TS_POOLPROV_META_THIN,  /* thin-pool metadata: reused as it is */
        TS_POOLPROV_META_OTHER, /* anything else: not to be overwritten */
} ts_poolprov_meta;

/* Classifies the head of a metadata device. Pure; len is the number of
 * bytes in buf (at most 4096 are looked at). */
ts_poolprov_meta ts_poolprov_classify_meta(const unsigned char *buf, size_t len);

/* What a thin-pool superblock says about the pool's data. */
typedef struct ts_poolprov_sb {
        uint32_t data_block_sectors;
        uint64_t data_blocks; /* the data length the pool last committed */
} ts_poolprov_sb;

/* Reads the superblock at the head of a metadata device. Pure. Returns 0,
 * or -EINVAL when buf holds no thin-pool superblock. */
int ts_poolprov_parse_meta(const unsigned char *buf, size_t len, ts_poolprov_sb *ret);
