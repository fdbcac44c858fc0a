// Shared memory declared only inside a template function: g++ puts such a __shared__ array
// in its own .bss section, not in gpuops_shared, and with no other __shared__ variable the
// source has no gpuops_shared section at all; build.py's linker script gathers it there
// (and defines the section's bounds), so the emulator NaN-fills and counts it.
// tests/infrastructure/test_emu.py, test_emu_counters.py.

template <typename T>
__device__ T first_block_writes(int t) {
    __shared__ T tile[64];
    if (blockIdx.x == 0) tile[t] = T(1);
    __syncthreads();
    return tile[t];
}

// Block 0 writes the tile, every block reads it: block 1 reads shared memory nobody wrote.
extern "C" __global__ void unwritten_template_shared(float* __restrict__ out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = first_block_writes<float>(threadIdx.x);
}
