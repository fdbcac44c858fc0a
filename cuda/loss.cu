// Losses: softmax_cross_entropy (rows of logits; integer labels, label smoothing or
// probability targets; its forward and gradient fused in one launch for training),
// bce_with_logits, mse, mae, and their gradients. Launched by gpuops/ops/loss.py. Every
// kernel in float16, bfloat16, float32 and float64: T the storage type, A the arithmetic
// type (float for the 16-bit types: loaded into float, one rounding of each stored value);
// the sums of "sum"/"mean" in double. Parameter arrays (class weights, weight, pos_weight)
// are A: float32 for 16-bit data, not rounded to 16 bits.
//
// Reductions are deterministic (no atomics on a sum): "none" writes one term per element
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
#define ELEMENTWISE_LOSSES(T, A, SFX)                                                       \
    ELEMENTWISE_LOSS(mse, (u - v) * (u - v), A(2) * (u - v) * g, A(-2) * (u - v) * g, T, A, SFX) \
    ELEMENTWISE_LOSS(mae, fabs(u - v), signed_grad(u - v, g), -signed_grad(u - v, g), T, A, SFX) \
    ELEMENTWISE_LOSS(bce_with_logits, (u > A(0) ? u : A(0)) - u * v + log1p(exp(-fabs(u))), \
                     (sigmoid_acc(u) - v) * g, -u * g, T, A, SFX)                         \
    SUM_PARTIALS(T, A, SFX)

ELEMENTWISE_LOSSES(__half, float, f16)
ELEMENTWISE_LOSSES(__nv_bfloat16, float, bf16)
ELEMENTWISE_LOSSES(float, float, f32)
ELEMENTWISE_LOSSES(double, double, f64)

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

BCE_WEIGHTED(__half, float, f16)
BCE_WEIGHTED(__nv_bfloat16, float, bf16)
BCE_WEIGHTED(float, float, f32)
BCE_WEIGHTED(double, double, f64)

// ---- softmax cross-entropy over rows of logits x (rows, cols), labels t (rows,) ----
// loss_r = log sum_c e^(x_rc) - x_r,t = (m - x_r,t) + log sum_c e^(x_rc - m).
// A row whose label is ignore_index gets loss 0 and gradient 0. A label outside
// [0, cols) (possible only on the GPU path: the NumPy path raises) is never used as
// an index: that row's loss and gradient are NaN. Class weights w (cols,) scale a row's
// loss and gradient by w[t] when weighted is 1 (w is not read otherwise); "mean" then
// divides by the sum of w[t] over the counted rows (PyTorch's weighted mean).
// T is the storage type of x, gx, gy and the result, A the arithmetic type (float for
// float16 / bfloat16): the per-row losses of the forward are A (one rounding, of the
// result), the weights are A.

// The weight of a row with label t: w[t] (1 when not weighted; 0 for a label outside
// [0, cols), whose loss is NaN anyway).
template <typename A>
__device__ __forceinline__ A class_weight(const A* __restrict__ w, int weighted, long long t,
                                          long long cols) {
    if (!weighted) return A(1);
    return (t < 0 || t >= cols) ? A(0) : w[t];
}

// The divisor of "mean": the sum of w[t] over the rows whose label is not ignore (their
// number when not weighted), in double, over the whole block in a fixed order (every
// thread calls it and gets the same value; so does every block of a grid).
template <typename A>
__device__ __forceinline__ double counted_weight(const long long* __restrict__ labels,
                                                 const A* __restrict__ w, int weighted,
                                                 long long ignore, long long rows,
                                                 long long cols) {
    double count = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) {
        const long long t = labels[r];
        count += t != ignore ? double(class_weight(w, weighted, t, cols)) : 0.0;
    }
    return block_sum(count);
}

