/* inject: write files, directories, symlinks and mount points into an
 * ext2/3/4 filesystem on a block device or an image file, without mounting it.
 *
 * Every path is a guest path: resolved inside the guest filesystem only.
 * `..` stops at the guest root and symlinks are followed inside the guest,
 * so no operation can reach outside the filesystem or any host path.
 *
 * Each operation leaves the filesystem consistent on disk when it returns,
 * and orders its writes so that a crash at any point leaves a filesystem the
 * guest can mount: new data and inodes (and the bitmaps and group descriptors
 * that account for them) are written and flushed before the directory entry
 * that makes them visible; an existing file is replaced by switching its
 * directory entry to the new inode in one sector write, then releasing the
 * old inode. At worst a crash leaves an unreferenced inode for e2fsck, and,
 * between the writes of one flush, allocation accounting that e2fsck
 * recomputes (free counts, a bitmap's checksum in its group descriptor);
 * nothing a directory entry reaches is ever marked free. tests/vm/inject-crash.py
 * checks this on every state a power loss can leave.
 *
 * Only the block and inode bitmaps of the groups an operation touches are
 * read and written, so the cost of a write does not grow with the size of
 * the filesystem.
 *
 * A ts_inject handle is not thread-safe; use one per thread.
 *
 * For crash tests, TS_INJECT_FAULT="<op>:<point>[:<n>]" (read at open) makes
 * the process kill itself with SIGKILL the n-th time (default 1) it passes
 * the named step; the steps are listed at fault() in inject.c. */
#pragma once

#include <stdint.h>

#include "common/error.h"

typedef struct ts_inject ts_inject;

/* Flags of ts_inject_opts.flags. */
enum {
        /* Fail with -ENOENT when a parent directory is missing, instead of
         * creating it. */
        TS_INJECT_NO_MKDIRS = 1u << 0,
        /* Fail with -ELOOP when the final component is a symlink, instead
         * of replacing the symlink. */
        TS_INJECT_REFUSE_SYMLINK = 1u << 1,
};

/* mtime value meaning "the current time". */
#define TS_INJECT_MTIME_NOW INT64_MIN

typedef struct ts_inject_opts {
        uint32_t mode;        /* permission bits of the new object (07777) */
        uint32_t uid, gid;    /* owner of the new object */
        int64_t mtime;        /* seconds since the epoch, or TS_INJECT_MTIME_NOW */
        uint32_t flags;       /* TS_INJECT_* */
        uint32_t dir_mode;    /* missing parent directories: permission bits */
        uint32_t dir_uid, dir_gid; /* and owner */
} ts_inject_opts;

/* Defaults: mode 0644 root:root, mtime now, parents 0755 root:root. */
#define TS_INJECT_OPTS_DEFAULT                                                         \
        ((ts_inject_opts){ .mode = 0644, .mtime = TS_INJECT_MTIME_NOW, .dir_mode = 0755 })

/* Flags of ts_inject_open. */
enum {
        /* Refuse a path whose last component is a symlink (-ELOOP), for a
         * caller that named the device itself and wants no redirection. */
        TS_INJECT_OPEN_NOFOLLOW = 1u << 0,
};

/* Opens the ext2/3/4 filesystem on `path` (a block device or an image file)
 * for writing. `flags`: 0 or TS_INJECT_OPEN_NOFOLLOW. The path is resolved
 * once; every check is made on the descriptor it gave, so a path swapped
 * meanwhile cannot send the writes elsewhere.
 *
 * Refuses: anything libblkid does not identify as ext2, ext3 or ext4
 * (-EMEDIUMTYPE); a filesystem that is mounted, a block device that is held
 * (dm/md holders, another exclusive opener), an image file attached to a loop
 * device (-EBUSY); a journal that needs recovery or a filesystem marked as
 * having errors (-EUCLEAN); features it does not write: bigalloc, multi-mount protection, or
 * features libext2fs does not know (-EOPNOTSUPP; encrypted and case-folded
 * directories are refused per operation); a corrupt superblock or group descriptors, a filesystem
 * larger than its device (-EUCLEAN); anything but a block device or a
 * regular file (-EINVAL); a final symlink with TS_INJECT_OPEN_NOFOLLOW
 * (-ELOOP). A block device stays open with O_EXCL until close, so it cannot
 * be mounted meanwhile.
 * Returns 0 and *ret, or -errno with *err set. */
int ts_inject_open(const char *path, unsigned flags, ts_inject **ret, ts_error **err);

/* Writes the guest file `guest_path` with the content of the host file
 * `host_path` (a regular file). See ts_inject_write_fd. */
int ts_inject_write_file(ts_inject *ij, const char *host_path, const char *guest_path,
                         const ts_inject_opts *opts, ts_error **err);

