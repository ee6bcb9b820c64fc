/* gpu_matvec_bench.cu - the decode step's matrix-vector products on the GPU,
 * beside the device's copy bandwidth measured in the same run.
 *
 *   build/bench/gpu_matvec_bench
 *
 * Lays out SmolLM3-3B Q4_K_M's 253 weight matrices (36 layers of q, k, v,
 * output, gate, up, down, with llama-quantize's Q6_K choices, and the tied
 * Q6_K head) as random blocks on the device (1.9 GB), then times one step of
 * all their products with cuda_matvec: launched one by one on a stream, and
 * captured once as a CUDA graph and replayed. The roofline is the weight
 * bytes over the copy bandwidth (a 1 GiB device-to-device copy, bytes read +
 * bytes written). Medians of 20 runs.
 */
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#include "matvec.h"
#include "quant.h"

#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "gpu_matvec_bench: %s: %s\n", #call, cudaGetErrorString(e_));                              \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

struct mat {
    qtype type;
    uint64_t rows, k, offset, bytes;
};

/* Random quant bits, then a sane fp16 scale in every block. */
__global__ static void fill(uint8_t *p, uint64_t n, uint64_t seed)
{
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n; i += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t z = (i + seed) * 0x9E3779B97F4A7C15ull;
        z ^= z >> 31;
        p[i] = (uint8_t)(z * 0xBF58476D1CE4E5B9ull >> 56);
    }
}

__global__ static void fix_scales(uint8_t *p, uint64_t n_blocks, int q6)
{
    for (uint64_t b = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; b < n_blocks;
         b += (uint64_t)gridDim.x * blockDim.x) {
        if (q6) {
            block_q6_K *q = (block_q6_K *)p + b;
            q->d = f32_to_fp16(1e-4f);
        } else {
            block_q4_K *q = (block_q4_K *)p + b;
            q->d = f32_to_fp16(1e-4f);
            q->dmin = f32_to_fp16(2e-4f);
        }
    }
}

