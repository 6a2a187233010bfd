/* Writing a layer: libarchive makes the tar, zlib compresses it as the
 * bytes come out, and both are hashed on the way. One adapter each turns
 * libarchive's and zlib's failures into our errors. */
#include "layer.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define READ_CHUNK (1 << 20)
/* The layer is made once per prepare and is mostly a binary: level 1 is
 * three times faster than 6 on one, for some 8% more bytes. */
#define GZIP_LEVEL 1

typedef struct sink {
        ts_sha256 *tar_hash, *blob_hash;
        z_stream z;
        uint8_t *out;
        size_t cap;
        uint64_t tar_len;
        int zerr; /* the first zlib failure, as -errno */
} sink;

static int archive_fail(struct archive *a, int code, ts_error **err, const char *what) {
        const char *msg = archive_error_string(a);
        int e = code == ARCHIVE_FATAL && archive_errno(a) == ENOMEM ? ENOMEM : EIO;
        return ts_error_setf_plain(err, e, "layer tar: %s: %s", what, msg ? msg : "libarchive failed");
}

static int zlib_fail(int code, ts_error **err) {
        return ts_error_setf_plain(err, code == Z_MEM_ERROR ? ENOMEM : EIO, "layer gzip: %s",
                                   zError(code));
}

/* Runs deflate over what is in s->z until the input is used (or, with
 * Z_FINISH, the stream ends), growing the output. Returns 0 or a zlib code. */
static int pump(sink *s, int flush) {
        for (;;) {
                if (s->z.avail_out == 0) {
                        size_t used = s->cap;
                        size_t cap = s->cap ? s->cap * 2 : 64 * 1024;
                        uint8_t *n = realloc(s->out, cap);
                        if (!n)
                                return Z_MEM_ERROR;
                        s->out = n;
                        s->cap = cap;
                        s->z.next_out = n + used;
                        s->z.avail_out = (uInt) (cap - used);
                }
                size_t before = s->z.total_out;
                int r = deflate(&s->z, flush);
                ts_sha256_update(s->blob_hash, s->out + before, s->z.total_out - before);
                if (r == Z_STREAM_END)
                        return 0;
                if (r != Z_OK && r != Z_BUF_ERROR)
                        return r;
                if (flush == Z_NO_FLUSH && s->z.avail_in == 0 && s->z.avail_out != 0)
                        return 0;
        }
}

static la_ssize_t sink_write(struct archive *a, void *userdata, const void *p, size_t n) {
        sink *s = userdata;
        ts_sha256_update(s->tar_hash, p, n);
        s->tar_len += n;
        s->z.next_in = (Bytef *) p;
        s->z.avail_in = (uInt) n;
        int r = pump(s, Z_NO_FLUSH);
        if (r != 0) {
                s->zerr = r;
                archive_set_error(a, r == Z_MEM_ERROR ? ENOMEM : EIO, "gzip: %s", zError(r));
                return -1;
        }
        return (la_ssize_t) n;
}

static int path_cmp(const void *a, const void *b) {
        return strcmp(((const prov_layer_entry *) a)->path, ((const prov_layer_entry *) b)->path);
}

static int write_content(struct archive *a, const prov_layer_entry *e, uint8_t *buf, ts_error **err) {
        for (uint64_t off = 0; off < e->size;) {
                size_t want = e->size - off < READ_CHUNK ? (size_t) (e->size - off) : READ_CHUNK;
                ssize_t n = pread(e->fd, buf, want, (off_t) off);
                if (n < 0)
                        return ts_error_set(err, errno, "layer tar: read the content of %s", e->path);
                if (n == 0)
                        return ts_error_setf_plain(err, EINVAL, "layer tar: %s ended at %llu of its %llu "
                                                                "bytes (changed while read?)",
                                                   e->path, (unsigned long long) off,
                                                   (unsigned long long) e->size);
                if (archive_write_data(a, buf, (size_t) n) != n)
                        return archive_fail(a, ARCHIVE_FATAL, err, e->path);
                off += (uint64_t) n;
        }
        return 0;
}

static int write_entry(struct archive *a, struct archive_entry *ae, const prov_layer_entry *e,
                       uint8_t *buf, ts_error **err) {
        if (e->path[0] != '/' || !e->path[1])
                return ts_error_setf_plain(err, EINVAL, "layer tar: entry path '%s' is not absolute",
                                           e->path);
        archive_entry_clear(ae);
        archive_entry_set_pathname(ae, e->path + 1);
        archive_entry_set_filetype(ae, e->kind == PROV_LAYER_DIR ? AE_IFDIR : AE_IFREG);
        archive_entry_set_perm(ae, e->mode & 07777);
        archive_entry_set_uid(ae, 0);
        archive_entry_set_gid(ae, 0);
        archive_entry_set_mtime(ae, PROV_LAYER_MTIME, 0);
        archive_entry_set_size(ae, e->kind == PROV_LAYER_FILE ? (la_int64_t) e->size : 0);
        int r = archive_write_header(a, ae);
        if (r != ARCHIVE_OK)
                return archive_fail(a, r, err, e->path);
        return e->kind == PROV_LAYER_FILE ? write_content(a, e, buf, err) : 0;
}

