// Matrix products: a tiled GEMM with a fused epilogue (bias, activation), launched by
// gpuops/ops/matmul.py (matmul, linear and their gradients) and gpuops/ops/conv.py (conv2d).
//
//   C[z][m][n] = act( sum_{r < nr} sum_{k < K} A_zr[m][k] * B_zr[k][n]  + bias )
//
// Operands are addressed through element strides, so transposed, strided and
// broadcast (stride 0) operands need no copies:
//   A_zr[m][k] = A[z1*za1 + z2*za2 + r*ra + m*sam + k*sak]   (z = z1*nz2 + z2)
//   B_zr[k][n] = B[z1*zb1 + z2*zb2 + r*rb + k*sbk + n*sbn]
// z runs over the output batches (C is C-contiguous, batch stride M*N); r is a
// reduction batch summed into the same output (the gradient of an operand that was
// broadcast over batches is the sum of the per-batch products: one pass, no
// temporary, deterministic). bias_mode: 0 none, 1 bias[n] (linear), 2 bias[m]
// (conv2d). act: ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_TANH.
//
// SIMT kernels gemm_{f32,f64,f16}: a block computes a BM x BN tile of C with
// GEMM_THREADS (256) threads; per BK-step it stages the A and B tiles in shared memory
// (k-major, so the inner loop reads rows of TM and TN values) and every thread
// accumulates a TM x TN register block. Threads are laid out in warp tiles: 8 warps as
// 4 (m) x 2 (n), 32 lanes as 4 (m) x 8 (n); a thread's rows (columns) are groups of 16
// bytes strided across the lanes (gemm_simt), so shared reads and C's stores are vectors
// over consecutive words: no bank conflicts, ideal sectors. Global loads are vectors of VEC elements
// along the operand's contiguous dim when the host says the layout allows it (a_mode /
// b_mode bit 1); bit 0 picks which dim consecutive threads walk (the contiguous one,
// for coalescing). float16 (gemm_f16) loads halves and accumulates in float: it is the
// fallback for GPUs without the sm_80 tensor-core instruction; from sm_80 on
// gemm_tc_f16 (mma.sync, float accumulation) is launched instead. bfloat16 likewise:
// gemm_bf16 (SIMT fallback) and gemm_tc_bf16 (mma.sync .bf16). gemm_small_f32 and
// gemm_tiny_f32: float32 with 64x64 and 32x32 tiles, for shapes whose 128x128 tiles are
// too few to fill the GPU (the host's plan picks).
//
// Split-K (the host picks ``splits`` when the (m, n) tiles and batches are fewer than the
// SMs): the reduction steps t = (r, k-tile), r < nr, are cut into ``splits`` contiguous
// ranges; blockIdx.z = z-block * splits + split. With splits > 1 a block writes its raw
// partial tile (Acc) to the workspace ws[split][z][m][n] and counts itself in the tile's
// counter (an integer atomic: it orders nothing but the arrivals); the last of the tile's
// blocks to arrive adds the splits in the fixed order 0, 1, ..., applies the epilogue and
// sets the counter back to 0 (the host keeps the counters zeroed between launches). The
// same sums in the same order whichever block is last: bitwise repeatable (a different
// order from the unsplit kernel's), in one launch.
//
// Operand prologue (linear's backward): with a_act != ACT_NONE the A operand is read as
// A * act'(aux), aux addressed with A's strides (relu 1[y > 0], sigmoid y (1 - y),
// tanh 1 - y^2: act' written through the activation's output y), so g = gy * act'(y) is
// never stored. row_sums: the blocks of the first N-tile also sum their A tile's rows over
// their k range (in k order) and write db[z][m] = sum_k A_z[m][k] (the bias gradient
// gᵀ's row sums), through the workspace when split.
#include "gpuops.cuh"
#include "half.cuh"
#include "mma.cuh"

// GEMM_THREADS and the ACT_* codes come from gpuops.kernels.CONSTANTS (prepended by the loader).
// SIMT_BOUNDS: the SIMT kernels say one block per SM at least, or ptxas (sm_80) caps
// gemm_f64 at 128 and gemm_tiny_f32 at 80 registers and spills. (The tensor-core kernels:
// TC_BOUNDS, below.)
#ifndef GPUOPS_EMU
#define SIMT_BOUNDS __launch_bounds__(GEMM_THREADS, 1)
#else
#define SIMT_BOUNDS
#endif

// The SIMT kernels stage their tiles in the accumulation type (16-bit values widened).
__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(double* p, double v) { *p = v; }
__device__ __forceinline__ void put(float* p, __half v) { *p = __half2float(v); }
__device__ __forceinline__ void put(float* p, __nv_bfloat16 v) { *p = __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T zero_of() { return T(0); }
template <>
__device__ __forceinline__ __half zero_of<__half>() { return __float2half(0.0f); }
template <>
__device__ __forceinline__ __nv_bfloat16 zero_of<__nv_bfloat16>() { return __float2bfloat16(0.0f); }

// VEC consecutive elements, loaded as one 16-byte (or smaller) transaction.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
    T v[VEC];
};

__device__ __forceinline__ float activate(float v, int act) {
    if (act == ACT_RELU) return v < 0.0f ? 0.0f : v;  // NaN stays NaN, as numpy.maximum
    if (act == ACT_SIGMOID) return 1.0f / (1.0f + expf(-v));
    if (act == ACT_TANH) return tanhf(v);
    return v;
}
__device__ __forceinline__ double activate(double v, int act) {
    if (act == ACT_RELU) return v < 0.0 ? 0.0 : v;
    if (act == ACT_SIGMOID) return 1.0 / (1.0 + exp(-v));
    if (act == ACT_TANH) return tanh(v);
    return v;
}

// act'(pre-activation) from the activation's output u (the prologue's factor).
template <typename Acc>
__device__ __forceinline__ Acc act_slope(Acc u, int act) {
    const Acc one = 1, zero = 0;
    if (act == ACT_RELU) return u > zero ? one : zero;
    if (act == ACT_SIGMOID) return u * (one - u);
    if (act == ACT_TANH) return one - u * u;
    return one;
}

