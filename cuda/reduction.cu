// Reduction family: sum, mean (a sum scaled by 1/n) and max over any set of axes,
// and the kernels of their gradients. Launched by gpuops/ops/reduction.py.
//
// The wrapper reduces a C-contiguous input to one of two shapes and picks a kernel:
//   reduce_rows_*  x viewed as (rows, row_len), reduced along the contiguous row:
//                  one warp per row (or per chunk of a row), 16-byte vector loads.
//   reduce_cols_*  x viewed as (outer, n_red, inner), reduced along the middle dim:
//                  one thread per output element, the warp reading `inner`-contiguous
//                  elements (coalesced).
//   reduce_axes_*  anything else: one block per output element,
//                  the input addressed through (at most 4-d) strides on each side.
// Each kernel can split the reduced range into `splits` chunks of `chunk` elements and
// write one partial result per chunk (output index = out * splits + chunk index); the
// wrapper then reduces the partials with a second launch. That keeps every SM busy
// when there are few outputs (a full reduction to a scalar) without float atomics:
// the summation order depends only on the launch configuration, so results are
// deterministic. `init` is the identity of the operation (0 or -inf, passed by the
// wrapper), `scale` multiplies each final result (1/n for mean, 1 otherwise).
// float16 and bfloat16 (suffix f16 / bf16) are read widened to float, summed in float and
// written as float (y is float*: the wrapper's partials and results stay float32 and are
// rounded to 16 bits once, at the end); their loads are scalar (a warp reads 64
// contiguous bytes), the float/double loads are 16-byte vectors.
#include "gpuops.cuh"
#include "half.cuh"

// max that propagates NaN like NumPy: once either side is NaN the result is NaN.
struct MaxOp {
    template <typename T>
    __device__ __forceinline__ static T combine(T a, T b) {
        return (a != a || a >= b) ? a : b;  // b > a, or b is NaN (a >= NaN is false)
    }
};

template <typename T> struct Vec;
template <> struct Vec<float> {
    typedef float4 type;
    static constexpr int width = 4;
};
template <> struct Vec<double> {
    typedef double2 type;
    static constexpr int width = 2;
};

template <typename Op>
__device__ __forceinline__ float fold(float acc, float4 v) {
    return Op::combine(Op::combine(acc, v.x), Op::combine(Op::combine(v.y, v.z), v.w));
}
template <typename Op>
__device__ __forceinline__ double fold(double acc, double2 v) {
    return Op::combine(acc, Op::combine(v.x, v.y));
}

// One warp reduces q[0, len): scalar head up to 16-byte alignment, vector body,
// scalar tail. Every lane gets the result.
template <typename Op, typename T>
__device__ __forceinline__ T warp_reduce_range(const T* __restrict__ q, long long len, T init) {
    typedef typename Vec<T>::type V;
    const int width = Vec<T>::width;
    const int lane = threadIdx.x & 31;
    long long head = (long long)((16u - ((unsigned long long)q & 15u)) & 15u) / (long long)sizeof(T);
    if (head > len) head = len;
    T acc = init;
    if (lane < head) acc = Op::combine(acc, q[lane]);
    const V* __restrict__ body = reinterpret_cast<const V*>(q + head);
    const long long n_vec = (len - head) / width;
#pragma unroll 4
    for (long long j = lane; j < n_vec; j += 32) acc = fold<Op>(acc, body[j]);
    for (long long j = head + n_vec * width + lane; j < len; j += 32) acc = Op::combine(acc, q[j]);
    return warp_reduce<Op>(acc);
}

// 16-bit storage: scalar loads (a warp reads 64 contiguous bytes), widened to float.
template <typename Op, typename T>
__device__ __forceinline__ float warp_reduce_range_16(const T* __restrict__ q, long long len,
                                                      float init) {
    float acc = init;
    for (long long j = threadIdx.x & 31; j < len; j += 32) acc = Op::combine(acc, to_acc(q[j]));
    return warp_reduce<Op>(acc);
}
template <typename Op>
__device__ __forceinline__ float warp_reduce_range(const __half* __restrict__ q, long long len,
                                                   float init) {
    return warp_reduce_range_16<Op>(q, len, init);
}
template <typename Op>
__device__ __forceinline__ float warp_reduce_range(const __nv_bfloat16* __restrict__ q,
                                                   long long len, float init) {
    return warp_reduce_range_16<Op>(q, len, init);
}

