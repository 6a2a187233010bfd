/* The `thinsnap image` and `thinsnap vm` commands' link to thinsnapd's
 * Provisioner service: where it listens, one call, and how a failed call
 * reads on the terminal. */
#pragma once

#include <protobuf-c/protobuf-c.h>

#include "common/error.h"
#include "rpc/client.h"

#define TS_CLI_PROV_DEFAULT_ADDRESS "/run/thinsnap/provisioner.sock"

/* The service's socket: opt (--address), else $THINSNAP_ADDRESS, else the
 * default. */
const char *ts_cli_prov_address(const char *opt);

/* Connects to the service at address. A socket nobody serves gives an
 * error that says to start thinsnapd. Returns 0 or -errno. */
int ts_cli_prov_connect(const char *address, ts_rpc_client **ret, ts_error **err);

/* One unary call of the Provisioner's method (e.g. "ListVMs"). Returns 0
 * and *ret, or -errno with the service's message. */
int ts_cli_prov_call(ts_rpc_client *c, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **ret,
                     ts_error **err);

/* Starts a server-streaming call of the Provisioner's method with req
 * sent and the request side closed. Returns 0 and *ret, or -errno. */
int ts_cli_prov_stream(ts_rpc_client *c, const char *method, const ProtobufCMessage *req,
                       ts_rpc_client_call **ret, ts_error **err);
