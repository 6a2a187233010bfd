#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd-pool.h"
#include "devmapper/dm.h"
#include "devmapper/pool.h"
#include "devmapper/thin.h"

static const char thin_help[] =
        "Usage: thinsnap thin COMMAND ARGS [OPTIONS]\n"
        "\n"
        "Low-level thin device operations on a pool (what thinsnapd does per snapshot).\n"
        "\n"
        "Commands:\n"
        "  create POOL ID                       create an empty thin device\n"
        "  snap POOL ID ORIGIN_ID [--origin-name NAME]\n"
        "                                       snapshot ORIGIN_ID as ID; NAME is the origin's\n"
        "                                       device name, suspended around it when active\n"
        "  activate POOL ID NAME --size SIZE [--read-only]\n"
        "                                       map ID as /dev/mapper/NAME\n"
        "  deactivate NAME [--deferred]         unmap /dev/mapper/NAME (retries while busy;\n"
        "                                       --deferred: remove on last close)\n"
        "  delete POOL ID                       delete ID from the pool (must be inactive)\n"
        "  status NAME [--json]                 mapped sectors of an active thin device\n"
        "\n"
        "ID is a thin device id from 0 to 16777215. Exit status: 0 done, 1 the operation\n"
        "failed, 2 the command line was wrong.\n";

enum { OPT_SIZE = 256, OPT_RO, OPT_DEFERRED, OPT_ORIGIN_NAME, OPT_JSON };

typedef struct thin_args {
        char *pos[4];
        int npos;
        uint64_t size;
        bool read_only, deferred, json;
        const char *origin_name;
} thin_args;

static int parse(const char *cmd, int argc, char **argv, int want_pos, thin_args *a) {
        static const struct option opts[] = {
                { "size", required_argument, NULL, OPT_SIZE },
                { "read-only", no_argument, NULL, OPT_RO },
                { "deferred", no_argument, NULL, OPT_DEFERRED },
                { "origin-name", required_argument, NULL, OPT_ORIGIN_NAME },
                { "json", no_argument, NULL, OPT_JSON },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        optind = 1;
        opterr = 0;
        int c, r;
        while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                switch (c) {
                case 'h': fputs(thin_help, stdout); return -1;
                case OPT_SIZE:
                        if ((r = ts_cli_size(cmd, "--size", optarg, &a->size)))
                                return r;
                        break;
                case OPT_RO: a->read_only = true; break;
                case OPT_DEFERRED: a->deferred = true; break;
                case OPT_ORIGIN_NAME: a->origin_name = optarg; break;
                case OPT_JSON: a->json = true; break;
                case ':': return ts_cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
                default: return ts_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
                }
        }
        a->npos = argc - optind;
        if (a->npos != want_pos)
                return ts_cli_usage_error(cmd, "expects %d argument%s, got %d", want_pos,
                                          want_pos == 1 ? "" : "s", a->npos);
        for (int i = 0; i < a->npos; i++)
                a->pos[i] = argv[optind + i];
        return 0;
}

static int parse_id(const char *cmd, const char *what, const char *s, uint32_t *ret) {
        uint64_t v;
        int r = ts_cli_u64(cmd, what, s, TS_THIN_MAX_ID, &v);
        if (r)
                return r;
        *ret = (uint32_t) v;
        return 0;
}

static int open_pool(const char *cmd, const char *name, ts_pool **pool, ts_error **err) {
        int r = ts_dm_check_available(err);
        if (r < 0)
                return r;
        return ts_pool_open(name, pool, err);
}