// One row (label t) of a W-lane kernel (cols <= W E; W = 32: a warp per row): the row
// read once into E registers per lane (lane l holds columns l, l+W, ...; padding holds
// lowest, whose exp is 0). Every lane of the warp calls it (the shuffles); a lane whose
// group has no counted row (active false: past the last row, or t == ignore) reads
// nothing, writes nothing and gets 0. Returns the row's loss w[t] (lse - x_t) in every lane
// of the group; when gr is not null writes the gradient row gr_c = (softmax_c - [c == t])
// g w[t].
// With label smoothing eps (the fused kernel; the target a_c = w_c ((1 - eps) [c == t] +
// eps / cols), as the block kernels of label smoothing below): loss = (1 - eps) w[t]
// (lse - x_t) + eps / cols sum_c w_c (lse - x_c), gr_c = g (S softmax_c - a_c) with
// S = sum_c a_c = (1 - eps) w[t] + eps / cols sum_c w_c.
template <typename T, typename A, int W, int E>
__device__ __forceinline__ A ce_row_warp(const T* __restrict__ xr, long long t, bool active,
                                         const A* __restrict__ w, int weighted, A eps, A g,
                                         T* __restrict__ gr, long long cols, int lane) {
    A v[E];
    A m = lowest_acc(A(0));
#pragma unroll
    for (int k = 0; k < E; ++k) {
        const long long c = lane + W * k;
        v[k] = active && c < cols ? load_acc(xr + c) : lowest_acc(A(0));
        m = v[k] > m ? v[k] : m;
    }
    m = group_max<W>(m);
    A s = A(0), shifted = A(0), total_w = A(0);  // sum_c w_c (m - x_c), sum_c w_c
#pragma unroll
    for (int k = 0; k < E; ++k) {
        const long long c = lane + W * k;
        if (eps != A(0) && active && c < cols) {
            const A wc = weighted ? w[c] : A(1);
            shifted += wc * (m - v[k]);
            total_w += wc;
        }
        v[k] = exp(v[k] - m);
        s += v[k];
    }
    s = group_sum<W>(s);
    if (eps != A(0)) {  // uniform over the launch
        shifted = group_sum<W>(shifted);
        total_w = group_sum<W>(total_w);
    }
    if (!active) return A(0);
    const bool bad = t < 0 || t >= cols;
    const A wt = class_weight(w, weighted, t, cols), log_s = A(log(s));
    const A uniform = eps / A(cols), hard = (A(1) - eps) * wt;
    if (gr != nullptr) {
        const A inv_s = A(1) / s;
        if (eps == A(0)) {
            const A scale = g * wt;
#pragma unroll
            for (int k = 0; k < E; ++k) {
                const long long c = lane + W * k;
                if (c < cols)
                    store_acc(gr + c, bad ? quiet_nan(A(0))
                                          : (v[k] * inv_s - (c == t ? A(1) : A(0))) * scale);
            }
        } else {
            const A total = hard + uniform * total_w;
#pragma unroll
            for (int k = 0; k < E; ++k) {
                const long long c = lane + W * k;
                if (c < cols) {
                    const A a = (weighted ? w[c] : A(1)) * uniform + (c == t ? hard : A(0));
                    store_acc(gr + c, bad ? quiet_nan(A(0)) : (total * (v[k] * inv_s) - a) * g);
                }
            }
        }
    }
    if (bad) return quiet_nan(A(0));
    const A nll = ((m - load_acc(xr + t)) + log_s) * wt;
    return eps == A(0) ? nll : (A(1) - eps) * nll + uniform * (shifted + total_w * log_s);
}

