#include "io-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/macro.h"
#include "common/units.h"

#define NAME_PREFIX "thinsnap-fd:"
/* Enough for every block one operation writes between two barriers in the
 * common cases; past it, everything held is written back and holding starts
 * over, which costs syscalls, not correctness. */
#define HELD_MAX 64
#define MAX_UNIT (64 * 1024)
/* Data writes below this go through the page cache: a direct write waits for
 * the device, which costs more than copying a few blocks, and a buffered one
 * goes out with the flush's other writes. */
#define DIRECT_MIN (64 * 1024)

struct held {
        unsigned long long blk; /* in units */
        char *buf;
};

struct tio {
        int fd;
        bool blkdev;
        bool direct;    /* O_DIRECT is set on fd now */
        bool no_direct; /* O_DIRECT was refused: data goes buffered */
        bool unsynced;  /* written since the last fsync */
        errcode_t failed; /* the first fsync error: returned by every later flush */
        unsigned unit;  /* held-block size, 0 while nothing is held */
        size_t nheld;
        struct held held[HELD_MAX];
        struct struct_io_stats stats;
};

static struct tio *tio_of(io_channel io) {
        return io->private_data;
}

static errcode_t set_direct(struct tio *t, bool on) {
        if (t->direct == on)
                return 0;
        int fl = fcntl(t->fd, F_GETFL);
        if (fl < 0 || fcntl(t->fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT) < 0)
                return errno;
        t->direct = on;
        return 0;
}

