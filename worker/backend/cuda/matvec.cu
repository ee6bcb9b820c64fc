/* matvec.cu - y = W x for quantized W (Q4_K, Q6_K) on the GPU: the decode
 * step's matrix-vector products, computed on the blocks directly.
 *
 * Short matrices: one thread block (8 warps) per weight row, warp w taking
 * the row's blocks w, w+8, ... (one warp per row left the GPU starved on
 * 512 and 2048 rows). The tall Q6_K head: a warp per 4 rows, each activation
 * read once for the four. In a 256-element block a lane takes 8 elements:
 *   Q4_K: 4 bytes of qs (coalesced: the warp reads the block's 128 bytes at
 *         once), i.e. 4 elements of sub-block 2c and 4 of 2c+1, c = lane / 8;
 *   Q6_K: byte `lane` of ql (two of them) and of qh in each half, i.e. the
 *         elements 128n + 32k + lane for n = 0,1 and k = 0..3.
 * Scales come from quant.h (q4k_scale_min, fp16_to_f32): the same code the
 * CPU runs. Products and sums are float32, activations float32; the warp's
 * partial sums meet by shuffles.
 *
 * First version, for correctness against the CPU and a first measurement of
 * the bandwidth it reaches; see docs/BENCHMARKS.md. The backend runs the
 * q16 products at the end of this file (qdot.cuh): integer dot products
 * (__dp4a) on 16-byte loads of the blocks, activations quantized once per
 * product.
 */
#include "launch.cuh"
#include "matvec.h"
#include "qdot.cuh"
#include "quant.h"

#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#define WARPS_PER_BLOCK 8

/* The thread block's partial sums into *out (added to it when acc). */
__device__ static void row_sum(float sum, float *out, int acc)
{
    __shared__ float part[WARPS_PER_BLOCK];
    unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    sum = warp_sum(sum);
    if (lane == 0)
        part[warp] = sum;
    __syncthreads();
    if (warp == 0) {
        sum = lane < WARPS_PER_BLOCK ? part[lane] : 0.0f;
        sum = warp_sum(sum);
        if (lane == 0)
            *out = acc ? *out + sum : sum;
    }
}

/* One lane's part of one Q4_K block: its 8 elements (4 of sub-block 2c, 4
 * of 2c+1; c = lane / 8) against their activations xl, xh. */
__device__ static float q4k_lane_dot(const block_q4_K *b, float4 xl, float4 xh, unsigned lane)
{
    unsigned c = lane / 8, e = 4 * (lane % 8);
    uint32_t q;
    memcpy(&q, b->qs + 32 * c + e, 4);
    uint8_t sc0, m0, sc1, m1;
    q4k_scale_min(2 * c, b->scales, &sc0, &m0);
    q4k_scale_min(2 * c + 1, b->scales, &sc1, &m1);
    float d = fp16_to_f32(b->d), dmin = fp16_to_f32(b->dmin);
    float lo = (float)(q & 0xF) * xl.x + (float)((q >> 8) & 0xF) * xl.y + (float)((q >> 16) & 0xF) * xl.z +
               (float)((q >> 24) & 0xF) * xl.w;
    float hi = (float)((q >> 4) & 0xF) * xh.x + (float)((q >> 12) & 0xF) * xh.y + (float)((q >> 20) & 0xF) * xh.z +
               (float)((q >> 28) & 0xF) * xh.w;
    float sl = xl.x + xl.y + xl.z + xl.w, sh = xh.x + xh.y + xh.z + xh.w;
    return d * (sc0 * lo + sc1 * hi) - dmin * (m0 * sl + m1 * sh);
}

/* A lane's activations for a Q4_K block: elements 64c+e .. +3 and 64c+32+e .. +3. */
__device__ static void q4k_lane_x(const float *x, unsigned i, unsigned lane, float4 *xl, float4 *xh)
{
    const float *xb = x + (size_t)i * QK_K + 64 * (lane / 8) + 4 * (lane % 8);
    *xl = *(const float4 *)xb;
    *xh = *(const float4 *)(xb + 32);
}