// The same for one block per row (long rows; rowwise.cuh's RowTile of E values per thread,
// 16-byte loads when vec): an online (max, sum) pass with the sum in double, (label
// smoothing) a pass for sum_c w_c (m - x_c) and sum_c w_c in double, then (gradient) a
// write pass; the later passes take the row from the registers when it fits the block
// (read once), else read each tile again. Every thread of the block calls it.
template <typename T, typename A, int E>
__device__ __forceinline__ A ce_row_block(const T* __restrict__ xr, long long t,
                                          const A* __restrict__ w, int weighted, A eps, A g,
                                          T* __restrict__ gr, long long cols, bool vec) {
    const long long tile = (long long)blockDim.x * E;
    const bool fits = cols <= tile;
    RowTile<T, A, E> row;
    A m = lowest_acc(A(0));
    double s = 0.0;
    for (long long b = 0; b < cols; b += tile) {
        row.load(xr + b, cols - b, vec, lowest_acc(A(0)));
        row.merge_lse(m, s, cols - b, vec);
    }
    block_lse(m, s);
    double shifted = 0.0, total_w = 0.0;
    if (eps != A(0)) {  // uniform over the launch
        for (long long b = 0; b < cols; b += tile) {
            if (!fits) row.load(xr + b, cols - b, vec, lowest_acc(A(0)));
#pragma unroll
            for (int e = 0; e < E; ++e) {
                const long long c = b + row.col(e, vec);
                if (c < cols) {
                    const A wc = weighted ? w[c] : A(1);
                    shifted += double(wc * (m - row.v[e]));
                    total_w += double(wc);
                }
            }
        }
        shifted = block_sum(shifted);
        total_w = block_sum(total_w);
    }
    const bool bad = t < 0 || t >= cols;
    const A wt = class_weight(w, weighted, t, cols), log_s = A(log(s));
    const A uniform = eps / A(cols), hard = (A(1) - eps) * wt;
    if (gr != nullptr) {
        const A inv_s = A(1.0 / s);
        const A scale = eps == A(0) ? g * wt : g;
        const A total = eps == A(0) ? A(1) : hard + uniform * A(total_w);
        for (long long b = 0; b < cols; b += tile) {
            if (!fits) row.load(xr + b, cols - b, vec, lowest_acc(A(0)));
#pragma unroll
            for (int e = 0; e < E; ++e) {
                const long long c = b + row.col(e, vec);
                // the target: [c == t] (eps = 0, scaled by w[t] in scale), else a_c
                const A a = eps == A(0) ? (c == t ? A(1) : A(0))
                                        : (weighted && c < cols ? w[c] : A(1)) * uniform +
                                              (c == t ? hard : A(0));
                row.v[e] = bad ? quiet_nan(A(0))
                               : (total * (A(exp(row.v[e] - m)) * inv_s) - a) * scale;
            }
            row.store(gr + b, cols - b, vec);
        }
    }
    if (bad) return quiet_nan(A(0));
    const A nll = ((m - load_acc(xr + t)) + log_s) * wt;
    return eps == A(0) ? nll
                       : (A(1) - eps) * nll + uniform * (A(shifted) + A(total_w) * log_s);
}

template <typename T>
__device__ __forceinline__ void zero_row(T* __restrict__ gr, long long first, long long step,
                                         long long cols) {
    for (long long c = first; c < cols; c += step) store_acc(gr + c, decltype(to_acc(*gr))(0));
}

// Forward: the per-row losses (A), W lanes (32: a warp) or a block per row.
template <typename T, typename A, int W, int E>
__device__ __forceinline__ void ce_rows_warp(const T* __restrict__ x,
                                             const long long* __restrict__ labels,
                                             const A* __restrict__ w, int weighted,
                                             A* __restrict__ loss, long long ignore,
                                             long long rows, long long cols) {
    const RowGroups<W> g;
    for (long long first = g.first; first < rows; first += g.step) {
        const long long r = first + g.offset;
        const long long t = r < rows ? labels[r] : ignore;
        const A l = ce_row_warp<T, A, W, E>(x + r * cols, t, t != ignore, w, weighted, A(0),
                                            A(0), (T*)nullptr, cols, g.lane);
        if (g.lane == 0 && r < rows) loss[r] = l;
    }
}

template <typename T, typename A, int E>
__device__ __forceinline__ void ce_rows_block(const T* __restrict__ x,
                                              const long long* __restrict__ labels,
                                              const A* __restrict__ w, int weighted,
                                              A* __restrict__ loss, long long ignore,
                                              long long rows, long long cols) {
    const bool vec = row_vectors(x, x, cols);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = labels[r];
        // (t == ignore is uniform over the block: no thread reaches the block reductions)
        const A l = t == ignore ? A(0)
                                : ce_row_block<T, A, E>(x + r * cols, t, w, weighted, A(0),
                                                        A(0), (T*)nullptr, cols, vec);
        if (threadIdx.x == 0) loss[r] = l;
    }
}

