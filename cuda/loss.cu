// Losses: softmax_cross_entropy (rows of logits; integer labels, label smoothing or
// probability targets), bce_with_logits,
// mse, mae, and their gradients. Launched by gpuops/ops/loss.py. float32 / float64; mse and
// mae also float16 / bfloat16 (loaded into float, one rounding of each stored value; the
// sums of "sum"/"mean" in double).
//
// Reductions are deterministic (no atomics): "none" writes one term per element
// (per row); "sum"/"mean" write one partial sum per block (in double), and one
// block adds the partials. Gradients take gy with a stride: 0 for the 0-d gy of
// "sum"/"mean", 1 for the per-element gy of "none", times a scale (1/n for "mean").
#include "rowwise.cuh"
#include "logistic.cuh"

__device__ __forceinline__ float quiet_nan(float) { return nanf(""); }
__device__ __forceinline__ double quiet_nan(double) { return nan(""); }

// ---- elementwise losses: u = x1 (prediction / logit), v = x2 (target) ----------
#define ELEMENTWISE_LOSS(NAME, TERM, GRAD1, GRAD2, T, A, SFX)                               \
    extern "C" __global__ void NAME##_none_##SFX(const T* __restrict__ a,                  \
                                                 const T* __restrict__ b,                  \
                                                 T* __restrict__ y, long long n) {         \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A u = to_acc(a[i]), v = to_acc(b[i]);                                    \
            store_acc(y + i, (TERM));                                                      \
        }                                                                                  \
    }                                                                                      \
    extern "C" __global__ void NAME##_partial_##SFX(const T* __restrict__ a,               \
                                                    const T* __restrict__ b,               \
                                                    double* __restrict__ partial,          \
                                                    long long n) {                         \
        double acc = 0.0;                                                                  \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A u = to_acc(a[i]), v = to_acc(b[i]);                                    \
            acc += (TERM);                                                                 \
        }                                                                                  \
        acc = block_sum(acc);                                                              \
        if (threadIdx.x == 0) partial[blockIdx.x] = acc;                                   \
    }                                                                                      \
    extern "C" __global__ void NAME##_wrt_x1_##SFX(                                        \
        const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ gy,        \
        long long gy_stride, T* __restrict__ gx, A scale, long long n) {                   \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A u = to_acc(a[i]), v = to_acc(b[i]), g = to_acc(gy[i * gy_stride]) * scale; \
            store_acc(gx + i, (GRAD1));                                                    \
        }                                                                                  \
    }                                                                                      \
    extern "C" __global__ void NAME##_wrt_x2_##SFX(                                        \
        const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ gy,        \
        long long gy_stride, T* __restrict__ gx, A scale, long long n) {                   \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A u = to_acc(a[i]), v = to_acc(b[i]), g = to_acc(gy[i * gy_stride]) * scale; \
            (void)v;                                                                       \
            store_acc(gx + i, (GRAD2));                                                    \
        }                                                                                  \
    }

// y = scale * sum of the per-block partials (one block).
#define SUM_PARTIALS(T, A, SFX)                                                             \
    extern "C" __global__ void sum_partials_##SFX(const double* __restrict__ partial,      \
                                                  long long parts, T* __restrict__ y,      \
                                                  double scale) {                          \
        double acc = 0.0;                                                                  \
        for (long long i = threadIdx.x; i < parts; i += blockDim.x) acc += partial[i];     \
        acc = block_sum(acc);                                                              \
        if (threadIdx.x == 0) store_acc(y, A(acc * scale));                                \
    }

// g * sign(d), with sign(0) = 0 and NaN for a NaN d (NumPy's sign: inf - inf gives NaN).
template <typename T>
__device__ __forceinline__ T signed_grad(T d, T g) {
    return d > T(0) ? g : (d < T(0) ? -g : (d == T(0) ? T(0) : d));
}

// mse: (u - v)^2, d/du = 2 (u - v). mae: |u - v|, d/du = sign(u - v), 0 at u == v.
// bce_with_logits: max(u, 0) - u v + log(1 + e^-|u|) (never exp of a positive value),
// d/du = sigma(u) - v, d/dv = -u.
// mse and mae in every dtype; bce_with_logits (and cross-entropy) in float32 / float64.
#define DIFFERENCE_LOSSES(T, A, SFX)                                                        \
    ELEMENTWISE_LOSS(mse, (u - v) * (u - v), A(2) * (u - v) * g, A(-2) * (u - v) * g, T, A, SFX) \
    ELEMENTWISE_LOSS(mae, fabs(u - v), signed_grad(u - v, g), -signed_grad(u - v, g), T, A, SFX) \
    SUM_PARTIALS(T, A, SFX)

