/* gguf_writer.c - GGUF v3 output, layout as llama.cpp writes it: header,
 * metadata, tensor infos, zero padding to the alignment, then each tensor's
 * data padded to the alignment, offsets being the running sum. */
#include "gguf_writer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    uint8_t *data;
    uint64_t len, cap;
    int oom;
} buf;

static void buf_put(buf *b, const void *p, uint64_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        uint64_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u32(buf *b, uint32_t v)
{
    buf_put(b, &v, 4);
}

static void put_u64(buf *b, uint64_t v)
{
    buf_put(b, &v, 8);
}

static void put_str(buf *b, const char *s, uint64_t n)
{
    put_u64(b, n);
    buf_put(b, s, n);
}

typedef struct wtensor {
    char name[GGUF_MAX_NAME + 1];
    qtype type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t n_bytes;
    gguf_fill_fn fill;
    void *ctx;
} wtensor;

struct gguf_writer {
    buf kv; /* encoded key-value pairs */
    uint64_t n_kv;
    char **keys; /* for the duplicate check */
    uint32_t alignment;
    wtensor *tensors;
    uint64_t n_tensors;
};

gguf_writer *gguf_writer_new(void)
{
    gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_destroy(gguf_writer **self)
{
    gguf_writer *w = *self;
    if (!w)
        return;
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    free(w->kv.data);
    free(w->tensors);
    free(w);
    *self = NULL;
}

/* Encodes a value's payload (not its type tag, which the caller wrote). */
static void put_value(buf *b, const gguf_value *v)
{
    switch (v->type) {
    case GGUF_TYPE_STRING:
        put_str(b, v->v.str.ptr, v->v.str.len);
        break;
    case GGUF_TYPE_ARRAY: {
        const gguf_array *a = &v->v.arr;
        put_u32(b, (uint32_t)a->elem_type);
        put_u64(b, a->count);
        if (a->elem_type == GGUF_TYPE_STRING) {
            for (uint64_t i = 0; i < a->count; i++)
                put_str(b, a->strs[i].ptr, a->strs[i].len);
        } else if (a->elem_type == GGUF_TYPE_ARRAY) {
            for (uint64_t i = 0; i < a->count; i++)
                put_value(b, &a->arrays[i]);
        } else {
            buf_put(b, a->data, a->count * gguf_type_size(a->elem_type));
        }
        break;
    }
    default: {
        /* Scalars: narrow the decoded value back to the stored width. */
        uint8_t raw[8];
        size_t n = gguf_type_size(v->type);
        if (v->type == GGUF_TYPE_FLOAT32) {
            float f = (float)v->v.f;
            memcpy(raw, &f, 4);
        } else if (v->type == GGUF_TYPE_FLOAT64) {
            memcpy(raw, &v->v.f, 8);
        } else if (v->type == GGUF_TYPE_INT8 || v->type == GGUF_TYPE_INT16 || v->type == GGUF_TYPE_INT32 ||
                   v->type == GGUF_TYPE_INT64) {
            memcpy(raw, &v->v.i, 8); /* little-endian: the low bytes come first */
        } else {
            memcpy(raw, &v->v.u, 8);
        }
        buf_put(b, raw, n);
        break;
    }
    }
}

int gguf_writer_set_value(gguf_writer *self, const char *key, const gguf_value *v, smq_err *err)
{
    for (uint64_t i = 0; i < self->n_kv; i++)
        if (strcmp(self->keys[i], key) == 0)
            return smq_err_set(err, "gguf writer: metadata key %s set twice", key);
    if ((unsigned)v->type >= GGUF_TYPE_COUNT)
        return smq_err_set(err, "gguf writer: key %s: invalid value type %d", key, (int)v->type);
    char **keys = realloc(self->keys, (self->n_kv + 1) * sizeof *keys);
    if (!keys)
        return smq_err_set(err, "gguf writer: out of memory");
    self->keys = keys;
    if (!(keys[self->n_kv] = strdup(key)))
        return smq_err_set(err, "gguf writer: out of memory");
    self->n_kv++;
    put_str(&self->kv, key, strlen(key));
    put_u32(&self->kv, (uint32_t)v->type);
    put_value(&self->kv, v);
    if (self->kv.oom)
        return smq_err_set(err, "gguf writer: out of memory encoding key %s", key);
    if (strcmp(key, "general.alignment") == 0) {
        uint64_t a;
        if (gguf_value_u64(v, &a) || a == 0 || a > (1u << 30) || (a & (a - 1)))
            return smq_err_set(err, "gguf writer: general.alignment must be a power of two up to 2^30");
        self->alignment = (uint32_t)a;
    }
    return 0;
}

int gguf_writer_set_u32(gguf_writer *self, const char *key, uint32_t v, smq_err *err)
{
    gguf_value val = { .type = GGUF_TYPE_UINT32, .v.u = v };
    return gguf_writer_set_value(self, key, &val, err);
}

int gguf_writer_set_u64(gguf_writer *self, const char *key, uint64_t v, smq_err *err)
{
    gguf_value val = { .type = GGUF_TYPE_UINT64, .v.u = v };
    return gguf_writer_set_value(self, key, &val, err);
}

int gguf_writer_set_i32(gguf_writer *self, const char *key, int32_t v, smq_err *err)
{
    gguf_value val = { .type = GGUF_TYPE_INT32, .v.i = v };
    return gguf_writer_set_value(self, key, &val, err);
}

int gguf_writer_set_f32(gguf_writer *self, const char *key, float v, smq_err *err)
{
    gguf_value val = { .type = GGUF_TYPE_FLOAT32, .v.f = v };
    return gguf_writer_set_value(self, key, &val, err);
}

int gguf_writer_set_bool(gguf_writer *self, const char *key, int v, smq_err *err)
{
    gguf_value val = { .type = GGUF_TYPE_BOOL, .v.u = v ? 1 : 0 };
    return gguf_writer_set_value(self, key, &val, err);
}

int gguf_writer_set_str(gguf_writer *self, const char *key, const char *v, smq_err *err)
{
    gguf_value val = { .type = GGUF_TYPE_STRING, .v.str = { v, strlen(v) } };
    return gguf_writer_set_value(self, key, &val, err);
}

int gguf_writer_add_tensor(gguf_writer *self, const char *name, qtype type, uint32_t n_dims, const uint64_t *ne,
                           gguf_fill_fn fill, void *ctx, smq_err *err)
{
    size_t len = strlen(name);
    if (len == 0 || len > GGUF_MAX_NAME)
        return smq_err_set(err, "gguf writer: tensor name \"%s\" must have 1 to %d bytes", name, GGUF_MAX_NAME);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return smq_err_set(err, "gguf writer: tensor %s: %" PRIu32 " dimensions", name, n_dims);
    for (uint64_t i = 0; i < self->n_tensors; i++)
        if (strcmp(self->tensors[i].name, name) == 0)
            return smq_err_set(err, "gguf writer: tensor %s added twice", name);
    wtensor t = { .type = type, .n_dims = n_dims, .fill = fill, .ctx = ctx };
    memcpy(t.name, name, len + 1);
    uint64_t rows = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (d > 0) {
            if (t.ne[d] && rows > UINT64_MAX / t.ne[d])
                return smq_err_set(err, "gguf writer: tensor %s: size overflows", name);
            rows *= t.ne[d];
        }
    }
    uint64_t row_bytes;
    if (qtype_row_bytes(type, t.ne[0], &row_bytes) || (rows && row_bytes > UINT64_MAX / rows))
        return smq_err_set(err, "gguf writer: tensor %s: %" PRIu64 " elements per row do not fit type %s", name,
                           t.ne[0], qtype_name(type));
    t.n_bytes = row_bytes * rows;
    wtensor *ts = realloc(self->tensors, (self->n_tensors + 1) * sizeof *ts);
    if (!ts)
        return smq_err_set(err, "gguf writer: out of memory");
    ts[self->n_tensors++] = t;
    self->tensors = ts;
    return 0;
}

static uint64_t pad_to(uint64_t x, uint32_t a)
{
    return (x + a - 1) / a * a;
}

int gguf_writer_write(gguf_writer *self, const char *path, smq_err *err)
{
    buf head = { 0 };
    buf_put(&head, "GGUF", 4);
    put_u32(&head, 3);
    put_u64(&head, self->n_tensors);
    put_u64(&head, self->n_kv);
    buf_put(&head, self->kv.data, self->kv.len);
    uint64_t offset = 0, max_bytes = 0;
    for (uint64_t i = 0; i < self->n_tensors; i++) {
        const wtensor *t = &self->tensors[i];
        put_str(&head, t->name, strlen(t->name));
        put_u32(&head, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_u64(&head, t->ne[d]);
        put_u32(&head, (uint32_t)t->type);
        put_u64(&head, offset);
        offset = pad_to(offset + t->n_bytes, self->alignment);
        if (t->n_bytes > max_bytes)
            max_bytes = t->n_bytes;
    }
    static const uint8_t zeros[64];
    while (head.len % self->alignment)
        buf_put(&head, zeros, 1);
    if (head.oom) {
        free(head.data);
        return smq_err_set(err, "%s: out of memory building the header", path);
    }

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 8);
    uint8_t *data = malloc(max_bytes + self->alignment);
    if (!tmp || !data) {
        free(head.data);
        free(tmp);
        free(data);
        return smq_err_set(err, "%s: out of memory for a %" PRIu64 "-byte tensor", path, max_bytes);
    }
    snprintf(tmp, plen + 8, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int rc = 0;
    if (!f) {
        rc = smq_err_set(err, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    if (fwrite(head.data, 1, head.len, f) != head.len) {
        rc = smq_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
        goto out;
    }
    for (uint64_t i = 0; i < self->n_tensors; i++) {
        const wtensor *t = &self->tensors[i];
        uint64_t padded = pad_to(t->n_bytes, self->alignment);
        memset(data + t->n_bytes, 0, padded - t->n_bytes);
        if (t->fill(t->ctx, data, t->n_bytes, err)) {
            rc = smq_err_prefix(err, "%s: tensor %s", path, t->name);
            goto out;
        }
        if (fwrite(data, 1, padded, f) != padded) {
            rc = smq_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
            goto out;
        }
    }
    if (fclose(f) != 0) {
        f = NULL;
        rc = smq_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0)
        rc = smq_err_set(err, "%s: cannot rename from %s: %s", path, tmp, strerror(errno));
out:
    if (f)
        fclose(f);
    if (rc)
        remove(tmp);
    free(head.data);
    free(tmp);
    free(data);
    return rc;
}
