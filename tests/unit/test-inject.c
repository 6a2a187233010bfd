/* inject: every case runs on an image made here with mke2fs, then checks the
 * filesystem with `e2fsck -fn` and reads content back with debugfs (an
 * independent reader) and attributes with libext2fs opened read-only. */
#include <check.h>
#include <errno.h>
#include <ext2fs/ext2fs.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/macro.h"
#include "inject/inject.h"
#include "tests/unit/failalloc.h"

static char tmpdir[PATH_MAX];
static char img[PATH_MAX + 16];

/* Runs argv (NULL-terminated), stdout/stderr to out_path or /dev/null.
 * Returns the exit status, or -1. */
static int runv(const char *out_path, char *const argv[]) {
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                int fd = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (fd >= 0) {
                        dup2(fd, 1);
                        dup2(fd, 2);
                }
                execvp(argv[0], argv);
                _exit(127);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0)
                return -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define RUN(out, ...) runv(out, (char *const[]){ __VA_ARGS__, NULL })

static void setup(void) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/ts-inject-XXXXXX", base ? base : "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
        snprintf(img, sizeof img, "%s/fs.img", tmpdir);
}

static void teardown(void) {
        RUN(NULL, "rm", "-rf", tmpdir);
}

/* Makes img: `size` like "64M", then mke2fs options. */
static void make_image(const char *size, ...) {
        char *argv[32];
        int n = 0;
        argv[n++] = "mke2fs";
        argv[n++] = "-q";
        argv[n++] = "-F";
        va_list ap;
        va_start(ap, size);
        const char *a;
        while ((a = va_arg(ap, const char *)) && n < 28)
                argv[n++] = (char *) a;
        va_end(ap);
        argv[n++] = img;
        argv[n++] = (char *) size;
        argv[n] = NULL;
        unlink(img);
        ck_assert_int_eq(runv(NULL, argv), 0);
}

static void assert_fsck_clean(void) {
        char out[PATH_MAX + 32];
        snprintf(out, sizeof out, "%s/fsck.out", tmpdir);
        int r = RUN(out, "e2fsck", "-fn", img);
        if (r != 0) {
                char cmd[PATH_MAX + 64];
                snprintf(cmd, sizeof cmd, "cat %s >&2", out);
                (void) !system(cmd);
        }
        ck_assert_msg(r == 0, "e2fsck -fn reported problems (exit %d)", r);
}

static void debugfs_w(const char *cmd) {
        ck_assert_int_eq(RUN(NULL, "debugfs", "-w", "-R", (char *) cmd, img), 0);
}

/* Reads a guest file with debugfs into a malloc'd buffer. */
static char *dump(const char *guest, size_t *ret_len) {
        char out[PATH_MAX + 32], cmd[PATH_MAX + 64];
        snprintf(out, sizeof out, "%s/dump.out", tmpdir);
        unlink(out);
        snprintf(cmd, sizeof cmd, "dump %s %s", guest, out);
        ck_assert_int_eq(RUN(NULL, "debugfs", "-R", cmd, img), 0);
        int fd = open(out, O_RDONLY | O_CLOEXEC);
        ck_assert_msg(fd >= 0, "debugfs could not dump %s", guest);
        struct stat st;
        ck_assert_int_eq(fstat(fd, &st), 0);
        char *buf = malloc(st.st_size + 1);
        ck_assert_ptr_nonnull(buf);
        size_t done = 0;
        while (done < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + done, st.st_size - done);
                ck_assert_int_gt(n, 0);
                done += n;
        }
        close(fd);
        *ret_len = done;
        return buf;
}

struct info {
        ext2_ino_t ino;
        struct ext2_inode_large in;
        blk64_t free_blocks;
        ext2_ino_t free_inodes;
};

/* Looks a guest path up read-only with libext2fs, not following a final
 * symlink. Returns 0 or -ENOENT. */
static int info(const char *guest, struct info *ret) {
        ext2_filsys fs;
        ck_assert_int_eq(ext2fs_open(img, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs), 0);
        ext2_ino_t ino = 0;
        errcode_t e = ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, guest, &ino);
        if (e) {
                ext2fs_close_free(&fs);
                return -ENOENT;
        }
        memset(ret, 0, sizeof(*ret));
        ret->ino = ino;
        ck_assert_int_eq(ext2fs_read_inode_full(fs, ino, (struct ext2_inode *) &ret->in, sizeof(ret->in)), 0);
        ret->free_blocks = ext2fs_free_blocks_count(fs->super);
        ret->free_inodes = fs->super->s_free_inodes_count;
        ext2fs_close_free(&fs);
        return 0;
}

static void write_host(const char *path, const void *data, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ck_assert_int_ge(fd, 0);
        size_t done = 0;
        while (done < len) {
                ssize_t n = write(fd, (const char *) data + done, len - done);
                ck_assert_int_gt(n, 0);
                done += n;
        }
        ck_assert_int_eq(close(fd), 0);
}

static char *host_file(const char *name, const char *content) {
        static char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s", tmpdir, name);
        write_host(path, content, strlen(content));
        return path;
}

static void assert_guest_content(const char *guest, const void *want, size_t len) {
        size_t got_len;
        char *got = dump(guest, &got_len);
        ck_assert_uint_eq(got_len, len);
        ck_assert_msg(memcmp(got, want, len) == 0, "content of %s differs", guest);
        free(got);
}

static ts_inject *open_ok(void) {
        ts_inject *ij = NULL;
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_open(img, 0, &ij, &err);
        ck_assert_msg(r == 0, "open: %s", ts_error_message(err, r));
        return ij;
}

static void close_ok(ts_inject *ij) {
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_close(ij, &err);
        ck_assert_msg(r == 0, "close: %s", ts_error_message(err, r));
}

static void inject_ok(ts_inject *ij, const char *content, const char *guest, const ts_inject_opts *o) {
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_write_file(ij, host_file("src", content), guest, o, &err);
        ck_assert_msg(r == 0, "write %s: %s", guest, ts_error_message(err, r));
}

/* Returns the error and checks a message was given. */
static int inject_fails(ts_inject *ij, const char *content, const char *guest, const ts_inject_opts *o) {
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_write_file(ij, host_file("src", content), guest, o, &err);
        ck_assert_int_lt(r, 0);
        ck_assert_ptr_nonnull(err);
        ck_assert_ptr_nonnull(err->msg);
        return r;
}

