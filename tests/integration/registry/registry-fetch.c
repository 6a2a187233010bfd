/* Drives the registry client the way a pull does, for the integration tests: resolve a
 * reference, choose a platform from an index, fetch the manifest, the config and every
 * layer (from several threads at once), and print what arrived as JSON lines:
 *
 *   {"resolved": {"mediaType", "digest", "size"}}
 *   {"selected": DIGEST, "platform": "os/arch[/variant]"}        (for an index)
 *   {"manifest": DIGEST, "layers": N}
 *   {"config": DIGEST, "os", "architecture", "diff_ids": [...], "chain_ids": [...]}
 *   {"blob": DIGEST, "offset": N, "size": N, "sha256": "sha256:..."}  (of the bytes the sink got)
 *
 * Options: --plain-http, --ca FILE, --ca-pem FILE (its text given as ca_pem), --user,
 * --password, --docker-config FILE, --attempts N, --timeout S, --platform P, --jobs N
 * (layers fetched from N threads), --offset N (every layer fetched from byte N).
 *
 * On failure: "registry-fetch: <message>" on stderr, exit status = the errno. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "oci/digest.h"
#include "registry/registry.h"

typedef struct job {
        ts_registry *reg;
        const char *repo;
        const ts_oci_manifest *m;
        uint64_t offset;
        pthread_mutex_t lock;
        size_t next;
        int r;
        ts_error *err;
} job;

typedef struct got {
        ts_sha256 *h;
        uint64_t n;
} got;

static int count_sink(void *userdata, const void *p, size_t n) {
        got *g = userdata;
        ts_sha256_update(g->h, p, n);
        g->n += n;
        return 0;
}

static int fail(int r, const ts_error *err) {
        int e = err ? err->errnum : -r;
        fprintf(stderr, "registry-fetch: %s\n", ts_error_message(err, r));
        return e > 0 && e < 256 ? e : 1;
}

static void print(json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        fflush(stdout);
        json_object_put(o);
}

static int fetch_layer(job *j, const ts_oci_descriptor *d, ts_error **err) {
        got g = { 0 };
        if (ts_sha256_new(&g.h) < 0)
                return -ENOMEM;
        uint64_t off = j->offset < (uint64_t) d->size ? j->offset : (uint64_t) d->size;
        int r = ts_registry_fetch_blob(j->reg, j->repo, d, off, count_sink, &g, err);
        if (r >= 0) {
                char sum[TS_DIGEST_MAX];
                ts_sha256_final(g.h, sum);
                json_object *o = json_object_new_object();
                json_object_object_add(o, "blob", json_object_new_string(d->digest));
                json_object_object_add(o, "offset", json_object_new_int64((int64_t) off));
                json_object_object_add(o, "size", json_object_new_int64((int64_t) g.n));
                json_object_object_add(o, "sha256", json_object_new_string(sum));
                pthread_mutex_lock(&j->lock);
                print(o);
                pthread_mutex_unlock(&j->lock);
        }
        ts_sha256_free(g.h);
        return r;
}

static void *worker(void *arg) {
        job *j = arg;
        for (;;) {
                pthread_mutex_lock(&j->lock);
                size_t i = j->next++;
                bool stop = i >= j->m->n_layers || j->r < 0;
                pthread_mutex_unlock(&j->lock);
                if (stop)
                        return NULL;
                ts_error *err = NULL;
                int r = fetch_layer(j, &j->m->layers[i], &err);
                pthread_mutex_lock(&j->lock);
                if (r < 0 && j->r == 0) {
                        j->r = r;
                        j->err = err;
                        err = NULL;
                }
                pthread_mutex_unlock(&j->lock);
                ts_error_free(err);
        }
}

static int fetch_layers(job *j, unsigned jobs) {
        pthread_t t[16];
        unsigned n = jobs < 16 ? jobs : 16;
        for (unsigned i = 0; i < n; i++)
                if (pthread_create(&t[i], NULL, worker, j) != 0)
                        abort();
        for (unsigned i = 0; i < n; i++)
                pthread_join(t[i], NULL);
        return j->r;
}

static int mem_sink(void *userdata, const void *p, size_t n) {
        return fwrite(p, 1, n, userdata) == n ? 0 : -ENOMEM;
}

/* The config blob, parsed, checked against the manifest and printed. */
static int config(ts_registry *reg, const char *repo, const ts_oci_manifest *m, ts_error **err) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return -ENOMEM;
        int r = ts_registry_fetch_blob(reg, repo, &m->config, 0, mem_sink, f, err);
        fclose(f);
        ts_oci_config *c = NULL;
        if (r >= 0)
                r = ts_oci_config_parse(buf, len, &c, err);
        free(buf);
        if (r >= 0)
                r = ts_oci_image_check(m, c, err);
        char (*chain)[TS_DIGEST_MAX] = NULL;
        if (r >= 0 && !(chain = calloc(c->n_diff_ids + 1, TS_DIGEST_MAX)))
                r = -ENOMEM;
        if (r >= 0)
                r = ts_digest_chain_ids(c->diff_ids, c->n_diff_ids, chain);
        if (r >= 0) {
                json_object *o = json_object_new_object(), *ids = json_object_new_array(),
                            *chains = json_object_new_array();
                json_object_object_add(o, "config", json_object_new_string(m->config.digest));
                json_object_object_add(o, "os", json_object_new_string(c->platform.os));
                json_object_object_add(o, "architecture", json_object_new_string(c->platform.architecture));
                for (size_t i = 0; i < c->n_diff_ids; i++) {
                        json_object_array_add(ids, json_object_new_string(c->diff_ids[i]));
                        json_object_array_add(chains, json_object_new_string(chain[i]));
                }
                json_object_object_add(o, "diff_ids", ids);
                json_object_object_add(o, "chain_ids", chains);
                print(o);
        }
        free(chain);
        ts_oci_config_free(c);
        return r;
}

