/* The warm queue: one warm per image at a time (later requests join it), at
 * most max_warms running, each with a status its followers can wait on.
 * A warm's lease is named after its image, so a warm interrupted by a stop
 * is found again from containerd's leases at the next start and queued. */
#include "warm.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strv.h"
#include "ctrd/leases.h"
#include "oci/platform.h"
#include "oci/ref.h"

/* Failed warms kept for `image ls` (the oldest go first). */
#define FAILED_KEPT 32
/* How often recovery asks again while containerd does not answer. */
#define RECOVER_RETRY_S 5
/* A resumed warm that finds our snapshotter unavailable through containerd
 * waits 1, 2, 4... up to this many seconds between tries. */
#define RESUME_RETRY_MAX_S 32
/* Byte counts reach a waiter at most this often. */
#define PROGRESS_INTERVAL_MS 100

struct prov_warm {
        ts_prov *p;
        int refs; /* handles, the queue's own, a running worker */
        char *key; /* what makes two warms the same: name and platform */
        prov_job job;
        char *name, *platform, *username, *password, *import_path, *import_name;
        char *expected;
        ts_prov_limits limits;
        void *ca_pem;
        ts_prov_warm_status st;
        uint64_t significant_seq; /* the last change besides byte counts */
        bool finished;
        prov_warm *next;
};

bool prov_job_cancelled(const prov_job *j) {
        return __atomic_load_n(&j->p->stopping, __ATOMIC_RELAXED);
}

/* ---- status ---- */

/* A change of the status; byte counts alone are not significant: waiters
 * see those at most every PROGRESS_INTERVAL_MS. */
static void touch_locked(prov_warm *w, bool significant) {
        w->st.seq++;
        if (significant)
                w->significant_seq = w->st.seq;
        w->st.updated_ns = prov_now_ns();
        pthread_cond_broadcast(&w->p->changed);
}

void prov_job_set_state(prov_job *j, ts_prov_warm_state state) {
        pthread_mutex_lock(&j->p->lock);
        j->w->st.state = state;
        touch_locked(j->w, true);
        pthread_mutex_unlock(&j->p->lock);
}

void prov_job_set_layer(prov_job *j, unsigned layer, unsigned layers) {
        pthread_mutex_lock(&j->p->lock);
        j->w->st.state = TS_PROV_WARM_UNPACKING;
        j->w->st.layer = layer;
        j->w->st.layers = layers;
        touch_locked(j->w, true);
        pthread_mutex_unlock(&j->p->lock);
}

void prov_job_set_digest(prov_job *j, const char *digest) {
        char *d = strdup(digest);
        pthread_mutex_lock(&j->p->lock);
        free(j->w->st.digest);
        j->w->st.digest = d;
        touch_locked(j->w, true);
        pthread_mutex_unlock(&j->p->lock);
}

static void blobs_free(ts_prov_blob_progress *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(b[i].digest);
        free(b);
}

