/* model.c - hyper-parameters and weight views of a SmolLM3 GGUF, validated. */
#include "model.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* "smollm3.embedding_length" for arch "smollm3". */
static const char *akey(const hparams *hp, const char *suffix, char *buf, size_t size)
{
    snprintf(buf, size, "%s.%s", hp->arch, suffix);
    return buf;
}

/* A key that may be a scalar or a per-layer array (llama.cpp allows both);
 * we need every layer to agree. */
static int get_uniform_u32(const gguf_file *f, const char *key, uint32_t n_layer, uint32_t *out, smq_err *err)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (kv && kv->value.type == GGUF_TYPE_ARRAY) {
        const gguf_array *a = &kv->value.v.arr;
        uint64_t v0 = 0, v;
        if (a->count != n_layer)
            return smq_err_set(err, "%s: %s has %" PRIu64 " entries for %" PRIu32 " layers", f->path, key, a->count,
                               n_layer);
        for (uint64_t i = 0; i < a->count; i++) {
            if (gguf_arr_u64(a, i, &v) || v > UINT32_MAX)
                return smq_err_set(err, "%s: %s[%" PRIu64 "] is not a 32-bit unsigned integer", f->path, key, i);
            if (i == 0)
                v0 = v;
            else if (v != v0)
                return smq_err_set(err, "%s: %s differs between layers, which smolmq does not support", f->path, key);
        }
        *out = (uint32_t)v0;
        return 0;
    }
    return gguf_get_u32(f, key, out, err);
}

