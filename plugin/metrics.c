#include "metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/opstats.h"
#include "devmapper/pool.h"
#include "rpc/status.h"

struct ts_metrics {
        ts_metrics_config cfg;
        struct MHD_Daemon *mhd;
        int fd;                 /* listening, until libmicrohttpd takes it */
        char address[80];
};

/* ---- the text format ---- */

_printf_(2, 3) static int put(ts_buf *b, const char *fmt, ...) {
        char line[512];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof line)
                return -EINVAL;
        return ts_buf_append(b, line, (size_t) n);
}

/* A label value as the format quotes it: \\, \" and \n escaped. */
static void label(const char *v, char *buf, size_t len) {
        size_t n = 0;
        for (; v && *v && n + 3 < len; v++) {
                if (*v == '\\' || *v == '"' || *v == '\n')
                        buf[n++] = '\\';
                buf[n++] = *v == '\n' ? 'n' : *v;
        }
        buf[n] = 0;
}

static int head(ts_buf *b, const char *name, const char *type, const char *help) {
        int r = put(b, "# HELP %s %s\n", name, help);
        return r < 0 ? r : put(b, "# TYPE %s %s\n", name, type);
}

/* One sample per server="" label. */
static int render_rpc_family(ts_buf *b, const ts_metrics_figures *f, const char *name, const char *type,
                             const char *help, size_t offset) {
        int r = head(b, name, type, help);
        for (int i = 0; i < TS_METRICS_MAX_SERVERS && r >= 0; i++) {
                if (!f->server_names[i])
                        continue;
                char s[64];
                label(f->server_names[i], s, sizeof s);
                uint64_t v = *(const uint64_t *) ((const char *) &f->servers[i] + offset);
                r = put(b, "%s{server=\"%s\"} %llu\n", name, s, (unsigned long long) v);
        }
        return r;
}

static int render_rpc(ts_buf *b, const ts_metrics_figures *f) {
        static const struct {
                const char *name, *type, *help;
                size_t offset;
        } fam[] = {
                { "thinsnap_grpc_connections", "gauge", "Connections open.",
                  offsetof(ts_rpc_server_stats, connections) },
                { "thinsnap_grpc_connections_total", "counter", "Connections accepted.",
                  offsetof(ts_rpc_server_stats, connections_total) },
                { "thinsnap_grpc_streams", "gauge", "Streams with a call, open.",
                  offsetof(ts_rpc_server_stats, calls) },
                { "thinsnap_grpc_streams_total", "counter", "Streams opened.",
                  offsetof(ts_rpc_server_stats, calls_total) },
                { "thinsnap_grpc_queued_calls", "gauge", "Calls waiting for a handler thread.",
                  offsetof(ts_rpc_server_stats, queued_calls) },
        };
        int r = 0;
        for (size_t i = 0; i < TS_ARRAY_SIZE(fam) && r >= 0; i++)
                r = render_rpc_family(b, f, fam[i].name, fam[i].type, fam[i].help, fam[i].offset);
        if (r >= 0)
                r = head(b, "thinsnap_grpc_limit_hits_total", "counter",
                         "Times a limit of the server was hit (a connection, stream or call refused or "
                         "closed for it).");
        for (int i = 0; i < TS_METRICS_MAX_SERVERS && r >= 0; i++) {
                if (!f->server_names[i])
                        continue;
                char s[64];
                label(f->server_names[i], s, sizeof s);
                for (int l = 0; l < TS_RPC_LIMIT_N && r >= 0; l++)
                        r = put(b, "thinsnap_grpc_limit_hits_total{server=\"%s\",limit=\"%s\"} %llu\n", s,
                                ts_rpc_limit_name((ts_rpc_limit) l),
                                (unsigned long long) f->servers[i].limit_hits[l]);
        }
        return r;
}

static int render_codes(ts_buf *b, const ts_opstat *o) {
        char svc[64], m[64];
        label(o->service, svc, sizeof svc);
        label(o->method, m, sizeof m);
        int r = 0;
        for (int c = 0; c < TS_OPSTATS_CODES && r >= 0; c++)
                if (o->codes[c])
                        r = put(b, "thinsnap_grpc_handled_total{service=\"%s\",method=\"%s\",code=\"%s\"} %llu\n",
                                svc, m, ts_rpc_status_name(c), (unsigned long long) o->codes[c]);
        return r;
}

