/* The rpc server and client against each other, in one process, over a
 * real unix socket, with the test service (tests/lib/testsvc/testsvc.proto). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "rpc/client.h"
#include "rpc/frame.h"
#include "rpc/server-internal.h"
#include "testsvc.h"
#include "tests/unit/ts-check.h"

#define TEST_ECHO "/thinsnap.test.v1.Test/Echo"
#define TEST_STREAM "/thinsnap.test.v1.Test/Stream"
#define TEST_FAIL "/thinsnap.test.v1.Test/Fail"

typedef Thinsnap__Test__V1__EchoRequest EchoRequest;
typedef Thinsnap__Test__V1__EchoResponse EchoResponse;

typedef ts_testsvc_server test_server;

static void test_server_start(test_server *t, const ts_rpc_server_options *o,
                              const ts_rpc_method *extra, size_t n_extra) {
        ck_assert_int_eq(ts_testsvc_start(t, o, extra, n_extra), 0);
}

static void test_server_stop(test_server *t) {
        ck_assert_int_eq(ts_testsvc_stop(t), 0);
}

static test_server main_server;

static uint32_t grace_ms;

static void start_server(uint32_t max_message) {
        ts_rpc_server_options o = { .max_message_size = max_message,
                                    .shutdown_grace_ms = grace_ms };
        test_server_start(&main_server, &o, NULL, 0);
}

static void stop_server(void) {
        test_server_stop(&main_server);
}

static ts_rpc_client *connect_to(const char *path) {
        ts_rpc_client *c = NULL;
        ts_error *err = NULL;
        ck_assert_int_eq(ts_rpc_client_connect(path, &c, &err), 0);
        return c;
}

static ts_rpc_client *connect_client(void) {
        return connect_to(main_server.path);
}

/* One Echo call; returns the errno-style result, the response in *ret. */
static int echo_call(ts_rpc_client *c, const char *method, const EchoRequest *req,
                     const ts_rpc_call_options *o, EchoResponse **ret, ts_error **err) {
        ProtobufCMessage *m = NULL;
        int r = ts_rpc_client_unary(c, method, o, &req->base,
                                    &thinsnap__test__v1__echo_response__descriptor, &m, err);
        if (r == 0)
                *ret = (EchoResponse *) m;
        return r;
}

/* One plain Echo of text that must succeed and answer text. */
static void expect_echo(ts_rpc_client *c, const char *text) {
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        EchoResponse *resp = NULL;

        req.text = (char *) text;
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, NULL, &resp, NULL), 0);
        ck_assert_str_eq(resp->text, text);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* Runs a raw call and returns its final status code and message copy. The
 * server may end the call before its request is sent (an unknown method,
 * a full queue): the send then fails with the call's status. */
static int raw_status(ts_rpc_client *c, const char *method, const void *data, size_t len,
                      const ts_rpc_call_options *o, char **ret_msg) {
        ts_rpc_client_call *cc = NULL;
        ck_assert_int_eq(ts_rpc_client_call_start(c, method, o, &cc, NULL), 0);
        (void) ts_rpc_client_call_send(cc, data, len, NULL);
        ck_assert_int_eq(ts_rpc_client_call_close_send(cc), 0);
        const char *m;
        int code = ts_rpc_client_call_status(cc, &m);
        if (ret_msg)
                *ret_msg = strdup(m);
        ts_rpc_client_call_free(cc);
        return code;
}

