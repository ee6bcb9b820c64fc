/* qdot.c - dot products of quantized weight rows with activations quantized
 * to Q8_K (8-bit, blocks of 256 with per-16 sums), in integers.
 *
 * Built at -O3 with loop unrolling (see the Makefile): the kernels' loops have
 * small fixed counts and their arrays must end up in registers.
 *
 * This is the fast path: one pass over the 4- and 6-bit blocks, no
 * dequantized floats, integer multiply-adds (llama.cpp's CPU backend does the
 * same; its "q" goldens show the cost in accuracy: rel L2 ~3e-2 of the
 * logits on the random test model). The exact f32 path stays the reference.
 *
 *   Q4_K . Q8_K = sum_blocks dx * (d * sum_j sc_j (q4 . q8)_j - dmin * sum_j m_j bsum_j)
 *   Q6_K . Q8_K = sum_blocks dx * d * sum_j sc_j ((q6 . q8)_j - 32 bsum_j)
 *
 * Every kernel, at every SIMD level and for any number of rows, computes a
 * block's two integer sums exactly and then the very float expression of
 * q4k_block / q6k_block, blocks in order: all of them give bit-identical
 * results. The fast path's 8-bit activations turn the smallest float
 * difference into a flipped rounding downstream, and a prompt must not change
 * with how its rows are grouped into steps or with the machine's SIMD level.
 */
#include "qdot.h"

#include "cpu_ops.h"

/* How far ahead the one-row kernels ask for weights (decode streams them
 * from memory once per token). The hardware prefetcher alone falls behind
 * once the kernel's arithmetic fills the core's window: on a 2-core Sapphire
 * Rapids VM, a loop with the kernel's ops per byte reads 16-17 GB/s with no
 * software prefetch, 19 with 1 KB, 22-23 with 4 KB or more (2 threads; 27-30
 * plain reads). -DQDOT_PREFETCH_BYTES=N to try others. */
#ifndef QDOT_PREFETCH_BYTES
#define QDOT_PREFETCH_BYTES 4096
#endif
#define QDOT_PREFETCH(block_t) (QDOT_PREFETCH_BYTES / sizeof(block_t))

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SMQ_X86 1
#endif

/* ---- a block's contribution, in the one order every kernel uses ---- */

static inline float q4k_block(float xd, float d, float dmin, int32_t sumi, int32_t summ)
{
    return xd * (d * (float)sumi - dmin * (float)summ);
}

static inline float q6k_block(float xd, float d, int32_t sumi)
{
    return xd * d * (float)sumi;
}

/* ---- portable reference ---- */

static float q4k_dot_scalar(const void *wv, const block_q8_K *x, int nb)
{
    const block_q4_K *w = wv;
    float sum = 0;
    for (int b = 0; b < nb; b++, w++, x++) {
        int32_t sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++) {
            uint8_t sc0, m0, sc1, m1;
            q4k_scale_min(2 * c, w->scales, &sc0, &m0);
            q4k_scale_min(2 * c + 1, w->scales, &sc1, &m1);
            int32_t s0 = 0, s1 = 0;
            for (int l = 0; l < 32; l++) {
                s0 += (w->qs[32 * c + l] & 0xF) * x->qs[64 * c + l];
                s1 += (w->qs[32 * c + l] >> 4) * x->qs[64 * c + 32 + l];
            }
            sumi += sc0 * s0 + sc1 * s1;
            summ += m0 * (x->bsums[4 * c] + x->bsums[4 * c + 1]) + m1 * (x->bsums[4 * c + 2] + x->bsums[4 * c + 3]);
        }
        sum += q4k_block(x->d, fp16_to_f32(w->d), fp16_to_f32(w->dmin), sumi, summ);
    }
    return sum;
}

static float q6k_dot_scalar(const void *wv, const block_q8_K *x, int nb)
{
    const block_q6_K *w = wv;
    float sum = 0;
    for (int b = 0; b < nb; b++, w++, x++) {
        int32_t sub[16] = { 0 };
        for (int i = 0; i < QK_K; i++)
            sub[q6k_scale_index(i)] += q6k_quant(w, i) * x->qs[i];
        int32_t sumi = 0;
        for (int j = 0; j < 16; j++)
            sumi += w->scales[j] * sub[j];
        sum += q6k_block(x->d, fp16_to_f32(w->d), sumi);
    }
    return sum;
}

/* The eight 6-bit scales and mins of a Q4_K block as bytes, four at a time:
 * su holds sc_0..7, mu m_0..7 (quant.h's word-wise unpacking). */
static inline void q4k_unpack_scales(const uint8_t *scales, uint32_t su[2], uint32_t mu[2])
{
    uint32_t u[3];
    memcpy(u, scales, 12);
    q4k_unpack_scale_words(u[0], u[1], u[2], su, mu);
}

/* ---- AVX2: unsigned x signed byte products summed in pairs (maddubs) ---- */

#ifdef SMQ_X86
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* The lane totals of two vectors at once (integers: any order is exact). */
AVX2_INLINE void hsum2_epi32(__m256i a, __m256i b, int32_t *sa, int32_t *sb)
{
    __m256i h = _mm256_hadd_epi32(a, b); /* a01 a23 b01 b23 | a45 a67 b45 b67 */
    __m128i q = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    q = _mm_hadd_epi32(q, q); /* a b a b */
    *sa = _mm_cvtsi128_si32(q);
    *sb = _mm_extract_epi32(q, 1);
}

AVX2_INLINE int32_t hsum_epi32(__m256i v)
{
    __m128i q = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0x4E));
    q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0xB1));
    return _mm_cvtsi128_si32(q);
}

/* Byte masks for _mm256_shuffle_epi8 that broadcast one 16-bit lane of a
 * 128-bit half to the whole half: lane k is bytes 2k, 2k+1. */
#define LANE16(k)  ((char)(2 * (k))), ((char)(2 * (k) + 1))
#define BCAST16(k) LANE16(k), LANE16(k), LANE16(k), LANE16(k), LANE16(k), LANE16(k), LANE16(k), LANE16(k)