#define ELEMENTWISE_LOSSES(T, SFX)                                                          \
    DIFFERENCE_LOSSES(T, T, SFX)                                                           \
    ELEMENTWISE_LOSS(bce_with_logits, (u > T(0) ? u : T(0)) - u * v + log1p(exp(-fabs(u))), \
                     (sigmoid_acc(u) - v) * g, -u * g, T, T, SFX)

DIFFERENCE_LOSSES(__half, float, f16)
DIFFERENCE_LOSSES(__nv_bfloat16, float, bf16)
ELEMENTWISE_LOSSES(float, f32)
ELEMENTWISE_LOSSES(double, f64)

// bce_with_logits with weight w and pos_weight p (PyTorch), both given per element (the
// launcher broadcasts them, 1 where absent): with l = 1 + (p - 1) v and
// softplus(-u) = -log sigma(u) = max(-u, 0) + log(1 + e^-|u|),
// term = w [(1 - v) u + l softplus(-u)], d/du = w [(1 - v) - l sigma(-u)],
// d/dv = w [(p - 1) softplus(-u) - u].
template <typename T>
__device__ __forceinline__ T softplus_neg(T u) {
    return (u < T(0) ? -u : T(0)) + log1p(exp(-fabs(u)));
}

#define BCE_WEIGHTED(T, A, SFX)                                                             \
    extern "C" __global__ void bce_with_logits_weighted_none_##SFX(                         \
        const T* __restrict__ a, const T* __restrict__ b, const A* __restrict__ w,         \
        const A* __restrict__ p, T* __restrict__ y, long long n) {                         \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A u = to_acc(a[i]), v = to_acc(b[i]);                                    \
            const A l = A(1) + (p[i] - A(1)) * v;                                          \
            store_acc(y + i, w[i] * ((A(1) - v) * u + l * softplus_neg(u)));              \
        }                                                                                  \
    }                                                                                      \
    extern "C" __global__ void bce_with_logits_weighted_partial_##SFX(                      \
        const T* __restrict__ a, const T* __restrict__ b, const A* __restrict__ w,         \
        const A* __restrict__ p, double* __restrict__ partial, long long n) {              \
        double acc = 0.0;                                                                  \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A u = to_acc(a[i]), v = to_acc(b[i]);                                    \
            acc += w[i] * ((A(1) - v) * u + (A(1) + (p[i] - A(1)) * v) * softplus_neg(u)); \
        }                                                                                  \
        acc = block_sum(acc);                                                              \
        if (threadIdx.x == 0) partial[blockIdx.x] = acc;                                   \
    }                                                                                      \
    extern "C" __global__ void bce_with_logits_weighted_wrt_x1_##SFX(                       \
        const T* __restrict__ a, const T* __restrict__ b, const A* __restrict__ w,         \
        const A* __restrict__ p, const T* __restrict__ gy, long long gy_stride,            \
        T* __restrict__ gx, A scale, long long n) {                                        \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A u = to_acc(a[i]), v = to_acc(b[i]), g = to_acc(gy[i * gy_stride]) * scale; \
            const A l = A(1) + (p[i] - A(1)) * v;                                          \
            store_acc(gx + i, (A(1) - v - l * sigmoid_acc(-u)) * w[i] * g);                \
        }                                                                                  \
    }                                                                                      \
    extern "C" __global__ void bce_with_logits_weighted_wrt_x2_##SFX(                       \
        const T* __restrict__ a, const T* __restrict__ b, const A* __restrict__ w,         \
        const A* __restrict__ p, const T* __restrict__ gy, long long gy_stride,            \
        T* __restrict__ gx, A scale, long long n) {                                        \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A u = to_acc(a[i]), g = to_acc(gy[i * gy_stride]) * scale;               \
            (void)b;                                                                       \
            store_acc(gx + i, ((p[i] - A(1)) * softplus_neg(u) - u) * w[i] * g);           \
        }                                                                                  \
    }

BCE_WEIGHTED(float, float, f32)
BCE_WEIGHTED(double, double, f64)

