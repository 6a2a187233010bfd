#include "fs.h"

#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"

int ts_mkdir_p(const char *dir, mode_t mode) {
        struct stat st;
        if (stat(dir, &st) == 0)
                return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
        int r = ts_mkdir_parents(dir, mode);
        if (r < 0)
                return r;
        if (mkdir(dir, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int ts_mkdir_parents(const char *path, mode_t mode) {
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        const char *parent = dirname(copy);
        if (strcmp(parent, "/") == 0 || strcmp(parent, ".") == 0)
                return 0;
        return ts_mkdir_p(parent, mode);
}
