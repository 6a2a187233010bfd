#include <check.h>
#include <errno.h>
#include <string.h>

#include "oci/digest.h"
#include "oci/image.h"
#include "tests/unit/ts-check.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define D4 "sha256:4444444444444444444444444444444444444444444444444444444444444444"
#define D5 "sha256:5555555555555555555555555555555555555555555555555555555555555555"
#define D6 "sha256:6666666666666666666666666666666666666666666666666666666666666666"

#define ENTRY(mt, d, plat) "{\"mediaType\":\"" mt "\",\"digest\":\"" d "\",\"size\":100" plat "}"
#define PLAT(os, arch) ",\"platform\":{\"os\":\"" os "\",\"architecture\":\"" arch "\"}"
#define PLATV(os, arch, v) ",\"platform\":{\"os\":\"" os "\",\"architecture\":\"" arch "\",\"variant\":\"" v "\"}"

/* As buildkit writes a multi-platform image with attestations. */
static const char oci_index[] =
        "{\"schemaVersion\":2,\"mediaType\":\"" TS_OCI_MEDIA_INDEX "\",\"manifests\":["
        ENTRY(TS_OCI_MEDIA_MANIFEST, D1, PLATV("linux", "arm64", "v8")) ","
        ENTRY(TS_OCI_MEDIA_MANIFEST, D2, PLATV("linux", "arm", "v6")) ","
        ENTRY(TS_OCI_MEDIA_MANIFEST, D3, PLAT("linux", "386")) ","
        ENTRY(TS_OCI_MEDIA_MANIFEST, D4, PLAT("linux", "amd64")) ","
        "{\"mediaType\":\"" TS_OCI_MEDIA_MANIFEST "\",\"digest\":\"" D5 "\",\"size\":840"
        PLAT("unknown", "unknown") ",\"annotations\":{\"vnd.docker.reference.digest\":\"" D4 "\","
        "\"vnd.docker.reference.type\":\"attestation-manifest\"}}"
        "]}";

static ts_oci_index *index_of(const char *doc) {
        ts_oci_index *ix = NULL;
        ts_error *err = NULL;
        int r = ts_oci_index_parse(doc, strlen(doc), &ix, &err);
        ck_assert_msg(r == 0, "%d %s", r, ts_error_message(err, r));
        return ix;
}

static const char *select_for(const ts_oci_index *ix, const char *platform) {
        ts_oci_platform *want = NULL;
        ck_assert_int_eq(ts_oci_platform_parse(platform, &want, NULL), 0);
        const ts_oci_descriptor *d = NULL;
        int r = ts_oci_index_select(ix, want, &d, NULL);
        ts_oci_platform_free(want);
        return r == 0 ? d->digest : NULL;
}

START_TEST(index_fields) {
        ts_oci_index *ix = index_of(oci_index);
        ck_assert_str_eq(ix->media_type, TS_OCI_MEDIA_INDEX);
        ck_assert_uint_eq(ix->n_manifests, 5);
        ck_assert_str_eq(ix->manifests[0].digest, D1);
        ck_assert_int_eq(ix->manifests[0].size, 100);
        ck_assert_str_eq(ix->manifests[0].platform->variant, "v8");
        ck_assert_ptr_null(ix->manifests[3].platform->variant);
        ck_assert_str_eq(ts_oci_descriptor_annotation(&ix->manifests[4], "vnd.docker.reference.type"),
                         "attestation-manifest");
        ck_assert_ptr_null(ts_oci_descriptor_annotation(&ix->manifests[0], "x"));
        ts_oci_descriptor *copy = NULL;
        ck_assert_int_eq(ts_oci_descriptor_copy(&ix->manifests[4], &copy), 0);
        ck_assert_str_eq(copy->digest, D5);
        ck_assert_str_eq(copy->platform->os, "unknown");
        ck_assert_str_eq(ts_oci_descriptor_annotation(copy, "vnd.docker.reference.digest"), D4);
        ts_oci_descriptor_free(copy);
        ts_oci_index_free(ix);
}
END_TEST

