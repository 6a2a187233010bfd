/* The server: its options, methods, listener and connections, their
 * timeouts and bounds, and the graceful shutdown. What happens on each
 * stream is in rpc/stream.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "rpc/server-internal.h"

#define DEFAULT_MAX_STREAMS 256
#define DEFAULT_MAX_HEADER_LIST (64u * 1024)
#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_HANDSHAKE_MS 10000
#define DEFAULT_REQUEST_MS 60000
#define DEFAULT_IDLE_MS 3600000
#define DEFAULT_SEND_MS 60000
#define DEFAULT_QUEUE_BYTES (4u * 1024 * 1024)
#define DEFAULT_GRACE_MS 30000
#define DEFAULT_MAX_QUEUED 4096
/* Connections taken per wake-up of the listener, so that a flood of them
 * does not starve the connections already served. */
#define ACCEPT_BATCH 64
/* When accept fails for want of memory or descriptors and none can be
 * freed, the listener rests this long before it tries again. */
#define ACCEPT_RETRY_MS 100

static void set_default(uint32_t *v, uint32_t d) {
        if (!*v)
                *v = d;
}

int ts_rpc_server_options_resolve(ts_rpc_server_options *o) {
        set_default(&o->max_message_size, TS_RPC_DEFAULT_MAX_MESSAGE);
        set_default(&o->max_concurrent_streams, DEFAULT_MAX_STREAMS);
        set_default(&o->max_header_list_size, DEFAULT_MAX_HEADER_LIST);
        set_default(&o->max_connections, DEFAULT_MAX_CONNECTIONS);
        set_default(&o->handshake_timeout_ms, DEFAULT_HANDSHAKE_MS);
        set_default(&o->request_timeout_ms, DEFAULT_REQUEST_MS);
        set_default(&o->idle_timeout_ms, DEFAULT_IDLE_MS);
        set_default(&o->send_timeout_ms, DEFAULT_SEND_MS);
        set_default(&o->shutdown_grace_ms, DEFAULT_GRACE_MS);
        set_default(&o->max_queued_calls, DEFAULT_MAX_QUEUED);
        if (!o->stream_queue_bytes)
                o->stream_queue_bytes = DEFAULT_QUEUE_BYTES;
        /* One whole message must fit in the window, or it never arrives. */
        uint64_t one = (uint64_t) o->max_message_size + TS_RPC_FRAME_PREFIX;
        if (one > NGHTTP2_MAX_WINDOW_SIZE)
                return -EINVAL;
        if (!o->connection_window)
                o->connection_window = (uint32_t) (2 * one > NGHTTP2_MAX_WINDOW_SIZE
                                                           ? NGHTTP2_MAX_WINDOW_SIZE
                                                           : 2 * one);
        if (o->connection_window < one || o->connection_window > NGHTTP2_MAX_WINDOW_SIZE)
                return -EINVAL;
        return 0;
}

const ts_rpc_method *ts_rpc_server_find_method(ts_rpc_server *s, const char *path) {
        for (size_t i = 0; i < s->n_methods; i++)
                if (strcmp(s->methods[i].path, path) == 0)
                        return &s->methods[i];
        return NULL;
}

/* ---- connections ---- */

static void conn_unlink_and_free(rpc_conn *c);
static void watch_cb(uv_timer_t *t);

void ts_rpc_server_conn_flush(rpc_conn *c) {
        ts_rpc_conn_flush(&c->h2);
}

void ts_rpc_server_conn_watch(rpc_conn *c, uint64_t due) {
        if (!c->watch || (c->watch_due && c->watch_due <= due))
                return;
        uint64_t now = uv_now(&c->server->loop);
        c->watch_due = due;
        uv_timer_start(c->watch, watch_cb, due > now ? due - now : 0, 0);
}

static void handle_free_cb(uv_handle_t *h) {
        free(h);
}

/* Stops using the connection: handlers are cancelled now, the pipe is
 * closed once what nghttp2 still had to send left (conn_closed frees the
 * rest), or when that stalls; a socket-less connection is freed by its
 * owner (feed_session). */
static void conn_close(rpc_conn *c) {
        if (c->h2.closing)
                return;
        c->server->n_conns--;
        ts_rpc_server_stat_add(&c->server->stat_connections, -1);
        while (c->calls)
                ts_rpc_stream_detach(c->calls);
        ts_rpc_conn_close(&c->h2, false);
        if (c->h2.writing)
                ts_rpc_server_conn_watch(c, c->h2.write_since + c->server->opts.send_timeout_ms);
}

