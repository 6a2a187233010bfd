/* containerd's content store (containerd.services.content.v1.Content):
 * blobs by digest, their labels, and ingests in progress. Writing a blob is
 * ctrd/writer.h. Errors as ctrd/ctrd.h says; each names the digest or ref. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ctrd/ctrd.h"

typedef struct ts_ctrd_blob {
        char *digest;
        int64_t size;
        int64_t created_ns, updated_ns; /* since the epoch */
        char **labels;                  /* NULL when none */
} ts_ctrd_blob;

/* An ingest in progress (a ref being written). */
typedef struct ts_ctrd_ingest {
        char *ref;
        int64_t offset, total;
        char *expected; /* NULL when not declared */
        int64_t started_ns, updated_ns;
} ts_ctrd_ingest;

/* Frees what i holds and zeroes it. */
void ts_ctrd_blob_done(ts_ctrd_blob *i);

/* Frees what i holds and zeroes it. */
void ts_ctrd_ingest_done(ts_ctrd_ingest *i);

/* Frees n ingests and the array; accepts NULL. */
void ts_ctrd_ingest_list_free(ts_ctrd_ingest *v, size_t n);

/* The blob's size and labels. -ENOENT when it is not stored. */
int ts_ctrd_content_info(ts_ctrd *c, const char *digest, ts_ctrd_blob *ret,
                         ts_error **err);

/* Sets (or, with an empty value, removes) each label of labels on the blob
 * and leaves its other labels alone (field mask "labels.<key>" per key, as
 * containerd's Go client sends). *ret (NULL allowed) is the updated info.
 * -ENOENT, -EINVAL (a label containerd refuses: key + value over 4096
 * bytes...). */
int ts_ctrd_content_update_labels(ts_ctrd *c, const char *digest, char *const *labels,
                                  ts_ctrd_blob *ret, ts_error **err);

/* Deletes the blob. -ENOENT. */
int ts_ctrd_content_delete(ts_ctrd *c, const char *digest, ts_error **err);

/* Called with each piece of a read in order; returns 0 or -errno to stop. */
typedef int (*ts_ctrd_read_fn)(void *userdata, const void *p, size_t n);

/* Streams size bytes of the blob from offset (size 0: to the end) into
 * sink. Returns 0, -ENOENT, -ERANGE (offset past the end, the blob ended
 * before size bytes, or containerd sent other pieces than asked), -EINVAL
 * (a negative offset or size), the sink's error, ... */
int ts_ctrd_content_read_stream(ts_ctrd *c, const char *digest, int64_t offset, int64_t size,
                                ts_ctrd_read_fn sink, void *userdata, ts_error **err);

/* The whole blob, malloc()ed (NUL-terminated for convenience), if it is at
 * most max bytes. -EFBIG when it is larger, -ENOENT, ... */
int ts_ctrd_content_read(ts_ctrd *c, const char *digest, size_t max, uint8_t **ret,
                         size_t *ret_len, ts_error **err);

/* Reads up to len bytes at offset into buf; returns the number read (fewer
 * only at the end of the blob), -ENOENT, -ERANGE (offset past the end). */
int64_t ts_ctrd_content_read_at(ts_ctrd *c, const char *digest, int64_t offset, void *buf,
                                size_t len, ts_error **err);

/* The ingest of ref. -ENOENT when there is none. */
int ts_ctrd_content_status(ts_ctrd *c, const char *ref, ts_ctrd_ingest *ret, ts_error **err);

/* Ingests matching any of filters (NULL: all), e.g. "ref~=^layer-". */
int ts_ctrd_content_list_statuses(ts_ctrd *c, char *const *filters, ts_ctrd_ingest **ret,
                                  size_t *ret_n, ts_error **err);

/* Discards the ingest of ref and its data. -ENOENT when there is none. */
int ts_ctrd_content_abort(ts_ctrd *c, const char *ref, ts_error **err);
