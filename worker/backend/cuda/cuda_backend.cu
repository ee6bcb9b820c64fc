/* cuda_backend.cu - SmolLM3's forward pass on one NVIDIA GPU.
 *
 * The function of cpu_backend.c (read its header comment for the forward
 * pass) with float32 activations, the weights in their GGUF blocks and the KV
 * cache in fp16. A step's tokens, from every sequence of the batch, are the
 * rows of one activation matrix; every kernel works on one row (or one head
 * of one row) with a fixed order of operations, so that a row's numbers do
 * not depend on the batch around it, nor on how a prompt was chunked.
 *
 *   device memory                                   per step (grown)
 *   weights  one cudaMalloc, each tensor's bytes   x, h      [rows][n_embd]
 *            as in the file (token_embd once       q, att    [rows][n_head*head_dim]
 *            when the head is tied to it)          k, v      [rows][kv_dim]
 *   kv       [n_layer][n_pages][page_size][2]      gate, up  [rows][n_ff]
 *            [kv_dim] fp16: a slot's key, then     logits    [out rows][n_vocab]
 *            its value                             meta      tokens, positions,
 *                                                            page tables, rope
 *
 * The step's metadata (tokens, positions, page tables, the cos/sin of RoPE
 * from rope_table(), the CPU's very angles) is packed on the host into one
 * pinned buffer and goes up in one copy; the logits come back per sequence
 * at the end of the step, which is the only synchronization.
 *
 * Kernels (all on the backend's stream, each launch checked):
 *   embed        token rows dequantized with quant.h's element functions
 *   rmsnorm      a row per block, the sum of squares in double (as the CPU)
 *   rope_store   RoPE NORM on q and k (not on NoPE layers), k and v into the
 *                row's KV slot as fp16
 *   attention    a block per (row, head): its warps take every 8th cached
 *                position with an online softmax each, merged at the end
 *   swiglu       silu(gate) * up
 *   products     cuda_matmul (matvec.cu) on the blocks, residual adds fused
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "matvec.h"
#include "quant.h"

extern "C" {
#include "rope.h"
}

#define NORM_THREADS 256
#define ROPE_THREADS 128
#define ATT_WARPS    8
#define MAX_HEAD_DIM 256 /* head_dim / 32 values of q and of the output per lane */
#define ROW_ALIGN    64  /* activation buffers grow by this many rows */

/* Every CUDA call: on failure the error goes into err and the function
 * returns -1. */
#define CUDA_CHECK(call)                                                                                               \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess)                                                                                         \
            return smq_err_set(err, "cuda backend: %s: %s", #call, cudaGetErrorString(e_));                            \
    } while (0)

/* After every launch. */
#define LAUNCH_CHECK(kernel)                                                                                           \
    do {                                                                                                               \
        cudaError_t e_ = cudaGetLastError();                                                                           \
        if (e_ != cudaSuccess)                                                                                         \
            return smq_err_set(err, "cuda backend: kernel %s: %s", kernel, cudaGetErrorString(e_));                    \
    } while (0)

typedef struct dev_tensor {
    qtype type;
    uint64_t ne0, ne1, row_bytes;
    const void *d; /* in the weights allocation */
} dev_tensor;

typedef struct dev_layer {
    const float *attn_norm, *ffn_norm; /* [n_embd] */
    dev_tensor wq, wk, wv, wo, w_gate, w_up, w_down;
    int use_rope;
} dev_layer;

typedef struct cuda_backend {
    backend base;
    int device;
    cudaStream_t stream;
    uint32_t kv_dim;
    uint64_t max_ctx;
    /* weights */
    uint8_t *weights;
    uint64_t weight_bytes;
    dev_tensor token_embd, output;
    const float *output_norm;
    dev_layer *layers;
    /* KV pool */
    __half *kv;
    uint64_t kv_bytes;
    /* per-step buffers, grown to the largest step seen */
    uint32_t cap_rows;
    float *act; /* the one allocation x .. up are carved from */
    float *x, *h, *q, *k, *v, *att, *gate, *up;
    uint64_t cap_out; /* rows of logits */
    float *logits;
    uint64_t cap_meta; /* bytes */
    uint8_t *meta_host, *meta_dev;
    int poison; /* tests: buffers grown later start as NaN too */
} cuda_backend;

/* Where a step's metadata sits in the meta buffers (offsets in 4-byte words). */
typedef struct step_meta {
    uint64_t tokens, row_pos, row_table, out_rows, pages, rope, words;
} step_meta;

/* ---- kernels ---- */

