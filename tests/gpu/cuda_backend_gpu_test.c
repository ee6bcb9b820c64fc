/* cuda_backend_gpu_test.c - the CUDA forward pass against llama.cpp's
 * "exact" goldens and against the CPU backend's reference function; greedy
 * decode; batches in scattered pages, chunked prefill and prefix reuse
 * (copy_kv) against single runs; bad batches. Before every run the backend's
 * device buffers are poisoned (NaN) and so are the host logits, so that an
 * element a step forgets to write shows. Skipped without a GPU. */
#include <cuda_runtime_api.h>
#include <math.h>

#include "backend.h"
#include "cuda_backend.h"
#include "dequant.h"
#include "goldens.h"
#include "json.h"
#include "sampler.h"
#include "test.h"

#define N_VOCAB 128256
#define PAGES   64
#define PAGE    16

static model *mdl;
static json_value *prompts, *exact;
static uint32_t identity_pages[PAGES];
static int have_gpu;

static void compare(const float *got, const float *want, size_t n, double *rel, double *maxabs)
{
    double num = 0, den = 0, mx = 0;
    for (size_t k = 0; k < n; k++) {
        double d = (double)got[k] - want[k];
        num += d * d;
        den += (double)want[k] * want[k];
        mx = fabs(d) > mx || isnan(d) ? fabs(d) : mx;
    }
    *rel = sqrt(num / den);
    *maxabs = mx;
    if (isnan(num))
        *rel = *maxabs = NAN;
}

static backend *new_backend(const backend_ops *ops, uint32_t pages)
{
    backend_config cfg = { pages, PAGE, 0, 1, 0 };
    smq_err err;
    backend *b = ops->create(mdl, &cfg, &err);
    if (!b) {
        test_fail(__FILE__, __LINE__, "%s create: %s", ops->name, err.msg);
        return NULL;
    }
    if (ops == &cuda_backend_ops && cuda_backend_poison(b, 1, &err)) {
        test_fail(__FILE__, __LINE__, "poison: %s", err.msg);
        b->ops->destroy(&b);
    }
    return b;
}

/* One forward over seqs, its outputs poisoned first. */
static int forward(backend *b, fwd_seq *seqs, uint32_t n)
{
    smq_err err;
    for (uint32_t i = 0; i < n; i++)
        memset(seqs[i].logits, 0xFF, (size_t)(seqs[i].all_logits ? seqs[i].n_tokens : 1) * N_VOCAB * sizeof(float));
    if (b->ops == &cuda_backend_ops && cuda_backend_poison(b, 0, &err)) {
        test_fail(__FILE__, __LINE__, "poison: %s", err.msg);
        return -1;
    }
    fwd_batch batch = { seqs, n };
    int rc = b->ops->forward(b, &batch, &err);
    if (rc)
        test_fail(__FILE__, __LINE__, "%s forward: %s", b->ops->name, err.msg);
    return rc;
}

/* A prompt's tokens (fwd_seq.prefill: the cuBLAS route where there is one). */
static int run(backend *b, const int32_t *toks, uint32_t n, uint32_t pos, const uint32_t *pages, float *logits, int all)
{
    fwd_seq s = { toks, n, pos, pages, PAGES, all, logits, 1 };
    return forward(b, &s, 1);
}

/* A generated token (the q16 route). */
static int decode(backend *b, int32_t tok, uint32_t pos, const uint32_t *pages, float *logits)
{
    fwd_seq s = { &tok, 1, pos, pages, PAGES, 0, logits, 0 };
    return forward(b, &s, 1);
}

static int32_t argmax(const float *lg, float *margin)
{
    int32_t a = 0, b = -1;
    for (int32_t v = 1; v < N_VOCAB; v++)
        if (lg[v] > lg[a]) {
            b = a;
            a = v;
        } else if (b < 0 || lg[v] > lg[b]) {
            b = v;
        }
    if (margin)
        *margin = lg[a] - lg[b];
    return a;
}

static float *golden_logits(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/model_goldens/tiny/exact.%s.logits.f32.bin", test_data_dir(), name);
    size_t len;
    float *want = test_read_file(path, &len);
    if (want && len != N_VOCAB * sizeof(float)) {
        test_fail(__FILE__, __LINE__, "%s: %zu bytes", path, len);
        free(want);
        return NULL;
    }
    return want;
}

/* 1 and 2: the four prompts' last-position logits against the goldens and
 * against the CPU's exact function. */
static void test_logits_goldens_and_cpu(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    backend *gpu = new_backend(&cuda_backend_ops, PAGES), *cpu = new_backend(&cpu_backend_ops, PAGES);
    float *lg = malloc(N_VOCAB * sizeof *lg), *ref = malloc(N_VOCAB * sizeof *ref);
    for (size_t i = 0; gpu && cpu && i < json_len(prompts); i++) {
        uint32_t n;
        int32_t *toks = golden_prompt(prompts, i, &n);
        const char *name = json_string(json_get(json_at(prompts, i), "name"), NULL);
        float *want = golden_logits(name);
        if (want && !run(gpu, toks, n, 0, identity_pages, lg, 0) && !run(cpu, toks, n, 0, identity_pages, ref, 0)) {
            double rel, mx, rel_cpu, mx_cpu;
            compare(lg, want, N_VOCAB, &rel, &mx);
            compare(lg, ref, N_VOCAB, &rel_cpu, &mx_cpu);
            printf("  %-4s %3u tokens: vs goldens rel L2 %.2e, max abs %.2e; vs CPU exact rel L2 %.2e, max abs %.2e\n",
                   name, n, rel, mx, rel_cpu, mx_cpu);
            CHECK_MSG(rel < 3e-3, "%s: rel L2 %.3g vs the goldens (max abs %.3g)", name, rel, mx);
            CHECK_MSG(rel_cpu < 3e-3, "%s: rel L2 %.3g vs the CPU", name, rel_cpu);
        }
        free(want);
        free(toks);
    }
    free(lg);
    free(ref);
    if (gpu)
        gpu->ops->destroy(&gpu);
    if (cpu)
        cpu->ops->destroy(&cpu);
}

