// Reduction family. Launched by gpuops/reduction.py.
#include "gpuops.cuh"

// y[k] = sum over r of x[offset(k) + offset(r)]: the input viewed as "kept" dims
// (k1..k3 after an implied k0, element strides ks*) times "reduced" dims (r*, rs*),
// each at most 4-d after coalescing. One block per output element (grid-stride
// over outputs); the block's threads stride over the reduced positions and meet
// in a shuffle + shared-memory tree (deterministic: fixed order for a fixed launch).
#define SUM_AXES(T, SFX)                                                                    \
    extern "C" __global__ void sum_axes_##SFX(                                              \
        const T* __restrict__ x, T* __restrict__ y, long long n_out, long long n_red,       \
        long long k1, long long k2, long long k3, long long ks0, long long ks1, long long ks2, \
        long long ks3, long long r1, long long r2, long long r3, long long rs0, long long rs1, \
        long long rs2, long long rs3) {                                                     \
        for (long long k = blockIdx.x; k < n_out; k += gridDim.x) {                         \
            const long long base = offset4(unravel4(k, k1, k2, k3), ks0, ks1, ks2, ks3);    \
            T acc = T(0);                                                                   \
            for (long long r = threadIdx.x; r < n_red; r += blockDim.x)                     \
                acc += x[base + offset4(unravel4(r, r1, r2, r3), rs0, rs1, rs2, rs3)];      \
            acc = block_sum(acc);                                                           \
            if (threadIdx.x == 0) y[k] = acc;                                               \
        }                                                                                   \
    }

SUM_AXES(float, f32)
SUM_AXES(double, f64)
