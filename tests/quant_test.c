/* quant_test.c - block formats, fp16/bf16, dequantization against ggml's
 * goldens (bit for bit), and the quantizers' error against ggml's. */
#include "quant.h"
#include "test.h"

#define GOLDEN_ROWS 8
#define GOLDEN_COLS 512
#define GOLDEN_N    (GOLDEN_ROWS * GOLDEN_COLS)

/* CHECK_MSG for loops: reports the first few failures counted in `count`. */
#define CHECK_FEW(count, cond, ...)                                                                                    \
    do {                                                                                                               \
        if (!(cond) && (count)++ < 3)                                                                                  \
            test_fail(__FILE__, __LINE__, __VA_ARGS__);                                                                \
    } while (0)

/* uniform in [-1, 1) */
static float rng_float(void)
{
    return (float)((double)(test_rng() >> 40) / (double)(1ull << 23) - 1.0);
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* A golden file tests/data/quant/<type>.<suffix>, which must be `len` bytes. */
static void *read_golden(const char *type, const char *suffix, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/quant/%s.%s", test_data_dir(), type, suffix);
    size_t got = 0;
    void *buf = test_read_file(path, &got);
    if (buf && got != len) {
        test_fail(__FILE__, __LINE__, "%s is %zu bytes, expected %zu", path, got, len);
        free(buf);
        return NULL;
    }
    return buf;
}

static void test_struct_sizes(void)
{
    CHECK_INT(sizeof(block_q8_0), qtype_table[QTYPE_Q8_0].block_bytes);
    CHECK_INT(sizeof(block_q8_1), qtype_table[QTYPE_Q8_1].block_bytes);
    CHECK_INT(sizeof(block_q4_K), qtype_table[QTYPE_Q4_K].block_bytes);
    CHECK_INT(sizeof(block_q5_K), qtype_table[QTYPE_Q5_K].block_bytes);
    CHECK_INT(sizeof(block_q6_K), qtype_table[QTYPE_Q6_K].block_bytes);
    CHECK_INT(sizeof(block_q8_K), qtype_table[QTYPE_Q8_K].block_bytes);
    CHECK_INT(sizeof(block_q4_K), 144);
    CHECK_INT(sizeof(block_q5_K), 176);
    CHECK_INT(sizeof(block_q6_K), 210);
    CHECK_INT(offsetof(block_q6_K, d), 208);
    CHECK_INT(offsetof(block_q5_K, qh), 16);
    CHECK_INT(offsetof(block_q5_K, qs), 48);
    CHECK_INT(offsetof(block_q8_K, bsums), 260);
    CHECK_INT(qtype_table[QTYPE_Q4_K].block_elems, QK_K);
    CHECK_INT(qtype_table[QTYPE_Q8_0].block_elems, QK8_0);
}

static void test_fp16_round_trip_all(void)
{
    int nan_count = 0, bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_f32((uint16_t)h);
        uint16_t back = f32_to_fp16(f);
        int is_nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
        if (is_nan) {
            nan_count++;
            CHECK_FEW(bad, isnan(f), "fp16 0x%04x: %g is not NaN", h, (double)f);
            CHECK_FEW(bad, (back & 0x7C00) == 0x7C00 && (back & 0x3FF) != 0, "fp16 NaN 0x%04x came back as 0x%04x", h,
                      back);
            CHECK_FEW(bad, (back & 0x8000) == (h & 0x8000), "fp16 NaN 0x%04x lost its sign", h);
        } else {
            CHECK_FEW(bad, back == h, "fp16 0x%04x -> %a -> 0x%04x", h, (double)f, back);
        }
    }
    CHECK_INT(nan_count, 2 * 1023);
}