START_TEST(select_like_containerd) {
        ts_oci_index *ix = index_of(oci_index);
        ck_assert_pstr_eq(select_for(ix, "linux/amd64"), D4);
        ck_assert_pstr_eq(select_for(ix, "linux/x86_64"), D4);
        ck_assert_pstr_eq(select_for(ix, "linux/arm64"), D1);
        ck_assert_pstr_eq(select_for(ix, "linux/aarch64/v8"), D1);
        ck_assert_pstr_eq(select_for(ix, "linux/arm/v7"), D2); /* v7 runs v6 */
        ck_assert_pstr_eq(select_for(ix, "linux/armhf"), D2);
        ck_assert_pstr_eq(select_for(ix, "linux/386"), D3);
        ck_assert_pstr_eq(select_for(ix, "linux/arm/v5"), NULL); /* v5 does not run v6 */
        ck_assert_pstr_eq(select_for(ix, "windows/amd64"), NULL);
        ts_oci_index_free(ix);

        /* amd64 falls back to 386, arm64 to arm; order within the index does not matter */
        ix = index_of("{\"schemaVersion\":2,\"manifests\":["
                      ENTRY(TS_OCI_MEDIA_MANIFEST, D1, PLAT("linux", "386")) ","
                      ENTRY(TS_OCI_MEDIA_MANIFEST, D2, PLATV("linux", "arm", "v7")) ","
                      ENTRY(TS_OCI_MEDIA_MANIFEST, D3, PLATV("linux", "arm", "v8")) "]}");
        ck_assert_pstr_eq(select_for(ix, "linux/amd64"), D1);
        ck_assert_pstr_eq(select_for(ix, "linux/arm64"), D3);
        ts_oci_index_free(ix);

        /* an entry without a platform only when nothing matches; a layer entry never */
        ix = index_of("{\"schemaVersion\":2,\"manifests\":["
                      ENTRY(TS_OCI_MEDIA_LAYER, D6, "") ","
                      ENTRY(TS_OCI_MEDIA_MANIFEST, D1, "") ","
                      ENTRY(TS_DOCKER_MEDIA_MANIFEST, D2, PLAT("linux", "amd64")) "]}");
        ck_assert_pstr_eq(select_for(ix, "linux/amd64"), D2);
        ck_assert_pstr_eq(select_for(ix, "linux/s390x"), D1);
        ts_oci_index_free(ix);
}
END_TEST

START_TEST(select_names_what_there_is) {
        ts_oci_index *ix = index_of(oci_index);
        ts_oci_platform *want = NULL;
        ck_assert_int_eq(ts_oci_platform_parse("linux/s390x", &want, NULL), 0);
        const ts_oci_descriptor *d = NULL;
        ts_error *err = NULL;
        ck_assert_int_eq(ts_oci_index_select(ix, want, &d, &err), -ENOENT);
        ck_assert_ptr_null(d);
        ck_assert_str_eq(err->msg, "no manifest for platform linux/s390x in the index (it has: "
                                   "linux/arm64/v8, linux/arm/v6, linux/386, linux/amd64, "
                                   "unknown/unknown)");
        ts_error_free(err);
        ts_oci_platform_free(want);
        ts_oci_index_free(ix);
}
END_TEST

START_TEST(docker_list) {
        ts_oci_index *ix = index_of(
                "{\"schemaVersion\":2,\"mediaType\":\"" TS_DOCKER_MEDIA_LIST "\",\"manifests\":["
                "{\"mediaType\":\"" TS_DOCKER_MEDIA_MANIFEST "\",\"size\":528,\"digest\":\"" D1 "\","
                "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\",\"features\":[\"sse4\"]}}]}");
        ck_assert_str_eq(ix->media_type, TS_DOCKER_MEDIA_LIST);
        ck_assert_pstr_eq(select_for(ix, "linux/amd64"), D1);
        ts_oci_index_free(ix);
}
END_TEST

