/* qdot.cuh - integer dot products of Q4_K / Q6_K weight blocks with 16-bit
 * quantized activations, as __device__ functions for the kernels of
 * matvec.cu and fwd_kernels.cu.
 *
 * Activations (a "q16 row" of n elements, n a multiple of 256): each group
 * of 32 has a float scale d and integers q = rint(x / d) with |q| <= 32639
 * (d = max|x| / 32639), kept as two signed bytes, q = 256 hi + lo (hi in
 * -127..127, lo in -128..127), so that __dp4a (4 byte products a cycle)
 * serves both halves: sum(w q) = 256 sum(w hi) + sum(w lo), exact in int32.
 * A row's q16 bytes are laid out as
 *     hi[n] int8 | lo[n] int8 | d[n/32] float | isum[n/16] int32
 * where isum[i] is the sum of q over elements 16i..16i+15 (the min terms of
 * Q4_K and the -32 offset of Q6_K). Its error: 0.5/32639 of the group's
 * largest value per element, 1.5e-5 relative; against 8-bit activations
 * (llama.cpp's Q8_1, 3e-2 rel L2 on the golden model's logits) this keeps
 * the forward within 3e-3 of the float32 reference.
 *
 * Weights are read in their GGUF blocks, with 16-byte loads: a warp takes 8
 * blocks of a row at a time, 4 lanes per block, a lane a quarter (64
 * weights). Q4_K blocks are 144 bytes, 16-byte aligned in a row; Q6_K
 * blocks (210 bytes) sit at a stride of Q6K_STRIDE = 224 on the device (the
 * backend pads them at upload) so that theirs are too. A block's scales
 * come in 16-byte loads with its quants, issued before any arithmetic, and
 * are unpacked in registers by quant.h's index math
 * (q4k_unpack_scale_words, q6k_scale_index, fp16_to_f32), rounded as
 * q4k_sub_scale rounds them: the same numbers as byte loads gave.
 */
#ifndef SMQ_CUDA_QDOT_CUH
#define SMQ_CUDA_QDOT_CUH

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "quant.h"

#define Q16_MAX    32639 /* 127 * 256 + 127 */
#define Q6K_STRIDE 224   /* device bytes per Q6_K block: 210, padded to 16 */

/* q6k_quarter loads a padded Q6_K block's scales as one 16-byte vector and
 * d with the 2 padding bytes after it as one word. */
static_assert(offsetof(block_q6_K, scales) % 16 == 0, "Q6_K scales 16-byte aligned in the slot");
static_assert(offsetof(block_q6_K, d) % 4 == 0 && offsetof(block_q6_K, d) + 4 <= Q6K_STRIDE, "Q6_K d word");

/* Bytes of a q16 row of n elements (n a multiple of 256: 16-byte aligned). */
static inline __host__ __device__ uint64_t q16_row_bytes(uint64_t n)
{
    return 2 * n + n / 32 * 4 + n / 16 * 4;
}

/* Device bytes per block of a weight type (Q6_K padded). */
static inline __host__ __device__ uint32_t dev_block_bytes(qtype t)
{
    return t == QTYPE_Q6_K ? Q6K_STRIDE : t == QTYPE_Q4_K ? (uint32_t)sizeof(block_q4_K) : 0;
}

typedef struct q16_view {
    int8_t *hi, *lo;
    float *d;
    int *isum;
} q16_view;

__device__ static inline q16_view q16_at(const uint8_t *row, uint32_t n)
{
    q16_view v;
    v.hi = (int8_t *)row;
    v.lo = (int8_t *)row + n;
    v.d = (float *)(row + 2 * (uint64_t)n);
    v.isum = (int *)(row + 2 * (uint64_t)n + n / 32 * 4);
    return v;
}

__device__ static inline float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ static inline float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* A whole warp quantizes group g of a q16 row, lane holding element 32g +
 * lane in v. A NaN anywhere makes the group's scale NaN, so that it shows
 * in every product (tests poison unwritten buffers with NaN). */
