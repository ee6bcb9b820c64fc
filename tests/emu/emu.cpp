/* emu.cpp - the host emulation's runtime (cuda_emu.h): device memory in
 * host memory, launches run at once, a block's threads as fibers.
 *
 * Fibers: each thread of the block running has its own stack; a thread
 * runs until it waits at a barrier (__syncthreads: every live thread of
 * the block; a warp operation: every live lane of the warp) or ends, and
 * then hands over directly to the next thread that can go on. Threads that
 * ended count as arrived. None able to go on while some wait is a
 * deadlock: reported, and the process aborts. The switch is a few
 * instructions of x86-64 assembly (callee-saved registers and the stack
 * pointer), not ucontext, whose every switch is a system call.
 */
#include "cuda_emu.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <map>
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
    int pre_wait; /* launched with PDL and not yet past grid_wait() */
};

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

static emu_thread threads[EMU_MAX_THREADS];
static emu_thread *cur;
static void *sched_sp;
static char *stacks;
static const std::function<void()> *body;
static int n_threads, n_live, block_arrived;
static bool grid_pdl; /* the running grid was launched with programmatic dependent launch */
static uint64_t block_gen;
static int warp_live[EMU_MAX_THREADS / 32], warp_arrived[EMU_MAX_THREADS / 32];
static uint64_t warp_gen[EMU_MAX_THREADS / 32];
/* two sets of exchange slots, by the parity of the warp barrier that
 * publishes them: a lane that has read exchange k and goes on to write
 * exchange k + 1 cannot overwrite what a slower lane has yet to read of k,
 * and cannot reach k + 2 before every lane has arrived at k + 1 */
static uint64_t exchange[2][EMU_MAX_THREADS];
static unsigned char wide[2][EMU_MAX_THREADS][EMU_WIDE];

int emu_lane(void)
{
    return cur->lane;
}

static bool runnable(const emu_thread *t)
{
    switch (t->state) {
    case T_READY:
        return true;
    case T_BLOCK_WAIT:
        return block_gen != t->wait_gen;
    case T_WARP_WAIT:
        return warp_gen[t->warp] != t->wait_gen;
    default:
        return false;
    }
}

/* How far below its top thread i's stack starts: the stacks lie 128 KB
 * apart, and their hot tops would otherwise all fall into the same cache
 * sets. A multiple of 64 bytes (the ABI wants 16). */
static size_t emu_stack_color(int i)
{
    return (size_t)(i % 67) * 64 + (size_t)(i / 67 % 8) * 4096 / 8;
}

/* The order threads take turns in: by index, or (SMQ_EMU_ORDER=reverse)
 * from the last. A kernel that reads what another thread writes without a
 * barrier between them reads it stale in one of the two orders: running a
 * test both ways shows such races either way round. */
static int order_reversed = -1;

static int reverse_order(void)
{
    if (order_reversed < 0) {
        const char *e = getenv("SMQ_EMU_ORDER");
        order_reversed = e && !strcmp(e, "reverse");
    }
    return order_reversed;
}

void emu_set_order(int reverse)
{
    order_reversed = reverse != 0;
}

/* The thread after cur (cyclically, in the order) that can go on, or NULL. */
static emu_thread *next_runnable(void)
{
    emu_thread *t = cur, *end = threads + n_threads;
    int back = reverse_order();
    for (int k = 0; k < n_threads; k++) {
        if (back)
            t = t == threads ? end - 1 : t - 1;
        else if (++t == end)
            t = threads;
        if (runnable(t))
            return t;
    }
    return NULL;
}

/* Leaves cur (which waits, or has ended) for the next thread that can go
 * on, switching to it directly; back to the scheduler when every thread
 * has ended. No thread able to go on while some wait is a deadlock. */
static void leave(void)
{
    emu_thread *me = cur, *t = next_runnable();
    if (!t) {
        if (n_live > 0) {
            fprintf(stderr,
                    "cuda emulation: deadlock in block (%u,%u,%u): %d of %d threads wait at a barrier that not every "
                    "live thread reaches (divergent __syncthreads or warp operation)\n",
                    blockIdx.x, blockIdx.y, blockIdx.z, n_live, n_threads);
            abort();
        }
        emu_switch(&me->sp, sched_sp);
        return;
    }
    t->state = T_READY;
    cur = t;
    threadIdx = t->tid;
    if (t != me)
        emu_switch(&me->sp, t->sp);
}

