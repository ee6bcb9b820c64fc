/* fwd_kernels.cu - the fused kernels of the CUDA forward pass; see
 * fwd_kernels.h for the step they make up, qdot.cuh for the products.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <type_traits>

#include "fwd_kernels.h"
#include "launch.cuh"
#include "qdot.cuh"
#include "quant.h"

#define MV_WARPS     8 /* warps per thread block of the fused products */
#define ATT_WARPS    8 /* warps per attention block */
#define ATT_PPW      8 /* positions a warp scores at a time, 4 lanes each */
#define MAX_PER_LANE 8 /* head_dim / 32 values of a head a lane holds (head_dim <= 256) */
#define MAX_GRID_Y   65535u

/* ---- embedding ---- */

/* Element i of an embedding row, as quant_dequant_row gives it (K-quant
 * blocks block_bytes apart). */
__device__ static float embd_value(qtype type, const uint8_t *row, uint32_t block_bytes, uint32_t i)
{
    const uint8_t *blk = row + (uint64_t)(i / QK_K) * block_bytes;
    switch (type) {
    case QTYPE_Q4_K:
        return q4k_value((const block_q4_K *)blk, (int)(i % QK_K));
    case QTYPE_Q5_K:
        return q5k_value((const block_q5_K *)blk, (int)(i % QK_K));
    case QTYPE_Q6_K:
        return q6k_value((const block_q6_K *)blk, (int)(i % QK_K));
    case QTYPE_Q8_0:
        return q80_value((const block_q8_0 *)row + i / QK8_0, (int)(i % QK8_0));
    case QTYPE_F16:
        return fp16_to_f32(((const uint16_t *)row)[i]);
    case QTYPE_BF16:
        return bf16_to_f32(((const uint16_t *)row)[i]);
    case QTYPE_F32:
        return ((const float *)row)[i];
    default: /* create() admits no other type */
        return 0.f;
    }
}

__global__ static void embed_kernel(qtype type, const uint8_t *__restrict__ embd, uint64_t row_bytes,
                                    uint32_t block_bytes, const int32_t *__restrict__ tokens, float *__restrict__ x,
                                    uint32_t n_embd)
{
    const uint8_t *row = embd + (uint64_t)tokens[blockIdx.x] * row_bytes;
    float *out = x + (uint64_t)blockIdx.x * n_embd;
#pragma unroll 8
    for (uint32_t i = threadIdx.x; i < n_embd; i += blockDim.x)
        out[i] = embd_value(type, row, block_bytes, i);
}

int fwd_embed(qtype type, const uint8_t *embd, uint64_t row_bytes, uint32_t block_bytes, const int32_t *tokens,
              float *x, uint32_t n_embd, uint32_t rows, void *stream, smq_err *err)
{
    launch_plain(embed_kernel, rows, 256, 0, (cudaStream_t)stream, type, embd, row_bytes, block_bytes, tokens, x,
                 n_embd);
    LAUNCH_CHECK("embed");
    return 0;
}

/* ---- q, k, v with RoPE, k and v into the cache ---- */

