#include "service.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/opstats.h"
#include "containerd/services/snapshots/v1/snapshots.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "rpc/wire.h"

typedef Containerd__Services__Snapshots__V1__Info Info;
typedef Containerd__Services__Snapshots__V1__Info__LabelsEntry LabelsEntry;

/* Every map<string,string> entry that protoc-c generates has this layout. */
typedef struct map_entry {
        ProtobufCMessage base;
        char *key;
        char *value;
} map_entry;

static int op_log(ts_rpc_call *call, const char *op, const char *key, int64_t t0, int code) {
        int64_t ns = ts_clock_mono_ns() - t0;
        ts_opstats_record("snapshots", op, code, ns);
        if (ts_log_get_level() >= TS_LOG_DEBUG || code != TS_RPC_OK) {
                char ms[32];
                snprintf(ms, sizeof ms, "%.2f", (double) ns / 1e6);
                /* Client mistakes are routine for containerd (NotFound on
                 * Stat, AlreadyExists on unpack); log them at debug. */
                enum ts_log_level lvl = (code == TS_RPC_OK || code == TS_RPC_NOT_FOUND ||
                                         code == TS_RPC_ALREADY_EXISTS ||
                                         code == TS_RPC_FAILED_PRECONDITION)
                                                ? TS_LOG_DEBUG
                                                : TS_LOG_WARN;
                ts_log_emit(lvl, 0, NULL,
                            TS_LOG_FIELDS({ "op", op }, { "namespace", ts_rpc_call_namespace(call) },
                                          { "key", key }, { "ms", ms }, { "code", ts_rpc_status_name(code) }),
                            "%s", code == TS_RPC_OK ? "done" : "failed");
        }
        return code;
}

/* One key space. containerd's metadata layer namespaces the keys it hands
 * a proxy snapshotter itself ("default/12/extract-..."); 2.x forwards its
 * caller's namespace header on most calls but sends none on the walk its
 * garbage collector makes, so keys kept apart by the header would never be
 * collected. The header is logged, never used. */
#define KEY_SPACE "default"

static int namespace_of(ts_rpc_call *call, const char **ret) {
        (void) call;
        *ret = KEY_SPACE;
        return TS_RPC_OK;
}

static int need_key(ts_rpc_call *call, const char *what, const char *key) {
        if (!key || !*key)
                return ts_rpc_call_error(call, TS_RPC_INVALID_ARGUMENT, "%s must not be empty", what);
        return TS_RPC_OK;
}

/* One call being served: what the log line needs. */
typedef struct op {
        ts_rpc_call *call;
        const char *name, *key, *ns;
        int64_t t0;
} op;

/* The common start: a namespace, and (when key_what is set) a key. */
static int op_begin(op *o, ts_rpc_call *call, const char *name, const char *key_what,
                    const char *key) {
        *o = (op) { .call = call, .name = name, .key = key, .t0 = ts_clock_mono_ns() };
        int code = namespace_of(call, &o->ns);
        if (code == TS_RPC_OK && key_what)
                code = need_key(call, key_what, key);
        return code;
}

static int op_end(op *o, int code) {
        return op_log(o->call, o->name, o->key, o->t0, code);
}

/* Views of the request's label entries; no copies. */
static ts_label *labels_of(size_t n, void **entries) {
        ts_label *v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                map_entry *e = entries[i];
                v[i].key = e->key;
                v[i].value = e->value;
        }
        return v;
}

static int fail(ts_rpc_call *call, int r, ts_error *err) {
        int code = ts_rpc_call_errno(call, r, err);
        ts_error_free(err);
        return code;
}

/* The request of a method registered raw, decoded once the label entries
 * at path are counted: protobuf-c allocates per entry, so a request over
 * the count bound is refused before it costs that. */