__attribute__((target("avx2,fma,f16c"))) static float q4k_dot_avx2(const void *wv, const block_q8_K *x, int nb)
{
    const block_q4_K *w = wv;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    /* sub-block 2c's scale in every 16-bit lane, and 2c+1's */
    const __m256i pick[8] = {
        _mm256_setr_epi8(BCAST16(0), BCAST16(0)), _mm256_setr_epi8(BCAST16(1), BCAST16(1)),
        _mm256_setr_epi8(BCAST16(2), BCAST16(2)), _mm256_setr_epi8(BCAST16(3), BCAST16(3)),
        _mm256_setr_epi8(BCAST16(4), BCAST16(4)), _mm256_setr_epi8(BCAST16(5), BCAST16(5)),
        _mm256_setr_epi8(BCAST16(6), BCAST16(6)), _mm256_setr_epi8(BCAST16(7), BCAST16(7)),
    };
    float sum = 0;
    for (int b = 0; b < nb; b++, w++, x++) {
        /* Weights stream from memory once per token: ask for them early
         * (past the row's end is the next row, which comes next). */
        _mm_prefetch((const char *)(w + QDOT_PREFETCH(*w)), _MM_HINT_T0);
        _mm_prefetch((const char *)(w + QDOT_PREFETCH(*w)) + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)(w + QDOT_PREFETCH(*w)) + 128, _MM_HINT_T0);
        uint32_t su[2], mu[2];
        q4k_unpack_scales(w->scales, su, mu);
        __m256i scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)su)));
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q4 = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * c));
            __m256i lo = _mm256_and_si256(q4, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x->qs + 64 * c)));
            __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x->qs + 64 * c + 32)));
            p0 = _mm256_madd_epi16(p0, _mm256_shuffle_epi8(scv, pick[2 * c]));
            p1 = _mm256_madd_epi16(p1, _mm256_shuffle_epi8(scv, pick[2 * c + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        /* mins: m_j times the sum of sub-block j's 32 activations (two bsums) */
        __m256i bs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), _mm256_set1_epi16(1));
        __m256i mm = _mm256_mullo_epi32(bs, _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)mu)));
        uint16_t dh, mh;
        memcpy(&dh, &w->d, 2);
        memcpy(&mh, &w->dmin, 2);
        int32_t isum, msum;
        hsum2_epi32(sumi, mm, &isum, &msum);
        sum += q4k_block(x->d, _cvtsh_ss(dh), _cvtsh_ss(mh), isum, msum);
    }
    return sum;
}

__attribute__((target("avx2,fma,f16c"))) static float q6k_dot_avx2(const void *wv, const block_q8_K *x, int nb)
{
    const block_q6_K *w = wv;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    /* for row k of a half: the low 128 bits take scale 2k, the high 2k+1 */
    const __m256i pick[4] = {
        _mm256_setr_epi8(BCAST16(0), BCAST16(1)),
        _mm256_setr_epi8(BCAST16(2), BCAST16(3)),
        _mm256_setr_epi8(BCAST16(4), BCAST16(5)),
        _mm256_setr_epi8(BCAST16(6), BCAST16(7)),
    };
    float sum = 0;
    for (int b = 0; b < nb; b++, w++, x++) {
        for (int k = 0; k < 4; k++)
            _mm_prefetch((const char *)(w + QDOT_PREFETCH(*w)) + 64 * k, _MM_HINT_T0);
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w->scales));
        /* the -32 offset: 32 * sum_j sc_j * (sum of sub-block j's 16 activations) */
        __m256i sumi = _mm256_slli_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), sc16), 5);
        sumi = _mm256_sub_epi32(_mm256_setzero_si256(), sumi);
        for (int n = 0; n < 2; n++) {
            __m256i scv =
                _mm256_broadcastsi128_si256(n ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16));
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * n));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * n + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * n));
            /* the four 32-element rows of this half, 6-bit, unsigned 0..63 */
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)(x->qs + 128 * n + 32 * k)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, _mm256_shuffle_epi8(scv, pick[k])));
            }
        }
        uint16_t dh;
        memcpy(&dh, &w->d, 2);
        sum += q6k_block(x->d, _cvtsh_ss(dh), hsum_epi32(sumi));
    }
    return sum;
}

/* Four activation rows at once (prefill): each weight block is unpacked once
 * and used four times. x rows are xs blocks apart. */
__attribute__((target("avx2,fma,f16c"))) static void q4k_dot4_avx2(const void *wv, const block_q8_K *x, size_t xs,
                                                                   int nb, float *out)
{
    const block_q4_K *w = wv;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i pick[8] = {
        _mm256_setr_epi8(BCAST16(0), BCAST16(0)), _mm256_setr_epi8(BCAST16(1), BCAST16(1)),
        _mm256_setr_epi8(BCAST16(2), BCAST16(2)), _mm256_setr_epi8(BCAST16(3), BCAST16(3)),
        _mm256_setr_epi8(BCAST16(4), BCAST16(4)), _mm256_setr_epi8(BCAST16(5), BCAST16(5)),
        _mm256_setr_epi8(BCAST16(6), BCAST16(6)), _mm256_setr_epi8(BCAST16(7), BCAST16(7)),
    };
    float sum[4] = { 0, 0, 0, 0 };
    for (int b = 0; b < nb; b++, w++, x++) {
        uint32_t su[2], mu[2];
        q4k_unpack_scales(w->scales, su, mu);
        __m256i scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)su)));
        __m256i mv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)mu));
        uint16_t dh, mh;
        memcpy(&dh, &w->d, 2);
        memcpy(&mh, &w->dmin, 2);
        float d = _cvtsh_ss(dh), dmin = _cvtsh_ss(mh);
        __m256i q[8], sc[8];
        for (int c = 0; c < 4; c++) {
            __m256i q4 = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * c));
            q[2 * c] = _mm256_and_si256(q4, m4);
            q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            sc[2 * c] = _mm256_shuffle_epi8(scv, pick[2 * c]);
            sc[2 * c + 1] = _mm256_shuffle_epi8(scv, pick[2 * c + 1]);
        }
        for (int r = 0; r < 4; r++) {
            const block_q8_K *y = x + (size_t)r * xs;
            __m256i sumi = _mm256_setzero_si256();
            for (int i = 0; i < 8; i++) {
                __m256i p = _mm256_maddubs_epi16(q[i], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * i)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc[i]));
            }
            __m256i bs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), _mm256_set1_epi16(1));
            int32_t isum, msum;
            hsum2_epi32(sumi, _mm256_mullo_epi32(bs, mv), &isum, &msum);
            sum[r] += q4k_block(y->d, d, dmin, isum, msum);
        }
    }
    memcpy(out, sum, sizeof sum);
}

__attribute__((target("avx2,fma,f16c"))) static void q6k_dot4_avx2(const void *wv, const block_q8_K *x, size_t xs,
                                                                   int nb, float *out)
{
    const block_q6_K *w = wv;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    const __m256i pick[4] = {
        _mm256_setr_epi8(BCAST16(0), BCAST16(1)),
        _mm256_setr_epi8(BCAST16(2), BCAST16(3)),
        _mm256_setr_epi8(BCAST16(4), BCAST16(5)),
        _mm256_setr_epi8(BCAST16(6), BCAST16(7)),
    };
    float sum[4] = { 0, 0, 0, 0 };
    for (int b = 0; b < nb; b++, w++, x++) {
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w->scales));
        __m256i q[8], s8[8];
        for (int n = 0; n < 2; n++) {
            __m256i scv =
                _mm256_broadcastsi128_si256(n ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16));
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * n));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * n + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * n));
            q[4 * n + 0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            q[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            q[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            q[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            for (int k = 0; k < 4; k++)
                s8[4 * n + k] = _mm256_shuffle_epi8(scv, pick[k]);
        }
        uint16_t dh;
        memcpy(&dh, &w->d, 2);
        float d = _cvtsh_ss(dh);
        for (int r = 0; r < 4; r++) {
            const block_q8_K *y = x + (size_t)r * xs;
            __m256i sumi = _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_slli_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), sc16), 5));
            for (int i = 0; i < 8; i++) {
                __m256i p = _mm256_maddubs_epi16(q[i], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * i)));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s8[i]));
            }
            sum[r] += q6k_block(y->d, d, hsum_epi32(sumi));
        }
    }
    memcpy(out, sum, sizeof sum);
}