/* The pair (v0, v1) rotated by (c, s), rounded as the CPU rounds it. */
__device__ static void rotate_pair(float *v0, float *v1, float c, float s)
{
    float x0 = *v0, x1 = *v1;
    *v0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    *v1 = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

/* The products (o0, o1) of rows li, li + 1 of segment seg (0 q, 1 k, 2 v)
 * for activation row r: q and k rotated (RoPE NORM on a head's first n_rot
 * dims) when use_rope, q into its float row (of q_rows), k and v into the
 * row's KV slot as fp16. */
__device__ static void store_qkv_pair(int seg, uint32_t li, float o0, float o1, uint32_t r, const fwd_dims &d,
                                      int use_rope, const fwd_meta &m, uint32_t q_rows, float *q, __half *kv_layer)
{
    uint32_t pair = (li % d.head_dim) / 2, kv_dim = d.n_head_kv * d.head_dim;
    if (use_rope && seg < 2 && 2 * pair < d.n_rot) {
        const float *cs = m.rope + (uint64_t)r * d.n_rot;
        rotate_pair(&o0, &o1, cs[2 * pair], cs[2 * pair + 1]);
    }
    if (seg == 0) {
        q[(uint64_t)r * q_rows + li] = o0;
        q[(uint64_t)r * q_rows + li + 1] = o1;
        return;
    }
    uint32_t pos = m.row_pos[r];
    uint64_t page = m.pages[m.row_table[r] + pos / d.page_size];
    __half *slot = kv_layer + (page * d.page_size + pos % d.page_size) * 2 * kv_dim + (seg == 2 ? kv_dim : 0);
    slot[li] = __float2half_rn(o0);
    slot[li + 1] = __float2half_rn(o1);
}

typedef struct qkv_args {
    const uint8_t *w[3]; /* q, k, v */
    uint64_t row_bytes[3];
    qtype type[3];
    uint32_t rows[3];
} qkv_args;

/* A warp per pair of rows (2p, 2p+1) of [Wq; Wk; Wv]: the pair RoPE rotates
 * together, so the warp rotates it and stores it (q as float, k and v into
 * the row's KV slot as fp16). blockIdx.y: the activation row. pf: the pair
 * prefetched into L2 before the kernel waits (launch.cuh). */
__global__ static void __launch_bounds__(32 * MV_WARPS)
    qkv_rope_kernel(const __grid_constant__ qkv_args w, const uint8_t *__restrict__ act, fwd_dims d, int use_rope,
                    fwd_meta m, float *__restrict__ q, __half *__restrict__ kv_layer, int pf)
{
    uint32_t i = 2 * (blockIdx.x * MV_WARPS + threadIdx.x / 32), r = blockIdx.y;
    int seg = i < w.rows[0] ? 0 : i < w.rows[0] + w.rows[1] ? 1 : 2;
    uint32_t li = i - (seg > 0 ? w.rows[0] : 0) - (seg > 1 ? w.rows[1] : 0);
    bool mine = seg < 2 || li < w.rows[2];
    if (pf && r == 0 && mine)
        prefetch_l2(w.w[seg] + li * w.row_bytes[seg], 2 * w.row_bytes[seg], threadIdx.x % 32);
    grid_wait();
    grid_release();
    if (!mine)
        return;
    const uint8_t *wr[2] = { w.w[seg] + li * w.row_bytes[seg], w.w[seg] + (li + 1) * w.row_bytes[seg] };
    float o[2];
    warp_dots_any<2>(w.type[seg], wr, d.n_embd / QK_K, q16_at(act + r * q16_row_bytes(d.n_embd), d.n_embd), o);
    if (threadIdx.x % 32 == 0)
        store_qkv_pair(seg, li, o[0], o[1], r, d, use_rope, m, w.rows[0], q, kv_layer);
}

int fwd_qkv_rope(const dev_mat *wq, const dev_mat *wk, const dev_mat *wv, const uint8_t *act, uint32_t rows,
                 const fwd_dims *d, int use_rope, const fwd_meta *m, float *q, __half *kv_layer, void *stream,
                 smq_err *err)
{
    qkv_args w;
    const dev_mat *mats[3] = { wq, wk, wv };
    for (int s = 0; s < 3; s++) {
        w.w[s] = mats[s]->d;
        w.row_bytes[s] = mats[s]->row_bytes;
        w.type[s] = mats[s]->type;
        w.rows[s] = (uint32_t)mats[s]->ne1;
    }
    uint32_t pairs = (w.rows[0] + w.rows[1] + w.rows[2]) / 2;
    for (uint32_t r0 = 0; r0 < rows; r0 += MAX_GRID_Y) {
        uint32_t n = rows - r0 < MAX_GRID_Y ? rows - r0 : MAX_GRID_Y;
        fwd_meta mr = *m;
        mr.row_pos += r0;
        mr.row_table += r0;
        mr.rope += (uint64_t)r0 * d->n_rot;
        cudaError_t e = pdl_launch(qkv_rope_kernel, dim3((pairs + MV_WARPS - 1) / MV_WARPS, n), dim3(32 * MV_WARPS), 0,
                                   (cudaStream_t)stream, w, act + r0 * q16_row_bytes(d->n_embd), *d, use_rope, mr,
                                   q + (uint64_t)r0 * w.rows[0], kv_layer, (int)prefetch_on());
        PDL_CHECK(e, "qkv_rope");
    }
    return 0;
}

/* The same from products already made (gemm.h): y[r] holds row r's q, k
 * and v (q_rows + 2 kv_dim floats); a thread per pair, blockIdx.x the row. */
__global__ static void qkv_store_kernel(const float *__restrict__ y, uint32_t q_rows, fwd_dims d, int use_rope,
                                        fwd_meta m, float *__restrict__ q, __half *__restrict__ kv_layer)
{
    uint32_t r = blockIdx.x, kv_dim = d.n_head_kv * d.head_dim, width = q_rows + 2 * kv_dim;
    const float *yr = y + (uint64_t)r * width;
    for (uint32_t i = 2 * threadIdx.x; i < width; i += 2 * blockDim.x) {
        int seg = i < q_rows ? 0 : i < q_rows + kv_dim ? 1 : 2;
        uint32_t li = i - (seg > 0 ? q_rows : 0) - (seg > 1 ? kv_dim : 0);
        store_qkv_pair(seg, li, yr[i], yr[i + 1], r, d, use_rope, m, q_rows, q, kv_layer);
    }
}

int fwd_qkv_store(const float *y, uint32_t rows, const fwd_dims *d, int use_rope, const fwd_meta *m, float *q,
                  __half *kv_layer, void *stream, smq_err *err)
{
    if (rows == 0)
        return 0;
    uint32_t q_rows = d->n_head * d->head_dim;
    launch_plain(qkv_store_kernel, rows, 256, 0, (cudaStream_t)stream, y, q_rows, *d, use_rope, *m, q, kv_layer);
    LAUNCH_CHECK("qkv_store");
    return 0;
}

/* ---- attention ---- */

/* A head's merge of its n_split split-K slots (max m, sum l, values; slot
 * s at slot0 + s * step): wt[s] = exp(m_s - M) for M the largest m_s, and
 * the merged sum of l_s wt[s] (returned), in split order. One thread, once
 * per head; the head's dims then take merge_dim. Coherent loads: other
 * blocks of this launch may have written the slots. */
__device__ static float split_weights(const float *slot0, uint64_t step, uint32_t n_split, float *wt)
{
    float M = __ldcg(slot0);
    for (uint32_t s = 1; s < n_split; s++)
        M = fmaxf(M, __ldcg(slot0 + s * step));
    float L = 0.f;
    for (uint32_t s = 0; s < n_split; s++) {
        const float *sl = slot0 + s * step;
        float w = expf(__ldcg(sl) - M);
        wt[s] = w;
        L += __ldcg(sl + 1) * w;
    }
    return L;
}

/* Dim i of the head merged: its values weighed by wt, in split order, over L. */
__device__ static float merge_dim(const float *slot0, uint64_t step, uint32_t n_split, const float *wt, float L,
                                  uint32_t i)
{
    float O = 0.f;
    for (uint32_t s = 0; s < n_split; s++)
        O += __ldcg(slot0 + s * step + 2 + i) * wt[s];
    return O / L;
}

__device__ static inline __half2 half_zero(__half2)
{
    return __float2half2_rn(0.f);
}

__device__ static inline __half half_zero(__half)
{
    return __float2half(0.f);
}

/* One split of one row's attention for the query heads of KV group g
 * (blockIdx: row, group, split). Warp w takes the split's positions in
 * chunks of ATT_PPW = 8, w, w + ATT_WARPS, ...: 4 lanes score a position
 * against every head of the group (one read of the key for all of them,
 * a lane the 16-byte pieces sub, sub + 4, ... of it, so that the 4 lanes
 * read 64 contiguous bytes at a time), the chunk's softmax weights go to an
 * online softmax per head (running max m, sum l), and the values are
 * summed with a lane per head_dim/32 dims; a chunk's keys and values are
 * loaded together, before any arithmetic (a long context is a stream of
 * such chunks, and its speed the bytes a warp keeps in flight). Short chunks
 * keep a warp's chain of dependent steps short and spread a short context
 * over many warps. The warps' states merge in a fixed order; a row of one
 * split quantizes its heads' output here, others leave (max, sum, values)
 * per head in their slot of part, and with count the last of a group's
 * splits to finish merges them (split_weights, merge_dim) and quantizes. */
template <int PER>
__global__ static void __launch_bounds__(32 * ATT_WARPS, 2)
    attention_kernel(const float *__restrict__ q, const __half *__restrict__ kv_layer, fwd_dims d, fwd_meta m,
                     float *part, uint32_t *count, uint8_t *__restrict__ out, float scale)
{
    enum { HD = 32 * PER, LPP = 32 / ATT_PPW }; /* lanes per position; a lane's key pieces: PER of 16 bytes */
    __shared__ float qs[ATT_MAX_GROUP_DIMS];
    __shared__ float sm_m[ATT_WARPS][ATT_MAX_GROUP], sm_l[ATT_WARPS][ATT_MAX_GROUP];
    __shared__ float sm_o[ATT_WARPS][ATT_MAX_GROUP_DIMS], fin[ATT_MAX_GROUP_DIMS];
    uint32_t r = blockIdx.x, g = blockIdx.y, s = blockIdx.z, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    grid_wait(); /* launch.cuh */
    grid_release();
    uint32_t n_ctx = m.row_pos[r] + 1, len = att_split_len(n_ctx), n_split = att_splits(n_ctx);
    if (s >= n_split)
        return;
    const uint32_t hd = HD, per = PER, sub = lane % LPP;
    uint32_t G = d.n_head / d.n_head_kv, kv_dim = d.n_head_kv * hd;
    uint32_t gd = G * hd, start = s * len, end = min(start + len, n_ctx);
    const float *qg = q + ((uint64_t)r * d.n_head + g * G) * hd;
    for (uint32_t i = threadIdx.x; i < gd; i += blockDim.x)
        qs[i] = qg[i];
    __syncthreads();
    const uint32_t *table = m.pages + m.row_table[r];

    float mx[ATT_MAX_GROUP], l[ATT_MAX_GROUP], acc[ATT_MAX_GROUP][PER];
#pragma unroll
    for (int j = 0; j < ATT_MAX_GROUP; j++) {
        mx[j] = -INFINITY;
        l[j] = 0.f;
#pragma unroll
        for (int e = 0; e < PER; e++)
            acc[j][e] = 0.f;
    }
    for (uint32_t c0 = start + ATT_PPW * warp; c0 < end; c0 += ATT_PPW * ATT_WARPS) {
        uint32_t t = c0 + lane / LPP, nv = min((uint32_t)ATT_PPW, end - c0);
        /* the lane's position's slot in the pool, shared below for the values */
        uint32_t slot = t < end ? table[t / d.page_size] * d.page_size + t % d.page_size : 0;
        /* the key pieces, then the values (lane: dims lane*per .. + per - 1
         * of each of the chunk's positions), all in flight at once */
        uint4 raw[PER];
        if (t < end) {
            const uint4 *key = (const uint4 *)(kv_layer + (uint64_t)slot * 2 * kv_dim + (uint64_t)g * hd);
#pragma unroll
            for (int k = 0; k < PER; k++)
                raw[k] = __ldg(key + sub + LPP * k);
        }
        /* kept as fp16 until the weights are known: half the registers */
        typedef typename std::conditional<PER % 2 == 0, __half2, __half>::type vtype;
        enum { VN = PER % 2 == 0 ? PER / 2 : PER };
        vtype vh[ATT_PPW][VN];
#pragma unroll
        for (int u = 0; u < ATT_PPW; u++) {
            uint32_t su = __shfl_sync(0xffffffffu, slot, LPP * u);
            const vtype *val =
                (const vtype *)(kv_layer + (uint64_t)su * 2 * kv_dim + kv_dim + (uint64_t)g * hd + lane * per);
#pragma unroll
            for (int e = 0; e < VN; e++)
                vh[u][e] = (uint32_t)u < nv ? __ldg(val + e) : half_zero(vtype()); /* 0 weight x NaN: NaN */
        }
        float sc[ATT_MAX_GROUP];
#pragma unroll
        for (int j = 0; j < ATT_MAX_GROUP; j++)
            sc[j] = 0.f;
        if (t < end) {
#pragma unroll
            for (int k = 0; k < PER; k++) {
                const __half2 *h2 = (const __half2 *)&raw[k];
                float kf[8];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 f = __half22float2(h2[i]);
                    kf[2 * i] = f.x;
                    kf[2 * i + 1] = f.y;
                }
                const float *qk = qs + 8 * (sub + LPP * k);
#pragma unroll
                for (int j = 0; j < ATT_MAX_GROUP; j++)
                    if (j < (int)G)
#pragma unroll
                        for (int i = 0; i < 8; i++)
                            sc[j] += qk[j * hd + i] * kf[i];
            }
        }
        /* the position's score from its 4 lanes, then the chunk's softmax
         * weights per head (every lane of a position holds its weight) */
        float p[ATT_MAX_GROUP];
#pragma unroll
        for (int j = 0; j < ATT_MAX_GROUP; j++) {
            p[j] = 0.f;
            if (j >= (int)G)
                continue;
#pragma unroll
            for (int o = 1; o < LPP; o <<= 1)
                sc[j] += __shfl_xor_sync(0xffffffffu, sc[j], o);
            float sj = t < end ? sc[j] * scale : -INFINITY, cmax = sj;
#pragma unroll
            for (int o = LPP; o < 32; o <<= 1)
                cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffffu, cmax, o));
            float m_new = fmaxf(mx[j], cmax);
            float corr = expf(mx[j] - m_new);
            p[j] = t < end ? expf(sj - m_new) : 0.f;
            float ps = p[j];
#pragma unroll
            for (int o = LPP; o < 32; o <<= 1)
                ps += __shfl_xor_sync(0xffffffffu, ps, o);
            l[j] = l[j] * corr + ps;
#pragma unroll
            for (int e = 0; e < PER; e++)
                acc[j][e] *= corr;
            mx[j] = m_new;
        }
