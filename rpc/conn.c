#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/macro.h"
#include "rpc/conn-internal.h"
#include "rpc/frame.h"

#define STREAM_WINDOW (1 << 20)
#define WRITE_CHUNK (256 * 1024)
#define READ_SIZE 65536

/* ---- buffers ---- */

static int frame_alloc(size_t len, ts_rpc_buf **ret) {
        ts_rpc_buf *b = malloc(sizeof(*b) + TS_RPC_FRAME_PREFIX + len);
        if (!b)
                return -ENOMEM;
        *b = (ts_rpc_buf) { .len = TS_RPC_FRAME_PREFIX + len };
        ts_rpc_frame_prefix(b->data, false, (uint32_t) len);
        *ret = b;
        return 0;
}

int ts_rpc_buf_frame_bytes(const void *data, size_t len, ts_rpc_buf **ret) {
        ts_rpc_buf *b;
        int r = frame_alloc(len, &b);
        if (r < 0)
                return r;
        if (len > 0)
                memcpy(b->data + TS_RPC_FRAME_PREFIX, data, len);
        *ret = b;
        return 0;
}

int ts_rpc_buf_frame_message(const ProtobufCMessage *msg, size_t len, ts_rpc_buf **ret) {
        ts_rpc_buf *b;
        int r = frame_alloc(len, &b);
        if (r < 0)
                return r;
        protobuf_c_message_pack(msg, b->data + TS_RPC_FRAME_PREFIX);
        *ret = b;
        return 0;
}

void ts_rpc_bufq_push(ts_rpc_bufq *q, ts_rpc_buf *b) {
        b->next = NULL;
        if (q->tail)
                q->tail->next = b;
        else
                q->head = b;
        q->tail = b;
        q->bytes += b->len - b->off;
}

ts_rpc_buf *ts_rpc_bufq_pop(ts_rpc_bufq *q) {
        ts_rpc_buf *b = q->head;
        if (!b)
                return NULL;
        q->head = b->next;
        if (!q->head)
                q->tail = NULL;
        q->bytes -= b->len - b->off;
        b->next = NULL;
        return b;
}

size_t ts_rpc_bufq_read(ts_rpc_bufq *q, uint8_t *dst, size_t length) {
        size_t n = 0;

        while (n < length && q->head) {
                ts_rpc_buf *b = q->head;
                size_t k = b->len - b->off;
                if (k > length - n)
                        k = length - n;
                memcpy(dst + n, b->data + b->off, k);
                b->off += k;
                n += k;
                q->bytes -= k;
                if (b->off == b->len)
                        free(ts_rpc_bufq_pop(q));
        }
        return n;
}

void ts_rpc_bufq_clear(ts_rpc_bufq *q) {
        for (ts_rpc_buf *b = q->head, *n; b; b = n) {
                n = b->next;
                free(b);
        }
        *q = (ts_rpc_bufq) { 0 };
}

/* ---- nghttp2 ---- */

int ts_rpc_nghttp2_errno(int rv) {
        switch (rv) {
        case NGHTTP2_ERR_NOMEM:
                return -ENOMEM;
        case NGHTTP2_ERR_INVALID_ARGUMENT:
                return -EINVAL;
        case NGHTTP2_ERR_EOF:
                return -ECONNRESET;
        case NGHTTP2_ERR_SESSION_CLOSING:
                return -ESHUTDOWN;
        case NGHTTP2_ERR_STREAM_CLOSED:
        case NGHTTP2_ERR_STREAM_CLOSING:
                return -EPIPE;
        case NGHTTP2_ERR_DEFERRED:
        case NGHTTP2_ERR_WOULDBLOCK:
        case NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE:
                return -EAGAIN;
        default:
                return rv >= 0 ? 0 : -EPROTO;
        }
}

int ts_rpc_nghttp2_error(ts_error **err, int rv, const char *fmt, ...) {
        char ctx[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(ctx, sizeof(ctx), fmt, ap);
        va_end(ap);
        int r = ts_rpc_nghttp2_errno(rv);
        return ts_error_setf_plain(err, r < 0 ? -r : EPROTO, "%s: %s", ctx, nghttp2_strerror(rv));
}

static void *mem_malloc(size_t size, void *ud) {
        return malloc(size);
}

static void mem_free(void *p, void *ud) {
        free(p);
}

static void *mem_calloc(size_t n, size_t size, void *ud) {
        return calloc(n, size);
}

static void *mem_realloc(void *p, size_t size, void *ud) {
        return realloc(p, size);
}

nghttp2_mem *ts_rpc_nghttp2_mem(void) {
        static nghttp2_mem mem = {
                .malloc = mem_malloc,
                .free = mem_free,
                .calloc = mem_calloc,
                .realloc = mem_realloc,
        };
        return &mem;
}

/* ---- connection ---- */

uint64_t ts_rpc_conn_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

int ts_rpc_conn_settings(ts_rpc_conn *c, const nghttp2_settings_entry *extra, size_t n_extra,
                         int32_t conn_window) {
        nghttp2_settings_entry iv[8];

        if (n_extra >= TS_ARRAY_SIZE(iv))
                return -EINVAL;
        memcpy(iv, extra, n_extra * sizeof(*iv));
        iv[n_extra] = (nghttp2_settings_entry) { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW };
        int r = nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, n_extra + 1);
        if (r == 0)
                r = nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                                          conn_window);
        return ts_rpc_nghttp2_errno(r);
}

