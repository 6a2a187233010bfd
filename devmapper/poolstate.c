#include "poolstate.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/json.h"

#define STATE_VERSION 1

ts_poolspec *ts_poolstate_free(ts_poolspec *s) {
        if (s) {
                free(s->name);
                free(s->data.path);
                free(s->data.id);
                free(s->meta.path);
                free(s->meta.id);
                free(s);
        }
        return NULL;
}

static json_object *dev_to_json(const ts_pooldev *d) {
        json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        json_object_object_add(o, "path", json_object_new_string(d->path));
        json_object_object_add(o, "kind", json_object_new_string(d->is_file ? "file" : "block"));
        json_object_object_add(o, "size", json_object_new_uint64(d->size));
        if (d->id)
                json_object_object_add(o, "id", json_object_new_string(d->id));
        return o;
}

int ts_poolstate_to_json(const ts_poolspec *s, char **ret) {
        _cleanup_json_ json_object *o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "version", json_object_new_int(STATE_VERSION));
        json_object_object_add(o, "name", json_object_new_string(s->name));
        json_object_object_add(o, "data", dev_to_json(&s->data));
        json_object_object_add(o, "meta", dev_to_json(&s->meta));
        json_object_object_add(o, "block_size",
                               json_object_new_uint64(s->params.data_block_sectors * TS_SECTOR_SIZE));
        json_object_object_add(o, "low_water_blocks", json_object_new_uint64(s->params.low_water_blocks));
        json_object_object_add(o, "skip_block_zeroing", json_object_new_boolean(s->params.skip_block_zeroing));
        json_object_object_add(o, "ignore_discard", json_object_new_boolean(s->params.ignore_discard));
        json_object_object_add(o, "no_discard_passdown", json_object_new_boolean(s->params.no_discard_passdown));
        json_object_object_add(o, "error_if_no_space", json_object_new_boolean(s->params.error_if_no_space));
        const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!text || !(*ret = strdup(text)))
                return -ENOMEM;
        return 0;
}

static int get_field(json_object *o, const char *key, json_type type, json_object **ret,
                     ts_error **err) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v))
                return ts_error_setf_plain(err, EINVAL, "pool state: field '%s' is missing", key);
        if (!json_object_is_type(v, type))
                return ts_error_setf_plain(err, EINVAL, "pool state: field '%s' has the wrong type",
                                           key);
        *ret = v;
        return 0;
}

static int get_u64(json_object *o, const char *key, uint64_t *ret, ts_error **err) {
        json_object *v = NULL;
        int r = get_field(o, key, json_type_int, &v, err);
        if (r < 0)
                return r;
        errno = 0;
        int64_t i = json_object_get_int64(v);
        /* json-c keeps values above INT64_MAX as unsigned; negatives are wrong here. */
        if (i < 0)
                return ts_error_setf_plain(err, EINVAL, "pool state: field '%s' is negative", key);
        *ret = json_object_get_uint64(v);
        return 0;
}

static int get_bool(json_object *o, const char *key, bool *ret, ts_error **err) {
        json_object *v = NULL;
        int r = get_field(o, key, json_type_boolean, &v, err);
        if (r < 0)
                return r;
        *ret = json_object_get_boolean(v);
        return 0;
}

