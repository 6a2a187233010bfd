/* The snapshotter: containerd's snapshot semantics on the LMDB store and
 * the thin pool, with the crash-safety protocol of store/README.md. It knows
 * nothing of gRPC; plugin/service.c maps the Snapshots API onto it.
 *
 * Every snapshot is thin device <pool>-snap-<dev id>. Views and active
 * snapshots are active devices; committed snapshots and the base device
 * are kept inactive, so cutting a child from them is one pool message.
 *
 * Functions are safe to call from several threads at once; operations on
 * the same (namespace, key) are serialised. Errors are -errno as in
 * store/store.h (the service maps them to containerd's errdefs), with
 * -ENOSPC also for a pool out of data or metadata space. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "plugin/filter.h"
#include "plugin/snapdev.h"
#include "store/store.h"

typedef struct ts_snapshotter ts_snapshotter;

typedef struct ts_snapshotter_config {
        const char *root;         /* state directory (LMDB store) */
        const char *pool;         /* dm name of an existing thin pool */
        uint64_t base_size;       /* bytes; the size of every snapshot's device */
        const char *mkfs;         /* mkfs.ext4 to run once per pool and size; NULL: "mkfs.ext4" */
        bool async_remove;        /* Remove returns once the intent is recorded */
        bool discard_on_remove;   /* discard an active device's blocks before delete */
        uint32_t dev_id_max;      /* 0: the 24-bit limit (tests lower it) */
        ts_snapdev *dev;          /* NULL: the thin pool `pool` (snapdev.h); else this device
                                   * layer, which the snapshotter takes over (also on failure) */
} ts_snapshotter_config;

typedef struct ts_mount {
        char source[128]; /* the device (ts_snapdev_path): /dev/mapper/<pool>-snap-<id> */
        bool read_only;
} ts_mount;

/* Opens the store and the pool, refuses a pool that is read-only, failed or
 * needs_check, reconciles records left by a crash (rolls back CREATING,
 * finishes REMOVING, re-activates READY active/view devices, deactivates
 * committed ones), and makes sure the base device of cfg->base_size exists
 * and is formatted (the one mkfs of this pool and size). Returns 0 or
 * -errno (-ENXIO no such pool, -EUCLEAN pool needs_check, -EROFS pool
 * read-only or failed). */
int ts_snapshotter_open(const ts_snapshotter_config *cfg, ts_snapshotter **ret, ts_error **err);

/* Stops background work (async removal finishes what it started) and frees
 * everything. Accepts NULL; returns NULL. */
ts_snapshotter *ts_snapshotter_close(ts_snapshotter *s);

/* Prepare (kind ACTIVE) or View (kind VIEW) of key on parent (NULL or ""
 * for none): the new device is active and its mount is written to
 * *ret_mount. Returns 0, -EEXIST, -ENOENT (parent), -EINVAL (parent not
 * committed, bad key), -ENOSPC (pool or ids exhausted; the message has the
 * pool's figures), or -errno. Nothing is left behind on failure. */
int ts_snapshotter_prepare(ts_snapshotter *s, const char *ns, const char *key, const char *parent,
                           ts_snapshot_kind kind, const ts_label *labels, size_t n_labels,
                           ts_mount *ret_mount, ts_error **err);

/* The mount of an active or view snapshot. Returns 0, -ENOENT, -EBUSY
 * (committed: not active or view). */
int ts_snapshotter_mounts(ts_snapshotter *s, const char *ns, const char *key, ts_mount *ret_mount,
                          ts_error **err);

/* Commits active snapshot key as name (labels replace the key's). Returns
 * 0, -EEXIST (name taken), -ENOENT, -EBUSY (not active, or the device is
 * still in use), or -errno. */
int ts_snapshotter_commit(ts_snapshotter *s, const char *ns, const char *name, const char *key,
                          const ts_label *labels, size_t n_labels, ts_error **err);

/* Removes key and its device. Returns 0, -ENOENT, -ENOTEMPTY (it has
 * children), -EBUSY (its device is in use, or another operation on it is in
 * progress), or -errno. */
int ts_snapshotter_remove(ts_snapshotter *s, const char *ns, const char *key, ts_error **err);

/* The record of key (READY records only; others are -ENOENT). Release
 * *ret_info with ts_store_info_done. */
int ts_snapshotter_stat(ts_snapshotter *s, const char *ns, const char *key, ts_store_info *ret_info,
                        ts_error **err);

/* containerd's Update (store.h ts_store_update). */
int ts_snapshotter_update(ts_snapshotter *s, const char *ns, const char *key, const ts_label *labels,
                          size_t n_labels, const char *const *paths, size_t n_paths,
                          ts_store_info *ret_info, ts_error **err);

/* Usage: committed snapshots report what was recorded at commit; active
 * ones the device's mapped bytes less those of its parents, as containerd's
 * devmapper snapshotter counts them. */
int ts_snapshotter_usage(ts_snapshotter *s, const char *ns, const char *key, int64_t *ret_size,
                         int64_t *ret_inodes, ts_error **err);

/* Calls fn for every READY snapshot of ns that matches filter (NULL: all).
 * A non-zero return of fn stops the walk and is returned. */
int ts_snapshotter_walk(ts_snapshotter *s, const char *ns, const ts_filter *filter,
                        ts_store_walk_fn fn, void *userdata, ts_error **err);

/* Finishes pending removals (async mode) now. Returns 0 or -errno. */
int ts_snapshotter_cleanup(ts_snapshotter *s, ts_error **err);
