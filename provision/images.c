/* Images: naming them (reference, digest, digest prefix), what their
 * target resolves to (the chain every VM's device sits on), and the image
 * calls of the API. */
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
#include "oci/platform.h"
#include "oci/ref.h"

#define DIGEST_PREFIX_MIN 4

void prov_image_done(prov_image *img) {
        free(img->name);
        ts_ctrd_descriptor_done(&img->target);
        ts_strv_free(img->labels);
        *img = (prov_image) { 0 };
}

static int image_from(const ts_ctrd_image *in, prov_image *ret) {
        prov_image img = { .created_ns = in->created_ns, .updated_ns = in->updated_ns };
        int r = prov_descriptor_copy(&in->target, &img.target);
        if (r >= 0 && !(img.name = strdup(in->name)))
                r = -ENOMEM;
        for (char *const *l = in->labels; r >= 0 && l && *l; l++)
                r = ts_strv_push(&img.labels, *l);
        if (r < 0) {
                prov_image_done(&img);
                return r;
        }
        *ret = img;
        return 0;
}

static bool is_hex_prefix(const char *s) {
        size_t n = strlen(s);
        return n >= DIGEST_PREFIX_MIN && n <= 64 && strspn(s, "0123456789abcdef") == n;
}

/* Picks the image whose target digest is digest, or starts with hex. */
static int find_by_digest(ts_prov *p, ts_ctrd *c, const char *digest, const char *hex,
                          prov_image *ret, ts_error **err) {
        ts_ctrd_image *v = NULL;
        size_t n = 0;
        int r = ts_ctrd_image_list(c, NULL, &v, &n, err);
        if (r < 0)
                return r;
        const ts_ctrd_image *found = NULL;
        _cleanup_strv_free_ char **others = NULL;
        for (size_t i = 0; i < n; i++) {
                const char *d = v[i].target.digest;
                bool match = digest ? strcmp(d, digest) == 0
                                    : strncmp(ts_digest_hex(d), hex, strlen(hex)) == 0;
                if (!match)
                        continue;
                if (!found || strcmp(v[i].name, found->name) < 0) {
                        if (found && strcmp(found->target.digest, d) != 0)
                                ts_strv_push(&others, found->target.digest);
                        found = &v[i];
                } else if (strcmp(found->target.digest, d) != 0)
                        ts_strv_push(&others, d);
        }
        if (!found)
                r = ts_error_setf_plain(err, ENOENT, "no image with digest %s%s", digest ? "" : "prefix ",
                                        digest ? digest : hex);
        else if (others)
                r = ts_error_setf_plain(err, EINVAL, "digest prefix %s fits several images: %s and %s",
                                        hex, found->target.digest, others[0]);
        else
                r = image_from(found, ret);
        ts_ctrd_image_list_free(v, n);
        return r;
}

static int get_by_ref(ts_ctrd *c, const char *name, bool quiet, prov_image *ret, ts_error **err) {
        _cleanup_ref_ ts_ref *ref = NULL;
        int r = ts_ref_parse(name, &ref, quiet ? NULL : err);
        if (r < 0)
                return quiet ? -ENOENT : r;
        _cleanup_free_ char *full = ts_ref_string(ref);
        if (!full)
                return -ENOMEM;
        ts_ctrd_image img = { 0 };
        ts_error *e = NULL;
        r = ts_ctrd_image_get(c, full, &img, &e);
        if (r == -ENOENT && !quiet) {
                e = ts_error_free(e);
                return ts_error_setf_plain(err, ENOENT, "image %s not found (warm it first: thinsnap "
                                                        "image pull %s)", full, name);
        }
        if (r < 0) {
                ts_error_move(quiet ? NULL : err, &e);
                return r;
        }
        r = image_from(&img, ret);
        ts_ctrd_image_done(&img);
        return r;
}

