/* Import: an OCI image layout tarball or a `docker save` tarball into the
 * content store, then unpacked and published like a pull.
 *
 * A tar is read once, front to back (libarchive): every regular file is
 * streamed into containerd as a blob while its sha256 is computed, and the
 * small documents that say what the archive holds (index.json,
 * manifest.json) are kept in memory; they may come last (docker writes
 * manifest.json at the end). An OCI layout names its blobs by digest; a
 * docker save archive names files by path, so it gets a Docker schema 2
 * manifest written for each image in manifest.json, as containerd's own
 * importer does. */
#include "warm.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/json.h"
#include "common/log.h"
#include "common/strv.h"
#include "ctrd/content.h"
#include "ctrd/writer.h"
#include "oci/platform.h"
#include "oci/ref.h"

#define CHUNK (1 << 20)
#define MAX_FILES 65536
#define OCI_BLOB_DIR "blobs/sha256/"
#define ANN_CONTAINERD_NAME "io.containerd.image.name"
#define ANN_OCI_REF "org.opencontainers.image.ref.name"
#define DOCKER_LAYER_TAR "application/vnd.docker.image.rootfs.diff.tar"

/* A file of the archive, as stored: its path and the blob it became. */
typedef struct file {
        char *path;
        char digest[TS_DIGEST_MAX];
        int64_t size;
        bool gzip; /* starts with gzip's magic */
} file;

typedef struct archive_state {
        prov_job *j;
        file *files;
        size_t n_files;
        char *index_json, *manifest_json; /* OCI layout / docker save */
        size_t index_len, manifest_len;
} archive_state;

static void state_done(archive_state *s) {
        for (size_t i = 0; i < s->n_files; i++)
                free(s->files[i].path);
        free(s->files);
        free(s->index_json);
        free(s->manifest_json);
}

static const file *file_by_path(const archive_state *s, const char *path) {
        for (size_t i = 0; i < s->n_files; i++)
                if (strcmp(s->files[i].path, path) == 0)
                        return &s->files[i];
        return NULL;
}

static int archive_fail(struct archive *a, int r, const char *path, ts_error **err) {
        const char *why = archive_error_string(a);
        int e = archive_errno(a) > 0 ? archive_errno(a) : EBADMSG;
        (void) r;
        return ts_error_setf_plain(err, e, "%s: %s", path, why ? why : "not a tar archive");
}

/* Reads the entry's data whole (a document of at most TS_OCI_DOCUMENT_MAX). */
static int read_small(struct archive *a, int64_t size, const char *path, char **ret, size_t *ret_len,
                      ts_error **err) {
        if (size < 0 || size > TS_OCI_DOCUMENT_MAX)
                return ts_error_setf_plain(err, EFBIG, "%s is larger than %d bytes", path,
                                           TS_OCI_DOCUMENT_MAX);
        _cleanup_free_ char *buf = malloc((size_t) size + 1);
        if (!buf)
                return -ENOMEM;
        la_ssize_t n = archive_read_data(a, buf, (size_t) size);
        if (n != size)
                return archive_fail(a, (int) n, path, err);
        buf[size] = '\0';
        *ret = TAKE_PTR(buf);
        *ret_len = (size_t) size;
        return 0;
}

/* ---- pass one: every file into the content store ---- */

/* The blob a path names in an OCI layout ("blobs/sha256/<hex>"), or NULL. */
static bool oci_blob_digest(const char *path, char digest[TS_DIGEST_MAX]) {
        if (strncmp(path, OCI_BLOB_DIR, strlen(OCI_BLOB_DIR)) != 0)
                return false;
        snprintf(digest, TS_DIGEST_MAX, TS_DIGEST_PREFIX "%.64s", path + strlen(OCI_BLOB_DIR));
        return strlen(path + strlen(OCI_BLOB_DIR)) == 64 && ts_digest_validate(digest) == 0;
}

typedef struct copy_state {
        prov_job *j;
        struct archive *a;
        ts_ctrd_writer *w;
        ts_sha256 *h;
        file *f;
        uint8_t *buf;
} copy_state;

static int copy_data(copy_state *c, const char *path, ts_error **err) {
        int64_t left = c->f->size;
        for (bool first = true; left > 0; first = false) {
                if (prov_job_cancelled(c->j))
                        return -ECANCELED;
                la_ssize_t n = archive_read_data(c->a, c->buf, left < CHUNK ? (size_t) left : CHUNK);
                if (n <= 0)
                        return archive_fail(c->a, (int) n, path, err);
                if (first)
                        c->f->gzip = n >= 2 && c->buf[0] == 0x1f && c->buf[1] == 0x8b;
                ts_sha256_update(c->h, c->buf, (size_t) n);
                int r = ts_ctrd_writer_write(c->w, c->buf, (size_t) n, err);
                if (r < 0)
                        return r;
                left -= n;
        }
        return 0;
}

