/* Prepared images as a catalogue: their records' names, the limits they
 * are made under, listing the complete ones, and untagging. */
#include "prov-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/strv.h"
#include "ctrd/content.h"
#include "ctrd/images.h"
#include "ctrd/snapshots.h"

int prov_prepared_name(const char *user_digest, char *buf, size_t len, ts_error **err) {
        if (ts_digest_validate(user_digest) < 0)
                return ts_error_setf_plain(err, EINVAL, "digest '%.80s' is not sha256: and 64 lowercase "
                                                        "hex digits",
                                           user_digest ? user_digest : "");
        snprintf(buf, len, TS_PROV_PREPARED_PREFIX "%s", ts_digest_hex(user_digest));
        return 0;
}

/* ---- limits ---- */

static uint64_t lower(uint64_t own, uint64_t req) {
        return req && req < own ? req : own;
}

void prov_limits_defaults(const ts_prov_limits *cfg, ts_prov_limits *ret) {
        *ret = (ts_prov_limits) {
                .max_layers = cfg->max_layers ? cfg->max_layers : TS_PROV_DEFAULT_MAX_LAYERS,
                .max_compressed_bytes = cfg->max_compressed_bytes ? cfg->max_compressed_bytes
                                                                  : TS_PROV_DEFAULT_MAX_COMPRESSED_BYTES,
                .max_unpacked_bytes = cfg->max_unpacked_bytes ? cfg->max_unpacked_bytes
                                                              : TS_PROV_DEFAULT_MAX_UNPACKED_BYTES,
                .max_inodes = cfg->max_inodes ? cfg->max_inodes : TS_PROV_DEFAULT_MAX_INODES,
                .max_agent_bytes = cfg->max_agent_bytes ? cfg->max_agent_bytes
                                                        : TS_PROV_DEFAULT_MAX_AGENT_BYTES,
        };
}

void prov_limits_merge(const ts_prov_limits *own, const ts_prov_limits *req, ts_prov_limits *ret) {
        *ret = *own;
        if (!req)
                return;
        ret->max_layers = (unsigned) lower(own->max_layers, req->max_layers);
        ret->max_compressed_bytes = lower(own->max_compressed_bytes, req->max_compressed_bytes);
        ret->max_unpacked_bytes = lower(own->max_unpacked_bytes, req->max_unpacked_bytes);
        ret->max_inodes = lower(own->max_inodes, req->max_inodes);
        ret->max_agent_bytes = lower(own->max_agent_bytes, req->max_agent_bytes);
}

int prov_limits_check_manifest(const ts_prov_limits *lim, const ts_oci_manifest *m, ts_error **err) {
        if (!lim)
                return 0;
        if (m->n_layers > lim->max_layers)
                return ts_error_setf_plain(err, EDQUOT, "the image has %zu layers, over the limit of %u "
                                                        "(max_layers)",
                                           m->n_layers, lim->max_layers);
        uint64_t bytes = 0;
        for (size_t i = 0; i < m->n_layers; i++)
                bytes += (uint64_t) m->layers[i].size;
        if (bytes > lim->max_compressed_bytes)
                return ts_error_setf_plain(err, EDQUOT, "the image's layers are %llu bytes compressed, "
                                                        "over the limit of %llu (max_compressed_bytes)",
                                           (unsigned long long) bytes,
                                           (unsigned long long) lim->max_compressed_bytes);
        return 0;
}

/* ---- describing a record ---- */

ts_prov_prepared *ts_prov_prepared_free(ts_prov_prepared *x) {
        if (!x)
                return NULL;
        free(x->user_digest);
        free(x->name);
        free(x->source);
        free(x->agent_digest);
        free(x->guest_path);
        free(x->digest);
        free(x->chain_id);
        free(x);
        return NULL;
}

void ts_prov_prepared_list_free(ts_prov_prepared **v, size_t n) {
        for (size_t i = 0; v && i < n; i++)
                ts_prov_prepared_free(v[i]);
        free(v);
}

static char *dup_label(char *const *labels, const char *key) {
        const char *v = ts_ctrd_label(labels, key);
        return strdup(v ? v : "");
}

/* Everything the record's chain needs is there: its documents, every
 * layer's blob and the top snapshot. -EBADMSG / -ENOENT saying what is
 * missing. */
static int check_complete(ts_prov *p, ts_ctrd *c, const ts_ctrd_image *rec, const prov_chain **ret,
                          ts_error **err) {
        const char *user = ts_ctrd_label(rec->labels, LABEL_PREP_USER_DIGEST);
        char want[PROV_PREPARED_NAME_MAX];
        if (!user || prov_prepared_name(user, want, sizeof want, NULL) < 0)
                return ts_error_setf_plain(err, EBADMSG, "no valid " LABEL_PREP_USER_DIGEST " label");
        if (strcmp(want, rec->name) != 0)
                return ts_error_setf_plain(err, EBADMSG, "its name is not that of its user digest %s",
                                           user);
        const prov_chain *ch = NULL;
        int r = prov_chain_get(p, &rec->target, NULL, &ch, err);
        if (r >= 0 && ch->n_layers == 0)
                r = ts_error_setf_plain(err, EBADMSG, "its image has no layers");
        for (size_t i = 0; r >= 0 && i < ch->n_layers; i++) {
                ts_ctrd_blob b = { 0 };
                r = ts_ctrd_content_info(c, ch->layer_digests[i], &b, err);
                ts_ctrd_blob_done(&b);
        }
        ts_ctrd_snapshot s = { 0 };
        if (r >= 0 && (r = ts_ctrd_snapshot_stat(c, p->snapshotter, ch->chain_ids[ch->n_layers - 1], &s,
                                                 err)) >= 0 &&
            s.kind != TS_CTRD_SNAPSHOT_COMMITTED)
                r = ts_error_setf_plain(err, EBADMSG, "its top snapshot %s is not committed", s.name);
        ts_ctrd_snapshot_done(&s);
        if (r >= 0)
                *ret = ch;
        return r;
}