static void index_bad(const char *doc, size_t n, int want, const char *msg) {
        ts_oci_index *ix = NULL;
        ts_error *err = NULL;
        int r = ts_oci_index_parse(doc, n, &ix, &err);
        ck_assert_msg(r == want, "%s: got %d (%s)", doc, r, ts_error_message(err, r));
        ck_assert_ptr_null(ix);
        ck_assert_msg(strstr(err->msg, msg), "message \"%s\" lacks \"%s\"", err->msg, msg);
        ts_error_free(err);
}

#define BAD(doc, want, msg) index_bad(doc, strlen(doc), want, msg)

START_TEST(index_rejects) {
        BAD("", -EBADMSG, "not JSON");
        BAD("[]", -EBADMSG, "not a JSON object");
        BAD("{\"schemaVersion\":2,\"manifests\":[]} x", -EBADMSG, "data after the document");
        BAD("{\"schemaVersion\":2,\"manifests\":[", -EBADMSG, "not JSON");
        index_bad("{\"schemaVersion\":2,\0\"manifests\":[]}", 34, -EBADMSG, "NUL");
        BAD("{\"manifests\":[]}", -EBADMSG, "schemaVersion");
        BAD("{\"schemaVersion\":3,\"manifests\":[]}", -EBADMSG, "schemaVersion 3 is not 2");
        BAD("{\"schemaVersion\":2}", -EBADMSG, "no \"manifests\" array");
        BAD("{\"schemaVersion\":2,\"mediaType\":\"" TS_OCI_MEDIA_MANIFEST "\",\"manifests\":[]}",
            -EOPNOTSUPP, "is not an index or manifest list");
        BAD("{\"schemaVersion\":2,\"mediaType\":7,\"manifests\":[]}", -EBADMSG,
            "\"mediaType\" is not a string");
        BAD("{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"" D1 "\",\"size\":1}]}", -EBADMSG,
            "index: manifests[0]: no \"mediaType\"");
        BAD("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"sha256:AB\",\"size\":1}]}",
            -EBADMSG, "digest \"sha256:AB\" is not");
        BAD("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D1 "\",\"size\":-1}]}",
            -EBADMSG, "negative size");
        BAD("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D1 "\",\"size\":\"1\"}]}",
            -EBADMSG, "no integer \"size\"");
        BAD("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D1 "\",\"size\":1,"
            "\"platform\":{\"os\":\"linux\"}}]}", -EBADMSG, "manifests[0]: platform: no \"architecture\"");
        BAD("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D1 "\",\"size\":1,"
            "\"annotations\":{\"a\":1}}]}", -EBADMSG, "\"annotations\" holds something that is not a string");
        BAD("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"a\\u0000b\",\"digest\":\"" D1 "\",\"size\":1}]}",
            -EBADMSG, "holds a NUL");

        size_t n = TS_OCI_DOCUMENT_MAX + 1;
        char *big = malloc(n);
        memset(big, ' ', n);
        index_bad(big, n, -EMSGSIZE, "more than the 4194304 allowed");
        free(big);
}
END_TEST

static const char oci_manifest[] =
        "{\"schemaVersion\":2,\"mediaType\":\"" TS_OCI_MEDIA_MANIFEST "\","
        "\"config\":{\"mediaType\":\"" TS_OCI_MEDIA_CONFIG "\",\"digest\":\"" D1 "\",\"size\":1469},"
        "\"layers\":[{\"mediaType\":\"" TS_OCI_MEDIA_LAYER_GZIP "\",\"digest\":\"" D2 "\",\"size\":3408729},"
        "{\"mediaType\":\"" TS_OCI_MEDIA_LAYER "\",\"digest\":\"" D3 "\",\"size\":20983808},"
        "{\"mediaType\":\"" TS_OCI_MEDIA_LAYER_ZSTD "\",\"digest\":\"" D4 "\",\"size\":5}],"
        "\"annotations\":{\"org.opencontainers.image.created\":\"2024-01-01T00:00:00Z\"}}";

