#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/strv.h"
#include "containerd/services/content/v1/content.pb-c.h"
#include "ctrd/content.h"
#include "ctrd/ctrd-internal.h"

#define METHOD(m) "/containerd.services.content.v1.Content/" m

typedef Containerd__Services__Content__V1__Info PbInfo;
typedef Containerd__Services__Content__V1__Status PbStatus;

void ts_ctrd_blob_done(ts_ctrd_blob *i) {
        free(i->digest);
        ts_strv_free(i->labels);
        *i = (ts_ctrd_blob) { 0 };
}

void ts_ctrd_ingest_done(ts_ctrd_ingest *i) {
        free(i->ref);
        free(i->expected);
        *i = (ts_ctrd_ingest) { 0 };
}

static void ingest_done(void *p) {
        ts_ctrd_ingest_done(p);
}

void ts_ctrd_ingest_list_free(ts_ctrd_ingest *v, size_t n) {
        ts_ctrd_list_free(v, n, sizeof(*v), ingest_done);
}

static int info_from_pb(const PbInfo *p, ts_ctrd_blob *ret, ts_error **err) {
        ts_ctrd_blob i = { 0 };
        if (!p)
                return ts_error_setf_plain(err, EBADMSG, "containerd answered without the info");
        if (ts_ctrd_strdup(p->digest, &i.digest) < 0 ||
            ts_ctrd_pairs_from_pb(p->n_labels, (void *const *) p->labels, &i.labels) < 0) {
                ts_ctrd_blob_done(&i);
                return ts_error_set(err, ENOMEM, "content info");
        }
        i.size = p->size;
        i.created_ns = ts_ctrd_time_from_pb(p->created_at);
        i.updated_ns = ts_ctrd_time_from_pb(p->updated_at);
        *ret = i;
        return 0;
}

int ts_ctrd_content_info(ts_ctrd *c, const char *digest, ts_ctrd_blob *ret,
                         ts_error **err) {
        Containerd__Services__Content__V1__InfoRequest req =
                CONTAINERD__SERVICES__CONTENT__V1__INFO_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Content__V1__InfoResponse *resp = NULL;

        int r = ts_ctrd_need(digest, "content digest", err);
        if (r < 0)
                return r;
        req.digest = (char *) digest;
        r = ts_ctrd_unary(c, NULL, METHOD("Info"), TS_CTRD_SHORT, &req.base,
                          &containerd__services__content__v1__info_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r >= 0)
                r = info_from_pb(resp->info, ret, err);
        return r < 0 ? ts_error_prefix(err, r, "content info %s", digest) : 0;
}

int ts_ctrd_content_update_labels(ts_ctrd *c, const char *digest, char *const *labels,
                                  ts_ctrd_blob *ret, ts_error **err) {
        Containerd__Services__Content__V1__UpdateRequest req =
                CONTAINERD__SERVICES__CONTENT__V1__UPDATE_REQUEST__INIT;
        PbInfo info = CONTAINERD__SERVICES__CONTENT__V1__INFO__INIT;
        Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
        _cleanup_message_ Containerd__Services__Content__V1__UpdateResponse *resp = NULL;
        _cleanup_(ts_ctrd_pbmap_done) ts_ctrd_pbmap map = { 0 };
        _cleanup_strv_free_ char **paths = NULL;

        int r = ts_ctrd_need(digest, "content digest", err);
        if (r >= 0)
                r = ts_ctrd_pbmap_build(&containerd__services__content__v1__info__labels_entry__descriptor,
                                        labels, "labels", &map, err);
        if (r >= 0 && ts_ctrd_label_mask(labels, &paths) < 0)
                r = ts_error_set(err, ENOMEM, "labels");
        if (r >= 0 && !paths)
                r = ts_error_setf_plain(err, EINVAL, "no labels to update");
        if (r < 0)
                return ts_error_prefix(err, r, "content update %s", digest ? digest : "");

        info.digest = (char *) digest;
        info.n_labels = map.n;
        info.labels = (Containerd__Services__Content__V1__Info__LabelsEntry **) map.entries;
        mask.n_paths = ts_strv_length(paths);
        mask.paths = paths;
        req.info = &info;
        req.update_mask = &mask;
        r = ts_ctrd_unary(c, NULL, METHOD("Update"), TS_CTRD_SHORT, &req.base,
                          &containerd__services__content__v1__update_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r >= 0 && ret)
                r = info_from_pb(resp->info, ret, err);
        return r < 0 ? ts_error_prefix(err, r, "content update %s", digest) : 0;
}

