/* prompt_attention.cu - the prompt rows' causal attention on the tensor
 * cores (fwd_prompt_attention, fwd_kernels.h), apart from the other forward
 * kernels: it alone needs WMMA (mma.h; the host emulation of the device
 * has its own, tests/emu/mma.h).
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <mma.h>
#include <stdlib.h>
#include <string.h>

#include "fwd_kernels.h"
#include "launch.cuh"
#include "mma16816.cuh"
#include "qdot.cuh"
#include "quant.h"

/* A thread block takes a tile of PA_M query heads (the G heads of KV group
 * blockIdx.y for PA_M / G consecutive rows of one sequence, tile blockIdx.x
 * of the tile list) against blocks of PA_N keys at absolute positions
 * 0, PA_N, 2 PA_N, ..., in two passes: the first finds each head's max
 * score m and sum l = sum exp(s - m) (online), the second accumulates
 * exp(s - m) (fp16) times V in fp32 fragments, divided by l at the end.
 * Two passes compute Q K^T twice (1.5x the FLOPs of one) but need no
 * rescaling of the accumulators, whose layout WMMA keeps opaque.
 *
 * Everything a head's output depends on is its own: its query, the keys
 * and values up to its position (later ones weigh exactly 0, and values
 * past the tile's last position load as zeros, so that unwritten slots
 * cannot bring a NaN), and the key blocks, fixed by absolute position. So
 * a row's numbers do not depend on the rows around it in the tile: chunks
 * and batches give each prompt row its numbers alone. Smem (D = 128):
 * Q, K, V 17 KB each in fp16, S 17 KB in fp32, P 9 KB in fp16. */
#define PA_M     64 /* query heads (rows x group heads) a block */
#define PA_N     64 /* keys a block */
#define PA_WARPS 4  /* each takes 16 of the PA_M query heads */

template <int D> struct pa_layout {
    enum { LDH = D + 8, LDS = PA_N + 4, LDP = PA_N + 8, LDO = D + 4 }; /* padded row strides */
    static constexpr size_t q = 0, k = q + PA_M * LDH * 2, v = k + PA_N * LDH * 2, s = v + PA_N * LDH * 2,
                            p = s + PA_M * LDS * 4, stats = p + PA_M * LDP * 2, bytes = stats + 3 * PA_M * 4;
    static_assert(PA_M * LDO * 4 <= s - k, "the output's staging fits where K and V were");
};

typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc_frag;

/* acc[n] += A B_n for a warp: A 16 x K (fp16, row-major at a, lda), B_n the
 * K x 16 column tile n of B, stored row-major (element (k, j) at b[k ldb +
 * j]) or column-major (at b[j ldb + k], i.e. B^T row-major: keys). */
template <class BLayout, int K, int NT>
__device__ static inline void tile_mma(acc_frag *acc, const __half *a, unsigned lda, const __half *b, unsigned ldb)
{
    using namespace nvcuda;
    constexpr bool col = std::is_same<BLayout, wmma::col_major>::value;
#pragma unroll
    for (int kk = 0; kk < K; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
        wmma::load_matrix_sync(fa, a + kk, lda);
#pragma unroll
        for (int n = 0; n < NT; n++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, BLayout> fb;
            wmma::load_matrix_sync(fb, col ? b + 16 * n * ldb + kk : b + kk * ldb + 16 * n, ldb);
            wmma::mma_sync(acc[n], fa, fb, acc[n]);
        }
    }
}

