/* cublas_emu.cpp - the part of cuBLAS the CUDA backend calls (gemm.cu:
 * handles, streams and cublasGemmEx), for the host emulation of the device
 * (cuda_emu.h). Built as a shared library, build/emu/libcublas_emu.so,
 * which the emulated test programs load through SMQ_CUBLAS just as the
 * backend loads the real one (dlopen, dlsym); its calls into the emulation
 * (emu_device_range, emu_enqueue_host) resolve against the program.
 *
 * What it checks, as cuBLAS's documentation states it: the handle, the
 * operations, m, n, k >= 0, the leading dimensions (lda >= max(1, rows of
 * A as stored), ldb likewise, ldc >= max(1, m)), and the type combination
 * (fp16 A and B, fp32 or fp16 C, fp32 compute: else NOT_SUPPORTED). Past
 * the documentation, and where a GPU would read or write out of bounds
 * silently: every matrix's extent must lie inside one device allocation,
 * else it says which and aborts. beta = 0 does not read C (its NaNs stay
 * out), as cuBLAS promises.
 */
#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

struct cublasContext {
    cudaStream_t stream;
};

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
    if (!h)
        return CUBLAS_STATUS_INVALID_VALUE;
    *h = new cublasContext();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s)
{
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t st)
{
    switch (st) {
    case CUBLAS_STATUS_SUCCESS:
        return "success (host emulation)";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "the library was not initialized (host emulation)";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "an unsupported value or parameter was passed to the function (host emulation)";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "the functionality requested is not supported (host emulation)";
    default:
        return "an error (host emulation)";
    }
}

} /* extern "C" */

namespace
{

struct gemm_op {
    bool ta, tb;
    int m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const void *A, *B;
    void *C;
    cudaDataType ctype;
};

/* The fp16 values at p, p + stride, ... (n of them) as floats. */
void to_float(const void *p, size_t stride, int n, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = __half2float(((const __half *)p)[(size_t)i * stride]);
}

/* sum a[l] b[l] in fp32, in 8 interleaved partial sums (an order of the
 * emulation's own: the device's is cuBLAS's) */
float dot(const float *a, const float *b, int k)
{
    float part[8] = { 0 };
    int l = 0;
    for (; l + 8 <= k; l += 8)
        for (int t = 0; t < 8; t++)
            part[t] += a[l + t] * b[l + t];
    for (; l < k; l++)
        part[l % 8] += a[l] * b[l];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

/* C = alpha op(A) op(B) + beta C, column-major: op(B) converted once, a row
 * of op(A) at a time. */
void run_gemm(const void *arg)
{
    const gemm_op *g = (const gemm_op *)arg;
    std::vector<float> bt((size_t)g->n * g->k), arow(g->k);
    for (int j = 0; j < g->n; j++) /* column j of op(B), contiguous */
        to_float((const __half *)g->B + (g->tb ? (size_t)j : (size_t)j * g->ldb), g->tb ? g->ldb : 1, g->k,
                 &bt[(size_t)j * g->k]);
    for (int i = 0; i < g->m; i++) {
        to_float((const __half *)g->A + (g->ta ? (size_t)i * g->lda : (size_t)i), g->ta ? 1 : g->lda, g->k,
                 arow.data());
        for (int j = 0; j < g->n; j++) {
            float s = dot(arow.data(), &bt[(size_t)j * g->k], g->k);
            size_t at = (size_t)j * g->ldc + i;
            if (g->ctype == CUDA_R_32F) {
                float *c = (float *)g->C + at;
                *c = g->beta == 0.f ? g->alpha * s : g->alpha * s + g->beta * *c;
            } else {
                __half *c = (__half *)g->C + at;
                float v = g->beta == 0.f ? g->alpha * s : g->alpha * s + g->beta * __half2float(*c);
                *c = __float2half_rn(v);
            }
        }
    }
}

/* The bytes a column-major matrix of rows x cols (as stored) with leading
 * dimension ld spans. */
size_t extent(int rows, int cols, int ld, size_t elem)
{
    return rows && cols ? ((size_t)(cols - 1) * ld + rows) * elem : 0;
}

void check_inside(const char *name, const void *p, size_t bytes)
{
    if (bytes && !emu_device_range(p, bytes)) {
        fprintf(stderr,
                "cuBLAS emulation: cublasGemmEx: matrix %s (%p, %zu bytes) is not inside one device allocation\n", name,
                p, bytes);
        abort();
    }
}

} // namespace

extern "C" cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m,
                                       int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda,
                                       const void *B, cudaDataType Btype, int ldb, const void *beta, void *C,
                                       cudaDataType Ctype, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) || (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T))
        return CUBLAS_STATUS_INVALID_VALUE;
    bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
    int a_rows = ta ? k : m, b_rows = tb ? n : k;
    if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (Atype != CUDA_R_16F || Btype != CUDA_R_16F || (Ctype != CUDA_R_32F && Ctype != CUDA_R_16F) ||
        (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_16F))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    gemm_op g = { ta, tb, m, n, k, lda, ldb, ldc, *(const float *)alpha, *(const float *)beta, A, B, C, Ctype };
    check_inside("A", A, extent(a_rows, ta ? m : k, lda, 2));
    check_inside("B", B, extent(b_rows, tb ? k : n, ldb, 2));
    check_inside("C", C, extent(m, n, ldc, Ctype == CUDA_R_32F ? 4 : 2));
    emu_enqueue_host(h->stream, run_gemm, &g, sizeof g);
    return CUBLAS_STATUS_SUCCESS;
}
