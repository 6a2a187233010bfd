#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "common/log.h"
#include "rpc/server-internal.h"

#define DEFAULT_MAX_STREAMS 256
#define DEFAULT_QUEUE_BYTES (4u * 1024 * 1024)
#define DEFAULT_GRACE_MS 30000
#define DEFAULT_MAX_QUEUED 4096

struct rpc_conn {
        ts_rpc_server *server;
        rpc_conn *prev, *next;
        ts_rpc_conn h2;
        ts_rpc_call *calls;
        bool goaway_sent;
        bool has_peer; /* SO_PEERCRED at accept */
        struct ucred peer;
};

static void conn_close(rpc_conn *c);
static void conn_unlink_and_free(rpc_conn *c);
static void server_maybe_finish(ts_rpc_server *s);

static void conn_flush(rpc_conn *c) {
        ts_rpc_conn_flush(&c->h2);
}

/* ---- calls ---- */

static void timer_free_cb(uv_handle_t *h) {
        free(h);
}

static void call_free(ts_rpc_call *call) {
        if (call->timer)
                uv_close((uv_handle_t *) call->timer, timer_free_cb);
        ts_rpc_bufq_clear(&call->out);
        for (size_t i = 0; i < call->n_headers; i++) {
                free(call->headers[i].name);
                free(call->headers[i].value);
        }
        free(call->headers);
        free(call->path);
        free(call->http_method);
        free(call->content_type);
        free(call->encoding);
        free(call->req);
        free(call->status_msg);
        ts_rpc_deframer_done(&call->deframer);
        pthread_cond_destroy(&call->cond);
        free(call);
}

/* Drops one reference; the caller holds no lock. */
static void call_unref(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;
        pthread_mutex_lock(&s->lock);
        int r = --call->refs;
        pthread_mutex_unlock(&s->lock);
        if (r == 0)
                call_free(call);
}

static int call_new(rpc_conn *c, int32_t stream_id, ts_rpc_call **ret) {
        ts_rpc_call *call = calloc(1, sizeof(*call));
        if (!call)
                return -ENOMEM;
        call->server = c->server;
        call->conn = c;
        call->stream_id = stream_id;
        call->refs = 1;
        call->has_peer = c->has_peer;
        call->peer_uid = c->peer.uid;
        call->peer_gid = c->peer.gid;
        call->peer_pid = c->peer.pid;
        ts_rpc_deframer_init(&call->deframer, c->server->opts.max_message_size);
        pthread_cond_init(&call->cond, NULL);
        call->conn_next = c->calls;
        if (c->calls)
                c->calls->conn_prev = call;
        c->calls = call;
        *ret = call;
        return 0;
}

/* The stream is gone (closed, reset, or its connection died): cancel the
 * handler, forget the connection, drop the stream's reference. */
static void call_detach(ts_rpc_call *call) {
        rpc_conn *c = call->conn;
        ts_rpc_server *s = call->server;

        if (!c)
                return;
        if (call->conn_prev)
                call->conn_prev->conn_next = call->conn_next;
        else
                c->calls = call->conn_next;
        if (call->conn_next)
                call->conn_next->conn_prev = call->conn_prev;
        call->conn = NULL;
        nghttp2_session_set_stream_user_data(c->h2.session, call->stream_id, NULL);
        if (call->timer) {
                uv_close((uv_handle_t *) call->timer, timer_free_cb);
                call->timer = NULL;
        }
        pthread_mutex_lock(&s->lock);
        call->cancelled = true;
        pthread_cond_broadcast(&call->cond);
        pthread_mutex_unlock(&s->lock);
        call_unref(call);
}

void ts_rpc_server_post_locked(ts_rpc_server *s, ts_rpc_call *call) {
        if (!call->pending) {
                call->pending = true;
                call->refs++;
                call->pending_next = s->pending_head;
                s->pending_head = call;
        }
        uv_async_send(&s->async);
}

#define NV(n, v)                                                                             \
        { (uint8_t *) (n), (uint8_t *) (v), sizeof(n) - 1, strlen(v),                       \
          NGHTTP2_NV_FLAG_NO_COPY_NAME }

