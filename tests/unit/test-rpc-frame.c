#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/frame.h"
#include "rpc/status.h"
#include "tests/unit/ts-check.h"

/* Collects what the deframer hands out. */
typedef struct {
        size_t n;
        size_t lens[16];
        char text[16][64];
        bool compressed[16];
} got;

static int collect(void *ud, bool compressed, uint8_t *msg, size_t len) {
        got *g = ud;
        ck_assert_uint_lt(g->n, 16);
        ck_assert_int_eq(msg[len], 0);
        g->lens[g->n] = len;
        g->compressed[g->n] = compressed;
        memcpy(g->text[g->n], msg, len < 63 ? len : 63);
        g->text[g->n][len < 63 ? len : 63] = 0;
        g->n++;
        free(msg);
        return 0;
}

/* Builds prefix+payload for each string into buf; returns total length. */
static size_t frames(uint8_t *buf, const char *const *msgs, size_t n) {
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
                size_t l = strlen(msgs[i]);
                ts_rpc_frame_prefix(buf + off, false, (uint32_t) l);
                memcpy(buf + off + 5, msgs[i], l);
                off += 5 + l;
        }
        return off;
}

START_TEST(prefix_layout) {
        uint8_t p[5];
        ts_rpc_frame_prefix(p, false, 0x01020304);
        ck_assert_int_eq(p[0], 0);
        ck_assert_int_eq(p[1], 1);
        ck_assert_int_eq(p[2], 2);
        ck_assert_int_eq(p[3], 3);
        ck_assert_int_eq(p[4], 4);
        ts_rpc_frame_prefix(p, true, 7);
        ck_assert_int_eq(p[0], 1);
        ck_assert_int_eq(p[4], 7);
}
END_TEST

START_TEST(several_in_one_chunk) {
        const char *msgs[] = { "hello", "", "world!" };
        uint8_t buf[64];
        size_t len = frames(buf, msgs, 3);
        ts_rpc_deframer d;
        got g = { 0 };

        ts_rpc_deframer_init(&d, 0);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, buf, len, collect, &g), 0);
        ck_assert_uint_eq(g.n, 3);
        ck_assert_str_eq(g.text[0], "hello");
        ck_assert_uint_eq(g.lens[1], 0);
        ck_assert_str_eq(g.text[2], "world!");
        ck_assert(!g.compressed[0]);
        ck_assert(!ts_rpc_deframer_partial(&d));
        ts_rpc_deframer_done(&d);
}
END_TEST

START_TEST(split_everywhere) {
        const char *msgs[] = { "abc", "defghij", "k" };
        uint8_t buf[64];
        size_t len = frames(buf, msgs, 3);

        /* Every single cut point, and byte-by-byte. */
        for (size_t cut = 0; cut <= len; cut++) {
                ts_rpc_deframer d;
                got g = { 0 };
                ts_rpc_deframer_init(&d, 0);
                ck_assert_int_eq(ts_rpc_deframer_feed(&d, buf, cut, collect, &g), 0);
                ck_assert_int_eq(ts_rpc_deframer_feed(&d, buf + cut, len - cut, collect, &g), 0);
                ck_assert_uint_eq(g.n, 3);
                ck_assert_str_eq(g.text[1], "defghij");
                ts_rpc_deframer_done(&d);
        }
        ts_rpc_deframer d;
        got g = { 0 };
        ts_rpc_deframer_init(&d, 0);
        for (size_t i = 0; i < len; i++) {
                ck_assert_int_eq(ts_rpc_deframer_feed(&d, buf + i, 1, collect, &g), 0);
                if (i + 1 < len)
                        ck_assert(g.n < 3);
        }
        ck_assert_uint_eq(g.n, 3);
        ck_assert_str_eq(g.text[2], "k");
        ts_rpc_deframer_done(&d);
}
END_TEST

