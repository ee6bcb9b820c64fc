/* cpu_ops.c - dot products at three SIMD levels, picked once at run time.
 * Each level is compiled with its own target attribute, so one binary runs
 * on any x86-64 (and the scalar code anywhere). */
#include "cpu_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SMQ_X86 1
#endif

static float dot_scalar(const float *a, const float *b, int n)
{
    /* Four partial sums, as the vector code has lanes: rounding stays close
     * to theirs and the loop pipelines. */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

#ifdef SMQ_X86
__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s0 = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

__attribute__((target("avx512f"), always_inline)) static inline float dot_avx512_body(const float *a, const float *b,
                                                                                      int n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b, int n)
{
    return dot_avx512_body(a, b, n);
}
#endif

/* y[i] += w * x[i], a product then a sum (no fused multiply-add): every
 * level gives the same bits. */
static void axpy_scalar(float *y, float w, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += w * x[i];
}

#ifdef SMQ_X86
__attribute__((target("avx2"))) static void axpy_avx2(float *y, float w, const float *x, int n)
{
    __m256 wv = _mm256_set1_ps(w);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(wv, _mm256_loadu_ps(x + i))));
    for (; i < n; i++)
        y[i] += w * x[i];
}

__attribute__((target("avx512f"), always_inline)) static inline void axpy_avx512_body(float *y, float w, const float *x,
                                                                                      int n)
{
    __m512 wv = _mm512_set1_ps(w);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_mul_ps(wv, _mm512_loadu_ps(x + i))));
    for (; i < n; i++)
        y[i] += w * x[i];
}

__attribute__((target("avx512f"))) static void axpy_avx512(float *y, float w, const float *x, int n)
{
    axpy_avx512_body(y, w, x, n);
}