static void print_descriptor(const char *key, const ts_oci_descriptor *d) {
        json_object *o = json_object_new_object(), *v = json_object_new_object();
        json_object_object_add(v, "mediaType", json_object_new_string(d->media_type));
        json_object_object_add(v, "digest", json_object_new_string(d->digest));
        json_object_object_add(v, "size", json_object_new_int64(d->size));
        json_object_object_add(o, key, v);
        print(o);
}

/* An index: the manifest for the platform. */
static int choose(ts_registry *reg, const char *repo, const ts_oci_descriptor *ixd,
                  const char *platform, ts_oci_descriptor **ret, ts_error **err) {
        uint8_t *p = NULL;
        size_t n = 0;
        int r = ts_registry_fetch_manifest(reg, repo, ixd, &p, &n, err);
        ts_oci_index *ix = NULL;
        if (r >= 0)
                r = ts_oci_index_parse(p, n, &ix, err);
        free(p);
        ts_oci_platform *want = NULL;
        if (r >= 0)
                r = platform ? ts_oci_platform_parse(platform, &want, err) : ts_oci_platform_default(&want);
        const ts_oci_descriptor *d = NULL;
        if (r >= 0)
                r = ts_oci_index_select(ix, want, &d, err);
        if (r >= 0)
                r = ts_oci_descriptor_copy(d, ret);
        if (r >= 0) {
                char *s = d->platform ? ts_oci_platform_string(d->platform) : NULL;
                json_object *o = json_object_new_object();
                json_object_object_add(o, "selected", json_object_new_string(d->digest));
                json_object_object_add(o, "platform", s ? json_object_new_string(s) : NULL);
                print(o);
                free(s);
        }
        ts_oci_platform_free(want);
        ts_oci_index_free(ix);
        return r;
}

