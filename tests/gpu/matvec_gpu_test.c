/* matvec_gpu_test.c - the GPU's quantized matrix-vector products against the
 * CPU's dequantization in double precision, on SmolLM3-3B's real shapes and
 * fresh random blocks, the output poisoned first. Skipped without a GPU. */
#include <cuda_runtime_api.h>
#include <math.h>

#include "dequant.h"
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

static int have_gpu;

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
    TEST_RUN(test_bad_arguments);
    return test_done();
}
