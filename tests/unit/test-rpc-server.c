/* The rpc server and client against each other, in one process, over a
 * real unix socket, with the test service (tests/rpc/testsvc.proto). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "rpc/client.h"
#include "rpc/server.h"
#include "testsvc.h"
#include "tests/unit/ts-check.h"

#define ECHO "/thinsnap.test.v1.Test/Echo"
#define STREAM "/thinsnap.test.v1.Test/Stream"
#define FAIL "/thinsnap.test.v1.Test/Fail"

typedef Thinsnap__Test__V1__EchoRequest EchoRequest;
typedef Thinsnap__Test__V1__EchoResponse EchoResponse;

static char sock_path[108];
static ts_rpc_server *server;
static pthread_t server_thread;
static int server_rc = -1;
static uint32_t grace_ms;

static void *run_server(void *p) {
        server_rc = ts_rpc_server_run(server, NULL);
        return NULL;
}

static void start_server(uint32_t max_message) {
        ts_rpc_server_options o = { .max_message_size = max_message,
                                    .shutdown_grace_ms = grace_ms };
        ts_error *err = NULL;
        char dir[] = "/tmp/ts-rpc-XXXXXX";

        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(sock_path, sizeof(sock_path), "%s/s.sock", dir);
        ck_assert_int_eq(ts_rpc_server_new(&o, &server), 0);
        ck_assert_int_eq(ts_testsvc_register(server), 0);
        ck_assert_int_eq(ts_rpc_server_listen(server, sock_path, 0660, &err), 0);
        ck_assert_int_eq(pthread_create(&server_thread, NULL, run_server, NULL), 0);
}

static void stop_server(void) {
        ts_rpc_server_shutdown(server);
        pthread_join(server_thread, NULL);
        ck_assert_int_eq(server_rc, 0);
        server = ts_rpc_server_free(server);
        unlink(sock_path);
        *strrchr(sock_path, '/') = 0;
        rmdir(sock_path);
}

static ts_rpc_client *connect_client(void) {
        ts_rpc_client *c = NULL;
        ts_error *err = NULL;
        ck_assert_int_eq(ts_rpc_client_connect(sock_path, &c, &err), 0);
        return c;
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
        ck_assert_int_eq(echo_call(c, ECHO, &req, NULL, &resp, NULL), 0);
        ck_assert_str_eq(resp->text, text);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* Runs a raw call and returns its final status code and message copy. */