template <int D>
__global__ static void __launch_bounds__(32 * PA_WARPS)
    prompt_attention_kernel(const float *__restrict__ q, const __half *__restrict__ kv_layer, fwd_dims d, fwd_meta m,
                            const uint32_t *__restrict__ tiles, float scale, uint8_t *__restrict__ out)
{
    using namespace nvcuda;
    typedef pa_layout<D> L;
    SMQ_DYNAMIC_SMEM(smem);
    __half *Qs = (__half *)(smem + L::q), *Ks = (__half *)(smem + L::k), *Vs = (__half *)(smem + L::v);
    float *S = (float *)(smem + L::s), *row_m = (float *)(smem + L::stats), *row_l = row_m + PA_M;
    __half *Ps = (__half *)(smem + L::p);
    int *row_lim = (int *)(row_l + PA_M);
    const uint32_t G = d.n_head / d.n_head_kv, g = blockIdx.y, kv_dim = d.n_head_kv * D;
    const uint32_t row0 = tiles[2 * blockIdx.x], nrows = tiles[2 * blockIdx.x + 1];
    const uint32_t n_ctx = m.row_pos[row0 + nrows - 1] + 1, n_blocks = (n_ctx + PA_N - 1) / PA_N;
    const uint32_t *table = m.pages + m.row_table[row0];
    const unsigned tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

    /* query head i: row i / G of the tile, head g G + i % G; past the tile's
     * rows zeros, attending key 0 alone (their output is not stored) */
    for (uint32_t i = tid; i < PA_M * D; i += blockDim.x) {
        uint32_t mi = i / D, c = i % D, rr = mi / G;
        float v = rr < nrows ? q[((uint64_t)(row0 + rr) * d.n_head + g * G + mi % G) * D + c] : 0.f;
        Qs[mi * L::LDH + c] = __float2half_rn(v);
    }
    if (tid < PA_M) {
        uint32_t rr = tid / G;
        row_lim[tid] = rr < nrows ? (int)m.row_pos[row0 + rr] + 1 : 1;
        row_m[tid] = -INFINITY;
        row_l[tid] = 0.f;
    }
    acc_frag o[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; n++)
        wmma::fill_fragment(o[n], 0.f);
    const unsigned mi = 16 * warp + lane / 2, half = lane % 2; /* the S row (query head) and half this lane scans */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t kb = 0; kb < n_blocks; kb++) {
            __syncthreads(); /* the previous block's K, V and P are done with */
            for (uint32_t i = tid; i < PA_N * (D / 8); i += blockDim.x) {
                uint32_t key = i / (D / 8), c8 = i % (D / 8), t = kb * PA_N + key;
                uint4 kval = make_uint4(0, 0, 0, 0), vval = kval;
                if (t < n_ctx) {
                    const __half *slot =
                        kv_layer + ((uint64_t)table[t / d.page_size] * d.page_size + t % d.page_size) * 2 * kv_dim;
                    kval = __ldg((const uint4 *)(slot + g * D) + c8);
                    if (pass)
                        vval = __ldg((const uint4 *)(slot + kv_dim + g * D) + c8);
                }
                *((uint4 *)(Ks + key * L::LDH) + c8) = kval;
                if (pass)
                    *((uint4 *)(Vs + key * L::LDH) + c8) = vval;
            }
            __syncthreads();
            /* S = Q K^T for the warp's 16 query heads */
            acc_frag sc[PA_N / 16];
#pragma unroll
            for (int n = 0; n < PA_N / 16; n++)
                wmma::fill_fragment(sc[n], 0.f);
            tile_mma<nvcuda::wmma::col_major, D, PA_N / 16>(sc, Qs + 16 * warp * L::LDH, L::LDH, Ks, L::LDH);
#pragma unroll
            for (int n = 0; n < PA_N / 16; n++)
                wmma::store_matrix_sync(S + 16 * warp * L::LDS + 16 * n, sc[n], L::LDS, wmma::mem_row_major);
            __syncwarp();
            /* two lanes a query head, 32 keys each */
            const float *srow = S + mi * L::LDS + 32 * half;
            const int lim = row_lim[mi], key0 = (int)(kb * PA_N + 32 * half);
            if (pass == 0) {
                float bm = -INFINITY;
                for (int c = 0; c < 32; c++)
                    bm = key0 + c < lim ? fmaxf(bm, srow[c] * scale) : bm;
                bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, 1));
                float mo = row_m[mi], mn = fmaxf(mo, bm), sum = 0.f; /* mn finite: key 0 is in every head's block 0 */
                for (int c = 0; c < 32; c++)
                    sum += key0 + c < lim ? expf(srow[c] * scale - mn) : 0.f;
                sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                float l = row_l[mi] * expf(mo - mn) + sum;
                __syncwarp();
                if (half == 0) {
                    row_m[mi] = mn;
                    row_l[mi] = l;
                }
            } else {
                float mf = row_m[mi];
                __half *prow = Ps + mi * L::LDP + 32 * half;
                for (int c = 0; c < 32; c++)
                    prow[c] = __float2half_rn(key0 + c < lim ? expf(srow[c] * scale - mf) : 0.f);
                __syncwarp();
                /* O += P V for the warp's 16 query heads */
                tile_mma<nvcuda::wmma::row_major, PA_N, D / 16>(o, Ps + 16 * warp * L::LDP, L::LDP, Vs, L::LDH);
            }
        }
    }
    /* O / l, quantized: staged in fp32 where K and V were */
    __syncthreads();
    float *Os = (float *)(smem + L::k);