/* Arrival at the block's barrier; the last to arrive releases the others. */
static void block_arrive(void)
{
    if (++block_arrived >= n_live) {
        block_gen++;
        block_arrived = 0;
        return;
    }
    cur->state = T_BLOCK_WAIT;
    cur->wait_gen = block_gen;
    leave();
}

static void warp_arrive(void)
{
    int w = cur->warp;
    if (++warp_arrived[w] >= warp_live[w]) {
        warp_gen[w]++;
        warp_arrived[w] = 0;
        return;
    }
    cur->state = T_WARP_WAIT;
    cur->wait_gen = warp_gen[w];
    leave();
}

void __syncthreads(void)
{
    block_arrive();
}

void emu_warp_barrier(void)
{
    warp_arrive();
}

/* The warp's 32 slots of the exchange the calling lane joins (its own
 * written as mine), after the barrier that publishes them. */
const uint64_t *emu_warp_gather(uint64_t mine)
{
    int base = cur->warp * 32;
    uint64_t *slots = exchange[warp_gen[cur->warp] & 1];
    slots[base + cur->lane] = mine;
    warp_arrive();
    return slots + base;
}

uint64_t emu_warp_exchange(uint64_t mine, int src)
{
    const uint64_t *slots = emu_warp_gather(mine);
    return src >= 0 && src < 32 && cur->warp * 32 + src < n_threads ? slots[src] : mine;
}

const unsigned char *emu_warp_gather_bytes(const void *mine, size_t n)
{
    if (n > EMU_WIDE) {
        fprintf(stderr, "cuda emulation: a warp exchange of %zu bytes a lane\n", n);
        abort();
    }
    int base = cur->warp * 32;
    unsigned char(*slots)[EMU_WIDE] = wide[warp_gen[cur->warp] & 1];
    memcpy(slots[base + cur->lane], mine, n);
    warp_arrive();
    return slots[base];
}

int emu_warp_any(int pred)
{
    const uint64_t *slots = emu_warp_gather(pred != 0);
    int base = cur->warp * 32, lanes = n_threads - base < 32 ? n_threads - base : 32, any = 0;
    for (int l = 0; l < lanes; l++) /* lanes that have ended take no part */
        any |= threads[base + l].state != T_DONE && slots[l] != 0;
    return any;
}

/* A thread's life: the kernel, then its place at barriers given up. */
extern "C" void emu_fiber_main(emu_thread *t)
{
    (*body)();
    t->pre_wait = 0;
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
    leave();
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
        t->pre_wait = grid_pdl;
        /* the stack's top (16-byte aligned) holds the trampoline's address
         * over 6 registers (r12 = t): after the switch's ret the stack
         * pointer is the top, and the trampoline's call enters
         * emu_fiber_main aligned as the ABI wants */
        uint64_t *sp = (uint64_t *)(stacks + (size_t)(i + 1) * EMU_STACK - emu_stack_color(i)) - 7;
        sp[0] = sp[1] = sp[2] = 0;
        sp[3] = (uint64_t)t;
        sp[4] = sp[5] = 0;
        sp[6] = (uint64_t)emu_trampoline;
        t->sp = sp;
    }
    /* the first in the order first; the threads then hand over to one
     * another, and the last to end comes back here */
    cur = &threads[reverse_order() ? n_threads - 1 : 0];
    threadIdx = cur->tid;
    emu_switch(&sched_sp, cur->sp);
}

/* The emulated programs load cuBLAS's emulation (cublas_emu.cpp) from
 * beside them, build/emu/libcublas_emu.so for build/emu/tests/X, unless
 * SMQ_CUBLAS names a library. */
__attribute__((constructor)) static void use_emulated_cublas(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 32);
    if (getenv("SMQ_CUBLAS") || n <= 0)
        return;
    exe[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash)
            return;
        *slash = 0;
    }
    strcat(exe, "/libcublas_emu.so");
    setenv("SMQ_CUBLAS", exe, 0);
}

