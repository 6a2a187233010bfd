/* Preparing an image: the user's image warmed through the warm queue, one
 * more layer that carries the agent, and the record that names the result
 * by the user's digest.
 *
 * The layer's snapshot is made the way no unpacker makes one: Prepare on
 * the user's top chain id, the layer's entries written into that snapshot
 * with inject/ (or into its directory, on a snapshotter whose snapshots are
 * directories), Commit under the new chain id. The same entries become the
 * layer's tar, so the committed tree is what Diff.Apply of the blob would
 * give. Everything is made under a lease with an expiry and the record is
 * written last: an interrupted prepare leaves nothing that looks finished. */
#include "warm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/strv.h"
#include "ctrd/content.h"
#include "ctrd/images.h"
#include "ctrd/leases.h"
#include "ctrd/snapshots.h"
#include "layer.h"
#include "oci/ref.h"
#include "tree.h"

#define AGENT_MODE 0755
#define PARENT_MODE 0755
#define GUEST_PATH_MAX 1024
#define GUEST_DEPTH_MAX 32
#define ENTRIES_MAX (GUEST_DEPTH_MAX + 5)
#define WAIT_SLICE_MS 1000
#define LABEL_MAX 4096 /* containerd: key + value */

static const struct {
        const char *path;
        uint32_t mode;
} mount_points[] = {
        { "/proc", 0555 }, { "/sys", 0555 }, { "/dev", 0755 }, { "/tmp", 01777 }, { "/run", 0755 },
};

/* One call's state. */
typedef struct prepare {
        ts_prov *p;
        ts_ctrd *c;
        const ts_prov_prepare_request *req;
        ts_prov_limits lim;
        const char *guest_path;
        uint64_t agent_size;
        char name[PROV_PREPARED_NAME_MAX]; /* the record */
        char agent[TS_DIGEST_MAX];
        prov_job job;  /* its lease, for the content store helpers */
        char *user;    /* the user's image record: the normalised reference */
        ts_oci_manifest *m;
        uint8_t *cfg;  /* the user's config document */
        size_t cfg_len;
        const prov_chain *ch;
        char key[256]; /* the active snapshot, while there is one */
        prov_layer layer;
        char **paths;  /* the entries' paths made here */
        char chain[TS_DIGEST_MAX], config[TS_DIGEST_MAX], manifest[TS_DIGEST_MAX];
        int64_t config_size, manifest_size;
        char *user_entrypoint, *user_cmd; /* JSON, for the record's labels */
        int64_t t0_ns, warm_ns, layer_ns; /* for the log line */
        /* The head of the layer (up to the agent) written on another thread
         * while the warm runs, on the guess that the tree lacks every
         * parent of the guest path and every mount point sorting before it. */
        pthread_t spec_thread;
        bool spec_running;
        prov_layer_entry spec_head[ENTRIES_MAX];
        size_t spec_n;
        prov_layer_builder *spec;
        int spec_r;
} prepare;

/* ---- one prepare per digest at a time ---- */

typedef struct busy {
        const ts_prov *p;
        const char *digest;
        struct busy *next;
} busy;

static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t busy_done = PTHREAD_COND_INITIALIZER;
static busy *busy_list;

static bool busy_taken_locked(const busy *b) {
        for (const busy *o = busy_list; o; o = o->next)
                if (o->p == b->p && strcmp(o->digest, b->digest) == 0)
                        return true;
        return false;
}

static void busy_enter(busy *b) {
        pthread_mutex_lock(&busy_lock);
        while (busy_taken_locked(b))
                pthread_cond_wait(&busy_done, &busy_lock);
        b->next = busy_list;
        busy_list = b;
        pthread_mutex_unlock(&busy_lock);
}

static void busy_leave(busy *b) {
        pthread_mutex_lock(&busy_lock);
        for (busy **pp = &busy_list; *pp; pp = &(*pp)->next)
                if (*pp == b) {
                        *pp = b->next;
                        break;
                }
        pthread_cond_broadcast(&busy_done);
        pthread_mutex_unlock(&busy_lock);
}

/* ---- the request ---- */

