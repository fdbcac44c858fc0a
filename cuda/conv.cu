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

#define CONV_GEOMETRY                                                                   \
    long long C, long long H, long long W, long long KH, long long KW, long long OH,     \
        long long OW, long long SH, long long SW, long long PH, long long PW, long long DH, \
        long long DW

#define CONV_KERNELS(T, SFX)                                                                  \
    extern "C" __global__ void im2col_##SFX(const T* __restrict__ x, T* __restrict__ cols,   \
                                            long long n, CONV_GEOMETRY) {                     \
        GRID_STRIDE_LOOP(i, n) {                                                              \
            const long long ow = i % OW, oh = (i / OW) % OH, kj = (i / (OW * OH)) % KW;       \
            const long long ki = (i / (OW * OH * KW)) % KH, nc = i / (OW * OH * KW * KH);     \
            const long long h = oh * SH - PH + ki * DH, w = ow * SW - PW + kj * DW;           \
            decltype(to_acc(x[0])) v = 0;                                                     \
            if (h >= 0 && h < H && w >= 0 && w < W) v = to_acc(x[(nc * H + h) * W + w]);      \
            store_acc(cols + i, v);                                                           \
        }                                                                                     \
    }                                                                                         \
    extern "C" __global__ void col2im_##SFX(const T* __restrict__ cols, T* __restrict__ gx,  \
                                            long long n, CONV_GEOMETRY) {                     \
        GRID_STRIDE_LOOP(i, n) {                                                              \
            const long long w = i % W, h = (i / W) % H, nc = i / (W * H);                     \
            decltype(to_acc(cols[0])) acc = 0;                                                \
            for (long long ki = 0; ki < KH; ++ki) {                                           \
                const long long th = h + PH - ki * DH; /* = oh * SH for a reading window */   \
                if (th < 0 || th % SH != 0 || th / SH >= OH) continue;                        \
                for (long long kj = 0; kj < KW; ++kj) {                                       \
                    const long long tw = w + PW - kj * DW;                                    \
                    if (tw < 0 || tw % SW != 0 || tw / SW >= OW) continue;                    \
                    acc += to_acc(cols[((nc * KH + ki) * KW + kj) * OH * OW                   \
                                       + (th / SH) * OW + tw / SW]);                          \
                }                                                                             \
            }                                                                                 \
            store_acc(gx + i, acc);                                                           \
        }                                                                                     \
    }

CONV_KERNELS(float, f32)
CONV_KERNELS(double, f64)
CONV_KERNELS(__half, f16)
CONV_KERNELS(__nv_bfloat16, bf16)
