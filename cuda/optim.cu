// Fused multi-tensor optimizer steps: one launch updates every parameter tensor.
// Launched by gpuops/optim.py. The host passes one int64 table (device memory):
//
//   table[0*T + t]  parameter pointer of tensor t      (T = n_tensors)
//   table[1*T + t]  gradient pointer
//   table[2*T + t]  first state pointer  (SGD: momentum buffer; Adam: m)
//   table[3*T + t]  second state pointer (Adam: v; SGD: unused)
//   table[4*T + t]  number of elements of tensor t
//   table[5*T + c]              tensor of chunk c    (C = n_chunks)
//   table[5*T + C + c]          first element of chunk c (a multiple of `chunk`)
//
// Block b handles chunks b, b + gridDim.x, ...; its threads stride over the
// chunk's elements. All tensors of one launch share the kernel's dtype and are
// C-contiguous. The update rules are those of torch.optim.SGD/Adam/AdamW
// (see docs/operators.md, "Autograd, nn and optimizers").
//
// Gradient clipping (clip_grad_norm) uses the same table with the gradients in row 0
// (rows 1-3 unused) and three launches, none waiting for the host:
//   grad_sumsq        per chunk c, the sum of squares of its elements in double, written to
//                     partial[c] (the host passes each dtype's slice of one table);
//   grad_norm_finish  one block adds partial[0..n) in a fixed order (thread t takes t,
//                     t + blockDim.x, ...; then the block tree): norm_coef[0] = sqrt(sum),
//                     norm_coef[1] = min(max_norm / (norm + eps), 1) (NaN stays NaN);
//   grad_scale        g *= norm_coef[1] in the accumulation type, unless it is 1.
// No atomics: the sum depends only on the sizes, so it is bitwise repeatable.
#include "gpuops.cuh"
#include "half.cuh"

template <typename T>
__device__ __forceinline__ T* table_ptr(const long long* table, long long row, long long n_tensors,
                                        long long t) {
    return reinterpret_cast<T*>(table[row * n_tensors + t]);
}

// SGD with momentum, Nesterov and L2 weight decay (dampening 0):
//   g = grad + wd p;  b = momentum b + g;  g = nesterov ? g + momentum b : b;  p -= lr g
#define SGD_STEP(T, SFX)                                                                   \
    extern "C" __global__ void sgd_step_##SFX(const long long* __restrict__ table,        \
                                              long long n_tensors, long long n_chunks,    \
                                              long long chunk, T lr, T momentum,          \
                                              T weight_decay, int nesterov) {             \
        for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {                    \
            const long long t = table[5 * n_tensors + c];                                 \
            const long long start = table[5 * n_tensors + n_chunks + c];                  \
            const long long n = table[4 * n_tensors + t];                                 \
            const long long end = start + chunk < n ? start + chunk : n;                  \
            T* p = table_ptr<T>(table, 0, n_tensors, t);                                  \
            const T* grad = table_ptr<T>(table, 1, n_tensors, t);                         \
            T* buf = table_ptr<T>(table, 2, n_tensors, t);                                \
            for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {           \
                T g = grad[i];                                                            \
                if (weight_decay != T(0)) g += weight_decay * p[i];                       \
                if (momentum != T(0)) {                                                   \
                    const T b = momentum * buf[i] + g;                                    \
                    buf[i] = b;                                                           \
                    g = nesterov ? g + momentum * b : b;                                  \
                }                                                                         \
                p[i] -= lr * g;                                                           \
            }                                                                             \
        }                                                                                 \
    }

