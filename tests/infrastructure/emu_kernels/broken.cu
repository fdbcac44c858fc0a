// Planted bugs the CPU emulator itself must report (tests/infrastructure/test_emu.py), each as a
// clear error instead of a hang or a wrong answer.

// Threads of one block at two different __syncthreads: undefined on a GPU (a hang
// or garbage), an error in the emulator.
extern "C" __global__ void divergent_barrier(float* __restrict__ y) {
    if (threadIdx.x < 16) {
        y[threadIdx.x] = 1.0f;
        __syncthreads();
    } else {
        y[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}

// Lanes 16..31 return, then lane i < 16 reads lane i + 16 (exited).
extern "C" __global__ void shuffle_from_exited_lane(float* __restrict__ y) {
    if (threadIdx.x >= 16) return;
    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, y[threadIdx.x], 16);
}

// Half of warp 0 waits in a shuffle for lanes that wait at __syncthreads: nobody can
// move on (a hang on a GPU).
extern "C" __global__ void deadlock(float* __restrict__ y) {
    float v = y[threadIdx.x];
    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
    else __syncthreads();
    y[threadIdx.x] = v;
}

// Thread 0 spins on a flag that no thread sets (no barrier involved): the watchdog's case.
extern "C" __global__ void spin_forever(int* __restrict__ flag) {
    if (threadIdx.x == 0)
        while (atomicAdd(flag, 0) == 0) {
        }
}

// Indexes a 32-element shared array with threadIdx.x for 64 threads (UBSan bounds).
extern "C" __global__ void shared_out_of_bounds(float* __restrict__ y) {
    __shared__ float tile[32];
    tile[threadIdx.x] = y[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = tile[threadIdx.x % 32];
}

// A failed device-side assert.
extern "C" __global__ void failing_assert(const float* __restrict__ x) {
    assert(x[threadIdx.x] >= 0.0f);
}
