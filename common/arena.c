#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void *ts_arena_alloc(ts_arena *a, size_t size) {
        if (a->n == a->cap) {
                size_t cap = a->cap ? a->cap * 2 : 16;
                void **b = realloc(a->blocks, cap * sizeof(*b));
                if (!b)
                        return NULL;
                a->blocks = b;
                a->cap = cap;
        }
        void *p = calloc(1, size ? size : 1);
        if (p)
                a->blocks[a->n++] = p;
        return p;
}

void *ts_arena_array(ts_arena *a, size_t n, size_t size) {
        if (size && n > SIZE_MAX / size)
                return NULL;
        return ts_arena_alloc(a, n * size);
}

char *ts_arena_strdup(ts_arena *a, const char *s) {
        if (!s)
                return NULL;
        size_t len = strlen(s);
        char *p = ts_arena_alloc(a, len + 1);
        if (p)
                memcpy(p, s, len);
        return p;
}

void ts_arena_done(ts_arena *a) {
        for (size_t i = 0; i < a->n; i++)
                free(a->blocks[i]);
        free(a->blocks);
        *a = (ts_arena) { 0 };
}
