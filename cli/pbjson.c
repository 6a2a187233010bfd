#include "pbjson.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

static json_object *from_value(const ProtobufCFieldDescriptor *f, const void *p);

static json_object *timestamp_json(const ProtobufCMessage *m) {
        const ProtobufCMessageDescriptor *d = m->descriptor;
        const ProtobufCFieldDescriptor *fs = protobuf_c_message_descriptor_get_field_by_name(d, "seconds");
        const ProtobufCFieldDescriptor *fn = protobuf_c_message_descriptor_get_field_by_name(d, "nanos");
        int64_t s = *(const int64_t *) ((const char *) m + fs->offset);
        int32_t ns = *(const int32_t *) ((const char *) m + fn->offset);
        time_t t = (time_t) s;
        struct tm tm;
        char buf[64], out[80];
        if (!gmtime_r(&t, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm))
                return json_object_new_int64(s);
        snprintf(out, sizeof out, "%s.%09dZ", buf, ns);
        return json_object_new_string(out);
}

/* A map<K,V> field arrives as repeated entry messages {key = 1, value = 2}. */
static json_object *map_json(const ProtobufCFieldDescriptor *f, size_t n, void *const *entries) {
        const ProtobufCMessageDescriptor *ed = f->descriptor;
        const ProtobufCFieldDescriptor *kf = protobuf_c_message_descriptor_get_field(ed, 1);
        const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(ed, 2);
        json_object *o = json_object_new_object();
        for (size_t i = 0; o && i < n; i++) {
                const char *e = entries[i];
                const char *key = *(char *const *) (e + kf->offset);
                json_object_object_add(o, key ? key : "", from_value(vf, e + vf->offset));
        }
        return o;
}

static json_object *bytes_json(const ProtobufCBinaryData *b) {
        if (b->len > (INT_MAX / 4) * 3 - 3)
                return NULL;
        unsigned char *out = malloc((b->len + 2) / 3 * 4 + 1);
        if (!out)
                return NULL;
        int n = EVP_EncodeBlock(out, b->data, (int) b->len);
        json_object *j = json_object_new_string_len((const char *) out, n);
        free(out);
        return j;
}

static json_object *from_value(const ProtobufCFieldDescriptor *f, const void *p) {
        switch (f->type) {
        case PROTOBUF_C_TYPE_STRING: {
                const char *s = *(char *const *) p;
                return json_object_new_string(s ? s : "");
        }
        case PROTOBUF_C_TYPE_BOOL: return json_object_new_boolean(*(const protobuf_c_boolean *) p);
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32: return json_object_new_int(*(const int32_t *) p);
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32: return json_object_new_int64(*(const uint32_t *) p);
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64: return json_object_new_int64(*(const int64_t *) p);
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64: return json_object_new_uint64(*(const uint64_t *) p);
        case PROTOBUF_C_TYPE_FLOAT: return json_object_new_double(*(const float *) p);
        case PROTOBUF_C_TYPE_DOUBLE: return json_object_new_double(*(const double *) p);
        case PROTOBUF_C_TYPE_BYTES: return bytes_json(p);
        case PROTOBUF_C_TYPE_ENUM: {
                const ProtobufCEnumValue *v =
                        protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *) p);
                return v ? json_object_new_string(v->name) : json_object_new_int(*(const int *) p);
        }
        case PROTOBUF_C_TYPE_MESSAGE: {
                const ProtobufCMessage *m = *(ProtobufCMessage *const *) p;
                return m ? ts_pbjson_from_message(m) : NULL;
        }
        }
        return NULL;
}

static size_t value_size(const ProtobufCFieldDescriptor *f) {
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
        case PROTOBUF_C_TYPE_DOUBLE: return 8;
        case PROTOBUF_C_TYPE_STRING:
        case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
        case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
        case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
        default: return 4;
        }
}

static bool is_map(const ProtobufCFieldDescriptor *f) {
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
                return false;
        const char *name = ((const ProtobufCMessageDescriptor *) f->descriptor)->name;
        size_t n = strlen(name);
        return n > 5 && strcmp(name + n - 5, "Entry") == 0;
}

static json_object *repeated_json(const ProtobufCFieldDescriptor *f, const char *base) {
        size_t n = *(const size_t *) (base + f->quantifier_offset);
        const char *arr = *(char *const *) (base + f->offset);
        if (is_map(f))
                return map_json(f, n, (void *const *) arr);
        json_object *a = json_object_new_array();
        size_t sz = value_size(f);
        for (size_t i = 0; a && i < n; i++)
                json_object_array_add(a, from_value(f, arr + i * sz));
        return a;
}

json_object *ts_pbjson_from_message(const ProtobufCMessage *m) {
        const ProtobufCMessageDescriptor *d = m->descriptor;
        if (strcmp(d->name, "Timestamp") == 0 && strcmp(d->package_name, "google.protobuf") == 0)
                return timestamp_json(m);
        json_object *o = json_object_new_object();
        const char *base = (const char *) m;
        for (unsigned i = 0; o && i < d->n_fields; i++) {
                const ProtobufCFieldDescriptor *f = &d->fields[i];
                json_object *v = f->label == PROTOBUF_C_LABEL_REPEATED ? repeated_json(f, base)
                                                                       : from_value(f, base + f->offset);
                if (v || f->type != PROTOBUF_C_TYPE_MESSAGE)
                        json_object_object_add(o, f->name, v);
        }
        return o;
}
