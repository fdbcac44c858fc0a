// Kernels that exercise the CPU emulator's CUDA primitives against NumPy
// (tests/infrastructure/test_emu.py): shuffles, votes, barrier counts, atomics, shared memory.

// Per warp: the sum (xor butterfly), the sum by shfl_down (lane 0), an inclusive
// scan (shfl_up), lane 3's value broadcast within groups of 8 (shfl with width).
extern "C" __global__ void warp_ops(const float* __restrict__ x, float* __restrict__ xor_sum,
                                    float* __restrict__ down_sum, float* __restrict__ scan,
                                    float* __restrict__ bcast8) {
    const int t = threadIdx.x, lane = t & 31;
    const float v = x[t];
    float s = v;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    xor_sum[t] = s;
    float d = v;
    for (int o = 16; o > 0; o >>= 1) d += __shfl_down_sync(0xffffffffu, d, o);
    down_sum[t] = lane == 0 ? d : 0.0f;
    float c = v;
    for (int o = 1; o < 32; o <<= 1) {
        const float u = __shfl_up_sync(0xffffffffu, c, o);
        if (lane >= o) c += u;
    }
    scan[t] = c;
    bcast8[t] = __shfl_sync(0xffffffffu, v, 3, 8);
}

// Ballot of x > 0 per warp, __syncthreads_count of x > 0 per block.
extern "C" __global__ void votes(const float* __restrict__ x, unsigned* __restrict__ ballot,
                                 int* __restrict__ count) {
    const int t = threadIdx.x + blockIdx.x * blockDim.x;
    ballot[t] = __ballot_sync(0xffffffffu, x[t] > 0.0f);
    count[t] = __syncthreads_count(x[t] > 0.0f);
}

// Sum of x by float atomicAdd into total[0]; max of keys by atomicMax into top[0].
extern "C" __global__ void atomics(const double* __restrict__ x, double* __restrict__ total,
                                   const int* __restrict__ keys, int* __restrict__ top,
                                   long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        atomicAdd(total, x[i]);
        atomicMax(top, keys[i]);
    }
}

// Reverse each block's slice through dynamic shared memory (extern __shared__).
extern "C" __global__ void reverse_blocks(const float* __restrict__ x, float* __restrict__ y) {
    extern __shared__ float buffer[];
    const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    buffer[t] = x[base + t];
    __syncthreads();
    y[base + t] = buffer[blockDim.x - 1 - t];
}

// Shared memory nobody wrote in this block: block 0 writes its static tile, every
// block reads its own; all blocks read the dynamic buffer unwritten.
extern "C" __global__ void unwritten_shared(float* __restrict__ from_static,
                                            float* __restrict__ from_dynamic) {
    __shared__ float tile[64];
    extern __shared__ float scratch[];
    const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (blockIdx.x == 0) tile[t] = 1.0f;
    __syncthreads();
    from_static[i] = tile[t];
    from_dynamic[i] = scratch[t];
}

// 3-d blocks and grids: each thread writes its linear ids.
extern "C" __global__ void indices(int* __restrict__ out) {
    const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int per_block = blockDim.x * blockDim.y * blockDim.z;
    out[block * per_block + thread] = block * 10000 + thread;
}

// Threads that return early leave the barrier: the others are not stuck.
extern "C" __global__ void early_exit(float* __restrict__ y) {
    if (threadIdx.x % 3 == 0) return;
    y[threadIdx.x] = 1.0f;
    __syncthreads();
    y[threadIdx.x] += 1.0f;
}

// Every supported scalar parameter type, echoed into out.
extern "C" __global__ void scalars(double* __restrict__ out, float f, double d, int i,
                                   unsigned int u, long long ll, __half h) {
    out[0] = f;
    out[1] = d;
    out[2] = i;
    out[3] = u;
    out[4] = (double)ll;
    out[5] = __half2float(h);
}