/* The ingest of a file: by its digest when the layout names it, else by
 * a digest of its path (docker save names files, not blobs). */
static void file_ref(const char *path, const char *expected, char *buf, size_t len) {
        char d[TS_DIGEST_MAX] = TS_DIGEST_PREFIX "unknown";
        if (!expected && ts_digest_buffer(path, strlen(path), d) >= 0)
                expected = d;
        prov_ingest_ref("import", expected ? expected : d, buf, len);
}

static int stream_file(copy_state *c, const char *path, const char *expected, ts_error **err) {
        char ref[160];
        file_ref(path, expected, ref, sizeof ref);
        int r = ts_ctrd_writer_open(c->j->c, c->j->lease, ref, c->f->size, expected, &c->w, err);
        if (r == 1) { /* stored already */
                snprintf(c->f->digest, sizeof c->f->digest, "%s", expected);
                return archive_read_data_skip(c->a) == ARCHIVE_OK ? 0 : archive_fail(c->a, r, path, err);
        }
        if (r >= 0)
                r = copy_data(c, path, err);
        if (r >= 0) {
                ts_sha256_final(c->h, c->f->digest);
                if (expected && strcmp(expected, c->f->digest) != 0)
                        r = ts_error_setf_plain(err, EBADMSG, "%s holds %s, not the blob it names",
                                                path, c->f->digest);
        }
        if (r >= 0)
                r = ts_ctrd_writer_commit(c->w, NULL, err);
        ts_ctrd_writer_free(TAKE_PTR(c->w));
        return r < 0 ? ts_error_prefix(err, r, "%s", path) : 0;
}

static int store_file(archive_state *s, struct archive *a, const char *path, int64_t size,
                      uint8_t *buf, ts_error **err) {
        if (s->n_files >= MAX_FILES)
                return ts_error_setf_plain(err, EFBIG, "more than %d files in the archive", MAX_FILES);
        file *v = realloc(s->files, (s->n_files + 1) * sizeof(*v));
        if (!v)
                return -ENOMEM;
        s->files = v;
        file *f = &v[s->n_files];
        *f = (file) { .size = size, .path = strdup(path) };
        if (!f->path)
                return -ENOMEM;
        char expected[TS_DIGEST_MAX];
        bool named = oci_blob_digest(path, expected);
        _cleanup_sha256_ ts_sha256 *h = NULL;
        int r = ts_sha256_new(&h);
        if (r < 0) {
                free(f->path);
                return r;
        }
        copy_state c = { .j = s->j, .a = a, .h = h, .f = f, .buf = buf };
        r = stream_file(&c, path, named ? expected : NULL, err);
        if (r < 0) {
                free(f->path);
                return r;
        }
        s->n_files++;
        return 0;
}

/* The documents that describe the archive, kept in memory. */
static char **small_doc(archive_state *s, const char *path, size_t **ret_len) {
        if (strcmp(path, "index.json") == 0) {
                *ret_len = &s->index_len;
                return &s->index_json;
        }
        if (strcmp(path, "manifest.json") == 0) {
                *ret_len = &s->manifest_len;
                return &s->manifest_json;
        }
        return NULL;
}

/* Files docker and the OCI layout keep for their own use, not blobs. */
static bool skipped(const char *path) {
        size_t n = strlen(path);
        return strcmp(path, "oci-layout") == 0 || strcmp(path, "repositories") == 0 ||
               (n >= 8 && strcmp(path + n - 8, "/VERSION") == 0) ||
               (n >= 5 && strcmp(path + n - 5, "/json") == 0);
}

static int read_entries(archive_state *s, struct archive *a, ts_error **err) {
        _cleanup_free_ uint8_t *buf = malloc(CHUNK);
        if (!buf)
                return -ENOMEM;
        struct archive_entry *e;
        int ar;
        while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
                const char *path = archive_entry_pathname(e);
                if (!path || archive_entry_filetype(e) != AE_IFREG)
                        continue;
                if (strncmp(path, "./", 2) == 0)
                        path += 2;
                if (skipped(path))
                        continue;
                size_t *len = NULL;
                char **doc = small_doc(s, path, &len);
                int64_t size = archive_entry_size(e);
                int r;
                if (doc) {
                        free(*doc);
                        *doc = NULL;
                        r = read_small(a, size, path, doc, len, err);
                } else
                        r = store_file(s, a, path, size, buf, err);
                if (r < 0)
                        return r;
        }
        return ar == ARCHIVE_EOF ? 0 : archive_fail(a, ar, s->j->import_path, err);
}

