/* The provisioner: warms images into the thin pool through containerd and
 * cuts, fills and tears down one private copy-on-write device per VM.
 *
 * thinsnapd runs one provisioner next to its snapshotter. It is containerd's
 * client: images are pulled client-side (registry/ on libcurl, blobs
 * streamed into containerd's content store with the labels containerd's own
 * client sets), unpacked layer by layer through containerd's Snapshots
 * (snapshotter "thinsnap", which is thinsnapd itself) and Diff services, and
 * recorded as containerd images in the provisioner's namespace. A VM is a
 * containerd lease "thinsnap.vm.<id>" holding one active snapshot
 * "thinsnap-vm-<id>" whose parent is the image's top chain id.
 *
 * Every function may be called from any thread, several at once. A call
 * that waits on containerd holds only its own thread: containerd's calls
 * back into thinsnapd's snapshotter are served by other threads.
 *
 * Errors are -errno with *err naming what failed: -ENOENT (no such image
 * or VM), -EEXIST (the VM exists with another image), -EINVAL (a bad name,
 * reference, digest or path), -EBUSY (a device still in use), -ENOSPC (the
 * pool is full), -EACCES (the registry refused), -ECONNREFUSED (containerd
 * or the registry cannot be reached), -ETIMEDOUT, -EBADMSG (content that
 * does not match its digest), -EPROTO (an answer that makes no sense). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

typedef struct ts_prov ts_prov;

/* Caps on what a prepared image may be made of (hpcc's rootfs caps). An
 * image over one is refused with an error (-EDQUOT) that names the limit
 * and the figure, and nothing is published. 0: the default. */
typedef struct ts_prov_limits {
        unsigned max_layers;           /* layers the user's manifest declares */
        uint64_t max_compressed_bytes; /* the sum of their sizes in the manifest */
        uint64_t max_unpacked_bytes;   /* the user's tree unpacked, as df counts it */
        uint64_t max_inodes;           /* its inodes */
        uint64_t max_agent_bytes;      /* the agent file */
} ts_prov_limits;

#define TS_PROV_DEFAULT_MAX_LAYERS 128
#define TS_PROV_DEFAULT_MAX_COMPRESSED_BYTES (16ULL << 30)
#define TS_PROV_DEFAULT_MAX_UNPACKED_BYTES (64ULL << 30)
#define TS_PROV_DEFAULT_MAX_INODES 4000000ULL
#define TS_PROV_DEFAULT_MAX_AGENT_BYTES (256ULL << 20)

typedef struct ts_prov_config {
        const char *containerd_address; /* NULL: TS_PROV_DEFAULT_CONTAINERD */
        const char *namespace;          /* NULL: TS_PROV_DEFAULT_NAMESPACE */
        const char *snapshotter;        /* containerd's name for thinsnapd; NULL: "thinsnap" */
        const char *docker_config;      /* registry credentials; NULL: $DOCKER_CONFIG/config.json,
                                           else ~/.docker/config.json */
        unsigned max_warms;             /* warms running at once; 0: 2 */
        unsigned max_downloads;         /* parallel blob downloads per warm; 0: 3 */
        unsigned registry_timeout_s;    /* a registry transfer without progress this long
                                           fails; 0: 30 */
        const char *pool;               /* thinsnapd's thin pool: a failed unpack on a full
                                           pool says so with its figures; NULL: not known */
        bool async_remove;              /* thinsnapd removes devices in the background:
                                           teardown cannot wait for the device to go */
        unsigned vm_spares;             /* spares of an image's top chain a VM's Prepare asks
                                           thinsnapd to keep (its label
                                           containerd.io/snapshot/thinsnap.spares); 0: none */
        /* Inside thinsnapd: removes from thinsnapd itself the snapshot whose
         * device is device and whose key is containerd's <ns>/<id>/<name>
         * (ns: the provisioner's namespace). Teardown calls it once
         * containerd has forgotten the VM's snapshot, while containerd deletes
         * the lease and collects, so that teardowns take their devices out
         * side by side rather than one after another in containerd's
         * collector. NULL: the collector does it. */
        int (*remove_device)(void *ctx, const char *device, const char *ns, const char *name,
                             ts_error **err);
        void *remove_device_ctx;
        ts_prov_limits limits;          /* of prepared images */
} ts_prov_config;

