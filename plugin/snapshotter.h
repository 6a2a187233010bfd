/* The snapshotter: containerd's snapshot semantics on the LMDB store
 * (store/store.h) and a device layer (snapdev.h), kept consistent across a
 * crash at any point. It knows nothing of gRPC; plugin/service.c maps the
 * Snapshots API onto it.
 *
 * Every snapshot is one device, named by its thin id D (the thin pool's
 * <pool>-snap-<D>). Views and active snapshots are active devices;
 * committed snapshots and the base device are kept inactive, so cutting a
 * child from them is one pool message and never suspends anything.
 *
 * Functions are safe to call from several threads at once. Errors are -errno
 * as in store/store.h (the service maps them to containerd's errdefs), with
 * -ENOSPC also for a pool out of data or metadata space.
 *
 * ---- The crash protocol ----
 *
 * A record's state is CREATING or REMOVING (intents) or READY (final); a base
 * record's intent is formatted=false. Every write transaction is committed
 * (fsync) before the device step that follows it, so a device never exists
 * without a record naming it, and start-up finishes or rolls back every
 * intent. Each operation holds an in-process lock on its key (Commit also on
 * the new name) from start to end: a Remove slipping between a Commit's
 * release and its rename would delete a device the Commit is publishing.
 * Taking a lock may fail (-ENOMEM); giving it back allocates nothing and
 * cannot.
 * Stat, List and Mounts show READY records only.
 *
 * Open: the pool is refused when needs_check (-EUCLEAN), failed or read-only
 * (-EROFS). Then, in one read transaction, every record is collected:
 * CREATING is rolled back (drop D, delete the record); REMOVING is finished
 * (drop D, delete the record), or left REMOVING when D is still held open
 * (it must not keep the daemon down: the reaper, a reuse of the key or the
 * next start finishes it); READY committed is made inactive (at its last
 * close when held); READY active or view is activated when absent (after a
 * reboot none is) or unusable (no live table, suspended or no node: what a
 * start killed while activating it leaves), and taken as it is otherwise.
 * A device under D's name that is not D of this pool is never removed: the
 * open fails naming it. Formatted base devices are made inactive; a base whose
 * format did not finish is dropped with its record. Then the base device.
 *
 * Base device, at open, once per pool and base size:
 *   1. txn: the base record of this size, or a new one, formatted=false, with
 *      a new device id B.
 *   2. not formatted: create B (one left by a crash is reused), activate it,
 *      mkfs.ext4 (the one process thinsnapd runs), mount it once to remove
 *      lost+found, measure it, deactivate. Formatted: activate it read-only
 *      to measure the bytes it maps (for Usage), deactivate.
 *   3. txn: formatted=true.
 *
 * Prepare / View (key, parent):
 *   0. The pool's space (figures at most 250 ms old; a refusal is always made
 *      on fresh ones): -ENOSPC or -EROFS before anything is written.
 *   1. txn: record CREATING with a new id and device id D; the parent must be
 *      a READY committed snapshot and gains a child. A key whose asynchronous
 *      removal is pending is removed first, then the record is made.
 *   2. snap D from the parent's device (or B without a parent); the origin is
 *      inactive, or, when it is a committed device released while still held
 *      open, suspended around the snapshot. Activate D (a view too: its mount
 *      is read-only).
 *   3. txn: READY. The mount is D's device.
 *   A failure in 2 or 3 drops D (if made) and deletes the record; when the
 *   pool is then out of space, the answer is -ENOSPC with its figures,
 *   whatever the kernel said (a pool out of metadata space refuses messages
 *   with EOPNOTSUPP).
 *
 * Commit (name, key):
 *   1. read: key is a READY active snapshot; name is free (a pending
 *      asynchronous removal of name is finished first). Usage: the bytes D
 *      maps less those its parents recorded and the base's.
 *   2. release D: deactivate it, or, when it is still held open (containerd
 *      may commit a mounted snapshot), let the kernel remove it at its last
 *      close, noting D so a child's snapshot suspends it (Prepare 2).
 *   3. txn: rename key to name, kind committed, labels replaced, usage
 *      recorded, same id and device id.
 *   A failure in 3 activates D again. No intent is needed: the rename is one
 *   transaction and release destroys nothing; a crash between 2 and 3 leaves
 *   a READY active record on an inactive device, which the next open
 *   activates, and containerd's retry commits.
 *
 * Remove (key):
 *   1. txn: REMOVING; refused with -ENOTEMPTY while children exist (children
 *      whose asynchronous removal is pending are removed first, then it is
 *      tried again) and -EBUSY when the record is not READY (a pending
 *      asynchronous removal of key is finished and answered -ENOENT).
 *   2. Asynchronous (async_remove): the reaper is woken and 0 returned; the
 *      snapshot is already gone from Stat and List. Otherwise deactivate D:
 *      held open (retried for about a second), the record goes back to READY
 *      and the answer is -EBUSY.
 *   3. drop D: deactivate; with discard_on_remove, activate it alone and
 *      discard its blocks in 64 MiB requests (a failure is logged and the
 *      removal goes on); delete it (retried while the kernel finishes a
 *      deferred removal).
 *   4. txn: delete the record (D is free again, reused as late as possible;
 *      the parent loses a child).
 *
 * ---- Spares ----
 *
 * A Prepare of an active snapshot on a parent, labelled
 * containerd.io/snapshot/thinsnap.spares=N (containerd passes labels under
 * containerd.io/snapshot/ to its backend), asks that parent to keep N spares
 * (at most spares_max; 0 in the configuration turns spares off: the label is
 * still checked, a number from 0 to 1024, and asks for nothing): active
 * snapshots of the parent cut ahead
 * under keys "~spare/<parent's snapshot id>/<n>", which containerd never
 * makes (its keys begin with a namespace) and never sees: Stat, Mounts,
 * Usage, Update and Remove answer -ENOENT, Walk and List skip them, Prepare
 * and Commit refuse such a key (-EINVAL). Such a Prepare first takes the
 * parent's first READY spare: one transaction renames it to the key with the
 * request's labels (ts_store_adopt); no device step, and its device holds
 * what a fresh cut would, the parent being committed. Either way the filler
 * is asked to top the parent's spares up to N.
 *
 * The filler, a thread, waits until no Prepare has begun for spare_quiet_ms,
 * then cuts each missing spare with Prepare's own steps 0-3 (the crash
 * protocol above covers it: a CREATING spare is rolled back at open, a READY
 * one activated like any active snapshot), holding the parent's lock and the
 * spare's. A cut that fails is logged and ends the top-up until a Prepare
 * asks again.
 *
 * Remove of a parent whose only children left are spares removes the spares
 * first (as Remove 1, 3, 4, without discards: a spare was never written, and
 * a CREATING one, left by a rollback that failed, too: none is in the making
 * while the parent is locked); one with other children keeps them.
 *
 * An adoption renames a spare without taking the spare's lock: it takes a
 * READY spare only, in one write transaction, and every other change to a
 * spare (the filler making it READY, its parent's Remove marking it
 * REMOVING) is a write transaction of its own, so one of them sees the
 * other's result. A top-up asked for is kept in memory only: after a stop
 * the next labelled Prepare asks again.
 *
 * The reaper (async_remove): a thread finishes every REMOVING record, under
 * its key's lock, when a Remove wakes it and at open; a removal that fails
 * (a device still held) is retried after 1 s, doubling up to 60 s. At close
 * it stops; what is left is finished by the next open.
 *
 * THINSNAPD_FAULT=<op>:<point>[:<n>] (common/fault.h) kills the process at a
 * named step for the crash tests: prepare:after-record, after-snap,
 * after-activate; commit:after-deactivate; remove:after-mark,
 * after-deactivate, after-delete; recover:after-create, after-load (open,
 * between a device's create and its table load, and the load and the
 * resume; snapdev.h). tests/unit/test-snapshotter.c kills it
 * before and after every device call as well, on a fake device layer. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "plugin/filter.h"
#include "plugin/snapdev.h"
#include "store/store.h"

typedef struct ts_snapshotter ts_snapshotter;

/* The label of a Prepare that asks for spares (Spares). */
#define TS_SNAPSHOTTER_SPARES_LABEL "containerd.io/snapshot/thinsnap.spares"

