#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/strv.h"
#include "containerd/services/snapshots/v1/snapshots.pb-c.h"
#include "ctrd/ctrd-internal.h"
#include "ctrd/snapshots.h"

#define METHOD(m) "/containerd.services.snapshots.v1.Snapshots/" m

typedef Containerd__Services__Snapshots__V1__Info PbInfo;

static void snapshot_done(void *p) {
        ts_ctrd_snapshot_done(p);
}

void ts_ctrd_snapshot_done(ts_ctrd_snapshot *s) {
        free(s->name);
        free(s->parent);
        ts_strv_free(s->labels);
        *s = (ts_ctrd_snapshot) { 0 };
}

void ts_ctrd_snapshot_list_free(ts_ctrd_snapshot *v, size_t n) {
        ts_ctrd_list_free(v, n, sizeof(*v), snapshot_done);
}

static int snapshot_from_pb(const void *pb, void *ret) {
        const PbInfo *p = pb;
        ts_ctrd_snapshot s = { .kind = (ts_ctrd_snapshot_kind) p->kind,
                               .created_ns = ts_ctrd_time_from_pb(p->created_at),
                               .updated_ns = ts_ctrd_time_from_pb(p->updated_at) };
        if (ts_ctrd_strdup(p->name, &s.name) < 0 || ts_ctrd_strdup(p->parent, &s.parent) < 0 ||
            ts_ctrd_pairs_from_pb(p->n_labels, (void *const *) p->labels, &s.labels) < 0) {
                ts_ctrd_snapshot_done(&s);
                return -ENOMEM;
        }
        *(ts_ctrd_snapshot *) ret = s;
        return 0;
}

static int need_both(const char *snapshotter, const char *key, ts_error **err) {
        int r = ts_ctrd_need(snapshotter, "snapshotter name", err);
        return r < 0 ? r : ts_ctrd_need(key, "snapshot key", err);
}

/* Prepare and View: View's request and answer are Prepare's on the wire
 * (the same fields, numbers and types), so both are sent as Prepare's. */
static int make_active(ts_ctrd *c, const char *method, const char *verb, const char *lease,
                       const char *snapshotter, const char *key, const char *parent,
                       char *const *labels, ts_ctrd_mounts **ret, ts_error **err) {
        Containerd__Services__Snapshots__V1__PrepareSnapshotRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Snapshots__V1__PrepareSnapshotResponse *resp = NULL;
        _cleanup_(ts_ctrd_pbmap_done) ts_ctrd_pbmap map = { 0 };

        int r = need_both(snapshotter, key, err);
        if (r < 0)
                return r;
        r = ts_ctrd_pbmap_build(&containerd__services__snapshots__v1__prepare_snapshot_request__labels_entry__descriptor,
                                labels, "snapshot labels", &map, err);
        if (r >= 0) {
                req.snapshotter = (char *) snapshotter;
                req.key = (char *) key;
                req.parent = (char *) (parent ? parent : "");
                req.n_labels = map.n;
                req.labels = (Containerd__Services__Snapshots__V1__PrepareSnapshotRequest__LabelsEntry **)
                                     map.entries;
                r = ts_ctrd_unary(c, lease, method, TS_CTRD_SHORT, &req.base,
                                  &containerd__services__snapshots__v1__prepare_snapshot_response__descriptor,
                                  (ProtobufCMessage **) &resp, err);
        }
        if (r >= 0 && ts_ctrd_mounts_from_pb(resp->n_mounts, resp->mounts, ret) < 0)
                r = ts_error_set(err, ENOMEM, "mounts");
        return r < 0 ? ts_error_prefix(err, r, "snapshot %s %s %s", verb, snapshotter, key) : 0;
}

int ts_ctrd_snapshot_prepare(ts_ctrd *c, const char *lease, const char *snapshotter,
                             const char *key, const char *parent, char *const *labels,
                             ts_ctrd_mounts **ret, ts_error **err) {
        return make_active(c, METHOD("Prepare"), "prepare", lease, snapshotter, key, parent,
                           labels, ret, err);
}

int ts_ctrd_snapshot_view(ts_ctrd *c, const char *lease, const char *snapshotter,
                          const char *key, const char *parent, char *const *labels,
                          ts_ctrd_mounts **ret, ts_error **err) {
        return make_active(c, METHOD("View"), "view", lease, snapshotter, key, parent, labels,
                           ret, err);
}

