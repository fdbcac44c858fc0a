// Activations and their gradients: relu, leaky_relu, sigmoid, tanh, gelu (exact and tanh
// form: two kernels, gelu and gelu_tanh), silu.
// Launched by gpuops/ops/activation.py. One extern "C" kernel per dtype (suffix
// f16 / bf16 / f32 / f64); float16 and bfloat16 are loaded, computed in float32 and
// rounded once on store (half.cuh).
#include "gpuops.cuh"
#include "half.cuh"
#include "logistic.cuh"

// y = f(x) and gx = g * f'(.) with x, y, g in the accumulation type A; PARAM is
// the op's scalar parameter (leaky_relu's slope), unused by the others. 16-byte vectors
// with a scalar tail (map_elements, half.cuh): launch ceil(n / N) threads, N = 16 / sizeof(T).
#define ACTIVATION(NAME, FWD, GRAD, T, A, SFX)                                             \
    extern "C" __global__ void NAME##_##SFX(const T* __restrict__ xs, T* __restrict__ ys,  \
                                            A param, long long n) {                        \
        map_elements(ys, n, [=](A x) { (void)param; return A(FWD); }, xs);                 \
    }                                                                                      \
    extern "C" __global__ void NAME##_wrt_x1_##SFX(                                        \
        const T* __restrict__ xs, const T* __restrict__ ys, const T* __restrict__ gys,     \
        T* __restrict__ gxs, A param, long long n) {                                       \
        /* dead loads (y: every gradient reads x) are dropped by the compiler */           \
        map_elements(                                                                      \
            gxs, n, [=](A x, A y, A g) { (void)y; (void)param; return A(GRAD); }, xs, ys, gys); \
    }

// gelu (exact): x Phi(x), gelu' = Phi(x) + x phi(x), with Phi(x) = erfc(-x/sqrt 2)/2 (erfc,
// not 1 + erf: full relative precision for x << 0) and phi(x) = e^(-x^2/2)/sqrt(2 pi).
__device__ __forceinline__ float normal_cdf_acc(float x) { return 0.5f * erfcf(-0.70710678f * x); }
__device__ __forceinline__ double normal_cdf_acc(double x) {
    return 0.5 * erfc(-0.70710678118654752 * x);
}
__device__ __forceinline__ float normal_pdf_acc(float x) {
    return 0.39894228f * expf(-0.5f * x * x);
}
__device__ __forceinline__ double normal_pdf_acc(double x) {
    return 0.39894228040143268 * exp(-0.5 * x * x);
}

// density * factor, 0 where the density underflowed to 0: the factor may then overflow
// (x * 2u' below grows like x^3) or be +-inf (x itself), and 0 * inf would be NaN. So the
// gradients of gelu and silu are 1 at +inf and 0 at -inf; NaN stays NaN.
template <typename A>
__device__ __forceinline__ A density_term(A density, A factor) {
    return density == A(0) ? A(0) : density * factor;
}

template <typename A>
__device__ __forceinline__ A gelu_acc(A x) { return x * normal_cdf_acc(x); }
template <typename A>
__device__ __forceinline__ A gelu_grad_acc(A x) {
    return normal_cdf_acc(x) + density_term(normal_pdf_acc(x), x);
}

// gelu's tanh form 0.5 x (1 + tanh u), u = sqrt(2/pi) (x + C x^3), as x sigma(2u) (1 + tanh u
// = 2 sigma(2u): no cancellation for x << 0), with 2u = K x (1 + C x^2), K = 2 sqrt(2/pi);
// gelu' = sigma(2u) + x sigma'(2u) 2u', 2u' = K (1 + 3 C x^2).
template <typename A>
__device__ __forceinline__ A gelu_tanh_acc(A x) {
    return x * sigmoid_acc(A(1.5957691216057308) * x * (A(1) + A(0.044715) * x * x));
}
template <typename A>
__device__ __forceinline__ A gelu_tanh_grad_acc(A x) {
    const A z = A(1.5957691216057308) * x * (A(1) + A(0.044715) * x * x);
    const A dz = A(1.5957691216057308) * (A(1) + A(3 * 0.044715) * x * x);
    return sigmoid_acc(z) + density_term(sigmoid_grad_acc(z), x * dz);
}

// silu: x sigma(x), silu' = sigma(x) + x sigma'(x).
template <typename A>
__device__ __forceinline__ A silu_acc(A x) { return x * sigmoid_acc(x); }
template <typename A>
__device__ __forceinline__ A silu_grad_acc(A x) {
    return sigmoid_acc(x) + density_term(sigmoid_grad_acc(x), x);
}

// The gradients read x only (relu'(0) = 0 and leaky_relu'(0) = slope, as PyTorch;
// sigmoid and tanh from x, accurate in the tails: see logistic.cuh). The forwards pass
// NaN through (x < 0 is false).
#define ACTIVATION_ALL(T, A, SFX)                                                          \
    ACTIVATION(relu, x < A(0) ? A(0) : x, x > A(0) ? g : A(0), T, A, SFX)                 \
    ACTIVATION(leaky_relu, x < A(0) ? param * x : x, x > A(0) ? g : param * g, T, A, SFX) \
    ACTIVATION(sigmoid, sigmoid_acc(x), g * sigmoid_grad_acc(x), T, A, SFX)               \
    ACTIVATION(tanh, tanh(x), g * tanh_grad_acc(x), T, A, SFX)                            \
    ACTIVATION(gelu, gelu_acc(x), g * gelu_grad_acc(x), T, A, SFX)                        \
    ACTIVATION(gelu_tanh, gelu_tanh_acc(x), g * gelu_tanh_grad_acc(x), T, A, SFX)         \
    ACTIVATION(silu, silu_acc(x), g * silu_grad_acc(x), T, A, SFX)

ACTIVATION_ALL(__half, float, f16)
ACTIVATION_ALL(__nv_bfloat16, float, bf16)
ACTIVATION_ALL(float, float, f32)
ACTIVATION_ALL(double, double, f64)
