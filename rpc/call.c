#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/call.h"
#include "rpc/server-internal.h"

const char *ts_rpc_call_method(const ts_rpc_call *call) {
        return call->path;
}

const char *ts_rpc_call_metadata(const ts_rpc_call *call, const char *key) {
        for (size_t i = 0; i < call->n_headers; i++)
                if (strcmp(call->headers[i].name, key) == 0)
                        return call->headers[i].value;
        return NULL;
}

const char *ts_rpc_call_namespace(const ts_rpc_call *call) {
        return ts_rpc_call_metadata(call, "containerd-namespace");
}

const uint8_t *ts_rpc_call_request(const ts_rpc_call *call, size_t *ret_len) {
        *ret_len = call->req_len;
        return call->req;
}

uint64_t ts_rpc_call_deadline(const ts_rpc_call *call) {
        return call->deadline;
}

int ts_rpc_call_peer(const ts_rpc_call *call, uid_t *ret_uid, gid_t *ret_gid, pid_t *ret_pid) {
        if (!call->has_peer)
                return -ENODATA;
        if (ret_uid)
                *ret_uid = call->peer_uid;
        if (ret_gid)
                *ret_gid = call->peer_gid;
        if (ret_pid)
                *ret_pid = call->peer_pid;
        return 0;
}

bool ts_rpc_call_cancelled(ts_rpc_call *call) {
        pthread_mutex_lock(&call->server->lock);
        bool c = call->cancelled;
        pthread_mutex_unlock(&call->server->lock);
        return c;
}

static int queue_message(ts_rpc_call *call, ts_rpc_buf *b) {
        ts_rpc_server *s = call->server;

        pthread_mutex_lock(&s->lock);
        if (!call->method->server_streaming && call->sent_unary) {
                pthread_mutex_unlock(&s->lock);
                free(b);
                return -EALREADY;
        }
        while (!call->cancelled && call->out.bytes > 0 &&
               call->out.bytes + b->len > s->opts.stream_queue_bytes)
                pthread_cond_wait(&call->cond, &s->lock);
        if (call->cancelled) {
                pthread_mutex_unlock(&s->lock);
                free(b);
                return -ECANCELED;
        }
        call->sent_unary = true;
        ts_rpc_bufq_push(&call->out, b);
        ts_rpc_server_post_locked(s, call);
        pthread_mutex_unlock(&s->lock);
        return 0;
}

int ts_rpc_call_send_bytes(ts_rpc_call *call, const void *data, size_t len) {
        if (len > call->server->opts.max_message_size)
                return -EMSGSIZE;
        ts_rpc_buf *b;
        int r = ts_rpc_buf_frame_bytes(data, len, &b);
        if (r < 0)
                return r;
        return queue_message(call, b);
}

int ts_rpc_call_send(ts_rpc_call *call, const ProtobufCMessage *msg) {
        size_t len = protobuf_c_message_get_packed_size(msg);

        if (len > call->server->opts.max_message_size)
                return -EMSGSIZE;
        ts_rpc_buf *b;
        int r = ts_rpc_buf_frame_message(msg, len, &b);
        if (r < 0)
                return r;
        return queue_message(call, b);
}

int ts_rpc_call_error(ts_rpc_call *call, int code, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        char *m = ts_rpc_message_vformat(fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&call->server->lock);
        free(call->status_msg);
        call->status_msg = m;
        pthread_mutex_unlock(&call->server->lock);
        return code;
}

int ts_rpc_call_errno(ts_rpc_call *call, int r, const ts_error *err) {
        if (r == 0)
                return TS_RPC_OK;
        return ts_rpc_call_error(call, ts_rpc_status_from_errno(r), "%s", ts_error_message(err, r));
}

int ts_rpc_call_decode(ts_rpc_call *call, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage **ret) {
        ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, call->req_len, call->req);
        if (!m)
                return ts_rpc_call_error(call, TS_RPC_INVALID_ARGUMENT,
                                         "request of %zu bytes does not decode as %s",
                                         call->req_len, desc->name);
        *ret = m;
        return TS_RPC_OK;
}
