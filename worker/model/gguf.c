/* gguf.c - GGUF v2/v3 reader: parse and validate everything up front.
 *
 * The parser walks the header with a bounds-checked cursor. Every length and
 * count read from the file is checked against the bytes that remain before it
 * is used or allocated for, so a hostile file can neither read outside the
 * mapping nor make us allocate more than a small multiple of its size. Error
 * messages name the file, the byte offset where the offending field starts,
 * and what is wrong with it.
 */
#include "gguf.h"

#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

typedef struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    const char *name; /* file name for messages */
    smq_err *err;
} cursor;

/* Fails with "<file>: at byte N (0xN): <message>". */
__attribute__((format(printf, 3, 4))) static int fail_at(cursor *c, uint64_t at, const char *fmt, ...)
{
    char what[SMQ_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return smq_err_set(c->err, "%s: at byte %" PRIu64 " (0x%" PRIx64 "): %s", c->name, at, at, what);
}

static uint64_t remaining(const cursor *c)
{
    return c->size - c->pos;
}

/* Checks that n more bytes exist for `what`. */
static int need(cursor *c, uint64_t n, const char *what)
{
    if (n > remaining(c))
        return fail_at(c, c->pos, "file truncated: %s needs %" PRIu64 " bytes, only %" PRIu64 " remain", what, n,
                       remaining(c));
    return 0;
}

static int read_bytes(cursor *c, void *out, uint64_t n, const char *what)
{
    if (need(c, n, what))
        return -1;
    memcpy(out, c->base + c->pos, n);
    c->pos += n;
    return 0;
}

static int read_u32(cursor *c, uint32_t *out, const char *what)
{
    return read_bytes(c, out, 4, what);
}

static int read_u64(cursor *c, uint64_t *out, const char *what)
{
    return read_bytes(c, out, 8, what);
}

/* A gguf string: u64 length, then that many bytes. */
static int read_str(cursor *c, gguf_str *out, const char *what)
{
    uint64_t at = c->pos, len;
    if (read_u64(c, &len, what))
        return -1;
    if (len > remaining(c))
        return fail_at(c, at, "%s: string length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes remain)",
                       what, len, remaining(c));
    out->ptr = (const char *)c->base + c->pos;
    out->len = len;
    c->pos += len;
    return 0;
}

static const char *const type_names[GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *gguf_type_name(gguf_type t)
{
    return (unsigned)t < GGUF_TYPE_COUNT ? type_names[t] : "invalid";
}

size_t gguf_type_size(gguf_type t)
{
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* Decodes one little-endian scalar of type t at p into v. */
static void scalar_decode(gguf_type t, const uint8_t *p, gguf_value *v)
{
    v->type = t;
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_BOOL:
        v->v.u = p[0];
        break;
    case GGUF_TYPE_INT8:
        v->v.i = (int8_t)p[0];
        break;
    case GGUF_TYPE_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        v->v.u = x;
        break;
    }
    case GGUF_TYPE_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        v->v.i = x;
        break;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        v->v.u = x;
        break;
    }
    case GGUF_TYPE_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        v->v.i = x;
        break;
    }
    case GGUF_TYPE_FLOAT32: {
        float x;
        memcpy(&x, p, 4);
        v->v.f = x;
        break;
    }
    case GGUF_TYPE_UINT64:
        memcpy(&v->v.u, p, 8);
        break;
    case GGUF_TYPE_INT64:
        memcpy(&v->v.i, p, 8);
        break;
    case GGUF_TYPE_FLOAT64:
        memcpy(&v->v.f, p, 8);
        break;
    default:
        break;
    }
}

static void value_free(gguf_value *v)
{
    if (v->type != GGUF_TYPE_ARRAY)
        return;
    free(v->v.arr.strs);
    if (v->v.arr.arrays) {
        for (uint64_t i = 0; i < v->v.arr.count; i++)
            value_free(&v->v.arr.arrays[i]);
        free(v->v.arr.arrays);
    }
    v->v.arr.strs = NULL;
    v->v.arr.arrays = NULL;
}

static int parse_value(cursor *c, gguf_type type, gguf_value *v, const char *key, int depth);

static int read_type(cursor *c, gguf_type *out, const char *key, const char *what)
{
    uint64_t at = c->pos;
    uint32_t t;
    if (read_u32(c, &t, what))
        return -1;
    if (t >= GGUF_TYPE_COUNT)
        return fail_at(c, at, "key %s: unknown %s %" PRIu32 " (valid: 0..%d)", key, what, t, GGUF_TYPE_COUNT - 1);
    *out = (gguf_type)t;
    return 0;
}