int prov_job_set_blobs(prov_job *j, char *const *digests, const int64_t *sizes, size_t n) {
        ts_prov_blob_progress *b = calloc(n ? n : 1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        uint64_t total = 0;
        for (size_t i = 0; i < n; i++) {
                b[i].total = (uint64_t) sizes[i];
                total += b[i].total;
                if (!(b[i].digest = strdup(digests[i]))) {
                        blobs_free(b, i);
                        return -ENOMEM;
                }
        }
        pthread_mutex_lock(&j->p->lock);
        ts_prov_warm_status *st = &j->w->st;
        blobs_free(st->blobs, st->n_blobs);
        st->blobs = b;
        st->n_blobs = n;
        st->bytes_total = total;
        st->bytes_done = 0;
        touch_locked(j->w, true);
        pthread_mutex_unlock(&j->p->lock);
        return 0;
}

void prov_job_blob_progress(prov_job *j, size_t i, uint64_t done, bool cached) {
        pthread_mutex_lock(&j->p->lock);
        ts_prov_warm_status *st = &j->w->st;
        if (i < st->n_blobs) {
                ts_prov_blob_progress *b = &st->blobs[i];
                uint64_t now = cached ? b->total : done;
                st->bytes_done += now - (b->cached ? b->total : b->done);
                b->done = now;
                b->cached = cached;
                touch_locked(j->w, cached);
        }
        pthread_mutex_unlock(&j->p->lock);
}

void ts_prov_warm_status_done(ts_prov_warm_status *s) {
        if (!s)
                return;
        free(s->ref);
        blobs_free(s->blobs, s->n_blobs);
        free(s->error);
        free(s->digest);
        *s = (ts_prov_warm_status) { 0 };
}

ts_prov_warm_status *ts_prov_warm_status_free(ts_prov_warm_status *s) {
        ts_prov_warm_status_done(s);
        free(s);
        return NULL;
}

static unsigned queue_position_locked(const prov_warm *w) {
        unsigned pos = 1;
        for (const prov_warm *o = w->p->warms; o && o != w; o = o->next)
                if (!o->finished && o->st.state == TS_PROV_WARM_PENDING)
                        pos++;
        return w->st.state == TS_PROV_WARM_PENDING ? pos : 0;
}

static int status_copy_locked(const prov_warm *w, ts_prov_warm_status *ret) {
        const ts_prov_warm_status *s = &w->st;
        ts_prov_warm_status c = *s;
        c.ref = c.error = c.digest = NULL;
        c.blobs = calloc(s->n_blobs ? s->n_blobs : 1, sizeof(*c.blobs));
        c.n_blobs = 0;
        c.queue_position = queue_position_locked(w);
        int r = c.blobs ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < s->n_blobs; i++) {
                c.blobs[i] = s->blobs[i];
                c.n_blobs++;
                if (!(c.blobs[i].digest = strdup(s->blobs[i].digest)))
                        r = -ENOMEM;
        }
        if (r >= 0 && (!(c.ref = strdup(s->ref)) || (s->error && !(c.error = strdup(s->error))) ||
                       (s->digest && !(c.digest = strdup(s->digest)))))
                r = -ENOMEM;
        if (r < 0) {
                ts_prov_warm_status_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

prov_warm *prov_warm_next(const prov_warm *w) {
        return w->next;
}

const char *prov_warm_name(const prov_warm *w) {
        return w->name;
}

ts_prov_warm_status *prov_warm_status_locked(ts_prov *p, const char *name) {
        for (prov_warm *w = p->warms; w; w = w->next) {
                if (strcmp(w->name, name) != 0)
                        continue;
                ts_prov_warm_status *s = calloc(1, sizeof(*s));
                if (s && status_copy_locked(w, s) < 0)
                        s = ts_prov_warm_status_free(s);
                return s;
        }
        return NULL;
}

/* ---- warms: creation, lookup, release ---- */

static prov_warm *warm_free(prov_warm *w) {
        if (!w)
                return NULL;
        if (w->job.import_fd >= 0)
                close(w->job.import_fd);
        free(w->key);
        free(w->name);
        free(w->platform);
        free(w->username);
        if (w->password)
                explicit_bzero(w->password, strlen(w->password));
        free(w->password);
        free(w->import_path);
        free(w->import_name);
        free(w->expected);
        free(w->ca_pem);
        ts_prov_warm_status_done(&w->st);
        free(w);
        return NULL;
}

static void unref_locked(prov_warm *w) {
        if (--w->refs == 0)
                warm_free(w);
}

ts_prov_warm *ts_prov_warm_unref(ts_prov_warm *h) {
        prov_warm *w = (prov_warm *) h;
        if (w) {
                ts_prov *p = w->p;
                pthread_mutex_lock(&p->lock);
                unref_locked(w);
                pthread_mutex_unlock(&p->lock);
        }
        return NULL;
}

static void unlink_locked(prov_warm *w) {
        for (prov_warm **pp = &w->p->warms; *pp; pp = &(*pp)->next)
                if (*pp == w) {
                        *pp = w->next;
                        w->next = NULL;
                        unref_locked(w);
                        return;
                }
}

/* The normalised name and platform of a request; the key joins them. */
static int request_identity(const ts_prov_warm_request *req, char **ret_name,
                            char **ret_platform, ts_error **err) {
        _cleanup_platform_ ts_oci_platform *plat = NULL;
        int r = req->platform ? ts_oci_platform_parse(req->platform, &plat, err)
                              : ts_oci_platform_default(&plat);
        if (r < 0)
                return r;
        _cleanup_free_ char *platform = ts_oci_platform_string(plat);
        _cleanup_free_ char *name = NULL;
        if (req->import_fd >= 0) {
                if (req->name && asprintf(&name, "%s", req->name) < 0)
                        name = NULL;
                else if (!req->name && asprintf(&name, "import:%s", req->import_path) < 0)
                        name = NULL;
        } else {
                _cleanup_ref_ ts_ref *ref = NULL;
                if (!req->ref)
                        return ts_error_setf_plain(err, EINVAL, "a reference is required");
                if ((r = ts_ref_parse(req->ref, &ref, err)) < 0)
                        return r;
                name = ts_ref_string(ref);
        }
        if (!name || !platform)
                return -ENOMEM;
        *ret_name = TAKE_PTR(name);
        *ret_platform = TAKE_PTR(platform);
        return 0;
}

static int dup_opt(const char *s, char **ret) {
        *ret = s ? strdup(s) : NULL;
        return s && !*ret ? -ENOMEM : 0;
}

static int warm_new(ts_prov *p, const ts_prov_warm_request *req, char *name, char *platform,
                    prov_warm **ret) {
        prov_warm *w = calloc(1, sizeof(*w));
        if (!w) {
                free(name);
                free(platform);
                return -ENOMEM;
        }
        *w = (prov_warm) { .p = p, .refs = 1, .name = name, .platform = platform };
        w->job = (prov_job) { .p = p, .w = w, .import_fd = -1 };
        int r = asprintf(&w->key, "%s\n%s\n%s", name, platform,
                         req->expected_digest ? req->expected_digest : "") < 0 ? -ENOMEM : 0;
        if (r >= 0 && req->import_fd >= 0 &&
            (w->job.import_fd = fcntl(req->import_fd, F_DUPFD_CLOEXEC, 3)) < 0)
                r = -errno;
        if (r >= 0 && req->ca_pem_len && !(w->ca_pem = malloc(req->ca_pem_len)))
                r = -ENOMEM;
        if (r >= 0)
                r = dup_opt(req->username, &w->username);
        if (r >= 0)
                r = dup_opt(req->password, &w->password);
        if (r >= 0)
                r = dup_opt(req->import_path, &w->import_path);
        if (r >= 0)
                r = dup_opt(req->import_fd >= 0 ? req->name : NULL, &w->import_name);
        if (r >= 0)
                r = dup_opt(req->expected_digest, &w->expected);
        if (r >= 0 && !(w->st.ref = strdup(name)))
                r = -ENOMEM;
        if (r < 0) {
                warm_free(w);
                return r;
        }
        if (w->ca_pem)
                memcpy(w->ca_pem, req->ca_pem, req->ca_pem_len);
        _cleanup_platform_ ts_oci_platform *host = NULL;
        _cleanup_free_ char *host_s = NULL;
        if (ts_oci_platform_default(&host) >= 0)
                host_s = ts_oci_platform_string(host);
        w->job.name = w->name;
        w->job.platform = w->platform;
        w->job.default_platform = host_s && strcmp(host_s, platform) == 0;
        w->job.plain_http = req->plain_http;
        w->job.username = w->username;
        w->job.password = w->password;
        w->job.ca_pem = w->ca_pem;
        w->job.ca_pem_len = req->ca_pem_len;
        w->job.import_path = w->import_path;
        w->job.import_name = w->import_name;
        w->job.expected_digest = w->expected;
        if (req->limits) {
                w->limits = *req->limits;
                w->job.limits = &w->limits;
        }
        w->st.started_ns = w->st.updated_ns = prov_now_ns();
        w->st.seq = 1;
        *ret = w;
        return 0;
}

static void trim_failed_locked(ts_prov *p) {
        unsigned n = 0;
        for (prov_warm *w = p->warms; w; w = w->next)
                n += w->finished;
        for (prov_warm *w = p->warms, *next; w && n > FAILED_KEPT; w = next) {
                next = w->next;
                if (w->finished) {
                        unlink_locked(w);
                        n--;
                }
        }
}

/* ts_prov_warm_start; resumed: a warm a stop interrupted, queued again. */
static int warm_queue(ts_prov *p, const ts_prov_warm_request *req, bool resumed, ts_prov_warm **ret,
                      ts_error **err) {
        char *name = NULL, *platform = NULL;
        int r = request_identity(req, &name, &platform, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&p->lock);
        prov_warm *w = p->warms;
        const char *expected = req->expected_digest ? req->expected_digest : "";
        for (; w; w = w->next)
                if (strcmp(w->name, name) == 0 && strcmp(w->platform, platform) == 0 &&
                    strcmp(w->expected ? w->expected : "", expected) == 0)
                        break;
        if (w && !w->finished) {
                w->refs++;
                pthread_mutex_unlock(&p->lock);
                free(name);
                free(platform);
                *ret = (ts_prov_warm *) w;
                return 0;
        }
        if (w)
                unlink_locked(w); /* a failed warm of the same image: start afresh */
        r = warm_new(p, req, name, platform, &w);
        if (r >= 0) {
                w->job.resumed = resumed;
                prov_warm **tail = &p->warms;
                while (*tail)
                        tail = &(*tail)->next;
                *tail = w;
                w->refs++; /* the handle's */
                pthread_cond_broadcast(&p->changed);
        }
        pthread_mutex_unlock(&p->lock);
        if (r < 0)
                return ts_error_set(err, r, "queue the warm of %s", req->ref ? req->ref : "");
        *ret = (ts_prov_warm *) w;
        return 0;
}

int ts_prov_warm_start(ts_prov *p, const ts_prov_warm_request *req, ts_prov_warm **ret,
                       ts_error **err) {
        return warm_queue(p, req, false, ret, err);
}

static bool deadline_passed(const struct timespec *t) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

/* Waits s seconds, or less when the provisioner stops. */
static void pause_s(ts_prov *p, unsigned s) {
        struct timespec until = ts_clock_mono_after((uint64_t) s * 1000);
        pthread_mutex_lock(&p->lock);
        while (!p->stopping && !deadline_passed(&until))
                pthread_cond_timedwait(&p->changed, &p->lock, &until);
        pthread_mutex_unlock(&p->lock);
}

int ts_prov_warm_wait(ts_prov_warm *h, uint64_t after_seq, int timeout_ms,
                      ts_prov_warm_status *ret) {
        prov_warm *w = (prov_warm *) h;
        ts_prov *p = w->p;
        struct timespec until = ts_clock_mono_after(timeout_ms >= 0 ? (uint64_t) timeout_ms : 0);
        struct timespec progress = ts_clock_mono_after(after_seq ? PROGRESS_INTERVAL_MS : 0);
        pthread_mutex_lock(&p->lock);
        for (;;) {
                bool newer = w->st.seq > after_seq;
                if (w->significant_seq > after_seq || (newer && deadline_passed(&progress)))
                        break;
                if (timeout_ms >= 0 && deadline_passed(&until))
                        break;
                /* Byte counts only: wake when they may be reported. */
                const struct timespec *t = newer ? &progress : timeout_ms >= 0 ? &until : NULL;
                if (t)
                        pthread_cond_timedwait(&p->changed, &p->lock, t);
                else
                        pthread_cond_wait(&p->changed, &p->lock);
        }
        int r = w->st.seq > after_seq ? status_copy_locked(w, ret) : -ETIMEDOUT;
        pthread_mutex_unlock(&p->lock);
        return r;
}

/* ---- running ---- */

/* The lease's id: the same for the same image and platform, so a warm
 * interrupted by a stop finds its lease (and what it holds) again. */
static void lease_id(const char *key, char *buf, size_t len) {
        char d[TS_DIGEST_MAX];
        if (ts_digest_buffer(key, strlen(key), d) < 0)
                snprintf(d, sizeof d, "sha256:unknown");
        snprintf(buf, len, WARM_LEASE_PREFIX "%.16s", ts_digest_hex(d));
}

static int lease_ensure(prov_job *j, ts_error **err) {
        char expire[64];
        prov_expiry(WARM_LEASE_HOURS, expire, sizeof expire);
        char *labels[] = {
                LABEL_WARM_REF,      (char *) j->name,
                LABEL_WARM_PLATFORM, (char *) j->platform,
                LABEL_GC_EXPIRE,     expire,
                LABEL_WARM_IMPORT,   (char *) j->import_path,
                LABEL_WARM_EXPECTED, (char *) j->expected_digest,
                NULL,
        };
        /* Drop the pairs without a value. */
        size_t n = 6;
        for (size_t i = 6; labels[i]; i += 2)
                if (labels[i + 1]) {
                        labels[n++] = labels[i];
                        labels[n++] = labels[i + 1];
                }
        labels[n] = NULL;
        ts_error *e = NULL;
        int r = ts_ctrd_lease_create(j->c, j->lease, labels, NULL, &e);
        if (r == -EEXIST) {
                e = ts_error_free(e);
                return 0;
        }
        return r < 0 ? ts_error_move(err, &e) : 0;
}

static int run_job(prov_job *j, ts_error **err) {
        int r = prov_ctrd(j->p, &j->c, err);
        if (r >= 0)
                r = lease_ensure(j, err);
        if (r < 0)
                return r;
        return j->import_fd >= 0 ? prov_import(j, err) : prov_pull(j, err);
}

/* The end of a warm: its lease goes (a stop keeps it, to resume from). */
static void finish(prov_warm *w, int r, ts_error *err) {
        ts_prov *p = w->p;
        if (r != -ECANCELED && w->job.c) {
                ts_error *e = NULL;
                if (ts_ctrd_lease_delete(w->job.c, w->job.lease, false, &e) < 0 && e->errnum != ENOENT)
                        log_warn("warm of %s: lease %s stays until it expires: %s", w->name,
                                 w->job.lease, e->msg);
                e = ts_error_free(e);
        }
        if (r < 0)
                log_warn("warm of %s failed: %s", w->name, ts_error_message(err, r));
        else
                log_info("warm of %s ready", w->name);
        pthread_mutex_lock(&p->lock);
        w->finished = true;
        w->st.state = r < 0 ? TS_PROV_WARM_FAILED : TS_PROV_WARM_READY;
        if (r < 0) {
                free(w->st.error);
                w->st.error = strdup(ts_error_message(err, r));
                w->st.errnum = -r;
        }
        touch_locked(w, true);
        if (r >= 0 || r == -ECANCELED)
                unlink_locked(w); /* followers keep their own reference */
        trim_failed_locked(p);
        unref_locked(w);
        pthread_mutex_unlock(&p->lock);
        ts_error_free(err);
}

/* Runs a warm's job. A warm resumed at start may find containerd up but not
 * yet able to reach this daemon's snapshotter again (containerd's connection
 * to it backs off after the restart, and answers UNAVAILABLE meanwhile):
 * then it is tried again, after 1, 2, 4... seconds, for about a minute. A stop
 * meanwhile keeps it for the next start (-ECANCELED). */
static int run_warm(prov_warm *w, ts_error **err) {
        int r = run_job(&w->job, err);
        for (unsigned s = 1; r == -ECONNREFUSED && w->job.resumed && s <= RESUME_RETRY_MAX_S; s *= 2) {
                log_info("warm of %s: %s; trying again in %u s", w->name, ts_error_message(*err, r), s);
                *err = ts_error_free(*err);
                pause_s(w->p, s);
                if (prov_job_cancelled(&w->job))
                        return ts_error_setf_plain(err, ECANCELED, "warm of %s: stopping", w->name);
                r = run_job(&w->job, err);
        }
        return r;
}

static prov_warm *next_pending_locked(ts_prov *p) {
        for (prov_warm *w = p->warms; w; w = w->next)
                if (!w->finished && w->st.state == TS_PROV_WARM_PENDING)
                        return w;
        return NULL;
}

static bool warm_running_locked(const ts_prov *p) {
        for (const prov_warm *w = p->warms; w; w = w->next)
                if (!w->finished && w->st.state != TS_PROV_WARM_PENDING)
                        return true;
        return false;
}

static void *worker(void *arg) {
        ts_prov *p = arg;
        pthread_mutex_lock(&p->lock);
        while (!p->stopping) {
                prov_warm *w = next_pending_locked(p);
                if (!w) {
                        pthread_cond_wait(&p->changed, &p->lock);
                        continue;
                }
                w->refs++;
                w->st.state = TS_PROV_WARM_PULLING;
                lease_id(w->key, w->job.lease, sizeof w->job.lease);
                touch_locked(w, true);
                pthread_mutex_unlock(&p->lock);
                ts_error *err = NULL;
                int r = run_warm(w, &err);
                finish(w, r, err);
                pthread_mutex_lock(&p->lock);
                /* The last warm's buffers (downloads, content writes) are
                 * free now: give their pages back instead of keeping the
                 * peak of a pull resident in the daemon. */
                if (!warm_running_locked(p)) {
                        pthread_mutex_unlock(&p->lock);
                        malloc_trim(0);
                        pthread_mutex_lock(&p->lock);
                }
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* ---- recovery of warms a stop interrupted ---- */

static void requeue(ts_prov *p, char *const *labels) {
        const char *ref = ts_ctrd_label(labels, LABEL_WARM_REF);
        const char *platform = ts_ctrd_label(labels, LABEL_WARM_PLATFORM);
        const char *import = ts_ctrd_label(labels, LABEL_WARM_IMPORT);
        if (!ref)
                return;
        ts_prov_warm_request req = { .ref = ref, .platform = platform, .import_fd = -1,
                                     .expected_digest = ts_ctrd_label(labels, LABEL_WARM_EXPECTED) };
        _cleanup_close_ int fd = -1;
        if (import) {
                if ((fd = open(import, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
                        log_warn("interrupted import of %s not resumed: %s: %m", ref, import);
                        return;
                }
                req = (ts_prov_warm_request) { .import_fd = fd, .import_path = import,
                                               .name = strncmp(ref, "import:", 7) ? ref : NULL,
                                               .platform = platform };
        }
        ts_error *err = NULL;
        ts_prov_warm *w = NULL;
        if (warm_queue(p, &req, true, &w, &err) < 0)
                log_warn("interrupted warm of %s not resumed: %s", ref, err->msg);
        else
                log_info("resuming the interrupted warm of %s", ref);
        ts_prov_warm_unref(w);
        ts_error_free(err);
}

static int recover_once(ts_prov *p, ts_error **err) {
        ts_ctrd *c = NULL;
        int r = prov_ctrd(p, &c, err);
        if (r < 0)
                return r;
        char *filters[] = { "labels.\"" LABEL_WARM_REF "\"", NULL };
        ts_ctrd_lease *v = NULL;
        size_t n = 0;
        if ((r = ts_ctrd_lease_list(c, filters, &v, &n, err)) < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                requeue(p, v[i].labels);
        ts_ctrd_lease_list_free(v, n);
        return 0;
}

static void *recovery(void *arg) {
        ts_prov *p = arg;
        bool told = false;
        while (!__atomic_load_n(&p->stopping, __ATOMIC_RELAXED)) {
                ts_error *err = NULL;
                int r = recover_once(p, &err);
                if (r >= 0 || r != -ECONNREFUSED) {
                        if (r < 0)
                                log_warn("cannot look for interrupted warms: %s", err->msg);
                        ts_error_free(err);
                        break;
                }
                if (!told)
                        log_info("containerd not reachable yet; interrupted warms resume when it "
                                 "is: %s", err->msg);
                told = true;
                ts_error_free(err);
                pause_s(p, RECOVER_RETRY_S);
        }
        return NULL;
}

int prov_warm_start_workers(ts_prov *p, ts_error **err) {
        p->workers = calloc(p->max_warms + 1, sizeof(*p->workers));
        if (!p->workers)
                return -ENOMEM;
        for (unsigned i = 0; i <= p->max_warms; i++) {
                int r = pthread_create(&p->workers[i], NULL, i ? worker : recovery, p);
                if (r) {
                        prov_warm_stop_workers(p);
                        return ts_error_set(err, r, "start the warm workers");
                }
                p->n_workers++;
        }
        return 0;
}

void prov_warm_stop_workers(ts_prov *p) {
        pthread_mutex_lock(&p->lock);
        __atomic_store_n(&p->stopping, true, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < p->n_workers; i++)
                pthread_join(p->workers[i], NULL);
        free(p->workers);
        p->workers = NULL;
        p->n_workers = 0;
        pthread_mutex_lock(&p->lock);
        while (p->warms)
                unlink_locked(p->warms);
        pthread_mutex_unlock(&p->lock);
}

void ts_prov_warm_counts(ts_prov *p, uint64_t ret[TS_PROV_WARM_FAILED + 1]) {
        memset(ret, 0, (TS_PROV_WARM_FAILED + 1) * sizeof(*ret));
        pthread_mutex_lock(&p->lock);
        for (const prov_warm *w = p->warms; w; w = w->next)
                if ((unsigned) w->st.state <= TS_PROV_WARM_FAILED)
                        ret[w->st.state]++;
        pthread_mutex_unlock(&p->lock);
}