/* Closes at once, dropping what was not written. */
static void conn_abort(rpc_conn *c) {
        conn_close(c);
        ts_rpc_conn_close(&c->h2, true);
}

static void conn_goaway(rpc_conn *c) {
        if (c->goaway_sent)
                return;
        nghttp2_submit_goaway(c->h2.session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->h2.session),
                              NGHTTP2_NO_ERROR, NULL, 0);
        c->goaway_sent = true;
}

/* Says GOAWAY, then closes once that is written. */
static void conn_retire(rpc_conn *c) {
        conn_goaway(c);
        ts_rpc_server_conn_flush(c);
        conn_close(c);
}

static void lower(uint64_t *due, uint64_t t) {
        if (!*due || t < *due)
                *due = t;
}

/* Closes a connection that did not start HTTP/2 in time, or stayed without
 * a stream too long; returns false then. Otherwise lowers *next to when
 * that is due. */
static bool check_use(rpc_conn *c, uint64_t now, uint64_t *next) {
        const ts_rpc_server_options *o = &c->server->opts;

        if (!c->preface_seen) {
                uint64_t due = c->created + o->handshake_timeout_ms;
                if (now >= due) {
                        log_debug("rpc: closing a connection that sent no HTTP/2 preface");
                        ts_rpc_server_limit_hit(c->server, TS_RPC_LIMIT_HANDSHAKE_TIMEOUT);
                        conn_abort(c);
                        return false;
                }
                lower(next, due);
        } else if (!c->calls) {
                uint64_t due = c->idle_since + o->idle_timeout_ms;
                if (now >= due) {
                        ts_rpc_server_limit_hit(c->server, TS_RPC_LIMIT_IDLE_TIMEOUT);
                        conn_retire(c);
                        return false;
                }
                lower(next, due);
        }
        return true;
}

/* As check_use, and closes a connection whose write does not progress. */
static bool conn_check(rpc_conn *c, uint64_t now, uint64_t *next) {
        if (!c->h2.closing && !check_use(c, now, next))
                return false;
        if (c->h2.writing) {
                uint64_t due = c->h2.write_since + c->server->opts.send_timeout_ms;
                if (now >= due) {
                        log_debug("rpc: closing a connection that does not read");
                        ts_rpc_server_limit_hit(c->server, TS_RPC_LIMIT_SEND_TIMEOUT);
                        conn_abort(c);
                        return false;
                }
                lower(next, due);
        }
        return true;
}

/* Bytes the client sent that the loop has not read yet: timers run before
 * the loop reads, and a busy loop must not blame the client for its own
 * lateness. */
static bool unread_input(rpc_conn *c) {
        uv_os_fd_t fd;
        int n = 0;
        return !c->h2.closing && c->h2.has_pipe &&
               uv_fileno((uv_handle_t *) &c->h2.pipe, &fd) == 0 && ioctl(fd, FIONREAD, &n) == 0 &&
               n > 0;
}

static void watch_cb(uv_timer_t *t) {
        rpc_conn *c = t->data;
        uint64_t now = uv_now(&c->server->loop), next = 0;

        c->watch_due = 0;
        if (unread_input(c))
                return ts_rpc_server_conn_watch(c, now + 1);
        if (!conn_check(c, now, &next))
                return;
        for (ts_rpc_call *call = c->calls, *n; call; call = n) {
                n = call->conn_next;
                ts_rpc_stream_check(call, now, &next);
        }
        ts_rpc_server_conn_flush(c);
        if (next)
                ts_rpc_server_conn_watch(c, next);
}

static void conn_lost(ts_rpc_conn *h2, int err, const char *why) {
        if (why)
                log_debug("rpc: closing connection: %s%s%s", why, err < 0 ? ": " : "",
                          err < 0 ? strerror(-err) : "");
        conn_close(h2->userdata);
}

static void conn_closed(ts_rpc_conn *h2) {
        conn_unlink_and_free(h2->userdata);
}

static int conn_session(rpc_conn *c) {
        ts_rpc_server *s = c->server;
        const nghttp2_session_callbacks *cb = ts_rpc_stream_callbacks();
        const nghttp2_option *opt = ts_rpc_stream_options();

        if (!cb || !opt)
                return -ENOMEM;
        int r = nghttp2_session_server_new3(&c->h2.session, cb, c, opt, ts_rpc_nghttp2_mem());
        if (r != 0)
                return ts_rpc_nghttp2_errno(r);
        nghttp2_settings_entry iv[] = {
                { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->opts.max_concurrent_streams },
                { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, s->opts.max_header_list_size },
        };
        return ts_rpc_conn_settings(&c->h2, iv, TS_ARRAY_SIZE(iv),
                                    (int32_t) s->opts.connection_window);
}

