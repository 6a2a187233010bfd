/* The server's HTTP/2 + gRPC handling without sockets: the fuzz seeds
 * (tests/fuzz/rpc-server-seeds) are fed to a socket-less session and what the
 * server wrote is parsed back (frames, HPACK) to check each stream's
 * grpc-status. Runs with the sanitizers of the normal build. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc/server-internal.h"
#include "testsvc.h"
#include "tests/unit/ts-check.h"

static int raw(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        size_t len;
        const uint8_t *data = ts_rpc_call_request(call, &len);
        return ts_rpc_call_send_bytes(call, data, len) < 0 ? TS_RPC_CANCELLED : TS_RPC_OK;
}

static ts_rpc_server *new_server(void) {
        ts_rpc_server *s;
        ts_rpc_server_options o = { .max_message_size = 4096 };
        ck_assert_int_eq(ts_rpc_server_new(&o, &s), 0);
        ck_assert_int_eq(ts_testsvc_register(s), 0);
        ck_assert_int_eq(ts_rpc_server_add_method(s, &(ts_rpc_method) { .path = "/t.Raw/Raw",
                                                                         .handler = raw }),
                         0);
        return s;
}

static uint8_t *read_seed(const char *name, size_t *ret_len) {
        char path[4096];
        const char *src = getenv("TS_SOURCE_DIR");
        ck_assert_ptr_nonnull(src);
        snprintf(path, sizeof(path), "%s/tests/fuzz/rpc-server-seeds/%s", src, name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        uint8_t *buf = malloc(65536);
        ssize_t n = read(fd, buf, 65536);
        ck_assert_int_gt(n, 0);
        close(fd);
        *ret_len = (size_t) n;
        return buf;
}

typedef struct {
        int status[8];        /* grpc-status per stream id (odd ids 1..15), -1 none */
        size_t data_bytes[8]; /* DATA payload per stream */
        char http[8][4];      /* :status */
        bool goaway;
} result;

static void parse_output(const uint8_t *p, size_t len, result *res) {
        nghttp2_hd_inflater *inf;
        memset(res, 0, sizeof(*res));
        for (int i = 0; i < 8; i++)
                res->status[i] = -1;
        ck_assert_int_eq(nghttp2_hd_inflate_new(&inf), 0);
        size_t off = 0;
        while (off + 9 <= len) {
                size_t flen = (size_t) p[off] << 16 | (size_t) p[off + 1] << 8 | p[off + 2];
                uint8_t type = p[off + 3], flags = p[off + 4];
                uint32_t sid = ((uint32_t) p[off + 5] << 24 | (uint32_t) p[off + 6] << 16 |
                                (uint32_t) p[off + 7] << 8 | p[off + 8]) & 0x7fffffff;
                ck_assert_uint_le(off + 9 + flen, len);
                const uint8_t *pl = p + off + 9;
                int idx = (int) (sid / 2);
                if (type == 7)
                        res->goaway = true;
                if (type == 0 && idx < 8)
                        res->data_bytes[idx] += flen;
                if (type == 1) {
                        ck_assert(flags & NGHTTP2_FLAG_END_HEADERS);
                        ck_assert(!(flags & (NGHTTP2_FLAG_PADDED | NGHTTP2_FLAG_PRIORITY)));
                        size_t in = flen;
                        const uint8_t *q = pl;
                        for (;;) {
                                nghttp2_nv nv;
                                int fl = 0;
                                ssize_t r = nghttp2_hd_inflate_hd2(inf, &nv, &fl, q, in, 1);
                                ck_assert_int_ge(r, 0);
                                q += r;
                                in -= (size_t) r;
                                if (fl & NGHTTP2_HD_INFLATE_EMIT && idx < 8) {
                                        if (nv.namelen == 11 && !memcmp(nv.name, "grpc-status", 11)) {
                                                char v[8] = { 0 };
                                                memcpy(v, nv.value, nv.valuelen < 7 ? nv.valuelen : 7);
                                                res->status[idx] = (int) strtol(v, NULL, 10);
                                        }
                                        if (nv.namelen == 7 && !memcmp(nv.name, ":status", 7))
                                                memcpy(res->http[idx], nv.value,
                                                       nv.valuelen < 3 ? nv.valuelen : 3);
                                }
                                if (fl & NGHTTP2_HD_INFLATE_FINAL) {
                                        nghttp2_hd_inflate_end_headers(inf);
                                        break;
                                }
                                if (r == 0 && in == 0)
                                        break;
                        }
                }
                off += 9 + flen;
        }
        ck_assert_uint_eq(off, len);
        nghttp2_hd_inflate_del(inf);
}

