/* sample.cu - the sampling chain on the device: a block of 512 threads per
 * pick runs sample_chain.h's passes over its row of logits, the same
 * arithmetic as the host's sampler_choose, so that both choose the same token.
 *
 * A pass is a loop over the row in 16-byte loads (for_each_logit). Totals
 * are per-thread integer sums reduced through shuffles and one shared
 * atomic. A search's buckets are shared counters in 4 copies (a quarter of
 * the warps each, added up before the step), fed from 2 buckets each thread
 * sums in registers: the first digit (sign and exponent) puts most tokens in
 * a handful of buckets, and shared atomics on one address serialize.
 * Integer sums do not depend on their order, so the result is the host's.
 * Cost: about 2 + 3 x (1 + the search's digits) passes of n_vocab logits,
 * from L2; a weight's exp is taken once per total and kept in slots.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "fwd_kernels.h"
#include "launch.cuh"

#define SAMPLE_THREADS 512
#define SAMPLE_CACHE   2 /* buckets a thread sums in registers (more spill registers) */
#define SAMPLE_COPIES  4 /* copies of the shared buckets, a quarter of the warps each */

typedef unsigned long long ull;

/* Calls f(v, i) for each element i of the row l[0..n) this thread owns, in
 * increasing i: 4 consecutive ones per 16-byte load, two loads in flight,
 * then the tail. (A strided loop of single floats kept one 128-byte load in
 * flight per warp: some 15 GB/s from L2 for the block, 35 us a pass.) The
 * elements a thread owns depend only on n and its index, so a weight it
 * stores in a pass is its own to read in the next. */
template <typename F> __device__ __forceinline__ static void for_each_logit(const float *l, uint32_t n, F &&f)
{
    const float4 *l4 = (const float4 *)l;
    uint32_t n4 = (uintptr_t)l % 16 == 0 ? n / 4 : 0, step = blockDim.x, q = threadIdx.x;
    for (; q + step < n4; q += 2 * step) {
        float4 a = l4[q], b = l4[q + step];
        f(a.x, 4 * q), f(a.y, 4 * q + 1), f(a.z, 4 * q + 2), f(a.w, 4 * q + 3);
        uint32_t j = 4 * (q + step);
        f(b.x, j), f(b.y, j + 1), f(b.z, j + 2), f(b.w, j + 3);
    }
    if (q < n4) {
        float4 a = l4[q];
        f(a.x, 4 * q), f(a.y, 4 * q + 1), f(a.z, 4 * q + 2), f(a.w, 4 * q + 3);
    }
    for (uint32_t i = 4 * n4 + threadIdx.x; i < n; i += step)
        f(l[i], i);
}

/* The row's first largest logit, as the host's scan finds it: NaN never
 * wins, except that a NaN at index 0 stays (the scan starts there). */