// "sum" / "mean" of the row losses: mean divides by counted_weight (0/0 = NaN when no
// row counts, as PyTorch). One block.
template <typename T, typename A>
__device__ __forceinline__ void ce_total(const A* __restrict__ loss,
                                         const long long* __restrict__ labels,
                                         const A* __restrict__ w, int weighted,
                                         T* __restrict__ y, long long ignore, long long rows,
                                         long long cols, int mean) {
    double acc = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) acc += double(loss[r]);
    acc = block_sum(acc);
    const double count = mean ? counted_weight(labels, w, weighted, ignore, rows, cols) : 1.0;
    if (threadIdx.x == 0) store_acc(y, A(acc / count));
}

// Gradient: gx_rc = g_r w[t_r] (softmax(x_r)_c - [c == t_r]), g_r = gy[r * gy_stride],
// divided by counted_weight for "mean" (mean = 1: each block computes it, no extra launch).
template <typename T, typename A, int W, int E>
__device__ __forceinline__ void ce_grad_warp(const T* __restrict__ x,
                                             const long long* __restrict__ labels,
                                             const A* __restrict__ w, int weighted,
                                             const T* __restrict__ gy, long long gy_stride,
                                             int mean, T* __restrict__ gx, long long ignore,
                                             long long rows, long long cols) {
    const A count = mean ? A(counted_weight(labels, w, weighted, ignore, rows, cols)) : A(1);
    const RowGroups<W> g;
    for (long long first = g.first; first < rows; first += g.step) {
        const long long r = first + g.offset;
        const bool live = r < rows;
        const long long t = live ? labels[r] : ignore;
        T* gr = gx + r * cols;
        if (live && t == ignore) zero_row(gr, g.lane, W, cols);
        ce_row_warp<T, A, W, E>(x + r * cols, t, t != ignore, w, weighted, A(0),
                                t != ignore ? load_acc(gy + r * gy_stride) / count : A(0), gr,
                                cols, g.lane);
    }
}

template <typename T, typename A, int E>
__device__ __forceinline__ void ce_grad_block(const T* __restrict__ x,
                                              const long long* __restrict__ labels,
                                              const A* __restrict__ w, int weighted,
                                              const T* __restrict__ gy, long long gy_stride,
                                              int mean, T* __restrict__ gx, long long ignore,
                                              long long rows, long long cols) {
    const A count = mean ? A(counted_weight(labels, w, weighted, ignore, rows, cols)) : A(1);
    const bool vec = row_vectors(x, gx, cols);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = labels[r];
        T* gr = gx + r * cols;
        if (t == ignore)
            zero_row(gr, threadIdx.x, blockDim.x, cols);
        else
            ce_row_block<T, A, E>(x + r * cols, t, w, weighted, A(0),
                                  load_acc(gy + r * gy_stride) / count, gr, cols, vec);
    }
}

// ---- forward and gradient in one launch (training): softmax_cross_entropy_with_grad --
// Per row: the loss term and the gradient row for an upstream gradient of 1 (the mean's
// 1/counted_weight included: every block computes the divisor itself; label smoothing
// eps as in ce_row_warp), the logits read once (into registers; a block's row when it
// fits the block). reduction 0 ("none") writes the row losses into loss (T); 1 ("sum")
// and 2 ("mean") add them per block (double) into partial[block], and the last block to
// finish adds the partials in index order into y. The last block is the one whose
// atomicInc(ticket, gridDim.x - 1) returns gridDim.x - 1: the ticket counter only orders
// the blocks, and that increment wraps it back to 0 for the next launch (the reset, in the
// same atomic); each block publishes its partial with __threadfence() before its
// ticket. The total is the same for any finishing order: bitwise repeatable, no atomics
// on a sum.
template <typename T, typename A>
__device__ __forceinline__ void ce_finish_total(double acc, double* __restrict__ partial,
                                                unsigned int* __restrict__ ticket,
                                                T* __restrict__ y, double count, int mean) {
    __shared__ bool last;
    acc = block_sum(acc);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = acc;
        __threadfence();  // the partial is visible to every block before the ticket is
        last = atomicInc(ticket, gridDim.x - 1) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;  // uniform over the block
    __threadfence();
    const volatile double* parts = partial;  // written by other blocks: not from L1
    double total = 0.0;
    for (long long b = threadIdx.x; b < gridDim.x; b += blockDim.x) total += parts[b];
    total = block_sum(total);
    if (threadIdx.x == 0) store_acc(y, A(mean ? total / count : total));
}