#pragma unroll
    for (int n = 0; n < D / 16; n++)
        wmma::store_matrix_sync(Os + 16 * warp * L::LDO + 16 * n, o[n], L::LDO, wmma::mem_row_major);
    __syncthreads();
    const uint64_t out_n = (uint64_t)d.n_head * D;
    for (uint32_t gi = warp; gi < PA_M * (D / 32); gi += PA_WARPS) {
        uint32_t h = gi / (D / 32), grp = gi % (D / 32), rr = h / G;
        if (rr >= nrows)
            continue;
        float v = Os[h * L::LDO + 32 * grp + lane] / row_l[h];
        q16_store_group(q16_at(out + (uint64_t)(row0 + rr) * q16_row_bytes(out_n), (uint32_t)out_n),
                        ((g * G + h % G) * D) / 32 + grp, v, lane);
    }
}

/* ---- one pass, the softmax in registers (flash-attention 2) ----
 *
 * The same tiles and key blocks as prompt_attention_kernel, in one pass:
 * each warp holds its 16 query heads' scores S = Q K^T (mma16816.cuh:
 * 8 keys x 4 floats a lane) and output O = P V in registers, keeps a running
 * max m and sum l per head, and rescales O and l by exp(m_old - m_new) when
 * a key block raises the max. P goes from the score accumulators straight to
 * the PV product's a operands (a 16 x 16 a-tile is two 16 x 8 c-tiles side
 * by side). Q stays in registers for the whole pass; K is staged in smem
 * row-major (a key's dims contiguous: QK's b operand), V transposed (a
 * dim's keys contiguous: PV's b operand), both in padded rows that the
 * lanes' 32-bit loads read without bank conflicts.
 *
 * What a head's output depends on is its own, as before: keys past its
 * position weigh 0 (a key block wholly past it leaves m, l and O as they
 * were, bit for bit: its rescale is exp2(0) = 1, and 0 x a written, finite
 * value adds 0), values past the tile's context load as zeros, and the key
 * blocks are fixed by absolute position. So chunks and batches give each row
 * its numbers alone. Exponents are exp2 of scores scaled by log2(e) / sqrt(D)
 * once. Smem (D = 128): K 17 KB, V^T 18 KB, reused to stage the output. */
#define FA_N 64 /* keys a block */

template <int D> struct fa_layout {
    enum { LDK = D + 8, LDV = FA_N + 8, LDO = D + 4 }; /* padded row strides, in elements */
    static constexpr size_t k = 0, v = k + FA_N * LDK * 2, bytes = v + D * LDV * 2;
    static_assert(PA_M * LDO * 4 <= bytes, "the output's staging fits where K and V were");
};

template <int D>
__global__ static void __launch_bounds__(32 * PA_WARPS)
    flash_prompt_kernel(const float *__restrict__ q, const __half *__restrict__ kv_layer, fwd_dims d, fwd_meta m,
                        const uint32_t *__restrict__ tiles, float scale_log2, uint8_t *__restrict__ out)
{
    typedef fa_layout<D> L;
    SMQ_DYNAMIC_SMEM(smem);
    __half *Ks = (__half *)(smem + L::k), *Vt = (__half *)(smem + L::v);
    const uint32_t G = d.n_head / d.n_head_kv, g = blockIdx.y, kv_dim = d.n_head_kv * D;
    const uint32_t row0 = tiles[2 * blockIdx.x], nrows = tiles[2 * blockIdx.x + 1];
    const uint32_t n_ctx = m.row_pos[row0 + nrows - 1] + 1, n_blocks = (n_ctx + FA_N - 1) / FA_N;
    const uint32_t *table = m.pages + m.row_table[row0];
    const unsigned tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gq = lane / 4, tq = lane % 4;

    /* this lane's two query heads (rows gq and gq + 8 of the warp's 16):
     * row i / G of the tile, head g G + i % G; past the tile's rows zeros,
     * attending key 0 alone (their output is not stored) */
    int lim[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        uint32_t rr = (16 * warp + gq + 8 * i) / G;
        lim[i] = rr < nrows ? (int)m.row_pos[row0 + rr] + 1 : 1;
    }
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            uint32_t mi = 16 * warp + gq + 8 * (r & 1), rr = mi / G, c = 16 * kk + 2 * tq + 8 * (r >> 1);
            float2 v = make_float2(0.f, 0.f);
            if (rr < nrows)
                v = *(const float2 *)(q + ((uint64_t)(row0 + rr) * d.n_head + g * G + mi % G) * D + c);
            qa[kk][r] = pack_half2(v.x, v.y);
        }
    float o[D / 8][4], mrow[2] = { -INFINITY, -INFINITY }, lrow[2] = { 0.f, 0.f };
