// Fused scaled dot-product attention (FlashAttention-2's schedule, SIMT), forward and
// backward. Launched by gpuops/ops/attention.py. Per (batch*head) slice b, C-contiguous
// q (Tq, D), k (Tk, D), v (Tk, Dv), y and gy (Tq, Dv); s_ij = scale q_i.k_j, keys j > i
// hidden when causal (PyTorch's top-left aligned is_causal); P = softmax_j(s).
//
// The Tq x Tk scores never reach global memory. A block of TILE x G threads works on one
// tile of TILE rows (a grid-stride loop over (batch, tile) pairs, so any batch fits the
// grid); the G = ATTENTION_THREADS_PER_ROW consecutive threads of one row (a group, inside
// one warp) split that row's keys for the dot products and its columns for the
// accumulators (column c belongs to thread c mod G), and combine scores with xor
// shuffles inside the group. Tiles sit in dynamic shared memory, rows padded by one
// element (a column spread over the banks); the launch side computes the same sizes.
//   attention_d<DMAX>          forward: Q tile resident, K/V tiles streamed; the online
//                              softmax keeps the running max m and sum l per row and
//                              rescales the Dv accumulators by e^(m_old - m_new);
//                              y = acc / l. Causal: K tiles past the Q tile's last row
//                              are skipped.
//   attention_stats            the row log-sum-exp L_i = m + log l (the forward's pass
//                              without V) and Delta_i = sum_c gy_ic y_ic, for the gradients.
//   attention_wrt_x1_d<DMAX>   dQ: per Q tile, over K tiles: P = e^(s - L),
//                              dP = gy v^T, dS = P (dP - Delta), dq_i = scale sum_j dS_ij k_j.
//   attention_wrt_x2_d<DMAX>,  dK, dV: per K tile, over Q tiles (causal: from the tile of
//   attention_wrt_x3_d<DMAX>   its first key on): dk_j = scale sum_i dS_ij q_i,
//                              dv_j = sum_i P_ij gy_i.
//   attention_tc_f16,          float16 / bfloat16 forward on tensor cores (sm_80+,
//   attention_tc_bf16          non-causal, D and Dv <= 128): see their comment below.
// Every sum runs in a fixed order (no atomics): bitwise repeatable. A key a row does not
// see (masked, or past Tk) is never read for that row, so NaN or inf there changes nothing.
// DMAX (128, and 256 for float16 and bfloat16) bounds D and Dv: DMAX / G accumulators per
// thread. 16-bit: tiles stored in 16 bits, float32 arithmetic, one rounding on store.
#include "rowwise.cuh"
#include "mma.cuh"

#define ATTENTION_G ATTENTION_THREADS_PER_ROW

// Sum and max over the G threads of a row (xor shuffles stay inside an aligned group);
// every thread of the block must call them. Each lane ends with the same bits.
template <typename A>
__device__ __forceinline__ A group_sum(A v) {
    for (int o = ATTENTION_G / 2; o > 0; o >>= 1) v += shfl_xor(v, o);
    return v;
}

template <typename A>
__device__ __forceinline__ A group_max(A v) {
    for (int o = ATTENTION_G / 2; o > 0; o >>= 1) v = RowMaxOp::combine(v, shfl_xor(v, o));
    return v;
}

// Rows [row0, row0 + TILE) of a C-contiguous (rows, cols) matrix (those that exist) into a
// tile whose rows are cols + 1 elements apart.
template <int TILE, typename T>
__device__ __forceinline__ void load_tile(T* __restrict__ tile, const T* __restrict__ src,
                                          long long row0, long long rows, long long cols) {
    const long long n = (rows - row0 < TILE ? rows - row0 : TILE) * cols;
    for (long long e = threadIdx.x; e < n; e += blockDim.x) {
        const long long r = e / cols, c = e - r * cols;
        tile[r * (cols + 1) + c] = src[(row0 + r) * cols + c];
    }
}

template <typename A, typename T>
__device__ __forceinline__ A dot(const T* __restrict__ a, const T* __restrict__ b, long long n) {
    A s = A(0);
    for (long long c = 0; c < n; ++c) s += to_acc(a[c]) * to_acc(b[c]);
    return s;
}