#pragma unroll
        for (int u = 0; u < ATT_PPW; u++)
#pragma unroll
            for (int j = 0; j < ATT_MAX_GROUP; j++) {
                if (j >= (int)G)
                    continue;
                float pu = __shfl_sync(0xffffffffu, p[j], LPP * u);
#pragma unroll
                for (int e = 0; e < VN; e++) {
                    if constexpr (PER % 2 == 0) {
                        float2 f = __half22float2(vh[u][e]);
                        acc[j][2 * e] += pu * f.x;
                        acc[j][2 * e + 1] += pu * f.y;
                    } else {
                        acc[j][e] += pu * __half2float(vh[u][e]);
                    }
                }
            }
    }
#pragma unroll
    for (int j = 0; j < ATT_MAX_GROUP; j++) {
        if (j >= (int)G)
            continue;
        if (lane == 0) {
            sm_m[warp][j] = mx[j];
            sm_l[warp][j] = l[j];
        }
#pragma unroll
        for (int e = 0; e < PER; e++)
            sm_o[warp][j * hd + lane * per + e] = acc[j][e];
    }
    __syncthreads();
    /* Merge the warps (warp 0 has position start, so the max is finite; a
     * warp without positions weighs exp(-inf) = 0). */
    for (uint32_t i = threadIdx.x; i < gd; i += blockDim.x) {
        uint32_t j = i / hd;
        float M = sm_m[0][j];
        for (int w = 1; w < ATT_WARPS; w++)
            M = fmaxf(M, sm_m[w][j]);
        float L = 0.f, O = 0.f;
        for (int w = 0; w < ATT_WARPS; w++) {
            float wt = expf(sm_m[w][j] - M);
            L += sm_l[w][j] * wt;
            O += sm_o[w][i] * wt;
        }
        if (n_split == 1) {
            fin[i] = O / L;
        } else {
            float *slot = part + ((uint64_t)(m.row_part[r] + s) * d.n_head + g * G + j) * (hd + 2);
            if (i % hd == 0) {
                slot[0] = M;
                slot[1] = L;
            }
            slot[2 + i % hd] = O;
        }
    }
    if (n_split > 1) {
        __shared__ bool last;
        if (!count)
            return;
        __threadfence(); /* this split's slots, visible before it is counted */
        __syncthreads();
        if (threadIdx.x == 0)
            last = atomicAdd(&count[r * d.n_head_kv + g], 1u) == n_split - 1;
        __syncthreads();
        if (!last)
            return;
        __threadfence();
        if (threadIdx.x == 0)
            count[r * d.n_head_kv + g] = 0;
        __shared__ float wt[ATT_MAX_GROUP][ATT_MAX_SPLITS], L[ATT_MAX_GROUP];
        uint64_t step = att_slot_floats(&d);
        const float *slot0 = part + ((uint64_t)m.row_part[r] * d.n_head + g * G) * (hd + 2);
        if (threadIdx.x < G)
            L[threadIdx.x] = split_weights(slot0 + threadIdx.x * (hd + 2), step, n_split, wt[threadIdx.x]);
        __syncthreads();
        for (uint32_t i = threadIdx.x; i < gd; i += blockDim.x)
            fin[i] = merge_dim(slot0 + (i / hd) * (hd + 2), step, n_split, wt[i / hd], L[i / hd], i % hd);
    }
    __syncthreads();
    q16_view a = q16_at(out + (uint64_t)r * q16_row_bytes((uint64_t)d.n_head * hd), d.n_head * hd);
    for (uint32_t grp = warp; grp < gd / 32; grp += ATT_WARPS)
        q16_store_group(a, (g * gd) / 32 + grp, fin[32 * grp + lane], lane);
}

