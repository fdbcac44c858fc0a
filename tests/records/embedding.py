"""OpInfo record of embedding (float64 references in plain NumPy, one Python loop per id)."""
from __future__ import annotations

import numpy

from opinfo import BF16, F16, F32, F64, ErrorInput, OpInfo, Sample

# (ids shape, table rows V, columns C, ids dtype). C = 8 and 16 are whole 16-byte words in
# every dtype (the vectorized kernel), C = 5 and 3 are not; repeated ids in most samples.
CASES = (((7,), 5, 8, numpy.int64), ((2, 3), 4, 5, numpy.int32), ((), 6, 16, numpy.int64),
         ((0,), 3, 4, numpy.int64), ((3, 4), 10, 3, numpy.int32), ((2, 2, 5), 3, 16, numpy.int64))


def _samples(rng):
    for shape, rows, cols, dtype in CASES:
        ids = rng.integers(0, rows, shape).astype(dtype)
        table = rng.standard_normal((rows, cols))
        yield Sample((ids, table), {}, f"ids{'x'.join(map(str, shape))}-table{rows}x{cols}")


def _ref(ids, table):
    y = numpy.empty(numpy.shape(ids) + (table.shape[1],))
    for p in numpy.ndindex(numpy.shape(ids)):
        y[p] = table[int(ids[p])]
    return y


def _grad_ref(ids, table, y, g):
    gx = numpy.zeros_like(table)
    for p in numpy.ndindex(numpy.shape(ids)):
        gx[int(ids[p])] += g[p]
    return gx


def _errors(rng):
    ids = numpy.array([0, 2, 1])
    table = rng.standard_normal((3, 4))
    yield ErrorInput((ids, table[0]), {}, ValueError,
                     r"x2 \(the table\) must have shape \(V, C\), got \(4,\)")
    yield ErrorInput((ids, table[None]), {}, ValueError, r"got \(1, 3, 4\)")
    yield ErrorInput((ids, table[0], numpy.ones((3, 4)), numpy.ones((3, 4))), {}, ValueError,
                     r"got \(4,\)", fn=2)
    yield ErrorInput((ids.astype(numpy.float64), table), {}, TypeError,
                     "x1 has dtype float64; expected int32 or int64")
    yield ErrorInput((ids.astype(numpy.int16), table), {}, TypeError, "int16", fn=2)
    yield ErrorInput((ids > 0, table), {}, TypeError, "bool")
    yield ErrorInput((ids.tolist(), table), {}, TypeError, "list")
    yield ErrorInput((ids, table, numpy.ones((3, 4)), numpy.ones((3, 5))), {}, ValueError,
                     r"gy has shape \(3, 5\); expected \(3, 4\)", fn=2)
    yield ErrorInput((ids, table, numpy.ones((4, 4)), numpy.ones((3, 4))), {}, ValueError,
                     r"y has shape \(4, 4\)", fn=2)
    # ids outside [0, V) are rejected on the NumPy path only (kernels give NaN rows and
    # leave them out of the gradient, no device sync): tests/ops/test_embedding.py


RECORDS = [
    # the ids are no variables: the only gradient is wrt the table
    OpInfo(name="embedding", ref=_ref, samples=_samples, grad_refs={2: _grad_ref},
           int_inputs=(1,), wrt=(2,), gpu_dtypes=(F16, BF16, F32, F64), error_inputs=_errors),
]
