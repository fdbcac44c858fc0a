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
// 4 (m) x 2 (n), 32 lanes as 4 (m) x 8 (n). Global loads are vectors of VEC elements
// along the operand's contiguous dim when the host says the layout allows it (a_mode /
// b_mode bit 1); bit 0 picks which dim consecutive threads walk (the contiguous one,
// for coalescing). float16 (gemm_f16) loads halves and accumulates in float: it is the
// fallback for GPUs without the sm_80 tensor-core instruction; from sm_80 on
// gemm_tc_f16 (mma.sync, float accumulation) is launched instead. bfloat16 likewise:
// gemm_bf16 (SIMT fallback) and gemm_tc_bf16 (mma.sync .bf16).
#include "gpuops.cuh"
#include "half.cuh"
#include "mma.cuh"

// GEMM_THREADS and the ACT_* codes come from gpuops.kernels.CONSTANTS (prepended by the loader).
#ifndef GPUOPS_EMU
#define GEMM_BOUNDS __launch_bounds__(GEMM_THREADS)
#else
#define GEMM_BOUNDS
#endif

// Shared-memory element types: tiles are staged in the accumulation type, except
// by the tensor-core kernels, which stage the 16-bit inputs.
__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(double* p, double v) { *p = v; }
__device__ __forceinline__ void put(float* p, __half v) { *p = __half2float(v); }
__device__ __forceinline__ void put(__half* p, __half v) { *p = v; }
__device__ __forceinline__ void put(float* p, __nv_bfloat16 v) { *p = __bfloat162float(v); }
__device__ __forceinline__ void put(__nv_bfloat16* p, __nv_bfloat16 v) { *p = v; }

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

// One operand tile (ROWS x BK) on its way to shared memory, in two steps so that the
// next tile's global loads are in flight while the current tile is multiplied:
//   fetch: registers <- src[(row0 + row) * s_row + (k0 + k) * s_k]  (0 outside),
//   stash: dst[row * LD_ROW + k * LD_K] <- registers.
// ``row`` is m for A and n for B. Each thread handles groups of VEC elements along
// k (mode bit 0 clear) or along row (bit 0 set); a group is one vector load when
// mode bit 1 is set (the host checked stride 1, alignment of every base and stride)
// and the whole group is in bounds, else VEC bounds-checked scalar loads.
// S is the shared-memory element type (the registers hold S: halves are widened to
// float on fetch by the SIMT float16 kernel, kept as halves by the tensor-core one).
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

    __device__ __forceinline__ void fetch(const T* __restrict__ src, long long rows, long long K,
                                          long long s_row, long long s_k, long long row0,
                                          long long k0, int mode) {
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
                const Pack<T, VEC> pk =
                    *reinterpret_cast<const Pack<T, VEC>*>(src + grow * s_row + gk * s_k);
#pragma unroll
                for (int e = 0; e < VEC; ++e) put(&v[p][e], pk.v[e]);
            } else {
#pragma unroll
                for (int e = 0; e < VEC; ++e) {
                    const long long r = grow + e * drow, kk = gk + e * dk;
                    put(&v[p][e], (r < rows && kk < K) ? src[r * s_row + kk * s_k] : zero_of<T>());
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
#pragma unroll
            for (int e = 0; e < VEC; ++e)
                dst[(row + e * drow) * LD_ROW + (k + e * dk) * LD_K] = v[p][e];
        }
    }
};

// The kernel arguments, identical for every GEMM kernel (SIMT and tensor cores).
// A_zr[m][k] = A[... + m*sam + k*sak], B likewise: A and B may be strided views.
// gpuops-strided: gemm_*: A, B
#define GEMM_PARAMS(T)                                                                      \
    const T *__restrict__ A, const T *__restrict__ B, T *__restrict__ C,                     \
        const T *__restrict__ bias, long long M, long long N, long long K, long long sam,    \
        long long sak, long long sbk, long long sbn, long long nz, long long nz2,            \
        long long za1, long long za2, long long zb1, long long zb2, long long nr,            \
        long long ra, long long rb, int a_mode, int b_mode, int c_vec, int bias_mode, int act
#define GEMM_ARGS                                                                           \
    A, B, C, bias, M, N, K, sam, sak, sbk, sbn, nz, nz2, za1, za2, zb1, zb2, nr, ra, rb,     \
        a_mode, b_mode, c_vec, bias_mode, act

// The epilogue of one output element: bias, activation, store.
template <typename T, typename Acc>
__device__ __forceinline__ Acc finish_value(Acc v, const T* __restrict__ bias, int bias_mode,
                                            long long m, long long n, int act) {
    if (bias_mode == 1) v += to_acc(bias[n]);
    else if (bias_mode == 2) v += to_acc(bias[m]);
    return activate(v, act);
}

