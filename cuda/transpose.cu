// Transpose family: y = x with its axes permuted (NumPy's transpose, materialized).
// Launched by gpuops/ops/transpose.py, which first merges the axes that stay neighbours
// (and drops size-1 axes), then picks:
//   transpose_tiles_*  (batch, rows, cols) -> (batch, cols, rows): each 32x32 tile goes
//                      through shared memory (32x33: the padding column keeps the
//                      column reads free of bank conflicts), so both the global reads
//                      and the global writes are coalesced;
//   transpose_nd_*     any other permutation of up to 8 merged axes: when the innermost
//                      axis stays, one thread per output element (both coalesced); else
//                      32x33 shared-memory tiles over the output dims of the input's
//                      innermost axis and of the output's (both coalesced).
#include "gpuops.cuh"
#include "half.cuh"

// TRANSPOSE_TILE, TRANSPOSE_TILE_ROWS: gpuops.kernels.CONSTANTS (prepended by the loader).
// blockDim = (TILE, TILE_ROWS): each thread moves TILE / TILE_ROWS elements.
#define TILE TRANSPOSE_TILE
#define TILE_ROWS TRANSPOSE_TILE_ROWS

template <typename T>
__device__ __forceinline__ void transpose_tiles(const T* __restrict__ x, T* __restrict__ y,
                                                long long batch, long long rows,
                                                long long cols) {
    __shared__ T tile[TILE][TILE + 1];
    const long long tiles_r = (rows + TILE - 1) / TILE, tiles_c = (cols + TILE - 1) / TILE;
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (long long t = blockIdx.x; t < batch * tiles_r * tiles_c; t += gridDim.x) {
        const long long tc = t % tiles_c, rest = t / tiles_c;
        const long long r0 = (rest % tiles_r) * TILE, c0 = tc * TILE;
        const long long plane = (rest / tiles_r) * rows * cols;
        for (int k = ty; k < TILE; k += TILE_ROWS) {  // read rows of x: coalesced along cols
            const long long r = r0 + k, c = c0 + tx;
            if (r < rows && c < cols) tile[k][tx] = x[plane + r * cols + c];
        }
        __syncthreads();
        for (int k = ty; k < TILE; k += TILE_ROWS) {  // write rows of y: coalesced along rows
            const long long c = c0 + k, r = r0 + tx;
            if (c < cols && r < rows) y[plane + c * rows + r] = tile[tx][k];
        }
        __syncthreads();  // the tile is refilled by the block's next iteration
    }
}