/* ---- AVX-512: whole 64-byte rows of activations per instruction ----
 *
 * One Q4_K chunk of 32 bytes holds sub-block 2c in its low nibbles and 2c+1
 * in its high ones: broadcast to both halves of a zmm, shifted in the upper
 * half only, it lines up with the activations' 64 bytes 64c.. in their
 * natural order. A Q6_K half's 64 bytes of ql do the same: low nibbles are
 * its first 64 weights, high nibbles the next 64. The per-block preparation
 * (unpacked quants, scale vectors) is split from the per-row multiply so
 * that the four-row kernels run the very operations of the one-row ones and
 * give bit-identical rows. */

#define AVX512_TARGET                                                                                                  \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"), always_inline)) static inline

typedef struct q4k_prep512 {
    __m512i q[4];  /* chunk c: sub-block 2c, then 2c+1, as bytes 0..15 */
    __m512i sc[4]; /* chunk c: their scales as 16-bit words */
    __m256i mins;  /* m_j twice each, 16-bit, against the 16 bsums */
    float d, dmin;
} q4k_prep512;

AVX512_TARGET void q4k_prep_avx512(const block_q4_K *w, q4k_prep512 *p)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    uint32_t su[2], mu[2];
    q4k_unpack_scales(w->scales, su, mu);
    __m512i sc = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)su)));
    for (int c = 0; c < 4; c++) {
        __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qs + 32 * c)));
        p->q[c] = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xFFFF0000u, v, 4), m4);
        /* 16-bit word 2c in the lower two 128-bit lanes, 2c+1 in the upper two */
        char lo = (char)(4 * c), hi = (char)(4 * c + 2);
        __m512i pick = _mm512_set_epi8(hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1,
                                       hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi,
                                       hi + 1, hi, hi + 1, hi, hi + 1, hi, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1,
                                       lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo,
                                       lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo);
        p->sc[c] = _mm512_shuffle_epi8(sc, pick);
    }
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    p->mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)mu), dup));
    uint16_t dh, mh;
    memcpy(&dh, &w->d, 2);
    memcpy(&mh, &w->dmin, 2);
    p->d = _cvtsh_ss(dh);
    p->dmin = _cvtsh_ss(mh);
}

/* A row's two integer sums of a block, each folded to eight lanes. */
AVX512_TARGET void q4k_sums_avx512(const q4k_prep512 *p, const block_q8_K *y, __m256i *s8, __m256i *mm)
{
    __m512i sumi = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        __m512i m = _mm512_maddubs_epi16(p->q[c], _mm512_loadu_si512((const void *)(y->qs + 64 * c)));
        sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(m, p->sc[c]));
    }
    *mm = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), p->mins);
    *s8 = _mm256_add_epi32(_mm512_castsi512_si256(sumi), _mm512_extracti64x4_epi64(sumi, 1));
}

AVX512_TARGET float q4k_row_avx512(const q4k_prep512 *p, const block_q8_K *y)
{
    __m256i s8, mm;
    q4k_sums_avx512(p, y, &s8, &mm);
    int32_t isum, msum;
    hsum2_epi32(s8, mm, &isum, &msum);
    return q4k_block(y->d, p->d, p->dmin, isum, msum);
}

/* Decode streams the weights: two blocks per turn share the horizontal sums
 * and run q4k_block's operations two lanes wide (the same operations, so
 * the same bits as one block at a time). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))) static float
q4k_dot_avx512(const void *wv, const block_q8_K *x, int nb)
{
    const block_q4_K *w = wv;
    float sum = 0;
    int b = 0;
    for (; b + 2 <= nb; b += 2, w += 2, x += 2) {
        for (int k = 0; k < 5; k++)
            _mm_prefetch((const char *)(w + QDOT_PREFETCH(*w)) + 64 * k, _MM_HINT_T0);
        q4k_prep512 p0, p1;
        __m256i s0, m0, s1, m1;
        q4k_prep_avx512(w, &p0);
        q4k_sums_avx512(&p0, x, &s0, &m0);
        q4k_prep_avx512(w + 1, &p1);
        q4k_sums_avx512(&p1, x + 1, &s1, &m1);
        __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, m0), _mm256_hadd_epi32(s1, m1));
        __m128i tot = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)); /* S0 M0 S1 M1 */
        __m128 t = _mm_mul_ps(_mm_setr_ps(p0.d, p0.dmin, p1.d, p1.dmin), _mm_cvtepi32_ps(tot));
        t = _mm_mul_ps(_mm_setr_ps(x[0].d, x[1].d, 0, 0), _mm_hsub_ps(t, t)); /* xd * (d*S - dmin*M) */
        sum += _mm_cvtss_f32(t);
        sum += _mm_cvtss_f32(_mm_movehdup_ps(t));
    }
    if (b < nb) {
        q4k_prep512 p;
        q4k_prep_avx512(w, &p);
        sum += q4k_row_avx512(&p, x);
    }
    return sum;
}

/* Four activation rows at once: one block preparation, four rows' sums. */
#define DOT4_AVX512(name, block_t, prep_t, prep, row)                                                                  \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))) static void name(                           \
        const void *wv, const block_q8_K *x, size_t xs, int nb, float *out)                                            \
    {                                                                                                                  \
        const block_t *w = wv;                                                                                         \
        float sum[4] = { 0, 0, 0, 0 };                                                                                 \
        for (int b = 0; b < nb; b++, w++, x++) {                                                                       \
            prep_t p;                                                                                                  \
            prep(w, &p);                                                                                               \
            for (int r = 0; r < 4; r++)                                                                                \
                sum[r] += row(&p, x + (size_t)r * xs);                                                                 \
        }                                                                                                              \
        memcpy(out, sum, sizeof sum);                                                                                  \
    }

DOT4_AVX512(q4k_dot4_avx512, block_q4_K, q4k_prep512, q4k_prep_avx512, q4k_row_avx512)

typedef struct q6k_prep512 {
    __m512i q[4];  /* weights 64v.. as unsigned 6-bit bytes */
    __m512i sc[4]; /* their four 16-weight scales, one per 128-bit lane, 16-bit */
    __m256i sc16;  /* the 16 scales, 16-bit, against the bsums */
    float d;
} q6k_prep512;

