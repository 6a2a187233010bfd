/* Offline tests of everything in devmapper/ that needs no kernel: table
 * building and parsing, status lines as the kernel prints them, sizing
 * rules, names, the metadata classifier and the pool state file. The same
 * code paths run against the kernel in the VM lane (tests/vm/). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devmapper/pool.h"
#include "devmapper/poolprov.h"
#include "devmapper/poolstate.h"
#include "devmapper/thin.h"
#include "tests/unit/ts-check.h"

START_TEST(table_roundtrip) {
        ts_pool_params p = { .data_block_sectors = 128, .low_water_blocks = 32,
                             .skip_block_zeroing = true, .error_if_no_space = true };
        _cleanup_free_ char *t = NULL;
        ck_assert_int_eq(ts_pool_format_table("7:1", "7:0", &p, &t), 0);
        ck_assert_str_eq(t, "7:1 7:0 128 32 2 skip_block_zeroing error_if_no_space");

        char meta[32], data[32];
        ts_pool_params q;
        ck_assert_int_eq(ts_pool_parse_table(t, meta, data, &q), 0);
        ck_assert_str_eq(meta, "7:1");
        ck_assert_str_eq(data, "7:0");
        ck_assert_uint_eq(q.data_block_sectors, 128);
        ck_assert_uint_eq(q.low_water_blocks, 32);
        ck_assert(q.skip_block_zeroing && q.error_if_no_space);
        ck_assert(!q.ignore_discard && !q.no_discard_passdown);
}
END_TEST

START_TEST(table_plain_and_bad) {
        ts_pool_params p = { .data_block_sectors = 2048 };
        _cleanup_free_ char *t = NULL;
        ck_assert_int_eq(ts_pool_format_table("253:1", "253:2", &p, &t), 0);
        ck_assert_str_eq(t, "253:1 253:2 2048 0");
        char meta[32], data[32];
        ts_pool_params q;
        ck_assert_int_eq(ts_pool_parse_table(t, meta, data, &q), 0);
        ck_assert_uint_eq(q.data_block_sectors, 2048);
        ck_assert_int_eq(ts_pool_parse_table("7:1 7:0 x 0", meta, data, &q), -EINVAL);
        ck_assert_int_eq(ts_pool_parse_table("7:1 7:0 128 0 2 skip_block_zeroing", meta, data, &q),
                         -EINVAL);
}
END_TEST

START_TEST(pool_status_lines) {
        /* Parsing asks the kernel nothing: on a host without device-mapper,
         * libdevmapper would make /dev/mapper/control the first time it did. */
        bool had_control = access("/dev/mapper/control", F_OK) == 0;
        ts_pool_status s;
        ck_assert_int_eq(ts_pool_parse_status("3 141/4096 10/16384 - rw discard_passdown "
                                              "queue_if_no_space - 1024", &s), 0);
        ck_assert_uint_eq(s.transaction_id, 3);
        ck_assert_uint_eq(s.used_meta_blocks, 141);
        ck_assert_uint_eq(s.total_meta_blocks, 4096);
        ck_assert_uint_eq(s.used_data_blocks, 10);
        ck_assert_uint_eq(s.total_data_blocks, 16384);
        ck_assert(!s.read_only && !s.out_of_data_space && !s.needs_check && !s.fail);

        ck_assert_int_eq(ts_pool_parse_status("1 200/4096 16384/16384 - out_of_data_space "
                                              "discard_passdown queue_if_no_space - 1024", &s), 0);
        ck_assert(s.out_of_data_space);
        ck_assert(!s.read_only);

        ck_assert_int_eq(ts_pool_parse_status("0 141/4096 10/16384 - ro no_discard_passdown "
                                              "error_if_no_space needs_check 1024", &s), 0);
        ck_assert(s.read_only && s.needs_check && s.error_if_no_space);

        ck_assert_int_eq(ts_pool_parse_status("Fail", &s), 0);
        ck_assert(s.fail);
        ck_assert_int_eq(ts_pool_parse_status("garbage", &s), -EINVAL);
        ck_assert_int_eq(access("/dev/mapper/control", F_OK) == 0, had_control);
}
END_TEST

START_TEST(thin_status_lines) {
        ts_thin_status s;
        ck_assert_int_eq(ts_thin_parse_status("2048 4095", &s), 0);
        ck_assert_uint_eq(s.mapped_sectors, 2048);
        ck_assert_uint_eq(s.highest_mapped_sector, 4095);
        ck_assert(!s.fail);
        ck_assert_int_eq(ts_thin_parse_status("0 -", &s), 0);
        ck_assert_uint_eq(s.mapped_sectors, 0);
        ck_assert_int_eq(ts_thin_parse_status("Fail", &s), 0);
        ck_assert(s.fail);
}
END_TEST