// v * act'(u) in the accumulation type, stored as S (one rounding for 16-bit S).
template <typename S, typename T>
__device__ __forceinline__ void put_scaled(S* p, T v, T u, int act) {
    store_acc(p, to_acc(v) * act_slope(to_acc(u), act));
}

// One operand tile (ROWS x BK) on its way to shared memory, in two steps so that the
// next tile's global loads are in flight while the current tile is multiplied:
//   fetch: registers <- src[(row0 + row) * s_row + (k0 + k) * s_k]  (0 outside),
//   stash: dst[row * LD_ROW + k * LD_K] <- registers.
// ``row`` is m for A and n for B. Each thread handles groups of VEC elements along
// k (mode bit 0 clear) or along row (bit 0 set); a group is one vector load when
// mode bit 1 is set (the host checked stride 1, alignment of every base and stride)
// and the whole group is in bounds, else VEC bounds-checked scalar loads. stash writes a
// group along row (LD_ROW 1) as one vector store, consecutive threads to consecutive words
// (no bank conflict); a group along k as VEC scalar stores, which for gemm_simt's tiles
// (LD_K = 4 words mod 32) fall on distinct banks across the warp.
// S is the shared-memory element type (the registers hold S: 16-bit values are widened
// to float on fetch).
// pro != ACT_NONE: each element is multiplied by act'(aux) (aux read at src's offsets).
template <typename T, typename S, int ROWS, int BK, int VEC>
struct Tile {
    static constexpr int GROUPS = ROWS * BK / VEC;
    static constexpr int PER_THREAD = (GROUPS + GEMM_THREADS - 1) / GEMM_THREADS;
    S v[PER_THREAD][VEC];

    // The (row, k) of this thread's p-th group, or false past the tile.
    __device__ __forceinline__ static bool place(int p, int mode, int& row, int& k) {
        const int g = p * GEMM_THREADS + threadIdx.x;
        if (GROUPS % GEMM_THREADS != 0 && g >= GROUPS) return false;
        const bool along_row = mode & 1;
        row = along_row ? (g % (ROWS / VEC)) * VEC : g / (BK / VEC);
        k = along_row ? g / (ROWS / VEC) : (g % (BK / VEC)) * VEC;
        return true;
    }

    __device__ __forceinline__ void fetch(const T* __restrict__ src, const T* __restrict__ aux,
                                          int pro, long long rows, long long K, long long s_row,
                                          long long s_k, long long row0, long long k0, int mode) {
        const bool along_row = mode & 1, vector = mode & 2;
        const int drow = along_row ? 1 : 0, dk = along_row ? 0 : 1;
#pragma unroll
        for (int p = 0; p < PER_THREAD; ++p) {
            int row, k;
            if (!place(p, mode, row, k)) continue;
            const long long grow = row0 + row, gk = k0 + k;
            const bool whole = along_row ? (gk < K && grow + VEC <= rows)
                                         : (grow < rows && gk + VEC <= K);
            if (vector && whole) {
                const long long at = grow * s_row + gk * s_k;
                const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(src + at);
                if (pro != ACT_NONE) {
                    const Pack<T, VEC> pu = *reinterpret_cast<const Pack<T, VEC>*>(aux + at);
#pragma unroll
                    for (int e = 0; e < VEC; ++e) put_scaled(&v[p][e], pk.v[e], pu.v[e], pro);
                } else {
#pragma unroll
                    for (int e = 0; e < VEC; ++e) put(&v[p][e], pk.v[e]);
                }
            } else {
#pragma unroll
                for (int e = 0; e < VEC; ++e) {
                    const long long r = grow + e * drow, kk = gk + e * dk;
                    const long long at = r * s_row + kk * s_k;
                    if (r >= rows || kk >= K) put(&v[p][e], zero_of<T>());
                    else if (pro != ACT_NONE) put_scaled(&v[p][e], src[at], aux[at], pro);
                    else put(&v[p][e], src[at]);
                }
            }
        }
    }

    template <int LD_ROW, int LD_K>
    __device__ __forceinline__ void stash(S* __restrict__ dst, int mode) const {
        const bool along_row = mode & 1;
        const int drow = along_row ? 1 : 0, dk = along_row ? 0 : 1;
#pragma unroll
        for (int p = 0; p < PER_THREAD; ++p) {
            int row, k;
            if (!place(p, mode, row, k)) continue;
            if (LD_ROW == 1 && along_row) {  // VEC consecutive words: one vector store
                Pack<S, VEC> pk;
#pragma unroll
                for (int e = 0; e < VEC; ++e) pk.v[e] = v[p][e];
                *reinterpret_cast<Pack<S, VEC>*>(dst + row + k * LD_K) = pk;
                continue;
            }
#pragma unroll
            for (int e = 0; e < VEC; ++e)
                dst[(row + e * drow) * LD_ROW + (k + e * dk) * LD_K] = v[p][e];
        }
    }
};

// The kernel arguments, identical for every GEMM kernel (SIMT and tensor cores).
// A_zr[m][k] = A[... + m*sam + k*sak], B likewise: A and B may be strided views; aux (read
// when a_act != ACT_NONE) has A's strides. db (row_sums), ws (splits > 1) and bias
// (bias_mode != 0) are read or written only when asked for (the host passes C otherwise).
// ws holds splits*nz*M*N partial products, then splits*nz*M partial row sums (Acc).
// gpuops-strided: gemm_*: A, B, aux
#define GEMM_PARAMS(T, Acc)                                                                 \
    const T *__restrict__ A, const T *__restrict__ B, T *__restrict__ C,                     \
        const T *__restrict__ bias, const T *__restrict__ aux, T *__restrict__ db,            \
        Acc *__restrict__ ws, unsigned *__restrict__ counts, long long M, long long N, long long K, long long sam,           \
        long long sak, long long sbk, long long sbn, long long nz, long long nz2,            \
        long long za1, long long za2, long long zb1, long long zb2, long long nr,            \
        long long ra, long long rb, long long splits, int a_mode, int b_mode, int c_vec,     \
        int bias_mode, int act, int a_act, int row_sums
