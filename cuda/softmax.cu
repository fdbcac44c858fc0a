// softmax and log_softmax along one axis, and their gradients. Launched by
// gpuops/ops/softmax.py. One extern "C" kernel per dtype (f16 / bf16 / f32 / f64; 16 bits
// are computed in float32) and per strategy (chosen by gpuops/ops/_rows.py):
//   *_lanesW : rows of cols <= W (W = 2, 4, 8, 16) over the last axis of a C-contiguous
//              (rows, cols) array: W lanes per row, 32 / W rows per warp, shuffles
//              within the W lanes.
//   *_warpE  : one warp per row, cols <= 32*E (E = 1..32, 1..16 for double): the row
//              is read once into E registers per lane (coalesced: lane l holds columns
//              l, l+32, ...), max and sum by shuffles, then written. Rows are
//              grid-strided by warps.
//   *_block  : one block per row for longer rows (rowwise.cuh's RowTile: E values per
//              thread, 16-byte loads when the rows are aligned): one pass computes the
//              online (max, sum of exp) pair per thread, merged over the block; the write
//              pass takes the row from the registers when it fits the block, else reads
//              it again. Sums are accumulated in double so that rows of 2^31 elements
//              keep full float precision.
//   *_axis   : an axis that is not the last, (outer, n, inner) with inner >= 32: one
//              thread per (outer, inner) position looping over the n elements of its axis
//              (no transposed copies).
//   *_axis_warp : the same for 1 < inner < 32: one warp per outer position reading its
//              n x inner block in runs of (32 / inner) inner consecutive elements.
#include "rowwise.cuh"

// softmax: y = e^(x - m) / s; log_softmax: y = (x - m) - log s, with m the row max
// and s = sum e^(x - m) (max subtraction: no overflow for any finite logits).
// One element of the output from v = x - m: log_softmax v - log s, softmax e^v (1/s).
template <bool LOG, typename A>
__device__ __forceinline__ A softmax_out(A v, A log_s, A inv_s) {
    return LOG ? v - log_s : A(exp(v)) * inv_s;
}

// The gradients (t = the row's sum of grad_term): softmax gx = y (gy - t) with t = sum y gy;
// log_softmax gx = gy - e^y t with t = sum gy.
template <bool LOG, typename A>
__device__ __forceinline__ A grad_term(A yc, A g) { return LOG ? g : yc * g; }
template <bool LOG, typename A>
__device__ __forceinline__ A grad_out(A yc, A g, A t) {
    return LOG ? g - A(exp(yc)) * t : yc * (g - t);
}

// W lanes per row (RowGroups), E values per lane: lane l holds columns l, l + W, ...
template <typename T, typename A, int W, int E, bool LOG>
__device__ __forceinline__ void softmax_warp(const T* __restrict__ x, T* __restrict__ y,
                                             long long rows, long long cols) {
    const RowGroups<W> g;
    for (long long first = g.first; first < rows; first += g.step) {
        const long long r = first + g.offset;
        const bool live = r < rows;
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        A v[E];
        A m = lowest_acc(A(0));
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = g.lane + W * k;
            v[k] = live && c < cols ? load_acc(xr + c) : lowest_acc(A(0));
            m = v[k] > m ? v[k] : m;
        }
        m = group_max<W>(m);
        A s = A(0);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            v[k] -= m;  // padding lanes: lowest - m, whose exp is 0
            const A e = exp(v[k]);
            s += e;
            if (!LOG) v[k] = e;  // softmax keeps e^(x - m), log_softmax keeps x - m
        }
        s = group_sum<W>(s);
        const A log_s = LOG ? A(log(s)) : A(0);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = g.lane + W * k;
            if (live && c < cols) store_acc(yr + c, LOG ? v[k] - log_s : v[k] / s);
        }
    }
}

