/* quant.c - whole-row dequantization and the quantizers (host only).
 *
 * The weight quantizers (Q4_K, Q6_K, Q8_0) are ggml's reference algorithms,
 * the ones llama-quantize uses without an importance matrix, written with the
 * same float32 operation order so that they reproduce ggml's bytes. The
 * activation formats (Q8_K, Q8_1) are plain absmax quantizers.
 */
#include "quant.h"

#include <math.h>

/* Below this a group counts as all zero (ggml's GROUP_MAX_EPS). */
#define GROUP_EPS 1e-15f

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Round half to even, as the K-quant fits do. The fits keep their arguments
 * small; the guard only keeps NaN and huge values (from inf inputs) defined. */
static int round_even(float x)
{
    if (!(x > -4194304.f && x < 4194304.f))
        return isnan(x) ? 0 : x < 0 ? -4194304 : 4194304;
    return (int)lrintf(x);
}

/* Round half away from zero into -127..127 (ggml's roundf for Q8_0). */
static int8_t q8_round(float x)
{
    if (isnan(x))
        return 0;
    float r = roundf(x);
    return (int8_t)(r < -127.f ? -127 : r > 127.f ? 127 : r);
}

/* ---- the fits ---- */

/* Fits x[i] ~ scale*L[i] - min (L in 0..nmax, min >= 0) for n <= 32 values,
 * minimizing sum w[i]*err[i]^2 (ggml's make_qkx2_quants). Starting from the
 * scale that spans [min(x, 0), max(x)], it tries nstep+1 nearby level counts
 * (nmax + rmin + rdelta*k over the range), takes the least-squares scale and
 * min for each one's levels, and keeps the best. Note that an accepted fit
 * moves `lo`, which the later tries then round against, as ggml does.
 * Returns the scale and stores min in *min_out. */
static float affine_fit(int n, int nmax, const float *x, const float *w, uint8_t *L, float *min_out, float rmin,
                        float rdelta, int nstep)
{
    float lo = x[0], hi = x[0];
    float sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo)
            lo = x[i];
        if (x[i] > hi)
            hi = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (lo > 0)
        lo = 0;
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *min_out = -lo;
        return 0.f;
    }
    float iscale = nmax / (hi - lo);
    float scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_int(round_even(iscale * (x[i] - lo)), 0, nmax);
        float diff = scale * L[i] + lo - x[i];
        best_err += w[i] * (diff * diff);
    }
    uint8_t Laux[32];
    for (int k = 0; k <= nstep; k++) {
        iscale = (rmin + rdelta * k + nmax) / (hi - lo);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(round_even(iscale * (x[i] - lo)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0))
            continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) { /* the format's min is subtracted: fit without one */
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best_err) {
            memcpy(L, Laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            lo = this_min;
        }
    }
    *min_out = -lo;
    return scale;
}

/* Fits x[i] ~ scale*(L[i] - nmax) (L in 0..2*nmax-1) for n values, minimizing
 * sum x[i]^2*err[i]^2 (ggml's make_qx_quants with squared-value weights).
 * The scale is signed so that the value of largest magnitude lands on -nmax,
 * the end with one more level; 18 nearby level counts are tried. */