static int check_guest_path(const char *path, ts_error **err) {
        size_t n = strlen(path), depth = 0;
        if (path[0] != '/')
                return ts_error_setf_plain(err, EINVAL, "guest path '%.256s' is not absolute", path);
        if (n > GUEST_PATH_MAX)
                return ts_error_setf_plain(err, EINVAL, "guest path is longer than %d bytes",
                                           GUEST_PATH_MAX);
        for (const char *c = path + 1;; c += strcspn(c, "/") + 1) {
                size_t len = strcspn(c, "/");
                if (len == 0)
                        return ts_error_setf_plain(err, EINVAL, "guest path '%s' has an empty component "
                                                                "('//' or a trailing '/')",
                                                   path);
                if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
                        return ts_error_setf_plain(err, EINVAL, "guest path '%s' contains '%.*s'", path,
                                                   (int) len, c);
                if (len > 255)
                        return ts_error_setf_plain(err, EINVAL, "guest path '%.64s...' has a component "
                                                                "longer than 255 bytes",
                                                   path);
                if (++depth > GUEST_DEPTH_MAX)
                        return ts_error_setf_plain(err, EINVAL, "guest path '%s' is deeper than %d",
                                                   path, GUEST_DEPTH_MAX);
                if (!c[len])
                        break;
        }
        for (size_t i = 0; i < TS_ARRAY_SIZE(mount_points); i++)
                if (strcmp(path, mount_points[i].path) == 0)
                        return ts_error_setf_plain(err, EINVAL, "guest path %s is a mount point the "
                                                                "layer makes",
                                                   path);
        return 0;
}

static int agent_digest(int fd, uint64_t size, char ret[TS_DIGEST_MAX], ts_error **err) {
        _cleanup_sha256_ ts_sha256 *h = NULL;
        _cleanup_free_ char *buf = malloc(1 << 20);
        int r = ts_sha256_new(&h);
        if (r < 0 || !buf)
                return -ENOMEM;
        for (uint64_t off = 0; off < size;) {
                ssize_t n = pread(fd, buf, size - off < (1 << 20) ? (size_t) (size - off) : 1 << 20,
                                  (off_t) off);
                if (n <= 0)
                        return ts_error_set(err, n < 0 ? errno : EINVAL, "read the agent");
                ts_sha256_update(h, buf, (size_t) n);
                off += (uint64_t) n;
        }
        ts_sha256_final(h, ret);
        return 0;
}

static int check_request(prepare *x, ts_error **err) {
        const ts_prov_prepare_request *req = x->req;
        char name[PROV_PREPARED_NAME_MAX];
        int r = prov_prepared_name(req->digest, name, sizeof name, err);
        if (r < 0)
                return r;
        memcpy(x->name, name, sizeof name);
        if (!req->ref || !*req->ref)
                return ts_error_setf_plain(err, EINVAL, "a reference to the user's image is required");
        if (req->entrypoint != TS_PROV_ENTRYPOINT_KEEP && req->entrypoint != TS_PROV_ENTRYPOINT_AGENT)
                return ts_error_setf_plain(err, EINVAL, "entrypoint %d is neither keep nor agent",
                                           (int) req->entrypoint);
        x->guest_path = req->guest_path ? req->guest_path : TS_PROV_DEFAULT_GUEST_PATH;
        if ((r = check_guest_path(x->guest_path, err)) < 0)
                return r;
        struct stat st;
        if (req->agent_fd < 0 || fstat(req->agent_fd, &st) < 0 || !S_ISREG(st.st_mode))
                return ts_error_setf_plain(err, EINVAL, "the agent is not a regular file");
        x->agent_size = (uint64_t) st.st_size;
        if (x->agent_size > x->lim.max_agent_bytes)
                return ts_error_setf_plain(err, EDQUOT, "the agent is %llu bytes, over the limit of %llu "
                                                        "(max_agent_bytes)",
                                           (unsigned long long) x->agent_size,
                                           (unsigned long long) x->lim.max_agent_bytes);
        return agent_digest(req->agent_fd, x->agent_size, x->agent, err);
}

int prov_job_check_target(const prov_job *j, const char *target, ts_error **err) {
        if (!j->expected_digest || strcmp(j->expected_digest, target) == 0)
                return 0;
        return ts_error_setf_plain(err, EBADMSG, "%s resolves to %s, not the expected %s", j->name, target,
                                   j->expected_digest);
}

static const char *entrypoint_name(ts_prov_entrypoint e) {
        return e == TS_PROV_ENTRYPOINT_AGENT ? "agent" : "keep";
}

/* ---- the record there already ---- */

/* 1 and *ret when the record exists, is complete and was made from the
 * same agent, guest path and entrypoint; 0 otherwise (*ret_exists says
 * whether there is a record at all). */
static int already(prepare *x, bool *ret_exists, ts_prov_prepared **ret) {
        ts_ctrd_image rec = { 0 };
        ts_error *e = NULL;
        int r = ts_ctrd_image_get(x->c, x->name, &rec, &e);
        *ret_exists = r >= 0;
        if (r < 0) {
                if (r != -ENOENT)
                        log_debug("prepared image %s: %s", x->name, ts_error_message(e, r));
                ts_error_free(e);
                return 0;
        }
        const char *agent = ts_ctrd_label(rec.labels, LABEL_PREP_AGENT);
        const char *path = ts_ctrd_label(rec.labels, LABEL_PREP_GUEST_PATH);
        const char *ep = ts_ctrd_label(rec.labels, LABEL_PREP_ENTRYPOINT);
        r = 0;
        if (agent && path && ep && strcmp(agent, x->agent) == 0 && strcmp(path, x->guest_path) == 0 &&
            strcmp(ep, entrypoint_name(x->req->entrypoint)) == 0) {
                r = prov_prepared_describe(x->p, x->c, &rec, NULL, ret, &e);
                if (r < 0)
                        log_info("prepared image %s is incomplete and is made again: %s", x->name,
                                 ts_error_message(e, r));
                r = r == -ENOMEM ? r : r >= 0;
                ts_error_free(e);
        }
        ts_ctrd_image_done(&rec);
        return r;
}

