// Elementwise family: binary ops with broadcasting, per-axis ops, unary ops and
// their gradients. Launched by gpuops/ops/elementwise.py. One extern "C" kernel per
// dtype, stamped out by the macros below (suffix f32 / f64).
#include "gpuops.cuh"

// ---- binary: y = a OP b ---------------------------------------------------
// Two kernel shapes, stamped out below; LEAD and EXTRA are parenthesized parameter lists
// (possibly empty) spliced in with UNPAREN: LEAD arrays of the output's shape come first
// (read at i: gy, the forward output), EXTRA scalars after the output (alpha).
// NAME_SFX: contiguous operands of the output's shape.
// NAME_bcast_SFX: operands addressed through element strides over the output's
// (coalesced, at most 4-d) shape; a stride of 0 broadcasts that dim.
// gpuops-strided: *_bcast_*: a, b
#define UNPAREN(...) __VA_ARGS__

#define CONTIGUOUS(NAME, EXTRA, EXPR, T, SFX)                                             \
    extern "C" __global__ void NAME##_##SFX(const T* __restrict__ a,                    \
                                            const T* __restrict__ b,                    \
                                            T* __restrict__ out UNPAREN EXTRA,          \
                                            long long n) {                              \
        GRID_STRIDE_LOOP(i, n) {                                                        \
            const T u = a[i], v = b[i];                                                 \
            out[i] = (EXPR);                                                            \
        }                                                                               \
    }

#define BROADCAST(NAME, LEAD, EXTRA, EXPR, T, SFX)                                       \
    extern "C" __global__ void NAME##_bcast_##SFX(                                      \
        UNPAREN LEAD const T* __restrict__ a, const T* __restrict__ b,                  \
        T* __restrict__ out UNPAREN EXTRA, long long n, long long d1, long long d2,     \
        long long d3, long long a0, long long a1, long long a2, long long a3, long long b0, \
        long long b1, long long b2, long long b3) {                                     \
        GRID_STRIDE_LOOP(i, n) {                                                        \
            const Index4 ix = unravel4(i, d1, d2, d3);                                  \
            const T u = a[offset4(ix, a0, a1, a2, a3)], v = b[offset4(ix, b0, b1, b2, b3)]; \
            out[i] = (EXPR);                                                            \
        }                                                                               \
    }

#define BINARY(NAME, EXPR, T, SFX)                                                       \
    CONTIGUOUS(NAME, (), EXPR, T, SFX)                                                   \
    BROADCAST(NAME, (), (), EXPR, T, SFX)

// NAME_alpha_SFX / NAME_alpha_bcast_SFX: add and sub with PyTorch's alpha, a scalar after
// the output (one pass, alpha·v formed in registers).
#define BINARY_ALPHA(NAME, EXPR, T, SFX)                                                 \
    CONTIGUOUS(NAME##_alpha, (, T alpha), EXPR, T, SFX)                                  \
    BROADCAST(NAME##_alpha, (), (, T alpha), EXPR, T, SFX)

// y = alpha * x (the gradient of add / sub with alpha wrt x2: ±alpha·gy).
#define SCALE(T, SFX)                                                                      \
    extern "C" __global__ void scale_##SFX(const T* __restrict__ xs, T* __restrict__ ys,   \
                                           T alpha, long long n) {                         \
        GRID_STRIDE_LOOP(i, n) ys[i] = alpha * xs[i];                                      \
    }

// Gradient terms over the output's shape (summed to the operand's shape afterwards):
// div: gx2 = -gy * a / b^2 (LEAD gy);
// pow (y = a^b): gx1 = gy * b a^(b-1), 0 where b == 0 (LEAD gy); gx2 = gy * y log a, 0 where
// a == 0 and b >= 0 (PyTorch's conventions; LEAD gy, y).
#define BINARY_GRADS(T, SFX)                                                              \
    BROADCAST(div_wrt_x2, (const T* __restrict__ gy,), (), -gy[i] * u / (v * v), T, SFX) \
    BROADCAST(pow_array_wrt_x1, (const T* __restrict__ gy,), (),                          \
              v == T(0) ? T(0) : pow(u, v - T(1)) * v * gy[i], T, SFX)                    \
    BROADCAST(pow_array_wrt_x2, (const T* __restrict__ gy, const T* __restrict__ y,), (), \
              (u == T(0) && v >= T(0)) ? T(0) : y[i] * log(u) * gy[i], T, SFX)

#define BINARY_ALL(T, SFX)                   \
    BINARY(add, u + v, T, SFX)               \
    BINARY(sub, u - v, T, SFX)               \
    BINARY(mul, u * v, T, SFX)               \
    BINARY(div, u / v, T, SFX)               \
    BINARY(pow_array, pow(u, v), T, SFX)     \
    BINARY_ALPHA(add, u + alpha * v, T, SFX) \
    BINARY_ALPHA(sub, u - alpha * v, T, SFX) \
    SCALE(T, SFX)                            \
    BINARY_GRADS(T, SFX)

BINARY_ALL(float, f32)
BINARY_ALL(double, f64)

// ---- per-axis: y = x1 OP x2[c], x1 viewed as (outer, C, inner) ---------------
#define AXIS(NAME, EXPR, T, SFX)                                                          \
    extern "C" __global__ void axis_##NAME##_##SFX(const T* __restrict__ x1,             \
                                                   const T* __restrict__ x2,             \
                                                   T* __restrict__ y, long long n,       \
                                                   long long channels, long long inner) { \
        GRID_STRIDE_LOOP(i, n) {                                                         \
            const T u = x1[i], v = x2[(i / inner) % channels];                           \
            y[i] = (EXPR);                                                               \
        }                                                                                \
    }