static int read_hparams(const gguf_file *f, const model_options *opt, hparams *hp, smq_err *err)
{
    gguf_str arch;
    char k[128];
    if (gguf_get_str(f, "general.architecture", &arch, err))
        return -1;
    if (!(arch.len == 7 && !memcmp(arch.ptr, "smollm3", 7)))
        return smq_err_set(err, "%s: unknown architecture \"%.*s\" (smolmq runs smollm3)", f->path,
                           (int)(arch.len > 32 ? 32 : arch.len), arch.ptr);
    memcpy(hp->arch, arch.ptr, arch.len);
    hp->arch[arch.len] = 0;

    if (gguf_get_u32(f, akey(hp, "context_length", k, sizeof k), &hp->n_ctx_train, err) ||
        gguf_get_u32(f, akey(hp, "embedding_length", k, sizeof k), &hp->n_embd, err) ||
        gguf_get_u32(f, akey(hp, "block_count", k, sizeof k), &hp->n_layer, err))
        return -1;
    if (hp->n_layer == 0 || hp->n_layer > MODEL_MAX_LAYERS)
        return smq_err_set(err, "%s: %" PRIu32 " layers (1..%d supported)", f->path, hp->n_layer, MODEL_MAX_LAYERS);
    if (get_uniform_u32(f, akey(hp, "feed_forward_length", k, sizeof k), hp->n_layer, &hp->n_ff, err) ||
        get_uniform_u32(f, akey(hp, "attention.head_count", k, sizeof k), hp->n_layer, &hp->n_head, err))
        return -1;
    hp->n_head_kv = hp->n_head;
    if (gguf_find_kv(f, akey(hp, "attention.head_count_kv", k, sizeof k)) &&
        get_uniform_u32(f, k, hp->n_layer, &hp->n_head_kv, err))
        return -1;
    if (hp->n_embd == 0 || hp->n_head == 0 || hp->n_head_kv == 0 || hp->n_ff == 0 || hp->n_head % hp->n_head_kv)
        return smq_err_set(
            err, "%s: inconsistent sizes: n_embd %" PRIu32 ", heads %" PRIu32 ", kv heads %" PRIu32 ", n_ff %" PRIu32,
            f->path, hp->n_embd, hp->n_head, hp->n_head_kv, hp->n_ff);
    uint32_t key_len, val_len;
    if (gguf_get_u32_or(f, akey(hp, "attention.key_length", k, sizeof k), hp->n_embd / hp->n_head, &key_len, err) ||
        gguf_get_u32_or(f, akey(hp, "attention.value_length", k, sizeof k), key_len, &val_len, err))
        return -1;
    if (key_len != val_len || key_len == 0 || key_len % 2 || key_len > 1024)
        return smq_err_set(err, "%s: head size %" PRIu32 " (keys) / %" PRIu32 " (values) is not supported", f->path,
                           key_len, val_len);
    hp->head_dim = key_len;
    if (gguf_get_u32_or(f, akey(hp, "rope.dimension_count", k, sizeof k), hp->head_dim, &hp->n_rot, err) ||
        gguf_get_f32_or(f, akey(hp, "rope.freq_base", k, sizeof k), 10000.0f, &hp->rope_base, err) ||
        gguf_get_f32(f, akey(hp, "attention.layer_norm_rms_epsilon", k, sizeof k), &hp->rms_eps, err))
        return -1;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2 || !(hp->rope_base > 0) || !(hp->rms_eps >= 0))
        return smq_err_set(err, "%s: rope dimensions %" PRIu32 " / base %g / rms eps %g out of range", f->path,
                           hp->n_rot, hp->rope_base, hp->rms_eps);
    /* NoPE every fourth layer: SmolLM3's rule, fixed for the architecture
     * (llama.cpp hard-codes it too; no GGUF key carries it). */
    hp->nope_step = 4;

    /* RoPE scaling: the file's metadata, then the caller's options. */
    gguf_str type = { "none", 4 };
    hp->rope_factor = 1.0f;
    hp->yarn_attn_factor = 1.0f;
    hp->yarn_beta_fast = 32.0f;
    hp->yarn_beta_slow = 1.0f;
    if (gguf_find_kv(f, akey(hp, "rope.scaling.type", k, sizeof k)) && gguf_get_str(f, k, &type, err))
        return -1;
    const char *want = opt && opt->rope_scaling ? opt->rope_scaling : NULL;
    char type_buf[16];
    snprintf(type_buf, sizeof type_buf, "%.*s", (int)(type.len < 15 ? type.len : 15), type.ptr);
    const char *t = want ? want : type_buf;
    if (!strcmp(t, "none"))
        hp->scaling = ROPE_SCALING_NONE;
    else if (!strcmp(t, "linear"))
        hp->scaling = ROPE_SCALING_LINEAR;
    else if (!strcmp(t, "yarn"))
        hp->scaling = ROPE_SCALING_YARN;
    else
        return smq_err_set(err, "%s: rope scaling \"%s\" is not supported (none, linear, yarn)", f->path, t);
    if (gguf_get_f32_or(f, akey(hp, "rope.scaling.factor", k, sizeof k), 1.0f, &hp->rope_factor, err) ||
        gguf_get_u32_or(f, akey(hp, "rope.scaling.original_context_length", k, sizeof k), hp->n_ctx_train,
                        &hp->n_ctx_orig, err) ||
        gguf_get_f32_or(f, akey(hp, "rope.scaling.attn_factor", k, sizeof k), 1.0f, &hp->yarn_attn_factor, err))
        return -1;
    if (opt && opt->rope_factor > 0)
        hp->rope_factor = opt->rope_factor;
    if (hp->scaling == ROPE_SCALING_NONE) {
        hp->rope_factor = 1.0f;
    } else if (hp->rope_factor <= 1.0f) {
        /* Scaling asked for without a factor: stretch to the context wanted,
         * else SmolLM3's documented 2x (64K -> 128K). */
        hp->rope_factor = opt && opt->n_ctx > hp->n_ctx_orig ? (float)opt->n_ctx / (float)hp->n_ctx_orig : 2.0f;
    }
    if (!(hp->rope_factor >= 1.0f && hp->rope_factor <= 64.0f))
        return smq_err_set(err, "%s: rope scaling factor %g out of range (1..64)", f->path, hp->rope_factor);

    const gguf_array *tokens;
    uint32_t n_vocab = 0;
    if (gguf_find_kv(f, akey(hp, "vocab_size", k, sizeof k))) {
        if (gguf_get_u32(f, k, &n_vocab, err))
            return -1;
    } else if (!gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens, err)) {
        n_vocab = tokens->count > UINT32_MAX ? 0 : (uint32_t)tokens->count;
    } else {
        return -1;
    }
    if (n_vocab == 0)
        return smq_err_set(err, "%s: empty vocabulary", f->path);
    hp->n_vocab = n_vocab;
    return 0;
}

/* Binds a tensor by name, checking it exists with the shape [ne0, ne1] and a
 * type we can compute on. */
static int bind(const gguf_file *f, const char *name, uint64_t ne0, uint64_t ne1, int optional, model_tensor *t,
                smq_err *err)
{
    const gguf_tensor *g = gguf_find_tensor(f, name);
    memset(t, 0, sizeof *t);
    if (!g) {
        if (optional)
            return 0;
        return smq_err_set(err, "%s: tensor %s is missing", f->path, name);
    }
    uint64_t rows = g->n_elements / (g->ne[0] ? g->ne[0] : 1);
    if (g->ne[0] != ne0 || rows != ne1 || g->ne[2] != 1 || g->ne[3] != 1)
        return smq_err_set(err,
                           "%s: tensor %s has shape [%" PRIu64 ", %" PRIu64 "], expected [%" PRIu64 ", %" PRIu64 "]",
                           f->path, name, g->ne[0], rows, ne0, ne1);
    if (!quant_can_dequant(g->type) || g->type == QTYPE_Q8_K || g->type == QTYPE_Q8_1)
        return smq_err_set(err, "%s: tensor %s has type %s, which smolmq cannot compute with", f->path, name,
                           qtype_name(g->type));
    t->name = g->name;
    t->type = g->type;
    t->ne0 = ne0;
    t->ne1 = ne1;
    qtype_row_bytes(g->type, ne0, &t->row_bytes);
    t->data = g->data;
    return 0;
}

