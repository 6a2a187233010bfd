/* How containerd's filters (filter.h) see a snapshot record: the fields of a
 * ts_store_info, as containerd's adaptSnapshot gives them to its filters. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "plugin/filter.h"
#include "store/store.h"

/* A ts_filter_field_fn with the ts_store_info as userdata: fieldpath "name",
 * "parent" (always present, "" for none), "kind" ("view", "active",
 * "committed"), "labels.<k...>" (the rest joined with "."; absent when the
 * record has no such label). Anything else is absent. Returns true and sets
 * *ret_value and *ret_len when present. */
bool ts_snapfilter_field(const char *const *fieldpath, size_t n, void *info, const char **ret_value,
                         size_t *ret_len);