__device__ static float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Element i of a row of the embedding table, as quant_dequant_row gives it. */
__device__ static float embd_value(qtype type, const uint8_t *row, uint32_t i)
{
    switch (type) {
    case QTYPE_Q4_K:
        return q4k_value((const block_q4_K *)row + i / QK_K, (int)(i % QK_K));
    case QTYPE_Q5_K:
        return q5k_value((const block_q5_K *)row + i / QK_K, (int)(i % QK_K));
    case QTYPE_Q6_K:
        return q6k_value((const block_q6_K *)row + i / QK_K, (int)(i % QK_K));
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

/* x[r] = token_embd[tokens[r]]; a block per row. */
__global__ static void embed_kernel(qtype type, const uint8_t *__restrict__ embd, uint64_t row_bytes,
                                    const int32_t *__restrict__ tokens, float *__restrict__ x, uint32_t n_embd)
{
    const uint8_t *row = embd + (uint64_t)tokens[blockIdx.x] * row_bytes;
    float *out = x + (uint64_t)blockIdx.x * n_embd;
    for (uint32_t i = threadIdx.x; i < n_embd; i += blockDim.x)
        out[i] = embd_value(type, row, i);
}

/* out[r] = rmsnorm(x[map ? map[r] : r]) * w; a block per output row. The sum
 * of squares in double, reduced in a fixed order. */
__global__ static void rmsnorm_kernel(const float *__restrict__ x, const uint32_t *__restrict__ map,
                                      const float *__restrict__ w, float *__restrict__ out, uint32_t n, float eps)
{
    __shared__ double part[NORM_THREADS];
    const float *src = x + (uint64_t)(map ? map[blockIdx.x] : blockIdx.x) * n;
    float *dst = out + (uint64_t)blockIdx.x * n;
    double ss = 0;
    for (uint32_t i = threadIdx.x; i < n; i += NORM_THREADS)
        ss += (double)src[i] * src[i];
    part[threadIdx.x] = ss;
    __syncthreads();
    for (unsigned s = NORM_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    float scale = 1.0f / sqrtf((float)(part[0] / n) + eps);
    for (uint32_t i = threadIdx.x; i < n; i += NORM_THREADS)
        dst[i] = __fmul_rn(__fmul_rn(src[i], scale), w[i]);
}

/* The pair (v[0], v[1]) rotated by (c, s), rounded as the CPU rounds it. */
__device__ static void rotate_pair(float *v, float c, float s)
{
    float x0 = v[0], x1 = v[1];
    v[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    v[1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

/* One row per block: RoPE NORM on q and k (pairs (2i, 2i+1) of each head's
 * first n_rot dims; none on NoPE layers), then k and v into the row's slot
 * of this layer's KV pages as fp16. */
__global__ static void rope_store_kernel(float *__restrict__ q, float *__restrict__ k, const float *__restrict__ v,
                                         __half *__restrict__ kv_layer, const float *__restrict__ rope,
                                         const uint32_t *__restrict__ row_pos, const uint32_t *__restrict__ row_table,
                                         const uint32_t *__restrict__ pages, uint32_t n_head, uint32_t n_head_kv,
                                         uint32_t head_dim, uint32_t n_rot, int use_rope, uint32_t page_size)
{
    uint32_t r = blockIdx.x, half_hd = head_dim / 2, kv_dim = n_head_kv * head_dim;
    const float *cs = rope + (uint64_t)r * n_rot;
    float *qr = q + (uint64_t)r * n_head * head_dim, *kr = k + (uint64_t)r * kv_dim;
    const float *vr = v + (uint64_t)r * kv_dim;
    if (use_rope)
        for (uint32_t p = threadIdx.x; p < n_head * half_hd; p += blockDim.x) {
            uint32_t h = p / half_hd, i = p % half_hd;
            if (2 * i < n_rot)
                rotate_pair(qr + h * head_dim + 2 * i, cs[2 * i], cs[2 * i + 1]);
        }
    uint32_t pos = row_pos[r];
    uint64_t page = pages[row_table[r] + pos / page_size];
    __half *slot = kv_layer + (page * page_size + pos % page_size) * 2 * kv_dim;
    for (uint32_t p = threadIdx.x; p < kv_dim / 2; p += blockDim.x) {
        uint32_t i = p % half_hd;
        if (use_rope && 2 * i < n_rot)
            rotate_pair(kr + 2 * p, cs[2 * i], cs[2 * i + 1]);
        slot[2 * p] = __float2half_rn(kr[2 * p]);
        slot[2 * p + 1] = __float2half_rn(kr[2 * p + 1]);
        slot[kv_dim + 2 * p] = __float2half_rn(vr[2 * p]);
        slot[kv_dim + 2 * p + 1] = __float2half_rn(vr[2 * p + 1]);
    }
}

/* Causal attention of one head of one row over the row's sequence's cached
 * positions 0..pos (GQA: query head h reads kv head h / (n_head/n_head_kv)).
 * Warp w takes the positions w, w + ATT_WARPS, ... with an online softmax
 * (running max m, sum l, weighted values acc); the warps' states are merged
 * at the end. A lane holds the head's elements lane, lane + 32, ... */
__global__ static void __launch_bounds__(32 * ATT_WARPS)
    attention_kernel(const float *__restrict__ q, const __half *__restrict__ kv_layer, float *__restrict__ out,
                     const uint32_t *__restrict__ row_pos, const uint32_t *__restrict__ row_table,
                     const uint32_t *__restrict__ pages, uint32_t n_head, uint32_t n_head_kv, uint32_t head_dim,
                     uint32_t page_size, float scale)
{
    enum { PER_LANE = MAX_HEAD_DIM / 32 };
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS], sm_acc[ATT_WARPS][MAX_HEAD_DIM];
    uint32_t r = blockIdx.x, h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    uint32_t g = h / (n_head / n_head_kv), kv_dim = n_head_kv * head_dim, per = head_dim / 32;
    uint32_t n_ctx = row_pos[r] + 1;
    const uint32_t *table = pages + row_table[r];
    const float *qh = q + ((uint64_t)r * n_head + h) * head_dim;
    float qv[PER_LANE], acc[PER_LANE];
#pragma unroll
    for (uint32_t j = 0; j < PER_LANE; j++) {
        qv[j] = j < per ? qh[lane + 32 * j] : 0.f;
        acc[j] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (uint32_t t = warp; t < n_ctx; t += ATT_WARPS) {
        const __half *key = kv_layer + ((uint64_t)table[t / page_size] * page_size + t % page_size) * 2 * kv_dim +
                            (uint64_t)g * head_dim;
        const __half *val = key + kv_dim;
        float dot = 0.f;
#pragma unroll
        for (uint32_t j = 0; j < PER_LANE; j++)
            if (j < per)
                dot += qv[j] * __half2float(key[lane + 32 * j]);
        float s = warp_sum(dot) * scale;
        float m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (uint32_t j = 0; j < PER_LANE; j++)
            if (j < per)
                acc[j] = acc[j] * corr + p * __half2float(val[lane + 32 * j]);
        m = m_new;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (uint32_t j = 0; j < PER_LANE; j++)
        if (j < per)
            sm_acc[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    /* Warp 0 has position 0, so the overall max is finite; a warp without
     * positions (m = -inf) weighs exp(-inf) = 0. */
    float mx = sm_m[0];
    for (uint32_t w = 1; w < ATT_WARPS; w++)
        mx = fmaxf(mx, sm_m[w]);
    float wt[ATT_WARPS], sum = 0.f;
    for (uint32_t w = 0; w < ATT_WARPS; w++) {
        wt[w] = expf(sm_m[w] - mx);
        sum += sm_l[w] * wt[w];
    }
    float *o = out + ((uint64_t)r * n_head + h) * head_dim;
    for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.f;
        for (uint32_t w = 0; w < ATT_WARPS; w++)
            a += sm_acc[w][d] * wt[w];
        o[d] = a / sum;
    }
}

/* gate = silu(gate) * up, as the CPU computes it. */
__global__ static void swiglu_kernel(float *__restrict__ gate, const float *__restrict__ up, uint64_t n)
{
    uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float g = gate[i];
        gate[i] = __fmul_rn(g / (1.0f + expf(-g)), up[i]);
    }
}

/* Position blockIdx.x's slot of layer blockIdx.y from src's page table to
 * dst's (both [n_tokens / page_size] pages). */
__global__ static void copy_kv_kernel(__half *kv, const uint32_t *__restrict__ src, const uint32_t *__restrict__ dst,
                                      uint32_t page_size, uint64_t layer_halves, uint32_t slot_halves)
{
    uint32_t t = blockIdx.x;
    __half *base = kv + blockIdx.y * layer_halves;
    const __half *from = base + ((uint64_t)src[t / page_size] * page_size + t % page_size) * slot_halves;
    __half *to = base + ((uint64_t)dst[t / page_size] * page_size + t % page_size) * slot_halves;
    for (uint32_t i = threadIdx.x; i < slot_halves; i += blockDim.x)
        to[i] = from[i];
}

/* A grid-stride read of n 16-byte words; the sum is written only when it
 * cannot be (never), so that the reads stay. */
__global__ static void read_kernel(const uint4 *__restrict__ p, uint64_t n, unsigned *out)
{
    unsigned s = 0;
    uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        uint4 v = p[i];
        s ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (s == 0x9E3779B9u && n == 0)
        *out = s;
}

/* ---- create: the weights and the pool ---- */

static uint64_t tensor_bytes(const model_tensor *t)
{
    return t->row_bytes * t->ne1;
}

static uint64_t align_up(uint64_t n)
{
    return (n + 255) & ~(uint64_t)255;
}

/* Bytes of the weights on the device (token_embd once when tied). */
static uint64_t weights_need(const model *m)
{
    uint64_t n = align_up(tensor_bytes(&m->token_embd)) + align_up(tensor_bytes(&m->output_norm));
    if (m->output.data != m->token_embd.data)
        n += align_up(tensor_bytes(&m->output));
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer *l = &m->layers[il];
        const model_tensor *ts[] = { &l->attn_norm, &l->wq,     &l->wk,   &l->wv,    &l->wo,
                                     &l->ffn_norm,  &l->w_gate, &l->w_up, &l->w_down };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            n += align_up(tensor_bytes(ts[i]));
    }
    return n;
}

static uint64_t kv_need(const model *m, const backend_config *cfg)
{
    return (uint64_t)m->hp.n_layer * cfg->n_pages * cfg->page_size * 2 * m->hp.n_head_kv * m->hp.head_dim *
           sizeof(__half);
}

/* Floats of one activation row (x, h, q, k, v, att, gate, up). */
static uint64_t act_row_floats(const hparams *hp)
{
    uint64_t qd = (uint64_t)hp->n_head * hp->head_dim, kvd = (uint64_t)hp->n_head_kv * hp->head_dim;
    return 2 * (uint64_t)hp->n_embd + 2 * qd + 2 * kvd + 2 * (uint64_t)hp->n_ff;
}

extern "C" uint64_t cuda_backend_need(const model *m, const backend_config *cfg)
{
    return weights_need(m) + kv_need(m, cfg) + ROW_ALIGN * act_row_floats(&m->hp) * sizeof(float) +
           (uint64_t)m->hp.n_vocab * sizeof(float);
}

/* A CUDA device to use, selected; -1 with err when there is none. */
static int select_device(int gpu, smq_err *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return smq_err_set(err, "cuda backend: no usable CUDA device (%s)", cudaGetErrorString(e));
    }
    if (gpu < 0 || gpu >= n)
        return smq_err_set(err, "cuda backend: GPU %d does not exist (this machine has %d CUDA device%s)", gpu, n,
                           n == 1 ? "" : "s");
    CUDA_CHECK(cudaSetDevice(gpu));
    return 0;
}

extern "C" int cuda_backend_probe(const model *m, const backend_config *cfg, char *desc, size_t desc_len, smq_err *err)
{
    if (select_device(cfg->gpu, err))
        return -1;
    cudaDeviceProp prop;
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, cfg->gpu));
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    uint64_t need = cuda_backend_need(m, cfg);
    /* Room to spare for the CUDA context's own allocations and larger steps. */
    uint64_t margin = (uint64_t)256 << 20;
    if (need + margin > free_b)
        return smq_err_set(err,
                           "cuda backend: GPU %d (%s) has %.2f GiB free; the model and its KV pool need %.2f GiB "
                           "(and some room for the steps)",
                           cfg->gpu, prop.name, free_b / 1073741824.0, need / 1073741824.0);
    snprintf(desc, desc_len, "GPU %d (%s): %.2f of %.2f GiB free needed", cfg->gpu, prop.name, need / 1073741824.0,
             free_b / 1073741824.0);
    return 0;
}

/* A device allocation; out of memory says what was asked for and what is free. */
static int dev_alloc(void **p, uint64_t bytes, const char *what, smq_err *err)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e == cudaSuccess)
        return 0;
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    return smq_err_set(err,
                       "cuda backend: cannot allocate %.1f MiB of device memory for %s (%.1f MiB free of %.1f): %s",
                       bytes / 1048576.0, what, free_b / 1048576.0, total_b / 1048576.0, cudaGetErrorString(e));
}

