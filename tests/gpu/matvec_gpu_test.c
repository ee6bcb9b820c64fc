/* matvec_gpu_test.c - the GPU's quantized matrix-vector products against the
 * CPU's dequantization in double precision, on SmolLM3-3B's real shapes and
 * fresh random blocks, the output poisoned first: the float32 kernels
 * (cuda_matvec) and the q16 ones the backend runs (cuda_q16_matmul, its
 * inputs quantized, and RMS-normed, by cuda_q16_quantize). Skipped without
 * a GPU. The prompt route (gemm.h: fp16 weights and activations, cuBLAS)
 * likewise, its conversions bit for bit. */
#include <cuda_runtime_api.h>
#include <math.h>

#include "dequant.h"
#include "gemm.h"
#include "matvec.h"
#include "quant.h"
#include "test.h"

/* Random blocks of type t with sane fp16 scales; the quants are raw random bits. */
static void random_blocks(qtype t, uint8_t *w, uint64_t n_blocks)
{
    size_t bs = qtype_table[t].block_bytes;
    for (uint64_t i = 0; i < n_blocks * bs; i++)
        w[i] = (uint8_t)test_rng();
    for (uint64_t b = 0; b < n_blocks; b++) {
        float d = 1e-4f + (float)(test_rng() % 1000) * 1e-6f;
        if (t == QTYPE_Q4_K) {
            block_q4_K *q = (block_q4_K *)w + b;
            q->d = f32_to_fp16(d);
            q->dmin = f32_to_fp16(d * 2);
        } else {
            ((block_q6_K *)w + b)->d = f32_to_fp16(d);
        }
    }
}