/* "prepared:sha256:<hex>": the prepared image of that user digest. */
static int get_prepared(ts_ctrd *c, const char *digest, prov_image *ret, ts_error **err) {
        char name[PROV_PREPARED_NAME_MAX];
        int r = prov_prepared_name(digest, name, sizeof name, err);
        if (r < 0)
                return r;
        ts_ctrd_image img = { 0 };
        ts_error *e = NULL;
        r = ts_ctrd_image_get(c, name, &img, &e);
        if (r == -ENOENT) {
                ts_error_free(e);
                return ts_error_setf_plain(err, ENOENT, "no prepared image of %s (prepare it first: "
                                                        "thinsnap image prepare)", digest);
        }
        if (r < 0)
                return ts_error_move(err, &e);
        r = image_from(&img, ret);
        ts_ctrd_image_done(&img);
        return r;
}

int prov_image_find(ts_prov *p, const char *name, prov_image *ret, ts_error **err) {
        ts_ctrd *c = NULL;
        int r = prov_ctrd(p, &c, err);
        if (r < 0)
                return r;
        if (strncmp(name, TS_PROV_PREPARED_FORM, strlen(TS_PROV_PREPARED_FORM)) == 0)
                return get_prepared(c, name + strlen(TS_PROV_PREPARED_FORM), ret, err);
        if (strncmp(name, TS_DIGEST_PREFIX, strlen(TS_DIGEST_PREFIX)) == 0) {
                if (ts_digest_validate(name) < 0)
                        return ts_error_setf_plain(err, EINVAL, "'%.80s' is not a sha256 digest "
                                                                "(sha256: and 64 hex digits)", name);
                return find_by_digest(p, c, name, NULL, ret, err);
        }
        if (is_hex_prefix(name)) {
                /* A name that could be either is first an image name, as docker does. */
                r = get_by_ref(c, name, true, ret, NULL);
                return r == -ENOENT ? find_by_digest(p, c, NULL, name, ret, err) : r;
        }
        return get_by_ref(c, name, false, ret, err);
}

int prov_image_put(ts_ctrd *c, const ts_ctrd_image *img, ts_error **err) {
        ts_error *e = NULL;
        int r = ts_ctrd_image_create(c, img, NULL, &e);
        if (r == -EEXIST) {
                ts_error_free(TAKE_PTR(e));
                char *fields[] = { "target", "labels", NULL };
                r = ts_ctrd_image_update(c, img, fields, NULL, &e);
                if (r == -ENOENT) { /* deleted between the two */
                        ts_error_free(TAKE_PTR(e));
                        r = ts_ctrd_image_create(c, img, NULL, &e);
                }
        }
        return r < 0 ? ts_error_move(err, &e) : 0;
}

/* ---- chains ---- */

prov_chain *prov_chain_free(prov_chain *c) {
        if (c) {
                free(c->platform);
                free(c->chain_ids);
                ts_strv_free(c->layer_digests);
                free(c);
        }
        return NULL;
}

const prov_chain *prov_chain_add(ts_prov *p, prov_chain *c) {
        pthread_mutex_lock(&p->lock);
        for (prov_chain *o = p->chains; o; o = o->next)
                if (strcmp(o->target, c->target) == 0 && strcmp(o->platform, c->platform) == 0) {
                        pthread_mutex_unlock(&p->lock);
                        prov_chain_free(c);
                        return o;
                }
        c->next = p->chains;
        p->chains = c;
        pthread_mutex_unlock(&p->lock);
        return c;
}

static const prov_chain *chain_cached(ts_prov *p, const char *target, const char *platform) {
        const prov_chain *found = NULL;
        pthread_mutex_lock(&p->lock);
        for (prov_chain *o = p->chains; o && !found; o = o->next)
                if (strcmp(o->target, target) == 0 && strcmp(o->platform, platform) == 0)
                        found = o;
        pthread_mutex_unlock(&p->lock);
        return found;
}

static int read_doc(ts_ctrd *c, const char *digest, uint8_t **ret, size_t *ret_len, ts_error **err) {
        return ts_ctrd_content_read(c, digest, TS_OCI_DOCUMENT_MAX, ret, ret_len, err);
}

/* The manifest the target names for platform: the target itself, or the
 * index entry containerd would choose. */