__device__ static inline void q16_store_group(q16_view a, uint32_t g, float v, unsigned lane)
{
    float amax = warp_max(fabsf(v));
    int nan = __any_sync(0xffffffffu, isnan(v));
    float d = amax / (float)Q16_MAX, id = amax > 0.f ? (float)Q16_MAX / amax : 0.f;
    int q = nan ? 0 : __float2int_rn(v * id);
    q = max(-Q16_MAX, min(Q16_MAX, q));
    int hi = (q + 128) >> 8;
    a.hi[32 * g + lane] = (int8_t)hi;
    a.lo[32 * g + lane] = (int8_t)(q - 256 * hi);
    int s = q;
    for (int o = 8; o > 0; o >>= 1) /* within each half-warp */
        s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane % 16 == 0)
        a.isum[2 * g + lane / 16] = s;
    if (lane == 0)
        a.d[g] = nan ? NAN : d;
}

__device__ static inline uint4 ld16(const void *p)
{
    return __ldg((const uint4 *)p);
}

__device__ static inline uint32_t u4_word(uint4 v, int i)
{
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* Byte i (0..15) of a 16-byte vector held in registers. */
__device__ static inline uint32_t u4_byte(uint4 v, int i)
{
    return (u4_word(v, i / 4) >> (8 * (i % 4))) & 0xFFu;
}

/* Quarter c (elements 64c..64c+63) of Q4_K block b against the q16
 * activations of the same elements, e their first index in the row:
 * sub-block 2c in the low nibbles of qs[32c..32c+31], 2c+1 in the high.
 * The block's 16-byte header (d, dmin, the 12 scale bytes) comes in one
 * load with the quants, all issued before any arithmetic, and its scales
 * are unpacked from registers (q4k_unpack_scale_words): no byte loads
 * behind branches to wait on after the products. */
__device__ static inline float q4k_quarter(const block_q4_K *b, unsigned c, q16_view a, uint32_t e)
{
    uint4 hdr = ld16(b); /* d | dmin, scales[0..3], scales[4..7], scales[8..11] */
    uint4 w[2] = { ld16(b->qs + 32 * c), ld16(b->qs + 32 * c + 16) };
    uint4 xh[4], xl[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        xh[i] = ld16(a.hi + e + 16 * i);
        xl[i] = ld16(a.lo + e + 16 * i);
    }
    int4 s = __ldg((const int4 *)(a.isum + e / 16));
    float2 dx = __ldg((const float2 *)(a.d + e / 32));
    int a0 = 0, b0 = 0, a1 = 0, b1 = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        uint32_t q = u4_word(w[i / 4], i % 4);
        int lo = (int)(q & 0x0F0F0F0Fu), hi = (int)((q >> 4) & 0x0F0F0F0Fu);
        a0 = __dp4a(lo, (int)u4_word(xh[i / 4], i % 4), a0);
        b0 = __dp4a(lo, (int)u4_word(xl[i / 4], i % 4), b0);
        a1 = __dp4a(hi, (int)u4_word(xh[2 + i / 4], i % 4), a1);
        b1 = __dp4a(hi, (int)u4_word(xl[2 + i / 4], i % 4), b1);
    }
    /* sub-blocks 2c and 2c+1: bytes 2(c%2) and 2(c%2)+1 of word c/2; the
     * products as q4k_sub_scale rounds them */
    uint32_t sc[2], mn[2];
    q4k_unpack_scale_words(hdr.y, hdr.z, hdr.w, sc, mn);
    uint32_t sw = c < 2 ? sc[0] : sc[1], mw = c < 2 ? mn[0] : mn[1], sh = 16 * (c % 2);
    float d = fp16_to_f32((uint16_t)hdr.x), dmin = fp16_to_f32((uint16_t)(hdr.x >> 16));
    float d1 = qmul(d, (float)((sw >> sh) & 0xFFu)), m1 = qmul(dmin, (float)((mw >> sh) & 0xFFu));
    float d2 = qmul(d, (float)((sw >> (sh + 8)) & 0xFFu)), m2 = qmul(dmin, (float)((mw >> (sh + 8)) & 0xFFu));
    return dx.x * (d1 * (float)(256 * a0 + b0) - m1 * (float)(s.x + s.y)) +
           dx.y * (d2 * (float)(256 * a1 + b1) - m2 * (float)(s.z + s.w));
}