START_TEST(ids_names_sizes) {
        ck_assert_int_eq(ts_thin_check_id(0, NULL), 0);
        ck_assert_int_eq(ts_thin_check_id(TS_THIN_MAX_ID, NULL), 0);
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_thin_check_id(1U << 24, &err), -ERANGE);
        ck_assert_ptr_nonnull(strstr(err->msg, "24-bit"));

        ck_assert_int_eq(ts_pool_check_name("tp-1.a_b", NULL), 0);
        ck_assert_int_eq(ts_pool_check_name("", NULL), -EINVAL);
        ck_assert_int_eq(ts_pool_check_name("-x", NULL), -EINVAL);
        ck_assert_int_eq(ts_pool_check_name("a/b", NULL), -EINVAL);
        ck_assert_int_eq(ts_pool_check_name("a b", NULL), -EINVAL);
        char longname[80];
        memset(longname, 'a', sizeof longname - 1);
        longname[sizeof longname - 1] = 0;
        ck_assert_int_eq(ts_pool_check_name(longname, NULL), -EINVAL);

        ck_assert_int_eq(ts_pool_check_block_size(64 << 10, NULL), 0);
        ck_assert_int_eq(ts_pool_check_block_size(1 << 30, NULL), 0);
        ck_assert_int_eq(ts_pool_check_block_size(32 << 10, NULL), -EINVAL);
        ck_assert_int_eq(ts_pool_check_block_size(96 << 10, NULL), -EINVAL);
        ck_assert_int_eq(ts_pool_check_block_size(2ULL << 30, NULL), -EINVAL);
}
END_TEST

START_TEST(meta_sizing) {
        /* Small pools get the 2 MiB minimum plus headroom, rounded to 1 MiB. */
        ck_assert_uint_eq(ts_pool_meta_size(64ULL << 20, 64 << 10, 0), 2ULL << 20);
        ck_assert_uint_eq(ts_pool_meta_size(64ULL << 20, 64 << 10, 1024), 5ULL << 20);
        /* 1 TiB in 64 KiB blocks: 16 Mi blocks * 48 B = 768 MiB, + 4 MiB. */
        ck_assert_uint_eq(ts_pool_meta_size(1ULL << 40, 64 << 10, 1024), 772ULL << 20);
        /* Capped at the kernel's limit. */
        ck_assert_uint_eq(ts_pool_meta_size(1ULL << 50, 64 << 10, 1024), TS_POOL_MAX_META_BYTES);
}
END_TEST

START_TEST(meta_classifier) {
        unsigned char buf[4096] = { 0 };
        ck_assert_int_eq(ts_poolprov_classify_meta(buf, sizeof buf), TS_POOLPROV_META_ZERO);
        /* 27022010 little-endian at offset 32: thin-pool metadata. */
        uint32_t magic = 27022010;
        for (int i = 0; i < 4; i++)
                buf[32 + i] = (unsigned char) (magic >> (8 * i));
        ck_assert_int_eq(ts_poolprov_classify_meta(buf, sizeof buf), TS_POOLPROV_META_THIN);
        memset(buf, 0, sizeof buf);
        buf[1080] = 0x53; /* say, an ext4 superblock */
        ck_assert_int_eq(ts_poolprov_classify_meta(buf, sizeof buf), TS_POOLPROV_META_OTHER);
        ck_assert_int_eq(ts_poolprov_classify_meta(buf, 10), TS_POOLPROV_META_ZERO);
}
END_TEST

START_TEST(meta_superblock) {
        unsigned char buf[4096] = { 0 };
        ts_poolprov_sb sb;
        ck_assert_int_eq(ts_poolprov_parse_meta(buf, sizeof buf, &sb), -EINVAL);
        uint64_t magic = 27022010, blocks = 0x123456789ULL;
        for (int i = 0; i < 8; i++) {
                buf[32 + i] = (unsigned char) (magic >> (8 * i));
                buf[64 + i] = (unsigned char) (blocks >> (8 * i)); /* the data space map's root */
        }
        buf[336] = 128; /* 64 KiB blocks, in sectors */
        ck_assert_int_eq(ts_poolprov_parse_meta(buf, sizeof buf, &sb), 0);
        ck_assert_uint_eq(sb.data_block_sectors, 128);
        ck_assert_uint_eq(sb.data_blocks, blocks);
        ck_assert_int_eq(ts_poolprov_parse_meta(buf, 300, &sb), -EINVAL);
}
END_TEST

static ts_poolspec sample_spec(void) {
        return (ts_poolspec) {
                .name = "tp",
                .data = { .path = "/var/lib/tp/data", .is_file = true, .size = 1ULL << 30 },
                .meta = { .path = "/dev/vdb", .is_file = false, .size = 64ULL << 20 },
                .params = { .data_block_sectors = 128, .low_water_blocks = 7,
                            .no_discard_passdown = true },
        };
}

