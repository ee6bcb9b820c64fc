/* gguf_fuzz.c - libFuzzer target: the GGUF reader on arbitrary bytes.
 *
 * Whatever the input, gguf_open_buffer must either reject it with a message
 * or return a file whose every value and tensor can be walked without reading
 * outside the input (ASan checks that: the fuzzer's buffer is exactly sized).
 * Accepted tensors of types we can dequantize are dequantized (the first
 * rows) to reach the block decoders with hostile scales too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"

static volatile uint64_t sink;

static void walk_value(const gguf_value *v)
{
    uint64_t u;
    int64_t i;
    double f;
    if (v->type == GGUF_TYPE_STRING && v->v.str.len)
        sink += (uint8_t)v->v.str.ptr[0] + (uint8_t)v->v.str.ptr[v->v.str.len - 1];
    if (v->type != GGUF_TYPE_ARRAY) {
        sink += !gguf_value_u64(v, &u) + !gguf_value_i64(v, &i) + !gguf_value_f64(v, &f);
        return;
    }
    const gguf_array *a = &v->v.arr;
    for (uint64_t k = 0; k < a->count; k++) {
        if (a->elem_type == GGUF_TYPE_STRING) {
            if (a->strs[k].len)
                sink += (uint8_t)a->strs[k].ptr[a->strs[k].len - 1];
        } else if (a->elem_type == GGUF_TYPE_ARRAY) {
            walk_value(&a->arrays[k]);
        } else {
            sink += !gguf_arr_u64(a, k, &u) + !gguf_arr_i64(a, k, &i) + !gguf_arr_f64(a, k, &f);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    smq_err err;
    gguf_file *f = gguf_open_buffer(data, size, "fuzz.gguf", &err);
    if (!f) {
        if (!err.msg[0])
            abort(); /* a rejection must say why */
        return 0;
    }
    for (uint64_t k = 0; k < f->n_kv; k++) {
        walk_value(&f->kv[k].value);
        if (gguf_find_kv(f, f->kv[k].key) != &f->kv[k])
            abort();
    }
    uint32_t u32;
    float f32;
    gguf_str s;
    sink += !gguf_get_u32(f, "general.alignment", &u32, &err) + !gguf_get_f32(f, "x", &f32, &err) +
            !gguf_get_str(f, "general.architecture", &s, &err);
    for (uint64_t k = 0; k < f->n_tensors; k++) {
        const gguf_tensor *t = &f->tensors[k];
        if (gguf_find_tensor(f, t->name) != t)
            abort();
        if (t->n_bytes) {
            const uint8_t *p = t->data;
            sink += p[0] + p[t->n_bytes - 1];
        }
        /* Dequantize up to 4 rows of up to 4096 elements. */
        if (quant_can_dequant(t->type) && t->ne[0] && t->ne[0] <= 4096) {
            float row[4096];
            uint64_t row_bytes;
            if (qtype_row_bytes(t->type, t->ne[0], &row_bytes))
                abort();
            uint64_t rows = t->n_elements / t->ne[0];
            for (uint64_t r = 0; r < rows && r < 4; r++)
                if (quant_dequant_row(t->type, (const uint8_t *)t->data + r * row_bytes, row, t->ne[0]))
                    abort();
            uint32_t bits;
            memcpy(&bits, &row[0], sizeof bits);
            sink += bits;
        }
    }
    gguf_close(&f);
    return 0;
}
