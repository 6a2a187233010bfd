/* Platforms ("linux/amd64", "linux/arm/v7"), normalised and matched as containerd's
 * platforms package does. */
#pragma once

#include <stdbool.h>

#include "common/error.h"

typedef struct ts_oci_platform {
        char *os;           /* "linux" */
        char *architecture; /* "amd64", "arm64", "arm", "386" ... */
        char *variant;      /* "v7"; NULL when none (arm64's v8 and amd64's v1 are none) */
} ts_oci_platform;

/* Parses "os", "arch", "os/arch" or "os/arch/variant" and normalises it: lower case;
 * x86_64/x86-64 -> amd64, aarch64 -> arm64 (v8 dropped), i386 -> 386, armhf -> arm/v7,
 * armel -> arm/v6, arm -> arm/v7, macos -> darwin. A lone known OS takes this build's
 * architecture, a lone known architecture takes linux. Returns 0, -EINVAL (empty, a
 * component outside [A-Za-z0-9_-], more than three components, a lone word that is
 * neither a known OS nor a known architecture) or -ENOMEM. */
int ts_oci_platform_parse(const char *s, ts_oci_platform **ret, ts_error **err);

/* The platform this build runs on (linux/amd64 on x86_64). Returns 0 or -ENOMEM. */
int ts_oci_platform_default(ts_oci_platform **ret);

/* Normalises p in place (as parse does). Returns 0 or -ENOMEM. */
int ts_oci_platform_normalize(ts_oci_platform *p);

/* "linux/arm/v7": malloc()ed, NULL on allocation failure. */
char *ts_oci_platform_string(const ts_oci_platform *p);

/* How well have serves want, containerd's order: 0 for the same platform, then 1, 2...
 * for what it also runs (linux/amd64 runs 386; amd64/v3 runs v2, v1; arm/v7 runs v6, v5;
 * arm64 runs arm/v8..v5); -1 when it cannot. Both are compared normalised. */
int ts_oci_platform_rank(const ts_oci_platform *want, const ts_oci_platform *have);

/* Deep copy. Returns 0 or -ENOMEM. */
int ts_oci_platform_copy(const ts_oci_platform *p, ts_oci_platform **ret);

void ts_oci_platform_done(ts_oci_platform *p);
ts_oci_platform *ts_oci_platform_free(ts_oci_platform *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_oci_platform *, ts_oci_platform_free)
#define _cleanup_platform_ _cleanup_(ts_oci_platform_freep)
