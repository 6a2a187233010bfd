/* What images take all together: images share blobs and snapshots (a
 * prepared image shares all of its user's), so totals count each distinct
 * blob and snapshot once. */
#include "prov-internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/strv.h"
#include "ctrd/content.h"
#include "ctrd/images.h"
#include "ctrd/snapshots.h"

/* Sorts v and drops repeats. */
static void uniq(char **v) {
        size_t n = ts_strv_length(v), k = 0;
        if (!v)
                return;
        qsort(v, n, sizeof(char *), ts_strv_cmp);
        for (size_t i = 0; i < n; i++) {
                if (k && strcmp(v[k - 1], v[i]) == 0) {
                        free(v[i]);
                        continue;
                }
                v[k++] = v[i];
        }
        v[k] = NULL;
}

static int collect(const prov_chain *ch, char ***blobs, char ***snaps) {
        int r = ts_strv_push(blobs, ch->target);
        if (r >= 0 && strcmp(ch->manifest, ch->target) != 0)
                r = ts_strv_push(blobs, ch->manifest);
        if (r >= 0)
                r = ts_strv_push(blobs, ch->config);
        for (size_t i = 0; r >= 0 && i < ch->n_layers; i++)
                if ((r = ts_strv_push(blobs, ch->layer_digests[i])) >= 0)
                        r = ts_strv_push(snaps, ch->chain_ids[i]);
        return r;
}

void prov_chains_totals(ts_prov *p, ts_ctrd *c, const prov_chain *const *chains, size_t n,
                        uint64_t *ret_content, uint64_t *ret_pool) {
        _cleanup_strv_free_ char **blobs = NULL, **snaps = NULL;
        uint64_t content = 0, pool = 0;
        int r = 0;
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = collect(chains[i], &blobs, &snaps);
        uniq(blobs);
        uniq(snaps);
        for (char **d = blobs; r >= 0 && d && *d; d++) {
                ts_ctrd_blob b = { 0 };
                if (ts_ctrd_content_info(c, *d, &b, NULL) >= 0 && b.size > 0)
                        content += (uint64_t) b.size;
                ts_ctrd_blob_done(&b);
        }
        for (char **s = snaps; r >= 0 && s && *s; s++) {
                int64_t size = 0, inodes = 0;
                if (ts_ctrd_snapshot_usage(c, p->snapshotter, *s, &size, &inodes, NULL) >= 0 && size > 0)
                        pool += (uint64_t) size;
        }
        *ret_content = content;
        *ret_pool = pool;
}

int ts_prov_image_totals(ts_prov *p, uint64_t *ret_content, uint64_t *ret_pool, ts_error **err) {
        ts_ctrd *c = NULL;
        ts_ctrd_image *v = NULL;
        size_t n = 0;
        int r = prov_images_all(p, &c, &v, &n, err);
        if (r < 0)
                return r;
        const prov_chain **chains = calloc(n ? n : 1, sizeof(*chains));
        size_t k = 0;
        for (size_t i = 0; chains && i < n; i++)
                if (prov_chain_get(p, &v[i].target, ts_ctrd_label(v[i].labels, LABEL_IMAGE_PLATFORM),
                                   &chains[k], NULL) >= 0)
                        k++;
        ts_ctrd_image_list_free(v, n);
        if (!chains)
                return -ENOMEM;
        prov_chains_totals(p, c, chains, k, ret_content, ret_pool);
        free(chains);
        return 0;
}
