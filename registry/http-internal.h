/* The one adapter between libcurl and the registry client: single HTTP exchanges (no
 * redirects followed, no retries: the caller decides), response headers the distribution
 * protocol needs, and CURLcode / HTTP status turned into -errno + ts_error.
 *
 * Thread-safe: every exchange has its own easy handle; handles share connections, DNS
 * and TLS sessions through one CURLSH per ts_http. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

typedef struct ts_http ts_http;

typedef struct ts_http_response {
        long status;           /* 0 until the status line arrived */
        int64_t content_length; /* -1 when absent */
        char *content_type, *docker_digest, *location, *www_authenticate, *content_range,
                *retry_after;
        char error_body[512];  /* the start of a non-2xx body, NUL-terminated */
        size_t error_len;
        bool tls_handshake_failed; /* the exchange failed in the TLS handshake (-EPROTO) */
} ts_http_response;

void ts_http_response_done(ts_http_response *resp);

/* Receives the body of a 2xx response, headers already in resp. Returns 0 or -errno,
 * which aborts the exchange with that error. */
typedef int (*ts_http_body_fn)(void *userdata, const ts_http_response *resp, const void *p,
                               size_t n);

typedef struct ts_http_request {
        const char *method;   /* "GET", "HEAD" or "POST" */
        const char *url;
        const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
        const char *post;     /* POST body (application/x-www-form-urlencoded) */
        ts_http_body_fn body; /* NULL: the body is dropped */
        void *userdata;
} ts_http_request;

/* Extra CAs trusted besides the system's: a PEM file, or PEM text. */
typedef struct ts_http_cas {
        const char *file;
        const void *pem;
        size_t pem_len;
} ts_http_cas;

/* cas: PEM certificates trusted besides the system's (NULL: none). timeout_s: a
 * connection or transfer without progress for this long fails. Returns 0, -EINVAL (CAs
 * without a certificate, named), -errno of reading the file, or -ENOMEM. */

int ts_http_new(const ts_http_cas *cas, unsigned timeout_s, ts_http **ret, ts_error **err);
ts_http *ts_http_free(ts_http *h);

/* One exchange. Returns 0 when a response arrived, whatever its status (in *resp, which
 * the caller clears with ts_http_response_done), or the transport's error:
 * -ECONNREFUSED (naming host:port), -EHOSTUNREACH (no such host, unreachable),
 * -ETIMEDOUT (no progress), -ECONNRESET (connection reset or closed early, a truncated
 * body: worth a retry), -EPROTO (TLS: certificate not trusted, handshake failed),
 * -EPROTONOSUPPORT (TLS handshake with a server that speaks plain HTTP), the body
 * callback's own error, -ENOMEM. */
int ts_http_exchange(ts_http *h, const ts_http_request *q, ts_http_response *resp,
                     ts_error **err);

/* The -errno for a final HTTP status: 401/403 -EACCES, 404 -ENOENT, 400 -EINVAL,
 * 416 -ERANGE, 408/429/5xx -EAGAIN, any other -EPROTO. */
int ts_http_status_errno(long status);

/* Whether a status is worth a retry: 408, 429, 5xx. */
bool ts_http_status_retryable(long status);

/* "code: message" of the first entry of a distribution error body
 * ({"errors":[{"code":..,"message":..}]}), else the body's start; malloc()ed or NULL. */
char *ts_http_error_detail(const ts_http_response *resp);

/* Whether host (host, host:port, [v6]:port) is a loopback name or address: localhost,
 * 127.0.0.0/8, ::1. */
bool ts_http_host_is_loopback(const char *host);

/* Scheme, host and port of an absolute URL ("https", "h.example", 443). Returns 0,
 * -EINVAL or -ENOMEM. */
int ts_http_url_origin(const char *url, char **ret_scheme, char **ret_host, long *ret_port);

/* url resolved against base (a redirect's Location). Returns 0, -EINVAL or -ENOMEM. */
int ts_http_url_resolve(const char *base, const char *url, char **ret);

/* URL-escapes s (curl_easy_escape); malloc()ed or NULL. */
char *ts_http_escape(const char *s);

/* Parses a Content-Range value "bytes START-END/TOTAL" (TOTAL may be "*": -1).
 * Returns 0 or -EBADMSG. */
int ts_http_content_range_parse(const char *s, uint64_t *ret_start, uint64_t *ret_end,
                                int64_t *ret_total);