static int render_histogram(ts_buf *b, const ts_opstat *o) {
        const char *name = "thinsnap_grpc_handling_seconds";
        char svc[64], m[64];
        label(o->service, svc, sizeof svc);
        label(o->method, m, sizeof m);
        int r = 0;
        for (int i = 0; i < TS_OPSTATS_BUCKETS && r >= 0; i++)
                r = put(b, "%s_bucket{service=\"%s\",method=\"%s\",le=\"%g\"} %llu\n", name, svc, m,
                        ts_opstats_bounds[i], (unsigned long long) o->le[i]);
        if (r >= 0)
                r = put(b, "%s_bucket{service=\"%s\",method=\"%s\",le=\"+Inf\"} %llu\n", name, svc, m,
                        (unsigned long long) o->count);
        if (r >= 0)
                r = put(b, "%s_sum{service=\"%s\",method=\"%s\"} %llu.%09llu\n", name, svc, m,
                        (unsigned long long) (o->sum_ns / 1000000000u),
                        (unsigned long long) (o->sum_ns % 1000000000u));
        if (r >= 0)
                r = put(b, "%s_count{service=\"%s\",method=\"%s\"} %llu\n", name, svc, m,
                        (unsigned long long) o->count);
        return r;
}

static int render_calls(ts_buf *b, const ts_metrics_figures *f) {
        int r = head(b, "thinsnap_grpc_handled_total", "counter",
                     "Calls a service's handlers finished, by method and status code.");
        for (size_t i = 0; i < f->n_calls && r >= 0; i++)
                r = render_codes(b, &f->calls[i]);
        if (r >= 0)
                r = head(b, "thinsnap_grpc_handling_seconds", "histogram",
                         "Time a service's handlers took, by method.");
        for (size_t i = 0; i < f->n_calls && r >= 0; i++)
                r = render_histogram(b, &f->calls[i]);
        return r;
}

static int render_pool(ts_buf *b, const ts_metrics_figures *f) {
        char p[2 * 128 + 1]; /* a dm name (127 bytes at most), every byte escaped */
        label(f->pool, p, sizeof p);
        const struct {
                const char *name, *help;
                uint64_t v;
        } g[] = {
                { "thinsnap_pool_data_used_bytes", "Data space the pool has mapped.", f->data_used },
                { "thinsnap_pool_data_size_bytes", "Data space of the pool.", f->data_size },
                { "thinsnap_pool_metadata_used_bytes", "Metadata space the pool uses.", f->meta_used },
                { "thinsnap_pool_metadata_size_bytes", "Metadata space of the pool.", f->meta_size },
                { "thinsnap_pool_out_of_data_space", "1 when the pool has no data block left.",
                  f->out_of_data_space },
                { "thinsnap_pool_read_only", "1 when the pool is read-only (out of metadata space, or failed).",
                  f->read_only },
                { "thinsnap_pool_needs_check", "1 when the pool's metadata must be repaired.", f->needs_check },
        };
        int r = 0;
        for (size_t i = 0; i < TS_ARRAY_SIZE(g) && r >= 0; i++) {
                r = head(b, g[i].name, "gauge", g[i].help);
                if (r >= 0)
                        r = put(b, "%s{pool=\"%s\"} %llu\n", g[i].name, p, (unsigned long long) g[i].v);
        }
        return r;
}

static int render_counts(ts_buf *b, const char *name, const char *help, const char *label_name,
                         const char *const *values, const uint64_t *n, size_t count) {
        int r = head(b, name, "gauge", help);
        for (size_t i = 0; i < count && r >= 0; i++)
                if (values[i])
                        r = put(b, "%s{%s=\"%s\"} %llu\n", name, label_name, values[i], (unsigned long long) n[i]);
        return r;
}

static int render_tail(ts_buf *b, const ts_metrics_figures *f) {
        int r = 0;
        if (f->resident_bytes) {
                r = head(b, "process_resident_memory_bytes", "gauge", "Resident memory of thinsnapd.");
                if (r >= 0)
                        r = put(b, "process_resident_memory_bytes %llu\n", (unsigned long long) f->resident_bytes);
        }
        if (r >= 0)
                r = head(b, "thinsnap_metrics_errors_total", "counter", "Sources a scrape could not read.");
        if (r >= 0)
                r = put(b, "thinsnap_metrics_errors_total %llu\n", (unsigned long long) f->errors);
        return r;
}