static int parse_array(cursor *c, gguf_value *v, const char *key, int depth)
{
    gguf_array *a = &v->v.arr;
    uint64_t at = c->pos;
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return fail_at(c, at, "key %s: arrays nested deeper than %d", key, GGUF_MAX_ARRAY_DEPTH);
    if (read_type(c, &a->elem_type, key, "array element type"))
        return -1;
    uint64_t count_at = c->pos;
    if (read_u64(c, &a->count, "array length"))
        return -1;

    size_t esize = gguf_type_size(a->elem_type);
    if (esize) {
        if (a->count > remaining(c) / esize)
            return fail_at(c, count_at, "key %s: array of %" PRIu64 " %s runs past the end of the file", key, a->count,
                           gguf_type_name(a->elem_type));
        a->data = c->base + c->pos;
        if (a->elem_type == GGUF_TYPE_BOOL) {
            for (uint64_t i = 0; i < a->count; i++)
                if (a->data[i] > 1)
                    return fail_at(c, c->pos + i, "key %s: bool element %" PRIu64 " is %u, not 0 or 1", key, i,
                                   a->data[i]);
        }
        c->pos += a->count * esize;
        return 0;
    }

    /* Strings need at least 8 bytes each, arrays at least 12: bound the
     * allocation by what the file could hold before making it. */
    uint64_t min_elem = a->elem_type == GGUF_TYPE_STRING ? 8 : 12;
    if (a->count > remaining(c) / min_elem)
        return fail_at(c, count_at, "key %s: array of %" PRIu64 " %ss cannot fit in the %" PRIu64 " bytes that remain",
                       key, a->count, gguf_type_name(a->elem_type), remaining(c));
    if (a->count == 0)
        return 0;
    if (a->elem_type == GGUF_TYPE_STRING) {
        a->strs = malloc(a->count * sizeof *a->strs);
        if (!a->strs)
            return fail_at(c, at, "key %s: out of memory for %" PRIu64 " strings", key, a->count);
        for (uint64_t i = 0; i < a->count; i++)
            if (read_str(c, &a->strs[i], key))
                return -1;
    } else {
        a->arrays = calloc(a->count, sizeof *a->arrays);
        if (!a->arrays)
            return fail_at(c, at, "key %s: out of memory for %" PRIu64 " arrays", key, a->count);
        for (uint64_t i = 0; i < a->count; i++)
            if (parse_value(c, GGUF_TYPE_ARRAY, &a->arrays[i], key, depth + 1))
                return -1;
    }
    return 0;
}

static int parse_value(cursor *c, gguf_type type, gguf_value *v, const char *key, int depth)
{
    v->type = type;
    v->offset = c->pos;
    if (type == GGUF_TYPE_STRING)
        return read_str(c, &v->v.str, key);
    if (type == GGUF_TYPE_ARRAY)
        return parse_array(c, v, key, depth);
    size_t n = gguf_type_size(type);
    if (need(c, n, key))
        return -1;
    scalar_decode(type, c->base + c->pos, v);
    if (type == GGUF_TYPE_BOOL && v->v.u > 1)
        return fail_at(c, c->pos, "key %s: bool value is %" PRIu64 ", not 0 or 1", key, v->v.u);
    c->pos += n;
    return 0;
}

