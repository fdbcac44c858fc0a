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

// ---- several rows per warp: groups of W lanes (W = 2, 4, 8, 16; 32 = one warp) ------------
// Short rows (cols <= W) take a group of W lanes each, so a warp holds 32 / W rows. The
// groups are aligned runs of W lanes, so a butterfly with offsets < W never leaves its group
// (the reduction order of a row is fixed by W, i.e. by cols). Every lane of the warp
// shuffles: rows are assigned to groups so that the whole warp stays in the loop while any
// of its groups has a row (a group past the last row computes on padding, writes nothing).
template <int W, typename Op, typename T>
__device__ __forceinline__ T group_reduce(T v) {
#pragma unroll
    for (int offset = W / 2; offset > 0; offset >>= 1) v = Op::combine(v, shfl_xor(v, offset));
    return v;
}

template <int W, typename A>
__device__ __forceinline__ A group_max(A v) { return group_reduce<W, RowMaxOp>(v); }

template <int W, typename A>
__device__ __forceinline__ A group_sum(A v) { return group_reduce<W, SumOp>(v); }

// The row loop of W-lane groups: `first` is the row of the warp's first group in this
// iteration (loop while first < rows, uniform over the warp), `offset` this group's distance
// from it; the group's row is first + offset, live when < rows.
template <int W>
struct RowGroups {
    long long first, offset, step;
    int lane;  // within the group
    __device__ __forceinline__ RowGroups() {
        const long long groups = blockDim.x / W;
        const long long group = (long long)blockIdx.x * groups + threadIdx.x / W;
        offset = (threadIdx.x & 31) / W;
        first = group - offset;
        step = (long long)gridDim.x * groups;
        lane = threadIdx.x % W;
    }
};

// ---- one block per row: the row on chip, 16-byte loads ----------------------------------
// A row (or a tile of it) held by a block: thread t holds E values (E a multiple of
// V = 16 / sizeof(T)). In the vector layout (vec: rows 16-byte aligned, cols % V == 0),
// slot k V + j of thread t is column (t + k blockDim) V + j and the slots arrive by E / V
// 16-byte loads, all issued before any is used; otherwise (a misaligned view, cols % V != 0)
// slot e is column t + e blockDim, by E coalesced scalar loads. One tile covers
// blockDim E columns; a row that fits (cols <= blockDim E) is read once, longer rows are
// streamed tile by tile (and read again for the write pass). The layout is uniform over a
// launch, so each row's reduction order is fixed by (cols, vec, blockDim).
// E of a block kernel holding ARRAYS row arrays: ROW_HELD values of A per thread and array
// (4-byte A; half as many doubles), as gpuops/ops/_rows.py held() computes it.
#define ROW_HELD_OF(A, ARRAYS) (ROW_HELD * 4 / (int)sizeof(A) / (ARRAYS))

template <typename T, int N>
struct alignas(sizeof(T) * N) RowPack {
    T v[N];
};

template <typename T>
__device__ __forceinline__ bool aligned16(const T* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0ull;
}

template <typename T, typename A, int E>
struct RowTile {
    static constexpr int V = 16 / (int)sizeof(T);
    static_assert(E % (16 / sizeof(T)) == 0, "E must be a multiple of the vector width");
    A v[E];

    // The column of slot e, relative to the tile's first column (a tile has at most
    // 1024 E columns: 32-bit offsets).
    __device__ __forceinline__ static int col(int e, bool vec) {
        return vec ? ((int)threadIdx.x + (e / V) * (int)blockDim.x) * V + e % V
                   : (int)threadIdx.x + e * (int)blockDim.x;
    }

    // The columns left from the tile's start, capped at the tile's width.
    __device__ __forceinline__ static int left(long long n) {
        const long long tile = (long long)blockDim.x * E;
        return (int)(n < tile ? n : tile);
    }

    // Slots of columns >= n (n = the columns left from the tile's start) get pad.
    __device__ __forceinline__ void load(const T* __restrict__ p, long long n, bool vec, A pad) {
        const int m = left(n);
        if (vec) {
            RowPack<T, V> pk[E / V];
#pragma unroll
            for (int k = 0; k < E / V; ++k) {
                const int c = col(k * V, true);
                if (c < m) pk[k] = *reinterpret_cast<const RowPack<T, V>*>(p + c);
            }
#pragma unroll
            for (int k = 0; k < E / V; ++k) {
                const bool in = col(k * V, true) < m;  // (cols % V == 0: whole vectors)
#pragma unroll
                for (int j = 0; j < V; ++j) v[k * V + j] = in ? to_acc(pk[k].v[j]) : pad;
            }
        } else {
#pragma unroll
            for (int e = 0; e < E; ++e) {
                const int c = col(e, false);
                v[e] = c < m ? load_acc(p + c) : pad;
            }
        }
    }

    // v rounded once into the columns < n.
    __device__ __forceinline__ void store(T* __restrict__ p, long long n, bool vec) const {
        const int m = left(n);
        if (vec) {
#pragma unroll
            for (int k = 0; k < E / V; ++k) {
                const int c = col(k * V, true);
                if (c < m) {
                    RowPack<T, V> pk;
#pragma unroll
                    for (int j = 0; j < V; ++j) store_acc(&pk.v[j], v[k * V + j]);
                    *reinterpret_cast<RowPack<T, V>*>(p + c) = pk;
                }
            }
        } else {
#pragma unroll
            for (int e = 0; e < E; ++e) {
                const int c = col(e, false);
                if (c < m) store_acc(p + c, v[e]);
            }
        }
    }

    // The online (max, sum of exp) pair of this thread's columns < n merged into (m, s).
    template <typename S>
    __device__ __forceinline__ void merge_lse(A& m, S& s, long long n, bool vec) const {
        const int cols = left(n);
        A mt = lowest_acc(A(0));
#pragma unroll
        for (int e = 0; e < E; ++e) mt = v[e] > mt ? v[e] : mt;
        A st = A(0);
#pragma unroll
        for (int e = 0; e < E; ++e) st += col(e, vec) < cols ? A(exp(v[e] - mt)) : A(0);
        lse_merge(m, s, mt, S(st));
    }
};

// The layout of a launch over arrays a, b (rows of cols elements): vectors when every row
// of both starts 16-byte aligned.
template <typename T, typename U>
__device__ __forceinline__ bool row_vectors(const T* a, const U* b, long long cols) {
    return cols % (16 / (long long)sizeof(T)) == 0 && aligned16(a) && aligned16(b);
}