START_TEST(large_message_many_chunks) {
        size_t n = 100000;
        uint8_t *buf = malloc(n + 5);
        ts_rpc_frame_prefix(buf, false, (uint32_t) n);
        for (size_t i = 0; i < n; i++)
                buf[5 + i] = (uint8_t) ('a' + i % 26);
        ts_rpc_deframer d;
        got g = { 0 };
        ts_rpc_deframer_init(&d, 0);
        for (size_t off = 0; off < n + 5; off += 16384) {
                size_t k = n + 5 - off < 16384 ? n + 5 - off : 16384;
                ck_assert_int_eq(ts_rpc_deframer_feed(&d, buf + off, k, collect, &g), 0);
                if (off + k < n + 5) {
                        ck_assert_uint_eq(g.n, 0);
                        ck_assert(ts_rpc_deframer_partial(&d));
                }
        }
        ck_assert_uint_eq(g.n, 1);
        ck_assert_uint_eq(g.lens[0], n);
        ck_assert_str_eq(g.text[0], "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk");
        ts_rpc_deframer_done(&d);
        free(buf);
}
END_TEST

START_TEST(buffer_follows_arrival) {
        /* A prefix declaring 16 MiB, then 10 bytes: what is held is what
         * came, not what was announced. */
        uint8_t p[5], chunk[4096];
        ts_rpc_deframer d;
        got g = { 0 };

        ts_rpc_deframer_init(&d, 0);
        ts_rpc_frame_prefix(p, false, 16u << 20);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, p, 5, collect, &g), 0);
        ck_assert_uint_eq(d.msg_size, 0);
        memset(chunk, 'm', sizeof(chunk));
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, chunk, 10, collect, &g), 0);
        ck_assert_uint_le(d.msg_size, 4096);
        size_t have = 10;
        while (have < (1u << 20)) {
                ck_assert_int_eq(ts_rpc_deframer_feed(&d, chunk, sizeof(chunk), collect, &g), 0);
                have += sizeof(chunk);
                ck_assert_uint_le(d.msg_size, 2 * have + 1);
        }
        ck_assert_uint_eq(g.n, 0);
        ts_rpc_deframer_done(&d);

        /* A small message still comes out whole, its buffer exactly sized. */
        ts_rpc_deframer_init(&d, 0);
        ts_rpc_frame_prefix(p, false, 3);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, p, 5, collect, &g), 0);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, (const uint8_t *) "abc", 3, collect, &g), 0);
        ck_assert_uint_eq(g.n, 1);
        ck_assert_str_eq(g.text[0], "abc");
        ts_rpc_deframer_done(&d);
}
END_TEST

START_TEST(message_cut) {
        char a[] = "short";
        ck_assert_str_eq(ts_rpc_message_cut(a, 16), "short");
        char b[] = "0123456789abcdef";
        ck_assert_str_eq(ts_rpc_message_cut(b, 16), "0123456789abcdef");
        char c[] = "0123456789abcdefg";
        ck_assert_str_eq(ts_rpc_message_cut(c, 16), "0123456789abc...");
        /* "caf\xc3\xa9": the cut never splits the two-byte sequence. */
        char d[] = "ab caf\xc3\xa9 and more";
        ck_assert_str_eq(ts_rpc_message_cut(d, 10), "ab caf...");
        char e[] = "ab cafe\xc3\xa9 and more";
        ck_assert_str_eq(ts_rpc_message_cut(e, 11), "ab cafe...");
        char f[] = "ab cafe\xc3\xa9 and more";
        ck_assert_str_eq(ts_rpc_message_cut(f, 12), "ab cafe\xc3\xa9...");
}
END_TEST