static int cmp_kv(const void *a, const void *b)
{
    return strcmp((*(const gguf_kv *const *)a)->key, (*(const gguf_kv *const *)b)->key);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const gguf_tensor *const *)a)->name, (*(const gguf_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    uint64_t x = (*(const gguf_tensor *const *)a)->offset, y = (*(const gguf_tensor *const *)b)->offset;
    return x < y ? -1 : x > y;
}

static int parse_kvs(cursor *c, gguf_file *f)
{
    /* A key-value pair takes at least 13 bytes (empty key, type, one byte). */
    if (f->n_kv > remaining(c) / 13)
        return fail_at(c, 16, "metadata count %" PRIu64 " cannot fit in the %" PRIu64 " bytes that remain", f->n_kv,
                       remaining(c));
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    if (!f->kv)
        return fail_at(c, 16, "out of memory for %" PRIu64 " metadata entries", f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        uint64_t at = c->pos;
        gguf_str key;
        if (read_str(c, &key, "metadata key"))
            return -1;
        if (key.len == 0 || !utf8_valid(key.ptr, key.len, 0))
            return fail_at(c, at, "metadata key %" PRIu64 " is %s", i,
                           key.len ? "not valid UTF-8 (or contains NUL)" : "empty");
        kv->key = malloc(key.len + 1);
        if (!kv->key)
            return fail_at(c, at, "out of memory for a key of %" PRIu64 " bytes", key.len);
        memcpy(kv->key, key.ptr, key.len);
        kv->key[key.len] = 0;
        gguf_type type;
        if (read_type(c, &type, kv->key, "value type"))
            return -1;
        if (parse_value(c, type, &kv->value, kv->key, 0))
            return -1;
    }
    f->kv_by_key = malloc((f->n_kv ? f->n_kv : 1) * sizeof *f->kv_by_key);
    if (!f->kv_by_key)
        return fail_at(c, c->pos, "out of memory");
    for (uint64_t i = 0; i < f->n_kv; i++)
        f->kv_by_key[i] = &f->kv[i];
    qsort(f->kv_by_key, f->n_kv, sizeof *f->kv_by_key, cmp_kv);
    for (uint64_t i = 1; i < f->n_kv; i++)
        if (strcmp(f->kv_by_key[i - 1]->key, f->kv_by_key[i]->key) == 0)
            return fail_at(c, f->kv_by_key[i]->value.offset, "duplicate metadata key %s", f->kv_by_key[i]->key);
    return 0;
}

static int parse_tensor_info(cursor *c, gguf_tensor *t, uint64_t index)
{
    t->info_offset = c->pos;
    gguf_str name;
    if (read_str(c, &name, "tensor name"))
        return -1;
    if (name.len == 0 || name.len > GGUF_MAX_NAME || !utf8_valid(name.ptr, name.len, 0))
        return fail_at(c, t->info_offset, "tensor %" PRIu64 ": name is %s", index,
                       name.len == 0              ? "empty"
                       : name.len > GGUF_MAX_NAME ? "longer than 64 bytes"
                                                  : "not valid UTF-8 (or contains NUL)");
    memcpy(t->name, name.ptr, name.len);
    t->name[name.len] = 0;

    uint64_t at = c->pos;
    if (read_u32(c, &t->n_dims, "tensor dimension count"))
        return -1;
    if (t->n_dims > GGUF_MAX_DIMS)
        return fail_at(c, at, "tensor %s: %" PRIu32 " dimensions (at most %d)", t->name, t->n_dims, GGUF_MAX_DIMS);
    t->n_elements = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        at = c->pos;
        if (read_u64(c, &t->ne[d], "tensor dimension"))
            return -1;
        if (t->ne[d] > INT64_MAX)
            return fail_at(c, at, "tensor %s: dimension %" PRIu32 " is %" PRIu64 " (negative as int64)", t->name, d,
                           t->ne[d]);
        if (t->ne[d] && t->n_elements > INT64_MAX / t->ne[d])
            return fail_at(c, at, "tensor %s: element count overflows at dimension %" PRIu32, t->name, d);
        t->n_elements *= t->ne[d];
    }

    at = c->pos;
    uint32_t type;
    if (read_u32(c, &type, "tensor type"))
        return -1;
    if (!qtype_valid(type))
        return fail_at(c, at, "tensor %s: unknown tensor type %" PRIu32, t->name, type);
    t->type = (qtype)type;
    const qtype_info *info = &qtype_table[type];
    if (t->ne[0] % info->block_elems)
        return fail_at(c, at, "tensor %s: row length %" PRIu64 " is not a multiple of %s's block size %" PRIu32,
                       t->name, t->ne[0], info->name, info->block_elems);
    uint64_t row_bytes;
    if (qtype_row_bytes(t->type, t->ne[0], &row_bytes))
        return fail_at(c, at, "tensor %s: size in bytes overflows", t->name);
    uint64_t rows = t->ne[0] ? t->n_elements / t->ne[0] : 0;
    if (rows && row_bytes > UINT64_MAX / rows)
        return fail_at(c, at, "tensor %s: size in bytes overflows", t->name);
    t->n_bytes = row_bytes * rows;
    if (read_u64(c, &t->offset, "tensor data offset"))
        return -1;
    return 0;
}

/* Places the data section and checks every tensor's data: aligned, inside the
 * file, not overlapping another. */
