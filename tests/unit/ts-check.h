/* The shared end of every Check suite's main(). */
#pragma once

#include <check.h>
#include <stdlib.h>

/* Runs every test of s (forking per test, Check's default), prints the
 * summary and returns the process exit status. */
static inline int ts_check_run(Suite *s) {
        SRunner *sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