/* Builds grpc-status/grpc-message headers after `base` fixed ones. */
static int submit_status(ts_rpc_call *call, bool trailers_only, int code, const char *msg) {
        char status[8];
        char *enc = NULL;
        nghttp2_nv nv[6];
        size_t n = 0;
        int r;

        snprintf(status, sizeof(status), "%d", code);
        if (trailers_only) {
                nv[n++] = (nghttp2_nv) NV(":status", "200");
                nv[n++] = (nghttp2_nv) NV("content-type", "application/grpc");
                nv[n++] = (nghttp2_nv) NV("grpc-accept-encoding", "identity");
        }
        nv[n++] = (nghttp2_nv) NV("grpc-status", status);
        if (msg && *msg) {
                if (ts_rpc_percent_encode(msg, &enc) < 0)
                        enc = NULL;
                if (enc)
                        nv[n++] = (nghttp2_nv) NV("grpc-message", enc);
        }
        if (trailers_only)
                r = nghttp2_submit_response(call->conn->h2.session, call->stream_id, nv, n, NULL);
        else
                r = nghttp2_submit_trailer(call->conn->h2.session, call->stream_id, nv, n);
        free(enc);
        return r;
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data) {
        ts_rpc_call *call = source->ptr;
        ts_rpc_server *s = call->server;

        pthread_mutex_lock(&s->lock);
        size_t n = ts_rpc_bufq_read(&call->out, buf, length);
        if (n > 0)
                pthread_cond_broadcast(&call->cond);
        bool end = !call->out.head && call->final_set;
        int code = call->status;
        char *msg = end && call->status_msg ? strdup(call->status_msg) : NULL;
        pthread_mutex_unlock(&s->lock);

        if (end) {
                *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
                int r = submit_status(call, false, code, msg);
                free(msg);
                if (r < 0)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
                call->finished = true;
                return (ssize_t) n;
        }
        if (n == 0)
                return NGHTTP2_ERR_DEFERRED;
        return (ssize_t) n;
}

static int submit_headers(ts_rpc_call *call) {
        nghttp2_nv nv[] = {
                NV(":status", "200"),
                NV("content-type", "application/grpc"),
                NV("grpc-accept-encoding", "identity"),
        };
        nghttp2_data_provider prd = { .source.ptr = call, .read_callback = data_read_cb };
        int r = nghttp2_submit_response(call->conn->h2.session, call->stream_id, nv,
                                        TS_ARRAY_SIZE(nv), &prd);
        if (r == 0)
                call->headers_sent = true;
        return r;
}

/* Makes progress on a call's output on the loop: first headers, then
 * data as it comes, then trailers (from data_read_cb) once the status is
 * known. Without output and with a final status: trailers-only. */
static void call_kick(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;

        if (!call->conn || call->finished)
                return;
        pthread_mutex_lock(&s->lock);
        bool has_out = call->out.head != NULL, final = call->final_set;
        int code = call->status;
        char *msg = final && call->status_msg ? strdup(call->status_msg) : NULL;
        pthread_mutex_unlock(&s->lock);

        if (call->headers_sent)
                nghttp2_session_resume_data(call->conn->h2.session, call->stream_id);
        else if (has_out)
                submit_headers(call);
        else if (final) {
                if (submit_status(call, true, code, msg) == 0)
                        call->finished = true;
        }
        free(msg);
}

/* The loop ends a call itself (bad request, deadline): the status wins over
 * what the handler may still produce, queued output is dropped. */
static void call_fail(ts_rpc_call *call, int code, const char *fmt, ...) _printf_(3, 4);
static void call_fail(ts_rpc_call *call, int code, const char *fmt, ...) {
        ts_rpc_server *s = call->server;
        char *m = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);

        pthread_mutex_lock(&s->lock);
        if (call->final_set) {
                pthread_mutex_unlock(&s->lock);
                free(m);
                return;
        }
        call->final_set = true;
        call->status = code;
        free(call->status_msg);
        call->status_msg = m;
        call->cancelled = true;
        ts_rpc_bufq_clear(&call->out);
        pthread_cond_broadcast(&call->cond);
        pthread_mutex_unlock(&s->lock);
        call_kick(call);
}

/* ---- handlers on workers ---- */

