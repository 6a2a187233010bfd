#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/arena.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/opstats.h"
#include "common/strv.h"
#include "thinsnap/v1/provisioner.pb-c.h"

typedef Thinsnap__V1__WarmStatus WarmStatus;
typedef Thinsnap__V1__Image Image;
typedef Thinsnap__V1__VM VM;

/* How often a waiting stream wakes to notice a client that went away. */
#define WAIT_SLICE_MS 1000

/* ---- one call: its log line ---- */

typedef struct op {
        ts_rpc_call *call;
        const char *name, *subject;
        int64_t t0;
} op;

static void op_begin(op *o, ts_rpc_call *call, const char *name, const char *subject) {
        *o = (op) { .call = call, .name = name, .subject = subject, .t0 = ts_clock_mono_ns() };
}

static int op_end(op *o, int code) {
        int64_t ns = ts_clock_mono_ns() - o->t0;
        ts_opstats_record("provisioner", o->name, code, ns);
        if (ts_log_get_level() < TS_LOG_DEBUG && code == TS_RPC_OK)
                return code;
        double ms = (double) ns / 1e6;
        char ms_text[32], subject[65];
        snprintf(ms_text, sizeof ms_text, "%.2f", ms);
        snprintf(subject, sizeof subject, "%s", o->subject ? o->subject : "");
        enum ts_log_level lvl = code == TS_RPC_OK || code == TS_RPC_NOT_FOUND ||
                                                code == TS_RPC_ALREADY_EXISTS ||
                                                code == TS_RPC_INVALID_ARGUMENT
                                        ? TS_LOG_DEBUG
                                        : TS_LOG_WARN;
        ts_log_emit(lvl, 0, NULL,
                    TS_LOG_FIELDS({ "op", o->name }, { "subject", subject }, { "ms", ms_text },
                                  { "code", ts_rpc_status_name(code) }),
                    "%s", code == TS_RPC_OK ? "done" : "failed");
        return code;
}

static int fail(op *o, int r, ts_error *err) {
        int code = ts_rpc_call_errno(o->call, r, err);
        ts_error_free(err);
        return op_end(o, code);
}

static int send(op *o, const ProtobufCMessage *m) {
        int r = ts_rpc_call_send(o->call, m);
        return r < 0 ? fail(o, r, NULL) : op_end(o, TS_RPC_OK);
}

static int need(op *o, const char *what, const char *value) {
        if (value && *value)
                return TS_RPC_OK;
        return op_end(o, ts_rpc_call_error(o->call, TS_RPC_INVALID_ARGUMENT, "%s is required", what));
}

/* ---- host files, opened as the caller ---- */

/* The caller's uid and gid become this thread's filesystem identity for the
 * open only. setfsuid/setfsgid act on the calling thread in the kernel; the
 * raw system calls keep glibc from applying them to every thread. Leaving
 * uid 0 also drops the capabilities that would bypass file permissions. */
static int open_as_caller(ts_rpc_call *call, const char *path, int *ret_fd, ts_error **err) {
        uid_t uid;
        gid_t gid;
        pid_t pid;
        int r = ts_rpc_call_peer(call, &uid, &gid, &pid);
        if (r < 0)
                return ts_error_set(err, r, "cannot tell which user is calling");
        if (path[0] != '/')
                return ts_error_setf_plain(err, EINVAL, "%.256s: the host path must be absolute",
                                           path);
        long old_gid = syscall(SYS_setfsgid, gid);
        long old_uid = syscall(SYS_setfsuid, uid);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        int e = errno;
        syscall(SYS_setfsuid, old_uid);
        syscall(SYS_setfsgid, old_gid);
        if (fd < 0)
                return ts_error_set(err, e, "open %.256s as uid %u", path, (unsigned) uid);
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return ts_error_setf_plain(err, EINVAL, "%.256s is not a regular file", path);
        }
        *ret_fd = fd;
        return 0;
}

/* ---- messages ---- */

static Google__Protobuf__Timestamp *timestamp(ts_arena *a, int64_t ns) {
        Google__Protobuf__Timestamp *t = ts_arena_alloc(a, sizeof(*t));
        if (t) {
                google__protobuf__timestamp__init(t);
                t->seconds = ns / 1000000000LL;
                t->nanos = (int32_t) (ns % 1000000000LL);
        }
        return t;
}

