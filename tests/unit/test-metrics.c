/* The metrics endpoint on the host: a gRPC server of the test service and
 * calls recorded by method, scraped over HTTP as Prometheus does, and every
 * figure checked against what the test did. The pool and snapshot figures
 * need device-mapper: tests/vm/service/pool_test.py scrapes thinsnapd. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/opstats.h"
#include "plugin/metrics.h"
#include "rpc/client.h"
#include "tests/lib/testsvc/testsvc.h"
#include "tests/unit/ts-check.h"

#define ECHO "/thinsnap.test.v1.Test/Echo"

static ts_testsvc_server srv;

static int echo(const char *text) {
        ts_rpc_client *c = NULL;
        ts_error *err = NULL;
        int r = ts_rpc_client_connect(srv.path, &c, &err);
        if (r >= 0) {
                Thinsnap__Test__V1__EchoRequest req = THINSNAP__TEST__V1__ECHO_REQUEST__INIT;
                ProtobufCMessage *m = NULL;
                ts_rpc_call_options o = { .timeout_ns = 10000000000ull };
                req.text = (char *) text;
                r = ts_rpc_client_unary(c, ECHO, &o, &req.base, &thinsnap__test__v1__echo_response__descriptor,
                                        &m, &err);
                if (m)
                        protobuf_c_message_free_unpacked(m, NULL);
        }
        ts_error_free(err);
        ts_rpc_client_free(c);
        return r;
}

/* One HTTP/1.0 request to the endpoint; returns the whole answer. */
static char *http(const char *address, const char *request) {
        const char *colon = strrchr(address, ':');
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) atoi(colon + 1)) };
        ck_assert_int_eq(inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr), 1);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *) &sa, sizeof sa), 0);
        ck_assert_int_eq(write(fd, request, strlen(request)), (ssize_t) strlen(request));
        size_t len = 0, cap = 65536;
        char *buf = malloc(cap);
        ssize_t n;
        while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
                len += (size_t) n;
                if (len + 1 == cap)
                        buf = realloc(buf, cap *= 2);
        }
        buf[len] = 0;
        close(fd);
        return buf;
}

/* The value of the sample written exactly as `sample` ("name{labels}"), or -1. */
static double value(const char *text, const char *sample) {
        size_t n = strlen(sample);
        for (const char *p = text; (p = strstr(p, sample)); p += n)
                if ((p == text || p[-1] == '\n') && p[n] == ' ')
                        return strtod(p + n + 1, NULL);
        return -1;
}

/* Every family, in order, for a known set of figures: the text a
 * Prometheus server parses, byte for byte (label values escaped). */
