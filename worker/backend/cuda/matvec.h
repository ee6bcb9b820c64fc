/* matvec.h - quantized matrix-vector products on the GPU, callable from C. */
#ifndef SMQ_CUDA_MATVEC_H
#define SMQ_CUDA_MATVEC_H

#include <stdint.h>

#include "err.h"
#include "qtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A weight matrix on the device, in cuda_weight_upload's layout. */
typedef struct dev_mat {
    qtype type;
    uint64_t ne0, ne1, row_bytes;
    const uint8_t *d;
} dev_mat;

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

/* ---- the fast path: q16 activations (qdot.cuh) and weights laid out for
 * 16-byte loads ---- */

/* Device bytes of a Q4_K or Q6_K matrix of rows x k in the product kernels'
 * layout (Q6_K blocks padded from 210 to 224 bytes). */
uint64_t cuda_weight_bytes(qtype type, uint64_t rows, uint64_t k);

/* Copies a matrix from its GGUF blocks on the host into that layout at
 * d_dst. Returns 0, or -1 with err. */
int cuda_weight_upload(qtype type, const void *src, uint64_t rows, uint64_t k, void *d_dst, smq_err *err);

/* Bytes of one q16 activation row of n elements (qdot.cuh). */
uint64_t cuda_q16_row_bytes(uint64_t n);

/* Enqueues the quantization of n_rows rows of n floats (row r at d_x +
 * (d_map ? d_map[r] : r) * n) into q16 rows at d_out (q16_row_bytes(n)
 * apart), RMS-normed and scaled by d_norm first when it is not NULL.
 * n a multiple of 256. Returns 0, or -1 with err. */
int cuda_q16_quantize(const float *d_x, const uint32_t *d_map, const float *d_norm, float eps, uint64_t n,
                      uint64_t n_rows, uint8_t *d_out, void *stream, smq_err *err);

/* y[t][r] (+= when accumulate) W[r] . a[t] for t < n_x q16 rows at d_act, W
 * in cuda_weight_upload's layout, y[t] at d_y + t*y_stride. A row's sum does
 * not depend on n_x. Returns 0, or -1 with err. */
int cuda_q16_matmul(qtype type, const void *d_w, uint64_t rows, uint64_t k, const uint8_t *d_act, uint64_t n_x,
                    float *d_y, uint64_t y_stride, int accumulate, void *stream, smq_err *err);

/* The same (y rows packed: y_stride = rows), and then each y[t] RMS-normed,
 * scaled by d_norm and quantized to the q16 row t at d_q_out: what
 * cuda_q16_quantize(d_y, NULL, d_norm, eps, rows, n_x, d_q_out) gives, bit
 * for bit, done by the product's last thread block of each row instead of
 * another launch. d_count: n_x words, zero, and left zero. rows a multiple
 * of 256. Returns 0, or -1 with err. */
int cuda_q16_matmul_norm(qtype type, const void *d_w, uint64_t rows, uint64_t k, const uint8_t *d_act, uint64_t n_x,
                         float *d_y, int accumulate, const float *d_norm, float eps, uint8_t *d_q_out,
                         uint32_t *d_count, void *stream, smq_err *err);

#ifdef __cplusplus
}
#endif

#endif
