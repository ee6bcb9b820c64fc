/* dequant.cu - whole-tensor dequantization on the GPU.
 *
 * One thread per output element, grid-stride: the float writes coalesce, and
 * the 32 threads of a warp read the same block header, which the cache
 * serves once. Every element goes through quant.h's q*_value functions, the
 * same code the host runs, so that the two agree bit for bit.
 */
#include "dequant.h"
#include "launch.cuh"
#include "quant.h"

#include <cuda_runtime.h>

#define DEQUANT_THREADS    256
#define DEQUANT_MAX_BLOCKS (1u << 20) /* beyond this the grid strides */

__device__ static float dequant_value(qtype type, const void *src, uint64_t i)
{
    switch (type) {
    case QTYPE_Q4_K:
        return q4k_value((const block_q4_K *)src + i / QK_K, (int)(i % QK_K));
    case QTYPE_Q5_K:
        return q5k_value((const block_q5_K *)src + i / QK_K, (int)(i % QK_K));
    case QTYPE_Q6_K:
        return q6k_value((const block_q6_K *)src + i / QK_K, (int)(i % QK_K));
    case QTYPE_Q8_0:
        return q80_value((const block_q8_0 *)src + i / QK8_0, (int)(i % QK8_0));
    case QTYPE_F16:
        return fp16_to_f32(((const uint16_t *)src)[i]);
    case QTYPE_BF16:
        return bf16_to_f32(((const uint16_t *)src)[i]);
    default: /* the host wrapper admits no other type */
        return 0.f;
    }
}

__global__ static void dequant_kernel(qtype type, const void *__restrict__ src, float *__restrict__ dst, uint64_t n)
{
    uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = dequant_value(type, src, i);
}

/* Elements per block of a type the kernel handles; 0 for any other. */
static uint32_t dequant_block_elems(qtype type)
{
    switch (type) {
    case QTYPE_Q4_K:
    case QTYPE_Q5_K:
    case QTYPE_Q6_K:
        return QK_K;
    case QTYPE_Q8_0:
        return QK8_0;
    case QTYPE_F16:
    case QTYPE_BF16:
        return 1;
    default:
        return 0;
    }
}

extern "C" int cuda_device_count(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* no device or no driver: leave no error behind */
        return 0;
    }
    return n;
}

extern "C" int cuda_dequant_rows(qtype type, const void *d_src, float *d_dst, uint64_t n_rows, uint64_t row_elems,
                                 void *stream, smq_err *err)
{
    uint32_t block_elems = dequant_block_elems(type);
    if (block_elems == 0)
        return smq_err_set(err, "cuda_dequant_rows: type %s: no GPU dequantizer for it", qtype_name(type));
    if (row_elems % block_elems != 0)
        return smq_err_set(err,
                           "cuda_dequant_rows: type %s: rows of %llu elements are not whole "
                           "%u-element blocks",
                           qtype_name(type), (unsigned long long)row_elems, block_elems);
    if (row_elems != 0 && n_rows > UINT64_MAX / sizeof(float) / row_elems)
        return smq_err_set(err, "cuda_dequant_rows: %llu rows of %llu elements overflow", (unsigned long long)n_rows,
                           (unsigned long long)row_elems);
    uint64_t n = n_rows * row_elems;
    if (n == 0)
        return 0;
    if (!d_src || !d_dst)
        return smq_err_set(err, "cuda_dequant_rows: NULL device pointer");

    uint64_t blocks = n / DEQUANT_THREADS + (n % DEQUANT_THREADS != 0);
    if (blocks > DEQUANT_MAX_BLOCKS)
        blocks = DEQUANT_MAX_BLOCKS;
    launch_plain(dequant_kernel, (unsigned)blocks, DEQUANT_THREADS, 0, (cudaStream_t)stream, type, d_src, d_dst, n);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return smq_err_set(err, "cuda_dequant_rows: type %s, %llu elements: launch: %s", qtype_name(type),
                           (unsigned long long)n, cudaGetErrorString(e));
    return 0;
}
