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

// Sum over a warp with shuffles; every lane gets the total.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over a block (blockDim.x a multiple of 32, at most 1024). Every thread of
// the block must call it; every thread gets the total.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
    __shared__ T partial[32];
    __shared__ T total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T w = lane < (int)(blockDim.x >> 5) ? partial[lane] : T(0);
        w = warp_sum(w);
        if (lane == 0) total = w;
    }
    __syncthreads();
    return total;
}