/* attend_group's two passes over the positions, AVX-512, for head_dim a
 * multiple of 16 (others take the portable loops).
 *
 * Scores: sixteen positions at a time, one head at a time. Each position's
 * dot product runs its FMAs over the head's 16-float chunks in order, and the
 * sixteen sums are then reduced together by a transpose (a fixed tree per
 * lane, about 3 operations per score instead of 8 for one horizontal sum).
 * A lane's result depends only on its own position, so a score is the same
 * whatever n, whatever the other positions and heads. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 reduce16_ps(const __m512 a[16])
{
    __m512 s[8], t[4];
    SMQ_UNROLL(8)
    for (int i = 0; i < 8; i++) /* lane L of s[i]: a[2i] and a[2i+1], two sums each */
        s[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    SMQ_UNROLL(4)
    for (int i = 0; i < 4; i++) /* lane L of t[i]: a[4i..4i+3], one sum each */
        t[i] = _mm512_add_ps(_mm512_shuffle_ps(s[2 * i], s[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(s[2 * i], s[2 * i + 1], 0xEE));
    __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(t[0], t[1], 0x88), _mm512_shuffle_f32x4(t[0], t[1], 0xDD));
    __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(t[2], t[3], 0x88), _mm512_shuffle_f32x4(t[2], t[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(u, v, 0x88), _mm512_shuffle_f32x4(u, v, 0xDD));
}

/* Scores of rows 0..n_rows-1 (row r over positions 0..n0+r-1), sixteen
 * positions at a time: their keys are looked up once and stay in L1 while
 * every row and head of the block takes its dot products with them. */
__attribute__((target("avx512f"))) static void rows_scores_avx512(const float *q, uint64_t q_stride, uint32_t n_rows,
                                                                  uint32_t n_q, const kv_view *kv, uint32_t n0,
                                                                  uint32_t hd, float scale, float *scores)
{
    const __m512 sv = _mm512_set1_ps(scale);
    uint32_t nmax = n0 + n_rows - 1;
    for (uint32_t p0 = 0; p0 < nmax; p0 += 16) {
        uint32_t mmax = nmax - p0 < 16 ? nmax - p0 : 16;
        const float *k[16];
        for (uint32_t i = 0; i < 16; i++) {
            uint32_t p = p0 + (i < mmax ? i : 0); /* past the end: any key, its lane is not stored */
            k[i] = kv->base + kv->pages[p / kv->page_size] * kv->page_stride + (p % kv->page_size) * kv->slot_stride;
        }
        for (uint32_t r = 0; r < n_rows; r++) {
            uint32_t n = n0 + r;
            if (n <= p0)
                continue;
            __mmask16 keep = (__mmask16)((1u << (n - p0 < 16 ? n - p0 : 16)) - 1);
            for (uint32_t h = 0; h < n_q; h++) {
                const float *qh = q + r * q_stride + (uint64_t)h * hd;
                __m512 acc[16];
                SMQ_UNROLL(16)
                for (int i = 0; i < 16; i++)
                    acc[i] = _mm512_mul_ps(_mm512_loadu_ps(qh), _mm512_loadu_ps(k[i]));
                for (uint32_t c = 16; c < hd; c += 16) {
                    __m512 qc = _mm512_loadu_ps(qh + c);
                    SMQ_UNROLL(16)
                    for (int i = 0; i < 16; i++)
                        acc[i] = _mm512_fmadd_ps(qc, _mm512_loadu_ps(k[i] + c), acc[i]);
                }
                _mm512_mask_storeu_ps(scores + ((uint64_t)r * n_q + h) * nmax + p0, keep,
                                      _mm512_mul_ps(reduce16_ps(acc), sv));
            }
        }
    }
}

/* exp(x) for x <= 0 (a softmax's shifted scores), sixteen lanes: x = n ln2
 * + r with |r| <= ln2 / 2 (ln2 in two parts, so r is exact to a few ulp),
 * e^r by its Taylor series to r^7/7! (relative error ~2e-7 over the range),
 * times 2^n by vscalefps (which goes to 0 gracefully below -87). */
__attribute__((target("avx512f"), always_inline)) static inline __m512 exp_neg_avx512(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504f), ln2_hi = _mm512_set1_ps(0.693145752f),
                 ln2_lo = _mm512_set1_ps(1.42860677e-6f);
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f)); /* e^-104 is 0 in float; keeps n finite */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_lo, _mm512_fnmadd_ps(n, ln2_hi, x));
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* gate = silu(gate) * up, sixteen lanes: silu(g) = g * sigmoid(g), with
 * e = e^-|g| (never overflows): sigmoid = 1 / (1 + e) for g >= 0, e / (1 + e)
 * below. */
__attribute__((target("avx512f"))) static void swiglu_avx512(float *gate, const float *up, uint32_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (uint32_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 g = _mm512_maskz_loadu_ps(k, gate + i);
        __m512 e = exp_neg_avx512(_mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(g), sign))); /* e^-|g| */
        __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
        s = _mm512_mask_mul_ps(s, _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ), s, e);
        _mm512_mask_storeu_ps(gate + i, k, _mm512_mul_ps(_mm512_mul_ps(g, s), _mm512_maskz_loadu_ps(k, up + i)));
    }
}

/* softmax of sc[0..n-1] in place, the sum in double (as the portable one) */
__attribute__((target("avx512f"))) static void softmax_avx512(float *sc, uint32_t n)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    uint32_t p = 0;
    for (; p + 16 <= n; p += 16)
        mx = _mm512_max_ps(mx, _mm512_loadu_ps(sc + p));
    __mmask16 tail = (__mmask16)((1u << (n - p)) - 1);
    mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_maskz_loadu_ps(tail, sc + p));
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (p = 0; p < n; p += 16) {
        __mmask16 k = n - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - p)) - 1);
        __m512 e = _mm512_maskz_mov_ps(k, exp_neg_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, sc + p), m)));
        _mm512_mask_storeu_ps(sc + p, k, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    __m512 inv = _mm512_set1_ps((float)(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(s0, s1))));
    for (p = 0; p < n; p += 16) {
        __mmask16 k = n - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - p)) - 1);
        _mm512_mask_storeu_ps(sc + p, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, sc + p), inv));
    }
}

