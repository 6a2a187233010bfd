/* The test service (testsvc.proto) served by the rpc layer: used by the
 * in-process unit test and by the server binary the python peer calls. */
#pragma once

#include "rpc/server.h"
#include "testsvc.pb-c.h"

/* Registers Echo, Stream and Fail. Returns 0 or -errno. */
int ts_testsvc_register(ts_rpc_server *s);
