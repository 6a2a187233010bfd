#include "store.h"
#include "store-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/log.h"

#define STORE_FORMAT_VERSION 1u
#define RECORD_VERSION 1u
#define DEFAULT_MAP_SIZE (32ull << 20)
#define DEFAULT_MAP_MAX (1ull << 30)
#define MIN_MAP_MAX (256ull << 10)
#define MIN_RESERVE (64ull << 10)
#define MAX_RESERVE (1ull << 20)
#define RESERVE_KEY "reserve"

struct ts_store {
        MDB_env *env;
        MDB_dbi snapshots, devices, bases, meta;
        uint32_t dev_id_max;
        ts_label_limits labels;
        size_t max_key;
        char *root;
        uint64_t map_max, reserve, page_size;

        /* The map may only be resized while no transaction of this process is
         * open (LMDB unmaps it): begin waits while a resize is pending, and the
         * resize waits for the open transactions to end. */
        pthread_mutex_t gate;
        pthread_cond_t gate_cond;
        unsigned open_txns;
        bool resizing;
        uint64_t map_size; /* under gate */
};

struct ts_store_txn {
        ts_store *store;
        MDB_txn *txn;
        bool write;
        bool map_full; /* a write failed with MDB_MAP_FULL: growing the map may help */
        bool adds_data; /* a write that must leave the reserve alone (check_room) */
};

/* ---- the one LMDB adapter: MDB_* -> -errno ---- */

static int mdb_errno(int rc) {
        switch (rc) {
        case MDB_SUCCESS:
                return 0;
        case MDB_NOTFOUND:
                return -ENOENT;
        case MDB_KEYEXIST:
                return -EEXIST;
        case MDB_MAP_FULL:
        case MDB_DBS_FULL:
        case MDB_TXN_FULL:
        case MDB_CURSOR_FULL:
        case MDB_PAGE_FULL:
                return -ENOSPC;
        case MDB_READERS_FULL:
        case MDB_TLS_FULL:
        case MDB_MAP_RESIZED:
                return -EAGAIN;
        case MDB_BAD_VALSIZE:
                return -ENAMETOOLONG;
        case MDB_VERSION_MISMATCH:
        case MDB_INVALID:
        case MDB_INCOMPATIBLE:
        case MDB_BAD_RSLOT:
        case MDB_BAD_TXN:
        case MDB_BAD_DBI:
                return -EINVAL;
        case MDB_PAGE_NOTFOUND:
        case MDB_CORRUPTED:
        case MDB_PANIC:
                return -EIO;
        default:
                return rc > 0 ? -rc : -EIO;
        }
}

/* Sets err from an LMDB return code, with LMDB's own text. Returns -errno. */
_printf_(3, 0) static int mdb_failv(ts_error **err, int rc, const char *fmt, va_list ap) {
        return ts_error_setv_cause(err, mdb_errno(rc), mdb_strerror(rc), fmt, ap);
}

_printf_(3, 4) static int mdb_fail(ts_error **err, int rc, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = mdb_failv(err, rc, fmt, ap);
        va_end(ap);
        return r;
}

/* mdb_fail for a write in t: notes a full map, so that ts_store_write grows it. */
_printf_(4, 5) static int write_fail(ts_store_txn *t, ts_error **err, int rc, const char *fmt, ...) {
        if (rc == MDB_MAP_FULL)
                t->map_full = true;
        va_list ap;
        va_start(ap, fmt);
        int r = mdb_failv(err, rc, fmt, ap);
        va_end(ap);
        return r;
}

static void error_clear(ts_error **err) {
        if (err) {
                ts_error_free(*err);
                *err = NULL;
        }
}

static int64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- little-endian encoding helpers ---- */

typedef struct buf {
        uint8_t *data;
        size_t len, cap;
        bool oom;
} buf;

static void buf_put(buf *b, const void *p, size_t n) {
        if (b->oom)
                return;
        if (b->len + n > b->cap) {
                size_t cap = b->cap ? b->cap : 128;
                while (cap < b->len + n)
                        cap *= 2;
                uint8_t *d = realloc(b->data, cap);
                if (!d) {
                        b->oom = true;
                        return;
                }
                b->data = d;
                b->cap = cap;
        }
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
}

static void buf_u8(buf *b, uint8_t v) {
        buf_put(b, &v, 1);
}

static void buf_u32(buf *b, uint32_t v) {
        uint8_t x[4];
        for (int i = 0; i < 4; i++)
                x[i] = (uint8_t) (v >> (8 * i));
        buf_put(b, x, 4);
}

static void buf_u64(buf *b, uint64_t v) {
        uint8_t x[8];
        for (int i = 0; i < 8; i++)
                x[i] = (uint8_t) (v >> (8 * i));
        buf_put(b, x, 8);
}

static void buf_str(buf *b, const char *s) {
        size_t n = strlen(s);
        buf_u32(b, (uint32_t) n);
        buf_put(b, s, n);
}

typedef struct rd {
        const uint8_t *p;
        size_t left;
        bool bad;
} rd;

static const uint8_t *rd_take(rd *r, size_t n) {
        if (r->bad || r->left < n) {
                r->bad = true;
                return NULL;
        }
        const uint8_t *p = r->p;
        r->p += n;
        r->left -= n;
        return p;
}

static uint8_t rd_u8(rd *r) {
        const uint8_t *p = rd_take(r, 1);
        return p ? p[0] : 0;
}

static uint32_t rd_u32(rd *r) {
        const uint8_t *p = rd_take(r, 4);
        uint32_t v = 0;
        if (p)
                for (int i = 0; i < 4; i++)
                        v |= (uint32_t) p[i] << (8 * i);
        return v;
}

static uint64_t rd_u64(rd *r) {
        const uint8_t *p = rd_take(r, 8);
        uint64_t v = 0;
        if (p)
                for (int i = 0; i < 8; i++)
                        v |= (uint64_t) p[i] << (8 * i);
        return v;
}

/* Returns a malloc'ed NUL-terminated copy, or NULL (r->bad set, or *oom set). */
static char *rd_str(rd *r, bool *oom) {
        uint32_t n = rd_u32(r);
        const uint8_t *p = rd_take(r, n);
        if (!p)
                return NULL;
        if (memchr(p, 0, n)) {
                r->bad = true;
                return NULL;
        }
        char *s = strndup((const char *) p, n);
        if (!s)
                *oom = true;
        return s;
}

static void be32(uint8_t out[4], uint32_t v) {
        for (int i = 0; i < 4; i++)
                out[i] = (uint8_t) (v >> (8 * (3 - i)));
}

static uint32_t from_be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void be64(uint8_t out[8], uint64_t v) {
        for (int i = 0; i < 8; i++)
                out[i] = (uint8_t) (v >> (8 * (7 - i)));
}

static uint64_t from_be64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

/* ---- records ---- */

void ts_store_info_done(ts_store_info *info) {
        if (!info)
                return;
        free(info->namespace);
        free(info->name);
        free(info->parent);
        ts_label_free(info->labels, info->n_labels);
        memset(info, 0, sizeof(*info));
}

