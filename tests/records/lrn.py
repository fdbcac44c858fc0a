"""OpInfo record of lrn (float64 reference: an explicit loop over channels, PyTorch's
LocalResponseNorm window: size//2 channels before, (size-1)//2 after, zero padded)."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# (shape, params): NCHW, NC, NCL; odd and even sizes, size 1, a window wider than C,
# the default (tiny) alpha; 0-size; one channel; C not a multiple of anything.
CASES = [
    ((2, 7, 3, 4), {}),
    ((2, 7, 3, 4), {"size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.0}),
    ((2, 6, 5), {"size": 4, "alpha": 1.0, "beta": 0.5, "k": 2.0}),
    ((3, 6), {"size": 2, "alpha": 0.3, "beta": 1.5, "k": 0.5}),
    ((2, 5, 2, 3), {"size": 9, "alpha": 0.4, "beta": 0.75, "k": 1.0}),
    ((2, 5, 3), {"size": 1, "alpha": 0.8, "beta": 0.75, "k": 1.5}),
    ((1, 1, 3, 3), {"size": 5, "alpha": 0.5}),
    ((0, 4, 2, 2), {"size": 3, "alpha": 0.5}),
    ((1, 13, 17), {"size": 5, "alpha": 0.2, "beta": 0.6, "k": 1.0}),
]

DEFAULTS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}


def _scales(x, size, alpha, beta, k):
    """s[:, c] = k + alpha/size · Σ_{j in window(c)} x[:, j]², one channel at a time."""
    C = x.shape[1]
    s = numpy.empty_like(x)
    for c in range(C):
        total = numpy.zeros_like(x[:, 0])
        for j in range(c - size // 2, c + (size - 1) // 2 + 1):
            if 0 <= j < C:
                total = total + x[:, j] ** 2
        s[:, c] = k + alpha / size * total
    return s


def _ref(x, **params):
    p = {**DEFAULTS, **params}
    return x * _scales(x, **p) ** -p["beta"]


def _grad(x, y, gy, **params):
    """Σ_j gy_j ∂y_j/∂x_c with ∂y_j/∂x_c = δ_jc s_j^-β - 2αβ/size x_j x_c s_j^(-β-1) [c ∈ window(j)]."""
    p = {**DEFAULTS, **params}
    size, alpha, beta = p["size"], p["alpha"], p["beta"]
    s = _scales(x, **p)
    C = x.shape[1]
    g = numpy.empty_like(x)
    for c in range(C):
        total = gy[:, c] * s[:, c] ** -beta
        for j in range(C):
            if j - size // 2 <= c <= j + (size - 1) // 2:
                total = total - 2 * alpha * beta / size * gy[:, j] * x[:, j] * x[:, c] \
                    * s[:, j] ** (-beta - 1)
        g[:, c] = total
    return g


def _samples(rng):
    for shape, params in CASES:
        yield Sample((2 * rng.standard_normal(shape),), dict(params),
                     f"{'x'.join(map(str, shape))}-{params}")


def _errors(rng):
    x = rng.standard_normal((2, 3, 4))
    yield ErrorInput((x,), {"size": 0}, ValueError, "size must be >= 1, got 0")
    yield ErrorInput((x,), {"size": 2.0}, TypeError, "size must be an int, got 2.0")
    yield ErrorInput((x,), {"alpha": "0.1"}, TypeError, "alpha must be a Python float, got '0.1'")
    yield ErrorInput((x[0, 0],), {}, ValueError, r"channel axis \(N, C, ...\), got shape \(4,\)")
    yield ErrorInput((x,), {"size": 0}, ValueError, "size must be >= 1", fn=1)
    yield ErrorInput((x, numpy.ones((2, 3)), numpy.ones((2, 3, 4))), {}, ValueError,
                     r"y has shape \(2, 3\); expected \(2, 3, 4\)", fn=1)
    yield ErrorInput((x,), {"size": -3}, ValueError, "size must be >= 1, got -3")
    yield ErrorInput((x,), {"size": True}, TypeError, "size must be an int, got True")
    yield ErrorInput((x,), {"beta": None}, TypeError, "beta must be a Python float, got None")
    yield ErrorInput((x,), {"k": "1"}, TypeError, "k must be a Python float, got '1'")
    yield ErrorInput((x,), {"alpha": float("nan")}, ValueError, "alpha must be finite, got nan")
    yield ErrorInput((x,), {"beta": float("inf")}, ValueError, "beta must be finite, got inf")
    yield ErrorInput((x,), {"alpha": -1.0}, ValueError, "alpha must be >= 0, got -1.0")
    yield ErrorInput((x,), {"k": 0.0}, ValueError, "k must be > 0, got 0.0")
    yield ErrorInput((x,), {"k": -1}, ValueError, "k must be > 0, got -1", fn=1)
    yield ErrorInput((numpy.ones(()),), {}, ValueError, r"got shape \(\)")


# 16 bits: the kernels' gradient reads the rounded forward y in its cross term
# (2 alpha beta / size) x_c Σ_j gy_j y_j / s_j (one pow per element instead of one per window
# term): an absolute error of about one rounding u of that term, which is O(1) in these
# samples (|x| up to ~6) while gx may cancel to ~1e-2. Measured on emu: at most 0.4 u past
# the default relative 2u; atol = u (float16 2^-11, bfloat16 2^-8).
_TOL = {F16: (2e-5 + 2 * 2.0 ** -11, 2.0 ** -11), BF16: (2e-5 + 2 * 2.0 ** -8, 2.0 ** -8)}

RECORDS = [OpInfo(name="lrn", ref=_ref, samples=_samples, grad_refs={1: _grad},
                  gpu_dtypes=(F16, BF16, F32, F64), tol=_TOL, error_inputs=_errors)]
