// The normalization family, launched by gpuops/ops/normalization.py: batch normalization
// (training mode: batch statistics; evaluation mode: given running statistics) and its
// gradients here; layer_norm and rms_norm (rows of the last axis) below.
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
#include "half.cuh"

// Stage 2 of the deterministic reductions: p[0] + p[stride] + ... + p[(count - 1) stride],
// added in that order.
template <typename A>
__device__ __forceinline__ A ordered_sum(const A* __restrict__ p, long long count,
                                         long long stride) {
    A s = A(0);
    for (long long k = 0; k < count; ++k) s += p[k * stride];
    return s;
}

// Stage 1 over this block's (channel, chunk) pairs v = c * splits + s: partial[2v] and
// partial[2v + 1] are the chunk's sums of the two terms that terms(i, t1, t2) gives for its
// elements i, where terms = channel(c) is made once per pair (it holds the channel's
// statistics).
template <typename A, typename Channel>
__device__ __forceinline__ void channel_sums(A* __restrict__ partial, long long C,
                                             long long inner, long long M, long long chunk,
                                             long long splits, Channel channel) {
    for (long long v = blockIdx.x; v < C * splits; v += gridDim.x) {
        const long long c = v / splits, start = (v % splits) * chunk;
        const long long end = start + chunk < M ? start + chunk : M;
        const auto terms = channel(c);
        A s1 = A(0), s2 = A(0);
        for (long long m = start + threadIdx.x; m < end; m += blockDim.x) {
            A t1, t2;
            terms((m / inner) * C * inner + c * inner + m % inner, t1, t2);
            s1 += t1;
            s2 += t2;
        }
        s1 = block_sum(s1);
        s2 = block_sum(s2);
        if (threadIdx.x == 0) {
            partial[2 * v] = s1;
            partial[2 * v + 1] = s2;
        }
    }
}