__device__ static uint32_t block_best(const float *l, uint32_t n, float *s_v, uint32_t *s_i)
{
    float bv = -INFINITY;
    uint32_t bi = UINT32_MAX;
    for_each_logit(l, n, [&](float x, uint32_t i) {
        float v = isnan(x) ? -INFINITY : x;
        if (bi == UINT32_MAX || v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    });
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_down_sync(0xffffffffu, bv, o);
        uint32_t oi = __shfl_down_sync(0xffffffffu, bi, o);
        if (oi != UINT32_MAX && (bi == UINT32_MAX || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
        }
    }
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) {
        s_v[warp] = bv;
        s_i[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (unsigned w = 1; w < blockDim.x / 32; w++)
            if (s_i[w] != UINT32_MAX &&
                (s_i[0] == UINT32_MAX || s_v[w] > s_v[0] || (s_v[w] == s_v[0] && s_i[w] < s_i[0]))) {
                s_v[0] = s_v[w];
                s_i[0] = s_i[w];
            }
        if (isnan(l[0]))
            s_i[0] = 0;
    }
    __syncthreads();
    return s_i[0];
}

__device__ static void add_run(uint32_t *bn, ull *bw, ull *btop, int run, uint32_t n, uint64_t w, uint64_t top)
{
    if (run < 0 || !n)
        return;
    atomicAdd(&bn[run], n);
    atomicAdd(&bw[run], (ull)w);
    atomicMax(&btop[run], (ull)top);
}

__global__ static void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(float *logits, uint32_t n, const fwd_pick_row *picks, const uint32_t *pairs, uint64_t *slots,
                  int32_t *out)
{
    __shared__ sc_chain chain;
    __shared__ uint32_t bn[SAMPLE_COPIES][SC_BINS];
    __shared__ ull bw[SAMPLE_COPIES][SC_BINS], btop[SAMPLE_COPIES][SC_BINS], total;
    const uint32_t copy = threadIdx.x / 32 % SAMPLE_COPIES;
    __shared__ float s_v[SAMPLE_THREADS / 32];
    __shared__ uint32_t s_i[SAMPLE_THREADS / 32];
    const fwd_pick_row *pk = &picks[blockIdx.x];
    float *l = logits + (uint64_t)pk->row * n;
    uint64_t *slot = slots + (uint64_t)blockIdx.x * n;

    for (uint32_t i = threadIdx.x; i < pk->n_pen; i += blockDim.x) {
        uint32_t t = pairs[2 * (pk->pen + i)], count = pairs[2 * (pk->pen + i) + 1];
        if (t < n)
            l[t] = sc_penalize(&pk->p, l[t], count);
    }
    __syncthreads();
    uint32_t best = block_best(l, n, s_v, s_i);
    if (threadIdx.x == 0)
        sc_chain_init(&chain, &pk->p, pk->u, l[best], best);
    __syncthreads();
    while (chain.stage != SC_DONE) {
        for (uint32_t b = threadIdx.x; b < SAMPLE_COPIES * SC_BINS; b += blockDim.x) {
            bn[b / SC_BINS][b % SC_BINS] = 0;
            bw[b / SC_BINS][b % SC_BINS] = btop[b / SC_BINS][b % SC_BINS] = 0;
        }
        if (threadIdx.x == 0)
            total = 0;
        __syncthreads();
        /* buckets in registers first: a thread's tokens fall in a few
         * buckets (the first digit is the sign and exponent), and shared
         * atomics on one address serialize */
        uint64_t sum = 0, cw[SAMPLE_CACHE], ctop[SAMPLE_CACHE];
        uint32_t cn[SAMPLE_CACHE], victim = 0;
        int cb[SAMPLE_CACHE];
#pragma unroll
        for (int j = 0; j < SAMPLE_CACHE; j++) {
            cb[j] = -1;
            cn[j] = 0;
            cw[j] = ctop[j] = 0;
        }
        for_each_logit(l, n, [&](float x, uint32_t i) {
            uint64_t w, key;
            int b;
            if (!sc_pass_token(&chain, x, i, &slot[i], &w, &b, &key))
                return;
            sum += w;
            int hit = -1;
#pragma unroll
            for (int j = 0; j < SAMPLE_CACHE; j++)
                hit = cb[j] == b ? j : hit;
            if (hit < 0) {
#pragma unroll
                for (int j = 0; j < SAMPLE_CACHE; j++)
                    if ((uint32_t)j == victim) {
                        add_run(bn[copy], bw[copy], btop[copy], cb[j], cn[j], cw[j], ctop[j]);
                        cb[j] = b;
                        cn[j] = 0;
                        cw[j] = ctop[j] = 0;
                    }
                hit = (int)victim;
                victim = (victim + 1) % SAMPLE_CACHE;
            }
#pragma unroll
            for (int j = 0; j < SAMPLE_CACHE; j++)
                if (j == hit) {
                    cn[j]++;
                    cw[j] += w;
                    ctop[j] = key > ctop[j] ? key : ctop[j];
                }
        });
#pragma unroll
        for (int j = 0; j < SAMPLE_CACHE; j++)
            add_run(bn[copy], bw[copy], btop[copy], cb[j], cn[j], cw[j], ctop[j]);
        for (int o = 16; o > 0; o >>= 1)
            sum += __shfl_down_sync(0xffffffffu, sum, o);
        if (threadIdx.x % 32 == 0 && sum)
            atomicAdd(&total, (ull)sum);
        __syncthreads();
        for (uint32_t b = threadIdx.x; b < SC_BINS; b += blockDim.x)
            for (int c = 1; c < SAMPLE_COPIES; c++) {
                bn[0][b] += bn[c][b];
                bw[0][b] += bw[c][b];
                btop[0][b] = btop[c][b] > btop[0][b] ? btop[c][b] : btop[0][b];
            }
        __syncthreads();
        if (threadIdx.x == 0)
            sc_chain_step(&chain, total, bn[0], (const uint64_t *)bw[0], (const uint64_t *)btop[0]);
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = (uint32_t)chain.token < n ? chain.token : (int32_t)best;
}

int fwd_sample(float *logits, uint32_t n_vocab, const fwd_pick_row *picks, uint32_t n_picks, const uint32_t *pairs,
               uint64_t *slots, int32_t *out, void *stream, smq_err *err)
{
    if (n_picks == 0)
        return 0;
    if (n_vocab == 0 || n_vocab > SC_MAX_VOCAB)
        return smq_err_set(err, "cuda backend: sampling over %u tokens: 1 to %u", n_vocab, (unsigned)SC_MAX_VOCAB);
    launch_plain(sample_kernel, n_picks, SAMPLE_THREADS, 0, (cudaStream_t)stream, logits, n_vocab, picks, pairs, slots,
                 out);
    LAUNCH_CHECK("sample");
    return 0;
}
