#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "store/label.h"

typedef struct value {
        enum { V_STRING, V_INT, V_BOOL } type;
        char *s; /* V_STRING, owned */
        uint64_t i;
        bool b;
} value;

static const char *skip_ws(const char *p, const char *end) {
        while (p < end && (*p == ' ' || *p == '\t'))
                p++;
        return p;
}

/* Parses a value at p (up to end of line); returns 0 or an error text. */
static const char *parse_value(const char *p, const char *end, value *v) {
        if (p >= end)
                return "a value is missing";
        if (*p == '"') {
                size_t cap = (size_t) (end - p) + 1;
                char *out = malloc(cap), *o = out;
                if (!out)
                        return "out of memory";
                for (p++; p < end && *p != '"'; p++) {
                        if ((unsigned char) *p < 0x20) {
                                free(out);
                                return "control character in a string";
                        }
                        if (*p == '\\') {
                                if (++p >= end)
                                        break;
                                switch (*p) {
                                case '"': *o++ = '"'; break;
                                case '\\': *o++ = '\\'; break;
                                case 'n': *o++ = '\n'; break;
                                case 't': *o++ = '\t'; break;
                                default: free(out); return "unknown escape in a string";
                                }
                        } else
                                *o++ = *p;
                }
                if (p >= end) {
                        free(out);
                        return "unterminated string";
                }
                *o = 0;
                p = skip_ws(p + 1, end);
                if (p < end && *p != '#') {
                        free(out);
                        return "unexpected text after the value";
                }
                v->type = V_STRING;
                v->s = out;
                return NULL;
        }
        const char *q = p;
        while (q < end && !isspace((unsigned char) *q) && *q != '#')
                q++;
        char word[32];
        size_t n = (size_t) (q - p);
        if (n >= sizeof word)
                return "value too long";
        memcpy(word, p, n);
        word[n] = 0;
        q = skip_ws(q, end);
        if (q < end && *q != '#')
                return "unexpected text after the value";
        if (strcmp(word, "true") == 0 || strcmp(word, "false") == 0) {
                v->type = V_BOOL;
                v->b = word[0] == 't';
                return NULL;
        }
        if (ts_units_parse_u64(word, &v->i) == 0) {
                v->type = V_INT;
                return NULL;
        }
        return "not a string, number or true/false";
}

static int line_error(ts_error **err, unsigned line, const char *key, const char *what) {
        if (key)
                return ts_error_setf_plain(err, EINVAL, "config line %u: %s: %s", line, key, what);
        return ts_error_setf_plain(err, EINVAL, "config line %u: %s", line, what);
}

static int set_string(char **dst, value *v) {
        free(*dst);
        *dst = v->s;
        v->s = NULL;
        return 0;
}

/* Each field is a uint32_t: the sizeof term fails to compile otherwise. */
#define RPC_KEY(k, f, field, kind)                                                             \
        { k, f,                                                                                \
          offsetof(ts_rpc_server_options, field) +                                             \
                  0 * sizeof(char[sizeof(((ts_rpc_server_options *) 0)->field) == 4 ? 1 : -1]), \
          kind }
const ts_config_rpc_key ts_config_rpc_keys[] = {
        RPC_KEY("max_connections", "max-connections", max_connections, TS_CONFIG_COUNT),
        RPC_KEY("max_concurrent_streams", "max-concurrent-streams", max_concurrent_streams,
                TS_CONFIG_COUNT),
        RPC_KEY("max_header_list_size", "max-header-list-size", max_header_list_size,
                TS_CONFIG_SIZE),
        RPC_KEY("connection_window", "connection-window", connection_window, TS_CONFIG_SIZE),
        RPC_KEY("max_queued_calls", "max-queued-calls", max_queued_calls, TS_CONFIG_COUNT),
        RPC_KEY("handshake_timeout", "handshake-timeout", handshake_timeout_ms,
                TS_CONFIG_DURATION),
        RPC_KEY("request_timeout", "request-timeout", request_timeout_ms, TS_CONFIG_DURATION),
        RPC_KEY("idle_timeout", "idle-timeout", idle_timeout_ms, TS_CONFIG_DURATION),
        RPC_KEY("send_timeout", "send-timeout", send_timeout_ms, TS_CONFIG_DURATION),
};
const size_t ts_config_n_rpc_keys = TS_ARRAY_SIZE(ts_config_rpc_keys);

