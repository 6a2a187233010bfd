#include "cmd-inject.h"

#include "cli.h"

#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/macro.h"
#include "common/units.h"
#include "inject/inject.h"

static void usage(FILE *f) {
        fputs("Usage: thinsnap inject TARGET HOST_FILE GUEST_PATH [OPTIONS]\n"
              "       thinsnap inject --mountpoints TARGET [--json]\n"
              "\n"
              "Writes HOST_FILE at GUEST_PATH inside the ext2/3/4 filesystem on TARGET\n"
              "(a block device or an image file) without mounting it. An existing file\n"
              "is replaced atomically; missing parent directories are created 0755 root:root.\n"
              "\n"
              "Options:\n"
              "  --mode MODE            permission bits, octal (default: those of HOST_FILE)\n"
              "  --uid N, --gid N       owner (default: 0)\n"
              "  --mtime SECONDS        modification time (default: that of HOST_FILE)\n"
              "  --no-mkdirs            fail when a parent directory is missing\n"
              "  --no-replace-symlink   fail when GUEST_PATH is a symlink instead of replacing it\n"
              "  --mountpoints          create /proc /sys /dev /tmp /run when absent\n"
              "  --no-follow            refuse a TARGET that is a symlink\n"
              "  --json                 print the result as JSON on stdout\n"
              "  -h, --help             show this help\n",
              f);
}

enum { OPT_MODE = 256, OPT_UID, OPT_GID, OPT_MTIME, OPT_NO_MKDIRS, OPT_NO_REPLACE_SYMLINK,
       OPT_MOUNTPOINTS, OPT_JSON, OPT_NO_FOLLOW };

typedef struct inject_args {
        ts_inject_opts opts;
        bool have_mode, have_mtime, mountpoints, json;
        unsigned open_flags;
        uint64_t mtime;
        char **args; /* TARGET [HOST_FILE GUEST_PATH] */
} inject_args;

/* Returns 0, or the exit code of a usage error. */
static int inject_opt(int c, const char *arg, inject_args *a) {
        switch (c) {
        case OPT_MODE:
                a->have_mode = true;
                return ts_units_parse_mode(arg, &a->opts.mode) < 0 ?
                        ts_cli_usage_error("inject", "--mode: \"%s\" is not an octal mode (at most 07777)", arg) : 0;
        case OPT_UID:
                return ts_units_parse_u32(arg, &a->opts.uid) < 0 ?
                        ts_cli_usage_error("inject", "--uid: \"%s\" is not a number from 0 to 4294967295", arg) : 0;
        case OPT_GID:
                return ts_units_parse_u32(arg, &a->opts.gid) < 0 ?
                        ts_cli_usage_error("inject", "--gid: \"%s\" is not a number from 0 to 4294967295", arg) : 0;
        case OPT_MTIME:
                a->have_mtime = true;
                return ts_units_parse_u64(arg, &a->mtime) < 0 || a->mtime > INT64_MAX ?
                        ts_cli_usage_error("inject", "--mtime: \"%s\" is not a number of seconds", arg) : 0;
        case OPT_NO_MKDIRS:
                a->opts.flags |= TS_INJECT_NO_MKDIRS;
                return 0;
        case OPT_NO_REPLACE_SYMLINK:
                a->opts.flags |= TS_INJECT_REFUSE_SYMLINK;
                return 0;
        case OPT_MOUNTPOINTS:
                a->mountpoints = true;
                return 0;
        case OPT_JSON:
                a->json = true;
                return 0;
        default: /* OPT_NO_FOLLOW */
                a->open_flags |= TS_INJECT_OPEN_NOFOLLOW;
                return 0;
        }
}

