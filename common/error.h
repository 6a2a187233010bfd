/* ts_error: an errno plus a message that gains context as it rises.
 *
 * Operations that cross into the kernel or a library take a trailing
 * `ts_error **err` (NULL allowed). The lowest layer sets it; each caller
 * that adds meaning prefixes it ("pool tp: create_snap 12 from 7: ...").
 * Only the top (a gRPC handler, the CLI) prints it or turns it into a status. */
#pragma once

#include <stdarg.h>

#include "macro.h"

typedef struct ts_error {
        int errnum;   /* positive errno */
        char *msg;    /* full message, context first */
} ts_error;

/* Sets *err (when err is not NULL and *err is NULL) to errnum and the
 * formatted message followed by ": <strerror(errnum)>". Returns -errnum,
 * so callers can `return ts_error_set(err, ENOENT, "...")`. errnum may be
 * given negative; it is normalised. A 0 errnum is treated as EIO. */
int ts_error_set(ts_error **err, int errnum, const char *fmt, ...) _printf_(3, 4);

/* Same as ts_error_set but the message is used as is, without strerror. */
int ts_error_setf_plain(ts_error **err, int errnum, const char *fmt, ...) _printf_(3, 4);

/* For a library's error adapter (one per library: LMDB in store.c,
 * libext2fs in inject.c, libdevmapper in dm.c): as ts_error_set, with the
 * library's own text for the failure (mdb_strerror, error_message) in place
 * of strerror. errnum is the adapter's translation of the library's code,
 * -errno like every return value. Returns -errnum. */
int ts_error_setv_cause(ts_error **err, int errnum, const char *cause, const char *fmt, va_list ap)
        _printf_(4, 0);

/* Prefixes the error in *err (if the caller asked for one and it is set)
 * with "<context>: ". Returns r, the failing call's -errno, unchanged, so
 * `return ts_error_prefix(err, r, "pool %s", name);` keeps the real code
 * whether or not an error object was asked for. */
int ts_error_prefix(ts_error **err, int r, const char *fmt, ...) _printf_(3, 4);

/* Frees an error; accepts NULL; returns NULL. */
ts_error *ts_error_free(ts_error *err);

static inline void ts_error_freep(ts_error **e) {
        ts_error_free(*e);
}
#define _cleanup_error_ _cleanup_(ts_error_freep)

/* The message of err, or strerror(-r) when err is NULL. Never NULL. */
const char *ts_error_message(const ts_error *err, int r);

/* Hands *src over to *dst when dst is not NULL and holds no error yet;
 * otherwise frees it. *src is NULL afterwards. Returns -errnum of the
 * moved error (or -EIO when *src was NULL). */
int ts_error_move(ts_error **dst, ts_error **src);
