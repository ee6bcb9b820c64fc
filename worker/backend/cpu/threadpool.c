/* threadpool.c - workers sleep on a condition variable between loops and take
 * tasks from a shared atomic counter while a loop runs (dynamic scheduling:
 * rows of uneven cost balance themselves). */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct threadpool {
    int n_threads;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    unsigned long generation; /* bumped for each loop */
    int stopping;
    int running; /* workers still inside the current loop */
    pool_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;
};

typedef struct worker_arg {
    threadpool *p;
    int index;
} worker_arg;

static void take_tasks(threadpool *p, int thread)
{
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n_tasks)
            return;
        p->fn(p->ctx, i, thread);
    }
}

static void *worker(void *arg)
{
    worker_arg *a = arg;
    threadpool *p = a->p;
    int index = a->index;
    free(a);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->generation == seen && !p->stopping)
            pthread_cond_wait(&p->start, &p->mu);
        if (p->stopping)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        take_tasks(p, index);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

threadpool *pool_new(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    threadpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    p->tids = calloc((size_t)n_threads, sizeof *p->tids);
    if (!p->tids) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a || (a->p = p, a->index = i, pthread_create(&p->tids[i], NULL, worker, a) != 0)) {
            free(a);
            p->n_threads = i; /* the ones that started */
            pool_destroy(&p);
            return NULL;
        }
    }
    return p;
}

void pool_destroy(threadpool **self)
{
    threadpool *p = *self;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->tids[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p->tids);
    free(p);
    *self = NULL;
}

int pool_threads(const threadpool *p)
{
    return p->n_threads;
}

void pool_run(threadpool *p, pool_fn fn, void *ctx, int n_tasks)
{
    if (p->n_threads == 1 || n_tasks <= 1) {
        for (int i = 0; i < n_tasks; i++)
            fn(ctx, i, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->running = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    take_tasks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->running > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