static int decode_labelled(ts_rpc_call *call, ts_snapshotter *s, const char *op_name,
                           const ProtobufCMessageDescriptor *desc, const uint32_t *path, size_t depth,
                           ProtobufCMessage **ret) {
        int64_t t0 = ts_clock_mono_ns();
        size_t len = 0, n = 0;
        const uint8_t *p = ts_rpc_call_request(call, &len);
        ts_error *err = NULL;
        int code;
        if (ts_wire_count(p, len, path, depth, &n) < 0)
                code = ts_rpc_call_error(call, TS_RPC_INVALID_ARGUMENT, "request of %zu bytes does not decode as %s",
                                         len, desc->name);
        else if (ts_label_check_count(n, ts_snapshotter_label_limits(s), &err) < 0)
                code = fail(call, -EINVAL, err);
        else
                code = ts_rpc_call_decode(call, desc, ret);
        return code == TS_RPC_OK ? code : op_log(call, op_name, NULL, t0, code);
}

/* Where the labels are: field 4 of Prepare, View and Commit; Update's
 * info (2), its labels (6). */
static const uint32_t labels_path[] = { 4 }, update_labels_path[] = { 2, 6 };

/* ---- Info ---- */

typedef struct info_msg {
        Info info;
        Google__Protobuf__Timestamp created, updated;
        LabelsEntry *entries;
        LabelsEntry **entry_ptrs;
} info_msg;

static void timestamp(Google__Protobuf__Timestamp *t, int64_t ns) {
        google__protobuf__timestamp__init(t);
        t->seconds = ns / 1000000000LL;
        t->nanos = (int32_t) (ns % 1000000000LL);
}

static const char *kind_empty = "";

/* Points m at info's strings (no copies); m lives no longer than info. */
static int info_to_msg(const ts_store_info *in, info_msg *m) {
        containerd__services__snapshots__v1__info__init(&m->info);
        m->info.name = in->name;
        m->info.parent = in->parent ? in->parent : (char *) kind_empty;
        m->info.kind = (Containerd__Services__Snapshots__V1__Kind) in->kind;
        timestamp(&m->created, in->created_ns);
        timestamp(&m->updated, in->updated_ns);
        m->info.created_at = &m->created;
        m->info.updated_at = &m->updated;
        m->entries = calloc(in->n_labels ? in->n_labels : 1, sizeof(*m->entries));
        m->entry_ptrs = calloc(in->n_labels ? in->n_labels : 1, sizeof(*m->entry_ptrs));
        if (!m->entries || !m->entry_ptrs)
                return -ENOMEM;
        for (size_t i = 0; i < in->n_labels; i++) {
                containerd__services__snapshots__v1__info__labels_entry__init(&m->entries[i]);
                m->entries[i].key = in->labels[i].key;
                m->entries[i].value = in->labels[i].value;
                m->entry_ptrs[i] = &m->entries[i];
        }
        m->info.n_labels = in->n_labels;
        m->info.labels = m->entry_ptrs;
        return 0;
}

static void info_msg_done(info_msg *m) {
        free(m->entries);
        free(m->entry_ptrs);
}

/* ---- mounts ---- */

typedef struct mount_msg {
        Containerd__Types__Mount mount;
        Containerd__Types__Mount *ptr;
        char *options[1];
} mount_msg;

static void mount_to_msg(const ts_mount *in, mount_msg *m) {
        containerd__types__mount__init(&m->mount);
        m->mount.type = "ext4";
        m->mount.source = (char *) in->source;
        m->options[0] = "ro";
        m->mount.n_options = in->read_only ? 1 : 0;
        m->mount.options = m->options;
        m->ptr = &m->mount;
}

/* ---- handlers ---- */

/* Prepare, View and Mounts answer with the same message on the wire
 * ({repeated Mount mounts = 1}); one encoder serves all three. */