static const char docker_manifest[] =
        "{\"schemaVersion\":2,\"mediaType\":\"" TS_DOCKER_MEDIA_MANIFEST "\","
        "\"config\":{\"mediaType\":\"" TS_DOCKER_MEDIA_CONFIG "\",\"size\":7023,\"digest\":\"" D1 "\"},"
        "\"layers\":[{\"mediaType\":\"" TS_DOCKER_MEDIA_LAYER_GZIP "\",\"size\":32654,\"digest\":\"" D2 "\"},"
        "{\"mediaType\":\"" TS_DOCKER_MEDIA_LAYER_FOREIGN_GZIP "\",\"size\":16724,\"digest\":\"" D3 "\","
        "\"urls\":[\"https://example.com/layer\"]}]}";

static const char config_doc[] =
        "{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\","
        "\"created\":\"2024-01-01T00:00:00Z\","
        "\"config\":{\"User\":\"1000:1000\",\"ExposedPorts\":{\"80/tcp\":{},\"53/udp\":{}},"
        "\"Env\":[\"PATH=/usr/bin:/bin\",\"LANG=C.UTF-8\"],\"Entrypoint\":[\"/init\"],"
        "\"Cmd\":[\"--serve\",\"/srv\"],\"WorkingDir\":\"/srv\",\"Labels\":{\"a\":\"1\",\"b\":\"two\"},"
        "\"StopSignal\":\"SIGTERM\"},"
        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D5 "\",\"" D6 "\",\"" D4 "\"]},"
        "\"history\":[{\"created_by\":\"a\"},{\"created_by\":\"b\",\"empty_layer\":true},"
        "{\"created_by\":\"c\"},{\"created_by\":\"d\"}]}";

static ts_oci_manifest *manifest_of(const char *doc) {
        ts_oci_manifest *m = NULL;
        ts_error *err = NULL;
        int r = ts_oci_manifest_parse(doc, strlen(doc), &m, &err);
        ck_assert_msg(r == 0, "%d %s", r, ts_error_message(err, r));
        return m;
}

static ts_oci_config *config_of(const char *doc) {
        ts_oci_config *c = NULL;
        ts_error *err = NULL;
        int r = ts_oci_config_parse(doc, strlen(doc), &c, &err);
        ck_assert_msg(r == 0, "%d %s", r, ts_error_message(err, r));
        return c;
}

START_TEST(manifests) {
        ts_oci_manifest *m = manifest_of(oci_manifest);
        ck_assert_str_eq(m->media_type, TS_OCI_MEDIA_MANIFEST);
        ck_assert_str_eq(m->config.digest, D1);
        ck_assert_int_eq(m->config.size, 1469);
        ck_assert_uint_eq(m->n_layers, 3);
        ck_assert_int_eq(m->layers[1].size, 20983808);
        ck_assert_int_eq(ts_oci_layer_compression(m->layers[0].media_type), TS_OCI_GZIP);
        ck_assert_int_eq(ts_oci_layer_compression(m->layers[1].media_type), TS_OCI_UNCOMPRESSED);
        ck_assert_int_eq(ts_oci_layer_compression(m->layers[2].media_type), TS_OCI_ZSTD);
        ts_oci_manifest_free(m);

        m = manifest_of(docker_manifest);
        ck_assert_str_eq(m->media_type, TS_DOCKER_MEDIA_MANIFEST);
        ck_assert_uint_eq(m->n_layers, 2);
        ck_assert_str_eq(m->layers[1].urls[0], "https://example.com/layer");
        ck_assert_int_eq(ts_oci_layer_compression(m->layers[1].media_type), TS_OCI_GZIP);
        ts_oci_manifest_free(m);
        ck_assert_ptr_null(ts_oci_manifest_free(NULL));

        ck_assert_int_eq(ts_oci_media_kind(TS_DOCKER_MEDIA_LIST), TS_OCI_KIND_INDEX);
        ck_assert_int_eq(ts_oci_media_kind(TS_OCI_MEDIA_MANIFEST "; charset=utf-8"), TS_OCI_KIND_MANIFEST);
        ck_assert_int_eq(ts_oci_media_kind(TS_DOCKER_MEDIA_SCHEMA1_SIGNED), TS_OCI_KIND_SCHEMA1);
        ck_assert_int_eq(ts_oci_media_kind("application/json"), TS_OCI_KIND_UNKNOWN);
        ck_assert_int_eq(ts_oci_media_kind(NULL), TS_OCI_KIND_UNKNOWN);
        ck_assert_int_eq(ts_oci_layer_compression(TS_OCI_MEDIA_CONFIG), -EOPNOTSUPP);
}
END_TEST