static int conn_new(ts_rpc_server *s, rpc_conn **ret) {
        rpc_conn *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->server = s;
        c->h2.userdata = c;
        c->h2.lost = conn_lost;
        c->h2.closed = conn_closed;
        c->created = c->idle_since = uv_now(&s->loop);
        int r = conn_session(c);
        if (r < 0) {
                ts_rpc_conn_done(&c->h2);
                free(c);
                return r;
        }
        if (s->shutting_down)
                conn_goaway(c);
        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
        s->n_conns++;
        ts_rpc_server_stat_add(&s->stat_connections, 1);
        ts_rpc_server_stat_add(&s->stat_connections_total, 1);
        *ret = c;
        return 0;
}

static void conn_unlink_and_free(rpc_conn *c) {
        ts_rpc_server *s = c->server;

        conn_close(c);
        if (c->watch)
                uv_close((uv_handle_t *) c->watch, handle_free_cb);
        if (c->prev)
                c->prev->next = c->next;
        else if (s->conns == c)
                s->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        ts_rpc_conn_done(&c->h2);
        free(c);
        ts_rpc_server_maybe_finish(s);
}

/* At max_connections: retires the connection idle the longest to make room.
 * Returns false when every connection has a call. */
static bool evict_idle(ts_rpc_server *s) {
        rpc_conn *oldest = NULL;
        for (rpc_conn *c = s->conns; c; c = c->next)
                if (!c->h2.closing && !c->calls && (!oldest || c->idle_since <= oldest->idle_since))
                        oldest = c;
        if (!oldest)
                return false;
        log_debug("rpc: %u connections open: closing the longest idle", s->n_conns);
        ts_rpc_server_limit_hit(s, TS_RPC_LIMIT_CONNECTION_EVICTED);
        conn_retire(oldest);
        return true;
}

/* ---- the listener ---- */

static int conn_start(rpc_conn *c) {
        c->watch = malloc(sizeof(*c->watch));
        if (!c->watch)
                return -ENOMEM;
        uv_timer_init(&c->server->loop, c->watch);
        c->watch->data = c;
        ts_rpc_server_conn_watch(c, c->created + c->server->opts.handshake_timeout_ms);
        int r = ts_rpc_conn_read_start(&c->h2);
        if (r < 0)
                return r;
        ts_rpc_server_conn_flush(c);
        return 0;
}

/* Serves the accepted fd; every failure costs this connection only. */
static void serve(ts_rpc_server *s, int fd) {
        rpc_conn *c;
        struct ucred peer = { 0 };
        socklen_t len = sizeof(peer);
        bool has_peer = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0;

        if (s->n_conns >= s->opts.max_connections && !evict_idle(s)) {
                log_debug("rpc: refusing a connection: %u connections, all busy", s->n_conns);
                ts_rpc_server_limit_hit(s, TS_RPC_LIMIT_MAX_CONNECTIONS);
                close(fd);
                return;
        }
        if (conn_new(s, &c) < 0) {
                close(fd);
                return;
        }
        c->has_peer = has_peer;
        c->peer = peer;
        int r = ts_rpc_conn_pipe_open(&c->h2, &s->loop, fd);
        if (r < 0) {
                close(fd);
                if (c->h2.has_pipe)
                        conn_abort(c);
                else
                        conn_unlink_and_free(c);
                return;
        }
        if (conn_start(c) < 0)
                conn_abort(c);
}

static void accept_cb(uv_poll_t *p, int status, int events);

static void accept_resume(uv_timer_t *t) {
        ts_rpc_server *s = t->data;
        if (s->listening && !uv_is_closing((uv_handle_t *) &s->listen_poll))
                uv_poll_start(&s->listen_poll, UV_READABLE, accept_cb);
}

/* Out of descriptors: the reserved one makes room to take the waiting
 * connection and close it, so that its client hears at once rather than
 * waiting in the backlog. Returns false when that did not work either. */
static bool accept_and_drop(ts_rpc_server *s) {
        if (s->reserve_fd < 0)
                return false;
        close(s->reserve_fd);
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
                close(fd);
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        return fd >= 0;
}