/* On the worker: decodes the request, runs the handler, settles the status. */
static void run_handler(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;
        ProtobufCMessage *req = NULL;
        int code = TS_RPC_OK;

        pthread_mutex_lock(&s->lock);
        s->n_queued--;
        pthread_mutex_unlock(&s->lock);
        if (call->method->request)
                code = ts_rpc_call_decode(call, call->method->request, &req);
        if (code == TS_RPC_OK && !ts_rpc_call_cancelled(call))
                code = call->method->handler(call, req, call->method->userdata);
        if (req)
                protobuf_c_message_free_unpacked(req, NULL);

        pthread_mutex_lock(&s->lock);
        if (code < 0 || code >= _TS_RPC_STATUS_MAX) {
                free(call->status_msg);
                call->status_msg = NULL;
                if (asprintf(&call->status_msg, "handler returned invalid status %d", code) < 0)
                        call->status_msg = NULL;
                code = TS_RPC_INTERNAL;
        } else if (code == TS_RPC_OK && !call->method->server_streaming && !call->sent_unary) {
                free(call->status_msg);
                call->status_msg = strdup("handler produced no response");
                code = TS_RPC_INTERNAL;
        }
        if (!call->final_set) {
                call->final_set = true;
                call->status = code;
                if (code == TS_RPC_OK) {
                        free(call->status_msg);
                        call->status_msg = NULL;
                }
        }
        pthread_mutex_unlock(&s->lock);
}

/* On the loop: the handler returned. */
static void handler_done(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;
        rpc_conn *c = call->conn;

        s->n_working--;
        if (c) {
                call_kick(call);
                conn_flush(c);
        }
        call_unref(call);
        server_maybe_finish(s);
}

static void work_cb(uv_work_t *w) {
        run_handler(w->data);
}

static void after_work_cb(uv_work_t *w, int status) {
        handler_done(w->data);
}

/* On one of the server's own threads; the loop learns of the end through
 * the done list. */
static void job_run(ts_rpc_job *j) {
        ts_rpc_call *call = (ts_rpc_call *) ((char *) j - offsetof(ts_rpc_call, job));
        ts_rpc_server *s = call->server;

        run_handler(call);
        pthread_mutex_lock(&s->lock);
        call->done_next = s->done_head;
        s->done_head = call;
        uv_async_send(&s->async);
        pthread_mutex_unlock(&s->lock);
}

static void timer_cb(uv_timer_t *t) {
        ts_rpc_call *call = t->data;
        rpc_conn *c = call->conn;

        call_fail(call, TS_RPC_DEADLINE_EXCEEDED, "deadline exceeded");
        if (c)
                conn_flush(c);
}

