/* containerd's Diff service (containerd.services.diff.v1.Diff): applying a
 * layer blob from the content store onto mounts. Errors as ctrd/ctrd.h
 * says; each names the layer. */
#pragma once

#include <stddef.h>

#include "ctrd/ctrd.h"

/* An applier option (ApplyRequest.payloads): a google.protobuf.Any. */
typedef struct ts_ctrd_payload {
        const char *key;
        const char *type_url;
        const void *value;
        size_t len;
} ts_ctrd_payload;

/* Unpacks the layer (a compressed or plain tar blob stored in the content
 * store, described by layer) onto mounts, as returned by a snapshot
 * Prepare; payloads (n_payloads of them, NULL: none) go to the applier.
 * *ret describes what was applied: the uncompressed tar, whose digest is
 * the layer's diff_id. -ENOENT (blob not stored), -EPROTO (a media type
 * no applier takes: containerd answers UNKNOWN), -EINVAL, or an error as
 * ctrd/ctrd.h says. */
int ts_ctrd_diff_apply(ts_ctrd *c, const ts_ctrd_descriptor *layer, const ts_ctrd_mounts *mounts,
                       const ts_ctrd_payload *payloads, size_t n_payloads,
                       ts_ctrd_descriptor *ret, ts_error **err);