static void accept_failed(ts_rpc_server *s, int e) {
        log_debug("rpc: accept: %s", strerror(e));
        ts_rpc_server_limit_hit(s, TS_RPC_LIMIT_ACCEPT_FAILED);
        if ((e == EMFILE || e == ENFILE) && accept_and_drop(s))
                return;
        /* Nothing to free now (memory, descriptors): rest, then try again,
         * rather than spin on a listener that stays readable. */
        uv_poll_stop(&s->listen_poll);
        uv_timer_start(&s->accept_retry, accept_resume, ACCEPT_RETRY_MS, 0);
}

static void accept_cb(uv_poll_t *p, int status, int events) {
        ts_rpc_server *s = p->data;

        for (int i = 0; i < ACCEPT_BATCH && s->listening; i++) {
                int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd >= 0) {
                        serve(s, fd);
                        continue;
                }
                if (errno == EINTR || errno == ECONNABORTED)
                        continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                        accept_failed(s, errno);
                return;
        }
}

static void listener_closed_cb(uv_handle_t *h) {
        ts_rpc_server *s = h->data;

        close(s->listen_fd);
        s->listen_fd = -1;
        if (s->reserve_fd >= 0)
                close(s->reserve_fd);
        s->reserve_fd = -1;
        s->listening = false;
        ts_rpc_server_maybe_finish(s);
}

