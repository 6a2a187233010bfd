#include "failalloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t a, size_t b);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
/* Wrapped only by the tests that add --wrap=reallocarray,--wrap=aligned_alloc;
 * weak, so the others link without them. */
void *__real_reallocarray(void *p, size_t a, size_t b) __attribute__((weak));
void *__real_aligned_alloc(size_t align, size_t n) __attribute__((weak));
void *__wrap_reallocarray(void *p, size_t a, size_t b);
void *__wrap_aligned_alloc(size_t align, size_t n);
/* Used by the tests that add --wrap=asprintf; the others leave it unused. */
int __wrap_asprintf(char **ret, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static unsigned long armed, counted;
static int fired;

void ts_failalloc_arm(unsigned long n) {
        armed = n;
        counted = 0;
        fired = 0;
}

unsigned long ts_failalloc_count(void) {
        return counted;
}

int ts_failalloc_fired(void) {
        return fired;
}

static int fail_now(void) {
        counted++;
        if (armed && counted == armed) {
                fired = 1;
                return 1;
        }
        return 0;
}

void *__wrap_malloc(size_t n) {
        return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t a, size_t b) {
        return fail_now() ? NULL : __real_calloc(a, b);
}

void *__wrap_realloc(void *p, size_t n) {
        return fail_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s) {
        return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n) {
        return fail_now() ? NULL : __real_strndup(s, n);
}

void *__wrap_reallocarray(void *p, size_t a, size_t b) {
        return fail_now() ? NULL : __real_reallocarray(p, a, b);
}

void *__wrap_aligned_alloc(size_t align, size_t n) {
        return fail_now() ? NULL : __real_aligned_alloc(align, n);
}

int __wrap_asprintf(char **ret, const char *fmt, ...) {
        if (fail_now())
                return -1;
        va_list ap;
        va_start(ap, fmt);
        int r = vasprintf(ret, fmt, ap);
        va_end(ap);
        return r;
}
