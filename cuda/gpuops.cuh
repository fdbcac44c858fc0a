// Device helpers shared by every kernel family (inlined once by the loader).

// Grid-stride loop over [0, n) with 64-bit indices: correct for > 2^31 elements
// and for any grid size (the launcher caps the grid).
#define GRID_STRIDE_LOOP(i, n)                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Indices of flat position i in a row-major 4-d shape (d0, d1, d2, d3); d0 is implied.
struct Index4 {
    long long i0, i1, i2, i3;
};

__device__ __forceinline__ Index4 unravel4(long long i, long long d1, long long d2, long long d3) {
    Index4 r;
    r.i3 = i % d3; i /= d3;
    r.i2 = i % d2; i /= d2;
    r.i1 = i % d1;
    r.i0 = i / d1;
    return r;
}

__device__ __forceinline__ long long offset4(Index4 ix, long long s0, long long s1, long long s2,
                                             long long s3) {
    return ix.i0 * s0 + ix.i1 * s1 + ix.i2 * s2 + ix.i3 * s3;
}

// ---- warp and block reductions -------------------------------------------------
// One template for every reduction across threads. An Op is a struct with
// `static T combine(T a, T b)` (associative; a is the thread's own value, b its
// partner's). T is a scalar or a struct of scalars that `shfl_xor` moves (an
// overload per struct, like LsePair in rowwise.cuh).

struct SumOp {
    template <typename T>
    __device__ __forceinline__ static T combine(T a, T b) { return a + b; }
};

template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int lane_mask) {
    return __shfl_xor_sync(0xffffffffu, v, lane_mask);
}

// Reduction over a warp with shuffles (a butterfly); every lane gets the result.
template <typename Op, typename T>
__device__ __forceinline__ T warp_reduce(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = Op::combine(v, shfl_xor(v, offset));
    return v;
}

// Reduction over a block (blockDim.x a multiple of 32, at most 1024): each warp
// reduces, warp 0 reduces the warps' results (`identity` stands in for missing
// warps). Every thread of the block must call it and gets the result; it may be
// called again at once (for the next row, or another value).
template <typename Op, typename T>
__device__ __forceinline__ T block_reduce(T v, T identity) {
    __shared__ T partial[32];
    __shared__ T total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_reduce<Op>(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T w = lane < (int)(blockDim.x >> 5) ? partial[lane] : identity;
        w = warp_reduce<Op>(w);
        if (lane == 0) total = w;
    }
    __syncthreads();
    return total;
}

// Sums over a warp and over a block; every thread gets the total.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) { return warp_reduce<SumOp>(v); }

template <typename T>
__device__ __forceinline__ T block_sum(T v) { return block_reduce<SumOp>(v, T(0)); }