static void dispatch(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;

        if (call->finished || call->final_set)
                return;
        if (ts_rpc_deframer_partial(&call->deframer))
                return call_fail(call, TS_RPC_INTERNAL, "request stream ended inside a message");
        if (call->n_req != 1)
                return call_fail(call, TS_RPC_INTERNAL, "expected one request message, got %u",
                                 call->n_req);
        pthread_mutex_lock(&s->lock);
        if (s->n_queued >= s->opts.max_queued_calls) {
                pthread_mutex_unlock(&s->lock);
                return call_fail(call, TS_RPC_RESOURCE_EXHAUSTED,
                                 "server busy: %" PRIu32 " calls wait for a handler already",
                                 s->opts.max_queued_calls);
        }
        s->n_queued++;
        call->refs++;
        call->dispatched = true;
        pthread_mutex_unlock(&s->lock);
        if (s->pool) {
                call->job.run = job_run;
                ts_rpc_pool_submit(s->pool, &call->job);
        } else {
                call->work.data = call;
                int r = uv_queue_work(&s->loop, &call->work, work_cb, after_work_cb);
                if (r < 0) {
                        pthread_mutex_lock(&s->lock);
                        s->n_queued--;
                        pthread_mutex_unlock(&s->lock);
                        call_unref(call);
                        return call_fail(call, TS_RPC_UNAVAILABLE, "cannot queue work: %s",
                                         uv_strerror(r));
                }
        }
        s->n_working++;
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
        rpc_conn *c = ud;
        ts_rpc_call *call;

        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;
        if (call_new(c, frame->hd.stream_id, &call) < 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
        return 0;
}

static char *memdup0(const uint8_t *p, size_t n) {
        char *s = malloc(n + 1);
        if (s) {
                memcpy(s, p, n);
                s[n] = 0;
        }
        return s;
}

static int set_str(char **dst, const uint8_t *v, size_t n) {
        if (*dst)
                return 0; /* first value wins */
        *dst = memdup0(v, n);
        return *dst ? 0 : -ENOMEM;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
        ts_rpc_call *call;
        int r = 0;

        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;
        call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!call)
                return 0;

#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
        if (IS(":path"))
                r = set_str(&call->path, value, valuelen);
        else if (IS(":method"))
                r = set_str(&call->http_method, value, valuelen);
        else if (IS("content-type"))
                r = set_str(&call->content_type, value, valuelen);
        else if (IS("grpc-encoding"))
                r = set_str(&call->encoding, value, valuelen);
        else if (IS("grpc-timeout")) {
                _cleanup_free_ char *t = memdup0(value, valuelen);
                if (!t)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
                /* A malformed timeout is ignored, as if none were sent. */
                if (ts_rpc_timeout_parse(t, &call->timeout_ns) == 0)
                        call->has_timeout = true;
        } else if (namelen > 0 && name[0] != ':') {
                if (call->n_headers >= 128)
                        return 0;
                rpc_header *h = realloc(call->headers, (call->n_headers + 1) * sizeof(*h));
                if (!h)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
                call->headers = h;
                h[call->n_headers].name = memdup0(name, namelen);
                h[call->n_headers].value = memdup0(value, valuelen);
                call->n_headers++;
                if (!h[call->n_headers - 1].name || !h[call->n_headers - 1].value)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
#undef IS
        return r < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static const ts_rpc_method *find_method(ts_rpc_server *s, const char *path) {
        for (size_t i = 0; i < s->n_methods; i++)
                if (strcmp(s->methods[i].path, path) == 0)
                        return &s->methods[i];
        return NULL;
}

static void respond_http(ts_rpc_call *call, const char *status) {
        nghttp2_nv nv[] = { NV(":status", status) };
        if (nghttp2_submit_response(call->conn->h2.session, call->stream_id, nv, 1, NULL) == 0)
                call->finished = true;
        pthread_mutex_lock(&call->server->lock);
        call->final_set = true;
        call->cancelled = true;
        pthread_mutex_unlock(&call->server->lock);
}

static void request_headers_done(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;

        if (!call->http_method || strcmp(call->http_method, "POST") != 0)
                return respond_http(call, "405");
        if (!call->content_type || strncmp(call->content_type, "application/grpc", 16) != 0)
                return respond_http(call, "415");
        if (!call->path)
                return call_fail(call, TS_RPC_UNIMPLEMENTED, "no method path");
        call->method = find_method(s, call->path);
        if (!call->method)
                return call_fail(call, TS_RPC_UNIMPLEMENTED, "unknown method %s", call->path);
        if (call->has_timeout) {
                uint64_t ms = call->timeout_ns / 1000000 + (call->timeout_ns % 1000000 ? 1 : 0);
                uint64_t now = ts_rpc_conn_now_ns();
                call->deadline = call->timeout_ns > UINT64_MAX - now ? UINT64_MAX
                                                                     : now + call->timeout_ns;
                call->timer = malloc(sizeof(*call->timer));
                if (!call->timer)
                        return call_fail(call, TS_RPC_RESOURCE_EXHAUSTED, "out of memory");
                uv_timer_init(&s->loop, call->timer);
                call->timer->data = call;
                uv_timer_start(call->timer, timer_cb, ms, 0);
        }
}

static int on_message(void *userdata, bool compressed, uint8_t *msg, size_t len) {
        ts_rpc_call *call = userdata;

        if (compressed) {
                free(msg);
                if (!call->encoding || strcmp(call->encoding, "identity") == 0) {
                        call_fail(call, TS_RPC_INTERNAL,
                                  "compressed flag set without grpc-encoding");
                } else
                        call_fail(call, TS_RPC_UNIMPLEMENTED,
                                  "grpc-encoding %s is not supported, only identity",
                                  call->encoding);
                return -ECANCELED;
        }
        call->n_req++;
        if (call->n_req > 1) {
                free(msg);
                call_fail(call, TS_RPC_INTERNAL, "expected one request message, got more");
                return -ECANCELED;
        }
        call->req = msg;
        call->req_len = len;
        return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud) {
        ts_rpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);

        if (!call || call->final_set || call->finished || !call->method)
                return 0;
        int r = ts_rpc_deframer_feed(&call->deframer, data, len, on_message, call);
        if (r == -EMSGSIZE)
                call_fail(call, TS_RPC_RESOURCE_EXHAUSTED,
                          "request message larger than max (%" PRIu32 " bytes)",
                          call->deframer.max_message);
        else if (r == -EBADMSG)
                call_fail(call, TS_RPC_INTERNAL, "bad message flag byte");
        else if (r == -ENOMEM)
                call_fail(call, TS_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
        if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
                return 0;
        ts_rpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!call)
                return 0;
        bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
        if (end)
                call->request_done = true;
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
                request_headers_done(call);
        if (end && call->method && !call->finished)
                dispatch(call);
        return 0;
}

/* A response ended (END_STREAM sent) before the request did: reset the
 * stream with NO_ERROR so the client stops sending (gRPC over HTTP/2,
 * "Early Server Closure"). Done after the frame left, because nghttp2
 * sends a queued RST_STREAM ahead of queued HEADERS. */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
            (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA))
                return 0;
        ts_rpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (call && !call->request_done)
                nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                          NGHTTP2_NO_ERROR);
        return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *ud) {
        ts_rpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
        if (call)
                call_detach(call);
        return 0;
}

