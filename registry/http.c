#include "http-internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"

#define HEADER_VALUE_MAX (16 << 10)

struct ts_http {
        CURLSH *share;
        pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
        STACK_OF(X509) *cas;
        unsigned timeout_s;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_status = CURLE_FAILED_INIT;

static void global_init(void) {
        global_status = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *c, curl_lock_data data, curl_lock_access access, void *userp) {
        ts_http *h = userp;
        pthread_mutex_lock(&h->locks[data]);
}

static void share_unlock(CURL *c, curl_lock_data data, void *userp) {
        ts_http *h = userp;
        pthread_mutex_unlock(&h->locks[data]);
}

static void x509_stack_free(STACK_OF(X509) *s) {
        sk_X509_pop_free(s, X509_free);
}

static int read_cas(BIO *b, const char *what, STACK_OF(X509) **ret, ts_error **err) {
        STACK_OF(X509) *s = sk_X509_new_null();
        if (!s)
                return -ENOMEM;
        X509 *x;
        while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)))
                if (!sk_X509_push(s, x)) {
                        X509_free(x);
                        x509_stack_free(s);
                        return -ENOMEM;
                }
        if (sk_X509_num(s) == 0) {
                x509_stack_free(s);
                return ts_error_setf_plain(err, EINVAL, "%s holds no PEM certificate", what);
        }
        *ret = s;
        return 0;
}

/* The extra CAs: a PEM file, or PEM text a caller handed over. */
static int load_cas(const ts_http_cas *cas, STACK_OF(X509) **ret, ts_error **err) {
        if (cas->pem_len > INT_MAX)
                return ts_error_setf_plain(err, EINVAL, "the CA certificates are too large");
        BIO *b = cas->file ? BIO_new_file(cas->file, "r")
                           : BIO_new_mem_buf(cas->pem, (int) cas->pem_len);
        if (!b && cas->file)
                return ts_error_set(err, errno ? errno : EIO, "CA file %s", cas->file);
        if (!b)
                return -ENOMEM;
        char what[300];
        snprintf(what, sizeof what, "%s%s", cas->file ? "CA file " : "the CA certificates given",
                 cas->file ? cas->file : "");
        int r = read_cas(b, what, ret, err);
        BIO_free(b);
        return r;
}

int ts_http_new(const ts_http_cas *cas, unsigned timeout_s, ts_http **ret, ts_error **err) {
        pthread_once(&global_once, global_init);
        if (global_status != CURLE_OK)
                return ts_error_setf_plain(err, ENOMEM, "libcurl: %s", curl_easy_strerror(global_status));
        ts_http *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        for (size_t i = 0; i < TS_ARRAY_SIZE(h->locks); i++)
                pthread_mutex_init(&h->locks[i], NULL);
        h->timeout_s = timeout_s;
        int r = cas && (cas->file || cas->pem_len) ? load_cas(cas, &h->cas, err) : 0;
        if (r >= 0 && !(h->share = curl_share_init()))
                r = -ENOMEM;
        if (r < 0) {
                ts_http_free(h);
                return r;
        }
        curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
        *ret = h;
        return 0;
}

ts_http *ts_http_free(ts_http *h) {
        if (!h)
                return NULL;
        if (h->share)
                curl_share_cleanup(h->share);
        if (h->cas)
                x509_stack_free(h->cas);
        for (size_t i = 0; i < TS_ARRAY_SIZE(h->locks); i++)
                pthread_mutex_destroy(&h->locks[i]);
        free(h);
        return NULL;
}

void ts_http_response_done(ts_http_response *resp) {
        free(resp->content_type);
        free(resp->docker_digest);
        free(resp->location);
        free(resp->www_authenticate);
        free(resp->content_range);
        free(resp->retry_after);
        *resp = (ts_http_response) { .content_length = -1 };
}

typedef struct xfer {
        const ts_http_request *q;
        ts_http_response *resp;
        int error; /* what a callback failed with */
} xfer;

static int set_header(char **field, const char *v, size_t n) {
        char *d = strndup(v, n);
        if (!d)
                return -ENOMEM;
        free(*field);
        *field = d;
        return 0;
}

