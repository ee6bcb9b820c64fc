/* gemm.cu - many-row products through cuBLAS on fp16 weights dequantized
 * into a scratch buffer; see gemm.h.
 *
 * Bytes: a product of n rows reads the weight blocks once (0.56 bytes per
 * Q4_K weight), writes and reads their fp16 (4 bytes per weight, most of it
 * in L2 when a stack of rows fits there) and does 2n FLOPs per weight on the
 * tensor cores: for a prompt of hundreds of tokens the FLOPs dominate, which
 * is what cuBLAS is the best tool for.
 */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "launch.cuh"
#include "qdot.cuh"
#include "quant.h"

#ifndef SMQ_CUDA_LIBDIR
#define SMQ_CUDA_LIBDIR "/usr/local/cuda/lib64"
#endif

#define CONV_THREADS  256
#define CONV_MAX_CTAS (1u << 20) /* grid-stride beyond this */

/* cublasGemmEx with the cublasComputeType_t argument (C++ also declares an
 * older overload). */
typedef cublasStatus_t (*gemm_ex_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                                     const void *, cudaDataType, int, const void *, cudaDataType, int, const void *,
                                     void *, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);

struct cuda_gemm {
    void *lib;
    char path[256];
    cublasHandle_t handle;
    void *stream; /* the handle's, which the dequantization shares */
    decltype(&cublasDestroy_v2) destroy;
    gemm_ex_fn gemm_ex;
    decltype(&cublasGetStatusString) status_string; /* NULL in a library without it */
};

static int gemm_fail(const cuda_gemm *g, smq_err *err, const char *what, cublasStatus_t st)
{
    const char *s = g->status_string ? g->status_string(st) : NULL;
    return smq_err_set(err, "cuda gemm: %s: cuBLAS status %d%s%s", what, (int)st, s ? ", " : "", s ? s : "");
}

/* The library's file, opened: $SMQ_CUBLAS, else the usual names. */
static void *open_cublas(char *path, size_t len, smq_err *err)
{
    static const char *const names[] = { "libcublas.so.13",
                                         "libcublas.so.12",
                                         "libcublas.so",
                                         SMQ_CUDA_LIBDIR "/libcublas.so.13",
                                         SMQ_CUDA_LIBDIR "/libcublas.so.12",
                                         SMQ_CUDA_LIBDIR "/libcublas.so" };
    const char *env = getenv("SMQ_CUBLAS");
    if (env && *env) {
        void *h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *why = dlerror();
            smq_err_set(err, "cuda gemm: cannot load SMQ_CUBLAS=%s: %s", env, why ? why : "unknown error");
            return NULL;
        }
        snprintf(path, len, "%s", env);
        return h;
    }
    const char *why = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) {
            snprintf(path, len, "%s", names[i]);
            return h;
        }
        why = dlerror();
    }
    smq_err_set(err, "cuda gemm: cuBLAS not found (libcublas.so.13, .12 or .so, here or in %s): %s", SMQ_CUDA_LIBDIR,
                why ? why : "unknown error");
    return NULL;
}

extern "C" cuda_gemm *cuda_gemm_new(void *stream, smq_err *err)
{
    cuda_gemm *g = (cuda_gemm *)calloc(1, sizeof *g);
    if (!g) {
        smq_err_set(err, "cuda gemm: out of memory");
        return NULL;
    }
    if (!(g->lib = open_cublas(g->path, sizeof g->path, err))) {
        free(g);
        return NULL;
    }
    decltype(&cublasCreate_v2) create = (decltype(&cublasCreate_v2))dlsym(g->lib, "cublasCreate_v2");
    decltype(&cublasSetStream_v2) set_stream = (decltype(&cublasSetStream_v2))dlsym(g->lib, "cublasSetStream_v2");
    g->destroy = (decltype(&cublasDestroy_v2))dlsym(g->lib, "cublasDestroy_v2");
    g->gemm_ex = (gemm_ex_fn)dlsym(g->lib, "cublasGemmEx");
    g->status_string = (decltype(&cublasGetStatusString))dlsym(g->lib, "cublasGetStatusString");
    if (!create || !set_stream || !g->destroy || !g->gemm_ex) {
        smq_err_set(err, "cuda gemm: %s lacks cublasCreate_v2, cublasSetStream_v2, cublasDestroy_v2 or cublasGemmEx",
                    g->path);
        dlclose(g->lib);
        free(g);
        return NULL;
    }
    g->stream = stream;
    cublasStatus_t st = create(&g->handle);
    if (st == CUBLAS_STATUS_SUCCESS && (st = set_stream(g->handle, (cudaStream_t)stream)) != CUBLAS_STATUS_SUCCESS)
        g->destroy(g->handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        gemm_fail(g, err, "creating a handle", st);
        cudaGetLastError();
        dlclose(g->lib);
        free(g);
        return NULL;
    }
    return g;
}

extern "C" void cuda_gemm_free(cuda_gemm **gp)
{
    cuda_gemm *g = *gp;
    if (!g)
        return;
    g->destroy(g->handle);
    /* The library stays loaded: its CUDA state may outlive the handle. */
    free(g);
    *gp = NULL;
}

