#include "wire.h"

#include <errno.h>

/* Reads a varint of at most 10 bytes at *p (before end). */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *ret) {
        uint64_t v = 0;
        for (unsigned shift = 0; shift < 70; shift += 7) {
                if (*p == end)
                        return -EBADMSG;
                uint8_t b = *(*p)++;
                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }
        return -EBADMSG;
}

static int count(const uint8_t *p, const uint8_t *end, const uint32_t *path, size_t depth, size_t *n) {
        while (p < end) {
                uint64_t tag, v;
                if (varint(&p, end, &tag) < 0)
                        return -EBADMSG;
                switch (tag & 7) {
                case 0:
                        if (varint(&p, end, &v) < 0)
                                return -EBADMSG;
                        break;
                case 1:
                case 5: {
                        size_t w = (tag & 7) == 1 ? 8 : 4;
                        if ((size_t) (end - p) < w)
                                return -EBADMSG;
                        p += w;
                        break;
                }
                case 2:
                        if (varint(&p, end, &v) < 0 || v > (uint64_t) (end - p))
                                return -EBADMSG;
                        if ((tag >> 3) == path[0]) {
                                if (depth == 1)
                                        (*n)++;
                                else if (count(p, p + v, path + 1, depth - 1, n) < 0)
                                        return -EBADMSG;
                        }
                        p += v;
                        break;
                default:
                        return -EBADMSG;
                }
        }
        return 0;
}

int ts_wire_count(const uint8_t *p, size_t len, const uint32_t *path, size_t depth, size_t *ret_count) {
        if (depth == 0 || depth > TS_WIRE_MAX_DEPTH)
                return -EINVAL;
        size_t n = 0;
        int r = len ? count(p, p + len, path, depth, &n) : 0;
        if (r < 0)
                return r;
        *ret_count = n;
        return 0;
}