/* ---- streams, captures, launches ---- */

struct CUstream_st {
    int capturing, invalidated;
    enum cudaStreamCaptureMode mode;
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

/* The stream being captured (one at a time here), if any. While it is,
 * the calls the runtime refuses during a capture that is not relaxed
 * (cudaStreamCaptureModeGlobal, ThreadLocal: this emulation has one
 * thread) fail and invalidate it, as they do on a device: allocation,
 * freeing, synchronous copies and sets, synchronization. And work for
 * another stream is refused too (on a device it would run at once, outside
 * the graph: in this code base always a mistake). */
static CUstream_st *captured;

static cudaError_t capture_refuses(const char *what, cudaError_t why)
{
    if (!captured || captured->mode == cudaStreamCaptureModeRelaxed)
        return cudaSuccess;
    fprintf(stderr, "cuda emulation: %s while a stream is being captured: refused, the capture is invalidated\n", what);
    captured->invalidated = 1;
    return last_error = why;
}

/* An operation on s: recorded when s is being captured, else done now. */
static cudaError_t enqueue(cudaStream_t s, std::function<void()> op)
{
    CUstream_st *st = stream_of(s);
    if (st->capturing) {
        st->graph->push_back(std::move(op));
        return cudaSuccess;
    }
    if (cudaError_t e = capture_refuses("work for another stream", cudaErrorStreamCaptureImplicit))
        return e;
    op();
    return cudaSuccess;
}

/* Dynamic shared memory: one buffer, the block running's, poisoned before
 * each block as uninitialized memory is not zero. */
static unsigned char *dyn_smem;
static size_t dyn_smem_cap, dyn_smem_bytes;

void *emu_dynamic_smem(void)
{
    return dyn_smem;
}

/* cudaFuncAttributeMaxDynamicSharedMemorySize per kernel; 48 KB unless raised. */
static std::map<const void *, int> max_dyn_smem;
enum { EMU_DYN_SMEM_DEFAULT = 48 << 10, EMU_DYN_SMEM_OPTIN = 227 << 10 };

static void run_grid(dim3 grid, dim3 block, const std::function<void()> &fn)
{
    n_threads = (int)(block.x * block.y * block.z);
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
                if (dyn_smem_bytes)
                    memset(dyn_smem, 0xA5, dyn_smem_bytes);
                run_block();
            }
}

cudaError_t emu_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t s, std::function<void()> fn,
                       bool pdl)
{
    /* what a launch refuses: checked when it is made (or captured) */
    unsigned long long n = (unsigned long long)block.x * block.y * block.z;
    if (n < 1 || n > EMU_MAX_THREADS || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "cuda emulation: a launch of (%u,%u,%u) blocks of (%u,%u,%u) threads\n", grid.x, grid.y, grid.z,
                block.x, block.y, block.z);
        return last_error = cudaErrorInvalidConfiguration;
    }
    auto lim = max_dyn_smem.find(kernel);
    if (smem > (size_t)(lim == max_dyn_smem.end() ? EMU_DYN_SMEM_DEFAULT : lim->second)) {
        fprintf(stderr, "cuda emulation: a launch with %zu bytes of dynamic shared memory, past the kernel's limit\n",
                smem);
        return last_error = cudaErrorInvalidValue;
    }
    return enqueue(s, [grid, block, smem, fn, pdl]() {
        if (smem > dyn_smem_cap) {
            free(dyn_smem);
            dyn_smem = (unsigned char *)aligned_alloc(128, (smem + 127) / 128 * 128);
            if (!dyn_smem) {
                perror("cuda emulation: shared memory");
                abort();
            }
            dyn_smem_cap = smem;
        }
        dyn_smem_bytes = smem;
        grid_pdl = pdl;
        run_grid(grid, block, fn);
        grid_pdl = false;
        dyn_smem_bytes = 0;
    });
}

cudaError_t emu_func_set_attribute(const void *kernel, enum cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return cudaSuccess;
    if (value < 0 || value > EMU_DYN_SMEM_OPTIN)
        return last_error = cudaErrorInvalidValue;
    max_dyn_smem[kernel] = value;
    return cudaSuccess;
}

