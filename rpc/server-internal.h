/* Internals shared by rpc/server.c and rpc/call.c, and the socket-less
 * entry point the fuzz target uses. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "rpc/conn-internal.h"
#include "rpc/frame.h"
#include "rpc/pool-internal.h"
#include "rpc/server.h"

typedef struct rpc_conn rpc_conn;

typedef struct rpc_header {
        char *name, *value;
} rpc_header;

struct ts_rpc_call {
        ts_rpc_server *server;

        /* Loop thread only. */
        rpc_conn *conn; /* NULL once the stream is gone */
        struct ts_rpc_call *conn_prev, *conn_next;
        int32_t stream_id;
        const ts_rpc_method *method;
        char *path, *http_method, *content_type, *encoding;
        rpc_header *headers;
        size_t n_headers;
        uint64_t timeout_ns;
        bool has_timeout;
        uv_timer_t *timer;
        ts_rpc_deframer deframer;
        uint8_t *req;
        size_t req_len;
        unsigned n_req;
        bool request_done, dispatched, headers_sent, finished;
        uv_work_t work;   /* on libuv's pool */
        ts_rpc_job job;   /* on the server's own threads */

        /* Read-only while the handler runs. */
        uint64_t deadline;
        bool has_peer;
        uid_t peer_uid;
        gid_t peer_gid;
        pid_t peer_pid;

        /* Under server->lock. */
        int refs;
        ts_rpc_bufq out; /* framed messages not sent yet */
        bool sent_unary;
        bool final_set;
        int status;
        char *status_msg;
        bool cancelled;
        bool pending;
        struct ts_rpc_call *pending_next;
        struct ts_rpc_call *kick_next; /* loop thread only: a taken pending list */
        struct ts_rpc_call *done_next; /* handler returned, own threads */
        pthread_cond_t cond;
};

struct ts_rpc_server {
        uv_loop_t loop;
        uv_pipe_t listener;
        bool listening;
        uv_async_t async;
        ts_rpc_server_options opts;

        ts_rpc_method *methods;
        size_t n_methods;
        ts_rpc_pool *pool; /* NULL: handlers run on libuv's pool */

        rpc_conn *conns;
        unsigned n_working;
        bool shutting_down;
        bool async_closed;
        uv_timer_t grace;
        bool grace_started;

        pthread_mutex_t lock;
        struct ts_rpc_call *pending_head;
        struct ts_rpc_call *done_head;
        unsigned n_queued; /* dispatched, handler not started yet */
        bool shutdown_requested;
};

/* Feeds bytes to a fresh connection that has no socket, runs the loop
 * until every handler finished, then tears the connection down. What the
 * server wrote is handed out in *ret_out (malloc()ed, *ret_out_len bytes)
 * when ret_out is not NULL, else dropped. For the fuzz target and tests.
 * Returns 0, -EPROTO (nghttp2 refused the input; the output so far is
 * still handed out) or -ENOMEM. */
int ts_rpc_server_feed_session(ts_rpc_server *s, const uint8_t *data, size_t len,
                               uint8_t **ret_out, size_t *ret_out_len);

/* call.c -> server.c: the call has new output or completed; wake the loop.
 * Called with server->lock held. */
void ts_rpc_server_post_locked(ts_rpc_server *s, struct ts_rpc_call *call);
