#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static void *run(void *p) {
        ts_testsvc_server *t = p;
        t->rc = ts_rpc_server_run(t->s, NULL);
        return NULL;
}

int ts_testsvc_start(ts_testsvc_server *t, const ts_rpc_server_options *o,
                     const ts_rpc_method *extra, size_t n_extra) {
        char dir[] = "/tmp/ts-rpc-XXXXXX";
        int r;

        if (!mkdtemp(dir))
                return -errno;
        snprintf(t->path, sizeof(t->path), "%s/s.sock", dir);
        t->rc = -1;
        r = ts_rpc_server_new(o, &t->s);
        if (r < 0)
                return r;
        r = ts_testsvc_register(t->s);
        for (size_t i = 0; r >= 0 && i < n_extra; i++)
                r = ts_rpc_server_add_method(t->s, &extra[i]);
        if (r >= 0)
                r = ts_rpc_server_listen(t->s, t->path, 0660, NULL);
        if (r >= 0)
                r = -pthread_create(&t->thread, NULL, run, t);
        if (r < 0)
                t->s = ts_rpc_server_free(t->s);
        return r;
}

int ts_testsvc_stop(ts_testsvc_server *t) {
        ts_rpc_server_shutdown(t->s);
        pthread_join(t->thread, NULL);
        t->s = ts_rpc_server_free(t->s);
        unlink(t->path);
        *strrchr(t->path, '/') = 0;
        rmdir(t->path);
        return t->rc;
}

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static unsigned gate_waiting;

static int gate(ts_rpc_call *call, const ProtobufCMessage *m, void *userdata) {
        pthread_mutex_lock(&gate_lock);
        gate_waiting++;
        pthread_cond_broadcast(&gate_cond);
        while (!gate_open && !ts_rpc_call_cancelled(call)) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 10 * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&gate_cond, &gate_lock, &ts);
        }
        gate_waiting--;
        pthread_mutex_unlock(&gate_lock);
        return ts_rpc_call_send_bytes(call, "", 0) < 0 ? TS_RPC_CANCELLED : TS_RPC_OK;
}

const ts_rpc_method ts_testsvc_gate = { .path = "/t.Gate/Wait", .handler = gate };

void ts_testsvc_gate_set(bool open) {
        pthread_mutex_lock(&gate_lock);
        gate_open = open;
        pthread_cond_broadcast(&gate_cond);
        pthread_mutex_unlock(&gate_lock);
}

unsigned ts_testsvc_gate_wait_for(unsigned n) {
        pthread_mutex_lock(&gate_lock);
        while (gate_waiting < n)
                pthread_cond_wait(&gate_cond, &gate_lock);
        unsigned w = gate_waiting;
        pthread_mutex_unlock(&gate_lock);
        return w;
}
