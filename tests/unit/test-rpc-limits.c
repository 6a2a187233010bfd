/* The server's bounds and timeouts (rpc/server.h), each against a client
 * that misbehaves in one way, over a real socket: HTTP/2 frames written by
 * hand, the server's answers read back through nghttp2's HPACK decoder. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "rpc/client.h"
#include "rpc/frame.h"
#include "testsvc.h"
#include "tests/unit/failalloc.h"
#include "tests/unit/ts-check.h"

#define ECHO "/thinsnap.test.v1.Test/Echo"
/* How long the test waits for something that must happen before it calls
 * it missing; what is tested never depends on it. */
#define PATIENCE_MS 20000

enum { F_DATA, F_HEADERS, F_RST = 3, F_SETTINGS, F_PING = 6, F_GOAWAY, F_WINDOW_UPDATE };
#define FL_END_STREAM 0x1
#define FL_ACK 0x1
#define FL_END_HEADERS 0x4

typedef Thinsnap__Test__V1__EchoRequest EchoRequest;
typedef Thinsnap__Test__V1__EchoResponse EchoResponse;

static ts_testsvc_server srv;

static void start(const ts_rpc_server_options *o, const ts_rpc_method *extra, size_t n) {
        ck_assert_int_eq(ts_testsvc_start(&srv, o, extra, n), 0);
}

/* How often the running server hit limit l (ts_rpc_server_stats). */
static uint64_t hits(ts_rpc_limit l) {
        ts_rpc_server_stats st;
        ts_rpc_server_stats_get(srv.s, &st);
        return st.limit_hits[l];
}

/* Waits (bounded) until limit l was hit n times; returns the count. */
static uint64_t hits_reach(ts_rpc_limit l, uint64_t n) {
        for (int i = 0; i < 500 && hits(l) < n; i++)
                usleep(10 * 1000);
        return hits(l);
}

static void stop(void) {
        ck_assert_int_eq(ts_testsvc_stop(&srv), 0);
}

/* ---- a raw HTTP/2 client ---- */

typedef struct raw {
        int fd;
        nghttp2_hd_inflater *inf;
        int64_t window; /* connection window the server granted, less what was sent */
        uint32_t settings[8]; /* the server's SETTINGS by id; 0 when not sent */
        uint8_t *out; /* frames not written yet: written together by raw_flush */
        size_t out_len;
} raw;

typedef struct frame {
        uint8_t type, flags;
        uint32_t sid, len;
        uint8_t payload[16384];
} frame;

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static int raw_socket(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, srv.path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return fd;
}

static raw raw_open(void) {
        raw r = { .fd = raw_socket(), .window = 65535 };
        ck_assert_int_eq(nghttp2_hd_inflate_new(&r.inf), 0);
        return r;
}

static void raw_close(raw *r) {
        if (r->fd >= 0)
                close(r->fd);
        r->fd = -1;
        nghttp2_hd_inflate_del(r->inf);
        r->inf = NULL;
        free(r->out);
        r->out = NULL;
        r->out_len = 0;
}

/* Writes what was queued in one go; returns 0, or -errno once the server
 * closed. */
