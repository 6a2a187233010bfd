/* thinsnapd: a containerd proxy snapshotter on a device-mapper thin pool. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/log.h"
#include "common/parse.h"
#include "plugin/config.h"
#include "plugin/metrics.h"
#include "plugin/service.h"
#include "plugin/snapshotter.h"
#include "provision/daemon.h"
#include "rpc/server.h"

#define DEFAULT_BASE_SIZE (10ULL << 30)

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

/* The provisioner's settings: the command line wins over the file. */
static int start_provisioner(const ts_config *cli, const ts_config *file,
                             const char *pool, bool async_remove, ts_prov_daemon **ret,
                             ts_error **err) {
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
                        .pool = pool,
                        .async_remove = async_remove,
                },
                .address = cli->provisioner_address ? cli->provisioner_address
                                                    : file->provisioner_address,
                .socket_group = cli->provisioner_group ? cli->provisioner_group
                                                       : file->provisioner_group,
        };
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

/* A bad command line: say why, then leave through the common clean-up. */
#define USAGE(...)                                                                             \
        do {                                                                                   \
                exit_code = usage_error(__VA_ARGS__);                                          \
                goto out;                                                                      \
        } while (0)

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
        OPT_PROV_ADDRESS,
        OPT_PROV_GROUP,
        OPT_CONTAINERD,
        OPT_NAMESPACE,
        OPT_SNAPSHOTTER_NAME,
        OPT_MAX_WARMS,
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