START_TEST(state_roundtrip) {
        ts_poolspec s = sample_spec();
        _cleanup_free_ char *json = NULL;
        ck_assert_int_eq(ts_poolstate_to_json(&s, &json), 0);
        _cleanup_poolspec_ ts_poolspec *back = NULL;
        ck_assert_int_eq(ts_poolstate_from_json(json, &back, NULL), 0);
        ck_assert(ts_poolstate_equal(&s, back));
        ck_assert_str_eq(back->meta.path, "/dev/vdb");
        ck_assert(!back->meta.is_file);

        back->params.low_water_blocks = 8;
        ck_assert(!ts_poolstate_equal(&s, back));
}
END_TEST

START_TEST(state_file_io) {
        char dir[] = "/tmp/ts-state-XXXXXX";
        ck_assert_ptr_nonnull(mkdtemp(dir));
        char sub[64];
        snprintf(sub, sizeof sub, "%s/pools", dir);
        ts_poolspec s = sample_spec();
        ck_assert_int_eq(ts_poolstate_write(sub, &s, NULL), 0);
        _cleanup_poolspec_ ts_poolspec *back = NULL;
        ck_assert_int_eq(ts_poolstate_read(sub, "tp", &back, NULL), 0);
        ck_assert(ts_poolstate_equal(&s, back));

        _cleanup_error_ ts_error *err = NULL;
        ts_poolspec *none = NULL;
        ck_assert_int_eq(ts_poolstate_read(sub, "other", &none, &err), -ENOENT);
        ck_assert_ptr_nonnull(strstr(err->msg, "no state for pool other"));
        ck_assert_ptr_null(none);

        ck_assert_int_eq(ts_poolstate_remove(sub, "tp", NULL), 0);
        ck_assert_int_eq(ts_poolstate_remove(sub, "tp", NULL), 0);
        ck_assert_int_eq(ts_poolstate_read(sub, "tp", &none, NULL), -ENOENT);
        rmdir(sub);
        rmdir(dir);
}
END_TEST

START_TEST(state_device_ids) {
        ts_poolspec s = sample_spec();
        s.meta.id = "wwid:naa.600508b1001c";
        _cleanup_free_ char *json = NULL;
        ck_assert_int_eq(ts_poolstate_to_json(&s, &json), 0);
        _cleanup_poolspec_ ts_poolspec *back = NULL;
        ck_assert_int_eq(ts_poolstate_from_json(json, &back, NULL), 0);
        ck_assert_str_eq(back->meta.id, "wwid:naa.600508b1001c");
        ck_assert_ptr_null(back->data.id);
        ck_assert(ts_poolstate_equal(&s, back));
        /* A state written before ids were recorded. */
        ts_poolspec *old = NULL;
        ck_assert_int_eq(ts_poolstate_from_json("{\"version\":1,\"name\":\"tp\",\"data\":{\"path\":\"/d\",\"kind\":"
                                                "\"file\",\"size\":65536},\"meta\":{\"path\":\"/m\",\"kind\":"
                                                "\"block\",\"size\":2097152},\"block_size\":65536,"
                                                "\"low_water_blocks\":0,\"skip_block_zeroing\":false,"
                                                "\"ignore_discard\":false,\"no_discard_passdown\":false,"
                                                "\"error_if_no_space\":false}",
                                                &old, NULL),
                         0);
        ck_assert_ptr_null(old->meta.id);
        ts_poolstate_free(old);
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_poolstate_from_json("{\"version\":1,\"name\":\"tp\",\"data\":{\"path\":\"/d\",\"kind\":"
                                                "\"block\",\"size\":1,\"id\":7}}",
                                                &old, &err),
                         -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "'id' has the wrong type"));
}
END_TEST

static char *make_dir(char tmpl[static 32]) {
        strcpy(tmpl, "/tmp/ts-state-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmpl));
        return tmpl;
}

START_TEST(state_dir_writable_by_others_refused) {
        char dir[32];
        make_dir(dir);
        ts_poolspec s = sample_spec();
        ck_assert_int_eq(ts_poolstate_write(dir, &s, NULL), 0);
        static const mode_t modes[] = { 0720, 0702, 0777 };
        for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
                ck_assert_int_eq(chmod(dir, modes[i]), 0);
                _cleanup_error_ ts_error *err = NULL, *err2 = NULL;
                ck_assert_int_eq(ts_poolstate_write(dir, &s, &err), -EPERM);
                ck_assert_ptr_nonnull(strstr(err->msg, "writable by others"));
                ts_poolspec *back = NULL;
                ck_assert_int_eq(ts_poolstate_read(dir, "tp", &back, &err2), -EPERM);
                ck_assert_ptr_null(back);
        }
        ck_assert_int_eq(chmod(dir, 0755), 0);
        _cleanup_poolspec_ ts_poolspec *back = NULL;
        ck_assert_int_eq(ts_poolstate_read(dir, "tp", &back, NULL), 0);
        ck_assert_int_eq(ts_poolstate_remove(dir, "tp", NULL), 0);
        rmdir(dir);
}
END_TEST

