/* `thinsnap inject` (ts_cmd_inject): exit codes, messages and JSON, run in a
 * child process per invocation with stdout and stderr captured. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/macro.h"
#include "cli/cmd-inject.h"

static char tmpdir[PATH_MAX];
static char img[PATH_MAX + 16];
static char out_path[PATH_MAX + 16], err_path[PATH_MAX + 16];
static char out[65536], errout[65536];

static int run_tool(char *const argv[]) {
        pid_t pid = fork();
        if (pid == 0) {
                int fd = open("/dev/null", O_WRONLY);
                dup2(fd, 1);
                dup2(fd, 2);
                execvp(argv[0], argv);
                _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void slurp(const char *path, char *buf, size_t len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, len - 1) : 0;
        buf[n > 0 ? n : 0] = '\0';
        if (fd >= 0)
                close(fd);
}

/* Runs `thinsnap inject ARGS...` in a child; returns its exit code. */
static int cli(const char *first, ...) {
        char *argv[32];
        int argc = 0;
        argv[argc++] = "inject";
        va_list ap;
        va_start(ap, first);
        for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *))
                argv[argc++] = (char *) a;
        va_end(ap);
        argv[argc] = NULL;
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                dup2(o, 1);
                dup2(e, 2);
                int code = ts_cmd_inject(argc, argv);
                fflush(stdout);
                fflush(stderr);
                _exit(code);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st));
        slurp(out_path, out, sizeof out);
        slurp(err_path, errout, sizeof errout);
        return WEXITSTATUS(st);
}

static void setup(void) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/ts-inject-cli-XXXXXX", base ? base : "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
        snprintf(img, sizeof img, "%s/fs.img", tmpdir);
        snprintf(out_path, sizeof out_path, "%s/out", tmpdir);
        snprintf(err_path, sizeof err_path, "%s/err", tmpdir);
        unlink(img);
        ck_assert_int_eq(run_tool((char *const[]){ "mke2fs", "-q", "-F", "-t", "ext4", img, "32M", NULL }), 0);
}

static void teardown(void) {
        run_tool((char *const[]){ "rm", "-rf", tmpdir, NULL });
}

static json_object *parse_out(void) {
        json_object *o = json_tokener_parse(out);
        ck_assert_msg(o != NULL, "not JSON: %s", out);
        return o;
}

START_TEST(help_and_usage_errors) {
        ck_assert_int_eq(cli("--help", NULL), 0);
        ck_assert_ptr_nonnull(strstr(out, "Usage: thinsnap inject"));
        ck_assert_int_eq(cli(NULL), 2);
        ck_assert_ptr_nonnull(strstr(errout, "expected TARGET HOST_FILE GUEST_PATH"));
        ck_assert_int_eq(cli(img, "/etc/hosts", "/x", "--mode", "0789", NULL), 2);
        ck_assert_ptr_nonnull(strstr(errout, "--mode"));
        ck_assert_int_eq(cli(img, "/etc/hosts", "/x", "--uid", "-1", NULL), 2);
        ck_assert_int_eq(cli(img, "/etc/hosts", "relative", NULL), 2);
        ck_assert_ptr_nonnull(strstr(errout, "absolute"));
        ck_assert_int_eq(cli(img, "/etc/hosts", "/x", "--bogus", NULL), 2);
        ck_assert_int_eq(cli("--mountpoints", img, "extra", NULL), 2);
        ck_assert_int_eq(cli("--mountpoints", img, "--uid", "3", NULL), 2);
        ck_assert_int_eq(cli(img, "/etc/hosts", "/x", "--mode", NULL), 2);
        /* Nothing was written by any of these. */
        ck_assert_int_eq(run_tool((char *const[]){ "e2fsck", "-fn", img, NULL }), 0);
}
END_TEST

