/* cuda_emu.h - a host emulation of the CUDA device, for running the CUDA
 * backend's kernels and its GPU tests on a machine without a GPU.
 *
 * The CUDA sources (the .cu files of worker/backend/cuda and tests/gpu) are compiled by the
 * host C++ compiler with this header forced in first (-include) and
 * tests/emu ahead of the CUDA include directory, so that its
 * cuda_runtime.h stands in for the real one. The real CUDA headers still
 * give the types (dim3, uint4, cudaError_t, cudaLaunchConfig_t, __half).
 *
 * What it runs: each launch, at once and in order (a stream is a queue
 * that is always drained); a launch's blocks one after another, and a
 * block's threads as fibers on one OS thread (emu.cpp), switching at
 * __syncthreads and at warp operations (shuffles, __syncwarp, __any_sync),
 * whose lanes meet at a warp barrier; the threads take turns by index, or
 * from the last (SMQ_EMU_ORDER=reverse), so that a race shows in one of
 * the two orders. __shared__ variables are static: one copy, which the
 * block running owns, not reset between blocks (a read before any write
 * sees the last block's values; dynamic shared memory is poisoned per
 * block). A graph captured from a stream records its launches and copies
 * and replays them.
 *
 * What it is not: a model of the memory system or of timing (events time
 * the host), nor of device math: expf, sqrtf are the host's, so numbers
 * agree with a GPU's to rounding, not bit for bit (integer work and the
 * correctly rounded __fmul_rn-style operations agree exactly). Warp
 * operations assume every live lane of the warp takes part; a divergent
 * __syncthreads or shuffle is reported as a deadlock. The tensor cores'
 * WMMA is emulated by tests/emu/mma.h, cuBLAS's cublasGemmEx by a library
 * of its own (cublas_emu.cpp, loaded through SMQ_CUBLAS as the real one
 * would be); sm_90 instructions are not: code behind __CUDA_ARCH__ >= 900
 * compiles away.
 */
#ifndef SMQ_CUDA_EMU_H
#define SMQ_CUDA_EMU_H

#define SMQ_CUDA_EMU 1
/* the real runtime headers (which the CUDA headers include by quoted path,
 * past tests/emu) declare nothing: this one does */
#define __CUDA_RUNTIME_H__
#define __CUDA_RUNTIME_API_H__

#include <builtin_types.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- the runtime API the sources call (emu.cpp), for C and C++ ---- */

#ifdef __cplusplus
#define EMU_DV(v) = v
extern "C" {
#else
#define EMU_DV(v)
#endif
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s EMU_DV(0));
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s EMU_DV(0));
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int d);
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr attr, int d);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s EMU_DV(0));
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags EMU_DV(0));
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t *nodes, size_t *n);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x);
cudaError_t emu_func_attributes(struct cudaFuncAttributes *a);
/* Whether [p, p + n) lies inside one device allocation. */
int emu_device_range(const void *p, size_t n);
/* fn(a copy of arg's bytes) done in stream order, or recorded when the
 * stream is being captured (what a library's kernels are: cublas_emu.cpp). */
cudaError_t emu_enqueue_host(cudaStream_t s, void (*fn)(const void *), const void *arg, size_t bytes);
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
#include <vector_functions.h>

#include <functional>
#include <tuple>
#include <utility>

template <typename F> static inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, F *)
{
    return emu_func_attributes(a); /* ptxVersion 90: programmatic dependent launch (checked) */
}

/* The real headers annotate for nvcc; here they are plain C++. */
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#undef __grid_constant__
#undef __noinline__
#define __global__
#define __device__
#define __host__
#define __shared__      static
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __noinline__

/* ---- the thread running, and its block ---- */

/* Variables, not macros (cudaLaunchConfig_t has members of these names):
 * the scheduler sets threadIdx before it resumes a thread. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

void __syncthreads(void);
void emu_warp_barrier(void);
/* The calling lane's 8 bytes into its warp's exchange slots, a barrier,
 * then lane src's (its own when out of range). */
uint64_t emu_warp_exchange(uint64_t mine, int src);
/* The same exchange, all 32 slots of the warp back (lanes past the
 * block's threads hold nothing meaningful). */
const uint64_t *emu_warp_gather(uint64_t mine);
/* The calling lane's n bytes (n <= EMU_WIDE) into its warp's slots, a
 * barrier, then the slots: lane l's bytes at l * EMU_WIDE. */
enum { EMU_WIDE = 64 };
const unsigned char *emu_warp_gather_bytes(const void *mine, size_t n);
/* Threads take turns by index, or from the last (SMQ_EMU_ORDER=reverse
 * sets it at the start). */
void emu_set_order(int reverse);
/* Whether pred is true in any lane: one exchange. */
int emu_warp_any(int pred);
int emu_lane(void);
/* launch.cuh's grid_wait() and grid_release(): a kernel launched with
 * programmatic dependent launch may touch no allocation (device or pinned
 * memory) before its thread has called grid_wait(), nor call
 * grid_release() before it. The kernels' files are compiled with
 * -fsanitize=kernel-address, whose load and store hooks (emu.cpp) abort on
 * such an access, naming it. */