static char *str(const char *s) {
        return (char *) (s ? s : "");
}

/* Points the message at s's strings; the arena holds what is allocated. */
static WarmStatus *status_msg(ts_arena *a, const ts_prov_warm_status *s) {
        WarmStatus *m = ts_arena_alloc(a, sizeof(*m));
        Thinsnap__V1__LayerProgress **blobs = ts_arena_array(a, s->n_blobs, sizeof(*blobs));
        if (!m || !blobs)
                return NULL;
        thinsnap__v1__warm_status__init(m);
        m->ref = str(s->ref);
        m->state = (Thinsnap__V1__WarmStatus__State) s->state;
        m->queue_position = s->queue_position;
        m->bytes_done = s->bytes_done;
        m->bytes_total = s->bytes_total;
        m->layer = s->layer;
        m->layers = s->layers;
        m->error = str(s->error);
        m->digest = str(s->digest);
        m->started_at = timestamp(a, s->started_ns);
        m->updated_at = timestamp(a, s->updated_ns);
        for (size_t i = 0; i < s->n_blobs; i++) {
                Thinsnap__V1__LayerProgress *b = ts_arena_alloc(a, sizeof(*b));
                if (!b)
                        return NULL;
                thinsnap__v1__layer_progress__init(b);
                b->digest = str(s->blobs[i].digest);
                b->done = s->blobs[i].done;
                b->total = s->blobs[i].total;
                b->cached = s->blobs[i].cached;
                blobs[i] = b;
        }
        m->n_blobs = s->n_blobs;
        m->blobs = blobs;
        return m->started_at && m->updated_at ? m : NULL;
}

static Image *image_msg(ts_arena *a, const ts_prov_image *img) {
        Image *m = ts_arena_alloc(a, sizeof(*m));
        Thinsnap__V1__Image__LabelsEntry **labels = ts_arena_array(a, img->n_labels, sizeof(*labels));
        if (!m || !labels)
                return NULL;
        thinsnap__v1__image__init(m);
        m->name = str(img->name);
        m->digest = str(img->digest);
        m->media_type = str(img->media_type);
        m->chain_id = str(img->chain_id);
        m->platform = str(img->platform);
        m->layers = img->layers;
        m->content_bytes = img->content_bytes;
        m->pool_bytes = img->pool_bytes;
        m->ready = img->ready;
        m->created_at = img->created_ns ? timestamp(a, img->created_ns) : NULL;
        m->updated_at = img->updated_ns ? timestamp(a, img->updated_ns) : NULL;
        for (size_t i = 0; i < img->n_labels; i++) {
                Thinsnap__V1__Image__LabelsEntry *e = ts_arena_alloc(a, sizeof(*e));
                if (!e)
                        return NULL;
                thinsnap__v1__image__labels_entry__init(e);
                e->key = img->labels[i].key;
                e->value = img->labels[i].value;
                labels[i] = e;
        }
        m->n_labels = img->n_labels;
        m->labels = labels;
        if (img->warm && !(m->warm = status_msg(a, img->warm)))
                return NULL;
        return m;
}

static VM *vm_msg(ts_arena *a, const ts_prov_vm *vm) {
        VM *m = ts_arena_alloc(a, sizeof(*m));
        Containerd__Types__Mount **mounts = ts_arena_array(a, vm->n_mounts, sizeof(*mounts));
        if (!m || !mounts)
                return NULL;
        thinsnap__v1__vm__init(m);
        m->vm_id = str(vm->id);
        m->image = str(vm->image);
        m->image_digest = str(vm->image_digest);
        m->device = str(vm->device);
        m->size_bytes = vm->size_bytes;
        m->snapshot_key = str(vm->key);
        m->lease = str(vm->lease);
        m->created = vm->created;
        m->created_at = vm->created_ns ? timestamp(a, vm->created_ns) : NULL;
        for (size_t i = 0; i < vm->n_mounts; i++) {
                Containerd__Types__Mount *mt = ts_arena_alloc(a, sizeof(*mt));
                if (!mt)
                        return NULL;
                containerd__types__mount__init(mt);
                mt->type = str(vm->mounts[i].type);
                mt->source = str(vm->mounts[i].source);
                mt->target = str(vm->mounts[i].target);
                mt->n_options = ts_strv_length(vm->mounts[i].options);
                mt->options = vm->mounts[i].options;
                mounts[i] = mt;
        }
        m->n_mounts = vm->n_mounts;
        m->mounts = mounts;
        return m;
}

