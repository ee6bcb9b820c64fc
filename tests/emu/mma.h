/* mma.h - the host emulation's WMMA (nvcuda::wmma), standing in for
 * CUDA's mma.h when a kernel is compiled for tests/emu (cuda_emu.h).
 *
 * The 16 x 16 x 16 shapes with fp16 inputs and fp32 accumulators. A
 * fragment is spread over the warp as on the device: each lane holds
 * num_elements (8) of the tile's 256 elements, lane l the elements
 * 8 l .. 8 l + 7 in row-major order. That mapping is this emulation's own:
 * the device's is unspecified, and code that is right for any mapping
 * (load, fill, mma, store) is right here too. A lane loads and stores its
 * own elements only, so that a lane reading what the warp stored without a
 * __syncwarp first reads stale memory here, as it may on the device;
 * mma_sync exchanges the operands across the warp (a warp barrier).
 *
 * The CUDA C++ Programming Guide's rules for load_matrix_sync and
 * store_matrix_sync are checked, and a breach aborts: the pointer 256-bit
 * (32-byte) aligned, ldm a multiple of 16 bytes, and not less than the
 * tile's width. */
#ifndef SMQ_EMU_MMA_H
#define SMQ_EMU_MMA_H

#include <cuda_fp16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

namespace nvcuda
{
namespace wmma
{

struct row_major {
};
struct col_major {
};
struct matrix_a {
};
struct matrix_b {
};
struct accumulator {
};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulation has the 16 x 16 x 16 shapes only");
    static_assert(std::is_same<Use, accumulator>::value
                      ? std::is_same<T, float>::value && std::is_void<Layout>::value
                      : std::is_same<T, __half>::value && !std::is_void<Layout>::value,
                  "the emulation has fp16 a and b fragments (with a layout) and fp32 accumulators");
    enum { num_elements = 8 };
    T x[num_elements];
};

/* The tile element (r, c) at index e of the calling lane's share. */
static inline void emu_frag_pos(int e, int *r, int *c)
{
    int i = 8 * emu_lane() + e;
    *r = i / 16;
    *c = i % 16;
}

static inline void emu_frag_check(const char *what, const void *p, unsigned ldm, size_t elem)
{
    if ((uintptr_t)p % 32 || (ldm * elem) % 16 || ldm < 16) {
        fprintf(stderr,
                "cuda emulation: wmma::%s at %p with ldm %u (%zu-byte elements): the pointer must be 32-byte "
                "aligned and ldm a multiple of 16 bytes, at least 16 elements\n",
                what, p, ldm, elem);
        abort();
    }
}

template <typename Use, typename T, typename L>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm)
{
    static_assert(!std::is_same<Use, accumulator>::value, "an accumulator's load takes a layout_t");
    emu_frag_check("load_matrix_sync", p, ldm, sizeof(T));
    for (int e = 0; e < 8; e++) {
        int r, c;
        emu_frag_pos(e, &r, &c);
        f.x[e] = std::is_same<L, row_major>::value ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
    }
}

static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm,
                                    layout_t layout)
{
    emu_frag_check("load_matrix_sync", p, ldm, sizeof(float));
    for (int e = 0; e < 8; e++) {
        int r, c;
        emu_frag_pos(e, &r, &c);
        f.x[e] = layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
    }
}

static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm,
                                     layout_t layout)
{
    emu_frag_check("store_matrix_sync", p, ldm, sizeof(float));
    for (int e = 0; e < 8; e++) {
        int r, c;
        emu_frag_pos(e, &r, &c);
        (layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = f.x[e];
    }
}

template <typename Use, typename T, typename L>
static inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, const T &v)
{
    for (int e = 0; e < 8; e++)
        f.x[e] = v;
}

/* An fp16 value as float, by table (mma_sync's operands: the emulation's
 * hot spot). */
