/* attention_gpu_test.cu - the prompt rows' attention on the tensor cores
 * (fwd_prompt_attention), and the decode rows' split-K attention
 * (fwd_attention, check_decode_shape), against float64 on the host, on SmolLM3-3B's head
 * shapes (16 heads of 128 over 4 KV heads) and the test model's (4 of 64
 * over 2): two sequences of prompt rows, one after a cached prefix, in
 * shuffled pages of fp16 K and V whose unwritten slots are NaN, the output
 * poisoned first. And the same rows in other chunks give the same bits. A
 * .cu file: the kernels' launcher takes __half. Skipped without a GPU. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "dequant.h"
#include "fwd_kernels.h"
#include "qdot.cuh"
#include "quant.h"
#include "test.h"

#define PAGE    16
#define N_PAGES 160 /* 2560 positions */

typedef struct seq_rows {
    uint32_t first_pos, n; /* prompt rows at positions first_pos .. first_pos + n - 1 */
} seq_rows;

static int have_gpu;

static int cuda_ok(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 1;
    test_fail(__FILE__, __LINE__, "%s: %s", what, cudaGetErrorString(e));
    return 0;
}

/* Element i of a q16 row of n as a float. */
static float q16_value(const uint8_t *row, uint32_t n, uint32_t i)
{
    const int8_t *hi = (const int8_t *)row, *lo = (const int8_t *)row + n;
    const float *d = (const float *)(row + 2 * (uint64_t)n);
    return (float)(256 * hi[i] + lo[i]) * d[i / 32];
}

/* One query head's attention in float64 (ref[D]): qh against the keys and
 * values of positions 0 .. n_ctx - 1 of KV group g, position t in slot
 * pages[t / PAGE] * PAGE + t % PAGE of kv (fp16, K then V a slot). sc:
 * n_ctx doubles of scratch. */
static void ref_head(const float *qh, const uint16_t *kv, const uint32_t *pages, uint32_t n_ctx, uint32_t g, uint32_t D,
                     uint32_t kv_dim, double *sc, double *ref)
{
    double mx = -INFINITY, sum = 0;
    for (uint32_t t = 0; t < n_ctx; t++) {
        uint64_t slot = (uint64_t)pages[t / PAGE] * PAGE + t % PAGE;
        const uint16_t *k = kv + slot * 2 * kv_dim + g * D;
        double dot = 0;
        for (uint32_t i = 0; i < D; i++)
            dot += (double)qh[i] * fp16_to_f32(k[i]);
        sc[t] = dot / sqrt((double)D);
        mx = sc[t] > mx ? sc[t] : mx;
    }
    for (uint32_t t = 0; t < n_ctx; t++)
        sum += (sc[t] = exp(sc[t] - mx));
    for (uint32_t i = 0; i < D; i++) {
        double acc = 0;
        for (uint32_t t = 0; t < n_ctx; t++) {
            uint64_t slot = (uint64_t)pages[t / PAGE] * PAGE + t % PAGE;
            acc += sc[t] * fp16_to_f32(kv[slot * 2 * kv_dim + kv_dim + g * D + i]);
        }
        ref[i] = acc / sum;
    }
}

/* One launch over the rows [r_begin, r_end) of the step (a chunk), tiles
 * cut per sequence; the output rows land at their step rows. */
static int launch(const fwd_dims *d, const float *dq, const __half *dkv, const seq_rows *seqs, int n_seqs,
                  uint32_t r_begin, uint32_t r_end, const fwd_meta *m, uint8_t *dout)
{
    uint32_t tr = fwd_prompt_tile_rows(d), tiles[2 * 4096], n_tiles = 0, base = 0;
    for (int s = 0; s < n_seqs; base += seqs[s].n, s++) {
        uint32_t lo = base > r_begin ? base : r_begin, hi = base + seqs[s].n < r_end ? base + seqs[s].n : r_end;
        for (uint32_t t = lo; t < hi; t += tr, n_tiles++) {
            tiles[2 * n_tiles] = t;
            tiles[2 * n_tiles + 1] = hi - t < tr ? hi - t : tr;
        }
    }
    uint32_t *dt = NULL;
    smq_err err;
    int ok = cuda_ok(cudaMalloc((void **)&dt, 8 * (n_tiles ? n_tiles : 1)), "tiles") &&
             cuda_ok(cudaMemcpy(dt, tiles, 8 * n_tiles, cudaMemcpyHostToDevice), "tiles up");
    if (ok && fwd_prompt_attention(dq, dkv, dt, n_tiles, d, m, dout, NULL, &err)) {
        test_fail(__FILE__, __LINE__, "fwd_prompt_attention: %s", err.msg);
        ok = 0;
    }
    ok = ok && cuda_ok(cudaDeviceSynchronize(), "the launch");
    cudaFree(dt);
    return ok ? 0 : -1;
}

