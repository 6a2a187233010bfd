#include <errno.h>
#include <stdlib.h>

#include "common/strv.h"
#include "containerd/services/images/v1/images.pb-c.h"
#include "ctrd/ctrd-internal.h"
#include "ctrd/images.h"

#define METHOD(m) "/containerd.services.images.v1.Images/" m

typedef Containerd__Services__Images__V1__Image PbImage;

static void image_done(void *p) {
        ts_ctrd_image_done(p);
}

void ts_ctrd_image_done(ts_ctrd_image *i) {
        free(i->name);
        ts_strv_free(i->labels);
        ts_ctrd_descriptor_done(&i->target);
        *i = (ts_ctrd_image) { 0 };
}

void ts_ctrd_image_list_free(ts_ctrd_image *v, size_t n) {
        ts_ctrd_list_free(v, n, sizeof(*v), image_done);
}

static int image_from_pb(const void *pb, void *ret) {
        const PbImage *p = pb;
        ts_ctrd_image i = { 0 };
        if (ts_ctrd_strdup(p->name, &i.name) < 0 ||
            ts_ctrd_pairs_from_pb(p->n_labels, (void *const *) p->labels, &i.labels) < 0 ||
            ts_ctrd_descriptor_from_pb(p->target, &i.target) < 0) {
                ts_ctrd_image_done(&i);
                return -ENOMEM;
        }
        i.created_ns = ts_ctrd_time_from_pb(p->created_at);
        i.updated_ns = ts_ctrd_time_from_pb(p->updated_at);
        *(ts_ctrd_image *) ret = i;
        return 0;
}

/* Copies the image of an answer into ret (when asked for). */
static int answer(const PbImage *p, ts_ctrd_image *ret, ts_error **err) {
        if (!ret)
                return 0;
        if (!p)
                return ts_error_setf_plain(err, EBADMSG, "containerd answered without the image");
        if (image_from_pb(p, ret) < 0)
                return ts_error_set(err, ENOMEM, "image");
        return 0;
}

int ts_ctrd_image_get(ts_ctrd *c, const char *name, ts_ctrd_image *ret, ts_error **err) {
        Containerd__Services__Images__V1__GetImageRequest req =
                CONTAINERD__SERVICES__IMAGES__V1__GET_IMAGE_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Images__V1__GetImageResponse *resp = NULL;

        int r = ts_ctrd_need(name, "image name", err);
        if (r < 0)
                return r;
        req.name = (char *) name;
        r = ts_ctrd_unary(c, NULL, METHOD("Get"), TS_CTRD_SHORT, &req.base,
                          &containerd__services__images__v1__get_image_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r >= 0)
                r = answer(resp->image, ret, err);
        return r < 0 ? ts_error_prefix(err, r, "image get %s", name) : 0;
}

int ts_ctrd_image_list(ts_ctrd *c, char *const *filters, ts_ctrd_image **ret, size_t *ret_n,
                       ts_error **err) {
        Containerd__Services__Images__V1__ListImagesRequest req =
                CONTAINERD__SERVICES__IMAGES__V1__LIST_IMAGES_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Images__V1__ListImagesResponse *resp = NULL;

        req.n_filters = ts_strv_length(filters);
        req.filters = (char **) filters;
        int r = ts_ctrd_unary(c, NULL, METHOD("List"), TS_CTRD_SHORT, &req.base,
                              &containerd__services__images__v1__list_images_response__descriptor,
                              (ProtobufCMessage **) &resp, err);
        if (r < 0)
                return ts_error_prefix(err, r, "image list");
        if (ts_ctrd_list_from_pb(resp->n_images, (void *const *) resp->images, sizeof(**ret),
                                 image_from_pb, image_done, (void **) ret) < 0)
                return ts_error_set(err, ENOMEM, "image list");
        *ret_n = resp->n_images;
        return 0;
}

/* The request form of img; points into img. */
typedef struct pb_image {
        PbImage m;
        Containerd__Types__Descriptor target;
        ts_ctrd_pbmap labels, annotations;
} pb_image;

