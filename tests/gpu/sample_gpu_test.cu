/* sample_gpu_test.cu - the sampling chain on the device (fwd_sample) against
 * the host's sampler_choose: on rows of the real vocabulary (128,256) with
 * spread, peaked, tied and NaN logits, under greedy, penalties, temperature,
 * top-k, top-p and min-p, and uniforms at both ends, all picks of one launch
 * must choose the host's token exactly, and the penalized logits must be the
 * host's bits. Prints the launch's time. Skipped without a GPU. */
#include <cuda_runtime.h>
#include <math.h>

#include "dequant.h"
#include "fwd_kernels.h"
#include "sampler.h"
#include "test.h"

#define NV    128256
#define PICKS 48 /* SMQ_SAMPLE_TEST_PICKS=n: the first n only (under a slow checker) */

static int have_gpu;

/* Row i's parameters: every filter alone and together, greedy, penalties. */
static sampling_params params_for(int i)
{
    sampling_params p = sampling_defaults();
    switch (i % 12) {
    case 0:
        p.temperature = 0;
        break;
    case 1:
        p.temperature = 0;
        p.repeat_penalty = 1.3f;
        p.presence_penalty = 0.5f;
        break;
    case 2:
        break; /* 0.6, top-p 0.95 */
    case 3:
        p.temperature = 1;
        p.top_p = 1;
        p.top_k = 40;
        break;
    case 4:
        p.temperature = 0.7f;
        p.top_p = 1;
        p.min_p = 0.05f;
        break;
    case 5:
        p.temperature = 1.3f;
        p.top_p = 0.5f;
        p.top_k = 200;
        p.min_p = 0.01f;
        break;
    case 6:
        p.temperature = 5;
        p.top_p = 1;
        break;
    case 7:
        p.temperature = 1;
        p.top_k = 1;
        break;
    case 8:
        p.temperature = 1;
        p.top_p = 1e-6f;
        break;
    case 9:
        p.temperature = 0.9f;
        p.frequency_penalty = 0.7f;
        p.repeat_penalty = 1.5f;
        break;
    case 10:
        p.temperature = 1;
        p.top_p = 1;
        p.top_k = 0;
        break; /* the whole vocabulary */
    default:
        p.temperature = 0.8f;
        p.top_k = 5000;
        p.top_p = 0.99f;
        break;
    }
    return p;
}

static void fill_row(int i, float *l)
{
    float sigma = i % 3 == 0 ? 1.0f : i % 3 == 1 ? 3.0f : 8.0f;
    int ties = i % 5 == 0, flat = i == 17, nans = i % 7 == 3;
    for (uint32_t v = 0; v < NV; v++) {
        l[v] = flat ? 0.5f : (float)(sigma * test_normal());
        if (ties)
            l[v] = roundf(l[v] * 4) / 4;
    }
    if (nans)
        for (int k = 0; k < 50; k++)
            l[test_rng() % NV] = k % 2 ? NAN : -INFINITY;
}

