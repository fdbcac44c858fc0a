// gpuops CPU emulator: the CUDA device-code surface as C++20, prepended (g++ -include)
// to a cuda/<family>.cu source so that its kernels compile into a shared library.
//
// Execution model (see runtime.cpp): one OS thread per CUDA thread of a block, the
// blocks of a grid one after another. So
//   * __shared__ variables are function-local statics (one block uses them at a time),
//     kept in the section "gpuops_shared" that the launcher fills with 0xFF bytes (a
//     NaN in every float format) before each block; `extern __shared__` arrays alias
//     one dynamic buffer, filled the same way for the launch's shared_mem bytes;
//   * threadIdx / blockIdx are thread-local, blockDim / gridDim are per launch;
//   * __syncthreads, warp shuffles and votes are real barriers in the runtime
//     (futex sleeps), which also detects divergent barriers, reads of exited lanes
//     and deadlocks; an error makes every thread of the block leave the kernel
//     (longjmp back to the thread's entry) and the launch report it.
//   * Intrinsics compute exactly (__expf is expf, __fdividef is a true division) and
//     the library is built with -ffp-contract=off: no fused multiply-adds but fmaf().
// Only the subset listed in the developers' guide is promised; extend as kernels need.
#pragma once

#include <atomic>
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <source_location>
#include <type_traits>
#include <utility>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif

#define GPUOPS_EMU 1

// ---- runtime interface (runtime.cpp, loaded before the family libraries) ------------
extern "C" {
struct gpuops_emu_launch_spec;
int gpuops_emu_rt_launch(struct gpuops_emu_launch_spec* spec);
int gpuops_emu_rt_syncthreads(const char* file, const char* func, unsigned line, unsigned column,
                              int predicate, int* reduced);
int gpuops_emu_rt_warp(int op, unsigned mask, unsigned long long* value, int arg, int width,
                       const char* file, const char* func, unsigned line, unsigned column);
int gpuops_emu_rt_aborted(void);
void gpuops_emu_rt_fail(const char* message);
}

// ---- qualifiers -----------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
#ifdef __SANITIZE_ADDRESS__
// AddressSanitizer puts red zones around ordinary statics (not around ones in a named
// section), so under ASan static shared memory is not NaN-filled but bounds-checked.
#define __shared__ static
#else
#define __shared__ static __attribute__((section("gpuops_shared")))
#endif
// `extern __shared__` is rewritten to this by the loader (`extern static` is not C++):
// the array becomes a reference to a symbol that the loader aliases to
// gpuops_emu_dynamic_shared.
#define __gpuops_emu_extern_shared extern

// ---- built-in variables and vector types --------------------------------------------
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

static __thread uint3 threadIdx;
static __thread uint3 blockIdx;
static dim3 blockDim;
static dim3 gridDim;
static constexpr int warpSize = 32;

#define GPUOPS_EMU_VEC2(T, N, A)                                                        \
    struct alignas(A) N##2 { T x, y; };                                                 \
    static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define GPUOPS_EMU_VEC3(T, N)                                                           \
    struct N##3 { T x, y, z; };                                                         \
    static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define GPUOPS_EMU_VEC4(T, N, A)                                                        \
    struct alignas(A) N##4 { T x, y, z, w; };                                           \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
#define GPUOPS_EMU_VECS(T, N, A2, A4) GPUOPS_EMU_VEC2(T, N, A2) GPUOPS_EMU_VEC3(T, N) \
    GPUOPS_EMU_VEC4(T, N, A4)

GPUOPS_EMU_VECS(float, float, 8, 16)
GPUOPS_EMU_VECS(double, double, 16, 16)
GPUOPS_EMU_VECS(int, int, 8, 16)
GPUOPS_EMU_VEC2(unsigned int, uint, 8)
GPUOPS_EMU_VEC4(unsigned int, uint, 16)
GPUOPS_EMU_VECS(long long, longlong, 16, 16)
GPUOPS_EMU_VECS(unsigned long long, ulonglong, 16, 16)
GPUOPS_EMU_VECS(short, short, 4, 8)
GPUOPS_EMU_VECS(unsigned short, ushort, 4, 8)
GPUOPS_EMU_VECS(signed char, char, 2, 4)
GPUOPS_EMU_VECS(unsigned char, uchar, 2, 4)
static inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) {
    return uint3{x, y, z};
}

