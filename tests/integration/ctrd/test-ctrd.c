/* ctrd/ against a real containerd started for this run (TS_CONTAINERD: its
 * binary; /usr/bin/containerd by default), with the native snapshotter.
 * Each test works in a namespace of its own. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "common/strv.h"
#include "ctrd/content.h"
#include "ctrd/ctrd.h"
#include "ctrd/diff.h"
#include "ctrd/images.h"
#include "ctrd/leases.h"
#include "ctrd/snapshots.h"
#include "ctrd/writer.h"
#include "daemon.h"
#include "oci/digest.h"

#define MiB (1024 * 1024)
#define LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define MANIFEST "application/vnd.oci.image.manifest.v1+json"

static ctrd_daemon D;

/* ---- helpers ---- */

/* Content and snapshots that no lease or image holds may be collected at
 * any time: each test works under its lease "t". */
#define L "t"

static ts_ctrd *connect_ns(const char *ns) {
        ts_ctrd *c = NULL;
        ts_error *e = NULL;
        int r = ts_ctrd_connect(D.sock, ns, NULL, &c, &e);
        ck_assert_msg(r == 0, "connect: %s", ts_error_message(e, r));
        r = ts_ctrd_lease_create(c, L, NULL, NULL, &e);
        ck_assert_msg(r == 0, "lease: %s", ts_error_message(e, r));
        return c;
}

/* Asserts that r is want and that the error names needle. */
#define ck_fails(r, e, want, needle)                                                          \
        do {                                                                                 \
                int r_ = (r);                                                                \
                ck_assert_msg(r_ == (want), "got %d (%s), want %d", r_,                      \
                              ts_error_message(e, r_), (want));                              \
                ck_assert_msg((e) && strstr((e)->msg, (needle)), "error \"%s\" lacks \"%s\"", \
                              ts_error_message(e, r_), (needle));                            \
                e = ts_error_free(e);                                                        \
        } while (0)

#define ck_ok(r, e)                                                                          \
        do {                                                                                 \
                int r_ = (r);                                                                \
                ck_assert_msg(r_ >= 0, "failed: %d %s", r_, ts_error_message(e, r_));        \
        } while (0)

static uint8_t *blob(size_t n, uint32_t seed) {
        uint8_t *p = malloc(n ? n : 1);
        ck_assert_ptr_nonnull(p);
        uint32_t x = seed * 2654435761u + 1;
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p[i] = (uint8_t) x;
        }
        return p;
}

static void digest_of(const void *p, size_t n, char out[TS_DIGEST_MAX]) {
        ck_assert_int_eq(ts_digest_buffer(p, n, out), 0);
}

/* Writes p (n bytes, in pieces of step) as ref and commits it. */
static int put_blob(ts_ctrd *c, const char *lease, const char *ref, const void *p, size_t n,
                    size_t step, char *const *labels, ts_error **e) {
        char dg[72];
        ts_ctrd_writer *w = NULL;
        digest_of(p, n, dg);
        int r = ts_ctrd_writer_open(c, lease, ref, (int64_t) n, dg, &w, e);
        if (r != 0)
                return r;
        for (size_t off = (size_t) ts_ctrd_writer_offset(w); off < n && r >= 0; off += step)
                r = ts_ctrd_writer_write(w, (const uint8_t *) p + off, n - off < step ? n - off : step, e);
        if (r >= 0)
                r = ts_ctrd_writer_commit(w, labels, e);
        ts_ctrd_writer_free(w);
        return r;
}