static void pb_image_done(pb_image *p) {
        ts_ctrd_pbmap_done(&p->labels);
        ts_ctrd_pbmap_done(&p->annotations);
}

static int pb_image_build(const ts_ctrd_image *img, pb_image *p, ts_error **err) {
        int r = ts_ctrd_need(img->name, "image name", err);
        if (r < 0)
                return r;
        containerd__services__images__v1__image__init(&p->m);
        r = ts_ctrd_pbmap_build(&containerd__services__images__v1__image__labels_entry__descriptor,
                                img->labels, "image labels", &p->labels, err);
        if (r >= 0)
                r = ts_ctrd_descriptor_to_pb(&img->target, &p->target, &p->annotations, err);
        if (r < 0)
                return r;
        p->m.name = img->name;
        p->m.n_labels = p->labels.n;
        p->m.labels = (Containerd__Services__Images__V1__Image__LabelsEntry **) p->labels.entries;
        p->m.target = &p->target;
        return 0;
}

int ts_ctrd_image_create(ts_ctrd *c, const ts_ctrd_image *img, ts_ctrd_image *ret,
                         ts_error **err) {
        Containerd__Services__Images__V1__CreateImageRequest req =
                CONTAINERD__SERVICES__IMAGES__V1__CREATE_IMAGE_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Images__V1__CreateImageResponse *resp = NULL;
        _cleanup_(pb_image_done) pb_image p = { 0 };

        int r = pb_image_build(img, &p, err);
        if (r >= 0) {
                req.image = &p.m;
                r = ts_ctrd_unary(c, NULL, METHOD("Create"), TS_CTRD_SHORT, &req.base,
                                  &containerd__services__images__v1__create_image_response__descriptor,
                                  (ProtobufCMessage **) &resp, err);
        }
        if (r >= 0)
                r = answer(resp->image, ret, err);
        return r < 0 ? ts_error_prefix(err, r, "image create %s", img->name ? img->name : "") : 0;
}

int ts_ctrd_image_update(ts_ctrd *c, const ts_ctrd_image *img, char *const *fields,
                         ts_ctrd_image *ret, ts_error **err) {
        Containerd__Services__Images__V1__UpdateImageRequest req =
                CONTAINERD__SERVICES__IMAGES__V1__UPDATE_IMAGE_REQUEST__INIT;
        Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
        _cleanup_message_ Containerd__Services__Images__V1__UpdateImageResponse *resp = NULL;
        _cleanup_(pb_image_done) pb_image p = { 0 };

        int r = pb_image_build(img, &p, err);
        if (r >= 0) {
                req.image = &p.m;
                if (fields) {
                        mask.n_paths = ts_strv_length(fields);
                        mask.paths = (char **) fields;
                        req.update_mask = &mask;
                }
                r = ts_ctrd_unary(c, NULL, METHOD("Update"), TS_CTRD_SHORT, &req.base,
                                  &containerd__services__images__v1__update_image_response__descriptor,
                                  (ProtobufCMessage **) &resp, err);
        }
        if (r >= 0)
                r = answer(resp->image, ret, err);
        return r < 0 ? ts_error_prefix(err, r, "image update %s", img->name ? img->name : "") : 0;
}

int ts_ctrd_image_delete(ts_ctrd *c, const char *name, bool sync, ts_error **err) {
        Containerd__Services__Images__V1__DeleteImageRequest req =
                CONTAINERD__SERVICES__IMAGES__V1__DELETE_IMAGE_REQUEST__INIT;
        int r = ts_ctrd_need(name, "image name", err);
        if (r < 0)
                return r;
        req.name = (char *) name;
        req.sync = sync;
        r = ts_ctrd_unary_empty(c, NULL, METHOD("Delete"), sync ? TS_CTRD_LONG : TS_CTRD_SHORT,
                                &req.base, err);
        return r < 0 ? ts_error_prefix(err, r, "image delete %s", name) : 0;
}