/* ---- connections ---- */

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *session_option;
static uv_once_t callbacks_once = UV_ONCE_INIT;

static void callbacks_init(void) {
        /* nghttp2's HTTP messaging checks reject an :authority holding a
         * path, which is what grpc-go sends when dialled with a socket path
         * and a custom dialer (a common way to reach a unix socket). The
         * request checks gRPC needs (:method, :path, content-type, one
         * message) are made in on_header and request_headers_done. */
        if (nghttp2_option_new(&session_option) != 0)
                return;
        nghttp2_option_set_no_http_messaging(session_option, 1);
        if (nghttp2_session_callbacks_new(&callbacks) != 0)
                return;
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
}

static void conn_close(rpc_conn *c) {
        if (c->h2.closing)
                return;
        /* The pipe is closed on a later loop turn, and the connection's
         * memory goes then (conn_closed); a socket-less connection is freed
         * by its owner (feed_session). Handlers are cancelled now. */
        ts_rpc_conn_close(&c->h2, false);
        while (c->calls)
                call_detach(c->calls);
}

static void conn_lost(ts_rpc_conn *h2, int err, const char *why) {
        if (why)
                log_debug("rpc: closing connection: %s%s%s", why, err < 0 ? ": " : "",
                          err < 0 ? uv_strerror(err) : "");
        conn_close(h2->userdata);
}

static void conn_closed(ts_rpc_conn *h2) {
        conn_unlink_and_free(h2->userdata);
}

static int conn_new(ts_rpc_server *s, rpc_conn **ret) {
        uv_once(&callbacks_once, callbacks_init);
        if (!callbacks || !session_option)
                return -ENOMEM;
        rpc_conn *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->server = s;
        if (nghttp2_session_server_new2(&c->h2.session, callbacks, c, session_option) != 0) {
                free(c);
                return -ENOMEM;
        }
        c->h2.userdata = c;
        c->h2.lost = conn_lost;
        c->h2.closed = conn_closed;
        nghttp2_settings_entry max_streams = { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                               s->opts.max_concurrent_streams };
        if (ts_rpc_conn_settings(&c->h2, &max_streams) < 0) {
                ts_rpc_conn_done(&c->h2);
                free(c);
                return -ENOMEM;
        }
        if (s->shutting_down) {
                nghttp2_submit_goaway(c->h2.session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
                c->goaway_sent = true;
        }
        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
        *ret = c;
        return 0;
}

static void conn_unlink_and_free(rpc_conn *c) {
        ts_rpc_server *s = c->server;

        while (c->calls)
                call_detach(c->calls);
        if (c->prev)
                c->prev->next = c->next;
        else if (s->conns == c)
                s->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        ts_rpc_conn_done(&c->h2);
        free(c);
        server_maybe_finish(s);
}

static void on_connection(uv_stream_t *listener, int status) {
        ts_rpc_server *s = listener->data;
        rpc_conn *c;

        if (status < 0 || conn_new(s, &c) < 0)
                return;
        if (ts_rpc_conn_pipe_init(&c->h2, &s->loop) < 0) {
                conn_unlink_and_free(c);
                return;
        }
        if (uv_accept(listener, (uv_stream_t *) &c->h2.pipe) < 0 ||
            ts_rpc_conn_read_start(&c->h2) < 0) {
                conn_close(c);
                return;
        }
        uv_os_fd_t fd;
        socklen_t len = sizeof(c->peer);
        c->has_peer = uv_fileno((uv_handle_t *) &c->h2.pipe, &fd) == 0 &&
                      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->peer, &len) == 0;
        conn_flush(c);
}