/* Values: positions in blocks of VALUE_BLOCK, whose values stay in L1 while
 * every row of the block takes them. A row's output stays in registers
 * through a block, nc 16-float chunks of nh heads at a time (constants after
 * inlining, so that the accumulators are registers): out = fma(score, v,
 * out) in position order, the same for a head whatever the other heads and
 * rows (a float stored and loaded between blocks is the same float). */
#define VALUE_BLOCK 64

__attribute__((target("avx512f"), always_inline)) static inline void
values_block(const float *scores, const float *const *v, uint32_t np, int first, float *out, uint32_t n, uint32_t hd,
             const int nh, const int nc)
{
    __m512 acc[4][4];
    SMQ_UNROLL(4)
    for (int h = 0; h < nh; h++)
        SMQ_UNROLL(4)
    for (int j = 0; j < nc; j++)
        acc[h][j] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(out + (uint64_t)h * hd + 16 * j);
    for (uint32_t p = 0; p < np; p++) {
        __m512 vv[4];
        SMQ_UNROLL(4) for (int j = 0; j < nc; j++) vv[j] = _mm512_loadu_ps(v[p] + 16 * j);
        SMQ_UNROLL(4) for (int h = 0; h < nh; h++)
        {
            __m512 sc = _mm512_set1_ps(scores[(uint64_t)h * n + p]);
            SMQ_UNROLL(4) for (int j = 0; j < nc; j++) acc[h][j] = _mm512_fmadd_ps(sc, vv[j], acc[h][j]);
        }
    }
    SMQ_UNROLL(4)
    for (int h = 0; h < nh; h++)
        SMQ_UNROLL(4) for (int j = 0; j < nc; j++) _mm512_storeu_ps(out + (uint64_t)h * hd + 16 * j, acc[h][j]);
}

__attribute__((target("avx512f"))) static void rows_values_avx512(const float *scores, uint32_t n_rows, uint32_t n_q,
                                                                  const kv_view *kv, uint32_t n0, uint32_t hd,
                                                                  float *out, uint64_t out_stride)
{
    uint32_t nmax = n0 + n_rows - 1;
    for (uint32_t p0 = 0; p0 < nmax; p0 += VALUE_BLOCK) {
        const float *v[VALUE_BLOCK], *vc[VALUE_BLOCK];
        uint32_t pe = nmax - p0 < VALUE_BLOCK ? nmax : p0 + VALUE_BLOCK;
        for (uint32_t p = p0; p < pe; p++)
            v[p - p0] = kv->base + kv->pages[p / kv->page_size] * kv->page_stride +
                        (p % kv->page_size) * kv->slot_stride + kv->v_offset;
        for (uint32_t r = 0; r < n_rows; r++) {
            uint32_t n = n0 + r;
            if (n <= p0)
                continue;
            uint32_t np = (n < pe ? n : pe) - p0;
            for (uint32_t h0 = 0; h0 < n_q; h0 += 4) {
                uint32_t nh = n_q - h0 < 4 ? n_q - h0 : 4;
                const float *s = scores + ((uint64_t)r * n_q + h0) * nmax + p0;
                for (uint32_t c = 0; c < hd; c += 64) {
                    uint32_t nc = hd - c < 64 ? (hd - c) / 16 : 4;
                    float *o = out + r * out_stride + (uint64_t)h0 * hd + c;
                    for (uint32_t p = 0; p < np; p++)
                        vc[p] = v[p] + c;
                    /* the common shapes get their own code; the rest one chunk at a time */
                    if (nh == 4 && nc == 4) {
                        values_block(s, vc, np, p0 == 0, o, nmax, hd, 4, 4);
                    } else if (nh == 1 && nc == 4) {
                        values_block(s, vc, np, p0 == 0, o, nmax, hd, 1, 4);
                    } else {
                        for (uint32_t h = 0; h < nh; h++)
                            for (uint32_t j = 0; j < nc; j++) {
                                for (uint32_t p = 0; p < np; p++)
                                    vc[p] = v[p] + c + 16 * j;
                                values_block(s + (uint64_t)h * nmax, vc, np, p0 == 0, o + (uint64_t)h * hd + 16 * j,
                                             nmax, hd, 1, 1);
                            }
                    }
                }
            }
        }
    }
}
#endif

