/* Small filesystem helpers. */
#pragma once

#include <sys/types.h>

/* Creates the directory dir and every missing parent, each with mode (less
 * the umask). An existing directory is fine. Returns 0, -ENOTDIR (a part
 * is not a directory), -ENAMETOOLONG, -ENOMEM, or mkdir's -errno. */
int ts_mkdir_p(const char *dir, mode_t mode);

/* The same for the directory that will hold path (a socket, a file). */
int ts_mkdir_parents(const char *path, mode_t mode);