static int discard(void *userdata, const void *p, size_t n) {
        return 0;
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static bool has_resource(ts_ctrd *c, const char *lease, const char *type, const char *id) {
        ts_ctrd_resource *v = NULL;
        size_t n = 0;
        ts_error *e = NULL;
        ck_ok(ts_ctrd_lease_list_resources(c, lease, &v, &n, &e), e);
        bool found = false;
        for (size_t i = 0; i < n; i++)
                found |= strcmp(v[i].type, type) == 0 && strcmp(v[i].id, id) == 0;
        ts_ctrd_resource_list_free(v, n);
        return found;
}

/* ---- connection ---- */

START_TEST(test_connect_errors) {
        ts_ctrd *c = NULL;
        ts_error *e = NULL;
        char missing[160];
        snprintf(missing, sizeof(missing), "%s/nothing.sock", D.dir);
        ck_fails(ts_ctrd_connect(missing, "ns", NULL, &c, &e), e, -ECONNREFUSED, missing);
        char url[180];
        snprintf(url, sizeof(url), "unix://%s", missing);
        ck_fails(ts_ctrd_connect(url, "ns", NULL, &c, &e), e, -ECONNREFUSED, missing);
        ck_fails(ts_ctrd_connect("tcp://127.0.0.1:1", "ns", NULL, &c, &e), e, -EINVAL,
                 "only unix sockets");
        ck_fails(ts_ctrd_connect(D.sock, "", NULL, &c, &e), e, -EINVAL, "namespace");
        ck_assert_ptr_null(c);

        snprintf(url, sizeof(url), "unix://%s", D.sock);
        ck_ok(ts_ctrd_connect(url, "connect", NULL, &c, &e), e);
        ck_assert_str_eq(ts_ctrd_socket(c), D.sock);
        ck_assert_str_eq(ts_ctrd_namespace(c), "connect");
        ts_ctrd_free(c);
}
END_TEST

/* ---- content ---- */

START_TEST(test_content_write_read) {
        ts_ctrd *c = connect_ns("content-rw");
        ts_error *e = NULL;
        size_t n = 24 * MiB;
        uint8_t *p = blob(n, 1);
        char dg[72];
        digest_of(p, n, dg);

        /* Pieces that do not fall on the writer's 1 MiB messages. */
        double t0 = now_s();
        ck_assert_int_eq(put_blob(c, L, "layer-rw", p, n, 3 * MiB + 7,
                                  (char *[]) { "a", "1", "b", "2", NULL }, &e), 0);
        double dt = now_s() - t0;
        fprintf(stderr, "content write of %zu MiB: %.0f ms, %.0f MiB/s\n", n / MiB, dt * 1e3,
                (double) n / MiB / dt);

        ts_ctrd_blob info = { 0 };
        ck_ok(ts_ctrd_content_info(c, dg, &info, &e), e);
        ck_assert_str_eq(info.digest, dg);
        ck_assert_int_eq(info.size, (int64_t) n);
        ck_assert_str_eq(ts_ctrd_label(info.labels, "a"), "1");
        ck_assert_str_eq(ts_ctrd_label(info.labels, "b"), "2");
        ck_assert(info.created_ns > 0);
        ts_ctrd_blob_done(&info);

        uint8_t *back = NULL;
        size_t len = 0;
        t0 = now_s();
        ck_ok(ts_ctrd_content_read(c, dg, n, &back, &len, &e), e);
        dt = now_s() - t0;
        fprintf(stderr, "content read of %zu MiB: %.0f ms, %.0f MiB/s\n", n / MiB, dt * 1e3,
                (double) n / MiB / dt);
        ck_assert_uint_eq(len, n);
        char dg2[72];
        digest_of(back, len, dg2);
        ck_assert_str_eq(dg2, dg);
        free(back);
        ck_fails(ts_ctrd_content_read(c, dg, n - 1, &back, &len, &e), e, -EFBIG, "over the");

        free(p);
        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_content_ranges) {
        ts_ctrd *c = connect_ns("content-ranges");
        ts_error *e = NULL;
        size_t n = 3 * MiB + 100;
        uint8_t *p = blob(n, 2), buf[4096];
        char dg[72];
        digest_of(p, n, dg);
        ck_assert_int_eq(put_blob(c, L, "blob-ranges", p, n, n, NULL, &e), 0);

        ck_assert_int_eq(ts_ctrd_content_read_at(c, dg, 2 * MiB - 10, buf, sizeof(buf), &e),
                         (int64_t) sizeof(buf));
        ck_assert(memcmp(buf, p + 2 * MiB - 10, sizeof(buf)) == 0);
        /* At the end: fewer bytes, not an error. */
        ck_assert_int_eq(ts_ctrd_content_read_at(c, dg, (int64_t) n - 30, buf, sizeof(buf), &e),
                         30);
        ck_assert(memcmp(buf, p + n - 30, 30) == 0);
        ck_assert_int_eq(ts_ctrd_content_read_at(c, dg, (int64_t) n, buf, sizeof(buf), &e), 0);
        ck_fails((int) ts_ctrd_content_read_at(c, dg, (int64_t) n + 1, buf, sizeof(buf), &e), e,
                 -ERANGE, "past");
        /* A stream past the end of the blob is refused, not cut short. */
        ck_fails(ts_ctrd_content_read_stream(c, dg, (int64_t) n - 10, 20, discard, NULL, &e), e,
                 -ERANGE, "ended after");

        char missing[72];
        digest_of("x", 1, missing);
        ck_fails((int) ts_ctrd_content_read_at(c, missing, 0, buf, sizeof(buf), &e), e, -ENOENT,
                 missing);
        free(p);
        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_content_resume) {
        ts_ctrd *c = connect_ns("content-resume");
        ts_error *e = NULL;
        size_t n = 5 * MiB + 3, half = 2 * MiB + 11;
        uint8_t *p = blob(n, 3);
        char dg[72];
        digest_of(p, n, dg);

        ts_ctrd_writer *w = NULL;
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "layer-resume", (int64_t) n, dg, &w, &e), 0);
        ck_assert_int_eq(ts_ctrd_writer_offset(w), 0);
        ck_ok(ts_ctrd_writer_write(w, p, half, &e), e);
        ts_ctrd_writer_free(w); /* interrupted: the ingest stays */

        ts_ctrd_ingest st = { 0 };
        ck_ok(ts_ctrd_content_status(c, "layer-resume", &st, &e), e);
        ck_assert_int_eq(st.offset, (int64_t) half);
        ck_assert_int_eq(st.total, (int64_t) n);
        ts_ctrd_ingest_done(&st);

        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "layer-resume", (int64_t) n, dg, &w, &e), 0);
        ck_assert_int_eq(ts_ctrd_writer_offset(w), (int64_t) half);
        ck_fails(ts_ctrd_writer_write(w, p, n, &e), e, -EFBIG, "past the total");
        ck_ok(ts_ctrd_writer_write(w, p + half, n - half, &e), e);
        ck_assert_int_eq(ts_ctrd_writer_commit(w, NULL, &e), 0);
        ck_fails(ts_ctrd_writer_write(w, p, 1, &e), e, -EALREADY, "finished");
        ts_ctrd_writer_free(w);

        ts_ctrd_blob info = { 0 };
        ck_ok(ts_ctrd_content_info(c, dg, &info, &e), e);
        ck_assert_int_eq(info.size, (int64_t) n);
        ts_ctrd_blob_done(&info);
        ck_fails(ts_ctrd_content_status(c, "layer-resume", &st, &e), e, -ENOENT, "layer-resume");
        free(p);
        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_content_other_total) {
        ts_ctrd *c = connect_ns("content-total");
        ts_error *e = NULL;
        size_t n = 2 * MiB;
        uint8_t *p = blob(n, 4);
        char dg[72];
        digest_of(p, n / 2, dg);

        /* A partial ingest of a larger blob under the same ref... */
        ts_ctrd_writer *w = NULL;
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "ref-total", (int64_t) n, NULL, &w, &e), 0);
        ck_ok(ts_ctrd_writer_write(w, p, n - 5, &e), e);
        ts_ctrd_writer_free(w);
        /* ...is discarded when the ref is opened with another total. */
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "ref-total", (int64_t) n / 2, dg, &w, &e), 0);
        ck_assert_int_eq(ts_ctrd_writer_offset(w), 0);
        ck_ok(ts_ctrd_writer_write(w, p, n / 2, &e), e);
        ck_assert_int_eq(ts_ctrd_writer_commit(w, NULL, &e), 0);
        ts_ctrd_writer_free(w);
        free(p);
        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_content_exists) {
        ts_ctrd *c = connect_ns("content-exists");
        ts_error *e = NULL;
        size_t n = MiB + 1;
        uint8_t *p = blob(n, 5);
        char dg[72];
        digest_of(p, n, dg);
        ck_assert_int_eq(put_blob(c, L, "blob-exists", p, n, n, NULL, &e), 0);

        /* Stored already: at open, nothing to write; with a lease, the lease holds it. */
        ck_ok(ts_ctrd_lease_create(c, "hold", NULL, NULL, &e), e);
        ts_ctrd_writer *w = (ts_ctrd_writer *) 1;
        ck_assert_int_eq(ts_ctrd_writer_open(c, "hold", "blob-exists", (int64_t) n, dg, &w, &e), 1);
        ck_assert_ptr_null(w);
        ck_assert(has_resource(c, "hold", "content", dg));

        /* Stored by another writer while this one wrote: at commit. */
        size_t m = 3 * MiB;
        uint8_t *q = blob(m, 6);
        char dq[72];
        digest_of(q, m, dq);
        ts_ctrd_writer *a = NULL, *b = NULL;
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "race-a", (int64_t) m, dq, &a, &e), 0);
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "race-b", (int64_t) m, dq, &b, &e), 0);
        ck_ok(ts_ctrd_writer_write(a, q, m, &e), e);
        ck_ok(ts_ctrd_writer_write(b, q, m, &e), e);
        ck_assert_int_eq(ts_ctrd_writer_commit(a, NULL, &e), 0);
        ck_assert_int_eq(ts_ctrd_writer_commit(b, NULL, &e), 1);
        ts_ctrd_writer_free(a);
        ts_ctrd_writer_free(b);
        free(p);
        free(q);
        ts_ctrd_free(c);
}
END_TEST