static int header_line(ts_http_response *resp, const char *buf, size_t len) {
        if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
                /* A new response (after a 100 Continue, say): forget the last one's. */
                ts_http_response_done(resp);
                const char *sp = memchr(buf, ' ', len);
                resp->status = sp ? strtol(sp + 1, NULL, 10) : 0;
                return 0;
        }
        const char *colon = memchr(buf, ':', len);
        if (!colon)
                return 0;
        size_t nlen = colon - buf;
        const char *v = colon + 1, *end = buf + len;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && strchr(" \t\r\n", end[-1]))
                end--;
        size_t vlen = end - v;
        if (vlen > HEADER_VALUE_MAX)
                return -EMSGSIZE;
#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(buf, name, nlen) == 0)
        if (IS("Content-Type"))
                return set_header(&resp->content_type, v, vlen);
        if (IS("Docker-Content-Digest"))
                return set_header(&resp->docker_digest, v, vlen);
        if (IS("Location"))
                return set_header(&resp->location, v, vlen);
        if (IS("Content-Range"))
                return set_header(&resp->content_range, v, vlen);
        if (IS("Retry-After"))
                return set_header(&resp->retry_after, v, vlen);
        if (IS("WWW-Authenticate")) {
                /* Several challenges: keep the first, unless a later one is Bearer. */
                if (resp->www_authenticate && (strncasecmp(resp->www_authenticate, "Bearer", 6) == 0 ||
                                               vlen < 6 || strncasecmp(v, "Bearer", 6) != 0))
                        return 0;
                return set_header(&resp->www_authenticate, v, vlen);
        }
        if (IS("Content-Length")) {
                char num[24];
                if (vlen == 0 || vlen >= sizeof(num))
                        return 0;
                memcpy(num, v, vlen);
                num[vlen] = '\0';
                char *e;
                long long cl = strtoll(num, &e, 10);
                resp->content_length = (*e || cl < 0) ? -1 : cl;
        }
#undef IS
        return 0;
}

static size_t on_header(char *buf, size_t size, size_t n, void *userdata) {
        xfer *x = userdata;
        int r = header_line(x->resp, buf, size * n);
        if (r < 0) {
                x->error = r;
                return 0;
        }
        return size * n;
}

static size_t on_body(char *p, size_t size, size_t n, void *userdata) {
        xfer *x = userdata;
        size_t len = size * n;
        ts_http_response *resp = x->resp;
        if (resp->status >= 200 && resp->status < 300) {
                int r = x->q->body ? x->q->body(x->q->userdata, resp, p, len) : 0;
                if (r < 0) {
                        x->error = r;
                        return CURL_WRITEFUNC_ERROR;
                }
                return len;
        }
        size_t room = sizeof(resp->error_body) - 1 - resp->error_len;
        size_t k = len < room ? len : room;
        memcpy(resp->error_body + resp->error_len, p, k);
        resp->error_len += k;
        resp->error_body[resp->error_len] = '\0';
        return len;
}

static CURLcode on_ssl_ctx(CURL *c, void *sslctx, void *userdata) {
        ts_http *h = userdata;
        X509_STORE *store = SSL_CTX_get_cert_store(sslctx);
        for (int i = 0; i < sk_X509_num(h->cas); i++)
                (void) X509_STORE_add_cert(store, sk_X509_value(h->cas, i)); /* duplicates fail */
        return CURLE_OK;
}

static int transport_error(const ts_http_request *q, CURLcode code, long os_errno,
                           const char *errbuf, ts_http_response *resp, ts_error **err) {
        _cleanup_free_ char *scheme = NULL, *host = NULL;
        long port = 0;
        char where[300] = "?";
        if (ts_http_url_origin(q->url, &scheme, &host, &port) >= 0)
                snprintf(where, sizeof(where), "%s:%ld", host, port);
        const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(code);
        switch (code) {
        case CURLE_COULDNT_CONNECT:
                if (os_errno == 0 || os_errno == ECONNREFUSED)
                        return ts_error_setf_plain(err, ECONNREFUSED, "connection to %s refused", where);
                return ts_error_set(err, (int) os_errno, "connecting to %s", where);
        case CURLE_COULDNT_RESOLVE_HOST:
                return ts_error_setf_plain(err, EHOSTUNREACH, "%s: no such host (%s)", where, detail);
        case CURLE_OPERATION_TIMEDOUT:
                return ts_error_setf_plain(err, ETIMEDOUT, "%s %s: no progress, gave up (%s)",
                                           q->method, q->url, detail);
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
                return ts_error_setf_plain(err, ECONNRESET, "%s %s: connection to %s lost (%s)",
                                           q->method, q->url, where, detail);
        case CURLE_SSL_CONNECT_ERROR:
                resp->tls_handshake_failed = true;
                return ts_error_setf_plain(err, EPROTO, "TLS handshake with %s failed (%s)", where,
                                           detail);
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_CERTPROBLEM:
                return ts_error_setf_plain(err, EPROTO, "TLS: the certificate of %s is not trusted "
                                           "(%s)", where, detail);
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return ts_error_setf_plain(err, EINVAL, "bad URL %s (%s)", q->url, detail);
        default:
                return ts_error_setf_plain(err, EIO, "%s %s: %s", q->method, q->url, detail);
        }
}

