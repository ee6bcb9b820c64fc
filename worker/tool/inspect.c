/* inspect.c - `smolmq inspect FILE.gguf [--json]`: what a GGUF holds.
 *
 * Text for people, JSON for programs and tests. Arrays longer than
 * INSPECT_ARRAY_MAX (the vocabulary, the merges) are summarized by element
 * type and count; everything else is printed in full. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "gguf.h"
#include "json_out.h"
#include "tool.h"

#define INSPECT_ARRAY_MAX 64

static const char *usage_line = "inspect FILE.gguf [--json]";

/* ---- JSON ---- */

static void json_value(json_out *j, const gguf_value *v)
{
    int64_t i;
    uint64_t u;
    switch (v->type) {
    case GGUF_TYPE_STRING:
        json_strn(j, v->v.str.ptr, v->v.str.len);
        return;
    case GGUF_TYPE_BOOL:
        json_bool(j, (int)v->v.u);
        return;
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64:
        json_f64(j, v->v.f);
        return;
    case GGUF_TYPE_ARRAY:
        break;
    default:
        if (!gguf_value_u64(v, &u))
            json_u64(j, u);
        else if (!gguf_value_i64(v, &i))
            json_i64(j, i);
        return;
    }
    const gguf_array *a = &v->v.arr;
    if (a->count > INSPECT_ARRAY_MAX) {
        json_obj_begin(j);
        json_key(j, "array_of");
        json_str(j, gguf_type_name(a->elem_type));
        json_key(j, "count");
        json_u64(j, a->count);
        json_obj_end(j);
        return;
    }
    json_arr_begin(j);
    for (uint64_t k = 0; k < a->count; k++) {
        gguf_value e = { .type = a->elem_type };
        if (a->elem_type == GGUF_TYPE_STRING) {
            e.v.str = a->strs[k];
        } else if (a->elem_type == GGUF_TYPE_ARRAY) {
            e = a->arrays[k];
        } else if (a->elem_type == GGUF_TYPE_FLOAT32 || a->elem_type == GGUF_TYPE_FLOAT64) {
            gguf_arr_f64(a, k, &e.v.f);
        } else if (gguf_arr_u64(a, k, &e.v.u)) {
            e.type = GGUF_TYPE_INT64;
            gguf_arr_i64(a, k, &e.v.i);
        }
        json_value(j, &e);
    }
    json_arr_end(j);
}

typedef struct type_total {
    uint64_t tensors, bytes, elements;
} type_total;

static void totals_by_type(const gguf_file *f, type_total *t, type_total *all)
{
    memset(t, 0, sizeof(type_total) * QTYPE_COUNT);
    memset(all, 0, sizeof *all);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *x = &f->tensors[i];
        t[x->type].tensors++, t[x->type].bytes += x->n_bytes, t[x->type].elements += x->n_elements;
        all->tensors++, all->bytes += x->n_bytes, all->elements += x->n_elements;
    }
}

static void print_json(const gguf_file *f)
{
    json_out j;
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_key(&j, "file");
    json_str(&j, f->path);
    json_key(&j, "size");
    json_u64(&j, f->size);
    json_key(&j, "version");
    json_u64(&j, f->version);
    json_key(&j, "alignment");
    json_u64(&j, f->alignment);
    json_key(&j, "data_offset");
    json_u64(&j, f->data_offset);

    json_key(&j, "metadata");
    json_obj_begin(&j);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        json_key(&j, f->kv[i].key);
        json_value(&j, &f->kv[i].value);
    }
    json_obj_end(&j);

    json_key(&j, "tensors");
    json_arr_begin(&j);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        json_obj_begin(&j);
        json_key(&j, "name");
        json_str(&j, t->name);
        json_key(&j, "type");
        json_str(&j, qtype_name(t->type));
        json_key(&j, "ne");
        json_arr_begin(&j);
        for (uint32_t d = 0; d < t->n_dims; d++)
            json_u64(&j, t->ne[d]);
        json_arr_end(&j);
        json_key(&j, "n_bytes");
        json_u64(&j, t->n_bytes);
        json_key(&j, "data_offset");
        json_u64(&j, f->data_offset + t->offset);
        json_obj_end(&j);
    }
    json_arr_end(&j);

    type_total by[QTYPE_COUNT], all;
    totals_by_type(f, by, &all);
    json_key(&j, "types");
    json_obj_begin(&j);
    for (int t = 0; t < QTYPE_COUNT; t++) {
        if (!by[t].tensors)
            continue;
        json_key(&j, qtype_name((qtype)t));
        json_obj_begin(&j);
        json_key(&j, "tensors");
        json_u64(&j, by[t].tensors);
        json_key(&j, "elements");
        json_u64(&j, by[t].elements);
        json_key(&j, "bytes");
        json_u64(&j, by[t].bytes);
        json_obj_end(&j);
    }
    json_obj_end(&j);
    json_key(&j, "totals");
    json_obj_begin(&j);
    json_key(&j, "tensors");
    json_u64(&j, all.tensors);
    json_key(&j, "elements");
    json_u64(&j, all.elements);
    json_key(&j, "bytes");
    json_u64(&j, all.bytes);
    json_obj_end(&j);
    json_obj_end(&j);
}

/* ---- text ---- */

