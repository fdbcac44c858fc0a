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

// ---- data movement for the tensor cores (sm_80+) ---------------------------------------
// The 32-bit shared-window address of a generic pointer into shared memory (what the
// .shared forms of ldmatrix and cp.async take); NVRTC has __cvta_generic_to_shared.
#ifndef GPUOPS_EMU
__device__ __forceinline__ unsigned shared_address(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
#endif

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16: the warp loads 8x8 matrices of
// 16-bit values from shared memory. For x4, lane l gives `row`, the address of row l % 8 of
// matrix l / 8 (16 bytes, 16-byte aligned); for x2 lanes 0..15 do (the other lanes'
// addresses are ignored). r[i] receives matrix i's fragment: lane l holds row l / 4,
// columns 2 (l % 4) + {0, 1} (the lower column in the low 16 bits); .trans the same of the
// transposed matrix (row 2 (l % 4) + {0, 1}, column l / 4 of the stored one). These are
// the A (x4, row-major 16x16) and B (x2, or x4 for two n8 tiles) fragments of
// mma_m16n8k16 read straight from a tile. The emulator models them lane by lane
// (gpuops/emu/cuda_emu.h: each lane reads its own 16-byte row, as the hardware's phases do).
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row) {
#if defined(GPUOPS_EMU)
    gpuops_emu_ldmatrix(r, 4, false, row);
#elif __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)) : "memory");
#else
    __trap();
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) {
#if defined(GPUOPS_EMU)
    gpuops_emu_ldmatrix(r, 4, true, row);
#elif __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)) : "memory");
#else
    __trap();
#endif
}

__device__ __forceinline__ void ldmatrix_x2(unsigned (&r)[2], const void* row) {
#if defined(GPUOPS_EMU)
    gpuops_emu_ldmatrix(r, 2, false, row);
#elif __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(shared_address(row)) : "memory");
#else
    __trap();
#endif
}

__device__ __forceinline__ void ldmatrix_x2_trans(unsigned (&r)[2], const void* row) {
#if defined(GPUOPS_EMU)
    gpuops_emu_ldmatrix(r, 2, true, row);
#elif __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(shared_address(row)) : "memory");
#else
    __trap();
#endif
}

// cp.async.cg.shared.global [smem_dst], [gmem_src], 16, src_bytes: an asynchronous copy of
// src_bytes (0..16) bytes global -> shared, the rest of the 16 destination bytes zero-filled
// (src_bytes 0: nothing is read, gmem_src need not be valid; both 16-byte aligned). The
// copies a thread issued since its last cp_async_commit() form one group; after
// cp_async_wait<N>() every group of the thread but the N most recently committed has landed
// in shared memory (for this thread: a __syncthreads() after it makes them visible to the
// block). Until then the destination holds what it held before (the emulator performs the
// copies only at the wait, so a kernel that reads too early sees stale data or NaN).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes) {
#if defined(GPUOPS_EMU)
    gpuops_emu_cp_async(smem_dst, gmem_src, src_bytes);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :: "r"(shared_address(smem_dst)), "l"(gmem_src), "r"(src_bytes) : "memory");
#else
    __trap();
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(GPUOPS_EMU)
    gpuops_emu_cp_async_commit();
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#else
    __trap();
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    static_assert(N >= 0, "cp.async.wait_group N: N >= 0");
#if defined(GPUOPS_EMU)
    gpuops_emu_cp_async_wait(N);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
#else
    __trap();
#endif
}

// TF32 (sm_80+): cvt.rna.tf32.f32 rounds a float to 10 fraction bits, to nearest with ties
// away from zero; the result is a float bit pattern with the low 13 bits zero (inf and NaN
// are not rounded, only masked, in the emulator's model).
__device__ __forceinline__ unsigned to_tf32(float x) {
#if defined(GPUOPS_EMU)
    return gpuops_emu_to_tf32(x);
#elif __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#else
    __trap();
    return 0u;
#endif
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: D(16x8) = A(16x8) B(8x8) + C, one
// value per register (PTX ISA, "Matrix fragments for mma.m16n8k8", .tf32): lane l, with
// g = l / 4 and t = l % 4, holds
//   a[i] = A[g + 8 (i % 2)][t + 4 (i / 2)]   i < 4
//   b[i] = B[t + 4 i][g]                      i < 2
//   c[i] = C[g + 8 (i / 2)][2t + i % 2]       i < 4   (as mma_m16n8k16)
// The operands are to_tf32 results (the low 13 bits of a register are not used).
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&c)[4], const unsigned (&a)[4],
                                                 const unsigned (&b)[2]) {
#if defined(GPUOPS_EMU)
    gpuops_emu_mma_m16n8k8_f32_tf32(c, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}