// y[i] = x[Σ_d idx_d(i) * s_d]: idx_d the index of output element i along output dim d
// (dims d0..d7, d0 implied by n), s_d the input's element stride along that dim; output dim
// `a` holds the input's unit-stride axis. a = 7 (the innermost axis stays): one thread per
// output element, reads and writes both coalesced. a < 7: blockDim = (TILE, TILE_ROWS),
// the output viewed as (dims before a, dim a, the dims after a flattened: contiguous in y);
// each 32x32 tile over (dim a, flattened) at one index of the dims before a goes through
// shared memory (32x33, as transpose_tiles): read along dim a (x's unit stride), written
// along the flattened dims (y's), both coalesced. The per-element index math divides by
// d1..d7 with the fast division (f[1..7]: FastDiv, gpuops.cuh; f[0] is never divided by).
template <typename T>
__device__ __forceinline__ void transpose_nd(const T* __restrict__ x, T* __restrict__ y,
                                             long long n, const FastDiv (&f)[8],
                                             const long long (&s)[8], long long a) {
    if (a == 7) {
        GRID_STRIDE_LOOP(i, n) {
            long long rem = i, off = 0, at;
#pragma unroll
            for (int q = 7; q > 0; --q) {
                rem = f[q].divmod(rem, at);
                off += at * s[q];
            }
            y[i] = x[off + rem * s[0]];
        }
        return;
    }
    __shared__ T tile[TILE][TILE + 1];
    // dim a's size and input stride; inner: the output dims after a, flattened (contiguous
    // in y); loops over q with constant indices only (unrolled)
    long long da = 1, sa = 1, inner = 1;
#pragma unroll
    for (int q = 0; q < 8; ++q) {
        if (q == a) {
            da = f[q].d;
            sa = s[q];
        } else if (q > a) {
            inner *= f[q].d;
        }
    }
    const long long tiles_a = (da + TILE - 1) / TILE, tiles_b = (inner + TILE - 1) / TILE;
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (long long t = blockIdx.x; t < n / (da * inner) * tiles_a * tiles_b; t += gridDim.x) {
        const long long a0 = ((t / tiles_b) % tiles_a) * TILE, b0 = (t % tiles_b) * TILE;
        long long rest = t / (tiles_b * tiles_a), in0 = 0, out0 = 0, stride = da * inner;
#pragma unroll
        for (int q = 6; q > 0; --q) {  // the tile's index along the output dims before a
            if (q < a) {
                long long at;
                rest = f[q].divmod(rest, at);
                in0 += at * s[q];
                out0 += at * stride;
                stride *= f[q].d;
            }
        }
        in0 += rest * s[0];  // the index along dim 0 (rest < d0; 0 when a == 0)
        out0 += rest * stride;
        for (int k = ty; k < TILE; k += TILE_ROWS) {  // read along dim a: coalesced in x
            const long long ia = a0 + tx;
            long long ib = b0 + k, off = 0;
            if (ia < da && ib < inner) {
#pragma unroll
                for (int q = 7; q > 0; --q) {  // ib over the output dims after a
                    if (q > a) {
                        long long at;
                        ib = f[q].divmod(ib, at);
                        off += at * s[q];
                    }
                }
                tile[k][tx] = x[in0 + ia * sa + off];
            }
        }
        __syncthreads();
        for (int k = ty; k < TILE; k += TILE_ROWS) {  // write the flattened dims: coalesced in y
            const long long ia = a0 + k, ib = b0 + tx;
            if (ia < da && ib < inner) y[out0 + ia * inner + ib] = tile[tx][k];
        }
        __syncthreads();  // the tile is refilled by the block's next iteration
    }
}

#define TRANSPOSE_ALL(T, SFX)                                                                   \
    extern "C" __global__ void transpose_tiles_##SFX(const T* __restrict__ x,                  \
                                                     T* __restrict__ y, long long batch,       \
                                                     long long rows, long long cols) {         \
        transpose_tiles(x, y, batch, rows, cols);                                               \
    }                                                                                           \
    extern "C" __global__ void transpose_nd_##SFX(                                              \
        const T* __restrict__ x, T* __restrict__ y, long long n, FASTDIV_PARAM(d1),             \
        FASTDIV_PARAM(d2), FASTDIV_PARAM(d3), FASTDIV_PARAM(d4), FASTDIV_PARAM(d5),             \
        FASTDIV_PARAM(d6), FASTDIV_PARAM(d7), long long s0, long long s1, long long s2,         \
        long long s3, long long s4, long long s5, long long s6, long long s7, long long a) {    \
        const FastDiv f[8] = {FastDiv(1, 0), FASTDIV(d1), FASTDIV(d2), FASTDIV(d3),             \
                              FASTDIV(d4),   FASTDIV(d5), FASTDIV(d6), FASTDIV(d7)};            \
        const long long s[8] = {s0, s1, s2, s3, s4, s5, s6, s7};                                \
        transpose_nd(x, y, n, f, s, a);                                                         \
    }

TRANSPOSE_ALL(__half, f16)  // 16-bit: the bits are moved, never converted
TRANSPOSE_ALL(__nv_bfloat16, bf16)
TRANSPOSE_ALL(float, f32)
TRANSPOSE_ALL(double, f64)
