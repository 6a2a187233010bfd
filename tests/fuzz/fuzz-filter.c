/* libFuzzer target: containerd filter strings. Parses the input as one filter
 * (NULs allowed: they must be rejected, not crash), then as a list of filters
 * split on newlines, and matches each result against snapshot records. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/filter.h"
#include "plugin/snapfilter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ts_label labels[] = {
        { .key = (char *) "foo", .value = (char *) "true" },
        { .key = (char *) "containerd.io/gc.root", .value = (char *) "2026-11-23T00:00:00Z" },
        { .key = (char *) "more complex label", .value = (char *) "v\xc3\xa9" },
};

static ts_store_info infos[] = {
        { .name = (char *) "sha256:abc", .parent = (char *) "", .kind = TS_KIND_COMMITTED, .labels = labels, .n_labels = 3 },
        { .name = (char *) "default/1/extract", .parent = (char *) "sha256:abc", .kind = TS_KIND_ACTIVE },
        { .name = (char *) "view", .parent = (char *) "sha256:abc", .kind = TS_KIND_VIEW, .labels = labels, .n_labels = 1 },
};

static void match_all(const ts_filter *f) {
        for (size_t i = 0; i < sizeof(infos) / sizeof(infos[0]); i++) {
                bool a = ts_filter_match(f, ts_snapfilter_field, &infos[i]);
                bool b = ts_filter_match(f, ts_snapfilter_field, &infos[i]);
                if (a != b)
                        abort(); /* matching must be deterministic */
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 4096)
                return 0;
        ts_filter *f = NULL;
        ts_error *err = NULL;
        int r = ts_filter_parse_len((const char *) data, size, &f, &err);
        if (r == 0) {
                match_all(f);
                ts_filter_free(f);
        } else if (r == -EINVAL && (!err || !err->msg || strncmp(err->msg, "filters: parse error: ", 22) != 0))
                abort(); /* every syntax error carries containerd's message */
        ts_error_free(err);
        err = NULL;

        /* newline-separated strings as a List request's repeated filters */
        char *copy = malloc(size + 1);
        if (!copy)
                return 0;
        memcpy(copy, data, size);
        copy[size] = 0;
        const char *parts[16];
        size_t n = 0;
        char *save = NULL;
        for (char *tok = strtok_r(copy, "\n", &save); tok && n < 16; tok = strtok_r(NULL, "\n", &save))
                parts[n++] = tok;
        f = NULL;
        if (ts_filter_parse_all(parts, n, &f, &err) == 0) {
                match_all(f);
                ts_filter_free(f);
        }
        ts_error_free(err);
        free(copy);
        return 0;
}