/* Types the kernels take: the products Q4_K and Q6_K (cuda_matmul), the
 * embedding rows any type embd_value knows. */
static int check_product(const model_tensor *t, smq_err *err)
{
    if ((t->type == QTYPE_Q4_K || t->type == QTYPE_Q6_K) && t->ne0 % QK_K == 0)
        return 0;
    return smq_err_set(
        err, "cuda backend: tensor %s: type %s with rows of %" PRIu64 " has no GPU kernel (Q4_K and Q6_K only)",
        t->name, qtype_name(t->type), t->ne0);
}

static int check_types(const model *m, smq_err *err)
{
    switch (m->token_embd.type) {
    case QTYPE_Q4_K:
    case QTYPE_Q5_K:
    case QTYPE_Q6_K:
    case QTYPE_Q8_0:
    case QTYPE_F16:
    case QTYPE_BF16:
    case QTYPE_F32:
        break;
    default:
        return smq_err_set(err, "cuda backend: tensor %s: type %s has no GPU kernel", m->token_embd.name,
                           qtype_name(m->token_embd.type));
    }
    if (check_product(&m->output, err))
        return -1;
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer *l = &m->layers[il];
        const model_tensor *ts[] = { &l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            if (check_product(ts[i], err))
                return -1;
    }
    return 0;
}