AVX512_TARGET void q6k_prep_avx512(const block_q6_K *w, q6k_prep512 *p)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
    p->sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w->scales));
    __m512i s = _mm512_castsi256_si512(p->sc16);
    for (int n = 0; n < 2; n++) {
        __m512i l = _mm512_loadu_si512((const void *)(w->ql + 64 * n));
        __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qh + 32 * n)));
        h = _mm512_mask_srli_epi16(h, 0xFFFF0000u, h, 2); /* bits 0-1 for the first 32, 2-3 for the next */
        p->q[2 * n] = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(h, m2), 4));
        p->q[2 * n + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, 4), m2), 4));
    }
    for (int v = 0; v < 4; v++) {
        short k = (short)(4 * v);
        __m512i idx = _mm512_set_epi16(k + 3, k + 3, k + 3, k + 3, k + 3, k + 3, k + 3, k + 3, k + 2, k + 2, k + 2,
                                       k + 2, k + 2, k + 2, k + 2, k + 2, k + 1, k + 1, k + 1, k + 1, k + 1, k + 1,
                                       k + 1, k + 1, k, k, k, k, k, k, k, k);
        p->sc[v] = _mm512_permutexvar_epi16(idx, s);
    }
    uint16_t dh;
    memcpy(&dh, &w->d, 2);
    p->d = _cvtsh_ss(dh);
}

AVX512_TARGET float q6k_row_avx512(const q6k_prep512 *p, const block_q8_K *y)
{
    /* the -32 offset: 32 * sum_j sc_j * (sum of sub-block j's 16 activations) */
    __m256i off = _mm256_slli_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), p->sc16), 5);
    __m512i sumi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_zextsi256_si512(off));
    for (int v = 0; v < 4; v++) {
        __m512i m = _mm512_maddubs_epi16(p->q[v], _mm512_loadu_si512((const void *)(y->qs + 64 * v)));
        sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(m, p->sc[v]));
    }
    return q6k_block(y->d, p->d, _mm512_reduce_add_epi32(sumi));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))) static float
q6k_dot_avx512(const void *wv, const block_q8_K *x, int nb)
{
    const block_q6_K *w = wv;
    float sum = 0;
    for (int b = 0; b < nb; b++, w++, x++) {
        for (int k = 0; k < 4; k++)
            _mm_prefetch((const char *)(w + QDOT_PREFETCH(*w)) + 64 * k, _MM_HINT_T0);
        q6k_prep512 p;
        q6k_prep_avx512(w, &p);
        sum += q6k_row_avx512(&p, x);
    }
    return sum;
}

DOT4_AVX512(q6k_dot4_avx512, block_q6_K, q6k_prep512, q6k_prep_avx512, q6k_row_avx512)

/* ---- AVX-512 VNNI: sixteen weight rows per instruction (prefill) ----
 *
 * With many activation rows the weights' unpacking is paid once for all of
 * them: a block position of 16 weight rows is unpacked into a tile whose
 * 64-byte vectors hold the same four quants of each of the 16 rows, and one
 * vpdpbusd multiplies such a vector by four activation bytes broadcast to
 * every row. The sums per sub-block, per row, are then scaled by that row's
 * sub-block scale (a vector of 16 scales), and the block's float expression
 * runs on 16 rows at once: each lane is exactly what the one-row kernels
 * compute for its row. */

#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))

/* acc += q . (the four bytes at p, broadcast): vpdpbusd with its broadcast
 * folded into the instruction ({1to16}), which GCC 12 does not emit from
 * the intrinsics (a separate vpbroadcastd each time). One uop fewer per
 * multiply-add: Q4_K 140 -> 156 GMAC/s on one core. */
#define DPBUSD_BCAST(acc, q, p) __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(q), "m"(*(const int32_t *)(p)))

typedef struct qgemm_tile {
    uint32_t q[64][16]; /* [quants 4i..4i+3][row], unsigned bytes */
    int32_t sc[16][16]; /* [sub-block][row] scale (Q4_K: 8 of them) */
    uint32_t mp[8][16]; /* [j][row] Q4_K: (m_j, m_j); Q6_K: (sc_2j, sc_2j+1) as int16 pairs */
    float d[16], dmin[16];
} qgemm_tile;

/* r[k] = dword k of the 16 input vectors, for k < 16 (a 16 x 16 transpose). */
VNNI_TARGET static inline void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* r[4i+e]: in 128-bit lane L, dword 4L+e of inputs 4i..4i+3 */
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int e = 0; e < 4; e++) {
        __m512i a = _mm512_shuffle_i32x4(r[e], r[4 + e], 0x88), b = _mm512_shuffle_i32x4(r[e], r[4 + e], 0xDD);
        __m512i c = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0x88),
                d = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0xDD);
        t[e] = _mm512_shuffle_i32x4(a, c, 0x88);
        t[8 + e] = _mm512_shuffle_i32x4(a, c, 0xDD);
        t[4 + e] = _mm512_shuffle_i32x4(b, d, 0x88);
        t[12 + e] = _mm512_shuffle_i32x4(b, d, 0xDD);
    }
    for (int k = 0; k < 16; k++)
        r[k] = t[k];
}

VNNI_TARGET static void q4k_tile(const uint8_t *w0, size_t row_bytes, int b, qgemm_tile *t)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    /* quants 64c..64c+63 of the 16 rows (q4k_prep_avx512's unpacking), transposed */
    for (int c = 0; c < 4; c++) {
        __m512i v[16];
        for (int r = 0; r < 16; r++) {
            const block_q4_K *w = (const block_q4_K *)(w0 + (size_t)r * row_bytes) + b;
            __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qs + 32 * c)));
            v[r] = _mm512_and_si512(_mm512_mask_srli_epi16(q, 0xFFFF0000u, q, 4), m4);
        }
        transpose16(v);
        for (int k = 0; k < 16; k++)
            _mm512_store_si512(t->q[16 * c + k], v[k]);
    }
    for (int r = 0; r < 16; r++) {
        const block_q4_K *w = (const block_q4_K *)(w0 + (size_t)r * row_bytes) + b;
        uint32_t su[2], mu[2];
        q4k_unpack_scales(w->scales, su, mu);
        const uint8_t *sc = (const uint8_t *)su, *mn = (const uint8_t *)mu;
        for (int j = 0; j < 8; j++) {
            t->sc[j][r] = sc[j];
            t->mp[j][r] = mn[j] * 0x10001u;
        }
        uint16_t dh, mh;
        memcpy(&dh, &w->d, 2);
        memcpy(&mh, &w->dmin, 2);
        t->d[r] = _cvtsh_ss(dh);
        t->dmin[r] = _cvtsh_ss(mh);
    }
}

/* acc[n][16] += this block of 16 weight rows times activation rows y[0..n-1]
 * (n = 1, 2 or 3: they share the tile's loads; three: Q4_K 155 -> 165 GMAC/s). The sub-blocks' dot products
 * run as independent chains (vpdpbusd's latency is 5 cycles). */