typedef struct ts_snapshotter_config {
        const char *root;         /* state directory (LMDB store) */
        const char *pool;         /* dm name of an existing thin pool */
        uint64_t base_size;       /* bytes; the size of every snapshot's device */
        const char *mkfs;         /* mkfs.ext4 to run once per pool and size; NULL: "mkfs.ext4" */
        bool async_remove;        /* Remove returns once the intent is recorded */
        bool discard_on_remove;   /* discard an active device's blocks before delete */
        uint32_t spares_max;      /* most spares a Prepare may ask its parent to keep (Spares);
                                   * 0: spares off, the label asks for nothing */
        uint32_t spare_quiet_ms;  /* spares are cut once Prepares paused this long; 0: 100 */
        uint32_t dev_id_max;      /* 0: the 24-bit limit (tests lower it) */
        uint64_t store_map_size;  /* the store's map to start with (store.h); 0: its default */
        uint64_t store_map_max;   /* the largest it grows to; 0: the store's default (1 GiB) */
        ts_label_limits labels;   /* label bounds (store/label.h); 0 fields: the defaults */
        ts_snapdev *dev;          /* NULL: the thin pool `pool` (snapdev.h); else this device
                                   * layer, which the snapshotter takes over (also on failure) */
} ts_snapshotter_config;

