/* Shared helpers of the inject fuzz targets (a header: each target is one
 * executable). */
#pragma once

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/error.h"
#include "inject/inject.h"

/* Writes len bytes to path, replacing it. Aborts on failure: the harness
 * cannot continue without its scratch file. */
static inline void fuzz_write_file(const char *path, const uint8_t *data, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                abort();
        size_t done = 0;
        while (done < len) {
                ssize_t n = write(fd, data + done, len - done);
                if (n <= 0)
                        abort();
                done += (size_t) n;
        }
        close(fd);
}

/* Runs a tool (mke2fs) during set-up. */
static inline int fuzz_run(char *const argv[]) {
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                int fd = open("/dev/null", O_WRONLY);
                dup2(fd, 1);
                dup2(fd, 2);
                execvp(argv[0], argv);
                _exit(127);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0)
                return -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Splits the fuzz input at NUL bytes into up to max strings (copied). */
static inline size_t fuzz_split(const uint8_t *data, size_t size, char **out, size_t max) {
        size_t n = 0, start = 0;
        for (size_t i = 0; i <= size && n < max; i++) {
                if (i == size || data[i] == '\0') {
                        char *s = malloc(i - start + 1);
                        if (!s)
                                abort();
                        memcpy(s, data + start, i - start);
                        s[i - start] = '\0';
                        out[n++] = s;
                        start = i + 1;
                }
        }
        return n;
}