#pragma unroll
    for (int n = 0; n < D / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;

    for (uint32_t kb = 0; kb < n_blocks; kb++) {
        __syncthreads(); /* the previous block's K and V are done with */
        /* K row-major, a 16-byte piece a thread; V transposed, a thread a
         * key's 8 dims (consecutive threads consecutive keys: the stores
         * fall in different banks) */
        for (uint32_t i = tid; i < FA_N * (D / 8); i += blockDim.x) {
            uint32_t key = i / (D / 8), c8 = i % (D / 8), t = kb * FA_N + key;
            uint4 kval = make_uint4(0, 0, 0, 0);
            if (t < n_ctx)
                kval = __ldg(
                    (const uint4 *)(kv_layer +
                                    ((uint64_t)table[t / d.page_size] * d.page_size + t % d.page_size) * 2 * kv_dim +
                                    g * D) +
                    c8);
            *((uint4 *)(Ks + key * L::LDK) + c8) = kval;
        }
        for (uint32_t i = tid; i < FA_N * (D / 8); i += blockDim.x) {
            uint32_t key = i % FA_N, c8 = i / FA_N, t = kb * FA_N + key;
            uint4 vval = make_uint4(0, 0, 0, 0);
            if (t < n_ctx)
                vval = __ldg(
                    (const uint4 *)(kv_layer +
                                    ((uint64_t)table[t / d.page_size] * d.page_size + t % d.page_size) * 2 * kv_dim +
                                    kv_dim + g * D) +
                    c8);
            /* the 16-bit halves of its words, as bits (not through a
             * __half pointer into a uint4: an aliasing the C++ rules
             * forbid, which the host compiler of the emulation broke) */
            const uint32_t w[4] = { vval.x, vval.y, vval.z, vval.w };
            uint16_t *vt = (uint16_t *)Vt + 8 * c8 * L::LDV + key;
#pragma unroll
            for (int e = 0; e < 8; e++)
                vt[e * L::LDV] = (uint16_t)(w[e / 2] >> (16 * (e % 2)));
        }
        __syncthreads();
        /* S = Q K^T: key tile n holds keys 8n .. 8n + 7 of the block */
        float sc[FA_N / 8][4];
#pragma unroll
        for (int n = 0; n < FA_N / 8; n++) {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
            const __half *kr = Ks + (8 * n + gq) * L::LDK + 2 * tq;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t b[2] = { *(const uint32_t *)(kr + 16 * kk), *(const uint32_t *)(kr + 16 * kk + 8) };
                mma16816(sc[n], qa[kk], b);
            }
        }
        /* scaled and masked; each head's block max over its quad's lanes */
        float mx[2] = { -INFINITY, -INFINITY };
#pragma unroll
        for (int n = 0; n < FA_N / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = (int)(kb * FA_N) + 8 * n + 2 * tq + (e & 1);
                float v = key < lim[e >> 1] ? sc[n][e] * scale_log2 : -INFINITY;
                sc[n][e] = v;
                mx[e >> 1] = fmaxf(mx[e >> 1], v);
            }
        float corr[2], ls[2] = { 0.f, 0.f };
#pragma unroll
        for (int i = 0; i < 2; i++) {
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
            mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
            float mn = fmaxf(mrow[i], mx[i]); /* finite: key 0 is in every head's block 0 */
            corr[i] = exp2f(mrow[i] - mn);
            mrow[i] = mn;
        }
#pragma unroll
        for (int n = 0; n < FA_N / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float p = exp2f(sc[n][e] - mrow[e >> 1]);
                sc[n][e] = p;
                ls[e >> 1] += p;
            }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            ls[i] += __shfl_xor_sync(0xffffffffu, ls[i], 1);
            ls[i] += __shfl_xor_sync(0xffffffffu, ls[i], 2);
            lrow[i] = lrow[i] * corr[i] + ls[i];
        }
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= corr[0];
            o[n][1] *= corr[0];
            o[n][2] *= corr[1];
            o[n][3] *= corr[1];
        }
        /* O += P V: keys 16 kk .. + 15 are score tiles 2 kk and 2 kk + 1 */
