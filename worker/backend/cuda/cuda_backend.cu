/* cuda_backend.cu - SmolLM3's forward pass on one NVIDIA GPU.
 *
 * The function of cpu_backend.c (read its header comment for the forward
 * pass) with the weights in their GGUF blocks (Q6_K padded to 16-byte
 * aligned slots), the KV cache in fp16, and the matrix products on
 * activations quantized to 16 bits (qdot.cuh: 1.5e-5 relative per element,
 * in both of backend_config's modes; the CPU's fast path uses 8). A step's
 * tokens, from every sequence of the batch, are the rows of one activation
 * matrix; every kernel works on one row (or one head of one row) with a
 * fixed order of operations, so that a row's numbers do not depend on the
 * batch around it, nor on how a prompt was chunked. fwd_kernels.h lists
 * the kernels of a step.
 *
 *   device memory                                   per step (grown)
 *   weights  one cudaMalloc, each tensor's blocks  x        [rows][n_embd] f32
 *            (token_embd once when the head is     q        [rows][n_head*head_dim] f32
 *            tied to it)                           a, a_ff  [rows] q16 rows of the products
 *   kv       [n_layer][n_pages][page_size][2]      part     attention's split-K partials
 *            [kv_dim] fp16: a slot's key, then     logits   [out rows][n_vocab]
 *            its value                             meta     tokens, positions, page
 *                                                           tables, rope, split slots
 *
 * The step's metadata (tokens, positions, page tables, the cos/sin of RoPE
 * from rope_table(), the CPU's very angles) is packed on the host into one
 * pinned buffer and goes up in one copy; the logits come back per sequence
 * at the end of the step, which is the only synchronization. A one-token
 * step (batch-1 decode) is replayed from a CUDA graph captured once per
 * split-K width: its shapes are fixed, and what changes (token, position,
 * page table) is read from the metadata on the device.
 *
 * Prompt rows (fwd_seq.prefill) come first in a step and take the layers'
 * products through cuBLAS on fp16 weights (gemm.h: kept in a copy when the
 * device has room, else dequantized per step), which reads the weights once
 * for all of them, and their attention on the tensor cores
 * (fwd_prompt_attention); generated tokens keep the q16 products and the
 * split-K attention. That route is chosen by a row's kind, so that batches
 * and chunks give each prompt row its numbers alone (up to cuBLAS's
 * summation order). The one exception: a step of BATCH_GEMM or more
 * generated tokens (SMQ_CUDA_GEMM_BATCH; 0 never) takes their products
 * through cuBLAS too, for throughput, and they then differ from their
 * single-row numbers by the routes' distance (rel L2 ~1e-3 on the logits).
 * SMQ_CUDA_GEMM=0 in the environment takes every row through q16.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_backend.h"
#include "fwd_kernels.h"
#include "gemm.h"
#include "launch.cuh"
#include "matvec.h"
#include "qdot.cuh"
#include "quant.h"

extern "C" {
#include "rope.h"
}

#define ROW_ALIGN      64   /* activation buffers grow by this many rows */
#define MAX_HEAD_DIM   256  /* the attention kernel holds head_dim / 32 dims per lane, at most 8 */
#define ATT_PART_SLOTS 8192 /* split-K slots of one attention launch */
#define GRAPH_WIDTHS   6    /* decode graphs kept: split-K widths 1, 2, 4, .., 32 */
#define BATCH_GEMM     4    /* decode rows from which a step takes the cuBLAS route (SMQ_CUDA_GEMM_BATCH) */
#define F16_ROOM       ((uint64_t)4 << 30) /* free memory the fp16 copy leaves for steps and cuBLAS */

/* Every CUDA call: on failure the error goes into err and the function
 * returns -1. */
#define CUDA_CHECK(call)                                                                                               \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess)                                                                                         \
            return smq_err_set(err, "cuda backend: %s: %s", #call, cudaGetErrorString(e_));                            \
    } while (0)

typedef struct dev_layer {
    const float *attn_norm, *ffn_norm; /* [n_embd] */
    dev_mat wq, wk, wv, wo, w_gate, w_up, w_down;
    int use_rope;
    /* fp16 copies for the cuBLAS route (rows of q, k, v stacked; of gate,
     * up), NULL when not kept (make_f16_copy) */
    const uint16_t *qkv16, *wo16, *gate_up16, *down16;
} dev_layer;

/* Rows [r0, r0 + rows) of a step go through attention in one launch, their
 * split-K slots (at most ATT_PART_SLOTS) numbered from 0. */
typedef struct att_group {
    uint32_t r0, rows, max_splits;
} att_group;

