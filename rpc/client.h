/* gRPC client over HTTP/2 cleartext on a unix socket, with a blocking API.
 *
 * A client owns one connection and a thread that runs its libuv loop and
 * nghttp2 session; the functions below may be called from any thread
 * (several calls in flight at once, each used by one thread at a time) and
 * block the caller only. Unary, server-streaming, client-streaming and
 * bidirectional calls all go through ts_rpc_client_call_*; unary has a
 * one-shot shorthand.
 *
 * A call that ends with a non-OK gRPC status fails with
 * -ts_rpc_status_to_errno(code) (NOT_FOUND -> -ENOENT, ...) and an error
 * message "<STATUS_NAME>: <grpc-message>"; ts_rpc_client_call_status()
 * gives the exact code. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/error.h"
#include "rpc/status.h"

typedef struct ts_rpc_client ts_rpc_client;
typedef struct ts_rpc_client_call ts_rpc_client_call;

typedef struct ts_rpc_metadata {
        const char *key; /* lowercase, e.g. "containerd-namespace" */
        const char *value;
} ts_rpc_metadata;

typedef struct ts_rpc_call_options {
        const ts_rpc_metadata *metadata;
        size_t n_metadata;
        uint64_t timeout_ns;       /* 0: no deadline */
        uint32_t max_message_size; /* largest response message; 0: 16 MiB */
} ts_rpc_call_options;

/* Connects to the unix socket path and starts the client's loop thread.
 * Returns 0, -ENAMETOOLONG, -ENOMEM, or -errno of socket/connect
 * (-ENOENT, -ECONNREFUSED, -EACCES...). */
int ts_rpc_client_connect(const char *path, ts_rpc_client **ret, ts_error **err);

/* Closes the connection (calls still in flight end with UNAVAILABLE), joins
 * the thread, frees. Every call must have been freed first. Accepts NULL;
 * returns NULL. */
ts_rpc_client *ts_rpc_client_free(ts_rpc_client *c);

/* Starts a call of method ("/package.Service/Method"): sends its headers.
 * opts may be NULL. Returns 0, -EINVAL (bad method), -ENOMEM, or
 * -ECONNRESET (the connection is gone or the server sent GOAWAY; the client
 * does not reconnect: free it and connect again). */
int ts_rpc_client_call_start(ts_rpc_client *c, const char *method,
                             const ts_rpc_call_options *opts, ts_rpc_client_call **ret,
                             ts_error **err);

/* Queues one request message (not blocking on the peer). Returns 0,
 * -EPIPE (send side closed already), -EMSGSIZE (over 4 GiB), -ENOMEM, or
 * the call's failure when it has ended already. */
int ts_rpc_client_call_send(ts_rpc_client_call *cc, const void *data, size_t len, ts_error **err);
int ts_rpc_client_call_send_message(ts_rpc_client_call *cc, const ProtobufCMessage *msg,
                                    ts_error **err);

/* Ends the request stream (END_STREAM). Idempotent. Returns 0. */
int ts_rpc_client_call_close_send(ts_rpc_client_call *cc);

/* Waits for the next response message. Returns 1 and a malloc()ed message
 * (*ret_len bytes, NUL-terminated for convenience), 0 at the end of a call
 * that ended with OK, or a negative errno: the mapped non-OK status,
 * -ETIMEDOUT when the deadline passed (the call is cancelled and its status
 * is DEADLINE_EXCEEDED). */
int ts_rpc_client_call_recv(ts_rpc_client_call *cc, uint8_t **ret, size_t *ret_len,
                            ts_error **err);

/* Same, decoded with desc; -EBADMSG when a message does not decode. */
int ts_rpc_client_call_recv_message(ts_rpc_client_call *cc, const ProtobufCMessageDescriptor *desc,
                                    ProtobufCMessage **ret, ts_error **err);

/* Waits for the call to end and returns its status code; *ret_message
 * (optional) points at its grpc-message (valid until the call is freed,
 * "" when none). Response messages not yet received are dropped. */
int ts_rpc_client_call_status(ts_rpc_client_call *cc, const char **ret_message);

/* Moves the call's deadline to timeout_ns from now (0: none). A streaming
 * caller sets it before each wait to bound the time without progress
 * rather than the whole call; the grpc-timeout already sent is unchanged. */
void ts_rpc_client_call_set_timeout(ts_rpc_client_call *cc, uint64_t timeout_ns);

/* Cancels the call (RST_STREAM CANCEL); its status becomes CANCELLED unless
 * it had ended already. */
void ts_rpc_client_call_cancel(ts_rpc_client_call *cc);

/* Cancels the call if it is still running and frees it. Accepts NULL;
 * returns NULL. */
ts_rpc_client_call *ts_rpc_client_call_free(ts_rpc_client_call *cc);

/* One unary call: sends req, waits for exactly one response and an OK
 * status. Returns 0 and *ret (free with protobuf_c_message_free_unpacked),
 * or a negative errno as described at the top (-EBADMSG: the response did
 * not decode or was missing). */
int ts_rpc_client_unary(ts_rpc_client *c, const char *method, const ts_rpc_call_options *opts,
                        const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                        ProtobufCMessage **ret, ts_error **err);

/* The same with serialised messages. */
int ts_rpc_client_unary_bytes(ts_rpc_client *c, const char *method,
                              const ts_rpc_call_options *opts, const void *req, size_t req_len,
                              uint8_t **ret, size_t *ret_len, ts_error **err);
