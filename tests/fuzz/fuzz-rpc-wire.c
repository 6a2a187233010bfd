/* libFuzzer target: rpc/wire.h's field count against protobuf-c itself.
 * Whatever protobuf-c decodes as a Prepare or an Update request, the count
 * must read as well formed and equal the labels protobuf-c found. */
#include <stdint.h>
#include <stdlib.h>

#include "containerd/services/snapshots/v1/snapshots.pb-c.h"
#include "rpc/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const uint32_t labels4[] = { 4 }, info_labels[] = { 2, 6 };
        size_t n = 0;
        int r = ts_wire_count(data, size, labels4, 1, &n);
        Containerd__Services__Snapshots__V1__PrepareSnapshotRequest *p =
                containerd__services__snapshots__v1__prepare_snapshot_request__unpack(NULL, size, data);
        if (p) {
                if (r != 0 || n != p->n_labels)
                        abort();
                containerd__services__snapshots__v1__prepare_snapshot_request__free_unpacked(p, NULL);
        }
        r = ts_wire_count(data, size, info_labels, 2, &n);
        Containerd__Services__Snapshots__V1__UpdateSnapshotRequest *u =
                containerd__services__snapshots__v1__update_snapshot_request__unpack(NULL, size, data);
        if (u) {
                if (r != 0 || n != (u->info ? u->info->n_labels : 0))
                        abort();
                containerd__services__snapshots__v1__update_snapshot_request__free_unpacked(u, NULL);
        }
        return 0;
}