int ts_ctrd_content_delete(ts_ctrd *c, const char *digest, ts_error **err) {
        Containerd__Services__Content__V1__DeleteContentRequest req =
                CONTAINERD__SERVICES__CONTENT__V1__DELETE_CONTENT_REQUEST__INIT;
        int r = ts_ctrd_need(digest, "content digest", err);
        if (r < 0)
                return r;
        req.digest = (char *) digest;
        r = ts_ctrd_unary_empty(c, NULL, METHOD("Delete"), TS_CTRD_SHORT, &req.base, err);
        return r < 0 ? ts_error_prefix(err, r, "content delete %s", digest) : 0;
}

/* Receives the Read stream, checking that the pieces follow each other;
 * exact: exactly size bytes, else up to size (the blob may end first). */
static int read_pieces(ts_ctrd_call *call, int64_t offset, int64_t size, bool exact,
                       ts_ctrd_read_fn sink, void *userdata, ts_error **err) {
        int64_t at = offset;
        for (;;) {
                _cleanup_message_ Containerd__Services__Content__V1__ReadContentResponse *m = NULL;
                int r = ts_ctrd_call_recv(call,
                                          &containerd__services__content__v1__read_content_response__descriptor,
                                          (ProtobufCMessage **) &m, err);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                /* containerd numbers the pieces from the start of the read, not of the blob. */
                if (m->offset != at - offset)
                        return ts_error_setf_plain(err, ERANGE, "piece at %lld of the read, expected %lld",
                                                   (long long) m->offset, (long long) (at - offset));
                if (size && (int64_t) m->data.len > size - (at - offset))
                        return ts_error_setf_plain(err, ERANGE, "more than the %lld bytes asked",
                                                   (long long) size);
                if (m->data.len && (r = sink(userdata, m->data.data, m->data.len)) < 0)
                        return ts_error_set(err, r, "at %lld", (long long) at);
                at += (int64_t) m->data.len;
        }
        if (exact && size && at - offset != size)
                return ts_error_setf_plain(err, ERANGE, "the blob ended after %lld of %lld bytes",
                                           (long long) (at - offset), (long long) size);
        return 0;
}

static int read_range(ts_ctrd *c, const char *digest, int64_t offset, int64_t size, bool exact,
                      ts_ctrd_read_fn sink, void *userdata, ts_error **err) {
        Containerd__Services__Content__V1__ReadContentRequest req =
                CONTAINERD__SERVICES__CONTENT__V1__READ_CONTENT_REQUEST__INIT;
        _cleanup_(ts_ctrd_call_freep) ts_ctrd_call *call = NULL;

        int r = ts_ctrd_need(digest, "content digest", err);
        if (r < 0)
                return r;
        if (offset < 0 || size < 0)
                return ts_error_setf_plain(err, EINVAL, "content read %s: negative offset or size",
                                           digest);
        req.digest = (char *) digest;
        req.offset = offset;
        req.size = size;
        r = ts_ctrd_call_start(c, NULL, METHOD("Read"), TS_CTRD_STREAM, &call, err);
        if (r >= 0)
                r = ts_ctrd_call_send(call, &req.base, err);
        if (r >= 0) {
                ts_ctrd_call_close_send(call);
                r = read_pieces(call, offset, size, exact, sink, userdata, err);
        }
        return r < 0 ? ts_error_prefix(err, r, "content read %s", digest) : 0;
}

int ts_ctrd_content_read_stream(ts_ctrd *c, const char *digest, int64_t offset, int64_t size,
                                ts_ctrd_read_fn sink, void *userdata, ts_error **err) {
        return read_range(c, digest, offset, size, true, sink, userdata, err);
}

/* read_at's sink: the caller's buffer, which the blob must not overrun. */
typedef struct fixed_sink {
        uint8_t *p;
        size_t len, cap;
} fixed_sink;

static int fixed_write(void *userdata, const void *p, size_t n) {
        fixed_sink *b = userdata;
        if (n > b->cap - b->len)
                return -ERANGE;
        memcpy(b->p + b->len, p, n);
        b->len += n;
        return 0;
}