struct prov_layer_builder {
        sink s;
        struct archive *a;
        struct archive_entry *ae;
        uint8_t *buf; /* file content on its way */
        char *last;   /* the last path written: entries must follow it */
        bool zinit;
};

prov_layer_builder *prov_layer_builder_free(prov_layer_builder *b) {
        if (!b)
                return NULL;
        if (b->a)
                archive_write_free(b->a);
        archive_entry_free(b->ae);
        if (b->zinit)
                deflateEnd(&b->s.z);
        ts_sha256_free(b->s.tar_hash);
        ts_sha256_free(b->s.blob_hash);
        free(b->s.out);
        free(b->buf);
        free(b->last);
        free(b);
        return NULL;
}

int prov_layer_begin(prov_layer_builder **ret, ts_error **err) {
        prov_layer_builder *b = calloc(1, sizeof(*b));
        if (!b || ts_sha256_new(&b->s.tar_hash) < 0 || ts_sha256_new(&b->s.blob_hash) < 0 ||
            !(b->a = archive_write_new()) || !(b->ae = archive_entry_new()) ||
            !(b->buf = malloc(READ_CHUNK))) {
                prov_layer_builder_free(b);
                return -ENOMEM;
        }
        /* windowBits 15 + 16: a gzip wrapper, whose header zlib writes with
         * no name and a zero time. */
        int z = deflateInit2(&b->s.z, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
        int r = z == Z_OK ? 0 : zlib_fail(z, err);
        b->zinit = z == Z_OK;
        if (r >= 0 && (archive_write_set_format_pax_restricted(b->a) != ARCHIVE_OK ||
                       archive_write_set_bytes_in_last_block(b->a, 1) != ARCHIVE_OK ||
                       archive_write_open(b->a, &b->s, NULL, sink_write, NULL) != ARCHIVE_OK))
                r = archive_fail(b->a, ARCHIVE_FATAL, err, "open");
        if (r < 0) {
                prov_layer_builder_free(b);
                return r;
        }
        *ret = b;
        return 0;
}

void prov_layer_sort(prov_layer_entry *entries, size_t n) {
        qsort(entries, n, sizeof(*entries), path_cmp);
}

int prov_layer_add(prov_layer_builder *b, prov_layer_entry *entries, size_t n, ts_error **err) {
        prov_layer_sort(entries, n);
        if (n && b->last && strcmp(entries[0].path, b->last) <= 0)
                return ts_error_setf_plain(err, EINVAL, "layer tar: %s does not sort after %s",
                                           entries[0].path, b->last);
        for (size_t i = 0; i < n; i++) {
                int r = write_entry(b->a, b->ae, &entries[i], b->buf, err);
                if (r < 0)
                        return r;
        }
        if (n) {
                free(b->last);
                if (!(b->last = strdup(entries[n - 1].path)))
                        return -ENOMEM;
        }
        return 0;
}

int prov_layer_end(prov_layer_builder *b, prov_layer *ret, ts_error **err) {
        int r = 0;
        if (archive_write_close(b->a) != ARCHIVE_OK)
                r = b->s.zerr ? zlib_fail(b->s.zerr, err) : archive_fail(b->a, ARCHIVE_FATAL, err, "close");
        if (r >= 0) {
                b->s.z.next_in = NULL;
                b->s.z.avail_in = 0;
                int z = pump(&b->s, Z_FINISH);
                if (z != 0)
                        r = zlib_fail(z, err);
        }
        if (r >= 0) {
                prov_layer l = { .blob = TAKE_PTR(b->s.out), .blob_len = b->s.z.total_out,
                                 .tar_len = b->s.tar_len };
                ts_sha256_final(b->s.tar_hash, l.diff_id);
                ts_sha256_final(b->s.blob_hash, l.digest);
                *ret = l;
        }
        prov_layer_builder_free(b);
        return r;
}

void prov_layer_done(prov_layer *l) {
        free(l->blob);
        *l = (prov_layer) { 0 };
}

int prov_layer_build(prov_layer_entry *entries, size_t n, prov_layer *ret, ts_error **err) {
        prov_layer_builder *b = NULL;
        int r = prov_layer_begin(&b, err);
        if (r >= 0 && (r = prov_layer_add(b, entries, n, err)) < 0)
                prov_layer_builder_free(b);
        return r < 0 ? r : prov_layer_end(b, ret, err);
}
