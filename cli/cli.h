/* Helpers shared by the `thinsnap` subcommands: exit codes, error lines,
 * option values, JSON output. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

enum {
        TS_EXIT_OK = 0,
        TS_EXIT_FAILED = 1, /* the operation failed */
        TS_EXIT_USAGE = 2,  /* the command line was wrong */
};

/* Prints "thinsnap <cmd>: <message>" on stderr; returns TS_EXIT_FAILED. */
int ts_cli_fail(const char *cmd, const ts_error *err, int r);

/* Prints "thinsnap <cmd>: <formatted>" and a hint to use --help on
 * stderr; returns TS_EXIT_USAGE. */
int ts_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses a size option value; on error prints which option was wrong.
 * Returns 0 or TS_EXIT_USAGE. */
int ts_cli_size(const char *cmd, const char *opt, const char *value, uint64_t *ret);

/* Parses an unsigned option value (fits in max). Returns 0 or TS_EXIT_USAGE. */
int ts_cli_u64(const char *cmd, const char *opt, const char *value, uint64_t max, uint64_t *ret);

/* The state directory: --state-dir, else $THINSNAP_STATE_DIR, else the
 * default. */
const char *ts_cli_state_dir(const char *opt);

/* Prints a JSON object on stdout (pretty, one trailing newline) and drops
 * the reference. */
void ts_cli_print_json(json_object *o);

/* Prints an object's fields as "key: value" lines for people (nested
 * objects indented below their key, arrays as JSON). */
void ts_cli_print_fields(json_object *o);

/* Prints {"error": message, "errno": name} on stdout for --json callers and
 * the usual line on stderr; returns TS_EXIT_FAILED. */
int ts_cli_fail_json(const char *cmd, bool json, const ts_error *err, int r);

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put)
#define _cleanup_json_ _cleanup_(json_object_putp)
