/* Pull: the image's documents and blobs from its registry into
 * containerd's content store, under the warm's lease, with the labels
 * containerd's own client sets; layers download in parallel (at most
 * max_downloads at once) while the first ones are already unpacked. */
#include "warm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/strv.h"
#include "ctrd/content.h"
#include "ctrd/writer.h"
#include "oci/platform.h"
#include "oci/ref.h"
#include "registry/registry.h"

static void source_done(prov_source *s) {
        ts_registry_free(s->reg);
        ts_ref_free(s->ref);
        free(s->label_key);
        *s = (prov_source) { 0 };
}

static int source_open(prov_job *j, prov_source *s, ts_error **err) {
        int r = ts_ref_parse(j->name, &s->ref, err);
        if (r < 0)
                return r;
        s->repo = s->ref->path;
        if (asprintf(&s->label_key, LABEL_DIST_SOURCE "%s", s->ref->domain) < 0) {
                s->label_key = NULL;
                return -ENOMEM;
        }
        s->labels[0] = s->label_key;
        s->labels[1] = s->repo;
        ts_registry_options o = {
                .plain_http = j->plain_http,
                .ca_pem = j->ca_pem,
                .ca_pem_len = j->ca_pem_len,
                .username = j->username,
                .password = j->password,
                .docker_config = j->p->docker_config,
                .timeout_s = j->p->registry_timeout_s,
        };
        return ts_registry_new(s->ref->domain, &o, &s->reg, err);
}

/* ---- blobs ---- */

/* Layers download on worker threads; unpack waits for each in turn. */
typedef struct downloads {
        prov_job *j;
        prov_source *s;
        const ts_oci_manifest *m;
        pthread_mutex_t lock;
        pthread_cond_t done;
        size_t next;    /* next layer to start */
        int *result;    /* per layer: 1 running or queued, 0 stored, -errno */
        char **errors;  /* per layer: the message of a failure */
        bool stop;
        pthread_t *threads;
        unsigned n_threads;
} downloads;

/* libcurl hands over a blob in pieces of 16 KiB: each would be a Content.Write
 * message of its own, answered by containerd. They are gathered into 1 MiB
 * writes, the messages containerd's own client sends. */
#define SINK_CHUNK (1u << 20)

typedef struct layer_sink {
        downloads *dl;
        size_t i;
        ts_ctrd_writer *w;
        uint64_t done;
        uint8_t *buf; /* SINK_CHUNK bytes; len of them gathered */
        size_t len;
} layer_sink;

static int sink_send(layer_sink *ls, const void *p, size_t n, ts_error **err) {
        int r = ts_ctrd_writer_write(ls->w, p, n, err);
        if (r < 0)
                return r;
        ls->done += n;
        prov_job_blob_progress(ls->dl->j, ls->i, ls->done, false);
        return 0;
}

static int sink_flush(layer_sink *ls, ts_error **err) {
        int r = ls->len ? sink_send(ls, ls->buf, ls->len, err) : 0;
        ls->len = 0;
        return r;
}

static int layer_write(void *userdata, const void *p, size_t n) {
        layer_sink *ls = userdata;
        if (prov_job_cancelled(ls->dl->j) || __atomic_load_n(&ls->dl->stop, __ATOMIC_RELAXED))
                return -ECANCELED;
        if (ls->len == 0 && n >= SINK_CHUNK)
                return sink_send(ls, p, n, NULL);
        while (n > 0) {
                size_t k = SINK_CHUNK - ls->len < n ? SINK_CHUNK - ls->len : n;
                memcpy(ls->buf + ls->len, p, k);
                ls->len += k;
                p = (const uint8_t *) p + k;
                n -= k;
                int r = ls->len == SINK_CHUNK ? sink_flush(ls, NULL) : 0;
                if (r < 0)
                        return r;
        }
        return 0;
}

/* One try: resumes the ingest where containerd has it. Returns 1 when the
 * blob is stored already, 0, or -errno; *ret_resumed tells whether it
 * continued an earlier try's bytes. */
static int download_try(downloads *dl, size_t i, const char *ref, bool *ret_resumed,
                        ts_error **err) {
        const ts_oci_descriptor *d = &dl->m->layers[i];
        layer_sink ls = { .dl = dl, .i = i };
        int r = ts_ctrd_writer_open(dl->j->c, dl->j->lease, ref, d->size, d->digest, &ls.w, err);
        if (r != 0)
                return r;
        /* Only for a blob to fetch: one stored already needs no buffer. */
        _cleanup_free_ uint8_t *buf = ls.buf = malloc(SINK_CHUNK);
        if (!buf) {
                ts_ctrd_writer_free(ls.w);
                return -ENOMEM;
        }
        int64_t off = ts_ctrd_writer_offset(ls.w);
        ls.done = off > 0 ? (uint64_t) off : 0;
        *ret_resumed = off > 0;
        r = ts_registry_fetch_blob(dl->s->reg, dl->s->repo, d, ls.done, layer_write, &ls, err);
        if (r >= 0)
                r = sink_flush(&ls, err);
        if (r >= 0)
                r = ts_ctrd_writer_commit(ls.w, dl->s->labels, err);
        ts_ctrd_writer_free(ls.w);
        return r < 0 ? r : 0;
}