#define GEMM_ARGS                                                                           \
    A, B, C, bias, aux, db, ws, counts, M, N, K, sam, sak, sbk, sbn, nz, nz2, za1, za2, zb1, zb2,    \
        nr, ra, rb, splits, a_mode, b_mode, c_vec, bias_mode, act, a_act, row_sums

// The epilogue of one output element: bias, activation, store.
template <typename T, typename Acc>
__device__ __forceinline__ Acc finish_value(Acc v, const T* __restrict__ bias, int bias_mode,
                                            long long m, long long n, int act) {
    if (bias_mode == 1) v += to_acc(bias[n]);
    else if (bias_mode == 2) v += to_acc(bias[m]);
    return activate(v, act);
}

// The reduction steps this block takes: split ``split`` of ``splits`` contiguous ranges of
// the nr * ceil(K / BK) steps t = (r, k-tile); (r, k0) of the first.
struct StepRange {
    long long t0, t1, r, k0;
    __device__ __forceinline__ StepRange(long long nr, long long K, int BK, long long split,
                                         long long splits) {
        const long long ktiles = (K + BK - 1) / BK, steps = nr * ktiles;
        t0 = steps * split / splits;
        t1 = steps * (split + 1) / splits;
        r = ktiles ? t0 / ktiles : 0;
        k0 = ktiles ? (t0 % ktiles) * BK : 0;
    }
    // to the next step's (r, k0)
    __device__ __forceinline__ void advance(long long K, int BK) {
        k0 += BK;
        if (k0 >= K) k0 = 0, ++r;
    }
};

// One output value of batch z at (m, n): finished into C (splits == 1) or, raw, into the
// split's partial tile of the workspace.
template <typename T, typename Acc>
__device__ __forceinline__ void put_result(Acc v, T* __restrict__ C, Acc* __restrict__ ws,
                                           const T* __restrict__ bias, long long M, long long N,
                                           long long nz, long long z, long long m, long long n,
                                           long long split, long long splits, int bias_mode,
                                           int act) {
    if (splits > 1) ws[((split * nz + z) * M + m) * N + n] = v;
    else store_acc(C + (z * M + m) * N + n, finish_value(v, bias, bias_mode, m, n, act));
}

// The A operand's row sum over this block's k range (row_sums): into db, or the workspace.
template <typename T, typename Acc>
__device__ __forceinline__ void put_row_sum(Acc v, T* __restrict__ db, Acc* __restrict__ ws,
                                            long long M, long long N, long long nz, long long z,
                                            long long m, long long split, long long splits) {
    if (splits > 1) ws[splits * nz * M * N + (split * nz + z) * M + m] = v;
    else store_acc(db + z * M + m, v);
}

// Whether this block is the last of the tile's ``splits`` blocks to have written its
// partials (the same answer in every thread, through the block's shared ``last``); the
// last one sets the counter back to 0.
__device__ __forceinline__ bool last_to_arrive(unsigned* __restrict__ count, long long splits,
                                               int& last) {
    __threadfence();  // this thread's partials, visible to the other blocks...
    __syncthreads();  // ...for every thread of the block, before the count
    if (threadIdx.x == 0) {
        last = atomicAdd(count, 1u) == (unsigned)(splits - 1);
        if (last) *count = 0;  // every block of the tile has counted: ready for the next launch
    }
    __syncthreads();
    if (last) __threadfence();  // the other blocks' partials are read after their counts
    return last;
}

// Output (m, n) of batch z from the splits' partials, added in split order, finished into C.
template <typename T, typename Acc>
__device__ __forceinline__ void sum_splits(const Acc* ws, T* __restrict__ C,
                                           const T* __restrict__ bias, long long M, long long N,
                                           long long nz, long long z, long long m, long long n,
                                           long long splits, int bias_mode, int act) {
    const volatile Acc* part = ws + (z * M + m) * N + n;  // volatile: past L1, not cached
    Acc v = 0;
    for (long long s = 0; s < splits; ++s) v += part[s * nz * M * N];
    store_acc(C + (z * M + m) * N + n, finish_value(v, bias, bias_mode, m, n, act));
}

// Row sum m of batch z from the splits' partial row sums, in split order, into db.
template <typename T, typename Acc>
__device__ __forceinline__ void sum_row_splits(const Acc* ws, T* __restrict__ db, long long M,
                                               long long N, long long nz, long long z,
                                               long long m, long long splits) {
    const volatile Acc* part = ws + splits * nz * M * N + z * M + m;
    Acc v = 0;
    for (long long s = 0; s < splits; ++s) v += part[s * nz * M];
    store_acc(db + z * M + m, v);
}

