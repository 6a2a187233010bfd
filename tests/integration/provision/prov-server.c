/* The provisioner's service without thinsnapd, for host tests against any
 * containerd snapshotter (the host has no device-mapper):
 *
 *   prov-server SOCKET CONTAINERD_SOCKET NAMESPACE SNAPSHOTTER
 *
 * Serves thinsnap.v1.Provisioner on SOCKET until SIGTERM or SIGINT.
 * $TS_LOG_LEVEL and $TS_REGISTRY_TIMEOUT (seconds) set the obvious; the
 * limits of prepared images come from TS_PROV_MAX_LAYERS,
 * TS_PROV_MAX_COMPRESSED_BYTES, TS_PROV_MAX_UNPACKED_BYTES,
 * TS_PROV_MAX_INODES and TS_PROV_MAX_AGENT_BYTES when set. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/log.h"
#include "common/units.h"
#include "provision/daemon.h"

static uint64_t env_u64(const char *name) {
        const char *v = getenv(name);
        uint64_t n = 0;
        if (v && ts_units_parse_u64(v, &n) < 0) {
                fprintf(stderr, "prov-server: %s='%s' is not a number\n", name, v);
                exit(2);
        }
        return n;
}

int main(int argc, char **argv) {
        if (argc != 5) {
                fprintf(stderr, "usage: prov-server SOCKET CONTAINERD_SOCKET NAMESPACE SNAPSHOTTER\n");
                return 2;
        }
        const char *level = getenv("TS_LOG_LEVEL");
        enum ts_log_level l;
        if (level && ts_log_parse_level(level, &l) >= 0)
                ts_log_set_level(l);
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        pthread_sigmask(SIG_BLOCK, &ss, NULL);
        signal(SIGPIPE, SIG_IGN);
        ts_prov_daemon_config cfg = {
                .prov = { .containerd_address = argv[2], .namespace = argv[3], .snapshotter = argv[4],
                          .registry_timeout_s = (unsigned) env_u64("TS_REGISTRY_TIMEOUT") },
                .address = argv[1],
        };
        cfg.prov.limits = (ts_prov_limits) {
                .max_layers = (unsigned) env_u64("TS_PROV_MAX_LAYERS"),
                .max_compressed_bytes = env_u64("TS_PROV_MAX_COMPRESSED_BYTES"),
                .max_unpacked_bytes = env_u64("TS_PROV_MAX_UNPACKED_BYTES"),
                .max_inodes = env_u64("TS_PROV_MAX_INODES"),
                .max_agent_bytes = env_u64("TS_PROV_MAX_AGENT_BYTES"),
        };
        ts_error *err = NULL;
        ts_prov_daemon *d = NULL;
        int r = ts_prov_daemon_start(&cfg, &d, &err);
        if (r < 0) {
                fprintf(stderr, "prov-server: %s\n", ts_error_message(err, r));
                ts_error_free(err);
                return 1;
        }
        int sig;
        sigwait(&ss, &sig);
        ts_prov_daemon_stop(d);
        return 0;
}
