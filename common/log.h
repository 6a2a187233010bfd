/* logfmt logging on stderr: time=... level=... msg="..." key=value ...
 *
 * Library modules log at debug level at most; the daemon and the CLI log
 * once, where they decide what to do. */
#pragma once

#include "macro.h"

enum ts_log_level {
        TS_LOG_ERROR = 0,
        TS_LOG_WARN,
        TS_LOG_INFO,
        TS_LOG_DEBUG,
        TS_LOG_TRACE,
};

void ts_log_set_level(enum ts_log_level level);
enum ts_log_level ts_log_get_level(void);

/* Parses "error", "warn"/"warning", "info", "debug", "trace".
 * Returns 0 and writes *ret, or -EINVAL. */
int ts_log_parse_level(const char *s, enum ts_log_level *ret);

/* Emits one logfmt line when level is enabled. fields is NULL or a string of
 * preformatted key=value pairs appended after msg. errnum (positive or
 * negative) adds error="<strerror>" when non-zero. Returns -abs(errnum), so
 * `return log_error_errno(r, ...)` works. */
int ts_log_emit(enum ts_log_level level, int errnum, const char *fields, const char *fmt, ...)
        _printf_(4, 5);

#define log_error(...) ((void) ts_log_emit(TS_LOG_ERROR, 0, NULL, __VA_ARGS__))
#define log_warn(...) ((void) ts_log_emit(TS_LOG_WARN, 0, NULL, __VA_ARGS__))
#define log_info(...) ((void) ts_log_emit(TS_LOG_INFO, 0, NULL, __VA_ARGS__))
#define log_debug(...) ((void) ts_log_emit(TS_LOG_DEBUG, 0, NULL, __VA_ARGS__))
#define log_error_errno(r, ...) ts_log_emit(TS_LOG_ERROR, (r), NULL, __VA_ARGS__)
#define log_warn_errno(r, ...) ts_log_emit(TS_LOG_WARN, (r), NULL, __VA_ARGS__)
#define log_debug_errno(r, ...) ts_log_emit(TS_LOG_DEBUG, (r), NULL, __VA_ARGS__)