/* 3: 32 greedy steps through one-token decode, fed the goldens' tokens (so
 * that one near tie does not derail the rest): the GPU's top token equals the
 * goldens' wherever their margin is clear (> 0.5). Margins: the goldens'
 * top1_minus_top2 for the first step, greedy_gaps after. */
static void test_greedy_decode(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    backend *b = new_backend(&cuda_backend_ops, PAGES);
    float *lg = malloc(N_VOCAB * sizeof *lg);
    for (size_t i = 0; b && i < json_len(prompts); i++) {
        uint32_t n;
        int32_t *toks = golden_prompt(prompts, i, &n);
        const json_value *res = json_at(exact, i);
        const json_value *greedy = json_get(res, "greedy"), *gaps = json_get(res, "greedy_gaps");
        int agree = 0, clear = 0, clear_agree = 0;
        if (!run(b, toks, n, 0, identity_pages, lg, 0)) {
            for (uint32_t k = 0; k < 32; k++) {
                int32_t want = (int32_t)json_integer(json_at(greedy, k));
                double margin = k == 0 ? json_number(json_get(res, "top1_minus_top2"))
                                       : (gaps && k - 1 < json_len(gaps) ? json_number(json_at(gaps, k - 1)) : 1e9);
                float own_margin;
                int32_t got = argmax(lg, &own_margin);
                agree += got == want;
                if (margin > 0.5) {
                    clear++;
                    clear_agree += got == want;
                    CHECK_MSG(got == want, "prompt %zu step %u: top-1 %d, golden %d (golden margin %.3f)", i, k, got,
                              want, margin);
                }
                if (k < 31 && decode(b, want, n + k, identity_pages, lg))
                    break;
            }
        }
        printf("  prompt %zu: %d/32 steps agree with the goldens (%d/%d of those with a margin > 0.5)\n", i, agree,
               clear_agree, clear);
        free(toks);
    }
    free(lg);
    if (b)
        b->ops->destroy(&b);
}