int ts_store_info_copy(const ts_store_info *in, ts_store_info *ret) {
        ts_store_info c = *in;
        c.namespace = strdup(in->namespace ? in->namespace : "");
        c.name = strdup(in->name);
        c.parent = strdup(in->parent ? in->parent : "");
        c.labels = calloc(in->n_labels ? in->n_labels : 1, sizeof(ts_label));
        c.n_labels = 0;
        int r = c.namespace && c.name && c.parent && c.labels ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < in->n_labels; i++) {
                c.labels[i].key = strdup(in->labels[i].key);
                c.labels[i].value = strdup(in->labels[i].value);
                c.n_labels++;
                if (!c.labels[i].key || !c.labels[i].value)
                        r = -ENOMEM;
        }
        if (r < 0) {
                ts_store_info_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

void ts_store_infos_free(ts_store_info *infos, size_t n) {
        if (!infos)
                return;
        for (size_t i = 0; i < n; i++)
                ts_store_info_done(&infos[i]);
        free(infos);
}

const char *ts_store_info_label(const ts_store_info *info, const char *key) {
        const ts_label *l = ts_label_find(info->labels, info->n_labels, key);
        return l ? l->value : NULL;
}

const char *ts_store_kind_to_string(ts_snapshot_kind kind) {
        switch (kind) {
        case TS_KIND_VIEW:
                return "view";
        case TS_KIND_ACTIVE:
                return "active";
        case TS_KIND_COMMITTED:
                return "committed";
        default:
                return "unknown";
        }
}

const char *ts_store_state_to_string(ts_snapshot_state state) {
        switch (state) {
        case TS_STATE_CREATING:
                return "creating";
        case TS_STATE_READY:
                return "ready";
        case TS_STATE_REMOVING:
                return "removing";
        default:
                return "unknown";
        }
}

static int record_encode(const ts_store_info *i, MDB_val *ret, buf *b) {
        buf_u8(b, RECORD_VERSION);
        buf_u8(b, (uint8_t) i->kind);
        buf_u8(b, (uint8_t) i->state);
        buf_u8(b, 0);
        buf_u64(b, i->id);
        buf_u32(b, i->dev_id);
        buf_u64(b, i->dev_size);
        buf_u64(b, (uint64_t) i->created_ns);
        buf_u64(b, (uint64_t) i->updated_ns);
        buf_u64(b, (uint64_t) i->usage_size);
        buf_u64(b, (uint64_t) i->usage_inodes);
        buf_u32(b, i->children);
        buf_str(b, i->parent ? i->parent : "");
        buf_u32(b, (uint32_t) i->n_labels);
        for (size_t k = 0; k < i->n_labels; k++) {
                buf_str(b, i->labels[k].key);
                buf_str(b, i->labels[k].value);
        }
        if (b->oom)
                return -ENOMEM;
        ret->mv_data = b->data;
        ret->mv_size = b->len;
        return 0;
}

/* Decodes the value v of DB key k ("ns\0key") into ret. */
static int record_decode(const MDB_val *k, const MDB_val *v, ts_store_info *ret) {
        _cleanup_store_info_ ts_store_info i = {};
        bool oom = false;
        const char *kp = k->mv_data;
        const char *nul = memchr(kp, 0, k->mv_size);
        if (!nul)
                return -EIO;
        i.namespace = strndup(kp, (size_t) (nul - kp));
        i.name = strndup(nul + 1, k->mv_size - (size_t) (nul - kp) - 1);
        if (!i.namespace || !i.name)
                return -ENOMEM;

        rd r = { .p = v->mv_data, .left = v->mv_size };
        if (rd_u8(&r) != RECORD_VERSION)
                return -EIO;
        i.kind = rd_u8(&r);
        i.state = rd_u8(&r);
        (void) rd_u8(&r);
        i.id = rd_u64(&r);
        i.dev_id = rd_u32(&r);
        i.dev_size = rd_u64(&r);
        i.created_ns = (int64_t) rd_u64(&r);
        i.updated_ns = (int64_t) rd_u64(&r);
        i.usage_size = (int64_t) rd_u64(&r);
        i.usage_inodes = (int64_t) rd_u64(&r);
        i.children = rd_u32(&r);
        i.parent = rd_str(&r, &oom);
        uint32_t nl = rd_u32(&r);
        if (r.bad || oom)
                return oom ? -ENOMEM : -EIO;
        if (nl > r.left / 8)
                return -EIO;
        if (nl) {
                i.labels = calloc(nl, sizeof(ts_label));
                if (!i.labels)
                        return -ENOMEM;
        }
        for (uint32_t n = 0; n < nl; n++) {
                i.labels[n].key = rd_str(&r, &oom);
                i.labels[n].value = rd_str(&r, &oom);
                i.n_labels = n + 1;
                if (r.bad || oom)
                        return oom ? -ENOMEM : -EIO;
        }
        if (r.left != 0)
                return -EIO;
        *ret = i;
        memset(&i, 0, sizeof(i));
        return 0;
}

/* ---- keys ---- */

typedef struct dbkey {
        char *data;
        size_t len;
} dbkey;

static void dbkey_done(dbkey *k) {
        free(k->data);
}
#define _cleanup_dbkey_ _cleanup_(dbkey_done)

static int make_key(ts_store_txn *t, const char *ns, const char *key, dbkey *ret, ts_error **err) {
        if (!ns || !*ns)
                return ts_error_setf_plain(err, EINVAL, "namespace is required");
        if (!key || !*key)
                return ts_error_setf_plain(err, EINVAL, "snapshot key is required");
        size_t nl = strlen(ns), kl = strlen(key);
        if (nl + 1 + kl > t->store->max_key)
                return ts_error_setf_plain(err, ENAMETOOLONG,
                                           "snapshot key %s/%.64s...: namespace and key longer than %zu bytes",
                                           ns, key, t->store->max_key - 1);
        /* "ns\0key" plus a terminating NUL that is not part of the DB key, so both
         * halves read as C strings in messages */
        char *d = malloc(nl + 1 + kl + 1);
        if (!d)
                return -ENOMEM;
        memcpy(d, ns, nl);
        d[nl] = 0;
        memcpy(d + nl + 1, key, kl);
        d[nl + 1 + kl] = 0;
        ret->data = d;
        ret->len = nl + 1 + kl;
        return 0;
}

static MDB_val kval(const dbkey *k) {
        return (MDB_val){ .mv_size = k->len, .mv_data = k->data };
}

/* ---- meta helpers ---- */

static int meta_get_u64(ts_store_txn *t, const char *name, uint64_t def, uint64_t *ret, ts_error **err) {
        MDB_val k = { .mv_size = strlen(name), .mv_data = (void *) name }, v;
        int rc = mdb_get(t->txn, t->store->meta, &k, &v);
        if (rc == MDB_NOTFOUND) {
                *ret = def;
                return 0;
        }
        if (rc)
                return mdb_fail(err, rc, "read meta %s", name);
        if (v.mv_size != 8)
                return ts_error_setf_plain(err, EIO, "meta %s: corrupt value", name);
        *ret = from_be64(v.mv_data);
        return 0;
}

static int meta_put_u64(ts_store_txn *t, const char *name, uint64_t value, ts_error **err) {
        uint8_t b[8];
        be64(b, value);
        MDB_val k = { .mv_size = strlen(name), .mv_data = (void *) name }, v = { .mv_size = 8, .mv_data = b };
        int rc = mdb_put(t->txn, t->store->meta, &k, &v, 0);
        if (rc)
                return write_fail(t, err, rc, "write meta %s", name);
        return 0;
}

static int need_write(ts_store_txn *t, const char *what, ts_error **err) {
        if (!t->write)
                return ts_error_setf_plain(err, EROFS, "%s: needs a write transaction", what);
        return 0;
}

/* ---- environment ---- */

DEFINE_TRIVIAL_CLEANUP_FUNC(MDB_txn *, mdb_txn_abort)

/* opts with the defaults filled in, checked. */
static int resolve_options(const char *root, const ts_store_options *opts, ts_store_options *ret,
                           ts_error **err) {
        ts_store_options o = opts ? *opts : (ts_store_options){};
        if (!root || !*root)
                return ts_error_setf_plain(err, EINVAL, "store root is required");
        if (o.map_max == 0)
                o.map_max = o.map_size > DEFAULT_MAP_MAX ? o.map_size : DEFAULT_MAP_MAX;
        if (o.map_max < MIN_MAP_MAX)
                return ts_error_setf_plain(err, EINVAL, "store map maximum %" PRIu64 " bytes is below the least, %llu",
                                           o.map_max, MIN_MAP_MAX);
        if (o.map_size == 0)
                o.map_size = o.map_max < DEFAULT_MAP_SIZE ? o.map_max : DEFAULT_MAP_SIZE;
        if (o.map_size > o.map_max)
                return ts_error_setf_plain(err, EINVAL,
                                           "store map size %" PRIu64 " bytes is above its maximum %" PRIu64,
                                           o.map_size, o.map_max);
        if (o.dev_id_max == 0)
                o.dev_id_max = TS_STORE_DEV_ID_MAX;
        if (o.dev_id_max > TS_STORE_DEV_ID_MAX)
                return ts_error_setf_plain(err, EINVAL, "device id limit %u exceeds the 24-bit maximum %u",
                                           o.dev_id_max, TS_STORE_DEV_ID_MAX);
        int r = ts_label_limits_resolve(&o.labels, err);
        if (r < 0)
                return r;
        *ret = o;
        return 0;
}

/* Creates and opens s->env on root. */
static int open_env(ts_store *s, const char *root, const ts_store_options *o, ts_error **err) {
        int rc = mdb_env_create(&s->env);
        if (rc) {
                s->env = NULL;
                return mdb_fail(err, rc, "store %s: create environment", root);
        }
        rc = mdb_env_set_mapsize(s->env, o->map_size);
        if (rc == 0)
                rc = mdb_env_set_maxdbs(s->env, 8);
        if (rc)
                return mdb_fail(err, rc, "store %s: configure environment", root);
        rc = mdb_env_open(s->env, root, MDB_NOTLS | (o->no_sync ? MDB_NOSYNC : 0), 0600);
        if (rc)
                return mdb_fail(err, rc, "store %s: open", root);
        s->max_key = (size_t) mdb_env_get_maxkeysize(s->env);
        MDB_envinfo info;
        MDB_stat st;
        rc = mdb_env_info(s->env, &info);
        if (rc == 0)
                rc = mdb_env_stat(s->env, &st);
        if (rc)
                return mdb_fail(err, rc, "store %s: read environment", root);
        /* LMDB raises the map to the data already stored, whatever was asked */
        s->map_size = info.me_mapsize;
        s->page_size = st.ms_psize;
        s->map_max = o->map_max > s->map_size ? o->map_max : s->map_size;
        s->reserve = s->map_max / 64;
        s->reserve = s->reserve < MIN_RESERVE ? MIN_RESERVE : s->reserve > MAX_RESERVE ? MAX_RESERVE : s->reserve;
        /* Reader slots of a process that died (a crash) would pin old pages forever. */
        int dead = 0;
        rc = mdb_reader_check(s->env, &dead);
        if (rc)
                return mdb_fail(err, rc, "store %s: check reader table", root);
        if (dead > 0)
                log_debug("store cleared stale readers root=%s count=%d", root, dead);
        return 0;
}

/* Opens (creating) the named databases and checks the format version,
 * writing it into a new store. */
static int open_databases(ts_store *s, const char *root, ts_error **err) {
        _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
        int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
        if (rc)
                return mdb_fail(err, rc, "store %s: begin", root);
        struct {
                const char *name;
                MDB_dbi *dbi;
        } dbs[] = {
                { "snapshots", &s->snapshots },
                { "devices", &s->devices },
                { "bases", &s->bases },
                { "meta", &s->meta },
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(dbs); i++) {
                rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
                if (rc)
                        return mdb_fail(err, rc, "store %s: open database %s", root, dbs[i].name);
        }
        ts_store_txn t = { .store = s, .txn = txn, .write = true };
        uint64_t version;
        int r = meta_get_u64(&t, "version", 0, &version, err);
        if (r < 0)
                return r;
        if (version == 0)
                r = meta_put_u64(&t, "version", STORE_FORMAT_VERSION, err);
        else if (version != STORE_FORMAT_VERSION)
                r = ts_error_setf_plain(err, EINVAL, "store %s: unknown format version %" PRIu64, root, version);
        if (r < 0)
                return r;
        rc = mdb_txn_commit(TAKE_PTR(txn));
        if (rc)
                return mdb_fail(err, rc, "store %s: commit", root);
        return 0;
}

int ts_store_open(const char *root, const ts_store_options *opts, ts_store **ret, ts_error **err) {
        ts_store_options o = { 0 };
        int r = resolve_options(root, opts, &o, err);
        if (r < 0)
                return r;
        if (mkdir(root, 0700) < 0 && errno != EEXIST)
                return ts_error_set(err, errno, "create store directory %s", root);
        ts_store *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->dev_id_max = o.dev_id_max;
        s->labels = o.labels;
        pthread_mutex_init(&s->gate, NULL);
        pthread_cond_init(&s->gate_cond, NULL);
        s->root = strdup(root);
        r = s->root ? open_env(s, root, &o, err) : -ENOMEM;
        if (r >= 0)
                r = open_databases(s, root, err);
        if (r < 0) {
                ts_store_close(s);
                return r;
        }
        log_debug("store opened root=%s map_size=%" PRIu64 " map_max=%" PRIu64, root, s->map_size, s->map_max);
        *ret = s;
        return 0;
}

ts_store *ts_store_close(ts_store *s) {
        if (s) {
                mdb_env_close(s->env);
                pthread_cond_destroy(&s->gate_cond);
                pthread_mutex_destroy(&s->gate);
                free(s->root);
                free(s);
        }
        return NULL;
}

static void gate_enter(ts_store *s) {
        pthread_mutex_lock(&s->gate);
        while (s->resizing)
                pthread_cond_wait(&s->gate_cond, &s->gate);
        s->open_txns++;
        pthread_mutex_unlock(&s->gate);
}

static void gate_leave(ts_store *s) {
        pthread_mutex_lock(&s->gate);
        if (--s->open_txns == 0 && s->resizing)
                pthread_cond_broadcast(&s->gate_cond);
        pthread_mutex_unlock(&s->gate);
}

int ts_store_begin(ts_store *s, bool write, ts_store_txn **ret, ts_error **err) {
        ts_store_txn *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        gate_enter(s);
        int rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
        if (rc) {
                gate_leave(s);
                free(t);
                return mdb_fail(err, rc, "begin %s transaction", write ? "write" : "read");
        }
        t->store = s;
        t->write = write;
        *ret = t;
        return 0;
}

/* Commits t and frees it; *ret_map_full tells whether the commit failed for a
 * full map. */
static int txn_commit(ts_store_txn *t, bool *ret_map_full, ts_error **err) {
        ts_store *s = t->store;
        int rc = mdb_txn_commit(t->txn);
        *ret_map_full = t->map_full || rc == MDB_MAP_FULL;
        free(t);
        gate_leave(s);
        if (rc)
                return mdb_fail(err, rc, "commit transaction");
        return 0;
}

int ts_store_txn_commit(ts_store_txn *t, ts_error **err) {
        if (!t)
                return -EINVAL;
        bool full;
        return txn_commit(t, &full, err);
}

ts_store_txn *ts_store_txn_abort(ts_store_txn *t) {
        if (t) {
                ts_store *s = t->store;
                mdb_txn_abort(t->txn);
                free(t);
                gate_leave(s);
        }
        return NULL;
}

void ts_store_map(ts_store *s, uint64_t *ret_size, uint64_t *ret_max) {
        pthread_mutex_lock(&s->gate);
        *ret_size = s->map_size;
        pthread_mutex_unlock(&s->gate);
        *ret_max = s->map_max;
}

/* Doubles the map (capped at its maximum) unless another writer has grown it
 * since it was from bytes. The caller holds no transaction. */
static int grow_map(ts_store *s, uint64_t from, ts_error **err) {
        pthread_mutex_lock(&s->gate);
        while (s->resizing)
                pthread_cond_wait(&s->gate_cond, &s->gate);
        if (s->map_size != from) {
                pthread_mutex_unlock(&s->gate);
                return 0;
        }
        s->resizing = true;
        while (s->open_txns > 0)
                pthread_cond_wait(&s->gate_cond, &s->gate);
        uint64_t size = from > s->map_max / 2 ? s->map_max : from * 2;
        int rc = mdb_env_set_mapsize(s->env, (size_t) size);
        if (rc == 0)
                s->map_size = size;
        s->resizing = false;
        pthread_cond_broadcast(&s->gate_cond);
        pthread_mutex_unlock(&s->gate);
        if (rc)
                return mdb_fail(err, rc, "store %s: grow the map to %" PRIu64 " bytes", s->root, size);
        log_debug("store map grown root=%s map_size=%" PRIu64 " map_max=%" PRIu64, s->root, size, s->map_max);
        return 0;
}

/* The reserve is one value of s->reserve bytes in meta, pages LMDB keeps
 * in one run (an overflow value): writes that add data need it in place,
 * and put it back when a removal took it, so they never use its pages. A
 * write that only shrinks the data (a removal, a recovery step) and finds
 * the map full at its maximum releases it and runs again: then it finds
 * free pages, also a run for a record that spans several (LMDB copies a
 * record on every change, and a fragmented free list has no such run). */
static int check_room(ts_store_txn *t, const char *what, ts_error **err) {
        ts_store *s = t->store;
        t->adds_data = true;
        MDB_val k = { .mv_size = strlen(RESERVE_KEY), .mv_data = (void *) RESERVE_KEY }, v;
        int rc = mdb_get(t->txn, s->meta, &k, &v);
        if (rc == 0)
                return 0;
        if (rc != MDB_NOTFOUND)
                return mdb_fail(err, rc, "read the store's reserve");
        v.mv_size = s->reserve;
        rc = mdb_put(t->txn, s->meta, &k, &v, MDB_RESERVE);
        if (rc)
                return write_fail(t, err, rc, "%s: put the store's reserve back", what);
        memset(v.mv_data, 0, v.mv_size);
        return 0;
}

static int release_reserve(ts_store_txn *t, void *userdata, ts_error **err) {
        (void) userdata;
        MDB_val k = { .mv_size = strlen(RESERVE_KEY), .mv_data = (void *) RESERVE_KEY };
        int rc = mdb_del(t->txn, t->store->meta, &k, NULL);
        if (rc == MDB_NOTFOUND)
                return -ENOENT;
        if (rc)
                return write_fail(t, err, rc, "release the store's reserve");
        return 0;
}

/* -ENOSPC for a write the store has no room for at its largest map. */
static int full_error(ts_store *s, ts_error **err, const char *what) {
        uint64_t size, max;
        ts_store_map(s, &size, &max);
        return ts_error_setf_plain(err, ENOSPC,
                                   "%s: snapshot store %s is full: its map is %" PRIu64 " KiB, its maximum of %" PRIu64
                                   " KiB, of which %" PRIu64 " KiB are kept for removals; raise the maximum "
                                   "(thinsnapd --store-map-max, store_map_max)",
                                   what, s->root, size >> 10, max >> 10, s->reserve >> 10);
}

int ts_store_write(ts_store *s, ts_store_write_fn fn, void *userdata, ts_error **err) {
        for (;;) {
                uint64_t size, max;
                ts_store_map(s, &size, &max);
                ts_store_txn *t = NULL;
                int r = ts_store_begin(s, true, &t, err);
                if (r < 0)
                        return r;
                r = fn(t, userdata, err);
                bool full = t->map_full, adds = t->adds_data;
                if (r < 0)
                        ts_store_txn_abort(t);
                else
                        r = txn_commit(t, &full, err);
                if (r >= 0 || !full)
                        return r;
                error_clear(err);
                if (size < max)
                        r = grow_map(s, size, err);
                else if (!adds && fn != release_reserve &&
                         (r = ts_store_write(s, release_reserve, NULL, NULL)) >= 0)
                        log_debug("store released its reserve root=%s", s->root);
                else
                        return full_error(s, err, adds ? "new data" : "write");
                if (r < 0)
                        return r;
        }
}


/* ---- device ids ---- */

/* Next-fit allocation: the search starts at the cursor after the last id handed
 * out and wraps at the limit, so a freed id is reused as late as possible. A stale
 * /dev/mapper name, a delete the kernel has not finished, or a log line about an
 * old device then never points at a new snapshot by accident. */
static int dev_alloc(ts_store_txn *t, const MDB_val *owner, uint32_t *ret, ts_error **err) {
        ts_store *s = t->store;
        uint64_t cursor;
        int r = meta_get_u64(t, "next_dev", 1, &cursor, err);
        if (r < 0)
                return r;
        if (cursor < 1 || cursor > s->dev_id_max)
                cursor = 1;

        MDB_cursor *c;
        int rc = mdb_cursor_open(t->txn, s->devices, &c);
        if (rc)
                return mdb_fail(err, rc, "open device cursor");

        uint32_t found = 0;
        uint64_t start = cursor;
        for (int pass = 0; pass < 2 && !found; pass++) {
                uint64_t limit = pass == 0 ? s->dev_id_max : cursor - 1;
                uint64_t cand = pass == 0 ? start : 1;
                uint8_t kb[4];
                be32(kb, (uint32_t) cand);
                MDB_val k = { .mv_size = 4, .mv_data = kb }, v;
                rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
                while (cand <= limit) {
                        if (rc == MDB_NOTFOUND || (rc == 0 && from_be32(k.mv_data) > cand)) {
                                found = (uint32_t) cand;
                                break;
                        }
                        if (rc) {
                                mdb_cursor_close(c);
                                return mdb_fail(err, rc, "scan device ids");
                        }
                        cand++;
                        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
                }
        }
        mdb_cursor_close(c);
        if (!found)
                return ts_error_setf_plain(err, ENOSPC, "no free thin device id (all %u in use)",
                                           s->dev_id_max);

        uint8_t kb[4];
        be32(kb, found);
        MDB_val k = { .mv_size = 4, .mv_data = kb };
        rc = mdb_put(t->txn, s->devices, &k, (MDB_val *) owner, MDB_NOOVERWRITE);
        if (rc)
                return write_fail(t, err, rc, "reserve device id %u", found);
        r = meta_put_u64(t, "next_dev", found >= s->dev_id_max ? 1 : (uint64_t) found + 1, err);
        if (r < 0)
                return r;
        *ret = found;
        return 0;
}

static int dev_set_owner(ts_store_txn *t, uint32_t id, const MDB_val *owner, bool must_exist, ts_error **err) {
        uint8_t kb[4];
        be32(kb, id);
        MDB_val k = { .mv_size = 4, .mv_data = kb };
        if (must_exist) {
                MDB_val v;
                int rc = mdb_get(t->txn, t->store->devices, &k, &v);
                if (rc)
                        return mdb_fail(err, rc, "device id %u", id);
        }
        int rc = mdb_put(t->txn, t->store->devices, &k, (MDB_val *) owner, 0);
        if (rc)
                return write_fail(t, err, rc, "device id %u: set owner", id);
        return 0;
}

static int dev_free(ts_store_txn *t, uint32_t id, ts_error **err) {
        uint8_t kb[4];
        be32(kb, id);
        MDB_val k = { .mv_size = 4, .mv_data = kb };
        int rc = mdb_del(t->txn, t->store->devices, &k, NULL);
        if (rc && rc != MDB_NOTFOUND)
                return write_fail(t, err, rc, "free device id %u", id);
        return 0;
}

static int owner_snapshot(const dbkey *key, buf *b, MDB_val *ret) {
        buf_u8(b, 'S');
        buf_put(b, key->data, key->len);
        if (b->oom)
                return -ENOMEM;
        *ret = (MDB_val){ .mv_size = b->len, .mv_data = b->data };
        return 0;
}

/* One entry of the device table as a ts_store_device; the owner's names
 * point into *ret_copy (malloc()ed) or are NULL for a base device. */
static int device_parse(const MDB_val *k, const MDB_val *v, ts_store_device *d, char **ret_copy,
                        ts_error **err) {
        *ret_copy = NULL;
        if (k->mv_size != 4 || v->mv_size < 1)
                return ts_error_setf_plain(err, EIO, "device table: corrupt entry");
        *d = (ts_store_device) { .dev_id = from_be32(k->mv_data) };
        const uint8_t *p = v->mv_data;
        if (p[0] == 'B' && v->mv_size == 9) {
                d->is_base = true;
                d->base_size = from_be64(p + 1);
                return 0;
        }
        if (p[0] != 'S')
                return ts_error_setf_plain(err, EIO, "device %u: corrupt owner", d->dev_id);
        /* "S" ns \0 key, the key not NUL-terminated in the map */
        char *copy = malloc(v->mv_size);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, p + 1, v->mv_size - 1);
        copy[v->mv_size - 1] = 0;
        size_t nl = strnlen(copy, v->mv_size - 1);
        if (nl + 1 >= v->mv_size) {
                free(copy);
                return ts_error_setf_plain(err, EIO, "device %u: corrupt owner", d->dev_id);
        }
        d->namespace = copy;
        d->key = copy + nl + 1;
        *ret_copy = copy;
        return 0;
}