/* A blob stored in another namespace is shared: nothing to write. */
START_TEST(test_content_shared) {
        ts_ctrd *a = connect_ns("content-shared-a"), *b = connect_ns("content-shared-b");
        ts_error *e = NULL;
        size_t n = MiB + 5;
        uint8_t *p = blob(n, 10);
        char dg[72];
        digest_of(p, n, dg);
        ck_assert_int_eq(put_blob(a, L, "layer-shared", p, n, n, NULL, &e), 0);
        ck_fails(ts_ctrd_content_info(b, dg, &(ts_ctrd_blob) { 0 }, &e), e, -ENOENT, dg);

        ts_ctrd_writer *w = NULL;
        ck_assert_int_eq(ts_ctrd_writer_open(b, L, "layer-shared", (int64_t) n, dg, &w, &e), 0);
        ck_assert_int_eq(ts_ctrd_writer_offset(w), (int64_t) n);
        ck_assert_int_eq(ts_ctrd_writer_commit(w, (char *[]) { "in", "b", NULL }, &e), 0);
        ts_ctrd_writer_free(w);
        ts_ctrd_blob info = { 0 };
        ck_ok(ts_ctrd_content_info(b, dg, &info, &e), e);
        ck_assert_str_eq(ts_ctrd_label(info.labels, "in"), "b");
        ts_ctrd_blob_done(&info);
        ck_assert(has_resource(b, L, "content", dg));
        free(p);
        ts_ctrd_free(a);
        ts_ctrd_free(b);
}
END_TEST

START_TEST(test_content_mismatch) {
        ts_ctrd *c = connect_ns("content-mismatch");
        ts_error *e = NULL;
        size_t n = MiB;
        uint8_t *p = blob(n, 7);
        char wrong[72];
        digest_of(p, n - 1, wrong);

        ts_ctrd_writer *w = NULL;
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "bad-digest", (int64_t) n, wrong, &w, &e), 0);
        ck_ok(ts_ctrd_writer_write(w, p, n, &e), e);
        ck_fails(ts_ctrd_writer_commit(w, NULL, &e), e, -EBADMSG, wrong);
        ts_ctrd_writer_free(w);
        ck_fails(ts_ctrd_content_info(c, wrong, &(ts_ctrd_blob) { 0 }, &e), e, -ENOENT, wrong);

        /* Fewer bytes than the declared total. */
        char dg[72];
        digest_of(p, n, dg);
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "short", (int64_t) n, dg, &w, &e), 0);
        ck_ok(ts_ctrd_writer_write(w, p, n - 1, &e), e);
        ck_fails(ts_ctrd_writer_commit(w, NULL, &e), e, -EBADMSG, "short");
        ck_ok(ts_ctrd_writer_abort(w, &e), e);
        ts_ctrd_ingest st;
        ck_fails(ts_ctrd_content_status(c, "short", &st, &e), e, -ENOENT, "short");
        free(p);
        ts_ctrd_free(c);
}
END_TEST

typedef struct release_later {
        ts_ctrd_writer *w;
        unsigned ms;
} release_later;

static void *release_thread(void *p) {
        release_later *rl = p;
        nanosleep(&(struct timespec) { .tv_sec = rl->ms / 1000,
                                       .tv_nsec = (long) (rl->ms % 1000) * 1000000 },
                  NULL);
        ts_ctrd_writer_free(rl->w);
        return NULL;
}

START_TEST(test_content_locked) {
        ts_ctrd *c = connect_ns("content-locked");
        ts_error *e = NULL;
        size_t n = 2 * MiB;
        uint8_t *p = blob(n, 8);
        char dg[72];
        digest_of(p, n, dg);

        ts_ctrd_writer *a = NULL, *b = NULL;
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "layer-locked", (int64_t) n, dg, &a, &e), 0);
        ck_ok(ts_ctrd_writer_write(a, p, MiB, &e), e);
        /* Held for good: tried for about 2 s, then a clear error. */
        double t0 = now_s();
        ck_fails(ts_ctrd_writer_open(c, L, "layer-locked", (int64_t) n, dg, &b, &e), e, -EAGAIN,
                 "locked");
        fprintf(stderr, "locked ref given up after %.1f s\n", now_s() - t0);
        ck_assert_ptr_null(b);

        /* Let go while the second writer waits: it opens and resumes. */
        pthread_t t;
        release_later rl = { a, 300 };
        ck_assert_int_eq(pthread_create(&t, NULL, release_thread, &rl), 0);
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "layer-locked", (int64_t) n, dg, &b, &e), 0);
        pthread_join(t, NULL);
        ck_assert_int_eq(ts_ctrd_writer_offset(b), MiB);
        ck_ok(ts_ctrd_writer_write(b, p + MiB, n - MiB, &e), e);
        ck_assert_int_eq(ts_ctrd_writer_commit(b, NULL, &e), 0);
        ts_ctrd_writer_free(b);
        free(p);
        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_content_labels) {
        ts_ctrd *c = connect_ns("content-labels");
        ts_error *e = NULL;
        const char *data = "{\"schemaVersion\":2}";
        char dg[72];
        digest_of(data, strlen(data), dg);
        ck_assert_int_eq(put_blob(c, L, "manifest-x", data, strlen(data), 4,
                                  (char *[]) { "keep", "k", "drop", "d", NULL }, &e), 0);

        ts_ctrd_blob info = { 0 };
        ck_ok(ts_ctrd_content_update_labels(c, dg,
                                            (char *[]) { "containerd.io/gc.ref.content.config", "sha256:x",
                                                         "drop", "", NULL },
                                            &info, &e), e);
        ck_assert_str_eq(ts_ctrd_label(info.labels, "keep"), "k");
        ck_assert_str_eq(ts_ctrd_label(info.labels, "containerd.io/gc.ref.content.config"), "sha256:x");
        ck_assert_ptr_null(ts_ctrd_label(info.labels, "drop"));
        ts_ctrd_blob_done(&info);

        ck_fails(ts_ctrd_content_update_labels(c, dg, (char *[]) { "odd", NULL }, NULL, &e), e,
                 -EINVAL, "odd");
        ck_fails(ts_ctrd_content_update_labels(c, dg, NULL, NULL, &e), e, -EINVAL, "no labels");
        char big[5000];
        memset(big, 'v', sizeof(big) - 1);
        big[sizeof(big) - 1] = 0;
        ck_fails(ts_ctrd_content_update_labels(c, dg, (char *[]) { "big", big, NULL }, NULL, &e), e,
                 -EINVAL, "big");

        uint8_t *back = NULL;
        size_t len;
        ck_ok(ts_ctrd_content_read(c, dg, 1024, &back, &len, &e), e);
        ck_assert_str_eq((char *) back, data);
        free(back);

        ck_ok(ts_ctrd_content_delete(c, dg, &e), e);
        ck_fails(ts_ctrd_content_info(c, dg, &info, &e), e, -ENOENT, dg);
        ck_fails(ts_ctrd_content_delete(c, dg, &e), e, -ENOENT, dg);
        ck_fails(ts_ctrd_content_update_labels(c, dg, (char *[]) { "a", "b", NULL }, NULL, &e), e,
                 -ENOENT, dg);
        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_content_statuses) {
        ts_ctrd *c = connect_ns("content-statuses");
        ts_error *e = NULL;
        uint8_t *p = blob(4096, 9);
        ts_ctrd_writer *w = NULL;
        for (int i = 0; i < 2; i++) {
                char ref[32];
                snprintf(ref, sizeof(ref), "layer-st%d", i);
                ck_assert_int_eq(ts_ctrd_writer_open(c, L, ref, 8192, NULL, &w, &e), 0);
                ck_ok(ts_ctrd_writer_write(w, p, 4096, &e), e);
                ts_ctrd_writer_free(w);
        }
        ts_ctrd_ingest *v = NULL;
        size_t n = 0;
        ck_ok(ts_ctrd_content_list_statuses(c, NULL, &v, &n, &e), e);
        ck_assert_uint_eq(n, 2);
        ts_ctrd_ingest_list_free(v, n);
        ck_ok(ts_ctrd_content_list_statuses(c, (char *[]) { "ref==layer-st1", NULL }, &v, &n, &e), e);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].ref, "layer-st1");
        ck_assert_int_eq(v[0].offset, 4096);
        ck_assert_int_eq(v[0].total, 8192);
        ts_ctrd_ingest_list_free(v, n);

        ck_ok(ts_ctrd_content_abort(c, "layer-st1", &e), e);
        ck_fails(ts_ctrd_content_abort(c, "layer-st1", &e), e, -ENOENT, "layer-st1");
        ck_ok(ts_ctrd_content_list_statuses(c, NULL, &v, &n, &e), e);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].ref, "layer-st0");
        ts_ctrd_ingest_list_free(v, n);
        free(p);
        ts_ctrd_free(c);
}
END_TEST

