/* quant.h - the quantized block formats, one definition for host and device.
 *
 * The structs are ggml's block layouts byte for byte (ggml-common.h), so a
 * GGUF tensor's bytes can be read in place. The QFN functions compile both as
 * C11 and as CUDA __host__ __device__ code, so the CPU backend and the CUDA
 * kernels unpack scales and dequantize through the same code.
 *
 * Dequantization is bit-exact with ggml's: it follows ggml's float32
 * operation order and never lets the compiler fuse a multiply and an add into
 * an FMA (qmul/qadd/qsub below), which would round differently.
 *
 * The host-only API (whole rows, quantizers) is at the end, in quant.c.
 */
#ifndef SMQ_QUANT_H
#define SMQ_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qtype.h"

#ifdef __CUDACC__
#define QFN static inline __host__ __device__
#else
#define QFN static inline
#endif

#ifdef __cplusplus
#define QUANT_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define QUANT_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define QK_K         256 /* elements per K-quant super-block */
#define QK8_0        32
#define QK8_1        32
#define K_SCALE_SIZE 12 /* bytes of packed 6-bit scales and mins in Q4_K/Q5_K */

/* ---- block layouts (fp16 values are stored as their uint16_t bits) ---- */

/* x = d * q, q signed 8-bit. */
typedef struct block_q8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
} block_q8_0;

/* Q8_0 plus s = d * sum(qs), which lets a dot product with an affine
 * (scale + min) format fold the min term in with one multiply. */
typedef struct block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[QK8_1];
} block_q8_1;

/* 8 sub-blocks of 32: x = d*sc[j]*q - dmin*m[j], q in 0..15, sc and m 6-bit
 * (packed in scales, see q4k_scale_min). Sub-blocks 2c and 2c+1 share the 32
 * bytes qs[32c..32c+31]: low nibbles, then high nibbles. */
typedef struct block_q4_K {
    uint16_t d;    /* super-block scale of the sub-block scales */
    uint16_t dmin; /* super-block scale of the sub-block mins */
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;

/* Q4_K with a fifth bit per quant: bit j of qh[l] is the high bit of element
 * l of sub-block j. */
typedef struct block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;

/* 16 sub-blocks of 16: x = d*scales[j]*(q-32), q 6-bit (4 in ql, 2 in qh). */
typedef struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d; /* last, at offset 208 */
} block_q6_K;

/* Activations for K-quant dot products: x = d*q, with bsums[i] the sum of
 * qs[16i..16i+15] (for the min terms). d is a float, not fp16. */
typedef struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;

/* Sizes as in qtype_table[].block_bytes; a mismatch would misread every file. */
QUANT_STATIC_ASSERT(sizeof(block_q8_0) == 34, "block_q8_0 is 34 bytes");
QUANT_STATIC_ASSERT(sizeof(block_q8_1) == 36, "block_q8_1 is 36 bytes");
QUANT_STATIC_ASSERT(sizeof(block_q4_K) == 144, "block_q4_K is 144 bytes");
QUANT_STATIC_ASSERT(sizeof(block_q5_K) == 176, "block_q5_K is 176 bytes");
QUANT_STATIC_ASSERT(sizeof(block_q6_K) == 210, "block_q6_K is 210 bytes");
QUANT_STATIC_ASSERT(offsetof(block_q6_K, d) == 208, "block_q6_K.d is at offset 208");
QUANT_STATIC_ASSERT(sizeof(block_q8_K) == 292, "block_q8_K is 292 bytes");

/* ---- float arithmetic that rounds the same on host and device ---- */

/* nvcc contracts a*b - c into one FMA by default, which rounds once where
 * ggml rounds twice; the _rn intrinsics are never contracted. On the host we
 * build as ISO C (-ffp-contract=off), and a call boundary keeps clang's
 * default (-ffp-contract=on, within one expression) from fusing either. */