static int bind_weights(model *m, smq_err *err)
{
    const hparams *hp = &m->hp;
    const gguf_file *f = m->file;
    uint64_t q_dim = (uint64_t)hp->n_head * hp->head_dim, kv_dim = (uint64_t)hp->n_head_kv * hp->head_dim;
    if (bind(f, "token_embd.weight", hp->n_embd, hp->n_vocab, 0, &m->token_embd, err) ||
        bind(f, "output_norm.weight", hp->n_embd, 1, 0, &m->output_norm, err) ||
        bind(f, "output.weight", hp->n_embd, hp->n_vocab, 1, &m->output, err))
        return -1;
    m->tied = m->output.data == NULL;
    if (m->tied)
        m->output = m->token_embd;
    m->layers = calloc(hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return smq_err_set(err, "out of memory");
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        model_layer *l = &m->layers[il];
        char n[GGUF_MAX_NAME + 1];
#define NAME(s) (snprintf(n, sizeof n, "blk.%" PRIu32 ".%s", il, s), n)
        if (bind(f, NAME("attn_norm.weight"), hp->n_embd, 1, 0, &l->attn_norm, err) ||
            bind(f, NAME("attn_q.weight"), hp->n_embd, q_dim, 0, &l->wq, err) ||
            bind(f, NAME("attn_k.weight"), hp->n_embd, kv_dim, 0, &l->wk, err) ||
            bind(f, NAME("attn_v.weight"), hp->n_embd, kv_dim, 0, &l->wv, err) ||
            bind(f, NAME("attn_output.weight"), q_dim, hp->n_embd, 0, &l->wo, err) ||
            bind(f, NAME("ffn_norm.weight"), hp->n_embd, 1, 0, &l->ffn_norm, err) ||
            bind(f, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff, 0, &l->w_gate, err) ||
            bind(f, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff, 0, &l->w_up, err) ||
            bind(f, NAME("ffn_down.weight"), hp->n_ff, hp->n_embd, 0, &l->w_down, err))
            return -1;
#undef NAME
        if (l->attn_norm.type != QTYPE_F32 || l->ffn_norm.type != QTYPE_F32)
            return smq_err_set(err, "%s: layer %" PRIu32 " norm weights must be f32", f->path, il);
        l->use_rope = hp->nope_step == 0 || (il + 1) % hp->nope_step != 0;
    }
    if (m->output_norm.type != QTYPE_F32)
        return smq_err_set(err, "%s: output_norm.weight must be f32", f->path);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        m->weight_bytes += f->tensors[i].n_bytes;
    return 0;
}

model *model_from_gguf(gguf_file *f, const model_options *opt, smq_err *err)
{
    model *m = calloc(1, sizeof *m);
    if (!m) {
        gguf_close(&f);
        smq_err_set(err, "out of memory");
        return NULL;
    }
    m->file = f;
    if (read_hparams(f, opt, &m->hp, err) || bind_weights(m, err)) {
        model_destroy(&m);
        return NULL;
    }
    if (opt && opt->n_ctx > model_context(m)) {
        smq_err_set(err,
                    "%s: a context of %" PRIu32 " tokens is past the model's %" PRIu32
                    " (with --rope-scaling yarn it can reach %" PRIu32 ")",
                    f->path, opt->n_ctx, model_context(m), (uint32_t)(m->hp.n_ctx_orig * 2));
        model_destroy(&m);
        return NULL;
    }
    return m;
}

model *model_load(const char *path, const model_options *opt, smq_err *err)
{
    gguf_file *f = gguf_open(path, err);
    return f ? model_from_gguf(f, opt, err) : NULL;
}

void model_destroy(model **self)
{
    model *m = *self;
    if (!m)
        return;
    free(m->layers);
    gguf_close(&m->file);
    free(m);
    *self = NULL;
}

uint32_t model_context(const model *m)
{
    if (m->hp.scaling == ROPE_SCALING_NONE)
        return m->hp.n_ctx_train;
    double c = (double)m->hp.n_ctx_orig * m->hp.rope_factor;
    return c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
}