/* ---- device memory: the allocations, for checking what cuBLAS is given ---- */

struct emu_allocation {
    size_t bytes;
    bool device; /* else pinned host memory, which the device reaches too */
};
static std::map<uintptr_t, emu_allocation> allocations; /* by start */

int emu_device_range(const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin())
        return 0;
    --it;
    size_t len = it->second.bytes;
    return a >= it->first && n <= len && a - it->first <= len - n;
}

/* ---- programmatic dependent launch: launch.cuh's contract ---- */

void emu_grid_wait(void)
{
    if (cur)
        cur->pre_wait = 0;
}

static void pdl_breach(const char *what, const void *pc)
{
    Dl_info info = {};
    bool known = pc && dladdr(pc, &info) && info.dli_fname;
    uintptr_t off = known ? (uintptr_t)pc - (uintptr_t)info.dli_fbase : (uintptr_t)pc;
    fprintf(stderr,
            "cuda emulation: thread (%u,%u,%u) of block (%u,%u,%u), launched with programmatic dependent launch, %s "
            "before grid_wait() (launch.cuh's contract); where: addr2line -f -C -e %s 0x%lx\n",
            threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z, what,
            known ? info.dli_fname : "(the program)", (unsigned long)off);
    abort();
}

void emu_grid_release(void)
{
    if (cur && cur->pre_wait)
        pdl_breach("called grid_release()", __builtin_return_address(0));
}

/* An access by instrumented code (-fsanitize=kernel-address: the kernels'
 * files): before grid_wait(), none may reach an allocation. The first test
 * is all that most accesses cost. */
static inline void pdl_access(uintptr_t a, size_t n, bool store, const void *pc)
{
    if (__builtin_expect(!cur || !cur->pre_wait, 1))
        return;
    if (a - (uintptr_t)stacks < (uintptr_t)EMU_MAX_THREADS * EMU_STACK)
        return; /* a thread's own stack: its locals */
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin() || a - (--it)->first >= it->second.bytes)
        return; /* the stack, static shared memory, the host's own memory */
    char what[96];
    snprintf(what, sizeof what, "%s %zu bytes at %p (an allocation's byte %zu)", store ? "wrote" : "read", n, (void *)a,
             (size_t)(a - it->first));
    pdl_breach(what, pc);
}

#define EMU_ACCESS_HOOKS(n)                                                                                            \
    extern "C" void __asan_load##n##_noabort(uintptr_t a)                                                              \
    {                                                                                                                  \
        pdl_access(a, n, false, __builtin_return_address(0));                                                          \
    }                                                                                                                  \
    extern "C" void __asan_store##n##_noabort(uintptr_t a)                                                             \
    {                                                                                                                  \
        pdl_access(a, n, true, __builtin_return_address(0));                                                           \
    }
EMU_ACCESS_HOOKS(1)
EMU_ACCESS_HOOKS(2)
EMU_ACCESS_HOOKS(4)
EMU_ACCESS_HOOKS(8)
EMU_ACCESS_HOOKS(16)
extern "C" void __asan_loadN_noabort(uintptr_t a, size_t n)
{
    pdl_access(a, n, false, __builtin_return_address(0));
}
extern "C" void __asan_storeN_noabort(uintptr_t a, size_t n)
{
    pdl_access(a, n, true, __builtin_return_address(0));
}
extern "C" void __asan_handle_no_return(void) {}

cudaError_t emu_enqueue_host(cudaStream_t s, void (*fn)(const void *), const void *arg, size_t bytes)
{
    std::vector<unsigned char> kept((const unsigned char *)arg, (const unsigned char *)arg + bytes);
    return enqueue(s, [fn, kept]() { fn(kept.data()); });
}

/* ---- the runtime API ---- */

