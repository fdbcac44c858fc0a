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

// The keep bits of group j (elements 4j .. 4j+3): bit q set when element 4j + q is kept.
__device__ __forceinline__ unsigned int keep_bits4(long long j, unsigned int key0,
                                                   unsigned int key1, unsigned long long limit) {
    unsigned int w0 = (unsigned int)j, w1 = (unsigned int)(j >> 32), w2 = 0u, w3 = 0u;
    philox4x32_10(w0, w1, w2, w3, key0, key1);
    return (unsigned int)(w0 >= limit) | (unsigned int)(w1 >= limit) << 1 |
           (unsigned int)(w2 >= limit) << 2 | (unsigned int)(w3 >= limit) << 3;
}

// The keep bits of the N elements i0 .. i0+N-1, i0 a multiple of N (N = 2, 4 or 8): bit k
// for element i0 + k. N = 8 spans two groups (two Philox calls), N = 4 one, N = 2 half of
// one (i0 mod 4 = 0 or 2: the group's lower or upper two bits).
template <int N>
__device__ __forceinline__ unsigned int keep_bits(long long i0, unsigned int key0,
                                                  unsigned int key1, unsigned long long limit) {
    unsigned int bits = 0u;
#pragma unroll
    for (int q = 0; q < (N + 3) / 4; ++q)
        bits |= keep_bits4(i0 / 4 + q, key0, key1, limit) << (4 * q);
    return N < 4 ? bits >> (i0 & 3) : bits;
}

// When x and y start on a 16-byte boundary (every allocation; a view may not), grid-stride
// item t moves elements [N t, N t + N), N = 16 / sizeof(T), as one Vec16 load and store
// (8 float16 / bfloat16: two Philox calls; 4 float: one; 2 double: one, half its words).
// The rest - the last n mod N elements, and all of them for a misaligned view - go by
// groups: item j computes group j's bits and moves its elements one at a time. Launch
// ceil(n / N) threads; any grid is correct.
#define DROPOUT(T, A, SFX)                                                                 \
    extern "C" __global__ void dropout_##SFX(const T* __restrict__ x, T* __restrict__ y,  \
                                             long long n, long long key0, long long key1,  \
                                             long long threshold, A scale) {               \
        constexpr int N = Vec16<T>::N;                                                     \
        const unsigned long long limit = (unsigned long long)threshold;                    \
        const unsigned int k0 = (unsigned int)key0, k1 = (unsigned int)key1;               \
        const long long vectors = vec16_aligned(x, y) ? n / N : 0;                         \
        GRID_STRIDE_LOOP(t, vectors) {                                                     \
            const unsigned int bits = keep_bits<N>(t * N, k0, k1, limit);                  \
            const Vec16<T> in = load_vec16(x + t * N);                                     \
            Vec16<T> out;                                                                  \
            _Pragma("unroll") for (int k = 0; k < N; ++k)                                  \
                store_acc(&out.v[k], (bits >> k) & 1u ? to_acc(in.v[k]) * scale : A(0));  \
            store_vec16(y + t * N, out);                                                   \
        }                                                                                  \
        const long long start = vectors * N, first_group = start / 4;                      \
        GRID_STRIDE_LOOP(r, (n + 3) / 4 - first_group) {                                   \
            const long long j = first_group + r;                                           \
            const unsigned int bits = keep_bits4(j, k0, k1, limit);                        \
            _Pragma("unroll") for (int q = 0; q < 4; ++q) {                                \
                const long long i = 4 * j + q;                                             \
                if (i >= start && i < n)                                                   \
                    store_acc(y + i, (bits >> q) & 1u ? load_acc(x + i) * scale : A(0));   \
            }                                                                              \
        }                                                                                  \
    }

DROPOUT(__half, float, f16)
DROPOUT(__nv_bfloat16, float, bf16)
DROPOUT(float, float, f32)
DROPOUT(double, double, f64)
