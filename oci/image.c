#include "image.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/strv.h"
#include "oci/digest.h"

#define bad(err, what, fmt, ...) ts_error_setf_plain(err, EBADMSG, "%s: " fmt, what, ##__VA_ARGS__)

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put)
#define _cleanup_json_ _cleanup_(json_object_putp)

static const struct {
        const char *type;
        ts_oci_kind kind;
        int compression;
} media_types[] = {
        { TS_OCI_MEDIA_INDEX, TS_OCI_KIND_INDEX, -1 },
        { TS_DOCKER_MEDIA_LIST, TS_OCI_KIND_INDEX, -1 },
        { TS_OCI_MEDIA_MANIFEST, TS_OCI_KIND_MANIFEST, -1 },
        { TS_DOCKER_MEDIA_MANIFEST, TS_OCI_KIND_MANIFEST, -1 },
        { TS_OCI_MEDIA_CONFIG, TS_OCI_KIND_CONFIG, -1 },
        { TS_DOCKER_MEDIA_CONFIG, TS_OCI_KIND_CONFIG, -1 },
        { TS_OCI_MEDIA_LAYER, TS_OCI_KIND_LAYER, TS_OCI_UNCOMPRESSED },
        { TS_OCI_MEDIA_LAYER_GZIP, TS_OCI_KIND_LAYER, TS_OCI_GZIP },
        { TS_OCI_MEDIA_LAYER_ZSTD, TS_OCI_KIND_LAYER, TS_OCI_ZSTD },
        { TS_OCI_MEDIA_LAYER_FOREIGN, TS_OCI_KIND_LAYER, TS_OCI_UNCOMPRESSED },
        { TS_OCI_MEDIA_LAYER_FOREIGN_GZIP, TS_OCI_KIND_LAYER, TS_OCI_GZIP },
        { TS_OCI_MEDIA_LAYER_FOREIGN_ZSTD, TS_OCI_KIND_LAYER, TS_OCI_ZSTD },
        { TS_DOCKER_MEDIA_LAYER_GZIP, TS_OCI_KIND_LAYER, TS_OCI_GZIP },
        { TS_DOCKER_MEDIA_LAYER_FOREIGN_GZIP, TS_OCI_KIND_LAYER, TS_OCI_GZIP },
        { TS_DOCKER_MEDIA_SCHEMA1, TS_OCI_KIND_SCHEMA1, -1 },
        { TS_DOCKER_MEDIA_SCHEMA1_SIGNED, TS_OCI_KIND_SCHEMA1, -1 },
};

static int media_lookup(const char *media_type) {
        if (!media_type)
                return -1;
        size_t n = strcspn(media_type, "; \t");
        for (size_t i = 0; i < TS_ARRAY_SIZE(media_types); i++)
                if (strlen(media_types[i].type) == n && strncmp(media_types[i].type, media_type, n) == 0)
                        return (int) i;
        return -1;
}

ts_oci_kind ts_oci_media_kind(const char *media_type) {
        int i = media_lookup(media_type);
        return i < 0 ? TS_OCI_KIND_UNKNOWN : media_types[i].kind;
}

int ts_oci_layer_compression(const char *media_type) {
        int i = media_lookup(media_type);
        if (i < 0 || media_types[i].kind != TS_OCI_KIND_LAYER)
                return -EOPNOTSUPP;
        return media_types[i].compression;
}

/* ---- JSON access ---- */

static int doc_parse(const void *p, size_t n, const char *what, json_object **ret, ts_error **err) {
        if (n > TS_OCI_DOCUMENT_MAX)
                return ts_error_setf_plain(err, EMSGSIZE, "%s is %zu bytes, more than the %d allowed",
                                           what, n, TS_OCI_DOCUMENT_MAX);
        if (memchr(p, '\0', n))
                return bad(err, what, "not JSON (a NUL byte)");
        json_tokener *tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        _cleanup_json_ json_object *o = json_tokener_parse_ex(tok, p, (int) n);
        enum json_tokener_error e = json_tokener_get_error(tok);
        size_t end = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (e != json_tokener_success)
                return bad(err, what, "not JSON: %s", json_tokener_error_desc(e));
        for (const char *c = (const char *) p + end; c < (const char *) p + n; c++)
                if (!strchr(" \t\r\n", *c))
                        return bad(err, what, "not JSON: data after the document");
        if (!json_object_is_type(o, json_type_object))
                return bad(err, what, "not a JSON object");
        *ret = TAKE_PTR(o);
        return 0;
}