// y[r * splits + s] = scale * reduce(x[r * row_len + s * chunk, ... + chunk) ∩ row r).
// One warp per (row, chunk); blockDim.x a multiple of 32; chunk a multiple of 4 so
// that chunks of an aligned row stay aligned.
template <typename Op, typename T, typename A>
__device__ __forceinline__ void reduce_rows(const T* __restrict__ x, A* __restrict__ y,
                                            long long rows, long long row_len, long long chunk,
                                            long long splits, A init, A scale) {
    const long long warps_per_block = blockDim.x >> 5;
    const long long n = rows * splits;
    for (long long v = blockIdx.x * warps_per_block + (threadIdx.x >> 5); v < n;
         v += gridDim.x * warps_per_block) {
        const long long r = v / splits, start = (v % splits) * chunk;
        const long long len = start + chunk < row_len ? chunk : row_len - start;
        const A acc = warp_reduce_range<Op>(x + r * row_len + start, len, init);
        if ((threadIdx.x & 31) == 0) y[v] = acc * scale;
    }
}

// y[(o * splits + s) * inner + i] = scale * reduce over r in chunk s of x[(o * n_red + r) * inner + i].
template <typename Op, typename T, typename A>
__device__ __forceinline__ void reduce_cols(const T* __restrict__ x, A* __restrict__ y,
                                            long long outer, long long n_red, long long inner,
                                            long long chunk, long long splits, A init, A scale) {
    GRID_STRIDE_LOOP(t, outer * splits * inner) {
        const long long i = t % inner, rest = t / inner;
        const long long s = rest % splits, o = rest / splits;
        const long long start = s * chunk;
        const long long stop = start + chunk < n_red ? start + chunk : n_red;
        const T* __restrict__ p = x + o * n_red * inner + i;
        A acc = init;
#pragma unroll 4
        for (long long r = start; r < stop; ++r)
            acc = Op::combine(acc, to_acc(p[r * inner]));
        y[t] = acc * scale;
    }
}

// y[k * splits + s] = scale * reduce over reduced positions r in chunk s of
// x[offset(k) + offset(r)], offsets through the kept (k*, ks*) and reduced (r*, rs*)
// dims. One block per (output, chunk); a fixed-order tree across the block.
template <typename Op, typename T, typename A>
__device__ __forceinline__ void reduce_axes(
    const T* __restrict__ x, A* __restrict__ y, long long n_out, long long n_red, long long chunk,
    long long splits, long long k1, long long k2, long long k3, long long ks0, long long ks1,
    long long ks2, long long ks3, long long r1, long long r2, long long r3, long long rs0,
    long long rs1, long long rs2, long long rs3, A init, A scale) {
    for (long long v = blockIdx.x; v < n_out * splits; v += gridDim.x) {
        const long long k = v / splits, start = (v % splits) * chunk;
        const long long stop = start + chunk < n_red ? start + chunk : n_red;
        const long long base = offset4(unravel4(k, k1, k2, k3), ks0, ks1, ks2, ks3);
        // The thread's reduced index r as mixed-radix digits (r0 implied, r1, r2, r3),
        // advanced by blockDim.x per step with a carry instead of three 64-bit divisions
        // per element (each digit sum is below twice its radix: one subtraction suffices).
        Index4 at = unravel4(start + threadIdx.x, r1, r2, r3);
        const Index4 step = unravel4(blockDim.x, r1, r2, r3);
        A acc = init;
        for (long long r = start + threadIdx.x; r < stop; r += blockDim.x) {
            acc = Op::combine(acc, to_acc(x[base + offset4(at, rs0, rs1, rs2, rs3)]));
            at.i3 += step.i3;
            long long carry = at.i3 >= r3;
            at.i3 -= carry * r3;
            at.i2 += step.i2 + carry;
            carry = at.i2 >= r2;
            at.i2 -= carry * r2;
            at.i1 += step.i1 + carry;
            carry = at.i1 >= r1;
            at.i1 -= carry * r1;
            at.i0 += step.i0 + carry;
        }
        acc = block_reduce<Op>(acc, init);
        if (threadIdx.x == 0) y[v] = acc * scale;
    }
}

