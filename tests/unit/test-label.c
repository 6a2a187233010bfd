/* store/label.h: containerd's rule for one label, the per-snapshot bounds,
 * the normal form (sorted, last value wins, no empty values) and Update's
 * labels.<k> paths, with allocation failures. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/label.h"
#include "tests/unit/failalloc.h"
#include "tests/unit/ts-check.h"

static const ts_label_limits small = { .max_count = 3, .max_bytes = 4096 };

/* err's message contains want; err is freed. */
static void msg_has(ts_error *err, const char *want) {
        ck_assert_ptr_nonnull(err);
        ck_assert_msg(strstr(err->msg, want), "message \"%s\" lacks \"%s\"", err->msg, want);
        ts_error_free(err);
}

static char *filled(size_t n, char c) {
        char *s = malloc(n + 1);
        ck_assert_ptr_nonnull(s);
        memset(s, c, n);
        s[n] = 0;
        return s;
}

START_TEST(limits_resolve) {
        ts_label_limits l = { 0 };
        ck_assert_int_eq(ts_label_limits_resolve(&l, NULL), 0);
        ck_assert_uint_eq(l.max_count, TS_LABEL_MAX_COUNT_DEFAULT);
        ck_assert_uint_eq(l.max_bytes, TS_LABEL_MAX_BYTES_DEFAULT);
        ts_error *err = NULL;
        l = (ts_label_limits){ .max_bytes = TS_LABEL_MAX_BYTES_LIMIT + 1 };
        ck_assert_int_eq(ts_label_limits_resolve(&l, &err), -EINVAL);
        msg_has(err, "max_label_bytes 4194305 is outside 4096..4194304 bytes");
        err = NULL;
        l = (ts_label_limits){ .max_bytes = 100 };
        ck_assert_int_eq(ts_label_limits_resolve(&l, &err), -EINVAL);
        msg_has(err, "max_label_bytes 100");
        err = NULL;
        l = (ts_label_limits){ .max_count = TS_LABEL_MAX_COUNT_LIMIT + 1 };
        ck_assert_int_eq(ts_label_limits_resolve(&l, &err), -EINVAL);
        msg_has(err, "max_labels 1048577 is above 1048576");
}
END_TEST

START_TEST(request_rules) {
        ts_label_limits lim = { 0 };
        ck_assert_int_eq(ts_label_limits_resolve(&lim, NULL), 0);
        char *k = filled(4000, 'k'), *v96 = filled(96, 'v'), *v97 = filled(97, 'v');
        ts_label ok[] = { { "a", "1" }, { k, v96 }, { "b", "" }, { "c", NULL } };
        ck_assert_int_eq(ts_label_check_request(ok, 4, &lim, NULL), 0);

        /* containerd's labels.Validate: key + value over 4096 bytes, the key cut to 64 */
        ts_error *err = NULL;
        ts_label big[] = { { "a", "1" }, { k, v97 } };
        ck_assert_int_eq(ts_label_check_request(big, 2, &lim, &err), -EINVAL);
        char want[256];
        snprintf(want, sizeof want,
                 "label key and value length (4097 bytes) greater than maximum size (4096 bytes), key: %.64s",
                 k);
        ck_assert_str_eq(err->msg, want);
        ts_error_free(err);

        err = NULL;
        ts_label empty[] = { { "a", "1" }, { "", "x" } };
        ck_assert_int_eq(ts_label_check_request(empty, 2, &lim, &err), -EINVAL);
        msg_has(err, "label with an empty key");
        ts_label nokey[] = { { NULL, "x" } };
        ck_assert_int_eq(ts_label_check_request(nokey, 1, &lim, NULL), -EINVAL);

        /* the count as sent, repeats included */
        err = NULL;
        ts_label four[] = { { "a", "1" }, { "a", "2" }, { "a", "3" }, { "a", "4" } };
        ck_assert_int_eq(ts_label_check_request(four, 3, &small, NULL), 0);
        ck_assert_int_eq(ts_label_check_request(four, 4, &small, &err), -EINVAL);
        msg_has(err, "4 labels in the request, over the limit of 3 (max_labels)");
        free(k);
        free(v96);
        free(v97);
}
END_TEST