int ts_metrics_render(const ts_metrics_figures *f, char **ret, size_t *ret_len) {
        static const char *const kinds[] = { [TS_KIND_VIEW] = "view", [TS_KIND_ACTIVE] = "active",
                                             [TS_KIND_COMMITTED] = "committed" };
        static const char *const states[] = { "pending", "pulling", "unpacking", "ready", "failed" };
        _Static_assert(TS_ARRAY_SIZE(states) == TS_PROV_WARM_FAILED + 1, "a name for each warm state");
        _cleanup_buf_ ts_buf b = { .max = 16 << 20 };
        int r = f->pool ? render_pool(&b, f) : 0;
        if (r >= 0 && f->has_snapshots)
                r = render_counts(&b, "thinsnap_snapshots", "Snapshots by kind.", "kind", kinds, f->snapshots,
                                  TS_ARRAY_SIZE(kinds));
        if (r >= 0 && f->has_snapshots)
                r = head(&b, "thinsnap_spares", "gauge",
                         "Devices cut ahead for Prepares that ask for spares (not among thinsnap_snapshots).");
        if (r >= 0 && f->has_snapshots)
                r = put(&b, "thinsnap_spares %llu\n", (unsigned long long) f->spares);
        if (r >= 0)
                r = render_rpc(&b, f);
        if (r >= 0)
                r = render_calls(&b, f);
        if (r >= 0 && f->has_warms)
                r = render_counts(&b, "thinsnap_provisioner_warms",
                                  "Image warms the provisioner's queue holds, by state (failed ones stay a while).",
                                  "state", states, f->warms, TS_ARRAY_SIZE(states));
        if (r >= 0)
                r = render_tail(&b, f);
        if (r < 0)
                return -ENOMEM;
        *ret = (char *) ts_buf_steal(&b, ret_len);
        return 0;
}

/* ---- sources ---- */

static int gather_pool(const char *name, ts_metrics_figures *f) {
        _cleanup_pool_ ts_pool *pool = NULL;
        ts_pool_status st;
        if (ts_pool_open(name, &pool, NULL) < 0 || ts_pool_get_status(pool, &st, NULL) < 0)
                return -ENODATA;
        uint64_t block = pool->params.data_block_sectors * TS_SECTOR_SIZE;
        f->pool = name;
        f->data_used = st.used_data_blocks * block;
        f->data_size = st.total_data_blocks * block;
        f->meta_used = st.used_meta_blocks * 4096;
        f->meta_size = st.total_meta_blocks * 4096;
        f->out_of_data_space = st.out_of_data_space;
        f->read_only = st.read_only;
        f->needs_check = st.needs_check;
        return 0;
}

static int count_kind(const ts_store_info *info, void *userdata) {
        uint64_t *n = userdata;
        if ((unsigned) info->kind <= TS_KIND_COMMITTED)
                n[info->kind]++;
        return 0;
}

static int gather_resident(ts_metrics_figures *f) {
        unsigned long long pages = 0, resident = 0;
        _cleanup_fclose_ FILE *file = fopen("/proc/self/statm", "re");
        if (!file || fscanf(file, "%llu %llu", &pages, &resident) != 2)
                return -ENODATA;
        f->resident_bytes = resident * (unsigned long long) sysconf(_SC_PAGESIZE);
        return 0;
}

int ts_metrics_gather(const ts_metrics_config *cfg, ts_metrics_figures *ret) {
        static uint64_t errors;
        ts_metrics_figures f = { 0 };
        int r = ts_opstats_snapshot(&f.calls, &f.n_calls);
        if (r < 0)
                return r;
        int failed = (cfg->pool && gather_pool(cfg->pool, &f) < 0) + (gather_resident(&f) < 0);
        if (cfg->snapshotter) {
                f.has_snapshots = ts_snapshotter_walk(cfg->snapshotter, NULL, NULL, NULL, count_kind, f.snapshots,
                                                      NULL) >= 0 &&
                                  ts_snapshotter_spares(cfg->snapshotter, &f.spares, NULL) >= 0;
                failed += !f.has_snapshots;
        }
        for (int i = 0; i < TS_METRICS_MAX_SERVERS; i++)
                if (cfg->servers[i]) {
                        f.server_names[i] = cfg->server_names[i] ? cfg->server_names[i] : "";
                        ts_rpc_server_stats_get(cfg->servers[i], &f.servers[i]);
                }
        if (cfg->prov) {
                ts_prov_warm_counts(cfg->prov, f.warms);
                f.has_warms = true;
        }
        f.errors = __atomic_add_fetch(&errors, (uint64_t) failed, __ATOMIC_RELAXED);
        *ret = f;
        return 0;
}