#define TS_PROV_DEFAULT_CONTAINERD "/run/containerd/containerd.sock"
#define TS_PROV_DEFAULT_NAMESPACE "thinsnap"
#define TS_PROV_DEFAULT_SNAPSHOTTER "thinsnap"
#define TS_PROV_VM_ID_MAX 64

/* Creates a provisioner. containerd need not be running yet: it is
 * connected to on first use and again after it restarts. Warms that a
 * previous run left unfinished are queued again once containerd answers.
 * Returns 0, -EINVAL (a bad config value), -ENOMEM. */
int ts_prov_new(const ts_prov_config *cfg, ts_prov **ret, ts_error **err);

/* Stops: running warms are interrupted (and resumed by the next start),
 * waits for them, closes the connection. Accepts NULL; returns NULL. */
ts_prov *ts_prov_free(ts_prov *p);

/* ---- warms ---- */

typedef enum ts_prov_warm_state {
        TS_PROV_WARM_PENDING = 0,
        TS_PROV_WARM_PULLING,
        TS_PROV_WARM_UNPACKING,
        TS_PROV_WARM_READY,
        TS_PROV_WARM_FAILED,
} ts_prov_warm_state;

typedef struct ts_prov_blob_progress {
        char *digest;
        uint64_t done, total;
        bool cached;
} ts_prov_blob_progress;

/* A copy of a warm's status at one moment; owns its strings. */
typedef struct ts_prov_warm_status {
        char *ref;
        ts_prov_warm_state state;
        unsigned queue_position; /* PENDING: 1 for the next to start */
        uint64_t bytes_done, bytes_total;
        unsigned layer, layers; /* UNPACKING: layer (from 1) of layers */
        ts_prov_blob_progress *blobs;
        size_t n_blobs;
        char *error;  /* FAILED */
        int errnum;   /* FAILED: positive errno */
        char *digest; /* once known */
        int64_t started_ns, updated_ns; /* CLOCK_REALTIME */
        uint64_t seq; /* grows with every change */
} ts_prov_warm_status;

void ts_prov_warm_status_done(ts_prov_warm_status *s);
ts_prov_warm_status *ts_prov_warm_status_free(ts_prov_warm_status *s);

typedef struct ts_prov_warm_request {
        const char *ref;      /* pull: a reference */
        const char *platform; /* "os/arch[/variant]"; NULL: the host's */
        bool plain_http;
        const char *username, *password; /* NULL: docker config, else anonymous */
        const void *ca_pem;              /* extra CAs for this registry */
        size_t ca_pem_len;
        int import_fd;       /* import: a tarball opened by the caller; -1 for a pull */
        const char *import_path; /* import: for messages */
        const char *name;    /* import: the image's name; NULL: the tarball's names */
        /* pull: refuse (-EBADMSG naming both digests) before anything is
         * stored when the reference resolves to another digest; NULL: any.
         * Warms join only warms with the same expectation. */
        const char *expected_digest;
        /* pull: refuse (-EDQUOT) a manifest over these layer and compressed
         * byte limits before a layer is fetched; NULL: no limits. */
        const ts_prov_limits *limits;
} ts_prov_warm_request;

typedef struct ts_prov_warm ts_prov_warm;

/* Queues a warm, or joins the one of the same image (same normalised
 * reference and platform) that is queued or running. The returned handle
 * follows it; the warm goes on when the handle is dropped. An import's fd
 * is duplicated. Returns 0, -EINVAL (a bad reference or platform, naming
 * it), -ENOMEM. */