/* ---- the user's image ---- */

static int warm(prepare *x, ts_error **err) {
        const ts_prov_prepare_request *req = x->req;
        ts_prov_warm_request wr = {
                .ref = req->ref, .plain_http = req->plain_http, .username = req->username,
                .password = req->password, .ca_pem = req->ca_pem, .ca_pem_len = req->ca_pem_len,
                .import_fd = -1, .expected_digest = req->digest, .limits = &x->lim,
        };
        ts_prov_warm *w = NULL;
        int r = ts_prov_warm_start(x->p, &wr, &w, err);
        for (uint64_t seq = 0; r >= 0;) {
                ts_prov_warm_status s = { 0 };
                int q = ts_prov_warm_wait(w, seq, WAIT_SLICE_MS, &s);
                if (q == -ETIMEDOUT) {
                        if (req->progress && req->progress(req->userdata, NULL) < 0)
                                r = ts_error_setf_plain(err, ECANCELED, "the prepare was cancelled");
                        continue;
                }
                seq = s.seq;
                if (q < 0 || (req->progress && req->progress(req->userdata, &s) < 0))
                        r = q < 0 ? q : ts_error_setf_plain(err, ECANCELED, "the prepare was cancelled");
                else if (s.state == TS_PROV_WARM_FAILED)
                        r = ts_error_setf_plain(err, s.errnum ? s.errnum : EIO, "%s",
                                                s.error ? s.error : "");
                else if (s.state == TS_PROV_WARM_READY) {
                        ts_prov_warm_status_done(&s);
                        break;
                }
                ts_prov_warm_status_done(&s);
        }
        ts_prov_warm_unref(w);
        return r;
}

static int read_doc(prepare *x, const char *digest, uint8_t **ret, size_t *ret_len, ts_error **err) {
        return ts_ctrd_content_read(x->c, digest, TS_OCI_DOCUMENT_MAX, ret, ret_len, err);
}

/* The warmed image: what its record points at must be the user's digest. */
static int load_user_image(prepare *x, ts_error **err) {
        _cleanup_ref_ ts_ref *ref = NULL;
        int r = ts_ref_parse(x->req->ref, &ref, err);
        if (r < 0)
                return r;
        if (!(x->user = ts_ref_string(ref)))
                return -ENOMEM;
        prov_image img = { 0 };
        if ((r = prov_image_find(x->p, x->user, &img, err)) >= 0 &&
            strcmp(img.target.digest, x->req->digest) != 0)
                r = ts_error_setf_plain(err, EBADMSG, "%s resolves to %s, not the expected %s", x->user,
                                        img.target.digest, x->req->digest);
        if (r >= 0)
                r = prov_chain_get(x->p, &img.target, NULL, &x->ch, err);
        prov_image_done(&img);
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        if (r >= 0 && (r = read_doc(x, x->ch->manifest, &buf, &len, err)) >= 0 &&
            (r = ts_oci_manifest_parse(buf, len, &x->m, err)) >= 0 &&
            (r = prov_limits_check_manifest(&x->lim, x->m, err)) >= 0)
                r = read_doc(x, x->ch->config, &x->cfg, &x->cfg_len, err);
        if (r >= 0 && (x->m->n_layers == 0 || x->m->n_layers != x->ch->n_layers))
                r = ts_error_setf_plain(err, EBADMSG, "image %s has %zu layers and a chain of %zu", x->user,
                                        x->m->n_layers, x->ch->n_layers);
        return r;
}

static const char *user_top(const prepare *x) {
        return x->ch->chain_ids[x->ch->n_layers - 1];
}

/* ---- the lease ---- */

static int lease_create(prepare *x, ts_error **err) {
        uint8_t rnd[4] = { 0 };
        if (getrandom(rnd, sizeof rnd, 0) < 0)
                memcpy(rnd, &(int) { getpid() }, sizeof rnd);
        snprintf(x->job.lease, sizeof x->job.lease, PREPARE_LEASE_PREFIX "%.16s.%02x%02x%02x%02x",
                 ts_digest_hex(x->req->digest), rnd[0], rnd[1], rnd[2], rnd[3]);
        char expire[64];
        prov_expiry(WARM_LEASE_HOURS, expire, sizeof expire);
        char *labels[] = { LABEL_GC_EXPIRE, expire, LABEL_PREP_USER_DIGEST, (char *) x->req->digest, NULL };
        int r = ts_ctrd_lease_create(x->c, x->job.lease, labels, NULL, err);
        if (r < 0)
                x->job.lease[0] = '\0';
        return r;
}