static int download_one(downloads *dl, size_t i, ts_error **err) {
        const ts_oci_descriptor *d = &dl->m->layers[i];
        int64_t t0 = ts_clock_mono_ns();
        char ref[128];
        prov_ingest_ref("layer", d->digest, ref, sizeof ref);
        for (int attempt = 0;; attempt++) {
                bool resumed = false;
                ts_error *e = NULL;
                int r = download_try(dl, i, ref, &resumed, &e);
                if (r == 1) { /* stored already */
                        prov_job_blob_progress(dl->j, i, 0, true);
                        log_debug("layer %s: in containerd already", d->digest);
                        return 0;
                }
                if (r == -EBADMSG) /* the ingest holds bytes that are not the blob: drop them */
                        ts_ctrd_content_abort(dl->j->c, ref, NULL);
                /* An earlier try's bytes may be what was wrong: once more from the start. */
                if (r == -EBADMSG && resumed && attempt == 0) {
                        ts_error_free(e);
                        continue;
                }
                if (r < 0)
                        return ts_error_prefix(err, ts_error_move(err, &e), "layer %s", d->digest);
                log_debug("layer %s: %" PRId64 " bytes stored in %.1f ms", d->digest, d->size,
                          (double) (ts_clock_mono_ns() - t0) / 1e6);
                return 0;
        }
}

static void *download_worker(void *arg) {
        downloads *dl = arg;
        pthread_mutex_lock(&dl->lock);
        while (!dl->stop && dl->next < dl->m->n_layers) {
                size_t i = dl->next++;
                pthread_mutex_unlock(&dl->lock);
                ts_error *err = NULL;
                int r = download_one(dl, i, &err);
                pthread_mutex_lock(&dl->lock);
                dl->result[i] = r < 0 ? r : 0;
                if (r < 0)
                        dl->errors[i] = strdup(ts_error_message(err, r));
                ts_error_free(err);
                pthread_cond_broadcast(&dl->done);
        }
        pthread_mutex_unlock(&dl->lock);
        return NULL;
}

static int layer_wait(void *userdata, size_t i, ts_error **err) {
        downloads *dl = userdata;
        pthread_mutex_lock(&dl->lock);
        while (dl->result[i] == 1)
                pthread_cond_wait(&dl->done, &dl->lock);
        int r = dl->result[i];
        if (r < 0)
                ts_error_setf_plain(err, -r, "%s", dl->errors[i] ? dl->errors[i] : strerror(-r));
        pthread_mutex_unlock(&dl->lock);
        return r;
}

static void downloads_stop(downloads *dl) {
        pthread_mutex_lock(&dl->lock);
        dl->stop = true;
        pthread_mutex_unlock(&dl->lock);
        for (unsigned t = 0; t < dl->n_threads; t++)
                pthread_join(dl->threads[t], NULL);
        for (size_t i = 0; dl->errors && i < dl->m->n_layers; i++)
                free(dl->errors[i]);
        free(dl->errors);
        free(dl->result);
        free(dl->threads);
        pthread_cond_destroy(&dl->done);
        pthread_mutex_destroy(&dl->lock);
}

static int downloads_start(downloads *dl, prov_job *j, prov_source *s, const ts_oci_manifest *m) {
        size_t n = m->n_layers;
        *dl = (downloads) { .j = j, .s = s, .m = m };
        pthread_mutex_init(&dl->lock, NULL);
        pthread_cond_init(&dl->done, NULL);
        dl->result = calloc(n ? n : 1, sizeof(*dl->result));
        dl->errors = calloc(n ? n : 1, sizeof(*dl->errors));
        unsigned want = j->p->max_downloads < n ? j->p->max_downloads : (unsigned) n;
        dl->threads = calloc(want ? want : 1, sizeof(*dl->threads));
        if (!dl->result || !dl->errors || !dl->threads)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                dl->result[i] = 1;
        for (; dl->n_threads < want; dl->n_threads++)
                if (pthread_create(&dl->threads[dl->n_threads], NULL, download_worker, dl))
                        break;
        return dl->n_threads ? 0 : -EAGAIN;
}

static int announce_blobs(prov_job *j, const ts_oci_manifest *m) {
        _cleanup_free_ char **digests = calloc(m->n_layers + 1, sizeof(char *));
        _cleanup_free_ int64_t *sizes = calloc(m->n_layers + 1, sizeof(int64_t));
        if (!digests || !sizes)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_layers; i++) {
                digests[i] = m->layers[i].digest;
                sizes[i] = m->layers[i].size;
        }
        return prov_job_set_blobs(j, digests, sizes, m->n_layers);
}

/* The documents: target, manifest, config, each stored and labelled. */
static int pull_docs(prov_job *j, prov_source *s, prov_docs *d, ts_error **err) {
        _cleanup_descriptor_ ts_oci_descriptor *target = NULL;
        int r = ts_registry_resolve(s->reg, s->ref, &target, err);
        if (r < 0)
                return r;
        if (s->ref->digest && strcmp(s->ref->digest, target->digest) != 0)
                return ts_error_setf_plain(err, EBADMSG, "%s resolves to %s", j->name, target->digest);
        if ((r = prov_job_check_target(j, target->digest, err)) < 0)
                return r;
        prov_job_set_digest(j, target->digest);
        r = prov_docs_load(j, s, target, j->name, d, err);
        return r < 0 ? r : prov_limits_check_manifest(j->limits, d->m, err);
}

int prov_pull(prov_job *j, ts_error **err) {
        prov_source s = { 0 };
        prov_docs d = { 0 };
        downloads dl;
        bool started = false;
        int r = source_open(j, &s, err);
        if (r >= 0)
                r = pull_docs(j, &s, &d, err);
        if (r >= 0)
                r = announce_blobs(j, d.m);
        if (r >= 0) {
                r = downloads_start(&dl, j, &s, d.m);
                started = true;
        }
        if (r >= 0)
                r = prov_unpack_and_publish(j, &d, layer_wait, &dl, err);
        if (started)
                downloads_stop(&dl);
        prov_docs_done(&d);
        source_done(&s);
        return r < 0 ? ts_error_prefix(err, r, "pull %s", j->name) : 0;
}
