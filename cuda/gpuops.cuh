// Device helpers shared by every kernel family (inlined once by the loader).

// Grid-stride loop over [0, n) with 64-bit indices: correct for > 2^31 elements
// and for any grid size (the launcher caps the grid).
#define GRID_STRIDE_LOOP(i, n)                                                   \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// ---- division by an invariant integer --------------------------------------------
// q = n / d and r = n % d without a division instruction (the 64-bit `/` and `%` are a
// ~70-instruction subroutine each; per element they make an index-heavy kernel
// issue-bound). Granlund & Montgomery (PLDI 1994, figure 4.1; CUTLASS's FastDivmod and
// PyTorch's IntDivider are the same idea): with l = ceil(log2 d) and
// m = floor(2^32 (2^l - d) / d) + 1 (< 2^32), for every 0 <= n < 2^32 and 1 <= d < 2^32
//   n / d = (t + ((n - t) >> min(l, 1))) >> max(l - 1, 0),   t = umulhi(m, n),
// all in 32-bit unsigned arithmetic. The host computes the magic word (m << 32) | l
// (gpuops.kernels.fastdiv) and passes it beside d; a word of 0 means that a dividend or d
// may not fit 32 bits (a tensor of 2^32 or more elements): then the 64-bit division runs
// (a kernel-uniform branch).
struct FastDiv {
    long long d;
    unsigned int m, s1, s2;
    __device__ __forceinline__ FastDiv(long long divisor, unsigned long long magic)
        : d(divisor), m((unsigned int)(magic >> 32)),
          s1((unsigned int)(magic & 0xffu) < 1u ? (unsigned int)(magic & 0xffu) : 1u),
          s2((unsigned int)(magic & 0xffu) > 1u ? (unsigned int)(magic & 0xffu) - 1u : 0u) {}
    __device__ __forceinline__ long long div(long long n) const {
        if (m == 0u) return n / d;
        const unsigned int x = (unsigned int)n, t = __umulhi(x, m);
        return (long long)((t + ((x - t) >> s1)) >> s2);
    }
    // n / d, and n % d in r
    __device__ __forceinline__ long long divmod(long long n, long long& r) const {
        if (m == 0u) {
            const long long q = n / d;
            r = n - q * d;
            return q;
        }
        const unsigned int x = (unsigned int)n, t = __umulhi(x, m);
        const unsigned int q = (t + ((x - t) >> s1)) >> s2;
        r = (long long)(x - q * (unsigned int)d);
        return (long long)q;
    }
    __device__ __forceinline__ long long mod(long long n) const {
        long long r;
        divmod(n, r);
        return r;
    }
};

// A kernel's parameters for divisor NAME: the divisor and its magic word.
#define FASTDIV_PARAM(NAME) long long NAME, unsigned long long NAME##_magic
#define FASTDIV(NAME) FastDiv(NAME, NAME##_magic)

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

// The same with the fast division (FastDiv above).
__device__ __forceinline__ Index4 unravel4(long long i, const FastDiv& d1, const FastDiv& d2,
                                           const FastDiv& d3) {
    Index4 r;
    i = d3.divmod(i, r.i3);
    i = d2.divmod(i, r.i2);
    r.i0 = d1.divmod(i, r.i1);
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