int ts_config_set_rpc(ts_rpc_server_options *o, const ts_config_rpc_key *k, const char *name,
                      const char *text, ts_error **err) {
        uint32_t *dst = (uint32_t *) ((char *) o + k->offset);
        uint64_t size;
        int r;

        switch (k->kind) {
        case TS_CONFIG_COUNT:
                r = ts_units_parse_u32(text, dst) < 0 || *dst == 0 ? -EINVAL : 0;
                if (r < 0)
                        return ts_error_setf_plain(err, EINVAL, "%s: '%.64s' is not a count above 0",
                                                   name, text);
                return 0;
        case TS_CONFIG_SIZE:
                r = ts_units_parse_size(text, &size);
                if (r < 0 || size == 0 || size > UINT32_MAX)
                        return ts_error_setf_plain(err, EINVAL,
                                                   "%s: '%.64s' is not a size above 0 and below "
                                                   "4G (examples: 64K, 32M)",
                                                   name, text);
                *dst = (uint32_t) size;
                return 0;
        default:
                if (ts_units_parse_duration_ms(text, dst) < 0)
                        return ts_error_setf_plain(err, EINVAL,
                                                   "%s: '%.64s' is not a duration above 0 "
                                                   "(examples: 500ms, 30s, 10m, 1h)",
                                                   name, text);
                return 0;
        }
}

void ts_config_merge_rpc(ts_rpc_server_options *into, const ts_rpc_server_options *from) {
        for (size_t i = 0; i < ts_config_n_rpc_keys; i++) {
                size_t off = ts_config_rpc_keys[i].offset;
                const uint32_t *v = (const uint32_t *) ((const char *) from + off);
                if (*v)
                        *(uint32_t *) ((char *) into + off) = *v;
        }
}

static int apply_rpc(ts_config *cfg, const ts_config_rpc_key *k, value *v, unsigned line,
                     ts_error **err) {
        char num[24];
        const char *text = v->s;
        if (v->type == V_INT && k->kind != TS_CONFIG_DURATION) {
                snprintf(num, sizeof(num), "%" PRIu64, v->i);
                text = num;
        } else if (v->type != V_STRING)
                return line_error(err, line, k->key,
                                  k->kind == TS_CONFIG_DURATION
                                          ? "must be a duration string such as \"30s\""
                                          : "must be a number or a string");
        int r = ts_config_set_rpc(&cfg->rpc, k, k->key, text, err);
        return r < 0 ? ts_error_prefix(err, r, "config line %u", line) : 0;
}

static int apply(ts_config *cfg, const char *key, value *v, unsigned line, ts_error **err) {
        for (size_t i = 0; i < ts_config_n_rpc_keys; i++)
                if (strcmp(key, ts_config_rpc_keys[i].key) == 0)
                        return apply_rpc(cfg, &ts_config_rpc_keys[i], v, line, err);
        static const char *const string_keys[] = {
                "root", "pool", "address", "mkfs", "provisioner_address", "provisioner_group",
                "containerd_address", "namespace", "snapshotter_name", "metrics_address",
        };
        char **string_dst[] = {
                &cfg->root, &cfg->pool, &cfg->address, &cfg->mkfs, &cfg->provisioner_address,
                &cfg->provisioner_group, &cfg->containerd_address, &cfg->namespace,
                &cfg->snapshotter_name, &cfg->metrics_address,
        };
        for (size_t i = 0; i < TS_ARRAY_SIZE(string_keys); i++)
                if (strcmp(key, string_keys[i]) == 0) {
                        if (v->type != V_STRING || !*v->s)
                                return line_error(err, line, key, "must be a non-empty string");
                        return set_string(string_dst[i], v);
                }
        if (strcmp(key, "base_size") == 0 || strcmp(key, "store_map_max") == 0) {
                uint64_t *dst = strcmp(key, "base_size") == 0 ? &cfg->base_size : &cfg->store_map_max;
                if (v->type == V_INT)
                        *dst = v->i;
                else if (v->type != V_STRING || ts_units_parse_size(v->s, dst) < 0)
                        return line_error(err, line, key, "must be a size such as \"10G\" or bytes");
                return 0;
        }
        if (strcmp(key, "max_labels") == 0) {
                if (v->type != V_INT || v->i == 0 || v->i > TS_LABEL_MAX_COUNT_LIMIT)
                        return line_error(err, line, key, "must be a number from 1 to 1048576");
                cfg->max_labels = v->i;
                return 0;
        }
        if (strcmp(key, "max_label_bytes") == 0) {
                uint64_t n = v->type == V_INT ? (uint64_t) v->i : 0;
                if ((v->type != V_INT && (v->type != V_STRING || ts_units_parse_size(v->s, &n) < 0)) ||
                    n < TS_LABEL_MAX_SIZE || n > TS_LABEL_MAX_BYTES_LIMIT)
                        return line_error(err, line, key, "must be a size from 4K to 4M");
                cfg->max_label_bytes = n;
                return 0;
        }
        if (strcmp(key, "spares_max") == 0 || strcmp(key, "vm_spares") == 0) {
                if (v->type != V_INT || v->i > 1024)
                        return line_error(err, line, key, "must be a number from 0 to 1024");
                if (key[0] == 's') {
                        cfg->spares_max = v->i;
                        cfg->spares_max_set = true;
                } else {
                        cfg->vm_spares = v->i;
                        cfg->vm_spares_set = true;
                }
                return 0;
        }
        if (strcmp(key, "max_warms") == 0) {
                if (v->type != V_INT || v->i == 0 || v->i > 64)
                        return line_error(err, line, key, "must be a number from 1 to 64");
                cfg->max_warms = v->i;
                return 0;
        }
        if (strcmp(key, "registry_timeout") == 0) {
                if (v->type != V_STRING || ts_units_parse_duration_ms(v->s, &cfg->registry_timeout_ms) < 0)
                        return line_error(err, line, key, "must be a duration such as \"30s\"");
                return 0;
        }
        if (strcmp(key, "provisioner") == 0) {
                if (v->type != V_BOOL)
                        return line_error(err, line, key, "must be true or false");
                cfg->no_provisioner = !v->b;
                return 0;
        }
        if (strcmp(key, "socket_mode") == 0) {
                if (v->type != V_STRING || ts_units_parse_mode(v->s, &cfg->socket_mode) < 0)
                        return line_error(err, line, key, "must be an octal mode string such as \"0660\"");
                return 0;
        }
        if (strcmp(key, "log_level") == 0) {
                if (v->type != V_STRING || ts_log_parse_level(v->s, &cfg->log_level) < 0)
                        return line_error(err, line, key, "must be error, warn, info, debug or trace");
                cfg->log_level_set = true;
                return 0;
        }
        /* "discard" as the option is called; "discard_on_remove" as first documented */
        if (strcmp(key, "async_remove") == 0 || strcmp(key, "discard") == 0 ||
            strcmp(key, "discard_on_remove") == 0) {
                if (v->type != V_BOOL)
                        return line_error(err, line, key, "must be true or false");
                if (key[0] == 'a')
                        cfg->async_remove = v->b;
                else
                        cfg->discard_on_remove = v->b;
                return 0;
        }
        return line_error(err, line, key, "unknown setting");
}

