// Elementwise family: binary ops with broadcasting, per-axis ops, unary ops and
// their gradients. Launched by gpuops/ops/elementwise.py. One extern "C" kernel per
// dtype, stamped out by the macros below (suffix f16 / bf16 / f32 / f64): operands of
// storage type T are loaded into the accumulation type A (float for the 16-bit dtypes),
// computed in A and rounded once on store (half.cuh).
#include "gpuops.cuh"
#include "half.cuh"

// ---- binary: y = a OP b ---------------------------------------------------
// Two kernel shapes, stamped out below; LEAD and EXTRA are parenthesized parameter lists
// (possibly empty) spliced in with UNPAREN: LEAD arrays of the output's shape come first
// (read at i: gy, the forward output), EXTRA scalars after the output (alpha).
// NAME_SFX: contiguous operands of the output's shape, in 16-byte vectors with a scalar
// tail (map_elements, half.cuh: launch ceil(n / N) threads, N = 16 / sizeof(T)).
// NAME_bcast_SFX: operands addressed through element strides over the output's
// (coalesced, at most 4-d) shape; a stride of 0 broadcasts that dim. The flat index is
// unravelled with the 32-bit fast division (FastDiv, gpuops.cuh; 64-bit past 2^32 - 1).
// gpuops-strided: *_bcast_*: a, b
#define UNPAREN(...) __VA_ARGS__

#define CONTIGUOUS(NAME, EXTRA, EXPR, T, A, SFX)                                          \
    extern "C" __global__ void NAME##_##SFX(const T* __restrict__ a,                    \
                                            const T* __restrict__ b,                    \
                                            T* __restrict__ out UNPAREN EXTRA,          \
                                            long long n) {                              \
        map_elements(out, n, [=](A u, A v) { return A(EXPR); }, a, b);                  \
    }

#define BROADCAST(NAME, LEAD, EXTRA, EXPR, T, A, SFX)                                    \
    extern "C" __global__ void NAME##_bcast_##SFX(                                      \
        UNPAREN LEAD const T* __restrict__ a, const T* __restrict__ b,                  \
        T* __restrict__ out UNPAREN EXTRA, long long n, FASTDIV_PARAM(d1),              \
        FASTDIV_PARAM(d2), FASTDIV_PARAM(d3), long long a0, long long a1, long long a2, \
        long long a3, long long b0, long long b1, long long b2, long long b3) {         \
        const FastDiv f1 = FASTDIV(d1), f2 = FASTDIV(d2), f3 = FASTDIV(d3);             \
        GRID_STRIDE_LOOP(i, n) {                                                        \
            const Index4 ix = unravel4(i, f1, f2, f3);                                  \
            const A u = to_acc(a[offset4(ix, a0, a1, a2, a3)]);                         \
            const A v = to_acc(b[offset4(ix, b0, b1, b2, b3)]);                         \
            store_acc(out + i, (EXPR));                                                 \
        }                                                                               \
    }

#define BINARY(NAME, EXPR, T, A, SFX)                                                    \
    CONTIGUOUS(NAME, (), EXPR, T, A, SFX)                                                \
    BROADCAST(NAME, (), (), EXPR, T, A, SFX)

