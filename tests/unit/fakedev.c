#include "fakedev.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct fakedev {
        ts_snapdev dev;
        ts_fakedev_pool *pool;
} fakedev;

static ts_fakedev_pool *POOL(ts_snapdev *d) {
        return ((fakedev *) d)->pool;
}

static void pool_lock(ts_fakedev_pool *p) {
        if (pthread_mutex_lock(&p->lock) == EOWNERDEAD)
                pthread_mutex_consistent(&p->lock);
}

static void pool_unlock(ts_fakedev_pool *p) {
        pthread_mutex_unlock(&p->lock);
}

ts_fakedev_pool *ts_fakedev_pool_new(void) {
        ts_fakedev_pool *p = mmap(NULL, sizeof(*p), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return NULL;
        memset(p, 0, sizeof(*p));
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&p->lock, &a);
        pthread_mutexattr_destroy(&a);
        return p;
}

void ts_fakedev_pool_free(ts_fakedev_pool *p) {
        if (!p)
                return;
        pthread_mutex_destroy(&p->lock);
        munmap(p, sizeof(*p));
}

/* Starts a call: records it, kills the process when a crash before it is
 * asked for, and returns the injected failure (0 when none). Takes the lock;
 * call_end releases it. */
_printf_(3, 4) static int call_begin(ts_fakedev_pool *p, const char *op, const char *fmt, ...) {
        pool_lock(p);
        unsigned n = ++p->n_calls;
        size_t len = strlen(p->log);
        if (len && len + 2 < sizeof p->log)
                len += (size_t) snprintf(p->log + len, sizeof p->log - len, ", ");
        va_list ap;
        va_start(ap, fmt);
        if (len < sizeof p->log)
                vsnprintf(p->log + len, sizeof p->log - len, fmt, ap);
        va_end(ap);
        if (p->crash_call == n && !p->crash_after) {
                pool_unlock(p);
                raise(SIGKILL);
        }
        if (p->fail_nth && strcmp(p->fail_op, op) == 0 && --p->fail_nth == 0) {
                p->full |= p->fail_fills;
                return -p->fail_errno;
        }
        return 0;
}

static int call_end(ts_fakedev_pool *p, int r, ts_error **err, const char *op, uint32_t id) {
        bool crash = p->crash_call == p->n_calls && p->crash_after;
        pool_unlock(p);
        if (crash)
                raise(SIGKILL);
        if (r < 0)
                ts_error_set(err, r, "fake %s %u", op, id);
        return r;
}

static ts_fakedev_device *device(ts_fakedev_pool *p, uint32_t id) {
        return id >= 1 && id <= TS_FAKEDEV_MAX ? &p->dev[id] : NULL;
}

static int fake_check_space(ts_snapdev *d, bool fresh, ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        pool_lock(p);
        bool full = p->full;
        pool_unlock(p);
        if (full)
                return ts_error_setf_plain(err, ENOSPC, "fake pool is out of data space");
        return 0;
}

static int fake_snap(ts_snapdev *d, uint32_t id, uint32_t origin, ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        int r = call_begin(p, "snap", "snap %u %u", id, origin);
        ts_fakedev_device *v = device(p, id), *o = device(p, origin);
        if (r >= 0 && (!v || !o))
                r = -ERANGE;
        else if (r >= 0 && p->full)
                r = -ENOSPC;
        else if (r >= 0 && v->exists)
                r = -EEXIST;
        else if (r >= 0 && !o->exists)
                r = -ENODATA;
        else if (r >= 0)
                *v = (ts_fakedev_device) { .exists = true, .origin = origin, .mapped = o->mapped };
        return call_end(p, r, err, "snap", id);
}

static int fake_activate(ts_snapdev *d, uint32_t id, uint64_t size, ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        int r = call_begin(p, "activate", "activate %u", id);
        ts_fakedev_device *v = device(p, id);
        if (r >= 0 && (!v || !v->exists))
                r = -ENODATA;
        else if (r >= 0 && v->active)
                r = -EEXIST;
        else if (r >= 0) {
                v->active = true;
                v->size = size;
        }
        return call_end(p, r, err, "activate", id);
}

/* Deactivates v unless it is held. */
static int deactivate(ts_fakedev_device *v) {
        if (!v || !v->active)
                return 0;
        if (v->held)
                return -EBUSY;
        v->active = v->deferred = false;
        return 0;
}

static int fake_deactivate(ts_snapdev *d, uint32_t id, ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        int r = call_begin(p, "deactivate", "deactivate %u", id);
        if (r >= 0)
                r = deactivate(device(p, id));
        return call_end(p, r, err, "deactivate", id);
}

/* Inactive now, or at the last close when held. */
static void release(ts_fakedev_device *v) {
        if (v && v->active && v->held)
                v->deferred = true;
        else if (v)
                v->active = false;
}

static int fake_release(ts_snapdev *d, uint32_t id, ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        int r = call_begin(p, "release", "release %u", id);
        if (r >= 0)
                release(device(p, id));
        return call_end(p, r, err, "release", id);
}

