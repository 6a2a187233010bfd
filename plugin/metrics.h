/* thinsnapd's metrics: Prometheus' text exposition format (0.0.4) over
 * HTTP, GET /metrics, served by libmicrohttpd on a thread of its own, on an
 * address given (none: off). Every figure is read when scraped
 * (ts_metrics_gather): the pool's status from the kernel, snapshots from the
 * store, the gRPC servers' own counters (ts_rpc_server_stats), calls by
 * method (common/opstats.h), the provisioner's warms, the process's resident
 * memory; then formatted by a pure function (ts_metrics_render). */
#pragma once

#include "common/error.h"
#include "common/opstats.h"
#include "plugin/snapshotter.h"
#include "provision/provisioner.h"
#include "rpc/server.h"

#define TS_METRICS_MAX_SERVERS 4

typedef struct ts_metrics_config {
        const char *pool;              /* dm name of the pool; NULL: no pool figures */
        ts_snapshotter *snapshotter;   /* NULL: no snapshot figures */
        ts_prov *prov;                 /* NULL: no provisioner figures */
        ts_rpc_server *servers[TS_METRICS_MAX_SERVERS]; /* NULL entries are skipped */
        const char *server_names[TS_METRICS_MAX_SERVERS]; /* their server="" label */
} ts_metrics_config;

/* What one scrape shows. A NULL name, or a false has_ flag, leaves that
 * family out. */
typedef struct ts_metrics_figures {
        const char *pool;
        uint64_t data_used, data_size, meta_used, meta_size;   /* bytes */
        bool out_of_data_space, read_only, needs_check;
        bool has_snapshots;
        uint64_t snapshots[TS_KIND_COMMITTED + 1];             /* by ts_snapshot_kind */
        uint64_t spares;                                       /* with has_snapshots */
        const char *server_names[TS_METRICS_MAX_SERVERS];
        ts_rpc_server_stats servers[TS_METRICS_MAX_SERVERS];
        ts_opstat *calls;                                     /* owned: free() */
        size_t n_calls;
        bool has_warms;
        uint64_t warms[TS_PROV_WARM_FAILED + 1];               /* by ts_prov_warm_state */
        uint64_t resident_bytes;                               /* 0: unknown, left out */
        uint64_t errors;                                       /* sources scrapes could not read */
} ts_metrics_figures;

/* Reads every source cfg names into *ret. A source that cannot be read (the
 * pool gone, say) is left out and counted in ret->errors, which counts for
 * the life of the process. Returns 0 or -ENOMEM. */
int ts_metrics_gather(const ts_metrics_config *cfg, ts_metrics_figures *ret);

/* Frees what ts_metrics_gather took. */
void ts_metrics_figures_done(ts_metrics_figures *f);

/* Formats f in the text format, families in a fixed order: *ret (malloc()ed,
 * NUL-terminated) of *ret_len bytes. Pure. Returns 0 or -ENOMEM. */
int ts_metrics_render(const ts_metrics_figures *f, char **ret, size_t *ret_len);

typedef struct ts_metrics ts_metrics;

/* Listens on address ("127.0.0.1:9464", "[::1]:9464", "localhost:0": port
 * 0 picks one) without serving yet, so that a daemon can refuse to start
 * before it does anything else. Returns 0, -EINVAL (not HOST:PORT, or a
 * host that does not resolve: the message says which), -EADDRINUSE, or
 * -errno of socket/bind/listen; the message names the address. */
int ts_metrics_listen(const char *address, ts_metrics **ret, ts_error **err);

/* Serves GET /metrics from the sources cfg names, on a thread of its own.
 * cfg's pointers must outlive the endpoint. Returns 0 or -errno of
 * libmicrohttpd's start. */
int ts_metrics_serve(ts_metrics *m, const ts_metrics_config *cfg, ts_error **err);

/* The address it listens on, as HOST:PORT with the port chosen. */
const char *ts_metrics_address(const ts_metrics *m);

/* Stops serving (a scrape in progress finishes), closes, frees. Accepts NULL;
 * returns NULL. */
ts_metrics *ts_metrics_stop(ts_metrics *m);
