/* The one adapter between thinsnap and libdevmapper.
 *
 * Every libdevmapper call goes through here: its 1/0 results become -errno
 * (from dm_task_get_errno), its log lines go to our logger at debug level,
 * and device nodes are guaranteed to exist (or be gone) when a call returns,
 * with udev (a real host: cookie + dm_udev_wait) or without it (a guest or a
 * container: the node is made at each resume and unlinked at each removal
 * here rather than by libdevmapper, root:disk 0660, so that devices are
 * activated and removed side by side; see dm.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "common/strv.h"

typedef struct ts_dm_info {
        bool exists;
        bool suspended;
        bool read_only;
        bool live_table;
        bool inactive_table; /* loaded, not resumed yet */
        int32_t open_count;
        uint32_t major;
        uint32_t minor;
        int32_t target_count;
} ts_dm_info;

/* One-time set-up (thread-safe, idempotent): log routing and udev mode. */
void ts_dm_init(void);

/* Checks that the kernel has device-mapper and the thin-pool target.
 * Returns 0, or -ENODEV (no /dev/mapper/control, no dm or no dm-thin-pool:
 * the message says which module to load) or -EACCES (not permitted). */
int ts_dm_check_available(ts_error **err);

/* Queries a device by name. A missing device is not an error: ret->exists
 * is false. Returns 0 or -errno. */
int ts_dm_info_get(const char *name, ts_dm_info *ret, ts_error **err);

/* Creates device `name` with a single-target table (start 0, `sectors`
 * long, `target` type, `params`) and resumes it; the node /dev/mapper/<name>
 * exists on return. uuid may be NULL. read_only activates it read-only.
 * On failure nothing is left behind. Returns 0, -EEXIST (name taken),
 * -EINVAL (table rejected), -ENOMEM, or the kernel's -errno. */
int ts_dm_create(const char *name, const char *uuid, uint64_t sectors, const char *target,
                 const char *params, bool read_only, ts_error **err);

/* Called by ts_dm_create_stepped after each of its first two steps:
 * "create" (the device exists with no table) and "load" (its table is
 * loaded, not live yet), so a crash test can kill the process where the
 * kernel holds a half-made device. */
typedef void (*ts_dm_step_fn)(void *userdata, const char *step);

/* ts_dm_create, calling step (NULL: none) between its steps. */
int ts_dm_create_stepped(const char *name, const char *uuid, uint64_t sectors, const char *target,
                         const char *params, bool read_only, ts_dm_step_fn step, void *userdata,
                         ts_error **err);

/* Flags for ts_dm_remove. */
enum {
        TS_DM_REMOVE_DEFERRED = 1 << 0, /* remove when the last opener closes */
};

/* Removes device `name`; its node is gone on return. A missing device
 * returns -ENXIO. A device held open returns -EBUSY (no retry here).
 * Returns 0 or -errno. */
int ts_dm_remove(const char *name, unsigned flags, ts_error **err);

/* Suspends (flushing) or resumes device `name`. Returns 0 or -errno. */
int ts_dm_suspend(const char *name, ts_error **err);
int ts_dm_resume(const char *name, ts_error **err);

/* Replaces the table of live device `name` with a single-target table
 * (start 0, `sectors` long, `target`, `params`): loads it (a table the
 * kernel rejects leaves the device as it was), suspends the device without
 * flushing (I/O a thin pool queues while it is out of space must not hold
 * the suspend) and resumes it with the new table. When the resume fails the
 * device may be left suspended with the new table: the caller loads the old
 * one again. Returns 0, -ENXIO (no such device), -EINVAL (table rejected)
 * or the kernel's -errno. */
int ts_dm_reload(const char *name, uint64_t sectors, const char *target, const char *params,
                 ts_error **err);

/* Sends a target message (sector 0) to device `name`. Returns 0 or the
 * kernel's -errno (e.g. -EEXIST, -ENODATA, -ENOSPC from dm-thin). */
int ts_dm_message(const char *name, const char *message, ts_error **err);

/* Reads the first target of `name`'s live status (table=false) or table
 * (table=true): its type, start, length and parameter string. The strings
 * are owned by the caller. Returns 0, -ENXIO (no such device), -ENODATA
 * (no live table) or -errno. */
int ts_dm_target_get(const char *name, bool table, char **ret_type, uint64_t *ret_sectors,
                     char **ret_params, ts_error **err);

/* Reads device `name`'s info and the first of its targets in its live table
 * (inactive: the table loaded but not resumed yet): *ret_type is NULL when
 * there is no such table, and ret_targets counts its targets. A missing
 * device is not an error: ret_info->exists is false. The strings (NULL
 * without a table) are owned by the caller. Returns 0 or -errno. */
int ts_dm_table_query(const char *name, bool inactive, ts_dm_info *ret_info, char **ret_type,
                      char **ret_params, unsigned *ret_targets, ts_error **err);

/* Lists the dm device names that hold (use) block device maj:min, read from
 * sysfs holders/. *ret is a NULL-terminated array owned by the caller (free
 * each element and the array); may be empty. Returns 0 or -errno. */
int ts_dm_holders(uint32_t major, uint32_t minor, char ***ret, ts_error **err);

