// Row-wise reductions for the softmax family and cross-entropy: max and
// log-sum-exp over a row with warp shuffles (one warp per row) or a block.
#include "gpuops.cuh"
#include "half.cuh"

// The most negative finite value: the identity of max (and exp(lowest - m) == 0
// for any finite m, so padding lanes add nothing to a sum of exponentials).
__device__ __forceinline__ float lowest_acc(float) { return -3.402823466e+38f; }
__device__ __forceinline__ double lowest_acc(double) { return -1.7976931348623157e+308; }

// max that ignores NaN (a NaN input still makes its row NaN through exp(NaN - m)).
struct RowMaxOp {
    template <typename A>
    __device__ __forceinline__ static A combine(A a, A b) { return b > a ? b : a; }
};

// Max over a warp with shuffles; every lane gets the result.
template <typename A>
__device__ __forceinline__ A warp_max(A v) { return warp_reduce<RowMaxOp>(v); }

// Online log-sum-exp (Milakov & Gimelshein 2018): the pair (m, s) stands for
// sum_j exp(x_j - m). Merging (m2, s2) rescales the side with the smaller max:
// s * e^(m - m') + s2 * e^(m2 - m') with m' = max(m, m2); never exp of a positive value.
// A new max of +inf makes s NaN, as the two-pass form gives: its e^(x - m) is e^(inf - inf)
// (NumPy's softmax and cross-entropy of such a row are NaN); (m2 - m2) + 1 is that factor,
// 1 for any finite m2, without a second exp.
template <typename A, typename S>
__device__ __forceinline__ void lse_merge(A& m, S& s, A m2, S s2) {
    if (m2 > m) {
        s = s * S(exp(m - m2)) + s2 * S((m2 - m2) + A(1));
        m = m2;
    } else {
        s += s2 * S(exp(m2 - m));
    }
}

// (m, s) as one value of the warp and block reductions (gpuops.cuh).
template <typename A, typename S>
struct LsePair {
    A m;
    S s;
};

template <typename A, typename S>
__device__ __forceinline__ LsePair<A, S> shfl_xor(LsePair<A, S> v, int lane_mask) {
    return {shfl_xor(v.m, lane_mask), shfl_xor(v.s, lane_mask)};
}

struct LseOp {
    template <typename A, typename S>
    __device__ __forceinline__ static LsePair<A, S> combine(LsePair<A, S> a, LsePair<A, S> b) {
        lse_merge(a.m, a.s, b.m, b.s);
        return a;
    }
};

// (m, s) merged over the warp; every lane gets the result.
template <typename A, typename S>
__device__ __forceinline__ void warp_lse(A& m, S& s) {
    const LsePair<A, S> r = warp_reduce<LseOp>(LsePair<A, S>{m, s});
    m = r.m;
    s = r.s;
}

// (m, s) merged over the block (blockDim.x a multiple of 32); every thread of the
// block must call it and gets the result. Safe to call again for the next row.
template <typename A, typename S>
__device__ __forceinline__ void block_lse(A& m, S& s) {
    const LsePair<A, S> r =
        block_reduce<LseOp>(LsePair<A, S>{m, s}, LsePair<A, S>{lowest_acc(A(0)), S(0)});
    m = r.m;
    s = r.s;
}
