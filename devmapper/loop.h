/* Loop devices through /dev/loop-control and loop ioctls (no losetup). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

enum {
        TS_LOOP_READ_ONLY = 1 << 0,
        TS_LOOP_DIRECT_IO = 1 << 1, /* asked for; the kernel may decline (tmpfs) */
        TS_LOOP_AUTOCLEAR = 1 << 2, /* detach when the last user closes it */
};

/* Attaches `file` to a free loop device, with direct I/O when asked. Uses
 * LOOP_CONFIGURE, falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on kernels
 * without it. Writes the device path ("/dev/loop7") to *ret_dev.
 *
 * With TS_LOOP_AUTOCLEAR the device detaches itself when its last user
 * closes it, so the open loop fd is handed out in *ret_fd (required then):
 * hold it until the real user (a dm table) has the device open, then close
 * it; from then on the loop device lives exactly as long as that user.
 * Without it, ret_fd may be NULL.
 *
 * Returns 0, -ENOENT (no such file), -EACCES/-EPERM, -EBUSY (no free device
 * after retries), -EINVAL (autoclear without ret_fd) or -errno. */
int ts_loop_attach(const char *file, unsigned flags, char **ret_dev, int *ret_fd, ts_error **err);

/* Finds the loop device currently backing `file` (same device and inode).
 * Returns 0 and *ret_dev, -ENXIO when no loop device backs it, or -errno. */
int ts_loop_find(const char *file, char **ret_dev, ts_error **err);

/* Finds the loop device backing `file`, or attaches one. *ret_fd is the
 * open fd of a newly attached device (as ts_loop_attach) and -1 for one
 * found; *ret_attached tells which happened (may be NULL). Returns as
 * ts_loop_attach. */
int ts_loop_get(const char *file, unsigned flags, char **ret_dev, int *ret_fd, bool *ret_attached,
                ts_error **err);

typedef struct ts_loop_info {
        uint64_t offset;    /* where in the file the device starts */
        uint64_t sizelimit; /* 0: to the end of the file */
        bool read_only;
} ts_loop_info;

/* Reads how loop device `dev` maps its file. Returns 0, -ENXIO (nothing
 * attached) or -errno. */
int ts_loop_info_get(const char *dev, ts_loop_info *ret, ts_error **err);

/* Makes loop device `dev` take the current size of its backing file
 * (LOOP_SET_CAPACITY), after the file grew. Returns 0, -ENXIO (nothing
 * attached) or -errno. */
int ts_loop_set_capacity(const char *dev, ts_error **err);

/* Detaches loop device `dev`. A device that is still in use detaches when
 * its last user closes it (autoclear). Returns 0, -ENXIO when nothing is
 * attached, or -errno. */
int ts_loop_detach(const char *dev, ts_error **err);

