#include "ref.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "digest.h"

#define DEFAULT_DOMAIN "docker.io"

#define bad(err, s, errnum, fmt, ...)                                                   \
        ts_error_setf_plain(err, errnum, "invalid reference \"%.300s\": " fmt, s, ##__VA_ARGS__)

static bool is_lower_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c) {
        return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )* */
static bool path_component_ok(const char *c, size_t n) {
        size_t i = 0;
        for (;;) {
                size_t start = i;
                while (i < n && is_lower_alnum(c[i]))
                        i++;
                if (i == start)
                        return false;
                if (i == n)
                        return true;
                if (c[i] == '.')
                        i++;
                else if (c[i] == '_')
                        i += (i + 1 < n && c[i + 1] == '_') ? 2 : 1;
                else if (c[i] == '-')
                        while (i < n && c[i] == '-')
                                i++;
                else
                        return false;
        }
}

/* host ( "." host )* [ ":" port ], or "[" ipv6 "]" [ ":" port ] */
static bool domain_ok(const char *d) {
        const char *p = d;
        if (*p == '[') {
                p++;
                const char *start = p;
                while (*p && (strchr("0123456789abcdefABCDEF:", *p)))
                        p++;
                if (p == start || *p != ']')
                        return false;
                p++;
        } else {
                for (;;) {
                        const char *start = p;
                        while (is_alnum(*p) || *p == '-')
                                p++;
                        if (p == start || start[0] == '-' || p[-1] == '-')
                                return false;
                        if (*p != '.')
                                break;
                        p++;
                }
        }
        if (*p == ':') {
                p++;
                const char *start = p;
                while (*p >= '0' && *p <= '9')
                        p++;
                if (p == start || p - start > 5)
                        return false;
        }
        return *p == '\0';
}

/* [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
static int tag_check(const char *s, const char *tag, ts_error **err) {
        size_t n = strlen(tag);
        if (n == 0)
                return bad(err, s, EINVAL, "empty tag");
        if (n > TS_REF_TAG_MAX)
                return bad(err, s, ENAMETOOLONG, "tag is longer than %d characters",
                           TS_REF_TAG_MAX);
        for (size_t i = 0; i < n; i++) {
                char c = tag[i];
                if (!(is_alnum(c) || c == '_' || (i > 0 && (c == '.' || c == '-'))))
                        return bad(err, s, EINVAL, "tag \"%s\" has the invalid character '%c'",
                                   tag, c);
        }
        return 0;
}

static bool is_64_hex(const char *s) {
        size_t i;
        for (i = 0; s[i]; i++)
                if (!strchr("0123456789abcdef", s[i]))
                        return false;
        return i == 64;
}

static int path_check(const char *s, const char *path, ts_error **err) {
        for (const char *p = path;;) {
                const char *slash = strchr(p, '/');
                size_t n = slash ? (size_t) (slash - p) : strlen(p);
                if (n == 0)
                        return bad(err, s, EINVAL, "empty path component");
                if (!path_component_ok(p, n))
                        return bad(err, s, EINVAL,
                                   "path component \"%.*s\" must be lowercase letters and digits "
                                   "joined by '.', '_', '__' or '-'",
                                   (int) n, p);
                if (!slash)
                        return 0;
                p = slash + 1;
        }
}

/* docker's rule: the first component is a domain if it looks like one. */
static int split_domain(const char *name, char **ret_domain, char **ret_path) {
        const char *slash = strchr(name, '/');
        _cleanup_free_ char *domain = NULL, *path = NULL;
        if (slash) {
                size_t n = slash - name;
                bool lower = true;
                for (size_t i = 0; i < n; i++)
                        lower = lower && !(name[i] >= 'A' && name[i] <= 'Z');
                if (memchr(name, '.', n) || memchr(name, ':', n) ||
                    (n == 9 && strncmp(name, "localhost", 9) == 0) || !lower) {
                        domain = strndup(name, n);
                        path = strdup(slash + 1);
                }
        }
        if (!domain) {
                domain = strdup(DEFAULT_DOMAIN);
                path = strdup(name);
        }
        if (!domain || !path)
                return -ENOMEM;
        if (strcmp(domain, "index.docker.io") == 0) {
                free(domain);
                if (!(domain = strdup(DEFAULT_DOMAIN)))
                        return -ENOMEM;
        }
        if (strcmp(domain, DEFAULT_DOMAIN) == 0 && !strchr(path, '/')) {
                char *lib = NULL;
                if (asprintf(&lib, "library/%s", path) < 0)
                        return -ENOMEM;
                free(path);
                path = lib;
        }
        *ret_domain = TAKE_PTR(domain);
        *ret_path = TAKE_PTR(path);
        return 0;
}