// T the storage type, A the accumulation type (float for 16-bit T): the statistics, partial
// sums and per-channel sums are A arrays (float32 for 16-bit data), x, gy, w, b, y and gx T.
#define BATCH_NORM_ALL(T, A, SFX)                                                              \
    /* partial[2v] = sum (x - shift_c), partial[2v+1] = sum (x - shift_c)^2, v = c*splits+s */ \
    extern "C" __global__ void batch_norm_moments_##SFX(                                       \
        const T* __restrict__ x, const A* __restrict__ shift, A* __restrict__ partial,         \
        long long C, long long inner, long long M, long long chunk, long long splits) {        \
        channel_sums(partial, C, inner, M, chunk, splits, [=](long long c) {                   \
            const A sh = shift[c];                                                             \
            return [=](long long i, A& d, A& d2) {                                             \
                d = load_acc(x + i) - sh;                                                      \
                d2 = d * d;                                                                    \
            };                                                                                 \
        });                                                                                    \
    }                                                                                          \
    /* partial[2v] = sum gy, partial[2v+1] = sum gy (x - mean_c) */                            \
    extern "C" __global__ void batch_norm_grad_moments_##SFX(                                  \
        const T* __restrict__ x, const T* __restrict__ gy, const A* __restrict__ mean,         \
        A* __restrict__ partial, long long C, long long inner, long long M, long long chunk,   \
        long long splits) {                                                                    \
        channel_sums(partial, C, inner, M, chunk, splits, [=](long long c) {                   \
            const A mu = mean[c];                                                              \
            return [=](long long i, A& g, A& gd) {                                             \
                g = load_acc(gy + i);                                                          \
                gd = g * (load_acc(x + i) - mu);                                               \
            };                                                                                 \
        });                                                                                    \
    }                                                                                          \
    /* mean_c = shift_c + S1/M, var_c = S2/M - (S1/M)^2 clamped at 0 (M > 0) */                \
    extern "C" __global__ void batch_norm_finish_##SFX(                                        \
        const A* __restrict__ partial, const A* __restrict__ shift, A* __restrict__ mean,      \
        A* __restrict__ var, long long C, long long splits, long long M) {                     \
        GRID_STRIDE_LOOP(c, C) {                                                               \
            const A s1 = ordered_sum(partial + 2 * c * splits, splits, 2);                     \
            const A s2 = ordered_sum(partial + 2 * c * splits + 1, splits, 2);                 \
            const A d = s1 / A(M);                                                             \
            const A v = s2 / A(M) - d * d;                                                     \
            mean[c] = shift[c] + d;                                                            \
            var[c] = v < A(0) ? A(0) : v; /* NaN stays NaN */                                  \
        }                                                                                      \
    }                                                                                          \
    /* which = 0: out_c = S1 (sum gy); which = 1: out_c = S2 / sqrt(var_c + eps); rounded  \
       once to T (the weight and bias gradients; the host launches the A instantiation for \
       the sums the input gradient reads) */                                                   \
    extern "C" __global__ void batch_norm_channel_grad_##SFX(                                  \
        const A* __restrict__ partial, const A* __restrict__ var, T* __restrict__ out,         \
        long long C, long long splits, long long which, A eps) {                               \
        GRID_STRIDE_LOOP(c, C) {                                                               \
            const A s = ordered_sum(partial + 2 * c * splits + which, splits, 2);              \
            store_acc(out + c, which == 0 ? s : s / sqrt(var[c] + eps));                       \
        }                                                                                      \
    }                                                                                          \
    /* y = (x - mean_c) / sqrt(var_c + eps) * w_c + b_c */                                     \
    extern "C" __global__ void batch_norm_##SFX(                                               \
        const T* __restrict__ x, const A* __restrict__ mean, const A* __restrict__ var,        \
        const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y, long long n,      \
        long long C, long long inner, A eps) {                                                 \
        GRID_STRIDE_LOOP(i, n) {                                                               \
            const long long c = (i / inner) % C;                                               \
            store_acc(y + i, (load_acc(x + i) - mean[c]) / sqrt(var[c] + eps) *                \
                                     load_acc(w + c) + load_acc(b + c));                       \
        }                                                                                      \
    }                                                                                          \
    /* training: gx = a gy - a sg/M - a xhat sgx/M, a = w/sigma, xhat = (x - mean)/sigma,       \
       sigma = sqrt(var + eps), sg = sum gy, sgx = sum gy xhat per channel (a distributed over  \
       the terms, as the NumPy code: an infinite weight gives inf - inf = NaN, not a sign     \
       picked by rounding); evaluation (training = 0): gx = a gy */                            \
    extern "C" __global__ void batch_norm_wrt_x1_##SFX(                                        \
        const T* __restrict__ x, const T* __restrict__ gy, const A* __restrict__ mean,         \
        const A* __restrict__ var, const T* __restrict__ w, const A* __restrict__ sg,          \
        const A* __restrict__ sgx, T* __restrict__ gx, long long n, long long C,               \
        long long inner, long long M, long long training, A eps) {                             \
        GRID_STRIDE_LOOP(i, n) {                                                               \
            const long long c = (i / inner) % C;                                               \
            const A inv = A(1) / sqrt(var[c] + eps);                                           \
            const A a = load_acc(w + c) * inv;                                                 \
            const A g = load_acc(gy + i);                                                      \
            if (training) {                                                                    \
                const A xhat = (load_acc(x + i) - mean[c]) * inv;                              \
                store_acc(gx + i, a * g - a * (sg[c] / A(M)) - a * xhat * (sgx[c] / A(M)));    \
            } else {                                                                           \
                store_acc(gx + i, a * g);                                                      \
            }                                                                                  \
        }                                                                                      \
    }

BATCH_NORM_ALL(__half, float, f16)
BATCH_NORM_ALL(__nv_bfloat16, float, bf16)
BATCH_NORM_ALL(float, float, f32)
BATCH_NORM_ALL(double, double, f64)

