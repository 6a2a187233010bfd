/* The test service (testsvc.proto) served by the rpc layer: used by the
 * in-process unit test and by the server binary the python peer calls. */
#pragma once

#include <pthread.h>
#include <stdbool.h>

#include "rpc/server.h"
#include "testsvc.pb-c.h"

/* Registers Echo, Stream and Fail. Returns 0 or -errno. */
int ts_testsvc_register(ts_rpc_server *s);

/* A server of the test service running on a thread of its own, listening on
 * a socket in a fresh directory under /tmp: for in-process tests. */
typedef struct ts_testsvc_server {
        ts_rpc_server *s;
        pthread_t thread;
        int rc; /* what ts_rpc_server_run returned */
        char path[108];
} ts_testsvc_server;

/* Creates the server with o (NULL: defaults), registers the test service
 * and the n_extra methods of extra, listens and runs it. Returns 0 or
 * -errno. */
int ts_testsvc_start(ts_testsvc_server *t, const ts_rpc_server_options *o,
                     const ts_rpc_method *extra, size_t n_extra);

/* Shuts the server down gracefully, joins its thread, frees it and removes
 * its socket and directory. Returns what the server's run returned. */
int ts_testsvc_stop(ts_testsvc_server *t);

/* A raw method, /t.Gate/Wait: its handlers wait until the gate opens (or
 * their call is cancelled), then answer an empty message. */
extern const ts_rpc_method ts_testsvc_gate;

/* Opens or closes the gate. */
void ts_testsvc_gate_set(bool open);

/* Waits until at least n handlers wait at the gate; returns how many do. */
unsigned ts_testsvc_gate_wait_for(unsigned n);