#define Q4K_TILE_ROWS(n)                                                                                               \
    VNNI_TARGET static inline void q4k_tile_rows##n(const qgemm_tile *t, const block_q8_K *const *y, float *acc)       \
    {                                                                                                                  \
        __m512i a[n][8];                                                                                               \
        for (int u = 0; u < n; u++)                                                                                    \
            for (int j = 0; j < 8; j++)                                                                                \
                a[u][j] = _mm512_setzero_si512();                                                                      \
        SMQ_UNROLL(8) for (int i = 0; i < 8; i++) SMQ_UNROLL(8) for (int j = 0; j < 8; j++)                            \
        {                                                                                                              \
            __m512i q = _mm512_load_si512(t->q[8 * j + i]);                                                            \
            for (int u = 0; u < n; u++)                                                                                \
                DPBUSD_BCAST(a[u][j], q, ((const int32_t *)y[u]->qs) + 8 * j + i);                                     \
        }                                                                                                              \
        for (int u = 0; u < n; u++) {                                                                                  \
            const int32_t *bs = (const int32_t *)y[u]->bsums;                                                          \
            __m512i sumi = _mm512_setzero_si512(), summ = _mm512_setzero_si512();                                      \
            for (int j = 0; j < 8; j++) {                                                                              \
                sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(a[u][j], _mm512_load_si512(t->sc[j])));               \
                summ = _mm512_dpwssd_epi32(summ, _mm512_load_si512(t->mp[j]), _mm512_set1_epi32(bs[j]));               \
            }                                                                                                          \
            /* q4k_block on 16 lanes: xd * (d * sumi - dmin * summ) */                                                 \
            __m512 f = _mm512_sub_ps(_mm512_mul_ps(_mm512_load_ps(t->d), _mm512_cvtepi32_ps(sumi)),                    \
                                     _mm512_mul_ps(_mm512_load_ps(t->dmin), _mm512_cvtepi32_ps(summ)));                \
            f = _mm512_mul_ps(_mm512_set1_ps(y[u]->d), f);                                                             \
            _mm512_storeu_ps(acc + 16 * u, _mm512_add_ps(_mm512_loadu_ps(acc + 16 * u), f));                           \
        }                                                                                                              \
    }
Q4K_TILE_ROWS(1)
Q4K_TILE_ROWS(2)
Q4K_TILE_ROWS(3)

VNNI_TARGET static void q6k_tile(const uint8_t *w0, size_t row_bytes, int b, qgemm_tile *t)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
    /* quants 64v..64v+63 of the 16 rows (q6k_prep_avx512's unpacking), transposed */
    for (int v = 0; v < 4; v++) {
        int n = v / 2;
        __m512i q[16];
        for (int r = 0; r < 16; r++) {
            const block_q6_K *w = (const block_q6_K *)(w0 + (size_t)r * row_bytes) + b;
            __m512i l = _mm512_loadu_si512((const void *)(w->ql + 64 * n));
            __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qh + 32 * n)));
            h = _mm512_mask_srli_epi16(h, 0xFFFF0000u, h, 2);
            q[r] = v % 2 ? _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                           _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h, 4), m2), 4))
                         : _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(h, m2), 4));
        }
        transpose16(q);
        for (int k = 0; k < 16; k++)
            _mm512_store_si512(t->q[16 * v + k], q[k]);
    }
    for (int r = 0; r < 16; r++) {
        const block_q6_K *w = (const block_q6_K *)(w0 + (size_t)r * row_bytes) + b;
        for (int j = 0; j < 16; j++)
            t->sc[j][r] = w->scales[j];
        for (int j = 0; j < 8; j++)
            t->mp[j][r] = (uint16_t)w->scales[2 * j] | (uint32_t)(uint16_t)w->scales[2 * j + 1] << 16;
        uint16_t dh;
        memcpy(&dh, &w->d, 2);
        t->d[r] = _cvtsh_ss(dh);
    }
}

#define Q6K_TILE_ROWS(n)                                                                                               \
    VNNI_TARGET static inline void q6k_tile_rows##n(const qgemm_tile *t, const block_q8_K *const *y, float *acc)       \
    {                                                                                                                  \
        __m512i sumi[n];                                                                                               \
        for (int u = 0; u < n; u++)                                                                                    \
            sumi[u] = _mm512_setzero_si512();                                                                          \
        for (int h = 0; h < 2; h++) { /* sub-blocks 8h..8h+7: eight chains per row of x */                             \
            __m512i a[n][8];                                                                                           \
            for (int u = 0; u < n; u++)                                                                                \
                for (int j = 0; j < 8; j++)                                                                            \
                    a[u][j] = _mm512_setzero_si512();                                                                  \
            SMQ_UNROLL(4) for (int i = 0; i < 4; i++) SMQ_UNROLL(8) for (int j = 0; j < 8; j++)                        \
            {                                                                                                          \
                int k = 4 * (8 * h + j) + i;                                                                           \
                __m512i q = _mm512_load_si512(t->q[k]);                                                                \
                for (int u = 0; u < n; u++)                                                                            \
                    DPBUSD_BCAST(a[u][j], q, ((const int32_t *)y[u]->qs) + k);                                         \
            }                                                                                                          \
            for (int u = 0; u < n; u++)                                                                                \
                for (int j = 0; j < 8; j++)                                                                            \
                    sumi[u] =                                                                                          \
                        _mm512_add_epi32(sumi[u], _mm512_mullo_epi32(a[u][j], _mm512_load_si512(t->sc[8 * h + j])));   \
        }                                                                                                              \
        for (int u = 0; u < n; u++) {                                                                                  \
            const int32_t *bs = (const int32_t *)y[u]->bsums;                                                          \
            __m512i off = _mm512_setzero_si512();                                                                      \
            /* the -32 offset: 32 * sum_j sc_j bsum_j */                                                               \
            for (int j = 0; j < 8; j++)                                                                                \
                off = _mm512_dpwssd_epi32(off, _mm512_load_si512(t->mp[j]), _mm512_set1_epi32(bs[j]));                 \
            __m512i si = _mm512_sub_epi32(sumi[u], _mm512_slli_epi32(off, 5));                                         \
            /* q6k_block on 16 lanes: xd * d * sumi */                                                                 \
            __m512 f =                                                                                                 \
                _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(y[u]->d), _mm512_load_ps(t->d)), _mm512_cvtepi32_ps(si));   \
            _mm512_storeu_ps(acc + 16 * u, _mm512_add_ps(_mm512_loadu_ps(acc + 16 * u), f));                           \
        }                                                                                                              \
    }
Q6K_TILE_ROWS(1)
Q6K_TILE_ROWS(2)
Q6K_TILE_ROWS(3)