template <typename T, typename A, int W, int E>
__device__ __forceinline__ void ce_with_grad_warp(
    const T* __restrict__ x, const long long* __restrict__ labels, const A* __restrict__ w,
    int weighted, A eps, T* __restrict__ loss, double* __restrict__ partial,
    unsigned int* __restrict__ ticket, T* __restrict__ y, int reduction, T* __restrict__ gx,
    long long ignore, long long rows, long long cols) {
    const double count =
        reduction == 2 ? counted_weight(labels, w, weighted, ignore, rows, cols) : 1.0;
    const A g = A(1) / A(count);
    const RowGroups<W> rg;
    double acc = 0.0;
    for (long long first = rg.first; first < rows; first += rg.step) {
        const long long r = first + rg.offset;
        const bool live = r < rows;
        const long long t = live ? labels[r] : ignore;
        T* gr = gx + r * cols;
        if (live && t == ignore) zero_row(gr, rg.lane, W, cols);
        const A l = ce_row_warp<T, A, W, E>(x + r * cols, t, t != ignore, w, weighted, eps, g,
                                            gr, cols, rg.lane);
        if (rg.lane == 0 && live) {
            if (reduction == 0)
                store_acc(loss + r, l);
            else
                acc += double(l);
        }
    }
    if (reduction != 0) ce_finish_total<T, A>(acc, partial, ticket, y, count, reduction == 2);
}

template <typename T, typename A, int E>
__device__ __forceinline__ void ce_with_grad_block(
    const T* __restrict__ x, const long long* __restrict__ labels, const A* __restrict__ w,
    int weighted, A eps, T* __restrict__ loss, double* __restrict__ partial,
    unsigned int* __restrict__ ticket, T* __restrict__ y, int reduction, T* __restrict__ gx,
    long long ignore, long long rows, long long cols) {
    const double count =
        reduction == 2 ? counted_weight(labels, w, weighted, ignore, rows, cols) : 1.0;
    const A g = A(1) / A(count);
    const bool vec = row_vectors(x, gx, cols);
    double acc = 0.0;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = labels[r];
        T* gr = gx + r * cols;
        A l = A(0);
        if (t == ignore)
            zero_row(gr, threadIdx.x, blockDim.x, cols);
        else
            l = ce_row_block<T, A, E>(x + r * cols, t, w, weighted, eps, g, gr, cols, vec);
        if (threadIdx.x == 0) {
            if (reduction == 0)
                store_acc(loss + r, l);
            else
                acc += double(l);
        }
    }
    if (reduction != 0) ce_finish_total<T, A>(acc, partial, ticket, y, count, reduction == 2);
}

// The backward of the fused pair: gx = g * grad, grad the saved gradient for gy = 1 (logits
// (N, classes, inner) with inner = d1 d2 ...; n elements), g = gy[0] for "sum"/"mean"
// (per_row = 0: no index arithmetic) or gy[row] for "none", the row (N, inner) of element i.
template <typename T, typename A>
__device__ __forceinline__ void ce_scale_grad(const T* __restrict__ grad,
                                              const T* __restrict__ gy, int per_row,
                                              T* __restrict__ gx, long long n,
                                              long long classes, long long inner) {
    GRID_STRIDE_LOOP(i, n) {
        long long r = 0;
        if (per_row)
            r = inner == 1 ? i / classes : (i / (classes * inner)) * inner + i % inner;
        store_acc(gx + i, load_acc(grad + i) * load_acc(gy + r));
    }
}