/* A shuffled 0..PAGES-1. */
static void shuffled_pages(uint32_t *p)
{
    for (uint32_t i = 0; i < PAGES; i++)
        p[i] = i;
    for (uint32_t i = PAGES - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(test_rng() % (i + 1)), t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

/* 4: three prompts in one step, in scattered pages, equal each alone. */
static void test_batch_scattered(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    backend *b = new_backend(&cuda_backend_ops, PAGES);
    uint32_t n[3], perm[PAGES], pages[3][PAGES];
    int32_t *t[3];
    float *alone[3], *together[3];
    shuffled_pages(perm);
    /* p7, p64, p600 need 1, 4 and 38 pages: disjoint runs of the permutation */
    static const uint32_t first[3] = { 0, 1, 5 };
    for (int i = 0; i < 3; i++) {
        t[i] = golden_prompt(prompts, (size_t)i + 1, &n[i]);
        alone[i] = malloc(N_VOCAB * sizeof(float));
        together[i] = malloc(N_VOCAB * sizeof(float));
        for (uint32_t p = 0; p < PAGES; p++)
            pages[i][p] = perm[(first[i] + p) % PAGES];
    }
    for (int i = 0; b && i < 3; i++)
        run(b, t[i], n[i], 0, identity_pages, alone[i], 0);
    if (b) {
        fwd_seq s[3];
        for (int i = 0; i < 3; i++)
            s[i] = (fwd_seq){ t[i], n[i], 0, pages[i], (n[i] + PAGE - 1) / PAGE, 0, together[i], 1 };
        if (!forward(b, s, 3))
            for (int i = 0; i < 3; i++) {
                double rel, mx;
                compare(together[i], alone[i], N_VOCAB, &rel, &mx);
                printf("  prompt %d (%u tokens) in a batch of 3: rel L2 %.2e vs alone\n", i + 1, n[i], rel);
                CHECK_MSG(rel < 1e-5, "prompt %d in a batch: rel L2 %.3g", i + 1, rel);
            }
        b->ops->destroy(&b);
    }
    for (int i = 0; i < 3; i++) {
        free(t[i]);
        free(alone[i]);
        free(together[i]);
    }
}

/* 5: p600 prefilled in three chunks equals it whole; all-position logits of
 * p64 in three chunks equal them in one step, row by row, and their last row
 * the last-position logits. */
static void test_chunked_prefill(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    backend *b = new_backend(&cuda_backend_ops, PAGES);
    uint32_t n600, n64;
    int32_t *p600 = golden_prompt(prompts, 3, &n600), *p64 = golden_prompt(prompts, 2, &n64);
    float *whole = malloc(N_VOCAB * sizeof(float)), *chunked = malloc(N_VOCAB * sizeof(float));
    float *all = malloc((size_t)n64 * N_VOCAB * sizeof(float)), *all_chunks = malloc((size_t)n64 * N_VOCAB * 4);
    uint32_t pages[PAGES];
    shuffled_pages(pages);
    double rel, mx;
    if (b && !run(b, p600, n600, 0, pages, whole, 0)) {
        const uint32_t chunks[3] = { 250, 1, n600 - 251 };
        uint32_t at = 0;
        int ok = 1;
        for (int c = 0; ok && c < 3; c++) {
            ok = !run(b, p600 + at, chunks[c], at, pages, chunked, 0);
            at += chunks[c];
        }
        if (ok) {
            compare(chunked, whole, N_VOCAB, &rel, &mx);
            printf("  p600 in chunks of 250, 1, %u: rel L2 %.2e vs whole\n", n600 - 251, rel);
            CHECK_MSG(rel < 1e-5, "chunked prefill: rel L2 %.3g", rel);
        }
    }
    if (b && !run(b, p64, n64, 0, pages, all, 1)) {
        const uint32_t chunks[3] = { 20, 30, n64 - 50 };
        uint32_t at = 0;
        int ok = 1;
        for (int c = 0; ok && c < 3; c++) {
            ok = !run(b, p64 + at, chunks[c], at, pages, all_chunks + (size_t)at * N_VOCAB, 1);
            at += chunks[c];
        }
        double worst = 0;
        for (uint32_t r = 0; ok && r < n64; r++) {
            compare(all_chunks + (size_t)r * N_VOCAB, all + (size_t)r * N_VOCAB, N_VOCAB, &rel, &mx);
            worst = rel > worst || isnan(rel) ? rel : worst;
        }
        if (ok && !run(b, p64, n64, 0, pages, whole, 0)) {
            compare(all + (size_t)(n64 - 1) * N_VOCAB, whole, N_VOCAB, &rel, &mx);
            printf("  p64 all-position logits: chunked vs one step worst row rel L2 %.2e; last row vs last-only "
                   "%.2e\n",
                   worst, rel);
            CHECK_MSG(worst < 1e-5, "all-position logits in chunks: worst row rel L2 %.3g", worst);
            CHECK_MSG(rel < 1e-5, "all-position logits: last row rel L2 %.3g", rel);
        }
    }
    free(p600);
    free(p64);
    free(whole);
    free(chunked);
    free(all);
    free(all_chunks);
    if (b)
        b->ops->destroy(&b);
}

/* 6: prefix reuse. p600 prefilled in pages A; its first 300 positions (not a
 * page boundary) copied into fresh pages B; the rest prefilled from 300 in
 * B: equals a fresh prefill. */
static void test_copy_kv_prefix(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    enum { NP = 2 * PAGES };
    backend_config cfg = { NP, PAGE, 0, 1, 0 };
    smq_err err;
    backend *b = cuda_backend_ops.create(mdl, &cfg, &err);
    CHECK_MSG(b, "%s", err.msg);
    if (!b)
        return;
    CHECK(cuda_backend_poison(b, 1, &err) == 0);
    uint32_t n;
    int32_t *p600 = golden_prompt(prompts, 3, &n);
    uint32_t a[PAGES], bp[PAGES], perm[PAGES];
    shuffled_pages(perm);
    for (uint32_t p = 0; p < PAGES; p++) {
        a[p] = perm[p];
        bp[p] = PAGES + perm[PAGES - 1 - p]; /* the second half of the pool */
    }
    float *fresh = malloc(N_VOCAB * sizeof(float)), *reused = malloc(N_VOCAB * sizeof(float));
    const uint32_t N = 300;
    if (!run(b, p600, n, 0, a, fresh, 0)) {
        CHECK_MSG(b->ops->copy_kv(b, a, bp, N, &err) == 0, "copy_kv: %s", err.msg);
        if (!run(b, p600 + N, n - N, N, bp, reused, 0)) {
            double rel, mx;
            compare(reused, fresh, N_VOCAB, &rel, &mx);
            printf("  %u positions copied, %u prefilled after them: rel L2 %.2e vs a fresh prefill\n", N, n - N, rel);
            CHECK_MSG(rel < 1e-5, "prefix reuse: rel L2 %.3g", rel);
        }
    }
    uint32_t bad = NP;
    CHECK(b->ops->copy_kv(b, a, &bad, 1, &err) == -1);
    CHECK_CONTAINS(err.msg, "cuda backend: page outside the pool");
    free(p600);
    free(fresh);
    free(reused);
    b->ops->destroy(&b);
}

/* 7: a step of a generated token (q16 route) and a prompt (cuBLAS route,
 * whose rows the backend puts first): each equals its step alone. */
static void test_mixed_step(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    backend *b = new_backend(&cuda_backend_ops, PAGES);
    uint32_t na, nb, pa[PAGES], pb[PAGES];
    int32_t *ta = golden_prompt(prompts, 2, &na), *tb = golden_prompt(prompts, 1, &nb), next = 9906;
    for (uint32_t p = 0; p < PAGES; p++) {
        pa[p] = p;                       /* p64 and its token: pages 0..4 */
        pb[p] = (PAGES / 2 + p) % PAGES; /* p7: from page 32 */
    }
    float *a_alone = malloc(N_VOCAB * 4), *b_alone = malloc(N_VOCAB * 4), *a_mix = malloc(N_VOCAB * 4),
          *b_mix = malloc(N_VOCAB * 4);
    if (b && !run(b, ta, na, 0, pa, a_mix, 0) && !decode(b, next, na, pa, a_alone) &&
        !run(b, tb, nb, 0, pb, b_alone, 0)) {
        fwd_seq s[2] = { { &next, 1, na, pa, PAGES, 0, a_mix, 0 }, { tb, nb, 0, pb, PAGES, 0, b_mix, 1 } };
        if (!forward(b, s, 2)) {
            double ra, rb, mx;
            compare(a_mix, a_alone, N_VOCAB, &ra, &mx);
            compare(b_mix, b_alone, N_VOCAB, &rb, &mx);
            printf("  a generated token beside a %u-token prompt: rel L2 %.2e and %.2e vs each alone\n", nb, ra, rb);
            CHECK_MSG(ra < 1e-5, "generated token in a mixed step: rel L2 %.3g", ra);
            CHECK_MSG(rb < 1e-5, "prompt in a mixed step: rel L2 %.3g", rb);
        }
    }
    free(ta);
    free(tb);
    free(a_alone);
    free(b_alone);
    free(a_mix);
    free(b_mix);
    if (b)
        b->ops->destroy(&b);
}

/* 8: the prompt route against the q16 route (SMQ_CUDA_GEMM=0) on the four
 * prompts; the weights dequantized per step (SMQ_CUDA_F16_WEIGHTS=0)
 * against kept in fp16; and without cuBLAS (a library that does not load)
 * the backend takes the q16 route: the same logits bit for bit. */
static void test_routes(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    /* the switches compared here start from their defaults, whatever the
     * run was given (the device check runs this test with some of them off) */
    char *kept_gemm = test_env_swap("SMQ_CUDA_GEMM", NULL), *kept_f16 = test_env_swap("SMQ_CUDA_F16_WEIGHTS", NULL),
         *kept_flash = test_env_swap("SMQ_CUDA_FLASH", NULL);
    backend *fast = new_backend(&cuda_backend_ops, PAGES);
    setenv("SMQ_CUDA_GEMM", "0", 1);
    backend *q16 = new_backend(&cuda_backend_ops, PAGES);
    unsetenv("SMQ_CUDA_GEMM");
    char *kept = test_env_swap("SMQ_CUBLAS", "/nonexistent/libcublas.so");
    backend *none = new_backend(&cuda_backend_ops, PAGES);
    test_env_restore("SMQ_CUBLAS", kept);
    setenv("SMQ_CUDA_F16_WEIGHTS", "0", 1);
    backend *scratch = new_backend(&cuda_backend_ops, PAGES);
    unsetenv("SMQ_CUDA_F16_WEIGHTS");
    setenv("SMQ_CUDA_FLASH", "0", 1);
    backend *splitk = new_backend(&cuda_backend_ops, PAGES);
    unsetenv("SMQ_CUDA_FLASH");
    test_env_restore("SMQ_CUDA_GEMM", kept_gemm);
    test_env_restore("SMQ_CUDA_F16_WEIGHTS", kept_f16);
    test_env_restore("SMQ_CUDA_FLASH", kept_flash);
    float *lf = malloc(N_VOCAB * 4), *lq = malloc(N_VOCAB * 4), *ln = malloc(N_VOCAB * 4), *ls = malloc(N_VOCAB * 4),
          *lk = malloc(N_VOCAB * 4);
    for (size_t i = 0; fast && q16 && none && scratch && splitk && i < json_len(prompts); i++) {
        uint32_t n;
        int32_t *toks = golden_prompt(prompts, i, &n);
        if (!run(fast, toks, n, 0, identity_pages, lf, 0) && !run(q16, toks, n, 0, identity_pages, lq, 0) &&
            !run(none, toks, n, 0, identity_pages, ln, 0) && !run(scratch, toks, n, 0, identity_pages, ls, 0) &&
            !run(splitk, toks, n, 0, identity_pages, lk, 0)) {
            double rel, mx, rel_s, mx_s, rel_k, mx_k;
            compare(lf, lq, N_VOCAB, &rel, &mx);
            compare(ls, lf, N_VOCAB, &rel_s, &mx_s);
            compare(lk, lf, N_VOCAB, &rel_k, &mx_k);
            printf("  prompt %zu (%u tokens): cuBLAS route vs q16 route rel L2 %.2e, max abs %.2e; weights "
                   "dequantized per step vs kept in fp16 %.2e; split-K vs tensor-core attention %.2e\n",
                   i, n, rel, mx, rel_s, rel_k);
            CHECK_MSG(rel_k < 3e-3, "prompt %zu: SMQ_CUDA_FLASH=0 differs by rel L2 %.3g", i, rel_k);
            CHECK_MSG(rel < 3e-3, "prompt %zu: routes differ by rel L2 %.3g", i, rel);
            CHECK_MSG(rel_s < 1e-5, "prompt %zu: scratch vs fp16 copy rel L2 %.3g", i, rel_s);
            CHECK_MSG(!memcmp(ln, lq, N_VOCAB * 4), "prompt %zu: without cuBLAS the logits are not the q16 route's", i);
        }
        free(toks);
    }
    free(lf);
    free(lq);
    free(ln);
    free(ls);
    free(lk);
    if (splitk)
        splitk->ops->destroy(&splitk);
    if (scratch)
        scratch->ops->destroy(&scratch);
    if (fast)
        fast->ops->destroy(&fast);
    if (q16)
        q16->ops->destroy(&q16);
    if (none)
        none->ops->destroy(&none);
}

/* 9: a step of four generated tokens (four sequences) takes the cuBLAS
 * route (SMQ_CUDA_GEMM_BATCH, default 4): each within the routes' distance
 * of its token alone (q16); with the batch route off, the same numbers. */
static void test_decode_batch(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    enum { NS = 4, NP = 2 * PAGES };
    backend_config cfg = { NP, PAGE, 0, 1, 0 };
    smq_err err;
    backend *b[2] = { NULL, NULL };
    /* with cuBLAS, whatever the run was given (SMQ_CUDA_GEMM=0 reads no
     * SMQ_CUDA_GEMM_BATCH) */
    char *kept_gemm = test_env_swap("SMQ_CUDA_GEMM", NULL), *kept = test_env_swap("SMQ_CUDA_GEMM_BATCH", "four");
    b[0] = cuda_backend_ops.create(mdl, &cfg, &err);
    CHECK(b[0] == NULL);
    CHECK_CONTAINS(err.msg, "SMQ_CUDA_GEMM_BATCH=four: want a number of decode rows");
    setenv("SMQ_CUDA_GEMM_BATCH", "0", 1);
    b[1] = cuda_backend_ops.create(mdl, &cfg, &err);
    unsetenv("SMQ_CUDA_GEMM_BATCH");
    b[0] = cuda_backend_ops.create(mdl, &cfg, &err);
    test_env_restore("SMQ_CUDA_GEMM_BATCH", kept);
    test_env_restore("SMQ_CUDA_GEMM", kept_gemm);
    CHECK_MSG(b[0] && b[1], "%s", err.msg);
    uint32_t n[NS], pages[NS][NP], at = 0;
    int32_t *t[NS], next = 9906;
    float *alone[NS], *together[NS];
    for (int i = 0; i < NS; i++) {
        t[i] = golden_prompt(prompts, (size_t)i, &n[i]);
        alone[i] = malloc(N_VOCAB * sizeof(float));
        together[i] = malloc(N_VOCAB * sizeof(float));
        uint32_t need = (n[i] + 1 + PAGE - 1) / PAGE;
        for (uint32_t p = 0; p < NP; p++)
            pages[i][p] = (at + p) % NP;
        at += need;
    }
    for (int v = 0; v < 2 && b[0] && b[1]; v++) {
        double worst = 0;
        int ok = 1;
        for (int i = 0; ok && i < NS; i++) {
            fwd_seq p = { t[i], n[i], 0, pages[i], NP, 0, together[i], 1 };
            fwd_seq d = { &next, 1, n[i], pages[i], NP, 0, alone[i], 0 };
            ok = !forward(b[v], &p, 1) && !forward(b[v], &d, 1);
        }
        fwd_seq s[NS];
        for (int i = 0; i < NS; i++)
            s[i] = (fwd_seq){ &next, 1, n[i], pages[i], NP, 0, together[i], 0 };
        if (ok && !forward(b[v], s, NS))
            for (int i = 0; i < NS; i++) {
                double rel, mx;
                compare(together[i], alone[i], N_VOCAB, &rel, &mx);
                worst = rel > worst || isnan(rel) ? rel : worst;
            }
        printf("  4 generated tokens in one step%s: worst rel L2 %.2e vs each alone\n",
               v ? " (batch route off)" : " (cuBLAS route)", worst);
        CHECK_MSG(ok, "a step failed");
        CHECK_MSG(worst < (v ? 1e-5 : 3e-3), "decode batch: rel L2 %.3g", worst);
    }
    for (int i = 0; i < NS; i++) {
        free(t[i]);
        free(alone[i]);
        free(together[i]);
    }
    for (int v = 0; v < 2; v++)
        if (b[v])
            b[v]->ops->destroy(&b[v]);
}

/* forward() on backend v of decode_same_without: v 1 with the mechanism
 * off (off(0) .. off(1) around the step, whose graph it captures). */
static int forward_as(backend *b, int v, void (*off)(int), fwd_seq *seqs, uint32_t n)
{
    if (v && off)
        off(0);
    int rc = forward(b, seqs, n);
    if (v && off)
        off(1);
    return rc;
}

/* Decode steps of one token (the graph) from 320 positions (10 and then
 * 11 attention splits), then one of two tokens, from a default backend and
 * from one with a mechanism switched (env set to value while it is
 * created, or off(0) .. off(1) around each of its steps), bit for bit: the
 * mechanism must not change a number. */
static void decode_same_without(const char *env, const char *value, void (*off)(int), const char *what)
{
    /* the reference is the default, whatever the run was given */
    char *kept = env ? test_env_swap(env, NULL) : NULL;
    backend *b[2] = { new_backend(&cuda_backend_ops, 2 * PAGES), NULL };
    if (env)
        setenv(env, value, 1);
    b[1] = new_backend(&cuda_backend_ops, 2 * PAGES);
    if (env)
        test_env_restore(env, kept);
    uint32_t n[2], pg[2][PAGES], n0;
    int32_t *t[2] = { golden_prompt(prompts, 0, &n0), golden_prompt(prompts, 3, &n[1]) };
    /* the first sequence long enough for many attention splits (the last one merges) */
    int32_t *longer = malloc(320 * sizeof *longer);
    for (n[0] = 0; n[0] < 320; n[0]++)
        longer[n[0]] = t[0][n[0] % n0];
    free(t[0]);
    t[0] = longer;
    for (uint32_t p = 0; p < PAGES; p++)
        pg[0][p] = p, pg[1][p] = PAGES + p;
    float *lg[2][2];
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < 2; i++)
            lg[v][i] = malloc(N_VOCAB * 4);
    int32_t next[2] = { 9906, 198 };
    int same = 1, ok = b[0] && b[1];
    for (int v = 0; ok && v < 2; v++)
        for (int i = 0; ok && i < 2; i++) {
            fwd_seq p = { t[i], n[i], 0, pg[i], PAGES, 0, lg[v][i], 1 };
            ok = !forward_as(b[v], v, off, &p, 1);
        }
    enum { STEPS = 24 }; /* a race shows only sometimes: many steps */
    for (int step = 0; ok && step < STEPS; step++) {
        for (int v = 0; ok && v < 2; v++) {
            if (step < STEPS - 1) { /* one token: the graph */
                fwd_seq d = { &next[0], 1, n[0] + step, pg[0], PAGES, 0, lg[v][0], 0 };
                ok = !forward_as(b[v], v, off, &d, 1);
            } else { /* two sequences, a token each */
                fwd_seq d[2] = { { &next[0], 1, n[0] + step, pg[0], PAGES, 0, lg[v][0], 0 },
                                 { &next[1], 1, n[1], pg[1], PAGES, 0, lg[v][1], 0 } };
                ok = !forward_as(b[v], v, off, d, 2);
            }
        }
        same &=
            !memcmp(lg[0][0], lg[1][0], N_VOCAB * 4) && (step < STEPS - 1 || !memcmp(lg[0][1], lg[1][1], N_VOCAB * 4));
    }
    CHECK_MSG(ok, "a step failed");
    CHECK_MSG(same, "the logits differ without %s", what);
    if (ok && same)
        printf("  decode logits bit-identical without %s\n", what);
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < 2; i++)
            free(lg[v][i]);
        if (b[v])
            b[v]->ops->destroy(&b[v]);
    }
    free(t[0]);
    free(t[1]);
}

