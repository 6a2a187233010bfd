/* Each call of the server on the loop thread: nghttp2's callbacks for its
 * stream, the request (headers, framing, limits), the handler's dispatch,
 * and the response (headers, data as the handler produces it, trailers). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/server-internal.h"

#define MAX_METADATA 128

/* ---- calls ---- */

static void timer_free_cb(uv_handle_t *h) {
        free(h);
}

static void call_free(ts_rpc_call *call) {
        ts_rpc_server_stat_add(&call->server->stat_calls, -1);
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

void ts_rpc_stream_unref(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;
        pthread_mutex_lock(&s->lock);
        int r = --call->refs;
        pthread_mutex_unlock(&s->lock);
        if (r == 0)
                call_free(call);
}

static int call_new(rpc_conn *c, int32_t stream_id, ts_rpc_call **ret) {
        ts_rpc_server *s = c->server;
        ts_rpc_call *call = calloc(1, sizeof(*call));
        if (!call)
                return -ENOMEM;
        call->server = s;
        call->conn = c;
        call->stream_id = stream_id;
        call->refs = 1;
        ts_rpc_server_stat_add(&s->stat_calls, 1);
        ts_rpc_server_stat_add(&s->stat_calls_total, 1);
        call->has_peer = c->has_peer;
        call->peer_uid = c->peer.uid;
        call->peer_gid = c->peer.gid;
        call->peer_pid = c->peer.pid;
        call->request_due = uv_now(&s->loop) + s->opts.request_timeout_ms;
        ts_rpc_deframer_init(&call->deframer, s->opts.max_message_size);
        pthread_cond_init(&call->cond, NULL);
        call->conn_next = c->calls;
        if (c->calls)
                c->calls->conn_prev = call;
        c->calls = call;
        ts_rpc_server_conn_watch(c, call->request_due);
        *ret = call;
        return 0;
}

/* The client may send what the call's request held of its connection
 * window again. */
static void give_window_back(ts_rpc_call *call) {
        if (call->conn && call->window_held > 0)
                nghttp2_session_consume_connection(call->conn->h2.session, call->window_held);
        call->window_held = 0;
}

static void unlink_call(ts_rpc_call *call) {
        rpc_conn *c = call->conn;

        if (call->conn_prev)
                call->conn_prev->conn_next = call->conn_next;
        else
                c->calls = call->conn_next;
        if (call->conn_next)
                call->conn_next->conn_prev = call->conn_prev;
        if (!c->calls) {
                c->idle_since = uv_now(&c->server->loop);
                ts_rpc_server_conn_watch(c, c->idle_since + c->server->opts.idle_timeout_ms);
        }
}

void ts_rpc_stream_detach(ts_rpc_call *call) {
        rpc_conn *c = call->conn;
        ts_rpc_server *s = call->server;

        if (!c)
                return;
        give_window_back(call);
        unlink_call(call);
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
        ts_rpc_stream_unref(call);
}

/* ---- the response ---- */

#define NV(n, v)                                                                             \
        { (uint8_t *) (n), (uint8_t *) (v), sizeof(n) - 1, strlen(v),                       \
          NGHTTP2_NV_FLAG_NO_COPY_NAME }

/* Submits grpc-status and grpc-message: as trailers, or as a whole
 * trailers-only response. */
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
        bool more = call->out.head != NULL;
        pthread_mutex_unlock(&s->lock);

        if (n > 0)
                call->stall_since = more ? uv_now(&s->loop) : 0;
        if (end) {
                *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
                int r = submit_status(call, false, code, msg);
                free(msg);
                if (r < 0)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
                call->finished = true;
                call->stall_since = 0;
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

/* Output waits for the client from now, unless it did already. */
static void watch_output(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;
        if (call->stall_since)
                return;
        call->stall_since = uv_now(&s->loop);
        ts_rpc_server_conn_watch(call->conn, call->stall_since + s->opts.send_timeout_ms);
}

void ts_rpc_stream_kick(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;

        if (!call->conn || call->finished)
                return;
        pthread_mutex_lock(&s->lock);
        bool has_out = call->out.head != NULL, final = call->final_set;
        bool taken = call->request_taken;
        int code = call->status;
        char *msg = final && call->status_msg ? strdup(call->status_msg) : NULL;
        pthread_mutex_unlock(&s->lock);

        if (taken)
                give_window_back(call);
        if (has_out || (final && call->headers_sent))
                watch_output(call);
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
        va_list ap;

        va_start(ap, fmt);
        char *m = ts_rpc_message_vformat(fmt, ap);
        va_end(ap);
        give_window_back(call);

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
        ts_rpc_stream_kick(call);
}

/* The client has not read the response for send_timeout_ms: the stream is
 * reset (trailers could not get through either), the handler's sends fail
 * from now on. */
static void reset_stalled(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;

        pthread_mutex_lock(&s->lock);
        call->cancelled = true;
        call->final_set = true;
        ts_rpc_bufq_clear(&call->out);
        pthread_cond_broadcast(&call->cond);
        pthread_mutex_unlock(&s->lock);
        call->finished = true;
        nghttp2_submit_rst_stream(call->conn->h2.session, NGHTTP2_FLAG_NONE, call->stream_id,
                                  NGHTTP2_CANCEL);
}

static void lower(uint64_t *due, uint64_t t) {
        if (!*due || t < *due)
                *due = t;
}

void ts_rpc_stream_check(ts_rpc_call *call, uint64_t now, uint64_t *next_due) {
        ts_rpc_server *s = call->server;

        if (!call->conn)
                return;
        if (!call->request_done && !call->final_set && !call->finished) {
                if (now >= call->request_due) {
                        ts_rpc_server_limit_hit(s, TS_RPC_LIMIT_REQUEST_TIMEOUT);
                        return call_fail(call, TS_RPC_DEADLINE_EXCEEDED,
                                         "request not complete within %" PRIu32 " ms",
                                         s->opts.request_timeout_ms);
                }
                lower(next_due, call->request_due);
        }
        if (call->stall_since && !call->finished) {
                uint64_t due = call->stall_since + s->opts.send_timeout_ms;
                if (now >= due) {
                        ts_rpc_server_limit_hit(s, TS_RPC_LIMIT_SEND_TIMEOUT);
                        return reset_stalled(call);
                }
                lower(next_due, due);
        }
}

/* ---- handlers on workers ---- */

/* Takes the call off the queue: the handler has its request now. */
static void start_handler(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;

        pthread_mutex_lock(&s->lock);
        s->n_queued--;
        call->request_taken = true;
        ts_rpc_server_post_locked(s, call);
        pthread_mutex_unlock(&s->lock);
}

/* Settles the status from what the handler returned; under the lock. */
static void settle_locked(ts_rpc_call *call, int code) {
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
}

/* On the worker: decodes the request, runs the handler, settles the status. */
static void run_handler(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;
        ProtobufCMessage *req = NULL;
        int code = TS_RPC_OK;

        start_handler(call);
        if (call->method->request) {
                code = ts_rpc_call_decode(call, call->method->request, &req);
                /* Decoded, the bytes are not needed any more. */
                free(TAKE_PTR(call->req));
                call->req_len = 0;
        }
        if (code == TS_RPC_OK && !ts_rpc_call_cancelled(call))
                code = call->method->handler(call, req, call->method->userdata);
        if (req)
                protobuf_c_message_free_unpacked(req, NULL);

        pthread_mutex_lock(&s->lock);
        settle_locked(call, code);
        pthread_mutex_unlock(&s->lock);
}

void ts_rpc_stream_handler_done(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;
        rpc_conn *c = call->conn;

        s->n_working--;
        if (c) {
                ts_rpc_stream_kick(call);
                ts_rpc_server_conn_flush(c);
        }
        ts_rpc_stream_unref(call);
        ts_rpc_server_maybe_finish(s);
}

static void work_cb(uv_work_t *w) {
        run_handler(w->data);
}

static void after_work_cb(uv_work_t *w, int status) {
        ts_rpc_stream_handler_done(w->data);
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
                ts_rpc_server_conn_flush(c);
}

/* Counts the call in the queue, or refuses it when the queue is full. */
static bool enqueue(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;

        pthread_mutex_lock(&s->lock);
        bool full = s->n_queued >= s->opts.max_queued_calls;
        if (!full) {
                s->n_queued++;
                call->refs++;
                call->dispatched = true;
        }
        pthread_mutex_unlock(&s->lock);
        return !full;
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
        if (!enqueue(call)) {
                ts_rpc_server_limit_hit(s, TS_RPC_LIMIT_MAX_QUEUED_CALLS);
                return call_fail(call, TS_RPC_RESOURCE_EXHAUSTED,
                                 "server busy: %" PRIu32 " calls wait for a handler already",
                                 s->opts.max_queued_calls);
        }
        if (s->pool) {
                call->job.run = job_run;
                ts_rpc_pool_submit(s->pool, &call->job);
        } else {
                call->work.data = call;
                int r = uv_queue_work(&s->loop, &call->work, work_cb, after_work_cb);
                if (r < 0) {
                        pthread_mutex_lock(&s->lock);
                        s->n_queued--;
                        call->dispatched = false;
                        pthread_mutex_unlock(&s->lock);
                        ts_rpc_stream_unref(call);
                        return call_fail(call, TS_RPC_UNAVAILABLE, "cannot queue work: %s",
                                         uv_strerror(r));
                }
        }
        s->n_working++;
}

/* ---- the request ---- */

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

static int add_metadata(ts_rpc_call *call, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen) {
        if (call->n_headers >= MAX_METADATA)
                return 0;
        rpc_header *h = realloc(call->headers, (call->n_headers + 1) * sizeof(*h));
        if (!h)
                return -ENOMEM;
        call->headers = h;
        h += call->n_headers;
        h->name = memdup0(name, namelen);
        h->value = memdup0(value, valuelen);
        call->n_headers++;
        return h->name && h->value ? 0 : -ENOMEM;
}

/* Counts a header against max_header_list_size as HTTP/2 does (RFC 9113
 * 6.5.2), on its decoded size: an HPACK reference of one byte can stand for
 * a header of kilobytes. Past the bound what the call holds goes. */
static bool headers_fit(ts_rpc_call *call, size_t namelen, size_t valuelen) {
        if (call->headers_too_big)
                return false;
        call->header_bytes += namelen + valuelen + 32;
        if (call->header_bytes <= call->server->opts.max_header_list_size)
                return true;
        call->headers_too_big = true;
        for (size_t i = 0; i < call->n_headers; i++) {
                free(call->headers[i].name);
                free(call->headers[i].value);
        }
        free(call->headers);
        call->headers = NULL;
        call->n_headers = 0;
        return false;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
        ts_rpc_call *call;
        int r = 0;

        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
                return 0;
        call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!call || !headers_fit(call, namelen, valuelen))
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
        } else if (namelen > 0 && name[0] != ':')
                r = add_metadata(call, name, namelen, value, valuelen);
#undef IS
        return r < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
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

static void start_deadline(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;
        uint64_t ms = call->timeout_ns / 1000000 + (call->timeout_ns % 1000000 ? 1 : 0);
        uint64_t now = ts_rpc_conn_now_ns();

        call->deadline = call->timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + call->timeout_ns;
        call->timer = malloc(sizeof(*call->timer));
        if (!call->timer)
                return call_fail(call, TS_RPC_RESOURCE_EXHAUSTED, "out of memory");
        uv_timer_init(&s->loop, call->timer);
        call->timer->data = call;
        uv_timer_start(call->timer, timer_cb, ms, 0);
}

static void request_headers_done(ts_rpc_call *call) {
        ts_rpc_server *s = call->server;

        if (call->headers_too_big) {
                ts_rpc_server_limit_hit(s, TS_RPC_LIMIT_MAX_HEADER_LIST_SIZE);
                return call_fail(call, TS_RPC_RESOURCE_EXHAUSTED,
                                 "request headers larger than %" PRIu32 " bytes",
                                 s->opts.max_header_list_size);
        }
        if (!call->http_method || strcmp(call->http_method, "POST") != 0)
                return respond_http(call, "405");
        if (!call->content_type || strncmp(call->content_type, "application/grpc", 16) != 0)
                return respond_http(call, "415");
        if (!call->path)
                return call_fail(call, TS_RPC_UNIMPLEMENTED, "no method path");
        call->method = ts_rpc_server_find_method(s, call->path);
        if (!call->method)
                return call_fail(call, TS_RPC_UNIMPLEMENTED, "unknown method %.*s",
                                 TS_RPC_QUOTE_MAX, call->path);
        if (call->has_timeout)
                start_deadline(call);
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
                                  "grpc-encoding %.*s is not supported, only identity",
                                  TS_RPC_QUOTE_MAX, call->encoding);
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

        /* The stream's window goes back at once, the connection's when a
         * handler takes the request: what a connection has buffered stays
         * within its connection window. */
        nghttp2_session_consume_stream(session, stream_id, len);
        if (!call || call->final_set || call->finished || !call->method) {
                nghttp2_session_consume_connection(session, len);
                return 0;
        }
        call->window_held += len;
        int r = ts_rpc_deframer_feed(&call->deframer, data, len, on_message, call);
        if (r == -EMSGSIZE) {
                ts_rpc_server_limit_hit(call->server, TS_RPC_LIMIT_MAX_MESSAGE_SIZE);
                call_fail(call, TS_RPC_RESOURCE_EXHAUSTED,
                          "request message larger than max (%" PRIu32 " bytes)",
                          call->deframer.max_message);
        } else if (r == -EBADMSG)
                call_fail(call, TS_RPC_INTERNAL, "bad message flag byte");
        else if (r == -ENOMEM)
                call_fail(call, TS_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
        rpc_conn *c = ud;

        if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
                c->preface_seen = true;
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
                ts_rpc_stream_detach(call);
        return 0;
}

/* ---- session callbacks ---- */

/* A stream past max_concurrent_streams is refused by nghttp2 itself. */
static int on_invalid_frame(nghttp2_session *session, const nghttp2_frame *frame, int lib_error_code,
                            void *ud) {
        rpc_conn *c = ud;
        if (lib_error_code == NGHTTP2_ERR_REFUSED_STREAM)
                ts_rpc_server_limit_hit(c->server, TS_RPC_LIMIT_MAX_CONCURRENT_STREAMS);
        return 0;
}

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *session_option;
static uv_once_t callbacks_once = UV_ONCE_INIT;

static void callbacks_init(void) {
        if (nghttp2_option_new(&session_option) != 0)
                return;
        /* nghttp2's HTTP messaging checks reject an :authority holding a
         * path, which is what grpc-go sends when dialled with a socket path
         * and a custom dialer (a common way to reach a unix socket). The
         * request checks gRPC needs (:method, :path, content-type, one
         * message) are made in on_header and request_headers_done. */
        nghttp2_option_set_no_http_messaging(session_option, 1);
        /* The window is given back by hand (on_data_chunk, give_window_back). */
        nghttp2_option_set_no_auto_window_update(session_option, 1);
        if (nghttp2_session_callbacks_new(&callbacks) != 0)
                return;
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
        nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(callbacks, on_invalid_frame);
}

const nghttp2_session_callbacks *ts_rpc_stream_callbacks(void) {
        uv_once(&callbacks_once, callbacks_init);
        return session_option ? callbacks : NULL;
}

const nghttp2_option *ts_rpc_stream_options(void) {
        uv_once(&callbacks_once, callbacks_init);
        return callbacks ? session_option : NULL;
}
