#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/config.h"
#include "tests/unit/ts-check.h"

static int parse(const char *text, ts_config *cfg, char **msg) {
        ts_error *err = NULL;
        int r = ts_config_parse(text, strlen(text), cfg, &err);
        if (msg)
                *msg = err && err->msg ? strdup(err->msg) : NULL;
        ts_error_free(err);
        return r;
}

START_TEST(full_file) {
        ts_config c = { .socket_mode = 0660 };
        const char *text = "# thinsnapd\n"
                           "root = \"/var/lib/thinsnap\"\n"
                           "  pool=\"tp\"   # trailing comment\n"
                           "address = \"/run/t s.sock\"\r\n"
                           "base_size = \"10G\"\n"
                           "socket_mode = \"0600\"\n"
                           "log_level = \"debug\"\n"
                           "async_remove = true\n"
                           "discard_on_remove = false\n"
                           "mkfs = \"/sbin/mkfs.\\\"ext4\\\"\"\n"
                           "metrics_address = \"127.0.0.1:9464\"\n"
                           "\n";
        ck_assert_int_eq(parse(text, &c, NULL), 0);
        ck_assert_str_eq(c.root, "/var/lib/thinsnap");
        ck_assert_str_eq(c.pool, "tp");
        ck_assert_str_eq(c.address, "/run/t s.sock");
        ck_assert_str_eq(c.mkfs, "/sbin/mkfs.\"ext4\"");
        ck_assert_str_eq(c.metrics_address, "127.0.0.1:9464");
        ck_assert_uint_eq(c.base_size, 10ULL << 30);
        ck_assert_uint_eq(c.socket_mode, 0600);
        ck_assert(c.log_level_set);
        ck_assert_int_eq(c.log_level, TS_LOG_DEBUG);
        ck_assert(c.async_remove);
        ck_assert(!c.discard_on_remove);
        /* A later file replaces strings without leaking them. */
        ck_assert_int_eq(parse("pool = \"other\"\nbase_size = 1048576", &c, NULL), 0);
        ck_assert_str_eq(c.pool, "other");
        ck_assert_uint_eq(c.base_size, 1048576);
        ck_assert_int_eq(parse("store_map_max = \"4G\"", &c, NULL), 0);
        ck_assert_uint_eq(c.store_map_max, 4ULL << 30);
        ck_assert_int_eq(parse("store_map_max = 1048576", &c, NULL), 0);
        ck_assert_uint_eq(c.store_map_max, 1048576);
        ck_assert_int_eq(parse("max_labels = 100\nmax_label_bytes = \"64K\"", &c, NULL), 0);
        ck_assert_uint_eq(c.max_labels, 100);
        ck_assert_uint_eq(c.max_label_bytes, 64 << 10);
        ck_assert_int_eq(parse("max_label_bytes = 4096", &c, NULL), 0);
        ck_assert_uint_eq(c.max_label_bytes, 4096);
        ck_assert(!c.spares_max_set);
        ck_assert_int_eq(parse("spares_max = 0\nvm_spares = 50", &c, NULL), 0);
        ck_assert(c.spares_max_set);
        ck_assert_uint_eq(c.spares_max, 0);
        ck_assert_uint_eq(c.vm_spares, 50);
        /* the key as the option is named, and the older name */
        ck_assert_int_eq(parse("discard = true", &c, NULL), 0);
        ck_assert(c.discard_on_remove);
        ck_assert_int_eq(parse("discard_on_remove = false\nasync_remove = false", &c, NULL), 0);
        ck_assert(!c.discard_on_remove && !c.async_remove);
        ts_config_done(&c);
}
END_TEST

