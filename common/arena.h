/* An arena: many small allocations that die together, for building a
 * reply out of nested messages (protobuf-c structs that point at each
 * other) without an owner per pointer. */
#pragma once

#include <stddef.h>

#include "macro.h"

typedef struct ts_arena {
        void **blocks;
        size_t n, cap;
} ts_arena;

/* Zeroed memory of size bytes owned by the arena, or NULL (out of memory;
 * the arena stays usable). */
void *ts_arena_alloc(ts_arena *a, size_t size);

/* calloc-style: n elements of size bytes; NULL on overflow too. */
void *ts_arena_array(ts_arena *a, size_t n, size_t size);

/* A copy of s owned by the arena; NULL for NULL or out of memory. */
char *ts_arena_strdup(ts_arena *a, const char *s);

/* Frees everything the arena handed out; it can be used again. */
void ts_arena_done(ts_arena *a);

#define _cleanup_arena_ _cleanup_(ts_arena_done)
