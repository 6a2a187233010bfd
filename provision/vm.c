/* VMs: a lease "thinsnap.vm.<id>" labelled with the VM and its image,
 * holding one active snapshot "thinsnap-vm-<id>" on the image's top chain
 * id. The lease is made first (a snapshot made under it is never collected
 * behind the VM's back); teardown removes the snapshot and deletes the
 * lease with synchronous collection. */
#include "prov-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <search.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strv.h"
#include "ctrd/leases.h"
#include "ctrd/snapshots.h"
#include "devmapper/dm.h"
#include "holder.h"
#include "inject/inject.h"

#define DEFAULT_NODE_MODE 0600
#define DEFAULT_INJECT_MODE 0755

typedef struct vm_names {
        char lease[sizeof(VM_LEASE_PREFIX) + TS_PROV_VM_ID_MAX];
        char key[sizeof(VM_KEY_PREFIX) + TS_PROV_VM_ID_MAX];
} vm_names;

static int vm_names_of(const char *id, vm_names *n, ts_error **err) {
        int r = ts_prov_vm_check_id(id, err);
        if (r < 0)
                return r;
        snprintf(n->lease, sizeof n->lease, VM_LEASE_PREFIX "%s", id);
        snprintf(n->key, sizeof n->key, VM_KEY_PREFIX "%s", id);
        return 0;
}

ts_prov_vm *ts_prov_vm_free(ts_prov_vm *vm) {
        if (!vm)
                return NULL;
        free(vm->id);
        free(vm->image);
        free(vm->image_digest);
        free(vm->device);
        free(vm->key);
        free(vm->lease);
        for (size_t i = 0; i < vm->n_mounts; i++) {
                free(vm->mounts[i].type);
                free(vm->mounts[i].source);
                free(vm->mounts[i].target);
                ts_strv_free(vm->mounts[i].options);
        }
        free(vm->mounts);
        free(vm);
        return NULL;
}

void ts_prov_vm_list_free(ts_prov_vm **v, size_t n) {
        for (size_t i = 0; v && i < n; i++)
                ts_prov_vm_free(v[i]);
        free(v);
}

/* ---- the device ---- */

static const char *dm_name(const char *device) {
        const char *slash = strrchr(device, '/');
        return slash ? slash + 1 : device;
}

/* The device of each VM cut by this process, so teardown needs no Mounts
 * round trip. thinsnapd never reuses a device name (snapshot ids
 * only grow), so an entry left by a VM removed behind our back names no
 * device at all. After a restart the cache is empty: Mounts answers. */
typedef struct vm_device {
        char *device;
        char vm[];
} vm_device;

static int vm_device_cmp(const void *a, const void *b) {
        return strcmp(((const vm_device *) a)->vm, ((const vm_device *) b)->vm);
}

static void vm_device_free(void *v) {
        if (v)
                free(((vm_device *) v)->device);
        free(v);
}

static vm_device *vm_device_key(const char *vm) {
        vm_device *k = calloc(1, sizeof(*k) + strlen(vm) + 1);
        if (k)
                strcpy(k->vm, vm);
        return k;
}

/* Best effort: without memory, teardown asks containerd instead. */
static void device_remember(ts_prov *p, const char *vm, const char *device) {
        vm_device *d = vm_device_key(vm);
        if (!d || !(d->device = strdup(device))) {
                vm_device_free(d);
                return;
        }
        pthread_mutex_lock(&p->lock);
        vm_device **slot = tsearch(d, &p->vm_devices, vm_device_cmp);
        if (slot && *slot != d) {
                vm_device_free(*slot);
                *slot = d;
        } else if (!slot)
                vm_device_free(d);
        pthread_mutex_unlock(&p->lock);
}

/* A copy of the VM's remembered device; NULL if none (or no memory). */
static char *device_recall(ts_prov *p, const char *vm) {
        _cleanup_free_ vm_device *k = vm_device_key(vm);
        char *device = NULL;
        if (!k)
                return NULL;
        pthread_mutex_lock(&p->lock);
        vm_device **slot = tfind(k, &p->vm_devices, vm_device_cmp);
        if (slot)
                device = strdup((*slot)->device);
        pthread_mutex_unlock(&p->lock);
        return device;
}

