/* cpu_backend.c - SmolLM3's forward pass on the CPU, the reference function.
 *
 * All arithmetic is float32 on weights dequantized row by row from their
 * blocks (bit-exact with ggml's dequantization), with an f32 KV cache: the
 * function llama.cpp's "exact" goldens define. A step's tokens, from every
 * sequence in the batch, are rows of one activation matrix, so each weight
 * row is dequantized once per step whatever the batch.
 *
 *   x = token_embd[tok]
 *   for each layer:
 *       h = rmsnorm(x) * attn_norm
 *       q, k, v = Wq h, Wk h, Wv h;  rope(q, k) unless a NoPE layer
 *       store k, v in the sequence's KV pages
 *       x += Wo attention(q, K, V)                  (causal, GQA)
 *       h = rmsnorm(x) * ffn_norm
 *       x += Wdown (silu(Wgate h) * Wup h)
 *   logits = Wout (rmsnorm(x) * output_norm)
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "rope.h"
#include "cpu_ops.h"
#include "qdot.h"
#include "quant.h"
#include "threadpool.h"

#define ROWS_PER_TASK 32
/* Rows of one sequence that attend together: each reads a key or value once
 * for all of them (prefill), for a scores buffer this many times larger. */
#define ATTN_ROWS 8
/* Rows of x per run of the 16-row kernels: as many as fit in about 768 KB
 * of L2 (each run unpacks the weights once more), 64 to 256. */
#define QGEMM_X_BYTES (768u << 10)
#define QGEMM_TOKENS  256
/* Logit rows one product with the output matrix writes at most. The matrix
 * is the model's largest (128256 rows for SmolLM3: 215 MB in Q6_K), so a
 * decode step of many sequences reads it once for up to this many of them,
 * not once each. */
#define HEAD_ROWS 64

typedef struct cpu_backend {
    backend base;
    threadpool *pool;
    uint32_t kv_dim;
    float *kv; /* [n_layer][n_pages][page_size][2][kv_dim] */
    uint64_t kv_bytes;
    /* per-step activations, grown to the largest step seen */
    uint32_t cap_rows;
    float *x, *h, *q, *k, *v, *att, *gate, *up, *rope; /* rope: [rows][n_rot/2][2] */
    uint32_t *row_seq, *row_pos;
    uint32_t *blk_row0, n_blk; /* attention blocks: their first rows, up to ATTN_ROWS of one sequence each */
    /* per-thread scratch */
    float *deq;     /* [threads][ROWS_PER_TASK * max_k] */
    block_q8_K *xq; /* fast path: the step's activation rows in Q8_K */
    uint64_t cap_xq;
    const float *xq_src; /* what xq holds: these rows of x, quantized */
    uint32_t xq_rows;
    float *gacc; /* fast path, 16-row kernels: [threads][QGEMM_TOKENS][16] */
    uint64_t cap_gacc;
    float *scores; /* [threads][ATTN_ROWS][query heads per KV head][max_ctx] */
    uint64_t max_k, max_ctx;
    float *logits; /* [cap_logits][n_vocab]: a head product for several sequences, before it is copied out */
    uint32_t cap_logits;
} cpu_backend;

/* ---- matrix products on quantized weights ---- */

typedef struct matmul_job {
    cpu_backend *b;
    const model_tensor *w;
    qdot_fn qdot;         /* fast path, or NULL */
    qdot4_fn qdot4;       /* fast path, four rows of x at a time */
    qgemm16_fn qgemm16;   /* fast path, sixteen weight rows at a time for every row of x */
    const block_q8_K *xq; /* fast path: x quantized, nb blocks per row */
    uint32_t nb;
    const float *x; /* [rows][x_stride] */
    uint32_t rows, x_stride;
    float *out; /* [rows][out_stride] */
    uint32_t out_stride;
    int accumulate;     /* out += instead of out = */
    uint32_t task_rows; /* weight rows per task */
} matmul_job;

/* o += a for 16 floats (restrict: vectorized without a run-time overlap check) */
static inline void add16(float *restrict o, const float *restrict a)
{
    for (int i = 0; i < 16; i++)
        o[i] += a[i];
}