int ts_store_device_walk(ts_store_txn *t, ts_store_device_fn fn, void *userdata, ts_error **err) {
        MDB_cursor *c;
        int rc = mdb_cursor_open(t->txn, t->store->devices, &c);
        if (rc)
                return mdb_fail(err, rc, "open device cursor");
        MDB_val k, v;
        int r = 0;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
                ts_store_device d;
                _cleanup_free_ char *copy = NULL;
                r = device_parse(&k, &v, &d, &copy, err);
                if (r == 0)
                        r = fn(&d, userdata);
                if (r != 0)
                        break;
        }
        mdb_cursor_close(c);
        if (r == 0 && rc != MDB_NOTFOUND && rc != 0)
                return mdb_fail(err, rc, "walk device ids");
        return r;
}

int ts_store_device_get(ts_store_txn *t, uint32_t dev_id, ts_store_device_fn fn, void *userdata,
                        ts_error **err) {
        uint8_t kb[4];
        be32(kb, dev_id);
        MDB_val k = { .mv_size = 4, .mv_data = kb }, v;
        int rc = mdb_get(t->txn, t->store->devices, &k, &v);
        if (rc == MDB_NOTFOUND)
                return ts_error_setf_plain(err, ENOENT, "device id %u: not in use", dev_id);
        if (rc)
                return mdb_fail(err, rc, "read device id");
        ts_store_device d;
        _cleanup_free_ char *copy = NULL;
        int r = device_parse(&k, &v, &d, &copy, err);
        return r < 0 ? r : fn(&d, userdata);
}

