/* The provisioner as thinsnapd serves it: a ts_prov and the gRPC server of
 * its thinsnap.v1.Provisioner service on its own socket, run on a thread of
 * its own. Its handlers run on the server's own worker threads, never on
 * the pool that serves the Snapshots calls containerd makes back into
 * thinsnapd while a provisioner call waits on containerd. */
#pragma once

#include <sys/types.h>

#include "common/error.h"
#include "provision/provisioner.h"
#include "rpc/server.h"

typedef struct ts_prov_daemon ts_prov_daemon;

typedef struct ts_prov_daemon_config {
        ts_prov_config prov;
        const char *address;      /* the service's socket */
        mode_t socket_mode;       /* 0: 0660 */
        const char *socket_group; /* NULL: the daemon's group */
        unsigned handler_threads; /* at most; 0: 64 */
} ts_prov_daemon_config;

#define TS_PROV_DEFAULT_ADDRESS "/run/thinsnap/provisioner.sock"

/* Creates the provisioner, listens on the socket (its directory is made)
 * and starts serving. Returns 0, -ENOENT (no such group), or the errors of
 * ts_prov_new() and ts_rpc_server_listen(). */
int ts_prov_daemon_start(const ts_prov_daemon_config *cfg, ts_prov_daemon **ret, ts_error **err);

/* The provisioner and the server of its service (for metrics). */
ts_prov *ts_prov_daemon_prov(ts_prov_daemon *d);
ts_rpc_server *ts_prov_daemon_server(ts_prov_daemon *d);

/* Stops serving (calls in flight finish), stops the provisioner, unlinks
 * the socket, frees. Accepts NULL; returns NULL. */
ts_prov_daemon *ts_prov_daemon_stop(ts_prov_daemon *d);
