#include "platform.h"

#include <stdio.h>
#include <string.h>

#define PART_MAX 64

typedef struct norm {
        char os[PART_MAX], arch[PART_MAX], variant[PART_MAX];
} norm;

static const char *const known_os[] = {
        "aix",    "android", "darwin", "dragonfly", "freebsd", "hurd",    "illumos", "ios",   "js",
        "linux",  "nacl",    "netbsd", "openbsd",   "plan9",   "solaris", "windows", "zos",   NULL,
};
static const char *const known_arch[] = {
        "386",   "amd64",    "amd64p32",    "arm",     "armbe",  "arm64",  "arm64be", "ppc64",
        "ppc64le", "loong64", "mips",       "mipsle",  "mips64", "mips64le", "mips64p32",
        "mips64p32le", "ppc", "riscv",      "riscv64", "s390",   "s390x",  "sparc",   "sparc64",
        "wasm",  NULL,
};

#if defined(__x86_64__)
#define BUILD_ARCH "amd64"
#define BUILD_VARIANT NULL
#elif defined(__aarch64__)
#define BUILD_ARCH "arm64"
#define BUILD_VARIANT NULL
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7
#define BUILD_ARCH "arm"
#define BUILD_VARIANT "v7"
#elif defined(__arm__)
#define BUILD_ARCH "arm"
#define BUILD_VARIANT "v6"
#elif defined(__i386__)
#define BUILD_ARCH "386"
#define BUILD_VARIANT NULL
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BUILD_ARCH "ppc64le"
#define BUILD_VARIANT NULL
#elif defined(__s390x__)
#define BUILD_ARCH "s390x"
#define BUILD_VARIANT NULL
#elif defined(__riscv) && __riscv_xlen == 64
#define BUILD_ARCH "riscv64"
#define BUILD_VARIANT NULL
#else
#error "unknown build architecture: add it to oci/platform.c"
#endif

static bool in_list(const char *const *list, const char *s) {
        for (; *list; list++)
                if (strcmp(*list, s) == 0)
                        return true;
        return false;
}

static bool lower_into(char dst[PART_MAX], const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n >= PART_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                dst[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char) (s[i] - 'A' + 'a') : s[i];
        dst[n] = '\0';
        return true;
}

/* containerd's normalizeOS and normalizeArch. */
static bool normalize_into(const char *os, const char *arch, const char *variant, norm *n) {
        if (!lower_into(n->os, os) || !lower_into(n->arch, arch) || !lower_into(n->variant, variant))
                return false;
        if (strcmp(n->os, "macos") == 0)
                strcpy(n->os, "darwin");
        char *a = n->arch, *v = n->variant;
        if (strcmp(a, "i386") == 0) {
                strcpy(a, "386");
                v[0] = '\0';
        } else if (strcmp(a, "x86_64") == 0 || strcmp(a, "x86-64") == 0 || strcmp(a, "amd64") == 0) {
                strcpy(a, "amd64");
                if (strcmp(v, "v1") == 0)
                        v[0] = '\0';
        } else if (strcmp(a, "aarch64") == 0 || strcmp(a, "arm64") == 0) {
                strcpy(a, "arm64");
                if (strcmp(v, "8") == 0 || strcmp(v, "v8") == 0)
                        v[0] = '\0';
        } else if (strcmp(a, "armhf") == 0) {
                strcpy(a, "arm");
                strcpy(v, "v7");
        } else if (strcmp(a, "armel") == 0) {
                strcpy(a, "arm");
                strcpy(v, "v6");
        } else if (strcmp(a, "arm") == 0) {
                if (v[0] == '\0' || strcmp(v, "7") == 0)
                        strcpy(v, "v7");
                else if (strcmp(v, "5") == 0 || strcmp(v, "6") == 0 || strcmp(v, "8") == 0) {
                        v[1] = v[0];
                        v[0] = 'v';
                        v[2] = '\0';
                }
        }
        return true;
}

static int set_from(ts_oci_platform *p, const norm *n) {
        char *os = strdup(n->os), *arch = strdup(n->arch);
        char *variant = n->variant[0] ? strdup(n->variant) : NULL;
        if (!os || !arch || (n->variant[0] && !variant)) {
                free(os);
                free(arch);
                free(variant);
                return -ENOMEM;
        }
        ts_oci_platform_done(p);
        *p = (ts_oci_platform) { .os = os, .architecture = arch, .variant = variant };
        return 0;
}

int ts_oci_platform_normalize(ts_oci_platform *p) {
        norm n;
        if (!normalize_into(p->os, p->architecture, p->variant, &n))
                return 0; /* too long to be a known name: nothing to normalise */
        return set_from(p, &n);
}

static bool component_ok(const char *s, size_t n) {
        if (n == 0 || n >= PART_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
                        return false;
        return true;
}

static int parse_parts(const char *s, char parts[3][PART_MAX], size_t *ret_n, ts_error **err) {
        size_t n = 0;
        for (const char *p = s;;) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t) (slash - p) : strlen(p);
                if (n == 3)
                        return ts_error_setf_plain(err, EINVAL, "invalid platform \"%.200s\": "
                                                   "more than os/architecture/variant", s);
                if (!component_ok(p, len))
                        return ts_error_setf_plain(err, EINVAL, "invalid platform \"%.200s\": "
                                                   "component \"%.*s\" must match [A-Za-z0-9_-]+",
                                                   s, (int) (len < 100 ? len : 100), p);
                memcpy(parts[n], p, len);
                parts[n++][len] = '\0';
                if (!slash)
                        break;
                p = slash + 1;
        }
        *ret_n = n;
        return 0;
}

