#include "snapshotter.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/strv.h"
#include "plugin/snapdev.h"
#include "plugin/snapfilter.h"

#define EARLY_MAX 256

/* Spares: active snapshots of a parent cut ahead (snapshotter.h, Spares). */
#define SPARE_PREFIX "~spare/"
#define SPARES_LABEL_MAX 1024
#define SPARE_QUIET_MS 100 /* the filler cuts once Prepares have paused this long */

struct ts_snapshotter {
        ts_store *store;
        ts_snapdev *dev;
        uint64_t base_size;
        uint32_t base_id;
        int64_t base_mapped; /* bytes mapped in the base device */
        bool async_remove;
        bool discard;
        ts_label_limits labels;
        ts_fault *fault; /* THINSNAPD_FAULT */

        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct held_key *held; /* keys in operation */

        /* Removed by ts_snapshotter_remove_device, not yet asked to remove
         * by containerd's collector (a ring; under lock). */
        struct early { char *ns, *key; } early[EARLY_MAX];
        unsigned early_next;

        /* async removal */
        pthread_t reaper;
        bool reaper_running, stopping, reap_pending;

        /* spares (under lock) */
        uint32_t spares_max;
        struct spare_want *wants; /* parents whose spares to top up */
        uint64_t spare_seq;       /* the last spare key's number */
        int64_t last_prepare_ns;  /* when the last Prepare began (monotonic) */
        uint32_t spare_quiet_ms;
        pthread_t filler;
        bool filler_running;
};

static bool is_spare_key(const char *key) {
        return key && strncmp(key, SPARE_PREFIX, strlen(SPARE_PREFIX)) == 0;
}

/* A parent whose spares the filler is to top up to n. */
typedef struct spare_want {
        struct spare_want *next;
        char *ns, *parent;
        uint32_t n;
} spare_want;

static void *filler_main(void *p);
static void want_free(spare_want *w);

static void error_clear(ts_error **err) {
        if (err) {
                ts_error_free(*err);
                *err = NULL;
        }
}

/* Kills the process at a named step when THINSNAPD_FAULT names it, so the
 * crash tests can prove that a restart finishes or rolls back each step. */
static void fault(ts_snapshotter *s, const char *op, const char *point) {
        ts_fault_point(s->fault, op, point);
}

/* ---- per-key serialisation ---- */

/* A key in operation, "<ns>\x1f<key>". lock_keys allocates one per key
 * and hands them out in a key_lock, so unlock_keys only unlinks and frees:
 * it cannot fail and leave a key locked for ever. */
typedef struct held_key {
        struct held_key *next;
        char id[];
} held_key;

typedef struct key_lock {
        held_key *k[2];
} key_lock;

static held_key *held_new(const char *ns, const char *key) {
        size_t a = strlen(ns), b = strlen(key);
        held_key *h = malloc(sizeof(*h) + a + b + 2);
        if (!h)
                return NULL;
        h->next = NULL;
        memcpy(h->id, ns, a);
        h->id[a] = '\x1f';
        memcpy(h->id + a + 1, key, b + 1);
        return h;
}

static bool is_held(const ts_snapshotter *s, const held_key *k) {
        for (const held_key *h = s->held; k && h; h = h->next)
                if (strcmp(h->id, k->id) == 0)
                        return true;
        return false;
}

/* Waits until neither key (k2 may be NULL) is in operation, then holds
 * both; *ret is what unlock_keys takes. Returns 0 or -ENOMEM. */
static int lock_keys(ts_snapshotter *s, const char *ns, const char *k1, const char *k2, key_lock *ret) {
        key_lock l = { { held_new(ns, k1), k2 ? held_new(ns, k2) : NULL } };
        if (!l.k[0] || (k2 && !l.k[1])) {
                free(l.k[0]);
                free(l.k[1]);
                return -ENOMEM;
        }
        pthread_mutex_lock(&s->lock);
        while (is_held(s, l.k[0]) || is_held(s, l.k[1]))
                pthread_cond_wait(&s->cond, &s->lock);
        for (size_t i = 0; i < 2 && l.k[i]; i++) {
                l.k[i]->next = s->held;
                s->held = l.k[i];
        }
        pthread_mutex_unlock(&s->lock);
        *ret = l;
        return 0;
}

static void unlock_keys(ts_snapshotter *s, key_lock *l) {
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < 2; i++)
                for (held_key **p = &s->held; l->k[i] && *p; p = &(*p)->next)
                        if (*p == l->k[i]) {
                                *p = l->k[i]->next;
                                break;
                        }
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        free(l->k[0]);
        free(l->k[1]);
        *l = (key_lock) { { NULL, NULL } };
}

/* ---- records and the base device ---- */

static void fill_mount(const ts_snapshotter *s, const ts_store_info *info, ts_mount *m) {
        ts_snapdev_path(s->dev, info->dev_id, m->source, sizeof m->source);
        m->read_only = info->kind == TS_KIND_VIEW;
}

/* Runs fn in a write transaction of its own, committed when fn succeeds; a
 * full map is grown and fn run again (store.h ts_store_write), so every fn
 * here starts afresh from its arguments. */
static int txn_run(ts_snapshotter *s, ts_store_write_fn fn, void *arg, ts_error **err) {
        return ts_store_write(s->store, fn, arg, err);
}

struct base_arg {
        uint64_t size;
        ts_store_base base;
};

static int base_reserve(ts_store_txn *txn, void *p, ts_error **err) {
        struct base_arg *a = p;
        int r = ts_store_base_get(txn, a->size, &a->base, NULL);
        if (r == -ENOENT)
                r = ts_store_base_create(txn, a->size, &a->base, err);
        return r;
}

static int base_formatted(ts_store_txn *txn, void *p, ts_error **err) {
        return ts_store_base_set_formatted(txn, ((struct base_arg *) p)->size, err);
}

static int ensure_base(ts_snapshotter *s, ts_error **err) {
        struct base_arg a = { .size = s->base_size };
        int r = txn_run(s, base_reserve, &a, err);
        if (r < 0)
                return ts_error_prefix(err, r, "base device of %" PRIu64 " bytes", s->base_size);
        s->base_id = a.base.dev_id;
        r = ts_snapdev_base(s->dev, s->base_id, s->base_size, !a.base.formatted, &s->base_mapped, err);
        if (r < 0 || a.base.formatted)
                return r;
        return txn_run(s, base_formatted, &a, err);
}

/* ---- start-up reconciliation ---- */

struct pending {
        char *ns, *key;
        uint32_t dev_id;
        ts_snapshot_kind kind;
        ts_snapshot_state state;
        uint64_t dev_size;
};

struct recon {
        struct pending *v;
        size_t n;
};

static int collect(const ts_store_info *info, void *p) {
        struct recon *rc = p;
        struct pending *nv = realloc(rc->v, (rc->n + 1) * sizeof(*nv));
        if (!nv)
                return -ENOMEM;
        rc->v = nv;
        struct pending *e = &rc->v[rc->n];
        e->ns = strdup(info->namespace);
        e->key = strdup(info->name);
        if (!e->ns || !e->key) {
                free(e->ns);
                free(e->key);
                return -ENOMEM;
        }
        e->dev_id = info->dev_id;
        e->kind = info->kind;
        e->state = info->state;
        e->dev_size = info->dev_size;
        rc->n++;
        return 0;
}

