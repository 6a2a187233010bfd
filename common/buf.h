/* A byte buffer that grows as data is appended, up to a bound: for bodies
 * and blobs collected in memory (a manifest, a token answer, a config). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct ts_buf {
        uint8_t *p;  /* NUL-terminated after len bytes (when not NULL) */
        size_t len, cap;
        size_t max;  /* at most this many bytes */
} ts_buf;

/* Appends n bytes. Returns 0, -EMSGSIZE (past max; nothing appended) or
 * -ENOMEM. */
int ts_buf_append(ts_buf *b, const void *p, size_t n);

/* ts_buf_append for a sink callback: userdata is the ts_buf. */
int ts_buf_sink(void *userdata, const void *p, size_t n);

/* Hands the bytes out (the caller frees them) and empties the buffer. */
uint8_t *ts_buf_steal(ts_buf *b, size_t *ret_len);

void ts_buf_done(ts_buf *b);

#define _cleanup_buf_ _cleanup_(ts_buf_done)
