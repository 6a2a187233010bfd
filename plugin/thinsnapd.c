/* thinsnapd: a containerd proxy snapshotter on a device-mapper thin pool. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/log.h"
#include "common/units.h"
#include "plugin/config.h"
#include "plugin/metrics.h"
#include "plugin/service.h"
#include "plugin/snapshotter.h"
#include "provision/daemon.h"
#include "rpc/server.h"

#define DEFAULT_BASE_SIZE (10ULL << 30)
#define DEFAULT_SPARES_MAX 64

static const char help[] =
        "Usage: thinsnapd --root DIR --pool NAME --address SOCKET [OPTIONS]\n"
        "\n"
        "A containerd proxy snapshotter: serves containerd.services.snapshots.v1.Snapshots\n"
        "over gRPC on a unix socket; every snapshot is a thin device in one dm-thin pool.\n"
        "\n"
        "  --root DIR          state directory (snapshot metadata)\n"
        "  --pool NAME         device-mapper name of an existing thin pool\n"
        "                      (made with 'thinsnap pool create')\n"
        "  --address SOCKET    unix socket to serve on (its directory is created)\n"
        "  --base-size SIZE    size of every snapshot's device, e.g. 10G (default 10G);\n"
        "                      the base filesystem is made once per pool and size\n"
        "  --config FILE       settings file (keys as the long options, with _ for -);\n"
        "                      options given on the command line win\n"
        "  --socket-mode MODE  socket file mode (default 0660)\n"
        "  --async-remove      Remove answers as soon as the removal is recorded (the\n"
        "                      snapshot is gone from Stat and List at once); a background\n"
        "                      thread deletes the device, retrying one still in use.\n"
        "                      Default off: Remove answers after the device is deleted\n"
        "  --discard           discard a removed snapshot's blocks before its device is\n"
        "                      deleted, so the pool passes them down to its data device\n"
        "                      (space back to a sparse file or an SSD; needs the pool's\n"
        "                      discard passdown). Costs a device activation per Remove;\n"
        "                      a failed discard is logged; Remove goes on. Default off\n"
        "  --mkfs PATH         mkfs.ext4 to format the base device with\n"
        "  --store-map-max SIZE  largest the snapshot metadata store (LMDB) grows to,\n"
        "                      e.g. 4G (default 1G; at least 256K). Near it new\n"
        "                      snapshots get RESOURCE_EXHAUSTED; Remove still works\n"
        "  --max-labels N      labels of one snapshot, and of one request (default 4096)\n"
        "  --max-label-bytes SIZE  keys + values of one snapshot's labels (default 1M,\n"
        "                      4K to 4M); each label's key + value at most 4096 bytes\n"
        "  --spares-max N      most spares a Prepare labelled\n"
        "                      containerd.io/snapshot/thinsnap.spares=N may ask its parent\n"
        "                      to keep: devices cut ahead, taken by the next such Prepare\n"
        "                      with no device step (default 64; 0: off)\n"
        "\n"
        "The provisioner (thinsnap.v1.Provisioner: warm images, cut one device per VM;\n"
        "the `thinsnap image` and `thinsnap vm` commands use it):\n"
        "  --provisioner-address SOCKET  its socket (default " TS_PROV_DEFAULT_ADDRESS ")\n"
        "  --provisioner-group GROUP     group of that socket (mode 0660)\n"
        "  --containerd-address SOCKET   containerd's socket (default\n"
        "                      " TS_PROV_DEFAULT_CONTAINERD ")\n"
        "  --namespace NS      containerd namespace of its images and VMs (default\n"
        "                      " TS_PROV_DEFAULT_NAMESPACE ")\n"
        "  --snapshotter-name NAME  the name containerd's config gives thinsnapd in\n"
        "                      [proxy_plugins] (default " TS_PROV_DEFAULT_SNAPSHOTTER ")\n"
        "  --max-warms N       image warms running at once (default 2)\n"
        "  --vm-spares N       spares of each image to keep for the next VMs: a VM's\n"
        "                      Prepare then takes one, and more are cut once VMs pause\n"
        "                      (default 0: none; at most --spares-max)\n"
        "  --registry-timeout DURATION  a registry transfer without progress this long\n"
        "                      fails (default 30s; 500ms, 30s, 10m...)\n"
        "  --no-provisioner    serve the Snapshots API only\n"
        "  --log-level LEVEL   error, warn, info (default), debug, trace\n"
        "  --metrics-address HOST:PORT  serve Prometheus metrics over HTTP at\n"
        "                      http://HOST:PORT/metrics (default: off; port 0 picks one)\n"
        "\n"
        "Limits of the gRPC server, per client (defaults far above what containerd needs):\n"
        "  --max-connections N         connections at once; past it the one idle longest\n"
        "                              is closed, or the new one when none is (1024)\n"
        "  --max-concurrent-streams N  calls at once on one connection (256)\n"
        "  --max-header-list-size SIZE a call's headers, decoded (64K)\n"
        "  --connection-window SIZE    request bytes a connection may have sent that no\n"
        "                              handler took yet; at least 16M + 5 bytes (32M + 10)\n"
        "  --max-queued-calls N        calls waiting for a handler; past it RESOURCE_EXHAUSTED\n"
        "                              at once (4096)\n"
        "  --handshake-timeout TIME    a connection's start of HTTP/2 (10s)\n"
        "  --request-timeout TIME      a call's request, from its headers to its end (60s)\n"
        "  --idle-timeout TIME         a connection without calls, then GOAWAY (1h)\n"
        "  --send-timeout TIME         a reply its client does not read is reset (60s)\n"
        "  TIME is 500ms, 30s, 10m, 1h; SIZE is 64K, 32M or bytes.\n"
        "\n"
        "  --version           print the version\n"
        "  -h, --help          this text\n"
        "\n"
        "Logs are logfmt lines on stderr. SIGTERM or SIGINT stops gracefully: calls in\n"
        "flight finish. Exit status: 0 after a graceful stop, 1 on a failure to start or\n"
        "serve, 2 on a bad command line.\n";

static ts_rpc_server *the_server;

static void on_signal(int sig) {
        (void) sig;
        if (the_server)
                ts_rpc_server_shutdown(the_server);
}

_printf_(1, 2) static int usage_error(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "thinsnapd: ");
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry 'thinsnapd --help'.\n");
        return 2;
}


static void set_opt(char **dst, const char *v) {
        free(*dst);
        *dst = strdup(v);
}

static int remove_device(void *snapshotter, const char *device, const char *ns, const char *name,
                         ts_error **err) {
        return ts_snapshotter_remove_device(snapshotter, device, ns, name, err);
}

/* The provisioner's settings: the command line wins over the file. */
static int start_provisioner(const ts_config *cli, const ts_config *file,
                             const ts_snapshotter_config *sc, ts_snapshotter *snap,
                             ts_prov_daemon **ret, ts_error **err) {
        if (cli->no_provisioner || file->no_provisioner)
                return 0;
        ts_prov_daemon_config pc = {
                .prov = {
                        .containerd_address = cli->containerd_address ? cli->containerd_address
                                                                      : file->containerd_address,
                        .namespace = cli->namespace ? cli->namespace : file->namespace,
                        .snapshotter = cli->snapshotter_name ? cli->snapshotter_name
                                                             : file->snapshotter_name,
                        .max_warms = (unsigned) (cli->max_warms ? cli->max_warms : file->max_warms),
                        .registry_timeout_s = ((cli->registry_timeout_ms ? cli->registry_timeout_ms
                                                                         : file->registry_timeout_ms) +
                                               999) / 1000,
                        .pool = sc->pool,
                        .async_remove = sc->async_remove,
                        .vm_spares = (unsigned) (cli->vm_spares_set ? cli->vm_spares : file->vm_spares),
                        .remove_device = remove_device,
                        .remove_device_ctx = snap,
                },
                .address = cli->provisioner_address ? cli->provisioner_address
                                                    : file->provisioner_address,
                .socket_group = cli->provisioner_group ? cli->provisioner_group
                                                       : file->provisioner_group,
        };
        if (pc.prov.vm_spares > sc->spares_max)
                log_warn("--vm-spares %u is more than --spares-max %u: a VM's image keeps %u spares",
                         pc.prov.vm_spares, (unsigned) sc->spares_max, (unsigned) sc->spares_max);
        return ts_prov_daemon_start(&pc, ret, err);
}

