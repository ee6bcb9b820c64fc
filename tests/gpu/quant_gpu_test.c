/* quant_gpu_test.c - the CUDA dequantizer against ggml's goldens and against
 * the host's quant_dequant_row, bit for bit. Skips without a CUDA device. */
#include "dequant.h"
#include "quant.h"
#include "test.h"

#include <cuda_runtime_api.h>

#define GOLDEN_ROWS 8
#define GOLDEN_COLS 512
#define GOLDEN_N    (GOLDEN_ROWS * GOLDEN_COLS)

static int have_gpu;

static int cuda_ok(cudaError_t e, const char *call, const char *file, int line)
{
    if (e == cudaSuccess)
        return 1;
    test_fail(file, line, "%s: %s", call, cudaGetErrorString(e));
    return 0;
}

#define CUDA_OK(call) cuda_ok((call), #call, __FILE__, __LINE__)

/* Dequantizes rows x cols elements of type t from host memory src
 * (src_bytes) on the device into dst, with the device output poisoned with
 * NaN first so that an element the kernel skips cannot pass. 0 on success. */
static int device_dequant(qtype t, const void *src, size_t src_bytes, float *dst, uint64_t rows, uint64_t cols)
{
    size_t dst_bytes = (size_t)(rows * cols) * sizeof(float);
    void *d_src = NULL;
    float *d_dst = NULL;
    int ok = CUDA_OK(cudaMalloc(&d_src, src_bytes)) && CUDA_OK(cudaMalloc((void **)&d_dst, dst_bytes)) &&
             CUDA_OK(cudaMemcpy(d_src, src, src_bytes, cudaMemcpyHostToDevice)) &&
             CUDA_OK(cudaMemset(d_dst, 0xFF, dst_bytes));
    if (ok) {
        smq_err err = { { 0 } };
        int rc = cuda_dequant_rows(t, d_src, d_dst, rows, cols, NULL, &err);
        CHECK_MSG(rc == 0, "cuda_dequant_rows(%s): %s", qtype_name(t), err.msg);
        ok = rc == 0 && CUDA_OK(cudaDeviceSynchronize()) &&
             CUDA_OK(cudaMemcpy(dst, d_dst, dst_bytes, cudaMemcpyDeviceToHost));
    }
    cudaFree(d_src);
    cudaFree(d_dst);
    return ok ? 0 : -1;
}

/* Reports the first differing element of two float arrays, compared as bits. */
static void check_same_bits(const char *what, const float *got, const float *want, size_t n)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ == 0)
            first = i;
    }
    CHECK_MSG(bad == 0, "%s: %zu of %zu values differ, first [%zu]: %a, expected %a", what, bad, n, first,
              bad ? (double)got[first] : 0.0, bad ? (double)want[first] : 0.0);
}

static void check_golden(const char *name, qtype t)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    uint64_t row_bytes = 0;
    CHECK(qtype_row_bytes(t, GOLDEN_COLS, &row_bytes) == 0);
    char path[512];
    size_t raw_len = 0, want_len = 0;
    snprintf(path, sizeof path, "%s/quant/%s.raw.bin", test_data_dir(), name);
    void *raw = test_read_file(path, &raw_len);
    snprintf(path, sizeof path, "%s/quant/%s.dequant.f32.bin", test_data_dir(), name);
    float *want = test_read_file(path, &want_len);
    float *got = malloc(GOLDEN_N * sizeof(float));
    if (raw && want && got) {
        CHECK_INT(raw_len, row_bytes * GOLDEN_ROWS);
        CHECK_INT(want_len, GOLDEN_N * sizeof(float));
        if (raw_len == row_bytes * GOLDEN_ROWS && want_len == GOLDEN_N * sizeof(float) &&
            device_dequant(t, raw, raw_len, got, GOLDEN_ROWS, GOLDEN_COLS) == 0)
            check_same_bits(name, got, want, GOLDEN_N);
    }
    free(raw);
    free(want);
    free(got);
}

static void test_golden_q4_K(void)
{
    check_golden("q4_K", QTYPE_Q4_K);
}

static void test_golden_q5_K(void)
{
    check_golden("q5_K", QTYPE_Q5_K);
}

static void test_golden_q6_K(void)
{
    check_golden("q6_K", QTYPE_Q6_K);
}

static void test_golden_q8_0(void)
{
    check_golden("q8_0", QTYPE_Q8_0);
}

/* A random finite fp16 (exponent field below 31), for block scales. */
static uint16_t random_finite_fp16(void)
{
    uint16_t h = (uint16_t)test_rng();
    return (h & 0x7C00) == 0x7C00 ? (uint16_t)(h & ~0x4000) : h;
}

