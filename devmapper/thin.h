/* Thin devices inside a pool: create, snapshot, activate, deactivate,
 * delete, status. Device ids are the pool's 24-bit thin ids. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "dm.h"
#include "pool.h"

#define TS_THIN_MAX_ID ((1U << 24) - 1)

typedef struct ts_thin_status {
        uint64_t mapped_sectors;
        uint64_t highest_mapped_sector; /* meaningful when mapped_sectors > 0 */
        bool fail;
} ts_thin_status;

enum {
        TS_THIN_READ_ONLY = 1 << 0, /* ts_thin_activate: a read-only mapping */
        TS_THIN_DEFERRED = 1 << 1,  /* ts_thin_deactivate: remove on last close */
};

/* Checks a thin id against the 24-bit limit. Returns 0 or -ERANGE. */
int ts_thin_check_id(uint64_t id, ts_error **err);

/* Creates an empty thin device `id` in the pool. Returns 0, -EEXIST (id in
 * use), -ERANGE (id above the limit), -ENOSPC (pool metadata full), or
 * -errno. */
int ts_thin_create(const ts_pool *pool, uint32_t id, ts_error **err);

/* Creates thin device `id` as a snapshot of `origin_id`. When origin_name
 * is not NULL and that device is active, it is suspended (flushing it)
 * around the snapshot and resumed after, whatever happened; an inactive
 * origin costs one message. Returns 0, -EEXIST, -ENODATA (no such origin),
 * -ERANGE, -ENOSPC, or -errno. */
int ts_thin_snap(const ts_pool *pool, uint32_t id, uint32_t origin_id, const char *origin_name,
                 ts_error **err);

/* Activates thin device `id` as /dev/mapper/<name>, `size_bytes` long (a
 * multiple of 512). The node exists on return. Returns 0, -EEXIST (a device
 * of that name exists), -EINVAL, or -errno; on failure no device is left. */
int ts_thin_activate(const ts_pool *pool, const char *name, uint32_t id, uint64_t size_bytes,
                     unsigned flags, ts_error **err);

/* ts_thin_activate, calling step (NULL: none) between the device's create,
 * its table load and its resume (ts_dm_create_stepped). */
int ts_thin_activate_stepped(const ts_pool *pool, const char *name, uint32_t id, uint64_t size_bytes,
                             unsigned flags, ts_dm_step_fn step, void *userdata, ts_error **err);

/* What /dev/mapper/<name> holds, when it is thin device id of a pool. */
typedef struct ts_thin_found {
        bool exists;
        bool usable;     /* a live table, not suspended, node in place: use it as it is */
        bool live_table; /* else: an inactive table, or none at all */
        bool suspended;
        int32_t open_count;
} ts_thin_found;

/* Looks at device <name> before it is removed or taken as thin device id
 * of pool: its live table, else its inactive one (a load not resumed),
 * must be the one target `thin <pool maj:min> <id>`, or it has no table at
 * all (a create whose load never came). Absent: ret->exists is false.
 * Returns 0; -EMEDIUMTYPE when it holds anything else (the message names
 * its table): it is not this pool's to remove; or -errno. */
int ts_thin_probe(const ts_pool *pool, const char *name, uint32_t id, ts_thin_found *ret,
                  ts_error **err);

/* Deactivates /dev/mapper/<name>. While it is busy (held open), retries
 * with backoff (about 1.3 s in all) before returning -EBUSY; with
 * TS_THIN_DEFERRED, a busy device is removed when its last user closes it
 * and 0 is returned. A device that does not exist counts as done (0). */
int ts_thin_deactivate(const char *name, unsigned flags, ts_error **err);

/* Deletes thin device `id` from the pool (it must be inactive). An id that
 * does not exist counts as done (the kernel's ENODATA). Returns 0, -EBUSY
 * (active), or -errno. */
int ts_thin_delete(const ts_pool *pool, uint32_t id, ts_error **err);

/* Parses a thin target status line ("<mapped> <highest>", "- " or
 * "Fail"). Returns 0 or -EINVAL. */
int ts_thin_parse_status(const char *params, ts_thin_status *ret);

/* Reads the status of active thin device /dev/mapper/<name>. Returns 0,
 * -ENXIO (not active), -EMEDIUMTYPE (not a thin device), or -errno. */
int ts_thin_get_status(const char *name, ts_thin_status *ret, ts_error **err);