static void test_chain_matches_host(void)
{
    if (!have_gpu) {
        test_skip("no CUDA device");
        return;
    }
    const char *env = getenv("SMQ_SAMPLE_TEST_PICKS");
    int n_picks = env && atoi(env) > 0 && atoi(env) < PICKS ? atoi(env) : PICKS;
    float *host = (float *)malloc((size_t)PICKS * NV * 4), *dev_back = (float *)malloc((size_t)PICKS * NV * 4);
    fwd_pick_row rows[PICKS];
    uint32_t *pairs = (uint32_t *)malloc((size_t)PICKS * 64 * 2 * 4), n_pairs = 0;
    sampler smp[PICKS];
    sample_pick pk[PICKS];
    int32_t hist[300];
    for (int i = 0; i < PICKS; i++) {
        fill_row(i, host + (size_t)i * NV);
        sampling_params p = params_for(i);
        p.seed = (uint64_t)i;
        sampler_init(&smp[i], &p);
        for (int k = 0; k < 300; k++)
            hist[k] = (int32_t)(test_rng() % 2000); /* a window of 64 with repeats */
        CHECK(sampler_prepare(&smp[i], hist, 300, &pk[i]) == 0);
        if (i % 9 == 4)
            pk[i].u = 0;
        if (i % 9 == 5)
            pk[i].u = 1 - 0x1.0p-53;
        rows[i] = fwd_pick_row{ pk[i].p, pk[i].u, (uint32_t)i, n_pairs, pk[i].n_pen, 0 };
        for (uint32_t k = 0; k < pk[i].n_pen; k++, n_pairs++) {
            pairs[2 * n_pairs] = (uint32_t)pk[i].pen_tokens[k];
            pairs[2 * n_pairs + 1] = pk[i].pen_counts[k];
        }
    }
    float *dl = NULL;
    fwd_pick_row *drows = NULL;
    uint32_t *dpairs = NULL;
    uint64_t *dslots = NULL;
    int32_t *dout = NULL, out[PICKS];
    int ok = cudaMalloc((void **)&dl, (size_t)PICKS * NV * 4) == cudaSuccess &&
             cudaMalloc((void **)&drows, sizeof rows) == cudaSuccess &&
             cudaMalloc((void **)&dpairs, (n_pairs + 1) * 8) == cudaSuccess &&
             cudaMalloc((void **)&dslots, (size_t)PICKS * NV * 8) == cudaSuccess &&
             cudaMalloc((void **)&dout, sizeof out) == cudaSuccess &&
             cudaMemcpy(dl, host, (size_t)PICKS * NV * 4, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(drows, rows, sizeof rows, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemcpy(dpairs, pairs, n_pairs * 8, cudaMemcpyHostToDevice) == cudaSuccess &&
             cudaMemset(dout, 0xFF, sizeof out) == cudaSuccess;
    CHECK_MSG(ok, "device buffers");
    smq_err err;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaEventRecord(e0, 0);
    if (ok && fwd_sample(dl, NV, drows, (uint32_t)n_picks, dpairs, dslots, dout, 0, &err)) {
        test_fail(__FILE__, __LINE__, "fwd_sample: %s", err.msg);
        ok = 0;
    }
    cudaEventRecord(e1, 0);
    ok = ok && cudaDeviceSynchronize() == cudaSuccess &&
         cudaMemcpy(out, dout, sizeof out, cudaMemcpyDeviceToHost) == cudaSuccess &&
         cudaMemcpy(dev_back, dl, (size_t)PICKS * NV * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
    CHECK_MSG(ok, "the launch: %s", cudaGetErrorString(cudaGetLastError()));
    float ms_all = 0;
    cudaEventElapsedTime(&ms_all, e0, e1);
    /* one pick alone (pick 2: the default chain): the cost a batch-1 decode step pays; timed
     * before the host penalizes its copies below */
    float ms_one = 0;
    if (ok) {
        /* pick 2's logits as they were (the launch above penalized them on the device) */
        cudaMemcpy(dl + 2 * (size_t)NV, host + 2 * (size_t)NV, (size_t)NV * 4, cudaMemcpyHostToDevice);
        cudaEventRecord(e0, 0);
        fwd_sample(dl, NV, drows + 2, 1, dpairs, dslots, dout, 0, &err);
        cudaEventRecord(e1, 0);
        cudaDeviceSynchronize();
        cudaEventElapsedTime(&ms_one, e0, e1);
    }
    int same = 0, drawn_elsewhere = 0;
    for (int i = 0; ok && i < n_picks; i++) {
        float *l = host + (size_t)i * NV;
        int32_t want = sampler_choose(&smp[i], l, NV, &pk[i]);
        same += out[i] == want;
        CHECK_MSG(out[i] == want,
                  "pick %d (T %g, top-k %d, top-p %g, min-p %g, u %.17g, %u penalties): device %d, host %d", i,
                  pk[i].p.temperature, (int)pk[i].p.top_k, pk[i].p.top_p, pk[i].p.min_p, pk[i].u, pk[i].n_pen, out[i],
                  want);
        CHECK_MSG(!memcmp(l, dev_back + (size_t)i * NV, NV * 4), "pick %d: the penalized logits differ", i);
        uint32_t best = 0;
        for (uint32_t v = 1; v < NV; v++)
            best = l[v] > l[best] ? v : best;
        drawn_elsewhere += pk[i].p.temperature > 0 && out[i] != (int32_t)best;
    }
    printf("  %d of %d picks equal the host's (%d drawn other than the best); one launch of %d picks %.3f ms, "
           "one pick %.3f ms\n",
           same, n_picks, drawn_elsewhere, n_picks, ms_all, ms_one);
    CHECK_MSG(drawn_elsewhere > 0 || n_picks < PICKS, "every draw took the best token: the draw was not tested");
    for (int i = 0; i < PICKS; i++)
        sampler_free(&smp[i]);
    cudaFree(dl);
    cudaFree(drows);
    cudaFree(dpairs);
    cudaFree(dslots);
    cudaFree(dout);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    free(host);
    free(dev_back);
    free(pairs);
}

int main(void)
{
    test_program = "sample_gpu";
    have_gpu = cuda_device_count() > 0;
    TEST_RUN(test_chain_matches_host);
    return test_done();
}