/* n_blocks random blocks of t with finite scales: device equals host. */
static void check_random_blocks(qtype t, uint64_t n_blocks)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    size_t block_bytes = qtype_table[t].block_bytes;
    uint64_t n = n_blocks * qtype_table[t].block_elems;
    uint8_t *raw = malloc(n_blocks * block_bytes);
    float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    if (!raw || !want || !got) {
        CHECK(!"out of memory");
    } else {
        for (size_t i = 0; i < n_blocks * block_bytes; i++)
            raw[i] = (uint8_t)test_rng();
        /* Finite scales: a NaN result's payload differs between the GPU
         * (canonical NaN) and x86 (the operand's), which is not a bug. */
        for (uint64_t b = 0; b < n_blocks; b++) {
            uint8_t *blk = raw + b * block_bytes;
            if (t == QTYPE_Q4_K) {
                ((block_q4_K *)blk)->d = random_finite_fp16();
                ((block_q4_K *)blk)->dmin = random_finite_fp16();
            } else if (t == QTYPE_Q5_K) {
                ((block_q5_K *)blk)->d = random_finite_fp16();
                ((block_q5_K *)blk)->dmin = random_finite_fp16();
            } else if (t == QTYPE_Q6_K) {
                ((block_q6_K *)blk)->d = random_finite_fp16();
            } else if (t == QTYPE_Q8_0) {
                ((block_q8_0 *)blk)->d = random_finite_fp16();
            }
        }
        CHECK_INT(quant_dequant_row(t, raw, want, n), 0);
        /* as 4 rows, so that rows of several blocks are exercised */
        if (device_dequant(t, raw, n_blocks * block_bytes, got, 4, n / 4) == 0)
            check_same_bits(qtype_name(t), got, want, n);
    }
    free(raw);
    free(want);
    free(got);
}

static void test_random_q4_K(void)
{
    check_random_blocks(QTYPE_Q4_K, 4096);
}

static void test_random_q6_K(void)
{
    check_random_blocks(QTYPE_Q6_K, 4096);
}

static void test_random_q5_K(void)
{
    check_random_blocks(QTYPE_Q5_K, 1024);
}

static void test_random_q8_0(void)
{
    check_random_blocks(QTYPE_Q8_0, 4096);
}

/* Every fp16 and bf16 bit pattern, NaN payloads included. */
static void test_all_f16_bf16(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    static uint16_t bits[65536];
    static float want[65536], got[65536];
    for (uint32_t i = 0; i < 65536; i++)
        bits[i] = (uint16_t)i;
    static const qtype types[] = { QTYPE_F16, QTYPE_BF16 };
    for (int k = 0; k < 2; k++) {
        CHECK_INT(quant_dequant_row(types[k], bits, want, 65536), 0);
        if (device_dequant(types[k], bits, sizeof bits, got, 256, 256) == 0)
            check_same_bits(qtype_name(types[k]), got, want, 65536);
    }
}

/* Argument checks come before any CUDA call, so they run without a device. */
static void test_bad_arguments(void)
{
    smq_err err = { { 0 } };
    float dummy = 0;
    CHECK_INT(cuda_dequant_rows(QTYPE_IQ2_XXS, &dummy, &dummy, 1, 256, NULL, &err), -1);
    CHECK_CONTAINS(err.msg, "type iq2_xxs: no GPU dequantizer");
    CHECK_INT(cuda_dequant_rows(QTYPE_F32, &dummy, &dummy, 1, 256, NULL, &err), -1);
    CHECK_INT(cuda_dequant_rows(QTYPE_Q4_K, &dummy, &dummy, 2, 100, NULL, &err), -1);
    CHECK_CONTAINS(err.msg, "100 elements");
    CHECK_INT(cuda_dequant_rows(QTYPE_Q8_0, &dummy, &dummy, 1, 48, NULL, &err), -1);
    CHECK_INT(cuda_dequant_rows(QTYPE_Q4_K, &dummy, &dummy, UINT64_MAX / 256, 512, NULL, &err), -1);
    CHECK_CONTAINS(err.msg, "overflow");
    CHECK_INT(cuda_dequant_rows(QTYPE_Q4_K, NULL, NULL, 1, 256, NULL, &err), -1);
    CHECK_CONTAINS(err.msg, "NULL");
    CHECK_INT(cuda_dequant_rows(QTYPE_Q4_K, NULL, NULL, 0, 256, NULL, &err), 0); /* nothing to do */
}

int main(void)
{
    test_program = "quant_gpu";
    have_gpu = cuda_device_count() > 0;
    TEST_RUN(test_golden_q4_K);
    TEST_RUN(test_golden_q5_K);
    TEST_RUN(test_golden_q6_K);
    TEST_RUN(test_golden_q8_0);
    TEST_RUN(test_random_q4_K);
    TEST_RUN(test_random_q6_K);
    TEST_RUN(test_random_q5_K);
    TEST_RUN(test_random_q8_0);
    TEST_RUN(test_all_f16_bf16);
    TEST_RUN(test_bad_arguments);
    return test_done();
}