/* ---- snapshot records ---- */

static int get_record(ts_store_txn *t, const dbkey *key, ts_store_info *ret, ts_error **err) {
        MDB_val k = kval(key), v;
        int rc = mdb_get(t->txn, t->store->snapshots, &k, &v);
        if (rc == MDB_NOTFOUND)
                return ts_error_setf_plain(err, ENOENT, "snapshot %s/%s: not found", key->data,
                                           key->data + strlen(key->data) + 1);
        if (rc)
                return mdb_fail(err, rc, "read snapshot %s", key->data + strlen(key->data) + 1);
        int r = record_decode(&k, &v, ret);
        if (r == -EIO)
                return ts_error_setf_plain(err, EIO, "snapshot %s: corrupt record",
                                           key->data + strlen(key->data) + 1);
        return r;
}

/* The start of a write to one snapshot's record: a write transaction, the
 * record's key, and the record itself. */
static int load_for_write(ts_store_txn *t, const char *what, const char *ns, const char *key,
                          dbkey *k, ts_store_info *i, ts_error **err) {
        int r = need_write(t, what, err);
        if (r < 0)
                return r;
        r = make_key(t, ns, key, k, err);
        if (r < 0)
                return r;
        return get_record(t, k, i, err);
}

/* load_for_write() for a removal: a snapshot with children stays. */
static int load_for_removal(ts_store_txn *t, const char *what, const char *ns, const char *key,
                            dbkey *k, ts_store_info *i, ts_error **err) {
        int r = load_for_write(t, what, ns, key, k, i, err);
        if (r < 0)
                return r;
        if (i->children > 0)
                return ts_error_setf_plain(err, ENOTEMPTY, "snapshot %s: cannot remove snapshot with child", key);
        return 0;
}