/* Serves the metrics endpoint listening since the start. */
static int serve_metrics(ts_metrics *m, const char *pool, ts_snapshotter *snap, ts_rpc_server *server,
                         ts_prov_daemon *prov, ts_error **err) {
        ts_metrics_config mc = {
                .pool = pool,
                .snapshotter = snap,
                .prov = prov ? ts_prov_daemon_prov(prov) : NULL,
                .servers = { server, prov ? ts_prov_daemon_server(prov) : NULL },
                .server_names = { "snapshots", "provisioner" },
        };
        int r = ts_metrics_serve(m, &mc, err);
        if (r >= 0)
                ts_log_emit(TS_LOG_INFO, 0, NULL, TS_LOG_FIELDS({ "address", ts_metrics_address(m) }),
                            "serving metrics");
        return r;
}

enum {
        OPT_ROOT = 256,
        OPT_POOL,
        OPT_ADDRESS,
        OPT_BASE_SIZE,
        OPT_CONFIG,
        OPT_SOCKET_MODE,
        OPT_ASYNC,
        OPT_DISCARD,
        OPT_MKFS,
        OPT_STORE_MAP_MAX,
        OPT_MAX_LABELS,
        OPT_MAX_LABEL_BYTES,
        OPT_PROV_ADDRESS,
        OPT_PROV_GROUP,
        OPT_CONTAINERD,
        OPT_NAMESPACE,
        OPT_SNAPSHOTTER_NAME,
        OPT_MAX_WARMS,
        OPT_SPARES_MAX,
        OPT_VM_SPARES,
        OPT_REGISTRY_TIMEOUT,
        OPT_NO_PROV,
        OPT_LOG_LEVEL,
        OPT_METRICS,
        OPT_VERSION,
        OPT_RPC, /* + the index in ts_config_rpc_keys */
};