template <typename T, typename Acc, int BM, int BN, int BK, int TM, int TN, int VEC>
__device__ __forceinline__ void gemm_simt(GEMM_PARAMS(T, Acc)) {
    static_assert(BM == 16 * TM && BN == 16 * TN, "warp tiling: 4x4 lanes x 4 warps (m), 8 lanes x 2 warps (n)");
    constexpr int PAD = 16 / sizeof(Acc);  // keeps rows 16-byte aligned, shifts banks
    // A thread's TM rows (TN columns) are TM / VM (TN / VN) groups of VM (VN) consecutive
    // ones, read from shared memory as one vector each; a warp's lanes take consecutive
    // groups, so one vector read of the warp covers consecutive words (no bank conflict)
    // and the epilogue's row stores of 8 lanes are one contiguous run (the ideal sectors).
    constexpr int VM = TM < PAD ? TM : PAD, VN = TN < PAD ? TN : PAD;
    static_assert(TM % VM == 0 && TN % VN == 0, "vector groups");
    __shared__ __align__(16) Acc As[BK][BM + PAD];
    __shared__ __align__(16) Acc Bs[BK][BN + PAD];
    __shared__ int last;  // last_to_arrive's answer
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // row i of this thread: tr + (i / VM) * 4 * VM + i % VM; column j: tc + (j / VN) * 8 * VN + j % VN
    const int tr = (warp / 2) * (4 * TM) + (lane / 8) * VM;
    const int tc = (warp % 2) * (8 * TN) + (lane % 8) * VN;
    const long long n0 = (long long)blockIdx.x * BN;
    const long long split = blockIdx.z % splits;
    // the threads of column 0 (one per TM rows) write the row sums of the first N-tile
    const bool sums_rows = row_sums && blockIdx.x == 0 && tc == 0;
    // split partials as vectors of VN: every row of the workspace 16-byte aligned
    const bool ws_vec = splits > 1 && N % VN == 0 && reinterpret_cast<unsigned long long>(ws) % 16 == 0;
    for (long long z = blockIdx.z / splits; z < nz; z += gridDim.z / splits) {
        const long long z1 = z / nz2, z2 = z % nz2;
        const T* Az = A + z1 * za1 + z2 * za2;
        const T* Xz = aux + z1 * za1 + z2 * za2;
        const T* Bz = B + z1 * zb1 + z2 * zb2;
        for (long long m0 = (long long)blockIdx.y * BM; m0 < M; m0 += (long long)gridDim.y * BM) {
            Acc acc[TM][TN], rs[TM];
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                rs[i] = Acc(0);
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = Acc(0);
            }
            // Steps t over (r, k0), the reduction batch and the K tiles, in one loop so the
            // prefetch crosses from one r to the next.
            StepRange st(nr, K, BK, split, splits);
            Tile<T, Acc, BM, BK, VEC> ta;
            Tile<T, Acc, BN, BK, VEC> tb;
            if (st.t0 < st.t1) {
                ta.fetch(Az + st.r * ra, Xz + st.r * ra, a_act, M, K, sam, sak, m0, st.k0, a_mode);
                tb.fetch(Bz + st.r * rb, nullptr, ACT_NONE, N, K, sbn, sbk, n0, st.k0, b_mode);
            }
            for (long long t = st.t0; t < st.t1; ++t) {
                ta.template stash<1, BM + PAD>(&As[0][0], a_mode);
                tb.template stash<1, BN + PAD>(&Bs[0][0], b_mode);
                __syncthreads();
                if (t + 1 < st.t1) {  // the next tile's loads overlap this tile's math
                    st.advance(K, BK);
                    ta.fetch(Az + st.r * ra, Xz + st.r * ra, a_act, M, K, sam, sak, m0, st.k0,
                             a_mode);
                    tb.fetch(Bz + st.r * rb, nullptr, ACT_NONE, N, K, sbn, sbk, n0, st.k0, b_mode);
                }
#pragma unroll
                for (int kk = 0; kk < BK; ++kk) {
                    Acc a[TM], b[TN];
#pragma unroll
                    for (int g = 0; g < TM / VM; ++g) {
                        const Pack<Acc, VM> pk =
                            *reinterpret_cast<const Pack<Acc, VM>*>(&As[kk][tr + g * 4 * VM]);
#pragma unroll
                        for (int v = 0; v < VM; ++v) a[g * VM + v] = pk.v[v];
                    }
#pragma unroll
                    for (int g = 0; g < TN / VN; ++g) {
                        const Pack<Acc, VN> pk =
                            *reinterpret_cast<const Pack<Acc, VN>*>(&Bs[kk][tc + g * 8 * VN]);
#pragma unroll
                        for (int v = 0; v < VN; ++v) b[g * VN + v] = pk.v[v];
                    }
#pragma unroll
                    for (int i = 0; i < TM; ++i)
#pragma unroll
                        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
                    if (row_sums) {
#pragma unroll
                        for (int i = 0; i < TM; ++i) rs[i] += a[i];
                    }
                }
                __syncthreads();
            }
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const long long m = m0 + tr + (i / VM) * 4 * VM + i % VM;  // increasing in i
                if (m >= M) break;
                if (sums_rows) put_row_sum(rs[i], db, ws, M, N, nz, z, m, split, splits);
                T* row = C + (z * M + m) * N;
#pragma unroll
                for (int g = 0; g < TN / VN; ++g) {
                    const long long nb = n0 + tc + g * 8 * VN;
                    const Acc* part = acc[i] + g * VN;
                    if (splits == 1 && c_vec && nb + VN <= N) {  // whole group: one vector store
                        Pack<T, VN> p;
#pragma unroll
                        for (int v = 0; v < VN; ++v)
                            store_acc(p.v + v, finish_value(part[v], bias, bias_mode, m, nb + v, act));
                        *reinterpret_cast<Pack<T, VN>*>(row + nb) = p;
                    } else if (ws_vec && nb + VN <= N) {  // the split's raw partials
                        Pack<Acc, VN> p;
#pragma unroll
                        for (int v = 0; v < VN; ++v) p.v[v] = part[v];
                        *reinterpret_cast<Pack<Acc, VN>*>(ws + ((split * nz + z) * M + m) * N + nb) = p;
                    } else {
#pragma unroll
                        for (int v = 0; v < VN; ++v) {
                            if (nb + v < N)
                                put_result(part[v], C, ws, bias, M, N, nz, z, m, nb + v, split,
                                           splits, bias_mode, act);
                        }
                    }
                }
            }
            const long long tile = (z * ((M + BM - 1) / BM) + m0 / BM) * gridDim.x + blockIdx.x;
            if (splits > 1 && last_to_arrive(counts + tile, splits, last)) {
                for (int i = 0; i < TM; ++i) {  // the outputs this thread wrote partials of
                    const long long m = m0 + tr + (i / VM) * 4 * VM + i % VM;
                    if (m >= M) break;
                    if (sums_rows) sum_row_splits(ws, db, M, N, nz, z, m, splits);
                    for (int g = 0; g < TN / VN; ++g) {
                        const long long nb = n0 + tc + g * 8 * VN;
                        if (c_vec && nb + VN <= N) {  // as sum_splits, stored as one vector
                            const volatile Acc* part = ws + (z * M + m) * N + nb;
                            Pack<T, VN> p;
                            for (int v = 0; v < VN; ++v) {
                                Acc s = 0;
                                for (long long q = 0; q < splits; ++q) s += part[q * nz * M * N + v];
                                store_acc(p.v + v, finish_value(s, bias, bias_mode, m, nb + v, act));
                            }
                            *reinterpret_cast<Pack<T, VN>*>(C + (z * M + m) * N + nb) = p;
                        } else {
                            for (int v = 0; v < VN; ++v)
                                if (nb + v < N)
                                    sum_splits(ws, C, bias, M, N, nz, z, m, nb + v, splits,
                                               bias_mode, act);
                        }
                    }
                }
            }
        }
    }
}