START_TEST(oversized_and_bad_flag) {
        uint8_t p[5];
        ts_rpc_deframer d;
        got g = { 0 };

        ts_rpc_deframer_init(&d, 1024);
        ts_rpc_frame_prefix(p, false, 1024);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, p, 5, collect, &g), 0); /* at the limit: fine */
        ck_assert(ts_rpc_deframer_partial(&d));
        ts_rpc_deframer_done(&d);

        ts_rpc_deframer_init(&d, 1024);
        ts_rpc_frame_prefix(p, false, 1025);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, p, 5, collect, &g), -EMSGSIZE);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, p, 1, collect, &g), -EBADMSG);
        ts_rpc_deframer_done(&d);

        /* 0xffffffff with the default limit: refused before any allocation. */
        uint8_t huge[5] = { 0, 0xff, 0xff, 0xff, 0xff };
        ts_rpc_deframer_init(&d, 0);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, huge, 5, collect, &g), -EMSGSIZE);
        ts_rpc_deframer_done(&d);

        uint8_t bad[6] = { 2, 0, 0, 0, 1, 'x' };
        ts_rpc_deframer_init(&d, 0);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, bad, 6, collect, &g), -EBADMSG);
        ts_rpc_deframer_done(&d);

        uint8_t comp[6] = { 1, 0, 0, 0, 1, 'z' };
        ts_rpc_deframer_init(&d, 0);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, comp, 6, collect, &g), 0);
        ck_assert_uint_eq(g.n, 1);
        ck_assert(g.compressed[0]);
        ts_rpc_deframer_done(&d);

        /* A prefix cut short is partial. */
        ts_rpc_deframer_init(&d, 0);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, comp, 3, collect, &g), 0);
        ck_assert(ts_rpc_deframer_partial(&d));
        ts_rpc_deframer_done(&d);
}
END_TEST

static int stop_cb(void *ud, bool compressed, uint8_t *msg, size_t len) {
        free(msg);
        return -ECANCELED;
}

START_TEST(callback_stops) {
        const char *msgs[] = { "a", "b" };
        uint8_t buf[16];
        size_t len = frames(buf, msgs, 2);
        ts_rpc_deframer d;
        ts_rpc_deframer_init(&d, 0);
        ck_assert_int_eq(ts_rpc_deframer_feed(&d, buf, len, stop_cb, NULL), -ECANCELED);
        ts_rpc_deframer_done(&d);
}
END_TEST

START_TEST(timeouts) {
        uint64_t ns = 42;
        ck_assert_int_eq(ts_rpc_timeout_parse("1S", &ns), 0);
        ck_assert_uint_eq(ns, 1000000000u);
        ck_assert_int_eq(ts_rpc_timeout_parse("250m", &ns), 0);
        ck_assert_uint_eq(ns, 250000000u);
        ck_assert_int_eq(ts_rpc_timeout_parse("7u", &ns), 0);
        ck_assert_uint_eq(ns, 7000u);
        ck_assert_int_eq(ts_rpc_timeout_parse("99999999n", &ns), 0);
        ck_assert_uint_eq(ns, 99999999u);
        ck_assert_int_eq(ts_rpc_timeout_parse("2M", &ns), 0);
        ck_assert_uint_eq(ns, 120000000000ull);
        ck_assert_int_eq(ts_rpc_timeout_parse("1H", &ns), 0);
        ck_assert_uint_eq(ns, 3600000000000ull);
        ck_assert_int_eq(ts_rpc_timeout_parse("99999999H", &ns), 0);
        ck_assert_uint_eq(ns, UINT64_MAX); /* saturates */

        ns = 42;
        ck_assert_int_eq(ts_rpc_timeout_parse("", &ns), -EINVAL);
        ck_assert_int_eq(ts_rpc_timeout_parse("S", &ns), -EINVAL);
        ck_assert_int_eq(ts_rpc_timeout_parse("10", &ns), -EINVAL);
        ck_assert_int_eq(ts_rpc_timeout_parse("123456789S", &ns), -EINVAL);
        ck_assert_int_eq(ts_rpc_timeout_parse("10s", &ns), -EINVAL);
        ck_assert_int_eq(ts_rpc_timeout_parse("10SS", &ns), -EINVAL);
        ck_assert_int_eq(ts_rpc_timeout_parse("-1S", &ns), -EINVAL);
        ck_assert_int_eq(ts_rpc_timeout_parse(" 1S", &ns), -EINVAL);
        ck_assert_int_eq(ts_rpc_timeout_parse(NULL, &ns), -EINVAL);
        ck_assert_uint_eq(ns, 42);

        char buf[16];
        ck_assert_str_eq(ts_rpc_timeout_format(500, buf, sizeof(buf)), "500n");
        ck_assert_str_eq(ts_rpc_timeout_format(1000000000, buf, sizeof(buf)), "1000000u");
        ck_assert_str_eq(ts_rpc_timeout_format(100000000000ull, buf, sizeof(buf)), "100000m");
        ck_assert_str_eq(ts_rpc_timeout_format(100000000001ull, buf, sizeof(buf)), "100001m");
        ck_assert_str_eq(ts_rpc_timeout_format(UINT64_MAX, buf, sizeof(buf)), "5124096H");
        /* Round trip never shortens the timeout. */
        for (uint64_t v = 1; v < UINT64_MAX / 3; v = v * 3 + 1) {
                ck_assert_int_eq(ts_rpc_timeout_parse(ts_rpc_timeout_format(v, buf, sizeof(buf)), &ns), 0);
                ck_assert_uint_ge(ns, v);
        }
}
END_TEST