/* One task: task_rows weight rows (dequantized once on the f32 path) times every row of x. */
static void matmul_task(void *ctx, int task, int thread)
{
    matmul_job *j = ctx;
    const model_tensor *w = j->w;
    uint64_t n0 = (uint64_t)task * j->task_rows, n1 = n0 + j->task_rows;
    if (n1 > w->ne1)
        n1 = w->ne1;
    if (j->qdot) {
        uint64_t n = n0;
        /* Many rows of x: sixteen weight rows unpacked once for all of them. */
        if (j->qgemm16) {
            /* x in runs of rows that stay in L2 while the
             * task's weight rows pass by 16 at a time */
            float *acc = j->b->gacc + (uint64_t)thread * QGEMM_TOKENS * 16;
            uint32_t run = QGEMM_X_BYTES / (j->nb * (uint32_t)sizeof(block_q8_K));
            run = run < 64 ? 64 : run > QGEMM_TOKENS ? QGEMM_TOKENS : run;
            uint64_t n_end = n + (n1 - n) / 16 * 16;
            for (uint32_t t0 = 0; t0 < j->rows; t0 += run) {
                uint32_t nt = j->rows - t0 < run ? j->rows - t0 : run;
                for (uint64_t r = n; r < n_end; r += 16) {
                    j->qgemm16((const uint8_t *)w->data + r * w->row_bytes, w->row_bytes, j->xq + (uint64_t)t0 * j->nb,
                               j->nb, (int)nt, (int)j->nb, acc);
                    for (uint32_t t = 0; t < nt; t++) {
                        float *o = j->out + (uint64_t)(t0 + t) * j->out_stride + r;
                        const float *a = acc + 16 * t;
                        if (j->accumulate)
                            add16(o, a);
                        else
                            memcpy(o, a, 16 * sizeof *o);
                    }
                }
            }
            n = n_end;
        }
        /* Four activation rows at a time against every weight row left: the
         * four rows stay in L1 while the weight rows (at most ROWS_PER_TASK,
         * L2-sized) pass by. All kernels give bit-identical results, so how
         * rows are grouped does not change them. */
        uint32_t t = 0;
        for (; j->qdot4 && t + 4 <= j->rows; t += 4) {
            for (uint64_t r = n; r < n1; r++) {
                float d[4];
                j->qdot4((const uint8_t *)w->data + r * w->row_bytes, j->xq + (uint64_t)t * j->nb, j->nb, (int)j->nb,
                         d);
                for (int k = 0; k < 4; k++) {
                    float *o = j->out + (uint64_t)(t + (uint32_t)k) * j->out_stride + r;
                    *o = j->accumulate ? *o + d[k] : d[k];
                }
            }
        }
        for (; t < j->rows; t++) {
            /* The rows in two interleaved halves: two streams from memory
             * keep more reads in flight than one. On the dev VM, decode of
             * the 3B synth: 2 threads 11.0 -> 12.0-12.6 tok/s, 1 thread
             * 6.1 -> 6.5-6.7 (three or four streams: no better). */
            uint64_t half = (n1 - n + 1) / 2;
            for (uint64_t i = 0; i < half; i++)
                for (uint64_t r = n + i; r < n1; r += half) {
                    float d =
                        j->qdot((const uint8_t *)w->data + r * w->row_bytes, j->xq + (uint64_t)t * j->nb, (int)j->nb);
                    float *o = j->out + (uint64_t)t * j->out_stride + r;
                    *o = j->accumulate ? *o + d : d;
                }
        }
        return;
    }
    float *buf = j->b->deq + (uint64_t)thread * ROWS_PER_TASK * j->b->max_k;
    for (uint64_t n = n0; n < n1; n++)
        quant_dequant_row(w->type, (const uint8_t *)w->data + n * w->row_bytes, buf + (n - n0) * w->ne0, w->ne0);
    for (uint32_t t = 0; t < j->rows; t++) {
        const float *xt = j->x + (uint64_t)t * j->x_stride;
        float *o = j->out + (uint64_t)t * j->out_stride;
        for (uint64_t n = n0; n < n1; n++) {
            float d = dot_f32(buf + (n - n0) * w->ne0, xt, (int)w->ne0);
            o[n] = j->accumulate ? o[n] + d : d;
        }
    }
}