int ts_rpc_conn_pipe_open(ts_rpc_conn *c, uv_loop_t *loop, int fd) {
        int r = uv_pipe_init(loop, &c->pipe, 0);
        if (r < 0)
                return r;
        c->pipe.data = c;
        c->has_pipe = true;
        return uv_pipe_open(&c->pipe, fd);
}

static void pipe_closed_cb(uv_handle_t *h) {
        ts_rpc_conn *c = h->data;
        if (c->closed)
                c->closed(c);
}

static void close_pipe(ts_rpc_conn *c) {
        if (c->has_pipe && !uv_is_closing((uv_handle_t *) &c->pipe))
                uv_close((uv_handle_t *) &c->pipe, pipe_closed_cb);
}

static bool pipe_gone(ts_rpc_conn *c) {
        return c->has_pipe && uv_is_closing((uv_handle_t *) &c->pipe);
}

void ts_rpc_conn_close(ts_rpc_conn *c, bool abort) {
        bool was = c->closing;
        c->closing = true;
        if (c->has_pipe && !was && !pipe_gone(c))
                uv_read_stop((uv_stream_t *) &c->pipe);
        if (abort)
                close_pipe(c);
        else
                ts_rpc_conn_flush(c);
}

void ts_rpc_conn_done(ts_rpc_conn *c) {
        if (c->session) {
                nghttp2_session_del(c->session);
                c->session = NULL;
        }
        free(c->wbuf);
        c->wbuf = NULL;
        free(c->cap);
        c->cap = NULL;
}

/* The connection cannot go on: once closing, its pipe just closes;
 * otherwise its owner hears why. */
static void stop(ts_rpc_conn *c, int err, const char *why) {
        if (c->closing)
                close_pipe(c);
        else
                c->lost(c, err, why);
}

static void write_cb(uv_write_t *req, int status) {
        ts_rpc_conn *c = req->data;

        c->writing = false;
        free(c->wbuf);
        c->wbuf = NULL;
        if (status < 0)
                return stop(c, status, "connection lost");
        ts_rpc_conn_flush(c);
}

/* Appends n bytes at p to the buffer *buf of *size bytes, *len used,
 * doubling it as needed. Returns 0 or -ENOMEM (the buffer unchanged). */
static int append(uint8_t **buf, size_t *size, size_t *len, const uint8_t *p, size_t n) {
        if (*len + n > *size) {
                size_t ns = *size ? *size * 2 : 16384;
                while (ns < *len + n)
                        ns *= 2;
                uint8_t *nb = realloc(*buf, ns);
                if (!nb)
                        return -ENOMEM;
                *buf = nb;
                *size = ns;
        }
        memcpy(*buf + *len, p, n);
        *len += n;
        return 0;
}

/* Takes what nghttp2 has to send, up to about WRITE_CHUNK, into *buf
 * (*len bytes); without a pipe, into the capture buffer (which stops
 * capturing when it cannot grow). Returns 0 or a failure for stop(). */
static int gather(ts_rpc_conn *c, uint8_t **buf, size_t *len, const char **why) {
        size_t size = 0;

        while (*len < WRITE_CHUNK) {
                const uint8_t *p;
                ssize_t n = nghttp2_session_mem_send(c->session, &p);
                if (n <= 0) {
                        *why = n < 0 ? nghttp2_strerror((int) n) : NULL;
                        return ts_rpc_nghttp2_errno((int) n);
                }
                if (!c->has_pipe) {
                        if (c->capture && append(&c->cap, &c->cap_size, &c->cap_len, p, (size_t) n) < 0)
                                c->capture = false;
                } else if (append(buf, &size, len, p, (size_t) n) < 0) {
                        *why = "out of memory";
                        return -ENOMEM;
                }
        }
        return 0;
}

void ts_rpc_conn_flush(ts_rpc_conn *c) {
        _cleanup_free_ uint8_t *buf = NULL;
        const char *why = NULL;
        size_t len = 0;

        if (c->writing || pipe_gone(c) || !c->session)
                return;
        int r = gather(c, &buf, &len, &why);
        if (r < 0)
                return stop(c, r, why);
        if (len == 0) {
                if (c->closing || (!nghttp2_session_want_read(c->session) &&
                                   !nghttp2_session_want_write(c->session)))
                        stop(c, 0, NULL);
                return;
        }
        uv_buf_t b = uv_buf_init((char *) buf, (unsigned) len);
        c->wreq.data = c;
        r = uv_write(&c->wreq, (uv_stream_t *) &c->pipe, &b, 1, write_cb);
        if (r < 0)
                return stop(c, r, "write failed");
        c->wbuf = TAKE_PTR(buf);
        c->writing = true;
        c->write_since = uv_now(c->pipe.loop);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        buf->base = malloc(READ_SIZE);
        buf->len = buf->base ? READ_SIZE : 0;
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
        ts_rpc_conn *c = stream->data;

        if (nread < 0) {
                free(buf->base);
                c->lost(c, (int) nread, NULL);
                return;
        }
        if (nread > 0 && !c->closing && c->session) {
                ssize_t r = nghttp2_session_mem_recv(c->session, (const uint8_t *) buf->base,
                                                     (size_t) nread);
                if (r < 0) {
                        free(buf->base);
                        /* Flushing what nghttp2 queued (a GOAWAY) is not
                         * worth the wait. */
                        c->lost(c, ts_rpc_nghttp2_errno((int) r), nghttp2_strerror((int) r));
                        return;
                }
        }
        free(buf->base);
        ts_rpc_conn_flush(c);
}

int ts_rpc_conn_read_start(ts_rpc_conn *c) {
        return uv_read_start((uv_stream_t *) &c->pipe, alloc_cb, read_cb);
}
