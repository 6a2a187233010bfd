/* prov-flow: a VM manager's storage flow through thinsnap's Provisioner API, in C on one held
 * connection: the third column of bench/run-provisioner-bench.sh, next to the same flow
 * written with containerd's Go client (bench/provisioner). The same steps, the same JSON:
 *
 *   prov-flow -address SOCK -image REF [-plain-http] [-vms N] [-warms N] [-concurrent N]
 *             [-rounds N] [-flow NAME] [-out FILE] [-rss-pid PID] [-rss-name NAME]
 *             [-also-warm REF]... [-prewarm REF] [-turn-in FIFO -turn-out FIFO]
 *
 *   prewarm     -prewarm's image pulled and removed again, untimed, before the first warm,
 *               as the Go flows do: no first warm pays for code its client has not run yet
 *               (in the VM lane every page of a program and its libraries comes over 9p);
 *   warm        PullImage until READY, -warms times; between two the image is removed
 *               (RemoveImage, synchronous GC), so each warm starts cold; then each
 *               -also-warm image once (untimed), so the daemon's memory is sampled with
 *               several images warm;
 *   vm_snapshot Snapshot(vm, image), -vms times one after another; teardown: Teardown of each;
 *   concurrent  -concurrent Snapshots released at once (each call, start -> last, first ->
 *               last completion), then their Teardowns at once; -rounds times (default 3),
 *               since one burst's spread varies a lot from run to run; with -turn-in and
 *               -turn-out each round waits for its turn: "ready ROUND" written to -turn-out,
 *               a line "go" read from -turn-in; "snapped ROUND" and another "go" between
 *               its snapshots and its teardowns; "done ROUND" written after it (in-guest.sh
 *               passes the turns between this flow's rounds and the Go flows'). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench/bench.h"
#include "common/json.h"
#include "rpc/call.h"
#include "rpc/client.h"
#include "thinsnap/v1/provisioner.pb-c.h"

#define SVC "/thinsnap.v1.Provisioner/"
#define MAX_ALSO 16

typedef struct args {
        const char *address, *image, *flow, *out, *rss_name, *prewarm, *also[MAX_ALSO];
        const char *turn_in, *turn_out;
        int vms, warms, concurrent, rounds, rss_pid, n_also;
        bool plain_http;
} args;

typedef struct run {
        const args *a;
        ts_rpc_client *c;
        FILE *turn_in, *turn_out; /* NULL without -turn-in and -turn-out */
        json_object *res, *ops, *rss, *problems;
} run;

static void add_op(run *r, const char *op, double ms) {
        json_object *v;
        if (!json_object_object_get_ex(r->ops, op, &v)) {
                v = json_object_new_array();
                json_object_object_add(r->ops, op, v);
        }
        json_object_array_add(v, json_object_new_double(ms));
}

static void problem(run *r, const char *what, int e, const ts_error *err) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s: %s", what, ts_error_message(err, e));
        fprintf(stderr, "prov-flow: PROBLEM: %s\n", buf);
        json_object_array_add(r->problems, json_object_new_string(buf));
}

static void sample_rss(run *r, const char *when) {
        if (!r->a->rss_pid)
                return;
        /* VmRSS, and the part of it that is the process's own memory (RssAnon) rather than
         * pages of its executable and shared libraries (RssFile). */
        static const struct { const char *field, *key; } keys[] = {
                { "VmRSS:", "kib" }, { "RssAnon:", "anon_kib" }, { "RssFile:", "file_kib" },
        };
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", r->a->rss_pid);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return;
        json_object *s = json_object_new_object();
        json_object_object_add(s, "when", json_object_new_string(when));
        while (fgets(line, sizeof line, f))
                for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
                        size_t n = strlen(keys[i].field);
                        if (strncmp(line, keys[i].field, n) == 0)
                                json_object_object_add(s, keys[i].key,
                                                       json_object_new_int64(strtoll(line + n, NULL, 10)));
                }
        json_object_array_add(r->rss, s);
}

