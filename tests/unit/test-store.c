/* ts_store: containerd storage semantics, crash states, device ids, persistence,
 * concurrency of readers with one writer. Each test uses its own directory. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store-internal.h"
#include "tests/unit/failalloc.h"
#include "tests/unit/ts-check.h"

static char root[64];

static void setup(void) {
        snprintf(root, sizeof(root), "/tmp/ts-store-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(root));
}

static void teardown(void) {
        char p[128];
        snprintf(p, sizeof(p), "%s/data.mdb", root);
        unlink(p);
        snprintf(p, sizeof(p), "%s/lock.mdb", root);
        unlink(p);
        rmdir(root);
}

static ts_store *open_store(const ts_store_options *o) {
        ts_store *s = NULL;
        ts_error *err = NULL;
        int r = ts_store_open(root, o, &s, &err);
        ck_assert_msg(r == 0, "open: %s", ts_error_message(err, r));
        return s;
}

static ts_store_txn *wtxn(ts_store *s) {
        ts_store_txn *t = NULL;
        ck_assert_int_eq(ts_store_begin(s, true, &t, NULL), 0);
        return t;
}

static ts_store_txn *rtxn(ts_store *s) {
        ts_store_txn *t = NULL;
        ck_assert_int_eq(ts_store_begin(s, false, &t, NULL), 0);
        return t;
}

static void commit(ts_store_txn *t) {
        ts_error *err = NULL;
        int r = ts_store_txn_commit(t, &err);
        ck_assert_msg(r == 0, "commit: %s", ts_error_message(err, r));
}

/* create + mark READY, as the service does once the device exists */
static ts_store_info mk(ts_store_txn *t, const char *ns, const char *key, const char *parent, ts_snapshot_kind kind) {
        ts_store_info i = {};
        ts_error *err = NULL;
        int r = ts_store_create(t, ns, key, parent, kind, NULL, 0, 1 << 20, &i, &err);
        ck_assert_msg(r == 0, "create %s: %s", key, ts_error_message(err, r));
        ck_assert_int_eq(ts_store_set_state(t, ns, key, TS_STATE_READY, NULL), 0);
        i.state = TS_STATE_READY;
        return i;
}

static ts_store_info mk_committed(ts_store_txn *t, const char *ns, const char *name, const char *parent) {
        char key[128];
        snprintf(key, sizeof(key), "tmp-%s", name);
        ts_store_info a = mk(t, ns, key, parent, TS_KIND_ACTIVE);
        ts_store_info_done(&a);
        ts_store_info c = {};
        ck_assert_int_eq(ts_store_commit(t, ns, key, name, NULL, 0, 4096, 3, &c, NULL), 0);
        return c;
}

/* errp, not *errp: the call that fills it is another argument */
static int expect_err(int r, ts_error **errp, int want) {
        ts_error *err = *errp;
        *errp = NULL;
        ck_assert_msg(r == want, "got %d (%s), want %d", r, ts_error_message(err, r), want);
        if (want != 0)
                ck_assert_msg(err && err->msg && *err->msg, "no error message for %d", want);
        ts_error_free(err);
        return r;
}

/* A rename (Commit, adopting a spare) keeps the snapshot's id, device, size and
 * parent, sets created = updated = now, and replaces the labels by key=value. */
static void assert_renamed(const ts_store_info *got, const ts_store_info *was, const char *dropped,
                           const char *key, const char *value) {
        ck_assert_uint_eq(got->id, was->id);
        ck_assert_uint_eq(got->dev_id, was->dev_id);
        ck_assert_uint_eq(got->dev_size, was->dev_size);
        ck_assert_str_eq(got->parent, was->parent);
        ck_assert_int_eq(got->state, TS_STATE_READY);
        ck_assert_int_ge(got->created_ns, was->created_ns);
        ck_assert_int_eq(got->created_ns, got->updated_ns);
        ck_assert_uint_eq(got->n_labels, 1);
        ck_assert_ptr_null(ts_store_info_label(got, dropped));
        ck_assert_str_eq(ts_store_info_label(got, key), value);
}

START_TEST(create_and_get) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_label l[] = { { "b", "2" }, { "a", "1" }, { "empty", "" }, { "b", "3" } };
        ts_store_info i = {};
        ck_assert_int_eq(ts_store_create(t, "default", "k1", NULL, TS_KIND_ACTIVE, l, 4, 10 << 20, &i, NULL), 0);
        ck_assert_str_eq(i.namespace, "default");
        ck_assert_str_eq(i.name, "k1");
        ck_assert_str_eq(i.parent, "");
        ck_assert_int_eq(i.kind, TS_KIND_ACTIVE);
        ck_assert_int_eq(i.state, TS_STATE_CREATING);
        ck_assert_uint_eq(i.id, 1);
        ck_assert_uint_ge(i.dev_id, 1);
        ck_assert_uint_le(i.dev_id, TS_STORE_DEV_ID_MAX);
        ck_assert_uint_eq(i.dev_size, 10 << 20);
        ck_assert_int_eq(i.created_ns, i.updated_ns);
        ck_assert_int_gt(i.created_ns, 0);
        /* empty values dropped, last value wins, sorted */
        ck_assert_uint_eq(i.n_labels, 2);
        ck_assert_str_eq(i.labels[0].key, "a");
        ck_assert_str_eq(i.labels[1].key, "b");
        ck_assert_str_eq(ts_store_info_label(&i, "b"), "3");
        ck_assert_ptr_null(ts_store_info_label(&i, "empty"));
        commit(t);

        t = rtxn(s);
        ts_store_info g = {};
        ck_assert_int_eq(ts_store_get(t, "default", "k1", &g, NULL), 0);
        ck_assert_uint_eq(g.id, i.id);
        ck_assert_uint_eq(g.dev_id, i.dev_id);
        ck_assert_int_eq(g.created_ns, i.created_ns);
        ck_assert_str_eq(ts_store_info_label(&g, "a"), "1");
        ts_store_info_done(&g);
        ts_error *err = NULL;
        expect_err(ts_store_get(t, "default", "nope", &g, &err), &err, -ENOENT);
        err = NULL;
        expect_err(ts_store_get(t, "other", "k1", &g, &err), &err, -ENOENT); /* per namespace */
        /* a read transaction refuses writes */
        err = NULL;
        expect_err(ts_store_create(t, "default", "k2", NULL, TS_KIND_VIEW, NULL, 0, 1, NULL, &err), &err, -EROFS);
        ck_assert_int_eq(ts_store_txn_commit(t, NULL), 0);
        ts_store_info_done(&i);
        ts_store_close(s);
}
END_TEST

