#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"
#include "rpc/frame.h"

void ts_rpc_frame_prefix(uint8_t out[TS_RPC_FRAME_PREFIX], bool compressed, uint32_t len) {
        out[0] = compressed ? 1 : 0;
        out[1] = (uint8_t) (len >> 24);
        out[2] = (uint8_t) (len >> 16);
        out[3] = (uint8_t) (len >> 8);
        out[4] = (uint8_t) len;
}

void ts_rpc_deframer_init(ts_rpc_deframer *d, uint32_t max_message) {
        *d = (ts_rpc_deframer) {
                .max_message = max_message ? max_message : TS_RPC_DEFAULT_MAX_MESSAGE,
        };
}

void ts_rpc_deframer_done(ts_rpc_deframer *d) {
        free(d->msg);
        d->msg = NULL;
}

bool ts_rpc_deframer_partial(const ts_rpc_deframer *d) {
        return d->prefix_have > 0 || d->in_message;
}

/* Makes room for n more bytes of the current message (and its NUL):
 * doubling, capped at what the message declared. */
static int grow(ts_rpc_deframer *d, size_t n) {
        size_t need = (size_t) d->msg_have + n + 1;
        if (need <= d->msg_size)
                return 0;
        size_t size = d->msg_size ? d->msg_size * 2 : 4096;
        if (size < need)
                size = need;
        if (size > (size_t) d->msg_len + 1)
                size = (size_t) d->msg_len + 1;
        uint8_t *m = realloc(d->msg, size);
        if (!m)
                return -ENOMEM;
        d->msg = m;
        d->msg_size = size;
        return 0;
}

/* Reads the prefix of the next message; returns 0 or a failure. */
static int begin_message(ts_rpc_deframer *d) {
        if (d->prefix[0] > 1) {
                d->failed = true;
                return -EBADMSG;
        }
        uint32_t l = (uint32_t) d->prefix[1] << 24 | (uint32_t) d->prefix[2] << 16 |
                     (uint32_t) d->prefix[3] << 8 | d->prefix[4];
        if (l > d->max_message) {
                d->failed = true;
                return -EMSGSIZE;
        }
        d->in_message = true;
        d->msg_len = l;
        d->msg_have = 0;
        d->compressed = d->prefix[0] == 1;
        return 0;
}

int ts_rpc_deframer_feed(ts_rpc_deframer *d, const uint8_t *data, size_t len,
                         ts_rpc_deframer_cb cb, void *userdata) {
        int r;

        if (d->failed)
                return -EBADMSG;

        while (len > 0 || (d->prefix_have == TS_RPC_FRAME_PREFIX && !d->in_message)) {
                if (d->prefix_have < TS_RPC_FRAME_PREFIX) {
                        size_t n = TS_RPC_FRAME_PREFIX - d->prefix_have;
                        if (n > len)
                                n = len;
                        memcpy(d->prefix + d->prefix_have, data, n);
                        d->prefix_have += n;
                        data += n;
                        len -= n;
                        if (d->prefix_have < TS_RPC_FRAME_PREFIX)
                                return 0;
                }
                if (!d->in_message && (r = begin_message(d)) < 0)
                        return r;
                if (len == 0 && d->msg_len > 0)
                        return 0;

                size_t n = d->msg_len - d->msg_have;
                if (n > len)
                        n = len;
                if ((r = grow(d, n)) < 0)
                        return r;
                memcpy(d->msg + d->msg_have, data, n);
                d->msg_have += (uint32_t) n;
                data += n;
                len -= n;
                if (d->msg_have < d->msg_len)
                        return 0;

                uint8_t *m = TAKE_PTR(d->msg);
                m[d->msg_len] = 0;
                d->msg_size = 0;
                d->in_message = false;
                d->prefix_have = 0;
                d->n_messages++;
                r = cb(userdata, d->compressed, m, d->msg_len);
                if (r < 0)
                        return r;
        }
        return 0;
}

