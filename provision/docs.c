/* An image's documents: the target a name points at (an index or a
 * manifest), the manifest for the job's platform, and the config; read
 * from the content store when they are there (a warm that ran before, an
 * import), else fetched from the registry and stored under the job's lease
 * with the gc labels containerd's own client sets on each parent. */
#include "warm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "ctrd/content.h"
#include "ctrd/leases.h"
#include "oci/platform.h"
#include "registry/registry.h"

/* Reads a document from the content store: 0, 1 when it is not there and
 * s can fetch it, or -errno (-ENOENT when it is not there and s is NULL). */
static int read_stored(prov_job *j, prov_source *s, const char *digest, uint8_t **ret,
                       size_t *ret_len, ts_error **err) {
        /* Leased first: what an earlier warm left may otherwise be collected
         * between this read and the end of the warm. */
        int r = ts_ctrd_lease_add_resource(j->c, j->lease, TS_CTRD_RESOURCE_CONTENT, digest, err);
        if (r < 0)
                return r;
        ts_error *e = NULL;
        r = ts_ctrd_content_read(j->c, digest, TS_OCI_DOCUMENT_MAX, ret, ret_len, &e);
        if (r == -ENOENT && s) {
                e = ts_error_free(e);
                return 1;
        }
        return r < 0 ? ts_error_move(err, &e) : 0;
}

/* A manifest or index: from the content store when it is there, else from
 * the registry (and stored). */
static int fetch_doc(prov_job *j, prov_source *s, const ts_oci_descriptor *d, const char *kind,
                     uint8_t **ret, size_t *ret_len, ts_error **err) {
        int r = read_stored(j, s, d->digest, ret, ret_len, err);
        if (r <= 0)
                return r;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        r = ts_registry_fetch_manifest(s->reg, s->repo, d, &buf, &len, err);
        char ref[128];
        prov_ingest_ref(kind, d->digest, ref, sizeof ref);
        if (r >= 0)
                r = prov_store_bytes(j, ref, d->digest, buf, len, s->labels, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

/* The manifest for the job's platform: the target itself, or the index
 * entry containerd would pick (the index labelled with all its manifests). */
static int resolve_manifest(prov_job *j, prov_source *s, const ts_oci_descriptor *target,
                            prov_docs *d, uint8_t **ret, size_t *ret_len, ts_error **err) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        bool index = ts_oci_media_kind(target->media_type) == TS_OCI_KIND_INDEX;
        int r = fetch_doc(j, s, target, index ? "index" : "manifest", &buf, &len, err);
        if (r < 0 || !index) {
                snprintf(d->manifest, sizeof d->manifest, "%s", target->digest);
                d->manifest_size = target->size;
                *ret = TAKE_PTR(buf);
                *ret_len = len;
                return r;
        }
        ts_oci_index *ix = NULL;
        _cleanup_platform_ ts_oci_platform *want = NULL;
        const ts_oci_descriptor *md = NULL;
        if ((r = ts_oci_index_parse(buf, len, &ix, err)) >= 0 &&
            (r = ts_oci_platform_parse(j->platform, &want, err)) >= 0 &&
            (r = ts_oci_index_select(ix, want, &md, err)) >= 0 &&
            (r = prov_label_children(j, target->digest, LABEL_GC_MANIFEST, ix->manifests,
                                ix->n_manifests, NULL, err)) >= 0) {
                snprintf(d->manifest, sizeof d->manifest, "%s", md->digest);
                d->manifest_size = md->size;
                r = fetch_doc(j, s, md, "manifest", ret, ret_len, err);
        }
        ts_oci_index_free(ix);
        return r;
}

/* The config: small, fetched whole (the registry checks its digest). */
static int fetch_config(prov_job *j, prov_source *s, const ts_oci_descriptor *d, ts_oci_config **ret,
                        ts_error **err) {
        if (d->size < 0 || d->size > TS_OCI_DOCUMENT_MAX)
                return ts_error_setf_plain(err, EFBIG, "config %s: %lld bytes is over the limit of %d",
                                           d->digest, (long long) d->size, TS_OCI_DOCUMENT_MAX);
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        int r = read_stored(j, s, d->digest, &buf, &len, err);
        if (r == 1) {
                _cleanup_buf_ ts_buf m = { .max = (size_t) d->size };
                char ref[128];
                prov_ingest_ref("config", d->digest, ref, sizeof ref);
                r = ts_registry_fetch_blob(s->reg, s->repo, d, 0, ts_buf_sink, &m, err);
                if (r >= 0 && !(buf = ts_buf_steal(&m, &len)))
                        r = -ENOMEM;
                if (r >= 0)
                        r = prov_store_bytes(j, ref, d->digest, buf, len, s->labels, err);
        }
        if (r < 0)
                return r;
        return ts_oci_config_parse(buf, len, ret, err);
}

static int docs_target(prov_docs *d, const ts_oci_descriptor *t, const char *name) {
        d->target.media_type = strdup(t->media_type);
        d->target.digest = strdup(t->digest);
        d->target.size = t->size;
        d->name = strdup(name);
        return d->target.media_type && d->target.digest && d->name ? 0 : -ENOMEM;
}

int prov_docs_load(prov_job *j, prov_source *src, const ts_oci_descriptor *target,
                   const char *name, prov_docs *d, ts_error **err) {
        int r = docs_target(d, target, name);
        if (r < 0)
                return r;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        if ((r = resolve_manifest(j, src, target, d, &buf, &len, err)) < 0 ||
            (r = ts_oci_manifest_parse(buf, len, &d->m, err)) < 0)
                return r;
        if ((r = prov_label_children(j, d->manifest, LABEL_GC_LAYER, d->m->layers, d->m->n_layers,
                                     d->m->config.digest, err)) < 0)
                return r;
        return fetch_config(j, src, &d->m->config, &d->cfg, err);
}
