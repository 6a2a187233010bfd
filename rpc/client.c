#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "common/log.h"
#include "rpc/client.h"
#include "rpc/conn-internal.h"
#include "rpc/frame.h"

/* Responses buffered per connection before the client reads them. */
#define CONN_WINDOW (16 << 20)

struct ts_rpc_client_call {
        ts_rpc_client *client;
        int refs; /* the API owner, the loop while the stream lives */

        /* Set at start, read-only after. */
        char *method;
        nghttp2_nv *nv;
        size_t n_nv;

        /* Loop thread only. */
        int32_t stream_id;
        ts_rpc_deframer deframer;
        int http_status;
        bool got_grpc_status;

        /* Under client->lock (the deadline is set at start, before the call is shared). */
        uint64_t deadline; /* CLOCK_MONOTONIC ns, 0 none */
        bool submitted, dirty, cancel_requested, cancel_sent, send_closed, send_eof_pending;
        struct ts_rpc_client_call *dirty_next;
        ts_rpc_bufq out;
        ts_rpc_bufq in; /* received messages: data[] is the message */
        bool done;
        int status;
        char *message;
        pthread_cond_t cond; /* this call's state changed: a message, its end */
};

struct ts_rpc_client {
        uv_loop_t loop;
        uv_pipe_t pipe;
        uv_async_t async;
        pthread_t thread;
        ts_rpc_conn h2;

        pthread_mutex_t lock;
        /* Each call has a condition of its own: with one for the whole
         * connection, every message woke every thread waiting on any call. */
        pthread_condattr_t cond_attr; /* CLOCK_MONOTONIC, for the calls' conditions */
        ts_rpc_client_call *dirty_head;
        bool async_open;
        bool dead;     /* connection gone: no new calls */
        bool stopping; /* free() asked the loop to end */
};

static void call_free_now(ts_rpc_client_call *cc) {
        ts_rpc_bufq_clear(&cc->out);
        ts_rpc_bufq_clear(&cc->in);
        for (size_t i = 0; i < cc->n_nv; i++) {
                free(cc->nv[i].name);
                free(cc->nv[i].value);
        }
        free(cc->nv);
        free(cc->method);
        free(cc->message);
        ts_rpc_deframer_done(&cc->deframer);
        pthread_cond_destroy(&cc->cond);
        free(cc);
}

/* With client->lock held; returns true when the call must be freed. */
static bool unref_locked(ts_rpc_client_call *cc) {
        return --cc->refs == 0;
}

/* Ends a call with a status unless it has one; with client->lock held. */
static void finish_locked(ts_rpc_client_call *cc, int code, const char *msg) {
        if (cc->done)
                return;
        cc->done = true;
        cc->status = code;
        free(cc->message);
        cc->message = strdup(msg ? msg : "");
        pthread_cond_broadcast(&cc->cond);
}

static void mark_dirty_locked(ts_rpc_client_call *cc) {
        ts_rpc_client *c = cc->client;
        if (!cc->dirty) {
                cc->dirty = true;
                cc->refs++;
                cc->dirty_next = c->dirty_head;
                c->dirty_head = cc;
        }
        uv_async_send(&c->async);
}

/* ---- nghttp2 callbacks (loop thread) ---- */

static ssize_t req_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                           size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                           void *user_data) {
        ts_rpc_client_call *cc = source->ptr;
        ts_rpc_client *c = cc->client;

        pthread_mutex_lock(&c->lock);
        size_t n = ts_rpc_bufq_read(&cc->out, buf, length);
        bool eof = !cc->out.head && cc->send_closed;
        pthread_mutex_unlock(&c->lock);
        if (eof)
                *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0)
                return NGHTTP2_ERR_DEFERRED;
        return (ssize_t) n;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
        ts_rpc_client *c = ud;
        ts_rpc_client_call *cc = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);

        if (!cc || frame->hd.type != NGHTTP2_HEADERS)
                return 0;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
        if (IS(":status")) {
                int st = 0;
                for (size_t i = 0; i < valuelen && i < 3; i++)
                        st = st * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
                cc->http_status = st;
        } else if (IS("grpc-status")) {
                int code;
                if (ts_rpc_status_parse((const char *) value, valuelen, &code) < 0)
                        code = TS_RPC_UNKNOWN;
                cc->got_grpc_status = true;
                pthread_mutex_lock(&c->lock);
                if (!cc->done)
                        cc->status = code;
                pthread_mutex_unlock(&c->lock);
        } else if (IS("grpc-message")) {
                char *m = NULL;
                if (ts_rpc_percent_decode((const char *) value, valuelen, &m) < 0)
                        return NGHTTP2_ERR_CALLBACK_FAILURE;
                pthread_mutex_lock(&c->lock);
                if (!cc->done) {
                        free(cc->message);
                        cc->message = m;
                        m = NULL;
                }
                pthread_mutex_unlock(&c->lock);
                free(m);
        }
