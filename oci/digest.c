#include "digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

struct ts_sha256 {
        EVP_MD_CTX *ctx;
};

int ts_digest_validate(const char *s) {
        if (!s || strncmp(s, TS_DIGEST_PREFIX, sizeof(TS_DIGEST_PREFIX) - 1) != 0)
                return -EINVAL;
        const char *h = ts_digest_hex(s);
        size_t i;
        for (i = 0; h[i]; i++)
                if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
                        return -EINVAL;
        return i == 64 ? 0 : -EINVAL;
}

int ts_sha256_new(ts_sha256 **ret) {
        ts_sha256 *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->ctx = EVP_MD_CTX_new();
        if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
                ts_sha256_free(h);
                return -ENOMEM;
        }
        *ret = h;
        return 0;
}

void ts_sha256_update(ts_sha256 *h, const void *p, size_t n) {
        if (n > 0)
                (void) EVP_DigestUpdate(h->ctx, p, n);
}

void ts_sha256_final(ts_sha256 *h, char ret[TS_DIGEST_MAX]) {
        static const char hex[] = "0123456789abcdef";
        unsigned char md[32];
        unsigned int len = 0;
        (void) EVP_DigestFinal_ex(h->ctx, md, &len);
        memcpy(ret, TS_DIGEST_PREFIX, sizeof(TS_DIGEST_PREFIX) - 1);
        char *o = ret + sizeof(TS_DIGEST_PREFIX) - 1;
        for (unsigned i = 0; i < 32; i++) {
                *o++ = hex[md[i] >> 4];
                *o++ = hex[md[i] & 15];
        }
        *o = '\0';
}

void ts_sha256_reset(ts_sha256 *h) {
        (void) EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
}

ts_sha256 *ts_sha256_free(ts_sha256 *h) {
        if (h) {
                EVP_MD_CTX_free(h->ctx);
                free(h);
        }
        return NULL;
}

int ts_digest_buffer(const void *p, size_t n, char ret[TS_DIGEST_MAX]) {
        _cleanup_sha256_ ts_sha256 *h = NULL;
        int r = ts_sha256_new(&h);
        if (r < 0)
                return r;
        ts_sha256_update(h, p, n);
        ts_sha256_final(h, ret);
        return 0;
}

int ts_digest_chain_ids(char *const *diff_ids, size_t n, char (*ret)[TS_DIGEST_MAX]) {
        for (size_t i = 0; i < n; i++)
                if (ts_digest_validate(diff_ids[i]) < 0)
                        return -EINVAL;
        _cleanup_sha256_ ts_sha256 *h = NULL;
        int r = ts_sha256_new(&h);
        if (r < 0)
                return r;
        char prev[TS_DIGEST_MAX];
        for (size_t i = 0; i < n; i++) {
                if (i == 0) {
                        strcpy(prev, diff_ids[0]);
                } else {
                        ts_sha256_reset(h);
                        ts_sha256_update(h, prev, strlen(prev));
                        ts_sha256_update(h, " ", 1);
                        ts_sha256_update(h, diff_ids[i], strlen(diff_ids[i]));
                        ts_sha256_final(h, prev);
                }
                memcpy(ret[i], prev, TS_DIGEST_MAX);
        }
        return 0;
}