/* ---- images ---- */

START_TEST(test_images) {
        ts_ctrd *c = connect_ns("images");
        ts_error *e = NULL;
        const char *doc = "{\"schemaVersion\":2,\"layers\":[]}";
        char dg[72];
        digest_of(doc, strlen(doc), dg);
        ts_ctrd_image img = {
                .name = "registry.test/app:1",
                .labels = (char *[]) { "a", "1", "b", "2", NULL },
                .target = { .media_type = MANIFEST, .digest = dg, .size = (int64_t) strlen(doc),
                            .annotations = (char *[]) { "org.opencontainers.image.ref.name", "1", NULL } },
        };
        ts_ctrd_image got = { 0 };
        ck_ok(ts_ctrd_image_create(c, &img, &got, &e), e);
        ck_assert_str_eq(got.name, img.name);
        ck_assert(got.created_ns > 0);
        ts_ctrd_image_done(&got);
        ck_fails(ts_ctrd_image_create(c, &img, NULL, &e), e, -EEXIST, img.name);

        ck_ok(ts_ctrd_image_get(c, img.name, &got, &e), e);
        ck_assert_str_eq(got.target.digest, dg);
        ck_assert_str_eq(got.target.media_type, MANIFEST);
        ck_assert_int_eq(got.target.size, (int64_t) strlen(doc));
        ck_assert_str_eq(ts_ctrd_label(got.target.annotations, "org.opencontainers.image.ref.name"), "1");
        ck_assert_str_eq(ts_ctrd_label(got.labels, "b"), "2");
        ts_ctrd_image_done(&got);

        /* Only the fields named change. */
        ts_ctrd_image upd = { .name = img.name, .labels = (char *[]) { "a", "one", NULL } };
        ck_ok(ts_ctrd_image_update(c, &upd, (char *[]) { "labels.a", "labels.b", NULL }, &got, &e), e);
        ck_assert_str_eq(ts_ctrd_label(got.labels, "a"), "one");
        ck_assert_ptr_null(ts_ctrd_label(got.labels, "b"));
        ck_assert_str_eq(got.target.digest, dg);
        ts_ctrd_image_done(&got);
        ck_fails(ts_ctrd_image_update(c, &upd, (char *[]) { "name", NULL }, NULL, &e), e, -EINVAL,
                 "name");
        upd.name = "registry.test/none:1";
        ck_fails(ts_ctrd_image_update(c, &upd, (char *[]) { "labels", NULL }, NULL, &e), e, -ENOENT,
                 upd.name);

        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_image_list_delete) {
        ts_ctrd *c = connect_ns("images-list");
        ts_error *e = NULL;
        char dg[72];
        digest_of("m", 1, dg);
        ts_ctrd_image img = { .name = "registry.test/app:1",
                              .labels = (char *[]) { "a", "one", NULL },
                              .target = { .media_type = MANIFEST, .digest = dg, .size = 1 } };
        ck_ok(ts_ctrd_image_create(c, &img, NULL, &e), e);
        ts_ctrd_image other = img, got = { 0 };
        other.name = "registry.test/app:2";
        other.labels = NULL;
        ck_ok(ts_ctrd_image_create(c, &other, NULL, &e), e);
        ts_ctrd_image *v = NULL;
        size_t n = 0;
        ck_ok(ts_ctrd_image_list(c, NULL, &v, &n, &e), e);
        ck_assert_uint_eq(n, 2);
        ts_ctrd_image_list_free(v, n);
        ck_ok(ts_ctrd_image_list(c, (char *[]) { "name==registry.test/app:2", NULL }, &v, &n, &e), e);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].name, other.name);
        ts_ctrd_image_list_free(v, n);
        ck_ok(ts_ctrd_image_list(c, (char *[]) { "labels.a==one", NULL }, &v, &n, &e), e);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].name, img.name);
        ts_ctrd_image_list_free(v, n);

        ts_ctrd_image bad = { .name = "registry.test/bad:1", .target = { .media_type = MANIFEST,
                                                                         .digest = "sha256:nothex",
                                                                         .size = 1 } };
        ck_fails(ts_ctrd_image_create(c, &bad, NULL, &e), e, -EINVAL, bad.name);

        ck_ok(ts_ctrd_image_delete(c, other.name, false, &e), e);
        ck_fails(ts_ctrd_image_get(c, other.name, &got, &e), e, -ENOENT, other.name);
        ck_fails(ts_ctrd_image_delete(c, other.name, true, &e), e, -ENOENT, other.name);
        ts_ctrd_free(c);
}
END_TEST

/* An image record keeps its target blob; deleting it with sync collects the blob. */
START_TEST(test_image_delete_sync) {
        ts_ctrd *c = connect_ns("images-gc");
        ts_error *e = NULL;
        const char *doc = "{\"schemaVersion\":2,\"mediaType\":\"" MANIFEST "\"}";
        char dg[72];
        digest_of(doc, strlen(doc), dg);
        ck_ok(ts_ctrd_lease_create(c, "pull", NULL, NULL, &e), e);
        ck_assert_int_eq(put_blob(c, "pull", "manifest-gc", doc, strlen(doc), 64, NULL, &e), 0);
        ts_ctrd_image img = { .name = "registry.test/gc:1",
                              .target = { .media_type = MANIFEST, .digest = dg,
                                          .size = (int64_t) strlen(doc) } };
        ck_ok(ts_ctrd_image_create(c, &img, NULL, &e), e);
        ck_ok(ts_ctrd_lease_delete(c, "pull", true, &e), e);

        ts_ctrd_blob info = { 0 };
        ck_ok(ts_ctrd_content_info(c, dg, &info, &e), e);
        ts_ctrd_blob_done(&info);
        ck_ok(ts_ctrd_image_delete(c, img.name, true, &e), e);
        ck_fails(ts_ctrd_content_info(c, dg, &info, &e), e, -ENOENT, dg);
        ts_ctrd_free(c);
}
END_TEST

