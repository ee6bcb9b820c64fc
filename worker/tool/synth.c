/* synth.c - `smolmq synth`: a SmolLM3-architecture Q4_K_M GGUF with
 * deterministic random weights.
 *
 * The file has the metadata keys and tensor names llama.cpp writes for
 * SmolLM3, the tokenizer and chat template of a source GGUF, and the type mix
 * llama-quantize picks for Q4_K_M. `smollm3-3b` has the real model's shapes
 * (our benchmark model where the weights are not at hand), `tiny` the test
 * model's (for unit tests).
 *
 * Weights are written as random quant blocks directly: each block's scales
 * and quants are drawn so that its values have the tensor's intended standard
 * deviation. Drawing float weights and running the quantizer over 3 billion
 * of them would take minutes on two cores for numbers that are random either
 * way; this writes the 1.9 GB model in seconds. Every block is seeded from
 * (seed, tensor name, block index), so the output does not depend on the
 * number of threads.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "quant.h"
#include "tool.h"

static const char *usage_line = "synth --preset tiny|smollm3-3b [--seed N] --out FILE.gguf [--vocab SOURCE.gguf]";

#define DEFAULT_VOCAB "tests/data/models/smollm3-tiny-q4_k_m.gguf"

typedef struct synth_preset {
    const char *name;
    uint32_t n_embd, n_layer, n_ff, n_head, n_head_kv, n_ctx;
} synth_preset;

static const synth_preset presets[] = {
    { "tiny", 256, 4, 768, 4, 2, 65536 },
    { "smollm3-3b", 2048, 36, 11008, 16, 4, 65536 },
};

/* ---- random numbers ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* FNV-1a of the tensor name, mixed with the seed. */
static uint64_t tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return splitmix64(&h);
}

static double uniform01(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) * 0x1.0p-53;
}

static double normal(uint64_t *s)
{
    double u1 = uniform01(s), u2 = uniform01(s);
    return sqrt(-2.0 * log(u1 + 1e-300)) * cos(2.0 * M_PI * u2);
}

static void random_bytes(uint64_t *s, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = splitmix64(s);
        memcpy(dst + i, &r, n - i < 8 ? n - i : 8);
    }
}

/* ---- random blocks with a target standard deviation ---- */

/* Q4_K: sc uniform in 32..63, m = sc*15/16 with dmin = 8d, so that
 * x = d*sc*q - dmin*m ~ d*sc*(q - 7.5): centred, rms ~ 223 d for uniform q. */
static void q4k_random_block(uint64_t *s, float std, block_q4_K *b)
{
    b->d = f32_to_fp16(std / 223.0f);
    b->dmin = f32_to_fp16(8.0f * fp16_to_f32(b->d));
    memset(b->scales, 0, sizeof b->scales);
    uint64_t r = splitmix64(s);
    for (int j = 0; j < 8; j++) {
        uint8_t sc = (uint8_t)(32 + ((r >> (8 * j)) & 31));
        q4k_pack_scale_min(j, sc, (uint8_t)((sc * 15 + 8) / 16), b->scales);
    }
    random_bytes(s, b->qs, sizeof b->qs);
}

/* Q6_K: scales uniform in 16..63, x = d*sc*(q-32): rms ~ 774 d. */
static void q6k_random_block(uint64_t *s, float std, block_q6_K *b)
{
    random_bytes(s, b->ql, sizeof b->ql);
    random_bytes(s, b->qh, sizeof b->qh);
    uint8_t sc[16];
    random_bytes(s, sc, sizeof sc);
    for (int j = 0; j < 16; j++)
        b->scales[j] = (int8_t)(16 + sc[j] % 48);
    b->d = f32_to_fp16(std / 774.0f);
}

/* ---- filling a tensor (the writer's callback), in parallel ---- */

typedef struct fill_job {
    qtype type;
    uint64_t seed;
    float std; /* quantized weights: target standard deviation */
    uint8_t *dst;
    uint64_t first, end; /* block range of one thread */
} fill_job;

static void *fill_blocks(void *arg)
{
    fill_job *job = arg;
    for (uint64_t i = job->first; i < job->end; i++) {
        uint64_t s = job->seed ^ (i * 0xD1B54A32D192ED03ull);
        if (job->type == QTYPE_Q4_K)
            q4k_random_block(&s, job->std, (block_q4_K *)(job->dst + i * sizeof(block_q4_K)));
        else
            q6k_random_block(&s, job->std, (block_q6_K *)(job->dst + i * sizeof(block_q6_K)));
    }
    return NULL;
}

typedef struct tensor_spec {
    char name[GGUF_MAX_NAME + 1];
    qtype type;
    uint64_t ne[2];
    uint32_t n_dims;
    float std; /* weights; norms are 1 + 0.1 N(0,1) */
    uint64_t seed;
    int threads;
} tensor_spec;

