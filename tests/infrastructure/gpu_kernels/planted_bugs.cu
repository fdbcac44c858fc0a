// Deliberately broken kernels: compute-sanitizer must flag each of them
// (tests/infrastructure/test_gpu_sanitizer.py). Not part of gpuops.

// memcheck: thread n writes one element past the end of y.
extern "C" __global__ void out_of_bounds_write(float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;
}

// racecheck: every thread reads its neighbour's shared slot with no barrier
// between the write and the read.
extern "C" __global__ void shared_memory_race(float* y) {
    __shared__ float tile[256];
    tile[threadIdx.x] = (float)threadIdx.x;
    y[threadIdx.x] = tile[(threadIdx.x + 1) % blockDim.x];
}
