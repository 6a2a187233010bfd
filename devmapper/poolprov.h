/* The pool provisioner: what `thinsnap pool create|attach|destroy` do.
 * Files become loop devices, block devices are used as they are, and a
 * state file remembers the set-up for attach after a reboot. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

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

/* Re-activates pool `name` from its state file (after a reboot). Returns 0
 * and TS_POOLPROV_ATTACHED or TS_POOLPROV_UNCHANGED, or -errno (-ENOENT: no
 * state; a missing backing file is named in the message). */
int ts_poolprov_attach(const char *state_dir, const char *name, ts_poolprov_outcome *ret,
                       ts_error **err);

/* Takes pool `name` down in reverse order: thin devices (only with force;
 * otherwise -EBUSY while any is active), the pool, its loop devices. Files
 * are deleted only with delete_files; the state file is removed. Returns
 * 0, -ENXIO (no such pool, active or recorded), -EBUSY, or -errno. */
int ts_poolprov_destroy(const char *state_dir, const char *name, bool force, bool delete_files,
                        ts_error **err);

/* What the first 4 KiB of a metadata device hold. */
typedef enum ts_poolprov_meta {
        TS_POOLPROV_META_ZERO,  /* all zeroes: the kernel formats it */
        TS_POOLPROV_META_THIN,  /* thin-pool metadata: reused as it is */
        TS_POOLPROV_META_OTHER, /* anything else: not to be overwritten */
} ts_poolprov_meta;

/* Classifies the head of a metadata device. Pure; len is the number of
 * bytes in buf (at most 4096 are looked at). */
ts_poolprov_meta ts_poolprov_classify_meta(const unsigned char *buf, size_t len);