// Row kernels (gpuops/ops/_rows.py): <name>_warp<E>, one warp per row, E = 1 .. 16 for
// every dtype, 32 for all but double; <name>_lanes<W>, W = 2 .. 16 lanes per row (E = 1).
#define CE_ROWS(NAME, W, E, T, A, SFX)                                                      \
    extern "C" __global__ void softmax_cross_entropy_##NAME##_##SFX(                        \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const A* __restrict__ w, int weighted, A* __restrict__ loss, long long ignore,     \
        long long rows, long long cols) {                                                  \
        ce_rows_warp<T, A, W, E>(x, labels, w, weighted, loss, ignore, rows, cols);        \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_wrt_x1_##NAME##_##SFX(                 \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const A* __restrict__ w, int weighted, const T* __restrict__ gy,                   \
        long long gy_stride, int mean, T* __restrict__ gx, long long ignore, long long rows, \
        long long cols) {                                                                  \
        ce_grad_warp<T, A, W, E>(x, labels, w, weighted, gy, gy_stride, mean, gx, ignore,  \
                                 rows, cols);                                              \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_with_grad_##NAME##_##SFX(              \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const A* __restrict__ w, int weighted, A eps, T* __restrict__ loss,                \
        double* __restrict__ partial, unsigned int* __restrict__ ticket, T* __restrict__ y, \
        int reduction, T* __restrict__ gx, long long ignore, long long rows, long long cols) { \
        ce_with_grad_warp<T, A, W, E>(x, labels, w, weighted, eps, loss, partial, ticket, y, \
                                      reduction, gx, ignore, rows, cols);                  \
    }
#define CE_WARP(E, T, A, SFX) CE_ROWS(warp##E, 32, E, T, A, SFX)
#define CE_LANES(W, T, A, SFX) CE_ROWS(lanes##W, W, 1, T, A, SFX)

#define CROSS_ENTROPY(T, A, SFX)                                                            \
    extern "C" __global__ void softmax_cross_entropy_block_##SFX(                           \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const A* __restrict__ w, int weighted, A* __restrict__ loss, long long ignore,     \
        long long rows, long long cols) {                                                  \
        ce_rows_block<T, A, ROW_HELD_OF(A, 1)>(x, labels, w, weighted, loss, ignore, rows, \
                                               cols);                                      \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_total_##SFX(                           \
        const A* __restrict__ loss, const long long* __restrict__ labels,                  \
        const A* __restrict__ w, int weighted, T* __restrict__ y, long long ignore,        \
        long long rows, long long cols, int mean) {                                        \
        ce_total<T, A>(loss, labels, w, weighted, y, ignore, rows, cols, mean);            \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_wrt_x1_block_##SFX(                    \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const A* __restrict__ w, int weighted, const T* __restrict__ gy,                   \
        long long gy_stride, int mean, T* __restrict__ gx, long long ignore, long long rows, \
        long long cols) {                                                                  \
        ce_grad_block<T, A, ROW_HELD_OF(A, 1)>(x, labels, w, weighted, gy, gy_stride, mean, \
                                               gx, ignore, rows, cols);                    \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_with_grad_block_##SFX(                 \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const A* __restrict__ w, int weighted, A eps, T* __restrict__ loss,                \
        double* __restrict__ partial, unsigned int* __restrict__ ticket, T* __restrict__ y, \
        int reduction, T* __restrict__ gx, long long ignore, long long rows, long long cols) { \
        ce_with_grad_block<T, A, ROW_HELD_OF(A, 1)>(x, labels, w, weighted, eps, loss,     \
                                                    partial, ticket, y, reduction, gx,     \
                                                    ignore, rows, cols);                   \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_scale_grad_##SFX(                      \
        const T* __restrict__ grad, const T* __restrict__ gy, int per_row,                 \
        T* __restrict__ gx, long long n, long long classes, long long inner) {             \
        ce_scale_grad<T, A>(grad, gy, per_row, gx, n, classes, inner);                     \
    }                                                                                      \
    CE_LANES(2, T, A, SFX)                                                                 \
    CE_LANES(4, T, A, SFX)                                                                 \
    CE_LANES(8, T, A, SFX)                                                                 \
    CE_LANES(16, T, A, SFX)                                                                \
    CE_WARP(1, T, A, SFX)                                                                  \
    CE_WARP(2, T, A, SFX)                                                                  \
    CE_WARP(4, T, A, SFX)                                                                  \
    CE_WARP(8, T, A, SFX)                                                                  \
    CE_WARP(16, T, A, SFX)