// NAME_alpha_SFX / NAME_alpha_bcast_SFX: add and sub with PyTorch's alpha, a scalar after
// the output (one pass, alpha·v formed in registers).
#define BINARY_ALPHA(NAME, EXPR, T, A, SFX)                                              \
    CONTIGUOUS(NAME##_alpha, (, A alpha), EXPR, T, A, SFX)                               \
    BROADCAST(NAME##_alpha, (), (, A alpha), EXPR, T, A, SFX)

// y = alpha * x (the gradient of add / sub with alpha wrt x2: ±alpha·gy); vectors as
// CONTIGUOUS.
#define SCALE(T, A, SFX)                                                                   \
    extern "C" __global__ void scale_##SFX(const T* __restrict__ xs, T* __restrict__ ys,   \
                                           A alpha, long long n) {                         \
        map_elements(ys, n, [=](A x) { return A(alpha * x); }, xs);                        \
    }

// Gradient terms over the output's shape (summed to the operand's shape afterwards):
// div: gx2 = -gy * a / b^2 (LEAD gy);
// pow (y = a^b): gx1 = gy * b a^(b-1), 0 where b == 0 (LEAD gy); gx2 = gy * y log a, 0 where
// a == 0 and b >= 0 (PyTorch's conventions; LEAD gy, y).
#define BINARY_GRADS(T, A, SFX)                                                           \
    BROADCAST(div_wrt_x2, (const T* __restrict__ gy,), (),                                \
              -to_acc(gy[i]) * u / (v * v), T, A, SFX)                                    \
    BROADCAST(pow_array_wrt_x1, (const T* __restrict__ gy,), (),                          \
              v == A(0) ? A(0) : pow(u, v - A(1)) * v * to_acc(gy[i]), T, A, SFX)         \
    BROADCAST(pow_array_wrt_x2, (const T* __restrict__ gy, const T* __restrict__ y,), (), \
              (u == A(0) && v >= A(0)) ? A(0) : to_acc(y[i]) * log(u) * to_acc(gy[i]), T, A, \
              SFX)

#define BINARY_ALL(T, A, SFX)                   \
    BINARY(add, u + v, T, A, SFX)               \
    BINARY(sub, u - v, T, A, SFX)               \
    BINARY(mul, u * v, T, A, SFX)               \
    BINARY(div, u / v, T, A, SFX)               \
    BINARY(pow_array, pow(u, v), T, A, SFX)     \
    BINARY_ALPHA(add, u + alpha * v, T, A, SFX) \
    BINARY_ALPHA(sub, u - alpha * v, T, A, SFX) \
    SCALE(T, A, SFX)                            \
    BINARY_GRADS(T, A, SFX)

BINARY_ALL(__half, float, f16)
BINARY_ALL(__nv_bfloat16, float, bf16)
BINARY_ALL(float, float, f32)
BINARY_ALL(double, double, f64)

// ---- per-axis: y = x1 OP x2[c], x1 viewed as (outer, C, inner) ---------------
// c = (i / inner) % C with the fast division (FastDiv, gpuops.cuh).
#define AXIS(NAME, EXPR, T, A, SFX)                                                       \
    extern "C" __global__ void axis_##NAME##_##SFX(                                       \
        const T* __restrict__ x1, const T* __restrict__ x2, T* __restrict__ y, long long n, \
        FASTDIV_PARAM(channels), FASTDIV_PARAM(inner)) {                                  \
        const FastDiv fc = FASTDIV(channels), fi = FASTDIV(inner);                        \
        GRID_STRIDE_LOOP(i, n) {                                                          \
            long long c;                                                                  \
            fc.divmod(fi.div(i), c);                                                      \
            const A u = to_acc(x1[i]), v = to_acc(x2[c]);                                 \
            store_acc(y + i, (EXPR));                                                     \
        }                                                                                 \
    }

// gx2[c] = sum over (outer, inner) of TERM, in two deterministic stages (no atomics, as
// batch_norm's): stage 1, a block per (channel c, chunk s) of the channel's
// per_channel = outer * inner positions sums its chunk (block_sum) into
// partial[c * splits + s]; stage 2, axis_wrt_x2_finish: one thread per channel adds its
// `splits` partials in order. The host picks splits so that C * splits blocks fill the GPU.
#define AXIS_WRT_X2(NAME, TERM, T, A, SFX)                                                \
    extern "C" __global__ void axis_##NAME##_wrt_x2_##SFX(                                \
        const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ gy,     \
        A* __restrict__ partial, long long per_channel, long long channels,               \
        FASTDIV_PARAM(inner), long long chunk, FASTDIV_PARAM(splits)) {                   \
        const FastDiv fi = FASTDIV(inner), fs = FASTDIV(splits);                          \
        for (long long blk = blockIdx.x; blk < channels * splits; blk += gridDim.x) {     \
            long long s;                                                                  \
            const long long c = fs.divmod(blk, s), start = s * chunk;                     \
            const long long end = start + chunk < per_channel ? start + chunk : per_channel; \
            const A v = to_acc(x2[c]);                                                    \
            (void)v;                                                                      \
            A acc = A(0);                                                                 \
            for (long long j = start + threadIdx.x; j < end; j += blockDim.x) {           \
                long long p;                                                              \
                const long long i = (fi.divmod(j, p) * channels + c) * inner + p;         \
                const A u = to_acc(x1[i]), g = to_acc(gy[i]);                             \
                (void)u; /* unread (and not loaded) by add and sub */                     \
                acc += (TERM);                                                            \
            }                                                                             \
            acc = block_sum(acc);                                                         \
            if (threadIdx.x == 0) partial[blk] = acc;                                     \
        }                                                                                 \
    }

#define AXIS_WRT_X2_FINISH(T, A, SFX)                                                     \
    extern "C" __global__ void axis_wrt_x2_finish_##SFX(const A* __restrict__ partial,    \
                                                        T* __restrict__ gx2,              \
                                                        long long channels,               \
                                                        long long splits) {               \
        GRID_STRIDE_LOOP(c, channels) {                                                   \
            A acc = A(0);                                                                 \
            for (long long s = 0; s < splits; ++s) acc += partial[c * splits + s];        \
            store_acc(gx2 + c, acc);                                                      \
        }                                                                                 \
    }