int main(int argc, char **argv) {
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
                { "provisioner-address", required_argument, NULL, OPT_PROV_ADDRESS },
                { "provisioner-group", required_argument, NULL, OPT_PROV_GROUP },
                { "containerd-address", required_argument, NULL, OPT_CONTAINERD },
                { "namespace", required_argument, NULL, OPT_NAMESPACE },
                { "snapshotter-name", required_argument, NULL, OPT_SNAPSHOTTER_NAME },
                { "max-warms", required_argument, NULL, OPT_MAX_WARMS },
                { "registry-timeout", required_argument, NULL, OPT_REGISTRY_TIMEOUT },
                { "no-provisioner", no_argument, NULL, OPT_NO_PROV },
                { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
                { "metrics-address", required_argument, NULL, OPT_METRICS },
                { "version", no_argument, NULL, OPT_VERSION },
                { "help", no_argument, NULL, 'h' },
        };
        ts_config file = { .socket_mode = 0660 };
        ts_config cli = { 0 };
        const char *config_path = NULL;
        bool async = false, discard = false, mode_set = false;
        int exit_code = 1;
        ts_error *err = NULL;
        ts_snapshotter *snap = NULL;
        ts_rpc_server *server = NULL;
        ts_prov_daemon *prov = NULL;
        ts_metrics *metrics = NULL;
        int r = 0;
        const char *address = NULL;
        ts_rpc_server_options rpc_opts;
        int c;
        _cleanup_free_ struct option *opts = long_options(fixed, TS_ARRAY_SIZE(fixed));
        if (!opts)
                return 1;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
                if (c >= OPT_RPC) {
                        const ts_config_rpc_key *k = &ts_config_rpc_keys[c - OPT_RPC];
                        char flag[64];
                        snprintf(flag, sizeof(flag), "--%s", k->flag);
                        if (ts_config_set_rpc(&cli.rpc, k, flag, optarg, &err) < 0)
                                USAGE("%s", ts_error_message(err, -EINVAL));
                        continue;
                }
                switch (c) {
                case 'h': fputs(help, stdout); exit_code = 0; goto out;
                case OPT_VERSION: printf("thinsnapd %s\n", TS_VERSION); exit_code = 0; goto out;
                case OPT_ROOT: free(cli.root); cli.root = strdup(optarg); break;
                case OPT_POOL: free(cli.pool); cli.pool = strdup(optarg); break;
                case OPT_ADDRESS: free(cli.address); cli.address = strdup(optarg); break;
                case OPT_MKFS: free(cli.mkfs); cli.mkfs = strdup(optarg); break;
                case OPT_PROV_ADDRESS: set_opt(&cli.provisioner_address, optarg); break;
                case OPT_PROV_GROUP: set_opt(&cli.provisioner_group, optarg); break;
                case OPT_CONTAINERD: set_opt(&cli.containerd_address, optarg); break;
                case OPT_NAMESPACE: set_opt(&cli.namespace, optarg); break;
                case OPT_SNAPSHOTTER_NAME: set_opt(&cli.snapshotter_name, optarg); break;
                case OPT_METRICS: set_opt(&cli.metrics_address, optarg); break;
                case OPT_NO_PROV: cli.no_provisioner = true; break;
                case OPT_REGISTRY_TIMEOUT:
                        if (ts_parse_duration_ms(optarg, &cli.registry_timeout_ms) < 0)
                                USAGE("--registry-timeout '%s' is not a duration (500ms, 30s, 10m)",
                                      optarg);
                        break;
                case OPT_MAX_WARMS:
                        if (ts_parse_u64(optarg, &cli.max_warms) < 0 || cli.max_warms == 0 ||
                            cli.max_warms > 64)
                                USAGE("--max-warms '%s' is not a number from 1 to 64", optarg);
                        break;
                case OPT_CONFIG: config_path = optarg; break;
                case OPT_ASYNC: async = true; break;
                case OPT_DISCARD: discard = true; break;
                case OPT_BASE_SIZE:
                        if (ts_parse_size(optarg, &cli.base_size) < 0 || cli.base_size == 0)
                                USAGE("--base-size '%s' is not a size (examples: 64M, 10G)",
                                                   optarg);
                        break;
                case OPT_STORE_MAP_MAX:
                        if (ts_parse_size(optarg, &cli.store_map_max) < 0 || cli.store_map_max == 0)
                                USAGE("--store-map-max '%s' is not a size (examples: 512M, 4G)", optarg);
                        break;
                case OPT_SOCKET_MODE:
                        if (ts_parse_mode(optarg, &cli.socket_mode) < 0)
                                USAGE("--socket-mode '%s' is not an octal mode", optarg);
                        mode_set = true;
                        break;
                case OPT_LOG_LEVEL:
                        if (ts_log_parse_level(optarg, &cli.log_level) < 0)
                                USAGE("--log-level '%s': use error, warn, info, debug or trace",
                                                   optarg);
                        cli.log_level_set = true;
                        break;
                case ':': USAGE("%s needs a value", argv[optind - 1]);
                default: USAGE("unknown option '%s'", argv[optind - 1]);
                }
        }
        if (optind < argc)
                USAGE("unexpected argument '%s'", argv[optind]);

        if (config_path && (r = ts_config_load(config_path, &file, &err)) < 0) {
                fprintf(stderr, "thinsnapd: %s\n", ts_error_message(err, r));
                exit_code = 2;
                goto out;
        }
        /* The command line wins over the file. */
        const char *root = cli.root ? cli.root : file.root;
        const char *pool = cli.pool ? cli.pool : file.pool;
        address = cli.address ? cli.address : file.address;
        const char *mkfs = cli.mkfs ? cli.mkfs : file.mkfs;
        uint64_t base_size = cli.base_size ? cli.base_size : file.base_size ? file.base_size : DEFAULT_BASE_SIZE;
        uint32_t mode = mode_set ? cli.socket_mode : file.socket_mode;
        if (cli.log_level_set)
                ts_log_set_level(cli.log_level);
        else if (file.log_level_set)
                ts_log_set_level(file.log_level);
        const char *missing = !root ? "--root" : !pool ? "--pool" : !address ? "--address" : NULL;
        if (missing) {
                exit_code = usage_error("%s is required", missing);
                goto out;
        }
        if (server_options(&file, &cli, &rpc_opts) < 0) {
                exit_code = 2;
                goto out;
        }
        /* Taken first: an address that cannot be served stops the start
         * before the pool is touched. */
        const char *metrics_address = cli.metrics_address ? cli.metrics_address : file.metrics_address;
        if (metrics_address && (r = ts_metrics_listen(metrics_address, &metrics, &err)) < 0) {
                log_error_err(r, err, "cannot serve metrics");
                goto out;
        }

        ts_snapshotter_config sc = {
                .root = root,
                .pool = pool,
                .base_size = base_size,
                .mkfs = mkfs,
                .async_remove = async || file.async_remove,
                .discard_on_remove = discard || file.discard_on_remove,
                .store_map_max = cli.store_map_max ? cli.store_map_max : file.store_map_max,
        };
        r = ts_snapshotter_open(&sc, &snap, &err);
        if (r < 0) {
                log_error_err(r, err, "cannot start");
                goto out;
        }
        /* Handlers run on libuv's pool (4 threads unless told): enough room
         * for a burst of Prepares to overlap their kernel round trips. */
        setenv("UV_THREADPOOL_SIZE", "16", 0);
        raise_nofile(rpc_opts.max_connections);
        r = ts_rpc_server_new(&rpc_opts, &server);
        if (r >= 0)
                r = ts_service_register(server, snap);
        if (r >= 0 && (r = ts_mkdir_parents(address, 0711)) < 0)
                ts_error_set(&err, r, "create the directory of %s", address);
        if (r >= 0)
                r = ts_rpc_server_listen(server, address, mode, &err);
        if (r < 0) {
                log_error_err(r, err, "cannot serve on %s", address);
                goto out;
        }
        if ((r = start_provisioner(&cli, &file, pool, sc.async_remove, &prov, &err)) < 0) {
                log_error_err(r, err, "cannot start the provisioner");
                goto out;
        }
        if (metrics && (r = serve_metrics(metrics, pool, snap, server, prov, &err)) < 0) {
                log_error_err(r, err, "cannot serve metrics");
                goto out;
        }
        the_server = server;
        struct sigaction sa = { .sa_handler = on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);

        char size[32];
        snprintf(size, sizeof size, "%llu", (unsigned long long) base_size);
        ts_log_emit(TS_LOG_INFO, 0, NULL,
                    TS_LOG_FIELDS({ "address", address }, { "pool", pool }, { "root", root }, { "base_size", size }),
                    "serving");
        r = ts_rpc_server_run(server, &err);
        the_server = NULL;
        if (r < 0) {
                log_error_err(r, err, "serving stopped");
                goto out;
        }
        log_info("stopped");
        exit_code = 0;
out:
        ts_metrics_stop(metrics);
        ts_prov_daemon_stop(prov);
        ts_rpc_server_free(server);
        if (address && exit_code == 0)
                unlink(address);
        ts_snapshotter_close(snap);
        ts_error_free(err);
        ts_config_done(&file);
        ts_config_done(&cli);
        return exit_code;
}