extern "C" const char *cuda_gemm_library(const cuda_gemm *g)
{
    return g->path;
}

/* ---- conversions to fp16 ---- */

static unsigned conv_ctas(uint64_t groups)
{
    uint64_t n = (groups + CONV_THREADS - 1) / CONV_THREADS;
    return (unsigned)(n < CONV_MAX_CTAS ? (n ? n : 1) : CONV_MAX_CTAS);
}

static __device__ uint4 pack8(const float *v)
{
    __half2 h[4];
#pragma unroll
    for (int j = 0; j < 4; j++)
        h[j] = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
    uint4 out;
    memcpy(&out, h, sizeof out);
    return out;
}

/* Eight consecutive elements a thread (one 16-byte store): element values
 * by quant.h's functions, as the CPU's dequantization gives them. w: the
 * first row's blocks, rows row_bytes apart, k elements each. */
template <qtype T>
__global__ static void dequant_f16_kernel(const uint8_t *__restrict__ w, uint64_t row_bytes, uint32_t k,
                                          uint64_t groups, uint4 *__restrict__ out)
{
    for (uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
         g += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t e = 8 * g, r = e / k;
        uint32_t c = (uint32_t)(e % k);
        const uint8_t *blk = w + r * row_bytes + (uint64_t)(c / QK_K) * dev_block_bytes(T);
        int i0 = (int)(c % QK_K);
        float v[8];
#pragma unroll
        for (int j = 0; j < 8; j++)
            v[j] = T == QTYPE_Q4_K ? q4k_value((const block_q4_K *)blk, i0 + j)
                                   : q6k_value((const block_q6_K *)blk, i0 + j);
        out[g] = pack8(v);
    }
}

extern "C" int cuda_dequant_f16(const dev_mat *w, uint64_t r0, uint64_t n, uint16_t *d_out, void *stream, smq_err *err)
{
    if ((w->type != QTYPE_Q4_K && w->type != QTYPE_Q6_K) || w->ne0 % QK_K || w->ne0 == 0 || w->ne0 > UINT_MAX)
        return smq_err_set(err, "cuda_dequant_f16: type %s with rows of %llu: Q4_K or Q6_K rows of 256-element blocks",
                           qtype_name(w->type), (unsigned long long)w->ne0);
    if (r0 > w->ne1 || n > w->ne1 - r0)
        return smq_err_set(err, "cuda_dequant_f16: rows %llu..%llu of a matrix of %llu", (unsigned long long)r0,
                           (unsigned long long)(r0 + n), (unsigned long long)w->ne1);
    if (n == 0)
        return 0;
    uint64_t groups = n * w->ne0 / 8;
    const uint8_t *src = w->d + r0 * w->row_bytes;
    cudaStream_t s = (cudaStream_t)stream;
    if (w->type == QTYPE_Q4_K)
        launch_plain(dequant_f16_kernel<QTYPE_Q4_K>, conv_ctas(groups), CONV_THREADS, 0, s, src, w->row_bytes,
                     (uint32_t)w->ne0, groups, (uint4 *)d_out);
    else
        launch_plain(dequant_f16_kernel<QTYPE_Q6_K>, conv_ctas(groups), CONV_THREADS, 0, s, src, w->row_bytes,
                     (uint32_t)w->ne0, groups, (uint4 *)d_out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return smq_err_set(err, "cuda_dequant_f16: launch: %s", cudaGetErrorString(e));
    return 0;
}

extern "C" int cuda_dequant_stack(const dev_mat *const *ws, int n_w, uint64_t r0, uint64_t n, uint16_t *d_out,
                                  void *stream, smq_err *err)
{
    uint64_t base = 0, k = ws[0]->ne0;
    for (int i = 0; i < n_w; i++) {
        uint64_t lo = r0 > base ? r0 : base, end = base + ws[i]->ne1;
        uint64_t hi = r0 + n < end ? r0 + n : end;
        if (lo < hi && cuda_dequant_f16(ws[i], lo - base, hi - lo, d_out + (lo - r0) * k, stream, err))
            return -1;
        base = end;
    }
    return 0;
}

/* Eight elements of a q16 row a thread: (256 hi + lo) * d of their group. */
__global__ static void q16_to_f16_kernel(const uint8_t *__restrict__ act, uint32_t n, uint64_t groups,
                                         uint4 *__restrict__ out)
{
    for (uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
         g += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t e = 8 * g, r = e / n;
        uint32_t c = (uint32_t)(e % n);
        q16_view a = q16_at(act + r * q16_row_bytes(n), n);
        uint2 hi = __ldg((const uint2 *)(a.hi + c)), lo = __ldg((const uint2 *)(a.lo + c));
        float d = __ldg(a.d + c / 32), v[8];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint32_t hw = j < 4 ? hi.x : hi.y, lw = j < 4 ? lo.x : lo.y;
            int h = (int8_t)(hw >> (8 * (j % 4))), l = (int8_t)(lw >> (8 * (j % 4)));
            v[j] = __fmul_rn((float)(256 * h + l), d);
            if (fabsf(v[j]) > 65504.f) /* past fp16's range: saturate rather than become inf (NaN stays) */
                v[j] = copysignf(65504.f, v[j]);
        }
        out[g] = pack8(v);
    }
}