static int put_record(ts_store_txn *t, const dbkey *key, const ts_store_info *i, bool create, ts_error **err) {
        _cleanup_free_ uint8_t *data = NULL;
        buf b = {};
        MDB_val k = kval(key), v;
        int r = record_encode(i, &v, &b);
        data = b.data;
        if (r < 0)
                return r;
        int rc = mdb_put(t->txn, t->store->snapshots, &k, &v, create ? MDB_NOOVERWRITE : 0);
        if (rc == MDB_KEYEXIST)
                return ts_error_setf_plain(err, EEXIST, "snapshot %s: already exists", i->name);
        if (rc)
                return write_fail(t, err, rc, "write snapshot %s", i->name);
        return 0;
}

/* Hands the record out through *ret_info (when not NULL), leaving *i empty
 * for its cleanup. */
static void hand_out(ts_store_info *i, ts_store_info *ret_info) {
        if (ret_info) {
                *ret_info = *i;
                memset(i, 0, sizeof(*i));
        }
}

/* The end of a write to one snapshot's existing record: stores it and
 * hands it out. */
static int store_record(ts_store_txn *t, const dbkey *key, ts_store_info *i,
                        ts_store_info *ret_info, ts_error **err) {
        int r = put_record(t, key, i, false, err);
        if (r < 0)
                return r;
        hand_out(i, ret_info);
        return 0;
}

static int exists(ts_store_txn *t, const dbkey *key, ts_error **err) {
        MDB_val k = kval(key), v;
        int rc = mdb_get(t->txn, t->store->snapshots, &k, &v);
        if (rc == MDB_NOTFOUND)
                return 0;
        if (rc)
                return mdb_fail(err, rc, "read snapshot");
        return 1;
}

static int adjust_children(ts_store_txn *t, const char *ns, const char *parent, int delta, ts_error **err) {
        _cleanup_dbkey_ dbkey pk = {};
        _cleanup_store_info_ ts_store_info p = {};
        int r = make_key(t, ns, parent, &pk, err);
        if (r < 0)
                return r;
        r = get_record(t, &pk, &p, err);
        if (r < 0) {
                ts_error_prefix(err, r, "parent %s", parent);
                return r;
        }
        if (delta < 0 && p.children == 0)
                return ts_error_setf_plain(err, EIO, "parent %s: child count underflow", parent);
        p.children = (uint32_t) ((int64_t) p.children + delta);
        return put_record(t, &pk, &p, false, err);
}

/* The parent of a new snapshot must be a committed snapshot that is not
 * being removed. */
static int check_parent(ts_store_txn *t, const char *ns, const char *parent, ts_error **err) {
        _cleanup_dbkey_ dbkey pk = {};
        _cleanup_store_info_ ts_store_info p = {};
        int r = make_key(t, ns, parent, &pk, err);
        if (r < 0)
                return r;
        r = get_record(t, &pk, &p, NULL);
        if (r == -ENOENT || (r >= 0 && p.state == TS_STATE_REMOVING))
                return ts_error_setf_plain(err, ENOENT, "missing parent %s", parent);
        if (r < 0)
                return ts_error_setf_plain(err, -r, "parent %s: %s", parent, strerror(-r));
        if (p.kind != TS_KIND_COMMITTED)
                return ts_error_setf_plain(err, EINVAL, "parent %s is not committed snapshot", parent);
        return 0;
}

/* The normal form of a request's labels for snapshot key, within the
 * store's bounds (label.h). */
