#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testsvc.h"

/* Sleeps ms in small steps so a cancelled call stops early. */
static int nap(ts_rpc_call *call, uint32_t ms) {
        while (ms > 0) {
                uint32_t step = ms > 5 ? 5 : ms;
                struct timespec ts = { .tv_nsec = (long) step * 1000000 };
                nanosleep(&ts, NULL);
                ms -= step;
                if (ts_rpc_call_cancelled(call))
                        return -ECANCELED;
        }
        return 0;
}

static int echo(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        const Thinsnap__Test__V1__EchoRequest *req = (const void *) m;
        Thinsnap__Test__V1__EchoResponse resp = THINSNAP__TEST__V1__ECHO_RESPONSE__INIT;
        _cleanup_free_ uint8_t *blob = NULL;
        char peer[64];

        if (nap(call, req->sleep_ms) < 0)
                return ts_rpc_call_error(call, TS_RPC_CANCELLED, "cancelled while sleeping");
        resp.text = req->text;
        if (req->peer) {
                uid_t uid;
                gid_t gid;
                pid_t pid;
                int r = ts_rpc_call_peer(call, &uid, &gid, &pid);
                if (r < 0)
                        return ts_rpc_call_errno(call, r, NULL);
                snprintf(peer, sizeof(peer), "uid=%u gid=%u pid=%d", (unsigned) uid,
                         (unsigned) gid, (int) pid);
                resp.text = peer;
        }
        if (req->metadata_key && *req->metadata_key) {
                const char *v = ts_rpc_call_metadata(call, req->metadata_key);
                resp.text = (char *) (v ? v : "(none)");
        }
        if (req->size) {
                blob = malloc(req->size);
                if (!blob)
                        return ts_rpc_call_errno(call, -ENOMEM, NULL);
                memset(blob, 'x', req->size);
                resp.blob.data = blob;
                resp.blob.len = req->size;
        }
        int r = ts_rpc_call_send(call, &resp.base);
        if (r < 0)
                return ts_rpc_call_errno(call, r, NULL);
        return TS_RPC_OK;
}

static int stream(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        const Thinsnap__Test__V1__EchoRequest *req = (const void *) m;
        _cleanup_free_ uint8_t *blob = NULL;

        if (req->size) {
                blob = malloc(req->size);
                if (!blob)
                        return ts_rpc_call_errno(call, -ENOMEM, NULL);
                memset(blob, 'y', req->size);
        }
        for (uint32_t i = 0; i < req->repeat; i++) {
                Thinsnap__Test__V1__EchoResponse resp = THINSNAP__TEST__V1__ECHO_RESPONSE__INIT;
                if (req->fail_at && i == req->fail_at)
                        return ts_rpc_call_error(call, TS_RPC_ABORTED, "failed at %u", i);
                if (nap(call, req->sleep_ms) < 0)
                        return ts_rpc_call_error(call, TS_RPC_CANCELLED, "cancelled");
                resp.text = req->text;
                resp.index = i;
                resp.blob.data = blob;
                resp.blob.len = req->size;
                int r = ts_rpc_call_send(call, &resp.base);
                if (r < 0)
                        return ts_rpc_call_errno(call, r, NULL);
        }
        return TS_RPC_OK;
}

static int fail(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        const Thinsnap__Test__V1__EchoRequest *req = (const void *) m;
        return ts_rpc_call_error(call, TS_RPC_NOT_FOUND, "%s", req->text);
}

int ts_testsvc_register(ts_rpc_server *s) {
        static const ts_rpc_service_method methods[] = {
                { "Echo", echo, false },
                { "Stream", stream, true },
                { "Fail", fail, false },
        };
        return ts_rpc_server_add_service(s, &thinsnap__test__v1__test__descriptor, methods,
                                         TS_ARRAY_SIZE(methods), NULL);
}
