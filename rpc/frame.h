/* The gRPC wire pieces that sit on top of HTTP/2, all pure functions:
 * the 5-byte length-prefixed message framing (flag byte, 4-byte big-endian
 * length), grpc-timeout values, grpc-status values and the percent-encoding
 * of grpc-message. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"

#define TS_RPC_FRAME_PREFIX 5
#define TS_RPC_DEFAULT_MAX_MESSAGE (16u * 1024 * 1024)

/* Writes the 5-byte prefix of a message of len bytes into out. */
void ts_rpc_frame_prefix(uint8_t out[TS_RPC_FRAME_PREFIX], bool compressed, uint32_t len);

/* Called once per complete message. msg is heap memory that the callback
 * owns from then on (free() it), len bytes plus one extra NUL byte. Return
 * 0 to continue or a negative errno to stop feeding (it is returned by
 * ts_rpc_deframer_feed). */
typedef int (*ts_rpc_deframer_cb)(void *userdata, bool compressed, uint8_t *msg, size_t len);

/* Splits a byte stream (the DATA frames of one HTTP/2 stream, cut anywhere)
 * back into messages. Embed it; init before use, done after. */
typedef struct ts_rpc_deframer {
        uint32_t max_message;
        uint8_t prefix[TS_RPC_FRAME_PREFIX];
        size_t prefix_have;
        bool in_message;
        uint8_t *msg; /* grows as the message's bytes arrive */
        size_t msg_size;
        uint32_t msg_len;
        uint32_t msg_have;
        bool compressed;
        bool failed;
        uint64_t n_messages;
} ts_rpc_deframer;

/* max_message 0 means TS_RPC_DEFAULT_MAX_MESSAGE. */
void ts_rpc_deframer_init(ts_rpc_deframer *d, uint32_t max_message);
void ts_rpc_deframer_done(ts_rpc_deframer *d);

/* Feeds len bytes; calls cb for each message completed by them. A
 * message's buffer grows with the bytes that arrived, never ahead to the
 * length its prefix declares. Returns 0, or:
 *  -EBADMSG   a flag byte other than 0 or 1;
 *  -EMSGSIZE  a declared length above max_message (nothing is allocated);
 *  -ENOMEM;
 *  a negative value returned by cb.
 * After a failure the deframer refuses further input with the same code
 * class (-EBADMSG). */
int ts_rpc_deframer_feed(ts_rpc_deframer *d, const uint8_t *data, size_t len,
                         ts_rpc_deframer_cb cb, void *userdata);

/* True when a message has been started but not completed (a stream that
 * ends now ends inside a message). */
bool ts_rpc_deframer_partial(const ts_rpc_deframer *d);

/* Parses a grpc-timeout value: 1 to 8 ASCII digits followed by one unit of
 * H, M, S, m, u, n. Writes nanoseconds (saturating at UINT64_MAX).
 * Returns 0 or -EINVAL. */
int ts_rpc_timeout_parse(const char *s, uint64_t *ret_ns);

/* Formats a timeout for grpc-timeout, rounding up to the smallest unit that
 * fits in 8 digits. buf needs at least 10 bytes. Returns buf. */
char *ts_rpc_timeout_format(uint64_t ns, char *buf, size_t len);

/* Parses a grpc-status value: decimal digits without leading zeros, at most
 * 3 digits. Returns 0 or -EINVAL. Codes above 16 are accepted (a client
 * reports them as is). */
int ts_rpc_status_parse(const char *s, size_t len, int *ret_code);

/* The longest status message the server keeps (bytes, before
 * percent-encoding); a longer one is cut. */
#define TS_RPC_MESSAGE_MAX 1024

/* The most bytes of a client's input (a method path, an encoding name) a
 * status message quotes. */
#define TS_RPC_QUOTE_MAX 256

/* Cuts the NUL-terminated msg in place to at most max bytes (max >= 4),
 * ending in "..." when cut, and never inside a UTF-8 sequence. Returns
 * msg. */
char *ts_rpc_message_cut(char *msg, size_t max);

/* A status message: fmt formatted with ap, cut to TS_RPC_MESSAGE_MAX.
 * Returns it malloc()ed, or NULL when out of memory. */
char *ts_rpc_message_vformat(const char *fmt, va_list ap) _printf_(1, 0);

/* Percent-encodes a grpc-message: bytes outside 0x20..0x7E and '%' become
 * "%XX". Returns 0 and a malloc()ed string, or -ENOMEM. */
int ts_rpc_percent_encode(const char *msg, char **ret);

/* Decodes a grpc-message of len bytes. Never fails on bad input: a '%' not
 * followed by two hex digits is kept as is. Returns 0 and a malloc()ed
 * NUL-terminated string, or -ENOMEM. */
int ts_rpc_percent_decode(const char *s, size_t len, char **ret);