/* Copies t into the weights allocation at *at. */
static int upload(cuda_backend *b, const model_tensor *t, uint64_t *at, dev_tensor *out, smq_err *err)
{
    uint64_t n = tensor_bytes(t);
    if (*at + n > b->weight_bytes)
        return smq_err_set(err, "cuda backend: tensor %s does not fit the weights' allocation", t->name);
    CUDA_CHECK(cudaMemcpy(b->weights + *at, t->data, n, cudaMemcpyHostToDevice));
    *out = (dev_tensor){ t->type, t->ne0, t->ne1, t->row_bytes, b->weights + *at };
    *at += align_up(n);
    return 0;
}

static int upload_weights(cuda_backend *b, smq_err *err)
{
    const model *m = b->base.m;
    b->weight_bytes = weights_need(m);
    if (dev_alloc((void **)&b->weights, b->weight_bytes, "the weights", err))
        return -1;
    uint64_t at = 0;
    dev_tensor norm;
    if (upload(b, &m->token_embd, &at, &b->token_embd, err) || upload(b, &m->output_norm, &at, &norm, err))
        return -1;
    b->output_norm = (const float *)norm.d;
    if (m->output.data == m->token_embd.data)
        b->output = b->token_embd; /* tied: the same bytes serve both */
    else if (upload(b, &m->output, &at, &b->output, err))
        return -1;
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer *l = &m->layers[il];
        dev_layer *d = &b->layers[il];
        dev_tensor an, fn;
        if (upload(b, &l->attn_norm, &at, &an, err) || upload(b, &l->ffn_norm, &at, &fn, err) ||
            upload(b, &l->wq, &at, &d->wq, err) || upload(b, &l->wk, &at, &d->wk, err) ||
            upload(b, &l->wv, &at, &d->wv, err) || upload(b, &l->wo, &at, &d->wo, err) ||
            upload(b, &l->w_gate, &at, &d->w_gate, err) || upload(b, &l->w_up, &at, &d->w_up, err) ||
            upload(b, &l->w_down, &at, &d->w_down, err))
            return -1;
        d->attn_norm = (const float *)an.d;
        d->ffn_norm = (const float *)fn.d;
        d->use_rope = l->use_rope;
    }
    return 0;
}

