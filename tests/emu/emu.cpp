/* emu.cpp - the host emulation's runtime (cuda_emu.h): device memory in
 * host memory, launches run at once, a block's threads as fibers.
 *
 * Fibers: each thread of the block running has its own stack, and a
 * scheduler resumes them in turn; a thread runs until it waits at a barrier
 * (__syncthreads: every live thread of the block; a warp operation: every
 * live lane of the warp) or ends. Threads that ended count as arrived. A
 * round in which no thread can go on is a deadlock: reported, and the
 * process aborts. The switch is a few instructions of x86-64 assembly
 * (callee-saved registers and the stack pointer), not ucontext, whose
 * every switch is a system call.
 */
#include "cuda_emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include <vector>

#if !defined(__x86_64__)
#error "the CUDA host emulation switches fibers in x86-64 assembly"
#endif

extern "C" void emu_switch(void **save_sp, void *to_sp);
extern "C" void emu_trampoline(void);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
    .globl emu_trampoline
    .type emu_trampoline, @function
emu_trampoline:
    movq %r12, %rdi
    call emu_fiber_main
    ud2
    .size emu_trampoline, .-emu_trampoline
)");

enum { EMU_STACK = 128 * 1024, EMU_MAX_THREADS = 1024 };
enum { T_READY, T_BLOCK_WAIT, T_WARP_WAIT, T_DONE };

struct emu_thread {
    uint3 tid;
    int lane, warp;
    int state;
    uint64_t wait_gen;
    void *sp;
};

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

static emu_thread threads[EMU_MAX_THREADS];
static emu_thread *cur;
static void *sched_sp;
static char *stacks;
static const std::function<void()> *body;
static int n_threads, n_live, block_arrived;
static uint64_t block_gen;
static int warp_live[EMU_MAX_THREADS / 32], warp_arrived[EMU_MAX_THREADS / 32];
static uint64_t warp_gen[EMU_MAX_THREADS / 32];
static uint64_t exchange[EMU_MAX_THREADS];

int emu_lane(void)
{
    return cur->lane;
}

static void yield(void)
{
    emu_switch(&cur->sp, sched_sp);
}

/* Arrival at the block's barrier; the last to arrive releases the others. */
static void block_arrive(bool wait)
{
    if (++block_arrived >= n_live) {
        block_gen++;
        block_arrived = 0;
        return;
    }
    if (wait) {
        cur->state = T_BLOCK_WAIT;
        cur->wait_gen = block_gen;
        yield();
    }
}

static void warp_arrive(bool wait)
{
    int w = cur->warp;
    if (++warp_arrived[w] >= warp_live[w]) {
        warp_gen[w]++;
        warp_arrived[w] = 0;
        return;
    }
    if (wait) {
        cur->state = T_WARP_WAIT;
        cur->wait_gen = warp_gen[w];
        yield();
    }
}

void __syncthreads(void)
{
    block_arrive(true);
}

void emu_warp_barrier(void)
{
    warp_arrive(true);
}

uint64_t emu_warp_exchange(uint64_t mine, int src)
{
    int base = cur->warp * 32;
    exchange[base + cur->lane] = mine;
    emu_warp_barrier();
    uint64_t r = src >= 0 && src < 32 && base + src < n_threads ? exchange[base + src] : mine;
    emu_warp_barrier();
    return r;
}

/* A thread's life: the kernel, then its place at barriers given up. */
extern "C" void emu_fiber_main(emu_thread *t)
{
    (*body)();
    t->state = T_DONE;
    n_live--;
    warp_live[t->warp]--;
    /* the others may have been waiting for this one only */
    if (block_arrived && block_arrived >= n_live) {
        block_gen++;
        block_arrived = 0;
    }
    if (warp_arrived[t->warp] && warp_arrived[t->warp] >= warp_live[t->warp]) {
        warp_gen[t->warp]++;
        warp_arrived[t->warp] = 0;
    }
    emu_switch(&t->sp, sched_sp);
    abort(); /* never resumed */
}

static void run_block(void)
{
    n_live = n_threads;
    block_arrived = 0;
    for (int w = 0; w < (n_threads + 31) / 32; w++) {
        warp_live[w] = n_threads - 32 * w < 32 ? n_threads - 32 * w : 32;
        warp_arrived[w] = 0;
    }
    for (int i = 0; i < n_threads; i++) {
        emu_thread *t = &threads[i];
        t->tid = make_uint3(i % blockDim.x, i / blockDim.x % blockDim.y, i / (blockDim.x * blockDim.y));
        t->lane = i % 32;
        t->warp = i / 32;
        t->state = T_READY;
        /* the stack's top (16-byte aligned) holds the trampoline's address
         * over 6 registers (r12 = t): after the switch's ret the stack
         * pointer is the top, and the trampoline's call enters
         * emu_fiber_main aligned as the ABI wants */
        uint64_t *sp = (uint64_t *)(stacks + (size_t)(i + 1) * EMU_STACK) - 7;
        sp[0] = sp[1] = sp[2] = 0;
        sp[3] = (uint64_t)t;
        sp[4] = sp[5] = 0;
        sp[6] = (uint64_t)emu_trampoline;
        t->sp = sp;
    }
    for (int done = 0; done < n_threads;) {
        int progress = 0;
        done = 0;
        for (int i = 0; i < n_threads; i++) {
            emu_thread *t = &threads[i];
            if (t->state == T_DONE) {
                done++;
                continue;
            }
            if ((t->state == T_BLOCK_WAIT && block_gen == t->wait_gen) ||
                (t->state == T_WARP_WAIT && warp_gen[t->warp] == t->wait_gen))
                continue;
            t->state = T_READY;
            cur = t;
            threadIdx = t->tid;
            emu_switch(&sched_sp, t->sp);
            progress = 1;
        }
        if (!progress && done < n_threads) {
            fprintf(stderr,
                    "cuda emulation: deadlock in block (%u,%u,%u): %d of %d threads wait at a barrier that not every "
                    "live thread reaches (divergent __syncthreads or warp operation)\n",
                    blockIdx.x, blockIdx.y, blockIdx.z, n_threads - done, n_threads);
            abort();
        }
    }
}

