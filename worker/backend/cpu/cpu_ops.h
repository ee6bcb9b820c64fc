/* cpu_ops.h - the CPU backend's vector primitives, with the SIMD level
 * chosen at run time (AVX-512, AVX2+FMA, or portable scalar code). */
#ifndef SMQ_CPU_OPS_H
#define SMQ_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Unrolls the loop that follows completely. Loops over an array of vector
 * accumulators must: left as loops, GCC 12 keeps the array in memory, or
 * in a few registers that it copies around every multiply-add (the 16-row
 * VNNI kernels: Q4_K 128 -> 145 GMAC/s, Q6_K 94 -> 117 on one core when
 * unrolled). */
#define SMQ_UNROLL(n) _Pragma(SMQ_STR(GCC unroll n))
#define SMQ_STR(x)    #x

typedef enum simd_level { SIMD_SCALAR, SIMD_AVX2, SIMD_AVX512 } simd_level;

/* The best level this CPU supports. */
simd_level simd_best(void);
/* Uses level from now on; -1 if the CPU lacks it. SMQ_SIMD=scalar|avx2|avx512
 * in the environment sets the level the first primitive uses. */
int simd_use(simd_level level);
simd_level simd_current(void);
const char *simd_name(simd_level level);

/* Reads n bytes at p (8-byte aligned, n a multiple of 8) with the widest
 * loads this CPU has and four independent sums, as fast as memory allows:
 * the benchmarks' measure of read bandwidth. Returns the sum of the words,
 * so that the reads cannot be left out. */
uint64_t read_sum(const void *p, size_t n);

/* gate[i] = silu(gate[i]) * up[i] (SwiGLU), silu(g) = g / (1 + e^-g) */
void swiglu(float *gate, const float *up, uint32_t n);

/* sum a[i] * b[i] */
float dot_f32(const float *a, const float *b, int n);

/* Where one KV head's keys and values live in a paged cache: position p's
 * key is at base + pages[p / page_size] * page_stride + (p % page_size) *
 * slot_stride, its value v_offset floats further. */
typedef struct kv_view {
    const float *base;
    const uint32_t *pages;
    uint32_t page_size;
    uint64_t page_stride, slot_stride, v_offset;
} kv_view;

/* Causal attention of the n_q query heads that share one KV head (q and
 * out: n_q rows of head_dim) over positions 0..n-1: out_h = softmax(q_h.k_p *
 * scale) . v_p, in float32 (the softmax sum in double). scores: room for
 * n_q * n floats. Each head's result is the same whatever n_q. */
void attend_group(const float *q, uint32_t n_q, const kv_view *kv, uint32_t n, uint32_t head_dim, float scale,
                  float *scores, float *out);

/* attend_group for rows 0..n_rows-1 of one sequence at consecutive
 * positions: row r attends over positions 0..n0+r-1, its n_q query heads at
 * q + r * q_stride, its output at out + r * out_stride. scores: room for
 * n_rows * n_q * (n0 + n_rows - 1) floats. Each row's result is the very one
 * attend_group gives it alone: the block only shares the reads of the keys
 * and values (prefill reads them once per block instead of once per row). */
void attend_rows(const float *q, uint64_t q_stride, uint32_t n_rows, uint32_t n_q, const kv_view *kv, uint32_t n0,
                 uint32_t head_dim, float scale, float *scores, float *out, uint64_t out_stride);

#endif
