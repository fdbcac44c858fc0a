// The logistic function sigma(x) = 1 / (1 + e^-x) without overflow: only e^-|x| is
// evaluated, sigma(x) = 1/(1 + e^-|x|) for x >= 0 and e^-|x|/(1 + e^-|x|) for x < 0.
__device__ __forceinline__ float sigmoid_acc(float x) {
    const float e = expf(-fabsf(x));
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
__device__ __forceinline__ double sigmoid_acc(double x) {
    const double e = exp(-fabs(x));
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

// Their derivatives from x, accurate in the tails (y(1 - y) and 1 - y^2 from a rounded
// y lose every digit once y rounds to 1: |x| > 17 in float, |x| > 8 in half):
// sigma'(x) = e/(1 + e)^2 with e = e^-|x|; tanh'(x) = sech^2 x = 4e/(1 + e)^2, e = e^-2|x|.
__device__ __forceinline__ float sigmoid_grad_acc(float x) {
    const float e = expf(-fabsf(x)), d = 1.0f + e;
    return e / (d * d);
}
__device__ __forceinline__ double sigmoid_grad_acc(double x) {
    const double e = exp(-fabs(x)), d = 1.0 + e;
    return e / (d * d);
}
__device__ __forceinline__ float tanh_grad_acc(float x) {
    const float e = expf(-2.0f * fabsf(x)), d = 1.0f + e;
    return 4.0f * e / (d * d);
}
__device__ __forceinline__ double tanh_grad_acc(double x) {
    const double e = exp(-2.0 * fabs(x)), d = 1.0 + e;
    return 4.0 * e / (d * d);
}