int ts_config_parse(const char *text, size_t len, ts_config *cfg, ts_error **err) {
        const char *p = text, *end = text + len;
        unsigned line = 0;
        while (p < end) {
                line++;
                const char *eol = memchr(p, '\n', (size_t) (end - p));
                if (!eol)
                        eol = end;
                const char *q = skip_ws(p, eol);
                const char *stop = eol;
                if (stop > q && stop[-1] == '\r')
                        stop--;
                if (q < stop && *q != '#') {
                        const char *k = q;
                        while (q < stop && (isalnum((unsigned char) *q) || *q == '_'))
                                q++;
                        size_t klen = (size_t) (q - k);
                        char key[64];
                        if (klen == 0 || klen >= sizeof key)
                                return line_error(err, line, NULL, "expected `key = value`");
                        memcpy(key, k, klen);
                        key[klen] = 0;
                        q = skip_ws(q, stop);
                        if (q >= stop || *q != '=')
                                return line_error(err, line, key, "expected '=' after the key");
                        value v = { 0 };
                        const char *why = parse_value(skip_ws(q + 1, stop), stop, &v);
                        if (why)
                                return line_error(err, line, key, why);
                        int r = apply(cfg, key, &v, line, err);
                        free(v.s);
                        if (r < 0)
                                return r;
                }
                p = eol < end ? eol + 1 : end;
        }
        return 0;
}

int ts_config_load(const char *path, ts_config *cfg, ts_error **err) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return ts_error_set(err, errno, "config %s", path);
        size_t cap = 1 << 20;
        _cleanup_free_ char *buf = malloc(cap + 1);
        if (!buf)
                return ts_error_set(err, ENOMEM, "config %s", path);
        size_t n = fread(buf, 1, cap + 1, f);
        if (ferror(f))
                return ts_error_set(err, EIO, "config %s", path);
        if (n > cap)
                return ts_error_setf_plain(err, EINVAL, "config %s is larger than 1 MiB", path);
        int r = ts_config_parse(buf, n, cfg, err);
        if (r < 0)
                return ts_error_prefix(err, r, "%s", path);
        return 0;
}

void ts_config_done(ts_config *cfg) {
        free(cfg->root);
        free(cfg->pool);
        free(cfg->address);
        free(cfg->mkfs);
        free(cfg->provisioner_address);
        free(cfg->provisioner_group);
        free(cfg->containerd_address);
        free(cfg->namespace);
        free(cfg->snapshotter_name);
        free(cfg->metrics_address);
        cfg->metrics_address = NULL;
        cfg->root = cfg->pool = cfg->address = cfg->mkfs = NULL;
        cfg->provisioner_address = cfg->provisioner_group = cfg->containerd_address = NULL;
        cfg->namespace = cfg->snapshotter_name = NULL;
}