/* ---- leases ---- */

START_TEST(test_leases) {
        ts_ctrd *c = connect_ns("leases");
        ts_error *e = NULL;
        char expire[TS_CTRD_RFC3339_MAX];
        ck_assert_int_eq(ts_ctrd_rfc3339((int64_t) time(NULL) + 24 * 3600, expire), 0);
        ts_ctrd_lease l = { 0 };
        ck_ok(ts_ctrd_lease_create(c, "vm-1", (char *[]) { TS_CTRD_LABEL_GC_EXPIRE, expire,
                                                           "thinsnap/vm", "1", NULL },
                                   &l, &e), e);
        ck_assert_str_eq(l.id, "vm-1");
        ck_assert_str_eq(ts_ctrd_label(l.labels, TS_CTRD_LABEL_GC_EXPIRE), expire);
        ck_assert(l.created_ns > 0);
        ts_ctrd_lease_done(&l);
        ck_fails(ts_ctrd_lease_create(c, "vm-1", NULL, NULL, &e), e, -EEXIST, "vm-1");
        ck_ok(ts_ctrd_lease_create(c, "vm-2", NULL, NULL, &e), e);

        ts_ctrd_lease *v = NULL;
        size_t n = 0;
        ck_ok(ts_ctrd_lease_list(c, NULL, &v, &n, &e), e);
        ck_assert_uint_eq(n, 3); /* with the test's own */
        ts_ctrd_lease_list_free(v, n);
        ck_ok(ts_ctrd_lease_list(c, (char *[]) { "labels.\"thinsnap/vm\"==1", NULL }, &v, &n, &e), e);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].id, "vm-1");
        ts_ctrd_lease_list_free(v, n);

        char dg[72];
        digest_of("r", 1, dg);
        ck_ok(ts_ctrd_lease_add_resource(c, "vm-1", TS_CTRD_RESOURCE_CONTENT, dg, &e), e);
        ck_ok(ts_ctrd_lease_add_resource(c, "vm-1", TS_CTRD_RESOURCE_INGESTS, "layer-x", &e), e);
        ck_ok(ts_ctrd_lease_add_resource(c, "vm-1", TS_CTRD_RESOURCE_SNAPSHOTS "native", "vm-1-root", &e), e);
        ck_fails(ts_ctrd_lease_add_resource(c, "vm-1", "containers", "x", &e), e, -EOPNOTSUPP,
                 "containers");
        ck_fails(ts_ctrd_lease_add_resource(c, "nope", TS_CTRD_RESOURCE_CONTENT, dg, &e), e, -ENOENT,
                 "nope");
        ck_assert(has_resource(c, "vm-1", "content", dg));
        ck_assert(has_resource(c, "vm-1", "ingests", "layer-x"));
        ck_assert(has_resource(c, "vm-1", "snapshots/native", "vm-1-root"));
        ck_ok(ts_ctrd_lease_delete_resource(c, "vm-1", TS_CTRD_RESOURCE_INGESTS, "layer-x", &e), e);
        ck_assert(!has_resource(c, "vm-1", "ingests", "layer-x"));

        ck_ok(ts_ctrd_lease_delete(c, "vm-1", true, &e), e);
        ck_fails(ts_ctrd_lease_delete(c, "vm-1", false, &e), e, -ENOENT, "vm-1");
        ck_fails(ts_ctrd_lease_list_resources(c, "vm-1", &(ts_ctrd_resource *) { NULL }, &n, &e), e,
                 -ENOENT, "vm-1");
        ts_ctrd_free(c);
}
END_TEST

static bool stored(ts_ctrd *c, const char *dg) {
        ts_ctrd_blob info = { 0 };
        ts_error *e = NULL;
        int r = ts_ctrd_content_info(c, dg, &info, &e);
        ck_assert_msg(r == 0 || r == -ENOENT, "info: %s", ts_error_message(e, r));
        ts_error_free(e);
        ts_ctrd_blob_done(&info);
        return r == 0;
}

/* What only a lease holds goes with it; an expired lease holds nothing. */
START_TEST(test_lease_gc) {
        ts_ctrd *c = connect_ns("leases-gc");
        ts_error *e = NULL;
        char past[TS_CTRD_RFC3339_MAX], future[TS_CTRD_RFC3339_MAX];
        ck_assert_int_eq(ts_ctrd_rfc3339((int64_t) time(NULL) - 60, past), 0);
        ck_assert_int_eq(ts_ctrd_rfc3339((int64_t) time(NULL) + 3600, future), 0);
        ck_ok(ts_ctrd_lease_create(c, "held", (char *[]) { TS_CTRD_LABEL_GC_EXPIRE, future, NULL },
                                   NULL, &e), e);
        ck_ok(ts_ctrd_lease_create(c, "expired", (char *[]) { TS_CTRD_LABEL_GC_EXPIRE, past, NULL },
                                   NULL, &e), e);
        ck_ok(ts_ctrd_lease_create(c, "gone", NULL, NULL, &e), e);
        char d1[72], d2[72], d3[72];
        const char *b1 = "held blob", *b2 = "expired blob", *b3 = "gone blob";
        digest_of(b1, strlen(b1), d1);
        digest_of(b2, strlen(b2), d2);
        digest_of(b3, strlen(b3), d3);
        ck_assert_int_eq(put_blob(c, "held", "b1", b1, strlen(b1), 4, NULL, &e), 0);
        ck_assert_int_eq(put_blob(c, "expired", "b2", b2, strlen(b2), 4, NULL, &e), 0);
        ck_assert_int_eq(put_blob(c, "gone", "b3", b3, strlen(b3), 4, NULL, &e), 0);
        ck_assert(has_resource(c, "gone", "content", d3));

        /* The sync delete runs the collection before it answers. */
        ck_ok(ts_ctrd_lease_delete(c, "gone", true, &e), e);
        ck_assert(!stored(c, d3));
        ck_assert(!stored(c, d2));
        ck_assert(stored(c, d1));
        ck_ok(ts_ctrd_lease_delete(c, "held", true, &e), e);
        ck_assert(!stored(c, d1));
        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_rfc3339) {
        char s[TS_CTRD_RFC3339_MAX];
        ck_assert_int_eq(ts_ctrd_rfc3339(0, s), 0);
        ck_assert_str_eq(s, "1970-01-01T00:00:00Z");
        ck_assert_int_eq(ts_ctrd_rfc3339(1747735200, s), 0);
        ck_assert_str_eq(s, "2025-05-20T10:00:00Z");
        ck_assert_int_eq(ts_ctrd_rfc3339(-1, s), -EINVAL);
        ck_assert_int_eq(ts_ctrd_rfc3339(INT64_MAX, s), -EINVAL);
}
END_TEST