// float32: 128x128 tiles, 8x8 per thread, float4 loads; gemm_small_f32 64x64, 4x4;
// gemm_tiny_f32 32x32, 2x2, float2 (products too small to fill the GPU otherwise).
// float64: 64x64, 4x4, double2. float16 fallback: 64x64, 4x4, scalar half loads, float
// accumulation, 8-byte C stores. c_vec (the host's Tiles.store): C's rows take vectors of
// a thread's column group, VN elements (N % VN == 0, C aligned to VN elements).
extern "C" __global__ void SIMT_BOUNDS gemm_f32(GEMM_PARAMS(float, float)) {
    gemm_simt<float, float, 128, 128, 8, 8, 8, 4>(GEMM_ARGS);
}
extern "C" __global__ void SIMT_BOUNDS gemm_small_f32(GEMM_PARAMS(float, float)) {
    gemm_simt<float, float, 64, 64, 8, 4, 4, 4>(GEMM_ARGS);
}
extern "C" __global__ void SIMT_BOUNDS gemm_tiny_f32(GEMM_PARAMS(float, float)) {
    gemm_simt<float, float, 32, 32, 8, 2, 2, 2>(GEMM_ARGS);
}
extern "C" __global__ void SIMT_BOUNDS gemm_f64(GEMM_PARAMS(double, double)) {
    gemm_simt<double, double, 64, 64, 8, 4, 4, 2>(GEMM_ARGS);
}
// (No __launch_bounds__ here: with it ptxas spills this kernel at 64-80 registers;
// without, it takes 110 and none. The fallback is not a performance path.)
extern "C" __global__ void gemm_f16(GEMM_PARAMS(__half, float)) {
    gemm_simt<__half, float, 64, 64, 8, 4, 4, 1>(GEMM_ARGS);
}
// bfloat16: the float16 fallback's tiles (GPUs below sm_80, or tensor_cores off).
extern "C" __global__ void gemm_bf16(GEMM_PARAMS(__nv_bfloat16, float)) {
    gemm_simt<__nv_bfloat16, float, 64, 64, 8, 4, 4, 1>(GEMM_ARGS);
}

// ---- tensor cores: 16-bit inputs (T: __half, __nv_bfloat16), float32 accumulation ---
// (mma.sync m16n8k16 .f16 / .bf16, ldmatrix, cp.async: cuda/mma.cuh); and float inputs
// as TF32 (T = float, mma.sync m16n8k8 .tf32, K-major tiles only: gemm_tc_f32 below).
// A block of TC_THREADS = 128 threads (4 warps, 2 (m) x 2 (n)) computes a 128x128 tile of C,
// each warp a 64x64 tile as 4 x 8 m16n8 accumulators (128 floats per thread); K advances
// BK = 32 (16 for float) per step through a TC_STAGES = 3 deep ring of shared buffers (16 KB
// per stage: the A and B tiles, 8 KB each; 48 KB in all, reused by the epilogue).
//
// Shared layout: each operand tile is kept in its global orientation, as 16-byte chunks
// (8 16-bit values, or 4 floats, along the operand's contiguous dim), XOR-swizzled so that the 8 rows an
// ldmatrix phase reads, and the 8 chunks a quarter-warp stores, fall on 8 distinct
// 16-byte bank groups:
//   k-contiguous ("K-major": A (m, k) with sak = 1, B (n, k) with sbk = 1): 128 rows x 4
//     chunks; chunk c of row r at  4 r + (c ^ ((r >> 1) & 3));
//   m/n-contiguous ("R-major": mode bit 0): 32 k-rows x 16 chunks; chunk c of k-row k at
//     16 k + (c ^ (k & 7)).
// Fragments come from ldmatrix.x4 (K-major) or ldmatrix.x4.trans (R-major): lane l gives
// the address of row l % 8 of matrix l / 8. Every shared store is one 16-byte vector.
//
// Global -> shared: an operand whose mode has bit 2 (the host checked: contiguous along
// its inner dim, 16-byte aligned base, row and batch strides, no prologue) is copied by
// cp.async (16 bytes, zero-filled past the operand's edge), TC_STAGES - 1 steps ahead;
// any other operand takes the register path: global (16-byte loads when mode bit 1 allows,
// else bounds-checked scalar loads) -> registers -> A's act' prologue (aux read at A's
// offsets, the product rounded to T once: the prologue needs this path) -> 16-byte
// swizzled stores into the same ring slot, TC_STAGES - 1 steps ahead, one chunk at a time
// (the 128 accumulators leave no registers to hold a whole tile's loads across the mma).
//
// Epilogue: the accumulators pass through the ring (each warp 32 rows x 64 floats at a
// time) so that each lane then finishes 4 consecutive outputs of a row: bias, activation,
// one rounding to T, 8-byte stores (c_vec: N % 4 == 0, C 8-byte aligned) or scalars; split,
// the raw partials into the workspace (float4 stores when N % 4 == 0), then the last block
// of the tile adds the splits in split order (StepRange, last_to_arrive).
// Row sums (row_sums, first N-tile): thread i sums row i of each staged A tile (A' after
// the prologue) in k order, in a register.
// Registers: 255 per thread (NVRTC 12.9 and nvcc 13, sm_80 and sm_90), no spills, which
// holds 2 blocks of 128 threads per SM (TC_BOUNDS); the batch pointers are rebuilt per
// tile and the reduction-batch pointers advanced in place so that nothing 64-bit the
// main loop does not use stays live across it (with them live ptxas spilled 8-56 bytes).
constexpr int TC_THREADS = 128;  // gpuops/ops/matmul.py: _TENSOR_CORE's Tiles.threads
constexpr int TC_BM = 128, TC_BN = 128, TC_STAGES = 3;
// Per storage type T: V values per 16-byte chunk (8 for 16-bit T, 4 for float); a step takes
// BK = 4 chunks of K (32, 16); an R-major k-row holds RC chunks (16, 32); a tile, TILE values
// (8 KB either way).
template <typename T>
struct TcShape {
    static constexpr int V = 16 / sizeof(T), BK = 4 * V, RC = TC_BM / V, TILE = TC_BM * BK;
};
constexpr int TC_MODE_ALONG_ROW = 1, TC_MODE_VECTOR = 2, TC_MODE_ASYNC = 4;
#ifndef GPUOPS_EMU
#define TC_BOUNDS __launch_bounds__(TC_THREADS, 2)
#else
#define TC_BOUNDS
#endif

