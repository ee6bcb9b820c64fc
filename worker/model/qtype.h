/* qtype.h - tensor element types as GGUF numbers them (ggml_type ids).
 *
 * Every type a GGUF file may name, with its block size (elements per block)
 * and block size in bytes, so that the reader can validate any file's tensor
 * sizes even for types we cannot compute on. Which of them we can dequantize
 * or quantize is quant.h's business.
 *
 * Plain C that also compiles as C++, so host and CUDA code share it.
 */
#ifndef SMQ_QTYPE_H
#define SMQ_QTYPE_H

#include <stdint.h>

typedef enum qtype {
    QTYPE_F32 = 0,
    QTYPE_F16 = 1,
    QTYPE_Q4_0 = 2,
    QTYPE_Q4_1 = 3,
    QTYPE_Q5_0 = 6,
    QTYPE_Q5_1 = 7,
    QTYPE_Q8_0 = 8,
    QTYPE_Q8_1 = 9,
    QTYPE_Q2_K = 10,
    QTYPE_Q3_K = 11,
    QTYPE_Q4_K = 12,
    QTYPE_Q5_K = 13,
    QTYPE_Q6_K = 14,
    QTYPE_Q8_K = 15,
    QTYPE_IQ2_XXS = 16,
    QTYPE_IQ2_XS = 17,
    QTYPE_IQ3_XXS = 18,
    QTYPE_IQ1_S = 19,
    QTYPE_IQ4_NL = 20,
    QTYPE_IQ3_S = 21,
    QTYPE_IQ2_S = 22,
    QTYPE_IQ4_XS = 23,
    QTYPE_I8 = 24,
    QTYPE_I16 = 25,
    QTYPE_I32 = 26,
    QTYPE_I64 = 27,
    QTYPE_F64 = 28,
    QTYPE_IQ1_M = 29,
    QTYPE_BF16 = 30,
    QTYPE_TQ1_0 = 34,
    QTYPE_TQ2_0 = 35,
    QTYPE_MXFP4 = 39,
    QTYPE_COUNT = 40 /* one past the largest id; not every id below it exists */
} qtype;

typedef struct qtype_info {
    const char *name;     /* as ggml prints it: "q4_K", "f32" */
    uint32_t block_elems; /* elements per block (0: no such type) */
    uint32_t block_bytes; /* bytes per block */
} qtype_info;

/* Sizes from ggml's block structs (ggml-common.h), indexed by id. Positional
 * (not designated) so that C++ and nvcc accept the header too; the ids with
 * zero sizes were removed from ggml and are rejected. */
static const qtype_info qtype_table[QTYPE_COUNT] = {
    { "f32", 1, 4 },        /* 0 F32 */
    { "f16", 1, 2 },        /* 1 F16 */
    { "q4_0", 32, 18 },     /* 2 Q4_0 */
    { "q4_1", 32, 20 },     /* 3 Q4_1 */
    { 0, 0, 0 },            /* 4: removed from ggml */
    { 0, 0, 0 },            /* 5: removed from ggml */
    { "q5_0", 32, 22 },     /* 6 Q5_0 */
    { "q5_1", 32, 24 },     /* 7 Q5_1 */
    { "q8_0", 32, 34 },     /* 8 Q8_0 */
    { "q8_1", 32, 36 },     /* 9 Q8_1 */
    { "q2_K", 256, 84 },    /* 10 Q2_K */
    { "q3_K", 256, 110 },   /* 11 Q3_K */
    { "q4_K", 256, 144 },   /* 12 Q4_K */
    { "q5_K", 256, 176 },   /* 13 Q5_K */
    { "q6_K", 256, 210 },   /* 14 Q6_K */
    { "q8_K", 256, 292 },   /* 15 Q8_K */
    { "iq2_xxs", 256, 66 }, /* 16 IQ2_XXS */
    { "iq2_xs", 256, 74 },  /* 17 IQ2_XS */
    { "iq3_xxs", 256, 98 }, /* 18 IQ3_XXS */
    { "iq1_s", 256, 50 },   /* 19 IQ1_S */
    { "iq4_nl", 32, 18 },   /* 20 IQ4_NL */
    { "iq3_s", 256, 110 },  /* 21 IQ3_S */
    { "iq2_s", 256, 82 },   /* 22 IQ2_S */
    { "iq4_xs", 256, 136 }, /* 23 IQ4_XS */
    { "i8", 1, 1 },         /* 24 I8 */
    { "i16", 1, 2 },        /* 25 I16 */
    { "i32", 1, 4 },        /* 26 I32 */
    { "i64", 1, 8 },        /* 27 I64 */
    { "f64", 1, 8 },        /* 28 F64 */
    { "iq1_m", 256, 56 },   /* 29 IQ1_M */
    { "bf16", 1, 2 },       /* 30 BF16 */
    { 0, 0, 0 },            /* 31: removed from ggml */
    { 0, 0, 0 },            /* 32: removed from ggml */
    { 0, 0, 0 },            /* 33: removed from ggml */
    { "tq1_0", 256, 54 },   /* 34 TQ1_0 */
    { "tq2_0", 256, 66 },   /* 35 TQ2_0 */
    { 0, 0, 0 },            /* 36: removed from ggml */
    { 0, 0, 0 },            /* 37: removed from ggml */
    { 0, 0, 0 },            /* 38: removed from ggml */
    { "mxfp4", 32, 17 },    /* 39 MXFP4 */
};

/* Nonzero when t is a type id a GGUF file may use. Takes a wide integer so
 * that callers can pass a raw file value before converting it. */
static inline int qtype_valid(int64_t t)
{
    return t >= 0 && t < QTYPE_COUNT && qtype_table[t].block_elems != 0;
}

static inline const char *qtype_name(qtype t)
{
    return qtype_valid(t) ? qtype_table[t].name : "invalid";
}

/* Bytes of n elements of type t in *bytes. Returns -1 (and leaves *bytes
 * alone) when t is invalid, n is not a multiple of the block size, or the size
 * does not fit in 64 bits. */
static inline int qtype_row_bytes(qtype t, uint64_t n, uint64_t *bytes)
{
    if (!qtype_valid(t) || n % qtype_table[t].block_elems != 0)
        return -1;
    uint64_t blocks = n / qtype_table[t].block_elems;
    if (blocks > UINT64_MAX / qtype_table[t].block_bytes)
        return -1;
    *bytes = blocks * qtype_table[t].block_bytes;
    return 0;
}

#endif