static void cuda_destroy(backend **self)
{
    cuda_backend *b = (cuda_backend *)*self;
    if (!b)
        return;
    cudaSetDevice(b->device);
    if (b->stream)
        cudaStreamSynchronize(b->stream);
    cudaFree(b->weights);
    cudaFree(b->kv);
    cudaFree(b->act);
    cudaFree(b->logits);
    cudaFree(b->meta_dev);
    cudaFreeHost(b->meta_host);
    if (b->stream)
        cudaStreamDestroy(b->stream);
    cudaGetLastError(); /* leave no error behind for the next user of the device */
    free(b->layers);
    free(b);
    *self = NULL;
}

static int create_on_device(cuda_backend *b, smq_err *err)
{
    const model *m = b->base.m;
    const backend_config *c = &b->base.cfg;
    if (select_device(c->gpu, err))
        return -1;
    b->device = c->gpu;
    CUDA_CHECK(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
    if (upload_weights(b, err))
        return -1;
    b->kv_bytes = kv_need(m, c);
    if (dev_alloc((void **)&b->kv, b->kv_bytes, "the KV pool", err))
        return -1;
    CUDA_CHECK(cudaMemset(b->kv, 0, b->kv_bytes));
    return 0;
}

static backend *cuda_create(const model *m, const backend_config *cfg, smq_err *err)
{
    const hparams *hp = &m->hp;
    if (cfg->page_size == 0 || cfg->n_pages == 0) {
        smq_err_set(err, "cuda backend: the KV pool needs pages (n_pages %" PRIu32 ", page_size %" PRIu32 ")",
                    cfg->n_pages, cfg->page_size);
        return NULL;
    }
    if (hp->head_dim == 0 || hp->head_dim % 32 || hp->head_dim > MAX_HEAD_DIM || hp->n_rot % 2 ||
        hp->n_rot > hp->head_dim || hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv || hp->n_head > 65535) {
        smq_err_set(err,
                    "cuda backend: heads of %" PRIu32 " dims (%" PRIu32 " rotated), %" PRIu32 " heads over %" PRIu32
                    " kv heads: the kernels take head dims that are multiples of 32 up to %d",
                    hp->head_dim, hp->n_rot, hp->n_head, hp->n_head_kv, MAX_HEAD_DIM);
        return NULL;
    }
    if (check_types(m, err))
        return NULL;
    cuda_backend *b = (cuda_backend *)calloc(1, sizeof *b);
    dev_layer *layers = (dev_layer *)calloc(hp->n_layer, sizeof *layers);
    if (!b || !layers) {
        free(b);
        free(layers);
        smq_err_set(err, "cuda backend: out of memory");
        return NULL;
    }
    b->base.ops = &cuda_backend_ops;
    b->base.m = m;
    b->base.cfg = *cfg;
    b->layers = layers;
    b->kv_dim = hp->n_head_kv * hp->head_dim;
    b->max_ctx = (uint64_t)cfg->n_pages * cfg->page_size;
    if (create_on_device(b, err)) {
        backend *bb = &b->base;
        cuda_destroy(&bb);
        return NULL;
    }
    return &b->base;
}

/* ---- the step ---- */

/* Grows the activation buffers to rows, the logits to n_out rows and the
 * metadata to meta_bytes. Old contents are not kept. */
static int grow(cuda_backend *b, uint32_t rows, uint64_t n_out, uint64_t meta_bytes, smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    if (rows > b->cap_rows) {
        uint32_t cap = (uint32_t)(((uint64_t)rows + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN);
        cudaFree(b->act);
        b->act = NULL;
        b->cap_rows = 0;
        if (dev_alloc((void **)&b->act, (uint64_t)cap * act_row_floats(hp) * sizeof(float), "a step's activations",
                      err))
            return -1;
        uint64_t qd = (uint64_t)hp->n_head * hp->head_dim;
        float *p = b->act;
        struct {
            float **buf;
            uint64_t n;
        } bufs[] = { { &b->x, hp->n_embd }, { &b->h, hp->n_embd }, { &b->q, qd },          { &b->k, b->kv_dim },
                     { &b->v, b->kv_dim },  { &b->att, qd },       { &b->gate, hp->n_ff }, { &b->up, hp->n_ff } };
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
            *bufs[i].buf = p;
            p += (uint64_t)cap * bufs[i].n;
        }
        b->cap_rows = cap;
        if (b->poison)
            CUDA_CHECK(cudaMemsetAsync(b->act, 0xFF, (uint64_t)cap * act_row_floats(hp) * sizeof(float), b->stream));
    }
    if (n_out > b->cap_out) {
        cudaFree(b->logits);
        b->logits = NULL;
        b->cap_out = 0;
        if (dev_alloc((void **)&b->logits, n_out * hp->n_vocab * sizeof(float), "a step's logits", err))
            return -1;
        b->cap_out = n_out;
        if (b->poison)
            CUDA_CHECK(cudaMemsetAsync(b->logits, 0xFF, n_out * hp->n_vocab * sizeof(float), b->stream));
    }
    if (meta_bytes > b->cap_meta) {
        uint64_t cap = meta_bytes * 2;
        cudaFree(b->meta_dev);
        cudaFreeHost(b->meta_host);
        b->meta_dev = b->meta_host = NULL;
        b->cap_meta = 0;
        if (dev_alloc((void **)&b->meta_dev, cap, "a step's metadata", err))
            return -1;
        CUDA_CHECK(cudaMallocHost((void **)&b->meta_host, cap));
        b->cap_meta = cap;
    }
    return 0;
}

/* Packs the step's metadata into meta_host (laid out by *sm, which this
 * fills) and sends it to the device. */
static int send_meta(cuda_backend *b, const fwd_batch *batch, uint32_t rows, step_meta *sm, smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    uint32_t P = b->base.cfg.page_size;
    uint64_t n_out = 0, n_table = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        n_out += s->all_logits ? s->n_tokens : 1;
        n_table += ((uint64_t)s->pos + s->n_tokens + P - 1) / P; /* only the pages the step reaches */
    }
    sm->tokens = 0;
    sm->row_pos = rows;
    sm->row_table = 2 * (uint64_t)rows;
    sm->out_rows = 3 * (uint64_t)rows;
    sm->pages = sm->out_rows + n_out;
    sm->rope = sm->pages + n_table;
    sm->words = sm->rope + (uint64_t)rows * hp->n_rot;
    if (grow(b, rows, n_out, sm->words * 4, err))
        return -1;
    uint32_t *w = (uint32_t *)b->meta_host;
    int32_t *tokens = (int32_t *)w;
    float *rope = (float *)(w + sm->rope);
    uint32_t r = 0, out = 0, table = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        uint32_t n_pages = (uint32_t)(((uint64_t)s->pos + s->n_tokens + P - 1) / P);
        memcpy(w + sm->pages + table, s->pages, n_pages * sizeof(uint32_t));
        for (uint32_t t = 0; t < s->n_tokens; t++, r++) {
            tokens[r] = s->tokens[t];
            w[sm->row_pos + r] = s->pos + t;
            w[sm->row_table + r] = table;
            rope_table(hp, s->pos + t, rope + (uint64_t)r * hp->n_rot);
            if (s->all_logits || t == s->n_tokens - 1)
                w[sm->out_rows + out++] = r;
        }
        table += n_pages;
    }
    CUDA_CHECK(cudaMemcpyAsync(b->meta_dev, b->meta_host, sm->words * 4, cudaMemcpyHostToDevice, b->stream));
    return 0;
}