QFN float qmul(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

QFN float qadd(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

QFN float qsub(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

QFN float qdiv(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

/* The same in double (the sampler's weights, sample_chain.h). */
QFN double qdmul(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}

QFN double qdadd(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}

QFN double qdsub(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dsub_rn(a, b);
#else
    return a - b;
#endif
}

QFN double qddiv(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __ddiv_rn(a, b);
#else
    return a / b;
#endif
}

QFN uint32_t f32_bits(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

QFN float f32_from_bits(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/* ---- fp16 and bf16, by bit manipulation so host and device agree ---- */

QFN float fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    if (exp == 0x1F) /* inf, or NaN keeping its payload */
        return f32_from_bits(sign | 0x7F800000u | (mant << 13));
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float32 */
        float f = qmul((float)mant, 5.9604644775390625e-8f);
        return f32_from_bits(sign | f32_bits(f));
    }
    return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* Rounds to nearest, ties to even; overflow gives inf, NaN stays NaN. */
QFN uint16_t f32_to_fp16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) /* NaN: keep the top payload bits, force quiet */
        return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
    if (a >= 0x477FF000u) /* >= 65520 (or inf): rounds past 65504 */
        return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x38800000u) { /* >= 2^-14: a normal half */
        uint32_t h = ((a >> 23) - 112u) << 10 | ((a >> 13) & 0x3FFu);
        uint32_t rest = a & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
            h++; /* a carry into the exponent is still the right value */
        return (uint16_t)(sign | h);
    }
    if (a <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 is a tie) */
        return sign;
    /* a subnormal half: the mantissa with its implicit bit, in units of
     * 2^-24, is (a's mantissa) >> shift */
    uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126u - (a >> 23); /* 14..24 */
    uint32_t h = mant >> shift;
    uint32_t rest = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (h & 1u)))
        h++; /* may become 0x400, the smallest normal: also right */
    return (uint16_t)(sign | h);
}

QFN float bf16_to_f32(uint16_t b)
{
    return f32_from_bits((uint32_t)b << 16);
}

/* Rounds to nearest, ties to even; NaN stays NaN (quiet). */
QFN uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* ---- Q4_K / Q5_K 6-bit scales and mins ----
 * scales[0..3]: sc0..3 in the low 6 bits, high 2 bits of sc4..7 on top;
 * scales[4..7]: m0..3 likewise with the high 2 bits of m4..7;
 * scales[8..11]: low nibbles of sc4..7, with those of m4..7 above them. */

