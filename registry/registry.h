/* A client of the OCI distribution protocol on libcurl: resolve a reference, fetch
 * manifests (size-capped, digest-verified) and blobs (streamed, size and digest verified
 * while streaming, resumed with Range after a truncated transfer or a reset).
 *
 * Transport: HTTPS with the system's CAs plus an optional CA file. Plain HTTP when asked
 * for (plain_http), and for loopback hosts (localhost, 127.0.0.0/8, ::1), which try HTTPS
 * first and fall back to HTTP when the TLS handshake fails.
 * Authentication: what the registry's WWW-Authenticate asks for. Bearer: a token from the
 * realm (anonymous GET, or with credentials an OAuth2 password-grant POST, falling back to
 * GET with Basic), cached per scope until it expires. Basic: the credentials directly.
 * Credentials come from the options, else from a docker config.json.
 * Retries: 408, 429 (Retry-After honoured, up to 10 s) and 5xx answers and lost
 * connections, with exponential backoff, max_attempts in all. Redirects are followed (at
 * most 5) without the Authorization header when they lead to another host.
 *
 * Errors (-errno, and a message naming the reference, the registry or both):
 *   -EACCES      401/403 after authenticating: "authentication required for <repo>"
 *   -ENOENT      404: the reference, manifest or blob is not there
 *   -EBADMSG     digest or size mismatch (naming both digests / sizes), a malformed answer
 *   -EOPNOTSUPP  schema 1 manifests, media types that are neither manifest nor index
 *   -EMSGSIZE    a manifest over 4 MiB
 *   -ETIMEDOUT   no progress for timeout_s
 *   -ECONNREFUSED, -EHOSTUNREACH  naming host:port
 *   -EPROTO      TLS: the certificate is not trusted, the handshake failed
 *   -EAGAIN      still 408/429/5xx, or the connection still lost, after max_attempts
 *   -EINVAL      bad options or arguments; -ENOMEM; a sink's own error as it returned it */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "oci/image.h"
#include "oci/ref.h"

#define TS_REGISTRY_MANIFEST_MAX (4 << 20)
#define TS_REGISTRY_ATTEMPTS_DEFAULT 5
#define TS_REGISTRY_TIMEOUT_DEFAULT 30

typedef struct ts_registry_options {
        bool plain_http;           /* plain HTTP to this registry, whatever its host */
        const char *ca_file;       /* PEM CAs trusted besides the system's; NULL: none */
        const void *ca_pem;        /* the same as PEM text in memory (when no ca_file) */
        size_t ca_pem_len;
        const char *username, *password; /* explicit credentials; else docker_config */
        const char *docker_config; /* a docker config.json ("auths"); NULL: none read */
        unsigned max_attempts;     /* tries per request, retries included; 0: default (5) */
        unsigned timeout_s;        /* no progress for this long fails; 0: default (30) */
} ts_registry_options;

/* One per registry; thread-safe: blobs and manifests may be fetched from several threads
 * at once. domain is the reference's ("docker.io" talks to registry-1.docker.io).
 * Returns 0, -EINVAL (a bad domain, CA file or docker config, named), -ENOMEM. */
typedef struct ts_registry ts_registry;
int ts_registry_new(const char *domain, const ts_registry_options *o, ts_registry **ret,
                    ts_error **err);
ts_registry *ts_registry_free(ts_registry *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_registry *, ts_registry_free)
#define _cleanup_registry_ _cleanup_(ts_registry_freep)

/* The descriptor (media type, digest, size) of what ref names: HEAD of
 * manifests/<tag|digest> with the OCI and Docker Accept types, GET when HEAD is refused
 * (405) or leaves out the digest. ref must be on this registry's domain. */
int ts_registry_resolve(ts_registry *r, const ts_ref *ref, ts_oci_descriptor **ret,
                        ts_error **err);

/* GET manifests/<d->digest> of repository repo_path ("library/alpine"): at most
 * d->size and TS_REGISTRY_MANIFEST_MAX bytes, digest verified. *ret is malloc()ed. */
int ts_registry_fetch_manifest(ts_registry *r, const char *repo_path, const ts_oci_descriptor *d,
                               uint8_t **ret, size_t *ret_len, ts_error **err);

/* Receives a blob's bytes in order, each byte once. Returns 0 or -errno (which ends the
 * fetch with that error). */
typedef int (*ts_registry_sink_fn)(void *userdata, const void *p, size_t n);

/* Streams blobs/<d->digest> from byte offset into sink. Verifies that it ends at d->size
 * and, when offset is 0, its sha256. Resumes with Range after a truncated transfer or a
 * lost connection (each resume counts as an attempt). */
int ts_registry_fetch_blob(ts_registry *r, const char *repo_path, const ts_oci_descriptor *d,
                           uint64_t offset, ts_registry_sink_fn sink, void *userdata,
                           ts_error **err);