/* ---- warms ---- */

static int send_status(op *o, const ts_prov_warm_status *s) {
        _cleanup_arena_ ts_arena a = { 0 };
        WarmStatus *m = status_msg(&a, s);
        return m ? ts_rpc_call_send(o->call, &m->base) : -ENOMEM;
}

/* Streams the warm's status until it ends (or the first one, detached). */
static int follow(op *o, ts_prov_warm *w, bool detach) {
        uint64_t seq = 0;
        for (;;) {
                if (ts_rpc_call_cancelled(o->call))
                        return op_end(o, TS_RPC_CANCELLED);
                ts_prov_warm_status s = { 0 };
                int r = ts_prov_warm_wait(w, seq, WAIT_SLICE_MS, &s);
                if (r == -ETIMEDOUT)
                        continue;
                if (r >= 0)
                        r = send_status(o, &s);
                seq = s.seq;
                ts_prov_warm_state state = s.state;
                int errnum = s.errnum;
                _cleanup_free_ char *msg = s.error ? strdup(s.error) : NULL;
                ts_prov_warm_status_done(&s);
                if (r < 0)
                        return fail(o, r, NULL);
                if (state == TS_PROV_WARM_FAILED) {
                        int code = ts_rpc_status_from_errno(errnum ? errnum : EIO);
                        return op_end(o, ts_rpc_call_error(o->call, code, "%s",
                                                           msg ? msg : "warm failed"));
                }
                if (state == TS_PROV_WARM_READY || detach)
                        return op_end(o, TS_RPC_OK);
        }
}

static int start_and_follow(op *o, ts_prov *p, const ts_prov_warm_request *req, bool detach) {
        ts_error *err = NULL;
        ts_prov_warm *w = NULL;
        int r = ts_prov_warm_start(p, req, &w, &err);
        if (r < 0)
                return fail(o, r, err);
        int code = follow(o, w, detach);
        ts_prov_warm_unref(w);
        return code;
}

static int h_pull(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__PullImageRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "pull", req->ref);
        int code = need(&o, "ref", req->ref);
        if (code != TS_RPC_OK)
                return code;
        ts_prov_warm_request wr = {
                .ref = req->ref,
                .platform = *req->platform ? req->platform : NULL,
                .plain_http = req->plain_http,
                .username = *req->username ? req->username : NULL,
                .password = *req->password ? req->password : NULL,
                .ca_pem = req->ca_pem.data,
                .ca_pem_len = req->ca_pem.len,
                .import_fd = -1,
        };
        return start_and_follow(&o, ud, &wr, req->detach);
}

static int h_import(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__ImportImageRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "import", req->path);
        int code = need(&o, "path", req->path);
        if (code != TS_RPC_OK)
                return code;
        ts_error *err = NULL;
        _cleanup_close_ int fd = -1;
        int r = open_as_caller(call, req->path, &fd, &err);
        if (r < 0)
                return fail(&o, r, err);
        ts_prov_warm_request wr = {
                .platform = *req->platform ? req->platform : NULL,
                .import_fd = fd,
                .import_path = req->path,
                .name = *req->name ? req->name : NULL,
        };
        return start_and_follow(&o, ud, &wr, req->detach);
}

/* ---- images ---- */

