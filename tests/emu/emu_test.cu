/* emu_test.cu - the host emulation of the device (cuda_emu.h) checked on its
 * own: that it computes what a device would (warp exchanges, WMMA, graphs,
 * cuBLAS) and that it refuses what a device refuses (calls during a stream
 * capture, dynamic shared memory past the limit, cuBLAS arguments, WMMA
 * pointers) or would corrupt silently (a matrix past its allocation, a
 * barrier not every thread reaches). The last ones abort the process: they
 * run in a child. Built and run only as an emulated program. */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <dlfcn.h>
#include <mma.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launch.cuh"
#include "test.h"

__global__ static void warp_ops_kernel(int *out)
{
    int lane = threadIdx.x % 32, v = lane + 1, sum = v;
    for (int m = 16; m > 0; m >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, m);
    int down = __shfl_down_sync(0xffffffffu, v, 1), bcast = __shfl_sync(0xffffffffu, v, 5);
    int any = __any_sync(0xffffffffu, lane == 17), none = __any_sync(0xffffffffu, 0);
    out[threadIdx.x] = sum * 1000000 + down * 1000 + bcast * 10 + any * 2 + none;
}

static void test_warp_exchanges(void)
{
    int *d = NULL, h[64];
    CHECK(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    CHECK(launch_plain(warp_ops_kernel, 1, 64, 0, 0, d) == cudaSuccess);
    CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (int t = 0; t < 64; t++) {
        int lane = t % 32, down = lane < 31 ? lane + 2 : lane + 1;
        CHECK_INT(h[t], 528 * 1000000 + down * 1000 + 6 * 10 + 2);
    }
    cudaFree(d);
}

/* Each thread reads what the one before it wrote: without the barrier a
 * race, which one of the two orders of turns shows. */
__global__ static void neighbour_kernel(int *out, int sync)
{
    __shared__ int s[64];
    s[threadIdx.x] = (int)threadIdx.x + 1;
    if (sync)
        __syncthreads();
    out[threadIdx.x] = s[(threadIdx.x + 63) % 64];
}

static void test_orders_show_races(void)
{
    int *d = NULL, h[2][2][64];
    CHECK(cudaMalloc((void **)&d, 64 * sizeof(int)) == cudaSuccess);
    for (int rev = 0; rev < 2; rev++)
        for (int sync = 0; sync < 2; sync++) {
            emu_set_order(rev);
            CHECK(cudaMemset(d, 0, 64 * sizeof(int)) == cudaSuccess);
            launch_plain(neighbour_kernel, 1, 64, 0, 0, d, sync);
            cudaMemcpy(h[rev][sync], d, sizeof h[rev][sync], cudaMemcpyDeviceToHost);
        }
    emu_set_order(0);
    int right[2] = { 0, 0 };
    for (int rev = 0; rev < 2; rev++)
        for (int t = 0; t < 64; t++) {
            CHECK_INT(h[rev][1][t], (t + 63) % 64 + 1);
            right[rev] += h[rev][0][t] == (t + 63) % 64 + 1;
        }
    CHECK_MSG(right[0] < 64 || right[1] < 64, "the race read right in both orders (%d, %d of 64)", right[0], right[1]);
    cudaFree(d);
}

/* C = A B for one warp: A row-major, B row- or column-major. */
template <class BL> __global__ static void wmma_kernel(const __half *a, const __half *b, float *c)
{
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, BL> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 1.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

static void test_wmma_product(void)
{
    __half ha[256], hb[256];
    for (int i = 0; i < 256; i++) {
        ha[i] = __float2half((float)(i % 7) - 3.f);
        hb[i] = __float2half((float)(i % 5) * 0.5f);
    }
    __half *a = NULL, *b = NULL;
    float *c = NULL, hc[256];
    CHECK(cudaMalloc((void **)&a, sizeof ha) == cudaSuccess && cudaMalloc((void **)&b, sizeof hb) == cudaSuccess &&
          cudaMalloc((void **)&c, sizeof hc) == cudaSuccess);
    cudaMemcpy(a, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb, sizeof hb, cudaMemcpyHostToDevice);
    for (int col = 0; col < 2; col++) {
        if (col)
            launch_plain(wmma_kernel<nvcuda::wmma::col_major>, 1, 32, 0, 0, a, b, c);
        else
            launch_plain(wmma_kernel<nvcuda::wmma::row_major>, 1, 32, 0, 0, a, b, c);
        cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
        int wrong = 0;
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) {
                float s = 1.f;
                for (int k = 0; k < 16; k++)
                    s += __half2float(ha[16 * i + k]) * __half2float(col ? hb[16 * j + k] : hb[16 * k + j]);
                wrong += hc[16 * i + j] != s;
            }
        CHECK_MSG(!wrong, "%s B: %d of 256 elements wrong", col ? "column-major" : "row-major", wrong);
    }
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
}

__global__ static void add_kernel(int *x, int v)
{
    atomicAdd(x, v);
}

/* Captured work runs at each replay, not at capture; a capture refuses
 * allocation, synchronous copies and work for other streams, and ends
 * invalidated. */
static void test_graph_capture(void)
{
    cudaStream_t s, other;
    int *x = NULL, h = 0;
    CHECK(cudaStreamCreate(&s) == cudaSuccess && cudaStreamCreate(&other) == cudaSuccess);
    CHECK(cudaMalloc((void **)&x, sizeof *x) == cudaSuccess && cudaMemset(x, 0, sizeof *x) == cudaSuccess);
    cudaGraph_t g = NULL;
    cudaGraphExec_t ex = NULL;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    CHECK(launch_plain(add_kernel, 1, 1, 0, s, x, 5) == cudaSuccess);
    CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g);
    CHECK(cudaGraphInstantiate(&ex, g, 0) == cudaSuccess);
    CHECK(cudaMemcpy(&h, x, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_INT(h, 0);
    CHECK(cudaGraphLaunch(ex, s) == cudaSuccess && cudaGraphLaunch(ex, s) == cudaSuccess);
    CHECK(cudaMemcpy(&h, x, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_INT(h, 10);
    cudaGraphExecDestroy(ex);
    cudaGraphDestroy(g);
    const struct {
        const char *what;
        int op;
    } refused[] = {
        { "cudaMalloc", 0 }, { "cudaMemcpy", 1 }, { "a launch on another stream", 2 }, { "cudaStreamSynchronize", 3 }
    };
    for (const auto &r : refused) {
        CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
        void *p = NULL;
        cudaError_t e = r.op == 0   ? cudaMalloc(&p, 64)
                        : r.op == 1 ? cudaMemcpy(&h, x, sizeof h, cudaMemcpyDeviceToHost)
                        : r.op == 2 ? launch_plain(add_kernel, 1, 1, 0, other, x, 1)
                                    : cudaStreamSynchronize(s);
        CHECK_MSG(e != cudaSuccess, "%s during a capture: allowed", r.what);
        g = NULL;
        CHECK_MSG(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g,
                  "%s during a capture: the capture not invalidated", r.what);
        cudaGetLastError();
    }
    CHECK(cudaMemcpy(&h, x, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK_INT(h, 10);
    cudaFree(x);
    cudaStreamDestroy(s);
    cudaStreamDestroy(other);
}

__global__ static void smem_kernel(int *out)
{
    SMQ_DYNAMIC_SMEM(smem);
    ((int *)smem)[threadIdx.x] = (int)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = ((int *)smem)[31 - threadIdx.x];
}

static void test_dynamic_shared_memory(void)
{
    int *d = NULL, h[32];
    CHECK(cudaMalloc((void **)&d, sizeof h) == cudaSuccess);
    CHECK(launch_plain(smem_kernel, 1, 32, 64 << 10, 0, d) == cudaErrorInvalidValue); /* past 48 KB: refused */
    cudaGetLastError();
    CHECK(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10) == cudaSuccess);
    CHECK(launch_plain(smem_kernel, 1, 32, 64 << 10, 0, d) == cudaSuccess);
    CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
    for (int i = 0; i < 32; i++)
        CHECK_INT(h[i], 31 - i);
    cudaFree(d);
}

typedef cublasStatus_t (*gemm_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                                  const void *, cudaDataType, int, const void *, cudaDataType, int, const void *,
                                  void *, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
static gemm_fn gemm;
static cublasHandle_t handle;

static int open_cublas(void)
{
    void *lib = dlopen(getenv("SMQ_CUBLAS"), RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return 0;
    auto create = (decltype(&cublasCreate_v2))dlsym(lib, "cublasCreate_v2");
    gemm = (gemm_fn)dlsym(lib, "cublasGemmEx");
    return create && gemm && create(&handle) == CUBLAS_STATUS_SUCCESS;
}

/* C (m x n) = op(A) op(B) for 16-element columns, C in fp32 at c. */
static cublasStatus_t gemm_at(const __half *a, int lda, const __half *b, int ldb, float *c, int ldc, int m, int n,
                              int k)
{
    const float one = 1.f, zero = 0.f;
    return gemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, a, CUDA_R_16F, lda, b, CUDA_R_16F, ldb, &zero, c,
                CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

static void test_cublas(void)
{
    if (!open_cublas()) {
        test_fail(__FILE__, __LINE__, "the emulated cuBLAS (SMQ_CUBLAS=%s) does not load", getenv("SMQ_CUBLAS"));
        return;
    }
    __half ha[3 * 16], hb[2 * 16];
    for (int i = 0; i < 48; i++)
        ha[i] = __float2half((float)(i % 9) - 4.f);
    for (int i = 0; i < 32; i++)
        hb[i] = __float2half((float)(i % 3));
    __half *a = NULL, *b = NULL;
    float *c = NULL, hc[6];
    CHECK(cudaMalloc((void **)&a, sizeof ha) == cudaSuccess && cudaMalloc((void **)&b, sizeof hb) == cudaSuccess &&
          cudaMalloc((void **)&c, sizeof hc) == cudaSuccess);
    cudaMemcpy(a, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb, sizeof hb, cudaMemcpyHostToDevice);
    CHECK_INT(gemm_at(a, 16, b, 16, c, 3, 3, 2, 16), CUBLAS_STATUS_SUCCESS); /* A^T: 3 rows of 16 */
    cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 3; i++) {
            float s = 0;
            for (int k = 0; k < 16; k++)
                s += __half2float(ha[16 * i + k]) * __half2float(hb[16 * j + k]);
            CHECK_MSG(hc[3 * j + i] == s, "C(%d,%d) = %g, want %g", i, j, hc[3 * j + i], s);
        }
    CHECK_INT(gemm_at(a, 15, b, 16, c, 3, 3, 2, 16), CUBLAS_STATUS_INVALID_VALUE); /* lda < k */
    CHECK_INT(gemm_at(a, 16, b, 16, c, 2, 3, 2, 16), CUBLAS_STATUS_INVALID_VALUE); /* ldc < m */
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
}

/* fn in a child process: whether it died of SIGABRT (the emulation's
 * reports) with stderr naming want. */
static void check_aborts(void (*fn)(void), const char *want)
{
    int fds[2];
    if (pipe(fds))
        return test_fail(__FILE__, __LINE__, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        fn();
        _exit(0);
    }
    close(fds[1]);
    char buf[1024] = { 0 };
    size_t n = 0;
    for (ssize_t r; n < sizeof buf - 1 && (r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0;)
        n += (size_t)r;
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "expected an abort (%s); status %d", want, st);
    CHECK_CONTAINS(buf, want);
    printf("  reported: %.*s\n", (int)strcspn(buf, "\n"), buf);
}

/* lanes 0-15 wait at the block's barrier, lanes 16-31 of the same warp
 * at the warp's: neither is ever complete */
__global__ static void divergent_kernel(void)
{
    if (threadIdx.x < 16)
        __syncthreads();
    else
        __syncwarp();
}

static void run_divergent(void)
{
    launch_plain(divergent_kernel, 1, 64, 0, 0);
}

static void run_gemm_past_allocation(void)
{
    __half *a = NULL, *b = NULL;
    float *c = NULL;
    cudaMalloc((void **)&a, 3 * 16 * 2);
    cudaMalloc((void **)&b, 2 * 16 * 2);
    cudaMalloc((void **)&c, 6 * 4);
    if (open_cublas())
        gemm_at(a, 16, b, 16, c, 4, 4, 2, 16); /* 4 rows of A: one past its allocation */
}

__global__ static void misaligned_wmma_kernel(const __half *a)
{
    nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
    nvcuda::wmma::load_matrix_sync(fa, a + 8, 16);
}

static void run_misaligned_wmma(void)
{
    __half *a = NULL;
    cudaMalloc((void **)&a, 1024);
    launch_plain(misaligned_wmma_kernel, 1, 32, 0, 0, (const __half *)a);
}

/* Programmatic dependent launch (launch.cuh): a kernel that keeps the
 * contract, and three that break it. mode 0: prefetch, wait, release,
 * then read and write; 1: read before grid_wait(); 2: write before it;
 * 3: grid_release() before grid_wait(). */
__global__ static void pdl_kernel(const float *in, float *out, int mode)
{
    if (threadIdx.x == 5 && mode == 1 && in[0] > 1e30f)
        return;
    if (threadIdx.x == 5 && mode == 2)
        out[1] = 1.f;
    if (mode == 3)
        grid_release();
    prefetch_l2(in, 64, threadIdx.x % 32);
    grid_wait();
    grid_release();
    out[threadIdx.x] = in[threadIdx.x] + 1.f;
}

static void run_pdl(int mode)
{
    float *in = NULL, *out = NULL, h[32];
    cudaMalloc((void **)&in, sizeof h);
    cudaMalloc((void **)&out, sizeof h);
    cudaMemset(in, 0, sizeof h);
    CHECK(pdl_on());
    CHECK(pdl_launch(pdl_kernel, 1, 32, 0, 0, (const float *)in, out, mode) == cudaSuccess);
    cudaMemcpy(h, out, sizeof h, cudaMemcpyDeviceToHost);
    for (int i = 0; i < 32; i++)
        CHECK(h[i] == 1.f);
    cudaFree(in);
    cudaFree(out);
}

static void run_pdl_read_early(void)
{
    run_pdl(1);
}

static void run_pdl_write_early(void)
{
    run_pdl(2);
}

static void run_pdl_release_early(void)
{
    run_pdl(3);
}

static void test_pdl_contract(void)
{
    run_pdl(0);
    /* the same kernel launched ordinarily may read where it likes */
    float *in = NULL, *out = NULL;
    cudaMalloc((void **)&in, 32 * sizeof(float));
    cudaMalloc((void **)&out, 32 * sizeof(float));
    CHECK(launch_plain(pdl_kernel, 1, 32, 0, 0, (const float *)in, out, 1) == cudaSuccess &&
          cudaDeviceSynchronize() == cudaSuccess);
    cudaFree(in);
    cudaFree(out);
    check_aborts(run_pdl_read_early, "read 4 bytes at");
    check_aborts(run_pdl_write_early, "wrote 4 bytes at");
    check_aborts(run_pdl_release_early, "called grid_release() before grid_wait()");
}

static void test_reports(void)
{
    check_aborts(run_divergent, "deadlock in block (0,0,0)");
    check_aborts(run_gemm_past_allocation, "matrix A");
    check_aborts(run_misaligned_wmma, "32-byte aligned");
}

int main(void)
{
    test_program = "emu";
    TEST_RUN(test_warp_exchanges);
    TEST_RUN(test_orders_show_races);
    TEST_RUN(test_wmma_product);
    TEST_RUN(test_graph_capture);
    TEST_RUN(test_dynamic_shared_memory);
    TEST_RUN(test_cublas);
    TEST_RUN(test_reports);
    TEST_RUN(test_pdl_contract);
    return test_done();
}
