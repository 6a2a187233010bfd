#include "label.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/macro.h"

/* Quoted keys in messages are cut to this many bytes (as containerd does). */
#define KEY_QUOTE_MAX 64

int ts_label_limits_resolve(ts_label_limits *l, ts_error **err) {
        if (l->max_count == 0)
                l->max_count = TS_LABEL_MAX_COUNT_DEFAULT;
        if (l->max_bytes == 0)
                l->max_bytes = TS_LABEL_MAX_BYTES_DEFAULT;
        if (l->max_bytes > TS_LABEL_MAX_BYTES_LIMIT || l->max_bytes < TS_LABEL_MAX_SIZE)
                return ts_error_setf_plain(err, EINVAL,
                                           "max_label_bytes %" PRIu64 " is outside %u..%u bytes",
                                           l->max_bytes, TS_LABEL_MAX_SIZE, TS_LABEL_MAX_BYTES_LIMIT);
        if (l->max_count > TS_LABEL_MAX_COUNT_LIMIT)
                return ts_error_setf_plain(err, EINVAL, "max_labels %u is above %u", l->max_count,
                                           TS_LABEL_MAX_COUNT_LIMIT);
        return 0;
}

int ts_label_check_count(size_t n, const ts_label_limits *lim, ts_error **err) {
        if (n > lim->max_count)
                return ts_error_setf_plain(err, EINVAL, "%zu labels in the request, over the limit of %u (max_labels)",
                                           n, lim->max_count);
        return 0;
}

int ts_label_check_request(const ts_label *l, size_t n, const ts_label_limits *lim, ts_error **err) {
        int r = ts_label_check_count(n, lim, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (!l[i].key || !*l[i].key)
                        return ts_error_setf_plain(err, EINVAL, "label with an empty key");
                size_t total = strlen(l[i].key) + (l[i].value ? strlen(l[i].value) : 0);
                if (total > TS_LABEL_MAX_SIZE)
                        return ts_error_setf_plain(err, EINVAL,
                                                   "label key and value length (%zu bytes) greater than maximum size "
                                                   "(%u bytes), key: %.*s",
                                                   total, TS_LABEL_MAX_SIZE, KEY_QUOTE_MAX, l[i].key);
        }
        return 0;
}

int ts_label_check_set(const ts_label *l, size_t n, const ts_label_limits *lim, const char *key,
                       ts_error **err) {
        if (n > lim->max_count)
                return ts_error_setf_plain(err, EINVAL, "snapshot %s: %zu labels, over the limit of %u (max_labels)",
                                           key, n, lim->max_count);
        uint64_t bytes = 0;
        for (size_t i = 0; i < n; i++)
                bytes += strlen(l[i].key) + strlen(l[i].value);
        if (bytes > lim->max_bytes)
                return ts_error_setf_plain(err, EINVAL,
                                           "snapshot %s: labels of %" PRIu64 " bytes, over the limit of %" PRIu64
                                           " bytes (max_label_bytes)",
                                           key, bytes, lim->max_bytes);
        return 0;
}

void ts_label_free(ts_label *l, size_t n) {
        for (size_t i = 0; l && i < n; i++) {
                free(l[i].key);
                free(l[i].value);
        }
        free(l);
}

static int label_cmp(const void *a, const void *b) {
        return strcmp(((const ts_label *) a)->key, ((const ts_label *) b)->key);
}

const ts_label *ts_label_find(const ts_label *l, size_t n, const char *key) {
        ts_label k = { .key = (char *) key };
        return n ? bsearch(&k, l, n, sizeof(ts_label), label_cmp) : NULL;
}

/* Appends a copy of key=value to out (room for it is there). */
static int push_copy(ts_label *out, size_t *n, const char *key, const char *value) {
        char *k = strdup(key), *v = strdup(value);
        if (!k || !v) {
                free(k);
                free(v);
                return -ENOMEM;
        }
        out[(*n)++] = (ts_label){ .key = k, .value = v };
        return 0;
}

/* An entry of the input with its position: sorting by (key, position)
 * puts a repeated key's last value at the end of its run. */
typedef struct ranked {
        const ts_label *l;
        size_t pos;
} ranked;

static int ranked_cmp(const void *a, const void *b) {
        const ranked *x = a, *y = b;
        int c = strcmp(x->l->key, y->l->key);
        return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

int ts_label_normalise(const ts_label *in, size_t n, ts_label **ret, size_t *ret_n) {
        for (size_t i = 0; i < n; i++)
                if (!in[i].key)
                        return -EINVAL;
        if (n == 0) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        _cleanup_free_ ranked *r = malloc(n * sizeof(*r));
        ts_label *out = calloc(n, sizeof(*out));
        if (!r || !out) {
                free(out);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                r[i] = (ranked){ &in[i], i };
        qsort(r, n, sizeof(*r), ranked_cmp);
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
                if (i + 1 < n && strcmp(r[i].l->key, r[i + 1].l->key) == 0)
                        continue; /* a later value of this key follows */
                const char *v = r[i].l->value;
                if (!v || !*v)
                        continue;
                if (push_copy(out, &m, r[i].l->key, v) < 0) {
                        ts_label_free(out, m);
                        return -ENOMEM;
                }
        }
        if (m == 0) {
                free(out);
                out = NULL;
        }
        *ret = out;
        *ret_n = m;
        return 0;
}

static int str_cmp(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

int ts_label_apply(ts_label **l, size_t *n, const char *const *keys, size_t n_keys, const ts_label *set,
                   size_t n_set) {
        if (n_keys == 0)
                return 0;
        _cleanup_free_ const char **k = malloc(n_keys * sizeof(*k));
        ts_label *out = calloc(*n + n_keys, sizeof(*out));
        if (!k || !out) {
                free(out);
                return -ENOMEM;
        }
        memcpy(k, keys, n_keys * sizeof(*k));
        qsort(k, n_keys, sizeof(*k), str_cmp);
        const ts_label *old = *l;
        size_t i = 0, j = 0, m = 0;
        int r = 0;
        while (r >= 0 && (i < *n || j < n_keys)) {
                if (j > 0 && j < n_keys && strcmp(k[j], k[j - 1]) == 0) {
                        j++;
                        continue;
                }
                int c = i == *n ? 1 : j == n_keys ? -1 : strcmp(old[i].key, k[j]);
                if (c < 0) {
                        r = push_copy(out, &m, old[i].key, old[i].value);
                        i++;
                        continue;
                }
                const ts_label *s = ts_label_find(set, n_set, k[j]);
                if (s)
                        r = push_copy(out, &m, s->key, s->value);
                i += c == 0;
                j++;
        }
        if (r < 0) {
                ts_label_free(out, m);
                return r;
        }
        ts_label_free(*l, *n);
        *l = out;
        *n = m;
        return 0;
}