static void recon_done(struct recon *rc) {
        for (size_t i = 0; i < rc->n; i++) {
                free(rc->v[i].ns);
                free(rc->v[i].key);
        }
        free(rc->v);
}

/* Collects every snapshot of every namespace into rc, in one read
 * transaction. rc holds what was collected even on failure. */
static int collect_all(ts_snapshotter *s, struct recon *rc, ts_error **err) {
        _cleanup_txn_ ts_store_txn *txn = NULL;
        int r = ts_store_begin(s->store, false, &txn, err);
        if (r < 0)
                return r;
        return ts_store_walk(txn, NULL, collect, rc, err);
}

struct key_arg {
        const char *ns, *key;
};

static int delete_record(ts_store_txn *txn, void *p, ts_error **err) {
        struct key_arg *a = p;
        return ts_store_delete(txn, a->ns, a->key, err);
}

/* Finishes a removal whose intent (REMOVING) is recorded. */
static int finish_remove(ts_snapshotter *s, const char *ns, const char *key, uint32_t dev_id,
                         uint64_t dev_size, ts_error **err) {
        int r = ts_snapdev_drop(s->dev, dev_id, dev_size, s->discard, err);
        if (r < 0)
                return r;
        fault(s, "remove", "after-delete");
        struct key_arg a = { ns, key };
        return txn_run(s, delete_record, &a, err);
}

static int base_delete(ts_store_txn *txn, void *p, ts_error **err) {
        return ts_store_base_delete(txn, *(uint64_t *) p, err);
}

struct recovered {
        unsigned rolled, finished, left, activated;
};

/* Removes a record found REMOVING at open, unless its device is still held
 * open: then the record stays REMOVING (invisible) and the removal is
 * finished later (the reaper, a reuse of the key, or the next start); it
 * must not keep the daemon down. */
static int recover_removal(ts_snapshotter *s, const struct pending *e, struct recovered *n,
                           ts_error **err) {
        _cleanup_error_ ts_error *busy = NULL;
        int r = finish_remove(s, e->ns, e->key, e->dev_id, e->dev_size, &busy);
        if (r == -EBUSY) {
                log_warn("remove of %s/%s left for later: %s", e->ns, e->key, ts_error_message(busy, r));
                n->left++;
                return 0;
        }
        if (r < 0)
                return ts_error_move(err, &busy);
        n->finished++;
        return 0;
}

/* Finishes, rolls back or settles the device of one record found at open. */
static int recover_one(ts_snapshotter *s, const struct pending *e, struct recovered *n, ts_error **err) {
        int r;
        if (e->state == TS_STATE_CREATING) {
                r = finish_remove(s, e->ns, e->key, e->dev_id, e->dev_size, err);
                n->rolled++;
        } else if (e->state == TS_STATE_REMOVING)
                r = recover_removal(s, e, n, err);
        else {
                r = ts_snapdev_settle(s->dev, e->dev_id, e->dev_size, e->kind != TS_KIND_COMMITTED, err);
                n->activated += r > 0;
        }
        if (r < 0)
                return ts_error_prefix(err, r, "recover snapshot %s/%s (device %" PRIu32 ")", e->ns, e->key,
                                       e->dev_id);
        return 0;
}

/* Formatted bases are made inactive; bases whose format did not finish are
 * dropped, to be made again from scratch. */
static int recover_bases(ts_snapshotter *s, ts_error **err) {
        _cleanup_free_ ts_store_base *bases = NULL;
        size_t nb = 0;
        _cleanup_txn_ ts_store_txn *txn = NULL;
        int r = ts_store_begin(s->store, false, &txn, err);
        if (r < 0)
                return r;
        r = ts_store_base_list(txn, &bases, &nb, err);
        txn = ts_store_txn_abort(txn);
        for (size_t i = 0; r >= 0 && i < nb; i++) {
                if (bases[i].formatted) {
                        r = ts_snapdev_deactivate(s->dev, bases[i].dev_id, err);
                        continue;
                }
                r = ts_snapdev_drop(s->dev, bases[i].dev_id, 0, false, err);
                if (r >= 0)
                        r = txn_run(s, base_delete, &bases[i].size, err);
        }
        return r;
}

static int reconcile(ts_snapshotter *s, ts_error **err) {
        struct recon rc = { 0 };
        struct recovered n = { 0 };
        int r = collect_all(s, &rc, err);
        for (size_t i = 0; r >= 0 && i < rc.n; i++)
                r = recover_one(s, &rc.v[i], &n, err);
        recon_done(&rc);
        if (r >= 0)
                r = recover_bases(s, err);
        if (r < 0)
                return r;
        if (n.rolled || n.finished || n.left || n.activated)
                log_info("recovered after a stop: %u unfinished prepares rolled back, %u removals "
                         "finished (%u left for later), %u devices re-activated",
                         n.rolled, n.finished, n.left, n.activated);
        return 0;
}

/* ---- async removal ---- */

/* Reads key's record in a read transaction of its own. */
static int read_record(ts_snapshotter *s, const char *ns, const char *key, ts_store_info *ret, ts_error **err) {
        _cleanup_txn_ ts_store_txn *txn = NULL;
        int r = ts_store_begin(s->store, false, &txn, err);
        if (r < 0)
                return r;
        return ts_store_get(txn, ns, key, ret, err);
}

/* With key's lock held: finishes the removal of key when its record is
 * REMOVING, an asynchronous removal the reaper has not got to yet. The
 * record is read under the lock, so a removal that someone else finished
 * meanwhile (and whose device id may be handed out again) is never redone.
 * Returns 1 when it finished one, 0 when the record is absent or not
 * REMOVING, or a negative errno. *ret_present (may be NULL) tells whether a
 * record other than a REMOVING one is there. */
static int settle_removal_locked(ts_snapshotter *s, const char *ns, const char *key, bool *ret_present,
                                 ts_error **err) {
        if (ret_present)
                *ret_present = false;
        _cleanup_store_info_ ts_store_info info = { 0 };
        _cleanup_error_ ts_error *e = NULL;
        int r = read_record(s, ns, key, &info, &e);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return ts_error_move(err, &e);
        bool removing = info.state == TS_STATE_REMOVING;
        if (ret_present)
                *ret_present = !removing;
        if (!removing)
                return 0;
        r = finish_remove(s, ns, key, info.dev_id, info.dev_size, err);
        return r < 0 ? r : 1;
}

/* Finishes every recorded removal; returns how many failed (they stay
 * recorded for the next pass), or a negative errno. */