START_TEST(set_rules) {
        ts_label three[] = { { "a", "1" }, { "b", "2" }, { "c", "3" } };
        ck_assert_int_eq(ts_label_check_set(three, 3, &small, "s", NULL), 0);
        ts_error *err = NULL;
        ts_label four[] = { { "a", "1" }, { "b", "2" }, { "c", "3" }, { "d", "4" } };
        ck_assert_int_eq(ts_label_check_set(four, 4, &small, "s", &err), -EINVAL);
        msg_has(err, "snapshot s: 4 labels, over the limit of 3 (max_labels)");

        /* 2 x (1 + 2047) = 4096 fits; one byte more does not */
        char *v = filled(2047, 'v'), *w = filled(2048, 'w');
        ts_label fits[] = { { "a", v }, { "b", v } };
        ck_assert_int_eq(ts_label_check_set(fits, 2, &small, "s", NULL), 0);
        err = NULL;
        ts_label over[] = { { "a", v }, { "b", w } };
        ck_assert_int_eq(ts_label_check_set(over, 2, &small, "s", &err), -EINVAL);
        msg_has(err, "snapshot s: labels of 4097 bytes, over the limit of 4096 bytes (max_label_bytes)");
        free(v);
        free(w);
}
END_TEST

START_TEST(normalise_last_wins) {
        ts_label in[] = { { "b", "1" }, { "a", "x" }, { "b", "2" }, { "c", "" },
                          { "a", "" }, { "d", "4" }, { "b", "3" }, { "c", "5" } };
        ts_label *out = NULL;
        size_t n = 0;
        ck_assert_int_eq(ts_label_normalise(in, 8, &out, &n), 0);
        /* a's last value is empty: a goes; c's last is 5 */
        ck_assert_uint_eq(n, 3);
        ck_assert_str_eq(out[0].key, "b");
        ck_assert_str_eq(out[0].value, "3");
        ck_assert_str_eq(out[1].key, "c");
        ck_assert_str_eq(out[1].value, "5");
        ck_assert_str_eq(out[2].key, "d");
        ck_assert_ptr_eq(ts_label_find(out, n, "c"), &out[1]);
        ck_assert_ptr_null(ts_label_find(out, n, "a"));
        ts_label_free(out, n);

        ts_label none[] = { { "a", "" } };
        ck_assert_int_eq(ts_label_normalise(none, 1, &out, &n), 0);
        ck_assert_ptr_null(out);
        ck_assert_uint_eq(n, 0);
        ck_assert_int_eq(ts_label_normalise(NULL, 0, &out, &n), 0);
        ck_assert_uint_eq(n, 0);
        ts_label nokey[] = { { "a", "1" }, { NULL, "1" } };
        ck_assert_int_eq(ts_label_normalise(nokey, 2, &out, &n), -EINVAL);
}
END_TEST

/* The input a hostile client sends: many keys in descending order, each
 * twice. Sorting takes it in n log n; inserting one by one into a sorted
 * array (what the store did) moves n^2/2 entries. */
START_TEST(normalise_many_descending) {
        enum { N = 200000 };
        ts_label *in = calloc(2 * N, sizeof(*in));
        char(*keys)[16] = calloc(N, sizeof(*keys));
        ck_assert_ptr_nonnull(in);
        ck_assert_ptr_nonnull(keys);
        for (size_t i = 0; i < N; i++) {
                snprintf(keys[i], sizeof keys[i], "k%08zu", N - 1 - i);
                in[i] = (ts_label){ keys[i], "old" };
                in[N + i] = (ts_label){ keys[i], i % 2 ? "new" : "" };
        }
        ts_label *out = NULL;
        size_t n = 0;
        ck_assert_int_eq(ts_label_normalise(in, 2 * N, &out, &n), 0);
        ck_assert_uint_eq(n, N / 2);
        for (size_t i = 0; i < n; i++) {
                ck_assert_str_eq(out[i].value, "new");
                if (i)
                        ck_assert_int_lt(strcmp(out[i - 1].key, out[i].key), 0);
        }
        ts_label_free(out, n);
        free(in);
        free(keys);
}
END_TEST

