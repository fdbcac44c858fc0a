// Pooling family: 2-d max and average pooling over NCHW (or unbatched CHW: one plane per
// channel all the same) and their gradients. Launched by gpuops/ops/pooling.py.
// Window (oh, ow) reads input rows oh*sh - ph + i*dh (0 <= i < kh) and columns
// ow*sw - pw + j*dw (0 <= j < kw); the dilation (dh, dw) is 1 for the average. Positions
// outside the input are padding: -inf for max (never chosen; a dilated window holding no
// input element gives -inf, as PyTorch), 0 for average. The average's divisor is
// `divisor` when nonzero (divisor_override, or the one size every window has), else per
// window PyTorch's: with count_include_pad the window clipped to the padded input
// (ceil_mode windows may reach past it), else its count of input elements.
//
// 16-bit T: float arithmetic (max pooling compares the widened values: exact).
//
// Both gradients gather: one thread per input element sums over the windows that
// contain it, so no atomics are needed and the result is deterministic.
// A window of extent e = (k - 1)*d + 1 starting at oh*sh - ph contains row h iff
//   oh in [first_window(h + ph, e, sh), min((h + ph) / sh, OH - 1)]
// and (h + ph - oh*sh) is a multiple of d.
#include "gpuops.cuh"
#include "half.cuh"

// The accumulation type of storage type T: float for float16/bfloat16 (loaded with
// load_acc, rounded once by store_acc), else T.
template <typename T>
using acc_t = decltype(to_acc(T()));

__device__ __forceinline__ long long first_window(long long hp, long long k, const FastDiv& s) {
    return hp < k ? 0 : s.div(hp - k) + 1;
}

// The sizes that the index math divides by come with their fast-division magic words
// (FastDiv, gpuops.cuh: no 64-bit `/` or `%` per element). pairs != 0 (the host's choice:
// sw == 2, dw == 1, W even, x aligned to two elements): window rows are read as aligned
// pairs of elements (one 8-byte load for float), so that a warp's lanes, whose windows
// start 2 elements apart, read contiguous memory (each load request coalesced) instead of
// scalars 8 bytes apart. The forward kernels only (the gradients read scalars).
struct PoolGeometry {
    long long H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, count_include_pad, divisor, pairs;
    FastDiv fH, fW, fOH, fOW, fsh, fsw, fdh, fdw;
};

template <typename T>
struct alignas(2 * sizeof(T)) Pair {
    T lo, hi;
};

// f(w, x[w]) for the columns w = w0 + j*dw (0 <= j < kw) of a window row inside [0, W), in
// increasing w.
template <typename T, typename F>
__device__ __forceinline__ void for_window_row(const T* __restrict__ row, long long w0,
                                               const PoolGeometry& g, F&& f) {
    if (g.pairs) {  // dw == 1: the columns [w0, w0 + kw), read as aligned pairs
        // Every lane loads as many pairs (w0's parity is the warp's), one in the padding
        // from a clamped address and unused, so the lanes' loads stay one request each.
        const long long lo = w0 > 0 ? w0 : 0, hi = w0 + g.kw < g.W ? w0 + g.kw : g.W;
        for (long long w = w0 - (w0 & 1); w < w0 + g.kw; w += 2) {
            const long long at = w < 0 ? 0 : (w < g.W ? w : g.W - 2);
            const Pair<T> v = *reinterpret_cast<const Pair<T>*>(row + at);
            if (w >= lo && w < hi) f(w, to_acc(v.lo));
            if (w + 1 >= lo && w + 1 < hi) f(w + 1, to_acc(v.hi));
        }
        return;
    }
    for (long long j = 0; j < g.kw; ++j) {
        const long long w = w0 + j * g.dw;
        if (w < 0) continue;
        if (w >= g.W) break;
        f(w, load_acc(row + w));
    }
}