/* Writes the guest file `guest_path` (absolute) with the content of `fd`, a
 * regular file read with pread from offset 0 to its size (the fd's offset is
 * not used or changed). Holes in the source (SEEK_HOLE) stay holes. Mode, uid,
 * gid and mtime come from opts. Missing parents are created with
 * opts->dir_mode/dir_uid/dir_gid unless TS_INJECT_NO_MKDIRS. An existing
 * non-directory at guest_path is replaced atomically (the guest sees the old
 * object or the complete new file); a symlink there is replaced, not written
 * through, or refused with TS_INJECT_REFUSE_SYMLINK.
 * Returns 0, or -EINVAL (bad guest path or opts, source not a regular file),
 * -ENOENT (missing parent with TS_INJECT_NO_MKDIRS), -ENOTDIR (a parent is
 * not a directory), -EISDIR (guest_path is a directory), -ELOOP (too many
 * symlinks, or a refused final symlink), -ENAMETOOLONG, -ENOSPC (no free
 * blocks or inodes; nothing is left behind), -EUCLEAN (corrupt filesystem
 * structures met on the way), -EOPNOTSUPP (encrypted or casefolded parent),
 * -EIO. */
int ts_inject_write_fd(ts_inject *ij, int fd, const char *guest_path, const ts_inject_opts *opts,
                       ts_error **err);

/* Creates the directory guest_path and its missing parents, all with
 * opts->mode/uid/gid/mtime (opts->dir_* are not used). Existing directories
 * (or symlinks to directories inside the guest) are left as they are.
 * Returns 0, -EEXIST (guest_path exists and is not a directory), and the
 * errors of ts_inject_write_fd. */
int ts_inject_mkdir_p(ts_inject *ij, const char *guest_path, const ts_inject_opts *opts,
                      ts_error **err);

/* Creates the symlink guest_path -> target (target is stored as is and not
 * resolved). An existing non-directory at guest_path is replaced atomically,
 * unless TS_INJECT_REFUSE_SYMLINK and it is a symlink (-ELOOP). Parents as in
 * ts_inject_write_fd. Returns 0, -EINVAL (empty target or longer than a
 * block), and the errors of ts_inject_write_fd. */
int ts_inject_symlink(ts_inject *ij, const char *target, const char *guest_path,
                      const ts_inject_opts *opts, ts_error **err);

/* Creates the standard mount points when absent: /proc (0555), /sys (0555),
 * /dev (0755), /tmp (01777), /run (0755), root-owned. Existing entries of
 * any type are left alone. Returns the number of directories created (>= 0),
 * or the errors of ts_inject_mkdir_p. */
int ts_inject_mountpoints(ts_inject *ij, ts_error **err);

/* Resolves guest_path (following every symlink, inside the guest) and returns
 * its inode number. Returns 0 and *ret_ino, or -ENOENT, -ENOTDIR, -ELOOP,
 * -ENAMETOOLONG, -EINVAL, -EUCLEAN. */
int ts_inject_lookup(ts_inject *ij, const char *guest_path, uint32_t *ret_ino, ts_error **err);

/* The entry guest_path names itself: a symlink in the final component is
 * not followed (the parents are, inside the guest). Returns 0 with its
 * inode number and mode (file type and permission bits, as st_mode), or
 * -ENOENT, -ENOTDIR, -ELOOP, -ENAMETOOLONG, -EINVAL, -EUCLEAN. */
int ts_inject_lstat(ts_inject *ij, const char *guest_path, uint32_t *ret_ino, uint32_t *ret_mode,
                    ts_error **err);

/* What the files of the filesystem use, as df(1) counts it: bytes of the
 * blocks in use besides the filesystem's own structures (superblocks, group
 * descriptors, bitmaps, inode tables, the journal, the resize inode), and
 * inodes in use besides the reserved ones (the root directory counts). Read from the
 * group descriptors' free counts, which a clean filesystem keeps exact.
 * Returns 0, or -EIO when the journal inode cannot be read. */
int ts_inject_usage(ts_inject *ij, uint64_t *ret_bytes, uint64_t *ret_inodes, ts_error **err);

/* Flushes and closes; always releases the handle. Returns 0, or -EIO when the
 * final flush failed or an earlier failure could not be rolled back. */
int ts_inject_close(ts_inject *ij, ts_error **err);

/* Releases the handle without the final fsync of ts_inject_close. Every
 * operation has already written (or rolled back) its own work, so nothing
 * that succeeded is lost, but the release of a replaced file's old inode may
 * not be durable yet. Use it on error paths; use ts_inject_close otherwise.
 * Accepts NULL; returns NULL. */
ts_inject *ts_inject_free(ts_inject *ij);

static inline void ts_inject_freep(ts_inject **p) {
        ts_inject_free(*p);
}
#define _cleanup_inject_ _cleanup_(ts_inject_freep)
