#include <errno.h>

#include "rpc/status.h"

static const char *const names[_TS_RPC_STATUS_MAX] = {
        [TS_RPC_OK] = "OK",
        [TS_RPC_CANCELLED] = "CANCELLED",
        [TS_RPC_UNKNOWN] = "UNKNOWN",
        [TS_RPC_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
        [TS_RPC_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
        [TS_RPC_NOT_FOUND] = "NOT_FOUND",
        [TS_RPC_ALREADY_EXISTS] = "ALREADY_EXISTS",
        [TS_RPC_PERMISSION_DENIED] = "PERMISSION_DENIED",
        [TS_RPC_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
        [TS_RPC_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
        [TS_RPC_ABORTED] = "ABORTED",
        [TS_RPC_OUT_OF_RANGE] = "OUT_OF_RANGE",
        [TS_RPC_UNIMPLEMENTED] = "UNIMPLEMENTED",
        [TS_RPC_INTERNAL] = "INTERNAL",
        [TS_RPC_UNAVAILABLE] = "UNAVAILABLE",
        [TS_RPC_DATA_LOSS] = "DATA_LOSS",
        [TS_RPC_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *ts_rpc_status_name(int code) {
        if (code < 0 || code >= _TS_RPC_STATUS_MAX)
                return "UNKNOWN_STATUS";
        return names[code];
}

int ts_rpc_status_from_errno(int errnum) {
        if (errnum < 0)
                errnum = -errnum;
        switch (errnum) {
        case 0:
                return TS_RPC_OK;
        case ENOENT:
                return TS_RPC_NOT_FOUND;
        case EEXIST:
                return TS_RPC_ALREADY_EXISTS;
        case EINVAL:
        case E2BIG:
        case EBADMSG:
        case ENAMETOOLONG:
                return TS_RPC_INVALID_ARGUMENT;
        case EBUSY:
        case ENOTEMPTY:
        case ENOTDIR:
        case EISDIR:
        case EMEDIUMTYPE: /* a device that is not what it must be: not ours */
                return TS_RPC_FAILED_PRECONDITION;
        case ENOSPC:
        case EDQUOT:
        case ENOMEM:
        case EMSGSIZE:
                return TS_RPC_RESOURCE_EXHAUSTED;
        case ETIMEDOUT:
                return TS_RPC_DEADLINE_EXCEEDED;
        case ECANCELED:
                return TS_RPC_CANCELLED;
        case EPERM:
        case EACCES:
                return TS_RPC_PERMISSION_DENIED;
        case EOPNOTSUPP:
        case ENOSYS:
                return TS_RPC_UNIMPLEMENTED;
        case EAGAIN:
        case ECONNREFUSED:
        case ECONNRESET:
        case EHOSTUNREACH:
        case ENETUNREACH:
        case EHOSTDOWN:
        case EPIPE:
        case ENOTCONN:
        case ESHUTDOWN:
                return TS_RPC_UNAVAILABLE;
        case ERANGE:
                return TS_RPC_OUT_OF_RANGE;
        default:
                return TS_RPC_INTERNAL;
        }
}

int ts_rpc_status_to_errno(int code) {
        switch (code) {
        case TS_RPC_OK:
                return 0;
        case TS_RPC_NOT_FOUND:
                return ENOENT;
        case TS_RPC_ALREADY_EXISTS:
                return EEXIST;
        case TS_RPC_INVALID_ARGUMENT:
                return EINVAL;
        case TS_RPC_FAILED_PRECONDITION:
                return EBUSY;
        case TS_RPC_RESOURCE_EXHAUSTED:
                return ENOSPC;
        case TS_RPC_DEADLINE_EXCEEDED:
                return ETIMEDOUT;
        case TS_RPC_CANCELLED:
                return ECANCELED;
        case TS_RPC_PERMISSION_DENIED:
        case TS_RPC_UNAUTHENTICATED:
                return EACCES;
        case TS_RPC_UNIMPLEMENTED:
                return EOPNOTSUPP;
        case TS_RPC_UNAVAILABLE:
                return ECONNREFUSED;
        case TS_RPC_OUT_OF_RANGE:
                return ERANGE;
        case TS_RPC_ABORTED:
                return EAGAIN;
        default:
                return EPROTO;
        }
}