/* ---- pass two: the images the archive names ---- */

/* One image to publish: its name and the descriptor its record points at. */
typedef struct found {
        char *name;
        ts_ctrd_descriptor target;
} found;

typedef struct found_list {
        found *v;
        size_t n;
} found_list;

static void found_list_done(found_list *l) {
        for (size_t i = 0; i < l->n; i++) {
                free(l->v[i].name);
                ts_ctrd_descriptor_done(&l->v[i].target);
        }
        free(l->v);
}

static int normalise(const char *name, char **ret, ts_error **err) {
        _cleanup_ref_ ts_ref *ref = NULL;
        int r = ts_ref_parse(name, &ref, err);
        if (r < 0)
                return r;
        return (*ret = ts_ref_string(ref)) ? 0 : -ENOMEM;
}

static int add_found(found_list *l, const char *name, const char *media_type, const char *digest,
                     int64_t size, ts_error **err) {
        found f = { .target = { .size = size } };
        int r = normalise(name, &f.name, err);
        if (r < 0)
                return r;
        found *v = realloc(l->v, (l->n + 1) * sizeof(*v));
        f.target.media_type = strdup(media_type);
        f.target.digest = strdup(digest);
        if (!v || !f.target.media_type || !f.target.digest) {
                free(f.name);
                ts_ctrd_descriptor_done(&f.target);
                if (v)
                        l->v = v;
                return -ENOMEM;
        }
        l->v = v;
        l->v[l->n++] = f;
        return 0;
}

/* The name of an index.json entry: --name, else containerd's annotation,
 * else the OCI ref name when it is a whole reference. */
static const char *entry_name(const prov_job *j, const ts_oci_descriptor *d) {
        if (j->import_name)
                return j->import_name;
        const char *n = ts_oci_descriptor_annotation(d, ANN_CONTAINERD_NAME);
        if (n)
                return n;
        n = ts_oci_descriptor_annotation(d, ANN_OCI_REF);
        return n && (strchr(n, '/') || strchr(n, ':')) ? n : NULL;
}

static int oci_images(archive_state *s, found_list *out, ts_error **err) {
        ts_oci_index *ix = NULL;
        int r = ts_oci_index_parse(s->index_json, s->index_len, &ix, err);
        if (r < 0)
                return ts_error_prefix(err, r, "index.json");
        if (s->j->import_name && ix->n_manifests != 1)
                r = ts_error_setf_plain(err, EINVAL, "the archive holds %zu images: a name fits only "
                                                     "one", ix->n_manifests);
        for (size_t i = 0; r >= 0 && i < ix->n_manifests; i++) {
                const ts_oci_descriptor *d = &ix->manifests[i];
                const char *name = entry_name(s->j, d);
                if (name)
                        r = add_found(out, name, d->media_type, d->digest, d->size, err);
                else
                        log_warn("import %s: image %s has no name; give one with --name",
                                 s->j->import_path, d->digest);
        }
        ts_oci_index_free(ix);
        return r;
}

static json_object *descriptor_json(const char *media_type, const file *f) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "mediaType", json_object_new_string(media_type));
        json_object_object_add(o, "size", json_object_new_int64(f->size));
        json_object_object_add(o, "digest", json_object_new_string(f->digest));
        return o;
}

static const char *json_str(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v)
                       : NULL;
}

/* A Docker schema 2 manifest for one manifest.json entry, stored. */
static int docker_manifest(archive_state *s, json_object *entry, char digest[TS_DIGEST_MAX],
                           size_t *ret_size, ts_error **err) {
        const char *config = json_str(entry, "Config");
        const file *cf = config ? file_by_path(s, config) : NULL;
        json_object *layers;
        if (!cf || !json_object_object_get_ex(entry, "Layers", &layers) ||
            !json_object_is_type(layers, json_type_array))
                return ts_error_setf_plain(err, EBADMSG, "manifest.json: an image without its config "
                                                         "or layers in the archive");
        _cleanup_json_ json_object *m = json_object_new_object();
        json_object *ls = json_object_new_array();
        json_object_object_add(m, "schemaVersion", json_object_new_int(2));
        json_object_object_add(m, "mediaType", json_object_new_string(TS_DOCKER_MEDIA_MANIFEST));
        json_object_object_add(m, "config", descriptor_json(TS_DOCKER_MEDIA_CONFIG, cf));
        json_object_object_add(m, "layers", ls);
        for (size_t i = 0; i < json_object_array_length(layers); i++) {
                const char *path = json_object_get_string(json_object_array_get_idx(layers, i));
                const file *lf = path ? file_by_path(s, path) : NULL;
                if (!lf)
                        return ts_error_setf_plain(err, EBADMSG, "manifest.json: layer %s is not in "
                                                                 "the archive", path ? path : "?");
                json_object_array_add(ls, descriptor_json(lf->gzip ? TS_DOCKER_MEDIA_LAYER_GZIP
                                                                   : DOCKER_LAYER_TAR, lf));
        }
        size_t len;
        const char *text = json_object_to_json_string_length(m, JSON_C_TO_STRING_PLAIN, &len);
        int r = ts_digest_buffer(text, len, digest);
        char ref[128];
        prov_ingest_ref("manifest", digest, ref, sizeof ref);
        if (r >= 0)
                r = prov_store_bytes(s->j, ref, digest, text, len, NULL, err);
        *ret_size = len;
        return r;
}

