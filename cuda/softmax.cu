// softmax and log_softmax over the last axis of a C-contiguous (rows, cols) array,
// and their gradients. Launched by gpuops/ops/softmax.py (which moves the softmax axis
// last). One extern "C" kernel per dtype (f16 / bf16 / f32 / f64; 16 bits are computed
// in float32) and per row strategy (chosen by gpuops/ops/_rows.py):
//   *_warpE : one warp per row, cols <= 32*E (E = 1..32, 1..16 for double): the row
//             is read once into E registers per lane (coalesced: lane l holds columns
//             l, l+32, ...), max and sum by shuffles, then written. Rows are
//             grid-strided by warps.
//   *_block : one block per row for longer rows: one pass computes the online
//             (max, sum of exp) pair per thread, merged over the block; a second pass
//             reads the row again (mostly from L2) and writes. Sums are accumulated in
//             double so that rows of 2^31 elements keep full float precision.
#include "rowwise.cuh"

// softmax: y = e^(x - m) / s; log_softmax: y = (x - m) - log s, with m the row max
// and s = sum e^(x - m) (max subtraction: no overflow for any finite logits).
template <typename T, typename A, int E, bool LOG>
__device__ __forceinline__ void softmax_warp(const T* __restrict__ x, T* __restrict__ y,
                                             long long rows, long long cols) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
         r += warps) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        A v[E];
        A m = lowest_acc(A(0));
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            v[k] = c < cols ? load_acc(xr + c) : lowest_acc(A(0));
            m = v[k] > m ? v[k] : m;
        }
        m = warp_max(m);
        A s = A(0);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            v[k] -= m;  // padding lanes: lowest - m, whose exp is 0
            const A e = exp(v[k]);
            s += e;
            if (!LOG) v[k] = e;  // softmax keeps e^(x - m), log_softmax keeps x - m
        }
        s = warp_sum(s);
        const A log_s = LOG ? A(log(s)) : A(0);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            if (c < cols) store_acc(yr + c, LOG ? v[k] - log_s : v[k] / s);
        }
    }
}

template <typename T, typename A, bool LOG>
__device__ __forceinline__ void softmax_block(const T* __restrict__ x, T* __restrict__ y,
                                              long long rows, long long cols) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        A m = lowest_acc(A(0));
        double s = 0.0;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            lse_merge(m, s, load_acc(xr + c), 1.0);
        block_lse(m, s);
        const A log_s = A(log(s)), inv_s = A(1.0 / s);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const A v = load_acc(xr + c) - m;
            store_acc(yr + c, LOG ? v - log_s : A(exp(v)) * inv_s);
        }
    }
}

// Gradients from y and gy, with t = sum over the row of (LOG ? gy : y * gy):
//   softmax:     gx = y (gy - t)          (dy_i/dx_j = y_i (delta_ij - y_j))
//   log_softmax: gx = gy - e^y t          (e^y is the softmax)
template <typename T, typename A, int E, bool LOG>
__device__ __forceinline__ void softmax_grad_warp(const T* __restrict__ y,
                                                  const T* __restrict__ gy,
                                                  T* __restrict__ gx, long long rows,
                                                  long long cols) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
         r += warps) {
        const long long base = r * cols;
        A yv[E], gv[E];
        A t = A(0);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            yv[k] = c < cols ? load_acc(y + base + c) : A(0);
            gv[k] = c < cols ? load_acc(gy + base + c) : A(0);
            t += LOG ? gv[k] : yv[k] * gv[k];
        }
        t = warp_sum(t);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            if (c < cols)
                store_acc(gx + base + c, LOG ? gv[k] - A(exp(yv[k])) * t : yv[k] * (gv[k] - t));
        }
    }
}