static int labels_of_request(ts_store_txn *t, const char *key, const ts_label *in, size_t n, ts_label **ret,
                             size_t *ret_n, ts_error **err) {
        ts_label *l = NULL;
        size_t ln = 0;
        int r = ts_label_check_request(in, n, &t->store->labels, err);
        if (r >= 0)
                r = ts_label_normalise(in, n, &l, &ln);
        if (r >= 0)
                r = ts_label_check_set(l, ln, &t->store->labels, key, err);
        if (r < 0) {
                ts_label_free(l, ln);
                return r;
        }
        *ret = l;
        *ret_n = ln;
        return 0;
}

/* Fills the names and labels of a new record i. */
static int new_record(ts_store_txn *t, const char *ns, const char *key, const char *parent,
                      const ts_label *labels, size_t n_labels, ts_store_info *i, ts_error **err) {
        i->namespace = strdup(ns);
        i->name = strdup(key);
        i->parent = strdup(parent ? parent : "");
        if (!i->namespace || !i->name || !i->parent)
                return -ENOMEM;
        return labels_of_request(t, key, labels, n_labels, &i->labels, &i->n_labels, err);
}

/* Gives record i (key k) a device id and the next snapshot id. The device
 * id comes first: running out of ids must fail before any write. */
static int assign_ids(ts_store_txn *t, const dbkey *k, ts_store_info *i, ts_error **err) {
        _cleanup_free_ uint8_t *ob = NULL;
        buf b = {};
        MDB_val owner;
        int r = owner_snapshot(k, &b, &owner);
        ob = b.data;
        if (r < 0)
                return r;
        r = dev_alloc(t, &owner, &i->dev_id, err);
        if (r < 0)
                return ts_error_prefix(err, r, "snapshot %s", i->name);
        uint64_t next_id;
        r = meta_get_u64(t, "next_id", 1, &next_id, err);
        if (r < 0)
                return r;
        i->id = next_id;
        return meta_put_u64(t, "next_id", next_id + 1, err);
}

int ts_store_create(ts_store_txn *t, const char *ns, const char *key, const char *parent,
                    ts_snapshot_kind kind, const ts_label *labels, size_t n_labels, uint64_t dev_size,
                    ts_store_info *ret_info, ts_error **err) {
        int r = need_write(t, "create snapshot", err);
        if (r < 0)
                return r;
        if (kind != TS_KIND_ACTIVE && kind != TS_KIND_VIEW)
                return ts_error_setf_plain(err, EINVAL,
                                           "snapshot type %s invalid; only snapshots of type Active or View can be created",
                                           ts_store_kind_to_string(kind));
        _cleanup_dbkey_ dbkey k = {};
        r = make_key(t, ns, key, &k, err);
        if (r < 0)
                return r;
        bool has_parent = parent && *parent;
        if (has_parent && (r = check_parent(t, ns, parent, err)) < 0)
                return r;
        r = exists(t, &k, err);
        if (r < 0)
                return r;
        if (r > 0)
                return ts_error_setf_plain(err, EEXIST, "snapshot %s: already exists", key);

        _cleanup_store_info_ ts_store_info i = { .kind = kind, .state = TS_STATE_CREATING, .dev_size = dev_size };
        r = check_room(t, key, err);
        if (r >= 0)
                r = new_record(t, ns, key, parent, labels, n_labels, &i, err);
        if (r >= 0)
                r = assign_ids(t, &k, &i, err);
        if (r < 0)
                return r;
        i.created_ns = i.updated_ns = now_ns();
        r = put_record(t, &k, &i, true, err);
        if (r >= 0 && has_parent)
                r = adjust_children(t, ns, parent, +1, err);
        if (r < 0)
                return r;
        hand_out(&i, ret_info);
        return 0;
}

int ts_store_get(ts_store_txn *t, const char *ns, const char *key, ts_store_info *ret_info, ts_error **err) {
        _cleanup_dbkey_ dbkey k = {};
        int r = make_key(t, ns, key, &k, err);
        if (r < 0)
                return r;
        return get_record(t, &k, ret_info, err);
}

int ts_store_set_state(ts_store_txn *t, const char *ns, const char *key, ts_snapshot_state state,
                       ts_error **err) {
        int r = need_write(t, "set snapshot state", err);
        if (r < 0)
                return r;
        if (state != TS_STATE_CREATING && state != TS_STATE_READY && state != TS_STATE_REMOVING)
                return ts_error_setf_plain(err, EINVAL, "snapshot state %d unknown", (int) state);
        _cleanup_dbkey_ dbkey k = {};
        _cleanup_store_info_ ts_store_info i = {};
        r = make_key(t, ns, key, &k, err);
        if (r < 0)
                return r;
        r = get_record(t, &k, &i, err);
        if (r < 0)
                return r;
        i.state = state;
        return put_record(t, &k, &i, false, err);
}

/* Renames the READY active snapshot key to name, as kind, with labels
 * replaced and created = updated = now: Commit, and the adoption of a spare. */
static int rename_active(ts_store_txn *t, const char *ns, const char *key, const char *name,
                         const ts_label *labels, size_t n_labels, ts_snapshot_kind kind,
                         int64_t usage_size, int64_t usage_inodes, ts_store_info *ret_info,
                         ts_error **err) {
        int r = need_write(t, kind == TS_KIND_COMMITTED ? "commit snapshot" : "adopt snapshot", err);
        if (r < 0)
                return r;
        _cleanup_dbkey_ dbkey k = {}, nk = {};
        r = make_key(t, ns, name, &nk, err);
        if (r < 0)
                return r;
        r = make_key(t, ns, key, &k, err);
        if (r < 0)
                return r;
        /* containerd checks the name first: a taken name wins over a missing key. */
        r = exists(t, &nk, err);
        if (r < 0)
                return r;
        if (r > 0)
                return ts_error_setf_plain(err, EEXIST, "%ssnapshot %s: already exists",
                                           kind == TS_KIND_COMMITTED ? "committed " : "", name);

        _cleanup_store_info_ ts_store_info i = {};
        r = get_record(t, &k, &i, NULL);
        if (r == -ENOENT)
                return ts_error_setf_plain(err, ENOENT, "failed to get active snapshot %s: not found", key);
        if (r < 0)
                return ts_error_setf_plain(err, -r, "active snapshot %s: %s", key, strerror(-r));
        if (i.kind != TS_KIND_ACTIVE)
                return ts_error_setf_plain(err, EBUSY, "snapshot %s is not active", key);
        if (i.state != TS_STATE_READY)
                return ts_error_setf_plain(err, EBUSY, "snapshot %s is %s, not ready", key,
                                           ts_store_state_to_string(i.state));
        r = check_room(t, name, err);
        if (r < 0)
                return r;

        ts_label *nl = NULL;
        size_t nn = 0;
        r = labels_of_request(t, name, labels, n_labels, &nl, &nn, err);
        if (r < 0)
                return r;
        ts_label_free(i.labels, i.n_labels);
        i.labels = nl;
        i.n_labels = nn;

        char *newname = strdup(name);
        if (!newname)
                return -ENOMEM;
        free(i.name);
        i.name = newname;
        i.kind = kind;
        i.created_ns = i.updated_ns = now_ns();
        i.usage_size = usage_size;
        i.usage_inodes = usage_inodes;

        r = put_record(t, &nk, &i, true, err);
        if (r < 0)
                return r;
        MDB_val kv = kval(&k);
        int rc = mdb_del(t->txn, t->store->snapshots, &kv, NULL);
        if (rc)
                return write_fail(t, err, rc, "delete active snapshot %s", key);

        _cleanup_free_ uint8_t *ob = NULL;
        buf b = {};
        MDB_val owner;
        r = owner_snapshot(&nk, &b, &owner);
        ob = b.data;
        if (r < 0)
                return r;
        r = dev_set_owner(t, i.dev_id, &owner, true, err);
        if (r < 0)
                return r;
        hand_out(&i, ret_info);
        return 0;
}

