#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "common/clock.h"
#include "rpc/pool-internal.h"

struct ts_rpc_pool {
        pthread_mutex_t lock;
        pthread_cond_t work; /* a job queued, or stopping */
        pthread_cond_t gone; /* a thread ended */
        ts_rpc_job *head, *tail;
        bool stopping;
        unsigned max_threads, n_threads, n_idle, n_queued;
        unsigned idle_ms;
};

/* Waits for work; false when a spare thread has waited idle_ms for
 * nothing and should end. Called with p->lock held. */
static bool wait_for_work(ts_rpc_pool *p) {
        p->n_idle++;
        int r = 0;
        if (p->n_threads > 1) {
                struct timespec until = ts_clock_mono_after(p->idle_ms);
                r = pthread_cond_timedwait(&p->work, &p->lock, &until);
        } else
                pthread_cond_wait(&p->work, &p->lock);
        p->n_idle--;
        return !(r == ETIMEDOUT && !p->head && p->n_threads > 1);
}

static void *thread_main(void *arg) {
        ts_rpc_pool *p = arg;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                ts_rpc_job *j = p->head;
                if (!j) {
                        if (p->stopping || !wait_for_work(p))
                                break;
                        continue;
                }
                p->head = j->next;
                if (!p->head)
                        p->tail = NULL;
                p->n_queued--;
                pthread_mutex_unlock(&p->lock);
                j->run(j);
                pthread_mutex_lock(&p->lock);
        }
        p->n_threads--;
        pthread_cond_broadcast(&p->gone);
        /* Last touch of p: ts_rpc_pool_free may free it once we unlock. */
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* One more detached thread, with every signal blocked: signals go to the
 * process's own threads, never to a handler. Called with p->lock held. */
static int start_thread(ts_rpc_pool *p) {
        pthread_attr_t attr;
        pthread_t t;
        sigset_t all, old;
        int r = -pthread_attr_init(&attr);
        if (r < 0)
                return r;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = -pthread_create(&t, &attr, thread_main, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        if (r >= 0)
                p->n_threads++;
        return r;
}

static void stop_and_wait(ts_rpc_pool *p) {
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->work);
        while (p->n_threads > 0)
                pthread_cond_wait(&p->gone, &p->lock);
        pthread_mutex_unlock(&p->lock);
        pthread_cond_destroy(&p->gone);
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->lock);
        free(p);
}

int ts_rpc_pool_new(unsigned max_threads, unsigned idle_ms, ts_rpc_pool **ret) {
        if (max_threads < 1)
                return -EINVAL;
        ts_rpc_pool *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->work, &ca);
        pthread_cond_init(&p->gone, NULL);
        pthread_condattr_destroy(&ca);
        p->max_threads = max_threads;
        p->idle_ms = idle_ms ? idle_ms : TS_RPC_POOL_IDLE_MS;
        pthread_mutex_lock(&p->lock);
        int r = start_thread(p);
        pthread_mutex_unlock(&p->lock);
        if (r < 0) {
                stop_and_wait(p);
                return r;
        }
        *ret = p;
        return 0;
}

void ts_rpc_pool_submit(ts_rpc_pool *p, ts_rpc_job *j) {
        j->next = NULL;
        pthread_mutex_lock(&p->lock);
        if (p->tail)
                p->tail->next = j;
        else
                p->head = j;
        p->tail = j;
        p->n_queued++;
        /* A thread that fails to start leaves the job to the running ones. */
        if (p->n_queued > p->n_idle && p->n_threads < p->max_threads)
                (void) start_thread(p);
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->lock);
}

unsigned ts_rpc_pool_threads(ts_rpc_pool *p) {
        pthread_mutex_lock(&p->lock);
        unsigned n = p->n_threads;
        pthread_mutex_unlock(&p->lock);
        return n;
}

ts_rpc_pool *ts_rpc_pool_free(ts_rpc_pool *p) {
        if (p)
                stop_and_wait(p);
        return NULL;
}
