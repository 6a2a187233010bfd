/* ts_store: thinsnapd's snapshot metadata on LMDB.
 *
 * One LMDB environment in a root directory, with named databases:
 *   snapshots  "<namespace>\0<key>" -> snapshot record (see ts_store_info)
 *   devices    thin device id (u32, big-endian) -> owner ('S' ns\0key | 'B' size)
 *   bases      base device size (u64, big-endian) -> base device record
 *   meta       "version", "next_id" (snapshot id sequence), "next_dev" (device id cursor)
 *
 * Semantics follow containerd 1.6's snapshots/storage package (bolt.go): kinds,
 * parents that must be committed, commit as a rename that keeps the snapshot id and
 * replaces the labels, remove refused while children exist, Update by field paths,
 * labels with an empty value are not stored. On top of that every snapshot owns one
 * thin device id allocated here, and carries a crash-safety state (the snapshotter's
 * crash protocol, which uses these states, is described in plugin/snapshotter.h).
 *
 * Errors are -errno. The Snapshots service maps them to containerd's errdefs:
 *   -ENOENT        NotFound            (no such key / parent)
 *   -EEXIST        AlreadyExists       (key or commit name taken)
 *   -EINVAL        InvalidArgument     (bad kind, parent not committed, empty key,
 *                                       unknown update field path, labels past
 *                                       a bound of store/label.h)
 *   -ENAMETOOLONG  InvalidArgument     (namespace + key longer than LMDB's key limit)
 *   -ENOTEMPTY     FailedPrecondition  (remove of a snapshot that has children)
 *   -EBUSY         FailedPrecondition  (record is not in state READY: an operation on
 *                                       it is in progress; or commit of a non-active)
 *   -ENOSPC        ResourceExhausted   (no free thin device id; LMDB map full, or
 *                                       too close to its maximum for new data)
 *   -ERANGE        InvalidArgument     (device id out of the 24-bit range)
 *   -EIO, others   Internal            (LMDB corruption, I/O)
 * Functions taking `ts_error **err` also describe the failure there (NULL allowed).
 *
 * Room: the writes that add data (create, commit, update, base_create) keep a
 * reserve of pages in place (one value of 1/64 of map_max, 64 KiB to 1 MiB);
 * when the map is full at map_max they fail with -ENOSPC ("room": the message
 * names the map's size, its maximum and the option that raises it). The
 * others (set_state, remove_begin, delete, the base's set_formatted and
 * delete) run in ts_store_write release the reserve when they find the map
 * full at its maximum, so removals and crash recovery get through.
 *
 * A call that fails with a rule violation (-ENOENT, -EEXIST, -EINVAL, -ENAMETOOLONG,
 * -ENOTEMPTY, -EBUSY, -ENOSPC for device ids or room, -EROFS) has written nothing, and the
 * transaction stays usable. After any other failure (LMDB's own, -ENOMEM) the
 * transaction must be aborted.
 *
 * Threads: the environment is opened with MDB_NOTLS, so read transactions may be
 * begun on one thread and used or ended on another. A write transaction must be
 * begun, used and ended on one thread, and a thread must not begin a second write
 * transaction while it holds one (LMDB serialises writers with a mutex: that would
 * deadlock). Any number of read transactions run alongside the one writer and see a
 * consistent snapshot of the data as of their begin.
 *
 * Strings handed out in ts_store_info are owned by the info (ts_store_info_done).
 * Timestamps are nanoseconds since the Unix epoch (CLOCK_REALTIME). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/macro.h"
#include "store/label.h"

/* Largest thin device id dm-thin accepts (24 bits). Id 0 is never handed out. */
#define TS_STORE_DEV_ID_MAX 0xffffffu

typedef struct ts_store ts_store;
typedef struct ts_store_txn ts_store_txn;

/* Values are containerd's snapshots.Kind numbers. */
typedef enum ts_snapshot_kind {
        TS_KIND_UNKNOWN = 0,
        TS_KIND_VIEW = 1,
        TS_KIND_ACTIVE = 2,
        TS_KIND_COMMITTED = 3,
} ts_snapshot_kind;

/* Crash-safety state of a record (plugin/snapshotter.h has the protocol).
 * READY is the only final state; the others are intents that start-up
 * reconciliation finishes or rolls back. */
typedef enum ts_snapshot_state {
        TS_STATE_CREATING = 1, /* id + device id reserved; the thin device may or may not exist */
        TS_STATE_READY = 2,    /* device exists; record is what containerd sees */
        TS_STATE_REMOVING = 3, /* remove decided; the device may or may not still exist */
} ts_snapshot_state;