int ts_store_commit(ts_store_txn *t, const char *ns, const char *key, const char *name,
                    const ts_label *labels, size_t n_labels, int64_t usage_size, int64_t usage_inodes,
                    ts_store_info *ret_info, ts_error **err) {
        return rename_active(t, ns, key, name, labels, n_labels, TS_KIND_COMMITTED, usage_size,
                             usage_inodes, ret_info, err);
}

int ts_store_adopt(ts_store_txn *t, const char *ns, const char *key, const char *name,
                   const ts_label *labels, size_t n_labels, ts_store_info *ret_info, ts_error **err) {
        return rename_active(t, ns, key, name, labels, n_labels, TS_KIND_ACTIVE, 0, 0, ret_info, err);
}

int ts_store_remove_begin(ts_store_txn *t, const char *ns, const char *key, ts_store_info *ret_info,
                          ts_error **err) {
        _cleanup_dbkey_ dbkey k = {};
        _cleanup_store_info_ ts_store_info i = {};
        int r = load_for_removal(t, "remove snapshot", ns, key, &k, &i, err);
        if (r < 0)
                return r;
        if (i.state != TS_STATE_READY)
                return ts_error_setf_plain(err, EBUSY, "snapshot %s is %s, not ready", key,
                                           ts_store_state_to_string(i.state));
        i.state = TS_STATE_REMOVING;
        return store_record(t, &k, &i, ret_info, err);
}