static float symmetric_fit(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(round_even(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.f;
    float best = scale * sumlx;
    for (int k = -9; k <= 9; k++) {
        if (k == 0)
            continue;
        iscale = -(nmax + 0.1f * k) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(round_even(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        /* sumlx^2/suml2 is the error reduction of this fit: keep the largest */
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clamp_int(round_even(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ---- weight formats ---- */

/* The inverse of q4k_quant: puts level q (0..15) of element i into qs. */
static void q4k_set_quant(block_q4_K *b, int i, int q)
{
    int j = i / 32;
    b->qs[32 * (j / 2) + i % 32] |= (uint8_t)(q << (4 * (j & 1)));
}

/* The inverse of q6k_quant: puts level L (0..63, q + 32) of element i into
 * ql and qh. */
static void q6k_set_quant(block_q6_K *b, int i, int L)
{
    int n = i / 128, k = (i % 128) / 32, l = i % 32;
    b->ql[64 * n + 32 * (k & 1) + l] |= (uint8_t)((L & 0xF) << (k >= 2 ? 4 : 0));
    b->qh[32 * n + l] |= (uint8_t)((L >> 4) << (2 * k));
}

/* Each 32-element sub-block gets an affine fit, weighted toward large values
 * (w = rms + |x|); the eight scales and mins are then quantized to 6 bits
 * against super-block d and dmin (their maxima / 63), and every element is
 * requantized with the scale and min it will actually be read back with. */
static void q4k_quantize_block(const float *x, block_q4_K *b)
{
    uint8_t L[QK_K];
    float scales[QK_K / 32], mins[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        float w[32];
        for (int l = 0; l < 32; l++)
            w[l] = av_x + fabsf(xs[l]);
        scales[j] = affine_fit(32, 15, xs, w, L + 32 * j, &mins[j], -1.f, 0.1f, 20);
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }

    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(b, 0, sizeof *b);
    for (int j = 0; j < QK_K / 32; j++) {
        int ls = clamp_int(round_even(inv_scale * scales[j]), 0, 63);
        int lm = clamp_int(round_even(inv_min * mins[j]), 0, 63);
        q4k_pack_scale_min(j, (uint8_t)ls, (uint8_t)lm, b->scales);
    }
    b->d = f32_to_fp16(max_scale / 63.f);
    b->dmin = f32_to_fp16(max_min / 63.f);

    for (int j = 0; j < QK_K / 32; j++) {
        float d1, m1;
        q4k_sub_scale(b->d, b->dmin, b->scales, j, &d1, &m1);
        if (d1 == 0) /* every level reads back as -m1: keep the fit's */
            continue;
        for (int i = 32 * j; i < 32 * j + 32; i++)
            L[i] = (uint8_t)clamp_int(round_even((x[i] + m1) / d1), 0, 15);
    }
    for (int i = 0; i < QK_K; i++)
        q4k_set_quant(b, i, L[i]);
}

/* Each 16-element sub-block gets a signed scale fit; the sixteen scales are
 * quantized to 8 bits against d, chosen so that the largest lands on -128,
 * and every element is requantized with its final scale d*scales[j]. */
static void q6k_quantize_block(const float *x, block_q6_K *b)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0;
    for (int j = 0; j < QK_K / 16; j++) {
        scales[j] = symmetric_fit(16, 32, x + 16 * j, L + 16 * j);
        if (fabsf(scales[j]) > max_abs_scale) {
            max_abs_scale = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    memset(b, 0, sizeof *b);
    if (max_abs_scale < GROUP_EPS)
        return; /* all zero: d = 0 */

    float iscale = -128.f / max_scale;
    b->d = f32_to_fp16(1 / iscale);
    for (int j = 0; j < QK_K / 16; j++)
        b->scales[j] = (int8_t)clamp_int(round_even(iscale * scales[j]), -128, 127);

    for (int j = 0; j < QK_K / 16; j++) {
        float d = qmul(fp16_to_f32(b->d), (float)b->scales[j]);
        if (d == 0)
            continue;
        for (int i = 16 * j; i < 16 * j + 16; i++)
            L[i] = (int8_t)(clamp_int(round_even(x[i] / d), -32, 31) + 32);
    }
    for (int i = 0; i < QK_K; i++)
        q6k_set_quant(b, i, L[i]);
}

/* d = amax/127 (rounded to fp16 for storage; the quants use the exact one,
 * as ggml does). */
static void q80_quantize_block(const float *x, block_q8_0 *b)
{
    float amax = 0;
    for (int i = 0; i < QK8_0; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127;
    float id = d ? 1 / d : 0.f;
    b->d = f32_to_fp16(d);
    for (int i = 0; i < QK8_0; i++)
        b->qs[i] = q8_round(x[i] * id);
}

/* ---- activation formats ---- */

/* The quants use the fp16-rounded d they will be read back with, so that the
 * error stays within d/2. d is capped at fp16's largest finite value. */
static void q81_quantize_block(const float *x, block_q8_1 *b)
{
    float amax = 0;
    for (int i = 0; i < QK8_1; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = fminf(amax / 127, 65504.f);
    b->d = f32_to_fp16(d);
    d = fp16_to_f32(b->d);
    float id = d ? 1 / d : 0.f;
    int sum = 0;
    for (int i = 0; i < QK8_1; i++) {
        b->qs[i] = q8_round(x[i] * id);
        sum += b->qs[i];
    }
    b->s = f32_to_fp16(d * (float)sum);
}

static void q8k_quantize_block(const float *x, block_q8_K *b)
{
    float amax = 0;
    for (int i = 0; i < QK_K; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    b->d = amax / 127;
    float id = b->d ? 1 / b->d : 0.f;
    for (int i = 0; i < QK_K; i++)
        b->qs[i] = q8_round(x[i] * id);
    for (int j = 0; j < QK_K / 16; j++) {
        int sum = 0;
        for (int i = 16 * j; i < 16 * j + 16; i++)
            sum += b->qs[i];
        b->bsums[j] = (int16_t)sum; /* |sum| <= 16*127 */
    }
}

/* ---- rows ---- */

int quant_can_dequant(qtype t)
{
    switch (t) {
    case QTYPE_F32:
    case QTYPE_F16:
    case QTYPE_BF16:
    case QTYPE_Q8_0:
    case QTYPE_Q8_1:
    case QTYPE_Q4_K:
    case QTYPE_Q5_K:
    case QTYPE_Q6_K:
    case QTYPE_Q8_K:
        return 1;
    default:
        return 0;
    }
}

int quant_dequant_row(qtype t, const void *src, float *dst, uint64_t n)
{
    if (!quant_can_dequant(t) || n % qtype_table[t].block_elems != 0)
        return -1;
    uint64_t nb = n / qtype_table[t].block_elems;
    switch (t) {
    case QTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case QTYPE_F16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = fp16_to_f32(((const uint16_t *)src)[i]);
        break;
    case QTYPE_BF16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case QTYPE_Q8_0:
        for (uint64_t i = 0; i < nb; i++)
            dequant_block_q8_0((const block_q8_0 *)src + i, dst + i * QK8_0);
        break;
    case QTYPE_Q8_1:
        for (uint64_t i = 0; i < nb; i++)
            dequant_block_q8_1((const block_q8_1 *)src + i, dst + i * QK8_1);
        break;
    case QTYPE_Q4_K:
        for (uint64_t i = 0; i < nb; i++)
            dequant_block_q4_K((const block_q4_K *)src + i, dst + i * QK_K);
        break;
    case QTYPE_Q5_K:
        for (uint64_t i = 0; i < nb; i++)
            dequant_block_q5_K((const block_q5_K *)src + i, dst + i * QK_K);
        break;
    case QTYPE_Q6_K:
        for (uint64_t i = 0; i < nb; i++)
            dequant_block_q6_K((const block_q6_K *)src + i, dst + i * QK_K);
        break;
    case QTYPE_Q8_K:
        for (uint64_t i = 0; i < nb; i++)
            dequant_block_q8_K((const block_q8_K *)src + i, dst + i * QK_K);
        break;
    default:
        return -1;
    }
    return 0;
}

int quant_can_quantize(qtype t)
{
    switch (t) {
    case QTYPE_F32:
    case QTYPE_F16:
    case QTYPE_BF16:
    case QTYPE_Q8_0:
    case QTYPE_Q8_1:
    case QTYPE_Q4_K:
    case QTYPE_Q6_K:
    case QTYPE_Q8_K:
        return 1;
    default:
        return 0;
    }
}

int quant_quantize_row(qtype t, const float *src, void *dst, uint64_t n)
{
    if (!quant_can_quantize(t) || n % qtype_table[t].block_elems != 0)
        return -1;
    uint64_t nb = n / qtype_table[t].block_elems;
    switch (t) {
    case QTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case QTYPE_F16:
        for (uint64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = f32_to_fp16(src[i]);
        break;
    case QTYPE_BF16:
        for (uint64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = f32_to_bf16(src[i]);
        break;
    case QTYPE_Q8_0:
        for (uint64_t i = 0; i < nb; i++)
            q80_quantize_block(src + i * QK8_0, (block_q8_0 *)dst + i);
        break;
    case QTYPE_Q8_1:
        for (uint64_t i = 0; i < nb; i++)
            q81_quantize_block(src + i * QK8_1, (block_q8_1 *)dst + i);
        break;
    case QTYPE_Q4_K:
        for (uint64_t i = 0; i < nb; i++)
            q4k_quantize_block(src + i * QK_K, (block_q4_K *)dst + i);
        break;
    case QTYPE_Q6_K:
        for (uint64_t i = 0; i < nb; i++)
            q6k_quantize_block(src + i * QK_K, (block_q6_K *)dst + i);
        break;
    case QTYPE_Q8_K:
        for (uint64_t i = 0; i < nb; i++)
            q8k_quantize_block(src + i * QK_K, (block_q8_K *)dst + i);
        break;
    default:
        return -1;
    }
    return 0;
}