#define QGEMM16(name, tile, tile_rows1, tile_rows2, tile_rows3)                                                        \
    VNNI_TARGET static void name(const void *w, size_t row_bytes, const block_q8_K *x, size_t xs, int n, int nb,       \
                                 float *acc)                                                                           \
    {                                                                                                                  \
        qgemm_tile t __attribute__((aligned(64)));                                                                     \
        memset(acc, 0, (size_t)n * 16 * sizeof *acc);                                                                  \
        for (int b = 0; b < nb; b++) {                                                                                 \
            tile((const uint8_t *)w, row_bytes, b, &t);                                                                \
            int r = 0;                                                                                                 \
            for (; r + 3 <= n; r += 3) {                                                                               \
                const block_q8_K *y[3] = { x + (size_t)r * xs + b, x + (size_t)(r + 1) * xs + b,                       \
                                           x + (size_t)(r + 2) * xs + b };                                             \
                tile_rows3(&t, y, acc + 16 * r);                                                                       \
            }                                                                                                          \
            for (; r + 2 <= n; r += 2) {                                                                               \
                const block_q8_K *y[2] = { x + (size_t)r * xs + b, x + (size_t)(r + 1) * xs + b };                     \
                tile_rows2(&t, y, acc + 16 * r);                                                                       \
            }                                                                                                          \
            if (r < n) {                                                                                               \
                const block_q8_K *y[1] = { x + (size_t)r * xs + b };                                                   \
                tile_rows1(&t, y, acc + 16 * r);                                                                       \
            }                                                                                                          \
        }                                                                                                              \
    }

QGEMM16(q4k_gemm16, q4k_tile, q4k_tile_rows1, q4k_tile_rows2, q4k_tile_rows3)
QGEMM16(q6k_gemm16, q6k_tile, q6k_tile_rows1, q6k_tile_rows2, q6k_tile_rows3)
#endif

#ifdef SMQ_X86
/* ---- AVX2: sixteen weight rows at once (prefill), without VNNI ----
 *
 * The tile holds the 16 rows as two groups of 8: a vector holds the same
 * four quants of each of 8 rows, and maddubs multiplies it by four
 * activation bytes broadcast, into two 16-bit sums per row. Those are summed
 * over a sub-block in 16 bits before one madd by the row's scale widens them
 * (the four-row kernel needs a madd per maddubs): Q4_K's 32 quants give at
 * most 8 x 2 x 15 x 127 = 30480 in a lane, so a whole sub-block fits; Q6_K's
 * 2 x 63 x 127 = 16002 allows two maddubs, so its 16-quant sub-blocks take
 * two madds. Each row's integer sums are exact, and the float expression
 * runs on 8 lanes as q4k_block/q6k_block do: bit-identical to every other
 * kernel. Chunk v of a tile is weights (and activations) 32v..32v+31. */

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

typedef struct gemm_tile8 {
    __m256i q[2][8][8]; /* [group][chunk v][i]: quants 32v+4i..+3 of the group's 8 rows (unsigned bytes) */
    __m256i sc[2][16];  /* [group][sub-block]: the row's scale in both 16-bit halves */
    __m256i mp[2][8];   /* [group][j] Q4_K: (m_j, m_j); Q6_K: (sc_2j, sc_2j+1), 16-bit pairs */
    __m256 d[2], dmin[2];
} gemm_tile8;

/* r[i] = dword i of the 8 input vectors (an 8 x 8 transpose). */
AVX2_INLINE void transpose8_epi32(__m256i r[8])
{
    __m256i a[8], b[8];
    for (int k = 0; k < 4; k++) {
        a[2 * k] = _mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        a[2 * k + 1] = _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    /* b[4h+e]: in 128-bit lane L, dword 4L+e of inputs 4h..4h+3 */
    for (int h = 0; h < 2; h++) {
        b[4 * h] = _mm256_unpacklo_epi64(a[4 * h], a[4 * h + 2]);
        b[4 * h + 1] = _mm256_unpackhi_epi64(a[4 * h], a[4 * h + 2]);
        b[4 * h + 2] = _mm256_unpacklo_epi64(a[4 * h + 1], a[4 * h + 3]);
        b[4 * h + 3] = _mm256_unpackhi_epi64(a[4 * h + 1], a[4 * h + 3]);
    }
    for (int e = 0; e < 4; e++) {
        r[e] = _mm256_permute2x128_si256(b[e], b[4 + e], 0x20);
        r[e + 4] = _mm256_permute2x128_si256(b[e], b[4 + e], 0x31);
    }
}

/* The scale vectors and block scales of a tile, from per-row values. */
typedef struct tile8_scalars {
    uint32_t sc[16][16], mp[8][16]; /* [sub-block or j][row of 16] */
    float d[16], dmin[16];
} tile8_scalars;

AVX2_INLINE void tile8_load_scalars(gemm_tile8 *t, const tile8_scalars *v)
{
    for (int g = 0; g < 2; g++) {
        for (int j = 0; j < 16; j++)
            t->sc[g][j] = _mm256_loadu_si256((const __m256i *)(v->sc[j] + 8 * g));
        for (int j = 0; j < 8; j++)
            t->mp[g][j] = _mm256_loadu_si256((const __m256i *)(v->mp[j] + 8 * g));
        t->d[g] = _mm256_loadu_ps(v->d + 8 * g);
        t->dmin[g] = _mm256_loadu_ps(v->dmin + 8 * g);
    }
}

AVX2_TARGET static void q4k_tile8(const uint8_t *w0, size_t row_bytes, int b, gemm_tile8 *t)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    tile8_scalars v;
    for (int g = 0; g < 2; g++)
        for (int c = 0; c < 4; c++) {
            /* chunk 2c: the low nibbles of the block's 32 bytes 32c.., chunk 2c+1 their high ones */
            __m256i lo[8], hi[8];
            for (int r = 0; r < 8; r++) {
                const block_q4_K *w = (const block_q4_K *)(w0 + (size_t)(8 * g + r) * row_bytes) + b;
                __m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * c));
                lo[r] = _mm256_and_si256(q, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            }
            transpose8_epi32(lo);
            transpose8_epi32(hi);
            for (int i = 0; i < 8; i++) {
                t->q[g][2 * c][i] = lo[i];
                t->q[g][2 * c + 1][i] = hi[i];
            }
        }
    for (int r = 0; r < 16; r++) {
        const block_q4_K *w = (const block_q4_K *)(w0 + (size_t)r * row_bytes) + b;
        uint32_t su[2], mu[2];
        q4k_unpack_scales(w->scales, su, mu);
        const uint8_t *sc = (const uint8_t *)su, *mn = (const uint8_t *)mu;
        for (int j = 0; j < 8; j++) {
            v.sc[j][r] = sc[j] * 0x10001u;
            v.mp[j][r] = mn[j] * 0x10001u;
        }
        uint16_t dh, mh;
        memcpy(&dh, &w->d, 2);
        memcpy(&mh, &w->dmin, 2);
        v.d[r] = _cvtsh_ss(dh);
        v.dmin[r] = _cvtsh_ss(mh);
    }
    tile8_load_scalars(t, &v);
}