static int place_tensors(cursor *c, gguf_file *f)
{
    const gguf_kv *al = gguf_find_kv(f, "general.alignment");
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (al) {
        uint64_t a;
        if (al->value.type == GGUF_TYPE_BOOL || gguf_value_u64(&al->value, &a))
            return fail_at(c, al->value.offset, "general.alignment is a %s, expected an unsigned integer",
                           gguf_type_name(al->value.type));
        if (a == 0 || a > (1u << 30) || (a & (a - 1)))
            return fail_at(c, al->value.offset, "general.alignment %" PRIu64 " is not a power of two up to 2^30", a);
        f->alignment = (uint32_t)a;
    }
    uint64_t pad = (f->alignment - c->pos % f->alignment) % f->alignment;
    f->data_offset = c->pos + pad; /* pos <= size < 2^63 on any real system */

    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment)
            return fail_at(c, t->info_offset,
                           "tensor %s: data offset %" PRIu64 " is not a multiple of the alignment %" PRIu32, t->name,
                           t->offset, f->alignment);
        if (t->offset > c->size || f->data_offset > c->size - t->offset ||
            t->n_bytes > c->size - t->offset - f->data_offset)
            return fail_at(c, t->info_offset,
                           "tensor %s: data (%" PRIu64 " bytes at data offset %" PRIu64
                           ") lies past the end of the file (%" PRIu64 " bytes, data section at %" PRIu64 ")",
                           t->name, t->n_bytes, t->offset, c->size, f->data_offset);
        t->data = c->base + f->data_offset + t->offset;
    }

    const gguf_tensor **by_off = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *by_off);
    if (!by_off)
        return fail_at(c, c->pos, "out of memory");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        by_off[i] = &f->tensors[i];
    qsort(by_off, f->n_tensors, sizeof *by_off, cmp_tensor_offset);
    for (uint64_t i = 1; i < f->n_tensors; i++) {
        const gguf_tensor *a = by_off[i - 1], *b = by_off[i];
        if (a->n_bytes && b->n_bytes && a->offset + a->n_bytes > b->offset) {
            int rc = fail_at(c, b->info_offset, "tensor %s: data overlaps tensor %s", b->name, a->name);
            free(by_off);
            return rc;
        }
    }
    free(by_off);
    return 0;
}

static int parse(cursor *c, gguf_file *f)
{
    char magic[4];
    if (read_bytes(c, magic, 4, "magic"))
        return -1;
    if (memcmp(magic, "GGUF", 4) != 0)
        return fail_at(c, 0, "bad magic %02x %02x %02x %02x (not a GGUF file; expected \"GGUF\")",
                       (unsigned char)magic[0], (unsigned char)magic[1], (unsigned char)magic[2],
                       (unsigned char)magic[3]);
    if (read_u32(c, &f->version, "version"))
        return -1;
    if (f->version == 1)
        return fail_at(c, 4, "GGUF version 1 is not supported (versions 2 and 3 are)");
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xFFFF) == 0)
            return fail_at(c, 4, "version field 0x%08" PRIx32 " looks big-endian; only little-endian GGUF is supported",
                           f->version);
        return fail_at(c, 4, "unsupported GGUF version %" PRIu32 " (versions 2 and 3 are supported)", f->version);
    }
    if (read_u64(c, &f->n_tensors, "tensor count") || read_u64(c, &f->n_kv, "metadata count"))
        return -1;
    /* A tensor info takes at least 25 bytes (1-byte name, no dims). */
    if (f->n_tensors > remaining(c) / 25)
        return fail_at(c, 8, "tensor count %" PRIu64 " cannot fit in the %" PRIu64 " bytes that remain", f->n_tensors,
                       remaining(c));
    if (parse_kvs(c, f))
        return -1;

    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    f->tensors_by_name = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *f->tensors_by_name);
    if (!f->tensors || !f->tensors_by_name)
        return fail_at(c, c->pos, "out of memory for %" PRIu64 " tensors", f->n_tensors);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if (parse_tensor_info(c, &f->tensors[i], i))
            return -1;
        f->tensors_by_name[i] = &f->tensors[i];
    }
    qsort(f->tensors_by_name, f->n_tensors, sizeof *f->tensors_by_name, cmp_tensor_name);
    for (uint64_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors_by_name[i - 1]->name, f->tensors_by_name[i]->name) == 0)
            return fail_at(c, f->tensors_by_name[i]->info_offset, "duplicate tensor name %s",
                           f->tensors_by_name[i]->name);
    return place_tensors(c, f);
}