static void test_fp16_known_values(void)
{
    CHECK_INT(f32_to_fp16(1.0f), 0x3C00);
    CHECK_INT(f32_to_fp16(-2.0f), 0xC000);
    CHECK_INT(f32_to_fp16(0.0f), 0x0000);
    CHECK_INT(f32_to_fp16(-0.0f), 0x8000);
    CHECK_INT(f32_to_fp16(65504.0f), 0x7BFF);
    CHECK_INT(f32_to_fp16(65519.99f), 0x7BFF);
    CHECK_INT(f32_to_fp16(65520.0f), 0x7C00); /* tie between 65504 and 2^16: even is inf */
    CHECK_INT(f32_to_fp16(1e10f), 0x7C00);
    CHECK_INT(f32_to_fp16(-1e10f), 0xFC00);
    CHECK_INT(f32_to_fp16(INFINITY), 0x7C00);
    CHECK_INT(f32_to_fp16(-INFINITY), 0xFC00);
    CHECK(isnan(fp16_to_f32(f32_to_fp16(NAN))));
    CHECK_INT(f32_to_fp16(ldexpf(1, -14)), 0x0400); /* smallest normal */
    CHECK_INT(f32_to_fp16(ldexpf(1, -24)), 0x0001); /* smallest subnormal */
    CHECK_INT(f32_to_fp16(ldexpf(1, -25)), 0x0000); /* tie with 0: even */
    CHECK_INT(f32_to_fp16(ldexpf(1.5f, -25)), 0x0001);
    CHECK_INT(f32_to_fp16(ldexpf(3, -25)), 0x0002);       /* 1.5 ulp: tie, even is 2 */
    CHECK_INT(f32_to_fp16(ldexpf(5, -25)), 0x0002);       /* 2.5 ulp: tie, even is 2 */
    CHECK_INT(f32_to_fp16(ldexpf(1023.5f, -24)), 0x0400); /* rounds up into the normals */
    CHECK_INT(f32_to_fp16(ldexpf(1, -30)), 0x0000);
    CHECK_INT(f32_to_fp16(1.0f + ldexpf(1, -11)), 0x3C00);     /* tie: even */
    CHECK_INT(f32_to_fp16(1.0f + 3 * ldexpf(1, -11)), 0x3C02); /* tie: even */
    CHECK_INT(f32_to_fp16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3C01);
    CHECK(fp16_to_f32(0x3C00) == 1.0f);
    CHECK(fp16_to_f32(0x7BFF) == 65504.0f);
    CHECK(fp16_to_f32(0x0001) == ldexpf(1, -24));
    CHECK(fp16_to_f32(0x03FF) == ldexpf(1023, -24));
    CHECK(fp16_to_f32(0xC000) == -2.0f);
    CHECK(fp16_to_f32(0x7C00) == INFINITY);
    CHECK(fp16_to_f32(0xFC00) == -INFINITY);
    CHECK_INT(f32_u(fp16_to_f32(0x8000)), 0x80000000u);
}

static void test_bf16(void)
{
    CHECK_INT(f32_to_bf16(1.0f), 0x3F80);
    CHECK_INT(f32_to_bf16(-2.0f), 0xC000);
    CHECK_INT(f32_to_bf16(bits_f32(0x3F808000u)), 0x3F80); /* tie: even */
    CHECK_INT(f32_to_bf16(bits_f32(0x3F818000u)), 0x3F82); /* tie: even */
    CHECK_INT(f32_to_bf16(bits_f32(0x3F808001u)), 0x3F81);
    CHECK_INT(f32_to_bf16(bits_f32(0x7F7FFFFFu)), 0x7F80); /* FLT_MAX rounds to inf */
    CHECK_INT(f32_to_bf16(INFINITY), 0x7F80);
    CHECK_INT(f32_to_bf16(bits_f32(0x00000001u)), 0x0000);
    CHECK_INT(f32_to_bf16(bits_f32(0x7F800001u)) & 0x7FC0, 0x7FC0); /* sNaN stays NaN */
    CHECK(isnan(bf16_to_f32(f32_to_bf16(NAN))));
    CHECK(bf16_to_f32(0x3F80) == 1.0f);
    /* every bf16 pattern survives a round trip (NaNs stay NaN) */
    int bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float f = bf16_to_f32((uint16_t)b);
        uint16_t back = f32_to_bf16(f);
        if (isnan(f))
            CHECK_FEW(bad, isnan(bf16_to_f32(back)), "bf16 NaN 0x%04x came back as 0x%04x", b, back);
        else
            CHECK_FEW(bad, back == b, "bf16 0x%04x came back as 0x%04x", b, back);
    }
    /* random floats: the result is one of the two neighbours, the nearer */
    for (int i = 0; i < 100000; i++) {
        uint32_t u = (uint32_t)test_rng() & 0xBFFFFFFFu; /* finite, not near overflow */
        float f = bits_f32(u);
        uint16_t b = f32_to_bf16(f);
        float down = bf16_to_f32((uint16_t)(u >> 16)), up = bf16_to_f32((uint16_t)((u >> 16) + 1));
        float got = bf16_to_f32(b);
        CHECK_FEW(bad, got == down || got == up, "bf16(%a) = 0x%04x", (double)f, b);
        double e_got = fabs((double)got - f), e_other = fabs((double)(got == down ? up : down) - f);
        CHECK_FEW(bad, e_got <= e_other, "bf16(%a) = 0x%04x is not the nearest", (double)f, b);
    }
}

