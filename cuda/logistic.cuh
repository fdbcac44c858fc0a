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
