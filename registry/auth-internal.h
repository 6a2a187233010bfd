/* Registry authentication pieces that parse what comes from outside: WWW-Authenticate
 * challenges, token endpoint answers, docker config.json credentials; and the token cache
 * (per scope, with expiry). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef enum ts_auth_scheme {
        TS_AUTH_NONE = 0,
        TS_AUTH_BASIC,
        TS_AUTH_BEARER,
} ts_auth_scheme;

typedef struct ts_auth_challenge {
        ts_auth_scheme scheme;
        char *realm, *service, *scope; /* parameters as given; NULL when absent */
} ts_auth_challenge;

/* Parses a WWW-Authenticate value (`Bearer realm="..",service="..",scope=".."`, `Basic
 * realm=".."`): the scheme, case-insensitive, and its key=value / key="quoted" parameters.
 * Returns 0, -EOPNOTSUPP (another scheme, named), -EBADMSG (syntax; a Bearer challenge
 * without realm) or -ENOMEM. */
int ts_auth_challenge_parse(const char *s, ts_auth_challenge *ret, ts_error **err);
void ts_auth_challenge_done(ts_auth_challenge *c);

#define TS_AUTH_TOKEN_EXPIRES_DEFAULT 60 /* seconds, when the answer says nothing */

/* Reads a token endpoint's answer: "token", else "access_token"; "expires_in" (seconds,
 * TS_AUTH_TOKEN_EXPIRES_DEFAULT when absent or not positive). Returns 0, -EBADMSG
 * (named) or -ENOMEM. */
int ts_auth_token_parse(const void *p, size_t n, char **ret_token, int64_t *ret_expires_in,
                        ts_error **err);

/* Credentials for domain in a docker config.json document: "auths" keyed by host (the
 * key may carry a scheme and a path, as "https://index.docker.io/v1/" does); base64
 * "auth" of user:password, or "username" and "password". docker.io matches
 * index.docker.io and registry-1.docker.io keys too. Returns 1 (found, *ret_* set),
 * 0 (none), -EBADMSG (named) or -ENOMEM. */
int ts_auth_docker_config_parse(const void *p, size_t n, const char *domain, char **ret_user,
                                char **ret_password, ts_error **err);

/* The same from a file; a missing file is 0. */
int ts_auth_docker_config(const char *path, const char *domain, char **ret_user,
                          char **ret_password, ts_error **err);

/* "Authorization: Basic <base64(user:password)>", malloc()ed, or NULL. */
char *ts_auth_basic_header(const char *user, const char *password);

/* Tokens by scope. Thread-safe. */
typedef struct ts_auth_tokens ts_auth_tokens;
int ts_auth_tokens_new(ts_auth_tokens **ret);
ts_auth_tokens *ts_auth_tokens_free(ts_auth_tokens *t);
/* A copy of the token for scope that stays valid past now_ms + a margin, or NULL. */
char *ts_auth_tokens_get(ts_auth_tokens *t, const char *scope, uint64_t now_ms);
/* Stores (or replaces) scope's token until expires_ms. Returns 0 or -ENOMEM. */
int ts_auth_tokens_put(ts_auth_tokens *t, const char *scope, const char *token,
                       uint64_t expires_ms);
/* Forgets scope's token if it is still token (a registry refused it). */
void ts_auth_tokens_drop(ts_auth_tokens *t, const char *scope, const char *token);