static void manifest_bad(const char *doc, int want, const char *msg) {
        ts_oci_manifest *m = NULL;
        ts_error *err = NULL;
        int r = ts_oci_manifest_parse(doc, strlen(doc), &m, &err);
        ck_assert_msg(r == want, "%s: got %d (%s)", doc, r, ts_error_message(err, r));
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(err->msg, msg), "message \"%s\" lacks \"%s\"", err->msg, msg);
        ts_error_free(err);
}

START_TEST(manifest_rejects) {
        manifest_bad("{\"schemaVersion\":1,\"name\":\"library/x\",\"tag\":\"latest\","
                     "\"fsLayers\":[],\"signatures\":[]}",
                     -EOPNOTSUPP, "Docker schema 1 manifests are not supported");
        manifest_bad(oci_index, -EOPNOTSUPP, "is not an image manifest");
        manifest_bad("{\"schemaVersion\":2,\"layers\":[]}", -EBADMSG, "no \"config\"");
        manifest_bad("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"" D1 "\","
                     "\"size\":1}}", -EBADMSG, "no \"layers\" array");
        manifest_bad("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"" D1 "\","
                     "\"size\":1},\"layers\":[{\"mediaType\":\"x\",\"digest\":\"" D1 "\"}]}",
                     -EBADMSG, "manifest: layers[0]: no integer \"size\"");
        manifest_bad("{\"schemaVersion\":2,\"config\":[],\"layers\":[]}", -EBADMSG,
                     "manifest: config: not an object");
}
END_TEST

START_TEST(config_fields) {
        ts_oci_config *c = config_of(config_doc);
        ck_assert_str_eq(c->platform.os, "linux");
        ck_assert_str_eq(c->platform.architecture, "arm");
        ck_assert_str_eq(c->platform.variant, "v7");
        ck_assert_uint_eq(c->n_diff_ids, 3);
        ck_assert_str_eq(c->diff_ids[2], D4);
        ck_assert_str_eq(c->entrypoint[0], "/init");
        ck_assert_ptr_null(c->entrypoint[1]);
        ck_assert_str_eq(c->cmd[1], "/srv");
        ck_assert_str_eq(c->env[1], "LANG=C.UTF-8");
        ck_assert_str_eq(c->working_dir, "/srv");
        ck_assert_str_eq(c->user, "1000:1000");
        ck_assert_str_eq(c->exposed_ports[0], "80/tcp");
        ck_assert_str_eq(c->exposed_ports[1], "53/udp");
        ck_assert_ptr_null(c->exposed_ports[2]);
        ck_assert_str_eq(c->labels[2], "b");
        ck_assert_str_eq(c->labels[3], "two");
        ck_assert_uint_eq(c->n_history, 4);
        ts_oci_config_free(c);

        /* a config without "config", with null fields */
        c = config_of("{\"os\":\"linux\",\"architecture\":\"amd64\",\"config\":{\"Cmd\":null,"
                      "\"Entrypoint\":[]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}");
        ck_assert_ptr_null(c->cmd);
        ck_assert_ptr_nonnull(c->entrypoint);
        ck_assert_ptr_null(c->entrypoint[0]);
        ck_assert_ptr_null(c->env);
        ck_assert_ptr_null(c->working_dir);
        ck_assert_uint_eq(c->n_diff_ids, 0);
        ck_assert_uint_eq(c->n_history, 0);
        ts_oci_config_free(c);
}
END_TEST

