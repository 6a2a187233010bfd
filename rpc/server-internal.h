/* Internals of the server, shared by rpc/server.c (the server, its
 * listener and connections), rpc/stream.c (each call on the loop: nghttp2's
 * callbacks, the request, the handler's dispatch, the response) and
 * rpc/call.c (the handler's side); and the socket-less entry point the fuzz
 * target uses. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

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
        size_t header_bytes; /* as SETTINGS_MAX_HEADER_LIST_SIZE counts */
        bool headers_too_big;
        uint64_t timeout_ns;
        bool has_timeout;
        uv_timer_t *timer;
        ts_rpc_deframer deframer;
        uint8_t *req;
        size_t req_len;
        unsigned n_req;
        size_t window_held; /* request bytes whose connection window is not back */
        uint64_t request_due; /* uv_now() by which the request must be complete */
        uint64_t stall_since; /* uv_now() since output waits without progress; 0 none */
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
        bool request_taken; /* the handler has its request: give the window back */
        bool pending;
        struct ts_rpc_call *pending_next;
        struct ts_rpc_call *kick_next; /* loop thread only: a taken pending list */
        struct ts_rpc_call *done_next; /* handler returned, own threads */
        pthread_cond_t cond;
};

/* One accepted connection (or a socket-less one). Loop thread only. */
struct rpc_conn {
        ts_rpc_server *server;
        rpc_conn *prev, *next;
        ts_rpc_conn h2;
        ts_rpc_call *calls;
        bool goaway_sent;
        bool preface_seen;   /* the client's first SETTINGS arrived */
        bool has_peer;       /* SO_PEERCRED at accept */
        struct ucred peer;
        uint64_t created;    /* uv_now() */
        uint64_t idle_since; /* uv_now() when its last stream went */
        uv_timer_t *watch;   /* the next of its timeouts */
        uint64_t watch_due;  /* uv_now() the watch fires at; 0 not armed */
};

struct ts_rpc_server {
        uv_loop_t loop;
        int listen_fd;          /* -1 when not listening */
        int reserve_fd;         /* given up to accept-and-close when out of descriptors */
        uv_poll_t listen_poll;
        uv_timer_t accept_retry;
        bool listening;
        uv_async_t async;
        ts_rpc_server_options opts;

        ts_rpc_method *methods;
        size_t n_methods;
        ts_rpc_pool *pool; /* NULL: handlers run on libuv's pool */

        rpc_conn *conns;
        unsigned n_conns;
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

        /* ts_rpc_server_stats, changed and read with atomics (any thread). */
        uint64_t stat_connections, stat_calls, stat_connections_total, stat_calls_total;
        uint64_t stat_limits[TS_RPC_LIMIT_N];
};

static inline void ts_rpc_server_stat_add(uint64_t *counter, int64_t n) {
        __atomic_fetch_add(counter, (uint64_t) n, __ATOMIC_RELAXED);
}

/* A limit of the options was hit. */
static inline void ts_rpc_server_limit_hit(ts_rpc_server *s, ts_rpc_limit l) {
        ts_rpc_server_stat_add(&s->stat_limits[l], 1);
}

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

/* stream.c -> server.c, on the loop. */
/* Writes what the connection's session has to send. */
void ts_rpc_server_conn_flush(rpc_conn *c);
/* Makes the connection's watch fire at due (uv_now() time) at the latest. */
void ts_rpc_server_conn_watch(rpc_conn *c, uint64_t due);
/* The shutdown completes once nothing is left; checks that. */
void ts_rpc_server_maybe_finish(ts_rpc_server *s);
/* The method registered for path, or NULL. */
const ts_rpc_method *ts_rpc_server_find_method(ts_rpc_server *s, const char *path);

/* server.c -> stream.c, on the loop. */
/* The session callbacks and options of every server connection; NULL
 * when they could not be made (out of memory). */
const nghttp2_session_callbacks *ts_rpc_stream_callbacks(void);
const nghttp2_option *ts_rpc_stream_options(void);
/* The stream is gone (closed, reset, or its connection closed): gives its
 * connection window back, cancels the handler, drops the stream's
 * reference. */
void ts_rpc_stream_detach(ts_rpc_call *call);
/* Output or an end arrived from the handler: gives the request's window
 * back once the handler has it, moves the response on. */
void ts_rpc_stream_kick(ts_rpc_call *call);
/* The handler returned (on the loop). */
void ts_rpc_stream_handler_done(ts_rpc_call *call);
/* Drops a reference; the caller holds no lock. */
void ts_rpc_stream_unref(ts_rpc_call *call);
/* Ends the call if its request is late or its output stalled at now;
 * otherwise lowers *next_due to when it must be looked at again (0: no
 * need). */
void ts_rpc_stream_check(ts_rpc_call *call, uint64_t now, uint64_t *next_due);