AVX2_TARGET static void q6k_tile8(const uint8_t *w0, size_t row_bytes, int b, gemm_tile8 *t)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    tile8_scalars v;
    /* chunk 4n+k of half n (q6k_dot_avx2's unpacking), one at a time: eight
     * vectors live, not thirty-two */
    for (int g = 0; g < 2; g++)
        for (int n = 0; n < 2; n++)
            for (int k = 0; k < 4; k++) {
                __m256i q[8];
                for (int r = 0; r < 8; r++) {
                    const block_q6_K *w = (const block_q6_K *)(w0 + (size_t)(8 * g + r) * row_bytes) + b;
                    __m256i l = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * n + 32 * (k & 1)));
                    __m256i h = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * n));
                    l = k & 2 ? _mm256_srli_epi16(l, 4) : l;
                    h = _mm256_srli_epi16(h, 2 * k);
                    q[r] = _mm256_or_si256(_mm256_and_si256(l, m4), _mm256_slli_epi16(_mm256_and_si256(h, m2), 4));
                }
                transpose8_epi32(q);
                for (int i = 0; i < 8; i++)
                    t->q[g][4 * n + k][i] = q[i];
            }
    for (int r = 0; r < 16; r++) {
        const block_q6_K *w = (const block_q6_K *)(w0 + (size_t)r * row_bytes) + b;
        for (int j = 0; j < 16; j++)
            v.sc[j][r] = (uint16_t)w->scales[j] * 0x10001u;
        for (int j = 0; j < 8; j++)
            v.mp[j][r] = (uint16_t)w->scales[2 * j] | (uint32_t)(uint16_t)w->scales[2 * j + 1] << 16;
        uint16_t dh;
        memcpy(&dh, &w->d, 2);
        v.d[r] = _cvtsh_ss(dh);
        v.dmin[r] = 0;
    }
    tile8_load_scalars(t, &v);
}

/* four activation bytes, broadcast */
AVX2_INLINE __m256i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* sum_j pairs_j . (bsums 2j, 2j+1) per row of a group: Q4_K's mins term, Q6_K's offset */
AVX2_INLINE __m256i tile8_bsum_term(const __m256i *mp, const block_q8_K *y)
{
    __m256i s = _mm256_setzero_si256();
    for (int j = 0; j < 8; j++)
        s = _mm256_add_epi32(s, _mm256_madd_epi16(mp[j], bcast4((const int8_t *)(y->bsums + 2 * j))));
    return s;
}

/* acc[u][16] += the tile's 16 rows times activation rows y[0..n-1] (n = 1
 * or 2: they share the tile's loads). */
#define Q4K_TILE8_ROWS(n)                                                                                              \
    AVX2_INLINE void q4k_tile8_rows##n(const gemm_tile8 *t, const block_q8_K *const *y, float *acc)                    \
    {                                                                                                                  \
        __m256i sumi[n][2];                                                                                            \
        for (int u = 0; u < n; u++)                                                                                    \
            sumi[u][0] = sumi[u][1] = _mm256_setzero_si256();                                                          \
        for (int j = 0; j < 8; j++) {                                                                                  \
            __m256i s16[n][2];                                                                                         \
            for (int u = 0; u < n; u++)                                                                                \
                s16[u][0] = s16[u][1] = _mm256_setzero_si256();                                                        \
            SMQ_UNROLL(8) for (int i = 0; i < 8; i++)                                                                  \
            {                                                                                                          \
                __m256i q0 = _mm256_load_si256(&t->q[0][j][i]), q1 = _mm256_load_si256(&t->q[1][j][i]);                \
                for (int u = 0; u < n; u++) {                                                                          \
                    __m256i x = bcast4(y[u]->qs + 32 * j + 4 * i);                                                     \
                    s16[u][0] = _mm256_add_epi16(s16[u][0], _mm256_maddubs_epi16(q0, x));                              \
                    s16[u][1] = _mm256_add_epi16(s16[u][1], _mm256_maddubs_epi16(q1, x));                              \
                }                                                                                                      \
            }                                                                                                          \
            for (int u = 0; u < n; u++)                                                                                \
                for (int g = 0; g < 2; g++)                                                                            \
                    sumi[u][g] = _mm256_add_epi32(sumi[u][g], _mm256_madd_epi16(s16[u][g], t->sc[g][j]));              \
        }                                                                                                              \
        for (int u = 0; u < n; u++)                                                                                    \
            for (int g = 0; g < 2; g++) {                                                                              \
                __m256i summ = tile8_bsum_term(t->mp[g], y[u]);                                                        \
                /* q4k_block on 8 lanes: xd * (d * sumi - dmin * summ) */                                              \
                __m256 f = _mm256_sub_ps(_mm256_mul_ps(t->d[g], _mm256_cvtepi32_ps(sumi[u][g])),                       \
                                         _mm256_mul_ps(t->dmin[g], _mm256_cvtepi32_ps(summ)));                         \
                f = _mm256_mul_ps(_mm256_set1_ps(y[u]->d), f);                                                         \
                float *a = acc + 16 * u + 8 * g;                                                                       \
                _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), f));                                             \
            }                                                                                                          \
    }
Q4K_TILE8_ROWS(1)
Q4K_TILE8_ROWS(2)

#define Q6K_TILE8_ROWS(n)                                                                                              \
    AVX2_INLINE void q6k_tile8_rows##n(const gemm_tile8 *t, const block_q8_K *const *y, float *acc)                    \
    {                                                                                                                  \
        __m256i sumi[n][2];                                                                                            \
        for (int u = 0; u < n; u++)                                                                                    \
            sumi[u][0] = sumi[u][1] = _mm256_setzero_si256();                                                          \
        SMQ_UNROLL(8) for (int v = 0; v < 8; v++) SMQ_UNROLL(4) for (int p = 0; p < 4; p++)                            \
        {                                                                                                              \
            /* quants 32v+8p..+7: half of sub-block 2v + p/2 (two maddubs fit 16 bits) */                              \
            __m256i a0 = _mm256_load_si256(&t->q[0][v][2 * p]), a1 = _mm256_load_si256(&t->q[0][v][2 * p + 1]);        \
            __m256i b0 = _mm256_load_si256(&t->q[1][v][2 * p]), b1 = _mm256_load_si256(&t->q[1][v][2 * p + 1]);        \
            for (int u = 0; u < n; u++) {                                                                              \
                __m256i x0 = bcast4(y[u]->qs + 32 * v + 8 * p), x1 = bcast4(y[u]->qs + 32 * v + 8 * p + 4);            \
                __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(a0, x0), _mm256_maddubs_epi16(a1, x1));             \
                __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(b0, x0), _mm256_maddubs_epi16(b1, x1));             \
                sumi[u][0] = _mm256_add_epi32(sumi[u][0], _mm256_madd_epi16(s0, t->sc[0][2 * v + p / 2]));             \
                sumi[u][1] = _mm256_add_epi32(sumi[u][1], _mm256_madd_epi16(s1, t->sc[1][2 * v + p / 2]));             \
            }                                                                                                          \
        }                                                                                                              \
        for (int u = 0; u < n; u++)                                                                                    \
            for (int g = 0; g < 2; g++) {                                                                              \
                /* the -32 offset: 32 * sum_j sc_j bsum_j */                                                           \
                __m256i si = _mm256_sub_epi32(sumi[u][g], _mm256_slli_epi32(tile8_bsum_term(t->mp[g], y[u]), 5));      \
                /* q6k_block on 8 lanes: xd * d * sumi */                                                              \
                __m256 f = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(y[u]->d), t->d[g]), _mm256_cvtepi32_ps(si));     \
                float *a = acc + 16 * u + 8 * g;                                                                       \
                _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), f));                                             \
            }                                                                                                          \
    }