/* Quarter j of a Q6_K block (b at a 16-byte aligned Q6K_STRIDE slot): n =
 * j/2, h = j%2, the elements 128n + 32k + 16h + (0..15) for k = 0..3,
 * whose low 4 bits are in ql[64n + 32(k&1) + 16h ..] (high nibble for k >=
 * 2) and high 2 bits in bits 2k, 2k+1 of qh[32n + 16h ..]; eb is the
 * block's first element in the row. */
__device__ static inline float q6k_quarter(const block_q6_K *b, unsigned j, q16_view a, uint32_t eb)
{
    unsigned n = j / 2, h = j % 2;
    uint4 l0 = ld16(b->ql + 64 * n + 16 * h), l1 = ld16(b->ql + 64 * n + 32 + 16 * h);
    uint4 qh = ld16(b->qh + 32 * n + 16 * h);
    uint4 scales = ld16(b->scales);                   /* all 16, from registers below */
    uint32_t dw = __ldg((const unsigned int *)&b->d); /* d and 2 bytes of padding */
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        uint32_t e = eb + 128 * n + 32 * k + 16 * h;
        uint4 xh = ld16(a.hi + e), xl = ld16(a.lo + e);
        int ah = 0, al = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t lw = u4_word(k & 1 ? l1 : l0, i), hw = u4_word(qh, i);
            uint32_t low = k >= 2 ? (lw >> 4) & 0x0F0F0F0Fu : lw & 0x0F0F0F0Fu;
            uint32_t high = (k == 0 ? hw << 4 : k == 1 ? hw << 2 : k == 2 ? hw : hw >> 2) & 0x30303030u;
            int q = (int)(low | high); /* 0..63 per byte */
            ah = __dp4a(q, (int)u4_word(xh, i), ah);
            al = __dp4a(q, (int)u4_word(xl, i), al);
        }
        int dot = 256 * ah + al - 32 * __ldg(a.isum + e / 16);
        float sc = (float)(int8_t)u4_byte(scales, q6k_scale_index((int)(128 * n + 32 * k + 16 * h)));
        sum += __ldg(a.d + e / 32) * sc * (float)dot;
    }
    return fp16_to_f32((uint16_t)dw) * sum;
}

/* A warp's dot products of NR weight rows (w[r], nb blocks each, of type T)
 * with one q16 row; every lane returns the sums. The order of operations is
 * fixed by nb alone. With ks < n_ks the warp takes only its share of the
 * blocks (the groups of 8 numbered ks, ks + n_ks, ...): part of each sum,
 * for the caller to add across warps in a fixed order. */
template <qtype T, int NR>
__device__ static inline void warp_dots(const uint8_t *const *w, uint32_t nb, q16_view a, float *out, uint32_t ks = 0,
                                        uint32_t n_ks = 1)
{
    unsigned lane = threadIdx.x % 32, part = lane % 4;
    constexpr int UNROLL = NR <= 2 ? 2 : 1; /* two blocks' loads in flight, unless NR rows give enough */
    float sum[NR];
#pragma unroll
    for (int r = 0; r < NR; r++)
        sum[r] = 0.f;
#pragma unroll UNROLL
    for (uint32_t ib = 8 * ks + lane / 4; ib < nb; ib += 8 * n_ks) {
#pragma unroll
        for (int r = 0; r < NR; r++) {
            if (T == QTYPE_Q4_K)
                sum[r] += q4k_quarter((const block_q4_K *)w[r] + ib, part, a, ib * QK_K + 64 * part);
            else
                sum[r] += q6k_quarter((const block_q6_K *)(w[r] + (uint64_t)ib * Q6K_STRIDE), part, a, ib * QK_K);
        }
    }
#pragma unroll
    for (int r = 0; r < NR; r++)
        out[r] = warp_sum(sum[r]);
}

/* The same with the type known only at run time (uniform across the warp). */
template <int NR>
__device__ static inline void warp_dots_any(qtype t, const uint8_t *const *w, uint32_t nb, q16_view a, float *out)
{
    if (t == QTYPE_Q4_K)
        warp_dots<QTYPE_Q4_K, NR>(w, nb, a, out);
    else
        warp_dots<QTYPE_Q6_K, NR>(w, nb, a, out);
}

#endif