/* On the 2-core dev VM one thread reads 10.6 GB/s with 16-byte loads, 13
 * with 32-byte ones and 15.5 with 64-byte ones: the loop must not be the
 * limit of a figure that stands for the memory's. */
#define READ_SUM(name, attr, bytes)                                                                                    \
    attr static uint64_t name(const uint64_t *p, size_t n)                                                             \
    {                                                                                                                  \
        typedef uint64_t v __attribute__((vector_size(bytes)));                                                        \
        enum { W = bytes / 8 };                                                                                        \
        v s0 = { 0 }, s1 = { 0 }, s2 = { 0 }, s3 = { 0 };                                                              \
        size_t i = 0;                                                                                                  \
        for (; i + 4 * W <= n; i += 4 * W) {                                                                           \
            v a, b, c, d;                                                                                              \
            memcpy(&a, p + i, sizeof a);                                                                               \
            memcpy(&b, p + i + W, sizeof b);                                                                           \
            memcpy(&c, p + i + 2 * W, sizeof c);                                                                       \
            memcpy(&d, p + i + 3 * W, sizeof d);                                                                       \
            s0 += a;                                                                                                   \
            s1 += b;                                                                                                   \
            s2 += c;                                                                                                   \
            s3 += d;                                                                                                   \
        }                                                                                                              \
        s0 += s1 + s2 + s3;                                                                                            \
        uint64_t sum = 0;                                                                                              \
        for (int k = 0; k < W; k++)                                                                                    \
            sum += s0[k];                                                                                              \
        for (; i < n; i++)                                                                                             \
            sum += p[i];                                                                                               \
        return sum;                                                                                                    \
    }

#ifdef SMQ_X86
READ_SUM(read_sum_avx512, __attribute__((target("avx512f"))), 64)
READ_SUM(read_sum_avx2, __attribute__((target("avx2"))), 32)
#endif
READ_SUM(read_sum_plain, , 16)

static simd_level level = SIMD_SCALAR;
static int chosen;
static float (*dot_impl)(const float *, const float *, int) = dot_scalar;
static void (*axpy_impl)(float *, float, const float *, int) = axpy_scalar;

simd_level simd_best(void)
{
#ifdef SMQ_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return SIMD_AVX2;
#endif
    return SIMD_SCALAR;
}

int simd_use(simd_level l)
{
    if (l > simd_best())
        return -1;
    level = l;
    chosen = 1;
    dot_impl = dot_scalar;
    axpy_impl = axpy_scalar;
#ifdef SMQ_X86
    if (l == SIMD_AVX2) {
        dot_impl = dot_avx2;
        axpy_impl = axpy_avx2;
    } else if (l == SIMD_AVX512) {
        dot_impl = dot_avx512;
        axpy_impl = axpy_avx512;
    }
#endif
    return 0;
}

/* First use: SMQ_SIMD if set (and supported), else the best. */
static void choose(void)
{
    const char *env = getenv("SMQ_SIMD");
    simd_level l = simd_best();
    if (env && !strcmp(env, "scalar"))
        l = SIMD_SCALAR;
    else if (env && !strcmp(env, "avx2") && l >= SIMD_AVX2)
        l = SIMD_AVX2;
    else if (env && !strcmp(env, "avx512") && l >= SIMD_AVX512)
        l = SIMD_AVX512;
    simd_use(l);
}

simd_level simd_current(void)
{
    if (!chosen)
        choose();
    return level;
}

const char *simd_name(simd_level l)
{
    return l == SIMD_AVX512 ? "avx512" : l == SIMD_AVX2 ? "avx2" : "scalar";
}

