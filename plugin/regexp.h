/* ts_regexp: Go's regular expressions (RE2 syntax) on Debian's libre2, the C++
 * library Go's regexp package was ported from. Matching runs in time linear in
 * the subject (no backtracking), so no pattern can make a long label expensive.
 *
 * Differences from Go's regexp that matter here are closed in regexp.cc: \C (any
 * byte) is rejected, as Go rejects it. Left: Unicode classes (\pL, (?i) folding)
 * follow libre2's Unicode version rather than the Go release's, and an invalid
 * UTF-8 byte in a subject is matched by nothing (Go reads it as U+FFFD; the
 * labels containerd sends are valid UTF-8). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ts_regexp ts_regexp;

#define TS_REGEXP_MAX_MEM (1 << 20)

/* Compiles the len bytes at pattern (they may hold NULs) with Go's syntax and
 * flags (Perl classes, \b, no implicit multi-line, "." not matching "\n").
 * The compiled form holds at most TS_REGEXP_MAX_MEM (program and search cache).
 * Returns 0; -EINVAL when Go would reject the pattern; -E2BIG when its program
 * needs more than that (\pL{100}); -ENOMEM. On -EINVAL and -E2BIG, *ret_why (when
 * ret_why is not NULL) is a malloc'ed reason, or NULL when out of memory for it. */
int ts_regexp_compile(const char *pattern, size_t len, ts_regexp **ret, char **ret_why);

/* True when re matches somewhere in the len bytes at text (unanchored search,
 * Go's MatchString). Always answers: time and memory are bounded by the sizes
 * of re and text. */
bool ts_regexp_search(const ts_regexp *re, const char *text, size_t len);

/* Frees re; accepts NULL; returns NULL. */
ts_regexp *ts_regexp_free(ts_regexp *re);

/* True when the len bytes at rune are one UTF-8 encoded letter, mark, number,
 * punctuation or symbol (Unicode categories L, M, N, P, S): Go's
 * unicode.IsGraphic less the space separators. */
bool ts_regexp_is_graphic(const char *rune, size_t len);

#ifdef __cplusplus
}
#endif
