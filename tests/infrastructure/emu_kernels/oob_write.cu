// Planted bug for the AddressSanitizer mode of the CPU emulator (tests/infrastructure/test_emu.py):
// oob_write's loop runs to i <= n, so one thread writes y[n], one past the end.
// in_bounds_write is the same kernel without the bug (the control).
extern "C" __global__ void oob_write(float* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i <= n;
         i += (long long)blockDim.x * gridDim.x)
        y[i] = 1.0f;
}

extern "C" __global__ void in_bounds_write(float* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        y[i] = 1.0f;
}
