/* qdot.h - integer dot products of quantized weight rows (Q4_K, Q6_K) with
 * activations quantized to Q8_K: the CPU backend's fast path. */
#ifndef SMQ_QDOT_H
#define SMQ_QDOT_H

#include "quant.h"

/* sum over nb blocks of 256 of w . x */
typedef float (*qdot_fn)(const void *w, const block_q8_K *x, int nb);

/* The best implementation for weights of type t at the current SIMD level,
 * or NULL when t has no integer path (the f32 path serves it). */
qdot_fn qdot_for(qtype t);
/* w . x[r] for four activation rows r = 0..3, xs blocks apart, into out[r]:
 * each weight block is unpacked once (prefill). NULL where there is none. */
typedef void (*qdot4_fn)(const void *w, const block_q8_K *x, size_t xs, int nb, float *out);
qdot4_fn qdot4_for(qtype t);

/* Sixteen weight rows (row_bytes apart from w) times n activation rows (xs
 * blocks apart) into acc[r * 16 + i] (row r of x, weight row i): the weights
 * are unpacked once for all n (prefill). Each result is bit-identical to
 * qdot_for's. NULL where the CPU has no kernel for it (AVX-512 VNNI, AVX2),
 * or where `rows` rows of x are too few for the unpacking to pay for itself
 * against the four-row kernel. */
typedef void (*qgemm16_fn)(const void *w, size_t row_bytes, const block_q8_K *x, size_t xs, int n, int nb, float *acc);
qgemm16_fn qgemm16_for(qtype t, uint32_t rows);

/* nb blocks of x to Q8_K, as quant_quantize_row does (bit for bit), with
 * SIMD where there is some. */
void q8k_quantize(const float *x, block_q8_K *y, int nb);

/* The portable one, for tests. */
qdot_fn qdot_reference(qtype t);

#endif