#undef IS
        return 0;
}

static int on_message(void *userdata, bool compressed, uint8_t *msg, size_t len) {
        ts_rpc_client_call *cc = userdata;
        ts_rpc_client *c = cc->client;

        if (compressed) {
                free(msg);
                return -EPROTONOSUPPORT;
        }
        ts_rpc_buf *b = malloc(sizeof(*b) + len + 1);
        if (!b) {
                free(msg);
                return -ENOMEM;
        }
        *b = (ts_rpc_buf) { .len = len };
        memcpy(b->data, msg, len + 1);
        free(msg);
        pthread_mutex_lock(&c->lock);
        ts_rpc_bufq_push(&cc->in, b);
        pthread_cond_broadcast(&cc->cond);
        pthread_mutex_unlock(&c->lock);
        return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud) {
        ts_rpc_client *c = ud;
        ts_rpc_client_call *cc = nghttp2_session_get_stream_user_data(session, stream_id);
        if (!cc)
                return 0;
        int r = ts_rpc_deframer_feed(&cc->deframer, data, len, on_message, cc);
        if (r < 0) {
                const char *why = r == -EMSGSIZE         ? "response message over the size limit"
                                  : r == -EPROTONOSUPPORT ? "compressed response message"
                                                          : "bad response framing";
                pthread_mutex_lock(&c->lock);
                finish_locked(cc, r == -EMSGSIZE ? TS_RPC_RESOURCE_EXHAUSTED : TS_RPC_INTERNAL, why);
                pthread_mutex_unlock(&c->lock);
                nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        }
        return 0;
}

static int http_to_status(int http) {
        switch (http) {
        case 400:
                return TS_RPC_INTERNAL;
        case 401:
                return TS_RPC_UNAUTHENTICATED;
        case 403:
                return TS_RPC_PERMISSION_DENIED;
        case 404:
                return TS_RPC_UNIMPLEMENTED;
        case 429:
        case 502:
        case 503:
        case 504:
                return TS_RPC_UNAVAILABLE;
        default:
                return TS_RPC_UNKNOWN;
        }
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *ud) {
        ts_rpc_client *c = ud;
        ts_rpc_client_call *cc = nghttp2_session_get_stream_user_data(session, stream_id);
        char buf[64];

        if (!cc)
                return 0;
        pthread_mutex_lock(&c->lock);
        if (cc->http_status && cc->http_status != 200) {
                snprintf(buf, sizeof(buf), "HTTP status %d", cc->http_status);
                finish_locked(cc, http_to_status(cc->http_status), buf);
        } else if (cc->got_grpc_status) {
                if (ts_rpc_deframer_partial(&cc->deframer))
                        finish_locked(cc, TS_RPC_INTERNAL, "response ended inside a message");
                else {
                        char *m = cc->message;
                        cc->message = NULL;
                        finish_locked(cc, cc->status, m);
                        free(m);
                }
        } else if (cc->cancel_requested)
                finish_locked(cc, TS_RPC_CANCELLED, "cancelled");
        else if (error_code == NGHTTP2_REFUSED_STREAM)
                finish_locked(cc, TS_RPC_UNAVAILABLE, "stream refused by the server");
        else if (error_code == NGHTTP2_CANCEL)
                finish_locked(cc, TS_RPC_CANCELLED, "stream cancelled by the server");
        else {
                snprintf(buf, sizeof(buf), "stream closed without status (%s)",
                         nghttp2_http2_strerror(error_code));
                finish_locked(cc, TS_RPC_INTERNAL, buf);
        }
        bool f = unref_locked(cc);
        pthread_mutex_unlock(&c->lock);
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        if (f)
                call_free_now(cc);
        return 0;
}

/* ---- loop side ---- */