typedef struct ts_store_info {
        char *namespace;
        char *name;   /* the key */
        char *parent; /* parent key in the same namespace, "" when none; never NULL */
        ts_snapshot_kind kind;
        ts_snapshot_state state;
        uint64_t id;        /* snapshot id, monotonic, never reused; kept across commit */
        uint32_t dev_id;    /* thin device id, 1..TS_STORE_DEV_ID_MAX; kept across commit */
        uint64_t dev_size;  /* thin device size in bytes */
        int64_t created_ns;
        int64_t updated_ns;
        int64_t usage_size;   /* usage given at commit (committed snapshots); 0 otherwise */
        int64_t usage_inodes;
        uint32_t children;    /* number of snapshots whose parent this is */
        ts_label *labels;     /* sorted by key, unique keys, no empty values */
        size_t n_labels;
} ts_store_info;

typedef struct ts_store_options {
        uint64_t map_size;  /* LMDB map size to start with, bytes; 0 = 32 MiB (or map_max
                             * when smaller). The map is sparse: only data uses disk. */
        uint64_t map_max;   /* ts_store_write grows the map up to this; 0 = 1 GiB, or map_size
                             * when larger. At least 256 KiB. A reserve (see Room) is kept
                             * for writes that do not add data. */
        uint32_t dev_id_max; /* highest device id to hand out; 0 = TS_STORE_DEV_ID_MAX.
                              * Tests lower it to reach exhaustion cheaply. */
        bool no_sync;        /* MDB_NOSYNC: for tests only, gives up durability */
        ts_label_limits labels; /* label bounds of create, commit and update (label.h);
                                 * 0 fields: the defaults */
} ts_store_options;

/* A base device: formatted once per (pool, size); Prepare without a parent snapshots it. */
typedef struct ts_store_base {
        uint64_t size;
        uint32_t dev_id;
        bool formatted; /* false: reserved, device may or may not exist (an intent) */
} ts_store_base;

/* Who owns a device id (from ts_store_device_walk). */
typedef struct ts_store_device {
        uint32_t dev_id;
        bool is_base;
        uint64_t base_size;    /* when is_base */
        const char *namespace; /* when !is_base; valid during the callback only */
        const char *key;
} ts_store_device;

/* ---- environment ---- */

/* Opens (creating when missing, mode 0700) the directory root and the store in it
 * (data.mdb, lock.mdb). opts may be NULL for defaults. A store holding more data
 * than map_size (or map_max) opens with the map raised to its data.
 * Returns 0, -ENOENT/-EACCES/-ENOTDIR (root), -EINVAL (bad options, or a store of
 * an unknown format version), -EIO, -ENOMEM. */
int ts_store_open(const char *root, const ts_store_options *opts, ts_store **ret, ts_error **err);

/* Closes the store; no transaction may be open. Accepts NULL; returns NULL. */
ts_store *ts_store_close(ts_store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_store *, ts_store_close);
#define _cleanup_store_ _cleanup_(ts_store_closep)

/* ---- transactions ---- */

/* Begins a read (write=false) or write transaction. A write transaction waits
 * for the current writer to finish. Returns 0, -EAGAIN (reader table full),
 * -ENOMEM, -EIO. */
int ts_store_begin(ts_store *s, bool write, ts_store_txn **ret, ts_error **err);

/* Commits (write) or ends (read) the transaction; always frees txn, also on failure
 * (then nothing was written). Returns 0, -ENOSPC (map full), -EIO. */
int ts_store_txn_commit(ts_store_txn *txn, ts_error **err);

/* Runs fn in a write transaction and commits it when fn returns >= 0. When fn or
 * the commit fails for a full map, the transaction is aborted, the map grown
 * (doubled, up to map_max) and fn run again from the start: fn must not depend
 * on what an earlier run left in userdata. Growing waits until no transaction
 * of this process is open, so the caller must hold none. Returns fn's or the
 * commit's result; -ENOSPC when the map is full at its maximum. */
typedef int (*ts_store_write_fn)(ts_store_txn *txn, void *userdata, ts_error **err);
int ts_store_write(ts_store *s, ts_store_write_fn fn, void *userdata, ts_error **err);

/* The map's current size and its maximum, in bytes. */
void ts_store_map(ts_store *s, uint64_t *ret_size, uint64_t *ret_max);

/* Aborts the transaction, discarding its writes (the way to end a read
 * transaction). Accepts NULL; returns NULL. */
ts_store_txn *ts_store_txn_abort(ts_store_txn *txn);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_store_txn *, ts_store_txn_abort);
/* A transaction that ends with its scope: a read transaction needs nothing
 * more; a write transaction is committed with ts_store_txn_commit(TAKE_PTR(t)). */
#define _cleanup_txn_ _cleanup_(ts_store_txn_abortp)

/* ---- snapshots ---- (all return -EROFS when a write is tried in a read txn) */

