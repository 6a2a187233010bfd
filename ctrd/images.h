/* containerd's image records (containerd.services.images.v1.Images): a
 * name pointing at a target descriptor (an index or a manifest), with
 * labels. Errors as ctrd/ctrd.h says; each names the image. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctrd/ctrd.h"

typedef struct ts_ctrd_image {
        char *name;
        char **labels; /* NULL when none */
        ts_ctrd_descriptor target;
        int64_t created_ns, updated_ns; /* since the epoch; ignored when sent */
} ts_ctrd_image;

/* Frees what i holds and zeroes it. */
void ts_ctrd_image_done(ts_ctrd_image *i);

/* Frees n images and the array; accepts NULL. */
void ts_ctrd_image_list_free(ts_ctrd_image *v, size_t n);

/* The record of name. -ENOENT. */
int ts_ctrd_image_get(ts_ctrd *c, const char *name, ts_ctrd_image *ret, ts_error **err);

/* The records matching any of filters (NULL: all), e.g. "name==x",
 * "labels.\"k\"==v". */
int ts_ctrd_image_list(ts_ctrd *c, char *const *filters, ts_ctrd_image **ret, size_t *ret_n,
                       ts_error **err);

/* Creates the record img (name, labels, target). *ret (NULL allowed) is
 * what containerd stored. -EEXIST, -EINVAL (a target without a media type,
 * a valid digest or a size above 0). */
int ts_ctrd_image_create(ts_ctrd *c, const ts_ctrd_image *img, ts_ctrd_image *ret,
                         ts_error **err);

/* Updates the record img->name: only the fields named in fields ("target",
 * "labels", "labels.<key>", "annotations", "annotations.<key>" of the
 * target; NULL: the whole record becomes img). A label or annotation named
 * but absent from img is removed. *ret (NULL allowed) is the updated record.
 * -ENOENT, -EINVAL (a field that cannot be updated, an invalid result). */
int ts_ctrd_image_update(ts_ctrd *c, const ts_ctrd_image *img, char *const *fields,
                         ts_ctrd_image *ret, ts_error **err);

/* Deletes the record; with sync, containerd's garbage collection has run
 * before this returns. -ENOENT. */
int ts_ctrd_image_delete(ts_ctrd *c, const char *name, bool sync, ts_error **err);