static void device_forget(ts_prov *p, const char *vm) {
        _cleanup_free_ vm_device *k = vm_device_key(vm);
        if (!k)
                return;
        pthread_mutex_lock(&p->lock);
        vm_device **slot = tfind(k, &p->vm_devices, vm_device_cmp);
        vm_device *d = slot ? *slot : NULL;
        if (d)
                tdelete(k, &p->vm_devices, vm_device_cmp);
        pthread_mutex_unlock(&p->lock);
        vm_device_free(d);
}

void prov_vm_devices_free(ts_prov *p) {
        tdestroy(p->vm_devices, vm_device_free);
        p->vm_devices = NULL;
}

/* The VM's device: the block device its snapshot's mount names. */
static int device_of(ts_prov *p, const char *key, char **ret, ts_error **err) {
        ts_ctrd_mounts *m = NULL;
        int r = ts_ctrd_snapshot_mounts(p->ctrd, p->snapshotter, key, &m, err);
        if (r < 0)
                return r;
        if (m->n < 1 || !m->v[0].source || m->v[0].source[0] != '/')
                r = ts_error_setf_plain(err, EPROTO, "snapshot %s has no block device mount", key);
        else if (!(*ret = strdup(m->v[0].source)))
                r = -ENOMEM;
        ts_ctrd_mounts_free(m);
        return r;
}

static uint64_t device_size(const char *device) {
        uint64_t size = 0;
        _cleanup_close_ int fd = open(device, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0 || ioctl(fd, BLKGETSIZE64, &size) < 0)
                return 0;
        return size;
}

/* A device-mapper device: what thinsnapd's snapshots are. Another
 * snapshotter's mount (a directory to bind) has no device to check. */
static bool is_dm_device(const char *path) {
        struct stat st;
        return path && stat(path, &st) == 0 && S_ISBLK(st.st_mode) &&
               strncmp(path, "/dev/mapper/", strlen("/dev/mapper/")) == 0;
}

/* -EBUSY naming who holds the device open beyond allowed openers. */
static int check_unused(const char *vm, const char *device, int allowed, ts_error **err) {
        if (!is_dm_device(device))
                return 0;
        ts_dm_info info;
        ts_error *e = NULL;
        int r = ts_dm_info_get(dm_name(device), &info, &e);
        if (r < 0) {
                e = ts_error_free(e);
                return r == -ENOENT || r == -ENXIO ? 0 : r;
        }
        if (!info.exists || info.open_count <= allowed)
                return 0;
        char who[160] = "";
        if (prov_holders(makedev(info.major, info.minor), who, sizeof who) > 0)
                return ts_error_setf_plain(err, EBUSY, "VM %s: device %s is open by %s", vm, device,
                                           who);
        return ts_error_setf_plain(err, EBUSY, "VM %s: device %s is in use (open %d times: mounted, "
                                               "or held by another device)",
                                   vm, device, (int) info.open_count - allowed);
}

static int set_owner(const ts_prov_snapshot_request *req, const char *device, ts_error **err) {
        if (!req->set_owner)
                return 0;
        mode_t mode = req->mode ? req->mode : DEFAULT_NODE_MODE;
        if (chown(device, req->uid, req->gid) < 0 || chmod(device, mode) < 0)
                return ts_error_set(err, errno, "VM %s: give %s to %u:%u mode %04o", req->vm_id,
                                    device, (unsigned) req->uid, (unsigned) req->gid, (unsigned) mode);
        return 0;
}

/* ---- snapshot ---- */

static int vm_new(const char *id, const vm_names *n, const prov_image *img, ts_prov_vm **ret) {
        ts_prov_vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return -ENOMEM;
        vm->id = strdup(id);
        vm->key = strdup(n->key);
        vm->lease = strdup(n->lease);
        vm->image = img ? strdup(img->name) : NULL;
        vm->image_digest = img ? strdup(img->target.digest) : NULL;
        if (!vm->id || !vm->key || !vm->lease || (img && (!vm->image || !vm->image_digest))) {
                ts_prov_vm_free(vm);
                return -ENOMEM;
        }
        *ret = vm;
        return 0;
}