static int manifest_of(ts_ctrd *c, const ts_ctrd_descriptor *target, const char *platform,
                       prov_chain *ch, ts_oci_manifest **ret, ts_error **err) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        const char *digest = target->digest;
        int r = read_doc(c, digest, &buf, &len, err);
        if (r < 0)
                return r;
        if (ts_oci_media_kind(target->media_type) == TS_OCI_KIND_INDEX) {
                ts_oci_index *ix = NULL;
                _cleanup_platform_ ts_oci_platform *want = NULL;
                const ts_oci_descriptor *d = NULL;
                if ((r = ts_oci_index_parse(buf, len, &ix, err)) >= 0 &&
                    (r = ts_oci_platform_parse(platform, &want, err)) >= 0 &&
                    (r = ts_oci_index_select(ix, want, &d, err)) >= 0) {
                        snprintf(ch->manifest, sizeof ch->manifest, "%s", d->digest);
                        ch->content_bytes += (uint64_t) d->size;
                }
                ts_oci_index_free(ix);
                free(TAKE_PTR(buf));
                if (r < 0 || (r = read_doc(c, ch->manifest, &buf, &len, err)) < 0)
                        return r;
        } else
                snprintf(ch->manifest, sizeof ch->manifest, "%s", digest);
        return ts_oci_manifest_parse(buf, len, ret, err);
}

static int chain_from_config(ts_ctrd *c, const ts_oci_manifest *m, prov_chain *ch, ts_error **err) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        ts_oci_config *cfg = NULL;
        int r = read_doc(c, m->config.digest, &buf, &len, err);
        if (r >= 0)
                r = ts_oci_config_parse(buf, len, &cfg, err);
        if (r >= 0 && cfg->n_diff_ids != m->n_layers)
                r = ts_error_setf_plain(err, EBADMSG, "config %s has %zu diff_ids for %zu layers",
                                        m->config.digest, cfg->n_diff_ids, m->n_layers);
        if (r >= 0 && !(ch->chain_ids = calloc(m->n_layers ? m->n_layers : 1, TS_DIGEST_MAX)))
                r = -ENOMEM;
        if (r >= 0)
                r = ts_digest_chain_ids(cfg->diff_ids, cfg->n_diff_ids, ch->chain_ids);
        for (size_t i = 0; r >= 0 && i < m->n_layers; i++) {
                r = ts_strv_push(&ch->layer_digests, m->layers[i].digest);
                ch->content_bytes += (uint64_t) m->layers[i].size;
        }
        ts_oci_config_free(cfg);
        if (r >= 0) {
                snprintf(ch->config, sizeof ch->config, "%s", m->config.digest);
                ch->n_layers = m->n_layers;
                ch->content_bytes += (uint64_t) m->config.size;
        }
        return r;
}

int prov_chain_get(ts_prov *p, const ts_ctrd_descriptor *target, const char *platform,
                   const prov_chain **ret, ts_error **err) {
        _cleanup_platform_ ts_oci_platform *host = NULL;
        _cleanup_free_ char *host_s = NULL;
        if (!platform) {
                if (ts_oci_platform_default(&host) < 0 || !(host_s = ts_oci_platform_string(host)))
                        return -ENOMEM;
                platform = host_s;
        }
        const prov_chain *cached = chain_cached(p, target->digest, platform);
        if (cached) {
                *ret = cached;
                return 0;
        }
        ts_ctrd *c = NULL;
        int r = prov_ctrd(p, &c, err);
        if (r < 0)
                return r;
        prov_chain *ch = calloc(1, sizeof(*ch));
        if (!ch || !(ch->platform = strdup(platform))) {
                prov_chain_free(ch);
                return -ENOMEM;
        }
        snprintf(ch->target, sizeof ch->target, "%s", target->digest);
        ch->content_bytes = (uint64_t) target->size;
        ts_oci_manifest *m = NULL;
        r = manifest_of(c, target, platform, ch, &m, err);
        if (r >= 0)
                r = chain_from_config(c, m, ch, err);
        ts_oci_manifest_free(m);
        if (r < 0) {
                prov_chain_free(ch);
                return ts_error_prefix(err, r, "image content %s", target->digest);
        }
        *ret = prov_chain_add(p, ch);
        return 0;
}

