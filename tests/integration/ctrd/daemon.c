#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int version_of(ctrd_daemon *d) {
        char cmd[4200], line[512], mod[256], ver[128];
        snprintf(cmd, sizeof(cmd), "'%s' --version", d->bin);
        FILE *f = popen(cmd, "r");
        if (!f)
                return -errno;
        char *ok = fgets(line, sizeof(line), f);
        pclose(f);
        /* "containerd github.com/containerd/containerd[/v2] 1.6.20~ds1 ..." */
        if (!ok || sscanf(line, "containerd %255s %127s", mod, ver) != 2 ||
            (sscanf(ver, "v%d.%d", &d->major, &d->minor) != 2 &&
             sscanf(ver, "%d.%d", &d->major, &d->minor) != 2)) {
                fprintf(stderr, "daemon: cannot read the version of %s from: %s", d->bin,
                        ok ? line : "(nothing)\n");
                return -EINVAL;
        }
        return 0;
}

static int write_config(const ctrd_daemon *d) {
        char path[128];
        snprintf(path, sizeof(path), "%s/config.toml", d->dir);
        FILE *f = fopen(path, "we");
        if (!f)
                return -errno;
        /* 2.x reads version 3 and has split CRI into several plugins; a
         * disabled id that a version does not have is ignored. */
        fprintf(f,
                "version = %d\n"
                "root = \"%s/root\"\n"
                "state = \"%s/state\"\n"
                "disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.cri.v1.images\",\n"
                "  \"io.containerd.cri.v1.runtime\", \"io.containerd.internal.v1.opt\",\n"
                "  \"io.containerd.tracing.processor.v1.otlp\", \"io.containerd.internal.v1.tracing\"]\n"
                "[grpc]\n  address = \"%s\"\n"
                "[ttrpc]\n  address = \"%s.ttrpc\"\n",
                d->major >= 2 ? 3 : 2, d->dir, d->dir, d->sock, d->sock);
        return fclose(f) == 0 ? 0 : -errno;
}

int ctrd_daemon_init(ctrd_daemon *d, const char *bin) {
        memset(d, 0, sizeof(*d));
        snprintf(d->bin, sizeof(d->bin), "%s", bin);
        snprintf(d->dir, sizeof(d->dir), "/tmp/ts-ctrd.XXXXXX");
        if (!mkdtemp(d->dir))
                return -errno;
        snprintf(d->sock, sizeof(d->sock), "%s/containerd.sock", d->dir);
        int r = version_of(d);
        return r < 0 ? r : write_config(d);
}

static bool answers(const char *sock) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(sock) >= sizeof(sa.sun_path))
                return false;
        memcpy(sa.sun_path, sock, strlen(sock));
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        bool ok = connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
        close(fd);
        return ok;
}

int ctrd_daemon_start(ctrd_daemon *d) {
        char cfg[128], log[128];
        snprintf(cfg, sizeof(cfg), "%s/config.toml", d->dir);
        snprintf(log, sizeof(log), "%s/containerd.log", d->dir);
        unlink(d->sock);
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        dup2(fd, 1);
                        dup2(fd, 2);
                }
                execl(d->bin, d->bin, "--config", cfg, "--log-level", "info", (char *) NULL);
                _exit(127);
        }
        d->pid = pid;
        for (int i = 0; i < 2000; i++) {
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        d->pid = 0;
                        fprintf(stderr, "daemon: %s exited at start; see %s\n", d->bin, log);
                        return -ECHILD;
                }
                if (answers(d->sock))
                        return 0;
                nanosleep(&(struct timespec) { .tv_nsec = 10000000 }, NULL);
        }
        fprintf(stderr, "daemon: %s does not answer on %s after 20 s\n", d->bin, d->sock);
        ctrd_daemon_stop(d);
        return -ETIMEDOUT;
}

void ctrd_daemon_stop(ctrd_daemon *d) {
        if (d->pid <= 0)
                return;
        kill(d->pid, SIGTERM);
        for (int i = 0; i < 1000; i++) {
                if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
                        d->pid = 0;
                        return;
                }
                nanosleep(&(struct timespec) { .tv_nsec = 10000000 }, NULL);
        }
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) ftw;
        if (flag == FTW_DP)
                rmdir(path);
        else
                unlink(path);
        return 0;
}

void ctrd_daemon_done(ctrd_daemon *d) {
        ctrd_daemon_stop(d);
        if (d->dir[0])
                nftw(d->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}