static int vm_set_mounts(ts_prov_vm *vm, const ts_ctrd_mounts *m) {
        vm->mounts = calloc(m->n ? m->n : 1, sizeof(*vm->mounts));
        if (!vm->mounts)
                return -ENOMEM;
        for (size_t i = 0; i < m->n; i++) {
                ts_prov_mount *o = &vm->mounts[i];
                vm->n_mounts = i + 1;
                o->type = strdup(m->v[i].type ? m->v[i].type : "");
                o->source = strdup(m->v[i].source ? m->v[i].source : "");
                o->target = strdup(m->v[i].target ? m->v[i].target : "");
                if (!o->type || !o->source || !o->target)
                        return -ENOMEM;
                for (char *const *opt = m->v[i].options; opt && *opt; opt++)
                        if (ts_strv_push(&o->options, *opt) < 0)
                                return -ENOMEM;
        }
        if (m->n < 1 || !(vm->device = strdup(m->v[0].source ? m->v[0].source : "")))
                return m->n < 1 ? -EPROTO : -ENOMEM;
        vm->size_bytes = device_size(vm->device);
        return 0;
}

/* The VM's lease as containerd has it: -ENOENT when there is none. */
static int lease_get(ts_prov *p, const char *id, ts_ctrd_lease **ret, size_t *ret_n, ts_error **err) {
        _cleanup_free_ char *filter = NULL;
        if (asprintf(&filter, "id==%s", id) < 0)
                return -ENOMEM;
        char *filters[] = { filter, NULL };
        int r = ts_ctrd_lease_list(p->ctrd, filters, ret, ret_n, err);
        if (r >= 0 && *ret_n == 0) {
                ts_ctrd_lease_list_free(*ret, *ret_n);
                return -ENOENT;
        }
        return r;
}

/* The VM exists already: the same device for the same image. */
static int existing(ts_prov *p, const ts_prov_snapshot_request *req, const vm_names *n,
                    const prov_image *img, ts_error **err) {
        ts_ctrd_lease *l = NULL;
        size_t nl = 0;
        int r = lease_get(p, n->lease, &l, &nl, err);
        if (r < 0)
                return r == -ENOENT ? -EAGAIN : r; /* gone meanwhile: make it again */
        const char *digest = ts_ctrd_label(l[0].labels, LABEL_VM_DIGEST);
        const char *image = ts_ctrd_label(l[0].labels, LABEL_VM_IMAGE);
        if (!digest || strcmp(digest, img->target.digest) != 0)
                r = ts_error_setf_plain(err, EEXIST, "VM %s exists with image %s (%s)", req->vm_id,
                                        image ? image : "?", digest ? digest : "?");
        ts_ctrd_lease_list_free(l, nl);
        return r;
}

static int lease_create(ts_prov *p, const ts_prov_snapshot_request *req, const vm_names *n,
                        const prov_image *img, ts_error **err) {
        char *labels[] = {
                LABEL_VM, (char *) req->vm_id,
                LABEL_VM_IMAGE, img->name,
                LABEL_VM_DIGEST, img->target.digest,
                NULL,
        };
        ts_error *e = NULL;
        int r = ts_ctrd_lease_create(p->ctrd, n->lease, labels, NULL, &e);
        if (r == -EEXIST) {
                e = ts_error_free(e);
                return existing(p, req, n, img, err);
        }
        return r < 0 ? ts_error_move(err, &e) : 1;
}

/* Prepare under the lease; the snapshot there already (a repeated call,
 * or one cut short after its Prepare) is the VM's device. */
static int prepare(ts_prov *p, const vm_names *n, const char *parent, const char *id,
                   ts_ctrd_mounts **ret, ts_error **err) {
        char spares[16];
        snprintf(spares, sizeof spares, "%u", p->vm_spares);
        char *labels[] = { LABEL_VM, (char *) id, p->vm_spares ? LABEL_SPARES : NULL, spares, NULL };
        ts_error *e = NULL;
        int r = ts_ctrd_snapshot_prepare(p->ctrd, n->lease, p->snapshotter, n->key, parent, labels,
                                         ret, &e);
        if (r == -EEXIST) {
                e = ts_error_free(e);
                return ts_ctrd_snapshot_mounts(p->ctrd, p->snapshotter, n->key, ret, err);
        }
        return r < 0 ? ts_error_move(err, &e) : 0;
}