typedef struct cuda_backend {
    backend base;
    int device;
    cudaStream_t stream;
    uint32_t kv_dim;
    uint64_t max_ctx;
    fwd_dims dims;
    /* weights */
    uint8_t *weights;
    uint64_t weight_bytes;
    dev_mat token_embd, output;
    const float *output_norm;
    dev_layer *layers;
    /* KV pool */
    __half *kv;
    uint64_t kv_bytes;
    /* per-step buffers, grown to the largest step seen */
    uint32_t cap_rows;
    uint8_t *act; /* the one allocation x .. a_ff are carved from */
    float *x, *q;
    uint8_t *a, *a_ff;
    uint64_t cap_part; /* floats */
    float *part;
    uint64_t cap_out;             /* rows of logits */
    int32_t *d_picked, *h_picked; /* [cap_out] tokens chosen on the device (fwd_sample); h_picked pinned */
    uint64_t cap_pick;            /* bytes of the picks' parameters and penalty pairs */
    uint8_t *pick_host, *pick_dev;
    uint32_t cap_slots; /* picks the fwd_sample scratch has room for */
    uint64_t *slots;
    float *logits;
    uint64_t cap_meta; /* bytes */
    uint8_t *meta_host, *meta_dev;
    att_group *groups;
    uint32_t n_groups, cap_groups;
    /* batch-1 decode graphs, by split-K width (log2) */
    cudaGraphExec_t graph[GRAPH_WIDTHS];
    uint32_t graph_nodes; /* of the last one captured: the launches (and copies) of a one-token step */
    int use_graphs;       /* 0 with SMQ_CUDA_GRAPHS=0 in the environment, to compare */
    int fuse;             /* attention's last split merges (no merge kernel); 0 with SMQ_CUDA_FUSE=0, to compare */
    int fuse_norm;        /* the residual products norm and quantize their rows themselves (cuda_q16_matmul_norm):
                             only with SMQ_CUDA_FUSE_NORM=1: the product's last block, norming a row alone, took
                             longer than the launch it saves (H100, batch-1 decode: 391 tok/s with both fusions,
                             469 with neither) */
    uint32_t *count;      /* [cap_rows * n_head_kv] their counters, zero between launches */
    int sample;           /* picks run on the device (fwd_sample); 0 with SMQ_CUDA_SAMPLE=0: the host samples */
    int no_room;          /* this step's picks found no room for the sampler's buffers: the host samples them */
    int told_no_room;
    /* prompts' products (gemm.h); NULL without cuBLAS or with SMQ_CUDA_GEMM=0 */
    cuda_gemm *gemm;
    uint32_t n_prompt;   /* this step's prompt rows: rows [0, n_prompt) */
    uint32_t n_gemm;     /* rows [0, n_gemm) take the cuBLAS route: the prompts', and a large batch's decode rows */
    uint32_t batch_gemm; /* decode rows from which a step takes them through cuBLAS too; 0: never */
    uint16_t *w16;       /* the fp16 copy of the layers' products, when it fits (make_f16_copy) */
    const uint16_t *output16; /* in it, the head's, for decode batches on the cuBLAS route (NULL: not kept) */
    uint64_t w16_bytes;
    uint16_t *h;        /* [rows] fp16 inputs of the products (in act) */
    float *y;           /* [rows] stacked products' outputs (in act) */
    uint16_t *wscratch; /* fp16 weights, gemm_scratch_halves() */
    int flash;          /* prompt rows' attention on the tensor cores (fwd_prompt_attention) */
    uint32_t n_tiles;   /* this step's prompt attention tiles */
    const uint32_t *d_tiles;
    int poison; /* tests: buffers grown later start as NaN too */
} cuda_backend;

/* Where a step's metadata sits in the meta buffers (offsets in 4-byte
 * words). The page tables come last (but for the prompt attention's tiles,
 * none in a one-token step), so that a one-token step's layout
 * does not depend on its page count (graph replays read it in place). */
typedef struct step_meta {
    uint64_t tokens, row_pos, row_table, row_part, out_rows, rope, pages, tiles, words;
} step_meta;

/* ---- kernels (the step's are in fwd_kernels.cu) ---- */

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

static int is_product_type(qtype t)
{
    return t == QTYPE_Q4_K || t == QTYPE_Q6_K;
}

/* Device bytes of a tensor: Q4_K and Q6_K in the product kernels' layout,
 * anything else as in the file. */
static uint64_t dev_bytes(const model_tensor *t)
{
    return is_product_type(t->type) && t->ne0 % QK_K == 0 ? cuda_weight_bytes(t->type, t->ne1, t->ne0)
                                                          : tensor_bytes(t);
}

/* Bytes of the weights on the device (token_embd once when tied). */
static uint64_t weights_need(const model *m)
{
    uint64_t n = align_up(dev_bytes(&m->token_embd)) + align_up(dev_bytes(&m->output_norm));
    if (m->output.data != m->token_embd.data)
        n += align_up(dev_bytes(&m->output));
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const model_layer *l = &m->layers[il];
        const model_tensor *ts[] = { &l->attn_norm, &l->wq,     &l->wk,   &l->wv,    &l->wo,
                                     &l->ffn_norm,  &l->w_gate, &l->w_up, &l->w_down };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            n += align_up(dev_bytes(ts[i]));
    }
    return n;
}

static uint64_t kv_need(const model *m, const backend_config *cfg)
{
    return (uint64_t)m->hp.n_layer * cfg->n_pages * cfg->page_size * 2 * m->hp.n_head_kv * m->hp.head_dim *
           sizeof(__half);
}

/* Bytes of one activation row: x and q in float, the products' q16 inputs
 * a (of n_embd or n_head * head_dim) and a_ff (of n_ff), each buffer
 * rounded to 256 bytes. */
static uint64_t q_dim(const hparams *hp)
{
    return (uint64_t)hp->n_head * hp->head_dim;
}

static uint64_t a_row_bytes(const hparams *hp)
{
    uint64_t n = hp->n_embd > q_dim(hp) ? hp->n_embd : q_dim(hp);
    return q16_row_bytes(n);
}