int ts_oci_platform_parse(const char *s, ts_oci_platform **ret, ts_error **err) {
        if (!s || !*s)
                return ts_error_setf_plain(err, EINVAL, "invalid platform: empty");
        char parts[3][PART_MAX];
        size_t n = 0;
        int r = parse_parts(s, parts, &n, err);
        if (r < 0)
                return r;
        norm nm;
        if (n == 1) {
                normalize_into(parts[0], BUILD_ARCH, BUILD_VARIANT, &nm);
                if (!in_list(known_os, nm.os)) {
                        normalize_into("linux", parts[0], NULL, &nm);
                        if (!in_list(known_arch, nm.arch))
                                return ts_error_setf_plain(err, EINVAL, "invalid platform \"%s\": "
                                                           "unknown operating system or "
                                                           "architecture", s);
                }
        } else
                normalize_into(parts[0], parts[1], n == 3 ? parts[2] : NULL, &nm);
        _cleanup_platform_ ts_oci_platform *p = calloc(1, sizeof(*p));
        if (!p || set_from(p, &nm) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(p);
        return 0;
}

int ts_oci_platform_default(ts_oci_platform **ret) {
        norm nm;
        normalize_into("linux", BUILD_ARCH, BUILD_VARIANT, &nm);
        _cleanup_platform_ ts_oci_platform *p = calloc(1, sizeof(*p));
        if (!p || set_from(p, &nm) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(p);
        return 0;
}

char *ts_oci_platform_string(const ts_oci_platform *p) {
        char *s = NULL;
        if (asprintf(&s, "%s/%s%s%s", p->os ? p->os : "", p->architecture ? p->architecture : "",
                     p->variant ? "/" : "", p->variant ? p->variant : "") < 0)
                return NULL;
        return s;
}

/* containerd's platformVector, walked: the i-th (arch, variant) want also runs. */
static int vector_rank(const norm *w, const norm *h) {
        if (strcmp(w->os, h->os) != 0)
                return -1;
        int rank = 0;
        if (strcmp(h->arch, w->arch) == 0 && strcmp(h->variant, w->variant) == 0)
                return 0;
        const char *arm_from = NULL;
        if (strcmp(w->arch, "amd64") == 0) {
                int v = 0;
                if (sscanf(w->variant, "v%d", &v) == 1 && v > 1)
                        for (v--; v >= 1; v--) {
                                rank++;
                                char want[16] = "";
                                if (v > 1)
                                        snprintf(want, sizeof(want), "v%d", v);
                                if (strcmp(h->arch, "amd64") == 0 && strcmp(h->variant, want) == 0)
                                        return rank;
                        }
                rank++;
                return strcmp(h->arch, "386") == 0 && h->variant[0] == '\0' ? rank : -1;
        }
        if (strcmp(w->arch, "arm64") == 0) {
                rank++;
                arm_from = w->variant[0] ? w->variant : "v8";
                if (strcmp(h->arch, "arm") == 0 && strcmp(h->variant, arm_from) == 0)
                        return rank;
        } else if (strcmp(w->arch, "arm") == 0)
                arm_from = w->variant;
        if (!arm_from)
                return -1;
        int v = 0;
        if (sscanf(arm_from, "v%d", &v) == 1 && v > 5 && v < 100)
                for (v--; v >= 5; v--) {
                        rank++;
                        char want[16];
                        snprintf(want, sizeof(want), "v%d", v);
                        if (strcmp(h->arch, "arm") == 0 && strcmp(h->variant, want) == 0)
                                return rank;
                }
        return -1;
}

int ts_oci_platform_rank(const ts_oci_platform *want, const ts_oci_platform *have) {
        norm w, h;
        if (!want->os || !want->architecture || !have->os || !have->architecture)
                return -1;
        if (!normalize_into(want->os, want->architecture, want->variant, &w) ||
            !normalize_into(have->os, have->architecture, have->variant, &h))
                return -1;
        return vector_rank(&w, &h);
}

int ts_oci_platform_copy(const ts_oci_platform *p, ts_oci_platform **ret) {
        _cleanup_platform_ ts_oci_platform *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->os = p->os ? strdup(p->os) : NULL;
        c->architecture = p->architecture ? strdup(p->architecture) : NULL;
        c->variant = p->variant ? strdup(p->variant) : NULL;
        if ((p->os && !c->os) || (p->architecture && !c->architecture) ||
            (p->variant && !c->variant))
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

void ts_oci_platform_done(ts_oci_platform *p) {
        free(p->os);
        free(p->architecture);
        free(p->variant);
        *p = (ts_oci_platform) { 0 };
}

ts_oci_platform *ts_oci_platform_free(ts_oci_platform *p) {
        if (p) {
                ts_oci_platform_done(p);
                free(p);
        }
        return NULL;
}
