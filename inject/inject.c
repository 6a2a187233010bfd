#include "inject.h"

#include <blkid/blkid.h>
#include <dirent.h>
#include <et/com_err.h>
#include <ext2fs/ext2_err.h>
#include <ext2fs/ext2fs.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "common/fault.h"
#include "common/log.h"
#include "common/units.h"
#include "inject/io-internal.h"

#define MAX_SYMLINKS 40
#define COPY_CHUNK (1024 * 1024)

/* Per block group: the on-disk image of its bitmaps as last read or written,
 * or NULL while the group has not been loaded. Unloaded groups are marked
 * fully used in the in-memory bitmaps so the allocators never pick them; the
 * maps are extent trees, so that costs one extent however large the
 * filesystem is. */
struct group {
        char *bb;
        char *ib;
        bool ra;        /* its bitmaps were asked for ahead */
        bool overlaps;  /* its metadata shares blocks with other metadata */
        bool ifull;     /* loaded, and its inode bitmap has no free inode */
        uint32_t lie;   /* free blocks its descriptor claimed beyond its bitmap's */
};

/* One group's block bitmap, inode bitmap or inode table, for the index of
 * every group's metadata sorted by block. */
struct meta_extent {
        blk64_t start;
        uint32_t len;
        dgrp_t group;
};

struct ts_inject {
        ext2_filsys fs;
        char *path;
        dgrp_t ngroups;
        struct group *groups;
        /* Built at the first group load: every group's metadata by block,
         * so a load finds what lies in its group and checks for overlaps in
         * O(log groups), not in a walk of every group. */
        struct meta_extent *meta;
        size_t nmeta;
        blk64_t meta_max_len;
        /* next[g]: a group at or after g that may still be worth loading
         * (not loaded, free blocks by its descriptor); path-halved, so
         * finding the next such group costs amortised O(1) however many
         * loaded or full groups lie in between. ngroups + 1 entries. */
        dgrp_t *next;
        char *scratch; /* one block */
        int fd;        /* the device or image, for the whole session: see ts_inject_open */
        bool broken;   /* a failure could not be rolled back */
        ts_fault *fault; /* TS_INJECT_FAULT */
};

/* What a guest path resolves to: a parent directory and a name in it. */
struct target {
        ext2_ino_t dir; /* 0: the path names a directory reached through it (e.g. "/") */
        char name[EXT2_NAME_LEN + 1];
        ext2_ino_t ino; /* the existing entry, 0 when absent */
        struct ext2_inode_large inode;
};

enum {
        R_MKDIRS = 1u << 0,      /* create missing intermediate directories */
        R_MKDIR_LAST = 1u << 1,  /* create a missing final directory too */
        R_FOLLOW_LAST = 1u << 2, /* follow a symlink in the final component */
};

static pthread_once_t et_once = PTHREAD_ONCE_INIT;

static void et_init(void) {
        initialize_ext2_error_table();
}

/* The one libext2fs adapter: errcode_t -> -errno with error_message() text. */
static int ext2_errno(errcode_t code) {
        if (code > 0 && code < 4096)
                return -(int) code; /* plain errno from the io layer */
        switch (code) {
        case EXT2_ET_NO_MEMORY:
        case EXT2_ET_TDB_ERR_OOM:
                return -ENOMEM;
        case EXT2_ET_BLOCK_ALLOC_FAIL:
        case EXT2_ET_INODE_ALLOC_FAIL:
        case EXT2_ET_DIR_NO_SPACE:
        case EXT2_ET_DIR_NO_SPACE_FOR_CSUM:
        case EXT2_ET_EXTENT_NO_SPACE:
        case EXT2_ET_EA_NO_SPACE:
        case EXT2_ET_INLINE_DATA_NO_SPACE:
        case EXT2_ET_TOO_MANY_INODES:
                return -ENOSPC;
        case EXT2_ET_FILE_NOT_FOUND:
                return -ENOENT;
        case EXT2_ET_DIR_EXISTS:
        case EXT2_ET_FILE_EXISTS:
                return -EEXIST;
        case EXT2_ET_NO_DIRECTORY:
                return -ENOTDIR;
        case EXT2_ET_RO_FILSYS:
        case EXT2_ET_FILE_RO:
                return -EROFS;
        case EXT2_ET_SYMLINK_LOOP:
                return -ELOOP;
        case EXT2_ET_FILE_TOO_BIG:
                return -EFBIG;
        case EXT2_ET_UNSUPP_FEATURE:
        case EXT2_ET_RO_UNSUPP_FEATURE:
        case EXT2_ET_UNIMPLEMENTED:
        case EXT2_ET_OP_NOT_SUPPORTED:
        case EXT2_ET_EXTENT_NOT_SUPPORTED:
        case EXT2_ET_DIRHASH_UNSUPP:
        case EXT2_ET_EXTERNAL_JOURNAL_NOSUPP:
                return -EOPNOTSUPP;
        case EXT2_ET_BAD_MAGIC:
        case EXT2_ET_UNEXPECTED_BLOCK_SIZE:
        case EXT2_ET_REV_TOO_HIGH:
                return -EMEDIUMTYPE;
        case EXT2_ET_SHORT_READ:
        case EXT2_ET_SHORT_WRITE:
        case EXT2_ET_LLSEEK_FAILED:
        case EXT2_ET_BLOCK_BITMAP_WRITE:
        case EXT2_ET_INODE_BITMAP_WRITE:
        case EXT2_ET_INODE_TABLE_WRITE:
        case EXT2_ET_GDESC_WRITE:
                return -EIO;
        case EXT2_ET_INVALID_ARGUMENT:
                return -EINVAL;
        default:
                /* Everything else libext2fs reports is a structure it found
                 * inconsistent: a corrupt or hostile image. */
                return -EUCLEAN;
        }
}

static int ext2_fail(ts_error **err, errcode_t code, const char *fmt, ...) _printf_(3, 4);
static int ext2_fail(ts_error **err, errcode_t code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = ts_error_setv_cause(err, ext2_errno(code), error_message(code), fmt, ap);
        va_end(ap);
        return r;
}

static ext2_filsys fs_of(ts_inject *ij) {
        return ij->fs;
}

static uint32_t block_bitmap_bytes(ext2_filsys fs) {
        return EXT2_CLUSTERS_PER_GROUP(fs->super) / 8;
}

static uint32_t inode_bitmap_bytes(ext2_filsys fs) {
        return EXT2_INODES_PER_GROUP(fs->super) / 8;
}

/* Sets bits [from, blocksize * 8) of a bitmap block: the padding past the
 * group's last block or inode, which is stored as ones. */
static void set_padding(char *buf, uint64_t from, unsigned blocksize) {
        uint64_t end = (uint64_t) blocksize * 8;
        for (; from < end && (from & 7); from++)
                ext2fs_set_bit(from, buf);
        if (from < end)
                memset(buf + from / 8, 0xff, (size_t) ((end - from) / 8));
}

/* The on-disk image of group g's block bitmap as held in memory: the group's
 * bits, then padding bits set up to the end of the block. */
static int render_block_bitmap(ts_inject *ij, dgrp_t g, char *buf) {
        ext2_filsys fs = fs_of(ij);
        blk64_t first = ext2fs_group_first_block2(fs, g);
        blk64_t nbits = ext2fs_group_last_block2(fs, g) - first + 1;
        memset(buf, 0, fs->blocksize);
        errcode_t e = ext2fs_get_block_bitmap_range2(fs->block_map, first, nbits, buf);
        if (e)
                return -EIO;
        set_padding(buf, nbits, fs->blocksize);
        return 0;
}

static int render_inode_bitmap(ts_inject *ij, dgrp_t g, char *buf) {
        ext2_filsys fs = fs_of(ij);
        uint32_t ipg = EXT2_INODES_PER_GROUP(fs->super);
        memset(buf, 0, fs->blocksize);
        errcode_t e = ext2fs_get_inode_bitmap_range2(fs->inode_map, (ext2_ino_t) g * ipg + 1, ipg, buf);
        if (e)
                return -EIO;
        set_padding(buf, ipg, fs->blocksize);
        return 0;
}

static bool has_csum(ext2_filsys fs) {
        return ext2fs_has_group_desc_csum(fs);
}

static void mark_range_in_group(ext2_filsys fs, blk64_t first, blk64_t last, blk64_t start, blk64_t len) {
        blk64_t end = start + len;
        if (start < first)
                start = first;
        if (end > last + 1)
                end = last + 1;
        if (start < end)
                ext2fs_mark_block_bitmap_range2(fs->block_map, start, end - start);
}

/* Marks or clears [start, start + n) in a 64-bit bitmap. libext2fs has range
 * operations for block maps only; they apply to an inode map as well, which
 * is the same kind of bitmap with no cluster scaling. */
static void bitmap_range(ext2fs_generic_bitmap map, uint64_t start, uint64_t n, bool set) {
        while (n) {
                unsigned chunk = n > (1u << 30) ? 1u << 30 : (unsigned) n;
                if (set)
                        ext2fs_mark_block_bitmap_range2(map, start, chunk);
                else
                        ext2fs_unmark_block_bitmap_range2(map, start, chunk);
                start += chunk;
                n -= chunk;
        }
}

static int cmp_extent(const void *a, const void *b) {
        const struct meta_extent *x = a, *y = b;
        return x->start < y->start ? -1 : x->start > y->start;
}

/* Builds the index of every group's metadata and flags each group whose
 * bitmaps or inode table share a block with any other metadata (its own
 * included). Sorted by start, extent i overlaps an earlier one exactly when
 * it starts before the furthest end so far, and a later one exactly when
 * the next one starts before its end. */
static int build_meta_index(ts_inject *ij, ts_error **err) {
        if (ij->meta)
                return 0;
        ext2_filsys fs = fs_of(ij);
        size_t n = (size_t) ij->ngroups * 3;
        struct meta_extent *m = calloc(n, sizeof(*m));
        if (!m)
                return ts_error_set(err, ENOMEM, "%s: index of group metadata", ij->path);
        uint32_t ipb = fs->inode_blocks_per_group;
        for (dgrp_t g = 0; g < ij->ngroups; g++) {
                m[3 * (size_t) g] = (struct meta_extent) { ext2fs_block_bitmap_loc(fs, g), 1, g };
                m[3 * (size_t) g + 1] = (struct meta_extent) { ext2fs_inode_bitmap_loc(fs, g), 1, g };
                m[3 * (size_t) g + 2] = (struct meta_extent) { ext2fs_inode_table_loc(fs, g), ipb, g };
        }
        qsort(m, n, sizeof(*m), cmp_extent);
        blk64_t furthest = 0;
        for (size_t i = 0; i < n; i++) {
                blk64_t end = m[i].start + m[i].len;
                if ((i > 0 && m[i].start < furthest) || (i + 1 < n && m[i + 1].start < end))
                        ij->groups[m[i].group].overlaps = true;
                if (end > furthest)
                        furthest = end;
        }
        ij->meta = m;
        ij->nmeta = n;
        ij->meta_max_len = ipb > 1 ? ipb : 1;
        return 0;
}

/* Marks every group's metadata that lies in [first, last] used. */
static void mark_meta_in(ts_inject *ij, blk64_t first, blk64_t last) {
        blk64_t from = first >= ij->meta_max_len ? first - ij->meta_max_len + 1 : 0;
        size_t lo = 0, hi = ij->nmeta;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (ij->meta[mid].start < from)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (size_t i = lo; i < ij->nmeta && ij->meta[i].start <= last; i++)
                mark_range_in_group(fs_of(ij), first, last, ij->meta[i].start, ij->meta[i].len);
}

/* Before we write group g's bitmaps or inode table: none of them may share a
 * block with other metadata. */
static int check_group_overlap(ts_inject *ij, dgrp_t g, ts_error **err) {
        int r = build_meta_index(ij, err);
        if (r < 0)
                return r;
        if (ij->groups[g].overlaps)
                return ts_error_setf_plain(err, EUCLEAN, "%s: group %u metadata overlaps other metadata",
                                           ij->path, g);
        return 0;
}


/* Reads are synchronous; these start reads that will be waited for soon, so
 * that the device serves them together with the reads in between. */
static void readahead_bitmaps(ts_inject *ij, dgrp_t g) {
        ext2_filsys fs = fs_of(ij);
        struct group *gr = &ij->groups[g];
        if (gr->bb || gr->ra)
                return;
        (void) io_channel_cache_readahead(fs->io, ext2fs_block_bitmap_loc(fs, g), 1);
        (void) io_channel_cache_readahead(fs->io, ext2fs_inode_bitmap_loc(fs, g), 1);
        gr->ra = true;
}

/* A directory's first blocks, when the inode itself says where they are (a
 * direct block, or an extent in the inode): the lookup in it comes next. */