EMU_UNHOOKED static inline float emu_h2f(__half h)
{
    static float *table;
    if (!table) {
        table = (float *)malloc(65536 * sizeof *table);
        if (!table)
            abort();
        for (unsigned u = 0; u < 65536; u++) {
            __half_raw r;
            r.x = (unsigned short)u;
            table[u] = __half2float(__half(r));
        }
    }
    unsigned short u;
    memcpy(&u, &h, 2);
    return table[u];
}

/* d = a b + c: products of fp16 values exact in fp32, summed in fp32 (in
 * k order; the tensor cores' order and rounding are their own). Each lane
 * takes from the warp's operands the rows of a and columns of b its own
 * elements of d need. */
template <typename LA, typename LB>
EMU_UNHOOKED static inline void
mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, __half, LA> &a,
         const fragment<matrix_b, 16, 16, 16, __half, LB> &b, const fragment<accumulator, 16, 16, 16, float> &c)
{
    __half mine[16];
    memcpy(mine, a.x, sizeof a.x);
    memcpy(mine + 8, b.x, sizeof b.x);
    const unsigned char *all = emu_warp_gather_bytes(mine, sizeof mine);
    /* element i of a tile (row-major) is lane i / 8's element i % 8, so a
     * lane's 8 elements of d are 8 columns of one row: that row of a and
     * those columns of b */
    int r, c0;
    emu_frag_pos(0, &r, &c0);
    float arow[16], bcols[16][8];
    for (int k = 0; k < 16; k++) {
        int i = 16 * r + k;
        arow[k] = emu_h2f(((const __half *)(all + (size_t)(i / 8) * EMU_WIDE))[i % 8]);
        const __half *bh = (const __half *)(all + (size_t)((16 * k + c0) / 8) * EMU_WIDE) + 8;
        for (int e = 0; e < 8; e++)
            bcols[k][e] = emu_h2f(bh[e]);
    }
    float out[8];
    for (int e = 0; e < 8; e++) {
        float s = c.x[e];
        for (int k = 0; k < 16; k++)
            s += arow[k] * bcols[k][e];
        out[e] = s;
    }
    memcpy(d.x, out, sizeof out);
}

} // namespace wmma
} // namespace nvcuda

/* PTX's mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (mma16816.cuh):
 * c += a b for the warp, a 16 x 16 and b 16 x 8 in fp16, c 16 x 8 in fp32,
 * spread over the lanes as the PTX ISA lays them out (g = lane / 4,
 * t = lane % 4; each a and b register two fp16, the lower index in the low
 * half): a[0] A[g][2t..2t+1], a[1] A[g+8][2t..], a[2] A[g][2t+8..],
 * a[3] A[g+8][2t+8..]; b[0] B[2t..2t+1][g], b[1] B[2t+8..2t+9][g];
 * c[0], c[1] C[g][2t], C[g][2t+1]; c[2], c[3] the same of row g+8. Sums in
 * fp32 in k order (the tensor cores' order and rounding are their own). */
EMU_UNHOOKED static inline void emu_mma16816(float c[4], const uint32_t a[4], const uint32_t b[2])
{
    uint32_t mine[6] = { a[0], a[1], a[2], a[3], b[0], b[1] };
    const unsigned char *all = emu_warp_gather_bytes(mine, sizeof mine);
    /* fp16 h (0 low, 1 high) of register reg of lane l's six */
    auto at = [all](int l, int reg, int h) {
        __half x;
        memcpy(&x, all + (size_t)l * EMU_WIDE + 4 * reg + 2 * h, 2);
        return nvcuda::wmma::emu_h2f(x);
    };
    int lane = emu_lane(), g = lane / 4, t = lane % 4;
    float out[4];
    for (int i = 0; i < 4; i++) {
        int r = g + 8 * (i >> 1), n = 2 * t + (i & 1);
        float s = c[i];
        for (int k = 0; k < 16; k++)
            s += at((r % 8) * 4 + (k % 8) / 2, (r >= 8) + 2 * (k >= 8), k % 2) *
                 at(n * 4 + (k % 8) / 2, 4 + (k >= 8), k % 2);
        out[i] = s;
    }
    memcpy(c, out, sizeof out);
}

#endif