static uint64_t max3(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* The prompt route's per-row buffers: fp16 inputs of any product, and the
 * widest stack's outputs (q, k, v or gate, up). */
static uint64_t h_width(const hparams *hp)
{
    return max3(hp->n_embd, q_dim(hp), hp->n_ff);
}

static uint64_t y_width(const hparams *hp)
{
    return max3(q_dim(hp) + 2 * (uint64_t)hp->n_head_kv * hp->head_dim, 2 * (uint64_t)hp->n_ff, hp->n_embd);
}

/* fp16 weights of the largest stack (gate and up), dequantized at once. */
static uint64_t gemm_scratch_halves(const hparams *hp)
{
    uint64_t kv = (uint64_t)hp->n_head_kv * hp->head_dim;
    /* q, k, v; gate and up; then attn_output and ffn_down alone */
    return max3((q_dim(hp) + 2 * kv) * hp->n_embd, 2 * (uint64_t)hp->n_ff * hp->n_embd,
                (uint64_t)hp->n_embd * (q_dim(hp) > hp->n_ff ? q_dim(hp) : hp->n_ff));
}

static uint64_t act_bytes(const hparams *hp, uint64_t rows, int gemm)
{
    uint64_t n = align_up(rows * hp->n_embd * 4) + align_up(rows * q_dim(hp) * 4) + align_up(rows * a_row_bytes(hp)) +
                 align_up(rows * q16_row_bytes(hp->n_ff));
    return gemm ? n + align_up(rows * h_width(hp) * 2) + align_up(rows * y_width(hp) * 4) : n;
}

extern "C" uint64_t cuda_backend_need(const model *m, const backend_config *cfg)
{
    /* a first step: ROW_ALIGN rows, one row of logits and one pick's sampler scratch */
    return weights_need(m) + kv_need(m, cfg) + act_bytes(&m->hp, ROW_ALIGN, 1) +
           gemm_scratch_halves(&m->hp) * sizeof(uint16_t) +
           (uint64_t)m->hp.n_vocab * (sizeof(float) + sizeof(uint64_t));
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
    snprintf(desc, desc_len, "GPU %d (%s): needs %.2f GiB, %.2f GiB free", cfg->gpu, prop.name, need / 1073741824.0,
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

/* Types the kernels take: the products Q4_K and Q6_K (cuda_q16_matmul), the
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

/* Copies t into the weights allocation at *at (Q4_K and Q6_K through
 * cuda_weight_upload, into the product kernels' layout). */
static int upload(cuda_backend *b, const model_tensor *t, uint64_t *at, dev_mat *out, smq_err *err)
{
    uint64_t n = dev_bytes(t);
    if (*at + n > b->weight_bytes)
        return smq_err_set(err, "cuda backend: tensor %s does not fit the weights' allocation", t->name);
    if (is_product_type(t->type) && t->ne0 % QK_K == 0) {
        if (cuda_weight_upload(t->type, t->data, t->ne1, t->ne0, b->weights + *at, err))
            return smq_err_prefix(err, "cuda backend: tensor %s", t->name);
    } else {
        CUDA_CHECK(cudaMemcpy(b->weights + *at, t->data, n, cudaMemcpyHostToDevice));
    }
    *out = (dev_mat){ t->type, t->ne0, t->ne1, n / (t->ne1 ? t->ne1 : 1), b->weights + *at };
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
    dev_mat norm;
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
        dev_mat an, fn;
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
    cudaFree(b->count);
    cudaFree(b->logits);
    cudaFree(b->d_picked);
    cudaFreeHost(b->h_picked);
    cudaFree(b->pick_dev);
    cudaFreeHost(b->pick_host);
    cudaFree(b->slots);
    cudaFree(b->part);
    cudaFree(b->meta_dev);
    cudaFreeHost(b->meta_host);
    for (int i = 0; i < GRAPH_WIDTHS; i++)
        if (b->graph[i])
            cudaGraphExecDestroy(b->graph[i]);
    cuda_gemm_free(&b->gemm);
    cudaFree(b->wscratch);
    cudaFree(b->w16);
    if (b->stream)
        cudaStreamDestroy(b->stream);
    cudaGetLastError(); /* leave no error behind for the next user of the device */
    free(b->layers);
    free(b->groups);
    free(b);
    *self = NULL;
}

/* The layers' products dequantized to fp16 once, for cuBLAS (no per-step
 * dequantization: a batch's step reads 2 bytes a weight instead of the
 * blocks plus 4 bytes a weight through the scratch), when the device has
 * their room and F16_ROOM more; SMQ_CUDA_F16_WEIGHTS=0 declines it. */
static int make_f16_copy(cuda_backend *b, smq_err *err)
{
    const char *want = getenv("SMQ_CUDA_F16_WEIGHTS");
    if (want && !strcmp(want, "0"))
        return 0;
    const hparams *hp = &b->base.m->hp;
    uint16_t *p = NULL;
    uint64_t halves = 0;
    /* pass 0 counts, pass 1 fills the allocation, stack by stack */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t il = 0; il < hp->n_layer; il++) {
            dev_layer *l = &b->layers[il];
            struct {
                const dev_mat *m[3];
                int n;
                const uint16_t **dst;
            } st[4] = { { { &l->wq, &l->wk, &l->wv }, 3, &l->qkv16 },
                        { { &l->wo }, 1, &l->wo16 },
                        { { &l->w_gate, &l->w_up }, 2, &l->gate_up16 },
                        { { &l->w_down }, 1, &l->down16 } };
            for (int i = 0; i < 4; i++) {
                uint64_t rows = 0;
                for (int j = 0; j < st[i].n; j++)
                    rows += st[i].m[j]->ne1;
                if (pass == 0) {
                    halves += rows * st[i].m[0]->ne0;
                    continue;
                }
                if (cuda_dequant_stack(st[i].m, st[i].n, 0, rows, p, b->stream, err))
                    return smq_err_prefix(err, "cuda backend");
                *st[i].dst = p;
                p += rows * st[i].m[0]->ne0;
            }
        }
        /* The head, for decode batches (their steps' logits through cuBLAS):
         * on the q16 kernels each row read its 215 MB (SmolLM3-3B, Q6_K)
         * again, 5.9 of a 64-row step's 13 ms on an H100. */
        const dev_mat *head = &b->output;
        const char *want_head = getenv("SMQ_CUDA_F16_HEAD"); /* 0: not kept (the q16 head), to compare */
        if (b->batch_gemm && (head->type == QTYPE_Q4_K || head->type == QTYPE_Q6_K) &&
            !(want_head && !strcmp(want_head, "0"))) {
            if (pass == 0) {
                halves += head->ne1 * head->ne0;
            } else {
                if (cuda_dequant_stack(&head, 1, 0, head->ne1, p, b->stream, err))
                    return smq_err_prefix(err, "cuda backend");
                b->output16 = p;
                p += head->ne1 * head->ne0;
            }
        }
        if (pass == 0) {
            size_t free_b = 0, total_b = 0;
            CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
            if (halves * 2 + F16_ROOM > free_b)
                return 0;
            if (dev_alloc((void **)&b->w16, halves * 2, "the fp16 copy of the weights", err))
                return -1;
            b->w16_bytes = halves * 2;
            p = b->w16;
        }
    }
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return 0;
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
    const char *route = getenv("SMQ_CUDA_GEMM");
    if (route && !strcmp(route, "0"))
        return 0;
    smq_err gerr;
    if (!(b->gemm = cuda_gemm_new(b->stream, &gerr))) {
        /* still correct, only slower on prompts: say so once */
        fprintf(stderr, "%s: prompts go through the one-row products\n", gerr.msg);
        return 0;
    }
    /* SMQ_CUDA_FLASH=0: prompt rows' attention by the split-K kernel, to compare */
    const char *flash = getenv("SMQ_CUDA_FLASH");
    b->flash = fwd_prompt_attention_supported(&b->dims) && !(flash && !strcmp(flash, "0"));
    const char *batch = getenv("SMQ_CUDA_GEMM_BATCH");
    b->batch_gemm = BATCH_GEMM;
    if (batch) {
        char *end = NULL;
        unsigned long v = strtoul(batch, &end, 10);
        if (!*batch || *end || v > 1000000)
            return smq_err_set(err, "cuda backend: SMQ_CUDA_GEMM_BATCH=%s: want a number of decode rows (0: never)",
                               batch);
        b->batch_gemm = (uint32_t)v;
    }
    if (b->batch_gemm == 1)
        b->batch_gemm = 2; /* a lone decode row keeps its graph */
    if (make_f16_copy(b, err))
        return -1;
    return b->w16 ? 0
                  : dev_alloc((void **)&b->wscratch, gemm_scratch_halves(&m->hp) * sizeof(uint16_t),
                              "the products' fp16 weights", err);
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
    uint32_t G = hp->n_head / hp->n_head_kv;
    if (G > ATT_MAX_GROUP || G * hp->head_dim > ATT_MAX_GROUP_DIMS) {
        smq_err_set(err,
                    "cuda backend: %" PRIu32 " query heads of %" PRIu32 " dims per kv head: the attention kernel "
                    "takes at most %d heads and %d dims per group",
                    G, hp->head_dim, ATT_MAX_GROUP, ATT_MAX_GROUP_DIMS);
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
    const char *graphs = getenv("SMQ_CUDA_GRAPHS"), *fuse = getenv("SMQ_CUDA_FUSE");
    b->use_graphs = !(graphs && !strcmp(graphs, "0"));
    b->fuse = !(fuse && !strcmp(fuse, "0"));
    const char *fuse_norm = getenv("SMQ_CUDA_FUSE_NORM");
    b->fuse_norm = b->fuse && fuse_norm && !strcmp(fuse_norm, "1");
    const char *sample = getenv("SMQ_CUDA_SAMPLE");
    b->sample = !(sample && !strcmp(sample, "0"));
    b->dims = (fwd_dims){ hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot, hp->n_ff, cfg->page_size };
    if (create_on_device(b, err)) {
        backend *bb = &b->base;
        cuda_destroy(&bb);
        return NULL;
    }
    return &b->base;
}
/* ---- the step ---- */

/* The decode graphs hold the buffers' addresses: any regrowth drops them. */
static void drop_graphs(cuda_backend *b)
{
    for (int i = 0; i < GRAPH_WIDTHS; i++)
        if (b->graph[i]) {
            cudaGraphExecDestroy(b->graph[i]);
            b->graph[i] = NULL;
        }
}

/* Grows the activation buffers to rows, the attention partials to
 * part_floats, the logits to n_out rows and the metadata to meta_bytes. Old
 * contents are not kept. */
static int grow(cuda_backend *b, uint32_t rows, uint64_t part_floats, uint64_t n_out, uint64_t meta_bytes, smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    if (rows > b->cap_rows) {
        drop_graphs(b);
        uint32_t cap = (uint32_t)(((uint64_t)rows + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN);
        cudaFree(b->act);
        cudaFree(b->count);
        b->act = NULL;
        b->count = NULL;
        b->cap_rows = 0;
        if (dev_alloc((void **)&b->act, act_bytes(hp, cap, b->gemm != NULL), "a step's activations", err) ||
            dev_alloc((void **)&b->count, (uint64_t)cap * hp->n_head_kv * sizeof(uint32_t), "a step's counters", err))
            return -1;
        CUDA_CHECK(cudaMemsetAsync(b->count, 0, (uint64_t)cap * hp->n_head_kv * sizeof(uint32_t), b->stream));
        uint8_t *p = b->act;
        b->x = (float *)p;
        p += align_up((uint64_t)cap * hp->n_embd * 4);
        b->q = (float *)p;
        p += align_up((uint64_t)cap * q_dim(hp) * 4);
        b->a = p;
        p += align_up((uint64_t)cap * a_row_bytes(hp));
        b->a_ff = p;
        p += align_up((uint64_t)cap * q16_row_bytes(hp->n_ff));
        b->h = (uint16_t *)p;
        p += align_up((uint64_t)cap * h_width(hp) * 2);
        b->y = (float *)p; /* h and y used only with gemm, and allocated only then */
        b->cap_rows = cap;
        if (b->poison)
            CUDA_CHECK(cudaMemsetAsync(b->act, 0xFF, act_bytes(hp, cap, b->gemm != NULL), b->stream));
    }
    if (part_floats > b->cap_part) {
        drop_graphs(b);
        cudaFree(b->part);
        b->part = NULL;
        b->cap_part = 0;
        if (dev_alloc((void **)&b->part, part_floats * sizeof(float), "attention's partial results", err))
            return -1;
        b->cap_part = part_floats;
    }
    if (n_out > b->cap_out) {
        drop_graphs(b);
        cudaFree(b->logits);
        cudaFree(b->d_picked);
        cudaFreeHost(b->h_picked);
        b->logits = NULL;
        b->d_picked = b->h_picked = NULL;
        b->cap_out = 0;
        if (dev_alloc((void **)&b->logits, n_out * hp->n_vocab * sizeof(float), "a step's logits", err) ||
            dev_alloc((void **)&b->d_picked, n_out * sizeof(int32_t), "a step's sampled tokens", err))
            return -1;
        CUDA_CHECK(cudaMallocHost((void **)&b->h_picked, n_out * sizeof(int32_t)));
        b->cap_out = n_out;
        if (b->poison)
            CUDA_CHECK(cudaMemsetAsync(b->logits, 0xFF, n_out * hp->n_vocab * sizeof(float), b->stream));
    }
    if (meta_bytes > b->cap_meta) {
        drop_graphs(b);
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

/* Splits the step's rows into attention launches of at most ATT_PART_SLOTS
 * split-K slots, numbering each row's slots (row_part) within its launch;
 * rows before r_begin (prompt rows, when fwd_prompt_attention takes them)
 * are not planned.
 * Returns the most slots a launch needs. */
static uint64_t plan_attention(cuda_backend *b, const uint32_t *row_pos, uint32_t r_begin, uint32_t rows,
                               uint32_t *row_part, smq_err *err, int *failed)
{
    uint64_t most = 0, used = 0;
    *failed = 0;
    b->n_groups = 0;
    for (uint32_t r = r_begin; r < rows; r++) {
        uint32_t ns = att_splits(row_pos[r] + 1), need = ns > 1 ? ns : 0;
        if (b->n_groups == 0 || used + need > ATT_PART_SLOTS) {
            if (b->n_groups == b->cap_groups) {
                uint32_t cap = b->cap_groups ? 2 * b->cap_groups : 16;
                att_group *g = (att_group *)realloc(b->groups, cap * sizeof *g);
                if (!g) {
                    *failed = 1;
                    smq_err_set(err, "cuda backend: out of memory");
                    return 0;
                }
                b->groups = g;
                b->cap_groups = cap;
            }
            b->groups[b->n_groups++] = (att_group){ r, 0, 1 };
            used = 0;
        }
        att_group *g = &b->groups[b->n_groups - 1];
        g->rows++;
        g->max_splits = ns > g->max_splits ? ns : g->max_splits;
        row_part[r] = (uint32_t)used;
        used += need;
        most = used > most ? used : most;
    }
    return most;
}

/* Packs the step's metadata into meta_host (laid out by *sm, which this
 * fills), plans attention and sends the metadata to the device. */
static int send_meta(cuda_backend *b, const fwd_batch *batch, uint32_t rows, step_meta *sm, smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    uint32_t P = b->base.cfg.page_size;
    uint64_t n_out = 0, n_table = 0;
    uint32_t tile_rows = fwd_prompt_tile_rows(&b->dims);
    b->n_prompt = b->n_tiles = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        if (b->gemm && s->prefill) {
            b->n_prompt += s->n_tokens;
            b->n_tiles += b->flash ? (s->n_tokens + tile_rows - 1) / tile_rows : 0;
        }
        n_out += s->all_logits ? s->n_tokens : 1;
        n_table += ((uint64_t)s->pos + s->n_tokens + P - 1) / P; /* only the pages the step reaches */
    }
    /* decode rows join the cuBLAS route when there are enough of them */
    b->n_gemm = b->gemm && b->batch_gemm && rows - b->n_prompt >= b->batch_gemm ? rows : b->n_prompt;
    sm->tokens = 0;
    sm->row_pos = rows;
    sm->row_table = 2 * (uint64_t)rows;
    sm->row_part = 3 * (uint64_t)rows;
    sm->out_rows = 4 * (uint64_t)rows;
    sm->rope = sm->out_rows + n_out;
    sm->pages = sm->rope + (uint64_t)rows * hp->n_rot;
    sm->tiles = sm->pages + n_table;
    sm->words = sm->tiles + 2 * (uint64_t)b->n_tiles;
    /* a one-row step may be replayed with up to ATT_MAX_SPLITS splits */
    uint64_t slot = att_slot_floats(&b->dims), min_part = ATT_MAX_SPLITS * slot;
    if (grow(b, rows, min_part, n_out, sm->words * 4, err))
        return -1;
    uint32_t *w = (uint32_t *)b->meta_host;
    int32_t *tokens = (int32_t *)w;
    float *rope = (float *)(w + sm->rope);
    /* prompt rows first, then the generated tokens; logits in batch order */
    uint32_t next_gemm = 0, next_q16 = b->n_prompt, out = 0, table = 0, tile = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        uint32_t n_pages = (uint32_t)(((uint64_t)s->pos + s->n_tokens + P - 1) / P);
        uint32_t *next = b->gemm && s->prefill ? &next_gemm : &next_q16, r = *next;
        *next += s->n_tokens;
        for (uint32_t t0 = 0; b->flash && next == &next_gemm && t0 < s->n_tokens; t0 += tile_rows, tile++) {
            w[sm->tiles + 2 * tile] = r + t0;
            w[sm->tiles + 2 * tile + 1] = s->n_tokens - t0 < tile_rows ? s->n_tokens - t0 : tile_rows;
        }
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
    int failed;
    uint64_t slots =
        plan_attention(b, w + sm->row_pos, b->flash ? b->n_prompt : 0, rows, w + sm->row_part, err, &failed);
    if (failed || grow(b, rows, slots * slot, n_out, sm->words * 4, err))
        return -1;
    CUDA_CHECK(cudaMemcpyAsync(b->meta_dev, b->meta_host, sm->words * 4, cudaMemcpyHostToDevice, b->stream));
    return 0;
}

static int matmul(cuda_backend *b, const dev_mat *w, const uint8_t *a, uint32_t rows, float *out, int accumulate,
                  smq_err *err)
{
    if (cuda_q16_matmul(w->type, w->d, w->ne1, w->ne0, a, rows, out, w->ne1, accumulate, b->stream, err))
        return smq_err_prefix(err, "cuda backend");
    return 0;
}

static int quantize(cuda_backend *b, const uint32_t *map, const float *norm, uint8_t *out, uint32_t rows, smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    if (cuda_q16_quantize(b->x, map, norm, hp->rms_eps, hp->n_embd, rows, out, b->stream, err))
        return smq_err_prefix(err, "cuda backend");
    return 0;
}

/* x += W a for the q16 rows at a, then x's rows normed by norm into b->a
 * (as quantize(b, NULL, norm, b->a, rows) would): in the product's last
 * blocks when the backend fuses, else by another launch. */
static int matmul_norm(cuda_backend *b, const dev_mat *w, const uint8_t *a, uint32_t rows, const float *norm,
                       smq_err *err)
{
    /* in place (a is b->a) only where a row's output covers no other row's input */
    int fits = a != b->a || rows == 1 || q16_row_bytes(w->ne0) == q16_row_bytes(w->ne1);
    if (!b->fuse_norm || !fits)
        return matmul(b, w, a, rows, b->x, 1, err) || quantize(b, NULL, norm, b->a, rows, err) ? -1 : 0;
    if (cuda_q16_matmul_norm(w->type, w->d, w->ne1, w->ne0, a, rows, b->x, 1, norm, b->base.m->hp.rms_eps, b->a,
                             b->count, b->stream, err))
        return smq_err_prefix(err, "cuda backend");
    return 0;
}

/* Rows [0, n_gemm) of the q16 activations act (rows of ws[0]->ne0) times the
 * stacked ws (or their fp16 copy w16), through fp16 and cuBLAS, into y (rows
 * y_stride floats apart). */
static int gemm_product(cuda_backend *b, const dev_mat *const *ws, int n_w, const uint16_t *w16, const uint8_t *act,
                        float *y, uint64_t y_stride, int accumulate, smq_err *err)
{
    uint64_t k = ws[0]->ne0, rows = 0;
    for (int i = 0; i < n_w; i++)
        rows += ws[i]->ne1;
    if (cuda_q16_to_f16(act, k, b->n_gemm, b->h, b->stream, err) ||
        (w16 ? cuda_gemm_run_f16(b->gemm, w16, rows, k, b->h, b->n_gemm, y, y_stride, accumulate, err)
             : cuda_gemm_run(b->gemm, ws, n_w, b->h, b->n_gemm, y, y_stride, accumulate, b->wscratch,
                             gemm_scratch_halves(&b->base.m->hp), err)))
        return smq_err_prefix(err, "cuda backend");
    return 0;
}

/* A layer: rows [0, ng) (prompts) take their products through gemm_product,
 * rows [ng, rows) through the q16 kernels; the norms see all, and so does
 * attention but for the prompt rows fwd_prompt_attention takes (tiles). */
static int layer_forward(cuda_backend *b, uint32_t il, uint32_t rows, const fwd_meta *fm, smq_err *err)
{
    const backend_config *c = &b->base.cfg;
    const hparams *hp = &b->base.m->hp;
    const dev_layer *l = &b->layers[il];
    __half *kv_layer = b->kv + (uint64_t)il * c->n_pages * c->page_size * 2 * b->kv_dim;
    uint32_t ng = b->n_gemm, nq = rows - ng, n_embd = hp->n_embd;
    uint64_t qd = q_dim(hp), rb_e = q16_row_bytes(n_embd), rb_q = q16_row_bytes(qd), rb_ff = q16_row_bytes(hp->n_ff);
    fwd_meta fq = *fm; /* the q16 rows' metadata */
    fq.tokens += ng;
    fq.row_pos += ng;
    fq.row_table += ng;
    fq.row_part += ng;
    fq.rope += (uint64_t)ng * hp->n_rot;
    const dev_mat *qkv[3] = { &l->wq, &l->wk, &l->wv }, *wo = &l->wo, *gate_up[2] = { &l->w_gate, &l->w_up },
                  *down = &l->w_down;

    /* A step of q16 rows only: the residual products norm their outputs
     * (matmul_norm), the previous layer's down this layer's input. */
    int q16_only = ng == 0;
    if (!(q16_only && il > 0) && quantize(b, NULL, l->attn_norm, b->a, rows, err))
        return -1;
    if (ng && (gemm_product(b, qkv, 3, l->qkv16, b->a, b->y, qd + 2 * b->kv_dim, 0, err) ||
               fwd_qkv_store(b->y, ng, &b->dims, l->use_rope, fm, b->q, kv_layer, b->stream, err)))
        return -1;
    if (nq && fwd_qkv_rope(&l->wq, &l->wk, &l->wv, b->a + ng * rb_e, nq, &b->dims, l->use_rope, &fq, b->q + ng * qd,
                           kv_layer, b->stream, err))
        return -1;
    if (b->n_tiles && fwd_prompt_attention(b->q, kv_layer, b->d_tiles, b->n_tiles, &b->dims, fm, b->a, b->stream, err))
        return -1;
    for (uint32_t g = 0; g < b->n_groups; g++) {
        const att_group *ag = &b->groups[g];
        if (fwd_attention(b->q, kv_layer, ag->r0, ag->rows, ag->max_splits, &b->dims, fm, b->part,
                          b->fuse ? b->count : NULL, b->a, b->stream, err))
            return -1;
    }
    if (q16_only ? matmul_norm(b, wo, b->a, rows, l->ffn_norm, err)
                 : (gemm_product(b, &wo, 1, l->wo16, b->a, b->x, n_embd, 1, err) ||
                    (nq && matmul(b, wo, b->a + ng * rb_q, nq, b->x + (uint64_t)ng * n_embd, 1, err)) ||
                    quantize(b, NULL, l->ffn_norm, b->a, rows, err)))
        return -1;
    if (ng && (gemm_product(b, gate_up, 2, l->gate_up16, b->a, b->y, 2 * (uint64_t)hp->n_ff, 0, err) ||
               fwd_swiglu(b->y, ng, &b->dims, b->a_ff, b->stream, err)))
        return -1;
    if (nq && fwd_gate_up(&l->w_gate, &l->w_up, b->a + ng * rb_e, nq, &b->dims, b->a_ff + ng * rb_ff, b->stream, err))
        return -1;
    if (q16_only && il + 1 < hp->n_layer)
        return matmul_norm(b, down, b->a_ff, rows, b->layers[il + 1].attn_norm, err);
    return (ng && gemm_product(b, &down, 1, l->down16, b->a_ff, b->x, n_embd, 1, err)) ||
                   (nq && matmul(b, down, b->a_ff + ng * rb_ff, nq, b->x + (uint64_t)ng * n_embd, 1, err))
               ? -1
               : 0;
}

/* Enqueues the step's kernels, from the embedding to the logits. */
static int enqueue_step(cuda_backend *b, uint32_t rows, const step_meta *sm, smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    const uint32_t *meta = (const uint32_t *)b->meta_dev;
    fwd_meta fm = { (const int32_t *)meta + sm->tokens,
                    meta + sm->row_pos,
                    meta + sm->row_table,
                    meta + sm->row_part,
                    meta + sm->pages,
                    (const float *)(meta + sm->rope) };
    b->d_tiles = meta + sm->tiles;
    if (fwd_embed(b->token_embd.type, b->token_embd.d, b->token_embd.row_bytes,
                  b->token_embd.type == QTYPE_Q5_K ? (uint32_t)sizeof(block_q5_K) : dev_block_bytes(b->token_embd.type),
                  fm.tokens, b->x, hp->n_embd, rows, b->stream, err))
        return -1;
    for (uint32_t il = 0; il < hp->n_layer; il++)
        if (layer_forward(b, il, rows, &fm, err))
            return -1;
    /* The rows whose logits are asked for, normed and quantized, times the head. */
    uint32_t n_out = (uint32_t)(sm->rope - sm->out_rows);
    if (quantize(b, meta + sm->out_rows, b->output_norm, b->a, n_out, err))
        return -1;
    /* a decode batch on the cuBLAS route (no prompt rows: theirs keep their
     * single-row numbers) reads the head once for all its rows */
    if (b->output16 && b->n_prompt == 0 && b->n_gemm > 0) {
        if (cuda_q16_to_f16(b->a, hp->n_embd, n_out, b->h, b->stream, err) ||
            cuda_gemm_run_f16(b->gemm, b->output16, hp->n_vocab, hp->n_embd, b->h, n_out, b->logits, hp->n_vocab, 0,
                              err))
            return smq_err_prefix(err, "cuda backend");
        return 0;
    }
    return matmul(b, &b->output, b->a, n_out, b->logits, 0, err);
}

/* Captures a one-row step's kernels into *exec. */
static int capture_step(cuda_backend *b, const step_meta *sm, cudaGraphExec_t *exec, smq_err *err)
{
    cudaGraph_t g = NULL;
    CUDA_CHECK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal));
    int rc = enqueue_step(b, 1, sm, err);
    cudaError_t e = cudaStreamEndCapture(b->stream, &g);
    if (rc || e != cudaSuccess) {
        if (g)
            cudaGraphDestroy(g);
        return rc ? -1 : smq_err_set(err, "cuda backend: capturing the decode step: %s", cudaGetErrorString(e));
    }
    size_t nodes = 0;
    if (cudaGraphGetNodes(g, NULL, &nodes) == cudaSuccess)
        b->graph_nodes = (uint32_t)nodes;
    cudaGetLastError();
    e = cudaGraphInstantiate(exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        *exec = NULL;
        return smq_err_set(err, "cuda backend: instantiating the decode step's graph: %s", cudaGetErrorString(e));
    }
    return 0;
}

/* A one-token step from its graph, captured on first use for the width of
 * its attention's split-K grid (att_splits rounded up to a power of two;
 * splits past the row's own do nothing). A driver that cannot put
 * programmatic launches (launch.cuh) in a graph gets ordinary ones. */
static int replay_step(cuda_backend *b, const step_meta *sm, smq_err *err)
{
    uint32_t width = 0;
    while ((1u << width) < b->groups[0].max_splits)
        width++;
    b->groups[0].max_splits = 1u << width;
    bool had = pdl_on();
    if (!b->graph[width] && capture_step(b, sm, &b->graph[width], err)) {
        if (!had)
            return -1;
        /* again with ordinary launches: PDL is given up if that works */
        cudaGetLastError();
        pdl_hold(true);
        int rc = capture_step(b, sm, &b->graph[width], err);
        pdl_hold(false);
        if (rc)
            return -1;
        pdl_give_up();
    }
    CUDA_CHECK(cudaGraphLaunch(b->graph[width], b->stream));
    return 0;
}

/* Whether this step chooses s's token on the device (fwd_sample). */
static int takes_pick(const cuda_backend *b, const fwd_seq *s)
{
    return b->sample && !b->no_room && s->pick && !s->all_logits;
}

/* The sampler's buffers for n_picks picks and bytes of parameters: 0, or -1
 * (with err) when the device has no room for them. */
static int grow_picks(cuda_backend *b, uint32_t n_picks, uint64_t bytes, smq_err *err)
{
    if (bytes > b->cap_pick) {
        uint64_t cap = bytes * 2;
        cudaFree(b->pick_dev);
        cudaFreeHost(b->pick_host);
        b->pick_dev = b->pick_host = NULL;
        b->cap_pick = 0;
        if (dev_alloc((void **)&b->pick_dev, cap, "a step's sampling parameters", err))
            return -1;
        if (cudaMallocHost((void **)&b->pick_host, cap) != cudaSuccess) {
            cudaGetLastError();
            return smq_err_set(err, "cuda backend: cannot pin %llu bytes for the sampling parameters",
                               (unsigned long long)cap);
        }
        b->cap_pick = cap;
    }
    if (n_picks > b->cap_slots) {
        cudaFree(b->slots);
        b->slots = NULL;
        b->cap_slots = 0;
        if (dev_alloc((void **)&b->slots, (uint64_t)n_picks * b->base.m->hp.n_vocab * sizeof(uint64_t),
                      "the sampler's scratch", err))
            return -1;
        b->cap_slots = n_picks;
    }
    return 0;
}

/* Runs the step's picks (fwd_seq.pick) on the device after its logits:
 * their parameters, uniforms and penalty pairs go over in one copy, the
 * chosen tokens come back into h_picked, in batch order. */
static int run_picks(cuda_backend *b, const fwd_batch *batch, smq_err *err)
{
    const hparams *hp = &b->base.m->hp;
    uint64_t n_pairs = 0;
    uint32_t n_picks = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++)
        if (takes_pick(b, &batch->seqs[i])) {
            n_picks++;
            n_pairs += batch->seqs[i].pick->n_pen;
        }
    if (!n_picks)
        return 0;
    uint64_t rows_bytes = n_picks * sizeof(fwd_pick_row), bytes = rows_bytes + n_pairs * 2 * sizeof(uint32_t);
    smq_err room;
    if (grow_picks(b, n_picks, bytes, &room)) {
        /* No room to sample on the device: this step's logits go back and
         * the host samples (the step itself is fine). Said once. */
        if (!b->told_no_room)
            fprintf(stderr, "%s; sampling on the host for such steps\n", room.msg);
        b->told_no_room = 1;
        b->no_room = 1;
        return 0;
    }
    fwd_pick_row *rows = (fwd_pick_row *)b->pick_host;
    uint32_t *pairs = (uint32_t *)(b->pick_host + rows_bytes);
    uint32_t k = 0, out = 0, pen = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        if (takes_pick(b, s)) {
            const sample_pick *pk = s->pick;
            rows[k++] = (fwd_pick_row){ pk->p, pk->u, out, pen, pk->n_pen, 0 };
            for (uint32_t j = 0; j < pk->n_pen; j++, pen++) {
                pairs[2 * pen] = (uint32_t)pk->pen_tokens[j];
                pairs[2 * pen + 1] = pk->pen_counts[j];
            }
        }
        out += s->all_logits ? s->n_tokens : 1;
    }
    CUDA_CHECK(cudaMemcpyAsync(b->pick_dev, b->pick_host, bytes, cudaMemcpyHostToDevice, b->stream));
    if (fwd_sample(b->logits, hp->n_vocab, (const fwd_pick_row *)b->pick_dev, n_picks,
                   (const uint32_t *)(b->pick_dev + rows_bytes), b->slots, b->d_picked, b->stream, err))
        return -1;
    CUDA_CHECK(cudaMemcpyAsync(b->h_picked, b->d_picked, n_picks * sizeof(int32_t), cudaMemcpyDeviceToHost, b->stream));
    return 0;
}

