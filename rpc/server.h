/* gRPC server over HTTP/2 cleartext (prior knowledge) on a unix socket.
 *
 * One libuv loop thread owns the listening socket, every connection and
 * its nghttp2 session, and never blocks. A request is collected and its
 * framing checked on the loop; its handler (rpc/call.h) runs on a worker
 * thread (libuv's process-wide pool, or the server's own threads, see
 * handler_threads); what the handler sends is posted back to the loop
 * (uv_async) and written there.
 *
 * Errors the layer answers itself, as trailers-only responses:
 *   unknown method                         UNIMPLEMENTED
 *   request message over max_message_size  RESOURCE_EXHAUSTED
 *   request headers over
 *     max_header_list_size                 RESOURCE_EXHAUSTED
 *   request that does not decode           INVALID_ARGUMENT
 *   compressed message, grpc-encoding not
 *     identity                             UNIMPLEMENTED (grpc-accept-encoding: identity)
 *   compressed flag without grpc-encoding  INTERNAL (gRPC compression spec)
 *   bad flag byte, stream ending inside a
 *     message, not exactly one request     INTERNAL
 *   deadline (grpc-timeout) passed         DEADLINE_EXCEEDED
 *   request not complete after
 *     request_timeout_ms                   DEADLINE_EXCEEDED
 *   max_queued_calls calls wait already    RESOURCE_EXHAUSTED
 *   content-type not application/grpc*     HTTP 415
 * Status messages are cut to TS_RPC_MESSAGE_MAX bytes, and quote at most
 * TS_RPC_QUOTE_MAX bytes of what the client sent.
 *
 * Every resource a client can make the server hold is bounded: streams and
 * header bytes per connection (advertised in SETTINGS), request bytes per
 * connection (flow control: the window is given back only as requests are
 * handed to handlers), connections (past the bound the longest-idle one
 * is closed to make room, or the new one when none is idle), calls waiting
 * for a handler, and a call's unsent output. A connection that does not
 * start HTTP/2 within handshake_timeout_ms, or stays without a stream for
 * idle_timeout_ms, is closed (the latter after a GOAWAY); a reply that its
 * client does not read for send_timeout_ms is reset (RST_STREAM CANCEL) and
 * its handler's send fails. PINGs are answered. A failed accept (out of
 * memory or descriptors) costs that connection only.
 *
 * A peer that does not speak HTTP/2 (bad preface, protocol error) loses its
 * connection; the server goes on. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "common/error.h"
#include "rpc/call.h"

typedef struct ts_rpc_server ts_rpc_server;

/* Every field's 0 means its default; the defaults are far above what a
 * well-behaved client needs. */
typedef struct ts_rpc_server_options {
        uint32_t max_message_size;       /* request and response; 0: 16 MiB */
        uint32_t max_concurrent_streams; /* per connection; 0: 256 */
        /* A request's headers, decoded, counted as HTTP/2 does (name +
         * value + 32 each); 0: 64 KiB. */
        uint32_t max_header_list_size;
        /* Request bytes a connection may have sent that no handler took yet
         * (its HTTP/2 connection window); at least max_message_size + 5;
         * 0: twice that. */
        uint32_t connection_window;
        uint32_t max_connections;        /* 0: 1024 */
        uint32_t handshake_timeout_ms;   /* connection to its first SETTINGS; 0: 10 s */
        uint32_t request_timeout_ms;     /* a request's HEADERS to its end; 0: 60 s */
        uint32_t idle_timeout_ms;        /* a connection without streams; 0: 1 h */
        uint32_t send_timeout_ms;        /* a reply's output without progress; 0: 60 s */
        size_t stream_queue_bytes;       /* bound of a call's unsent output; 0: 4 MiB */
        uint32_t shutdown_grace_ms;      /* wait for calls in flight; 0: 30 s */
        /* At most this many threads of this server's own run its handlers,
         * started as calls wait for one and ended after 30 s without work
         * (down to one); 0: libuv's process-wide pool (UV_THREADPOOL_SIZE threads), shared with every
         * server of the process that uses it. A server whose handlers wait
         * on a peer that calls back into this process needs its own. */
        uint32_t handler_threads;
        /* Calls that wait for a handler thread; past it a new call fails at
         * once with RESOURCE_EXHAUSTED. 0: 4096. */
        uint32_t max_queued_calls;
} ts_rpc_server_options;

/* Fills every 0 field of o with its default. Returns 0, or -EINVAL when
 * connection_window is below max_message_size + 5. */
int ts_rpc_server_options_resolve(ts_rpc_server_options *o);

/* One method. path is "/package.Service/Method" (copied). request is the
 * request's protobuf-c descriptor, or NULL for a raw handler. */