void emu_grid_wait(void);
void emu_grid_release(void);
/* The emulation's own code that touches only registers (fragments, warp
 * slots): not hooked, for speed. */
#define EMU_UNHOOKED __attribute__((no_sanitize_address))

static inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    (void)mask;
    emu_warp_barrier();
}

template <typename T> static inline T emu_shfl(T v, int src)
{
    static_assert(sizeof(T) <= 8, "shuffles of up to 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = emu_warp_exchange(bits, src);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}

template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    (void)mask;
    int lane = emu_lane();
    return emu_shfl(v, (lane & ~(width - 1)) + (src & (width - 1)));
}

template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    (void)mask;
    int lane = emu_lane(), src = lane ^ lane_mask;
    return emu_shfl(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}

template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    (void)mask;
    int lane = emu_lane(), src = lane + (int)delta;
    return emu_shfl(v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}

static inline int __any_sync(unsigned mask, int pred)
{
    (void)mask;
    return emu_warp_any(pred);
}

/* ---- loads, fences, atomics (one OS thread: plain memory) ---- */

template <typename T> static inline T __ldg(const T *p)
{
    return *p;
}

template <typename T> static inline T __ldcg(const T *p)
{
    return *p;
}

static inline void __threadfence(void) {}

template <typename T> static inline T atomicAdd(T *p, T v)
{
    T old = *p;
    *p = old + v;
    return old;
}

template <typename T> static inline T atomicMax(T *p, T v)
{
    T old = *p;
    *p = old > v ? old : v;
    return old;
}

/* ---- arithmetic: the rounded operations are the host's IEEE ones
 * (compiled with -ffp-contract=off) ---- */

static inline float __fmul_rn(float a, float b)
{
    return a * b;
}
static inline float __fadd_rn(float a, float b)
{
    return a + b;
}
static inline float __fsub_rn(float a, float b)
{
    return a - b;
}
static inline float __fdiv_rn(float a, float b)
{
    return a / b;
}
static inline double __dmul_rn(double a, double b)
{
    return a * b;
}
static inline double __dadd_rn(double a, double b)
{
    return a + b;
}
static inline double __dsub_rn(double a, double b)
{
    return a - b;
}
static inline double __ddiv_rn(double a, double b)
{
    return a / b;
}
static inline float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline int __float2int_rn(float f)
{
    return (int)rintf(f); /* the default rounding: to nearest, ties to even */
}

/* Four signed byte products added to c. */
static inline int __dp4a(int a, int b, int c)
{
    for (int i = 0; i < 4; i++)
        c += (int)(int8_t)(a >> 8 * i) * (int)(int8_t)(b >> 8 * i);
    return c;
}

/* The device's integer min and max overloads. */
#define EMU_MIN_MAX(T)                                                                                                 \
    static inline T min(T a, T b)                                                                                      \
    {                                                                                                                  \
        return a < b ? a : b;                                                                                          \
    }                                                                                                                  \
    static inline T max(T a, T b)                                                                                      \
    {                                                                                                                  \
        return a > b ? a : b;                                                                                          \
    }
EMU_MIN_MAX(int)
EMU_MIN_MAX(unsigned)
EMU_MIN_MAX(unsigned long)
EMU_MIN_MAX(unsigned long long)

/* ---- the runtime ---- */

/* Runs body() as every thread of every block of grid x block, now, or
 * records it when the stream is being captured into a graph; refuses (as
 * a launch would) block shapes past 1024 threads and more dynamic shared
 * memory than the kernel's limit (cudaFuncSetAttribute). */
cudaError_t emu_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                       std::function<void()> body, bool pdl = false);
cudaError_t emu_func_set_attribute(const void *kernel, enum cudaFuncAttribute attr, int value);
/* The running block's dynamic shared memory (SMQ_DYNAMIC_SMEM). */
void *emu_dynamic_smem(void);

template <typename... ExpTypes, typename... ActTypes>
static inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *config, void (*kernel)(ExpTypes...),
                                             ActTypes &&...args)
{
    /* the arguments converted to the parameters' types and kept by value,
     * as a launch copies them */
    std::tuple<typename std::decay<ExpTypes>::type...> kept(static_cast<ExpTypes>(args)...);
    bool pdl = false; /* programmatic dependent launch asked for */
    for (unsigned i = 0; i < config->numAttrs; i++)
        pdl |= config->attrs[i].id == cudaLaunchAttributeProgrammaticStreamSerialization &&
               config->attrs[i].val.programmaticStreamSerializationAllowed;
    return emu_launch((const void *)kernel, config->gridDim, config->blockDim, config->dynamicSmemBytes, config->stream,
                      [kernel, kept]() { std::apply(kernel, kept); }, pdl);
}

template <typename T> static inline cudaError_t cudaFuncSetAttribute(T *kernel, enum cudaFuncAttribute attr, int value)
{
    return emu_func_set_attribute((const void *)kernel, attr, value);
}

#endif /* __cplusplus */
#endif
