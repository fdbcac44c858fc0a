// Pooling family: 2-d max and average pooling over NCHW and their gradients.
// Launched by gpuops/pooling.py. Window (oh, ow) covers input rows
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

#define POOLING_ALL(T, SFX)                                                                     \
    /* y[n, c, oh, ow] = max over the window (i over N*C*OH*OW outputs) */                      \
    extern "C" __global__ void max_pool2d_##SFX(                                                \
        const T* __restrict__ x, T* __restrict__ y, long long n, long long H, long long W,       \
        long long OH, long long OW, long long kh, long long kw, long long sh, long long sw,      \
        long long ph, long long pw) {                                                           \
        const PoolGeometry g = {H, W, OH, OW, kh, kw, sh, sw, ph, pw};                          \
        GRID_STRIDE_LOOP(i, n) {                                                                \
            const long long ow = i % OW, oh = (i / OW) % OH;                                    \
            const T* __restrict__ p = x + (i / (OH * OW)) * H * W;                              \
            y[i] = p[window_argmax(p, oh, ow, g)];                                              \
        }                                                                                       \
    }                                                                                           \
    /* gx[n, c, h, w] = Σ gy over the windows whose first maximum is (h, w). A window is */     \
    /* only scanned when x[h, w] equals its maximum y (or both are NaN). */                     \
    extern "C" __global__ void max_pool2d_wrt_x1_##SFX(                                         \
        const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gy,             \
        T* __restrict__ gx, long long n, long long H, long long W, long long OH, long long OW,  \
        long long kh, long long kw, long long sh, long long sw, long long ph, long long pw) {   \
        const PoolGeometry g = {H, W, OH, OW, kh, kw, sh, sw, ph, pw};                          \
        GRID_STRIDE_LOOP(i, n) {                                                                \
            const long long w = i % W, h = (i / W) % H, plane = i / (H * W);                    \
            const T* __restrict__ p = x + plane * H * W;                                        \
            const T* __restrict__ py = y + plane * OH * OW;                                     \
            const T* __restrict__ pg = gy + plane * OH * OW;                                    \
            const T v = x[i];                                                                   \
            const long long oh_end = (h + ph) / sh < OH - 1 ? (h + ph) / sh : OH - 1;           \
            const long long ow_end = (w + pw) / sw < OW - 1 ? (w + pw) / sw : OW - 1;           \
            T acc = T(0);                                                                       \
            for (long long oh = first_window(h + ph, kh, sh); oh <= oh_end; ++oh)               \
                for (long long ow = first_window(w + pw, kw, sw); ow <= ow_end; ++ow) {         \
                    const T m = py[oh * OW + ow];                                               \
                    if ((v == m || (v != v && m != m)) &&                                       \
                        window_argmax(p, oh, ow, g) == h * W + w)                               \
                        acc += pg[oh * OW + ow];                                                \
                }                                                                               \
            gx[i] = acc;                                                                        \
        }                                                                                       \
    }                                                                                           \
    /* y[n, c, oh, ow] = Σ over the window's input elements / (kh*kw) */                        \
    extern "C" __global__ void avg_pool2d_##SFX(                                                \
        const T* __restrict__ x, T* __restrict__ y, long long n, long long H, long long W,       \
        long long OH, long long OW, long long kh, long long kw, long long sh, long long sw,      \
        long long ph, long long pw) {                                                           \
        const T inv = T(1) / T(kh * kw);                                                        \
        GRID_STRIDE_LOOP(i, n) {                                                                \
            const long long ow = i % OW, oh = (i / OW) % OH;                                    \
            const T* __restrict__ p = x + (i / (OH * OW)) * H * W;                              \
            const long long h0 = oh * sh - ph, w0 = ow * sw - pw;                               \
            T acc = T(0);                                                                       \
            for (long long h = h0 > 0 ? h0 : 0; h < h0 + kh && h < H; ++h)                      \
                for (long long w = w0 > 0 ? w0 : 0; w < w0 + kw && w < W; ++w)                  \
                    acc += p[h * W + w];                                                        \
            y[i] = acc * inv;                                                                   \
        }                                                                                       \
    }                                                                                           \
    /* gx[n, c, h, w] = Σ gy over the windows containing (h, w), / (kh*kw) */                   \
    extern "C" __global__ void avg_pool2d_wrt_x1_##SFX(                                         \
        const T* __restrict__ gy, T* __restrict__ gx, long long n, long long H, long long W,    \
        long long OH, long long OW, long long kh, long long kw, long long sh, long long sw,     \
        long long ph, long long pw) {                                                           \
        const T inv = T(1) / T(kh * kw);                                                        \
        GRID_STRIDE_LOOP(i, n) {                                                                \
            const long long w = i % W, h = (i / W) % H;                                         \
            const T* __restrict__ pg = gy + (i / (H * W)) * OH * OW;                            \
            const long long oh_end = (h + ph) / sh < OH - 1 ? (h + ph) / sh : OH - 1;           \
            const long long ow_end = (w + pw) / sw < OW - 1 ? (w + pw) / sw : OW - 1;           \
            T acc = T(0);                                                                       \
            for (long long oh = first_window(h + ph, kh, sh); oh <= oh_end; ++oh)               \
                for (long long ow = first_window(w + pw, kw, sw); ow <= ow_end; ++ow)           \
                    acc += pg[oh * OW + ow];                                                    \
            gx[i] = acc * inv;                                                                  \
        }                                                                                       \
    }

POOLING_ALL(float, f32)
POOLING_ALL(double, f64)
