#include "loop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#ifndef LOOP_CONFIGURE
#define LOOP_CONFIGURE 0x4C0A
struct loop_config {
        __u32 fd;
        __u32 block_size;
        struct loop_info64 info;
        __u64 __reserved[8];
};
#endif

/* The kernel reports a backing file's device in its "huge" encoding. */
static uint64_t kernel_encode_dev(dev_t d) {
        uint64_t ma = major(d), mi = minor(d);
        return (mi & 0xff) | (ma << 8) | ((mi & ~0xffULL) << 12);
}

static int configure(int loop_fd, int file_fd, unsigned flags) {
        struct loop_config cfg = { .fd = (__u32) file_fd };
        if (flags & TS_LOOP_AUTOCLEAR)
                cfg.info.lo_flags |= LO_FLAGS_AUTOCLEAR;
        if (flags & TS_LOOP_READ_ONLY)
                cfg.info.lo_flags |= LO_FLAGS_READ_ONLY;
        if (flags & TS_LOOP_DIRECT_IO)
                cfg.info.lo_flags |= LO_FLAGS_DIRECT_IO;
        if (ioctl(loop_fd, LOOP_CONFIGURE, &cfg) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOTTY)
                return negative_errno();

        /* Kernels before 5.8: the old three-step way. */
        if (ioctl(loop_fd, LOOP_SET_FD, file_fd) < 0)
                return negative_errno();
        struct loop_info64 info = { .lo_flags = (flags & TS_LOOP_AUTOCLEAR) ? LO_FLAGS_AUTOCLEAR : 0 };
        if (ioctl(loop_fd, LOOP_SET_STATUS64, &info) < 0) {
                int r = negative_errno();
                (void) ioctl(loop_fd, LOOP_CLR_FD, 0);
                return r;
        }
        if (flags & TS_LOOP_DIRECT_IO)
                (void) ioctl(loop_fd, LOOP_SET_DIRECT_IO, 1UL); /* best effort */
        return 0;
}

int ts_loop_attach(const char *file, unsigned flags, char **ret_dev, int *ret_fd, ts_error **err) {
        if ((flags & TS_LOOP_AUTOCLEAR) && !ret_fd)
                return ts_error_setf_plain(err, EINVAL, "attach %s: autoclear needs the caller to "
                                                        "hold the loop device open", file);
        int oflags = ((flags & TS_LOOP_READ_ONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC;
        _cleanup_close_ int file_fd = open(file, oflags);
        if (file_fd < 0)
                return ts_error_set(err, errno, "attach loop device to %s", file);
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return ts_error_set(err, errno, "attach loop device to %s: /dev/loop-control",
                                    file);

        /* Another process can take the free device between GET_FREE and
         * CONFIGURE; then the kernel says EBUSY and we ask again. */
        for (int attempt = 0; attempt < 64; attempt++) {
                int n = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (n < 0)
                        return ts_error_set(err, errno, "attach loop device to %s: LOOP_CTL_GET_FREE",
                                            file);
                char dev[32];
                snprintf(dev, sizeof(dev), "/dev/loop%d", n);
                _cleanup_close_ int loop_fd = open(dev, oflags);
                if (loop_fd < 0)
                        return ts_error_set(err, errno, "attach loop device to %s: open %s", file,
                                            dev);
                int r = configure(loop_fd, file_fd, flags);
                if (r == -EBUSY) {
                        struct timespec ts = { 0, 1000000L * (attempt < 10 ? 1 : 10) };
                        nanosleep(&ts, NULL);
                        continue;
                }
                if (r < 0)
                        return ts_error_set(err, r, "attach %s to %s", file, dev);
                char *d = strdup(dev);
                if (!d) {
                        (void) ioctl(loop_fd, LOOP_CLR_FD, 0);
                        return ts_error_set(err, ENOMEM, "attach %s", file);
                }
                log_debug("attached %s to %s", file, dev);
                *ret_dev = d;
                if (ret_fd)
                        *ret_fd = TAKE_FD(loop_fd);
                return 0;
        }
        return ts_error_setf_plain(err, EBUSY, "attach %s: no free loop device after 64 tries",
                                   file);
}

int ts_loop_find(const char *file, char **ret_dev, ts_error **err) {
        struct stat st;
        if (stat(file, &st) < 0)
                return ts_error_set(err, errno, "find loop device of %s", file);
        uint64_t want_dev = kernel_encode_dev(st.st_dev);

        DIR *d = opendir("/sys/block");
        if (!d)
                return ts_error_set(err, errno, "find loop device of %s: /sys/block", file);
        int r = -ENXIO;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, "loop", 4) != 0)
                        continue;
                char probe[300];
                /* Only bound loop devices have a loop/ directory in sysfs. */
                snprintf(probe, sizeof(probe), "/sys/block/%s/loop", de->d_name);
                if (access(probe, F_OK) != 0)
                        continue;
                char dev[300];
                snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
                _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                struct loop_info64 info;
                if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
                        continue;
                if (info.lo_inode == st.st_ino && (uint64_t) info.lo_device == want_dev) {
                        *ret_dev = strdup(dev);
                        r = *ret_dev ? 0 : -ENOMEM;
                        break;
                }
        }
        closedir(d);
        if (r == -ENXIO)
                return r; /* not an error worth a message: the caller decides */
        if (r < 0)
                return ts_error_set(err, r, "find loop device of %s", file);
        return 0;
}

int ts_loop_get(const char *file, unsigned flags, char **ret_dev, int *ret_fd, bool *ret_attached,
                ts_error **err) {
        int r = ts_loop_find(file, ret_dev, err);
        if (r == 0) {
                if (ret_fd)
                        *ret_fd = -1;
                if (ret_attached)
                        *ret_attached = false;
                return 0;
        }
        if (r != -ENXIO)
                return r;
        r = ts_loop_attach(file, flags, ret_dev, ret_fd, err);
        if (r == 0 && ret_attached)
                *ret_attached = true;
        return r;
}

int ts_loop_info_get(const char *dev, ts_loop_info *ret, ts_error **err) {
        _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return ts_error_set(err, errno, "open %s", dev);
        struct loop_info64 info;
        if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
                return ts_error_set(err, errno, "status of %s", dev);
        *ret = (ts_loop_info) {
                .offset = info.lo_offset,
                .sizelimit = info.lo_sizelimit,
                .read_only = info.lo_flags & LO_FLAGS_READ_ONLY,
        };
        return 0;
}

int ts_loop_set_capacity(const char *dev, ts_error **err) {
        _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return ts_error_set(err, errno, "open %s", dev);
        if (ioctl(fd, LOOP_SET_CAPACITY, 0) < 0)
                return ts_error_set(err, errno, "refresh the size of %s", dev);
        return 0;
}

int ts_loop_detach(const char *dev, ts_error **err) {
        _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return ts_error_set(err, errno, "detach %s", dev);
        if (ioctl(fd, LOOP_CLR_FD, 0) < 0)
                return ts_error_set(err, errno, "detach %s", dev);
        return 0;
}