/* A copy of the image's bytes, to prove a refused operation wrote nothing. */
static char *image_bytes(size_t *ret_len) {
        int fd = open(img, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        struct stat st;
        ck_assert_int_eq(fstat(fd, &st), 0);
        char *buf = malloc(st.st_size);
        ck_assert_ptr_nonnull(buf);
        ck_assert_int_eq(pread(fd, buf, st.st_size, 0), st.st_size);
        close(fd);
        *ret_len = st.st_size;
        return buf;
}

static void assert_image_unchanged(const char *before, size_t len) {
        size_t now_len;
        char *now = image_bytes(&now_len);
        ck_assert_uint_eq(now_len, len);
        ck_assert_msg(memcmp(before, now, len) == 0, "the image changed");
        free(now);
}

/* ---- writing files ---- */

START_TEST(write_sets_attributes) {
        make_image("64M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        o.mode = 0750;
        o.uid = 70000; /* needs the high 16 bits */
        o.gid = 1234;
        o.mtime = 1700000000;
        inject_ok(ij, "agent v1\n", "/usr/local/bin/agent", &o);
        close_ok(ij);
        assert_fsck_clean();
        assert_guest_content("/usr/local/bin/agent", "agent v1\n", 9);

        struct info fi;
        ck_assert_int_eq(info("/usr/local/bin/agent", &fi), 0);
        ck_assert_uint_eq(fi.in.i_mode, LINUX_S_IFREG | 0750);
        ck_assert_uint_eq(inode_uid(fi.in), 70000);
        ck_assert_uint_eq(inode_gid(fi.in), 1234);
        ck_assert_uint_eq(fi.in.i_mtime, 1700000000);
        ck_assert_uint_eq(fi.in.i_links_count, 1);
        ck_assert(fi.in.i_flags & EXT4_EXTENTS_FL);

        /* Parents were created 0755 root:root. */
        const char *parents[] = { "/usr", "/usr/local", "/usr/local/bin" };
        for (size_t i = 0; i < TS_ARRAY_SIZE(parents); i++) {
                ck_assert_int_eq(info(parents[i], &fi), 0);
                ck_assert_uint_eq(fi.in.i_mode, LINUX_S_IFDIR | 0755);
                ck_assert_uint_eq(inode_uid(fi.in), 0);
                ck_assert_uint_eq(inode_gid(fi.in), 0);
                ck_assert_uint_eq(fi.in.i_links_count, i == 2 ? 2 : 3);
        }
}
END_TEST

START_TEST(write_parent_owner_and_mtime_past_2038) {
        make_image("64M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        o.dir_mode = 0700;
        o.dir_uid = 5;
        o.dir_gid = 6;
        o.mtime = 4102444800LL; /* 2100-01-01 */
        inject_ok(ij, "x", "/opt/a/f", &o);
        close_ok(ij);
        assert_fsck_clean();
        struct info fi;
        ck_assert_int_eq(info("/opt/a", &fi), 0);
        ck_assert_uint_eq(fi.in.i_mode, LINUX_S_IFDIR | 0700);
        ck_assert_uint_eq(inode_uid(fi.in), 5);
        ck_assert_uint_eq(inode_gid(fi.in), 6);
        ck_assert_int_eq(info("/opt/a/f", &fi), 0);
        int64_t t = (int64_t) (int32_t) fi.in.i_mtime + ((int64_t) (fi.in.i_mtime_extra & 3) << 32);
        ck_assert_int_eq(t, 4102444800LL);
}
END_TEST

START_TEST(write_empty_file) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        inject_ok(ij, "", "/empty", &o);
        close_ok(ij);
        assert_fsck_clean();
        struct info fi;
        ck_assert_int_eq(info("/empty", &fi), 0);
        ck_assert_uint_eq(EXT2_I_SIZE(&fi.in), 0);
        ck_assert_uint_eq(fi.in.i_blocks, 0);
        assert_guest_content("/empty", "", 0);
}
END_TEST

START_TEST(write_keeps_holes) {
        make_image("64M", "-t", "ext4", NULL);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/sparse", tmpdir);
        int fd = open(src, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(ftruncate(fd, 8 << 20), 0);
        ck_assert_int_eq(pwrite(fd, "head", 4, 0), 4);
        ck_assert_int_eq(pwrite(fd, "middle", 6, 4 << 20), 6);
        ck_assert_int_eq(pwrite(fd, "tail", 4, (8 << 20) - 4), 4);
        close(fd);

        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_write_file(ij, src, "/sparse", &o, &err);
        ck_assert_msg(r == 0, "%s", ts_error_message(err, r));
        close_ok(ij);
        assert_fsck_clean();

        struct info fi;
        ck_assert_int_eq(info("/sparse", &fi), 0);
        ck_assert_uint_eq(EXT2_I_SIZE(&fi.in), 8 << 20);
        /* Three 4 KiB blocks of data (i_blocks counts 512-byte sectors); a
         * dense copy would be 16384 sectors. */
        ck_assert_uint_le(fi.in.i_blocks, 3 * 8 + 8);
        size_t len;
        char *got = dump("/sparse", &len);
        ck_assert_uint_eq(len, 8 << 20);
        char *want = calloc(1, 8 << 20);
        memcpy(want, "head", 4);
        memcpy(want + (4 << 20), "middle", 6);
        memcpy(want + (8 << 20) - 4, "tail", 4);
        ck_assert(memcmp(got, want, len) == 0);
        free(got);
        free(want);
}
END_TEST

static void fill_pattern(char *buf, size_t len, uint32_t seed) {
        uint32_t x = seed | 1;
        for (size_t i = 0; i + 4 <= len; i += 4) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                memcpy(buf + i, &x, 4);
        }
        for (size_t i = len & ~(size_t) 3; i < len; i++)
                buf[i] = (char) i;
}

START_TEST(write_100mib_file) {
        make_image("256M", "-t", "ext4", NULL);
        size_t len = (100u << 20) + 123; /* not block aligned */
        char *data = malloc(len);
        fill_pattern(data, len, 7);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/big", tmpdir);
        write_host(src, data, len);

        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        o.mode = 0755;
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_write_file(ij, src, "/big", &o, &err);
        ck_assert_msg(r == 0, "%s", ts_error_message(err, r));
        close_ok(ij);
        unlink(src);
        assert_fsck_clean();
        assert_guest_content("/big", data, len);
        struct info fi;
        ck_assert_int_eq(info("/big", &fi), 0);
        ck_assert(fi.in.i_flags & EXT4_EXTENTS_FL);
        free(data);
}
END_TEST

START_TEST(write_from_memfd) {
        make_image("32M", "-t", "ext4", NULL);
        int fd = memfd_create("src", MFD_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        char data[10000];
        fill_pattern(data, sizeof data, 3);
        ck_assert_int_eq(write(fd, data, sizeof data), (ssize_t) sizeof data);
        off_t before = lseek(fd, 0, SEEK_CUR);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_write_fd(ij, fd, "/from-fd", &o, &err);
        ck_assert_msg(r == 0, "%s", ts_error_message(err, r));
        ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), before);
        close_ok(ij);
        close(fd);
        assert_fsck_clean();
        assert_guest_content("/from-fd", data, sizeof data);
}
END_TEST

START_TEST(write_rejects_bad_input) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        ck_assert_int_eq(inject_fails(ij, "x", "relative/path", &o), -EINVAL);
        ck_assert_int_eq(inject_fails(ij, "x", "/", &o), -EISDIR);
        o.mode = 010000;
        ck_assert_int_eq(inject_fails(ij, "x", "/f", &o), -EINVAL);
        o = TS_INJECT_OPTS_DEFAULT;
        char longname[300];
        memset(longname, 'a', sizeof longname);
        longname[0] = '/';
        longname[299] = '\0';
        ck_assert_int_eq(inject_fails(ij, "x", longname, &o), -ENAMETOOLONG);
        /* A source that is not a regular file. */
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_write_file(ij, tmpdir, "/d", &o, &err), -EINVAL);
        close_ok(ij);
        assert_fsck_clean();
        struct info fi;
        ck_assert_int_eq(info("/f", &fi), -ENOENT);
}
END_TEST

START_TEST(write_on_other_ext_flavours) {
        static const char *const kinds[][4] = {
                { "ext2", NULL },
                { "ext3", NULL },
                { "ext4", "-b", "1024", NULL },
                { "ext4", "-O", "^metadata_csum,uninit_bg", NULL },
                { "ext4", "-I", "128", NULL },
                { "ext4", "-O", "inline_data", NULL },
        };
        for (size_t k = 0; k < TS_ARRAY_SIZE(kinds); k++) {
                make_image("64M", "-t", kinds[k][0], kinds[k][1], kinds[k][2], kinds[k][3], NULL);
                char data[300000];
                fill_pattern(data, sizeof data, (uint32_t) k + 11);
                char src[PATH_MAX + 16];
                snprintf(src, sizeof src, "%s/src-bin", tmpdir);
                write_host(src, data, sizeof data);
                ts_inject *ij = open_ok();
                ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
                _cleanup_error_ ts_error *err = NULL;
                int r = ts_inject_write_file(ij, src, "/a/b/c.bin", &o, &err);
                ck_assert_msg(r == 0, "%s: %s", kinds[k][0], ts_error_message(err, r));
                ck_assert_int_eq(ts_inject_symlink(ij, "/a/b/c.bin", "/a/link", &o, &err), 0);
                ck_assert_int_eq(ts_inject_mountpoints(ij, &err), 5);
                inject_ok(ij, "replaced", "/a/b/c.bin", &o);
                close_ok(ij);
                assert_fsck_clean();
                assert_guest_content("/a/b/c.bin", "replaced", 8);
        }
}
END_TEST

/* ---- replacing ---- */

START_TEST(replace_existing_file) {
        make_image("64M", "-t", "ext4", "-b", "4096", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        char big[200000];
        fill_pattern(big, sizeof big, 5);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/big", tmpdir);
        write_host(src, big, sizeof big);
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_write_file(ij, src, "/etc/agent.conf", &o, &err), 0);
        close_ok(ij);
        struct info before, after;
        ck_assert_int_eq(info("/etc/agent.conf", &before), 0);

        ij = open_ok();
        o.mode = 0600;
        inject_ok(ij, "small now\n", "/etc/agent.conf", &o);
        close_ok(ij);
        assert_fsck_clean();
        assert_guest_content("/etc/agent.conf", "small now\n", 10);
        ck_assert_int_eq(info("/etc/agent.conf", &after), 0);
        ck_assert_uint_ne(after.ino, before.ino); /* a new inode was switched in */
        ck_assert_uint_eq(after.in.i_mode, LINUX_S_IFREG | 0600);
        /* The old inode and its blocks went back to the free pool. */
        ck_assert_uint_eq(after.free_inodes, before.free_inodes);
        ck_assert_uint_eq(after.free_blocks, before.free_blocks + (49 - 1)); /* 200000 bytes: 49 blocks; now 1 */
}
END_TEST

START_TEST(replace_hard_linked_file_keeps_other_link) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        inject_ok(ij, "old content", "/a", &o);
        close_ok(ij);
        struct info fi;
        ck_assert_int_eq(info("/a", &fi), 0);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "ln <%u> /b", fi.ino);
        debugfs_w(cmd);
        snprintf(cmd, sizeof cmd, "sif <%u> links_count 2", fi.ino);
        debugfs_w(cmd);
        assert_fsck_clean();

        ij = open_ok();
        inject_ok(ij, "new content", "/a", &o);
        close_ok(ij);
        assert_fsck_clean();
        assert_guest_content("/a", "new content", 11);
        assert_guest_content("/b", "old content", 11);
        ck_assert_int_eq(info("/b", &fi), 0);
        ck_assert_uint_eq(fi.in.i_links_count, 1);
}
END_TEST

START_TEST(final_symlink_is_replaced_not_followed) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        inject_ok(ij, "target stays", "/etc/real", &o);
        ck_assert_int_eq(ts_inject_symlink(ij, "/etc/real", "/etc/link", &o, &err), 0);
        inject_ok(ij, "through link?", "/etc/link", &o);
        close_ok(ij);
        assert_fsck_clean();
        assert_guest_content("/etc/real", "target stays", 12);
        assert_guest_content("/etc/link", "through link?", 13);
        struct info fi;
        ck_assert_int_eq(info("/etc/link", &fi), 0);
        ck_assert(LINUX_S_ISREG(fi.in.i_mode));
}
END_TEST

START_TEST(final_symlink_refused_by_option) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_symlink(ij, "/nowhere", "/link", &o, &err), 0);
        o.flags = TS_INJECT_REFUSE_SYMLINK;
        ck_assert_int_eq(inject_fails(ij, "x", "/link", &o), -ELOOP);
        close_ok(ij);
        assert_fsck_clean();
        struct info fi;
        ck_assert_int_eq(info("/link", &fi), 0);
        ck_assert(LINUX_S_ISLNK(fi.in.i_mode));
}
END_TEST

START_TEST(replace_directory_refused) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/srv/data", &o, &err), 0);
        ck_assert_int_eq(inject_fails(ij, "x", "/srv/data", &o), -EISDIR);
        ck_assert_int_eq(inject_fails(ij, "x", "/srv/data/", &o), -EISDIR);
        close_ok(ij);
        assert_fsck_clean();
}
END_TEST

/* ---- path resolution stays inside the guest ---- */

START_TEST(dotdot_stops_at_guest_root) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        inject_ok(ij, "x", "/../../../etc/./passwd", &o);
        inject_ok(ij, "y", "/etc/../etc/../../hosts", &o);
        close_ok(ij);
        assert_fsck_clean();
        assert_guest_content("/etc/passwd", "x", 1);
        assert_guest_content("/hosts", "y", 1);
}
END_TEST

