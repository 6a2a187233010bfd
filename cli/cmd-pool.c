#include "cmd-pool.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "common/units.h"
#include "common/strv.h"
#include "devmapper/dm.h"
#include "devmapper/pool.h"
#include "devmapper/poolprov.h"
#include "devmapper/poolstate.h"

static const char pool_help[] =
        "Usage: thinsnap pool COMMAND NAME [OPTIONS]\n"
        "\n"
        "Create, re-attach, extend, inspect and destroy device-mapper thin pools.\n"
        "\n"
        "Commands:\n"
        "  create NAME --data FILE|DEV [--data-size SIZE] --meta FILE|DEV [--meta-size SIZE]\n"
        "              [--block-size SIZE] [--low-water BLOCKS] [--skip-block-zeroing]\n"
        "              [--ignore-discard] [--no-discard-passdown] [--error-if-no-space]\n"
        "      Create a pool. Missing files are created sparse (their directory must\n"
        "      exist) and attached to loop devices. The metadata size defaults to 48 bytes\n"
        "      per data block plus room for 1024 thin devices, at least 2 MiB. The block\n"
        "      size defaults to 64 KiB. Running it again on the same pool changes nothing.\n"
        "  attach NAME\n"
        "      Set a pool up again after a reboot, from its state file. The devices must\n"
        "      be the ones create recorded (size, identity, the pool's metadata).\n"
        "  extend NAME [--data-size SIZE] [--meta-size SIZE]\n"
        "      Grow an active pool online: files are grown and their loop devices\n"
        "      refreshed; a block device must have been grown first (lvextend...).\n"
        "      Without a size, a device is taken at its size now. A pool out of data or\n"
        "      metadata space works again at once, thinsnapd need not stop.\n"
        "  status NAME [--json]\n"
        "      Show the pool's usage, flags and active devices.\n"
        "  destroy NAME [--force] [--delete-files]\n"
        "      Take the pool down: its active thin devices (only with --force), the pool,\n"
        "      its loop devices. Files are kept unless --delete-files is given.\n"
        "\n"
        "Options for every command:\n"
        "  --state-dir DIR   where pool state files live (default $THINSNAP_STATE_DIR or\n"
        "                    " TS_POOLSTATE_DEFAULT_DIR ")\n"
        "  --json            machine-readable output on stdout\n"
        "  -h, --help        this text\n"
        "\n"
        "SIZE takes a binary suffix: K, M, G, T (64M, 10G). Exit status: 0 done,\n"
        "1 the operation failed, 2 the command line was wrong.\n";

enum {
        OPT_DATA = 256,
        OPT_DATA_SIZE,
        OPT_META,
        OPT_META_SIZE,
        OPT_BLOCK_SIZE,
        OPT_LOW_WATER,
        OPT_SKIP_ZERO,
        OPT_IGNORE_DISCARD,
        OPT_NO_PASSDOWN,
        OPT_ERROR_NO_SPACE,
        OPT_STATE_DIR,
        OPT_JSON,
        OPT_FORCE,
        OPT_DELETE_FILES,
        OPT_SIZE,
        OPT_RO,
        OPT_DEFERRED,
        OPT_ORIGIN_NAME,
};

typedef struct pool_args {
        const char *name;
        const char *state_dir;
        bool json, force, delete_files;
        ts_poolprov_request req;
} pool_args;

enum { ARGS_OTHER, ARGS_CREATE, ARGS_EXTEND };

/* One option of `pool create|extend|...`: 0, or the exit code of a usage error. */
static int pool_opt(const char *cmd, int c, const char *arg, pool_args *a) {
        int r;
        switch (c) {
        case OPT_DATA: a->req.data_path = arg; return 0;
        case OPT_META: a->req.meta_path = arg; return 0;
        case OPT_DATA_SIZE:
                if ((r = ts_cli_size(cmd, "--data-size", arg, &a->req.data_size)))
                        return r;
                return a->req.data_size ? 0 : ts_cli_usage_error(cmd, "--data-size must not be 0");
        case OPT_META_SIZE:
                if ((r = ts_cli_size(cmd, "--meta-size", arg, &a->req.meta_size)))
                        return r;
                return a->req.meta_size ? 0 : ts_cli_usage_error(cmd, "--meta-size must not be 0");
        case OPT_BLOCK_SIZE:
                if ((r = ts_cli_size(cmd, "--block-size", arg, &a->req.block_size)))
                        return r;
                if (ts_pool_check_block_size(a->req.block_size, NULL) < 0)
                        return ts_cli_usage_error(cmd, "--block-size '%s' must be a multiple "
                                                       "of 64K between 64K and 1G", arg);
                return 0;
        case OPT_LOW_WATER:
                return ts_cli_u64(cmd, "--low-water", arg, UINT32_MAX, &a->req.low_water_blocks);
        case OPT_SKIP_ZERO: a->req.skip_block_zeroing = true; return 0;
        case OPT_IGNORE_DISCARD: a->req.ignore_discard = true; return 0;
        case OPT_NO_PASSDOWN: a->req.no_discard_passdown = true; return 0;
        case OPT_ERROR_NO_SPACE: a->req.error_if_no_space = true; return 0;
        case OPT_STATE_DIR: a->state_dir = arg; return 0;
        case OPT_JSON: a->json = true; return 0;
        case OPT_FORCE: a->force = true; return 0;
        default: /* OPT_DELETE_FILES */ a->delete_files = true; return 0;
        }
}

