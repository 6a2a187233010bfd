/* Crash points for crash-safety tests: a process that an environment
 * variable tells to die at a named step kills itself there with SIGKILL,
 * so a test can check what a crash at that step leaves behind.
 *
 * The variable holds "<op>:<point>[:<n>]": the n-th passage (default the
 * first) of step <point> of operation <op>. */
#pragma once

#include "common/error.h"

typedef struct ts_fault ts_fault;

/* Reads the variable `name` once. Unset or empty: *ret is NULL (no crash
 * point armed). Returns 0, -EINVAL (a bad count; the message names the
 * variable) or -ENOMEM. */
int ts_fault_from_env(const char *name, ts_fault **ret, ts_error **err);

/* Kills the process when f (NULL allowed) is armed for op:point and this is
 * its n-th passage there. Safe to call from several threads. */
void ts_fault_point(ts_fault *f, const char *op, const char *point);

/* Accepts NULL; returns NULL. */
ts_fault *ts_fault_free(ts_fault *f);