/* Quantizing x to Q8_K, split into runs of blocks across the pool. */
#define QUANT_BLOCKS_PER_TASK 16

typedef struct quant_job {
    const float *x;
    uint32_t x_stride, nb, tasks_per_row;
    block_q8_K *out;
} quant_job;

static void quant_task(void *ctx, int task, int thread)
{
    (void)thread;
    quant_job *j = ctx;
    uint32_t row = (uint32_t)task / j->tasks_per_row, b0 = (uint32_t)task % j->tasks_per_row * QUANT_BLOCKS_PER_TASK;
    uint32_t n = j->nb - b0 < QUANT_BLOCKS_PER_TASK ? j->nb - b0 : QUANT_BLOCKS_PER_TASK;
    q8k_quantize(j->x + (uint64_t)row * j->x_stride + (uint64_t)b0 * QK_K, j->out + (uint64_t)row * j->nb + b0, (int)n);
}

/* out[t][n] (+)= sum_k W[n][k] x[t][k]. same_x: x holds what it held at the
 * previous product (whose quantized rows can serve again). */
static void matmul(cpu_backend *b, const model_tensor *w, const float *x, uint32_t rows, uint32_t x_stride, float *out,
                   uint32_t out_stride, int accumulate, int same_x)
{
    matmul_job j = { b, w, NULL, NULL, NULL, NULL, 0, x, rows, x_stride, out, out_stride, accumulate, ROWS_PER_TASK };
    /* x is new: whatever xq holds is of an older x, even at the same address
     * (a product of a type without integer kernels quantizes nothing). */
    if (!same_x)
        b->xq_src = NULL;
    /* Fast path: quantize the rows of x once, then integer dot products. */
    if (!b->base.cfg.exact && w->ne0 % QK_K == 0 && (j.qdot = qdot_for(w->type)) != NULL) {
        j.nb = (uint32_t)(w->ne0 / QK_K);
        uint64_t need = (uint64_t)rows * j.nb;
        if (need > b->cap_xq) {
            block_q8_K *xq = realloc(b->xq, need * sizeof *xq);
            if (!xq) {
                j.qdot = NULL; /* out of memory: the f32 path needs nothing more */
            } else {
                b->xq = xq;
                b->cap_xq = need;
                b->xq_src = NULL;
            }
        }
        if (j.qdot) {
            if (!same_x || b->xq_src != x || b->xq_rows != rows) {
                uint32_t per_row = (j.nb + QUANT_BLOCKS_PER_TASK - 1) / QUANT_BLOCKS_PER_TASK;
                quant_job qj = { x, x_stride, j.nb, per_row, b->xq };
                pool_run(b->pool, quant_task, &qj, (int)(rows * per_row));
                b->xq_src = x;
                b->xq_rows = rows;
            }
            j.xq = b->xq;
            j.qdot4 = qdot4_for(w->type);
            /* Sixteen weight rows at once, from as many rows of x as pay
             * back its unpacking (qgemm16_for; with VNNI from 4: 4 sequences
             * decoding 18.0-18.6 -> 19.5-19.7 tok/s with 8 as the threshold -> 4). */
            uint64_t gneed = (uint64_t)pool_threads(b->pool) * QGEMM_TOKENS * 16;
            if ((j.qgemm16 = qgemm16_for(w->type, rows)) != NULL && gneed > b->cap_gacc) {
                float *g = realloc(b->gacc, gneed * sizeof *g);
                if (g) {
                    b->gacc = g;
                    b->cap_gacc = gneed;
                } else {
                    j.qgemm16 = NULL;
                }
            }
        }
    }
    /* One row of x (decode) streams the weights from memory once: each
     * thread's rows in a few long runs keep its hardware prefetcher on one
     * stream and waste no prefetches past a run's end (measured on 2 cores:
     * runs of 32 rows read 10% slower than halves). Four runs per thread
     * still balance a thread that is descheduled for a while. */
    if (j.qdot && rows == 1) {
        uint64_t per = w->ne1 / ((uint64_t)pool_threads(b->pool) * 4) / 16 * 16;
        j.task_rows = per > ROWS_PER_TASK ? (uint32_t)per : ROWS_PER_TASK;
    }
    pool_run(b->pool, matmul_task, &j, (int)((w->ne1 + j.task_rows - 1) / j.task_rows));
}