static void fail_all_and_die(ts_rpc_client *c, const char *why) {
        /* Streams still open are closed by nghttp2_session_del without
         * callbacks; end their calls here. */
        pthread_mutex_lock(&c->lock);
        c->dead = true;
        pthread_mutex_unlock(&c->lock);
        if (!c->h2.session)
                return;
        /* Walk the open streams by id: ids are odd and below the next. */
        int32_t next = nghttp2_session_get_next_stream_id(c->h2.session);
        for (int32_t id = 1; id > 0 && id < next; id += 2) {
                ts_rpc_client_call *cc = nghttp2_session_get_stream_user_data(c->h2.session, id);
                if (!cc)
                        continue;
                nghttp2_session_set_stream_user_data(c->h2.session, id, NULL);
                pthread_mutex_lock(&c->lock);
                finish_locked(cc, TS_RPC_UNAVAILABLE, why);
                bool f = unref_locked(cc);
                pthread_mutex_unlock(&c->lock);
                if (f)
                        call_free_now(cc);
        }
        nghttp2_session_del(c->h2.session);
        c->h2.session = NULL;
        ts_rpc_conn_close(&c->h2, true);
}

static void client_lost(ts_rpc_conn *h2, int err, const char *why) {
        fail_all_and_die(h2->userdata, why ? why : "connection closed by the server");
}

static void client_flush(ts_rpc_client *c) {
        ts_rpc_conn_flush(&c->h2);
}

static void start_call(ts_rpc_client *c, ts_rpc_client_call *cc) {
        nghttp2_data_provider prd = { .source.ptr = cc, .read_callback = req_read_cb };
        int32_t id = nghttp2_submit_request(c->h2.session, NULL, cc->nv, cc->n_nv, &prd, cc);
        pthread_mutex_lock(&c->lock);
        if (id < 0) {
                finish_locked(cc, TS_RPC_UNAVAILABLE, nghttp2_strerror(id));
        } else {
                cc->stream_id = id;
                cc->refs++; /* the stream's */
        }
        pthread_mutex_unlock(&c->lock);
}

static void async_cb(uv_async_t *a) {
        ts_rpc_client *c = a->data;

        pthread_mutex_lock(&c->lock);
        ts_rpc_client_call *list = c->dirty_head;
        c->dirty_head = NULL;
        bool stopping = c->stopping;
        pthread_mutex_unlock(&c->lock);

        for (ts_rpc_client_call *cc = list, *n; cc; cc = n) {
                n = cc->dirty_next;
                pthread_mutex_lock(&c->lock);
                cc->dirty = false;
                bool start = !cc->submitted && !cc->done, cancel = cc->cancel_requested &&
                                                                   !cc->cancel_sent;
                cc->submitted = true;
                if (cancel)
                        cc->cancel_sent = true;
                pthread_mutex_unlock(&c->lock);

                if (!c->h2.session) {
                        pthread_mutex_lock(&c->lock);
                        finish_locked(cc, TS_RPC_UNAVAILABLE, "connection closed");
                        pthread_mutex_unlock(&c->lock);
                } else {
                        if (start)
                                start_call(c, cc);
                        if (cc->stream_id > 0) {
                                if (cancel)
                                        nghttp2_submit_rst_stream(c->h2.session, NGHTTP2_FLAG_NONE,
                                                                  cc->stream_id, NGHTTP2_CANCEL);
                                else
                                        nghttp2_session_resume_data(c->h2.session, cc->stream_id);
                        }
                }
                pthread_mutex_lock(&c->lock);
                bool f = unref_locked(cc);
                pthread_mutex_unlock(&c->lock);
                if (f)
                        call_free_now(cc);
        }
        client_flush(c);
        if (stopping) {
                fail_all_and_die(c, "client closed");
                uv_close((uv_handle_t *) &c->async, NULL);
        }
}

static void *thread_main(void *p) {
        ts_rpc_client *c = p;
        sigset_t ss;

        /* A write to a peer that went away gives EPIPE, not a signal: SIGPIPE
         * from write() goes to the writing thread, this one. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &ss, NULL);
        client_flush(c);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        return NULL;
}

/* After GOAWAY the server takes no new streams: refuse new calls at once. */
static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
        ts_rpc_client *c = ud;
        if (frame->hd.type == NGHTTP2_GOAWAY) {
                pthread_mutex_lock(&c->lock);
                c->dead = true;
                pthread_mutex_unlock(&c->lock);
        }
        return 0;
}

static nghttp2_session_callbacks *callbacks;
static uv_once_t callbacks_once = UV_ONCE_INIT;