static int docker_images(archive_state *s, found_list *out, ts_error **err) {
        _cleanup_json_ json_object *all = json_tokener_parse(s->manifest_json);
        if (!all || !json_object_is_type(all, json_type_array))
                return ts_error_setf_plain(err, EBADMSG, "manifest.json is not a JSON array");
        size_t n = json_object_array_length(all);
        if (s->j->import_name && n != 1)
                return ts_error_setf_plain(err, EINVAL, "the archive holds %zu images: a name fits "
                                                        "only one", n);
        for (size_t i = 0; i < n; i++) {
                json_object *entry = json_object_array_get_idx(all, i), *tags = NULL;
                char digest[TS_DIGEST_MAX];
                size_t size = 0;
                int r = docker_manifest(s, entry, digest, &size, err);
                if (r < 0)
                        return r;
                if (s->j->import_name) {
                        r = add_found(out, s->j->import_name, TS_DOCKER_MEDIA_MANIFEST, digest,
                                      (int64_t) size, err);
                        if (r < 0)
                                return r;
                        continue;
                }
                json_object_object_get_ex(entry, "RepoTags", &tags);
                size_t nt = tags && json_object_is_type(tags, json_type_array)
                                    ? json_object_array_length(tags) : 0;
                for (size_t t = 0; r >= 0 && t < nt; t++)
                        r = add_found(out, json_object_get_string(json_object_array_get_idx(tags, t)),
                                      TS_DOCKER_MEDIA_MANIFEST, digest, (int64_t) size, err);
                if (r < 0)
                        return r;
                if (nt == 0)
                        log_warn("import %s: image %s has no name; give one with --name",
                                 s->j->import_path, digest);
        }
        return 0;
}

static int publish_found(prov_job *j, const found *f, ts_error **err) {
        ts_oci_descriptor t = {
                .media_type = f->target.media_type,
                .digest = f->target.digest,
                .size = f->target.size,
        };
        prov_docs d = { 0 };
        prov_job_set_digest(j, f->target.digest);
        int r = prov_docs_load(j, NULL, &t, f->name, &d, err);
        if (r >= 0)
                r = prov_unpack_and_publish(j, &d, NULL, NULL, err);
        prov_docs_done(&d);
        return r < 0 ? ts_error_prefix(err, r, "image %s", f->name) : 0;
}

static int open_archive(prov_job *j, struct archive **ret, ts_error **err) {
        if (lseek(j->import_fd, 0, SEEK_SET) < 0)
                return ts_error_set(err, errno, "%s", j->import_path);
        struct archive *a = archive_read_new();
        if (!a)
                return -ENOMEM;
        archive_read_support_format_tar(a);
        archive_read_support_format_gnutar(a);
        archive_read_support_filter_all(a);
        if (archive_read_open_fd(a, j->import_fd, CHUNK) != ARCHIVE_OK) {
                int r = archive_fail(a, -1, j->import_path, err);
                archive_read_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

int prov_import(prov_job *j, ts_error **err) {
        struct archive *a = NULL;
        archive_state s = { .j = j };
        found_list images = { 0 };
        int r = open_archive(j, &a, err);
        if (r >= 0)
                r = read_entries(&s, a, err);
        if (r >= 0 && s.index_json)
                r = oci_images(&s, &images, err);
        else if (r >= 0 && s.manifest_json)
                r = docker_images(&s, &images, err);
        else if (r >= 0)
                r = ts_error_setf_plain(err, EBADMSG, "neither an OCI image layout (index.json) nor "
                                                      "a docker save archive (manifest.json)");
        if (r >= 0 && images.n == 0)
                r = ts_error_setf_plain(err, EINVAL, "the archive names no image: give it a name");
        for (size_t i = 0; r >= 0 && i < images.n; i++)
                r = publish_found(j, &images.v[i], err);
        found_list_done(&images);
        state_done(&s);
        if (a)
                archive_read_free(a);
        return r < 0 ? ts_error_prefix(err, r, "import %s", j->import_path) : 0;
}