#define AXIS_ALL(T, A, SFX)                            \
    AXIS(add, u + v, T, A, SFX)                        \
    AXIS(sub, u - v, T, A, SFX)                        \
    AXIS(mul, u * v, T, A, SFX)                        \
    AXIS(div, u / v, T, A, SFX)                        \
    AXIS_WRT_X2(add, g, T, A, SFX)                     \
    AXIS_WRT_X2(sub, -g, T, A, SFX)                    \
    AXIS_WRT_X2(mul, g * u, T, A, SFX)                 \
    AXIS_WRT_X2(div, -g * u / (v * v), T, A, SFX)     \
    AXIS_WRT_X2_FINISH(T, A, SFX)

AXIS_ALL(__half, float, f16)
AXIS_ALL(__nv_bfloat16, float, bf16)
AXIS_ALL(float, float, f32)
AXIS_ALL(double, double, f64)

// ---- unary: y = f(x), gx = gy * f'(x) ----------------------------------------
// FWD uses x; GRAD uses x, y (the forward output) and g (the upstream gradient); the
// loads of an unused one are dropped by the compiler. VECTORS: 16-byte vectors as
// CONTIGUOUS (map_elements, half.cuh), or false: one element per grid-stride step.
#define UNARY(NAME, FWD, GRAD, VECTORS, T, A, SFX)                                         \
    extern "C" __global__ void NAME##_##SFX(const T* __restrict__ xs, T* __restrict__ ys,  \
                                            long long n) {                                 \
        map_elements<VECTORS>(ys, n, [=](A x) { return A(FWD); }, xs);                     \
    }                                                                                      \
    extern "C" __global__ void NAME##_wrt_x1_##SFX(                                        \
        const T* __restrict__ xs, const T* __restrict__ ys, const T* __restrict__ gys,     \
        T* __restrict__ gxs, long long n) {                                                \
        map_elements<VECTORS>(                                                             \
            gxs, n, [=](A x, A y, A g) { (void)x; (void)y; return A(GRAD); }, xs, ys, gys); \
    }

// abs: the subgradient at 0 is 0 (as PyTorch), NaN stays NaN (as NumPy's sign).
// sqrt: 1/(2 sqrt x) uses y.
// sin and cos go one element at a time: libdevice's sinf / cosf keep the Payne-Hanek
// reduction's digits (|x| > 105615) in a 28-byte local array, which ptxas holds in
// registers only while a kernel has one call site; the N + 1 sites of a vector body and
// its tail give every thread a 32-byte stack frame (tests/infrastructure/
// test_nvrtc_compile.py allows stack frames only to the float64 ones, which have it anyway).
#define UNARY_ALL(T, A, SFX)                                                                \
    UNARY(neg, -x, -g, true, T, A, SFX)                                                     \
    UNARY(exp, exp(x), g * y, true, T, A, SFX)                                              \
    UNARY(log, log(x), g / x, true, T, A, SFX)                                              \
    UNARY(sqrt, sqrt(x), g / (A(2) * y), true, T, A, SFX)                                   \
    UNARY(square, x * x, A(2) * x * g, true, T, A, SFX)                                     \
    UNARY(abs, fabs(x), x > A(0) ? g : (x < A(0) ? -g : (x == A(0) ? A(0) : x)), true, T, A, \
          SFX)                                                                              \
    UNARY(sin, sin(x), g * cos(x), false, T, A, SFX)                                        \
    UNARY(cos, cos(x), -g * sin(x), false, T, A, SFX)                                       \
    POW(T, A, SFX)

// pow with a scalar exponent p; d/dx x^p = p x^(p-1), defined as 0 when p == 0. Vectors
// as CONTIGUOUS.
#define POW(T, A, SFX)                                                                     \
    extern "C" __global__ void pow_##SFX(const T* __restrict__ xs, T* __restrict__ ys, A p, \
                                         long long n) {                                    \
        map_elements(ys, n, [=](A x) { return A(pow(x, p)); }, xs);                        \
    }                                                                                      \
    extern "C" __global__ void pow_wrt_x1_##SFX(const T* __restrict__ xs,                  \
                                                const T* __restrict__ gys,                 \
                                                T* __restrict__ gxs, A p, long long n) {   \
        map_elements(                                                                      \
            gxs, n, [=](A x, A g) { return p == A(0) ? A(0) : A(g * p * pow(x, p - A(1))); }, \
            xs, gys);                                                                      \
    }

UNARY_ALL(__half, float, f16)
UNARY_ALL(__nv_bfloat16, float, bf16)
UNARY_ALL(float, float, f32)
UNARY_ALL(double, double, f64)