/* ---- snapshots ---- */

static void write_file(const char *dir, const char *name, const char *text) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "we");
        ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
        fputs(text, f);
        ck_assert_int_eq(fclose(f), 0);
}

static char *read_text(const char *dir, const char *name) {
        char path[512], buf[256];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        return strdup(buf);
}

/* native hands out one bind mount of a directory. */
static const char *bind_source(const ts_ctrd_mounts *m) {
        ck_assert_uint_eq(m->n, 1);
        ck_assert_str_eq(m->v[0].type, "bind");
        return m->v[0].source;
}

/* Under lease "work": "base" committed with base.txt, and on it the active
 * "child" and the view "look". */
static void make_tree(ts_ctrd *c) {
        ts_error *e = NULL;
        ts_ctrd_mounts *m = NULL;
        ck_ok(ts_ctrd_lease_create(c, "work", NULL, NULL, &e), e);
        ck_ok(ts_ctrd_snapshot_prepare(c, "work", "native", "base-active", NULL,
                                       (char *[]) { "l", "1", NULL }, &m, &e), e);
        write_file(bind_source(m), "base.txt", "base\n");
        m = ts_ctrd_mounts_free(m);
        ck_assert(has_resource(c, "work", "snapshots/native", "base-active"));
        ck_fails(ts_ctrd_snapshot_prepare(c, NULL, "native", "base-active", NULL, NULL, &m, &e), e,
                 -EEXIST, "base-active");
        ck_ok(ts_ctrd_snapshot_commit(c, "work", "native", "base", "base-active",
                                      (char *[]) { "containerd.io/snapshot.ref", "base", NULL }, &e), e);
        ck_assert(has_resource(c, "work", "snapshots/native", "base"));
        ck_ok(ts_ctrd_snapshot_prepare(c, "work", "native", "child", "base", NULL, &m, &e), e);
        char *text = read_text(bind_source(m), "base.txt");
        ck_assert_str_eq(text, "base\n");
        free(text);
        m = ts_ctrd_mounts_free(m);
        ck_ok(ts_ctrd_snapshot_view(c, "work", "native", "look", "base", NULL, &m, &e), e);
        ts_ctrd_mounts_free(m);
}

START_TEST(test_snapshots) {
        ts_ctrd *c = connect_ns("snapshots");
        ts_error *e = NULL;
        ts_ctrd_mounts *m = NULL;
        make_tree(c);
        ts_ctrd_snapshot s = { 0 };
        ck_fails(ts_ctrd_snapshot_stat(c, "native", "base-active", &s, &e), e, -ENOENT, "base-active");
        ck_ok(ts_ctrd_snapshot_stat(c, "native", "base", &s, &e), e);
        ck_assert_int_eq(s.kind, TS_CTRD_SNAPSHOT_COMMITTED);
        ck_assert_ptr_null(s.parent);
        ck_assert_str_eq(ts_ctrd_label(s.labels, "containerd.io/snapshot.ref"), "base");
        ts_ctrd_snapshot_done(&s);
        ck_ok(ts_ctrd_snapshot_stat(c, "native", "look", &s, &e), e);
        ck_assert_int_eq(s.kind, TS_CTRD_SNAPSHOT_VIEW);
        ck_assert_str_eq(s.parent, "base");
        ts_ctrd_snapshot_done(&s);
        ck_ok(ts_ctrd_snapshot_stat(c, "native", "child", &s, &e), e);
        ck_assert_int_eq(s.kind, TS_CTRD_SNAPSHOT_ACTIVE);
        ts_ctrd_snapshot_done(&s);

        ck_ok(ts_ctrd_snapshot_mounts(c, "native", "child", &m, &e), e);
        bind_source(m);
        m = ts_ctrd_mounts_free(m);
        ck_fails(ts_ctrd_snapshot_prepare(c, NULL, "native", "orphan", "nothing", NULL, &m, &e), e,
                 -ENOENT, "orphan");
        ck_fails(ts_ctrd_snapshot_stat(c, "nosuch", "base", &s, &e), e, -EINVAL, "nosuch");

        int64_t size = 0, inodes = 0;
        ck_ok(ts_ctrd_snapshot_usage(c, "native", "base", &size, &inodes, &e), e);
        ck_assert(size >= 5 && inodes >= 1);
        ck_ok(ts_ctrd_snapshot_update_labels(c, "native", "base", (char *[]) { "x", "y", NULL }, &s,
                                             &e), e);
        ck_assert_str_eq(ts_ctrd_label(s.labels, "x"), "y");
        ck_assert_str_eq(ts_ctrd_label(s.labels, "containerd.io/snapshot.ref"), "base");
        ts_ctrd_snapshot_done(&s);
        ck_ok(ts_ctrd_snapshot_update_labels(c, "native", "base",
                                             (char *[]) { "containerd.io/snapshot.ref", "", NULL },
                                             NULL, &e), e);
        ck_ok(ts_ctrd_snapshot_stat(c, "native", "base", &s, &e), e);
        ck_assert_str_eq(ts_ctrd_label(s.labels, "x"), "y");
        ck_assert_ptr_null(ts_ctrd_label(s.labels, "containerd.io/snapshot.ref"));
        ts_ctrd_snapshot_done(&s);
        ts_ctrd_free(c);
}
END_TEST

START_TEST(test_snapshot_list_remove) {
        ts_ctrd *c = connect_ns("snapshots-list");
        ts_error *e = NULL;
        make_tree(c);
        ts_ctrd_snapshot *v = NULL;
        size_t n = 0;
        ck_ok(ts_ctrd_snapshot_list(c, "native", NULL, &v, &n, &e), e);
        ck_assert_uint_eq(n, 3);
        ts_ctrd_snapshot_list_free(v, n);
        ck_ok(ts_ctrd_snapshot_list(c, "native", (char *[]) { "parent==base", "name==nothing", NULL },
                                    &v, &n, &e), e);
        ck_assert_uint_eq(n, 2);
        ck_assert_str_eq(v[0].parent, "base");
        ck_assert_str_eq(v[1].parent, "base");
        ts_ctrd_snapshot_list_free(v, n);

        ck_fails(ts_ctrd_snapshot_remove(c, "native", "base", &e), e, -EBUSY, "base");
        ck_ok(ts_ctrd_snapshot_remove(c, "native", "child", &e), e);
        ck_fails(ts_ctrd_snapshot_remove(c, "native", "child", &e), e, -ENOENT, "child");
        /* The lease holds what is left; deleting it with sync removes them. */
        ck_ok(ts_ctrd_lease_delete(c, "work", true, &e), e);
        ck_ok(ts_ctrd_snapshot_list(c, "native", NULL, &v, &n, &e), e);
        ck_assert_uint_eq(n, 0);
        ts_ctrd_snapshot_list_free(v, n);
        ts_ctrd_free(c);
}
END_TEST

