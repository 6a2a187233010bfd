/* The guest agent of the prepared-image boot test: run as init (PID 1) from
 * the agent layer of a prepared image. It mounts what it needs on the mount
 * points the layer guarantees, prints a marker and the image's
 * /etc/os-release on the console, writes a file named after the VM (the
 * tsvm= kernel argument) into the VM's own filesystem, and powers off.
 *
 * Built static (no libc in the guest image). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

#define MARKER "THINSNAP-PREPARED-AGENT"

static void console(void) {
        if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) < 0)
                return; /* the kernel may have mounted it already */
        int fd = open("/dev/console", O_RDWR | O_NOCTTY);
        if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                if (fd > 2)
                        close(fd);
        }
}

/* The value of the tsvm= kernel argument, or "unknown". */
static void vm_name(char *buf, size_t len) {
        snprintf(buf, len, "unknown");
        FILE *f = fopen("/proc/cmdline", "re");
        char line[4096];
        if (!f)
                return;
        if (fgets(line, sizeof line, f))
                for (char *tok = strtok(line, " \n"); tok; tok = strtok(NULL, " \n"))
                        if (strncmp(tok, "tsvm=", 5) == 0)
                                snprintf(buf, len, "%.63s", tok + 5);
        fclose(f);
}

static void show_os_release(void) {
        FILE *f = fopen("/etc/os-release", "re");
        char line[512];
        if (!f) {
                printf(MARKER " os-release: missing\n");
                return;
        }
        while (fgets(line, sizeof line, f))
                printf(MARKER " os-release: %s", line);
        fclose(f);
}

static int write_file(const char *vm) {
        char path[128], text[128];
        snprintf(path, sizeof path, "/agent-wrote-%s", vm);
        int n = snprintf(text, sizeof text, "written by the agent in VM %s\n", vm);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -1;
        int ok = write(fd, text, (size_t) n) == n && fsync(fd) == 0;
        close(fd);
        return ok ? 0 : -1;
}

int main(void) {
        console();
        int proc = mount("proc", "/proc", "proc", 0, NULL);
        char vm[64];
        vm_name(vm, sizeof vm);
        printf(MARKER " start vm=%s pid=%d proc=%s\n", vm, (int) getpid(), proc == 0 ? "ok" : "failed");
        show_os_release();
        int w = write_file(vm);
        printf(MARKER " wrote=%s vm=%s\n", w == 0 ? "ok" : "failed", vm);
        fflush(stdout);
        sync();
        if (getpid() == 1)
                reboot(RB_POWER_OFF);
        return w == 0 ? 0 : 1;
}