/* One lane's part of one Q6_K block: elements 128n + 32k + lane (n = 0,1;
 * k = 0..3) against xv[4n + k]. */
__device__ static float q6k_lane_dot(const block_q6_K *b, const float *xv, unsigned lane)
{
    float part = 0;
    for (unsigned n = 0; n < 2; n++) {
        uint8_t l0 = b->ql[64 * n + lane], l1 = b->ql[64 * n + 32 + lane], h = b->qh[32 * n + lane];
        int q[4] = { (l0 & 0xF) | ((h & 3) << 4), (l1 & 0xF) | (((h >> 2) & 3) << 4), (l0 >> 4) | (((h >> 4) & 3) << 4),
                     (l1 >> 4) | (((h >> 6) & 3) << 4) };
        for (unsigned k = 0; k < 4; k++)
            part +=
                (float)b->scales[q6k_scale_index((int)(128 * n + 32 * k + lane))] * (float)(q[k] - 32) * xv[4 * n + k];
    }
    return fp16_to_f32(b->d) * part;
}

__device__ static void q6k_lane_x(const float *x, unsigned i, unsigned lane, float *xv)
{
    const float *xb = x + (size_t)i * QK_K;
    for (unsigned n = 0; n < 2; n++)
        for (unsigned k = 0; k < 4; k++)
            xv[4 * n + k] = xb[128 * n + 32 * k + lane];
}

/* Short matrices: one thread block per row, its warps splitting the row's
 * blocks (enough warps to keep the GPU busy on 512 rows). blockIdx.y picks
 * the activation row (x + y*xs, y + y*ys): every activation row runs the very
 * same code, so a row's result does not depend on the others. */
__global__ static void q4k_matvec(const block_q4_K *__restrict__ w, const float *__restrict__ x, float *__restrict__ y,
                                  unsigned nb, size_t xs, size_t ys, int acc)
{
    unsigned row = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    x += blockIdx.y * xs;
    y += blockIdx.y * ys;
    float sum = 0;
    for (unsigned i = warp; i < nb; i += WARPS_PER_BLOCK) {
        float4 xl, xh;
        q4k_lane_x(x, i, lane, &xl, &xh);
        sum += q4k_lane_dot(w + (size_t)row * nb + i, xl, xh, lane);
    }
    row_sum(sum, y + row, acc);
}

__global__ static void q6k_matvec(const block_q6_K *__restrict__ w, const float *__restrict__ x, float *__restrict__ y,
                                  unsigned nb, size_t xs, size_t ys, int acc)
{
    unsigned row = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    x += blockIdx.y * xs;
    y += blockIdx.y * ys;
    float sum = 0;
    for (unsigned i = warp; i < nb; i += WARPS_PER_BLOCK) {
        float xv[8];
        q6k_lane_x(x, i, lane, xv);
        sum += q6k_lane_dot(w + (size_t)row * nb + i, xv, lane);
    }
    row_sum(sum, y + row, acc);
}

/* Tall Q6_K matrices (the output head): a warp takes TALL_ROWS rows and reads
 * each activation once for all of them. The same for Q4_K measured slower
 * (432 vs 512 GB/s on 11008 x 2048): these kernels are bound by their
 * instruction count, not by the activations' reads; see docs/BENCHMARKS.md. */
#define TALL_ROWS 4

__global__ static void q6k_matvec_tall(const block_q6_K *__restrict__ w, const float *__restrict__ x,
                                       float *__restrict__ y, unsigned rows, unsigned nb, size_t xs, size_t ys, int acc)
{
    unsigned row0 = (blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32) * TALL_ROWS, lane = threadIdx.x % 32;
    x += blockIdx.y * xs;
    y += blockIdx.y * ys;
    float sum[TALL_ROWS] = { 0 };
    for (unsigned i = 0; i < nb; i++) {
        float xv[8];
        q6k_lane_x(x, i, lane, xv);
#pragma unroll
        for (unsigned r = 0; r < TALL_ROWS; r++)
            if (row0 + r < rows)
                sum[r] += q6k_lane_dot(w + (size_t)(row0 + r) * nb + i, xv, lane);
    }
#pragma unroll
    for (unsigned r = 0; r < TALL_ROWS; r++) {
        float v = warp_sum(sum[r]);
        if (lane == 0 && row0 + r < rows)
            y[row0 + r] = acc ? y[row0 + r] + v : v;
    }
}