int ts_prov_warm_start(ts_prov *p, const ts_prov_warm_request *req, ts_prov_warm **ret,
                       ts_error **err);

/* The warms the queue holds now, counted by state (ret is indexed by
 * ts_prov_warm_state; ready ones leave the queue, failed ones stay a
 * while). Cheap: no call to containerd. */
void ts_prov_warm_counts(ts_prov *p, uint64_t ret[TS_PROV_WARM_FAILED + 1]);

/* Waits until the warm's status is newer than after_seq (0: any), or the
 * warm ended, or timeout_ms passed (-1: no limit), then copies it into
 * *ret. A change of byte counts alone is reported at most every 100 ms; a
 * change of state, layer or blob list at once. Returns 0, -ETIMEDOUT
 * (nothing newer; *ret untouched), -ENOMEM. */
int ts_prov_warm_wait(ts_prov_warm *w, uint64_t after_seq, int timeout_ms,
                      ts_prov_warm_status *ret);

ts_prov_warm *ts_prov_warm_unref(ts_prov_warm *w);

/* ---- images ---- */

typedef struct ts_prov_label {
        char *key, *value;
} ts_prov_label;

typedef struct ts_prov_image {
        char *name, *digest, *media_type, *chain_id, *platform;
        unsigned layers;
        uint64_t content_bytes, pool_bytes;
        bool ready;
        int64_t created_ns, updated_ns;
        ts_prov_label *labels;
        size_t n_labels;
        ts_prov_warm_status *warm; /* running, or the last failed warm; NULL */
} ts_prov_image;

ts_prov_image *ts_prov_image_free(ts_prov_image *img);

/* Every image of the namespace, ready or not, and images being warmed or
 * whose last warm failed, sorted by name. Returns 0 and a malloc()ed array
 * of *ret_n images, or -errno. */
int ts_prov_image_list(ts_prov *p, ts_prov_image ***ret, size_t *ret_n, ts_error **err);
void ts_prov_image_list_free(ts_prov_image **v, size_t n);

/* One image, named by reference, digest or a unique digest prefix (>= 4
 * hex characters). Returns 0, -ENOENT, -EINVAL (a bad name, or a prefix
 * that fits several images: the message lists them). */
int ts_prov_image_get(ts_prov *p, const char *name, ts_prov_image **ret, ts_error **err);

typedef struct ts_prov_image_config {
        char *image, *digest;
        char **entrypoint, **cmd, **env, **exposed_ports; /* NULL-terminated */
        char *working_dir, *user, *stop_signal;
        ts_prov_label *labels;
        size_t n_labels;
        bool systemd_init;
} ts_prov_image_config;

ts_prov_image_config *ts_prov_image_config_free(ts_prov_image_config *c);
int ts_prov_image_config_get(ts_prov *p, const char *name, ts_prov_image_config **ret,
                             ts_error **err);

/* Deletes the image record and collects what nothing else holds, before it
 * returns. *ret_name / *ret_digest (optional, malloc()ed) say what went.
 * Returns 0, -ENOENT, -EINVAL. */
int ts_prov_image_remove(ts_prov *p, const char *name, char **ret_name, char **ret_digest,
                         ts_error **err);

/* ---- VMs ---- */

typedef struct ts_prov_mount {
        char *type, *source, *target;
        char **options;
} ts_prov_mount;

typedef struct ts_prov_vm {
        char *id, *image, *image_digest, *device, *key, *lease;
        uint64_t size_bytes;
        ts_prov_mount *mounts;
        size_t n_mounts;
        int64_t created_ns;
        bool created;
} ts_prov_vm;

ts_prov_vm *ts_prov_vm_free(ts_prov_vm *vm);
void ts_prov_vm_list_free(ts_prov_vm **v, size_t n);

/* 0 for an id of 1..64 characters of [A-Za-z0-9_.-], else -EINVAL with
 * the reason. */
