/* thinsnap: the command-line client (pools, thin devices, injection). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd-image.h"
#include "cmd-inject.h"
#include "cmd-pool.h"
#include "cmd-vm.h"
#include "common/log.h"

static const char main_help[] =
        "Usage: thinsnap [--log-level LEVEL] COMMAND ...\n"
        "\n"
        "Commands:\n"
        "  image    warm images into the pool and inspect them (through thinsnapd)\n"
        "  vm       cut, fill and tear down one device per VM (through thinsnapd)\n"
        "  pool     create, attach, extend, inspect and destroy thin pools\n"
        "  thin     low-level thin device operations on a pool\n"
        "  inject   write a file into a device's ext4 filesystem without mounting it\n"
        "\n"
        "'thinsnap COMMAND --help' describes each. --version prints the version.\n";

int main(int argc, char **argv) {
        int i = 1;
        for (; i < argc && argv[i][0] == '-'; i++) {
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        fputs(main_help, stdout);
                        return TS_EXIT_OK;
                }
                if (strcmp(argv[i], "--version") == 0) {
                        printf("thinsnap %s\n", TS_VERSION);
                        return TS_EXIT_OK;
                }
                if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
                        enum ts_log_level l;
                        if (ts_log_parse_level(argv[++i], &l) < 0)
                                return ts_cli_usage_error("", "--log-level '%s': use error, warn, "
                                                              "info, debug or trace", argv[i]);
                        ts_log_set_level(l);
                        continue;
                }
                return ts_cli_usage_error("", "unknown option '%s'", argv[i]);
        }
        if (i >= argc) {
                fputs(main_help, stderr);
                return TS_EXIT_USAGE;
        }
        static const struct {
                const char *name;
                int (*fn)(int, char **);
        } cmds[] = {
                { "pool", ts_cmd_pool },
                { "thin", ts_cmd_thin },
                { "inject", ts_cmd_inject },
                { "image", ts_cmd_image },
                { "vm", ts_cmd_vm },
        };
        for (size_t c = 0; c < TS_ARRAY_SIZE(cmds); c++)
                if (strcmp(argv[i], cmds[c].name) == 0)
                        return cmds[c].fn(argc - i, argv + i);
        fprintf(stderr, "thinsnap: unknown command '%s'\n", argv[i]);
        fputs(main_help, stderr);
        return TS_EXIT_USAGE;
}
