/* mma16816.cuh - one warp-wide tensor-core product, PTX's
 * mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (sm_80 and later):
 * c += a b, a 16 x 16 and b 16 x 8 in fp16, c 16 x 8 in fp32. Unlike
 * WMMA's opaque fragments, the PTX ISA fixes which lane holds what, so a
 * kernel can work on its accumulators in registers (the prompt attention's
 * softmax). With g = lane / 4 and t = lane % 4, each a and b register two
 * fp16 (the lower index in the low half):
 *   a[0] A[g][2t, 2t+1]   a[1] A[g+8][2t, 2t+1]
 *   a[2] A[g][2t+8, +9]   a[3] A[g+8][2t+8, +9]
 *   b[0] B[2t, 2t+1][g]   b[1] B[2t+8, 2t+9][g]
 *   c[0], c[1]: C[g][2t], C[g][2t+1];  c[2], c[3]: C[g+8][2t], C[g+8][2t+1]
 * The host emulation of the device (tests/emu/mma.h) has its own. */
#ifndef SMQ_MMA16816_CUH
#define SMQ_MMA16816_CUH

#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>

#ifdef SMQ_CUDA_EMU
#include <mma.h>
#define mma16816 emu_mma16816
#else
__device__ __forceinline__ static void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

/* Two floats as the fp16 pair of an a or b register (x the low half). */
__device__ __forceinline__ static uint32_t pack_half2(float x, float y)
{
    __half2 h = __floats2half2_rn(x, y);
    uint32_t u;
    memcpy(&u, &h, 4);
    return u;
}

#endif