/* The platform an image was warmed for: recorded when it is not the host's. */
static const char *image_platform(const prov_image *img) {
        return ts_ctrd_label(img->labels, LABEL_IMAGE_PLATFORM);
}

/* ---- the API's image calls ---- */

ts_prov_image *ts_prov_image_free(ts_prov_image *img) {
        if (!img)
                return NULL;
        free(img->name);
        free(img->digest);
        free(img->media_type);
        free(img->chain_id);
        free(img->platform);
        for (size_t i = 0; i < img->n_labels; i++) {
                free(img->labels[i].key);
                free(img->labels[i].value);
        }
        free(img->labels);
        ts_prov_warm_status_free(img->warm);
        free(img);
        return NULL;
}

void ts_prov_image_list_free(ts_prov_image **v, size_t n) {
        for (size_t i = 0; v && i < n; i++)
                ts_prov_image_free(v[i]);
        free(v);
}

static int copy_labels(char *const *pairs, ts_prov_label **ret, size_t *ret_n) {
        size_t n = ts_strv_length(pairs) / 2;
        ts_prov_label *l = calloc(n ? n : 1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        *ret = l;
        for (size_t i = 0; i < n; i++) {
                l[i].key = strdup(pairs[2 * i]);
                l[i].value = strdup(pairs[2 * i + 1]);
                *ret_n = i + 1;
                if (!l[i].key || !l[i].value)
                        return -ENOMEM;
        }
        return 0;
}

/* Ready: the top of the chain is a committed snapshot. Its pool bytes:
 * what each layer's snapshot maps of its own. */
static void pool_state(ts_prov *p, ts_ctrd *c, const prov_chain *ch, ts_prov_image *out) {
        if (ch->n_layers == 0)
                return;
        uint64_t bytes = 0;
        for (size_t i = 0; i < ch->n_layers; i++) {
                int64_t size = 0, inodes = 0;
                if (ts_ctrd_snapshot_usage(c, p->snapshotter, ch->chain_ids[i], &size, &inodes, NULL) < 0)
                        return;
                bytes += size > 0 ? (uint64_t) size : 0;
        }
        out->ready = true;
        out->pool_bytes = bytes;
}

static int describe(ts_prov *p, ts_ctrd *c, const prov_image *img, ts_prov_image **ret) {
        ts_prov_image *out = calloc(1, sizeof(*out));
        if (!out)
                return -ENOMEM;
        out->created_ns = img->created_ns;
        out->updated_ns = img->updated_ns;
        int r = copy_labels(img->labels, &out->labels, &out->n_labels);
        if (r >= 0 && (!(out->name = strdup(img->name)) || !(out->digest = strdup(img->target.digest)) ||
                       !(out->media_type = strdup(img->target.media_type ? img->target.media_type : ""))))
                r = -ENOMEM;
        const prov_chain *ch = NULL;
        ts_error *e = NULL;
        if (r >= 0 && prov_chain_get(p, &img->target, image_platform(img), &ch, &e) >= 0) {
                out->layers = (unsigned) ch->n_layers;
                out->content_bytes = ch->content_bytes;
                out->platform = strdup(ch->platform);
                out->chain_id = ch->n_layers ? strdup(ch->chain_ids[ch->n_layers - 1]) : NULL;
                pool_state(p, c, ch, out);
        } else if (e)
                log_debug("image %s: %s", img->name, e->msg);
        e = ts_error_free(e);
        pthread_mutex_lock(&p->lock);
        out->warm = prov_warm_status_locked(p, img->name);
        pthread_mutex_unlock(&p->lock);
        if (r < 0) {
                ts_prov_image_free(out);
                return r;
        }
        *ret = out;
        return 0;
}

int ts_prov_image_get(ts_prov *p, const char *name, ts_prov_image **ret, ts_error **err) {
        prov_image img = { 0 };
        int r = prov_image_find(p, name, &img, err);
        if (r >= 0)
                r = describe(p, p->ctrd, &img, ret);
        prov_image_done(&img);
        return r;
}

/* A warm with no image record yet shows as an image that is not ready. */
static int warm_only(const ts_prov_warm_status *s, ts_prov_image **ret) {
        ts_prov_image *out = calloc(1, sizeof(*out));
        if (!out)
                return -ENOMEM;
        out->name = strdup(s->ref);
        out->digest = s->digest ? strdup(s->digest) : NULL;
        out->warm = calloc(1, sizeof(*out->warm));
        if (!out->name || (s->digest && !out->digest) || !out->warm) {
                ts_prov_image_free(out);
                return -ENOMEM;
        }
        *out->warm = *s;
        *ret = out;
        return 0;
}

static int by_name(const void *a, const void *b) {
        const ts_prov_image *x = *(ts_prov_image *const *) a, *y = *(ts_prov_image *const *) b;
        return strcmp(x->name, y->name);
}

static bool listed(ts_prov_image **v, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(v[i]->name, name) == 0)
                        return true;
        return false;
}

