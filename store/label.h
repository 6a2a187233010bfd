/* Snapshot labels: containerd's rule for one label, the bounds of a
 * snapshot's set, and the normal form the store keeps (sorted by key, unique
 * keys, no empty values).
 *
 * containerd bounds one label (labels.Validate): key + value at most 4096
 * bytes, InvalidArgument past it. It bounds neither the number of labels nor
 * their total, so a client could make one record (and the List or Stat reply
 * that carries it) as large as it likes; the store bounds both per snapshot
 * (ts_label_limits). Every check here runs in time linear in its input, and
 * normalising sorts (O(n log n)): a request with a million keys in any order
 * costs its length, never its square. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct ts_label {
        char *key;
        char *value;
} ts_label;

#define TS_LABEL_MAX_SIZE 4096u /* key + value bytes of one label (containerd's) */

/* Defaults, far above what containerd and its clients set (a snapshot
 * carries a handful of labels, the largest CRI's 4 KiB layer list): */
#define TS_LABEL_MAX_COUNT_DEFAULT 4096u       /* labels per snapshot */
#define TS_LABEL_MAX_BYTES_DEFAULT (1u << 20)  /* their keys + values per snapshot */
/* The largest max_bytes may be: a record then always fits in one reply
 * message (16 MiB) with room to spare. */
#define TS_LABEL_MAX_BYTES_LIMIT (4u << 20)
#define TS_LABEL_MAX_COUNT_LIMIT (1u << 20) /* the largest max_count may be */

typedef struct ts_label_limits {
        uint32_t max_count; /* labels of one snapshot, also of one request; 0: the default */
        uint64_t max_bytes; /* keys + values of one snapshot's labels; 0: the default */
} ts_label_limits;

/* Fills 0 fields with the defaults. Returns 0, or -EINVAL (max_bytes above
 * TS_LABEL_MAX_BYTES_LIMIT or below TS_LABEL_MAX_SIZE, max_count above
 * TS_LABEL_MAX_COUNT_LIMIT; err names it). */
int ts_label_limits_resolve(ts_label_limits *l, ts_error **err);

/* Checks the number of labels a request carries (repeated keys counted as
 * sent) against max_count. Returns 0 or -EINVAL (err names the limit and
 * the figure). */
int ts_label_check_count(size_t n, const ts_label_limits *lim, ts_error **err);

/* Checks the labels of a request, before anything is done with them: at
 * most max_count entries (counted as sent, repeated keys included), each
 * with a non-empty key and key + value within TS_LABEL_MAX_SIZE. Returns 0
 * or -EINVAL; err names the label, the limit and the figure. */
int ts_label_check_request(const ts_label *l, size_t n, const ts_label_limits *lim, ts_error **err);

/* Checks the resulting set (normal form) of snapshot key against the
 * limits. Returns 0 or -EINVAL (err names the snapshot, the limit and the
 * figure). */
int ts_label_check_set(const ts_label *l, size_t n, const ts_label_limits *lim, const char *key,
                       ts_error **err);

/* The normal form of in (n entries): sorted by key, a repeated key keeps its
 * last value (as containerd's map does), entries with an empty value
 * dropped; strings copied. *ret is NULL when nothing is left. Returns 0,
 * -EINVAL (a NULL key), -ENOMEM. */
int ts_label_normalise(const ts_label *in, size_t n, ts_label **ret, size_t *ret_n);

/* containerd's Update by field paths "labels.<k>" on a normal-form set:
 * each named k takes its value in set (normal form), or is removed when set
 * has none. keys are the n_keys names (after "labels."), in any order,
 * repeats allowed. The result (normal form, copied) replaces *l / *n; on
 * failure *l / *n are unchanged. O((n + n_keys) log n_keys). Returns 0 or
 * -ENOMEM. */
int ts_label_apply(ts_label **l, size_t *n, const char *const *keys, size_t n_keys, const ts_label *set,
                   size_t n_set);

/* The entry of key in a normal-form set, or NULL (binary search). */
const ts_label *ts_label_find(const ts_label *l, size_t n, const char *key);

/* Frees n labels and the array. Accepts NULL. */
void ts_label_free(ts_label *l, size_t n);
