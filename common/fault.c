#include "fault.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/units.h"

struct ts_fault {
        char *op;          /* "<op>\0<point>", one allocation */
        const char *point; /* inside op's */
        uint32_t nth;
        uint32_t seen;
};

int ts_fault_from_env(const char *name, ts_fault **ret, ts_error **err) {
        const char *v = getenv(name);
        if (!v || !*v) {
                *ret = NULL;
                return 0;
        }
        ts_fault *f = calloc(1, sizeof(*f));
        if (!f || !(f->op = strdup(v))) {
                free(f);
                return ts_error_set(err, ENOMEM, "%s", name);
        }
        f->nth = 1;
        char *colon = strchr(f->op, ':');
        char *count = colon ? strchr(colon + 1, ':') : NULL;
        if (colon) {
                *colon = '\0';
                f->point = colon + 1;
        } else
                f->point = f->op + strlen(f->op); /* matches no point */
        if (count) {
                *count = '\0';
                if (ts_units_parse_u32(count + 1, &f->nth) < 0 || f->nth == 0) {
                        ts_fault_free(f);
                        return ts_error_setf_plain(err, EINVAL, "%s=%s: bad count \"%s\"", name, v,
                                                   strrchr(v, ':') + 1);
                }
        }
        *ret = f;
        return 0;
}

void ts_fault_point(ts_fault *f, const char *op, const char *point) {
        if (!f || strcmp(f->op, op) != 0 || strcmp(f->point, point) != 0)
                return;
        if (__atomic_add_fetch(&f->seen, 1, __ATOMIC_SEQ_CST) != f->nth)
                return;
        log_debug("fault injection: killed at %s:%s", op, point);
        raise(SIGKILL);
}

ts_fault *ts_fault_free(ts_fault *f) {
        if (f) {
                free(f->op);
                free(f);
        }
        return NULL;
}