/* The VM's device from its lease and Prepare; t0 is when the call began
 * and t1 when its image was found: with the lease and the Prepare, they
 * make the debug line that tells where a slow call spent its time. */
static int cut(ts_prov *p, const ts_prov_snapshot_request *req, const prov_image *img,
               const char *parent, int64_t t0, int64_t t1, ts_prov_vm **ret, ts_error **err) {
        vm_names n;
        int r = vm_names_of(req->vm_id, &n, err);
        if (r < 0)
                return r;
        int made;
        while ((made = lease_create(p, req, &n, img, err)) == -EAGAIN)
                ;
        if (made < 0)
                return made;
        int64_t t2 = ts_clock_mono_ns();
        ts_ctrd_mounts *m = NULL;
        r = prepare(p, &n, parent, req->vm_id, &m, err);
        log_debug("VM %s: image lookup %.1f ms, lease %.1f ms, Prepare through containerd %.1f ms",
                  req->vm_id, (double) (t1 - t0) / 1e6, (double) (t2 - t1) / 1e6,
                  (double) (ts_clock_mono_ns() - t2) / 1e6);
        if (r < 0) {
                if (made == 1) /* nothing may stay of a VM that failed to be made */
                        ts_ctrd_lease_delete(p->ctrd, n.lease, true, NULL);
                return ts_error_prefix(err, r, "VM %s", req->vm_id);
        }
        ts_prov_vm *vm = NULL;
        if ((r = vm_new(req->vm_id, &n, img, &vm)) >= 0 && (r = vm_set_mounts(vm, m)) >= 0)
                r = set_owner(req, vm->device, err);
        ts_ctrd_mounts_free(m);
        if (r >= 0 && vm->device[0] == '/')
                device_remember(p, req->vm_id, vm->device);
        if (r < 0) {
                ts_prov_vm_free(vm);
                return r;
        }
        vm->created = made == 1;
        vm->created_ns = prov_now_ns();
        *ret = vm;
        return 0;
}

int ts_prov_vm_snapshot(ts_prov *p, const ts_prov_snapshot_request *req, ts_prov_vm **ret,
                        ts_error **err) {
        int r = ts_prov_vm_check_id(req->vm_id, err);
        if (r < 0)
                return r;
        prov_image img = { 0 };
        const prov_chain *ch = NULL;
        int64_t t0 = ts_clock_mono_ns();
        r = prov_image_find(p, req->image, &img, err);
        if (r >= 0)
                r = prov_chain_get(p, &img.target, ts_ctrd_label(img.labels, LABEL_IMAGE_PLATFORM),
                                   &ch, err);
        if (r >= 0 && ch->n_layers == 0)
                r = ts_error_setf_plain(err, EINVAL, "image %s has no layers", img.name);
        if (r >= 0)
                r = cut(p, req, &img, ch->chain_ids[ch->n_layers - 1], t0, ts_clock_mono_ns(), ret,
                        err);
        prov_image_done(&img);
        return r;
}

/* ---- teardown ---- */

/* The device is gone from the kernel (unless thinsnapd removes devices in
 * the background: then it goes soon after). */
static int check_gone(const char *vm, const char *device, ts_error **err) {
        ts_dm_info info;
        if (strncmp(device, "/dev/mapper/", strlen("/dev/mapper/")) != 0 ||
            ts_dm_info_get(dm_name(device), &info, NULL) < 0 || !info.exists)
                return 0;
        return ts_error_setf_plain(err, EBUSY, "VM %s: its lease is gone but device %s is still there "
                                               "(containerd could not remove its snapshot: see "
                                               "thinsnapd's and containerd's logs)",
                                   vm, device);
}

/* Inside thinsnapd, once containerd has forgotten the VM's snapshot,
 * thinsnapd removes it on a thread of its own while containerd deletes the
 * lease and collects. Left to containerd's collector, the snapshots of
 * concurrent teardowns would go one at a time; here their removals (kernel
 * round trips that wait more than they work) overlap. What fails here is
 * left to the collector (and check_gone). */