static int parse_pool_args(const char *cmd, int argc, char **argv, pool_args *a, int kind) {
        static const struct option create_opts[] = {
                { "data", required_argument, NULL, OPT_DATA },
                { "data-size", required_argument, NULL, OPT_DATA_SIZE },
                { "meta", required_argument, NULL, OPT_META },
                { "meta-size", required_argument, NULL, OPT_META_SIZE },
                { "block-size", required_argument, NULL, OPT_BLOCK_SIZE },
                { "low-water", required_argument, NULL, OPT_LOW_WATER },
                { "skip-block-zeroing", no_argument, NULL, OPT_SKIP_ZERO },
                { "ignore-discard", no_argument, NULL, OPT_IGNORE_DISCARD },
                { "no-discard-passdown", no_argument, NULL, OPT_NO_PASSDOWN },
                { "error-if-no-space", no_argument, NULL, OPT_ERROR_NO_SPACE },
                { "state-dir", required_argument, NULL, OPT_STATE_DIR },
                { "json", no_argument, NULL, OPT_JSON },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        static const struct option extend_opts[] = {
                { "data-size", required_argument, NULL, OPT_DATA_SIZE },
                { "meta-size", required_argument, NULL, OPT_META_SIZE },
                { "state-dir", required_argument, NULL, OPT_STATE_DIR },
                { "json", no_argument, NULL, OPT_JSON },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        static const struct option other_opts[] = {
                { "state-dir", required_argument, NULL, OPT_STATE_DIR },
                { "json", no_argument, NULL, OPT_JSON },
                { "force", no_argument, NULL, OPT_FORCE },
                { "delete-files", no_argument, NULL, OPT_DELETE_FILES },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *sub = argv[0];
        optind = 1;
        opterr = 0;
        int c, r;
        const struct option *opts = kind == ARGS_CREATE ? create_opts : kind == ARGS_EXTEND ? extend_opts : other_opts;
        bool creating = kind == ARGS_CREATE;
        while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                if (c == 'h') {
                        fputs(pool_help, stdout);
                        return -1;
                }
                if (c == ':')
                        return ts_cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
                if (c == '?')
                        return ts_cli_usage_error(cmd, "unknown option '%s' for '%s'", argv[optind - 1], sub);
                if ((r = pool_opt(cmd, c, optarg, a)))
                        return r;
        }
        if (optind >= argc)
                return ts_cli_usage_error(cmd, "'%s' needs a pool NAME", sub);
        if (optind + 1 < argc)
                return ts_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
        a->name = argv[optind];
        a->req.name = a->name;
        a->state_dir = ts_cli_state_dir(a->state_dir);
        ts_error *e = NULL;
        if (ts_pool_check_name(a->name, &e) < 0) {
                r = ts_cli_usage_error(cmd, "%s", e->msg);
                ts_error_free(e);
                return r;
        }
        if (creating && !a->req.data_path)
                return ts_cli_usage_error(cmd, "create needs --data FILE|DEV");
        if (creating && !a->req.meta_path)
                return ts_cli_usage_error(cmd, "create needs --meta FILE|DEV");
        return 0;
}

static const char *outcome_name(ts_poolprov_outcome o) {
        switch (o) {
        case TS_POOLPROV_CREATED: return "created";
        case TS_POOLPROV_ATTACHED: return "attached";
        default: return "unchanged";
        }
}

static int report_outcome(const pool_args *a, ts_poolprov_outcome o) {
        if (a->json) {
                json_object *j = json_object_new_object();
                json_object_object_add(j, "pool", json_object_new_string(a->name));
                json_object_object_add(j, "result", json_object_new_string(outcome_name(o)));
                ts_cli_print_json(j);
        } else if (o == TS_POOLPROV_UNCHANGED)
                printf("pool %s is already set up; nothing changed\n", a->name);
        else if (o == TS_POOLPROV_ATTACHED)
                printf("pool %s attached (existing metadata)\n", a->name);
        else
                printf("pool %s created\n", a->name);
        return TS_EXIT_OK;
}

static int pool_create(int argc, char **argv) {
        pool_args a = { 0 };
        int r = parse_pool_args("pool create", argc, argv, &a, ARGS_CREATE);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        _cleanup_error_ ts_error *err = NULL;
        ts_poolprov_outcome o;
        r = ts_poolprov_create(a.state_dir, &a.req, &o, &err);
        if (r < 0)
                return ts_cli_fail_json("pool create", a.json, err, r);
        return report_outcome(&a, o);
}

static int pool_attach(int argc, char **argv) {
        pool_args a = { 0 };
        int r = parse_pool_args("pool attach", argc, argv, &a, ARGS_OTHER);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        _cleanup_error_ ts_error *err = NULL;
        ts_poolprov_outcome o;
        r = ts_poolprov_attach(a.state_dir, a.name, &o, &err);
        if (r < 0)
                return ts_cli_fail_json("pool attach", a.json, err, r);
        return report_outcome(&a, o);
}

static int pool_destroy(int argc, char **argv) {
        pool_args a = { 0 };
        int r = parse_pool_args("pool destroy", argc, argv, &a, ARGS_OTHER);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        _cleanup_error_ ts_error *err = NULL;
        r = ts_poolprov_destroy(a.state_dir, a.name, a.force, a.delete_files, &err);
        if (r < 0)
                return ts_cli_fail_json("pool destroy", a.json, err, r);
        if (a.json) {
                json_object *j = json_object_new_object();
                json_object_object_add(j, "pool", json_object_new_string(a.name));
                json_object_object_add(j, "result", json_object_new_string("destroyed"));
                json_object_object_add(j, "files_deleted", json_object_new_boolean(a.delete_files));
                ts_cli_print_json(j);
        } else
                printf("pool %s destroyed%s\n", a.name, a.delete_files ? "; files deleted" : "");
        return TS_EXIT_OK;
}

static json_object *sizes_json(const ts_poolprov_sizes *z) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "data_size", json_object_new_uint64(z->data));
        json_object_object_add(o, "meta_size", json_object_new_uint64(z->meta));
        return o;
}