/* Creates a record for a view or active snapshot in state CREATING, as containerd's
 * CreateSnapshot: parent ("" or NULL for none) must exist (-ENOENT) and be a READY
 * committed snapshot (-EINVAL when not committed; -ENOENT when it is being removed);
 * key must be new (-EEXIST). Allocates the next snapshot id and a free thin device id
 * (-ENOSPC when none is left), increments the parent's child count. Labels with an
 * empty value are dropped; a repeated key keeps its last value; labels past a bound
 * of label.h (checked before anything else is looked at) are -EINVAL. created =
 * updated = now. Returns 0, -EINVAL (kind not view/active, empty namespace or key),
 * -ENAMETOOLONG, -ENOENT, -EEXIST, -ENOSPC, -EROFS, -EIO, -ENOMEM. ret_info may be
 * NULL. */
int ts_store_create(ts_store_txn *txn, const char *ns, const char *key, const char *parent,
                    ts_snapshot_kind kind, const ts_label *labels, size_t n_labels, uint64_t dev_size,
                    ts_store_info *ret_info, ts_error **err);

/* Reads the record of key. Returns 0, -ENOENT, -EINVAL, -ENAMETOOLONG, -EIO, -ENOMEM. */
int ts_store_get(ts_store_txn *txn, const char *ns, const char *key, ts_store_info *ret_info,
                 ts_error **err);

/* Sets the state of key's record (CREATING -> READY after the device exists;
 * REMOVING -> READY when a remove is given up). updated_ns is not changed.
 * Returns 0, -ENOENT, -EINVAL (not a known state), -EROFS, -EIO. */
int ts_store_set_state(ts_store_txn *txn, const char *ns, const char *key, ts_snapshot_state state,
                       ts_error **err);

/* containerd's CommitActive: renames the READY active snapshot key to name as a
 * committed snapshot, keeping id, dev_id, dev_size and parent; labels are replaced by
 * the given ones (not inherited, bounded as in create); created = updated = now;
 * usage recorded. Checked in
 * containerd's order: name taken -> -EEXIST; key missing -> -ENOENT; key not active ->
 * -EBUSY (FailedPrecondition); key not READY -> -EBUSY. The parent's child count is
 * unchanged (the child is renamed, not added). Returns 0 or those, -EINVAL,
 * -ENAMETOOLONG, -ENOSPC (room), -EROFS, -EIO, -ENOMEM. ret_info (the committed record) may be NULL. */
int ts_store_commit(ts_store_txn *txn, const char *ns, const char *key, const char *name,
                    const ts_label *labels, size_t n_labels, int64_t usage_size, int64_t usage_inodes,
                    ts_store_info *ret_info, ts_error **err);

/* Hands the READY active snapshot key (a spare the snapshotter cut ahead)
 * over to name, an active snapshot with the same id, device and parent; labels
 * are replaced by the given ones (bounded as in create); created = updated =
 * now. Checked as Commit: name taken -> -EEXIST; key missing -> -ENOENT; key
 * not active or not READY -> -EBUSY. The parent's child count is unchanged.
 * Returns 0 or those, -EINVAL, -ENAMETOOLONG, -ENOSPC (room), -EROFS, -EIO,
 * -ENOMEM. ret_info (the adopted record) may be NULL. */
int ts_store_adopt(ts_store_txn *txn, const char *ns, const char *key, const char *name,
                   const ts_label *labels, size_t n_labels, ts_store_info *ret_info, ts_error **err);

/* First step of Remove: checks key exists (-ENOENT), has no children (-ENOTEMPTY,
 * containerd's "cannot remove snapshot with child") and is READY (-EBUSY), then sets
 * state REMOVING. ret_info (the record, state REMOVING) may be NULL.
 * Returns 0 or those, -EINVAL, -ENAMETOOLONG, -EROFS, -EIO, -ENOMEM. */
int ts_store_remove_begin(ts_store_txn *txn, const char *ns, const char *key, ts_store_info *ret_info,
                          ts_error **err);

/* Deletes key's record whatever its state (finishing a REMOVING, rolling back a
 * CREATING): frees its device id and decrements the parent's child count. Refuses a
 * record that still has children (-ENOTEMPTY). Returns 0, -ENOENT, -ENOTEMPTY,
 * -EINVAL, -EROFS, -EIO. */
int ts_store_delete(ts_store_txn *txn, const char *ns, const char *key, ts_error **err);

/* containerd's UpdateInfo. With no field paths, the labels are replaced. Field path
 * "labels" replaces all labels; "labels.<k>" sets label k to its value in labels, or
 * removes it when labels has no k (or an empty value). Any other path -> -EINVAL
 * (nothing written). The request's labels and the resulting set are bounded as in
 * create (-EINVAL). updated = now. Returns 0, -ENOENT, -EINVAL, -ENOSPC (room), -EROFS,
 * -EIO, -ENOMEM. ret_info (the updated record) may be NULL. */
