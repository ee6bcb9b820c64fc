/* dequant.h - dequantize whole tensors on the GPU, callable from C.
 *
 * The kernels compute each element with quant.h's functions, so the result
 * is bit for bit what quant_dequant_row gives on the host.
 */
#ifndef SMQ_CUDA_DEQUANT_H
#define SMQ_CUDA_DEQUANT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "qtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is none, or no driver. */
int cuda_device_count(void);

/* Enqueues on `stream` (a cudaStream_t; NULL for the default stream) the
 * dequantization of n_rows rows of row_elems elements of `type` (F16, BF16,
 * Q8_0, Q4_K, Q5_K or Q6_K) from device memory d_src into n_rows*row_elems
 * floats at d_dst. Rows are contiguous (row_elems is a
 * multiple of the block size). Returns 0, or -1 with err set for an
 * unsupported type, a bad size, or a failed launch; faults inside the kernel
 * show up at the caller's next synchronization. */
int cuda_dequant_rows(qtype type, const void *d_src, float *d_dst, uint64_t n_rows, uint64_t row_elems, void *stream,
                      smq_err *err);

#ifdef __cplusplus
}
#endif

#endif
