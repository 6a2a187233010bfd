#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry/auth-internal.h"
#include "registry/http-internal.h"
#include "registry/registry.h"
#include "tests/unit/ts-check.h"

START_TEST(challenges) {
        ts_auth_challenge c = { 0 };
        ck_assert_int_eq(ts_auth_challenge_parse(
                                 "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
                                 "scope=\"repository:library/alpine:pull\"", &c, NULL), 0);
        ck_assert_int_eq(c.scheme, TS_AUTH_BEARER);
        ck_assert_str_eq(c.realm, "https://auth.docker.io/token");
        ck_assert_str_eq(c.service, "registry.docker.io");
        ck_assert_str_eq(c.scope, "repository:library/alpine:pull");
        ts_auth_challenge_done(&c);

        /* case, spaces, unquoted values, escapes, unknown parameters, two scopes */
        ck_assert_int_eq(ts_auth_challenge_parse(
                                 "bearer  REALM = http://127.0.0.1:9/t , error=\"insufficient_scope\","
                                 "Service=\"a \\\"q\\\" b\", scope=\"repository:a:pull repository:b:pull\"",
                                 &c, NULL), 0);
        ck_assert_str_eq(c.realm, "http://127.0.0.1:9/t");
        ck_assert_str_eq(c.service, "a \"q\" b");
        ck_assert_str_eq(c.scope, "repository:a:pull repository:b:pull");
        ts_auth_challenge_done(&c);

        ck_assert_int_eq(ts_auth_challenge_parse("Basic realm=\"registry\"", &c, NULL), 0);
        ck_assert_int_eq(c.scheme, TS_AUTH_BASIC);
        ck_assert_str_eq(c.realm, "registry");
        ck_assert_ptr_null(c.service);
        ts_auth_challenge_done(&c);
        ck_assert_int_eq(ts_auth_challenge_parse("Basic", &c, NULL), 0);
        ts_auth_challenge_done(&c);

        static const struct {
                const char *in;
                int r;
                const char *msg;
        } bad[] = {
                { "Negotiate abc", -EOPNOTSUPP, "scheme \"Negotiate\", which is not supported" },
                { "", -EOPNOTSUPP, "not supported" },
                { "Bearer service=\"x\"", -EBADMSG, "Bearer challenge without a realm" },
                { "Bearer realm=\"x", -EBADMSG, "malformed WWW-Authenticate" },
                { "Bearer realm", -EBADMSG, "malformed" },
                { "Bearer =x", -EBADMSG, "malformed" },
                { "Bearer realm=\"a\" service=\"b\"", -EBADMSG, "malformed" },
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(bad); i++) {
                ts_error *err = NULL;
                c = (ts_auth_challenge) { 0 };
                ck_assert_msg(ts_auth_challenge_parse(bad[i].in, &c, &err) == bad[i].r, "%s", bad[i].in);
                ck_assert_msg(strstr(err->msg, bad[i].msg), "%s: %s", bad[i].in, err->msg);
                ck_assert_ptr_null(c.realm);
                ts_error_free(err);
        }
}
END_TEST

START_TEST(tokens) {
        char *tok = NULL;
        int64_t exp = 0;
        const char *a = "{\"token\":\"abc.def\",\"access_token\":\"zzz\",\"expires_in\":300}";
        ck_assert_int_eq(ts_auth_token_parse(a, strlen(a), &tok, &exp, NULL), 0);
        ck_assert_str_eq(tok, "abc.def");
        ck_assert_int_eq(exp, 300);
        free(tok);
        const char *b = "{\"access_token\":\"xyz\",\"expires_in\":0}";
        ck_assert_int_eq(ts_auth_token_parse(b, strlen(b), &tok, &exp, NULL), 0);
        ck_assert_str_eq(tok, "xyz");
        ck_assert_int_eq(exp, TS_AUTH_TOKEN_EXPIRES_DEFAULT);
        free(tok);

        static const struct {
                const char *in, *msg;
        } bad[] = {
                { "", "not a JSON object" },
                { "[\"token\"]", "not a JSON object" },
                { "{\"expires_in\":3}", "without a token" },
                { "{\"token\":\"\"}", "without a token" },
                { "{\"token\":7}", "without a token" },
                { "{\"token\":\"a\\nb\"}", "cannot go in a header" },
                { "{\"token\":\"a b\"}", "cannot go in a header" },
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(bad); i++) {
                ts_error *err = NULL;
                tok = NULL;
                ck_assert_int_eq(ts_auth_token_parse(bad[i].in, strlen(bad[i].in), &tok, &exp, &err), -EBADMSG);
                ck_assert_ptr_null(tok);
                ck_assert_msg(strstr(err->msg, bad[i].msg), "%s: %s", bad[i].in, err->msg);
                ts_error_free(err);
        }
}
END_TEST

