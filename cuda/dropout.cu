// Inverted dropout: y_i = x_i / (1 - p) if element i is kept, else 0. Launched by
// gpuops/ops/dropout.py, which also launches it on gy for the gradient (dropout is
// linear in x: the backward regenerates the same mask from the seed, nothing stored).
//
// The keep decision of element i is a pure function of (seed, i): the four words of
// Philox-4x32-10 with key (seed mod 2^32, seed >> 32) and counter (j mod 2^32, j >> 32,
// 0, 0), j = i / 4, decide elements 4j .. 4j+3 (word i mod 4); element i is kept when
// its word >= threshold = round(p * 2^32). The NumPy twin does exactly this, so both
// backends drop the same elements bit for bit.
#include "gpuops.cuh"
#include "half.cuh"
#include "philox.cuh"

// Four elements of one group as one aligned vector (a 128-bit access for float).
template <typename T>
struct alignas(4 * sizeof(T)) Quad {
    T v[4];
};

// Thread j handles group j: when x and y start on a Quad boundary (any array; a view may
// start mid-vector), its four elements move as one vector load and one vector store, so
// a warp's accesses are contiguous (coalesced); else, and for a last partial group, one
// element at a time.
#define DROPOUT(T, A, SFX)                                                                 \
    extern "C" __global__ void dropout_##SFX(const T* __restrict__ x, T* __restrict__ y,  \
                                             long long n, long long key0, long long key1,  \
                                             long long threshold, A scale) {               \
        const long long groups = (n + 3) / 4;                                              \
        const unsigned long long limit = (unsigned long long)threshold;                    \
        const bool vectors = ((unsigned long long)x | (unsigned long long)y)               \
                             % sizeof(Quad<T>) == 0;                                       \
        GRID_STRIDE_LOOP(j, groups) {                                                      \
            unsigned int w0 = (unsigned int)j, w1 = (unsigned int)(j >> 32), w2 = 0u, w3 = 0u; \
            philox4x32_10(w0, w1, w2, w3, (unsigned int)key0, (unsigned int)key1);         \
            const unsigned int words[4] = {w0, w1, w2, w3};                                \
            if (vectors && 4 * j + 4 <= n) {                                               \
                const Quad<T> in = reinterpret_cast<const Quad<T>*>(x)[j];                 \
                Quad<T> out;                                                               \
                _Pragma("unroll") for (int q = 0; q < 4; ++q)                              \
                    store_acc(&out.v[q],                                                   \
                              words[q] >= limit ? to_acc(in.v[q]) * scale : A(0));         \
                reinterpret_cast<Quad<T>*>(y)[j] = out;                                    \
                continue;                                                                  \
            }                                                                              \
            _Pragma("unroll") for (int q = 0; q < 4; ++q) {                                \
                const long long i = 4 * j + q;                                             \
                if (i < n)                                                                 \
                    store_acc(y + i, words[q] >= limit ? load_acc(x + i) * scale : A(0)); \
            }                                                                              \
        }                                                                                  \
    }

DROPOUT(__half, float, f16)
DROPOUT(__nv_bfloat16, float, bf16)
DROPOUT(float, float, f32)
DROPOUT(double, double, f64)
