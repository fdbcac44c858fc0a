// Pooling family: 2-d max and average pooling over NCHW and their gradients.
// Launched by gpuops/ops/pooling.py. Window (oh, ow) covers input rows
// [oh*sh - ph, oh*sh - ph + kh) and columns [ow*sw - pw, ow*sw - pw + kw); positions
// outside the input are padding: -inf for max (never chosen), 0 for average, whose
// divisor is always kh*kw (PyTorch's count_include_pad=True; with padding <= k/2 and
// floor-mode output sizes no window reaches past the padding, so kh*kw is exact).
//
// Both gradients gather: one thread per input element sums over the windows that
// contain it, so no atomics are needed and the result is deterministic.
// Window (oh, .) contains row h iff oh*sh - ph <= h < oh*sh - ph + kh, i.e.
//   oh in [first_window(h + ph, kh, sh), min((h + ph) / sh, OH - 1)].
#include "gpuops.cuh"

__device__ __forceinline__ long long first_window(long long hp, long long k, long long s) {
    return hp < k ? 0 : (hp - k) / s + 1;
}

struct PoolGeometry {
    long long H, W, OH, OW, kh, kw, sh, sw, ph, pw;
};

// Index of the first maximal element (row-major within the window, padding skipped) of
// window (oh, ow) of plane p; a NaN counts as maximal (it propagates, as in PyTorch).
template <typename T>
__device__ __forceinline__ long long window_argmax(const T* __restrict__ p, long long oh,
                                                   long long ow, const PoolGeometry& g) {
    const long long h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    long long best_at = -1;
    T best = T(0);
    for (long long h = h0 > 0 ? h0 : 0; h < h0 + g.kh && h < g.H; ++h)
        for (long long w = w0 > 0 ? w0 : 0; w < w0 + g.kw && w < g.W; ++w) {
            const T v = p[h * g.W + w];
            if (best_at < 0 || (best == best && (v > best || v != v))) {
                best = v;
                best_at = h * g.W + w;
            }
        }
    return best_at;
}

// Sum of window (oh, ow) of plane p, padding (0) skipped.
template <typename T>
__device__ __forceinline__ T window_sum(const T* __restrict__ p, long long oh, long long ow,
                                        const PoolGeometry& g) {
    const long long h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    T acc = T(0);
    for (long long h = h0 > 0 ? h0 : 0; h < h0 + g.kh && h < g.H; ++h)
        for (long long w = w0 > 0 ? w0 : 0; w < w0 + g.kw && w < g.W; ++w) acc += p[h * g.W + w];
    return acc;
}

// y[n, c, oh, ow] = max (MAX) or Σ / (kh*kw) over window (oh, ow); i over N*C*OH*OW outputs.
template <typename T, bool MAX>
__device__ __forceinline__ void pool2d(const T* __restrict__ x, T* __restrict__ y, long long n,
                                       const PoolGeometry& g) {
    const T inv = T(1) / T(g.kh * g.kw);
    GRID_STRIDE_LOOP(i, n) {
        const long long ow = i % g.OW, oh = (i / g.OW) % g.OH;
        const T* __restrict__ p = x + (i / (g.OH * g.OW)) * g.H * g.W;
        if constexpr (MAX)
            y[i] = p[window_argmax(p, oh, ow, g)];
        else
            y[i] = window_sum(p, oh, ow, g) * inv;
    }
}

// gx[n, c, h, w] = Σ gy[n, c, oh, ow] over the windows (oh, ow) containing (h, w) that pass
// it their gradient: for MAX the windows whose first maximum is (h, w) (a window is only
// scanned when x[h, w] equals its maximum y, or both are NaN); for the average all of them,
// divided by kh*kw (x and y are not read). i over N*C*H*W inputs.
template <typename T, bool MAX>
__device__ __forceinline__ void pool2d_wrt_x1(const T* __restrict__ x, const T* __restrict__ y,
                                              const T* __restrict__ gy, T* __restrict__ gx,
                                              long long n, const PoolGeometry& g) {
    const T inv = T(1) / T(g.kh * g.kw);
    GRID_STRIDE_LOOP(i, n) {
        const long long w = i % g.W, h = (i / g.W) % g.H, plane = i / (g.H * g.W);
        const T* __restrict__ p = x + plane * g.H * g.W;
        const T* __restrict__ py = y + plane * g.OH * g.OW;
        const T* __restrict__ pg = gy + plane * g.OH * g.OW;
        const T v = MAX ? x[i] : T(0);
        const long long oh_end = (h + g.ph) / g.sh < g.OH - 1 ? (h + g.ph) / g.sh : g.OH - 1;
        const long long ow_end = (w + g.pw) / g.sw < g.OW - 1 ? (w + g.pw) / g.sw : g.OW - 1;
        T acc = T(0);
        for (long long oh = first_window(h + g.ph, g.kh, g.sh); oh <= oh_end; ++oh)
            for (long long ow = first_window(w + g.pw, g.kw, g.sw); ow <= ow_end; ++ow) {
                if constexpr (MAX) {
                    const T m = py[oh * g.OW + ow];
                    if (!((v == m || (v != v && m != m)) &&
                          window_argmax(p, oh, ow, g) == h * g.W + w))
                        continue;
                }
                acc += pg[oh * g.OW + ow];
            }
        gx[i] = MAX ? acc : acc * inv;
    }
}

// The kernels: <op>_<SFX>(x, y, n, geometry) and <op>_wrt_x1_<SFX>(x, y, gy, gx, n, geometry).
#define POOLING_KERNELS(OP, MAX, T, SFX)                                                        \
    extern "C" __global__ void OP##_##SFX(                                                      \
        const T* __restrict__ x, T* __restrict__ y, long long n, long long H, long long W,       \
        long long OH, long long OW, long long kh, long long kw, long long sh, long long sw,      \
        long long ph, long long pw) {                                                           \
        const PoolGeometry g = {H, W, OH, OW, kh, kw, sh, sw, ph, pw};                          \
        pool2d<T, MAX>(x, y, n, g);                                                             \
    }                                                                                           \
    extern "C" __global__ void OP##_wrt_x1_##SFX(                                               \
        const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gy,             \
        T* __restrict__ gx, long long n, long long H, long long W, long long OH, long long OW,  \
        long long kh, long long kw, long long sh, long long sw, long long ph, long long pw) {   \
        const PoolGeometry g = {H, W, OH, OW, kh, kw, sh, sw, ph, pw};                          \
        pool2d_wrt_x1<T, MAX>(x, y, gy, gx, n, g);                                              \
    }

POOLING_KERNELS(max_pool2d, true, float, f32)
POOLING_KERNELS(max_pool2d, true, double, f64)
POOLING_KERNELS(avg_pool2d, false, float, f32)
POOLING_KERNELS(avg_pool2d, false, double, f64)