static void test_q4k_scale_min_pack(void)
{
    int bad = 0;
    for (int j = 0; j < 8; j++) {
        for (int sc = 0; sc < 64; sc++) {
            for (int m = 0; m < 64; m++) {
                uint8_t scales[K_SCALE_SIZE], before[K_SCALE_SIZE];
                for (int k = 0; k < K_SCALE_SIZE; k++)
                    scales[k] = (uint8_t)test_rng();
                memcpy(before, scales, sizeof scales);
                q4k_pack_scale_min(j, (uint8_t)sc, (uint8_t)m, scales);
                uint8_t got_sc = 0xFF, got_m = 0xFF;
                q4k_scale_min(j, scales, &got_sc, &got_m);
                CHECK_FEW(bad, got_sc == sc && got_m == m, "j %d: packed (%d, %d), unpacked (%d, %d)", j, sc, m, got_sc,
                          got_m);
                /* the other seven sub-blocks are untouched */
                for (int k = 0; k < 8; k++) {
                    if (k == j)
                        continue;
                    uint8_t s0, m0, s1, m1;
                    q4k_scale_min(k, before, &s0, &m0);
                    q4k_scale_min(k, scales, &s1, &m1);
                    CHECK_FEW(bad, s0 == s1 && m0 == m1, "packing j %d changed sub-block %d", j, k);
                }
            }
        }
    }
    /* the documented layout, on one hand-made example */
    uint8_t s[K_SCALE_SIZE] = { 0 };
    for (int j = 0; j < 8; j++)
        q4k_pack_scale_min(j, (uint8_t)(j == 5 ? 0x2A : j), (uint8_t)(j == 5 ? 0x35 : 0), s);
    CHECK_INT(s[1], 0x01 | (0x2A >> 4) << 6); /* sc1 plus the top bits of sc5 */
    CHECK_INT(s[5], 0x00 | (0x35 >> 4) << 6); /* m1 plus the top bits of m5 */
    CHECK_INT(s[9], (0x2A & 0xF) | (0x35 & 0xF) << 4);
}

/* The word-wise unpacking gives q4k_scale_min's pairs on random headers. */
static void test_q4k_unpack_scale_words(void)
{
    int bad = 0;
    for (int it = 0; it < 10000; it++) {
        uint8_t scales[K_SCALE_SIZE];
        for (int k = 0; k < K_SCALE_SIZE; k++)
            scales[k] = (uint8_t)test_rng();
        uint32_t w[3], sc[2], mn[2];
        memcpy(w, scales, sizeof w);
        q4k_unpack_scale_words(w[0], w[1], w[2], sc, mn);
        for (int j = 0; j < 8; j++) {
            uint8_t s, m;
            q4k_scale_min(j, scales, &s, &m);
            uint32_t gs = (sc[j / 4] >> (8 * (j % 4))) & 0xFF, gm = (mn[j / 4] >> (8 * (j % 4))) & 0xFF;
            CHECK_FEW(bad, gs == s && gm == m, "sub-block %d: (%u, %u), q4k_scale_min (%d, %d)", j, gs, gm, s, m);
        }
    }
}