// gx2[c] = sum over (outer, inner) of TERM; one block per channel (grid-stride over
// channels), threads stride over the outer*inner positions of the channel.
#define AXIS_WRT_X2(NAME, TERM, T, SFX)                                                   \
    extern "C" __global__ void axis_##NAME##_wrt_x2_##SFX(                                \
        const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ gy,     \
        T* __restrict__ gx2, long long outer, long long channels, long long inner) {      \
        const long long per_channel = outer * inner;                                      \
        for (long long c = blockIdx.x; c < channels; c += gridDim.x) {                    \
            const T v = x2[c];                                                            \
            (void)v;                                                                      \
            T acc = T(0);                                                                 \
            for (long long j = threadIdx.x; j < per_channel; j += blockDim.x) {           \
                const long long i = ((j / inner) * channels + c) * inner + j % inner;     \
                const T u = x1[i], g = gy[i];                                             \
                (void)u; /* unread (and not loaded) by add and sub */                     \
                acc += (TERM);                                                            \
            }                                                                             \
            acc = block_sum(acc);                                                         \
            if (threadIdx.x == 0) gx2[c] = acc;                                           \
        }                                                                                 \
    }

#define AXIS_ALL(T, SFX)                               \
    AXIS(add, u + v, T, SFX)                           \
    AXIS(sub, u - v, T, SFX)                           \
    AXIS(mul, u * v, T, SFX)                           \
    AXIS(div, u / v, T, SFX)                           \
    AXIS_WRT_X2(add, g, T, SFX)                        \
    AXIS_WRT_X2(sub, -g, T, SFX)                       \
    AXIS_WRT_X2(mul, g * u, T, SFX)                    \
    AXIS_WRT_X2(div, -g * u / (v * v), T, SFX)

AXIS_ALL(float, f32)
AXIS_ALL(double, f64)

// ---- unary: y = f(x), gx = gy * f'(x) ----------------------------------------
// FWD uses x; GRAD uses x, y (the forward output) and g (the upstream gradient).
#define UNARY(NAME, FWD, GRAD, T, SFX)                                                     \
    extern "C" __global__ void NAME##_##SFX(const T* __restrict__ xs, T* __restrict__ ys,  \
                                            long long n) {                                 \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const T x = xs[i];                                                             \
            ys[i] = (FWD);                                                                 \
        }                                                                                  \
    }                                                                                      \
    extern "C" __global__ void NAME##_wrt_x1_##SFX(                                        \
        const T* __restrict__ xs, const T* __restrict__ ys, const T* __restrict__ gys,     \
        T* __restrict__ gxs, long long n) {                                                \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            const T x = xs[i], y = ys[i], g = gys[i];                                      \
            (void)x; (void)y;                                                              \
            gxs[i] = (GRAD);                                                               \
        }                                                                                  \
    }

// abs: the subgradient at 0 is 0 (as PyTorch), NaN stays NaN (as NumPy's sign).
// sqrt: 1/(2 sqrt x) uses y.
#define UNARY_ALL(T, SFX)                                                         \
    UNARY(neg, -x, -g, T, SFX)                                                    \
    UNARY(exp, exp(x), g * y, T, SFX)                                             \
    UNARY(log, log(x), g / x, T, SFX)                                             \
    UNARY(sqrt, sqrt(x), g / (T(2) * y), T, SFX)                                  \
    UNARY(square, x * x, T(2) * x * g, T, SFX)                                    \
    UNARY(abs, fabs(x), x > T(0) ? g : (x < T(0) ? -g : (x == T(0) ? T(0) : x)), T, SFX)           \
    UNARY(sin, sin(x), g * cos(x), T, SFX)                                        \
    UNARY(cos, cos(x), -g * sin(x), T, SFX)                                       \
    POW(T, SFX)

// pow with a scalar exponent p; d/dx x^p = p x^(p-1), defined as 0 when p == 0.
#define POW(T, SFX)                                                                        \
    extern "C" __global__ void pow_##SFX(const T* __restrict__ xs, T* __restrict__ ys, T p, \
                                         long long n) {                                    \
        GRID_STRIDE_LOOP(i, n) ys[i] = pow(xs[i], p);                                      \
    }                                                                                      \
    extern "C" __global__ void pow_wrt_x1_##SFX(const T* __restrict__ xs,                  \
                                                const T* __restrict__ gys,                 \
                                                T* __restrict__ gxs, T p, long long n) {   \
        GRID_STRIDE_LOOP(i, n) {                                                           \
            gxs[i] = p == T(0) ? T(0) : gys[i] * p * pow(xs[i], p - T(1));                 \
        }                                                                                  \
    }

UNARY_ALL(float, f32)
UNARY_ALL(double, f64)
