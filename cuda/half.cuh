// 16-bit storage with float32 arithmetic: loads return the accumulation type
// (float for __half, __nv_bfloat16 and float, double for double), stores round back once.
//
// No CUDA header is needed: NVRTC gets the storage types and their conversions from
// here, as the PTX conversions cuda_fp16.h and cuda_bf16.h use, so the kernels compile
// where CuPy finds no CUDA toolkit headers.
// - float16: cvt.f32.f16 is exact; cvt.rn.f16.f32 rounds to nearest even, past 65504 to ±inf.
// - bfloat16 (float32's upper 16 bits: 8 exponent bits, 7 fraction bits): widening is
//   exact, a 16-bit shift (mov.b32 {0, h}, as cuda_bf16.h does before sm_90's
//   cvt.f32.bf16); cvt.rn.bf16.f32 (sm_80+) rounds to nearest even and gives NaN for
//   NaN. Below sm_80 the same rounding in integer arithmetic (NaN -> 0x7FFF, the
//   canonical NaN of cuda_bf16.h's fallback).
// The CPU emulator (GPUOPS_EMU) defines __half as _Float16 and __nv_bfloat16 as a 16-bit
// struct with the same conversions, bit for bit (gpuops/emu/cuda_emu.h).
#ifndef GPUOPS_EMU
struct __align__(2) __half {
    unsigned short bits;
};
__device__ __forceinline__ float __half2float(__half h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
}
__device__ __forceinline__ __half __float2half(float f) {
    __half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
    return h;
}

struct __align__(2) __nv_bfloat16 {
    unsigned short bits;
};
typedef __nv_bfloat16 nv_bfloat16;
__device__ __forceinline__ float __bfloat162float(__nv_bfloat16 h) {
    float f;
    asm("mov.b32 %0, {0, %1};" : "=f"(f) : "h"(h.bits));
    return f;
}
__device__ __forceinline__ __nv_bfloat16 __float2bfloat16(float f) {
    __nv_bfloat16 h;
#if __CUDA_ARCH__ >= 800
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
#else
    const unsigned int u = __float_as_uint(f);
    h.bits = (u & 0x7fffffffu) > 0x7f800000u
                 ? (unsigned short)0x7fffu
                 : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
    return h;
}
#endif

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ auto load_acc(const T* p) { return to_acc(*p); }

__device__ __forceinline__ void store_acc(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_acc(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_acc(__half* p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void store_acc(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

// ---- 16-byte vectors --------------------------------------------------------------
// Vec16<T>: the N = 16 / sizeof(T) consecutive elements (8 float16 or bfloat16, 4 float,
// 2 double) that one 128-bit access moves (LDG.128 / STG.128, the widest a thread makes).
// Memory-bound kernels move every element as part of one: for the 16-bit dtypes a scalar
// access is 2 bytes per lane (64 bytes per warp request), a Vec16 512.
template <typename T>
struct alignas(16) Vec16 {
    static constexpr int N = 16 / (int)sizeof(T);
    T v[N];
};

template <typename T>
__device__ __forceinline__ Vec16<T> load_vec16(const T* p) {
    return *reinterpret_cast<const Vec16<T>*>(p);
}
template <typename T>
__device__ __forceinline__ void store_vec16(T* p, const Vec16<T>& v) {
    *reinterpret_cast<Vec16<T>*>(p) = v;
}

// Whether every pointer starts on a 16-byte boundary: every allocation does (cudaMalloc
// aligns to 256 bytes, NumPy to 16), a view need not (x[1:] of a float16 array: 2 bytes in).
__device__ __forceinline__ bool vec16_aligned() { return true; }
template <typename... P>
__device__ __forceinline__ bool vec16_aligned(const void* p, P... rest) {
    return ((unsigned long long)p & 15ull) == 0 && vec16_aligned(rest...);
}

// out[i] = f(in_1[i], ..., in_k[i]) for 0 <= i < n: out and the inputs C-contiguous, of
// storage type T; f computes in the accumulation type, rounded once on store (store_acc).
// When every array is aligned (vec16_aligned), grid-stride item t moves elements
// [N t, N t + N) of each array as one Vec16 (N values of f, unrolled); the last n mod N
// elements, and all n when some array is not aligned or VECTORS is false, go one at a time
// in a second grid-stride loop (lanes on consecutive elements: still coalesced). The same
// f on the same values either way, so the result does not depend on the path. Any grid is
// correct; ceil(n / N) threads give each one vector (gpuops/ops/elementwise.py:
// launch_vectors). 64-bit indices, as GRID_STRIDE_LOOP (gpuops.cuh).
template <typename T, typename F, typename... V>
__device__ __forceinline__ void map_vector16(T* out, const F& f, const V&... in) {
    Vec16<T> result;
#pragma unroll
    for (int k = 0; k < Vec16<T>::N; ++k) store_acc(&result.v[k], f(to_acc(in.v[k])...));
    store_vec16(out, result);
}

template <bool VECTORS = true, typename T, typename F, typename... In>
__device__ __forceinline__ void map_elements(T* __restrict__ out, long long n, const F& f,
                                             const In* __restrict__... in) {
    constexpr int N = Vec16<T>::N;
    const long long stride = (long long)blockDim.x * gridDim.x;
    const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long vectors = VECTORS && vec16_aligned(out, in...) ? n / N : 0;
    for (long long t = first; t < vectors; t += stride)
        map_vector16(out + t * N, f, load_vec16(in + t * N)...);
    for (long long i = vectors * N + first; i < n; i += stride)
        store_acc(out + i, f(load_acc(in + i)...));
}
