/* Unpacking a manifest's layers into the snapshotter through containerd,
 * the way containerd's own unpacker does (so `ctr` and containerd's GC see
 * exactly what a `ctr image pull --snapshotter thinsnap` leaves), then the
 * image record. For layer i: parent = chain id of layers 0..i-1; a chain
 * id that exists is skipped; else Prepare "extract-<nanos>-<random>
 * <chain id>", Diff.Apply, check the applied digest against the diff_id,
 * Commit under the chain id. */
#include "warm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strv.h"
#include "ctrd/content.h"
#include "ctrd/diff.h"
#include "ctrd/images.h"
#include "ctrd/leases.h"
#include "ctrd/snapshots.h"

#define PREPARE_TRIES 3
#define INHERITED_PREFIX "containerd.io/snapshot/"

static void extract_key(const char *chain_id, char *buf, size_t len) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint8_t rnd[6] = { 0 };
        if (getrandom(rnd, sizeof rnd, 0) < 0)
                memcpy(rnd, &ts.tv_nsec, sizeof rnd < sizeof ts.tv_nsec ? sizeof rnd : sizeof ts.tv_nsec);
        snprintf(buf, len, "extract-%ld-%02x%02x%02x%02x%02x%02x %s", ts.tv_nsec, rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5], chain_id);
}

/* The snapshot's labels: the layer's containerd.io/snapshot/ annotations
 * and containerd.io/snapshot.ref = chain id. */
static int snapshot_labels(const ts_oci_descriptor *layer, const char *chain_id, char ***ret) {
        char **labels = NULL;
        int r = 0;
        for (char *const *a = layer->annotations; r >= 0 && a && a[0] && a[1]; a += 2)
                if (strncmp(a[0], INHERITED_PREFIX, strlen(INHERITED_PREFIX)) == 0 &&
                    (r = ts_strv_push(&labels, a[0])) >= 0)
                        r = ts_strv_push(&labels, a[1]);
        if (r >= 0 && (r = ts_strv_push(&labels, LABEL_SNAPSHOT_REF)) >= 0)
                r = ts_strv_push(&labels, chain_id);
        if (r < 0) {
                ts_strv_free(labels);
                return r;
        }
        *ret = labels;
        return 0;
}

/* Whether the chain id is a snapshot already; leased first, so one an
 * earlier warm left is not collected while this one relies on it. */
static int exists(prov_job *j, const char *chain_id, ts_error **err) {
        char type[sizeof(TS_CTRD_RESOURCE_SNAPSHOTS) + 64];
        snprintf(type, sizeof type, TS_CTRD_RESOURCE_SNAPSHOTS "%s", j->p->snapshotter);
        int r = ts_ctrd_lease_add_resource(j->c, j->lease, type, chain_id, err);
        if (r < 0)
                return r;
        ts_ctrd_snapshot s = { 0 };
        ts_error *e = NULL;
        r = ts_ctrd_snapshot_stat(j->c, j->p->snapshotter, chain_id, &s, &e);
        ts_ctrd_snapshot_done(&s);
        if (r == -ENOENT) {
                e = ts_error_free(e);
                return 0;
        }
        return r < 0 ? ts_error_move(err, &e) : 1;
}

/* Prepares the extraction snapshot; 0 with *ret mounts, or 1 when the chain
 * id appeared meanwhile (another unpack made it). */
static int prepare(prov_job *j, const char *parent, const char *chain_id, char *const *labels,
                   char *key, size_t key_len, ts_ctrd_mounts **ret, ts_error **err) {
        for (int try = 1;; try++) {
                extract_key(chain_id, key, key_len);
                ts_error *e = NULL;
                int r = ts_ctrd_snapshot_prepare(j->c, j->lease, j->p->snapshotter, key, parent, labels,
                                                 ret, &e);
                if (r != -EEXIST || try == PREPARE_TRIES)
                        return r < 0 ? ts_error_move(err, &e) : 0;
                e = ts_error_free(e);
                if ((r = exists(j, chain_id, err)) != 0)
                        return r;
        }
}

