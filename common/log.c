#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static enum ts_log_level current_level = TS_LOG_INFO;

void ts_log_set_level(enum ts_log_level level) {
        current_level = level;
}

enum ts_log_level ts_log_get_level(void) {
        return current_level;
}

int ts_log_parse_level(const char *s, enum ts_log_level *ret) {
        static const struct {
                const char *name;
                enum ts_log_level level;
        } names[] = {
                { "error", TS_LOG_ERROR }, { "warn", TS_LOG_WARN },   { "warning", TS_LOG_WARN },
                { "info", TS_LOG_INFO },   { "debug", TS_LOG_DEBUG }, { "trace", TS_LOG_TRACE },
        };
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < TS_ARRAY_SIZE(names); i++)
                if (strcasecmp(s, names[i].name) == 0) {
                        *ret = names[i].level;
                        return 0;
                }
        return -EINVAL;
}

static const char *level_name(enum ts_log_level l) {
        switch (l) {
        case TS_LOG_ERROR: return "error";
        case TS_LOG_WARN: return "warning";
        case TS_LOG_INFO: return "info";
        case TS_LOG_DEBUG: return "debug";
        default: return "trace";
        }
}

static bool plain_byte(unsigned char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               strchr("-._:/@+,%", c) != NULL;
}

/* Writes s into buf[0..len) as a value, quoted when quote or when it is not
 * a plain token; cut at a whole escape, the quote closed, when it does not
 * fit. Returns the length written (buf is NUL-terminated). */
static size_t format_value(const char *s, bool quote, char *buf, size_t len) {
        if (len < 3) {
                if (len)
                        buf[0] = 0;
                return 0;
        }
        s = s ? s : "";
        if (!quote) {
                quote = !*s;
                for (const char *p = s; *p && !quote; p++)
                        quote = !plain_byte((unsigned char) *p);
        }
        size_t n = 0, room = len - 1 - (quote ? 1 : 0); /* the NUL, the closing quote */
        if (quote)
                buf[n++] = '"';
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                char esc[5];
                size_t k;
                if (c == '"' || c == '\\')
                        k = (size_t) snprintf(esc, sizeof esc, "\\%c", c);
                else if (c == '\n')
                        k = (size_t) snprintf(esc, sizeof esc, "\\n");
                else if (c < 0x20 || c >= 0x7f)
                        k = (size_t) snprintf(esc, sizeof esc, "\\x%02x", c);
                else
                        esc[0] = (char) c, k = 1;
                if (n + k > room)
                        break;
                memcpy(buf + n, esc, k);
                n += k;
        }
        if (quote)
                buf[n++] = '"';
        buf[n] = 0;
        return n;
}

size_t ts_log_format_value(const char *s, char *buf, size_t len) {
        return format_value(s, false, buf, len);
}

#define LINE_MAX_BYTES 8192

/* A line under construction: one byte is always left for its newline. */
typedef struct line {
        char p[LINE_MAX_BYTES];
        size_t n;
} line;

static void put_raw(line *l, const char *s) {
        size_t room = sizeof l->p - 1 - l->n, k = strlen(s);
        if (k > room)
                k = room;
        memcpy(l->p + l->n, s, k);
        l->n += k;
}

static void put_value(line *l, const char *s, bool quote) {
        l->n += format_value(s, quote, l->p + l->n, sizeof l->p - 1 - l->n);
}

int ts_log_emit(enum ts_log_level level, int errnum, const ts_error *err, const ts_log_field *fields,
                const char *fmt, ...) {
        if (errnum > 0)
                errnum = -errnum;
        if (level > current_level)
                return errnum;

        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        struct timespec ts;
        struct tm tm;
        char when[64];
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(when + n, sizeof(when) - n, ".%06ldZ", ts.tv_nsec / 1000);

        line l;
        l.n = 0;
        put_raw(&l, "time=\"");
        put_raw(&l, when);
        put_raw(&l, "\" level=");
        put_raw(&l, level_name(level));
        put_raw(&l, " msg=");
        put_value(&l, msg, true);
        if (errnum != 0) {
                put_raw(&l, " error=");
                put_value(&l, err ? ts_error_message(err, errnum) : strerror(-errnum), true);
        }
        for (const ts_log_field *f = fields; f && f->key; f++) {
                put_raw(&l, " ");
                put_raw(&l, f->key);
                put_raw(&l, "=");
                put_value(&l, f->value, false);
        }
        l.p[l.n++] = '\n';
        fwrite(l.p, 1, l.n, stderr);
        return errnum;
}