// ---- float16: _Float16 is IEEE binary16 like __half; arithmetic rounds each result -----
typedef _Float16 __half;
typedef __half half;
struct alignas(4) __half2 {
    __half x, y;
};
typedef __half2 half2;
static inline __half __float2half(float f) { return (__half)f; }
static inline __half __float2half_rn(float f) { return (__half)f; }
static inline __half __double2half(double d) { return (__half)d; }
static inline float __half2float(__half h) { return (float)h; }
static inline __half __int2half_rn(int i) { return (__half)i; }
static inline int __half2int_rz(__half h) { return (int)(float)h; }
static inline unsigned short __half_as_ushort(__half h) {
    unsigned short u;
    std::memcpy(&u, &h, 2);
    return u;
}
static inline __half __ushort_as_half(unsigned short u) {
    __half h;
    std::memcpy(&h, &u, 2);
    return h;
}
static inline __half __hadd(__half a, __half b) { return (__half)((float)a + (float)b); }
static inline __half __hsub(__half a, __half b) { return (__half)((float)a - (float)b); }
static inline __half __hmul(__half a, __half b) { return (__half)((float)a * (float)b); }
static inline __half __hdiv(__half a, __half b) { return (__half)((float)a / (float)b); }
static inline __half __hfma(__half a, __half b, __half c) {
    return (__half)std::fma((float)a, (float)b, (float)c);
}
static inline __half __hneg(__half a) { return -a; }
static inline __half __habs(__half a) { return (__half)std::fabs((float)a); }
static inline __half __hmax(__half a, __half b) { return (float)a > (float)b ? a : b; }
static inline __half __hmin(__half a, __half b) { return (float)a < (float)b ? a : b; }
static inline bool __heq(__half a, __half b) { return (float)a == (float)b; }
static inline bool __hne(__half a, __half b) { return (float)a != (float)b; }
static inline bool __hlt(__half a, __half b) { return (float)a < (float)b; }
static inline bool __hle(__half a, __half b) { return (float)a <= (float)b; }
static inline bool __hgt(__half a, __half b) { return (float)a > (float)b; }
static inline bool __hge(__half a, __half b) { return (float)a >= (float)b; }
static inline bool __hisnan(__half a) { return std::isnan((float)a); }
static inline int __hisinf(__half a) {
    const float f = a;
    return std::isinf(f) ? (f > 0 ? 1 : -1) : 0;
}
static inline __half hexp(__half a) { return (__half)std::exp((float)a); }
static inline __half hlog(__half a) { return (__half)std::log((float)a); }
static inline __half hsqrt(__half a) { return (__half)std::sqrt((float)a); }
static inline __half hrsqrt(__half a) { return (__half)(1.0f / std::sqrt((float)a)); }
static inline __half2 __halves2half2(__half a, __half b) { return __half2{a, b}; }
static inline __half2 __float2half2_rn(float f) { return __half2{(__half)f, (__half)f}; }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2{(__half)a, (__half)b}; }
static inline __half2 __float22half2_rn(float2 f) { return __half2{(__half)f.x, (__half)f.y}; }
static inline float2 __half22float2(__half2 h) { return float2{(float)h.x, (float)h.y}; }
static inline float __low2float(__half2 h) { return (float)h.x; }
static inline float __high2float(__half2 h) { return (float)h.y; }
static inline __half __low2half(__half2 h) { return h.x; }
static inline __half __high2half(__half2 h) { return h.y; }
static inline __half2 __hadd2(__half2 a, __half2 b) {
    return __half2{__hadd(a.x, b.x), __hadd(a.y, b.y)};
}
static inline __half2 __hmul2(__half2 a, __half2 b) {
    return __half2{__hmul(a.x, b.x), __hmul(a.y, b.y)};
}

// ---- bfloat16: storage only, as cuda/half.cuh declares it for NVRTC (g++ 12 has no ------
// bfloat16 arithmetic). Widening is exact (the upper 16 bits of a float32); narrowing
// rounds to nearest even like cvt.rn.bf16.f32, overflow to ±inf, NaN to 0x7FFF.
struct alignas(2) __nv_bfloat16 {
    unsigned short bits;
};
typedef __nv_bfloat16 nv_bfloat16;
static inline float __bfloat162float(__nv_bfloat16 h) {
    const unsigned int u = (unsigned int)h.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline __nv_bfloat16 __float2bfloat16(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fffu};
    return __nv_bfloat16{(unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }

// ---- math: float overloads (exp(float) must be expf, not the double exp) ---------------
using std::abs; using std::acos; using std::acosh; using std::asin; using std::asinh;
using std::atan; using std::atan2; using std::atanh; using std::cbrt; using std::ceil;
using std::copysign; using std::cos; using std::cosh; using std::erf; using std::erfc;
using std::exp; using std::exp2; using std::expm1; using std::fabs; using std::fdim;
using std::floor; using std::fma; using std::fmax; using std::fmin; using std::fmod;
using std::frexp; using std::hypot; using std::ilogb; using std::isfinite; using std::isinf;
using std::isnan; using std::ldexp; using std::lgamma; using std::llrint; using std::llround;
using std::log; using std::log10; using std::log1p; using std::log2; using std::logb;
using std::lrint; using std::lround; using std::modf; using std::nearbyint; using std::nextafter;
using std::pow; using std::remainder; using std::rint; using std::round; using std::scalbn;
using std::signbit; using std::sin; using std::sinh; using std::sqrt; using std::tan;
using std::tanh; using std::tgamma; using std::trunc;

// min/max as CUDA's overloads, for any pair of arithmetic types (the common type).
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
static inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point_v<C>) return std::fmin(C(a), C(b));
    else return C(a) < C(b) ? C(a) : C(b);
}
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
static inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point_v<C>) return std::fmax(C(a), C(b));
    else return C(a) > C(b) ? C(a) : C(b);
}

