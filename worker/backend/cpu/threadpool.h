/* threadpool.h - a fixed set of worker threads that run one parallel loop at
 * a time: pool_run(p, fn, ctx, n) calls fn(ctx, i, thread) for i in [0, n),
 * spread over the threads, and returns when all are done. The caller's thread
 * takes part, so a pool of 1 runs everything inline. */
#ifndef SMQ_THREADPOOL_H
#define SMQ_THREADPOOL_H

typedef void (*pool_fn)(void *ctx, int task, int thread);

typedef struct threadpool threadpool;

/* n_threads >= 1 (the caller counts as one). NULL when threads cannot start. */
threadpool *pool_new(int n_threads);
void pool_destroy(threadpool **self);
int pool_threads(const threadpool *p);
void pool_run(threadpool *p, pool_fn fn, void *ctx, int n_tasks);
/* From now on pool_run calls fn(ctx) on the caller's thread after each task
 * it takes and, while it waits for the other threads, every few
 * microseconds (NULL: never): a long step's progress hook (backend.h). */
void pool_set_tick(threadpool *p, void (*fn)(void *ctx), void *tick_ctx);

#endif
