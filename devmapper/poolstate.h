/* The pool state file: what `thinsnap pool create` set up, so that
 * `thinsnap pool attach` can set it up again after a reboot (loop devices
 * do not survive one) and `destroy` knows what to take down.
 *
 * One JSON file per pool, <state dir>/<name>.json, written atomically. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "pool.h"

#define TS_POOLSTATE_DEFAULT_DIR "/var/lib/thinsnap/pools"

typedef struct ts_pooldev {
        char *path;    /* a regular file (on a loop device) or a block device */
        bool is_file;
        uint64_t size; /* bytes, as created or found */
        char *id;      /* a block device's identity (ts_poolprov_device_id), NULL: none known */
} ts_pooldev;

typedef struct ts_poolspec {
        char *name;
        ts_pooldev data;
        ts_pooldev meta;
        ts_pool_params params;
} ts_poolspec;

/* Frees a spec; accepts NULL; returns NULL. */
ts_poolspec *ts_poolstate_free(ts_poolspec *s);
static inline void ts_poolstate_freep(ts_poolspec **s) {
        ts_poolstate_free(*s);
}
#define _cleanup_poolspec_ _cleanup_(ts_poolstate_freep)

/* Serialises a spec to JSON text (owned by the caller). Returns 0 or
 * -ENOMEM. */
int ts_poolstate_to_json(const ts_poolspec *s, char **ret);

/* Parses JSON text into a spec, checking every field (types, a valid
 * name, a valid block size, absolute paths). Returns 0, -EINVAL with a
 * message naming the field, or -ENOMEM. */
int ts_poolstate_from_json(const char *text, ts_poolspec **ret, ts_error **err);

/* Writes <dir>/<name>.json atomically (a new temp file, fsync, rename,
 * fsync of the directory), creating dir (0700) when missing. Every call here
 * refuses a state directory that a user other than root (or us) owns or
 * that is group- or world-writable (-EPERM, naming its mode). Returns 0 or
 * -errno. */
int ts_poolstate_write(const char *dir, const ts_poolspec *s, ts_error **err);

/* Reads <dir>/<name>.json. Returns 0, -ENOENT (no state for that pool),
 * -EINVAL (unreadable content), or -errno. */
int ts_poolstate_read(const char *dir, const char *name, ts_poolspec **ret, ts_error **err);

/* Removes <dir>/<name>.json; a missing file counts as done. */
int ts_poolstate_remove(const char *dir, const char *name, ts_error **err);

/* True when two specs describe the same pool (name, paths, kinds, sizes,
 * parameters; not the devices' identities). */
bool ts_poolstate_equal(const ts_poolspec *a, const ts_poolspec *b);
