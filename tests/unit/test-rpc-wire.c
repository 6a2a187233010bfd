/* rpc/wire.h: counting fields in protobuf's wire format without decoding,
 * against messages protobuf-c packs, and against malformed input. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "containerd/services/snapshots/v1/snapshots.pb-c.h"
#include "rpc/wire.h"
#include "tests/unit/ts-check.h"

typedef Containerd__Services__Snapshots__V1__Info__LabelsEntry Entry;

static const uint32_t labels4[] = { 4 }, info_labels[] = { 2, 6 };

static size_t count_ok(const uint8_t *p, size_t len, const uint32_t *path, size_t depth) {
        size_t n = 99;
        ck_assert_int_eq(ts_wire_count(p, len, path, depth, &n), 0);
        return n;
}

START_TEST(counts_what_protobuf_c_packs) {
        enum { N = 300 };
        Entry e[N];
        Entry *ep[N];
        char keys[N][8];
        for (int i = 0; i < N; i++) {
                containerd__services__snapshots__v1__info__labels_entry__init(&e[i]);
                snprintf(keys[i], sizeof keys[i], "k%d", i);
                e[i].key = keys[i];
                e[i].value = i % 2 ? "v" : "";
                ep[i] = &e[i];
        }
        Containerd__Services__Snapshots__V1__PrepareSnapshotRequest req =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__PREPARE_SNAPSHOT_REQUEST__INIT;
        req.key = "key";
        req.parent = "parent";
        req.n_labels = N;
        req.labels = (void *) ep;
        size_t len = protobuf_c_message_get_packed_size(&req.base);
        uint8_t *buf = malloc(len);
        ck_assert_ptr_nonnull(buf);
        protobuf_c_message_pack(&req.base, buf);
        ck_assert_uint_eq(count_ok(buf, len, labels4, 1), N);
        /* another field: the key, once; a field that is absent */
        static const uint32_t key2[] = { 2 }, snapshotter1[] = { 1 };
        ck_assert_uint_eq(count_ok(buf, len, key2, 1), 1);
        ck_assert_uint_eq(count_ok(buf, len, snapshotter1, 1), 0);
        /* every cut short of the whole is refused or counts fewer */
        for (size_t cut = 0; cut < len; cut += 7) {
                size_t n = 0;
                int r = ts_wire_count(buf, cut, labels4, 1, &n);
                ck_assert(r == -EBADMSG || (r == 0 && n < N));
        }
        free(buf);

        /* Update: info (2) given twice is merged, its labels (6) all count */
        Containerd__Services__Snapshots__V1__UpdateSnapshotRequest up =
                CONTAINERD__SERVICES__SNAPSHOTS__V1__UPDATE_SNAPSHOT_REQUEST__INIT;
        Containerd__Services__Snapshots__V1__Info info = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT;
        info.name = "n";
        info.n_labels = 5;
        info.labels = (void *) ep;
        up.info = &info;
        len = protobuf_c_message_get_packed_size(&up.base);
        buf = malloc(2 * len);
        ck_assert_ptr_nonnull(buf);
        protobuf_c_message_pack(&up.base, buf);
        memcpy(buf + len, buf, len);
        ck_assert_uint_eq(count_ok(buf, len, info_labels, 2), 5);
        ck_assert_uint_eq(count_ok(buf, 2 * len, info_labels, 2), 10);
        ProtobufCMessage *dec = protobuf_c_message_unpack(
                &containerd__services__snapshots__v1__update_snapshot_request__descriptor, NULL, 2 * len, buf);
        ck_assert_ptr_nonnull(dec);
        ck_assert_uint_eq(((Containerd__Services__Snapshots__V1__UpdateSnapshotRequest *) dec)->info->n_labels, 10);
        protobuf_c_message_free_unpacked(dec, NULL);
        free(buf);
}
END_TEST

START_TEST(malformed) {
        size_t n;
        /* field 4, length 5, 2 bytes there */
        static const uint8_t past_end[] = { 0x22, 0x05, 'a', 'b' };
        ck_assert_int_eq(ts_wire_count(past_end, sizeof past_end, labels4, 1, &n), -EBADMSG);
        /* a varint that does not end; one of 11 bytes */
        static const uint8_t open_varint[] = { 0x08, 0x80, 0x80 };
        ck_assert_int_eq(ts_wire_count(open_varint, sizeof open_varint, labels4, 1, &n), -EBADMSG);
        static const uint8_t long_varint[] = { 0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 };
        ck_assert_int_eq(ts_wire_count(long_varint, sizeof long_varint, labels4, 1, &n), -EBADMSG);
        /* fixed64 and fixed32 cut short */
        static const uint8_t short64[] = { 0x09, 1, 2, 3 }, short32[] = { 0x0d, 1, 2 };
        ck_assert_int_eq(ts_wire_count(short64, sizeof short64, labels4, 1, &n), -EBADMSG);
        ck_assert_int_eq(ts_wire_count(short32, sizeof short32, labels4, 1, &n), -EBADMSG);
        /* groups and wire types 6, 7 */
        static const uint8_t group[] = { 0x0b, 0x0c }, wt6[] = { 0x0e };
        ck_assert_int_eq(ts_wire_count(group, sizeof group, labels4, 1, &n), -EBADMSG);
        ck_assert_int_eq(ts_wire_count(wt6, sizeof wt6, labels4, 1, &n), -EBADMSG);
        /* a bad embedded message on the path; the same elsewhere is not looked into */
        static const uint8_t bad_inner[] = { 0x12, 0x02, 0x32, 0x05 };
        ck_assert_int_eq(ts_wire_count(bad_inner, sizeof bad_inner, info_labels, 2, &n), -EBADMSG);
        ck_assert_uint_eq(count_ok(bad_inner, sizeof bad_inner, labels4, 1), 0);
        /* fixed-width and varint fields are skipped */
        static const uint8_t mixed[] = { 0x08, 0x96, 0x01, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 0x0d, 1, 2, 3, 4, 0x22, 0x00 };
        ck_assert_uint_eq(count_ok(mixed, sizeof mixed, labels4, 1), 1);
        ck_assert_uint_eq(count_ok(NULL, 0, labels4, 1), 0);
        ck_assert_int_eq(ts_wire_count(mixed, sizeof mixed, labels4, 0, &n), -EINVAL);
        static const uint32_t deep[TS_WIRE_MAX_DEPTH + 1] = { 0 };
        ck_assert_int_eq(ts_wire_count(mixed, sizeof mixed, deep, TS_WIRE_MAX_DEPTH + 1, &n), -EINVAL);
}
END_TEST

int main(void) {
        Suite *s = suite_create("rpc-wire");
        TCase *tc = tcase_create("rpc-wire");
        tcase_add_test(tc, counts_what_protobuf_c_packs);
        tcase_add_test(tc, malformed);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