/* ---- elementwise ---- */

static void rmsnorm(float *out, const float *x, const float *w, uint32_t n, float eps)
{
    double ss = 0; /* the sum in double: the result no longer depends on its order */
    for (uint32_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (uint32_t i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

/* NORM rope: rotates adjacent pairs (2i, 2i+1) of each head's first n_rot dims. */
static void rope_apply(float *v, uint32_t n_heads, uint32_t head_dim, uint32_t n_rot, const float *cs)
{
    for (uint32_t h = 0; h < n_heads; h++) {
        float *x = v + (uint64_t)h * head_dim;
        for (uint32_t i = 0; i < n_rot / 2; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1], x0 = x[2 * i], x1 = x[2 * i + 1];
            x[2 * i] = x0 * c - x1 * s;
            x[2 * i + 1] = x0 * s + x1 * c;
        }
    }
}

/* ---- attention over paged KV ---- */

static float *kv_slot(cpu_backend *b, uint32_t layer, uint32_t page, uint32_t slot)
{
    const backend_config *c = &b->base.cfg;
    return b->kv + (((uint64_t)layer * c->n_pages + page) * c->page_size + slot) * 2 * b->kv_dim;
}

typedef struct attn_job {
    cpu_backend *b;
    const fwd_batch *batch;
    uint32_t layer, rows;
} attn_job;

/* One task: the query heads of one KV head, for one block of rows. */
static void attn_task(void *ctx, int task, int thread)
{
    attn_job *j = ctx;
    cpu_backend *b = j->b;
    const hparams *hp = &b->base.m->hp;
    uint32_t blk = (uint32_t)task / hp->n_head_kv, g = (uint32_t)task % hp->n_head_kv;
    uint32_t row = b->blk_row0[blk], n_rows = (blk + 1 < b->n_blk ? b->blk_row0[blk + 1] : j->rows) - row;
    uint32_t n_q = hp->n_head / hp->n_head_kv, hd = hp->head_dim, P = b->base.cfg.page_size;
    const fwd_seq *s = &j->batch->seqs[b->row_seq[row]];
    uint32_t pos = b->row_pos[row];
    uint64_t head0 = (uint64_t)row * hp->n_head * hd + (uint64_t)g * n_q * hd, stride = (uint64_t)hp->n_head * hd;
    const backend_config *c = &b->base.cfg;
    kv_view kv = { b->kv + (uint64_t)j->layer * c->n_pages * P * 2 * b->kv_dim + (uint64_t)g * hd,
                   s->pages,
                   P,
                   (uint64_t)P * 2 * b->kv_dim,
                   2 * b->kv_dim,
                   b->kv_dim };
    attend_rows(b->q + head0, stride, n_rows, n_q, &kv, pos + 1, hd, 1.0f / sqrtf((float)hd),
                b->scores + (uint64_t)thread * ATTN_ROWS * n_q * b->max_ctx, b->att + head0, stride);
}

/* ---- the per-row elementwise parts, spread over the pool ---- */

typedef enum rows_op { ROWS_NORM, ROWS_ROPE_STORE, ROWS_SWIGLU } rows_op;

typedef struct rows_job {
    cpu_backend *b;
    const fwd_batch *batch;
    rows_op op;
    const model_layer *l;
    uint32_t layer;
    const float *norm; /* ROWS_NORM: the norm's weights */
} rows_job;

static void rows_task(void *ctx, int task, int thread)
{
    (void)thread;
    rows_job *j = ctx;
    cpu_backend *b = j->b;
    const hparams *hp = &b->base.m->hp;
    uint32_t r = (uint32_t)task;
    uint64_t E = hp->n_embd, qd = (uint64_t)hp->n_head * hp->head_dim, kvd = b->kv_dim;
    switch (j->op) {
    case ROWS_NORM:
        rmsnorm(b->h + r * E, b->x + r * E, j->norm, hp->n_embd, hp->rms_eps);
        break;
    case ROWS_ROPE_STORE: {
        if (j->l->use_rope) {
            rope_apply(b->q + r * qd, hp->n_head, hp->head_dim, hp->n_rot, b->rope + (uint64_t)r * hp->n_rot);
            rope_apply(b->k + r * kvd, hp->n_head_kv, hp->head_dim, hp->n_rot, b->rope + (uint64_t)r * hp->n_rot);
        }
        const fwd_seq *s = &j->batch->seqs[b->row_seq[r]];
        uint32_t pos = b->row_pos[r], P = b->base.cfg.page_size;
        float *slot = kv_slot(b, j->layer, s->pages[pos / P], pos % P);
        memcpy(slot, b->k + r * kvd, kvd * sizeof(float));
        memcpy(slot + kvd, b->v + r * kvd, kvd * sizeof(float));
        break;
    }
    case ROWS_SWIGLU: {
        swiglu(b->gate + (uint64_t)r * hp->n_ff, b->up + (uint64_t)r * hp->n_ff, hp->n_ff);
        break;
    }
    }
}

static void rows_run(cpu_backend *b, const fwd_batch *batch, rows_op op, const model_layer *l, uint32_t layer,
                     const float *norm, uint32_t rows)
{
    rows_job j = { b, batch, op, l, layer, norm };
    pool_run(b->pool, rows_task, &j, (int)rows);
}

/* ---- the step ---- */

static int grow(cpu_backend *b, uint32_t rows, smq_err *err)
{
    if (rows <= b->cap_rows)
        return 0;
    const hparams *hp = &b->base.m->hp;
    uint64_t qd = (uint64_t)hp->n_head * hp->head_dim;
    struct {
        float **p;
        uint64_t n;
    } bufs[] = {
        { &b->x, hp->n_embd },  { &b->h, hp->n_embd }, { &b->q, qd },
        { &b->k, b->kv_dim },   { &b->v, b->kv_dim },  { &b->att, qd },
        { &b->gate, hp->n_ff }, { &b->up, hp->n_ff },  { &b->rope, hp->n_rot },
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        float *p = realloc(*bufs[i].p, (uint64_t)rows * bufs[i].n * sizeof(float));
        if (!p)
            return smq_err_set(err, "cpu backend: out of memory for a step of %" PRIu32 " tokens", rows);
        *bufs[i].p = p;
    }
    uint32_t **idx[] = { &b->row_seq, &b->row_pos, &b->blk_row0 };
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) {
        uint32_t *p = realloc(*idx[i], rows * sizeof *p);
        if (!p)
            return smq_err_set(err, "cpu backend: out of memory");
        *idx[i] = p;
    }
    b->cap_rows = rows;
    return 0;
}

/* Writes n logit rows, the product of the output matrix with the first n
 * rows of h, to dst[0..n): in place when they follow one another (one
 * sequence's rows), else through b->logits; should that scratch be out of
 * reach, one row at a time. */
static void head_rows(cpu_backend *b, float *const *dst, uint32_t n)
{
    const model *m = b->base.m;
    uint32_t V = m->hp.n_vocab, E = m->hp.n_embd;
    int in_place = 1;
    for (uint32_t k = 1; k < n; k++)
        in_place &= dst[k] == dst[0] + (uint64_t)k * V;
    if (!in_place && n > b->cap_logits) {
        float *p = realloc(b->logits, (uint64_t)n * V * sizeof(float));
        if (p) {
            b->logits = p;
            b->cap_logits = n;
        }
    }
    if (in_place || n > b->cap_logits) {
        for (uint32_t k = 0; k < n; k += in_place ? n : 1)
            matmul(b, &m->output, b->h + (uint64_t)k * E, in_place ? n : 1, E, dst[k], V, 0, 0);
        return;
    }
    matmul(b, &m->output, b->h, n, E, b->logits, V, 0, 0);
    for (uint32_t k = 0; k < n; k++)
        memcpy(dst[k], b->logits + (uint64_t)k * V, V * sizeof(float));
}

/* Logits for the rows asked for (every row of a sequence with all_logits,
 * else its last): normed into h, HEAD_ROWS at a time, whatever sequence
 * they belong to. */
static void head(cpu_backend *b, const fwd_batch *batch)
{
    const model *m = b->base.m;
    const hparams *hp = &m->hp;
    float *dst[HEAD_ROWS];
    uint32_t n = 0, r = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        for (uint32_t t = s->all_logits ? 0 : s->n_tokens - 1; t < s->n_tokens; t++) {
            rmsnorm(b->h + (uint64_t)n * hp->n_embd, b->x + (uint64_t)(r + t) * hp->n_embd, m->output_norm.data,
                    hp->n_embd, hp->rms_eps);
            dst[n] = s->logits + (uint64_t)(s->all_logits ? t : 0) * hp->n_vocab;
            if (++n == HEAD_ROWS) {
                head_rows(b, dst, n);
                n = 0;
            }
        }
        r += s->n_tokens;
    }
    if (n)
        head_rows(b, dst, n);
}