static int pool_extend(int argc, char **argv) {
        pool_args a = { 0 };
        int r = parse_pool_args("pool extend", argc, argv, &a, ARGS_EXTEND);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        _cleanup_error_ ts_error *err = NULL;
        ts_poolprov_sizes before, after;
        r = ts_poolprov_extend(a.state_dir, a.name, a.req.data_size, a.req.meta_size, &before, &after, &err);
        if (r < 0)
                return ts_cli_fail_json("pool extend", a.json, err, r);
        bool grown = before.data != after.data || before.meta != after.meta;
        if (a.json) {
                json_object *j = json_object_new_object();
                json_object_object_add(j, "pool", json_object_new_string(a.name));
                json_object_object_add(j, "result", json_object_new_string(grown ? "extended" : "unchanged"));
                json_object_object_add(j, "before", sizes_json(&before));
                json_object_object_add(j, "after", sizes_json(&after));
                ts_cli_print_json(j);
                return TS_EXIT_OK;
        }
        char d0[32], d1[32], m0[32], m1[32];
        ts_units_format_size(before.data, d0, sizeof d0);
        ts_units_format_size(after.data, d1, sizeof d1);
        ts_units_format_size(before.meta, m0, sizeof m0);
        ts_units_format_size(after.meta, m1, sizeof m1);
        if (grown)
                printf("pool %s extended: data %s -> %s, metadata %s -> %s\n", a.name, d0, d1, m0, m1);
        else
                printf("pool %s is already that large (data %s, metadata %s); nothing changed\n", a.name, d1, m1);
        return TS_EXIT_OK;
}

static json_object *usage_json(uint64_t used, uint64_t total, uint64_t block_bytes) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "used_blocks", json_object_new_uint64(used));
        json_object_object_add(o, "total_blocks", json_object_new_uint64(total));
        json_object_object_add(o, "block_size", json_object_new_uint64(block_bytes));
        json_object_object_add(o, "used_bytes", json_object_new_uint64(used * block_bytes));
        json_object_object_add(o, "total_bytes", json_object_new_uint64(total * block_bytes));
        return o;
}

static void print_usage_line(const char *label, uint64_t used, uint64_t total, uint64_t block) {
        char u[32], t[32], b[32];
        double pct = total ? 100.0 * (double) used / (double) total : 0.0;
        printf("%-14s %s of %s used (%.1f%%; %" PRIu64 "/%" PRIu64 " blocks of %s)\n", label,
               ts_units_format_size(used * block, u, sizeof u), ts_units_format_size(total * block, t, sizeof t),
               pct, used, total, ts_units_format_size(block, b, sizeof b));
}