// Adam (decoupled = 0, L2 decay added to the gradient) and AdamW (decoupled = 1):
//   AdamW: p *= 1 - lr wd;  Adam: g += wd p
//   m += (1 - beta1)(g - m);  v = beta2 v + (1 - beta2) g^2
//   p -= step_size m / (sqrt(v) / bc2_sqrt + eps)
// with step_size = lr / (1 - beta1^step), bc2_sqrt = sqrt(1 - beta2^step), decay = 1 - lr wd,
// 1 - beta1 and 1 - beta2 computed on the host in double precision (1 - beta2 in float32
// from a float32 beta2 = 0.999 would be off by 1e-5 relative).
#define ADAM_STEP(T, SFX)                                                                  \
    extern "C" __global__ void adam_step_##SFX(                                           \
        const long long* __restrict__ table, long long n_tensors, long long n_chunks,     \
        long long chunk, T beta2, T one_minus_beta1, T one_minus_beta2, T eps,            \
        T weight_decay, T decay, T step_size, T bc2_sqrt, int decoupled) {                \
        for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {                    \
            const long long t = table[5 * n_tensors + c];                                 \
            const long long start = table[5 * n_tensors + n_chunks + c];                  \
            const long long n = table[4 * n_tensors + t];                                 \
            const long long end = start + chunk < n ? start + chunk : n;                  \
            T* p = table_ptr<T>(table, 0, n_tensors, t);                                  \
            const T* grad = table_ptr<T>(table, 1, n_tensors, t);                         \
            T* m = table_ptr<T>(table, 2, n_tensors, t);                                  \
            T* v = table_ptr<T>(table, 3, n_tensors, t);                                  \
            for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {           \
                T g = grad[i];                                                            \
                T w = p[i];                                                               \
                if (weight_decay != T(0)) {                                               \
                    if (decoupled) w *= decay;                                            \
                    else g += weight_decay * w;                                           \
                }                                                                         \
                T mi = m[i];                                                              \
                mi += one_minus_beta1 * (g - mi);                                         \
                const T vi = beta2 * v[i] + one_minus_beta2 * g * g;                      \
                m[i] = mi;                                                                \
                v[i] = vi;                                                                \
                p[i] = w - step_size * mi / (sqrt(vi) / bc2_sqrt + eps);                  \
            }                                                                             \
        }                                                                                 \
    }

SGD_STEP(float, f32)
SGD_STEP(double, f64)
ADAM_STEP(float, f32)
ADAM_STEP(double, f64)

// T: storage type, ACC: what one element's arithmetic uses (float for __half and float).
#define GRAD_CLIP(T, ACC, SFX)                                                             \
    extern "C" __global__ void grad_sumsq_##SFX(const long long* __restrict__ table,      \
                                                long long n_tensors, long long n_chunks,  \
                                                long long chunk,                          \
                                                double* __restrict__ partial) {           \
        for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {                    \
            const long long t = table[5 * n_tensors + c];                                 \
            const long long start = table[5 * n_tensors + n_chunks + c];                  \
            const long long n = table[4 * n_tensors + t];                                 \
            const long long end = start + chunk < n ? start + chunk : n;                  \
            const T* g = table_ptr<T>(table, 0, n_tensors, t);                            \
            double s = 0.0;                                                               \
            for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {           \
                const double v = (double)load_acc(g + i);                                 \
                s += v * v;                                                               \
            }                                                                             \
            s = block_sum(s);                                                             \
            if (threadIdx.x == 0) partial[c] = s;                                         \
        }                                                                                 \
    }                                                                                     \
    extern "C" __global__ void grad_scale_##SFX(const long long* __restrict__ table,      \
                                                long long n_tensors, long long n_chunks,  \
                                                long long chunk,                          \
                                                const double* __restrict__ norm_coef) {   \
        const double coef = norm_coef[1];                                                 \
        if (coef == 1.0) return; /* at most max_norm: the gradients stay as they are */   \
        const ACC k = (ACC)coef;                                                          \
        for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {                    \
            const long long t = table[5 * n_tensors + c];                                 \
            const long long start = table[5 * n_tensors + n_chunks + c];                  \
            const long long n = table[4 * n_tensors + t];                                 \
            const long long end = start + chunk < n ? start + chunk : n;                  \
            T* g = table_ptr<T>(table, 0, n_tensors, t);                                  \
            for (long long i = start + threadIdx.x; i < end; i += blockDim.x)             \
                store_acc(g + i, load_acc(g + i) * k);                                    \
        }                                                                                 \
    }

GRAD_CLIP(__half, float, f16)
GRAD_CLIP(float, float, f32)
GRAD_CLIP(double, double, f64)

extern "C" __global__ void grad_norm_finish_f64(const double* __restrict__ partial,
                                                long long n, double max_norm, double eps,
                                                double* __restrict__ norm_coef) {
    double s = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) {
        const double norm = sqrt(s);
        double coef = max_norm / (norm + eps);
        if (coef > 1.0) coef = 1.0;
        norm_coef[0] = norm;
        norm_coef[1] = coef;
    }
}