START_TEST(create_rules) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_store_info a = mk(t, "ns", "active", NULL, TS_KIND_ACTIVE);
        ts_store_info c = mk_committed(t, "ns", "layer", NULL);

        expect_err(ts_store_create(t, "ns", "x", "missing", TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err, -ENOENT);
        err = NULL;
        /* parent "active" exists but is not committed: InvalidArgument */
        expect_err(ts_store_create(t, "ns", "x", "active", TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err, -EINVAL);
        err = NULL;
        /* the parent must be in the same namespace */
        expect_err(ts_store_create(t, "other", "x", "layer", TS_KIND_VIEW, NULL, 0, 1, NULL, &err), &err, -ENOENT);
        err = NULL;
        expect_err(ts_store_create(t, "ns", "active", NULL, TS_KIND_VIEW, NULL, 0, 1, NULL, &err), &err, -EEXIST);
        err = NULL;
        expect_err(ts_store_create(t, "ns", "layer", NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err, -EEXIST);
        err = NULL;
        expect_err(ts_store_create(t, "ns", "x", NULL, TS_KIND_COMMITTED, NULL, 0, 1, NULL, &err), &err, -EINVAL);
        err = NULL;
        expect_err(ts_store_create(t, "ns", "x", NULL, TS_KIND_UNKNOWN, NULL, 0, 1, NULL, &err), &err, -EINVAL);
        err = NULL;
        expect_err(ts_store_create(t, "ns", "", NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err, -EINVAL);
        err = NULL;
        expect_err(ts_store_create(t, "", "x", NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err, -EINVAL);
        char longkey[600];
        memset(longkey, 'k', sizeof(longkey) - 1);
        longkey[sizeof(longkey) - 1] = 0;
        err = NULL;
        expect_err(ts_store_create(t, "ns", longkey, NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err,
                   -ENAMETOOLONG);

        /* a child of the committed layer: parent's child count rises, id grows */
        ts_store_info v = {};
        ck_assert_int_eq(ts_store_create(t, "ns", "view", "layer", TS_KIND_VIEW, NULL, 0, 1, &v, NULL), 0);
        ck_assert_str_eq(v.parent, "layer");
        ck_assert_uint_gt(v.id, c.id);
        ck_assert_uint_ne(v.dev_id, c.dev_id);
        ts_store_info p = {};
        ck_assert_int_eq(ts_store_get(t, "ns", "layer", &p, NULL), 0);
        ck_assert_uint_eq(p.children, 1);
        ts_store_info_done(&p);
        ts_store_txn_commit(t, NULL);
        ts_store_info_done(&a);
        ts_store_info_done(&c);
        ts_store_info_done(&v);
        ts_store_close(s);
}
END_TEST

START_TEST(commit_rules) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_store_info base = mk_committed(t, "ns", "base", NULL);
        ts_label al[] = { { "keep", "no" } };
        ts_store_info a = {};
        ck_assert_int_eq(ts_store_create(t, "ns", "work", "base", TS_KIND_ACTIVE, al, 1, 1 << 30, &a, NULL), 0);
        ts_store_info v = mk(t, "ns", "ro", "base", TS_KIND_VIEW);

        /* CREATING is not committable yet */
        expect_err(ts_store_commit(t, "ns", "work", "layer2", NULL, 0, 0, 0, NULL, &err), &err, -EBUSY);
        ck_assert_int_eq(ts_store_set_state(t, "ns", "work", TS_STATE_READY, NULL), 0);

        /* name taken wins over missing key, as containerd checks the name first */
        err = NULL;
        expect_err(ts_store_commit(t, "ns", "missing", "base", NULL, 0, 0, 0, NULL, &err), &err, -EEXIST);
        err = NULL;
        expect_err(ts_store_commit(t, "ns", "work", "work", NULL, 0, 0, 0, NULL, &err), &err, -EEXIST);
        err = NULL;
        expect_err(ts_store_commit(t, "ns", "missing", "new", NULL, 0, 0, 0, NULL, &err), &err, -ENOENT);
        err = NULL;
        expect_err(ts_store_commit(t, "ns", "ro", "new", NULL, 0, 0, 0, NULL, &err), &err, -EBUSY);
        err = NULL;
        expect_err(ts_store_commit(t, "ns", "base", "new", NULL, 0, 0, 0, NULL, &err), &err, -EBUSY);

        ts_label cl[] = { { "containerd.io/snapshot.ref", "sha256:1" } };
        ts_store_info c = {};
        ck_assert_int_eq(ts_store_commit(t, "ns", "work", "layer2", cl, 1, 12345, 67, &c, NULL), 0);
        ck_assert_str_eq(c.name, "layer2");
        ck_assert_int_eq(c.kind, TS_KIND_COMMITTED);
        ck_assert_uint_eq(c.dev_size, 1 << 30);
        ck_assert_int_eq(c.usage_size, 12345);
        ck_assert_int_eq(c.usage_inodes, 67);
        /* same snapshot id and thin device; labels replaced, not inherited */
        assert_renamed(&c, &a, "keep", "containerd.io/snapshot.ref", "sha256:1");

        ts_store_info g = {};
        err = NULL;
        expect_err(ts_store_get(t, "ns", "work", &g, &err), &err, -ENOENT);
        ck_assert_int_eq(ts_store_get(t, "ns", "base", &g, NULL), 0);
        ck_assert_uint_eq(g.children, 2); /* "ro" and the renamed "layer2" */
        ts_store_info_done(&g);
        ts_store_txn_commit(t, NULL);

        ts_store_info_done(&base);
        ts_store_info_done(&a);
        ts_store_info_done(&v);
        ts_store_info_done(&c);
        ts_store_close(s);
}
END_TEST

START_TEST(remove_rules) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_store_info base = mk_committed(t, "ns", "base", NULL);
        ts_store_info child = mk(t, "ns", "child", "base", TS_KIND_ACTIVE);

        expect_err(ts_store_remove_begin(t, "ns", "base", NULL, &err), &err, -ENOTEMPTY);
        err = NULL;
        expect_err(ts_store_delete(t, "ns", "base", &err), &err, -ENOTEMPTY);
        err = NULL;
        expect_err(ts_store_remove_begin(t, "ns", "nope", NULL, &err), &err, -ENOENT);

        ts_store_info r = {};
        ck_assert_int_eq(ts_store_remove_begin(t, "ns", "child", &r, NULL), 0);
        ck_assert_int_eq(r.state, TS_STATE_REMOVING);
        ts_store_info_done(&r);
        /* a second remove while one is in progress */
        err = NULL;
        expect_err(ts_store_remove_begin(t, "ns", "child", NULL, &err), &err, -EBUSY);
        /* the parent still counts the child until the record is deleted */
        err = NULL;
        expect_err(ts_store_remove_begin(t, "ns", "base", NULL, &err), &err, -ENOTEMPTY);
        ck_assert_int_eq(ts_store_delete(t, "ns", "child", NULL), 0);
        err = NULL;
        expect_err(ts_store_get(t, "ns", "child", &r, &err), &err, -ENOENT);
        ts_store_info g = {};
        ck_assert_int_eq(ts_store_get(t, "ns", "base", &g, NULL), 0);
        ck_assert_uint_eq(g.children, 0);
        ts_store_info_done(&g);

        /* a parent being removed cannot get new children */
        ck_assert_int_eq(ts_store_remove_begin(t, "ns", "base", NULL, NULL), 0);
        err = NULL;
        expect_err(ts_store_create(t, "ns", "late", "base", TS_KIND_VIEW, NULL, 0, 1, NULL, &err), &err, -ENOENT);
        /* giving a remove up */
        ck_assert_int_eq(ts_store_set_state(t, "ns", "base", TS_STATE_READY, NULL), 0);
        ck_assert_int_eq(ts_store_remove_begin(t, "ns", "base", NULL, NULL), 0);
        ck_assert_int_eq(ts_store_delete(t, "ns", "base", NULL), 0);
        err = NULL;
        expect_err(ts_store_delete(t, "ns", "base", &err), &err, -ENOENT);
        ts_store_txn_commit(t, NULL);
        ts_store_info_done(&base);
        ts_store_info_done(&child);
        ts_store_close(s);
}
END_TEST

START_TEST(update_rules) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_label l0[] = { { "a", "1" }, { "b", "2" } };
        ts_store_info i = {};
        ck_assert_int_eq(ts_store_create(t, "ns", "k", NULL, TS_KIND_ACTIVE, l0, 2, 1, &i, NULL), 0);

        /* no field paths: labels replaced */
        ts_label l1[] = { { "c", "3" } };
        ts_store_info u = {};
        ck_assert_int_eq(ts_store_update(t, "ns", "k", l1, 1, NULL, 0, &u, NULL), 0);
        ck_assert_uint_eq(u.n_labels, 1);
        ck_assert_str_eq(ts_store_info_label(&u, "c"), "3");
        ck_assert_int_ge(u.updated_ns, i.updated_ns);
        ck_assert_int_eq(u.created_ns, i.created_ns);
        ck_assert_uint_eq(u.id, i.id);
        ts_store_info_done(&u);

        /* labels.<k>: set one, remove one absent from the input, leave the rest */
        ck_assert_int_eq(ts_store_update(t, "ns", "k", l0, 2, NULL, 0, NULL, NULL), 0);
        ts_label l2[] = { { "a", "10" }, { "z", "26" } };
        const char *fp[] = { "labels.a", "labels.b" };
        ck_assert_int_eq(ts_store_update(t, "ns", "k", l2, 2, fp, 2, &u, NULL), 0);
        ck_assert_uint_eq(u.n_labels, 1);
        ck_assert_str_eq(ts_store_info_label(&u, "a"), "10");
        ck_assert_ptr_null(ts_store_info_label(&u, "b"));
        ck_assert_ptr_null(ts_store_info_label(&u, "z"));
        ts_store_info_done(&u);

        /* a dotted label key through labels.<k> */
        ts_label l3[] = { { "containerd.io/gc.ref.snapshot.x", "y" } };
        const char *fp3[] = { "labels.containerd.io/gc.ref.snapshot.x" };
        ck_assert_int_eq(ts_store_update(t, "ns", "k", l3, 1, fp3, 1, &u, NULL), 0);
        ck_assert_str_eq(ts_store_info_label(&u, "containerd.io/gc.ref.snapshot.x"), "y");
        ck_assert_str_eq(ts_store_info_label(&u, "a"), "10");
        ts_store_info_done(&u);

        /* "labels" replaces all */
        const char *fp4[] = { "labels" };
        ck_assert_int_eq(ts_store_update(t, "ns", "k", l1, 1, fp4, 1, &u, NULL), 0);
        ck_assert_uint_eq(u.n_labels, 1);
        ck_assert_str_eq(ts_store_info_label(&u, "c"), "3");
        ts_store_info_done(&u);

        /* anything else: InvalidArgument, nothing written */
        const char *fp5[] = { "labels.q", "parent" };
        err = NULL;
        expect_err(ts_store_update(t, "ns", "k", l2, 2, fp5, 2, &u, &err), &err, -EINVAL);
        ck_assert_int_eq(ts_store_get(t, "ns", "k", &u, NULL), 0);
        ck_assert_uint_eq(u.n_labels, 1);
        ck_assert_str_eq(ts_store_info_label(&u, "c"), "3");
        ts_store_info_done(&u);
        err = NULL;
        expect_err(ts_store_update(t, "ns", "nope", l2, 2, NULL, 0, NULL, &err), &err, -ENOENT);
        ts_store_txn_commit(t, NULL);
        ts_store_info_done(&i);
        ts_store_close(s);
}
END_TEST

typedef struct collected {
        char names[32][64];
        int n;
        int stop_after;
} collected;

static int collect(const ts_store_info *i, void *ud) {
        collected *c = ud;
        snprintf(c->names[c->n++], 64, "%s/%s", i->namespace, i->name);
        if (c->stop_after && c->n == c->stop_after)
                return 42;
        return 0;
}

START_TEST(walk_and_parents) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_store_info x;
        x = mk_committed(t, "ns", "l1", NULL);
        ts_store_info_done(&x);
        x = mk_committed(t, "ns", "l2", "l1");
        ts_store_info_done(&x);
        x = mk_committed(t, "ns", "l3", "l2");
        ts_store_info_done(&x);
        x = mk(t, "ns", "work", "l3", TS_KIND_ACTIVE);
        ts_store_info_done(&x);
        x = mk(t, "ns2", "other", NULL, TS_KIND_VIEW);
        ts_store_info_done(&x);
        x = mk(t, "n", "short", NULL, TS_KIND_VIEW);
        ts_store_info_done(&x);
        commit(t);

        t = rtxn(s);
        collected c = {};
        ck_assert_int_eq(ts_store_walk(t, "ns", collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 4);
        ck_assert_str_eq(c.names[0], "ns/l1");
        ck_assert_str_eq(c.names[3], "ns/work");
        c = (collected){};
        ck_assert_int_eq(ts_store_walk(t, "n", collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 1);
        ck_assert_str_eq(c.names[0], "n/short");
        c = (collected){};
        ck_assert_int_eq(ts_store_walk(t, NULL, collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 6);
        c = (collected){ .stop_after = 2 };
        ck_assert_int_eq(ts_store_walk(t, NULL, collect, &c, NULL), 42);
        ck_assert_int_eq(c.n, 2);
        c = (collected){};
        ck_assert_int_eq(ts_store_walk(t, "none", collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 0);
        /* on from a key: the ones after it (l1 l2 l3 work), a key that is
         * gone included; never past the namespace */
        c = (collected){};
        ck_assert_int_eq(ts_store_walk_after(t, "ns", "l2", collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 2);
        ck_assert_str_eq(c.names[0], "ns/l3");
        ck_assert_str_eq(c.names[1], "ns/work");
        c = (collected){};
        ck_assert_int_eq(ts_store_walk_after(t, "ns", "l25", collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 2);
        c = (collected){};
        ck_assert_int_eq(ts_store_walk_after(t, "ns", "work", collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 0);
        c = (collected){};
        ck_assert_int_eq(ts_store_walk_after(t, "n", "", collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 1);
        ck_assert_int_eq(ts_store_walk_after(t, NULL, "l2", collect, &c, NULL), -EINVAL);

        ts_store_info *ps = NULL;
        size_t n = 0;
        ck_assert_int_eq(ts_store_parents(t, "ns", "work", &ps, &n, NULL), 0);
        ck_assert_uint_eq(n, 3);
        ck_assert_str_eq(ps[0].name, "l3");
        ck_assert_str_eq(ps[1].name, "l2");
        ck_assert_str_eq(ps[2].name, "l1");
        ck_assert_uint_lt(ps[2].id, ps[0].id);
        ts_store_infos_free(ps, n);
        ck_assert_int_eq(ts_store_parents(t, "ns", "l1", &ps, &n, NULL), 0);
        ck_assert_uint_eq(n, 0);
        ck_assert_ptr_null(ps);
        ts_error *err = NULL;
        expect_err(ts_store_parents(t, "ns", "nope", &ps, &n, &err), &err, -ENOENT);
        ts_store_txn_abort(t);
        ts_store_close(s);
}
END_TEST

typedef struct devs {
        uint32_t ids[64];
        bool base[64];
        char keys[64][32];
        int n;
} devs;

static int collect_dev(const ts_store_device *d, void *ud) {
        devs *v = ud;
        v->ids[v->n] = d->dev_id;
        v->base[v->n] = d->is_base;
        snprintf(v->keys[v->n], 32, "%s", d->is_base ? "" : d->key);
        v->n++;
        return 0;
}

/* A spare cut ahead is handed over to a new key: still active, same device. */
START_TEST(adopt_rules) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_store_info base = mk_committed(t, "ns", "base", NULL);
        ts_label sl[] = { { "spare", "yes" } };
        ts_store_info sp = {};
        ck_assert_int_eq(ts_store_create(t, "ns", "~spare/1", "base", TS_KIND_ACTIVE, sl, 1, 1 << 30, &sp, NULL), 0);
        ts_store_info v = mk(t, "ns", "ro", "base", TS_KIND_VIEW);
        ts_store_info taken = mk(t, "ns", "taken", "base", TS_KIND_ACTIVE);

        /* CREATING is not adoptable yet; the rest as Commit checks them */
        expect_err(ts_store_adopt(t, "ns", "~spare/1", "vm", NULL, 0, NULL, &err), &err, -EBUSY);
        ck_assert_int_eq(ts_store_set_state(t, "ns", "~spare/1", TS_STATE_READY, NULL), 0);
        err = NULL;
        expect_err(ts_store_adopt(t, "ns", "~spare/1", "taken", NULL, 0, NULL, &err), &err, -EEXIST);
        err = NULL;
        expect_err(ts_store_adopt(t, "ns", "missing", "vm", NULL, 0, NULL, &err), &err, -ENOENT);
        err = NULL;
        expect_err(ts_store_adopt(t, "ns", "ro", "vm", NULL, 0, NULL, &err), &err, -EBUSY);
        err = NULL;
        expect_err(ts_store_adopt(t, "ns", "base", "vm", NULL, 0, NULL, &err), &err, -EBUSY);

        ts_label vl[] = { { "containerd.io/snapshot/thinsnap.spares", "4" } };
        ts_store_info a = {};
        ck_assert_int_eq(ts_store_adopt(t, "ns", "~spare/1", "vm", vl, 1, &a, NULL), 0);
        ck_assert_str_eq(a.name, "vm");
        ck_assert_int_eq(a.kind, TS_KIND_ACTIVE);
        ck_assert_str_eq(a.parent, "base");
        assert_renamed(&a, &sp, "spare", "containerd.io/snapshot/thinsnap.spares", "4");

        /* the device's owner follows: the adopted key is what a device lookup finds */
        ts_store_info g = {};
        err = NULL;
        expect_err(ts_store_get(t, "ns", "~spare/1", &g, &err), &err, -ENOENT);
        ck_assert_int_eq(ts_store_get(t, "ns", "vm", &g, NULL), 0);
        ck_assert_uint_eq(g.dev_id, sp.dev_id);
        ts_store_info_done(&g);
        devs one = {};
        ck_assert_int_eq(ts_store_device_get(t, sp.dev_id, collect_dev, &one, NULL), 0);
        ck_assert_int_eq(one.n, 1);
        ck_assert_str_eq(one.keys[0], "vm");
        ck_assert_int_eq(ts_store_get(t, "ns", "base", &g, NULL), 0);
        ck_assert_uint_eq(g.children, 3); /* "ro", "taken" and the adopted "vm" */
        ts_store_info_done(&g);
        /* it is an active snapshot like any other: it commits and removes */
        ck_assert_int_eq(ts_store_commit(t, "ns", "vm", "layer", NULL, 0, 0, 0, NULL, NULL), 0);
        ts_store_txn_commit(t, NULL);

        ts_store_info_done(&base);
        ts_store_info_done(&sp);
        ts_store_info_done(&v);
        ts_store_info_done(&taken);
        ts_store_info_done(&a);
        ts_store_close(s);
}
END_TEST

START_TEST(persistence_and_crash_states) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_store_info l = mk_committed(t, "ns", "layer", NULL);
        ts_store_info creating = {};
        ck_assert_int_eq(ts_store_create(t, "ns", "creating", "layer", TS_KIND_ACTIVE, NULL, 0, 1, &creating, NULL), 0);
        ts_store_info removing = mk(t, "ns", "removing", NULL, TS_KIND_VIEW);
        ck_assert_int_eq(ts_store_remove_begin(t, "ns", "removing", NULL, NULL), 0);
        ts_store_base b;
        ck_assert_int_eq(ts_store_base_create(t, 10ull << 30, &b, NULL), 0);
        commit(t);
        /* an aborted transaction leaves no trace */
        t = wtxn(s);
        ts_store_info gone = mk(t, "ns", "aborted", NULL, TS_KIND_ACTIVE);
        ts_store_txn_abort(t);
        s = ts_store_close(s);

        s = open_store(NULL);
        t = rtxn(s);
        ts_store_info g = {};
        ck_assert_int_eq(ts_store_get(t, "ns", "creating", &g, NULL), 0);
        ck_assert_int_eq(g.state, TS_STATE_CREATING);
        ck_assert_uint_eq(g.dev_id, creating.dev_id);
        ts_store_info_done(&g);
        ck_assert_int_eq(ts_store_get(t, "ns", "removing", &g, NULL), 0);
        ck_assert_int_eq(g.state, TS_STATE_REMOVING);
        ts_store_info_done(&g);
        ck_assert_int_eq(ts_store_get(t, "ns", "layer", &g, NULL), 0);
        ck_assert_uint_eq(g.children, 1);
        ck_assert_int_eq(g.usage_size, 4096);
        ts_store_info_done(&g);
        ts_error *err = NULL;
        expect_err(ts_store_get(t, "ns", "aborted", &g, &err), &err, -ENOENT);

        /* every device id the store knows, for reconciliation against the pool */
        devs d = {};
        ck_assert_int_eq(ts_store_device_walk(t, collect_dev, &d, NULL), 0);
        ck_assert_int_eq(d.n, 4);
        for (int i = 1; i < d.n; i++)
                ck_assert_uint_lt(d.ids[i - 1], d.ids[i]);
        int bases = 0, found_creating = 0;
        for (int i = 0; i < d.n; i++) {
                bases += d.base[i];
                if (d.ids[i] == creating.dev_id)
                        found_creating = !strcmp(d.keys[i], "creating");
        }
        ck_assert_int_eq(bases, 1);
        ck_assert(found_creating);
        /* one device id's owner */
        devs one = {};
        ck_assert_int_eq(ts_store_device_get(t, creating.dev_id, collect_dev, &one, NULL), 0);
        ck_assert_int_eq(one.n, 1);
        ck_assert_str_eq(one.keys[0], "creating");
        ck_assert_int_eq(ts_store_device_get(t, b.dev_id, collect_dev, &one, NULL), 0);
        ck_assert(one.base[1]);
        ts_error *gerr = NULL;
        expect_err(ts_store_device_get(t, 4000, collect_dev, &one, &gerr), &gerr, -ENOENT);
        ck_assert_int_eq(one.n, 2);
        ts_store_base *bl = NULL;
        size_t bn = 0;
        ck_assert_int_eq(ts_store_base_list(t, &bl, &bn, NULL), 0);
        ck_assert_uint_eq(bn, 1);
        ck_assert_uint_eq(bl[0].dev_id, b.dev_id);
        ck_assert(!bl[0].formatted);
        free(bl);
        ts_store_txn_abort(t);

        /* snapshot ids stay monotonic across reopen and are never reused */
        t = wtxn(s);
        ck_assert_int_eq(ts_store_delete(t, "ns", "creating", NULL), 0);
        ts_store_info n = mk(t, "ns", "new", NULL, TS_KIND_ACTIVE);
        ck_assert_uint_eq(n.id, gone.id);     /* an aborted transaction's id was never taken */
        ck_assert_uint_gt(n.id, removing.id); /* a committed one is never handed out again */
        ck_assert_uint_gt(n.id, creating.id);
        commit(t);
        ts_store_info_done(&n);
        ts_store_info_done(&l);
        ts_store_info_done(&creating);
        ts_store_info_done(&removing);
        ts_store_info_done(&gone);
        ts_store_close(s);
}
END_TEST

START_TEST(device_ids_next_fit) {
        ts_store_options o = { .dev_id_max = 4 };
        ts_store *s = open_store(&o);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        uint32_t ids[4];
        for (int i = 0; i < 4; i++) {
                char k[8];
                snprintf(k, sizeof(k), "k%d", i);
                ts_store_info x = mk(t, "ns", k, NULL, TS_KIND_ACTIVE);
                ids[i] = x.dev_id;
                ts_store_info_done(&x);
        }
        ck_assert_uint_eq(ids[0], 1);
        ck_assert_uint_eq(ids[3], 4);
        /* all ids in use: ResourceExhausted, for snapshots and bases alike */
        expect_err(ts_store_create(t, "ns", "k4", NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err, -ENOSPC);
        err = NULL;
        expect_err(ts_store_base_create(t, 1 << 20, NULL, &err), &err, -ENOSPC);
        /* free 2 and 3; the next id wraps to the lowest free one (2), then 3 */
        ck_assert_int_eq(ts_store_delete(t, "ns", "k2", NULL), 0);
        ck_assert_int_eq(ts_store_delete(t, "ns", "k1", NULL), 0);
        commit(t);
        s = ts_store_close(s);

        /* the cursor survives reopen */
        s = open_store(&o);
        t = wtxn(s);
        ts_store_info x = mk(t, "ns", "a", NULL, TS_KIND_ACTIVE);
        ck_assert_uint_eq(x.dev_id, 2);
        ts_store_info_done(&x);
        /* freeing 2 right away does not make it the next one: next-fit goes on to 3 */
        ck_assert_int_eq(ts_store_delete(t, "ns", "a", NULL), 0);
        x = mk(t, "ns", "b", NULL, TS_KIND_ACTIVE);
        ck_assert_uint_eq(x.dev_id, 3);
        ts_store_info_done(&x);
        x = mk(t, "ns", "c", NULL, TS_KIND_ACTIVE);
        ck_assert_uint_eq(x.dev_id, 2);
        ts_store_info_done(&x);
        commit(t);
        ts_store_close(s);

        /* the limit is dm-thin's 24 bits */
        ts_store_options big = { .dev_id_max = TS_STORE_DEV_ID_MAX + 1 };
        ts_store *bad = NULL;
        err = NULL;
        expect_err(ts_store_open(root, &big, &bad, &err), &err, -EINVAL);
        ck_assert_ptr_null(bad);
        ck_assert_uint_eq(TS_STORE_DEV_ID_MAX, (1u << 24) - 1);
}
END_TEST

START_TEST(device_ids_wrap_at_24_bits) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_store_info x = mk(t, "ns", "first", NULL, TS_KIND_ACTIVE);
        ck_assert_uint_eq(x.dev_id, 1);
        ts_store_info_done(&x);
        expect_err(ts_store_set_dev_cursor(t, TS_STORE_DEV_ID_MAX + 1, &err), &err, -ERANGE);
        ck_assert_int_eq(ts_store_set_dev_cursor(t, TS_STORE_DEV_ID_MAX - 1, NULL), 0);
        uint32_t want[] = { 0xfffffe, 0xffffff, 2 /* wrapped; 1 is in use */, 3 };
        for (int i = 0; i < 4; i++) {
                char k[8];
                snprintf(k, sizeof(k), "w%d", i);
                x = mk(t, "ns", k, NULL, TS_KIND_ACTIVE);
                ck_assert_uint_eq(x.dev_id, want[i]);
                ts_store_info_done(&x);
        }
        commit(t);
        ts_store_close(s);
}
END_TEST

START_TEST(base_devices) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_store_base b = {}, g = {};
        ck_assert_int_eq(ts_store_base_create(t, 8ull << 30, &b, NULL), 0);
        ck_assert_uint_eq(b.size, 8ull << 30);
        ck_assert(!b.formatted);
        expect_err(ts_store_base_create(t, 8ull << 30, NULL, &err), &err, -EEXIST);
        err = NULL;
        expect_err(ts_store_base_create(t, 0, NULL, &err), &err, -EINVAL);
        ck_assert_int_eq(ts_store_base_set_formatted(t, 8ull << 30, NULL), 0);
        ck_assert_int_eq(ts_store_base_get(t, 8ull << 30, &g, NULL), 0);
        ck_assert(g.formatted);
        ck_assert_uint_eq(g.dev_id, b.dev_id);
        /* a snapshot never gets the base's id */
        ts_store_info x = mk(t, "ns", "k", NULL, TS_KIND_ACTIVE);
        ck_assert_uint_ne(x.dev_id, b.dev_id);
        ts_store_info_done(&x);
        ts_store_base b2;
        ck_assert_int_eq(ts_store_base_create(t, 1ull << 30, &b2, NULL), 0);
        ts_store_base *list = NULL;
        size_t n = 0;
        ck_assert_int_eq(ts_store_base_list(t, &list, &n, NULL), 0);
        ck_assert_uint_eq(n, 2);
        ck_assert_uint_eq(list[0].size, 1ull << 30);
        ck_assert_uint_eq(list[1].size, 8ull << 30);
        free(list);
        ck_assert_int_eq(ts_store_base_delete(t, 8ull << 30, NULL), 0);
        err = NULL;
        expect_err(ts_store_base_get(t, 8ull << 30, &g, &err), &err, -ENOENT);
        err = NULL;
        expect_err(ts_store_base_delete(t, 8ull << 30, &err), &err, -ENOENT);
        devs d = {};
        ck_assert_int_eq(ts_store_device_walk(t, collect_dev, &d, NULL), 0);
        ck_assert_int_eq(d.n, 2);
        for (int i = 0; i < d.n; i++)
                ck_assert_uint_ne(d.ids[i], b.dev_id);
        commit(t);
        ts_store_close(s);
}
END_TEST

START_TEST(map_full_is_enospc) {
        ts_store_options o = { .map_size = 256 * 1024, .map_max = 256 * 1024 };
        ts_store *s = open_store(&o);
        char big[2000];
        memset(big, 'v', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        ts_label l[] = { { "big", big } };
        int r = 0;
        ts_error *err = NULL;
        for (int i = 0; i < 1000 && r == 0; i++) {
                ts_store_txn *t = wtxn(s);
                char k[16];
                snprintf(k, sizeof(k), "k%d", i);
                r = ts_store_create(t, "ns", k, NULL, TS_KIND_ACTIVE, l, 1, 1, NULL, &err);
                if (r == 0)
                        r = ts_store_txn_commit(t, &err);
                else
                        ts_store_txn_abort(t);
        }
        ck_assert_int_eq(r, -ENOSPC);
        ck_assert_ptr_nonnull(strstr(err->msg, "MDB_MAP_FULL"));
        ts_error_free(err);
        /* earlier data is intact */
        ts_store_txn *t = rtxn(s);
        ts_store_info i = {};
        ck_assert_int_eq(ts_store_get(t, "ns", "k0", &i, NULL), 0);
        ck_assert_str_eq(ts_store_info_label(&i, "big"), big);
        ts_store_info_done(&i);
        ts_store_txn_abort(t);
        ts_store_close(s);
}
END_TEST

/* ts_store_write bodies for the growth tests. */
typedef struct fill_arg {
        const char *key;
        const ts_label *labels;
        size_t n_labels;
} fill_arg;

static int fill_one(ts_store_txn *t, void *p, ts_error **err) {
        fill_arg *a = p;
        int r = ts_store_create(t, "ns", a->key, NULL, TS_KIND_ACTIVE, a->labels, a->n_labels, 1, NULL, err);
        if (r >= 0)
                r = ts_store_set_state(t, "ns", a->key, TS_STATE_READY, err);
        return r;
}

static int set_removing(ts_store_txn *t, void *p, ts_error **err) {
        return ts_store_set_state(t, "ns", p, TS_STATE_REMOVING, err);
}

static int remove_one(ts_store_txn *t, void *p, ts_error **err) {
        return ts_store_delete(t, "ns", p, err);
}

/* Creates records of about 2 KiB through ts_store_write until one fails;
 * returns how many were made and that failure in *ret_r and *err. */
static int fill_store(ts_store *s, int *ret_r, ts_error **err) {
        char big[2000];
        memset(big, 'v', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        ts_label l[] = { { "big", big } };
        int n = 0, r = 0;
        while (n < 10000) {
                char k[16];
                snprintf(k, sizeof(k), "k%d", n);
                fill_arg a = { k, l, 1 };
                r = ts_store_write(s, fill_one, &a, err);
                if (r < 0)
                        break;
                n++;
        }
        *ret_r = r;
        return n;
}

/* The map grows as records arrive, up to its maximum; near it new records are
 * refused with a message that says how to raise it, while removals (which
 * need pages too: LMDB copies on write) and a re-open still succeed. */
START_TEST(map_grows_to_its_maximum) {
        ts_store_options o = { .map_size = 64 << 10, .map_max = 1 << 20, .no_sync = true };
        ts_store *s = open_store(&o);
        uint64_t size, max;
        ts_store_map(s, &size, &max);
        ck_assert_uint_eq(size, 64 << 10);
        ck_assert_uint_eq(max, 1 << 20);
        ts_error *err = NULL;
        int r;
        int n = fill_store(s, &r, &err);
        ck_assert_msg(r == -ENOSPC, "got %d: %s", r, ts_error_message(err, r));
        ck_assert_msg(strstr(err->msg, "its map is 1024 KiB, its maximum of 1024 KiB"), "%s", err->msg);
        ck_assert_ptr_nonnull(strstr(err->msg, "store_map_max"));
        ts_error_free(err);
        err = NULL;
        ts_store_map(s, &size, &max);
        ck_assert_uint_eq(size, 1 << 20);
        /* a 2 KiB record takes a page of its own: far more than 64 KiB holds */
        ck_assert_int_gt(n, 100);

        /* still refused; a change of state goes on (it may take the reserve) */
        int more = fill_store(s, &r, &err);
        ck_assert_int_eq(more, 0);
        ts_error_free(err);
        err = NULL;
        for (int i = 0; i < n; i++) {
                char k[16];
                snprintf(k, sizeof k, "k%d", i);
                r = ts_store_write(s, set_removing, k, &err);
                ck_assert_msg(r == 0, "set_state %s: %s", k, ts_error_message(err, r));
        }

        for (int i = 0; i < n; i++) {
                char k[16];
                snprintf(k, sizeof(k), "k%d", i);
                r = ts_store_write(s, remove_one, k, &err);
                ck_assert_msg(r == 0, "remove %s: %s", k, ts_error_message(err, r));
        }
        ts_store_close(s);

        s = open_store(&o);
        ts_store_map(s, &size, &max);
        /* LMDB opens the map at least as large as the data in it */
        ck_assert_uint_ge(size, 64 << 10);
        int again = fill_store(s, &r, &err);
        ck_assert_int_eq(r, -ENOSPC);
        ts_error_free(err);
        ck_assert_int_ge(again, n - 2);
        ts_store_close(s);
}
END_TEST

START_TEST(map_options_checked) {
        ts_store *s = NULL;
        ts_error *err = NULL;
        ts_store_options o = { .map_size = 2 << 20, .map_max = 1 << 20 };
        expect_err(ts_store_open(root, &o, &s, &err), &err, -EINVAL);
        o = (ts_store_options){ .map_max = 4096 };
        expect_err(ts_store_open(root, &o, &s, &err), &err, -EINVAL);
        /* a map size above the default maximum raises the maximum with it */
        o = (ts_store_options){ .map_size = 2ull << 30 };
        s = open_store(&o);
        uint64_t size, max;
        ts_store_map(s, &size, &max);
        ck_assert_uint_eq(size, 2ull << 30);
        ck_assert_uint_eq(max, 2ull << 30);
        ts_store_close(s);
}
END_TEST

/* Growing the map remaps it: readers on other threads must never see it
 * move under them (ASan reports a read of the old map). */
typedef struct grow_shared {
        ts_store *s;
        volatile int done;
        int failures;
} grow_shared;

static int read_labels(const ts_store_info *i, void *ud) {
        (void) ud;
        const char *v = ts_store_info_label(i, "big");
        return v && strlen(v) == 1999 ? 0 : -EIO;
}

static void *grow_reader(void *p) {
        grow_shared *sh = p;
        while (!__atomic_load_n(&sh->done, __ATOMIC_ACQUIRE)) {
                ts_store_txn *t = NULL;
                if (ts_store_begin(sh->s, false, &t, NULL) < 0 || ts_store_walk(t, "ns", read_labels, NULL, NULL) < 0)
                        __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
                ts_store_txn_abort(t);
        }
        return NULL;
}

START_TEST(map_grows_under_readers) {
        ts_store_options o = { .map_size = 64 << 10, .map_max = 4 << 20, .no_sync = true };
        grow_shared sh = { .s = open_store(&o) };
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
                ck_assert_int_eq(pthread_create(&th[i], NULL, grow_reader, &sh), 0);
        ts_error *err = NULL;
        int r;
        int n = fill_store(sh.s, &r, &err);
        __atomic_store_n(&sh.done, 1, __ATOMIC_RELEASE);
        for (int i = 0; i < 2; i++)
                pthread_join(th[i], NULL);
        ck_assert_msg(r == -ENOSPC, "got %d: %s", r, ts_error_message(err, r));
        ts_error_free(err);
        ck_assert_int_gt(n, 200);
        ck_assert_int_eq(sh.failures, 0);
        ts_store_close(sh.s);
}
END_TEST

/* Only a damaged store holds a loop of parents; the walk reports it instead
 * of going round it for ever. */
START_TEST(parent_loop_is_an_error) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_store_info a = mk_committed(t, "ns", "a", NULL);
        ts_store_info b = mk_committed(t, "ns", "b", "a");
        ts_store_info c = mk(t, "ns", "c", "b", TS_KIND_ACTIVE);
        ts_store_info_done(&a);
        ts_store_info_done(&b);
        ts_store_info_done(&c);
        ck_assert_int_eq(ts_store_set_parent(t, "ns", "a", "b", NULL), 0);
        commit(t);
        t = rtxn(s);
        ts_store_info *chain = NULL;
        size_t n = 0;
        ts_error *err = NULL;
        int r = ts_store_parents(t, "ns", "c", &chain, &n, &err);
        ck_assert_msg(r == -EIO, "got %d: %s", r, ts_error_message(err, r));
        ck_assert_ptr_nonnull(strstr(err->msg, "loops"));
        ts_error_free(err);
        ts_store_txn_abort(t);
        ts_store_close(s);
}
END_TEST

/* Readers alongside one writer: the writer adds pairs (a-i, b-i) in one transaction
 * each; a reader must never see half a pair, and its view must not move while its
 * transaction is open. */
typedef struct shared {
        ts_store *s;
        volatile int done;
        int failures;
        int reads;
} shared;

typedef struct counts {
        int a, b;
} counts;

static int count_pairs(const ts_store_info *i, void *ud) {
        counts *c = ud;
        if (i->name[0] == 'a')
                c->a++;
        else
                c->b++;
        return 0;
}

static void *reader(void *p) {
        shared *sh = p;
        while (!__atomic_load_n(&sh->done, __ATOMIC_ACQUIRE)) {
                ts_store_txn *t = NULL;
                if (ts_store_begin(sh->s, false, &t, NULL) < 0) {
                        __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
                        return NULL;
                }
                counts c1 = {}, c2 = {};
                ts_store_walk(t, "ns", count_pairs, &c1, NULL);
                ts_store_walk(t, "ns", count_pairs, &c2, NULL);
                if (c1.a != c1.b || c1.a != c2.a || c1.b != c2.b)
                        __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
                ts_store_txn_abort(t);
                __atomic_add_fetch(&sh->reads, 1, __ATOMIC_RELAXED);
        }
        return NULL;
}

static void *end_elsewhere(void *p) {
        /* MDB_NOTLS: a read transaction may end on another thread */
        ts_store_txn *t = p;
        ts_store_info i = {};
        int r = ts_store_get(t, "ns", "a0", &i, NULL);
        ts_store_info_done(&i);
        ts_store_txn_abort(t);
        return (void *) (intptr_t) r;
}

START_TEST(readers_with_one_writer) {
        ts_store_options o = { .no_sync = true };
        shared sh = { .s = open_store(&o) };
        pthread_t th[3];
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(pthread_create(&th[i], NULL, reader, &sh), 0);
        for (int i = 0; i < 200; i++) {
                ts_store_txn *t = wtxn(sh.s);
                char k[16];
                snprintf(k, sizeof(k), "a%d", i);
                ts_store_info x = mk(t, "ns", k, NULL, TS_KIND_ACTIVE);
                ts_store_info_done(&x);
                k[0] = 'b';
                x = mk(t, "ns", k, NULL, TS_KIND_VIEW);
                ts_store_info_done(&x);
                commit(t);
        }
        __atomic_store_n(&sh.done, 1, __ATOMIC_RELEASE);
        for (int i = 0; i < 3; i++)
                pthread_join(th[i], NULL);
        ck_assert_int_eq(sh.failures, 0);
        ck_assert_int_gt(sh.reads, 0);

        ts_store_txn *t = rtxn(sh.s);
        pthread_t other;
        void *res;
        ck_assert_int_eq(pthread_create(&other, NULL, end_elsewhere, t), 0);
        pthread_join(other, &res);
        ck_assert_int_eq((int) (intptr_t) res, 0);
        ts_store_close(sh.s);
}
END_TEST

/* Two writer threads: LMDB serialises them; every record lands, with unique ids. */
static void *writer(void *p) {
        shared *sh = p;
        long self = __atomic_add_fetch(&sh->reads, 1, __ATOMIC_RELAXED);
        for (int i = 0; i < 100; i++) {
                ts_store_txn *t = NULL;
                char k[32];
                snprintf(k, sizeof(k), "w%ld-%d", self, i);
                if (ts_store_begin(sh->s, true, &t, NULL) < 0 ||
                    ts_store_create(t, "ns", k, NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, NULL) < 0 ||
                    ts_store_txn_commit(TAKE_PTR(t), NULL) < 0) {
                        ts_store_txn_abort(t);
                        __atomic_add_fetch(&sh->failures, 1, __ATOMIC_RELAXED);
                }
        }
        return NULL;
}

static int unique_ids(const ts_store_info *i, void *ud) {
        uint8_t *seen = ud;
        if (i->dev_id >= 256 || i->id >= 256 || seen[i->dev_id] & 1 || seen[i->id] & 2)
                return -EIO;
        seen[i->dev_id] |= 1;
        seen[i->id] |= 2;
        return 0;
}

START_TEST(two_writers) {
        ts_store_options o = { .no_sync = true };
        shared sh = { .s = open_store(&o) };
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
                ck_assert_int_eq(pthread_create(&th[i], NULL, writer, &sh), 0);
        for (int i = 0; i < 2; i++)
                pthread_join(th[i], NULL);
        ck_assert_int_eq(sh.failures, 0);
        ts_store_txn *t = rtxn(sh.s);
        uint8_t seen[256] = {};
        ck_assert_int_eq(ts_store_walk(t, "ns", unique_ids, seen, NULL), 0);
        int n = 0;
        for (int i = 0; i < 256; i++)
                n += seen[i] & 1;
        ck_assert_int_eq(n, 200);
        ts_store_txn_abort(t);
        ts_store_close(sh.s);
}
END_TEST

START_TEST(failed_rules_leave_txn_usable) {
        ts_store_options o = { .dev_id_max = 1 };
        ts_store *s = open_store(&o);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_store_info a = mk(t, "ns", "a", NULL, TS_KIND_ACTIVE);
        expect_err(ts_store_create(t, "ns", "b", NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err, -ENOSPC);
        expect_err(ts_store_create(t, "ns", "a", NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, &err), &err, -EEXIST);
        commit(t);
        t = rtxn(s);
        collected c = {};
        ck_assert_int_eq(ts_store_walk(t, "ns", collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 1);
        ts_store_txn_abort(t);
        /* the failed create took no snapshot id */
        t = wtxn(s);
        ck_assert_int_eq(ts_store_delete(t, "ns", "a", NULL), 0);
        ts_store_info b = mk(t, "ns", "b", NULL, TS_KIND_ACTIVE);
        ck_assert_uint_eq(b.id, a.id + 1);
        commit(t);
        ts_store_info_done(&a);
        ts_store_info_done(&b);
        ts_store_close(s);
}
END_TEST

/* A process killed in the middle of Prepare: its committed intent survives, its
 * open write transaction is gone, and the writer lock and reader slot it held do
 * not block the next process. */
START_TEST(killed_process) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                ts_store *s = NULL;
                ts_store_txn *t = NULL, *r = NULL;
                if (ts_store_open(root, NULL, &s, NULL) < 0 || ts_store_begin(s, true, &t, NULL) < 0 ||
                    ts_store_create(t, "ns", "creating", NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, NULL) < 0 ||
                    ts_store_txn_commit(t, NULL) < 0 || ts_store_begin(s, false, &r, NULL) < 0 ||
                    ts_store_begin(s, true, &t, NULL) < 0 ||
                    ts_store_create(t, "ns", "lost", NULL, TS_KIND_ACTIVE, NULL, 0, 1, NULL, NULL) < 0)
                        _exit(1);
                raise(SIGKILL);
                _exit(2);
        }
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s); /* the dead writer's lock is recovered */
        ts_store_info i = {};
        ck_assert_int_eq(ts_store_get(t, "ns", "creating", &i, NULL), 0);
        ck_assert_int_eq(i.state, TS_STATE_CREATING);
        ts_error *err = NULL;
        expect_err(ts_store_get(t, "ns", "lost", &i, &err), &err, -ENOENT);
        /* reconciliation rolls the intent back */
        ck_assert_int_eq(ts_store_delete(t, "ns", "creating", NULL), 0);
        commit(t);
        ts_store_info_done(&i);
        ts_store_close(s);
}
END_TEST

/* One of each operation in a write transaction, with the n-th allocation failing:
 * the first failure is -ENOMEM, nothing crashes or leaks, and the aborted
 * transaction leaves the store as it was. */
static int ops_sequence(ts_store *s) {
        ts_store_txn *t = NULL;
        int r = ts_store_begin(s, true, &t, NULL);
        if (r < 0)
                return r;
        ts_label l[] = { { (char *) "a", (char *) "1" }, { (char *) "b", (char *) "2" } };
        const char *fp[] = { "labels.a", "labels" };
        ts_store_info i = {};
        ts_store_info *ps = NULL;
        size_t n = 0;
        collected c = {};
        devs d = {};
        ts_store_base *bl = NULL;
        size_t bn = 0;
        if ((r = ts_store_create(t, "ns", "work", "base", TS_KIND_ACTIVE, l, 2, 1, &i, NULL)) < 0)
                goto out;
        ts_store_info_done(&i);
        if ((r = ts_store_set_state(t, "ns", "work", TS_STATE_READY, NULL)) < 0 ||
            (r = ts_store_update(t, "ns", "work", l, 2, fp, 2, &i, NULL)) < 0)
                goto out;
        ts_store_info_done(&i);
        if ((r = ts_store_parents(t, "ns", "work", &ps, &n, NULL)) < 0)
                goto out;
        ts_store_infos_free(ps, n);
        if ((r = ts_store_commit(t, "ns", "work", "layer", l, 2, 1, 1, &i, NULL)) < 0)
                goto out;
        ts_store_info_done(&i);
        if ((r = ts_store_walk(t, NULL, collect, &c, NULL)) < 0 ||
            (r = ts_store_device_walk(t, collect_dev, &d, NULL)) < 0 ||
            (r = ts_store_base_create(t, 1 << 20, NULL, NULL)) < 0 ||
            (r = ts_store_base_list(t, &bl, &bn, NULL)) < 0)
                goto out;
        free(bl);
        if ((r = ts_store_remove_begin(t, "ns", "layer", &i, NULL)) < 0)
                goto out;
        ts_store_info_done(&i);
        r = ts_store_delete(t, "ns", "layer", NULL);
out:
        ts_store_info_done(&i);
        ts_store_txn_abort(t);
        return r;
}

START_TEST(allocation_failures) {
        ts_store *s = open_store(NULL);
        ts_store_txn *t = wtxn(s);
        ts_store_info b = mk_committed(t, "ns", "base", NULL);
        ts_store_info_done(&b);
        commit(t);
        unsigned long n;
        for (n = 1; n < 10000; n++) {
                ts_failalloc_arm(n);
                int r = ops_sequence(s);
                int fired = ts_failalloc_fired();
                ts_failalloc_arm(0);
                ck_assert_msg(r == 0 || (fired && r == -ENOMEM), "allocation %lu: %d", n, r);
                if (!fired)
                        break;
        }
        ck_assert_uint_gt(n, 20);
        ck_assert_uint_lt(n, 10000);
        /* every aborted attempt left the store as it was */
        t = rtxn(s);
        collected c = {};
        ck_assert_int_eq(ts_store_walk(t, NULL, collect, &c, NULL), 0);
        ck_assert_int_eq(c.n, 1);
        ck_assert_str_eq(c.names[0], "ns/base");
        ts_store_txn_abort(t);
        ts_store_close(s);
}
END_TEST

/* The label bounds (store/label.h) on create, commit and update: a refusal
 * names the limit and writes nothing; Update's result is what is bounded. */
static void label_count(ts_store_txn *t, const char *key, size_t want) {
        ts_store_info i = {};
        ck_assert_int_eq(ts_store_get(t, "ns", key, &i, NULL), 0);
        ck_assert_uint_eq(i.n_labels, want);
        ts_store_info_done(&i);
}

static void err_has(int r, ts_error **errp, const char *want) {
        ck_assert_int_eq(r, -EINVAL);
        ck_assert_msg(*errp && strstr((*errp)->msg, want), "message \"%s\" lacks \"%s\"",
                      *errp ? (*errp)->msg : "", want);
        ts_error_free(*errp);
        *errp = NULL;
}

START_TEST(label_bounds) {
        ts_store_options o = { .labels = { .max_count = 3, .max_bytes = 4096 } };
        ts_store *s = open_store(&o);
        ts_store_txn *t = wtxn(s);
        ts_error *err = NULL;
        ts_label four[] = { { "a", "1" }, { "b", "2" }, { "c", "3" }, { "d", "4" } };
        err_has(ts_store_create(t, "ns", "k", NULL, TS_KIND_ACTIVE, four, 4, 1, NULL, &err), &err,
                "4 labels in the request, over the limit of 3 (max_labels)");
        char big[4000];
        memset(big, 'v', sizeof big - 1);
        big[sizeof big - 1] = 0;
        ts_label heavy[] = { { "a", big }, { "b", big } };
        err_has(ts_store_create(t, "ns", "k", NULL, TS_KIND_ACTIVE, heavy, 2, 1, NULL, &err), &err,
                "snapshot k: labels of 8000 bytes, over the limit of 4096 bytes (max_label_bytes)");
        ts_label empty[] = { { "", "x" } };
        err_has(ts_store_create(t, "ns", "k", NULL, TS_KIND_ACTIVE, empty, 1, 1, NULL, &err), &err,
                "label with an empty key");
        ck_assert_int_eq(ts_store_get(t, "ns", "k", NULL, NULL), -ENOENT);

        ck_assert_int_eq(ts_store_create(t, "ns", "k", NULL, TS_KIND_ACTIVE, four, 3, 1, NULL, NULL), 0);
        ck_assert_int_eq(ts_store_set_state(t, "ns", "k", TS_STATE_READY, NULL), 0);
        /* a fourth label through labels.<k>: the result is over, nothing changes */
        const char *add_d[] = { "labels.d" };
        err_has(ts_store_update(t, "ns", "k", four, 4, add_d, 1, NULL, &err), &err,
                "4 labels in the request");
        ts_label d[] = { { "d", "4" } };
        err_has(ts_store_update(t, "ns", "k", d, 1, add_d, 1, NULL, &err), &err,
                "snapshot k: 4 labels, over the limit of 3 (max_labels)");
        label_count(t, "k", 3);
        /* d in, a out in one call: within the bound */
        const char *swap[] = { "labels.d", "labels.a" };
        ck_assert_int_eq(ts_store_update(t, "ns", "k", d, 1, swap, 2, NULL, NULL), 0);
        label_count(t, "k", 3);
        ts_label one_big[] = { { "b", big } }, two_big[] = { { "b", big }, { "c", big } };
        const char *set_bc[] = { "labels.b", "labels.c" };
        err_has(ts_store_update(t, "ns", "k", two_big, 2, set_bc, 2, NULL, &err), &err,
                "snapshot k: labels of 8002 bytes, over the limit of 4096 bytes (max_label_bytes)");
        err_has(ts_store_commit(t, "ns", "k", "c", heavy, 2, 0, 0, NULL, &err), &err, "snapshot c: labels of 8000");
        ck_assert_int_eq(ts_store_commit(t, "ns", "k", "c", one_big, 1, 0, 0, NULL, NULL), 0);
        label_count(t, "c", 1);
        commit(t);
        ts_store_close(s);

        /* the bounds are checked when the store opens */
        o.labels.max_bytes = TS_LABEL_MAX_BYTES_LIMIT + 1;
        ts_store *bad = NULL;
        ck_assert_int_eq(ts_store_open(root, &o, &bad, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "max_label_bytes"));
        ts_error_free(err);
}
END_TEST

int main(void) {
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("store");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, create_and_get);
        tcase_add_test(tc, create_rules);
        tcase_add_test(tc, commit_rules);
        tcase_add_test(tc, adopt_rules);
        tcase_add_test(tc, remove_rules);
        tcase_add_test(tc, update_rules);
        tcase_add_test(tc, label_bounds);
        tcase_add_test(tc, walk_and_parents);
        tcase_add_test(tc, persistence_and_crash_states);
        tcase_add_test(tc, device_ids_next_fit);
        tcase_add_test(tc, device_ids_wrap_at_24_bits);
        tcase_add_test(tc, base_devices);
        tcase_add_test(tc, map_full_is_enospc);
        tcase_add_test(tc, map_grows_to_its_maximum);
        tcase_add_test(tc, map_options_checked);
        tcase_add_test(tc, map_grows_under_readers);
        tcase_add_test(tc, parent_loop_is_an_error);
        tcase_add_test(tc, readers_with_one_writer);
        tcase_add_test(tc, two_writers);
        tcase_add_test(tc, failed_rules_leave_txn_usable);
        tcase_add_test(tc, killed_process);
        tcase_add_test(tc, allocation_failures);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
