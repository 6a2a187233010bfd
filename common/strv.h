/* NULL-terminated arrays of owned strings. */
#pragma once

#include <stddef.h>

#include "macro.h"

/* Frees every string and the array; accepts NULL; returns NULL. */
char **ts_strv_free(char **v);

/* Number of strings before the terminating NULL (0 for NULL). */
size_t ts_strv_length(char *const *v);

/* Appends a copy of s (takes no ownership) to *v, reallocating.
 * Returns 0 or -ENOMEM (then *v is unchanged). */
int ts_strv_push(char ***v, const char *s);

/* strcmp() for qsort() over an array of char *. */
int ts_strv_cmp(const void *a, const void *b);

static inline void ts_strv_freep(char ***v) {
        ts_strv_free(*v);
}
#define _cleanup_strv_free_ _cleanup_(ts_strv_freep)
