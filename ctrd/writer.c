#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "containerd/services/content/v1/content.pb-c.h"
#include "ctrd/content.h"
#include "ctrd/ctrd-internal.h"
#include "ctrd/writer.h"

#define CHUNK (1u << 20)
/* Messages sent and not yet answered; bounds the memory queued for the
 * socket to WINDOW MiB while keeping containerd busy. */
#define WINDOW 4
#define LOCK_WAIT_NS 2000000000ull

typedef Containerd__Services__Content__V1__WriteContentRequest PbReq;
typedef Containerd__Services__Content__V1__WriteContentResponse PbResp;

struct ts_ctrd_writer {
        ts_ctrd *c;
        ts_ctrd_call *call;
        char *ref, *expected;
        int64_t total;
        int64_t sent;            /* bytes sent (the next write's offset) */
        int64_t want[WINDOW + 1]; /* offsets the unanswered messages must answer with */
        unsigned head, pending;
        int failed; /* -errno once the stream broke */
};

int64_t ts_ctrd_writer_offset(const ts_ctrd_writer *w) {
        return w->sent;
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static int recv_resp(ts_ctrd_writer *w, PbResp **ret, ts_error **err) {
        int r = ts_ctrd_call_recv(w->call, &containerd__services__content__v1__write_content_response__descriptor,
                                  (ProtobufCMessage **) ret, err);
        if (r == 0)
                r = ts_error_setf_plain(err, EBADMSG, "the write stream ended early");
        return r < 0 ? r : 0;
}

/* Takes the oldest answer and checks its offset. */
static int recv_one(ts_ctrd_writer *w, ts_error **err) {
        _cleanup_message_ PbResp *m = NULL;
        int r = recv_resp(w, &m, err);
        if (r < 0)
                return r;
        int64_t want = w->want[w->head];
        w->head = (w->head + 1) % TS_ARRAY_SIZE(w->want);
        w->pending--;
        if (m->offset != want)
                return ts_error_setf_plain(err, ERANGE, "containerd is at offset %lld, expected %lld",
                                           (long long) m->offset, (long long) want);
        return 0;
}

static int send_req(ts_ctrd_writer *w, const PbReq *req, ts_error **err) {
        int r = ts_ctrd_call_send(w->call, &req->base, err);
        if (r < 0)
                return r;
        w->want[(w->head + w->pending) % TS_ARRAY_SIZE(w->want)] = w->sent;
        w->pending++;
        return 0;
}

/* A ref locked by another writer: UNAVAILABLE "ref ... locked ...". */
static bool locked(const ts_ctrd_call *call) {
        const char *msg;
        return ts_ctrd_call_code(call, &msg) == TS_RPC_UNAVAILABLE && strstr(msg, " locked");
}

/* One attempt: start the stream and STAT. Returns 0, 1 (stored already),
 * -EAGAIN (locked; *err untouched), or the failure. */
static int try_open(ts_ctrd_writer *w, const char *lease, ts_error **err) {
        _cleanup_error_ ts_error *e = NULL;
        _cleanup_message_ PbResp *m = NULL;
        PbReq req = CONTAINERD__SERVICES__CONTENT__V1__WRITE_CONTENT_REQUEST__INIT;

        w->call = ts_ctrd_call_free(w->call);
        int r = ts_ctrd_call_start(w->c, lease, "/containerd.services.content.v1.Content/Write",
                                   TS_CTRD_STREAM, &w->call, err);
        if (r < 0)
                return r;
        req.action = CONTAINERD__SERVICES__CONTENT__V1__WRITE_ACTION__STAT;
        req.ref = w->ref;
        req.total = w->total;
        req.expected = w->expected ? w->expected : "";
        r = ts_ctrd_call_send(w->call, &req.base, &e);
        if (r >= 0)
                r = recv_resp(w, &m, &e);
        if (r >= 0) {
                w->sent = m->offset;
                return 0;
        }
        if (ts_ctrd_call_code(w->call, NULL) == TS_RPC_ALREADY_EXISTS)
                return 1;
        if (locked(w->call))
                return -EAGAIN;
        return ts_error_move(err, &e);
}

/* An ingest with another total is not resumed by containerd, but its data
 * file is kept and would be written over: discard it. */
static int discard_other_total(ts_ctrd_writer *w, ts_error **err) {
        _cleanup_error_ ts_error *e = NULL;
        ts_ctrd_ingest st = { 0 };
        int r = ts_ctrd_content_status(w->c, w->ref, &st, &e);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return ts_error_move(err, &e);
        bool other = w->total > 0 && st.total > 0 && st.total != w->total;
        ts_ctrd_ingest_done(&st);
        return other ? ts_ctrd_content_abort(w->c, w->ref, err) : 0;
}

static int open_retrying(ts_ctrd_writer *w, const char *lease, ts_error **err) {
        uint64_t give_up = now_ns() + LOCK_WAIT_NS;
        unsigned delay_ms = 16;
        unsigned seed = (unsigned) now_ns();
        for (;;) {
                int r = try_open(w, lease, err);
                if (r != -EAGAIN)
                        return r;
                if (now_ns() >= give_up) {
                        const char *msg;
                        ts_ctrd_call_code(w->call, &msg);
                        return ts_error_setf_plain(err, EAGAIN,
                                                   "another writer holds the ref (waited 2 s): %s", msg);
                }
                /* Randomized so that writers waiting on one ref do not retry in step. */
                uint64_t ns = ((uint64_t) rand_r(&seed) % delay_ms + 1) * 1000000u, left = give_up - now_ns();
                if (ns > left)
                        ns = left;
                nanosleep(&(struct timespec) { .tv_sec = (time_t) (ns / 1000000000u),
                                               .tv_nsec = (long) (ns % 1000000000u) },
                          NULL);
                if (delay_ms < 512)
                        delay_ms *= 2;
        }
}

int ts_ctrd_writer_open(ts_ctrd *c, const char *lease, const char *ref, int64_t total,
                        const char *expected, ts_ctrd_writer **ret, ts_error **err) {
        int r = ts_ctrd_need(ref, "ingest ref", err);
        if (r < 0)
                return r;
        if (total < 0)
                return ts_error_setf_plain(err, EINVAL, "content write %s: negative total %lld",
                                           ref, (long long) total);
        _cleanup_(ts_ctrd_writer_freep) ts_ctrd_writer *w = calloc(1, sizeof(*w));
        if (!w || !(w->ref = strdup(ref)) || ts_ctrd_strdup(expected, &w->expected) < 0)
                return ts_error_set(err, ENOMEM, "content write %s", ref);
        w->c = c;
        w->total = total;
        r = discard_other_total(w, err);
        if (r >= 0)
                r = open_retrying(w, lease, err);
        if (r < 0) {
                w->failed = r;
                return ts_error_prefix(err, r, "content write %s", ref);
        }
        if (r == 1) {
                w->failed = -EEXIST;
                *ret = NULL;
                return 1;
        }
        *ret = TAKE_PTR(w);
        return 0;
}

static int check_usable(ts_ctrd_writer *w, ts_error **err) {
        if (w->failed)
                return ts_error_setf_plain(err, -w->failed,
                                           "content write %s: the writer failed or finished before",
                                           w->ref);
        return 0;
}

int ts_ctrd_writer_write(ts_ctrd_writer *w, const void *p, size_t n, ts_error **err) {
        PbReq req = CONTAINERD__SERVICES__CONTENT__V1__WRITE_CONTENT_REQUEST__INIT;
        int r = check_usable(w, err);
        if (r < 0)
                return r;
        if (w->total > 0 && (n > (uint64_t) (w->total - w->sent)))
                return ts_error_setf_plain(err, EFBIG, "content write %s: %zu bytes at %lld go past the total %lld",
                                           w->ref, n, (long long) w->sent, (long long) w->total);
        req.action = CONTAINERD__SERVICES__CONTENT__V1__WRITE_ACTION__WRITE;
        while (n > 0) {
                size_t k = n < CHUNK ? n : CHUNK;
                if (w->pending == WINDOW && (r = recv_one(w, err)) < 0)
                        break;
                req.offset = w->sent;
                req.data = (ProtobufCBinaryData) { .len = k, .data = (uint8_t *) p };
                w->sent += (int64_t) k;
                if ((r = send_req(w, &req, err)) < 0)
                        break;
                p = (const uint8_t *) p + k;
                n -= k;
        }
        if (r < 0) {
                w->failed = r;
                return ts_error_prefix(err, r, "content write %s", w->ref);
        }
        return 0;
}

/* Reads the answers still due, the COMMIT's, and the stream to its end
 * (containerd sends the last answer once more before the trailers). */
static int commit_answer(ts_ctrd_writer *w, ts_error **err) {
        _cleanup_message_ PbResp *m = NULL;
        int r;
        while (w->pending > 1)
                if ((r = recv_one(w, err)) < 0)
                        return r;
        r = recv_resp(w, &m, err);
        if (r < 0)
                return r;
        w->pending = 0;
        if (w->total > 0 && m->offset != w->total)
                return ts_error_setf_plain(err, EBADMSG, "committed %lld bytes, expected %lld",
                                           (long long) m->offset, (long long) w->total);
        if (w->expected && strcmp(m->digest, w->expected) != 0)
                return ts_error_setf_plain(err, EBADMSG, "committed %s, expected %s", m->digest,
                                           w->expected);
        for (;;) {
                _cleanup_message_ PbResp *again = NULL;
                r = ts_ctrd_call_recv(w->call, &containerd__services__content__v1__write_content_response__descriptor,
                                      (ProtobufCMessage **) &again, err);
                if (r <= 0)
                        return r;
        }
}

int ts_ctrd_writer_commit(ts_ctrd_writer *w, char *const *labels, ts_error **err) {
        PbReq req = CONTAINERD__SERVICES__CONTENT__V1__WRITE_CONTENT_REQUEST__INIT;
        _cleanup_(ts_ctrd_pbmap_done) ts_ctrd_pbmap map = { 0 };
        _cleanup_error_ ts_error *e = NULL;
        const char *msg;

        int r = check_usable(w, err);
        if (r < 0)
                return r;
        r = ts_ctrd_pbmap_build(&containerd__services__content__v1__write_content_request__labels_entry__descriptor,
                                labels, "labels", &map, err);
        if (r < 0)
                return ts_error_prefix(err, r, "content commit %s", w->ref);
        req.action = CONTAINERD__SERVICES__CONTENT__V1__WRITE_ACTION__COMMIT;
        req.offset = w->sent;
        req.total = w->total;
        req.expected = w->expected ? w->expected : "";
        req.n_labels = map.n;
        req.labels = (Containerd__Services__Content__V1__WriteContentRequest__LabelsEntry **) map.entries;
        r = send_req(w, &req, &e);
        if (r >= 0) {
                ts_ctrd_call_close_send(w->call);
                r = commit_answer(w, &e);
        }
        w->failed = r < 0 ? r : -EALREADY; /* finished either way */
        if (r >= 0)
                return 0;
        switch (ts_ctrd_call_code(w->call, &msg)) {
        case TS_RPC_ALREADY_EXISTS:
                return 1;
        case TS_RPC_FAILED_PRECONDITION: /* size or digest not the declared ones */
                return ts_error_setf_plain(err, EBADMSG, "content commit %s: %s", w->ref, msg);
        default:
                ts_error_move(err, &e);
                return ts_error_prefix(err, r, "content commit %s", w->ref);
        }
}

/* Ends the request stream and reads it to its end, so that containerd has
 * written everything sent and let go of the ref when this returns. */
static void finish_stream(ts_ctrd_writer *w) {
        ProtobufCMessage *m = NULL;
        if (!w->call)
                return;
        if (!w->failed) {
                ts_ctrd_call_close_send(w->call);
                while (ts_ctrd_call_recv(w->call, &containerd__services__content__v1__write_content_response__descriptor,
                                         &m, NULL) > 0)
                        protobuf_c_message_free_unpacked(m, NULL);
        }
        w->call = ts_ctrd_call_free(w->call);
}

ts_ctrd_writer *ts_ctrd_writer_free(ts_ctrd_writer *w) {
        if (!w)
                return NULL;
        finish_stream(w);
        free(w->ref);
        free(w->expected);
        free(w);
        return NULL;
}

int ts_ctrd_writer_abort(ts_ctrd_writer *w, ts_error **err) {
        finish_stream(w);
        int r = ts_ctrd_content_abort(w->c, w->ref, err);
        ts_ctrd_writer_free(w);
        return r;
}