// A row's accumulators, spread over its group: thread t holds columns t + G c, c < PER.
// acc += w x (the columns below cols).
template <int PER, typename A, typename T>
__device__ __forceinline__ void add_scaled_row(A (&acc)[PER], A w, const T* __restrict__ x,
                                               long long cols, int t) {
#pragma unroll
    for (int c = 0; c < PER; ++c) {
        const long long col = t + ATTENTION_G * c;
        if (col < cols) acc[c] += w * to_acc(x[col]);
    }
}

// dst[col] = finish(acc) for the columns below cols (one rounding to T).
template <int PER, typename A, typename T, typename F>
__device__ __forceinline__ void store_row(T* __restrict__ dst, const A (&acc)[PER],
                                          long long cols, int t, F finish) {
#pragma unroll
    for (int c = 0; c < PER; ++c) {
        const long long col = t + ATTENTION_G * c;
        if (col < cols) store_acc(dst + col, finish(acc[c]));
    }
}

// Keys k0 .. k0 + n - 1 of a key tile that query row i sees (n = 0 for rows past tq).
template <int TILE>
__device__ __forceinline__ long long visible_keys(long long i, long long k0, long long tq,
                                                  long long tk, long long causal) {
    long long n = i < tq ? (tk - k0 < TILE ? tk - k0 : TILE) : 0;
    if (causal && i - k0 + 1 < n) n = i - k0 + 1 > 0 ? i - k0 + 1 : 0;
    return n;
}

// Forward (STATS false: y) or the gradients' row statistics (STATS true: L and Delta).
// Shared: p (TILE x (TILE+1), A; forward only), then q, k tiles (TILE x (d+1), T), then
// the v tile (TILE x (dv+1), T; forward only).
template <typename T, typename A, int TILE, int DMAX, bool STATS>
__device__ __forceinline__ void attention_rows(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    T* __restrict__ y, const T* __restrict__ y_in, const T* __restrict__ gy,
    A* __restrict__ lse, A* __restrict__ delta, long long batch, long long tq, long long tk,
    long long d, long long dv, A scale, long long causal) {
    constexpr int G = ATTENTION_G, PER = DMAX / G, KPER = TILE / G;
    extern __shared__ __align__(16) unsigned char attention_shared[];
    A* ps = reinterpret_cast<A*>(attention_shared);
    T* qs = reinterpret_cast<T*>(ps + (STATS ? 0 : TILE * (TILE + 1)));
    T* ks = qs + TILE * (d + 1);
    T* vs = ks + TILE * (d + 1);
    const int r = threadIdx.x / G, t = threadIdx.x % G;
    const long long q_tiles = (tq + TILE - 1) / TILE;
    for (long long w = blockIdx.x; w < batch * q_tiles; w += gridDim.x) {
        const long long b = w / q_tiles, q0 = (w % q_tiles) * TILE, i = q0 + r;
        const T* kb = k + b * tk * d;
        __syncthreads();  // the previous pair's reads of the tiles are done
        load_tile<TILE>(qs, q + b * tq * d, q0, tq, d);
        const long long k_end = causal && q0 + TILE < tk ? q0 + TILE : tk;
        A m = lowest_acc(A(0)), l = A(0);
        A acc[PER] = {};  // this thread's columns t + G c of the row's accumulators
        for (long long k0 = 0; k0 < k_end; k0 += TILE) {
            __syncthreads();
            load_tile<TILE>(ks, kb, k0, tk, d);
            if (!STATS) load_tile<TILE>(vs, v + b * tk * dv, k0, tk, dv);
            __syncthreads();
            const long long n = visible_keys<TILE>(i, k0, tq, tk, causal);
            A s[KPER];
            A tile_max = lowest_acc(A(0));
#pragma unroll
            for (int u = 0; u < KPER; ++u) {
                const int j = t + G * u;
                s[u] = j < n ? scale * dot<A>(qs + r * (d + 1), ks + j * (d + 1), d) : A(0);
                if (j < n) tile_max = RowMaxOp::combine(tile_max, s[u]);
            }
            // online softmax: m_new = max(m, tile max); the old sum and accumulators
            // are rescaled by e^(m - m_new) (0 before the first visible key)
            const A m_new = RowMaxOp::combine(m, group_max(tile_max));
            const A alpha = exp(m - m_new);
            A sum = A(0);
#pragma unroll
            for (int u = 0; u < KPER; ++u) {
                const int j = t + G * u;
                if (j < n) {
                    const A p = exp(s[u] - m_new);
                    sum += p;
                    if (!STATS) ps[r * (TILE + 1) + j] = p;
                }
            }
            l = l * alpha + group_sum(sum);
            m = m_new;
            if (!STATS) {
                __syncthreads();  // p of the row, written by its group
#pragma unroll
                for (int c = 0; c < PER; ++c) acc[c] *= alpha;
                for (long long j = 0; j < n; ++j) {
                    const A p = ps[r * (TILE + 1) + j];
                    add_scaled_row(acc, p, vs + j * (dv + 1), dv, t);
                }
            }
        }
        const long long row = b * tq + i;
        if (STATS) {
            A part = A(0);
            if (i < tq)
                for (long long c = t; c < dv; c += G)
                    part += to_acc(gy[row * dv + c]) * to_acc(y_in[row * dv + c]);
            part = group_sum(part);
            if (i < tq && t == 0) {
                lse[row] = m + A(log(l));  // -inf when every visible score is -inf (l = 0)
                delta[row] = part;
            }
        } else if (i < tq) {
            store_row(y + row * dv, acc, dv, t, [l](A a) { return a / l; });
        }
    }
}

