// Planted access patterns with known memory-system counts, for the emulator's counting
// mode (tests/infrastructure/test_emu_counters.py). One thread per element, no loops
// unless stated: every load and store instruction runs once per thread.

// y[i] = x[i]: a warp reads 32 consecutive floats (128 bytes = 4 sectors per request).
extern "C" __global__ void copy_coalesced(const float* __restrict__ x, float* __restrict__ y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i];
}

// y[i] = x[32 i]: lanes 128 bytes apart, one sector each (32 sectors per load request).
extern "C" __global__ void load_strided32(const float* __restrict__ x, float* __restrict__ y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[32 * i];
}

// y[32 i] = x[i]: a coalesced load, a store with lanes 128 bytes apart.
extern "C" __global__ void store_strided32(const float* __restrict__ x, float* __restrict__ y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[32 * i] = x[i];
}

// 16-byte accesses: a warp moves 512 bytes, 16 sectors per request.
extern "C" __global__ void copy_float4(const float4* __restrict__ x, float4* __restrict__ y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i];
}

// Every lane reads x[0] (one sector per request), and lane 0 alone writes y[blockIdx.x].
extern "C" __global__ void broadcast(const float* __restrict__ x, float* __restrict__ y,
                                     float* __restrict__ z) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    z[i] = x[0];
    if (threadIdx.x == 0) y[blockIdx.x] = 1.0f;
}

// A 32x32 tile through shared memory, block (32, 8) as transpose kernels use it: each
// thread writes 4 rows of the tile (row-wise, conflict-free), then reads 4 columns
// (tile[c][r]: the lanes of a warp read one column, 32 rows apart). Without padding the
// 32 words of a column sit on one bank (32-way conflict); with 33 columns they spread
// over all 32 banks.
extern "C" __global__ void tile_transpose_unpadded(const float* __restrict__ x,
                                                   float* __restrict__ y) {
    __shared__ float tile[32][32];
    const int c = threadIdx.x;
    for (int r = threadIdx.y; r < 32; r += 8) tile[r][c] = x[32 * r + c];
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += 8) y[32 * r + c] = tile[c][r];
}

extern "C" __global__ void tile_transpose_padded(const float* __restrict__ x,
                                                 float* __restrict__ y) {
    __shared__ float tile[32][33];
    const int c = threadIdx.x;
    for (int r = threadIdx.y; r < 32; r += 8) tile[r][c] = x[32 * r + c];
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += 8) y[32 * r + c] = tile[c][r];
}

// 8-byte shared accesses, one warp: consecutive doubles (two half-warp phases of 128
// bytes, no conflict; in reverse, so that no thread reads back what it stored), every
// other double (each phase 2-way), and one double read by every lane (a broadcast).
extern "C" __global__ void shared_doubles(const double* __restrict__ x, double* __restrict__ y) {
    __shared__ double d[64];
    const int lane = threadIdx.x;
    d[lane] = x[lane];
    d[lane + 32] = x[lane + 32];
    __syncthreads();
    const double consecutive = d[63 - lane];
    const double every_other = d[2 * lane];
    const double same = d[5];
    y[lane] = consecutive + every_other + same;
}

// A transpose through dynamic shared memory (32 x 32 floats, unpadded) that stores down
// a column (buffer[32 c + r]: 32-way store conflicts) and reads back along rows
// (conflict-free).
extern "C" __global__ void shared_store_column(const float* __restrict__ x, float* __restrict__ y) {
    extern __shared__ float buffer[];
    const int c = threadIdx.x;
    for (int r = threadIdx.y; r < 32; r += 8) buffer[32 * c + r] = x[32 * r + c];
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += 8) y[32 * r + c] = buffer[32 * r + c];
}

// Locals do not count: a per-thread array the compiler keeps on the stack.
extern "C" __global__ void with_locals(const float* __restrict__ x, float* __restrict__ y,
                                       int k) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    volatile float local[8];
    for (int j = 0; j < 8; ++j) local[j] = (float)j;
    y[i] = x[i] + local[k & 7];
}

// A __shared__ scalar (as block_reduce's `total`): thread 0 stores it, every thread reads
// it (one broadcast request per warp). A constant-offset access to a static, which
// AddressSanitizer's instrumentation would not see.
extern "C" __global__ void shared_scalar(const float* __restrict__ x, float* __restrict__ y) {
    __shared__ float total;
    if (threadIdx.x == 0) total = x[0];
    __syncthreads();
    y[threadIdx.x] = total;
}

// __shared__ variables of a template function (g++ does not put those in the emulator's
// shared section; the counting mode finds them by symbol). Lane 0 of each warp posts its
// value, thread 0 adds the posts up into `total`, every thread reads `total`.
template <typename T>
__device__ __forceinline__ T sum_of_warp_leaders(T v) {
    __shared__ T posted[32];
    __shared__ T total;
    if ((threadIdx.x & 31) == 0) posted[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        T s = 0;
        for (unsigned w = 0; w < blockDim.x / 32; ++w) s += posted[w];
        total = s;
    }
    __syncthreads();
    return total;
}

extern "C" __global__ void template_shared(const float* __restrict__ x, float* __restrict__ y) {
    y[threadIdx.x] = sum_of_warp_leaders(x[threadIdx.x]);
}
