/* The containerd.services.snapshots.v1.Snapshots gRPC service on a
 * ts_snapshotter: request decoding, namespaces, status codes as
 * containerd's errdefs. */
#pragma once

#include "plugin/snapshotter.h"
#include "rpc/server.h"

/* Registers the ten Snapshots methods on server, served by s (which must
 * outlive the server). Returns 0 or -errno. */
int ts_service_register(ts_rpc_server *server, ts_snapshotter *s);