static int rmsnorm(cuda_backend *b, const float *x, const uint32_t *map, const float *w, float *out, uint32_t n_rows,
                   smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    rmsnorm_kernel<<<n_rows, NORM_THREADS, 0, b->stream>>>(x, map, w, out, hp->n_embd, hp->rms_eps);
    LAUNCH_CHECK("rmsnorm");
    return 0;
}

/* out[t] (+)= W x[t] for t < rows; strides are the buffers' row lengths. */
static int matmul(cuda_backend *b, const dev_tensor *w, const float *x, uint32_t rows, float *out, int accumulate,
                  smq_err *err)
{
    if (cuda_matmul(w->type, w->d, w->ne1, w->ne0, x, w->ne0, out, w->ne1, rows, accumulate, b->stream, err))
        return smq_err_prefix(err, "cuda backend");
    return 0;
}

static int layer_forward(cuda_backend *b, uint32_t il, uint32_t rows, const step_meta *sm, smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    const backend_config *c = &b->base.cfg;
    const dev_layer *l = &b->layers[il];
    const uint32_t *meta = (const uint32_t *)b->meta_dev;
    __half *kv_layer = b->kv + (uint64_t)il * c->n_pages * c->page_size * 2 * b->kv_dim;

    if (rmsnorm(b, b->x, NULL, l->attn_norm, b->h, rows, err) || matmul(b, &l->wq, b->h, rows, b->q, 0, err) ||
        matmul(b, &l->wk, b->h, rows, b->k, 0, err) || matmul(b, &l->wv, b->h, rows, b->v, 0, err))
        return -1;
    rope_store_kernel<<<rows, ROPE_THREADS, 0, b->stream>>>(
        b->q, b->k, b->v, kv_layer, (const float *)(meta + sm->rope), meta + sm->row_pos, meta + sm->row_table,
        meta + sm->pages, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot, l->use_rope, c->page_size);
    LAUNCH_CHECK("rope_store");
    attention_kernel<<<dim3(rows, hp->n_head), 32 * ATT_WARPS, 0, b->stream>>>(
        b->q, kv_layer, b->att, meta + sm->row_pos, meta + sm->row_table, meta + sm->pages, hp->n_head, hp->n_head_kv,
        hp->head_dim, c->page_size, 1.0f / sqrtf((float)hp->head_dim));
    LAUNCH_CHECK("attention");
    if (matmul(b, &l->wo, b->att, rows, b->x, 1, err))
        return -1;

    if (rmsnorm(b, b->x, NULL, l->ffn_norm, b->h, rows, err) || matmul(b, &l->w_gate, b->h, rows, b->gate, 0, err) ||
        matmul(b, &l->w_up, b->h, rows, b->up, 0, err))
        return -1;
    uint64_t n = (uint64_t)rows * hp->n_ff, blocks = (n + 255) / 256;
    swiglu_kernel<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, b->stream>>>(b->gate, b->up, n);
    LAUNCH_CHECK("swiglu");
    return matmul(b, &l->w_down, b->gate, rows, b->x, 1, err);
}

