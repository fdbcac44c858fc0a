// 2-d convolution lowered to matrix products (launched by gpuops/ops/conv.py; the
// products run on cuda/matmul.cu's GEMM).
//
// im2col: x (N, C, H, W) -> cols (N, C*KH*KW, OH*OW), row (c, ki, kj), column (oh, ow):
//   cols[n][(c*KH + ki)*KW + kj][oh*OW + ow] = x[n][c][oh*SH - PH + ki*DH][ow*SW - PW + kj*DW]
// (0 where the index falls in the padding). PH, PW: the top and left padding; the bottom and
// right padding (different for PyTorch's padding="same" with an even span) only set OH, OW.
// Groups need nothing here: group k's channels are a contiguous slice of the cols rows.
// An unbatched (C, H, W) input comes as N = 1.
// col2im: the adjoint, gx[n][c][h][w] = sum of the cols entries that read x[n][c][h][w].
// Written as a gather (one thread per input element sums its at most KH*KW window
// entries), so overlapping windows need no atomics and the result is deterministic.
#include "gpuops.cuh"
#include "half.cuh"

// The geometry; the sizes that index math divides by come with their fast-division magic
// words (FastDiv, gpuops.cuh: 32-bit multiply-high instead of 64-bit `/` and `%`).
#define CONV_GEOMETRY                                                                   \
    long long C, FASTDIV_PARAM(H), FASTDIV_PARAM(W), FASTDIV_PARAM(KH), FASTDIV_PARAM(KW), \
        FASTDIV_PARAM(OH), FASTDIV_PARAM(OW), FASTDIV_PARAM(SH), FASTDIV_PARAM(SW),       \
        long long PH, long long PW, long long DH, long long DW

#define CONV_KERNELS(T, SFX)                                                                  \
    extern "C" __global__ void im2col_##SFX(const T* __restrict__ x, T* __restrict__ cols,   \
                                            long long n, CONV_GEOMETRY) {                     \
        const FastDiv fOW = FASTDIV(OW), fOH = FASTDIV(OH), fKW = FASTDIV(KW),                \
                      fKH = FASTDIV(KH);                                                      \
        GRID_STRIDE_LOOP(i, n) {                                                              \
            long long ow, oh, kj, ki;                                                         \
            const long long nc = fKH.divmod(fKW.divmod(fOH.divmod(fOW.divmod(i, ow), oh), kj), ki); \
            const long long h = oh * SH - PH + ki * DH, w = ow * SW - PW + kj * DW;           \
            decltype(to_acc(x[0])) v = 0;                                                     \
            if (h >= 0 && h < H && w >= 0 && w < W) v = to_acc(x[(nc * H + h) * W + w]);      \
            store_acc(cols + i, v);                                                           \
        }                                                                                     \
    }                                                                                         \
    extern "C" __global__ void col2im_##SFX(const T* __restrict__ cols, T* __restrict__ gx,  \
                                            long long n, CONV_GEOMETRY) {                     \
        const FastDiv fW = FASTDIV(W), fH = FASTDIV(H), fSH = FASTDIV(SH), fSW = FASTDIV(SW); \
        GRID_STRIDE_LOOP(i, n) {                                                              \
            long long w, h;                                                                   \
            const long long nc = fH.divmod(fW.divmod(i, w), h);                               \
            decltype(to_acc(cols[0])) acc = 0;                                                \
            for (long long ki = 0; ki < KH; ++ki) {                                           \
                const long long th = h + PH - ki * DH; /* = oh * SH for a reading window */   \
                if (th < 0) break; /* th falls with ki */                                     \
                long long rh;                                                                 \
                const long long oh = fSH.divmod(th, rh);                                      \
                if (rh != 0 || oh >= OH) continue;                                            \
                for (long long kj = 0; kj < KW; ++kj) {                                       \
                    const long long tw = w + PW - kj * DW;                                    \
                    if (tw < 0) break;                                                        \
                    long long rw;                                                             \
                    const long long ow = fSW.divmod(tw, rw);                                  \
                    if (rw != 0 || ow >= OW) continue;                                        \
                    acc += to_acc(cols[((nc * KH + ki) * KW + kj) * OH * OW + oh * OW + ow]); \
                }                                                                             \
            }                                                                                 \
            store_acc(gx + i, acc);                                                           \
        }                                                                                     \
    }

CONV_KERNELS(float, f32)
CONV_KERNELS(double, f64)
CONV_KERNELS(__half, f16)
CONV_KERNELS(__nv_bfloat16, bf16)
