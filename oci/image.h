/* OCI and Docker schema 2 image documents, parsed with json-c: index / manifest list,
 * manifest, image config; descriptors; containerd's choice of a manifest for a platform.
 *
 * Parsers take untrusted bytes (at most TS_OCI_DOCUMENT_MAX), check every field they hand
 * out (digests, sizes, media types, strings) and name what is wrong. Errors:
 * -EMSGSIZE (too big), -EBADMSG (not JSON, a missing or mistyped field, a bad digest),
 * -EOPNOTSUPP (schema 1, or a media type that is not the kind of document asked for),
 * -ENOMEM. */
#pragma once

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "oci/platform.h"

#define TS_OCI_DOCUMENT_MAX (4 << 20)

#define TS_OCI_MEDIA_INDEX "application/vnd.oci.image.index.v1+json"
#define TS_OCI_MEDIA_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define TS_OCI_MEDIA_CONFIG "application/vnd.oci.image.config.v1+json"
#define TS_OCI_MEDIA_LAYER "application/vnd.oci.image.layer.v1.tar"
#define TS_OCI_MEDIA_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define TS_OCI_MEDIA_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define TS_OCI_MEDIA_LAYER_FOREIGN "application/vnd.oci.image.layer.nondistributable.v1.tar"
#define TS_OCI_MEDIA_LAYER_FOREIGN_GZIP                                                  \
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
#define TS_OCI_MEDIA_LAYER_FOREIGN_ZSTD                                                  \
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
#define TS_DOCKER_MEDIA_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define TS_DOCKER_MEDIA_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define TS_DOCKER_MEDIA_CONFIG "application/vnd.docker.container.image.v1+json"
#define TS_DOCKER_MEDIA_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define TS_DOCKER_MEDIA_LAYER_FOREIGN_GZIP                                               \
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#define TS_DOCKER_MEDIA_SCHEMA1 "application/vnd.docker.distribution.manifest.v1+json"
#define TS_DOCKER_MEDIA_SCHEMA1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"

typedef enum ts_oci_kind {
        TS_OCI_KIND_UNKNOWN = 0,
        TS_OCI_KIND_INDEX,    /* OCI index, Docker manifest list */
        TS_OCI_KIND_MANIFEST, /* OCI manifest, Docker schema 2 manifest */
        TS_OCI_KIND_CONFIG,   /* OCI or Docker image config */
        TS_OCI_KIND_LAYER,    /* a layer tar, plain or compressed, foreign or not */
        TS_OCI_KIND_SCHEMA1,  /* Docker schema 1: recognised, never supported */
} ts_oci_kind;

/* What a media type names (parameters such as "; charset=utf-8" are ignored). */
ts_oci_kind ts_oci_media_kind(const char *media_type);

typedef enum ts_oci_compression {
        TS_OCI_UNCOMPRESSED = 0,
        TS_OCI_GZIP,
        TS_OCI_ZSTD,
} ts_oci_compression;

/* The compression of a layer media type: >= 0 (ts_oci_compression), or -EOPNOTSUPP when
 * the type is not a layer tar. */
int ts_oci_layer_compression(const char *media_type);

typedef struct ts_oci_descriptor {
        char *media_type;
        char *digest;              /* validated "sha256:<hex>" */
        int64_t size;              /* >= 0 */
        ts_oci_platform *platform; /* NULL when absent; as written (not normalised) */
        char **annotations;        /* NULL, or key, value, key, value, ..., NULL */
        char **urls;               /* NULL, or a NULL-terminated list */
} ts_oci_descriptor;

/* The value of an annotation, or NULL. */
const char *ts_oci_descriptor_annotation(const ts_oci_descriptor *d, const char *key);
/* Deep copy. Returns 0 or -ENOMEM. */
int ts_oci_descriptor_copy(const ts_oci_descriptor *d, ts_oci_descriptor **ret);
void ts_oci_descriptor_done(ts_oci_descriptor *d);
ts_oci_descriptor *ts_oci_descriptor_free(ts_oci_descriptor *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_oci_descriptor *, ts_oci_descriptor_free)
#define _cleanup_descriptor_ _cleanup_(ts_oci_descriptor_freep)