static int h_list_images(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        op o;
        op_begin(&o, call, "list-images", NULL);
        ts_error *err = NULL;
        ts_prov_image **v = NULL;
        size_t n = 0;
        int r = ts_prov_image_list(ud, &v, &n, &err);
        if (r < 0)
                return fail(&o, r, err);
        _cleanup_arena_ ts_arena a = { 0 };
        Thinsnap__V1__ListImagesResponse resp = THINSNAP__V1__LIST_IMAGES_RESPONSE__INIT;
        resp.images = ts_arena_array(&a, n, sizeof(*resp.images));
        r = resp.images ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (!(resp.images[i] = image_msg(&a, v[i])))
                        r = -ENOMEM;
                resp.n_images = i + 1;
        }
        if (r >= 0)
                r = ts_prov_image_totals(ud, &resp.total_content_bytes, &resp.total_pool_bytes, &err);
        if (r < 0) {
                ts_prov_image_list_free(v, n);
                return fail(&o, r, err);
        }
        int code = r < 0 ? fail(&o, r, NULL) : send(&o, &resp.base);
        ts_prov_image_list_free(v, n);
        return code;
}

static int h_get_image(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__GetImageRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "get-image", req->image);
        int code = need(&o, "image", req->image);
        if (code != TS_RPC_OK)
                return code;
        ts_error *err = NULL;
        ts_prov_image *img = NULL;
        int r = ts_prov_image_get(ud, req->image, &img, &err);
        if (r < 0)
                return fail(&o, r, err);
        _cleanup_arena_ ts_arena a = { 0 };
        Image *m = image_msg(&a, img);
        code = m ? send(&o, &m->base) : fail(&o, -ENOMEM, NULL);
        ts_prov_image_free(img);
        return code;
}

static int config_send(op *o, const ts_prov_image_config *c) {
        _cleanup_arena_ ts_arena a = { 0 };
        Thinsnap__V1__ImageConfig m = THINSNAP__V1__IMAGE_CONFIG__INIT;
        m.image = str(c->image);
        m.digest = str(c->digest);
        m.entrypoint = c->entrypoint;
        m.n_entrypoint = ts_strv_length(c->entrypoint);
        m.cmd = c->cmd;
        m.n_cmd = ts_strv_length(c->cmd);
        m.env = c->env;
        m.n_env = ts_strv_length(c->env);
        m.exposed_ports = c->exposed_ports;
        m.n_exposed_ports = ts_strv_length(c->exposed_ports);
        m.working_dir = str(c->working_dir);
        m.user = str(c->user);
        m.stop_signal = str(c->stop_signal);
        m.systemd_init = c->systemd_init;
        m.labels = ts_arena_array(&a, c->n_labels, sizeof(*m.labels));
        if (!m.labels)
                return fail(o, -ENOMEM, NULL);
        for (size_t i = 0; i < c->n_labels; i++) {
                Thinsnap__V1__ImageConfig__LabelsEntry *e = ts_arena_alloc(&a, sizeof(*e));
                if (!e)
                        return fail(o, -ENOMEM, NULL);
                thinsnap__v1__image_config__labels_entry__init(e);
                e->key = c->labels[i].key;
                e->value = c->labels[i].value;
                m.labels[i] = e;
                m.n_labels = i + 1;
        }
        return send(o, &m.base);
}

static int h_get_image_config(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__GetImageConfigRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "image-config", req->image);
        int code = need(&o, "image", req->image);
        if (code != TS_RPC_OK)
                return code;
        ts_error *err = NULL;
        ts_prov_image_config *c = NULL;
        int r = ts_prov_image_config_get(ud, req->image, &c, &err);
        if (r < 0)
                return fail(&o, r, err);
        code = config_send(&o, c);
        ts_prov_image_config_free(c);
        return code;
}

static int h_remove_image(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__RemoveImageRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "remove-image", req->image);
        int code = need(&o, "image", req->image);
        if (code != TS_RPC_OK)
                return code;
        ts_error *err = NULL;
        _cleanup_free_ char *name = NULL, *digest = NULL;
        int r = ts_prov_image_remove(ud, req->image, &name, &digest, &err);
        if (r < 0)
                return fail(&o, r, err);
        Thinsnap__V1__RemoveImageResponse resp = THINSNAP__V1__REMOVE_IMAGE_RESPONSE__INIT;
        resp.name = name;
        resp.digest = digest;
        return send(&o, &resp.base);
}

/* ---- VMs ---- */

static int send_vm(op *o, const ts_prov_vm *vm) {
        _cleanup_arena_ ts_arena a = { 0 };
        VM *m = vm_msg(&a, vm);
        return m ? send(o, &m->base) : fail(o, -ENOMEM, NULL);
}