// The swizzled chunk index (16-byte units) of chunk c of a K-major row r / R-major k-row k.
__device__ __forceinline__ int tc_chunk_k(int r, int c) { return 4 * r + (c ^ ((r >> 1) & 3)); }
// (R-major tiles hold 16-bit values only: gemm_tc_f32 stages K-major.)
__device__ __forceinline__ int tc_chunk_r(int k, int c) { return 16 * k + (c ^ (k & 7)); }

// This lane's ldmatrix chunk for tile i of a warp's operand (A: the m16 tile i; B: the n8
// tiles 2i, 2i + 1) and k sub-step s (k += 16 s), from the lane's ``base`` chunk (tile 0,
// sub-step 0) and ``x`` (R-major: its k-row's swizzle bits 2..1). K-major: rows 16 i down,
// the same swizzle ((r >> 1) & 3 does not see 16 i), chunk bit 1 flipped by s. R-major:
// chunks 2 i along the row, which the swizzle maps to 2 (i ^ x), 16 k-rows down per s.
__device__ __forceinline__ int tc_frag(int base, int x, int i, int s, bool along_row) {
    return along_row ? base + 2 * (i ^ x) + 256 * s : (base + 64 * i) ^ (2 * s);
}

// One operand's part of the block's loads: thread i moves chunks p = 0..3 of every tile,
// at tile chunk store + 128 p, from the operand's (row + (K-major ? 32 p : 0), k + (R-major ?
// 8 p : 0)) relative to the step's (row0, k0).
template <typename T>
struct TcLoader {
    int row, k, store;

    static constexpr int V = TcShape<T>::V, RC = TcShape<T>::RC;

    __device__ __forceinline__ TcLoader(int tid, bool along_row) {
        row = along_row ? V * (tid % RC) : tid / 4;
        k = along_row ? tid / RC : V * (tid % 4);
        store = along_row ? tc_chunk_r(tid / RC, tid % RC) : tc_chunk_k(tid / 4, tid % 4);
    }

    // Chunk p's global position and how many of its 8 values lie inside the operand.
    __device__ __forceinline__ int place(int p, bool along_row, long long rows, long long K,
                                         long long row0, long long k0, long long& grow,
                                         long long& gk) const {
        grow = row0 + row + (along_row ? 0 : 32 * p);
        gk = k0 + k + (along_row ? TC_THREADS / RC * p : 0);
        const long long n = along_row ? (gk < K ? rows - grow : 0) : (grow < rows ? K - gk : 0);
        return n <= 0 ? 0 : n >= V ? V : (int)n;
    }

    // cp.async path: 16 bytes per chunk, zero-filled past the edge (mode bit 2).
    __device__ __forceinline__ void issue(T* dst, const T* src, long long rows, long long K,
                                          long long s_row, long long s_k, long long row0,
                                          long long k0, bool along_row) const {
#pragma unroll
        for (int p = 0; p < 4; ++p) {
            long long grow, gk;
            const int n = place(p, along_row, rows, K, row0, k0, grow, gk);
            cp_async_16(dst + V * (store + 128 * p), n ? src + grow * s_row + gk * s_k : src,
                        n * (int)sizeof(T));
        }
    }

    // Register path: global -> registers (times act'(aux) when pro != ACT_NONE, rounded
    // to T) -> one 16-byte store per chunk; a chunk at a time (a loop, not unrolled: the
    // 128 accumulators leave no room for more loads in flight).
    __device__ __forceinline__ void copy(T* dst, const T* src, const T* aux, int pro,
                                         long long rows, long long K, long long s_row,
                                         long long s_k, long long row0, long long k0,
                                         int mode) const {
        const bool along_row = mode & TC_MODE_ALONG_ROW;
        const long long step = along_row ? s_row : s_k;  // between a chunk's values
#pragma unroll 1
        for (int p = 0; p < 4; ++p) {
            long long grow, gk;
            const int n = place(p, along_row, rows, K, row0, k0, grow, gk);
            const long long at = grow * s_row + gk * s_k;
            Pack<T, V> v;
            if ((mode & TC_MODE_VECTOR) && n == V) {
                v = *reinterpret_cast<const Pack<T, V>*>(src + at);
                if (pro != ACT_NONE) {
                    const Pack<T, V> u = *reinterpret_cast<const Pack<T, V>*>(aux + at);
#pragma unroll
                    for (int e = 0; e < V; ++e) put_scaled(&v.v[e], v.v[e], u.v[e], pro);
                }
            } else {
#pragma unroll
                for (int e = 0; e < V; ++e) {
                    if (e >= n) v.v[e] = zero_of<T>();
                    else if (pro != ACT_NONE)
                        put_scaled(&v.v[e], src[at + e * step], aux[at + e * step], pro);
                    else v.v[e] = src[at + e * step];
                }
            }
            *reinterpret_cast<Pack<T, V>*>(dst + V * (store + 128 * p)) = v;
        }
    }
};

