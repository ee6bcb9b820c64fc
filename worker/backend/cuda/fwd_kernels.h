/* fwd_kernels.h - the fused kernels of the CUDA forward pass (fwd_kernels.cu),
 * each behind a launcher that checks its launch. cuda_backend.cu composes
 * them with matvec.h's products into a step:
 *
 *   embed          x = token_embd[tok]
 *   per layer      a = q16(rmsnorm(x) * attn_norm)            cuda_q16_quantize
 *                  q, k, v = W a; RoPE; k, v into the KV page  fwd_qkv_rope
 *                  a = q16(attention(q, K, V))                 fwd_attention
 *                  x += Wo a                                   cuda_q16_matmul
 *                  a = q16(rmsnorm(x) * ffn_norm)              cuda_q16_quantize
 *                  a = q16(silu(Wgate a) * Wup a)              fwd_gate_up
 *                  x += Wdown a                                cuda_q16_matmul
 *   head           logits = Wout q16(rmsnorm(x) * output_norm)
 *
 * Prompt rows (fwd_seq.prefill), and the generated tokens of a large
 * batch, take their products through gemm.h instead (q16 rows to fp16,
 * cuBLAS), then fwd_qkv_store and fwd_swiglu finish what fwd_qkv_rope and
 * fwd_gate_up fuse; prompt rows' attention is fwd_prompt_attention (tensor
 * cores); the head stays q16, and fwd_sample runs the sampling chain on the
 * device, so that only tokens come back.
 *
 * Every kernel computes a row (a token) with a fixed order of operations
 * that depends on nothing but that row (and its position), so that batches
 * and prefill chunks give each row the numbers it gets alone.
 */
#ifndef SMQ_CUDA_FWD_KERNELS_H
#define SMQ_CUDA_FWD_KERNELS_H

#include <cuda_fp16.h>
#include <stdint.h>

#include "err.h"
#include "matvec.h"
#include "qtype.h"
#include "sample_chain.h"

#if defined(__CUDACC__) || defined(SMQ_CUDA_EMU) /* nvcc, or tests/emu */
/* After every launch: a failed launch goes into err, and the caller returns
 * -1. */
#define LAUNCH_CHECK(kernel)                                                                                           \
    do {                                                                                                               \
        cudaError_t e_ = cudaGetLastError();                                                                           \
        if (e_ != cudaSuccess)                                                                                         \
            return smq_err_set(err, "cuda backend: kernel %s: %s", kernel, cudaGetErrorString(e_));                    \
    } while (0)

/* The same for a launch's returned error (pdl_launch, launch.cuh). */
#define PDL_CHECK(e, kernel)                                                                                           \
    do {                                                                                                               \
        if ((e) != cudaSuccess)                                                                                        \
            return smq_err_set(err, "cuda backend: kernel %s: %s", kernel, cudaGetErrorString(e));                     \
    } while (0)
#endif

/* The step's metadata on the device. Row r of the step: its position, the
 * offset of its sequence's page table in pages, and (attention) the first
 * of its split-K slots in the partial-results buffer. */
typedef struct fwd_meta {
    const int32_t *tokens;
    const uint32_t *row_pos, *row_table, *row_part, *pages;
    const float *rope; /* [rows][n_rot]: cos, sin of each rotated pair */
} fwd_meta;

typedef struct fwd_dims {
    uint32_t n_embd, n_head, n_head_kv, head_dim, n_rot, n_ff, page_size;
} fwd_dims;

/* Split-K of a row's attention over its n_ctx cached positions: splits of
 * att_split_len(n_ctx) positions (a multiple of 32, at least
 * ATT_MIN_SPLIT), at most ATT_MAX_SPLITS of them. A function of n_ctx
 * alone. 32-position splits (4 of the kernel's 8 warps, 8 positions each)
 * spread a short context over as many thread blocks as it fills; a long
 * one's splits keep all 8 warps streaming its keys and values. */
#define ATT_MIN_SPLIT  32
#define ATT_MAX_SPLITS 32

static inline __host__ __device__ uint32_t att_split_len(uint32_t n_ctx)
{
    uint32_t len = (n_ctx + ATT_MAX_SPLITS - 1) / ATT_MAX_SPLITS;
    len = (len + 31) / 32 * 32;
    return len < ATT_MIN_SPLIT ? ATT_MIN_SPLIT : len;
}

static inline __host__ __device__ uint32_t att_splits(uint32_t n_ctx)
{
    uint32_t len = att_split_len(n_ctx);
    return (n_ctx + len - 1) / len;
}

/* Floats of one split-K slot: per query head, max, sum and head_dim values. */
static inline __host__ __device__ uint64_t att_slot_floats(const fwd_dims *d)
{
    return (uint64_t)d->n_head * (d->head_dim + 2);
}

