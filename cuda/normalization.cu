// Batch normalization (training mode: batch statistics; evaluation mode: given running
// statistics) and its gradients. Launched by gpuops/ops/normalization.py.
//
// x is viewed as (outer, C, inner): C channels (the normalized axis), M = outer * inner
// values per channel; the element (o, c, p) sits at o * C * inner + c * inner + p and the
// channel's m-th value (m = o * inner + p) at (m / inner) * C * inner + c * inner + m % inner.
//
// Per-channel sums are a deterministic two-stage reduction, no atomics:
//   stage 1  batch_norm_moments / batch_norm_grad_moments: one block per (channel, chunk)
//            (a block-stride loop when there are more pairs than blocks) writes the
//            chunk's two partial sums to partial[2 * (c * splits + s) + {0, 1}];
//   stage 2  batch_norm_finish / batch_norm_channel_grad: one thread per channel adds
//            its `splits` partials in order.
// The summation order depends only on the shapes and the launch configuration.
//
// Statistics: the moments of (x - shift_c); run once with shift = 0 (the mean), then with
// shift = that mean: var = S2/M - (S1/M)^2 with S1 ~ 0 (the corrected two-pass
// algorithm), so a large common offset does not cancel digits away.
#include "gpuops.cuh"

#define BATCH_NORM_ALL(T, SFX)                                                                 \
    /* partial[2v] = sum (x - shift_c), partial[2v+1] = sum (x - shift_c)^2, v = c*splits+s */ \
    extern "C" __global__ void batch_norm_moments_##SFX(                                       \
        const T* __restrict__ x, const T* __restrict__ shift, T* __restrict__ partial,         \
        long long C, long long inner, long long M, long long chunk, long long splits) {        \
        for (long long v = blockIdx.x; v < C * splits; v += gridDim.x) {                       \
            const long long c = v / splits, start = (v % splits) * chunk;                      \
            const long long end = start + chunk < M ? start + chunk : M;                       \
            const T sh = shift[c];                                                             \
            T s1 = T(0), s2 = T(0);                                                            \
            for (long long m = start + threadIdx.x; m < end; m += blockDim.x) {                \
                const T d = x[(m / inner) * C * inner + c * inner + m % inner] - sh;           \
                s1 += d;                                                                       \
                s2 += d * d;                                                                   \
            }                                                                                  \
            s1 = block_sum(s1);                                                                \
            s2 = block_sum(s2);                                                                \
            if (threadIdx.x == 0) {                                                            \
                partial[2 * v] = s1;                                                           \
                partial[2 * v + 1] = s2;                                                       \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    /* partial[2v] = sum gy, partial[2v+1] = sum gy (x - mean_c) */                            \
    extern "C" __global__ void batch_norm_grad_moments_##SFX(                                  \
        const T* __restrict__ x, const T* __restrict__ gy, const T* __restrict__ mean,         \
        T* __restrict__ partial, long long C, long long inner, long long M, long long chunk,   \
        long long splits) {                                                                    \
        for (long long v = blockIdx.x; v < C * splits; v += gridDim.x) {                       \
            const long long c = v / splits, start = (v % splits) * chunk;                      \
            const long long end = start + chunk < M ? start + chunk : M;                       \
            const T mu = mean[c];                                                              \
            T s1 = T(0), s2 = T(0);                                                            \
            for (long long m = start + threadIdx.x; m < end; m += blockDim.x) {                \
                const long long i = (m / inner) * C * inner + c * inner + m % inner;           \
                const T g = gy[i];                                                             \
                s1 += g;                                                                       \
                s2 += g * (x[i] - mu);                                                         \
            }                                                                                  \
            s1 = block_sum(s1);                                                                \
            s2 = block_sum(s2);                                                                \
            if (threadIdx.x == 0) {                                                            \
                partial[2 * v] = s1;                                                           \
                partial[2 * v + 1] = s2;                                                       \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    /* mean_c = shift_c + S1/M, var_c = S2/M - (S1/M)^2 clamped at 0 (M > 0) */                      \
    extern "C" __global__ void batch_norm_finish_##SFX(                                        \
        const T* __restrict__ partial, const T* __restrict__ shift, T* __restrict__ mean,      \
        T* __restrict__ var, long long C, long long splits, long long M) {                     \
        GRID_STRIDE_LOOP(c, C) {                                                               \
            T s1 = T(0), s2 = T(0);                                                            \
            for (long long s = 0; s < splits; ++s) {                                           \
                s1 += partial[2 * (c * splits + s)];                                           \
                s2 += partial[2 * (c * splits + s) + 1];                                       \
            }                                                                                  \
            const T d = s1 / T(M);                                                             \
            const T v = s2 / T(M) - d * d;                                                     \
            mean[c] = shift[c] + d;                                                            \
            var[c] = v < T(0) ? T(0) : v; /* NaN stays NaN */                                  \
        }                                                                                      \
    }                                                                                          \
    /* which = 0: out_c = S1 (sum gy); which = 1: out_c = S2 / sqrt(var_c + eps) */            \
    extern "C" __global__ void batch_norm_channel_grad_##SFX(                                  \
        const T* __restrict__ partial, const T* __restrict__ var, T* __restrict__ out,         \
        long long C, long long splits, long long which, T eps) {                               \
        GRID_STRIDE_LOOP(c, C) {                                                               \
            T s = T(0);                                                                        \
            for (long long k = 0; k < splits; ++k) s += partial[2 * (c * splits + k) + which]; \
            out[c] = which == 0 ? s : s / sqrt(var[c] + eps);                                  \
        }                                                                                      \
    }                                                                                          \
    /* y = (x - mean_c) / sqrt(var_c + eps) * w_c + b_c */                                     \
    extern "C" __global__ void batch_norm_##SFX(                                               \
        const T* __restrict__ x, const T* __restrict__ mean, const T* __restrict__ var,        \
        const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y, long long n,      \
        long long C, long long inner, T eps) {                                                 \
        GRID_STRIDE_LOOP(i, n) {                                                               \
            const long long c = (i / inner) % C;                                               \
            y[i] = (x[i] - mean[c]) / sqrt(var[c] + eps) * w[c] + b[c];                        \
        }                                                                                      \
    }                                                                                          \
    /* training: gx = a gy - a sg/M - a xhat sgx/M, a = w/sigma, xhat = (x - mean)/sigma,       \
       sigma = sqrt(var + eps), sg = sum gy, sgx = sum gy xhat per channel (a distributed over  \
       the terms, as the NumPy code: an infinite weight gives inf - inf = NaN, not a sign     \
       picked by rounding); evaluation (training = 0): gx = a gy */                            \
    extern "C" __global__ void batch_norm_wrt_x1_##SFX(                                        \
        const T* __restrict__ x, const T* __restrict__ gy, const T* __restrict__ mean,         \
        const T* __restrict__ var, const T* __restrict__ w, const T* __restrict__ sg,          \
        const T* __restrict__ sgx, T* __restrict__ gx, long long n, long long C,               \
        long long inner, long long M, long long training, T eps) {                             \
        GRID_STRIDE_LOOP(i, n) {                                                               \
            const long long c = (i / inner) % C;                                               \
            const T inv = T(1) / sqrt(var[c] + eps);                                           \
            const T a = w[c] * inv;                                                            \
            if (training) {                                                                    \
                const T xhat = (x[i] - mean[c]) * inv;                                         \
                gx[i] = a * gy[i] - a * (sg[c] / T(M)) - a * xhat * (sgx[c] / T(M));           \
            } else {                                                                           \
                gx[i] = a * gy[i];                                                             \
            }                                                                                  \
        }                                                                                      \
    }

BATCH_NORM_ALL(float, f32)
BATCH_NORM_ALL(double, f64)
