/* libFuzzer: raw bytes into one server connection without a socket, through
 * nghttp2, the gRPC framing, routing, decoding and handlers. The first byte
 * picks whether the client preface is prepended (odd) or the input is taken
 * as is (even), so both frame-level and preface-level input is explored. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/server-internal.h"
#include "testsvc.pb-c.h"

static int echo(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        const Thinsnap__Test__V1__EchoRequest *req = (const void *) m;
        Thinsnap__Test__V1__EchoResponse resp = THINSNAP__TEST__V1__ECHO_RESPONSE__INIT;
        resp.text = req->text;
        if (req->metadata_key && *req->metadata_key) {
                const char *v = ts_rpc_call_metadata(call, req->metadata_key);
                resp.text = (char *) (v ? v : "");
        }
        if (ts_rpc_call_send(call, &resp.base) < 0)
                return TS_RPC_CANCELLED;
        return req->fail_at ? ts_rpc_call_error(call, (int) (req->fail_at % 17), "%s", req->text)
                            : TS_RPC_OK;
}

static int stream(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        const Thinsnap__Test__V1__EchoRequest *req = (const void *) m;
        for (uint32_t i = 0; i < req->repeat % 8; i++) {
                Thinsnap__Test__V1__EchoResponse resp = THINSNAP__TEST__V1__ECHO_RESPONSE__INIT;
                resp.index = i;
                if (ts_rpc_call_send(call, &resp.base) < 0)
                        return TS_RPC_CANCELLED;
        }
        return TS_RPC_OK;
}

static int raw(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        size_t len;
        const uint8_t *data = ts_rpc_call_request(call, &len);
        ProtobufCMessage *d = NULL;
        if (ts_rpc_call_decode(call, &thinsnap__test__v1__echo_request__descriptor, &d) ==
            TS_RPC_OK)
                protobuf_c_message_free_unpacked(d, NULL);
        return ts_rpc_call_send_bytes(call, data, len) < 0 ? TS_RPC_CANCELLED : TS_RPC_OK;
}

static ts_rpc_server *server;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
        static const ts_rpc_service_method methods[] = {
                { "Echo", echo, false },
                { "Stream", stream, true },
        };
        ts_rpc_server_options o = { .max_message_size = 4096, .stream_queue_bytes = 1024 };
        if (ts_rpc_server_new(&o, &server) < 0 ||
            ts_rpc_server_add_service(server, &thinsnap__test__v1__test__descriptor, methods, 2,
                                      NULL) < 0 ||
            ts_rpc_server_add_method(server, &(ts_rpc_method) { .path = "/t.Raw/Raw",
                                                                .handler = raw }) < 0)
                abort();
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

        if (size < 1)
                return 0;
        if (data[0] & 1) {
                uint8_t *buf = malloc(sizeof(preface) - 1 + size - 1);
                if (!buf)
                        return 0;
                memcpy(buf, preface, sizeof(preface) - 1);
                memcpy(buf + sizeof(preface) - 1, data + 1, size - 1);
                (void) ts_rpc_server_feed_session(server, buf, sizeof(preface) - 1 + size - 1,
                                                  NULL, NULL);
                free(buf);
        } else
                (void) ts_rpc_server_feed_session(server, data + 1, size - 1, NULL, NULL);
        return 0;
}
