/* provision/layer: the agent layer's tar. Read back with libarchive and
 * zlib (independent readers): entries sorted, parents first, root-owned,
 * fixed times, exact contents; the digests are those of the bytes; the same
 * entries give the same bytes. */
#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "oci/digest.h"
#include "provision/layer.h"

static int memfd_with(const void *p, size_t n) {
        int fd = memfd_create("content", MFD_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, p, n), (ssize_t) n);
        return fd;
}

/* The blob gunzipped with zlib. */
static uint8_t *gunzip(const prov_layer *l, size_t *ret_len) {
        size_t cap = l->tar_len + 1;
        uint8_t *out = malloc(cap);
        ck_assert_ptr_nonnull(out);
        z_stream z = { .next_in = l->blob, .avail_in = (uInt) l->blob_len, .next_out = out,
                       .avail_out = (uInt) cap };
        ck_assert_int_eq(inflateInit2(&z, 15 + 16), Z_OK);
        ck_assert_int_eq(inflate(&z, Z_FINISH), Z_STREAM_END);
        *ret_len = z.total_out;
        inflateEnd(&z);
        return out;
}

static prov_layer build(int fd, size_t size) {
        prov_layer_entry e[] = {
                { "/tmp", PROV_LAYER_DIR, 01777, -1, 0 },
                { "/.hpcc/agent", PROV_LAYER_FILE, 0755, fd, size },
                { "/proc", PROV_LAYER_DIR, 0555, -1, 0 },
                { "/.hpcc", PROV_LAYER_DIR, 0755, -1, 0 },
        };
        prov_layer l;
        ts_error *err = NULL;
        int r = prov_layer_build(e, 4, &l, &err);
        ck_assert_msg(r == 0, "build: %s", ts_error_message(err, r));
        ck_assert_str_eq(e[0].path, "/.hpcc");
        ck_assert_str_eq(e[3].path, "/tmp");
        return l;
}

START_TEST(reads_back_exactly) {
        static uint8_t content[3 << 20];
        for (size_t i = 0; i < sizeof content; i++)
                content[i] = (uint8_t) (i * 7 + i / 4096);
        int fd = memfd_with(content, sizeof content);
        prov_layer l = build(fd, sizeof content);
        ck_assert_uint_gt(l.blob_len, 18);
        /* gzip: magic, deflate, no flags, a zero time. */
        ck_assert_uint_eq(l.blob[0], 0x1f);
        ck_assert_uint_eq(l.blob[1], 0x8b);
        ck_assert_uint_eq(l.blob[3], 0);
        ck_assert_uint_eq(l.blob[4] | l.blob[5] | l.blob[6] | l.blob[7], 0);
        char d[TS_DIGEST_MAX];
        ck_assert_int_eq(ts_digest_buffer(l.blob, l.blob_len, d), 0);
        ck_assert_str_eq(d, l.digest);
        size_t tar_len;
        uint8_t *tar = gunzip(&l, &tar_len);
        ck_assert_uint_eq(tar_len, l.tar_len);
        ck_assert_int_eq(ts_digest_buffer(tar, tar_len, d), 0);
        ck_assert_str_eq(d, l.diff_id);

        struct archive *a = archive_read_new();
        archive_read_support_format_tar(a);
        ck_assert_int_eq(archive_read_open_memory(a, tar, tar_len), ARCHIVE_OK);
        static const struct { const char *name; unsigned type, perm; } want[] = {
                { ".hpcc/", AE_IFDIR, 0755 }, { ".hpcc/agent", AE_IFREG, 0755 },
                { "proc/", AE_IFDIR, 0555 }, { "tmp/", AE_IFDIR, 01777 },
        };
        struct archive_entry *ae;
        uint8_t *back = malloc(sizeof content);
        for (size_t i = 0; i < 4; i++) {
                ck_assert_int_eq(archive_read_next_header(a, &ae), ARCHIVE_OK);
                ck_assert_str_eq(archive_entry_pathname(ae), want[i].name);
                ck_assert_uint_eq(archive_entry_filetype(ae), want[i].type);
                ck_assert_uint_eq(archive_entry_perm(ae), want[i].perm);
                ck_assert_int_eq(archive_entry_uid(ae), 0);
                ck_assert_int_eq(archive_entry_gid(ae), 0);
                ck_assert_int_eq(archive_entry_mtime(ae), PROV_LAYER_MTIME);
                ck_assert(!archive_entry_atime_is_set(ae));
                ck_assert(!archive_entry_ctime_is_set(ae));
                ck_assert(!archive_entry_uname(ae) || !*archive_entry_uname(ae));
                ck_assert(!archive_entry_gname(ae) || !*archive_entry_gname(ae));
                if (want[i].type == AE_IFREG) {
                        ck_assert_int_eq(archive_entry_size(ae), (int64_t) sizeof content);
                        ck_assert_int_eq(archive_read_data(a, back, sizeof content), (ssize_t) sizeof content);
                        ck_assert_int_eq(memcmp(back, content, sizeof content), 0);
                }
        }
        ck_assert_int_eq(archive_read_next_header(a, &ae), ARCHIVE_EOF);
        archive_read_free(a);
        free(back);
        free(tar);

        prov_layer again = build(fd, sizeof content);
        ck_assert_uint_eq(again.blob_len, l.blob_len);
        ck_assert_int_eq(memcmp(again.blob, l.blob, l.blob_len), 0);
        ck_assert_str_eq(again.diff_id, l.diff_id);
        prov_layer_done(&again);
        prov_layer_done(&l);
        close(fd);
}
END_TEST

