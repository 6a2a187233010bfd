/* prepared-cut: what a prepared image saves per VM, through thinsnap's Provisioner API on one
 * held connection (bench/run-prepared-bench.sh runs it in the VM lane):
 *
 *   prepared-cut -address SOCK -image REF -digest sha256:<hex> -agent FILE [-vms N]
 *
 * For i in 1..N, interleaved (in turn first and second): Snapshot("p<i>", "prepared:<digest>") (the agent is in the
 * image already), and Snapshot("i<i>", REF) + InjectFile("i<i>", FILE, /.hpcc/agent) (the agent
 * written into every VM's device). Prints p50 and p95 of each (and of the plain cut alone)
 * and the ratio of the p50s, then tears every VM down. REF must be warmed and prepared
 * with FILE beforehand. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "bench/bench.h"
#include "common/units.h"
#include "rpc/call.h"
#include "rpc/client.h"
#include "thinsnap/v1/provisioner.pb-c.h"

#define SVC "/thinsnap.v1.Provisioner/"

typedef struct args {
        const char *address, *image, *digest, *agent;
        uint32_t vms;
} args;

static int unary(ts_rpc_client *c, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *desc, ts_error **err) {
        char path[96];
        snprintf(path, sizeof path, SVC "%s", method);
        ProtobufCMessage *resp = NULL;
        int e = ts_rpc_client_unary(c, path, NULL, req, desc, &resp, err);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return e;
}

static int cut(ts_rpc_client *c, const char *vm, const char *image, ts_error **err) {
        Thinsnap__V1__SnapshotRequest req = THINSNAP__V1__SNAPSHOT_REQUEST__INIT;
        req.vm_id = (char *) vm;
        req.image = (char *) image;
        return unary(c, "Snapshot", &req.base, &thinsnap__v1__vm__descriptor, err);
}

static int inject(ts_rpc_client *c, const char *vm, const char *agent, ts_error **err) {
        Thinsnap__V1__InjectFileRequest req = THINSNAP__V1__INJECT_FILE_REQUEST__INIT;
        req.vm_id = (char *) vm;
        req.host_path = (char *) agent;
        req.guest_path = "/.hpcc/agent";
        req.mode = 0755;
        return unary(c, "InjectFile", &req.base, &thinsnap__v1__inject_file_response__descriptor, err);
}

static int teardown(ts_rpc_client *c, const char *vm, ts_error **err) {
        Thinsnap__V1__TeardownRequest req = THINSNAP__V1__TEARDOWN_REQUEST__INIT;
        req.vm_id = (char *) vm;
        return unary(c, "Teardown", &req.base, &thinsnap__v1__teardown_response__descriptor, err);
}

/* One VM of each kind. The order alternates with i, so that each kind
 * follows the previous agent write (its writeback) half of the time. */
static int round_one(ts_rpc_client *c, const args *a, const char *image, uint32_t i, double *prepared,
                     double *plain, double *injected, ts_error **err) {
        char vp[32], vi[32];
        snprintf(vp, sizeof vp, "p%03u", i);
        snprintf(vi, sizeof vi, "i%03u", i);
        int e = 0;
        double t0 = 0, t1 = 0, t2 = 0;
        for (int step = 0; e >= 0 && step < 2; step++) {
                if ((step == 0) == (i % 2 == 0)) {
                        t0 = ts_bench_now_ms();
                        e = cut(c, vp, image, err);
                        *prepared = ts_bench_now_ms() - t0;
                        continue;
                }
                t1 = ts_bench_now_ms();
                e = cut(c, vi, a->image, err);
                t2 = ts_bench_now_ms();
                if (e >= 0)
                        e = inject(c, vi, a->agent, err);
                *plain = t2 - t1;
                *injected = ts_bench_now_ms() - t1;
        }
        return e;
}

static int rounds(ts_rpc_client *c, const args *a, double *prepared, double *plain, double *injected,
                  ts_error **err) {
        char image[96];
        snprintf(image, sizeof image, "prepared:%s", a->digest);
        for (uint32_t i = 0; i < a->vms; i++) {
                int e = round_one(c, a, image, i, &prepared[i], &plain[i], &injected[i], err);
                if (e < 0)
                        return e;
        }
        return 0;
}

static double pct(double *v, uint32_t n, double p) {
        ts_bench_sort(v, n);
        return v[(size_t) ((n - 1) * p + 0.5)];
}

static void parse(int argc, char **argv, args *a) {
        *a = (args) { .vms = 50 };
        for (int i = 1; i + 1 < argc; i += 2) {
                const char *f = argv[i], *v = argv[i + 1];
                if (strcmp(f, "-address") == 0) a->address = v;
                else if (strcmp(f, "-image") == 0) a->image = v;
                else if (strcmp(f, "-digest") == 0) a->digest = v;
                else if (strcmp(f, "-agent") == 0) a->agent = v;
                else if (strcmp(f, "-vms") != 0 || ts_units_parse_u32(v, &a->vms) < 0)
                        a->vms = 0;
        }
        if (!a->address || !a->image || !a->digest || !a->agent || a->vms < 1 || a->vms > 999 ||
            argc % 2 == 0) {
                fprintf(stderr, "usage: prepared-cut -address SOCK -image REF -digest sha256:<hex> "
                                "-agent FILE [-vms 1..999]\n");
                exit(2);
        }
}

int main(int argc, char **argv) {
        args a;
        parse(argc, argv, &a);
        double *p = calloc(a.vms, sizeof(*p)), *u = calloc(a.vms, sizeof(*u));
        double *q = calloc(a.vms, sizeof(*q));
        ts_rpc_client *c = NULL;
        ts_error *err = NULL;
        int e = p && u && q ? ts_rpc_client_connect(a.address, &c, &err) : -ENOMEM;
        if (e >= 0)
                e = rounds(c, &a, p, u, q, &err);
        if (e >= 0) {
                double pp50 = pct(p, a.vms, 0.5), qp50 = pct(q, a.vms, 0.5);
                printf("| per VM | n | p50 (ms) | p95 (ms) |\n|---|---:|---:|---:|\n");
                printf("| cut from the prepared image | %u | %.1f | %.1f |\n", a.vms, pp50,
                       pct(p, a.vms, 0.95));
                printf("| cut + `vm inject` of the agent | %u | %.1f | %.1f |\n", a.vms, qp50,
                       pct(q, a.vms, 0.95));
                printf("| (the plain cut alone) | %u | %.1f | %.1f |\n", a.vms, pct(u, a.vms, 0.5),
                       pct(u, a.vms, 0.95));
                printf("\nratio p50: %.3fx (target <= 0.2x)\n", pp50 / qp50);
        }
        for (uint32_t i = 0; c && i < a.vms; i++) {
                char vp[32], vi[32];
                snprintf(vp, sizeof vp, "p%03u", i);
                snprintf(vi, sizeof vi, "i%03u", i);
                teardown(c, vp, NULL);
                teardown(c, vi, NULL);
        }
        if (e < 0)
                fprintf(stderr, "prepared-cut: %s\n", ts_error_message(err, e));
        ts_error_free(err);
        ts_rpc_client_free(c);
        free(p);
        free(u);
        free(q);
        return e < 0 ? 1 : 0;
}