/* The largest G * head_dim (query heads of a KV group times their dims)
 * the attention kernel holds. */
#define ATT_MAX_GROUP_DIMS 1024
#define ATT_MAX_GROUP      8

/* x[r] = row tokens[r] of the embedding table (type, rows of row_bytes,
 * K-quant blocks block_bytes apart), for r < rows. */
int fwd_embed(qtype type, const uint8_t *embd, uint64_t row_bytes, uint32_t block_bytes, const int32_t *tokens,
              float *x, uint32_t n_embd, uint32_t rows, void *stream, smq_err *err);

/* q[r] = Wq a[r] and the row's key and value slot in kv_layer ([page]
 * [page_size][2][kv_dim] fp16) = Wk a[r], Wv a[r], q and k rotated (RoPE
 * NORM, first n_rot dims of each head) when use_rope. a: q16 rows of n_embd. */
int fwd_qkv_rope(const dev_mat *wq, const dev_mat *wk, const dev_mat *wv, const uint8_t *act, uint32_t rows,
                 const fwd_dims *d, int use_rope, const fwd_meta *m, float *q, __half *kv_layer, void *stream,
                 smq_err *err);

/* The same from products already made (gemm.h): y[r] = Wq a[r], Wk a[r],
 * Wv a[r] (n_head * head_dim + 2 kv_dim floats), rotated and stored as
 * fwd_qkv_rope does. */
int fwd_qkv_store(const float *y, uint32_t rows, const fwd_dims *d, int use_rope, const fwd_meta *m, float *q,
                  __half *kv_layer, void *stream, smq_err *err);

/* Causal attention of rows [r0, r0 + rows) over their cached positions,
 * into q16 rows of n_head * head_dim at out (row r0 first). Rows of more
 * than one split leave partial results in part (at their row_part slots,
 * relative to part), merged in split order: with count (rows x n_head_kv
 * words from row r0's, zero, and left zero) by the last split to finish of
 * each KV group, else by a second kernel (the same bits); max_splits is the
 * most splits any of these rows has. */
int fwd_attention(const float *q, const __half *kv_layer, uint32_t r0, uint32_t rows, uint32_t max_splits,
                  const fwd_dims *d, const fwd_meta *m, float *part, uint32_t *count, uint8_t *out, void *stream,
                  smq_err *err);

/* Causal attention of prompt rows on the tensor cores (fp16 Q, K, V and P,
 * fp32 sums), into q16 rows as fwd_attention: tiles[2i], tiles[2i+1] are the
 * first row and the row count (at most fwd_prompt_tile_rows) of tile i, its
 * rows consecutive positions of one sequence. For heads of 64 or 128 dims
 * and groups that divide 64 (fwd_prompt_attention_supported). */
int fwd_prompt_attention_supported(const fwd_dims *d);
uint32_t fwd_prompt_tile_rows(const fwd_dims *d);
int fwd_prompt_attention(const float *q, const __half *kv_layer, const uint32_t *tiles, uint32_t n_tiles,
                         const fwd_dims *d, const fwd_meta *m, uint8_t *out, void *stream, smq_err *err);

/* a_ff[r] = q16(silu(Wgate a[r]) * Wup a[r]); a: q16 rows of n_embd, a_ff of n_ff. */
int fwd_gate_up(const dev_mat *gate, const dev_mat *up, const uint8_t *act, uint32_t rows, const fwd_dims *d,
                uint8_t *act_ff, void *stream, smq_err *err);

/* The same from products already made (gemm.h): y[r] = Wgate a[r], Wup a[r]
 * (2 n_ff floats). */
int fwd_swiglu(const float *y, uint32_t rows, const fwd_dims *d, uint8_t *act_ff, void *stream, smq_err *err);

/* A pick run on the device (sample.cu): the chain's parameters and uniform
 * for logits row `row`, and its penalty window's pairs (token, count) from
 * index pen of the step's pairs. */
typedef struct fwd_pick_row {
    sampling_params p;
    double u;
    uint32_t row, pen, n_pen, unused;
} fwd_pick_row;

/* out[i] = the token the sampling chain (sample_chain.h) chooses for pick i
 * of n_picks, from its row of logits (n_vocab; the penalties are applied in
 * place), the same token sampler_choose gives for the same logits and pick.
 * slots: n_picks x n_vocab words of scratch. */
int fwd_sample(float *logits, uint32_t n_vocab, const fwd_pick_row *picks, uint32_t n_picks, const uint32_t *pairs,
               uint64_t *slots, int32_t *out, void *stream, smq_err *err);

#endif
