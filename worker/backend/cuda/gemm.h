/* gemm.h - the products of many activation rows at once (prompts), on the
 * tensor cores: weight rows dequantized to fp16 into a scratch buffer, then
 * multiplied by cuBLAS (cublasGemmEx, fp16 inputs, fp32 accumulation and
 * output). Callable from C; fp16 buffers are passed as their bits.
 *
 * cuBLAS is loaded at run time (dlopen), so that the binaries start on a
 * host without it; the backend then takes every row through the q16
 * products (matvec.h) and says so.
 *
 * Precision: the weights' fp16 rounding and the activations' (q16, then
 * fp16) add about 3e-4 relative per output against float64, where the q16
 * products add 1.5e-5. The backend chooses the route by a row's kind
 * (fwd_seq.prefill), so that a prompt row's numbers do not depend on the
 * batch around it; only a step of many generated tokens (cuda_backend.cu's
 * BATCH_GEMM) moves them to this route too. */
#ifndef SMQ_CUDA_GEMM_H
#define SMQ_CUDA_GEMM_H

#include <stdint.h>

#include "err.h"
#include "matvec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuda_gemm cuda_gemm;

/* Loads cuBLAS and makes a handle whose work goes on `stream` (a
 * cudaStream_t). The library: $SMQ_CUBLAS when set, else libcublas.so.13,
 * .so.12 and .so from the loader's path, then from the CUDA toolkit the
 * build used. NULL with err saying what was tried. */
cuda_gemm *cuda_gemm_new(void *stream, smq_err *err);
void cuda_gemm_free(cuda_gemm **g);

/* The library file that was loaded. */
const char *cuda_gemm_library(const cuda_gemm *g);

/* y[t][r] (+= when accumulate) sum_i W[r][i] a[t][i] for t < n_x, where W
 * is the matrices ws[0..n_w) stacked (the rows of ws[0], then of ws[1], ...;
 * all Q4_K or Q6_K with the same ne0 = k, in cuda_weight_upload's layout),
 * a is n_x fp16 rows of k at d_a, y[t] at d_y + t * y_stride floats. The
 * weights are dequantized scratch_halves at a time (at least k) into
 * d_scratch. Returns 0, or -1 with err. */
int cuda_gemm_run(cuda_gemm *g, const dev_mat *const *ws, int n_w, const uint16_t *d_a, uint64_t n_x, float *d_y,
                  uint64_t y_stride, int accumulate, uint16_t *d_scratch, uint64_t scratch_halves, smq_err *err);

/* The same with the weights already in fp16: rows x k, row-major at d_w16
 * (a stack's dequantized rows, kept on the device). */
int cuda_gemm_run_f16(cuda_gemm *g, const uint16_t *d_w16, uint64_t rows, uint64_t k, const uint16_t *d_a, uint64_t n_x,
                      float *d_y, uint64_t y_stride, int accumulate, smq_err *err);

/* n_rows q16 rows of n elements (qdot.cuh; q16_row_bytes(n) apart) as fp16
 * rows of n at d_out. Returns 0, or -1 with err. */
int cuda_q16_to_f16(const uint8_t *d_q16, uint64_t n, uint64_t n_rows, uint16_t *d_out, void *stream, smq_err *err);

/* Rows [r0, r0 + n) of w dequantized (quant.h's values, rounded to fp16)
 * into n rows of w->ne0 halves at d_out. Returns 0, or -1 with err. */
int cuda_dequant_f16(const dev_mat *w, uint64_t r0, uint64_t n, uint16_t *d_out, void *stream, smq_err *err);

/* Rows [r0, r0 + n) of the matrices ws[0..n_w) stacked (same ne0), the
 * same way, into n rows at d_out. */
int cuda_dequant_stack(const dev_mat *const *ws, int n_w, uint64_t r0, uint64_t n, uint16_t *d_out, void *stream,
                       smq_err *err);

#ifdef __cplusplus
}
#endif

#endif