// dQ. Shared: dS (TILE x (TILE+1), A), then the q, gy, k, v tiles (T).
template <typename T, typename A, int TILE, int DMAX>
__device__ __forceinline__ void attention_grad_q(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ gy, const A* __restrict__ lse, const A* __restrict__ delta,
    T* __restrict__ gq, long long batch, long long tq, long long tk, long long d, long long dv,
    A scale, long long causal) {
    constexpr int G = ATTENTION_G, PER = DMAX / G, KPER = TILE / G;
    extern __shared__ __align__(16) unsigned char attention_shared[];
    A* dss = reinterpret_cast<A*>(attention_shared);
    T* qs = reinterpret_cast<T*>(dss + TILE * (TILE + 1));
    T* gs = qs + TILE * (d + 1);
    T* ks = gs + TILE * (dv + 1);
    T* vs = ks + TILE * (d + 1);
    const int r = threadIdx.x / G, t = threadIdx.x % G;
    const long long q_tiles = (tq + TILE - 1) / TILE;
    for (long long w = blockIdx.x; w < batch * q_tiles; w += gridDim.x) {
        const long long b = w / q_tiles, q0 = (w % q_tiles) * TILE, i = q0 + r;
        const long long row = b * tq + i;
        const T* kb = k + b * tk * d;
        const T* vb = v + b * tk * dv;
        __syncthreads();
        load_tile<TILE>(qs, q + b * tq * d, q0, tq, d);
        load_tile<TILE>(gs, gy + b * tq * dv, q0, tq, dv);
        const A li = i < tq ? lse[row] : A(0), di = i < tq ? delta[row] : A(0);
        const long long k_end = causal && q0 + TILE < tk ? q0 + TILE : tk;
        A acc[PER] = {};  // this thread's columns t + G c of the row's accumulators
        for (long long k0 = 0; k0 < k_end; k0 += TILE) {
            __syncthreads();
            load_tile<TILE>(ks, kb, k0, tk, d);
            load_tile<TILE>(vs, vb, k0, tk, dv);
            __syncthreads();
            const long long n = visible_keys<TILE>(i, k0, tq, tk, causal);
#pragma unroll
            for (int u = 0; u < KPER; ++u) {
                const int j = t + G * u;
                if (j < n) {
                    const A p = exp(scale * dot<A>(qs + r * (d + 1), ks + j * (d + 1), d) - li);
                    const A dp = dot<A>(gs + r * (dv + 1), vs + j * (dv + 1), dv);
                    dss[r * (TILE + 1) + j] = p * (dp - di);
                }
            }
            __syncthreads();
            for (long long j = 0; j < n; ++j) {
                const A ds = dss[r * (TILE + 1) + j];
                add_scaled_row(acc, ds, ks + j * (d + 1), d, t);
            }
        }
        if (i < tq) store_row(gq + row * d, acc, d, t, [scale](A a) { return scale * a; });
    }
}

