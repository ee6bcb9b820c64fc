/* cuda_backend.h - SmolLM3's forward pass on one NVIDIA GPU: the backend.h
 * interface, computing cpu_backend.c's function with the matrix products on
 * activations quantized to 16 bits (in both of backend_config's modes) and
 * the KV cache in fp16. The GPU is cfg->gpu (0: the first). */
#ifndef SMQ_CUDA_BACKEND_H
#define SMQ_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const backend_ops cuda_backend_ops;

/* Device bytes create() would allocate for m with cfg: the weights, the KV
 * pool, and the buffers of a first step. */
uint64_t cuda_backend_need(const model *m, const backend_config *cfg);

/* Whether GPU cfg->gpu exists and has the memory for m with cfg: 0 with the
 * device described in desc ("GPU 0 (NVIDIA H100 80GB HBM3): needs 2.10 GiB,
 * 79.10 GiB free"), or -1 with err saying why not (no driver, no such device,
 * too little free memory). */
int cuda_backend_probe(const model *m, const backend_config *cfg, char *desc, size_t desc_len, smq_err *err);

/* For tests: fills the backend's step buffers (activations and logits on the
 * device) with 0xFF bytes, NaN as floats, so that any element a step reads
 * before writing shows in its logits; with kv also the whole KV pool (every
 * cached position is lost). Returns 0, or -1 with err. */
int cuda_backend_poison(backend *b, int kv, smq_err *err);

/* Nodes of the last one-token decode step captured as a CUDA graph: its
 * kernel launches and any copies or sets (0: none captured yet, or graphs
 * off with SMQ_CUDA_GRAPHS=0). */
uint32_t cuda_backend_step_nodes(const backend *b);

/* For tests: on 0, the kernels launched from now on in this process are
 * ordinary launches, as under SMQ_CUDA_PDL=0 (a backend's captured graphs
 * keep what they were captured with); on 1, programmatic dependent launch
 * again where the device has it (launch.cuh). */
void cuda_set_pdl(int on);
/* Whether kernels launched now would use programmatic dependent launch. */
int cuda_pdl_active(void);

/* GB/s of reading device memory on GPU gpu, measured now (best of three
 * passes over 512 MiB); 0 when it cannot be measured. */
double cuda_read_bandwidth(int gpu);

#ifdef __cplusplus
}
#endif

#endif
