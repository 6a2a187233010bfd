/* containerd's leases (containerd.services.leases.v1.Leases): what a lease
 * holds is kept from garbage collection until the lease is deleted (or its
 * "containerd.io/gc.expire" time passes). Errors as ctrd/ctrd.h says; each
 * names the lease. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctrd/ctrd.h"

#define TS_CTRD_LABEL_GC_EXPIRE "containerd.io/gc.expire"
#define TS_CTRD_LABEL_GC_FLAT "containerd.io/gc.flat"

/* Resource types a lease can hold. */
#define TS_CTRD_RESOURCE_CONTENT "content"            /* id: a digest */
#define TS_CTRD_RESOURCE_INGESTS "ingests"            /* id: an ingest ref */
#define TS_CTRD_RESOURCE_SNAPSHOTS "snapshots/"       /* + snapshotter name; id: a key */

typedef struct ts_ctrd_lease {
        char *id;
        int64_t created_ns;
        char **labels; /* NULL when none */
} ts_ctrd_lease;

typedef struct ts_ctrd_resource {
        char *id;
        char *type; /* "content", "ingests", "snapshots/<snapshotter>" */
} ts_ctrd_resource;

void ts_ctrd_lease_done(ts_ctrd_lease *l);
void ts_ctrd_lease_list_free(ts_ctrd_lease *v, size_t n);
void ts_ctrd_resource_list_free(ts_ctrd_resource *v, size_t n);

#define TS_CTRD_RFC3339_MAX 32
/* unix_s as RFC 3339 UTC ("2025-05-20T10:00:00Z"), the form of
 * TS_CTRD_LABEL_GC_EXPIRE. Returns 0 or -EINVAL (out of range). */
int ts_ctrd_rfc3339(int64_t unix_s, char ret[TS_CTRD_RFC3339_MAX]);

/* Creates lease id with labels (NULL: none). *ret (NULL allowed) is the
 * lease made. -EEXIST, -EINVAL. */
int ts_ctrd_lease_create(ts_ctrd *c, const char *id, char *const *labels, ts_ctrd_lease *ret,
                         ts_error **err);

/* Deletes the lease; with sync, containerd's garbage collection has run
 * before this returns, so what only the lease held is gone. -ENOENT. */
int ts_ctrd_lease_delete(ts_ctrd *c, const char *id, bool sync, ts_error **err);

/* The leases matching any of filters (NULL: all), e.g. "id==x",
 * "labels.\"k\"==v". */
int ts_ctrd_lease_list(ts_ctrd *c, char *const *filters, ts_ctrd_lease **ret, size_t *ret_n,
                       ts_error **err);

/* Adds (removes) a resource to (from) lease id. -ENOENT (no such lease),
 * -EOPNOTSUPP (a type containerd does not know), -EINVAL. */
int ts_ctrd_lease_add_resource(ts_ctrd *c, const char *id, const char *type,
                               const char *resource_id, ts_error **err);
int ts_ctrd_lease_delete_resource(ts_ctrd *c, const char *id, const char *type,
                                  const char *resource_id, ts_error **err);

/* What lease id holds. -ENOENT. */
int ts_ctrd_lease_list_resources(ts_ctrd *c, const char *id, ts_ctrd_resource **ret,
                                 size_t *ret_n, ts_error **err);
