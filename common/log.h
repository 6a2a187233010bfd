/* logfmt logging on stderr: time=... level=... msg="..." key=value ...
 *
 * Every value is escaped here, whatever it holds: a client's key or
 * namespace with a quote, a space or a newline cannot forge a field or a
 * line. Library modules log at debug level at most; the daemon and the CLI
 * log once, where they decide what to do. */
#pragma once

#include "error.h"
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

/* One key=value field of a line. key is a name of the code's ([a-z_]);
 * value is anything (NULL: empty). */
typedef struct ts_log_field {
        const char *key;
        const char *value;
} ts_log_field;

/* A field list for ts_log_emit: TS_LOG_FIELDS({ "op", op }, { "key", key }). */
#define TS_LOG_FIELDS(...) ((const ts_log_field[]) { __VA_ARGS__, { NULL, NULL } })

/* Emits one logfmt line when level is enabled: time, level, msg (fmt), then
 * error="<why>" when errnum is non-zero (positive or negative), then fields
 * (NULL, or an array ended by a NULL key). why is err's message when err is
 * given (it carries its own strerror already), else strerror(errnum). A
 * value is written bare when it is a plain token and quoted otherwise, with
 * '"', '\' and every control or non-ASCII byte escaped. Returns
 * -abs(errnum), so `return log_error_errno(r, ...)` works. */
int ts_log_emit(enum ts_log_level level, int errnum, const ts_error *err, const ts_log_field *fields,
                const char *fmt, ...) _printf_(5, 6);

/* Writes s as a logfmt value into buf (len bytes, NUL-terminated, cut at a
 * whole escape when it does not fit): bare or quoted as ts_log_emit does.
 * Returns the length written. */
size_t ts_log_format_value(const char *s, char *buf, size_t len);

#define log_error(...) ((void) ts_log_emit(TS_LOG_ERROR, 0, NULL, NULL, __VA_ARGS__))
#define log_warn(...) ((void) ts_log_emit(TS_LOG_WARN, 0, NULL, NULL, __VA_ARGS__))
#define log_info(...) ((void) ts_log_emit(TS_LOG_INFO, 0, NULL, NULL, __VA_ARGS__))
#define log_debug(...) ((void) ts_log_emit(TS_LOG_DEBUG, 0, NULL, NULL, __VA_ARGS__))
#define log_error_errno(r, ...) ts_log_emit(TS_LOG_ERROR, (r), NULL, NULL, __VA_ARGS__)
#define log_warn_errno(r, ...) ts_log_emit(TS_LOG_WARN, (r), NULL, NULL, __VA_ARGS__)
#define log_debug_errno(r, ...) ts_log_emit(TS_LOG_DEBUG, (r), NULL, NULL, __VA_ARGS__)
/* With a ts_error: its message is the line's error= field (said once). */
#define log_error_err(r, e, ...) ts_log_emit(TS_LOG_ERROR, (r), (e), NULL, __VA_ARGS__)