/* The fused attention merges (the default) against SMQ_CUDA_FUSE=0's
 * separate launches, and the norms fused into the residual products
 * (SMQ_CUDA_FUSE_NORM=1) against their own launches (the default). */
static void test_fused_norm(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    decode_same_without("SMQ_CUDA_FUSE", "0", NULL, "the fused merges (SMQ_CUDA_FUSE=0)");
    decode_same_without("SMQ_CUDA_FUSE_NORM", "1", NULL, "the separate norm launches (SMQ_CUDA_FUSE_NORM=1)");
}

/* How many launches a one-token decode step is (the nodes of its graph),
 * by default and with the norms fused (SMQ_CUDA_FUSE_NORM=1): launch gaps
 * are much of a small model's decode time, so the count must not creep up.
 * At a short context (one attention split, no merges): the embedding, layer
 * 0's norm, 7 a layer (QKV+RoPE+KV store, attention, attn_output+residual,
 * the next norm, gate/up+SwiGLU, ffn_down+residual, the next norm; the last
 * layer's next norm is the head's), the head's product. With the norms
 * fused into the residual products, 5 a layer. */
static void test_step_launches(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    uint32_t want[2] = { 7 * mdl->hp.n_layer + 3, 5 * mdl->hp.n_layer + 4 }, got[2] = { 0, 0 };
    for (int v = 0; v < 2; v++) {
        char *kept = test_env_swap("SMQ_CUDA_FUSE_NORM", v ? "1" : NULL),
             *kept_f = test_env_swap("SMQ_CUDA_FUSE", NULL);
        backend *b = new_backend(&cuda_backend_ops, PAGES);
        test_env_restore("SMQ_CUDA_FUSE_NORM", kept);
        test_env_restore("SMQ_CUDA_FUSE", kept_f);
        if (!b)
            return;
        uint32_t pg[PAGES];
        for (uint32_t p = 0; p < PAGES; p++)
            pg[p] = p;
        int32_t prompt[4] = { 9906, 1917, 198, 9906 };
        float *lg = malloc(N_VOCAB * 4);
        fwd_seq p = { prompt, 3, 0, pg, PAGES, 0, lg, 0 };
        fwd_seq d = { prompt + 3, 1, 3, pg, PAGES, 0, lg, 0 };
        CHECK(cuda_backend_step_nodes(b) == 0);
        if (!forward(b, &p, 1) && !forward(b, &d, 1))
            got[v] = cuda_backend_step_nodes(b);
        free(lg);
        b->ops->destroy(&b);
    }
    CHECK_MSG(got[0] == want[0], "a one-token step is %u launches, expected %u", got[0], want[0]);
    CHECK_MSG(got[1] == want[1], "with SMQ_CUDA_FUSE_NORM=1: %u launches, expected %u", got[1], want[1]);
    printf("  a one-token decode step of %u layers: %u launches (%u with the norms fused)\n", mdl->hp.n_layer, got[0],
           got[1]);
}

