// Embedding: the table lookup y[p, :] = table[ids[p], :] and its gradient wrt the table.
// Launched by gpuops/ops/embedding.py. One extern "C" kernel per dtype (f16 / bf16 / f32 / f64).
//
// An id outside [0, rows) is never used as an index: its output row is NaN, and the
// gradient leaves it out (the host sorts the ids; no segment holds it).
#include "gpuops.cuh"
#include "half.cuh"

__device__ __forceinline__ float quiet_nan_of(float) { return nanf(""); }
__device__ __forceinline__ double quiet_nan_of(double) { return nan(""); }
__device__ __forceinline__ __half quiet_nan_of(__half) { return __float2half(nanf("")); }
__device__ __forceinline__ __nv_bfloat16 quiet_nan_of(__nv_bfloat16) {
    return __float2bfloat16(nanf(""));
}

// 16 bytes of T: rows whose size is a multiple of 16 bytes (and 16-byte aligned arrays,
// checked by the host) are copied a word at a time (128-bit loads and stores).
template <typename T>
struct __align__(16) Word {
    T v[16 / sizeof(T)];
};

template <typename T>
__device__ __forceinline__ Word<T> quiet_nan_of(Word<T>) {
    Word<T> w;
    for (int k = 0; k < (int)(16 / sizeof(T)); ++k) w.v[k] = quiet_nan_of(T());
    return w;
}

// y (n_ids, width) = table (rows, width)[ids] in items E (elements, or 16-byte words):
// a grid-stride loop over the n_ids * width items, consecutive threads on consecutive
// items of a row (coalesced). The (row, column) of the flat index is divided once per
// thread and then advanced by the stride, without a division per item.
template <typename E>
__device__ __forceinline__ void gather_rows(const long long* __restrict__ ids,
                                            const E* __restrict__ table, E* __restrict__ y,
                                            long long n_ids, long long rows, long long width) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long step_r = stride / width, step_c = stride - step_r * width;
    long long r = first / width, c = first - r * width;
    while (r < n_ids) {
        const long long id = ids[r];
        y[r * width + c] = (id >= 0 && id < rows) ? table[id * width + c] : quiet_nan_of(E());
        r += step_r;
        c += step_c;
        if (c >= width) {
            c -= width;
            ++r;
        }
    }
}

// gx (rows, cols): gx[v, c] = sum of gy[order[k], c] for k in [starts[v], starts[v + 1]),
// in that order (order: the positions sorted by id, stably), one thread per (v, c), A the
// accumulation type. No atomics: bitwise repeatable; table rows never seen get 0.
template <typename T>
__device__ __forceinline__ void sum_segments(const long long* __restrict__ order,
                                             const long long* __restrict__ starts,
                                             const T* __restrict__ gy, T* __restrict__ gx,
                                             long long rows, long long cols) {
    GRID_STRIDE_LOOP(i, rows * cols) {
        const long long v = i / cols, c = i - v * cols;
        decltype(load_acc(gy)) acc = 0;  // the accumulation type (float for 16-bit T)
        for (long long k = starts[v]; k < starts[v + 1]; ++k)
            acc += load_acc(gy + order[k] * cols + c);
        store_acc(gx + i, acc);
    }
}

#define EMBEDDING(T, SFX)                                                                  \
    extern "C" __global__ void embedding_##SFX(const long long* __restrict__ ids,          \
                                               const T* __restrict__ table,               \
                                               T* __restrict__ y, long long n_ids,         \
                                               long long rows, long long cols) {           \
        gather_rows<T>(ids, table, y, n_ids, rows, cols);                                  \
    }                                                                                      \
    extern "C" __global__ void embedding_vec_##SFX(const long long* __restrict__ ids,      \
                                                   const T* __restrict__ table,           \
                                                   T* __restrict__ y, long long n_ids,     \
                                                   long long rows, long long words) {      \
        gather_rows<Word<T>>(ids, reinterpret_cast<const Word<T>*>(table),                 \
                             reinterpret_cast<Word<T>*>(y), n_ids, rows, words);           \
    }                                                                                      \
    extern "C" __global__ void embedding_wrt_x2_##SFX(                                     \
        const long long* __restrict__ order, const long long* __restrict__ starts,         \
        const T* __restrict__ gy, T* __restrict__ gx, long long rows, long long cols) {    \
        sum_segments<T>(order, starts, gy, gx, rows, cols);                                \
    }

EMBEDDING(__half, f16)
EMBEDDING(__nv_bfloat16, bf16)
EMBEDDING(float, f32)
EMBEDDING(double, f64)
