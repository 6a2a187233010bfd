/* A client of containerd's gRPC API on one held connection.
 *
 * A ts_ctrd is thread-safe: calls may be made from any thread, several at
 * once, each blocking its caller only. Every call sends the connection's
 * namespace as "containerd-namespace"; the calls that create resources take
 * a lease id (NULL: none) sent as "containerd-lease", so containerd adds
 * what they make to that lease.
 *
 * Errors: containerd's status comes back as -errno by rpc/status.h
 * (NOT_FOUND -ENOENT, ALREADY_EXISTS -EEXIST, INVALID_ARGUMENT -EINVAL,
 * FAILED_PRECONDITION -EBUSY, UNAVAILABLE -ECONNREFUSED, ...) with the
 * message "<what was asked>: <containerd's message>". containerd not
 * running, its socket missing, or the connection lost is -ECONNREFUSED with
 * a message naming the socket; a lost connection is made again by the next
 * call. A call that takes longer than its timeout is -ETIMEDOUT.
 *
 * Labels and annotations are NULL-terminated arrays of key, value pairs:
 * {"k1", "v1", "k2", "v2", NULL}. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/macro.h"

typedef struct ts_ctrd ts_ctrd;

typedef struct ts_ctrd_options {
        uint64_t timeout_ns;      /* calls that answer promptly; 0: 60 s */
        uint64_t long_timeout_ns; /* Diff.Apply, deletes with sync (they run GC); 0: 30 min */
        uint64_t idle_timeout_ns; /* a stream waiting this long for its next message; 0: 60 s */
} ts_ctrd_options;

/* containerd's "<media type, digest, size, annotations>" descriptor. */
typedef struct ts_ctrd_descriptor {
        char *media_type;
        char *digest;
        int64_t size;
        char **annotations; /* key, value pairs; NULL when none */
} ts_ctrd_descriptor;

/* A mount in mount(2)'s shape, as Snapshots hands it out and Diff takes it. */
typedef struct ts_ctrd_mount {
        char *type, *source, *target;
        char **options; /* NULL when none */
} ts_ctrd_mount;

typedef struct ts_ctrd_mounts {
        size_t n;
        ts_ctrd_mount v[];
} ts_ctrd_mounts;

/* Connects to containerd at address, a socket path or "unix://<path>", for
 * namespace ns; opts may be NULL. Returns 0, -EINVAL (empty namespace or
 * address, another scheme), -ENOMEM, or -ECONNREFUSED (nothing listens on
 * the socket, or it does not exist) naming the socket. */
int ts_ctrd_connect(const char *address, const char *ns, const ts_ctrd_options *opts,
                    ts_ctrd **ret, ts_error **err);

/* Closes the connection and frees. No call may be running (on any thread)
 * and every writer must have been freed. Accepts NULL; returns NULL. */
ts_ctrd *ts_ctrd_free(ts_ctrd *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_ctrd *, ts_ctrd_free);

/* The socket path and the namespace the client was made for. */
const char *ts_ctrd_socket(const ts_ctrd *c);
const char *ts_ctrd_namespace(const ts_ctrd *c);

/* The value of key in a key, value pair array, or NULL. */
const char *ts_ctrd_label(char *const *labels, const char *key);

/* Frees what d holds and zeroes it; accepts NULL. */
void ts_ctrd_descriptor_done(ts_ctrd_descriptor *d);

/* Frees a mount list; accepts NULL; returns NULL. */
ts_ctrd_mounts *ts_ctrd_mounts_free(ts_ctrd_mounts *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_ctrd_mounts *, ts_ctrd_mounts_free);