#define REDUCE_KERNELS(NAME, OP, T, A, SFX)                                                    \
    extern "C" __global__ void reduce_rows_##NAME##_##SFX(                                     \
        const T* __restrict__ x, A* __restrict__ y, long long rows, long long row_len,          \
        long long chunk, long long splits, A init, A scale) {                                  \
        reduce_rows<OP>(x, y, rows, row_len, chunk, splits, init, scale);                      \
    }                                                                                          \
    extern "C" __global__ void reduce_cols_##NAME##_##SFX(                                     \
        const T* __restrict__ x, A* __restrict__ y, long long outer, long long n_red,           \
        long long inner, long long chunk, long long splits, A init, A scale) {                 \
        reduce_cols<OP>(x, y, outer, n_red, inner, chunk, splits, init, scale);                \
    }                                                                                          \
    extern "C" __global__ void reduce_axes_##NAME##_##SFX(                                     \
        const T* __restrict__ x, A* __restrict__ y, long long n_out, long long n_red,           \
        long long chunk, long long splits, long long k1, long long k2, long long k3,            \
        long long ks0, long long ks1, long long ks2, long long ks3, long long r1, long long r2, \
        long long r3, long long rs0, long long rs1, long long rs2, long long rs3, A init,       \
        A scale) {                                                                             \
        reduce_axes<OP>(x, y, n_out, n_red, chunk, splits, k1, k2, k3, ks0, ks1, ks2, ks3, r1,  \
                        r2, r3, rs0, rs1, rs2, rs3, init, scale);                              \
    }

// ---- gradients ---------------------------------------------------------------
// g has the input's shape; j = offset4(index of i, s*) is the position of i's output
// in the (keepdims) output (strides 0 along reduced dims).

// sum / mean: gx[i] = scale * gy[j] (scale 1 or 1/n).
#define BROADCAST_GRAD(T, A, SFX)                                                               \
    extern "C" __global__ void reduce_broadcast_##SFX(                                          \
        const T* __restrict__ gy, T* __restrict__ gx, long long n, long long d1, long long d2,  \
        long long d3, long long s0, long long s1, long long s2, long long s3, A scale) {        \
        GRID_STRIDE_LOOP(i, n)                                                                  \
            store_acc(gx + i,                                                                   \
                      to_acc(gy[offset4(unravel4(i, d1, d2, d3), s0, s1, s2, s3)]) * scale);    \
    }

// max, step 1: g[i] = 1 where x[i] is its group's maximum y[j] (NaN matches NaN), else 0.
// Step 2 (wrapper): count[j] = the sum of g over each group (a reduce_*_sum launch).
// Step 3: g[i] *= gy[j] / count[j], in place: the gradient split evenly among ties.
#define MAX_GRAD(T, A, SFX)                                                                     \
    extern "C" __global__ void max_tie_mask_##SFX(                                              \
        const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ g, long long n,        \
        long long d1, long long d2, long long d3, long long s0, long long s1, long long s2,     \
        long long s3) {                                                                         \
        GRID_STRIDE_LOOP(i, n) {                                                                \
            const long long j = offset4(unravel4(i, d1, d2, d3), s0, s1, s2, s3);               \
            const A v = to_acc(x[i]), m = to_acc(y[j]);                                         \
            store_acc(g + i, (v == m || (v != v && m != m)) ? A(1) : A(0));                     \
        }                                                                                       \
    }                                                                                           \
    extern "C" __global__ void max_tie_share_##SFX(                                             \
        const T* __restrict__ gy, const A* __restrict__ count, T* __restrict__ g, long long n,   \
        long long d1, long long d2, long long d3, long long s0, long long s1, long long s2,     \
        long long s3) {                                                                         \
        GRID_STRIDE_LOOP(i, n) {                                                                \
            if (to_acc(g[i]) != A(0)) {                                                         \
                const long long j = offset4(unravel4(i, d1, d2, d3), s0, s1, s2, s3);           \
                store_acc(g + i, to_acc(gy[j]) / count[j]);                                     \
            }                                                                                   \
        }                                                                                       \
    }

#define REDUCTION_ALL(T, A, SFX)              \
    REDUCE_KERNELS(sum, SumOp, T, A, SFX)     \
    REDUCE_KERNELS(max, MaxOp, T, A, SFX)     \
    BROADCAST_GRAD(T, A, SFX)                 \
    MAX_GRAD(T, A, SFX)

REDUCTION_ALL(__half, float, f16)
REDUCTION_ALL(__nv_bfloat16, float, bf16)
REDUCTION_ALL(float, float, f32)
REDUCTION_ALL(double, double, f64)