template <typename T>
__device__ __forceinline__ void gemm_tc(GEMM_PARAMS(T, float)) {
    using S = TcShape<T>;
    constexpr int V = S::V;
    __shared__ __align__(128) T stage[TC_STAGES][2][S::TILE];  // [slot][A, B][tile]
    int& last = *reinterpret_cast<int*>(&stage[0][0][0]);  // last_to_arrive's answer (after
                                                            // the main loop: the ring is free)
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 2) * 64, wn = (warp % 2) * 64;
    // gemm_tc_f32 takes operands staged K-major only (k-contiguous or strided): 32-bit
    // values have no ldmatrix.trans, and fragments by 32-bit loads from R-major tiles spilled
    // (36 bytes, NVRTC 12.9); the host sends other layouts to the SIMT kernel.
    const bool a_row = sizeof(T) == 2 && (a_mode & TC_MODE_ALONG_ROW);
    const bool b_row = sizeof(T) == 2 && (b_mode & TC_MODE_ALONG_ROW);
    const bool a_async = a_mode & TC_MODE_ASYNC, b_async = b_mode & TC_MODE_ASYNC;
    // This lane's ldmatrix rows (tc_frag): lane l addresses row l % 8 of matrix l / 8; A's
    // matrices are (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15) of its
    // m16 tile (a[0..3] of mma_m16n8k16), B's (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7),
    // (n 8-15, k 8-15) of its two n8 tiles (b[0..1] of each).
    const int lr = lane % 8, lm = (lane / 8) % 2, lh = lane / 16;
    const int x = lr >> 1;  // R-major: the k-row's swizzle lr, less bit 0 (folded into base)
    const int a_base = a_row ? 16 * (lr + 8 * lh) + wm / 8 + (lm ^ (lr & 1))
                             : tc_chunk_k(wm + lr + 8 * lm, lh);
    const int b_base = b_row ? 16 * (lr + 8 * lm) + wn / 8 + (lh ^ (lr & 1))
                             : tc_chunk_k(wn + lr + 8 * lh, lm);
    TcLoader<T> la(tid, a_row), lb(tid, b_row);
    const long long n0 = (long long)blockIdx.x * TC_BN;
    const int nsplit = (int)splits, split = (int)blockIdx.z % nsplit;  // splits <= 65535
    const bool sums_rows = row_sums && blockIdx.x == 0;
    for (long long z = blockIdx.z / nsplit; z < nz; z += gridDim.z / nsplit) {
        for (long long m0 = (long long)blockIdx.y * TC_BM; m0 < M; m0 += (long long)gridDim.y * TC_BM) {
            __syncthreads();  // the previous tile's epilogue and ``last`` are done with the ring
            float acc[4][8][4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
            float rs = 0.0f;  // row_sums: A's row m0 + tid over this block's k range
            // The next step to load: k0 and the operands at its reduction-batch entry r (the
            // batch pointers rebuilt per tile, not kept live across the main loop).
            long long k0;
            const T *a_src, *x_src, *b_src;
            int steps;  // < 2^31: nr * ceil(K / 32) / splits
            {
                const StepRange st(nr, K, S::BK, split, splits);
                const long long z1 = z / nz2, z2 = z % nz2;
                a_src = A + z1 * za1 + z2 * za2 + st.r * ra;
                x_src = aux + z1 * za1 + z2 * za2 + st.r * ra;
                b_src = B + z1 * zb1 + z2 * zb2 + st.r * rb;
                k0 = st.k0;
                steps = (int)(st.t1 - st.t0);
            }
            // Loads the next step of this block's range into ring slot ``slot``: cp.async
            // copies issued (landing at a later cp_async_wait), the register path stored.
            auto load = [&](int slot) {
                if (a_async)
                    la.issue(stage[slot][0], a_src, M, K, sam, sak, m0, k0, a_row);
                else
                    la.copy(stage[slot][0], a_src, x_src, a_act, M, K, sam, sak, m0, k0, a_mode);
                if (b_async)
                    lb.issue(stage[slot][1], b_src, N, K, sbn, sbk, n0, k0, b_row);
                else
                    lb.copy(stage[slot][1], b_src, nullptr, ACT_NONE, N, K, sbn, sbk, n0, k0,
                            b_mode);
                k0 += S::BK;  // StepRange::advance
                if (k0 >= K) k0 = 0, a_src += ra, x_src += ra, b_src += rb;
            };
#pragma unroll
            for (int q = 0; q < TC_STAGES - 1; ++q) {
                if (q < steps) load(q);
                cp_async_commit();
            }
            int slot = 0;
            for (int q = 0; q < steps; ++q) {
                cp_async_wait<TC_STAGES - 2>();  // step q's copies have landed (this thread's)
                __syncthreads();                 // ...and every thread's; slot q - 1 is free
                const int ahead = slot == 0 ? TC_STAGES - 1 : slot - 1;  // (q + 2) % 3
                const bool more = q + TC_STAGES - 1 < steps;
                if (more) load(ahead);
                cp_async_commit();
                const T* As = stage[slot][0];
                const T* Bs = stage[slot][1];
                if (sums_rows) {  // a few values at a time: the accumulators leave few registers
                    if (a_row) {
#pragma unroll 1
                        for (int kk = 0; kk < S::BK; ++kk)
                            rs += to_acc(As[V * tc_chunk_r(kk, tid / V) + tid % V]);
                    } else {
#pragma unroll 1
                        for (int c = 0; c < 4; ++c) {
                            const Pack<T, V> pk =
                                *reinterpret_cast<const Pack<T, V>*>(As + V * tc_chunk_k(tid, c));
#pragma unroll
                            for (int e = 0; e < V; ++e) rs += to_acc(pk.v[e]);
                        }
                    }
                }
                if constexpr (sizeof(T) == 2) {  // two k16 sub-steps: m16n8k16
#pragma unroll 1
                    for (int s = 0; s < 2; ++s) {
                        unsigned a[4][4], b[8][2];
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            const T* p = As + V * tc_frag(a_base, x, i, s, a_row);
                            if (a_row) ldmatrix_x4_trans(a[i], p);
                            else ldmatrix_x4(a[i], p);
                        }
#pragma unroll
                        for (int jj = 0; jj < 4; ++jj) {  // n8 tiles 2 jj, 2 jj + 1
                            unsigned q4[4];
                            const T* p = Bs + V * tc_frag(b_base, x, jj, s, b_row);
                            if (b_row) ldmatrix_x4_trans(q4, p);
                            else ldmatrix_x4(q4, p);
                            b[2 * jj][0] = q4[0], b[2 * jj][1] = q4[1];
                            b[2 * jj + 1][0] = q4[2], b[2 * jj + 1][1] = q4[3];
                        }
#pragma unroll
                        for (int i = 0; i < 4; ++i)
#pragma unroll
                            for (int j = 0; j < 8; ++j) mma_m16n8k16<T>(acc[i][j], a[i], b[j]);
                    }
                } else {  // float32 as TF32 (gemm_tc_f32): two k8 sub-steps, m16n8k8
                    // ldmatrix on K-major float tiles: each b16 pair is one float, the same
                    // matrices at 4 k per chunk give the tf32 fragments (lane l: row l / 4,
                    // k l % 4 of each), rounded by to_tf32.
#pragma unroll 1
                    for (int s = 0; s < 2; ++s) {
                        unsigned a[4][4], b[8][2];
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            ldmatrix_x4(a[i], As + V * tc_frag(a_base, x, i, s, false));
#pragma unroll
                            for (int q = 0; q < 4; ++q) a[i][q] = to_tf32(__uint_as_float(a[i][q]));
                        }
#pragma unroll
                        for (int jj = 0; jj < 4; ++jj) {  // n8 tiles 2 jj, 2 jj + 1
                            unsigned q4[4];
                            ldmatrix_x4(q4, Bs + V * tc_frag(b_base, x, jj, s, false));
                            b[2 * jj][0] = to_tf32(__uint_as_float(q4[0]));
                            b[2 * jj][1] = to_tf32(__uint_as_float(q4[1]));
                            b[2 * jj + 1][0] = to_tf32(__uint_as_float(q4[2]));
                            b[2 * jj + 1][1] = to_tf32(__uint_as_float(q4[3]));
                        }
#pragma unroll
                        for (int i = 0; i < 4; ++i)
#pragma unroll
                            for (int j = 0; j < 8; ++j) mma_m16n8k8_tf32(acc[i][j], a[i], b[j]);
                    }
                }
                slot = slot == TC_STAGES - 1 ? 0 : slot + 1;
            }
            cp_async_wait<0>();
            __syncthreads();  // every warp is done with the ring: the epilogue may reuse it
            if (sums_rows && m0 + tid < M)
                put_row_sum(rs, db, ws, M, N, nz, z, m0 + tid, split, splits);
            // The accumulators through this warp's staging rows (32 x 64 floats, 8 KB, two
            // rounds of 32 rows): the 32-byte unit u of row r at u ^ (r & 3) (the float2
            // stores of a half-warp cover rows g = 0..3, the float4 loads of a quarter-warp
            // one row: no bank conflicts); then each lane finishes 4 consecutive outputs of
            // a row: into C (bias, activation, one rounding; 8-byte stores where c_vec
            // allows) or, raw, into the split's partial tile (float4 stores when N % 4 == 0).
            float* Cs = reinterpret_cast<float*>(&stage[0][0][0]) + warp * 32 * 64;
            float* part = ws + (split * nz + z) * M * N;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int j = 0; j < 8; ++j)