// ---- softmax cross-entropy over rows of logits x (rows, cols), labels t (rows,) ----
// loss_r = log sum_c e^(x_rc) - x_r,t = (m - x_r,t) + log sum_c e^(x_rc - m).
// A row whose label is ignore_index gets loss 0 and gradient 0. A label outside
// [0, cols) (possible only on the GPU path: the NumPy path raises) is never used as
// an index: that row's loss and gradient are NaN. Class weights w (cols,) scale a row's
// loss and gradient by w[t] when weighted is 1 (w is not read otherwise); "mean" then
// divides by the sum of w[t] over the counted rows (PyTorch's weighted mean).

// The weight of a row with label t: w[t] (1 when not weighted; 0 for a label outside
// [0, cols), whose loss is NaN anyway).
template <typename T>
__device__ __forceinline__ T class_weight(const T* __restrict__ w, int weighted, long long t,
                                          long long cols) {
    if (!weighted) return T(1);
    return (t < 0 || t >= cols) ? T(0) : w[t];
}

// Row r of a warp-per-row kernel in E registers per lane (lane l holds columns l, l+32,
// ...; padding lanes hold lowest, whose exp is 0): on return v[k] = e^(x - m) and every
// lane has m, the row max, and s = sum_c e^(x_rc - m).
template <typename T, int E>
__device__ __forceinline__ void warp_row_exp(const T* __restrict__ xr, long long cols,
                                             int lane, T (&v)[E], T& m, T& s) {
    m = lowest_acc(T(0));
#pragma unroll
    for (int k = 0; k < E; ++k) {
        const long long c = lane + 32 * k;
        v[k] = c < cols ? xr[c] : lowest_acc(T(0));
        m = v[k] > m ? v[k] : m;
    }
    m = warp_max(m);
    s = T(0);
#pragma unroll
    for (int k = 0; k < E; ++k) {
        v[k] = exp(v[k] - m);
        s += v[k];
    }
    s = warp_sum(s);
}

// Forward, one warp per row (cols <= 32 E), the row read once into registers; lane 0
// reads x_r,t and writes the row's loss.
template <typename T, int E>
__device__ __forceinline__ void ce_rows_warp(const T* __restrict__ x,
                                             const long long* __restrict__ labels,
                                             const T* __restrict__ w, int weighted,
                                             T* __restrict__ loss, long long ignore,
                                             long long rows, long long cols) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
         r += warps) {
        const long long t = labels[r];
        if (t == ignore) {
            if (lane == 0) loss[r] = T(0);
            continue;
        }
        const T* xr = x + r * cols;
        T v[E], m, s;
        warp_row_exp<T, E>(xr, cols, lane, v, m, s);
        if (lane == 0)
            loss[r] = (t < 0 || t >= cols)
                          ? quiet_nan(T(0))
                          : ((m - xr[t]) + T(log(s))) * class_weight(w, weighted, t, cols);
    }
}

// Forward, one block per row (long rows); the sum is kept in double.
template <typename T>
__device__ __forceinline__ void ce_rows_block(const T* __restrict__ x,
                                              const long long* __restrict__ labels,
                                              const T* __restrict__ w, int weighted,
                                              T* __restrict__ loss, long long ignore,
                                              long long rows, long long cols) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = labels[r];
        if (t == ignore) {  // uniform over the block: no thread reaches block_lse
            if (threadIdx.x == 0) loss[r] = T(0);
            continue;
        }
        const T* xr = x + r * cols;
        T m = lowest_acc(T(0));
        double s = 0.0;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) lse_merge(m, s, xr[c], 1.0);
        block_lse(m, s);
        if (threadIdx.x == 0)
            loss[r] = (t < 0 || t >= cols)
                          ? quiet_nan(T(0))
                          : ((m - xr[t]) + T(log(s))) * class_weight(w, weighted, t, cols);
    }
}

// "sum" / "mean" of the row losses: mean divides by the number of rows whose label
// is not ignore_index, or the sum of their weights (0/0 = NaN when there is none, as
// PyTorch). One block.
template <typename T>
__device__ __forceinline__ void ce_total(const T* __restrict__ loss,
                                         const long long* __restrict__ labels,
                                         const T* __restrict__ w, int weighted,
                                         T* __restrict__ y, long long ignore, long long rows,
                                         long long cols, int mean) {
    double acc = 0.0, count = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        const long long t = labels[r];
        acc += loss[r];
        count += t != ignore ? double(class_weight(w, weighted, t, cols)) : 0.0;
    }
    acc = block_sum(acc);
    count = block_sum(count);
    if (threadIdx.x == 0) y[0] = T(mean ? acc / count : acc);
}