static int reap_once(ts_snapshotter *s, ts_error **err) {
        struct recon rc = { 0 };
        int r = collect_all(s, &rc, err);
        int failed = 0;
        for (size_t i = 0; r >= 0 && i < rc.n; i++) {
                struct pending *e = &rc.v[i];
                if (e->state != TS_STATE_REMOVING)
                        continue;
                pthread_mutex_lock(&s->lock);
                bool stopping = s->stopping;
                pthread_mutex_unlock(&s->lock);
                if (stopping) /* the next start's reconciliation finishes the rest */
                        break;
                key_lock kl;
                int q = lock_keys(s, e->ns, e->key, NULL, &kl);
                if (q < 0) {
                        failed++;
                        continue;
                }
                ts_error *e2 = NULL;
                q = settle_removal_locked(s, e->ns, e->key, NULL, &e2);
                unlock_keys(s, &kl);
                if (q < 0) {
                        failed++;
                        log_warn("async remove of %s/%s: %s (retried later)", e->ns, e->key,
                                 ts_error_message(e2, q));
                } else if (q > 0)
                        log_debug("async remove of %s/%s: device %u deleted", e->ns, e->key, e->dev_id);
                ts_error_free(e2);
        }
        recon_done(&rc);
        return r < 0 ? r : failed;
}

struct remove_arg {
        const char *ns, *key;
        uint32_t dev_id; /* 0: any; else key must still have this device */
        ts_store_info info;
};

static int remove_begin(ts_store_txn *txn, void *p, ts_error **err) {
        struct remove_arg *a = p;
        ts_store_info_done(&a->info);
        int r = ts_store_remove_begin(txn, a->ns, a->key, &a->info, err);
        if (r >= 0 && a->dev_id && a->info.dev_id != a->dev_id)
                r = ts_error_setf_plain(err, ENOENT, "snapshot %s no longer has device %u", a->key,
                                        a->dev_id);
        return r;
}

struct children_arg {
        const char *parent;
        char **keys;   /* children whose asynchronous removal is pending */
        char **spares; /* READY spares */
        unsigned others;
};

static int sort_child(const ts_store_info *info, void *p) {
        struct children_arg *a = p;
        if (!info->parent || strcmp(info->parent, a->parent) != 0)
                return 0;
        if (info->state == TS_STATE_REMOVING)
                return ts_strv_push(&a->keys, info->name);
        if (is_spare_key(info->name))
                return ts_strv_push(&a->spares, info->name);
        a->others++;
        return 0;
}

/* With its lock held (and its parent's): removes the spare key, whatever its
 * state: READY (marked REMOVING first), REMOVING, or CREATING left by a
 * rollback that failed (no spare is in the making while its parent is
 * locked). A spare was never written: no discard. 1 when removed, 0 when
 * gone already. */
static int drop_spare_locked(ts_snapshotter *s, const char *ns, const char *key, ts_error **err) {
        _cleanup_store_info_ ts_store_info info = { 0 };
        int r = read_record(s, ns, key, &info, err);
        if (r == -ENOENT) {
                error_clear(err);
                return 0;
        }
        if (r >= 0 && info.state == TS_STATE_READY) {
                struct remove_arg a = { ns, key, info.dev_id, { 0 } };
                r = txn_run(s, remove_begin, &a, err);
                ts_store_info_done(&a.info);
        }
        if (r >= 0)
                r = ts_snapdev_drop(s->dev, info.dev_id, info.dev_size, false, err);
        if (r >= 0) {
                struct key_arg k = { ns, key };
                r = txn_run(s, delete_record, &k, err);
        }
        return r < 0 ? r : 1;
}

/* With its lock held: removes the spare key, or finishes the pending removal
 * of another child (1), or finds it gone (0). */
static int drop_child_locked(ts_snapshotter *s, const char *ns, const char *key, ts_error **err) {
        return is_spare_key(key) ? drop_spare_locked(s, ns, key, err)
                                 : settle_removal_locked(s, ns, key, NULL, err);
}

/* Removes what keeps key from being removed when nothing else does: its
 * children's pending asynchronous removals, and its spares when no other
 * child is left (key's lock held: children are locked after their parent,
 * never the other way round). Returns how many are gone now (finished here
 * or by the reaper meanwhile), or a negative errno when one could not be
 * finished. */
static int settle_children(ts_snapshotter *s, const char *ns, const char *key) {
        struct children_arg a = { key, NULL, NULL, 0 };
        _cleanup_txn_ ts_store_txn *txn = NULL;
        int r = ts_store_begin(s->store, false, &txn, NULL);
        if (r < 0)
                return r;
        r = ts_store_walk(txn, ns, sort_child, &a, NULL);
        txn = ts_store_txn_abort(txn);
        if (r >= 0 && a.others == 0)
                for (char **k = a.spares; r >= 0 && k && *k; k++)
                        r = ts_strv_push(&a.keys, *k);
        ts_strv_free(a.spares);
        int done = 0;
        for (char **k = a.keys; r >= 0 && k && *k; k++) {
                key_lock kl;
                r = lock_keys(s, ns, *k, NULL, &kl);
                if (r < 0)
                        break;
                ts_error *e = NULL;
                r = drop_child_locked(s, ns, *k, &e);
                unlock_keys(s, &kl);
                if (r < 0)
                        log_warn("remove %s/%s: removing its child %s: %s", ns, key, *k,
                                 ts_error_message(e, r));
                ts_error_free(e);
                done += r >= 0;
        }
        ts_strv_free(a.keys);
        return r < 0 ? r : done;
}

#define REAP_RETRY_MIN_S 1
#define REAP_RETRY_MAX_S 60

