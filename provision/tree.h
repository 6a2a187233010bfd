/* The tree of an active snapshot, opened for reading and writing without
 * mounting anything, from the mounts containerd hands out for it:
 *
 *  - an ext2/3/4 filesystem on a block device (thinsnapd's snapshots):
 *    read and written with inject/ (libext2fs), never mounted;
 *  - a directory bound into place (containerd's native snapshotter, on a
 *    host without device-mapper): read and written in that directory, every
 *    path resolved inside it (openat2 RESOLVE_IN_ROOT), as inject/ resolves
 *    guest paths.
 *
 * Paths are absolute guest paths. Entries written are owned by root:root
 * with mtime PROV_LAYER_MTIME, so the tree gets exactly what applying the
 * same entries as a layer tar would give it. */
#pragma once

#include <stdint.h>

#include "ctrd/ctrd.h"
#include "provision/layer.h"

typedef struct prov_tree prov_tree;

/* Opens the tree behind mounts. Returns 0, -EOPNOTSUPP (another kind of
 * mount: overlay, several mounts...), or the errors of ts_inject_open() or
 * of opening the directory. */
int prov_tree_open(const ts_ctrd_mounts *mounts, prov_tree **ret, ts_error **err);

/* The entry at path itself (a final symlink not followed; its parents are,
 * inside the tree): 0 and its st_mode, -ENOENT, -ENOTDIR, -ELOOP. */
int prov_tree_lstat(prov_tree *t, const char *path, uint32_t *ret_mode, ts_error **err);

/* Bytes and inodes the tree's files use, as df(1) or du(1) counts them. */
int prov_tree_usage(prov_tree *t, uint64_t *ret_bytes, uint64_t *ret_inodes, ts_error **err);

/* Writes the entries in order (parents first): a directory is made (its
 * parent must exist); a file replaces what is at its path, atomically.
 * Returns 0 or -errno naming the entry. */
int prov_tree_write(prov_tree *t, const prov_layer_entry *entries, size_t n, ts_error **err);

/* Flushes and closes. Returns 0 or -EIO. Always frees. */
int prov_tree_close(prov_tree *t, ts_error **err);

/* Closes without the final flush (error paths). Accepts NULL; returns NULL. */
prov_tree *prov_tree_free(prov_tree *t);
