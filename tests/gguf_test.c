/* gguf_test.c - the GGUF reader and writer: every metadata type, every class
 * of malformed file with its specific message, and the real test files. */
#include <inttypes.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "test.h"

/* ---- a byte builder for hand-made (and hand-broken) files ---- */

typedef struct tb {
    uint8_t *d;
    size_t n, cap;
} tb;

static void tb_bytes(tb *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void tb_u8(tb *b, uint8_t v)
{
    tb_bytes(b, &v, 1);
}
static void tb_u16(tb *b, uint16_t v)
{
    tb_bytes(b, &v, 2);
}
static void tb_u32(tb *b, uint32_t v)
{
    tb_bytes(b, &v, 4);
}
static void tb_u64(tb *b, uint64_t v)
{
    tb_bytes(b, &v, 8);
}
static void tb_f32(tb *b, float v)
{
    tb_bytes(b, &v, 4);
}
static void tb_f64(tb *b, double v)
{
    tb_bytes(b, &v, 8);
}
static void tb_str(tb *b, const char *s)
{
    tb_u64(b, strlen(s));
    tb_bytes(b, s, strlen(s));
}
static void tb_pad(tb *b, size_t align)
{
    while (b->n % align)
        tb_u8(b, 0);
}
static void tb_header(tb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    tb_bytes(b, "GGUF", 4);
    tb_u32(b, version);
    tb_u64(b, n_tensors);
    tb_u64(b, n_kv);
}
static void tb_kv_u32(tb *b, const char *key, uint32_t v)
{
    tb_str(b, key);
    tb_u32(b, GGUF_TYPE_UINT32);
    tb_u32(b, v);
}
/* A tensor info with two dims. */
static void tb_tensor2(tb *b, const char *name, uint64_t ne0, uint64_t ne1, uint32_t type, uint64_t offset)
{
    tb_str(b, name);
    tb_u32(b, 2);
    tb_u64(b, ne0);
    tb_u64(b, ne1);
    tb_u32(b, type);
    tb_u64(b, offset);
}

/* Opens the built bytes; returns the file or NULL with the message in err. */
static gguf_file *open_tb(tb *b, smq_err *err)
{
    err->msg[0] = 0;
    return gguf_open_buffer(b->d, b->n, "test.gguf", err);
}

/* Expects the bytes to be rejected with a message containing `want`. */
static void expect_error(tb *b, const char *want, int line)
{
    smq_err err;
    gguf_file *f = open_tb(b, &err);
    if (f) {
        test_fail(__FILE__, line, "accepted a file that should fail with \"%s\"", want);
        gguf_close(&f);
    } else {
        if (!strstr(err.msg, want))
            test_fail(__FILE__, line, "error \"%s\" does not contain \"%s\"", err.msg, want);
        if (strncmp(err.msg, "test.gguf: ", 11) != 0)
            test_fail(__FILE__, line, "error \"%s\" does not start with the file name", err.msg);
    }
    free(b->d);
    memset(b, 0, sizeof *b);
}
#define EXPECT_ERROR(b, want) expect_error(b, want, __LINE__)

/* A valid file with one 256x2 F32 tensor "t" and one KV: the base most of the
 * malformed cases start from. */
static void build_valid(tb *b)
{
    tb_header(b, 3, 1, 1);
    tb_kv_u32(b, "general.x", 7);
    tb_tensor2(b, "t", 256, 2, QTYPE_F32, 0);
    tb_pad(b, 32);
    for (int i = 0; i < 512; i++)
        tb_f32(b, (float)i);
}

/* ---- tests ---- */

static void test_every_metadata_type(void)
{
    tb b = { 0 };
    tb_header(&b, 3, 0, 19);
    tb_str(&b, "k.u8"), tb_u32(&b, GGUF_TYPE_UINT8), tb_u8(&b, 200);
    tb_str(&b, "k.i8"), tb_u32(&b, GGUF_TYPE_INT8), tb_u8(&b, (uint8_t)-100);
    tb_str(&b, "k.u16"), tb_u32(&b, GGUF_TYPE_UINT16), tb_u16(&b, 60000);
    tb_str(&b, "k.i16"), tb_u32(&b, GGUF_TYPE_INT16), tb_u16(&b, (uint16_t)-30000);
    tb_str(&b, "k.u32"), tb_u32(&b, GGUF_TYPE_UINT32), tb_u32(&b, 4000000000u);
    tb_str(&b, "k.i32"), tb_u32(&b, GGUF_TYPE_INT32), tb_u32(&b, (uint32_t)-2000000000);
    tb_str(&b, "k.f32"), tb_u32(&b, GGUF_TYPE_FLOAT32), tb_f32(&b, 1e-6f);
    tb_str(&b, "k.bool"), tb_u32(&b, GGUF_TYPE_BOOL), tb_u8(&b, 1);
    tb_str(&b, "k.str"), tb_u32(&b, GGUF_TYPE_STRING), tb_str(&b, "héllo");
    tb_str(&b, "k.u64"), tb_u32(&b, GGUF_TYPE_UINT64), tb_u64(&b, 1ull << 40);
    tb_str(&b, "k.i64"), tb_u32(&b, GGUF_TYPE_INT64), tb_u64(&b, (uint64_t)-5);
    tb_str(&b, "k.f64"), tb_u32(&b, GGUF_TYPE_FLOAT64), tb_f64(&b, 5e6);
    tb_str(&b, "k.small_u64"), tb_u32(&b, GGUF_TYPE_UINT64), tb_u64(&b, 65536);
    /* arrays: of i32, of f32, of strings, of bools, nested arrays of u16 and of strings */
    tb_str(&b, "a.i32"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_INT32), tb_u64(&b, 3);
    tb_u32(&b, 1), tb_u32(&b, (uint32_t)-2), tb_u32(&b, 3);
    tb_str(&b, "a.f32"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_FLOAT32), tb_u64(&b, 2);
    tb_f32(&b, 0.5f), tb_f32(&b, -2.0f);
    tb_str(&b, "a.str"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_STRING), tb_u64(&b, 3);
    tb_str(&b, "Ġthe"), tb_str(&b, ""), tb_str(&b, "<|im_end|>");
    tb_str(&b, "a.bool"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_BOOL), tb_u64(&b, 2);
    tb_u8(&b, 0), tb_u8(&b, 1);
    tb_str(&b, "a.nested"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u64(&b, 2);
    tb_u32(&b, GGUF_TYPE_UINT16), tb_u64(&b, 2), tb_u16(&b, 11), tb_u16(&b, 12);
    tb_u32(&b, GGUF_TYPE_STRING), tb_u64(&b, 1), tb_str(&b, "inner");
    tb_str(&b, "a.empty"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_STRING), tb_u64(&b, 0);

    smq_err err;
    gguf_file *f = open_tb(&b, &err);
    CHECK_MSG(f, "open failed: %s", err.msg);
    if (!f) {
        free(b.d);
        return;
    }
    CHECK_INT(f->version, 3);
    CHECK_INT(f->n_kv, 19);
    uint64_t u64;
    int64_t i64;
    uint32_t u32;
    double f64;
    float f32;
    int bl;
    gguf_str s;
    CHECK(gguf_get_u32(f, "k.u8", &u32, &err) == 0 && u32 == 200);
    CHECK(gguf_get_i64(f, "k.i8", &i64, &err) == 0 && i64 == -100);
    CHECK(gguf_get_u32(f, "k.u16", &u32, &err) == 0 && u32 == 60000);
    CHECK(gguf_get_i64(f, "k.i16", &i64, &err) == 0 && i64 == -30000);
    CHECK(gguf_get_u32(f, "k.u32", &u32, &err) == 0 && u32 == 4000000000u);
    CHECK(gguf_get_i64(f, "k.i32", &i64, &err) == 0 && i64 == -2000000000);
    CHECK(gguf_get_f32(f, "k.f32", &f32, &err) == 0 && f32 == 1e-6f);
    CHECK(gguf_get_bool(f, "k.bool", &bl, &err) == 0 && bl == 1);
    CHECK(gguf_get_str(f, "k.str", &s, &err) == 0 && s.len == 6 && memcmp(s.ptr, "héllo", 6) == 0);
    CHECK(gguf_get_u64(f, "k.u64", &u64, &err) == 0 && u64 == 1ull << 40);
    CHECK(gguf_get_i64(f, "k.i64", &i64, &err) == 0 && i64 == -5);
    CHECK(gguf_get_f64(f, "k.f64", &f64, &err) == 0 && f64 == 5e6);

    /* u32 and u64 interchange where the value fits, and only then. */
    CHECK(gguf_get_u32(f, "k.small_u64", &u32, &err) == 0 && u32 == 65536);
    CHECK(gguf_get_u64(f, "k.u32", &u64, &err) == 0 && u64 == 4000000000u);
    CHECK(gguf_get_u32(f, "k.u64", &u32, &err) == -1);
    CHECK_CONTAINS(err.msg, "k.u64: value u64 1099511627776 does not fit a 32-bit unsigned integer");
    CHECK(gguf_get_u64(f, "k.i64", &u64, &err) == -1);
    CHECK_CONTAINS(err.msg, "does not fit an unsigned integer");
    CHECK(gguf_get_u32(f, "k.str", &u32, &err) == -1);
    CHECK_CONTAINS(err.msg, "test.gguf: metadata key k.str is a string, expected a 32-bit unsigned integer");
    CHECK(gguf_get_u32(f, "no.such.key", &u32, &err) == -1);
    CHECK_CONTAINS(err.msg, "test.gguf: metadata key no.such.key is missing");
    CHECK(gguf_get_u32_or(f, "no.such.key", 42, &u32, &err) == 0 && u32 == 42);
    CHECK(gguf_get_u32_or(f, "k.str", 42, &u32, &err) == -1);
    CHECK(gguf_get_f32_or(f, "k.f64", 1.0f, &f32, &err) == 0 && f32 == 5e6f);
    CHECK(gguf_get_f32(f, "k.u32", &f32, &err) == -1);

    const gguf_array *a;
    CHECK(gguf_get_arr(f, "a.i32", GGUF_TYPE_INT32, &a, &err) == 0);
    CHECK(a->count == 3 && gguf_arr_i64(a, 1, &i64) == 0 && i64 == -2);
    CHECK(gguf_arr_i64(a, 3, &i64) == -1); /* out of range */
    CHECK(gguf_arr_u64(a, 1, &u64) == -1); /* negative */
    CHECK(gguf_get_arr(f, "a.i32", GGUF_TYPE_STRING, &a, &err) == -1);
    CHECK_CONTAINS(err.msg, "is an array of i32, expected an array of string");
    CHECK(gguf_get_arr(f, "a.f32", GGUF_TYPE_FLOAT32, &a, &err) == 0);
    CHECK(gguf_arr_f64(a, 1, &f64) == 0 && f64 == -2.0);
    CHECK(gguf_get_arr(f, "a.str", GGUF_TYPE_STRING, &a, &err) == 0);
    CHECK(a->count == 3 && a->strs[0].len == 5 && memcmp(a->strs[0].ptr, "Ġthe", 5) == 0);
    CHECK(a->strs[1].len == 0 && a->strs[2].len == 10);
    CHECK(gguf_get_arr(f, "a.bool", GGUF_TYPE_BOOL, &a, &err) == 0 && gguf_arr_u64(a, 1, &u64) == 0 && u64 == 1);
    CHECK(gguf_get_arr(f, "a.nested", GGUF_TYPE_ARRAY, &a, &err) == 0 && a->count == 2);
    if (a && a->arrays) {
        const gguf_array *in0 = &a->arrays[0].v.arr, *in1 = &a->arrays[1].v.arr;
        CHECK(in0->elem_type == GGUF_TYPE_UINT16 && in0->count == 2);
        CHECK(gguf_arr_u64(in0, 1, &u64) == 0 && u64 == 12);
        CHECK(in1->elem_type == GGUF_TYPE_STRING && in1->count == 1 && in1->strs[0].len == 5);
    }
    CHECK(gguf_get_arr(f, "a.empty", GGUF_TYPE_COUNT, &a, &err) == 0 && a->count == 0);
    gguf_close(&f);
    CHECK(f == NULL);
    free(b.d);
}

static void test_tensor_info_and_data(void)
{
    tb b = { 0 };
    build_valid(&b);
    smq_err err;
    gguf_file *f = open_tb(&b, &err);
    CHECK_MSG(f, "open failed: %s", err.msg);
    if (f) {
        const gguf_tensor *t = gguf_find_tensor(f, "t");
        CHECK(t != NULL);
        CHECK(gguf_find_tensor(f, "u") == NULL);
        if (t) {
            CHECK_INT(t->n_dims, 2);
            CHECK_INT(t->ne[0], 256);
            CHECK_INT(t->ne[1], 2);
            CHECK_INT(t->ne[2], 1);
            CHECK_INT(t->n_elements, 512);
            CHECK_INT(t->n_bytes, 2048);
            CHECK_INT(f->alignment, 32);
            CHECK_INT(f->data_offset % 32, 0);
            CHECK(((const float *)t->data)[511] == 511.0f);
        }
        gguf_close(&f);
    }
    free(b.d);
}

static void test_version_2_and_alignment(void)
{
    /* v2 has v3's layout; general.alignment moves the data section. */
    tb b = { 0 };
    tb_header(&b, 2, 2, 1);
    tb_kv_u32(&b, "general.alignment", 64);
    tb_tensor2(&b, "a", 32, 1, QTYPE_Q8_0, 0);
    tb_tensor2(&b, "b", 4, 1, QTYPE_F32, 64);
    tb_pad(&b, 64);
    size_t data = b.n;
    for (int i = 0; i < 80; i++)
        tb_u8(&b, (uint8_t)i);
    smq_err err;
    gguf_file *f = open_tb(&b, &err);
    CHECK_MSG(f, "open failed: %s", err.msg);
    if (f) {
        CHECK_INT(f->version, 2);
        CHECK_INT(f->alignment, 64);
        CHECK_INT(f->data_offset, data);
        const gguf_tensor *t = gguf_find_tensor(f, "b");
        CHECK(t && (const uint8_t *)t->data - f->base == (ptrdiff_t)(data + 64));
        gguf_close(&f);
    }
    free(b.d);
}

static void test_bad_magic_and_version(void)
{
    tb b = { 0 };
    build_valid(&b);
    memcpy(b.d, "GGML", 4);
    EXPECT_ERROR(&b, "at byte 0 (0x0): bad magic 47 47 4d 4c");
    build_valid(&b);
    b.d[4] = 1;
    EXPECT_ERROR(&b, "at byte 4 (0x4): GGUF version 1 is not supported");
    build_valid(&b);
    b.d[4] = 4;
    EXPECT_ERROR(&b, "unsupported GGUF version 4");
    build_valid(&b);
    b.d[4] = 0, b.d[7] = 3; /* a big-endian writer's 3 */
    EXPECT_ERROR(&b, "looks big-endian");
}

static void test_every_truncation(void)
{
    /* Every proper prefix of a valid file fails cleanly (no crash, no leak). */
    tb b = { 0 };
    build_valid(&b);
    int rejected = 0;
    smq_err err;
    for (size_t n = 0; n < b.n; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size, so ASan sees any over-read */
        memcpy(copy, b.d, n);
        gguf_file *f = gguf_open_buffer(copy, n, "test.gguf", &err);
        if (f)
            gguf_close(&f);
        else
            rejected++;
        free(copy);
    }
    CHECK_INT(rejected, b.n);
    free(b.d);
    memset(&b, 0, sizeof b);
    /* One specific message: a file cut inside a key string. */
    tb_header(&b, 3, 0, 1);
    tb_kv_u32(&b, "general.x", 7);
    b.n = 40;
    EXPECT_ERROR(&b, "at byte 24 (0x18): metadata key: string length 9 runs past the end of the file (8 bytes remain)");
    build_valid(&b);
    b.n = 20;
    EXPECT_ERROR(&b, "at byte 16 (0x10): file truncated: metadata count needs 8 bytes, only 4 remain");
}

static void test_lengths_past_end(void)
{
    tb b = { 0 };
    tb_header(&b, 3, 0, 1);
    tb_str(&b, "k"), tb_u32(&b, GGUF_TYPE_STRING), tb_u64(&b, 1000), tb_bytes(&b, "abc", 3);
    EXPECT_ERROR(&b, "at byte 37 (0x25): k: string length 1000 runs past the end of the file (3 bytes remain)");

    tb_header(&b, 3, 0, 1);
    tb_str(&b, "k"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_UINT32), tb_u64(&b, 5), tb_u32(&b, 1);
    EXPECT_ERROR(&b, "key k: array of 5 u32 runs past the end of the file");

    tb_header(&b, 3, 0, 1);
    tb_str(&b, "k"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_STRING), tb_u64(&b, 1ull << 40);
    EXPECT_ERROR(&b, "key k: array of 1099511627776 strings cannot fit");

    /* count * element size overflows 64 bits */
    tb_header(&b, 3, 0, 1);
    tb_str(&b, "k"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, GGUF_TYPE_UINT64), tb_u64(&b, 1ull << 62);
    EXPECT_ERROR(&b, "key k: array of 4611686018427387904 u64 runs past the end of the file");

    tb_header(&b, 3, UINT64_MAX, 0);
    EXPECT_ERROR(&b, "at byte 8 (0x8): tensor count 18446744073709551615 cannot fit");
    tb_header(&b, 3, 0, 1ull << 60);
    EXPECT_ERROR(&b, "at byte 16 (0x10): metadata count 1152921504606846976 cannot fit");
}

static void test_bad_values(void)
{
    tb b = { 0 };
    tb_header(&b, 3, 0, 1);
    tb_str(&b, "k"), tb_u32(&b, 13), tb_u32(&b, 0);
    EXPECT_ERROR(&b, "key k: unknown value type 13");

    tb_header(&b, 3, 0, 1);
    tb_str(&b, "k"), tb_u32(&b, GGUF_TYPE_ARRAY), tb_u32(&b, 99), tb_u64(&b, 0);
    EXPECT_ERROR(&b, "key k: unknown array element type 99");

    tb_header(&b, 3, 0, 1);
    tb_str(&b, "k"), tb_u32(&b, GGUF_TYPE_BOOL), tb_u8(&b, 2);
    EXPECT_ERROR(&b, "key k: bool value is 2, not 0 or 1");

    tb_header(&b, 3, 0, 2);
    tb_kv_u32(&b, "dup", 1);
    tb_kv_u32(&b, "dup", 2);
    EXPECT_ERROR(&b, "duplicate metadata key dup");

    tb_header(&b, 3, 0, 1);
    tb_str(&b, ""), tb_u32(&b, GGUF_TYPE_UINT8), tb_u8(&b, 0);
    EXPECT_ERROR(&b, "metadata key 0 is empty");

    tb_header(&b, 3, 0, 1);
    tb_u64(&b, 2), tb_bytes(&b, "\xc3\x28", 2), tb_u32(&b, GGUF_TYPE_UINT8), tb_u8(&b, 0);
    EXPECT_ERROR(&b, "metadata key 0 is not valid UTF-8");

    /* arrays of arrays nested 9 deep */
    tb_header(&b, 3, 0, 1);
    tb_str(&b, "deep"), tb_u32(&b, GGUF_TYPE_ARRAY);
    for (int i = 0; i < 9; i++)
        tb_u32(&b, GGUF_TYPE_ARRAY), tb_u64(&b, 1);
    tb_u32(&b, GGUF_TYPE_UINT8), tb_u64(&b, 0);
    EXPECT_ERROR(&b, "key deep: arrays nested deeper than 8");

    tb_header(&b, 3, 0, 1);
    tb_kv_u32(&b, "general.alignment", 48);
    EXPECT_ERROR(&b, "general.alignment 48 is not a power of two");
    tb_header(&b, 3, 0, 1);
    tb_str(&b, "general.alignment"), tb_u32(&b, GGUF_TYPE_STRING), tb_str(&b, "32");
    EXPECT_ERROR(&b, "general.alignment is a string, expected an unsigned integer");
}

static void test_bad_tensors(void)
{
    tb b = { 0 };
    /* unknown type */
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "t", 256, 1, 4, 0); /* id 4 was Q4_2, removed from ggml */
    tb_pad(&b, 32), tb_bytes(&b, (uint8_t[256]){ 0 }, 256);
    EXPECT_ERROR(&b, "tensor t: unknown tensor type 4");
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "t", 256, 1, 1000, 0);
    EXPECT_ERROR(&b, "tensor t: unknown tensor type 1000");

    /* row length not a multiple of the block size */
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "blk.0.attn_q.weight", 300, 2, QTYPE_Q4_K, 0);
    tb_pad(&b, 32), tb_bytes(&b, (uint8_t[1024]){ 0 }, 1024);
    EXPECT_ERROR(&b, "tensor blk.0.attn_q.weight: row length 300 is not a multiple of q4_K's block size 256");

    /* dimension product overflows */
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "t", 1ull << 32, 1ull << 32, QTYPE_F32, 0);
    EXPECT_ERROR(&b, "tensor t: element count overflows at dimension 1");
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "t", 1ull << 63, 1, QTYPE_F32, 0);
    EXPECT_ERROR(&b, "tensor t: dimension 0 is 9223372036854775808 (negative as int64)");
    /* element count fits, bytes do not */
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "t", 1ull << 31, 1ull << 31, QTYPE_F64, 0);
    EXPECT_ERROR(&b, "tensor t: size in bytes overflows");

    tb_header(&b, 3, 1, 0);
    tb_str(&b, "t"), tb_u32(&b, 5), tb_bytes(&b, (uint8_t[64]){ 0 }, 64);
    EXPECT_ERROR(&b, "tensor t: 5 dimensions (at most 4)");

    /* data past the end of the file */
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "t", 256, 2, QTYPE_F32, 0);
    tb_pad(&b, 32), tb_bytes(&b, (uint8_t[2047]){ 0 }, 2047);
    EXPECT_ERROR(&b, "tensor t: data (2048 bytes at data offset 0) lies past the end of the file");
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "t", 8, 1, QTYPE_F32, UINT64_MAX - 31);
    EXPECT_ERROR(&b, "tensor t: data (32 bytes at data offset 18446744073709551584) lies past the end");

    /* misaligned */
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "t", 8, 1, QTYPE_F32, 16);
    tb_pad(&b, 32), tb_bytes(&b, (uint8_t[64]){ 0 }, 64);
    EXPECT_ERROR(&b, "tensor t: data offset 16 is not a multiple of the alignment 32");

    /* duplicate names, overlapping data */
    tb_header(&b, 3, 2, 0);
    tb_tensor2(&b, "w", 8, 1, QTYPE_F32, 0);
    tb_tensor2(&b, "w", 8, 1, QTYPE_F32, 32);
    tb_pad(&b, 32), tb_bytes(&b, (uint8_t[64]){ 0 }, 64);
    EXPECT_ERROR(&b, "duplicate tensor name w");
    tb_header(&b, 3, 2, 0);
    tb_tensor2(&b, "a", 16, 1, QTYPE_F32, 0);
    tb_tensor2(&b, "b", 8, 1, QTYPE_F32, 32);
    tb_pad(&b, 32), tb_bytes(&b, (uint8_t[96]){ 0 }, 96);
    EXPECT_ERROR(&b, "tensor b: data overlaps tensor a");

    /* names: empty, too long */
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "", 8, 1, QTYPE_F32, 0);
    EXPECT_ERROR(&b, "tensor 0: name is empty");
    tb_header(&b, 3, 1, 0);
    tb_tensor2(&b, "a_name_that_is_far_too_long_for_ggml_which_allows_sixty_four_bytes", 8, 1, QTYPE_F32, 0);
    EXPECT_ERROR(&b, "tensor 0: name is longer than 64 bytes");
}