static void drop_key(prepare *x) {
        if (!x->key[0])
                return;
        ts_error *e = NULL;
        int r = ts_ctrd_snapshot_remove(x->c, x->p->snapshotter, x->key, &e);
        if (r < 0 && r != -ENOENT)
                log_warn("prepare %s: cannot remove snapshot %s: %s", x->name, x->key, e->msg);
        ts_error_free(e);
        x->key[0] = '\0';
}

/* ---- the layer ---- */

static int add_entry(prov_layer_entry *e, size_t *n, const char *path, prov_layer_kind kind, uint32_t mode,
                     int fd, uint64_t size) {
        for (size_t i = 0; i < *n; i++)
                if (strcmp(e[i].path, path) == 0) {
                        e[i].mode = mode; /* a mount point that is also a parent: its own mode */
                        return 0;
                }
        if (*n == ENTRIES_MAX)
                return -E2BIG;
        e[(*n)++] = (prov_layer_entry) { .path = path, .kind = kind, .mode = mode, .fd = fd, .size = size };
        return 0;
}

/* What may be at a path the layer writes to. */
typedef enum want {
        WANT_PARENT, /* a directory, or a symlink the write resolves inside the tree */
        WANT_FILE,   /* anything but a directory: the agent replaces it */
        WANT_ANY,    /* a mount point: whatever is there stays */
} want;

/* Whether path is in the tree: 1, 0 (absent, or no tree: the guess), or -errno. */
static int present(prov_tree *t, const char *path, want w, ts_error **err) {
        uint32_t mode = 0;
        ts_error *e = NULL;
        if (!t)
                return 0;
        int r = prov_tree_lstat(t, path, &mode, &e);
        if (r == -ENOENT) {
                ts_error_free(e);
                return 0;
        }
        if (r < 0)
                return ts_error_move(err, &e);
        if (w == WANT_PARENT && !S_ISDIR(mode) && !S_ISLNK(mode))
                return ts_error_setf_plain(err, ENOTDIR, "%s is not a directory in the image", path);
        if (w == WANT_FILE && S_ISDIR(mode))
                return ts_error_setf_plain(err, EISDIR, "%s is a directory in the image", path);
        return 1;
}

/* The layer's entries: the guest path's missing parents, the agent, and the
 * mount points the tree lacks. */
static int plan(prepare *x, prov_tree *t, prov_layer_entry *e, size_t *ret_n, ts_error **err) {
        size_t n = 0;
        bool missing = false;
        int r = 0;
        const char *gp = x->guest_path;
        for (const char *s = strchr(gp + 1, '/'); r >= 0 && s; s = strchr(s + 1, '/')) {
                _cleanup_free_ char *parent = strndup(gp, (size_t) (s - gp));
                if (!parent)
                        return -ENOMEM;
                if (!missing && (r = present(t, parent, WANT_PARENT, err)) == 0)
                        missing = true;
                if (r >= 0 && missing && (r = ts_strv_push(&x->paths, parent)) >= 0)
                        r = add_entry(e, &n, x->paths[ts_strv_length(x->paths) - 1], PROV_LAYER_DIR,
                                      PARENT_MODE, -1, 0);
        }
        if (r >= 0 && !missing)
                r = present(t, gp, WANT_FILE, err);
        if (r >= 0)
                r = add_entry(e, &n, gp, PROV_LAYER_FILE, AGENT_MODE, x->req->agent_fd, x->agent_size);
        for (size_t i = 0; r >= 0 && i < TS_ARRAY_SIZE(mount_points); i++)
                if ((r = present(t, mount_points[i].path, WANT_ANY, err)) == 0)
                        r = add_entry(e, &n, mount_points[i].path, PROV_LAYER_DIR, mount_points[i].mode,
                                      -1, 0);
        if (r < 0)
                return ts_error_prefix(err, r, "guest path %s", gp);
        *ret_n = n;
        return 0;
}

static int check_usage(prepare *x, prov_tree *t, ts_error **err) {
        uint64_t bytes = 0, inodes = 0;
        int r = prov_tree_usage(t, &bytes, &inodes, err);
        if (r < 0)
                return r;
        if (bytes > x->lim.max_unpacked_bytes)
                return ts_error_setf_plain(err, EDQUOT, "the image unpacks to %llu bytes, over the limit "
                                                        "of %llu (max_unpacked_bytes)",
                                           (unsigned long long) bytes,
                                           (unsigned long long) x->lim.max_unpacked_bytes);
        if (inodes > x->lim.max_inodes)
                return ts_error_setf_plain(err, EDQUOT, "the image unpacks to %llu inodes, over the limit "
                                                        "of %llu (max_inodes)",
                                           (unsigned long long) inodes,
                                           (unsigned long long) x->lim.max_inodes);
        return 0;
}