// The gradient's scale for "sum" (gy) and "mean" (gy / number of counted rows, or the
// sum of their weights). One block.
template <typename T>
__device__ __forceinline__ void ce_grad_scale(const long long* __restrict__ labels,
                                              const T* __restrict__ w, int weighted,
                                              const T* __restrict__ gy, T* __restrict__ scale,
                                              long long ignore, long long rows,
                                              long long cols, int mean) {
    double count = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        const long long t = labels[r];
        count += t != ignore ? double(class_weight(w, weighted, t, cols)) : 0.0;
    }
    count = block_sum(count);
    if (threadIdx.x == 0) scale[0] = T(mean ? double(gy[0]) / count : double(gy[0]));
}

// Gradient, fused: gx_rc = g_r (softmax(x_r)_c - [c == t_r]), one warp per row with the
// row in E registers per lane (read once, no one-hot matrix); g_r = g[r * g_stride].
template <typename T, int E>
__device__ __forceinline__ void ce_grad_warp(const T* __restrict__ x,
                                             const long long* __restrict__ labels,
                                             const T* __restrict__ w, int weighted,
                                             const T* __restrict__ g, long long g_stride,
                                             T* __restrict__ gx, long long ignore,
                                             long long rows, long long cols) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
         r += warps) {
        const long long t = labels[r];
        const T* xr = x + r * cols;
        T* gr = gx + r * cols;
        if (t == ignore) {
#pragma unroll
            for (int k = 0; k < E; ++k)
                if (lane + 32 * k < cols) gr[lane + 32 * k] = T(0);
            continue;
        }
        T v[E], m, s;
        warp_row_exp<T, E>(xr, cols, lane, v, m, s);
        const bool bad = t < 0 || t >= cols;
        const T gr_scale = g[r * g_stride] * class_weight(w, weighted, t, cols),
                inv_s = T(1) / s;
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            if (c < cols)
                gr[c] = bad ? quiet_nan(T(0))
                            : (v[k] * inv_s - (c == t ? T(1) : T(0))) * gr_scale;
        }
    }
}

// Gradient, one block per row (long rows): online (max, sum) pass, then a write pass.
template <typename T>
__device__ __forceinline__ void ce_grad_block(const T* __restrict__ x,
                                              const long long* __restrict__ labels,
                                              const T* __restrict__ w, int weighted,
                                              const T* __restrict__ g, long long g_stride,
                                              T* __restrict__ gx, long long ignore,
                                              long long rows, long long cols) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = labels[r];
        const T* xr = x + r * cols;
        T* gr = gx + r * cols;
        if (t == ignore) {
            for (long long c = threadIdx.x; c < cols; c += blockDim.x) gr[c] = T(0);
            continue;
        }
        T m = lowest_acc(T(0));
        double s = 0.0;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) lse_merge(m, s, xr[c], 1.0);
        block_lse(m, s);
        const bool bad = t < 0 || t >= cols;
        const T gr_scale = g[r * g_stride] * class_weight(w, weighted, t, cols),
                inv_s = T(1.0 / s);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            gr[c] = bad ? quiet_nan(T(0))
                        : (T(exp(xr[c] - m)) * inv_s - (c == t ? T(1) : T(0))) * gr_scale;
    }
}

// Warp kernels E = 1 .. 16 for every dtype, 32 for float (gpuops/ops/_rows.py).
#define CE_WARP(E, T, SFX)                                                                  \
    extern "C" __global__ void softmax_cross_entropy_warp##E##_##SFX(                       \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const T* __restrict__ w, int weighted, T* __restrict__ loss, long long ignore,     \
        long long rows, long long cols) {                                                  \
        ce_rows_warp<T, E>(x, labels, w, weighted, loss, ignore, rows, cols);              \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_wrt_x1_warp##E##_##SFX(                \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const T* __restrict__ w, int weighted, const T* __restrict__ g, long long g_stride, \
        T* __restrict__ gx, long long ignore, long long rows, long long cols) {            \
        ce_grad_warp<T, E>(x, labels, w, weighted, g, g_stride, gx, ignore, rows, cols);   \
    }