#pragma unroll
                        for (int h = 0; h < 2; ++h) {
                            const int r = 16 * i + g + 8 * h;
                            *reinterpret_cast<float2*>(Cs + 64 * r + 8 * (j ^ (r & 3)) + 2 * t) =
                                make_float2(acc[2 * half + i][j][2 * h],
                                            acc[2 * half + i][j][2 * h + 1]);
                        }
                __syncwarp();
#pragma unroll 1
                for (int p = 0; p < 16; ++p) {
                    const int r = 2 * p + lane / 16, col = 4 * (lane % 16);
                    const long long m = m0 + wm + 32 * half + r, n = n0 + wn + col;
                    if (m >= M || n >= N) continue;
                    const float4 v = *reinterpret_cast<const float4*>(
                        Cs + 64 * r + 8 * ((col / 8) ^ (r & 3)) + col % 8);
                    const float vs[4] = {v.x, v.y, v.z, v.w};
                    const bool whole = n + 4 <= N;
                    if (splits > 1) {
                        float* at = part + m * N + n;
                        if (whole && N % 4 == 0) {
                            *reinterpret_cast<float4*>(at) = v;
                        } else {
#pragma unroll
                            for (int e = 0; e < 4; ++e)
                                if (n + e < N) at[e] = vs[e];
                        }
                        continue;
                    }
                    Pack<T, 4> pk;
                    if (bias_mode == 1 && whole &&
                        reinterpret_cast<unsigned long long>(bias + n) % sizeof(pk) == 0) {
                        const Pack<T, 4> bn = *reinterpret_cast<const Pack<T, 4>*>(bias + n);
#pragma unroll
                        for (int e = 0; e < 4; ++e)  // finish_value with the bias loaded 4 at once
                            store_acc(pk.v + e, activate(vs[e] + to_acc(bn.v[e]), act));
                    } else {
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            store_acc(pk.v + e, finish_value(vs[e], bias, bias_mode, m, n + e, act));
                    }
                    T* out = C + (z * M + m) * N + n;
                    if (whole && c_vec) {
                        *reinterpret_cast<Pack<T, 4>*>(out) = pk;
                    } else {
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            if (n + e < N) out[e] = pk.v[e];
                    }
                }
                __syncwarp();
            }
            if (splits == 1) continue;
            const long long tile = (z * ((M + TC_BM - 1) / TC_BM) + m0 / TC_BM) * gridDim.x + blockIdx.x;
            if (last_to_arrive(counts + tile, splits, last)) {
                if (sums_rows && m0 + tid < M) sum_row_splits(ws, db, M, N, nz, z, m0 + tid, splits);
                for (int q = tid; q < TC_BM * TC_BN; q += TC_THREADS) {
                    const long long m = m0 + q / TC_BN, n = n0 + q % TC_BN;
                    if (m < M && n < N)
                        sum_splits(ws, C, bias, M, N, nz, z, m, n, splits, bias_mode, act);
                }
            }
        }
    }
}
extern "C" __global__ void TC_BOUNDS gemm_tc_f16(GEMM_PARAMS(__half, float)) {
    gemm_tc<__half>(GEMM_ARGS);
}
extern "C" __global__ void TC_BOUNDS gemm_tc_bf16(GEMM_PARAMS(__nv_bfloat16, float)) {
    gemm_tc<__nv_bfloat16>(GEMM_ARGS);
}
// float32 on the tensor cores as TF32 (10-bit mantissa inputs, float32 accumulation): only
// when the host's matmul precision is "high" (gpuops.set_matmul_precision).
extern "C" __global__ void TC_BOUNDS gemm_tc_f32(GEMM_PARAMS(float, float)) {
    gemm_tc<float>(GEMM_ARGS);
}
