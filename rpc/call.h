/* The handler side of a server call: what a method handler, running on a
 * worker thread, can read from its call and how it answers.
 *
 * A handler is registered with the server (rpc/server.h) for one method
 * path. It runs on a libuv worker thread, never on the loop thread, so it
 * may block (ioctls, LMDB, libext2fs). It answers by
 *   - ts_rpc_call_send() once for a unary method (the response message), or
 *     zero or more times for a server-streaming one, and
 *   - returning a gRPC status code (TS_RPC_OK, or the code returned by
 *     ts_rpc_call_error()/ts_rpc_call_errno(), which also set the message).
 * A unary handler that returns TS_RPC_OK without sending ends the call with
 * INTERNAL. Messages sent before a non-OK return are delivered before the
 * status (a streaming List can fail midway). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "common/error.h"
#include "common/macro.h"
#include "rpc/status.h"

typedef struct ts_rpc_call ts_rpc_call;

/* req is the decoded request when the method was registered with a request
 * descriptor (it belongs to the call and is freed after the handler
 * returns), NULL for a raw method (read the bytes with
 * ts_rpc_call_request()). Returns a status code. */
typedef int (*ts_rpc_handler_fn)(ts_rpc_call *call, const ProtobufCMessage *req, void *userdata);

/* The method path, "/package.Service/Method". */
const char *ts_rpc_call_method(const ts_rpc_call *call);

/* The first value of request metadata key (lowercase, e.g.
 * "containerd-namespace"), or NULL when absent. Binary ("-bin") values are
 * returned as received (base64). */
const char *ts_rpc_call_metadata(const ts_rpc_call *call, const char *key);

/* Shorthand for the "containerd-namespace" metadata, or NULL. */
const char *ts_rpc_call_namespace(const ts_rpc_call *call);

/* The raw request message (the bytes after the 5-byte prefix) of a method
 * registered raw; a method registered with a descriptor gets it decoded
 * instead, and this gives NULL and 0. */
const uint8_t *ts_rpc_call_request(const ts_rpc_call *call, size_t *ret_len);

/* The call's deadline on CLOCK_MONOTONIC in nanoseconds, or 0 when the
 * client gave no grpc-timeout. */
uint64_t ts_rpc_call_deadline(const ts_rpc_call *call);

/* The credentials of the process that opened the call's connection, as the
 * kernel gave them at accept (SO_PEERCRED). Each ret_ may be NULL. Returns 0,
 * or -ENODATA when they are not known (a connection without a socket). */
int ts_rpc_call_peer(const ts_rpc_call *call, uid_t *ret_uid, gid_t *ret_gid, pid_t *ret_pid);

/* True once the call can no longer be answered: the client cancelled or
 * went away, the deadline passed (the client has already been told
 * DEADLINE_EXCEEDED), or the server failed the call. Long handlers check it
 * between steps. */
bool ts_rpc_call_cancelled(ts_rpc_call *call);

/* Packs msg and queues it for the loop to write. Blocks while the call's
 * queue is over its bound (server option stream_queue_bytes) until the
 * loop drains it. Returns 0, or
 *  -ECANCELED  the call is cancelled (see above); stop producing;
 *  -EALREADY   a unary call already has its response;
 *  -EMSGSIZE   the message is larger than the server's max_message_size;
 *  -ENOMEM. */
int ts_rpc_call_send(ts_rpc_call *call, const ProtobufCMessage *msg);

/* Same with an already serialised message. */
int ts_rpc_call_send_bytes(ts_rpc_call *call, const void *data, size_t len);

/* Sets the status message (printf format; cut to TS_RPC_MESSAGE_MAX bytes;
 * percent-encoded on the wire) and returns code, for
 * `return ts_rpc_call_error(call, TS_RPC_NOT_FOUND, "snapshot %s not found", key);`.
 * The last call wins. */
int ts_rpc_call_error(ts_rpc_call *call, int code, const char *fmt, ...) _printf_(3, 4);

/* Maps a -errno (and the ts_error that explains it, NULL allowed) to a
 * status with ts_rpc_status_from_errno(), sets the message from
 * ts_error_message(err, r), and returns the code. r == 0 returns TS_RPC_OK. */
int ts_rpc_call_errno(ts_rpc_call *call, int r, const ts_error *err);

/* Decodes the raw request with desc. Returns TS_RPC_OK and *ret (free it
 * with protobuf_c_message_free_unpacked(), or _cleanup_message_), or
 * TS_RPC_INVALID_ARGUMENT with the call's message set. Used for methods
 * registered raw; methods registered with a descriptor get this done before
 * the handler runs. */
int ts_rpc_call_decode(ts_rpc_call *call, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage **ret);

static inline void ts_rpc_message_freep(void *p) {
        ProtobufCMessage **m = p;
        if (*m)
                protobuf_c_message_free_unpacked(*m, NULL);
}
/* For any unpacked protobuf-c message pointer: `_cleanup_message_ Foo *f = ...`. */
#define _cleanup_message_ _cleanup_(ts_rpc_message_freep)
