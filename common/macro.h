/* Small helpers every module uses: cleanup attributes, ownership transfer. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define TS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_ __attribute__((warn_unused_result))

/* Hand out a pointer (or fd) that a cleanup attribute would otherwise release. */
#define TAKE_PTR(p)                                                                    \
        ({                                                                             \
                __typeof__(p) _tp = (p);                                               \
                (p) = NULL;                                                            \
                _tp;                                                                   \
        })
#define TAKE_FD(fd)                                                                    \
        ({                                                                             \
                int _tf = (fd);                                                        \
                (fd) = -1;                                                             \
                _tf;                                                                   \
        })

/* Declares a cleanup function func##p that calls func on a non-NULL pointer. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                        \
        static inline void func##p(type *p) {                                          \
                if (*p)                                                                \
                        func(*p);                                                      \
        }

static inline void freep(void *p) {
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* errno as a negative return value; never 0, so a failed call always reads as failure. */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}
