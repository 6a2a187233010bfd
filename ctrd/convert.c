#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/strv.h"
#include "ctrd/ctrd-internal.h"

/* Every generated map<string, string> entry has this layout. */
typedef struct map_entry {
        ProtobufCMessage base;
        char *key;
        char *value;
} map_entry;

const char *ts_ctrd_label(char *const *labels, const char *key) {
        for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2)
                if (strcmp(labels[i], key) == 0)
                        return labels[i + 1];
        return NULL;
}

int ts_ctrd_pairs_check(char *const *pairs, const char *what, ts_error **err) {
        size_t n = ts_strv_length(pairs);
        if (n % 2)
                return ts_error_setf_plain(err, EINVAL, "%s: key \"%s\" has no value", what,
                                           pairs[n - 1]);
        for (size_t i = 0; i < n; i += 2)
                if (!*pairs[i])
                        return ts_error_setf_plain(err, EINVAL, "%s: empty key", what);
        return 0;
}

int ts_ctrd_pbmap_build(const ProtobufCMessageDescriptor *entry_desc, char *const *pairs,
                        const char *what, ts_ctrd_pbmap *ret, ts_error **err) {
        int r = ts_ctrd_pairs_check(pairs, what, err);
        if (r < 0)
                return r;
        size_t n = ts_strv_length(pairs) / 2;
        if (n == 0) {
                *ret = (ts_ctrd_pbmap) { 0 };
                return 0;
        }
        /* The pointers and the entries in one allocation. */
        ProtobufCMessage **v = calloc(1, n * (sizeof(*v) + sizeof(map_entry)));
        if (!v)
                return ts_error_set(err, ENOMEM, "%s", what);
        map_entry *e = (map_entry *) (v + n);
        for (size_t i = 0; i < n; i++) {
                protobuf_c_message_init(entry_desc, &e[i]);
                e[i].key = pairs[2 * i];
                e[i].value = pairs[2 * i + 1];
                v[i] = &e[i].base;
        }
        *ret = (ts_ctrd_pbmap) { .n = n, .entries = v };
        return 0;
}

void ts_ctrd_pbmap_done(ts_ctrd_pbmap *m) {
        free(m->entries);
        *m = (ts_ctrd_pbmap) { 0 };
}