static void *reaper_main(void *p) {
        ts_snapshotter *s = p;
        unsigned retry_s = 0; /* 0: nothing failed, wait for a Remove */
        pthread_mutex_lock(&s->lock);
        for (;;) {
                if (retry_s && !s->reap_pending && !s->stopping) {
                        /* A removal failed (its device still open, say): try again later. */
                        struct timespec until = ts_clock_mono_after((uint64_t) retry_s * 1000);
                        while (!s->reap_pending && !s->stopping &&
                               pthread_cond_timedwait(&s->cond, &s->lock, &until) != ETIMEDOUT)
                                ;
                        s->reap_pending = true;
                }
                while (!s->reap_pending && !s->stopping)
                        pthread_cond_wait(&s->cond, &s->lock);
                /* At a stop, what is left is finished by the next start's reconciliation. */
                if (s->stopping)
                        break;
                s->reap_pending = false;
                pthread_mutex_unlock(&s->lock);
                int failed = reap_once(s, NULL);
                if (failed == 0)
                        retry_s = 0;
                else
                        retry_s = retry_s == 0                    ? REAP_RETRY_MIN_S
                                  : retry_s * 2 > REAP_RETRY_MAX_S ? REAP_RETRY_MAX_S
                                                                   : retry_s * 2;
                pthread_mutex_lock(&s->lock);
        }
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

/* ---- open / close ---- */

int ts_snapshotter_open(const ts_snapshotter_config *cfg, ts_snapshotter **ret, ts_error **err) {
        if (cfg->base_size == 0 || cfg->base_size % 4096) {
                ts_snapdev_free(cfg->dev);
                return ts_error_setf_plain(err, EINVAL, "base size %" PRIu64 " is not a positive "
                                                        "multiple of 4 KiB", cfg->base_size);
        }
        ts_snapshotter *s = calloc(1, sizeof(*s));
        if (!s) {
                ts_snapdev_free(cfg->dev);
                return ts_error_set(err, ENOMEM, "snapshotter");
        }
        s->dev = cfg->dev;
        pthread_mutex_init(&s->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the reaper's retry waits */
        pthread_cond_init(&s->cond, &ca);
        pthread_condattr_destroy(&ca);
        s->base_size = cfg->base_size;
        s->async_remove = cfg->async_remove;
        s->discard = cfg->discard_on_remove;
        s->spares_max = cfg->spares_max;
        s->spare_quiet_ms = cfg->spare_quiet_ms ? cfg->spare_quiet_ms : SPARE_QUIET_MS;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now); /* spare keys go on past those left by a stop */
        s->spare_seq = (uint64_t) now.tv_sec * 1000000000u + (uint64_t) now.tv_nsec;
        s->labels = cfg->labels;
        int r = ts_label_limits_resolve(&s->labels, err);
        if (r >= 0)
                r = ts_fault_from_env("THINSNAPD_FAULT", &s->fault, err);
        if (r >= 0 && !s->dev) {
                ts_snapdev_config dc = { .pool = cfg->pool, .root = cfg->root, .mkfs = cfg->mkfs,
                                        .fault = s->fault };
                r = ts_snapdev_open(&dc, &s->dev, err);
        }
        ts_store_options so = {
                .dev_id_max = cfg->dev_id_max,
                .map_size = cfg->store_map_size,
                .map_max = cfg->store_map_max,
                .labels = s->labels,
        };
        if (r >= 0)
                r = ts_store_open(cfg->root, &so, &s->store, err);
        if (r >= 0)
                r = reconcile(s, err);
        if (r >= 0)
                r = ensure_base(s, err);
        if (r >= 0 && s->async_remove) {
                s->reap_pending = true; /* removals left by reconcile, if any */
                r = -pthread_create(&s->reaper, NULL, reaper_main, s);
                if (r < 0)
                        ts_error_set(err, r, "start the removal thread");
                else
                        s->reaper_running = true;
        }
        if (r >= 0 && s->spares_max) {
                r = -pthread_create(&s->filler, NULL, filler_main, s);
                if (r < 0)
                        ts_error_set(err, r, "start the spares thread");
                else
                        s->filler_running = true;
        }
        if (r < 0) {
                ts_snapshotter_close(s);
                return r;
        }
        *ret = s;
        return 0;
}

ts_snapshotter *ts_snapshotter_close(ts_snapshotter *s) {
        if (!s)
                return NULL;
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        if (s->reaper_running)
                pthread_join(s->reaper, NULL);
        if (s->filler_running)
                pthread_join(s->filler, NULL);
        while (s->wants) {
                spare_want *w = s->wants;
                s->wants = w->next;
                want_free(w);
        }
        ts_store_close(s->store);
        ts_snapdev_free(s->dev);
        assert(!s->held); /* every operation has returned */
        for (unsigned i = 0; i < EARLY_MAX; i++) {
                free(s->early[i].ns);
                free(s->early[i].key);
        }
        ts_fault_free(s->fault);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
}

/* ---- operations ---- */

struct create_arg {
        const char *ns, *key, *parent;
        ts_snapshot_kind kind;
        const ts_label *labels;
        size_t n_labels;
        uint64_t size;
        uint32_t origin;
        uint64_t parent_id; /* a spare's: its parent must still be this snapshot */
        ts_store_info info;
        bool adopted; /* info is a spare's record, renamed to key */
};

static int create_record(ts_store_txn *txn, void *p, ts_error **err) {
        struct create_arg *a = p;
        ts_store_info_done(&a->info);
        if (a->parent && *a->parent) {
                _cleanup_store_info_ ts_store_info parent = { 0 };
                int r = ts_store_get(txn, a->ns, a->parent, &parent, err);
                if (r < 0)
                        return r;
                if (a->parent_id && parent.id != a->parent_id) /* removed and made again */
                        return ts_error_setf_plain(err, ENOENT, "snapshot %s is another one now",
                                                   a->parent);
                a->size = parent.dev_size;
                a->origin = parent.dev_id;
        }
        return ts_store_create(txn, a->ns, a->key, a->parent, a->kind, a->labels, a->n_labels, a->size,
                               &a->info, err);
}

struct state_arg {
        const char *ns, *key;
        ts_snapshot_state state;
};

static int set_state(ts_store_txn *txn, void *p, ts_error **err) {
        struct state_arg *a = p;
        return ts_store_set_state(txn, a->ns, a->key, a->state, err);
}

/* Records a Prepare (CREATING); a key whose asynchronous removal was not
 * reaped yet is freed first. */
static int record_prepare(ts_snapshotter *s, struct create_arg *a, ts_error **err) {
        int r = txn_run(s, create_record, a, err);
        if (r == -EEXIST && settle_removal_locked(s, a->ns, a->key, NULL, NULL) > 0) {
                error_clear(err);
                r = txn_run(s, create_record, a, err);
        }
        return r;
}

/* The device steps of a recorded Prepare, then its record READY. *snapped
 * tells whether the device was made. */
static int make_device(ts_snapshotter *s, const struct create_arg *a, bool *snapped, ts_error **err) {
        fault(s, "prepare", "after-record");
        int r = ts_snapdev_snap(s->dev, a->info.dev_id, a->origin, err);
        if (r < 0)
                return r;
        *snapped = true;
        fault(s, "prepare", "after-snap");
        r = ts_snapdev_activate(s->dev, a->info.dev_id, a->info.dev_size, err);
        if (r < 0)
                return r;
        fault(s, "prepare", "after-activate");
        struct state_arg st = { a->ns, a->key, TS_STATE_READY };
        return txn_run(s, set_state, &st, err);
}

/* Undoes a Prepare that failed with r after its record: the device (when
 * made), then the record. Returns r, or -ENOSPC with the pool's figures
 * when the pool is out of space now: it filled after the space check, and
 * that is the answer whatever the kernel returned (a pool out of metadata
 * space refuses messages with EOPNOTSUPP). */
static int rollback_prepare(ts_snapshotter *s, const struct create_arg *a, bool snapped, int r,
                            ts_error **err) {
        _cleanup_error_ ts_error *e2 = NULL;
        int q = snapped ? ts_snapdev_drop(s->dev, a->info.dev_id, 0, false, &e2) : 0;
        if (q >= 0) {
                struct key_arg k = { a->ns, a->key };
                q = txn_run(s, delete_record, &k, &e2);
        }
        if (q < 0)
                log_warn("prepare %s/%s: rollback left the record for start-up recovery: %s", a->ns, a->key,
                         ts_error_message(e2, q));
        _cleanup_error_ ts_error *why = NULL;
        if (ts_snapdev_check_space(s->dev, true, &why) != -ENOSPC)
                return r;
        if (err) {
                ts_error_free(*err);
                *err = TAKE_PTR(why);
        }
        return -ENOSPC;
}

/* Prepare 1-3 for a->key, whose lock (and its parent's, for a spare) is held. */
static int prepare_locked(ts_snapshotter *s, struct create_arg *a, ts_mount *ret_mount, ts_error **err) {
        int r = record_prepare(s, a, err);
        if (r < 0)
                return r;
        bool snapped = false;
        r = make_device(s, a, &snapped, err);
        if (r < 0)
                return rollback_prepare(s, a, snapped, r, err);
        if (ret_mount)
                fill_mount(s, &a->info, ret_mount);
        return 0;
}

/* ---- spares ---- */

/* How many spares a Prepare's labels ask its parent to keep: 0 without the
 * label or with spares off; at most spares_max. */
static int spares_wanted(const ts_snapshotter *s, const ts_label *labels, size_t n, uint32_t *ret,
                         ts_error **err) {
        *ret = 0;
        for (size_t i = 0; i < n; i++) {
                if (strcmp(labels[i].key, TS_SNAPSHOTTER_SPARES_LABEL) != 0)
                        continue;
                const char *v = labels[i].value;
                char *end = NULL;
                errno = 0;
                unsigned long k = strtoul(v, &end, 10);
                if (!isdigit((unsigned char) v[0]) || *end || errno || k > SPARES_LABEL_MAX)
                        return ts_error_setf_plain(err, EINVAL, "label %s: '%.32s' is not a number "
                                                                "from 0 to %u", TS_SNAPSHOTTER_SPARES_LABEL, v,
                                                   SPARES_LABEL_MAX);
                *ret = k < s->spares_max ? (uint32_t) k : s->spares_max;
        }
        return 0;
}

/* "~spare/<parent's snapshot id>/": the keys of a parent's spares begin so. */
typedef struct spare_scan {
        char prefix[48];
        char first_ready[80];
        uint32_t n;
} spare_scan;

static void spare_prefix(uint64_t parent_id, spare_scan *sc) {
        snprintf(sc->prefix, sizeof sc->prefix, SPARE_PREFIX "%" PRIu64 "/", parent_id);
}

/* Counts a parent's spares, noting the first READY one; 1 past them. */
static int spare_seen(const ts_store_info *info, void *p) {
        spare_scan *sc = p;
        if (strncmp(info->name, sc->prefix, strlen(sc->prefix)) != 0)
                return 1;
        if (info->state == TS_STATE_READY && !sc->first_ready[0])
                snprintf(sc->first_ready, sizeof sc->first_ready, "%s", info->name);
        sc->n++;
        return 0;
}

/* The spares of committed snapshot parent (-ENOENT: no such parent). */
static int spares_scan(ts_store_txn *txn, const char *ns, const char *parent, uint64_t *ret_parent_id,
                       spare_scan *sc, ts_error **err) {
        _cleanup_store_info_ ts_store_info p = { 0 };
        int r = ts_store_get(txn, ns, parent, &p, err);
        if (r < 0)
                return r;
        *sc = (spare_scan) { .n = 0 };
        spare_prefix(p.id, sc);
        *ret_parent_id = p.id;
        r = ts_store_walk_after(txn, ns, sc->prefix, spare_seen, sc, err);
        return r < 0 ? r : 0;
}

/* In one transaction, the parent's first READY spare becomes key (a->adopted)
 * unless there is none or the key is taken (Prepare's own steps then answer). */
static int adopt_record(ts_store_txn *txn, void *p, ts_error **err) {
        struct create_arg *a = p;
        ts_store_info_done(&a->info);
        a->adopted = false;
        spare_scan sc;
        uint64_t parent_id;
        ts_error *e = NULL;
        int r = spares_scan(txn, a->ns, a->parent, &parent_id, &sc, &e);
        if (r >= 0 && sc.first_ready[0])
                r = ts_store_adopt(txn, a->ns, sc.first_ready, a->key, a->labels, a->n_labels, &a->info,
                                   &e);
        else if (r >= 0)
                return 0;
        if (r == -ENOENT || r == -EEXIST) {
                ts_error_free(e);
                return 0;
        }
        if (r < 0)
                return ts_error_move(err, &e);
        a->adopted = true;
        return 0;
}

static void want_free(spare_want *w) {
        if (w) {
                free(w->ns);
                free(w->parent);
                free(w);
        }
}

/* Asks the filler to keep n spares of parent; a parent asked for already
 * keeps the larger n. Without memory nothing is asked: the next Prepare asks
 * again. */
static void filler_ask(ts_snapshotter *s, const char *ns, const char *parent, uint32_t n) {
        pthread_mutex_lock(&s->lock);
        spare_want *w = s->wants;
        while (w && (strcmp(w->ns, ns) != 0 || strcmp(w->parent, parent) != 0))
                w = w->next;
        if (w && n > w->n)
                w->n = n;
        if (!w && (w = calloc(1, sizeof(*w)))) {
                w->ns = strdup(ns);
                w->parent = strdup(parent);
                w->n = n;
                if (w->ns && w->parent) {
                        w->next = s->wants;
                        s->wants = w;
                } else
                        want_free(w);
        }
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

/* Waits (lock held) until no Prepare began for spare_quiet_ms; false at a stop. */
static bool wait_quiet(ts_snapshotter *s) {
        for (;;) {
                if (s->stopping)
                        return false;
                int64_t since_ms = (ts_clock_mono_ns() - s->last_prepare_ns) / 1000000;
                if (since_ms >= (int64_t) s->spare_quiet_ms)
                        return true;
                struct timespec until = ts_clock_mono_after(s->spare_quiet_ms - (uint64_t) since_ms);
                pthread_cond_timedwait(&s->cond, &s->lock, &until);
        }
}

/* Cuts one spare of parent (its lock and the spare's held from record to
 * READY: a Remove of the parent waits for it), once Prepares pause when
 * quiet. */
static int cut_spare(ts_snapshotter *s, const char *ns, const char *parent, uint64_t parent_id,
                     bool quiet, ts_error **err) {
        int r = ts_snapdev_check_space(s->dev, false, err);
        if (r < 0)
                return r;
        pthread_mutex_lock(&s->lock);
        uint64_t seq = ++s->spare_seq;
        bool go = !quiet || wait_quiet(s);
        pthread_mutex_unlock(&s->lock);
        if (!go)
                return -ECANCELED;
        char key[80];
        snprintf(key, sizeof key, SPARE_PREFIX "%" PRIu64 "/%020" PRIu64, parent_id, seq);
        key_lock kl;
        r = lock_keys(s, ns, parent, key, &kl);
        if (r < 0)
                return ts_error_set(err, r, "spare of %s", parent);
        struct create_arg a = { .ns = ns, .key = key, .parent = parent, .kind = TS_KIND_ACTIVE,
                                .size = s->base_size, .origin = s->base_id, .parent_id = parent_id };
        r = prepare_locked(s, &a, NULL, err);
        ts_store_info_done(&a.info);
        unlock_keys(s, &kl);
        return r;
}

/* Tops the spares of w's parent up to w->n. */
static void fill(ts_snapshotter *s, const spare_want *w, bool quiet) {
        _cleanup_error_ ts_error *e = NULL;
        _cleanup_txn_ ts_store_txn *txn = NULL;
        spare_scan sc;
        uint64_t parent_id = 0;
        int r = ts_store_begin(s->store, false, &txn, &e);
        if (r >= 0)
                r = spares_scan(txn, w->ns, w->parent, &parent_id, &sc, &e);
        txn = ts_store_txn_abort(txn);
        for (uint32_t have = r >= 0 ? sc.n : 0; r >= 0 && have < w->n; have++)
                r = cut_spare(s, w->ns, w->parent, parent_id, quiet, &e);
        if (r < 0 && r != -ECANCELED && r != -ENOENT)
                log_warn("spares of %s/%s: %s (more are cut when a Prepare asks again)", w->ns, w->parent,
                         ts_error_message(e, r));
}

/* The next parent to top up (lock held), or NULL. */
static spare_want *want_take(ts_snapshotter *s) {
        spare_want *w = s->wants;
        if (w)
                s->wants = w->next;
        return w;
}

/* The filler: tops up what Prepares ask for once they pause (snapshotter.h,
 * Spares). */
static void *filler_main(void *p) {
        ts_snapshotter *s = p;
        pthread_mutex_lock(&s->lock);
        for (;;) {
                while (!s->wants && !s->stopping)
                        pthread_cond_wait(&s->cond, &s->lock);
                if (!wait_quiet(s))
                        break;
                spare_want *w = want_take(s); /* NULL: taken by ts_snapshotter_fill_spares */
                pthread_mutex_unlock(&s->lock);
                if (w)
                        fill(s, w, true);
                want_free(w);
                pthread_mutex_lock(&s->lock);
                if (!s->wants) { /* what a top-up of many spares freed need not stay resident */
                        pthread_mutex_unlock(&s->lock);
                        malloc_trim(0);
                        pthread_mutex_lock(&s->lock);
                }
        }
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

int ts_snapshotter_prepare(ts_snapshotter *s, const char *ns, const char *key, const char *parent,
                           ts_snapshot_kind kind, const ts_label *labels, size_t n_labels,
                           ts_mount *ret_mount, ts_error **err) {
        if (is_spare_key(key))
                return ts_error_setf_plain(err, EINVAL, "prepare %s: keys beginning with %s are "
                                                        "thinsnapd's own", key, SPARE_PREFIX);
        if (is_spare_key(parent))
                return ts_error_setf_plain(err, ENOENT, "parent snapshot %s does not exist", parent);
        uint32_t want;
        int r = spares_wanted(s, labels, n_labels, &want, err);
        if (r < 0)
                return r;
        bool spares = want > 0 && kind == TS_KIND_ACTIVE && parent && *parent;
        pthread_mutex_lock(&s->lock);
        s->last_prepare_ns = ts_clock_mono_ns();
        pthread_mutex_unlock(&s->lock);
        r = ts_snapdev_check_space(s->dev, false, err);
        if (r < 0)
                return r;
        key_lock kl;
        r = lock_keys(s, ns, key, NULL, &kl);
        if (r < 0)
                return ts_error_set(err, r, "prepare %s", key);
        struct create_arg a = { .ns = ns, .key = key, .parent = parent, .kind = kind, .labels = labels,
                                .n_labels = n_labels, .size = s->base_size, .origin = s->base_id };
        r = spares ? txn_run(s, adopt_record, &a, err) : 0;
        if (r >= 0 && a.adopted)
                fill_mount(s, &a.info, ret_mount);
        else if (r >= 0)
                r = prepare_locked(s, &a, ret_mount, err);
        ts_store_info_done(&a.info);
        unlock_keys(s, &kl);
        if (r >= 0 && spares)
                filler_ask(s, ns, parent, want);
        return r < 0 ? r : 0;
}

/* Not found: a snapshot that does not exist for containerd (a spare's key). */
static int not_found(const char *key, ts_error **err) {
        return ts_error_setf_plain(err, ENOENT, "snapshot %s does not exist", key);
}

static int get_ready(ts_snapshotter *s, const char *ns, const char *key, ts_store_info *ret,
                     ts_error **err) {
        if (is_spare_key(key))
                return not_found(key, err);
        int r = read_record(s, ns, key, ret, err);
        if (r < 0)
                return r;
        if (ret->state != TS_STATE_READY) {
                ts_store_info_done(ret);
                return not_found(key, err);
        }
        return 0;
}

int ts_snapshotter_mounts(ts_snapshotter *s, const char *ns, const char *key, ts_mount *ret_mount,
                          ts_error **err) {
        _cleanup_store_info_ ts_store_info info = { 0 };
        int r = get_ready(s, ns, key, &info, err);
        if (r < 0)
                return r;
        if (info.kind != TS_KIND_ACTIVE && info.kind != TS_KIND_VIEW)
                return ts_error_setf_plain(err, EBUSY, "snapshot %s is not active or view", key);
        fill_mount(s, &info, ret_mount);
        return 0;
}

/* Bytes mapped in the parents of info (their recorded usage) and the base. */
static int parents_mapped(ts_snapshotter *s, const char *ns, const ts_store_info *info, int64_t *ret,
                          ts_error **err) {
        int64_t sum = info->dev_size == s->base_size ? s->base_mapped : 0;
        if (!info->parent || !*info->parent) {
                *ret = sum;
                return 0;
        }
        _cleanup_txn_ ts_store_txn *txn = NULL;
        int r = ts_store_begin(s->store, false, &txn, err);
        if (r < 0)
                return r;
        ts_store_info *chain = NULL;
        size_t n = 0;
        r = ts_store_parents(txn, ns, info->name, &chain, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                sum += chain[i].usage_size;
        ts_store_infos_free(chain, n);
        *ret = sum;
        return 0;
}

static int active_usage(ts_snapshotter *s, const char *ns, const ts_store_info *info, int64_t *ret,
                        ts_error **err) {
        int64_t mapped, below;
        int r = ts_snapdev_mapped(s->dev, info->dev_id, &mapped, err);
        if (r < 0)
                return r;
        r = parents_mapped(s, ns, info, &below, err);
        if (r < 0)
                return r;
        int64_t mine = mapped - below;
        *ret = mine > 0 ? mine : 0;
        return 0;
}

struct commit_arg {
        const char *ns, *key, *name;
        const ts_label *labels;
        size_t n_labels;
        int64_t usage;
};

static int commit_record(ts_store_txn *txn, void *p, ts_error **err) {
        struct commit_arg *a = p;
        return ts_store_commit(txn, a->ns, a->key, a->name, a->labels, a->n_labels, a->usage, 0, NULL,
                               err);
}

int ts_snapshotter_commit(ts_snapshotter *s, const char *ns, const char *name, const char *key,
                          const ts_label *labels, size_t n_labels, ts_error **err) {
        if (is_spare_key(name))
                return ts_error_setf_plain(err, EINVAL, "commit %s as %s: names beginning with %s are "
                                                        "thinsnapd's own", key, name, SPARE_PREFIX);
        key_lock kl;
        int r = lock_keys(s, ns, key, name, &kl);
        if (r < 0)
                return ts_error_set(err, r, "commit %s", key);
        _cleanup_store_info_ ts_store_info info = { 0 };
        bool deactivated = false;
        r = get_ready(s, ns, key, &info, err);
        if (r < 0)
                goto out;
        if (info.kind != TS_KIND_ACTIVE) {
                r = ts_error_setf_plain(err, EBUSY, "snapshot %s is not active", key);
                goto out;
        }
        /* The name must be free before the device is touched; a name whose
         * asynchronous removal is not reaped yet is freed now. */
        bool taken = false;
        r = settle_removal_locked(s, ns, name, &taken, err);
        if (r < 0)
                goto out;
        if (taken) {
                r = ts_error_setf_plain(err, EEXIST, "snapshot %s already exists", name);
                goto out;
        }
        struct commit_arg a = { ns, key, name, labels, n_labels, 0 };
        r = active_usage(s, ns, &info, &a.usage, err);
        if (r < 0)
                goto out;
        /* containerd may commit a snapshot that is still mounted. */
        r = ts_snapdev_release(s->dev, info.dev_id, err);
        if (r < 0)
                goto out;
        deactivated = true;
        fault(s, "commit", "after-deactivate");
        r = txn_run(s, commit_record, &a, err);
out:
        if (r < 0 && deactivated) {
                ts_error *e2 = NULL;
                int q = ts_snapdev_activate(s->dev, info.dev_id, info.dev_size, &e2);
                if (q < 0)
                        log_warn("commit %s/%s: re-activating after failure: %s", ns, key,
                                 ts_error_message(e2, q));
                ts_error_free(e2);
        }
        unlock_keys(s, &kl);
        return r;
}

static void early_put(ts_snapshotter *s, const char *ns, const char *key);

/* Removes key; dev_id (0: any) is the device it must still have. With
 * remember, the key is put in the ring of early removals before it is
 * unlocked, so that no Remove waiting for the key finds it gone and not
 * remembered. */
static int remove_key(ts_snapshotter *s, const char *ns, const char *key, uint32_t dev_id,
                      bool remember, ts_error **err) {
        key_lock kl;
        int r = lock_keys(s, ns, key, NULL, &kl);
        if (r < 0)
                return ts_error_set(err, r, "remove %s", key);
        struct remove_arg a = { ns, key, dev_id, { 0 } };
        r = txn_run(s, remove_begin, &a, err);
        if (r == -ENOTEMPTY && settle_children(s, ns, key) > 0) {
                /* Its last children were asynchronous removals not reaped yet. */
                error_clear(err);
                r = txn_run(s, remove_begin, &a, err);
        } else if (r == -EBUSY && settle_removal_locked(s, ns, key, NULL, NULL) > 0) {
                /* Removed already, asynchronously: as gone as containerd expects. */
                error_clear(err);
                r = ts_error_setf_plain(err, ENOENT, "snapshot %s does not exist", key);
        }
        if (r < 0)
                goto out;
        fault(s, "remove", "after-mark");
        if (s->async_remove) {
                pthread_mutex_lock(&s->lock);
                s->reap_pending = true;
                pthread_cond_broadcast(&s->cond);
                pthread_mutex_unlock(&s->lock);
                goto out;
        }
        r = ts_snapdev_deactivate(s->dev, a.info.dev_id, err);
        if (r < 0) {
                /* Busy: give the remove up, the record is as it was. */
                struct state_arg st = { ns, key, TS_STATE_READY };
                (void) txn_run(s, set_state, &st, NULL);
                if (r == -EBUSY)
                        ts_error_prefix(err, r, "remove %s: its device is in use", key);
                goto out;
        }
        fault(s, "remove", "after-deactivate");
        r = finish_remove(s, ns, key, a.info.dev_id, a.info.dev_size, err);
out:
        if (r >= 0 && remember)
                early_put(s, ns, key);
        ts_store_info_done(&a.info);
        unlock_keys(s, &kl);
        return r;
}

static void early_clear(struct early *e) {
        free(e->ns);
        free(e->key);
        *e = (struct early) { 0 };
}

/* Remembers a key removed ahead of containerd's collector; the oldest is
 * forgotten when the ring is full. Without memory it is not remembered: the
 * collector's Remove of it then fails with NotFound and its pass ends early,
 * to be taken up by the next. */
static void early_put(ts_snapshotter *s, const char *ns, const char *key) {
        struct early e = { strdup(ns), strdup(key) };
        if (!e.ns || !e.key) {
                early_clear(&e);
                return;
        }
        pthread_mutex_lock(&s->lock);
        early_clear(&s->early[s->early_next]);
        s->early[s->early_next] = e;
        s->early_next = (s->early_next + 1) % EARLY_MAX;
        pthread_mutex_unlock(&s->lock);
}

/* Whether key was removed ahead of containerd's collector (then forgotten). */
static bool early_take(ts_snapshotter *s, const char *ns, const char *key) {
        bool found = false;
        pthread_mutex_lock(&s->lock);
        for (unsigned i = 0; i < EARLY_MAX && !found; i++) {
                struct early *e = &s->early[i];
                found = e->key && strcmp(e->key, key) == 0 && strcmp(e->ns, ns) == 0;
                if (found)
                        early_clear(e);
        }
        pthread_mutex_unlock(&s->lock);
        return found;
}

int ts_snapshotter_remove(ts_snapshotter *s, const char *ns, const char *key, ts_error **err) {
        if (is_spare_key(key))
                return not_found(key, err);
        int r = remove_key(s, ns, key, 0, false, err);
        if (r == -ENOENT && early_take(s, ns, key)) {
                /* Only containerd's collector asks for a key containerd has
                 * forgotten: the provisioner removed it already. */
                error_clear(err);
                return 0;
        }
        return r;
}

/* The device id of one of this snapshotter's device paths: the number it
 * ends in, if the device layer names that id's device so. */
static bool device_id_of(ts_snapshotter *s, const char *device, uint32_t *ret_id) {
        size_t n = strlen(device), k = n;
        while (k > 0 && device[k - 1] >= '0' && device[k - 1] <= '9')
                k--;
        if (k == n || n - k > 10)
                return false;
        unsigned long long id = strtoull(device + k, NULL, 10);
        if (id == 0 || id > UINT32_MAX)
                return false;
        char path[sizeof(((ts_mount *) 0)->source)];
        ts_snapdev_path(s->dev, (uint32_t) id, path, sizeof path);
        if (strcmp(path, device) != 0)
                return false;
        *ret_id = (uint32_t) id;
        return true;
}

/* The owner of a device: its namespace and key (both NULL: a base device). */
static int owner_copy(const ts_store_device *d, void *p) {
        struct early *o = p;
        if (d->is_base)
                return 0;
        o->ns = strdup(d->namespace);
        o->key = strdup(d->key);
        return o->ns && o->key ? 0 : -ENOMEM;
}

/* Whether key is <ns>/<id>/<name>, as containerd names a proxy's keys. */
static bool key_is(const char *key, const char *ns, const char *name) {
        size_t n = strlen(ns);
        const char *slash = strrchr(key, '/');
        return strncmp(key, ns, n) == 0 && key[n] == '/' && slash && slash > key + n &&
               strcmp(slash + 1, name) == 0;
}

int ts_snapshotter_remove_device(ts_snapshotter *s, const char *device, const char *ns,
                                 const char *name, ts_error **err) {
        uint32_t id;
        if (!device_id_of(s, device, &id))
                return ts_error_setf_plain(err, EINVAL, "%s is not a device of this snapshotter", device);
        struct early o = { 0 };
        _cleanup_txn_ ts_store_txn *txn = NULL;
        int r = ts_store_begin(s->store, false, &txn, err);
        if (r >= 0)
                r = ts_store_device_get(txn, id, owner_copy, &o, err);
        txn = ts_store_txn_abort(txn);
        if (r >= 0 && (!o.key || !key_is(o.key, ns, name)))
                r = ts_error_setf_plain(err, ENOENT, "device %s is not snapshot %s/.../%s's", device, ns,
                                        name);
        if (r >= 0)
                r = remove_key(s, o.ns, o.key, id, true, err);
        early_clear(&o);
        return r;
}

int ts_snapshotter_stat(ts_snapshotter *s, const char *ns, const char *key, ts_store_info *ret_info,
                        ts_error **err) {
        return get_ready(s, ns, key, ret_info, err);
}

struct update_arg {
        const char *ns, *key;
        const ts_label *labels;
        size_t n_labels;
        const char *const *paths;
        size_t n_paths;
        bool want_info;
        ts_store_info info;
};

static int update_record(ts_store_txn *txn, void *p, ts_error **err) {
        struct update_arg *a = p;
        ts_store_info_done(&a->info);
        _cleanup_store_info_ ts_store_info cur = { 0 };
        int r = ts_store_get(txn, a->ns, a->key, &cur, err);
        if (r < 0)
                return r;
        if (cur.state != TS_STATE_READY || is_spare_key(a->key))
                return not_found(a->key, err);
        return ts_store_update(txn, a->ns, a->key, a->labels, a->n_labels, a->paths, a->n_paths,
                               a->want_info ? &a->info : NULL, err);
}

int ts_snapshotter_update(ts_snapshotter *s, const char *ns, const char *key, const ts_label *labels,
                          size_t n_labels, const char *const *paths, size_t n_paths,
                          ts_store_info *ret_info, ts_error **err) {
        struct update_arg a = { ns, key, labels, n_labels, paths, n_paths, ret_info != NULL, { 0 } };
        int r = txn_run(s, update_record, &a, err);
        if (r >= 0 && ret_info) {
                *ret_info = a.info;
                return r;
        }
        ts_store_info_done(&a.info);
        return r;
}

int ts_snapshotter_usage(ts_snapshotter *s, const char *ns, const char *key, int64_t *ret_size,
                         int64_t *ret_inodes, ts_error **err) {
        _cleanup_store_info_ ts_store_info info = { 0 };
        int r = get_ready(s, ns, key, &info, err);
        if (r < 0)
                return r;
        if (info.kind == TS_KIND_COMMITTED) {
                *ret_size = info.usage_size;
                *ret_inodes = info.usage_inodes;
                return 0;
        }
        r = active_usage(s, ns, &info, ret_size, err);
        if (r >= 0)
                *ret_inodes = 0;
        return r;
}

struct walk_arg {
        const ts_filter *filter;
        ts_store_walk_fn fn;
        void *userdata;
};

static int walk_one(const ts_store_info *info, void *p) {
        struct walk_arg *a = p;
        if (info->state != TS_STATE_READY || is_spare_key(info->name))
                return 0;
        if (a->filter && !ts_filter_match(a->filter, ts_snapfilter_field, (void *) info))
                return 0;
        return a->fn(info, a->userdata);
}

int ts_snapshotter_walk(ts_snapshotter *s, const char *ns, const ts_filter *filter, const char *after,
                        ts_store_walk_fn fn, void *userdata, ts_error **err) {
        _cleanup_txn_ ts_store_txn *txn = NULL;
        int r = ts_store_begin(s->store, false, &txn, err);
        if (r < 0)
                return r;
        struct walk_arg a = { filter, fn, userdata };
        return ts_store_walk_after(txn, ns, after, walk_one, &a, err);
}

/* One batch of ts_snapshotter_list being filled by a walk. */
typedef struct list_batch {
        ts_store_info *infos;
        size_t n, bytes, max_count, max_bytes;
        ts_snapshotter_size_fn size_fn;
} list_batch;

/* 1 when the batch is full: the walk stops, and a record that did not fit
 * starts the next batch. */
static int batch_one(const ts_store_info *info, void *p) {
        list_batch *b = p;
        size_t size = b->size_fn(info);
        if (b->n > 0 && b->bytes + size > b->max_bytes)
                return 1;
        int r = ts_store_info_copy(info, &b->infos[b->n]);
        if (r < 0)
                return r;
        b->n++;
        b->bytes += size;
        return b->n == b->max_count ? 1 : 0;
}

static void batch_clear(list_batch *b) {
        for (size_t i = 0; i < b->n; i++)
                ts_store_info_done(&b->infos[i]);
        b->n = b->bytes = 0;
}

int ts_snapshotter_list(ts_snapshotter *s, const char *ns, const ts_filter *filter, size_t max_count,
                        size_t max_bytes, ts_snapshotter_size_fn size_fn, ts_snapshotter_batch_fn batch_fn,
                        void *userdata, ts_error **err) {
        if (!ns || max_count == 0)
                return -EINVAL;
        _cleanup_free_ ts_store_info *infos = calloc(max_count, sizeof(*infos));
        if (!infos)
                return -ENOMEM;
        list_batch b = { .infos = infos, .max_count = max_count, .max_bytes = max_bytes, .size_fn = size_fn };
        _cleanup_free_ char *after = NULL;
        for (;;) {
                int r = ts_snapshotter_walk(s, ns, filter, after, batch_one, &b, err);
                if (r >= 0 && b.n > 0) {
                        int q = batch_fn(b.infos, b.n, userdata);
                        if (q < 0)
                                r = q;
                }
                if (r == 1) {
                        free(after);
                        after = strdup(b.infos[b.n - 1].name);
                        if (!after)
                                r = -ENOMEM;
                }
                batch_clear(&b);
                if (r <= 0)
                        return r;
        }
}

const ts_label_limits *ts_snapshotter_label_limits(const ts_snapshotter *s) {
        return &s->labels;
}

int ts_snapshotter_cleanup(ts_snapshotter *s, ts_error **err) {
        if (!s->async_remove)
                return 0;
        int r = reap_once(s, err);
        return r < 0 ? r : 0;
}

static int count_spare(const ts_store_info *info, void *p) {
        *(uint64_t *) p += is_spare_key(info->name) && info->state == TS_STATE_READY;
        return 0;
}

int ts_snapshotter_spares(ts_snapshotter *s, uint64_t *ret, ts_error **err) {
        _cleanup_txn_ ts_store_txn *txn = NULL;
        int r = ts_store_begin(s->store, false, &txn, err);
        if (r < 0)
                return r;
        *ret = 0;
        return ts_store_walk(txn, NULL, count_spare, ret, err);
}

void ts_snapshotter_fill_spares(ts_snapshotter *s) {
        for (;;) {
                pthread_mutex_lock(&s->lock);
                spare_want *w = want_take(s);
                pthread_mutex_unlock(&s->lock);
                if (!w)
                        return;
                fill(s, w, false);
                want_free(w);
        }
}