// Index of the first maximal element (row-major within the window, padding skipped) of
// window (oh, ow) of plane p, -1 when the window holds no input element; a NaN counts as
// maximal (it propagates, as in PyTorch). `best` receives the maximum (not re-read).
template <typename T>
__device__ __forceinline__ long long window_argmax(const T* __restrict__ p, long long oh,
                                                   long long ow, const PoolGeometry& g,
                                                   acc_t<T>& best) {
    const long long h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    long long best_at = -1;
    best = 0;
    for (long long i = 0; i < g.kh; ++i) {
        const long long h = h0 + i * g.dh;
        if (h < 0) continue;
        if (h >= g.H) break;
        for_window_row(p + h * g.W, w0, g, [&](long long w, acc_t<T> v) {
            if (best_at < 0 || (best == best && (v > best || v != v))) {
                best = v;
                best_at = h * g.W + w;
            }
        });
    }
    return best_at;
}

// Sum of window (oh, ow) of plane p (dilation 1), padding (0) skipped.
template <typename T>
__device__ __forceinline__ acc_t<T> window_sum(const T* __restrict__ p, long long oh,
                                               long long ow, const PoolGeometry& g) {
    const long long h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    acc_t<T> acc = 0;
    for (long long h = h0 > 0 ? h0 : 0; h < h0 + g.kh && h < g.H; ++h)
        for_window_row(p + h * g.W, w0, g, [&](long long, acc_t<T> v) { acc += v; });
    return acc;
}

// The average's divisor of window (oh, ow) when it varies per window (g.divisor == 0).
__device__ __forceinline__ long long window_divisor(long long oh, long long ow,
                                                    const PoolGeometry& g) {
    long long h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    long long h1 = h0 + g.kh < g.H + g.ph ? h0 + g.kh : g.H + g.ph;
    long long w1 = w0 + g.kw < g.W + g.pw ? w0 + g.kw : g.W + g.pw;
    if (!g.count_include_pad) {
        h0 = h0 > 0 ? h0 : 0;
        w0 = w0 > 0 ? w0 : 0;
        h1 = h1 < g.H ? h1 : g.H;
        w1 = w1 < g.W ? w1 : g.W;
    }
    return (h1 - h0) * (w1 - w0);
}

// y[..., oh, ow] = max (MAX) or Σ / divisor over window (oh, ow); i over all outputs.
template <typename T, bool MAX>
__device__ __forceinline__ void pool2d(const T* __restrict__ x, T* __restrict__ y, long long n,
                                       const PoolGeometry& g) {
    using A = acc_t<T>;
    const A inv = g.divisor != 0 ? A(1) / A(g.divisor) : A(0);
    const A zero = A(0);
    GRID_STRIDE_LOOP(i, n) {
        long long ow, oh;
        const T* __restrict__ p = x + g.fOH.divmod(g.fOW.divmod(i, ow), oh) * g.H * g.W;
        if constexpr (MAX) {
            A best;
            const long long at = window_argmax(p, oh, ow, g, best);
            store_acc(y + i, at >= 0 ? best : -A(1) / zero);
        } else {
            store_acc(y + i, window_sum(p, oh, ow, g) *
                                 (g.divisor != 0 ? inv : A(1) / A(window_divisor(oh, ow, g))));
        }
    }
}