/* The new top chain id: sha256(<user's top> + " " + diff_id). */
static int chain_of(prepare *x) {
        char buf[2 * TS_DIGEST_MAX];
        int n = snprintf(buf, sizeof buf, "%s %s", user_top(x), x->layer.diff_id);
        return ts_digest_buffer(buf, (size_t) n, x->chain);
}

static int chain_exists(prepare *x, ts_error **err) {
        ts_ctrd_snapshot s = { 0 };
        ts_error *e = NULL;
        int r = ts_ctrd_snapshot_stat(x->c, x->p->snapshotter, x->chain, &s, &e);
        ts_ctrd_snapshot_done(&s);
        if (r == -ENOENT) {
                ts_error_free(e);
                return 0;
        }
        return r < 0 ? ts_error_move(err, &e) : 1;
}

static void snapshot_key(prepare *x) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) < 0)
                rnd = (uint32_t) ts.tv_nsec;
        snprintf(x->key, sizeof x->key, "prepare-%ld-%08x %s", ts.tv_nsec, rnd, user_top(x));
}

/* Reads the user's tree in an active snapshot on its top, makes the layer
 * from what it lacks, writes the same entries into it and commits it
 * (unless a snapshot of that chain id is there already). */
/* ---- the head of the layer, ahead of time ---- */

static size_t agent_index(const prepare *x, const prov_layer_entry *e, size_t n) {
        size_t k = 0;
        while (k < n && strcmp(e[k].path, x->guest_path) != 0)
                k++;
        return k;
}

static void *spec_run(void *arg) {
        prepare *x = arg;
        x->spec_r = prov_layer_begin(&x->spec, NULL);
        if (x->spec_r >= 0 && (x->spec_r = prov_layer_add(x->spec, x->spec_head, x->spec_n, NULL)) < 0)
                x->spec = prov_layer_builder_free(x->spec);
        return NULL;
}

static void spec_start(prepare *x) {
        prov_layer_entry e[ENTRIES_MAX];
        size_t n = 0;
        if (plan(x, NULL, e, &n, NULL) < 0)
                return;
        prov_layer_sort(e, n);
        x->spec_n = agent_index(x, e, n) + 1;
        memcpy(x->spec_head, e, x->spec_n * sizeof(*e));
        x->spec_running = pthread_create(&x->spec_thread, NULL, spec_run, x) == 0;
}

static void spec_join(prepare *x) {
        if (x->spec_running)
                pthread_join(x->spec_thread, NULL);
        x->spec_running = false;
}

static bool same_entries(const prov_layer_entry *a, const prov_layer_entry *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(a[i].path, b[i].path) != 0 || a[i].kind != b[i].kind || a[i].mode != b[i].mode)
                        return false;
        return true;
}

/* The layer of entries: the head written ahead when the guess was right,
 * the rest now. */
static int layer_of(prepare *x, prov_layer_entry *e, size_t n, ts_error **err) {
        prov_layer_sort(e, n);
        size_t k = agent_index(x, e, n) + 1;
        spec_join(x);
        prov_layer_builder *b = TAKE_PTR(x->spec);
        if (!b || k != x->spec_n || !same_entries(e, x->spec_head, k)) {
                log_debug("prepare %s: the layer's head written ahead does not fit; writing it again",
                          x->name);
                prov_layer_builder_free(b);
                return prov_layer_build(e, n, &x->layer, err);
        }
        int r = prov_layer_add(b, e + k, n - k, err);
        if (r < 0) {
                prov_layer_builder_free(b);
                return r;
        }
        return prov_layer_end(b, &x->layer, err);
}

/* ---- the snapshot ---- */

static int store_layer(prepare *x, ts_error **err);

typedef struct store_job {
        prepare *x;
        int r;
        ts_error *err;
} store_job;

static void *store_run(void *arg) {
        store_job *sj = arg;
        sj->r = store_layer(sj->x, &sj->err);
        return NULL;
}

static int commit(prepare *x, ts_error **err) {
        char *labels[] = { LABEL_SNAPSHOT_REF, x->chain, NULL };
        ts_error *ce = NULL;
        int r = ts_ctrd_snapshot_commit(x->c, x->job.lease, x->p->snapshotter, x->chain, x->key, labels,
                                        &ce);
        if (r == -EEXIST) { /* another prepare committed the same tree first */
                ts_error_free(ce);
                drop_key(x);
                return 0;
        }
        if (r < 0) {
                drop_key(x);
                return ts_error_move(err, &ce);
        }
        x->key[0] = '\0';
        return 0;
}

/* Writes the entries into the snapshot and commits it, while the layer's
 * blob goes into the content store on another thread. */
