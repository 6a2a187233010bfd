/* What the ctrd/ modules share: calls on the client's connection, the one
 * adapter from a failed call to ts_error, and conversions between our types
 * and protobuf-c's.
 *
 * A failed call's error is containerd's own message; each caller prefixes
 * what it asked for ("content info sha256:...: "). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "containerd/types/descriptor.pb-c.h"
#include "containerd/types/mount.pb-c.h"
#include "ctrd/ctrd.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "rpc/call.h" /* _cleanup_message_ */
#include "rpc/client.h"

enum ts_ctrd_deadline {
        TS_CTRD_SHORT,  /* the call ends within opts.timeout_ns */
        TS_CTRD_LONG,   /* within opts.long_timeout_ns */
        TS_CTRD_STREAM, /* no end deadline; each receive waits up to opts.idle_timeout_ns */
};

typedef struct ts_ctrd_call ts_ctrd_call;

/* Starts a call of method with the namespace (and lease, when not NULL)
 * metadata. A connection found closed is made again once. Returns 0,
 * -ENOMEM, -EINVAL (a lease id that cannot be a header value), or
 * -ECONNREFUSED naming the socket. */
int ts_ctrd_call_start(ts_ctrd *c, const char *lease, const char *method,
                       enum ts_ctrd_deadline deadline, ts_ctrd_call **ret, ts_error **err);

/* Queues one request. Returns 0 or the call's failure (see ts_ctrd_call_recv). */
int ts_ctrd_call_send(ts_ctrd_call *call, const ProtobufCMessage *msg, ts_error **err);

/* Ends the request stream. */
void ts_ctrd_call_close_send(ts_ctrd_call *call);

/* Waits for the next response. Returns 1 and *ret (free with
 * protobuf_c_message_free_unpacked), 0 at an OK end, or containerd's status
 * as -errno with its message, -ETIMEDOUT, -ECONNREFUSED (connection lost),
 * -EBADMSG (a response that does not decode), -ENOMEM. */
int ts_ctrd_call_recv(ts_ctrd_call *call, const ProtobufCMessageDescriptor *desc,
                      ProtobufCMessage **ret, ts_error **err);

/* After a failed send or receive: the gRPC status the call ended with and
 * containerd's message (valid until the call is freed), or TS_RPC_OK and ""
 * when the failure was local (-ENOMEM, -EBADMSG). */
int ts_ctrd_call_code(const ts_ctrd_call *call, const char **ret_message);

/* Cancels the call if it still runs and frees it. Accepts NULL; returns NULL. */
ts_ctrd_call *ts_ctrd_call_free(ts_ctrd_call *call);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_ctrd_call *, ts_ctrd_call_free);

/* One request, exactly one response (desc) and an OK end. */
int ts_ctrd_unary(ts_ctrd *c, const char *lease, const char *method,
                  enum ts_ctrd_deadline deadline, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret, ts_error **err);

/* The same for a method that answers google.protobuf.Empty. */
int ts_ctrd_unary_empty(ts_ctrd *c, const char *lease, const char *method,
                        enum ts_ctrd_deadline deadline, const ProtobufCMessage *req,
                        ts_error **err);

/* ---- conversions ---- */

/* A protobuf map<string, string> (repeated <Msg>__LabelsEntry) built over a
 * key, value pair array: it points into the strings, which must outlive it. */
typedef struct ts_ctrd_pbmap {
        size_t n;
        ProtobufCMessage **entries;
} ts_ctrd_pbmap;

/* Builds m with the entry type entry_desc (a generated "...LabelsEntry").
 * Returns 0, -EINVAL (an odd number of strings, an empty key) naming what,
 * or -ENOMEM. */
int ts_ctrd_pbmap_build(const ProtobufCMessageDescriptor *entry_desc, char *const *pairs,
                        const char *what, ts_ctrd_pbmap *ret, ts_error **err);
void ts_ctrd_pbmap_done(ts_ctrd_pbmap *m);

/* Copies a received map (any generated "...LabelsEntry" array) into a pair
 * array; *ret is NULL for an empty map. Returns 0 or -ENOMEM. */
int ts_ctrd_pairs_from_pb(size_t n, void *const *entries, char ***ret);

/* Checks a key, value pair array: 0, or -EINVAL naming what. */
int ts_ctrd_pairs_check(char *const *pairs, const char *what, ts_error **err);

/* The field mask paths "labels.<key>" for each key of labels (NULL when
 * none). Returns 0 or -ENOMEM. */
int ts_ctrd_label_mask(char *const *labels, char ***ret);

/* Nanoseconds since the epoch; 0 for NULL. */
int64_t ts_ctrd_time_from_pb(const Google__Protobuf__Timestamp *t);

/* Copies d (NULL allowed: a zero descriptor). Returns 0 or -ENOMEM. */
int ts_ctrd_descriptor_from_pb(const Containerd__Types__Descriptor *d, ts_ctrd_descriptor *ret);

/* Fills out (and its annotation map, to be freed with ts_ctrd_pbmap_done)
 * from d, pointing into d's strings. Returns 0, -EINVAL, -ENOMEM. */
int ts_ctrd_descriptor_to_pb(const ts_ctrd_descriptor *d, Containerd__Types__Descriptor *out,
                             ts_ctrd_pbmap *out_annotations, ts_error **err);

/* Copies n received mounts. Returns 0 or -ENOMEM. */
int ts_ctrd_mounts_from_pb(size_t n, Containerd__Types__Mount *const *v, ts_ctrd_mounts **ret);

/* Array of n mount messages pointing into m; free with free(). */
int ts_ctrd_mounts_to_pb(const ts_ctrd_mounts *m, Containerd__Types__Mount ***ret);

/* Converts n received messages into a new array of n records of size
 * bytes each: from(pb, record) returns 0 or -ENOMEM; done(record) frees one.
 * Returns 0 and *ret (never NULL), or -ENOMEM. */
typedef int (*ts_ctrd_from_pb_fn)(const void *pb, void *record);
typedef void (*ts_ctrd_done_fn)(void *record);
int ts_ctrd_list_from_pb(size_t n, void *const *pb, size_t size, ts_ctrd_from_pb_fn from,
                         ts_ctrd_done_fn done, void **ret);

/* Frees n records of size bytes with done, and the array; accepts NULL. */
void ts_ctrd_list_free(void *v, size_t n, size_t size, ts_ctrd_done_fn done);

/* A copy of s, or NULL when s is NULL or empty; -ENOMEM. */
int ts_ctrd_strdup(const char *s, char **ret);

/* Checks that s is a non-empty string: 0 or -EINVAL "<what> is empty". */
int ts_ctrd_need(const char *s, const char *what, ts_error **err);