// ---- layer_norm and rms_norm: rows of the last axis ----------------------------------------
//
// x is a C-contiguous (rows, cols) array normalized along each row; w (and b) have cols
// values. With x̂ = (x - μ) · r per row:
//   layer_norm  μ = mean x, r = 1 / sqrt(mean (x - μ)² + eps),  y = x̂ w + b
//   rms_norm    μ = 0,      r = 1 / sqrt(mean x² + eps),        y = x̂ w
//   gradient    gx = (w gy - mean(w gy) - x̂ mean(w gy x̂)) r   (rms_norm: without mean(w gy))
// Row kernels in the two strategies of gpuops/ops/_rows.py:
//   *_warpE : one warp per row, cols <= 32 E, the row read once into E registers per lane
//             (lane l holds columns l, l + 32, ...); the exact two-pass mean and variance
//             from the registers, then the row is written. Rows are grid-strided by warps.
//   *_block : one block per row: one pass of per-thread Welford moments merged over the
//             block (Chan et al.), a second pass (mostly from L2) writes the row.
// f16, bf16 and f32 compute in float, f64 in double; one rounding on store.
//
// The weight and bias gradients are column sums over the rows, in two deterministic
// stages without atomics (like batch_norm's per-channel sums above):
//   row_norm_stats_*       μ and r per row (one warp per row, Welford over its lanes);
//   row_norm_col_partial   block (32, lanes): 32 columns x one chunk of rows; each thread
//                          sums every lanes-th row of the chunk, the lanes are added in
//                          order; partial[s * cols + c] for chunk s;
//   row_norm_col_finish    one thread per column adds its chunks in order (ordered_sum).

// Moments of n values: their mean and m2 = Σ (x - mean)².
template <typename A>
struct Moments {
    A n, mean, m2;
};

template <typename A>
__device__ __forceinline__ Moments<A> shfl_xor(Moments<A> v, int lane_mask) {
    return {shfl_xor(v.n, lane_mask), shfl_xor(v.mean, lane_mask), shfl_xor(v.m2, lane_mask)};
}

// Welford's update by one value.
template <typename A>
__device__ __forceinline__ void moments_add(Moments<A>& m, A x) {
    m.n += A(1);
    const A d = x - m.mean;
    m.mean += d / m.n;
    m.m2 += d * (x - m.mean);
}

// Chan, Golub & LeVeque's merge of two sets of moments; {0, 0, 0} is the identity.
struct MomentsOp {
    template <typename A>
    __device__ __forceinline__ static Moments<A> combine(Moments<A> a, Moments<A> b) {
        const A n = a.n + b.n;
        if (n == A(0)) return a;
        const A d = b.mean - a.mean, f = b.n / n;
        return {n, a.mean + d * f, a.m2 + b.m2 + d * d * (a.n * f)};
    }
};

template <typename A>
__device__ __forceinline__ A inv_std(A mean_square, A eps) {
    return A(1) / sqrt(mean_square + eps);
}

// μ and r of the row held in v (lane l: columns l + 32 k; zeros past cols), on every lane.
template <typename A, int E, bool RMS>
__device__ __forceinline__ void warp_row_stats(const A (&v)[E], int lane, long long cols, A eps,
                                               A& mean, A& rstd) {
    A mu = A(0);
    if (!RMS) {
        A s = A(0);
#pragma unroll
        for (int k = 0; k < E; ++k) s += v[k];
        mu = warp_sum(s) / A(cols);
    }
    A q = A(0);
#pragma unroll
    for (int k = 0; k < E; ++k) {
        const A d = lane + 32 * k < cols ? v[k] - mu : A(0);
        q += d * d;
    }
    mean = mu;
    rstd = inv_std(warp_sum(q) / A(cols), eps);
}

// μ and r of the row xr read by the block (or, with a warp's lanes as `threads` threads,
// by one warp): Welford per thread, merged; sum of squares for rms_norm. Every thread
// of the group gets the result.
template <bool BLOCK, typename T, typename A, bool RMS>
__device__ __forceinline__ void group_row_stats(const T* __restrict__ xr, long long cols,
                                                int tid, int threads, A eps, A& mean,
                                                A& rstd) {
    if constexpr (RMS) {
        A q = A(0);
        for (long long c = tid; c < cols; c += threads) {
            const A v = load_acc(xr + c);
            q += v * v;
        }
        if constexpr (BLOCK) q = block_sum(q);
        else q = warp_sum(q);
        mean = A(0);
        rstd = inv_std(q / A(cols), eps);
    } else {
        Moments<A> m{A(0), A(0), A(0)};
        for (long long c = tid; c < cols; c += threads) moments_add(m, A(load_acc(xr + c)));
        if constexpr (BLOCK) m = block_reduce<MomentsOp>(m, Moments<A>{A(0), A(0), A(0)});
        else m = warp_reduce<MomentsOp>(m);
        mean = m.mean;
        rstd = inv_std(m.m2 / m.n, eps);
    }
}

