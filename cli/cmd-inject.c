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
#include "common/parse.h"
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

int ts_cmd_inject(int argc, char **argv) {
        enum { OPT_MODE = 256, OPT_UID, OPT_GID, OPT_MTIME, OPT_NO_MKDIRS, OPT_NO_REPLACE_SYMLINK,
               OPT_MOUNTPOINTS, OPT_JSON, OPT_NO_FOLLOW };
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
        ts_inject_opts opts = TS_INJECT_OPTS_DEFAULT;
        bool have_mode = false, have_mtime = false, mountpoints = false, json = false;
        unsigned open_flags = 0;
        uint64_t mtime = 0;

        optind = 0; /* full reset: the caller may have used getopt already */
        opterr = 0;
        int c;
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (c) {
                case OPT_MODE:
                        if (ts_parse_mode(optarg, &opts.mode) < 0)
                                return ts_cli_usage_error("inject", "--mode: \"%s\" is not an octal mode (at most 07777)", optarg);
                        have_mode = true;
                        break;
                case OPT_UID:
                        if (ts_parse_u32(optarg, &opts.uid) < 0)
                                return ts_cli_usage_error("inject", "--uid: \"%s\" is not a number from 0 to 4294967295", optarg);
                        break;
                case OPT_GID:
                        if (ts_parse_u32(optarg, &opts.gid) < 0)
                                return ts_cli_usage_error("inject", "--gid: \"%s\" is not a number from 0 to 4294967295", optarg);
                        break;
                case OPT_MTIME:
                        if (ts_parse_u64(optarg, &mtime) < 0 || mtime > INT64_MAX)
                                return ts_cli_usage_error("inject", "--mtime: \"%s\" is not a number of seconds", optarg);
                        have_mtime = true;
                        break;
                case OPT_NO_MKDIRS:
                        opts.flags |= TS_INJECT_NO_MKDIRS;
                        break;
                case OPT_NO_REPLACE_SYMLINK:
                        opts.flags |= TS_INJECT_REFUSE_SYMLINK;
                        break;
                case OPT_MOUNTPOINTS:
                        mountpoints = true;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case OPT_NO_FOLLOW:
                        open_flags |= TS_INJECT_OPEN_NOFOLLOW;
                        break;
                case 'h':
                        usage(stdout);
                        return TS_EXIT_OK;
                default:
                        return ts_cli_usage_error("inject", "unknown or incomplete option \"%s\"", argv[optind - 1]);
                }
        }
        int nargs = argc - optind;
        char **args = argv + optind;
        if (mountpoints ? nargs != 1 : nargs != 3)
                return ts_cli_usage_error("inject", "%s", mountpoints ? "--mountpoints takes exactly one TARGET"
                                                     : "expected TARGET HOST_FILE GUEST_PATH");
        if (mountpoints && (have_mode || have_mtime || opts.uid || opts.gid || opts.flags))
                return ts_cli_usage_error("inject", "%s", "--mountpoints takes no file options");

        const char *target = args[0];
        _cleanup_error_ ts_error *err = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st = {};
        if (!mountpoints) {
                if (args[2][0] != '/')
                        return ts_cli_usage_error("inject", "GUEST_PATH \"%s\" must be absolute", args[2]);
                /* Opened before the target so a bad source touches nothing. */
                fd = open(args[1], O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0 || fstat(fd, &st) < 0) {
                        int r = ts_error_set(&err, errno, "%s", args[1]);
                        return ts_cli_fail_json("inject", json, err, r);
                }
                if (!S_ISREG(st.st_mode)) {
                        int r = ts_error_setf_plain(&err, EINVAL, "%s: not a regular file", args[1]);
                        return ts_cli_fail_json("inject", json, err, r);
                }
                if (!have_mode)
                        opts.mode = st.st_mode & 07777;
                opts.mtime = have_mtime ? (int64_t) mtime : (int64_t) st.st_mtim.tv_sec;
        }

        _cleanup_inject_ ts_inject *ij = NULL;
        int r = ts_inject_open(target, open_flags, &ij, &err);
        if (r < 0)
                return ts_cli_fail_json("inject", json, err, r);

        int created = 0;
        if (mountpoints)
                r = created = ts_inject_mountpoints(ij, &err);
        else
                r = ts_inject_write_fd(ij, fd, args[2], &opts, &err);
        if (r < 0)
                return ts_cli_fail_json("inject", json, err, r);
        r = ts_inject_close(TAKE_PTR(ij), &err);
        if (r < 0)
                return ts_cli_fail_json("inject", json, err, r);

        if (json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "target", json_object_new_string(target));
                if (mountpoints)
                        json_object_object_add(o, "created", json_object_new_int(created));
                else {
                        char mode[8];
                        snprintf(mode, sizeof mode, "%04o", opts.mode);
                        json_object_object_add(o, "guest_path", json_object_new_string(args[2]));
                        json_object_object_add(o, "host_file", json_object_new_string(args[1]));
                        json_object_object_add(o, "bytes", json_object_new_int64(st.st_size));
                        json_object_object_add(o, "mode", json_object_new_string(mode));
                        json_object_object_add(o, "uid", json_object_new_int64(opts.uid));
                        json_object_object_add(o, "gid", json_object_new_int64(opts.gid));
                        json_object_object_add(o, "mtime", json_object_new_int64(opts.mtime));
                }
                ts_cli_print_json(o);
        } else if (mountpoints)
                printf("%s: created %d mount point%s\n", target, created, created == 1 ? "" : "s");
        else
                printf("%s: wrote %s (%lld bytes, mode %04o, %u:%u)\n", target, args[2],
                       (long long) st.st_size, opts.mode, opts.uid, opts.gid);
        return TS_EXIT_OK;
}