/* ---- server ---- */

static void listener_close_cb(uv_handle_t *h) {
        ts_rpc_server *s = h->data;
        s->listening = false;
        server_maybe_finish(s);
}

/* Takes the posted calls, under s->lock. The list is chained through
 * kick_next, which only the loop touches: once pending is false a handler
 * may post its call again, which rewrites pending_next. */
static ts_rpc_call *take_pending_locked(ts_rpc_server *s) {
        ts_rpc_call *list = NULL;
        for (ts_rpc_call *c = s->pending_head; c; c = c->pending_next) {
                c->pending = false;
                c->kick_next = list;
                list = c;
        }
        s->pending_head = NULL;
        return list;
}

static void async_close_cb(uv_handle_t *h) {
        ts_rpc_server *s = h->data;

        s->async_closed = true;
        /* Posts that arrived after their call completed still hold a ref. */
        pthread_mutex_lock(&s->lock);
        ts_rpc_call *list = take_pending_locked(s);
        pthread_mutex_unlock(&s->lock);
        for (ts_rpc_call *c = list, *n; c; c = n) {
                n = c->kick_next;
                call_unref(c);
        }
}

static void server_maybe_finish(ts_rpc_server *s) {
        if (!s->shutting_down || s->async_closed || uv_is_closing((uv_handle_t *) &s->async))
                return;
        if (s->conns || s->n_working > 0 || s->listening)
                return;
        if (s->grace_started && !uv_is_closing((uv_handle_t *) &s->grace))
                uv_close((uv_handle_t *) &s->grace, NULL);
        uv_close((uv_handle_t *) &s->async, async_close_cb);
}

/* The grace period is over: close what is left, cancelling its handlers. */
static void grace_cb(uv_timer_t *t) {
        ts_rpc_server *s = t->data;
        for (rpc_conn *c = s->conns, *n; c; c = n) {
                n = c->next;
                if (!c->h2.has_pipe)
                        continue;
                conn_close(c);
                /* A write the peer never reads is cancelled by the close. */
                ts_rpc_conn_close(&c->h2, true);
        }
}

static void begin_shutdown(ts_rpc_server *s) {
        if (s->shutting_down)
                return;
        s->shutting_down = true;
        if (uv_timer_init(&s->loop, &s->grace) == 0) {
                s->grace.data = s;
                s->grace_started = true;
                uv_timer_start(&s->grace, grace_cb, s->opts.shutdown_grace_ms, 0);
        }
        if (s->listening && !uv_is_closing((uv_handle_t *) &s->listener))
                uv_close((uv_handle_t *) &s->listener, listener_close_cb);
        for (rpc_conn *c = s->conns, *n; c; c = n) {
                n = c->next;
                if (!c->goaway_sent) {
                        nghttp2_submit_goaway(c->h2.session, NGHTTP2_FLAG_NONE,
                                              nghttp2_session_get_last_proc_stream_id(c->h2.session),
                                              NGHTTP2_NO_ERROR, NULL, 0);
                        c->goaway_sent = true;
                }
                conn_flush(c);
        }
        server_maybe_finish(s);
}

static void async_cb(uv_async_t *a) {
        ts_rpc_server *s = a->data;

        pthread_mutex_lock(&s->lock);
        ts_rpc_call *list = take_pending_locked(s), *done = s->done_head;
        s->done_head = NULL;
        bool stop = __atomic_load_n(&s->shutdown_requested, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&s->lock);

        for (ts_rpc_call *c = done, *n; c; c = n) {
                n = c->done_next;
                handler_done(c);
        }

        for (ts_rpc_call *c = list, *n; c; c = n) {
                n = c->kick_next;
                rpc_conn *conn = c->conn;
                if (conn) {
                        call_kick(c);
                        conn_flush(conn);
                }
                call_unref(c);
        }
        if (stop)
                begin_shutdown(s);
}