// The rows of a warp-per-row kernel: declares `lane` (of the warp) and loops `r` over the
// rows, grid-strided by warps.
#define WARP_ROWS(r)                                                                           \
    const int lane = threadIdx.x & 31;                                                         \
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);                          \
    for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);         \
         r < rows; r += warps)

// y = x̂ w (+ b)
template <typename T, typename A, int E, bool RMS>
__device__ __forceinline__ void row_norm_warp(const T* __restrict__ x, const T* __restrict__ w,
                                              const T* __restrict__ b, T* __restrict__ y,
                                              A eps, long long rows, long long cols) {
    WARP_ROWS(r) {
        const T* xr = x + r * cols;
        A v[E];
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            v[k] = c < cols ? A(load_acc(xr + c)) : A(0);
        }
        A mean, rstd;
        warp_row_stats<A, E, RMS>(v, lane, cols, eps, mean, rstd);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            if (c < cols) {
                A out = (v[k] - mean) * rstd * A(load_acc(w + c));
                if (!RMS) out += A(load_acc(b + c));
                store_acc(y + r * cols + c, out);
            }
        }
    }
}

template <typename T, typename A, bool RMS>
__device__ __forceinline__ void row_norm_block(const T* __restrict__ x, const T* __restrict__ w,
                                               const T* __restrict__ b, T* __restrict__ y,
                                               A eps, long long rows, long long cols) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        A mean, rstd;
        group_row_stats<true, T, A, RMS>(xr, cols, threadIdx.x, blockDim.x, eps, mean, rstd);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            A out = (A(load_acc(xr + c)) - mean) * rstd * A(load_acc(w + c));
            if (!RMS) out += A(load_acc(b + c));
            store_acc(y + r * cols + c, out);
        }
    }
}

// gx = (g - mean(g) - x̂ mean(g x̂)) r with g = w gy (rms_norm: without mean(g))
template <typename T, typename A, int E, bool RMS>
__device__ __forceinline__ void row_norm_grad_warp(const T* __restrict__ x,
                                                   const T* __restrict__ w,
                                                   const T* __restrict__ gy,
                                                   T* __restrict__ gx, A eps, long long rows,
                                                   long long cols) {
    WARP_ROWS(r) {
        const long long base = r * cols;
        A v[E], g[E];
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            v[k] = c < cols ? A(load_acc(x + base + c)) : A(0);
            g[k] = c < cols ? A(load_acc(w + c)) * A(load_acc(gy + base + c)) : A(0);
        }
        A mean, rstd;
        warp_row_stats<A, E, RMS>(v, lane, cols, eps, mean, rstd);
        A sg = A(0), sgx = A(0);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            v[k] = lane + 32 * k < cols ? (v[k] - mean) * rstd : A(0);  // x̂
            sg += g[k];
            sgx += g[k] * v[k];
        }
        const A mg = RMS ? A(0) : warp_sum(sg) / A(cols), mgx = warp_sum(sgx) / A(cols);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = lane + 32 * k;
            if (c < cols) store_acc(gx + base + c, (g[k] - mg - v[k] * mgx) * rstd);
        }
    }
}

template <typename T, typename A, bool RMS>
__device__ __forceinline__ void row_norm_grad_block(const T* __restrict__ x,
                                                    const T* __restrict__ w,
                                                    const T* __restrict__ gy,
                                                    T* __restrict__ gx, A eps, long long rows,
                                                    long long cols) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * cols;
        A mean, rstd;
        group_row_stats<true, T, A, RMS>(x + base, cols, threadIdx.x, blockDim.x, eps, mean,
                                         rstd);
        A sg = A(0), sgx = A(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const A g = A(load_acc(w + c)) * A(load_acc(gy + base + c));
            sg += g;
            sgx += g * ((A(load_acc(x + base + c)) - mean) * rstd);
        }
        const A mg = RMS ? A(0) : block_sum(sg) / A(cols), mgx = block_sum(sgx) / A(cols);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const A g = A(load_acc(w + c)) * A(load_acc(gy + base + c));
            const A xhat = (A(load_acc(x + base + c)) - mean) * rstd;
            store_acc(gx + base + c, (g - mg - xhat * mgx) * rstd);
        }
    }
}