static int more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static float median(std::vector<float> v)
{
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main()
{
    const uint64_t E = 2048, F = 11008, KV = 512, V = 128256;
    const int L = 36;
    std::vector<mat> mats;
    uint64_t off = 0;
    auto add = [&](qtype t, uint64_t rows, uint64_t k) {
        uint64_t bytes = rows * (k / QK_K) * (t == QTYPE_Q4_K ? sizeof(block_q4_K) : sizeof(block_q6_K));
        mats.push_back({ t, rows, k, off, bytes });
        off += (bytes + 255) / 256 * 256;
    };
    for (int l = 0; l < L; l++) {
        qtype more = more_bits(l, L) ? QTYPE_Q6_K : QTYPE_Q4_K;
        add(QTYPE_Q4_K, E, E);  /* q */
        add(QTYPE_Q4_K, KV, E); /* k */
        add(more, KV, E);       /* v */
        add(QTYPE_Q4_K, E, E);  /* output */
        add(QTYPE_Q4_K, F, E);  /* gate */
        add(QTYPE_Q4_K, F, E);  /* up */
        add(more, E, F);        /* down */
    }
    add(QTYPE_Q6_K, V, E); /* head */
    uint64_t weight_bytes = 0;
    for (const mat &m : mats)
        weight_bytes += m.bytes;

    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    uint8_t *w;
    float *x, *y;
    CHECK(cudaMalloc(&w, off));
    CHECK(cudaMalloc(&x, F * sizeof(float)));
    CHECK(cudaMalloc(&y, V * sizeof(float)));
    fill<<<4096, 256>>>(w, off, 1);
    CHECK(cudaGetLastError());
    for (const mat &m : mats) {
        fix_scales<<<1024, 256>>>(w + m.offset, m.rows * (m.k / QK_K), m.type == QTYPE_Q6_K);
        CHECK(cudaGetLastError());
    }
    fill<<<64, 256>>>((uint8_t *)x, F * sizeof(float), 7); /* any bits: then make them small floats */
    std::vector<float> hx(F);
    for (uint64_t i = 0; i < F; i++)
        hx[i] = (float)((i * 7919) % 2001) / 1000.0f - 1.0f;
    CHECK(cudaMemcpy(x, hx.data(), F * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaDeviceSynchronize());

    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    smq_err err;

    /* copy bandwidth: 1 GiB device to device */
    uint64_t cb = (uint64_t)1 << 30;
    uint8_t *c0, *c1;
    CHECK(cudaMalloc(&c0, cb));
    CHECK(cudaMalloc(&c1, cb));
    CHECK(cudaMemset(c0, 1, cb));
    /* Median milliseconds of reps runs of work() on stream s, after one warm-up. */
    auto time_ms = [&](int reps, const auto &work) {
        std::vector<float> t;
        for (int r = 0; r <= reps; r++) {
            CHECK(cudaEventRecord(a, s));
            work();
            CHECK(cudaEventRecord(b, s));
            CHECK(cudaEventSynchronize(b));
            float ms;
            CHECK(cudaEventElapsedTime(&ms, a, b));
            if (r)
                t.push_back(ms);
        }
        return median(t);
    };
    double copy_gbs = 2.0 * cb /
                      (time_ms(10, [&]() { CHECK(cudaMemcpyAsync(c1, c0, cb, cudaMemcpyDeviceToDevice, s)); }) * 1e-3) /
                      1e9;
    CHECK(cudaFree(c0));
    CHECK(cudaFree(c1));

    auto step = [&]() {
        for (const mat &m : mats)
            if (cuda_matvec(m.type, w + m.offset, m.rows, m.k, x, y, s, &err)) {
                fprintf(stderr, "gpu_matvec_bench: %s\n", err.msg);
                exit(1);
            }
    };
    float ms_stream = time_ms(20, step); /* launched one by one */
    /* as one graph */
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    step();
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    float ms_graph = time_ms(20, [&]() { CHECK(cudaGraphLaunch(ge, s)); });
    double roof_ms = weight_bytes / (copy_gbs * 1e9) * 1e3;
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    printf("copy bandwidth (1 GiB device-to-device, read + write): %.0f GB/s\n", copy_gbs);
    printf("decode-step matvecs: %zu matrices, %.3f GB of Q4_K/Q6_K weights; roofline %.3f ms\n", mats.size(),
           weight_bytes / 1e9, roof_ms);
    printf("  launched one by one: %.3f ms (%.0f GB/s), roofline/time %.2f\n", ms_stream,
           weight_bytes / (ms_stream * 1e-3) / 1e9, roof_ms / ms_stream);
    printf("  as one CUDA graph:   %.3f ms (%.0f GB/s), roofline/time %.2f -> at most %.0f tok/s for the matvecs\n",
           ms_graph, weight_bytes / (ms_graph * 1e-3) / 1e9, roof_ms / ms_graph, 1e3 / ms_graph);
    /* Per kind of matrix: all matrices of one type and shape, back to back
     * (36 distinct copies, so the 50 MB L2 cannot hold them). */
    printf("  by kind (type rows x k: GB/s of its weights, share of the step):\n");
    for (size_t i = 0; i < mats.size(); i++) {
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            seen |= mats[j].type == mats[i].type && mats[j].rows == mats[i].rows && mats[j].k == mats[i].k;
        if (seen)
            continue;
        uint64_t bytes = 0;
        float ms = time_ms(10, [&]() {
            bytes = 0;
            for (const mat &m : mats)
                if (m.type == mats[i].type && m.rows == mats[i].rows && m.k == mats[i].k) {
                    cuda_matvec(m.type, w + m.offset, m.rows, m.k, x, y, s, &err);
                    bytes += m.bytes;
                }
        });
        printf("    %s %6llu x %5llu: %5.0f GB/s, %4.1f%% of the step\n", qtype_name(mats[i].type),
               (unsigned long long)mats[i].rows, (unsigned long long)mats[i].k, bytes / (ms * 1e-3) / 1e9,
               100.0 * ms / ms_stream);
    }
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaFree(w));
    CHECK(cudaFree(x));
    CHECK(cudaFree(y));
    return 0;
}