QFN void q4k_scale_min(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (uint8_t)((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
        *m = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }
}

/* The inverse of q4k_scale_min for one j (sc, m < 64); touches only j's bits,
 * so the eight sub-blocks may be packed in any order. */
QFN void q4k_pack_scale_min(int j, uint8_t sc, uint8_t m, uint8_t *scales)
{
    if (j < 4) {
        scales[j] = (uint8_t)((scales[j] & 0xC0) | (sc & 63));
        scales[j + 4] = (uint8_t)((scales[j + 4] & 0xC0) | (m & 63));
    } else {
        scales[j + 4] = (uint8_t)((sc & 0xF) | ((m & 0xF) << 4));
        scales[j - 4] = (uint8_t)((scales[j - 4] & 0x3F) | ((sc >> 4) << 6));
        scales[j] = (uint8_t)((scales[j] & 0x3F) | ((m >> 4) << 6));
    }
}

/* All eight (sc, m) pairs at once from the 12 scale bytes held as three
 * little-endian words s0 = scales[0..3], s1 = [4..7], s2 = [8..11], by word
 * arithmetic (no byte loads, no branches): byte j of sc[0] is sub-block j's
 * scale for j < 4 and byte j-4 of sc[1] that of j >= 4; likewise mn for the
 * mins. The same values as q4k_scale_min, for kernels that keep a block's
 * header in registers (the GPU's, and the CPU's through q4k_unpack_scales). */
QFN void q4k_unpack_scale_words(uint32_t s0, uint32_t s1, uint32_t s2, uint32_t sc[2], uint32_t mn[2])
{
    sc[0] = s0 & 0x3F3F3F3Fu;
    mn[0] = s1 & 0x3F3F3F3Fu;
    sc[1] = (s2 & 0x0F0F0F0Fu) | (((s0 >> 6) & 0x03030303u) << 4);
    mn[1] = ((s2 >> 4) & 0x0F0F0F0Fu) | (((s1 >> 6) & 0x03030303u) << 4);
}

/* Scale and min of 32-element sub-block j as ggml computes them:
 * d1 = d*sc, m1 = dmin*m. Q5_K's header is laid out the same way. */
QFN void q4k_sub_scale(uint16_t d, uint16_t dmin, const uint8_t *scales, int j, float *d1, float *m1)
{
    uint8_t sc, m;
    q4k_scale_min(j, scales, &sc, &m);
    *d1 = qmul(fp16_to_f32(d), (float)sc);
    *m1 = qmul(fp16_to_f32(dmin), (float)m);
}

/* ---- quants of element i (0..255) of a block ---- */

QFN int q4k_quant(const block_q4_K *b, int i)
{
    int j = i / 32;
    uint8_t byte = b->qs[32 * (j / 2) + i % 32];
    return (j & 1) ? byte >> 4 : byte & 0xF;
}

QFN int q5k_quant(const block_q5_K *b, int i)
{
    int j = i / 32;
    uint8_t byte = b->qs[32 * (j / 2) + i % 32];
    int low = (j & 1) ? byte >> 4 : byte & 0xF;
    return low | (((b->qh[i % 32] >> j) & 1) << 4);
}

/* Element i = 128n + 32k + l: low nibble of ql[64n + 32(k&1) + l] (high
 * nibble when k >= 2), high bits 2k..2k+1 of qh[32n + l]; minus 32. */
QFN int q6k_quant(const block_q6_K *b, int i)
{
    int n = i / 128, k = (i % 128) / 32, l = i % 32;
    uint8_t lo = b->ql[64 * n + 32 * (k & 1) + l];
    int q = (k >= 2 ? lo >> 4 : lo & 0xF) | (((b->qh[32 * n + l] >> (2 * k)) & 3) << 4);
    return q - 32;
}

/* Sub-block (16 elements) of element i: 128n + 32k + l uses scales[8n + l/16 + 2k]. */
QFN int q6k_scale_index(int i)
{
    return 8 * (i / 128) + (i % 32) / 16 + 2 * ((i % 128) / 32);
}

/* ---- one dequantized element, for kernels that give each thread one ---- */

QFN float q4k_value(const block_q4_K *b, int i)
{
    float d1, m1;
    q4k_sub_scale(b->d, b->dmin, b->scales, i / 32, &d1, &m1);
    return qsub(qmul(d1, (float)q4k_quant(b, i)), m1);
}

QFN float q5k_value(const block_q5_K *b, int i)
{
    float d1, m1;
    q4k_sub_scale(b->d, b->dmin, b->scales, i / 32, &d1, &m1);
    return qsub(qmul(d1, (float)q5k_quant(b, i)), m1);
}

/* ggml: d * sc * q, evaluated left to right. */
QFN float q6k_value(const block_q6_K *b, int i)
{
    float ds = qmul(fp16_to_f32(b->d), (float)b->scales[q6k_scale_index(i)]);
    return qmul(ds, (float)q6k_quant(b, i));
}

QFN float q80_value(const block_q8_0 *b, int i)
{
    return qmul((float)b->qs[i], fp16_to_f32(b->d));
}

/* ---- whole blocks: 256 floats (32 for Q8_0/Q8_1) into y ---- */

QFN void dequant_block_q4_K(const block_q4_K *b, float *y)
{
    for (int j = 0; j < QK_K / 32; j++) {
        float d1, m1;
        q4k_sub_scale(b->d, b->dmin, b->scales, j, &d1, &m1);
        for (int i = 32 * j; i < 32 * j + 32; i++)
            y[i] = qsub(qmul(d1, (float)q4k_quant(b, i)), m1);
    }
}

QFN void dequant_block_q5_K(const block_q5_K *b, float *y)
{
    for (int j = 0; j < QK_K / 32; j++) {
        float d1, m1;
        q4k_sub_scale(b->d, b->dmin, b->scales, j, &d1, &m1);
        for (int i = 32 * j; i < 32 * j + 32; i++)
            y[i] = qsub(qmul(d1, (float)q5k_quant(b, i)), m1);
    }
}

QFN void dequant_block_q6_K(const block_q6_K *b, float *y)
{
    for (int i = 0; i < QK_K; i++)
        y[i] = q6k_value(b, i);
}

QFN void dequant_block_q8_0(const block_q8_0 *b, float *y)
{
    for (int i = 0; i < QK8_0; i++)
        y[i] = q80_value(b, i);
}

QFN void dequant_block_q8_1(const block_q8_1 *b, float *y)
{
    float d = fp16_to_f32(b->d);
    for (int i = 0; i < QK8_1; i++)
        y[i] = qmul((float)b->qs[i], d);
}

QFN void dequant_block_q8_K(const block_q8_K *b, float *y)
{
    for (int i = 0; i < QK_K; i++)
        y[i] = qmul(b->d, (float)b->qs[i]);
}

/* ---- host API (quant.c) ---- */
#ifndef __cplusplus

/* Nonzero when quant_dequant_row handles t: F32, F16, BF16, Q8_0, Q8_1, Q4_K,
 * Q5_K, Q6_K, Q8_K. */
int quant_can_dequant(qtype t);

/* Dequantizes n elements of type t from src (aligned for t's block struct)
 * into dst. Returns 0, or -1 when t is not handled or n is not a multiple of
 * t's block size. */
int quant_dequant_row(qtype t, const void *src, float *dst, uint64_t n);

/* Nonzero when quant_quantize_row handles t: F32, F16, BF16, Q8_0, Q8_1, Q4_K,
 * Q6_K, Q8_K. */
int quant_can_quantize(qtype t);

/* Quantizes n floats from src into dst (qtype_row_bytes(t, n) bytes). The
 * weight formats (Q4_K, Q6_K, Q8_0) follow ggml's reference quantizers, so
 * that files we write read like llama-quantize's. Returns 0, or -1 when t is
 * not handled or n is not a multiple of t's block size. */
int quant_quantize_row(qtype t, const float *src, void *dst, uint64_t n);

#endif

#endif