static int creds(const char *doc, const char *domain, char **u, char **p) {
        *u = *p = NULL;
        return ts_auth_docker_config_parse(doc, strlen(doc), domain, u, p, NULL);
}

START_TEST(docker_config) {
        /* dXNlcjpwYTpzcw== is "user:pa:ss"; Ym9iOnNlY3JldA== "bob:secret" */
        const char *doc = "{\"auths\":{"
                          "\"https://index.docker.io/v1/\":{\"auth\":\"dXNlcjpwYTpzcw==\"},"
                          "\"127.0.0.1:5000\":{\"auth\":\"Ym9iOnNlY3JldA==\"},"
                          "\"http://reg.example.com/some/path\":{\"username\":\"u2\",\"password\":\"p2\"},"
                          "\"empty.example.com\":{}},"
                          "\"credsStore\":\"desktop\"}";
        char *u, *p;
        ck_assert_int_eq(creds(doc, "docker.io", &u, &p), 1);
        ck_assert_str_eq(u, "user");
        ck_assert_str_eq(p, "pa:ss");
        free(u);
        free(p);
        ck_assert_int_eq(creds(doc, "127.0.0.1:5000", &u, &p), 1);
        ck_assert_str_eq(u, "bob");
        ck_assert_str_eq(p, "secret");
        free(u);
        free(p);
        ck_assert_int_eq(creds(doc, "reg.example.com", &u, &p), 1);
        ck_assert_str_eq(u, "u2");
        free(u);
        free(p);
        ck_assert_int_eq(creds(doc, "127.0.0.1:5001", &u, &p), 0);
        ck_assert_int_eq(creds(doc, "empty.example.com", &u, &p), 0);
        ck_assert_int_eq(creds(doc, "example.com", &u, &p), 0);
        ck_assert_ptr_null(u);
        ck_assert_int_eq(creds("{}", "docker.io", &u, &p), 0);
        ck_assert_int_eq(creds("{\"auths\":{\"registry-1.docker.io\":{\"auth\":\"Ym9iOnNlY3JldA==\"}}}",
                               "docker.io", &u, &p), 1);
        free(u);
        free(p);

        ts_error *err = NULL;
        const char *bad = "{\"auths\":{\"h\":{\"auth\":\"bm9jb2xvbg==\"}}}"; /* "nocolon" */
        ck_assert_int_eq(ts_auth_docker_config_parse(bad, strlen(bad), "h", &u, &p, &err), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(err->msg, "auths[\"h\"]: \"auth\" is not base64 of user:password"));
        err = ts_error_free(err);
        bad = "{\"auths\":{\"h\":{\"auth\":\"!!!!\"}}}";
        ck_assert_int_eq(ts_auth_docker_config_parse(bad, strlen(bad), "h", &u, &p, &err), -EBADMSG);
        err = ts_error_free(err);
        bad = "{\"auths\":[]}";
        ck_assert_int_eq(ts_auth_docker_config_parse(bad, strlen(bad), "h", &u, &p, &err), -EBADMSG);
        err = ts_error_free(err);
        ck_assert_int_eq(ts_auth_docker_config_parse("{", 1, "h", &u, &p, &err), -EBADMSG);
        ts_error_free(err);
        ck_assert_int_eq(ts_auth_docker_config("/nonexistent/config.json", "h", &u, &p, NULL), 0);

        char *h = ts_auth_basic_header("bob", "secret");
        ck_assert_str_eq(h, "Authorization: Basic Ym9iOnNlY3JldA==");
        free(h);
}
END_TEST

