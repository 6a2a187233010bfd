#include "prov-internal.h"

#include "common/strv.h"
#include "devmapper/pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MAX_WARMS 2
#define DEFAULT_MAX_DOWNLOADS 3

int64_t prov_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void prov_expiry(unsigned hours, char *buf, size_t len) {
        time_t t = time(NULL) + (time_t) hours * 3600;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int prov_descriptor_copy(const ts_ctrd_descriptor *d, ts_ctrd_descriptor *ret) {
        ts_ctrd_descriptor c = { .size = d->size };
        int r = (d->media_type && !(c.media_type = strdup(d->media_type))) ||
                                (d->digest && !(c.digest = strdup(d->digest)))
                        ? -ENOMEM
                        : 0;
        for (char *const *a = d->annotations; r >= 0 && a && *a; a++)
                r = ts_strv_push(&c.annotations, *a);
        if (r < 0) {
                ts_ctrd_descriptor_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

int prov_explain_full_pool(ts_prov *p, int r, ts_error **err) {
        if (!p->pool || r == -ENOSPC || r == -ECANCELED)
                return r;
        ts_pool *pool = NULL;
        ts_pool_status st;
        ts_error *e = NULL;
        int q = ts_pool_open(p->pool, &pool, NULL);
        if (q >= 0)
                q = ts_pool_get_status(pool, &st, NULL);
        ts_pool_free(pool);
        if (q < 0 || ts_pool_status_space(p->pool, &st, &e) >= 0)
                return r;
        if (err) {
                ts_error_free(*err);
                *err = e;
        } else
                ts_error_free(e);
        return -ENOSPC;
}

int prov_ctrd(ts_prov *p, ts_ctrd **ret, ts_error **err) {
        pthread_mutex_lock(&p->lock);
        ts_ctrd *c = p->ctrd;
        pthread_mutex_unlock(&p->lock);
        if (c) {
                *ret = c;
                return 0;
        }
        /* Connected outside the lock; a racing thread's connection wins and
         * this one is dropped. */
        int r = ts_ctrd_connect(p->address, p->ns, NULL, &c, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&p->lock);
        if (p->ctrd)
                ts_ctrd_free(TAKE_PTR(c));
        else
                p->ctrd = c;
        *ret = p->ctrd;
        pthread_mutex_unlock(&p->lock);
        return 0;
}

static int copy_config(ts_prov *p, const ts_prov_config *cfg) {
        const char *docker = cfg->docker_config;
        _cleanup_free_ char *found = NULL;
        if (!docker) {
                const char *dir = getenv("DOCKER_CONFIG");
                const char *home = getenv("HOME");
                if (dir && *dir && asprintf(&found, "%s/config.json", dir) < 0)
                        return -ENOMEM;
                if (!found && asprintf(&found, "%s/.docker/config.json", home && *home ? home : "/root") < 0)
                        return -ENOMEM;
                docker = found;
        }
        p->address = strdup(cfg->containerd_address ? cfg->containerd_address : TS_PROV_DEFAULT_CONTAINERD);
        p->ns = strdup(cfg->namespace ? cfg->namespace : TS_PROV_DEFAULT_NAMESPACE);
        p->snapshotter = strdup(cfg->snapshotter ? cfg->snapshotter : TS_PROV_DEFAULT_SNAPSHOTTER);
        p->docker_config = strdup(docker);
        if (cfg->pool && !(p->pool = strdup(cfg->pool)))
                return -ENOMEM;
        p->max_warms = cfg->max_warms ? cfg->max_warms : DEFAULT_MAX_WARMS;
        p->max_downloads = cfg->max_downloads ? cfg->max_downloads : DEFAULT_MAX_DOWNLOADS;
        p->async_remove = cfg->async_remove;
        p->vm_spares = cfg->vm_spares;
        p->remove_device = cfg->remove_device;
        p->remove_device_ctx = cfg->remove_device_ctx;
        prov_limits_defaults(&cfg->limits, &p->limits);
        p->registry_timeout_s = cfg->registry_timeout_s;
        return p->address && p->ns && p->snapshotter && p->docker_config ? 0 : -ENOMEM;
}

int ts_prov_new(const ts_prov_config *cfg, ts_prov **ret, ts_error **err) {
        static const ts_prov_config defaults = { 0 };
        if (!cfg)
                cfg = &defaults;
        if (cfg->namespace && !*cfg->namespace)
                return ts_error_setf_plain(err, EINVAL, "the namespace must not be empty");
        if (cfg->snapshotter && !*cfg->snapshotter)
                return ts_error_setf_plain(err, EINVAL, "the snapshotter name must not be empty");
        ts_prov *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->changed, &ca);
        pthread_condattr_destroy(&ca);
        int r = copy_config(p, cfg);
        if (r >= 0)
                r = prov_warm_start_workers(p, err);
        if (r < 0) {
                ts_prov_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

ts_prov *ts_prov_free(ts_prov *p) {
        if (!p)
                return NULL;
        prov_warm_stop_workers(p);
        for (prov_chain *c = p->chains, *n; c; c = n) {
                n = c->next;
                prov_chain_free(c);
        }
        prov_vm_devices_free(p);
        ts_ctrd_free(p->ctrd);
        free(p->address);
        free(p->ns);
        free(p->snapshotter);
        free(p->docker_config);
        free(p->pool);
        pthread_cond_destroy(&p->changed);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

int ts_prov_vm_check_id(const char *id, ts_error **err) {
        size_t n = id ? strlen(id) : 0;
        if (n == 0)
                return ts_error_setf_plain(err, EINVAL, "a VM id must not be empty");
        if (n > TS_PROV_VM_ID_MAX)
                return ts_error_setf_plain(err, EINVAL, "VM id '%.64s...' is longer than %d characters",
                                           id, TS_PROV_VM_ID_MAX);
        size_t bad = strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");
        if (bad < n)
                return ts_error_setf_plain(err, EINVAL,
                                           "VM id '%s' has '%c' at %zu: use A-Z a-z 0-9 _ . -", id,
                                           id[bad], bad + 1);
        return 0;
}