#define CROSS_ENTROPY(T, SFX)                                                               \
    extern "C" __global__ void softmax_cross_entropy_block_##SFX(                           \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const T* __restrict__ w, int weighted, T* __restrict__ loss, long long ignore,     \
        long long rows, long long cols) {                                                  \
        ce_rows_block<T>(x, labels, w, weighted, loss, ignore, rows, cols);                \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_total_##SFX(                           \
        const T* __restrict__ loss, const long long* __restrict__ labels,                  \
        const T* __restrict__ w, int weighted, T* __restrict__ y, long long ignore,        \
        long long rows, long long cols, int mean) {                                        \
        ce_total<T>(loss, labels, w, weighted, y, ignore, rows, cols, mean);               \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_grad_scale_##SFX(                      \
        const long long* __restrict__ labels, const T* __restrict__ w, int weighted,       \
        const T* __restrict__ gy, T* __restrict__ scale, long long ignore, long long rows, \
        long long cols, int mean) {                                                        \
        ce_grad_scale<T>(labels, w, weighted, gy, scale, ignore, rows, cols, mean);        \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_wrt_x1_block_##SFX(                    \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const T* __restrict__ w, int weighted, const T* __restrict__ g, long long g_stride, \
        T* __restrict__ gx, long long ignore, long long rows, long long cols) {            \
        ce_grad_block<T>(x, labels, w, weighted, g, g_stride, gx, ignore, rows, cols);     \
    }                                                                                      \
    CE_WARP(1, T, SFX)                                                                     \
    CE_WARP(2, T, SFX)                                                                     \
    CE_WARP(4, T, SFX)                                                                     \
    CE_WARP(8, T, SFX)                                                                     \
    CE_WARP(16, T, SFX)

CROSS_ENTROPY(float, f32)
CE_WARP(32, float, f32)
CROSS_ENTROPY(double, f64)

// ---- label smoothing and probability targets (PyTorch), one block per row ----------
// Per row r the weighted target a_c = w_c ((1 - eps) tg_c + eps / cols), tg the row of
// the probabilities q (dense = 1) or the one-hot of the label t (dense = 0; labels is
// not read when dense, q is not read when not dense). loss_r = sum_c a_c (lse_r - x_rc),
// d/dx_rc = g_r (S_r softmax_rc - a_c) with S_r = sum_c a_c, d/dq_rc = g_r (1 - eps) w_c
// (lse_r - x_rc), g_r = g[r * g_stride] * scale. A label equal to ignore gives a 0 row;
// a label outside [0, cols) is never used as an index: that row's loss and gradient are NaN.
template <typename T>
__device__ __forceinline__ T soft_target(const T* __restrict__ qr, int dense, long long t,
                                         long long c, const T* __restrict__ w, int weighted,
                                         T eps, T uniform) {
    const T wc = weighted ? w[c] : T(1);
    const T tg = dense ? qr[c] : (c == t ? T(1) : T(0));
    return wc * ((T(1) - eps) * tg + uniform);
}

// (m, s) of the row over the block: lse = m + log(s), s kept in double.
template <typename T>
__device__ __forceinline__ void soft_row_lse(const T* __restrict__ xr, long long cols, T& m,
                                             double& s) {
    m = lowest_acc(T(0));
    s = 0.0;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) lse_merge(m, s, xr[c], 1.0);
    block_lse(m, s);
}

template <typename T>
__device__ __forceinline__ void ce_soft_rows(const T* __restrict__ x,
                                             const long long* __restrict__ labels,
                                             const T* __restrict__ q, int dense,
                                             const T* __restrict__ w, int weighted, T eps,
                                             T* __restrict__ loss, long long ignore,
                                             long long rows, long long cols) {
    const T uniform = eps / T(cols);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = dense ? 0 : labels[r];
        if (!dense && t == ignore) {  // uniform over the block
            if (threadIdx.x == 0) loss[r] = T(0);
            continue;
        }
        const T* xr = x + r * cols;
        const T* qr = q + r * cols;
        T m;
        double s;
        soft_row_lse(xr, cols, m, s);
        const T log_s = T(log(s));
        double acc = 0.0;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            acc += double(soft_target(qr, dense, t, c, w, weighted, eps, uniform) *
                          ((m - xr[c]) + log_s));
        acc = block_sum(acc);
        if (threadIdx.x == 0)
            loss[r] = (!dense && (t < 0 || t >= cols)) ? quiet_nan(T(0)) : T(acc);
    }
}