static void callbacks_init(void) {
        if (nghttp2_session_callbacks_new(&callbacks) != 0)
                return;
        nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
}

static int connect_socket(const char *path, int *ret_fd, ts_error **err) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (strlen(path) >= sizeof(sa.sun_path))
                return ts_error_set(err, ENAMETOOLONG, "socket path %s", path);
        memcpy(sa.sun_path, path, strlen(path));
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return ts_error_set(err, errno, "socket");
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return ts_error_set(err, errno, "connect to %s", path);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* A client with its lock, condition and loop; nothing open on the loop. */
static int client_new(ts_rpc_client **ret) {
        ts_rpc_client *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        int r = uv_loop_init(&c->loop);
        if (r < 0) {
                free(c);
                return r;
        }
        pthread_mutex_init(&c->lock, NULL);
        pthread_condattr_init(&c->cond_attr);
        pthread_condattr_setclock(&c->cond_attr, CLOCK_MONOTONIC);
        c->h2.userdata = c;
        c->h2.lost = client_lost;
        *ret = c;
        return 0;
}

/* Frees a client whose loop thread never started: closes what is open on
 * the loop and lets libuv let go of it first. */
static void client_destroy(ts_rpc_client *c) {
        if (c->async_open)
                uv_close((uv_handle_t *) &c->async, NULL);
        if (c->h2.has_pipe)
                ts_rpc_conn_close(&c->h2, true);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        ts_rpc_conn_done(&c->h2);
        uv_loop_close(&c->loop);
        pthread_condattr_destroy(&c->cond_attr);
        pthread_mutex_destroy(&c->lock);
        free(c);
}

/* Opens the connection on *fd (taken, and set to -1, once the pipe has it):
 * the loop's wake-up, the pipe, and the nghttp2 session with our SETTINGS
 * queued. */
static int client_open(ts_rpc_client *c, int *fd, ts_error **err) {
        int r = uv_async_init(&c->loop, &c->async, async_cb);
        if (r < 0)
                return ts_error_set(err, -r, "rpc client wake-up");
        c->async.data = c;
        c->async_open = true;
        r = ts_rpc_conn_pipe_open(&c->h2, &c->loop, *fd);
        if (r < 0)
                return ts_error_set(err, -r, "rpc client pipe");
        *fd = -1;
        r = nghttp2_session_client_new3(&c->h2.session, callbacks, c, NULL, ts_rpc_nghttp2_mem());
        if (r != 0)
                return ts_rpc_nghttp2_error(err, r, "rpc client session");
        nghttp2_settings_entry no_push = { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 };
        r = ts_rpc_conn_settings(&c->h2, &no_push, 1, CONN_WINDOW);
        if (r < 0)
                return ts_error_set(err, -r, "rpc client settings");
        r = ts_rpc_conn_read_start(&c->h2);
        if (r < 0)
                return ts_error_set(err, -r, "rpc client read");
        return 0;
}

int ts_rpc_client_connect(const char *path, ts_rpc_client **ret, ts_error **err) {
        _cleanup_close_ int fd = -1;
        ts_rpc_client *c;

        int r = connect_socket(path, &fd, err);
        if (r < 0)
                return r;
        uv_once(&callbacks_once, callbacks_init);
        if (!callbacks)
                return ts_error_set(err, ENOMEM, "nghttp2 callbacks");
        r = client_new(&c);
        if (r < 0)
                return ts_error_set(err, -r, "rpc client");
        r = client_open(c, &fd, err);
        if (r >= 0) {
                r = -pthread_create(&c->thread, NULL, thread_main, c);
                if (r < 0)
                        ts_error_set(err, -r, "rpc client thread");
        }
        if (r < 0) {
                client_destroy(c);
                return r;
        }
        *ret = c;
        return 0;
}