/* One golden type: raw.bin dequantized row by row must equal dequant.f32.bin. */
static void check_golden_dequant(const char *name, qtype t)
{
    uint64_t row_bytes = 0;
    CHECK(qtype_row_bytes(t, GOLDEN_COLS, &row_bytes) == 0);
    uint8_t *raw = read_golden(name, "raw.bin", (size_t)(row_bytes * GOLDEN_ROWS));
    float *want = read_golden(name, "dequant.f32.bin", GOLDEN_N * sizeof(float));
    float *got = malloc(GOLDEN_N * sizeof(float));
    if (raw && want && got) {
        memset(got, 0xFF, GOLDEN_N * sizeof(float)); /* NaN: an unwritten value fails */
        for (int r = 0; r < GOLDEN_ROWS; r++)
            CHECK_INT(quant_dequant_row(t, raw + r * row_bytes, got + r * GOLDEN_COLS, GOLDEN_COLS), 0);
        int bad = 0, first = -1;
        for (int i = 0; i < GOLDEN_N; i++) {
            if (f32_u(got[i]) != f32_u(want[i])) {
                if (first < 0)
                    first = i;
                bad++;
            }
        }
        CHECK_MSG(memcmp(got, want, GOLDEN_N * sizeof(float)) == 0,
                  "%s: %d of %d values differ, first [%d]: %a, expected %a", name, bad, GOLDEN_N, first,
                  first < 0 ? 0.0 : (double)got[first], first < 0 ? 0.0 : (double)want[first]);
    }
    free(raw);
    free(want);
    free(got);
}

static void test_dequant_golden_q4_K(void)
{
    check_golden_dequant("q4_K", QTYPE_Q4_K);
}

static void test_dequant_golden_q5_K(void)
{
    check_golden_dequant("q5_K", QTYPE_Q5_K);
}

static void test_dequant_golden_q6_K(void)
{
    check_golden_dequant("q6_K", QTYPE_Q6_K);
}

static void test_dequant_golden_q8_0(void)
{
    check_golden_dequant("q8_0", QTYPE_Q8_0);
}

/* Element-wise access (what the kernels use) agrees with the block loops. */
static void test_value_matches_block(void)
{
    uint8_t raw[sizeof(block_q6_K)]; /* the largest of the three */
    int bad = 0;
    for (int rep = 0; rep < 64; rep++) {
        for (size_t i = 0; i < sizeof raw; i++)
            raw[i] = (uint8_t)test_rng();
        float y[QK_K];
        block_q4_K q4;
        block_q5_K q5;
        block_q6_K q6;
        memcpy(&q4, raw, sizeof q4);
        memcpy(&q5, raw, sizeof q5);
        memcpy(&q6, raw, sizeof q6);
        q4.d = q5.d = q6.d = 0x2E66; /* finite scales: compare values, not NaNs */
        q4.dmin = q5.dmin = 0x1A3F;
        dequant_block_q4_K(&q4, y);
        for (int i = 0; i < QK_K; i++)
            CHECK_FEW(bad, f32_u(y[i]) == f32_u(q4k_value(&q4, i)), "q4_K element %d", i);
        dequant_block_q5_K(&q5, y);
        for (int i = 0; i < QK_K; i++)
            CHECK_FEW(bad, f32_u(y[i]) == f32_u(q5k_value(&q5, i)), "q5_K element %d", i);
        dequant_block_q6_K(&q6, y);
        for (int i = 0; i < QK_K; i++) {
            CHECK_FEW(bad, q6k_quant(&q6, i) >= -32 && q6k_quant(&q6, i) <= 31, "q6_K quant %d", i);
            CHECK_FEW(bad, f32_u(y[i]) == f32_u(q6k_value(&q6, i)), "q6_K element %d", i);
        }
    }
}