/* Flipping any single byte of the header region must never crash. */
static void test_single_byte_corruptions(void)
{
    tb b = { 0 };
    build_valid(&b);
    size_t header = b.n - 2048;
    smq_err err;
    int opened = 0;
    for (size_t i = 0; i < header; i++) {
        for (int v = 0; v < 256; v += 51) {
            uint8_t *copy = malloc(b.n);
            memcpy(copy, b.d, b.n);
            copy[i] = (uint8_t)(copy[i] ^ (v | 1));
            gguf_file *f = gguf_open_buffer(copy, b.n, "test.gguf", &err);
            if (f) {
                opened++;
                gguf_close(&f);
            }
            free(copy);
        }
    }
    CHECK(opened > 0); /* some flips (in values) leave a valid file */
    free(b.d);
}

static int fill_copy(void *ctx, void *dst, uint64_t n, smq_err *e)
{
    (void)e;
    memcpy(dst, ctx, n);
    return 0;
}

static void test_writer_round_trip(void)
{
    char path[] = "/tmp/smolmq-gguf-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    smq_err err;
    gguf_writer *w = gguf_writer_new();
    CHECK(gguf_writer_set_str(w, "general.architecture", "smollm3", &err) == 0);
    CHECK(gguf_writer_set_u32(w, "x.u32", 65536, &err) == 0);
    CHECK(gguf_writer_set_u64(w, "x.u64", 1ull << 40, &err) == 0);
    CHECK(gguf_writer_set_i32(w, "x.i32", -7, &err) == 0);
    CHECK(gguf_writer_set_f32(w, "x.f32", 5e6f, &err) == 0);
    CHECK(gguf_writer_set_bool(w, "x.bool", 1, &err) == 0);
    CHECK(gguf_writer_set_u32(w, "x.u32", 1, &err) == -1);
    CHECK_CONTAINS(err.msg, "metadata key x.u32 set twice");
    gguf_str strs[2] = { { "a", 1 }, { "bc", 2 } };
    gguf_value arr = { .type = GGUF_TYPE_ARRAY, .v.arr = { .elem_type = GGUF_TYPE_STRING, .count = 2, .strs = strs } };
    CHECK(gguf_writer_set_value(w, "x.strs", &arr, &err) == 0);
    float data[2][256];
    for (int i = 0; i < 512; i++)
        data[i / 256][i % 256] = (float)i * 0.25f;
    uint64_t ne[2] = { 256, 2 };
    CHECK(gguf_writer_add_tensor(w, "t.weight", QTYPE_F32, 2, ne, fill_copy, data, &err) == 0);
    uint64_t ne1[1] = { 100 };
    CHECK(gguf_writer_add_tensor(w, "q", QTYPE_Q4_K, 1, ne1, fill_copy, data, &err) == -1);
    CHECK_CONTAINS(err.msg, "100 elements per row do not fit type q4_K");
    CHECK(gguf_writer_write(w, path, &err) == 0);
    gguf_writer_destroy(&w);

    gguf_file *f = gguf_open(path, &err);
    CHECK_MSG(f, "reopen failed: %s", err.msg);
    if (f) {
        uint32_t u32;
        uint64_t u64;
        int64_t i64;
        float f32;
        int bl;
        gguf_str s;
        const gguf_array *a;
        CHECK(gguf_get_str(f, "general.architecture", &s, &err) == 0 && s.len == 7);
        CHECK(gguf_get_u32(f, "x.u32", &u32, &err) == 0 && u32 == 65536);
        CHECK(gguf_get_u64(f, "x.u64", &u64, &err) == 0 && u64 == 1ull << 40);
        CHECK(gguf_get_i64(f, "x.i32", &i64, &err) == 0 && i64 == -7);
        CHECK(gguf_get_f32(f, "x.f32", &f32, &err) == 0 && f32 == 5e6f);
        CHECK(gguf_get_bool(f, "x.bool", &bl, &err) == 0 && bl == 1);
        CHECK(gguf_get_arr(f, "x.strs", GGUF_TYPE_STRING, &a, &err) == 0 && a->count == 2 && a->strs[1].len == 2);
        const gguf_tensor *t = gguf_find_tensor(f, "t.weight");
        CHECK(t && t->n_bytes == sizeof data && memcmp(t->data, data, sizeof data) == 0);
        gguf_close(&f);
    }
    unlink(path);
}