static int describe(ts_prov *p, const ts_ctrd_image *rec, const prov_chain *ch, ts_prov_prepared **ret) {
        ts_prov_prepared *x = calloc(1, sizeof(*x));
        if (!x)
                return -ENOMEM;
        const char *ep = ts_ctrd_label(rec->labels, LABEL_PREP_ENTRYPOINT);
        x->entrypoint = ep && strcmp(ep, "agent") == 0 ? TS_PROV_ENTRYPOINT_AGENT : TS_PROV_ENTRYPOINT_KEEP;
        x->layers = (unsigned) ch->n_layers;
        x->created_ns = rec->created_ns;
        x->updated_ns = rec->updated_ns;
        x->user_digest = dup_label(rec->labels, LABEL_PREP_USER_DIGEST);
        x->source = dup_label(rec->labels, LABEL_PREP_SOURCE);
        x->agent_digest = dup_label(rec->labels, LABEL_PREP_AGENT);
        x->guest_path = dup_label(rec->labels, LABEL_PREP_GUEST_PATH);
        x->name = strdup(rec->name);
        x->digest = strdup(rec->target.digest);
        x->chain_id = strdup(ch->chain_ids[ch->n_layers - 1]);
        if (!x->user_digest || !x->source || !x->agent_digest || !x->guest_path || !x->name ||
            !x->digest || !x->chain_id) {
                ts_prov_prepared_free(x);
                return -ENOMEM;
        }
        /* The figures ts_prov_image_get gives, so both views agree. */
        ts_prov_image *img = NULL;
        if (ts_prov_image_get(p, rec->name, &img, NULL) >= 0) {
                x->content_bytes = img->content_bytes;
                x->pool_bytes = img->pool_bytes;
        }
        ts_prov_image_free(img);
        *ret = x;
        return 0;
}

int prov_prepared_describe(ts_prov *p, ts_ctrd *c, const ts_ctrd_image *rec, const prov_chain **ret_chain,
                           ts_prov_prepared **ret, ts_error **err) {
        const prov_chain *ch = NULL;
        int r = check_complete(p, c, rec, &ch, err);
        if (r >= 0)
                r = describe(p, rec, ch, ret);
        if (r >= 0 && ret_chain)
                *ret_chain = ch;
        return r;
}

/* ---- the catalogue ---- */

static int by_user_digest(const void *a, const void *b) {
        const ts_prov_prepared *x = *(ts_prov_prepared *const *) a, *y = *(ts_prov_prepared *const *) b;
        return strcmp(x->user_digest, y->user_digest);
}

int ts_prov_prepared_list(ts_prov *p, ts_prov_prepared ***ret, size_t *ret_n, uint64_t *ret_content,
                          uint64_t *ret_pool, ts_error **err) {
        ts_ctrd *c = NULL;
        int r = prov_ctrd(p, &c, err);
        if (r < 0)
                return r;
        char *filters[] = { "name~=\"^prepared[.]hpcc[.]local/img:\"", NULL };
        ts_ctrd_image *v = NULL;
        size_t n = 0;
        if ((r = ts_ctrd_image_list(c, filters, &v, &n, err)) < 0)
                return r;
        ts_prov_prepared **out = calloc(n ? n : 1, sizeof(*out));
        const prov_chain **chains = calloc(n ? n : 1, sizeof(*chains));
        size_t n_out = 0;
        r = out && chains ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                ts_error *e = NULL;
                int q = prov_prepared_describe(p, c, &v[i], &chains[n_out], &out[n_out], &e);
                if (q == -ENOMEM)
                        r = q;
                else if (q < 0)
                        log_warn("prepared image %s left out: %s", v[i].name, ts_error_message(e, q));
                else
                        n_out++;
                ts_error_free(e);
        }
        ts_ctrd_image_list_free(v, n);
        if (r >= 0 && (ret_content || ret_pool)) {
                uint64_t content = 0, pool = 0;
                prov_chains_totals(p, c, chains, n_out, &content, &pool);
                if (ret_content)
                        *ret_content = content;
                if (ret_pool)
                        *ret_pool = pool;
        }
        free(chains);
        if (r < 0) {
                ts_prov_prepared_list_free(out, n_out);
                return ts_error_set(err, r, "list prepared images");
        }
        qsort(out, n_out, sizeof(*out), by_user_digest);
        *ret = out;
        *ret_n = n_out;
        return 0;
}

int ts_prov_unprepare(ts_prov *p, const char *user_digest, bool *ret_existed, ts_error **err) {
        char name[PROV_PREPARED_NAME_MAX];
        ts_ctrd *c = NULL;
        int r = prov_prepared_name(user_digest, name, sizeof name, err);
        if (r >= 0)
                r = prov_ctrd(p, &c, err);
        if (r < 0)
                return r;
        ts_error *e = NULL;
        r = ts_ctrd_image_delete(c, name, true, &e);
        if (r < 0 && r != -ENOENT)
                return ts_error_move(err, &e);
        ts_error_free(e);
        if (r >= 0)
                log_info("prepared image %s removed", name);
        if (ret_existed)
                *ret_existed = r >= 0;
        return 0;
}
