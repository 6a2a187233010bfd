/* The provisioner's service without thinsnapd, for host tests against any
 * containerd snapshotter (the host has no device-mapper):
 *
 *   prov-server SOCKET CONTAINERD_SOCKET NAMESPACE SNAPSHOTTER
 *
 * Serves thinsnap.v1.Provisioner on SOCKET until SIGTERM or SIGINT.
 * $TS_LOG_LEVEL and $TS_REGISTRY_TIMEOUT (seconds) set the obvious. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"
#include "provision/daemon.h"

int main(int argc, char **argv) {
        if (argc != 5) {
                fprintf(stderr, "usage: prov-server SOCKET CONTAINERD_SOCKET NAMESPACE SNAPSHOTTER\n");
                return 2;
        }
        const char *level = getenv("TS_LOG_LEVEL");
        const char *timeout = getenv("TS_REGISTRY_TIMEOUT");
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
                          .registry_timeout_s = timeout ? (unsigned) strtoul(timeout, NULL, 10) : 0 },
                .address = argv[1],
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