static ts_label *normal(const ts_label *in, size_t n_in, size_t *ret_n) {
        ts_label *out = NULL;
        ck_assert_int_eq(ts_label_normalise(in, n_in, &out, ret_n), 0);
        return out;
}

START_TEST(apply_paths) {
        ts_label cur_in[] = { { "a", "1" }, { "b", "2" }, { "d", "4" } };
        size_t n = 0, n_set = 0;
        ts_label *cur = normal(cur_in, 3, &n);
        ts_label set_in[] = { { "a", "10" }, { "c", "30" }, { "z", "26" } };
        ts_label *set = normal(set_in, 3, &n_set);
        /* a set, b removed (not in the set), c added, z not named: left out;
         * repeats and order of the paths do not matter */
        const char *keys[] = { "c", "b", "a", "b", "x" };
        ck_assert_int_eq(ts_label_apply(&cur, &n, keys, 5, set, n_set), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_str_eq(cur[0].key, "a");
        ck_assert_str_eq(cur[0].value, "10");
        ck_assert_str_eq(cur[1].key, "c");
        ck_assert_str_eq(cur[1].value, "30");
        ck_assert_str_eq(cur[2].key, "d");
        ck_assert_str_eq(cur[2].value, "4");
        /* no paths: unchanged */
        ck_assert_int_eq(ts_label_apply(&cur, &n, keys, 0, set, n_set), 0);
        ck_assert_uint_eq(n, 3);
        /* everything removed */
        const char *all[] = { "d", "c", "a" };
        ck_assert_int_eq(ts_label_apply(&cur, &n, all, 3, NULL, 0), 0);
        ck_assert_uint_eq(n, 0);
        ts_label_free(cur, n);
        ts_label_free(set, n_set);
}
END_TEST

/* Every allocation of normalise and apply may fail: -ENOMEM, nothing leaks
 * (ASan), and apply leaves its input as it was. */
START_TEST(allocation_failures) {
        ts_label in[] = { { "b", "1" }, { "a", "2" }, { "c", "3" }, { "a", "4" } };
        ts_label set_in[] = { { "a", "9" } };
        size_t n_set = 0;
        ts_label *set = normal(set_in, 1, &n_set);
        const char *keys[] = { "a", "q", "b" }; /* a=9, b removed, c kept */
        unsigned long i;
        for (i = 1; i < 100; i++) {
                ts_label *out = NULL;
                size_t n = 0;
                ts_failalloc_arm(i);
                int r = ts_label_normalise(in, 4, &out, &n);
                int fired = ts_failalloc_fired();
                ts_failalloc_arm(0);
                ck_assert_int_eq(r, fired ? -ENOMEM : 0);
                if (r == 0) {
                        ts_failalloc_arm(i);
                        r = ts_label_apply(&out, &n, keys, 3, set, n_set);
                        fired = ts_failalloc_fired();
                        ts_failalloc_arm(0);
                        ck_assert_int_eq(r, fired ? -ENOMEM : 0);
                        ck_assert_uint_eq(n, fired ? 3 : 2);
                }
                ts_label_free(out, n);
                if (!fired)
                        break;
        }
        ck_assert_uint_gt(i, 5);
        ck_assert_uint_lt(i, 100);
        ts_label_free(set, n_set);
}
END_TEST

int main(void) {
        Suite *s = suite_create("label");
        TCase *tc = tcase_create("label");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, limits_resolve);
        tcase_add_test(tc, request_rules);
        tcase_add_test(tc, set_rules);
        tcase_add_test(tc, normalise_last_wins);
        tcase_add_test(tc, normalise_many_descending);
        tcase_add_test(tc, apply_paths);
        tcase_add_test(tc, allocation_failures);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
