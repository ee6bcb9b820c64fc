/* threadpool.c - workers take tasks from a shared atomic counter while a loop
 * runs (dynamic scheduling: rows of uneven cost balance themselves).
 *
 * A decode step runs hundreds of short loops, one per matrix product, so the
 * hand-off between loops must cost microseconds, not a sleep and a wake-up:
 * between loops a worker spins for a while watching for the next one, and
 * only then sleeps on the condition variable.
 *
 * Every spin gives its core away now and then (sched_yield: under a
 * microsecond when nothing else wants the core). On a machine with more
 * runnable threads than cores (two workers on one host, or anything else
 * busy) the thread being waited for may be the one not running, and a spin
 * that never yields holds the core it needs for a whole time slice. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define SPIN_ROUNDS 200000 /* some milliseconds of pause */
#define YIELD_EVERY 256    /* pauses between yields: some microseconds */

/* One round of a spin: a pause, or every YIELD_EVERY rounds a yield. */
static void spin_round(unsigned i)
{
    if (i % YIELD_EVERY == YIELD_EVERY - 1)
        sched_yield();
    else
        cpu_relax();
}

struct threadpool {
    int n_threads;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t start;
    atomic_ulong generation; /* bumped for each loop */
    atomic_int stopping;
    atomic_int running; /* workers still inside the current loop */
    int sleeping;       /* workers waiting on `start` (under mu) */
    pool_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next;
    void (*tick)(void *ctx); /* the caller's, between its tasks and while it waits */
    void *tick_ctx;
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
        if (thread == 0 && p->tick)
            p->tick(p->tick_ctx);
    }
}

/* Waits until the generation moves past seen (or the pool stops). */
static unsigned long wait_loop(threadpool *p, unsigned long seen)
{
    for (unsigned i = 0; i < SPIN_ROUNDS; i++) {
        unsigned long g = atomic_load(&p->generation);
        if (g != seen || atomic_load(&p->stopping))
            return g;
        spin_round(i);
    }
    pthread_mutex_lock(&p->mu);
    p->sleeping++;
    while (atomic_load(&p->generation) == seen && !atomic_load(&p->stopping))
        pthread_cond_wait(&p->start, &p->mu);
    p->sleeping--;
    pthread_mutex_unlock(&p->mu);
    return atomic_load(&p->generation);
}

static void *worker(void *arg)
{
    worker_arg *a = arg;
    threadpool *p = a->p;
    int index = a->index;
    free(a);
    unsigned long seen = 0;
    for (;;) {
        seen = wait_loop(p, seen);
        if (atomic_load(&p->stopping))
            break;
        take_tasks(p, index);
        atomic_fetch_sub(&p->running, 1);
    }
    return NULL;
}

threadpool *pool_new(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    threadpool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_threads = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    p->tids = calloc((size_t)n_threads, sizeof *p->tids);
    if (!p->tids) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a || (a->p = p, a->index = i, pthread_create(&p->tids[i], NULL, worker, a) != 0)) {
            free(a);
            pool_destroy(&p);
            return NULL;
        }
        p->n_threads = i + 1;
    }
    return p;
}

void pool_destroy(threadpool **self)
{
    threadpool *p = *self;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stopping, 1);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->tids[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
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
        for (int i = 0; i < n_tasks; i++) {
            fn(ctx, i, 0);
            if (p->tick)
                p->tick(p->tick_ctx);
        }
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    atomic_store(&p->running, p->n_threads - 1);
    /* The release of the new generation publishes fn, ctx and n_tasks. */
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    if (p->sleeping)
        pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    take_tasks(p, 0);
    for (unsigned i = 0; atomic_load(&p->running) > 0; i++) {
        spin_round(i);
        if (i % YIELD_EVERY == 0 && p->tick)
            p->tick(p->tick_ctx);
    }
}

void pool_set_tick(threadpool *p, void (*fn)(void *ctx), void *tick_ctx)
{
    p->tick = fn;
    p->tick_ctx = tick_ctx;
}