START_TEST(status_values) {
        int c = -1;
        ck_assert_int_eq(ts_rpc_status_parse("0", 1, &c), 0);
        ck_assert_int_eq(c, 0);
        ck_assert_int_eq(ts_rpc_status_parse("16", 2, &c), 0);
        ck_assert_int_eq(c, 16);
        ck_assert_int_eq(ts_rpc_status_parse("120", 3, &c), 0);
        ck_assert_int_eq(c, 120);
        ck_assert_int_eq(ts_rpc_status_parse("05", 2, &c), -EINVAL);
        ck_assert_int_eq(ts_rpc_status_parse("", 0, &c), -EINVAL);
        ck_assert_int_eq(ts_rpc_status_parse("1x", 2, &c), -EINVAL);
        ck_assert_int_eq(ts_rpc_status_parse("1234", 4, &c), -EINVAL);
        ck_assert_int_eq(ts_rpc_status_parse("-1", 2, &c), -EINVAL);
        ck_assert_int_eq(c, 120);

        ck_assert_str_eq(ts_rpc_status_name(TS_RPC_OK), "OK");
        ck_assert_str_eq(ts_rpc_status_name(TS_RPC_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
        ck_assert_str_eq(ts_rpc_status_name(TS_RPC_UNAUTHENTICATED), "UNAUTHENTICATED");
        ck_assert_str_eq(ts_rpc_status_name(17), "UNKNOWN_STATUS");
        ck_assert_str_eq(ts_rpc_status_name(-1), "UNKNOWN_STATUS");
}
END_TEST

START_TEST(errno_mapping) {
        ck_assert_int_eq(ts_rpc_status_from_errno(0), TS_RPC_OK);
        ck_assert_int_eq(ts_rpc_status_from_errno(-ENOENT), TS_RPC_NOT_FOUND);
        ck_assert_int_eq(ts_rpc_status_from_errno(ENOENT), TS_RPC_NOT_FOUND);
        ck_assert_int_eq(ts_rpc_status_from_errno(-EEXIST), TS_RPC_ALREADY_EXISTS);
        ck_assert_int_eq(ts_rpc_status_from_errno(-EINVAL), TS_RPC_INVALID_ARGUMENT);
        ck_assert_int_eq(ts_rpc_status_from_errno(-EBUSY), TS_RPC_FAILED_PRECONDITION);
        ck_assert_int_eq(ts_rpc_status_from_errno(-ENOSPC), TS_RPC_RESOURCE_EXHAUSTED);
        ck_assert_int_eq(ts_rpc_status_from_errno(-ETIMEDOUT), TS_RPC_DEADLINE_EXCEEDED);
        ck_assert_int_eq(ts_rpc_status_from_errno(-EOPNOTSUPP), TS_RPC_UNIMPLEMENTED);
        ck_assert_int_eq(ts_rpc_status_from_errno(-ECONNREFUSED), TS_RPC_UNAVAILABLE);
        ck_assert_int_eq(ts_rpc_status_from_errno(-EIO), TS_RPC_INTERNAL);
        ck_assert_int_eq(ts_rpc_status_from_errno(-EMEDIUMTYPE), TS_RPC_FAILED_PRECONDITION);
        /* Round trips for the codes containerd's errdefs use. */
        int codes[] = { TS_RPC_NOT_FOUND, TS_RPC_ALREADY_EXISTS, TS_RPC_INVALID_ARGUMENT,
                        TS_RPC_FAILED_PRECONDITION, TS_RPC_RESOURCE_EXHAUSTED, TS_RPC_UNAVAILABLE,
                        TS_RPC_DEADLINE_EXCEEDED, TS_RPC_CANCELLED, TS_RPC_UNIMPLEMENTED };
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
                ck_assert_int_eq(ts_rpc_status_from_errno(ts_rpc_status_to_errno(codes[i])), codes[i]);
        ck_assert_int_eq(ts_rpc_status_to_errno(TS_RPC_OK), 0);
        ck_assert_int_eq(ts_rpc_status_to_errno(TS_RPC_INTERNAL), EPROTO);
        ck_assert_int_eq(ts_rpc_status_to_errno(99), EPROTO);
}
END_TEST

START_TEST(percent_encoding) {
        char *s;
        ck_assert_int_eq(ts_rpc_percent_encode("plain text ok", &s), 0);
        ck_assert_str_eq(s, "plain text ok");
        free(s);
        ck_assert_int_eq(ts_rpc_percent_encode("100% sure\nnext \xc3\xa9", &s), 0);
        ck_assert_str_eq(s, "100%25 sure%0Anext %C3%A9");
        free(s);
        ck_assert_int_eq(ts_rpc_percent_encode("", &s), 0);
        ck_assert_str_eq(s, "");
        free(s);

        const char *enc = "100%25 sure%0Anext %C3%a9";
        ck_assert_int_eq(ts_rpc_percent_decode(enc, strlen(enc), &s), 0);
        ck_assert_str_eq(s, "100% sure\nnext \xc3\xa9");
        free(s);
        /* Broken escapes are kept as they are, never an error. */
        ck_assert_int_eq(ts_rpc_percent_decode("50%", 3, &s), 0);
        ck_assert_str_eq(s, "50%");
        free(s);
        ck_assert_int_eq(ts_rpc_percent_decode("%zz%4", 5, &s), 0);
        ck_assert_str_eq(s, "%zz%4");
        free(s);
        /* Length bounds are honoured: "%41" cut after 2 bytes is not decoded. */
        ck_assert_int_eq(ts_rpc_percent_decode("%41", 2, &s), 0);
        ck_assert_str_eq(s, "%4");
        free(s);
}
END_TEST

int main(void) {
        Suite *s = suite_create("rpc-frame");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, prefix_layout);
        tcase_add_test(tc, several_in_one_chunk);
        tcase_add_test(tc, split_everywhere);
        tcase_add_test(tc, large_message_many_chunks);
        tcase_add_test(tc, oversized_and_bad_flag);
        tcase_add_test(tc, callback_stops);
        tcase_add_test(tc, timeouts);
        tcase_add_test(tc, status_values);
        tcase_add_test(tc, errno_mapping);
        tcase_add_test(tc, percent_encoding);
        tcase_add_test(tc, buffer_follows_arrival);
        tcase_add_test(tc, message_cut);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
