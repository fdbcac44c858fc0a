// Tiled matrix product C = A B (n x n, row-major, n a multiple of TILE), one TILE x TILE
// block per output tile, for the ThreadSanitizer mode of the CPU emulator.
// matmul_tiled is correct; matmul_tiled_race is the planted bug: the __syncthreads
// after the inner product is missing, so a fast thread overwrites the shared tiles
// with the next step's values while slower threads still read the current ones.
#define TILE 8

template <bool SYNC_AFTER_USE>
__device__ __forceinline__ void matmul_tiles(const float* __restrict__ a,
                                             const float* __restrict__ b,
                                             float* __restrict__ c, int n) {
    __shared__ float as[TILE][TILE];
    __shared__ float bs[TILE][TILE];
    const int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (int k0 = 0; k0 < n; k0 += TILE) {
        as[threadIdx.y][threadIdx.x] = a[row * n + k0 + threadIdx.x];
        bs[threadIdx.y][threadIdx.x] = b[(k0 + threadIdx.y) * n + col];
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += as[threadIdx.y][k] * bs[k][threadIdx.x];
        if (SYNC_AFTER_USE) __syncthreads();
    }
    c[row * n + col] = acc;
}

extern "C" __global__ void matmul_tiled(const float* __restrict__ a, const float* __restrict__ b,
                                        float* __restrict__ c, int n) {
    matmul_tiles<true>(a, b, c, n);
}

extern "C" __global__ void matmul_tiled_race(const float* __restrict__ a,
                                             const float* __restrict__ b,
                                             float* __restrict__ c, int n) {
    matmul_tiles<false>(a, b, c, n);
}
