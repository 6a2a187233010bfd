/* The HTTP/2 connection layer rpc/server.c and rpc/client.c share: an
 * nghttp2 session over a libuv pipe (on the loop thread only), its write
 * path, and the queues of message buffers the two sides hand between the
 * loop and their callers' threads. A connection without a pipe keeps what
 * nghttp2 sends in memory (the server's socket-less fuzz entry point). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "common/error.h"

/* One buffer of a queue: len bytes of data[], off of them consumed. */
typedef struct ts_rpc_buf {
        struct ts_rpc_buf *next;
        size_t len, off;
        uint8_t data[];
} ts_rpc_buf;

/* A FIFO of buffers; bytes counts what is not consumed yet. Not locked:
 * the owner guards it. Zero-initialised means empty. */
typedef struct ts_rpc_bufq {
        ts_rpc_buf *head, *tail;
        size_t bytes;
} ts_rpc_bufq;

/* Allocates a buffer holding one gRPC message frame: the 5-byte prefix
 * (uncompressed, length len) and a copy of the len bytes at data (data may
 * be NULL when len is 0). The caller checked len against its limit (at most
 * UINT32_MAX). Returns 0 or -ENOMEM. */
int ts_rpc_buf_frame_bytes(const void *data, size_t len, ts_rpc_buf **ret);

/* The same with msg packed into the frame; len is its packed size, which
 * the caller computed and checked. Returns 0 or -ENOMEM. */
int ts_rpc_buf_frame_message(const ProtobufCMessage *msg, size_t len, ts_rpc_buf **ret);

/* Appends b (taking it) to q. */
void ts_rpc_bufq_push(ts_rpc_bufq *q, ts_rpc_buf *b);

/* Takes the first buffer off q; NULL when q is empty. */
ts_rpc_buf *ts_rpc_bufq_pop(ts_rpc_bufq *q);

/* Copies up to length bytes from the front of q into dst, freeing the
 * buffers it used up. Returns how many bytes it copied. */
size_t ts_rpc_bufq_read(ts_rpc_bufq *q, uint8_t *dst, size_t length);

/* Frees every buffer of q and leaves it empty. */
void ts_rpc_bufq_clear(ts_rpc_bufq *q);

/* CLOCK_MONOTONIC in nanoseconds: the clock of both sides' deadlines. */
uint64_t ts_rpc_conn_now_ns(void);

/* nghttp2's negative error codes as a -errno: NOMEM -ENOMEM,
 * INVALID_ARGUMENT -EINVAL, EOF -ECONNRESET, SESSION_CLOSING -ESHUTDOWN,
 * STREAM_CLOSED/STREAM_CLOSING -EPIPE, DEFERRED/WOULDBLOCK/
 * STREAM_ID_NOT_AVAILABLE -EAGAIN, any other (protocol, flow control,
 * flooding, a callback's failure) -EPROTO. rv >= 0 gives 0. */
int ts_rpc_nghttp2_errno(int rv);

/* Sets *err from an nghttp2 failure: the formatted context, then
 * nghttp2_strerror(rv). Returns ts_rpc_nghttp2_errno(rv). */
int ts_rpc_nghttp2_error(ts_error **err, int rv, const char *fmt, ...) _printf_(3, 4);

/* The allocator sessions are made with: the C library's, called from our
 * code so the unit tests' allocation-failure injection reaches nghttp2's
 * allocations too. */
nghttp2_mem *ts_rpc_nghttp2_mem(void);

typedef struct ts_rpc_conn ts_rpc_conn;

struct ts_rpc_conn {
        nghttp2_session *session; /* the owner creates and may drop it */
        uv_pipe_t pipe;
        bool has_pipe;
        bool writing, closing;
        uv_write_t wreq;
        uint8_t *wbuf;
        uint64_t write_since; /* uv_now() when the write in flight began */
        /* Without a pipe: what nghttp2 sent, when capture is set (cleared
         * when the buffer cannot grow). */
        bool capture;
        uint8_t *cap;
        size_t cap_len, cap_size;

        void *userdata;
        /* The connection cannot go on: the peer closed it (why NULL; err is
         * 0 or libuv's read error) or a step failed (why says which, err is
         * its -errno). Called on the loop; the owner closes or drops it. */
        void (*lost)(ts_rpc_conn *c, int err, const char *why);
        /* libuv let go of the pipe after ts_rpc_conn_close(); may be NULL. */
        void (*closed)(ts_rpc_conn *c);
};

/* Sends our SETTINGS on c->session: the n_extra entries of extra (each
 * side's own settings) and a 1 MiB stream window, and sets the connection
 * window to conn_window. Returns 0 or -ENOMEM. */
int ts_rpc_conn_settings(ts_rpc_conn *c, const nghttp2_settings_entry *extra, size_t n_extra,
                         int32_t conn_window);

/* Initialises c->pipe on loop (c->pipe.data = c) and opens it on fd (a
 * connected socket). On success the pipe owns fd; on failure the caller
 * still does, and the pipe, when initialised, is to be closed with
 * ts_rpc_conn_close(). Returns 0 or libuv's -errno. */
int ts_rpc_conn_pipe_open(ts_rpc_conn *c, uv_loop_t *loop, int fd);

/* Starts reading the pipe: what arrives goes to nghttp2, then the
 * connection is flushed. Returns 0 or libuv's -errno. */
int ts_rpc_conn_read_start(ts_rpc_conn *c);

/* Writes what nghttp2 has to send (up to 256 KiB a write, one write at a
 * time); without a pipe, captures it. Calls c->lost when that fails, or
 * when the session neither wants to read nor write any more; once closing,
 * closes the pipe instead when that happens or nothing is left to write.
 * Does nothing while a write is in flight, or without a session. */
void ts_rpc_conn_flush(ts_rpc_conn *c);

/* Stops using the connection: stops reading, writes what nghttp2 still has
 * to send (a GOAWAY), then closes the pipe; with abort, closes it at once
 * (cancelling a write in flight). c->closed runs once libuv let go of the
 * pipe. Idempotent. */
void ts_rpc_conn_close(ts_rpc_conn *c, bool abort);

/* Frees what the connection holds (session, write and capture buffers);
 * the pipe must be closed or never opened. */
void ts_rpc_conn_done(ts_rpc_conn *c);