static int send_mount(ts_rpc_call *call, const ts_mount *mnt) {
        mount_msg mm;
        mount_to_msg(mnt, &mm);
        Containerd__Services__Snapshots__V1__MountsResponse resp =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_RESPONSE__INIT;
        resp.n_mounts = 1;
        resp.mounts = &mm.ptr;
        int r = ts_rpc_call_send(call, &resp.base);
        return r < 0 ? fail(call, r, NULL) : TS_RPC_OK;
}

static int send_empty(ts_rpc_call *call) {
        Google__Protobuf__Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
        int r = ts_rpc_call_send(call, &e.base);
        return r < 0 ? fail(call, r, NULL) : TS_RPC_OK;
}

static int do_prepare(ts_rpc_call *call, ts_snapshotter *s, const char *name, const char *key,
                      const char *parent, size_t n_labels, void **entries, ts_snapshot_kind kind) {
        op o;
        int code = op_begin(&o, call, name, "key", key);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        _cleanup_free_ ts_label *labels = labels_of(n_labels, entries);
        if (!labels)
                return op_end(&o, fail(call, -ENOMEM, NULL));
        ts_error *err = NULL;
        ts_mount mnt;
        int r = ts_snapshotter_prepare(s, o.ns, key, parent, kind, labels, n_labels, &mnt, &err);
        return op_end(&o, r < 0 ? fail(call, r, err) : send_mount(call, &mnt));
}

static int h_prepare(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        (void) m;
        _cleanup_message_ ProtobufCMessage *dec = NULL;
        int code = decode_labelled(call, ud, "prepare",
                                   &containerd__services__snapshots__v1__prepare_snapshot_request__descriptor,
                                   labels_path, 1, &dec);
        if (code != TS_RPC_OK)
                return code;
        const Containerd__Services__Snapshots__V1__PrepareSnapshotRequest *req = (const void *) dec;
        return do_prepare(call, ud, "prepare", req->key, req->parent, req->n_labels,
                          (void **) req->labels, TS_KIND_ACTIVE);
}

static int h_view(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        (void) m;
        _cleanup_message_ ProtobufCMessage *dec = NULL;
        int code = decode_labelled(call, ud, "view",
                                   &containerd__services__snapshots__v1__view_snapshot_request__descriptor,
                                   labels_path, 1, &dec);
        if (code != TS_RPC_OK)
                return code;
        const Containerd__Services__Snapshots__V1__ViewSnapshotRequest *req = (const void *) dec;
        return do_prepare(call, ud, "view", req->key, req->parent, req->n_labels,
                          (void **) req->labels, TS_KIND_VIEW);
}

static int h_mounts(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        const Containerd__Services__Snapshots__V1__MountsRequest *req = (const void *) m;
        op o;
        int code = op_begin(&o, call, "mounts", "key", req->key);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        ts_error *err = NULL;
        ts_mount mnt;
        int r = ts_snapshotter_mounts(ud, o.ns, req->key, &mnt, &err);
        return op_end(&o, r < 0 ? fail(call, r, err) : send_mount(call, &mnt));
}

static int h_commit(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        (void) m;
        _cleanup_message_ ProtobufCMessage *dec = NULL;
        int code = decode_labelled(call, ud, "commit",
                                   &containerd__services__snapshots__v1__commit_snapshot_request__descriptor,
                                   labels_path, 1, &dec);
        if (code != TS_RPC_OK)
                return code;
        const Containerd__Services__Snapshots__V1__CommitSnapshotRequest *req = (const void *) dec;
        op o;
        code = op_begin(&o, call, "commit", "key", req->key);
        if (code == TS_RPC_OK)
                code = need_key(call, "name", req->name);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        _cleanup_free_ ts_label *labels = labels_of(req->n_labels, (void **) req->labels);
        if (!labels)
                return op_end(&o, fail(call, -ENOMEM, NULL));
        ts_error *err = NULL;
        int r = ts_snapshotter_commit(ud, o.ns, req->name, req->key, labels, req->n_labels, &err);
        return op_end(&o, r < 0 ? fail(call, r, err) : send_empty(call));
}

