#include "registry.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/buf.h"
#include "oci/digest.h"
#include "registry/auth-internal.h"
#include "registry/http-internal.h"

#define REDIRECTS_MAX 5
#define RETRY_AFTER_MAX_S 10

#define ACCEPT_MANIFESTS                                                                 \
        TS_OCI_MEDIA_INDEX ", " TS_OCI_MEDIA_MANIFEST ", " TS_DOCKER_MEDIA_LIST ", "     \
        TS_DOCKER_MEDIA_MANIFEST ", */*"

struct ts_registry {
        char *domain; /* as references name it: "docker.io", "127.0.0.1:5000" */
        char *host;   /* where requests go: "registry-1.docker.io" */
        char *username, *password;
        unsigned max_attempts;
        bool plain_http, http_fallback;
        ts_http *http;
        ts_auth_tokens *tokens;
        pthread_mutex_t lock; /* guards scheme and challenge */
        const char *scheme;   /* "https" or "http" */
        ts_auth_challenge challenge;
};

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms) {
        struct timespec ts = { .tv_sec = (time_t) (ms / 1000), .tv_nsec = (long) (ms % 1000) * 1000000 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* 100 ms doubling up to 2 s, or what Retry-After asks for (at most 10 s). */
static void backoff(unsigned attempt, const char *retry_after) {
        uint64_t ms = 100ULL << (attempt < 5 ? attempt - 1 : 4);
        if (ms > 2000)
                ms = 2000;
        if (retry_after) {
                char *e;
                long s = strtol(retry_after, &e, 10);
                if (e != retry_after && *e == '\0' && s >= 0)
                        ms = (uint64_t) (s < RETRY_AFTER_MAX_S ? s : RETRY_AFTER_MAX_S) * 1000;
        }
        sleep_ms(ms);
}

static int credentials(ts_registry *r, const ts_registry_options *o, ts_error **err) {
        if (o->username) {
                r->username = strdup(o->username);
                r->password = strdup(o->password ? o->password : "");
                return r->username && r->password ? 0 : -ENOMEM;
        }
        if (!o->docker_config)
                return 0;
        int k = ts_auth_docker_config(o->docker_config, r->domain, &r->username, &r->password, err);
        return k < 0 ? k : 0;
}

int ts_registry_new(const char *domain, const ts_registry_options *o, ts_registry **ret,
                    ts_error **err) {
        static const ts_registry_options defaults = { 0 };
        o = o ? o : &defaults;
        if (!domain || !*domain || strpbrk(domain, "/?#@ "))
                return ts_error_setf_plain(err, EINVAL, "invalid registry domain \"%s\"",
                                           domain ? domain : "");
        _cleanup_registry_ ts_registry *r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        pthread_mutex_init(&r->lock, NULL);
        r->domain = strdup(domain);
        r->host = strdup(strcmp(domain, "docker.io") == 0 ? "registry-1.docker.io" : domain);
        if (!r->domain || !r->host)
                return -ENOMEM;
        r->max_attempts = o->max_attempts ? o->max_attempts : TS_REGISTRY_ATTEMPTS_DEFAULT;
        r->plain_http = o->plain_http;
        r->http_fallback = !o->plain_http && ts_http_host_is_loopback(r->host);
        r->scheme = o->plain_http ? "http" : "https";
        int k = ts_auth_tokens_new(&r->tokens);
        if (k >= 0)
                k = ts_http_new(&(ts_http_cas) { o->ca_file, o->ca_pem, o->ca_pem_len },
                                o->timeout_s ? o->timeout_s : TS_REGISTRY_TIMEOUT_DEFAULT, &r->http, err);
        if (k >= 0)
                k = credentials(r, o, err);
        if (k < 0)
                return ts_error_prefix(err, k, "registry %s", domain);
        *ret = TAKE_PTR(r);
        return 0;
}

ts_registry *ts_registry_free(ts_registry *r) {
        if (!r)
                return NULL;
        free(r->domain);
        free(r->host);
        if (r->password)
                explicit_bzero(r->password, strlen(r->password));
        free(r->username);
        free(r->password);
        ts_http_free(r->http);
        ts_auth_tokens_free(r->tokens);
        ts_auth_challenge_done(&r->challenge);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
}

/* ---- bodies collected in memory (tokens, manifests) ---- */

static int buf_body(void *userdata, const ts_http_response *resp, const void *p, size_t n) {
        return ts_buf_sink(userdata, p, n);
}

/* ---- tokens ---- */

/* One request to a token endpoint, retried as registry requests are. */
static int token_exchange(ts_registry *r, const ts_http_request *q, ts_buf *b, ts_http_response *resp,
                          ts_error **err) {
        for (unsigned attempt = 1;; attempt++) {
                b->len = 0;
                ts_error *e = NULL;
                int k = ts_http_exchange(r->http, q, resp, &e);
                if (k == -EMSGSIZE)
                        k = ts_error_setf_plain(&e, EBADMSG, "token endpoint %s: answer over 1 MiB",
                                                q->url);
                bool retry = k == -ECONNRESET || (k == 0 && ts_http_status_retryable(resp->status));
                if (!retry || attempt >= r->max_attempts) {
                        if (k < 0)
                                ts_error_move(err, &e);
                        return k;
                }
                ts_error_free(e);
                backoff(attempt, k == 0 ? resp->retry_after : NULL);
                ts_http_response_done(resp);
        }
}

/* OAuth2 password grant; *ret_fallback when the endpoint does not do it (GET then). */
static int token_post(ts_registry *r, const ts_auth_challenge *ch, const char *scope, ts_buf *b,
                      bool *ret_fallback, ts_error **err) {
        _cleanup_free_ char *service = ts_http_escape(ch->service ? ch->service : ""),
                            *sc = ts_http_escape(scope), *user = ts_http_escape(r->username),
                            *pw = ts_http_escape(r->password), *body = NULL;
        if (!service || !sc || !user || !pw ||
            asprintf(&body, "grant_type=password&client_id=thinsnap&service=%s&scope=%s"
                            "&username=%s&password=%s", service, sc, user, pw) < 0)
                return -ENOMEM;
        static const char *const headers[] = { "Content-Type: application/x-www-form-urlencoded", NULL };
        ts_http_request q = { .method = "POST", .url = ch->realm, .headers = headers, .post = body,
                              .body = buf_body, .userdata = b };
        _cleanup_(ts_http_response_done) ts_http_response resp = { 0 };
        int k = token_exchange(r, &q, b, &resp, err);
        explicit_bzero(body, strlen(body));
        if (k < 0)
                return k;
        long st = resp.status;
        *ret_fallback = st == 400 || st == 401 || st == 403 || st == 404 || st == 405;
        if (st != 200 && !*ret_fallback)
                return ts_error_setf_plain(err, -ts_http_status_errno(st), "token endpoint %s "
                                           "answered HTTP %ld", ch->realm, st);
        return 0;
}

static int token_get(ts_registry *r, const ts_auth_challenge *ch, const char *scope,
                     const char *what, ts_buf *b, ts_error **err) {
        _cleanup_free_ char *service = ts_http_escape(ch->service ? ch->service : ""),
                            *sc = ts_http_escape(scope), *url = NULL, *basic = NULL;
        if (!service || !sc || asprintf(&url, "%s%sservice=%s&scope=%s", ch->realm,
                                        strchr(ch->realm, '?') ? "&" : "?", service, sc) < 0)
                return -ENOMEM;
        if (r->username && !(basic = ts_auth_basic_header(r->username, r->password)))
                return -ENOMEM;
        const char *headers[] = { basic, NULL };
        ts_http_request q = { .method = "GET", .url = url, .headers = headers, .body = buf_body,
                              .userdata = b };
        _cleanup_(ts_http_response_done) ts_http_response resp = { 0 };
        int k = token_exchange(r, &q, b, &resp, err);
        if (basic)
                explicit_bzero(basic, strlen(basic));
        if (k < 0)
                return k;
        if (resp.status == 401 || resp.status == 403) {
                if (r->username)
                        return ts_error_setf_plain(err, EACCES, "authentication required for %s: "
                                                   "%s refused the credentials of %s", what,
                                                   ch->realm, r->username);
                return ts_error_setf_plain(err, EACCES, "authentication required for %s: %s "
                                           "refused anonymous access (no credentials for %s)",
                                           what, ch->realm, r->domain);
        }
        if (resp.status != 200)
                return ts_error_setf_plain(err, -ts_http_status_errno(resp.status), "token endpoint "
                                           "%s answered HTTP %ld", ch->realm, resp.status);
        return 0;
}

static bool realm_allowed(ts_registry *r, const char *realm) {
        _cleanup_free_ char *scheme = NULL, *host = NULL;
        long port;
        if (ts_http_url_origin(realm, &scheme, &host, &port) < 0)
                return false;
        if (strcmp(scheme, "https") == 0)
                return true;
        /* Credentials travel in clear only where the registry itself is plain HTTP. */
        return strcmp(scheme, "http") == 0 &&
               (!r->username || r->plain_http || ts_http_host_is_loopback(host));
}

/* A token for scope from the challenge's realm, cached. */
static int fetch_token(ts_registry *r, const ts_auth_challenge *ch, const char *scope,
                       const char *what, char **ret, ts_error **err) {
        if (!realm_allowed(r, ch->realm))
                return ts_error_setf_plain(err, EPROTO, "registry %s: refusing token realm "
                                           "\"%.200s\" (not https, or credentials over plain HTTP)",
                                           r->domain, ch->realm);
        _cleanup_buf_ ts_buf b = { .max = 1 << 20 };
        bool fallback = true;
        int k = r->username ? token_post(r, ch, scope, &b, &fallback, err) : 0;
        if (k >= 0 && fallback)
                k = token_get(r, ch, scope, what, &b, err);
        if (k < 0)
                return k;
        char *token = NULL;
        int64_t expires_in;
        k = ts_auth_token_parse(b.p, b.len, &token, &expires_in, err);
        if (k < 0)
                return ts_error_prefix(err, k, "token endpoint %s", ch->realm);
        if (ts_auth_tokens_put(r->tokens, scope, token, now_ms() + (uint64_t) expires_in * 1000) < 0) {
                free(token);
                return -ENOMEM;
        }
        *ret = token;
        return 0;
}

static int challenge_copy(ts_registry *r, ts_auth_challenge *ret) {
        pthread_mutex_lock(&r->lock);
        ts_auth_challenge c = { .scheme = r->challenge.scheme };
        int k = 0;
        if ((r->challenge.realm && !(c.realm = strdup(r->challenge.realm))) ||
            (r->challenge.service && !(c.service = strdup(r->challenge.service))))
                k = -ENOMEM;
        pthread_mutex_unlock(&r->lock);
        if (k < 0)
                ts_auth_challenge_done(&c);
        else
                *ret = c;
        return k;
}

/* The Authorization header line for a request in scope, from what the registry asked for
 * last; NULL when it asked for nothing (yet). */
static int auth_header(ts_registry *r, const char *scope, const char *what, char **ret,
                       ts_error **err) {
        _cleanup_(ts_auth_challenge_done) ts_auth_challenge ch = { 0 };
        int k = challenge_copy(r, &ch);
        if (k < 0)
                return k;
        *ret = NULL;
        if (ch.scheme == TS_AUTH_BASIC && r->username) {
                *ret = ts_auth_basic_header(r->username, r->password);
                return *ret ? 0 : -ENOMEM;
        }
        if (ch.scheme != TS_AUTH_BEARER)
                return 0;
        _cleanup_free_ char *token = ts_auth_tokens_get(r->tokens, scope, now_ms());
        if (!token) {
                k = fetch_token(r, &ch, scope, what, &token, err);
                if (k < 0)
                        return k;
        }
        return asprintf(ret, "Authorization: Bearer %s", token) < 0 ? -ENOMEM : 0;
}

/* A 401: take the registry's challenge, forget the token it refused. */
static int challenged(ts_registry *r, const char *www_authenticate, const char *scope,
                      const char *refused, const char *what, ts_error **err) {
        if (!www_authenticate)
                return ts_error_setf_plain(err, EACCES, "authentication required for %s (the "
                                           "registry sent no WWW-Authenticate)", what);
        ts_auth_challenge ch = { 0 };
        int k = ts_auth_challenge_parse(www_authenticate, &ch, err);
        if (k < 0)
                return ts_error_prefix(err, k, "%s", what);
        if (ch.scheme == TS_AUTH_BASIC && !r->username) {
                ts_auth_challenge_done(&ch);
                return ts_error_setf_plain(err, EACCES, "authentication required for %s (no "
                                           "credentials for %s)", what, r->domain);
        }
        pthread_mutex_lock(&r->lock);
        ts_auth_challenge_done(&r->challenge);
        r->challenge = ch;
        pthread_mutex_unlock(&r->lock);
        const char *bearer = "Authorization: Bearer ";
        if (refused && strncmp(refused, bearer, strlen(bearer)) == 0)
                ts_auth_tokens_drop(r->tokens, scope, refused + strlen(bearer));
        return 0;
}

/* ---- one registry request: auth, retries, redirects, resumes ---- */

typedef struct call {
        ts_registry *r;
        const char *method, *accept;
        char *path;
        const char *repo; /* "domain/path", for authentication messages */
        const char *what; /* the object asked for, for other messages */
        char *scope;
        bool blob;             /* Range resumes */
        uint64_t offset;       /* blob: where the caller's data starts */
        int64_t size;          /* blob: its size */
        int (*sink)(void *userdata, const void *p, size_t n);
        void *userdata;
        void (*restart)(void *userdata); /* not a blob: the body starts over on a retry */
        uint64_t received;     /* bytes handed to sink */
        uint64_t want_start;   /* this attempt asks for the blob from here */
        uint64_t skip;         /* a 200 answer to a Range: bytes to drop */
        bool started;
        ts_error *body_err;
        ts_http_response resp;
} call;

static int call_body(void *userdata, const ts_http_response *resp, const void *p, size_t n) {
        call *c = userdata;
        if (!c->started) {
                c->started = true;
                c->skip = 0;
                uint64_t start, end;
                int64_t total;
                if (c->want_start > 0 && resp->status == 206 &&
                    (!resp->content_range ||
                     ts_http_content_range_parse(resp->content_range, &start, &end, &total) < 0 ||
                     start != c->want_start))
                        return ts_error_setf_plain(&c->body_err, EBADMSG, "%s: asked for the bytes "
                                                   "from %llu, the answer has Content-Range \"%.100s\"",
                                                   c->what, (unsigned long long) c->want_start,
                                                   resp->content_range ? resp->content_range : "");
                if (c->want_start > 0 && resp->status != 206)
                        c->skip = c->want_start; /* the Range was ignored: all of it again */
        }
        uint64_t k = c->skip < n ? c->skip : n;
        c->skip -= k;
        if (n == k)
                return 0;
        int r = c->sink(c->userdata, (const uint8_t *) p + k, n - k);
        if (r < 0)
                return r;
        c->received += n - k;
        return 0;
}

static char *registry_url(ts_registry *r, const char *path) {
        pthread_mutex_lock(&r->lock);
        const char *scheme = r->scheme;
        pthread_mutex_unlock(&r->lock);
        char *u = NULL;
        return asprintf(&u, "%s://%s%s", scheme, r->host, path) < 0 ? NULL : u;
}

static bool same_origin(const char *a, const char *b) {
        _cleanup_free_ char *sa = NULL, *ha = NULL, *sb = NULL, *hb = NULL;
        long pa, pb;
        return ts_http_url_origin(a, &sa, &ha, &pa) >= 0 && ts_http_url_origin(b, &sb, &hb, &pb) >= 0 &&
               strcmp(sa, sb) == 0 && strcasecmp(ha, hb) == 0 && pa == pb;
}

/* Where a redirect may lead: https anywhere; plain http only to loopback hosts or from a
 * registry that is plain HTTP itself. */
static int redirect_target(call *c, const char *from, char **ret, ts_error **err) {
        char *to = NULL;
        if (ts_http_url_resolve(from, c->resp.location, &to) < 0)
                return ts_error_setf_plain(err, EPROTO, "%s: bad redirect to \"%.200s\"", c->what,
                                           c->resp.location);
        _cleanup_free_ char *scheme = NULL, *host = NULL, *from_scheme = NULL, *from_host = NULL;
        long port, from_port;
        if (ts_http_url_origin(to, &scheme, &host, &port) < 0 ||
            ts_http_url_origin(from, &from_scheme, &from_host, &from_port) < 0 ||
            (strcmp(scheme, "https") != 0 && !(strcmp(scheme, "http") == 0 &&
                                               (ts_http_host_is_loopback(host) ||
                                                strcmp(from_scheme, "http") == 0)))) {
                free(to);
                return ts_error_setf_plain(err, EPROTO, "%s: refusing redirect to \"%.200s\"",
                                           c->what, c->resp.location);
        }
        *ret = to;
        return 0;
}

static bool is_redirect(long st) {
        return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

/* One try: the request and the redirects it leads to. 0 when an answer came. */
static int attempt(call *c, const char *authz, ts_error **err) {
        if (!c->blob && c->received > 0) {
                c->restart(c->userdata);
                c->received = 0;
        }
        c->want_start = c->blob ? c->offset + c->received : 0;
        _cleanup_free_ char *url = registry_url(c->r, c->path), *accept = NULL, *range = NULL;
        if (!url || (c->accept && asprintf(&accept, "Accept: %s", c->accept) < 0) ||
            (c->want_start > 0 && asprintf(&range, "Range: bytes=%llu-",
                                           (unsigned long long) c->want_start) < 0))
                return -ENOMEM;
        const char *origin = url;
        _cleanup_free_ char *hop_url = NULL;
        for (unsigned hop = 0;; hop++) {
                const char *cur = hop_url ? hop_url : url;
                /* Credentials go only to the registry's own origin. */
                const char *auth = same_origin(cur, origin) ? authz : NULL;
                const char *headers[4] = { 0 };
                size_t nh = 0;
                const char *lines[] = { accept, auth, range };
                for (size_t i = 0; i < TS_ARRAY_SIZE(lines); i++)
                        if (lines[i])
                                headers[nh++] = lines[i];
                ts_http_request q = { .method = c->method, .url = cur, .headers = headers,
                                      .body = call_body, .userdata = c };
                c->started = false;
                ts_http_response_done(&c->resp);
                int k = ts_http_exchange(c->r->http, &q, &c->resp, err);
                if (c->body_err)
                        return ts_error_move(err, &c->body_err);
                if (k < 0 || !is_redirect(c->resp.status) || !c->resp.location)
                        return k;
                if (hop == REDIRECTS_MAX)
                        return ts_error_setf_plain(err, EPROTO, "%s: more than %d redirects",
                                                   c->what, REDIRECTS_MAX);
                char *next = NULL;
                k = redirect_target(c, cur, &next, err);
                if (k < 0)
                        return k;
                free(hop_url);
                hop_url = next;
        }
}

static int status_error(call *c, unsigned attempts, ts_error **err) {
        long st = c->resp.status;
        _cleanup_free_ char *detail = ts_http_error_detail(&c->resp);
        char d[300] = "";
        if (detail)
                snprintf(d, sizeof(d), ": %s", detail);
        switch (st) {
        case 401:
        case 403:
                return ts_error_setf_plain(err, EACCES, "authentication required for %s (HTTP %ld%s)",
                                           c->repo, st, d);
        case 404:
                return ts_error_setf_plain(err, ENOENT, "%s: not found (HTTP 404%s)", c->what, d);
        default:
                if (ts_http_status_retryable(st))
                        return ts_error_setf_plain(err, EAGAIN, "%s: HTTP %ld%s, %u attempt(s)",
                                                   c->what, st, d, attempts);
                return ts_error_setf_plain(err, -ts_http_status_errno(st), "%s %s: HTTP %ld%s",
                                           c->method, c->what, st, d);
        }
}

/* A loopback registry that failed the TLS handshake speaks plain HTTP (another thread
 * may have found out first). */
static bool fall_back_to_http(ts_registry *r) {
        if (!r->http_fallback)
                return false;
        pthread_mutex_lock(&r->lock);
        r->scheme = "http";
        pthread_mutex_unlock(&r->lock);
        return true;
}

static int call_run(call *c, ts_error **err) {
        ts_registry *r = c->r;
        bool reauthed = false, fell_back = false;
        for (unsigned n = 1;;) {
                _cleanup_free_ char *authz = NULL;
                int k = auth_header(r, c->scope, c->repo, &authz, err);
                if (k < 0)
                        return k;
                ts_error *e = NULL;
                k = attempt(c, authz, &e);
                if (k == -EPROTO && c->resp.tls_handshake_failed && !fell_back &&
                    fall_back_to_http(r)) {
                        fell_back = true;
                        ts_error_free(e);
                        continue;
                }
                if (k == -ECONNRESET && n < r->max_attempts) {
                        ts_error_free(e);
                        backoff(n++, NULL);
                        continue;
                }
                if (k < 0) {
                        ts_error_move(err, &e);
                        return k;
                }
                long st = c->resp.status;
                /* A blob answer that ended early without saying how long it would be (one
                 * that said so and ended early failed above as a lost connection). */
                bool short_blob = c->blob && c->offset + c->received < (uint64_t) c->size &&
                                  c->resp.content_length < 0;
                if (st >= 200 && st < 300) {
                        if (!short_blob || n >= r->max_attempts)
                                return 0; /* the caller checks what arrived */
                        backoff(n++, NULL);
                        continue;
                }
                if (st == 401 && !reauthed) {
                        reauthed = true;
                        k = challenged(r, c->resp.www_authenticate, c->scope, authz, c->repo, err);
                        if (k < 0)
                                return k;
                        continue;
                }
                if (ts_http_status_retryable(st) && n < r->max_attempts) {
                        backoff(n++, c->resp.retry_after);
                        continue;
                }
                return status_error(c, n, err);
        }
}

/* A request for <kind>/<object> ("manifests", "blobs") of repository repo_path. */
static int call_init(call *c, ts_registry *r, const char *method, const char *repo_path,
                     const char *kind, const char *object, const char *repo, const char *what) {
        if (asprintf(&c->scope, "repository:%s:pull", repo_path) < 0) {
                c->scope = NULL;
                return -ENOMEM;
        }
        if (asprintf(&c->path, "/v2/%s/%s/%s", repo_path, kind, object) < 0) {
                c->path = NULL;
                return -ENOMEM;
        }
        c->r = r;
        c->method = method;
        c->repo = repo;
        c->what = what;
        c->resp.content_length = -1;
        return 0;
}

static void call_done(call *c) {
        free(c->scope);
        free(c->path);
        ts_error_free(c->body_err);
        ts_http_response_done(&c->resp);
}

/* ---- manifests ---- */

static void buf_restart(void *userdata) {
        ((ts_buf *) userdata)->len = 0;
}

/* GET manifests/<object> into b (at most b->max bytes); the Content-Type and the
 * Docker-Content-Digest the registry sent (NULL when none). */
static int manifest_get(ts_registry *r, const char *repo_path, const char *object,
                        const char *accept, const char *repo, const char *what, ts_buf *b,
                        char **ret_type, char **ret_digest, ts_error **err) {
        _cleanup_(call_done) call c = { 0 };
        if (call_init(&c, r, "GET", repo_path, "manifests", object, repo, what) < 0)
                return -ENOMEM;
        c.accept = accept;
        c.sink = ts_buf_sink;
        c.restart = buf_restart;
        c.userdata = b;
        int k = call_run(&c, err);
        if (k < 0)
                return k; /* -EMSGSIZE, without a message, when b is full */
        *ret_type = c.resp.content_type ? TAKE_PTR(c.resp.content_type) : NULL;
        *ret_digest = c.resp.docker_digest ? TAKE_PTR(c.resp.docker_digest) : NULL;
        return 0;
}

/* The media type of a manifest served without a telling Content-Type: its own mediaType,
 * else an OCI index or manifest by its shape. */
static char *media_from_body(const ts_buf *b) {
        json_object *o = json_tokener_parse((const char *) b->p);
        json_object *v = NULL;
        const char *mt = NULL;
        if (json_object_object_get_ex(o, "mediaType", &v) && json_object_is_type(v, json_type_string))
                mt = json_object_get_string(v);
        else if (json_object_object_get_ex(o, "manifests", &v))
                mt = TS_OCI_MEDIA_INDEX;
        else if (json_object_object_get_ex(o, "config", &v))
                mt = TS_OCI_MEDIA_MANIFEST;
        else if (json_object_object_get_ex(o, "schemaVersion", &v) && json_object_get_int(v) == 1)
                mt = TS_DOCKER_MEDIA_SCHEMA1;
        char *d = mt ? strdup(mt) : NULL;
        json_object_put(o);
        return d;
}

static int check_manifest_type(const char *what, const char *media_type, ts_error **err) {
        switch (ts_oci_media_kind(media_type)) {
        case TS_OCI_KIND_INDEX:
        case TS_OCI_KIND_MANIFEST:
                return 0;
        case TS_OCI_KIND_SCHEMA1:
                return ts_error_setf_plain(err, EOPNOTSUPP, "%s is a Docker schema 1 manifest, which "
                                           "is not supported", what);
        default:
                return ts_error_setf_plain(err, EOPNOTSUPP, "%s: media type \"%.100s\" is neither an "
                                           "image manifest nor an index", what,
                                           media_type ? media_type : "(none)");
        }
}

static int mismatch(ts_error **err, const char *what, const char *want, const char *got) {
        return ts_error_setf_plain(err, EBADMSG, "%s: digest mismatch: expected %s, got %s", what,
                                   want, got);
}

static int descriptor_new(const char *media_type, const char *digest, int64_t size,
                          ts_oci_descriptor **ret) {
        _cleanup_descriptor_ ts_oci_descriptor *d = calloc(1, sizeof(*d));
        /* "type; charset=utf-8" -> "type" */
        if (!d || !(d->media_type = strndup(media_type, strcspn(media_type, "; \t"))) ||
            !(d->digest = strdup(digest)))
                return -ENOMEM;
        d->size = size;
        *ret = TAKE_PTR(d);
        return 0;
}

/* HEAD: the descriptor from the headers, when they tell all of it. 0 with *ret NULL when a
 * GET must tell the rest. */
static int resolve_head(ts_registry *r, const ts_ref *ref, const char *repo, const char *what,
                        ts_oci_descriptor **ret, ts_error **err) {
        _cleanup_(call_done) call c = { 0 };
        if (call_init(&c, r, "HEAD", ref->path, "manifests", ts_ref_object(ref), repo, what) < 0)
                return -ENOMEM;
        c.accept = ACCEPT_MANIFESTS;
        ts_error *e = NULL;
        int k = call_run(&c, &e);
        *ret = NULL;
        if (k < 0 && c.resp.status == 405) {
                ts_error_free(e);
                return 0;
        }
        if (k < 0) {
                ts_error_move(err, &e);
                return k;
        }
        const char *digest = c.resp.docker_digest, *mt = c.resp.content_type;
        if (digest && ts_digest_validate(digest) < 0)
                return ts_error_setf_plain(err, EBADMSG, "%s: the registry answered with digest "
                                           "\"%.100s\"", what, digest);
        if (digest && ref->digest && strcmp(digest, ref->digest) != 0)
                return mismatch(err, what, ref->digest, digest);
        if (!digest)
                digest = ref->digest;
        if (!digest || c.resp.content_length < 0 || ts_oci_media_kind(mt) == TS_OCI_KIND_UNKNOWN)
                return 0;
        k = check_manifest_type(what, mt, err);
        if (k < 0)
                return k;
        return descriptor_new(mt, digest, c.resp.content_length, ret);
}

int ts_registry_resolve(ts_registry *r, const ts_ref *ref, ts_oci_descriptor **ret,
                        ts_error **err) {
        _cleanup_free_ char *what = ts_ref_string(ref), *repo = ts_ref_repository(ref);
        if (!what || !repo)
                return -ENOMEM;
        if (strcmp(ref->domain, r->domain) != 0)
                return ts_error_setf_plain(err, EINVAL, "%s is not on registry %s", what, r->domain);
        ts_oci_descriptor *d = NULL;
        int k = resolve_head(r, ref, repo, what, &d, err);
        if (k < 0 || d) {
                if (k >= 0)
                        *ret = d;
                return k;
        }
        _cleanup_buf_ ts_buf b = { .max = TS_REGISTRY_MANIFEST_MAX };
        _cleanup_free_ char *type = NULL, *sent = NULL;
        k = manifest_get(r, ref->path, ts_ref_object(ref), ACCEPT_MANIFESTS, repo, what, &b, &type,
                         &sent, err);
        if (k == -EMSGSIZE)
                return ts_error_setf_plain(err, EMSGSIZE, "%s: the manifest is larger than %d bytes",
                                           what, TS_REGISTRY_MANIFEST_MAX);
        if (k < 0)
                return k;
        char digest[TS_DIGEST_MAX];
        if (ts_digest_buffer(b.p, b.len, digest) < 0)
                return -ENOMEM;
        const char *want = ref->digest ? ref->digest : sent;
        if (want && strcmp(want, digest) != 0)
                return mismatch(err, what, want, digest);
        if (ts_oci_media_kind(type) == TS_OCI_KIND_UNKNOWN) {
                free(type);
                type = b.len ? media_from_body(&b) : NULL;
        }
        k = check_manifest_type(what, type, err);
        if (k < 0)
                return k;
        return descriptor_new(type, digest, (int64_t) b.len, ret);
}

int ts_registry_fetch_manifest(ts_registry *r, const char *repo_path, const ts_oci_descriptor *d,
                               uint8_t **ret, size_t *ret_len, ts_error **err) {
        _cleanup_free_ char *what = NULL, *repo = NULL, *accept = NULL;
        if (asprintf(&what, "%s/%s@%s", r->domain, repo_path, d->digest) < 0 ||
            asprintf(&repo, "%s/%s", r->domain, repo_path) < 0 ||
            asprintf(&accept, "%s, %s", d->media_type, ACCEPT_MANIFESTS) < 0)
                return -ENOMEM;
        if (ts_digest_validate(d->digest) < 0)
                return ts_error_setf_plain(err, EINVAL, "%s: not a sha256 digest", what);
        if (d->size < 0 || d->size > TS_REGISTRY_MANIFEST_MAX)
                return ts_error_setf_plain(err, EMSGSIZE, "%s: a manifest of %lld bytes is over the "
                                           "%d allowed", what, (long long) d->size,
                                           TS_REGISTRY_MANIFEST_MAX);
        _cleanup_buf_ ts_buf b = { .max = (size_t) d->size };
        _cleanup_free_ char *type = NULL, *sent = NULL;
        int k = manifest_get(r, repo_path, d->digest, accept, repo, what, &b, &type, &sent, err);
        if (k == -EMSGSIZE)
                return ts_error_setf_plain(err, EBADMSG, "%s: larger than the %lld bytes its "
                                           "descriptor says", what, (long long) d->size);
        if (k < 0)
                return k;
        char digest[TS_DIGEST_MAX];
        if (ts_digest_buffer(b.p, b.len, digest) < 0)
                return -ENOMEM;
        if (strcmp(digest, d->digest) != 0)
                return mismatch(err, what, d->digest, digest);
        if (!b.p && !(b.p = calloc(1, 1)))
                return -ENOMEM;
        *ret = TAKE_PTR(b.p);
        *ret_len = b.len;
        return 0;
}

/* ---- blobs ---- */

typedef struct blob {
        const char *what;
        int64_t size;
        uint64_t at; /* the next byte's offset in the blob */
        ts_sha256 *hash;
        ts_registry_sink_fn sink;
        void *userdata;
        ts_error *err;
} blob;

static int blob_sink(void *userdata, const void *p, size_t n) {
        blob *b = userdata;
        if (n > (uint64_t) b->size - b->at)
                return ts_error_setf_plain(&b->err, EBADMSG, "%s: more than the %lld bytes its "
                                           "descriptor says", b->what, (long long) b->size);
        if (b->hash)
                ts_sha256_update(b->hash, p, n);
        int k = b->sink(b->userdata, p, n);
        if (k < 0)
                return k;
        b->at += n;
        return 0;
}

int ts_registry_fetch_blob(ts_registry *r, const char *repo_path, const ts_oci_descriptor *d,
                           uint64_t offset, ts_registry_sink_fn sink, void *userdata,
                           ts_error **err) {
        _cleanup_free_ char *what = NULL, *repo = NULL;
        if (asprintf(&what, "blob %s/%s@%s", r->domain, repo_path, d->digest) < 0 ||
            asprintf(&repo, "%s/%s", r->domain, repo_path) < 0)
                return -ENOMEM;
        if (ts_digest_validate(d->digest) < 0 || d->size < 0 || offset > (uint64_t) d->size)
                return ts_error_setf_plain(err, EINVAL, "%s: bad descriptor or offset %llu", what,
                                           (unsigned long long) offset);
        _cleanup_sha256_ ts_sha256 *h = NULL;
        if (offset == 0 && ts_sha256_new(&h) < 0)
                return -ENOMEM;
        blob b = { .what = what, .size = d->size, .at = offset, .hash = h, .sink = sink,
                   .userdata = userdata };
        _cleanup_(call_done) call c = { 0 };
        if (call_init(&c, r, "GET", repo_path, "blobs", d->digest, repo, what) < 0)
                return -ENOMEM;
        c.blob = true;
        c.offset = offset;
        c.size = d->size;
        c.sink = blob_sink;
        c.userdata = &b;
        /* Nothing left to fetch (an empty blob still has its digest checked). */
        int k = offset == (uint64_t) d->size ? 0 : call_run(&c, err);
        if (b.err)
                return ts_error_move(err, &b.err);
        if (k < 0)
                return k;
        if (b.at != (uint64_t) d->size)
                return ts_error_setf_plain(err, EBADMSG, "%s: ended after %llu of its %lld bytes",
                                           what, (unsigned long long) b.at, (long long) d->size);
        if (h) {
                char got[TS_DIGEST_MAX];
                ts_sha256_final(h, got);
                if (strcmp(got, d->digest) != 0)
                        return mismatch(err, what, d->digest, got);
        }
        return 0;
}