static void drop(prov_job *j, const char *key) {
        ts_error *e = NULL;
        if (ts_ctrd_snapshot_remove(j->c, j->p->snapshotter, key, &e) < 0)
                log_warn("cannot remove extraction snapshot %s: %s", key, e->msg);
        e = ts_error_free(e);
}

static int apply(prov_job *j, const ts_oci_descriptor *layer, const ts_ctrd_mounts *m,
                 const char *diff_id, ts_error **err) {
        ts_ctrd_descriptor d = {
                .media_type = layer->media_type,
                .digest = layer->digest,
                .size = layer->size,
                .annotations = layer->annotations,
        };
        ts_ctrd_descriptor applied = { 0 };
        int r = ts_ctrd_diff_apply(j->c, &d, m, NULL, 0, &applied, err);
        if (r >= 0 && (!applied.digest || strcmp(applied.digest, diff_id) != 0))
                r = ts_error_setf_plain(err, EBADMSG, "layer %s unpacks to %s, not its diff_id %s",
                                        layer->digest, applied.digest ? applied.digest : "nothing",
                                        diff_id);
        ts_ctrd_descriptor_done(&applied);
        return r;
}

static int label_blob(prov_job *j, const char *digest, const char *key, const char *value,
                      ts_error **err) {
        char *labels[] = { (char *) key, (char *) value, NULL };
        return ts_ctrd_content_update_labels(j->c, digest, labels, NULL, err);
}

/* A layer's blob, for which the unpack waits once its snapshot is prepared
 * (as containerd's own unpacker does): the Prepare overlaps the download. */
typedef struct layer_blob {
        prov_layer_wait_fn wait; /* NULL: the blob is in already */
        void *userdata;
        size_t i;
} layer_blob;

static int unpack_layer(prov_job *j, const ts_oci_descriptor *layer, const layer_blob *blob,
                        const char *parent, const char *chain_id, const char *diff_id,
                        ts_error **err) {
        _cleanup_strv_free_ char **labels = NULL;
        ts_ctrd_mounts *m = NULL;
        char key[256];
        int r = snapshot_labels(layer, chain_id, &labels);
        if (r < 0)
                return r;
        int64_t t0 = ts_clock_mono_ns();
        if ((r = prepare(j, parent, chain_id, labels, key, sizeof key, &m, err)) != 0)
                return r > 0 ? 0 : r;
        int64_t t1 = ts_clock_mono_ns();
        if (blob->wait)
                r = blob->wait(blob->userdata, blob->i, err);
        int64_t t2 = ts_clock_mono_ns();
        if (r >= 0)
                r = apply(j, layer, m, diff_id, err);
        ts_ctrd_mounts_free(m);
        int64_t t3 = ts_clock_mono_ns();
        if (r >= 0) {
                ts_error *e = NULL;
                r = ts_ctrd_snapshot_commit(j->c, j->lease, j->p->snapshotter, chain_id, key, labels, &e);
                if (r == -EEXIST) { /* another unpack committed it first */
                        e = ts_error_free(e);
                        drop(j, key);
                        return 0;
                }
                if (r < 0)
                        ts_error_move(err, &e);
        }
        if (r < 0) {
                drop(j, key);
                return r;
        }
        log_debug("layer %s unpacked: prepare %.1f ms, then its blob %.1f ms, apply %.1f ms, "
                  "commit %.1f ms", layer->digest, (double) (t1 - t0) / 1e6, (double) (t2 - t1) / 1e6,
                  (double) (t3 - t2) / 1e6, (double) (ts_clock_mono_ns() - t3) / 1e6);
        /* Set once the apply has verified the uncompressed digest. */
        return label_blob(j, layer->digest, LABEL_UNCOMPRESSED, diff_id, err);
}

/* The image record name -> target, created or replaced. */
static int publish(prov_job *j, const char *name, const ts_ctrd_descriptor *target, ts_error **err) {
        char *labels[] = { LABEL_IMAGE_PLATFORM, (char *) j->platform, NULL };
        ts_ctrd_image img = {
                .name = (char *) name,
                .labels = j->default_platform ? NULL : labels,
                .target = *target,
        };
        return prov_image_put(j->c, &img, err);
}

/* Remembers the chain the warm just made, so the first VM cut from it
 * reads nothing back. */