static void check_shape(qtype t, uint64_t rows, uint64_t k)
{
    uint64_t nb = rows * (k / QK_K), bytes = nb * qtype_table[t].block_bytes;
    uint8_t *w = malloc(bytes);
    float *x = malloc(k * sizeof *x), *y = malloc(rows * sizeof *y), *row = malloc(k * sizeof *row);
    random_blocks(t, w, nb);
    for (uint64_t i = 0; i < k; i++)
        x[i] = (float)((int64_t)(test_rng() % 20001) - 10000) / 10000.0f;
    void *dw = NULL;
    float *dx = NULL, *dy = NULL;
    smq_err err;
    int ok = cudaMalloc(&dw, bytes) == cudaSuccess && cudaMalloc((void **)&dx, k * sizeof *x) == cudaSuccess &&
             cudaMalloc((void **)&dy, rows * sizeof *y) == cudaSuccess &&
             cudaMemcpy(dw, w, bytes, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(dx, x, k * sizeof *x, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemset(dy, 0xFF, rows * sizeof *y) == cudaSuccess; /* NaN: unwritten rows show */
    CHECK_MSG(ok, "cuda setup failed: %s", cudaGetErrorString(cudaGetLastError()));
    if (ok) {
        CHECK_MSG(cuda_matvec(t, dw, rows, k, dx, dy, NULL, &err) == 0, "%s", err.msg);
        CHECK(cudaDeviceSynchronize() == cudaSuccess);
        CHECK(cudaMemcpy(y, dy, rows * sizeof *y, cudaMemcpyDeviceToHost) == cudaSuccess);
        double num = 0, den = 0;
        int nan = 0;
        for (uint64_t r = 0; r < rows; r++) {
            quant_dequant_row(t, w + r * (k / QK_K) * qtype_table[t].block_bytes, row, k);
            double ref = 0;
            for (uint64_t i = 0; i < k; i++)
                ref += (double)row[i] * x[i];
            nan += isnan(y[r]);
            num += (y[r] - ref) * (y[r] - ref);
            den += ref * ref;
        }
        printf("  %s %llu x %llu: rel L2 %.2e vs the CPU in float64\n", qtype_name(t), (unsigned long long)rows,
               (unsigned long long)k, sqrt(num / den));
        CHECK_MSG(nan == 0, "%d rows not written", nan);
        CHECK_MSG(sqrt(num / den) < 1e-5, "%s %llux%llu: rel L2 %.3g", qtype_name(t), (unsigned long long)rows,
                  (unsigned long long)k, sqrt(num / den));
    }
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dy);
    free(w);
    free(x);
    free(y);
    free(row);
}

/* rel L2 of y[t][r] (nx rows of `rows` outputs) against W x[t] in float64,
 * W's rows dequantized on the host; *nan counts outputs that are NaN. */
static double rel_vs_float64(qtype t, const uint8_t *w, uint64_t rows, uint64_t k, const float *x, int nx,
                             const float *y, int *nan)
{
    float *row = malloc(k * sizeof *row);
    double num = 0, den = 0;
    *nan = 0;
    for (uint64_t r = 0; r < rows; r++) {
        quant_dequant_row(t, w + r * (k / QK_K) * qtype_table[t].block_bytes, row, k);
        for (int t2 = 0; t2 < nx; t2++) {
            double ref = 0;
            for (uint64_t i = 0; i < k; i++)
                ref += (double)row[i] * x[t2 * k + i];
            double got = y[t2 * rows + r];
            *nan += isnan(got);
            num += (got - ref) * (got - ref);
            den += ref * ref;
        }
    }
    free(row);
    return sqrt(num / den);
}

/* The q16 path: x (and, with norm, rmsnorm(x) * w) quantized on the device,
 * three activation rows at once (the last accumulated onto a known y), W
 * in the padded device layout; each row against float64 on the host. */
static void check_q16_shape(qtype t, uint64_t rows, uint64_t k, int norm)
{
    enum { NX = 3 };
    uint64_t nb = rows * (k / QK_K), bytes = nb * qtype_table[t].block_bytes;
    uint64_t dev_bytes = cuda_weight_bytes(t, rows, k), arow = cuda_q16_row_bytes(k);
    uint8_t *w = malloc(bytes);
    float *x = malloc(NX * k * sizeof *x), *xn = malloc(NX * k * sizeof *xn), *nw = malloc(k * sizeof *nw);
    float *y = malloc(NX * rows * sizeof *y), *row = malloc(k * sizeof *row);
    random_blocks(t, w, nb);
    for (uint64_t i = 0; i < NX * k; i++)
        x[i] = (float)((int64_t)(test_rng() % 20001) - 10000) / 10000.0f * (i % 7 == 0 ? 8.f : 1.f);
    for (uint64_t i = 0; i < k; i++)
        nw[i] = 0.5f + (float)(test_rng() % 1000) / 1000.0f;
    for (int t2 = 0; t2 < NX; t2++) { /* the inputs the product sees, in double as far as they go */
        double ss = 0;
        for (uint64_t i = 0; i < k; i++)
            ss += (double)x[t2 * k + i] * x[t2 * k + i];
        double sc = 1.0 / sqrt(ss / k + 1e-6);
        for (uint64_t i = 0; i < k; i++)
            xn[t2 * k + i] = norm ? (float)(x[t2 * k + i] * sc * nw[i]) : x[t2 * k + i];
    }
    void *dw = NULL;
    float *dx = NULL, *dy = NULL, *dn = NULL;
    uint8_t *da = NULL;
    smq_err err;
    int ok = cudaMalloc(&dw, dev_bytes) == cudaSuccess && cudaMalloc((void **)&dx, NX * k * 4) == cudaSuccess &&
             cudaMalloc((void **)&dn, k * 4) == cudaSuccess && cudaMalloc((void **)&da, NX * arow) == cudaSuccess &&
             cudaMalloc((void **)&dy, NX * rows * 4) == cudaSuccess &&
             cudaMemcpy(dx, x, NX * k * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(dn, nw, k * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemset(da, 0xFF, NX * arow) == cudaSuccess &&
             cudaMemset(dy, 0xFF, (NX - 1) * rows * 4) == cudaSuccess && /* NaN: unwritten rows show */
             cudaMemset(dy + (NX - 1) * rows, 0, rows * 4) == cudaSuccess;
    CHECK_MSG(ok, "cuda setup failed: %s", cudaGetErrorString(cudaGetLastError()));
    if (ok) {
        CHECK_MSG(cuda_weight_upload(t, w, rows, k, dw, &err) == 0, "%s", err.msg);
        CHECK_MSG(cuda_q16_quantize(dx, NULL, norm ? dn : NULL, 1e-6f, k, NX, da, NULL, &err) == 0, "%s", err.msg);
        /* rows 0 and 1 in one call; row 2 alone, accumulated onto 0 */
        CHECK_MSG(cuda_q16_matmul(t, dw, rows, k, da, NX - 1, dy, rows, 0, NULL, &err) == 0, "%s", err.msg);
        CHECK_MSG(cuda_q16_matmul(t, dw, rows, k, da + (NX - 1) * arow, 1, dy + (NX - 1) * rows, rows, 1, NULL, &err) ==
                      0,
                  "%s", err.msg);
        CHECK(cudaDeviceSynchronize() == cudaSuccess);
        CHECK(cudaMemcpy(y, dy, NX * rows * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
        int nan;
        double rel = rel_vs_float64(t, w, rows, k, xn, NX, y, &nan);
        printf("  q16%s %s %llu x %llu: rel L2 %.2e vs the CPU in float64\n", norm ? " normed" : "", qtype_name(t),
               (unsigned long long)rows, (unsigned long long)k, rel);
        CHECK_MSG(nan == 0, "%d outputs not written", nan);
        CHECK_MSG(rel < 1e-4, "q16 %s %llux%llu: rel L2 %.3g", qtype_name(t), (unsigned long long)rows,
                  (unsigned long long)k, rel);
    }
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dn);
    cudaFree(da);
    cudaFree(dy);
    free(w);
    free(x);
    free(xn);
    free(nw);
    free(y);
    free(row);
}

/* The prompt route: NX rows of x quantized to q16 and converted to fp16,
 * times W as a stack of two matrices (rows split at `split`), dequantized
 * through a scratch of about a quarter of W (several passes); the last row
 * alone, accumulated onto zeros. Each output against float64 on the host,
 * and the two conversions against the host's values rounded to fp16. */
static void check_gemm_shape(cuda_gemm *g, qtype t, uint64_t rows, uint64_t k, uint64_t split)
{
    enum { NX = 5 };
    uint64_t nb = rows * (k / QK_K), bytes = nb * qtype_table[t].block_bytes;
    uint64_t dev_row = cuda_weight_bytes(t, 1, k), arow = cuda_q16_row_bytes(k);
    uint64_t scratch = k * (rows / 4 + 3);
    uint8_t *w = malloc(bytes);
    float *x = malloc(NX * k * sizeof *x), *y = malloc(NX * rows * sizeof *y), *row = malloc(k * sizeof *row);
    uint16_t *hx = malloc(NX * k * sizeof *hx), *hw = malloc(split * k * sizeof *hw);
    random_blocks(t, w, nb);
    for (uint64_t i = 0; i < NX * k; i++)
        x[i] = (float)((int64_t)(test_rng() % 20001) - 10000) / 10000.0f * (i % 7 == 0 ? 8.f : 1.f);
    uint8_t *dw = NULL, *da = NULL;
    float *dx = NULL, *dy = NULL;
    uint16_t *dh = NULL, *ds = NULL;
    smq_err err;
    int ok =
        cudaMalloc((void **)&dw, rows * dev_row) == cudaSuccess &&
        cudaMalloc((void **)&dx, NX * k * 4) == cudaSuccess && cudaMalloc((void **)&da, NX * arow) == cudaSuccess &&
        cudaMalloc((void **)&dh, NX * k * 2) == cudaSuccess && cudaMalloc((void **)&ds, scratch * 2) == cudaSuccess &&
        cudaMalloc((void **)&dy, NX * rows * 4) == cudaSuccess &&
        cudaMemcpy(dx, x, NX * k * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
        cudaMemset(dh, 0xFF, NX * k * 2) == cudaSuccess && cudaMemset(ds, 0xFF, scratch * 2) == cudaSuccess &&
        cudaMemset(dy, 0xFF, (NX - 1) * rows * 4) == cudaSuccess && /* NaN: unwritten outputs show */
        cudaMemset(dy + (NX - 1) * rows, 0, rows * 4) == cudaSuccess;
    CHECK_MSG(ok, "cuda setup failed: %s", cudaGetErrorString(cudaGetLastError()));
    if (ok) {
        dev_mat m0 = { t, k, split, dev_row, dw }, m1 = { t, k, rows - split, dev_row, dw + split * dev_row };
        const dev_mat *ws[2] = { &m0, &m1 };
        CHECK_MSG(cuda_weight_upload(t, w, rows, k, dw, &err) == 0, "%s", err.msg);
        CHECK_MSG(cuda_q16_quantize(dx, NULL, NULL, 1e-6f, k, NX, da, NULL, &err) == 0, "%s", err.msg);
        CHECK_MSG(cuda_q16_to_f16(da, k, NX, dh, NULL, &err) == 0, "%s", err.msg);
        CHECK_MSG(cuda_gemm_run(g, ws, 2, dh, NX - 1, dy, rows, 0, ds, scratch, &err) == 0, "%s", err.msg);
        CHECK_MSG(cuda_gemm_run(g, ws, 2, dh + (NX - 1) * k, 1, dy + (NX - 1) * rows, rows, 1, ds, scratch, &err) == 0,
                  "%s", err.msg);
        /* the first matrix's fp16 weights, for the check below */
        uint16_t *dwh = NULL;
        CHECK(cudaMalloc((void **)&dwh, split * k * 2) == cudaSuccess);
        CHECK_MSG(cuda_dequant_f16(&m0, 0, split, dwh, NULL, &err) == 0, "%s", err.msg);
        CHECK(cudaDeviceSynchronize() == cudaSuccess);
        CHECK(cudaMemcpy(y, dy, NX * rows * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
        CHECK(cudaMemcpy(hx, dh, NX * k * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
        CHECK(cudaMemcpy(hw, dwh, split * k * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
        cudaFree(dwh);
        /* the activations in fp16 against x: the q16 and fp16 roundings */
        double xn = 0, xd = 0;
        for (uint64_t i = 0; i < NX * k; i++) {
            double d = (double)fp16_to_f32(hx[i]) - x[i];
            xn += d * d;
            xd += (double)x[i] * x[i];
        }
        /* the fp16 weights: the host's values, rounded */
        uint64_t wrong = 0;
        for (uint64_t r = 0; r < split; r++) {
            quant_dequant_row(t, w + r * (k / QK_K) * qtype_table[t].block_bytes, row, k);
            for (uint64_t i = 0; i < k; i++)
                wrong += hw[r * k + i] != f32_to_fp16(row[i]);
        }
        int nan;
        double rel = rel_vs_float64(t, w, rows, k, x, NX, y, &nan), xrel = sqrt(xn / xd);
        printf("  gemm %s %llu x %llu (stack %llu + %llu): rel L2 %.2e vs the CPU in float64; fp16 inputs %.2e; "
               "%llu fp16 weights differ from the host's\n",
               qtype_name(t), (unsigned long long)rows, (unsigned long long)k, (unsigned long long)split,
               (unsigned long long)(rows - split), rel, xrel, (unsigned long long)wrong);
        CHECK_MSG(nan == 0, "%d outputs not written", nan);
        CHECK_MSG(wrong == 0, "%llu fp16 weights differ from the host's", (unsigned long long)wrong);
        CHECK_MSG(xrel < 1e-3, "fp16 activations: rel L2 %.3g", xrel);
        CHECK_MSG(rel < 2e-3, "gemm %s %llux%llu: rel L2 %.3g", qtype_name(t), (unsigned long long)rows,
                  (unsigned long long)k, rel);
    }
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(da);
    cudaFree(dh);
    cudaFree(ds);
    cudaFree(dy);
    free(w);
    free(x);
    free(y);
    free(row);
    free(hx);
    free(hw);
}

static int have_gpu;

static void test_gemm_shapes(void)
{
    smq_err err;
    cuda_gemm *g = cuda_gemm_new(NULL, &err);
    if (!have_gpu) {
        /* cuBLAS loads (or is missing); without a device its handle fails, cleanly */
        CHECK(g == NULL);
        printf("  without a device: %s\n", err.msg);
        CHECK_CONTAINS(err.msg, "cuda gemm: ");
        cuda_gemm_free(&g);
        test_skip("no CUDA device");
        return;
    }
    CHECK_MSG(g != NULL, "%s", err.msg);
    if (!g)
        return;
    printf("  cuBLAS: %s\n", cuda_gemm_library(g));
    check_gemm_shape(g, QTYPE_Q4_K, 3072, 2048, 2048);  /* attn_q, attn_k, attn_v stacked */
    check_gemm_shape(g, QTYPE_Q4_K, 2048, 11008, 1000); /* ffn_down */
    check_gemm_shape(g, QTYPE_Q6_K, 2048, 11008, 1500); /* ffn_down in Q6_K */
    check_gemm_shape(g, QTYPE_Q6_K, 515, 256, 3);       /* odd rows and a pass of rows not a multiple of 8 */
    /* bad arguments */
    dev_mat m = { QTYPE_Q4_K, 256, 4, 144, NULL }, n = { QTYPE_Q4_K, 512, 4, 288, NULL };
    const dev_mat *ws[2] = { &m, &n };
    CHECK_INT(cuda_gemm_run(g, ws, 2, NULL, 1, NULL, 8, 0, NULL, 1024, &err), -1);
    CHECK_CONTAINS(err.msg, "stacked matrices of rows of 256 and 512 elements");
    CHECK_INT(cuda_gemm_run(g, ws, 1, NULL, 1, NULL, 8, 0, NULL, 100, &err), -1);
    CHECK_CONTAINS(err.msg, "100 halves of scratch hold no row of 256");
    CHECK_INT(cuda_dequant_f16(&m, 2, 3, NULL, NULL, &err), -1);
    CHECK_CONTAINS(err.msg, "rows 2..5 of a matrix of 4");
    cuda_gemm_free(&g);
    CHECK(g == NULL);
}

/* Without the library: a clear error, no crash. */
static void test_gemm_missing_library(void)
{
    char *kept = test_env_swap("SMQ_CUBLAS", "/nonexistent/libcublas.so");
    smq_err err;
    cuda_gemm *g = cuda_gemm_new(NULL, &err);
    test_env_restore("SMQ_CUBLAS", kept);
    CHECK(g == NULL);
    CHECK_CONTAINS(err.msg, "cannot load SMQ_CUBLAS=/nonexistent/libcublas.so");
    cuda_gemm_free(&g);
}

static void test_q16_shapes(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    check_q16_shape(QTYPE_Q4_K, 2048, 2048, 1);   /* attn_q after the norm */
    check_q16_shape(QTYPE_Q4_K, 512, 2048, 0);    /* attn_k */
    check_q16_shape(QTYPE_Q4_K, 11008, 2048, 1);  /* ffn_gate, ffn_up */
    check_q16_shape(QTYPE_Q4_K, 2048, 11008, 0);  /* ffn_down */
    check_q16_shape(QTYPE_Q4_K, 4101, 768, 0);    /* odd rows: the last warp's half pair */
    check_q16_shape(QTYPE_Q6_K, 512, 2048, 0);    /* attn_v */
    check_q16_shape(QTYPE_Q6_K, 2048, 11008, 0);  /* ffn_down */
    check_q16_shape(QTYPE_Q6_K, 128256, 2048, 1); /* the tied output head */
    check_q16_shape(QTYPE_Q6_K, 4099, 256, 0);
    check_q16_shape(QTYPE_Q4_K, 1001, 4096, 0);  /* 2 warps share a row, odd rows */
    check_q16_shape(QTYPE_Q6_K, 1003, 11264, 0); /* 4 warps share a row, 44 blocks, odd rows */
}

static void test_q4k_shapes(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    check_shape(QTYPE_Q4_K, 2048, 2048);  /* attn_q, attn_output */
    check_shape(QTYPE_Q4_K, 512, 2048);   /* attn_k */
    check_shape(QTYPE_Q4_K, 11008, 2048); /* ffn_gate, ffn_up */
    check_shape(QTYPE_Q4_K, 2048, 11008); /* ffn_down */
    check_shape(QTYPE_Q4_K, 4100, 768);   /* the tall kernel's last, partial group of rows */
}

static void test_q6k_shapes(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    check_shape(QTYPE_Q6_K, 512, 2048);    /* attn_v */
    check_shape(QTYPE_Q6_K, 2048, 11008);  /* ffn_down */
    check_shape(QTYPE_Q6_K, 128256, 2048); /* the tied output head */
    check_shape(QTYPE_Q6_K, 4099, 256);    /* the tall kernel's last, partial group of rows */
}

/* The residual product with its norm fused (cuda_q16_matmul_norm) against
 * the product and a separate cuda_q16_quantize: the same bits in x and in
 * the q16 rows, three activation rows at once, twice (the counters must be
 * back at zero), on SmolLM3-3B's attn_output (Q4_K) and ffn_down (Q6_K). */
static void check_matmul_norm(qtype t, uint64_t rows, uint64_t k)
{
    enum { NX = 3 };
    uint64_t nb = rows * (k / QK_K), in_row = cuda_q16_row_bytes(k), out_row = cuda_q16_row_bytes(rows);
    uint8_t *w = malloc(nb * qtype_table[t].block_bytes);
    float *x0 = malloc(NX * rows * 4), *act = malloc(NX * k * 4), *nw = malloc(rows * 4);
    float *ya = malloc(NX * rows * 4), *yb = malloc(NX * rows * 4);
    uint8_t *qa = malloc(NX * out_row), *qb = malloc(NX * out_row);
    random_blocks(t, w, nb);
    for (uint64_t i = 0; i < NX * rows; i++)
        x0[i] = (float)((int64_t)(test_rng() % 20001) - 10000) / 1000.0f;
    for (uint64_t i = 0; i < NX * k; i++)
        act[i] = (float)((int64_t)(test_rng() % 20001) - 10000) / 10000.0f;
    for (uint64_t i = 0; i < rows; i++)
        nw[i] = 0.5f + (float)(test_rng() % 1000) / 1000.0f;
    void *dw = NULL;
    float *dact = NULL, *dn = NULL, *dya = NULL, *dyb = NULL;
    uint8_t *da = NULL, *dqa = NULL, *dqb = NULL;
    uint32_t *dc = NULL, counts[NX];
    smq_err err;
    int ok =
        cudaMalloc(&dw, cuda_weight_bytes(t, rows, k)) == cudaSuccess &&
        cudaMalloc((void **)&dact, NX * k * 4) == cudaSuccess && cudaMalloc((void **)&dn, rows * 4) == cudaSuccess &&
        cudaMalloc((void **)&da, NX * in_row) == cudaSuccess &&
        cudaMalloc((void **)&dya, NX * rows * 4) == cudaSuccess &&
        cudaMalloc((void **)&dyb, NX * rows * 4) == cudaSuccess &&
        cudaMalloc((void **)&dqa, NX * out_row) == cudaSuccess &&
        cudaMalloc((void **)&dqb, NX * out_row) == cudaSuccess &&
        cudaMalloc((void **)&dc, sizeof counts) == cudaSuccess && cudaMemset(dc, 0, sizeof counts) == cudaSuccess &&
        cudaMemcpy(dact, act, NX * k * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
        cudaMemcpy(dn, nw, rows * 4, cudaMemcpyHostToDevice) == cudaSuccess;
    CHECK_MSG(ok, "cuda setup failed: %s", cudaGetErrorString(cudaGetLastError()));
    if (ok) {
        CHECK_MSG(cuda_weight_upload(t, w, rows, k, dw, &err) == 0, "%s", err.msg);
        CHECK_MSG(cuda_q16_quantize(dact, NULL, NULL, 1e-6f, k, NX, da, NULL, &err) == 0, "%s", err.msg);
        for (int run = 0; run < 2 && !test_cur_failed; run++) {
            CHECK(cudaMemcpy(dya, x0, NX * rows * 4, cudaMemcpyHostToDevice) == cudaSuccess);
            CHECK(cudaMemcpy(dyb, x0, NX * rows * 4, cudaMemcpyHostToDevice) == cudaSuccess);
            CHECK(cudaMemset(dqa, 0xFF, NX * out_row) == cudaSuccess &&
                  cudaMemset(dqb, 0xFF, NX * out_row) == cudaSuccess);
            CHECK_MSG(cuda_q16_matmul(t, dw, rows, k, da, NX, dya, rows, 1, NULL, &err) == 0 &&
                          cuda_q16_quantize(dya, NULL, dn, 1e-6f, rows, NX, dqa, NULL, &err) == 0,
                      "%s", err.msg);
            CHECK_MSG(cuda_q16_matmul_norm(t, dw, rows, k, da, NX, dyb, 1, dn, 1e-6f, dqb, dc, NULL, &err) == 0, "%s",
                      err.msg);
            CHECK(cudaDeviceSynchronize() == cudaSuccess);
            CHECK(cudaMemcpy(ya, dya, NX * rows * 4, cudaMemcpyDeviceToHost) == cudaSuccess &&
                  cudaMemcpy(yb, dyb, NX * rows * 4, cudaMemcpyDeviceToHost) == cudaSuccess &&
                  cudaMemcpy(qa, dqa, NX * out_row, cudaMemcpyDeviceToHost) == cudaSuccess &&
                  cudaMemcpy(qb, dqb, NX * out_row, cudaMemcpyDeviceToHost) == cudaSuccess &&
                  cudaMemcpy(counts, dc, sizeof counts, cudaMemcpyDeviceToHost) == cudaSuccess);
            CHECK_MSG(!memcmp(ya, yb, NX * rows * 4), "%s run %d: the fused product's outputs differ", qtype_name(t),
                      run);
            CHECK_MSG(!memcmp(qa, qb, NX * out_row), "%s run %d: the fused norm's q16 rows differ", qtype_name(t), run);
            CHECK_MSG(counts[0] == 0 && counts[1] == 0 && counts[2] == 0, "counters left at %u %u %u", counts[0],
                      counts[1], counts[2]);
        }
        if (!test_cur_failed)
            printf("  fused norm %s %llu x %llu: bit-identical to the product and a separate norm, twice\n",
                   qtype_name(t), (unsigned long long)rows, (unsigned long long)k);
    }
    cudaFree(dw);
    cudaFree(dact);
    cudaFree(dn);
    cudaFree(da);
    cudaFree(dya);
    cudaFree(dyb);
    cudaFree(dqa);
    cudaFree(dqb);
    cudaFree(dc);
    free(w);
    free(x0);
    free(act);
    free(nw);
    free(ya);
    free(yb);
    free(qa);
    free(qb);
}

static void test_matmul_norm(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    check_matmul_norm(QTYPE_Q4_K, 2048, 2048);
    check_matmul_norm(QTYPE_Q6_K, 2048, 11008);
    smq_err err;
    uint32_t c;
    CHECK(cuda_q16_matmul_norm(QTYPE_Q4_K, &c, 2048, 2048, (const uint8_t *)&c, 1, (float *)&c, 1, NULL, 1e-6f,
                               (uint8_t *)&c, &c, NULL, &err) == -1);
    CHECK_CONTAINS(err.msg, "needs norm weights");
}

/* Activations past fp16's range become +-65504 on their way to cuBLAS, not
 * inf (which would turn a whole product into NaN); in-range values keep
 * their rounding. */
static void test_f16_saturates(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    enum { K = 256 };
    float x[K];
    for (int i = 0; i < K; i++)
        x[i] = i == 3 ? 1e6f : i == 40 ? -3e5f : i == 41 ? 70000.f : (float)(i % 7) - 3;
    float *dx = NULL;
    uint8_t *da = NULL;
    uint16_t *dh = NULL, h[K];
    smq_err err;
    int ok = cudaMalloc((void **)&dx, sizeof x) == cudaSuccess &&
             cudaMalloc((void **)&da, cuda_q16_row_bytes(K)) == cudaSuccess &&
             cudaMalloc((void **)&dh, sizeof h) == cudaSuccess &&
             cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice) == cudaSuccess;
    CHECK_MSG(ok, "cuda setup failed");
    if (ok) {
        CHECK_MSG(cuda_q16_quantize(dx, NULL, NULL, 1e-6f, K, 1, da, NULL, &err) == 0, "%s", err.msg);
        CHECK_MSG(cuda_q16_to_f16(da, K, 1, dh, NULL, &err) == 0, "%s", err.msg);
        CHECK(cudaMemcpy(h, dh, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
        CHECK_MSG(fp16_to_f32(h[3]) == 65504.f && fp16_to_f32(h[40]) == -65504.f && fp16_to_f32(h[41]) == 65504.f,
                  "saturated: %g %g %g", fp16_to_f32(h[3]), fp16_to_f32(h[40]), fp16_to_f32(h[41]));
        int finite = 1;
        for (int i = 0; i < K; i++)
            finite &= isfinite(fp16_to_f32(h[i]));
        CHECK_MSG(finite, "an activation became inf or NaN");
    }
    cudaFree(dx);
    cudaFree(da);
    cudaFree(dh);
}

static void test_bad_arguments(void)
{
    smq_err err;
    float dummy = 0;
    CHECK_INT(cuda_matvec(QTYPE_Q4_K, &dummy, 4, 100, &dummy, &dummy, NULL, &err), -1);
    CHECK_CONTAINS(err.msg, "rows must be 256-element blocks");
    CHECK_INT(cuda_matvec(QTYPE_Q8_0, &dummy, 4, 256, &dummy, &dummy, NULL, &err), -1);
    CHECK_CONTAINS(err.msg, "type q8_0 has no GPU matrix-vector kernel");
}

int main(void)
{
    test_program = "matvec_gpu";
    have_gpu = cuda_device_count() > 0;
    TEST_RUN(test_q4k_shapes);
    TEST_RUN(test_q6k_shapes);
    TEST_RUN(test_q16_shapes);
    TEST_RUN(test_gemm_shapes);
    TEST_RUN(test_gemm_missing_library);
    TEST_RUN(test_matmul_norm);
    TEST_RUN(test_f16_saturates);
    TEST_RUN(test_bad_arguments);
    return test_done();
}