static int h_snapshot(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__SnapshotRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "snapshot", req->vm_id);
        int code = need(&o, "vm_id", req->vm_id);
        if (code == TS_RPC_OK)
                code = need(&o, "image", req->image);
        if (code != TS_RPC_OK)
                return code;
        ts_prov_snapshot_request sr = {
                .vm_id = req->vm_id,
                .image = req->image,
                .set_owner = req->set_owner,
                .uid = req->uid,
                .gid = req->gid,
                .mode = req->mode,
        };
        ts_error *err = NULL;
        ts_prov_vm *vm = NULL;
        int r = ts_prov_vm_snapshot(ud, &sr, &vm, &err);
        if (r < 0)
                return fail(&o, r, err);
        code = send_vm(&o, vm);
        ts_prov_vm_free(vm);
        return code;
}

static int h_inject(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__InjectFileRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "inject", req->vm_id);
        int code = need(&o, "vm_id", req->vm_id);
        if (code == TS_RPC_OK)
                code = need(&o, "host_path", req->host_path);
        if (code == TS_RPC_OK)
                code = need(&o, "guest_path", req->guest_path);
        if (code != TS_RPC_OK)
                return code;
        ts_error *err = NULL;
        _cleanup_close_ int fd = -1;
        int r = open_as_caller(call, req->host_path, &fd, &err);
        if (r < 0)
                return fail(&o, r, err);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return fail(&o, -errno, NULL);
        ts_prov_inject_request ir = {
                .vm_id = req->vm_id,
                .fd = fd,
                .guest_path = req->guest_path,
                .mode = req->mode,
                .uid = req->uid,
                .gid = req->gid,
        };
        _cleanup_free_ char *device = NULL;
        r = ts_prov_vm_inject(ud, &ir, &device, &err);
        if (r < 0)
                return fail(&o, r, err);
        Thinsnap__V1__InjectFileResponse resp = THINSNAP__V1__INJECT_FILE_RESPONSE__INIT;
        resp.device = device;
        resp.bytes = (uint64_t) st.st_size;
        return send(&o, &resp.base);
}

static int h_teardown(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__TeardownRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "teardown", req->vm_id);
        int code = need(&o, "vm_id", req->vm_id);
        if (code != TS_RPC_OK)
                return code;
        ts_error *err = NULL;
        bool existed = false;
        _cleanup_free_ char *device = NULL;
        int r = ts_prov_vm_teardown(ud, req->vm_id, &existed, &device, &err);
        if (r < 0)
                return fail(&o, r, err);
        Thinsnap__V1__TeardownResponse resp = THINSNAP__V1__TEARDOWN_RESPONSE__INIT;
        resp.existed = existed;
        if (device)
                resp.device = device;
        return send(&o, &resp.base);
}

static int h_list_vms(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        op o;
        op_begin(&o, call, "list-vms", NULL);
        ts_error *err = NULL;
        ts_prov_vm **v = NULL;
        size_t n = 0;
        int r = ts_prov_vm_list(ud, &v, &n, &err);
        if (r < 0)
                return fail(&o, r, err);
        _cleanup_arena_ ts_arena a = { 0 };
        Thinsnap__V1__ListVMsResponse resp = THINSNAP__V1__LIST_VMS_RESPONSE__INIT;
        resp.vms = ts_arena_array(&a, n, sizeof(*resp.vms));
        r = resp.vms ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (!(resp.vms[i] = vm_msg(&a, v[i])))
                        r = -ENOMEM;
                resp.n_vms = i + 1;
        }
        int code = r < 0 ? fail(&o, r, NULL) : send(&o, &resp.base);
        ts_prov_vm_list_free(v, n);
        return code;
}

