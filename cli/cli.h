/* Helpers shared by the `thinsnap` subcommands: exit codes, error lines,
 * option values, JSON output. */
#pragma once

#include <getopt.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/json.h"

enum {
        TS_EXIT_OK = 0,
        TS_EXIT_FAILED = 1, /* the operation failed */
        TS_EXIT_USAGE = 2,  /* the command line was wrong */
};

/* A subcommand's options: one getopt_long table shared by a family of
 * subcommands (values count up from `first` in table order, then "help"
 * as 'h'), the long names this one takes (space-separated), its help. */
typedef struct ts_cli_opts {
        const char *cmd; /* "image pull" */
        const struct option *table;
        int first;
        const char *allowed;
        const char *help;
} ts_cli_opts;

/* Runs getopt_long over argv; each option of o->allowed goes to fn(ud,
 * value, optarg), which returns 0 or an exit code; any other is a usage
 * error naming it. Returns 0 with the operands (*ret_args, *ret_n: the
 * rest of argv), -1 after printing the help on stdout, or an exit code. */
int ts_cli_getopt(const ts_cli_opts *o, int argc, char **argv,
                  int (*fn)(void *ud, int opt, const char *arg), void *ud, char ***ret_args,
                  int *ret_n);

/* The operand count: 0, or TS_EXIT_USAGE saying "expected <what>" or
 * naming the first one too many (max < 0: no limit). */
int ts_cli_need_args(const char *cmd, char *const *args, int n, int min, int max, const char *what);

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

/* Prints a JSON object on stdout on one line (JSON lines) and drops the
 * reference. */
void ts_cli_print_json_line(json_object *o);

/* Prints an object's fields as "key: value" lines for people (nested
 * objects indented below their key, arrays as JSON). */
void ts_cli_print_fields(json_object *o);

/* Prints {"error": message, "errno": name} on stdout for --json callers and
 * the usual line on stderr; returns TS_EXIT_FAILED. */
int ts_cli_fail_json(const char *cmd, bool json, const ts_error *err, int r);

/* The same; line: the JSON object on one line, for commands that print
 * JSON lines (a stream of statuses). */
int ts_cli_fail_json_as(const char *cmd, bool json, bool line, const ts_error *err, int r);
