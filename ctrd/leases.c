#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "common/strv.h"
#include "containerd/services/leases/v1/leases.pb-c.h"
#include "ctrd/ctrd-internal.h"
#include "ctrd/leases.h"

#define METHOD(m) "/containerd.services.leases.v1.Leases/" m

typedef Containerd__Services__Leases__V1__Lease PbLease;
typedef Containerd__Services__Leases__V1__Resource PbResource;

static void lease_done(void *p) {
        ts_ctrd_lease_done(p);
}

void ts_ctrd_lease_done(ts_ctrd_lease *l) {
        free(l->id);
        ts_strv_free(l->labels);
        *l = (ts_ctrd_lease) { 0 };
}

void ts_ctrd_lease_list_free(ts_ctrd_lease *v, size_t n) {
        ts_ctrd_list_free(v, n, sizeof(*v), lease_done);
}

static void resource_done(void *p) {
        ts_ctrd_resource *r = p;
        free(r->id);
        free(r->type);
}

void ts_ctrd_resource_list_free(ts_ctrd_resource *v, size_t n) {
        ts_ctrd_list_free(v, n, sizeof(*v), resource_done);
}

int ts_ctrd_rfc3339(int64_t unix_s, char ret[TS_CTRD_RFC3339_MAX]) {
        struct tm tm;
        time_t t = (time_t) unix_s;
        if (unix_s < 0 || (int64_t) t != unix_s || !gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999)
                return -EINVAL;
        if (strftime(ret, TS_CTRD_RFC3339_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return -EINVAL;
        return 0;
}

static int lease_from_pb(const void *pb, void *ret) {
        const PbLease *p = pb;
        ts_ctrd_lease l = { .created_ns = ts_ctrd_time_from_pb(p->created_at) };
        if (ts_ctrd_strdup(p->id, &l.id) < 0 ||
            ts_ctrd_pairs_from_pb(p->n_labels, (void *const *) p->labels, &l.labels) < 0) {
                ts_ctrd_lease_done(&l);
                return -ENOMEM;
        }
        *(ts_ctrd_lease *) ret = l;
        return 0;
}

int ts_ctrd_lease_create(ts_ctrd *c, const char *id, char *const *labels, ts_ctrd_lease *ret,
                         ts_error **err) {
        Containerd__Services__Leases__V1__CreateRequest req =
                CONTAINERD__SERVICES__LEASES__V1__CREATE_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Leases__V1__CreateResponse *resp = NULL;
        _cleanup_(ts_ctrd_pbmap_done) ts_ctrd_pbmap map = { 0 };

        int r = ts_ctrd_need(id, "lease id", err);
        if (r >= 0)
                r = ts_ctrd_pbmap_build(&containerd__services__leases__v1__create_request__labels_entry__descriptor,
                                        labels, "lease labels", &map, err);
        if (r >= 0) {
                req.id = (char *) id;
                req.n_labels = map.n;
                req.labels = (Containerd__Services__Leases__V1__CreateRequest__LabelsEntry **) map.entries;
                r = ts_ctrd_unary(c, NULL, METHOD("Create"), TS_CTRD_SHORT, &req.base,
                                  &containerd__services__leases__v1__create_response__descriptor,
                                  (ProtobufCMessage **) &resp, err);
        }
        if (r >= 0 && ret && !resp->lease)
                r = ts_error_setf_plain(err, EBADMSG, "containerd answered without the lease");
        if (r >= 0 && ret && lease_from_pb(resp->lease, ret) < 0)
                r = ts_error_set(err, ENOMEM, "lease");
        return r < 0 ? ts_error_prefix(err, r, "lease create %s", id ? id : "") : 0;
}

int ts_ctrd_lease_delete(ts_ctrd *c, const char *id, bool sync, ts_error **err) {
        Containerd__Services__Leases__V1__DeleteRequest req =
                CONTAINERD__SERVICES__LEASES__V1__DELETE_REQUEST__INIT;
        int r = ts_ctrd_need(id, "lease id", err);
        if (r < 0)
                return r;
        req.id = (char *) id;
        req.sync = sync;
        r = ts_ctrd_unary_empty(c, NULL, METHOD("Delete"), sync ? TS_CTRD_LONG : TS_CTRD_SHORT,
                                &req.base, err);
        return r < 0 ? ts_error_prefix(err, r, "lease delete %s", id) : 0;
}

int ts_ctrd_lease_list(ts_ctrd *c, char *const *filters, ts_ctrd_lease **ret, size_t *ret_n,
                       ts_error **err) {
        Containerd__Services__Leases__V1__ListRequest req =
                CONTAINERD__SERVICES__LEASES__V1__LIST_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Leases__V1__ListResponse *resp = NULL;

        req.n_filters = ts_strv_length(filters);
        req.filters = (char **) filters;
        int r = ts_ctrd_unary(c, NULL, METHOD("List"), TS_CTRD_SHORT, &req.base,
                              &containerd__services__leases__v1__list_response__descriptor,
                              (ProtobufCMessage **) &resp, err);
        if (r < 0)
                return ts_error_prefix(err, r, "lease list");
        if (ts_ctrd_list_from_pb(resp->n_leases, (void *const *) resp->leases, sizeof(**ret),
                                 lease_from_pb, lease_done, (void **) ret) < 0)
                return ts_error_set(err, ENOMEM, "lease list");
        *ret_n = resp->n_leases;
        return 0;
}

/* AddResource and DeleteResource take the same request. */
static int resource_call(ts_ctrd *c, const char *method, const char *verb, const char *id,
                         const char *type, const char *resource_id, ts_error **err) {
        Containerd__Services__Leases__V1__AddResourceRequest req =
                CONTAINERD__SERVICES__LEASES__V1__ADD_RESOURCE_REQUEST__INIT;
        PbResource res = CONTAINERD__SERVICES__LEASES__V1__RESOURCE__INIT;

        int r = ts_ctrd_need(id, "lease id", err);
        if (r >= 0)
                r = ts_ctrd_need(type, "resource type", err);
        if (r >= 0)
                r = ts_ctrd_need(resource_id, "resource id", err);
        if (r < 0)
                return r;
        res.id = (char *) resource_id;
        res.type = (char *) type;
        req.id = (char *) id;
        req.resource = &res;
        r = ts_ctrd_unary_empty(c, NULL, method, TS_CTRD_SHORT, &req.base, err);
        return r < 0 ? ts_error_prefix(err, r, "lease %s %s resource %s %s", id, verb, type,
                                       resource_id)
                     : 0;
}

int ts_ctrd_lease_add_resource(ts_ctrd *c, const char *id, const char *type,
                               const char *resource_id, ts_error **err) {
        return resource_call(c, METHOD("AddResource"), "add", id, type, resource_id, err);
}

int ts_ctrd_lease_delete_resource(ts_ctrd *c, const char *id, const char *type,
                                  const char *resource_id, ts_error **err) {
        return resource_call(c, METHOD("DeleteResource"), "delete", id, type, resource_id, err);
}

static int resource_from_pb(const void *pb, void *ret) {
        const PbResource *p = pb;
        ts_ctrd_resource *res = ret;
        if (ts_ctrd_strdup(p->id, &res->id) < 0 || ts_ctrd_strdup(p->type, &res->type) < 0) {
                resource_done(res);
                return -ENOMEM;
        }
        return 0;
}

int ts_ctrd_lease_list_resources(ts_ctrd *c, const char *id, ts_ctrd_resource **ret,
                                 size_t *ret_n, ts_error **err) {
        Containerd__Services__Leases__V1__ListResourcesRequest req =
                CONTAINERD__SERVICES__LEASES__V1__LIST_RESOURCES_REQUEST__INIT;
        _cleanup_message_ Containerd__Services__Leases__V1__ListResourcesResponse *resp = NULL;

        int r = ts_ctrd_need(id, "lease id", err);
        if (r < 0)
                return r;
        req.id = (char *) id;
        r = ts_ctrd_unary(c, NULL, METHOD("ListResources"), TS_CTRD_SHORT, &req.base,
                          &containerd__services__leases__v1__list_resources_response__descriptor,
                          (ProtobufCMessage **) &resp, err);
        if (r < 0)
                return ts_error_prefix(err, r, "lease %s list resources", id);
        if (ts_ctrd_list_from_pb(resp->n_resources, (void *const *) resp->resources, sizeof(**ret),
                                 resource_from_pb, resource_done, (void **) ret) < 0)
                return ts_error_set(err, ENOMEM, "lease %s list resources", id);
        *ret_n = resp->n_resources;
        return 0;
}
