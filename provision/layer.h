/* A layer made here: a few directories and files as a reproducible tar
 * compressed with gzip. The same entries and contents always give the same
 * bytes: entries sorted by path (so parents come first), every one owned by
 * root:root with mtime PROV_LAYER_MTIME and no user or group names, no
 * access or change times, ustar headers (pax records only where ustar
 * cannot say it, e.g. a long path); gzip with neither a name nor a time in
 * its header. The tar is hashed as it is written (its digest is the
 * layer's diff_id) and only the compressed blob is kept in memory. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "oci/digest.h"

#define PROV_LAYER_MTIME 0

typedef enum prov_layer_kind {
        PROV_LAYER_DIR,
        PROV_LAYER_FILE,
} prov_layer_kind;

typedef struct prov_layer_entry {
        const char *path; /* absolute and normalised: "/.hpcc/agent" */
        prov_layer_kind kind;
        uint32_t mode; /* permission bits */
        int fd;        /* FILE: the content, read with pread from offset 0 */
        uint64_t size; /* FILE: its bytes */
} prov_layer_entry;

typedef struct prov_layer {
        uint8_t *blob; /* the gzip-compressed tar */
        size_t blob_len;
        uint64_t tar_len;
        char digest[TS_DIGEST_MAX];  /* of the blob */
        char diff_id[TS_DIGEST_MAX]; /* of the tar */
} prov_layer;

/* Sorts entries by path (in place: the caller applies them in the same
 * order) and writes them as the layer described above. Returns 0, -EINVAL
 * (a path that is not absolute, or a file that is shorter than its size),
 * -EIO (libarchive or zlib failed; the message says which), -ENOMEM. */
int prov_layer_build(prov_layer_entry *entries, size_t n, prov_layer *ret, ts_error **err);

/* The same in steps, so that the head of a layer can be written before its
 * tail is known (and on another thread: a builder is used by one thread at
 * a time). The bytes are those prov_layer_build gives for all the entries.
 * begin: -ENOMEM, -EIO. add: sorts entries, which must all sort after those
 * added before (else -EINVAL), and the errors of prov_layer_build. end:
 * finishes and frees the builder (also on failure). */
typedef struct prov_layer_builder prov_layer_builder;
int prov_layer_begin(prov_layer_builder **ret, ts_error **err);
int prov_layer_add(prov_layer_builder *b, prov_layer_entry *entries, size_t n, ts_error **err);
int prov_layer_end(prov_layer_builder *b, prov_layer *ret, ts_error **err);
prov_layer_builder *prov_layer_builder_free(prov_layer_builder *b);

/* Sorts entries by path, as the layer orders them. */
void prov_layer_sort(prov_layer_entry *entries, size_t n);

void prov_layer_done(prov_layer *l);