static void readahead_dir(ext2_filsys fs, const struct ext2_inode_large *in) {
        if (!LINUX_S_ISDIR(in->i_mode) || (in->i_flags & EXT4_INLINE_DATA_FL))
                return;
        blk64_t blk = in->i_block[0], n = 1;
        if (in->i_flags & EXT4_EXTENTS_FL) {
                const struct ext3_extent_header *eh = (const void *) in->i_block;
                if (ext2fs_le16_to_cpu(eh->eh_magic) != EXT3_EXT_MAGIC || eh->eh_depth != 0 ||
                    ext2fs_le16_to_cpu(eh->eh_entries) == 0)
                        return;
                const struct ext3_extent *ex = EXT_FIRST_EXTENT(eh);
                blk = ((blk64_t) ext2fs_le16_to_cpu(ex->ee_start_hi) << 32) | ext2fs_le32_to_cpu(ex->ee_start);
                n = ext2fs_le16_to_cpu(ex->ee_len);
                if (n > EXT_INIT_MAX_LEN)
                        n -= EXT_INIT_MAX_LEN;
        }
        blk64_t count = ext2fs_blocks_count(fs->super);
        if (blk < fs->super->s_first_data_block || blk >= count || n == 0)
                return;
        if (n > 4)
                n = 4;
        if (n > count - blk)
                n = count - blk;
        (void) io_channel_cache_readahead(fs->io, blk, n);
}

static uint32_t zero_bits(const char *buf, blk64_t nbits) {
        uint32_t n = 0;
        blk64_t i = 0;
        for (; i + 8 <= nbits; i += 8)
                n += 8 - (uint32_t) __builtin_popcount((unsigned char) buf[i / 8]);
        for (; i < nbits; i++)
                n += !ext2fs_test_bit(i, buf);
        return n;
}

/* Loads group g's bitmaps into the in-memory maps. A group whose block bitmap
 * was never initialised (BLOCK_UNINIT) holds only metadata: its superblock
 * backup and descriptors, and whichever groups' bitmaps and inode tables lie
 * in it. */
static int load_group(ts_inject *ij, dgrp_t g, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        struct group *gr = &ij->groups[g];
        if (gr->bb)
                return 0;

        _cleanup_free_ char *bb = calloc(1, fs->blocksize);
        _cleanup_free_ char *ib = calloc(1, fs->blocksize);
        if (!bb || !ib)
                return ts_error_set(err, ENOMEM, "load group %u", g);

        int r = check_group_overlap(ij, g, err);
        if (r < 0)
                return r;

        /* Read and check both bitmaps before the in-memory maps change: a
         * group that fails to load must stay marked used. Both are asked for
         * at once, so the reads wait for one round trip instead of two. */
        readahead_bitmaps(ij, g);
        bool block_uninit = has_csum(fs) && ext2fs_bg_flags_test(fs, g, EXT2_BG_BLOCK_UNINIT);
        bool inode_uninit = has_csum(fs) && ext2fs_bg_flags_test(fs, g, EXT2_BG_INODE_UNINIT);
        errcode_t e;
        if (!block_uninit) {
                e = io_channel_read_blk64(fs->io, ext2fs_block_bitmap_loc(fs, g), 1, bb);
                if (e)
                        return ext2_fail(err, e, "read block bitmap of group %u", g);
                if (!ext2fs_block_bitmap_csum_verify(fs, g, bb, block_bitmap_bytes(fs)))
                        return ts_error_setf_plain(err, EUCLEAN, "block bitmap of group %u: bad checksum", g);
        }
        if (!inode_uninit) {
                e = io_channel_read_blk64(fs->io, ext2fs_inode_bitmap_loc(fs, g), 1, ib);
                if (e)
                        return ext2_fail(err, e, "read inode bitmap of group %u", g);
                if (!ext2fs_inode_bitmap_csum_verify(fs, g, ib, inode_bitmap_bytes(fs)))
                        return ts_error_setf_plain(err, EUCLEAN, "inode bitmap of group %u: bad checksum", g);
        }

        /* Setting a range of an extent-tree bitmap only adds the set bits:
         * clear the group first. */
        blk64_t first = ext2fs_group_first_block2(fs, g);
        blk64_t nblocks = ext2fs_group_last_block2(fs, g) - first + 1;
        uint32_t ipg = EXT2_INODES_PER_GROUP(fs->super);
        ext2_ino_t ifirst = (ext2_ino_t) g * ipg + 1;
        bitmap_range(fs->block_map, first, nblocks, false);
        bitmap_range(fs->inode_map, ifirst, ipg, false);
        e = 0;
        if (block_uninit) {
                /* Never initialised: it holds only metadata, its superblock
                 * backup and descriptors and whichever groups' bitmaps and
                 * inode tables lie in it. */
                ext2fs_reserve_super_and_bgd(fs, g, fs->block_map);
                mark_meta_in(ij, first, first + nblocks - 1);
        } else {
                e = ext2fs_set_block_bitmap_range2(fs->block_map, first, nblocks, bb);
        }
        if (!e && !inode_uninit)
                e = ext2fs_set_inode_bitmap_range2(fs->inode_map, ifirst, ipg, ib);
        if (e || render_block_bitmap(ij, g, bb) < 0 || render_inode_bitmap(ij, g, ib) < 0) {
                bitmap_range(fs->block_map, first, nblocks, true);
                bitmap_range(fs->inode_map, ifirst, ipg, true);
                return e ? ext2_fail(err, e, "load bitmaps of group %u", g)
                         : ts_error_set(err, EIO, "load group %u", g);
        }
        /* A descriptor may claim more free blocks than the bitmap has (a
         * corrupt or hostile filesystem): count only what the bitmap has. */
        uint32_t real = zero_bits(bb, nblocks), desc = ext2fs_bg_free_blocks_count(fs, g);
        gr->lie = desc > real ? desc - real : 0;
        gr->bb = TAKE_PTR(bb);
        gr->ib = TAKE_PTR(ib);
        return 0;
}

/* Writes group g's inode (inode) or block bitmap back when it differs from
 * what was last read or written, with its checksum (which lives in the group
 * descriptor, written afterwards by ext2fs_flush). */
static int write_bitmap(ts_inject *ij, dgrp_t g, bool inode, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        struct group *gr = &ij->groups[g];
        char *buf = ij->scratch, *last = inode ? gr->ib : gr->bb;
        const char *what = inode ? "inode" : "block";
        if ((inode ? render_inode_bitmap(ij, g, buf) : render_block_bitmap(ij, g, buf)) < 0)
                return ts_error_set(err, EIO, "%s bitmap of group %u", what, g);
        if (memcmp(buf, last, fs->blocksize) == 0)
                return 0;
        if (inode) {
                ext2fs_bg_flags_clear(fs, g, EXT2_BG_INODE_UNINIT);
                ext2fs_inode_bitmap_csum_set(fs, g, buf, inode_bitmap_bytes(fs));
        } else {
                ext2fs_bg_flags_clear(fs, g, EXT2_BG_BLOCK_UNINIT);
                ext2fs_block_bitmap_csum_set(fs, g, buf, block_bitmap_bytes(fs));
        }
        ext2fs_group_desc_csum_set(fs, g);
        blk64_t loc = inode ? ext2fs_inode_bitmap_loc(fs, g) : ext2fs_block_bitmap_loc(fs, g);
        errcode_t e = io_channel_write_blk64(fs->io, loc, 1, buf);
        if (e)
                return ext2_fail(err, e, "write %s bitmap of group %u", what, g);
        memcpy(last, buf, fs->blocksize);
        ext2fs_mark_super_dirty(fs);
        return 0;
}

/* Writes back the bitmaps of loaded groups that changed. */
static int write_groups(ts_inject *ij, ts_error **err) {
        for (dgrp_t g = 0; g < ij->ngroups; g++) {
                if (!ij->groups[g].bb)
                        continue;
                int r = write_bitmap(ij, g, false, err);
                if (r >= 0)
                        r = write_bitmap(ij, g, true, err);
                if (r < 0)
                        return r;
        }
        fs_of(ij)->flags &= ~(EXT2_FLAG_BB_DIRTY | EXT2_FLAG_IB_DIRTY);
        return 0;
}

/* Writes bitmaps, descriptors and superblock and hands every block the io
 * layer holds to the kernel, so that they survive the death of the process;
 * with `sync`, then makes everything written so far durable with one fsync
 * (the io layer skips it when nothing was written since the last). Callers
 * sync as the barrier between "new objects exist" and "a directory entry
 * names them". */
static int flush(ts_inject *ij, bool sync, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        int r = write_groups(ij, err);
        if (r < 0)
                return r;
        errcode_t e = 0;
        if (fs->flags & EXT2_FLAG_DIRTY)
                e = ext2fs_flush2(fs, EXT2_FLAG_FLUSH_NO_SYNC);
        if (!e)
                e = sync ? io_channel_flush(fs->io) : ts_io_write_back(fs->io);
        if (e)
                return ext2_fail(err, e, "flush %s", ij->path);
        return 0;
}

static int commit(ts_inject *ij, ts_error **err) {
        return flush(ij, true, err);
}

/* ---- fault injection (crash-safety tests) ---- */

/* Kills the process with SIGKILL at a named step between two ordered writes
 * when TS_INJECT_FAULT names it ("<op>:<point>[:<n>]", the n-th passage,
 * default the first), so tests can check what a crash there leaves on disk.
 * Ops: file, symlink, mkdir. Points, in order:
 *   data     (file) data written and the new inode built (its block may still
 *            be held by the io layer), nothing flushed since
 *   inode    the new inode, its blocks and bitmaps flushed; no entry names it
 *   entry    the directory entry added or switched to it, flushed
 *   release  (a replacement) the old inode released and written to the kernel,
 *            not yet flushed */
static void fault(ts_inject *ij, const char *op, const char *point) {
        ts_fault_point(ij->fault, op, point);
}

static const char *fault_op(int ftype) {
        return ftype == EXT2_FT_DIR ? "mkdir" : ftype == EXT2_FT_SYMLINK ? "symlink" : "file";
}

static blk64_t loaded_free_blocks(ts_inject *ij) {
        blk64_t n = 0;
        for (dgrp_t g = 0; g < ij->ngroups; g++) {
                const struct group *gr = &ij->groups[g];
                blk64_t desc = ext2fs_bg_free_blocks_count(fs_of(ij), g);
                if (gr->bb && desc > gr->lie)
                        n += desc - gr->lie;
        }
        return n;
}

static bool worth_loading(ts_inject *ij, dgrp_t g) {
        return !ij->groups[g].bb && ext2fs_bg_free_blocks_count(fs_of(ij), g) > 0;
}

/* The first group from `start` on (wrapping around) that is worth loading,
 * or ngroups when none is. Groups loaded or without free blocks are passed
 * over once and remembered. */
static int next_group(ts_inject *ij, dgrp_t start, dgrp_t *ret, ts_error **err) {
        if (!ij->next) {
                if (!(ij->next = malloc(((size_t) ij->ngroups + 1) * sizeof(dgrp_t))))
                        return ts_error_set(err, ENOMEM, "%s: load groups", ij->path);
                for (dgrp_t g = 0; g <= ij->ngroups; g++)
                        ij->next[g] = g;
        }
        dgrp_t *next = ij->next;
        for (int pass = 0; pass < 2; pass++) {
                dgrp_t g = pass ? 0 : start;
                for (;;) {
                        while (next[g] != g) { /* path halving */
                                next[g] = next[next[g]];
                                g = next[g];
                        }
                        if (g == ij->ngroups || worth_loading(ij, g))
                                break;
                        next[g] = g + 1;
                }
                if (g < ij->ngroups) {
                        *ret = g;
                        return 0;
                }
        }
        *ret = ij->ngroups;
        return 0;
}

/* Loads groups, from `start` on, until the loaded ones hold at least `need`
 * free blocks (by their descriptors, less what a descriptor was found to
 * claim beyond its bitmap). */
static int ensure_blocks(ts_inject *ij, blk64_t need, dgrp_t start, ts_error **err) {
        blk64_t have = loaded_free_blocks(ij);
        while (have < need) {
                dgrp_t g;
                int r = next_group(ij, start, &g, err);
                if (r < 0)
                        return r;
                if (g == ij->ngroups)
                        break;
                r = load_group(ij, g, err);
                if (r < 0)
                        return r;
                blk64_t desc = ext2fs_bg_free_blocks_count(fs_of(ij), g);
                have += desc > ij->groups[g].lie ? desc - ij->groups[g].lie : 0;
        }
        if (have < need)
                return ts_error_setf_plain(err, ENOSPC,
                                           "%s: no space left: %llu blocks needed, %llu free",
                                           ij->path, (unsigned long long) need,
                                           (unsigned long long) have);
        return 0;
}

/* Loads one more group with free blocks. Returns 1 when it did, 0 when none
 * is left. */
static int load_more(ts_inject *ij, dgrp_t start, ts_error **err) {
        dgrp_t g;
        int r = next_group(ij, start, &g, err);
        if (r < 0 || g == ij->ngroups)
                return r;
        r = load_group(ij, g, err);
        return r < 0 ? r : 1;
}

static dgrp_t group_of_ino(ts_inject *ij, ext2_ino_t ino) {
        return ext2fs_group_of_ino(fs_of(ij), ino);
}

/* The stripe that mke2fs read from the device's I/O hints (a thin device
 * reports its pool's block size), in filesystem blocks; 1 when none. */