/* The fixed options, then one per limit of the gRPC server. */
static struct option *long_options(const struct option *fixed, size_t n_fixed) {
        struct option *o = calloc(n_fixed + ts_config_n_rpc_keys + 1, sizeof(*o));
        if (!o)
                return NULL;
        memcpy(o, fixed, n_fixed * sizeof(*o));
        for (size_t i = 0; i < ts_config_n_rpc_keys; i++)
                o[n_fixed + i] = (struct option) { ts_config_rpc_keys[i].flag, required_argument,
                                                   NULL, OPT_RPC + (int) i };
        return o;
}

/* Each connection takes a descriptor: the soft limit (often 1024) is raised
 * to the hard one, and a max_connections above what that leaves is said. */
static void raise_nofile(uint32_t max_connections) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
                (void) getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t) max_connections + 64)
                log_warn("max_connections %" PRIu32 " is close to the descriptor limit %llu: "
                         "connections past it are closed at once",
                         max_connections, (unsigned long long) rl.rlim_cur);
}

/* The server's options: the command line's over the file's over the
 * defaults. Returns 0, or -EINVAL (said on stderr). */
static int server_options(const ts_config *file, const ts_config *cli,
                          ts_rpc_server_options *ret) {
        ts_rpc_server_options o = file->rpc;
        ts_config_merge_rpc(&o, &cli->rpc);
        if (ts_rpc_server_options_resolve(&o) < 0) {
                usage_error("--connection-window must be at least the largest message and its "
                            "prefix (%" PRIu32 " bytes)",
                            o.max_message_size + 5);
                return -EINVAL;
        }
        *ret = o;
        return 0;
}

