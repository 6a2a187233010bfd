/* A warm's progress as the user sees it: per-layer bars redrawn in place
 * when stderr is a terminal, a line per change of state when it is not, or
 * one JSON object per status on stdout for scripts. */
#pragma once

#include <stdbool.h>

#include "thinsnap/v1/provisioner.pb-c.h"

typedef struct ts_cli_progress {
        bool json, tty;
        unsigned lines;    /* lines drawn last time (tty) */
        int last_state;    /* state << 16 | layer last printed (no tty); -1: none */
} ts_cli_progress;

void ts_cli_progress_init(ts_cli_progress *p, bool json);

/* Shows one status. */
void ts_cli_progress_show(ts_cli_progress *p, const Thinsnap__V1__WarmStatus *s);

/* Leaves the terminal's cursor below what was drawn. Idempotent. */
void ts_cli_progress_done(ts_cli_progress *p);
