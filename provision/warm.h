/* A warm as its steps (pull.c, import.c, unpack.c) see it: what was asked,
 * where to report progress, whether to stop, and what it found.
 *
 * warm.c queues warms and runs each on a worker thread through
 * prov_warm_run(); the steps report progress with the prov_job_* calls,
 * which take the provisioner's lock for a moment and wake every waiter. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "provision/prov-internal.h"

typedef struct prov_job {
        ts_prov *p;
        prov_warm *w;
        ts_ctrd *c;
        char lease[64];        /* the warm's lease: holds everything it makes */
        /* The request, owned by the warm. */
        const char *name;      /* pull: the normalised reference */
        const char *platform;  /* normalised "os/arch[/variant]" */
        bool default_platform; /* platform is the host's */
        bool plain_http;
        const char *username, *password;
        const void *ca_pem;
        size_t ca_pem_len;
        int import_fd;         /* import: the tarball; -1 for a pull */
        const char *import_path;
        const char *import_name; /* import: NULL means the tarball's own names */
        const char *expected_digest; /* pull: what the reference must resolve to; NULL: any */
        const ts_prov_limits *limits; /* pull: manifest limits; NULL: none */
        bool resumed; /* queued again at start, after a stop interrupted it */
} prov_job;

/* True once the provisioner is stopping: a step returns -ECANCELED soon. */
bool prov_job_cancelled(const prov_job *j);

void prov_job_set_state(prov_job *j, ts_prov_warm_state state);

/* The blobs the warm fetches, in order (digest, size): replaces the list. */
int prov_job_set_blobs(prov_job *j, char *const *digests, const int64_t *sizes, size_t n);

/* Blob i has done bytes of its total, or was found present (cached). */
void prov_job_blob_progress(prov_job *j, size_t i, uint64_t done, bool cached);

/* Unpacking layer (from 1) of layers. */
void prov_job_set_layer(prov_job *j, unsigned layer, unsigned layers);

/* The image's target digest, once resolved. */
void prov_job_set_digest(prov_job *j, const char *digest);

/* What a warm learned of the image it publishes. */
typedef struct prov_docs {
        char *name;                /* the image record's name */
        ts_ctrd_descriptor target; /* what the record points at: index or manifest */
        char manifest[TS_DIGEST_MAX];
        int64_t manifest_size;
        ts_oci_manifest *m;
        ts_oci_config *cfg;
} prov_docs;

void prov_docs_done(prov_docs *d);

/* ---- the content store (content.c) ---- */

/* The ingest ref containerd's client uses: "<kind>-<digest>". */
void prov_ingest_ref(const char *kind, const char *digest, char *buf, size_t len);

/* Writes a whole buffer as the blob digest (ref names the ingest) under the
 * job's lease, with labels; a blob stored already counts as written.
 * Returns 0 or -errno (-EBADMSG: the bytes are not digest). */
int prov_store_bytes(prov_job *j, const char *ref, const char *digest, const void *p, size_t n,
                     char *const *labels, ts_error **err);

/* Labels the blob digest with its children, as containerd's client does
 * (what keeps them once the lease is gone): <prefix><i> = children[i] and,
 * when config is not NULL, containerd.io/gc.ref.content.config = config. */
int prov_label_children(prov_job *j, const char *digest, const char *prefix,
                        const ts_oci_descriptor *children, size_t n, const char *config,
                        ts_error **err);

/* ---- the image's documents (docs.c) ---- */

/* Where a pull's blobs come from: one repository of one registry. */
typedef struct prov_source {
        struct ts_registry *reg;
        struct ts_ref *ref;
        char *repo;      /* path in the registry: "library/alpine" */
        char *labels[3]; /* containerd.io/distribution.source.<host> = repo */
        char *label_key;
} prov_source;

/* Loads the documents of the image target names for the job's platform:
 * the target (index or manifest), the manifest, the config; each from the
 * content store when it is there, else from src (NULL: the content store
 * only) and stored. Labels each parent with its children. Fills d (name is
 * copied). Returns 0, -ENOENT (a document is missing), -EBADMSG (one does
 * not parse), the errors of the platform choice, or src's errors. */
int prov_docs_load(prov_job *j, prov_source *src, const ts_oci_descriptor *target,
                   const char *name, prov_docs *d, ts_error **err);

/* ---- the steps ---- */

/* Pulls j->name from its registry into the content store and unpacks it:
 * the whole warm of a reference. Returns 0 or -errno. */
int prov_pull(prov_job *j, ts_error **err);

/* The same from the tarball j->import_fd. */
int prov_import(prov_job *j, ts_error **err);


/* Waits until layer i of the manifest is in the content store (or failed).
 * NULL when every layer is there already. */
typedef int (*prov_layer_wait_fn)(void *userdata, size_t i, ts_error **err);

/* Unpacks the manifest's layers into the snapshotter layer by layer (the
 * chain's ids), as containerd's own unpacker does (each layer's snapshot is
 * prepared before its blob is waited for), then publishes the image record.
 * Returns 0 or -errno; nothing is published on failure. */
int prov_unpack_and_publish(prov_job *j, const prov_docs *d, prov_layer_wait_fn wait,
                            void *userdata, ts_error **err);

/* -EBADMSG naming both digests when the job expects another digest than
 * target (what its reference resolved to); else 0. */
int prov_job_check_target(const prov_job *j, const char *target, ts_error **err);