START_TEST(config_add_layer) {
        ts_oci_config *c = config_of(config_doc);
        ck_assert_int_eq(ts_oci_config_add_layer(c, "sha256:nope", NULL, NULL, NULL), -EINVAL);
        ck_assert_int_eq(ts_oci_config_add_layer(c, D1, "2024-02-02T00:00:00Z", "thinsnap agent", NULL), 0);
        ck_assert_uint_eq(c->n_diff_ids, 4);
        ck_assert_str_eq(c->diff_ids[3], D1);
        ck_assert_uint_eq(c->n_history, 5);
        char *s = NULL;
        size_t n = 0;
        ck_assert_int_eq(ts_oci_config_serialize(c, &s, &n), 0);
        ck_assert_uint_eq(n, strlen(s));
        ts_oci_config_free(c);

        /* what was written parses back with the layer and everything else kept */
        c = config_of(s);
        free(s);
        ck_assert_uint_eq(c->n_diff_ids, 4);
        ck_assert_str_eq(c->diff_ids[0], D5);
        ck_assert_str_eq(c->diff_ids[3], D1);
        ck_assert_uint_eq(c->n_history, 5);
        ck_assert_str_eq(c->cmd[0], "--serve");
        json_object *h = json_object_object_get(c->json, "history");
        json_object *last = json_object_array_get_idx(h, 4);
        ck_assert_str_eq(json_object_get_string(json_object_object_get(last, "created_by")), "thinsnap agent");
        ck_assert_ptr_null(json_object_object_get(last, "comment"));
        ck_assert_str_eq(json_object_get_string(json_object_object_get(
                                 json_object_object_get(c->json, "config"), "StopSignal")), "SIGTERM");
        ts_oci_config_free(c);

        /* a config without history gets one */
        c = config_of("{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}");
        ck_assert_int_eq(ts_oci_config_add_layer(c, D2, NULL, NULL, "c"), 0);
        ck_assert_uint_eq(c->n_history, 1);
        ck_assert_int_eq(ts_oci_config_serialize(c, &s, &n), 0);
        ck_assert_str_eq(s, "{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"layers\","
                            "\"diff_ids\":[\"" D2 "\"]},\"history\":[{\"comment\":\"c\"}]}");
        free(s);
        ts_oci_config_free(c);
}
END_TEST

static void config_bad(const char *doc, int want, const char *msg) {
        ts_oci_config *c = NULL;
        ts_error *err = NULL;
        int r = ts_oci_config_parse(doc, strlen(doc), &c, &err);
        ck_assert_msg(r == want, "%s: got %d (%s)", doc, r, ts_error_message(err, r));
        ck_assert_ptr_null(c);
        ck_assert_msg(strstr(err->msg, msg), "message \"%s\" lacks \"%s\"", err->msg, msg);
        ts_error_free(err);
}

#define RF "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}"

START_TEST(config_rejects) {
        config_bad("{\"architecture\":\"amd64\"," RF "}", -EBADMSG, "config: no \"os\"");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\"}", -EBADMSG, "no \"rootfs\" object");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"x\",\"diff_ids\":[]}}",
                   -EBADMSG, "type \"x\" is not \"layers\"");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"layers\"}}",
                   -EBADMSG, "no \"diff_ids\"");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"layers\","
                   "\"diff_ids\":[\"" D1 "\",\"sha256:x\"]}}", -EBADMSG, "diff_ids[1] \"sha256:x\"");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\"," RF ",\"config\":{\"Cmd\":\"sh\"}}",
                   -EBADMSG, "config: config: \"Cmd\" is not an array");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\"," RF ",\"config\":{\"Env\":[1]}}",
                   -EBADMSG, "\"Env\" holds something that is not a string");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\"," RF ",\"config\":{\"Labels\":[]}}",
                   -EBADMSG, "\"Labels\" is not an object");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\"," RF ",\"history\":{}}",
                   -EBADMSG, "\"history\" is not an array");
        config_bad("{\"os\":\"linux\",\"architecture\":\"amd64\"," RF ",\"config\":7}",
                   -EBADMSG, "\"config\" is not an object");
}
END_TEST