START_TEST(refuses_short_file_and_relative_path) {
        int fd = memfd_with("abc", 3);
        prov_layer_entry e[] = { { "/agent", PROV_LAYER_FILE, 0755, fd, 10 } };
        prov_layer l;
        ts_error *err = NULL;
        ck_assert_int_eq(prov_layer_build(e, 1, &l, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "/agent ended at 3 of its 10 bytes"));
        err = ts_error_free(err);
        prov_layer_entry rel[] = { { "agent", PROV_LAYER_DIR, 0755, -1, 0 } };
        ck_assert_int_eq(prov_layer_build(rel, 1, &l, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "'agent' is not absolute"));
        ts_error_free(err);
        close(fd);
}
END_TEST

/* A layer built in two steps (the head, then the rest) is the same bytes. */
START_TEST(steps_give_the_same_bytes) {
        static uint8_t content[1 << 20];
        memset(content, 'a', sizeof content);
        int fd = memfd_with(content, sizeof content);
        prov_layer whole = build(fd, sizeof content);
        prov_layer_entry head[] = {
                { "/.hpcc/agent", PROV_LAYER_FILE, 0755, fd, sizeof content },
                { "/.hpcc", PROV_LAYER_DIR, 0755, -1, 0 },
        };
        prov_layer_entry tail[] = {
                { "/tmp", PROV_LAYER_DIR, 01777, -1, 0 },
                { "/proc", PROV_LAYER_DIR, 0555, -1, 0 },
        };
        prov_layer_builder *b = NULL;
        ts_error *err = NULL;
        ck_assert_int_eq(prov_layer_begin(&b, &err), 0);
        ck_assert_int_eq(prov_layer_add(b, head, 2, &err), 0);
        prov_layer_entry early[] = { { "/.a", PROV_LAYER_DIR, 0755, -1, 0 } };
        ck_assert_int_eq(prov_layer_add(b, early, 1, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "/.a does not sort after /.hpcc/agent"));
        err = ts_error_free(err);
        ck_assert_int_eq(prov_layer_add(b, tail, 2, &err), 0);
        prov_layer steps;
        ck_assert_int_eq(prov_layer_end(b, &steps, &err), 0);
        ck_assert_uint_eq(steps.blob_len, whole.blob_len);
        ck_assert_int_eq(memcmp(steps.blob, whole.blob, whole.blob_len), 0);
        ck_assert_str_eq(steps.digest, whole.digest);
        ck_assert_str_eq(steps.diff_id, whole.diff_id);
        prov_layer_done(&steps);
        prov_layer_done(&whole);
        close(fd);
}
END_TEST

static Suite *layer_suite(void) {
        Suite *s = suite_create("prov-layer");
        TCase *tc = tcase_create("layer");
        tcase_add_test(tc, reads_back_exactly);
        tcase_add_test(tc, refuses_short_file_and_relative_path);
        tcase_add_test(tc, steps_give_the_same_bytes);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(layer_suite());
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