/* Rows of several splits: head blockIdx.y of row blockIdx.x merged from its
 * splits' slots in split order, and quantized. */
__global__ static void attention_merge_kernel(fwd_dims d, fwd_meta m, const float *__restrict__ part,
                                              uint8_t *__restrict__ out)
{
    __shared__ float fin[32 * MAX_PER_LANE];
    uint32_t r = blockIdx.x, h = blockIdx.y, hd = d.head_dim;
    grid_wait();
    grid_release();
    uint32_t n_split = att_splits(m.row_pos[r] + 1);
    if (n_split == 1)
        return;
    __shared__ float wt[ATT_MAX_SPLITS], L;
    const float *slot0 = part + ((uint64_t)m.row_part[r] * d.n_head + h) * (hd + 2);
    uint64_t step = att_slot_floats(&d);
    if (threadIdx.x == 0)
        L = split_weights(slot0, step, n_split, wt);
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < hd; i += blockDim.x)
        fin[i] = merge_dim(slot0, step, n_split, wt, L, i);
    __syncthreads();
    q16_view a = q16_at(out + (uint64_t)r * q16_row_bytes((uint64_t)d.n_head * hd), d.n_head * hd);
    unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (uint32_t grp = warp; grp < hd / 32; grp += blockDim.x / 32)
        q16_store_group(a, (h * hd) / 32 + grp, fin[32 * grp + lane], lane);
}

