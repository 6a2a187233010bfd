#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int ts_buf_append(ts_buf *b, const void *p, size_t n) {
        if (n > b->max - b->len)
                return -EMSGSIZE;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 4096;
                while (cap < b->len + n + 1)
                        cap *= 2;
                uint8_t *q = realloc(b->p, cap);
                if (!q)
                        return -ENOMEM;
                b->p = q;
                b->cap = cap;
        }
        memcpy(b->p + b->len, p, n);
        b->len += n;
        b->p[b->len] = '\0';
        return 0;
}

int ts_buf_sink(void *userdata, const void *p, size_t n) {
        return ts_buf_append(userdata, p, n);
}

uint8_t *ts_buf_steal(ts_buf *b, size_t *ret_len) {
        uint8_t *p = b->p ? b->p : calloc(1, 1);
        if (ret_len)
                *ret_len = b->len;
        b->p = NULL;
        b->len = b->cap = 0;
        return p;
}

void ts_buf_done(ts_buf *b) {
        free(b->p);
        b->p = NULL;
        b->len = b->cap = 0;
}