START_TEST(image_check) {
        ts_oci_manifest *m = manifest_of(oci_manifest);
        ts_oci_config *c = config_of(config_doc);
        ck_assert_int_eq(ts_oci_image_check(m, c, NULL), 0);
        ck_assert_int_eq(ts_oci_config_add_layer(c, D1, NULL, NULL, NULL), 0);
        ts_error *err = NULL;
        ck_assert_int_eq(ts_oci_image_check(m, c, &err), -EBADMSG);
        ck_assert_str_eq(err->msg, "image: the manifest has 3 layers but the config 4 diff_ids");
        ts_error_free(err);
        ts_oci_config_free(c);
        ts_oci_manifest_free(m);

        m = manifest_of("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.in-toto+json\","
                        "\"digest\":\"" D1 "\",\"size\":1},\"layers\":[]}");
        c = config_of("{\"os\":\"linux\",\"architecture\":\"amd64\"," RF "}");
        err = NULL;
        ck_assert_int_eq(ts_oci_image_check(m, c, &err), -EOPNOTSUPP);
        ck_assert_ptr_nonnull(strstr(err->msg, "is not an image config"));
        ts_error_free(err);
        ts_oci_manifest_free(m);

        m = manifest_of("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" TS_OCI_MEDIA_CONFIG "\","
                        "\"digest\":\"" D1 "\",\"size\":1},\"layers\":[{\"mediaType\":"
                        "\"application/vnd.in-toto+json\",\"digest\":\"" D2 "\",\"size\":1}]}");
        err = NULL;
        ck_assert_int_eq(ts_oci_image_check(m, c, &err), -EOPNOTSUPP);
        ck_assert_str_eq(err->msg, "manifest: layers[0]: media type \"application/vnd.in-toto+json\" "
                                   "is not a layer tar");
        ts_error_free(err);
        ts_oci_manifest_free(m);
        ts_oci_config_free(c);
}
END_TEST

static void platform_is(const char *in, const char *want) {
        ts_oci_platform *p = NULL;
        ts_error *err = NULL;
        int r = ts_oci_platform_parse(in, &p, &err);
        ck_assert_msg(r == 0, "%s: %s", in, ts_error_message(err, r));
        char *s = ts_oci_platform_string(p);
        ck_assert_msg(strcmp(s, want) == 0, "%s: got %s, want %s", in, s, want);
        free(s);
        ts_oci_platform_free(p);
}

START_TEST(platforms) {
        platform_is("linux/amd64", "linux/amd64");
        platform_is("Linux/X86_64", "linux/amd64");
        platform_is("linux/x86-64/v1", "linux/amd64");
        platform_is("linux/amd64/v3", "linux/amd64/v3");
        platform_is("linux/aarch64", "linux/arm64");
        platform_is("linux/arm64/v8", "linux/arm64");
        platform_is("linux/armhf", "linux/arm/v7");
        platform_is("linux/armel", "linux/arm/v6");
        platform_is("linux/arm", "linux/arm/v7");
        platform_is("linux/arm/7", "linux/arm/v7");
        platform_is("linux/arm/6", "linux/arm/v6");
        platform_is("linux/i386", "linux/386");
        platform_is("macos/arm64", "darwin/arm64");
        platform_is("linux", "linux/amd64");
        platform_is("arm64", "linux/arm64");
        platform_is("s390x", "linux/s390x");
        platform_is("plan9/foo_bar-1", "plan9/foo_bar-1");

        ts_oci_platform *p = NULL;
        ck_assert_int_eq(ts_oci_platform_default(&p), 0);
        char *s = ts_oci_platform_string(p);
        ck_assert_str_eq(s, "linux/amd64"); /* this project builds for x86_64 */
        free(s);
        ts_oci_platform_free(p);

        static const struct {
                const char *in, *msg;
        } bad[] = {
                { "", "empty" },
                { "linux/", "component \"\"" },
                { "linux/amd64/v2/x", "more than os/architecture/variant" },
                { "linux/*", "component \"*\" must match [A-Za-z0-9_-]+" },
                { "linux amd64", "component \"linux amd64\"" },
                { "nothing", "unknown operating system or architecture" },
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(bad); i++) {
                ts_error *err = NULL;
                p = NULL;
                ck_assert_int_eq(ts_oci_platform_parse(bad[i].in, &p, &err), -EINVAL);
                ck_assert_ptr_null(p);
                ck_assert_msg(strstr(err->msg, bad[i].msg), "%s: %s", bad[i].in, err->msg);
                ts_error_free(err);
        }
}
END_TEST

