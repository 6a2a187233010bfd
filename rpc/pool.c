#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#include "rpc/pool-internal.h"

struct ts_rpc_pool {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        ts_rpc_job *head, *tail;
        bool stopping;
        unsigned n_threads;
        pthread_t threads[];
};

static void *thread_main(void *p) {
        ts_rpc_pool *pool = p;

        pthread_mutex_lock(&pool->lock);
        for (;;) {
                ts_rpc_job *j = pool->head;
                if (!j) {
                        if (pool->stopping)
                                break;
                        pthread_cond_wait(&pool->cond, &pool->lock);
                        continue;
                }
                pool->head = j->next;
                if (!pool->head)
                        pool->tail = NULL;
                pthread_mutex_unlock(&pool->lock);
                j->run(j);
                pthread_mutex_lock(&pool->lock);
        }
        pthread_mutex_unlock(&pool->lock);
        return NULL;
}

static void stop_and_join(ts_rpc_pool *p) {
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        for (unsigned i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p);
}

int ts_rpc_pool_new(unsigned n_threads, ts_rpc_pool **ret) {
        ts_rpc_pool *p = calloc(1, sizeof(*p) + n_threads * sizeof(pthread_t));
        sigset_t all, old;
        int r = 0;

        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        /* Signals go to the process's own threads, never to a handler. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        for (; p->n_threads < n_threads; p->n_threads++) {
                r = -pthread_create(&p->threads[p->n_threads], NULL, thread_main, p);
                if (r < 0)
                        break;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r < 0) {
                stop_and_join(p);
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
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
}

ts_rpc_pool *ts_rpc_pool_free(ts_rpc_pool *p) {
        if (p)
                stop_and_join(p);
        return NULL;
}