static int unary(run *r, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *desc, ts_error **err) {
        char path[96];
        snprintf(path, sizeof path, SVC "%s", method);
        ProtobufCMessage *resp = NULL;
        int e = ts_rpc_client_unary(r->c, path, NULL, req, desc, &resp, err);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return e;
}

/* PullImage of ref until its stream ends; the last status must be READY. */
static int warm_ref(run *r, const char *ref, ts_error **err) {
        Thinsnap__V1__PullImageRequest req = THINSNAP__V1__PULL_IMAGE_REQUEST__INIT;
        req.ref = (char *) ref;
        req.plain_http = r->a->plain_http;
        ts_rpc_client_call *cc = NULL;
        int e = ts_rpc_client_call_start(r->c, SVC "PullImage", NULL, &cc, err);
        if (e >= 0)
                e = ts_rpc_client_call_send_message(cc, &req.base, err);
        if (e >= 0)
                e = ts_rpc_client_call_close_send(cc);
        int state = -1;
        while (e >= 0) {
                ProtobufCMessage *m = NULL;
                e = ts_rpc_client_call_recv_message(cc, &thinsnap__v1__warm_status__descriptor, &m, err);
                if (e <= 0)
                        break;
                state = ((Thinsnap__V1__WarmStatus *) m)->state;
                protobuf_c_message_free_unpacked(m, NULL);
        }
        ts_rpc_client_call_free(cc);
        if (e >= 0 && state != THINSNAP__V1__WARM_STATUS__STATE__READY)
                e = ts_error_setf_plain(err, EPROTO, "the warm of %s ended in state %d", ref, state);
        return e;
}

static int warm(run *r, ts_error **err) {
        return warm_ref(r, r->a->image, err);
}

static int unwarm_ref(run *r, const char *ref, ts_error **err) {
        Thinsnap__V1__RemoveImageRequest req = THINSNAP__V1__REMOVE_IMAGE_REQUEST__INIT;
        req.image = (char *) ref;
        return unary(r, "RemoveImage", &req.base, &thinsnap__v1__remove_image_response__descriptor, err);
}

static int unwarm(run *r, ts_error **err) {
        return unwarm_ref(r, r->a->image, err);
}

static int snapshot(run *r, const char *vm, ts_error **err) {
        Thinsnap__V1__SnapshotRequest req = THINSNAP__V1__SNAPSHOT_REQUEST__INIT;
        req.vm_id = (char *) vm;
        req.image = (char *) r->a->image;
        char path[96];
        ProtobufCMessage *resp = NULL;
        snprintf(path, sizeof path, SVC "Snapshot");
        int e = ts_rpc_client_unary(r->c, path, NULL, &req.base, &thinsnap__v1__vm__descriptor, &resp, err);
        if (e >= 0) {
                struct stat st;
                const char *dev = ((Thinsnap__V1__VM *) resp)->device;
                if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode))
                        e = ts_error_setf_plain(err, EPROTO, "VM %s: %s is not a block device", vm, dev);
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        return e;
}

/* Teardown; the VM's device must be gone when it returns, as the Go flow
 * checks too. */