START_TEST(bad_lines) {
        static const struct {
                const char *text, *needle;
        } bad[] = {
                { "pool", "line 1: pool: expected '='" },
                { "\n\nbogus = 1", "line 3: bogus: unknown setting" },
                { "pool = tp", "line 1: pool: not a string" },
                { "pool = \"\"", "pool: must be a non-empty string" },
                { "pool = \"tp", "unterminated string" },
                { "pool = \"a\\qb\"", "unknown escape" },
                { "pool = \"a\" junk", "unexpected text after the value" },
                { "base_size = \"10X\"", "base_size: must be a size" },
                { "base_size = true", "base_size: must be a size" },
                { "store_map_max = \"1Q\"", "store_map_max: must be a size" },
                { "max_labels = 0", "max_labels: must be a number from 1 to 1048576" },
                { "max_labels = 1048577", "max_labels: must be a number from 1 to 1048576" },
                { "max_labels = \"9\"", "max_labels: must be a number" },
                { "max_label_bytes = \"5M\"", "max_label_bytes: must be a size from 4K to 4M" },
                { "max_label_bytes = 4095", "max_label_bytes: must be a size from 4K to 4M" },
                { "max_label_bytes = \"x\"", "max_label_bytes: must be a size" },
                { "socket_mode = 660", "socket_mode: must be an octal mode" },
                { "socket_mode = \"0999\"", "socket_mode: must be an octal mode" },
                { "log_level = \"loud\"", "log_level: must be error" },
                { "async_remove = 1", "async_remove: must be true or false" },
                { "spares_max = 1025", "spares_max: must be a number from 0 to 1024" },
                { "vm_spares = \"8\"", "vm_spares: must be a number from 0 to 1024" },
                { "= 1", "line 1: expected `key = value`" },
                { "pool =", "a value is missing" },
                { "pool = \"a\tb\"", "control character" },
                { "max_connections = 0", "line 1: max_connections: '0' is not a count above 0" },
                { "max_connections = \"x\"", "max_connections: 'x' is not a count" },
                { "connection_window = \"5G\"", "connection_window: '5G' is not a size" },
                { "request_timeout = 30", "request_timeout: must be a duration string" },
                { "request_timeout = \"30\"", "request_timeout: '30' is not a duration" },
                { "idle_timeout = \"0s\"", "idle_timeout: '0s' is not a duration" },
                { "send_timeout = \"2d\"", "send_timeout: '2d' is not a duration" },
                { "send_timeout = \"5000000h\"", "is not a duration" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                ts_config c = { 0 };
                char *msg = NULL;
                ck_assert_int_eq(parse(bad[i].text, &c, &msg), -EINVAL);
                ck_assert_msg(msg && strstr(msg, bad[i].needle), "case %zu: '%s' lacks '%s'", i,
                              msg ? msg : "(null)", bad[i].needle);
                free(msg);
                ts_config_done(&c);
        }
}
END_TEST

START_TEST(rpc_limits) {
        ts_config c = { 0 };
        const char *text = "max_connections = 64\n"
                           "max_concurrent_streams = \"32\"\n"
                           "max_header_list_size = \"16K\"\n"
                           "connection_window = 40000000\n"
                           "max_queued_calls = 100\n"
                           "handshake_timeout = \"500ms\"\n"
                           "request_timeout = \"30s\"\n"
                           "idle_timeout = \"10m\"\n"
                           "send_timeout = \"1h\"\n";
        ck_assert_int_eq(parse(text, &c, NULL), 0);
        ck_assert_uint_eq(c.rpc.max_connections, 64);
        ck_assert_uint_eq(c.rpc.max_concurrent_streams, 32);
        ck_assert_uint_eq(c.rpc.max_header_list_size, 16384);
        ck_assert_uint_eq(c.rpc.connection_window, 40000000);
        ck_assert_uint_eq(c.rpc.max_queued_calls, 100);
        ck_assert_uint_eq(c.rpc.handshake_timeout_ms, 500);
        ck_assert_uint_eq(c.rpc.request_timeout_ms, 30000);
        ck_assert_uint_eq(c.rpc.idle_timeout_ms, 600000);
        ck_assert_uint_eq(c.rpc.send_timeout_ms, 3600000);

        /* What the command line sets wins; what it leaves keeps the file's. */
        ts_rpc_server_options cli = { .max_connections = 8 };
        const ts_config_rpc_key *k = NULL;
        for (size_t i = 0; i < ts_config_n_rpc_keys; i++)
                if (strcmp(ts_config_rpc_keys[i].flag, "handshake-timeout") == 0)
                        k = &ts_config_rpc_keys[i];
        ck_assert_ptr_nonnull(k);
        ck_assert_int_eq(ts_config_set_rpc(&cli, k, "--handshake-timeout", "2s", NULL), 0);
        ts_config_merge_rpc(&c.rpc, &cli);
        ck_assert_uint_eq(c.rpc.max_connections, 8);
        ck_assert_uint_eq(c.rpc.handshake_timeout_ms, 2000);
        ck_assert_uint_eq(c.rpc.request_timeout_ms, 30000);
        ts_config_done(&c);
}
END_TEST

START_TEST(load_missing_file) {
        ts_config c = { 0 };
        ts_error *err = NULL;
        ck_assert_int_eq(ts_config_load("/nonexistent/thinsnapd.toml", &c, &err), -ENOENT);
        ck_assert_ptr_nonnull(strstr(err->msg, "/nonexistent/thinsnapd.toml"));
        ts_error_free(err);
}
END_TEST

int main(void) {
        Suite *s = suite_create("config");
        TCase *tc = tcase_create("parse");
        tcase_add_test(tc, full_file);
        tcase_add_test(tc, bad_lines);
        tcase_add_test(tc, rpc_limits);
        tcase_add_test(tc, load_missing_file);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
