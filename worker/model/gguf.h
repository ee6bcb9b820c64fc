/* gguf.h - a GGUF v2/v3 reader.
 *
 * gguf_open() maps a file read-only and validates all of it before returning:
 * header, every metadata value (arrays of strings and nested arrays too),
 * every tensor info, alignment, and that each tensor's data lies inside the
 * file, aligned, without overlapping another. After that nothing in a
 * gguf_file can point outside the mapping, so accessors need no checks of
 * their own beyond key and type.
 *
 * Memory: every allocation is bounded by the file's size (counts are checked
 * against the bytes that remain before anything is allocated).
 *
 * Strings in the file are not NUL-terminated; values are gguf_str views into
 * the mapping. Keys and tensor names are copied out NUL-terminated.
 */
#ifndef SMQ_GGUF_H
#define SMQ_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "qtype.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4
#define GGUF_MAX_NAME          64 /* bytes in a tensor name, as ggml allows */
#define GGUF_MAX_ARRAY_DEPTH   8  /* arrays of arrays nest at most this deep */

typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

typedef struct gguf_str {
    const char *ptr; /* into the mapping; not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_value gguf_value;

typedef struct gguf_array {
    gguf_type elem_type;
    uint64_t count;
    const uint8_t *data; /* scalar elements, little-endian, possibly unaligned */
    gguf_str *strs;      /* elem_type STRING: count views */
    gguf_value *arrays;  /* elem_type ARRAY: count nested values */
} gguf_array;

struct gguf_value {
    gguf_type type;
    uint64_t offset; /* of the value in the file, for error messages */
    union {
        uint64_t u; /* UINT8..UINT64 and BOOL */
        int64_t i;  /* INT8..INT64 */
        double f;   /* FLOAT32, FLOAT64 */
        gguf_str str;
        gguf_array arr;
    } v;
};

typedef struct gguf_kv {
    char *key;
    gguf_value value;
} gguf_kv;

typedef struct gguf_tensor {
    char name[GGUF_MAX_NAME + 1];
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) length; unused dims are 1 */
    qtype type;
    uint64_t offset; /* relative to the data section */
    uint64_t n_elements;
    uint64_t n_bytes;
    const void *data;     /* into the mapping */
    uint64_t info_offset; /* where its tensor info starts in the file */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    uint32_t version;
    const uint8_t *base; /* the mapping (or the caller's buffer) */
    uint64_t size;
    uint32_t alignment;
    uint64_t data_offset; /* start of the data section in the file */
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    /* Sorted by name, for lookups by bisection (and the duplicate checks). */
    const gguf_kv **kv_by_key;
    const gguf_tensor **tensors_by_name;
    int mapped;
} gguf_file;

/* Maps and validates path. NULL with err filled on any problem. */
gguf_file *gguf_open(const char *path, smq_err *err);

/* Validates a buffer the caller keeps alive until gguf_close (fuzzing, tests).
 * name is used in messages. */
gguf_file *gguf_open_buffer(const void *buf, size_t size, const char *name, smq_err *err);

void gguf_close(gguf_file **self);

const char *gguf_type_name(gguf_type t);

/* Lookups by name; NULL when absent. */
const gguf_kv *gguf_find_kv(const gguf_file *self, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *self, const char *name);

/* Typed accessors. Each returns 0 and sets *out, or -1 with err naming the
 * file and key (missing, or of a type that does not convert). Integers
 * convert between widths and signedness when the value fits, so files that
 * store u32 where others store u64 read alike; floats accept f32 and f64. */
int gguf_get_u64(const gguf_file *self, const char *key, uint64_t *out, smq_err *err);
int gguf_get_u32(const gguf_file *self, const char *key, uint32_t *out, smq_err *err);
int gguf_get_i64(const gguf_file *self, const char *key, int64_t *out, smq_err *err);
int gguf_get_f64(const gguf_file *self, const char *key, double *out, smq_err *err);
int gguf_get_f32(const gguf_file *self, const char *key, float *out, smq_err *err);
int gguf_get_bool(const gguf_file *self, const char *key, int *out, smq_err *err);
int gguf_get_str(const gguf_file *self, const char *key, gguf_str *out, smq_err *err);
/* An array; elem_type GGUF_TYPE_COUNT accepts any element type. */
int gguf_get_arr(const gguf_file *self, const char *key, gguf_type elem_type, const gguf_array **out, smq_err *err);

/* Optional keys: absent gives *out = def and 0; present but unconvertible is
 * still an error (a wrong type in a file is a bug to report, not to paper over). */
int gguf_get_u32_or(const gguf_file *self, const char *key, uint32_t def, uint32_t *out, smq_err *err);
int gguf_get_f32_or(const gguf_file *self, const char *key, float def, float *out, smq_err *err);

/* Conversions of a single value, as above; err names only the value. */
int gguf_value_u64(const gguf_value *v, uint64_t *out);
int gguf_value_i64(const gguf_value *v, int64_t *out);
int gguf_value_f64(const gguf_value *v, double *out);

/* Element i (< count) of a numeric or bool array, converted as above. */
int gguf_arr_u64(const gguf_array *a, uint64_t i, uint64_t *out);
int gguf_arr_i64(const gguf_array *a, uint64_t i, int64_t *out);
int gguf_arr_f64(const gguf_array *a, uint64_t i, double *out);

/* Size in bytes of one scalar element of type t (0 for STRING and ARRAY). */
size_t gguf_type_size(gguf_type t);

#endif