static int split_name(const char *s, ts_ref *r, ts_error **err) {
        const char *at = strchr(s, '@');
        _cleanup_free_ char *name = strndup(s, at ? (size_t) (at - s) : strlen(s));
        if (!name)
                return -ENOMEM;
        if (at) {
                if (ts_digest_validate(at + 1) < 0)
                        return bad(err, s, EINVAL, "digest \"%s\" is not \"sha256:\" and 64 "
                                                   "lowercase hex digits", at + 1);
                if (!(r->digest = strdup(at + 1)))
                        return -ENOMEM;
        }
        char *last = strrchr(name, '/');
        char *colon = strrchr(last ? last : name, ':');
        if (colon) {
                *colon = '\0';
                int k = tag_check(s, colon + 1, err);
                if (k < 0)
                        return k;
                if (!(r->tag = strdup(colon + 1)))
                        return -ENOMEM;
        }
        if (!*name)
                return bad(err, s, EINVAL, "no repository name");
        if (is_64_hex(name))
                return bad(err, s, EINVAL, "a repository name cannot be 64 hex digits "
                                           "(an image id?)");
        int k = split_domain(name, &r->domain, &r->path);
        if (k < 0)
                return k;
        return 0;
}

int ts_ref_parse(const char *s, ts_ref **ret, ts_error **err) {
        if (!s || !*s)
                return ts_error_setf_plain(err, EINVAL, "invalid reference: empty");
        if (strlen(s) > TS_REF_MAX)
                return ts_error_setf_plain(err, ENAMETOOLONG, "invalid reference: longer than %d "
                                           "characters", TS_REF_MAX);
        _cleanup_ref_ ts_ref *r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        int k = split_name(s, r, err);
        if (k < 0)
                return k;
        for (const char *p = r->path; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        return bad(err, s, EINVAL, "repository name must be lowercase");
        if (!domain_ok(r->domain))
                return bad(err, s, EINVAL, "\"%s\" is not a valid registry host[:port]",
                           r->domain);
        k = path_check(s, r->path, err);
        if (k < 0)
                return k;
        if (strlen(r->domain) + 1 + strlen(r->path) > TS_REF_NAME_MAX)
                return bad(err, s, ENAMETOOLONG, "name is longer than %d characters",
                           TS_REF_NAME_MAX);
        if (!r->tag && !r->digest && !(r->tag = strdup("latest")))
                return -ENOMEM;
        *ret = TAKE_PTR(r);
        return 0;
}

char *ts_ref_string(const ts_ref *r) {
        char *s = NULL;
        if (asprintf(&s, "%s/%s%s%s%s%s", r->domain, r->path, r->tag ? ":" : "",
                     r->tag ? r->tag : "", r->digest ? "@" : "", r->digest ? r->digest : "") < 0)
                return NULL;
        return s;
}

char *ts_ref_repository(const ts_ref *r) {
        char *s = NULL;
        if (asprintf(&s, "%s/%s", r->domain, r->path) < 0)
                return NULL;
        return s;
}

const char *ts_ref_object(const ts_ref *r) {
        return r->digest ? r->digest : r->tag;
}

ts_ref *ts_ref_free(ts_ref *r) {
        if (r) {
                free(r->domain);
                free(r->path);
                free(r->tag);
                free(r->digest);
                free(r);
        }
        return NULL;
}
