#include "holder.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/macro.h"

static bool pid_holds(int proc_fd, const char *pid, dev_t dev) {
        char path[NAME_MAX + sizeof "/fd"];
        snprintf(path, sizeof path, "%s/fd", pid);
        int fd = openat(proc_fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return false;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return false;
        }
        bool found = false;
        struct dirent *e;
        while (!found && (e = readdir(d))) {
                struct stat st;
                if (e->d_name[0] != '.' && fstatat(fd, e->d_name, &st, 0) == 0 &&
                    S_ISBLK(st.st_mode) && st.st_rdev == dev)
                        found = true;
        }
        closedir(d);
        return found;
}

static void comm_of(int proc_fd, const char *pid, char *buf, size_t len) {
        char path[64];
        snprintf(path, sizeof path, "%s/comm", pid);
        snprintf(buf, len, "?");
        _cleanup_close_ int fd = openat(proc_fd, path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        ssize_t n = read(fd, buf, len - 1);
        if (n <= 0)
                return;
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
}

int prov_holders(dev_t dev, char *buf, size_t len) {
        _cleanup_close_ int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (proc_fd < 0)
                return 0;
        DIR *d = fdopendir(dup(proc_fd));
        if (!d)
                return 0;
        int found = 0;
        struct dirent *e;
        char first[128] = "", self[32];
        snprintf(self, sizeof self, "%d", (int) getpid());
        while ((e = readdir(d))) {
                /* This process is not the holder the caller asks about. */
                if (strspn(e->d_name, "0123456789") != strlen(e->d_name) ||
                    strcmp(e->d_name, self) == 0 || !pid_holds(proc_fd, e->d_name, dev))
                        continue;
                if (found++ == 0) {
                        char comm[32];
                        comm_of(proc_fd, e->d_name, comm, sizeof comm);
                        snprintf(first, sizeof first, "pid %s (%s)", e->d_name, comm);
                }
        }
        closedir(d);
        if (found == 1)
                snprintf(buf, len, "%s", first);
        else if (found > 1)
                snprintf(buf, len, "%s, and %d more", first, found - 1);
        return found;
}