int ts_cmd_thin(int argc, char **argv) {
        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                fputs(thin_help, argc < 2 ? stderr : stdout);
                return argc < 2 ? TS_EXIT_USAGE : TS_EXIT_OK;
        }
        const char *sub = argv[1];
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "thin %s", sub);
        argc--;
        argv++;
        thin_args a = { 0 };
        _cleanup_error_ ts_error *err = NULL;
        _cleanup_pool_ ts_pool *pool = NULL;
        uint32_t id, origin;
        int r;

        if (strcmp(sub, "create") == 0 || strcmp(sub, "delete") == 0) {
                if ((r = parse(cmd, argc, argv, 2, &a)))
                        return r < 0 ? TS_EXIT_OK : r;
                if ((r = parse_id(cmd, "ID", a.pos[1], &id)))
                        return r;
                if ((r = open_pool(cmd, a.pos[0], &pool, &err)) < 0)
                        return ts_cli_fail(cmd, err, r);
                r = sub[0] == 'c' ? ts_thin_create(pool, id, &err) : ts_thin_delete(pool, id, &err);
        } else if (strcmp(sub, "snap") == 0) {
                if ((r = parse(cmd, argc, argv, 3, &a)))
                        return r < 0 ? TS_EXIT_OK : r;
                if ((r = parse_id(cmd, "ID", a.pos[1], &id)) || (r = parse_id(cmd, "ORIGIN_ID", a.pos[2], &origin)))
                        return r;
                if ((r = open_pool(cmd, a.pos[0], &pool, &err)) < 0)
                        return ts_cli_fail(cmd, err, r);
                r = ts_thin_snap(pool, id, origin, a.origin_name, &err);
        } else if (strcmp(sub, "activate") == 0) {
                if ((r = parse(cmd, argc, argv, 3, &a)))
                        return r < 0 ? TS_EXIT_OK : r;
                if ((r = parse_id(cmd, "ID", a.pos[1], &id)))
                        return r;
                if (a.size == 0 || a.size % 512)
                        return ts_cli_usage_error(cmd, "--size is needed: a positive multiple of 512 bytes");
                if ((r = open_pool(cmd, a.pos[0], &pool, &err)) < 0)
                        return ts_cli_fail(cmd, err, r);
                r = ts_thin_activate(pool, a.pos[2], id, a.size, a.read_only ? TS_THIN_READ_ONLY : 0,
                                     &err);
                if (r == 0)
                        printf("/dev/mapper/%s\n", a.pos[2]);
        } else if (strcmp(sub, "deactivate") == 0) {
                if ((r = parse(cmd, argc, argv, 1, &a)))
                        return r < 0 ? TS_EXIT_OK : r;
                if ((r = ts_dm_check_available(&err)) >= 0)
                        r = ts_thin_deactivate(a.pos[0], a.deferred ? TS_THIN_DEFERRED : 0, &err);
        } else if (strcmp(sub, "status") == 0) {
                if ((r = parse(cmd, argc, argv, 1, &a)))
                        return r < 0 ? TS_EXIT_OK : r;
                ts_thin_status st;
                if ((r = ts_dm_check_available(&err)) >= 0)
                        r = ts_thin_get_status(a.pos[0], &st, &err);
                if (r == 0 && a.json) {
                        json_object *j = json_object_new_object();
                        json_object_object_add(j, "name", json_object_new_string(a.pos[0]));
                        json_object_object_add(j, "mapped_sectors", json_object_new_uint64(st.mapped_sectors));
                        json_object_object_add(j, "mapped_bytes", json_object_new_uint64(st.mapped_sectors * 512));
                        json_object_object_add(j, "highest_mapped_sector", json_object_new_uint64(st.highest_mapped_sector));
                        json_object_object_add(j, "fail", json_object_new_boolean(st.fail));
                        ts_cli_print_json(j);
                } else if (r == 0)
                        printf("%s mapped_sectors=%" PRIu64 " highest_mapped_sector=%" PRIu64 "%s\n",
                               a.pos[0], st.mapped_sectors, st.highest_mapped_sector,
                               st.fail ? " FAIL" : "");
        } else
                return ts_cli_usage_error("thin", "unknown command '%s' (create, snap, activate, "
                                                  "deactivate, delete, status)", sub);
        if (r < 0)
                return ts_cli_fail_json(cmd, a.json, err, r);
        return TS_EXIT_OK;
}