/* Returns 0, -1 (help printed) or the exit code of a usage error. */
static int parse_inject_args(int argc, char **argv, inject_args *a) {
        static const struct option longopts[] = {
                { "mode", required_argument, NULL, OPT_MODE },
                { "uid", required_argument, NULL, OPT_UID },
                { "gid", required_argument, NULL, OPT_GID },
                { "mtime", required_argument, NULL, OPT_MTIME },
                { "no-mkdirs", no_argument, NULL, OPT_NO_MKDIRS },
                { "no-replace-symlink", no_argument, NULL, OPT_NO_REPLACE_SYMLINK },
                { "mountpoints", no_argument, NULL, OPT_MOUNTPOINTS },
                { "json", no_argument, NULL, OPT_JSON },
                { "no-follow", no_argument, NULL, OPT_NO_FOLLOW },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        *a = (inject_args) { .opts = TS_INJECT_OPTS_DEFAULT };
        optind = 0; /* full reset: the caller may have used getopt already */
        opterr = 0;
        int c, r;
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                if (c == 'h') {
                        usage(stdout);
                        return -1;
                }
                if (c == '?' || c == ':')
                        return ts_cli_usage_error("inject", "unknown or incomplete option \"%s\"", argv[optind - 1]);
                if ((r = inject_opt(c, optarg, a)))
                        return r;
        }
        int nargs = argc - optind;
        a->args = argv + optind;
        if (a->mountpoints ? nargs != 1 : nargs != 3)
                return ts_cli_usage_error("inject", "%s", a->mountpoints ? "--mountpoints takes exactly one TARGET"
                                                         : "expected TARGET HOST_FILE GUEST_PATH");
        if (a->mountpoints && (a->have_mode || a->have_mtime || a->opts.uid || a->opts.gid || a->opts.flags))
                return ts_cli_usage_error("inject", "%s", "--mountpoints takes no file options");
        if (!a->mountpoints && a->args[2][0] != '/')
                return ts_cli_usage_error("inject", "GUEST_PATH \"%s\" must be absolute", a->args[2]);
        return 0;
}

/* Opens HOST_FILE (before the target, so a bad source touches nothing) and
 * takes its mode and mtime unless given. */
static int open_source(inject_args *a, int *ret_fd, struct stat *st, ts_error **err) {
        _cleanup_close_ int fd = open(a->args[1], O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, st) < 0)
                return ts_error_set(err, errno, "%s", a->args[1]);
        if (!S_ISREG(st->st_mode))
                return ts_error_setf_plain(err, EINVAL, "%s: not a regular file", a->args[1]);
        if (!a->have_mode)
                a->opts.mode = st->st_mode & 07777;
        a->opts.mtime = a->have_mtime ? (int64_t) a->mtime : (int64_t) st->st_mtim.tv_sec;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static void print_result(const inject_args *a, const struct stat *st, int created) {
        const char *target = a->args[0];
        if (!a->json) {
                if (a->mountpoints)
                        printf("%s: created %d mount point%s\n", target, created, created == 1 ? "" : "s");
                else
                        printf("%s: wrote %s (%lld bytes, mode %04o, %u:%u)\n", target, a->args[2],
                               (long long) st->st_size, a->opts.mode, a->opts.uid, a->opts.gid);
                return;
        }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "target", json_object_new_string(target));
        if (a->mountpoints)
                json_object_object_add(o, "created", json_object_new_int(created));
        else {
                char mode[8];
                snprintf(mode, sizeof mode, "%04o", a->opts.mode);
                json_object_object_add(o, "guest_path", json_object_new_string(a->args[2]));
                json_object_object_add(o, "host_file", json_object_new_string(a->args[1]));
                json_object_object_add(o, "bytes", json_object_new_int64(st->st_size));
                json_object_object_add(o, "mode", json_object_new_string(mode));
                json_object_object_add(o, "uid", json_object_new_int64(a->opts.uid));
                json_object_object_add(o, "gid", json_object_new_int64(a->opts.gid));
                json_object_object_add(o, "mtime", json_object_new_int64(a->opts.mtime));
        }
        ts_cli_print_json(o);
}

int ts_cmd_inject(int argc, char **argv) {
        inject_args a;
        int r = parse_inject_args(argc, argv, &a);
        if (r)
                return r < 0 ? TS_EXIT_OK : r;
        _cleanup_error_ ts_error *err = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st = {};
        if (!a.mountpoints && (r = open_source(&a, &fd, &st, &err)) < 0)
                return ts_cli_fail_json("inject", a.json, err, r);
        _cleanup_inject_ ts_inject *ij = NULL;
        if ((r = ts_inject_open(a.args[0], a.open_flags, &ij, &err)) < 0)
                return ts_cli_fail_json("inject", a.json, err, r);
        int created = 0;
        if (a.mountpoints)
                r = created = ts_inject_mountpoints(ij, &err);
        else
                r = ts_inject_write_fd(ij, fd, a.args[2], &a.opts, &err);
        if (r >= 0)
                r = ts_inject_close(TAKE_PTR(ij), &err);
        if (r < 0)
                return ts_cli_fail_json("inject", a.json, err, r);
        print_result(&a, &st, created);
        return TS_EXIT_OK;
}