// CUDA intrinsics, computed exactly (no approximation, no fused multiply-add).
// glibc declares __expf & co. itself (and exp10f, sincosf): map CUDA's names by macro.
#define __expf(x) ::expf(x)
#define __exp10f(x) ::exp10f(x)
#define __logf(x) ::logf(x)
#define __log2f(x) ::log2f(x)
#define __log10f(x) ::log10f(x)
#define __sinf(x) ::sinf(x)
#define __cosf(x) ::cosf(x)
#define __tanf(x) ::tanf(x)
#define __powf(x, y) ::powf(x, y)
#define __sincosf(x, s, c) ::sincosf(x, s, c)
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
static inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
static inline float __fsqrt_rn(float x) { return std::sqrt(x); }
static inline double __dsqrt_rn(double x) { return std::sqrt(x); }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline double __drcp_rn(double x) { return 1.0 / x; }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float fdividef(float a, float b) { return a / b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
static inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
static inline float __saturatef(float x) { return x != x ? 0.0f : std::fmin(std::fmax(x, 0.0f), 1.0f); }
static inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
static inline double normcdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752440); }
static inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)std::floor(x); }
static inline int __float2int_ru(float x) { return (int)std::ceil(x); }
static inline unsigned __float2uint_rn(float x) { return (unsigned)std::nearbyint(x); }
static inline long long __float2ll_rn(float x) { return (long long)std::nearbyint(x); }
static inline long long __double2ll_rn(double x) { return (long long)std::nearbyint(x); }
static inline int __double2int_rn(double x) { return (int)std::nearbyint(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __ll2float_rn(long long x) { return (float)x; }
static inline double __ll2double_rn(long long x) { return (double)x; }
static inline float __double2float_rn(double x) { return (float)x; }
template <typename To, typename From>
static inline To gpuops_emu_bits(From v) {
    static_assert(sizeof(To) == sizeof(From));
    To t;
    std::memcpy(&t, &v, sizeof t);
    return t;
}
static inline int __float_as_int(float x) { return gpuops_emu_bits<int>(x); }
static inline unsigned __float_as_uint(float x) { return gpuops_emu_bits<unsigned>(x); }
static inline float __int_as_float(int x) { return gpuops_emu_bits<float>(x); }
static inline float __uint_as_float(unsigned x) { return gpuops_emu_bits<float>(x); }
static inline long long __double_as_longlong(double x) { return gpuops_emu_bits<long long>(x); }
static inline double __longlong_as_double(long long x) { return gpuops_emu_bits<double>(x); }
static inline int __double2hiint(double x) { return (int)(gpuops_emu_bits<unsigned long long>(x) >> 32); }
static inline int __double2loint(double x) { return (int)gpuops_emu_bits<unsigned long long>(x); }
static inline double __hiloint2double(int hi, int lo) {
    return gpuops_emu_bits<double>(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo);
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
static inline int __mul24(int a, int b) { return (int)((long long)(a << 8 >> 8) * (b << 8 >> 8)); }
static inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline long long __mul64hi(long long a, long long b) {
    return (long long)(((__int128)a * b) >> 64);
}
template <typename T> static inline T __ldg(const T* p) { return *p; }
template <typename T> static inline T __ldcg(const T* p) { return *p; }
template <typename T> static inline T __ldca(const T* p) { return *p; }
template <typename T> static inline T __ldcs(const T* p) { return *p; }
template <typename T> static inline T __ldlu(const T* p) { return *p; }
template <typename T> static inline void __stcg(T* p, T v) { *p = v; }
template <typename T> static inline void __stcs(T* p, T v) { *p = v; }
template <typename T> static inline void __stwt(T* p, T v) { *p = v; }

// ---- leaving a thread on error ----------------------------------------------------
// Set by the thread's entry; a failed barrier, shuffle, bounds check or assert jumps
// back there (no C++ exception: the sanitizer hooks are declared nothrow).
static __thread jmp_buf* gpuops_emu_exit_point;

[[noreturn]] static void gpuops_emu_leave() { longjmp(*gpuops_emu_exit_point, 1); }

[[noreturn]] static void gpuops_emu_fail(const char* message) {
    gpuops_emu_rt_fail(message);
    gpuops_emu_leave();
}

#define GPUOPS_EMU_SITE std::source_location site = std::source_location::current()
#define GPUOPS_EMU_WHERE site.file_name(), site.function_name(), site.line(), site.column()

// ---- barriers, warp exchange and votes -------------------------------------------------
static inline void __syncthreads(GPUOPS_EMU_SITE) {
    if (gpuops_emu_rt_syncthreads(GPUOPS_EMU_WHERE, 0, nullptr)) gpuops_emu_leave();
}
static inline int __syncthreads_count(int predicate, GPUOPS_EMU_SITE) {
    int n = 0;
    if (gpuops_emu_rt_syncthreads(GPUOPS_EMU_WHERE, predicate != 0, &n)) gpuops_emu_leave();
    return n;
}
static inline int __syncthreads_or(int predicate, GPUOPS_EMU_SITE) {
    return __syncthreads_count(predicate, site) != 0;
}
static inline int __syncthreads_and(int predicate, GPUOPS_EMU_SITE) {
    return __syncthreads_count(!predicate, site) == 0;
}

enum { GPUOPS_EMU_SHFL_IDX, GPUOPS_EMU_SHFL_UP, GPUOPS_EMU_SHFL_DOWN, GPUOPS_EMU_SHFL_XOR,
       GPUOPS_EMU_BALLOT, GPUOPS_EMU_SYNCWARP, GPUOPS_EMU_ACTIVEMASK };

template <typename T>
static inline T gpuops_emu_shfl(int op, unsigned mask, T var, int arg, int width,
                                const std::source_location& site) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>,
                  "warp shuffles move at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    if (gpuops_emu_rt_warp(op, mask, &bits, arg, width, GPUOPS_EMU_WHERE)) gpuops_emu_leave();
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}
template <typename T>
static inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                            GPUOPS_EMU_SITE) {
    return gpuops_emu_shfl(GPUOPS_EMU_SHFL_IDX, mask, var, src_lane, width, site);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                               GPUOPS_EMU_SITE) {
    return gpuops_emu_shfl(GPUOPS_EMU_SHFL_UP, mask, var, (int)delta, width, site);
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                                 GPUOPS_EMU_SITE) {
    return gpuops_emu_shfl(GPUOPS_EMU_SHFL_DOWN, mask, var, (int)delta, width, site);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                                GPUOPS_EMU_SITE) {
    return gpuops_emu_shfl(GPUOPS_EMU_SHFL_XOR, mask, var, lane_mask, width, site);
}
static inline unsigned __ballot_sync(unsigned mask, int predicate, GPUOPS_EMU_SITE) {
    return gpuops_emu_shfl<unsigned>(GPUOPS_EMU_BALLOT, mask, predicate != 0, 0, warpSize, site);
}
static inline int __any_sync(unsigned mask, int predicate, GPUOPS_EMU_SITE) {
    return __ballot_sync(mask, predicate, site) != 0;
}
static inline int __all_sync(unsigned mask, int predicate, GPUOPS_EMU_SITE) {
    return __ballot_sync(mask, !predicate, site) == 0;
}
static inline void __syncwarp(unsigned mask = 0xffffffffu, GPUOPS_EMU_SITE) {
    gpuops_emu_shfl<unsigned>(GPUOPS_EMU_SYNCWARP, mask, 0u, 0, warpSize, site);
}
// The lanes of the warp that have not exited (not divergence-aware).
static inline unsigned __activemask(GPUOPS_EMU_SITE) {
    return gpuops_emu_shfl<unsigned>(GPUOPS_EMU_ACTIVEMASK, 0xffffffffu, 0u, 0, warpSize, site);
}

// ---- tensor cores ----------------------------------------------------------------------
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, which cuda/matmul.cu issues as inline
// PTX on a GPU: D(16x8) = A(16x16) B(16x8) + C over the warp. Lane l (g = l / 4,
// t = l % 4) holds a[i] = A[g + 8(i % 2)][2t + 8(i / 2) + {0, 1}], b[i] = B[2t + 8i + {0, 1}][g]
// (two halves per register, the lower index in the low 16 bits) and
// c[i] = C[g + 8(i / 2)][2t + i % 2] (PTX ISA, "Matrix fragments for mma.m16n8k16").
// The lanes post their registers in a block-shared table, meet at __syncwarp, and each
// reads the A rows and B columns of its four results (two warp rendezvous per mma, not
// one shuffle per register). Products are summed in float in k order (the hardware's
// order and rounding inside one mma are unspecified).
// The bfloat16 twin (.bf16.bf16.f32, same fragments) differs only in how a 16-bit value
// widens: both widen exactly to float, every product of two is exact in float (11 + 11
// or 8 + 8 significant bits), and the sum runs in the same k order.
static inline void gpuops_emu_mma_m16n8k16_f32(float (&c)[4], const unsigned (&a)[4],
                                               const unsigned (&b)[2], bool bf16,
                                               std::source_location site) {
    __shared__ unsigned posted[32][32][6];  // [warp][lane][a0 a1 a2 a3 b0 b1]
    const unsigned linear = threadIdx.x + threadIdx.y * blockDim.x
                          + threadIdx.z * blockDim.x * blockDim.y;
    const int warp = linear / 32, lane = linear % 32, g = lane / 4, t = lane % 4;
    for (int q = 0; q < 4; ++q) posted[warp][lane][q] = a[q];
    posted[warp][lane][4] = b[0];
    posted[warp][lane][5] = b[1];
    __syncwarp(0xffffffffu, site);
    float arow[2][16], bcol[2][16];  // A rows g, g + 8 and B columns 2t, 2t + 1, over k
    auto unpack = [bf16](unsigned bits, float* dst) {
        if (bf16) {
            dst[0] = __bfloat162float(__nv_bfloat16{(unsigned short)(bits & 0xffffu)});
            dst[1] = __bfloat162float(__nv_bfloat16{(unsigned short)(bits >> 16)});
            return;
        }
        __half h[2];
        std::memcpy(h, &bits, sizeof(bits));
        dst[0] = (float)h[0];
        dst[1] = (float)h[1];
    };
    for (int src = 0; src < 4; ++src) {  // lane t' = src of a group holds k = 2t' + {0, 1, 8, 9}
        for (int q = 0; q < 4; ++q)  // A row g + 8(q % 2), from the lanes of group g
            unpack(posted[warp][4 * g + src][q], &arow[q % 2][2 * src + 8 * (q / 2)]);
        for (int col = 0; col < 2; ++col)  // B column n = 2t + col, from the lanes of group n
            for (int q = 0; q < 2; ++q)
                unpack(posted[warp][4 * (2 * t + col) + src][4 + q], &bcol[col][2 * src + 8 * q]);
    }
    __syncwarp(0xffffffffu, site);  // no lane posts its next mma before all have read
    for (int i = 0; i < 4; ++i) {
        float sum = c[i];
        for (int k = 0; k < 16; ++k) sum += arow[i / 2][k] * bcol[i % 2][k];
        c[i] = sum;
    }
}
static inline void gpuops_emu_mma_m16n8k16_f32_f16(float (&c)[4], const unsigned (&a)[4],
                                                   const unsigned (&b)[2], GPUOPS_EMU_SITE) {
    gpuops_emu_mma_m16n8k16_f32(c, a, b, false, site);
}
static inline void gpuops_emu_mma_m16n8k16_f32_bf16(float (&c)[4], const unsigned (&a)[4],
                                                    const unsigned (&b)[2], GPUOPS_EMU_SITE) {
    gpuops_emu_mma_m16n8k16_f32(c, a, b, true, site);
}

// ---- memory fences, atomics (relaxed, as CUDA's), clocks, traps -----------------------
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// An atomic also ends a thread whose block is being aborted (a spin lock cannot hang).
#define GPUOPS_EMU_ATOMIC_GUARD \
    if (gpuops_emu_rt_aborted()) gpuops_emu_leave()
#define GPUOPS_EMU_RMW(NAME, T, CALL)                                 \
    static inline T NAME(T* p, T v) {                                 \
        GPUOPS_EMU_ATOMIC_GUARD;                                      \
        return std::atomic_ref<T>(*p).CALL(v, std::memory_order_relaxed); \
    }
#define GPUOPS_EMU_INT_ATOMICS(T)                                     \
    GPUOPS_EMU_RMW(atomicAdd, T, fetch_add)                           \
    GPUOPS_EMU_RMW(atomicSub, T, fetch_sub)                           \
    GPUOPS_EMU_RMW(atomicAnd, T, fetch_and)                           \
    GPUOPS_EMU_RMW(atomicOr, T, fetch_or)                             \
    GPUOPS_EMU_RMW(atomicXor, T, fetch_xor)                           \
    GPUOPS_EMU_RMW(atomicExch, T, exchange)                           \
    static inline T atomicMax(T* p, T v) {                            \
        GPUOPS_EMU_ATOMIC_GUARD;                                      \
        std::atomic_ref<T> a(*p);                                     \
        T old = a.load(std::memory_order_relaxed);                    \
        while (old < v && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {} \
        return old;                                                   \
    }                                                                 \
    static inline T atomicMin(T* p, T v) {                            \
        GPUOPS_EMU_ATOMIC_GUARD;                                      \
        std::atomic_ref<T> a(*p);                                     \
        T old = a.load(std::memory_order_relaxed);                    \
        while (v < old && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {} \
        return old;                                                   \
    }                                                                 \
    static inline T atomicCAS(T* p, T compare, T value) {             \
        GPUOPS_EMU_ATOMIC_GUARD;                                      \
        std::atomic_ref<T>(*p).compare_exchange_strong(compare, value, std::memory_order_relaxed); \
        return compare;                                               \
    }
GPUOPS_EMU_INT_ATOMICS(int)
GPUOPS_EMU_INT_ATOMICS(unsigned int)
GPUOPS_EMU_INT_ATOMICS(long long)
GPUOPS_EMU_INT_ATOMICS(unsigned long long)
GPUOPS_EMU_RMW(atomicAdd, float, fetch_add)
GPUOPS_EMU_RMW(atomicAdd, double, fetch_add)
GPUOPS_EMU_RMW(atomicSub, float, fetch_sub)
GPUOPS_EMU_RMW(atomicExch, float, exchange)
GPUOPS_EMU_RMW(atomicExch, double, exchange)
static inline __half atomicAdd(__half* p, __half v) {
    GPUOPS_EMU_ATOMIC_GUARD;
    std::atomic_ref<unsigned short> a(*reinterpret_cast<unsigned short*>(p));
    unsigned short old = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(old, __half_as_ushort(__hadd(__ushort_as_half(old), v)),
                                    std::memory_order_relaxed)) {}
    return __ushort_as_half(old);
}
static inline unsigned atomicInc(unsigned* p, unsigned limit) {
    GPUOPS_EMU_ATOMIC_GUARD;
    std::atomic_ref<unsigned> a(*p);
    unsigned old = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(old, old >= limit ? 0u : old + 1u, std::memory_order_relaxed)) {}
    return old;
}

static inline long long clock64() { return (long long)__builtin_ia32_rdtsc(); }
static inline void __nanosleep(unsigned) {}
[[noreturn]] static inline void __trap() { gpuops_emu_fail("__trap() called"); }
[[noreturn]] static inline void gpuops_emu_assert_failed(const char* expr, const char* file,
                                                         unsigned line) {
    char message[512];
    std::snprintf(message, sizeof message, "assertion `%s` failed at %s:%u", expr, file, line);
    gpuops_emu_fail(message);
}
#undef assert
#define assert(e) ((e) ? (void)0 : gpuops_emu_assert_failed(#e, __FILE__, __LINE__))

// ---- UBSan bounds checks (-fsanitize=bounds) report through the runtime ----------------
// Layouts of GCC's libsanitizer (ubsan_handlers.h); the library is not linked.
struct gpuops_emu_ub_location {
    const char* file;
    unsigned line, column;
};
struct gpuops_emu_ub_type {
    unsigned short kind, info;
    char name[1];
};
struct gpuops_emu_ub_bounds {
    gpuops_emu_ub_location location;
    const gpuops_emu_ub_type* array_type;
    const gpuops_emu_ub_type* index_type;
};
extern "C" __attribute__((visibility("hidden"), noreturn)) void
__ubsan_handle_out_of_bounds_abort(gpuops_emu_ub_bounds* data, uintptr_t index) {
    const bool is_signed = data->index_type->info & 1;
    char message[512];
    if (is_signed)
        std::snprintf(message, sizeof message, "out-of-bounds index %lld for type %s at %s:%u:%u",
                      (long long)(intptr_t)index, data->array_type->name, data->location.file,
                      data->location.line, data->location.column);
    else
        std::snprintf(message, sizeof message, "out-of-bounds index %llu for type %s at %s:%u:%u",
                      (unsigned long long)index, data->array_type->name, data->location.file,
                      data->location.line, data->location.column);
    gpuops_emu_fail(message);
}
extern "C" __attribute__((visibility("hidden"))) void
__ubsan_handle_out_of_bounds(gpuops_emu_ub_bounds* data, uintptr_t index) {
    __ubsan_handle_out_of_bounds_abort(data, index);
}

// ---- launch glue --------------------------------------------------------------------
// What the runtime needs from this library.
#include "launch_spec.h"

#define GPUOPS_EMU_DYNAMIC_SHARED_BYTES (228u * 1024u)
extern "C" {
__attribute__((used, visibility("hidden"), aligned(1024))) unsigned char
    gpuops_emu_dynamic_shared[GPUOPS_EMU_DYNAMIC_SHARED_BYTES];
}
extern "C" __attribute__((weak, visibility("hidden"))) unsigned char __start_gpuops_shared[];
extern "C" __attribute__((weak, visibility("hidden"))) unsigned char __stop_gpuops_shared[];

// ---- ldmatrix, cp.async and TF32 (cuda/mma.cuh) -----------------------------------------
// Here, after the shared buffers' declarations: both check that an address is in the
// block's shared memory.
//
// In the counting build (counters.h, included after this header) an access the emulator
// makes on the kernel's behalf is recorded by gpuops_emu_count_access from the calling
// instruction (inlined into the kernel, so each call site of the kernel is one
// instruction), and the bytes themselves move through gpuops_emu_copy_uncounted
// (uninstrumented there), so that each access is counted once, as the instruction the
// hardware executes, and the emulator's own tables not at all.
#ifdef GPUOPS_EMU_COUNT
extern "C" __attribute__((visibility("hidden"))) void gpuops_emu_count_access(
    const void* addr, unsigned size, unsigned store);
#define GPUOPS_EMU_COUNTED(addr, size, store) gpuops_emu_count_access(addr, size, store)
__attribute__((no_sanitize_thread, noinline))
#else
#define GPUOPS_EMU_COUNTED(addr, size, store) ((void)0)
#endif
static void gpuops_emu_copy_uncounted(void* dst, const void* src, unsigned bytes) {
    std::memcpy(dst, src, bytes);
}

static unsigned long long gpuops_emu_dynamic_bytes = 0;  // the launch's dynamic shared memory

// Fails unless [p, p + 16) is 16-byte aligned and inside the block's shared memory (static
// __shared__ variables or the launch's dynamic bytes; under AddressSanitizer, which keeps
// static shared memory elsewhere, only the alignment is checked).
static inline void gpuops_emu_check_shared16(const void* p, const char* what) {
    const uintptr_t a = (uintptr_t)p;
    char message[256];
    if (a % 16) {
        std::snprintf(message, sizeof message, "%s: shared address %p is not 16-byte aligned",
                      what, p);
        gpuops_emu_fail(message);
    }
#ifndef __SANITIZE_ADDRESS__
    const uintptr_t s0 = (uintptr_t)__start_gpuops_shared, s1 = (uintptr_t)__stop_gpuops_shared;
    const uintptr_t d0 = (uintptr_t)gpuops_emu_dynamic_shared, d1 = d0 + gpuops_emu_dynamic_bytes;
    if (!((a >= s0 && a + 16 <= s1) || (a >= d0 && a + 16 <= d1))) {
        std::snprintf(message, sizeof message,
                      "%s: %p is not a 16-byte row of the block's shared memory", what, p);
        gpuops_emu_fail(message);
    }
#endif
}

// ldmatrix.sync.aligned.m8n8.x{count}{.trans}.shared.b16. Each lane that gives an address
// (lanes 0 .. 8 count - 1: lane l row l % 8 of matrix l / 8) reads its own 16-byte row —
// one 16-byte shared load per lane, so the counters see what the hardware's quarter-warp
// phases see (one matrix per phase: conflict-free exactly when a matrix's 8 rows cover the
// 32 banks) — and posts it in a table outside shared memory (registers on a GPU: neither
// NaN-filled nor counted); after a warp rendezvous each lane assembles its fragments:
// r[i] = matrix i's (row l / 4, columns 2 (l % 4) + {0, 1}), or with `trans` its (rows
// 2 (l % 4) + {0, 1}, column l / 4); the lower column (row) in the low 16 bits.
static unsigned short gpuops_emu_ldmatrix_rows[32][32][8];  // [warp][lane][column]
__attribute__((always_inline)) static inline void gpuops_emu_ldmatrix(
    unsigned* r, int count, bool trans, const void* row, GPUOPS_EMU_SITE) {
    const unsigned linear = threadIdx.x + threadIdx.y * blockDim.x
                          + threadIdx.z * blockDim.x * blockDim.y;
    const int warp = linear / 32, lane = linear % 32;
    unsigned short(&rows)[32][8] = gpuops_emu_ldmatrix_rows[warp];
    if (lane < 8 * count) {
        gpuops_emu_check_shared16(row, "ldmatrix");
        GPUOPS_EMU_COUNTED(row, 16, 0);
        gpuops_emu_copy_uncounted(rows[lane], row, 16);
    }
    __syncwarp(0xffffffffu, site);
    const int q = lane / 4, p = 2 * (lane % 4);
    for (int i = 0; i < count; ++i) {
        const unsigned short* m = rows[8 * i] + 0;
        const unsigned lo = trans ? m[8 * p + q] : m[8 * q + p];
        const unsigned hi = trans ? m[8 * (p + 1) + q] : m[8 * q + p + 1];
        r[i] = lo | hi << 16;
    }
    __syncwarp(0xffffffffu, site);  // no lane posts its next rows before all have read
}

// cp.async.cg.shared.global [dst], [src], 16, src_bytes, commit_group and wait_group N,
// modelled strictly: at issue the thread reads its src_bytes (the global load is counted
// then, with the 16-byte shared store) into a per-thread queue; the shared destination
// changes only when cp_async_wait<N> performs every queued copy of the thread's committed
// groups but the N most recent (the rest of each 16 bytes zero-filled). Nothing else
// completes a copy (not __syncthreads, as on the hardware); copies still queued when the
// thread exits are dropped. So a kernel that reads a stage before waiting for it reads
// what was there before: NaN in a fresh block.
struct gpuops_emu_async_copy {
    unsigned char* dst;
    unsigned long long group;  // the number of groups committed before it was issued
    unsigned char bytes[16];
};
#define GPUOPS_EMU_ASYNC_CAPACITY 256  // copies one thread may have in flight
static __thread gpuops_emu_async_copy* gpuops_emu_async_queue;  // allocated on first use
static __thread int gpuops_emu_async_pending;
static __thread unsigned long long gpuops_emu_async_committed;

__attribute__((always_inline)) static inline void gpuops_emu_cp_async(void* dst, const void* src,
                                                                      int src_bytes) {
    char message[256];
    if (src_bytes < 0 || src_bytes > 16) {
        std::snprintf(message, sizeof message, "cp.async: src_bytes %d is not in 0..16",
                      src_bytes);
        gpuops_emu_fail(message);
    }
    if (src_bytes > 0 && (uintptr_t)src % 16) {
        std::snprintf(message, sizeof message,
                      "cp.async: global address %p is not 16-byte aligned", src);
        gpuops_emu_fail(message);
    }
    gpuops_emu_check_shared16(dst, "cp.async");
    if (!gpuops_emu_async_queue)
        gpuops_emu_async_queue = (gpuops_emu_async_copy*)std::calloc(
            GPUOPS_EMU_ASYNC_CAPACITY, sizeof(gpuops_emu_async_copy));
    if (!gpuops_emu_async_queue || gpuops_emu_async_pending == GPUOPS_EMU_ASYNC_CAPACITY)
        gpuops_emu_fail("cp.async: more than 256 copies in flight in one thread "
                        "(a missing cp_async_wait?)");
    gpuops_emu_async_copy& copy = gpuops_emu_async_queue[gpuops_emu_async_pending++];
    copy.dst = (unsigned char*)dst;
    copy.group = gpuops_emu_async_committed;
    std::memset(copy.bytes, 0, sizeof copy.bytes);
    if (src_bytes > 0) {
        GPUOPS_EMU_COUNTED(src, (unsigned)src_bytes, 0);
        gpuops_emu_copy_uncounted(copy.bytes, src, (unsigned)src_bytes);
    }
    GPUOPS_EMU_COUNTED(dst, 16, 1);
}

static inline void gpuops_emu_cp_async_commit() { ++gpuops_emu_async_committed; }

static inline void gpuops_emu_cp_async_wait(int n) {
    const unsigned long long done = gpuops_emu_async_committed > (unsigned long long)n
                                        ? gpuops_emu_async_committed - n : 0;
    int k = 0;  // the queue is in issue order, so groups never decrease along it
    while (k < gpuops_emu_async_pending && gpuops_emu_async_queue[k].group < done) {
        gpuops_emu_copy_uncounted(gpuops_emu_async_queue[k].dst, gpuops_emu_async_queue[k].bytes,
                                  16);
        ++k;
    }
    if (k == 0) return;
    gpuops_emu_async_pending -= k;
    std::memmove(gpuops_emu_async_queue, gpuops_emu_async_queue + k,
                 gpuops_emu_async_pending * sizeof(gpuops_emu_async_copy));
}

// cvt.rna.tf32.f32 (PTX: round to nearest, ties away from zero) in integer form: add half
// an ulp of tf32 to the magnitude bits unless |x| is inf or NaN, then clear the 13 low
// bits: subnormals kept, overflow past the largest tf32 to inf; inf kept; a NaN keeps its
// sign and upper 10 fraction bits (one whose payload lies only in the low 13 bits would
// become inf: not checked on a GPU; the kernels never convert such a NaN on purpose).
static inline unsigned gpuops_emu_to_tf32(float x) {
    unsigned u = gpuops_emu_bits<unsigned>(x);
    if ((u & 0x7fffffffu) < 0x7f800000u) u += 0x1000u;
    return u & 0xffffe000u;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (fragments: cuda/mma.cuh), as the
// f16 model above: the lanes post their registers in a table (outside shared memory),
// meet at __syncwarp, and each reads the A rows and B columns of its four results. The
// operands are the upper 19 bits of each register (tf32); every product of two is exact
// in float (11 + 11 significant bits) and the sum runs in float in k order.
static unsigned gpuops_emu_mma_tf32_posted[32][32][6];  // [warp][lane][a0 a1 a2 a3 b0 b1]
static inline void gpuops_emu_mma_m16n8k8_f32_tf32(float (&c)[4], const unsigned (&a)[4],
                                                   const unsigned (&b)[2], GPUOPS_EMU_SITE) {
    const unsigned linear = threadIdx.x + threadIdx.y * blockDim.x
                          + threadIdx.z * blockDim.x * blockDim.y;
    const int warp = linear / 32, lane = linear % 32, g = lane / 4, t = lane % 4;
    unsigned(&posted)[32][6] = gpuops_emu_mma_tf32_posted[warp];
    for (int q = 0; q < 4; ++q) posted[lane][q] = a[q];
    posted[lane][4] = b[0];
    posted[lane][5] = b[1];
    __syncwarp(0xffffffffu, site);
    auto value = [](unsigned bits) { return gpuops_emu_bits<float>(bits & 0xffffe000u); };
    float arow[2][8], bcol[2][8];  // A rows g, g + 8 and B columns 2t, 2t + 1, over k
    for (int k = 0; k < 8; ++k) {
        for (int h = 0; h < 2; ++h)  // A[g + 8h][k]: lane 4g + k % 4, register h + 2 (k / 4)
            arow[h][k] = value(posted[4 * g + k % 4][h + 2 * (k / 4)]);
        for (int col = 0; col < 2; ++col)  // B[k][n]: lane 4n + k % 4, register 4 + k / 4
            bcol[col][k] = value(posted[4 * (2 * t + col) + k % 4][4 + k / 4]);
    }
    __syncwarp(0xffffffffu, site);  // no lane posts its next mma before all have read
    for (int i = 0; i < 4; ++i) {
        float sum = c[i];
        for (int k = 0; k < 8; ++k) sum += arow[i / 2][k] * bcol[i % 2][k];
        c[i] = sum;
    }
}

extern "C" __attribute__((visibility("default"))) int gpuops_emu_thread(
    void (*kernel)(void**), void** args, const unsigned* thread, const unsigned* block) {
    jmp_buf exit_point;
    gpuops_emu_exit_point = &exit_point;
    threadIdx = uint3{thread[0], thread[1], thread[2]};
    blockIdx = uint3{block[0], block[1], block[2]};
    gpuops_emu_async_pending = 0;  // copies a previous thread on this worker left queued
    gpuops_emu_async_committed = 0;
    if (setjmp(exit_point)) return 1;
    kernel(args);
    return 0;
}

extern "C" __attribute__((visibility("default"))) int gpuops_emu_launch(
    gpuops_emu_launch_spec* spec) {
    blockDim = dim3(spec->block[0], spec->block[1], spec->block[2]);
    gridDim = dim3(spec->grid[0], spec->grid[1], spec->grid[2]);
    spec->thread_entry = gpuops_emu_thread;
    spec->dynamic_shared = gpuops_emu_dynamic_shared;
    spec->dynamic_capacity = GPUOPS_EMU_DYNAMIC_SHARED_BYTES;
    gpuops_emu_dynamic_bytes = spec->shared_mem;
#ifdef __SANITIZE_ADDRESS__
    // bytes past the launch's dynamic shared memory are out of bounds
    ASAN_UNPOISON_MEMORY_REGION(gpuops_emu_dynamic_shared, GPUOPS_EMU_DYNAMIC_SHARED_BYTES);
    if (spec->shared_mem < GPUOPS_EMU_DYNAMIC_SHARED_BYTES)
        ASAN_POISON_MEMORY_REGION(gpuops_emu_dynamic_shared + spec->shared_mem,
                                  GPUOPS_EMU_DYNAMIC_SHARED_BYTES - spec->shared_mem);
    spec->static_shared_begin = spec->static_shared_end = nullptr;
#else
    spec->static_shared_begin = __start_gpuops_shared;
    spec->static_shared_end = __stop_gpuops_shared;
#endif
    return gpuops_emu_rt_launch(spec);
}

// Call a kernel with its arguments given as pointers to their values (as cuLaunchKernel).
template <typename... A, std::size_t... I>
static inline void gpuops_emu_invoke(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}
template <typename... A>
static inline int gpuops_emu_sizes(void (*)(A...), unsigned* sizes) {
    const unsigned each[] = {(unsigned)sizeof(A)..., 0u};
    for (std::size_t i = 0; i < sizeof...(A); ++i) sizes[i] = each[i];
    return (int)sizeof...(A);
}
// Appended by the loader for every extern "C" __global__ function of the source.
#define GPUOPS_EMU_KERNEL(name)                                                             \
    extern "C" __attribute__((visibility("default"))) void gpuops_emu_k_##name(void** args) { \
        gpuops_emu_invoke(&name, args, std::make_index_sequence<                            \
                          gpuops_emu_arity<decltype(&name)>::value>{});                     \
    }                                                                                       \
    extern "C" __attribute__((visibility("default"))) int gpuops_emu_n_##name(unsigned* sizes) { \
        return gpuops_emu_sizes(&name, sizes);                                              \
    }
template <typename F> struct gpuops_emu_arity;
template <typename... A> struct gpuops_emu_arity<void (*)(A...)> {
    static constexpr std::size_t value = sizeof...(A);
};