static int fake_drop(ts_snapdev *d, uint32_t id, uint64_t size, bool discard, ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        int r = call_begin(p, "drop", "drop %u%s", id, discard ? " discard" : "");
        ts_fakedev_device *v = device(p, id);
        if (r >= 0)
                r = deactivate(v);
        if (r >= 0 && v && v->exists) {
                unsigned discards = v->discards + (discard && size > 0);
                *v = (ts_fakedev_device) { .discards = discards };
        }
        return call_end(p, r, err, "drop", id);
}

static int fake_mapped(ts_snapdev *d, uint32_t id, int64_t *ret, ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        int r = call_begin(p, "mapped", "mapped %u", id);
        ts_fakedev_device *v = device(p, id);
        if (r >= 0 && (!v || !v->active))
                r = -ENXIO;
        else if (r >= 0)
                *ret = v->mapped;
        return call_end(p, r, err, "mapped", id);
}

static int fake_settle(ts_snapdev *d, uint32_t id, uint64_t size, bool active, ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        int r = call_begin(p, "settle", "settle %u %s", id, active ? "active" : "inactive");
        ts_fakedev_device *v = device(p, id);
        if (r >= 0 && (!v || !v->exists))
                r = -ENODATA;
        else if (r >= 0 && !active)
                release(v);
        else if (r >= 0 && !v->active) {
                v->active = true;
                v->size = size;
                r = 1;
        }
        return call_end(p, r, err, "settle", id);
}

static int fake_base(ts_snapdev *d, uint32_t id, uint64_t size, bool format, int64_t *ret_mapped,
                     ts_error **err) {
        ts_fakedev_pool *p = POOL(d);
        int r = call_begin(p, "base", "base %u %s", id, format ? "format" : "measure");
        ts_fakedev_device *v = device(p, id);
        if (r >= 0 && !v)
                r = -ERANGE;
        else if (r >= 0 && format) {
                *v = (ts_fakedev_device) { .exists = true, .size = size, .mapped = TS_FAKEDEV_BASE_MAPPED };
                p->formats++;
        } else if (r >= 0 && !v->exists)
                r = -ENODATA;
        if (r >= 0)
                *ret_mapped = v->mapped;
        return call_end(p, r, err, "base", id);
}

static void fake_path(ts_snapdev *d, uint32_t id, char *buf, size_t len) {
        snprintf(buf, len, "/dev/fake/%u", id);
}

static void fake_free(ts_snapdev *d) {
        free(d);
}

static const ts_snapdev_ops fake_ops = {
        .check_space = fake_check_space,
        .snap = fake_snap,
        .activate = fake_activate,
        .deactivate = fake_deactivate,
        .release = fake_release,
        .drop = fake_drop,
        .mapped = fake_mapped,
        .settle = fake_settle,
        .base = fake_base,
        .path = fake_path,
        .free = fake_free,
};

ts_snapdev *ts_fakedev_new(ts_fakedev_pool *p) {
        fakedev *f = calloc(1, sizeof(*f));
        if (!f)
                return NULL;
        f->dev.ops = &fake_ops;
        f->pool = p;
        return &f->dev;
}

const char *ts_fakedev_calls(ts_fakedev_pool *p, char *buf, size_t len) {
        pool_lock(p);
        snprintf(buf, len, "%s", p->log);
        p->log[0] = '\0';
        pool_unlock(p);
        return buf;
}

void ts_fakedev_fail(ts_fakedev_pool *p, const char *op, unsigned nth, int errnum) {
        pool_lock(p);
        snprintf(p->fail_op, sizeof p->fail_op, "%s", op);
        p->fail_nth = nth;
        p->fail_errno = errnum;
        pool_unlock(p);
}

void ts_fakedev_hold(ts_fakedev_pool *p, uint32_t id) {
        pool_lock(p);
        p->dev[id].held |= p->dev[id].active; /* an inactive device has no node to open */
        pool_unlock(p);
}

void ts_fakedev_unhold(ts_fakedev_pool *p, uint32_t id) {
        pool_lock(p);
        ts_fakedev_device *v = &p->dev[id];
        v->held = false;
        if (v->deferred)
                v->active = v->deferred = false;
        pool_unlock(p);
}

void ts_fakedev_write(ts_fakedev_pool *p, uint32_t id, int64_t bytes) {
        pool_lock(p);
        p->dev[id].mapped += bytes;
        pool_unlock(p);
}

void ts_fakedev_reboot(ts_fakedev_pool *p) {
        pool_lock(p);
        for (uint32_t id = 1; id <= TS_FAKEDEV_MAX; id++)
                p->dev[id].active = p->dev[id].held = p->dev[id].deferred = false;
        pool_unlock(p);
}

size_t ts_fakedev_existing(ts_fakedev_pool *p, uint32_t *ids) {
        size_t n = 0;
        pool_lock(p);
        for (uint32_t id = 1; id <= TS_FAKEDEV_MAX; id++)
                if (p->dev[id].exists)
                        ids[n++] = id;
        pool_unlock(p);
        return n;
}
