/* thinsnapd's configuration file: a small TOML subset.
 *
 *   # comment
 *   root = "/var/lib/thinsnap"
 *   pool = "tp"
 *   address = "/run/thinsnap/thinsnapd.sock"
 *   base_size = "10G"          # or a number of bytes
 *   store_map_max = "1G"       # largest the metadata store's map grows to
 *   max_labels = 4096          # labels of one snapshot (store/label.h)
 *   max_label_bytes = "1M"     # their keys + values
 *   socket_mode = "0660"
 *   log_level = "info"
 *   async_remove = false
 *   discard_on_remove = false
 *   mkfs = "mkfs.ext4"
 *   max_connections = 1024     # the gRPC server's limits (see ts_config_rpc_keys)
 *   request_timeout = "60s"
 *   provisioner = true         # serve thinsnap.v1.Provisioner
 *   provisioner_address = "/run/thinsnap/provisioner.sock"
 *   provisioner_group = "thinsnap"
 *   containerd_address = "/run/containerd/containerd.sock"
 *   namespace = "thinsnap"     # the provisioner's containerd namespace
 *   snapshotter_name = "thinsnap"   # containerd's name for thinsnapd
 *   max_warms = 2              # image warms running at once
 *   spares_max = 64            # most spares a Prepare may ask its parent to keep; 0: off
 *   vm_spares = 0              # spares of each image's top the provisioner asks for
 *   registry_timeout = "30s"   # a registry transfer without progress this long fails
 *   metrics_address = "127.0.0.1:9464"   # Prometheus metrics over HTTP; unset: off
 *
 * One `key = value` per line; values are "strings" (escapes \" \\ \n \t),
 * integers or true/false. Unknown keys and bad values are errors naming the
 * line. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/log.h"
#include "rpc/server.h"

typedef struct ts_config {
        char *root, *pool, *address, *mkfs;
        char *provisioner_address, *provisioner_group, *containerd_address, *namespace,
                *snapshotter_name, *metrics_address;
        uint64_t base_size;
        uint64_t store_map_max; /* 0: not set */
        uint64_t max_labels, max_label_bytes; /* 0: not set */
        uint64_t max_warms;
        uint64_t spares_max, vm_spares;
        bool spares_max_set, vm_spares_set;
        uint32_t registry_timeout_ms;
        bool no_provisioner;
        uint32_t socket_mode;
        enum ts_log_level log_level;
        bool log_level_set;
        bool async_remove, discard_on_remove;
        ts_rpc_server_options rpc; /* 0 fields: not set */
} ts_config;

/* The gRPC server's limits a user may set: key (the config file's) and
 * flag (the command line's, without "--"), the field of
 * ts_rpc_server_options it sets, and what its value is: a count ("1024"),
 * a size ("64K", or bytes) or a duration with its unit ("500ms", "30s",
 * "10m", "1h"). Every value must be above 0. */
typedef struct ts_config_rpc_key {
        const char *key, *flag;
        size_t offset;
        enum { TS_CONFIG_COUNT, TS_CONFIG_SIZE, TS_CONFIG_DURATION } kind;
} ts_config_rpc_key;

extern const ts_config_rpc_key ts_config_rpc_keys[];
extern const size_t ts_config_n_rpc_keys;

/* Parses text as the value of k into o. Returns 0, or -EINVAL with a
 * message naming the flag or key (as name says) and what a value must be. */
int ts_config_set_rpc(ts_rpc_server_options *o, const ts_config_rpc_key *k, const char *name,
                      const char *text, ts_error **err);

/* Copies every field set in from (non-zero) over into. */
void ts_config_merge_rpc(ts_rpc_server_options *into, const ts_rpc_server_options *from);

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
