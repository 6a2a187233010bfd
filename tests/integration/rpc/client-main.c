/* rpc-test-client SOCKET: calls a server of the test service (the grpcio
 * peer in peer_test.py) with our client and checks every answer. Prints
 * one line per check; exits 0 when all passed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/client.h"
#include "testsvc.h"

#define SVC "/thinsnap.test.v1.Test/"

typedef Thinsnap__Test__V1__EchoRequest EchoRequest;
typedef Thinsnap__Test__V1__EchoResponse EchoResponse;

static int failures;

static void check(const char *name, bool ok, const char *detail) {
        printf("%s %s %s\n", ok ? "ok  " : "FAIL", name, detail ? detail : "");
        fflush(stdout);
        if (!ok)
                failures++;
}

static int unary(ts_rpc_client *c, const char *method, const EchoRequest *req,
                 const ts_rpc_call_options *o, EchoResponse **ret, ts_error **err) {
        ProtobufCMessage *m = NULL;
        int r = ts_rpc_client_unary(c, method, o, &req->base,
                                    &thinsnap__test__v1__echo_response__descriptor, &m, err);
        if (r == 0)
                *ret = (EchoResponse *) m;
        return r;
}

int main(int argc, char **argv) {
        ts_rpc_client *c = NULL;
        ts_error *err = NULL;
        EchoResponse *resp = NULL;
        int r;

        if (argc != 2) {
                fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
                return 2;
        }
        r = ts_rpc_client_connect(argv[1], &c, &err);
        if (r < 0) {
                fprintf(stderr, "connect: %s\n", ts_error_message(err, r));
                return 1;
        }

        EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
        req.text = "hello";
        r = unary(c, SVC "Echo", &req, NULL, &resp, &err);
        check("unary", r == 0 && strcmp(resp->text, "hello") == 0, ts_error_message(err, r));
        if (r == 0)
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        err = ts_error_free(err);

        ts_rpc_metadata md[] = { { "containerd-namespace", "default" } };
        ts_rpc_call_options o = { .metadata = md, .n_metadata = 1 };
        req.metadata_key = "containerd-namespace";
        r = unary(c, SVC "Echo", &req, &o, &resp, &err);
        check("metadata", r == 0 && strcmp(resp->text, "default") == 0, ts_error_message(err, r));
        if (r == 0)
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        err = ts_error_free(err);
        req.metadata_key = NULL;

        req.size = 3 << 20;
        r = unary(c, SVC "Echo", &req, NULL, &resp, &err);
        check("3 MiB response", r == 0 && resp->blob.len == 3u << 20, ts_error_message(err, r));
        if (r == 0)
                protobuf_c_message_free_unpacked(&resp->base, NULL);
        err = ts_error_free(err);
        req.size = 0;

        /* Server streaming. */
        ts_rpc_client_call *cc = NULL;
        req.repeat = 50;
        r = ts_rpc_client_call_start(c, SVC "Stream", NULL, &cc, &err);
        if (r == 0)
                r = ts_rpc_client_call_send_message(cc, &req.base, &err);
        ts_rpc_client_call_close_send(cc);
        unsigned n = 0;
        bool order = true;
        ProtobufCMessage *m;
        while ((r = ts_rpc_client_call_recv_message(
                        cc, &thinsnap__test__v1__echo_response__descriptor, &m, &err)) > 0) {
                if (((EchoResponse *) m)->index != n)
                        order = false;
                n++;
                protobuf_c_message_free_unpacked(m, NULL);
        }
        check("server streaming", r == 0 && n == 50 && order, ts_error_message(err, r));
        err = ts_error_free(err);
        ts_rpc_client_call_free(cc);

        req.fail_at = 4;
        r = ts_rpc_client_call_start(c, SVC "Stream", NULL, &cc, &err);
        if (r == 0)
                r = ts_rpc_client_call_send_message(cc, &req.base, &err);
        ts_rpc_client_call_close_send(cc);
        n = 0;
        while ((r = ts_rpc_client_call_recv_message(
                        cc, &thinsnap__test__v1__echo_response__descriptor, &m, &err)) > 0) {
                n++;
                protobuf_c_message_free_unpacked(m, NULL);
        }
        const char *msg = NULL;
        int code = ts_rpc_client_call_status(cc, &msg);
        check("stream failing midway", r == -EAGAIN && n == 4 && code == TS_RPC_ABORTED &&
                                               strcmp(msg, "failed at 4") == 0,
              msg);
        err = ts_error_free(err);
        ts_rpc_client_call_free(cc);
        req.fail_at = 0;
        req.repeat = 0;

        /* Status with a message that grpcio percent-encodes. */
        req.text = "gone 100% \xc3\xa9\n";
        r = unary(c, SVC "Fail", &req, NULL, &resp, &err);
        check("NOT_FOUND maps to -ENOENT", r == -ENOENT, ts_error_message(err, r));
        check("grpc-message decoded", err && strstr(err->msg, "gone 100% \xc3\xa9\n"),
              err ? err->msg : NULL);
        err = ts_error_free(err);

        r = unary(c, SVC "Nope", &req, NULL, &resp, &err);
        check("unknown method is UNIMPLEMENTED", r == -EOPNOTSUPP, ts_error_message(err, r));
        err = ts_error_free(err);

        /* Deadline: grpcio sleeps 5 s, we give it 200 ms. */
        req.text = "slow";
        req.sleep_ms = 5000;
        ts_rpc_call_options od = { .timeout_ns = 200 * 1000000ull };
        r = unary(c, SVC "Echo", &req, &od, &resp, &err);
        check("deadline", r == -ETIMEDOUT, ts_error_message(err, r));
        err = ts_error_free(err);
        req.sleep_ms = 0;

        /* Bidirectional: one message out, its answer back, three times,
         * before the request side is closed. */
        r = ts_rpc_client_call_start(c, SVC "Chat", NULL, &cc, &err);
        bool chat_ok = r == 0;
        const char *words[] = { "one", "two", "three" };
        for (unsigned i = 0; chat_ok && i < 3; i++) {
                EchoRequest q = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
                char want[16];
                q.text = (char *) words[i];
                snprintf(want, sizeof(want), "re:%s", words[i]);
                if (ts_rpc_client_call_send_message(cc, &q.base, &err) < 0 ||
                    ts_rpc_client_call_recv_message(
                            cc, &thinsnap__test__v1__echo_response__descriptor, &m, &err) != 1) {
                        chat_ok = false;
                        break;
                }
                if (strcmp(((EchoResponse *) m)->text, want) != 0)
                        chat_ok = false;
                protobuf_c_message_free_unpacked(m, NULL);
        }
        ts_rpc_client_call_close_send(cc);
        if (chat_ok) {
                uint8_t *raw;
                size_t len;
                chat_ok = ts_rpc_client_call_recv(cc, &raw, &len, &err) == 0;
        }
        check("bidirectional streaming", chat_ok, err ? err->msg : NULL);
        err = ts_error_free(err);
        ts_rpc_client_call_free(cc);

        ts_rpc_client_free(c);
        printf("%d failure(s)\n", failures);
        return failures ? 1 : 0;
}
