/* Image references, parsed and normalised as docker and containerd do:
 *
 *   alpine                       docker.io/library/alpine:latest
 *   user/app:1.2                 docker.io/user/app:1.2
 *   host:5000/x/y:tag            host:5000/x/y:tag
 *   name@sha256:<hex>            docker.io/library/name@sha256:<hex>   (no tag)
 *   name:tag@sha256:<hex>        both kept; the digest is what is fetched
 *
 * The first path component is the registry's domain when it contains '.' or ':', is
 * "localhost", or has upper case letters; otherwise the domain is docker.io, where
 * one-component names get "library/". index.docker.io is written docker.io. */
#pragma once

#include "common/error.h"

#define TS_REF_NAME_MAX 255   /* domain + "/" + path, as docker limits it */
#define TS_REF_TAG_MAX 128
#define TS_REF_MAX 4096        /* a whole reference string */

typedef struct ts_ref {
        char *domain; /* "docker.io", "host:5000", "[::1]:5000" */
        char *path;   /* "library/alpine" */
        char *tag;    /* NULL when the reference has only a digest */
        char *digest; /* NULL unless given */
} ts_ref;

/* Parses and normalises s. A name without tag or digest gets the tag "latest".
 * Returns 0, -EINVAL with a message naming what is wrong (an upper case repository,
 * a bad character, an empty component, a bad tag or digest, 64-hex names), -ENAMETOOLONG
 * (name over 255, tag over 128 characters) or -ENOMEM. */
int ts_ref_parse(const char *s, ts_ref **ret, ts_error **err);

/* "docker.io/library/alpine:latest", "...@sha256:..", "...:tag@sha256:..": malloc()ed,
 * NULL on allocation failure. */
char *ts_ref_string(const ts_ref *r);

/* "docker.io/library/alpine": malloc()ed, NULL on allocation failure. */
char *ts_ref_repository(const ts_ref *r);

/* What to ask the registry for: the digest when there is one, else the tag. */
const char *ts_ref_object(const ts_ref *r);

ts_ref *ts_ref_free(ts_ref *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_ref *, ts_ref_free)
#define _cleanup_ref_ _cleanup_(ts_ref_freep)