/* Rows from which the tall Q6_K kernel wins (H100: 906 -> 1069 GB/s on the
 * 128256-row head). */
#define TALL_FROM 4096

/* The grid's y dimension holds at most 65535 activation rows: larger
 * batches go in several launches. */
#define MAX_GRID_Y 65535u

extern "C" int cuda_matmul(qtype type, const void *d_w, uint64_t rows, uint64_t k, const float *d_x, uint64_t x_stride,
                           float *d_y, uint64_t y_stride, uint64_t n_x, int accumulate, void *stream, smq_err *err)
{
    if (k % QK_K || k == 0 || rows == 0 || rows > (1u << 30) || k > (1u << 24))
        return smq_err_set(err, "cuda_matvec: %llu rows of %llu elements: rows must be 256-element blocks",
                           (unsigned long long)rows, (unsigned long long)k);
    if (n_x > 1 && (x_stride < k || x_stride % 4 || y_stride < rows))
        return smq_err_set(err, "cuda_matmul: strides %llu (x) and %llu (y) for %llu x %llu",
                           (unsigned long long)x_stride, (unsigned long long)y_stride, (unsigned long long)rows,
                           (unsigned long long)k);
    if (type != QTYPE_Q4_K && type != QTYPE_Q6_K)
        return smq_err_set(err, "cuda_matvec: type %s has no GPU matrix-vector kernel", qtype_name(type));
    unsigned nb = (unsigned)(k / QK_K);
    cudaStream_t s = (cudaStream_t)stream;
    unsigned per_cta = WARPS_PER_BLOCK * TALL_ROWS, tall = (unsigned)((rows + per_cta - 1) / per_cta);
    for (uint64_t t = 0; t < n_x; t += MAX_GRID_Y) {
        unsigned n = (unsigned)(n_x - t < MAX_GRID_Y ? n_x - t : MAX_GRID_Y);
        const float *x = d_x + t * x_stride;
        float *y = d_y + t * y_stride;
        if (type == QTYPE_Q4_K)
            launch_plain(q4k_matvec, dim3((unsigned)rows, n), 32 * WARPS_PER_BLOCK, 0, s, (const block_q4_K *)d_w, x, y,
                         nb, x_stride, y_stride, accumulate);
        else if (rows >= TALL_FROM)
            launch_plain(q6k_matvec_tall, dim3(tall, n), 32 * WARPS_PER_BLOCK, 0, s, (const block_q6_K *)d_w, x, y,
                         (unsigned)rows, nb, x_stride, y_stride, accumulate);
        else
            launch_plain(q6k_matvec, dim3((unsigned)rows, n), 32 * WARPS_PER_BLOCK, 0, s, (const block_q6_K *)d_w, x, y,
                         nb, x_stride, y_stride, accumulate);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            return smq_err_set(err, "cuda_matvec: launch: %s", cudaGetErrorString(e));
    }
    return 0;
}

extern "C" int cuda_matvec(qtype type, const void *d_w, uint64_t rows, uint64_t k, const float *d_x, float *d_y,
                           void *stream, smq_err *err)
{
    return cuda_matmul(type, d_w, rows, k, d_x, k, d_y, rows, 1, 0, stream, err);
}

/* ---- products on q16 activations (qdot.cuh) ---- */

#define Q16_NORM_THREADS 256
#define MV_WARPS         8 /* warps of a product's thread block */
static_assert(32 * MV_WARPS == Q16_NORM_THREADS,
              "a fused norm (q16_matmul_kernel<.., true>) sums as q16_quantize_kernel");
