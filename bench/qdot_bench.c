/* qdot_bench.c - the CPU fast path's integer kernels on one core, in cache.
 *
 *   build/bench/qdot_bench [ROWS_OF_X]      (default 64)
 *
 * Random Q4_K and Q6_K rows of 2048 weights (32 of them: a task's worth, in
 * L1/L2) against activations quantized to Q8_K, timed in CPU time (robust to
 * a shared machine). It prints, with the reference measured in the same run:
 *   - the one-row kernel (decode) in GB/s of weights, beside this core's
 *     read bandwidth from memory: above 1 the kernel could keep up with
 *     memory, and how far above says how much of the core it leaves idle;
 *   - the sixteen-row kernel (prefill, AVX-512 VNNI) in GMAC/s, beside the
 *     four-row kernel it replaces.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu_ops.h"
#include "qdot.h"
#include "quant.h"

enum { K = 2048, NB = K / QK_K, ROWS = 32 };

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static volatile float sink;

/* GB/s of one thread reading a 512 MiB buffer (best of three), with the
 * widest loads the CPU has (read_sum: the loop is not the limit). */
static double read_bandwidth(void)
{
    size_t bytes = (size_t)512 << 20;
    uint64_t *buf = malloc(bytes);
    if (!buf)
        return 0;
    memset(buf, 1, bytes);
    double best = 0;
    uint64_t sum = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = cpu_now();
        sum += read_sum(buf, bytes);
        double gbs = (double)bytes / (cpu_now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    sink = (float)sum;
    free(buf);
    return best;
}

static void random_rows(qtype t, uint8_t *w)
{
    size_t bb = qtype_table[t].block_bytes;
    for (size_t i = 0; i < ROWS * NB * bb; i++)
        w[i] = (uint8_t)(rand() >> 7);
    for (int b = 0; b < ROWS * NB; b++) {
        if (t == QTYPE_Q4_K) {
            ((block_q4_K *)w)[b].d = f32_to_fp16(1e-3f);
            ((block_q4_K *)w)[b].dmin = f32_to_fp16(1e-3f);
        } else {
            ((block_q6_K *)w)[b].d = f32_to_fp16(1e-3f);
        }
    }
}

int main(int argc, char **argv)
{
    int T = argc > 1 ? atoi(argv[1]) : 64;
    if (T < 1 || T > 4096) {
        fprintf(stderr, "usage: qdot_bench [ROWS_OF_X from 1 to 4096]\n");
        return 2;
    }
    T = (T + 3) / 4 * 4;
    float *x = malloc((size_t)T * K * sizeof *x);
    block_q8_K *xq = malloc((size_t)T * NB * sizeof *xq);
    float *acc = malloc((size_t)T * 16 * sizeof *acc);
    uint8_t *w = malloc(ROWS * NB * 210);
    if (!x || !xq || !acc || !w)
        return 1;
    for (size_t i = 0; i < (size_t)T * K; i++)
        x[i] = (float)(rand() % 2001 - 1000) / 1000.0f;
    for (int r = 0; r < T; r++)
        q8k_quantize(x + (size_t)r * K, xq + (size_t)r * NB, NB);
    double bw = read_bandwidth();
    printf("SIMD level %s; this core reads memory at %.1f GB/s\n", simd_name(simd_current()), bw);
    static const qtype types[] = { QTYPE_Q4_K, QTYPE_Q6_K };
    for (int ti = 0; ti < 2; ti++) {
        qtype t = types[ti];
        size_t rb = NB * qtype_table[t].block_bytes;
        random_rows(t, w);
        qdot_fn one = qdot_for(t);
        qdot4_fn four = qdot4_for(t);
        qgemm16_fn sixteen = qgemm16_for(t, UINT32_MAX); /* at any T: the ratio says where it pays */
        long reps = 20000;
        double t0 = cpu_now();
        for (long i = 0; i < reps; i++)
            for (int r = 0; r < ROWS; r++)
                sink += one(w + r * rb, xq, NB);
        double gbs = (double)reps * ROWS * rb / (cpu_now() - t0) / 1e9;
        printf("%s one row: %.1f GB/s of weights in cache; memory %.1f GB/s; ratio %.2f\n", qtype_name(t), gbs, bw,
               bw > 0 ? gbs / bw : 0);
        if (!four)
            continue;
        reps = 4096 / T + 1;
        double macs = (double)reps * ROWS * T * K;
        t0 = cpu_now();
        for (long i = 0; i < reps; i++)
            for (int r0 = 0; r0 < T; r0 += 4)
                for (int r = 0; r < ROWS; r++) {
                    float d[4];
                    four(w + r * rb, xq + (size_t)r0 * NB, NB, NB, d);
                    sink += d[0];
                }
        double g4 = macs / (cpu_now() - t0) / 1e9;
        if (!sixteen) {
            printf("%s four rows of x: %.1f GMAC/s (no sixteen-row kernel on this CPU)\n", qtype_name(t), g4);
            continue;
        }
        t0 = cpu_now();
        for (long i = 0; i < reps; i++)
            for (int r = 0; r < ROWS; r += 16) {
                sixteen(w + r * rb, rb, xq, NB, T, NB, acc);
                sink += acc[0];
            }
        double g16 = macs / (cpu_now() - t0) / 1e9;
        printf("%s sixteen weight rows x %d rows of x: %.1f GMAC/s; four-row kernel %.1f GMAC/s; ratio %.2f\n",
               qtype_name(t), T, g16, g4, g16 / g4);
    }
    free(x);
    free(xq);
    free(acc);
    free(w);
    return 0;
}
