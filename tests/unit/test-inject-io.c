/* inject/io.c: the I/O manager, driven through libext2fs's io_channel calls on
 * a file, with the file's bytes read back through a separate descriptor to
 * see what has reached the kernel and what is still held. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/macro.h"
#include "inject/io-internal.h"
#include "tests/unit/failalloc.h"

#define BS 4096
#define NBLOCKS 256

static char path[PATH_MAX];
static int fd = -1;
static io_channel io;

static void setup(void) {
        const char *base = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/ts-io-XXXXXX", base ? base : "/tmp");
        fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(ftruncate(fd, (off_t) NBLOCKS * BS), 0);
        char name[64];
        ck_assert_int_eq(ts_io_name(fd, name, sizeof name), 0);
        ck_assert_int_eq(ts_io_manager->open(name, IO_FLAG_RW, &io), 0);
        ck_assert_int_eq(io_channel_set_blksize(io, BS), 0);
}

static void teardown(void) {
        if (io)
                io_channel_close(io);
        io = NULL;
        close(fd);
        unlink(path);
}

/* What the file holds at block b, read past the channel. */
static void file_block(unsigned long long b, char *buf) {
        int other = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(other, 0);
        ck_assert_int_eq(pread(other, buf, BS, (off_t) (b * BS)), BS);
        close(other);
}

static void fill(char *buf, int c) {
        memset(buf, c, BS);
}

static void assert_file_block(unsigned long long b, int c) {
        char got[BS], want[BS];
        file_block(b, got);
        fill(want, c);
        ck_assert_msg(memcmp(got, want, BS) == 0, "block %llu: file has %#x, expected %#x", b,
                      (unsigned) (unsigned char) got[0], (unsigned) c);
}

static void assert_channel_block(unsigned long long b, int c) {
        char got[BS], want[BS];
        ck_assert_int_eq(io_channel_read_blk64(io, b, 1, got), 0);
        fill(want, c);
        ck_assert_msg(memcmp(got, want, BS) == 0, "block %llu: channel reads %#x, expected %#x", b,
                      (unsigned) (unsigned char) got[0], (unsigned) c);
}

START_TEST(open_checks_its_name_and_descriptor) {
        io_channel other = NULL;
        ck_assert_int_eq(ts_io_manager->open("/dev/sda", IO_FLAG_RW, &other), EXT2_ET_BAD_DEVICE_NAME);
        ck_assert_int_eq(ts_io_manager->open("thinsnap-fd:x", IO_FLAG_RW, &other), EXT2_ET_BAD_DEVICE_NAME);
        ck_assert_int_eq(ts_io_manager->open("thinsnap-fd:999999", IO_FLAG_RW, &other), EBADF);
        int ro = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(ro, 0);
        char name[64];
        ck_assert_int_eq(ts_io_name(ro, name, sizeof name), 0);
        ck_assert_int_eq(ts_io_manager->open(name, IO_FLAG_RW, &other), EBADF);
        ck_assert_int_eq(ts_io_manager->open(name, 0, &other), 0);
        io_channel_close(other);
        /* Closing the channel leaves the descriptor to its owner. */
        ck_assert_int_ge(fcntl(ro, F_GETFD), 0);
        close(ro);
        ck_assert_int_eq(ts_io_name(3, name, 5), -ENAMETOOLONG);
}
END_TEST

START_TEST(writes_go_straight_through_until_holding_starts) {
        char b[BS];
        fill(b, 0x11);
        ck_assert_int_eq(io_channel_write_blk64(io, 5, 1, b), 0);
        assert_file_block(5, 0x11);
        ck_assert_uint_eq(ts_io_held(io), 0);
        ck_assert_int_eq(ts_io_hold_writes(io, 0), EXT2_ET_INVALID_ARGUMENT);
        ck_assert_int_eq(ts_io_hold_writes(io, 128 * 1024), EXT2_ET_INVALID_ARGUMENT);
}
END_TEST