ts_rpc_client *ts_rpc_client_free(ts_rpc_client *c) {
        if (!c)
                return NULL;
        pthread_mutex_lock(&c->lock);
        c->stopping = true;
        pthread_mutex_unlock(&c->lock);
        uv_async_send(&c->async);
        pthread_join(c->thread, NULL);
        uv_loop_close(&c->loop);
        ts_rpc_conn_done(&c->h2);
        pthread_condattr_destroy(&c->cond_attr);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

static int add_nv(ts_rpc_client_call *cc, const char *name, const char *value) {
        nghttp2_nv *n = realloc(cc->nv, (cc->n_nv + 1) * sizeof(*n));
        if (!n)
                return -ENOMEM;
        cc->nv = n;
        char *a = strdup(name), *b = strdup(value);
        if (!a || !b) {
                free(a);
                free(b);
                return -ENOMEM;
        }
        n[cc->n_nv++] = (nghttp2_nv) { (uint8_t *) a, (uint8_t *) b, strlen(a), strlen(b),
                                       NGHTTP2_NV_FLAG_NONE };
        return 0;
}

/* A call of method with its request headers, not yet known to the loop. */
static int call_new(ts_rpc_client *c, const char *method, const ts_rpc_call_options *opts,
                    ts_rpc_client_call **ret, ts_error **err) {
        static const ts_rpc_call_options none = { 0 };
        char tbuf[16];
        int r = 0;

        if (!opts)
                opts = &none;
        if (!method || method[0] != '/' || !strchr(method + 1, '/'))
                return ts_error_set(err, EINVAL, "bad method path %s", method ? method : "(null)");
        ts_rpc_client_call *cc = calloc(1, sizeof(*cc));
        if (!cc)
                return ts_error_set(err, ENOMEM, "call");
        cc->client = c;
        cc->refs = 1;
        pthread_cond_init(&cc->cond, &c->cond_attr);
        ts_rpc_deframer_init(&cc->deframer, opts->max_message_size);
        cc->method = strdup(method);
        if (!cc->method)
                r = -ENOMEM;
        if (r >= 0)
                r = add_nv(cc, ":method", "POST");
        if (r >= 0)
                r = add_nv(cc, ":scheme", "http");
        if (r >= 0)
                r = add_nv(cc, ":path", method);
        if (r >= 0)
                r = add_nv(cc, ":authority", "localhost");
        if (r >= 0 && opts->timeout_ns) {
                cc->deadline = ts_rpc_conn_now_ns() + opts->timeout_ns;
                r = add_nv(cc, "grpc-timeout", ts_rpc_timeout_format(opts->timeout_ns, tbuf,
                                                                       sizeof(tbuf)));
        }
        if (r >= 0)
                r = add_nv(cc, "content-type", "application/grpc+proto");
        if (r >= 0)
                r = add_nv(cc, "te", "trailers");
        if (r >= 0)
                r = add_nv(cc, "user-agent", "thinsnap-rpc/0.1");
        for (size_t i = 0; r >= 0 && i < opts->n_metadata; i++)
                r = add_nv(cc, opts->metadata[i].key, opts->metadata[i].value);
        if (r < 0) {
                call_free_now(cc);
                return ts_error_set(err, -r, "call %s", method);
        }
        *ret = cc;
        return 0;
}

/* Hands cc, with what it has to send so far, to the loop: the loop starts
 * its stream. Frees cc when the connection is gone. */
static int call_post(ts_rpc_client_call *cc, ts_error **err) {
        ts_rpc_client *c = cc->client;
        pthread_mutex_lock(&c->lock);
        if (c->dead || c->stopping) {
                pthread_mutex_unlock(&c->lock);
                int r = ts_error_set(err, ECONNRESET, "call %s: connection closed", cc->method);
                call_free_now(cc);
                return r;
        }
        mark_dirty_locked(cc);
        pthread_mutex_unlock(&c->lock);
        return 0;
}

int ts_rpc_client_call_start(ts_rpc_client *c, const char *method,
                             const ts_rpc_call_options *opts, ts_rpc_client_call **ret,
                             ts_error **err) {
        ts_rpc_client_call *cc = NULL;
        int r = call_new(c, method, opts, &cc, err);
        if (r >= 0 && (r = call_post(cc, err)) >= 0)
                *ret = cc;
        return r;
}

static int call_failure_locked(ts_rpc_client_call *cc, ts_error **err) {
        int e = ts_rpc_status_to_errno(cc->status);
        return ts_error_setf_plain(err, e ? e : EPROTO, "%s: %s: %s", cc->method,
                                   ts_rpc_status_name(cc->status),
                                   cc->message ? cc->message : "");
}

static int queue_out(ts_rpc_client_call *cc, ts_rpc_buf *b, ts_error **err) {
        ts_rpc_client *c = cc->client;
        int r = 0;

        pthread_mutex_lock(&c->lock);
        if (cc->send_closed)
                r = ts_error_set(err, EPIPE, "%s: send side closed", cc->method);
        else if (cc->done && cc->status != TS_RPC_OK)
                r = call_failure_locked(cc, err);
        if (r < 0) {
                pthread_mutex_unlock(&c->lock);
                free(b);
                return r;
        }
        ts_rpc_bufq_push(&cc->out, b);
        mark_dirty_locked(cc);
        pthread_mutex_unlock(&c->lock);
        return 0;
}

/* The gRPC frame of a message of method. */
static int frame_bytes(const char *method, const void *data, size_t len, ts_rpc_buf **ret,
                       ts_error **err) {
        if (len > UINT32_MAX)
                return ts_error_set(err, EMSGSIZE, "%s: message of %zu bytes", method, len);
        if (ts_rpc_buf_frame_bytes(data, len, ret) < 0)
                return ts_error_set(err, ENOMEM, "%s: message", method);
        return 0;
}

int ts_rpc_client_call_send(ts_rpc_client_call *cc, const void *data, size_t len, ts_error **err) {
        ts_rpc_buf *b;
        int r = frame_bytes(cc->method, data, len, &b, err);
        return r < 0 ? r : queue_out(cc, b, err);
}

int ts_rpc_client_call_send_message(ts_rpc_client_call *cc, const ProtobufCMessage *msg,
                                    ts_error **err) {
        size_t len = protobuf_c_message_get_packed_size(msg);
        if (len > UINT32_MAX)
                return ts_error_set(err, EMSGSIZE, "%s: message of %zu bytes", cc->method, len);
        ts_rpc_buf *b;
        if (ts_rpc_buf_frame_message(msg, len, &b) < 0)
                return ts_error_set(err, ENOMEM, "%s: message", cc->method);
        return queue_out(cc, b, err);
}

int ts_rpc_client_call_close_send(ts_rpc_client_call *cc) {
        ts_rpc_client *c = cc->client;
        pthread_mutex_lock(&c->lock);
        if (!cc->send_closed) {
                cc->send_closed = true;
                mark_dirty_locked(cc);
        }
        pthread_mutex_unlock(&c->lock);
        return 0;
}

void ts_rpc_client_call_set_timeout(ts_rpc_client_call *cc, uint64_t timeout_ns) {
        ts_rpc_client *c = cc->client;
        pthread_mutex_lock(&c->lock);
        cc->deadline = timeout_ns ? ts_rpc_conn_now_ns() + timeout_ns : 0;
        pthread_mutex_unlock(&c->lock);
}

void ts_rpc_client_call_cancel(ts_rpc_client_call *cc) {
        ts_rpc_client *c = cc->client;
        pthread_mutex_lock(&c->lock);
        if (!cc->done && !cc->cancel_requested) {
                cc->cancel_requested = true;
                mark_dirty_locked(cc);
        }
        pthread_mutex_unlock(&c->lock);
}

/* Waits on the client's condition until the deadline; with the lock held.
 * Returns false when the deadline passed (the call is then cancelled and
 * ends with DEADLINE_EXCEEDED). */
static bool wait_locked(ts_rpc_client_call *cc) {
        ts_rpc_client *c = cc->client;

        if (!cc->deadline) {
                pthread_cond_wait(&cc->cond, &c->lock);
                return true;
        }
        struct timespec ts = { .tv_sec = (time_t) (cc->deadline / 1000000000u),
                               .tv_nsec = (long) (cc->deadline % 1000000000u) };
        if (pthread_cond_timedwait(&cc->cond, &c->lock, &ts) == ETIMEDOUT &&
            ts_rpc_conn_now_ns() >= cc->deadline && !cc->done) {
                finish_locked(cc, TS_RPC_DEADLINE_EXCEEDED, "deadline exceeded");
                cc->cancel_requested = true;
                mark_dirty_locked(cc);
                return false;
        }
        return true;
}

int ts_rpc_client_call_recv(ts_rpc_client_call *cc, uint8_t **ret, size_t *ret_len,
                            ts_error **err) {
        ts_rpc_client *c = cc->client;

        pthread_mutex_lock(&c->lock);
        for (;;) {
                ts_rpc_buf *b = ts_rpc_bufq_pop(&cc->in);
                if (b) {
                        pthread_mutex_unlock(&c->lock);
                        size_t len = b->len;
                        uint8_t *m = malloc(len + 1);
                        if (!m) {
                                free(b);
                                return ts_error_set(err, ENOMEM, "%s: message", cc->method);
                        }
                        memcpy(m, b->data, len + 1);
                        free(b);
                        *ret = m;
                        *ret_len = len;
                        return 1;
                }
                if (cc->done) {
                        int r = cc->status == TS_RPC_OK ? 0 : call_failure_locked(cc, err);
                        pthread_mutex_unlock(&c->lock);
                        return r;
                }
                wait_locked(cc);
        }
}

int ts_rpc_client_call_recv_message(ts_rpc_client_call *cc, const ProtobufCMessageDescriptor *desc,
                                    ProtobufCMessage **ret, ts_error **err) {
        _cleanup_free_ uint8_t *m = NULL;
        size_t len;
        int r = ts_rpc_client_call_recv(cc, &m, &len, err);
        if (r <= 0)
                return r;
        ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, len, m);
        if (!msg)
                return ts_error_set(err, EBADMSG, "%s: response of %zu bytes does not decode as %s",
                                    cc->method, len, desc->name);
        *ret = msg;
        return 1;
}