START_TEST(symlinks_resolve_inside_guest) {
        make_image("32M", "-t", "ext4", NULL);
        char hostdir[PATH_MAX + 16];
        snprintf(hostdir, sizeof hostdir, "%s/hostdir", tmpdir);
        ck_assert_int_eq(mkdir(hostdir, 0755), 0);

        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        /* An absolute target naming a host directory, and relative escapes. */
        ck_assert_int_eq(ts_inject_symlink(ij, hostdir, "/abs", &o, &err), 0);
        ck_assert_int_eq(ts_inject_symlink(ij, "../../../../../..", "/up", &o, &err), 0);
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/var/lib", &o, &err), 0);
        ck_assert_int_eq(ts_inject_symlink(ij, "../../etc", "/var/lib/etc-link", &o, &err), 0);
        inject_ok(ij, "in guest", "/abs/planted", &o);
        inject_ok(ij, "at root", "/up/escaped", &o);
        inject_ok(ij, "via rel", "/var/lib/etc-link/conf", &o);
        uint32_t ino;
        ck_assert_int_eq(ts_inject_lookup(ij, "/var/lib/etc-link/conf", &ino, &err), 0);
        close_ok(ij);
        assert_fsck_clean();

        /* Nothing reached the host. */
        char planted[PATH_MAX + 32];
        snprintf(planted, sizeof planted, "%s/planted", hostdir);
        ck_assert_int_eq(access(planted, F_OK), -1);
        char guest[PATH_MAX + 32];
        snprintf(guest, sizeof guest, "%s/planted", hostdir);
        assert_guest_content(guest, "in guest", 8);
        assert_guest_content("/escaped", "at root", 7);
        assert_guest_content("/etc/conf", "via rel", 7);
        struct info fi;
        ck_assert_int_eq(info("/etc/conf", &fi), 0);
        ck_assert_uint_eq(fi.ino, ino);
}
END_TEST

START_TEST(symlink_loop_is_refused) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_symlink(ij, "/loop2", "/loop1", &o, &err), 0);
        ck_assert_int_eq(ts_inject_symlink(ij, "loop1", "/loop2", &o, &err), 0);
        ck_assert_int_eq(ts_inject_symlink(ij, "self/x", "/self", &o, &err), 0);
        ck_assert_int_eq(inject_fails(ij, "x", "/loop1/file", &o), -ELOOP);
        ck_assert_int_eq(inject_fails(ij, "x", "/self/file", &o), -ELOOP);
        uint32_t ino;
        ck_assert_int_eq(ts_inject_lookup(ij, "/loop2", &ino, &err), -ELOOP);
        close_ok(ij);
        assert_fsck_clean();
}
END_TEST

START_TEST(file_where_directory_expected) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        inject_ok(ij, "plain", "/etc", &o);
        ck_assert_int_eq(inject_fails(ij, "x", "/etc/passwd", &o), -ENOTDIR);
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/etc/sub", &o, &err), -ENOTDIR);
        ts_error_free(err);
        err = NULL;
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/etc", &o, &err), -EEXIST);
        close_ok(ij);
        assert_fsck_clean();
        assert_guest_content("/etc", "plain", 5);
}
END_TEST

START_TEST(no_mkdirs_option) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        o.flags = TS_INJECT_NO_MKDIRS;
        ck_assert_int_eq(inject_fails(ij, "x", "/missing/file", &o), -ENOENT);
        inject_ok(ij, "x", "/top-level", &o);
        close_ok(ij);
        assert_fsck_clean();
        struct info fi;
        ck_assert_int_eq(info("/missing", &fi), -ENOENT);
}
END_TEST

/* ---- directories, symlinks, mount points ---- */

START_TEST(mkdir_symlink_mountpoints) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        o.mode = 0711;
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/a/b/c", &o, &err), 0);
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/a/b/c", &o, &err), 0); /* exists: fine */
        char longtarget[200];
        memset(longtarget, 'x', sizeof longtarget);
        longtarget[0] = '/';
        longtarget[199] = '\0';
        ck_assert_int_eq(ts_inject_symlink(ij, "/a/b", "/short", &o, &err), 0);
        ck_assert_int_eq(ts_inject_symlink(ij, longtarget, "/long", &o, &err), 0);
        ck_assert_int_eq(ts_inject_symlink(ij, "", "/empty", &o, &err), -EINVAL);
        ts_error_free(err);
        err = NULL;
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/short/d", &o, &err), 0); /* through the link */
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/tmp", &o, &err), 0);     /* pre-existing /tmp */
        int n = ts_inject_mountpoints(ij, &err);
        ck_assert_msg(n == 4, "created %d: %s", n, ts_error_message(err, n));
        ck_assert_int_eq(ts_inject_mountpoints(ij, &err), 0);
        close_ok(ij);
        assert_fsck_clean();

        struct info fi;
        ck_assert_int_eq(info("/a/b/c", &fi), 0);
        ck_assert_uint_eq(fi.in.i_mode, LINUX_S_IFDIR | 0711);
        ck_assert_int_eq(info("/a/b/d", &fi), 0);
        ck_assert_int_eq(info("/short", &fi), 0);
        ck_assert(LINUX_S_ISLNK(fi.in.i_mode));
        ck_assert_uint_eq(EXT2_I_SIZE(&fi.in), 4);
        ck_assert_int_eq(info("/long", &fi), 0);
        ck_assert_uint_eq(EXT2_I_SIZE(&fi.in), 199);
        static const struct {
                const char *p;
                unsigned mode;
        } mp[] = { { "/proc", 0555 }, { "/sys", 0555 }, { "/dev", 0755 }, { "/tmp", 0711 }, { "/run", 0755 } };
        for (size_t i = 0; i < TS_ARRAY_SIZE(mp); i++) {
                ck_assert_int_eq(info(mp[i].p, &fi), 0);
                ck_assert_uint_eq(fi.in.i_mode, LINUX_S_IFDIR | mp[i].mode);
        }
        char out[PATH_MAX + 32];
        snprintf(out, sizeof out, "%s/long.out", tmpdir);
        ck_assert_int_eq(RUN(out, "debugfs", "-R", "stat /long", img), 0);
}
END_TEST

START_TEST(mountpoint_tmp_is_sticky) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_mountpoints(ij, &err), 5);
        close_ok(ij);
        assert_fsck_clean();
        struct info fi;
        ck_assert_int_eq(info("/tmp", &fi), 0);
        ck_assert_uint_eq(fi.in.i_mode, LINUX_S_IFDIR | 01777);
}
END_TEST

START_TEST(many_entries_grow_directory) {
        make_image("64M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        char name[64];
        for (int i = 0; i < 400; i++) {
                snprintf(name, sizeof name, "/many/entry-with-a-longish-name-%04d", i);
                inject_ok(ij, name, name, &o);
        }
        close_ok(ij);
        assert_fsck_clean();
        snprintf(name, sizeof name, "/many/entry-with-a-longish-name-%04d", 399);
        assert_guest_content(name, name, strlen(name));
}
END_TEST

/* ---- full filesystems ---- */

START_TEST(no_space_for_blocks) {
        make_image("8M", "-t", "ext4", NULL);
        struct info root;
        ck_assert_int_eq(info("/", &root), 0);
        size_t len = 16 << 20;
        char *data = malloc(len);
        fill_pattern(data, len, 9);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/too-big", tmpdir);
        write_host(src, data, len);
        free(data);

        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_write_file(ij, src, "/big", &o, &err), -ENOSPC);
        ck_assert_ptr_nonnull(strstr(err->msg, "space"));
        /* The handle is still usable. */
        inject_ok(ij, "small", "/small", &o);
        close_ok(ij);
        assert_fsck_clean();
        struct info fi;
        ck_assert_int_eq(info("/big", &fi), -ENOENT);
        assert_guest_content("/small", "small", 5);
}
END_TEST

