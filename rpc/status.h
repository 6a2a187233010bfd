/* gRPC status codes, their names, and the mapping to and from errno.
 *
 * The mapping follows containerd's errdefs, so a handler can return the
 * -errno of a failed operation and containerd sees the status it expects
 * (ENOENT -> NOT_FOUND, EEXIST -> ALREADY_EXISTS, ...), and a client sees
 * the errno back. */
#pragma once

enum ts_rpc_status {
        TS_RPC_OK = 0,
        TS_RPC_CANCELLED = 1,
        TS_RPC_UNKNOWN = 2,
        TS_RPC_INVALID_ARGUMENT = 3,
        TS_RPC_DEADLINE_EXCEEDED = 4,
        TS_RPC_NOT_FOUND = 5,
        TS_RPC_ALREADY_EXISTS = 6,
        TS_RPC_PERMISSION_DENIED = 7,
        TS_RPC_RESOURCE_EXHAUSTED = 8,
        TS_RPC_FAILED_PRECONDITION = 9,
        TS_RPC_ABORTED = 10,
        TS_RPC_OUT_OF_RANGE = 11,
        TS_RPC_UNIMPLEMENTED = 12,
        TS_RPC_INTERNAL = 13,
        TS_RPC_UNAVAILABLE = 14,
        TS_RPC_DATA_LOSS = 15,
        TS_RPC_UNAUTHENTICATED = 16,
        _TS_RPC_STATUS_MAX,
};

/* "OK", "NOT_FOUND", ...; "UNKNOWN_STATUS" for a code outside 0..16. */
const char *ts_rpc_status_name(int code);

/* Maps an errno (positive or negative) to a status:
 * ENOENT NOT_FOUND, EEXIST ALREADY_EXISTS, EINVAL/EBADMSG/ENAMETOOLONG
 * INVALID_ARGUMENT, EBUSY/ENOTEMPTY/ENOTDIR/EISDIR FAILED_PRECONDITION,
 * ENOSPC/EDQUOT/ENOMEM/EMSGSIZE RESOURCE_EXHAUSTED, ETIMEDOUT DEADLINE_EXCEEDED,
 * ECANCELED CANCELLED, EPERM/EACCES PERMISSION_DENIED, EOPNOTSUPP/ENOSYS
 * UNIMPLEMENTED, EAGAIN/ECONNREFUSED/ECONNRESET/EHOSTUNREACH/ENETUNREACH/EHOSTDOWN/EPIPE/
 * ENOTCONN/ESHUTDOWN UNAVAILABLE, ERANGE OUT_OF_RANGE, anything else INTERNAL. 0 maps to OK. */
int ts_rpc_status_from_errno(int errnum);

/* The inverse, as a positive errno for a non-OK status (OK gives 0):
 * NOT_FOUND ENOENT, ALREADY_EXISTS EEXIST, INVALID_ARGUMENT EINVAL,
 * FAILED_PRECONDITION EBUSY, RESOURCE_EXHAUSTED ENOSPC, DEADLINE_EXCEEDED
 * ETIMEDOUT, CANCELLED ECANCELED, PERMISSION_DENIED/UNAUTHENTICATED EACCES,
 * UNIMPLEMENTED EOPNOTSUPP, UNAVAILABLE ECONNREFUSED, OUT_OF_RANGE ERANGE,
 * ABORTED EAGAIN, DATA_LOSS/INTERNAL/UNKNOWN and unknown codes EPROTO. */
int ts_rpc_status_to_errno(int code);
