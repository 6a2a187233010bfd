#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ctrd/ctrd-internal.h"
#include "google/protobuf/empty.pb-c.h"

#define NS_PER_S 1000000000ull

/* One connection; calls hold a reference, so a connection found closed can
 * be replaced while calls on it end. */
typedef struct conn {
        ts_rpc_client *rpc;
        unsigned refs;
} conn;

struct ts_ctrd {
        char *socket, *ns;
        ts_ctrd_options opts;
        pthread_mutex_t lock;
        conn *conn; /* NULL: connect at the next call */
};

struct ts_ctrd_call {
        ts_ctrd *c;
        conn *conn;
        ts_rpc_client_call *cc;
        enum ts_ctrd_deadline deadline;
        int code;        /* status of a failed call, TS_RPC_OK before */
        const char *msg; /* its message, owned by cc */
};

static int connect_failed(ts_ctrd *c, int r, ts_error **err) {
        /* A missing socket is containerd not running, not a missing object:
         * -ENOENT would become NOT_FOUND for our own callers. */
        int e = r == -EACCES || r == -EPERM || r == -ENOMEM ? -r : ECONNREFUSED;
        return ts_error_setf_plain(err, e, "containerd socket %s: %s%s", c->socket, strerror(-r),
                                   e == ECONNREFUSED ? " (is containerd running?)" : "");
}

static int conn_new(ts_ctrd *c, conn **ret, ts_error **err) {
        _cleanup_error_ ts_error *e = NULL;
        conn *k = calloc(1, sizeof(*k));
        if (!k)
                return ts_error_set(err, ENOMEM, "containerd connection");
        int r = ts_rpc_client_connect(c->socket, &k->rpc, &e);
        if (r < 0) {
                free(k);
                return connect_failed(c, r, err);
        }
        k->refs = 1;
        *ret = k;
        return 0;
}

static void conn_unref(conn *k) {
        ts_rpc_client_free(k->rpc);
        free(k);
}

static int conn_get(ts_ctrd *c, conn **ret, ts_error **err) {
        int r = 0;
        pthread_mutex_lock(&c->lock);
        if (!c->conn)
                r = conn_new(c, &c->conn, err);
        if (r >= 0) {
                c->conn->refs++;
                *ret = c->conn;
        }
        pthread_mutex_unlock(&c->lock);
        return r;
}

/* Drops a call's reference; a closed connection is forgotten so that the
 * next call makes a new one. */
static void conn_put(ts_ctrd *c, conn *k, bool closed) {
        pthread_mutex_lock(&c->lock);
        if (closed && c->conn == k) {
                c->conn = NULL;
                k->refs--;
        }
        bool last = --k->refs == 0;
        pthread_mutex_unlock(&c->lock);
        if (last)
                conn_unref(k);
}

