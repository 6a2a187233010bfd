/* ts_filter: containerd's filter syntax (containerd 1.6 `filters` package), as
 * containerd sends it in a Snapshots List request.
 *
 *   selectors := selector ("," selector)*          all must match (AND)
 *   selector  := fieldpath [operator value]        no operator: the field is present
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z0-9_]+
 *   operator  := "==" | "!=" | "~="
 *   value     := quoted | run of graphic runes other than "," and space
 *   quoted    := "..." (field or value); /.../ or |...| too for a "~=" value.
 *                Escapes: \a \b \f \n \r \t \v \\ \<the quote>, \ooo (octal, <= 255),
 *                \xhh (a byte), \uhhhh, \Uhhhhhhhh (a rune, UTF-8 encoded).
 *
 * A List request carries several filter strings: the snapshot matches when any of
 * them matches (OR); an empty string, or no string at all, matches everything.
 * Spaces are skipped before a token; a space after a field or value that is not
 * followed by an operator or separator is an error, as in containerd.
 *
 * Matching, as containerd: "==" needs the field present and equal; "!=" compares
 * the value, an absent field reading as "" (so an absent field is != anything but
 * ""); "~=" searches (unanchored) the value, or "" when absent.
 *
 * Regular expressions: Go's regexp syntax and semantics (RE2), through libre2
 * (plugin/regexp.h): unanchored search, linear in the label's length whatever the
 * pattern. What Go's regexp rejects (back-references, lookarounds, possessive
 * quantifiers, \C, repeat counts above 1000...) parses fine and matches nothing,
 * as in containerd (which logs and returns false). tests/unit/test-filter.c holds
 * over a hundred and fifty regexp/subject pairs with the answers of Go 1.19's
 * regexp package; the parser itself is compared with containerd's Go filters
 * package on every seed of the filter fuzz target (same errors, same matches).
 *
 * Unicode: a bare value ends at the first rune that is not a letter, digit,
 * number, graphic or punctuation rune in Go's sense (libre2's Unicode tables),
 * or at a space or ",".
 *
 * Quirks kept from containerd: \U escapes of eight hex digits from 8 up wrap
 * negative in Go's int32 and append one byte (the low byte) instead of failing;
 * an invalid UTF-8 byte and a literal U+FFFD are both "rune error". Parse-error
 * messages echo the input; one with a NUL byte (ts_filter_parse_len) is cut at the
 * NUL, where containerd prints the byte.
 *
 * Parse errors are -EINVAL with containerd's message, for example
 *   filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated
 * where ">|x|<" marks the byte at which parsing failed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "common/macro.h"

typedef struct ts_filter ts_filter;

/* What one request may ask for (containerd has no such bounds; its own requests
 * stay far below): past one, parsing fails with -E2BIG (INVALID_ARGUMENT) and a
 * message naming the limit. So does a "~=" regexp that compiles to more than
 * 1 MiB (TS_REGEXP_MAX_MEM: "\pL{100}" does), so a request's regexps hold at
 * most 64 MiB. */
#define TS_FILTER_MAX_LEN 4096      /* bytes in one filter string */
#define TS_FILTER_MAX_SELECTORS 64  /* selectors in all the strings of one request */
#define TS_FILTER_MAX_STRINGS 64    /* filter strings in one request */

/* The adaptor: looks up fieldpath (n >= 1 components, e.g. {"labels", "a.b"}) on
 * the object userdata. Returns true with the value (ret_len bytes, need not be
 * NUL-terminated) when present, false when absent. */
typedef bool (*ts_filter_field_fn)(const char *const *fieldpath, size_t n, void *userdata,
                                   const char **ret_value, size_t *ret_len);

/* Parses one filter string (NUL-terminated). "" gives a filter that matches
 * everything. Returns 0, -EINVAL (syntax; err says where and why), -E2BIG (over
 * a limit above; err names it), -ENOMEM. */
int ts_filter_parse(const char *s, ts_filter **ret, ts_error **err);

/* As ts_filter_parse for len bytes that may hold a NUL (which is an error:
 * "unexpected null", as containerd). */
int ts_filter_parse_len(const char *s, size_t len, ts_filter **ret, ts_error **err);

/* Parses n filter strings into one filter that matches when any of them does
 * (n == 0 matches everything). Returns 0, -EINVAL (err names the string's error),
 * -E2BIG (over a limit above; err names it), -ENOMEM. */
int ts_filter_parse_all(const char *const *ss, size_t n, ts_filter **ret, ts_error **err);

/* True when the object that fn describes matches f. */
bool ts_filter_match(const ts_filter *f, ts_filter_field_fn fn, void *userdata);

/* Frees f; accepts NULL; returns NULL. */
ts_filter *ts_filter_free(ts_filter *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_filter *, ts_filter_free);
#define _cleanup_filter_ _cleanup_(ts_filter_freep)