// mean[r] = μ, rstd[r] = r of each row: one warp per row
template <typename T, typename A, bool RMS>
__device__ __forceinline__ void row_norm_stats(const T* __restrict__ x, A* __restrict__ mean,
                                               A* __restrict__ rstd, A eps, long long rows,
                                               long long cols) {
    WARP_ROWS(r) {
        A mu, rs;
        group_row_stats<false, T, A, RMS>(x + r * cols, cols, lane, 32, eps, mu, rs);
        if (lane == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
    }
}

// Stage 1 of the column sums, block (32, lanes), blockIdx over (column tile, chunk) pairs:
// with_x = 1: partial[s * cols + c] = Σ gy (x - mean[r]) rstd[r] (the weight gradient);
// with_x = 0: Σ gy (the bias gradient; x, mean and rstd are not read).
template <typename T, typename A>
__device__ __forceinline__ void row_norm_col_partial(const T* __restrict__ x,
                                                     const T* __restrict__ gy,
                                                     const A* __restrict__ mean,
                                                     const A* __restrict__ rstd,
                                                     A* __restrict__ partial, long long rows,
                                                     long long cols, long long chunk,
                                                     long long splits, long long with_x) {
    __shared__ A lanes_sum[1024];  // blockDim.x * blockDim.y <= 1024
    const long long tiles = (cols + 31) / 32;
    const int lane_rows = blockDim.y, t = threadIdx.y * 32 + threadIdx.x;
    for (long long v = blockIdx.x; v < tiles * splits; v += gridDim.x) {
        const long long s = v / tiles, c = (v % tiles) * 32 + threadIdx.x;
        const long long start = s * chunk, end = start + chunk < rows ? start + chunk : rows;
        A sum = A(0);
        if (c < cols) {
            for (long long r = start + threadIdx.y; r < end; r += lane_rows) {
                const A g = A(load_acc(gy + r * cols + c));
                sum += with_x ? g * ((A(load_acc(x + r * cols + c)) - mean[r]) * rstd[r]) : g;
            }
        }
        lanes_sum[t] = sum;
        __syncthreads();
        if (threadIdx.y == 0 && c < cols)
            partial[s * cols + c] = ordered_sum(lanes_sum + threadIdx.x, lane_rows, 32);
        __syncthreads();
    }
}

#define ROW_NORM_WARP(E, T, A, SFX)                                                            \
    extern "C" __global__ void layer_norm_warp##E##_##SFX(                                     \
        const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,             \
        T* __restrict__ y, A eps, long long rows, long long cols) {                            \
        row_norm_warp<T, A, E, false>(x, w, b, y, eps, rows, cols);                            \
    }                                                                                          \
    extern "C" __global__ void rms_norm_warp##E##_##SFX(                                       \
        const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, A eps,            \
        long long rows, long long cols) {                                                      \
        row_norm_warp<T, A, E, true>(x, w, w, y, eps, rows, cols);                             \
    }                                                                                          \
    extern "C" __global__ void layer_norm_wrt_x1_warp##E##_##SFX(                              \
        const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ gy,            \
        T* __restrict__ gx, A eps, long long rows, long long cols) {                           \
        row_norm_grad_warp<T, A, E, false>(x, w, gy, gx, eps, rows, cols);                     \
    }                                                                                          \
    extern "C" __global__ void rms_norm_wrt_x1_warp##E##_##SFX(                                \
        const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ gy,            \
        T* __restrict__ gx, A eps, long long rows, long long cols) {                           \
        row_norm_grad_warp<T, A, E, true>(x, w, gy, gx, eps, rows, cols);                      \
    }

