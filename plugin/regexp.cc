#include "regexp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <new>
#include <re2/re2.h>

struct ts_regexp {
        RE2 re;
        ts_regexp(const re2::StringPiece &p, const RE2::Options &o) : re(p, o) {}
};

/* Bounds what one compiled expression may hold: a program that needs more fails
 * to compile ("pattern too large"); a search whose DFA cache fills up goes on in
 * RE2's NFA, still linear. */
static const int64_t REGEXP_MAX_MEM = TS_REGEXP_MAX_MEM;

static char *dup_why(const char *s) {
        return strdup(s);
}

/* libre2 accepts \C (one byte, even inside a rune); Go rejects it. \Q...\E quotes
 * its contents, so a \C there is a literal. */
static bool has_any_byte_escape(const char *p, size_t len) {
        for (size_t i = 0; i + 1 < len; i++) {
                if (p[i] != '\\')
                        continue;
                if (p[i + 1] == 'C')
                        return true;
                if (p[i + 1] == 'Q') {
                        const char *end = static_cast<const char *>(memmem(p + i + 2, len - i - 2, "\\E", 2));
                        if (!end)
                                return false;
                        i = static_cast<size_t>(end - p);
                }
                i++;
        }
        return false;
}

static RE2::Options go_options() {
        RE2::Options o;
        o.set_log_errors(false);
        o.set_max_mem(REGEXP_MAX_MEM);
        return o;
}

int ts_regexp_compile(const char *pattern, size_t len, ts_regexp **ret, char **ret_why) {
        try {
                if (has_any_byte_escape(pattern, len)) {
                        if (ret_why)
                                *ret_why = dup_why("invalid escape sequence: `\\C`");
                        return -EINVAL;
                }
                ts_regexp *re = new ts_regexp(re2::StringPiece(pattern, len), go_options());
                if (!re->re.ok()) {
                        int r = re->re.error_code() == RE2::ErrorPatternTooLarge ? -E2BIG : -EINVAL;
                        if (ret_why)
                                *ret_why = dup_why(re->re.error().c_str());
                        delete re;
                        return r;
                }
                *ret = re;
                return 0;
        } catch (const std::bad_alloc &) {
                return -ENOMEM;
        }
}

bool ts_regexp_search(const ts_regexp *re, const char *text, size_t len) {
        try {
                return RE2::PartialMatch(re2::StringPiece(text, len), re->re);
        } catch (const std::bad_alloc &) {
                return false;
        }
}

ts_regexp *ts_regexp_free(ts_regexp *re) {
        delete re;
        return nullptr;
}

bool ts_regexp_is_graphic(const char *rune, size_t len) {
        try {
                /* compiled once, on first use (thread-safe), kept for the process */
                static const RE2 *graphic = new RE2("[\\pL\\pM\\pN\\pP\\pS]", go_options());
                return RE2::FullMatch(re2::StringPiece(rune, len), *graphic);
        } catch (const std::bad_alloc &) {
                return false;
        }
}