static int teardown(run *r, const char *vm, ts_error **err) {
        Thinsnap__V1__TeardownRequest req = THINSNAP__V1__TEARDOWN_REQUEST__INIT;
        req.vm_id = (char *) vm;
        ProtobufCMessage *resp = NULL;
        int e = ts_rpc_client_unary(r->c, SVC "Teardown", NULL, &req.base,
                                    &thinsnap__v1__teardown_response__descriptor, &resp, err);
        if (e >= 0) {
                struct stat st;
                const char *dev = ((Thinsnap__V1__TeardownResponse *) resp)->device;
                if (!dev || !*dev)
                        e = ts_error_setf_plain(err, EPROTO, "VM %s: teardown names no device", vm);
                else if (stat(dev, &st) == 0)
                        e = ts_error_setf_plain(err, EPROTO, "VM %s: %s is still there after its teardown",
                                                vm, dev);
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        return e;
}

/* ---- N calls released at once ---- */

typedef struct conc {
        run *r;
        int (*fn)(run *, const char *, ts_error **);
        pthread_barrier_t go;
        double release_ms, *done_ms, *lat_ms;
        int failures;
        pthread_mutex_t lock;
} conc;

typedef struct conc_arg {
        conc *c;
        int i;
} conc_arg;

static void *conc_one(void *p) {
        conc_arg *ca = p;
        conc *c = ca->c;
        char vm[32];
        snprintf(vm, sizeof vm, "cvm-%03d", ca->i);
        pthread_barrier_wait(&c->go);
        double t0 = ts_bench_now_ms();
        ts_error *err = NULL;
        int e = c->fn(c->r, vm, &err);
        double t1 = ts_bench_now_ms();
        c->lat_ms[ca->i] = t1 - t0;
        c->done_ms[ca->i] = t1;
        if (e < 0) {
                pthread_mutex_lock(&c->lock);
                c->failures++;
                problem(c->r, vm, e, err);
                pthread_mutex_unlock(&c->lock);
        }
        ts_error_free(err);
        return NULL;
}

/* Runs fn for n VMs at once; records each latency under op; *ret_total and
 * *ret_spread in ms. Returns the number of failed calls. */
static int concurrently(run *r, int n, int (*fn)(run *, const char *, ts_error **), const char *op,
                        double *ret_total, double *ret_spread) {
        conc c = { .r = r, .fn = fn };
        c.done_ms = calloc((size_t) n, sizeof(double));
        c.lat_ms = calloc((size_t) n, sizeof(double));
        pthread_t *t = calloc((size_t) n, sizeof(*t));
        conc_arg *a = calloc((size_t) n, sizeof(*a));
        if (!c.done_ms || !c.lat_ms || !t || !a)
                abort();
        pthread_mutex_init(&c.lock, NULL);
        pthread_barrier_init(&c.go, NULL, (unsigned) n + 1);
        /* Small stacks, as a VM manager's would be for calls that wait: the
         * default 8 MiB ones cost the guest a cleared huge page each. */
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        for (int i = 0; i < n; i++) {
                a[i] = (conc_arg) { &c, i };
                if (pthread_create(&t[i], &attr, conc_one, &a[i]))
                        abort();
        }
        pthread_attr_destroy(&attr);
        double release = ts_bench_now_ms();
        pthread_barrier_wait(&c.go);
        for (int i = 0; i < n; i++)
                pthread_join(t[i], NULL);
        double first = c.done_ms[0], last = c.done_ms[0];
        for (int i = 0; i < n; i++) {
                add_op(r, op, c.lat_ms[i]);
                first = c.done_ms[i] < first ? c.done_ms[i] : first;
                last = c.done_ms[i] > last ? c.done_ms[i] : last;
        }
        *ret_total = last - release;
        *ret_spread = last - first;
        pthread_barrier_destroy(&c.go);
        free(c.done_ms);
        free(c.lat_ms);
        free(t);
        free(a);
        return c.failures;
}

/* ---- the flow ---- */

static int timed(run *r, const char *op, int (*fn)(run *, ts_error **), ts_error **err) {
        double t0 = ts_bench_now_ms();
        int e = fn(r, err);
        if (e >= 0)
                add_op(r, op, ts_bench_now_ms() - t0);
        return e;
}

static int timed_vm(run *r, const char *op, int (*fn)(run *, const char *, ts_error **),
                    const char *vm, ts_error **err) {
        double t0 = ts_bench_now_ms();
        int e = fn(r, vm, err);
        if (e >= 0)
                add_op(r, op, ts_bench_now_ms() - t0);
        return e;
}

static int sequential(run *r, ts_error **err) {
        char vm[32], when[64];
        int e = 0;
        for (int i = 0; e >= 0 && i < r->a->vms; i++) {
                snprintf(vm, sizeof vm, "vm-%03d", i);
                e = timed_vm(r, "vm_snapshot", snapshot, vm, err);
        }
        if (r->a->n_also > 0)
                snprintf(when, sizeof when, "with %d VMs and %d images", r->a->vms, r->a->n_also + 1);
        else
                snprintf(when, sizeof when, "with %d VMs", r->a->vms);
        sample_rss(r, when);
        for (int i = 0; e >= 0 && i < r->a->vms; i++) {
                snprintf(vm, sizeof vm, "vm-%03d", i);
                e = timed_vm(r, "teardown", teardown, vm, err);
        }
        return e;
}

/* ---- turns with another program's rounds ---- */

/* Opens -turn-out for writing, then -turn-in for reading: the order in which
 * the other end opens them, or both would wait for ever. */
static int turns_open(run *r, ts_error **err) {
        if (!r->a->turn_in)
                return 0;
        if (!(r->turn_out = fopen(r->a->turn_out, "we")))
                return ts_error_set(err, errno, "open %s", r->a->turn_out);
        setvbuf(r->turn_out, NULL, _IOLBF, 0);
        if (!(r->turn_in = fopen(r->a->turn_in, "re")))
                return ts_error_set(err, errno, "open %s", r->a->turn_in);
        return 0;
}

static void turns_close(run *r) {
        if (r->turn_in)
                fclose(r->turn_in);
        if (r->turn_out)
                fclose(r->turn_out);
}

/* Writes "WORD ROUND" and waits for a line "go". */
static int turn_say(run *r, const char *word, int round, ts_error **err) {
        if (!r->turn_out)
                return 0;
        char line[64];
        if (fprintf(r->turn_out, "%s %d\n", word, round) < 0)
                return ts_error_set(err, errno ? errno : EIO, "turn of round %d: write", round);
        if (!fgets(line, sizeof line, r->turn_in))
                return ts_error_setf_plain(err, EPIPE, "turn of round %d: %s closed", round,
                                           r->a->turn_in);
        if (strcmp(line, "go\n") != 0)
                return ts_error_setf_plain(err, EPROTO, "turn of round %d: expected \"go\", got \"%.*s\"",
                                           round, (int) strcspn(line, "\n"), line);
        return 0;
}

/* Says the round is ready and waits for its turn. */
static int turn_begin(run *r, int round, ts_error **err) {
        return turn_say(r, "ready", round, err);
}

static int turn_end(run *r, int round, ts_error **err) {
        if (r->turn_out && fprintf(r->turn_out, "done %d\n", round) < 0)
                return ts_error_set(err, errno ? errno : EIO, "end of round %d: write", round);
        return 0;
}

/* Adds a round's sample to the array key of "concurrent". */
static void add_round(json_object *c, const char *key, double ms) {
        json_object *v;
        if (json_object_object_get_ex(c, key, &v))
                json_object_array_add(v, json_object_new_double(ms));
}

/* One round: the snapshots at once, then their teardowns. */
static int parallel(run *r, json_object *c, int round) {
        int n = r->a->concurrent;
        double total, spread, down_total, down_spread;
        int failed = concurrently(r, n, snapshot, "concurrent_vm_snapshot", &total, &spread);
        if (round == 0) {
                char when[64];
                snprintf(when, sizeof when, "with %d concurrent VMs", n);
                sample_rss(r, when);
        }
        ts_error *err = NULL;
        if (turn_say(r, "snapped", round, &err) < 0) { /* the turns are broken: stop the run */
                fprintf(stderr, "prov-flow: %s\n", err->msg);
                ts_error_free(err);
                return n;
        }
        failed += concurrently(r, n, teardown, "concurrent_teardown", &down_total, &down_spread);
        add_round(c, "total_ms", total);
        add_round(c, "spread_ms", spread);
        add_round(c, "teardown_total_ms", down_total);
        return failed;
}

static int rounds(run *r, ts_error **err) {
        json_object *c = json_object_new_object();
        json_object_object_add(c, "n", json_object_new_int(r->a->concurrent));
        json_object_object_add(c, "total_ms", json_object_new_array());
        json_object_object_add(c, "spread_ms", json_object_new_array());
        json_object_object_add(c, "teardown_total_ms", json_object_new_array());
        json_object_object_add(r->res, "concurrent", c);
        for (int i = 0; i < r->a->rounds; i++) {
                int e = turn_begin(r, i, err);
                if (e < 0)
                        return e;
                int failed = parallel(r, c, i);
                if (failed)
                        return ts_error_setf_plain(err, EIO, "%d concurrent calls failed", failed);
                if ((e = turn_end(r, i, err)) < 0)
                        return e;
        }
        return 0;
}

static int flow(run *r, ts_error **err) {
        sample_rss(r, "at start");
        ts_error *e0 = NULL;
        if (unwarm(r, &e0) < 0 && e0->errnum != ENOENT) /* an earlier run's image */
                problem(r, "removing an earlier image", -e0->errnum, e0);
        ts_error_free(e0);
        int e = 0;
        if (r->a->prewarm && (e = warm_ref(r, r->a->prewarm, err)) >= 0)
                e = unwarm_ref(r, r->a->prewarm, err);
        for (int i = 0; e >= 0 && i < r->a->warms; i++) {
                e = timed(r, "warm", warm, err);
                if (e >= 0 && i < r->a->warms - 1)
                        e = unwarm(r, err);
        }
        sample_rss(r, "after warm");
        for (int i = 0; e >= 0 && i < r->a->n_also; i++)
                e = warm_ref(r, r->a->also[i], err);
        if (e >= 0 && r->a->n_also > 0) {
                char when[64];
                snprintf(when, sizeof when, "with %d images warm", r->a->n_also + 1);
                sample_rss(r, when);
        }
        if (e >= 0)
                e = sequential(r, err);
        sample_rss(r, "after teardown");
        if (e >= 0 && r->a->concurrent > 0)
                e = rounds(r, err);
        sample_rss(r, "at the end");
        return e;
}

/* ---- command line and output ---- */

static int parse_int(const char *flag, const char *v, int min) {
        char *end;
        long n = strtol(v, &end, 10);
        if (*v == '\0' || *end || n < min || n > 100000) {
                fprintf(stderr, "prov-flow: %s '%s' is not a number from %d\n", flag, v, min);
                exit(2);
        }
        return (int) n;
}

static void parse(int argc, char **argv, args *a) {
        *a = (args) { .flow = "thinsnap", .vms = 50, .warms = 3, .concurrent = -1, .rounds = 3 };
        for (int i = 1; i < argc; i++) {
                const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (strcmp(f, "-plain-http") == 0) {
                        a->plain_http = true;
                        continue;
                }
                if (!v) {
                        fprintf(stderr, "prov-flow: %s needs a value\n", f);
                        exit(2);
                }
                i++;
                if (strcmp(f, "-address") == 0) a->address = v;
                else if (strcmp(f, "-image") == 0) a->image = v;
                else if (strcmp(f, "-flow") == 0) a->flow = v;
                else if (strcmp(f, "-out") == 0) a->out = v;
                else if (strcmp(f, "-rss-name") == 0) a->rss_name = v;
                else if (strcmp(f, "-prewarm") == 0) a->prewarm = v;
                else if (strcmp(f, "-turn-in") == 0) a->turn_in = v;
                else if (strcmp(f, "-turn-out") == 0) a->turn_out = v;
                else if (strcmp(f, "-also-warm") == 0 && a->n_also < MAX_ALSO) a->also[a->n_also++] = v;
                else if (strcmp(f, "-also-warm") == 0) {
                        fprintf(stderr, "prov-flow: at most %d -also-warm images\n", MAX_ALSO);
                        exit(2);
                }
                else if (strcmp(f, "-vms") == 0) a->vms = parse_int(f, v, 1);
                else if (strcmp(f, "-warms") == 0) a->warms = parse_int(f, v, 1);
                else if (strcmp(f, "-concurrent") == 0) a->concurrent = parse_int(f, v, 0);
                else if (strcmp(f, "-rounds") == 0) a->rounds = parse_int(f, v, 1);
                else if (strcmp(f, "-rss-pid") == 0) a->rss_pid = parse_int(f, v, 1);
                else {
                        fprintf(stderr, "prov-flow: unknown flag %s\n", f);
                        exit(2);
                }
        }
        if (!a->address || !a->image) {
                fprintf(stderr, "usage: prov-flow -address SOCK -image REF [-plain-http] [-vms N] "
                                "[-warms N] [-concurrent N] [-rounds N] [-flow NAME] [-out FILE] "
                                "[-rss-pid PID] [-rss-name NAME] [-also-warm REF]... [-prewarm REF] "
                                "[-turn-in FIFO -turn-out FIFO]\n");
                exit(2);
        }
        if (!a->turn_in != !a->turn_out) {
                fprintf(stderr, "prov-flow: -turn-in and -turn-out go together\n");
                exit(2);
        }
        if (a->concurrent < 0)
                a->concurrent = a->vms;
}

static int write_out(const args *a, json_object *res) {
        const char *text = json_object_to_json_string_ext(res, JSON_C_TO_STRING_PRETTY);
        if (!a->out)
                return puts(text) < 0 ? -EIO : 0;
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", a->out);
        FILE *f = fopen(tmp, "we");
        if (!f || fprintf(f, "%s\n", text) < 0 || fclose(f) != 0 || rename(tmp, a->out) < 0)
                return -errno;
        return 0;
}

int main(int argc, char **argv) {
        args a;
        parse(argc, argv, &a);
        _cleanup_json_ json_object *res = json_object_new_object();
        run r = { .a = &a, .res = res, .ops = json_object_new_object(),
                  .rss = json_object_new_array(), .problems = json_object_new_array() };
        json_object_object_add(res, "flow", json_object_new_string(a.flow));
        json_object_object_add(res, "client", json_object_new_string(
                "thinsnap.v1.Provisioner, C client on one connection"));
        json_object_object_add(res, "snapshotter", json_object_new_string("thinsnap"));
        json_object_object_add(res, "image", json_object_new_string(a.image));
        json_object_object_add(res, "vms", json_object_new_int(a.vms));
        json_object_object_add(res, "ops_ms", r.ops);
        json_object_object_add(res, "rss", r.rss);
        json_object_object_add(res, "problems", r.problems);
        if (a.rss_name)
                json_object_object_add(res, "rss_process", json_object_new_string(a.rss_name));
        ts_error *err = NULL;
        int e = turns_open(&r, &err);
        if (e >= 0)
                e = ts_rpc_client_connect(a.address, &r.c, &err);
        if (e >= 0)
                e = flow(&r, &err);
        if (e < 0) {
                fprintf(stderr, "prov-flow: %s\n", ts_error_message(err, e));
                json_object_object_add(res, "failed", json_object_new_string(ts_error_message(err, e)));
        }
        ts_error_free(err);
        ts_rpc_client_free(r.c);
        turns_close(&r);
        int w = write_out(&a, res);
        if (w < 0)
                fprintf(stderr, "prov-flow: write %s: %s\n", a.out ? a.out : "stdout", strerror(-w));
        return e < 0 || w < 0 ? 1 : 0;
}