// dK (GRAD_K) or dV: one key tile per pair, the rows of the block are keys.
// Shared: w = dS or P (TILE x (TILE+1), A), L and Delta of the query tile (TILE each, A),
// then the k, v, q, gy tiles (T).
template <typename T, typename A, int TILE, int DMAX, bool GRAD_K>
__device__ __forceinline__ void attention_grad_kv(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ gy, const A* __restrict__ lse, const A* __restrict__ delta,
    T* __restrict__ gx, long long batch, long long tq, long long tk, long long d, long long dv,
    A scale, long long causal) {
    constexpr int G = ATTENTION_G, PER = DMAX / G, QPER = TILE / G;
    extern __shared__ __align__(16) unsigned char attention_shared[];
    A* ws = reinterpret_cast<A*>(attention_shared);
    A* ls = ws + TILE * (TILE + 1);
    A* dls = ls + TILE;
    T* ks = reinterpret_cast<T*>(dls + TILE);
    T* vs = ks + TILE * (d + 1);
    T* qs = vs + TILE * (dv + 1);
    T* gs = qs + TILE * (d + 1);
    const long long cols = GRAD_K ? d : dv;
    const int r = threadIdx.x / G, t = threadIdx.x % G;
    const long long k_tiles = (tk + TILE - 1) / TILE;
    for (long long w = blockIdx.x; w < batch * k_tiles; w += gridDim.x) {
        const long long b = w / k_tiles, k0 = (w % k_tiles) * TILE, j = k0 + r;
        const T* qb = q + b * tq * d;
        const T* gb = gy + b * tq * dv;
        __syncthreads();
        load_tile<TILE>(ks, k + b * tk * d, k0, tk, d);
        if (GRAD_K) load_tile<TILE>(vs, v + b * tk * dv, k0, tk, dv);
        A acc[PER] = {};  // this thread's columns t + G c of the row's accumulators
        // causal: the queries before the tile's first key see none of its keys
        for (long long q0 = causal ? k0 / TILE * TILE : 0; q0 < tq; q0 += TILE) {
            __syncthreads();
            load_tile<TILE>(qs, qb, q0, tq, d);
            load_tile<TILE>(gs, gb, q0, tq, dv);
            for (int e = threadIdx.x; e < TILE; e += blockDim.x) {
                ls[e] = q0 + e < tq ? lse[b * tq + q0 + e] : A(0);
                dls[e] = q0 + e < tq ? delta[b * tq + q0 + e] : A(0);
            }
            __syncthreads();
            // queries q0 + lo .. q0 + hi - 1 see key j (none when j is past tk)
            const long long hi = j < tk ? (tq - q0 < TILE ? tq - q0 : TILE) : 0;
            const long long lo = causal ? (j - q0 < 0 ? 0 : j - q0 < hi ? j - q0 : hi) : 0;
#pragma unroll
            for (int u = 0; u < QPER; ++u) {
                const int il = t + G * u;
                if (lo <= il && il < hi) {
                    const A p = exp(scale * dot<A>(qs + il * (d + 1), ks + r * (d + 1), d) -
                                    ls[il]);
                    ws[r * (TILE + 1) + il] =
                        GRAD_K ? p * (dot<A>(gs + il * (dv + 1), vs + r * (dv + 1), dv) - dls[il])
                               : p;
                }
            }
            __syncthreads();
            for (long long il = lo; il < hi; ++il) {
                const A wi = ws[r * (TILE + 1) + il];
                const T* xi = GRAD_K ? qs + il * (d + 1) : gs + il * (dv + 1);
                add_scaled_row(acc, wi, xi, cols, t);
            }
        }
        if (j < tk)
            store_row(gx + (b * tk + j) * cols, acc, cols, t,
                      [scale](A a) { return GRAD_K ? scale * a : a; });
    }
}

