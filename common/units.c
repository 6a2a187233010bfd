#include "units.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"

/* Reads leading decimal digits of s into *ret; sets *end after them.
 * -EINVAL for NULL or no digit, -ERANGE past UINT64_MAX. */
static int parse_digits(const char *s, uint64_t *ret, const char **end) {
        uint64_t v = 0;
        const char *p = s;
        if (!p || !isdigit((unsigned char) *p))
                return -EINVAL;
        for (; isdigit((unsigned char) *p); p++) {
                unsigned d = (unsigned) (*p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        *end = p;
        return 0;
}

int ts_units_parse_u64(const char *s, uint64_t *ret) {
        uint64_t v;
        const char *end;
        int r = parse_digits(s, &v, &end);
        if (r < 0)
                return r;
        if (*end)
                return -EINVAL;
        *ret = v;
        return 0;
}

int ts_units_parse_u32(const char *s, uint32_t *ret) {
        uint64_t v;
        int r = ts_units_parse_u64(s, &v);
        if (r < 0)
                return r;
        if (v > UINT32_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

int ts_units_parse_mode(const char *s, uint32_t *ret) {
        uint32_t v = 0;
        if (!s || !*s)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '7')
                        return -EINVAL;
                v = v * 8 + (uint32_t) (*p - '0');
                if (v > 07777)
                        return -ERANGE;
        }
        *ret = v;
        return 0;
}

int ts_units_parse_size(const char *s, uint64_t *ret) {
        static const struct {
                const char *suffix;
                unsigned shift;
        } units[] = {
                { "", 0 },    { "B", 0 },    { "K", 10 },  { "KB", 10 }, { "KiB", 10 },
                { "M", 20 },  { "MB", 20 },  { "MiB", 20 }, { "G", 30 }, { "GB", 30 },
                { "GiB", 30 }, { "T", 40 }, { "TB", 40 },  { "TiB", 40 }, { "P", 50 },
                { "PB", 50 }, { "PiB", 50 },
        };
        uint64_t v;
        const char *end;
        int r = parse_digits(s, &v, &end);
        if (r < 0)
                return r;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
                if (strcasecmp(end, units[i].suffix) != 0)
                        continue;
                if (units[i].shift && v > (UINT64_MAX >> units[i].shift))
                        return -ERANGE;
                *ret = v << units[i].shift;
                return 0;
        }
        return -EINVAL;
}

char *ts_units_format_size(uint64_t bytes, char *buf, size_t len) {
        static const char *names[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        unsigned i = 0;
        uint64_t whole = bytes, rem = 0;
        while (whole >= 1024 && i + 1 < sizeof(names) / sizeof(names[0])) {
                rem = whole % 1024;
                whole /= 1024;
                i++;
        }
        if (i == 0 || rem == 0)
                snprintf(buf, len, "%llu %s", (unsigned long long) whole, names[i]);
        else
                snprintf(buf, len, "%.1f %s", (double) whole + (double) rem / 1024.0, names[i]);
        return buf;
}

int ts_units_parse_duration_ms(const char *s, uint32_t *ret) {
        static const struct {
                const char *unit;
                uint64_t ms;
        } units[] = { { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 } };
        size_t digits = strspn(s, "0123456789");
        char num[21];
        uint64_t v;

        if (digits == 0 || digits >= sizeof(num))
                return -EINVAL;
        memcpy(num, s, digits);
        num[digits] = 0;
        if (ts_units_parse_u64(num, &v) < 0)
                return -EINVAL;
        for (size_t i = 0; i < TS_ARRAY_SIZE(units); i++)
                if (strcmp(s + digits, units[i].unit) == 0) {
                        if (v == 0 || v > UINT32_MAX / units[i].ms)
                                return -EINVAL;
                        *ret = (uint32_t) (v * units[i].ms);
                        return 0;
                }
        return -EINVAL;
}