/* The command line as given. */
typedef struct args {
        ts_config cli;
        const char *config_path;
        bool async, discard, mode_set;
} args;

/* One limit of the gRPC server from the command line: 0, or exit code 2. */
static int take_rpc_opt(int c, const char *arg, args *a) {
        const ts_config_rpc_key *k = &ts_config_rpc_keys[c - OPT_RPC];
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", k->flag);
        _cleanup_error_ ts_error *err = NULL;
        if (ts_config_set_rpc(&a->cli.rpc, k, flag, arg, &err) < 0)
                return usage_error("%s", ts_error_message(err, -EINVAL));
        return 0;
}

/* One option that takes a number, a size or a level: 0, or exit code 2. */
static int take_value_opt(int c, const char *arg, args *a) {
        ts_config *cli = &a->cli;
        switch (c) {
        case OPT_REGISTRY_TIMEOUT:
                return ts_units_parse_duration_ms(arg, &cli->registry_timeout_ms) < 0 ?
                        usage_error("--registry-timeout '%s' is not a duration (500ms, 30s, 10m)", arg) : 0;
        case OPT_SPARES_MAX:
                a->cli.spares_max_set = true;
                return ts_units_parse_u64(arg, &cli->spares_max) < 0 || cli->spares_max > 1024 ?
                        usage_error("--spares-max '%s' is not a number from 0 to 1024", arg) : 0;
        case OPT_VM_SPARES:
                a->cli.vm_spares_set = true;
                return ts_units_parse_u64(arg, &cli->vm_spares) < 0 || cli->vm_spares > 1024 ?
                        usage_error("--vm-spares '%s' is not a number from 0 to 1024", arg) : 0;
        case OPT_MAX_WARMS:
                return ts_units_parse_u64(arg, &cli->max_warms) < 0 || cli->max_warms == 0 || cli->max_warms > 64 ?
                        usage_error("--max-warms '%s' is not a number from 1 to 64", arg) : 0;
        case OPT_BASE_SIZE:
                return ts_units_parse_size(arg, &cli->base_size) < 0 || cli->base_size == 0 ?
                        usage_error("--base-size '%s' is not a size (examples: 64M, 10G)", arg) : 0;
        case OPT_STORE_MAP_MAX:
                return ts_units_parse_size(arg, &cli->store_map_max) < 0 || cli->store_map_max == 0 ?
                        usage_error("--store-map-max '%s' is not a size (examples: 512M, 4G)", arg) : 0;
        case OPT_MAX_LABELS:
                return ts_units_parse_u64(arg, &cli->max_labels) < 0 || cli->max_labels == 0 ||
                                       cli->max_labels > TS_LABEL_MAX_COUNT_LIMIT ?
                        usage_error("--max-labels '%s' is not a number from 1 to 1048576", arg) : 0;
        case OPT_MAX_LABEL_BYTES:
                return ts_units_parse_size(arg, &cli->max_label_bytes) < 0 || cli->max_label_bytes < TS_LABEL_MAX_SIZE ||
                                       cli->max_label_bytes > TS_LABEL_MAX_BYTES_LIMIT ?
                        usage_error("--max-label-bytes '%s' is not a size from 4K to 4M", arg) : 0;
        case OPT_SOCKET_MODE:
                a->mode_set = true;
                return ts_units_parse_mode(arg, &cli->socket_mode) < 0 ?
                        usage_error("--socket-mode '%s' is not an octal mode", arg) : 0;
        default: /* OPT_LOG_LEVEL */
                cli->log_level_set = true;
                return ts_log_parse_level(arg, &cli->log_level) < 0 ?
                        usage_error("--log-level '%s': use error, warn, info, debug or trace", arg) : 0;
        }
}

