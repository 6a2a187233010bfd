#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fault.h"
#include "common/log.h"
#include "common/units.h"
#include "tests/unit/ts-check.h"

START_TEST(size_suffixes) {
        uint64_t v;
        ck_assert_int_eq(ts_units_parse_size("512", &v), 0);
        ck_assert_uint_eq(v, 512);
        ck_assert_int_eq(ts_units_parse_size("64M", &v), 0);
        ck_assert_uint_eq(v, 64ULL << 20);
        ck_assert_int_eq(ts_units_parse_size("10G", &v), 0);
        ck_assert_uint_eq(v, 10ULL << 30);
        ck_assert_int_eq(ts_units_parse_size("4KiB", &v), 0);
        ck_assert_uint_eq(v, 4096);
        ck_assert_int_eq(ts_units_parse_size("1t", &v), 0);
        ck_assert_uint_eq(v, 1ULL << 40);
        ck_assert_int_eq(ts_units_parse_size("0", &v), 0);
        ck_assert_uint_eq(v, 0);
}
END_TEST

START_TEST(size_rejects) {
        uint64_t v = 7;
        ck_assert_int_eq(ts_units_parse_size("", &v), -EINVAL);
        ck_assert_int_eq(ts_units_parse_size("M", &v), -EINVAL);
        ck_assert_int_eq(ts_units_parse_size("-1G", &v), -EINVAL);
        ck_assert_int_eq(ts_units_parse_size("1.5G", &v), -EINVAL);
        ck_assert_int_eq(ts_units_parse_size("10X", &v), -EINVAL);
        ck_assert_int_eq(ts_units_parse_size(" 10", &v), -EINVAL);
        ck_assert_int_eq(ts_units_parse_size("16384P", &v), -ERANGE);
        ck_assert_int_eq(ts_units_parse_size("99999999999999999999", &v), -ERANGE);
        ck_assert_uint_eq(v, 7); /* untouched on failure */
}
END_TEST

START_TEST(numbers) {
        uint64_t v;
        uint32_t w;
        ck_assert_int_eq(ts_units_parse_u64("18446744073709551615", &v), 0);
        ck_assert_uint_eq(v, UINT64_MAX);
        ck_assert_int_eq(ts_units_parse_u64("18446744073709551616", &v), -ERANGE);
        ck_assert_int_eq(ts_units_parse_u32("4294967296", &w), -ERANGE);
        ck_assert_int_eq(ts_units_parse_u32("12a", &w), -EINVAL);
        ck_assert_int_eq(ts_units_parse_u32("", &w), -EINVAL);
        ck_assert_int_eq(ts_units_parse_mode("0755", &w), 0);
        ck_assert_uint_eq(w, 0755);
        ck_assert_int_eq(ts_units_parse_mode("4755", &w), 0);
        ck_assert_uint_eq(w, 04755);
        ck_assert_int_eq(ts_units_parse_mode("0789", &w), -EINVAL);
        ck_assert_int_eq(ts_units_parse_mode("17777", &w), -ERANGE);
}
END_TEST

START_TEST(format_size) {
        char buf[32];
        ck_assert_str_eq(ts_units_format_size(512, buf, sizeof buf), "512 B");
        ck_assert_str_eq(ts_units_format_size(1 << 20, buf, sizeof buf), "1 MiB");
        ck_assert_str_eq(ts_units_format_size(3ULL << 29, buf, sizeof buf), "1.5 GiB");
}
END_TEST

static int fail_deep(ts_error **err) {
        return ts_error_set(err, ENOENT, "open %s", "/nope");
}

START_TEST(error_context) {
        _cleanup_error_ ts_error *err = NULL;
        int r = fail_deep(&err);
        ck_assert_int_eq(r, -ENOENT);
        ck_assert_int_eq(ts_error_prefix(&err, -ENOENT, "pool %s", "tp"), -ENOENT);
        ck_assert_str_eq(err->msg, "pool tp: open /nope: No such file or directory");
        /* The first error wins: a second set does not overwrite it. */
        ck_assert_int_eq(ts_error_set(&err, EBUSY, "later"), -EBUSY);
        ck_assert_int_eq(err->errnum, ENOENT);
        /* The failing code survives a prefix whether or not an error object
         * was asked for. */
        ck_assert_int_eq(ts_error_prefix(NULL, -ENOMEM, "ctx"), -ENOMEM);
        ts_error *none = NULL;
        ck_assert_int_eq(ts_error_prefix(&none, -ENOSPC, "ctx"), -ENOSPC);
        ck_assert_ptr_null(none);
        /* NULL err is allowed everywhere. */
        ck_assert_int_eq(fail_deep(NULL), -ENOENT);
        ck_assert_str_eq(ts_error_message(NULL, -EBUSY), strerror(EBUSY));
}
END_TEST