typedef struct ts_oci_index {
        char *media_type; /* as written; NULL when the document has none */
        ts_oci_descriptor *manifests;
        size_t n_manifests;
} ts_oci_index;

typedef struct ts_oci_manifest {
        char *media_type; /* as written; NULL when the document has none */
        ts_oci_descriptor config;
        ts_oci_descriptor *layers;
        size_t n_layers;
} ts_oci_manifest;

typedef struct ts_oci_config {
        ts_oci_platform platform; /* os, architecture, variant as written */
        char **diff_ids;          /* rootfs.diff_ids, validated */
        size_t n_diff_ids;
        /* config.*: NULL when absent or null */
        char **entrypoint, **cmd, **env;
        char *working_dir, *user;
        char **exposed_ports; /* the keys of ExposedPorts ("80/tcp"), as written */
        char **labels;        /* key, value, ..., NULL */
        size_t n_history;
        json_object *json;    /* the whole document, for add_layer and serialize */
} ts_oci_config;

/* Parses an OCI index or a Docker manifest list (mediaType absent or one of those two).
 * A manifest given where an index is expected is -EOPNOTSUPP. */
int ts_oci_index_parse(const void *p, size_t n, ts_oci_index **ret, ts_error **err);
ts_oci_index *ts_oci_index_free(ts_oci_index *ix);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_oci_index *, ts_oci_index_free)
#define _cleanup_index_ _cleanup_(ts_oci_index_freep)

/* Parses an OCI manifest or a Docker schema 2 manifest. Schema 1 and indexes are
 * -EOPNOTSUPP. Layer media types are not judged here (see ts_oci_image_check). */
int ts_oci_manifest_parse(const void *p, size_t n, ts_oci_manifest **ret, ts_error **err);
ts_oci_manifest *ts_oci_manifest_free(ts_oci_manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_oci_manifest *, ts_oci_manifest_free)
#define _cleanup_manifest_ _cleanup_(ts_oci_manifest_freep)

/* Parses an image config (OCI or Docker). */
int ts_oci_config_parse(const void *p, size_t n, ts_oci_config **ret, ts_error **err);
ts_oci_config *ts_oci_config_free(ts_oci_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_oci_config *, ts_oci_config_free)
#define _cleanup_config_ _cleanup_(ts_oci_config_freep)

/* Appends a layer to the config's document: diff_id to rootfs.diff_ids and a history
 * entry {created, created_by, comment} (NULL ones left out); c's fields follow.
 * Returns 0, -EINVAL (diff_id not a digest) or -ENOMEM. */
int ts_oci_config_add_layer(ts_oci_config *c, const char *diff_id, const char *created,
                            const char *created_by, const char *comment);

/* The config's document as compact JSON (malloc()ed, NUL-terminated; *ret_len without the
 * NUL). Returns 0 or -ENOMEM. */
int ts_oci_config_serialize(const ts_oci_config *c, char **ret, size_t *ret_len);

/* Whether manifest and config make an image that can be unpacked: the config descriptor
 * is an image config, every layer is a layer tar (-EOPNOTSUPP naming the media type),
 * and there are as many layers as diff_ids (-EBADMSG naming both counts). */
int ts_oci_image_check(const ts_oci_manifest *m, const ts_oci_config *c, ts_error **err);

/* containerd's choice of a manifest for want: among the index's manifest and index
 * entries, the best-ranked platform (ts_oci_platform_rank), the first of equals; an entry
 * without a platform only when none matches (entries of other platforms, such as the
 * unknown/unknown of attestations, never). -ENOENT with the platforms the index has. */
int ts_oci_index_select(const ts_oci_index *ix, const ts_oci_platform *want,
                        const ts_oci_descriptor **ret, ts_error **err);
