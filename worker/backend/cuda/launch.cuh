/* launch.cuh - how the decode step's kernels are launched: programmatic
 * dependent launch (PDL) and an L2 prefetch of a kernel's weights before
 * it waits for its predecessor.
 *
 * A decode step is some 185 short kernels in a row, each of which used to
 * start only when the one before had finished: its blocks then had to be
 * scheduled and to fetch their first weights from memory, on an idle GPU.
 * On sm_90 and later, a kernel launched by pdl_launch() may start while
 * its predecessor in the stream is still running:
 *
 *   kernel body:  prefetch_l2(its own weights)    weights never change
 *                 grid_wait()                      the predecessor is done,
 *                                                  its writes visible
 *                 grid_release()                   the next kernel may start
 *                 ... the work ...
 *
 * Rules for a kernel launched by pdl_launch() (launch.cuh's contract):
 *   - every block calls grid_wait() unconditionally, before any access to
 *     memory that another kernel writes (before an early return too), so
 *     that a kernel's end implies its predecessor's, transitively;
 *   - before grid_wait() it reads nothing from memory and writes nothing:
 *     only prefetch_l2() of data no kernel writes (the weights).
 * grid_release() after grid_wait() lets at most one kernel run ahead:
 * the next one's blocks fill the SMs this one leaves idle and fetch their
 * weights, and no chain of waiting blocks piles up.
 *
 * The host emulation (tests/emu) checks these rules on every load and store
 * of the backend's kernels, and aborts naming the source line of a breach.
 *
 * Without PDL (SMQ_CUDA_PDL=0, a device before sm_90) grid_wait() and
 * grid_release() do nothing and the launches are ordinary. The prefetch
 * alone (SMQ_CUDA_PREFETCH=0 turns it off) still puts a block's whole
 * weight slice in flight at its start, where the loads that follow wait
 * on chains of dependent instructions.
 */
#ifndef SMQ_CUDA_LAUNCH_CUH
#define SMQ_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Waits until the kernel before this one in the stream has finished and
 * its writes are visible (a no-op when launched without PDL). */
__device__ static inline void grid_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#elif defined(SMQ_CUDA_EMU)
    emu_grid_wait(); /* the emulation checks the contract below */
#endif
}

/* Lets the next kernel in the stream be scheduled once every block of this
 * one has called it (or ended). */
__device__ static inline void grid_release()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#elif defined(SMQ_CUDA_EMU)
    emu_grid_release();
#endif
}

/* Declares name, the block's dynamic shared memory (the launch's smem
 * bytes), 128-byte aligned. A macro because the host emulation of the
 * device (tests/emu) has no extern __shared__: there it is a pointer to
 * the running block's buffer. */
#ifdef SMQ_CUDA_EMU
#define SMQ_DYNAMIC_SMEM(name) unsigned char *const name = (unsigned char *)emu_dynamic_smem()
#else
#define SMQ_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#define PREFETCH_CHUNK 16384u /* bytes per bulk prefetch */

/* Asks for bytes at p to be brought into L2, without waiting: the 16-byte
 * aligned part of the range, in PREFETCH_CHUNK pieces, one a lane of the
 * calling warp (call it from whole warps; lanes past the pieces idle). A
 * hint: nothing reads its result, so it cannot change what a kernel
 * computes. sm_90's bulk copy engine; older devices skip it. */
__device__ static inline void prefetch_l2(const void *p, uint64_t bytes, uint32_t lane)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint64_t a = ((uint64_t)p + 15) & ~(uint64_t)15, end = ((uint64_t)p + bytes) & ~(uint64_t)15;
    for (uint64_t at = a + (uint64_t)lane * PREFETCH_CHUNK; at < end; at += 32ull * PREFETCH_CHUNK) {
        uint32_t n = (uint32_t)(end - at < PREFETCH_CHUNK ? end - at : PREFETCH_CHUNK);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(__cvta_generic_to_global((const void *)at)),
                     "r"(n));
    }
#else
    (void)p;
    (void)bytes;
    (void)lane;
#endif
}