START_TEST(token_cache) {
        ts_auth_tokens *t = NULL;
        ck_assert_int_eq(ts_auth_tokens_new(&t), 0);
        ck_assert_ptr_null(ts_auth_tokens_get(t, "repository:a:pull", 0));
        ck_assert_int_eq(ts_auth_tokens_put(t, "repository:a:pull", "A1", 60000), 0);
        ck_assert_int_eq(ts_auth_tokens_put(t, "repository:b:pull", "B1", 60000), 0);
        char *v = ts_auth_tokens_get(t, "repository:a:pull", 1000);
        ck_assert_str_eq(v, "A1");
        free(v);
        /* no longer handed out within the margin before it expires */
        ck_assert_ptr_null(ts_auth_tokens_get(t, "repository:a:pull", 56000));
        ck_assert_int_eq(ts_auth_tokens_put(t, "repository:a:pull", "A2", 120000), 0);
        v = ts_auth_tokens_get(t, "repository:a:pull", 56000);
        ck_assert_str_eq(v, "A2");
        free(v);
        ts_auth_tokens_drop(t, "repository:a:pull", "A1"); /* not the one held: kept */
        v = ts_auth_tokens_get(t, "repository:a:pull", 0);
        ck_assert_str_eq(v, "A2");
        free(v);
        ts_auth_tokens_drop(t, "repository:a:pull", "A2");
        ck_assert_ptr_null(ts_auth_tokens_get(t, "repository:a:pull", 0));
        v = ts_auth_tokens_get(t, "repository:b:pull", 0);
        ck_assert_str_eq(v, "B1");
        free(v);
        ck_assert_ptr_null(ts_auth_tokens_free(t));
}
END_TEST

START_TEST(http_helpers) {
        uint64_t s, e;
        int64_t total;
        ck_assert_int_eq(ts_http_content_range_parse("bytes 100-199/200", &s, &e, &total), 0);
        ck_assert_uint_eq(s, 100);
        ck_assert_uint_eq(e, 199);
        ck_assert_int_eq(total, 200);
        ck_assert_int_eq(ts_http_content_range_parse("bytes 0-0/*", &s, &e, &total), 0);
        ck_assert_int_eq(total, -1);
        ck_assert_int_eq(ts_http_content_range_parse("bytes 5-4/10", &s, &e, &total), -EBADMSG);
        ck_assert_int_eq(ts_http_content_range_parse("bytes 0-10/10", &s, &e, &total), -EBADMSG);
        ck_assert_int_eq(ts_http_content_range_parse("bytes */10", &s, &e, &total), -EBADMSG);
        ck_assert_int_eq(ts_http_content_range_parse("items 0-1/2", &s, &e, &total), -EBADMSG);
        ck_assert_int_eq(ts_http_content_range_parse("bytes 0-1/2x", &s, &e, &total), -EBADMSG);
        ck_assert_int_eq(ts_http_content_range_parse("bytes 99999999999999999999-1/2", &s, &e, &total), -EBADMSG);

        ck_assert(ts_http_host_is_loopback("localhost"));
        ck_assert(ts_http_host_is_loopback("LOCALHOST:5000"));
        ck_assert(ts_http_host_is_loopback("127.0.0.1:5000"));
        ck_assert(ts_http_host_is_loopback("127.255.0.3"));
        ck_assert(ts_http_host_is_loopback("[::1]:5000"));
        ck_assert(!ts_http_host_is_loopback("128.0.0.1"));
        ck_assert(!ts_http_host_is_loopback("localhost.example.com"));
        ck_assert(!ts_http_host_is_loopback("[::2]:5000"));
        ck_assert(!ts_http_host_is_loopback("registry-1.docker.io"));
        ck_assert(!ts_http_host_is_loopback("[::1"));

        char *scheme, *host, *u;
        long port;
        ck_assert_int_eq(ts_http_url_origin("https://Reg.example.com/v2/x", &scheme, &host, &port), 0);
        ck_assert_str_eq(scheme, "https");
        ck_assert_int_eq(port, 443);
        free(scheme);
        free(host);
        ck_assert_int_eq(ts_http_url_origin("http://[::1]:5000/v2/", &scheme, &host, &port), 0);
        ck_assert_str_eq(host, "[::1]");
        ck_assert_int_eq(port, 5000);
        free(scheme);
        free(host);
        ck_assert_int_eq(ts_http_url_resolve("http://a:1/v2/x/blobs/d", "/store/d?sig=1", &u), 0);
        ck_assert_str_eq(u, "http://a:1/store/d?sig=1");
        free(u);
        ck_assert_int_eq(ts_http_url_resolve("http://a:1/v2/x", "https://b/y", &u), 0);
        ck_assert_str_eq(u, "https://b/y");
        free(u);

        ck_assert_int_eq(ts_http_status_errno(401), -EACCES);
        ck_assert_int_eq(ts_http_status_errno(404), -ENOENT);
        ck_assert_int_eq(ts_http_status_errno(503), -EAGAIN);
        ck_assert_int_eq(ts_http_status_errno(418), -EPROTO);
        ck_assert(ts_http_status_retryable(429));
        ck_assert(!ts_http_status_retryable(404));

        ts_http_response r = { 0 };
        const char *body = "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}";
        strcpy(r.error_body, body);
        r.error_len = strlen(body);
        char *d = ts_http_error_detail(&r);
        ck_assert_str_eq(d, "MANIFEST_UNKNOWN: manifest unknown");
        free(d);
        strcpy(r.error_body, "<html>\x01 bad gateway\r\nmore");
        r.error_len = strlen(r.error_body);
        d = ts_http_error_detail(&r);
        ck_assert_str_eq(d, "<html>? bad gateway");
        free(d);
}
END_TEST