// One block per row (RowTile: E values per thread): pass 1 merges each thread's online
// (max, sum of exp) pair over the tiles, then over the block (sum in double: rows of 2^31
// elements keep full float precision); pass 2 writes from the registers when the row fits
// the block (read once), else reads each tile again.
template <typename T, typename A, int E, bool LOG>
__device__ __forceinline__ void softmax_block(const T* __restrict__ x, T* __restrict__ y,
                                              long long rows, long long cols) {
    const bool vec = row_vectors(x, y, cols);
    const long long tile = (long long)blockDim.x * E;
    const bool fits = cols <= tile;
    RowTile<T, A, E> row;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        A m = lowest_acc(A(0));
        double s = 0.0;
        for (long long b = 0; b < cols; b += tile) {
            row.load(xr + b, cols - b, vec, lowest_acc(A(0)));
            row.merge_lse(m, s, cols - b, vec);
        }
        block_lse(m, s);
        const A log_s = A(log(s)), inv_s = A(1.0 / s);
        for (long long b = 0; b < cols; b += tile) {
            if (!fits) row.load(xr + b, cols - b, vec, lowest_acc(A(0)));
#pragma unroll
            for (int e = 0; e < E; ++e) {
                const A v = row.v[e] - m;
                row.v[e] = softmax_out<LOG>(v, log_s, inv_s);
            }
            row.store(yr + b, cols - b, vec);
        }
    }
}

// Gradients from y and gy, with t = sum over the row of (LOG ? gy : y * gy):
//   softmax:     gx = y (gy - t)          (dy_i/dx_j = y_i (delta_ij - y_j))
//   log_softmax: gx = gy - e^y t          (e^y is the softmax)
template <typename T, typename A, int W, int E, bool LOG>
__device__ __forceinline__ void softmax_grad_warp(const T* __restrict__ y,
                                                  const T* __restrict__ gy,
                                                  T* __restrict__ gx, long long rows,
                                                  long long cols) {
    const RowGroups<W> g;
    for (long long first = g.first; first < rows; first += g.step) {
        const long long r = first + g.offset;
        const bool live = r < rows;
        const long long base = r * cols;
        A yv[E], gv[E];
        A t = A(0);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = g.lane + W * k;
            yv[k] = live && c < cols ? load_acc(y + base + c) : A(0);
            gv[k] = live && c < cols ? load_acc(gy + base + c) : A(0);
            t += grad_term<LOG>(yv[k], gv[k]);
        }
        t = group_sum<W>(t);
#pragma unroll
        for (int k = 0; k < E; ++k) {
            const long long c = g.lane + W * k;
            if (live && c < cols)
                store_acc(gx + base + c, grad_out<LOG>(yv[k], gv[k], t));
        }
    }
}

template <typename T, typename A, int E, bool LOG>
__device__ __forceinline__ void softmax_grad_block(const T* __restrict__ y,
                                                   const T* __restrict__ gy,
                                                   T* __restrict__ gx, long long rows,
                                                   long long cols) {
    const bool vec = row_vectors(y, gy, cols) && aligned16(gx);
    const long long tile = (long long)blockDim.x * E;
    const bool fits = cols <= tile;
    RowTile<T, A, E> yt, gt;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * cols;
        double t = 0.0;
        for (long long b = 0; b < cols; b += tile) {
            // padding: 0, adds nothing; log_softmax's sum needs gy only (y when it stays)
            if (!LOG || fits) yt.load(y + base + b, cols - b, vec, A(0));
            gt.load(gy + base + b, cols - b, vec, A(0));
#pragma unroll
            for (int e = 0; e < E; ++e) t += grad_term<LOG>(yt.v[e], gt.v[e]);
        }
        const A total = A(block_sum(t));
        for (long long b = 0; b < cols; b += tile) {
            if (!fits) {
                yt.load(y + base + b, cols - b, vec, A(0));
                gt.load(gy + base + b, cols - b, vec, A(0));
            }
#pragma unroll
            for (int e = 0; e < E; ++e)
                gt.v[e] = grad_out<LOG>(yt.v[e], gt.v[e], total);
            gt.store(gx + base + b, cols - b, vec);
        }
    }
}

// ---- a softmax axis that is not the last: (outer, n, inner) with inner > 1 -------------
// One thread per (outer, inner) position, its n elements at stride inner: consecutive
// threads take consecutive inner positions (coalesced for inner >= 32), no transposed
// copies. Pass 1 merges the online (max, sum) pair (sum in double) over the axis, U loads
// in flight at a time; pass 2 reads again and writes.
#define AXIS_UNROLL 4