static errcode_t pwrite_all(struct tio *t, const void *buf, size_t len, off_t off) {
        size_t done = 0;
        while (done < len) {
                ssize_t n = pwrite(t->fd, (const char *) buf + done, len - done, off + (off_t) done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return errno;
                if (n == 0)
                        return EIO;
                done += (size_t) n;
                t->stats.bytes_written += (unsigned long long) n;
        }
        t->unsynced = true;
        return 0;
}

static errcode_t pread_all(struct tio *t, void *buf, size_t len, off_t off) {
        size_t done = 0;
        while (done < len) {
                ssize_t n = pread(t->fd, (char *) buf + done, len - done, off + (off_t) done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return errno;
                if (n == 0) {
                        memset((char *) buf + done, 0, len - done);
                        return EXT2_ET_SHORT_READ;
                }
                done += (size_t) n;
                t->stats.bytes_read += (unsigned long long) n;
        }
        return 0;
}

/* The byte range of `count` blocks at `block` (negative count: bytes). */
static errcode_t span(io_channel io, unsigned long long block, int count, off_t *off, size_t *len) {
        unsigned long long bs = (unsigned long long) io->block_size;
        unsigned long long n = count < 0 ? (unsigned long long) -(long long) count : (unsigned long long) count * bs;
        if ((bs && block > (unsigned long long) LLONG_MAX / bs) || n > (unsigned long long) LLONG_MAX - block * bs)
                return EXT2_ET_LLSEEK_FAILED;
        *off = (off_t) (block * bs);
        *len = (size_t) n;
        return 0;
}

static struct held *find_held(struct tio *t, unsigned long long blk) {
        for (size_t i = 0; i < t->nheld; i++)
                if (t->held[i].blk == blk)
                        return &t->held[i];
        return NULL;
}

static int cmp_held(const void *a, const void *b) {
        const struct held *x = a, *y = b;
        return x->blk < y->blk ? -1 : x->blk > y->blk;
}

/* Writes every held block, adjacent ones in one call, and forgets them. On
 * failure they stay held. */
static errcode_t write_back(struct tio *t) {
        if (!t->nheld)
                return 0;
        errcode_t e = set_direct(t, false);
        if (e)
                return e;
        qsort(t->held, t->nheld, sizeof(t->held[0]), cmp_held);
        for (size_t i = 0; i < t->nheld;) {
                struct iovec iov[HELD_MAX];
                size_t n = 0;
                do {
                        iov[n].iov_base = t->held[i + n].buf;
                        iov[n].iov_len = t->unit;
                        n++;
                } while (i + n < t->nheld && t->held[i + n].blk == t->held[i].blk + n);
                off_t off = (off_t) (t->held[i].blk * t->unit);
                size_t len = n * t->unit;
                ssize_t w;
                do
                        w = pwritev(t->fd, iov, (int) n, off);
                while (w < 0 && errno == EINTR);
                if (w < 0)
                        return errno;
                t->stats.bytes_written += (unsigned long long) w;
                t->unsynced = true;
                if ((size_t) w < len) {
                        /* Rare: finish the rest block by block. */
                        for (size_t k = (size_t) w / t->unit; k < n; k++) {
                                size_t skip = k == (size_t) w / t->unit ? (size_t) w % t->unit : 0;
                                e = pwrite_all(t, t->held[i + k].buf + skip, t->unit - skip,
                                               off + (off_t) (k * t->unit + skip));
                                if (e)
                                        return e;
                        }
                }
                i += n;
        }
        for (size_t i = 0; i < t->nheld; i++)
                free(t->held[i].buf);
        t->nheld = 0;
        return 0;
}

/* Where held block i meets the byte range [start, start + len): the offsets
 * into the block and into the range, and the length; false when they do not
 * meet. */
static bool held_overlap(const struct tio *t, size_t i, unsigned long long start, size_t len, size_t *in_block,
                         size_t *in_range, size_t *n) {
        unsigned long long hs = t->held[i].blk * t->unit, he = hs + t->unit, end = start + len;
        if (he <= start || hs >= end)
                return false;
        unsigned long long from = hs > start ? hs : start, to = he < end ? he : end;
        *in_block = (size_t) (from - hs);
        *in_range = (size_t) (from - start);
        *n = (size_t) (to - from);
        return true;
}

static void drop_held(struct tio *t, size_t i) {
        free(t->held[i].buf);
        t->held[i] = t->held[--t->nheld];
}

/* Holds one block's new content. Without memory for it, writes it through. */
static errcode_t hold(struct tio *t, unsigned long long blk, const char *buf) {
        struct held *h = find_held(t, blk);
        if (h) {
                memcpy(h->buf, buf, t->unit);
                return 0;
        }
        if (t->nheld == HELD_MAX) {
                errcode_t e = write_back(t);
                if (e)
                        return e;
        }
        char *copy = malloc(t->unit);
        if (!copy) {
                errcode_t e = set_direct(t, false);
                return e ? e : pwrite_all(t, buf, t->unit, (off_t) (blk * t->unit));
        }
        memcpy(copy, buf, t->unit);
        t->held[t->nheld++] = (struct held){ .blk = blk, .buf = copy };
        return 0;
}

static errcode_t tio_open(const char *name, int flags, io_channel *ret) {
        size_t plen = strlen(NAME_PREFIX);
        uint32_t fd = 0;
        if (!name || strncmp(name, NAME_PREFIX, plen) != 0 || ts_units_parse_u32(name + plen, &fd) < 0 || fd > INT_MAX)
                return EXT2_ET_BAD_DEVICE_NAME;
        struct stat st;
        if (fstat((int) fd, &st) < 0)
                return errno;
        int fl = fcntl((int) fd, F_GETFL);
        if (fl < 0)
                return errno;
        if ((flags & IO_FLAG_RW) && (fl & O_ACCMODE) != O_RDWR)
                return EBADF;

        io_channel io = calloc(1, sizeof(*io));
        struct tio *t = calloc(1, sizeof(*t));
        char *nm = strdup(name);
        if (!io || !t || !nm) {
                free(io);
                free(t);
                free(nm);
                return EXT2_ET_NO_MEMORY;
        }
        t->fd = (int) fd;
        t->blkdev = S_ISBLK(st.st_mode);
        t->direct = (fl & O_DIRECT) != 0;
        t->stats.num_fields = 2;
        io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
        io->manager = ts_io_manager;
        io->name = nm;
        io->block_size = 1024;
        io->refcount = 1;
        io->flags = t->blkdev ? CHANNEL_FLAGS_BLOCK_DEVICE : 0;
        io->private_data = t;
        *ret = io;
        return 0;
}

static errcode_t tio_close(io_channel io) {
        if (--io->refcount > 0)
                return 0;
        struct tio *t = tio_of(io);
        /* Blocks still held were never flushed: dropped, as an unflushed
         * write may be lost by a crash anyway. */
        for (size_t i = 0; i < t->nheld; i++)
                free(t->held[i].buf);
        free(t);
        free(io->name);
        free(io);
        return 0;
}

static errcode_t tio_set_blksize(io_channel io, int blksize) {
        if (blksize <= 0)
                return EXT2_ET_INVALID_ARGUMENT;
        io->block_size = blksize;
        return 0;
}

static errcode_t tio_read(io_channel io, unsigned long long block, int count, void *data) {
        struct tio *t = tio_of(io);
        off_t off;
        size_t len;
        errcode_t e = span(io, block, count, &off, &len);
        if (e)
                return e;
        unsigned long long u = t->unit;
        if (u && len == u && (unsigned long long) off % u == 0) {
                struct held *h = find_held(t, (unsigned long long) off / u);
                if (h) {
                        memcpy(data, h->buf, u);
                        return 0;
                }
        }
        e = set_direct(t, false);
        if (!e)
                e = pread_all(t, data, len, off);
        if (e)
                return e;
        /* Held blocks are newer than what the device has. */
        size_t in_block, in_range, n;
        for (size_t i = 0; i < t->nheld; i++)
                if (held_overlap(t, i, (unsigned long long) off, len, &in_block, &in_range, &n))
                        memcpy((char *) data + in_range, t->held[i].buf + in_block, n);
        return 0;
}

static errcode_t tio_write(io_channel io, unsigned long long block, int count, const void *data) {
        struct tio *t = tio_of(io);
        off_t off;
        size_t len;
        errcode_t e = span(io, block, count, &off, &len);
        if (e)
                return e;
        unsigned long long u = t->unit;
        if (u && (unsigned long long) off % u == 0 && len % u == 0) {
                for (size_t k = 0; k < len / u; k++) {
                        e = hold(t, (unsigned long long) off / u + k, (const char *) data + k * u);
                        if (e)
                                return e;
                }
                return 0;
        }
        /* Part of one block (the superblock): held as the whole block, read
         * first when not held yet, so it goes out with its neighbours (the
         * group descriptors follow it). */
        if (u && len && (unsigned long long) off / u == ((unsigned long long) off + len - 1) / u) {
                unsigned long long blk = (unsigned long long) off / u;
                size_t at = (size_t) ((unsigned long long) off % u);
                struct held *h = find_held(t, blk);
                if (!h && t->nheld < HELD_MAX) {
                        /* Without memory or the block's old content, the
                         * write goes through below. */
                        char *copy = malloc(u);
                        if (copy && set_direct(t, false) == 0 && pread_all(t, copy, u, (off_t) (blk * u)) == 0) {
                                t->held[t->nheld] = (struct held){ .blk = blk, .buf = copy };
                                h = &t->held[t->nheld++];
                        } else {
                                free(copy);
                        }
                }
                if (h) {
                        memcpy(h->buf + at, data, len);
                        return 0;
                }
        }
        /* Otherwise straight to the device, and into any held copy it
         * overlaps, so the later write-back agrees. */
        size_t in_block, in_range, n;
        for (size_t i = 0; i < t->nheld; i++)
                if (held_overlap(t, i, (unsigned long long) off, len, &in_block, &in_range, &n))
                        memcpy(t->held[i].buf + in_block, (const char *) data + in_range, n);
        e = set_direct(t, false);
        return e ? e : pwrite_all(t, data, len, off);
}

static errcode_t tio_read_blk(io_channel io, unsigned long block, int count, void *data) {
        return tio_read(io, block, count, data);
}

static errcode_t tio_write_blk(io_channel io, unsigned long block, int count, const void *data) {
        return tio_write(io, block, count, data);
}

static errcode_t tio_flush(io_channel io) {
        struct tio *t = tio_of(io);
        /* The kernel reports a failed writeback to one fsync only: once a
         * flush failed, what it covered may be lost, and every later flush
         * says so too. */
        if (t->failed)
                return t->failed;
        errcode_t e = write_back(t);
        if (e)
                return e;
        if (!t->unsynced)
                return 0;
        if (fsync(t->fd) < 0) {
                t->failed = errno;
                return t->failed;
        }
        t->unsynced = false;
        return 0;
}

static errcode_t tio_set_option(io_channel io, const char *option, const char *arg) {
        return EXT2_ET_INVALID_ARGUMENT;
}

static errcode_t tio_get_stats(io_channel io, io_stats *ret) {
        *ret = &tio_of(io)->stats;
        return 0;
}

static errcode_t tio_readahead(io_channel io, unsigned long long block, unsigned long long count) {
        off_t off;
        size_t len;
        if (count > INT_MAX || span(io, block, (int) count, &off, &len))
                return EXT2_ET_INVALID_ARGUMENT;
        (void) posix_fadvise(tio_of(io)->fd, off, (off_t) len, POSIX_FADV_WILLNEED);
        return 0;
}

static struct struct_io_manager manager = {
        .magic = EXT2_ET_MAGIC_IO_MANAGER,
        .name = "thinsnap I/O manager",
        .open = tio_open,
        .close = tio_close,
        .set_blksize = tio_set_blksize,
        .read_blk = tio_read_blk,
        .write_blk = tio_write_blk,
        .flush = tio_flush,
        .set_option = tio_set_option,
        .get_stats = tio_get_stats,
        .read_blk64 = tio_read,
        .write_blk64 = tio_write,
        .cache_readahead = tio_readahead,
};

io_manager ts_io_manager = &manager;

int ts_io_name(int fd, char *buf, size_t len) {
        int n = snprintf(buf, len, NAME_PREFIX "%d", fd);
        return n < 0 || (size_t) n >= len ? -ENAMETOOLONG : 0;
}

errcode_t ts_io_hold_writes(io_channel io, unsigned unit) {
        struct tio *t = tio_of(io);
        if (unit == 0 || unit > MAX_UNIT)
                return EXT2_ET_INVALID_ARGUMENT;
        if (t->unit && t->unit != unit) {
                errcode_t e = write_back(t);
                if (e)
                        return e;
        }
        t->unit = unit;
        return 0;
}

errcode_t ts_io_write_data(io_channel io, unsigned long long blk, unsigned long long n, const void *buf) {
        struct tio *t = tio_of(io);
        unsigned long long bs = (unsigned long long) io->block_size;
        if (n == 0)
                return 0;
        if (n > (unsigned long long) SSIZE_MAX / bs || blk > (unsigned long long) LLONG_MAX / bs ||
            n * bs > (unsigned long long) LLONG_MAX - blk * bs)
                return EXT2_ET_INVALID_ARGUMENT;
        off_t off = (off_t) (blk * bs);
        size_t len = (size_t) (n * bs);
        /* Held copies of these blocks belong to whatever used them before they
         * were freed; written back later, they would overwrite the data. A
         * block only partly covered (the channel's block size is not the
         * held unit) keeps its other bytes, with the data copied in. */
        size_t in_block, in_range, part;
        for (size_t i = 0; i < t->nheld;) {
                if (!held_overlap(t, i, (unsigned long long) off, len, &in_block, &in_range, &part)) {
                        i++;
                } else if (part == t->unit) {
                        drop_held(t, i);
                } else {
                        memcpy(t->held[i].buf + in_block, (const char *) buf + in_range, part);
                        i++;
                }
        }
        bool direct = t->blkdev && !t->no_direct && len >= DIRECT_MIN && ((uintptr_t) buf & 4095) == 0;
        if (direct && set_direct(t, true) != 0) {
                /* The descriptor cannot switch to O_DIRECT: buffered from now on. */
                t->no_direct = true;
                direct = false;
        }
        if (direct) {
                ssize_t w;
                do
                        w = pwrite(t->fd, buf, len, off);
                while (w < 0 && errno == EINTR);
                if (w >= 0) {
                        t->stats.bytes_written += (unsigned long long) w;
                        t->unsynced = true;
                        if ((size_t) w == len)
                                return 0;
                        /* A short direct write: the rest goes buffered. */
                        buf = (const char *) buf + w;
                        off += w;
                        len -= (size_t) w;
                } else if (errno == EINVAL) {
                        /* Alignment the device does not accept: buffered from now on. */
                        t->no_direct = true;
                } else {
                        return errno;
                }
        }
        errcode_t e = set_direct(t, false);
        return e ? e : pwrite_all(t, buf, len, off);
}

errcode_t ts_io_write_back(io_channel io) {
        return write_back(tio_of(io));
}

size_t ts_io_held(io_channel io) {
        return tio_of(io)->nheld;
}
