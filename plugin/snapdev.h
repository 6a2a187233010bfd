/* ts_snapdev: what the snapshotter does to devices, behind a small table of
 * functions. The snapshotter (snapshotter.c) speaks of device ids only; the
 * thin-pool implementation here turns them into dm thin devices
 * <pool>-snap-<id>, and a unit test puts a fake under the same table.
 *
 * Devices are identified by their thin id. Every function returns 0 (or the
 * count it names) or -errno and, where it takes one, describes the failure
 * in *err. Functions are safe to call from several threads at once; the
 * snapshotter serialises operations on one id. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/fault.h"

typedef struct ts_snapdev ts_snapdev;

typedef struct ts_snapdev_ops {
        /* -ENOSPC with the pool's figures when it has no data or metadata
         * space left, -EROFS when it is read-only, failed or needs_check,
         * else 0. Figures may be a moment old unless fresh; a refusal is
         * always made on fresh ones. */
        int (*check_space)(ts_snapdev *d, bool fresh, ts_error **err);
        /* Creates device id as a snapshot of device origin, which is inactive
         * or (a committed device released while still open) suspended around
         * the snapshot. -EEXIST (id in use), -ENODATA (no origin), -ENOSPC. */
        int (*snap)(ts_snapdev *d, uint32_t id, uint32_t origin, ts_error **err);
        /* Activates device id, size bytes long. -EEXIST (active already). */
        int (*activate)(ts_snapdev *d, uint32_t id, uint64_t size, ts_error **err);
        /* Deactivates device id; absent or inactive is done. A device held
         * open is retried for about a second, then -EBUSY. */
        int (*deactivate)(ts_snapdev *d, uint32_t id, ts_error **err);
        /* Deactivates device id after a Commit: a device still open (containerd
         * may commit a mounted snapshot) is removed by the kernel at its last
         * close, and a snapshot of it until then suspends it (snap). */
        int (*release)(ts_snapdev *d, uint32_t id, ts_error **err);
        /* Deactivates (-EBUSY when held open), discards every block when
         * discard (size bytes; a failed discard is logged, not returned) and
         * deletes device id. Absent counts as done. */
        int (*drop)(ts_snapdev *d, uint32_t id, uint64_t size, bool discard, ts_error **err);
        /* The bytes mapped in active device id. -ENXIO (not active). */
        int (*mapped)(ts_snapdev *d, uint32_t id, int64_t *ret, ts_error **err);
        /* Brings device id to what its record says after a stop or a reboot:
         * active (activated when absent or unusable, returns 1 then: a device
         * left without a live table, suspended or without its node by a
         * process killed while making it is made again) or inactive (a
         * device still open is removed at its last close). */
        int (*settle)(ts_snapdev *d, uint32_t id, uint64_t size, bool active, ts_error **err);
        /* The base device id of size bytes: when format, creates it (an
         * existing one, left by an interrupted format, is reused), formats it
         * ext4 and empties it; then measures the bytes mapped in it. Leaves it
         * inactive. */
        int (*base)(ts_snapdev *d, uint32_t id, uint64_t size, bool format, int64_t *ret_mapped,
                    ts_error **err);
        /* Writes the path of device id's block device into buf. */
        void (*path)(ts_snapdev *d, uint32_t id, char *buf, size_t len);
        /* Frees the handle (devices stay as they are). */
        void (*free)(ts_snapdev *d);
} ts_snapdev_ops;

/* Every implementation's handle starts with this. */
struct ts_snapdev {
        const ts_snapdev_ops *ops;
};

typedef struct ts_snapdev_config {
        const char *pool; /* dm name of an existing thin pool */
        const char *root; /* a directory for the base device's one mount */
        const char *mkfs; /* mkfs.ext4 to run once per pool and size; NULL: "mkfs.ext4" */
        ts_fault *fault;  /* crash points recover:after-create and recover:after-load, where
                             settle makes a device (borrowed; NULL: none) */
} ts_snapdev_config;

/* Opens the thin pool cfg->pool as a device layer. A device is removed
 * by its name only when that name holds this pool's thin device of the
 * id (or a device with no table, an activation cut short): anything else
 * is left as it is, with -EMEDIUMTYPE naming it. Refuses a pool that
 * needs_check (-EUCLEAN), is failed or read-only (-EROFS); -ENXIO (no such
 * pool), -ENODEV (no device-mapper), or -errno. */
int ts_snapdev_open(const ts_snapdev_config *cfg, ts_snapdev **ret, ts_error **err);

static inline int ts_snapdev_check_space(ts_snapdev *d, bool fresh, ts_error **err) {
        return d->ops->check_space(d, fresh, err);
}
static inline int ts_snapdev_snap(ts_snapdev *d, uint32_t id, uint32_t origin, ts_error **err) {
        return d->ops->snap(d, id, origin, err);
}
static inline int ts_snapdev_activate(ts_snapdev *d, uint32_t id, uint64_t size, ts_error **err) {
        return d->ops->activate(d, id, size, err);
}
static inline int ts_snapdev_deactivate(ts_snapdev *d, uint32_t id, ts_error **err) {
        return d->ops->deactivate(d, id, err);
}
static inline int ts_snapdev_release(ts_snapdev *d, uint32_t id, ts_error **err) {
        return d->ops->release(d, id, err);
}
static inline int ts_snapdev_drop(ts_snapdev *d, uint32_t id, uint64_t size, bool discard,
                                  ts_error **err) {
        return d->ops->drop(d, id, size, discard, err);
}
static inline int ts_snapdev_mapped(ts_snapdev *d, uint32_t id, int64_t *ret, ts_error **err) {
        return d->ops->mapped(d, id, ret, err);
}
static inline int ts_snapdev_settle(ts_snapdev *d, uint32_t id, uint64_t size, bool active,
                                    ts_error **err) {
        return d->ops->settle(d, id, size, active, err);
}
static inline int ts_snapdev_base(ts_snapdev *d, uint32_t id, uint64_t size, bool format,
                                  int64_t *ret_mapped, ts_error **err) {
        return d->ops->base(d, id, size, format, ret_mapped, err);
}
static inline void ts_snapdev_path(ts_snapdev *d, uint32_t id, char *buf, size_t len) {
        d->ops->path(d, id, buf, len);
}
/* Accepts NULL; returns NULL. */
static inline ts_snapdev *ts_snapdev_free(ts_snapdev *d) {
        if (d)
                d->ops->free(d);
        return NULL;
}
