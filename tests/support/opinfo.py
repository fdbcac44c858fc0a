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

import numpy

F32 = numpy.dtype(numpy.float32)
F64 = numpy.dtype(numpy.float64)
F16 = numpy.dtype(numpy.float16)

# (rtol, atol) of a forward or gradient against the float64 reference.
DEFAULT_TOL = {F16: (1e-2, 1e-3), F32: (2e-5, 1e-6), F64: (1e-11, 1e-12)}


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
    gpu_dtypes: tuple | None = None  # dtypes on kernel backends (cupy, emu) if they differ
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
        return self.tol.get(numpy.dtype(dtype), DEFAULT_TOL[numpy.dtype(dtype)])

    def cast(self, inputs: tuple, dtype) -> tuple:
        """``inputs`` with their float arrays in ``dtype``; integer inputs (labels), Python
        scalars and None as they are."""
        return tuple(x.astype(dtype, copy=False) if isinstance(x, numpy.ndarray)
                     and x.dtype.kind == "f" and k not in self.int_inputs else x
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