int fwd_attention(const float *q, const __half *kv_layer, uint32_t r0, uint32_t rows, uint32_t max_splits,
                  const fwd_dims *d, const fwd_meta *m, float *part, uint32_t *count, uint8_t *out, void *stream,
                  smq_err *err)
{
    cudaStream_t s = (cudaStream_t)stream;
    float scale = 1.0f / sqrtf((float)d->head_dim);
    uint64_t out_row = q16_row_bytes((uint64_t)d->n_head * d->head_dim);
    for (uint32_t a = 0; a < rows; a += MAX_GRID_Y) {
        uint32_t n = rows - a < MAX_GRID_Y ? rows - a : MAX_GRID_Y, r = r0 + a;
        fwd_meta mr = *m;
        mr.row_pos += r;
        mr.row_table += r;
        mr.row_part += r;
        const float *qr = q + (uint64_t)r * d->n_head * d->head_dim;
        dim3 grid(n, d->n_head_kv, max_splits);
        uint8_t *o = out + r * out_row;
        uint32_t *c = count ? count + (uint64_t)r * d->n_head_kv : NULL;
        /* create() admits head_dim 32 .. 256 in steps of 32 */
        static void (*const kernels[8])(const float *, const __half *, fwd_dims, fwd_meta, float *, uint32_t *,
                                        uint8_t *, float) = {
            attention_kernel<1>, attention_kernel<2>, attention_kernel<3>, attention_kernel<4>,
            attention_kernel<5>, attention_kernel<6>, attention_kernel<7>, attention_kernel<8>,
        };
        uint32_t per = d->head_dim / 32;
        cudaError_t e = pdl_launch(kernels[per >= 1 && per <= 8 ? per - 1 : 7], grid, dim3(32 * ATT_WARPS), 0, s, qr,
                                   kv_layer, *d, mr, part, c, o, scale);
        PDL_CHECK(e, "attention");
        if (max_splits > 1 && !count) {
            e = pdl_launch(attention_merge_kernel, dim3(n, d->n_head), dim3(128), 0, s, *d, mr, (const float *)part,
                           out + r * out_row);
            PDL_CHECK(e, "attention_merge");
        }
    }
    return 0;
}

