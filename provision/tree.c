#include "tree.h"

#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "inject/inject.h"

#define COPY_CHUNK (1 << 20)

struct prov_tree {
        ts_inject *ij; /* a filesystem on a block device */
        int root;      /* or a directory (O_PATH) */
        char *dir;     /* its path */
};

prov_tree *prov_tree_free(prov_tree *t) {
        if (!t)
                return NULL;
        ts_inject_free(t->ij);
        if (t->root >= 0)
                close(t->root);
        free(t->dir);
        free(t);
        return NULL;
}

static bool has_option(char *const *options, const char *opt) {
        for (char *const *o = options; o && *o; o++)
                if (strcmp(*o, opt) == 0)
                        return true;
        return false;
}

static bool is_bind(const ts_ctrd_mount *m) {
        return (m->type && strcmp(m->type, "bind") == 0) || has_option(m->options, "bind") ||
               has_option(m->options, "rbind");
}

static bool is_ext(const ts_ctrd_mount *m) {
        return m->type && (strcmp(m->type, "ext4") == 0 || strcmp(m->type, "ext3") == 0 ||
                           strcmp(m->type, "ext2") == 0);
}

int prov_tree_open(const ts_ctrd_mounts *mounts, prov_tree **ret, ts_error **err) {
        if (mounts->n != 1)
                return ts_error_setf_plain(err, EOPNOTSUPP, "a snapshot of %zu mounts cannot be written "
                                                            "without mounting it",
                                           mounts->n);
        const ts_ctrd_mount *m = &mounts->v[0];
        if (!m->source || m->source[0] != '/' || (!is_ext(m) && !is_bind(m)))
                return ts_error_setf_plain(err, EOPNOTSUPP, "a snapshot mounted as %s from %s cannot be "
                                                            "written without mounting it (an ext4 block "
                                                            "device or a directory can)",
                                           m->type ? m->type : "?", m->source ? m->source : "?");
        prov_tree *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->root = -1;
        int r = 0;
        if (is_ext(m))
                r = ts_inject_open(m->source, 0, &t->ij, err);
        else if (!(t->dir = strdup(m->source)))
                r = -ENOMEM;
        else if ((t->root = open(m->source, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
                r = ts_error_set(err, errno, "open the snapshot's directory %s", m->source);
        if (r < 0) {
                prov_tree_free(t);
                return r;
        }
        *ret = t;
        return 0;
}

/* ---- a directory ---- */

/* The directory that holds path's last component, resolved inside the
 * tree; *ret_name points into path. */
static int open_parent(prov_tree *t, const char *path, const char **ret_name, ts_error **err) {
        const char *slash = strrchr(path, '/');
        if (path[0] != '/' || !slash[1])
                return ts_error_setf_plain(err, EINVAL, "'%s' is not an absolute path to an entry", path);
        _cleanup_free_ char *parent = slash == path ? strdup(".")
                                                    : strndup(path + 1, (size_t) (slash - path - 1));
        if (!parent)
                return -ENOMEM;
        struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
        int fd = (int) syscall(SYS_openat2, t->root, parent, &how, sizeof how);
        if (fd < 0)
                return ts_error_set(err, errno, "%s: its directory in %s", path, t->dir);
        *ret_name = slash + 1;
        return fd;
}

static int dir_lstat(prov_tree *t, const char *path, uint32_t *ret_mode, ts_error **err) {
        const char *name;
        _cleanup_close_ int dfd = open_parent(t, path, &name, err);
        if (dfd < 0)
                return dfd;
        struct stat st;
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return ts_error_set(err, errno, "%s", path);
        *ret_mode = st.st_mode;
        return 0;
}

static const struct timespec layer_times[2] = { { .tv_sec = PROV_LAYER_MTIME },
                                                { .tv_sec = PROV_LAYER_MTIME } };

static int set_file_attrs(int fd, uint32_t mode) {
        return fchown(fd, 0, 0) < 0 || fchmod(fd, mode) < 0 || futimens(fd, layer_times) < 0 ? -errno : 0;
}

static int set_dir_attrs(int dfd, const char *name, uint32_t mode) {
        return fchownat(dfd, name, 0, 0, AT_SYMLINK_NOFOLLOW) < 0 || fchmodat(dfd, name, mode, 0) < 0 ||
                               utimensat(dfd, name, layer_times, AT_SYMLINK_NOFOLLOW) < 0
                       ? -errno
                       : 0;
}

static int copy_content(int from, uint64_t size, int to) {
        _cleanup_free_ char *buf = malloc(COPY_CHUNK);
        if (!buf)
                return -ENOMEM;
        for (uint64_t off = 0; off < size;) {
                size_t want = size - off < COPY_CHUNK ? (size_t) (size - off) : COPY_CHUNK;
                ssize_t n = pread(from, buf, want, (off_t) off);
                if (n <= 0)
                        return n < 0 ? -errno : -EINVAL;
                for (ssize_t done = 0; done < n;) {
                        ssize_t w = write(to, buf + done, (size_t) (n - done));
                        if (w < 0)
                                return -errno;
                        done += w;
                }
                off += (uint64_t) n;
        }
        return fsync(to) < 0 ? -errno : 0;
}

/* A file goes in under a temporary name and is renamed over its path. */
static int dir_write_file(int dfd, const char *name, const prov_layer_entry *e) {
        char tmp[300];
        snprintf(tmp, sizeof tmp, ".%.200s.thinsnap-%d", name, (int) getpid());
        _cleanup_close_ int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                        0600);
        if (fd < 0)
                return -errno;
        int r = copy_content(e->fd, e->size, fd);
        if (r >= 0)
                r = set_file_attrs(fd, e->mode);
        if (r >= 0 && renameat(dfd, tmp, dfd, name) < 0)
                r = -errno;
        if (r < 0)
                unlinkat(dfd, tmp, 0);
        return r;
}

static int dir_write(prov_tree *t, const prov_layer_entry *e, ts_error **err) {
        const char *name;
        _cleanup_close_ int dfd = open_parent(t, e->path, &name, err);
        if (dfd < 0)
                return dfd;
        int r;
        if (e->kind == PROV_LAYER_DIR)
                r = mkdirat(dfd, name, 0700) < 0 ? -errno : set_dir_attrs(dfd, name, e->mode);
        else
                r = dir_write_file(dfd, name, e);
        return r < 0 ? ts_error_set(err, -r, "write %s into %s", e->path, t->dir) : 0;
}

/* Like du(1): blocks of every inode once (hard links counted once). */
static int dir_usage(prov_tree *t, uint64_t *ret_bytes, uint64_t *ret_inodes, ts_error **err) {
        char *paths[] = { t->dir, NULL };
        FTS *fts = fts_open(paths, FTS_PHYSICAL | FTS_XDEV | FTS_NOCHDIR, NULL);
        if (!fts)
                return ts_error_set(err, errno, "walk %s", t->dir);
        uint64_t bytes = 0, inodes = 0;
        _cleanup_free_ ino_t *linked = NULL;
        size_t n_linked = 0;
        int r = 0;
        FTSENT *e;
        while (r >= 0 && (e = fts_read(fts))) {
                if (e->fts_info == FTS_DP)
                        continue;
                if (e->fts_info == FTS_DNR || e->fts_info == FTS_ERR || e->fts_info == FTS_NS) {
                        r = ts_error_set(err, e->fts_errno, "walk %s", e->fts_path);
                        break;
                }
                const struct stat *st = e->fts_statp;
                bool seen = false;
                for (size_t i = 0; st->st_nlink > 1 && !S_ISDIR(st->st_mode) && i < n_linked; i++)
                        seen = seen || linked[i] == st->st_ino;
                if (seen)
                        continue;
                if (st->st_nlink > 1 && !S_ISDIR(st->st_mode)) {
                        ino_t *nl = realloc(linked, (n_linked + 1) * sizeof(*linked));
                        if (!nl) {
                                r = -ENOMEM;
                                break;
                        }
                        linked = nl;
                        linked[n_linked++] = st->st_ino;
                }
                bytes += (uint64_t) st->st_blocks * 512;
                inodes++;
        }
        fts_close(fts);
        if (r < 0)
                return r;
        *ret_bytes = bytes;
        *ret_inodes = inodes;
        return 0;
}

/* ---- either ---- */

int prov_tree_lstat(prov_tree *t, const char *path, uint32_t *ret_mode, ts_error **err) {
        uint32_t ino;
        return t->ij ? ts_inject_lstat(t->ij, path, &ino, ret_mode, err)
                     : dir_lstat(t, path, ret_mode, err);
}

int prov_tree_usage(prov_tree *t, uint64_t *ret_bytes, uint64_t *ret_inodes, ts_error **err) {
        return t->ij ? ts_inject_usage(t->ij, ret_bytes, ret_inodes, err)
                     : dir_usage(t, ret_bytes, ret_inodes, err);
}

static int ext_write(prov_tree *t, const prov_layer_entry *e, ts_error **err) {
        ts_inject_opts o = TS_INJECT_OPTS_DEFAULT;
        o.mode = e->mode;
        o.mtime = PROV_LAYER_MTIME;
        o.flags = TS_INJECT_NO_MKDIRS;
        if (e->kind == PROV_LAYER_DIR)
                return ts_inject_mkdir_p(t->ij, e->path, &o, err);
        return ts_inject_write_fd(t->ij, e->fd, e->path, &o, err);
}

/* What was written into a directory made here moved its mtime: set it
 * again, deepest first, as tar extractors (containerd's too) do.
 * libext2fs leaves a directory's times alone when it links an entry. */
static int dir_times(prov_tree *t, const prov_layer_entry *entries, size_t n, ts_error **err) {
        for (size_t i = n; i-- > 0;) {
                if (entries[i].kind != PROV_LAYER_DIR)
                        continue;
                const char *name;
                _cleanup_close_ int dfd = open_parent(t, entries[i].path, &name, err);
                if (dfd < 0)
                        return dfd;
                if (utimensat(dfd, name, layer_times, AT_SYMLINK_NOFOLLOW) < 0)
                        return ts_error_set(err, errno, "set the times of %s", entries[i].path);
        }
        return 0;
}

int prov_tree_write(prov_tree *t, const prov_layer_entry *entries, size_t n, ts_error **err) {
        for (size_t i = 0; i < n; i++) {
                int r = t->ij ? ext_write(t, &entries[i], err) : dir_write(t, &entries[i], err);
                if (r < 0)
                        return r;
        }
        return t->ij ? 0 : dir_times(t, entries, n, err);
}

int prov_tree_close(prov_tree *t, ts_error **err) {
        int r = 0;
        if (t->ij)
                r = ts_inject_close(TAKE_PTR(t->ij), err);
        else {
                /* An O_PATH descriptor cannot be synced: open the directory. */
                _cleanup_close_ int fd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0 || syncfs(fd) < 0)
                        r = ts_error_set(err, errno, "sync %s", t->dir);
        }
        prov_tree_free(t);
        return r;
}