/* One option: 0, or exit code 2. */
static int take_opt(int c, const char *arg, args *a) {
        ts_config *cli = &a->cli;
        switch (c) {
        case OPT_ROOT: set_opt(&cli->root, arg); return 0;
        case OPT_POOL: set_opt(&cli->pool, arg); return 0;
        case OPT_ADDRESS: set_opt(&cli->address, arg); return 0;
        case OPT_MKFS: set_opt(&cli->mkfs, arg); return 0;
        case OPT_PROV_ADDRESS: set_opt(&cli->provisioner_address, arg); return 0;
        case OPT_PROV_GROUP: set_opt(&cli->provisioner_group, arg); return 0;
        case OPT_CONTAINERD: set_opt(&cli->containerd_address, arg); return 0;
        case OPT_NAMESPACE: set_opt(&cli->namespace, arg); return 0;
        case OPT_SNAPSHOTTER_NAME: set_opt(&cli->snapshotter_name, arg); return 0;
        case OPT_METRICS: set_opt(&cli->metrics_address, arg); return 0;
        case OPT_NO_PROV: cli->no_provisioner = true; return 0;
        case OPT_CONFIG: a->config_path = arg; return 0;
        case OPT_ASYNC: a->async = true; return 0;
        case OPT_DISCARD: a->discard = true; return 0;
        default: return c >= OPT_RPC ? take_rpc_opt(c, arg, a) : take_value_opt(c, arg, a);
        }
}

