/* Fuzzes image reference and platform parsing. Invariants: nothing crashes or leaks;
 * an accepted reference prints back to a string that parses to the same reference
 * (normalisation is idempotent), within the length limits; a refusal carries a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oci/platform.h"
#include "oci/ref.h"

static void same(const char *a, const char *b) {
        if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *s = strndup((const char *) data, size);
        if (!s)
                return 0;
        ts_ref *r = NULL;
        ts_error *err = NULL;
        if (ts_ref_parse(s, &r, &err) == 0) {
                char *str = ts_ref_string(r);
                ts_ref *again = NULL;
                if (!str || ts_ref_parse(str, &again, NULL) != 0)
                        abort();
                same(r->domain, again->domain);
                same(r->path, again->path);
                same(r->tag, again->tag);
                same(r->digest, again->digest);
                if (strlen(r->domain) + 1 + strlen(r->path) > TS_REF_NAME_MAX)
                        abort();
                free(str);
                ts_ref_free(again);
                ts_ref_free(r);
        } else if (!err || !err->msg)
                abort();
        ts_error_free(err);

        ts_oci_platform *p = NULL;
        err = NULL;
        if (ts_oci_platform_parse(s, &p, &err) == 0) {
                char *str = ts_oci_platform_string(p);
                ts_oci_platform *again = NULL;
                if (!str || ts_oci_platform_parse(str, &again, NULL) != 0)
                        abort();
                if (ts_oci_platform_rank(p, again) != 0)
                        abort();
                free(str);
                ts_oci_platform_free(again);
                ts_oci_platform_free(p);
        } else if (!err || !err->msg)
                abort();
        ts_error_free(err);
        free(s);
        return 0;
}