/* Programmatic dependent launch (launch.cuh: each kernel starts while the
 * one before it ends, prefetching its weights) against ordinary launches:
 * a kernel that read its input before its predecessor had written it would
 * show here. */
static void test_overlapped_launches(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    if (!cuda_pdl_active()) {
        test_skip("no programmatic dependent launch here (before sm_90, SMQ_CUDA_PDL=0, or given up)");
        return;
    }
    decode_same_without(NULL, NULL, cuda_set_pdl, "overlapped launches (SMQ_CUDA_PDL=0)");
}

/* 10: the sampling chain on the device (fwd_seq.pick). One step holds a
 * greedy pick with penalties and a pick at a temperature with every filter,
 * each on the same prompt as a sequence that wants its logits (one step
 * computes equal rows alike), and another prompt. The device's tokens must be
 * the host's sampler_choose on those logits, exactly; the picked sequences'
 * logits are never copied back; the other prompt's equal a run alone. */
static void test_device_pick(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    /* picks on the device, whatever the run was given (SMQ_CUDA_SAMPLE=0 is
     * checked at the end) */
    char *kept = test_env_swap("SMQ_CUDA_SAMPLE", NULL);
    backend *b = new_backend(&cuda_backend_ops, 4 * PAGES);
    uint32_t na, nb, pg[4][PAGES];
    int32_t *ta = golden_prompt(prompts, 2, &na), *tb = golden_prompt(prompts, 1, &nb);
    for (uint32_t k = 0; k < 4; k++)
        for (uint32_t p = 0; p < PAGES; p++)
            pg[k][p] = k * PAGES + (p * 7 + k) % PAGES;
    float *la = malloc(N_VOCAB * 4), *lc = malloc(N_VOCAB * 4), *lref = malloc(N_VOCAB * 4), *ld = malloc(N_VOCAB * 4),
          *rd = malloc(N_VOCAB * 4), *tmp = malloc(N_VOCAB * 4);
    sampling_params pg_greedy = sampling_defaults(), pg_hot = sampling_defaults();
    pg_greedy.temperature = 0;
    pg_greedy.repeat_penalty = 1.3f;
    pg_greedy.presence_penalty = 0.5f;
    pg_hot.temperature = 0.8f;
    pg_hot.top_k = 40;
    pg_hot.top_p = 0.9f;
    pg_hot.min_p = 0.02f;
    pg_hot.frequency_penalty = 0.3f;
    sampler sa, sc;
    sampler_init(&sa, &pg_greedy);
    sampler_init(&sc, &pg_hot);
    int32_t drawn[8];
    int failed = !b || run(b, tb, nb, 0, pg[3], rd, 0);
    for (int trial = 0; trial < 8 && !failed; trial++) {
        sample_pick pa, pc;
        failed = sampler_prepare(&sa, ta, na, &pa) || sampler_prepare(&sc, ta, na, &pc);
        pc.u = (trial + 0.5) / 8;
        fwd_seq s[4] = { { ta, na, 0, pg[0], PAGES, 0, la, 1, &pa },
                         { ta, na, 0, pg[1], PAGES, 0, lref, 1, NULL },
                         { ta, na, 0, pg[2], PAGES, 0, lc, 1, &pc },
                         { tb, nb, 0, pg[3], PAGES, 0, ld, 1, NULL } };
        if (failed || forward(b, s, 4)) {
            failed = 1;
            break;
        }
        memcpy(tmp, lref, N_VOCAB * 4);
        int32_t want_a = sampler_choose(&sa, tmp, N_VOCAB, &pa);
        memcpy(tmp, lref, N_VOCAB * 4);
        int32_t want_c = sampler_choose(&sc, tmp, N_VOCAB, &pc);
        drawn[trial] = pc.token;
        size_t untouched = 0;
        for (size_t i = 0; i < N_VOCAB; i++) {
            uint32_t x, y;
            memcpy(&x, &la[i], 4);
            memcpy(&y, &lc[i], 4);
            untouched += (x == 0xFFFFFFFFu) + (y == 0xFFFFFFFFu);
        }
        double rel, mx;
        compare(ld, rd, N_VOCAB, &rel, &mx);
        CHECK_MSG(pa.token == want_a, "trial %d: the greedy pick %d, the host's %d", trial, pa.token, want_a);
        CHECK_MSG(pc.token == want_c, "trial %d (u %.4f): the drawn pick %d, the host's %d", trial, pc.u, pc.token,
                  want_c);
        CHECK_MSG(untouched == 2 * (size_t)N_VOCAB, "trial %d: the picked sequences' logits were copied back", trial);
        CHECK_MSG(rel < 1e-5, "trial %d: the other sequence's logits: rel L2 %.3g", trial, rel);
        if (test_cur_failed)
            break;
    }
    if (!failed && !test_cur_failed)
        printf("  picks on the device equal the host's; drawn at u = 1/16 .. 15/16: %d %d %d %d %d %d %d %d\n",
               drawn[0], drawn[1], drawn[2], drawn[3], drawn[4], drawn[5], drawn[6], drawn[7]);
    /* SMQ_CUDA_SAMPLE=0: the backend leaves the pick to the host and sends the logits */
    setenv("SMQ_CUDA_SAMPLE", "0", 1);
    backend *off = new_backend(&cuda_backend_ops, PAGES);
    test_env_restore("SMQ_CUDA_SAMPLE", kept);
    sample_pick pk;
    if (off && !sampler_prepare(&sc, ta, na, &pk)) {
        fwd_seq s1 = { ta, na, 0, identity_pages, PAGES, 0, la, 1, &pk };
        if (!forward(off, &s1, 1)) {
            uint32_t bits;
            memcpy(&bits, &la[0], 4);
            CHECK_MSG(pk.token == -1 && bits != 0xFFFFFFFFu, "SMQ_CUDA_SAMPLE=0: token %d, logits %s", pk.token,
                      bits == 0xFFFFFFFFu ? "unwritten" : "written");
        }
    }
    if (off)
        off->ops->destroy(&off);
    sampler_free(&sa);
    sampler_free(&sc);
    free(ta);
    free(tb);
    free(la);
    free(lc);
    free(lref);
    free(ld);
    free(rd);
    free(tmp);
    if (b)
        b->ops->destroy(&b);
}