int ts_store_delete(ts_store_txn *t, const char *ns, const char *key, ts_error **err) {
        _cleanup_dbkey_ dbkey k = {};
        _cleanup_store_info_ ts_store_info i = {};
        int r = load_for_removal(t, "delete snapshot", ns, key, &k, &i, err);
        if (r < 0)
                return r;
        MDB_val kv = kval(&k);
        int rc = mdb_del(t->txn, t->store->snapshots, &kv, NULL);
        if (rc)
                return write_fail(t, err, rc, "delete snapshot %s", key);
        r = dev_free(t, i.dev_id, err);
        if (r < 0)
                return r;
        if (i.parent && *i.parent) {
                r = adjust_children(t, ns, i.parent, -1, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Update's new labels for record i (containerd's UpdateInfo): "labels",
 * or no path, replaces them all; "labels.<k>" paths set or remove k. The
 * result is checked against the bounds. */
static int labels_apply_update(ts_store_txn *t, const char *key, ts_store_info *i, const ts_label *labels,
                               size_t n_labels, const char *const *fieldpaths, size_t n_fieldpaths,
                               ts_error **err) {
        bool all = n_fieldpaths == 0;
        size_t n_keys = 0;
        for (size_t f = 0; f < n_fieldpaths; f++) {
                const char *p = fieldpaths[f];
                if (p && strncmp(p, "labels.", 7) == 0)
                        n_keys++;
                else if (p && strcmp(p, "labels") == 0)
                        all = true;
                else
                        return ts_error_setf_plain(err, EINVAL, "cannot update %s field on snapshot %s",
                                                   p ? p : "(null)", key);
        }
        ts_label *in = NULL;
        size_t in_n = 0;
        int r = ts_label_check_request(labels, n_labels, &t->store->labels, err);
        if (r >= 0)
                r = ts_label_normalise(labels, n_labels, &in, &in_n);
        if (r < 0)
                return r;
        if (all) {
                /* "labels.<k>" next to "labels" sets k to its value in the
                 * new set too, so the result is the new set. */
                ts_label_free(i->labels, i->n_labels);
                i->labels = in;
                i->n_labels = in_n;
                return ts_label_check_set(i->labels, i->n_labels, &t->store->labels, key, err);
        }
        _cleanup_free_ const char **keys = malloc(n_keys * sizeof(*keys));
        if (!keys) {
                ts_label_free(in, in_n);
                return -ENOMEM;
        }
        for (size_t f = 0, j = 0; f < n_fieldpaths; f++)
                if (strncmp(fieldpaths[f], "labels.", 7) == 0)
                        keys[j++] = fieldpaths[f] + 7;
        r = ts_label_apply(&i->labels, &i->n_labels, keys, n_keys, in, in_n);
        ts_label_free(in, in_n);
        if (r < 0)
                return r;
        return ts_label_check_set(i->labels, i->n_labels, &t->store->labels, key, err);
}

int ts_store_update(ts_store_txn *t, const char *ns, const char *key, const ts_label *labels,
                    size_t n_labels, const char *const *fieldpaths, size_t n_fieldpaths,
                    ts_store_info *ret_info, ts_error **err) {
        _cleanup_dbkey_ dbkey k = {};
        _cleanup_store_info_ ts_store_info i = {};
        int r = load_for_write(t, "update snapshot", ns, key, &k, &i, err);
        if (r < 0)
                return r;

        r = labels_apply_update(t, key, &i, labels, n_labels, fieldpaths, n_fieldpaths, err);
        if (r >= 0)
                r = check_room(t, key, err);
        if (r < 0)
                return r;
        i.updated_ns = now_ns();
        return store_record(t, &k, &i, ret_info, err);
}

/* Positions c at the first record of ns (NULL: of the store) whose key
 * is after `after` (NULL: the first). start holds the search key. */
static int walk_start(MDB_cursor *c, const char *ns, const char *after, char **start, MDB_val *k, MDB_val *v) {
        if (!ns)
                return mdb_cursor_get(c, k, v, MDB_FIRST);
        size_t nl = strlen(ns), al = after ? strlen(after) : 0;
        *start = malloc(nl + 1 + al);
        if (!*start)
                return ENOMEM;
        memcpy(*start, ns, nl + 1);
        if (after)
                memcpy(*start + nl + 1, after, al);
        *k = (MDB_val){ .mv_size = nl + 1 + al, .mv_data = *start };
        int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
        if (rc == 0 && after && k->mv_size == nl + 1 + al && memcmp(k->mv_data, *start, nl + 1 + al) == 0)
                rc = mdb_cursor_get(c, k, v, MDB_NEXT);
        return rc;
}

int ts_store_walk_after(ts_store_txn *t, const char *ns, const char *after, ts_store_walk_fn fn, void *userdata,
                        ts_error **err) {
        if (after && !ns)
                return ts_error_setf_plain(err, EINVAL, "walk: a start key needs a namespace");
        MDB_cursor *c;
        int rc = mdb_cursor_open(t->txn, t->store->snapshots, &c);
        if (rc)
                return mdb_fail(err, rc, "open snapshot cursor");
        size_t nl = ns ? strlen(ns) : 0;
        _cleanup_free_ char *start = NULL;
        MDB_val k, v;
        rc = walk_start(c, ns, after, &start, &k, &v);
        if (rc == ENOMEM) {
                mdb_cursor_close(c);
                return -ENOMEM;
        }
        int r = 0;
        for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
                if (ns && (k.mv_size < nl + 1 || memcmp(k.mv_data, ns, nl + 1) != 0))
                        break;
                _cleanup_store_info_ ts_store_info i = {};
                r = record_decode(&k, &v, &i);
                if (r < 0) {
                        if (r == -EIO)
                                r = ts_error_setf_plain(err, EIO, "walk: corrupt snapshot record");
                        break;
                }
                r = fn(&i, userdata);
                if (r != 0)
                        break;
        }
        mdb_cursor_close(c);
        if (r == 0 && rc != 0 && rc != MDB_NOTFOUND)
                return mdb_fail(err, rc, "walk snapshots");
        return r;
}

int ts_store_walk(ts_store_txn *t, const char *ns, ts_store_walk_fn fn, void *userdata, ts_error **err) {
        return ts_store_walk_after(t, ns, NULL, fn, userdata, err);
}

int ts_store_parents(ts_store_txn *t, const char *ns, const char *key, ts_store_info **ret_infos,
                     size_t *ret_n, ts_error **err) {
        _cleanup_store_info_ ts_store_info cur = {};
        int r = ts_store_get(t, ns, key, &cur, err);
        if (r < 0)
                return r;
        /* A chain of distinct records is shorter than the number of records: a
         * longer walk has met a record twice, a loop that only a damaged store
         * can hold (a parent is committed before its child exists). */
        MDB_stat st;
        int rc = mdb_stat(t->txn, t->store->snapshots, &st);
        if (rc)
                return mdb_fail(err, rc, "count snapshots");
        ts_store_info *list = NULL;
        size_t n = 0;
        while (cur.parent && *cur.parent) {
                if (n >= st.ms_entries) {
                        ts_store_infos_free(list, n);
                        return ts_error_setf_plain(err, EIO, "snapshot %s: parent chain loops (at %s after %zu parents)",
                                                   key, cur.parent, n);
                }
                ts_store_info p = {};
                r = ts_store_get(t, ns, cur.parent, &p, err);
                if (r < 0) {
                        ts_store_infos_free(list, n);
                        if (r == -ENOENT)
                                ts_error_prefix(err, r, "missing parent of %s", cur.name);
                        return r;
                }
                ts_store_info *nl = realloc(list, (n + 1) * sizeof(*list));
                if (!nl) {
                        ts_store_info_done(&p);
                        ts_store_infos_free(list, n);
                        return -ENOMEM;
                }
                list = nl;
                list[n++] = p;
                ts_store_info_done(&cur);
                /* walk on from a copy of the parent's fields */
                cur.name = strdup(p.name);
                cur.parent = strdup(p.parent);
                if (!cur.name || !cur.parent) {
                        ts_store_infos_free(list, n);
                        return -ENOMEM;
                }
        }
        *ret_infos = list;
        *ret_n = n;
        return 0;
}

/* ---- base devices ---- */

static int base_decode(const MDB_val *k, const MDB_val *v, ts_store_base *ret) {
        if (k->mv_size != 8 || v->mv_size != 5)
                return -EIO;
        const uint8_t *p = v->mv_data;
        *ret = (ts_store_base){
                .size = from_be64(k->mv_data),
                .dev_id = from_be32(p),
                .formatted = p[4] != 0,
        };
        return 0;
}

static int base_put(ts_store_txn *t, const ts_store_base *b, ts_error **err) {
        uint8_t kb[8], vb[5];
        be64(kb, b->size);
        be32(vb, b->dev_id);
        vb[4] = b->formatted;
        MDB_val k = { .mv_size = 8, .mv_data = kb }, v = { .mv_size = 5, .mv_data = vb };
        int rc = mdb_put(t->txn, t->store->bases, &k, &v, 0);
        if (rc)
                return write_fail(t, err, rc, "write base device record");
        return 0;
}

int ts_store_base_get(ts_store_txn *t, uint64_t size, ts_store_base *ret, ts_error **err) {
        uint8_t kb[8];
        be64(kb, size);
        MDB_val k = { .mv_size = 8, .mv_data = kb }, v;
        int rc = mdb_get(t->txn, t->store->bases, &k, &v);
        if (rc == MDB_NOTFOUND)
                return ts_error_setf_plain(err, ENOENT, "no base device of size %" PRIu64, size);
        if (rc)
                return mdb_fail(err, rc, "read base device record");
        if (base_decode(&k, &v, ret) < 0)
                return ts_error_setf_plain(err, EIO, "base device of size %" PRIu64 ": corrupt record", size);
        return 0;
}

int ts_store_base_create(ts_store_txn *t, uint64_t size, ts_store_base *ret, ts_error **err) {
        int r = need_write(t, "create base device", err);
        if (r < 0)
                return r;
        if (size == 0)
                return ts_error_setf_plain(err, EINVAL, "base device size must not be 0");
        ts_store_base b;
        r = ts_store_base_get(t, size, &b, NULL);
        if (r >= 0)
                return ts_error_setf_plain(err, EEXIST, "base device of size %" PRIu64 " exists (id %u)", size,
                                           b.dev_id);
        if (r != -ENOENT)
                return ts_store_base_get(t, size, &b, err);
        r = check_room(t, "base device", err);
        if (r < 0)
                return r;
        uint8_t ob[9];
        ob[0] = 'B';
        be64(ob + 1, size);
        MDB_val owner = { .mv_size = 9, .mv_data = ob };
        b = (ts_store_base){ .size = size };
        r = dev_alloc(t, &owner, &b.dev_id, err);
        if (r < 0) {
                ts_error_prefix(err, r, "base device of size %" PRIu64, size);
                return r;
        }
        r = base_put(t, &b, err);
        if (r < 0)
                return r;
        if (ret)
                *ret = b;
        return 0;
}

/* The start of a write to one base device's record: a write transaction
 * and the record. */
static int base_load_for_write(ts_store_txn *t, const char *what, uint64_t size, ts_store_base *b,
                               ts_error **err) {
        int r = need_write(t, what, err);
        if (r < 0)
                return r;
        return ts_store_base_get(t, size, b, err);
}

int ts_store_base_set_formatted(ts_store_txn *t, uint64_t size, ts_error **err) {
        ts_store_base b;
        int r = base_load_for_write(t, "mark base device formatted", size, &b, err);
        if (r < 0)
                return r;
        b.formatted = true;
        return base_put(t, &b, err);
}

int ts_store_base_delete(ts_store_txn *t, uint64_t size, ts_error **err) {
        ts_store_base b;
        int r = base_load_for_write(t, "delete base device", size, &b, err);
        if (r < 0)
                return r;
        uint8_t kb[8];
        be64(kb, size);
        MDB_val k = { .mv_size = 8, .mv_data = kb };
        int rc = mdb_del(t->txn, t->store->bases, &k, NULL);
        if (rc)
                return write_fail(t, err, rc, "delete base device record");
        return dev_free(t, b.dev_id, err);
}

int ts_store_base_list(ts_store_txn *t, ts_store_base **ret, size_t *ret_n, ts_error **err) {
        MDB_cursor *c;
        int rc = mdb_cursor_open(t->txn, t->store->bases, &c);
        if (rc)
                return mdb_fail(err, rc, "open base cursor");
        ts_store_base *list = NULL;
        size_t n = 0;
        MDB_val k, v;
        int r = 0;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
                ts_store_base *nl = realloc(list, (n + 1) * sizeof(*list));
                if (!nl) {
                        r = -ENOMEM;
                        break;
                }
                list = nl;
                if (base_decode(&k, &v, &list[n]) < 0) {
                        r = ts_error_setf_plain(err, EIO, "base device table: corrupt record");
                        break;
                }
                n++;
        }
        mdb_cursor_close(c);
        if (r == 0 && rc != MDB_NOTFOUND)
                r = mdb_fail(err, rc, "list base devices");
        if (r < 0) {
                free(list);
                return r;
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

/* ---- test hooks (store-internal.h) ---- */

int ts_store_set_dev_cursor(ts_store_txn *t, uint32_t id, ts_error **err) {
        int r = need_write(t, "set device cursor", err);
        if (r < 0)
                return r;
        if (id < 1 || id > t->store->dev_id_max)
                return ts_error_setf_plain(err, ERANGE, "device id %u outside 1..%u", id, t->store->dev_id_max);
        return meta_put_u64(t, "next_dev", id, err);
}

int ts_store_set_parent(ts_store_txn *t, const char *ns, const char *key, const char *parent, ts_error **err) {
        _cleanup_dbkey_ dbkey k = {};
        _cleanup_store_info_ ts_store_info i = {};
        int r = load_for_write(t, "set parent", ns, key, &k, &i, err);
        if (r < 0)
                return r;
        char *p = strdup(parent ? parent : "");
        if (!p)
                return -ENOMEM;
        free(i.parent);
        i.parent = p;
        return store_record(t, &k, &i, NULL, err);
}