/* failed[] holds "id: error" lines. */
static int gc_send(op *o, char **removed, char **failed) {
        _cleanup_arena_ ts_arena a = { 0 };
        Thinsnap__V1__GarbageCollectVMsResponse resp = THINSNAP__V1__GARBAGE_COLLECT_VMS_RESPONSE__INIT;
        resp.removed = removed;
        resp.n_removed = ts_strv_length(removed);
        size_t n = ts_strv_length(failed);
        resp.failed = ts_arena_array(&a, n, sizeof(*resp.failed));
        if (!resp.failed)
                return fail(o, -ENOMEM, NULL);
        for (size_t i = 0; i < n; i++) {
                Thinsnap__V1__VMError *e = ts_arena_alloc(&a, sizeof(*e));
                char *id = ts_arena_strdup(&a, failed[i]);
                if (!e || !id)
                        return fail(o, -ENOMEM, NULL);
                thinsnap__v1__vmerror__init(e);
                char *sep = strstr(id, ": ");
                e->vm_id = id;
                e->error = sep ? sep + 2 : (char *) "";
                if (sep)
                        *sep = '\0';
                resp.failed[i] = e;
                resp.n_failed = i + 1;
        }
        return send(o, &resp.base);
}

static int h_gc_vms(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__GarbageCollectVMsRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "gc-vms", NULL);
        ts_error *err = NULL;
        _cleanup_strv_free_ char **removed = NULL, **failed = NULL;
        int r = ts_prov_vm_gc(ud, req->keep, req->n_keep, &removed, &failed, &err);
        if (r < 0)
                return fail(&o, r, err);
        return gc_send(&o, removed, failed);
}

/* ---- prepared images ---- */

typedef Thinsnap__V1__PreparedImage PreparedImage;

static PreparedImage *prepared_msg(ts_arena *a, const ts_prov_prepared *x) {
        PreparedImage *m = ts_arena_alloc(a, sizeof(*m));
        if (!m)
                return NULL;
        thinsnap__v1__prepared_image__init(m);
        m->user_digest = str(x->user_digest);
        m->name = str(x->name);
        m->source = str(x->source);
        m->agent_digest = str(x->agent_digest);
        m->guest_path = str(x->guest_path);
        m->entrypoint = (char *) (x->entrypoint == TS_PROV_ENTRYPOINT_AGENT ? "agent" : "keep");
        m->digest = str(x->digest);
        m->chain_id = str(x->chain_id);
        m->layers = x->layers;
        m->content_bytes = x->content_bytes;
        m->pool_bytes = x->pool_bytes;
        m->created_at = x->created_ns ? timestamp(a, x->created_ns) : NULL;
        m->updated_at = x->updated_ns ? timestamp(a, x->updated_ns) : NULL;
        m->changed = x->changed;
        return m;
}

/* Progress of a prepare's warm, sent on its stream; a client gone stops it. */
static int prepare_progress(void *userdata, const ts_prov_warm_status *s) {
        op *o = userdata;
        if (ts_rpc_call_cancelled(o->call))
                return -ECANCELED;
        if (!s)
                return 0;
        _cleanup_arena_ ts_arena a = { 0 };
        Thinsnap__V1__PrepareImageStatus m = THINSNAP__V1__PREPARE_IMAGE_STATUS__INIT;
        m.warm = status_msg(&a, s);
        return m.warm ? ts_rpc_call_send(o->call, &m.base) : -ENOMEM;
}

static void limits_from(const Thinsnap__V1__PrepareLimits *l, ts_prov_limits *ret) {
        *ret = (ts_prov_limits) { 0 };
        if (!l)
                return;
        *ret = (ts_prov_limits) {
                .max_layers = l->max_layers,
                .max_compressed_bytes = l->max_compressed_bytes,
                .max_unpacked_bytes = l->max_unpacked_bytes,
                .max_inodes = l->max_inodes,
                .max_agent_bytes = l->max_agent_bytes,
        };
}