/* A string member (NULL when absent or null, unless required). */
static int get_str(json_object *o, const char *key, bool required, const char *what,
                   const char **ret, ts_error **err) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !v) {
                if (required)
                        return bad(err, what, "no \"%s\"", key);
                *ret = NULL;
                return 0;
        }
        if (!json_object_is_type(v, json_type_string))
                return bad(err, what, "\"%s\" is not a string", key);
        const char *s = json_object_get_string(v);
        if (strlen(s) != (size_t) json_object_get_string_len(v))
                return bad(err, what, "\"%s\" holds a NUL character", key);
        *ret = s;
        return 0;
}

static int dup_str(json_object *o, const char *key, bool required, const char *what, char **ret,
                   ts_error **err) {
        const char *s = NULL;
        int r = get_str(o, key, required, what, &s, err);
        if (r < 0)
                return r;
        char *d = NULL;
        if (s && !(d = strdup(s)))
                return -ENOMEM;
        *ret = d;
        return 0;
}

static int string_of(json_object *v, const char *what, const char *key, const char **ret,
                     ts_error **err) {
        if (!json_object_is_type(v, json_type_string))
                return bad(err, what, "\"%s\" holds something that is not a string", key);
        const char *s = json_object_get_string(v);
        if (strlen(s) != (size_t) json_object_get_string_len(v))
                return bad(err, what, "\"%s\" holds a NUL character", key);
        *ret = s;
        return 0;
}

