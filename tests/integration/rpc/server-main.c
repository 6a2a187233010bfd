/* rpc-test-server SOCKET [MAX_MESSAGE_BYTES] [--OPTION N]...: serves the test
 * service until SIGTERM or SIGINT, then shuts down gracefully and exits 0.
 * Each --OPTION sets the server option of that name (dashes for
 * underscores), e.g. --handler-threads 2. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "common/units.h"
#include "testsvc.h"

static ts_rpc_server *server;

static void on_signal(int sig) {
        ts_rpc_server_shutdown(server);
}

int main(int argc, char **argv) {
        ts_rpc_server_options opts = { 0 };
        uint32_t *const values[] = {
                &opts.handler_threads,       &opts.max_queued_calls,
                &opts.max_concurrent_streams, &opts.max_header_list_size,
                &opts.connection_window,     &opts.max_connections,
                &opts.handshake_timeout_ms,  &opts.request_timeout_ms,
                &opts.idle_timeout_ms,       &opts.send_timeout_ms,
        };
        static const struct option longopts[] = {
                { "handler-threads", required_argument, NULL, 0 },
                { "max-queued-calls", required_argument, NULL, 0 },
                { "max-concurrent-streams", required_argument, NULL, 0 },
                { "max-header-list-size", required_argument, NULL, 0 },
                { "connection-window", required_argument, NULL, 0 },
                { "max-connections", required_argument, NULL, 0 },
                { "handshake-timeout-ms", required_argument, NULL, 0 },
                { "request-timeout-ms", required_argument, NULL, 0 },
                { "idle-timeout-ms", required_argument, NULL, 0 },
                { "send-timeout-ms", required_argument, NULL, 0 },
                {},
        };
        _cleanup_error_ ts_error *err = NULL;
        int r, c, idx;

        while ((c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
                if (c != 0 || ts_units_parse_u32(optarg, values[idx]) < 0) {
                        fprintf(stderr, "bad option\n");
                        return 2;
                }
        }
        if (argc - optind < 1 || argc - optind > 2) {
                fprintf(stderr, "usage: %s SOCKET [MAX_MESSAGE_BYTES] [--OPTION N]...\n", argv[0]);
                return 2;
        }
        if (argc - optind == 2 && ts_units_parse_u32(argv[optind + 1], &opts.max_message_size) < 0) {
                fprintf(stderr, "bad size %s\n", argv[optind + 1]);
                return 2;
        }
        r = ts_rpc_server_new(&opts, &server);
        if (r < 0 || ts_testsvc_register(server) < 0)
                return 1;
        r = ts_rpc_server_listen(server, argv[optind], 0660, &err);
        if (r < 0) {
                fprintf(stderr, "listen: %s\n", ts_error_message(err, r));
                return 1;
        }
        struct sigaction sa = { .sa_handler = on_signal };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        printf("ready\n");
        fflush(stdout);
        r = ts_rpc_server_run(server, &err);
        server = ts_rpc_server_free(server);
        return r < 0 ? 1 : 0;
}