/* One value on one line: short strings in full, long ones by length. */
static void print_value(const gguf_value *v)
{
    uint64_t u;
    int64_t i;
    switch (v->type) {
    case GGUF_TYPE_STRING:
        if (v->v.str.len <= 80 && !memchr(v->v.str.ptr, '\n', v->v.str.len))
            printf("\"%.*s\"", (int)v->v.str.len, v->v.str.ptr);
        else
            printf("<string, %" PRIu64 " bytes>", v->v.str.len);
        return;
    case GGUF_TYPE_BOOL:
        printf("%s", v->v.u ? "true" : "false");
        return;
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64:
        printf("%g", v->v.f);
        return;
    case GGUF_TYPE_ARRAY:
        printf("<array of %" PRIu64 " %s>", v->v.arr.count, gguf_type_name(v->v.arr.elem_type));
        return;
    default:
        if (!gguf_value_u64(v, &u))
            printf("%" PRIu64, u);
        else if (!gguf_value_i64(v, &i))
            printf("%" PRId64, i);
    }
}

/* The token string for an id, for "bos 128000 <|begin_of_text|>". */
static void print_token(const gguf_file *f, const char *key)
{
    uint32_t id;
    const gguf_array *tokens;
    if (!gguf_find_kv(f, key) || gguf_get_u32(f, key, &id, NULL))
        return;
    printf("  %-6s %" PRIu32, strrchr(key, '.') + 1, id);
    if (!gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens, NULL) && id < tokens->count)
        printf(" %.*s", (int)tokens->strs[id].len, tokens->strs[id].ptr);
    printf("\n");
}

static void print_text(const gguf_file *f)
{
    gguf_str arch = { "", 0 }, s;
    gguf_get_str(f, "general.architecture", &arch, NULL);
    printf("file:          %s (%" PRIu64 " bytes, GGUF v%" PRIu32 ", alignment %" PRIu32 ", data at 0x%" PRIx64 ")\n",
           f->path, f->size, f->version, f->alignment, f->data_offset);
    printf("architecture:  %.*s\n", (int)arch.len, arch.ptr);
    if (!gguf_get_str(f, "general.name", &s, NULL))
        printf("name:          %.*s\n", (int)s.len, s.ptr);

    printf("\nhyper-parameters:\n");
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const char *k = f->kv[i].key;
        if (arch.len && !strncmp(k, arch.ptr, arch.len) && k[arch.len] == '.') {
            printf("  %-40s ", k + arch.len + 1);
            print_value(&f->kv[i].value);
            printf("\n");
        }
    }

    printf("\ntokenizer:\n");
    const gguf_array *a;
    if (!gguf_get_str(f, "tokenizer.ggml.model", &s, NULL)) {
        printf("  model  %.*s", (int)s.len, s.ptr);
        if (!gguf_get_str(f, "tokenizer.ggml.pre", &s, NULL))
            printf(", pre-tokenizer %.*s", (int)s.len, s.ptr);
        printf("\n");
        if (!gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_COUNT, &a, NULL))
            printf("  tokens %" PRIu64 "\n", a->count);
        if (!gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_COUNT, &a, NULL))
            printf("  merges %" PRIu64 "\n", a->count);
        print_token(f, "tokenizer.ggml.bos_token_id");
        print_token(f, "tokenizer.ggml.eos_token_id");
        print_token(f, "tokenizer.ggml.padding_token_id");
    } else {
        printf("  none\n");
    }
    if (!gguf_get_str(f, "tokenizer.chat_template", &s, NULL))
        printf("chat template: present (%" PRIu64 " bytes)\n", s.len);
    else
        printf("chat template: absent\n");

    printf("\nother metadata:\n");
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const char *k = f->kv[i].key;
        if ((arch.len && !strncmp(k, arch.ptr, arch.len) && k[arch.len] == '.') || !strncmp(k, "tokenizer.", 10))
            continue;
        printf("  %-40s ", k);
        print_value(&f->kv[i].value);
        printf("\n");
    }

    printf("\n  %-32s %-6s %-22s %12s\n", "tensor", "type", "shape", "bytes");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char shape[64];
        int n = 0;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, d ? " x %" PRIu64 : "%" PRIu64, t->ne[d]);
        printf("  %-32s %-6s %-22s %12" PRIu64 "\n", t->name, qtype_name(t->type), shape, t->n_bytes);
    }

    type_total by[QTYPE_COUNT], all;
    totals_by_type(f, by, &all);
    printf("\ntotals by type:\n");
    for (int t = 0; t < QTYPE_COUNT; t++)
        if (by[t].tensors)
            printf("  %-6s %4" PRIu64 " tensors %14" PRIu64 " elements %14" PRIu64 " bytes\n", qtype_name((qtype)t),
                   by[t].tensors, by[t].elements, by[t].bytes);
    printf("  %-6s %4" PRIu64 " tensors %14" PRIu64 " elements %14" PRIu64 " bytes (%.2f GiB)\n", "all", all.tensors,
           all.elements, all.bytes, (double)all.bytes / (1 << 30));
}

int tool_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int as_json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            as_json = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            return tool_usage(usage_line, "unknown option %s", argv[i]);
        else if (!path)
            path = argv[i];
        else
            return tool_usage(usage_line, "more than one file given (%s)", argv[i]);
    }
    if (!path)
        return tool_usage(usage_line, "no file given");
    smq_err err;
    gguf_file *f = gguf_open(path, &err);
    if (!f)
        return tool_fail("inspect", "%s", err.msg);
    if (as_json)
        print_json(f);
    else
        print_text(f);
    gguf_close(&f);
    return 0;
}