static int dev_from_json(json_object *o, const char *key, ts_pooldev *d, ts_error **err) {
        json_object *dev = NULL, *v = NULL;
        int r = get_field(o, key, json_type_object, &dev, err);
        if (r < 0)
                return r;
        r = get_field(dev, "path", json_type_string, &v, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", key);
        const char *path = json_object_get_string(v);
        if (path[0] != '/')
                return ts_error_setf_plain(err, EINVAL, "pool state: %s.path '%s' is not absolute",
                                           key, path);
        r = get_field(dev, "kind", json_type_string, &v, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", key);
        const char *kind = json_object_get_string(v);
        if (strcmp(kind, "file") != 0 && strcmp(kind, "block") != 0)
                return ts_error_setf_plain(err, EINVAL,
                                           "pool state: %s.kind '%s' is neither 'file' nor 'block'",
                                           key, kind);
        r = get_u64(dev, "size", &d->size, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", key);
        d->is_file = strcmp(kind, "file") == 0;
        if (json_object_object_get_ex(dev, "id", NULL)) { /* absent in older states */
                r = get_field(dev, "id", json_type_string, &v, err);
                if (r < 0)
                        return ts_error_prefix(err, r, "%s", key);
                if (!(d->id = strdup(json_object_get_string(v))))
                        return ts_error_set(err, ENOMEM, "pool state");
        }
        if (!(d->path = strdup(path)))
                return ts_error_set(err, ENOMEM, "pool state");
        return 0;
}

int ts_poolstate_from_json(const char *text, ts_poolspec **ret, ts_error **err) {
        enum json_tokener_error jerr;
        _cleanup_json_ json_object *o = json_tokener_parse_verbose(text, &jerr);
        if (!o)
                return ts_error_setf_plain(err, EINVAL, "pool state: not JSON (%s)",
                                           json_tokener_error_desc(jerr));
        if (!json_object_is_type(o, json_type_object))
                return ts_error_setf_plain(err, EINVAL, "pool state: not a JSON object");
        uint64_t version;
        int r = get_u64(o, "version", &version, err);
        if (r < 0)
                return r;
        if (version != STATE_VERSION)
                return ts_error_setf_plain(err, EINVAL, "pool state: version %llu is not supported",
                                           (unsigned long long) version);

        _cleanup_poolspec_ ts_poolspec *s = calloc(1, sizeof(*s));
        if (!s)
                return ts_error_set(err, ENOMEM, "pool state");
        json_object *v = NULL;
        r = get_field(o, "name", json_type_string, &v, err);
        if (r < 0)
                return r;
        r = ts_pool_check_name(json_object_get_string(v), err);
        if (r < 0)
                return ts_error_prefix(err, r, "pool state");
        if (!(s->name = strdup(json_object_get_string(v))))
                return ts_error_set(err, ENOMEM, "pool state");
        if ((r = dev_from_json(o, "data", &s->data, err)) < 0 ||
            (r = dev_from_json(o, "meta", &s->meta, err)) < 0)
                return r;
        uint64_t block;
        if ((r = get_u64(o, "block_size", &block, err)) < 0)
                return r;
        if ((r = ts_pool_check_block_size(block, err)) < 0)
                return ts_error_prefix(err, r, "pool state");
        s->params.data_block_sectors = block / TS_SECTOR_SIZE;
        if ((r = get_u64(o, "low_water_blocks", &s->params.low_water_blocks, err)) < 0 ||
            (r = get_bool(o, "skip_block_zeroing", &s->params.skip_block_zeroing, err)) < 0 ||
            (r = get_bool(o, "ignore_discard", &s->params.ignore_discard, err)) < 0 ||
            (r = get_bool(o, "no_discard_passdown", &s->params.no_discard_passdown, err)) < 0 ||
            (r = get_bool(o, "error_if_no_space", &s->params.error_if_no_space, err)) < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

/* Opens the state directory (created 0700 when create and missing) and
 * refuses one that another user could write to: whoever can put a file in
 * it decides which devices `pool attach` hands to the kernel as root. */
static int open_dir(const char *dir, bool create, ts_error **err) {
        if (create) {
                int r = ts_mkdir_p(dir, 0700);
                if (r < 0)
                        return ts_error_set(err, r, "pool state directory %s", dir);
        }
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return ts_error_set(err, errno, "pool state directory %s", dir);
        struct stat st;
        if (fstat(fd, &st) < 0) {
                int e = errno;
                close(fd);
                return ts_error_set(err, e, "pool state directory %s", dir);
        }
        if ((st.st_mode & (S_IWGRP | S_IWOTH)) || (st.st_uid != 0 && st.st_uid != geteuid())) {
                close(fd);
                return ts_error_setf_plain(err, EPERM,
                                           "pool state directory %s is writable by others (mode %04o, "
                                           "owner %u): refusing to use it; make it owned by root and "
                                           "not group- or world-writable (chmod 0700)",
                                           dir, (unsigned) (st.st_mode & 07777), (unsigned) st.st_uid);
        }
        return fd;
}

static char *state_name(const char *name, const char *suffix) {
        char *p = NULL;
        if (asprintf(&p, "%s.json%s", name, suffix) < 0)
                return NULL;
        return p;
}

static int write_all(int fd, const char *p, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Creates the temporary file afresh: never through a link planted in its
 * place, never into a file someone else opened. A stale one (a write cut
 * short) is removed first. */
static int create_tmp(int dirfd, const char *tmp) {
        for (int i = 0;; i++) {
                int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd >= 0 || errno != EEXIST || i > 0)
                        return fd < 0 ? -errno : fd;
                if (unlinkat(dirfd, tmp, 0) < 0 && errno != ENOENT)
                        return -errno;
        }
}

int ts_poolstate_write(const char *dir, const ts_poolspec *s, ts_error **err) {
        _cleanup_close_ int dirfd = open_dir(dir, true, err);
        if (dirfd < 0)
                return dirfd;
        _cleanup_free_ char *json = NULL;
        _cleanup_free_ char *name = state_name(s->name, "");
        _cleanup_free_ char *tmp = state_name(s->name, ".tmp");
        if (ts_poolstate_to_json(s, &json) < 0 || !name || !tmp)
                return ts_error_set(err, ENOMEM, "pool state of %s", s->name);

        _cleanup_close_ int fd = create_tmp(dirfd, tmp);
        if (fd < 0)
                return ts_error_set(err, fd, "create %s/%s", dir, tmp);
        int r = write_all(fd, json, strlen(json));
        if (r >= 0)
                r = write_all(fd, "\n", 1);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(dirfd, tmp, 0);
                return ts_error_set(err, r, "write %s/%s", dir, tmp);
        }
        if (renameat(dirfd, tmp, dirfd, name) < 0) {
                r = -errno;
                (void) unlinkat(dirfd, tmp, 0);
                return ts_error_set(err, r, "rename %s/%s to %s", dir, tmp, name);
        }
        /* The rename is durable only once the directory is. */
        if (fsync(dirfd) < 0)
                return ts_error_set(err, errno, "sync %s", dir);
        return 0;
}

static int no_state(ts_error **err, const char *name, const char *dir, const char *file) {
        return ts_error_setf_plain(err, ENOENT,
                                   "no state for pool %s (%s/%s does not exist; was it made with "
                                   "'thinsnap pool create'?)",
                                   name, dir, file);
}

int ts_poolstate_read(const char *dir, const char *name, ts_poolspec **ret, ts_error **err) {
        _cleanup_free_ char *file = state_name(name, "");
        if (!file)
                return ts_error_set(err, ENOMEM, "pool state of %s", name);
        ts_error *dir_err = NULL;
        _cleanup_close_ int dirfd = open_dir(dir, false, &dir_err);
        if (dirfd == -ENOENT) {
                ts_error_free(dir_err);
                return no_state(err, name, dir, file);
        }
        if (dirfd < 0)
                return ts_error_move(err, &dir_err);
        int fd = openat(dirfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
                return no_state(err, name, dir, file);
        if (fd < 0)
                return ts_error_set(err, errno, "read %s/%s", dir, file);
        _cleanup_fclose_ FILE *f = fdopen(fd, "re");
        if (!f) {
                close(fd);
                return ts_error_set(err, ENOMEM, "read %s/%s", dir, file);
        }
        char buf[16384];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        if (ferror(f))
                return ts_error_set(err, EIO, "read %s/%s", dir, file);
        if (n == sizeof(buf) - 1)
                return ts_error_setf_plain(err, EINVAL, "%s/%s: larger than a pool state can be", dir, file);
        buf[n] = 0;
        _cleanup_poolspec_ ts_poolspec *s = NULL;
        int r = ts_poolstate_from_json(buf, &s, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s/%s", dir, file);
        if (strcmp(s->name, name) != 0)
                return ts_error_setf_plain(err, EINVAL, "%s/%s names pool '%s', not '%s'", dir, file,
                                           s->name, name);
        *ret = TAKE_PTR(s);
        return 0;
}

int ts_poolstate_remove(const char *dir, const char *name, ts_error **err) {
        _cleanup_free_ char *file = state_name(name, "");
        if (!file)
                return ts_error_set(err, ENOMEM, "pool state of %s", name);
        _cleanup_close_ int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return errno == ENOENT ? 0 : ts_error_set(err, errno, "pool state directory %s", dir);
        if (unlinkat(dirfd, file, 0) < 0 && errno != ENOENT)
                return ts_error_set(err, errno, "remove %s/%s", dir, file);
        if (fsync(dirfd) < 0)
                return ts_error_set(err, errno, "sync %s", dir);
        return 0;
}

static bool dev_equal(const ts_pooldev *a, const ts_pooldev *b) {
        return strcmp(a->path, b->path) == 0 && a->is_file == b->is_file && a->size == b->size;
}

bool ts_poolstate_equal(const ts_poolspec *a, const ts_poolspec *b) {
        return strcmp(a->name, b->name) == 0 && dev_equal(&a->data, &b->data) &&
               dev_equal(&a->meta, &b->meta) &&
               a->params.data_block_sectors == b->params.data_block_sectors &&
               a->params.low_water_blocks == b->params.low_water_blocks &&
               a->params.skip_block_zeroing == b->params.skip_block_zeroing &&
               a->params.ignore_discard == b->params.ignore_discard &&
               a->params.no_discard_passdown == b->params.no_discard_passdown &&
               a->params.error_if_no_space == b->params.error_if_no_space;
}