#define MV_ROWS 2 /* weight rows per warp, sharing the activation loads */

/* The scale of a row's RMS norm: its sum of squares in double, each of the
 * block's Q16_NORM_THREADS threads summing the elements tid, tid + 256, ...
 * in order, then a fixed tree (as the CPU: the same bits wherever a row is
 * normed). Every thread gets it. */
__device__ static float q16_norm_scale(const float *src, bool coherent, float eps, uint32_t n, double *part)
{
    double ss = 0;
#pragma unroll 8
    for (uint32_t i = threadIdx.x; i < n; i += Q16_NORM_THREADS) {
        float v = coherent ? __ldcg(src + i) : src[i];
        ss += (double)v * v;
    }
    part[threadIdx.x] = ss;
    __syncthreads();
    for (unsigned s = Q16_NORM_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    return 1.0f / sqrtf((float)(part[0] / n) + eps);
}

/* Group g (32 elements, a warp) of a row: normed and scaled by norm_w when
 * given, quantized. */
__device__ static void q16_norm_store(q16_view a, uint32_t g, const float *src, bool coherent, const float *norm_w,
                                      float scale)
{
    unsigned lane = threadIdx.x % 32;
    uint32_t i = 32 * g + lane;
    float x = coherent ? __ldcg(src + i) : src[i];
    float v = norm_w ? __fmul_rn(__fmul_rn(x, scale), norm_w[i]) : x;
    q16_store_group(a, g, v, lane);
}

/* Groups 8 blockIdx.y, 8 (blockIdx.y + gridDim.y), ... (a warp each) of
 * output row blockIdx.x: x[map ? map[r] : r], RMS-normed and scaled by
 * norm_w when given, quantized to q16. Every block of a row computes the
 * row's sum of squares itself (q16_norm_scale), so that a row's groups need
 * no second launch and run in parallel: a few rows (decode) spread their
 * groups over blocks, many rows (prompts) take a block each, which would
 * otherwise sum each row 8 times (2048-wide rows: 4096 of them took
 * 142 us so on an H100). */
__global__ static void __launch_bounds__(Q16_NORM_THREADS)
    q16_quantize_kernel(const float *__restrict__ x, const uint32_t *__restrict__ map, const float *__restrict__ norm_w,
                        float eps, uint32_t n, uint8_t *__restrict__ out)
{
    __shared__ double part[Q16_NORM_THREADS];
    grid_wait(); /* launch.cuh */
    grid_release();
    const float *src = x + (uint64_t)(map ? map[blockIdx.x] : blockIdx.x) * n;
    q16_view a = q16_at(out + (uint64_t)blockIdx.x * q16_row_bytes(n), n);
    float scale = norm_w ? q16_norm_scale(src, false, eps, n, part) : 1.f;
    for (uint32_t g = blockIdx.y * (Q16_NORM_THREADS / 32) + threadIdx.x / 32; g < n / 32;
         g += gridDim.y * (Q16_NORM_THREADS / 32))
        q16_norm_store(a, g, src, false, norm_w, scale);
}

/* Rows from which q16_quantize_kernel takes a block a row (more blocks than
 * an H100's 132 multiprocessors hold at once). */
#define Q16_ROW_BLOCKS 1024

extern "C" int cuda_q16_quantize(const float *d_x, const uint32_t *d_map, const float *d_norm, float eps, uint64_t n,
                                 uint64_t n_rows, uint8_t *d_out, void *stream, smq_err *err)
{
    if (n == 0 || n % QK_K || n >= (1u << 24) || n_rows > 0x7FFFFFFFu)
        return smq_err_set(err, "cuda_q16_quantize: %llu rows of %llu elements: rows must be 256-element blocks",
                           (unsigned long long)n_rows, (unsigned long long)n);
    if (n_rows == 0)
        return 0;
    dim3 grid((unsigned)n_rows, n_rows >= Q16_ROW_BLOCKS ? 1u : (unsigned)(n / 32 / (Q16_NORM_THREADS / 32)));
    cudaError_t e = pdl_launch(q16_quantize_kernel, grid, dim3(Q16_NORM_THREADS), 0, (cudaStream_t)stream, d_x, d_map,
                               d_norm, eps, (uint32_t)n, d_out);
    if (e != cudaSuccess)
        return smq_err_set(err, "cuda_q16_quantize: launch: %s", cudaGetErrorString(e));
    return 0;
}

/* y[t][r] (+)= W[r] . a[t]: blockIdx.y is the activation row t; n_ks warps
 * share MV_ROWS consecutive rows, each a share of their blocks
 * (warp_dots), added in warp order: long rows (ffn_down's 43 blocks) put
 * 4x the warps to work on a row, where a warp per row pair left an SM with
 * 8 warps and its loads waiting. NORM: then the last block to finish row t
 * (counted in count[blockIdx.y], which it leaves at 0) norms and quantizes
 * y[t] into q_out, as q16_quantize_kernel does, saving its launch. q_out
 * may be act itself (attn_output's rows, as long as one's norm): a row's
 * output is written once every block of that row has read its input.
 * pf: the block's rows prefetched into L2 before it waits (launch.cuh). */
template <qtype T, bool NORM>
__global__ static void __launch_bounds__(32 * MV_WARPS)
    q16_matmul_kernel(const uint8_t *__restrict__ w, uint64_t row_bytes, uint32_t rows, uint32_t k, uint32_t n_ks,
                      const uint8_t *act, uint64_t act_stride, float *y, uint64_t y_stride, int acc,
                      const float *__restrict__ norm_w, float eps, uint8_t *q_out, uint32_t *count, int pf)
{
    __shared__ float shares[MV_WARPS][MV_ROWS];
    uint32_t warp = threadIdx.x / 32, ks = warp % n_ks, lane = threadIdx.x % 32;
    uint32_t row0 = (blockIdx.x * (MV_WARPS / n_ks) + warp / n_ks) * MV_ROWS;
    uint32_t first = blockIdx.x * (MV_WARPS / n_ks) * MV_ROWS, n_rows = (MV_WARPS / n_ks) * MV_ROWS;
    if (pf && blockIdx.y == 0 && warp == 0 && first < rows)
        prefetch_l2(w + (uint64_t)first * row_bytes, (uint64_t)min(n_rows, rows - first) * row_bytes, lane);
    grid_wait();
    grid_release();
    y += blockIdx.y * y_stride;
    float out[MV_ROWS] = { 0.f };
    if (row0 < rows) {
        q16_view a = q16_at(act + blockIdx.y * act_stride, k);
        const uint8_t *wr[MV_ROWS];
#pragma unroll
        for (int r = 0; r < MV_ROWS; r++)
            wr[r] = w + (uint64_t)min(row0 + r, rows - 1) * row_bytes;
        warp_dots<T, MV_ROWS>(wr, k / QK_K, a, out, ks, n_ks);
    }
    if (n_ks > 1) {
        if (lane == 0)
#pragma unroll
            for (int r = 0; r < MV_ROWS; r++)
                shares[warp][r] = out[r];
        __syncthreads();
        if (ks == 0)
#pragma unroll
            for (int r = 0; r < MV_ROWS; r++)
                for (uint32_t j = 1; j < n_ks; j++)
                    out[r] += shares[warp + j][r];
    }
    if (row0 < rows && ks == 0)
#pragma unroll
        for (int r = 0; r < MV_ROWS; r++)
            if (lane == r && row0 + r < rows)
                y[row0 + r] = acc ? y[row0 + r] + out[r] : out[r];
    if constexpr (NORM) {
        __shared__ double part[32 * MV_WARPS];
        __shared__ bool last;
        __threadfence(); /* this block's outputs, visible before it is counted */
        __syncthreads();
        if (threadIdx.x == 0)
            last = atomicAdd(&count[blockIdx.y], 1u) == gridDim.x - 1;
        __syncthreads();
        if (!last)
            return;
        __threadfence();
        if (threadIdx.x == 0)
            count[blockIdx.y] = 0;
        /* the others' outputs are in L2, not in this SM's L1: coherent loads */
        float scale = q16_norm_scale(y, true, eps, rows, part);
        q16_view qa = q16_at(q_out + blockIdx.y * q16_row_bytes(rows), rows);
        for (uint32_t g = threadIdx.x / 32; g < rows / 32; g += MV_WARPS)
            q16_norm_store(qa, g, y, true, norm_w, scale);
    }
}

extern "C" uint64_t cuda_q16_row_bytes(uint64_t n)
{
    return q16_row_bytes(n);
}

extern "C" uint64_t cuda_weight_bytes(qtype type, uint64_t rows, uint64_t k)
{
    return rows * (k / QK_K) * dev_block_bytes(type);
}

extern "C" int cuda_weight_upload(qtype type, const void *src, uint64_t rows, uint64_t k, void *d_dst, smq_err *err)
{
    if ((type != QTYPE_Q4_K && type != QTYPE_Q6_K) || k % QK_K)
        return smq_err_set(err, "cuda_weight_upload: type %s, rows of %llu: Q4_K or Q6_K rows of 256-element blocks",
                           qtype_name(type), (unsigned long long)k);
    uint64_t n_blocks = rows * (k / QK_K);
    cudaError_t e = cudaSuccess;
    if (type == QTYPE_Q4_K) {
        e = cudaMemcpy(d_dst, src, n_blocks * sizeof(block_q4_K), cudaMemcpyHostToDevice);
    } else {
        /* Q6_K: each 210-byte block into a 224-byte slot, through a bounce
         * buffer of CHUNK blocks. */
        const uint64_t CHUNK = 1 << 16;
        uint8_t *buf = (uint8_t *)calloc(CHUNK, Q6K_STRIDE);
        if (!buf)
            return smq_err_set(err, "cuda_weight_upload: out of host memory");
        for (uint64_t b0 = 0; b0 < n_blocks && e == cudaSuccess; b0 += CHUNK) {
            uint64_t n = n_blocks - b0 < CHUNK ? n_blocks - b0 : CHUNK;
            for (uint64_t i = 0; i < n; i++)
                memcpy(buf + i * Q6K_STRIDE, (const uint8_t *)src + (b0 + i) * sizeof(block_q6_K), sizeof(block_q6_K));
            e = cudaMemcpy((uint8_t *)d_dst + b0 * Q6K_STRIDE, buf, n * Q6K_STRIDE, cudaMemcpyHostToDevice);
        }
        free(buf);
    }
    if (e != cudaSuccess)
        return smq_err_set(err, "cuda_weight_upload: %s", cudaGetErrorString(e));
    return 0;
}

/* Warps sharing a row of nb blocks: a warp takes 8 blocks a round, so rows
 * of 32 and more get 4 (ffn_down), of 16 and more 2, shorter ones 1 (the
 * sum's order, fixed by nb alone). SMQ_CUDA_KSPLIT=0: always 1, to compare
 * (read once, at the first product of the process). */
static uint32_t k_shares(uint32_t nb)
{
    static int off = -1;
    if (off < 0) {
        const char *e = getenv("SMQ_CUDA_KSPLIT");
        off = e && !strcmp(e, "0");
    }
    return off ? 1 : nb >= 32 ? 4 : nb >= 16 ? 2 : 1;
}

/* cuda_q16_matmul and cuda_q16_matmul_norm: norm_w NULL for the plain product. */
static int q16_matmul(qtype type, const void *d_w, uint64_t rows, uint64_t k, const uint8_t *d_act, uint64_t n_x,
                      float *d_y, uint64_t y_stride, int accumulate, const float *d_norm, float eps, uint8_t *d_q_out,
                      uint32_t *d_count, void *stream, smq_err *err)
{
    if (k % QK_K || k == 0 || rows == 0 || rows > (1u << 30) || k > (1u << 24))
        return smq_err_set(err, "cuda_q16_matmul: %llu rows of %llu elements: rows must be 256-element blocks",
                           (unsigned long long)rows, (unsigned long long)k);
    if (n_x > 1 && y_stride < rows)
        return smq_err_set(err, "cuda_q16_matmul: y stride %llu for %llu rows", (unsigned long long)y_stride,
                           (unsigned long long)rows);
    if (type != QTYPE_Q4_K && type != QTYPE_Q6_K)
        return smq_err_set(err, "cuda_q16_matmul: type %s has no GPU kernel", qtype_name(type));
    uint64_t row_bytes = (k / QK_K) * dev_block_bytes(type), act_stride = q16_row_bytes(k);
    uint32_t n_ks = k_shares(k / QK_K);
    unsigned per_cta = MV_WARPS / n_ks * MV_ROWS, ctas = (unsigned)((rows + per_cta - 1) / per_cta);
    cudaStream_t s = (cudaStream_t)stream;
    for (uint64_t t = 0; t < n_x; t += MAX_GRID_Y) {
        unsigned n = (unsigned)(n_x - t < MAX_GRID_Y ? n_x - t : MAX_GRID_Y);
        dim3 grid(ctas, n);
        const uint8_t *act = d_act + t * act_stride;
        float *y = d_y + t * y_stride;
        uint8_t *q_out = d_norm ? d_q_out + t * q16_row_bytes(rows) : NULL;
        uint32_t *count = d_norm ? d_count + t : NULL;
        void (*kernel)(const uint8_t *, uint64_t, uint32_t, uint32_t, uint32_t, const uint8_t *, uint64_t, float *,
                       uint64_t, int, const float *, float, uint8_t *, uint32_t *, int) =
            type == QTYPE_Q4_K ? (d_norm ? q16_matmul_kernel<QTYPE_Q4_K, true> : q16_matmul_kernel<QTYPE_Q4_K, false>)
                               : (d_norm ? q16_matmul_kernel<QTYPE_Q6_K, true> : q16_matmul_kernel<QTYPE_Q6_K, false>);
        cudaError_t e = pdl_launch(kernel, grid, dim3(32 * MV_WARPS), 0, s, (const uint8_t *)d_w, row_bytes,
                                   (uint32_t)rows, (uint32_t)k, n_ks, act, act_stride, y, y_stride, accumulate, d_norm,
                                   eps, q_out, count, (int)prefetch_on());
        if (e != cudaSuccess)
            return smq_err_set(err, "cuda_q16_matmul: launch: %s", cudaGetErrorString(e));
    }
    return 0;
}

extern "C" int cuda_q16_matmul(qtype type, const void *d_w, uint64_t rows, uint64_t k, const uint8_t *d_act,
                               uint64_t n_x, float *d_y, uint64_t y_stride, int accumulate, void *stream, smq_err *err)
{
    return q16_matmul(type, d_w, rows, k, d_act, n_x, d_y, y_stride, accumulate, NULL, 0, NULL, NULL, stream, err);
}

extern "C" int cuda_q16_matmul_norm(qtype type, const void *d_w, uint64_t rows, uint64_t k, const uint8_t *d_act,
                                    uint64_t n_x, float *d_y, int accumulate, const float *d_norm, float eps,
                                    uint8_t *d_q_out, uint32_t *d_count, void *stream, smq_err *err)
{
    if (!d_norm || !d_q_out || !d_count || rows % QK_K || rows >= (1u << 24))
        return smq_err_set(err,
                           "cuda_q16_matmul_norm: %llu rows: needs norm weights, an output, counters and "
                           "outputs of 256-element blocks",
                           (unsigned long long)rows);
    return q16_matmul(type, d_w, rows, k, d_act, n_x, d_y, rows, accumulate, d_norm, eps, d_q_out, d_count, stream,
                      err);
}
