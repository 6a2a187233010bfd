/* A server's own handler threads (server option handler_threads): threads
 * that run jobs in the order they were submitted, started as jobs wait for
 * one (up to a maximum) and ended again after a while without work (idle_ms,
 * by default TS_RPC_POOL_IDLE_MS), down to one. A burst of calls that wait
 * on a peer gets as many threads as it needs; a quiet server keeps one. A server
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

#define TS_RPC_POOL_IDLE_MS 30000

/* A pool of at most max_threads threads (>= 1), every signal blocked in
 * each; one starts now. A thread beyond the first ends after idle_ms
 * (0: TS_RPC_POOL_IDLE_MS) without a job. Returns 0, -EINVAL, -ENOMEM or
 * -errno of pthread_create. */
int ts_rpc_pool_new(unsigned max_threads, unsigned idle_ms, ts_rpc_pool **ret);

/* Queues j (not owned) for the next free thread, starting a thread when
 * none is free and fewer than the maximum run. Never blocks, never fails
 * (without a new thread, a running one takes j): the caller bounds how
 * many jobs it has queued. */
void ts_rpc_pool_submit(ts_rpc_pool *p, ts_rpc_job *j);

/* Threads running now. */
unsigned ts_rpc_pool_threads(ts_rpc_pool *p);

/* Lets the queued jobs run, then stops the threads, waits until every one has
 * ended and frees the pool. Accepts NULL; returns NULL. */
ts_rpc_pool *ts_rpc_pool_free(ts_rpc_pool *p);