START_TEST(held_block_is_written_once_at_flush) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[BS];
        io_stats st = NULL;
        ck_assert_int_eq(io->manager->get_stats(io, &st), 0);
        unsigned long long before = st->bytes_written;
        for (int c = 1; c <= 4; c++) {
                fill(b, c);
                ck_assert_int_eq(io_channel_write_blk64(io, 7, 1, b), 0);
        }
        ck_assert_uint_eq(ts_io_held(io), 1);
        assert_file_block(7, 0);    /* nothing reached the file yet */
        assert_channel_block(7, 4); /* but reads see the last write */
        ck_assert_uint_eq(st->bytes_written, before);
        ck_assert_int_eq(io_channel_flush(io), 0);
        ck_assert_uint_eq(ts_io_held(io), 0);
        assert_file_block(7, 4);
        ck_assert_uint_eq(st->bytes_written - before, BS);
}
END_TEST

START_TEST(write_back_without_flush_reaches_the_file) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[2 * BS];
        memset(b, 0x21, BS);
        memset(b + BS, 0x22, BS);
        /* Two blocks in one call, and one far away. */
        ck_assert_int_eq(io_channel_write_blk64(io, 10, 2, b), 0);
        ck_assert_int_eq(io_channel_write_blk64(io, 100, 1, b), 0);
        ck_assert_uint_eq(ts_io_held(io), 3);
        ck_assert_int_eq(ts_io_write_back(io), 0);
        ck_assert_uint_eq(ts_io_held(io), 0);
        assert_file_block(10, 0x21);
        assert_file_block(11, 0x22);
        assert_file_block(100, 0x21);
}
END_TEST

START_TEST(reads_merge_held_blocks_into_device_content) {
        char b[BS];
        for (int i = 20; i < 23; i++) {
                fill(b, 0x30 + i);
                ck_assert_int_eq(io_channel_write_blk64(io, i, 1, b), 0); /* straight to the file */
        }
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        fill(b, 0x77);
        ck_assert_int_eq(io_channel_write_blk64(io, 21, 1, b), 0);
        char got[3 * BS];
        ck_assert_int_eq(io_channel_read_blk64(io, 20, 3, got), 0);
        ck_assert_int_eq(got[0], 0x30 + 20);
        ck_assert_int_eq(got[BS], 0x77);
        ck_assert_int_eq(got[2 * BS - 1], 0x77);
        ck_assert_int_eq(got[2 * BS], 0x30 + 22);
        /* A byte-sized read inside the held block. */
        ck_assert_int_eq(io_channel_set_blksize(io, 1024), 0);
        char small[1024];
        ck_assert_int_eq(io_channel_read_blk64(io, 21 * 4 + 1, -1024, small), 0);
        ck_assert_int_eq(small[0], 0x77);
        ck_assert_int_eq(small[1023], 0x77);
}
END_TEST

START_TEST(partial_write_patches_the_held_copy) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[BS];
        fill(b, 0x41);
        ck_assert_int_eq(io_channel_write_blk64(io, 0, 1, b), 0);
        /* The superblock's way: 1024 bytes at offset 1024. */
        ck_assert_int_eq(io_channel_set_blksize(io, 1024), 0);
        char sb[1024];
        memset(sb, 0x53, sizeof sb);
        ck_assert_int_eq(io_channel_write_blk64(io, 1, -1024, sb), 0);
        ck_assert_int_eq(io_channel_set_blksize(io, BS), 0);
        char got[BS];
        ck_assert_int_eq(io_channel_read_blk64(io, 0, 1, got), 0);
        ck_assert_int_eq(got[0], 0x41);
        ck_assert_int_eq(got[1024], 0x53);
        ck_assert_int_eq(got[2047], 0x53);
        ck_assert_int_eq(got[2048], 0x41);
        ck_assert_int_eq(io_channel_flush(io), 0);
        file_block(0, got);
        ck_assert_int_eq(got[0], 0x41);
        ck_assert_int_eq(got[1500], 0x53);
        ck_assert_int_eq(got[BS - 1], 0x41);
}
END_TEST