static int fill_tensor(void *ctx, void *dst, uint64_t n_bytes, smq_err *err)
{
    const tensor_spec *t = ctx;
    if (t->type == QTYPE_F32) {
        float *x = dst;
        uint64_t s = t->seed;
        for (uint64_t i = 0; i < n_bytes / 4; i++)
            x[i] = (float)(1.0 + 0.1 * normal(&s));
        return 0;
    }
    uint64_t n_blocks = n_bytes / qtype_table[t->type].block_bytes;
    fill_job jobs[64];
    pthread_t tids[64];
    int n = t->threads;
    for (int k = 0; k < n; k++) {
        jobs[k] = (fill_job){ t->type,
                              t->seed,
                              t->std,
                              dst,
                              n_blocks * (uint64_t)k / (uint64_t)n,
                              n_blocks * (uint64_t)(k + 1) / (uint64_t)n };
        if (k > 0 && pthread_create(&tids[k], NULL, fill_blocks, &jobs[k]) != 0)
            return smq_err_set(err, "cannot start a thread");
    }
    fill_blocks(&jobs[0]);
    for (int k = 1; k < n; k++)
        pthread_join(tids[k], NULL);
    return 0;
}

/* llama-quantize's Q4_K_M choice for attn_v and ffn_down: more bits in the
 * first and last eighth of the layers and every third layer between. */
static int use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The tensors of the model, in the order llama-quantize wrote the test model. */
static int plan_tensors(const synth_preset *p, uint64_t seed, uint32_t n_vocab, int threads, tensor_spec **out)
{
    int n = 2 + 9 * (int)p->n_layer;
    tensor_spec *t = calloc((size_t)n, sizeof *t);
    if (!t)
        return -1;
    uint32_t n_kv_dim = p->n_embd / p->n_head * p->n_head_kv;
    int k = 0;
#define ADD(nm, ty, a, b, nd, sd)                                                                                      \
    do {                                                                                                               \
        snprintf(t[k].name, sizeof t[k].name, "%s", nm);                                                               \
        t[k].type = ty, t[k].ne[0] = a, t[k].ne[1] = b, t[k].n_dims = nd, t[k].std = sd;                               \
        t[k].seed = tensor_seed(seed, t[k].name), t[k].threads = threads;                                              \
        k++;                                                                                                           \
    } while (0)
    /* Weight scales as the peer's test model was drawn: 1/sqrt(fan_in) for
     * projections into the residual's heads, 3/sqrt(fan_in) out of them. */
    float in_e = 1.0f / sqrtf((float)p->n_embd), in_ff = 1.0f / sqrtf((float)p->n_ff);
    ADD("output_norm.weight", QTYPE_F32, p->n_embd, 1, 1, 0);
    ADD("token_embd.weight", QTYPE_Q6_K, p->n_embd, n_vocab, 2, 0.2f); /* tied head: Q6_K */
    for (int il = 0; il < (int)p->n_layer; il++) {
        char nm[GGUF_MAX_NAME + 1];
        qtype more = use_more_bits(il, (int)p->n_layer) ? QTYPE_Q6_K : QTYPE_Q4_K;
#define BLK(suffix) (snprintf(nm, sizeof nm, "blk.%d.%s", il, suffix), nm)
        ADD(BLK("attn_k.weight"), QTYPE_Q4_K, p->n_embd, n_kv_dim, 2, in_e);
        ADD(BLK("attn_norm.weight"), QTYPE_F32, p->n_embd, 1, 1, 0);
        ADD(BLK("attn_output.weight"), QTYPE_Q4_K, p->n_embd, p->n_embd, 2, 3 * in_e);
        ADD(BLK("attn_q.weight"), QTYPE_Q4_K, p->n_embd, p->n_embd, 2, in_e);
        ADD(BLK("attn_v.weight"), more, p->n_embd, n_kv_dim, 2, in_e);
        ADD(BLK("ffn_down.weight"), more, p->n_ff, p->n_embd, 2, 3 * in_ff);
        ADD(BLK("ffn_gate.weight"), QTYPE_Q4_K, p->n_embd, p->n_ff, 2, in_e);
        ADD(BLK("ffn_norm.weight"), QTYPE_F32, p->n_embd, 1, 1, 0);
        ADD(BLK("ffn_up.weight"), QTYPE_Q4_K, p->n_embd, p->n_ff, 2, in_e);
#undef BLK
    }
#undef ADD
    *out = t;
    return n;
}

/* The default vocabulary source: tests/data relative to the working
 * directory, else relative to the binary (build/bin/smolmq in the repo). */
static const char *default_vocab(char *buf, size_t size)
{
    if (access(DEFAULT_VOCAB, R_OK) == 0)
        return DEFAULT_VOCAB;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, size, "%s/../../%s", exe, DEFAULT_VOCAB);
            if (access(buf, R_OK) == 0)
                return buf;
        }
    }
    return DEFAULT_VOCAB;
}