static blk64_t stripe_blocks(ext2_filsys fs) {
        blk64_t w = fs->super->s_raid_stripe_width ? fs->super->s_raid_stripe_width : fs->super->s_raid_stride;
        return w > 1 && w <= EXT_INIT_MAX_LEN ? w : 1;
}

static blk64_t group_goal(ts_inject *ij, ext2_ino_t ino) {
        return ext2fs_group_first_block2(fs_of(ij), group_of_ino(ij, ino));
}

/* Allocates a free inode near `near` and accounts for it. */
static int alloc_inode(ts_inject *ij, ext2_ino_t near, bool is_dir, ext2_ino_t *ret, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        uint32_t ipg = EXT2_INODES_PER_GROUP(fs->super);
        dgrp_t start = group_of_ino(ij, near);
        for (dgrp_t i = 0; i < ij->ngroups; i++) {
                dgrp_t g = (start + i) % ij->ngroups;
                if (ext2fs_bg_free_inodes_count(fs, g) == 0 || ij->groups[g].ifull)
                        continue;
                int r = load_group(ij, g, err);
                if (r < 0)
                        return r;
                ext2_ino_t first = (ext2_ino_t) g * ipg + 1, last = first + ipg - 1, ino;
                if (first < EXT2_FIRST_INO(fs->super))
                        first = EXT2_FIRST_INO(fs->super);
                if (first > last)
                        continue;
                if (ext2fs_find_first_zero_inode_bitmap2(fs->inode_map, first, last, &ino) != 0) {
                        ij->groups[g].ifull = true; /* until an inode of it is released */
                        continue;
                }
                ext2fs_inode_alloc_stats2(fs, ino, +1, is_dir);
                *ret = ino;
                return 0;
        }
        return ts_error_setf_plain(err, ENOSPC, "%s: no free inodes left", ij->path);
}

static int alloc_block(ts_inject *ij, blk64_t goal, blk64_t *ret, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        for (;;) {
                blk64_t b;
                errcode_t e = ext2fs_new_block2(fs, goal, NULL, &b);
                if (e == EXT2_ET_BLOCK_ALLOC_FAIL) {
                        int r = load_more(ij, ext2fs_group_of_blk2(fs, goal), err);
                        if (r < 0)
                                return r;
                        if (r > 0)
                                continue;
                }
                if (e)
                        return ext2_fail(err, e, "%s: allocate a block", ij->path);
                ext2fs_block_alloc_stats2(fs, b, +1);
                *ret = b;
                return 0;
        }
}

static int read_inode(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in, ts_error **err) {
        memset(in, 0, sizeof(*in));
        errcode_t e = ext2fs_read_inode_full(fs_of(ij), ino, (struct ext2_inode *) in, sizeof(*in));
        if (e)
                return ext2_fail(err, e, "read inode %u", ino);
        return 0;
}

static int write_inode(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        int size = EXT2_INODE_SIZE(fs->super);
        if ((size_t) size > sizeof(*in))
                size = sizeof(*in);
        errcode_t e = ext2fs_write_inode_full(fs, ino, (struct ext2_inode *) in, size);
        if (e)
                return ext2_fail(err, e, "write inode %u", ino);
        return 0;
}

/* Writes a brand-new inode over the whole on-disk slot, so nothing a previous
 * owner left there (extended attributes in the inode's tail) survives. */
