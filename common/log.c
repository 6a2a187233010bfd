#include "log.h"

#include <stdarg.h>
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

/* Writes s as a logfmt quoted value. */
static void put_quoted(FILE *f, const char *s) {
        fputc('"', f);
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (c == '"' || c == '\\') {
                        fputc('\\', f);
                        fputc(c, f);
                } else if (c == '\n')
                        fputs("\\n", f);
                else if (c < 0x20)
                        fprintf(f, "\\x%02x", c);
                else
                        fputc(c, f);
        }
        fputc('"', f);
}

int ts_log_emit(enum ts_log_level level, int errnum, const char *fields, const char *fmt, ...) {
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

        flockfile(stderr);
        fprintf(stderr, "time=\"%s\" level=%s msg=", when, level_name(level));
        put_quoted(stderr, msg);
        if (errnum != 0) {
                fputs(" error=", stderr);
                put_quoted(stderr, strerror(-errnum));
        }
        if (fields && *fields) {
                fputc(' ', stderr);
                fputs(fields, stderr);
        }
        fputc('\n', stderr);
        funlockfile(stderr);
        return errnum;
}