static int cuda_forward(backend *base, const fwd_batch *batch, smq_err *err)
{
    cuda_backend *b = (cuda_backend *)base;
    const model *m = base->m;
    const hparams *hp = &m->hp;
    uint32_t rows = 0;
    step_meta sm;
    if (backend_check_batch(base, batch, &rows, err))
        return -1;
    CUDA_CHECK(cudaSetDevice(b->device));
    if (send_meta(b, batch, rows, &sm, err))
        return -1;
    const uint32_t *meta = (const uint32_t *)b->meta_dev;

    embed_kernel<<<rows, 256, 0, b->stream>>>(b->token_embd.type, (const uint8_t *)b->token_embd.d,
                                              b->token_embd.row_bytes, (const int32_t *)meta + sm.tokens, b->x,
                                              hp->n_embd);
    LAUNCH_CHECK("embed");
    for (uint32_t il = 0; il < hp->n_layer; il++)
        if (layer_forward(b, il, rows, &sm, err))
            return -1;

    /* The rows whose logits are asked for, normed into h, times the head. */
    uint32_t n_out = (uint32_t)(sm.pages - sm.out_rows);
    if (rmsnorm(b, b->x, meta + sm.out_rows, b->output_norm, b->h, n_out, err) ||
        matmul(b, &b->output, b->h, n_out, b->logits, 0, err))
        return -1;
    uint64_t at = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        uint64_t n = (uint64_t)(s->all_logits ? s->n_tokens : 1) * hp->n_vocab;
        CUDA_CHECK(cudaMemcpyAsync(s->logits, b->logits + at, n * sizeof(float), cudaMemcpyDeviceToHost, b->stream));
        at += n;
    }
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return 0;
}

