#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int positive_errno(int errnum) {
        if (errnum < 0)
                errnum = -errnum;
        return errnum ? errnum : EIO;
}

/* The message is the formatted context, then ": cause" when cause is set. */
_printf_(4, 0) static int set_common(ts_error **err, int errnum, const char *cause, const char *fmt, va_list ap) {
        errnum = positive_errno(errnum);
        if (!err || *err)
                return -errnum;

        char *head = NULL;
        if (vasprintf(&head, fmt, ap) < 0)
                head = NULL;

        ts_error *e = calloc(1, sizeof(*e));
        if (!e) {
                free(head);
                return -errnum;
        }
        e->errnum = errnum;
        if (head && cause) {
                if (asprintf(&e->msg, "%s: %s", head, cause) < 0)
                        e->msg = NULL;
                free(head);
        } else
                e->msg = head;
        *err = e;
        return -errnum;
}

int ts_error_set(ts_error **err, int errnum, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = set_common(err, errnum, strerror(positive_errno(errnum)), fmt, ap);
        va_end(ap);
        return r;
}

int ts_error_setf_plain(ts_error **err, int errnum, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = set_common(err, errnum, NULL, fmt, ap);
        va_end(ap);
        return r;
}

int ts_error_setv_cause(ts_error **err, int errnum, const char *cause, const char *fmt, va_list ap) {
        return set_common(err, errnum, cause, fmt, ap);
}

int ts_error_prefix(ts_error **err, int r, const char *fmt, ...) {
        if (!err || !*err)
                return r;
        ts_error *e = *err;
        char *ctx = NULL;
        va_list ap;
        va_start(ap, fmt);
        int n = vasprintf(&ctx, fmt, ap);
        va_end(ap);
        if (n >= 0) {
                char *joined = NULL;
                if (asprintf(&joined, "%s: %s", ctx, e->msg ? e->msg : strerror(e->errnum)) >= 0) {
                        free(e->msg);
                        e->msg = joined;
                }
                free(ctx);
        }
        return r;
}

ts_error *ts_error_free(ts_error *err) {
        if (err) {
                free(err->msg);
                free(err);
        }
        return NULL;
}

const char *ts_error_message(const ts_error *err, int r) {
        if (err && err->msg)
                return err->msg;
        if (err)
                return strerror(err->errnum);
        return strerror(r < 0 ? -r : r);
}

int ts_error_move(ts_error **dst, ts_error **src) {
        ts_error *e = *src;
        *src = NULL;
        int r = e ? -e->errnum : -EIO;
        if (e && dst && !*dst)
                *dst = e;
        else
                ts_error_free(e);
        return r;
}
