"""OpInfo: one record per operator drives every generic test (see test_ops.py).

A record names the operator (a key of ``gpuops.OPERATORS``), gives a float64
reference written in plain NumPy independently of the implementation, a
sample-input generator and tolerances. Records live in ``tests/records/<family>.py``
as a module-level ``RECORDS`` list.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import ml_dtypes
import numpy

F32 = numpy.dtype(numpy.float32)
F64 = numpy.dtype(numpy.float64)
F16 = numpy.dtype(numpy.float16)
BF16 = numpy.dtype(ml_dtypes.bfloat16)
# The 16-bit dtypes: every record runs in both on the NumPy backend (which computes them in
# float32), and on kernel backends where its ``gpu_dtypes`` names them.
SIXTEEN_BIT = (F16, BF16)

# (rtol, atol) of a forward or gradient against the float64 reference.
DEFAULT_TOL = {F32: (2e-5, 1e-6), F64: (1e-11, 1e-12)}
# A 16-bit result is computed in float32 and rounded once: the float32 tolerance (the
# accumulation error of the float32 computation, on the same 16-bit inputs) plus one
# rounding, a relative 2^-11 (float16) or 2^-8 (bfloat16), doubled for the gradients,
# which also read the rounded forward y and upstream gy; and an absolute half spacing of
# the smallest subnormals (float16's 2^-24; bfloat16's, 2^-133, is below any atol).
ROUNDING = {F16: 2.0 ** -11, BF16: 2.0 ** -8}
SUBNORMAL_ATOL = {F16: 2.0 ** -25, BF16: 0.0}

# Records whose 16-bit cases on the NumPy backend do not pass yet, and why: marked xfail
# (not strict: an XPASS shows a fix) by tests/ops/test_ops.py. The owner of a family deletes
# its line once the family's 16-bit cases pass (a tolerance in the record, or a fix).
SIXTEEN_BIT_PENDING = {
}


def is_float(dtype: numpy.dtype) -> bool:
    """Whether ``dtype`` is a float dtype (bfloat16's kind is "V", not "f")."""
    return dtype.kind == "f" or dtype == BF16


@dataclass
class Sample:
    """One call: positional inputs (float64 NumPy arrays, Python scalars, or integer
    arrays that are never cast), keyword parameters, and a readable id."""

    inputs: tuple
    params: dict = field(default_factory=dict)
    name: str = ""


@dataclass
class ErrorInput:
    """A wrong call: ``fn`` is "forward" or k (the gradient wrt x<k>; ``inputs`` are
    the forward inputs, then y and gy come from a valid call, or all of them:
    forward inputs, y, gy)."""

    inputs: tuple
    params: dict
    exc: type
    match: str  # regex the message must contain (the offending value)
    fn: Any = "forward"


@dataclass
class OpInfo:
    name: str
    ref: Callable[..., numpy.ndarray]  # float64 forward: ref(*inputs, **params)
    samples: Callable[[numpy.random.Generator], Iterable[Sample]]
    # float64 reference gradients: grad_refs[k](*inputs, y, gy, **params)
    grad_refs: dict[int, Callable[..., numpy.ndarray]] = field(default_factory=dict)
    dtypes: tuple = (F32, F64)
    # dtypes on kernel backends (cupy, emu) if they differ: those the family's kernels are
    # instantiated in, F16 and BF16 included where its Signature's kernel_dtypes has them
    # (tests/ops/test_ops.py checks that the kernels reject the 16-bit dtypes not named).
    gpu_dtypes: tuple | None = None
    tol: dict = field(default_factory=dict)  # dtype -> (rtol, atol), overrides DEFAULT_TOL
    # central finite differences in float64 along a random direction
    fd_eps: float = 1e-6
    fd_tol: tuple = (1e-6, 1e-8)  # (rtol, atol) on the directional derivative
    # inputs (1-based) that are integer data, not cast to the test dtype
    int_inputs: tuple = ()
    # operator-specific wrong calls (mismatched shapes, bad axes and parameters);
    # the generic ones (dtypes, non-arrays, out=, gy shape) are derived from samples
    error_inputs: Callable[[numpy.random.Generator], Iterable[ErrorInput]] | None = None
    # the gradients (k of name_wrt_xk) the generic tests take for these samples; None: all.
    # A record of calls whose other inputs are no variables (a Python scalar x1, a keyword
    # exponent, integer labels) names the differentiable ones.
    wrt: tuple | None = None

    def tolerance(self, dtype: numpy.dtype) -> tuple:
        """(rtol, atol) in ``dtype``: ``tol``'s, else the default; for a 16-bit dtype the
        float32 tolerance plus twice one rounding (:data:`ROUNDING`)."""
        dtype = numpy.dtype(dtype)
        if dtype in self.tol:
            return self.tol[dtype]
        if dtype in SIXTEEN_BIT:
            rtol, atol = self.tolerance(F32)
            return rtol + 2 * ROUNDING[dtype], atol + SUBNORMAL_ATOL[dtype]
        return DEFAULT_TOL[dtype]

    def kernel_dtypes(self) -> tuple:
        """The dtypes of this operator's kernels (on the emulator and CuPy)."""
        return self.dtypes if self.gpu_dtypes is None else self.gpu_dtypes

    def cast(self, inputs: tuple, dtype) -> tuple:
        """``inputs`` with their float arrays in ``dtype``; integer inputs (labels), Python
        scalars and None as they are."""
        return tuple(x.astype(dtype, copy=False) if isinstance(x, numpy.ndarray)
                     and is_float(x.dtype) and k not in self.int_inputs else x
                     for k, x in enumerate(inputs, 1))

    def small_sample(self, min_elements: int = 1) -> Sample:
        """The sample with the fewest elements among those whose float inputs all hold
        ``min_elements`` or more (the smallest of all when none does)."""
        def key(sample):
            floats = [numpy.size(x) for k, x in enumerate(sample.inputs, 1)
                      if isinstance(x, numpy.ndarray) and k not in self.int_inputs]
            return (min(floats, default=min_elements) < min_elements,
                    sum(numpy.size(x) for x in sample.inputs))
        return min(self.samples(numpy.random.default_rng(0)), key=key)

    @property
    def op(self):
        import gpuops
        operator = gpuops.OPERATORS[self.name]
        if self.wrt is None:
            return operator
        return dataclasses.replace(operator, grads={k: operator.grads[k] for k in self.wrt})


def sample_id(sample: Sample) -> str:
    if sample.name:
        return sample.name
    parts = []
    for x in sample.inputs:
        parts.append("x".join(map(str, numpy.shape(x))) or "scalar")
    return "-".join(parts)
