// Transpose family: y = x with its axes permuted (NumPy's transpose, materialized).
// Launched by gpuops/ops/transpose.py, which first merges the axes that stay neighbours
// (and drops size-1 axes), then picks:
//   transpose_tiles_*  (batch, rows, cols) -> (batch, cols, rows): each 32x32 tile goes
//                      through shared memory (32x33: the padding column keeps the
//                      column reads free of bank conflicts), so both the global reads
//                      and the global writes are coalesced;
//   transpose_nd_*     any other permutation of up to 8 merged axes: one thread per
//                      output element, the input read through permuted strides
//                      (writes coalesced; reads coalesced when the innermost axis stays).
#include "gpuops.cuh"

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
// (dims d0..d7, d0 implied by n), s_d the input's element stride along that dim.
template <typename T>
__device__ __forceinline__ void transpose_nd(const T* __restrict__ x, T* __restrict__ y,
                                             long long n, long long d1, long long d2,
                                             long long d3, long long d4, long long d5,
                                             long long d6, long long d7, long long s0,
                                             long long s1, long long s2, long long s3,
                                             long long s4, long long s5, long long s6,
                                             long long s7) {
    GRID_STRIDE_LOOP(i, n) {
        long long rem = i, off = 0;
        off += (rem % d7) * s7; rem /= d7;
        off += (rem % d6) * s6; rem /= d6;
        off += (rem % d5) * s5; rem /= d5;
        off += (rem % d4) * s4; rem /= d4;
        off += (rem % d3) * s3; rem /= d3;
        off += (rem % d2) * s2; rem /= d2;
        off += (rem % d1) * s1; rem /= d1;
        off += rem * s0;
        y[i] = x[off];
    }
}

#define TRANSPOSE_ALL(T, SFX)                                                                   \
    extern "C" __global__ void transpose_tiles_##SFX(const T* __restrict__ x,                  \
                                                     T* __restrict__ y, long long batch,       \
                                                     long long rows, long long cols) {         \
        transpose_tiles(x, y, batch, rows, cols);                                               \
    }                                                                                           \
    extern "C" __global__ void transpose_nd_##SFX(                                              \
        const T* __restrict__ x, T* __restrict__ y, long long n, long long d1, long long d2,    \
        long long d3, long long d4, long long d5, long long d6, long long d7, long long s0,     \
        long long s1, long long s2, long long s3, long long s4, long long s5, long long s6,     \
        long long s7) {                                                                         \
        transpose_nd(x, y, n, d1, d2, d3, d4, d5, d6, d7, s0, s1, s2, s3, s4, s5, s6, s7);      \
    }

TRANSPOSE_ALL(float, f32)
TRANSPOSE_ALL(double, f64)
