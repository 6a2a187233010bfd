#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "devmapper/poolstate.h"

int ts_cli_fail(const char *cmd, const ts_error *err, int r) {
        fprintf(stderr, "thinsnap %s: %s\n", cmd, ts_error_message(err, r));
        return TS_EXIT_FAILED;
}

int ts_cli_fail_json(const char *cmd, bool json, const ts_error *err, int r) {
        return ts_cli_fail_json_as(cmd, json, false, err, r);
}

int ts_cli_fail_json_as(const char *cmd, bool json, bool line, const ts_error *err, int r) {
        if (json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "error", json_object_new_string(ts_error_message(err, r)));
                int e = err ? err->errnum : (r < 0 ? -r : r);
                const char *name = strerrorname_np(e);
                json_object_object_add(o, "errno", json_object_new_string(name ? name : "EIO"));
                if (line)
                        ts_cli_print_json_line(o);
                else
                        ts_cli_print_json(o);
        }
        return ts_cli_fail(cmd, err, r);
}

int ts_cli_usage_error(const char *cmd, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "thinsnap %s: ", cmd);
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\nTry 'thinsnap %s --help'.\n", cmd);
        va_end(ap);
        return TS_EXIT_USAGE;
}

int ts_cli_size(const char *cmd, const char *opt, const char *value, uint64_t *ret) {
        int r = ts_units_parse_size(value, ret);
        if (r == -ERANGE)
                return ts_cli_usage_error(cmd, "%s '%s' is too large", opt, value);
        if (r < 0)
                return ts_cli_usage_error(cmd, "%s '%s' is not a size (examples: 512M, 10G, 65536)",
                                          opt, value);
        return 0;
}

int ts_cli_u64(const char *cmd, const char *opt, const char *value, uint64_t max, uint64_t *ret) {
        uint64_t v;
        int r = ts_units_parse_u64(value, &v);
        if (r < 0 || v > max)
                return ts_cli_usage_error(cmd, "%s '%s' is not a whole number from 0 to %llu", opt,
                                          value, (unsigned long long) max);
        *ret = v;
        return 0;
}

const char *ts_cli_state_dir(const char *opt) {
        if (opt)
                return opt;
        const char *env = getenv("THINSNAP_STATE_DIR");
        if (env && *env)
                return env;
        return TS_POOLSTATE_DEFAULT_DIR;
}

void ts_cli_print_json_line(json_object *o) {
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        fflush(stdout);
        json_object_put(o);
}

void ts_cli_print_json(json_object *o) {
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        fflush(stdout);
        json_object_put(o);
}

static void print_value(const char *key, json_object *v, int indent) {
        if (json_object_is_type(v, json_type_object)) {
                printf("%*s%s:\n", indent, "", key);
                json_object_object_foreach(v, k, sub) print_value(k, sub, indent + 2);
        } else if (json_object_is_type(v, json_type_string))
                printf("%*s%s: %s\n", indent, "", key, json_object_get_string(v));
        else
                printf("%*s%s: %s\n", indent, "", key,
                       json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE));
}

void ts_cli_print_fields(json_object *o) {
        json_object_object_foreach(o, k, v) print_value(k, v, 0);
}

static bool allowed_opt(const char *allowed, const char *name) {
        size_t n = strlen(name);
        for (const char *p = allowed; (p = strstr(p, name)); p += n)
                if ((p == allowed || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
                        return true;
        return false;
}

int ts_cli_getopt(const ts_cli_opts *o, int argc, char **argv,
                  int (*fn)(void *ud, int opt, const char *arg), void *ud, char ***ret_args,
                  int *ret_n) {
        optind = 1;
        opterr = 0;
        int c;
        while ((c = getopt_long(argc, argv, ":h", o->table, NULL)) != -1) {
                if (c == 'h') {
                        fputs(o->help, stdout);
                        return -1;
                }
                if (c == ':')
                        return ts_cli_usage_error(o->cmd, "%s needs a value", argv[optind - 1]);
                if (c < o->first)
                        return ts_cli_usage_error(o->cmd, "unknown option '%s'", argv[optind - 1]);
                const char *name = o->table[c - o->first].name;
                if (!allowed_opt(o->allowed, name))
                        return ts_cli_usage_error(o->cmd, "%s takes no --%s", o->cmd, name);
                int r = fn(ud, c, optarg);
                if (r)
                        return r;
        }
        *ret_args = argv + optind;
        *ret_n = argc - optind;
        return 0;
}

int ts_cli_need_args(const char *cmd, char *const *args, int n, int min, int max, const char *what) {
        if (n < min)
                return ts_cli_usage_error(cmd, "expected %s", what);
        if (max >= 0 && n > max)
                return ts_cli_usage_error(cmd, "unexpected argument '%s'", args[max]);
        return 0;
}
