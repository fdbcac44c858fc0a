// Activations and their gradients: relu, leaky_relu, sigmoid, tanh.
// Launched by gpuops/activation.py. One extern "C" kernel per dtype (suffix
// f16 / f32 / f64); float16 is loaded, computed in float32 and rounded on store.
#include "gpuops.cuh"
#include "half.cuh"
#include "logistic.cuh"

// y = f(x) and gx = g * f'(.) with x, y, g in the accumulation type A; PARAM is
// the op's scalar parameter (leaky_relu's slope), unused by the others.
#define ACTIVATION(NAME, FWD, GRAD, T, A, SFX)                                             \
    extern "C" __global__ void NAME##_##SFX(const T* __restrict__ xs, T* __restrict__ ys,  \
                                            A param, long long n) {                        \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A x = load_acc(xs + i);                                                  \
            (void)param;                                                                   \
            store_acc(ys + i, (FWD));                                                      \
        }                                                                                  \
    }                                                                                      \
    extern "C" __global__ void NAME##_wrt_x1_##SFX(                                        \
        const T* __restrict__ xs, const T* __restrict__ ys, const T* __restrict__ gys,     \
        T* __restrict__ gxs, A param, long long n) {                                       \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const A x = load_acc(xs + i), y = load_acc(ys + i), g = load_acc(gys + i);     \
            (void)x; (void)y; (void)param; /* dead loads are dropped by the compiler */    \
            store_acc(gxs + i, (GRAD));                                                    \
        }                                                                                  \
    }

// The gradients read x only (relu'(0) = 0 and leaky_relu'(0) = slope, as PyTorch;
// sigmoid and tanh from x, accurate in the tails: see logistic.cuh). The forwards pass
// NaN through (x < 0 is false).
#define ACTIVATION_ALL(T, A, SFX)                                                          \
    ACTIVATION(relu, x < A(0) ? A(0) : x, x > A(0) ? g : A(0), T, A, SFX)                 \
    ACTIVATION(leaky_relu, x < A(0) ? param * x : x, x > A(0) ? g : param * g, T, A, SFX) \
    ACTIVATION(sigmoid, sigmoid_acc(x), g * sigmoid_grad_acc(x), T, A, SFX)               \
    ACTIVATION(tanh, tanh(x), g * tanh_grad_acc(x), T, A, SFX)

ACTIVATION_ALL(__half, float, f16)
ACTIVATION_ALL(float, float, f32)
ACTIVATION_ALL(double, double, f64)
