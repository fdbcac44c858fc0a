// Local response normalization across channels (PyTorch's LocalResponseNorm).
// Launched by gpuops/ops/lrn.py. x is viewed as (N, C, inner), inner = the product of the
// dims after the channel axis; for channel c the window is
//   W(c) = [c - size/2, c + (size-1)/2] ∩ [0, C)   (zero padding outside),
// s_c = k + (alpha/size) Σ_{j∈W(c)} x_j²  and  y_c = x_c · s_c^(-beta).
// Gradient (docs/operators.md derives it): with j ranging over the channels whose
// window contains c, i.e. j ∈ [c - (size-1)/2, c + size/2] ∩ [0, C),
//   gx_c = gy_c s_c^(-beta) - (2 alpha beta / size) x_c Σ_j gy_j x_j s_j^(-beta-1).
// The gradient kernel reads the forward output: gy_j x_j s_j^(-beta-1) = gy_j y_j / s_j,
// so it needs one pow per element (for gy_c s_c^(-beta)) instead of one per window term.
// Forward and gradient are one kernel each, one thread per element; the window sums
// are recomputed per thread (their loads hit in cache: a warp reads neighbouring
// positions of neighbouring channels). The position's (n, c, p) comes from the fast
// division (FastDiv, gpuops.cuh), not 64-bit `/` and `%`. 16-bit T is loaded as float, computed in float and
// rounded once on store (half.cuh).
#include "gpuops.cuh"
#include "half.cuh"

// s_c for the element at plane offset `base` (channel 0) and channel c, in the
// accumulation type A (float for 16-bit T).
template <typename T, typename A>
__device__ __forceinline__ A lrn_scale(const T* __restrict__ x, long long base, long long c,
                                       long long C, long long inner, long long size, A k,
                                       A alpha_over_size) {
    const long long lo = c - size / 2 > 0 ? c - size / 2 : 0;
    const long long hi = c + (size - 1) / 2 < C - 1 ? c + (size - 1) / 2 : C - 1;
    A acc = A(0);
    for (long long j = lo; j <= hi; ++j) {
        const A v = load_acc(x + base + j * inner);
        acc += v * v;
    }
    return k + alpha_over_size * acc;
}

#define LRN_ALL(T, A, SFX)                                                                      \
    extern "C" __global__ void lrn_##SFX(const T* __restrict__ x, T* __restrict__ y,            \
                                         long long n, FASTDIV_PARAM(C), FASTDIV_PARAM(inner),   \
                                         long long size, A alpha, A beta, A k) {                \
        const A a = alpha / A(size);                                                            \
        const FastDiv fC = FASTDIV(C), fi = FASTDIV(inner);                                     \
        GRID_STRIDE_LOOP(i, n) {                                                                \
            long long p, c;                                                                     \
            const long long base = fC.divmod(fi.divmod(i, p), c) * C * inner + p;               \
            store_acc(y + i,                                                                    \
                      load_acc(x + i) * pow(lrn_scale(x, base, c, C, inner, size, k, a), -beta)); \
        }                                                                                       \
    }                                                                                           \
    extern "C" __global__ void lrn_wrt_x1_##SFX(                                                \
        const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gy,             \
        T* __restrict__ gx, long long n, FASTDIV_PARAM(C), FASTDIV_PARAM(inner), long long size, \
        A alpha, A beta, A k) {                                                                 \
        const A a = alpha / A(size);                                                            \
        const FastDiv fC = FASTDIV(C), fi = FASTDIV(inner);                                     \
        GRID_STRIDE_LOOP(i, n) {                                                                \
            long long p, c;                                                                     \
            const long long base = fC.divmod(fi.divmod(i, p), c) * C * inner + p;               \
            const long long lo = c - (size - 1) / 2 > 0 ? c - (size - 1) / 2 : 0;               \
            const long long hi = c + size / 2 < C - 1 ? c + size / 2 : C - 1;                   \
            A cross = A(0);                                                                     \
            for (long long j = lo; j <= hi; ++j) {                                              \
                const long long at = base + j * inner;                                          \
                cross += load_acc(gy + at) * load_acc(y + at) /                                 \
                         lrn_scale(x, base, j, C, inner, size, k, a);                           \
            }                                                                                   \
            const A own =                                                                       \
                load_acc(gy + i) * pow(lrn_scale(x, base, c, C, inner, size, k, a), -beta);     \
            store_acc(gx + i, own - A(2) * a * beta * load_acc(x + i) * cross);                 \
        }                                                                                       \
    }

LRN_ALL(__half, float, f16)
LRN_ALL(__nv_bfloat16, float, bf16)
LRN_ALL(float, float, f32)
LRN_ALL(double, double, f64)