int ts_ctrd_pairs_from_pb(size_t n, void *const *entries, char ***ret) {
        _cleanup_strv_free_ char **v = NULL;
        for (size_t i = 0; i < n; i++) {
                const map_entry *e = entries[i];
                if (ts_strv_push(&v, e->key ? e->key : "") < 0 ||
                    ts_strv_push(&v, e->value ? e->value : "") < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(v);
        return 0;
}

int64_t ts_ctrd_time_from_pb(const Google__Protobuf__Timestamp *t) {
        return t ? t->seconds * 1000000000 + t->nanos : 0;
}

int ts_ctrd_strdup(const char *s, char **ret) {
        char *d = NULL;
        if (s && *s && !(d = strdup(s)))
                return -ENOMEM;
        *ret = d;
        return 0;
}

int ts_ctrd_need(const char *s, const char *what, ts_error **err) {
        if (!s || !*s)
                return ts_error_setf_plain(err, EINVAL, "%s is empty", what);
        return 0;
}

void ts_ctrd_descriptor_done(ts_ctrd_descriptor *d) {
        if (!d)
                return;
        free(d->media_type);
        free(d->digest);
        ts_strv_free(d->annotations);
        *d = (ts_ctrd_descriptor) { 0 };
}

int ts_ctrd_descriptor_from_pb(const Containerd__Types__Descriptor *d, ts_ctrd_descriptor *ret) {
        ts_ctrd_descriptor o = { 0 };
        if (!d) {
                *ret = o;
                return 0;
        }
        o.size = d->size;
        if (ts_ctrd_strdup(d->media_type, &o.media_type) < 0 ||
            ts_ctrd_strdup(d->digest, &o.digest) < 0 ||
            ts_ctrd_pairs_from_pb(d->n_annotations, (void *const *) d->annotations,
                                  &o.annotations) < 0) {
                ts_ctrd_descriptor_done(&o);
                return -ENOMEM;
        }
        *ret = o;
        return 0;
}

int ts_ctrd_descriptor_to_pb(const ts_ctrd_descriptor *d, Containerd__Types__Descriptor *out,
                             ts_ctrd_pbmap *out_annotations, ts_error **err) {
        int r = ts_ctrd_pbmap_build(&containerd__types__descriptor__annotations_entry__descriptor,
                                    d->annotations, "descriptor annotations", out_annotations, err);
        if (r < 0)
                return r;
        containerd__types__descriptor__init(out);
        out->media_type = d->media_type ? d->media_type : "";
        out->digest = d->digest ? d->digest : "";
        out->size = d->size;
        out->n_annotations = out_annotations->n;
        out->annotations =
                (Containerd__Types__Descriptor__AnnotationsEntry **) out_annotations->entries;
        return 0;
}

static void mount_done(ts_ctrd_mount *m) {
        free(m->type);
        free(m->source);
        free(m->target);
        ts_strv_free(m->options);
}

ts_ctrd_mounts *ts_ctrd_mounts_free(ts_ctrd_mounts *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n; i++)
                mount_done(&m->v[i]);
        free(m);
        return NULL;
}

static int mount_from_pb(const Containerd__Types__Mount *p, ts_ctrd_mount *m) {
        if (ts_ctrd_strdup(p->type, &m->type) < 0 || ts_ctrd_strdup(p->source, &m->source) < 0 ||
            ts_ctrd_strdup(p->target, &m->target) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_options; i++)
                if (ts_strv_push(&m->options, p->options[i]) < 0)
                        return -ENOMEM;
        return 0;
}

int ts_ctrd_mounts_from_pb(size_t n, Containerd__Types__Mount *const *v, ts_ctrd_mounts **ret) {
        _cleanup_(ts_ctrd_mounts_freep) ts_ctrd_mounts *m =
                calloc(1, sizeof(*m) + n * sizeof(m->v[0]));
        if (!m)
                return -ENOMEM;
        for (; m->n < n; m->n++)
                if (mount_from_pb(v[m->n], &m->v[m->n]) < 0) {
                        m->n++; /* frees what the failed one holds */
                        return -ENOMEM;
                }
        *ret = TAKE_PTR(m);
        return 0;
}

int ts_ctrd_mounts_to_pb(const ts_ctrd_mounts *m, Containerd__Types__Mount ***ret) {
        size_t n = m ? m->n : 0;
        Containerd__Types__Mount **v = calloc(1, n * (sizeof(*v) + sizeof(**v)) + 1);
        if (!v)
                return -ENOMEM;
        Containerd__Types__Mount *p = (Containerd__Types__Mount *) (v + n);
        for (size_t i = 0; i < n; i++) {
                containerd__types__mount__init(&p[i]);
                p[i].type = m->v[i].type ? m->v[i].type : "";
                p[i].source = m->v[i].source ? m->v[i].source : "";
                p[i].target = m->v[i].target ? m->v[i].target : "";
                p[i].n_options = ts_strv_length(m->v[i].options);
                p[i].options = m->v[i].options;
                v[i] = &p[i];
        }
        *ret = v;
        return 0;
}

int ts_ctrd_label_mask(char *const *labels, char ***ret) {
        _cleanup_strv_free_ char **v = NULL;
        for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "labels.%s", labels[i]) < 0 || ts_strv_push(&v, p) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(v);
        return 0;
}

void ts_ctrd_list_free(void *v, size_t n, size_t size, ts_ctrd_done_fn done) {
        for (size_t i = 0; v && i < n; i++)
                done((char *) v + i * size);
        free(v);
}

int ts_ctrd_list_from_pb(size_t n, void *const *pb, size_t size, ts_ctrd_from_pb_fn from,
                         ts_ctrd_done_fn done, void **ret) {
        char *v = calloc(n ? n : 1, size);
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (from(pb[i], v + i * size) < 0) {
                        ts_ctrd_list_free(v, i, size, done);
                        return -ENOMEM;
                }
        *ret = v;
        return 0;
}