static int write_and_commit(prepare *x, prov_tree *t, const prov_layer_entry *e, size_t n,
                            ts_error **err) {
        store_job sj = { .x = x };
        pthread_t th;
        bool threaded = pthread_create(&th, NULL, store_run, &sj) == 0;
        int r = prov_tree_write(t, e, n, err);
        if (r < 0)
                prov_tree_free(t);
        else
                r = prov_tree_close(t, err);
        if (r >= 0)
                r = commit(x, err);
        else
                drop_key(x);
        if (threaded)
                pthread_join(th, NULL);
        else
                sj.r = store_layer(x, &sj.err);
        if (r >= 0 && sj.r < 0)
                r = ts_error_move(err, &sj.err);
        ts_error_free(sj.err);
        return r;
}

/* Reads the user's tree in an active snapshot on its top, makes the layer
 * from what it lacks, writes the same entries into it and commits it
 * (unless a snapshot of that chain id is there already), and stores the
 * layer's blob. */
static int make_layer(prepare *x, ts_error **err) {
        ts_ctrd_mounts *mounts = NULL;
        prov_tree *t = NULL;
        prov_layer_entry e[ENTRIES_MAX];
        size_t n = 0;
        snapshot_key(x);
        int r = ts_ctrd_snapshot_prepare(x->c, x->job.lease, x->p->snapshotter, x->key, user_top(x), NULL,
                                         &mounts, err);
        if (r < 0) {
                x->key[0] = '\0';
                return r;
        }
        if ((r = prov_tree_open(mounts, &t, err)) >= 0 && (r = check_usage(x, t, err)) >= 0 &&
            (r = plan(x, t, e, &n, err)) >= 0 && (r = layer_of(x, e, n, err)) >= 0 &&
            (r = chain_of(x)) >= 0)
                r = chain_exists(x, err);
        ts_ctrd_mounts_free(mounts);
        if (r != 0) { /* failed, or the chain is there: nothing to commit */
                prov_tree_free(t);
                drop_key(x);
                return r < 0 ? r : store_layer(x, err);
        }
        return write_and_commit(x, t, e, n, err);
}

/* ---- content ---- */

static int label_blob(prepare *x, const char *digest, const char *key, const char *value, ts_error **err) {
        char *labels[] = { (char *) key, (char *) value, NULL };
        return ts_ctrd_content_update_labels(x->c, digest, labels, NULL, err);
}

static int store(prepare *x, const char *kind, const char *digest, const void *p, size_t n,
                 ts_error **err) {
        char ref[128];
        prov_ingest_ref(kind, digest, ref, sizeof ref);
        return prov_store_bytes(&x->job, ref, digest, p, n, NULL, err);
}

static int store_layer(prepare *x, ts_error **err) {
        int r = store(x, "layer", x->layer.digest, x->layer.blob, x->layer.blob_len, err);
        return r < 0 ? r : label_blob(x, x->layer.digest, LABEL_UNCOMPRESSED, x->layer.diff_id, err);
}

static char *json_strv(char *const *v) {
        json_object *a = json_object_new_array();
        for (char *const *s = v; a && s && *s; s++)
                json_object_array_add(a, json_object_new_string(*s));
        char *out = a ? strdup(json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN |
                                                                     JSON_C_TO_STRING_NOSLASHESCAPE))
                      : NULL;
        json_object_put(a);
        return out;
}

/* config.Entrypoint = [agent], config.Cmd gone. */
static int set_entrypoint(json_object *doc, const char *agent) {
        json_object *config = NULL, *ep = json_object_new_array();
        if (!ep)
                return -ENOMEM;
        json_object_array_add(ep, json_object_new_string(agent));
        if (!json_object_object_get_ex(doc, "config", &config) ||
            !json_object_is_type(config, json_type_object)) {
                config = json_object_new_object();
                json_object_object_add(doc, "config", config);
        }
        json_object_object_add(config, "Entrypoint", ep);
        json_object_object_del(config, "Cmd");
        return 0;
}

/* The user's config with the layer's diff_id and a history entry (no time
 * in it: the same inputs give the same config). */
