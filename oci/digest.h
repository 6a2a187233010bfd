/* sha256 digests as OCI writes them ("sha256:" + 64 lowercase hex), streaming hashes
 * (OpenSSL EVP), and the chain ids that name a layer stack. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/macro.h"

#define TS_DIGEST_MAX 72 /* "sha256:" + 64 hex + NUL */
#define TS_DIGEST_PREFIX "sha256:"

/* 0 when s is "sha256:" followed by exactly 64 lowercase hex digits; -EINVAL otherwise
 * (another algorithm, upper case, wrong length, NULL). */
int ts_digest_validate(const char *s);

/* The hex part of a valid digest (after "sha256:"). */
static inline const char *ts_digest_hex(const char *digest) {
        return digest + sizeof(TS_DIGEST_PREFIX) - 1;
}

typedef struct ts_sha256 ts_sha256;

/* A new streaming sha256. Returns 0 or -ENOMEM. */
int ts_sha256_new(ts_sha256 **ret);
void ts_sha256_update(ts_sha256 *h, const void *p, size_t n);
/* Writes "sha256:<hex>" of everything given so far. The hash may not be updated or
 * finalised again, only freed or reset. */
void ts_sha256_final(ts_sha256 *h, char ret[TS_DIGEST_MAX]);
/* Starts over, as if new. */
void ts_sha256_reset(ts_sha256 *h);
ts_sha256 *ts_sha256_free(ts_sha256 *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(ts_sha256 *, ts_sha256_free)
#define _cleanup_sha256_ _cleanup_(ts_sha256_freep)

/* The digest of a buffer. Returns 0 or -ENOMEM. */
int ts_digest_buffer(const void *p, size_t n, char ret[TS_DIGEST_MAX]);

/* The chain ids of a layer stack from its diff_ids, bottom first:
 * chain[0] = diff_ids[0]; chain[i] = sha256(chain[i-1] + " " + diff_ids[i]).
 * Returns 0, -EINVAL (a diff_id that is not a valid digest) or -ENOMEM. */
int ts_digest_chain_ids(char *const *diff_ids, size_t n, char (*ret)[TS_DIGEST_MAX]);