int ts_rpc_server_new(const ts_rpc_server_options *opts, ts_rpc_server **ret) {
        ts_rpc_server *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        if (opts)
                s->opts = *opts;
        if (!s->opts.max_message_size)
                s->opts.max_message_size = TS_RPC_DEFAULT_MAX_MESSAGE;
        if (!s->opts.max_concurrent_streams)
                s->opts.max_concurrent_streams = DEFAULT_MAX_STREAMS;
        if (!s->opts.stream_queue_bytes)
                s->opts.stream_queue_bytes = DEFAULT_QUEUE_BYTES;
        if (!s->opts.shutdown_grace_ms)
                s->opts.shutdown_grace_ms = DEFAULT_GRACE_MS;
        if (!s->opts.max_queued_calls)
                s->opts.max_queued_calls = DEFAULT_MAX_QUEUED;
        pthread_mutex_init(&s->lock, NULL);
        r = uv_loop_init(&s->loop);
        if (r < 0)
                goto fail_loop;
        r = uv_async_init(&s->loop, &s->async, async_cb);
        if (r < 0)
                goto fail_async;
        if (s->opts.handler_threads > 0) {
                r = ts_rpc_pool_new(s->opts.handler_threads, &s->pool);
                if (r < 0) {
                        uv_close((uv_handle_t *) &s->async, NULL);
                        uv_run(&s->loop, UV_RUN_DEFAULT);
                        goto fail_async;
                }
        }
        s->async.data = s;
        *ret = s;
        return 0;

fail_async:
        uv_loop_close(&s->loop);
fail_loop:
        pthread_mutex_destroy(&s->lock);
        free(s);
        return r;
}

ts_rpc_server *ts_rpc_server_free(ts_rpc_server *s) {
        if (!s)
                return NULL;
        /* Close what run() did not (a server that never ran). */
        if (s->listening && !uv_is_closing((uv_handle_t *) &s->listener))
                uv_close((uv_handle_t *) &s->listener, NULL);
        if (!uv_is_closing((uv_handle_t *) &s->async))
                uv_close((uv_handle_t *) &s->async, NULL);
        if (s->grace_started && !uv_is_closing((uv_handle_t *) &s->grace))
                uv_close((uv_handle_t *) &s->grace, NULL);
        for (rpc_conn *c = s->conns, *n; c; c = n) {
                n = c->next;
                if (!c->h2.has_pipe)
                        conn_unlink_and_free(c);
                else
                        conn_close(c);
        }
        uv_run(&s->loop, UV_RUN_DEFAULT);
        s->pool = ts_rpc_pool_free(s->pool);
        uv_loop_close(&s->loop);
        for (size_t i = 0; i < s->n_methods; i++)
                free((char *) s->methods[i].path);
        free(s->methods);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
}

int ts_rpc_server_add_method(ts_rpc_server *s, const ts_rpc_method *m) {
        if (!m->path || m->path[0] != '/' || !strchr(m->path + 1, '/') || !m->handler)
                return -EINVAL;
        if (find_method(s, m->path))
                return -EEXIST;
        ts_rpc_method *n = realloc(s->methods, (s->n_methods + 1) * sizeof(*n));
        if (!n)
                return -ENOMEM;
        s->methods = n;
        n[s->n_methods] = *m;
        n[s->n_methods].path = strdup(m->path);
        if (!n[s->n_methods].path)
                return -ENOMEM;
        s->n_methods++;
        return 0;
}

int ts_rpc_server_add_service(ts_rpc_server *s, const ProtobufCServiceDescriptor *svc,
                              const ts_rpc_service_method *methods, size_t n, void *userdata) {
        for (size_t i = 0; i < n; i++) {
                const ProtobufCMethodDescriptor *md = NULL;
                for (unsigned j = 0; j < svc->n_methods; j++)
                        if (strcmp(svc->methods[j].name, methods[i].name) == 0)
                                md = &svc->methods[j];
                if (!md)
                        return -ENOENT;
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "/%s/%s", svc->name, md->name) < 0)
                        return -ENOMEM;
                ts_rpc_method m = {
                        .path = path,
                        .request = md->input,
                        .handler = methods[i].handler,
                        .userdata = userdata,
                        .server_streaming = methods[i].server_streaming,
                };
                int r = ts_rpc_server_add_method(s, &m);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A socket file left by a server that died: connect() is refused. */