/* ---- diff ---- */

/* One ustar header of an entry: type '0' file, '5' directory. */
static void tar_header(uint8_t *h, const char *name, char type, size_t size) {
        memset(h, 0, 512);
        snprintf((char *) h, 100, "%s", name);
        snprintf((char *) h + 100, 8, "%07o", type == '5' ? 0755 : 0644);
        snprintf((char *) h + 108, 8, "%07o", 0);
        snprintf((char *) h + 116, 8, "%07o", 0);
        snprintf((char *) h + 124, 12, "%011o", (unsigned) size);
        snprintf((char *) h + 136, 12, "%011o", 1700000000);
        h[156] = (uint8_t) type;
        memcpy(h + 257, "ustar", 6);
        memcpy(h + 263, "00", 2);
        memset(h + 148, ' ', 8);
        unsigned sum = 0;
        for (int i = 0; i < 512; i++)
                sum += h[i];
        snprintf((char *) h + 148, 8, "%06o", sum);
}

/* A tar of etc/ and etc/hello.txt holding text; *ret_len bytes. */
static uint8_t *make_tar(const char *text, size_t *ret_len) {
        size_t tl = strlen(text), data = (tl + 511) / 512 * 512;
        size_t n = 512 + 512 + data + 1024;
        uint8_t *t = calloc(1, n);
        ck_assert_ptr_nonnull(t);
        tar_header(t, "etc/", '5', 0);
        tar_header(t + 512, "etc/hello.txt", '0', tl);
        memcpy(t + 1024, text, tl);
        *ret_len = n;
        return t;
}