static int pull(ts_registry *reg, const ts_ref *ref, const char *platform, unsigned jobs,
                uint64_t offset, ts_error **err) {
        ts_oci_descriptor *d = NULL;
        int r = ts_registry_resolve(reg, ref, &d, err);
        if (r < 0)
                return r;
        print_descriptor("resolved", d);
        if (ts_oci_media_kind(d->media_type) == TS_OCI_KIND_INDEX) {
                ts_oci_descriptor *chosen = NULL;
                r = choose(reg, ref->path, d, platform, &chosen, err);
                ts_oci_descriptor_free(d);
                if (r < 0)
                        return r;
                d = chosen;
        }
        uint8_t *p = NULL;
        size_t n = 0;
        ts_oci_manifest *m = NULL;
        r = ts_registry_fetch_manifest(reg, ref->path, d, &p, &n, err);
        if (r >= 0)
                r = ts_oci_manifest_parse(p, n, &m, err);
        free(p);
        if (r >= 0) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "manifest", json_object_new_string(d->digest));
                json_object_object_add(o, "layers", json_object_new_int64((int64_t) m->n_layers));
                print(o);
                r = config(reg, ref->path, m, err);
        }
        if (r >= 0) {
                job j = { .reg = reg, .repo = ref->path, .m = m, .offset = offset,
                          .lock = PTHREAD_MUTEX_INITIALIZER };
                r = fetch_layers(&j, jobs);
                if (r < 0 && err && !*err)
                        *err = j.err;
                else
                        ts_error_free(j.err);
        }
        ts_oci_manifest_free(m);
        ts_oci_descriptor_free(d);
        return r;
}

static int read_file(const char *path, char **ret, size_t *ret_len) {
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        char chunk[4096];
        size_t n;
        while (m && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
                fwrite(chunk, 1, n, m);
        fclose(f);
        if (!m)
                return -ENOMEM;
        fclose(m);
        *ret = buf;
        *ret_len = len;
        return 0;
}

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                { "plain-http", no_argument, NULL, 'H' },   { "ca", required_argument, NULL, 'c' },
                { "user", required_argument, NULL, 'u' },   { "password", required_argument, NULL, 'p' },
                { "docker-config", required_argument, NULL, 'd' },
                { "attempts", required_argument, NULL, 'a' }, { "timeout", required_argument, NULL, 't' },
                { "platform", required_argument, NULL, 'P' }, { "jobs", required_argument, NULL, 'j' },
                { "offset", required_argument, NULL, 'o' }, { "ca-pem", required_argument, NULL, 'C' },
                {},
        };
        ts_registry_options o = { 0 };
        char *pem = NULL;
        const char *platform = NULL;
        uint32_t jobs = 1, v;
        uint64_t offset = 0;
        int c;
        while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
                switch (c) {
                case 'H': o.plain_http = true; break;
                case 'c': o.ca_file = optarg; break;
                case 'C': if (read_file(optarg, &pem, &o.ca_pem_len) < 0) return 2; o.ca_pem = pem; break;
                case 'u': o.username = optarg; break;
                case 'p': o.password = optarg; break;
                case 'd': o.docker_config = optarg; break;
                case 'P': platform = optarg; break;
                case 'a': if (ts_units_parse_u32(optarg, &v) < 0) return 2; o.max_attempts = v; break;
                case 't': if (ts_units_parse_u32(optarg, &v) < 0) return 2; o.timeout_s = v; break;
                case 'j': if (ts_units_parse_u32(optarg, &jobs) < 0 || jobs == 0) return 2; break;
                case 'o': if (ts_units_parse_u64(optarg, &offset) < 0) return 2; break;
                default: return 2;
                }
        }
        if (optind + 1 != argc) {
                fprintf(stderr, "usage: registry-fetch [options] REFERENCE\n");
                return 2;
        }
        ts_error *err = NULL;
        ts_ref *ref = NULL;
        ts_registry *reg = NULL;
        int r = ts_ref_parse(argv[optind], &ref, &err);
        if (r >= 0)
                r = ts_registry_new(ref->domain, &o, &reg, &err);
        if (r >= 0)
                r = pull(reg, ref, platform, jobs, offset, &err);
        int status = r < 0 ? fail(r, err) : 0;
        ts_error_free(err);
        ts_registry_free(reg);
        ts_ref_free(ref);
        free(pem);
        return status;
}
