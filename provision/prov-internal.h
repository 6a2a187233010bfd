/* What the provision/ modules share: the provisioner's state, its
 * connection to containerd, the image resolution every operation starts
 * with, and the labels and names the provisioner writes.
 *
 * Locking: p->lock guards the warm list, every warm's status, the image
 * cache and the VM device cache; it is never held across a call to
 * containerd or a registry. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ctrd/ctrd.h"
#include "ctrd/images.h"
#include "oci/digest.h"
#include "oci/image.h"
#include "provision/provisioner.h"

/* Labels this provisioner writes (and containerd's own that it reads). */
#define LABEL_VM "thinsnap.vm"
/* Passed by containerd to thinsnapd: keep this many spares of the parent. */
#define LABEL_SPARES "containerd.io/snapshot/thinsnap.spares"
#define LABEL_VM_IMAGE "thinsnap.vm.image"
#define LABEL_VM_DIGEST "thinsnap.vm.image-digest"
#define LABEL_VM_DEVICE "thinsnap.vm.device"
#define LABEL_WARM_REF "thinsnap.warm.ref"
#define LABEL_WARM_PLATFORM "thinsnap.warm.platform"
#define LABEL_WARM_IMPORT "thinsnap.warm.import"
#define LABEL_WARM_EXPECTED "thinsnap.warm.expected-digest"
#define LABEL_IMAGE_PLATFORM "thinsnap.image.platform"
#define LABEL_GC_EXPIRE "containerd.io/gc.expire"
#define LABEL_SNAPSHOT_REF "containerd.io/snapshot.ref"
#define LABEL_UNCOMPRESSED "containerd.io/uncompressed"
#define LABEL_GC_CONFIG "containerd.io/gc.ref.content.config"
#define LABEL_GC_LAYER "containerd.io/gc.ref.content.l."
#define LABEL_GC_MANIFEST "containerd.io/gc.ref.content.m."
#define LABEL_GC_SNAPSHOT "containerd.io/gc.ref.snapshot."
#define LABEL_DIST_SOURCE "containerd.io/distribution.source."

#define VM_LEASE_PREFIX "thinsnap.vm."
#define VM_KEY_PREFIX "thinsnap-vm-"
#define WARM_LEASE_PREFIX "thinsnap.warm."

/* How long a warm's lease holds what it fetched if the warm never ends. */
#define WARM_LEASE_HOURS 24

typedef struct prov_warm prov_warm;

/* What an image's target resolves to on this host's platform; content
 * addressed, so an entry never goes stale. */
typedef struct prov_chain {
        char target[TS_DIGEST_MAX];
        char *platform;
        char manifest[TS_DIGEST_MAX], config[TS_DIGEST_MAX];
        char (*chain_ids)[TS_DIGEST_MAX];
        char **layer_digests;
        size_t n_layers;
        uint64_t content_bytes; /* target + manifest + config + layers */
        struct prov_chain *next;
} prov_chain;

struct ts_prov {
        char *address, *ns, *snapshotter, *docker_config, *pool;
        unsigned max_warms, max_downloads, registry_timeout_s;
        bool async_remove;
        unsigned vm_spares; /* ts_prov_config */
        int (*remove_device)(void *ctx, const char *device, const char *ns, const char *name,
                             ts_error **err);
        void *remove_device_ctx;
        ts_prov_limits limits; /* of prepared images, defaults filled in */

        pthread_mutex_t lock;
        pthread_cond_t changed; /* any warm's status changed, or stopping */
        ts_ctrd *ctrd;          /* made on first use */
        prov_warm *warms;       /* queued, running, failed */
        prov_chain *chains;
        void *vm_devices;       /* tsearch tree: the device of each VM cut here */
        bool stopping;
        pthread_t *workers;
        unsigned n_workers;
};

/* The connection to containerd, made on first use (containerd may start
 * after thinsnapd). Returns 0 or -ECONNREFUSED naming the socket. */
int prov_ctrd(ts_prov *p, ts_ctrd **ret, ts_error **err);

/* Every image record in our namespace, and the connection they came over
 * (*ret_c is borrowed, *ret_v the caller's). Returns 0 or -errno. */
int prov_images_all(ts_prov *p, ts_ctrd **ret_c, ts_ctrd_image **ret_v, size_t *ret_n, ts_error **err);

/* After a failed unpack (r): when the pool is out of space, -ENOSPC with its
 * figures replaces the error (containerd reports a write into a full thin
 * device as an I/O error). Else returns r with *err unchanged. */
int prov_explain_full_pool(ts_prov *p, int r, ts_error **err);

/* Realtime clock in nanoseconds since the epoch. */
int64_t prov_now_ns(void);

/* An RFC 3339 UTC time hours from now, for containerd.io/gc.expire. */
void prov_expiry(unsigned hours, char *buf, size_t len);

/* A deep copy of d into *ret. Returns 0 or -ENOMEM. */
int prov_descriptor_copy(const ts_ctrd_descriptor *d, ts_ctrd_descriptor *ret);

