/* Fuzzes the image document parsers: one target per document kind (FUZZ_KIND), so each
 * keeps its own corpus. Invariants: nothing crashes or leaks; a refusal carries a
 * message; an accepted index answers a platform choice; an accepted config takes one
 * more layer and what it writes parses back with that layer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oci/image.h"

#define LAYER "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void refused(int r, ts_error *err) {
        if (r >= 0 || !err || !err->msg)
                abort();
}

static void index_case(const uint8_t *data, size_t size) {
        ts_oci_index *ix = NULL;
        ts_error *err = NULL;
        int r = ts_oci_index_parse(data, size, &ix, &err);
        if (r < 0) {
                refused(r, err);
                ts_error_free(err);
                return;
        }
        static const char *const wants[] = { "linux/amd64", "linux/arm64", "linux/arm/v7" };
        for (size_t i = 0; i < 3; i++) {
                ts_oci_platform *w = NULL;
                if (ts_oci_platform_parse(wants[i], &w, NULL) < 0)
                        abort();
                const ts_oci_descriptor *d = NULL;
                r = ts_oci_index_select(ix, w, &d, &err);
                if (r == 0 && (d < ix->manifests || d >= ix->manifests + ix->n_manifests))
                        abort();
                if (r < 0)
                        refused(r, err);
                err = ts_error_free(err);
                ts_oci_platform_free(w);
        }
        ts_oci_index_free(ix);
}

static void manifest_case(const uint8_t *data, size_t size) {
        ts_oci_manifest *m = NULL;
        ts_error *err = NULL;
        int r = ts_oci_manifest_parse(data, size, &m, &err);
        if (r < 0)
                refused(r, err);
        else
                for (size_t i = 0; i < m->n_layers; i++)
                        (void) ts_oci_layer_compression(m->layers[i].media_type);
        ts_error_free(err);
        ts_oci_manifest_free(m);
}

static void config_case(const uint8_t *data, size_t size) {
        ts_oci_config *c = NULL;
        ts_error *err = NULL;
        int r = ts_oci_config_parse(data, size, &c, &err);
        if (r < 0) {
                refused(r, err);
                ts_error_free(err);
                return;
        }
        size_t n = c->n_diff_ids;
        if (ts_oci_config_add_layer(c, LAYER, "2024-01-01T00:00:00Z", "fuzz", NULL) < 0)
                abort();
        char *s = NULL;
        size_t len = 0;
        if (ts_oci_config_serialize(c, &s, &len) < 0)
                abort();
        ts_oci_config *again = NULL;
        /* Re-serialised documents may grow past the cap only if the input was near it. */
        if (len <= TS_OCI_DOCUMENT_MAX) {
                if (ts_oci_config_parse(s, len, &again, NULL) < 0)
                        abort();
                if (again->n_diff_ids != n + 1 || strcmp(again->diff_ids[n], LAYER) != 0)
                        abort();
        }
        ts_oci_config_free(again);
        free(s);
        ts_oci_config_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static void (*const cases[])(const uint8_t *, size_t) = { index_case, manifest_case,
                                                                   config_case };
        cases[FUZZ_KIND](data, size);
        return 0;
}
