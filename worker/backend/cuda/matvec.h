/* matvec.h - quantized matrix-vector products on the GPU, callable from C. */
#ifndef SMQ_CUDA_MATVEC_H
#define SMQ_CUDA_MATVEC_H

#include <stdint.h>

#include "err.h"
#include "qtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enqueues y[r] = sum_k W[r][k] x[k] for W of `rows` rows of k elements of
 * type (Q4_K or Q6_K) in device memory at d_w (GGUF block layout), x and y
 * float32 on the device. k a multiple of 256. Returns 0, or -1 with err for a
 * bad shape, an unsupported type or a failed launch. */
int cuda_matvec(qtype type, const void *d_w, uint64_t rows, uint64_t k, const float *d_x, float *d_y, void *stream,
                smq_err *err);

/* The same for n_x activation rows at once: y[t][r] = sum_k W[r][k] x[t][k]
 * for t < n_x, with x[t] at d_x + t*x_stride and y[t] at d_y + t*y_stride
 * (floats; x_stride a multiple of 4), y[t][r] += ... when accumulate. Each
 * row's sum is computed as cuda_matvec computes it, whatever n_x: a batch
 * gives each row the numbers it gets alone. */
int cuda_matmul(qtype type, const void *d_w, uint64_t rows, uint64_t k, const float *d_x, uint64_t x_stride, float *d_y,
                uint64_t y_stride, uint64_t n_x, int accumulate, void *stream, smq_err *err);

#ifdef __cplusplus
}
#endif

#endif
