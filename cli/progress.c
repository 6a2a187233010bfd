#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/units.h"
#include "cli.h"
#include "pbjson.h"

#define BAR 24

void ts_cli_progress_init(ts_cli_progress *p, bool json) {
        *p = (ts_cli_progress) { .json = json, .tty = !json && isatty(STDERR_FILENO), .last_state = -1 };
}

static const char *state_name(int s) {
        switch (s) {
        case THINSNAP__V1__WARM_STATUS__STATE__PENDING: return "pending";
        case THINSNAP__V1__WARM_STATUS__STATE__PULLING: return "pulling";
        case THINSNAP__V1__WARM_STATUS__STATE__UNPACKING: return "unpacking";
        case THINSNAP__V1__WARM_STATUS__STATE__READY: return "ready";
        default: return "failed";
        }
}

static void headline(const Thinsnap__V1__WarmStatus *s, char *buf, size_t len) {
        char a[32], b[32];
        switch ((int) s->state) {
        case THINSNAP__V1__WARM_STATUS__STATE__PENDING:
                snprintf(buf, len, "%s: pending, position %u in the queue", s->ref, s->queue_position);
                break;
        case THINSNAP__V1__WARM_STATUS__STATE__PULLING:
                snprintf(buf, len, "%s: pulling %s of %s", s->ref,
                         ts_units_format_size(s->bytes_done, a, sizeof a),
                         ts_units_format_size(s->bytes_total, b, sizeof b));
                break;
        case THINSNAP__V1__WARM_STATUS__STATE__UNPACKING:
                snprintf(buf, len, "%s: unpacking layer %u of %u", s->ref, s->layer, s->layers);
                break;
        default:
                snprintf(buf, len, "%s: %s%s%s", s->ref, state_name(s->state), *s->error ? ": " : "",
                         s->error);
        }
}

static void bar_line(const Thinsnap__V1__LayerProgress *b) {
        char a[32], t[32], bar[BAR + 1];
        const char *hex = strchr(b->digest, ':');
        unsigned fill = b->total ? (unsigned) (b->done * BAR / b->total) : 0;
        if (b->cached || fill > BAR)
                fill = BAR;
        memset(bar, '#', fill);
        memset(bar + fill, '-', BAR - fill);
        bar[BAR] = '\0';
        fprintf(stderr, "\033[2K  %.12s [%s] %s / %s%s\n", hex ? hex + 1 : b->digest, bar,
                ts_units_format_size(b->cached ? b->total : b->done, a, sizeof a),
                ts_units_format_size(b->total, t, sizeof t), b->cached ? " (present)" : "");
}

static void draw(ts_cli_progress *p, const Thinsnap__V1__WarmStatus *s) {
        char line[512];
        if (p->lines)
                fprintf(stderr, "\033[%uA", p->lines);
        headline(s, line, sizeof line);
        fprintf(stderr, "\033[2K%s\n", line);
        for (size_t i = 0; i < s->n_blobs; i++)
                bar_line(s->blobs[i]);
        p->lines = 1 + (unsigned) s->n_blobs;
        fflush(stderr);
}

void ts_cli_progress_show(ts_cli_progress *p, const Thinsnap__V1__WarmStatus *s) {
        if (p->json) {
                ts_cli_print_json_line(ts_pbjson_from_message(&s->base));
        } else if (p->tty)
                draw(p, s);
        else if (((int) s->state << 16 | (int) s->layer) != p->last_state) {
                /* A line per state, and per layer while unpacking. */
                char line[512];
                headline(s, line, sizeof line);
                fprintf(stderr, "%s\n", line);
                p->last_state = (int) s->state << 16 | (int) s->layer;
        }
}

void ts_cli_progress_done(ts_cli_progress *p) {
        if (p->tty)
                fflush(stderr);
        p->lines = 0;
}