template <typename T>
__device__ __forceinline__ void ce_soft_grad_x1(const T* __restrict__ x,
                                                const long long* __restrict__ labels,
                                                const T* __restrict__ q, int dense,
                                                const T* __restrict__ w, int weighted, T eps,
                                                const T* __restrict__ g, long long g_stride,
                                                T scale, T* __restrict__ gx, long long ignore,
                                                long long rows, long long cols) {
    const T uniform = eps / T(cols);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = dense ? 0 : labels[r];
        T* gr = gx + r * cols;
        if (!dense && t == ignore) {
            for (long long c = threadIdx.x; c < cols; c += blockDim.x) gr[c] = T(0);
            continue;
        }
        const T* xr = x + r * cols;
        const T* qr = q + r * cols;
        T m;
        double s;
        soft_row_lse(xr, cols, m, s);
        double sa = 0.0;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            sa += double(soft_target(qr, dense, t, c, w, weighted, eps, uniform));
        const T total = T(block_sum(sa));
        const bool bad = !dense && (t < 0 || t >= cols);
        const T g_r = g[r * g_stride] * scale, inv_s = T(1.0 / s);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            gr[c] = bad ? quiet_nan(T(0))
                        : (total * (T(exp(xr[c] - m)) * inv_s) -
                           soft_target(qr, dense, t, c, w, weighted, eps, uniform)) * g_r;
    }
}

template <typename T>
__device__ __forceinline__ void ce_soft_grad_x2(const T* __restrict__ x,
                                                const T* __restrict__ w, int weighted, T eps,
                                                const T* __restrict__ g, long long g_stride,
                                                T scale, T* __restrict__ gq, long long rows,
                                                long long cols) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* gr = gq + r * cols;
        T m;
        double s;
        soft_row_lse(xr, cols, m, s);
        const T log_s = T(log(s));
        const T g_r = g[r * g_stride] * scale * (T(1) - eps);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            gr[c] = (weighted ? w[c] : T(1)) * ((m - xr[c]) + log_s) * g_r;
    }
}

// "sum" / "mean" of the row losses of probability targets: mean divides by the number of
// rows (0/0 = NaN for none, as PyTorch). One block.
template <typename T>
__device__ __forceinline__ void ce_soft_total(const T* __restrict__ loss, T* __restrict__ y,
                                              long long rows, int mean) {
    double acc = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) acc += loss[r];
    acc = block_sum(acc);
    if (threadIdx.x == 0) y[0] = T(mean ? acc / double(rows) : acc);
}

#define CROSS_ENTROPY_SOFT(T, SFX)                                                          \
    extern "C" __global__ void softmax_cross_entropy_soft_block_##SFX(                      \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const T* __restrict__ q, int dense, const T* __restrict__ w, int weighted, T eps,  \
        T* __restrict__ loss, long long ignore, long long rows, long long cols) {          \
        ce_soft_rows<T>(x, labels, q, dense, w, weighted, eps, loss, ignore, rows, cols);  \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_soft_total_##SFX(                      \
        const T* __restrict__ loss, T* __restrict__ y, long long rows, int mean) {         \
        ce_soft_total<T>(loss, y, rows, mean);                                             \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_soft_wrt_x1_block_##SFX(               \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const T* __restrict__ q, int dense, const T* __restrict__ w, int weighted, T eps,  \
        const T* __restrict__ g, long long g_stride, T scale, T* __restrict__ gx,          \
        long long ignore, long long rows, long long cols) {                                \
        ce_soft_grad_x1<T>(x, labels, q, dense, w, weighted, eps, g, g_stride, scale, gx,  \
                           ignore, rows, cols);                                            \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_soft_wrt_x2_block_##SFX(               \
        const T* __restrict__ x, const T* __restrict__ w, int weighted, T eps,             \
        const T* __restrict__ g, long long g_stride, T scale, T* __restrict__ gq,          \
        long long rows, long long cols) {                                                  \
        ce_soft_grad_x2<T>(x, w, weighted, eps, g, g_stride, scale, gq, rows, cols);       \
    }

CROSS_ENTROPY_SOFT(float, f32)
CROSS_ENTROPY_SOFT(double, f64)