template <typename T, typename A, bool LOG>
__device__ __forceinline__ void softmax_grad_block(const T* __restrict__ y,
                                                   const T* __restrict__ gy,
                                                   T* __restrict__ gx, long long rows,
                                                   long long cols) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * cols;
        double t = 0.0;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const A g = load_acc(gy + base + c);
            t += LOG ? g : load_acc(y + base + c) * g;
        }
        const A total = A(block_sum(t));
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const A yc = load_acc(y + base + c), g = load_acc(gy + base + c);
            store_acc(gx + base + c, LOG ? g - A(exp(yc)) * total : yc * (g - total));
        }
    }
}

#define ROW_ARGS(T) const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, \
                    long long rows, long long cols

#define SOFTMAX_WARP(E, T, A, SFX)                                                          \
    extern "C" __global__ void softmax_warp##E##_##SFX(const T* __restrict__ x,            \
                                                      T* __restrict__ y, long long rows,   \
                                                      long long cols) {                    \
        softmax_warp<T, A, E, false>(x, y, rows, cols);                                    \
    }                                                                                      \
    extern "C" __global__ void log_softmax_warp##E##_##SFX(const T* __restrict__ x,        \
                                                          T* __restrict__ y, long long rows, \
                                                          long long cols) {                \
        softmax_warp<T, A, E, true>(x, y, rows, cols);                                     \
    }                                                                                      \
    extern "C" __global__ void softmax_wrt_x1_warp##E##_##SFX(ROW_ARGS(T)) {               \
        softmax_grad_warp<T, A, E, false>(a, b, out, rows, cols);                          \
    }                                                                                      \
    extern "C" __global__ void log_softmax_wrt_x1_warp##E##_##SFX(ROW_ARGS(T)) {           \
        softmax_grad_warp<T, A, E, true>(a, b, out, rows, cols);                           \
    }

// Warp kernels up to E = 16 (512 columns) for every dtype; E = 32 only for float and
// half (with 32 doubles per lane per array the register file overflows into local memory).
#define SOFTMAX_WARPS_TO_16(T, A, SFX)                                                      \
    SOFTMAX_WARP(1, T, A, SFX)                                                             \
    SOFTMAX_WARP(2, T, A, SFX)                                                             \
    SOFTMAX_WARP(4, T, A, SFX)                                                             \
    SOFTMAX_WARP(8, T, A, SFX)                                                             \
    SOFTMAX_WARP(16, T, A, SFX)

#define SOFTMAX_BLOCK(T, A, SFX)                                                            \
    extern "C" __global__ void softmax_block_##SFX(const T* __restrict__ x, T* __restrict__ y, \
                                                   long long rows, long long cols) {       \
        softmax_block<T, A, false>(x, y, rows, cols);                                      \
    }                                                                                      \
    extern "C" __global__ void log_softmax_block_##SFX(const T* __restrict__ x,            \
                                                       T* __restrict__ y, long long rows,  \
                                                       long long cols) {                   \
        softmax_block<T, A, true>(x, y, rows, cols);                                       \
    }                                                                                      \
    extern "C" __global__ void softmax_wrt_x1_block_##SFX(ROW_ARGS(T)) {                   \
        softmax_grad_block<T, A, false>(a, b, out, rows, cols);                            \
    }                                                                                      \
    extern "C" __global__ void log_softmax_wrt_x1_block_##SFX(ROW_ARGS(T)) {               \
        softmax_grad_block<T, A, true>(a, b, out, rows, cols);                             \
    }

SOFTMAX_WARPS_TO_16(__half, float, f16)
SOFTMAX_WARP(32, __half, float, f16)
SOFTMAX_BLOCK(__half, float, f16)
SOFTMAX_WARPS_TO_16(__nv_bfloat16, float, bf16)
SOFTMAX_WARP(32, __nv_bfloat16, float, bf16)
SOFTMAX_BLOCK(__nv_bfloat16, float, bf16)
SOFTMAX_WARPS_TO_16(float, float, f32)
SOFTMAX_WARP(32, float, float, f32)
SOFTMAX_BLOCK(float, float, f32)
SOFTMAX_WARPS_TO_16(double, double, f64)
SOFTMAX_BLOCK(double, double, f64)