template <typename T, typename Acc, int BM, int BN, int BK, int TM, int TN, int VEC>
__device__ __forceinline__ void gemm_simt(GEMM_PARAMS(T)) {
    static_assert(BM == 16 * TM && BN == 16 * TN, "warp tiling: 4x4 lanes x 4 warps (m), 8 lanes x 2 warps (n)");
    constexpr int PAD = 16 / sizeof(Acc);  // keeps rows 16-byte aligned, shifts banks
    __shared__ Acc As[BK][BM + PAD];
    __shared__ Acc Bs[BK][BN + PAD];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int tr = (warp / 2) * (4 * TM) + (lane / 8) * TM;  // first row of this thread's block
    const int tc = (warp % 2) * (8 * TN) + (lane % 8) * TN;  // first column
    const long long n0 = (long long)blockIdx.x * BN;
    for (long long z = blockIdx.z; z < nz; z += gridDim.z) {
        const long long z1 = z / nz2, z2 = z % nz2;
        const T* Az = A + z1 * za1 + z2 * za2;
        const T* Bz = B + z1 * zb1 + z2 * zb2;
        T* Cz = C + z * M * N;
        for (long long m0 = (long long)blockIdx.y * BM; m0 < M; m0 += (long long)gridDim.y * BM) {
            Acc acc[TM][TN];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = Acc(0);
            // Steps t over (r, k0), the reduction batch and the K tiles, in one loop so the
            // prefetch crosses from one r to the next.
            const long long steps = nr * ((K + BK - 1) / BK);
            long long r = 0, k0 = 0;  // the (reduction batch, k offset) of the fetched tile
            Tile<T, Acc, BM, BK, VEC> ta;
            Tile<T, Acc, BN, BK, VEC> tb;
            if (steps > 0) {
                ta.fetch(Az, M, K, sam, sak, m0, 0, a_mode);
                tb.fetch(Bz, N, K, sbn, sbk, n0, 0, b_mode);
            }
            for (long long t = 0; t < steps; ++t) {
                ta.template stash<1, BM + PAD>(&As[0][0], a_mode);
                tb.template stash<1, BN + PAD>(&Bs[0][0], b_mode);
                __syncthreads();
                if (t + 1 < steps) {  // the next tile's loads overlap this tile's math
                    k0 += BK;
                    if (k0 >= K) k0 = 0, ++r;
                    ta.fetch(Az + r * ra, M, K, sam, sak, m0, k0, a_mode);
                    tb.fetch(Bz + r * rb, N, K, sbn, sbk, n0, k0, b_mode);
                }
#pragma unroll
                for (int kk = 0; kk < BK; ++kk) {
                    Acc a[TM], b[TN];
#pragma unroll
                    for (int i = 0; i < TM; ++i) a[i] = As[kk][tr + i];
#pragma unroll
                    for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tc + j];
#pragma unroll
                    for (int i = 0; i < TM; ++i)
#pragma unroll
                        for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
                }
                __syncthreads();
            }
#pragma unroll
            for (int i = 0; i < TM; ++i) {
                const long long m = m0 + tr + i;
                if (m >= M) break;
                T* row = Cz + m * N;
                const long long nb = n0 + tc;
                if (c_vec && nb + TN <= N) {  // whole row segment in bounds: vector stores
#pragma unroll
                    for (int j = 0; j < TN; j += VEC) {
                        Pack<T, VEC> p;
#pragma unroll
                        for (int v = 0; v < VEC; ++v)
                            store_acc(p.v + v, finish_value(acc[i][j + v], bias, bias_mode, m, nb + j + v, act));
                        *reinterpret_cast<Pack<T, VEC>*>(row + nb + j) = p;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < TN; ++j) {
                        if (nb + j < N) store_acc(row + nb + j, finish_value(acc[i][j], bias, bias_mode, m, nb + j, act));
                    }
                }
            }
        }
    }
}

// float32: 128x128 tiles, 8x8 per thread, float4 loads. float64: 64x64, 4x4, double2.
// float16 fallback: 64x64, 4x4, scalar half loads, float accumulation (c_vec unused).
extern "C" __global__ void GEMM_BOUNDS gemm_f32(GEMM_PARAMS(float)) {
    gemm_simt<float, float, 128, 128, 8, 8, 8, 4>(GEMM_ARGS);
}
extern "C" __global__ void GEMM_BOUNDS gemm_f64(GEMM_PARAMS(double)) {
    gemm_simt<double, double, 64, 64, 8, 4, 4, 2>(GEMM_ARGS);
}
// (No __launch_bounds__ here: with it ptxas spills this kernel at 64-80 registers;
// without, it takes 110 and none. The fallback is not a performance path.)
extern "C" __global__ void gemm_f16(GEMM_PARAMS(__half)) {
    gemm_simt<__half, float, 64, 64, 8, 4, 4, 1>(GEMM_ARGS);
}
// bfloat16: the float16 fallback's tiles (GPUs below sm_80, or tensor_cores off).
extern "C" __global__ void gemm_bf16(GEMM_PARAMS(__nv_bfloat16)) {
    gemm_simt<__nv_bfloat16, float, 64, 64, 8, 4, 4, 1>(GEMM_ARGS);
}