static int make_config(prepare *x, ts_error **err) {
        _cleanup_config_ ts_oci_config *cfg = NULL;
        int r = ts_oci_config_parse(x->cfg, x->cfg_len, &cfg, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *by = NULL, *doc = NULL;
        if (asprintf(&by, "thinsnap image prepare: agent %s at %s", x->agent, x->guest_path) < 0)
                return -ENOMEM;
        size_t len = 0;
        if (x->req->entrypoint == TS_PROV_ENTRYPOINT_AGENT &&
            (!(x->user_entrypoint = json_strv(cfg->entrypoint)) || !(x->user_cmd = json_strv(cfg->cmd))))
                return -ENOMEM;
        if ((r = ts_oci_config_add_layer(cfg, x->layer.diff_id, NULL, by, "thinsnap agent layer")) < 0 ||
            (x->req->entrypoint == TS_PROV_ENTRYPOINT_AGENT &&
             (r = set_entrypoint(cfg->json, x->guest_path)) < 0) ||
            (r = ts_oci_config_serialize(cfg, &doc, &len)) < 0 ||
            (r = ts_digest_buffer(doc, len, x->config)) < 0)
                return r;
        char key[sizeof(LABEL_GC_SNAPSHOT) + 64];
        snprintf(key, sizeof key, LABEL_GC_SNAPSHOT "%s", x->p->snapshotter);
        if ((r = store(x, "config", x->config, doc, len, err)) < 0)
                return r;
        x->config_size = (int64_t) len;
        return label_blob(x, x->config, key, x->chain, err);
}

/* Docker's layer media types under OCI's names: the bytes are the same. */
static const char *oci_layer_type(const char *t) {
        if (strcmp(t, TS_DOCKER_MEDIA_LAYER_GZIP) == 0)
                return TS_OCI_MEDIA_LAYER_GZIP;
        if (strcmp(t, TS_DOCKER_MEDIA_LAYER_FOREIGN_GZIP) == 0)
                return TS_OCI_MEDIA_LAYER_FOREIGN_GZIP;
        return t;
}

static json_object *descriptor_json(const char *type, const char *digest, int64_t size,
                                    char *const *annotations, char *const *urls) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "mediaType", json_object_new_string(type));
        json_object_object_add(o, "digest", json_object_new_string(digest));
        json_object_object_add(o, "size", json_object_new_int64(size));
        if (urls && *urls) {
                json_object *u = json_object_new_array();
                for (char *const *s = urls; *s; s++)
                        json_object_array_add(u, json_object_new_string(*s));
                json_object_object_add(o, "urls", u);
        }
        if (annotations && *annotations) {
                json_object *a = json_object_new_object();
                for (char *const *kv = annotations; kv[0] && kv[1]; kv += 2)
                        json_object_object_add(a, kv[0], json_object_new_string(kv[1]));
                json_object_object_add(o, "annotations", a);
        }
        return o;
}

static json_object *manifest_json(const prepare *x) {
        json_object *m = json_object_new_object(), *layers = json_object_new_array();
        if (!m || !layers) {
                json_object_put(m);
                json_object_put(layers);
                return NULL;
        }
        json_object_object_add(m, "schemaVersion", json_object_new_int(2));
        json_object_object_add(m, "mediaType", json_object_new_string(TS_OCI_MEDIA_MANIFEST));
        json_object_object_add(m, "config", descriptor_json(TS_OCI_MEDIA_CONFIG, x->config, x->config_size,
                                                            NULL, NULL));
        for (size_t i = 0; i < x->m->n_layers; i++) {
                const ts_oci_descriptor *d = &x->m->layers[i];
                json_object_array_add(layers, descriptor_json(oci_layer_type(d->media_type), d->digest,
                                                              d->size, d->annotations, d->urls));
        }
        json_object_array_add(layers, descriptor_json(TS_OCI_MEDIA_LAYER_GZIP, x->layer.digest,
                                                      (int64_t) x->layer.blob_len, NULL, NULL));
        json_object_object_add(m, "layers", layers);
        return m;
}

static int make_manifest(prepare *x, ts_error **err) {
        json_object *m = manifest_json(x);
        if (!m)
                return -ENOMEM;
        const char *doc = json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN |
                                                                    JSON_C_TO_STRING_NOSLASHESCAPE);
        size_t len = doc ? strlen(doc) : 0;
        int r = doc ? ts_digest_buffer(doc, len, x->manifest) : -ENOMEM;
        if (r >= 0)
                r = store(x, "manifest", x->manifest, doc, len, err);
        json_object_put(m);
        if (r < 0)
                return r;
        x->manifest_size = (int64_t) len;
        size_t n = x->m->n_layers;
        _cleanup_free_ ts_oci_descriptor *children = calloc(n + 1, sizeof(*children));
        if (!children)
                return -ENOMEM;
        memcpy(children, x->m->layers, n * sizeof(*children)); /* only their digests are read */
        children[n].digest = x->layer.digest;
        return prov_label_children(&x->job, x->manifest, LABEL_GC_LAYER, children, n + 1, x->config, err);
}

static int label_fits(const char *key, const char *value, const char *what, ts_error **err) {
        if (strlen(key) + strlen(value) <= LABEL_MAX)
                return 0;
        return ts_error_setf_plain(err, EINVAL, "the image's %s (%zu bytes) is too long for a label of "
                                                "the record (at most %d bytes with its key)",
                                   what, strlen(value), LABEL_MAX);
}

