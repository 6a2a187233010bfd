#include <check.h>
#include <errno.h>
#include <string.h>

#include "oci/digest.h"
#include "tests/unit/ts-check.h"

#define EMPTY "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define A "sha256:589f0d58b9053a4ff7329b8fdb4f9dd120e29354c086ad0b3b10733f6cfd6de3"
#define B "sha256:55fea2a37a9fc5963f1beccd0d162b856e6bd05ca07cdd3726847846ab740f0d"
#define C "sha256:e6c65c655ca8172ab7a2b634dab3220a45472dd6571b6efd956ccc05e229a201"
#define AB "sha256:267c5fd16af60e52927fabf0a36a31f3b5a2069347f7f00c7bd7f93f6ebc01f4"
#define ABC_CHAIN "sha256:82c0ed5f6c15be9b9180a8c04b9f2c676d74af6db13c711f5bb47a0fa43b56df"

START_TEST(buffer_digests) {
        char d[TS_DIGEST_MAX];
        ck_assert_int_eq(ts_digest_buffer("", 0, d), 0);
        ck_assert_str_eq(d, EMPTY);
        ck_assert_int_eq(ts_digest_buffer("abc", 3, d), 0);
        ck_assert_str_eq(d, ABC);
        ck_assert_int_eq(ts_digest_buffer("layer-a", 7, d), 0);
        ck_assert_str_eq(d, A);
}
END_TEST

START_TEST(streaming_equals_whole) {
        static char big[1000000];
        memset(big, 'a', sizeof(big));
        ts_sha256 *h = NULL;
        ck_assert_int_eq(ts_sha256_new(&h), 0);
        /* uneven pieces, an empty one among them */
        size_t off = 0, step = 1;
        while (off < sizeof(big)) {
                size_t n = step < sizeof(big) - off ? step : sizeof(big) - off;
                ts_sha256_update(h, big + off, n);
                ts_sha256_update(h, big, 0);
                off += n;
                step = step * 3 + 1;
        }
        char d[TS_DIGEST_MAX];
        ts_sha256_final(h, d);
        ck_assert_str_eq(d, "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        ts_sha256_reset(h);
        ts_sha256_update(h, "abc", 3);
        ts_sha256_final(h, d);
        ck_assert_str_eq(d, ABC);
        ck_assert_ptr_null(ts_sha256_free(h));
        ck_assert_ptr_null(ts_sha256_free(NULL));
}
END_TEST

START_TEST(validate) {
        ck_assert_int_eq(ts_digest_validate(EMPTY), 0);
        ck_assert_int_eq(ts_digest_validate(ABC), 0);
        ck_assert_int_eq(ts_digest_validate(NULL), -EINVAL);
        ck_assert_int_eq(ts_digest_validate(""), -EINVAL);
        ck_assert_int_eq(ts_digest_validate("sha256:"), -EINVAL);
        /* upper case hex, one digit short, one too many, another algorithm, no prefix */
        ck_assert_int_eq(ts_digest_validate("sha256:E3B0C44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), -EINVAL);
        ck_assert_int_eq(ts_digest_validate("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85"), -EINVAL);
        ck_assert_int_eq(ts_digest_validate("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550"), -EINVAL);
        ck_assert_int_eq(ts_digest_validate("sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), -EINVAL);
        ck_assert_int_eq(ts_digest_validate("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), -EINVAL);
        ck_assert_int_eq(ts_digest_validate("sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), -EINVAL);
        ck_assert_str_eq(ts_digest_hex(ABC), &ABC[7]);
}
END_TEST

START_TEST(chain_ids) {
        char *ids[] = { A, B, C };
        char chain[3][TS_DIGEST_MAX];
        ck_assert_int_eq(ts_digest_chain_ids(ids, 3, chain), 0);
        ck_assert_str_eq(chain[0], A);
        ck_assert_str_eq(chain[1], AB);
        ck_assert_str_eq(chain[2], ABC_CHAIN);
        ck_assert_int_eq(ts_digest_chain_ids(ids, 0, chain), 0);

        char *bad[] = { A, "sha256:nothex" };
        char untouched[2][TS_DIGEST_MAX] = { "x", "y" };
        ck_assert_int_eq(ts_digest_chain_ids(bad, 2, untouched), -EINVAL);
        ck_assert_str_eq(untouched[0], "x");
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("oci-digest");
        TCase *tc = tcase_create("digest");
        tcase_add_test(tc, buffer_digests);
        tcase_add_test(tc, streaming_equals_whole);
        tcase_add_test(tc, validate);
        tcase_add_test(tc, chain_ids);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return ts_check_run(suite());
}