float dot_f32(const float *a, const float *b, int n)
{
    if (!chosen)
        choose();
    return dot_impl(a, b, n);
}

void attend_rows(const float *q, uint64_t q_stride, uint32_t n_rows, uint32_t n_q, const kv_view *kv, uint32_t n0,
                 uint32_t head_dim, float scale, float *scores, float *out, uint64_t out_stride)
{
    if (!chosen)
        choose();
    uint32_t nmax = n0 + n_rows - 1; /* row r's scores, head h: scores + (r * n_q + h) * nmax */
#ifdef SMQ_X86
    int wide = level == SIMD_AVX512 && head_dim % 16 == 0;
    if (wide)
        rows_scores_avx512(q, q_stride, n_rows, n_q, kv, n0, head_dim, scale, scores);
    else
#endif
        /* position by position, so that a key is read once for the whole group */
        for (uint32_t r = 0; r < n_rows; r++)
            for (uint32_t p = 0; p < n0 + r; p++) {
                const float *k =
                    kv->base + kv->pages[p / kv->page_size] * kv->page_stride + (p % kv->page_size) * kv->slot_stride;
                for (uint32_t h = 0; h < n_q; h++)
                    scores[((uint64_t)r * n_q + h) * nmax + p] =
                        dot_impl(q + r * q_stride + (uint64_t)h * head_dim, k, (int)head_dim) * scale;
            }
    for (uint32_t r = 0; r < n_rows; r++)
        for (uint32_t h = 0; h < n_q; h++) {
            uint32_t n = n0 + r;
            float *sc = scores + ((uint64_t)r * n_q + h) * nmax, mx = -INFINITY;
#ifdef SMQ_X86
            if (wide) {
                softmax_avx512(sc, n);
                continue;
            }
#endif
            for (uint32_t p = 0; p < n; p++)
                mx = sc[p] > mx ? sc[p] : mx;
            double sum = 0;
            for (uint32_t p = 0; p < n; p++) {
                sc[p] = expf(sc[p] - mx);
                sum += sc[p];
            }
            float inv = (float)(1.0 / sum);
            for (uint32_t p = 0; p < n; p++)
                sc[p] *= inv;
        }
#ifdef SMQ_X86
    if (wide) {
        rows_values_avx512(scores, n_rows, n_q, kv, n0, head_dim, out, out_stride);
        return;
    }
#endif
    for (uint32_t r = 0; r < n_rows; r++) {
        float *o = out + r * out_stride;
        memset(o, 0, (uint64_t)n_q * head_dim * sizeof *o);
        for (uint32_t p = 0; p < n0 + r; p++) {
            const float *v = kv->base + kv->pages[p / kv->page_size] * kv->page_stride +
                             (p % kv->page_size) * kv->slot_stride + kv->v_offset;
            for (uint32_t h = 0; h < n_q; h++)
                axpy_impl(o + (uint64_t)h * head_dim, scores[((uint64_t)r * n_q + h) * nmax + p], v, (int)head_dim);
        }
    }
}

void attend_group(const float *q, uint32_t n_q, const kv_view *kv, uint32_t n, uint32_t head_dim, float scale,
                  float *scores, float *out)
{
    attend_rows(q, 0, 1, n_q, kv, n, head_dim, scale, scores, out, 0);
}

uint64_t read_sum(const void *p, size_t n)
{
    simd_level l = simd_current();
#ifdef SMQ_X86
    if (l == SIMD_AVX512)
        return read_sum_avx512(p, n / 8);
    if (l == SIMD_AVX2)
        return read_sum_avx2(p, n / 8);
#endif
    (void)l;
    return read_sum_plain(p, n / 8);
}

void swiglu(float *gate, const float *up, uint32_t n)
{
    if (!chosen)
        choose();
#ifdef SMQ_X86
    if (level == SIMD_AVX512) {
        swiglu_avx512(gate, up, n);
        return;
    }
#endif
    for (uint32_t i = 0; i < n; i++)
        gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}