static double rel_rmse(const float *a, const float *ref, int n)
{
    double err = 0, norm = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        err += d * d;
        norm += (double)ref[i] * ref[i];
    }
    return norm > 0 ? sqrt(err / norm) : 0;
}

/* Quantizes the golden source with our quantizer and compares its error with
 * ggml's (the golden raw.bin dequantized); also counts matching bytes. */
static void check_quantizer(const char *name, qtype t)
{
    uint64_t row_bytes = 0;
    CHECK(qtype_row_bytes(t, GOLDEN_COLS, &row_bytes) == 0);
    size_t raw_len = (size_t)(row_bytes * GOLDEN_ROWS);
    float *src = read_golden(name, "source.f32.bin", GOLDEN_N * sizeof(float));
    float *golden = read_golden(name, "dequant.f32.bin", GOLDEN_N * sizeof(float));
    uint8_t *raw = read_golden(name, "raw.bin", raw_len);
    uint8_t *ours = malloc(raw_len);
    float *deq = malloc(GOLDEN_N * sizeof(float));
    if (src && golden && raw && ours && deq) {
        for (int r = 0; r < GOLDEN_ROWS; r++) {
            CHECK_INT(quant_quantize_row(t, src + r * GOLDEN_COLS, ours + r * row_bytes, GOLDEN_COLS), 0);
            CHECK_INT(quant_dequant_row(t, ours + r * row_bytes, deq + r * GOLDEN_COLS, GOLDEN_COLS), 0);
        }
        double ours_err = rel_rmse(deq, src, GOLDEN_N);
        double golden_err = rel_rmse(golden, src, GOLDEN_N);
        double ratio = ours_err / golden_err;
        size_t equal = 0;
        for (size_t i = 0; i < raw_len; i++)
            equal += ours[i] == raw[i];
        printf("  %s: our rel RMSE %.4f, golden %.4f, ratio %.3f, raw.bin bytes equal %zu/%zu\n", name, ours_err,
               golden_err, ratio, equal, raw_len);
        CHECK_MSG(golden_err > 0.001 && golden_err < 0.2, "%s: golden error %g is implausible", name, golden_err);
        CHECK_MSG(ratio <= 1.10, "%s: our error %.5f is %.3fx ggml's %.5f", name, ours_err, ratio, golden_err);
    }
    free(src);
    free(golden);
    free(raw);
    free(ours);
    free(deq);
}

static void test_quantize_q4_K(void)
{
    check_quantizer("q4_K", QTYPE_Q4_K);
}

static void test_quantize_q6_K(void)
{
    check_quantizer("q6_K", QTYPE_Q6_K);
}

static void test_quantize_q8_0(void)
{
    check_quantizer("q8_0", QTYPE_Q8_0);
}

/* All-zero and constant blocks: no NaN, zeros come back as zeros. */
static void test_quantize_degenerate(void)
{
    static const qtype types[] = { QTYPE_Q4_K, QTYPE_Q6_K, QTYPE_Q8_0, QTYPE_Q8_K, QTYPE_Q8_1 };
    float x[QK_K], y[QK_K];
    uint8_t buf[292];
    int bad = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        for (int c = 0; c < 3; c++) {
            float v = c == 0 ? 0.f : c == 1 ? 0.25f : -3.f;
            for (int i = 0; i < QK_K; i++)
                x[i] = v;
            CHECK_INT(quant_quantize_row(types[k], x, buf, QK_K), 0);
            CHECK_INT(quant_dequant_row(types[k], buf, y, QK_K), 0);
            for (int i = 0; i < QK_K; i++) {
                CHECK_FEW(bad, fabsf(y[i] - v) <= 0.02f * fabsf(v), "%s const %g: [%d] = %g", qtype_name(types[k]),
                          (double)v, i, (double)y[i]);
                if (v == 0)
                    CHECK_FEW(bad, y[i] == 0, "%s zeros: [%d] = %g", qtype_name(types[k]), i, (double)y[i]);
            }
        }
    }
}

