/* filter-diff: thinsnap's side of the filter conformance test (see main.go in
 * this directory): prints "<file> ERR <hex message>", "<file> OK <bits>" or
 * "<file> SKIP" for each file named on the command line; "<file> LIMIT" for one
 * over thinsnap's bounds (filter.h), which containerd does not have. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/filter.h"
#include "plugin/snapfilter.h"

/* Keep in step with main.go; labels sorted by key, as records hold them. */
static ts_label l0[] = { { (char *) "containerd.io/gc.root", (char *) "2026-11-23T00:00:00Z" },
                         { (char *) "foo", (char *) "true" },
                         { (char *) "more complex label", (char *) "v\xc3\xa9" } };
static ts_label l2[] = { { (char *) "foo", (char *) "true" } };
static ts_label l3[] = { { (char *) "a b", (char *) "x\ty" }, { (char *) "k.l", (char *) "42" } };
static ts_store_info records[] = {
        { .name = (char *) "sha256:abc", .parent = (char *) "", .kind = TS_KIND_COMMITTED, .labels = l0, .n_labels = 3 },
        { .name = (char *) "default/1/extract", .parent = (char *) "sha256:abc", .kind = TS_KIND_ACTIVE },
        { .name = (char *) "view", .parent = (char *) "sha256:abc", .kind = TS_KIND_VIEW, .labels = l2, .n_labels = 1 },
        { .name = (char *) "A12", .parent = (char *) "", .kind = TS_KIND_ACTIVE, .labels = l3, .n_labels = 2 },
};

int main(int argc, char **argv) {
        for (int a = 1; a < argc; a++) {
                FILE *f = fopen(argv[a], "rbe");
                if (!f) {
                        perror(argv[a]);
                        return 1;
                }
                char buf[65536];
                size_t n = fread(buf, 1, sizeof(buf), f);
                fclose(f);
                if (memchr(buf, 0, n)) {
                        printf("%s SKIP\n", argv[a]);
                        continue;
                }
                ts_filter *flt = NULL;
                ts_error *err = NULL;
                int r = ts_filter_parse_len(buf, n, &flt, &err);
                if (r == -E2BIG)
                        printf("%s LIMIT\n", argv[a]);
                else if (r < 0) {
                        printf("%s ERR ", argv[a]);
                        for (const char *p = ts_error_message(err, r); *p; p++)
                                printf("%02x", (unsigned char) *p);
                        printf("\n");
                } else {
                        printf("%s OK ", argv[a]);
                        for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++)
                                putchar(ts_filter_match(flt, ts_snapfilter_field, &records[i]) ? '1' : '0');
                        printf("\n");
                }
                ts_filter_free(flt);
                ts_error_free(err);
        }
        return 0;
}