/* 11: bad batches are errors, with the CPU backend's messages. */
static void test_bad_batches(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    backend *b = new_backend(&cuda_backend_ops, PAGES);
    if (!b)
        return;
    float *lg = malloc(N_VOCAB * sizeof *lg);
    smq_err err;
    int32_t tok = 9906, bad_tok = N_VOCAB, neg_tok = -1;
    uint32_t bad_page = PAGES;
    fwd_seq s = { &tok, 1, PAGES * PAGE, identity_pages, PAGES, 0, lg };
    fwd_batch batch = { &s, 1 };
    CHECK(b->ops->forward(b, &batch, &err) == -1);
    CHECK_CONTAINS(err.msg, "cuda backend: sequence 0: 64 pages cannot hold position 1024");
    s = (fwd_seq){ &bad_tok, 1, 0, identity_pages, PAGES, 0, lg };
    CHECK(b->ops->forward(b, &batch, &err) == -1);
    CHECK_CONTAINS(err.msg, "cuda backend: token 128256 is outside the vocabulary");
    s = (fwd_seq){ &neg_tok, 1, 0, identity_pages, PAGES, 0, lg };
    CHECK(b->ops->forward(b, &batch, &err) == -1);
    CHECK_CONTAINS(err.msg, "token -1 is outside the vocabulary");
    s = (fwd_seq){ &tok, 1, 0, &bad_page, 1, 0, lg };
    CHECK(b->ops->forward(b, &batch, &err) == -1);
    CHECK_CONTAINS(err.msg, "cuda backend: page 64 is outside the pool of 64");
    s = (fwd_seq){ &tok, 0, 0, identity_pages, PAGES, 0, lg };
    CHECK(b->ops->forward(b, &batch, &err) == -1);
    CHECK_CONTAINS(err.msg, "has no tokens");
    /* and the backend still works after them */
    CHECK(run(b, &tok, 1, 0, identity_pages, lg, 0) == 0);
    CHECK(!isnan(lg[0]) && !isnan(lg[N_VOCAB - 1]));
    CHECK(b->ops->memory(b) > mdl->weight_bytes / 2);
    free(lg);
    b->ops->destroy(&b);
}