int ts_prov_vm_check_id(const char *id, ts_error **err);

typedef struct ts_prov_snapshot_request {
        const char *vm_id;
        const char *image;
        bool set_owner; /* chown the device node to uid:gid, chmod mode */
        uid_t uid;
        gid_t gid;
        mode_t mode; /* 0: 0600 */
} ts_prov_snapshot_request;

/* The VM's device (see the top). Returns 0, -EINVAL, -ENOENT (no such
 * image, or it is not unpacked yet), -EEXIST (the VM exists with another
 * image), -ENOSPC, -ECONNREFUSED. */
int ts_prov_vm_snapshot(ts_prov *p, const ts_prov_snapshot_request *req, ts_prov_vm **ret,
                        ts_error **err);

typedef struct ts_prov_inject_request {
        const char *vm_id;
        int fd;               /* the host file, a regular file opened by the caller */
        const char *guest_path;
        mode_t mode;          /* 0: 0755 */
        uid_t uid;
        gid_t gid;
} ts_prov_inject_request;

/* Writes the file into the VM's device without mounting it (inject/).
 * Returns 0 and the device path (optional), -ENOENT (no such VM), -EBUSY
 * (the device is open elsewhere: the message names the holder when it can
 * be found), and inject's errors. */
int ts_prov_vm_inject(ts_prov *p, const ts_prov_inject_request *req, char **ret_device,
                      ts_error **err);

/* Removes the VM's snapshot and deletes its lease with synchronous
 * collection; the device is gone from the kernel when it returns. *ret_existed
 * (optional) tells whether there was such a VM, *ret_device (optional,
 * malloc()ed, NULL when not known) which device it had. Returns 0, -EINVAL,
 * -EBUSY (the device is open: the holder is named, the lease stays). */
int ts_prov_vm_teardown(ts_prov *p, const char *vm_id, bool *ret_existed, char **ret_device,
                        ts_error **err);

int ts_prov_vm_list(ts_prov *p, ts_prov_vm ***ret, size_t *ret_n, ts_error **err);

/* Tears down every VM not in keep. *ret_removed lists the ids removed;
 * failures go to *ret_failed ("id: error" lines); both NULL-terminated.
 * Returns 0 when every teardown was tried (look at *ret_failed), or -errno
 * when the VMs could not be listed. */
int ts_prov_vm_gc(ts_prov *p, char *const *keep, size_t n_keep, char ***ret_removed,
                  char ***ret_failed, ts_error **err);

/* ---- prepared images ----
 *
 * A prepared image is the user's image plus one layer that carries the
 * agent, recorded as image "prepared.hpcc.local/img:<hex of the user's
 * digest>". Its chain is unpacked into the pool once, so a VM cut from it
 * (ts_prov_vm_snapshot with image "prepared:sha256:<hex>") writes nothing.
 *
 * The agent layer holds the agent at the guest path (mode 0755, root:root)
 * with its missing parents (0755), and each of /proc /sys /dev /tmp /run
 * the user's tree lacks (an existing entry of any kind is left as it is);
 * all with mtime 0. It is a reproducible tar, gzip-compressed, in the
 * content store; its snapshot is written without mounting anything and
 * without Diff.Apply, and is the tree Diff.Apply of the blob would give.
 * The record's labels: prepared.hpcc.local/user-digest, .../source (the
 * reference), .../agent-digest, .../guest-path, .../entrypoint and, with
 * TS_PROV_ENTRYPOINT_AGENT, the user's entrypoint and cmd as JSON arrays
 * (.../user-entrypoint, .../user-cmd). */

#define TS_PROV_PREPARED_PREFIX "prepared.hpcc.local/img:"
#define TS_PROV_PREPARED_FORM "prepared:" /* "prepared:sha256:<hex>" names one */
#define TS_PROV_DEFAULT_GUEST_PATH "/.hpcc/agent"

