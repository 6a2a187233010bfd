#include "auth-internal.h"

#include <json-c/json.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define TOKEN_MARGIN_MS 5000
#define DOCKER_CONFIG_MAX (1 << 20)

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put)
#define _cleanup_json_ _cleanup_(json_object_putp)

/* ---- challenges ---- */

static bool is_token_char(char c) {
        return c > ' ' && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* value := token | quoted-string; *p is at its start. */
static int param_value(const char **p, char **ret) {
        const char *s = *p;
        FILE *f;
        char *buf = NULL;
        size_t len = 0;
        if (*s != '"') {
                const char *start = s;
                while (*s && *s != ',' && *s != ' ' && *s != '\t')
                        s++;
                if (!(*ret = strndup(start, s - start)))
                        return -ENOMEM;
                *p = s;
                return 0;
        }
        if (!(f = open_memstream(&buf, &len)))
                return -ENOMEM;
        for (s++; *s && *s != '"'; s++) {
                if (*s == '\\' && s[1])
                        s++;
                fputc(*s, f);
        }
        fclose(f);
        if (*s != '"') {
                free(buf);
                return -EBADMSG;
        }
        *p = s + 1;
        *ret = buf;
        return 0;
}

static int challenge_params(const char *s, ts_auth_challenge *c) {
        for (;;) {
                while (*s == ' ' || *s == '\t' || *s == ',')
                        s++;
                if (!*s)
                        return 0;
                const char *key = s;
                while (is_token_char(*s))
                        s++;
                size_t klen = s - key;
                while (*s == ' ' || *s == '\t')
                        s++;
                if (klen == 0 || *s++ != '=')
                        return -EBADMSG;
                while (*s == ' ' || *s == '\t')
                        s++;
                char *v = NULL;
                int r = param_value(&s, &v);
                if (r < 0)
                        return r;
                char **slot = NULL;
                if (klen == 5 && strncasecmp(key, "realm", 5) == 0)
                        slot = &c->realm;
                else if (klen == 7 && strncasecmp(key, "service", 7) == 0)
                        slot = &c->service;
                else if (klen == 5 && strncasecmp(key, "scope", 5) == 0)
                        slot = &c->scope;
                if (slot) {
                        free(*slot);
                        *slot = v;
                } else
                        free(v);
                while (*s == ' ' || *s == '\t')
                        s++;
                if (*s && *s != ',')
                        return -EBADMSG;
        }
}

int ts_auth_challenge_parse(const char *s, ts_auth_challenge *ret, ts_error **err) {
        _cleanup_(ts_auth_challenge_done) ts_auth_challenge c = { 0 };
        while (*s == ' ')
                s++;
        size_t n = strcspn(s, " \t");
        if (n == 6 && strncasecmp(s, "Bearer", 6) == 0)
                c.scheme = TS_AUTH_BEARER;
        else if (n == 5 && strncasecmp(s, "Basic", 5) == 0)
                c.scheme = TS_AUTH_BASIC;
        else
                return ts_error_setf_plain(err, EOPNOTSUPP, "registry asks for authentication "
                                           "scheme \"%.*s\", which is not supported (Bearer, "
                                           "Basic are)", (int) (n > 40 ? 40 : n), s);
        int r = challenge_params(s + n, &c);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return ts_error_setf_plain(err, EBADMSG, "malformed WWW-Authenticate \"%.200s\"", s);
        if (c.scheme == TS_AUTH_BEARER && (!c.realm || !*c.realm))
                return ts_error_setf_plain(err, EBADMSG, "WWW-Authenticate Bearer challenge "
                                           "without a realm: \"%.200s\"", s);
        *ret = c;
        c = (ts_auth_challenge) { 0 };
        return 0;
}

void ts_auth_challenge_done(ts_auth_challenge *c) {
        free(c->realm);
        free(c->service);
        free(c->scope);
        *c = (ts_auth_challenge) { 0 };
}

/* ---- token answers ---- */

static int json_doc(const void *p, size_t n, size_t max, json_object **ret) {
        if (n > max || memchr(p, '\0', n))
                return -EBADMSG;
        json_tokener *tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        json_object *o = json_tokener_parse_ex(tok, p, (int) n);
        bool ok = json_tokener_get_error(tok) == json_tokener_success &&
                  json_object_is_type(o, json_type_object);
        json_tokener_free(tok);
        if (!ok) {
                json_object_put(o);
                return -EBADMSG;
        }
        *ret = o;
        return 0;
}

static const char *str_member(json_object *o, const char *key) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        const char *s = json_object_get_string(v);
        return strlen(s) == (size_t) json_object_get_string_len(v) ? s : NULL;
}