static void check_shape(uint32_t n_head, uint32_t n_head_kv, uint32_t D)
{
    const seq_rows seqs[2] = { { 700, 300 }, { 0, 37 } };
    const uint32_t rows = 337, G = n_head / n_head_kv, kv_dim = n_head_kv * D, out_n = n_head * D;
    fwd_dims d = { 0, n_head, n_head_kv, D, D, 0, PAGE };
    CHECK(fwd_prompt_attention_supported(&d));
    uint64_t kv_halves = (uint64_t)N_PAGES * PAGE * 2 * kv_dim, out_row = q16_row_bytes(out_n);
    uint16_t *kv = (uint16_t *)malloc(kv_halves * 2);
    float *q = (float *)malloc((uint64_t)rows * out_n * 4);
    uint8_t *out = (uint8_t *)malloc(rows * out_row), *out2 = (uint8_t *)malloc(rows * out_row);
    uint32_t pages[2][N_PAGES / 2], perm[N_PAGES], row_pos[rows], row_table[rows];
    for (uint32_t i = 0; i < N_PAGES; i++)
        perm[i] = i;
    for (uint32_t i = N_PAGES - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(test_rng() % (i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int s = 0; s < 2; s++)
        for (uint32_t p = 0; p < N_PAGES / 2; p++)
            pages[s][p] = perm[s * (N_PAGES / 2) + p];
    /* every slot NaN, then the positions each sequence has written: random */
    for (uint64_t i = 0; i < kv_halves; i++)
        kv[i] = 0x7E00;
    for (int s = 0; s < 2; s++)
        for (uint32_t t = 0; t < seqs[s].first_pos + seqs[s].n; t++) {
            uint64_t slot = (uint64_t)pages[s][t / PAGE] * PAGE + t % PAGE;
            for (uint32_t i = 0; i < 2 * kv_dim; i++)
                kv[slot * 2 * kv_dim + i] = f32_to_fp16((float)((int64_t)(test_rng() % 20001) - 10000) / 10000.0f);
        }
    for (uint64_t i = 0; i < (uint64_t)rows * out_n; i++)
        q[i] = (float)((int64_t)(test_rng() % 20001) - 10000) / 2500.0f; /* |q| up to 4: peaked softmaxes too */
    uint32_t r = 0;
    for (int s = 0; s < 2; s++)
        for (uint32_t t = 0; t < seqs[s].n; t++, r++) {
            row_pos[r] = seqs[s].first_pos + t;
            row_table[r] = s * (N_PAGES / 2);
        }
    uint32_t flat_pages[N_PAGES];
    memcpy(flat_pages, pages, sizeof flat_pages);

    float *dq = NULL;
    __half *dkv = NULL;
    uint8_t *dout = NULL;
    uint32_t *dpos = NULL, *dtab = NULL, *dpages = NULL;
    int ok = cuda_ok(cudaMalloc((void **)&dq, (uint64_t)rows * out_n * 4), "q") &&
             cuda_ok(cudaMalloc((void **)&dkv, kv_halves * 2), "kv") &&
             cuda_ok(cudaMalloc((void **)&dout, rows * out_row), "out") &&
             cuda_ok(cudaMalloc((void **)&dpos, sizeof row_pos), "pos") &&
             cuda_ok(cudaMalloc((void **)&dtab, sizeof row_table), "table") &&
             cuda_ok(cudaMalloc((void **)&dpages, sizeof flat_pages), "pages") &&
             cuda_ok(cudaMemcpy(dq, q, (uint64_t)rows * out_n * 4, cudaMemcpyHostToDevice), "q up") &&
             cuda_ok(cudaMemcpy(dkv, kv, kv_halves * 2, cudaMemcpyHostToDevice), "kv up") &&
             cuda_ok(cudaMemcpy(dpos, row_pos, sizeof row_pos, cudaMemcpyHostToDevice), "pos up") &&
             cuda_ok(cudaMemcpy(dtab, row_table, sizeof row_table, cudaMemcpyHostToDevice), "table up") &&
             cuda_ok(cudaMemcpy(dpages, flat_pages, sizeof flat_pages, cudaMemcpyHostToDevice), "pages up") &&
             cuda_ok(cudaMemset(dout, 0xFF, rows * out_row), "poison");
    fwd_meta m = { NULL, dpos, dtab, NULL, dpages, NULL };
    /* all rows in one launch; then in chunks that cut tiles elsewhere */
    if (ok && !launch(&d, dq, dkv, seqs, 2, 0, rows, &m, dout) &&
        cuda_ok(cudaMemcpy(out, dout, rows * out_row, cudaMemcpyDeviceToHost), "out down") &&
        cuda_ok(cudaMemset(dout, 0xFF, rows * out_row), "poison") && !launch(&d, dq, dkv, seqs, 2, 0, 5, &m, dout) &&
        !launch(&d, dq, dkv, seqs, 2, 5, 251, &m, dout) && !launch(&d, dq, dkv, seqs, 2, 251, rows, &m, dout) &&
        cuda_ok(cudaMemcpy(out2, dout, rows * out_row, cudaMemcpyDeviceToHost), "out down")) {
        double num = 0, den = 0;
        int nan = 0;
        double *sc = (double *)malloc(3000 * sizeof *sc), ref[256];
        for (r = 0; r < rows; r++) {
            int s = r < seqs[0].n ? 0 : 1;
            uint32_t n_ctx = row_pos[r] + 1;
            for (uint32_t h = 0; h < n_head; h++) {
                ref_head(q + ((uint64_t)r * n_head + h) * D, kv, pages[s], n_ctx, h / G, D, kv_dim, sc, ref);
                for (uint32_t i = 0; i < D; i++) {
                    double got = q16_value(out + r * out_row, out_n, h * D + i);
                    nan += isnan(got);
                    num += (got - ref[i]) * (got - ref[i]);
                    den += ref[i] * ref[i];
                }
            }
        }
        free(sc);
        double rel = sqrt(num / den);
        int same = !memcmp(out, out2, rows * out_row);
        printf("  %u heads of %u over %u KV heads, %u rows (300 after 700 cached, 37): rel L2 %.2e vs float64; "
               "in other chunks %s\n",
               n_head, D, n_head_kv, rows, rel, same ? "the same bits" : "DIFFERENT");
        CHECK_MSG(nan == 0, "%d outputs NaN or not written", nan);
        CHECK_MSG(rel < 2e-3, "rel L2 %.3g", rel);
        CHECK_MSG(same, "the rows' outputs depend on how they were chunked");
    }
    cudaFree(dq);
    cudaFree(dkv);
    cudaFree(dout);
    cudaFree(dpos);
    cudaFree(dtab);
    cudaFree(dpages);
    free(kv);
    free(q);
    free(out);
    free(out2);
}

static void test_prompt_attention(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    /* the one-pass kernel (the default), then the two-pass WMMA one it
     * replaces (SMQ_CUDA_PA_WMMA=1), kept until the first has run on a GPU */
    for (int wmma = 0; wmma < 2; wmma++) {
        char *kept = test_env_swap("SMQ_CUDA_PA_WMMA", wmma ? "1" : NULL);
        printf("  %s:\n", wmma ? "two passes, WMMA (SMQ_CUDA_PA_WMMA=1)" : "one pass, mma.sync");
        check_shape(16, 4, 128); /* SmolLM3-3B */
        check_shape(4, 2, 64);   /* the test model */
        check_shape(8, 8, 64);   /* one head per KV head */
        test_env_restore("SMQ_CUDA_PA_WMMA", kept);
    }
}

/* The decode rows' split-K attention (fwd_attention) on one shape: rows of
 * one query each at contexts from 1 to 32768 positions (1 to 32 splits of
 * up to 1024) in a sequence of shuffled pages, and one row of a short
 * sequence whose page holds NaN past its end; against float64, and with
 * the splits merged by their last block (count) or by the merge kernel:
 * the same bits. */
static void check_decode_shape(uint32_t n_head, uint32_t n_head_kv, uint32_t D)
{
    enum { LONG = 32768, SHORT = 101, ROWS = 11 };
    const uint32_t pos[ROWS] = { 0, 30, 31, 32, 63, 319, 999, 4095, 8190, LONG - 1, SHORT - 1 };
    const uint32_t n_long = LONG / PAGE, n_short = (SHORT + PAGE - 1) / PAGE, n_pages = n_long + n_short;
    const uint32_t G = n_head / n_head_kv, kv_dim = n_head_kv * D, out_n = n_head * D;
    fwd_dims d = { 0, n_head, n_head_kv, D, D, 0, PAGE };
    uint64_t kv_halves = (uint64_t)n_pages * PAGE * 2 * kv_dim, out_row = q16_row_bytes(out_n);
    uint64_t slot_f = att_slot_floats(&d), part_f = (uint64_t)ROWS * ATT_MAX_SPLITS * slot_f;
    uint16_t *kv = (uint16_t *)malloc(kv_halves * 2);
    float *q = (float *)malloc((uint64_t)ROWS * out_n * 4);
    uint8_t *out[2] = { (uint8_t *)malloc(ROWS * out_row), (uint8_t *)malloc(ROWS * out_row) };
    uint32_t *pages = (uint32_t *)malloc(n_pages * 4), row_pos[ROWS], row_table[ROWS], row_part[ROWS];
    for (uint32_t i = 0; i < n_pages; i++)
        pages[i] = i;
    for (uint32_t i = n_pages - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(test_rng() % (i + 1)), t = pages[i];
        pages[i] = pages[j];
        pages[j] = t;
    }
    for (uint64_t i = 0; i < kv_halves; i++) /* the short sequence's last page past its end stays NaN */
        kv[i] = 0x7E00;
    for (int sq = 0; sq < 2; sq++)
        for (uint32_t t = 0; t < (sq ? SHORT : LONG); t++) {
            uint64_t slot = (uint64_t)pages[(sq ? n_long : 0) + t / PAGE] * PAGE + t % PAGE;
            for (uint32_t i = 0; i < 2 * kv_dim; i++)
                kv[slot * 2 * kv_dim + i] = f32_to_fp16((float)((int64_t)(test_rng() % 20001) - 10000) / 10000.0f);
        }
    for (uint64_t i = 0; i < (uint64_t)ROWS * out_n; i++)
        q[i] = (float)((int64_t)(test_rng() % 20001) - 10000) / 2500.0f;
    for (uint32_t r = 0; r < ROWS; r++) {
        row_pos[r] = pos[r];
        row_table[r] = r == ROWS - 1 ? n_long : 0;
        row_part[r] = r * ATT_MAX_SPLITS;
    }
    float *dq = NULL, *dpart = NULL;
    __half *dkv = NULL;
    uint8_t *dout = NULL;
    uint32_t *dpos = NULL, *dtab = NULL, *dparts = NULL, *dpages = NULL, *dcount = NULL;
    int ok = cuda_ok(cudaMalloc((void **)&dq, (uint64_t)ROWS * out_n * 4), "q") &&
             cuda_ok(cudaMalloc((void **)&dkv, kv_halves * 2), "kv") &&
             cuda_ok(cudaMalloc((void **)&dout, ROWS * out_row), "out") &&
             cuda_ok(cudaMalloc((void **)&dpart, part_f * 4), "part") &&
             cuda_ok(cudaMalloc((void **)&dcount, ROWS * n_head_kv * 4), "count") &&
             cuda_ok(cudaMalloc((void **)&dpos, sizeof row_pos), "pos") &&
             cuda_ok(cudaMalloc((void **)&dtab, sizeof row_table), "table") &&
             cuda_ok(cudaMalloc((void **)&dparts, sizeof row_part), "parts") &&
             cuda_ok(cudaMalloc((void **)&dpages, n_pages * 4), "pages") &&
             cuda_ok(cudaMemcpy(dq, q, (uint64_t)ROWS * out_n * 4, cudaMemcpyHostToDevice), "q up") &&
             cuda_ok(cudaMemcpy(dkv, kv, kv_halves * 2, cudaMemcpyHostToDevice), "kv up") &&
             cuda_ok(cudaMemcpy(dpos, row_pos, sizeof row_pos, cudaMemcpyHostToDevice), "pos up") &&
             cuda_ok(cudaMemcpy(dtab, row_table, sizeof row_table, cudaMemcpyHostToDevice), "table up") &&
             cuda_ok(cudaMemcpy(dparts, row_part, sizeof row_part, cudaMemcpyHostToDevice), "parts up") &&
             cuda_ok(cudaMemcpy(dpages, pages, n_pages * 4, cudaMemcpyHostToDevice), "pages up") &&
             cuda_ok(cudaMemset(dcount, 0, ROWS * n_head_kv * 4), "count zero");
    fwd_meta m = { NULL, dpos, dtab, dparts, dpages, NULL };
    float ms = 0;
    for (int v = 0; ok && v < 2; v++) { /* 0: merged by the last split (count), 1: by the merge kernel */
        smq_err err;
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        ok = cuda_ok(cudaMemset(dout, 0xFF, ROWS * out_row), "poison") &&
             cuda_ok(cudaMemset(dpart, 0xFF, part_f * 4), "poison part");
        cudaEventRecord(e0);
        if (ok && fwd_attention(dq, dkv, 0, ROWS, ATT_MAX_SPLITS, &d, &m, dpart, v ? NULL : dcount, dout, NULL, &err)) {
            test_fail(__FILE__, __LINE__, "fwd_attention: %s", err.msg);
            ok = 0;
        }
        cudaEventRecord(e1);
        ok = ok && cuda_ok(cudaDeviceSynchronize(), "the launch") &&
             cuda_ok(cudaMemcpy(out[v], dout, ROWS * out_row, cudaMemcpyDeviceToHost), "out down");
        if (v == 0)
            cudaEventElapsedTime(&ms, e0, e1);
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
    }
    uint32_t count_after[ROWS * 8] = { 0 }, left = 0;
    if (ok && cuda_ok(cudaMemcpy(count_after, dcount, ROWS * n_head_kv * 4, cudaMemcpyDeviceToHost), "count down"))
        for (uint32_t i = 0; i < ROWS * n_head_kv; i++)
            left += count_after[i] != 0;
    if (ok) {
        double num = 0, den = 0, worst = 0;
        int nan = 0;
        double *sc = (double *)malloc(LONG * sizeof *sc), ref[256];
        for (uint32_t r = 0; r < ROWS; r++) {
            uint32_t n_ctx = row_pos[r] + 1;
            double rn = 0, rd = 0;
            for (uint32_t h = 0; h < n_head; h++) {
                ref_head(q + ((uint64_t)r * n_head + h) * D, kv, pages + row_table[r], n_ctx, h / G, D, kv_dim, sc,
                         ref);
                for (uint32_t i = 0; i < D; i++) {
                    double got = q16_value(out[0] + r * out_row, out_n, h * D + i);
                    nan += isnan(got);
                    rn += (got - ref[i]) * (got - ref[i]);
                    rd += ref[i] * ref[i];
                }
            }
            num += rn;
            den += rd;
            worst = sqrt(rn / rd) > worst ? sqrt(rn / rd) : worst;
        }
        free(sc);
        double rel = sqrt(num / den);
        int same = !memcmp(out[0], out[1], ROWS * out_row);
        printf("  decode: %u heads of %u over %u KV heads, contexts 1 .. %u: rel L2 %.2e vs float64 (worst row "
               "%.2e), %.3f ms a launch; merge kernel: %s\n",
               n_head, D, n_head_kv, LONG, rel, worst, ms, same ? "the same bits" : "DIFFERENT");
        CHECK_MSG(nan == 0, "%d outputs NaN or not written", nan);
        CHECK_MSG(worst < 2e-3, "rel L2 %.3g in the worst row", worst);
        CHECK_MSG(same, "the last split's merge and the merge kernel differ");
        CHECK_MSG(left == 0, "%u counters left non-zero", left);
    }
    cudaFree(dq);
    cudaFree(dkv);
    cudaFree(dout);
    cudaFree(dpart);
    cudaFree(dcount);
    cudaFree(dpos);
    cudaFree(dtab);
    cudaFree(dparts);
    cudaFree(dpages);
    free(kv);
    free(q);
    free(out[0]);
    free(out[1]);
    free(pages);
}

static void test_decode_attention(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    check_decode_shape(16, 4, 128); /* SmolLM3-3B */
    check_decode_shape(4, 2, 64);   /* the test model */
    check_decode_shape(8, 8, 96);   /* one head per KV head, an odd number of dims a lane */
}

static void test_unsupported_shapes(void)
{
    fwd_dims d = { 0, 12, 4, 128, 128, 0, PAGE }; /* 3 heads per KV head: 64 / 3 rows is no tile */
    CHECK(!fwd_prompt_attention_supported(&d));
    smq_err err;
    CHECK_INT(fwd_prompt_attention(NULL, NULL, NULL, 1, &d, NULL, NULL, NULL, &err), -1);
    CHECK_CONTAINS(err.msg, "heads of 128 dims, 3 per KV head: not supported");
    d = (fwd_dims){ 0, 8, 4, 96, 96, 0, PAGE };
    CHECK(!fwd_prompt_attention_supported(&d));
}

int main(void)
{
    test_program = "attention_gpu";
    have_gpu = cuda_device_count() > 0;
    TEST_RUN(test_prompt_attention);
    TEST_RUN(test_decode_attention);
    TEST_RUN(test_unsupported_shapes);
    return test_done();
}