Q6K_TILE8_ROWS(1)
Q6K_TILE8_ROWS(2)

#define QGEMM16_AVX2(name, tile, tile_rows1, tile_rows2)                                                               \
    AVX2_TARGET static void name(const void *w, size_t row_bytes, const block_q8_K *x, size_t xs, int n, int nb,       \
                                 float *acc)                                                                           \
    {                                                                                                                  \
        gemm_tile8 t __attribute__((aligned(32)));                                                                     \
        memset(acc, 0, (size_t)n * 16 * sizeof *acc);                                                                  \
        for (int b = 0; b < nb; b++) {                                                                                 \
            tile((const uint8_t *)w, row_bytes, b, &t);                                                                \
            int r = 0;                                                                                                 \
            for (; r + 2 <= n; r += 2) {                                                                               \
                const block_q8_K *y[2] = { x + (size_t)r * xs + b, x + (size_t)(r + 1) * xs + b };                     \
                tile_rows2(&t, y, acc + 16 * r);                                                                       \
            }                                                                                                          \
            if (r < n) {                                                                                               \
                const block_q8_K *y[1] = { x + (size_t)r * xs + b };                                                   \
                tile_rows1(&t, y, acc + 16 * r);                                                                       \
            }                                                                                                          \
        }                                                                                                              \
    }

QGEMM16_AVX2(q4k_gemm16_avx2, q4k_tile8, q4k_tile8_rows1, q4k_tile8_rows2)
QGEMM16_AVX2(q6k_gemm16_avx2, q6k_tile8, q6k_tile8_rows1, q6k_tile8_rows2)
#endif

/* ---- activations to Q8_K ---- */

#ifdef SMQ_X86
/* quant.c's q8k_quantize_block, sixteen lanes at a time, with the same
 * result bit for bit: absmax ignoring NaN, d = amax / 127, q = roundf(x / d)
 * (halves away from zero) clamped to +-127, NaN to 0. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) static void q8k_quantize_avx512(const float *x,
                                                                                              block_q8_K *y, int nb)
{
    const __m512 sign = _mm512_set1_ps(-0.0f), half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    for (int b = 0; b < nb; b++, x += QK_K, y++) {
        __m512 mx = _mm512_setzero_ps();
        for (int i = 0; i < QK_K; i += 16) /* max(|x|, mx) keeps mx where x is NaN, as fmaxf */
            mx = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + i)), mx);
        float amax = _mm512_reduce_max_ps(mx);
        y->d = amax / 127;
        float id = y->d ? 1 / y->d : 0.f;
        __m512 idv = _mm512_set1_ps(id);
        for (int g = 0; g < QK_K / 16; g++) {
            __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * g), idv);
            __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __mmask16 up = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_sub_ps(v, t)), half, _CMP_GE_OQ);
            __m512 r = _mm512_mask_add_ps(t, up, t, _mm512_or_ps(_mm512_and_ps(v, sign), one));
            r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), r, _mm512_setzero_ps());
            __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi));
            _mm_storeu_si128((__m128i *)(y->qs + 16 * g), _mm512_cvtepi32_epi8(q));
            y->bsums[g] = (int16_t)_mm512_reduce_add_epi32(q);
        }
    }
}
#endif

void q8k_quantize(const float *x, block_q8_K *y, int nb)
{
#ifdef SMQ_X86
    if (simd_current() >= SIMD_AVX512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
        q8k_quantize_avx512(x, y, nb);
        return;
    }
#endif
    quant_quantize_row(QTYPE_Q8_K, x, y, (uint64_t)nb * QK_K);
}

#ifdef SMQ_X86
/* The AVX-512 kernels need BW, VL and DQ on top of F (every AVX-512 CPU since
 * Skylake-SP has them). */
static int have_avx512(void)
{
    return simd_current() >= SIMD_AVX512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("f16c");
}

static int have_avx2(void)
{
    return simd_current() >= SIMD_AVX2 && __builtin_cpu_supports("f16c");
}
#endif

qdot_fn qdot_for(qtype t)
{
    if (t != QTYPE_Q4_K && t != QTYPE_Q6_K)
        return NULL;
#ifdef SMQ_X86
    if (have_avx512())
        return t == QTYPE_Q4_K ? q4k_dot_avx512 : q6k_dot_avx512;
    if (have_avx2())
        return t == QTYPE_Q4_K ? q4k_dot_avx2 : q6k_dot_avx2;
#endif
    return t == QTYPE_Q4_K ? q4k_dot_scalar : q6k_dot_scalar;
}

qdot_fn qdot_reference(qtype t)
{
    return t == QTYPE_Q4_K ? q4k_dot_scalar : t == QTYPE_Q6_K ? q6k_dot_scalar : NULL;
}

/* From how many rows of x on the sixteen-row kernels beat the four-row ones
 * (qdot_bench, one core in cache): VNNI from 4 (Q4_K 61 against 43 GMAC/s
 * at 4 rows); AVX2 (a 2-core AMD EPYC 7003 VM) Q4_K from 8 (1.25-1.46x at 8
 * rows, 0.92 at 4), Q6_K from 16 (0.8-1.24x at 16, 0.6-0.84 at 8: its
 * unpacking costs more); at 64 rows both 1.8-1.9x. */
qgemm16_fn qgemm16_for(qtype t, uint32_t rows)
{
#ifdef SMQ_X86
    if ((t == QTYPE_Q4_K || t == QTYPE_Q6_K) && have_avx512() && __builtin_cpu_supports("avx512vnni"))
        return rows < 4 ? NULL : t == QTYPE_Q4_K ? q4k_gemm16 : q6k_gemm16;
    if (t == QTYPE_Q4_K && have_avx2())
        return rows < 8 ? NULL : q4k_gemm16_avx2;
    if (t == QTYPE_Q6_K && have_avx2())
        return rows < 16 ? NULL : q6k_gemm16_avx2;
#endif
    (void)t;
    (void)rows;
    return NULL;
}

qdot4_fn qdot4_for(qtype t)
{
    if (t != QTYPE_Q4_K && t != QTYPE_Q6_K)
        return NULL;
#ifdef SMQ_X86
    if (have_avx512())
        return t == QTYPE_Q4_K ? q4k_dot4_avx512 : q6k_dot4_avx512;
    if (have_avx2())
        return t == QTYPE_Q4_K ? q4k_dot4_avx2 : q6k_dot4_avx2;
#endif
    return NULL;
}