int ts_rpc_timeout_parse(const char *s, uint64_t *ret_ns) {
        uint64_t v = 0;
        size_t n = 0;

        if (!s)
                return -EINVAL;
        while (s[n] >= '0' && s[n] <= '9') {
                if (n == 8)
                        return -EINVAL;
                v = v * 10 + (uint64_t) (s[n] - '0');
                n++;
        }
        if (n == 0 || s[n] == 0 || s[n + 1] != 0)
                return -EINVAL;

        uint64_t mul;
        switch (s[n]) {
        case 'H':
                mul = UINT64_C(3600000000000);
                break;
        case 'M':
                mul = UINT64_C(60000000000);
                break;
        case 'S':
                mul = UINT64_C(1000000000);
                break;
        case 'm':
                mul = UINT64_C(1000000);
                break;
        case 'u':
                mul = UINT64_C(1000);
                break;
        case 'n':
                mul = 1;
                break;
        default:
                return -EINVAL;
        }
        *ret_ns = v > UINT64_MAX / mul ? UINT64_MAX : v * mul;
        return 0;
}

char *ts_rpc_timeout_format(uint64_t ns, char *buf, size_t len) {
        static const struct {
                char unit;
                uint64_t ns;
        } units[] = {
                { 'n', 1 },
                { 'u', UINT64_C(1000) },
                { 'm', UINT64_C(1000000) },
                { 'S', UINT64_C(1000000000) },
                { 'M', UINT64_C(60000000000) },
                { 'H', UINT64_C(3600000000000) },
        };
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
                uint64_t v = ns / units[i].ns + (ns % units[i].ns ? 1 : 0);
                if (v <= 99999999 || i + 1 == sizeof(units) / sizeof(units[0])) {
                        if (v > 99999999)
                                v = 99999999;
                        snprintf(buf, len, "%" PRIu64 "%c", v, units[i].unit);
                        return buf;
                }
        }
        return buf;
}

int ts_rpc_status_parse(const char *s, size_t len, int *ret_code) {
        int v = 0;

        if (!s || len == 0 || len > 3 || (len > 1 && s[0] == '0'))
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (s[i] - '0');
        }
        *ret_code = v;
        return 0;
}

char *ts_rpc_message_cut(char *msg, size_t max) {
        size_t n = strlen(msg);
        if (n <= max)
                return msg;
        n = max - 3;
        /* Back off continuation bytes (10xxxxxx) to the start of a sequence. */
        while (n > 0 && ((unsigned char) msg[n] & 0xc0) == 0x80)
                n--;
        memcpy(msg + n, "...", 4);
        return msg;
}

char *ts_rpc_message_vformat(const char *fmt, va_list ap) {
        char *m = NULL;
        if (vasprintf(&m, fmt, ap) < 0)
                return NULL;
        return ts_rpc_message_cut(m, TS_RPC_MESSAGE_MAX);
}

int ts_rpc_percent_encode(const char *msg, char **ret) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(msg);
        char *out = malloc(n * 3 + 1), *p = out;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) msg[i];
                if (c < 0x20 || c > 0x7e || c == '%') {
                        *p++ = '%';
                        *p++ = hex[c >> 4];
                        *p++ = hex[c & 15];
                } else
                        *p++ = (char) c;
        }
        *p = 0;
        *ret = out;
        return 0;
}

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int ts_rpc_percent_decode(const char *s, size_t len, char **ret) {
        char *out = malloc(len + 1), *p = out;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                int hi, lo;
                if (s[i] == '%' && i + 2 < len &&
                    (hi = unhex(s[i + 1])) >= 0 && (lo = unhex(s[i + 2])) >= 0) {
                        *p++ = (char) (hi << 4 | lo);
                        i += 2;
                } else
                        *p++ = s[i];
        }
        *p = 0;
        *ret = out;
        return 0;
}
