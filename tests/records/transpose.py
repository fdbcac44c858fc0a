"""OpInfo record of transpose (float64 reference: element-by-element index mapping)."""
from __future__ import annotations

import itertools

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# (shape, axes): a matrix, tiles that do not divide the sizes, batched tiles,
# NCHW -> NHWC (merged to a batched tile), a general permutation, the identity (a
# copy), size-1 axes, negative axes, 0-size, 1-element, 0-d, 8 and 9 axes that all move;
# permutations where only size-1 axes move (the kernels copy: the same elements in order);
# first, two of 8 elements (the 16-bit cases' two smallest samples): a tile, transpose_nd tiled.
CASES = [
    ((2, 4), None), ((2, 2, 2), (2, 1, 0)),
    ((3, 4), None), ((33, 40), (1, 0)), ((2, 33, 65), (0, 2, 1)), ((2, 3, 4, 5), (0, 2, 3, 1)),
    ((2, 3, 4, 5), (3, 1, 0, 2)), ((4, 5), (0, 1)), ((1, 5, 1, 3), (3, 0, 2, 1)),
    ((3, 4, 5), (-1, 0, 1)), ((0, 3), None), ((1,), None), ((), None),
    ((2,) * 8, None), ((2,) * 9, None), ((5, 70), None),
    ((1, 2), (1, 0)), ((3, 1, 4), (1, 0, 2)), ((1, 1), None), ((2, 1, 1, 3), (2, 0, 1, 3)),
]


def _ref(x, axes):
    perm = tuple(range(x.ndim))[::-1] if axes is None else tuple(a % x.ndim for a in axes)
    y = numpy.empty(tuple(x.shape[a] for a in perm))
    for index in itertools.product(*(range(d) for d in y.shape)):
        source = [0] * x.ndim
        for i, a in enumerate(perm):
            source[a] = index[i]
        y[index] = x[tuple(source)]
    return y


def _grad(x, y, gy, axes):
    perm = tuple(range(x.ndim))[::-1] if axes is None else tuple(a % x.ndim for a in axes)
    g = numpy.empty(x.shape)
    for index in itertools.product(*(range(d) for d in x.shape)):
        g[index] = gy[tuple(index[a] for a in perm)]
    return g


def _samples(rng):
    for shape, axes in CASES:
        yield Sample((rng.standard_normal(shape),), {"axes": axes},
                     f"{'x'.join(map(str, shape)) or 'scalar'}-axes{axes}")


def _errors(rng):
    x = rng.standard_normal((2, 3, 4))
    yield ErrorInput((x,), {"axes": (0, 0, 1)}, ValueError, r"axes \(0, 0, 1\) is not a permutation")
    yield ErrorInput((x,), {"axes": (0, 1)}, ValueError, r"axes \(0, 1\) is not a permutation")
    yield ErrorInput((x,), {"axes": (0, 1, 3)}, ValueError, "axis 3")
    yield ErrorInput((x,), {"axes": 1}, TypeError, "axes must be None or a tuple of ints, got 1")
    yield ErrorInput((x,), {"axes": (0, 1.0, 2)}, TypeError, "1.0")
    yield ErrorInput((x,), {"axes": (0, 2)}, ValueError, r"axes \(0, 2\)", fn=1)
    yield ErrorInput((x, numpy.ones((2, 3, 4)), numpy.ones((2, 3, 4))), {"axes": (2, 1, 0)},
                     ValueError, r"y has shape \(2, 3, 4\); expected \(4, 3, 2\)", fn=1)
    yield ErrorInput((x,), {"axes": (0, 1, -4)}, ValueError, "axis -4")
    yield ErrorInput((x,), {"axes": (True, 0, 2)}, TypeError, "axis must be an int, got True")
    yield ErrorInput((x,), {"axes": (0, 1, 2, 3)}, ValueError, "axis 3")
    yield ErrorInput((x,), {"axes": (2, 2, 0)}, ValueError, r"axes \(2, 2, 0\)", fn=1)
    yield ErrorInput((x,), {"axes": "012"}, TypeError, "'012'")


RECORDS = [OpInfo(name="transpose", ref=_ref, samples=_samples, grad_refs={1: _grad},
                  gpu_dtypes=(F16, BF16, F32, F64), error_inputs=_errors)]