/* Passes op:point `times` times in a child armed with spec; returns the
 * passage count at which it died (0: it lived). */
static int killed_at(const char *spec, const char *op, const char *point, int times) {
        int pipefd[2];
        ck_assert_int_eq(pipe(pipefd), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                setenv("TS_TEST_FAULT", spec, 1);
                ts_fault *f = NULL;
                if (ts_fault_from_env("TS_TEST_FAULT", &f, NULL) < 0)
                        _exit(2);
                for (unsigned char i = 1; i <= times; i++) {
                        if (write(pipefd[1], &i, 1) != 1)
                                _exit(3);
                        ts_fault_point(f, op, point);
                }
                ts_fault_free(f);
                _exit(0);
        }
        close(pipefd[1]);
        unsigned char last = 0, c;
        while (read(pipefd[0], &c, 1) == 1)
                last = c;
        close(pipefd[0]);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        if (WIFSIGNALED(st)) {
                ck_assert_int_eq(WTERMSIG(st), SIGKILL);
                return last;
        }
        ck_assert_int_eq(WEXITSTATUS(st), 0);
        return 0;
}

START_TEST(fault_points) {
        ck_assert_int_eq(killed_at("remove:after-mark", "remove", "after-mark", 3), 1);
        ck_assert_int_eq(killed_at("remove:after-mark:3", "remove", "after-mark", 5), 3);
        ck_assert_int_eq(killed_at("remove:after-mark", "remove", "after-delete", 3), 0);
        ck_assert_int_eq(killed_at("remove:after-mark", "prepare", "after-mark", 3), 0);
        ck_assert_int_eq(killed_at("remove", "remove", "after-mark", 3), 0);

        ts_fault *f = (ts_fault *) 1;
        unsetenv("TS_TEST_FAULT");
        ck_assert_int_eq(ts_fault_from_env("TS_TEST_FAULT", &f, NULL), 0);
        ck_assert_ptr_null(f);
        ts_fault_point(NULL, "remove", "after-mark");
        setenv("TS_TEST_FAULT", "remove:after-mark:0", 1);
        ts_error *err = NULL;
        ck_assert_int_eq(ts_fault_from_env("TS_TEST_FAULT", &f, &err), -EINVAL);
        ck_assert_str_eq(err->msg, "TS_TEST_FAULT=remove:after-mark:0: bad count \"0\"");
        ts_error_free(err);
        err = NULL;
        setenv("TS_TEST_FAULT", "remove:after-mark:x", 1);
        ck_assert_int_eq(ts_fault_from_env("TS_TEST_FAULT", &f, &err), -EINVAL);
        ts_error_free(err);
        unsetenv("TS_TEST_FAULT");
}
END_TEST

START_TEST(log_levels) {
        enum ts_log_level l;
        ck_assert_int_eq(ts_log_parse_level("debug", &l), 0);
        ck_assert_int_eq(l, TS_LOG_DEBUG);
        ck_assert_int_eq(ts_log_parse_level("WARNING", &l), 0);
        ck_assert_int_eq(l, TS_LOG_WARN);
        ck_assert_int_eq(ts_log_parse_level("loud", &l), -EINVAL);
        ck_assert_int_eq(log_error_errno(EIO, "x"), -EIO);
        ck_assert_int_eq(log_error_errno(-EBUSY, "y"), -EBUSY);
}
END_TEST

/* Runs fn with stderr going to a file; returns what it wrote. */
static char *capture_stderr(void (*fn)(void)) {
        char path[] = "/tmp/ts-log-XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        unlink(path);
        fflush(stderr);
        int saved = dup(2);
        ck_assert_int_ge(dup2(fd, 2), 0);
        fn();
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        off_t n = lseek(fd, 0, SEEK_END);
        char *buf = calloc(1, (size_t) n + 1);
        ck_assert_int_eq(pread(fd, buf, (size_t) n, 0), n);
        close(fd);
        return buf;
}

/* Splits one logfmt line into keys and unescaped values, as a reader of
 * logfmt does: key=bare or key="quoted with \\ escapes". Returns the count. */
static int parse_logfmt(const char *line, char keys[][32], char vals[][256], int max) {
        int n = 0;
        const char *p = line;
        while (*p && *p != '\n' && n < max) {
                while (*p == ' ')
                        p++;
                size_t k = strcspn(p, "=");
                ck_assert_uint_lt(k, 32);
                memcpy(keys[n], p, k);
                keys[n][k] = 0;
                p += k + 1;
                size_t v = 0;
                if (*p == '"') {
                        for (p++; *p && *p != '"'; p++) {
                                char c = *p;
                                if (c == '\\') {
                                        c = *++p;
                                        if (c == 'n')
                                                c = '\n';
                                        else if (c == 'x') {
                                                unsigned x;
                                                ck_assert_int_eq(sscanf(p + 1, "%2x", &x), 1);
                                                c = (char) x;
                                                p += 2;
                                        }
                                }
                                vals[n][v++] = c;
                        }
                        ck_assert_int_eq(*p, '"');
                        p++;
                } else
                        while (*p && *p != ' ' && *p != '\n')
                                vals[n][v++] = *p++;
                vals[n][v] = 0;
                n++;
        }
        return n;
}