typedef struct ts_rpc_method {
        const char *path;
        const ProtobufCMessageDescriptor *request;
        ts_rpc_handler_fn handler;
        void *userdata;
        bool server_streaming;
} ts_rpc_method;

/* A row of a service table for ts_rpc_server_add_service(). */
typedef struct ts_rpc_service_method {
        const char *name; /* "Prepare" */
        ts_rpc_handler_fn handler;
        bool server_streaming;
} ts_rpc_service_method;

/* Creates a server with its loop (nothing listens yet) and its handler
 * threads. opts NULL means all defaults. Returns 0, -EINVAL (as
 * ts_rpc_server_options_resolve), -ENOMEM, or -errno from libuv or
 * pthread_create. */
int ts_rpc_server_new(const ts_rpc_server_options *opts, ts_rpc_server **ret);

/* Frees a server whose run returned (or that never ran); accepts NULL;
 * returns NULL. Does not unlink the socket file. */
ts_rpc_server *ts_rpc_server_free(ts_rpc_server *s);

/* Registers one method. Returns 0, -EINVAL (path not "/x/y", no handler),
 * -EEXIST (path registered already), -ENOMEM. Not after run started. */
int ts_rpc_server_add_method(ts_rpc_server *s, const ts_rpc_method *m);

/* Registers n methods of a protoc-c service: each row's name is looked up
 * in svc for its request descriptor; the path is "/<svc->name>/<name>".
 * Returns 0, -ENOENT (a name not in svc), or as ts_rpc_server_add_method. */
int ts_rpc_server_add_service(ts_rpc_server *s, const ProtobufCServiceDescriptor *svc,
                              const ts_rpc_service_method *methods, size_t n, void *userdata);

/* Listens on the unix socket path with the given file mode (e.g. 0660).
 * A stale socket file nobody listens on is removed first. Returns 0,
 * -EALREADY (listens already), -EADDRINUSE (a live server listens there),
 * -ENAMETOOLONG, -ENOTSOCK (path exists and is not a socket), or -errno of
 * socket/bind/listen/chmod. */
int ts_rpc_server_listen(ts_rpc_server *s, const char *path, mode_t mode, ts_error **err);

/* Runs the loop on the calling thread until ts_rpc_server_shutdown() has
 * completed: the listener is closed, every connection got GOAWAY, the calls
 * in flight finished and their connections closed. Connections still open
 * after shutdown_grace_ms (a client that never ends its request, never
 * reads its stream) are closed, which cancels their handlers. SIGPIPE is
 * blocked on the calling thread while it runs. Returns 0 or -errno. */
int ts_rpc_server_run(ts_rpc_server *s, ts_error **err);

/* The limits of ts_rpc_server_options, as ts_rpc_server_stats counts their
 * hits. */
typedef enum ts_rpc_limit {
        TS_RPC_LIMIT_MAX_CONNECTIONS,        /* a new connection closed: every one had a call */
        TS_RPC_LIMIT_CONNECTION_EVICTED,     /* an idle connection closed to make room */
        TS_RPC_LIMIT_MAX_CONCURRENT_STREAMS, /* a stream refused (RST_STREAM REFUSED_STREAM) */
        TS_RPC_LIMIT_MAX_HEADER_LIST_SIZE,
        TS_RPC_LIMIT_MAX_MESSAGE_SIZE,
        TS_RPC_LIMIT_MAX_QUEUED_CALLS,
        TS_RPC_LIMIT_HANDSHAKE_TIMEOUT,
        TS_RPC_LIMIT_REQUEST_TIMEOUT,
        TS_RPC_LIMIT_IDLE_TIMEOUT,
        TS_RPC_LIMIT_SEND_TIMEOUT,
        TS_RPC_LIMIT_ACCEPT_FAILED, /* out of memory or descriptors at accept */
        TS_RPC_LIMIT_N,
} ts_rpc_limit;

/* The limit's name, as its option is called ("max_connections"). */
const char *ts_rpc_limit_name(ts_rpc_limit l);

/* What a server holds now, and what it did and refused since it was made. */
typedef struct ts_rpc_server_stats {
        uint64_t connections;        /* open now */
        uint64_t calls;              /* streams with a call, now */
        uint64_t queued_calls;       /* calls waiting for a handler thread, now */
        uint64_t connections_total;  /* accepted */
        uint64_t calls_total;        /* streams opened */
        uint64_t limit_hits[TS_RPC_LIMIT_N];
} ts_rpc_server_stats;

/* Reads the server's figures. Read-only; safe from any thread for as long
 * as the server exists. */
void ts_rpc_server_stats_get(ts_rpc_server *s, ts_rpc_server_stats *ret);

/* Asks for a graceful shutdown. Safe from any thread and from a signal
 * handler; returns at once. */
void ts_rpc_server_shutdown(ts_rpc_server *s);
