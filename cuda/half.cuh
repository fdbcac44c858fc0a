// float16 storage with float32 arithmetic: loads return the accumulation type
// (float for __half and float, double for double), stores round back.
// Only the cuda_fp16.h subset __half / __half2float / __float2half is used, so
// the CPU emulator (which defines GPUOPS_EMU and its own __half) runs it too.
#ifndef GPUOPS_EMU
#include <cuda_fp16.h>
#endif

__device__ __forceinline__ float load_acc(const float* p) { return *p; }
__device__ __forceinline__ double load_acc(const double* p) { return *p; }
__device__ __forceinline__ float load_acc(const __half* p) { return __half2float(*p); }

__device__ __forceinline__ void store_acc(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_acc(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_acc(__half* p, float v) { *p = __float2half(v); }