static void test_open_errors(void)
{
    smq_err err;
    CHECK(gguf_open("/nonexistent/model.gguf", &err) == NULL);
    CHECK_CONTAINS(err.msg, "/nonexistent/model.gguf: cannot open: No such file or directory");
    CHECK(gguf_open("/tmp", &err) == NULL);
    CHECK_CONTAINS(err.msg, "/tmp: not a regular file");
    char path[] = "/tmp/smolmq-gguf-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(write(fd, "GGUF", 4) == 4);
    close(fd);
    CHECK(gguf_open(path, &err) == NULL);
    CHECK_CONTAINS(err.msg, "file truncated: 4 bytes, a GGUF header needs 24");
    unlink(path);
}

/* The real test model: counts, key values and offsets from its .info.json. */
static void test_tiny_model(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/models/smollm3-tiny-q4_k_m.gguf", test_data_dir());
    smq_err err;
    gguf_file *f = gguf_open(path, &err);
    CHECK_MSG(f, "open failed: %s", err.msg);
    if (!f)
        return;
    CHECK_INT(f->n_tensors, 38);
    CHECK_INT(f->version, 3);
    uint32_t u32;
    float f32;
    gguf_str s;
    const gguf_array *a;
    CHECK(gguf_get_str(f, "general.architecture", &s, &err) == 0 && s.len == 7 && !memcmp(s.ptr, "smollm3", 7));
    CHECK(gguf_get_u32(f, "smollm3.embedding_length", &u32, &err) == 0 && u32 == 256);
    CHECK(gguf_get_u32(f, "smollm3.context_length", &u32, &err) == 0 && u32 == 65536);
    CHECK(gguf_get_f32(f, "smollm3.rope.freq_base", &f32, &err) == 0 && f32 == 5000000.0f);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u32, &err) == 0 && u32 == 128012);
    CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &a, &err) == 0 && a->count == 128256);
    CHECK(a && a->strs[128012].len == 10 && !memcmp(a->strs[128012].ptr, "<|im_end|>", 10));
    CHECK(gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &a, &err) == 0 && a->count == 280147);
    CHECK(gguf_get_str(f, "tokenizer.chat_template", &s, &err) == 0 && s.len == 5598);
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    CHECK(t && t->type == QTYPE_Q6_K && t->ne[0] == 256 && t->ne[1] == 128256 && t->n_bytes == 26933760);
    CHECK(t && (const uint8_t *)t->data - f->base == 7826976);
    t = gguf_find_tensor(f, "output_norm.weight");
    CHECK(t && t->type == QTYPE_F32 && (const uint8_t *)t->data - f->base == 7825952);
    t = gguf_find_tensor(f, "blk.3.ffn_down.weight");
    CHECK(t && t->type == QTYPE_Q6_K && t->ne[0] == 768 && t->ne[1] == 256);
    CHECK(gguf_find_tensor(f, "output.weight") == NULL); /* tied */
    gguf_close(&f);
}

