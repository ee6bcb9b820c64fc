/* model.h - a SmolLM3 model file: hyper-parameters and weights.
 *
 * Everything is read from the GGUF (never assumed) and checked before use:
 * the architecture, every required key, every tensor's presence, type and
 * shape. The weights stay in the file's mapping (weights are never copied);
 * a model_tensor is a view into it.
 *
 *   Config (hparams)     - the blueprint: sizes, rope, norms
 *   model_layer/weights  - one view per tensor, shapes in trailing comments
 */
#ifndef SMQ_MODEL_H
#define SMQ_MODEL_H

#include <stdint.h>

#include "err.h"
#include "gguf.h"
#include "qtype.h"

#define MODEL_MAX_LAYERS 512

typedef enum rope_scaling { ROPE_SCALING_NONE, ROPE_SCALING_LINEAR, ROPE_SCALING_YARN } rope_scaling;

typedef struct hparams {
    char arch[32];
    uint32_t n_vocab;
    uint32_t n_ctx_train; /* context_length */
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head, n_head_kv;
    uint32_t head_dim; /* key_length = value_length */
    uint32_t n_ff;
    uint32_t n_rot;  /* rope.dimension_count */
    float rope_base; /* rope.freq_base */
    float rms_eps;
    uint32_t nope_step; /* layer il uses RoPE iff (il + 1) % nope_step != 0; 0: every layer */
    /* RoPE scaling (YaRN for contexts past n_ctx_orig) */
    rope_scaling scaling;
    float rope_factor;   /* context extension factor (1: none) */
    uint32_t n_ctx_orig; /* rope.scaling.original_context_length */
    float yarn_beta_fast, yarn_beta_slow;
    float yarn_attn_factor; /* rope.scaling.attn_factor, 1 if absent */
} hparams;

typedef struct model_tensor {
    const char *name;
    qtype type;
    uint64_t ne0, ne1; /* row length, rows */
    uint64_t row_bytes;
    const void *data; /* in the mapping */
} model_tensor;

typedef struct model_layer {
    model_tensor attn_norm; /* [n_embd] f32 */
    model_tensor wq;        /* [n_embd] -> [n_head * head_dim] */
    model_tensor wk;        /* [n_embd] -> [n_head_kv * head_dim] */
    model_tensor wv;        /* [n_embd] -> [n_head_kv * head_dim] */
    model_tensor wo;        /* [n_head * head_dim] -> [n_embd] */
    model_tensor ffn_norm;  /* [n_embd] f32 */
    model_tensor w_gate;    /* [n_embd] -> [n_ff] */
    model_tensor w_up;      /* [n_embd] -> [n_ff] */
    model_tensor w_down;    /* [n_ff] -> [n_embd] */
    int use_rope;           /* 0 on NoPE layers */
} model_layer;

typedef struct model {
    gguf_file *file;
    hparams hp;
    model_tensor token_embd;  /* [n_vocab rows of n_embd] */
    model_tensor output_norm; /* [n_embd] f32 */
    model_tensor output;      /* [n_embd] -> [n_vocab]; token_embd when tied */
    int tied;
    model_layer *layers;   /* [n_layer] */
    uint64_t weight_bytes; /* all tensors, mapped */
} model;

/* Options that override the file: 0 / NULL keeps the file's value. */
typedef struct model_options {
    uint32_t n_ctx;           /* context wanted; past n_ctx_train needs YaRN */
    const char *rope_scaling; /* "none", "linear" or "yarn" */
    float rope_factor;
} model_options;

/* Opens path and validates hyper-parameters and tensors; NULL with err
 * naming the file and what is wrong. */
model *model_load(const char *path, const model_options *opt, smq_err *err);
/* The same over a file already open (the model takes ownership of it). */
model *model_from_gguf(gguf_file *f, const model_options *opt, smq_err *err);
void model_destroy(model **self);

/* The context a model runs at by default: n_ctx_train, times rope_factor
 * with YaRN/linear scaling. */
uint32_t model_context(const model *m);

#endif