template <typename T, typename A, bool LOG>
__device__ __forceinline__ void softmax_axis(const T* __restrict__ x, T* __restrict__ y,
                                             long long outer, long long n, long long inner) {
    GRID_STRIDE_LOOP(p, outer * inner) {
        const long long o = p / inner;
        const long long base = o * n * inner + (p - o * inner);
        A m = lowest_acc(A(0));
        double s = 0.0;
        for (long long j = 0; j < n; j += AXIS_UNROLL) {
            A v[AXIS_UNROLL];
#pragma unroll
            for (int u = 0; u < AXIS_UNROLL; ++u)
                v[u] = j + u < n ? load_acc(x + base + (j + u) * inner) : lowest_acc(A(0));
#pragma unroll
            for (int u = 0; u < AXIS_UNROLL; ++u)
                if (j + u < n) lse_merge(m, s, v[u], 1.0);
        }
        const A log_s = A(log(s)), inv_s = A(1.0 / s);
        for (long long j = 0; j < n; ++j) {
            const long long at = base + j * inner;
            const A v = load_acc(x + at) - m;
            store_acc(y + at, softmax_out<LOG>(v, log_s, inv_s));
        }
    }
}

template <typename T, typename A, bool LOG>
__device__ __forceinline__ void softmax_grad_axis(const T* __restrict__ y,
                                                  const T* __restrict__ gy,
                                                  T* __restrict__ gx, long long outer,
                                                  long long n, long long inner) {
    GRID_STRIDE_LOOP(p, outer * inner) {
        const long long o = p / inner;
        const long long base = o * n * inner + (p - o * inner);
        double t = 0.0;
        for (long long j = 0; j < n; ++j) {
            const long long at = base + j * inner;
            const A g = load_acc(gy + at);
            t += LOG ? g : load_acc(y + at) * g;  // grad_term; y unread by log
        }
        const A total = A(t);
        for (long long j = 0; j < n; ++j) {
            const long long at = base + j * inner;
            const A yc = load_acc(y + at), g = load_acc(gy + at);
            store_acc(gx + at, grad_out<LOG>(yc, g, total));
        }
    }
}

// Small inner (inner < 32): one warp per outer position, its contiguous n x inner block
// read in chunks of L = P inner consecutive elements (P = 32 / inner lanes per inner
// position; coalesced): lane l < L holds inner position l % inner and the axis steps
// l / inner + P k. The P partial results of an inner position are merged by a fixed tree
// of shuffles down (offsets inner, 2 inner, 4 inner, ...) and broadcast from lane i.
template <typename A, typename S>
__device__ __forceinline__ void strided_lse(A& m, S& s, int inner, int parts, int step) {
    for (int d = 1; d < parts; d <<= 1) {
        const A m2 = __shfl_down_sync(0xffffffffu, m, d * inner);
        const S s2 = __shfl_down_sync(0xffffffffu, s, d * inner);
        if (step % (2 * d) == 0 && step + d < parts) lse_merge(m, s, m2, s2);
    }
    const int lane = threadIdx.x & 31;
    m = __shfl_sync(0xffffffffu, m, lane % inner);
    s = __shfl_sync(0xffffffffu, s, lane % inner);
}

template <typename S>
__device__ __forceinline__ S strided_sum(S t, int inner, int parts, int step) {
    for (int d = 1; d < parts; d <<= 1) {
        const S t2 = __shfl_down_sync(0xffffffffu, t, d * inner);
        if (step % (2 * d) == 0 && step + d < parts) t += t2;
    }
    return __shfl_sync(0xffffffffu, t, (threadIdx.x & 31) % inner);
}

template <typename T, typename A, bool LOG>
__device__ __forceinline__ void softmax_axis_warp(const T* __restrict__ x, T* __restrict__ y,
                                                  long long outer, long long n,
                                                  long long inner) {
    const int lane = threadIdx.x & 31, in = (int)inner, parts = 32 / in, used = parts * in;
    const long long block = n * inner, warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long o = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
         o < outer; o += warps) {
        const T* xo = x + o * block;
        T* yo = y + o * block;
        A m = lowest_acc(A(0));
        double s = 0.0;
        if (lane < used)
            for (long long f = lane; f < block; f += used) lse_merge(m, s, load_acc(xo + f), 1.0);
        strided_lse(m, s, in, parts, lane / in);
        const A log_s = A(log(s)), inv_s = A(1.0 / s);
        if (lane < used)
            for (long long f = lane; f < block; f += used) {
                const A v = load_acc(xo + f) - m;
                store_acc(yo + f, softmax_out<LOG>(v, log_s, inv_s));
            }
    }
}