CROSS_ENTROPY(__half, float, f16)
CE_WARP(32, __half, float, f16)
CROSS_ENTROPY(__nv_bfloat16, float, bf16)
CE_WARP(32, __nv_bfloat16, float, bf16)
CROSS_ENTROPY(float, float, f32)
CE_WARP(32, float, float, f32)
CROSS_ENTROPY(double, double, f64)

// ---- label smoothing and probability targets (PyTorch), one block per row ----------
// Per row r the weighted target a_c = w_c ((1 - eps) tg_c + eps / cols), tg the row of
// the probabilities q (dense = 1) or the one-hot of the label t (dense = 0; labels is
// not read when dense, q is not read when not dense). loss_r = sum_c a_c (lse_r - x_rc),
// d/dx_rc = g_r (S_r softmax_rc - a_c) with S_r = sum_c a_c, d/dq_rc = g_r (1 - eps) w_c
// (lse_r - x_rc), g_r = gy[r * gy_stride], divided for "mean" (mean = 1) by the number of
// rows (dense) or counted_weight (labels). A label equal to ignore gives a 0 row;
// a label outside [0, cols) is never used as an index: that row's loss and gradient are NaN.
template <typename T, typename A>
__device__ __forceinline__ A soft_target(const T* __restrict__ qr, int dense, long long t,
                                         long long c, const A* __restrict__ w, int weighted,
                                         A eps, A uniform) {
    const A wc = weighted ? w[c] : A(1);
    const A tg = dense ? load_acc(qr + c) : (c == t ? A(1) : A(0));
    return wc * ((A(1) - eps) * tg + uniform);
}

// (m, s) of the row over the block: lse = m + log(s), s kept in double.
template <typename T, typename A>
__device__ __forceinline__ void soft_row_lse(const T* __restrict__ xr, long long cols, A& m,
                                             double& s) {
    m = lowest_acc(A(0));
    s = 0.0;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x)
        lse_merge(m, s, load_acc(xr + c), 1.0);
    block_lse(m, s);
}

template <typename T, typename A>
__device__ __forceinline__ void ce_soft_rows(const T* __restrict__ x,
                                             const long long* __restrict__ labels,
                                             const T* __restrict__ q, int dense,
                                             const A* __restrict__ w, int weighted, A eps,
                                             A* __restrict__ loss, long long ignore,
                                             long long rows, long long cols) {
    const A uniform = eps / A(cols);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = dense ? 0 : labels[r];
        if (!dense && t == ignore) {  // uniform over the block
            if (threadIdx.x == 0) loss[r] = A(0);
            continue;
        }
        const T* xr = x + r * cols;
        const T* qr = q + r * cols;
        A m;
        double s;
        soft_row_lse(xr, cols, m, s);
        const A log_s = A(log(s));
        double acc = 0.0;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            acc += double(soft_target(qr, dense, t, c, w, weighted, eps, uniform) *
                          ((m - load_acc(xr + c)) + log_s));
        acc = block_sum(acc);
        if (threadIdx.x == 0)
            loss[r] = (!dense && (t < 0 || t >= cols)) ? quiet_nan(A(0)) : A(acc);
    }
}