#pragma unroll
        for (int kk = 0; kk < FA_N / 16; kk++) {
            uint32_t pa[4] = { pack_half2(sc[2 * kk][0], sc[2 * kk][1]), pack_half2(sc[2 * kk][2], sc[2 * kk][3]),
                               pack_half2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                               pack_half2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]) };
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const __half *vr = Vt + (8 * n + gq) * L::LDV + 16 * kk + 2 * tq;
                uint32_t b[2] = { *(const uint32_t *)vr, *(const uint32_t *)(vr + 8) };
                mma16816(o[n], pa, b);
            }
        }
    }
    /* O / l, staged in fp32 where K and V were, then quantized */
    __syncthreads();
    float *Os = (float *)smem;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        uint32_t h = 16 * warp + gq + 8 * i;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            Os[h * L::LDO + 8 * n + 2 * tq] = o[n][2 * i] / lrow[i];
            Os[h * L::LDO + 8 * n + 2 * tq + 1] = o[n][2 * i + 1] / lrow[i];
        }
    }
    __syncthreads();
    const uint64_t out_n = (uint64_t)d.n_head * D;
    for (uint32_t gi = warp; gi < PA_M * (D / 32); gi += PA_WARPS) {
        uint32_t h = gi / (D / 32), grp = gi % (D / 32), rr = h / G;
        if (rr >= nrows)
            continue;
        q16_store_group(q16_at(out + (uint64_t)(row0 + rr) * q16_row_bytes(out_n), (uint32_t)out_n),
                        ((g * G + h % G) * D) / 32 + grp, Os[h * L::LDO + 32 * grp + lane], lane);
    }
}

int fwd_prompt_attention_supported(const fwd_dims *d)
{
    uint32_t G = d->n_head / d->n_head_kv;
    return (d->head_dim == 64 || d->head_dim == 128) && G > 0 && PA_M % G == 0;
}

uint32_t fwd_prompt_tile_rows(const fwd_dims *d)
{
    return PA_M / (d->n_head / d->n_head_kv);
}

/* SMQ_CUDA_PA_WMMA=1 (read at each launch): the two-pass WMMA kernel, the
 * one measured on a GPU (29 TFLOP/s of attention at 4096 positions on an
 * H100), kept as the fallback until the one-pass kernel has run on one. */
static bool pa_wmma(void)
{
    const char *e = getenv("SMQ_CUDA_PA_WMMA");
    return e && !strcmp(e, "1");
}

template <int D>
static int launch_prompt_attention(const float *q, const __half *kv_layer, const uint32_t *tiles, uint32_t n_tiles,
                                   const fwd_dims *d, const fwd_meta *m, uint8_t *out, cudaStream_t s, smq_err *err)
{
    /* the same arguments; the one-pass kernel's scale has log2(e) in it (exp2) */
    bool flash = !pa_wmma();
    void (*kernel)(const float *, const __half *, fwd_dims, fwd_meta, const uint32_t *, float, uint8_t *) =
        flash ? flash_prompt_kernel<D> : prompt_attention_kernel<D>;
    size_t bytes = flash ? fa_layout<D>::bytes : pa_layout<D>::bytes;
    float scale = (flash ? 1.4426950408889634f : 1.0f) / sqrtf((float)D);
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return smq_err_set(err, "cuda backend: prompt attention: %zu bytes of shared memory: %s", bytes,
                           cudaGetErrorString(e));
    launch_plain(kernel, dim3(n_tiles, d->n_head_kv), 32 * PA_WARPS, bytes, s, q, kv_layer, *d, *m, tiles, scale, out);
    LAUNCH_CHECK("prompt_attention");
    return 0;
}

int fwd_prompt_attention(const float *q, const __half *kv_layer, const uint32_t *tiles, uint32_t n_tiles,
                         const fwd_dims *d, const fwd_meta *m, uint8_t *out, void *stream, smq_err *err)
{
    if (!fwd_prompt_attention_supported(d))
        return smq_err_set(err, "cuda backend: prompt attention: heads of %u dims, %u per KV head: not supported",
                           d->head_dim, d->n_head / d->n_head_kv);
    if (n_tiles == 0)
        return 0;
    cudaStream_t s = (cudaStream_t)stream;
    return d->head_dim == 64 ? launch_prompt_attention<64>(q, kv_layer, tiles, n_tiles, d, m, out, s, err)
                             : launch_prompt_attention<128>(q, kv_layer, tiles, n_tiles, d, m, out, s, err);
}