static int cpu_forward(backend *base, const fwd_batch *batch, smq_err *err)
{
    cpu_backend *b = (cpu_backend *)base;
    const model *m = base->m;
    const hparams *hp = &m->hp;
    uint32_t rows = 0;
    if (backend_check_batch(base, batch, &rows, err) || grow(b, rows, err))
        return -1;
    uint64_t E = hp->n_embd, qd = (uint64_t)hp->n_head * hp->head_dim, kvd = b->kv_dim;
    pool_set_tick(b->pool, batch->progress, batch->progress_ctx);

    /* Rows: every new token of every sequence, in order; attention blocks:
     * runs of up to ATTN_ROWS rows of one sequence. */
    uint32_t r = 0;
    b->n_blk = 0;
    for (uint32_t i = 0; i < batch->n_seqs; i++) {
        const fwd_seq *s = &batch->seqs[i];
        for (uint32_t t = 0; t < s->n_tokens; t++, r++) {
            if (t % ATTN_ROWS == 0)
                b->blk_row0[b->n_blk++] = r;
            b->row_seq[r] = i;
            b->row_pos[r] = s->pos + t;
            quant_dequant_row(m->token_embd.type,
                              (const uint8_t *)m->token_embd.data + (uint64_t)s->tokens[t] * m->token_embd.row_bytes,
                              b->x + r * E, E);
            rope_table(hp, s->pos + t, b->rope + (uint64_t)r * hp->n_rot);
        }
    }

    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const model_layer *l = &m->layers[il];
        rows_run(b, batch, ROWS_NORM, l, il, l->attn_norm.data, rows);
        matmul(b, &l->wq, b->h, rows, (uint32_t)E, b->q, (uint32_t)qd, 0, 0);
        matmul(b, &l->wk, b->h, rows, (uint32_t)E, b->k, (uint32_t)kvd, 0, 1);
        matmul(b, &l->wv, b->h, rows, (uint32_t)E, b->v, (uint32_t)kvd, 0, 1);
        rows_run(b, batch, ROWS_ROPE_STORE, l, il, NULL, rows);
        attn_job aj = { b, batch, il, rows };
        pool_run(b->pool, attn_task, &aj, (int)(b->n_blk * hp->n_head_kv));
        matmul(b, &l->wo, b->att, rows, (uint32_t)qd, b->x, (uint32_t)E, 1, 0);

        rows_run(b, batch, ROWS_NORM, l, il, l->ffn_norm.data, rows);
        matmul(b, &l->w_gate, b->h, rows, (uint32_t)E, b->gate, hp->n_ff, 0, 0);
        matmul(b, &l->w_up, b->h, rows, (uint32_t)E, b->up, hp->n_ff, 0, 1);
        rows_run(b, batch, ROWS_SWIGLU, l, il, NULL, rows);
        matmul(b, &l->w_down, b->gate, rows, hp->n_ff, b->x, (uint32_t)E, 1, 0);
    }

    head(b, batch);
    pool_set_tick(b->pool, NULL, NULL);
    return 0;
}