static void test_quantize_q8_K_round_trip(void)
{
    enum { NB = 64 };
    float *x = malloc(NB * QK_K * sizeof(float)), *y = malloc(NB * QK_K * sizeof(float));
    block_q8_K *q = malloc(NB * sizeof *q);
    if (!x || !y || !q) {
        CHECK(!"out of memory");
    } else {
        for (int i = 0; i < NB * QK_K; i++)
            x[i] = rng_float() * (float)(1 + i / QK_K) * 0.05f;
        CHECK_INT(quant_quantize_row(QTYPE_Q8_K, x, q, NB * QK_K), 0);
        CHECK_INT(quant_dequant_row(QTYPE_Q8_K, q, y, NB * QK_K), 0);
        int bad = 0;
        for (int b = 0; b < NB; b++) {
            float amax = 0;
            for (int i = 0; i < QK_K; i++)
                amax = fmaxf(amax, fabsf(x[b * QK_K + i]));
            CHECK_FEW(bad, q[b].d == amax / 127, "block %d: d %g, amax/127 %g", b, (double)q[b].d,
                      (double)(amax / 127));
            for (int i = 0; i < QK_K; i++) {
                float e = fabsf(y[b * QK_K + i] - x[b * QK_K + i]);
                CHECK_FEW(bad, e <= q[b].d * 0.5f + 1e-6f * amax, "block %d [%d]: error %g, d %g", b, i, (double)e,
                          (double)q[b].d);
                CHECK_FEW(bad, q[b].qs[i] >= -127, "block %d [%d] = -128", b, i);
            }
            for (int j = 0; j < QK_K / 16; j++) {
                int sum = 0;
                for (int i = 0; i < 16; i++)
                    sum += q[b].qs[16 * j + i];
                CHECK_FEW(bad, q[b].bsums[j] == sum, "block %d bsums[%d] %d, expected %d", b, j, q[b].bsums[j], sum);
            }
        }
    }
    free(x);
    free(y);
    free(q);
}

static void test_quantize_q8_1_round_trip(void)
{
    enum { NB = 256 };
    float *x = malloc(NB * QK8_1 * sizeof(float)), *y = malloc(NB * QK8_1 * sizeof(float));
    block_q8_1 *q = malloc(NB * sizeof *q);
    if (!x || !y || !q) {
        CHECK(!"out of memory");
    } else {
        for (int i = 0; i < NB * QK8_1; i++)
            x[i] = rng_float() * ldexpf(1, i / QK8_1 % 16 - 8);
        CHECK_INT(quant_quantize_row(QTYPE_Q8_1, x, q, NB * QK8_1), 0);
        CHECK_INT(quant_dequant_row(QTYPE_Q8_1, q, y, NB * QK8_1), 0);
        int bad = 0;
        for (int b = 0; b < NB; b++) {
            float amax = 0;
            int sum = 0;
            for (int i = 0; i < QK8_1; i++) {
                amax = fmaxf(amax, fabsf(x[b * QK8_1 + i]));
                sum += q[b].qs[i];
            }
            float d = fp16_to_f32(q[b].d);
            CHECK_FEW(bad, q[b].d == f32_to_fp16(amax / 127), "block %d: d 0x%04x", b, q[b].d);
            CHECK_FEW(bad, q[b].s == f32_to_fp16(d * (float)sum), "block %d: s %g, d*sum %g", b,
                      (double)fp16_to_f32(q[b].s), (double)(d * (float)sum));
            for (int i = 0; i < QK8_1; i++) {
                float e = fabsf(y[b * QK8_1 + i] - x[b * QK8_1 + i]);
                CHECK_FEW(bad, e <= d * 0.5f + 1e-6f * amax, "block %d [%d]: error %g, d %g", b, i, (double)e,
                          (double)d);
            }
        }
    }
    free(x);
    free(y);
    free(q);
}