extern "C" int cuda_q16_to_f16(const uint8_t *d_q16, uint64_t n, uint64_t n_rows, uint16_t *d_out, void *stream,
                               smq_err *err)
{
    if (n == 0 || n % QK_K || n > UINT_MAX)
        return smq_err_set(err, "cuda_q16_to_f16: rows of %llu elements: rows must be 256-element blocks",
                           (unsigned long long)n);
    if (n_rows == 0)
        return 0;
    uint64_t groups = n_rows * n / 8;
    launch_plain(q16_to_f16_kernel, conv_ctas(groups), CONV_THREADS, 0, (cudaStream_t)stream, d_q16, (uint32_t)n,
                 groups, (uint4 *)d_out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return smq_err_set(err, "cuda_q16_to_f16: launch: %s", cudaGetErrorString(e));
    return 0;
}

/* ---- the product ---- */

/* y (+)= W a on weights in fp16: W rows x k row-major at w16 (a column-major
 * k x rows), a column-major k x n_x, y column-major rows x n_x (ldc). */
static int gemm_f16(cuda_gemm *g, const uint16_t *w16, uint64_t rows, uint64_t k, const uint16_t *d_a, uint64_t n_x,
                    float *d_y, uint64_t ldc, int accumulate, smq_err *err)
{
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    cublasStatus_t st =
        g->gemm_ex(g->handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, (int)n_x, (int)k, &alpha, w16, CUDA_R_16F, (int)k,
                   d_a, CUDA_R_16F, (int)k, &beta, d_y, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS ? 0 : gemm_fail(g, err, "cublasGemmEx", st);
}

/* The shapes both entry points take; *ldc: the output's row stride for
 * cuBLAS (y_stride, or rows for a single row). */
static int check_shape(uint64_t rows, uint64_t k, uint64_t n_x, uint64_t y_stride, uint64_t *ldc, smq_err *err)
{
    if (k == 0 || k % QK_K || k > INT_MAX || rows > INT_MAX || n_x > INT_MAX || y_stride > INT_MAX)
        return smq_err_set(err, "cuda gemm: %llu x %llu weights times %llu rows: out of range",
                           (unsigned long long)rows, (unsigned long long)k, (unsigned long long)n_x);
    if (n_x > 1 && y_stride < rows)
        return smq_err_set(err, "cuda gemm: y stride %llu for %llu rows", (unsigned long long)y_stride,
                           (unsigned long long)rows);
    *ldc = n_x > 1 || y_stride >= rows ? y_stride : rows;
    return 0;
}

extern "C" int cuda_gemm_run_f16(cuda_gemm *g, const uint16_t *d_w16, uint64_t rows, uint64_t k, const uint16_t *d_a,
                                 uint64_t n_x, float *d_y, uint64_t y_stride, int accumulate, smq_err *err)
{
    uint64_t ldc = 0;
    if (check_shape(rows, k, n_x, y_stride, &ldc, err))
        return -1;
    return n_x == 0 || rows == 0 ? 0 : gemm_f16(g, d_w16, rows, k, d_a, n_x, d_y, ldc, accumulate, err);
}

extern "C" int cuda_gemm_run(cuda_gemm *g, const dev_mat *const *ws, int n_w, const uint16_t *d_a, uint64_t n_x,
                             float *d_y, uint64_t y_stride, int accumulate, uint16_t *d_scratch,
                             uint64_t scratch_halves, smq_err *err)
{
    if (n_w < 1)
        return smq_err_set(err, "cuda gemm: no matrix");
    uint64_t k = ws[0]->ne0, rows = 0, ldc = 0;
    for (int i = 0; i < n_w; i++) {
        if (ws[i]->ne0 != k)
            return smq_err_set(err, "cuda gemm: stacked matrices of rows of %llu and %llu elements",
                               (unsigned long long)k, (unsigned long long)ws[i]->ne0);
        rows += ws[i]->ne1;
    }
    if (check_shape(rows, k, n_x, y_stride, &ldc, err))
        return -1;
    if (scratch_halves < k)
        return smq_err_set(err, "cuda gemm: %llu halves of scratch hold no row of %llu",
                           (unsigned long long)scratch_halves, (unsigned long long)k);
    if (n_x == 0 || rows == 0)
        return 0;
    /* Weight rows per pass: all that fit, in multiples of 8 (aligned output columns). */
    uint64_t chunk = scratch_halves / k;
    if (chunk >= 8)
        chunk -= chunk % 8;
    for (uint64_t r0 = 0; r0 < rows; r0 += chunk) {
        uint64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        if (cuda_dequant_stack(ws, n_w, r0, nr, d_scratch, g->stream, err) ||
            gemm_f16(g, d_scratch, nr, k, d_a, n_x, d_y + r0, ldc, accumulate, err))
            return -1;
    }
    return 0;
}