/* ---- SwiGLU ---- */

/* silu(g) * up, as the CPU computes it. */
__device__ static inline float swiglu(float g, float up)
{
    return __fmul_rn(g / (1.0f + expf(-g)), up);
}

/* Block b takes 32 rows of Wgate and Wup (one q16 group of the output), a
 * warp 4 of them, the 8 products with their loads in flight together:
 * silu(gate) * up as the CPU computes it, then the group is quantized.
 * blockIdx.y: the activation row. Three blocks a multiprocessor (80
 * registers, a few spilled) run the 344 blocks of n_ff = 11008 in one wave
 * on an H100 instead of two: 23.2 -> 18.8 us a launch. pf: the block's 32
 * rows of each prefetched into L2 before it waits (launch.cuh). */
__global__ static void __launch_bounds__(32 * MV_WARPS, 3)
    gate_up_kernel(const uint8_t *__restrict__ wg, const uint8_t *__restrict__ wu, qtype tg, qtype tu,
                   uint64_t row_bytes_g, uint64_t row_bytes_u, const uint8_t *__restrict__ act, uint32_t n_embd,
                   uint32_t n_ff, uint8_t *__restrict__ act_ff, int pf)
{
    enum { PER_WARP = 32 / MV_WARPS };
    __shared__ float h[32];
    uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = blockIdx.y;
    if (pf && r == 0 && warp < 2)
        prefetch_l2(warp ? wu + 32 * blockIdx.x * row_bytes_u : wg + 32 * blockIdx.x * row_bytes_g,
                    32 * (warp ? row_bytes_u : row_bytes_g), lane);
    grid_wait();
    grid_release();
    q16_view a = q16_at(act + r * q16_row_bytes(n_embd), n_embd);
    uint32_t nb = n_embd / QK_K, f0 = 32 * blockIdx.x + PER_WARP * warp;
    const uint8_t *wr[2 * PER_WARP];
    float o[2 * PER_WARP];
#pragma unroll
    for (int u = 0; u < PER_WARP; u++) {
        wr[u] = wg + (f0 + u) * row_bytes_g;
        wr[PER_WARP + u] = wu + (f0 + u) * row_bytes_u;
    }
    if (tg == tu) {
        warp_dots_any<2 * PER_WARP>(tg, wr, nb, a, o);
    } else {
        warp_dots_any<PER_WARP>(tg, wr, nb, a, o);
        warp_dots_any<PER_WARP>(tu, wr + PER_WARP, nb, a, o + PER_WARP);
    }
    if (lane < PER_WARP) {
        float g = o[0], up = o[PER_WARP];
#pragma unroll
        for (int u = 1; u < PER_WARP; u++)
            if (lane == (uint32_t)u) {
                g = o[u];
                up = o[PER_WARP + u];
            }
        h[PER_WARP * warp + lane] = swiglu(g, up);
    }
    __syncthreads();
    if (warp == 0)
        q16_store_group(q16_at(act_ff + r * q16_row_bytes(n_ff), n_ff), blockIdx.x, h[lane], lane);
}