static uint8_t *gzip(const uint8_t *p, size_t n, size_t *ret_len) {
        z_stream z = { 0 };
        ck_assert_int_eq(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
        size_t cap = deflateBound(&z, n);
        uint8_t *out = malloc(cap);
        ck_assert_ptr_nonnull(out);
        z.next_in = (uint8_t *) p;
        z.avail_in = (uInt) n;
        z.next_out = out;
        z.avail_out = (uInt) cap;
        ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
        *ret_len = z.total_out;
        deflateEnd(&z);
        return out;
}

START_TEST(test_diff_apply) {
        ts_ctrd *c = connect_ns("diff");
        ts_error *e = NULL;
        size_t tar_len, gz_len;
        uint8_t *tar = make_tar("hello from a layer\n", &tar_len);
        uint8_t *gz = gzip(tar, tar_len, &gz_len);
        char diff_id[72], dg[72];
        digest_of(tar, tar_len, diff_id);
        digest_of(gz, gz_len, dg);
        ck_ok(ts_ctrd_lease_create(c, "unpack", NULL, NULL, &e), e);
        ck_assert_int_eq(put_blob(c, "unpack", "layer-gz", gz, gz_len, gz_len, NULL, &e), 0);

        ts_ctrd_mounts *m = NULL;
        char key[96];
        snprintf(key, sizeof(key), "extract-1 %s", diff_id);
        ck_ok(ts_ctrd_snapshot_prepare(c, "unpack", "native", key, NULL,
                                       (char *[]) { "containerd.io/snapshot.ref", diff_id, NULL }, &m, &e), e);
        ts_ctrd_descriptor layer = { .media_type = LAYER_GZIP, .digest = dg, .size = (int64_t) gz_len };
        ts_ctrd_descriptor applied = { 0 };
        /* A payload for a processor of another media type: carried, not used. */
        ts_ctrd_payload pl = { "io.containerd.processor.v1.test", "types.thinsnap.test/Options",
                               "\x08\x01", 2 };
        ck_ok(ts_ctrd_diff_apply(c, &layer, m, &pl, 1, &applied, &e), e);
        ck_assert_str_eq(applied.digest, diff_id);
        ck_assert_int_eq(applied.size, (int64_t) tar_len);
        ck_assert_str_eq(applied.media_type, "application/vnd.oci.image.layer.v1.tar");
        ts_ctrd_descriptor_done(&applied);
        char *text = read_text(bind_source(m), "etc/hello.txt");
        ck_assert_str_eq(text, "hello from a layer\n");
        free(text);
        ck_ok(ts_ctrd_snapshot_commit(c, "unpack", "native", diff_id, key, NULL, &e), e);

        /* A blob that is not stored; a media type no applier takes. */
        char missing[72];
        digest_of("none", 4, missing);
        layer.digest = missing;
        ck_fails(ts_ctrd_diff_apply(c, &layer, m, NULL, 0, &applied, &e), e, -ENOENT, missing);
        layer.digest = dg;
        layer.media_type = "application/x-not-a-layer";
        /* containerd 1.6, 1.7 and 2.1 all answer UNKNOWN here. */
        ck_fails(ts_ctrd_diff_apply(c, &layer, m, NULL, 0, &applied, &e), e, -EPROTO,
                 layer.media_type);
        ck_fails(ts_ctrd_diff_apply(c, &(ts_ctrd_descriptor) { 0 }, m, NULL, 0, &applied, &e), e,
                 -EINVAL, "layer digest");
        ts_ctrd_mounts_free(m);
        ck_ok(ts_ctrd_lease_delete(c, "unpack", true, &e), e);
        free(tar);
        free(gz);
        ts_ctrd_free(c);
}
END_TEST

/* ---- containerd going away ---- */

START_TEST(test_unavailable) {
        ctrd_daemon own;
        ts_error *e = NULL;
        ts_ctrd *c = NULL;
        ck_assert_int_eq(ctrd_daemon_init(&own, D.bin), 0);
        ck_assert_int_eq(ctrd_daemon_start(&own), 0);
        ck_ok(ts_ctrd_connect(own.sock, "gone", NULL, &c, &e), e);
        ck_ok(ts_ctrd_lease_create(c, "before", NULL, NULL, &e), e);

        ctrd_daemon_stop(&own);
        ck_fails(ts_ctrd_lease_create(c, "during", NULL, NULL, &e), e, -ECONNREFUSED, own.sock);
        ts_ctrd *c2 = NULL;
        ck_fails(ts_ctrd_connect(own.sock, "gone", NULL, &c2, &e), e, -ECONNREFUSED, own.sock);

        /* Back again: the same client connects anew. */
        ck_assert_int_eq(ctrd_daemon_start(&own), 0);
        ts_ctrd_lease *v = NULL;
        size_t n = 0;
        ck_ok(ts_ctrd_lease_list(c, NULL, &v, &n, &e), e);
        ck_assert_uint_eq(n, 1);
        ck_assert_str_eq(v[0].id, "before");
        ts_ctrd_lease_list_free(v, n);
        ts_ctrd_free(c);
        ctrd_daemon_done(&own);
}
END_TEST

/* kill() returns before every thread of the target has stopped. */
static void wait_stopped(pid_t pid) {
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        for (int i = 0; i < 500; i++) {
                FILE *f = fopen(path, "re");
                ck_assert_ptr_nonnull(f);
                size_t k = fread(buf, 1, sizeof(buf) - 1, f);
                fclose(f);
                buf[k] = 0;
                const char *st = strrchr(buf, ')');
                if (st && st[1] == ' ' && st[2] == 'T')
                        return;
                nanosleep(&(struct timespec) { .tv_nsec = 2000000 }, NULL);
        }
        ck_abort_msg("containerd %d did not stop", (int) pid);
}

/* A containerd that stops answering (SIGSTOP): calls and streams time out. */
START_TEST(test_timeouts) {
        ctrd_daemon own;
        ts_error *e = NULL;
        ts_ctrd *c = NULL;
        ts_ctrd_options o = { .timeout_ns = 300000000, .idle_timeout_ns = 300000000 };
        ck_assert_int_eq(ctrd_daemon_init(&own, D.bin), 0);
        ck_assert_int_eq(ctrd_daemon_start(&own), 0);
        ck_ok(ts_ctrd_connect(own.sock, "hang", &o, &c, &e), e);
        ck_ok(ts_ctrd_lease_create(c, L, NULL, NULL, &e), e);
        size_t n = 16 * MiB;
        uint8_t *p = blob(n, 11);
        ts_ctrd_writer *w = NULL;
        ck_assert_int_eq(ts_ctrd_writer_open(c, L, "layer-hang", (int64_t) n, NULL, &w, &e), 0);

        ck_assert_int_eq(kill(own.pid, SIGSTOP), 0);
        wait_stopped(own.pid);
        ck_fails(ts_ctrd_lease_list(c, NULL, &(ts_ctrd_lease *) { NULL }, &(size_t) { 0 }, &e), e,
                 -ETIMEDOUT, own.sock);
        ck_fails(ts_ctrd_writer_write(w, p, n, &e), e, -ETIMEDOUT, "layer-hang");
        ts_ctrd_writer_free(w);
        ck_assert_int_eq(kill(own.pid, SIGCONT), 0);

        /* The connection is still good once containerd answers again. */
        ts_ctrd_lease *v = NULL;
        size_t nv = 0;
        ck_ok(ts_ctrd_lease_list(c, NULL, &v, &nv, &e), e);
        ck_assert_uint_eq(nv, 1);
        ts_ctrd_lease_list_free(v, nv);
        free(p);
        ts_ctrd_free(c);
        ctrd_daemon_done(&own);
}
END_TEST

/* ---- several threads on one client ---- */

typedef struct worker {
        ts_ctrd *c;
        int id;
        int r;
} worker;

static void *work(void *p) {
        worker *w = p;
        size_t n = 2 * MiB + (size_t) w->id;
        uint8_t *b = blob(n, 100 + (uint32_t) w->id), *back = NULL;
        char ref[32], dg[72];
        ts_error *e = NULL;
        size_t len = 0;
        snprintf(ref, sizeof(ref), "layer-t%d", w->id);
        digest_of(b, n, dg);
        for (int i = 0; i < 3 && w->r >= 0; i++) {
                w->r = put_blob(w->c, L, ref, b, n, 256 * 1024, NULL, &e);
                if (w->r >= 0)
                        w->r = ts_ctrd_content_read(w->c, dg, n, &back, &len, &e);
                if (w->r >= 0 && (len != n || memcmp(back, b, n) != 0))
                        w->r = -EBADMSG;
                free(back);
                back = NULL;
                if (w->r >= 0)
                        w->r = ts_ctrd_content_delete(w->c, dg, &e);
        }
        if (w->r < 0)
                fprintf(stderr, "worker %d: %s\n", w->id, ts_error_message(e, w->r));
        ts_error_free(e);
        free(b);
        return NULL;
}

START_TEST(test_threads) {
        ts_ctrd *c = connect_ns("threads");
        pthread_t t[6];
        worker w[6];
        for (int i = 0; i < 6; i++) {
                w[i] = (worker) { c, i, 0 };
                ck_assert_int_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
        }
        for (int i = 0; i < 6; i++) {
                pthread_join(t[i], NULL);
                ck_assert_int_eq(w[i].r, 0);
        }
        ts_ctrd_free(c);
}
END_TEST

static Suite *ctrd_suite(void) {
        Suite *s = suite_create("ctrd");
        TCase *tc = tcase_create("containerd");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_connect_errors);
        tcase_add_test(tc, test_content_write_read);
        tcase_add_test(tc, test_content_ranges);
        tcase_add_test(tc, test_content_resume);
        tcase_add_test(tc, test_content_other_total);
        tcase_add_test(tc, test_content_exists);
        tcase_add_test(tc, test_content_shared);
        tcase_add_test(tc, test_content_mismatch);
        tcase_add_test(tc, test_content_locked);
        tcase_add_test(tc, test_content_labels);
        tcase_add_test(tc, test_content_statuses);
        tcase_add_test(tc, test_images);
        tcase_add_test(tc, test_image_list_delete);
        tcase_add_test(tc, test_image_delete_sync);
        tcase_add_test(tc, test_leases);
        tcase_add_test(tc, test_lease_gc);
        tcase_add_test(tc, test_rfc3339);
        tcase_add_test(tc, test_snapshots);
        tcase_add_test(tc, test_snapshot_list_remove);
        tcase_add_test(tc, test_diff_apply);
        tcase_add_test(tc, test_unavailable);
        tcase_add_test(tc, test_timeouts);
        tcase_add_test(tc, test_threads);
        suite_add_tcase(s, tc);
        return s;
}

static void print_log_tail(const ctrd_daemon *d) {
        char path[160], line[1024];
        snprintf(path, sizeof(path), "%s/containerd.log", d->dir);
        FILE *f = fopen(path, "re");
        if (!f)
                return;
        fprintf(stderr, "---- containerd log (errors) ----\n");
        while (fgets(line, sizeof(line), f))
                if (strstr(line, "level=error"))
                        fputs(line, stderr);
        fclose(f);
}

int main(void) {
        const char *bin = getenv("TS_CONTAINERD");
        if (!bin || !*bin)
                bin = "/usr/bin/containerd";
        if (geteuid() != 0) {
                fprintf(stderr, "test-ctrd: needs root to run containerd; skipped\n");
                return 77;
        }
        int r = ctrd_daemon_init(&D, bin);
        if (r >= 0)
                r = ctrd_daemon_start(&D);
        if (r < 0) {
                fprintf(stderr, "test-ctrd: cannot start %s: %s\n", bin, strerror(-r));
                print_log_tail(&D);
                ctrd_daemon_done(&D);
                return EXIT_FAILURE;
        }
        fprintf(stderr, "test-ctrd: containerd %d.%d (%s) on %s\n", D.major, D.minor, bin, D.sock);
        SRunner *sr = srunner_create(ctrd_suite());
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        if (failed)
                print_log_tail(&D);
        ctrd_daemon_done(&D);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