static int h_remove(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        const Containerd__Services__Snapshots__V1__RemoveSnapshotRequest *req = (const void *) m;
        op o;
        int code = op_begin(&o, call, "remove", "key", req->key);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        ts_error *err = NULL;
        int r = ts_snapshotter_remove(ud, o.ns, req->key, &err);
        return op_end(&o, r < 0 ? fail(call, r, err) : send_empty(call));
}

/* Stat and Update answer with the same message on the wire ({Info info = 1}). */
static int send_info(ts_rpc_call *call, const ts_store_info *info) {
        info_msg im;
        int r = info_to_msg(info, &im);
        if (r >= 0) {
                Containerd__Services__Snapshots__V1__StatSnapshotResponse resp =
                        CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_RESPONSE__INIT;
                resp.info = &im.info;
                r = ts_rpc_call_send(call, &resp.base);
        }
        info_msg_done(&im);
        return r < 0 ? fail(call, r, NULL) : TS_RPC_OK;
}

static int h_stat(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        const Containerd__Services__Snapshots__V1__StatSnapshotRequest *req = (const void *) m;
        op o;
        int code = op_begin(&o, call, "stat", "key", req->key);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        ts_error *err = NULL;
        _cleanup_store_info_ ts_store_info info = { 0 };
        int r = ts_snapshotter_stat(ud, o.ns, req->key, &info, &err);
        if (r < 0)
                return op_end(&o, fail(call, r, err));
        return op_end(&o, send_info(call, &info));
}

static int h_update(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        (void) m;
        _cleanup_message_ ProtobufCMessage *dec = NULL;
        int code = decode_labelled(call, ud, "update",
                                   &containerd__services__snapshots__v1__update_snapshot_request__descriptor,
                                   update_labels_path, 2, &dec);
        if (code != TS_RPC_OK)
                return code;
        const Containerd__Services__Snapshots__V1__UpdateSnapshotRequest *req = (const void *) dec;
        const char *key = req->info ? req->info->name : NULL;
        op o;
        code = op_begin(&o, call, "update", NULL, key);
        if (code == TS_RPC_OK && !req->info)
                code = ts_rpc_call_error(call, TS_RPC_INVALID_ARGUMENT, "info is required");
        if (code == TS_RPC_OK)
                code = need_key(call, "info.name", key);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        _cleanup_free_ ts_label *labels = labels_of(req->info->n_labels, (void **) req->info->labels);
        if (!labels)
                return op_end(&o, fail(call, -ENOMEM, NULL));
        size_t n_paths = req->update_mask ? req->update_mask->n_paths : 0;
        const char *const *paths = req->update_mask ? (const char *const *) req->update_mask->paths : NULL;
        ts_error *err = NULL;
        _cleanup_store_info_ ts_store_info info = { 0 };
        int r = ts_snapshotter_update(ud, o.ns, key, labels, req->info->n_labels, paths, n_paths, &info,
                                      &err);
        if (r < 0)
                return op_end(&o, fail(call, r, err));
        return op_end(&o, send_info(call, &info));
}

/* List streams its answer in messages of at most 100 records, as
 * containerd's service does, and at most LIST_MAX_BYTES: far below the
 * 16 MiB a gRPC peer accepts, whatever the records hold (one record is
 * bounded by the store's label limits, store/label.h). */
#define LIST_BATCH 100
#define LIST_MAX_BYTES (4u << 20)

/* An upper bound of info's size as an Info of a List reply: its strings,
 * and for tags, lengths, kind and timestamps 64 bytes, 16 per label. */
static size_t info_wire_bound(const ts_store_info *info) {
        size_t n = 64 + strlen(info->name) + strlen(info->parent ? info->parent : "");
        for (size_t i = 0; i < info->n_labels; i++)
                n += 16 + strlen(info->labels[i].key) + strlen(info->labels[i].value);
        return n;
}