int ts_ctrd_connect(const char *address, const char *ns, const ts_ctrd_options *opts,
                    ts_ctrd **ret, ts_error **err) {
        if (!ns || !*ns)
                return ts_error_setf_plain(err, EINVAL, "containerd namespace is empty");
        if (!address || !*address)
                return ts_error_setf_plain(err, EINVAL, "containerd address is empty");
        const char *path = address;
        if (strncmp(address, "unix://", 7) == 0)
                path = address + 7;
        else if (strstr(address, "://"))
                return ts_error_setf_plain(err, EINVAL,
                                           "containerd address %s: only unix sockets are supported",
                                           address);
        if (!*path)
                return ts_error_setf_plain(err, EINVAL, "containerd address %s has no path", address);

        ts_ctrd *c = calloc(1, sizeof(*c));
        if (!c)
                return ts_error_set(err, ENOMEM, "containerd client");
        pthread_mutex_init(&c->lock, NULL);
        c->socket = strdup(path);
        c->ns = strdup(ns);
        if (opts)
                c->opts = *opts;
        if (!c->opts.timeout_ns)
                c->opts.timeout_ns = 60 * NS_PER_S;
        if (!c->opts.long_timeout_ns)
                c->opts.long_timeout_ns = 30 * 60 * NS_PER_S;
        if (!c->opts.idle_timeout_ns)
                c->opts.idle_timeout_ns = 60 * NS_PER_S;
        int r = c->socket && c->ns ? conn_new(c, &c->conn, err)
                                   : ts_error_set(err, ENOMEM, "containerd client");
        if (r < 0) {
                ts_ctrd_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

ts_ctrd *ts_ctrd_free(ts_ctrd *c) {
        if (!c)
                return NULL;
        if (c->conn && --c->conn->refs == 0)
                conn_unref(c->conn);
        pthread_mutex_destroy(&c->lock);
        free(c->socket);
        free(c->ns);
        free(c);
        return NULL;
}

const char *ts_ctrd_socket(const ts_ctrd *c) {
        return c->socket;
}

const char *ts_ctrd_namespace(const ts_ctrd *c) {
        return c->ns;
}

static uint64_t deadline_ns(const ts_ctrd *c, enum ts_ctrd_deadline d) {
        switch (d) {
        case TS_CTRD_SHORT:
                return c->opts.timeout_ns;
        case TS_CTRD_LONG:
                return c->opts.long_timeout_ns;
        default:
                return 0;
        }
}

static int start_on(ts_ctrd_call *call, const char *lease, const char *method, ts_error **err) {
        ts_rpc_metadata md[] = {
                { "containerd-namespace", call->c->ns },
                { "containerd-lease", lease },
        };
        ts_rpc_call_options o = { .metadata = md,
                                  .n_metadata = lease ? 2 : 1,
                                  .timeout_ns = deadline_ns(call->c, call->deadline) };
        return ts_rpc_client_call_start(call->conn->rpc, method, &o, &call->cc, err);
}

int ts_ctrd_call_start(ts_ctrd *c, const char *lease, const char *method,
                       enum ts_ctrd_deadline deadline, ts_ctrd_call **ret, ts_error **err) {
        if (lease && (!*lease || strpbrk(lease, "\r\n")))
                return ts_error_setf_plain(err, EINVAL, "lease id \"%s\" is not valid", lease);
        _cleanup_(ts_ctrd_call_freep) ts_ctrd_call *call = calloc(1, sizeof(*call));
        if (!call)
                return ts_error_set(err, ENOMEM, "containerd call");
        call->c = c;
        call->deadline = deadline;
        /* A connection closed by containerd (restarted, or gone) is made again once. */
        for (int attempt = 0;; attempt++) {
                _cleanup_error_ ts_error *e = NULL;
                int r = conn_get(c, &call->conn, err);
                if (r < 0)
                        return r;
                r = start_on(call, lease, method, &e);
                if (r >= 0)
                        break;
                conn_put(c, TAKE_PTR(call->conn), r == -ECONNRESET);
                if (r != -ECONNRESET)
                        return ts_error_move(err, &e);
                if (attempt > 0)
                        return ts_error_setf_plain(err, ECONNREFUSED,
                                                   "containerd socket %s: connection closed",
                                                   c->socket);
        }
        *ret = TAKE_PTR(call);
        return 0;
}

int ts_ctrd_call_code(const ts_ctrd_call *call, const char **ret_message) {
        if (ret_message)
                *ret_message = call->msg ? call->msg : "";
        return call->code;
}

ts_ctrd_call *ts_ctrd_call_free(ts_ctrd_call *call) {
        if (!call)
                return NULL;
        ts_rpc_client_call_free(call->cc);
        if (call->conn)
                conn_put(call->c, call->conn, false);
        free(call);
        return NULL;
}

/* The one adapter from a failed rpc operation to our error: a local failure
 * keeps rpc's error; an ended call gives containerd's status and message. */
static int call_failed(ts_ctrd_call *call, int r, ts_error **rpc_err, ts_error **err) {
        if (r == -ENOMEM || r == -EBADMSG || r == -EPIPE || r == -EMSGSIZE)
                return ts_error_move(err, rpc_err);
        const char *msg = NULL;
        int code = ts_rpc_client_call_status(call->cc, &msg);
        call->code = code;
        call->msg = msg;
        int e = ts_rpc_status_to_errno(code);
        if (!e)
                e = EPROTO;
        if (code == TS_RPC_DEADLINE_EXCEEDED)
                return ts_error_setf_plain(err, e, "containerd at %s: no answer within %llu ms",
                                           call->c->socket,
                                           (unsigned long long) (call->deadline == TS_CTRD_STREAM
                                                ? call->c->opts.idle_timeout_ns
                                                : deadline_ns(call->c, call->deadline)) / 1000000);
        const char *text = *msg ? msg : ts_rpc_status_name(code);
        if (code == TS_RPC_UNAVAILABLE)
                return ts_error_setf_plain(err, e, "containerd at %s: %s", call->c->socket, text);
        return ts_error_setf_plain(err, e, "%s", text);
}

int ts_ctrd_call_send(ts_ctrd_call *call, const ProtobufCMessage *msg, ts_error **err) {
        _cleanup_error_ ts_error *e = NULL;
        int r = ts_rpc_client_call_send_message(call->cc, msg, &e);
        return r < 0 ? call_failed(call, r, &e, err) : 0;
}

void ts_ctrd_call_close_send(ts_ctrd_call *call) {
        ts_rpc_client_call_close_send(call->cc);
}

int ts_ctrd_call_recv(ts_ctrd_call *call, const ProtobufCMessageDescriptor *desc,
                      ProtobufCMessage **ret, ts_error **err) {
        _cleanup_error_ ts_error *e = NULL;
        if (call->deadline == TS_CTRD_STREAM)
                ts_rpc_client_call_set_timeout(call->cc, call->c->opts.idle_timeout_ns);
        int r = ts_rpc_client_call_recv_message(call->cc, desc, ret, &e);
        return r < 0 ? call_failed(call, r, &e, err) : r;
}

int ts_ctrd_unary(ts_ctrd *c, const char *lease, const char *method,
                  enum ts_ctrd_deadline deadline, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret, ts_error **err) {
        _cleanup_(ts_ctrd_call_freep) ts_ctrd_call *call = NULL;
        _cleanup_message_ ProtobufCMessage *m = NULL, *extra = NULL;

        int r = ts_ctrd_call_start(c, lease, method, deadline, &call, err);
        if (r < 0)
                return r;
        r = ts_ctrd_call_send(call, req, err);
        if (r < 0)
                return r;
        ts_ctrd_call_close_send(call);
        r = ts_ctrd_call_recv(call, desc, &m, err);
        if (r < 0)
                return r;
        if (r == 0)
                return ts_error_setf_plain(err, EBADMSG, "%s: OK without a response", method);
        r = ts_ctrd_call_recv(call, desc, &extra, err);
        if (r < 0)
                return r;
        if (r > 0)
                return ts_error_setf_plain(err, EBADMSG, "%s: more than one response", method);
        *ret = TAKE_PTR(m);
        return 0;
}

int ts_ctrd_unary_empty(ts_ctrd *c, const char *lease, const char *method,
                        enum ts_ctrd_deadline deadline, const ProtobufCMessage *req,
                        ts_error **err) {
        _cleanup_message_ ProtobufCMessage *m = NULL;
        return ts_ctrd_unary(c, lease, method, deadline, req, &google__protobuf__empty__descriptor,
                             &m, err);
}