static int write_new_inode(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        int size = EXT2_INODE_SIZE(fs->super); /* at most a block */
        /* No allocation: rollbacks rely on this to zero a slot. */
        char *buf = ij->scratch;
        memset(buf, 0, size);
        if (size > EXT2_GOOD_OLD_INODE_SIZE)
                in->i_extra_isize = sizeof(struct ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE;
        memcpy(buf, in, (size_t) size < sizeof(*in) ? (size_t) size : sizeof(*in));
        errcode_t e = ext2fs_write_inode_full(fs, ino, (struct ext2_inode *) buf, size);
        if (e)
                return ext2_fail(err, e, "write inode %u", ino);
        return 0;
}

static bool large_inodes(ext2_filsys fs) {
        return EXT2_INODE_SIZE(fs->super) >= EXT2_GOOD_OLD_INODE_SIZE + 16;
}

static int check_mtime(ts_inject *ij, int64_t t, ts_error **err) {
        if (t == TS_INJECT_MTIME_NOW)
                return 0;
        int64_t max = large_inodes(fs_of(ij)) ? (int64_t) INT32_MAX + (3LL << 32) : INT32_MAX;
        if (t < INT32_MIN || t > max)
                return ts_error_setf_plain(err, EINVAL, "mtime %lld is out of the range this filesystem stores",
                                           (long long) t);
        return 0;
}

/* Sets atime, mtime and ctime to t (seconds; the high epoch bits go to the
 * _extra fields of large inodes, nanoseconds 0) and crtime to now. */
static void set_times(ts_inject *ij, struct ext2_inode_large *in, int64_t t) {
        int64_t now = time(NULL);
        if (t == TS_INJECT_MTIME_NOW)
                t = now;
        uint32_t lo = (uint32_t) t;
        uint32_t epoch = (uint32_t) (((t - (int64_t) (int32_t) lo) >> 32) & 3);
        in->i_atime = in->i_mtime = in->i_ctime = lo;
        if (large_inodes(fs_of(ij))) {
                in->i_atime_extra = in->i_mtime_extra = in->i_ctime_extra = epoch;
                uint32_t nlo = (uint32_t) now;
                in->i_crtime = nlo;
                in->i_crtime_extra = (uint32_t) (((now - (int64_t) (int32_t) nlo) >> 32) & 3);
        }
}

static void set_owner(struct ext2_inode_large *in, uint32_t uid, uint32_t gid) {
        in->i_uid = (uint16_t) uid;
        in->i_gid = (uint16_t) gid;
        in->osd2.linux2.l_i_uid_high = (uint16_t) (uid >> 16);
        in->osd2.linux2.l_i_gid_high = (uint16_t) (gid >> 16);
}

/* The inode a directory entry names must be a live, non-reserved inode of
 * this filesystem; a hostile image can point an entry anywhere. */
static int check_ref(ts_inject *ij, ext2_ino_t ino, const char *what, struct ext2_inode_large *in,
                     ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        if (ino < 1 || ino > fs->super->s_inodes_count)
                return ts_error_setf_plain(err, EUCLEAN, "%s: entry points at inode %u, outside the filesystem",
                                           what, ino);
        if (ino != EXT2_ROOT_INO && ino < EXT2_FIRST_INO(fs->super))
                return ts_error_setf_plain(err, EUCLEAN, "%s: entry points at reserved inode %u", what, ino);
        dgrp_t g = group_of_ino(ij, ino);
        readahead_bitmaps(ij, g);
        int r = read_inode(ij, ino, in, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", what);
        /* Nothing of the inode is used before its bitmap bit is checked. */
        readahead_dir(fs, in);
        r = load_group(ij, g, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", what);
        if (!ext2fs_test_inode_bitmap2(fs->inode_map, ino))
                return ts_error_setf_plain(err, EUCLEAN, "%s: entry points at free inode %u", what, ino);
        if (in->i_links_count == 0 || in->i_dtime != 0)
                return ts_error_setf_plain(err, EUCLEAN, "%s: entry points at deleted inode %u", what, ino);
        uint16_t type = in->i_mode & LINUX_S_IFMT;
        if (!LINUX_S_ISREG(type) && !LINUX_S_ISDIR(type) && !LINUX_S_ISLNK(type) && !LINUX_S_ISCHR(type) &&
            !LINUX_S_ISBLK(type) && !LINUX_S_ISFIFO(type) && !LINUX_S_ISSOCK(type))
                return ts_error_setf_plain(err, EUCLEAN, "%s: inode %u has no valid file type", what, ino);
        return 0;
}

/* Looks `name` up in `dir`. *ret_ino is 0 when absent. */
static int lookup(ts_inject *ij, ext2_ino_t dir, const char *name, const char *what, ext2_ino_t *ret_ino,
                  ts_error **err) {
        ext2_ino_t ino = 0;
        errcode_t e = ext2fs_lookup(fs_of(ij), dir, name, (int) strlen(name), NULL, &ino);
        if (e == EXT2_ET_FILE_NOT_FOUND) {
                *ret_ino = 0;
                return 0;
        }
        if (e)
                return ext2_fail(err, e, "%s: look up \"%s\" in directory inode %u", what, name, dir);
        if (ino == 0)
                return ts_error_setf_plain(err, EUCLEAN, "%s: entry \"%s\" has inode 0", what, name);
        *ret_ino = ino;
        return 0;
}

/* Reads a symlink's target into a fresh NUL-terminated string. */
static int read_symlink(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in, const char *what,
                        char **ret, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        uint64_t size = EXT2_I_SIZE(in);
        if (size == 0 || size >= fs->blocksize || size >= PATH_MAX)
                return ts_error_setf_plain(err, EUCLEAN, "%s: symlink inode %u has invalid size %llu", what,
                                           ino, (unsigned long long) size);
        _cleanup_free_ char *buf = calloc(1, fs->blocksize + 1);
        if (!buf)
                return ts_error_set(err, ENOMEM, "%s", what);
        errcode_t e;
        if (in->i_flags & EXT4_INLINE_DATA_FL) {
                size_t got = 0;
                e = ext2fs_inline_data_get(fs, ino, (struct ext2_inode *) in, buf, &got);
                if (e)
                        return ext2_fail(err, e, "%s: read symlink inode %u", what, ino);
                if (got < size)
                        return ts_error_setf_plain(err, EUCLEAN, "%s: symlink inode %u is truncated", what, ino);
        } else if (ext2fs_is_fast_symlink((struct ext2_inode *) in)) {
                if (size >= sizeof(in->i_block))
                        return ts_error_setf_plain(err, EUCLEAN, "%s: fast symlink inode %u is too long", what,
                                                   ino);
                memcpy(buf, in->i_block, size);
        } else {
                ext2_file_t f;
                e = ext2fs_file_open2(fs, ino, (struct ext2_inode *) in, 0, &f);
                if (e)
                        return ext2_fail(err, e, "%s: open symlink inode %u", what, ino);
                unsigned got = 0;
                e = ext2fs_file_read(f, buf, (unsigned) size, &got);
                ext2fs_file_close(f);
                if (e)
                        return ext2_fail(err, e, "%s: read symlink inode %u", what, ino);
                if (got != size)
                        return ts_error_setf_plain(err, EUCLEAN, "%s: symlink inode %u is truncated", what, ino);
        }
        buf[size] = '\0';
        if (strlen(buf) != size)
                return ts_error_setf_plain(err, EUCLEAN, "%s: symlink inode %u contains a NUL byte", what, ino);
        *ret = TAKE_PTR(buf);
        return 0;
}

/* Directories we add entries to or change must be plain: names we write are
 * not encrypted or case-folded, and immutable means immutable. */
static int check_dir_writable(ts_inject *ij, ext2_ino_t dir, const char *what, ts_error **err) {
        struct ext2_inode_large in;
        int r = read_inode(ij, dir, &in, err);
        if (r < 0)
                return r;
        if (!LINUX_S_ISDIR(in.i_mode))
                return ts_error_setf_plain(err, ENOTDIR, "%s: inode %u is not a directory", what, dir);
        if (in.i_flags & (EXT4_ENCRYPT_FL | EXT4_CASEFOLD_FL))
                return ts_error_setf_plain(err, EOPNOTSUPP,
                                           "%s: parent directory is encrypted or case-folded", what);
        if (in.i_flags & (EXT2_IMMUTABLE_FL | EXT2_APPEND_FL))
                return ts_error_setf_plain(err, EPERM, "%s: parent directory is immutable or append-only",
                                           what);
        return 0;
}

struct blocks_check {
        ts_inject *ij;
        ts_error **err;
        int r;
        const char *what;
};

/* Every block of a file we are about to change or free must lie in the
 * filesystem and be marked in use; loading its group makes freeing it later
 * update bitmaps we will write back. */
static int blocks_check_cb(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt, blk64_t ref_blk,
                           int ref_offset, void *priv) {
        struct blocks_check *c = priv;
        blk64_t b = *blocknr;
        if (b < fs->super->s_first_data_block || b >= ext2fs_blocks_count(fs->super)) {
                c->r = ts_error_setf_plain(c->err, EUCLEAN, "%s: block %llu is outside the filesystem", c->what,
                                           (unsigned long long) b);
                return BLOCK_ABORT;
        }
        c->r = load_group(c->ij, ext2fs_group_of_blk2(fs, b), c->err);
        if (c->r < 0)
                return BLOCK_ABORT;
        if (!ext2fs_test_block_bitmap2(fs->block_map, b)) {
                c->r = ts_error_setf_plain(c->err, EUCLEAN, "%s: block %llu is marked free", c->what,
                                           (unsigned long long) b);
                return BLOCK_ABORT;
        }
        return 0;
}

static int check_blocks(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in, const char *what,
                        ts_error **err) {
        if (!ext2fs_inode_has_valid_blocks2(fs_of(ij), (struct ext2_inode *) in))
                return 0;
        struct blocks_check c = { .ij = ij, .err = err, .what = what };
        errcode_t e = ext2fs_block_iterate3(fs_of(ij), ino, BLOCK_FLAG_READ_ONLY, NULL, blocks_check_cb, &c);
        if (c.r < 0)
                return c.r;
        if (e)
                return ext2_fail(err, e, "%s: walk the blocks of inode %u", what, ino);
        return 0;
}

/* Loads the bitmaps that freeing inode `in` changes (its own group, its
 * blocks' and its xattr block's groups) and checks its blocks, so that the
 * release itself needs no memory of ours and meets no corruption: a
 * replacement calls this before it switches the entry. */
static int prepare_release(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in, const char *what,
                           ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        int r = load_group(ij, group_of_ino(ij, ino), err);
        if (r < 0)
                return r;
        r = check_blocks(ij, ino, in, what, err);
        if (r < 0)
                return r;
        blk64_t acl = ext2fs_file_acl_block(fs, (struct ext2_inode *) in);
        if (!acl)
                return 0;
        if (acl < fs->super->s_first_data_block || acl >= ext2fs_blocks_count(fs->super))
                return ts_error_setf_plain(err, EUCLEAN, "%s: xattr block %llu is outside the filesystem", what,
                                           (unsigned long long) acl);
        return load_group(ij, ext2fs_group_of_blk2(fs, acl), err);
}

/* Drops one link to ino; frees its blocks, extended-attribute block and the
 * inode itself when it was the last. `force` frees regardless of the link
 * count (an inode we created and never linked). */
static int release_inode(ts_inject *ij, ext2_ino_t ino, bool force, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        struct ext2_inode_large in;
        char what[64];
        snprintf(what, sizeof what, "release inode %u", ino);
        int r = read_inode(ij, ino, &in, err);
        if (r < 0)
                return r;
        if (!force && in.i_links_count > 1 && !LINUX_S_ISDIR(in.i_mode)) {
                in.i_links_count--;
                in.i_ctime = (uint32_t) time(NULL);
                return write_inode(ij, ino, &in, err);
        }
        r = prepare_release(ij, ino, &in, what, err);
        if (r < 0)
                return r;
        errcode_t e;
        if (ext2fs_inode_has_valid_blocks2(fs, (struct ext2_inode *) &in)) {
                e = ext2fs_punch(fs, ino, (struct ext2_inode *) &in, NULL, 0, ~0ULL);
                if (e)
                        return ext2_fail(err, e, "%s: free its blocks", what);
                r = read_inode(ij, ino, &in, err);
                if (r < 0)
                        return r;
        }
        blk64_t acl = ext2fs_file_acl_block(fs, (struct ext2_inode *) &in);
        if (acl) {
                __u32 count = 0;
                e = ext2fs_adjust_ea_refcount3(fs, acl, NULL, -1, &count, ino);
                if (e)
                        return ext2_fail(err, e, "%s: release its xattr block", what);
                if (count == 0 && ext2fs_test_block_bitmap2(fs->block_map, acl))
                        ext2fs_block_alloc_stats2(fs, acl, -1);
                ext2fs_file_acl_block_set(fs, (struct ext2_inode *) &in, 0);
        }
        in.i_links_count = 0;
        in.i_dtime = (uint32_t) time(NULL);
        r = write_inode(ij, ino, &in, err);
        if (r < 0)
                return r;
        ext2fs_inode_alloc_stats2(fs, ino, -1, LINUX_S_ISDIR(in.i_mode));
        ij->groups[group_of_ino(ij, ino)].ifull = false;
        return 0;
}

/* Undoes a half-built new inode after a failure and makes that durable.
 * `written`: its slot holds an inode we wrote, released with its blocks.
 * Otherwise the slot still holds what a previous owner left (a deleted
 * inode whose blocks may belong to someone else by now), which must not be
 * read as ours: only the allocation is undone. If even that fails the handle
 * is marked broken. */
static void rollback_new(ts_inject *ij, ext2_ino_t ino, bool written, bool is_dir) {
        _cleanup_error_ ts_error *e2 = NULL;
        int r = 0;
        if (written)
                r = release_inode(ij, ino, true, &e2);
        else {
                ext2fs_inode_alloc_stats2(fs_of(ij), ino, -1, is_dir);
                ij->groups[group_of_ino(ij, ino)].ifull = false;
        }
        if (r < 0 || commit(ij, &e2) < 0) {
                log_debug("inject: rollback of inode %u failed: %s", ino, ts_error_message(e2, -EIO));
                ij->broken = true;
        }
}

/* The blocks of a directory we are about to write into must be sane (see
 * check_blocks); a hostile image must not steer our writes onto other data. */
static int prepare_dir_write(ts_inject *ij, ext2_ino_t dir, const char *what, ts_error **err) {
        int r = check_dir_writable(ij, dir, what, err);
        if (r < 0)
                return r;
        struct ext2_inode_large in;
        r = read_inode(ij, dir, &in, err);
        if (r < 0)
                return r;
        r = check_blocks(ij, dir, &in, what, err);
        if (r < 0)
                return r;
        /* Room for a new directory block and extent tree growth. */
        return ensure_blocks(ij, 4, group_of_ino(ij, dir), err);
}

static int link_entry(ts_inject *ij, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype,
                      const char *what, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        for (int tries = 0;; tries++) {
                errcode_t e = ext2fs_link(fs, dir, name, ino, ftype);
                if (e == EXT2_ET_DIR_NO_SPACE && tries < 2) {
                        e = ext2fs_expand_dir(fs, dir);
                        if (e == EXT2_ET_BLOCK_ALLOC_FAIL || e == EXT2_ET_DIR_NO_SPACE)
                                return ts_error_setf_plain(err, ENOSPC, "%s: no space to grow the directory",
                                                           what);
                        if (e)
                                return ext2_fail(err, e, "%s: grow directory inode %u", what, dir);
                        continue;
                }
                if (e)
                        return ext2_fail(err, e, "%s: add entry \"%s\"", what, name);
                return 0;
        }
}

struct switch_ctx {
        const char *name;
        int len;
        ext2_ino_t old_ino, new_ino;
        int ftype;
        bool done;
        bool filetype;
};

static int switch_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *d, int offset, int blocksize, char *buf,
                     void *priv) {
        struct switch_ctx *c = priv;
        if (d->inode != c->old_ino || ext2fs_dirent_name_len(d) != c->len || memcmp(d->name, c->name, c->len))
                return 0;
        d->inode = c->new_ino;
        if (c->filetype)
                ext2fs_dirent_set_file_type(d, c->ftype);
        c->done = true;
        return DIRENT_CHANGED | DIRENT_ABORT;
}

/* Points the existing entry dir/name from old_ino to new_ino: one 4-byte
 * field (and the type byte next to it) in one directory block, so a reader
 * sees either inode, never a mix. */
static int switch_entry(ts_inject *ij, ext2_ino_t dir, const char *name, ext2_ino_t old_ino,
                        ext2_ino_t new_ino, int ftype, const char *what, ts_error **err) {
        struct switch_ctx c = {
                .name = name,
                .len = (int) strlen(name),
                .old_ino = old_ino,
                .new_ino = new_ino,
                .ftype = ftype,
                .filetype = ext2fs_has_feature_filetype(fs_of(ij)->super),
        };
        errcode_t e = ext2fs_dir_iterate2(fs_of(ij), dir, 0, NULL, switch_cb, &c);
        if (e)
                return ext2_fail(err, e, "%s: replace entry \"%s\"", what, name);
        if (!c.done)
                return ts_error_setf_plain(err, EUCLEAN, "%s: entry \"%s\" vanished from directory inode %u", what,
                                           name, dir);
        return 0;
}

/* Makes the fully written, committed, unlinked inode new_ino visible at t:
 * a new entry, or a switch of the existing one followed by the release of the
 * old inode. On failure before the entry exists, new_ino is rolled back. */
static int install(ts_inject *ij, const struct target *t, ext2_ino_t new_ino, int ftype, const char *what,
                   ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        const char *op = fault_op(ftype);
        int r;
        fault(ij, op, "inode");
        if (t->ino) {
                /* Whatever the release of the old inode needs is loaded and
                 * checked now: once the entry is switched, a failure there
                 * would leave the old inode leaked. */
                struct ext2_inode_large old;
                r = read_inode(ij, t->ino, &old, err);
                if (r >= 0 && (old.i_links_count <= 1 || LINUX_S_ISDIR(old.i_mode)))
                        r = prepare_release(ij, t->ino, &old, what, err);
                if (r < 0) {
                        rollback_new(ij, new_ino, true, ftype == EXT2_FT_DIR);
                        return ts_error_prefix(err, r, "%s: the file to replace", what);
                }
                r = switch_entry(ij, t->dir, t->name, t->ino, new_ino, ftype, what, err);
                if (r < 0) {
                        rollback_new(ij, new_ino, true, ftype == EXT2_FT_DIR);
                        return r;
                }
                r = commit(ij, err);
                if (r < 0) {
                        ij->broken = true;
                        return r;
                }
                fault(ij, op, "entry");
                r = release_inode(ij, t->ino, false, err);
                if (r < 0) {
                        /* The new file is in place; the old inode stays allocated
                         * and unreferenced (e2fsck moves it to lost+found). */
                        _cleanup_error_ ts_error *e2 = NULL;
                        if (commit(ij, &e2) < 0)
                                ij->broken = true;
                        return ts_error_prefix(err, r, "%s: release the replaced inode %u", what, t->ino);
                }
                /* Written now, made durable by the next barrier or close: a
                 * crash before that only leaves the old inode allocated. */
                r = flush(ij, false, err);
                if (r < 0) {
                        ij->broken = true;
                        return r;
                }
                fault(ij, op, "release");
                return 0;
        }

        r = link_entry(ij, t->dir, t->name, new_ino, ftype, what, err);
        if (r < 0) {
                rollback_new(ij, new_ino, true, ftype == EXT2_FT_DIR);
                return r;
        }
        if (ftype == EXT2_FT_DIR) {
                struct ext2_inode_large p;
                r = read_inode(ij, t->dir, &p, err);
                if (r >= 0) {
                        if (p.i_links_count < EXT2_LINK_MAX && p.i_links_count > 1)
                                p.i_links_count++;
                        else if (ext2fs_has_feature_dir_nlink(fs->super))
                                p.i_links_count = 1;
                        p.i_mtime = p.i_ctime = (uint32_t) time(NULL);
                        r = write_inode(ij, t->dir, &p, err);
                }
                if (r < 0) {
                        ij->broken = true;
                        return r;
                }
        }
        r = commit(ij, err);
        if (r < 0) {
                ij->broken = true;
                return r;
        }
        fault(ij, op, "entry");
        return 0;
}

/* Initialises an empty extent tree in the inode when the filesystem has
 * extents. */
static int init_extents(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in, ts_error **err) {
        if (!ext2fs_has_feature_extents(fs_of(ij)->super))
                return 0;
        ext2_extent_handle_t h;
        in->i_flags &= ~EXT4_EXTENTS_FL;
        errcode_t e = ext2fs_extent_open2(fs_of(ij), ino, (struct ext2_inode *) in, &h);
        if (e)
                return ext2_fail(err, e, "inode %u: initialise extents", ino);
        ext2fs_extent_free(h);
        return 0;
}

/* Maps logical block 0 of a one-block inode (directory, slow symlink). */
static int map_first_block(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in, blk64_t blk,
                           ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        if (!ext2fs_has_feature_extents(fs->super)) {
                in->i_block[0] = (uint32_t) blk;
                return write_inode(ij, ino, in, err);
        }
        ext2_extent_handle_t h;
        errcode_t e = ext2fs_extent_open2(fs, ino, NULL, &h);
        if (!e) {
                e = ext2fs_extent_set_bmap(h, 0, blk, 0);
                ext2fs_extent_free(h);
        }
        if (e)
                return ext2_fail(err, e, "inode %u: map its block", ino);
        return read_inode(ij, ino, in, err);
}

/* After a failure while building a new inode around one block (directory,
 * slow symlink) that is already freed again: writes the inode back with no
 * blocks and no links. Returns whether the slot now holds it; when not, what
 * the slot holds is unknown and the handle is marked broken. */
static bool empty_slot(ts_inject *ij, ext2_ino_t ino, struct ext2_inode_large *in) {
        ext2_filsys fs = fs_of(ij);
        in->i_links_count = 0;
        in->i_flags = 0;
        memset(in->i_block, 0, sizeof(in->i_block));
        ext2fs_iblk_set(fs, (struct ext2_inode *) in, 0);
        _cleanup_error_ ts_error *e2 = NULL;
        if (write_new_inode(ij, ino, in, &e2) < 0) {
                ij->broken = true;
                return false;
        }
        return true;
}

/* Creates the directory parent/name (not yet linked when install is false)
 * and returns its inode. */
static int make_dir(ts_inject *ij, ext2_ino_t parent, const char *name, uint32_t mode, uint32_t uid,
                    uint32_t gid, int64_t mtime, const char *what, ext2_ino_t *ret, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        int r = prepare_dir_write(ij, parent, what, err);
        if (r < 0)
                return r;
        ext2_ino_t ino = 0;
        r = alloc_inode(ij, parent, true, &ino, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", what);

        blk64_t blk;
        char *block = NULL;
        struct ext2_inode_large in = {};
        bool written = false;
        errcode_t e;
        r = ensure_blocks(ij, 8, group_of_ino(ij, ino), err);
        if (r < 0)
                goto fail;
        r = alloc_block(ij, group_goal(ij, ino), &blk, err);
        if (r < 0)
                goto fail;
        e = ext2fs_new_dir_block(fs, ino, parent, &block);
        if (!e)
                e = ext2fs_write_dir_block4(fs, blk, block, 0, ino);
        ext2fs_free_mem(&block);
        if (e) {
                r = ext2_fail(err, e, "%s: write directory block", what);
                ext2fs_block_alloc_stats2(fs, blk, -1);
                goto fail;
        }
        in.i_mode = LINUX_S_IFDIR | (mode & 07777);
        set_owner(&in, uid, gid);
        in.i_links_count = 2;
        in.i_size = fs->blocksize;
        set_times(ij, &in, mtime);
        ext2fs_iblk_set(fs, (struct ext2_inode *) &in, 1);
        r = init_extents(ij, ino, &in, err);
        if (r >= 0)
                r = write_new_inode(ij, ino, &in, err);
        if (r >= 0)
                r = map_first_block(ij, ino, &in, blk, err);
        if (r < 0) {
                /* The block is not reachable from the inode yet: free it here,
                 * and leave an empty slot for the rollback to release. */
                ext2fs_block_alloc_stats2(fs, blk, -1);
                written = empty_slot(ij, ino, &in);
                goto fail;
        }
        written = true;
        r = commit(ij, err);
        if (r < 0)
                goto fail;

        struct target t = { .dir = parent };
        snprintf(t.name, sizeof t.name, "%s", name);
        r = install(ij, &t, ino, EXT2_FT_DIR, what, err);
        if (r < 0)
                return r;
        *ret = ino;
        return 0;
fail:
        rollback_new(ij, ino, written, true);
        return r;
}

static int check_path(const char *path, ts_error **err) {
        if (!path || path[0] != '/')
                return ts_error_setf_plain(err, EINVAL, "guest path \"%s\" is not absolute", path ? path : "");
        if (strlen(path) >= PATH_MAX)
                return ts_error_setf_plain(err, ENAMETOOLONG, "guest path is longer than %d bytes", PATH_MAX - 1);
        return 0;
}

/* A path being resolved: what is left of it, and the directories walked
 * through from the guest root. */
struct walk {
        const char *path; /* as given, for messages */
        char *queue;      /* the rest of the path; a symlink splices its target in */
        char *p;          /* where the next component starts */
        ext2_ino_t *stack;
        size_t depth, cap;
        unsigned nlinks;
};

static void walk_done(struct walk *w) {
        free(w->queue);
        free(w->stack);
}

static int walk_init(struct walk *w, const char *path, ts_error **err) {
        w->path = path;
        w->queue = w->p = strdup(path);
        w->cap = 64;
        w->stack = calloc(w->cap, sizeof(*w->stack));
        if (!w->queue || !w->stack)
                return ts_error_set(err, ENOMEM, "%s", path);
        w->stack[0] = EXT2_ROOT_INO;
        w->depth = 1;
        return 0;
}

static ext2_ino_t walk_dir(const struct walk *w) {
        return w->stack[w->depth - 1];
}

/* The next component to look up into name ("." and ".." are walked here),
 * and whether it is the last. Returns 1, 0 at the end of the path, or
 * -ENAMETOOLONG. */
static int walk_next(struct walk *w, char name[static EXT2_NAME_LEN + 1], bool *last, ts_error **err) {
        for (;;) {
                while (*w->p == '/')
                        w->p++;
                if (!*w->p)
                        return 0;
                char *c = w->p;
                size_t len = strcspn(c, "/");
                w->p += len;
                if (len > EXT2_NAME_LEN)
                        return ts_error_setf_plain(err, ENAMETOOLONG, "%s: component \"%.*s...\" is too long",
                                                   w->path, 32, c);
                if (len == 1 && c[0] == '.')
                        continue;
                if (len == 2 && c[0] == '.' && c[1] == '.') {
                        if (w->depth > 1)
                                w->depth--;
                        continue;
                }
                memcpy(name, c, len);
                name[len] = '\0';
                *last = *w->p == '\0';
                return 1;
        }
}

/* Replaces symlink ino (named name) by its target in what is left to walk. */
static int walk_symlink(ts_inject *ij, struct walk *w, ext2_ino_t ino, struct ext2_inode_large *in,
                        const char *name, bool last, ts_error **err) {
        if (++w->nlinks > MAX_SYMLINKS)
                return ts_error_setf_plain(err, ELOOP, "%s: too many levels of symbolic links", w->path);
        _cleanup_free_ char *target = NULL;
        int r = read_symlink(ij, ino, in, w->path, &target, err);
        if (r < 0)
                return r;
        size_t tl = strlen(target), rl = strlen(w->p);
        if (tl + 1 + rl >= PATH_MAX)
                return ts_error_setf_plain(err, ENAMETOOLONG, "%s: symlink \"%s\" expands past %d bytes",
                                           w->path, name, PATH_MAX - 1);
        char *nq = malloc(tl + 1 + rl + 1);
        if (!nq)
                return ts_error_set(err, ENOMEM, "%s", w->path);
        memcpy(nq, target, tl);
        nq[tl] = '/';
        memcpy(nq + tl + 1, w->p, rl + 1);
        free(w->queue);
        w->queue = w->p = nq;
        if (target[0] == '/')
                w->depth = 1;
        if (last && !rl)
                /* Drop the trailing '/' so the target's own last component is
                 * treated as the final one. */
                nq[tl] = '\0';
        return 0;
}

static int walk_push(struct walk *w, ext2_ino_t ino, ts_error **err) {
        if (w->depth == w->cap) {
                ext2_ino_t *ns = reallocarray(w->stack, w->cap * 2, sizeof(*w->stack));
                if (!ns)
                        return ts_error_set(err, ENOMEM, "%s", w->path);
                w->stack = ns;
                w->cap *= 2;
        }
        w->stack[w->depth++] = ino;
        return 0;
}

/* The entry name in dir, ino (0: absent) with its inode in (when ino). */
static int found(struct target *ret, ext2_ino_t dir, const char *name, ext2_ino_t ino,
                 const struct ext2_inode_large *in) {
        ret->dir = dir;
        snprintf(ret->name, sizeof ret->name, "%s", name);
        ret->ino = ino;
        if (ino)
                ret->inode = *in;
        return 0;
}

/* Makes missing directory name in dir when rflags allow it (intermediate,
 * or last with R_MKDIR_LAST), -ENOENT otherwise. */
static int make_missing(ts_inject *ij, const struct walk *w, ext2_ino_t dir, const char *name, bool last,
                        unsigned rflags, const ts_inject_opts *dopts, ext2_ino_t *ret_ino,
                        struct ext2_inode_large *ret_in, ts_error **err) {
        if (!(rflags & (last ? R_MKDIR_LAST : R_MKDIRS)))
                return ts_error_setf_plain(err, ENOENT, "%s: \"%s\" does not exist", w->path, name);
        int r = make_dir(ij, dir, name, dopts->mode, dopts->uid, dopts->gid, dopts->mtime, w->path, ret_ino,
                         err);
        if (r < 0)
                return r;
        return read_inode(ij, *ret_ino, ret_in, err);
}

/* Resolves a guest path. Components are processed from a queue; a symlink's
 * target is put in front of what remains (an absolute one restarts at the
 * guest root), `..` pops a stack of the directories walked through and stops
 * at the root. Nothing ever leaves the guest filesystem. */
static int resolve(ts_inject *ij, const char *path, unsigned rflags, const ts_inject_opts *dopts,
                   struct target *ret, ts_error **err) {
        int r = check_path(path, err);
        if (r < 0)
                return r;
        _cleanup_(walk_done) struct walk w = { 0 };
        r = walk_init(&w, path, err);
        if (r < 0)
                return r;
        for (;;) {
                char name[EXT2_NAME_LEN + 1];
                bool last = false;
                r = walk_next(&w, name, &last, err);
                if (r < 0)
                        return r;
                if (r == 0) {
                        /* The path names a directory without a final name. */
                        memset(ret, 0, sizeof(*ret));
                        ret->ino = walk_dir(&w);
                        return read_inode(ij, ret->ino, &ret->inode, err);
                }
                ext2_ino_t cur = walk_dir(&w), ino = 0;
                struct ext2_inode_large in;
                r = lookup(ij, cur, name, path, &ino, err);
                if (r >= 0 && ino)
                        r = check_ref(ij, ino, path, &in, err);
                if (r < 0)
                        return r;
                if (last && !(rflags & R_FOLLOW_LAST))
                        return found(ret, cur, name, ino, &in);
                if (!ino)
                        r = make_missing(ij, &w, cur, name, last, rflags, dopts, &ino, &in, err);
                else if (LINUX_S_ISLNK(in.i_mode)) {
                        r = walk_symlink(ij, &w, ino, &in, name, last, err);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (r < 0)
                        return r;
                if (last && !LINUX_S_ISDIR(in.i_mode))
                        return found(ret, cur, name, ino, &in);
                if (!LINUX_S_ISDIR(in.i_mode))
                        return ts_error_setf_plain(err, ENOTDIR, "%s: \"%s\" is not a directory", path, name);
                r = walk_push(&w, ino, err);
                if (r < 0)
                        return r;
                if (last)
                        return found(ret, cur, name, ino, &in);
        }
}

static int check_opts(ts_inject *ij, const ts_inject_opts *o, ts_error **err) {
        if (!o)
                return ts_error_setf_plain(err, EINVAL, "no options given");
        if (o->mode > 07777 || o->dir_mode > 07777)
                return ts_error_setf_plain(err, EINVAL, "mode %o is not a permission mode (at most 07777)",
                                           o->mode > 07777 ? o->mode : o->dir_mode);
        if (o->flags & ~(uint32_t) (TS_INJECT_NO_MKDIRS | TS_INJECT_REFUSE_SYMLINK))
                return ts_error_setf_plain(err, EINVAL, "unknown option flags %#x", o->flags);
        if (ij->broken)
                return ts_error_setf_plain(err, EIO,
                                           "%s: an earlier failure could not be undone; close and check it",
                                           ij->path);
        return check_mtime(ij, o->mtime, err);
}

/* The target of a write must be absent or a non-directory we may replace. */
static int check_replace(const struct target *t, const ts_inject_opts *o, const char *path, ts_error **err) {
        if (!t->dir || (t->ino && LINUX_S_ISDIR(t->inode.i_mode)))
                return ts_error_setf_plain(err, EISDIR, "%s: is a directory", path);
        if (t->ino && LINUX_S_ISLNK(t->inode.i_mode) && (o->flags & TS_INJECT_REFUSE_SYMLINK))
                return ts_error_setf_plain(err, ELOOP, "%s: is a symlink and replacing symlinks was refused",
                                           path);
        return 0;
}

/* The start of writing a non-directory at guest_path, shared by files and
 * symlinks: resolves it (creating missing parents unless NO_MKDIRS), checks
 * that what is there may be replaced and that the parent may be written, that
 * `nblocks` data blocks are free, and allocates the new inode near the parent.
 * On success *ret_ino is allocated in memory only: the caller writes it or
 * rolls it back. */
static int begin_new(ts_inject *ij, const char *guest_path, const ts_inject_opts *opts, blk64_t nblocks,
                     struct target *t, ext2_ino_t *ret_ino, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        ts_inject_opts dopts = { .mode = opts->dir_mode, .uid = opts->dir_uid, .gid = opts->dir_gid,
                                 .mtime = TS_INJECT_MTIME_NOW };
        int r = resolve(ij, guest_path, (opts->flags & TS_INJECT_NO_MKDIRS) ? 0 : R_MKDIRS, &dopts, t, err);
        if (r < 0)
                return r;
        r = check_replace(t, opts, guest_path, err);
        if (r < 0)
                return r;
        r = prepare_dir_write(ij, t->dir, guest_path, err);
        if (r < 0)
                return r;
        if (nblocks > ext2fs_free_blocks_count(fs->super))
                return ts_error_setf_plain(err, ENOSPC, "%s: no space left on %s: %llu blocks needed, %llu free",
                                           guest_path, ij->path, (unsigned long long) nblocks,
                                           (unsigned long long) ext2fs_free_blocks_count(fs->super));
        r = alloc_inode(ij, t->dir, false, ret_ino, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", guest_path);
        return 0;
}

static int pread_full(int fd, char *buf, size_t len, off_t off) {
        size_t done = 0;
        while (done < len) {
                ssize_t n = pread(fd, buf + done, len - done, off + (off_t) done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -ENODATA;
                done += (size_t) n;
        }
        return 0;
}

struct segment {
        blk64_t start, len; /* logical blocks */
};

/* The data ranges of the source, in guest blocks; holes stay out. */
static int source_segments(int fd, uint64_t size, unsigned bs, struct segment **ret, size_t *ret_n,
                           blk64_t *ret_blocks) {
        _cleanup_free_ struct segment *segs = NULL;
        size_t n = 0, cap = 0;
        blk64_t total = 0, next = 0;
        off_t saved = lseek(fd, 0, SEEK_CUR);
        off_t off = 0;
        while ((uint64_t) off < size) {
                off_t d = lseek(fd, off, SEEK_DATA);
                off_t h;
                if (d < 0 && errno == ENXIO)
                        break;
                if (d < 0) {
                        /* No hole support: all data. */
                        d = off;
                        h = (off_t) size;
                } else {
                        h = lseek(fd, d, SEEK_HOLE);
                        if (h < 0 || (uint64_t) h > size)
                                h = (off_t) size;
                }
                if (h <= d)
                        break;
                blk64_t s = (blk64_t) d / bs, e = ((blk64_t) h + bs - 1) / bs;
                if (s < next)
                        s = next;
                if (e > s) {
                        if (n && segs[n - 1].start + segs[n - 1].len == s)
                                segs[n - 1].len += e - s;
                        else {
                                if (n == cap) {
                                        size_t nc = cap ? cap * 2 : 16;
                                        struct segment *ns = reallocarray(segs, nc, sizeof(*segs));
                                        if (!ns)
                                                return -ENOMEM;
                                        segs = ns;
                                        cap = nc;
                                }
                                segs[n++] = (struct segment){ s, e - s };
                        }
                        total += e - s;
                        next = e;
                }
                off = h;
        }
        if (saved >= 0)
                (void) lseek(fd, saved, SEEK_SET);
        *ret = TAKE_PTR(segs);
        *ret_n = n;
        *ret_blocks = total;
        return 0;
}

/* Finds where logical block lblk of ino lives and how many blocks follow it
 * contiguously (at most max). */
static int map_run(ts_inject *ij, ext2_ino_t ino, ext2_extent_handle_t h, blk64_t lblk, blk64_t max,
                   blk64_t *ret_pblk, blk64_t *ret_n, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        errcode_t e;
        if (h) {
                struct ext2fs_extent ext;
                e = ext2fs_extent_goto(h, lblk);
                if (!e)
                        e = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ext);
                if (e)
                        return ext2_fail(err, e, "inode %u: map block %llu", ino, (unsigned long long) lblk);
                if (lblk < ext.e_lblk || lblk >= ext.e_lblk + ext.e_len || (ext.e_flags & EXT2_EXTENT_FLAGS_UNINIT))
                        return ts_error_setf_plain(err, EIO, "inode %u: block %llu is not mapped as written",
                                                   ino, (unsigned long long) lblk);
                blk64_t n = ext.e_lblk + ext.e_len - lblk;
                *ret_pblk = ext.e_pblk + (lblk - ext.e_lblk);
                *ret_n = n < max ? n : max;
                return 0;
        }
        blk64_t first = 0, n = 0;
        while (n < max) {
                blk64_t p = 0;
                e = ext2fs_bmap2(fs, ino, NULL, NULL, 0, lblk + n, NULL, &p);
                if (e)
                        return ext2_fail(err, e, "inode %u: map block %llu", ino, (unsigned long long) (lblk + n));
                if (!p || (n && p != first + n))
                        break;
                if (!n)
                        first = p;
                n++;
        }
        if (!n)
                return ts_error_setf_plain(err, EIO, "inode %u: block %llu is not mapped", ino,
                                           (unsigned long long) lblk);
        *ret_pblk = first;
        *ret_n = n;
        return 0;
}

/* Writes file data to freshly allocated blocks. On a block device this goes
 * around the page cache (O_DIRECT): the blocks are new, nothing caches them,
 * and the copy into the cache is most of the cost of a large file. The
 * commit's fsync of the device flushes them with everything else. */
static int write_data(ts_inject *ij, blk64_t pblk, blk64_t n, const char *buf, const char *what,
                      ts_error **err) {
        errcode_t e = ts_io_write_data(fs_of(ij)->io, pblk, n, buf);
        if (e)
                return ext2_fail(err, e, "%s: write data at block %llu", what, (unsigned long long) pblk);
        return 0;
}

/* The first block of a free run of at least `want` blocks, searched from
 * `goal` to the end and then from the start; `goal` when there is none.
 * With align > 1, a run that starts on a multiple of align is preferred: the
 * first such run in a pass, else the first run of that pass that fits.
 * Not ext2fs_new_range(EXT2_NEWRANGE_MIN_LENGTH): when no run is long enough
 * and the filesystem's last block is in use (as unloaded groups are here) it
 * restarts its search forever (e2fsprogs 1.47.0). */
static blk64_t free_run(ext2_filsys fs, blk64_t goal, blk64_t want, blk64_t align) {
        blk64_t first = fs->super->s_first_data_block, end = ext2fs_blocks_count(fs->super);
        for (int pass = 0; pass < 2; pass++) {
                blk64_t from = pass ? first : goal, stop = pass ? goal : end;
                blk64_t unaligned = 0;
                bool have_unaligned = false;
                while (from < stop) {
                        blk64_t zero, used;
                        if (ext2fs_find_first_zero_block_bitmap2(fs->block_map, from, stop - 1, &zero) != 0)
                                break;
                        blk64_t start = align > 1 && zero % align ? zero + (align - zero % align) : zero;
                        if (start >= end)
                                start = zero;
                        blk64_t last = end - start > want ? start + want - 1 : end - 1;
                        if (ext2fs_find_first_set_block_bitmap2(fs->block_map, zero, last, &used) != 0)
                                used = last + 1;
                        /* [zero, used) is free. */
                        if (used >= start + want)
                                return start;
                        if (!have_unaligned && used - zero >= want) {
                                unaligned = zero;
                                have_unaligned = true;
                        }
                        from = used > zero ? used : zero + 1;
                }
                if (have_unaligned)
                        return unaligned;
        }
        return goal;
}

/* Allocates the segment's blocks in ino and copies the source into them. */
static int copy_segment(ts_inject *ij, ext2_ino_t ino, int fd, uint64_t size, const struct segment *s,
                        char *buf, blk64_t chunk, const char *what, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        unsigned bs = fs->blocksize;
        errcode_t e;
        /* Start where a free run can hold the whole segment (up to one
         * extent): first-fit would scatter the file over small holes, and on
         * a thin device each newly touched chunk costs a provisioning. */
        blk64_t run_want = s->len < EXT_INIT_MAX_LEN ? s->len : EXT_INIT_MAX_LEN;
        /* A segment of a stripe or more starts on a stripe boundary when a
         * free run there can hold it: on a thin device the stripe is the
         * pool's block, and a write that covers whole pool blocks is
         * provisioned without zeroing (or copying) one. */
        blk64_t align = stripe_blocks(fs);
        blk64_t goal = free_run(fs, group_goal(ij, ino), run_want, s->len >= align ? align : 1);
        for (;;) {
                e = ext2fs_fallocate(fs, EXT2_FALLOCATE_FORCE_INIT | EXT2_FALLOCATE_INIT_BEYOND_EOF, ino, NULL, goal, s->start,
                                     s->len);
                if (e == EXT2_ET_BLOCK_ALLOC_FAIL || e == EXT2_ET_EXTENT_NO_SPACE) {
                        int r = load_more(ij, group_of_ino(ij, ino), err);
                        if (r < 0)
                                return r;
                        if (r > 0)
                                continue;
                        return ts_error_setf_plain(err, ENOSPC, "%s: no space left on %s", what, ij->path);
                }
                if (e)
                        return ext2_fail(err, e, "%s: allocate blocks", what);
                break;
        }

        ext2_extent_handle_t h = NULL;
        if (ext2fs_has_feature_extents(fs->super)) {
                e = ext2fs_extent_open2(fs, ino, NULL, &h);
                if (e)
                        return ext2_fail(err, e, "%s: open extents", what);
        }
        int r = 0;
        blk64_t lblk = s->start, end = s->start + s->len;
        while (lblk < end) {
                blk64_t pblk = 0, n = 0;
                r = map_run(ij, ino, h, lblk, end - lblk < chunk ? end - lblk : chunk, &pblk, &n, err);
                if (r < 0)
                        break;
                /* End a write that stops inside the run on a stripe boundary,
                 * so no pool block is split between two writes. */
                if (align > 1 && lblk + n < end && (pblk + n) % align && n > (pblk + n) % align)
                        n -= (pblk + n) % align;
                uint64_t off = (uint64_t) lblk * bs;
                uint64_t want = (uint64_t) n * bs;
                if (off + want > size)
                        want = size - off;
                memset(buf + want, 0, (size_t) ((uint64_t) n * bs - want));
                r = pread_full(fd, buf, want, (off_t) off);
                if (r == -ENODATA) {
                        r = ts_error_setf_plain(err, EIO, "%s: the source file shrank while being copied", what);
                        break;
                }
                if (r < 0) {
                        r = ts_error_set(err, r, "%s: read the source", what);
                        break;
                }
                r = write_data(ij, pblk, n, buf, what, err);
                if (r < 0)
                        break;
                lblk += n;
        }
        if (h)
                ext2fs_extent_free(h);
        return r;
}

/* Writes the new regular file's inode ino, size bytes long with no blocks
 * yet. *written tells whether it reached the inode table. */
static int new_file_inode(ts_inject *ij, ext2_ino_t ino, const ts_inject_opts *opts, uint64_t size,
                          const char *guest_path, bool *written, ts_error **err) {
        struct ext2_inode_large in = {};
        in.i_mode = LINUX_S_IFREG | (opts->mode & 07777);
        set_owner(&in, opts->uid, opts->gid);
        in.i_links_count = 1;
        set_times(ij, &in, opts->mtime);
        errcode_t e = ext2fs_inode_size_set(fs_of(ij), (struct ext2_inode *) &in, size);
        if (e)
                return ext2_fail(err, e, "%s: set size", guest_path);
        int r = init_extents(ij, ino, &in, err);
        if (r >= 0)
                r = write_new_inode(ij, ino, &in, err);
        if (r >= 0)
                *written = true;
        return r;
}

/* Copies the source's data segments into inode ino. */
static int copy_data(ts_inject *ij, ext2_ino_t ino, int fd, uint64_t size, const struct segment *segs,
                     size_t nsegs, const char *guest_path, ts_error **err) {
        if (nsegs == 0)
                return 0;
        /* The copy buffer: up to COPY_CHUNK, no larger than the longest
         * segment (a small file needs no megabyte mapped and unmapped). */
        unsigned bs = fs_of(ij)->blocksize;
        size_t align = bs < 4096 ? 4096 : bs, buf_len = 0;
        for (size_t i = 0; i < nsegs; i++)
                if (segs[i].len >= COPY_CHUNK / bs)
                        buf_len = COPY_CHUNK;
                else if (segs[i].len * bs > buf_len)
                        buf_len = (size_t) segs[i].len * bs;
        buf_len = (buf_len + align - 1) / align * align;
        _cleanup_free_ char *buf = aligned_alloc(align, buf_len);
        if (!buf)
                return ts_error_set(err, ENOMEM, "%s", guest_path);
        for (size_t i = 0; i < nsegs; i++) {
                int r = copy_segment(ij, ino, fd, size, &segs[i], buf, buf_len / bs, guest_path, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* fallocate rewrote the inode; puts the final times on top. */
static int set_final_times(ts_inject *ij, ext2_ino_t ino, const ts_inject_opts *opts, ts_error **err) {
        struct ext2_inode_large in;
        int r = read_inode(ij, ino, &in, err);
        if (r < 0)
                return r;
        set_times(ij, &in, opts->mtime);
        return write_inode(ij, ino, &in, err);
}

int ts_inject_write_fd(ts_inject *ij, int fd, const char *guest_path, const ts_inject_opts *opts,
                       ts_error **err) {
        int r = check_opts(ij, opts, err);
        if (r < 0)
                return r;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return ts_error_set(err, errno, "%s: stat the source", guest_path);
        if (!S_ISREG(st.st_mode))
                return ts_error_setf_plain(err, EINVAL, "%s: the source is not a regular file", guest_path);
        uint64_t size = (uint64_t) st.st_size;
        _cleanup_free_ struct segment *segs = NULL;
        size_t nsegs = 0;
        blk64_t nblocks = 0;
        r = source_segments(fd, size, fs_of(ij)->blocksize, &segs, &nsegs, &nblocks);
        if (r < 0)
                return ts_error_set(err, r, "%s: scan the source", guest_path);

        struct target t;
        ext2_ino_t ino = 0;
        r = begin_new(ij, guest_path, opts, nblocks, &t, &ino, err);
        if (r < 0)
                return r;
        bool written = false;
        r = ensure_blocks(ij, nblocks + nblocks / 1024 + 8, group_of_ino(ij, ino), err);
        if (r >= 0)
                r = new_file_inode(ij, ino, opts, size, guest_path, &written, err);
        if (r >= 0)
                r = copy_data(ij, ino, fd, size, segs, nsegs, guest_path, err);
        if (r >= 0) {
                fault(ij, "file", "data");
                r = set_final_times(ij, ino, opts, err);
        }
        if (r >= 0)
                r = commit(ij, err);
        if (r < 0) {
                rollback_new(ij, ino, written, false);
                return r;
        }
        return install(ij, &t, ino, EXT2_FT_REG_FILE, guest_path, err);
}

int ts_inject_write_file(ts_inject *ij, const char *host_path, const char *guest_path,
                         const ts_inject_opts *opts, ts_error **err) {
        _cleanup_close_ int fd = open(host_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return ts_error_set(err, errno, "open %s", host_path);
        return ts_inject_write_fd(ij, fd, guest_path, opts, err);
}

int ts_inject_mkdir_p(ts_inject *ij, const char *guest_path, const ts_inject_opts *opts, ts_error **err) {
        int r = check_opts(ij, opts, err);
        if (r < 0)
                return r;
        ts_inject_opts dopts = *opts;
        unsigned rflags = R_FOLLOW_LAST | R_MKDIR_LAST | ((opts->flags & TS_INJECT_NO_MKDIRS) ? 0 : R_MKDIRS);
        struct target t;
        r = resolve(ij, guest_path, rflags, &dopts, &t, err);
        if (r < 0)
                return r;
        if (!LINUX_S_ISDIR(t.inode.i_mode))
                return ts_error_setf_plain(err, EEXIST, "%s: exists and is not a directory", guest_path);
        return 0;
}

int ts_inject_symlink(ts_inject *ij, const char *target, const char *guest_path, const ts_inject_opts *opts,
                      ts_error **err) {
        int r = check_opts(ij, opts, err);
        if (r < 0)
                return r;
        ext2_filsys fs = fs_of(ij);
        size_t len = target ? strlen(target) : 0;
        if (len == 0 || len >= fs->blocksize || len >= PATH_MAX)
                return ts_error_setf_plain(err, EINVAL, "%s: symlink target must be 1 to %u bytes", guest_path,
                                           fs->blocksize - 1);

        struct target t;
        ext2_ino_t ino = 0;
        r = begin_new(ij, guest_path, opts, 0, &t, &ino, err);
        if (r < 0)
                return r;
        struct ext2_inode_large in = {};
        in.i_mode = LINUX_S_IFLNK | 0777;
        set_owner(&in, opts->uid, opts->gid);
        in.i_links_count = 1;
        in.i_size = (uint32_t) len;
        set_times(ij, &in, opts->mtime);
        bool written = false;
        if (len < sizeof(in.i_block)) {
                memcpy(in.i_block, target, len);
                r = write_new_inode(ij, ino, &in, err);
                written = r >= 0;
        } else {
                blk64_t blk;
                r = ensure_blocks(ij, 4, group_of_ino(ij, ino), err);
                if (r >= 0)
                        r = alloc_block(ij, group_goal(ij, ino), &blk, err);
                if (r >= 0) {
                        memset(ij->scratch, 0, fs->blocksize);
                        memcpy(ij->scratch, target, len);
                        errcode_t e = io_channel_write_blk64(fs->io, blk, 1, ij->scratch);
                        if (e)
                                r = ext2_fail(err, e, "%s: write symlink block", guest_path);
                        ext2fs_iblk_set(fs, (struct ext2_inode *) &in, 1);
                        if (r >= 0)
                                r = init_extents(ij, ino, &in, err);
                        if (r >= 0)
                                r = write_new_inode(ij, ino, &in, err);
                        if (r >= 0)
                                r = map_first_block(ij, ino, &in, blk, err);
                        if (r < 0) {
                                ext2fs_block_alloc_stats2(fs, blk, -1);
                                written = empty_slot(ij, ino, &in);
                        } else
                                written = true;
                }
        }
        if (r >= 0)
                r = commit(ij, err);
        if (r < 0) {
                rollback_new(ij, ino, written, false);
                return r;
        }
        return install(ij, &t, ino, EXT2_FT_SYMLINK, guest_path, err);
}

int ts_inject_mountpoints(ts_inject *ij, ts_error **err) {
        static const struct {
                const char *name;
                uint32_t mode;
        } points[] = {
                { "proc", 0555 }, { "sys", 0555 }, { "dev", 0755 }, { "tmp", 01777 }, { "run", 0755 },
        };
        if (ij->broken)
                return ts_error_setf_plain(err, EIO, "%s: an earlier failure could not be undone", ij->path);
        int created = 0;
        for (size_t i = 0; i < TS_ARRAY_SIZE(points); i++) {
                char path[16];
                snprintf(path, sizeof path, "/%s", points[i].name);
                ext2_ino_t ino = 0;
                int r = lookup(ij, EXT2_ROOT_INO, points[i].name, path, &ino, err);
                if (r < 0)
                        return r;
                if (ino)
                        continue;
                r = make_dir(ij, EXT2_ROOT_INO, points[i].name, points[i].mode, 0, 0, TS_INJECT_MTIME_NOW, path,
                             &ino, err);
                if (r < 0)
                        return r;
                created++;
        }
        return created;
}

int ts_inject_lookup(ts_inject *ij, const char *guest_path, uint32_t *ret_ino, ts_error **err) {
        struct target t;
        int r = resolve(ij, guest_path, R_FOLLOW_LAST, NULL, &t, err);
        if (r < 0)
                return r;
        if (!t.ino)
                return ts_error_setf_plain(err, ENOENT, "%s: does not exist", guest_path);
        *ret_ino = t.ino;
        return 0;
}

int ts_inject_lstat(ts_inject *ij, const char *guest_path, uint32_t *ret_ino, uint32_t *ret_mode,
                    ts_error **err) {
        struct target t;
        int r = resolve(ij, guest_path, 0, NULL, &t, err);
        if (r < 0)
                return r;
        if (!t.ino)
                return ts_error_setf_plain(err, ENOENT, "%s: does not exist", guest_path);
        *ret_ino = t.ino;
        *ret_mode = t.inode.i_mode;
        return 0;
}

/* What the filesystem's own structures take in every group: the superblock
 * and descriptor copies (with the reserved ones), the two bitmaps and the
 * inode table. */
static blk64_t group_overhead(ext2_filsys fs, dgrp_t g) {
        blk64_t super = 0, old_desc = 0, new_desc = 0;
        blk_t used = 0;
        if (ext2fs_super_and_bgd_loc2(fs, g, &super, &old_desc, &new_desc, &used))
                used = 0;
        return (blk64_t) used + 2 + fs->inode_blocks_per_group;
}

int ts_inject_usage(ts_inject *ij, uint64_t *ret_bytes, uint64_t *ret_inodes, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        blk64_t free_blocks = 0, overhead = fs->super->s_first_data_block;
        uint64_t free_inodes = 0;
        for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
                free_blocks += ext2fs_bg_free_blocks_count(fs, g);
                free_inodes += ext2fs_bg_free_inodes_count(fs, g);
                overhead += group_overhead(fs, g);
        }
        /* The resize inode maps the reserved descriptor blocks counted above
         * through one double-indirect block of its own. */
        if (ext2fs_has_feature_resize_inode(fs->super))
                overhead++;
        ext2_ino_t journal = fs->super->s_journal_inum;
        if (ext2fs_has_feature_journal(fs->super) && journal) {
                struct ext2_inode_large in;
                int r = read_inode(ij, journal, &in, err);
                if (r < 0)
                        return r;
                overhead += ext2fs_get_stat_i_blocks(fs, (struct ext2_inode *) &in) / (fs->blocksize / 512);
        }
        blk64_t total = ext2fs_blocks_count(fs->super);
        blk64_t used = total > free_blocks + overhead ? total - free_blocks - overhead : 0;
        uint64_t inodes = fs->super->s_inodes_count, reserved = EXT2_FIRST_INODE(fs->super) - 1;
        /* The root directory is one of the reserved inodes and counts. */
        *ret_inodes = inodes > free_inodes + reserved ? inodes - free_inodes - reserved + 1 : 1;
        *ret_bytes = (uint64_t) used * fs->blocksize;
        return 0;
}

/* ---- opening ---- */

/* Probes fd with libblkid; with `ext_only` only for the ext family (and an
 * external journal, so it can be named). Returns blkid_do_safeprobe's result
 * and, on 0, the type in *ret_type (malloc'd), or -ENOMEM. */
static int blkid_type(int fd, bool ext_only, char **ret_type) {
        blkid_probe pr = blkid_new_probe();
        if (!pr)
                return -ENOMEM;
        if (blkid_probe_set_device(pr, fd, 0, 0) < 0) {
                blkid_free_probe(pr);
                return -1;
        }
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
        if (ext_only) {
                char *only[] = { "ext2", "ext3", "ext4", "ext4dev", "jbd", NULL };
                blkid_probe_filter_superblocks_type(pr, BLKID_FLTR_ONLYIN, only);
        }
        int rc = blkid_do_safeprobe(pr);
        const char *type = NULL;
        if (rc == 0 && blkid_probe_lookup_value(pr, "TYPE", &type, NULL) == 0 && type &&
            !(*ret_type = strdup(type)))
                rc = -ENOMEM;
        blkid_free_probe(pr);
        return rc;
}

#define HEAD_BYTES (64 * 1024)
#define PROBE_BYTES 4096

/* The ext-only probe runs on a copy of the device's first 4 KiB, which holds
 * the ext superblock, so the answer is the device's; libblkid then skips what
 * it does for every block device it is given (two dozen syscalls: sysfs
 * lookups and several ioctls). The read asks for the first 64 KiB, so that
 * the group descriptors libext2fs reads next come with it. A full probe reads
 * dozens of places for every known format, so it runs on the device itself,
 * and only to name what a refused device holds. */
static int probe_head(const char *path, int fd, int *ret_rc, char **ret_type, ts_error **err) {
        char head[PROBE_BYTES];
        (void) posix_fadvise(fd, 0, HEAD_BYTES, POSIX_FADV_WILLNEED);
        ssize_t n;
        do
                n = pread(fd, head, sizeof head, 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return ts_error_set(err, errno, "%s: read its first %d KiB", path, PROBE_BYTES / 1024);
        _cleanup_close_ int mfd = memfd_create("thinsnap-probe", MFD_CLOEXEC);
        if (mfd < 0)
                return ts_error_set(err, errno, "%s: probe: memfd", path);
        ssize_t w = n > 0 ? write(mfd, head, (size_t) n) : 0;
        if (w < 0)
                return ts_error_set(err, errno, "%s: probe: memfd", path);
        if (w != n)
                return ts_error_setf_plain(err, EIO, "%s: probe: short write to memfd", path);
        int rc = blkid_type(mfd, true, ret_type);
        if (rc == -ENOMEM)
                return ts_error_set(err, ENOMEM, "%s: probe", path);
        *ret_rc = rc;
        return 0;
}

static int probe_type(const char *path, int fd, ts_error **err) {
        _cleanup_free_ char *type = NULL;
        int rc = 0;
        int r = probe_head(path, fd, &rc, &type, err);
        if (r < 0)
                return r;
        if (rc == 0 && type && (strcmp(type, "ext2") == 0 || strcmp(type, "ext3") == 0 || strcmp(type, "ext4") == 0))
                return 0;
        if (rc < 0 && rc != -2)
                return ts_error_set(err, errno ? errno : EIO, "%s: probe", path);
        if (!type) {
                int full = blkid_type(fd, false, &type);
                if (full == -ENOMEM)
                        return ts_error_set(err, ENOMEM, "%s: probe", path);
                if (full == -2 || rc == -2)
                        return ts_error_setf_plain(err, EMEDIUMTYPE, "%s: more than one filesystem signature found",
                                                   path);
        }
        if (!type)
                return ts_error_setf_plain(err, EMEDIUMTYPE, "%s: no filesystem found", path);
        return ts_error_setf_plain(err, EMEDIUMTYPE, "%s: holds %s, not ext2/ext3/ext4", path, type);
}

/* A block device with anything stacked on it (dm, md, bcache) is in use. */
static int check_holders(const char *path, const struct stat *st, ts_error **err) {
        char dir[64];
        snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u/holders", major(st->st_rdev), minor(st->st_rdev));
        DIR *d = opendir(dir);
        if (!d)
                return 0; /* no sysfs view: the O_EXCL open still guards */
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                r = ts_error_setf_plain(err, EBUSY, "%s: device is held by %s", path, de->d_name);
                break;
        }
        closedir(d);
        return r;
}

/* An image file attached to a loop device may be mounted through it, in any
 * mount namespace: refuse it. */
static int check_loop_backing(const char *path, const struct stat *st, ts_error **err) {
        DIR *d = opendir("/sys/block");
        if (!d)
                return 0;
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, "loop", 4) != 0)
                        continue;
                char file[PATH_MAX];
                snprintf(file, sizeof file, "/sys/block/%s/loop/backing_file", de->d_name);
                _cleanup_fclose_ FILE *f = fopen(file, "re");
                if (!f)
                        continue;
                char backing[PATH_MAX];
                if (!fgets(backing, sizeof backing, f))
                        continue;
                backing[strcspn(backing, "\n")] = '\0';
                struct stat bst;
                if (stat(backing, &bst) == 0 && bst.st_dev == st->st_dev && bst.st_ino == st->st_ino) {
                        r = ts_error_setf_plain(err, EBUSY, "%s: image is attached to /dev/%s", path,
                                                de->d_name);
                        break;
                }
        }
        closedir(d);
        return r;
}

static int device_size(const char *path, int fd, const struct stat *st, uint64_t *ret, ts_error **err) {
        if (S_ISREG(st->st_mode)) {
                *ret = (uint64_t) st->st_size;
                return 0;
        }
        uint64_t size = 0;
        if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                return ts_error_set(err, errno, "%s: get device size", path);
        *ret = size;
        return 0;
}

/* self names the open descriptor (/proc/self/fd/N): what is checked is
 * what was opened; path is for the messages. */
static int check_in_use(const char *path, const char *self, const struct stat *st, ts_error **err) {
        int mflags = 0;
        char mtpt[PATH_MAX] = "";
        errcode_t e = ext2fs_check_mount_point(self, &mflags, mtpt, sizeof mtpt);
        if (e)
                return ext2_fail(err, e, "%s: check mounts", path);
        if (mflags & EXT2_MF_MOUNTED)
                return ts_error_setf_plain(err, EBUSY, "%s: mounted on %s", path, mtpt[0] ? mtpt : "(unknown)");
        int r = S_ISBLK(st->st_mode) ? check_holders(path, st, err) : check_loop_backing(path, st, err);
        if (r < 0)
                return r;
        /* Exclusive openers include mounts in other mount namespaces. */
        if (mflags & EXT2_MF_BUSY)
                return ts_error_setf_plain(err, EBUSY,
                                           "%s: in use (mounted in another namespace or opened exclusively)", path);
        return 0;
}

/* Every group's bitmaps and inode table must lie inside the filesystem and
 * clear of the primary superblock and descriptors. This is O(groups), unlike
 * ext2fs_check_desc which builds a bitmap of the whole filesystem; overlaps
 * between groups are checked for each group when it is loaded. */
static int check_descriptors(ts_inject *ij, const char *path, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        blk64_t first = fs->super->s_first_data_block, count = ext2fs_blocks_count(fs->super);
        blk64_t head = first + 1 + fs->desc_blocks + fs->super->s_reserved_gdt_blocks;
        if (ext2fs_has_feature_meta_bg(fs->super))
                head = first + 1;
        for (dgrp_t g = 0; g < fs->group_desc_count; g++) {
                blk64_t bb = ext2fs_block_bitmap_loc(fs, g), ib = ext2fs_inode_bitmap_loc(fs, g);
                blk64_t it = ext2fs_inode_table_loc(fs, g);
                if (bb < head || bb >= count || ib < head || ib >= count || it < head || it >= count ||
                    count - it < fs->inode_blocks_per_group)
                        return ts_error_setf_plain(err, EUCLEAN,
                                                   "%s: group %u descriptor points outside the filesystem "
                                                   "(block bitmap %llu, inode bitmap %llu, inode table %llu)",
                                                   path, g, (unsigned long long) bb, (unsigned long long) ib,
                                                   (unsigned long long) it);
        }
        return 0;
}

static int check_fs(ts_inject *ij, const char *path, const struct stat *st, ts_error **err) {
        ext2_filsys fs = fs_of(ij);
        struct ext2_super_block *sb = fs->super;
        if (ext2fs_has_feature_journal_dev(sb))
                return ts_error_setf_plain(err, EMEDIUMTYPE, "%s: is an external journal, not a filesystem", path);
        if (ext2fs_has_feature_journal_needs_recovery(sb))
                return ts_error_setf_plain(err, EUCLEAN,
                                           "%s: journal needs recovery (not cleanly unmounted); run e2fsck first",
                                           path);
        if (!(sb->s_state & EXT2_VALID_FS))
                return ts_error_setf_plain(err, EUCLEAN, "%s: not cleanly unmounted; run e2fsck first", path);
        if (sb->s_state & EXT2_ERROR_FS)
                return ts_error_setf_plain(err, EUCLEAN, "%s: filesystem has recorded errors; run e2fsck first",
                                           path);
        if (ext2fs_has_feature_mmp(sb))
                /* Honouring MMP means waiting out its update interval; a VM's
                 * root device has no second host to protect against. */
                return ts_error_setf_plain(err, EOPNOTSUPP,
                                           "%s: multi-mount protection (mmp) is enabled; not supported", path);
        if (ext2fs_has_feature_bigalloc(sb))
                return ts_error_setf_plain(err, EOPNOTSUPP, "%s: bigalloc filesystems are not supported", path);
        if (block_bitmap_bytes(fs) > fs->blocksize || inode_bitmap_bytes(fs) > fs->blocksize ||
            EXT2_INODES_PER_GROUP(sb) == 0 || EXT2_INODES_PER_GROUP(sb) % 8)
                return ts_error_setf_plain(err, EUCLEAN, "%s: bad group geometry in the superblock", path);
        int r = check_descriptors(ij, path, err);
        if (r < 0)
                return r;
        uint64_t size = 0;
        r = device_size(path, ij->fd, st, &size, err);
        if (r < 0)
                return r;
        if (size / fs->blocksize < ext2fs_blocks_count(sb))
                return ts_error_setf_plain(err, EUCLEAN, "%s: filesystem (%llu blocks) is larger than its device",
                                           path, (unsigned long long) ext2fs_blocks_count(sb));
        /* Group 0's bitmaps are needed first (the root directory lives in
         * it), then the root's first block: start both early. */
        readahead_bitmaps(ij, 0);
        struct ext2_inode_large root;
        r = read_inode(ij, EXT2_ROOT_INO, &root, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s: root directory", path);
        readahead_dir(fs, &root);
        if (!LINUX_S_ISDIR(root.i_mode) || root.i_links_count == 0)
                return ts_error_setf_plain(err, EUCLEAN, "%s: root inode is not a directory", path);
        return 0;
}

/* Opens path without side effects (O_PATH: no device is opened yet) and
 * refuses what is neither a block device nor a regular file. *ret_st is
 * what the descriptor is, whatever the path names by now. */
static int open_path(const char *path, unsigned flags, struct stat *ret_st, ts_error **err) {
        bool nofollow = flags & TS_INJECT_OPEN_NOFOLLOW;
        _cleanup_close_ int pfd = open(path, O_PATH | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
        if (pfd < 0)
                return ts_error_set(err, errno, "open %s", path);
        if (fstat(pfd, ret_st) < 0)
                return ts_error_set(err, errno, "open %s", path);
        if (S_ISLNK(ret_st->st_mode))
                return ts_error_setf_plain(err, ELOOP, "%s: is a symlink, and following it was not asked for",
                                           path);
        if (!S_ISBLK(ret_st->st_mode) && !S_ISREG(ret_st->st_mode))
                return ts_error_setf_plain(err, EINVAL, "%s: not a block device or a regular file", path);
        return TAKE_FD(pfd);
}

/* Opens path for a session and refuses what is not an ext2/3/4 filesystem
 * nobody else uses. The path is resolved once: every decision is made on
 * what the descriptor is (*st, from fstat), so a path swapped meanwhile
 * cannot redirect the writes. Returns the descriptor or -errno. */
static int open_target(const char *path, unsigned flags, struct stat *st, ts_error **err) {
        _cleanup_close_ int pfd = open_path(path, flags, st, err);
        if (pfd < 0)
                return pfd;
        bool blk = S_ISBLK(st->st_mode);
        /* One descriptor serves the type probe, the checks and libext2fs for
         * the whole session. On a block device it is exclusive: the kernel
         * refuses it while the device is mounted (in any mount namespace) or
         * held by device-mapper, md or another exclusive opener, and nobody
         * can mount the device while we write. Keeping it open also keeps the
         * device's page cache, which the kernel drops at the last close.
         * Opened through the O_PATH descriptor: the same inode, not the path
         * again. */
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", pfd);
        _cleanup_close_ int fd = open(self, O_RDWR | O_CLOEXEC | O_NOCTTY | (blk ? O_EXCL : 0));
        if (fd < 0 && errno == EBUSY && blk) {
                /* Say what holds it when we can see it; a failure to look
                 * does not hide the EBUSY. */
                _cleanup_error_ ts_error *why = NULL;
                if (check_in_use(path, self, st, &why) == -EBUSY)
                        return ts_error_move(err, &why);
                return ts_error_setf_plain(err, EBUSY,
                                           "%s: in use (mounted in another namespace or opened exclusively)",
                                           path);
        }
        if (fd < 0)
                return ts_error_set(err, errno, "open %s", path);
        int r = probe_type(path, fd, err);
        if (r < 0)
                return r;
        /* An image file has no exclusive open: look for its mounts and loop
         * devices. */
        if (!blk && (r = check_in_use(path, self, st, err)) < 0)
                return r;
        return TAKE_FD(fd);
}

/* Opens the filesystem on ij->fd through our io manager. */
static int open_fs(ts_inject *ij, const char *path, ts_error **err) {
        char name[64];
        int r = ts_io_name(ij->fd, name, sizeof name);
        if (r < 0)
                return ts_error_set(err, -r, "open %s", path);
        /* MASTER_SB_ONLY: like the kernel, update only the primary superblock
         * and descriptors; rewriting every backup would touch (and, on a thin
         * device, allocate) chunks all over the device. SKIP_MMP: check_fs
         * refuses multi-mount protection; starting it would open the device
         * again by name. */
        int oflags = EXT2_FLAG_RW | EXT2_FLAG_64BITS | EXT2_FLAG_MASTER_SB_ONLY | EXT2_FLAG_SKIP_MMP;
        errcode_t e = ext2fs_open2(name, NULL, oflags, 0, 0, ts_io_manager, &ij->fs);
        if (e) {
                ij->fs = NULL;
                return ext2_fail(err, e, "open %s", path);
        }
        ext2_filsys fs = ij->fs;
        e = ts_io_hold_writes(fs->io, fs->blocksize);
        if (e)
                return ext2_fail(err, e, "%s: io", path);
        /* Extent trees: an unloaded group is marked used as part of one
         * extent, so opening costs the same for any size of filesystem. */
        fs->default_bitmap_type = EXT2FS_BMAP64_RBTREE;
        ij->ngroups = fs->group_desc_count;
        ij->groups = calloc(ij->ngroups, sizeof(*ij->groups));
        ij->scratch = malloc(fs->blocksize);
        if (!ij->groups || !ij->scratch)
                return ts_error_set(err, ENOMEM, "open %s", path);
        return 0;
}

/* Empty bitmaps in which every group counts as full until it is loaded. */
static int init_bitmaps(ts_inject *ij, const char *path, ts_error **err) {
        ext2_filsys fs = ij->fs;
        errcode_t e = ext2fs_allocate_block_bitmap(fs, "blocks", &fs->block_map);
        if (!e)
                e = ext2fs_allocate_inode_bitmap(fs, "inodes", &fs->inode_map);
        if (e)
                return ext2_fail(err, e, "%s: bitmaps", path);
        blk64_t first = fs->super->s_first_data_block;
        bitmap_range(fs->block_map, first, ext2fs_blocks_count(fs->super) - first, true);
        bitmap_range(fs->inode_map, 1, fs->super->s_inodes_count, true);
        return 0;
}

int ts_inject_open(const char *path, unsigned flags, ts_inject **ret, ts_error **err) {
        if (flags & ~TS_INJECT_OPEN_NOFOLLOW)
                return ts_error_setf_plain(err, EINVAL, "unknown open flags %#x", flags);
        pthread_once(&et_once, et_init);
        struct stat st;
        _cleanup_close_ int fd = open_target(path, flags, &st, err);
        if (fd < 0)
                return fd;
        _cleanup_(ts_inject_freep) ts_inject *ij = calloc(1, sizeof(*ij));
        if (!ij)
                return ts_error_set(err, ENOMEM, "open %s", path);
        ij->fd = TAKE_FD(fd);
        if (!(ij->path = strdup(path)))
                return ts_error_set(err, ENOMEM, "open %s", path);
        int r = ts_fault_from_env("TS_INJECT_FAULT", &ij->fault, err);
        if (r >= 0)
                r = open_fs(ij, path, err);
        if (r >= 0)
                r = check_fs(ij, path, &st, err);
        if (r >= 0)
                r = init_bitmaps(ij, path, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ij);
        return 0;
}

int ts_inject_close(ts_inject *ij, ts_error **err) {
        if (!ij)
                return 0;
        int r = 0;
        if (ij->broken)
                r = ts_error_setf_plain(err, EIO, "%s: closed after a failure that could not be undone; run e2fsck",
                                        ij->path);
        else
                r = commit(ij, err);
        ts_inject_free(ij);
        return r;
}

ts_inject *ts_inject_free(ts_inject *ij) {
        if (!ij)
                return NULL;
        if (ij->fs) {
                /* No superblock or descriptor write here: flush() wrote them. */
                ij->fs->flags &= ~(EXT2_FLAG_DIRTY | EXT2_FLAG_BB_DIRTY | EXT2_FLAG_IB_DIRTY);
                ext2fs_free(ij->fs);
        }
        if (ij->groups)
                for (dgrp_t g = 0; g < ij->ngroups; g++) {
                        free(ij->groups[g].bb);
                        free(ij->groups[g].ib);
                }
        free(ij->groups);
        free(ij->meta);
        free(ij->next);
        free(ij->scratch);
        if (ij->fd >= 0)
                close(ij->fd);
        free(ij->path);
        ts_fault_free(ij->fault);
        free(ij);
        return NULL;
}
