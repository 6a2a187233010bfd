/* A server's own handler threads (server option handler_threads): a fixed
 * set of threads that run jobs in the order they were submitted. A server
 * with its own pool does not share libuv's process-wide one, so handlers of
 * one server that block for long (waiting on a peer that calls back into
 * this process) cannot take the threads another server's handlers need. */
#pragma once

typedef struct ts_rpc_job {
        struct ts_rpc_job *next;
        /* Runs on a pool thread; the job's owner posts its completion. */
        void (*run)(struct ts_rpc_job *j);
} ts_rpc_job;

typedef struct ts_rpc_pool ts_rpc_pool;

/* Starts n_threads threads (n_threads >= 1) with every signal blocked.
 * Returns 0, -ENOMEM or -errno of pthread_create (the threads started so
 * far are stopped again). */
int ts_rpc_pool_new(unsigned n_threads, ts_rpc_pool **ret);

/* Queues j (not owned) for the next free thread. Never blocks, never fails:
 * the caller bounds how many jobs it has queued. */
void ts_rpc_pool_submit(ts_rpc_pool *p, ts_rpc_job *j);

/* Lets the queued jobs run, then stops and joins the threads and frees the
 * pool. Accepts NULL; returns NULL. */
ts_rpc_pool *ts_rpc_pool_free(ts_rpc_pool *p);
