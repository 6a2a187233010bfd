/* Writing into containerd's content store the way a warm needs it: whole
 * small documents, and the gc labels that tie a parent to its children. */
#include "warm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/strv.h"
#include "ctrd/content.h"
#include "ctrd/writer.h"

void prov_ingest_ref(const char *kind, const char *digest, char *buf, size_t len) {
        snprintf(buf, len, "%s-%s", kind, digest);
}

int prov_store_bytes(prov_job *j, const char *ref, const char *digest, const void *p, size_t n,
                     char *const *labels, ts_error **err) {
        ts_ctrd_writer *w = NULL;
        int r = ts_ctrd_writer_open(j->c, j->lease, ref, (int64_t) n, digest, &w, err);
        if (r != 0)
                return r < 0 ? r : 0; /* 1: stored already */
        int64_t off = ts_ctrd_writer_offset(w);
        if (off < 0 || (uint64_t) off > n)
                off = 0;
        r = ts_ctrd_writer_write(w, (const uint8_t *) p + off, n - (size_t) off, err);
        if (r >= 0)
                r = ts_ctrd_writer_commit(w, labels, err);
        ts_ctrd_writer_free(w);
        return r < 0 ? r : 0;
}

int prov_label_children(prov_job *j, const char *digest, const char *prefix,
                        const ts_oci_descriptor *children, size_t n, const char *config,
                        ts_error **err) {
        _cleanup_strv_free_ char **labels = NULL;
        int r = 0;
        if (config && (r = ts_strv_push(&labels, LABEL_GC_CONFIG)) >= 0)
                r = ts_strv_push(&labels, config);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                char key[96];
                snprintf(key, sizeof key, "%s%zu", prefix, i);
                if ((r = ts_strv_push(&labels, key)) >= 0)
                        r = ts_strv_push(&labels, children[i].digest);
        }
        if (r < 0)
                return r;
        return ts_ctrd_content_update_labels(j->c, digest, labels, NULL, err);
}