static gguf_file *open_common(const uint8_t *base, uint64_t size, const char *name, int mapped, smq_err *err)
{
    gguf_file *f = calloc(1, sizeof *f);
    char *path = strdup(name);
    if (!f || !path) {
        free(f);
        free(path);
        smq_err_set(err, "%s: out of memory", name);
        return NULL;
    }
    f->path = path;
    f->base = base;
    f->size = size;
    cursor c = { .base = base, .size = size, .pos = 0, .name = name, .err = err };
    if (parse(&c, f)) {
        f->mapped = 0; /* the caller unmaps on failure */
        gguf_close(&f);
        return NULL;
    }
    f->mapped = mapped;
    return f;
}

gguf_file *gguf_open_buffer(const void *buf, size_t size, const char *name, smq_err *err)
{
    return open_common(buf, size, name, 0, err);
}

gguf_file *gguf_open(const char *path, smq_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        smq_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        smq_err_set(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size < 24) {
        smq_err_set(err, "%s: file truncated: %lld bytes, a GGUF header needs 24", path, (long long)st.st_size);
        close(fd);
        return NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        smq_err_set(err, "%s: cannot map %lld bytes: %s", path, (long long)st.st_size, strerror(errno));
        return NULL;
    }
    gguf_file *f = open_common(map, (uint64_t)st.st_size, path, 1, err);
    if (!f)
        munmap(map, (size_t)st.st_size);
    return f;
}

void gguf_close(gguf_file **self)
{
    gguf_file *f = *self;
    if (!f)
        return;
    if (f->kv) {
        for (uint64_t i = 0; i < f->n_kv; i++) {
            free(f->kv[i].key);
            value_free(&f->kv[i].value);
        }
    }
    free(f->kv);
    free(f->kv_by_key);
    free(f->tensors);
    free(f->tensors_by_name);
    if (f->mapped)
        munmap((void *)f->base, f->size);
    free(f->path);
    free(f);
    *self = NULL;
}