START_TEST(partial_write_of_a_block_not_held_holds_it) {
        char b[BS];
        fill(b, 0x44);
        ck_assert_int_eq(io_channel_write_blk64(io, 0, 1, b), 0); /* straight to the file */
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        ck_assert_int_eq(io_channel_set_blksize(io, 1024), 0);
        char sb[1024];
        memset(sb, 0x53, sizeof sb);
        ck_assert_int_eq(io_channel_write_blk64(io, 1, -1024, sb), 0);
        ck_assert_uint_eq(ts_io_held(io), 1);
        assert_file_block(0, 0x44); /* held: nothing written yet */
        ck_assert_int_eq(io_channel_set_blksize(io, BS), 0);
        /* It goes out with the block next to it, in one call. */
        fill(b, 0x45);
        ck_assert_int_eq(io_channel_write_blk64(io, 1, 1, b), 0);
        ck_assert_int_eq(io_channel_flush(io), 0);
        char got[BS];
        file_block(0, got);
        ck_assert_int_eq(got[0], 0x44);
        ck_assert_int_eq(got[1024], 0x53);
        ck_assert_int_eq(got[2047], 0x53);
        ck_assert_int_eq(got[2048], 0x44);
        assert_file_block(1, 0x45);
}
END_TEST

START_TEST(write_across_two_held_blocks_updates_both) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[2 * BS];
        memset(b, 0x11, sizeof b);
        ck_assert_int_eq(io_channel_write_blk64(io, 4, 2, b), 0);
        /* 3 KiB from byte 3 KiB of block 4 into block 5. */
        ck_assert_int_eq(io_channel_set_blksize(io, 1024), 0);
        char u[3 * 1024];
        memset(u, 0x22, sizeof u);
        ck_assert_int_eq(io_channel_write_blk64(io, 4 * 4 + 3, 3, u), 0);
        /* A read starting inside a held block. */
        char got[2048];
        ck_assert_int_eq(io_channel_read_blk64(io, 4 * 4 + 2, 2, got), 0);
        ck_assert_int_eq(got[0], 0x11);
        ck_assert_int_eq(got[1024], 0x22);
        ck_assert_int_eq(io_channel_set_blksize(io, BS), 0);
        ck_assert_int_eq(io_channel_flush(io), 0);
        char f[2 * BS];
        file_block(4, f);
        file_block(5, f + BS);
        ck_assert_int_eq(f[3071], 0x11);
        ck_assert_int_eq(f[3072], 0x22);
        ck_assert_int_eq(f[6143], 0x22);
        ck_assert_int_eq(f[6144], 0x11);
}
END_TEST

START_TEST(failed_write_back_keeps_blocks_held) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[BS];
        fill(b, 0x33);
        ck_assert_int_eq(io_channel_write_blk64(io, 10, 1, b), 0);
        ck_assert_int_eq(io_channel_write_blk64(io, 300, 1, b), 0); /* past the file's end */
        /* Writes past 64 blocks fail with EFBIG in this process only. */
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit old, rl = { .rlim_cur = 64 * BS, .rlim_max = RLIM_INFINITY };
        ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
        rl.rlim_max = old.rlim_max;
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
        errcode_t e = io_channel_flush(io);
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
        ck_assert_int_eq(e, EFBIG);
        ck_assert_uint_eq(ts_io_held(io), 2);
        ck_assert_int_eq(io_channel_flush(io), 0);
        ck_assert_uint_eq(ts_io_held(io), 0);
        assert_file_block(10, 0x33);
        assert_file_block(300, 0x33);
}
END_TEST

START_TEST(data_write_over_part_of_a_held_block_keeps_the_rest) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[BS];
        fill(b, 0x61);
        ck_assert_int_eq(io_channel_write_blk64(io, 30, 1, b), 0);
        /* At a 1 KiB channel block size, data covering the block's second KiB. */
        ck_assert_int_eq(io_channel_set_blksize(io, 1024), 0);
        char *data = aligned_alloc(BS, BS);
        ck_assert_ptr_nonnull(data);
        memset(data, 0x62, 1024);
        ck_assert_int_eq(ts_io_write_data(io, 30 * 4 + 1, 1, data), 0);
        free(data);
        ck_assert_int_eq(io_channel_set_blksize(io, BS), 0);
        ck_assert_uint_eq(ts_io_held(io), 1);
        ck_assert_int_eq(io_channel_flush(io), 0);
        char got[BS];
        file_block(30, got);
        ck_assert_int_eq(got[1023], 0x61);
        ck_assert_int_eq(got[1024], 0x62);
        ck_assert_int_eq(got[2047], 0x62);
        ck_assert_int_eq(got[2048], 0x61);
}
END_TEST