START_TEST(render_exact_text) {
        ts_opstat call = {
                .service = "snapshots", .method = "prepare", .count = 3, .sum_ns = 32100000,
                .le = { 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3 },
                .codes = { [0] = 2, [8] = 1 },
        };
        ts_metrics_figures f = {
                .pool = "tp",
                .data_used = 6553600, .data_size = 67108864, .meta_used = 122880, .meta_size = 4194304,
                .read_only = true,
                .has_snapshots = true,
                .snapshots = { [TS_KIND_VIEW] = 1, [TS_KIND_ACTIVE] = 4, [TS_KIND_COMMITTED] = 7 },
                .spares = 6,
                .server_names = { [1] = "a\\\"b" },
                .servers = { [1] = { .connections = 2, .connections_total = 9, .calls = 1, .calls_total = 40,
                                     .limit_hits = { [TS_RPC_LIMIT_MAX_QUEUED_CALLS] = 3 } } },
                .calls = &call, .n_calls = 1,
                .has_warms = true,
                .warms = { 2, 1, 0, 0, 1 },
                .resident_bytes = 12345678,
                .errors = 5,
        };
        static const char want[] =
        "# HELP thinsnap_pool_data_used_bytes Data space the pool has mapped.\n"
        "# TYPE thinsnap_pool_data_used_bytes gauge\n"
        "thinsnap_pool_data_used_bytes{pool=\"tp\"} 6553600\n"
        "# HELP thinsnap_pool_data_size_bytes Data space of the pool.\n"
        "# TYPE thinsnap_pool_data_size_bytes gauge\n"
        "thinsnap_pool_data_size_bytes{pool=\"tp\"} 67108864\n"
        "# HELP thinsnap_pool_metadata_used_bytes Metadata space the pool uses.\n"
        "# TYPE thinsnap_pool_metadata_used_bytes gauge\n"
        "thinsnap_pool_metadata_used_bytes{pool=\"tp\"} 122880\n"
        "# HELP thinsnap_pool_metadata_size_bytes Metadata space of the pool.\n"
        "# TYPE thinsnap_pool_metadata_size_bytes gauge\n"
        "thinsnap_pool_metadata_size_bytes{pool=\"tp\"} 4194304\n"
        "# HELP thinsnap_pool_out_of_data_space 1 when the pool has no data block left.\n"
        "# TYPE thinsnap_pool_out_of_data_space gauge\n"
        "thinsnap_pool_out_of_data_space{pool=\"tp\"} 0\n"
        "# HELP thinsnap_pool_read_only 1 when the pool is read-only (out of metadata space, or failed).\n"
        "# TYPE thinsnap_pool_read_only gauge\n"
        "thinsnap_pool_read_only{pool=\"tp\"} 1\n"
        "# HELP thinsnap_pool_needs_check 1 when the pool's metadata must be repaired.\n"
        "# TYPE thinsnap_pool_needs_check gauge\n"
        "thinsnap_pool_needs_check{pool=\"tp\"} 0\n"
        "# HELP thinsnap_snapshots Snapshots by kind.\n"
        "# TYPE thinsnap_snapshots gauge\n"
        "thinsnap_snapshots{kind=\"view\"} 1\n"
        "thinsnap_snapshots{kind=\"active\"} 4\n"
        "thinsnap_snapshots{kind=\"committed\"} 7\n"
        "# HELP thinsnap_spares Devices cut ahead for Prepares that ask for spares (not among thinsnap_snapshots).\n"
        "# TYPE thinsnap_spares gauge\n"
        "thinsnap_spares 6\n"
        "# HELP thinsnap_grpc_connections Connections open.\n"
        "# TYPE thinsnap_grpc_connections gauge\n"
        "thinsnap_grpc_connections{server=\"a\\\\\\\"b\"} 2\n"
        "# HELP thinsnap_grpc_connections_total Connections accepted.\n"
        "# TYPE thinsnap_grpc_connections_total counter\n"
        "thinsnap_grpc_connections_total{server=\"a\\\\\\\"b\"} 9\n"
        "# HELP thinsnap_grpc_streams Streams with a call, open.\n"
        "# TYPE thinsnap_grpc_streams gauge\n"
        "thinsnap_grpc_streams{server=\"a\\\\\\\"b\"} 1\n"
        "# HELP thinsnap_grpc_streams_total Streams opened.\n"
        "# TYPE thinsnap_grpc_streams_total counter\n"
        "thinsnap_grpc_streams_total{server=\"a\\\\\\\"b\"} 40\n"
        "# HELP thinsnap_grpc_queued_calls Calls waiting for a handler thread.\n"
        "# TYPE thinsnap_grpc_queued_calls gauge\n"
        "thinsnap_grpc_queued_calls{server=\"a\\\\\\\"b\"} 0\n"
        "# HELP thinsnap_grpc_limit_hits_total Times a limit of the server was hit (a connection, stream or call refused or closed for it).\n"
        "# TYPE thinsnap_grpc_limit_hits_total counter\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"max_connections\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"max_connections_idle_closed\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"max_concurrent_streams\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"max_header_list_size\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"max_message_size\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"max_queued_calls\"} 3\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"handshake_timeout\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"request_timeout\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"idle_timeout\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"send_timeout\"} 0\n"
        "thinsnap_grpc_limit_hits_total{server=\"a\\\\\\\"b\",limit=\"accept_failed\"} 0\n"
        "# HELP thinsnap_grpc_handled_total Calls a service's handlers finished, by method and status code.\n"
        "# TYPE thinsnap_grpc_handled_total counter\n"
        "thinsnap_grpc_handled_total{service=\"snapshots\",method=\"prepare\",code=\"OK\"} 2\n"
        "thinsnap_grpc_handled_total{service=\"snapshots\",method=\"prepare\",code=\"RESOURCE_EXHAUSTED\"} 1\n"
        "# HELP thinsnap_grpc_handling_seconds Time a service's handlers took, by method.\n"
        "# TYPE thinsnap_grpc_handling_seconds histogram\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.0005\"} 1\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.001\"} 1\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.0025\"} 2\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.005\"} 2\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.01\"} 2\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.025\"} 2\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.05\"} 3\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.1\"} 3\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.25\"} 3\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"0.5\"} 3\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"1\"} 3\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"2.5\"} 3\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"5\"} 3\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"10\"} 3\n"
        "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"prepare\",le=\"+Inf\"} 3\n"
        "thinsnap_grpc_handling_seconds_sum{service=\"snapshots\",method=\"prepare\"} 0.032100000\n"
        "thinsnap_grpc_handling_seconds_count{service=\"snapshots\",method=\"prepare\"} 3\n"
        "# HELP thinsnap_provisioner_warms Image warms the provisioner's queue holds, by state (failed ones stay a while).\n"
        "# TYPE thinsnap_provisioner_warms gauge\n"
        "thinsnap_provisioner_warms{state=\"pending\"} 2\n"
        "thinsnap_provisioner_warms{state=\"pulling\"} 1\n"
        "thinsnap_provisioner_warms{state=\"unpacking\"} 0\n"
        "thinsnap_provisioner_warms{state=\"ready\"} 0\n"
        "thinsnap_provisioner_warms{state=\"failed\"} 1\n"
        "# HELP process_resident_memory_bytes Resident memory of thinsnapd.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes 12345678\n"
        "# HELP thinsnap_metrics_errors_total Sources a scrape could not read.\n"
        "# TYPE thinsnap_metrics_errors_total counter\n"
        "thinsnap_metrics_errors_total 5\n";
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        ck_assert_int_eq(ts_metrics_render(&f, &text, &len), 0);
        ck_assert_str_eq(text, want);
        ck_assert_uint_eq(len, strlen(want));
}
END_TEST