static int feed_seed(ts_rpc_server *s, const char *name, result *res) {
        static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        size_t len, out_len = 0;
        uint8_t *seed = read_seed(name, &len), *out = NULL;
        uint8_t *buf = malloc(len + sizeof(preface));
        size_t n = 0;

        /* The fuzz harness's convention: an odd first byte adds the preface. */
        if (seed[0] & 1) {
                memcpy(buf, preface, sizeof(preface) - 1);
                n = sizeof(preface) - 1;
        }
        memcpy(buf + n, seed + 1, len - 1);
        n += len - 1;
        int r = ts_rpc_server_feed_session(s, buf, n, &out, &out_len);
        parse_output(out, out_len, res);
        free(out);
        free(buf);
        free(seed);
        return r;
}

START_TEST(seeds_answers) {
        ts_rpc_server *s = new_server();
        result res;

        ck_assert_int_eq(feed_seed(s, "unary", &res), 0);
        ck_assert_int_eq(res.status[0], TS_RPC_OK);
        ck_assert_str_eq(res.http[0], "200");
        ck_assert_uint_gt(res.data_bytes[0], 5);

        ck_assert_int_eq(feed_seed(s, "stream", &res), 0);
        ck_assert_int_eq(res.status[0], TS_RPC_OK);
        ck_assert_uint_ge(res.data_bytes[0], 3 * 5);

        ck_assert_int_eq(feed_seed(s, "unknown", &res), 0);
        ck_assert_int_eq(res.status[0], TS_RPC_UNIMPLEMENTED);
        ck_assert_uint_eq(res.data_bytes[0], 0);

        /* Compressed flag without grpc-encoding: INTERNAL (compression spec). */
        ck_assert_int_eq(feed_seed(s, "compressed-timeout", &res), 0);
        ck_assert_int_eq(res.status[0], TS_RPC_INTERNAL);

        /* Two interleaved streams with split messages; the second is reset
         * by the client and gets no status. */
        ck_assert_int_eq(feed_seed(s, "split-interleaved", &res), 0);
        ck_assert_int_eq(res.status[0], TS_RPC_OK);
        ck_assert_int_eq(res.status[1], -1);

        ck_assert_int_eq(feed_seed(s, "oversized", &res), 0);
        ck_assert_int_eq(res.status[0], TS_RPC_RESOURCE_EXHAUSTED);

        /* Headers past the bound once decoded: refused; the next call is not. */
        ck_assert_int_eq(feed_seed(s, "header-expansion", &res), 0);
        ck_assert_int_eq(res.status[0], TS_RPC_RESOURCE_EXHAUSTED);
        ck_assert_int_eq(res.status[1], TS_RPC_OK);

        ck_assert_int_eq(feed_seed(s, "unfinished-reset", &res), 0);
        ck_assert_int_eq(res.status[0], -1);
        ck_assert_int_eq(res.status[1], TS_RPC_OK);

        ck_assert_int_eq(feed_seed(s, "goaway-ping", &res), 0);
        ck_assert_int_eq(res.status[0], TS_RPC_INVALID_ARGUMENT);

        ck_assert_int_eq(feed_seed(s, "http1", &res), -EPROTO);
        ck_assert_int_eq(res.status[0], -1);

        ts_rpc_server_free(s);
}
END_TEST

int main(void) {
        Suite *s = suite_create("rpc-session");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, seeds_answers);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