int fwd_gate_up(const dev_mat *gate, const dev_mat *up, const uint8_t *act, uint32_t rows, const fwd_dims *d,
                uint8_t *act_ff, void *stream, smq_err *err)
{
    for (uint32_t r0 = 0; r0 < rows; r0 += MAX_GRID_Y) {
        uint32_t n = rows - r0 < MAX_GRID_Y ? rows - r0 : MAX_GRID_Y;
        cudaError_t e =
            pdl_launch(gate_up_kernel, dim3(d->n_ff / 32, n), dim3(32 * MV_WARPS), 0, (cudaStream_t)stream, gate->d,
                       up->d, gate->type, up->type, gate->row_bytes, up->row_bytes, act + r0 * q16_row_bytes(d->n_embd),
                       d->n_embd, d->n_ff, act_ff + r0 * q16_row_bytes(d->n_ff), (int)prefetch_on());
        PDL_CHECK(e, "gate_up");
    }
    return 0;
}

/* From products already made: groups (32 of n_ff, a warp each) of row
 * blockIdx.y, SWIGLU_WARPS a block, y[r] holding gate then up (2 n_ff
 * floats). (A block of one warp per group, 1.4 million blocks for a
 * 4096-token prompt, took 850 us on an H100, against some 0.2 ms for its
 * 450 MB: the blocks' start was the cost.) */