static int pool_status(int argc, char **argv) {
        pool_args a = { 0 };
        int r = parse_pool_args("pool status", argc, argv, &a, ARGS_OTHER);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        _cleanup_error_ ts_error *err = NULL;
        _cleanup_pool_ ts_pool *pool = NULL;
        ts_pool_status st;
        _cleanup_strv_free_ char **users = NULL;
        if ((r = ts_dm_check_available(&err)) < 0 || (r = ts_pool_open(a.name, &pool, &err)) < 0 ||
            (r = ts_pool_get_status(pool, &st, &err)) < 0 ||
            (r = ts_pool_active_devices(pool, &users, &err)) < 0)
                return ts_cli_fail_json("pool status", a.json, err, r);
        _cleanup_poolspec_ ts_poolspec *spec = NULL;
        (void) ts_poolstate_read(a.state_dir, a.name, &spec, NULL);

        uint64_t block = pool->params.data_block_sectors * TS_SECTOR_SIZE;
        const char *state = st.fail ? "failed"
                            : st.needs_check ? "needs_check"
                            : st.out_of_data_space ? "out_of_data_space"
                            : st.read_only ? "read_only"
                                           : "active";
        if (a.json) {
                json_object *j = json_object_new_object();
                json_object_object_add(j, "name", json_object_new_string(a.name));
                json_object_object_add(j, "state", json_object_new_string(state));
                json_object_object_add(j, "transaction_id", json_object_new_uint64(st.transaction_id));
                json_object_object_add(j, "data", usage_json(st.used_data_blocks, st.total_data_blocks, block));
                json_object_object_add(j, "metadata", usage_json(st.used_meta_blocks, st.total_meta_blocks, 4096));
                json_object_object_add(j, "read_only", json_object_new_boolean(st.read_only));
                json_object_object_add(j, "out_of_data_space", json_object_new_boolean(st.out_of_data_space));
                json_object_object_add(j, "needs_check", json_object_new_boolean(st.needs_check));
                json_object_object_add(j, "fail", json_object_new_boolean(st.fail));
                json_object_object_add(j, "low_water_blocks", json_object_new_uint64(pool->params.low_water_blocks));
                json_object_object_add(j, "data_device", json_object_new_string(pool->data_dev));
                json_object_object_add(j, "meta_device", json_object_new_string(pool->meta_dev));
                if (spec) {
                        json_object_object_add(j, "data_path", json_object_new_string(spec->data.path));
                        json_object_object_add(j, "meta_path", json_object_new_string(spec->meta.path));
                }
                json_object *arr = json_object_new_array();
                for (char **u = users; *u; u++)
                        json_object_array_add(arr, json_object_new_string(*u));
                json_object_object_add(j, "active_devices", arr);
                ts_cli_print_json(j);
                return TS_EXIT_OK;
        }
        char b[32];
        printf("%-14s %s\n", "pool", a.name);
        printf("%-14s %s\n", "state", state);
        printf("%-14s %" PRIu64 "\n", "transaction", st.transaction_id);
        print_usage_line("data", st.used_data_blocks, st.total_data_blocks, block);
        print_usage_line("metadata", st.used_meta_blocks, st.total_meta_blocks, 4096);
        printf("%-14s %s\n", "block size", ts_units_format_size(block, b, sizeof b));
        printf("%-14s %" PRIu64 " blocks\n", "low water", pool->params.low_water_blocks);
        printf("%-14s %s%s\n", "data device", pool->data_dev, "");
        if (spec)
                printf("%-14s %s (%s)\n", "", spec->data.path, spec->data.is_file ? "file" : "block device");
        printf("%-14s %s\n", "meta device", pool->meta_dev);
        if (spec)
                printf("%-14s %s (%s)\n", "", spec->meta.path, spec->meta.is_file ? "file" : "block device");
        printf("%-14s %zu", "active devices", ts_strv_length(users));
        for (char **u = users; *u; u++)
                printf("%s%s", u == users ? " (" : ", ", *u);
        printf("%s\n", *users ? ")" : "");
        return TS_EXIT_OK;
}

int ts_cmd_pool(int argc, char **argv) {
        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
            strcmp(argv[1], "help") == 0) {
                fputs(pool_help, argc < 2 ? stderr : stdout);
                return argc < 2 ? TS_EXIT_USAGE : TS_EXIT_OK;
        }
        static const struct {
                const char *name;
                int (*fn)(int, char **);
        } cmds[] = {
                { "create", pool_create },
                { "attach", pool_attach },
                { "extend", pool_extend },
                { "status", pool_status },
                { "destroy", pool_destroy },
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(cmds); i++)
                if (strcmp(argv[1], cmds[i].name) == 0)
                        return cmds[i].fn(argc - 1, argv + 1);
        return ts_cli_usage_error("pool", "unknown command '%s' (create, attach, extend, status, destroy)",
                                  argv[1]);
}