template <typename T, typename A, bool LOG>
__device__ __forceinline__ void softmax_grad_axis_warp(const T* __restrict__ y,
                                                       const T* __restrict__ gy,
                                                       T* __restrict__ gx, long long outer,
                                                       long long n, long long inner) {
    const int lane = threadIdx.x & 31, in = (int)inner, parts = 32 / in, used = parts * in;
    const long long block = n * inner, warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long o = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
         o < outer; o += warps) {
        const long long base = o * block;
        double t = 0.0;
        if (lane < used)
            for (long long f = lane; f < block; f += used) {
                const A g = load_acc(gy + base + f);
                t += LOG ? g : load_acc(y + base + f) * g;  // grad_term; y unread by log
            }
        const A total = A(strided_sum(t, in, parts, lane / in));
        if (lane < used)
            for (long long f = lane; f < block; f += used) {
                const A yc = load_acc(y + base + f), g = load_acc(gy + base + f);
                store_acc(gx + base + f, grad_out<LOG>(yc, g, total));
            }
    }
}

#define ROW_ARGS(T) const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, \
                    long long rows, long long cols

#define AXIS_ARGS(T) const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, \
                     long long outer, long long n, long long inner

// <op>_warp<E>: one warp per row, E values per lane; <op>_lanes<W>: W lanes per row (one
// value each, cols <= W), 32 / W rows per warp.
#define SOFTMAX_ROWS(NAME, W, E, T, A, SFX)                                                 \
    extern "C" __global__ void softmax_##NAME##_##SFX(const T* __restrict__ x,             \
                                                      T* __restrict__ y, long long rows,   \
                                                      long long cols) {                    \
        softmax_warp<T, A, W, E, false>(x, y, rows, cols);                                 \
    }                                                                                      \
    extern "C" __global__ void log_softmax_##NAME##_##SFX(const T* __restrict__ x,         \
                                                          T* __restrict__ y, long long rows, \
                                                          long long cols) {                \
        softmax_warp<T, A, W, E, true>(x, y, rows, cols);                                  \
    }                                                                                      \
    extern "C" __global__ void softmax_wrt_x1_##NAME##_##SFX(ROW_ARGS(T)) {                \
        softmax_grad_warp<T, A, W, E, false>(a, b, out, rows, cols);                       \
    }                                                                                      \
    extern "C" __global__ void log_softmax_wrt_x1_##NAME##_##SFX(ROW_ARGS(T)) {            \
        softmax_grad_warp<T, A, W, E, true>(a, b, out, rows, cols);                        \
    }

// Warp kernels up to E = 16 (512 columns) for every dtype; E = 32 only for float and
// half (with 32 doubles per lane per array the register file overflows into local memory).
#define SOFTMAX_WARPS_TO_16(T, A, SFX)                                                      \
    SOFTMAX_ROWS(lanes2, 2, 1, T, A, SFX)                                                  \
    SOFTMAX_ROWS(lanes4, 4, 1, T, A, SFX)                                                  \
    SOFTMAX_ROWS(lanes8, 8, 1, T, A, SFX)                                                  \
    SOFTMAX_ROWS(lanes16, 16, 1, T, A, SFX)                                                \
    SOFTMAX_ROWS(warp1, 32, 1, T, A, SFX)                                                  \
    SOFTMAX_ROWS(warp2, 32, 2, T, A, SFX)                                                  \
    SOFTMAX_ROWS(warp4, 32, 4, T, A, SFX)                                                  \
    SOFTMAX_ROWS(warp8, 32, 8, T, A, SFX)                                                  \
    SOFTMAX_ROWS(warp16, 32, 16, T, A, SFX)