int ts_store_update(ts_store_txn *txn, const char *ns, const char *key, const ts_label *labels,
                    size_t n_labels, const char *const *fieldpaths, size_t n_fieldpaths,
                    ts_store_info *ret_info, ts_error **err);

/* Called by ts_store_walk for each record; info is valid during the call only.
 * A non-zero return stops the walk and is returned by ts_store_walk. */
typedef int (*ts_store_walk_fn)(const ts_store_info *info, void *userdata);

/* Calls fn for every record of namespace ns in key order, or of every namespace
 * when ns is NULL (namespace order, then key order). Records in every state are
 * given; the Snapshots service decides what to show (only READY). Returns 0, fn's
 * non-zero return, -EIO, -ENOMEM. */
int ts_store_walk(ts_store_txn *txn, const char *ns, ts_store_walk_fn fn, void *userdata,
                  ts_error **err);

/* ts_store_walk over the records of ns whose key sorts after `after` (NULL:
 * all), so a long walk can be cut into transactions of its own, each going
 * on from the last key the one before saw. Returns as ts_store_walk, and
 * -EINVAL for a start key without a namespace. */
int ts_store_walk_after(ts_store_txn *txn, const char *ns, const char *after, ts_store_walk_fn fn,
                        void *userdata, ts_error **err);

/* The parent chain of key, immediate parent first (containerd's ParentIDs order):
 * *ret_infos is an array of *ret_n records (0 and NULL for a snapshot without
 * parent), freed with ts_store_infos_free. Returns 0, -ENOENT (key or a parent
 * missing), -EIO (also a chain that loops: longer than the number of records),
 * -ENOMEM. */
int ts_store_parents(ts_store_txn *txn, const char *ns, const char *key, ts_store_info **ret_infos,
                     size_t *ret_n, ts_error **err);

/* A deep copy of in (a walk's record outlives its callback this way).
 * Returns 0 or -ENOMEM (nothing to release then). */
int ts_store_info_copy(const ts_store_info *in, ts_store_info *ret);

/* Releases what an info holds and zeroes it. Accepts NULL. */
void ts_store_info_done(ts_store_info *info);
/* A record released with its scope; initialise it to { 0 }. */
#define _cleanup_store_info_ _cleanup_(ts_store_info_done)
/* Frees an array of n infos from ts_store_parents. Accepts NULL. */
void ts_store_infos_free(ts_store_info *infos, size_t n);

/* The label value for key, or NULL. */
const char *ts_store_info_label(const ts_store_info *info, const char *key);

/* "view", "active", "committed" or "unknown". */
const char *ts_store_kind_to_string(ts_snapshot_kind kind);
/* "creating", "ready", "removing" or "unknown". */
const char *ts_store_state_to_string(ts_snapshot_state state);

/* ---- thin device ids ---- */

/* Calls fn for every device id the store knows (snapshot records in any state and
 * base devices), in increasing id order, for reconciliation against the pool. A
 * non-zero return of fn stops the walk and is returned. */
typedef int (*ts_store_device_fn)(const ts_store_device *dev, void *userdata);
int ts_store_device_walk(ts_store_txn *txn, ts_store_device_fn fn, void *userdata, ts_error **err);

/* Calls fn once with the owner of device id dev_id. Returns fn's result, or
 * -ENOENT (no record or base device has it), -ENOMEM, -EIO. */
int ts_store_device_get(ts_store_txn *txn, uint32_t dev_id, ts_store_device_fn fn, void *userdata,
                        ts_error **err);

/* ---- base devices ---- */

/* Reserves a device id for the base device of size bytes, formatted=false.
 * Returns 0, -EEXIST (a base of that size exists), -EINVAL (size 0), -ENOSPC, -EROFS,
 * -EIO. ret may be NULL. */
int ts_store_base_create(ts_store_txn *txn, uint64_t size, ts_store_base *ret, ts_error **err);

/* Reads the base device record of size. Returns 0, -ENOENT, -EIO. */
int ts_store_base_get(ts_store_txn *txn, uint64_t size, ts_store_base *ret, ts_error **err);

/* Marks the base of size formatted. Returns 0, -ENOENT, -EROFS, -EIO. */
int ts_store_base_set_formatted(ts_store_txn *txn, uint64_t size, ts_error **err);

/* Deletes the base record of size and frees its device id. Returns 0, -ENOENT,
 * -EROFS, -EIO. */
int ts_store_base_delete(ts_store_txn *txn, uint64_t size, ts_error **err);

/* Every base record in increasing size order: *ret is a malloc'ed array (NULL when
 * none). Returns 0, -EIO, -ENOMEM. */
int ts_store_base_list(ts_store_txn *txn, ts_store_base **ret, size_t *ret_n, ts_error **err);