START_TEST(state_temp_file_never_followed) {
        /* A link planted where the temporary file goes, and a stale one:
         * neither is written through; the state lands where it belongs. */
        char dir[32], victim[64], tmp[64];
        make_dir(dir);
        snprintf(victim, sizeof victim, "%s.victim", dir);
        FILE *f = fopen(victim, "w");
        ck_assert_ptr_nonnull(f);
        fputs("precious", f);
        fclose(f);
        snprintf(tmp, sizeof tmp, "%s/tp.json.tmp", dir);
        ck_assert_int_eq(symlink(victim, tmp), 0);
        ts_poolspec s = sample_spec();
        ck_assert_int_eq(ts_poolstate_write(dir, &s, NULL), 0);
        char buf[32] = "";
        f = fopen(victim, "r");
        ck_assert_ptr_nonnull(f);
        ck_assert_ptr_nonnull(fgets(buf, sizeof buf, f));
        fclose(f);
        ck_assert_str_eq(buf, "precious");
        ck_assert_int_eq(access(tmp, F_OK), -1);
        _cleanup_poolspec_ ts_poolspec *back = NULL;
        ck_assert_int_eq(ts_poolstate_read(dir, "tp", &back, NULL), 0);
        ck_assert(ts_poolstate_equal(&s, back));
        unlink(victim);
        ck_assert_int_eq(ts_poolstate_remove(dir, "tp", NULL), 0);
        rmdir(dir);
}
END_TEST

START_TEST(state_rejects) {
        static const struct {
                const char *json;
                const char *needle;
        } bad[] = {
                { "not json", "not JSON" },
                { "[1]", "not a JSON object" },
                { "{\"version\":2}", "version 2" },
                { "{\"version\":1,\"name\":\"a b\"}", "pool name" },
                { "{\"version\":1,\"name\":\"tp\",\"data\":{\"path\":\"rel\",\"kind\":\"file\",\"size\":1}}",
                  "not absolute" },
                { "{\"version\":1,\"name\":\"tp\",\"data\":{\"path\":\"/d\",\"kind\":\"tape\",\"size\":1}}",
                  "neither" },
                { "{\"version\":1,\"name\":\"tp\",\"data\":{\"path\":\"/d\",\"kind\":\"file\",\"size\":-1}}",
                  "negative" },
                { "{\"version\":1,\"name\":\"tp\",\"data\":{\"path\":\"/d\",\"kind\":\"file\",\"size\":1},"
                  "\"meta\":{\"path\":\"/m\",\"kind\":\"file\",\"size\":1},\"block_size\":1000}",
                  "block size" },
                { "{\"version\":1,\"name\":\"tp\",\"data\":{\"path\":\"/d\",\"kind\":\"file\",\"size\":1},"
                  "\"meta\":{\"path\":\"/m\",\"kind\":\"file\",\"size\":1},\"block_size\":65536}",
                  "low_water_blocks" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                _cleanup_error_ ts_error *err = NULL;
                ts_poolspec *s = NULL;
                ck_assert_int_eq(ts_poolstate_from_json(bad[i].json, &s, &err), -EINVAL);
                ck_assert_ptr_null(s);
                ck_assert_msg(strstr(err->msg, bad[i].needle), "case %zu: '%s' lacks '%s'", i,
                              err->msg, bad[i].needle);
        }
}
END_TEST

int main(void) {
        Suite *s = suite_create("devmapper");
        TCase *tc = tcase_create("offline");
        tcase_add_test(tc, table_roundtrip);
        tcase_add_test(tc, table_plain_and_bad);
        tcase_add_test(tc, pool_status_lines);
        tcase_add_test(tc, thin_status_lines);
        tcase_add_test(tc, ids_names_sizes);
        tcase_add_test(tc, meta_sizing);
        tcase_add_test(tc, meta_classifier);
        tcase_add_test(tc, state_roundtrip);
        tcase_add_test(tc, state_file_io);
        tcase_add_test(tc, state_rejects);
        tcase_add_test(tc, state_device_ids);
        tcase_add_test(tc, state_dir_writable_by_others_refused);
        tcase_add_test(tc, state_temp_file_never_followed);
        tcase_add_test(tc, meta_superblock);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