// Block kernels: the forward holds x, the gradient y and gy (ROW_HELD_OF, rowwise.cuh).
#define SOFTMAX_BLOCK(T, A, SFX)                                                            \
    extern "C" __global__ void softmax_block_##SFX(const T* __restrict__ x, T* __restrict__ y, \
                                                   long long rows, long long cols) {       \
        softmax_block<T, A, ROW_HELD_OF(A, 1), false>(x, y, rows, cols);                   \
    }                                                                                      \
    extern "C" __global__ void log_softmax_block_##SFX(const T* __restrict__ x,            \
                                                       T* __restrict__ y, long long rows,  \
                                                       long long cols) {                   \
        softmax_block<T, A, ROW_HELD_OF(A, 1), true>(x, y, rows, cols);                    \
    }                                                                                      \
    extern "C" __global__ void softmax_wrt_x1_block_##SFX(ROW_ARGS(T)) {                   \
        softmax_grad_block<T, A, ROW_HELD_OF(A, 2), false>(a, b, out, rows, cols);         \
    }                                                                                      \
    extern "C" __global__ void log_softmax_wrt_x1_block_##SFX(ROW_ARGS(T)) {               \
        softmax_grad_block<T, A, ROW_HELD_OF(A, 2), true>(a, b, out, rows, cols);          \
    }                                                                                      \
    extern "C" __global__ void softmax_axis_##SFX(const T* __restrict__ x, T* __restrict__ y, \
                                                  long long outer, long long n,            \
                                                  long long inner) {                       \
        softmax_axis<T, A, false>(x, y, outer, n, inner);                                  \
    }                                                                                      \
    extern "C" __global__ void log_softmax_axis_##SFX(const T* __restrict__ x,             \
                                                      T* __restrict__ y, long long outer,  \
                                                      long long n, long long inner) {      \
        softmax_axis<T, A, true>(x, y, outer, n, inner);                                   \
    }                                                                                      \
    extern "C" __global__ void softmax_wrt_x1_axis_##SFX(AXIS_ARGS(T)) {                   \
        softmax_grad_axis<T, A, false>(a, b, out, outer, n, inner);                        \
    }                                                                                      \
    extern "C" __global__ void log_softmax_wrt_x1_axis_##SFX(AXIS_ARGS(T)) {               \
        softmax_grad_axis<T, A, true>(a, b, out, outer, n, inner);                         \
    }                                                                                      \
    extern "C" __global__ void softmax_axis_warp_##SFX(const T* __restrict__ x,            \
                                                       T* __restrict__ y, long long outer, \
                                                       long long n, long long inner) {     \
        softmax_axis_warp<T, A, false>(x, y, outer, n, inner);                             \
    }                                                                                      \
    extern "C" __global__ void log_softmax_axis_warp_##SFX(const T* __restrict__ x,        \
                                                           T* __restrict__ y,              \
                                                           long long outer, long long n,   \
                                                           long long inner) {              \
        softmax_axis_warp<T, A, true>(x, y, outer, n, inner);                              \
    }                                                                                      \
    extern "C" __global__ void softmax_wrt_x1_axis_warp_##SFX(AXIS_ARGS(T)) {              \
        softmax_grad_axis_warp<T, A, false>(a, b, out, outer, n, inner);                   \
    }                                                                                      \
    extern "C" __global__ void log_softmax_wrt_x1_axis_warp_##SFX(AXIS_ARGS(T)) {          \
        softmax_grad_axis_warp<T, A, true>(a, b, out, outer, n, inner);                    \
    }

SOFTMAX_WARPS_TO_16(__half, float, f16)
SOFTMAX_ROWS(warp32, 32, 32, __half, float, f16)
SOFTMAX_BLOCK(__half, float, f16)
SOFTMAX_WARPS_TO_16(__nv_bfloat16, float, bf16)
SOFTMAX_ROWS(warp32, 32, 32, __nv_bfloat16, float, bf16)
SOFTMAX_BLOCK(__nv_bfloat16, float, bf16)
SOFTMAX_WARPS_TO_16(float, float, f32)
SOFTMAX_ROWS(warp32, 32, 32, float, float, f32)
SOFTMAX_BLOCK(float, float, f32)
SOFTMAX_WARPS_TO_16(double, double, f64)
SOFTMAX_BLOCK(double, double, f64)