static const char *const hostile[] = {
        "a\" level=error msg=\"forged", "two words", "line\ntime=\"x\" level=error", "back\\slash\"",
        "", "tab\tand\x01ctl", "caf\xc3\xa9", "k=v",
};

static void emit_hostile(void) {
        for (size_t i = 0; i < TS_ARRAY_SIZE(hostile); i++)
                ts_log_emit(TS_LOG_ERROR, 0, NULL,
                            TS_LOG_FIELDS({ "op", "Prepare" }, { "namespace", hostile[i] }, { "key", hostile[i] },
                                          { "code", "OK" }),
                            "done %s", hostile[i]);
}

START_TEST(log_fields_escaped) {
        _cleanup_free_ char *out = capture_stderr(emit_hostile);
        const char *line = out;
        for (size_t i = 0; i < TS_ARRAY_SIZE(hostile); i++) {
                ck_assert_ptr_nonnull(line);
                char keys[16][32], vals[16][256];
                int n = parse_logfmt(line, keys, vals, 16);
                static const char *const want[] = { "time", "level", "msg", "op", "namespace", "key", "code" };
                ck_assert_int_eq(n, (int) TS_ARRAY_SIZE(want));
                for (int k = 0; k < n; k++)
                        ck_assert_str_eq(keys[k], want[k]);
                ck_assert_str_eq(vals[1], "error");
                ck_assert_str_eq(vals[4], hostile[i]);
                ck_assert_str_eq(vals[5], hostile[i]);
                ck_assert_str_eq(vals[6], "OK");
                line = strchr(line, '\n');
                line = line ? line + 1 : NULL;
        }
        ck_assert_str_eq(line, ""); /* one line each, nothing more */
}
END_TEST

static void emit_with_error(void) {
        ts_error *e = NULL;
        ts_error_set(&e, ENOENT, "open %s", "/x");
        log_error_err(-ENOENT, e, "cannot start");
        log_error_errno(-EBUSY, "device %s", "d");
        ts_error_free(e);
}

START_TEST(log_errno_said_once) {
        _cleanup_free_ char *out = capture_stderr(emit_with_error);
        char *second = strchr(out, '\n');
        ck_assert_ptr_nonnull(second);
        *second++ = 0;
        const char *enoent = strerror(ENOENT);
        const char *first_hit = strstr(out, enoent);
        ck_assert_ptr_nonnull(first_hit);
        ck_assert_ptr_null(strstr(first_hit + 1, enoent));
        ck_assert_ptr_nonnull(strstr(out, "msg=\"cannot start\" error=\"open /x: "));
        ck_assert_ptr_nonnull(strstr(second, "msg=\"device d\" error=\"Device or resource busy\""));
}
END_TEST

static void emit_long(void) {
        static char big[6000];
        memset(big, '"', sizeof big - 1);
        ts_log_emit(TS_LOG_ERROR, 0, NULL, TS_LOG_FIELDS({ "a", big }, { "b", big }), "%s", big);
}

START_TEST(log_long_values_cut_whole) {
        _cleanup_free_ char *out = capture_stderr(emit_long);
        size_t len = strlen(out);
        ck_assert_uint_le(len, 8192);
        ck_assert_int_eq(out[len - 1], '\n');
        ck_assert_ptr_eq(strchr(out, '\n'), out + len - 1);
        /* Every quote opened is closed: an even number of unescaped quotes. */
        int quotes = 0;
        for (const char *p = out; *p; p++) {
                if (*p == '\\')
                        p++;
                else if (*p == '"')
                        quotes++;
        }
        ck_assert_int_eq(quotes % 2, 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("common");
        TCase *tc = tcase_create("core");
        tcase_add_test(tc, size_suffixes);
        tcase_add_test(tc, size_rejects);
        tcase_add_test(tc, numbers);
        tcase_add_test(tc, format_size);
        tcase_add_test(tc, error_context);
        tcase_add_test(tc, log_levels);
        tcase_add_test(tc, log_fields_escaped);
        tcase_add_test(tc, log_errno_said_once);
        tcase_add_test(tc, log_long_values_cut_whole);
        tcase_add_test(tc, fault_points);
        suite_add_tcase(s, tc);
        return ts_check_run(s);
}