static int rank(const char *want, const char *os, const char *arch, const char *variant) {
        ts_oci_platform *w = NULL;
        ck_assert_int_eq(ts_oci_platform_parse(want, &w, NULL), 0);
        ts_oci_platform h = { .os = (char *) os, .architecture = (char *) arch, .variant = (char *) variant };
        int r = ts_oci_platform_rank(w, &h);
        ts_oci_platform_free(w);
        return r;
}

START_TEST(ranks) {
        ck_assert_int_eq(rank("linux/amd64", "linux", "amd64", NULL), 0);
        ck_assert_int_eq(rank("linux/amd64", "linux", "x86_64", "v1"), 0);
        ck_assert_int_eq(rank("linux/amd64", "linux", "386", NULL), 1);
        ck_assert_int_eq(rank("linux/amd64", "linux", "i386", NULL), 1);
        ck_assert_int_eq(rank("linux/amd64", "linux", "amd64", "v2"), -1);
        ck_assert_int_eq(rank("linux/amd64/v3", "linux", "amd64", "v2"), 1);
        ck_assert_int_eq(rank("linux/amd64/v3", "linux", "amd64", NULL), 2);
        ck_assert_int_eq(rank("linux/amd64/v3", "linux", "386", NULL), 3);
        ck_assert_int_eq(rank("linux/arm64", "linux", "arm64", "v8"), 0);
        ck_assert_int_eq(rank("linux/arm64", "linux", "arm", "v8"), 1);
        ck_assert_int_eq(rank("linux/arm64", "linux", "arm", "v7"), 2);
        ck_assert_int_eq(rank("linux/arm64", "linux", "arm", "v5"), 4);
        ck_assert_int_eq(rank("linux/arm64", "linux", "amd64", NULL), -1);
        ck_assert_int_eq(rank("linux/arm/v7", "linux", "arm", NULL), 0);
        ck_assert_int_eq(rank("linux/arm/v7", "linux", "armel", NULL), 1);
        ck_assert_int_eq(rank("linux/arm/v6", "linux", "arm", "v7"), -1);
        ck_assert_int_eq(rank("linux/amd64", "windows", "amd64", NULL), -1);
        ck_assert_int_eq(rank("linux/amd64", "unknown", "unknown", NULL), -1);
        ck_assert_int_eq(rank("linux/amd64", "linux", NULL, NULL), -1);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("oci-image");
        TCase *tc = tcase_create("image");
        tcase_add_test(tc, index_fields);
        tcase_add_test(tc, select_like_containerd);
        tcase_add_test(tc, select_names_what_there_is);
        tcase_add_test(tc, docker_list);
        tcase_add_test(tc, index_rejects);
        tcase_add_test(tc, manifests);
        tcase_add_test(tc, manifest_rejects);
        tcase_add_test(tc, config_fields);
        tcase_add_test(tc, config_add_layer);
        tcase_add_test(tc, config_rejects);
        tcase_add_test(tc, image_check);
        tcase_add_test(tc, platforms);
        tcase_add_test(tc, ranks);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return ts_check_run(suite());
}