int ts_ctrd_snapshot_mounts(ts_ctrd *c, const char *snapshotter, const char *key,
                            ts_ctrd_mounts **ret, ts_error **err) {
        Containerd__Services__Snapshots__V1__MountsRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Snapshots__V1__MountsResponse *resp = NULL;

        int r = need_both(snapshotter, key, err);
        if (r < 0)
                return r;
        req.snapshotter = (char *) snapshotter;
        req.key = (char *) key;
        r = ts_ctrd_unary(c, NULL, METHOD("Mounts"), TS_CTRD_SHORT, &req.base,
                          &containerd__services__snapshots__v1__mounts_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r >= 0 && ts_ctrd_mounts_from_pb(resp->n_mounts, resp->mounts, ret) < 0)
                r = ts_error_set(err, ENOMEM, "mounts");
        return r < 0 ? ts_error_prefix(err, r, "snapshot mounts %s %s", snapshotter, key) : 0;
}

int ts_ctrd_snapshot_commit(ts_ctrd *c, const char *lease, const char *snapshotter,
                            const char *name, const char *key, char *const *labels,
                            ts_error **err) {
        Containerd__Services__Snapshots__V1__CommitSnapshotRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__COMMIT_SNAPSHOT_REQUEST__INIT;
        _cleanup_(ts_ctrd_pbmap_done) ts_ctrd_pbmap map = { 0 };

        int r = need_both(snapshotter, key, err);
        if (r >= 0)
                r = ts_ctrd_need(name, "snapshot name", err);
        if (r < 0)
                return r;
        r = ts_ctrd_pbmap_build(&containerd__services__snapshots__v1__commit_snapshot_request__labels_entry__descriptor,
                                labels, "snapshot labels", &map, err);
        if (r >= 0) {
                req.snapshotter = (char *) snapshotter;
                req.name = (char *) name;
                req.key = (char *) key;
                req.n_labels = map.n;
                req.labels = (Containerd__Services__Snapshots__V1__CommitSnapshotRequest__LabelsEntry **)
                                     map.entries;
                r = ts_ctrd_unary_empty(c, lease, METHOD("Commit"), TS_CTRD_SHORT, &req.base, err);
        }
        return r < 0 ? ts_error_prefix(err, r, "snapshot commit %s %s as %s", snapshotter, key, name)
                     : 0;
}

int ts_ctrd_snapshot_remove(ts_ctrd *c, const char *snapshotter, const char *key,
                            ts_error **err) {
        Containerd__Services__Snapshots__V1__RemoveSnapshotRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__REMOVE_SNAPSHOT_REQUEST__INIT;
        int r = need_both(snapshotter, key, err);
        if (r < 0)
                return r;
        req.snapshotter = (char *) snapshotter;
        req.key = (char *) key;
        r = ts_ctrd_unary_empty(c, NULL, METHOD("Remove"), TS_CTRD_SHORT, &req.base, err);
        return r < 0 ? ts_error_prefix(err, r, "snapshot remove %s %s", snapshotter, key) : 0;
}

/* Copies the record of an answer into ret (when asked for). */
static int answer(const PbInfo *p, ts_ctrd_snapshot *ret, ts_error **err) {
        if (!ret)
                return 0;
        if (!p)
                return ts_error_setf_plain(err, EBADMSG, "containerd answered without the info");
        if (snapshot_from_pb(p, ret) < 0)
                return ts_error_set(err, ENOMEM, "snapshot info");
        return 0;
}

int ts_ctrd_snapshot_stat(ts_ctrd *c, const char *snapshotter, const char *key,
                          ts_ctrd_snapshot *ret, ts_error **err) {
        Containerd__Services__Snapshots__V1__StatSnapshotRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Snapshots__V1__StatSnapshotResponse *resp = NULL;

        int r = need_both(snapshotter, key, err);
        if (r < 0)
                return r;
        req.snapshotter = (char *) snapshotter;
        req.key = (char *) key;
        r = ts_ctrd_unary(c, NULL, METHOD("Stat"), TS_CTRD_SHORT, &req.base,
                          &containerd__services__snapshots__v1__stat_snapshot_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r >= 0)
                r = answer(resp->info, ret, err);
        return r < 0 ? ts_error_prefix(err, r, "snapshot stat %s %s", snapshotter, key) : 0;
}