static int cpu_copy_kv(backend *base, const uint32_t *src, const uint32_t *dst, uint32_t n_tokens, smq_err *err)
{
    cpu_backend *b = (cpu_backend *)base;
    uint32_t P = base->cfg.page_size;
    for (uint32_t p = 0; p < n_tokens; p++) {
        if (src[p / P] >= base->cfg.n_pages || dst[p / P] >= base->cfg.n_pages)
            return smq_err_set(err, "cpu backend: page outside the pool");
        for (uint32_t il = 0; il < base->m->hp.n_layer; il++)
            memcpy(kv_slot(b, il, dst[p / P], p % P), kv_slot(b, il, src[p / P], p % P), 2 * b->kv_dim * sizeof(float));
    }
    return 0;
}

static uint64_t cpu_memory(const backend *base)
{
    const cpu_backend *b = (const cpu_backend *)base;
    const hparams *hp = &base->m->hp;
    uint64_t per_row = (uint64_t)hp->n_embd * 2 + (uint64_t)hp->n_head * hp->head_dim * 2 + 2 * b->kv_dim +
                       2 * (uint64_t)hp->n_ff + hp->n_rot;
    return b->kv_bytes + (uint64_t)b->cap_rows * per_row * sizeof(float) + b->cap_xq * sizeof(block_q8_K) +
           b->cap_gacc * sizeof(float) + (uint64_t)b->cap_logits * hp->n_vocab * sizeof(float) +
           (uint64_t)pool_threads(b->pool) *
               (ROWS_PER_TASK * b->max_k + (uint64_t)ATTN_ROWS * (hp->n_head / hp->n_head_kv) * b->max_ctx) *
               sizeof(float);
}