/* A KV pool twice the device's memory: the probe says what is free and
 * what the model needs; creating the backend fails naming what it asked
 * for and what was free, and gives back all it had taken (the weights);
 * a backend that fits works after it. */
static void test_out_of_memory(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    size_t free0 = 0, free1 = 0, total = 0;
    CHECK(cudaMemGetInfo(&free0, &total) == cudaSuccess);
    backend_config one = { 1, PAGE, 0, 1, 0 }, two = { 2, PAGE, 0, 1, 0 };
    uint64_t per_page = cuda_backend_need(mdl, &two) - cuda_backend_need(mdl, &one);
    uint64_t pages = 2 * (uint64_t)total / per_page + 1;
    if (pages > UINT32_MAX) {
        test_skip("%zu bytes of device memory take more than 2^32 pages of the test model", total);
        return;
    }
    backend_config cfg = { (uint32_t)pages, PAGE, 0, 1, 0 };
    char desc[256];
    smq_err err;
    CHECK_INT(cuda_backend_probe(mdl, &cfg, desc, sizeof desc, &err), -1);
    printf("  probe: %s\n", err.msg);
    CHECK_CONTAINS(err.msg, "GiB free; the model and its KV pool need");
    backend *b = cuda_backend_ops.create(mdl, &cfg, &err);
    CHECK(b == NULL);
    printf("  create: %s\n", err.msg);
    CHECK_CONTAINS(err.msg, "cannot allocate");
    CHECK_CONTAINS(err.msg, "of device memory for the KV pool (");
    CHECK_CONTAINS(err.msg, " MiB free of ");
    CHECK(cudaMemGetInfo(&free1, &total) == cudaSuccess);
    CHECK_MSG(free1 + (16u << 20) >= free0, "a failed create kept %.1f MiB", (free0 - free1) / 1048576.0);
    backend *ok = new_backend(&cuda_backend_ops, PAGES);
    if (ok) {
        float *lg = malloc(N_VOCAB * 4);
        int32_t tok = 1;
        CHECK(run(ok, &tok, 1, 0, identity_pages, lg, 0) == 0);
        CHECK(!isnan(lg[0]) && !isnan(lg[N_VOCAB - 1]));
        free(lg);
        ok->ops->destroy(&ok);
    }
}

