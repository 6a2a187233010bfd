/* thinsnapd's configuration file: a small TOML subset.
 *
 *   # comment
 *   root = "/var/lib/thinsnap"
 *   pool = "tp"
 *   address = "/run/thinsnap/thinsnapd.sock"
 *   base_size = "10G"          # or a number of bytes
 *   socket_mode = "0660"
 *   log_level = "info"
 *   async_remove = false
 *   discard_on_remove = false
 *   mkfs = "mkfs.ext4"
 *   provisioner = true         # serve thinsnap.v1.Provisioner
 *   provisioner_address = "/run/thinsnap/provisioner.sock"
 *   provisioner_group = "thinsnap"
 *   containerd_address = "/run/containerd/containerd.sock"
 *   namespace = "thinsnap"     # the provisioner's containerd namespace
 *   snapshotter_name = "thinsnap"   # containerd's name for thinsnapd
 *   max_warms = 2              # image warms running at once
 *
 * One `key = value` per line; values are "strings" (escapes \" \\ \n \t),
 * integers or true/false. Unknown keys and bad values are errors naming the
 * line. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/log.h"

typedef struct ts_config {
        char *root, *pool, *address, *mkfs;
        char *provisioner_address, *provisioner_group, *containerd_address, *namespace,
                *snapshotter_name;
        uint64_t base_size;
        uint64_t max_warms;
        bool no_provisioner;
        uint32_t socket_mode;
        enum ts_log_level log_level;
        bool log_level_set;
        bool async_remove, discard_on_remove;
} ts_config;

/* Applies the settings in text (len bytes; need not be NUL-terminated) to
 * cfg, replacing strings it held. Returns 0, -EINVAL (the message names the
 * line and what is wrong) or -ENOMEM. On failure cfg may be partly
 * updated; the caller exits. */
int ts_config_parse(const char *text, size_t len, ts_config *cfg, ts_error **err);

/* Reads and applies a file (at most 1 MiB). Returns as ts_config_parse, or
 * -errno for the file. */
int ts_config_load(const char *path, ts_config *cfg, ts_error **err);

/* Frees the strings of cfg. */
void ts_config_done(ts_config *cfg);