static int raw_status(ts_rpc_client *c, const char *method, const void *data, size_t len,
                      const ts_rpc_call_options *o, char **ret_msg) {
        ts_rpc_client_call *cc = NULL;
        ck_assert_int_eq(ts_rpc_client_call_start(c, method, o, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send(cc, data, len, NULL), 0);
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
        ck_assert_int_eq(echo_call(c, ECHO, &req, NULL, &resp, &err), 0);
        ck_assert_str_eq(resp->text, "hello");
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        ts_rpc_metadata md[] = { { "containerd-namespace", "k8s.io" }, { "x-other", "v" } };
        ts_rpc_call_options o = { .metadata = md, .n_metadata = 2 };
        req.metadata_key = "containerd-namespace";
        ck_assert_int_eq(echo_call(c, ECHO, &req, &o, &resp, &err), 0);
        ck_assert_str_eq(resp->text, "k8s.io");
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        req.metadata_key = "absent";
        ck_assert_int_eq(echo_call(c, ECHO, &req, &o, &resp, &err), 0);
        ck_assert_str_eq(resp->text, "(none)");
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        /* A 1 MiB response crosses many DATA frames and window updates. */
        req.metadata_key = "";
        req.size = 1 << 20;
        ck_assert_int_eq(echo_call(c, ECHO, &req, NULL, &resp, &err), 0);
        ck_assert_uint_eq(resp->blob.len, 1 << 20);
        ck_assert_int_eq(resp->blob.data[12345], 'x');
        protobuf_c_message_free_unpacked(&resp->base, NULL);

        struct stat st;
        ck_assert_int_eq(stat(sock_path, &st), 0);
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
        ck_assert_int_eq(echo_call(c, FAIL, &req, NULL, &resp, &err), -ENOENT);
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
        ck_assert_int_eq(raw_status(c, ECHO, bad, sizeof(bad), NULL, &msg), TS_RPC_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(msg, "EchoRequest"));
        free(msg);

        /* Over the server's 64 KiB limit. */
        size_t big = 64 * 1024 + 1;
        uint8_t *blob = calloc(1, big);
        ck_assert_int_eq(raw_status(c, ECHO, blob, big, NULL, &msg), TS_RPC_RESOURCE_EXHAUSTED);
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
        ck_assert_int_eq(echo_call(c, ECHO, &req, NULL, &resp, &err), 0);
        ck_assert_uint_eq(strlen(resp->text), tl);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        free(t);

        /* Two request messages on a unary method. */
        ts_rpc_client_call *cc;
        ck_assert_int_eq(ts_rpc_client_call_start(c, ECHO, NULL, &cc, NULL), 0);
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
        ck_assert_int_eq(ts_rpc_client_call_start(c, STREAM, NULL, &cc, NULL), 0);
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
        ck_assert_int_eq(ts_rpc_client_call_start(c, STREAM, NULL, &cc, NULL), 0);
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
        ck_assert_int_eq(ts_rpc_client_call_start(c, STREAM, NULL, &cc, NULL), 0);
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
        ck_assert_int_eq(raw_status(c, ECHO, buf, len, &o, &msg), TS_RPC_DEADLINE_EXCEEDED);
        ck_assert_str_eq(msg, "deadline exceeded");
        free(msg);

        /* A client deadline ends the wait with -ETIMEDOUT, whoever notices. */
        ts_rpc_call_options o2 = { .timeout_ns = 50 * 1000000ull };
        EchoResponse *resp = NULL;
        ck_assert_int_eq(echo_call(c, ECHO, &req, &o2, &resp, &err), -ETIMEDOUT);
        err = ts_error_free(err);

        /* A generous deadline does not get in the way. */
        req.sleep_ms = 1;
        ts_rpc_call_options o3 = { .timeout_ns = 60 * 1000000000ull };
        ck_assert_int_eq(echo_call(c, ECHO, &req, &o3, &resp, &err), 0);
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
                if (echo_call(a->c, ECHO, &req, NULL, &resp, &err) < 0 || strcmp(resp->text, text))
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
                ck_assert_int_eq(ts_rpc_client_call_start(c, STREAM, NULL, &cc[i], NULL), 0);
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
        ck_assert_int_eq(ts_rpc_client_call_start(c, STREAM, NULL, &cc, NULL), 0);
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
        ck_assert_int_eq(ts_rpc_client_call_start(c2, STREAM, NULL, &cc, NULL), 0);
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
        strcpy(sa.sun_path, sock_path);
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
        a->r = echo_call(a->c, ECHO, &req, NULL, &resp, NULL);
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

        ts_rpc_server_shutdown(server);
        pthread_join(server_thread, NULL); /* returns only after the call ended */
        pthread_join(t, NULL);
        ck_assert_int_eq(a.r, 0);
        ck_assert_str_eq(a.text, "in flight");
        free(a.text);

        /* Nothing listens any more; calls on the old connection fail. */
        ts_rpc_client *c2 = NULL;
        ck_assert_int_lt(ts_rpc_client_connect(sock_path, &c2, NULL), 0);
        req.text = "late";
        ts_error *err = NULL;
        ck_assert_int_lt(echo_call(c, ECHO, &req, NULL, &resp, &err), 0);
        ts_error_free(err);
        ts_rpc_client_free(c);
        server = ts_rpc_server_free(server);
        unlink(sock_path);
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
        ck_assert_int_eq(ts_rpc_client_call_start(c, ECHO, NULL, &cc, NULL), 0);
        ck_assert_int_eq(ts_rpc_client_call_send_message(cc, &req.base, NULL), 0);
        usleep(50 * 1000);
        /* ...until the grace period ends and the server closes it. */
        ts_rpc_server_shutdown(server);
        pthread_join(server_thread, NULL);
        ck_assert_int_eq(server_rc, 0);
        ck_assert_int_eq(ts_rpc_client_call_status(cc, NULL), TS_RPC_UNAVAILABLE);
        ts_rpc_client_call_free(cc);
        ts_rpc_client_free(c);
        server = ts_rpc_server_free(server);
        unlink(sock_path);
}
END_TEST

START_TEST(socket_file) {
        start_server(0);
        /* A second server on a live socket is refused. */
        ts_rpc_server *s2;
        ts_error *err = NULL;
        ck_assert_int_eq(ts_rpc_server_new(NULL, &s2), 0);
        ck_assert_int_eq(ts_rpc_server_listen(s2, sock_path, 0600, &err), -EADDRINUSE);
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
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