static int remember(prov_job *j, const prov_docs *d, char (*chain)[TS_DIGEST_MAX]) {
        const ts_oci_manifest *m = d->m;
        prov_chain *ch = calloc(1, sizeof(*ch));
        if (!ch || !(ch->platform = strdup(j->platform)) ||
            !(ch->chain_ids = calloc(m->n_layers ? m->n_layers : 1, TS_DIGEST_MAX))) {
                prov_chain_free(ch);
                return -ENOMEM;
        }
        snprintf(ch->target, sizeof ch->target, "%s", d->target.digest);
        snprintf(ch->manifest, sizeof ch->manifest, "%s", d->manifest);
        snprintf(ch->config, sizeof ch->config, "%s", m->config.digest);
        ch->content_bytes = (uint64_t) d->target.size + (uint64_t) m->config.size;
        if (strcmp(d->manifest, d->target.digest) != 0)
                ch->content_bytes += (uint64_t) d->manifest_size;
        for (size_t i = 0; i < m->n_layers; i++) {
                memcpy(ch->chain_ids[i], chain[i], TS_DIGEST_MAX);
                ch->content_bytes += (uint64_t) m->layers[i].size;
                if (ts_strv_push(&ch->layer_digests, m->layers[i].digest) < 0) {
                        prov_chain_free(ch);
                        return -ENOMEM;
                }
        }
        ch->n_layers = m->n_layers;
        prov_chain_add(j->p, ch);
        return 0;
}

static int unpack_all(prov_job *j, const ts_oci_manifest *m, const ts_oci_config *cfg,
                      char (*chain)[TS_DIGEST_MAX], prov_layer_wait_fn wait, void *userdata,
                      ts_error **err) {
        size_t n = m->n_layers;
        for (size_t i = 0; i < n; i++) {
                if (prov_job_cancelled(j))
                        return -ECANCELED;
                prov_job_set_layer(j, (unsigned) i + 1, (unsigned) n);
                layer_blob blob = { wait, userdata, i };
                int r = exists(j, chain[i], err);
                if (r == 0)
                        r = unpack_layer(j, &m->layers[i], &blob, i ? chain[i - 1] : NULL, chain[i],
                                         cfg->diff_ids[i], err);
                if (r < 0)
                        return ts_error_prefix(err, r, "layer %zu of %zu (%s)", i + 1, n,
                                               m->layers[i].digest);
        }
        /* Every blob must be in before the image is complete, also those of
         * layers that were unpacked already. */
        for (size_t i = 0; wait && i < n; i++) {
                int r = wait(userdata, i, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

void prov_docs_done(prov_docs *d) {
        free(d->name);
        ts_ctrd_descriptor_done(&d->target);
        ts_oci_manifest_free(d->m);
        ts_oci_config_free(d->cfg);
        *d = (prov_docs) { 0 };
}

int prov_unpack_and_publish(prov_job *j, const prov_docs *d, prov_layer_wait_fn wait,
                            void *userdata, ts_error **err) {
        const ts_oci_manifest *m = d->m;
        size_t n = m->n_layers;
        if (d->cfg->n_diff_ids != n)
                return ts_error_setf_plain(err, EBADMSG, "config %s has %zu diff_ids for %zu layers",
                                           m->config.digest, d->cfg->n_diff_ids, n);
        if (n == 0)
                return ts_error_setf_plain(err, EINVAL, "image %s has no layers", d->name);
        _cleanup_free_ char (*chain)[TS_DIGEST_MAX] = calloc(n, TS_DIGEST_MAX);
        if (!chain)
                return -ENOMEM;
        int r = ts_digest_chain_ids(d->cfg->diff_ids, n, chain);
        if (r >= 0)
                r = unpack_all(j, m, d->cfg, chain, wait, userdata, err);
        if (r < 0)
                return prov_explain_full_pool(j->p, r, err);
        char key[sizeof(LABEL_GC_SNAPSHOT) + 64];
        snprintf(key, sizeof key, LABEL_GC_SNAPSHOT "%s", j->p->snapshotter);
        if ((r = label_blob(j, m->config.digest, key, chain[n - 1], err)) < 0 ||
            (r = publish(j, d->name, &d->target, err)) < 0)
                return r;
        return remember(j, d, chain);
}