static int h_prepare(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__PrepareImageRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "prepare", req->digest);
        int code = need(&o, "ref", req->ref);
        if (code == TS_RPC_OK)
                code = need(&o, "digest", req->digest);
        if (code == TS_RPC_OK)
                code = need(&o, "agent_path", req->agent_path);
        if (code != TS_RPC_OK)
                return code;
        ts_error *err = NULL;
        _cleanup_close_ int fd = -1;
        int r = open_as_caller(call, req->agent_path, &fd, &err);
        if (r < 0) {
                ts_error_prefix(&err, r, "the agent");
                return fail(&o, r, err);
        }
        ts_prov_prepare_request pr = {
                .ref = req->ref,
                .digest = req->digest,
                .agent_fd = fd,
                .guest_path = *req->guest_path ? req->guest_path : NULL,
                /* The same numbers; another value is refused by name. */
                .entrypoint = (ts_prov_entrypoint) req->entrypoint,
                .plain_http = req->plain_http,
                .username = *req->username ? req->username : NULL,
                .password = *req->password ? req->password : NULL,
                .ca_pem = req->ca_pem.data,
                .ca_pem_len = req->ca_pem.len,
                .progress = prepare_progress,
                .userdata = &o,
        };
        limits_from(req->limits, &pr.limits);
        ts_prov_prepared *x = NULL;
        if ((r = ts_prov_prepare(ud, &pr, &x, &err)) < 0)
                return fail(&o, r, err);
        _cleanup_arena_ ts_arena a = { 0 };
        Thinsnap__V1__PrepareImageStatus m = THINSNAP__V1__PREPARE_IMAGE_STATUS__INIT;
        m.prepared = prepared_msg(&a, x);
        code = m.prepared ? send(&o, &m.base) : fail(&o, -ENOMEM, NULL);
        ts_prov_prepared_free(x);
        return code;
}

static int h_list_prepared(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        op o;
        op_begin(&o, call, "list-prepared", NULL);
        ts_error *err = NULL;
        ts_prov_prepared **v = NULL;
        size_t n = 0;
        Thinsnap__V1__ListPreparedImagesResponse resp = THINSNAP__V1__LIST_PREPARED_IMAGES_RESPONSE__INIT;
        int r = ts_prov_prepared_list(ud, &v, &n, &resp.total_content_bytes, &resp.total_pool_bytes, &err);
        if (r < 0)
                return fail(&o, r, err);
        _cleanup_arena_ ts_arena a = { 0 };
        resp.images = ts_arena_array(&a, n, sizeof(*resp.images));
        r = resp.images ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (!(resp.images[i] = prepared_msg(&a, v[i])))
                        r = -ENOMEM;
                resp.n_images = i + 1;
        }
        int code = r < 0 ? fail(&o, r, NULL) : send(&o, &resp.base);
        ts_prov_prepared_list_free(v, n);
        return code;
}

static int h_unprepare(ts_rpc_call *call, const ProtobufCMessage *msg, void *ud) {
        const Thinsnap__V1__UnprepareImageRequest *req = (const void *) msg;
        op o;
        op_begin(&o, call, "unprepare", req->digest);
        int code = need(&o, "digest", req->digest);
        if (code != TS_RPC_OK)
                return code;
        ts_error *err = NULL;
        bool existed = false;
        char name[sizeof(TS_PROV_PREPARED_PREFIX) + 64];
        int r = ts_prov_unprepare(ud, req->digest, &existed, &err);
        if (r < 0)
                return fail(&o, r, err);
        snprintf(name, sizeof name, TS_PROV_PREPARED_PREFIX "%s", req->digest + strlen("sha256:"));
        Thinsnap__V1__UnprepareImageResponse resp = THINSNAP__V1__UNPREPARE_IMAGE_RESPONSE__INIT;
        resp.existed = existed;
        resp.name = name;
        return send(&o, &resp.base);
}

int ts_prov_service_register(ts_rpc_server *server, ts_prov *p) {
        static const ts_rpc_service_method methods[] = {
                { "PullImage", h_pull, true },
                { "ImportImage", h_import, true },
                { "ListImages", h_list_images, false },
                { "GetImage", h_get_image, false },
                { "GetImageConfig", h_get_image_config, false },
                { "RemoveImage", h_remove_image, false },
                { "Snapshot", h_snapshot, false },
                { "InjectFile", h_inject, false },
                { "Teardown", h_teardown, false },
                { "ListVMs", h_list_vms, false },
                { "GarbageCollectVMs", h_gc_vms, false },
                { "PrepareImage", h_prepare, true },
                { "ListPreparedImages", h_list_prepared, false },
                { "UnprepareImage", h_unprepare, false },
        };
        return ts_rpc_server_add_service(server, &thinsnap__v1__provisioner__descriptor, methods,
                                         TS_ARRAY_SIZE(methods), p);
}