static void test_quant_golden_files(void)
{
    static const char *names[] = { "q4_K", "q5_K", "q6_K", "q8_0" };
    static const qtype types[] = { QTYPE_Q4_K, QTYPE_Q5_K, QTYPE_Q6_K, QTYPE_Q8_0 };
    for (int i = 0; i < 4; i++) {
        char path[512], raw_path[512];
        snprintf(path, sizeof path, "%s/quant/%s.gguf", test_data_dir(), names[i]);
        snprintf(raw_path, sizeof raw_path, "%s/quant/%s.raw.bin", test_data_dir(), names[i]);
        smq_err err;
        gguf_file *f = gguf_open(path, &err);
        CHECK_MSG(f, "open failed: %s", err.msg);
        size_t raw_len = 0;
        uint8_t *raw = test_read_file(raw_path, &raw_len);
        if (f && raw) {
            const gguf_tensor *t = gguf_find_tensor(f, "q");
            uint32_t rows;
            CHECK(t && t->type == types[i] && t->ne[0] == 512 && t->ne[1] == 8);
            CHECK(t && t->n_bytes == raw_len && memcmp(t->data, raw, raw_len) == 0);
            CHECK(gguf_get_u32(f, "golden.rows", &rows, &err) == 0 && rows == 8);
        }
        free(raw);
        gguf_close(&f);
    }
}

int main(void)
{
    test_program = "gguf";
    TEST_RUN(test_every_metadata_type);
    TEST_RUN(test_tensor_info_and_data);
    TEST_RUN(test_version_2_and_alignment);
    TEST_RUN(test_bad_magic_and_version);
    TEST_RUN(test_every_truncation);
    TEST_RUN(test_lengths_past_end);
    TEST_RUN(test_bad_values);
    TEST_RUN(test_bad_tensors);
    TEST_RUN(test_single_byte_corruptions);
    TEST_RUN(test_writer_round_trip);
    TEST_RUN(test_open_errors);
    TEST_RUN(test_tiny_model);
    TEST_RUN(test_quant_golden_files);
    return test_done();
}