/* The record, last: what makes the prepared image exist. */
static int publish(prepare *x, ts_error **err) {
        char *labels[] = {
                LABEL_PREP_USER_DIGEST, (char *) x->req->digest,
                LABEL_PREP_SOURCE, (char *) x->req->ref,
                LABEL_PREP_AGENT, x->agent,
                LABEL_PREP_GUEST_PATH, (char *) x->guest_path,
                LABEL_PREP_ENTRYPOINT, (char *) entrypoint_name(x->req->entrypoint),
                x->user_entrypoint ? LABEL_PREP_USER_ENTRYPOINT : NULL, x->user_entrypoint,
                LABEL_PREP_USER_CMD, x->user_cmd,
                NULL,
        };
        int r = 0;
        if (x->user_entrypoint && ((r = label_fits(LABEL_PREP_USER_ENTRYPOINT, x->user_entrypoint,
                                                   "entrypoint", err)) < 0 ||
                                   (r = label_fits(LABEL_PREP_USER_CMD, x->user_cmd, "cmd", err)) < 0))
                return r;
        if ((r = label_fits(LABEL_PREP_SOURCE, x->req->ref, "reference", err)) < 0)
                return r;
        ts_ctrd_image img = {
                .name = x->name,
                .labels = labels,
                .target = { .media_type = TS_OCI_MEDIA_MANIFEST, .digest = x->manifest,
                            .size = x->manifest_size },
        };
        return prov_image_put(x->c, &img, err);
}

/* ---- the whole ---- */

static int build(prepare *x, ts_error **err) {
        int r = lease_create(x, err);
        if (r < 0)
                return r;
        if ((r = make_layer(x, err)) < 0)
                return r;
        x->layer_ns = prov_now_ns();
        if ((r = make_config(x, err)) >= 0 &&
            (r = make_manifest(x, err)) >= 0)
                r = publish(x, err);
        return r;
}

static int describe_new(prepare *x, ts_prov_prepared **ret, ts_error **err) {
        ts_ctrd_image rec = { 0 };
        int r = ts_ctrd_image_get(x->c, x->name, &rec, err);
        if (r >= 0)
                r = prov_prepared_describe(x->p, x->c, &rec, NULL, ret, err);
        ts_ctrd_image_done(&rec);
        if (r >= 0)
                (*ret)->changed = true;
        return r;
}

static int run(prepare *x, ts_prov_prepared **ret, ts_error **err) {
        bool replaces = false;
        int r = already(x, &replaces, ret);
        if (r != 0)
                return r < 0 ? r : 0;
        x->t0_ns = prov_now_ns();
        spec_start(x);
        if ((r = warm(x, err)) < 0 || (r = load_user_image(x, err)) < 0)
                return r;
        x->warm_ns = prov_now_ns();
        x->job = (prov_job) { .p = x->p, .c = x->c };
        r = build(x, err);
        if (x->job.lease[0]) {
                /* A record that was replaced leaves its old layer and snapshot
                 * to be collected: collect them now. */
                ts_error *e = NULL;
                if (ts_ctrd_lease_delete(x->c, x->job.lease, r >= 0 && replaces, &e) < 0)
                        log_warn("prepare %s: lease %s stays until it expires: %s", x->name, x->job.lease,
                                 e->msg);
                ts_error_free(e);
        }
        if (r < 0)
                return r;
        int64_t now = prov_now_ns();
        log_info("prepared %s: %s with agent %s at %s in %.0f ms (warm %.0f, agent layer %.0f, "
                 "records %.0f)",
                 x->name, x->user, x->agent, x->guest_path, (double) (now - x->t0_ns) / 1e6,
                 (double) (x->warm_ns - x->t0_ns) / 1e6, (double) (x->layer_ns - x->warm_ns) / 1e6,
                 (double) (now - x->layer_ns) / 1e6);
        return describe_new(x, ret, err);
}

static void prepare_done(prepare *x) {
        spec_join(x);
        prov_layer_builder_free(x->spec);
        free(x->user);
        ts_oci_manifest_free(x->m);
        free(x->cfg);
        prov_layer_done(&x->layer);
        ts_strv_free(x->paths);
        free(x->user_entrypoint);
        free(x->user_cmd);
}

int ts_prov_prepare(ts_prov *p, const ts_prov_prepare_request *req, ts_prov_prepared **ret,
                    ts_error **err) {
        prepare x = { .p = p, .req = req };
        prov_limits_merge(&p->limits, &req->limits, &x.lim);
        int r = check_request(&x, err);
        if (r >= 0)
                r = prov_ctrd(p, &x.c, err);
        if (r >= 0) {
                busy b = { .p = p, .digest = req->digest };
                busy_enter(&b);
                r = run(&x, ret, err);
                busy_leave(&b);
        }
        prepare_done(&x);
        return r < 0 ? ts_error_prefix(err, r, "prepare %s", req->digest ? req->digest : "") : 0;
}