START_TEST(data_write_drops_held_copies) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[BS];
        fill(b, 0x61);
        ck_assert_int_eq(io_channel_write_blk64(io, 30, 1, b), 0);
        ck_assert_int_eq(io_channel_write_blk64(io, 33, 1, b), 0);
        char *data = aligned_alloc(BS, 2 * BS);
        ck_assert_ptr_nonnull(data);
        memset(data, 0x62, 2 * BS);
        /* Blocks 30 and 31 were metadata freed and now hold file data. */
        ck_assert_int_eq(ts_io_write_data(io, 30, 2, data), 0);
        free(data);
        ck_assert_uint_eq(ts_io_held(io), 1);
        assert_file_block(30, 0x62);
        assert_channel_block(30, 0x62);
        ck_assert_int_eq(io_channel_flush(io), 0);
        assert_file_block(30, 0x62); /* not overwritten by the stale copy */
        assert_file_block(31, 0x62);
        assert_file_block(33, 0x61);
}
END_TEST

START_TEST(many_blocks_are_written_back_as_they_overflow) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[BS];
        for (int i = 0; i < 200; i++) {
                fill(b, i + 1);
                ck_assert_int_eq(io_channel_write_blk64(io, 50 + i, 1, b), 0);
                ck_assert_uint_le(ts_io_held(io), 64);
        }
        for (int i = 0; i < 200; i++)
                assert_channel_block(50 + i, i + 1);
        ck_assert_int_eq(io_channel_flush(io), 0);
        for (int i = 0; i < 200; i++)
                assert_file_block(50 + i, i + 1);
}
END_TEST

START_TEST(no_memory_to_hold_writes_through) {
        ck_assert_int_eq(ts_io_hold_writes(io, BS), 0);
        char b[BS];
        fill(b, 0x71);
        ts_failalloc_arm(1);
        errcode_t e = io_channel_write_blk64(io, 40, 1, b);
        int fired = ts_failalloc_fired();
        ts_failalloc_arm(0);
        ck_assert_int_eq(e, 0);
        ck_assert(fired);
        ck_assert_uint_eq(ts_io_held(io), 0);
        assert_file_block(40, 0x71);
}
END_TEST

START_TEST(data_write_on_a_file_is_buffered_and_counted) {
        io_stats st = NULL;
        ck_assert_int_eq(io->manager->get_stats(io, &st), 0);
        unsigned long long before = st->bytes_written;
        char *data = aligned_alloc(BS, 32 * BS);
        ck_assert_ptr_nonnull(data);
        memset(data, 0x55, 32 * BS);
        ck_assert_int_eq(ts_io_write_data(io, 64, 32, data), 0);
        free(data);
        ck_assert_uint_eq(st->bytes_written - before, 32 * BS);
        assert_file_block(64, 0x55);
        assert_file_block(95, 0x55);
        ck_assert_int_eq(io_channel_flush(io), 0);
}
END_TEST

static Suite *io_suite(void) {
        Suite *s = suite_create("inject-io");
        TCase *tc = tcase_create("io");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, open_checks_its_name_and_descriptor);
        tcase_add_test(tc, writes_go_straight_through_until_holding_starts);
        tcase_add_test(tc, held_block_is_written_once_at_flush);
        tcase_add_test(tc, write_back_without_flush_reaches_the_file);
        tcase_add_test(tc, reads_merge_held_blocks_into_device_content);
        tcase_add_test(tc, partial_write_patches_the_held_copy);
        tcase_add_test(tc, partial_write_of_a_block_not_held_holds_it);
        tcase_add_test(tc, write_across_two_held_blocks_updates_both);
        tcase_add_test(tc, failed_write_back_keeps_blocks_held);
        tcase_add_test(tc, data_write_over_part_of_a_held_block_keeps_the_rest);
        tcase_add_test(tc, data_write_drops_held_copies);
        tcase_add_test(tc, many_blocks_are_written_back_as_they_overflow);
        tcase_add_test(tc, no_memory_to_hold_writes_through);
        tcase_add_test(tc, data_write_on_a_file_is_buffered_and_counted);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(io_suite());
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
