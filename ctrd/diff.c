#include <errno.h>
#include <stdlib.h>

#include "containerd/services/diff/v1/diff.pb-c.h"
#include "ctrd/ctrd-internal.h"
#include "ctrd/diff.h"

typedef Containerd__Services__Diff__V1__ApplyRequest__PayloadsEntry PbPayload;

/* The payload entries and their Any values in one allocation over p. */
static int payloads_to_pb(const ts_ctrd_payload *p, size_t n, PbPayload ***ret) {
        PbPayload **v = calloc(1, n * (sizeof(*v) + sizeof(**v) + sizeof(Google__Protobuf__Any)) + 1);
        if (!v)
                return -ENOMEM;
        PbPayload *e = (PbPayload *) (v + n);
        Google__Protobuf__Any *any = (Google__Protobuf__Any *) (e + n);
        for (size_t i = 0; i < n; i++) {
                if (!p[i].key || !*p[i].key || !p[i].type_url) {
                        free(v);
                        return -EINVAL;
                }
                containerd__services__diff__v1__apply_request__payloads_entry__init(&e[i]);
                google__protobuf__any__init(&any[i]);
                any[i].type_url = (char *) p[i].type_url;
                any[i].value = (ProtobufCBinaryData) { .len = p[i].len, .data = (uint8_t *) p[i].value };
                e[i].key = (char *) p[i].key;
                e[i].value = &any[i];
                v[i] = &e[i];
        }
        *ret = v;
        return 0;
}

int ts_ctrd_diff_apply(ts_ctrd *c, const ts_ctrd_descriptor *layer, const ts_ctrd_mounts *mounts,
                       const ts_ctrd_payload *payloads, size_t n_payloads,
                       ts_ctrd_descriptor *ret, ts_error **err) {
        Containerd__Services__Diff__V1__ApplyRequest req =
                CONTAINERD__SERVICES__DIFF__V1__APPLY_REQUEST__INIT;
        Containerd__Types__Descriptor desc;
        _cleanup_(ts_ctrd_pbmap_done) ts_ctrd_pbmap annotations = { 0 };
        _cleanup_free_ Containerd__Types__Mount **pb_mounts = NULL;
        _cleanup_free_ PbPayload **pb_payloads = NULL;
        _cleanup_message_ Containerd__Services__Diff__V1__ApplyResponse *resp = NULL;
        const char *digest = layer->digest ? layer->digest : "";

        int r = ts_ctrd_need(layer->digest, "layer digest", err);
        if (r >= 0)
                r = ts_ctrd_descriptor_to_pb(layer, &desc, &annotations, err);
        if (r >= 0 && ts_ctrd_mounts_to_pb(mounts, &pb_mounts) < 0)
                r = ts_error_set(err, ENOMEM, "mounts");
        if (r >= 0 && (r = payloads_to_pb(payloads, n_payloads, &pb_payloads)) < 0)
                r = r == -EINVAL ? ts_error_setf_plain(err, EINVAL, "a payload without key or type")
                                 : ts_error_set(err, -r, "payloads");
        if (r < 0)
                return ts_error_prefix(err, r, "diff apply %s", digest);
        req.diff = &desc;
        req.n_mounts = mounts ? mounts->n : 0;
        req.mounts = pb_mounts;
        req.n_payloads = n_payloads;
        req.payloads = pb_payloads;
        r = ts_ctrd_unary(c, NULL, "/containerd.services.diff.v1.Diff/Apply", TS_CTRD_LONG,
                          &req.base, &containerd__services__diff__v1__apply_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r >= 0 && !resp->applied)
                r = ts_error_setf_plain(err, EBADMSG, "containerd answered without a descriptor");
        if (r >= 0 && ts_ctrd_descriptor_from_pb(resp->applied, ret) < 0)
                r = ts_error_set(err, ENOMEM, "applied descriptor");
        return r < 0 ? ts_error_prefix(err, r, "diff apply %s", digest) : 0;
}