static int easy_setup(ts_http *h, CURL *c, const ts_http_request *q, struct curl_slist *hl,
                      xfer *x, char *errbuf) {
        CURLcode k = CURLE_OK;
#define SET(opt, val) (k = k ? k : curl_easy_setopt(c, opt, val))
        SET(CURLOPT_URL, q->url);
        SET(CURLOPT_SHARE, h->share);
        SET(CURLOPT_NOSIGNAL, 1L);
        SET(CURLOPT_PROTOCOLS_STR, "http,https");
        SET(CURLOPT_FOLLOWLOCATION, 0L);
        SET(CURLOPT_HTTPHEADER, hl);
        SET(CURLOPT_HEADERFUNCTION, on_header);
        SET(CURLOPT_HEADERDATA, x);
        SET(CURLOPT_WRITEFUNCTION, on_body);
        SET(CURLOPT_WRITEDATA, x);
        SET(CURLOPT_ERRORBUFFER, errbuf);
        SET(CURLOPT_USERAGENT, "thinsnap/" "0.1");
        SET(CURLOPT_CONNECTTIMEOUT, (long) h->timeout_s);
        SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
        SET(CURLOPT_LOW_SPEED_TIME, (long) h->timeout_s);
        if (h->cas) {
                SET(CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
                SET(CURLOPT_SSL_CTX_DATA, h);
        }
        if (strcmp(q->method, "HEAD") == 0)
                SET(CURLOPT_NOBODY, 1L);
        else if (strcmp(q->method, "POST") == 0)
                SET(CURLOPT_POSTFIELDS, q->post ? q->post : "");
        else
                SET(CURLOPT_HTTPGET, 1L);
#undef SET
        return k == CURLE_OK ? 0 : (k == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL);
}

int ts_http_exchange(ts_http *h, const ts_http_request *q, ts_http_response *resp,
                     ts_error **err) {
        *resp = (ts_http_response) { .content_length = -1 };
        CURL *c = curl_easy_init();
        if (!c)
                return -ENOMEM;
        struct curl_slist *hl = NULL;
        int r = 0;
        for (const char *const *l = q->headers; l && *l && r == 0; l++) {
                struct curl_slist *n = curl_slist_append(hl, *l);
                if (!n)
                        r = -ENOMEM;
                else
                        hl = n;
        }
        char errbuf[CURL_ERROR_SIZE] = "";
        xfer x = { .q = q, .resp = resp };
        if (r == 0)
                r = easy_setup(h, c, q, hl, &x, errbuf);
        if (r == 0) {
                CURLcode code = curl_easy_perform(c);
                long os_errno = 0;
                curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
                if (x.error < 0)
                        r = x.error == -EMSGSIZE ? ts_error_setf_plain(err, EBADMSG, "%s %s: a response "
                                                   "header is too long", q->method, q->url) : x.error;
                else if (code != CURLE_OK)
                        r = transport_error(q, code, os_errno, errbuf, resp, err);
        }
        curl_slist_free_all(hl);
        curl_easy_cleanup(c);
        return r;
}

int ts_http_status_errno(long status) {
        switch (status) {
        case 401:
        case 403:
                return -EACCES;
        case 404:
                return -ENOENT;
        case 400:
                return -EINVAL;
        case 416:
                return -ERANGE;
        default:
                return ts_http_status_retryable(status) ? -EAGAIN : -EPROTO;
        }
}

bool ts_http_status_retryable(long status) {
        return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

char *ts_http_error_detail(const ts_http_response *resp) {
        if (resp->error_len == 0)
                return NULL;
        json_object *o = json_tokener_parse(resp->error_body);
        json_object *errors = NULL, *code = NULL, *msg = NULL;
        char *s = NULL;
        if (o && json_object_object_get_ex(o, "errors", &errors) &&
            json_object_is_type(errors, json_type_array) && json_object_array_length(errors) > 0) {
                json_object *e = json_object_array_get_idx(errors, 0);
                json_object_object_get_ex(e, "code", &code);
                json_object_object_get_ex(e, "message", &msg);
                if (asprintf(&s, "%s: %s", code ? json_object_get_string(code) : "?",
                             msg ? json_object_get_string(msg) : "?") < 0)
                        s = NULL;
        }
        json_object_put(o);
        if (s)
                return s;
        /* Not the distribution's error form: the first line, printable bytes only. */
        size_t n = strcspn(resp->error_body, "\r\n");
        s = strndup(resp->error_body, n > 200 ? 200 : n);
        for (char *c = s; c && *c; c++)
                if ((unsigned char) *c < 0x20 || (unsigned char) *c >= 0x7f)
                        *c = '?';
        return s;
}

bool ts_http_host_is_loopback(const char *host) {
        char h[256];
        const char *end;
        if (host[0] == '[') {
                end = strchr(host, ']');
                if (!end)
                        return false;
                host++;
        } else
                end = host + strcspn(host, ":");
        size_t n = end - host;
        if (n == 0 || n >= sizeof(h))
                return false;
        memcpy(h, host, n);
        h[n] = '\0';
        if (strcasecmp(h, "localhost") == 0)
                return true;
        struct in_addr a4;
        struct in6_addr a6;
        if (inet_pton(AF_INET, h, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        return inet_pton(AF_INET6, h, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(CURLU *, curl_url_cleanup)

int ts_http_url_origin(const char *url, char **ret_scheme, char **ret_host, long *ret_port) {
        _cleanup_(curl_url_cleanupp) CURLU *u = curl_url();
        if (!u)
                return -ENOMEM;
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
                return -EINVAL;
        char *scheme = NULL, *host = NULL, *port = NULL;
        if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
                curl_free(scheme);
                curl_free(host);
                return -EINVAL;
        }
        char *s = strdup(scheme), *hs = strdup(host);
        long p = strtol(port, NULL, 10);
        curl_free(scheme);
        curl_free(host);
        curl_free(port);
        if (!s || !hs) {
                free(s);
                free(hs);
                return -ENOMEM;
        }
        *ret_scheme = s;
        *ret_host = hs;
        *ret_port = p;
        return 0;
}

int ts_http_url_resolve(const char *base, const char *url, char **ret) {
        _cleanup_(curl_url_cleanupp) CURLU *u = curl_url();
        if (!u)
                return -ENOMEM;
        if (curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
                return -EINVAL;
        char *s = NULL;
        if (curl_url_get(u, CURLUPART_URL, &s, 0) != CURLUE_OK)
                return -EINVAL;
        char *d = strdup(s);
        curl_free(s);
        if (!d)
                return -ENOMEM;
        *ret = d;
        return 0;
}

char *ts_http_escape(const char *s) {
        char *e = curl_easy_escape(NULL, s, 0);
        if (!e)
                return NULL;
        char *d = strdup(e);
        curl_free(e);
        return d;
}

static int parse_u64(const char **p, uint64_t *ret) {
        const char *s = *p;
        if (*s < '0' || *s > '9')
                return -EBADMSG;
        uint64_t v = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
                if (v > (UINT64_MAX - 9) / 10)
                        return -EBADMSG;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        *p = s;
        *ret = v;
        return 0;
}

int ts_http_content_range_parse(const char *s, uint64_t *ret_start, uint64_t *ret_end,
                                int64_t *ret_total) {
        uint64_t start, end, total = 0;
        if (strncasecmp(s, "bytes ", 6) != 0)
                return -EBADMSG;
        s += 6;
        if (parse_u64(&s, &start) < 0 || *s++ != '-' || parse_u64(&s, &end) < 0 || *s++ != '/')
                return -EBADMSG;
        bool unknown = strcmp(s, "*") == 0;
        if (!unknown && (parse_u64(&s, &total) < 0 || *s || total > INT64_MAX || end >= total))
                return -EBADMSG;
        if (end < start)
                return -EBADMSG;
        *ret_start = start;
        *ret_end = end;
        *ret_total = unknown ? -1 : (int64_t) total;
        return 0;
}
