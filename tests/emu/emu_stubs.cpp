/* emu_stubs.cpp - what the host emulation (cuda_emu.h) leaves out of the
 * CUDA backend: the prompt rows' attention on the tensor cores
 * (prompt_attention.cu, WMMA). The backend never reaches it there (it needs
 * cuBLAS, which finds no device); a test that calls it directly is told. */
#include "fwd_kernels.h"

int fwd_prompt_attention_supported(const fwd_dims *d)
{
    (void)d;
    return 0;
}

uint32_t fwd_prompt_tile_rows(const fwd_dims *d)
{
    (void)d;
    return 64;
}

int fwd_prompt_attention(const float *q, const __half *kv_layer, const uint32_t *tiles, uint32_t n_tiles,
                         const fwd_dims *d, const fwd_meta *m, uint8_t *out, void *stream, smq_err *err)
{
    (void)q, (void)kv_layer, (void)tiles, (void)n_tiles, (void)d, (void)m, (void)out, (void)stream;
    return smq_err_set(err, "cuda backend: the tensor-core prompt attention is not emulated on the host");
}