/* A kernel that does nothing: its attributes say which code the device
 * runs (griddepcontrol needs PTX of sm_90 or later). */
template <int N> __global__ void pdl_probe_kernel() {}

/* SMQ_CUDA_<name> set to 0: a switch read once per process. */
inline bool launch_switch_off(const char *env)
{
    const char *e = getenv(env);
    return e && !strcmp(e, "0");
}

/* Whether launches on the current device use PDL: SMQ_CUDA_PDL is not 0,
 * the device is sm_90 or later and runs code built for it, and PDL is
 * neither given up (pdl_give_up) nor held off (pdl_hold). Decided once a
 * device (inline, not static: one state for every file that launches). */
inline int *pdl_state(int dev)
{
    static int state[64]; /* 0 unknown, 1 on, 2 off */
    return &state[dev & 63];
}

enum { PDL_GIVEN_UP, PDL_HELD };
inline int *pdl_flag(int which)
{
    static int flags[2];
    return &flags[which];
}

inline bool pdl_on()
{
    static const bool off = launch_switch_off("SMQ_CUDA_PDL");
    int dev = 0;
    if (off || *pdl_flag(PDL_GIVEN_UP) || *pdl_flag(PDL_HELD) || cudaGetDevice(&dev) != cudaSuccess)
        return false;
    int *st = pdl_state(dev);
    if (*st == 0) {
        int major = 0;
        cudaFuncAttributes fa;
        bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9 &&
                  cudaFuncGetAttributes(&fa, pdl_probe_kernel<0>) == cudaSuccess && fa.ptxVersion >= 90;
        cudaGetLastError();
        *st = ok ? 1 : 2;
    }
    return *st == 1;
}

/* No more PDL in this process: a launch or a graph failed with it and
 * worked without it. Said once on stderr. */
inline void pdl_give_up()
{
    if (!*pdl_flag(PDL_GIVEN_UP))
        fprintf(stderr, "cuda: kernels could not be launched or captured with programmatic dependent launch; "
                        "launching them one after another\n");
    *pdl_flag(PDL_GIVEN_UP) = 1;
}

/* Ordinary launches while held (a retry without PDL, a test's comparison). */
inline void pdl_hold(bool held)
{
    *pdl_flag(PDL_HELD) = held;
}

/* Whether kernels prefetch their weights (SMQ_CUDA_PREFETCH not 0). */
inline bool prefetch_on()
{
    static const bool off = launch_switch_off("SMQ_CUDA_PREFETCH");
    return !off;
}

/* A launch's configuration: grid, block, dynamic shared bytes, stream. */
static inline cudaLaunchConfig_t launch_config(dim3 grid, dim3 block, size_t smem, cudaStream_t s)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    return cfg;
}

/* Launches kernel<<<grid, block, smem, s>>>(args...): every launch goes
 * through here or pdl_launch (one place that can launch differently: a
 * host emulation of the device, tests/emu, runs kernels this way).
 * Returns the launch's error. */
template <typename... P, typename... A>
static cudaError_t launch_plain(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A &&...args)
{
    cudaLaunchConfig_t cfg = launch_config(grid, block, smem, s);
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

/* Launches kernel<<<grid, block, smem, s>>>(args...), overlapping its
 * predecessor when pdl_on(): only for kernels that keep launch.cuh's
 * contract. Returns the launch's error. */
template <typename... P, typename... A>
static cudaError_t pdl_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A &&...args)
{
    cudaLaunchConfig_t cfg = launch_config(grid, block, smem, s);
    cudaLaunchAttribute attr = {};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl_on() ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
    if (e != cudaSuccess && cfg.numAttrs) {
        /* a driver that refuses the attribute: ordinary launches from now
         * on, if an ordinary one works (else the fault is not PDL's) */
        cudaGetLastError();
        cfg.numAttrs = 0;
        if (cudaLaunchKernelEx(&cfg, kernel, args...) == cudaSuccess) {
            pdl_give_up();
            return cudaSuccess;
        }
        cudaGetLastError();
    }
    return e;
}

#endif