static int cuda_copy_kv(backend *base, const uint32_t *src, const uint32_t *dst, uint32_t n_tokens, smq_err *err)
{
    cuda_backend *b = (cuda_backend *)base;
    uint32_t P = base->cfg.page_size;
    if (n_tokens == 0)
        return 0;
    if (n_tokens > b->max_ctx)
        return smq_err_set(err, "cuda backend: %" PRIu32 " positions to copy are more than the KV pool", n_tokens);
    uint32_t n_pages = (n_tokens + P - 1) / P;
    for (uint32_t p = 0; p < n_pages; p++)
        if (src[p] >= base->cfg.n_pages || dst[p] >= base->cfg.n_pages)
            return smq_err_set(err, "cuda backend: page outside the pool");
    CUDA_CHECK(cudaSetDevice(b->device));
    if (grow(b, 1, 1, 2 * (uint64_t)n_pages * sizeof(uint32_t), err))
        return -1;
    memcpy(b->meta_host, src, n_pages * sizeof(uint32_t));
    memcpy(b->meta_host + n_pages * sizeof(uint32_t), dst, n_pages * sizeof(uint32_t));
    CUDA_CHECK(cudaMemcpyAsync(b->meta_dev, b->meta_host, 2 * (uint64_t)n_pages * sizeof(uint32_t),
                               cudaMemcpyHostToDevice, b->stream));
    const uint32_t *d = (const uint32_t *)b->meta_dev;
    uint64_t layer_halves = (uint64_t)base->cfg.n_pages * P * 2 * b->kv_dim;
    copy_kv_kernel<<<dim3(n_tokens, base->m->hp.n_layer), 256, 0, b->stream>>>(b->kv, d, d + n_pages, P, layer_halves,
                                                                               2 * b->kv_dim);
    LAUNCH_CHECK("copy_kv");
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return 0;
}

static uint64_t cuda_memory(const backend *base)
{
    const cuda_backend *b = (const cuda_backend *)base;
    const hparams *hp = &base->m->hp;
    return b->weight_bytes + b->kv_bytes + (uint64_t)b->cap_rows * act_row_floats(hp) * sizeof(float) +
           b->cap_out * hp->n_vocab * sizeof(float) + b->cap_meta;
}

extern "C" int cuda_backend_poison(backend *base, int kv, smq_err *err)
{
    cuda_backend *b = (cuda_backend *)base;
    const hparams *hp = &base->m->hp;
    CUDA_CHECK(cudaSetDevice(b->device));
    b->poison = 1;
    if (b->act)
        CUDA_CHECK(
            cudaMemsetAsync(b->act, 0xFF, (uint64_t)b->cap_rows * act_row_floats(hp) * sizeof(float), b->stream));
    if (b->logits)
        CUDA_CHECK(cudaMemsetAsync(b->logits, 0xFF, b->cap_out * hp->n_vocab * sizeof(float), b->stream));
    if (kv)
        CUDA_CHECK(cudaMemsetAsync(b->kv, 0xFF, b->kv_bytes, b->stream));
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return 0;
}

extern "C" double cuda_read_bandwidth(int gpu)
{
    smq_err e, *err = &e;
    uint64_t bytes = (uint64_t)512 << 20;
    uint4 *buf = NULL;
    unsigned *out = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    double best = 0;
    if (select_device(gpu, err) || cudaMalloc((void **)&buf, bytes) != cudaSuccess ||
        cudaMalloc((void **)&out, sizeof *out) != cudaSuccess || cudaMemset(buf, 1, bytes) != cudaSuccess ||
        cudaEventCreate(&t0) != cudaSuccess || cudaEventCreate(&t1) != cudaSuccess)
        goto done;
    for (int r = 0; r < 4; r++) { /* the first pass warms up */
        float ms = 0;
        cudaEventRecord(t0);
        read_kernel<<<1024, 512>>>(buf, bytes / sizeof(uint4), out);
        cudaEventRecord(t1);
        if (cudaEventSynchronize(t1) != cudaSuccess || cudaEventElapsedTime(&ms, t0, t1) != cudaSuccess)
            goto done;
        double gbs = ms > 0 ? (double)bytes / (ms * 1e-3) / 1e9 : 0;
        if (r > 0 && gbs > best)
            best = gbs;
    }
done:
    cudaFree(buf);
    cudaFree(out);
    if (t0)
        cudaEventDestroy(t0);
    if (t1)
        cudaEventDestroy(t1);
    cudaGetLastError();
    return best;
}

const backend_ops cuda_backend_ops = {
    "cuda", cuda_create, cuda_forward, cuda_copy_kv, cuda_memory, cuda_destroy,
};