template <typename T, typename A>
__device__ __forceinline__ void ce_soft_grad_x1(const T* __restrict__ x,
                                                const long long* __restrict__ labels,
                                                const T* __restrict__ q, int dense,
                                                const A* __restrict__ w, int weighted, A eps,
                                                const T* __restrict__ gy, long long gy_stride,
                                                int mean, T* __restrict__ gx, long long ignore,
                                                long long rows, long long cols) {
    const A uniform = eps / A(cols);
    const A count = !mean ? A(1)
                          : dense ? A(rows)
                                  : A(counted_weight(labels, w, weighted, ignore, rows, cols));
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long t = dense ? 0 : labels[r];
        T* gr = gx + r * cols;
        if (!dense && t == ignore) {
            zero_row(gr, threadIdx.x, blockDim.x, cols);
            continue;
        }
        const T* xr = x + r * cols;
        const T* qr = q + r * cols;
        A m;
        double s;
        soft_row_lse(xr, cols, m, s);
        double sa = 0.0;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            sa += double(soft_target(qr, dense, t, c, w, weighted, eps, uniform));
        const A total = A(block_sum(sa));
        const bool bad = !dense && (t < 0 || t >= cols);
        const A g_r = load_acc(gy + r * gy_stride) / count, inv_s = A(1.0 / s);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            store_acc(gr + c, bad ? quiet_nan(A(0))
                                  : (total * (A(exp(load_acc(xr + c) - m)) * inv_s) -
                                     soft_target(qr, dense, t, c, w, weighted, eps, uniform)) *
                                        g_r);
    }
}

template <typename T, typename A>
__device__ __forceinline__ void ce_soft_grad_x2(const T* __restrict__ x,
                                                const A* __restrict__ w, int weighted, A eps,
                                                const T* __restrict__ gy, long long gy_stride,
                                                int mean, T* __restrict__ gq, long long rows,
                                                long long cols) {
    const A count = mean ? A(rows) : A(1);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* gr = gq + r * cols;
        A m;
        double s;
        soft_row_lse(xr, cols, m, s);
        const A log_s = A(log(s));
        const A g_r = load_acc(gy + r * gy_stride) / count * (A(1) - eps);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x)
            store_acc(gr + c, (weighted ? w[c] : A(1)) * ((m - load_acc(xr + c)) + log_s) * g_r);
    }
}

// "sum" / "mean" of the row losses of probability targets: mean divides by the number of
// rows (0/0 = NaN for none, as PyTorch). One block.
template <typename T, typename A>
__device__ __forceinline__ void ce_soft_total(const A* __restrict__ loss, T* __restrict__ y,
                                              long long rows, int mean) {
    double acc = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) acc += double(loss[r]);
    acc = block_sum(acc);
    if (threadIdx.x == 0) store_acc(y, A(mean ? acc / double(rows) : acc));
}

#define CROSS_ENTROPY_SOFT(T, A, SFX)                                                       \
    extern "C" __global__ void softmax_cross_entropy_soft_block_##SFX(                      \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const T* __restrict__ q, int dense, const A* __restrict__ w, int weighted, A eps,  \
        A* __restrict__ loss, long long ignore, long long rows, long long cols) {          \
        ce_soft_rows<T, A>(x, labels, q, dense, w, weighted, eps, loss, ignore, rows, cols); \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_soft_total_##SFX(                      \
        const A* __restrict__ loss, T* __restrict__ y, long long rows, int mean) {         \
        ce_soft_total<T, A>(loss, y, rows, mean);                                          \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_soft_wrt_x1_block_##SFX(               \
        const T* __restrict__ x, const long long* __restrict__ labels,                     \
        const T* __restrict__ q, int dense, const A* __restrict__ w, int weighted, A eps,  \
        const T* __restrict__ gy, long long gy_stride, int mean, T* __restrict__ gx,       \
        long long ignore, long long rows, long long cols) {                                \
        ce_soft_grad_x1<T, A>(x, labels, q, dense, w, weighted, eps, gy, gy_stride, mean,  \
                              gx, ignore, rows, cols);                                     \
    }                                                                                      \
    extern "C" __global__ void softmax_cross_entropy_soft_wrt_x2_block_##SFX(               \
        const T* __restrict__ x, const A* __restrict__ w, int weighted, A eps,             \
        const T* __restrict__ gy, long long gy_stride, int mean, T* __restrict__ gq,       \
        long long rows, long long cols) {                                                  \
        ce_soft_grad_x2<T, A>(x, w, weighted, eps, gy, gy_stride, mean, gq, rows, cols);   \
    }

CROSS_ENTROPY_SOFT(__half, float, f16)
CROSS_ENTROPY_SOFT(__nv_bfloat16, float, bf16)
CROSS_ENTROPY_SOFT(float, float, f32)
CROSS_ENTROPY_SOFT(double, double, f64)
