/* Allocation-failure injection for unit tests: link with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
 * (ts_failalloc_link_options in tests/unit/CMakeLists.txt), and optionally
 * --wrap=reallocarray,--wrap=aligned_alloc,--wrap=asprintf. Only calls from the
 * test binary's own objects and our static libraries are counted; libc's and
 * LMDB's internal allocations are not. */
#pragma once

#include <stddef.h>

/* The n-th allocation from now fails (n >= 1); 0 turns injection off. */
void ts_failalloc_arm(unsigned long n);
/* Allocations counted since the last arm. */
unsigned long ts_failalloc_count(void);
/* True when the armed failure has happened. */
int ts_failalloc_fired(void);
