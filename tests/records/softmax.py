"""OpInfo records of the softmax family (float64 references in plain NumPy)."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# (shape, axis): the last axis and others; rows for each kernel strategy: W lanes per row
# for cols <= 16 (widths 1, 3, 8, 10, 16: lanes 2, 4, 8, 16), one warp per row with 1, 2,
# 4, 8, 16 and 32 registers per lane (cols 33, 100, 200, 500, 1024; float64 goes to the
# block kernel past 512), one block per row (1025: scalar loads, held in registers but
# float64's gradient; 3000: 16-byte loads, held by the float32 and 16-bit forward, streamed
# by the gradients and float64); an axis that is not the last with inner sizes 1 (row
# kernels), 2, 3, 7, 12, 40 (axis kernels); 0-size and 1-element.
CASES = [((4, 10), -1), ((3, 5, 7), 1), ((2, 3, 4), 0), ((257,), 0), ((6, 33), -1),
         ((5, 1), -1), ((1, 1), 0), ((9, 3), -1), ((12, 8), -1), ((7, 16), -1),
         ((3, 100), -1), ((2, 200), 1), ((2, 500), 1), ((2, 1024), -1), ((3, 1025), -1),
         ((2, 3000), -1), ((0, 5), -1), ((4, 0), -1), ((2, 0, 3), 0), ((3, 4, 2), -2),
         ((3, 6, 1), 1), ((2, 6, 3), 1), ((2, 5, 40), 1)]


def _samples(rng):
    for shape, axis in CASES:
        yield Sample((rng.standard_normal(shape) * 3,), {"axis": axis},
                     f"{'x'.join(map(str, shape))}-axis{axis}")
    # stability: equal logits, logits far from 0 (±1e4: tests/ops/test_softmax_family.py,
    # where finite differences are not needed; a 1e-6 step is below their resolution)
    yield Sample((numpy.array([[5.0, 5.0, 5.0], [-7.0, -7.0, -7.0]]),), {"axis": -1}, "equal")
    yield Sample((rng.standard_normal((3, 40)) * 30 + 100,), {"axis": 1}, "wide-offset")


def _softmax(x, axis):
    e = numpy.exp(x - x.max(axis=axis, keepdims=True, initial=-numpy.inf))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_grad(x, y, g, axis):
    """Σ_i g_i dy_i/dx_j with the full Jacobian dy_i/dx_j = s_i (δ_ij - s_j)."""
    s = numpy.moveaxis(_softmax(x, axis), axis, -1)
    gm = numpy.moveaxis(g, axis, -1)
    jac = s[..., :, None] * (numpy.eye(s.shape[-1]) - s[..., None, :])
    return numpy.moveaxis(numpy.einsum("...i,...ij->...j", gm, jac), -1, axis)


def _log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True, initial=-numpy.inf)
    with numpy.errstate(divide="ignore"):  # log 0 of an empty row (never used)
        return x - m - numpy.log(numpy.exp(x - m).sum(axis=axis, keepdims=True))


def _log_softmax_grad(x, y, g, axis):
    """Σ_i g_i d(log s_i)/dx_j = g_j - s_j Σ_i g_i (Jacobian δ_ij - s_j)."""
    s = numpy.moveaxis(_softmax(x, axis), axis, -1)
    gm = numpy.moveaxis(g, axis, -1)
    jac = numpy.eye(s.shape[-1]) - s[..., None, :]
    return numpy.moveaxis(numpy.einsum("...i,...ij->...j", gm, jac), -1, axis)


def _errors(rng):
    x = rng.standard_normal((2, 3))
    yield ErrorInput((x,), {"axis": 2}, ValueError, "axis 2")
    yield ErrorInput((x,), {"axis": -3}, ValueError, "axis -3")
    yield ErrorInput((x,), {"axis": 1.0}, TypeError, "1.0")
    yield ErrorInput((numpy.ones(()),), {"axis": -1}, ValueError, r"shape \(\)")
    yield ErrorInput((x, numpy.ones((3, 2)), numpy.ones((2, 3))), {}, ValueError,
                     r"y has shape \(3, 2\)", fn=1)
    yield ErrorInput((x,), {"axis": 5}, ValueError, "axis 5", fn=1)
    yield ErrorInput((x,), {"axis": True}, TypeError, "axis must be an int, got True")
    yield ErrorInput((x,), {"axis": None}, TypeError, "axis must be an int, got None")
    yield ErrorInput((x,), {"axis": (0, 1)}, TypeError, r"got \(0, 1\)", fn=1)
    yield ErrorInput((x, numpy.ones((2, 3)), numpy.ones((3, 2))), {}, ValueError,
                     r"gy has shape \(3, 2\)", fn=1)
    # dtype= (PyTorch's cast before the softmax): a float dtype
    yield ErrorInput((x,), {"dtype": "int32"}, TypeError,
                     "dtype must be None, float16, bfloat16, float32 or float64, got 'int32'")
    yield ErrorInput((x,), {"dtype": numpy.complex128}, TypeError, "complex128", fn=1)
    yield ErrorInput((x,), {"dtype": "nope"}, TypeError, "got 'nope'")


KERNEL_DTYPES = (F16, BF16, F32, F64)
# float16 rounding of x (|x| up to ~10) moves logits by up to 4e-3: compare probabilities
# absolutely and log-probabilities with an absolute error of a few half ulps of |x|.
F16_TOL = {F16: (1e-2, 5e-3)}
# bfloat16 (u = 2^-8): the forward is one rounding (the default tolerance). The gradients
# read the stored y, rounded once (as PyTorch's do; gpuops/ops/softmax.py): softmax's
# y_i (gy_i - Σ y gy) is then off by up to 2u |gx_i| + u y_i max|gy| (y_i <= 1; the row sum
# cancels), log_softmax's gy_i - e^(y_i) Σ gy by up to 2u |gx_i| + u s_i |log s_i| |Σ gy|
# (s |log s| <= 1/e). The upstream gy of the tests is standard normal, |gy| < G = 4 over
# the small samples the 16-bit cases use, whose rows hold at most C = 4 elements.
U, G, C = 2.0 ** -8, 4.0, 4
SOFTMAX_TOL = {**F16_TOL, BF16: (2 * U + 2e-5, U * G)}
LOG_SOFTMAX_TOL = {**F16_TOL, BF16: (2 * U + 2e-5, U * C * G / numpy.e)}

RECORDS = [
    OpInfo(name="softmax", ref=_softmax, samples=_samples, grad_refs={1: _softmax_grad},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors, tol=SOFTMAX_TOL),
    OpInfo(name="log_softmax", ref=_log_softmax, samples=_samples,
           grad_refs={1: _log_softmax_grad}, gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors,
           tol=LOG_SOFTMAX_TOL),
]