int ts_ctrd_content_read(ts_ctrd *c, const char *digest, size_t max, uint8_t **ret,
                         size_t *ret_len, ts_error **err) {
        _cleanup_(ts_ctrd_blob_done) ts_ctrd_blob info = { 0 };
        _cleanup_buf_ ts_buf b = { .max = max };

        /* Info first: a blob over the cap is refused before any of it is read. */
        int r = ts_ctrd_content_info(c, digest, &info, err);
        if (r < 0)
                return r;
        if (info.size < 0 || (uint64_t) info.size > max)
                return ts_error_setf_plain(err, EFBIG,
                                           "content read %s: %lld bytes, over the %zu allowed",
                                           digest, (long long) info.size, max);
        if (info.size > 0)
                r = read_range(c, digest, 0, info.size, true, ts_buf_sink, &b, err);
        if (r == -EMSGSIZE) /* the blob grew past the cap while it was read */
                return ts_error_setf_plain(err, EFBIG, "content read %s: over the %zu allowed",
                                           digest, max);
        if (r < 0)
                return r;
        if (!(*ret = ts_buf_steal(&b, ret_len)))
                return ts_error_set(err, ENOMEM, "content read %s", digest);
        return 0;
}

int64_t ts_ctrd_content_read_at(ts_ctrd *c, const char *digest, int64_t offset, void *buf,
                                size_t len, ts_error **err) {
        fixed_sink b = { .p = buf, .cap = len };
        if (len > INT64_MAX)
                return ts_error_setf_plain(err, EINVAL, "content read %s: length %zu",
                                           digest ? digest : "", len);
        if (len == 0)
                return 0;
        int r = read_range(c, digest, offset, (int64_t) len, false, fixed_write, &b, err);
        return r < 0 ? r : (int64_t) b.len;
}

static int ingest_from_pb(const void *pb, void *ret) {
        const PbStatus *p = pb;
        ts_ctrd_ingest i = { .offset = p->offset, .total = p->total };
        if (ts_ctrd_strdup(p->ref, &i.ref) < 0 || ts_ctrd_strdup(p->expected, &i.expected) < 0) {
                ts_ctrd_ingest_done(&i);
                return -ENOMEM;
        }
        i.started_ns = ts_ctrd_time_from_pb(p->started_at);
        i.updated_ns = ts_ctrd_time_from_pb(p->updated_at);
        *(ts_ctrd_ingest *) ret = i;
        return 0;
}

int ts_ctrd_content_status(ts_ctrd *c, const char *ref, ts_ctrd_ingest *ret, ts_error **err) {
        Containerd__Services__Content__V1__StatusRequest req =
                CONTAINERD__SERVICES__CONTENT__V1__STATUS_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Content__V1__StatusResponse *resp = NULL;

        int r = ts_ctrd_need(ref, "ingest ref", err);
        if (r < 0)
                return r;
        req.ref = (char *) ref;
        r = ts_ctrd_unary(c, NULL, METHOD("Status"), TS_CTRD_SHORT, &req.base,
                          &containerd__services__content__v1__status_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r >= 0 && !resp->status)
                r = ts_error_setf_plain(err, EBADMSG, "containerd answered without the status");
        if (r >= 0 && ingest_from_pb(resp->status, ret) < 0)
                r = ts_error_set(err, ENOMEM, "ingest");
        return r < 0 ? ts_error_prefix(err, r, "content status %s", ref) : 0;
}

int ts_ctrd_content_list_statuses(ts_ctrd *c, char *const *filters, ts_ctrd_ingest **ret,
                                  size_t *ret_n, ts_error **err) {
        Containerd__Services__Content__V1__ListStatusesRequest req =
                CONTAINERD__SERVICES__CONTENT__V1__LIST_STATUSES_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Content__V1__ListStatusesResponse *resp = NULL;

        req.n_filters = ts_strv_length(filters);
        req.filters = (char **) filters;
        int r = ts_ctrd_unary(c, NULL, METHOD("ListStatuses"), TS_CTRD_SHORT, &req.base,
                              &containerd__services__content__v1__list_statuses_response__descriptor,
                              (ProtobufCMessage **) &resp, err);
        if (r < 0)
                return ts_error_prefix(err, r, "content list statuses");
        if (ts_ctrd_list_from_pb(resp->n_statuses, (void *const *) resp->statuses, sizeof(**ret),
                                 ingest_from_pb, ingest_done, (void **) ret) < 0)
                return ts_error_set(err, ENOMEM, "content list statuses");
        *ret_n = resp->n_statuses;
        return 0;
}

int ts_ctrd_content_abort(ts_ctrd *c, const char *ref, ts_error **err) {
        Containerd__Services__Content__V1__AbortRequest req =
                CONTAINERD__SERVICES__CONTENT__V1__ABORT_REQUEST__INIT;
        int r = ts_ctrd_need(ref, "ingest ref", err);
        if (r < 0)
                return r;
        req.ref = (char *) ref;
        r = ts_ctrd_unary_empty(c, NULL, METHOD("Abort"), TS_CTRD_SHORT, &req.base, err);
        return r < 0 ? ts_error_prefix(err, r, "content abort %s", ref) : 0;
}