/* What is absent is left out: no pool, no store, no servers, no calls. */
START_TEST(render_leaves_out_what_is_absent) {
        ts_metrics_figures f = { 0 };
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        ck_assert_int_eq(ts_metrics_render(&f, &text, &len), 0);
        ck_assert_ptr_null(strstr(text, "thinsnap_pool_"));
        ck_assert_ptr_null(strstr(text, "thinsnap_snapshots"));
        ck_assert_ptr_null(strstr(text, "{server="));
        ck_assert_ptr_null(strstr(text, "thinsnap_provisioner_warms"));
        ck_assert_ptr_null(strstr(text, "process_resident_memory_bytes"));
        ck_assert_ptr_nonnull(strstr(text, "\nthinsnap_metrics_errors_total 0\n"));
}
END_TEST

START_TEST(scrape_counts_what_was_done) {
        ts_opstats_reset();
        ck_assert_int_eq(ts_testsvc_start(&srv, NULL, NULL, 0), 0);
        ts_metrics *m = NULL;
        ts_metrics_config cfg = { .servers = { srv.s }, .server_names = { "test" } };
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_metrics_listen("127.0.0.1:0", &m, &err), 0);
        ck_assert_int_eq(ts_metrics_serve(m, &cfg, &err), 0);
        ck_assert_ptr_nonnull(strstr(ts_metrics_address(m), "127.0.0.1:"));

        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(echo("x"), 0);
        ts_opstats_record("snapshots", "Prepare", 0, 2000000);        /* 2 ms */
        ts_opstats_record("snapshots", "Prepare", 0, 30000000);       /* 30 ms */
        ts_opstats_record("snapshots", "Prepare", 8, 100000);         /* RESOURCE_EXHAUSTED */
        ts_opstats_record("provisioner", "VmSnapshot", 5, 20000000000); /* 20 s, NOT_FOUND */

        _cleanup_free_ char *out = http(ts_metrics_address(m), "GET /metrics HTTP/1.0\r\n\r\n");
        ck_assert_msg(strstr(out, " 200 "), "%.200s", out);
        ck_assert_ptr_nonnull(strstr(out, "Content-Type: text/plain; version=0.0.4"));
        const char *body = strstr(out, "\r\n\r\n");
        ck_assert_ptr_nonnull(body);
        ck_assert_double_eq(value(body, "thinsnap_grpc_connections_total{server=\"test\"}"), 3);
        ck_assert_double_eq(value(body, "thinsnap_grpc_streams_total{server=\"test\"}"), 3);
        ck_assert_double_eq(value(body, "thinsnap_grpc_queued_calls{server=\"test\"}"), 0);
        ck_assert_double_eq(value(body, "thinsnap_grpc_limit_hits_total{server=\"test\",limit=\"max_queued_calls\"}"), 0);
        ck_assert_double_eq(value(body, "thinsnap_grpc_handled_total{service=\"snapshots\",method=\"Prepare\",code=\"OK\"}"), 2);
        ck_assert_double_eq(value(body, "thinsnap_grpc_handled_total{service=\"snapshots\",method=\"Prepare\","
                                        "code=\"RESOURCE_EXHAUSTED\"}"), 1);
        ck_assert_double_eq(value(body, "thinsnap_grpc_handled_total{service=\"provisioner\",method=\"VmSnapshot\","
                                        "code=\"NOT_FOUND\"}"), 1);
        const char *h = "thinsnap_grpc_handling_seconds_bucket{service=\"snapshots\",method=\"Prepare\",le=";
        char s[256];
        static const struct { const char *le; double n; } buckets[] = {
                { "0.0005", 1 }, { "0.001", 1 }, { "0.0025", 2 }, { "0.025", 2 }, { "0.05", 3 }, { "+Inf", 3 },
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(buckets); i++) {
                snprintf(s, sizeof s, "%s\"%s\"}", h, buckets[i].le);
                ck_assert_msg(value(body, s) == buckets[i].n, "%s: %g", s, value(body, s));
        }
        ck_assert_double_eq_tol(value(body, "thinsnap_grpc_handling_seconds_sum{service=\"snapshots\",method=\"Prepare\"}"),
                                0.0321, 1e-9);
        snprintf(s, sizeof s, "thinsnap_grpc_handling_seconds_bucket{service=\"provisioner\",method=\"VmSnapshot\",le=\"10\"}");
        ck_assert_double_eq(value(body, s), 0);
        ck_assert_double_gt(value(body, "process_resident_memory_bytes"), 0);
        ck_assert_double_eq(value(body, "thinsnap_metrics_errors_total"), 0);
        ck_assert_ptr_nonnull(strstr(body, "# TYPE thinsnap_grpc_handling_seconds histogram\n"));

        _cleanup_free_ char *other = http(ts_metrics_address(m), "GET /other HTTP/1.0\r\n\r\n");
        ck_assert_ptr_nonnull(strstr(other, " 404 "));
        _cleanup_free_ char *post = http(ts_metrics_address(m), "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        ck_assert_ptr_nonnull(strstr(post, " 405 "));

        /* The scrapes are not the server's: its figures stay. */
        for (int i = 0; i < 2; i++)
                ck_assert_int_eq(echo("y"), 0);
        _cleanup_free_ char *again = http(ts_metrics_address(m), "GET /metrics HTTP/1.0\r\n\r\n");
        ck_assert_double_eq(value(again, "thinsnap_grpc_connections_total{server=\"test\"}"), 5);
        ts_metrics_stop(m);
        ck_assert_int_eq(ts_testsvc_stop(&srv), 0);
}
END_TEST