int ts_auth_token_parse(const void *p, size_t n, char **ret_token, int64_t *ret_expires_in,
                        ts_error **err) {
        _cleanup_json_ json_object *o = NULL;
        int r = json_doc(p, n, 1 << 20, &o);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return ts_error_setf_plain(err, EBADMSG, "token endpoint answered with something "
                                           "that is not a JSON object");
        const char *t = str_member(o, "token");
        if (!t || !*t)
                t = str_member(o, "access_token");
        if (!t || !*t)
                return ts_error_setf_plain(err, EBADMSG, "token endpoint answered without a token");
        for (const char *c = t; *c; c++)
                if ((unsigned char) *c <= ' ' || (unsigned char) *c >= 0x7f)
                        return ts_error_setf_plain(err, EBADMSG, "token endpoint answered with a "
                                                   "token that cannot go in a header");
        int64_t expires = TS_AUTH_TOKEN_EXPIRES_DEFAULT;
        json_object *e = NULL;
        if (json_object_object_get_ex(o, "expires_in", &e) && json_object_is_type(e, json_type_int) &&
            json_object_get_int64(e) > 0)
                expires = json_object_get_int64(e);
        char *d = strdup(t);
        if (!d)
                return -ENOMEM;
        *ret_token = d;
        *ret_expires_in = expires;
        return 0;
}

/* ---- docker config.json ---- */

/* "https://index.docker.io/v1/" -> "index.docker.io", as docker's convertToHostname. */
static bool key_matches(const char *key, const char *domain) {
        const char *h = strstr(key, "://");
        h = h ? h + 3 : key;
        size_t n = strcspn(h, "/");
        if (strlen(domain) == n && strncasecmp(h, domain, n) == 0)
                return true;
        if (strcmp(domain, "docker.io") != 0)
                return false;
        return (n == 15 && strncasecmp(h, "index.docker.io", n) == 0) ||
               (n == 20 && strncasecmp(h, "registry-1.docker.io", n) == 0);
}

static int split_auth(const char *b64, char **ret_user, char **ret_password) {
        size_t n = strlen(b64);
        if (n == 0 || n % 4 != 0 || n > 16384)
                return -EBADMSG;
        _cleanup_free_ unsigned char *raw = malloc(n / 4 * 3 + 1);
        if (!raw)
                return -ENOMEM;
        int len = EVP_DecodeBlock(raw, (const unsigned char *) b64, (int) n);
        if (len < 0)
                return -EBADMSG;
        /* EVP_DecodeBlock counts the padding's zero bytes too. */
        for (const char *e = b64 + n; e > b64 && e[-1] == '='; e--)
                len--;
        raw[len] = '\0';
        if (memchr(raw, '\0', len))
                return -EBADMSG;
        char *colon = strchr((char *) raw, ':');
        if (!colon || colon == (char *) raw)
                return -EBADMSG;
        char *u = strndup((char *) raw, colon - (char *) raw), *pw = strdup(colon + 1);
        if (!u || !pw) {
                free(u);
                free(pw);
                return -ENOMEM;
        }
        *ret_user = u;
        *ret_password = pw;
        return 0;
}

static int entry_credentials(json_object *entry, char **ret_user, char **ret_password) {
        const char *auth = str_member(entry, "auth");
        if (auth && *auth)
                return split_auth(auth, ret_user, ret_password);
        const char *u = str_member(entry, "username"), *pw = str_member(entry, "password");
        if (!u || !*u || !pw)
                return 0;
        char *du = strdup(u), *dp = strdup(pw);
        if (!du || !dp) {
                free(du);
                free(dp);
                return -ENOMEM;
        }
        *ret_user = du;
        *ret_password = dp;
        return 0;
}

int ts_auth_docker_config_parse(const void *p, size_t n, const char *domain, char **ret_user,
                                char **ret_password, ts_error **err) {
        _cleanup_json_ json_object *o = NULL;
        int r = json_doc(p, n, DOCKER_CONFIG_MAX, &o);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return ts_error_setf_plain(err, EBADMSG, "not a JSON object (at most 1 MiB)");
        json_object *auths = NULL;
        if (!json_object_object_get_ex(o, "auths", &auths) || !auths)
                return 0;
        if (!json_object_is_type(auths, json_type_object))
                return ts_error_setf_plain(err, EBADMSG, "\"auths\" is not an object");
        json_object_object_foreach(auths, key, entry) {
                if (!key_matches(key, domain) || !json_object_is_type(entry, json_type_object))
                        continue;
                char *u = NULL, *pw = NULL;
                r = entry_credentials(entry, &u, &pw);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return ts_error_setf_plain(err, EBADMSG, "auths[\"%.100s\"]: \"auth\" is not "
                                                   "base64 of user:password", key);
                if (!u)
                        continue;
                *ret_user = u;
                *ret_password = pw;
                return 1;
        }
        return 0;
}

