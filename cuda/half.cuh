// float16 storage with float32 arithmetic: loads return the accumulation type
// (float for __half and float, double for double), stores round back.
//
// No CUDA header is needed: NVRTC gets the storage type and the two conversions from
// here, as the PTX conversions cuda_fp16.h uses (cvt.f32.f16 is exact; cvt.rn.f16.f32
// rounds to nearest even, past 65504 to ±inf). So the kernels compile where CuPy finds
// no CUDA toolkit headers. The CPU emulator (GPUOPS_EMU) defines __half as _Float16.
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
#endif

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ auto load_acc(const T* p) { return to_acc(*p); }

__device__ __forceinline__ void store_acc(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_acc(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_acc(__half* p, float v) { *p = __float2half(v); }