typedef struct ts_mount {
        char source[128]; /* the device (ts_snapdev_path): /dev/mapper/<pool>-snap-<id> */
        bool read_only;
} ts_mount;

/* Opens the store and the device layer and recovers (see Open above).
 * Returns 0 or -errno (-EINVAL base size, -ENXIO no such pool, -EUCLEAN pool
 * needs_check, -EROFS pool read-only or failed). */
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

/* Removes the snapshot whose device is device (a path from its mount) if
 * its key is <ns>/<id>/<name>, as containerd names a proxy's keys (ns:
 * containerd's namespace), as ts_snapshotter_remove does. The provisioner in
 * thinsnapd calls it once containerd has forgotten a VM's snapshot, ahead of
 * containerd's collector, which removes snapshots one at a time: the key is
 * remembered (the last 256) before it is unlocked, and the collector's own
 * Remove of it later answers 0 rather than -ENOENT (which would stop its
 * pass). Returns 0, -EINVAL (not a device of this pool), -ENOENT (no such
 * snapshot has the device), -ENOMEM, or as ts_snapshotter_remove. */
int ts_snapshotter_remove_device(ts_snapshotter *s, const char *device, const char *ns,
                                 const char *name, ts_error **err);

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

/* Calls fn, in key order, for every READY snapshot of ns that matches
 * filter (NULL: all) and whose key sorts after `after` (NULL: from the
 * first; needs ns). A non-zero return of fn stops the walk and is returned.
 * The walk reads one consistent view of the store, ended before this
 * returns: a caller that sends what fn collected holds no transaction
 * while it waits. */
int ts_snapshotter_walk(ts_snapshotter *s, const char *ns, const ts_filter *filter, const char *after,
                        ts_store_walk_fn fn, void *userdata, ts_error **err);

/* What a record costs in a reply (an upper bound), and what takes a batch. */
typedef size_t (*ts_snapshotter_size_fn)(const ts_store_info *info);
typedef int (*ts_snapshotter_batch_fn)(const ts_store_info *infos, size_t n, void *userdata);

/* The snapshots of ts_snapshotter_walk (ns required), handed to batch_fn in
 * batches of at most max_count (>= 1) records whose size_fn figures add up
 * to at most max_bytes (a record larger than that comes alone). Each batch
 * is copied out of a read transaction of its own, ended before batch_fn
 * runs, and the next one goes on after the batch's last key: a client slow
 * to take a batch never holds the store. Records may change between
 * batches: each key shows at most once, in key order, but a record removed
 * or added meanwhile shows as the batch that reaches its key finds it (as a
 * Commit, a rename, may show under both names or neither). Returns 0,
 * batch_fn's negative return, or as ts_snapshotter_walk. */
int ts_snapshotter_list(ts_snapshotter *s, const char *ns, const ts_filter *filter, size_t max_count,
                        size_t max_bytes, ts_snapshotter_size_fn size_fn, ts_snapshotter_batch_fn batch_fn,
                        void *userdata, ts_error **err);

/* The label bounds in force (the configuration's, defaults filled in). */
const ts_label_limits *ts_snapshotter_label_limits(const ts_snapshotter *s);

/* Finishes pending removals (async mode) now. Returns 0 or -errno. */
int ts_snapshotter_cleanup(ts_snapshotter *s, ts_error **err);

/* How many spares are ready, in every namespace. Returns 0 or -errno. */
int ts_snapshotter_spares(ts_snapshotter *s, uint64_t *ret, ts_error **err);

/* Cuts the spares Prepares asked for (Spares) now, without waiting for a
 * pause. A spare that cannot be cut is logged. */
void ts_snapshotter_fill_spares(ts_snapshotter *s);