START_TEST(bad_addresses_refused) {
        static const struct { const char *address; int r; const char *needle; } bad[] = {
                { "9464", -EINVAL, "is not HOST:PORT" },
                { "127.0.0.1:", -EINVAL, "is not HOST:PORT" },
                { "no.such.host.invalid:9464", -EINVAL, "no.such.host.invalid" },
                { "127.0.0.1:notaport", -EINVAL, "notaport" },
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(bad); i++) {
                ts_metrics *m = NULL;
                _cleanup_error_ ts_error *err = NULL;
                ck_assert_int_eq(ts_metrics_listen(bad[i].address, &m, &err), bad[i].r);
                ck_assert_msg(strstr(err->msg, bad[i].needle), "%s: %s", bad[i].address, err->msg);
        }
        ts_metrics *a = NULL, *b = NULL;
        ck_assert_int_eq(ts_metrics_listen("127.0.0.1:0", &a, NULL), 0);
        _cleanup_error_ ts_error *err = NULL;
        ck_assert_int_eq(ts_metrics_listen(ts_metrics_address(a), &b, &err), -EADDRINUSE);
        char want[128];
        snprintf(want, sizeof want, "listen for metrics on %s: Address already in use", ts_metrics_address(a));
        ck_assert_str_eq(err->msg, want);
        ts_metrics_stop(a);
}
END_TEST

int main(void) {
        Suite *s = suite_create("metrics");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, render_exact_text);
        tcase_add_test(tc, render_leaves_out_what_is_absent);
        tcase_add_test(tc, scrape_counts_what_was_done);
        tcase_add_test(tc, bad_addresses_refused);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