static int raw_flush(raw *r) {
        const uint8_t *b = r->out;
        size_t n = r->out_len;
        r->out_len = 0;
        while (n > 0) {
                ssize_t k = send(r->fd, b, n, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                b += k;
                n -= (size_t) k;
        }
        return 0;
}

static void queue_bytes(raw *r, const void *p, size_t n) {
        uint8_t *o = realloc(r->out, r->out_len + n);
        ck_assert_ptr_nonnull(o);
        if (n)
                memcpy(o + r->out_len, p, n);
        r->out = o;
        r->out_len += n;
}

static void queue_frame(raw *r, uint8_t type, uint8_t flags, uint32_t sid, const void *p,
                        size_t n) {
        uint8_t h[9] = { (uint8_t) (n >> 16), (uint8_t) (n >> 8), (uint8_t) n, type, flags,
                         (uint8_t) (sid >> 24), (uint8_t) (sid >> 16), (uint8_t) (sid >> 8),
                         (uint8_t) sid };
        queue_bytes(r, h, sizeof(h));
        queue_bytes(r, p, n);
}

static void send_frame(raw *r, uint8_t type, uint8_t flags, uint32_t sid, const void *p,
                       size_t n) {
        queue_frame(r, type, flags, sid, p, n);
        ck_assert_int_eq(raw_flush(r), 0);
}

/* Reads n bytes within the time left to deadline: 1, 0 when the server
 * closed, -ETIMEDOUT. */
static int read_full(int fd, uint8_t *p, size_t n, uint64_t deadline) {
        while (n > 0) {
                uint64_t now = now_ms();
                if (now >= deadline)
                        return -ETIMEDOUT;
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                if (poll(&pfd, 1, (int) (deadline - now)) == 0)
                        continue;
                ssize_t k = read(fd, p, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return 0;
                p += k;
                n -= (size_t) k;
        }
        return 1;
}

/* Reads one frame: 1, 0 when the server closed, -ETIMEDOUT. Keeps count
 * of the connection window the server grants. */
static int read_frame(raw *r, frame *f) {
        uint8_t h[9];
        if (r->out_len > 0)
                ck_assert_int_eq(raw_flush(r), 0);
        uint64_t deadline = now_ms() + PATIENCE_MS;
        int k = read_full(r->fd, h, 9, deadline);
        if (k <= 0)
                return k;
        f->len = (uint32_t) h[0] << 16 | (uint32_t) h[1] << 8 | h[2];
        f->type = h[3];
        f->flags = h[4];
        f->sid = ((uint32_t) h[5] << 24 | (uint32_t) h[6] << 16 | (uint32_t) h[7] << 8 | h[8]) &
                 0x7fffffff;
        ck_assert_uint_le(f->len, sizeof(f->payload));
        k = read_full(r->fd, f->payload, f->len, deadline);
        if (k <= 0)
                return k;
        if (f->type == F_WINDOW_UPDATE && f->sid == 0)
                r->window += (int64_t) ((uint32_t) f->payload[0] << 24 | (uint32_t) f->payload[1] << 16 |
                                        (uint32_t) f->payload[2] << 8 | f->payload[3]);
        return 1;
}

/* Reads until the server closes the connection; counts GOAWAYs on the way.
 * Returns 0 when it closed, -ETIMEDOUT. */
static int read_to_close(raw *r, int *ret_goaways) {
        frame f;
        int k, goaways = 0;
        while ((k = read_frame(r, &f)) > 0)
                goaways += f.type == F_GOAWAY;
        if (ret_goaways)
                *ret_goaways = goaways;
        return k;
}

/* Queues the preface and our SETTINGS (pairs of id, value). */
static void queue_preface(raw *r, const uint32_t *settings, size_t n_pairs) {
        static const char magic[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        uint8_t p[6 * 8];
        ck_assert_uint_le(n_pairs, 8);
        for (size_t i = 0; i < n_pairs; i++) {
                uint16_t id = (uint16_t) settings[2 * i];
                uint32_t v = settings[2 * i + 1];
                uint8_t e[6] = { (uint8_t) (id >> 8), (uint8_t) id, (uint8_t) (v >> 24),
                                 (uint8_t) (v >> 16), (uint8_t) (v >> 8), (uint8_t) v };
                memcpy(p + 6 * i, e, 6);
        }
        queue_bytes(r, magic, sizeof(magic) - 1);
        queue_frame(r, F_SETTINGS, 0, 0, p, 6 * n_pairs);
        /* Our connection window: 1 GiB, never the limit here. */
        uint8_t inc[4] = { 0x3f, 0xff, 0, 0 };
        queue_frame(r, F_WINDOW_UPDATE, 0, 0, inc, 4);
}

/* Sends what is queued, reads the server's SETTINGS and acknowledges them. */
static void read_settings(raw *r) {
        frame f;
        ck_assert_int_eq(raw_flush(r), 0);
        do
                ck_assert_int_eq(read_frame(r, &f), 1);
        while (f.type != F_SETTINGS || (f.flags & FL_ACK));
        for (uint32_t off = 0; off + 6 <= f.len; off += 6) {
                uint16_t id = (uint16_t) (f.payload[off] << 8 | f.payload[off + 1]);
                if (id < 8)
                        r->settings[id] = (uint32_t) f.payload[off + 2] << 24 |
                                          (uint32_t) f.payload[off + 3] << 16 |
                                          (uint32_t) f.payload[off + 4] << 8 | f.payload[off + 5];
        }
        send_frame(r, F_SETTINGS, FL_ACK, 0, NULL, 0);
}

static void handshake(raw *r, const uint32_t *settings, size_t n_pairs) {
        queue_preface(r, settings, n_pairs);
        read_settings(r);
}

/* ---- HPACK by hand ---- */

static size_t hpack_int(uint8_t *p, uint8_t pattern, int bits, size_t v) {
        size_t max = (1u << bits) - 1, n = 0;
        if (v < max) {
                p[n++] = (uint8_t) (pattern | v);
                return n;
        }
        p[n++] = (uint8_t) (pattern | max);
        for (v -= max; v >= 128; v >>= 7)
                p[n++] = (uint8_t) (v % 128 + 128);
        p[n++] = (uint8_t) v;
        return n;
}

/* A literal field with a new name; indexed: added to the dynamic table. */
static size_t hpack_field(uint8_t *p, const char *name, const char *value, bool indexed) {
        size_t n = hpack_int(p, indexed ? 0x40 : 0x00, indexed ? 6 : 4, 0);
        n += hpack_int(p + n, 0, 7, strlen(name));
        memcpy(p + n, name, strlen(name));
        n += strlen(name);
        n += hpack_int(p + n, 0, 7, strlen(value));
        memcpy(p + n, value, strlen(value));
        return n + strlen(value);
}

static size_t request_block(uint8_t *p, const char *path) {
        size_t n = 0;
        n += hpack_field(p + n, ":method", "POST", false);
        n += hpack_field(p + n, ":scheme", "http", false);
        n += hpack_field(p + n, ":path", path, false);
        n += hpack_field(p + n, ":authority", "x", false);
        n += hpack_field(p + n, "content-type", "application/grpc", false);
        n += hpack_field(p + n, "te", "trailers", false);
        return n;
}

static void queue_request_headers(raw *r, uint32_t sid, const char *path) {
        uint8_t b[1024];
        size_t n = request_block(b, path);
        queue_frame(r, F_HEADERS, FL_END_HEADERS, sid, b, n);
}

/* One gRPC message with an EchoRequest of text, ending the stream. */
static void queue_echo_request(raw *r, uint32_t sid, const char *text) {
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        req.text = (char *) text;
        size_t len = protobuf_c_message_get_packed_size(&req.base);
        uint8_t *b = malloc(TS_RPC_FRAME_PREFIX + len);
        ts_rpc_frame_prefix(b, false, (uint32_t) len);
        protobuf_c_message_pack(&req.base, b + TS_RPC_FRAME_PREFIX);
        for (size_t off = 0; off < TS_RPC_FRAME_PREFIX + len; off += 16384) {
                size_t k = TS_RPC_FRAME_PREFIX + len - off;
                k = k > 16384 ? 16384 : k;
                bool last = off + k == TS_RPC_FRAME_PREFIX + len;
                queue_frame(r, F_DATA, last ? FL_END_STREAM : 0, sid, b + off, k);
                r->window -= (int64_t) k;
        }
        free(b);
}

/* ---- answers ---- */

typedef struct answer {
        int status;       /* grpc-status, -1 none */
        uint32_t rst;     /* RST_STREAM's code, 0xffffffff none */
        char message[2048];
        size_t data_bytes;
} answer;

static void decode_block(raw *r, const frame *f, answer *a) {
        const uint8_t *q = f->payload;
        size_t in = f->len;
        ck_assert(f->flags & FL_END_HEADERS);
        for (;;) {
                nghttp2_nv nv;
                int fl = 0;
                ssize_t k = nghttp2_hd_inflate_hd2(r->inf, &nv, &fl, q, in, 1);
                ck_assert_int_ge(k, 0);
                q += k;
                in -= (size_t) k;
                if ((fl & NGHTTP2_HD_INFLATE_EMIT) && a) {
                        char v[2048] = { 0 };
                        memcpy(v, nv.value, nv.valuelen < sizeof(v) - 1 ? nv.valuelen : sizeof(v) - 1);
                        if (nv.namelen == 11 && memcmp(nv.name, "grpc-status", 11) == 0)
                                a->status = (int) strtol(v, NULL, 10);
                        if (nv.namelen == 12 && memcmp(nv.name, "grpc-message", 12) == 0) {
                                char *m;
                                ck_assert_int_eq(ts_rpc_percent_decode(v, strlen(v), &m), 0);
                                snprintf(a->message, sizeof(a->message), "%s", m);
                                free(m);
                        }
                }
                if (fl & NGHTTP2_HD_INFLATE_FINAL) {
                        nghttp2_hd_inflate_end_headers(r->inf);
                        return;
                }
                if (k == 0 && in == 0)
                        return;
        }
}

/* Reads frames until stream sid ends (END_STREAM or RST_STREAM). Returns 1,
 * 0 when the connection closed first, -ETIMEDOUT. */
static int read_answer(raw *r, uint32_t sid, answer *a) {
        frame f;
        int k;
        *a = (answer) { .status = -1, .rst = 0xffffffff };
        while ((k = read_frame(r, &f)) > 0) {
                if (f.type == F_HEADERS)
                        decode_block(r, &f, f.sid == sid ? a : NULL);
                if (f.sid != sid)
                        continue;
                if (f.type == F_DATA)
                        a->data_bytes += f.len;
                if (f.type == F_RST) {
                        a->rst = (uint32_t) f.payload[0] << 24 | (uint32_t) f.payload[1] << 16 |
                                 (uint32_t) f.payload[2] << 8 | f.payload[3];
                        return 1;
                }
                if ((f.type == F_HEADERS || f.type == F_DATA) && (f.flags & FL_END_STREAM))
                        return 1;
        }
        return k;
}

/* Stream sid ends with code and (unless NULL) message. */
static void expect_status(raw *r, uint32_t sid, int code, const char *message) {
        answer a;
        ck_assert_int_eq(read_answer(r, sid, &a), 1);
        ck_assert_int_eq(a.status, code);
        if (message)
                ck_assert_str_eq(a.message, message);
}

static void expect_echo_ok(raw *r, uint32_t sid) {
        answer a;
        queue_request_headers(r, sid, ECHO);
        queue_echo_request(r, sid, "fine");
        ck_assert_int_eq(read_answer(r, sid, &a), 1);
        ck_assert_int_eq(a.status, TS_RPC_OK);
        ck_assert_uint_gt(a.data_bytes, 0);
}

/* An Echo through our own client on a new connection. */
static int client_echo(const char *text) {
        ts_rpc_client *c = NULL;
        ts_error *err = NULL;
        int r = ts_rpc_client_connect(srv.path, &c, &err);
        if (r < 0) {
                ts_error_free(err);
                return r;
        }
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        ts_rpc_call_options o = { .timeout_ns = PATIENCE_MS * 1000000ull };
        req.text = (char *) text;
        r = ts_rpc_client_unary(c, ECHO, &o, &req.base,
                                &thinsnap__test__v1__echo_response__descriptor, &m, &err);
        if (r == 0 && strcmp(((EchoResponse *) m)->text, text) != 0)
                r = -EBADMSG;
        if (m)
                protobuf_c_message_free_unpacked(m, NULL);
        ts_error_free(err);
        ts_rpc_client_free(c);
        return r;
}

/* Calls a method that does not exist, on stream sid, and reads up to its
 * answer: the server queues it behind whatever it had to send before it
 * read the call. Returns how many WINDOW_UPDATEs of the connection came
 * first. */
static int sync_window_updates(raw *r, uint32_t sid) {
        uint8_t b[1024];
        frame f;
        int n = 0;
        size_t len = request_block(b, "/t.Sync/Sync");
        queue_frame(r, F_HEADERS, FL_END_HEADERS | FL_END_STREAM, sid, b, len);
        for (;;) {
                ck_assert_int_eq(read_frame(r, &f), 1);
                if (f.type == F_HEADERS)
                        decode_block(r, &f, NULL);
                if (f.type == F_WINDOW_UPDATE && f.sid == 0)
                        n++;
                if (f.sid == sid && (f.flags & FL_END_STREAM))
                        return n;
        }
}

/* ---- the tests ---- */

START_TEST(header_list_size) {
        ts_rpc_server_options o = { .max_header_list_size = 4096 };
        start(&o, NULL, 0);
        raw r = raw_open();
        handshake(&r, NULL, 0);
        ck_assert_uint_eq(r.settings[NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE], 4096);

        /* 3 KB into HPACK's dynamic table once, then referenced with one
         * byte each: 60 bytes on the wire decode to about 180 KB. */
        char big[3001];
        memset(big, 'h', 3000);
        big[3000] = 0;
        uint8_t *b = malloc(8192);
        size_t n = request_block(b, ECHO);
        n += hpack_field(b + n, "x-big", big, true);
        for (int i = 0; i < 60; i++)
                b[n++] = 0x80 | 62;
        queue_frame(&r, F_HEADERS, FL_END_HEADERS, 1, b, n);
        free(b);
        queue_echo_request(&r, 1, "too much");
        expect_status(&r, 1, TS_RPC_RESOURCE_EXHAUSTED, "request headers larger than 4096 bytes");
        ck_assert_uint_eq(hits(TS_RPC_LIMIT_MAX_HEADER_LIST_SIZE), 1);

        /* The connection goes on. */
        expect_echo_ok(&r, 3);
        ts_rpc_server_stats st;
        ts_rpc_server_stats_get(srv.s, &st);
        ck_assert_uint_eq(st.connections, 1);
        ck_assert_uint_eq(st.connections_total, 1);
        ck_assert_uint_eq(st.calls_total, 2);
        ck_assert_uint_eq(st.queued_calls, 0);
        raw_close(&r);
        stop();
}
END_TEST

START_TEST(concurrent_streams) {
        ts_rpc_server_options o = { .max_concurrent_streams = 4 };
        start(&o, NULL, 0);

        /* Before our ACK of the server's SETTINGS: the fifth is refused. */
        raw r = raw_open();
        queue_preface(&r, NULL, 0);
        for (uint32_t sid = 1; sid <= 9; sid += 2)
                queue_request_headers(&r, sid, ECHO);
        read_settings(&r);
        ck_assert_uint_eq(r.settings[NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS], 4);
        answer a;
        ck_assert_int_eq(read_answer(&r, 9, &a), 1);
        ck_assert_uint_eq(a.rst, NGHTTP2_REFUSED_STREAM);
        ck_assert_uint_eq(hits(TS_RPC_LIMIT_MAX_CONCURRENT_STREAMS), 1);
        queue_echo_request(&r, 1, "one of four");
        expect_status(&r, 1, TS_RPC_OK, NULL);
        raw_close(&r);

        /* After it, a client that opens a fifth loses its connection. */
        r = raw_open();
        handshake(&r, NULL, 0);
        for (uint32_t sid = 1; sid <= 9; sid += 2)
                queue_request_headers(&r, sid, ECHO);
        int goaways;
        ck_assert_int_eq(read_to_close(&r, &goaways), 0);
        ck_assert_int_eq(goaways, 1);
        raw_close(&r);
        ck_assert_int_eq(client_echo("others go on"), 0);
        stop();
}
END_TEST

/* Sends DATA on the streams sids round-robin while the connection window
 * lasts: prefixes declaring 60 KiB messages, then their bytes. */
static void fill_window(raw *r, const uint32_t *sids, size_t n) {
        static uint8_t chunk[4096];
        uint8_t prefix[TS_RPC_FRAME_PREFIX];
        ts_rpc_frame_prefix(prefix, false, 60 * 1024);
        for (size_t i = 0; i < n; i++) {
                queue_request_headers(r, sids[i], ECHO);
                queue_frame(r, F_DATA, 0, sids[i], prefix, sizeof(prefix));
                r->window -= sizeof(prefix);
        }
        for (size_t i = 0; r->window > 0; i = (i + 1) % n) {
                size_t k = r->window < (int64_t) sizeof(chunk) ? (size_t) r->window : sizeof(chunk);
                queue_frame(r, F_DATA, 0, sids[i], chunk, k);
                r->window -= (int64_t) k;
        }
        ck_assert_int_eq(raw_flush(r), 0);
}

START_TEST(connection_window) {
        ts_rpc_server_options o = { .max_message_size = 64 * 1024,
                                    .connection_window = 96 * 1024 };
        start(&o, NULL, 0);
        raw r = raw_open();
        handshake(&r, NULL, 0);
        /* The server's WINDOW_UPDATE raising its window to 96 KiB. */
        sync_window_updates(&r, 1);
        ck_assert_int_eq(r.window, 96 * 1024);

        /* Four messages that never finish: the window is spent and stays
         * spent; nothing more can be sent. */
        static const uint32_t sids[] = { 3, 5, 7, 9 };
        fill_window(&r, sids, 4);
        ck_assert_int_eq(sync_window_updates(&r, 11), 0);
        ck_assert_int_eq(r.window, 0);

        /* The streams go: so does what they held. */
        uint8_t cancel[4] = { 0, 0, 0, NGHTTP2_CANCEL };
        for (size_t i = 0; i < 4; i++)
                queue_frame(&r, F_RST, 0, sids[i], cancel, 4);
        ck_assert_int_ge(sync_window_updates(&r, 13), 1);
        /* (nghttp2 holds an update back until it is half the window.) */
        ck_assert_int_ge(r.window, 48 * 1024);

        /* Requests handed to their handler give their bytes back too. */
        char text[40 * 1024];
        memset(text, 't', sizeof(text) - 1);
        text[sizeof(text) - 1] = 0;
        for (uint32_t sid = 15; sid <= 17; sid += 2) {
                queue_request_headers(&r, sid, ECHO);
                queue_echo_request(&r, sid, text);
                expect_status(&r, sid, TS_RPC_OK, NULL);
        }
        sync_window_updates(&r, 19);
        ck_assert_int_ge(r.window, 48 * 1024);
        raw_close(&r);
        stop();
}
END_TEST

START_TEST(max_connections) {
        ts_rpc_server_options o = { .max_connections = 3 };
        start(&o, NULL, 0);
        raw idle[3];
        for (int i = 0; i < 3; i++) {
                idle[i] = raw_open();
                handshake(&idle[i], NULL, 0);
        }
        /* A fourth: the one idle longest makes room, told with GOAWAY. */
        raw fourth = raw_open();
        handshake(&fourth, NULL, 0);
        int goaways;
        ck_assert_int_eq(read_to_close(&idle[0], &goaways), 0);
        ck_assert_int_eq(goaways, 1);
        expect_echo_ok(&fourth, 1);
        ck_assert_uint_eq(hits(TS_RPC_LIMIT_CONNECTION_EVICTED), 1);
        for (int i = 0; i < 3; i++)
                raw_close(&idle[i]);
        raw_close(&fourth);
        stop();

        /* Every connection busy: a new one is closed at once. */
        o.max_connections = 2;
        start(&o, &ts_testsvc_gate, 1);
        ts_testsvc_gate_set(false);
        raw busy[2];
        for (uint32_t i = 0; i < 2; i++) {
                busy[i] = raw_open();
                queue_preface(&busy[i], NULL, 0);
                queue_request_headers(&busy[i], 1, ts_testsvc_gate.path);
                queue_echo_request(&busy[i], 1, "");
                read_settings(&busy[i]);
                ck_assert_uint_eq(ts_testsvc_gate_wait_for(i + 1), i + 1);
        }
        raw refused = raw_open();
        ck_assert_int_eq(read_to_close(&refused, NULL), 0);
        raw_close(&refused);
        ck_assert_uint_eq(hits(TS_RPC_LIMIT_MAX_CONNECTIONS), 1);
        ts_testsvc_gate_set(true);
        for (int i = 0; i < 2; i++)
                expect_status(&busy[i], 1, TS_RPC_OK, NULL);
        raw_close(&busy[0]);
        ck_assert_int_eq(client_echo("room again"), 0);
        raw_close(&busy[1]);
        stop();
}
END_TEST

START_TEST(handshake_timeout) {
        ts_rpc_server_options o = { .handshake_timeout_ms = 500 };
        start(&o, NULL, 0);
        raw served = raw_open();
        handshake(&served, NULL, 0);

        raw silent = raw_open();
        ck_assert_int_eq(read_to_close(&silent, NULL), 0);
        raw half = raw_open();
        queue_bytes(&half, "PRI * HTTP/2.0\r\n", 16);
        ck_assert_int_eq(raw_flush(&half), 0);
        ck_assert_int_eq(read_to_close(&half, NULL), 0);

        /* A connection that did start is not touched by this timeout. */
        expect_echo_ok(&served, 1);
        ck_assert_uint_eq(hits(TS_RPC_LIMIT_HANDSHAKE_TIMEOUT), 2);
        raw_close(&silent);
        raw_close(&half);
        raw_close(&served);
        stop();
}
END_TEST

START_TEST(idle_timeout) {
        ts_rpc_server_options o = { .idle_timeout_ms = 100 };
        start(&o, &ts_testsvc_gate, 1);
        ts_testsvc_gate_set(false);
        /* Busy for longer than the idle timeout: kept. */
        raw r = raw_open();
        queue_preface(&r, NULL, 0);
        queue_request_headers(&r, 1, ts_testsvc_gate.path);
        queue_echo_request(&r, 1, "");
        read_settings(&r);
        ts_testsvc_gate_wait_for(1);
        usleep(300 * 1000);
        ts_testsvc_gate_set(true);
        expect_status(&r, 1, TS_RPC_OK, NULL);
        /* Idle: GOAWAY, then closed. */
        int goaways;
        ck_assert_int_eq(read_to_close(&r, &goaways), 0);
        ck_assert_int_eq(goaways, 1);
        ck_assert_uint_eq(hits(TS_RPC_LIMIT_IDLE_TIMEOUT), 1);
        raw_close(&r);
        stop();
}
END_TEST

START_TEST(request_timeout) {
        ts_rpc_server_options o = { .request_timeout_ms = 100 };
        start(&o, NULL, 0);
        raw r = raw_open();
        queue_preface(&r, NULL, 0);
        queue_request_headers(&r, 1, ECHO);
        uint8_t partial[7] = { 0, 0, 0, 0, 10, 0x0a, 8 };
        queue_frame(&r, F_DATA, 0, 1, partial, sizeof(partial));
        read_settings(&r);
        expect_status(&r, 1, TS_RPC_DEADLINE_EXCEEDED, "request not complete within 100 ms");
        ck_assert_uint_eq(hits(TS_RPC_LIMIT_REQUEST_TIMEOUT), 1);
        expect_echo_ok(&r, 3);
        raw_close(&r);
        stop();
}
END_TEST

START_TEST(ping_answered) {
        start(NULL, NULL, 0);
        raw r = raw_open();
        handshake(&r, NULL, 0);
        send_frame(&r, F_PING, 0, 0, "keepaliv", 8);
        frame f;
        do
                ck_assert_int_eq(read_frame(&r, &f), 1);
        while (f.type != F_PING);
        ck_assert_uint_eq(f.flags, FL_ACK);
        ck_assert_uint_eq(f.len, 8);
        ck_assert_int_eq(memcmp(f.payload, "keepaliv", 8), 0);
        raw_close(&r);
        stop();
}
END_TEST

/* /t.Flood/Flood: sends 16 KiB messages until a send fails, and says
 * how it failed. */
static pthread_mutex_t flood_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flood_cond = PTHREAD_COND_INITIALIZER;
static int flood_result = 1;

static int flood(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        static uint8_t blob[16384];
        int r;
        while ((r = ts_rpc_call_send_bytes(call, blob, sizeof(blob))) == 0)
                ;
        pthread_mutex_lock(&flood_lock);
        flood_result = r;
        pthread_cond_broadcast(&flood_cond);
        pthread_mutex_unlock(&flood_lock);
        return ts_rpc_call_errno(call, r, NULL);
}

static const ts_rpc_method flood_method = {
        .path = "/t.Flood/Flood", .handler = flood, .server_streaming = true
};

/* Waits for the flood handler's failed send; returns it, or 1 when none
 * came. */
static int flood_wait(void) {
        uint64_t deadline = now_ms() + PATIENCE_MS;
        pthread_mutex_lock(&flood_lock);
        while (flood_result > 0 && now_ms() < deadline) {
                pthread_mutex_unlock(&flood_lock);
                usleep(1000);
                pthread_mutex_lock(&flood_lock);
        }
        int r = flood_result;
        flood_result = 1;
        pthread_mutex_unlock(&flood_lock);
        return r;
}

START_TEST(send_timeout) {
        ts_rpc_server_options o = { .send_timeout_ms = 200, .stream_queue_bytes = 64 * 1024 };
        start(&o, &flood_method, 1);

        /* A stream window of 0: nothing of the reply can be sent. */
        raw r = raw_open();
        uint32_t zero_window[] = { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0 };
        queue_preface(&r, zero_window, 1);
        queue_request_headers(&r, 1, flood_method.path);
        queue_echo_request(&r, 1, "");
        read_settings(&r);
        ck_assert_int_eq(flood_wait(), -ECANCELED);
        answer a;
        ck_assert_int_eq(read_answer(&r, 1, &a), 1);
        ck_assert_uint_eq(a.rst, NGHTTP2_CANCEL);
        ck_assert_uint_eq(hits(TS_RPC_LIMIT_SEND_TIMEOUT), 1);
        raw_close(&r);

        /* A client that reads nothing at all: the connection goes. */
        raw deaf = raw_open();
        uint32_t big_window[] = { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x7fffffff };
        queue_preface(&deaf, big_window, 1);
        queue_request_headers(&deaf, 1, flood_method.path);
        queue_echo_request(&deaf, 1, "");
        ck_assert_int_eq(raw_flush(&deaf), 0);
        ck_assert_int_eq(flood_wait(), -ECANCELED);

        ck_assert_int_eq(client_echo("others are served"), 0);
        ck_assert_uint_ge(hits_reach(TS_RPC_LIMIT_SEND_TIMEOUT, 2), 2);
        raw_close(&deaf);
        stop();
}
END_TEST

/* Reads until the PING's ACK or the end of the connection, without a
 * check that could allocate (Check's do, and allocations fail on demand
 * here). Returns 1, 0, or -ETIMEDOUT. */
static int read_to_ping_ack(int fd) {
        uint64_t deadline = now_ms() + PATIENCE_MS;
        static uint8_t payload[16384];
        for (;;) {
                uint8_t h[9];
                int k = read_full(fd, h, 9, deadline);
                if (k <= 0)
                        return k;
                size_t len = (size_t) h[0] << 16 | (size_t) h[1] << 8 | h[2];
                if (len > sizeof(payload))
                        return 0;
                k = read_full(fd, payload, len, deadline);
                if (k <= 0)
                        return k;
                if (h[3] == F_PING && h[4] == FL_ACK)
                        return 1;
        }
}

START_TEST(accept_out_of_memory) {
        start(NULL, NULL, 0);
        /* Each allocation the server makes for a new connection fails in
         * turn; every time, the next connection is served. */
        for (unsigned long k = 1;; k++) {
                raw r = raw_open();
                queue_preface(&r, NULL, 0);
                queue_frame(&r, F_PING, 0, 0, "accepted", 8);
                ts_failalloc_arm(k);
                (void) raw_flush(&r);
                int got = read_to_ping_ack(r.fd);
                bool fired = ts_failalloc_fired();
                ts_failalloc_arm(0);
                ck_assert_int_ne(got, -ETIMEDOUT);
                raw_close(&r);
                ck_assert_int_eq(client_echo("next"), 0);
                if (!fired)
                        break;
        }
        stop();
}
END_TEST

/* The highest descriptor number open. */
static int highest_fd(void) {
        int high = 0;
        DIR *d = opendir("/proc/self/fd");
        ck_assert_ptr_nonnull(d);
        struct dirent *e;
        while ((e = readdir(d))) {
                int fd = (int) strtol(e->d_name, NULL, 10);
                if (fd > high)
                        high = fd;
        }
        closedir(d);
        return high;
}

START_TEST(accept_out_of_descriptors) {
        start(NULL, NULL, 0);

        /* No descriptor left for the server to accept r with: every free
         * one is taken before r connects but the one r's socket gets, so
         * the server cannot have accepted r already. */
        struct rlimit old, low;
        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
        low = old;
        low.rlim_cur = (rlim_t) highest_fd() + 2;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
        int fillers[1024], n = 0;
        while (n < 1024 && (fillers[n] = dup(0)) >= 0)
                n++;
        ck_assert_int_lt(n, 1024);
        ck_assert_int_ge(n, 1);
        close(fillers[--n]);
        raw r = raw_open();
        ck_assert_int_lt(dup(0), 0);

        /* It is taken and closed: the client hears at once. */
        ck_assert_int_eq(read_to_close(&r, NULL), 0);
        ck_assert_uint_ge(hits(TS_RPC_LIMIT_ACCEPT_FAILED), 1);
        while (n > 0)
                close(fillers[--n]);
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
        raw_close(&r);
        ck_assert_int_eq(client_echo("after"), 0);
        stop();
}
END_TEST

START_TEST(options_checked) {
        ts_rpc_server *s = NULL;
        ts_rpc_server_options o = { .max_message_size = 1 << 20, .connection_window = 1 << 20 };
        ck_assert_int_eq(ts_rpc_server_new(&o, &s), -EINVAL);
        o.connection_window = (1 << 20) + TS_RPC_FRAME_PREFIX;
        ck_assert_int_eq(ts_rpc_server_new(&o, &s), 0);
        ts_rpc_server_free(s);
        o = (ts_rpc_server_options) { 0 };
        ck_assert_int_eq(ts_rpc_server_options_resolve(&o), 0);
        ck_assert_uint_eq(o.connection_window, 2 * (TS_RPC_DEFAULT_MAX_MESSAGE + TS_RPC_FRAME_PREFIX));
        ck_assert_uint_eq(o.max_header_list_size, 64 * 1024);
}
END_TEST

int main(void) {
        Suite *s = suite_create("rpc-limits");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, header_list_size);
        tcase_add_test(tc, concurrent_streams);
        tcase_add_test(tc, connection_window);
        tcase_add_test(tc, max_connections);
        tcase_add_test(tc, handshake_timeout);
        tcase_add_test(tc, idle_timeout);
        tcase_add_test(tc, request_timeout);
        tcase_add_test(tc, ping_answered);
        tcase_add_test(tc, send_timeout);
        tcase_add_test(tc, accept_out_of_memory);
        tcase_add_test(tc, accept_out_of_descriptors);
        tcase_add_test(tc, options_checked);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
