// Fused multi-tensor optimizer steps: one launch updates every parameter tensor.
// Launched by gpuops/optim.py. The host passes one int64 table (device memory):
//
//   table[0*T + t]  parameter pointer of tensor t      (T = n_tensors)
//   table[1*T + t]  gradient pointer
//   table[2*T + t]  first state pointer  (SGD: momentum buffer; Adam: m)
//   table[3*T + t]  second state pointer (Adam: v; SGD: unused)
//   table[4*T + t]  16-bit parameter pointer (the *_master kernels; else unused)
//   table[5*T + t]  number of elements of tensor t
//   table[6*T + c]              tensor of chunk c    (C = n_chunks)
//   table[6*T + C + c]          first element of chunk c (a multiple of `chunk`)
//
// Block b handles chunks b, b + gridDim.x, ...; its threads stride over the
// chunk's elements. All tensors of one launch share the kernel's dtype and are
// C-contiguous. The update rules are those of torch.optim.SGD/Adam/AdamW
// (see docs/operators.md, "Autograd, nn and optimizers").
//
// Master weights (sgd_step_master_<16-bit>, adam_step_master_<16-bit>): row 0 holds the
// float32 master copy, rows 2-3 float32 state, rows 1 and 4 the 16-bit gradient and
// parameter. The gradient widens exactly, the step runs in float32 on the master as the
// float32 kernel's does, and the new master is stored and rounded once (to nearest even)
// into the 16-bit parameter: mixed dtypes, one launch.
//
// Loss scaling (GradScaler.unscale_) uses the gradients in row 0 and two launches:
//   grad_unscale      g = g * inv_scale in the accumulation type (rounded once), and
//                     flags[c] = 1 when chunk c held an inf or NaN (a block-wide OR);
//   grad_found_inf    one block ORs flags[0..n) into found[0] (1.0f or 0.0f).
// No atomics: every flag has one writer, so the result is repeatable.
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

#define OPTIM_POINTER_ROWS 5  // rows of pointers before the sizes (gpuops/ops/optim.py)

template <typename T>
__device__ __forceinline__ T* table_ptr(const long long* table, long long row, long long n_tensors,
                                        long long t) {
    return reinterpret_cast<T*>(table[row * n_tensors + t]);
}

// Chunk c of the table: its tensor and its element range [start, end).
struct TableChunk {
    long long t, start, end;
};

__device__ __forceinline__ TableChunk table_chunk(const long long* table, long long n_tensors,
                                                  long long n_chunks, long long chunk,
                                                  long long c) {
    const long long base = OPTIM_POINTER_ROWS * n_tensors;
    const long long t = table[base + n_tensors + c];
    const long long start = table[base + n_tensors + n_chunks + c];
    const long long n = table[base + t];
    return {t, start, start + chunk < n ? start + chunk : n};
}

// The 16-bit copy of a master-weight step, rounded once; nothing for H = void.
template <typename H>
struct CopyRow {
    template <typename W>
    static __device__ __forceinline__ void store(H* p, long long i, W w) { store_acc(p + i, w); }
};
template <>
struct CopyRow<void> {
    template <typename W>
    static __device__ __forceinline__ void store(void*, long long, W) {}
};