/* Sends one batch as one ListSnapshotsResponse. */
static int list_send(const ts_store_info *infos, size_t n, void *userdata) {
        ts_rpc_call *call = userdata;
        info_msg msgs[LIST_BATCH];
        Info *ptrs[LIST_BATCH];
        size_t made = 0;
        int r = 0;
        for (; r >= 0 && made < n; made++) {
                r = info_to_msg(&infos[made], &msgs[made]);
                ptrs[made] = &msgs[made].info;
        }
        if (r >= 0) {
                Containerd__Services__Snapshots__V1__ListSnapshotsResponse resp =
                        CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
                resp.n_info = n;
                resp.info = ptrs;
                r = ts_rpc_call_send(call, &resp.base);
        }
        for (size_t i = 0; i < made; i++)
                info_msg_done(&msgs[i]);
        return r;
}

static int h_list(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        const Containerd__Services__Snapshots__V1__ListSnapshotsRequest *req = (const void *) m;
        op o;
        int code = op_begin(&o, call, "list", NULL, NULL);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        ts_error *err = NULL;
        _cleanup_filter_ ts_filter *filter = NULL;
        int r = ts_filter_parse_all((const char *const *) req->filters, req->n_filters, &filter, &err);
        if (r >= 0)
                r = ts_snapshotter_list(ud, o.ns, filter, LIST_BATCH, LIST_MAX_BYTES, info_wire_bound, list_send,
                                        call, &err);
        return op_end(&o, r < 0 ? fail(call, r, err) : TS_RPC_OK);
}

static int h_usage(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        const Containerd__Services__Snapshots__V1__UsageRequest *req = (const void *) m;
        op o;
        int code = op_begin(&o, call, "usage", "key", req->key);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        ts_error *err = NULL;
        Containerd__Services__Snapshots__V1__UsageResponse resp =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_RESPONSE__INIT;
        int r = ts_snapshotter_usage(ud, o.ns, req->key, &resp.size, &resp.inodes, &err);
        if (r >= 0 && (r = ts_rpc_call_send(call, &resp.base)) < 0)
                return op_end(&o, fail(call, r, NULL));
        return op_end(&o, r < 0 ? fail(call, r, err) : TS_RPC_OK);
}

static int h_cleanup(ts_rpc_call *call, const ProtobufCMessage *m, void *ud) {
        op o;
        int code = op_begin(&o, call, "cleanup", NULL, NULL);
        if (code != TS_RPC_OK)
                return op_end(&o, code);
        ts_error *err = NULL;
        int r = ts_snapshotter_cleanup(ud, &err);
        return op_end(&o, r < 0 ? fail(call, r, err) : send_empty(call));
}

int ts_service_register(ts_rpc_server *server, ts_snapshotter *s) {
        static const ts_rpc_service_method methods[] = {
                { "Mounts", h_mounts, false }, { "Remove", h_remove, false }, { "Stat", h_stat, false },
                { "List", h_list, true },      { "Usage", h_usage, false },   { "Cleanup", h_cleanup, false },
        };
        /* Registered raw: decode_labelled counts their labels before decoding. */
        static const ts_rpc_service_method labelled[] = {
                { "Prepare", h_prepare, false }, { "View", h_view, false },
                { "Commit", h_commit, false },   { "Update", h_update, false },
        };
        const ProtobufCServiceDescriptor *svc = &containerd__services__snapshots__v1__snapshots__descriptor;
        int r = ts_rpc_server_add_service(server, svc, methods, TS_ARRAY_SIZE(methods), s);
        for (size_t i = 0; r >= 0 && i < TS_ARRAY_SIZE(labelled); i++) {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "/%s/%s", svc->name, labelled[i].name) < 0)
                        return -ENOMEM;
                ts_rpc_method m = { .path = path, .handler = labelled[i].handler, .userdata = s };
                r = ts_rpc_server_add_method(server, &m);
        }
        return r;
}