/* Returns 0, -1 (help or version printed) or exit code 2. */
static int parse_args(int argc, char **argv, args *a) {
        static const struct option fixed[] = {
                { "root", required_argument, NULL, OPT_ROOT },
                { "pool", required_argument, NULL, OPT_POOL },
                { "address", required_argument, NULL, OPT_ADDRESS },
                { "base-size", required_argument, NULL, OPT_BASE_SIZE },
                { "config", required_argument, NULL, OPT_CONFIG },
                { "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
                { "async-remove", no_argument, NULL, OPT_ASYNC },
                { "discard", no_argument, NULL, OPT_DISCARD },
                { "mkfs", required_argument, NULL, OPT_MKFS },
                { "store-map-max", required_argument, NULL, OPT_STORE_MAP_MAX },
                { "max-labels", required_argument, NULL, OPT_MAX_LABELS },
                { "max-label-bytes", required_argument, NULL, OPT_MAX_LABEL_BYTES },
                { "provisioner-address", required_argument, NULL, OPT_PROV_ADDRESS },
                { "provisioner-group", required_argument, NULL, OPT_PROV_GROUP },
                { "containerd-address", required_argument, NULL, OPT_CONTAINERD },
                { "namespace", required_argument, NULL, OPT_NAMESPACE },
                { "snapshotter-name", required_argument, NULL, OPT_SNAPSHOTTER_NAME },
                { "max-warms", required_argument, NULL, OPT_MAX_WARMS },
                { "spares-max", required_argument, NULL, OPT_SPARES_MAX },
                { "vm-spares", required_argument, NULL, OPT_VM_SPARES },
                { "registry-timeout", required_argument, NULL, OPT_REGISTRY_TIMEOUT },
                { "no-provisioner", no_argument, NULL, OPT_NO_PROV },
                { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
                { "metrics-address", required_argument, NULL, OPT_METRICS },
                { "version", no_argument, NULL, OPT_VERSION },
                { "help", no_argument, NULL, 'h' },
        };
        _cleanup_free_ struct option *opts = long_options(fixed, TS_ARRAY_SIZE(fixed));
        if (!opts)
                return usage_error("out of memory");
        opterr = 0;
        int c, r;
        while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                if (c == 'h' || c == OPT_VERSION) {
                        if (c == 'h')
                                fputs(help, stdout);
                        else
                                printf("thinsnapd %s\n", TS_VERSION);
                        return -1;
                }
                if (c == ':')
                        return usage_error("%s needs a value", argv[optind - 1]);
                if (c == '?')
                        return usage_error("unknown option '%s'", argv[optind - 1]);
                if ((r = take_opt(c, optarg, a)))
                        return r;
        }
        if (optind < argc)
                return usage_error("unexpected argument '%s'", argv[optind]);
        return 0;
}

/* What the daemon runs with: the command line's over the file's over the
 * defaults. */
typedef struct settings {
        const char *address, *metrics_address;
        uint32_t mode;
        ts_rpc_server_options rpc;
        ts_snapshotter_config sc;
} settings;

/* Returns 0 or exit code 2 (said on stderr). */
static int resolve(const args *a, const ts_config *file, settings *s) {
        const ts_config *cli = &a->cli;
        if (cli->log_level_set)
                ts_log_set_level(cli->log_level);
        else if (file->log_level_set)
                ts_log_set_level(file->log_level);
        *s = (settings) {
                .address = cli->address ? cli->address : file->address,
                .metrics_address = cli->metrics_address ? cli->metrics_address : file->metrics_address,
                .mode = a->mode_set ? cli->socket_mode : file->socket_mode,
                .sc = {
                        .root = cli->root ? cli->root : file->root,
                        .pool = cli->pool ? cli->pool : file->pool,
                        .base_size = cli->base_size ? cli->base_size
                                     : file->base_size ? file->base_size : DEFAULT_BASE_SIZE,
                        .mkfs = cli->mkfs ? cli->mkfs : file->mkfs,
                        .async_remove = a->async || file->async_remove,
                        .discard_on_remove = a->discard || file->discard_on_remove,
                        .spares_max = (uint32_t) (cli->spares_max_set   ? cli->spares_max
                                                  : file->spares_max_set ? file->spares_max
                                                                         : DEFAULT_SPARES_MAX),
                        .store_map_max = cli->store_map_max ? cli->store_map_max : file->store_map_max,
                        .labels = {
                                .max_count = (uint32_t) (cli->max_labels ? cli->max_labels : file->max_labels),
                                .max_bytes = cli->max_label_bytes ? cli->max_label_bytes : file->max_label_bytes,
                        },
                },
        };
        const char *missing = !s->sc.root ? "--root" : !s->sc.pool ? "--pool" : !s->address ? "--address" : NULL;
        if (missing)
                return usage_error("%s is required", missing);
        return server_options(file, cli, &s->rpc) < 0 ? 2 : 0;
}

/* The Snapshots service listening on its socket. */
static int listen_snapshots(const settings *s, ts_snapshotter *snap, ts_rpc_server **ret, ts_error **err) {
        /* Handlers run on libuv's pool (4 threads unless told): enough room
         * for a burst of Prepares to overlap their kernel round trips. */
        setenv("UV_THREADPOOL_SIZE", "16", 0);
        raise_nofile(s->rpc.max_connections);
        ts_rpc_server *server = NULL;
        int r = ts_rpc_server_new(&s->rpc, &server);
        if (r < 0)
                return ts_error_set(err, r, "gRPC server");
        if ((r = ts_service_register(server, snap)) < 0)
                ts_error_set(err, r, "register the Snapshots service");
        if (r >= 0 && (r = ts_mkdir_parents(s->address, 0711)) < 0)
                ts_error_set(err, r, "create the directory of %s", s->address);
        if (r >= 0)
                r = ts_rpc_server_listen(server, s->address, s->mode, err);
        if (r < 0) {
                ts_rpc_server_free(server);
                return r;
        }
        *ret = server;
        return 0;
}

/* Runs the server until SIGTERM or SIGINT. */
static int run_server(const settings *s, ts_rpc_server *server, ts_error **err) {
        the_server = server;
        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        char size[32];
        snprintf(size, sizeof size, "%llu", (unsigned long long) s->sc.base_size);
        ts_log_emit(TS_LOG_INFO, 0, NULL,
                    TS_LOG_FIELDS({ "address", s->address }, { "pool", s->sc.pool }, { "root", s->sc.root },
                                  { "base_size", size }),
                    "serving");
        int r = ts_rpc_server_run(server, err);
        the_server = NULL;
        if (r < 0) {
                log_error_err(r, *err, "serving stopped");
                return r;
        }
        log_info("stopped");
        return 0;
}

/* Serves until a signal; returns the exit code. */
static int serve(const args *a, const ts_config *file, const settings *s) {
        ts_error *err = NULL;
        ts_snapshotter *snap = NULL;
        ts_rpc_server *server = NULL;
        ts_prov_daemon *prov = NULL;
        ts_metrics *metrics = NULL;
        int r = 0, exit_code = 1;
        /* Taken first: an address that cannot be served stops the start
         * before the pool is touched. */
        if (s->metrics_address && (r = ts_metrics_listen(s->metrics_address, &metrics, &err)) < 0)
                log_error_err(r, err, "cannot serve metrics");
        else if ((r = ts_snapshotter_open(&s->sc, &snap, &err)) < 0)
                log_error_err(r, err, "cannot start");
        else if ((r = listen_snapshots(s, snap, &server, &err)) < 0)
                log_error_err(r, err, "cannot serve on %s", s->address);
        else if ((r = start_provisioner(&a->cli, file, &s->sc, snap, &prov, &err)) < 0)
                log_error_err(r, err, "cannot start the provisioner");
        else if (metrics && (r = serve_metrics(metrics, s->sc.pool, snap, server, prov, &err)) < 0)
                log_error_err(r, err, "cannot serve metrics");
        if (r >= 0) {
                r = run_server(s, server, &err);
                exit_code = r < 0 ? 1 : 0;
        }
        ts_metrics_stop(metrics);
        ts_prov_daemon_stop(prov);
        ts_rpc_server_free(server);
        if (exit_code == 0)
                unlink(s->address);
        ts_snapshotter_close(snap);
        ts_error_free(err);
        return exit_code;
}

/* glibc gives each thread that allocates under contention an arena of its own (up to 8 per
 * CPU), and what a thread frees stays resident in its arena: with the provisioner's download,
 * unpack and handler threads that held ~13 MiB after one warm. These threads wait on
 * containerd and the registry, not on malloc: two arenas are enough. MALLOC_ARENA_MAX, when
 * set, decides instead. */
static void limit_malloc_arenas(void) {
        if (!getenv("MALLOC_ARENA_MAX"))
                mallopt(M_ARENA_MAX, 2);
}

/* With transparent huge pages "always" (Debian's kernels), a thread's stack or a malloc arena
 * that touches one byte of a 2 MiB-aligned range gets the whole 2 MiB resident: measured at
 * idle, 11.7 MiB with huge pages and 7.6 MiB without. Nothing here gains from huge pages. */
static void refuse_huge_pages(void) {
        if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) < 0)
                log_debug_errno(-errno, "transparent huge pages stay on for thinsnapd");
}

int main(int argc, char **argv) {
        args a = { 0 };
        ts_config file = { .socket_mode = 0660 };
        settings s;
        limit_malloc_arenas();
        refuse_huge_pages();
        int code = parse_args(argc, argv, &a);
        if (code == 0 && a.config_path) {
                _cleanup_error_ ts_error *err = NULL;
                int r = ts_config_load(a.config_path, &file, &err);
                if (r < 0) {
                        fprintf(stderr, "thinsnapd: %s\n", ts_error_message(err, r));
                        code = 2;
                }
        }
        if (code == 0)
                code = resolve(&a, &file, &s);
        if (code == 0)
                code = serve(&a, &file, &s);
        ts_config_done(&file);
        ts_config_done(&a.cli);
        return code < 0 ? 0 : code;
}