int ts_rpc_client_call_status(ts_rpc_client_call *cc, const char **ret_message) {
        ts_rpc_client *c = cc->client;

        pthread_mutex_lock(&c->lock);
        while (!cc->done)
                wait_locked(cc);
        ts_rpc_bufq_clear(&cc->in);
        int code = cc->status;
        if (ret_message)
                *ret_message = cc->message ? cc->message : "";
        pthread_mutex_unlock(&c->lock);
        return code;
}

ts_rpc_client_call *ts_rpc_client_call_free(ts_rpc_client_call *cc) {
        if (!cc)
                return NULL;
        ts_rpc_client *c = cc->client;
        pthread_mutex_lock(&c->lock);
        if (!cc->done && !cc->cancel_requested) {
                cc->cancel_requested = true;
                mark_dirty_locked(cc);
        }
        bool f = unref_locked(cc);
        pthread_mutex_unlock(&c->lock);
        if (f)
                call_free_now(cc);
        return NULL;
}

int ts_rpc_client_unary_bytes(ts_rpc_client *c, const char *method,
                              const ts_rpc_call_options *opts, const void *req, size_t req_len,
                              uint8_t **ret, size_t *ret_len, ts_error **err) {
        ts_rpc_client_call *cc = NULL;
        _cleanup_free_ uint8_t *m = NULL;
        size_t len = 0;
        int r;

        /* The request and its end go to the loop with the call: one wake-up,
         * and its frames leave in one write. */
        r = call_new(c, method, opts, &cc, err);
        if (r < 0)
                return r;
        ts_rpc_buf *b;
        r = frame_bytes(method, req, req_len, &b, err);
        if (r < 0) {
                call_free_now(cc);
                return r;
        }
        ts_rpc_bufq_push(&cc->out, b);
        cc->send_closed = true;
        r = call_post(cc, err);
        if (r < 0)
                return r;
        r = ts_rpc_client_call_recv(cc, &m, &len, err);
        if (r == 0)
                r = ts_error_set(err, EBADMSG, "%s: OK status without a response", method);
        if (r > 0) {
                /* The status must follow, OK. */
                _cleanup_free_ uint8_t *extra = NULL;
                size_t elen;
                int r2 = ts_rpc_client_call_recv(cc, &extra, &elen, err);
                if (r2 > 0)
                        r = ts_error_set(err, EBADMSG, "%s: more than one response", method);
                else
                        r = r2;
        }
        ts_rpc_client_call_free(cc);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        *ret_len = len;
        return 0;
}

int ts_rpc_client_unary(ts_rpc_client *c, const char *method, const ts_rpc_call_options *opts,
                        const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                        ProtobufCMessage **ret, ts_error **err) {
        size_t len = protobuf_c_message_get_packed_size(req);
        _cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
        _cleanup_free_ uint8_t *resp = NULL;
        size_t resp_len;

        if (!buf)
                return ts_error_set(err, ENOMEM, "%s: request", method);
        protobuf_c_message_pack(req, buf);
        int r = ts_rpc_client_unary_bytes(c, method, opts, buf, len, &resp, &resp_len, err);
        if (r < 0)
                return r;
        ProtobufCMessage *m = protobuf_c_message_unpack(resp_desc, NULL, resp_len, resp);
        if (!m)
                return ts_error_set(err, EBADMSG, "%s: response of %zu bytes does not decode as %s",
                                    method, resp_len, resp_desc->name);
        *ret = m;
        return 0;
}