#define ATTENTION_SIZES long long batch, long long tq, long long tk, long long d, long long dv

// ---- 16-bit forward on tensor cores (mma.sync m16n8k16, sm_80+), non-causal ------------
// mma_m16n8k16, half_pair and half_pack: cuda/mma.cuh.

// A block of 4 warps takes ATTENTION_TC_ROWS = 64 query rows (16 per warp, its Q held as
// A fragments in registers) and streams K / V in tiles of ATTENTION_TC_KEYS = 32 keys:
// S = Q K^T by mma (K tile k-contiguous, rows padded by 8 halves), the online softmax on
// the S fragments (a row's values sit in the 4 lanes of a quad: xor shuffles 1 and 2),
// P rounded to half straight from the S fragments into A fragments, O += P V by mma
// (V tile stored transposed, (col, key), so B fragments are aligned 32-bit loads). D and
// Dv are zero-padded to multiples of 16 in shared memory; keys past Tk are masked (p = 0)
// and their V rows are zeros. Non-causal only: with a causal mask a key hidden from one
// row of a tile but seen by another would enter the hidden row's mma as 0 * v, so a NaN
// there would leak; causal calls take the SIMT kernel. Shared: Q (64 x (Dp+8)),
// K (32 x (Dp+8)), V^T (Dvp x 40), halves.
// T: __half or __nv_bfloat16 (the .bf16 mma; P rounded to bfloat16 for P V).
template <typename T>
__device__ __forceinline__ void attention_tc(const T* __restrict__ q, const T* __restrict__ k,
                                             const T* __restrict__ v, T* __restrict__ y,
                                             ATTENTION_SIZES, float scale) {
    constexpr int BQ = ATTENTION_TC_ROWS, BK = ATTENTION_TC_KEYS, DMAX = 128;
    constexpr int KF = DMAX / 16, NF = DMAX / 8, SF = BK / 8, LDV = BK + 8;
    extern __shared__ __align__(16) unsigned char attention_shared[];
    const int dp = (int)((d + 15) / 16 * 16), dvp = (int)((dv + 15) / 16 * 16), ld = dp + 8;
    T* qs = reinterpret_cast<T*>(attention_shared);
    T* ks = qs + BQ * ld;
    T* vt = ks + BK * ld;
    T zero;
    store_acc(&zero, 0.0f);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const long long q_tiles = (tq + BQ - 1) / BQ;
    for (long long w = blockIdx.x; w < batch * q_tiles; w += gridDim.x) {
        const long long b = w / q_tiles, q0 = (w % q_tiles) * BQ;
        const T* qb = q + b * tq * d;
        const T* kb = k + b * tk * d;
        const T* vb = v + b * tk * dv;
        __syncthreads();
        for (int e = threadIdx.x; e < BQ * dp; e += blockDim.x) {
            const int r = e / dp, c = e % dp;
            qs[r * ld + c] = q0 + r < tq && c < d ? qb[(q0 + r) * d + c] : zero;
        }
        __syncthreads();
        unsigned qa[KF][4];  // this warp's 16 rows of Q as A fragments
#pragma unroll
        for (int kf = 0; kf < KF; ++kf)
#pragma unroll
            for (int i = 0; i < 4; ++i)
                qa[kf][i] = 16 * kf < dp ? half_pair(qs + (16 * warp + g + 8 * (i % 2)) * ld
                                                          + 16 * kf + 2 * t + 8 * (i / 2))
                                         : 0u;
        float o[NF][4];
#pragma unroll
        for (int nf = 0; nf < NF; ++nf)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[nf][e] = 0.0f;
        float m[2] = {lowest_acc(0.0f), lowest_acc(0.0f)}, l[2] = {0.0f, 0.0f};  // rows g, g+8
        for (long long k0 = 0; k0 < tk; k0 += BK) {
            __syncthreads();
            for (int e = threadIdx.x; e < BK * dp; e += blockDim.x) {
                const int r = e / dp, c = e % dp;
                ks[r * ld + c] = k0 + r < tk && c < d ? kb[(k0 + r) * d + c] : zero;
            }
            for (int e = threadIdx.x; e < BK * dvp; e += blockDim.x) {
                const int r = e / dvp, c = e % dvp;
                vt[c * LDV + r] = k0 + r < tk && c < dv ? vb[(k0 + r) * dv + c] : zero;
            }
            __syncthreads();
            float s[SF][4];
#pragma unroll
            for (int sf = 0; sf < SF; ++sf) {
#pragma unroll
                for (int e = 0; e < 4; ++e) s[sf][e] = 0.0f;
#pragma unroll
                for (int kf = 0; kf < KF; ++kf) {
                    if (16 * kf < dp) {
                        const T* kr = ks + (8 * sf + g) * ld + 16 * kf + 2 * t;
                        const unsigned kbf[2] = {half_pair(kr), half_pair(kr + 8)};
                        mma_m16n8k16<T>(s[sf], qa[kf], kbf);
                    }
                }
            }
            // online softmax per row (e / 2 picks row g or g + 8)
            float tile_max[2] = {lowest_acc(0.0f), lowest_acc(0.0f)};
#pragma unroll
            for (int sf = 0; sf < SF; ++sf)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    s[sf][e] *= scale;
                    if (k0 + 8 * sf + 2 * t + e % 2 < tk)
                        tile_max[e / 2] = RowMaxOp::combine(tile_max[e / 2], s[sf][e]);
                }
            float alpha[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                tile_max[h] = RowMaxOp::combine(tile_max[h], shfl_xor(tile_max[h], 1));
                tile_max[h] = RowMaxOp::combine(tile_max[h], shfl_xor(tile_max[h], 2));
                const float m_new = RowMaxOp::combine(m[h], tile_max[h]);
                alpha[h] = exp(m[h] - m_new);
                m[h] = m_new;
            }
#pragma unroll
            for (int sf = 0; sf < SF; ++sf)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const bool seen = k0 + 8 * sf + 2 * t + e % 2 < tk;
                    s[sf][e] = seen ? exp(s[sf][e] - m[e / 2]) : 0.0f;
                    sum[e / 2] += s[sf][e];
                }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                sum[h] += shfl_xor(sum[h], 1);
                sum[h] += shfl_xor(sum[h], 2);
                l[h] = l[h] * alpha[h] + sum[h];
            }