START_TEST(no_space_midway_rolls_back) {
        /* Fill most of the filesystem, then write a file that fits the free
         * count before the directory and extent overhead is known: whatever
         * fails, nothing may leak. */
        make_image("16M", "-t", "ext4", "-m", "0", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        size_t chunk = 1 << 20;
        char *data = malloc(chunk);
        fill_pattern(data, chunk, 1);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/chunk", tmpdir);
        write_host(src, data, chunk);
        free(data);
        _cleanup_error_ ts_error *err = NULL;
        int r = 0, n;
        char name[32];
        for (n = 0; n < 64; n++) {
                snprintf(name, sizeof name, "/fill/%d", n);
                r = ts_inject_write_file(ij, src, name, &o, &err);
                if (r < 0)
                        break;
        }
        ck_assert_int_eq(r, -ENOSPC);
        ck_assert_int_gt(n, 5);
        close_ok(ij);
        assert_fsck_clean();
}
END_TEST

START_TEST(no_space_for_inodes) {
        make_image("16M", "-t", "ext4", "-N", "32", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        int r = 0, n;
        char name[32];
        for (n = 0; n < 100; n++) {
                snprintf(name, sizeof name, "/f%d", n);
                r = ts_inject_write_file(ij, host_file("src", "i"), name, &o, &err);
                if (r < 0)
                        break;
        }
        ck_assert_int_eq(r, -ENOSPC);
        ck_assert_ptr_nonnull(strstr(err->msg, "inode"));
        ts_error_free(err);
        err = NULL;
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/newdir", &o, &err), -ENOSPC);
        close_ok(ij);
        assert_fsck_clean();
}
END_TEST

/* ---- hostile and unsuitable targets ---- */

START_TEST(refuses_non_ext) {
        _cleanup_error_ ts_error *err = NULL;
        ts_inject *ij = NULL;
        /* Zeros: no filesystem at all. */
        int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ck_assert_int_eq(ftruncate(fd, 8 << 20), 0);
        close(fd);
        ck_assert_int_eq(ts_inject_open(img, 0, &ij, &err), -EMEDIUMTYPE);
        ck_assert_ptr_null(ij);
        ck_assert_ptr_nonnull(err->msg);
        ts_error_free(err);
        err = NULL;
        /* Another filesystem: a swap signature. */
        if (RUN(NULL, "mkswap", img) == 0) {
                ck_assert_int_eq(ts_inject_open(img, 0, &ij, &err), -EMEDIUMTYPE);
                ck_assert_ptr_nonnull(strstr(err->msg, "swap"));
                ts_error_free(err);
                err = NULL;
        }
        ck_assert_int_eq(ts_inject_open(tmpdir, 0, &ij, &err), -EINVAL);
        ts_error_free(err);
        err = NULL;
        char missing[PATH_MAX + 16];
        snprintf(missing, sizeof missing, "%s/none", tmpdir);
        ck_assert_int_eq(ts_inject_open(missing, 0, &ij, &err), -ENOENT);
        ts_error_free(err);
        err = NULL;
        make_image("32M", "-t", "ext4", NULL);
        ck_assert_int_eq(ts_inject_open(img, 1u << 7, &ij, &err), -EINVAL);
}
END_TEST

/* Group descriptors that claim free blocks their bitmaps do not have, in a
 * filesystem of many small groups: 65536 groups of 256 blocks (the
 * smallest mke2fs makes; a crafted one can go to 8), every one full but
 * the last. Loading them costs a bitmap read and O(log groups) each; a
 * walk of every group per load (as overlap checks and searches for the
 * next group once did) would take ~10^10 steps, far past this case's
 * timeout. */
START_TEST(lying_descriptors_load_each_group_once) {
        make_image("16G", "-t", "ext4", "-b", "1024", "-g", "256", "-I", "128", "-N", "1048576", "-O",
                   "^has_journal,^flex_bg,^resize_inode,meta_bg", "-E", "lazy_itable_init=1,nodiscard", NULL);
        ext2_filsys fs = NULL;
        ck_assert_int_eq(ext2fs_open(img, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs), 0);
        ck_assert_int_eq(ext2fs_read_block_bitmap(fs), 0);
        dgrp_t last = fs->group_desc_count - 1;
        ck_assert_uint_eq(last + 1, 65536);
        for (dgrp_t g = 0; g < last; g++) {
                blk64_t first = ext2fs_group_first_block2(fs, g);
                ext2fs_mark_block_bitmap_range2(fs->block_map, first, ext2fs_group_last_block2(fs, g) - first + 1);
                ext2fs_bg_flags_clear(fs, g, EXT2_BG_BLOCK_UNINIT);
                ext2fs_bg_free_blocks_count_set(fs, g, 1);
                ext2fs_group_desc_csum_set(fs, g);
        }
        ext2fs_mark_bb_dirty(fs);
        ext2fs_mark_super_dirty(fs);
        ck_assert_int_eq(ext2fs_close_free(&fs), 0);

        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/agent", tmpdir);
        int fd = open(src, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
        char data[16384];
        memset(data, 'a', sizeof data);
        ck_assert_int_eq(write(fd, data, sizeof data), (ssize_t) sizeof data);
        close(fd);
        _cleanup_error_ ts_error *err = NULL;
        ts_inject *ij = NULL;
        ck_assert_int_eq(ts_inject_open(img, 0, &ij, &err), 0);
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        int r = ts_inject_write_file(ij, src, "/agent", &o, &err);
        ck_assert_msg(r == 0, "%s", err ? err->msg : "");
        ck_assert_int_eq(ts_inject_close(ij, &err), 0);
        size_t len = 0;
        _cleanup_free_ char *back = dump("/agent", &len);
        ck_assert_uint_eq(len, sizeof data);
        ck_assert_int_eq(memcmp(back, data, len), 0);
}
END_TEST

START_TEST(open_nofollow_refuses_a_symlink) {
        make_image("32M", "-t", "ext4", NULL);
        char link[PATH_MAX + 16];
        snprintf(link, sizeof link, "%s/link", tmpdir);
        ck_assert_int_eq(symlink(img, link), 0);
        _cleanup_error_ ts_error *err = NULL;
        ts_inject *ij = NULL;
        ck_assert_int_eq(ts_inject_open(link, TS_INJECT_OPEN_NOFOLLOW, &ij, &err), -ELOOP);
        ck_assert_ptr_null(ij);
        ck_assert_ptr_nonnull(strstr(err->msg, "symlink"));
        ck_assert_int_eq(ts_inject_open(link, 0, &ij, NULL), 0);
        ck_assert_int_eq(ts_inject_close(ij, NULL), 0);
        ck_assert_int_eq(ts_inject_open(img, TS_INJECT_OPEN_NOFOLLOW, &ij, NULL), 0);
        ck_assert_int_eq(ts_inject_close(ij, NULL), 0);
}
END_TEST

/* The path is swapped at the first open(2) of it, through seccomp's user
 * notification: the swapper answers the notification only after renaming
 * another link over it, so the open resolves the new target every time. */
struct swapper {
        int pipe[2];
        const char *link, *next;
        bool swapped;
};

static void *swap_at_open(void *p) {
        struct swapper *sw = p;
        int listener = -1;
        if (read(sw->pipe[0], &listener, sizeof listener) != sizeof listener)
                return NULL;
        for (;;) {
                struct seccomp_notif req;
                memset(&req, 0, sizeof req);
                if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
                        if (errno == EINTR)
                                continue;
                        return NULL;
                }
                /* openat(dirfd, path, ...): the caller is this process, blocked. */
                const char *path = (const char *) (uintptr_t) req.data.args[1];
                if (!sw->swapped && path && strcmp(path, sw->link) == 0)
                        sw->swapped = rename(sw->next, sw->link) == 0;
                struct seccomp_notif_resp resp = { .id = req.id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE };
                (void) ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
        }
}

/* In a child: opens sw->link with openat(2) held for the swapper; exits
 * 0 when the open was refused as the swapped-in target deserves. */
static void open_while_swapped(struct swapper *sw) {
        pthread_t t;
        if (pipe(sw->pipe) < 0 || pthread_create(&t, NULL, swap_at_open, sw) != 0)
                _exit(3);
        struct sock_filter f[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = TS_ARRAY_SIZE(f), .filter = f };
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                _exit(3);
        int listener = (int) syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        if (listener < 0 || write(sw->pipe[1], &listener, sizeof listener) != sizeof listener)
                _exit(3);
        ts_error *err = NULL;
        ts_inject *ij = NULL;
        int r = ts_inject_open(sw->link, 0, &ij, &err);
        if (!sw->swapped)
                _exit(4);
        if (r == -EUCLEAN && strstr(err->msg, "larger than its device"))
                _exit(0);
        fprintf(stderr, "open of the swapped path: %d %s\n", r, err ? err->msg : "(opened)");
        _exit(1);
}

START_TEST(open_decides_on_what_it_opened) {
        /* link -> a good 32 MiB image at the check; at the open, -> a copy
         * cut to 1 MiB, whose filesystem is larger than the file. */
        make_image("32M", "-t", "ext4", NULL);
        char cut[PATH_MAX + 16], link[PATH_MAX + 16], next[PATH_MAX + 16];
        snprintf(cut, sizeof cut, "%s/cut.img", tmpdir);
        snprintf(link, sizeof link, "%s/link", tmpdir);
        snprintf(next, sizeof next, "%s/next", tmpdir);
        ck_assert_int_eq(RUN(NULL, "cp", img, cut), 0);
        ck_assert_int_eq(truncate(cut, 1 << 20), 0);
        ck_assert_int_eq(symlink(img, link), 0);
        ck_assert_int_eq(symlink(cut, next), 0);
        struct swapper sw = { .link = link, .next = next };
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
                open_while_swapped(&sw);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "the checks were not made on what was opened (child status %d)", st);
}
END_TEST

START_TEST(refuses_unsupported_features) {
        static const char *const feats[] = { "mmp", "bigalloc" };
        for (size_t i = 0; i < TS_ARRAY_SIZE(feats); i++) {
                if (i == 0)
                        make_image("32M", "-t", "ext4", "-O", feats[i], NULL);
                else
                        make_image("64M", "-t", "ext4", "-O", feats[i], "-C", "16384", NULL);
                _cleanup_error_ ts_error *err = NULL;
                ts_inject *ij = NULL;
                ck_assert_int_eq(ts_inject_open(img, 0, &ij, &err), -EOPNOTSUPP);
                ck_assert_ptr_nonnull(strstr(err->msg, feats[i]));
        }
}
END_TEST

/* A group whose bitmaps fail to load stays marked used for the rest of the
 * session. Layout (4 KiB blocks, 16 inodes a group, no flex_bg): group 0 has
 * a 500-block hole and one free inode, /big's inode lies in group 1 (whose
 * block bitmap is made corrupt) and /d's in group 2. Groups 0 and 2 hold
 * enough free blocks for a 1000-block file, but no run that long: were group
 * 1 left looking free after its load failed, the first run to fit would start
 * on its backup superblock. */
START_TEST(failed_group_load_keeps_the_group_used) {
        make_image("17084", "-t", "ext4", "-b", "4096", "-g", "8192", "-N", "48", "-O",
                   "^has_journal,^flex_bg,^resize_inode",
                   NULL);
        char script[PATH_MAX + 32], src[PATH_MAX + 32];
        snprintf(src, sizeof src, "%s/tmpsrc", tmpdir);
        /* Not zeros: debugfs would store those as holes. */
        char *fill = malloc(8600 * 4096);
        ck_assert_ptr_nonnull(fill);
        memset(fill, 0x5a, 8600 * 4096);
        write_host(src, fill, 500 * 4096);
        snprintf(src, sizeof src, "%s/bigsrc", tmpdir);
        write_host(src, fill, 8600 * 4096);
        snprintf(src, sizeof src, "%s/small", tmpdir);
        write_host(src, "small\n", 6);
        snprintf(src, sizeof src, "%s/empty", tmpdir);
        write_host(src, "", 0);
        snprintf(src, sizeof src, "%s/newsrc", tmpdir);
        write_host(src, fill, 1000 * 4096);
        free(fill);
        snprintf(script, sizeof script, "%s/cmds", tmpdir);
        FILE *f = fopen(script, "w");
        ck_assert_ptr_nonnull(f);
        fprintf(f, "write %s/tmpsrc tmp\n", tmpdir);
        for (int i = 1; i <= 4; i++)
                fprintf(f, "write %s/small f%d\n", tmpdir, i);
        fprintf(f, "write %s/bigsrc big\n", tmpdir);
        for (int i = 18; i <= 32; i++)
                fprintf(f, "write %s/empty e%d\n", tmpdir, i);
        fprintf(f, "mkdir d\nrm tmp\n");
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_int_eq(RUN(NULL, "debugfs", "-w", "-f", script, img), 0);
        assert_fsck_clean();

        ext2_filsys fs;
        ck_assert_int_eq(ext2fs_open(img, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs), 0);
        ck_assert_uint_eq(fs->group_desc_count, 3);
        blk64_t bb1 = ext2fs_block_bitmap_loc(fs, 1), super1 = ext2fs_group_first_block2(fs, 1);
        unsigned bs = fs->blocksize;
        ext2fs_close_free(&fs);
        struct info fi;
        ck_assert_int_eq(info("/big", &fi), 0);
        ck_assert_uint_eq((fi.ino - 1) / 16, 1);
        /* Corrupt group 1's block bitmap: its checksum no longer matches. */
        int fd = open(img, O_RDWR | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        unsigned char byte;
        off_t at = (off_t) (bb1 * bs + 500); /* inside the 1024 bytes its checksum covers */
        ck_assert_int_eq(pread(fd, &byte, 1, at), 1);
        byte ^= 0x5a;
        ck_assert_int_eq(pwrite(fd, &byte, 1, at), 1);
        char super_before[4096];
        ck_assert_int_eq(pread(fd, super_before, sizeof super_before, (off_t) (super1 * bs)), 4096);

        ts_inject *ij = open_ok();
        _cleanup_error_ ts_error *err = NULL;
        uint32_t ino = 0;
        ck_assert_int_eq(ts_inject_lookup(ij, "/d", &ino, &err), 0); /* loads group 2 */
        ck_assert_int_eq(ts_inject_lookup(ij, "/big", &ino, &err), -EUCLEAN);
        ck_assert_ptr_nonnull(strstr(err->msg, "checksum"));
        ts_error_free(err);
        err = NULL;
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        int r = ts_inject_write_file(ij, src, "/new", &o, &err);
        /* It may fail for want of a run that fits: what matters is where it
         * did not write. */
        ck_assert_msg(r == 0 || r == -ENOSPC || r == -EUCLEAN, "%s", ts_error_message(err, r));
        ts_inject_free(ij);

        char super_after[4096];
        ck_assert_int_eq(pread(fd, super_after, sizeof super_after, (off_t) (super1 * bs)), 4096);
        close(fd);
        ck_assert_msg(memcmp(super_before, super_after, sizeof super_before) == 0,
                      "group 1's backup superblock was overwritten");
        if (r == 0) {
                ck_assert_int_eq(info("/new", &fi), 0);
                ck_assert_int_eq(ext2fs_open(img, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs), 0);
                blk64_t pblk = 0;
                for (blk64_t l = 0; l < 1000; l++) {
                        ck_assert_int_eq(ext2fs_bmap2(fs, fi.ino, NULL, NULL, 0, l, NULL, &pblk), 0);
                        ck_assert_msg(ext2fs_group_of_blk2(fs, pblk) != 1, "block %llu of /new lies in group 1",
                                      (unsigned long long) pblk);
                }
                ext2fs_close_free(&fs);
        }
}
END_TEST

START_TEST(refuses_journal_needing_recovery) {
        make_image("32M", "-t", "ext4", NULL);
        debugfs_w("feature needs_recovery");
        size_t len;
        char *before = image_bytes(&len);
        _cleanup_error_ ts_error *err = NULL;
        ts_inject *ij = NULL;
        ck_assert_int_eq(ts_inject_open(img, 0, &ij, &err), -EUCLEAN);
        ck_assert_ptr_nonnull(strstr(err->msg, "journal"));
        assert_image_unchanged(before, len);
        free(before);
}
END_TEST

START_TEST(refuses_bad_superblock) {
        make_image("32M", "-t", "ext4", NULL);
        _cleanup_error_ ts_error *err = NULL;
        ts_inject *ij = NULL;
        /* s_log_block_size (offset 24 in the superblock at 1024) absurd. */
        int fd = open(img, O_RDWR | O_CLOEXEC);
        uint32_t v = 40;
        ck_assert_int_eq(pwrite(fd, &v, 4, 1024 + 24), 4);
        close(fd);
        int r = ts_inject_open(img, 0, &ij, &err);
        ck_assert_msg(r == -EUCLEAN || r == -EMEDIUMTYPE, "got %d: %s", r, ts_error_message(err, r));
        ts_error_free(err);
        err = NULL;

        /* Group descriptors pointing the inode table outside the filesystem:
         * rewrite with debugfs so checksums stay valid. */
        make_image("32M", "-t", "ext4", NULL);
        debugfs_w("set_bg 0 inode_table 99999999");
        debugfs_w("set_bg 0 checksum calc");
        size_t len;
        char *before = image_bytes(&len);
        r = ts_inject_open(img, 0, &ij, &err);
        ck_assert_msg(r == -EUCLEAN, "got %d: %s", r, ts_error_message(err, r));
        assert_image_unchanged(before, len);
        free(before);
        ts_error_free(err);
        err = NULL;

        /* A filesystem that claims more blocks than its image holds. */
        make_image("32M", "-t", "ext4", NULL);
        ck_assert_int_eq(truncate(img, 16 << 20), 0);
        r = ts_inject_open(img, 0, &ij, &err);
        ck_assert_msg(r == -EUCLEAN, "got %d: %s", r, ts_error_message(err, r));
}
END_TEST

START_TEST(refuses_overlapping_group_metadata) {
        /* Group 1's block bitmap moved into group 0's inode table (checksums
         * recomputed, so only the layout is wrong): writing that bitmap would
         * overwrite inodes. */
        make_image("32M", "-t", "ext4", NULL);
        debugfs_w("set_bg 1 block_bitmap 300");
        debugfs_w("set_bg 1 checksum calc");
        size_t len;
        char *before = image_bytes(&len);
        ts_inject *ij = NULL;
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_open(img, 0, &ij, &err);
        if (r == 0) {
                /* Group 1 is loaded when group 0 cannot hold the file. */
                size_t big = 12 << 20;
                char *data = calloc(1, big);
                memset(data, 'x', big);
                char src[PATH_MAX + 16];
                snprintf(src, sizeof src, "%s/big", tmpdir);
                write_host(src, data, big);
                free(data);
                ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
                r = ts_inject_write_file(ij, src, "/big", &o, &err);
                ts_inject_free(ij);
        }
        ck_assert_msg(r == -EUCLEAN, "got %d: %s", r, ts_error_message(err, r));
        ck_assert_ptr_nonnull(strstr(err->msg, "overlaps"));
        assert_image_unchanged(before, len);
        free(before);
}
END_TEST

START_TEST(refuses_entry_pointing_at_free_inode) {
        make_image("32M", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/etc", &o, &err), 0);
        close_ok(ij);
        debugfs_w("ln <100> /etc/dangling");
        debugfs_w("ln <8> /etc/journal-alias");
        size_t len;
        char *before = image_bytes(&len);

        ij = open_ok();
        int r = inject_fails(ij, "x", "/etc/dangling/file", &o);
        ck_assert_int_eq(r, -EUCLEAN);
        ck_assert_int_eq(inject_fails(ij, "x", "/etc/dangling", &o), -EUCLEAN);
        ck_assert_int_eq(inject_fails(ij, "x", "/etc/journal-alias", &o), -EUCLEAN);
        ck_assert_int_eq(ts_inject_symlink(ij, "/x", "/etc/dangling", &o, &err), -EUCLEAN);
        ts_error_free(err);
        err = NULL;
        ck_assert_int_eq(ts_inject_mkdir_p(ij, "/etc/dangling/sub", &o, &err), -EUCLEAN);
        close_ok(ij);
        assert_image_unchanged(before, len);
        free(before);
}
END_TEST

START_TEST(refuses_corrupt_directory_block) {
        make_image("32M", "-t", "ext4", "-b", "4096", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        inject_ok(ij, "x", "/victim/file", &o);
        close_ok(ij);
        struct info fi;
        ck_assert_int_eq(info("/victim", &fi), 0);
        /* Find the directory's block and scribble over its entries. */
        char cmd[64], out[PATH_MAX + 32];
        snprintf(cmd, sizeof cmd, "bmap <%u> 0", fi.ino);
        snprintf(out, sizeof out, "%s/bmap.out", tmpdir);
        ck_assert_int_eq(RUN(out, "debugfs", "-R", cmd, img), 0);
        FILE *f = fopen(out, "re");
        char line[128];
        unsigned long blk = 0;
        while (fgets(line, sizeof line, f))
                if (sscanf(line, "%lu", &blk) == 1)
                        break;
        fclose(f);
        ck_assert_uint_gt(blk, 0);
        int fd = open(img, O_RDWR | O_CLOEXEC);
        char junk[64];
        memset(junk, 0x5a, sizeof junk);
        ck_assert_int_eq(pwrite(fd, junk, sizeof junk, (off_t) blk * 4096), (ssize_t) sizeof junk);
        close(fd);
        size_t len;
        char *before = image_bytes(&len);
        ij = open_ok();
        int r = inject_fails(ij, "y", "/victim/other", &o);
        ck_assert_int_eq(r, -EUCLEAN);
        close_ok(ij);
        assert_image_unchanged(before, len);
        free(before);
}
END_TEST

/* ---- larger filesystems: only the groups a write needs are read ---- */

START_TEST(multi_group_filesystem) {
        make_image("2G", "-t", "ext4", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        size_t len = 3 << 20;
        char *data = malloc(len);
        fill_pattern(data, len, 21);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/mid", tmpdir);
        write_host(src, data, len);
        _cleanup_error_ ts_error *err = NULL;
        char name[64];
        for (int i = 0; i < 20; i++) {
                snprintf(name, sizeof name, "/d%d/f", i);
                int r = ts_inject_write_file(ij, src, name, &o, &err);
                ck_assert_msg(r == 0, "%s", ts_error_message(err, r));
        }
        close_ok(ij);
        assert_fsck_clean();
        /* Replace across open/close: the old inode's groups are loaded only
         * for the release. */
        ij = open_ok();
        for (int i = 0; i < 20; i += 3) {
                snprintf(name, sizeof name, "/d%d/f", i);
                inject_ok(ij, "replaced", name, &o);
        }
        close_ok(ij);
        assert_fsck_clean();
        assert_guest_content("/d3/f", "replaced", 8);
        assert_guest_content("/d4/f", data, len);
        free(data);
}
END_TEST

/* First physical block of a guest file, read with libext2fs. */
static blk64_t first_block(const char *guest) {
        struct info fi;
        ck_assert_int_eq(info(guest, &fi), 0);
        ext2_filsys fs;
        ck_assert_int_eq(ext2fs_open(img, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs), 0);
        blk64_t p = 0;
        ck_assert_int_eq(ext2fs_bmap2(fs, fi.ino, (struct ext2_inode *) &fi.in, NULL, 0, 0, NULL, &p), 0);
        ext2fs_close_free(&fs);
        return p;
}

/* mke2fs takes a stripe from a thin device's I/O hints (the pool's block);
 * files of a stripe or more start on a stripe boundary and smaller ones do
 * not waste the space before one. */
START_TEST(data_starts_on_stripe_boundary) {
        make_image("256M", "-t", "ext4", "-b", "4096", "-E", "stride=16,stripe_width=16", NULL);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        size_t len = (1 << 20) + 12345;
        char *data = malloc(len);
        fill_pattern(data, len, 5);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/big", tmpdir);
        write_host(src, data, len);
        _cleanup_error_ ts_error *err = NULL;
        char name[64];
        for (int i = 0; i < 3; i++) {
                /* A one-block file first, so the next free block is off the stripe. */
                snprintf(name, sizeof name, "/small-%d", i);
                inject_ok(ij, "x", name, &o);
                snprintf(name, sizeof name, "/big-%d", i);
                int r = ts_inject_write_file(ij, src, name, &o, &err);
                ck_assert_msg(r == 0, "%s", ts_error_message(err, r));
        }
        close_ok(ij);
        assert_fsck_clean();
        blk64_t s0 = first_block("/small-0"), s1 = first_block("/small-1");
        ck_assert_msg(s0 % 16 || s1 % 16, "small files at %llu and %llu: both on a stripe boundary",
                      (unsigned long long) s0, (unsigned long long) s1);
        for (int i = 0; i < 3; i++) {
                snprintf(name, sizeof name, "/big-%d", i);
                blk64_t b = first_block(name);
                ck_assert_msg(b % 16 == 0, "%s starts at block %llu, not on the 16-block stripe", name,
                              (unsigned long long) b);
                assert_guest_content(name, data, len);
        }
        free(data);
}
END_TEST

/* ---- a crash at each ordered step (TS_INJECT_FAULT) ----
 *
 * A killed process leaves everything it wrote in the page cache, so these
 * cases show what each step has written when the next begins, not that it
 * was flushed first; tests/vm/inject-crash.sh replays a real device's write
 * log up to every flush for that. */

/* The crash tests start from one image: old versions of the objects the
 * operations replace, and bystanders that no crash may touch. */
static char old_data[20000], new_data[30000], tool_data[70000];

enum crash_op { OP_REPLACE, OP_FRESH, OP_MKDIRS, OP_SYMLINK };

static const char *const op_path[] = {
        [OP_REPLACE] = "/etc/app.conf",
        [OP_FRESH] = "/etc/fresh",
        [OP_MKDIRS] = "/new1/new2/f",
        [OP_SYMLINK] = "/link",
};

static void make_crash_base(void) {
        fill_pattern(old_data, sizeof old_data, 31);
        fill_pattern(new_data, sizeof new_data, 32);
        fill_pattern(tool_data, sizeof tool_data, 33);
        make_image("16M", "-t", "ext4", NULL);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/new", tmpdir);
        write_host(src, new_data, sizeof new_data);
        snprintf(src, sizeof src, "%s/old", tmpdir);
        write_host(src, old_data, sizeof old_data);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_inject_write_file(ij, src, "/etc/app.conf", &o, &err), 0);
        snprintf(src, sizeof src, "%s/tool", tmpdir);
        write_host(src, tool_data, sizeof tool_data);
        ck_assert_int_eq(ts_inject_write_file(ij, src, "/bin/tool", &o, &err), 0);
        inject_ok(ij, "other\n", "/etc/other", &o);
        inject_ok(ij, "kept\n", "/keep/dir/file", &o);
        ck_assert_int_eq(ts_inject_symlink(ij, "old-target", "/link", &o, &err), 0);
        close_ok(ij);
        assert_fsck_clean();
}

static int crash_op_run(ts_inject *ij, enum crash_op op, ts_error **err) {
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/new", tmpdir);
        if (op == OP_SYMLINK)
                return ts_inject_symlink(ij, "the-new-target", op_path[op], &o, err);
        return ts_inject_write_file(ij, src, op_path[op], &o, err);
}

static void assert_link(const char *guest, const char *target) {
        struct info fi;
        ck_assert_int_eq(info(guest, &fi), 0);
        ck_assert(LINUX_S_ISLNK(fi.in.i_mode));
        size_t len = strlen(target);
        ck_assert_uint_eq(EXT2_I_SIZE(&fi.in), len);
        ck_assert_msg(memcmp(fi.in.i_block, target, len) == 0, "%s does not point at %s", guest, target);
}

/* What the path of the operation holds: GONE (absent), OLD or NEW, exactly. */
enum { GONE, OLD, NEW };

static void assert_op_state(enum crash_op op, int state) {
        struct info fi;
        if (state == GONE) {
                ck_assert_msg(info(op_path[op], &fi) == -ENOENT, "%s exists", op_path[op]);
                return;
        }
        if (op == OP_SYMLINK)
                assert_link(op_path[op], state == OLD ? "old-target" : "the-new-target");
        else if (state == OLD)
                assert_guest_content(op_path[op], old_data, sizeof old_data);
        else
                assert_guest_content(op_path[op], new_data, sizeof new_data);
}

#define OP_BIT(op) (1u << (op))

/* Everything the operations in `touched` (OP_BIT mask) do not name is as the
 * base image had it. */
static void assert_bystanders(unsigned touched) {
        if (!(touched & OP_BIT(OP_REPLACE)))
                assert_guest_content("/etc/app.conf", old_data, sizeof old_data);
        assert_guest_content("/etc/other", "other\n", 6);
        assert_guest_content("/bin/tool", tool_data, sizeof tool_data);
        assert_guest_content("/keep/dir/file", "kept\n", 5);
        if (!(touched & OP_BIT(OP_SYMLINK)))
                assert_link("/link", "old-target");
}

static char *read_text(const char *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        struct stat st;
        ck_assert_int_eq(fstat(fd, &st), 0);
        char *buf = calloc(1, st.st_size + 1);
        ck_assert_ptr_nonnull(buf);
        ck_assert_int_eq(pread(fd, buf, st.st_size, 0), st.st_size);
        close(fd);
        return buf;
}

/* Runs e2fsck with `opt` on img; returns its exit status and its output. */
static int fsck(const char *opt, char **ret_out) {
        char out[PATH_MAX + 32];
        snprintf(out, sizeof out, "%s/fsck.out", tmpdir);
        int r = RUN(out, "e2fsck", (char *) opt, img);
        *ret_out = read_text(out);
        return r;
}

struct lf_ctx {
        ext2_ino_t found[16];
        int n;
};

static int lf_cb(struct ext2_dir_entry *d, int offset, int blocksize, char *buf, void *priv) {
        struct lf_ctx *c = priv;
        int len = ext2fs_dirent_name_len(d);
        if ((len == 1 && d->name[0] == '.') || (len == 2 && d->name[0] == '.' && d->name[1] == '.'))
                return 0;
        if (c->n < 16)
                c->found[c->n] = d->inode;
        c->n++;
        return 0;
}

/* The inodes e2fsck reconnected into /lost+found. */
static struct lf_ctx lost_found(void) {
        ext2_filsys fs;
        ck_assert_int_eq(ext2fs_open(img, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs), 0);
        ext2_ino_t lf = 0;
        ck_assert_int_eq(ext2fs_lookup(fs, EXT2_ROOT_INO, "lost+found", 10, NULL, &lf), 0);
        struct lf_ctx c = {};
        ck_assert_int_eq(ext2fs_dir_iterate(fs, lf, 0, NULL, lf_cb, &c), 0);
        ext2fs_close_free(&fs);
        return c;
}

/* Which inode a crash may leave allocated and unreferenced. */
enum leak { LEAK_NONE, LEAK_NEW, LEAK_OLD, LEAK_DIR1, LEAK_DIR2 };

struct crash_case {
        enum crash_op op;
        const char *fault;
        int state; /* of op_path */
        int dirs;  /* OP_MKDIRS: how many of /new1, /new1/new2 exist */
        enum leak leak;
};

static const struct crash_case crash_cases[] = {
        /* Replacing a file: the old content until the switch of the entry is
         * flushed, the new one after; a crash between the two flushes leaves
         * exactly one unreferenced inode, the one not named. At file:data
         * nothing marks the new inode or its blocks in use yet (bitmaps and
         * descriptors are written by the flush that follows) and its slot
         * lies past the group's used-inode mark on disk: clean. */
        { OP_REPLACE, "file:data", OLD, 0, LEAK_NONE },
        { OP_REPLACE, "file:inode", OLD, 0, LEAK_NEW },
        { OP_REPLACE, "file:entry", NEW, 0, LEAK_OLD },
        { OP_REPLACE, "file:release", NEW, 0, LEAK_NONE },
        /* A new file: absent, then complete. */
        { OP_FRESH, "file:data", GONE, 0, LEAK_NONE },
        { OP_FRESH, "file:inode", GONE, 0, LEAK_NEW },
        { OP_FRESH, "file:entry", NEW, 0, LEAK_NONE },
        /* A new file under two missing parents: each parent appears empty
         * and complete, one at a time, before the file. A leaked directory's
         * ".." already names its parent, so e2fsck also counts one link too
         * many for the parent until it reconnects the directory. */
        { OP_MKDIRS, "mkdir:inode", GONE, 0, LEAK_DIR1 },
        { OP_MKDIRS, "mkdir:entry", GONE, 1, LEAK_NONE },
        { OP_MKDIRS, "mkdir:inode:2", GONE, 1, LEAK_DIR2 },
        { OP_MKDIRS, "mkdir:entry:2", GONE, 2, LEAK_NONE },
        { OP_MKDIRS, "file:data", GONE, 2, LEAK_NONE },
        { OP_MKDIRS, "file:inode", GONE, 2, LEAK_NEW },
        { OP_MKDIRS, "file:entry", NEW, 2, LEAK_NONE },
        /* Replacing a symlink. */
        { OP_SYMLINK, "symlink:inode", OLD, 0, LEAK_NEW },
        { OP_SYMLINK, "symlink:entry", NEW, 0, LEAK_OLD },
        { OP_SYMLINK, "symlink:release", NEW, 0, LEAK_NONE },
};

/* Runs the operation in a child process that TS_INJECT_FAULT kills. */
static void run_killed(enum crash_op op, const char *point) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                setenv("TS_INJECT_FAULT", point, 1);
                ts_inject *ij = NULL;
                ts_error *err = NULL;
                int r = ts_inject_open(img, 0, &ij, &err);
                if (r >= 0)
                        r = crash_op_run(ij, op, &err);
                if (r >= 0)
                        r = ts_inject_close(ij, &err);
                _exit(r < 0 ? 3 : 0);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: not killed there (status %#x)", point,
                      st);
}

/* The first `dirs` of /new1, /new1/new2 exist, as directories. */
static void assert_dirs(int dirs) {
        static const char *const path[] = { "/new1", "/new1/new2" };
        for (int i = 0; i < 2; i++) {
                struct info fi;
                int r = info(path[i], &fi);
                ck_assert_msg((r == 0) == (i < dirs), "%s %s", path[i], r == 0 ? "exists" : "is missing");
                if (r == 0)
                        ck_assert(LINUX_S_ISDIR(fi.in.i_mode));
        }
}

/* Every inode number e2fsck's output names must be `ino`, except that the
 * parent of a leaked directory may be named for the one link its ".." adds
 * ("Inode P ref count is N, should be N+1"). */
static void assert_only_inode_named(const char *out, ext2_ino_t ino, ext2_ino_t parent, const char *point) {
        for (const char *p = out; (p = strcasestr(p, "inode ")); p += 6) {
                char *end;
                unsigned long n = strtoul(p + 6, &end, 10);
                if (end == p + 6)
                        continue; /* "inode bitmap", "inodes count" */
                if (n == ino)
                        continue;
                unsigned have = 0, want = 0;
                ck_assert_msg(parent && n == parent &&
                                      sscanf(end, " ref count is %u, should be %u.", &have, &want) == 2 &&
                                      want == have + 1,
                              "%s: e2fsck names inode %lu, only %u may be leaked:\n%s", point, n, ino, out);
        }
}

START_TEST(crash_at_each_step) {
        const struct crash_case *c = &crash_cases[_i];
        make_crash_base();
        size_t base_len;
        char *base = image_bytes(&base_len);
        struct info fi;
        ext2_ino_t old_ino = 0;
        if (info(op_path[c->op], &fi) == 0)
                old_ino = fi.ino;

        /* The inode numbers the complete operation uses (allocation is
         * deterministic from the same image). */
        ts_inject *ij = open_ok();
        _cleanup_error_ ts_error *err = NULL;
        int r = crash_op_run(ij, c->op, &err);
        ck_assert_msg(r == 0, "%s", ts_error_message(err, r));
        close_ok(ij);
        assert_fsck_clean();
        assert_op_state(c->op, NEW);
        assert_bystanders(OP_BIT(c->op));
        ck_assert_int_eq(info(op_path[c->op], &fi), 0);
        ext2_ino_t leak_ino[] = { [LEAK_NONE] = 0, [LEAK_NEW] = fi.ino, [LEAK_OLD] = old_ino };
        ext2_ino_t dir1 = 0, dir2 = 0;
        if (c->op == OP_MKDIRS) {
                ck_assert_int_eq(info("/new1", &fi), 0);
                dir1 = fi.ino;
                ck_assert_int_eq(info("/new1/new2", &fi), 0);
                dir2 = fi.ino;
        }
        ext2_ino_t leaked = c->leak == LEAK_DIR1 ? dir1 : c->leak == LEAK_DIR2 ? dir2 : leak_ino[c->leak];
        ext2_ino_t parent = c->leak == LEAK_DIR1 ? EXT2_ROOT_INO : c->leak == LEAK_DIR2 ? dir1 : 0;

        write_host(img, base, base_len);
        free(base);
        run_killed(c->op, c->fault);

        /* What the guest sees without a check. */
        assert_op_state(c->op, c->state);
        assert_bystanders(OP_BIT(c->op));
        if (c->op == OP_MKDIRS)
                assert_dirs(c->dirs);

        _cleanup_free_ char *out = NULL;
        r = fsck("-fn", &out);
        if (c->leak == LEAK_NONE) {
                ck_assert_msg(r == 0, "%s: e2fsck -fn exit %d:\n%s", c->fault, r, out);
                return;
        }
        /* Exactly one leaked inode: found, and nothing else named. */
        ck_assert_msg(r == 4, "%s: e2fsck -fn exit %d, expected a leaked inode %u:\n%s", c->fault, r, leaked,
                      out);
        assert_only_inode_named(out, leaked, parent, c->fault);

        /* e2fsck repairs it without touching anyone's data. */
        free(out);
        out = NULL;
        r = fsck("-fy", &out);
        ck_assert_msg(r == 1, "%s: e2fsck -fy exit %d:\n%s", c->fault, r, out);
        free(out);
        out = NULL;
        r = fsck("-fn", &out);
        ck_assert_msg(r == 0, "%s: not clean after repair (exit %d):\n%s", c->fault, r, out);
        assert_op_state(c->op, c->state);
        assert_bystanders(OP_BIT(c->op));
        if (c->op == OP_MKDIRS)
                assert_dirs(c->dirs);
        /* The leaked inode, whole, is all that went to lost+found. */
        struct lf_ctx lf = lost_found();
        ck_assert_int_eq(lf.n, 1);
        ck_assert_uint_eq(lf.found[0], leaked);
}
END_TEST

/* ---- allocation failures ---- */

/* open; a new file under two missing parents; a replacement; a symlink
 * replaced; the mount points; close. The first failure ends it, and the
 * handle is closed as a caller would. */
static int alloc_sequence(ts_error **err) {
        ts_inject *ij = NULL;
        int r = ts_inject_open(img, 0, &ij, err);
        if (r < 0)
                return r;
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/new", tmpdir);
        r = ts_inject_write_file(ij, src, "/new1/new2/f", &o, err);
        if (r >= 0)
                r = ts_inject_write_file(ij, src, "/etc/app.conf", &o, err);
        if (r >= 0)
                r = ts_inject_symlink(ij, "the-new-target", "/link", &o, err);
        if (r >= 0)
                r = ts_inject_mountpoints(ij, err);
        /* Close after a failure too: every operation left the image
         * consistent, so the final flush must succeed. */
        ts_error *cerr = NULL;
        int c = ts_inject_close(ij, &cerr);
        if (r >= 0) {
                r = c;
                ts_error_move(err, &cerr);
        } else if (c < 0) {
                ts_error_prefix(err, r, "then close failed (%s)", ts_error_message(cerr, c));
                r = -EIO;
        }
        ts_error_free(cerr);
        return r < 0 ? r : 0;
}

START_TEST(allocation_failures) {
        make_crash_base();
        size_t base_len;
        char *base = image_bytes(&base_len);
        unsigned long n, enomem = 0;
        for (n = 1; n < 5000; n++) {
                write_host(img, base, base_len);
                _cleanup_error_ ts_error *err = NULL;
                ts_failalloc_arm(n);
                int r = alloc_sequence(&err);
                int fired = ts_failalloc_fired();
                ts_failalloc_arm(0);
                ck_assert_msg(r == 0 || (fired && r == -ENOMEM), "allocation %lu: %s", n,
                              ts_error_message(err, r));
                if (r < 0) {
                        /* The message, unless making the error object was
                         * the allocation that failed. */
                        ck_assert_msg(!err || (err->errnum == ENOMEM && err->msg), "allocation %lu", n);
                        enomem++;
                }
                char out[PATH_MAX + 32];
                snprintf(out, sizeof out, "%s/fsck.out", tmpdir);
                int f = RUN(out, "e2fsck", "-fn", img);
                ck_assert_msg(f == 0, "allocation %lu (%s): e2fsck -fn exit %d", n, ts_error_message(err, r), f);
                /* Each object is old or new, whole; the rest untouched. */
                struct info fi;
                bool fresh = info("/new1/new2/f", &fi) == 0;
                if (fresh)
                        assert_guest_content("/new1/new2/f", new_data, sizeof new_data);
                assert_op_state(OP_REPLACE, info("/etc/app.conf", &fi) == 0 &&
                                                            EXT2_I_SIZE(&fi.in) == sizeof new_data
                                                    ? NEW
                                                    : OLD);
                ck_assert_int_eq(info("/link", &fi), 0);
                assert_op_state(OP_SYMLINK, EXT2_I_SIZE(&fi.in) == strlen("the-new-target") ? NEW : OLD);
                assert_bystanders(OP_BIT(OP_REPLACE) | OP_BIT(OP_SYMLINK));
                if (r == 0 && !fired)
                        break;
        }
        free(base);
        ck_assert_uint_lt(n, 5000);
        /* The whole sequence did run at the end, and failures were met on the
         * way: the counting reaches inject's own allocations. */
        ck_assert_uint_gt(enomem, 10);
        assert_op_state(OP_MKDIRS, NEW);
        assert_op_state(OP_REPLACE, NEW);
        assert_op_state(OP_SYMLINK, NEW);
        struct info fi;
        ck_assert_int_eq(info("/proc", &fi), 0);
        printf("allocation_failures: %lu runs, %lu failed with ENOMEM\n", n, enomem);
}
END_TEST

/* The old file's blocks lie in a group that nothing before its release
 * loads: the release is the first to need that group's bitmaps. */
START_TEST(allocation_failures_release_loads_a_group) {
        fill_pattern(old_data, sizeof old_data, 31);
        fill_pattern(new_data, sizeof new_data, 32);
        make_image("32M", "-t", "ext4", "-b", "1024", NULL);
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/fill", tmpdir);
        size_t fill_len = 10 << 20;
        char *fill = calloc(1, fill_len);
        ck_assert_ptr_nonnull(fill);
        write_host(src, fill, fill_len);
        free(fill);
        ts_inject *ij = open_ok();
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        _cleanup_error_ ts_error *err = NULL;
        inject_ok(ij, "other\n", "/etc/other", &o);
        ck_assert_int_eq(ts_inject_write_file(ij, src, "/fill", &o, &err), 0);
        snprintf(src, sizeof src, "%s/old", tmpdir);
        write_host(src, old_data, sizeof old_data);
        ck_assert_int_eq(ts_inject_write_file(ij, src, "/etc/app.conf", &o, &err), 0);
        close_ok(ij);
        debugfs_w("rm /fill");
        assert_fsck_clean();
        ext2_filsys fs;
        struct info fi;
        ck_assert_int_eq(info("/etc/app.conf", &fi), 0);
        ck_assert_int_eq(ext2fs_open(img, EXT2_FLAG_64BITS, 0, 0, unix_io_manager, &fs), 0);
        blk64_t pblk = 0;
        ck_assert_int_eq(ext2fs_bmap2(fs, fi.ino, NULL, NULL, 0, 0, NULL, &pblk), 0);
        ck_assert_uint_gt(ext2fs_group_of_blk2(fs, pblk), 0);
        ext2fs_close_free(&fs);
        snprintf(src, sizeof src, "%s/new", tmpdir);
        write_host(src, new_data, sizeof new_data);

        size_t base_len;
        char *base = image_bytes(&base_len);
        unsigned long n, enomem = 0;
        for (n = 1; n < 1000; n++) {
                write_host(img, base, base_len);
                ts_error_free(err);
                err = NULL;
                _cleanup_error_ ts_error *cerr = NULL;
                int c = 0;
                /* No check assertion while armed: they allocate too. */
                ts_failalloc_arm(n);
                int r = ts_inject_open(img, 0, &ij, &err);
                if (r >= 0) {
                        r = ts_inject_write_file(ij, src, "/etc/app.conf", &o, &err);
                        c = ts_inject_close(ij, &cerr);
                }
                int fired = ts_failalloc_fired();
                ts_failalloc_arm(0);
                ck_assert_msg(c == 0, "allocation %lu: %s; close: %s", n, ts_error_message(err, r),
                              ts_error_message(cerr, c));
                ck_assert_msg(r == 0 || (fired && r == -ENOMEM), "allocation %lu: %s", n,
                              ts_error_message(err, r));
                enomem += r < 0;
                assert_fsck_clean();
                assert_guest_content("/etc/other", "other\n", 6);
                ck_assert_int_eq(info("/etc/app.conf", &fi), 0);
                assert_op_state(OP_REPLACE, EXT2_I_SIZE(&fi.in) == sizeof new_data ? NEW : OLD);
                if (r == 0 && !fired)
                        break;
        }
        free(base);
        ck_assert_uint_lt(n, 1000);
        ck_assert_uint_gt(enomem, 5);
        assert_op_state(OP_REPLACE, NEW);
}
END_TEST

/* Blocks an inode holds (data, extent tree), in filesystem blocks. */
static uint64_t inode_blocks(const char *guest, unsigned bs) {
        struct info fi;
        ck_assert_int_eq(info(guest, &fi), 0);
        uint64_t sectors = fi.in.i_blocks;
        return sectors * 512 / bs;
}

static void usage_ok(uint64_t *ret_bytes, uint64_t *ret_inodes) {
        ts_inject *ij = open_ok();
        _cleanup_error_ ts_error *err = NULL;
        int r = ts_inject_usage(ij, ret_bytes, ret_inodes, &err);
        ck_assert_msg(r == 0, "usage: %s", ts_error_message(err, r));
        close_ok(ij);
}

/* Usage counts the files' blocks and inodes only (no metadata, journal,
 * reserved inodes), on filesystems with and without a journal; lstat does
 * not follow a final symlink but resolves the parents. */
START_TEST(lstat_and_usage) {
        static const char *const flavours[] = { "ext2", "ext4" };
        for (size_t k = 0; k < TS_ARRAY_SIZE(flavours); k++) {
                make_image("32M", "-t", flavours[k], "-b", "1024", NULL);
                uint64_t b0, i0, b1, i1;
                usage_ok(&b0, &i0);
                ck_assert_uint_eq(i0, 2); /* the root and lost+found */
                ck_assert_uint_eq(b0, (inode_blocks("/", 1024) + inode_blocks("/lost+found", 1024)) * 1024);

                ts_inject *ij = open_ok();
                ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
                _cleanup_error_ ts_error *err = NULL;
                static char big[1 << 20];
                memset(big, 'x', sizeof big);
                char src[PATH_MAX + 16];
                snprintf(src, sizeof src, "%s/big", tmpdir);
                write_host(src, big, sizeof big);
                ck_assert_int_eq(ts_inject_write_file(ij, src, "/data/big", &o, &err), 0);
                ck_assert_int_eq(ts_inject_symlink(ij, "/nowhere", "/dangling", &o, &err), 0);
                ck_assert_int_eq(ts_inject_symlink(ij, "data", "/d", &o, &err), 0);
                uint32_t ino, mode;
                ck_assert_int_eq(ts_inject_lstat(ij, "/dangling", &ino, &mode, &err), 0);
                ck_assert(S_ISLNK(mode));
                ck_assert_int_eq(ts_inject_lstat(ij, "/d", &ino, &mode, &err), 0);
                ck_assert(S_ISLNK(mode));
                ck_assert_int_eq(ts_inject_lstat(ij, "/d/big", &ino, &mode, &err), 0);
                ck_assert(S_ISREG(mode));
                ck_assert_uint_eq(mode & 07777, 0644);
                ck_assert_int_eq(ts_inject_lstat(ij, "/data", &ino, &mode, &err), 0);
                ck_assert(S_ISDIR(mode));
                ck_assert_int_eq(ts_inject_lstat(ij, "/nope", &ino, &mode, &err), -ENOENT);
                ck_assert_int_eq(ts_inject_lstat(ij, "/dangling/x", &ino, &mode, NULL), -ENOENT);
                ck_assert_int_eq(ts_inject_lstat(ij, "/data/big/x", &ino, &mode, NULL), -ENOTDIR);
                close_ok(ij);
                assert_fsck_clean();

                usage_ok(&b1, &i1);
                ck_assert_uint_eq(i1, i0 + 4);
                ck_assert_uint_eq(b1 - b0, (inode_blocks("/data", 1024) + inode_blocks("/data/big", 1024)) *
                                                   1024);
                ck_assert_uint_ge(b1 - b0, sizeof big);
        }
}
END_TEST

static Suite *inject_suite(void) {
        Suite *s = suite_create("inject");
        TCase *tc = tcase_create("write");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, write_sets_attributes);
        tcase_add_test(tc, write_parent_owner_and_mtime_past_2038);
        tcase_add_test(tc, write_empty_file);
        tcase_add_test(tc, write_keeps_holes);
        tcase_add_test(tc, write_100mib_file);
        tcase_add_test(tc, write_from_memfd);
        tcase_add_test(tc, write_rejects_bad_input);
        tcase_add_test(tc, write_on_other_ext_flavours);
        tcase_add_test(tc, replace_existing_file);
        tcase_add_test(tc, replace_hard_linked_file_keeps_other_link);
        tcase_add_test(tc, final_symlink_is_replaced_not_followed);
        tcase_add_test(tc, final_symlink_refused_by_option);
        tcase_add_test(tc, replace_directory_refused);
        tcase_add_test(tc, dotdot_stops_at_guest_root);
        tcase_add_test(tc, symlinks_resolve_inside_guest);
        tcase_add_test(tc, symlink_loop_is_refused);
        tcase_add_test(tc, file_where_directory_expected);
        tcase_add_test(tc, no_mkdirs_option);
        tcase_add_test(tc, mkdir_symlink_mountpoints);
        tcase_add_test(tc, mountpoint_tmp_is_sticky);
        tcase_add_test(tc, many_entries_grow_directory);
        tcase_add_test(tc, no_space_for_blocks);
        tcase_add_test(tc, no_space_midway_rolls_back);
        tcase_add_test(tc, no_space_for_inodes);
        tcase_add_test(tc, refuses_non_ext);
        tcase_add_test(tc, open_nofollow_refuses_a_symlink);
        tcase_add_test(tc, open_decides_on_what_it_opened);
        tcase_add_test(tc, refuses_unsupported_features);
        tcase_add_test(tc, refuses_journal_needing_recovery);
        tcase_add_test(tc, failed_group_load_keeps_the_group_used);
        tcase_add_test(tc, refuses_bad_superblock);
        tcase_add_test(tc, refuses_overlapping_group_metadata);
        tcase_add_test(tc, refuses_entry_pointing_at_free_inode);
        tcase_add_test(tc, refuses_corrupt_directory_block);
        tcase_add_test(tc, multi_group_filesystem);
        tcase_add_test(tc, data_starts_on_stripe_boundary);
        tcase_add_test(tc, lstat_and_usage);
        suite_add_tcase(s, tc);

        tc = tcase_create("scale");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, lying_descriptors_load_each_group_once);
        suite_add_tcase(s, tc);

        tc = tcase_create("crash");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_loop_test(tc, crash_at_each_step, 0, TS_ARRAY_SIZE(crash_cases));
        suite_add_tcase(s, tc);

        tc = tcase_create("failalloc");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 600);
        tcase_add_test(tc, allocation_failures);
        tcase_add_test(tc, allocation_failures_release_loads_a_group);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(inject_suite());
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