START_TEST(unary_and_metadata) {
        start_server(0);
        ts_rpc_client *c = connect_client();
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        EchoResponse *resp = NULL;
        ts_error *err = NULL;

        req.text = "hello";
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, NULL, &resp, &err), 0);
        ck_assert_str_eq(resp->text, "hello");
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        ts_rpc_metadata md[] = { { "containerd-namespace", "k8s.io" }, { "x-other", "v" } };
        ts_rpc_call_options o = { .metadata = md, .n_metadata = 2 };
        req.metadata_key = "containerd-namespace";
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, &o, &resp, &err), 0);
        ck_assert_str_eq(resp->text, "k8s.io");
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        req.metadata_key = "absent";
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, &o, &resp, &err), 0);
        ck_assert_str_eq(resp->text, "(none)");
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        /* A 1 MiB response crosses many DATA frames and window updates. */
        req.metadata_key = "";
        req.size = 1 << 20;
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, NULL, &resp, &err), 0);
        ck_assert_uint_eq(resp->blob.len, 1 << 20);
        ck_assert_int_eq(resp->blob.data[12345], 'x');
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        struct stat st;
        ck_assert_int_eq(stat(main_server.path, &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0660);

        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

START_TEST(status_errors) {
        start_server(64 * 1024);
        ts_rpc_client *c = connect_client();
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        EchoResponse *resp = NULL;
        ts_error *err = NULL;
        char *msg = NULL;

        /* Handler error with a message that needs percent-encoding. */
        req.text = "snapshot \"a/b\" 100% gone\n\xc3\xa9";
        ck_assert_int_eq(echo_call(c, TEST_FAIL, &req, NULL, &resp, &err), -ENOENT);
        ck_assert_int_eq(err->errnum, ENOENT);
        ck_assert_ptr_nonnull(strstr(err->msg, "NOT_FOUND"));
        ck_assert_ptr_nonnull(strstr(err->msg, "snapshot \"a/b\" 100% gone\n\xc3\xa9"));
        err = ts_error_free(err);

        ck_assert_int_eq(echo_call(c, "/thinsnap.test.v1.Test/Nope", &req, NULL, &resp, &err),
                         -EOPNOTSUPP);
        err = ts_error_free(err);
        ck_assert_int_eq(raw_status(c, "/no.Such/Method", "", 0, NULL, &msg), TS_RPC_UNIMPLEMENTED);
        ck_assert_ptr_nonnull(strstr(msg, "/no.Such/Method"));
        free(msg);

        /* Does not decode: a field 1 of length 100 with 2 bytes. */
        static const uint8_t bad[] = { 0x0a, 100, 'a', 'b' };
        ck_assert_int_eq(raw_status(c, TEST_ECHO, bad, sizeof(bad), NULL, &msg), TS_RPC_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(msg, "EchoRequest"));
        free(msg);

        /* Over the server's 64 KiB limit. */
        size_t big = 64 * 1024 + 1;
        uint8_t *blob = calloc(1, big);
        ck_assert_int_eq(raw_status(c, TEST_ECHO, blob, big, NULL, &msg), TS_RPC_RESOURCE_EXHAUSTED);
        free(msg);
        free(blob);
        /* Exactly at the limit is fine (a valid message: field 1, bytes). */
        req.text = NULL;
        size_t tl = 64 * 1024 - 4;
        char *t = malloc(tl + 1);
        memset(t, 'q', tl);
        t[tl] = 0;
        req.text = t;
        ck_assert_uint_eq(protobuf_c_message_get_packed_size(&req.base), 64 * 1024);
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, NULL, &resp, &err), 0);
        ck_assert_uint_eq(strlen(resp->text), tl);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        free(t);

        /* Two request messages on a unary method. */
        ts_rpc_client_call *cc;
        ck_assert_int_eq(ts_rpc_client_call_start(c, TEST_ECHO, NULL, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send(cc, "", 0, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send(cc, "", 0, NULL), 0);
        ts_rpc_client_call_close_send(cc);
        ck_assert_int_eq(ts_rpc_client_call_status(cc, NULL), TS_RPC_INTERNAL);
        ts_rpc_client_call_free(cc);

        /* The connection is still good after all that. */
        expect_echo(c, "still here");

        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

START_TEST(streaming) {
        start_server(0);
        ts_rpc_client *c = connect_client();
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        ts_rpc_client_call *cc;
        ts_error *err = NULL;

        /* 200 messages of 64 KiB: more than the per-call queue bound, so the
         * handler is held back by the loop while the client reads. */
        req.text = "s";
        req.repeat = 200;
        req.size = 64 * 1024;
        ck_assert_int_eq(ts_rpc_client_call_start(c, TEST_STREAM, NULL, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send_message(cc, &req.base, NULL), 0);
        ts_rpc_client_call_close_send(cc);
        uint32_t n = 0;
        for (;;) {
                ProtobufCMessage *m = NULL;
                int r = ts_rpc_client_call_recv_message(
                        cc, &thinsnap__test__v1__echo_response__descriptor, &m, &err);
                ck_assert_int_ge(r, 0);
                if (r == 0)
                        break;
                EchoResponse *e = (EchoResponse *) m;
                ck_assert_uint_eq(e->index, n);
                ck_assert_uint_eq(e->blob.len, 64 * 1024);
                n++;
                protobuf_c_message_free_unpacked(m, NULL);
        }
        ck_assert_uint_eq(n, 200);
        ck_assert_int_eq(ts_rpc_client_call_status(cc, NULL), TS_RPC_OK);
        ts_rpc_client_call_free(cc);

        /* Empty stream: trailers only, OK. */
        req.repeat = 0;
        ck_assert_int_eq(ts_rpc_client_call_start(c, TEST_STREAM, NULL, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send_message(cc, &req.base, NULL), 0);
        ts_rpc_client_call_close_send(cc);
        uint8_t *raw;
        size_t len;
        ck_assert_int_eq(ts_rpc_client_call_recv(cc, &raw, &len, NULL), 0);
        ts_rpc_client_call_free(cc);

        /* Failing midway: the messages sent before, then the status. */
        req.repeat = 10;
        req.size = 0;
        req.fail_at = 3;
        ck_assert_int_eq(ts_rpc_client_call_start(c, TEST_STREAM, NULL, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send_message(cc, &req.base, NULL), 0);
        ts_rpc_client_call_close_send(cc);
        n = 0;
        int r;
        while ((r = ts_rpc_client_call_recv(cc, &raw, &len, &err)) > 0) {
                n++;
                free(raw);
        }
        ck_assert_int_eq(n, 3);
        ck_assert_int_eq(r, -EAGAIN);
        const char *msg;
        ck_assert_int_eq(ts_rpc_client_call_status(cc, &msg), TS_RPC_ABORTED);
        ck_assert_str_eq(msg, "failed at 3");
        err = ts_error_free(err);
        ts_rpc_client_call_free(cc);

        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

START_TEST(deadlines) {
        start_server(0);
        ts_rpc_client *c = connect_client();
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        ts_error *err = NULL;
        char *msg = NULL;
        uint8_t buf[32];

        /* The server alone enforces this one: the client was given no
         * deadline, only the grpc-timeout header. */
        req.text = "slow";
        req.sleep_ms = 30000;
        size_t len = protobuf_c_message_pack(&req.base, buf);
        ts_rpc_metadata md[] = { { "grpc-timeout", "50m" } };
        ts_rpc_call_options o = { .metadata = md, .n_metadata = 1 };
        ck_assert_int_eq(raw_status(c, TEST_ECHO, buf, len, &o, &msg), TS_RPC_DEADLINE_EXCEEDED);
        ck_assert_str_eq(msg, "deadline exceeded");
        free(msg);

        /* A client deadline ends the wait with -ETIMEDOUT, whoever notices. */
        ts_rpc_call_options o2 = { .timeout_ns = 50 * 1000000ull };
        EchoResponse *resp = NULL;
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, &o2, &resp, &err), -ETIMEDOUT);
        err = ts_error_free(err);

        /* A generous deadline does not get in the way. */
        req.sleep_ms = 1;
        ts_rpc_call_options o3 = { .timeout_ns = 60 * 1000000000ull };
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, &o3, &resp, &err), 0);
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

typedef struct {
        ts_rpc_client *c;
        int id;
        int failures;
} worker_arg;

static void *worker(void *p) {
        worker_arg *a = p;
        char text[32];
        for (int i = 0; i < 25; i++) {
                EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
                EchoResponse *resp = NULL;
                ts_error *err = NULL;
                snprintf(text, sizeof(text), "w%d-%d", a->id, i);
                req.text = text;
                req.sleep_ms = (uint32_t) (i % 3);
                if (echo_call(a->c, TEST_ECHO, &req, NULL, &resp, &err) < 0 || strcmp(resp->text, text))
                        a->failures++;
                if (resp)
                        protobuf_c_message_free_unpacked(&resp->base, NULL);
                ts_error_free(err);
        }
        return NULL;
}

START_TEST(concurrent_streams) {
        start_server(0);
        ts_rpc_client *c = connect_client();
        pthread_t t[8];
        worker_arg a[8];

        /* 8 threads share one connection; plus 40 calls opened at once. */
        for (int i = 0; i < 8; i++) {
                a[i] = (worker_arg) { .c = c, .id = i };
                ck_assert_int_eq(pthread_create(&t[i], NULL, worker, &a[i]), 0);
        }
        ts_rpc_client_call *cc[40];
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        req.text = "many";
        req.repeat = 5;
        req.sleep_ms = 2;
        for (int i = 0; i < 40; i++) {
                ck_assert_int_eq(ts_rpc_client_call_start(c, TEST_STREAM, NULL, &cc[i], NULL), 0);
                ck_assert_int_eq(ts_rpc_client_call_send_message(cc[i], &req.base, NULL), 0);
                ts_rpc_client_call_close_send(cc[i]);
        }
        for (int i = 0; i < 40; i++) {
                uint8_t *m;
                size_t len;
                int n = 0, r;
                while ((r = ts_rpc_client_call_recv(cc[i], &m, &len, NULL)) > 0) {
                        n++;
                        free(m);
                }
                ck_assert_int_eq(r, 0);
                ck_assert_int_eq(n, 5);
                ts_rpc_client_call_free(cc[i]);
        }
        for (int i = 0; i < 8; i++) {
                pthread_join(t[i], NULL);
                ck_assert_int_eq(a[i].failures, 0);
        }
        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

START_TEST(cancel_and_disconnect) {
        start_server(0);
        ts_rpc_client *c = connect_client();
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        ts_rpc_client_call *cc;
        uint8_t *m;
        size_t len;

        /* An endless stream, cancelled by the client after a few. */
        req.text = "c";
        req.repeat = 1000000;
        ck_assert_int_eq(ts_rpc_client_call_start(c, TEST_STREAM, NULL, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send_message(cc, &req.base, NULL), 0);
        ts_rpc_client_call_close_send(cc);
        for (int i = 0; i < 3; i++) {
                ck_assert_int_eq(ts_rpc_client_call_recv(cc, &m, &len, NULL), 1);
                free(m);
        }
        ts_rpc_client_call_cancel(cc);
        ck_assert_int_eq(ts_rpc_client_call_status(cc, NULL), TS_RPC_CANCELLED);
        ts_rpc_client_call_free(cc);

        /* A client that goes away mid-call: the handler is cancelled and the
         * server keeps serving others. */
        ts_rpc_client *c2 = connect_client();
        req.repeat = 1000000;
        ck_assert_int_eq(ts_rpc_client_call_start(c2, TEST_STREAM, NULL, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send_message(cc, &req.base, NULL), 0);
        ts_rpc_client_call_close_send(cc);
        ck_assert_int_eq(ts_rpc_client_call_recv(cc, &m, &len, NULL), 1);
        free(m);
        ts_rpc_client_call_free(cc);
        ts_rpc_client_free(c2);

        expect_echo(c, "after");
        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

START_TEST(garbage_peer) {
        start_server(0);
        /* Not HTTP/2 at all: the server drops that connection only. */
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, main_server.path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        ck_assert_int_eq(write(fd, junk, sizeof(junk) - 1), (ssize_t) sizeof(junk) - 1);
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                ;
        ck_assert_int_eq(n, 0); /* closed by the server */
        close(fd);

        ts_rpc_client *c = connect_client();
        expect_echo(c, "ok");
        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

typedef struct {
        ts_rpc_client *c;
        int r;
        char *text;
} slow_arg;

static void *slow_call(void *p) {
        slow_arg *a = p;
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        EchoResponse *resp = NULL;
        req.text = "in flight";
        req.sleep_ms = 300;
        a->r = echo_call(a->c, TEST_ECHO, &req, NULL, &resp, NULL);
        if (a->r == 0) {
                a->text = strdup(resp->text);
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        return NULL;
}

START_TEST(graceful_shutdown) {
        start_server(0);
        ts_rpc_client *c = connect_client();
        slow_arg a = { .c = c };
        pthread_t t;

        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        EchoResponse *resp = NULL;

        /* Make sure the slow call reached its handler before shutting down. */
        expect_echo(c, "warm");
        ck_assert_int_eq(pthread_create(&t, NULL, slow_call, &a), 0);
        usleep(100 * 1000);

        ts_rpc_server_shutdown(main_server.s);
        pthread_join(main_server.thread, NULL); /* returns only after the call ended */
        pthread_join(t, NULL);
        ck_assert_int_eq(a.r, 0);
        ck_assert_str_eq(a.text, "in flight");
        free(a.text);

        /* Nothing listens any more; calls on the old connection fail. */
        ts_rpc_client *c2 = NULL;
        ck_assert_int_lt(ts_rpc_client_connect(main_server.path, &c2, NULL), 0);
        req.text = "late";
        ts_error *err = NULL;
        ck_assert_int_lt(echo_call(c, TEST_ECHO, &req, NULL, &resp, &err), 0);
        ts_error_free(err);
        ts_rpc_client_free(c);
        main_server.s = ts_rpc_server_free(main_server.s);
        unlink(main_server.path);
}
END_TEST

START_TEST(shutdown_grace) {
        grace_ms = 200;
        start_server(0);
        ts_rpc_client *c = connect_client();
        ts_rpc_client_call *cc;
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;

        expect_echo(c, "warm");
        /* A request that never ends holds its stream open... */
        ck_assert_int_eq(ts_rpc_client_call_start(c, TEST_ECHO, NULL, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send_message(cc, &req.base, NULL), 0);
        usleep(50 * 1000);
        /* ...until the grace period ends and the server closes it. */
        ts_rpc_server_shutdown(main_server.s);
        pthread_join(main_server.thread, NULL);
        ck_assert_int_eq(main_server.rc, 0);
        ck_assert_int_eq(ts_rpc_client_call_status(cc, NULL), TS_RPC_UNAVAILABLE);
        ts_rpc_client_call_free(cc);
        ts_rpc_client_free(c);
        main_server.s = ts_rpc_server_free(main_server.s);
        unlink(main_server.path);
}
END_TEST

START_TEST(socket_file) {
        start_server(0);
        /* A second server on a live socket is refused. */
        ts_rpc_server *s2;
        ts_error *err = NULL;
        ck_assert_int_eq(ts_rpc_server_new(NULL, &s2), 0);
        ck_assert_int_eq(ts_rpc_server_listen(s2, main_server.path, 0600, &err), -EADDRINUSE);
        err = ts_error_free(err);
        ts_rpc_server_free(s2);
        stop_server();

        /* A stale socket file (bound, nobody listening) is replaced. */
        char dir[] = "/tmp/ts-rpc-XXXXXX";
        ck_assert_ptr_nonnull(mkdtemp(dir));
        char path[108];
        snprintf(path, sizeof(path), "%s/stale.sock", dir);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        ck_assert_int_eq(ts_rpc_server_new(NULL, &s2), 0);
        ck_assert_int_eq(ts_rpc_server_listen(s2, path, 0600, &err), 0);
        ts_rpc_server_free(s2);
        unlink(path);

        /* A regular file is not removed. */
        fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        close(fd);
        ck_assert_int_eq(ts_rpc_server_new(NULL, &s2), 0);
        ck_assert_int_eq(ts_rpc_server_listen(s2, path, 0600, &err), -ENOTSOCK);
        err = ts_error_free(err);
        ts_rpc_server_free(s2);
        ck_assert_int_eq(unlink(path), 0);
        rmdir(dir);
}
END_TEST

START_TEST(messages_cut) {
        start_server(0);
        ts_rpc_client *c = connect_client();
        char *msg = NULL;

        /* A 10 KB method path is quoted up to 256 bytes. */
        char path[10001];
        memset(path, 'p', sizeof(path) - 1);
        path[0] = '/';
        path[5000] = '/';
        path[sizeof(path) - 1] = 0;
        ck_assert_int_eq(raw_status(c, path, "", 0, NULL, &msg), TS_RPC_UNIMPLEMENTED);
        ck_assert_uint_eq(strlen(msg), strlen("unknown method ") + TS_RPC_QUOTE_MAX);
        ck_assert_int_eq(strncmp(msg, "unknown method /ppp", 19), 0);
        free(msg);

        /* A handler's message that echoes 10 KB of request is cut to 1 KiB. */
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        EchoResponse *resp = NULL;
        ts_error *err = NULL;
        char text[10001];
        memset(text, 'k', sizeof(text) - 1);
        text[sizeof(text) - 1] = 0;
        req.text = text;
        ck_assert_int_eq(echo_call(c, TEST_FAIL, &req, NULL, &resp, &err), -ENOENT);
        const char *m = strstr(err->msg, "kkk");
        ck_assert_ptr_nonnull(m);
        ck_assert_uint_eq(strlen(m), TS_RPC_MESSAGE_MAX);
        ck_assert_str_eq(m + TS_RPC_MESSAGE_MAX - 3, "...");
        ts_error_free(err);

        expect_echo(c, "still fine");
        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

/* ---- handler threads, the handler queue, the caller's credentials ---- */

static void gate_wait_for(unsigned n) {
        ck_assert_uint_eq(ts_testsvc_gate_wait_for(n), n);
}

/* Starts a call of the gate with an empty request; its status is read later. */
static ts_rpc_client_call *gate_call(ts_rpc_client *c) {
        ts_rpc_call_options o = { .timeout_ns = 60 * 1000000000ull };
        ts_rpc_client_call *cc;
        ck_assert_int_eq(ts_rpc_client_call_start(c, ts_testsvc_gate.path, &o, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send(cc, "", 0, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_close_send(cc), 0);
        return cc;
}

/* Waits until n calls of s wait for a handler thread. */
static void wait_queued(ts_rpc_server *s, unsigned n) {
        for (;;) {
                pthread_mutex_lock(&s->lock);
                unsigned q = s->n_queued;
                pthread_mutex_unlock(&s->lock);
                if (q == n)
                        return;
                usleep(1000);
        }
}

/* A job of pool_grows_and_ends: counts itself, then waits for the gate. */
typedef struct pool_job {
        ts_rpc_job job;
        pthread_mutex_t *lock;
        pthread_cond_t *cond;
        unsigned *started, *done;
        bool *open;
} pool_job;

static void pool_job_run(ts_rpc_job *j) {
        pool_job *pj = (pool_job *) j;
        pthread_mutex_lock(pj->lock);
        (*pj->started)++;
        pthread_cond_broadcast(pj->cond);
        while (!*pj->open)
                pthread_cond_wait(pj->cond, pj->lock);
        (*pj->done)++;
        pthread_cond_broadcast(pj->cond);
        pthread_mutex_unlock(pj->lock);
}

static void pool_wait_threads(ts_rpc_pool *p, unsigned n) {
        for (int i = 0; i < 10000 && ts_rpc_pool_threads(p) != n; i++)
                usleep(1000);
        ck_assert_uint_eq(ts_rpc_pool_threads(p), n);
}

START_TEST(pool_grows_and_ends) {
        pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
        unsigned started = 0, done = 0;
        bool open = false;
        pool_job jobs[6];
        ts_rpc_pool *p = NULL;

        ck_assert_int_eq(ts_rpc_pool_new(0, 0, &p), -EINVAL);
        ck_assert_int_eq(ts_rpc_pool_new(4, 50, &p), 0);
        ck_assert_uint_eq(ts_rpc_pool_threads(p), 1);
        for (int i = 0; i < 6; i++) {
                jobs[i] = (pool_job) { { NULL, pool_job_run }, &lock, &cond, &started, &done, &open };
                ts_rpc_pool_submit(p, &jobs[i].job);
        }
        /* Four run at once (the maximum), two wait; none waits for a thread
         * while fewer than four run. */
        pthread_mutex_lock(&lock);
        while (started < 4)
                pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        ck_assert_uint_eq(ts_rpc_pool_threads(p), 4);
        usleep(100 * 1000);
        pthread_mutex_lock(&lock);
        ck_assert_uint_eq(started, 4);
        open = true;
        pthread_cond_broadcast(&cond);
        while (done < 6)
                pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        /* Idle past 50 ms: the spare threads end, one stays. */
        pool_wait_threads(p, 1);
        usleep(200 * 1000);
        ck_assert_uint_eq(ts_rpc_pool_threads(p), 1);
        /* It grows again for the next burst, and free runs what is queued. */
        open = false;
        started = done = 0;
        for (int i = 0; i < 3; i++)
                ts_rpc_pool_submit(p, &jobs[i].job);
        pthread_mutex_lock(&lock);
        while (started < 3)
                pthread_cond_wait(&cond, &lock);
        open = true;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        ck_assert_ptr_null(ts_rpc_pool_free(p));
        ck_assert_uint_eq(done, 3);
}
END_TEST

START_TEST(own_handler_threads) {
        /* blocked: handlers wait (as a provisioner's wait on containerd);
         * other: on libuv's pool, must still answer meanwhile. libuv's
         * pool has 4 threads by default, fewer than the 6 blocked calls. */
        ts_rpc_server_options bo = { .handler_threads = 2 };
        test_server blocked, other;
        ts_rpc_client_call *cc[6];

        ts_testsvc_gate_set(false);
        test_server_start(&blocked, &bo, &ts_testsvc_gate, 1);
        test_server_start(&other, NULL, NULL, 0);
        ts_rpc_client *cb = connect_to(blocked.path), *co = connect_to(other.path);

        for (int i = 0; i < 6; i++)
                cc[i] = gate_call(cb);
        wait_queued(blocked.s, 4);
        gate_wait_for(2);

        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        EchoResponse *resp = NULL;
        ts_rpc_call_options o = { .timeout_ns = 30 * 1000000000ull };
        for (int i = 0; i < 8; i++) {
                req.text = "meanwhile";
                ck_assert_int_eq(echo_call(co, TEST_ECHO, &req, &o, &resp, NULL), 0);
                ck_assert_str_eq(resp->text, "meanwhile");
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        }
        /* The blocked server's other methods wait their turn in its queue. */
        ts_testsvc_gate_set(true);
        for (int i = 0; i < 6; i++) {
                ck_assert_int_eq(ts_rpc_client_call_status(cc[i], NULL), TS_RPC_OK);
                ts_rpc_client_call_free(cc[i]);
        }
        req.text = "after";
        ck_assert_int_eq(echo_call(cb, TEST_ECHO, &req, &o, &resp, NULL), 0);
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        ts_rpc_client_free(cb);
        ts_rpc_client_free(co);
        test_server_stop(&blocked);
        test_server_stop(&other);
}
END_TEST

static void queue_bound(uint32_t threads) {
        ts_rpc_server_options o = { .handler_threads = threads, .max_queued_calls = 2 };
        ts_rpc_client_call *cc[8];
        unsigned running = threads ? threads : 4;

        ts_testsvc_gate_set(false);
        test_server_start(&main_server, &o, &ts_testsvc_gate, 1);
        ts_rpc_client *c = connect_client();
        /* One at a time: the queue holds calls not started yet. */
        for (unsigned i = 0; i < running; i++) {
                cc[i] = gate_call(c);
                gate_wait_for(i + 1);
        }
        cc[running] = gate_call(c);
        wait_queued(main_server.s, 1);
        cc[running + 1] = gate_call(c);
        wait_queued(main_server.s, 2);

        /* Past the bound: refused at once, while the others still wait. */
        char *msg = NULL;
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        uint8_t buf[16];
        req.text = "x";
        size_t len = protobuf_c_message_pack(&req.base, buf);
        ts_rpc_call_options to = { .timeout_ns = 30 * 1000000000ull };
        ck_assert_int_eq(raw_status(c, TEST_ECHO, buf, len, &to, &msg), TS_RPC_RESOURCE_EXHAUSTED);
        ck_assert_ptr_nonnull(strstr(msg, "2 calls wait"));
        free(msg);

        ts_testsvc_gate_set(true);
        for (unsigned i = 0; i < running + 2; i++) {
                ck_assert_int_eq(ts_rpc_client_call_status(cc[i], NULL), TS_RPC_OK);
                ts_rpc_client_call_free(cc[i]);
        }
        expect_echo(c, "served again");
        ts_rpc_client_free(c);
        stop_server();
}

START_TEST(queue_bound_own_threads) {
        queue_bound(1);
}
END_TEST

START_TEST(queue_bound_libuv_pool) {
        setenv("UV_THREADPOOL_SIZE", "4", 1);
        queue_bound(0);
}
END_TEST

/* Streaming handlers on the server's own threads post their call again while
 * the loop walks the calls posted before: many small messages on many calls at
 * once, round after round (ASan sees a call freed early). */
START_TEST(streams_on_own_threads) {
        test_server t;
        ts_rpc_server_options o = { .handler_threads = 4 };
        test_server_start(&t, &o, NULL, 0);
        ts_rpc_client *c = connect_to(t.path);
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        req.text = "s";
        req.repeat = 300;
        for (int round = 0; round < 8; round++) {
                ts_rpc_client_call *cc[16];
                for (int i = 0; i < 16; i++) {
                        ck_assert_int_eq(ts_rpc_client_call_start(c, TEST_STREAM, NULL, &cc[i], NULL), 0);
                        ck_assert_int_eq(ts_rpc_client_call_send_message(cc[i], &req.base, NULL), 0);
                        ts_rpc_client_call_close_send(cc[i]);
                }
                for (int i = 0; i < 16; i++) {
                        uint8_t *m;
                        size_t len;
                        int n = 0, r;
                        while ((r = ts_rpc_client_call_recv(cc[i], &m, &len, NULL)) > 0) {
                                n++;
                                free(m);
                        }
                        ck_assert_int_eq(r, 0);
                        ck_assert_int_eq(n, 300);
                        ts_rpc_client_call_free(cc[i]);
                }
        }
        ts_rpc_client_free(c);
        test_server_stop(&t);
}
END_TEST

START_TEST(peer_credentials) {
        start_server(0);
        ts_rpc_client *c = connect_client();
        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        EchoResponse *resp = NULL;
        char want[64];

        req.peer = true;
        ck_assert_int_eq(echo_call(c, TEST_ECHO, &req, NULL, &resp, NULL), 0);
        snprintf(want, sizeof(want), "uid=%u gid=%u pid=%d", (unsigned) getuid(),
                 (unsigned) getgid(), (int) getpid());
        ck_assert_str_eq(resp->text, want);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        ts_rpc_client_free(c);
        stop_server();
}
END_TEST

int main(void) {
        Suite *s = suite_create("rpc-server");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, unary_and_metadata);
        tcase_add_test(tc, status_errors);
        tcase_add_test(tc, streaming);
        tcase_add_test(tc, deadlines);
        tcase_add_test(tc, concurrent_streams);
        tcase_add_test(tc, cancel_and_disconnect);
        tcase_add_test(tc, garbage_peer);
        tcase_add_test(tc, graceful_shutdown);
        tcase_add_test(tc, shutdown_grace);
        tcase_add_test(tc, socket_file);
        tcase_add_test(tc, messages_cut);
        tcase_add_test(tc, pool_grows_and_ends);
        tcase_add_test(tc, own_handler_threads);
        tcase_add_test(tc, queue_bound_own_threads);
        tcase_add_test(tc, queue_bound_libuv_pool);
        tcase_add_test(tc, peer_credentials);
        tcase_add_test(tc, streams_on_own_threads);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
