/* A containerd of its own for a test: root, state and socket under a
 * temporary directory, the CRI plugin disabled, the native snapshotter. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

typedef struct ctrd_daemon {
        char bin[4096];
        char dir[64];   /* the temporary directory */
        char sock[128]; /* <dir>/containerd.sock */
        int major, minor;
        pid_t pid;
} ctrd_daemon;

/* Makes the directory and the configuration for the containerd binary bin
 * (its version decides the configuration's form). Returns 0 or -errno. */
int ctrd_daemon_init(ctrd_daemon *d, const char *bin);

/* Starts containerd and waits until it answers on its socket (up to 20 s).
 * Returns 0 or -errno; its log is <dir>/containerd.log. */
int ctrd_daemon_start(ctrd_daemon *d);

/* Stops containerd (SIGTERM, SIGKILL after 10 s) and waits for it. */
void ctrd_daemon_stop(ctrd_daemon *d);

/* Stops it and removes the directory. */
void ctrd_daemon_done(ctrd_daemon *d);