/* Adds the warms whose image has no record yet. */
static int add_warms(ts_prov *p, ts_prov_image ***v, size_t *n) {
        pthread_mutex_lock(&p->lock);
        int r = 0;
        for (prov_warm *w = p->warms; w && r >= 0; w = prov_warm_next(w)) {
                const char *name = prov_warm_name(w);
                if (listed(*v, *n, name))
                        continue;
                ts_prov_image **nv = realloc(*v, (*n + 1) * sizeof(**v));
                ts_prov_warm_status *s = prov_warm_status_locked(p, name);
                if (!nv || !s) {
                        ts_prov_warm_status_free(s);
                        r = -ENOMEM;
                        if (nv)
                                *v = nv;
                        break;
                }
                *v = nv;
                r = warm_only(s, &(*v)[*n]);
                free(s); /* its strings moved into the image */
                if (r >= 0)
                        (*n)++;
        }
        pthread_mutex_unlock(&p->lock);
        return r;
}

int prov_images_all(ts_prov *p, ts_ctrd **ret_c, ts_ctrd_image **ret_v, size_t *ret_n, ts_error **err) {
        int r = prov_ctrd(p, ret_c, err);
        return r < 0 ? r : ts_ctrd_image_list(*ret_c, NULL, ret_v, ret_n, err);
}

int ts_prov_image_list(ts_prov *p, ts_prov_image ***ret, size_t *ret_n, ts_error **err) {
        ts_ctrd *c = NULL;
        ts_ctrd_image *v = NULL;
        size_t n = 0;
        int r = prov_images_all(p, &c, &v, &n, err);
        if (r < 0)
                return r;
        ts_prov_image **out = calloc(n ? n : 1, sizeof(*out));
        size_t n_out = 0;
        r = out ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                prov_image img = { 0 };
                r = image_from(&v[i], &img);
                if (r >= 0 && (r = describe(p, c, &img, &out[n_out])) >= 0)
                        n_out++;
                prov_image_done(&img);
        }
        ts_ctrd_image_list_free(v, n);
        if (r >= 0)
                r = add_warms(p, &out, &n_out);
        if (r < 0) {
                ts_prov_image_list_free(out, n_out);
                return ts_error_set(err, r, "list images");
        }
        qsort(out, n_out, sizeof(*out), by_name);
        *ret = out;
        *ret_n = n_out;
        return 0;
}

/* ---- config ---- */

ts_prov_image_config *ts_prov_image_config_free(ts_prov_image_config *c) {
        if (!c)
                return NULL;
        free(c->image);
        free(c->digest);
        ts_strv_free(c->entrypoint);
        ts_strv_free(c->cmd);
        ts_strv_free(c->env);
        ts_strv_free(c->exposed_ports);
        free(c->working_dir);
        free(c->user);
        free(c->stop_signal);
        for (size_t i = 0; i < c->n_labels; i++) {
                free(c->labels[i].key);
                free(c->labels[i].value);
        }
        free(c->labels);
        free(c);
        return NULL;
}