typedef enum ts_prov_entrypoint {
        TS_PROV_ENTRYPOINT_KEEP = 0, /* the config's entrypoint and cmd stay */
        TS_PROV_ENTRYPOINT_AGENT,    /* the entrypoint becomes the agent, cmd none */
} ts_prov_entrypoint;

typedef struct ts_prov_prepare_request {
        const char *ref;         /* where the user's image comes from */
        const char *digest;      /* the user's digest: what ref must resolve to */
        int agent_fd;            /* the agent, a regular file opened by the caller */
        const char *guest_path;  /* NULL: TS_PROV_DEFAULT_GUEST_PATH */
        ts_prov_entrypoint entrypoint;
        bool plain_http;         /* registry options, as for a warm */
        const char *username, *password;
        const void *ca_pem;
        size_t ca_pem_len;
        ts_prov_limits limits;   /* each figure set lowers the provisioner's own */
        /* Called with the warm's status as it changes, and with NULL about
         * once a second while nothing changes; a negative return stops the
         * call (-ECANCELED; the warm goes on). NULL: none. */
        int (*progress)(void *userdata, const ts_prov_warm_status *s);
        void *userdata;
} ts_prov_prepare_request;

typedef struct ts_prov_prepared {
        char *user_digest, *name, *source, *agent_digest, *guest_path;
        ts_prov_entrypoint entrypoint;
        char *digest;   /* the prepared manifest's */
        char *chain_id; /* its top: the parent of every VM cut from it */
        unsigned layers;
        uint64_t content_bytes, pool_bytes; /* as ts_prov_image has them */
        int64_t created_ns, updated_ns;
        bool changed;   /* ts_prov_prepare wrote it (false: it was there already) */
} ts_prov_prepared;

ts_prov_prepared *ts_prov_prepared_free(ts_prov_prepared *x);
void ts_prov_prepared_list_free(ts_prov_prepared **v, size_t n);

/* Prepares the user's image: warms ref (through the warm queue; prepares of
 * one digest run one at a time, a later one finding the earlier's work),
 * makes the agent layer, its snapshot, config, manifest and the record.
 * With the record there already for the same agent, guest path and
 * entrypoint, nothing is written or fetched. A lease with an expiry holds
 * the pieces until the record exists; a failure leaves no record.
 * Returns 0, -EINVAL (a bad digest, guest path or agent), -EBADMSG (ref
 * resolves to another digest: both named), -EDQUOT (a limit), -ENOTDIR /
 * -EISDIR (the guest path meets a non-directory or a directory in the
 * user's tree), -EOPNOTSUPP (the snapshotter's snapshots are neither ext4
 * block devices nor directories), and the errors of a warm. */
int ts_prov_prepare(ts_prov *p, const ts_prov_prepare_request *req, ts_prov_prepared **ret,
                    ts_error **err);

/* Every complete prepared image, sorted by user digest. A record without
 * the user-digest label, whose name is not that digest's, or whose
 * content or snapshot is incomplete is logged and left out.
 * *ret_content / *ret_pool (optional): the bytes of the distinct blobs and
 * snapshots of the listed images (what they share is counted once). */
int ts_prov_prepared_list(ts_prov *p, ts_prov_prepared ***ret, size_t *ret_n,
                          uint64_t *ret_content, uint64_t *ret_pool, ts_error **err);

/* Deletes the prepared image of user_digest with synchronous collection;
 * what other images or VMs use stays. No such record is success
 * (*ret_existed false). Returns 0, -EINVAL (not a digest), -errno. */
int ts_prov_unprepare(ts_prov *p, const char *user_digest, bool *ret_existed, ts_error **err);

/* ---- sizes ---- */

/* What all images of the namespace take: the bytes of their distinct blobs
 * in the content store and of their distinct snapshots in the pool (shared
 * ones counted once, so a prepared image adds only its own layer). */
int ts_prov_image_totals(ts_prov *p, uint64_t *ret_content, uint64_t *ret_pool, ts_error **err);
