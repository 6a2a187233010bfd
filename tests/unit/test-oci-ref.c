#include <check.h>
#include <errno.h>
#include <string.h>

#include "oci/ref.h"
#include "tests/unit/ts-check.h"

#define D "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const struct {
        const char *in, *out, *domain, *path, *tag, *digest;
} good[] = {
        { "alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "alpine:3.19", "docker.io/library/alpine:3.19", "docker.io", "library/alpine", "3.19", NULL },
        { "user/app", "docker.io/user/app:latest", "docker.io", "user/app", "latest", NULL },
        { "docker.io/alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "index.docker.io/user/app:v1", "docker.io/user/app:v1", "docker.io", "user/app", "v1", NULL },
        { "docker.io/library/alpine:latest", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "host:5000/x/y:tag", "host:5000/x/y:tag", "host:5000", "x/y", "tag", NULL },
        { "127.0.0.1:5000/img", "127.0.0.1:5000/img:latest", "127.0.0.1:5000", "img", "latest", NULL },
        { "localhost/img:v2", "localhost/img:v2", "localhost", "img", "v2", NULL },
        { "localhost:5000/a/b/c", "localhost:5000/a/b/c:latest", "localhost:5000", "a/b/c", "latest", NULL },
        { "[::1]:5000/img:t", "[::1]:5000/img:t", "[::1]:5000", "img", "t", NULL },
        { "registry.example.com/team/app", "registry.example.com/team/app:latest", "registry.example.com", "team/app", "latest", NULL },
        /* upper case in the first component makes it a domain, as docker has it */
        { "Host/app", "Host/app:latest", "Host", "app", "latest", NULL },
        { "name@" D, "docker.io/library/name@" D, "docker.io", "library/name", NULL, D },
        { "name:tag@" D, "docker.io/library/name:tag@" D, "docker.io", "library/name", "tag", D },
        { "host:5000/x@" D, "host:5000/x@" D, "host:5000", "x", NULL, D },
        { "a.b/c__d/e-f--g/h.i_j:T_a.g-1", "a.b/c__d/e-f--g/h.i_j:T_a.g-1", "a.b", "c__d/e-f--g/h.i_j", "T_a.g-1", NULL },
        /* a lone host:port is a name with a tag */
        { "host:5000", "docker.io/library/host:5000", "docker.io", "library/host", "5000", NULL },
};

START_TEST(normalises) {
        for (size_t i = 0; i < TS_ARRAY_SIZE(good); i++) {
                ts_ref *r = NULL;
                ts_error *err = NULL;
                int k = ts_ref_parse(good[i].in, &r, &err);
                ck_assert_msg(k == 0, "%s: %d %s", good[i].in, k, ts_error_message(err, k));
                ck_assert_str_eq(r->domain, good[i].domain);
                ck_assert_str_eq(r->path, good[i].path);
                ck_assert_pstr_eq(r->tag, good[i].tag);
                ck_assert_pstr_eq(r->digest, good[i].digest);
                char *s = ts_ref_string(r);
                ck_assert_str_eq(s, good[i].out);
                free(s);
                ck_assert_str_eq(ts_ref_object(r), good[i].digest ? good[i].digest : good[i].tag);
                ts_ref_free(r);
        }
}
END_TEST

START_TEST(repository) {
        ts_ref *r = NULL;
        ck_assert_int_eq(ts_ref_parse("alpine:3", &r, NULL), 0);
        char *s = ts_ref_repository(r);
        ck_assert_str_eq(s, "docker.io/library/alpine");
        free(s);
        ts_ref_free(r);
        ck_assert_ptr_null(ts_ref_free(NULL));
}
END_TEST

static const struct {
        const char *in;
        int err;
        const char *msg;
} bad[] = {
        { "", -EINVAL, "empty" },
        { "Alpine", -EINVAL, "repository name must be lowercase" },
        { "docker.io/Library/alpine", -EINVAL, "repository name must be lowercase" },
        { "host:5000/App:v1", -EINVAL, "repository name must be lowercase" },
        { "alpine:", -EINVAL, "empty tag" },
        { "alpine:-x", -EINVAL, "tag \"-x\" has the invalid character '-'" },
        { "alpine:a/b", -EINVAL, "\"alpine:a\" is not a valid registry host" },
        { "alpine@sha256:abc", -EINVAL, "digest \"sha256:abc\"" },
        { "alpine@md5:d41d8cd98f00b204e9800998ecf8427e", -EINVAL, "digest" },
        { "alpine@", -EINVAL, "digest" },
        { "a//b", -EINVAL, "empty path component" },
        { "host:5000/", -EINVAL, "empty path component" },
        { "x/a_-b", -EINVAL, "path component \"a_-b\"" },
        { "x/-ab", -EINVAL, "path component \"-ab\"" },
        { "x/ab.", -EINVAL, "path component \"ab.\"" },
        { "x/a b", -EINVAL, "path component \"a b\"" },
        { "bad_host.com/x", -EINVAL, "\"bad_host.com\" is not a valid registry host[:port]" },
        { "-host.com/x", -EINVAL, "not a valid registry host" },
        { "host.com:/x", -EINVAL, "not a valid registry host" },
        { "host.com:123456/x", -EINVAL, "not a valid registry host" },
        { "[zz]:5000/x", -EINVAL, "not a valid registry host" },
        { ":tag", -EINVAL, "no repository name" },
        { "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", -EINVAL, "64 hex" },
};

START_TEST(rejects) {
        for (size_t i = 0; i < TS_ARRAY_SIZE(bad); i++) {
                ts_ref *r = NULL;
                ts_error *err = NULL;
                int k = ts_ref_parse(bad[i].in, &r, &err);
                ck_assert_msg(k == bad[i].err, "%s: got %d", bad[i].in, k);
                ck_assert_ptr_null(r);
                ck_assert_ptr_nonnull(err);
                ck_assert_msg(strstr(err->msg, bad[i].msg), "%s: message \"%s\" lacks \"%s\"",
                              bad[i].in, err->msg, bad[i].msg);
                ts_error_free(err);
        }
        ts_ref *r = NULL;
        ck_assert_int_eq(ts_ref_parse(NULL, &r, NULL), -EINVAL);
}
END_TEST

START_TEST(lengths) {
        char name[300], tag[200], buf[600];
        /* "docker.io/" + "library/" + 237 = 255: the longest name */
        memset(name, 'a', 237);
        name[237] = '\0';
        ts_ref *r = NULL;
        ck_assert_int_eq(ts_ref_parse(name, &r, NULL), 0);
        ts_ref_free(r);
        name[237] = 'a';
        name[238] = '\0';
        ts_error *err = NULL;
        ck_assert_int_eq(ts_ref_parse(name, &r, &err), -ENAMETOOLONG);
        ck_assert_ptr_nonnull(strstr(err->msg, "name is longer than 255"));
        ts_error_free(err);

        memset(tag, 't', 128);
        tag[128] = '\0';
        snprintf(buf, sizeof(buf), "img:%s", tag);
        ck_assert_int_eq(ts_ref_parse(buf, &r, NULL), 0);
        ts_ref_free(r);
        snprintf(buf, sizeof(buf), "img:%st", tag);
        err = NULL;
        ck_assert_int_eq(ts_ref_parse(buf, &r, &err), -ENAMETOOLONG);
        ck_assert_ptr_nonnull(strstr(err->msg, "tag is longer than 128"));
        ts_error_free(err);

        char *huge = malloc(TS_REF_MAX + 2);
        memset(huge, 'a', TS_REF_MAX + 1);
        huge[TS_REF_MAX + 1] = '\0';
        ck_assert_int_eq(ts_ref_parse(huge, &r, NULL), -ENAMETOOLONG);
        free(huge);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("oci-ref");
        TCase *tc = tcase_create("ref");
        tcase_add_test(tc, normalises);
        tcase_add_test(tc, repository);
        tcase_add_test(tc, rejects);
        tcase_add_test(tc, lengths);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return ts_check_run(suite());
}