// SGD with momentum, Nesterov and L2 weight decay (dampening 0):
//   g = grad + wd p;  b = momentum b + g;  g = nesterov ? g + momentum b : b;  p -= lr g
// W: the type of the stepped parameter (row 0) and the state; G: the gradient's storage;
// H: the 16-bit copy written from the new value (row 4; void: none).
template <typename W, typename G, typename H>
__device__ __forceinline__ void sgd_chunks(const long long* __restrict__ table,
                                           long long n_tensors, long long n_chunks,
                                           long long chunk, W lr, W momentum, W weight_decay,
                                           int nesterov) {
    for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        const TableChunk ck = table_chunk(table, n_tensors, n_chunks, chunk, c);
        W* p = table_ptr<W>(table, 0, n_tensors, ck.t);
        const G* grad = table_ptr<G>(table, 1, n_tensors, ck.t);
        W* buf = table_ptr<W>(table, 2, n_tensors, ck.t);
        H* copy = table_ptr<H>(table, 4, n_tensors, ck.t);
        for (long long i = ck.start + threadIdx.x; i < ck.end; i += blockDim.x) {
            W g = load_acc(grad + i);
            if (weight_decay != W(0)) g += weight_decay * p[i];
            if (momentum != W(0)) {
                const W b = momentum * buf[i] + g;
                buf[i] = b;
                g = nesterov ? g + momentum * b : b;
            }
            const W w = p[i] - lr * g;
            p[i] = w;
            CopyRow<H>::store(copy, i, w);
        }
    }
}

// Adam (decoupled = 0, L2 decay added to the gradient) and AdamW (decoupled = 1):
//   AdamW: p *= 1 - lr wd;  Adam: g += wd p
//   m += (1 - beta1)(g - m);  v = beta2 v + (1 - beta2) g^2
//   p -= step_size m / (sqrt(v) / bc2_sqrt + eps)
// with step_size = lr / (1 - beta1^step), bc2_sqrt = sqrt(1 - beta2^step), decay = 1 - lr wd,
// 1 - beta1 and 1 - beta2 computed on the host in double precision (1 - beta2 in float32
// from a float32 beta2 = 0.999 would be off by 1e-5 relative). W, G, H as for SGD.
template <typename W, typename G, typename H>
__device__ __forceinline__ void adam_chunks(const long long* __restrict__ table,
                                            long long n_tensors, long long n_chunks,
                                            long long chunk, W beta2, W one_minus_beta1,
                                            W one_minus_beta2, W eps, W weight_decay, W decay,
                                            W step_size, W bc2_sqrt, int decoupled) {
    for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {
        const TableChunk ck = table_chunk(table, n_tensors, n_chunks, chunk, c);
        W* p = table_ptr<W>(table, 0, n_tensors, ck.t);
        const G* grad = table_ptr<G>(table, 1, n_tensors, ck.t);
        W* m = table_ptr<W>(table, 2, n_tensors, ck.t);
        W* v = table_ptr<W>(table, 3, n_tensors, ck.t);
        H* copy = table_ptr<H>(table, 4, n_tensors, ck.t);
        for (long long i = ck.start + threadIdx.x; i < ck.end; i += blockDim.x) {
            W g = load_acc(grad + i);
            W w = p[i];
            if (weight_decay != W(0)) {
                if (decoupled) w *= decay;
                else g += weight_decay * w;
            }
            W mi = m[i];
            mi += one_minus_beta1 * (g - mi);
            const W vi = beta2 * v[i] + one_minus_beta2 * g * g;
            m[i] = mi;
            v[i] = vi;
            w = w - step_size * mi / (sqrt(vi) / bc2_sqrt + eps);
            p[i] = w;
            CopyRow<H>::store(copy, i, w);
        }
    }
}

// sgd_step_<SFX>: W = G = T; sgd_step_master_<SFX>: float32 master and state, G = H = T.
#define SGD_STEP(NAME, W, G, H)                                                           \
    extern "C" __global__ void NAME(const long long* __restrict__ table,                  \
                                    long long n_tensors, long long n_chunks, long long chunk, \
                                    W lr, W momentum, W weight_decay, int nesterov) {     \
        sgd_chunks<W, G, H>(table, n_tensors, n_chunks, chunk, lr, momentum, weight_decay, \
                            nesterov);                                                    \
    }