/* ---- images (images.c) ---- */

/* An image record found by name, digest or digest prefix. */
typedef struct prov_image {
        char *name;
        ts_ctrd_descriptor target;
        char **labels;
        int64_t created_ns, updated_ns;
} prov_image;

void prov_image_done(prov_image *img);

/* Finds the image `name` (see ts_prov_image_get). Returns 0, -ENOENT,
 * -EINVAL (bad name; a prefix that fits several digests, listed). */
int prov_image_find(ts_prov *p, const char *name, prov_image *ret, ts_error **err);

/* The chain of the image's target for platform (NULL: the host's),
 * from the cache or read from the content store. Returns 0 and a pointer
 * into the cache (valid until ts_prov_free), -ENOENT (content missing),
 * -EBADMSG (a document that does not parse), -EPROTO. */
int prov_chain_get(ts_prov *p, const ts_ctrd_descriptor *target, const char *platform,
                   const prov_chain **ret, ts_error **err);

/* Remembers a chain learned while warming. Takes ownership of c. */
const prov_chain *prov_chain_add(ts_prov *p, prov_chain *c);
prov_chain *prov_chain_free(prov_chain *c);

/* ---- VMs (vm.c) ---- */

/* Forgets every VM's device (at ts_prov_free). */
void prov_vm_devices_free(ts_prov *p);

/* ---- warms (warm.c) ---- */

/* Walking the warm list (caller holds p->lock): the next warm, its image name. */
prov_warm *prov_warm_next(const prov_warm *w);
const char *prov_warm_name(const prov_warm *w);

/* Status of the warm of the image named name (normalised reference), if
 * one is queued, running or failed; NULL otherwise. Caller holds p->lock. */
ts_prov_warm_status *prov_warm_status_locked(ts_prov *p, const char *name);

/* Starts the worker threads and the recovery of interrupted warms. */
int prov_warm_start_workers(ts_prov *p, ts_error **err);

/* Stops the workers (running warms are interrupted) and frees every warm. */
void prov_warm_stop_workers(ts_prov *p);

/* Creates the image record, or points the existing one at img's target
 * with img's labels. Returns 0 or -errno. */
int prov_image_put(ts_ctrd *c, const ts_ctrd_image *img, ts_error **err);

/* ---- prepared images (prepare.c, prepared.c) ---- */

#define LABEL_PREP "prepared.hpcc.local/"
#define LABEL_PREP_USER_DIGEST LABEL_PREP "user-digest"
#define LABEL_PREP_SOURCE LABEL_PREP "source"
#define LABEL_PREP_AGENT LABEL_PREP "agent-digest"
#define LABEL_PREP_GUEST_PATH LABEL_PREP "guest-path"
#define LABEL_PREP_ENTRYPOINT LABEL_PREP "entrypoint"
#define LABEL_PREP_USER_ENTRYPOINT LABEL_PREP "user-entrypoint"
#define LABEL_PREP_USER_CMD LABEL_PREP "user-cmd"
#define PREPARE_LEASE_PREFIX "thinsnap.prepare."

/* The record name of user_digest's prepared image, "prepared.hpcc.local/
 * img:<hex>", into buf (at least PROV_PREPARED_NAME_MAX). Returns 0 or
 * -EINVAL naming a digest that is not one. */
#define PROV_PREPARED_NAME_MAX (sizeof(TS_PROV_PREPARED_PREFIX) + 64)
int prov_prepared_name(const char *user_digest, char *buf, size_t len, ts_error **err);

/* The limits in force: the provisioner's, each lowered by a figure req
 * sets (req may be NULL). */
void prov_limits_merge(const ts_prov_limits *own, const ts_prov_limits *req, ts_prov_limits *ret);

/* The provisioner's limits with the defaults for figures cfg leaves 0. */
void prov_limits_defaults(const ts_prov_limits *cfg, ts_prov_limits *ret);

/* -EDQUOT naming the limit and the figure when the manifest declares more
 * layers or compressed bytes than lim allows (lim NULL: none); else 0. */
int prov_limits_check_manifest(const ts_prov_limits *lim, const ts_oci_manifest *m, ts_error **err);

/* The bytes of the distinct blobs (targets, manifests, configs, layers) and
 * of the distinct snapshots (chain ids) of chains: what the images share
 * counted once. Figures that cannot be read count 0. */
void prov_chains_totals(ts_prov *p, ts_ctrd *c, const prov_chain *const *chains, size_t n,
                        uint64_t *ret_content, uint64_t *ret_pool);

/* The record rec as a prepared image, once it is complete: its documents,
 * every layer's blob and its top snapshot are there. Returns 0 and *ret
 * (and its chain), -EBADMSG (a label or name that does not fit), -ENOENT
 * (something missing: named), -ENOMEM. */
int prov_prepared_describe(ts_prov *p, ts_ctrd *c, const ts_ctrd_image *rec, const prov_chain **ret_chain,
                           ts_prov_prepared **ret, ts_error **err);
