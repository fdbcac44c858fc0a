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
