/* Fuzzes what the registry client parses from outside: the first byte picks the parser,
 * the rest is its input. WWW-Authenticate challenges, token endpoint answers, docker
 * config.json documents, Content-Range values and registry error bodies. Invariants:
 * nothing crashes or leaks; a refusal carries a message; an accepted Bearer challenge has
 * a realm; an accepted token can go in a header; accepted credentials have a user; an
 * accepted Content-Range is ordered. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "registry/auth-internal.h"
#include "registry/http-internal.h"

static void refused(int r, ts_error *err) {
        if (r >= 0 || !err || !err->msg)
                abort();
}

static void challenge(const char *s) {
        ts_auth_challenge c = { 0 };
        ts_error *err = NULL;
        int r = ts_auth_challenge_parse(s, &c, &err);
        if (r < 0)
                refused(r, err);
        else if (c.scheme == TS_AUTH_BEARER && (!c.realm || !*c.realm))
                abort();
        ts_auth_challenge_done(&c);
        ts_error_free(err);
}

static void token(const uint8_t *p, size_t n) {
        char *t = NULL;
        int64_t exp = 0;
        ts_error *err = NULL;
        int r = ts_auth_token_parse(p, n, &t, &exp, &err);
        if (r < 0)
                refused(r, err);
        else {
                if (!*t || exp <= 0)
                        abort();
                for (const char *c = t; *c; c++)
                        if ((unsigned char) *c <= ' ' || (unsigned char) *c >= 0x7f)
                                abort();
        }
        free(t);
        ts_error_free(err);
}

static void docker_config(const uint8_t *p, size_t n) {
        static const char *const domains[] = { "docker.io", "127.0.0.1:5000" };
        for (size_t i = 0; i < 2; i++) {
                char *u = NULL, *pw = NULL;
                ts_error *err = NULL;
                int r = ts_auth_docker_config_parse(p, n, domains[i], &u, &pw, &err);
                if (r < 0)
                        refused(r, err);
                else if (r == 1 && (!u || !*u || !pw))
                        abort();
                free(u);
                free(pw);
                ts_error_free(err);
        }
}

static void content_range(const char *s) {
        uint64_t start, end;
        int64_t total;
        if (ts_http_content_range_parse(s, &start, &end, &total) == 0 &&
            (end < start || (total >= 0 && end >= (uint64_t) total)))
                abort();
}

static void error_detail(const uint8_t *p, size_t n) {
        ts_http_response resp = { .content_length = -1 };
        n = n < sizeof(resp.error_body) - 1 ? n : sizeof(resp.error_body) - 1;
        memcpy(resp.error_body, p, n);
        resp.error_body[n] = '\0';
        resp.error_len = n;
        free(ts_http_error_detail(&resp));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        uint8_t kind = data[0] % 5;
        const uint8_t *p = data + 1;
        size_t n = size - 1;
        char *s = strndup((const char *) p, n);
        if (!s)
                return 0;
        switch (kind) {
        case 0: challenge(s); break;
        case 1: token(p, n); break;
        case 2: docker_config(p, n); break;
        case 3: content_range(s); break;
        default: error_detail(p, n); break;
        }
        free(s);
        return 0;
}