// ---- tensor cores: 16-bit inputs (T: __half, __nv_bfloat16), float32 accumulation ---
// (mma.sync m16n8k16 .f16 / .bf16, cuda/mma.cuh).
// A block computes a 128x128 tile of C with 8 warps (2 (m) x 4 (n)), each warp a
// 64x32 tile as 4 x 4 m16n8 accumulators; K advances 32 per step. Both operand tiles
// are staged k-contiguous, A as (m, k) and B as (n, k), rows padded by 8 halves
// (16 bytes), so every fragment register is one aligned 32-bit shared load whatever
// the operands' layouts in global memory. Accumulators go straight to C through the
// epilogue (bias, activation, one rounding to T, bounds).
template <typename T>
__device__ __forceinline__ void gemm_tc(GEMM_PARAMS(T)) {
    constexpr int BM = 128, BN = 128, BK = 32, LD = BK + 8;
    __shared__ __align__(16) T As[BM * LD];
    __shared__ __align__(16) T Bs[BN * LD];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
    const long long n0 = (long long)blockIdx.x * BN;
    for (long long z = blockIdx.z; z < nz; z += gridDim.z) {
        const long long z1 = z / nz2, z2 = z % nz2;
        const T* Az = A + z1 * za1 + z2 * za2;
        const T* Bz = B + z1 * zb1 + z2 * zb2;
        T* Cz = C + z * M * N;
        for (long long m0 = (long long)blockIdx.y * BM; m0 < M; m0 += (long long)gridDim.y * BM) {
            float acc[4][4][4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
            const long long steps = nr * ((K + BK - 1) / BK);
            long long r = 0, k0 = 0;  // the (reduction batch, k offset) of the fetched tile
            Tile<T, T, BM, BK, 8> ta;
            Tile<T, T, BN, BK, 8> tb;
            if (steps > 0) {
                ta.fetch(Az, M, K, sam, sak, m0, 0, a_mode);
                tb.fetch(Bz, N, K, sbn, sbk, n0, 0, b_mode);
            }
            for (long long s = 0; s < steps; ++s) {
                ta.template stash<LD, 1>(As, a_mode);
                tb.template stash<LD, 1>(Bs, b_mode);
                __syncthreads();
                if (s + 1 < steps) {  // the next tile's loads overlap this tile's math
                    k0 += BK;
                    if (k0 >= K) k0 = 0, ++r;
                    ta.fetch(Az + r * ra, M, K, sam, sak, m0, k0, a_mode);
                    tb.fetch(Bz + r * rb, N, K, sbn, sbk, n0, k0, b_mode);
                }
#pragma unroll
                for (int kk = 0; kk < BK; kk += 16) {
                    unsigned a[4][4], b[4][2];
#pragma unroll
                    for (int i = 0; i < 4; ++i)
#pragma unroll
                        for (int q = 0; q < 4; ++q)
                            a[i][q] = half_pair(As + (wm + 16 * i + g + 8 * (q % 2)) * LD
                                                + kk + 2 * t + 8 * (q / 2));
#pragma unroll
                    for (int j = 0; j < 4; ++j)
#pragma unroll
                        for (int q = 0; q < 2; ++q)
                            b[j][q] = half_pair(Bs + (wn + 8 * j + g) * LD + kk + 2 * t + 8 * q);
#pragma unroll
                    for (int i = 0; i < 4; ++i)
#pragma unroll
                        for (int j = 0; j < 4; ++j) mma_m16n8k16<T>(acc[i][j], a[i], b[j]);
                }
                __syncthreads();
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const long long m = m0 + wm + 16 * i + g + 8 * (e / 2);
                        const long long n = n0 + wn + 8 * j + 2 * t + e % 2;
                        if (m < M && n < N)
                            store_acc(Cz + m * N + n,
                                      finish_value(acc[i][j][e], bias, bias_mode, m, n, act));
                    }
        }
    }
}
extern "C" __global__ void GEMM_BOUNDS gemm_tc_f16(GEMM_PARAMS(__half)) {
    gemm_tc<__half>(GEMM_ARGS);
}
extern "C" __global__ void GEMM_BOUNDS gemm_tc_bf16(GEMM_PARAMS(__nv_bfloat16)) {
    gemm_tc<__nv_bfloat16>(GEMM_ARGS);
}

// ---- activation derivative for linear's gradients ----------------------------------
// g = gy * act'(pre-activation), written through y = act(pre): relu 1[y > 0],
// sigmoid y (1 - y), tanh 1 - y^2.
#define ACT_GRAD(T, SFX)                                                                     \
    extern "C" __global__ void act_grad_##SFX(const T* __restrict__ y, const T* __restrict__ gy, \
                                              T* __restrict__ g, long long n, int act) {      \
        GRID_STRIDE_LOOP(i, n) {                                                              \
            const auto u = to_acc(y[i]), d = to_acc(gy[i]);                                   \
            decltype(u) one = 1, zero = 0;                                                    \
            const auto slope = act == ACT_RELU ? (u > zero ? one : zero)                      \
                             : act == ACT_SIGMOID ? u * (one - u) : one - u * u;              \
            store_acc(g + i, d * slope);                                                      \
        }                                                                                     \
    }

ACT_GRAD(float, f32)
ACT_GRAD(double, f64)
ACT_GRAD(__half, f16)
ACT_GRAD(__nv_bfloat16, bf16)