static bool is_systemd(char *const *entrypoint, char *const *cmd) {
        static const char *const inits[] = { "/sbin/init", "/lib/systemd/systemd",
                                             "/usr/lib/systemd/systemd" };
        const char *first = entrypoint && entrypoint[0] ? entrypoint[0] : cmd ? cmd[0] : NULL;
        for (size_t i = 0; first && i < TS_ARRAY_SIZE(inits); i++)
                if (strcmp(first, inits[i]) == 0)
                        return true;
        return false;
}

static int strv_copy(char *const *v, char ***ret) {
        for (char *const *s = v; s && *s; s++)
                if (ts_strv_push(ret, *s) < 0)
                        return -ENOMEM;
        return 0;
}

static int sorted_copy(char *const *v, char ***ret) {
        int r = strv_copy(v, ret);
        if (r >= 0 && *ret)
                qsort(*ret, ts_strv_length(*ret), sizeof(char *), ts_strv_cmp);
        return r;
}

static const char *stop_signal(const ts_oci_config *cfg) {
        json_object *config, *v;
        if (!json_object_object_get_ex(cfg->json, "config", &config) ||
            !json_object_object_get_ex(config, "StopSignal", &v) ||
            !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static int config_from(const prov_image *img, const ts_oci_config *cfg, ts_prov_image_config **ret) {
        ts_prov_image_config *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        int r = strv_copy(cfg->entrypoint, &c->entrypoint);
        if (r >= 0)
                r = strv_copy(cfg->cmd, &c->cmd);
        if (r >= 0)
                r = strv_copy(cfg->env, &c->env);
        if (r >= 0)
                r = sorted_copy(cfg->exposed_ports, &c->exposed_ports);
        if (r >= 0)
                r = copy_labels(cfg->labels, &c->labels, &c->n_labels);
        if (r >= 0 && (!(c->image = strdup(img->name)) || !(c->digest = strdup(img->target.digest)) ||
                       (cfg->working_dir && !(c->working_dir = strdup(cfg->working_dir))) ||
                       (cfg->user && !(c->user = strdup(cfg->user))) ||
                       (stop_signal(cfg) && !(c->stop_signal = strdup(stop_signal(cfg))))))
                r = -ENOMEM;
        if (r < 0) {
                ts_prov_image_config_free(c);
                return r;
        }
        c->systemd_init = is_systemd(c->entrypoint, c->cmd);
        *ret = c;
        return 0;
}

int ts_prov_image_config_get(ts_prov *p, const char *name, ts_prov_image_config **ret,
                             ts_error **err) {
        prov_image img = { 0 };
        const prov_chain *ch = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        ts_oci_config *cfg = NULL;
        int r = prov_image_find(p, name, &img, err);
        if (r >= 0)
                r = prov_chain_get(p, &img.target, image_platform(&img), &ch, err);
        if (r >= 0)
                r = read_doc(p->ctrd, ch->config, &buf, &len, err);
        if (r >= 0)
                r = ts_oci_config_parse(buf, len, &cfg, err);
        if (r >= 0)
                r = config_from(&img, cfg, ret);
        ts_oci_config_free(cfg);
        prov_image_done(&img);
        return r;
}

/* ---- removal ---- */

int ts_prov_image_remove(ts_prov *p, const char *name, char **ret_name, char **ret_digest,
                         ts_error **err) {
        prov_image img = { 0 };
        int r = prov_image_find(p, name, &img, err);
        if (r >= 0 && (r = ts_ctrd_image_delete(p->ctrd, img.name, true, err)) >= 0) {
                log_info("image %s (%s) removed", img.name, img.target.digest);
                if (ret_name)
                        *ret_name = TAKE_PTR(img.name);
                if (ret_digest)
                        *ret_digest = TAKE_PTR(img.target.digest);
        }
        prov_image_done(&img);
        return r;
}