static void close_listener(ts_rpc_server *s) {
        if (!s->listening || uv_is_closing((uv_handle_t *) &s->listen_poll))
                return;
        uv_close((uv_handle_t *) &s->accept_retry, NULL);
        uv_close((uv_handle_t *) &s->listen_poll, listener_closed_cb);
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

static int bind_socket(const char *path, mode_t mode, int *ret_fd, ts_error **err) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        memcpy(sa.sun_path, path, strlen(path));
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return ts_error_set(err, errno, "socket");
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return ts_error_set(err, errno, "bind %s", path);
        if (chmod(path, mode) < 0)
                return ts_error_set(err, errno, "chmod %s %04o", path, (unsigned) mode);
        if (listen(fd, SOMAXCONN) < 0)
                return ts_error_set(err, errno, "listen on %s", path);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int ts_rpc_server_listen(ts_rpc_server *s, const char *path, mode_t mode, ts_error **err) {
        int fd = -1, r;

        if (strlen(path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return ts_error_set(err, ENAMETOOLONG, "socket path %s", path);
        if (s->listening)
                return ts_error_set(err, EALREADY, "server listens already");
        r = remove_stale_socket(path, err);
        if (r < 0)
                return r;
        r = bind_socket(path, mode, &fd, err);
        if (r < 0)
                return r;
        r = uv_poll_init(&s->loop, &s->listen_poll, fd);
        if (r < 0) {
                close(fd);
                return ts_error_set(err, -r, "watch %s", path);
        }
        s->listen_poll.data = s;
        uv_timer_init(&s->loop, &s->accept_retry);
        s->accept_retry.data = s;
        s->listen_fd = fd;
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        s->listening = true;
        r = uv_poll_start(&s->listen_poll, UV_READABLE, accept_cb);
        if (r < 0)
                return ts_error_set(err, -r, "watch %s", path);
        return 0;
}

/* ---- the server ---- */

void ts_rpc_server_post_locked(ts_rpc_server *s, ts_rpc_call *call) {
        if (!call->pending) {
                call->pending = true;
                call->refs++;
                call->pending_next = s->pending_head;
                s->pending_head = call;
        }
        uv_async_send(&s->async);
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
                ts_rpc_stream_unref(c);
        }
}

void ts_rpc_server_maybe_finish(ts_rpc_server *s) {
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
                /* A write the peer never reads is cancelled by the close. */
                if (c->h2.has_pipe)
                        conn_abort(c);
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
        close_listener(s);
        for (rpc_conn *c = s->conns, *n; c; c = n) {
                n = c->next;
                conn_goaway(c);
                ts_rpc_server_conn_flush(c);
        }
        ts_rpc_server_maybe_finish(s);
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
                ts_rpc_stream_handler_done(c);
        }
        for (ts_rpc_call *c = list, *n; c; c = n) {
                n = c->kick_next;
                rpc_conn *conn = c->conn;
                if (conn) {
                        ts_rpc_stream_kick(c);
                        ts_rpc_server_conn_flush(conn);
                }
                ts_rpc_stream_unref(c);
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
        s->listen_fd = s->reserve_fd = -1;
        r = ts_rpc_server_options_resolve(&s->opts);
        if (r < 0) {
                free(s);
                return r;
        }
        pthread_mutex_init(&s->lock, NULL);
        r = uv_loop_init(&s->loop);
        if (r < 0)
                goto fail_loop;
        r = uv_async_init(&s->loop, &s->async, async_cb);
        if (r < 0)
                goto fail_async;
        if (s->opts.handler_threads > 0) {
                r = ts_rpc_pool_new(s->opts.handler_threads, 0, &s->pool);
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
        close_listener(s);
        if (!uv_is_closing((uv_handle_t *) &s->async))
                uv_close((uv_handle_t *) &s->async, NULL);
        if (s->grace_started && !uv_is_closing((uv_handle_t *) &s->grace))
                uv_close((uv_handle_t *) &s->grace, NULL);
        for (rpc_conn *c = s->conns, *n; c; c = n) {
                n = c->next;
                if (!c->h2.has_pipe)
                        conn_unlink_and_free(c);
                else
                        conn_abort(c);
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
        if (ts_rpc_server_find_method(s, m->path))
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
                ts_rpc_server_conn_flush(c);
        /* Let handlers finish and their output be produced. */
        for (;;) {
                pthread_mutex_lock(&s->lock);
                bool busy = s->n_working > 0 || s->pending_head || s->done_head;
                pthread_mutex_unlock(&s->lock);
                if (!busy)
                        break;
                uv_run(&s->loop, UV_RUN_ONCE);
        }
        ts_rpc_server_conn_flush(c);
        bool lost = ret_out && !c->h2.capture;
        if (ret_out) {
                *ret_out = TAKE_PTR(c->h2.cap);
                *ret_out_len = c->h2.cap_len;
        }
        /* What the close still sends (window updates, GOAWAY) is dropped. */
        c->h2.capture = false;
        conn_unlink_and_free(c);
        uv_run(&s->loop, UV_RUN_NOWAIT);
        if (lost)
                return -ENOMEM;
        return n < 0 ? -EPROTO : 0;
}

const char *ts_rpc_limit_name(ts_rpc_limit l) {
        static const char *const names[TS_RPC_LIMIT_N] = {
                [TS_RPC_LIMIT_MAX_CONNECTIONS] = "max_connections",
                [TS_RPC_LIMIT_CONNECTION_EVICTED] = "max_connections_idle_closed",
                [TS_RPC_LIMIT_MAX_CONCURRENT_STREAMS] = "max_concurrent_streams",
                [TS_RPC_LIMIT_MAX_HEADER_LIST_SIZE] = "max_header_list_size",
                [TS_RPC_LIMIT_MAX_MESSAGE_SIZE] = "max_message_size",
                [TS_RPC_LIMIT_MAX_QUEUED_CALLS] = "max_queued_calls",
                [TS_RPC_LIMIT_HANDSHAKE_TIMEOUT] = "handshake_timeout",
                [TS_RPC_LIMIT_REQUEST_TIMEOUT] = "request_timeout",
                [TS_RPC_LIMIT_IDLE_TIMEOUT] = "idle_timeout",
                [TS_RPC_LIMIT_SEND_TIMEOUT] = "send_timeout",
                [TS_RPC_LIMIT_ACCEPT_FAILED] = "accept_failed",
        };
        return (unsigned) l < TS_RPC_LIMIT_N ? names[l] : "unknown";
}

void ts_rpc_server_stats_get(ts_rpc_server *s, ts_rpc_server_stats *ret) {
        ts_rpc_server_stats st = {
                .connections = __atomic_load_n(&s->stat_connections, __ATOMIC_RELAXED),
                .calls = __atomic_load_n(&s->stat_calls, __ATOMIC_RELAXED),
                .connections_total = __atomic_load_n(&s->stat_connections_total, __ATOMIC_RELAXED),
                .calls_total = __atomic_load_n(&s->stat_calls_total, __ATOMIC_RELAXED),
        };
        for (int i = 0; i < TS_RPC_LIMIT_N; i++)
                st.limit_hits[i] = __atomic_load_n(&s->stat_limits[i], __ATOMIC_RELAXED);
        pthread_mutex_lock(&s->lock);
        st.queued_calls = s->n_queued;
        pthread_mutex_unlock(&s->lock);
        *ret = st;
}