void ts_metrics_figures_done(ts_metrics_figures *f) {
        free(f->calls);
        f->calls = NULL;
        f->n_calls = 0;
}

/* ---- HTTP ---- */

static enum MHD_Result answer(struct MHD_Connection *c, unsigned code, char *body, size_t len,
                              const char *type) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(body);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        enum MHD_Result r = MHD_queue_response(c, code, resp);
        MHD_destroy_response(resp);
        return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
        ts_metrics *m = cls;
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
                return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, strdup("only GET\n"), 9, "text/plain");
        if (strcmp(url, "/metrics") != 0)
                return answer(c, MHD_HTTP_NOT_FOUND, strdup("see /metrics\n"), 13, "text/plain");
        ts_metrics_figures f;
        char *text = NULL;
        size_t len = 0;
        int r = ts_metrics_gather(&m->cfg, &f);
        if (r >= 0) {
                r = ts_metrics_render(&f, &text, &len);
                ts_metrics_figures_done(&f);
        }
        if (r < 0)
                return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, strdup("out of memory\n"), 14, "text/plain");
        return answer(c, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
}

/* Splits "host:port" or "[v6]:port". */
static int split_address(const char *address, char *host, size_t hlen, const char **port) {
        const char *colon = strrchr(address, ':');
        if (!colon || !colon[1])
                return -EINVAL;
        const char *h = address;
        size_t n = (size_t) (colon - address);
        if (n >= 2 && h[0] == '[' && h[n - 1] == ']')
                h++, n -= 2;
        if (n == 0 || n >= hlen)
                return -EINVAL;
        memcpy(host, h, n);
        host[n] = 0;
        *port = colon + 1;
        return 0;
}

/* A listening TCP socket on address; *ret_name says where, with the port. */
static int listen_on(const char *address, char *ret_name, size_t len, ts_error **err) {
        char host[64];
        const char *port;
        if (split_address(address, host, sizeof host, &port) < 0)
                return ts_error_setf_plain(err, EINVAL, "metrics address '%s' is not HOST:PORT", address);
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai = NULL;
        int e = getaddrinfo(host, port, &hints, &ai);
        if (e)
                return ts_error_setf_plain(err, EINVAL, "metrics address '%s': %s", address, gai_strerror(e));
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        int r = fd < 0 ? -errno : 0;
        if (r >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
                       bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0))
                r = -errno;
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        char h[64] = "", p[16] = "";
        if (r >= 0 && (getsockname(fd, (struct sockaddr *) &sa, &sl) < 0 ||
                       getnameinfo((struct sockaddr *) &sa, sl, h, sizeof h, p, sizeof p,
                                   NI_NUMERICHOST | NI_NUMERICSERV) != 0))
                r = -EINVAL;
        freeaddrinfo(ai);
        if (r < 0) {
                if (fd >= 0)
                        close(fd);
                return ts_error_set(err, r, "listen for metrics on %s", address);
        }
        snprintf(ret_name, len, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, p);
        return fd;
}

int ts_metrics_listen(const char *address, ts_metrics **ret, ts_error **err) {
        ts_metrics *m = calloc(1, sizeof(*m));
        if (!m)
                return ts_error_set(err, ENOMEM, "metrics");
        m->fd = listen_on(address, m->address, sizeof m->address, err);
        if (m->fd < 0) {
                int r = m->fd;
                free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int ts_metrics_serve(ts_metrics *m, const ts_metrics_config *cfg, ts_error **err) {
        m->cfg = *cfg;
        /* One thread, few connections, short timeouts: a scraper needs no
         * more, and nothing a client does here can cost the daemon much. */
        m->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, m,
                                  MHD_OPTION_LISTEN_SOCKET, m->fd, MHD_OPTION_CONNECTION_LIMIT, 16u,
                                  MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
        if (!m->mhd)
                return ts_error_set(err, errno ? errno : EIO, "serve metrics on %s", m->address);
        m->fd = -1; /* libmicrohttpd's now: it closes it when stopped */
        return 0;
}

const char *ts_metrics_address(const ts_metrics *m) {
        return m->address;
}

ts_metrics *ts_metrics_stop(ts_metrics *m) {
        if (m) {
                if (m->mhd)
                        MHD_stop_daemon(m->mhd);
                if (m->fd >= 0)
                        close(m->fd);
                free(m);
        }
        return NULL;
}