#define ADAM_STEP(NAME, W, G, H)                                                          \
    extern "C" __global__ void NAME(                                                      \
        const long long* __restrict__ table, long long n_tensors, long long n_chunks,     \
        long long chunk, W beta2, W one_minus_beta1, W one_minus_beta2, W eps,            \
        W weight_decay, W decay, W step_size, W bc2_sqrt, int decoupled) {                \
        adam_chunks<W, G, H>(table, n_tensors, n_chunks, chunk, beta2, one_minus_beta1,   \
                             one_minus_beta2, eps, weight_decay, decay, step_size,        \
                             bc2_sqrt, decoupled);                                        \
    }

SGD_STEP(sgd_step_f32, float, float, void)
SGD_STEP(sgd_step_f64, double, double, void)
SGD_STEP(sgd_step_master_f16, float, __half, __half)
SGD_STEP(sgd_step_master_bf16, float, __nv_bfloat16, __nv_bfloat16)
ADAM_STEP(adam_step_f32, float, float, void)
ADAM_STEP(adam_step_f64, double, double, void)
ADAM_STEP(adam_step_master_f16, float, __half, __half)
ADAM_STEP(adam_step_master_bf16, float, __nv_bfloat16, __nv_bfloat16)

// T: storage type, ACC: what one element's arithmetic uses (float for 16-bit and float).
#define GRAD_CLIP(T, ACC, SFX)                                                            \
    extern "C" __global__ void grad_sumsq_##SFX(const long long* __restrict__ table,      \
                                                long long n_tensors, long long n_chunks,  \
                                                long long chunk,                          \
                                                double* __restrict__ partial) {           \
        for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {                    \
            const TableChunk ck = table_chunk(table, n_tensors, n_chunks, chunk, c);      \
            const long long t = ck.t, start = ck.start, end = ck.end;                     \
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
            const TableChunk ck = table_chunk(table, n_tensors, n_chunks, chunk, c);      \
            const long long t = ck.t, start = ck.start, end = ck.end;                     \
            T* g = table_ptr<T>(table, 0, n_tensors, t);                                  \
            for (long long i = start + threadIdx.x; i < end; i += blockDim.x)             \
                store_acc(g + i, load_acc(g + i) * k);                                    \
        }                                                                                 \
    }

// Loss scaling: g *= inv_scale (rounded once), flags[c] = whether chunk c held inf/NaN.
// v - v is 0 for a finite v and NaN for inf and NaN (no isfinite: no math header needed).
#define GRAD_UNSCALE(T, ACC, SFX)                                                         \
    extern "C" __global__ void grad_unscale_##SFX(const long long* __restrict__ table,    \
                                                  long long n_tensors, long long n_chunks, \
                                                  long long chunk, ACC inv_scale,         \
                                                  int* __restrict__ flags) {              \
        for (long long c = blockIdx.x; c < n_chunks; c += gridDim.x) {                    \
            const TableChunk ck = table_chunk(table, n_tensors, n_chunks, chunk, c);      \
            T* g = table_ptr<T>(table, 0, n_tensors, ck.t);                               \
            int bad = 0;                                                                  \
            for (long long i = ck.start + threadIdx.x; i < ck.end; i += blockDim.x) {     \
                const ACC v = load_acc(g + i);                                            \
                bad |= !(v - v == ACC(0));                                                \
                store_acc(g + i, v * inv_scale);                                          \
            }                                                                             \
            bad = __syncthreads_or(bad);                                                  \
            if (threadIdx.x == 0) flags[c] = bad != 0;                                    \
        }                                                                                 \
    }

GRAD_UNSCALE(__half, float, f16)
GRAD_UNSCALE(__nv_bfloat16, float, bf16)
GRAD_UNSCALE(float, float, f32)
GRAD_UNSCALE(double, double, f64)

extern "C" __global__ void grad_found_inf_f32(const int* __restrict__ flags, long long n,
                                              float* __restrict__ found) {
    int any = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) any |= flags[i];
    any = __syncthreads_or(any);
    if (threadIdx.x == 0) found[0] = any ? 1.0f : 0.0f;
}

GRAD_CLIP(__half, float, f16)
GRAD_CLIP(__nv_bfloat16, float, bf16)
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