#define SWIGLU_WARPS 8
__global__ static void __launch_bounds__(32 * SWIGLU_WARPS)
    swiglu_kernel(const float *__restrict__ y, uint32_t n_ff, uint8_t *__restrict__ act_ff)
{
    uint32_t r = blockIdx.y, g = SWIGLU_WARPS * blockIdx.x + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (g >= n_ff / 32)
        return;
    const float *yr = y + (uint64_t)r * 2 * n_ff;
    uint32_t f = 32 * g + lane;
    q16_store_group(q16_at(act_ff + r * q16_row_bytes(n_ff), n_ff), g, swiglu(yr[f], yr[n_ff + f]), lane);
}

int fwd_swiglu(const float *y, uint32_t rows, const fwd_dims *d, uint8_t *act_ff, void *stream, smq_err *err)
{
    uint32_t groups = d->n_ff / 32;
    for (uint32_t r0 = 0; r0 < rows; r0 += MAX_GRID_Y) {
        uint32_t n = rows - r0 < MAX_GRID_Y ? rows - r0 : MAX_GRID_Y;
        launch_plain(swiglu_kernel, dim3((groups + SWIGLU_WARPS - 1) / SWIGLU_WARPS, n), 32 * SWIGLU_WARPS, 0,
                     (cudaStream_t)stream, y + (uint64_t)r0 * 2 * d->n_ff, d->n_ff,
                     act_ff + r0 * q16_row_bytes(d->n_ff));
        LAUNCH_CHECK("swiglu");
    }
    return 0;
}
