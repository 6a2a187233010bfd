#include "provclient.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define SERVICE "/thinsnap.v1.Provisioner/"

const char *ts_cli_prov_address(const char *opt) {
        if (opt)
                return opt;
        const char *env = getenv("THINSNAP_ADDRESS");
        return env && *env ? env : TS_CLI_PROV_DEFAULT_ADDRESS;
}

int ts_cli_prov_connect(const char *address, ts_rpc_client **ret, ts_error **err) {
        ts_error *e = NULL;
        int r = ts_rpc_client_connect(address, ret, &e);
        if (r == -ENOENT || r == -ECONNREFUSED) {
                ts_error_free(e);
                return ts_error_set(err, r,
                                    "no provisioner at %s (is thinsnapd running with "
                                    "--provisioner-address %s?)",
                                    address, address);
        }
        if (r < 0)
                return ts_error_move(err, &e);
        return 0;
}

static void method_path(char *buf, size_t len, const char *method) {
        snprintf(buf, len, SERVICE "%s", method);
}

int ts_cli_prov_call(ts_rpc_client *c, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **ret,
                     ts_error **err) {
        char path[128];
        method_path(path, sizeof path, method);
        return ts_rpc_client_unary(c, path, NULL, req, resp_desc, ret, err);
}

int ts_cli_prov_stream(ts_rpc_client *c, const char *method, const ProtobufCMessage *req,
                       ts_rpc_client_call **ret, ts_error **err) {
        char path[128];
        method_path(path, sizeof path, method);
        ts_rpc_client_call *cc = NULL;
        int r = ts_rpc_client_call_start(c, path, NULL, &cc, err);
        if (r >= 0)
                r = ts_rpc_client_call_send_message(cc, req, err);
        if (r >= 0)
                r = ts_rpc_client_call_close_send(cc);
        if (r < 0) {
                ts_rpc_client_call_free(cc);
                return r;
        }
        *ret = cc;
        return 0;
}