// gx[..., h, w] = Σ gy[..., oh, ow] over the windows (oh, ow) containing (h, w) that pass
// it their gradient: for MAX the windows whose first maximum is (h, w) (a window is only
// scanned when x[h, w] equals its maximum y, or both are NaN); for the average all of them,
// each divided by its divisor (x and y are not read). i over all inputs.
template <typename T, bool MAX>
__device__ __forceinline__ void pool2d_wrt_x1(const T* __restrict__ x, const T* __restrict__ y,
                                              const T* __restrict__ gy, T* __restrict__ gx,
                                              long long n, const PoolGeometry& geometry) {
    using A = acc_t<T>;
    // The argmax rescans read scalars: pair loads here would cost ~36 more registers
    // (94 against 58 for max_pool2d_wrt_x1_f32 on sm_90), halving the resident warps.
    PoolGeometry g = geometry;
    g.pairs = 0;
    const A inv = g.divisor != 0 ? A(1) / A(g.divisor) : A(0);
    const long long eh = (g.kh - 1) * g.dh + 1, ew = (g.kw - 1) * g.dw + 1;
    GRID_STRIDE_LOOP(i, n) {
        long long w, h;
        const long long plane = g.fH.divmod(g.fW.divmod(i, w), h);
        const T* __restrict__ p = x + plane * g.H * g.W;
        const T* __restrict__ py = y + plane * g.OH * g.OW;
        const T* __restrict__ pg = gy + plane * g.OH * g.OW;
        const A v = MAX ? load_acc(x + i) : A(0);
        const long long hp = h + g.ph, wp = w + g.pw;
        const long long last_h = g.fsh.div(hp), last_w = g.fsw.div(wp);
        const long long oh_end = last_h < g.OH - 1 ? last_h : g.OH - 1;
        const long long ow_end = last_w < g.OW - 1 ? last_w : g.OW - 1;
        A acc = A(0);
        for (long long oh = first_window(hp, eh, g.fsh); oh <= oh_end; ++oh) {
            if (g.fdh.mod(hp - oh * g.sh) != 0) continue;
            for (long long ow = first_window(wp, ew, g.fsw); ow <= ow_end; ++ow) {
                if (g.fdw.mod(wp - ow * g.sw) != 0) continue;
                if constexpr (MAX) {
                    const A m = load_acc(py + oh * g.OW + ow);
                    A scanned;
                    if (!((v == m || (v != v && m != m)) &&
                          window_argmax(p, oh, ow, g, scanned) == h * g.W + w))
                        continue;
                    acc += load_acc(pg + oh * g.OW + ow);
                } else {
                    acc += g.divisor != 0 ? load_acc(pg + oh * g.OW + ow)
                                          : load_acc(pg + oh * g.OW + ow) *
                                                (A(1) / A(window_divisor(oh, ow, g)));
                }
            }
        }
        store_acc(gx + i, MAX || g.divisor == 0 ? acc : acc * inv);
    }
}

// The kernels: <op>_<SFX>(x, y, n, geometry) and <op>_wrt_x1_<SFX>(x, y, gy, gx, n, geometry).
#define POOL_GEOMETRY                                                                         \
    FASTDIV_PARAM(H), FASTDIV_PARAM(W), FASTDIV_PARAM(OH), FASTDIV_PARAM(OW), long long kh,   \
        long long kw, FASTDIV_PARAM(sh), FASTDIV_PARAM(sw), long long ph, long long pw,       \
        FASTDIV_PARAM(dh), FASTDIV_PARAM(dw), long long count_include_pad, long long divisor, \
        long long pairs
#define POOL_GEOMETRY_INIT                                                                    \
    const PoolGeometry g = {H,  W,  OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, count_include_pad, \
                            divisor, pairs, FASTDIV(H), FASTDIV(W), FASTDIV(OH), FASTDIV(OW), \
                            FASTDIV(sh), FASTDIV(sw), FASTDIV(dh), FASTDIV(dw)}

#define POOLING_KERNELS(OP, MAX, T, SFX)                                                        \
    extern "C" __global__ void OP##_##SFX(const T* __restrict__ x, T* __restrict__ y,           \
                                          long long n, POOL_GEOMETRY) {                         \
        POOL_GEOMETRY_INIT;                                                                     \
        pool2d<T, MAX>(x, y, n, g);                                                             \
    }                                                                                           \
    extern "C" __global__ void OP##_wrt_x1_##SFX(                                               \
        const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gy,             \
        T* __restrict__ gx, long long n, POOL_GEOMETRY) {                                       \
        POOL_GEOMETRY_INIT;                                                                     \
        pool2d_wrt_x1<T, MAX>(x, y, gy, gx, n, g);                                              \
    }

POOLING_KERNELS(max_pool2d, true, __half, f16)
POOLING_KERNELS(max_pool2d, true, __nv_bfloat16, bf16)
POOLING_KERNELS(max_pool2d, true, float, f32)
POOLING_KERNELS(max_pool2d, true, double, f64)
POOLING_KERNELS(avg_pool2d, false, __half, f16)
POOLING_KERNELS(avg_pool2d, false, __nv_bfloat16, bf16)
POOLING_KERNELS(avg_pool2d, false, float, f32)
POOLING_KERNELS(avg_pool2d, false, double, f64)