/* Without a device, create fails with a message rather than crashing. */
static void test_no_device_error(void)
{
    if (have_gpu) {
        backend_config cfg = { PAGES, PAGE, 0, 1, 1 << 20 };
        smq_err err;
        backend *b = cuda_backend_ops.create(mdl, &cfg, &err);
        CHECK(b == NULL);
        CHECK_CONTAINS(err.msg, "GPU 1048576 does not exist");
        return;
    }
    backend_config cfg = { PAGES, PAGE, 0, 1, 0 };
    smq_err err;
    backend *b = cuda_backend_ops.create(mdl, &cfg, &err);
    CHECK(b == NULL);
    CHECK_CONTAINS(err.msg, "cuda backend: no usable CUDA device");
}

int main(void)
{
    test_program = "cuda_backend_gpu";
    if (!(mdl = golden_model()))
        return 1;
    for (uint32_t p = 0; p < PAGES; p++)
        identity_pages[p] = p;
    prompts = golden_json("prompts.json");
    exact = golden_json("exact.results.json");
    if (!prompts || !exact)
        return 1;
    have_gpu = cuda_device_count() > 0;
    TEST_RUN(test_logits_goldens_and_cpu);
    TEST_RUN(test_greedy_decode);
    TEST_RUN(test_batch_scattered);
    TEST_RUN(test_chunked_prefill);
    TEST_RUN(test_copy_kv_prefix);
    TEST_RUN(test_mixed_step);
    TEST_RUN(test_routes);
    TEST_RUN(test_decode_batch);
    TEST_RUN(test_fused_norm);
    TEST_RUN(test_step_launches);
    TEST_RUN(test_overlapped_launches);
    TEST_RUN(test_device_pick);
    TEST_RUN(test_bad_batches);
    TEST_RUN(test_out_of_memory);
    TEST_RUN(test_no_device_error);
    json_free(prompts);
    json_free(exact);
    model_destroy(&mdl);
    return test_done();
}
