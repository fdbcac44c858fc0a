"""OpInfo records of sum, mean and max over axes (float64 references in plain NumPy).

Max samples hold distinct values at least 0.05 apart, so finite differences never
cross a tie; ties, NaN and the two-stage kernels are tested in tests/ops/test_reduction.py.
"""
from __future__ import annotations

import itertools

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# (shape, axis, keepdims): every reduction pattern the kernels tell apart (rows, columns,
# kept-reduced-kept, 5-d alternating, a full reduction), axes negative and in tuples,
# keepdims, no axes, 0-d, 1-element, 0-size outputs and sizes that fill no block.
CASES = [
    ((257,), None, False), ((3, 4, 5), 1, False), ((3, 4, 5), (0, 2), False),
    ((3, 4, 5), -1, True), ((3, 4, 5), None, True), ((4, 1000), 1, False),
    ((700, 3), 0, False), ((3, 70, 5), 1, False), ((2, 3, 2, 3, 2), (1, 3), False),
    ((2, 3, 2, 3, 2), (0, 2, 4), True), ((1, 5, 1), (0, 2), False), ((3, 4), (), False),
    ((0, 3), 1, False), ((1,), 0, False), ((), None, False),
]
EMPTY_SUM = [((0, 3), 0, False), ((2, 0), None, True)]  # sums over zero elements: 0


def _axes(ndim, axis):
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


def _name(shape, axis, keepdims):
    return f"{'x'.join(map(str, shape)) or 'scalar'}-axis{axis}{'-keep' if keepdims else ''}"


def _samples(distinct: bool, cases):
    def samples(rng):
        for shape, axis, keepdims in cases:
            n = int(numpy.prod(shape))
            if distinct:
                x = ((rng.permutation(n) - n / 2) * 0.05).reshape(shape)
            else:
                x = rng.standard_normal(shape)
            yield Sample((x,), {"axis": axis, "keepdims": keepdims}, _name(shape, axis, keepdims))
    return samples


def _groups(x, axis):
    """x as (outputs, reduced) rows (reduced axes moved last) and the function that puts
    a (outputs, reduced) array back into x's layout."""
    axes = _axes(x.ndim, axis)
    kept = [a for a in range(x.ndim) if a not in axes]
    order = kept + list(axes)
    moved = numpy.transpose(x, order)
    rows = moved.reshape(int(numpy.prod([x.shape[a] for a in kept])),
                         int(numpy.prod([x.shape[a] for a in axes])))

    def back(r):
        return numpy.transpose(r.reshape(moved.shape), numpy.argsort(order))
    return rows, back


def _out(rows_result, x, axis, keepdims):
    axes = _axes(x.ndim, axis)
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keepdims else \
        tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return numpy.asarray(rows_result).reshape(shape)


def _ref_sum(x, axis, keepdims):
    rows, _ = _groups(x, axis)
    return _out([float(numpy.add.reduce(r)) if r.size else 0.0 for r in rows], x, axis, keepdims)


def _ref_mean(x, axis, keepdims):
    rows, _ = _groups(x, axis)
    return _out([float(numpy.add.reduce(r)) / r.size for r in rows], x, axis, keepdims)


def _ref_max(x, axis, keepdims):
    rows, _ = _groups(x, axis)
    return _out([max(r) for r in rows], x, axis, keepdims)


def _spread(x, gy, axis, weights):
    """Each output's gy times its group's weights (a (outputs, reduced) rule), in x's layout."""
    rows, back = _groups(x, axis)
    g = numpy.asarray(gy).reshape(-1)
    result = numpy.zeros_like(rows)
    for i, r in enumerate(rows):
        result[i] = g[i] * weights(r)
    return back(result)


def _grad_sum(x, y, gy, axis, keepdims):
    return _spread(x, gy, axis, lambda r: numpy.ones_like(r))


def _grad_mean(x, y, gy, axis, keepdims):
    return _spread(x, gy, axis, lambda r: numpy.full_like(r, 1.0 / r.size))


def _grad_max(x, y, gy, axis, keepdims):
    def weights(r):
        ties = (r == max(r)).astype(float)
        return ties / ties.sum()
    return _spread(x, gy, axis, weights)


def _errors(name):
    def errors(rng):
        x = rng.standard_normal((2, 3, 4))
        yield ErrorInput((x,), {"axis": 3}, ValueError, "axis 3")
        yield ErrorInput((x,), {"axis": (0, -3)}, ValueError, r"duplicate axes in axis=\(0, -3\)")
        yield ErrorInput((x,), {"axis": 1.0}, TypeError, "1.0")
        yield ErrorInput((x,), {"axis": [0, 1]}, TypeError, r"\[0, 1\]")
        yield ErrorInput((x,), {"keepdims": "yes"}, TypeError, "keepdims must be a bool, got 'yes'")
        yield ErrorInput((x,), {"axis": 3}, ValueError, "axis 3", fn=1)
        yield ErrorInput((x, numpy.ones((2, 4)), numpy.ones((2, 4))), {"axis": 2}, ValueError,
                         r"y has shape \(2, 4\); expected \(2, 3\)", fn=1)
        yield ErrorInput((x,), {"axis": -4}, ValueError, "axis -4")
        yield ErrorInput((x,), {"axis": (0, 5)}, ValueError, "axis 5")
        yield ErrorInput((x,), {"axis": (1, 1)}, ValueError, r"duplicate axes in axis=\(1, 1\)")
        yield ErrorInput((x,), {"axis": True}, TypeError, "axis must be an int, got True")
        yield ErrorInput((x,), {"keepdims": 1}, TypeError, "keepdims must be a bool, got 1")
        yield ErrorInput((x,), {"keepdims": None}, TypeError, "keepdims must be a bool, got None")
        yield ErrorInput((x,), {"keepdims": "yes"}, TypeError, "keepdims must be a bool, got 'yes'",
                         fn=1)
        yield ErrorInput((x,), {"keepdims": numpy.int64(1)}, TypeError,
                         "keepdims must be a bool, got", fn=1)
        yield ErrorInput((numpy.ones(()),), {"axis": 0}, ValueError, "axis 0 .* 0 dims")
        yield ErrorInput((x,), {"axis": (0, 0)}, ValueError, r"duplicate axes", fn=1)
        if name == "max":
            yield ErrorInput((numpy.ones((0, 3)),), {"axis": 0}, ValueError,
                             r"max over zero elements \(input shape \(0, 3\), axes \(0,\)\)")
    return errors


KERNEL_DTYPES = (F16, BF16, F32, F64)  # 16 bits: float32 sums, one rounding

RECORDS = [
    OpInfo(name="sum", ref=_ref_sum, samples=_samples(False, CASES + EMPTY_SUM),
           grad_refs={1: _grad_sum}, tol={numpy.dtype(numpy.float32): (1e-5, 1e-5)},
           gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors("sum")),
    OpInfo(name="mean", ref=_ref_mean, samples=_samples(False, CASES),
           grad_refs={1: _grad_mean}, gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors("mean")),
    OpInfo(name="max", ref=_ref_max, samples=_samples(True, CASES),
           grad_refs={1: _grad_max}, gpu_dtypes=KERNEL_DTYPES, error_inputs=_errors("max")),
]
