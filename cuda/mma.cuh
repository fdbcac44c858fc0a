// Tensor-core helpers shared by the 16-bit kernels (cuda/matmul.cu, cuda/attention.cu),
// over the storage type T: __half (float16) or __nv_bfloat16 (bfloat16).
#include "half.cuh"

// The PTX instructions mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32
// (sm_80+), used without <mma.h> so that NVRTC needs no CUDA headers. One warp computes
// D(16x8) = A(16x16) B(16x8) + C, float32 accumulation; lane l, with g = l / 4 and
// t = l % 4, holds (PTX ISA, "Matrix fragments for mma.m16n8k16 with floating point type";
// the same layout for both input types; two 16-bit values per 32-bit register, the lower
// index in the low 16 bits):
//   a[i] = A[g + 8 (i % 2)][2t + 8 (i / 2) + {0, 1}]   i < 4
//   b[i] = B[2t + 8 i + {0, 1}][g]                      i < 2
//   c[i] = C[g + 8 (i / 2)][2t + i % 2]                 i < 4
// The CPU emulator models both instructions (gpuops/emu/cuda_emu.h).
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const unsigned (&a)[4],
                                             const unsigned (&b)[2]);

template <>
__device__ __forceinline__ void mma_m16n8k16<__half>(float (&c)[4], const unsigned (&a)[4],
                                                     const unsigned (&b)[2]) {
#if defined(GPUOPS_EMU)
    gpuops_emu_mma_m16n8k16_f32_f16(c, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // the launcher reports tensor_cores False below sm_80: never launched
#endif
}

template <>
__device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(float (&c)[4],
                                                            const unsigned (&a)[4],
                                                            const unsigned (&b)[2]) {
#if defined(GPUOPS_EMU)
    gpuops_emu_mma_m16n8k16_f32_bf16(c, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // the launcher reports tensor_cores False below sm_80: never launched
#endif
}

// Two consecutive 16-bit values (p 4-byte aligned) as one 32-bit register.
template <typename T>
__device__ __forceinline__ unsigned half_pair(const T* p) {
    static_assert(sizeof(T) == 2, "a pair of 16-bit values");
#ifdef GPUOPS_EMU
    unsigned bits;
    memcpy(&bits, p, sizeof(bits));
    return bits;
#else
    return *reinterpret_cast<const unsigned*>(p);
#endif
}

// Two floats rounded (to nearest even) to T as one register (lo in the low 16 bits).
template <typename T>
__device__ __forceinline__ unsigned half_pack(float lo, float hi) {
    T h[2];
    store_acc(h, lo);
    store_acc(h + 1, hi);
#ifdef GPUOPS_EMU
    return half_pair(h);
#else
    return (unsigned)h[0].bits | ((unsigned)h[1].bits << 16);
#endif
}
