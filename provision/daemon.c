#include "daemon.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/log.h"
#include "provision/service.h"
#include "rpc/server.h"

/* Calls wait on containerd, which does the work: a burst of VMs gets a thread
 * each (threads start as calls wait and end when idle). */
#define DEFAULT_HANDLER_THREADS 64

struct ts_prov_daemon {
        ts_prov *prov;
        ts_rpc_server *server;
        char *address;
        pthread_t thread;
        bool running;
};

static void *serve(void *arg) {
        ts_prov_daemon *d = arg;
        ts_error *err = NULL;
        int r = ts_rpc_server_run(d->server, &err);
        if (r < 0)
                log_error_err(r, err, "provisioner stopped serving");
        ts_error_free(err);
        return NULL;
}


static int set_group(const char *path, const char *group, ts_error **err) {
        if (!group)
                return 0;
        struct group *g = getgrnam(group);
        if (!g)
                return ts_error_setf_plain(err, ENOENT, "no group %s for %s", group, path);
        if (chown(path, (uid_t) -1, g->gr_gid) < 0)
                return ts_error_set(err, errno, "give %s to group %s", path, group);
        return 0;
}

static int listen_on(ts_prov_daemon *d, const ts_prov_daemon_config *cfg, ts_error **err) {
        ts_rpc_server_options o = {
                .handler_threads = cfg->handler_threads ? cfg->handler_threads
                                                        : DEFAULT_HANDLER_THREADS,
        };
        int r = ts_rpc_server_new(&o, &d->server);
        if (r >= 0)
                r = ts_prov_service_register(d->server, d->prov);
        if (r >= 0 && (r = ts_mkdir_parents(d->address, 0711)) < 0)
                ts_error_set(err, r, "create the directory of %s", d->address);
        if (r >= 0)
                r = ts_rpc_server_listen(d->server, d->address,
                                         cfg->socket_mode ? cfg->socket_mode : 0660, err);
        if (r >= 0)
                r = set_group(d->address, cfg->socket_group, err);
        return r < 0 ? ts_error_prefix(err, r, "provisioner socket %s", d->address) : 0;
}

int ts_prov_daemon_start(const ts_prov_daemon_config *cfg, ts_prov_daemon **ret, ts_error **err) {
        ts_prov_daemon *d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->address = strdup(cfg->address ? cfg->address : TS_PROV_DEFAULT_ADDRESS);
        int r = d->address ? 0 : -ENOMEM;
        if (r >= 0)
                r = ts_prov_new(&cfg->prov, &d->prov, err);
        if (r >= 0)
                r = listen_on(d, cfg, err);
        if (r >= 0 && (r = -pthread_create(&d->thread, NULL, serve, d)) < 0)
                ts_error_set(err, r, "start the provisioner's thread");
        if (r < 0) {
                ts_prov_daemon_stop(d);
                return r;
        }
        d->running = true;
        *ret = d;
        return 0;
}

ts_prov_daemon *ts_prov_daemon_stop(ts_prov_daemon *d) {
        if (!d)
                return NULL;
        if (d->running) {
                ts_rpc_server_shutdown(d->server);
                pthread_join(d->thread, NULL);
                unlink(d->address);
        }
        ts_rpc_server_free(d->server);
        ts_prov_free(d->prov);
        free(d->address);
        free(d);
        return NULL;
}

ts_prov *ts_prov_daemon_prov(ts_prov_daemon *d) {
        return d->prov;
}

ts_rpc_server *ts_prov_daemon_server(ts_prov_daemon *d) {
        return d->server;
}