extern "C" {

/* Device memory (capped at EMU_DEVICE_MEMORY, in use counted: what
 * cudaMemGetInfo says) and pinned host memory (not counted), both from the
 * host's heap and poisoned as uninitialized memory is not zero. */
static const size_t EMU_DEVICE_MEMORY = (size_t)16 << 30;
static size_t device_used;

static cudaError_t emu_alloc(void **p, size_t n, bool device)
{
    *p = NULL;
    if (cudaError_t e = capture_refuses(device ? "cudaMalloc" : "cudaMallocHost", cudaErrorStreamCaptureUnsupported))
        return e;
    if (device && n > EMU_DEVICE_MEMORY - device_used)
        return last_error = cudaErrorMemoryAllocation;
    *p = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    if (!*p)
        return last_error = cudaErrorMemoryAllocation;
    memset(*p, 0xA5, n);
    allocations[(uintptr_t)*p] = { n, device };
    if (device)
        device_used += n;
    return cudaSuccess;
}

static cudaError_t emu_free(void *p, bool device)
{
    if (cudaError_t e = capture_refuses(device ? "cudaFree" : "cudaFreeHost", cudaErrorStreamCaptureUnsupported))
        return e;
    if (!p)
        return cudaSuccess;
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end() || it->second.device != device)
        return last_error = cudaErrorInvalidValue;
    if (device)
        device_used -= it->second.bytes;
    allocations.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    return emu_alloc(p, n, true);
}

cudaError_t cudaFree(void *p)
{
    return emu_free(p, true);
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    return emu_alloc(p, n, false);
}

cudaError_t cudaFreeHost(void *p)
{
    return emu_free(p, false);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    (void)kind;
    if (cudaError_t e = capture_refuses("cudaMemcpy", cudaErrorStreamCaptureImplicit))
        return e;
    memcpy(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s)
{
    (void)kind;
    return enqueue(s, [dst, src, n]() { memcpy(dst, src, n); });
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    if (cudaError_t e = capture_refuses("cudaMemset", cudaErrorStreamCaptureImplicit))
        return e;
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    return enqueue(s, [p, v, n]() { memset(p, v, n); });
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    *total_b = EMU_DEVICE_MEMORY;
    *free_b = EMU_DEVICE_MEMORY - device_used;
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
    return capture_refuses("cudaDeviceSynchronize", cudaErrorStreamCaptureUnsupported);
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
    prop->totalGlobalMem = EMU_DEVICE_MEMORY;
    prop->multiProcessorCount = 1;
    prop->sharedMemPerBlock = 48 << 10;
    prop->sharedMemPerBlockOptin = EMU_DYN_SMEM_OPTIN;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = EMU_MAX_THREADS;
    return cudaSuccess;
}

/* Compute capability 9.0, so that the kernels are launched with
 * programmatic dependent launch and its contract is checked; other
 * attributes 0. */
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr attr, int d)
{
    (void)d;
    *v = attr == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
    return cudaSuccess;
}

cudaError_t emu_func_attributes(struct cudaFuncAttributes *a)
{
    memset(a, 0, sizeof *a);
    a->ptxVersion = a->binaryVersion = 90;
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
    return capture_refuses("cudaStreamSynchronize", cudaErrorStreamCaptureUnsupported);
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
    return enqueue(s, [e]() { e->ms = now_ms(); });
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    (void)e;
    return capture_refuses("cudaEventSynchronize", cudaErrorStreamCaptureUnsupported);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode)
{
    CUstream_st *st = stream_of(s);
    if (captured)
        return last_error = cudaErrorIllegalState;
    st->capturing = 1;
    st->invalidated = 0;
    st->mode = mode;
    st->graph = new std::vector<std::function<void()>>();
    captured = st;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    CUstream_st *st = stream_of(s);
    if (!st->capturing)
        return last_error = cudaErrorIllegalState;
    *g = st->invalidated ? NULL : new CUgraph_st{ std::move(*st->graph) };
    delete st->graph;
    st->graph = NULL;
    st->capturing = 0;
    captured = NULL;
    return st->invalidated ? (last_error = cudaErrorStreamCaptureInvalidated) : cudaSuccess;
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
        if (cudaError_t e = enqueue(s, op))
            return e;
    return cudaSuccess;
}

/* Counts a graph's nodes (one per captured kernel, copy or set); the nodes
 * themselves are not there to hand out. */
cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t *nodes, size_t *n)
{
    if (!g || !n || nodes)
        return last_error = cudaErrorInvalidValue;
    *n = g->ops.size();
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
