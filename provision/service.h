/* The thinsnap.v1.Provisioner gRPC service: thin handlers that decode a
 * request, call the provisioner (provision/provisioner.h) and encode its
 * answer. Host paths in requests (ImportImage, InjectFile) are opened with
 * the calling process's uid and gid (SO_PEERCRED), so the service reads no
 * file its caller could not read. */
#pragma once

#include "provision/provisioner.h"
#include "rpc/server.h"

/* Registers every method of the service on server. Returns 0 or the errors
 * of ts_rpc_server_add_service(). */
int ts_prov_service_register(ts_rpc_server *server, ts_prov *p);
