#include "snapfilter.h"

#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

/* fieldpath[1..n) joined with ".", malloc()ed; NULL on ENOMEM. */
static char *join_rest(const char *const *fieldpath, size_t n) {
        size_t len = 0;
        for (size_t i = 1; i < n; i++)
                len += strlen(fieldpath[i]) + 1;
        char *joined = malloc(len + 1), *p = joined;
        if (!joined)
                return NULL;
        for (size_t i = 1; i < n; i++) {
                if (i > 1)
                        *p++ = '.';
                size_t l = strlen(fieldpath[i]);
                memcpy(p, fieldpath[i], l);
                p += l;
        }
        *p = '\0';
        return joined;
}

bool ts_snapfilter_field(const char *const *fieldpath, size_t n, void *userdata, const char **ret_value,
                         size_t *ret_len) {
        const ts_store_info *info = userdata;
        if (n == 0)
                return false;
        const char *v = NULL;
        if (strcmp(fieldpath[0], "kind") == 0) {
                if (info->kind != TS_KIND_VIEW && info->kind != TS_KIND_ACTIVE && info->kind != TS_KIND_COMMITTED)
                        return false;
                v = ts_store_kind_to_string(info->kind);
        } else if (strcmp(fieldpath[0], "name") == 0)
                v = info->name ? info->name : "";
        else if (strcmp(fieldpath[0], "parent") == 0)
                v = info->parent ? info->parent : "";
        else if (strcmp(fieldpath[0], "labels") == 0) {
                if (info->n_labels == 0)
                        return false;
                _cleanup_free_ char *key = join_rest(fieldpath, n);
                if (!key || !(v = ts_store_info_label(info, key)))
                        return false;
        } else
                return false;
        *ret_value = v;
        *ret_len = strlen(v);
        return true;
}