/* F32/F16/BF16 rows go through the same conversions as the scalars. */
static void test_float_rows(void)
{
    float x[64], y[64];
    uint16_t h[64];
    for (int i = 0; i < 64; i++)
        x[i] = rng_float() * 100;
    CHECK_INT(quant_quantize_row(QTYPE_F16, x, h, 64), 0);
    CHECK_INT(quant_dequant_row(QTYPE_F16, h, y, 64), 0);
    for (int i = 0; i < 64; i++) {
        CHECK_INT(h[i], f32_to_fp16(x[i]));
        CHECK(y[i] == fp16_to_f32(h[i]));
        CHECK(fabsf(y[i] - x[i]) <= fabsf(x[i]) * ldexpf(1, -11));
    }
    CHECK_INT(quant_quantize_row(QTYPE_BF16, x, h, 64), 0);
    CHECK_INT(quant_dequant_row(QTYPE_BF16, h, y, 64), 0);
    for (int i = 0; i < 64; i++)
        CHECK(fabsf(y[i] - x[i]) <= fabsf(x[i]) * ldexpf(1, -8));
    float z[64];
    CHECK_INT(quant_quantize_row(QTYPE_F32, x, z, 64), 0);
    CHECK_INT(quant_dequant_row(QTYPE_F32, z, y, 64), 0);
    CHECK(memcmp(x, y, sizeof x) == 0);
}

static void test_error_paths(void)
{
    uint8_t raw[2 * 210] = { 0 };
    float y[2 * QK_K], x[2 * QK_K] = { 0 };
    CHECK_INT(quant_dequant_row(QTYPE_Q4_K, raw, y, 100), -1);
    CHECK_INT(quant_dequant_row(QTYPE_Q4_K, raw, y, QK_K + 32), -1);
    CHECK_INT(quant_dequant_row(QTYPE_Q8_0, raw, y, 33), -1);
    CHECK_INT(quant_dequant_row(QTYPE_IQ2_XXS, raw, y, QK_K), -1);
    CHECK_INT(quant_dequant_row(QTYPE_Q4_0, raw, y, 32), -1);
    CHECK_INT(quant_dequant_row((qtype)4, raw, y, 32), -1);  /* removed id */
    CHECK_INT(quant_dequant_row((qtype)99, raw, y, 32), -1); /* out of range */
    CHECK_INT(quant_dequant_row(QTYPE_Q4_K, raw, y, 0), 0);  /* an empty row is fine */
    CHECK_INT(quant_quantize_row(QTYPE_Q6_K, x, raw, 100), -1);
    CHECK_INT(quant_quantize_row(QTYPE_Q5_K, x, raw, QK_K), -1); /* no Q5_K quantizer */
    CHECK_INT(quant_quantize_row(QTYPE_IQ2_XXS, x, raw, QK_K), -1);
    CHECK(!quant_can_dequant(QTYPE_IQ2_XXS));
    CHECK(!quant_can_dequant((qtype)99));
    CHECK(quant_can_dequant(QTYPE_Q5_K));
    CHECK(quant_can_quantize(QTYPE_Q4_K));
    CHECK(!quant_can_quantize(QTYPE_Q5_K));
}

int main(void)
{
    test_program = "quant";
    TEST_RUN(test_struct_sizes);
    TEST_RUN(test_fp16_round_trip_all);
    TEST_RUN(test_fp16_known_values);
    TEST_RUN(test_bf16);
    TEST_RUN(test_q4k_scale_min_pack);
    TEST_RUN(test_q4k_unpack_scale_words);
    TEST_RUN(test_dequant_golden_q4_K);
    TEST_RUN(test_dequant_golden_q5_K);
    TEST_RUN(test_dequant_golden_q6_K);
    TEST_RUN(test_dequant_golden_q8_0);
    TEST_RUN(test_value_matches_block);
    TEST_RUN(test_quantize_q4_K);
    TEST_RUN(test_quantize_q6_K);
    TEST_RUN(test_quantize_q8_0);
    TEST_RUN(test_quantize_degenerate);
    TEST_RUN(test_quantize_q8_K_round_trip);
    TEST_RUN(test_quantize_q8_1_round_trip);
    TEST_RUN(test_float_rows);
    TEST_RUN(test_error_paths);
    return test_done();
}