int ts_ctrd_snapshot_update_labels(ts_ctrd *c, const char *snapshotter, const char *key,
                                   char *const *labels, ts_ctrd_snapshot *ret, ts_error **err) {
        Containerd__Services__Snapshots__V1__UpdateSnapshotRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__UPDATE_SNAPSHOT_REQUEST__INIT;
        PbInfo info = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT;
        Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
        _cleanup_message_ Containerd__Services__Snapshots__V1__UpdateSnapshotResponse *resp = NULL;
        _cleanup_(ts_ctrd_pbmap_done) ts_ctrd_pbmap map = { 0 };
        _cleanup_strv_free_ char **paths = NULL;

        int r = need_both(snapshotter, key, err);
        if (r < 0)
                return r;
        r = ts_ctrd_pbmap_build(&containerd__services__snapshots__v1__info__labels_entry__descriptor,
                                labels, "snapshot labels", &map, err);
        if (r >= 0 && ts_ctrd_label_mask(labels, &paths) < 0)
                r = ts_error_set(err, ENOMEM, "labels");
        if (r >= 0 && !paths)
                r = ts_error_setf_plain(err, EINVAL, "no labels to update");
        if (r >= 0) {
                info.name = (char *) key;
                info.n_labels = map.n;
                info.labels = (Containerd__Services__Snapshots__V1__Info__LabelsEntry **) map.entries;
                mask.n_paths = ts_strv_length(paths);
                mask.paths = paths;
                req.snapshotter = (char *) snapshotter;
                req.info = &info;
                req.update_mask = &mask;
                r = ts_ctrd_unary(c, NULL, METHOD("Update"), TS_CTRD_SHORT, &req.base,
                                  &containerd__services__snapshots__v1__update_snapshot_response__descriptor,
                                  (ProtobufCMessage **) &resp, err);
        }
        if (r >= 0)
                r = answer(resp->info, ret, err);
        return r < 0 ? ts_error_prefix(err, r, "snapshot update %s %s", snapshotter, key) : 0;
}

/* Appends the records of one List answer to *v. */
static int append_infos(ts_ctrd_snapshot **v, size_t *n, size_t *cap, size_t k,
                        PbInfo *const *infos) {
        if (*n + k > *cap) {
                size_t c = *cap ? *cap : 16;
                while (c < *n + k)
                        c *= 2;
                ts_ctrd_snapshot *q = realloc(*v, c * sizeof(*q));
                if (!q)
                        return -ENOMEM;
                *v = q;
                *cap = c;
        }
        for (size_t i = 0; i < k; i++, (*n)++)
                if (snapshot_from_pb(infos[i], &(*v)[*n]) < 0)
                        return -ENOMEM;
        return 0;
}

static int list_stream(ts_ctrd_call *call, ts_ctrd_snapshot **ret, size_t *ret_n, ts_error **err) {
        ts_ctrd_snapshot *v = NULL;
        size_t n = 0, cap = 0;
        int r;
        for (;;) {
                _cleanup_message_ Containerd__Services__Snapshots__V1__ListSnapshotsResponse *m = NULL;
                r = ts_ctrd_call_recv(call, &containerd__services__snapshots__v1__list_snapshots_response__descriptor,
                                      (ProtobufCMessage **) &m, err);
                if (r <= 0)
                        break;
                if (append_infos(&v, &n, &cap, m->n_info, m->info) < 0) {
                        r = ts_error_set(err, ENOMEM, "snapshot list");
                        break;
                }
        }
        if (r >= 0 && !v && !(v = calloc(1, sizeof(*v))))
                r = ts_error_set(err, ENOMEM, "snapshot list");
        if (r < 0) {
                ts_ctrd_snapshot_list_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int ts_ctrd_snapshot_list(ts_ctrd *c, const char *snapshotter, char *const *filters,
                          ts_ctrd_snapshot **ret, size_t *ret_n, ts_error **err) {
        Containerd__Services__Snapshots__V1__ListSnapshotsRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_REQUEST__INIT;
        _cleanup_(ts_ctrd_call_freep) ts_ctrd_call *call = NULL;

        int r = ts_ctrd_need(snapshotter, "snapshotter name", err);
        if (r < 0)
                return r;
        req.snapshotter = (char *) snapshotter;
        req.n_filters = ts_strv_length(filters);
        req.filters = (char **) filters;
        r = ts_ctrd_call_start(c, NULL, METHOD("List"), TS_CTRD_STREAM, &call, err);
        if (r >= 0)
                r = ts_ctrd_call_send(call, &req.base, err);
        if (r >= 0) {
                ts_ctrd_call_close_send(call);
                r = list_stream(call, ret, ret_n, err);
        }
        return r < 0 ? ts_error_prefix(err, r, "snapshot list %s", snapshotter) : 0;
}

int ts_ctrd_snapshot_usage(ts_ctrd *c, const char *snapshotter, const char *key,
                           int64_t *ret_size, int64_t *ret_inodes, ts_error **err) {
        Containerd__Services__Snapshots__V1__UsageRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Snapshots__V1__UsageResponse *resp = NULL;

        int r = need_both(snapshotter, key, err);
        if (r < 0)
                return r;
        req.snapshotter = (char *) snapshotter;
        req.key = (char *) key;
        r = ts_ctrd_unary(c, NULL, METHOD("Usage"), TS_CTRD_LONG, &req.base,
                          &containerd__services__snapshots__v1__usage_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r < 0)
                return ts_error_prefix(err, r, "snapshot usage %s %s", snapshotter, key);
        if (ret_size)
                *ret_size = resp->size;
        if (ret_inodes)
                *ret_inodes = resp->inodes;
        return 0;
}