#define ROW_NORM_ONCE(T, A, SFX)                                                               \
    extern "C" __global__ void layer_norm_block_##SFX(                                         \
        const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,             \
        T* __restrict__ y, A eps, long long rows, long long cols) {                            \
        row_norm_block<T, A, false>(x, w, b, y, eps, rows, cols);                              \
    }                                                                                          \
    extern "C" __global__ void rms_norm_block_##SFX(                                           \
        const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, A eps,            \
        long long rows, long long cols) {                                                      \
        row_norm_block<T, A, true>(x, w, w, y, eps, rows, cols);                               \
    }                                                                                          \
    extern "C" __global__ void layer_norm_wrt_x1_block_##SFX(                                  \
        const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ gy,            \
        T* __restrict__ gx, A eps, long long rows, long long cols) {                           \
        row_norm_grad_block<T, A, false>(x, w, gy, gx, eps, rows, cols);                       \
    }                                                                                          \
    extern "C" __global__ void rms_norm_wrt_x1_block_##SFX(                                    \
        const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ gy,            \
        T* __restrict__ gx, A eps, long long rows, long long cols) {                           \
        row_norm_grad_block<T, A, true>(x, w, gy, gx, eps, rows, cols);                        \
    }                                                                                          \
    extern "C" __global__ void layer_norm_stats_##SFX(                                         \
        const T* __restrict__ x, A* __restrict__ mean, A* __restrict__ rstd, A eps,            \
        long long rows, long long cols) {                                                      \
        row_norm_stats<T, A, false>(x, mean, rstd, eps, rows, cols);                           \
    }                                                                                          \
    extern "C" __global__ void rms_norm_stats_##SFX(                                           \
        const T* __restrict__ x, A* __restrict__ mean, A* __restrict__ rstd, A eps,            \
        long long rows, long long cols) {                                                      \
        row_norm_stats<T, A, true>(x, mean, rstd, eps, rows, cols);                            \
    }                                                                                          \
    extern "C" __global__ void row_norm_col_partial_##SFX(                                     \
        const T* __restrict__ x, const T* __restrict__ gy, const A* __restrict__ mean,         \
        const A* __restrict__ rstd, A* __restrict__ partial, long long rows, long long cols,   \
        long long chunk, long long splits, long long with_x) {                                 \
        row_norm_col_partial<T, A>(x, gy, mean, rstd, partial, rows, cols, chunk, splits,      \
                                   with_x);                                                    \
    }                                                                                          \
    extern "C" __global__ void row_norm_col_finish_##SFX(                                      \
        const A* __restrict__ partial, T* __restrict__ out, long long cols, long long splits) { \
        GRID_STRIDE_LOOP(c, cols) store_acc(out + c, ordered_sum(partial + c, splits, cols));  \
    }

// Warp kernels up to E = 16 (512 columns) for every dtype, E = 32 for float and 16 bits (32
// doubles per lane and array would spill); the block kernels for longer rows.
#define ROW_NORM_WARPS_TO_16(T, A, SFX)                                                        \
    ROW_NORM_WARP(1, T, A, SFX)                                                                \
    ROW_NORM_WARP(2, T, A, SFX)                                                                \
    ROW_NORM_WARP(4, T, A, SFX)                                                                \
    ROW_NORM_WARP(8, T, A, SFX)                                                                \
    ROW_NORM_WARP(16, T, A, SFX)

ROW_NORM_WARPS_TO_16(__half, float, f16)
ROW_NORM_WARP(32, __half, float, f16)
ROW_NORM_ONCE(__half, float, f16)
ROW_NORM_WARPS_TO_16(__nv_bfloat16, float, bf16)
ROW_NORM_WARP(32, __nv_bfloat16, float, bf16)
ROW_NORM_ONCE(__nv_bfloat16, float, bf16)
ROW_NORM_WARPS_TO_16(float, float, f32)
ROW_NORM_WARP(32, float, float, f32)
ROW_NORM_ONCE(float, float, f32)
ROW_NORM_WARPS_TO_16(double, double, f64)
ROW_NORM_ONCE(double, double, f64)