static void cpu_destroy(backend **self)
{
    cpu_backend *b = (cpu_backend *)*self;
    if (!b)
        return;
    pool_destroy(&b->pool);
    free(b->kv);
    free(b->x);
    free(b->h);
    free(b->q);
    free(b->k);
    free(b->v);
    free(b->att);
    free(b->gate);
    free(b->up);
    free(b->rope);
    free(b->row_seq);
    free(b->row_pos);
    free(b->blk_row0);
    free(b->deq);
    free(b->xq);
    free(b->gacc);
    free(b->scores);
    free(b->logits);
    free(b);
    *self = NULL;
}

static backend *cpu_create(const model *m, const backend_config *cfg, smq_err *err)
{
    const hparams *hp = &m->hp;
    if (cfg->page_size == 0 || cfg->n_pages == 0) {
        smq_err_set(err, "cpu backend: the KV pool needs pages (n_pages %" PRIu32 ", page_size %" PRIu32 ")",
                    cfg->n_pages, cfg->page_size);
        return NULL;
    }
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) {
        smq_err_set(err, "cpu backend: out of memory");
        return NULL;
    }
    b->base.ops = &cpu_backend_ops;
    b->base.m = m;
    b->base.cfg = *cfg;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cfg->n_threads > 0 ? cfg->n_threads : (cores > 0 ? (int)cores : 1);
    b->base.cfg.n_threads = threads;
    b->kv_dim = hp->n_head_kv * hp->head_dim;
    b->max_ctx = (uint64_t)cfg->n_pages * cfg->page_size;
    b->max_k = hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd;
    if (hp->n_head * hp->head_dim > b->max_k)
        b->max_k = (uint64_t)hp->n_head * hp->head_dim;
    b->kv_bytes = (uint64_t)hp->n_layer * b->max_ctx * 2 * b->kv_dim * sizeof(float);
    simd_current(); /* choose the SIMD level before threads use it */
    b->pool = pool_new(threads);
    b->kv = malloc(b->kv_bytes);
    b->deq = malloc((uint64_t)threads * ROWS_PER_TASK * b->max_k * sizeof(float));
    b->scores = malloc((uint64_t)threads * ATTN_ROWS * (hp->n_head / hp->n_head_kv) * b->max_ctx * sizeof(float));
    if (!b->pool || !b->kv || !b->deq || !b->scores) {
        smq_err_set(err,
                    "cpu backend: cannot allocate a KV pool of %" PRIu64 " MiB (%" PRIu64 " tokens) and %d threads",
                    b->kv_bytes >> 20, b->max_ctx, threads);
        backend *bb = &b->base;
        cpu_destroy(&bb);
        return NULL;
    }
    return &b->base;
}

const backend_ops cpu_backend_ops = {
    .name = "cpu",
    .create = cpu_create,
    .forward = cpu_forward,
    .copy_kv = cpu_copy_kv,
    .memory = cpu_memory,
    .destroy = cpu_destroy,
};