int ts_auth_docker_config(const char *path, const char *domain, char **ret_user,
                          char **ret_password, ts_error **err) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? 0 : ts_error_set(err, errno, "docker config %s", path);
        _cleanup_free_ char *buf = malloc(DOCKER_CONFIG_MAX + 1);
        if (!buf)
                return -ENOMEM;
        size_t n = fread(buf, 1, DOCKER_CONFIG_MAX + 1, f);
        if (ferror(f))
                return ts_error_set(err, EIO, "docker config %s", path);
        int r = ts_auth_docker_config_parse(buf, n, domain, ret_user, ret_password, err);
        if (r < 0)
                return ts_error_prefix(err, r, "docker config %s", path);
        return r;
}

char *ts_auth_basic_header(const char *user, const char *password) {
        _cleanup_free_ char *plain = NULL;
        int n = asprintf(&plain, "%s:%s", user, password);
        if (n < 0)
                return NULL;
        _cleanup_free_ unsigned char *b64 = malloc(((size_t) n + 2) / 3 * 4 + 1);
        if (!b64)
                return NULL;
        EVP_EncodeBlock(b64, (const unsigned char *) plain, n);
        char *h = NULL;
        if (asprintf(&h, "Authorization: Basic %s", b64) < 0)
                return NULL;
        return h;
}

/* ---- token cache ---- */

typedef struct token {
        struct token *next;
        char *scope, *value;
        uint64_t expires_ms;
} token;

struct ts_auth_tokens {
        pthread_mutex_t lock;
        token *head;
};

int ts_auth_tokens_new(ts_auth_tokens **ret) {
        ts_auth_tokens *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        pthread_mutex_init(&t->lock, NULL);
        *ret = t;
        return 0;
}

static void token_free(token *k) {
        free(k->scope);
        free(k->value);
        free(k);
}

ts_auth_tokens *ts_auth_tokens_free(ts_auth_tokens *t) {
        if (!t)
                return NULL;
        while (t->head) {
                token *k = t->head;
                t->head = k->next;
                token_free(k);
        }
        pthread_mutex_destroy(&t->lock);
        free(t);
        return NULL;
}

static token **find(ts_auth_tokens *t, const char *scope) {
        token **k = &t->head;
        while (*k && strcmp((*k)->scope, scope) != 0)
                k = &(*k)->next;
        return k;
}

char *ts_auth_tokens_get(ts_auth_tokens *t, const char *scope, uint64_t now_ms) {
        pthread_mutex_lock(&t->lock);
        token *k = *find(t, scope);
        char *v = (k && k->expires_ms > now_ms + TOKEN_MARGIN_MS) ? strdup(k->value) : NULL;
        pthread_mutex_unlock(&t->lock);
        return v;
}

int ts_auth_tokens_put(ts_auth_tokens *t, const char *scope, const char *value,
                       uint64_t expires_ms) {
        char *v = strdup(value);
        if (!v)
                return -ENOMEM;
        pthread_mutex_lock(&t->lock);
        token **slot = find(t, scope);
        if (*slot) {
                free((*slot)->value);
                (*slot)->value = v;
                (*slot)->expires_ms = expires_ms;
        } else {
                token *k = calloc(1, sizeof(*k));
                if (!k || !(k->scope = strdup(scope))) {
                        free(k);
                        free(v);
                        pthread_mutex_unlock(&t->lock);
                        return -ENOMEM;
                }
                k->value = v;
                k->expires_ms = expires_ms;
                *slot = k;
        }
        pthread_mutex_unlock(&t->lock);
        return 0;
}

void ts_auth_tokens_drop(ts_auth_tokens *t, const char *scope, const char *value) {
        pthread_mutex_lock(&t->lock);
        token **slot = find(t, scope);
        if (*slot && strcmp((*slot)->value, value) == 0) {
                token *k = *slot;
                *slot = k->next;
                token_free(k);
        }
        pthread_mutex_unlock(&t->lock);
}