/* An array of strings (NULL when absent or null; [] gives an empty list). */
static int get_strv(json_object *o, const char *key, const char *what, char ***ret, ts_error **err) {
        json_object *a = NULL;
        if (!json_object_object_get_ex(o, key, &a) || !a) {
                *ret = NULL;
                return 0;
        }
        if (!json_object_is_type(a, json_type_array))
                return bad(err, what, "\"%s\" is not an array", key);
        _cleanup_strv_free_ char **v = calloc(1, sizeof(char *));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                const char *s = NULL;
                int r = string_of(json_object_array_get_idx(a, i), what, key, &s, err);
                if (r < 0)
                        return r;
                if (ts_strv_push(&v, s) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(v);
        return 0;
}

/* An object's keys (keys_only) or its key, value pairs (values must be strings). */
static int get_map(json_object *o, const char *key, bool keys_only, const char *what, char ***ret,
                   ts_error **err) {
        json_object *m = NULL;
        if (!json_object_object_get_ex(o, key, &m) || !m) {
                *ret = NULL;
                return 0;
        }
        if (!json_object_is_type(m, json_type_object))
                return bad(err, what, "\"%s\" is not an object", key);
        _cleanup_strv_free_ char **v = calloc(1, sizeof(char *));
        if (!v)
                return -ENOMEM;
        json_object_object_foreach(m, k, val) {
                if (ts_strv_push(&v, k) < 0)
                        return -ENOMEM;
                if (keys_only)
                        continue;
                const char *s = NULL;
                int r = string_of(val, what, key, &s, err);
                if (r < 0)
                        return r;
                if (ts_strv_push(&v, s) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(v);
        return 0;
}

/* schemaVersion must be 2; 1 is Docker's schema 1. */
static int check_schema(json_object *root, const char *what, ts_error **err) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(root, "schemaVersion", &v) ||
            !json_object_is_type(v, json_type_int))
                return bad(err, what, "no integer \"schemaVersion\"");
        int64_t sv = json_object_get_int64(v);
        if (sv == 1)
                return ts_error_setf_plain(err, EOPNOTSUPP, "%s: Docker schema 1 manifests are "
                                           "not supported (push the image again with a current "
                                           "client)", what);
        if (sv != 2)
                return bad(err, what, "schemaVersion %lld is not 2", (long long) sv);
        return 0;
}

/* ---- descriptors ---- */

static int platform_from_json(json_object *o, const char *what, ts_oci_platform **ret,
                              ts_error **err) {
        json_object *p = NULL;
        if (!json_object_object_get_ex(o, "platform", &p) || !p) {
                *ret = NULL;
                return 0;
        }
        char ctx[128];
        snprintf(ctx, sizeof(ctx), "%s: platform", what);
        if (!json_object_is_type(p, json_type_object))
                return bad(err, ctx, "not an object");
        _cleanup_platform_ ts_oci_platform *pl = calloc(1, sizeof(*pl));
        if (!pl)
                return -ENOMEM;
        int r = dup_str(p, "os", true, ctx, &pl->os, err);
        if (r >= 0)
                r = dup_str(p, "architecture", true, ctx, &pl->architecture, err);
        if (r >= 0)
                r = dup_str(p, "variant", false, ctx, &pl->variant, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(pl);
        return 0;
}

static int descriptor_from_json(json_object *o, const char *what, ts_oci_descriptor *ret,
                                ts_error **err) {
        if (!json_object_is_type(o, json_type_object))
                return bad(err, what, "not an object");
        _cleanup_(ts_oci_descriptor_done) ts_oci_descriptor d = { 0 };
        int r = dup_str(o, "mediaType", true, what, &d.media_type, err);
        if (r >= 0)
                r = dup_str(o, "digest", true, what, &d.digest, err);
        if (r < 0)
                return r;
        if (ts_digest_validate(d.digest) < 0)
                return bad(err, what, "digest \"%.100s\" is not \"sha256:\" and 64 lowercase hex "
                           "digits", d.digest);
        json_object *size = NULL;
        if (!json_object_object_get_ex(o, "size", &size) ||
            !json_object_is_type(size, json_type_int))
                return bad(err, what, "no integer \"size\"");
        d.size = json_object_get_int64(size);
        if (d.size < 0)
                return bad(err, what, "negative size %lld", (long long) d.size);
        r = platform_from_json(o, what, &d.platform, err);
        if (r >= 0)
                r = get_map(o, "annotations", false, what, &d.annotations, err);
        if (r >= 0)
                r = get_strv(o, "urls", what, &d.urls, err);
        if (r < 0)
                return r;
        *ret = d;
        d = (ts_oci_descriptor) { 0 };
        return 0;
}

static int descriptors_from_json(json_object *root, const char *key, const char *what,
                                 ts_oci_descriptor **ret, size_t *ret_n, ts_error **err) {
        json_object *a = NULL;
        if (!json_object_object_get_ex(root, key, &a) || !json_object_is_type(a, json_type_array))
                return bad(err, what, "no \"%s\" array", key);
        size_t n = json_object_array_length(a);
        ts_oci_descriptor *v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                char ctx[96];
                snprintf(ctx, sizeof(ctx), "%s: %s[%zu]", what, key, i);
                int r = descriptor_from_json(json_object_array_get_idx(a, i), ctx, &v[i], err);
                if (r < 0) {
                        for (size_t j = 0; j < i; j++)
                                ts_oci_descriptor_done(&v[j]);
                        free(v);
                        return r;
                }
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

const char *ts_oci_descriptor_annotation(const ts_oci_descriptor *d, const char *key) {
        for (char **a = d->annotations; a && a[0] && a[1]; a += 2)
                if (strcmp(a[0], key) == 0)
                        return a[1];
        return NULL;
}

static int strv_copy(char **v, char ***ret) {
        *ret = NULL;
        if (!v)
                return 0;
        _cleanup_strv_free_ char **c = calloc(1, sizeof(char *));
        if (!c)
                return -ENOMEM;
        for (; *v; v++)
                if (ts_strv_push(&c, *v) < 0)
                        return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

int ts_oci_descriptor_copy(const ts_oci_descriptor *d, ts_oci_descriptor **ret) {
        _cleanup_descriptor_ ts_oci_descriptor *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->size = d->size;
        if (!(c->media_type = strdup(d->media_type)) || !(c->digest = strdup(d->digest)))
                return -ENOMEM;
        if (d->platform && ts_oci_platform_copy(d->platform, &c->platform) < 0)
                return -ENOMEM;
        if (strv_copy(d->annotations, &c->annotations) < 0 || strv_copy(d->urls, &c->urls) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

void ts_oci_descriptor_done(ts_oci_descriptor *d) {
        free(d->media_type);
        free(d->digest);
        ts_oci_platform_free(d->platform);
        ts_strv_free(d->annotations);
        ts_strv_free(d->urls);
        *d = (ts_oci_descriptor) { 0 };
}

ts_oci_descriptor *ts_oci_descriptor_free(ts_oci_descriptor *d) {
        if (d) {
                ts_oci_descriptor_done(d);
                free(d);
        }
        return NULL;
}

static void descriptors_free(ts_oci_descriptor *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                ts_oci_descriptor_done(&v[i]);
        free(v);
}

/* ---- index and manifest ---- */

/* The document's own mediaType, when it has one, must be of the wanted kind. */
static int check_media(json_object *root, ts_oci_kind want, const char *what, char **ret,
                       ts_error **err) {
        char *mt = NULL;
        int r = dup_str(root, "mediaType", false, what, &mt, err);
        if (r < 0)
                return r;
        ts_oci_kind k = mt ? ts_oci_media_kind(mt) : want;
        if (k != want) {
                r = ts_error_setf_plain(err, EOPNOTSUPP, "%s: media type \"%.100s\" is not %s", what,
                                        mt, want == TS_OCI_KIND_INDEX ? "an index or manifest list"
                                                                      : "an image manifest");
                free(mt);
                return r;
        }
        *ret = mt;
        return 0;
}

int ts_oci_index_parse(const void *p, size_t n, ts_oci_index **ret, ts_error **err) {
        _cleanup_json_ json_object *root = NULL;
        int r = doc_parse(p, n, "index", &root, err);
        if (r < 0)
                return r;
        _cleanup_index_ ts_oci_index *ix = calloc(1, sizeof(*ix));
        if (!ix)
                return -ENOMEM;
        r = check_media(root, TS_OCI_KIND_INDEX, "index", &ix->media_type, err);
        if (r >= 0)
                r = check_schema(root, "index", err);
        if (r >= 0)
                r = descriptors_from_json(root, "manifests", "index", &ix->manifests,
                                          &ix->n_manifests, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ix);
        return 0;
}

ts_oci_index *ts_oci_index_free(ts_oci_index *ix) {
        if (ix) {
                free(ix->media_type);
                descriptors_free(ix->manifests, ix->n_manifests);
                free(ix);
        }
        return NULL;
}

int ts_oci_manifest_parse(const void *p, size_t n, ts_oci_manifest **ret, ts_error **err) {
        _cleanup_json_ json_object *root = NULL;
        int r = doc_parse(p, n, "manifest", &root, err);
        if (r < 0)
                return r;
        _cleanup_manifest_ ts_oci_manifest *m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        r = check_schema(root, "manifest", err);
        if (r >= 0)
                r = check_media(root, TS_OCI_KIND_MANIFEST, "manifest", &m->media_type, err);
        if (r < 0)
                return r;
        json_object *cfg = NULL;
        if (!json_object_object_get_ex(root, "config", &cfg))
                return bad(err, "manifest", "no \"config\"");
        r = descriptor_from_json(cfg, "manifest: config", &m->config, err);
        if (r >= 0)
                r = descriptors_from_json(root, "layers", "manifest", &m->layers, &m->n_layers, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

ts_oci_manifest *ts_oci_manifest_free(ts_oci_manifest *m) {
        if (m) {
                free(m->media_type);
                ts_oci_descriptor_done(&m->config);
                descriptors_free(m->layers, m->n_layers);
                free(m);
        }
        return NULL;
}

/* ---- config ---- */

static int config_rootfs(ts_oci_config *c, ts_error **err) {
        json_object *rootfs = NULL, *ids = NULL;
        if (!json_object_object_get_ex(c->json, "rootfs", &rootfs) ||
            !json_object_is_type(rootfs, json_type_object))
                return bad(err, "config", "no \"rootfs\" object");
        const char *type = NULL;
        int r = get_str(rootfs, "type", true, "config: rootfs", &type, err);
        if (r < 0)
                return r;
        if (strcmp(type, "layers") != 0)
                return bad(err, "config: rootfs", "type \"%.100s\" is not \"layers\"", type);
        if (!json_object_object_get_ex(rootfs, "diff_ids", &ids) || !ids)
                return bad(err, "config: rootfs", "no \"diff_ids\"");
        r = get_strv(rootfs, "diff_ids", "config: rootfs", &c->diff_ids, err);
        if (r < 0)
                return r;
        c->n_diff_ids = ts_strv_length(c->diff_ids);
        for (size_t i = 0; i < c->n_diff_ids; i++)
                if (ts_digest_validate(c->diff_ids[i]) < 0)
                        return bad(err, "config: rootfs", "diff_ids[%zu] \"%.100s\" is not a sha256 "
                                   "digest", i, c->diff_ids[i]);
        return 0;
}

static int config_exec(ts_oci_config *c, ts_error **err) {
        json_object *cfg = NULL;
        if (!json_object_object_get_ex(c->json, "config", &cfg) || !cfg)
                return 0;
        if (!json_object_is_type(cfg, json_type_object))
                return bad(err, "config", "\"config\" is not an object");
        const char *w = "config: config";
        int r = get_strv(cfg, "Entrypoint", w, &c->entrypoint, err);
        if (r >= 0)
                r = get_strv(cfg, "Cmd", w, &c->cmd, err);
        if (r >= 0)
                r = get_strv(cfg, "Env", w, &c->env, err);
        if (r >= 0)
                r = dup_str(cfg, "WorkingDir", false, w, &c->working_dir, err);
        if (r >= 0)
                r = dup_str(cfg, "User", false, w, &c->user, err);
        if (r >= 0)
                r = get_map(cfg, "ExposedPorts", true, w, &c->exposed_ports, err);
        if (r >= 0)
                r = get_map(cfg, "Labels", false, w, &c->labels, err);
        return r;
}

int ts_oci_config_parse(const void *p, size_t n, ts_oci_config **ret, ts_error **err) {
        _cleanup_config_ ts_oci_config *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        int r = doc_parse(p, n, "config", &c->json, err);
        if (r < 0)
                return r;
        r = dup_str(c->json, "os", true, "config", &c->platform.os, err);
        if (r >= 0)
                r = dup_str(c->json, "architecture", true, "config", &c->platform.architecture, err);
        if (r >= 0)
                r = dup_str(c->json, "variant", false, "config", &c->platform.variant, err);
        if (r >= 0)
                r = config_rootfs(c, err);
        if (r >= 0)
                r = config_exec(c, err);
        if (r < 0)
                return r;
        json_object *h = NULL;
        if (json_object_object_get_ex(c->json, "history", &h) && h) {
                if (!json_object_is_type(h, json_type_array))
                        return bad(err, "config", "\"history\" is not an array");
                c->n_history = json_object_array_length(h);
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static int add_str(json_object *o, const char *key, const char *value) {
        if (!value)
                return 0;
        json_object *s = json_object_new_string(value);
        if (!s || json_object_object_add(o, key, s) < 0) {
                json_object_put(s);
                return -ENOMEM;
        }
        return 0;
}

static int array_append(json_object *parent, const char *key, json_object *item) {
        json_object *a = NULL;
        if (!json_object_object_get_ex(parent, key, &a) || !json_object_is_type(a, json_type_array)) {
                a = json_object_new_array();
                if (!a || json_object_object_add(parent, key, a) < 0) {
                        json_object_put(a);
                        json_object_put(item);
                        return -ENOMEM;
                }
        }
        if (json_object_array_add(a, item) < 0) {
                json_object_put(item);
                return -ENOMEM;
        }
        return 0;
}

static void strv_drop_last(char **v, size_t n) {
        free(v[n]);
        v[n] = NULL;
}

int ts_oci_config_add_layer(ts_oci_config *c, const char *diff_id, const char *created,
                            const char *created_by, const char *comment) {
        if (ts_digest_validate(diff_id) < 0)
                return -EINVAL;
        json_object *rootfs = NULL, *history = NULL;
        if (!json_object_object_get_ex(c->json, "rootfs", &rootfs))
                return -EINVAL;
        json_object *entry = json_object_new_object();
        if (!entry || add_str(entry, "created", created) < 0 ||
            add_str(entry, "created_by", created_by) < 0 || add_str(entry, "comment", comment) < 0) {
                json_object_put(entry);
                return -ENOMEM;
        }
        json_object *id = json_object_new_string(diff_id);
        if (!id || ts_strv_push(&c->diff_ids, diff_id) < 0) {
                json_object_put(id);
                json_object_put(entry);
                return -ENOMEM;
        }
        if (array_append(c->json, "history", entry) < 0) {
                json_object_put(id);
                strv_drop_last(c->diff_ids, c->n_diff_ids);
                return -ENOMEM;
        }
        if (array_append(rootfs, "diff_ids", id) < 0) {
                /* Take the history entry back so the document stays as it was. */
                json_object_object_get_ex(c->json, "history", &history);
                json_object_array_del_idx(history, json_object_array_length(history) - 1, 1);
                strv_drop_last(c->diff_ids, c->n_diff_ids);
                return -ENOMEM;
        }
        c->n_diff_ids++;
        c->n_history++;
        return 0;
}

int ts_oci_config_serialize(const ts_oci_config *c, char **ret, size_t *ret_len) {
        size_t n = 0;
        const char *s = json_object_to_json_string_length(
                c->json, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        if (!s)
                return -ENOMEM;
        char *d = strndup(s, n);
        if (!d)
                return -ENOMEM;
        *ret = d;
        *ret_len = n;
        return 0;
}

ts_oci_config *ts_oci_config_free(ts_oci_config *c) {
        if (c) {
                ts_oci_platform_done(&c->platform);
                ts_strv_free(c->diff_ids);
                ts_strv_free(c->entrypoint);
                ts_strv_free(c->cmd);
                ts_strv_free(c->env);
                free(c->working_dir);
                free(c->user);
                ts_strv_free(c->exposed_ports);
                ts_strv_free(c->labels);
                json_object_put(c->json);
                free(c);
        }
        return NULL;
}

int ts_oci_image_check(const ts_oci_manifest *m, const ts_oci_config *c, ts_error **err) {
        if (ts_oci_media_kind(m->config.media_type) != TS_OCI_KIND_CONFIG)
                return ts_error_setf_plain(err, EOPNOTSUPP, "manifest: config media type "
                                           "\"%.100s\" is not an image config",
                                           m->config.media_type);
        for (size_t i = 0; i < m->n_layers; i++)
                if (ts_oci_layer_compression(m->layers[i].media_type) < 0)
                        return ts_error_setf_plain(err, EOPNOTSUPP, "manifest: layers[%zu]: media "
                                                   "type \"%.100s\" is not a layer tar", i,
                                                   m->layers[i].media_type);
        if (m->n_layers != c->n_diff_ids)
                return ts_error_setf_plain(err, EBADMSG, "image: the manifest has %zu layers but "
                                           "the config %zu diff_ids", m->n_layers, c->n_diff_ids);
        return 0;
}

/* ---- platform choice ---- */

static int no_match(const ts_oci_index *ix, const ts_oci_platform *want, ts_error **err) {
        _cleanup_free_ char *w = ts_oci_platform_string(want);
        char *list = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&list, &len);
        if (!f)
                return -ENOMEM;
        size_t shown = 0;
        for (size_t i = 0; i < ix->n_manifests; i++) {
                const ts_oci_platform *p = ix->manifests[i].platform;
                if (!p)
                        continue;
                _cleanup_free_ char *s = ts_oci_platform_string(p);
                fprintf(f, "%s%s", shown++ ? ", " : "", s ? s : "?");
        }
        if (!shown)
                fputs("none", f);
        fclose(f);
        int r = ts_error_setf_plain(err, ENOENT, "no manifest for platform %s in the index "
                                    "(it has: %s)", w ? w : "?", list ? list : "?");
        free(list);
        return r;
}

int ts_oci_index_select(const ts_oci_index *ix, const ts_oci_platform *want,
                        const ts_oci_descriptor **ret, ts_error **err) {
        const ts_oci_descriptor *best = NULL, *plain = NULL;
        int best_rank = INT_MAX;
        for (size_t i = 0; i < ix->n_manifests; i++) {
                const ts_oci_descriptor *d = &ix->manifests[i];
                ts_oci_kind k = ts_oci_media_kind(d->media_type);
                if (k != TS_OCI_KIND_MANIFEST && k != TS_OCI_KIND_INDEX)
                        continue;
                if (!d->platform) {
                        if (!plain)
                                plain = d;
                        continue;
                }
                int rank = ts_oci_platform_rank(want, d->platform);
                if (rank >= 0 && rank < best_rank) {
                        best = d;
                        best_rank = rank;
                }
        }
        if (!best)
                best = plain;
        if (!best)
                return no_match(ix, want, err);
        *ret = best;
        return 0;
}