/* ---- streams, captures, launches ---- */

struct CUstream_st {
    int capturing;
    std::vector<std::function<void()>> *graph;
};
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};
struct CUevent_st {
    double ms;
};

static CUstream_st default_stream;
static cudaError_t last_error = cudaSuccess;

static CUstream_st *stream_of(cudaStream_t s)
{
    return s ? s : &default_stream;
}

/* An operation on s: recorded when s is being captured, else done now. */
static void enqueue(cudaStream_t s, std::function<void()> op)
{
    CUstream_st *st = stream_of(s);
    if (st->capturing)
        st->graph->push_back(std::move(op));
    else
        op();
}

static void run_grid(dim3 grid, dim3 block, const std::function<void()> &fn)
{
    n_threads = (int)(block.x * block.y * block.z);
    if (n_threads < 1 || n_threads > EMU_MAX_THREADS) {
        fprintf(stderr, "cuda emulation: a block of %d threads\n", n_threads);
        abort();
    }
    if (!stacks) {
        stacks = (char *)mmap(NULL, (size_t)EMU_MAX_THREADS * EMU_STACK, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (stacks == MAP_FAILED) {
            perror("cuda emulation: fiber stacks");
            abort();
        }
    }
    gridDim = grid;
    blockDim = block;
    body = &fn;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = make_uint3(x, y, z);
                run_block();
            }
}

void emu_launch(dim3 grid, dim3 block, cudaStream_t s, std::function<void()> fn)
{
    enqueue(s, [grid, block, fn]() { run_grid(grid, block, fn); });
}

/* ---- the runtime API ---- */

extern "C" {

cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    if (!*p)
        return last_error = cudaErrorMemoryAllocation;
    memset(*p, 0xA5, n); /* as uninitialized device memory: not zero */
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    return cudaMalloc(p, n);
}

cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    (void)kind;
    memcpy(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s)
{
    (void)kind;
    enqueue(s, [dst, src, n]() { memcpy(dst, src, n); });
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    enqueue(s, [p, v, n]() { memset(p, v, n); });
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    /* the emulated device's memory is the host's: say 16 GiB */
    *free_b = *total_b = (size_t)16 << 30;
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess:
        return "no error";
    case cudaErrorMemoryAllocation:
        return "out of memory (host emulation)";
    case cudaErrorNotSupported:
        return "operation not supported (host emulation)";
    default:
        return "error (host emulation)";
    }
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return last_error;
}

cudaError_t cudaDeviceSynchronize(void)
{
    return cudaSuccess;
}

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int d)
{
    return d == 0 ? cudaSuccess : (last_error = cudaErrorInvalidDevice);
}

cudaError_t cudaGetDevice(int *d)
{
    *d = 0;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int d)
{
    if (d != 0)
        return last_error = cudaErrorInvalidDevice;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "CUDA host emulation");
    prop->totalGlobalMem = (size_t)16 << 30;
    prop->multiProcessorCount = 1;
    prop->sharedMemPerBlock = 48 << 10;
    prop->sharedMemPerBlockOptin = 48 << 10;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = EMU_MAX_THREADS;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr attr, int d)
{
    (void)attr;
    (void)d;
    *v = 0; /* compute capability 0: nothing of sm_90 */
    return cudaSuccess;
}

cudaError_t emu_func_attributes(struct cudaFuncAttributes *a)
{
    memset(a, 0, sizeof *a);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    (void)flags;
    *s = new CUstream_st();
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    return cudaStreamCreateWithFlags(s, 0);
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    (void)s;
    return cudaSuccess;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = new CUevent_st();
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    enqueue(s, [e]() { e->ms = now_ms(); });
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    (void)e;
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode)
{
    (void)mode;
    CUstream_st *st = stream_of(s);
    if (st->capturing)
        return last_error = cudaErrorIllegalState;
    st->capturing = 1;
    st->graph = new std::vector<std::function<void()>>();
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    CUstream_st *st = stream_of(s);
    if (!st->capturing)
        return last_error = cudaErrorIllegalState;
    *g = new CUgraph_st{ std::move(*st->graph) };
    delete st->graph;
    st->graph = NULL;
    st->capturing = 0;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags)
{
    (void)flags;
    *x = new CUgraphExec_st{ g->ops };
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
    for (const auto &op : x->ops)
        enqueue(s, op);
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x)
{
    delete x;
    return cudaSuccess;
}
}