static int remove_stale_socket(const char *path, ts_error **err) {
        struct stat st;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                return ts_error_set(err, errno, "stat %s", path);
        }
        if (!S_ISSOCK(st.st_mode))
                return ts_error_set(err, ENOTSOCK, "%s exists and is not a socket", path);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return ts_error_set(err, errno, "socket");
        memcpy(sa.sun_path, path, strlen(path));
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                return ts_error_set(err, EADDRINUSE, "a server listens on %s already", path);
        if (unlink(path) < 0 && errno != ENOENT)
                return ts_error_set(err, errno, "remove stale socket %s", path);
        return 0;
}

int ts_rpc_server_listen(ts_rpc_server *s, const char *path, mode_t mode, ts_error **err) {
        int r;

        if (strlen(path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return ts_error_set(err, ENAMETOOLONG, "socket path %s", path);
        if (s->listening)
                return ts_error_set(err, EALREADY, "server listens already");
        r = remove_stale_socket(path, err);
        if (r < 0)
                return r;
        r = uv_pipe_init(&s->loop, &s->listener, 0);
        if (r < 0)
                return ts_error_set(err, -r, "pipe init");
        s->listener.data = s;
        s->listening = true;
        r = uv_pipe_bind(&s->listener, path);
        if (r < 0)
                return ts_error_set(err, -r, "bind %s", path);
        if (chmod(path, mode) < 0)
                return ts_error_set(err, errno, "chmod %s %04o", path, (unsigned) mode);
        r = uv_listen((uv_stream_t *) &s->listener, 128, on_connection);
        if (r < 0)
                return ts_error_set(err, -r, "listen on %s", path);
        return 0;
}

int ts_rpc_server_run(ts_rpc_server *s, ts_error **err) {
        sigset_t ss, old;

        /* Writes to a client that went away give EPIPE instead of killing
         * the process; SIGPIPE goes to the writing thread, this one. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &ss, &old);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        /* Drop a SIGPIPE left pending by such a write before unblocking. */
        sigset_t pending;
        if (!sigismember(&old, SIGPIPE) && sigpending(&pending) == 0 &&
            sigismember(&pending, SIGPIPE)) {
                struct timespec zero = { 0 };
                (void) sigtimedwait(&ss, NULL, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return 0;
}

void ts_rpc_server_shutdown(ts_rpc_server *s) {
        /* Only an atomic flag and uv_async_send here: signal-handler safe. */
        __atomic_store_n(&s->shutdown_requested, true, __ATOMIC_SEQ_CST);
        uv_async_send(&s->async);
}

int ts_rpc_server_feed_session(ts_rpc_server *s, const uint8_t *data, size_t len,
                               uint8_t **ret_out, size_t *ret_out_len) {
        rpc_conn *c;
        int r = conn_new(s, &c);
        if (r < 0)
                return r;
        c->h2.capture = ret_out != NULL;
        ssize_t n = nghttp2_session_mem_recv(c->h2.session, data, len);
        if (n >= 0)
                conn_flush(c);
        /* Let handlers finish and their output be produced. */
        for (;;) {
                pthread_mutex_lock(&s->lock);
                bool busy = s->n_working > 0 || s->pending_head || s->done_head;
                pthread_mutex_unlock(&s->lock);
                if (!busy)
                        break;
                uv_run(&s->loop, UV_RUN_ONCE);
        }
        conn_flush(c);
        bool lost = ret_out && !c->h2.capture;
        if (ret_out) {
                *ret_out = TAKE_PTR(c->h2.cap);
                *ret_out_len = c->h2.cap_len;
        }
        conn_close(c);
        conn_unlink_and_free(c);
        uv_run(&s->loop, UV_RUN_NOWAIT);
        if (lost)
                return -ENOMEM;
        return n < 0 ? -EPROTO : 0;
}