START_TEST(registry_new) {
        ts_registry *r = NULL;
        ts_error *err = NULL;
        ck_assert_int_eq(ts_registry_new("docker.io", NULL, &r, NULL), 0);
        ck_assert_ptr_null(ts_registry_free(r));
        static const char *const bad[] = { "", "a/b", "h@x", "h?x", NULL };
        for (size_t i = 0; i < TS_ARRAY_SIZE(bad); i++) {
                r = NULL;
                ck_assert_int_eq(ts_registry_new(bad[i], NULL, &r, &err), -EINVAL);
                ck_assert_ptr_null(r);
                ck_assert_ptr_nonnull(strstr(err->msg, "invalid registry domain"));
                err = ts_error_free(err);
        }

        ts_registry_options o = { .ca_file = "/nonexistent/ca.pem" };
        ck_assert_int_eq(ts_registry_new("h:5000", &o, &r, &err), -ENOENT);
        ck_assert_ptr_nonnull(strstr(err->msg, "registry h:5000: CA file /nonexistent/ca.pem"));
        err = ts_error_free(err);
        o = (ts_registry_options) { .ca_pem = "not a certificate", .ca_pem_len = 17 };
        ck_assert_int_eq(ts_registry_new("h:5000", &o, &r, &err), -EINVAL);
        ck_assert_ptr_nonnull(strstr(err->msg, "holds no PEM certificate"));
        err = ts_error_free(err);

        char path[] = "/tmp/test-registry-config-XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, "{\"auths\":7}", 11), 11);
        close(fd);
        o = (ts_registry_options) { .docker_config = path };
        ck_assert_int_eq(ts_registry_new("h:5000", &o, &r, &err), -EBADMSG);
        ck_assert_ptr_nonnull(strstr(err->msg, "docker config /tmp/test-registry-config-"));
        ck_assert_ptr_nonnull(strstr(err->msg, "\"auths\" is not an object"));
        err = ts_error_free(err);
        unlink(path);
        o = (ts_registry_options) { .docker_config = "/nonexistent/config.json" };
        ck_assert_int_eq(ts_registry_new("h:5000", &o, &r, NULL), 0); /* no file: no credentials */
        ts_registry_free(r);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("registry-auth");
        TCase *tc = tcase_create("auth");
        tcase_add_test(tc, challenges);
        tcase_add_test(tc, tokens);
        tcase_add_test(tc, docker_config);
        tcase_add_test(tc, token_cache);
        tcase_add_test(tc, http_helpers);
        tcase_add_test(tc, registry_new);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return ts_check_run(suite());
}