const gguf_kv *gguf_find_kv(const gguf_file *self, const char *key)
{
    uint64_t lo = 0, hi = self->n_kv;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int r = strcmp(self->kv_by_key[mid]->key, key);
        if (r == 0)
            return self->kv_by_key[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *self, const char *name)
{
    uint64_t lo = 0, hi = self->n_tensors;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int r = strcmp(self->tensors_by_name[mid]->name, name);
        if (r == 0)
            return self->tensors_by_name[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int is_unsigned(gguf_type t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64 ||
           t == GGUF_TYPE_BOOL;
}

static int is_signed(gguf_type t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

int gguf_value_u64(const gguf_value *v, uint64_t *out)
{
    if (is_unsigned(v->type)) {
        *out = v->v.u;
        return 0;
    }
    if (is_signed(v->type) && v->v.i >= 0) {
        *out = (uint64_t)v->v.i;
        return 0;
    }
    return -1;
}

int gguf_value_i64(const gguf_value *v, int64_t *out)
{
    if (is_signed(v->type)) {
        *out = v->v.i;
        return 0;
    }
    if (is_unsigned(v->type) && v->v.u <= INT64_MAX) {
        *out = (int64_t)v->v.u;
        return 0;
    }
    return -1;
}

int gguf_value_f64(const gguf_value *v, double *out)
{
    if (v->type == GGUF_TYPE_FLOAT32 || v->type == GGUF_TYPE_FLOAT64) {
        *out = v->v.f;
        return 0;
    }
    return -1;
}

/* Finds key or fails naming it. */
static const gguf_value *lookup(const gguf_file *self, const char *key, smq_err *err)
{
    const gguf_kv *kv = gguf_find_kv(self, key);
    if (!kv) {
        smq_err_set(err, "%s: metadata key %s is missing", self->path, key);
        return NULL;
    }
    return &kv->value;
}

static int wrong_type(const gguf_file *self, const char *key, const gguf_value *v, const char *expected, smq_err *err)
{
    if (is_unsigned(v->type) || is_signed(v->type))
        return smq_err_set(err, "%s: metadata key %s: value %s %lld does not fit %s", self->path, key,
                           gguf_type_name(v->type), is_signed(v->type) ? (long long)v->v.i : (long long)v->v.u,
                           expected);
    return smq_err_set(err, "%s: metadata key %s is a %s, expected %s", self->path, key, gguf_type_name(v->type),
                       expected);
}

int gguf_get_u64(const gguf_file *self, const char *key, uint64_t *out, smq_err *err)
{
    const gguf_value *v = lookup(self, key, err);
    if (!v)
        return -1;
    if (v->type == GGUF_TYPE_BOOL || gguf_value_u64(v, out))
        return wrong_type(self, key, v, "an unsigned integer", err);
    return 0;
}

int gguf_get_u32(const gguf_file *self, const char *key, uint32_t *out, smq_err *err)
{
    const gguf_value *v = lookup(self, key, err);
    uint64_t x;
    if (!v)
        return -1;
    if (v->type == GGUF_TYPE_BOOL || gguf_value_u64(v, &x) || x > UINT32_MAX)
        return wrong_type(self, key, v, "a 32-bit unsigned integer", err);
    *out = (uint32_t)x;
    return 0;
}

int gguf_get_i64(const gguf_file *self, const char *key, int64_t *out, smq_err *err)
{
    const gguf_value *v = lookup(self, key, err);
    if (!v)
        return -1;
    if (v->type == GGUF_TYPE_BOOL || gguf_value_i64(v, out))
        return wrong_type(self, key, v, "a signed 64-bit integer", err);
    return 0;
}

int gguf_get_f64(const gguf_file *self, const char *key, double *out, smq_err *err)
{
    const gguf_value *v = lookup(self, key, err);
    if (!v)
        return -1;
    if (gguf_value_f64(v, out))
        return wrong_type(self, key, v, "a float", err);
    return 0;
}

int gguf_get_f32(const gguf_file *self, const char *key, float *out, smq_err *err)
{
    double d = 0;
    if (gguf_get_f64(self, key, &d, err))
        return -1;
    *out = (float)d;
    return 0;
}

int gguf_get_bool(const gguf_file *self, const char *key, int *out, smq_err *err)
{
    const gguf_value *v = lookup(self, key, err);
    if (!v)
        return -1;
    if (v->type != GGUF_TYPE_BOOL)
        return wrong_type(self, key, v, "a bool", err);
    *out = (int)v->v.u;
    return 0;
}

int gguf_get_str(const gguf_file *self, const char *key, gguf_str *out, smq_err *err)
{
    const gguf_value *v = lookup(self, key, err);
    if (!v)
        return -1;
    if (v->type != GGUF_TYPE_STRING)
        return wrong_type(self, key, v, "a string", err);
    *out = v->v.str;
    return 0;
}

int gguf_get_arr(const gguf_file *self, const char *key, gguf_type elem_type, const gguf_array **out, smq_err *err)
{
    const gguf_value *v = lookup(self, key, err);
    if (!v)
        return -1;
    if (v->type != GGUF_TYPE_ARRAY)
        return wrong_type(self, key, v, "an array", err);
    if (elem_type != GGUF_TYPE_COUNT && v->v.arr.elem_type != elem_type)
        return smq_err_set(err, "%s: metadata key %s is an array of %s, expected an array of %s", self->path, key,
                           gguf_type_name(v->v.arr.elem_type), gguf_type_name(elem_type));
    *out = &v->v.arr;
    return 0;
}

int gguf_get_u32_or(const gguf_file *self, const char *key, uint32_t def, uint32_t *out, smq_err *err)
{
    if (!gguf_find_kv(self, key)) {
        *out = def;
        return 0;
    }
    return gguf_get_u32(self, key, out, err);
}

int gguf_get_f32_or(const gguf_file *self, const char *key, float def, float *out, smq_err *err)
{
    if (!gguf_find_kv(self, key)) {
        *out = def;
        return 0;
    }
    return gguf_get_f32(self, key, out, err);
}

/* Element i of a scalar array as a gguf_value, or -1 when out of range or
 * not a scalar array. */
static int arr_elem(const gguf_array *a, uint64_t i, gguf_value *v)
{
    size_t n = gguf_type_size(a->elem_type);
    if (!n || i >= a->count)
        return -1;
    scalar_decode(a->elem_type, a->data + i * n, v);
    return 0;
}

int gguf_arr_u64(const gguf_array *a, uint64_t i, uint64_t *out)
{
    gguf_value v;
    return arr_elem(a, i, &v) ? -1 : gguf_value_u64(&v, out);
}

int gguf_arr_i64(const gguf_array *a, uint64_t i, int64_t *out)
{
    gguf_value v;
    return arr_elem(a, i, &v) ? -1 : gguf_value_i64(&v, out);
}

int gguf_arr_f64(const gguf_array *a, uint64_t i, double *out)
{
    gguf_value v;
    return arr_elem(a, i, &v) ? -1 : gguf_value_f64(&v, out);
}