static int set_metadata(gguf_writer *w, const synth_preset *p, uint64_t seed, const gguf_file *vocab, uint32_t n_vocab,
                        smq_err *err)
{
    char name[128];
    snprintf(name, sizeof name, "smolmq synthetic %s (seed %" PRIu64 ")", p->name, seed);
    if (gguf_writer_set_str(w, "general.architecture", "smollm3", err) ||
        gguf_writer_set_str(w, "general.type", "model", err) || gguf_writer_set_str(w, "general.name", name, err) ||
        gguf_writer_set_u32(w, "smollm3.block_count", p->n_layer, err) ||
        gguf_writer_set_u32(w, "smollm3.context_length", p->n_ctx, err) ||
        gguf_writer_set_u32(w, "smollm3.embedding_length", p->n_embd, err) ||
        gguf_writer_set_u32(w, "smollm3.feed_forward_length", p->n_ff, err) ||
        gguf_writer_set_u32(w, "smollm3.attention.head_count", p->n_head, err) ||
        gguf_writer_set_u32(w, "smollm3.attention.head_count_kv", p->n_head_kv, err) ||
        gguf_writer_set_f32(w, "smollm3.rope.freq_base", 5000000.0f, err) ||
        gguf_writer_set_f32(w, "smollm3.attention.layer_norm_rms_epsilon", 1e-6f, err) ||
        gguf_writer_set_u32(w, "smollm3.vocab_size", n_vocab, err) ||
        gguf_writer_set_u32(w, "smollm3.rope.dimension_count", p->n_embd / p->n_head, err))
        return -1;
    /* Every tokenizer key of the source, in its order: vocabulary, merges,
     * types, special ids, flags and the chat template. */
    for (uint64_t i = 0; i < vocab->n_kv; i++)
        if (!strncmp(vocab->kv[i].key, "tokenizer.", 10) &&
            gguf_writer_set_value(w, vocab->kv[i].key, &vocab->kv[i].value, err))
            return -1;
    return gguf_writer_set_u32(w, "general.quantization_version", 2, err) ||
                   gguf_writer_set_u32(w, "general.file_type", 15, err) /* MOSTLY_Q4_K_M */
               ? -1
               : 0;
}

int tool_synth(int argc, char **argv)
{
    const char *preset_name = NULL, *out = NULL, *vocab_path = NULL;
    uint64_t seed = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--preset") && strcmp(a, "--seed") && strcmp(a, "--out") && strcmp(a, "--vocab"))
            return tool_usage(usage_line, "unknown argument %s", a);
        if (++i >= argc)
            return tool_usage(usage_line, "%s needs a value", a);
        if (!strcmp(a, "--preset")) {
            preset_name = argv[i];
        } else if (!strcmp(a, "--out")) {
            out = argv[i];
        } else if (!strcmp(a, "--vocab")) {
            vocab_path = argv[i];
        } else {
            char *end;
            errno = 0;
            seed = strtoull(argv[i], &end, 10);
            if (errno || end == argv[i] || *end || argv[i][0] == '-')
                return tool_usage(usage_line, "--seed wants a non-negative integer, not \"%s\"", argv[i]);
        }
    }
    if (!preset_name || !out)
        return tool_usage(usage_line, "%s", !preset_name ? "no --preset given" : "no --out given");
    const synth_preset *p = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(preset_name, presets[i].name))
            p = &presets[i];
    if (!p)
        return tool_usage(usage_line, "unknown preset \"%s\" (tiny, smollm3-3b)", preset_name);

    char vocab_buf[PATH_MAX + 64];
    if (!vocab_path)
        vocab_path = default_vocab(vocab_buf, sizeof vocab_buf);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    smq_err err;
    gguf_file *vocab = gguf_open(vocab_path, &err);
    if (!vocab)
        return tool_fail("synth", "vocabulary source: %s", err.msg);
    const gguf_array *tokens;
    if (gguf_get_arr(vocab, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens, &err)) {
        gguf_close(&vocab);
        return tool_fail("synth", "vocabulary source: %s", err.msg);
    }
    if (tokens->count == 0 || tokens->count > UINT32_MAX) {
        gguf_close(&vocab);
        return tool_fail("synth", "vocabulary source %s: %" PRIu64 " tokens", vocab_path, tokens->count);
    }
    uint32_t n_vocab = (uint32_t)tokens->count;

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = cores < 1 ? 1 : cores > 64 ? 64 : (int)cores;
    tensor_spec *specs = NULL;
    int n_tensors = plan_tensors(p, seed, n_vocab, threads, &specs);
    gguf_writer *w = gguf_writer_new();
    int rc = 0;
    if (n_tensors < 0 || !w) {
        rc = tool_fail("synth", "out of memory");
        goto out;
    }
    if (set_metadata(w, p, seed, vocab, n_vocab, &err)) {
        rc = tool_fail("synth", "%s", err.msg);
        goto out;
    }
    for (int i = 0; i < n_tensors; i++) {
        if (gguf_writer_add_tensor(w, specs[i].name, specs[i].type, specs[i].n_dims, specs[i].ne, fill_tensor,
                                   &specs[i], &err)) {
            rc = tool_fail("synth", "%s", err.msg);
            goto out;
        }
    }
    if (gguf_writer_write(w, out, &err)) {
        rc = tool_fail("synth", "%s", err.msg);
        goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("synth: wrote %s: preset %s, seed %" PRIu64 ", %d tensors, in %.1f s\n", out, p->name, seed, n_tensors,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
out:
    gguf_writer_destroy(&w);
    free(specs);
    gguf_close(&vocab);
    return rc;
}