static int cuda_forward(backend *base, const fwd_batch *batch, smq_err *err)
{
    cuda_backend *b = (cuda_backend *)base;
    const hparams *hp = &base->m->hp;
    uint32_t rows = 0;
    step_meta sm;
    if (backend_check_batch(base, batch, &rows, err))
        return -1;
    CUDA_CHECK(cudaSetDevice(b->device));
    b->no_room = 0;
    int rc = send_meta(b, batch, rows, &sm, err);
    if (!rc)
        rc = rows == 1 && b->use_graphs && !b->n_gemm ? replay_step(b, &sm, err) : enqueue_step(b, rows, &sm, err);
    /* The picks offered are run here (fwd_sample), and only their tokens
     * come back (4 bytes instead of n_vocab floats); the other sequences'
     * logits do. */
    if (!rc)
        rc = run_picks(b, batch, err);
    uint64_t at = 0;
    for (uint32_t i = 0; !rc && i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        uint64_t n = (uint64_t)(s->all_logits ? s->n_tokens : 1) * hp->n_vocab;
        cudaError_t e = takes_pick(b, s) ? cudaSuccess
                                         : cudaMemcpyAsync(s->logits, b->logits + at, n * sizeof(float),
                                                           cudaMemcpyDeviceToHost, b->stream);
        if (e != cudaSuccess)
            rc = smq_err_set(err, "cuda backend: copying the logits back: %s", cudaGetErrorString(e));
        at += n;
    }
    /* Always drained, a failed step too: the next step rewrites the pinned
     * metadata that copies of this one may still be reading. */
    cudaError_t e = cudaStreamSynchronize(b->stream);
    if (!rc && e != cudaSuccess)
        rc = smq_err_set(err, "cuda backend: the step failed on the GPU: %s", cudaGetErrorString(e));
    for (uint32_t i = 0, k = 0; !rc && i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        if (takes_pick(b, s))
            s->pick->token = b->h_picked[k++];
    }
    return rc;
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
    if (grow(b, 1, 0, 1, 2 * (uint64_t)n_pages * sizeof(uint32_t), err))
        return -1;
    memcpy(b->meta_host, src, n_pages * sizeof(uint32_t));
    memcpy(b->meta_host + n_pages * sizeof(uint32_t), dst, n_pages * sizeof(uint32_t));
    CUDA_CHECK(cudaMemcpyAsync(b->meta_dev, b->meta_host, 2 * (uint64_t)n_pages * sizeof(uint32_t),
                               cudaMemcpyHostToDevice, b->stream));
    const uint32_t *d = (const uint32_t *)b->meta_dev;
    uint64_t layer_halves = (uint64_t)base->cfg.n_pages * P * 2 * b->kv_dim;
    launch_plain(copy_kv_kernel, dim3(n_tokens, base->m->hp.n_layer), 256, 0, b->stream, b->kv, d, d + n_pages, P,
                 layer_halves, 2 * b->kv_dim);
    LAUNCH_CHECK("copy_kv");
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return 0;
}