typedef struct device_removal {
        ts_prov *p;
        const char *vm, *device, *key;
        pthread_t thread;
        bool on_thread;
} device_removal;

static void *removal_run(void *arg) {
        device_removal *d = arg;
        ts_error *e = NULL;
        int r = d->p->remove_device(d->p->remove_device_ctx, d->device, d->p->ns, d->key, &e);
        /* -EINVAL: not thinsnapd's device (the provisioner drives another snapshotter). */
        if (r < 0 && r != -ENOENT && r != -EINVAL)
                log_warn("VM %s: device %s is left to containerd's collector: %s", d->vm, d->device,
                         ts_error_message(e, r));
        ts_error_free(e);
        return NULL;
}

/* Starts the removal; runs it here when no thread can be started. */
static void removal_start(device_removal *d) {
        if (!d->p->remove_device)
                return;
        d->on_thread = pthread_create(&d->thread, NULL, removal_run, d) == 0;
        if (!d->on_thread)
                removal_run(d);
}

static void removal_wait(device_removal *d) {
        if (d->on_thread)
                pthread_join(d->thread, NULL);
}

int ts_prov_vm_teardown(ts_prov *p, const char *vm_id, bool *ret_existed, char **ret_device,
                        ts_error **err) {
        vm_names n;
        ts_ctrd *c = NULL;
        if (ret_device)
                *ret_device = NULL;
        int r = vm_names_of(vm_id, &n, err);
        if (r >= 0)
                r = prov_ctrd(p, &c, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *device = device_recall(p, vm_id);
        ts_error *e = NULL;
        if (!device && (r = device_of(p, n.key, &device, &e)) < 0 && r != -ENOENT)
                return ts_error_move(err, &e);
        e = ts_error_free(e);
        if (device && (r = check_unused(vm_id, device, 0, err)) < 0)
                return r;
        r = ts_ctrd_snapshot_remove(c, p->snapshotter, n.key, &e);
        bool had_snapshot = r >= 0;
        if (r < 0 && r != -ENOENT)
                return ts_error_move(err, &e);
        e = ts_error_free(e);
        device_removal removal = { .p = p, .vm = vm_id, .device = device, .key = n.key };
        if (had_snapshot && device)
                removal_start(&removal);
        r = ts_ctrd_lease_delete(c, n.lease, true, &e);
        removal_wait(&removal);
        bool had_lease = r >= 0;
        if (r < 0 && r != -ENOENT)
                return ts_error_move(err, &e);
        e = ts_error_free(e);
        device_forget(p, vm_id);
        if (device && !p->async_remove && (r = check_gone(vm_id, device, err)) < 0)
                return r;
        if (ret_existed)
                *ret_existed = had_snapshot || had_lease;
        if (had_snapshot || had_lease)
                log_info("VM %s torn down%s%s", vm_id, device ? ": " : "", device ? device : "");
        if (ret_device && (had_snapshot || had_lease))
                *ret_device = TAKE_PTR(device);
        return 0;
}

/* ---- inject ---- */

int ts_prov_vm_inject(ts_prov *p, const ts_prov_inject_request *req, char **ret_device,
                      ts_error **err) {
        vm_names n;
        ts_ctrd *c = NULL;
        int r = vm_names_of(req->vm_id, &n, err);
        if (r >= 0)
                r = prov_ctrd(p, &c, err);
        if (r < 0)
                return r;
        if (!req->guest_path || req->guest_path[0] != '/')
                return ts_error_setf_plain(err, EINVAL, "guest path '%.256s' must be absolute",
                                           req->guest_path ? req->guest_path : "");
        _cleanup_free_ char *device = NULL;
        if ((r = device_of(p, n.key, &device, err)) < 0)
                return r == -ENOENT ? ts_error_setf_plain(err, ENOENT, "no VM %s", req->vm_id) : r;
        ts_inject *ij = NULL;
        if ((r = ts_inject_open(device, 0, &ij, err)) < 0)
                return ts_error_prefix(err, r, "VM %s", req->vm_id);
        /* inject's exclusive open keeps out mounts and other exclusive
         * openers; a VMM opens without O_EXCL, which only the count shows. */
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        o.mode = req->mode ? req->mode : DEFAULT_INJECT_MODE;
        o.uid = req->uid;
        o.gid = req->gid;
        r = check_unused(req->vm_id, device, 1, err);
        if (r >= 0)
                r = ts_inject_write_fd(ij, req->fd, req->guest_path, &o, err);
        int q = ts_inject_close(ij, r < 0 ? NULL : err);
        if (r >= 0)
                r = q;
        if (r < 0)
                return ts_error_prefix(err, r, "VM %s: inject %s", req->vm_id, req->guest_path);
        if (ret_device)
                *ret_device = TAKE_PTR(device);
        return 0;
}

/* ---- list and gc ---- */

static int vm_from_lease(ts_prov *p, const ts_ctrd_lease *l, ts_prov_vm **ret) {
        const char *id = ts_ctrd_label(l->labels, LABEL_VM);
        vm_names n;
        if (!id || vm_names_of(id, &n, NULL) < 0)
                return 0; /* not a VM of ours */
        prov_image img = { .name = (char *) ts_ctrd_label(l->labels, LABEL_VM_IMAGE),
                           .target.digest = (char *) ts_ctrd_label(l->labels, LABEL_VM_DIGEST) };
        if (!img.name || !img.target.digest)
                return 0;
        ts_prov_vm *vm = NULL;
        int r = vm_new(id, &n, &img, &vm);
        if (r < 0)
                return r;
        vm->created_ns = l->created_ns;
        ts_ctrd_mounts *m = NULL;
        if (ts_ctrd_snapshot_mounts(p->ctrd, p->snapshotter, n.key, &m, NULL) >= 0)
                r = vm_set_mounts(vm, m);
        ts_ctrd_mounts_free(m);
        if (r < 0) {
                ts_prov_vm_free(vm);
                return r;
        }
        *ret = vm;
        return 1;
}

int ts_prov_vm_list(ts_prov *p, ts_prov_vm ***ret, size_t *ret_n, ts_error **err) {
        ts_ctrd *c = NULL;
        int r = prov_ctrd(p, &c, err);
        if (r < 0)
                return r;
        char *filters[] = { "labels.\"" LABEL_VM "\"", NULL };
        ts_ctrd_lease *v = NULL;
        size_t n = 0;
        if ((r = ts_ctrd_lease_list(c, filters, &v, &n, err)) < 0)
                return r;
        ts_prov_vm **out = calloc(n ? n : 1, sizeof(*out));
        size_t n_out = 0;
        r = out ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n; i++)
                if ((r = vm_from_lease(p, &v[i], &out[n_out])) > 0)
                        n_out++;
        ts_ctrd_lease_list_free(v, n);
        if (r < 0) {
                ts_prov_vm_list_free(out, n_out);
                return ts_error_set(err, r, "list VMs");
        }
        *ret = out;
        *ret_n = n_out;
        return 0;
}