START_TEST(inject_file_json) {
        char src[PATH_MAX + 16];
        snprintf(src, sizeof src, "%s/agent", tmpdir);
        int fd = open(src, O_WRONLY | O_CREAT | O_TRUNC, 0751);
        ck_assert_int_eq(write(fd, "#!/bin/sh\necho hi\n", 18), 18);
        close(fd);
        chmod(src, 0751);
        ck_assert_int_eq(cli(img, src, "/sbin/agent", "--uid", "7", "--gid", "8", "--mtime", "1600000000", "--json",
                             NULL),
                         0);
        json_object *o = parse_out(), *v;
        ck_assert(json_object_object_get_ex(o, "bytes", &v) && json_object_get_int64(v) == 18);
        ck_assert(json_object_object_get_ex(o, "mode", &v));
        ck_assert_str_eq(json_object_get_string(v), "0751"); /* taken from the host file */
        ck_assert(json_object_object_get_ex(o, "uid", &v) && json_object_get_int64(v) == 7);
        ck_assert(json_object_object_get_ex(o, "mtime", &v) && json_object_get_int64(v) == 1600000000);
        json_object_put(o);
        ck_assert_int_eq(run_tool((char *const[]){ "e2fsck", "-fn", img, NULL }), 0);

        char dumped[PATH_MAX + 16], cmd[PATH_MAX + 64];
        snprintf(dumped, sizeof dumped, "%s/dumped", tmpdir);
        snprintf(cmd, sizeof cmd, "dump /sbin/agent %s", dumped);
        ck_assert_int_eq(run_tool((char *const[]){ "debugfs", "-R", cmd, img, NULL }), 0);
        char back[64];
        slurp(dumped, back, sizeof back);
        ck_assert_str_eq(back, "#!/bin/sh\necho hi\n");

        /* Plain output, explicit mode, replace. */
        ck_assert_int_eq(cli(img, src, "/sbin/agent", "--mode", "0700", NULL), 0);
        ck_assert_ptr_nonnull(strstr(out, "wrote /sbin/agent (18 bytes, mode 0700, 0:0)"));
        ck_assert_int_eq(run_tool((char *const[]){ "e2fsck", "-fn", img, NULL }), 0);
}
END_TEST

START_TEST(mountpoints_json) {
        ck_assert_int_eq(cli("--mountpoints", img, "--json", NULL), 0);
        json_object *o = parse_out(), *v;
        ck_assert(json_object_object_get_ex(o, "created", &v) && json_object_get_int(v) == 5);
        json_object_put(o);
        ck_assert_int_eq(cli("--mountpoints", img, NULL), 0);
        ck_assert_ptr_nonnull(strstr(out, "created 0 mount points"));
        ck_assert_int_eq(run_tool((char *const[]){ "e2fsck", "-fn", img, NULL }), 0);
}
END_TEST

START_TEST(operation_failures) {
        char missing[PATH_MAX + 16];
        snprintf(missing, sizeof missing, "%s/missing", tmpdir);
        ck_assert_int_eq(cli(img, missing, "/x", NULL), 1);
        ck_assert_ptr_nonnull(strstr(errout, "thinsnap inject: "));
        ck_assert_ptr_nonnull(strstr(errout, "No such file or directory"));

        /* A target that is not ext: JSON error object and exit 1. */
        char notfs[PATH_MAX + 16];
        snprintf(notfs, sizeof notfs, "%s/zeros", tmpdir);
        int fd = open(notfs, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ck_assert_int_eq(ftruncate(fd, 1 << 20), 0);
        close(fd);
        ck_assert_int_eq(cli(notfs, "/etc/hostname", "/x", "--json", NULL), 1);
        json_object *o = parse_out(), *v;
        ck_assert(json_object_object_get_ex(o, "errno", &v));
        ck_assert_str_eq(json_object_get_string(v), "EMEDIUMTYPE");
        ck_assert(json_object_object_get_ex(o, "error", &v));
        ck_assert_ptr_nonnull(strstr(json_object_get_string(v), "no filesystem found"));
        json_object_put(o);

        /* --no-mkdirs with a missing parent. */
        ck_assert_int_eq(cli(img, "/etc/hostname", "/no/such/dir", "--no-mkdirs", NULL), 1);
        ck_assert_ptr_nonnull(strstr(errout, "does not exist"));
        ck_assert_int_eq(run_tool((char *const[]){ "e2fsck", "-fn", img, NULL }), 0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("inject-cli");
        TCase *tc = tcase_create("cli");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, help_and_usage_errors);
        tcase_add_test(tc, inject_file_json);
        tcase_add_test(tc, mountpoints_json);
        tcase_add_test(tc, operation_failures);
        suite_add_tcase(s, tc);
        SRunner *sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
