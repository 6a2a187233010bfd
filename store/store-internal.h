/* ts_store internals reached by the unit tests only. */
#pragma once

#include "store.h"

/* Moves the device id cursor: the next allocation searches from id on (wrapping
 * at the limit). Lets tests reach the 24-bit top without 16M allocations.
 * Returns 0, -ERANGE (id 0 or above the limit), -EROFS, -EIO. */
int ts_store_set_dev_cursor(ts_store_txn *txn, uint32_t id, ts_error **err);

/* Rewrites the parent field of key's record, leaving every child count as it
 * is: lets tests build the damaged chains (a loop) that the API never makes.
 * Returns 0, -ENOENT, -EINVAL, -EROFS, -EIO, -ENOMEM. */
int ts_store_set_parent(ts_store_txn *txn, const char *ns, const char *key, const char *parent,
                        ts_error **err);