static bool kept(char *const *keep, size_t n, const char *id) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(keep[i], id) == 0)
                        return true;
        return false;
}

int ts_prov_vm_gc(ts_prov *p, char *const *keep, size_t n_keep, char ***ret_removed,
                  char ***ret_failed, ts_error **err) {
        ts_prov_vm **v = NULL;
        size_t n = 0;
        int r = ts_prov_vm_list(p, &v, &n, err);
        if (r < 0)
                return r;
        _cleanup_strv_free_ char **removed = NULL, **failed = NULL;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (kept(keep, n_keep, v[i]->id))
                        continue;
                ts_error *e = NULL;
                int q = ts_prov_vm_teardown(p, v[i]->id, NULL, NULL, &e);
                _cleanup_free_ char *line = NULL;
                if (q >= 0)
                        r = ts_strv_push(&removed, v[i]->id);
                else if (asprintf(&line, "%s: %s", v[i]->id, ts_error_message(e, q)) < 0)
                        r = -ENOMEM;
                else
                        r = ts_strv_push(&failed, line);
                e = ts_error_free(e);
        }
        ts_prov_vm_list_free(v, n);
        if (r < 0)
                return r;
        *ret_removed = TAKE_PTR(removed);
        *ret_failed = TAKE_PTR(failed);
        return 0;
}