#pragma unroll
            for (int nf = 0; nf < NF; ++nf)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[nf][e] *= alpha[e / 2];
#pragma unroll
            for (int kf = 0; kf < BK / 16; ++kf) {  // keys 16 kf .. 16 kf + 15
                const unsigned pa[4] = {half_pack<T>(s[2 * kf][0], s[2 * kf][1]),
                                        half_pack<T>(s[2 * kf][2], s[2 * kf][3]),
                                        half_pack<T>(s[2 * kf + 1][0], s[2 * kf + 1][1]),
                                        half_pack<T>(s[2 * kf + 1][2], s[2 * kf + 1][3])};
#pragma unroll
                for (int nf = 0; nf < NF; ++nf) {
                    if (8 * nf < dvp) {
                        const T* vr = vt + (8 * nf + g) * LDV + 16 * kf + 2 * t;
                        const unsigned vbf[2] = {half_pair(vr), half_pair(vr + 8)};
                        mma_m16n8k16<T>(o[nf], pa, vbf);
                    }
                }
            }
        }
#pragma unroll
        for (int nf = 0; nf < NF; ++nf)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const long long row = q0 + 16 * warp + g + 8 * (e / 2);
                const long long col = 8 * nf + 2 * t + e % 2;
                if (row < tq && col < dv) store_acc(y + (b * tq + row) * dv + col,
                                                    o[nf][e] / l[e / 2]);
            }
    }
}
extern "C" __global__ void attention_tc_f16(const __half* __restrict__ q,
                                            const __half* __restrict__ k,
                                            const __half* __restrict__ v, __half* __restrict__ y,
                                            ATTENTION_SIZES, float scale) {
    attention_tc<__half>(q, k, v, y, batch, tq, tk, d, dv, scale);
}
extern "C" __global__ void attention_tc_bf16(const __nv_bfloat16* __restrict__ q,
                                             const __nv_bfloat16* __restrict__ k,
                                             const __nv_bfloat16* __restrict__ v,
                                             __nv_bfloat16* __restrict__ y, ATTENTION_SIZES,
                                             float scale) {
    attention_tc<__nv_bfloat16>(q, k, v, y, batch, tq, tk, d, dv, scale);
}