static uint64_t cuda_memory(const backend *base)
{
    const cuda_backend *b = (const cuda_backend *)base;
    const hparams *hp = &base->m->hp;
    return b->weight_bytes + b->kv_bytes + (b->cap_rows ? act_bytes(hp, b->cap_rows, b->gemm != NULL) : 0) +
           (b->wscratch ? gemm_scratch_halves(hp) * sizeof(uint16_t) : 0) + b->w16_bytes + b->cap_part * sizeof(float) +
           b->cap_out * hp->n_vocab * sizeof(float) + b->cap_meta + b->cap_pick +
           (uint64_t)b->cap_rows * hp->n_head_kv * sizeof(uint32_t) +
           (uint64_t)b->cap_slots * hp->n_vocab * sizeof(uint64_t);
}

extern "C" int cuda_backend_poison(backend *base, int kv, smq_err *err)
{
    cuda_backend *b = (cuda_backend *)base;
    const hparams *hp = &base->m->hp;
    CUDA_CHECK(cudaSetDevice(b->device));
    b->poison = 1;
    if (b->act)
        CUDA_CHECK(cudaMemsetAsync(b->act, 0xFF, act_bytes(hp, b->cap_rows, b->gemm != NULL), b->stream));
    if (b->wscratch)
        CUDA_CHECK(cudaMemsetAsync(b->wscratch, 0xFF, gemm_scratch_halves(hp) * sizeof(uint16_t), b->stream));
    if (b->part)
        CUDA_CHECK(cudaMemsetAsync(b->part, 0xFF, b->cap_part * sizeof(float), b->stream));
    if (b->logits)
        CUDA_CHECK(cudaMemsetAsync(b->logits, 0xFF, b->cap_out * hp->n_vocab * sizeof(float), b->stream));
    if (kv)
        CUDA_CHECK(cudaMemsetAsync(b->kv, 0xFF, b->kv_bytes, b->stream));
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return 0;
}

extern "C" uint32_t cuda_backend_step_nodes(const backend *base)
{
    return ((const cuda_backend *)base)->graph_nodes;
}

extern "C" void cuda_set_pdl(int on)
{
    pdl_hold(!on);
}

extern "C" int cuda_pdl_active(void)
{
    return pdl_on();
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
        launch_plain(read_kernel, 1024, 512, 0, 0, buf, bytes / sizeof(uint4), out);
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
