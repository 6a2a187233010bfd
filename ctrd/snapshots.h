/* Snapshots through containerd (containerd.services.snapshots.v1.Snapshots
 * with the snapshotter named): containerd keeps its own records (namespace,
 * leases, garbage collection) and passes the work to the snapshotter.
 * Errors as ctrd/ctrd.h says; each names the snapshotter and key. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ctrd/ctrd.h"

typedef enum ts_ctrd_snapshot_kind {
        TS_CTRD_SNAPSHOT_UNKNOWN = 0,
        TS_CTRD_SNAPSHOT_VIEW = 1,
        TS_CTRD_SNAPSHOT_ACTIVE = 2,
        TS_CTRD_SNAPSHOT_COMMITTED = 3,
} ts_ctrd_snapshot_kind;

typedef struct ts_ctrd_snapshot {
        char *name;
        char *parent; /* NULL when none */
        ts_ctrd_snapshot_kind kind;
        int64_t created_ns, updated_ns;
        char **labels; /* NULL when none */
} ts_ctrd_snapshot;

void ts_ctrd_snapshot_done(ts_ctrd_snapshot *s);
void ts_ctrd_snapshot_list_free(ts_ctrd_snapshot *v, size_t n);

/* An active snapshot key on parent (NULL: empty) with labels (NULL: none),
 * added to lease when given; *ret are its mounts. -EEXIST (key in use),
 * -ENOENT (no such parent), -EINVAL. */
int ts_ctrd_snapshot_prepare(ts_ctrd *c, const char *lease, const char *snapshotter,
                             const char *key, const char *parent, char *const *labels,
                             ts_ctrd_mounts **ret, ts_error **err);

/* The same for a read-only view. */
int ts_ctrd_snapshot_view(ts_ctrd *c, const char *lease, const char *snapshotter,
                          const char *key, const char *parent, char *const *labels,
                          ts_ctrd_mounts **ret, ts_error **err);

/* The mounts of an active snapshot or view. -ENOENT. */
int ts_ctrd_snapshot_mounts(ts_ctrd *c, const char *snapshotter, const char *key,
                            ts_ctrd_mounts **ret, ts_error **err);

/* Commits active snapshot key as name with labels (NULL: none), added to
 * lease when given. -EEXIST (name in use), -ENOENT, -EINVAL. */
int ts_ctrd_snapshot_commit(ts_ctrd *c, const char *lease, const char *snapshotter,
                            const char *name, const char *key, char *const *labels,
                            ts_error **err);

/* Removes a snapshot. -ENOENT, -EBUSY (it has children). */
int ts_ctrd_snapshot_remove(ts_ctrd *c, const char *snapshotter, const char *key,
                            ts_error **err);

/* The snapshot's record. -ENOENT. */
int ts_ctrd_snapshot_stat(ts_ctrd *c, const char *snapshotter, const char *key,
                          ts_ctrd_snapshot *ret, ts_error **err);

/* Sets (an empty value: removes) each label of labels, leaving the others
 * (field mask "labels.<key>"). *ret (NULL allowed) is the updated record. */
int ts_ctrd_snapshot_update_labels(ts_ctrd *c, const char *snapshotter, const char *key,
                                   char *const *labels, ts_ctrd_snapshot *ret, ts_error **err);

/* The snapshots matching any of filters (NULL: all), e.g. "parent==x",
 * "labels.\"k\"==v". */
int ts_ctrd_snapshot_list(ts_ctrd *c, const char *snapshotter, char *const *filters,
                          ts_ctrd_snapshot **ret, size_t *ret_n, ts_error **err);

/* Disk use of a snapshot: bytes and inodes. -ENOENT. */
int ts_ctrd_snapshot_usage(ts_ctrd *c, const char *snapshotter, const char *key,
                           int64_t *ret_size, int64_t *ret_inodes, ts_error **err);
