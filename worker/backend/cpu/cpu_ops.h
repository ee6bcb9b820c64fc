/* cpu_ops.h - the CPU backend's vector primitives, with the SIMD level
 * chosen at run time (AVX-512, AVX2+FMA, or portable scalar code). */
#ifndef SMQ_CPU_OPS_H
#define SMQ_CPU_OPS_H

typedef enum simd_level { SIMD_SCALAR, SIMD_AVX2, SIMD_AVX512 } simd_level;

/* The best level this CPU supports. */
simd_level simd_best(void);
/* Uses level from now on; -1 if the CPU lacks it. SMQ_SIMD=scalar|avx2|avx512
 * in the environment sets the level the first primitive uses. */
int simd_use(simd_level level);
simd_level simd_current(void);
const char *simd_name(simd_level level);

/* sum a[i] * b[i] */
float dot_f32(const float *a, const float *b, int n);

#endif