#define ATTENTION_GRAD_ARGS(T, A)                                                            \
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,               \
        const T* __restrict__ gy, const A* __restrict__ lse, const A* __restrict__ delta,     \
        T* __restrict__ gx, ATTENTION_SIZES, A scale, long long causal

// The kernels whose accumulators hold DMAX columns.
#define ATTENTION_WIDTH(T, A, TILE, DMAX, SFX)                                               \
    extern "C" __global__ void attention_d##DMAX##_##SFX(                                    \
        const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,           \
        T* __restrict__ y, ATTENTION_SIZES, A scale, long long causal) {                     \
        attention_rows<T, A, TILE, DMAX, false>(q, k, v, y, nullptr, nullptr, nullptr,      \
                                                nullptr, batch, tq, tk, d, dv, scale,        \
                                                causal);                                     \
    }                                                                                        \
    extern "C" __global__ void attention_wrt_x1_d##DMAX##_##SFX(ATTENTION_GRAD_ARGS(T, A)) { \
        attention_grad_q<T, A, TILE, DMAX>(q, k, v, gy, lse, delta, gx, batch, tq, tk, d, dv, \
                                           scale, causal);                                   \
    }                                                                                        \
    extern "C" __global__ void attention_wrt_x2_d##DMAX##_##SFX(ATTENTION_GRAD_ARGS(T, A)) { \
        attention_grad_kv<T, A, TILE, DMAX, true>(q, k, v, gy, lse, delta, gx, batch, tq, tk, \
                                                  d, dv, scale, causal);                     \
    }                                                                                        \
    extern "C" __global__ void attention_wrt_x3_d##DMAX##_##SFX(ATTENTION_GRAD_ARGS(T, A)) { \
        attention_grad_kv<T, A, TILE, DMAX, false>(q, k, v, gy, lse, delta, gx, batch, tq,    \
                                                   tk, d, dv, scale, causal);                \
    }

#define ATTENTION_STATS(T, A, TILE, SFX)                                                     \
    extern "C" __global__ void attention_stats_##SFX(                                        \
        const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ y,           \
        const T* __restrict__ gy, A* __restrict__ lse, A* __restrict__ delta,               \
        ATTENTION_SIZES, A scale, long long causal) {                                        \
        attention_rows<T, A, TILE, ATTENTION_G, true>(q, k, nullptr, nullptr, y, gy, lse,  \
                                                      delta, batch, tq, tk, d, dv, scale,    \
                                                      causal);                               \
    }

ATTENTION_STATS(__half, float, ATTENTION_TILE, f16)
ATTENTION_WIDTH(__half, float, ATTENTION_TILE, 128, f16)
ATTENTION_WIDTH(__half, float, ATTENTION_TILE, 256, f16)
ATTENTION_STATS(__nv_bfloat16, float, ATTENTION_TILE, bf16)
ATTENTION_WIDTH(__nv_bfloat16, float, ATTENTION_TILE, 128, bf16)
ATTENTION_WIDTH(__nv_bfloat16, float, ATTENTION_TILE, 256, bf16)
ATTENTION_STATS(float, float, ATTENTION_TILE, f32)
ATTENTION_WIDTH(float, float, ATTENTION_TILE, 128, f32)
ATTENTION_STATS(double, double, ATTENTION_TILE_F64, f64)
ATTENTION_WIDTH(double, double, ATTENTION_TILE_F64, 128, f64)
