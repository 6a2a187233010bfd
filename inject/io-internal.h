/* io: the libext2fs I/O manager that inject runs on, over a descriptor that
 * inject opened (exclusively, for a block device) and keeps for the session.
 *
 * Compared with libext2fs's unix manager it
 *  - does not open the device again, nor flush it at open (unix_io's fsync at
 *    open is a device flush, and on a thin device a pool commit, per session);
 *  - holds metadata writes of whole blocks until the next flush, so a block
 *    that is written several times between two barriers (the new inode's
 *    inode-table block: created, mapped, timed) reaches the device once;
 *  - writes file data around the held blocks (O_DIRECT on a block device),
 *    dropping held copies of the blocks the data lands on.
 * Reads always see the held blocks. Ordering is unchanged: everything written
 * before a flush is on the device when the flush returns. */
#pragma once

#include <ext2fs/ext2fs.h>
#include <stddef.h>

/* The manager. Its open takes a name made by ts_io_name; the descriptor stays
 * the caller's, and closing the channel does not close it. */
extern io_manager ts_io_manager;

/* Formats the channel name that makes ts_io_manager's open use `fd`. Returns
 * 0, or -ENAMETOOLONG when `len` is too small. */
int ts_io_name(int fd, char *buf, size_t len);

/* Holds later writes of whole `unit`-byte blocks (the filesystem's block
 * size) until the next flush; until this call every write goes straight to the
 * descriptor. Returns 0 or EXT2_ET_INVALID_ARGUMENT (unit 0 or above 64 KiB). */
errcode_t ts_io_hold_writes(io_channel io, unsigned unit);

/* Writes every held block to the descriptor, without an fsync: what was
 * written then survives the death of the process. Returns 0 or an errno. */
errcode_t ts_io_write_back(io_channel io);

/* Writes `n` blocks of file data at block `blk` (channel block size), with
 * O_DIRECT on a block device for writes of 64 KiB or more when the device
 * accepts the buffer, drops any held copy of those blocks, and counts the
 * write for the next flush.
 * `buf` must be aligned to 4096 bytes for O_DIRECT to be used. Returns 0 or
 * an errno (EIO for a short write). */
errcode_t ts_io_write_data(io_channel io, unsigned long long blk, unsigned long long n, const void *buf);

/* Blocks held now (for tests). */
size_t ts_io_held(io_channel io);
