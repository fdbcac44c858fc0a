// Row-wise reductions for the softmax family and cross-entropy: max and
// log-sum-exp over a row with warp shuffles (one warp per row) or a block.
#include "gpuops.cuh"
#include "half.cuh"

// The most negative finite value: the identity of max (and exp(lowest - m) == 0
// for any finite m, so padding lanes add nothing to a sum of exponentials).
__device__ __forceinline__ float lowest_acc(float) { return -3.402823466e+38f; }
__device__ __forceinline__ double lowest_acc(double) { return -1.7976931348623157e+308; }

// Max over a warp with shuffles; every lane gets the result (NaN is not propagated
// here; a NaN input still makes its row NaN through exp(NaN - m)).
template <typename A>
__device__ __forceinline__ A warp_max(A v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const A o = __shfl_xor_sync(0xffffffffu, v, offset);
        v = o > v ? o : v;
    }
    return v;
}

// Online log-sum-exp (Milakov & Gimelshein 2018): the pair (m, s) stands for
// sum_j exp(x_j - m). Merging (m2, s2) rescales the side with the smaller max:
// s * e^(m - m') + s2 * e^(m2 - m') with m' = max(m, m2); never exp of a positive value.
template <typename A, typename S>
__device__ __forceinline__ void lse_merge(A& m, S& s, A m2, S s2) {
    if (m2 > m) {
        s = s * S(exp(m - m2)) + s2;
        m = m2;
    } else {
        s += s2 * S(exp(m2 - m));
    }
}

template <typename A, typename S>
__device__ __forceinline__ void warp_lse(A& m, S& s) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const A m2 = __shfl_xor_sync(0xffffffffu, m, offset);
        const S s2 = __shfl_xor_sync(0xffffffffu, s, offset);
        lse_merge(m, s, m2, s2);
    }
}

// (m, s) merged over the block (blockDim.x a multiple of 32); every thread of the
// block must call it and gets the result. Safe to call again for the next row.
template <typename A, typename S>
__device__ __forceinline__ void block_lse(A& m, S& s) {
    __shared__ A part_m[32];
    __shared__ S part_s[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    warp_lse(m, s);
    if (lane == 0) {
        part_m[warp] = m;
        part_s[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        const bool live = lane < (int)(blockDim.x >> 5);
        m = live ? part_m[lane] : lowest_acc(A(0));
        s = live ? part_s[lane] : S(0);
        warp_lse(m, s);
        if (lane == 0) {
            part_m[0] = m;
            part_s[0] = s;
        }
    }
    __syncthreads();
    m = part_m[0];
    s = part_s[0];
    __syncthreads();  // everyone has read part_*[0] before a next call overwrites it
}
